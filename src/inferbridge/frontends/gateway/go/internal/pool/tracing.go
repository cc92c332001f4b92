package pool

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/metadata"

	"github.com/inferbridge/inferbridge/gateway/internal/config"
	"github.com/inferbridge/inferbridge/gateway/internal/retry"
)

// Tracing: with a `tracing` block every forwarded request is a server span (the
// caller's traceparent its parent) and every attempt on an upstream a client span under
// it, whose context is the traceparent the upstream gets. Without one p.tracer is nil
// and nothing here runs: headers and metadata pass through as they came.

// tracing is the tracer and what exports its spans.
type tracing struct {
	tracer   trace.Tracer
	provider *sdktrace.TracerProvider
	prop     propagation.TextMapPropagator
}

func newTracing(cfg *config.Tracing, logf func(string, ...any)) (*tracing, error) {
	exporter, err := newExporter(cfg)
	if err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	// Export failures (a collector down) are said once per distinct message, not at
	// every batch.
	var mu sync.Mutex
	var last string
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if msg := err.Error(); msg != last {
			last = msg
			logf("tracing: %v", err)
		}
	}))
	return newTracingTo(sdktrace.NewBatchSpanProcessor(exporter, sdktrace.WithBatchTimeout(time.Second)), cfg.Rate), nil
}

// newTracingTo is tracing whose spans go to processor, sampling rate of new traces.
func newTracingTo(processor sdktrace.SpanProcessor, rate float64) *tracing {
	res := resource.NewSchemaless(attribute.String("service.name", "inferbridge-gateway"))
	provider := sdktrace.NewTracerProvider(
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(rate))),
		sdktrace.WithSpanProcessor(processor),
	)
	return &tracing{
		tracer:   provider.Tracer("github.com/inferbridge/inferbridge/gateway/internal/pool"),
		provider: provider,
		prop:     propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
	}
}

// newExporter makes the OTLP exporter of cfg: an endpoint with a scheme is a URL
// (https:// = TLS), HOST:PORT is plaintext.
func newExporter(cfg *config.Tracing) (sdktrace.SpanExporter, error) {
	ctx := context.Background()
	hasScheme := strings.Contains(cfg.Endpoint, "://")
	if cfg.Protocol == "http/protobuf" {
		opts := []otlptracehttp.Option{}
		if hasScheme {
			endpoint := cfg.Endpoint
			if u := strings.SplitN(strings.SplitN(endpoint, "://", 2)[1], "/", 2); len(u) == 1 || u[1] == "" {
				endpoint = strings.TrimSuffix(endpoint, "/") + "/v1/traces"
			}
			opts = append(opts, otlptracehttp.WithEndpointURL(endpoint))
		} else {
			opts = append(opts, otlptracehttp.WithEndpoint(cfg.Endpoint), otlptracehttp.WithInsecure())
		}
		return otlptracehttp.New(ctx, opts...)
	}
	opts := []otlptracegrpc.Option{}
	if hasScheme {
		opts = append(opts, otlptracegrpc.WithEndpointURL(cfg.Endpoint))
	} else {
		opts = append(opts, otlptracegrpc.WithEndpoint(cfg.Endpoint), otlptracegrpc.WithInsecure())
	}
	return otlptracegrpc.New(ctx, opts...)
}

// shutdown flushes the spans still queued.
func (t *tracing) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	t.provider.Shutdown(ctx)
}

// traceFromHTTP is ctx with the remote span context of h's traceparent (when tracing).
func (p *Pool) traceFromHTTP(ctx context.Context, h http.Header) context.Context {
	if p.tracing == nil {
		return ctx
	}
	return p.tracing.prop.Extract(ctx, propagation.HeaderCarrier(h))
}

// traceFromGRPC is ctx with the remote span context of md's traceparent (when tracing).
func (p *Pool) traceFromGRPC(ctx context.Context, md metadata.MD) context.Context {
	if p.tracing == nil {
		return ctx
	}
	return p.tracing.prop.Extract(ctx, mdCarrier(md))
}

// spanName names the span of REST request r ("" when not tracing: no string is built).
func (p *Pool) spanName(r *http.Request) string {
	if p.tracing == nil {
		return ""
	}
	return r.Method + " " + r.URL.Path
}

// traceToHTTP sets the attempt's span (in ctx) as h's traceparent.
func (p *Pool) traceToHTTP(ctx context.Context, h http.Header) {
	if p.tracing != nil {
		p.tracing.prop.Inject(ctx, propagation.HeaderCarrier(h))
	}
}

// startRequest starts the span of one forwarded request (nil when not tracing).
func (p *Pool) startRequest(ctx context.Context, op string) (context.Context, trace.Span) {
	if p.tracing == nil {
		return ctx, nil
	}
	return p.tracing.tracer.Start(ctx, op, trace.WithSpanKind(trace.SpanKindServer))
}

// startAttempt starts the span of attempt try on u, and puts it as the traceparent of
// the outgoing gRPC metadata (REST attempts set their header with traceToHTTP).
func (p *Pool) startAttempt(ctx context.Context, op string, u *upstream, try int) (context.Context, trace.Span) {
	address := u.cfg.REST
	if address == "" {
		address = u.cfg.GRPC
	}
	ctx, span := p.tracing.tracer.Start(ctx, op+" attempt", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(
			attribute.String("inferbridge.upstream", u.cfg.Name),
			attribute.String("inferbridge.upstream.address", address),
			attribute.Int("inferbridge.attempt", try),
		))
	md, _ := metadata.FromOutgoingContext(ctx)
	md = md.Copy()
	p.tracing.prop.Inject(ctx, mdCarrier(md))
	return metadata.NewOutgoingContext(ctx, md), span
}

// endAttempt records what the attempt came to and ends its span.
func endAttempt(span trace.Span, res attemptResult) {
	span.SetAttributes(attribute.String("inferbridge.outcome", res.label))
	if res.status != 0 {
		span.SetAttributes(attribute.Int("http.response.status_code", res.status))
	}
	if res.isGRPC {
		span.SetAttributes(attribute.Int("rpc.grpc.status_code", res.grpcCode))
	}
	if res.reason != retry.None {
		span.SetAttributes(attribute.String("inferbridge.retry_reason", res.reason.String()))
	}
	if res.failed {
		span.SetStatus(codes.Error, res.label)
	}
	span.End()
}

// endRequest ends the request's span with the number of attempts made.
func endRequest(span trace.Span, attempts int, refusal errNoRoute) {
	span.SetAttributes(attribute.Int("inferbridge.attempts", attempts))
	switch refusal {
	case routeNone:
		span.SetStatus(codes.Error, "no upstream serves the model")
	case routeUnavailable:
		span.SetStatus(codes.Error, "no upstream available")
	}
	span.End()
}

// mdCarrier is gRPC metadata as a propagation carrier (keys are lower-case there).
type mdCarrier metadata.MD

func (c mdCarrier) Get(key string) string {
	if v := metadata.MD(c).Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

func (c mdCarrier) Set(key, value string) { metadata.MD(c).Set(key, value) }

func (c mdCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}
