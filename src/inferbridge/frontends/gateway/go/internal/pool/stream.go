package pool

import (
	"context"
	"io"
	"sync/atomic"
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
	model, version := modelOfRequest(first.Data.Materialize())
	if _, err := p.fe.CheckGRPC(ss.Context(), method, model, first.Data.Len()); err != nil {
		first.Data.Free()
		return err
	}
	snap := p.snap.Load()
	rt := snap.lookup(model, version)
	if rt == nil {
		first.Data.Free()
		p.metrics.rejected.WithLabelValues("grpc", "", "unknown_model").Inc()
		return status.Errorf(codes.NotFound, "model '%s' is not served by any upstream", model)
	}
	u, probe := p.choose(&rt.grpc, "", nil)
	if u == nil {
		first.Data.Free()
		p.metrics.rejected.WithLabelValues("grpc", model, "no_upstream").Inc()
		return status.Errorf(codes.Unavailable, "inferbridge gateway: no upstream serving model '%s' is available", model)
	}

	ctx, cancel := context.WithCancel(ss.Context())
	defer cancel()
	md, _ := metadata.FromIncomingContext(ctx)
	ctx = metadata.NewOutgoingContext(ctx, userMetadata(md))

	start := u.load.Start()
	u.m.inflight.Inc()
	var check func([]byte) error // nil: nothing to check, the messages are not looked at
	if p.auth != nil {
		check = func(msg []byte) error {
			name, _ := modelOfRequest(msg)
			_, err := p.fe.CheckGRPC(ss.Context(), method, name, len(msg)) // every message is an inference
			return err
		}
	}
	err := relay(ctx, u, method, ss, &first, check)
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

// relay runs the stream on u: first, then every later client message that check
// allows upstream, every upstream message back; it returns the upstream's status, or
// check's refusal (which ends the upstream stream, the refused message unsent).
func relay(ctx context.Context, u *upstream, method string, ss grpc.ServerStream, first *rawMsg, check func([]byte) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var refused atomic.Pointer[error]
	cs, err := u.conn.NewStream(u.grpcContext(ctx), &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, method)
	if err != nil {
		first.Data.Free()
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
			if err := checkMsg(check, &m); err != nil {
				m.Data.Free()
				refused.Store(&err)
				cancel()
				return
			}
			if err := cs.SendMsg(&m); err != nil {
				m.Data.Free()
				return // the upstream ended: its status comes from RecvMsg below
			}
		}
	}()
	for {
		var m rawMsg
		if err := cs.RecvMsg(&m); err != nil {
			if r := refused.Load(); r != nil {
				return *r
			}
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

func checkMsg(check func([]byte) error, m *rawMsg) error {
	if check == nil {
		return nil
	}
	return check(m.Data.Materialize())
}
