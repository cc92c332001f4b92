package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// httpClient is the small HTTP/1.1 client of the agent's steady path: the heartbeat, the
// assignment long poll, the server's health, index, metrics and statistics. net/http's
// client keeps two goroutines per open connection and runs through much more code on each
// request; at one heartbeat a second that code and the garbage collector's scans of those
// goroutines' stacks keep about a megabyte of the binary resident (issue #13's 8 MB). This
// one does each request on the caller's goroutine and keeps idle connections as bare
// sockets. Downloads (minio-go, plain HTTP(S) sources) keep net/http.
//
// It speaks what those peers answer: Content-Length or chunked bodies, keep-alive, https
// through crypto/tls. No proxies, redirects or compression (none was configured before).
type httpClient struct {
	// Timeout bounds a whole request, from the dial to the body's last byte (0: only the
	// context's deadline).
	Timeout time.Duration
	// IdleTimeout closes an idle connection rather than reuse it after this long (0: 4 s,
	// under uvicorn's 5 s keep-alive, so a reused connection is rarely one the peer is
	// closing).
	IdleTimeout time.Duration
	// TLS configures https:// connections (nil: the system's roots); its ServerName is
	// set from the URL.
	TLS *tls.Config

	mu   sync.Mutex
	idle []*clientConn
}

const (
	maxIdleConns  = 4
	maxHeaderLine = 8 << 10
	dialTimeout   = 10 * time.Second
)

type clientConn struct {
	net.Conn
	key    string // scheme://host:port
	in     lineReader
	out    []byte
	idleAt time.Time
}

// target is a parsed http(s) URL.
type target struct {
	https bool
	host  string // as written (the Host header)
	addr  string // host:port to dial
	name  string // host name or address, for TLS
	path  string // path and query, "/" at least
}

func (t target) key() string {
	if t.https {
		return "https://" + t.addr
	}
	return "http://" + t.addr
}

func parseTarget(rawURL string) (target, error) {
	var t target
	rest, ok := strings.CutPrefix(rawURL, "http://")
	if !ok {
		if rest, ok = strings.CutPrefix(rawURL, "https://"); !ok {
			return t, fmt.Errorf("%q: expected an http:// or https:// URL", rawURL)
		}
		t.https = true
	}
	t.host, t.path = rest, "/"
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		t.host, t.path = rest[:i], rest[i:]
		if t.path[0] != '/' {
			t.path = "/" + t.path
		}
	}
	if i := strings.IndexByte(t.path, '#'); i >= 0 {
		t.path = t.path[:i]
	}
	if t.host == "" || strings.ContainsAny(t.host, "@ \t\r\n") {
		return t, fmt.Errorf("%q: expected http(s)://HOST[:PORT]/PATH", rawURL)
	}
	port := "80"
	if t.https {
		port = "443"
	}
	if host, p, err := net.SplitHostPort(t.host); err == nil {
		t.name, port = host, p
	} else if strings.HasPrefix(t.host, "[") && strings.HasSuffix(t.host, "]") {
		t.name = t.host[1 : len(t.host)-1]
	} else if strings.Contains(t.host, ":") {
		return t, fmt.Errorf("%q: bad host %q", rawURL, t.host)
	} else {
		t.name = t.host
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return t, fmt.Errorf("%q: bad port %q", rawURL, port)
	}
	t.addr = net.JoinHostPort(t.name, port)
	return t, nil
}

// errAnswerTooLarge: a body over the caller's limit (never truncated silently).
var errAnswerTooLarge = errors.New("answer larger than the limit")

// Do sends one request and answers the status and the whole body (at most limit bytes).
// headers are name, value pairs.
func (c *httpClient) Do(ctx context.Context, method, rawURL string, body []byte, limit int, headers ...string) (int, []byte, error) {
	var data []byte
	status, err := c.exchange(ctx, method, rawURL, body, headers, func(_ int, b *answerBody) error {
		var err error
		data, err = readBody(b, limit)
		return err
	})
	return status, data, err
}

// Stream sends one request and hands the answer's body to read as it arrives (nothing
// is held but the connection's buffer); read need not consume it all.
func (c *httpClient) Stream(ctx context.Context, method, rawURL string, read func(status int, body io.Reader) error, headers ...string) error {
	_, err := c.exchange(ctx, method, rawURL, nil, headers, func(status int, b *answerBody) error { return read(status, b) })
	return err
}

