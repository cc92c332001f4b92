package local

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"

	"github.com/inferbridge/inferbridge/gateway/internal/auth"
	"github.com/inferbridge/inferbridge/gateway/internal/frontend"
)

type config struct {
	maxRecvBytes      int
	maxConcurrentRPCs int // 0 = unlimited
	maxHTTPInflight   int // 0 = unlimited
	// queueFullCode answers a ModelInfer over its model's LIMITS bound; OK (unset)
	// means RESOURCE_EXHAUSTED. UNAVAILABLE is Triton's, and retried by KServe's client.
	queueFullCode codes.Code
	auth          *auth.Authority // nil or not Active: no checks
	defaultModel  string          // of /predict and AIService.Predict, for auth
	tls           *tls.Config     // nil: plain TCP
	accessFrames  bool            // ACCESS frames for auth's refusals
}

// call is the per-call state, pooled so that the hot path does not allocate it.
type call struct {
	reply  chan reply   // capacity 1: the reader never blocks on it
	http   chan *[]byte // REPLY-HTTP body (nil when the backend failed); capacity 1
	isHTTP bool         // an HTTP request, answered by REPLY-HTTP instead of REPLY
	stream *httpStream  // set by the reader with a REPLY-HTTP-START (httpstream.go)
	req    frontend.RawMsg
}

var callPool = sync.Pool{New: func() any {
	return &call{reply: make(chan reply, 1), http: make(chan *[]byte, 1)}
}}

type gateway struct {
	backend net.Conn
	br      *bufio.Reader
	fe      *frontend.Frontend // the REST and gRPC servers; g is their Backend
	metrics *metrics

	out  chan frame    // to the writer goroutine
	dead chan struct{} // closed when the backend has failed

	mu    sync.Mutex
	calls map[uint64]*call // forwarded calls awaiting their REPLY

	streams     streams              // forwarded streaming calls (stream.go)
	httpStreams registry[httpStream] // streamed REST replies under way (httpstream.go)

	nextID      atomic.Uint64
	inflight    atomic.Int64
	maxInflight int64
	busyErr     error

	maxRecvBytes    int
	models          atomic.Pointer[map[string]*modelState] // per-model admission (LIMITS)
	queueFullCode   codes.Code                             // gRPC code of a LIMITS refusal
	httpInflight    atomic.Int64
	maxHTTPInflight int64
	httpBusyBody    []byte

	authActive   bool // the front end checks requests (cfg.auth is Active)
	defaultModel string
	accessFrames bool

	failOnce     sync.Once
	shutdownOnce sync.Once
	finished     chan error // nil after a SHUTDOWN drain, the failure otherwise
}

// newGateway reads the DESCRIPTORS frame from backend and builds the gRPC server.
// Nothing is served until run.
func newGateway(backend net.Conn, cfg config) (*gateway, error) {
	g := &gateway{
		backend:     backend,
		br:          bufio.NewReaderSize(backend, 64<<10),
		metrics:     newMetrics(),
		out:         make(chan frame, 1024),
		dead:        make(chan struct{}),
		calls:       make(map[uint64]*call),
		maxInflight: int64(cfg.maxConcurrentRPCs),
		busyErr: status.Errorf(codes.ResourceExhausted,
			"inferbridge: too many concurrent RPCs (limit %d); retry later", cfg.maxConcurrentRPCs),
		finished: make(chan error, 2),

		maxRecvBytes:    cfg.maxRecvBytes,
		queueFullCode:   cfg.queueFullCode,
		maxHTTPInflight: int64(cfg.maxHTTPInflight),
		httpBusyBody: frontend.ErrorBody(fmt.Sprintf(
			"server is overloaded: %d requests in flight; retry later", cfg.maxHTTPInflight)),
		defaultModel: cfg.defaultModel,
		accessFrames: cfg.accessFrames,
		authActive:   cfg.auth.Active(),
	}
	g.models.Store(&map[string]*modelState{})
	if g.queueFullCode == codes.OK {
		g.queueFullCode = codes.ResourceExhausted
	}

	var hdr [frameHeader]byte
	if _, err := io.ReadFull(g.br, hdr[:]); err != nil {
		return nil, fmt.Errorf("backend: reading the DESCRIPTORS frame: %w", err)
	}
	n, kind, _, err := parseHeader(hdr[:])
	if err != nil {
		return nil, err
	}
	if kind != kindDescriptors {
		return nil, fmt.Errorf("backend: first frame is kind %d, want DESCRIPTORS (%d)", kind, kindDescriptors)
	}
	set := make([]byte, n)
	if _, err := io.ReadFull(g.br, set); err != nil {
		return nil, fmt.Errorf("backend: reading the DESCRIPTORS frame: %w", err)
	}

	maxStreams := uint32(1000)
	if m := uint32(cfg.maxConcurrentRPCs); m > maxStreams {
		maxStreams = m
	}
	g.fe = frontend.New(frontend.Config{
		MaxRecvBytes: cfg.maxRecvBytes,
		// The RPC limit is ours (answered at once with RESOURCE_EXHAUSTED); HTTP/2 must
		// not throttle clients below it.
		MaxConcurrentStreams: maxStreams,
		TLS:                  cfg.tls,
		Auth:                 cfg.auth,
		DefaultModel:         cfg.defaultModel,
		Unary:                g.observeUnary,
		Stream:               g.observeStream,
		ConnState:            g.httpConnState,
		Lane:                 true,
	}, g, g)
	srv := g.fe.GRPCServer()
	forwarded, err := registerReflection(srv, set)
	if err != nil {
		return nil, err
	}
	var served []string
	for service, info := range srv.GetServiceInfo() {
		for _, m := range info.Methods {
			served = append(served, "/"+service+"/"+m.Name)
		}
	}
	g.metrics.setGRPCMethods(forwarded, served)
	if g.streams.methods, err = streamingMethods(set); err != nil {
		return nil, err
	}
	return g, nil
}

