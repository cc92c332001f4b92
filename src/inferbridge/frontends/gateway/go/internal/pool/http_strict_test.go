package pool

import (
	"bufio"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A request body that cannot be read is answered 400 with the reason, never net/http's
// implicit "200 OK" with an empty body, and never reaches an upstream.
func TestUnreadableBodiesAre400(t *testing.T) {
	head := "POST /v2/models/m/infer HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
	cases := []struct {
		name, raw, reason string
		halfClose         bool
	}{
		{"chunk size not hex", head + "Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
			"cannot be read", false},
		{"bad chunk terminator", head + "Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
			"cannot be read", false},
		{"chunked body cut short", head + "Transfer-Encoding: chunked\r\n\r\ne\r\n{\"inputs\"",
			"before its last chunk", true},
		{"short of Content-Length", head + "Content-Length: 500\r\n\r\n{\"inputs\": []}",
			"ended after 14 of its 500 bytes", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			up := newFake(t, "a", "m")
			_, srv := newTestPool(t, "", up)
			conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := conn.Write([]byte(c.raw)); err != nil {
				t.Fatal(err)
			}
			if c.halfClose {
				conn.(*net.TCPConn).CloseWrite()
			}
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			defer resp.Body.Close()
			var body strings.Builder
			bufio.NewReader(resp.Body).WriteTo(&body)
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body.String(), c.reason) {
				t.Fatalf("got %d %q, want 400 with %q", resp.StatusCode, body.String(), c.reason)
			}
			if n := up.count(); n != 0 {
				t.Fatalf("the upstream saw %d request(s)", n)
			}
		})
	}
}
