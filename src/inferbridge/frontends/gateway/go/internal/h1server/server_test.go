package h1server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// serve runs a Server of h on loopback; every response says which server answered
// ("lane" or "fallback") in X-Served-By.
func serve(t *testing.T, h http.Handler, opts ...func(*Server)) (string, *Server) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mark := func(by string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Served-By", by)
			h.ServeHTTP(w, r)
		})
	}
	s := &Server{Handler: mark("lane"), Fallback: &http.Server{Handler: mark("fallback")}, IdleTimeout: time.Minute}
	for _, o := range opts {
		o(s)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; err != http.ErrServerClosed {
			t.Errorf("Serve: %v, want ErrServerClosed", err)
		}
	})
	return ln.Addr().String(), s
}

// echo answers with the method, path, query, a header and the body it read.
var echo = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	fmt.Fprintf(w, "%s %s q=%s x=%s host=%s body=%s", r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Get("X-Thing"), r.Host, body)
})

type rawClient struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

func dial(t *testing.T, addr string) *rawClient {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	return &rawClient{t: t, nc: nc, br: bufio.NewReader(nc)}
}

func (c *rawClient) send(raw string) {
	c.t.Helper()
	if _, err := io.WriteString(c.nc, raw); err != nil {
		c.t.Fatal(err)
	}
}

// read reads one response: its status, body and the server that answered.
func (c *rawClient) read(method string) (*http.Response, string) {
	c.t.Helper()
	resp, err := http.ReadResponse(c.br, &http.Request{Method: method})
	for err == nil && resp.StatusCode < 200 { // 100 Continue: the answer follows
		resp, err = http.ReadResponse(c.br, &http.Request{Method: method})
	}
	if err != nil {
		c.t.Fatalf("reading a response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("reading the body: %v", err)
	}
	return resp, string(b)
}

func TestPlainRequestsAreServedByTheLaneOnOneConnection(t *testing.T) {
	addr, _ := serve(t, echo)
	c := dial(t, addr)
	for i := 0; i < 3; i++ {
		c.send("POST /v2/models/m/infer?a=1 HTTP/1.1\r\nHost: h:1\r\nx-thing: v\r\nContent-Length: 5\r\n\r\nhello")
		resp, body := c.read("POST")
		if resp.StatusCode != 200 || body != "POST /v2/models/m/infer q=a=1 x=v host=h:1 body=hello" || resp.Header.Get("X-Served-By") != "lane" {
			t.Fatalf("request %d: %d %q by %q", i, resp.StatusCode, body, resp.Header.Get("X-Served-By"))
		}
		if resp.ContentLength != int64(len(body)) || resp.Header.Get("Date") == "" || resp.Header.Get("Content-Type") == "" {
			t.Fatalf("head: length %d, fields %v", resp.ContentLength, resp.Header)
		}
	}
	// Pipelined: both answered, in order.
	c.send("GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n")
	for _, want := range []string{"GET /a", "GET /b"} {
		if _, body := c.read("GET"); !strings.HasPrefix(body, want) {
			t.Fatalf("pipelined: %q, want %q first", body, want)
		}
	}
}

func TestRequestsNotPlainGoToFallbackWithTheirBytes(t *testing.T) {
	cases := map[string]string{
		"chunked body":   "POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"expect":         "POST /p HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.0":       "POST /p HTTP/1.0\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
		"percent":        "POST /p%41 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
		"folded field":   "POST /p HTTP/1.1\r\nHost: h\r\nX-Thing: a\r\n b\r\nContent-Length: 5\r\n\r\nhello",
		"bare LF":        "POST /p HTTP/1.1\nHost: h\nContent-Length: 5\n\nhello",
		"connection hop": "POST /p HTTP/1.1\r\nHost: h\r\nConnection: x-hop\r\nContent-Length: 5\r\n\r\nhello",
		"large head":     "POST /p HTTP/1.1\r\nHost: h\r\nX-Big: " + strings.Repeat("b", readBufSize) + "\r\nContent-Length: 5\r\n\r\nhello",
	}
	for name, raw := range cases {
		t.Run(name, func(t *testing.T) {
			addr, _ := serve(t, echo)
			c := dial(t, addr)
			c.send(raw)
			resp, body := c.read("POST")
			path := "/p"
			if name == "percent" {
				path = "/pA"
			}
			if resp.StatusCode != 200 || !strings.HasPrefix(body, "POST "+path) || !strings.HasSuffix(body, "body=hello") ||
				resp.Header.Get("X-Served-By") != "fallback" {
				t.Fatalf("%d %q by %q", resp.StatusCode, body, resp.Header.Get("X-Served-By"))
			}
		})
	}
}

// What net/http refuses, it still refuses: the lane hands such heads over.
func TestMalformedRequestsGetNetHTTPsAnswers(t *testing.T) {
	for name, raw := range map[string]string{
		"no Host":           "GET /p HTTP/1.1\r\n\r\n",
		"two Hosts":         "GET /p HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
		"two lengths":       "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
		"bad length":        "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 1x\r\n\r\nab",
		"bad field name":    "GET /p HTTP/1.1\r\nHost: h\r\nBad Name: v\r\n\r\n",
		"control in value":  "GET /p HTTP/1.1\r\nHost: h\r\nX: a\x01b\r\n\r\n",
		"bad request line":  "GET  /p HTTP/1.1\r\nHost: h\r\n\r\n",
		"absolute form":     "GET http://h/p HTTP/1.1\r\nHost: h\r\n\r\n",
		"unknown protocol":  "GET /p HTTP/2.5\r\nHost: h\r\n\r\n",
		"space in the host": "GET /p HTTP/1.1\r\nHost: a b\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			addr, _ := serve(t, echo)
			c := dial(t, addr)
			c.send(raw)
			resp, _ := c.read("GET")
			if name == "absolute form" { // valid, and net/http's to take apart
				if resp.StatusCode != 200 || resp.Header.Get("X-Served-By") != "fallback" {
					t.Fatalf("%d by %q", resp.StatusCode, resp.Header.Get("X-Served-By"))
				}
				return
			}
			if resp.StatusCode != http.StatusBadRequest && resp.StatusCode != http.StatusHTTPVersionNotSupported {
				t.Fatalf("%d, want net/http's 400 or 505", resp.StatusCode)
			}
		})
	}
}

