package main

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	inferbridge "github.com/inferbridge/inferbridge/clients/go"
)

func TestParseHead(t *testing.T) {
	cases := []struct {
		head          string
		status, lengh int
		keep, ok      bool
	}{
		{"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 12\r\n\r\n", 200, 12, true, true},
		{"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", 429, 0, false, true},
		{"HTTP/1.0 504 Gateway Timeout\r\nContent-Length: 3\r\n\r\n", 504, 3, false, true},
		{"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\n", 200, 3, true, true},
		{"HTTP/1.1 204 No Content\r\n\r\n", 204, 0, true, true},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 0, 0, false, false},
		{"HTTP/1.1 200 OK\r\n\r\n", 0, 0, false, false}, // delimited by the connection's end
		{"SPDY/3 200 OK\r\n\r\n", 0, 0, false, false},
	}
	for _, c := range cases {
		status, length, keep, ok := parseHead([]byte(c.head))
		if status != c.status || length != c.lengh || keep != c.keep || ok != c.ok {
			t.Errorf("%q: got %d %d %v %v", c.head, status, length, keep, ok)
		}
	}
}

// TestCaptureIsWhatTheSDKSends checks that the raw engine's bytes are the SDK's request:
// the server sees the same method, path, headers and body from both.
func TestCaptureIsWhatTheSDKSends(t *testing.T) {
	type seen struct {
		method, path, ctype, hlen string
		body                      []byte
	}
	var got []seen
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got = append(got, seen{r.Method, r.URL.Path, r.Header.Get("Content-Type"), r.Header.Get("Inference-Header-Content-Length"), body})
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"model_name":"m","outputs":[]}`)
	}))
	defer srv.Close()
	req := &inferbridge.InferRequest{Model: "m", Inputs: []*inferbridge.Tensor{inferbridge.NewFP32("input", []int64{1, 2}, []float32{1.5, 2})}}
	for _, enc := range []inferbridge.Encoding{inferbridge.EncodingJSON, inferbridge.EncodingBinary} {
		got = nil
		client, err := inferbridge.NewRESTClient(srv.URL, inferbridge.WithEncoding(enc))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := client.Infer(t.Context(), req); err != nil {
			t.Fatal(err)
		}
		raw, err := captureRESTRequest(srv.URL, enc, req, nil)
		if err != nil {
			t.Fatal(err)
		}
		c := newRawConn(raw.addr)
		res := c.roundTrip(raw.bytes, time.Now().Add(5*time.Second), true)
		c.close()
		if res.status != 200 || !bytes.Contains(res.body, []byte(`"outputs"`)) || len(got) != 2 {
			t.Fatalf("%v: %+v, %d requests seen", enc, res, len(got))
		}
		sdk, ours := got[0], got[1]
		// The SDK sends its deadline as a timeout parameter; there is none here.
		if sdk.method != ours.method || sdk.path != ours.path || sdk.ctype != ours.ctype || sdk.hlen != ours.hlen || !bytes.Equal(sdk.body, ours.body) {
			t.Fatalf("%v: SDK sent %+v, raw sent %+v", enc, sdk, ours)
		}
	}
}

// TestRawEngine runs the raw engine against a server that answers 200, then 429, then
// closes connections, in closed and open loop.
func TestRawEngine(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		switch i := n.Add(1); {
		case i%10 == 3:
			w.Header().Set("Retry-After", "1")
			http.Error(w, `{"error":"queue full"}`, http.StatusTooManyRequests)
		case i%10 == 7:
			w.Header().Set("Connection", "close")
			_, _ = io.WriteString(w, `{"outputs":[]}`)
		default:
			_, _ = io.WriteString(w, `{"outputs":[]}`)
		}
	}))
	defer srv.Close()
	raw, err := serializeRequest(httptest.NewRequest("POST", srv.URL+"/v2/models/m/infer", nil), []byte(`{"inputs":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []*options{
		{protocol: "rest-json", raw: true, concurrency: 4, duration: 300 * time.Millisecond, timeout: 2 * time.Second},
		{protocol: "rest-json", raw: true, rate: 2000, maxInflight: 64, duration: 300 * time.Millisecond, timeout: 2 * time.Second},
	} {
		r := (&rawRunner{o: o, req: raw}).run()
		// Every request is accounted for; in the open loop a loaded machine may leave some
		// due while all 64 are in flight, and those count as DROPPED.
		accounted := r.OK + r.Errors["HTTP 429"] + r.Errors["DROPPED"]
		if r.Engine != "raw" || r.OK == 0 || r.Errors["HTTP 429"] == 0 || accounted != r.Requests || r.LatencyAll.P99 < r.Latency.P50 {
			t.Fatalf("%+v", r)
		}
		var text strings.Builder
		r.writeText(&text)
		if !strings.Contains(text.String(), "raw HTTP/1.1") || !strings.Contains(text.String(), "HTTP 429") {
			t.Fatal(text.String())
		}
	}
	// Nothing listening: every request is a connection error, and none is lost. (The
	// in-flight bound exceeds the 50 requests: on a loaded machine failed dials can pile up,
	// and a request beyond the bound would count as DROPPED.)
	srv.Close()
	o := &options{protocol: "rest-json", raw: true, rate: 500, maxInflight: 64, duration: 100 * time.Millisecond, timeout: time.Second}
	r := (&rawRunner{o: o, req: raw}).run()
	if r.OK != 0 || r.Errors[kindConnect] != r.Requests || r.Requests != 50 {
		t.Fatalf("%+v", r)
	}
}
