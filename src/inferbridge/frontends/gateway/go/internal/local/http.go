package local

import (
	"encoding/binary"
	"io"
	"net/http"
	"net/textproto"
	"strconv"
	"sync"

	"github.com/inferbridge/inferbridge/gateway/internal/frontend"
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

// ServeREST forwards one request (authorized by the front end) to the backend as an
// HTTP frame and writes its REPLY-HTTP; it returns the status and body length answered.
func (g *gateway) ServeREST(w http.ResponseWriter, r *http.Request, req frontend.Request) (int, int) {
	arrival := req.Start.UnixNano()
	path, rawPath := r.URL.Path, r.URL.EscapedPath()
	if len(path) > 0xffff || len(rawPath) > 0xffff || len(r.URL.RawQuery) > 0xffff || len(r.Method) > 0xffff {
		return frontend.WriteError(w, http.StatusRequestURITooLong, frontend.ErrorBody("request target is over 65535 bytes"), false)
	}
	principal := req.Principal
	maxBody := int64(g.maxRecvBytes)
	if r.ContentLength > maxBody {
		g.metrics.reject(protoHTTP, g.inferState(r, req.Path), reasonTooLarge)
		return frontend.TooLarge(w, r.ContentLength, maxBody)
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
		if frontend.IsPrincipalHeader(name) { // only the gateway tells Python who is calling
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
		return frontend.WriteError(w, http.StatusRequestHeaderFieldsTooLarge, frontend.ErrorBody("more than 65535 header fields"), false)
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
				g.metrics.reject(protoHTTP, g.inferState(r, req.Path), reasonTooLarge)
				return frontend.TooLarge(w, -1, maxBody)
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
		return frontend.UnreadableBody(w, r, err, len(b)-bodyAt)
	}
	g.metrics.proto[protoHTTP].reqBytes.Add(float64(len(b) - bodyAt))

	// Admission (a request given up on frees its slot early: admission says why).
	var held admission
	if st := g.inferState(r, req.Path); st != nil {
		if lim := st.admit(); lim != nil {
			putBuf(bp)
			g.metrics.reject(protoHTTP, st, reasonQueueFull)
			return frontend.WriteError(w, http.StatusTooManyRequests, lim.body, true)
		}
		held.st = st
		defer held.release()
	}
	if g.maxHTTPInflight > 0 {
		if g.httpInflight.Add(1) > g.maxHTTPInflight {
			g.httpInflight.Add(-1)
			putBuf(bp)
			g.metrics.reject(protoHTTP, nil, reasonInflightLimit)
			return frontend.WriteError(w, http.StatusTooManyRequests, g.httpBusyBody, true)
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
		return frontend.WriteError(w, http.StatusServiceUnavailable, backendGoneBody, false)
	}
	ctx := r.Context()
	var rp *[]byte
	select {
	case rp = <-c.http:
	case <-ctx.Done():
		held.release()
		g.abandon(id, c)
		return frontend.StatusClientGone, 0
	case <-g.dead:
		g.abandon(id, c)
		return frontend.WriteError(w, http.StatusServiceUnavailable, backendGoneBody, false)
	}
	st := c.stream
	c.isHTTP, c.stream = false, nil
	callPool.Put(c)
	if rp == nil {
		return frontend.WriteError(w, http.StatusServiceUnavailable, backendGoneBody, false)
	}
	if st != nil { // REPLY-HTTP-START: the body follows in parts
		return g.relayStream(w, r, id, st, rp)
	}
	status, n := g.writeReply(w, *rp)
	putBuf(rp)
	return status, n
}

// inferState is the admission state of the model of an infer (or generate) POST, or nil.
func (g *gateway) inferState(r *http.Request, p frontend.Path) *modelState {
	if r.Method != http.MethodPost || !p.Route.RunsModel() {
		return nil
	}
	return g.model(p.Model)
}

var backendGoneBody = frontend.ErrorBody("the backend is gone")

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
		return frontend.WriteError(w, http.StatusBadGateway, frontend.ErrorBody("malformed reply from the backend"), false)
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
