package h1server

import (
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
)

// bufferBody is how much of a response body is held back to send it with a
// Content-Length; a larger one, or one flushed, goes chunked (as net/http's, whose
// figure is smaller: 2 KB).
const bufferBody = 64 << 10

// sniffLen is how much of a body net/http's content sniffing reads.
const sniffLen = 512

// response is the http.ResponseWriter of one request, reused by the connection.
// Its semantics are net/http's: the head is sent at the first Flush or once the body
// outgrows the buffer, else when the handler returns (with a Content-Length); a
// Content-Type is sniffed when none is set, a Date added unless set to nil, a declared
// Content-Length is kept to, and "Connection: close" (set by the handler or asked by
// the client) closes the connection after the response.
type response struct {
	c          *conn
	req        *http.Request
	header     http.Header
	status     int
	headSent   bool
	chunked    bool
	declared   int64 // the handler's Content-Length (-1: none)
	written    int64 // body bytes written (sent or buffered)
	buf        []byte
	closeAfter bool
	failed     bool // a write to the connection failed
}

func (w *response) reset(req *http.Request) {
	w.req = req
	w.header = make(http.Header, 4)
	w.status, w.headSent, w.chunked = 0, false, false
	w.declared, w.written = -1, 0
	w.buf = w.buf[:0]
	w.closeAfter, w.failed = req.Close, false
}

func (w *response) Header() http.Header { return w.header }

func (w *response) WriteHeader(code int) {
	if w.status != 0 {
		return // superfluous, as net/http (which logs it)
	}
	if code < 100 || code > 999 {
		panic("h1server: invalid WriteHeader code " + strconv.Itoa(code))
	}
	if code < 200 { // an interim response is not supported: a final one follows
		return
	}
	w.status = code
	if cl := w.header["Content-Length"]; len(cl) > 0 {
		if n, ok := parseLength(cl[0]); ok {
			w.declared = n
		} else {
			delete(w.header, "Content-Length")
		}
	}
}

func (w *response) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	if w.req.Method == http.MethodHead { // counted, and its start kept to sniff a type
		if room := sniffLen - len(w.buf); room > 0 {
			w.buf = append(w.buf, p[:min(room, len(p))]...)
		}
		w.written += int64(len(p))
		return len(p), nil
	}
	if w.declared >= 0 && w.written+int64(len(p)) > w.declared {
		return 0, http.ErrContentLength
	}
	if w.failed {
		return 0, errConnFailed
	}
	w.written += int64(len(p))
	if !w.headSent {
		if len(w.buf)+len(p) <= bufferBody {
			w.buf = append(w.buf, p...)
			return len(p), nil
		}
		sample := w.buf
		if len(sample) == 0 {
			sample = p
		}
		w.sendBuffered(false, sample)
	}
	w.writeBody(p)
	if w.failed {
		return 0, errConnFailed
	}
	return len(p), nil
}

// Flush sends what is buffered (the head, if not yet sent, and the body so far).
func (w *response) Flush() {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !w.headSent {
		w.sendBuffered(false, w.buf)
	}
	if err := w.c.bw.Flush(); err != nil {
		w.failed = true
	}
}

// FlushError is Flush with its error (http.ResponseController).
func (w *response) FlushError() error {
	w.Flush()
	if w.failed {
		return errConnFailed
	}
	return nil
}

// finish ends the response once the handler returned; false when the connection must
// close (a write failed, or a declared length was not met).
func (w *response) finish() bool {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !w.headSent {
		w.sendBuffered(true, w.buf)
	}
	if w.chunked {
		w.c.bw.WriteString("0\r\n\r\n")
	}
	if err := w.c.bw.Flush(); err != nil {
		w.failed = true
	}
	if w.buf = w.buf[:0]; cap(w.buf) > 4*bufferBody {
		w.buf = nil // not kept for every later request of the connection
	}
	short := w.declared >= 0 && w.written < w.declared && bodyAllowed(w.status) && w.req.Method != http.MethodHead
	return !w.failed && !short
}

