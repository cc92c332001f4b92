package pool

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// One HTTP/1.1 exchange on one connection of an h1Client: the request written, the
// response head parsed, its body framed (RFC 9112 §6).

// h1Conn is one connection to the upstream, used by one request at a time.
type h1Conn struct {
	client    *h1Client
	nc        net.Conn
	raw       syscall.RawConn // the TCP socket, for the liveness check (nil: none)
	tls       bool
	br        *bufio.Reader
	bw        *bufio.Writer
	tp        textproto.Reader
	idleSince time.Time
}

func (pc *h1Conn) close() { pc.nc.Close() }

// alive reports whether a pooled connection still looks usable: nothing unasked for
// buffered, and (where the socket can be peeked at) not closed by the server.
func (pc *h1Conn) alive() bool {
	if pc.br.Buffered() > 0 {
		return false // bytes no request asked for: the framing is lost
	}
	if pc.raw == nil {
		return true
	}
	return peekAlive(pc.raw, pc.tls)
}

// roundTrip writes req and reads the response head; the body is read by the caller.
// A context that ends meanwhile closes the connection.
func (pc *h1Conn) roundTrip(ctx context.Context, req *h1Request) (*http.Response, error) {
	stop := context.AfterFunc(ctx, pc.close)
	if err := pc.writeRequest(req); err != nil {
		stop()
		pc.close()
		return nil, &h1NoResponseError{err}
	}
	resp, err := pc.readResponse(req, stop)
	if err != nil {
		stop()
		pc.close()
		return nil, err
	}
	return resp, nil
}

func (pc *h1Conn) writeRequest(req *h1Request) error {
	w := pc.bw
	w.WriteString(req.method)
	w.WriteByte(' ')
	w.WriteString(req.target)
	w.WriteString(" HTTP/1.1\r\nHost: ")
	w.WriteString(pc.client.host)
	w.WriteString("\r\n")
	for name, values := range req.header {
		if hopHeaders[name] || name == "Host" || name == "Content-Length" || req.omitted(name) {
			continue
		}
		for _, v := range values {
			if err := writeField(w, name, v); err != nil {
				return err
			}
		}
	}
	for _, f := range req.extra {
		if err := writeField(w, f.name, f.value); err != nil {
			return err
		}
	}
	if len(req.body) > 0 || req.method == http.MethodPost || req.method == http.MethodPut || req.method == http.MethodPatch {
		var num [20]byte
		w.WriteString("Content-Length: ")
		w.Write(strconv.AppendInt(num[:0], int64(len(req.body)), 10))
		w.WriteString("\r\n")
	}
	w.WriteString("\r\n")
	w.Write(req.body)
	return w.Flush()
}

func (req *h1Request) omitted(name string) bool {
	for _, o := range req.omit {
		if o == name {
			return true
		}
	}
	for _, f := range req.extra {
		if f.name == name {
			return true
		}
	}
	return false
}

func writeField(w *bufio.Writer, name, value string) error {
	if strings.ContainsAny(value, "\r\n") {
		return fmt.Errorf("header field %s: a value with a line break cannot be sent", name)
	}
	w.WriteString(name)
	w.WriteString(": ")
	w.WriteString(value)
	_, err := w.WriteString("\r\n")
	return err
}

// readResponse reads the status line and header fields; a 1xx interim response is
// skipped. stop ends the context's hold on the connection once the body is read.
func (pc *h1Conn) readResponse(req *h1Request, stop func() bool) (*http.Response, error) {
	if _, err := pc.br.Peek(1); err != nil {
		return nil, &h1NoResponseError{err}
	}
	for {
		resp, err := pc.readHead()
		if err != nil {
			return nil, err
		}
		switch code := resp.StatusCode; {
		case code == http.StatusSwitchingProtocols:
			return nil, errors.New("the upstream switched protocols (101), which the gateway does not forward")
		case code >= 100 && code < 200:
			continue // 100 Continue, 103 Early Hints: the response follows
		}
		if err := pc.frame(resp, req, stop); err != nil {
			return nil, err
		}
		return resp, nil
	}
}

// readHead reads a response's status line and header fields: from one copy of the head
// when it is in the buffer and plain (leanHead), else line by line with textproto.
func (pc *h1Conn) readHead() (*http.Response, error) {
	if resp, n := leanHead(pc.br); resp != nil {
		pc.br.Discard(n)
		return resp, nil
	}
	line, err := pc.br.ReadSlice('\n')
	if err != nil {
		return nil, fmt.Errorf("reading the status line: %w", unexpectedEOF(err))
	}
	resp, err := parseStatusLine(strings.TrimRight(string(line), "\r\n"))
	if err != nil {
		return nil, err
	}
	hdr, err := pc.tp.ReadMIMEHeader()
	if err != nil {
		return nil, fmt.Errorf("reading the response header: %w", unexpectedEOF(err))
	}
	resp.Header = http.Header(hdr)
	return resp, nil
}

