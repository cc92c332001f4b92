package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
)

// Frame kinds of the backend protocol (see the package comment).
const (
	kindCall        = 1
	kindCancel      = 2
	kindReply       = 3
	kindHealth      = 4
	kindShutdown    = 5
	kindDescriptors = 6
	kindHTTP        = 7
	kindReplyHTTP   = 8
	kindLimits      = 9
)

// frameHeader is u32 length | u8 kind | u64 id; the length counts kind and id.
const frameHeader = 4 + 1 + 8

type config struct {
	maxRecvBytes      int
	maxConcurrentRPCs int // 0 = unlimited
	maxHTTPInflight   int // 0 = unlimited
}

// frame is one outgoing frame (CALL or CANCEL), queued by value to the writer.
type frame struct {
	kind      byte
	id        uint64
	method    string          // CALL only
	timeoutUS int64           // CALL only
	body      mem.BufferSlice // CALL only; the writer frees it once written
	raw       *[]byte         // HTTP only: the whole body; the writer pools it once written
}

// reply is a REPLY handed by the reader to the waiting call.
type reply struct {
	code codes.Code
	data mem.Buffer // response message when code is OK (nil when empty)
	msg  string     // error message otherwise
}

// call is the per-call state, pooled so that the hot path does not allocate it.
type call struct {
	reply  chan reply   // capacity 1: the reader never blocks on it
	http   chan *[]byte // REPLY-HTTP body (nil when the backend failed); capacity 1
	isHTTP bool         // an HTTP request, answered by REPLY-HTTP instead of REPLY
	req    rawMsg
}

var callPool = sync.Pool{New: func() any {
	return &call{reply: make(chan reply, 1), http: make(chan *[]byte, 1)}
}}

type gateway struct {
	backend net.Conn
	br      *bufio.Reader
	srv     *grpc.Server
	health  *health.Server
	httpSrv *http.Server // nil without an HTTP listener

	out  chan frame    // to the writer goroutine
	dead chan struct{} // closed when the backend has failed

	mu    sync.Mutex
	calls map[uint64]*call // forwarded calls awaiting their REPLY

	nextID      atomic.Uint64
	inflight    atomic.Int64
	maxInflight int64
	busyErr     error

	maxRecvBytes    int
	models          atomic.Pointer[map[string]*modelState] // per-model HTTP admission
	httpInflight    atomic.Int64
	maxHTTPInflight int64
	httpBusyBody    []byte

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
		health:      health.NewServer(),
		out:         make(chan frame, 1024),
		dead:        make(chan struct{}),
		calls:       make(map[uint64]*call),
		maxInflight: int64(cfg.maxConcurrentRPCs),
		busyErr: status.Errorf(codes.ResourceExhausted,
			"inferbridge: too many concurrent RPCs (limit %d); retry later", cfg.maxConcurrentRPCs),
		finished: make(chan error, 2),

		maxRecvBytes:    cfg.maxRecvBytes,
		maxHTTPInflight: int64(cfg.maxHTTPInflight),
		httpBusyBody: errorBody(fmt.Sprintf(
			"server is overloaded: %d requests in flight; retry later", cfg.maxHTTPInflight)),
	}
	g.models.Store(&map[string]*modelState{})

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
	g.srv = grpc.NewServer(
		grpc.ForceServerCodecV2(newCodec()),
		grpc.UnknownServiceHandler(g.forward),
		grpc.MaxRecvMsgSize(cfg.maxRecvBytes),
		grpc.MaxSendMsgSize(1<<31-1),
		// The RPC limit is ours (answered at once with RESOURCE_EXHAUSTED); HTTP/2 must
		// not throttle clients below it.
		grpc.MaxConcurrentStreams(maxStreams),
	)
	g.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(g.srv, g.health)
	if err := registerReflection(g.srv, set); err != nil {
		return nil, err
	}
	return g, nil
}

// run serves lis (gRPC) and httpLis (HTTP; may be nil) until a SHUTDOWN frame has been
// handled (nil) or the backend or a listener fails (the error).
func (g *gateway) run(lis, httpLis net.Listener) error {
	if httpLis != nil {
		g.httpSrv = newHTTPServer(g)
	}
	go g.writeLoop()
	go g.readLoop()
	served := make(chan error, 2)
	go func() {
		if err := g.srv.Serve(lis); err != nil { // nil only after Stop or GracefulStop
			served <- fmt.Errorf("serve: %w", err)
		}
	}()
	if httpLis != nil {
		go func() {
			if err := g.serveHTTPListener(httpLis); err != nil {
				served <- fmt.Errorf("serve HTTP: %w", err)
			}
		}()
	}
	select {
	case err := <-g.finished:
		return err
	case err := <-served:
		g.srv.Stop()
		if g.httpSrv != nil {
			g.httpSrv.Close()
		}
		return err
	}
}

// fail stops everything at once: the backend is gone, so no call can be answered.
func (g *gateway) fail(err error) {
	g.failOnce.Do(func() {
		close(g.dead)
		g.srv.Stop()
		if g.httpSrv != nil {
			g.httpSrv.Close()
		}
		g.finished <- err
	})
}

