package h1server

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// A connection's states, for Shutdown: only an idle one may be closed under it.
const (
	stateIdle int32 = iota
	stateActive
	stateClosing
)

// readBufSize bounds the head of a request the server parses itself (a larger one goes
// to Fallback, whose limit is its MaxHeaderBytes).
const (
	readBufSize  = 16 << 10
	writeBufSize = 16 << 10
	// maxDiscard is how much of a body the handler did not read is read past so that
	// the connection carries on (net/http's figure); beyond it the connection closes.
	maxDiscard = 256 << 10
)

// conn is one client connection served by the server itself.
type conn struct {
	srv    *Server
	nc     net.Conn
	src    source
	br     *bufio.Reader
	bw     *bufio.Writer
	state  atomic.Int32
	remote string
	base   *http.Request // carries the connection's context into every request
	ctx    context.Context
	cancel context.CancelFunc
	body   body
	resp   response

	// idleUntil is the read deadline set while waiting for a request (zero: none).
	idleUntil time.Time

	// The watch for the client going away while a request is in flight.
	watchTimer *time.Timer
	watchMu    sync.Mutex
	watching   bool          // a watch read is pending on nc
	watchDone  chan struct{} // closed when that read returned
	watchArmed bool          // the timer is set for the request in flight
}

// source is what br reads: the connection, after a byte a watch read took from it.
type source struct {
	nc      net.Conn
	pending [1]byte
	has     bool
}

func (s *source) Read(p []byte) (int, error) {
	if s.has && len(p) > 0 {
		p[0], s.has = s.pending[0], false
		return 1, nil
	}
	return s.nc.Read(p)
}

func newConn(s *Server, nc net.Conn) *conn {
	c := &conn{srv: s, nc: nc, remote: nc.RemoteAddr().String()}
	c.src.nc = nc
	c.br = bufio.NewReaderSize(&c.src, readBufSize)
	c.bw = bufio.NewWriterSize(nc, writeBufSize)
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.base = (&http.Request{}).WithContext(c.ctx)
	c.body.c = c
	c.resp.c = c
	return c
}

// serve answers requests until the connection closes, fails, or is handed off.
func (c *conn) serve() {
	handedOff := false
	defer func() {
		c.cancel()
		c.srv.forget(c)
		if !handedOff {
			c.nc.Close()
			c.srv.setState(c.nc, http.StateClosed)
		}
	}()
	defer func() {
		if v := recover(); v != nil && v != http.ErrAbortHandler {
			buf := make([]byte, 64<<10)
			buf = buf[:runtime.Stack(buf, false)]
			c.srv.logf("h1server: panic serving %s: %v\n%s", c.remote, v, buf)
		}
	}()
	for {
		if !c.awaitRequest() {
			return
		}
		if !c.state.CompareAndSwap(stateIdle, stateActive) {
			return // Shutdown is closing it
		}
		c.srv.setState(c.nc, http.StateActive)
		head, plain, err := c.readHead()
		if err != nil {
			return
		}
		if !plain {
			handedOff = c.handOff()
			return
		}
		req, err := c.newRequest(head)
		if err != nil { // parsed as plain, yet not a request net/http would take: its turn
			handedOff = c.handOff()
			return
		}
		c.br.Discard(len(head))
		keep := c.serveRequest(req)
		if !keep || c.srv.closing.Load() {
			return
		}
		c.state.Store(stateIdle)
		c.srv.setState(c.nc, http.StateIdle)
		if c.srv.closing.Load() && c.state.CompareAndSwap(stateIdle, stateClosing) {
			return
		}
	}
}

// awaitRequest waits for the first byte of the next request (under IdleTimeout).
func (c *conn) awaitRequest() bool {
	if c.br.Buffered() > 0 {
		return true
	}
	if t := c.srv.IdleTimeout; t > 0 {
		// Re-armed at most once a second: a deadline moved for every request costs a
		// timer update each, and idleness is not measured to the millisecond.
		if now := time.Now(); c.idleUntil.Sub(now) < t-time.Second {
			c.idleUntil = now.Add(t)
			c.nc.SetReadDeadline(c.idleUntil)
		}
	}
	_, err := c.br.Peek(1)
	return err == nil
}

// readHead returns the bytes of the next request's head (up to and including its
// blank line), left in br, and whether the head is plain (parsed by this server). An
// error: the connection ended before a byte of it.
func (c *conn) readHead() (head []byte, plain bool, err error) {
	deadlineSet := false
	defer func() {
		if deadlineSet {
			c.idleUntil = time.Time{}
			c.nc.SetReadDeadline(time.Time{})
		}
	}()
	for {
		buf, _ := c.br.Peek(c.br.Buffered())
		end, bareLF := bytes.Index(buf, crlfcrlf), bytes.Index(buf, lflf)
		if bareLF >= 0 && (end < 0 || bareLF < end) {
			return nil, false, nil // lines ended by LF alone: Fallback's to judge
		}
		if end >= 0 {
			return buf[:end+4], true, nil
		}
		if len(buf) >= readBufSize {
			return nil, false, nil // larger than the lane's buffer: Fallback's
		}
		if !deadlineSet && c.srv.ReadHeaderTimeout > 0 {
			deadlineSet = true
			c.nc.SetReadDeadline(time.Now().Add(c.srv.ReadHeaderTimeout))
		}
		if _, err := c.br.Peek(len(buf) + 1); err != nil {
			if len(buf) == 0 || isDeadline(err) {
				return nil, false, err // nothing, or a head too slow (ReadHeaderTimeout): close
			}
			// A partial head, then EOF or an error: Fallback answers it as it would.
			return nil, false, nil
		}
	}
}

