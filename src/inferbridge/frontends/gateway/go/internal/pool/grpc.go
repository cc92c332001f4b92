package pool

import (
	"context"
	"io"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/inferbridge/inferbridge/gateway/internal/auth"
	"github.com/inferbridge/inferbridge/gateway/internal/frontend"
	"github.com/inferbridge/inferbridge/gateway/internal/retry"
)

// gRPC in pool mode (package frontend terminates it): every method but health is
// handled by ServeGRPC, which passes the request and response messages through as
// bytes (never decoded, except the model name and version of the model-scoped methods).

// rawMsg and rawCodec are the front end's, which the pool also speaks to its upstreams.
type (
	rawMsg   = frontend.RawMsg
	rawCodec = frontend.Codec
)

const inferencePrefix = "/inference.GRPCInferenceService/"

// modelMethods are the methods whose request names a model in field 1 and its version
// in field 2.
var modelMethods = map[string]bool{
	inferencePrefix + "ModelInfer": true, inferencePrefix + "ModelMetadata": true,
	inferencePrefix + "ModelReady": true, inferencePrefix + "ModelConfig": true,
	inferencePrefix + "ModelStatistics": true,
}

// modelOfRequest reads fields 1 (name) and 2 (version) of a request message.
func modelOfRequest(msg []byte) (name, version string) {
	n, v, _ := frontend.RequestModel(msg)
	return string(n), string(v)
}

// forwardedMetadataSkip are incoming keys grpc-go sets itself on the outgoing call.
func skipMetadata(key string) bool {
	return strings.HasPrefix(key, ":") || strings.HasPrefix(key, "grpc-") || key == "content-type" ||
		key == "user-agent" || key == "te"
}

// userMetadata drops the keys grpc-go manages from md.
func userMetadata(md metadata.MD) metadata.MD {
	out := metadata.MD{}
	for k, v := range md {
		if !skipMetadata(k) {
			out[k] = v
		}
	}
	return out
}

// inferenceMethods carry their model in the request message: they are checked once it
// is read (a stream: each message), the others as the call starts.
var inferenceMethods = map[string]bool{auth.GRPCModelInfer: true, auth.GRPCModelStreamInfer: true}

