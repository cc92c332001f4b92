// Package otelib propagates the caller's OpenTelemetry trace context to inferbridge (or any
// OIP server that continues W3C traces) from the inferbridge Go SDK: an http.RoundTripper
// wrapper for the REST client and gRPC client interceptors for grpcclient. It is a module
// of its own so that the SDK itself does not depend on OpenTelemetry.
//
// Both inject the span context of each call's context.Context with the W3C Trace Context
// propagator (traceparent and tracestate) unless WithPropagator names another; they start
// no spans of their own.
//
//	rest, _ := inferbridge.NewRESTClient(url, inferbridge.WithTransportMiddleware(otelib.Middleware()))
//	grpc, _ := grpcclient.New(addr, otelib.DialOption())
//	ctx, span := tracer.Start(ctx, "classify")
//	defer span.End()
//	resp, err := rest.Infer(ctx, req) // the server's spans join this trace
package otelib

import (
	"context"
	"net/http"

	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// Option configures the propagation.
type Option func(*config)

type config struct {
	propagator propagation.TextMapPropagator
}

// WithPropagator injects with p instead of the W3C Trace Context propagator, such as
// otel.GetTextMapPropagator() to follow the process's global setting, or a composite with
// propagation.Baggage{}.
func WithPropagator(p propagation.TextMapPropagator) Option {
	return func(c *config) {
		if p != nil {
			c.propagator = p
		}
	}
}

func newConfig(opts []Option) config {
	c := config{propagator: propagation.TraceContext{}}
	for _, opt := range opts {
		opt(&c)
	}
	return c
}

// Transport wraps base (http.DefaultTransport when nil) so that every request carries the
// trace context of its context.Context in its headers. The request it is given is not
// modified; CloseIdleConnections reaches base.
func Transport(base http.RoundTripper, opts ...Option) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return &transport{base: base, propagator: newConfig(opts).propagator}
}

// Middleware is Transport as the REST client's inferbridge.WithTransportMiddleware takes
// it, which keeps the client's own connection pool.
func Middleware(opts ...Option) func(http.RoundTripper) http.RoundTripper {
	return func(base http.RoundTripper) http.RoundTripper { return Transport(base, opts...) }
}

type transport struct {
	base       http.RoundTripper
	propagator propagation.TextMapPropagator
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	fields := fieldsOf(req.Context(), t.propagator)
	if len(fields) == 0 {
		return t.base.RoundTrip(req)
	}
	// A RoundTripper must not modify its request: the fields go into a copy.
	out := req.Clone(req.Context())
	for k, v := range fields {
		out.Header.Set(k, v)
	}
	return t.base.RoundTrip(out)
}

// fieldsOf is what p injects for ctx; empty when ctx carries no span context.
func fieldsOf(ctx context.Context, p propagation.TextMapPropagator) propagation.MapCarrier {
	fields := propagation.MapCarrier{}
	p.Inject(ctx, fields)
	return fields
}

// CloseIdleConnections passes the call on, so that http.Client.CloseIdleConnections (and
// the REST client's Close) still closes the wrapped transport's idle connections.
func (t *transport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// UnaryClientInterceptor injects the trace context of each unary call's context into its
// outgoing gRPC metadata.
func UnaryClientInterceptor(opts ...Option) grpc.UnaryClientInterceptor {
	p := newConfig(opts).propagator
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, callOpts ...grpc.CallOption) error {
		return invoker(inject(ctx, p), method, req, reply, cc, callOpts...)
	}
}

// StreamClientInterceptor injects the trace context of each stream's context into its
// outgoing gRPC metadata.
func StreamClientInterceptor(opts ...Option) grpc.StreamClientInterceptor {
	p := newConfig(opts).propagator
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, callOpts ...grpc.CallOption) (grpc.ClientStream, error) {
		return streamer(inject(ctx, p), desc, cc, method, callOpts...)
	}
}

// DialOption installs UnaryClientInterceptor, which covers every call grpcclient makes:
// grpcclient.New(target, otelib.DialOption()). For streaming calls on a connection of
// your own add grpc.WithChainStreamInterceptor(otelib.StreamClientInterceptor()).
func DialOption(opts ...Option) grpc.DialOption {
	return grpc.WithChainUnaryInterceptor(UnaryClientInterceptor(opts...))
}

// inject returns ctx with the trace context added to its outgoing metadata (a copy: the
// caller's metadata is not modified), or ctx itself when there is nothing to add.
func inject(ctx context.Context, p propagation.TextMapPropagator) context.Context {
	fields := fieldsOf(ctx, p)
	if len(fields) == 0 {
		return ctx
	}
	md, ok := metadata.FromOutgoingContext(ctx)
	if ok {
		md = md.Copy()
	} else {
		md = metadata.MD{}
	}
	for k, v := range fields {
		md.Set(k, v) // lower-cases the key, as gRPC metadata wants
	}
	return metadata.NewOutgoingContext(ctx, md)
}