var crlfcrlf, lflf = []byte("\r\n\r\n"), []byte("\n\n")

// handOff gives the connection, with everything read from it, to Fallback.
func (c *conn) handOff() bool {
	buffered, _ := c.br.Peek(c.br.Buffered())
	pending := append([]byte(nil), buffered...)
	if c.idleUntil != (time.Time{}) {
		c.nc.SetReadDeadline(time.Time{}) // Fallback sets its own
	}
	return c.srv.handoff.give(&replayConn{Conn: c.nc, pending: pending})
}

// serveRequest runs the handler on req and finishes its response; it reports whether
// the connection may carry another request.
func (c *conn) serveRequest(req *http.Request) (keep bool) {
	w := &c.resp
	w.reset(req)
	c.body.reset(req.ContentLength)
	if req.ContentLength > int64(c.br.Buffered()) && !c.idleUntil.IsZero() {
		// A body still on its way is read without a deadline, as net/http does (the
		// idle one would cut a long upload).
		c.idleUntil = time.Time{}
		c.nc.SetReadDeadline(time.Time{})
	}
	if req.ContentLength == 0 {
		c.armWatch()
	}
	aborted := true
	defer func() {
		c.disarmWatch()
		if aborted {
			keep = false // a panic: close without finishing the response
		}
	}()
	c.srv.Handler.ServeHTTP(w, req)
	aborted = false
	c.disarmWatch()
	if !w.finish() {
		return false
	}
	if c.body.left > 0 && !c.body.discard() {
		return false
	}
	return !w.closeAfter && !c.watchSawEOF()
}

// armWatch starts the timer after which the connection is watched for the client going
// away (the request's body has been read: the connection carries nothing else now).
func (c *conn) armWatch() {
	if c.watchArmed {
		return
	}
	c.watchArmed = true
	d := c.srv.WatchAfter
	if d <= 0 {
		d = DefaultWatchAfter
	}
	if c.watchTimer == nil {
		c.watchTimer = time.AfterFunc(d, c.watch)
		return
	}
	c.watchTimer.Reset(d)
}

// watch reads the connection while a request is in flight: an EOF or an error is the
// client gone, which ends the connection's context; a byte (a pipelined request) is
// kept for the next read.
func (c *conn) watch() {
	c.watchMu.Lock()
	if !c.watchArmed || c.watching {
		c.watchMu.Unlock()
		return
	}
	c.watching = true
	done := make(chan struct{})
	c.watchDone = done
	c.watchMu.Unlock()

	n, err := c.nc.Read(c.src.pending[:])
	switch {
	case n == 1:
		c.src.has = true
	case isDeadline(err): // stopped by disarmWatch, or the idle deadline
	default:
		c.cancel() // EOF or reset: the client is gone
	}
	close(done)
}

func isDeadline(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// disarmWatch stops the watch of the request in flight, waiting for a pending watch
// read to return.
func (c *conn) disarmWatch() {
	if !c.watchArmed {
		return
	}
	c.watchTimer.Stop()
	c.watchMu.Lock()
	c.watchArmed = false
	watching, done := c.watching, c.watchDone
	c.watching, c.watchDone = false, nil
	c.watchMu.Unlock()
	if !watching {
		return
	}
	c.nc.SetReadDeadline(aLongTimeAgo)
	<-done
	c.nc.SetReadDeadline(time.Time{})
	c.idleUntil = time.Time{}
}

// watchSawEOF: the client went away while its request was in flight.
func (c *conn) watchSawEOF() bool { return c.ctx.Err() != nil }

var aLongTimeAgo = time.Unix(1, 0)

// body is a request body of Content-Length bytes, read from the connection.
type body struct {
	c    *conn
	left int64
	err  error
}

func (b *body) reset(n int64) { b.left, b.err = n, nil }

func (b *body) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.c.br.Read(p)
	b.left -= int64(n)
	if b.left == 0 {
		b.c.armWatch()
		return n, io.EOF
	}
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		b.err = err
		return n, err
	}
	return n, nil
}

// Close leaves what was not read to the server (read past, or the connection closed).
func (b *body) Close() error { return nil }

// discard reads past the rest of the body, when there is little; it reports whether the
// connection can carry on.
func (b *body) discard() bool {
	if b.err != nil || b.left > maxDiscard {
		return false
	}
	n, err := b.c.br.Discard(int(b.left))
	b.left -= int64(n)
	return err == nil && b.left == 0
}