// exchange sends the request and has read take the answer. A connection kept alive that
// fails before any byte of the answer (the peer closed it while idle) is replaced once.
func (c *httpClient) exchange(ctx context.Context, method, rawURL string, body []byte, headers []string, read func(int, *answerBody) error) (int, error) {
	t, err := parseTarget(rawURL)
	if err != nil {
		return 0, err
	}
	if c.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Timeout)
		defer cancel()
	}
	for attempt := 0; ; attempt++ {
		cc, reused, err := c.conn(ctx, t)
		if err != nil {
			return 0, requestError(ctx, method, rawURL, err)
		}
		status, keep, answered, err := cc.roundTrip(ctx, method, t, body, headers, read)
		if err == nil {
			if keep {
				c.put(cc)
			} else {
				cc.Close()
			}
			return status, nil
		}
		cc.Close()
		if reused && !answered && attempt == 0 && ctx.Err() == nil {
			continue
		}
		return 0, requestError(ctx, method, rawURL, err)
	}
}

func requestError(ctx context.Context, method, rawURL string, err error) error {
	if ctx.Err() != nil {
		err = ctx.Err() // the deadline or cancellation, not the I/O error it caused
	} else if deadline, ok := ctx.Deadline(); ok && errors.Is(err, os.ErrDeadlineExceeded) && !time.Now().Before(deadline) {
		err = context.DeadlineExceeded // the socket's deadline, set from the context's, came first
	}
	return fmt.Errorf("%s %q: %w", method, rawURL, err)
}

// conn answers an idle connection to t, or a new one.
func (c *httpClient) conn(ctx context.Context, t target) (*clientConn, bool, error) {
	key := t.key()
	idleTimeout := c.IdleTimeout
	if idleTimeout <= 0 {
		idleTimeout = 4 * time.Second
	}
	now := time.Now()
	c.mu.Lock()
	var found *clientConn
	kept := c.idle[:0]
	for _, cc := range c.idle {
		switch {
		case now.Sub(cc.idleAt) > idleTimeout:
			cc.Close()
		case found == nil && cc.key == key:
			found = cc
		default:
			kept = append(kept, cc)
		}
	}
	clear(c.idle[len(kept):])
	c.idle = kept
	c.mu.Unlock()
	if found != nil {
		return found, true, nil
	}
	dialer := net.Dialer{Timeout: dialTimeout}
	raw, err := dialer.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		return nil, false, err
	}
	cc := &clientConn{Conn: raw, key: key}
	if t.https {
		cfg := &tls.Config{}
		if c.TLS != nil {
			cfg = c.TLS.Clone()
		}
		if cfg.ServerName == "" {
			cfg.ServerName = t.name
		}
		cfg.NextProtos = []string{"http/1.1"}
		conn := tls.Client(raw, cfg)
		if err := conn.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, false, err
		}
		cc.Conn = conn
	}
	cc.in = lineReader{r: cc.Conn, buf: make([]byte, 4096)}
	return cc, false, nil
}

func (c *httpClient) put(cc *clientConn) {
	cc.idleAt = time.Now()
	if cap(cc.out) > 64<<10 {
		cc.out = nil // a large body's buffer is not kept for heartbeats
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.idle) >= maxIdleConns {
		c.idle[0].Close()
		c.idle = append(c.idle[:0], c.idle[1:]...)
	}
	c.idle = append(c.idle, cc)
}

// CloseIdle closes the idle connections.
func (c *httpClient) CloseIdle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cc := range c.idle {
		cc.Close()
	}
	c.idle = nil
}

var longAgo = time.Unix(1, 0)

