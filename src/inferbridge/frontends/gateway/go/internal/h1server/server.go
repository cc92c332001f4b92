// Package h1server is the gateway's HTTP/1.1 server for the REST listener: a lean loop
// for plain requests, with net/http behind it for everything else.
//
// net/http's server spends, per request, about as much CPU as the whole rest of a
// forwarded request in the gateway: a fresh Request with its URL and header map, a
// response with its chunk writer, and a goroutine that reads the connection in the
// background while the handler runs (so that a client that goes away is noticed), woken
// and stopped again for every request. This server keeps one reader, writer and
// response per connection, builds each request with a handful of allocations, and
// watches for a client going away only once a request has been in flight for
// WatchAfter (most are answered before).
//
// What it does not parse as a plain request — a chunked or 100-continue body, an
// Upgrade, HTTP/1.0, a percent-encoded path, a head larger than its buffer, anything
// unusual in the head — it does not answer itself: the connection, with every byte
// read from it, goes to Fallback (net/http), which serves it from then on exactly as
// it would have from the start. Handlers therefore see net/http's semantics either way,
// but for one: a request's context ends when its client goes away or its connection
// closes, not when the handler returns (per-request contexts would cost two allocations
// a request; a handler that starts work outliving it gives that work a context of its
// own).
package h1server

import (
	"context"
	"errors"
	"log"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Server serves HTTP/1.1 on the connections of a listener.
type Server struct {
	// Handler answers every request the server parses itself.
	Handler http.Handler
	// Fallback serves the connections handed to it (its Handler should be Handler); its
	// timeouts and limits should be those given here. Serve runs it; Shutdown and Close
	// stop it.
	Fallback *http.Server
	// IdleTimeout closes a keep-alive connection idle this long (0: never).
	IdleTimeout time.Duration
	// ReadHeaderTimeout bounds reading a request's head once its first byte arrived
	// (0: no bound).
	ReadHeaderTimeout time.Duration
	// WatchAfter is how long a request is in flight before the connection is watched
	// for the client going away (its context then ends); 0: DefaultWatchAfter.
	WatchAfter time.Duration
	// ConnState, when set, is told the state changes of the connections this server
	// serves itself; a connection handed to Fallback is then Fallback's to report
	// (Serve makes Fallback's ConnState skip its StateNew, so that it counts once).
	ConnState func(net.Conn, http.ConnState)
	// ErrorLog receives handler panics (nil: the log package's standard logger).
	ErrorLog *log.Logger

	mu      sync.Mutex
	lis     net.Listener
	handoff *handoffListener
	conns   map[*conn]struct{}
	closing atomic.Bool
}

// DefaultWatchAfter is WatchAfter's default: long enough that a request answered at
// once costs no watch, short enough that an upstream hears of a client gone soon.
const DefaultWatchAfter = 5 * time.Millisecond

// Serve accepts connections on l until Shutdown or Close (then it returns
// http.ErrServerClosed) or until l fails.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		return http.ErrServerClosed
	}
	s.lis = l
	s.handoff = newHandoffListener(l.Addr())
	s.conns = map[*conn]struct{}{}
	handoff := s.handoff
	if report := s.Fallback.ConnState; report != nil {
		s.Fallback.ConnState = func(nc net.Conn, state http.ConnState) {
			if _, handedOff := nc.(*replayConn); handedOff && state == http.StateNew {
				return // reported new when this server accepted it
			}
			report(nc, state)
		}
	}
	s.mu.Unlock()
	// Fallback's Serve ends when Shutdown or Close closes handoff; its error says nothing
	// the accept loop below does not.
	go s.Fallback.Serve(handoff)

	var backoff time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if s.closing.Load() {
				return http.ErrServerClosed
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() { // as net/http: EMFILE and the like
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		c := newConn(s, nc)
		s.mu.Lock()
		if s.closing.Load() {
			s.mu.Unlock()
			nc.Close()
			return http.ErrServerClosed
		}
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.setState(nc, http.StateNew)
		go c.serve()
	}
}

// Shutdown stops accepting, closes idle connections and waits for the others to finish
// their request (then they close), or for ctx to end; Fallback is shut down alike.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopAccepting()
	fallbackDone := make(chan error, 1)
	go func() { fallbackDone <- s.Fallback.Shutdown(ctx) }()
	ticker := time.NewTicker(10 * time.Millisecond)
	defer ticker.Stop()
	for {
		if s.closeIdle() {
			break
		}
		select {
		case <-ctx.Done():
			<-fallbackDone
			return ctx.Err()
		case <-ticker.C:
		}
	}
	return <-fallbackDone
}

// Close closes the listener and every connection at once, Fallback's too.
func (s *Server) Close() error {
	s.stopAccepting()
	s.mu.Lock()
	for c := range s.conns {
		c.nc.Close()
	}
	s.mu.Unlock()
	return s.Fallback.Close()
}

func (s *Server) stopAccepting() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Swap(true) {
		return
	}
	if s.lis != nil {
		s.lis.Close()
		s.handoff.Close()
	}
}

// closeIdle closes the connections idle between requests; it reports whether none is
// left.
func (s *Server) closeIdle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.state.CompareAndSwap(stateIdle, stateClosing) {
			c.nc.Close()
		}
	}
	return len(s.conns) == 0
}

func (s *Server) forget(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

func (s *Server) setState(nc net.Conn, state http.ConnState) {
	if s.ConnState != nil {
		s.ConnState(nc, state)
	}
}

func (s *Server) logf(format string, args ...any) {
	if s.ErrorLog != nil {
		s.ErrorLog.Printf(format, args...)
		return
	}
	log.Printf(format, args...)
}

// handoffListener is Fallback's listener: it accepts the connections handed to it.
type handoffListener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newHandoffListener(addr net.Addr) *handoffListener {
	return &handoffListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

var errListenerClosed = errors.New("h1server: listener closed")

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, errListenerClosed
	}
}

// give hands nc to Fallback; false when it no longer accepts (nc is then closed).
func (l *handoffListener) give(nc net.Conn) bool {
	select {
	case l.conns <- nc:
		return true
	case <-l.done:
		nc.Close()
		return false
	}
}

func (l *handoffListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *handoffListener) Addr() net.Addr { return l.addr }

// replayConn is a connection handed off: the bytes already read from it come first.
type replayConn struct {
	net.Conn
	pending []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// CloseWrite half-closes the connection, as net/http does after an error reply.
func (c *replayConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
