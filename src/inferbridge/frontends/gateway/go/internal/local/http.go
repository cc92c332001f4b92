package local

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"strconv"
	"sync"
	"time"

	"github.com/inferbridge/inferbridge/gateway/internal/auth"
)

// HTTP (REST) termination: every request is read whole and forwarded as one HTTP frame;
// the backend answers with one REPLY-HTTP frame. See the package comment for the layout.

// bufPool holds the buffers of HTTP frames (request bodies on the way out, replies on
// the way in). Buffers above maxPooledBuf are left to the garbage collector.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

const maxPooledBuf = 1 << 20

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(bp *[]byte) {
	if cap(*bp) <= maxPooledBuf {
		*bp = (*bp)[:0]
		bufPool.Put(bp)
	}
}

// Shared header values; net/http only reads them.
var (
	hdrJSON       = []string{"application/json"}
	hdrRetryAfter = []string{"1"}
	hdrClose      = []string{"close"}
)

func errorBody(msg string) []byte {
	q, _ := json.Marshal(msg)
	return append(append([]byte(`{"error": `), q...), '}')
}

func newHTTPServer(g *gateway) *http.Server {
	return &http.Server{
		Handler:           g,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       5 * time.Minute,
		MaxHeaderBytes:    1 << 20,
		ConnState:         g.httpConnState,
	}
}

// writeError writes an error reply and returns its status and body length.
func writeError(w http.ResponseWriter, code int, body []byte, retry bool) (int, int) {
	h := w.Header()
	h["Content-Type"] = hdrJSON
	if retry {
		h["Retry-After"] = hdrRetryAfter
	}
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	h["Date"] = nil
	w.WriteHeader(code)
	w.Write(body)
	return code, len(body)
}

