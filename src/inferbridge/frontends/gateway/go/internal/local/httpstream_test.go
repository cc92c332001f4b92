package local

import (
	"context"
	"encoding/binary"
	"io"
	"net/http"
	"testing"
)

// startBody is a REPLY-HTTP-START body: status, headers, the first bytes.
func startBody(status int, headers [][2]string, first string) []byte {
	b := binary.LittleEndian.AppendUint16(nil, uint16(status))
	b = binary.LittleEndian.AppendUint16(b, uint16(len(headers)))
	for _, kv := range headers {
		b = appendHeader(b, kv[0], kv[1])
	}
	return append(b, first...)
}

// readN reads exactly n bytes of body, failing the test otherwise.
func readN(t *testing.T, body io.Reader, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(body, b); err != nil {
		t.Fatalf("reading %d bytes: %v", n, err)
	}
	return string(b)
}

// wantAck waits for the STREAM-ACK of one part of id.
func (h *harness) wantAck(id uint64) {
	h.t.Helper()
	if f := h.next(); f.kind != kindStreamAck || f.id != id || binary.LittleEndian.Uint32(f.body) != 1 {
		h.t.Fatalf("got frame %d id %d %q, want STREAM-ACK 1 of %d", f.kind, f.id, f.body, id)
	}
}

func TestHTTPStreamedReply(t *testing.T) {
	h := newHarness(t, config{maxRecvBytes: 1 << 20})
	tr := &http.Transport{MaxConnsPerHost: 1}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	for round := 0; round < 2; round++ { // the connection is reused after a streamed reply
		resps := make(chan *http.Response, 1)
		go func() {
			resp, err := client.Do(mustRequest(t, "POST", h.httpURL+"/v2/models/m/generate_stream", nil))
			if err != nil {
				t.Error(err)
				close(resps)
				return
			}
			resps <- resp
		}()
		id := h.next().http(t).id
		h.send(kindReplyHTTPStart, id, startBody(200, [][2]string{{"content-type", "text/event-stream"}}, "data: 1\n\n"))
		resp := <-resps
		if resp == nil {
			t.FailNow()
		}
		if resp.StatusCode != 200 || resp.ContentLength != -1 || len(resp.TransferEncoding) != 1 ||
			resp.Header.Get("Content-Type") != "text/event-stream" {
			t.Fatalf("response %+v", resp)
		}
		// Each part reaches the client before the next is sent.
		if got := readN(t, resp.Body, 9); got != "data: 1\n\n" {
			t.Fatalf("first part %q", got)
		}
		h.wantAck(id)
		h.send(kindReplyHTTPChunk, id, []byte("data: 2\n\n"))
		if got := readN(t, resp.Body, 9); got != "data: 2\n\n" {
			t.Fatalf("second part %q", got)
		}
		h.wantAck(id)
		h.send(kindReplyHTTPEnd, id, []byte("\x00data: 3\n\n"))
		rest, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(rest) != "data: 3\n\n" {
			t.Fatalf("last part %q, %v", rest, err)
		}
	}
}

func TestHTTPStreamedReplyCancelAndBreak(t *testing.T) {
	h := newHarness(t, config{maxRecvBytes: 1 << 20})
	client := &http.Client{Transport: &http.Transport{}}

	// A client that leaves mid-stream: the backend gets CANCEL.
	ctx, cancel := context.WithCancel(context.Background())
	resps := make(chan *http.Response, 1)
	go func() {
		resp, _ := client.Do(mustRequest(t, "POST", h.httpURL+"/v2/models/m/generate_stream", nil).WithContext(ctx))
		resps <- resp
	}()
	id := h.next().http(t).id
	h.send(kindReplyHTTPStart, id, startBody(200, nil, "x"))
	resp := <-resps
	if resp == nil || readN(t, resp.Body, 1) != "x" {
		t.Fatal("no first part")
	}
	h.wantAck(id)
	cancel()
	if f := h.next(); f.kind != kindCancel || f.id != id {
		t.Fatalf("got frame %d id %d, want CANCEL of %d", f.kind, f.id, id)
	}
	resp.Body.Close()
	h.send(kindReplyHTTPChunk, id, []byte("late")) // crosses the CANCEL: ignored
	h.send(kindReplyHTTPEnd, id, []byte{0})

	// The app failed mid-stream (END flag 1): the body is cut, not ended.
	go func() {
		resp, _ := client.Do(mustRequest(t, "GET", h.httpURL+"/v2/models/m/generate_stream", nil))
		resps <- resp
	}()
	id = h.next().http(t).id
	h.send(kindReplyHTTPStart, id, startBody(200, nil, "y"))
	resp = <-resps
	h.wantAck(id)
	h.send(kindReplyHTTPEnd, id, []byte("\x01z"))
	if body, err := io.ReadAll(resp.Body); err == nil {
		t.Fatalf("a broken stream read as whole: %q", body)
	}
	resp.Body.Close()

	// A malformed START is a 502.
	done := h.do(client, mustRequest(t, "GET", h.httpURL+"/x", nil))
	h.send(kindReplyHTTPStart, h.next().http(t).id, []byte{200})
	if r := waitHTTP(t, done); r.err != nil || r.status != 502 {
		t.Fatalf("malformed START: %+v", r)
	}
}