func TestResponseFraming(t *testing.T) {
	addr, _ := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/big": // over the buffer: chunked
			w.Write([]byte(strings.Repeat("x", bufferBody+10)))
		case "/declared":
			w.Header().Set("Content-Length", "3")
			w.Write([]byte("abc"))
		case "/stream": // flushed: the client reads the first part before the rest is written
			w.Write([]byte("first;"))
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		case "/nocontent":
			w.WriteHeader(http.StatusNoContent)
			w.Write([]byte("ignored"))
		case "/flushed":
			w.(http.Flusher).Flush()
		case "/empty":
		case "/nodate":
			w.Header()["Date"] = nil
			w.Header()["Connection"] = []string{"close"}
			w.Write([]byte("{}"))
		}
	}))
	c := dial(t, addr)
	c.send("GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
	resp, body := c.read("GET")
	if len(body) != bufferBody+10 || resp.TransferEncoding == nil {
		t.Fatalf("big: %d bytes, transfer encoding %v", len(body), resp.TransferEncoding)
	}
	c.send("GET /declared HTTP/1.1\r\nHost: h\r\n\r\n")
	if resp, body := c.read("GET"); body != "abc" || resp.ContentLength != 3 {
		t.Fatalf("declared: %q %d", body, resp.ContentLength)
	}
	c.send("GET /nocontent HTTP/1.1\r\nHost: h\r\n\r\n")
	if resp, body := c.read("GET"); resp.StatusCode != 204 || body != "" {
		t.Fatalf("no content: %d %q", resp.StatusCode, body)
	}
	c.send("HEAD /declared HTTP/1.1\r\nHost: h\r\n\r\n")
	if resp, body := c.read("HEAD"); resp.ContentLength != 3 || body != "" {
		t.Fatalf("HEAD: %d %q", resp.ContentLength, body)
	}
	c.send("HEAD /flushed HTTP/1.1\r\nHost: h\r\n\r\n") // no chunked framing without a body
	if resp, body := c.read("HEAD"); resp.StatusCode != 200 || resp.TransferEncoding != nil || body != "" {
		t.Fatalf("HEAD flushed: %d %v %q", resp.StatusCode, resp.TransferEncoding, body)
	}
	c.send("GET /empty HTTP/1.1\r\nHost: h\r\n\r\n")
	if resp, body := c.read("GET"); resp.StatusCode != 200 || resp.ContentLength != 0 || body != "" {
		t.Fatalf("empty: %d %d %q", resp.StatusCode, resp.ContentLength, body)
	}
	c.send("GET /nodate HTTP/1.1\r\nHost: h\r\n\r\n")
	resp, _ = c.read("GET")
	if resp.Header.Get("Date") != "" || !resp.Close {
		t.Fatalf("nodate: Date %q, close %v", resp.Header.Get("Date"), resp.Close)
	}
	if _, err := c.br.ReadByte(); err != io.EOF {
		t.Fatalf("after Connection: close the connection is still open (%v)", err)
	}

	s := dial(t, addr)
	s.send("GET /stream HTTP/1.1\r\nHost: h\r\n\r\n")
	resp, err := http.ReadResponse(s.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 6)
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "first;" {
		t.Fatalf("stream: %q %v", buf, err)
	}
}

