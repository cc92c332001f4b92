// Package frontend terminates the protocols for both backends of the gateway: it owns
// the REST (HTTP/1.1) and gRPC servers with their settings, TLS and graceful shutdown,
// the health service, the authority's checks (REST before the body is read, the
// front end's own gRPC methods in an interceptor, forwarded calls through CheckGRPC),
// the one parser of REST paths (ParsePath), the REST error bodies and the raw gRPC
// codec. What a request is answered with is the Backend's: package local (one Python
// server over a socket pair) and package pool (many upstream OIP servers).
package frontend

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/inferbridge/inferbridge/gateway/internal/auth"
	"github.com/inferbridge/inferbridge/gateway/internal/h1server"
)

// Backend answers what the front end terminates.
type Backend interface {
	// ServeREST answers a REST request that the front end has routed and authorized
	// (its body unread). It returns the status and the number of body bytes written:
	// StatusClientGone when nothing was written because the client is gone, a status
	// with Aborted or'ed in when the reply was cut short; the front end then closes
	// the connection without ending the reply.
	ServeREST(w http.ResponseWriter, r *http.Request, req Request) (status, n int)
	// ServeGRPC answers a call of every method not registered on the front end's
	// server (grpc-go's unknown-service handler); the backend checks it with
	// CheckGRPC.
	ServeGRPC(srv any, ss grpc.ServerStream) error
}

// Request is what the front end knows of a REST request when the backend gets it.
type Request struct {
	Start     time.Time // its arrival
	Path      Path      // its parsed path
	Principal string    // who is calling ("" without an authority)
}

// Observer records what the front end does itself, in the backend's metrics.
type Observer interface {
	// RESTStarted and RESTDone bracket every REST request, refused ones included.
	RESTStarted()
	RESTDone(route Route, status, n int, start time.Time)
	// Refused records a request the authority refused.
	Refused(Refusal)
}

// Config is the front end's configuration.
type Config struct {
	MaxRecvBytes int // largest gRPC request message (a REST body's limit is the backend's)
	// MaxConcurrentStreams is HTTP/2's stream limit per gRPC connection: it must not
	// throttle clients below the backend's own limits, which answer at once.
	MaxConcurrentStreams uint32
	TLS                  *tls.Config // nil: plain TCP; else both listeners speak TLS only
	// Auth checks every request (nil, or not Active: no checks, and no cost).
	Auth *auth.Authority
	// DefaultModel is the model of POST /predict and AIService.Predict, for Auth.
	DefaultModel string
	// ClassifyHTTP, when set, classifies the backend's own REST paths for Auth (ok
	// false: auth.ClassifyHTTP's classification).
	ClassifyHTTP func(r *http.Request, p Path) (auth.Action, bool)
	// Unary and Stream are the backend's interceptors (its metrics), run around the
	// front end's check of its own methods.
	Unary  grpc.UnaryServerInterceptor
	Stream grpc.StreamServerInterceptor
	// ConnState, when set, is told every REST connection's state changes.
	ConnState func(net.Conn, http.ConnState)
	// Lane serves plain REST requests with package h1server's lean loop, handing every
	// other connection to net/http (plain TCP only: with TLS, net/http serves all).
	Lane bool
}

// Frontend is the REST and gRPC termination of one backend.
type Frontend struct {
	cfg     Config
	backend Backend
	obs     Observer
	auth    *auth.Authority // nil unless it is Active
	grpc    *grpc.Server
	health  *health.Server
	http    *http.Server
	lane    *h1server.Server // nil: net/http serves every REST connection
	own     map[string]bool  // methods registered on grpc (set by Serve, read-only then)
}

// StreamWindow and ConnWindow are the HTTP/2 flow-control windows of the gateway's gRPC
// connections, both ways (its server, and the pool's connections to upstreams). Static
// windows turn grpc-go's BDP estimation off: it sent a PING with nearly every message
// received and read its ack, two more syscalls a call (A/B at 1 call in flight: ~15% less
// CPU a call, p50 0.58 vs 0.61 ms). Messages larger than a window still flow, by
// WINDOW_UPDATEs; 4 MiB a stream is a loopback or LAN link's bandwidth-delay product many
// times over (BDP estimation grows to 16 MiB at most), and the connection's window lets four
// such streams run at full window at once.
const (
	StreamWindow = 4 << 20
	ConnWindow   = 16 << 20
)

// streamWorkers is the size of the gRPC server's goroutine pool: enough for the
// concurrency a few cores serve (measured: 2 workers on 2 cores saved nothing at 16 calls
// in flight, 16 or 64 saved a tenth of the CPU per call); idle, each costs a stack.
func streamWorkers() uint32 {
	return uint32(max(64, 8*runtime.GOMAXPROCS(0)))
}