func appendStr16(b []byte, s string) []byte {
	b = binary.LittleEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// appendHeader appends u16 name_len | name (lower-case) | u32 value_len | value.
func appendHeader(b []byte, name, value string) []byte {
	b = binary.LittleEndian.AppendUint16(b, uint16(len(name)))
	for i := 0; i < len(name); i++ {
		c := name[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b = append(b, c)
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(value)))
	return append(b, value...)
}

// statusClientGone is the `code` of a request whose client went away before its reply
// (nginx's "client closed request"): no status was sent.
const statusClientGone = 499

// ServeHTTP forwards one request to the backend, writes its REPLY-HTTP and records it.
func (g *gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	pm := &g.metrics.proto[protoHTTP]
	pm.inflight.Inc()
	status, n := g.serveHTTP(w, r, start)
	abort := status == statusClientGone || status&abortReply != 0
	status &^= abortReply
	pm.respBytes.Add(float64(n))
	pm.inflight.Dec()
	g.metrics.httpDone(routeOf(r.URL.Path), status, start)
	if abort {
		// Nothing was written, or a streamed body is cut short: returning would make
		// net/http send "200 OK" with an empty body, or end the chunked body, which a
		// client takes for success. Close the connection without more instead
		// (net/http does not log this panic).
		panic(http.ErrAbortHandler)
	}
}

// unreadableBody answers a request whose body could not be read (err, after n bytes
// of it): 400 with the reason when the body is malformed or cut short (an EOF: a
// half-closed client may still read the answer; a gone one does not mind it), nothing
// (statusClientGone) when the connection itself failed (a reset).
func unreadableBody(w http.ResponseWriter, r *http.Request, err error, n int) (int, int) {
	if netErr := net.Error(nil); errors.As(err, &netErr) {
		return statusClientGone, 0
	}
	var msg string
	switch {
	case !errors.Is(err, io.ErrUnexpectedEOF):
		msg = "the request body cannot be read: " + err.Error() // net/http's chunked reader
	case r.ContentLength > 0:
		msg = fmt.Sprintf("the request body ended after %d of its %d bytes (Content-Length)", n, r.ContentLength)
	default:
		msg = fmt.Sprintf("the chunked request body ended after %d bytes, before its last chunk", n)
	}
	// The connection's framing is lost: it cannot carry another request.
	w.Header()["Connection"] = hdrClose
	return writeError(w, http.StatusBadRequest, errorBody(msg), false)
}

// serveHTTP serves one request and returns the status and body length it answered.
func (g *gateway) serveHTTP(w http.ResponseWriter, r *http.Request, start time.Time) (int, int) {
	arrival := start.UnixNano()
	path, rawPath := r.URL.Path, r.URL.EscapedPath()
	if len(path) > 0xffff || len(rawPath) > 0xffff || len(r.URL.RawQuery) > 0xffff || len(r.Method) > 0xffff {
		return writeError(w, http.StatusRequestURITooLong, errorBody("request target is over 65535 bytes"), false)
	}
	var principal string
	if g.auth != nil { // before the body is read, and before its size is judged
		var d *auth.Denial
		var act auth.Action
		if principal, act, d = g.checkHTTP(r); d != nil {
			status, n := g.writeDenial(w, d)
			if g.accessFrames {
				g.sendAccess(accessRecord{protocol: "http", method: r.Method, route: path, model: act.Model,
					status: strconv.Itoa(status), start: start, respBytes: n,
					trace: r.Header.Get("Traceparent"), principal: d.Principal})
			}
			return status, n
		}
	}
	maxBody := int64(g.maxRecvBytes)
	if r.ContentLength > maxBody {
		g.metrics.reject(protoHTTP, g.inferState(r), reasonTooLarge)
		return writeError(w, http.StatusRequestEntityTooLarge, errorBody(fmt.Sprintf(
			"request body of %d bytes is over the limit of %d bytes", r.ContentLength, maxBody)), false)
	}

	// The frame body up to the request body.
	bp := getBuf()
	b := (*bp)[:0]
	b = appendStr16(b, r.Method)
	b = appendStr16(b, path)
	b = appendStr16(b, rawPath)
	b = appendStr16(b, r.URL.RawQuery)
	countAt := len(b)
	b = append(b, 0, 0)
	count := 0
	if r.Host != "" {
		b = appendHeader(b, "host", r.Host)
		count++
	}
	for name, values := range r.Header {
		if isPrincipalHeader(name) { // only the gateway tells Python who is calling
			continue
		}
		for _, v := range values {
			b = appendHeader(b, name, v)
			count++
		}
	}
	if principal != "" {
		b = appendHeader(b, principalKey, principal)
		count++
	}
	if count > 0xffff {
		*bp = b
		putBuf(bp)
		return writeError(w, http.StatusRequestHeaderFieldsTooLarge, errorBody("more than 65535 header fields"), false)
	}
	binary.LittleEndian.PutUint16(b[countAt:], uint16(count))
	b = binary.LittleEndian.AppendUint64(b, uint64(arrival))

	// The request body, read whole.
	var err error
	bodyAt := len(b)
	if r.ContentLength > 0 {
		start := len(b)
		b = grow(b, int(r.ContentLength))
		var n int
		n, err = io.ReadFull(r.Body, b[start:])
		b = b[:start+n]
	} else if r.ContentLength < 0 {
		start := len(b)
		for {
			if cap(b)-len(b) < 4096 {
				b = grow(b, 4096)[:len(b)]
			}
			var n int
			n, err = r.Body.Read(b[len(b):cap(b)])
			b = b[:len(b)+n]
			if int64(len(b)-start) > maxBody {
				*bp = b
				putBuf(bp)
				g.metrics.reject(protoHTTP, g.inferState(r), reasonTooLarge)
				return writeError(w, http.StatusRequestEntityTooLarge, errorBody(fmt.Sprintf(
					"request body of more than %d bytes is over the limit of %d bytes", maxBody, maxBody)), false)
			}
			if err != nil {
				if err == io.EOF {
					err = nil
				}
				break
			}
		}
	}
	*bp = b
	if err != nil { // the client is gone, or sent a body that cannot be read
		putBuf(bp)
		return unreadableBody(w, r, err, len(b)-bodyAt)
	}
	g.metrics.proto[protoHTTP].reqBytes.Add(float64(len(b) - bodyAt))

	// Admission.
	if st := g.inferState(r); st != nil {
		if lim := st.admit(); lim != nil {
			putBuf(bp)
			g.metrics.reject(protoHTTP, st, reasonQueueFull)
			return writeError(w, http.StatusTooManyRequests, lim.body, true)
		}
		defer st.release()
	}
	if g.maxHTTPInflight > 0 {
		if g.httpInflight.Add(1) > g.maxHTTPInflight {
			g.httpInflight.Add(-1)
			putBuf(bp)
			g.metrics.reject(protoHTTP, nil, reasonInflightLimit)
			return writeError(w, http.StatusTooManyRequests, g.httpBusyBody, true)
		}
		defer g.httpInflight.Add(-1)
	}

	// Forward and wait.
	c := callPool.Get().(*call)
	c.isHTTP = true
	id := g.nextID.Add(1)
	g.mu.Lock()
	g.calls[id] = c
	g.mu.Unlock()
	select {
	case g.out <- frame{kind: kindHTTP, id: id, raw: bp}:
	case <-g.dead:
		putBuf(bp)
		g.forget(id, c)
		c.isHTTP = false
		callPool.Put(c)
		return writeError(w, http.StatusServiceUnavailable, backendGoneBody, false)
	}
	ctx := r.Context()
	var rp *[]byte
	select {
	case rp = <-c.http:
	case <-ctx.Done():
		g.abandon(id, c)
		return statusClientGone, 0
	case <-g.dead:
		g.abandon(id, c)
		return writeError(w, http.StatusServiceUnavailable, backendGoneBody, false)
	}
	st := c.stream
	c.isHTTP, c.stream = false, nil
	callPool.Put(c)
	if rp == nil {
		return writeError(w, http.StatusServiceUnavailable, backendGoneBody, false)
	}
	if st != nil { // REPLY-HTTP-START: the body follows in parts
		return g.relayStream(w, r, id, st, rp)
	}
	status, n := g.writeReply(w, *rp)
	putBuf(rp)
	return status, n
}

// inferState is the admission state of the model of an infer POST, or nil.
func (g *gateway) inferState(r *http.Request) *modelState {
	if r.Method != http.MethodPost {
		return nil
	}
	if name, ok := inferModel(r.URL.Path); ok {
		return g.model(name)
	}
	return nil
}

var backendGoneBody = errorBody("the backend is gone")

// abandon gives up on an HTTP request whose REPLY-HTTP has not arrived, sending CANCEL.
func (g *gateway) abandon(id uint64, c *call) {
	if g.forget(id, c) {
		select {
		case g.out <- frame{kind: kindCancel, id: id}:
		case <-g.dead:
		}
	} else if c.stream != nil { // its REPLY-HTTP-START was read: the parts must stop
		g.dropStream(id)
	}
	c.isHTTP, c.stream = false, nil
	callPool.Put(c)
}

func grow(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b[:len(b)+n]
	}
	nb := make([]byte, len(b)+n, max(2*cap(b), len(b)+n))
	copy(nb, b)
	return nb
}

