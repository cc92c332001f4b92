package pool

import (
	"context"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// forwardStream forwards one ModelStreamInfer call: the first request message names the
// model, which chooses the upstream; then messages are relayed both ways as bytes until
// either side ends. A stream is not retried (responses may already have reached the
// client), and the client's deadline or cancellation ends the upstream stream.
func (p *Pool) forwardStream(ss grpc.ServerStream, method string) error {
	var first rawMsg
	if err := ss.RecvMsg(&first); err != nil {
		if err == io.EOF {
			return nil // the client closed without a request: nothing to answer
		}
		return err
	}
	model, version := modelOfRequest(first.data.Materialize())
	snap := p.snap.Load()
	rt := snap.lookup(model, version)
	if rt == nil {
		first.data.Free()
		p.metrics.rejected.WithLabelValues("grpc", "", "unknown_model").Inc()
		return status.Errorf(codes.NotFound, "model '%s' is not served by any upstream", model)
	}
	u, probe := p.choose(&rt.grpc, "", nil)
	if u == nil {
		first.data.Free()
		p.metrics.rejected.WithLabelValues("grpc", model, "no_upstream").Inc()
		return status.Errorf(codes.Unavailable, "inferbridge gateway: no upstream serving model '%s' is available", model)
	}

	ctx, cancel := context.WithCancel(ss.Context())
	defer cancel()
	md, _ := metadata.FromIncomingContext(ctx)
	ctx = metadata.NewOutgoingContext(ctx, userMetadata(md))

	start := u.load.Start()
	u.m.inflight.Inc()
	err := relay(ctx, u, method, ss, &first)
	u.m.inflight.Dec()
	res := classifyGRPC(ctx, err)
	u.load.Done(start, res.fast)
	u.m.observe(res.label, time.Since(start))
	if res.neutral {
		u.breaker.Cancel(probe)
	} else {
		u.breaker.Record(!res.failed, probe)
	}
	if res.failed {
		u.m.failure(res.label)
	}
	if err != nil && ss.Context().Err() != nil {
		return status.FromContextError(ss.Context().Err()).Err()
	}
	return err
}

// relay runs the stream on u: first, then every later client message upstream, every
// upstream message back; it returns the upstream's status.
func relay(ctx context.Context, u *upstream, method string, ss grpc.ServerStream, first *rawMsg) error {
	cs, err := u.conn.NewStream(u.grpcContext(ctx), &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, method)
	if err != nil {
		first.data.Free()
		return err
	}
	if err := cs.SendMsg(first); err != nil && err != io.EOF {
		return err
	}
	go func() {
		for {
			var m rawMsg
			if err := ss.RecvMsg(&m); err != nil {
				if err == io.EOF {
					cs.CloseSend()
				}
				return // another error: the client is gone; ctx ends the upstream stream
			}
			if err := cs.SendMsg(&m); err != nil {
				m.data.Free()
				return // the upstream ended: its status comes from RecvMsg below
			}
		}
	}()
	for {
		var m rawMsg
		if err := cs.RecvMsg(&m); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
		if err := ss.SendMsg(&m); err != nil {
			return err
		}
	}
}
