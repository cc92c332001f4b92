package local

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Requests whose body cannot be read are answered 400 with the reason, never forwarded
// and never "200 OK" with an empty body (issue #16); the bytes are sent raw.

// rawExchange sends data on a fresh connection (half-closing it after when halfClose)
// and returns everything the gateway wrote until it closed the connection.
func rawExchange(t testing.TB, url string, data []byte, halfClose bool) []byte {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := conn.Write(data); err != nil {
		t.Fatal(err)
	}
	if halfClose {
		conn.(*net.TCPConn).CloseWrite()
	}
	out, _ := io.ReadAll(conn) // a reset ends it as well as EOF
	return out
}

const strictHead = "POST /v2/models/m/infer HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"

func TestHTTPUnreadableBodies(t *testing.T) {
	h := newHarness(t, config{maxRecvBytes: 1 << 20})
	body := `{"inputs": []}`
	cases := []struct {
		name, data string
		halfClose  bool
		reason     string
	}{
		{"chunk size not hex", strictHead + "Transfer-Encoding: chunked\r\n\r\nzz\r\n" + body + "\r\n0\r\n\r\n",
			false, "the request body cannot be read: invalid byte in chunk length"},
		{"chunk size not hex, half-closed", strictHead + "Transfer-Encoding: chunked\r\n\r\nzz\r\n" + body,
			true, "invalid byte in chunk length"},
		{"bad chunk terminator", strictHead + "Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
			false, "the request body cannot be read: malformed chunked encoding"},
		{"chunk cut short", strictHead + "Transfer-Encoding: chunked\r\n\r\ne\r\n" + body[:9],
			true, "the chunked request body ended after 9 bytes, before its last chunk"},
		{"no last chunk", strictHead + "Transfer-Encoding: chunked\r\n\r\ne\r\n" + body + "\r\n",
			true, "the chunked request body ended after 14 bytes, before its last chunk"},
		{"short of Content-Length", strictHead + "Content-Length: 500\r\n\r\n" + body,
			true, "the request body ended after 14 of its 500 bytes (Content-Length)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := rawExchange(t, h.httpURL, []byte(c.data), c.halfClose)
			resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(out)), nil)
			if err != nil {
				t.Fatalf("answer %q: %v", out, err)
			}
			got, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 400 || !strings.Contains(string(got), c.reason) || !resp.Close {
				t.Fatalf("answer %d %q (close %v), want 400 with %q and Connection: close", resp.StatusCode, got, resp.Close, c.reason)
			}
		})
	}
	// None was forwarded: the next frame is the next request's.
	done := h.do(http.DefaultClient, mustRequest(t, "GET", h.httpURL+"/next", nil))
	if r := h.next().http(t); r.path != "/next" {
		t.Fatalf("forwarded %+v", r)
	} else {
		h.replyHTTP(r.id, 204, nil, nil)
	}
	if r := waitHTTP(t, done); r.err != nil || r.status != 204 {
		t.Fatalf("next request: %+v", r)
	}
	text, err := h.g.metrics.appendText(nil)
	if err != nil || !containsLine(string(text),
		`inferbridge_frontend_requests_total{code="400",protocol="http",route="/v2/models/{model}/infer"} 6`) {
		t.Fatalf("metrics (%v):\n%s", err, text)
	}
}

// A client that goes away (here: half-closes; TCP cannot tell the two apart) before
// the reply gets no answer at all, not an empty "200 OK", and the backend a CANCEL.
func TestHTTPClientGoneGetsNoAnswer(t *testing.T) {
	h := newHarness(t, config{maxRecvBytes: 1 << 20})
	body := `{"inputs": []}`
	for _, data := range []string{
		strictHead + "Content-Length: 14\r\n\r\n" + body,
		strictHead + "Transfer-Encoding: chunked\r\n\r\ne\r\n" + body + "\r\n0\r\n\r\n",
	} {
		answered := make(chan []byte, 1)
		go func() { answered <- rawExchange(t, h.httpURL, []byte(data), true) }()
		f := h.next()
		if r := f.http(t); string(r.body) != body {
			t.Fatalf("forwarded %+v", r)
		}
		if c := h.next(); c.kind != kindCancel || c.id != f.id {
			t.Fatalf("got frame %d id %d, want CANCEL of %d", c.kind, c.id, f.id)
		}
		select {
		case out := <-answered:
			if len(out) != 0 {
				t.Fatalf("answered %q, want the connection closed without an answer", out)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("connection not closed")
		}
	}
}
