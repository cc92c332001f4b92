package main

// The -raw REST engine: a minimal HTTP/1.1 client over plain keep-alive TCP connections.
//
// The request is built once, by the SDK's own REST client (captured on its way out, so the
// bytes are exactly what inferbridge.RESTClient sends), and written as is for every
// request. Of the response only the status line and the Content-Length, Connection and
// Transfer-Encoding headers are parsed; the body is skipped. One connection carries one
// request at a time (no pipelining). This costs a few microseconds of client CPU per
// request where net/http costs tens: an overload test on a small machine must not lose
// the cores the server needs to its own load generator.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	inferbridge "github.com/inferbridge/inferbridge/clients/go"
)

// Error kinds of the raw engine (HTTP statuses are reported as "HTTP <status>").
const (
	kindConnect   = "CONNECT_ERROR"     // the TCP connection could not be opened
	kindClosed    = "CONNECTION_CLOSED" // reset or closed by the server before a full response
	kindTimeout   = "CLIENT_TIMEOUT"    // no full response within -timeout of the due time
	kindBad       = "BAD_RESPONSE"      // not a response this client can read
	kindDropped   = "DROPPED"           // open loop: every connection of the pool was busy
	rawBufferSize = 16 << 10
	// A connection idle this long is redialled before use: servers close idle keep-alive
	// connections (uvicorn after 5 s), and a request written into one would be lost.
	rawMaxIdle = 2 * time.Second
)

// rawRequest is one pre-serialized HTTP/1.1 request and where to send it.
type rawRequest struct {
	addr  string // host:port
	bytes []byte // request line, headers and body
}

var errCaptured = errors.New("request captured")

type captureTransport struct {
	req  *http.Request
	body []byte
}

func (c *captureTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	var err error
	if r.Body != nil {
		c.body, err = io.ReadAll(r.Body)
		_ = r.Body.Close()
		if err != nil {
			return nil, err
		}
	}
	c.req = r
	return nil, errCaptured
}

// captureRESTRequest serializes the request the SDK's REST client would send for req
// with encoding enc, without a deadline (so without a "timeout" parameter: the server's
// default timeout applies, and -timeout only bounds how long the client waits). A
// non-nil body replaces the body the client built.
func captureRESTRequest(target string, enc inferbridge.Encoding, req *inferbridge.InferRequest, body []byte) (*rawRequest, error) {
	capture := &captureTransport{}
	client, err := inferbridge.NewRESTClient(target, inferbridge.WithEncoding(enc),
		inferbridge.WithHTTPClient(&http.Client{Transport: capture}))
	if err != nil {
		return nil, err
	}
	_, _ = client.Infer(context.Background(), req)
	if capture.req == nil {
		return nil, fmt.Errorf("the REST client sent no request for %s", req.Model)
	}
	if body == nil {
		body = capture.body
	}
	return serializeRequest(capture.req, body)
}

