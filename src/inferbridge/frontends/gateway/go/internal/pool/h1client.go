package pool

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// h1Client is the HTTP/1.1 client of forwarded REST requests: a pool of keep-alive
// connections to one upstream, on which the caller's goroutine writes the request and
// reads the response itself. net/http's Transport hands every request to two goroutines
// per connection (its readLoop and writeLoop) and back, which on a loaded machine costs
// more than the rest of the hop; this client costs none of that.
//
// What it keeps of net/http's behaviour: a context that ends (deadline or cancel) closes
// the connection, which the upstream sees; a connection is reused only when its response
// was read to the end and neither side asked to close it; a request on a pooled
// connection that fails before any byte of the response is sent once more on a fresh one
// (the server may have closed the idle connection as the request went out).
type h1Client struct {
	addr             string      // host:port dialled
	host             string      // the Host field sent
	tls              *tls.Config // nil: plain TCP
	dialer           net.Dialer
	handshakeTimeout time.Duration
	idleTimeout      time.Duration // a pooled connection idle longer is closed, not used
	maxIdle          int

	mu     sync.Mutex
	idle   []*h1Conn // LIFO: the most recently used first, so that the others age out
	closed bool
}

// h1Field is one header field to send.
type h1Field struct{ name, value string }

// h1Request is one request to send. Names in header are canonical (as net/http's server
// gives them).
type h1Request struct {
	method string
	target string      // the request-target: escaped path and query
	header http.Header // sent except hop-by-hop fields, Host, Content-Length and those of omit and extra
	omit   []string    // more fields of header not sent
	extra  []h1Field   // fields sent besides header's
	body   []byte
}

// credentialFields are the client's credentials, not sent to an upstream with its own key.
var credentialFields = []string{"Authorization", "X-Api-Key"}

// requestTarget is the request-target forwarding r: its escaped path and query.
func requestTarget(r *http.Request) string {
	path := r.URL.EscapedPath()
	if path == "" {
		path = "/"
	}
	if r.URL.RawQuery != "" || r.URL.ForceQuery {
		return path + "?" + r.URL.RawQuery
	}
	return path
}

// h1ConnectError: no connection could be made (dial or TLS handshake), so the request
// reached nobody.
type h1ConnectError struct{ err error }

func (e *h1ConnectError) Error() string { return "connect: " + e.err.Error() }
func (e *h1ConnectError) Unwrap() error { return e.err }

// h1NoResponseError: the request failed before any byte of a response was read (on a
// pooled connection: maybe one the server had already closed).
type h1NoResponseError struct{ err error }

func (e *h1NoResponseError) Error() string { return "no response: " + e.err.Error() }
func (e *h1NoResponseError) Unwrap() error { return e.err }

var errH1ClientClosed = errors.New("the upstream's client is closed")

// newH1Client is the client of the upstream at rest, an http:// or https:// base URL
// (tlsCfg is used for https:// only).
func newH1Client(rest string, tlsCfg *tls.Config) (*h1Client, error) {
	scheme, host, ok := strings.Cut(rest, "://")
	if !ok || (scheme != "http" && scheme != "https") || host == "" {
		return nil, fmt.Errorf("REST address %q is not an http:// or https:// base URL", rest)
	}
	c := &h1Client{
		host:             host,
		addr:             host,
		dialer:           net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second},
		handshakeTimeout: 5 * time.Second,
		idleTimeout:      90 * time.Second,
		maxIdle:          1024,
	}
	hostname, _, err := net.SplitHostPort(host)
	if err != nil { // no port: the scheme's
		hostname = strings.Trim(host, "[]")
		port := "80"
		if scheme == "https" {
			port = "443"
		}
		c.addr = net.JoinHostPort(hostname, port)
	}
	if scheme == "https" {
		cfg := &tls.Config{}
		if tlsCfg != nil {
			cfg = tlsCfg.Clone()
		}
		if cfg.ServerName == "" {
			cfg.ServerName = hostname
		}
		cfg.NextProtos = []string{"http/1.1"} // this client speaks nothing else
		c.tls = cfg
	}
	return c, nil
}