func TestClientGoneEndsTheRequestContext(t *testing.T) {
	ended := make(chan struct{})
	addr, _ := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		select {
		case <-r.Context().Done():
			close(ended)
		case <-time.After(10 * time.Second):
		}
	}), func(s *Server) { s.WatchAfter = time.Millisecond })
	c := dial(t, addr)
	c.send("POST /slow HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}")
	time.Sleep(50 * time.Millisecond)
	c.nc.Close()
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the handler's context did not end when the client went away")
	}
}

// A request answered before the watch starts, and one answered after it started (with
// the next request pipelined meanwhile): the connection carries on either way.
func TestWatchKeepsPipelinedBytes(t *testing.T) {
	addr, _ := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(100 * time.Millisecond)
		}
		if r.Context().Err() != nil {
			t.Errorf("%s: context ended: %v", r.URL.Path, r.Context().Err())
		}
		io.WriteString(w, r.URL.Path)
	}), func(s *Server) { s.WatchAfter = 5 * time.Millisecond })
	c := dial(t, addr)
	c.send("GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
	time.Sleep(40 * time.Millisecond) // the watch is reading now
	c.send("GET /next HTTP/1.1\r\nHost: h\r\n\r\n")
	for _, want := range []string{"/slow", "/next"} {
		if _, body := c.read("GET"); body != want {
			t.Fatalf("%q, want %q", body, want)
		}
	}
	c.send("GET /fast HTTP/1.1\r\nHost: h\r\n\r\n")
	if _, body := c.read("GET"); body != "/fast" {
		t.Fatalf("%q after the watch", body)
	}
}

func TestUnreadBodies(t *testing.T) {
	addr, _ := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "refused") // the body is never read
	}))
	c := dial(t, addr)
	c.send("POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello")
	c.read("POST")
	c.send("GET /again HTTP/1.1\r\nHost: h\r\n\r\n")
	if _, body := c.read("GET"); body != "refused" {
		t.Fatalf("after a small unread body: %q", body)
	}
	big := dial(t, addr)
	big.send(fmt.Sprintf("POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n", maxDiscard+1))
	big.read("POST")
	if _, err := big.br.ReadByte(); err != io.EOF {
		t.Fatalf("after a large unread body the connection is still open (%v)", err)
	}
}

// bodyReader is a handler that reads its request's body whole and reports the error.
func bodyReader() (http.Handler, <-chan error) {
	got := make(chan error, 1)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		got <- err
	}), got
}

func TestShortBodyIsUnexpectedEOF(t *testing.T) {
	h, got := bodyReader()
	addr, _ := serve(t, h)
	c := dial(t, addr)
	c.send("POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc")
	c.nc.(*net.TCPConn).CloseWrite()
	if err := <-got; err != io.ErrUnexpectedEOF {
		t.Fatalf("%v, want io.ErrUnexpectedEOF", err)
	}
}

