package pool

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingServer is an httptest server that counts the connections made to it.
func countingServer(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int32) {
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &conns
}

func testClient(t *testing.T, base string, tlsCfg *tls.Config) *h1Client {
	c, err := newH1Client(base, tlsCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.closeIdle)
	return c
}

// get sends a GET of path and returns the status and the body read to its end.
func get(t *testing.T, c *h1Client, path string) (int, string, error) {
	t.Helper()
	resp, err := c.do(context.Background(), &h1Request{method: http.MethodGet, target: path})
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func TestH1KeepAliveReusesOneConnection(t *testing.T) {
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello "+r.URL.Path)
	})
	c := testClient(t, srv.URL, nil)
	for i := 0; i < 5; i++ {
		code, body, err := get(t, c, "/x")
		if err != nil || code != 200 || body != "hello /x" {
			t.Fatalf("request %d: %d %q %v", i, code, body, err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections for 5 sequential requests, want 1", n)
	}
	if n := c.idleCount(); n != 1 {
		t.Fatalf("%d idle connections, want 1", n)
	}
}

func TestH1RequestHeadAndBody(t *testing.T) {
	type seen struct {
		host, method, uri, body string
		header                  http.Header
		contentLength           int64
	}
	got := make(chan seen, 1)
	srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Host, r.Method, r.RequestURI, string(b), r.Header, r.ContentLength}
	})
	c := testClient(t, srv.URL, nil)
	hdr := http.Header{
		"Connection": {"keep-alive"}, "Te": {"trailers"}, "Host": {"evil"}, "Content-Length": {"99"},
		"Authorization": {"Bearer client"}, "X-Forwarded-For": {"1.2.3.4"}, "Accept": {"a", "b"},
	}
	resp, err := c.do(context.Background(), &h1Request{method: http.MethodPost, target: "/v2/models/m%2Fx/infer?q=1",
		header: hdr, omit: []string{"Authorization"}, extra: []h1Field{{"X-Forwarded-For", "1.2.3.4, 5.6.7.8"}},
		body: []byte(`{"inputs": []}`)})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	s := <-got
	if s.host != strings.TrimPrefix(srv.URL, "http://") || s.method != "POST" || s.uri != "/v2/models/m%2Fx/infer?q=1" ||
		s.body != `{"inputs": []}` || s.contentLength != 14 {
		t.Fatalf("request line, host or body: %+v", s)
	}
	for _, name := range []string{"Te", "Authorization"} {
		if v := s.header.Values(name); len(v) != 0 {
			t.Fatalf("%s sent: %q", name, v)
		}
	}
	if v := s.header.Values("X-Forwarded-For"); len(v) != 1 || v[0] != "1.2.3.4, 5.6.7.8" {
		t.Fatalf("X-Forwarded-For %q, want the extra field alone", v)
	}
	if v := s.header.Values("Accept"); len(v) != 2 {
		t.Fatalf("Accept %q, want both values", v)
	}

	// A POST without a body says Content-Length: 0; a GET says nothing.
	for _, method := range []string{http.MethodPost, http.MethodGet} {
		resp, err := c.do(context.Background(), &h1Request{method: method, target: "/"})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		s := <-got
		if cl, want := s.contentLength, int64(0); cl != want || (method == http.MethodGet) != (s.header.Get("Content-Length") == "") {
			t.Fatalf("%s: Content-Length %d, field %q", method, cl, s.header.Get("Content-Length"))
		}
	}

	// A value with a line break would split the request: refused, nothing sent.
	_, err = c.do(context.Background(), &h1Request{method: http.MethodGet, target: "/",
		extra: []h1Field{{"X-Bad", "a\r\nInjected: 1"}}})
	if err == nil || !strings.Contains(err.Error(), "line break") {
		t.Fatalf("header value with CRLF: %v", err)
	}
}