// ServeGRPC forwards a call of every method but health (frontend.Backend).
func (p *Pool) ServeGRPC(_ any, ss grpc.ServerStream) (err error) {
	method, _ := grpc.MethodFromServerStream(ss)
	if p.auth != nil && !inferenceMethods[method] {
		if _, err := p.fe.CheckGRPC(ss.Context(), method, "", 0); err != nil {
			return err // refused before anything is read, as no upstream sees it
		}
	}
	start := time.Now()
	defer func() {
		p.metrics.done(protoGRPC, int(status.Code(err)), time.Since(start))
	}()
	if method == inferencePrefix+"ModelStreamInfer" {
		return p.forwardStream(ss, method)
	}
	var req rawMsg
	if err := ss.RecvMsg(&req); err != nil {
		if err == io.EOF {
			return status.Error(codes.InvalidArgument, "inferbridge gateway: the call carried no request message")
		}
		return err
	}
	defer func() { req.Data.Free() }()
	body := req.Data.Materialize()
	if p.auth != nil && method == inferencePrefix+"ModelInfer" {
		name, _ := modelOfRequest(body)
		if _, err := p.fe.CheckGRPC(ss.Context(), method, name, len(body)); err != nil {
			return err
		}
	}

	switch method {
	case inferencePrefix + "ServerLive":
		return ss.SendMsg(&rawMsg{Data: mem.BufferSlice{mem.SliceBuffer([]byte{0x08, 0x01})}})
	case inferencePrefix + "ServerReady":
		if p.ready() {
			return ss.SendMsg(&rawMsg{Data: mem.BufferSlice{mem.SliceBuffer([]byte{0x08, 0x01})}})
		}
		return ss.SendMsg(&rawMsg{})
	case inferencePrefix + "RepositoryIndex":
		return ss.SendMsg(&rawMsg{Data: mem.BufferSlice{mem.SliceBuffer(p.indexResponse())}})
	case inferencePrefix + "RepositoryModelLoad", inferencePrefix + "RepositoryModelUnload":
		return p.broadcastGRPC(ss, method, body)
	}

	var model, version string
	if modelMethods[method] {
		model, version = modelOfRequest(body)
		if method == inferencePrefix+"ModelStatistics" && model == "" {
			version = ""
		}
	}
	snap := p.snap.Load()
	if model != "" && snap.lookup(model, version) == nil {
		if method == inferencePrefix+"ModelReady" { // Triton answers ready=false for what is not served
			return ss.SendMsg(&rawMsg{})
		}
		p.metrics.rejected.WithLabelValues("grpc", "", "unknown_model").Inc()
		if version != "" && snap.lookup(model, "") != nil {
			return status.Errorf(codes.NotFound, "model '%s' version %s is not served by any upstream", model, version)
		}
		return status.Errorf(codes.NotFound, "model '%s' is not served by any upstream", model)
	}
	if method == inferencePrefix+"ModelInfer" {
		release, refused := p.limits.admit(model)
		if refused != "" {
			p.metrics.rejected.WithLabelValues("grpc", model, refused).Inc()
			return status.Errorf(codes.ResourceExhausted, "gateway is at its in-flight limit for model '%s'; retry later", model)
		}
		defer release()
	}

	ctx := ss.Context()
	var cancel context.CancelFunc
	if d, ok := ctx.Deadline(); ok {
		// Answer just before the client's deadline: at the deadline itself grpc-go resets
		// the stream, which a client reads as CANCELLED.
		ctx, cancel = context.WithDeadline(ctx, d.Add(-frontend.DeadlineMargin))
	} else {
		ctx, cancel = context.WithTimeout(ctx, p.cfg.Timeouts.Default)
	}
	defer cancel()
	deadline, _ := ctx.Deadline()
	md, _ := metadata.FromIncomingContext(ctx)
	ctx = metadata.NewOutgoingContext(ctx, userMetadata(md))
	ctx = p.traceFromGRPC(ctx, md)
	var key string
	if p.cfg.Balancer.HashKey != "" {
		if v := md.Get(p.cfg.Balancer.HashKey); len(v) > 0 {
			key = v[0]
		}
	}

	if method == inferencePrefix+"ModelInfer" {
		if answer, err, ok := p.batched(ctx, model, body, deadline); ok {
			if err != nil {
				return err
			}
			return ss.SendMsg(&rawMsg{Data: mem.BufferSlice{mem.SliceBuffer(answer)}})
		}
	}
	pickGroup := func(s *snapshot) (*group, errNoRoute) {
		rt := s.lookup(model, version)
		if rt == nil {
			return nil, routeNone
		}
		return &rt.grpc, 0
	}
	type result struct {
		resp            rawMsg
		header, trailer metadata.MD
		err             error
	}
	res, refusal := forward(ctx, p, method, pickGroup, key, deadline,
		func(ctx context.Context, u *upstream, _ int) (*result, attemptResult) {
			r := &result{}
			req := &rawMsg{Data: mem.BufferSlice{mem.SliceBuffer(body)}}
			r.err = u.conn.Invoke(u.grpcContext(ctx), method, req, &r.resp, grpc.Header(&r.header), grpc.Trailer(&r.trailer))
			return r, classifyGRPC(ctx, r.err)
		},
		func(r *result) {
			if r != nil {
				r.resp.Data.Free()
			}
		})
	switch {
	case refusal == routeNone:
		return status.Errorf(codes.NotFound, "model '%s' is not served by any upstream", model)
	case res == nil && ss.Context().Err() != nil:
		return status.FromContextError(ss.Context().Err()).Err()
	case res == nil && ctx.Err() == context.DeadlineExceeded:
		return status.Error(codes.DeadlineExceeded, "inferbridge gateway: deadline exceeded before an upstream answered")
	case res == nil:
		p.metrics.rejected.WithLabelValues("grpc", model, "no_upstream").Inc()
		if model != "" {
			return status.Errorf(codes.Unavailable, "inferbridge gateway: no upstream serving model '%s' is available", model)
		}
		return status.Error(codes.Unavailable, "inferbridge gateway: no upstream is available")
	}
	// The upstream's response metadata goes back to the client (grpc-go's own keys are
	// set by the server itself).
	if h := userMetadata(res.header); len(h) > 0 {
		ss.SetHeader(h)
	}
	if t := userMetadata(res.trailer); len(t) > 0 {
		ss.SetTrailer(t)
	}
	if res.err != nil {
		if ctx.Err() == context.DeadlineExceeded && status.Code(res.err) == codes.DeadlineExceeded {
			return status.Error(codes.DeadlineExceeded, "inferbridge gateway: deadline exceeded")
		}
		return res.err
	}
	return ss.SendMsg(&res.resp)
}