func serializeRequest(r *http.Request, body []byte) (*rawRequest, error) {
	u := r.URL
	if u.Scheme != "http" {
		return nil, fmt.Errorf("-raw speaks plain http, not %q", u.Scheme)
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\n", r.Method, u.RequestURI(), u.Host)
	keys := make([]string, 0, len(r.Header))
	for k := range r.Header {
		if k != "Content-Length" && k != "Host" && k != "Connection" {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		for _, v := range r.Header[k] {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n", len(body))
	b.Write(body)
	return &rawRequest{addr: addr, bytes: b.Bytes()}, nil
}

// rawConn is one keep-alive connection with its read buffer.
type rawConn struct {
	addr     string
	conn     net.Conn
	buf      []byte
	r, w     int // unread bytes are buf[r:w]
	lastUsed time.Time
}

func newRawConn(addr string) *rawConn {
	return &rawConn{addr: addr, buf: make([]byte, rawBufferSize)}
}

func (c *rawConn) close() {
	if c.conn != nil {
		_ = c.conn.Close()
		c.conn = nil
	}
	c.r, c.w = 0, 0
}

// rawResult is how one exchange ended: an HTTP status, or an error kind.
type rawResult struct {
	status int
	kind   string
	body   []byte // the response body when asked for and it fit in the buffer
}

// roundTrip writes req and reads one response, giving up at deadline (zero: never).
// On any failure the connection is closed; the next call dials a new one.
func (c *rawConn) roundTrip(req []byte, deadline time.Time, wantBody bool) rawResult {
	now := time.Now()
	if c.conn != nil && now.Sub(c.lastUsed) > rawMaxIdle {
		c.close()
	}
	if c.conn == nil {
		d := net.Dialer{Deadline: deadline}
		conn, err := d.Dial("tcp", c.addr)
		if err != nil {
			if isTimeout(err) {
				return rawResult{kind: kindTimeout}
			}
			return rawResult{kind: kindConnect}
		}
		c.conn = conn
	}
	if !deadline.IsZero() {
		_ = c.conn.SetDeadline(deadline)
	}
	res := c.exchange(req, wantBody)
	c.lastUsed = time.Now()
	if res.kind != "" {
		c.close()
	}
	return res
}

func (c *rawConn) exchange(req []byte, wantBody bool) rawResult {
	if _, err := c.conn.Write(req); err != nil {
		return rawResult{kind: ioKind(err)}
	}
	// Read until the end of the headers.
	var end int
	for {
		if i := bytes.Index(c.buf[c.r:c.w], []byte("\r\n\r\n")); i >= 0 {
			end = c.r + i + 4
			break
		}
		if err := c.fill(); err != nil {
			return rawResult{kind: ioKind(err)}
		}
	}
	status, length, keep, ok := parseHead(c.buf[c.r:end])
	if !ok {
		return rawResult{kind: kindBad}
	}
	c.r = end
	res := rawResult{status: status}
	if wantBody && length <= len(c.buf) {
		for c.w-c.r < length {
			if err := c.fill(); err != nil {
				return rawResult{kind: ioKind(err)}
			}
		}
		res.body = bytes.Clone(c.buf[c.r : c.r+length])
	}
	// Skip the body.
	for length > 0 {
		if c.r == c.w {
			if err := c.fill(); err != nil {
				return rawResult{kind: ioKind(err)}
			}
		}
		n := min(length, c.w-c.r)
		c.r += n
		length -= n
	}
	if !keep {
		c.close()
	}
	return res
}

// fill reads more bytes into the buffer, first moving unread ones to its start (and
// growing it when the unread bytes fill it).
func (c *rawConn) fill() error {
	if c.r > 0 {
		c.w = copy(c.buf, c.buf[c.r:c.w])
		c.r = 0
	}
	if c.w == len(c.buf) {
		c.buf = append(c.buf, make([]byte, len(c.buf))...)
	}
	n, err := c.conn.Read(c.buf[c.w:])
	c.w += n
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// parseHead reads the status and the framing of a response head (status line and
// headers, ending with the blank line). Chunked bodies and bodies delimited by the end
// of the connection are not supported (ok false).
func parseHead(head []byte) (status, length int, keep, ok bool) {
	line, rest, found := bytes.Cut(head, []byte("\r\n"))
	if !found || len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return 0, 0, false, false
	}
	status, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, 0, false, false
	}
	keep = line[7] == '1' // HTTP/1.1 keeps the connection unless told otherwise
	length = -1
	for len(rest) > 0 {
		line, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		name, value, found := bytes.Cut(line, []byte(":"))
		if !found {
			continue
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			n, err := strconv.Atoi(string(value))
			if err != nil || n < 0 {
				return 0, 0, false, false
			}
			length = n
		case bytes.EqualFold(name, []byte("Connection")):
			if bytes.EqualFold(value, []byte("close")) {
				keep = false
			} else if bytes.EqualFold(value, []byte("keep-alive")) {
				keep = true
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			return 0, 0, false, false
		}
	}
	if length < 0 {
		if status == 204 || status == 304 || status < 200 {
			length = 0
		} else {
			return 0, 0, false, false
		}
	}
	return status, length, keep, true
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func ioKind(err error) string {
	if isTimeout(err) {
		return kindTimeout
	}
	return kindClosed
}

// restTargetURL checks a REST target for the raw engine.
func restTargetURL(target string) error {
	u, err := url.Parse(target)
	if err != nil {
		return err
	}
	if u.Scheme != "http" {
		return fmt.Errorf("-raw needs an http:// target, not %q", target)
	}
	return nil
}