func TestH1ChunkedResponseWithTrailerAndReuse(t *testing.T) {
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum")
		for i := 0; i < 3; i++ {
			io.WriteString(w, strings.Repeat("ab", 5000))
			w.(http.Flusher).Flush()
		}
		w.Header().Set("X-Sum", "30000")
	})
	c := testClient(t, srv.URL, nil)
	for i := 0; i < 2; i++ {
		resp, err := c.do(context.Background(), &h1Request{method: http.MethodGet, target: "/"})
		if err != nil {
			t.Fatal(err)
		}
		if resp.ContentLength != -1 || len(resp.TransferEncoding) != 1 || resp.Header.Get("Transfer-Encoding") != "" {
			t.Fatalf("chunked response: length %d, encoding %q, field %q", resp.ContentLength, resp.TransferEncoding,
				resp.Header.Get("Transfer-Encoding"))
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || len(b) != 30000 {
			t.Fatalf("chunked body: %d bytes, %v", len(b), err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections, want 1: a chunked body read to its end keeps the connection", n)
	}
}

func TestH1NoBodyResponsesKeepTheConnection(t *testing.T) {
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/204":
			w.WriteHeader(http.StatusNoContent)
		case "/304":
			w.WriteHeader(http.StatusNotModified)
		default:
			w.Header().Set("Content-Length", "5")
			io.WriteString(w, "hello")
		}
	})
	c := testClient(t, srv.URL, nil)
	for _, req := range []h1Request{{method: "GET", target: "/204"}, {method: "GET", target: "/304"}, {method: "HEAD", target: "/"}, {method: "GET", target: "/"}} {
		resp, err := c.do(context.Background(), &req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if (req.method == "GET" && req.target == "/") != (string(b) == "hello") {
			t.Fatalf("%s %s: body %q", req.method, req.target, b)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections, want 1", n)
	}
}

func TestH1ConnectionCloseIsNotReused(t *testing.T) {
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		io.WriteString(w, "bye")
	})
	c := testClient(t, srv.URL, nil)
	for i := 0; i < 3; i++ {
		if code, body, err := get(t, c, "/"); err != nil || code != 200 || body != "bye" {
			t.Fatalf("%d %q %v", code, body, err)
		}
		if n := c.idleCount(); n != 0 {
			t.Fatalf("%d idle connections after Connection: close", n)
		}
	}
	if n := conns.Load(); n != 3 {
		t.Fatalf("%d connections, want 3", n)
	}
}

func TestH1BodyNotReadToItsEndClosesTheConnection(t *testing.T) {
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, strings.Repeat("x", 100000))
	})
	c := testClient(t, srv.URL, nil)
	resp, err := c.do(context.Background(), &h1Request{method: http.MethodGet, target: "/"})
	if err != nil {
		t.Fatal(err)
	}
	io.ReadFull(resp.Body, make([]byte, 10))
	resp.Body.Close()
	if _, err := resp.Body.Read(make([]byte, 1)); err == nil {
		t.Fatal("read after Close succeeded")
	}
	if n := c.idleCount(); n != 0 {
		t.Fatalf("%d idle connections after a half-read body", n)
	}
	if _, body, err := get(t, c, "/"); err != nil || len(body) != 100000 {
		t.Fatalf("next request: %d bytes, %v", len(body), err)
	}
	if n := conns.Load(); n != 2 {
		t.Fatalf("%d connections, want 2", n)
	}
}

// rawServer accepts connections on loopback and runs serve on each, with the number
// of the connection (1, 2, ...).
func rawServer(t *testing.T, serve func(n int, c net.Conn, br *bufio.Reader)) (string, net.Listener) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 1; ; n++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				serve(n, c, bufio.NewReader(c))
			}()
		}
	}()
	return "http://" + ln.Addr().String(), ln
}

// readRequest reads one request (head and body) from br.
func readRequest(br *bufio.Reader) error {
	req, err := http.ReadRequest(br)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, req.Body)
	return err
}

const okResponse = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

func TestH1ServerClosingMidResponse(t *testing.T) {
	base, _ := rawServer(t, func(n int, c net.Conn, br *bufio.Reader) {
		readRequest(br)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
	})
	c := testClient(t, base, nil)
	_, body, err := get(t, c, "/")
	if !errors.Is(err, io.ErrUnexpectedEOF) || body != "abc" {
		t.Fatalf("cut body: %q, %v; want the 3 bytes then io.ErrUnexpectedEOF", body, err)
	}
	if n := c.idleCount(); n != 0 {
		t.Fatalf("%d idle connections after a cut body", n)
	}

	base, _ = rawServer(t, func(n int, c net.Conn, br *bufio.Reader) {
		readRequest(br)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-")
	})
	c = testClient(t, base, nil)
	if _, _, err := get(t, c, "/"); err == nil || errors.As(err, new(*h1NoResponseError)) {
		t.Fatalf("cut header: %v; want an error that says a response began", err)
	}
}