const modelInferMethod = "/inference.GRPCInferenceService/ModelInfer"

// modelState finds the admission state of the model a ModelInferRequest names: its field
// 1, model_name, which every client writes first (the lookup scans the fields if not).
func (g *gateway) modelState(body mem.BufferSlice) *modelState {
	models := *g.models.Load()
	if len(models) == 0 {
		return nil
	}
	var msg []byte
	if len(body) == 1 {
		msg = body[0].ReadOnlyData()
	} else {
		msg = body.Materialize()
	}
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return nil
		}
		msg = msg[n:]
		if num == 1 && typ == protowire.BytesType {
			name, m := protowire.ConsumeBytes(msg)
			if m < 0 {
				return nil
			}
			return models[string(name)]
		}
		m := protowire.ConsumeFieldValue(num, typ, msg)
		if m < 0 {
			return nil
		}
		msg = msg[m:]
	}
	return nil
}

// forward is the handler of every method that is not registered (health and
// reflection are): it forwards the one request message and waits for the REPLY.
func (g *gateway) forward(_ any, ss grpc.ServerStream) error {
	if g.maxInflight > 0 {
		if g.inflight.Add(1) > g.maxInflight {
			g.inflight.Add(-1)
			return g.busyErr
		}
		defer g.inflight.Add(-1)
	}
	method, _ := grpc.MethodFromServerStream(ss)
	ctx := ss.Context()

	c := callPool.Get().(*call)
	if err := ss.RecvMsg(&c.req); err != nil {
		callPool.Put(c)
		if err == io.EOF {
			return status.Error(codes.InvalidArgument, "inferbridge: the call carried no request message; a unary call sends exactly one")
		}
		return err
	}
	body := c.req.data
	c.req.data = nil

	timeoutUS := int64(-1)
	if deadline, ok := ctx.Deadline(); ok {
		if timeoutUS = int64(time.Until(deadline) / time.Microsecond); timeoutUS <= 0 {
			body.Free()
			callPool.Put(c)
			return status.Error(codes.DeadlineExceeded, "inferbridge: deadline exceeded before the call was forwarded")
		}
	}

	// Admission, as for REST: a model at its LIMITS bound is refused here, unread by Python.
	if method == modelInferMethod {
		if st := g.modelState(body); st != nil {
			if lim := st.limit.Load(); lim != nil {
				if st.count.Add(1) > lim.n {
					st.count.Add(-1)
					body.Free()
					callPool.Put(c)
					return status.Error(codes.ResourceExhausted, lim.message)
				}
				defer st.count.Add(-1)
			}
		}
	}

	// Register before sending, so that an immediate REPLY finds the call.
	id := g.nextID.Add(1)
	g.mu.Lock()
	g.calls[id] = c
	g.mu.Unlock()
	select {
	case g.out <- frame{kind: kindCall, id: id, method: method, timeoutUS: timeoutUS, body: body}:
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
		var resp rawMsg
		if r.data != nil {
			resp.data = mem.BufferSlice{r.data} // grpc-go frees it once sent
		}
		return ss.SendMsg(&resp)
	case <-ctx.Done():
		if g.forget(id, c) {
			select {
			case g.out <- frame{kind: kindCancel, id: id}:
			case <-g.dead:
			}
		}
		callPool.Put(c)
		return status.FromContextError(ctx.Err()).Err()
	}
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

// writeLoop writes queued frames, flushing only when the queue is empty so that frames
// are coalesced into few writes under load.
func (g *gateway) writeLoop() {
	bw := bufio.NewWriterSize(g.backend, 64<<10)
	var scratch [frameHeader + 2]byte // reused header buffer
	for {
		var f frame
		select {
		case f = <-g.out:
		default:
			if err := bw.Flush(); err != nil {
				g.fail(fmt.Errorf("backend: write: %w", err))
				return
			}
			select {
			case f = <-g.out:
			case <-g.dead:
				return
			}
		}
		if err := writeFrame(bw, scratch[:], &f); err != nil {
			g.fail(fmt.Errorf("backend: write: %w", err))
			return
		}
	}
}

func writeFrame(bw *bufio.Writer, scratch []byte, f *frame) error {
	length := 1 + 8
	if f.kind == kindHTTP {
		binary.LittleEndian.PutUint32(scratch[0:], uint32(length+len(*f.raw)))
		scratch[4] = f.kind
		binary.LittleEndian.PutUint64(scratch[5:], f.id)
		bw.Write(scratch[:frameHeader])
		_, err := bw.Write(*f.raw)
		putBuf(f.raw)
		return err
	}
	if f.kind == kindCall {
		length += 2 + len(f.method) + 8 + f.body.Len()
	}
	binary.LittleEndian.PutUint32(scratch[0:], uint32(length))
	scratch[4] = f.kind
	binary.LittleEndian.PutUint64(scratch[5:], f.id)
	if f.kind != kindCall {
		_, err := bw.Write(scratch[:frameHeader])
		return err
	}
	defer f.body.Free()
	binary.LittleEndian.PutUint16(scratch[frameHeader:], uint16(len(f.method)))
	bw.Write(scratch[:frameHeader+2])
	bw.WriteString(f.method)
	binary.LittleEndian.PutUint64(scratch[0:], uint64(f.timeoutUS))
	bw.Write(scratch[:8])
	for _, b := range f.body {
		bw.Write(b.ReadOnlyData())
	}
	// bufio.Writer keeps its first error; report it once the frame is done.
	_, err := bw.Write(nil)
	return err
}

func parseHeader(hdr []byte) (bodyLen int, kind byte, id uint64, err error) {
	length := binary.LittleEndian.Uint32(hdr[0:])
	if length < 1+8 {
		return 0, 0, 0, fmt.Errorf("backend: frame length %d is below 9", length)
	}
	return int(length - 9), hdr[4], binary.LittleEndian.Uint64(hdr[5:]), nil
}

// readLoop dispatches the backend's frames until the backend fails.
func (g *gateway) readLoop() {
	var hdr [frameHeader]byte
	for {
		err := g.readFrame(hdr[:])
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				err = fmt.Errorf("backend closed the connection (%w)", err)
			}
			g.fail(err)
			return
		}
	}
}