func TestPanicsCloseTheConnection(t *testing.T) {
	addr, _ := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/abort" {
			panic(http.ErrAbortHandler)
		}
		panic("boom")
	}), func(s *Server) { s.ErrorLog = log0() })
	for _, path := range []string{"/abort", "/boom"} {
		c := dial(t, addr)
		c.send("GET " + path + " HTTP/1.1\r\nHost: h\r\n\r\n")
		if b, err := c.br.ReadByte(); err != io.EOF {
			t.Fatalf("%s: read %q %v, want the connection closed without an answer", path, b, err)
		}
	}
}

func TestShutdownFinishesRequestsInFlightAndClosesIdleOnes(t *testing.T) {
	release := make(chan struct{})
	var started atomic.Int32
	addr, s := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/wait" {
			started.Add(1)
			<-release
		}
		io.WriteString(w, "done")
	}))
	idle := dial(t, addr)
	idle.send("GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
	idle.read("GET")
	busy := dial(t, addr)
	busy.send("GET /wait HTTP/1.1\r\nHost: h\r\n\r\n")
	for started.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	if _, err := idle.br.ReadByte(); err != io.EOF {
		t.Fatalf("idle connection: %v, want it closed", err)
	}
	close(release)
	resp, body := busy.read("GET")
	if body != "done" || !resp.Close {
		t.Fatalf("in flight: %q close=%v, want its answer with Connection: close", body, resp.Close)
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Fatal("still accepting after Shutdown")
	}
}

func TestIdleTimeoutClosesTheConnection(t *testing.T) {
	addr, _ := serve(t, echo, func(s *Server) { s.IdleTimeout = 50 * time.Millisecond })
	c := dial(t, addr)
	c.send("GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
	c.read("GET")
	start := time.Now()
	if _, err := c.br.ReadByte(); err != io.EOF {
		t.Fatalf("%v, want EOF", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("closed late")
	}
}

func TestHTTPClientsWorkUnchanged(t *testing.T) {
	addr, _ := serve(t, echo)
	client := &http.Client{Timeout: 10 * time.Second}
	for i := 0; i < 5; i++ {
		resp, err := client.Post("http://"+addr+"/v2/models/m/infer", "application/json", strings.NewReader(`{"i":1}`))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasSuffix(string(b), `body={"i":1}`) || resp.Header.Get("X-Served-By") != "lane" {
			t.Fatalf("%d %q by %q", resp.StatusCode, b, resp.Header.Get("X-Served-By"))
		}
	}
}

func log0() *log.Logger { return log.New(io.Discard, "", 0) }

// A head that does not arrive within ReadHeaderTimeout closes the connection (a client
// that sends a few bytes and stalls holds nothing for long).
func TestSlowHeadIsCut(t *testing.T) {
	addr, _ := serve(t, echo, func(s *Server) { s.ReadHeaderTimeout = 100 * time.Millisecond })
	c := dial(t, addr)
	c.send("POST /v2/models/m/infer HTTP/1.1\r\nHost: h\r\n")
	start := time.Now()
	if _, err := c.br.ReadByte(); err != io.EOF {
		t.Fatalf("%v, want the connection closed", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("closed after %v", d)
	}
}

// A client killed in the middle of its body: the handler's read fails as a network
// error (not a malformed body), and the server goes on serving others.
func TestClientGoneMidBody(t *testing.T) {
	h, got := bodyReader()
	addr, _ := serve(t, h)
	c := dial(t, addr)
	c.send("POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\npartial")
	c.nc.(*net.TCPConn).SetLinger(0) // a reset, as a killed process's socket
	c.nc.Close()
	err := <-got
	var ne net.Error
	if err == nil || (!errors.As(err, &ne) && err != io.ErrUnexpectedEOF) {
		t.Fatalf("%v, want a network error or an unexpected EOF", err)
	}
	other := dial(t, addr)
	other.send("GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
	if resp, _ := other.read("GET"); resp.StatusCode != 200 {
		t.Fatalf("another client after that: %d", resp.StatusCode)
	}
}