// do sends req and returns the response, whose Body the caller reads and closes (the
// connection goes back to the pool when it was read to its end). An error is an
// *h1ConnectError when nothing could have reached the upstream.
func (c *h1Client) do(ctx context.Context, req *h1Request) (*http.Response, error) {
	pc, reused, err := c.get(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := pc.roundTrip(ctx, req)
	if err == nil || !reused || ctx.Err() != nil {
		return resp, c.ctxErr(ctx, err)
	}
	var nr *h1NoResponseError
	if !errors.As(err, &nr) {
		return nil, err
	}
	// A stale keep-alive connection: once more on a fresh one. If that cannot be made,
	// the first error stands: the request may have reached the upstream on the first.
	fresh, dialErr := c.dial(ctx)
	if dialErr != nil {
		return nil, c.ctxErr(ctx, err)
	}
	resp, err = fresh.roundTrip(ctx, req)
	return resp, c.ctxErr(ctx, err)
}

// ctxErr is err, or the context's error when that is why it failed.
func (c *h1Client) ctxErr(ctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return err
}

// get is a pooled connection that still looks open (reused = true), or a new one.
func (c *h1Client) get(ctx context.Context) (*h1Conn, bool, error) {
	now := time.Now()
	for {
		c.mu.Lock()
		n := len(c.idle)
		if n == 0 {
			c.mu.Unlock()
			break
		}
		pc := c.idle[n-1]
		c.idle[n-1] = nil
		c.idle = c.idle[:n-1]
		c.mu.Unlock()
		if now.Sub(pc.idleSince) < c.idleTimeout && pc.alive() {
			return pc, true, nil
		}
		pc.close()
	}
	pc, err := c.dial(ctx)
	return pc, false, err
}

func (c *h1Client) dial(ctx context.Context) (*h1Conn, error) {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return nil, &h1ConnectError{errH1ClientClosed}
	}
	nc, err := c.dialer.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return nil, &h1ConnectError{err}
	}
	pc := &h1Conn{client: c}
	if tc, ok := nc.(*net.TCPConn); ok {
		pc.raw, _ = tc.SyscallConn()
	}
	if c.tls != nil {
		tc := tls.Client(nc, c.tls)
		hctx, cancel := context.WithTimeout(ctx, c.handshakeTimeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			nc.Close()
			return nil, &h1ConnectError{fmt.Errorf("TLS handshake with %s: %w", c.addr, err)}
		}
		nc, pc.tls = tc, true
	}
	pc.nc = nc
	pc.br = bufio.NewReaderSize(nc, 8<<10)
	pc.bw = bufio.NewWriterSize(nc, 8<<10)
	pc.tp.R = pc.br
	return pc, nil
}

// put gives back a connection whose response was read to its end.
func (c *h1Client) put(pc *h1Conn) {
	now := time.Now()
	pc.idleSince = now
	var old *h1Conn
	c.mu.Lock()
	if c.closed || len(c.idle) >= c.maxIdle {
		c.mu.Unlock()
		pc.close()
		return
	}
	// The oldest is at the bottom of the stack, where a busy pool never reaches: close
	// it here once it has been idle too long (its server may have closed it already).
	if len(c.idle) > 0 && now.Sub(c.idle[0].idleSince) >= c.idleTimeout {
		old = c.idle[0]
		copy(c.idle, c.idle[1:])
		c.idle[len(c.idle)-1] = nil
		c.idle = c.idle[:len(c.idle)-1]
	}
	c.idle = append(c.idle, pc)
	c.mu.Unlock()
	if old != nil {
		old.close()
	}
}

// closeIdle closes the pooled connections and every one given back later; requests in
// flight finish on theirs.
func (c *h1Client) closeIdle() {
	c.mu.Lock()
	idle := c.idle
	c.idle, c.closed = nil, true
	c.mu.Unlock()
	for _, pc := range idle {
		pc.close()
	}
}

// idleCount is the number of pooled connections.
func (c *h1Client) idleCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.idle)
}
