package pool

import (
	"bufio"
	"net/http"
	"net/textproto"
	"reflect"
	"strings"
	"testing"
)

// slowHead reads a response head as the line-by-line path does (the reference).
func slowHead(raw string) (*http.Response, error) {
	br := bufio.NewReader(strings.NewReader(raw))
	line, err := br.ReadSlice('\n')
	if err != nil {
		return nil, err
	}
	resp, err := parseStatusLine(strings.TrimRight(string(line), "\r\n"))
	if err != nil {
		return nil, err
	}
	hdr, err := textproto.NewReader(br).ReadMIMEHeader()
	if err != nil {
		return nil, err
	}
	resp.Header = http.Header(hdr)
	return resp, nil
}

func leanAgrees(t testing.TB, raw string) bool {
	t.Helper()
	resp, n := leanHead(bufio.NewReaderSize(strings.NewReader(raw), 8<<10))
	if resp == nil {
		return false
	}
	if !strings.HasSuffix(raw[:n], "\r\n\r\n") {
		t.Fatalf("%q: head length %d does not end at the blank line", raw, n)
	}
	ref, err := slowHead(raw)
	if err != nil {
		t.Fatalf("%q: the lean path took a head the line-by-line path refuses: %v", raw, err)
	}
	got := []any{resp.StatusCode, resp.Status, resp.Proto, resp.ProtoMinor, resp.Header}
	want := []any{ref.StatusCode, ref.Status, ref.Proto, ref.ProtoMinor, ref.Header}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%q: lean %#v, line by line %#v", raw, got, want)
	}
	return true
}

var responseHeads = []string{
	"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nDate: Wed, 02 Dec 2026 15:00:00 GMT\r\n\r\n{}",
	"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\nretry-after:1\r\nX-Multi: a\r\nx-multi:  b \r\n\r\n",
	"HTTP/1.0 204 No Content\r\nX-Empty:\r\n\r\n",
	"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
}

func TestLeanResponseHeadsAgreeWithTextproto(t *testing.T) {
	for _, raw := range responseHeads {
		if !leanAgrees(t, raw) {
			t.Fatalf("%q: not taken by the lean path", raw)
		}
	}
	for _, raw := range []string{
		"HTTP/1.1 200 OK\r\nX: folded\r\n more\r\n\r\n", // obs-fold: line by line
		"HTTP/1.1 200 OK\nX: a\n\n",                     // LF only
		"HTTP/1.1 200 OK\r\nBad Name: v\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", // not all there
		"HTTP/2 200\r\n\r\n",
	} {
		if resp, _ := leanHead(bufio.NewReader(strings.NewReader(raw))); resp != nil {
			t.Errorf("%q: taken by the lean path", raw)
		}
	}
}

func FuzzLeanHead(f *testing.F) {
	for _, raw := range responseHeads {
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, raw string) { leanAgrees(t, raw) })
}