// roundTrip writes the request and has read take the answer. answered: a byte of the
// answer came (so the request reached the peer); keep: the connection can carry another.
func (cc *clientConn) roundTrip(ctx context.Context, method string, t target, body []byte, headers []string, read func(int, *answerBody) error) (status int, keep, answered bool, err error) {
	deadline, _ := ctx.Deadline() // zero: none
	if err := cc.SetDeadline(deadline); err != nil {
		return 0, false, false, err
	}
	stop := context.AfterFunc(ctx, func() { cc.SetDeadline(longAgo) }) // unblocks the I/O below
	defer stop()

	cc.in.got = false
	out := append(cc.out[:0], method...)
	out = append(out, ' ')
	out = append(out, t.path...)
	out = append(out, " HTTP/1.1\r\nHost: "...)
	out = append(out, t.host...)
	out = append(out, "\r\nUser-Agent: inferbridge-agent/"+agentVersion+"\r\n"...)
	for i := 0; i+1 < len(headers); i += 2 {
		out = append(out, headers[i]...)
		out = append(out, ": "...)
		out = append(out, headers[i+1]...)
		out = append(out, "\r\n"...)
	}
	if body != nil || method == "POST" || method == "PUT" {
		out = append(out, "Content-Length: "...)
		out = strconv.AppendInt(out, int64(len(body)), 10)
		out = append(out, "\r\n"...)
	}
	out = append(out, "\r\n"...)
	out = append(out, body...)
	cc.out = out
	if _, err := cc.Write(out); err != nil {
		return 0, false, false, err
	}

	answer := answerBody{in: &cc.in, left: -1}
	closing := false
	for {
		line, err := cc.in.line()
		if err != nil {
			return 0, false, cc.in.got, err
		}
		proto, rest, _ := bytes.Cut(line, []byte(" "))
		code, _, _ := bytes.Cut(rest, []byte(" "))
		status = int(digits(code))
		if !bytes.HasPrefix(proto, []byte("HTTP/1.")) || len(code) != 3 || status < 100 {
			return 0, false, true, fmt.Errorf("malformed status line %q", truncate(line))
		}
		closing = string(proto) == "HTTP/1.0"
		for {
			line, err := cc.in.line()
			if err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return 0, false, true, err
			}
			if len(line) == 0 {
				break
			}
			name, value, ok := bytes.Cut(line, []byte(":"))
			if !ok {
				return 0, false, true, fmt.Errorf("malformed header line %q", truncate(line))
			}
			value = bytes.TrimSpace(value)
			switch {
			case bytes.EqualFold(name, []byte("Content-Length")):
				n := digits(value)
				if n < 0 || (answer.left >= 0 && n != answer.left) {
					return 0, false, true, fmt.Errorf("bad Content-Length %q", truncate(value))
				}
				answer.left = n
			case bytes.EqualFold(name, []byte("Transfer-Encoding")):
				last := bytes.TrimSpace(value[bytes.LastIndexByte(value, ',')+1:])
				if !bytes.EqualFold(last, []byte("chunked")) {
					return 0, false, true, fmt.Errorf("unsupported Transfer-Encoding %q", truncate(value))
				}
				answer.chunked = true
			case bytes.EqualFold(name, []byte("Connection")):
				closing = closing && !hasToken(value, "keep-alive") || hasToken(value, "close")
			}
		}
		if status >= 200 || status == 101 {
			break
		}
		answer = answerBody{in: &cc.in, left: -1} // an interim answer (100, 103): the real one follows
	}
	switch {
	case method == "HEAD" || status == 204 || status == 304:
		answer.eof = true
	case answer.chunked:
		answer.left = 0
	case answer.left < 0:
		closing = true // to the end of the stream
	}
	if err := read(status, &answer); err != nil {
		return 0, false, true, err
	}
	// A body not read to its end, or bytes beyond it, would be read as the next answer:
	// such a connection is not reused.
	keep = !closing && answer.eof && cc.in.lo == cc.in.hi
	return status, keep, true, nil
}

// digits parses a decimal number of at most 18 digits (-1: not one).
func digits(b []byte) int64 {
	if len(b) == 0 || len(b) > 18 {
		return -1
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return -1
		}
		n = n*10 + int64(c-'0')
	}
	return n
}

func hasToken(value []byte, token string) bool {
	for len(value) > 0 {
		var part []byte
		part, value, _ = bytes.Cut(value, []byte(","))
		if bytes.EqualFold(bytes.TrimSpace(part), []byte(token)) {
			return true
		}
	}
	return false
}

func truncate(line []byte) string {
	if len(line) > 100 {
		line = line[:100]
	}
	return string(line)
}

