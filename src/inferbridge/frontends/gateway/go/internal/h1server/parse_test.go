package h1server

import (
	"bufio"
	"net"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// parsePlain parses raw as the lane does: the request, or nil when it is not plain.
func parsePlain(t testing.TB, raw string) *http.Request {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c := newConn(&Server{}, a)
	end := strings.Index(raw, "\r\n\r\n")
	if lf := strings.Index(raw, "\n\n"); end < 0 || (lf >= 0 && lf < end) || end+4 > readBufSize {
		return nil
	}
	r, err := c.newRequest([]byte(raw[:end+4]))
	if err != nil {
		return nil
	}
	return r
}

// agree fails unless the lane's request is net/http's, field by field that a handler reads.
func agree(t testing.TB, raw string, lane *http.Request) {
	t.Helper()
	ref, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
	if err != nil {
		t.Fatalf("%q: the lane took a head net/http refuses (%v)", raw, err)
	}
	delete(ref.Header, "Host") // net/http's server does so
	got := []any{lane.Method, lane.URL.Path, lane.URL.RawPath, lane.URL.EscapedPath(), lane.URL.RawQuery,
		lane.URL.Query(), lane.Host, lane.RequestURI, lane.ContentLength, lane.Close, lane.Proto, lane.Header}
	want := []any{ref.Method, ref.URL.Path, ref.URL.RawPath, ref.URL.EscapedPath(), ref.URL.RawQuery,
		ref.URL.Query(), ref.Host, ref.RequestURI, ref.ContentLength, ref.Close, ref.Proto, ref.Header}
	for i := range got {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Fatalf("%q: field %d: lane %#v, net/http %#v", raw, i, got[i], want[i])
		}
	}
}

var plainHeads = []string{
	"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
	"POST /v2/models/iris/versions/1/infer HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nContent-Type: application/json\r\nContent-Length: 17\r\nInference-Header-Content-Length: 9\r\n\r\n",
	"GET /v2/models/a!b/ready?x=1&y=(2) HTTP/1.1\r\nhost: h\r\naccept: */*\r\nx-api-key: k\r\nX-Multi: 1\r\nx-multi: 2\r\n\r\n",
	"POST /p HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\nUser-Agent:   spaced value \t\r\n\r\n",
	"DELETE /a:b@c;d=e HTTP/1.1\r\nHost: [::1]:80\r\nX-Empty:\r\nWeird_Name-1: v\r\n\r\n",
}

func TestPlainHeadsParseAsNetHTTPParsesThem(t *testing.T) {
	for _, raw := range plainHeads {
		r := parsePlain(t, raw)
		if r == nil {
			t.Fatalf("%q: not plain", raw)
		}
		agree(t, raw, r)
	}
}

// Any head the lane takes, net/http takes too and reads the same.
func FuzzPlainHead(f *testing.F) {
	for _, raw := range plainHeads {
		f.Add(raw)
	}
	f.Add("POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
	f.Add("GET /p%20q HTTP/1.1\r\nHost: h\r\n\r\n")
	f.Fuzz(func(t *testing.T, raw string) {
		if r := parsePlain(t, raw); r != nil {
			agree(t, raw, r)
		}
	})
}