// New builds the servers of backend; the health of "" starts NOT_SERVING. A backend
// may register services of its own on GRPCServer before Serve.
func New(c Config, backend Backend, obs Observer) *Frontend {
	f := &Frontend{cfg: c, backend: backend, obs: obs, health: health.NewServer()}
	if c.Auth.Active() {
		f.auth = c.Auth
	}
	opts := []grpc.ServerOption{
		grpc.ForceServerCodecV2(Codec{}),
		grpc.UnknownServiceHandler(backend.ServeGRPC),
		grpc.MaxRecvMsgSize(c.MaxRecvBytes),
		grpc.MaxSendMsgSize(1<<31 - 1),
		grpc.MaxConcurrentStreams(c.MaxConcurrentStreams),
		// Calls run on a pool of goroutines that outlive them instead of one new
		// goroutine each, whose stack then grows again on every call (morestack and
		// copystack were a tenth of the gateway's CPU under gRPC load). A call that finds
		// every worker busy still gets a goroutine of its own.
		grpc.NumStreamWorkers(streamWorkers()),
		grpc.InitialWindowSize(StreamWindow),
		grpc.InitialConnWindowSize(ConnWindow),
	}
	if c.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(c.TLS)))
	}
	var unary []grpc.UnaryServerInterceptor
	var stream []grpc.StreamServerInterceptor
	if c.Unary != nil {
		unary = append(unary, c.Unary)
	}
	if c.Stream != nil {
		stream = append(stream, c.Stream)
	}
	if f.auth != nil {
		unary = append(unary, f.ownUnary)
		stream = append(stream, f.ownStream)
	}
	if len(unary) > 0 {
		opts = append(opts, grpc.ChainUnaryInterceptor(unary...))
	}
	if len(stream) > 0 {
		opts = append(opts, grpc.ChainStreamInterceptor(stream...))
	}
	f.grpc = grpc.NewServer(opts...)
	f.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(f.grpc, f.health)
	f.http = &http.Server{
		Handler:           f,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       5 * time.Minute,
		MaxHeaderBytes:    1 << 20,
		ConnState:         c.ConnState,
	}
	if c.Lane && c.TLS == nil {
		f.lane = &h1server.Server{Handler: f, Fallback: f.http, IdleTimeout: f.http.IdleTimeout,
			ReadHeaderTimeout: f.http.ReadHeaderTimeout, ConnState: c.ConnState}
	}
	return f
}

// GRPCServer is the gRPC server, for a backend's own services (before Serve).
func (f *Frontend) GRPCServer() *grpc.Server { return f.grpc }

// Health is the gRPC health service: the backend sets the statuses.
func (f *Frontend) Health() *health.Server { return f.health }

// ServeHTTP is the REST handler: it parses the path, checks the authority before the
// body is read, hands the request to the backend and records it.
func (f *Frontend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	f.obs.RESTStarted()
	req := Request{Start: start, Path: ParsePath(r.URL.Path)}
	var status, n int
	ok := true
	if f.auth != nil {
		req.Principal, status, n, ok = f.checkHTTP(w, r, req.Path, start)
	}
	if ok {
		status, n = f.backend.ServeREST(w, r, req)
	}
	abort := status == StatusClientGone || status&Aborted != 0
	status &^= Aborted
	f.obs.RESTDone(req.Path.Route, status, n, start)
	if abort {
		// Nothing was written, or a streamed body is cut short: returning would make
		// net/http send "200 OK" with an empty body, or end the chunked body, which a
		// client takes for success. Close the connection without more instead
		// (net/http does not log this panic).
		panic(http.ErrAbortHandler)
	}
}

// Serve serves grpcLis and httpLis (either may be nil) in goroutines of their own and
// returns the channel on which a listener's failure arrives; a server stopped by
// Drain or Stop sends nothing.
func (f *Frontend) Serve(grpcLis, httpLis net.Listener) <-chan error {
	f.own = map[string]bool{}
	for service, info := range f.grpc.GetServiceInfo() {
		for _, m := range info.Methods {
			f.own["/"+service+"/"+m.Name] = true
		}
	}
	failed := make(chan error, 2)
	if grpcLis != nil {
		go func() {
			if err := f.grpc.Serve(grpcLis); err != nil { // nil only after Stop or GracefulStop
				failed <- fmt.Errorf("serve: %w", err)
			}
		}()
	}
	if httpLis != nil {
		if f.cfg.TLS != nil {
			// REST stays HTTP/1.1 (as without TLS); gRPC's listener offers h2.
			restTLS := f.cfg.TLS.Clone()
			restTLS.NextProtos = []string{"http/1.1"}
			httpLis = tls.NewListener(httpLis, restTLS)
		}
		serve := f.http.Serve
		if f.lane != nil {
			serve = f.lane.Serve
		}
		go func() {
			if err := serve(httpLis); !errors.Is(err, http.ErrServerClosed) {
				failed <- fmt.Errorf("serve HTTP: %w", err)
			}
		}()
	}
	return failed
}

// Drain stops both servers gracefully: every health status becomes NOT_SERVING, calls
// and requests in flight still get their answers, idle REST connections are closed;
// what is still running after grace is stopped hard.
func (f *Frontend) Drain(grace time.Duration) {
	f.health.Shutdown()
	stopped := make(chan struct{})
	go func() {
		f.grpc.GracefulStop()
		close(stopped)
	}()
	httpStopped := make(chan struct{})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), grace)
		defer cancel()
		if f.lane != nil {
			if err := f.lane.Shutdown(ctx); err != nil {
				f.lane.Close()
			}
		} else if err := f.http.Shutdown(ctx); err != nil {
			f.http.Close()
		}
		close(httpStopped)
	}()
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-stopped:
	case <-timer.C:
		f.grpc.Stop()
		<-stopped
	}
	<-httpStopped
}

// Stop stops both servers at once, closing every connection.
func (f *Frontend) Stop() {
	f.grpc.Stop()
	if f.lane != nil {
		f.lane.Close()
		return
	}
	f.http.Close()
}