func parseStatusLine(s string) (*http.Response, error) {
	proto, status, _ := strings.Cut(s, " ")
	var minor int
	switch proto {
	case "HTTP/1.1":
		minor = 1
	case "HTTP/1.0":
	default:
		return nil, fmt.Errorf("malformed status line %q: want HTTP/1.1 or HTTP/1.0", s)
	}
	codeText, _, _ := strings.Cut(status, " ")
	code, err := strconv.Atoi(codeText)
	if err != nil || len(codeText) != 3 || code < 100 {
		return nil, fmt.Errorf("malformed status line %q: want a three-digit status code", s)
	}
	return &http.Response{Status: status, StatusCode: code, Proto: proto, ProtoMajor: 1, ProtoMinor: minor}, nil
}

// frame sets resp's body from its framing (RFC 9112 §6.3) and whether the connection
// may carry another request after it.
func (pc *h1Conn) frame(resp *http.Response, req *h1Request, stop func() bool) error {
	h := resp.Header
	b := &h1Body{pc: pc, stop: stop, reuse: resp.ProtoMinor == 1 && !hasToken(h["Connection"], "close")}
	resp.Body = b
	resp.ContentLength = -1
	code := resp.StatusCode
	if req.method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified {
		if code == http.StatusNoContent {
			resp.ContentLength = 0
		}
		b.finish(io.EOF) // no body, whatever the fields say
		return nil
	}
	if te := h["Transfer-Encoding"]; len(te) > 0 {
		if len(te) != 1 || !strings.EqualFold(strings.TrimSpace(te[0]), "chunked") {
			return fmt.Errorf("unsupported transfer encoding %q: only chunked is understood", te)
		}
		delete(h, "Transfer-Encoding")
		delete(h, "Content-Length") // chunked takes precedence (RFC 9112 §6.3)
		resp.TransferEncoding = []string{"chunked"}
		b.chunked = httputil.NewChunkedReader(pc.br)
		return nil
	}
	if cl := h["Content-Length"]; len(cl) > 0 {
		n, err := strconv.ParseInt(strings.TrimSpace(cl[0]), 10, 64)
		if err != nil || n < 0 {
			return fmt.Errorf("malformed Content-Length %q", cl[0])
		}
		for _, v := range cl[1:] {
			if strings.TrimSpace(v) != strings.TrimSpace(cl[0]) {
				return fmt.Errorf("conflicting Content-Length fields %q", cl)
			}
		}
		resp.ContentLength, b.left = n, n
		if n == 0 {
			b.finish(io.EOF)
		}
		return nil
	}
	b.untilClose, b.reuse = true, false // the body ends with the connection
	return nil
}

// hasToken reports whether a comma-separated field has token (case-insensitive).
func hasToken(values []string, token string) bool {
	for _, v := range values {
		for v != "" {
			var t string
			t, v, _ = strings.Cut(v, ",")
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

func unexpectedEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

var errBodyClosed = errors.New("read on a closed response body")

// h1Body is a response body read from its connection: Content-Length bytes, chunks, or
// everything until the connection closes.
type h1Body struct {
	pc         *h1Conn
	stop       func() bool
	reuse      bool // the connection may be pooled once the body is read to its end
	left       int64
	chunked    io.Reader
	untilClose bool
	done       bool
	err        error // after done: io.EOF, or why the body ended early
}

func (b *h1Body) Read(p []byte) (int, error) {
	if b.done {
		return 0, b.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	switch {
	case b.chunked != nil:
		n, err := b.chunked.Read(p)
		if err == io.EOF {
			if err := b.readTrailer(); err != nil {
				b.finish(err)
				return n, err
			}
		}
		if err != nil {
			b.finish(unexpectedEOFIfNot(err))
		}
		return n, b.errIfDone(err)
	case b.untilClose:
		n, err := b.pc.br.Read(p)
		if err != nil {
			b.finish(err)
		}
		return n, err
	default:
		if int64(len(p)) > b.left {
			p = p[:b.left]
		}
		n, err := b.pc.br.Read(p)
		b.left -= int64(n)
		switch {
		case b.left == 0:
			b.finish(io.EOF)
			return n, io.EOF
		case err != nil:
			err = fmt.Errorf("the response body ended %d bytes short of its Content-Length: %w", b.left, unexpectedEOF(err))
			b.finish(err)
			return n, err
		}
		return n, nil
	}
}

func (b *h1Body) errIfDone(err error) error {
	if b.done {
		return b.err
	}
	return err
}

func unexpectedEOFIfNot(err error) error {
	if err == io.EOF {
		return io.EOF
	}
	return fmt.Errorf("reading the chunked response body: %w", unexpectedEOF(err))
}

// readTrailer consumes the trailer section after the last chunk (the gateway forwards
// no trailers).
func (b *h1Body) readTrailer() error {
	if _, err := b.pc.tp.ReadMIMEHeader(); err != nil {
		return fmt.Errorf("reading the chunked body's trailer: %w", unexpectedEOF(err))
	}
	return nil
}

// finish ends the body with err (io.EOF: read to its end) and gives back or closes
// the connection.
func (b *h1Body) finish(err error) {
	b.done, b.err = true, err
	held := b.stop() // false: the context ended and is closing the connection
	if err == io.EOF && b.reuse && held {
		b.pc.client.put(b.pc)
		return
	}
	b.pc.close()
}

// Close releases the body; one not read to its end closes its connection.
func (b *h1Body) Close() error {
	if !b.done {
		b.finish(errBodyClosed)
	}
	return nil
}