// readBody reads a whole body, refusing one over limit.
func readBody(b *answerBody, limit int) ([]byte, error) {
	if b.eof {
		return nil, nil
	}
	size := 512
	if !b.chunked && b.left >= 0 {
		if b.left > int64(limit) {
			return nil, fmt.Errorf("%w: %d bytes, at most %d expected", errAnswerTooLarge, b.left, limit)
		}
		size = int(b.left)
	}
	data := make([]byte, 0, size)
	for {
		if len(data) > limit {
			return nil, fmt.Errorf("%w: more than %d bytes", errAnswerTooLarge, limit)
		}
		if len(data) == cap(data) {
			if !b.chunked && b.left == 0 { // the exact length was allocated
				b.eof = true
				return data, nil
			}
			data = append(data, 0)[:len(data)]
		}
		n, err := b.Read(data[len(data):min(cap(data), limit+1)])
		data = data[:len(data)+n]
		if err == io.EOF {
			if len(data) > limit {
				return nil, fmt.Errorf("%w: more than %d bytes", errAnswerTooLarge, limit)
			}
			return data, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// answerBody reads an answer's body: Content-Length bytes, chunks, or (left < 0, not
// chunked) to the end of the stream.
type answerBody struct {
	in      *lineReader
	chunked bool
	left    int64 // bytes left in the body, or in the current chunk
	chunks  int   // chunks read (each but the first is preceded by its predecessor's CRLF)
	eof     bool
}

func (b *answerBody) Read(p []byte) (int, error) {
	if b.eof {
		return 0, io.EOF
	}
	if b.chunked && b.left == 0 {
		if err := b.nextChunk(); err != nil || b.eof {
			return 0, err
		}
	}
	if !b.chunked && b.left == 0 {
		b.eof = true
		return 0, io.EOF
	}
	if b.left > 0 && int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.in.read(p)
	if b.left > 0 {
		b.left -= int64(n)
	}
	if err == io.EOF {
		if !b.chunked && b.left < 0 {
			b.eof = true // the body ran to the end of the stream, as announced
			return n, io.EOF
		}
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (b *answerBody) nextChunk() error {
	if b.chunks > 0 {
		if line, err := b.in.line(); err != nil || len(line) != 0 {
			return fmt.Errorf("a chunk not followed by CRLF")
		}
	}
	b.chunks++
	line, err := b.in.line()
	if err != nil {
		return unexpected(err)
	}
	text, _, _ := bytes.Cut(line, []byte(";"))
	size, err := strconv.ParseInt(string(bytes.TrimSpace(text)), 16, 64)
	if err != nil || size < 0 {
		return fmt.Errorf("malformed chunk size %q", truncate(line))
	}
	if size == 0 {
		for { // trailers, up to the blank line
			line, err := b.in.line()
			if err != nil {
				return unexpected(err)
			}
			if len(line) == 0 {
				b.eof = true
				return nil
			}
		}
	}
	b.left = size
	return nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// lineReader buffers a connection's answer: header lines, then the body.
type lineReader struct {
	r      io.Reader
	buf    []byte
	lo, hi int
	got    bool // a byte was read
	max    int  // the longest line (0: maxHeaderLine)
	// lastLine: a last line without its newline is a line (a body's); otherwise it is
	// io.ErrUnexpectedEOF (an answer cut short).
	lastLine bool
}

func (l *lineReader) fill() error {
	if l.lo > 0 {
		l.hi = copy(l.buf, l.buf[l.lo:l.hi])
		l.lo = 0
	}
	n, err := l.r.Read(l.buf[l.hi:])
	l.hi += n
	if n > 0 {
		l.got = true
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// line answers the next line without its CRLF (the slice is valid until the next read);
// io.EOF only at the end of the stream between lines.
func (l *lineReader) line() ([]byte, error) {
	for {
		if i := bytes.IndexByte(l.buf[l.lo:l.hi], '\n'); i >= 0 {
			line := l.buf[l.lo : l.lo+i]
			l.lo += i + 1
			if n := len(line); n > 0 && line[n-1] == '\r' {
				line = line[:n-1]
			}
			return line, nil
		}
		limit := l.max
		if limit <= 0 {
			limit = maxHeaderLine
		}
		if l.hi-l.lo >= limit {
			return nil, fmt.Errorf("a line over %d bytes", limit)
		}
		if l.hi == len(l.buf) && l.lo == 0 {
			l.buf = append(l.buf, make([]byte, len(l.buf))...)
		}
		if err := l.fill(); err != nil {
			if err == io.EOF && l.lo < l.hi {
				if l.lastLine {
					line := l.buf[l.lo:l.hi]
					l.lo = l.hi
					return bytes.TrimSuffix(line, []byte("\r")), nil
				}
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

// read reads body bytes: what is buffered first, then from the connection.
func (l *lineReader) read(p []byte) (int, error) {
	if l.lo == l.hi {
		if len(p) >= len(l.buf) {
			return l.r.Read(p)
		}
		if err := l.fill(); err != nil {
			return 0, err
		}
	}
	n := copy(p, l.buf[l.lo:l.hi])
	l.lo += n
	return n, nil
}