func TestH1MalformedResponses(t *testing.T) {
	for _, tc := range []struct{ response, want string }{
		{"HTTP/2 200 OK\r\n\r\n", "HTTP/1.1"},
		{"HTTP/1.1 abc OK\r\n\r\n", "status code"},
		{"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length"},
		{"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", "conflicting"},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "transfer encoding"},
	} {
		base, _ := rawServer(t, func(n int, c net.Conn, br *bufio.Reader) {
			readRequest(br)
			io.WriteString(c, tc.response)
		})
		c := testClient(t, base, nil)
		if _, _, err := get(t, c, "/"); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error naming %q", tc.response, err, tc.want)
		}
	}
}

func TestH1InterimResponseAndBodyUntilClose(t *testing.T) {
	base, _ := rawServer(t, func(n int, c net.Conn, br *bufio.Reader) {
		readRequest(br)
		io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\nall of it")
	})
	c := testClient(t, base, nil)
	code, body, err := get(t, c, "/")
	if err != nil || code != 200 || body != "all of it" {
		t.Fatalf("%d %q %v", code, body, err)
	}
	if n := c.idleCount(); n != 0 {
		t.Fatalf("%d idle connections after a body ended by close", n)
	}
}

func TestH1DeadlineAndCancelCloseTheConnection(t *testing.T) {
	release := make(chan struct{})
	gone := make(chan string, 4)
	srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stall-body" {
			w.Header().Set("Content-Length", "10")
			io.WriteString(w, "12345")
			w.(http.Flusher).Flush()
		}
		select {
		case <-r.Context().Done(): // the connection was closed
			gone <- r.URL.Path
		case <-release:
		}
	})
	defer close(release)
	c := testClient(t, srv.URL, nil)

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.do(ctx, &h1Request{method: http.MethodGet, target: "/stall"})
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Fatalf("past the deadline: %v after %v", err, time.Since(start))
	}
	waitFor(t, gone, "/stall")

	ctx, cancel = context.WithCancel(context.Background())
	resp, err := c.do(ctx, &h1Request{method: http.MethodGet, target: "/stall-body"})
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	io.ReadFull(resp.Body, buf)
	time.AfterFunc(50*time.Millisecond, cancel)
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Fatal("reading a body after cancel: no error")
	}
	resp.Body.Close()
	waitFor(t, gone, "/stall-body")
	if n := c.idleCount(); n != 0 {
		t.Fatalf("%d idle connections after cancel", n)
	}
}

