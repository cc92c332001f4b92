package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestHTTPClientRequestsAndKeepAlive(t *testing.T) {
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/echo":
			w.Header().Set("X-Seen", r.Method+" "+r.URL.RawQuery+" "+r.Header.Get("Authorization")+" "+r.Host)
			w.Write(body)
		case "/chunked":
			for i := range 3 {
				io.WriteString(w, strings.Repeat(string(rune('a'+i)), 5000))
				w.(http.Flusher).Flush()
			}
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		case "/large":
			w.Write(make([]byte, 2000))
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	c := &httpClient{Timeout: 5 * time.Second}
	ctx := t.Context()

	status, data, err := c.Do(ctx, "POST", srv.URL+"/echo?x=1", []byte(`{"a":1}`), 1<<20, "Authorization", "Bearer t")
	if err != nil || status != 200 || string(data) != `{"a":1}` {
		t.Fatalf("echo: %d %q %v", status, data, err)
	}
	_, data, err = c.Do(ctx, "GET", srv.URL+"/chunked", nil, 1<<20)
	if err != nil || len(data) != 15000 || data[0] != 'a' || data[14999] != 'c' {
		t.Fatalf("chunked: %d bytes, %v", len(data), err)
	}
	if status, data, err := c.Do(ctx, "GET", srv.URL+"/empty", nil, 1<<20); err != nil || status != 204 || len(data) != 0 {
		t.Fatalf("204: %d %q %v", status, data, err)
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections for three requests, want one kept alive", n)
	}
	if _, _, err := c.Do(ctx, "GET", srv.URL+"/large", nil, 1000); !errors.Is(err, errAnswerTooLarge) {
		t.Fatalf("over the limit: %v", err)
	}
	if _, _, err := c.Do(ctx, "GET", srv.URL+"/chunked", nil, 10000); !errors.Is(err, errAnswerTooLarge) {
		t.Fatalf("chunked over the limit: %v", err)
	}

	// The peer closes the idle connection: the request goes out again on a new one.
	c.Do(ctx, "GET", srv.URL+"/empty", nil, 1<<20)
	srv.CloseClientConnections()
	if status, _, err := c.Do(ctx, "POST", srv.URL+"/echo", []byte("x"), 1<<20); err != nil || status != 200 {
		t.Fatalf("after the peer closed the idle connection: %d %v", status, err)
	}
	// An idle connection past IdleTimeout is not reused.
	before := conns.Load()
	short := &httpClient{IdleTimeout: time.Millisecond}
	short.Do(ctx, "GET", srv.URL+"/empty", nil, 1<<20)
	time.Sleep(5 * time.Millisecond)
	short.Do(ctx, "GET", srv.URL+"/empty", nil, 1<<20)
	if n := conns.Load() - before; n != 2 {
		t.Fatalf("%d connections, want a new one after the idle timeout", n)
	}
	c.CloseIdle()
	short.CloseIdle()
}

func TestHTTPClientTLS(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "secure "+r.Host)
	}))
	defer srv.Close()
	roots := srv.Client().Transport.(*http.Transport).TLSClientConfig
	c := &httpClient{TLS: roots}
	status, data, err := c.Do(t.Context(), "GET", srv.URL+"/", nil, 1024)
	if err != nil || status != 200 || !strings.HasPrefix(string(data), "secure 127.0.0.1:") {
		t.Fatalf("https: %d %q %v", status, data, err)
	}
	if _, _, err := (&httpClient{}).Do(t.Context(), "GET", srv.URL+"/", nil, 1024); err == nil {
		t.Fatal("a certificate from an unknown authority was accepted")
	}
}

// rawServer answers each connection with `answer` whatever was asked.
func rawServer(t *testing.T, answer string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				r := bufio.NewReader(conn)
				for {
					line, err := r.ReadString('\n')
					if err != nil || line == "\r\n" {
						break
					}
				}
				io.WriteString(conn, answer)
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}

func TestHTTPClientBadAnswersAndInput(t *testing.T) {
	c := &httpClient{Timeout: 2 * time.Second}
	ctx := t.Context()
	for answer, want := range map[string]string{
		"garbage\r\n\r\n": "malformed status line",
		"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n":                "bad Content-Length",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n":          "unsupported Transfer-Encoding",
		"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort":          "unexpected EOF",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n": "malformed chunk size",
		"HTTP/1.1 200 OK\r\nno colon\r\n\r\n":                         "malformed header line",
	} {
		if _, _, err := c.Do(ctx, "GET", rawServer(t, answer)+"/", nil, 1024); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err = %v, want %q", answer, err, want)
		}
	}
	// No length: the body runs to the end of the stream; 100 Continue is skipped.
	url := rawServer(t, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\n\r\nto the end")
	if status, data, err := c.Do(ctx, "GET", url+"/", nil, 1024); err != nil || status != 200 || string(data) != "to the end" {
		t.Fatalf("no length: %d %q %v", status, data, err)
	}
	for _, bad := range []string{"ftp://x/", "http://", "http://a b/", "http://host:0/", "http://host:x/", "http://u@host/"} {
		if _, _, err := c.Do(ctx, "GET", bad, nil, 1024); err == nil {
			t.Errorf("%q was accepted", bad)
		}
	}
	// A peer that never answers: the deadline ends the request.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	go func() {
		conn, err := ln.Accept()
		if err == nil {
			defer conn.Close()
			time.Sleep(3 * time.Second)
		}
	}()
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, _, err := c.Do(short, "GET", "http://"+ln.Addr().String()+"/", nil, 1024); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("silent peer: %v", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatal("the deadline did not end the request")
	}
}

func TestParseTarget(t *testing.T) {
	for raw, want := range map[string]target{
		"http://127.0.0.1:8000/v2/x?y=1": {host: "127.0.0.1:8000", addr: "127.0.0.1:8000", name: "127.0.0.1", path: "/v2/x?y=1"},
		"https://cp.example":             {https: true, host: "cp.example", addr: "cp.example:443", name: "cp.example", path: "/"},
		"http://[::1]:9000?q":            {host: "[::1]:9000", addr: "[::1]:9000", name: "::1", path: "/?q"},
		"http://[::1]/p#frag":            {host: "[::1]", addr: "[::1]:80", name: "::1", path: "/p"},
	} {
		got, err := parseTarget(raw)
		if err != nil || got != want {
			t.Errorf("%q: %+v, %v; want %+v", raw, got, err, want)
		}
	}
}