func (g *gateway) readFrame(hdr []byte) error {
	if _, err := io.ReadFull(g.br, hdr); err != nil {
		return err
	}
	n, kind, id, err := parseHeader(hdr)
	if err != nil {
		return err
	}
	switch kind {
	case kindReply:
		if n < 1 {
			return fmt.Errorf("backend: REPLY %d has no code", id)
		}
		code, err := g.br.ReadByte()
		if err != nil {
			return err
		}
		n--
		c := g.claim(id, false)
		if c == nil { // cancelled, or never ours: ignore
			_, err := g.br.Discard(n)
			return err
		}
		r, err := g.readReply(codes.Code(code), n)
		if err != nil {
			// The call was claimed, so it must get an answer.
			r = reply{code: codes.Unavailable, msg: "inferbridge: the backend is gone"}
		}
		c.reply <- r
		return err
	case kindReplyHTTP:
		c := g.claim(id, true)
		if c == nil { // cancelled, or never ours: ignore
			_, err := g.br.Discard(n)
			return err
		}
		bp := getBuf()
		*bp = grow((*bp)[:0], n)
		if _, err := io.ReadFull(g.br, *bp); err != nil {
			putBuf(bp)
			c.http <- nil // claimed, so it must get an answer
			return err
		}
		c.http <- bp
	case kindLimits:
		body, err := g.readBody(n)
		if err != nil {
			return err
		}
		return g.setLimits(body)
	case kindHealth:
		body, err := g.readBody(n)
		if err != nil || len(body) < 1 {
			return errors.Join(err, fmt.Errorf("backend: empty HEALTH frame"))
		}
		g.health.SetServingStatus(string(body[1:]), healthpb.HealthCheckResponse_ServingStatus(body[0]))
	case kindShutdown:
		body, err := g.readBody(n)
		if err != nil || len(body) < 4 {
			return errors.Join(err, fmt.Errorf("backend: SHUTDOWN frame shorter than 4 bytes"))
		}
		grace := time.Duration(binary.LittleEndian.Uint32(body)) * time.Millisecond
		g.shutdownOnce.Do(func() { go g.drain(grace) })
	default: // a later DESCRIPTORS or an unknown kind: skip it
		_, err := g.br.Discard(n)
		return err
	}
	return nil
}

func (g *gateway) readReply(code codes.Code, n int) (reply, error) {
	if code != codes.OK {
		msg, err := g.readBody(n)
		return reply{code: code, msg: string(msg)}, err
	}
	if n == 0 {
		return reply{}, nil
	}
	pool := mem.DefaultBufferPool()
	buf := pool.Get(n)
	if _, err := io.ReadFull(g.br, *buf); err != nil {
		pool.Put(buf)
		return reply{}, err
	}
	return reply{data: mem.NewBuffer(buf, pool)}, nil
}

func (g *gateway) readBody(n int) ([]byte, error) {
	body := make([]byte, n)
	_, err := io.ReadFull(g.br, body)
	return body, err
}

// drain handles SHUTDOWN. The reader keeps running meanwhile, so that calls in flight
// still receive their REPLYs.
func (g *gateway) drain(grace time.Duration) {
	g.health.Shutdown()
	stopped := make(chan struct{})
	go func() {
		g.srv.GracefulStop()
		close(stopped)
	}()
	httpStopped := make(chan struct{})
	go func() {
		if g.httpSrv != nil {
			g.shutdownHTTP(grace) // closes the server hard when grace runs out
		}
		close(httpStopped)
	}()
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-stopped:
	case <-timer.C:
		g.srv.Stop()
		<-stopped
	}
	<-httpStopped
	g.finished <- nil
}