func waitFor(t *testing.T, ch chan string, want string) {
	t.Helper()
	select {
	case got := <-ch:
		if got != want {
			t.Fatalf("server saw %s go, want %s", got, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("the server never saw %s's connection close", want)
	}
}

func TestH1StaleConnectionIsRetriedOnceOnAFreshOne(t *testing.T) {
	// The first connection answers one request, then takes the second and closes
	// without an answer (it went stale as the request went out); later ones answer.
	var accepted atomic.Int32
	base, _ := rawServer(t, func(n int, c net.Conn, br *bufio.Reader) {
		accepted.Add(1)
		if readRequest(br) != nil {
			return
		}
		io.WriteString(c, okResponse)
		if n == 1 {
			readRequest(br)
			return
		}
		for readRequest(br) == nil {
			io.WriteString(c, okResponse)
		}
	})
	c := testClient(t, base, nil)
	for i := 0; i < 2; i++ {
		if code, body, err := get(t, c, "/"); err != nil || code != 200 || body != "ok" {
			t.Fatalf("request %d: %d %q %v", i, code, body, err)
		}
	}
	if n := accepted.Load(); n != 2 {
		t.Fatalf("%d connections, want 2 (the stale one and the fresh retry)", n)
	}

	// A fresh connection that fails so is not retried.
	accepted.Store(0)
	base, _ = rawServer(t, func(n int, c net.Conn, br *bufio.Reader) {
		accepted.Add(1)
		readRequest(br)
	})
	c = testClient(t, base, nil)
	_, _, err := get(t, c, "/")
	if !errors.As(err, new(*h1NoResponseError)) || errors.As(err, new(*h1ConnectError)) {
		t.Fatalf("fresh connection closed without an answer: %v", err)
	}
	if n := accepted.Load(); n != 1 {
		t.Fatalf("%d connections, want 1: a fresh connection is not retried", n)
	}
}

func TestH1StaleRetryThatCannotConnectIsNotAConnectFailure(t *testing.T) {
	// The request went out on a connection that looked open: it may have reached the
	// server, so when the retry cannot connect the error is not a connect failure.
	var ln net.Listener
	base, l := rawServer(t, func(n int, c net.Conn, br *bufio.Reader) {
		readRequest(br)
		io.WriteString(c, okResponse)
		readRequest(br)
		ln.Close()
	})
	ln = l
	c := testClient(t, base, nil)
	if _, _, err := get(t, c, "/"); err != nil {
		t.Fatal(err)
	}
	_, _, err := get(t, c, "/")
	if err == nil || errors.As(err, new(*h1ConnectError)) {
		t.Fatalf("stale connection, then no server: %v; want an error that is not a connect failure", err)
	}
}

func TestH1ClosedByServerWhileIdleIsNotUsed(t *testing.T) {
	var accepted atomic.Int32
	base, _ := rawServer(t, func(n int, c net.Conn, br *bufio.Reader) {
		accepted.Add(1)
		readRequest(br)
		io.WriteString(c, okResponse) // and close: an idle timeout on the server's side
	})
	c := testClient(t, base, nil)
	for i := 0; i < 3; i++ {
		if _, _, err := get(t, c, "/"); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		time.Sleep(20 * time.Millisecond) // for the server's close to arrive
	}
	if n := accepted.Load(); n != 3 {
		t.Fatalf("%d connections, want 3", n)
	}

	// Seen closed before anything was written: when no new connection can be made, a
	// connect failure (the request reached nobody).
	var ln net.Listener
	base, ln = rawServer(t, func(n int, c net.Conn, br *bufio.Reader) {
		readRequest(br)
		io.WriteString(c, okResponse)
		ln.Close()
	})
	c = testClient(t, base, nil)
	if _, _, err := get(t, c, "/"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	if _, _, err := get(t, c, "/"); !errors.As(err, new(*h1ConnectError)) {
		t.Fatalf("pooled connection closed by the server, then no server: %v, want a connect failure", err)
	}
}

func TestH1ConnectFailure(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c := testClient(t, "http://"+addr, nil)
	_, _, err = get(t, c, "/")
	if !errors.As(err, new(*h1ConnectError)) {
		t.Fatalf("nothing listening: %v, want a connect failure", err)
	}
	c.closeIdle()
	if _, _, err := get(t, c, "/"); !errors.Is(err, errH1ClientClosed) {
		t.Fatalf("closed client: %v", err)
	}
	if _, err := newH1Client("ftp://x", nil); err == nil {
		t.Fatal("ftp:// accepted")
	}
}

func TestH1OverTLS(t *testing.T) {
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || r.ProtoMajor != 1 {
			w.WriteHeader(http.StatusBadRequest)
		}
		io.WriteString(w, "secure")
	}))
	srv.EnableHTTP2 = true // offered, and this client must still get HTTP/1.1
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.StartTLS()
	defer srv.Close()
	cfg := srv.Client().Transport.(*http.Transport).TLSClientConfig
	c := testClient(t, srv.URL, cfg)
	for i := 0; i < 3; i++ {
		if code, body, err := get(t, c, "/"); err != nil || code != 200 || body != "secure" {
			t.Fatalf("%d %q %v", code, body, err)
		}
		time.Sleep(10 * time.Millisecond) // session tickets arrive: the connection stays usable
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d TLS connections, want 1", n)
	}
	// A server the client does not trust: a connect failure, nothing sent.
	c = testClient(t, srv.URL, &tls.Config{})
	if _, _, err := get(t, c, "/"); !errors.As(err, new(*h1ConnectError)) {
		t.Fatalf("untrusted server: %v, want a connect failure", err)
	}
}