// broadcastGRPC applies a repository load or unload to every routable gRPC upstream in
// turn (as REST does): the answer is the first failure or the last success, sent after
// discovery has run again.
func (p *Pool) broadcastGRPC(ss grpc.ServerStream, method string, body []byte) error {
	ups := p.snap.Load().all.grpc.ups
	if len(ups) == 0 {
		return status.Error(codes.Unavailable, "inferbridge gateway: no upstream is available")
	}
	ctx := ss.Context()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.cfg.Timeouts.Default)
		defer cancel()
	}
	md, _ := metadata.FromIncomingContext(ctx)
	ctx = metadata.NewOutgoingContext(ctx, userMetadata(md))
	var last rawMsg
	var err error
	for _, u := range ups {
		last.Data.Free()
		last = rawMsg{}
		if err = u.conn.Invoke(u.grpcContext(ctx), method, &rawMsg{Data: mem.BufferSlice{mem.SliceBuffer(body)}}, &last); err != nil {
			break
		}
	}
	p.discoverAll()
	if err != nil {
		return err
	}
	return ss.SendMsg(&last)
}

func classifyGRPC(ctx context.Context, err error) attemptResult {
	res := classifyGRPCError(ctx, err)
	res.isGRPC, res.grpcCode = true, int(status.Code(err))
	return res
}

func classifyGRPCError(ctx context.Context, err error) attemptResult {
	if err == nil {
		return attemptResult{label: "ok"}
	}
	st := status.Convert(err)
	switch st.Code() {
	case codes.Canceled, codes.DeadlineExceeded:
		if ctx.Err() != nil {
			return attemptResult{neutral: true, label: "cancelled"}
		}
		return attemptResult{failed: true, label: "deadline"}
	case codes.Unavailable:
		msg := st.Message()
		if strings.Contains(msg, "while dialing") || strings.Contains(msg, "connection refused") {
			return attemptResult{reason: retry.ConnectFailure, failed: true, fast: true, label: "connect_failure"}
		}
		return attemptResult{reason: retry.Unavailable, failed: true, fast: true, label: "unavailable"}
	case codes.ResourceExhausted:
		return attemptResult{reason: retry.Status429, fast: true, label: "resource_exhausted"}
	case codes.Internal, codes.Unknown, codes.DataLoss:
		return attemptResult{failed: true, label: "internal"}
	}
	return attemptResult{label: "ok"}
}

// indexResponse encodes RepositoryIndexResponse from the gateway's view.
func (p *Pool) indexResponse() []byte {
	var b []byte
	for _, e := range p.indexEntries() {
		var m []byte
		m = protowire.AppendTag(m, 1, protowire.BytesType)
		m = protowire.AppendString(m, e.Name)
		if e.Version != "" {
			m = protowire.AppendTag(m, 2, protowire.BytesType)
			m = protowire.AppendString(m, e.Version)
		}
		m = protowire.AppendTag(m, 3, protowire.BytesType)
		m = protowire.AppendString(m, "READY")
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendBytes(b, m)
	}
	return b
}

// codeName is the canonical name of a gRPC code (the metrics' label).
func codeName(c codes.Code) string { return frontend.CodeName(c) }
