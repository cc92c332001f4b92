package local

import (
	"context"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/inferbridge/inferbridge/gateway/internal/frontend"
)

// Instrumentation of the two servers: gRPC interceptors around every call, and
// connection counting for both listeners. The HTTP handler records its own requests.

// observeStream records every streaming call, which includes each forwarded call (the
// unknown-service handler is a bidi stream) and reflection and health Watch.
func (g *gateway) observeStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	start := time.Now()
	pm := &g.metrics.proto[protoGRPC]
	route := g.metrics.grpcRoute(info.FullMethod)
	pm.inflight.Inc()
	if !route.forwarded { // forward counts its own bytes, without a wrapper
		ss = &countingStream{ServerStream: ss, m: pm}
	}
	err := handler(srv, ss) // the front end checks health and reflection within
	pm.inflight.Dec()
	g.metrics.grpcDone(route, statusCode(err), start)
	return err
}

// observeUnary records the unary calls, health Check.
func (g *gateway) observeUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	pm := &g.metrics.proto[protoGRPC]
	pm.inflight.Inc()
	pm.reqBytes.Add(float64(messageSize(req)))
	resp, err := handler(ctx, req)
	if err == nil {
		pm.respBytes.Add(float64(messageSize(resp)))
	}
	pm.inflight.Dec()
	g.metrics.grpcDone(g.metrics.grpcRoute(info.FullMethod), statusCode(err), start)
	return resp, err
}

// statusCode is the code grpc-go sends for a handler's error.
func statusCode(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	if s, ok := status.FromError(err); ok {
		return s.Code()
	}
	return status.FromContextError(err).Code()
}

func messageSize(m any) int {
	switch m := m.(type) {
	case proto.Message:
		return proto.Size(m)
	case *frontend.RawMsg:
		return m.Data.Len()
	}
	return 0
}

// countingStream counts the messages of the calls that forward does not serve.
type countingStream struct {
	grpc.ServerStream
	m *protoMetrics
}

func (s *countingStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if err == nil {
		s.m.reqBytes.Add(float64(messageSize(m)))
	}
	return err
}

func (s *countingStream) SendMsg(m any) error {
	n := messageSize(m) // before sending: the codec takes a rawMsg's data
	err := s.ServerStream.SendMsg(m)
	if err == nil {
		s.m.respBytes.Add(float64(n))
	}
	return err
}

// countedListener counts the connections it accepts and those still open.
type countedListener struct {
	net.Listener
	m *protoMetrics
}

func (l countedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.m.connsTotal.Inc()
	l.m.conns.Inc()
	return &countedConn{Conn: c, m: l.m}, nil
}

type countedConn struct {
	net.Conn
	m      *protoMetrics
	closed atomic.Bool
}

func (c *countedConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.m.conns.Dec()
	}
	return c.Conn.Close()
}

// httpConnState counts the HTTP server's connections (net/http reports each state
// change, so its connections need no wrapper).
func (g *gateway) httpConnState(_ net.Conn, state http.ConnState) {
	pm := &g.metrics.proto[protoHTTP]
	switch state {
	case http.StateNew:
		pm.connsTotal.Inc()
		pm.conns.Inc()
	case http.StateHijacked, http.StateClosed:
		pm.conns.Dec()
	}
}