// writeReply writes a REPLY-HTTP body: u16 status | u16 header_count |
// header_count × (u16 name_len | name | u32 value_len | value) | response body. It
// returns the status and body length written.
func (g *gateway) writeReply(w http.ResponseWriter, b []byte) (int, int) {
	status, b, ok := writeHead(w, b, false)
	if !ok {
		return writeError(w, http.StatusBadGateway, errorBody("malformed reply from the backend"), false)
	}
	if len(b) > 0 {
		w.Write(b)
	}
	return status, len(b)
}

// writeHead writes the status and headers of a REPLY-HTTP or REPLY-HTTP-START body
// (u16 status | u16 header_count | headers | body) and returns the status and the body
// bytes; ok is false, and nothing is written, when b is malformed. A whole reply
// (streamed false) gets a Content-Length unless the backend gave one.
func writeHead(w http.ResponseWriter, b []byte, streamed bool) (status int, body []byte, ok bool) {
	if len(b) < 4 {
		return 0, nil, false
	}
	status = int(binary.LittleEndian.Uint16(b))
	count := int(binary.LittleEndian.Uint16(b[2:]))
	b = b[4:]
	if status < 100 || status > 999 {
		return 0, nil, false
	}
	h := w.Header()
	haveLength, haveDate, haveType := streamed, false, false
	for i := 0; i < count; i++ {
		if len(b) < 2 {
			clear(h)
			return 0, nil, false
		}
		n := int(binary.LittleEndian.Uint16(b))
		if len(b) < 2+n+4 {
			clear(h)
			return 0, nil, false
		}
		name := textproto.CanonicalMIMEHeaderKey(string(b[2 : 2+n]))
		vn := int(binary.LittleEndian.Uint32(b[2+n:]))
		b = b[2+n+4:]
		if len(b) < vn {
			clear(h)
			return 0, nil, false
		}
		h[name] = append(h[name], string(b[:vn]))
		b = b[vn:]
		switch name {
		case "Content-Length":
			haveLength = true
		case "Date":
			haveDate = true
		case "Content-Type":
			haveType = true
		}
	}
	if !haveLength {
		h["Content-Length"] = []string{strconv.Itoa(len(b))}
	}
	if !haveDate {
		h["Date"] = nil // no Date unless the backend sent one
	}
	if !haveType {
		h["Content-Type"] = nil // no content sniffing
	}
	w.WriteHeader(status)
	return status, b, true
}

// serveHTTPListener serves lis until the server is shut down or closed.
func (g *gateway) serveHTTPListener(lis net.Listener) error {
	err := g.httpSrv.Serve(lis)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// shutdownHTTP drains the HTTP server within grace, then closes it.
func (g *gateway) shutdownHTTP(grace time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := g.httpSrv.Shutdown(ctx); err != nil {
		g.httpSrv.Close()
	}
}