// run serves lis (gRPC) and httpLis (HTTP; may be nil) until a SHUTDOWN frame has been
// handled (nil) or the backend or a listener fails (the error).
func (g *gateway) run(lis, httpLis net.Listener) error {
	lis = countedListener{Listener: lis, m: &g.metrics.proto[protoGRPC]}
	go g.writeLoop()
	go g.readLoop()
	served := g.fe.Serve(lis, httpLis)
	select {
	case err := <-g.finished:
		return err
	case err := <-served:
		g.fe.Stop()
		return err
	}
}

// fail stops everything at once: the backend is gone, so no call can be answered.
func (g *gateway) fail(err error) {
	g.failOnce.Do(func() {
		close(g.dead)
		g.fe.Stop()
		g.finished <- err
	})
}

const modelInferMethod = "/inference.GRPCInferenceService/ModelInfer"

// modelState finds the admission state of the model a ModelInferRequest names.
func (g *gateway) modelState(body mem.BufferSlice) *modelState {
	models := *g.models.Load()
	if len(models) == 0 {
		return nil
	}
	if name, ok := frontend.BufferModel(body); ok {
		return models[string(name)]
	}
	return nil
}

// ServeGRPC is the handler of every method that is not registered (health and
// reflection are): it forwards the one request message and waits for the REPLY.
func (g *gateway) ServeGRPC(_ any, ss grpc.ServerStream) (err error) {
	if g.maxInflight > 0 {
		if g.inflight.Add(1) > g.maxInflight {
			g.inflight.Add(-1)
			g.metrics.reject(protoGRPC, nil, reasonConcurrencyLimit)
			return g.busyErr
		}
		defer g.inflight.Add(-1)
	}
	method, _ := grpc.MethodFromServerStream(ss)
	if g.streams.methods[method] {
		return g.forwardStream(ss, method)
	}
	ctx := ss.Context()

	c := callPool.Get().(*call)
	if err = ss.RecvMsg(&c.req); err != nil {
		callPool.Put(c)
		if err == io.EOF {
			return status.Error(codes.InvalidArgument, "inferbridge: the call carried no request message; a unary call sends exactly one")
		}
		if status.Code(err) == codes.ResourceExhausted { // over --max-recv-bytes
			g.metrics.reject(protoGRPC, nil, reasonTooLarge)
		}
		return err
	}
	body := c.req.Data
	c.req.Data = nil
	g.metrics.proto[protoGRPC].reqBytes.Add(float64(body.Len()))
	var principal string
	if g.authActive {
		if principal, err = g.checkCall(ctx, method, body); err != nil {
			body.Free()
			callPool.Put(c)
			return err
		}
	}
	meta, err := callMetadata(ctx, principal)
	if err != nil {
		body.Free()
		callPool.Put(c)
		return err
	}

	timeoutUS := int64(-1)
	if deadline, ok := ctx.Deadline(); ok {
		if timeoutUS = int64(time.Until(deadline) / time.Microsecond); timeoutUS <= 0 {
			body.Free()
			callPool.Put(c)
			return status.Error(codes.DeadlineExceeded, "inferbridge: deadline exceeded before the call was forwarded")
		}
	}
	answerBy, stopTimer := answerBefore(ctx)
	defer stopTimer()

	// Admission, as for REST: a model at its LIMITS bound is refused here, unread by
	// Python; a call given up on frees its slot early (admission says why).
	var held admission
	if method == modelInferMethod {
		if st := g.modelState(body); st != nil {
			if lim := st.admit(); lim != nil {
				g.metrics.reject(protoGRPC, st, reasonQueueFull)
				body.Free()
				callPool.Put(c)
				return lim.grpcErr
			}
			held.st = st
			defer held.release()
		}
	}

	// Register before sending, so that an immediate REPLY finds the call.
	id := g.nextID.Add(1)
	g.mu.Lock()
	g.calls[id] = c
	g.mu.Unlock()
	select {
	case g.out <- frame{kind: kindCall, id: id, method: method, timeoutUS: timeoutUS, meta: meta, body: body}:
	case <-g.dead:
		body.Free()
		g.forget(id, c)
		return errBackendGone
	}

	select {
	case r := <-c.reply:
		callPool.Put(c)
		if r.code != codes.OK {
			return status.Error(r.code, r.msg)
		}
		var resp frontend.RawMsg
		if r.data != nil {
			g.metrics.proto[protoGRPC].respBytes.Add(float64(r.data.Len()))
			resp.Data = mem.BufferSlice{r.data} // grpc-go frees it once sent
		}
		return ss.SendMsg(&resp)
	case <-answerBy:
		held.release()
		g.giveUp(id, c)
		return errDeadline
	case <-ctx.Done():
		held.release()
		g.giveUp(id, c)
		return status.FromContextError(ctx.Err()).Err()
	}
}