// sendHead writes the status line and header fields; complete says the whole body is
// buffered (so that its length can be sent), sample is the body's start (to sniff a
// Content-Type from when none is set, as net/http does).
func (w *response) sendHead(complete bool, sample []byte) {
	w.headSent = true
	h := w.header
	bw := w.c.bw
	allowed := bodyAllowed(w.status)
	if allowed && len(sample) > 0 {
		if _, set := h["Content-Type"]; !set && h.Get("Transfer-Encoding") == "" {
			h["Content-Type"] = []string{http.DetectContentType(sample)}
		}
	}
	delete(h, "Transfer-Encoding")
	if hasCloseToken(h["Connection"]) {
		w.closeAfter = true
	}
	delete(h, "Connection")
	switch {
	case !allowed:
		delete(h, "Content-Length")
	case w.declared >= 0:
	case w.req.Method == http.MethodHead: // no body follows, so no chunked framing
		if complete && w.written > 0 {
			h["Content-Length"] = []string{strconv.FormatInt(w.written, 10)}
		}
	case complete:
		h["Content-Length"] = []string{strconv.FormatInt(w.written, 10)}
	default:
		w.chunked = true
	}
	if w.c.srv.closing.Load() {
		w.closeAfter = true
	}

	var num [20]byte
	bw.WriteString("HTTP/1.1 ")
	bw.Write(strconv.AppendInt(num[:0], int64(w.status), 10))
	bw.WriteByte(' ')
	bw.WriteString(http.StatusText(w.status))
	bw.WriteString("\r\n")
	for name, values := range h {
		for _, v := range values {
			if !validValue(v) {
				continue // as net/http: a field that would break the framing is dropped
			}
			bw.WriteString(name)
			bw.WriteString(": ")
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
	if _, set := h["Date"]; !set {
		bw.WriteString("Date: ")
		bw.WriteString(httpDate())
		bw.WriteString("\r\n")
	}
	if w.chunked {
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	if w.closeAfter {
		bw.WriteString("Connection: close\r\n")
	}
	bw.WriteString("\r\n")
}

// sendBuffered sends the head (sendHead) and then the body buffered so far.
func (w *response) sendBuffered(complete bool, sample []byte) {
	w.sendHead(complete, sample)
	w.writeBody(w.buf)
	w.buf = w.buf[:0]
}

func (w *response) writeBody(p []byte) {
	if len(p) == 0 || w.failed || w.req.Method == http.MethodHead {
		return
	}
	bw := w.c.bw
	if w.chunked {
		var num [16]byte
		bw.Write(strconv.AppendInt(num[:0], int64(len(p)), 16))
		bw.WriteString("\r\n")
		bw.Write(p)
		if _, err := bw.WriteString("\r\n"); err != nil {
			w.failed = true
		}
		return
	}
	if _, err := bw.Write(p); err != nil {
		w.failed = true
	}
}

type connError struct{}

func (connError) Error() string { return "h1server: the connection failed" }

var errConnFailed error = connError{}

// bodyAllowed: 1xx, 204 and 304 responses have no body (RFC 9110 §6.4.1).
func bodyAllowed(code int) bool {
	return code >= 200 && code != http.StatusNoContent && code != http.StatusNotModified
}

func hasCloseToken(values []string) bool {
	for _, v := range values {
		if c, _ := parseConnection(v); c {
			return true
		}
	}
	return false
}

func validValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if v[i] == '\r' || v[i] == '\n' {
			return false
		}
	}
	return true
}

// httpDate is the Date field's value, formatted once a second.
func httpDate() string {
	now := time.Now().Unix()
	if d := cachedDate.Load(); d != nil && d.unix == now {
		return d.text
	}
	d := &dateText{unix: now, text: time.Unix(now, 0).UTC().Format(http.TimeFormat)}
	cachedDate.Store(d)
	return d.text
}

type dateText struct {
	unix int64
	text string
}

var cachedDate atomic.Pointer[dateText]
