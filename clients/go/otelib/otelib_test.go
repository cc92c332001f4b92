package otelib_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	inferbridge "github.com/inferbridge/inferbridge/clients/go"
	"github.com/inferbridge/inferbridge/clients/go/grpcclient"
	"github.com/inferbridge/inferbridge/clients/go/inferencepb"
	"github.com/inferbridge/inferbridge/clients/go/otelib"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// startSpan starts a sampled span with a trace state on a real SDK tracer provider.
func startSpan(t *testing.T) (context.Context, trace.SpanContext) {
	t.Helper()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	state, err := trace.ParseTraceState("vendor=value")
	if err != nil {
		t.Fatal(err)
	}
	parent := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}, SpanID: trace.SpanID{1}, TraceState: state,
		TraceFlags: trace.FlagsSampled, Remote: true,
	})
	ctx, span := tp.Tracer("otelib-test").Start(trace.ContextWithRemoteSpanContext(context.Background(), parent), "call")
	t.Cleanup(func() { span.End() })
	return ctx, span.SpanContext()
}

// checkTraceparent asserts that a traceparent names the span: version 00, its trace id,
// its span id, sampled.
func checkTraceparent(t *testing.T, got string, sc trace.SpanContext) {
	t.Helper()
	want := "00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-01"
	if got != want {
		t.Fatalf("traceparent %q, want %q", got, want)
	}
}

// headerServer records the trace headers of every request.
type headerServer struct {
	mu      sync.Mutex
	parents []string
	states  []string
}

func (h *headerServer) start(t *testing.T) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.parents = append(h.parents, r.Header.Get("traceparent"))
		h.states = append(h.states, r.Header.Get("tracestate"))
		h.mu.Unlock()
		_, _ = w.Write([]byte(`{"live":true}`))
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func (h *headerServer) last() (string, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.parents[len(h.parents)-1], h.states[len(h.states)-1]
}

func TestTransportInjectsTraceparent(t *testing.T) {
	ctx, sc := startSpan(t)
	var h headerServer
	url := h.start(t)
	client := &http.Client{Transport: otelib.Transport(nil)}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	parent, state := h.last()
	checkTraceparent(t, parent, sc)
	if state != "vendor=value" {
		t.Fatalf("tracestate %q", state)
	}
	if req.Header.Get("traceparent") != "" {
		t.Fatal("the caller's request must not be modified")
	}

	// No span, no header.
	req, _ = http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	if resp, err = client.Do(req); err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if parent, _ := h.last(); parent != "" {
		t.Fatalf("a call without a span sent traceparent %q", parent)
	}
}

func TestRESTClientMiddleware(t *testing.T) {
	ctx, sc := startSpan(t)
	var h headerServer
	client, err := inferbridge.NewRESTClient(h.start(t), inferbridge.WithTransportMiddleware(otelib.Middleware()))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if live, err := client.Live(ctx); err != nil || !live {
		t.Fatal(live, err)
	}
	parent, _ := h.last()
	checkTraceparent(t, parent, sc)
}

func TestWithPropagator(t *testing.T) {
	ctx, _ := startSpan(t)
	var h headerServer
	url := h.start(t)
	// A propagator that sends nothing: the request goes out as it came.
	client := &http.Client{Transport: otelib.Transport(http.DefaultTransport, otelib.WithPropagator(propagation.NewCompositeTextMapPropagator()))}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if parent, _ := h.last(); parent != "" {
		t.Fatalf("traceparent %q from a propagator that injects nothing", parent)
	}
}

// metadataServer is a GRPCInferenceService that records the trace metadata of ServerLive.
type metadataServer struct {
	inferencepb.UnimplementedGRPCInferenceServiceServer
	got chan metadata.MD
}

func (m *metadataServer) ServerLive(ctx context.Context, _ *inferencepb.ServerLiveRequest) (*inferencepb.ServerLiveResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	m.got <- md
	return &inferencepb.ServerLiveResponse{Live: true}, nil
}

func startGRPC(t *testing.T) (*metadataServer, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	m := &metadataServer{got: make(chan metadata.MD, 4)}
	inferencepb.RegisterGRPCInferenceServiceServer(srv, m)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return m, lis.Addr().String()
}

func first(md metadata.MD, key string) string {
	if v := md.Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

func TestGRPCClientInterceptor(t *testing.T) {
	ctx, sc := startSpan(t)
	server, addr := startGRPC(t)
	client, err := grpcclient.New(addr, otelib.DialOption())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	// The caller's own metadata travels too, and its MD is not modified.
	mine := metadata.Pairs("x-caller", "yes")
	if live, err := client.Live(metadata.NewOutgoingContext(ctx, mine)); err != nil || !live {
		t.Fatal(live, err)
	}
	md := <-server.got
	checkTraceparent(t, first(md, "traceparent"), sc)
	if first(md, "tracestate") != "vendor=value" || first(md, "x-caller") != "yes" {
		t.Fatalf("metadata %v", md)
	}
	if len(mine.Get("traceparent")) != 0 {
		t.Fatal("the caller's metadata must not be modified")
	}

	if _, err := client.Live(context.Background()); err != nil {
		t.Fatal(err)
	}
	if md := <-server.got; len(md.Get("traceparent")) != 0 {
		t.Fatalf("a call without a span sent %v", md)
	}
}

func TestStreamClientInterceptor(t *testing.T) {
	ctx, sc := startSpan(t)
	var seen context.Context
	streamer := func(ctx context.Context, _ *grpc.StreamDesc, _ *grpc.ClientConn, _ string, _ ...grpc.CallOption) (grpc.ClientStream, error) {
		seen = ctx
		return nil, nil
	}
	if _, err := otelib.StreamClientInterceptor()(ctx, &grpc.StreamDesc{}, nil, "/m", streamer); err != nil {
		t.Fatal(err)
	}
	md, _ := metadata.FromOutgoingContext(seen)
	checkTraceparent(t, first(md, "traceparent"), sc)
	if !strings.HasPrefix(first(md, "traceparent"), "00-0102") {
		t.Fatalf("trace id of the parent expected: %v", md)
	}
}