// answerBefore returns a channel that fires frontend.DeadlineMargin before ctx's deadline (nil,
// never firing, without a deadline) and the function that releases its timer.
func answerBefore(ctx context.Context) (<-chan time.Time, func() bool) {
	deadline, ok := ctx.Deadline()
	if !ok {
		return nil, func() bool { return false }
	}
	timer := time.NewTimer(time.Until(deadline) - frontend.DeadlineMargin)
	return timer.C, timer.Stop
}

var errDeadline = status.Error(codes.DeadlineExceeded, "inferbridge: deadline exceeded")

// giveUp stops waiting for a call's REPLY: the backend is told to drop the call
// (when its REPLY was still pending) and the pooled call is returned.
func (g *gateway) giveUp(id uint64, c *call) {
	if g.forget(id, c) {
		select {
		case g.out <- frame{kind: kindCancel, id: id}:
		case <-g.dead:
		}
	}
	callPool.Put(c)
}

var errBackendGone = status.Error(codes.Unavailable, "inferbridge: the backend is gone")

// forget unregisters a call that will not wait for its REPLY any more and reports
// whether the REPLY was still pending. When the reader had already claimed it, the
// REPLY is drained from the channel so that the pooled call can be reused.
func (g *gateway) forget(id uint64, c *call) (pending bool) {
	g.mu.Lock()
	_, pending = g.calls[id]
	delete(g.calls, id)
	g.mu.Unlock()
	if !pending {
		if c.isHTTP {
			if bp := <-c.http; bp != nil {
				putBuf(bp)
			}
		} else if r := <-c.reply; r.data != nil {
			r.data.Free()
		}
	}
	return pending
}

// claim removes and returns the call waiting for id, or nil. A reply of the wrong kind
// (REPLY for an HTTP request, REPLY-HTTP for a gRPC call) claims nothing.
func (g *gateway) claim(id uint64, isHTTP bool) *call {
	g.mu.Lock()
	c := g.calls[id]
	if c != nil && c.isHTTP == isHTTP {
		delete(g.calls, id)
	} else {
		c = nil
	}
	g.mu.Unlock()
	return c
}

// drain handles SHUTDOWN. The reader keeps running meanwhile, so that calls in flight
// still receive their REPLYs.
func (g *gateway) drain(grace time.Duration) {
	g.fe.Drain(grace)
	g.finished <- nil
}
