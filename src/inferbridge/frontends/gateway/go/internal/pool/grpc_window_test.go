package pool

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/inferbridge/inferbridge/gateway/internal/frontend"
)

// echoUpstream serves model m with messages of any size: RepositoryIndex lists it,
// ModelInfer echoes its request, ModelStreamInfer echoes every message.
func echoUpstream(t testing.TB) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.ForceServerCodecV2(rawCodec{}), grpc.MaxRecvMsgSize(1<<30), grpc.MaxSendMsgSize(1<<30),
		grpc.UnknownServiceHandler(func(_ any, ss grpc.ServerStream) error {
			method, _ := grpc.MethodFromServerStream(ss)
			for {
				var req rawMsg
				if err := ss.RecvMsg(&req); err != nil {
					if err == io.EOF {
						return nil
					}
					return err
				}
				if method == methodRepositoryIndex {
					var entry, b []byte
					entry = protowire.AppendTag(entry, 1, protowire.BytesType)
					entry = protowire.AppendString(entry, "m")
					b = protowire.AppendTag(b, 1, protowire.BytesType)
					b = protowire.AppendBytes(b, entry)
					req.Data.Free()
					return ss.SendMsg(&rawMsg{Data: mem.BufferSlice{mem.SliceBuffer(b)}})
				}
				if err := ss.SendMsg(&req); err != nil {
					return err
				}
				if method != inferencePrefix+"ModelStreamInfer" {
					return nil
				}
			}
		}))
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// bigRequest is a ModelInferRequest for m carrying n bytes of raw input (a pattern, so
// that a reordered or truncated copy does not compare equal).
func bigRequest(n int, seed byte) []byte {
	raw := make([]byte, n)
	for i := range raw {
		raw[i] = byte(i*7) + seed
	}
	var req []byte
	req = protowire.AppendTag(req, 1, protowire.BytesType)
	req = protowire.AppendString(req, "m")
	req = protowire.AppendTag(req, 7, protowire.BytesType) // raw_input_contents
	req = protowire.AppendBytes(req, raw)
	return req
}

// Messages many times the static flow-control windows (frontend.StreamWindow,
// ConnWindow) pass through the gateway intact both ways, unary and streaming, several
// at once on one connection.
func TestGRPCMessagesLargerThanTheWindowsPassThrough(t *testing.T) {
	addr := echoUpstream(t)
	conn := throughPoolGRPC(t, "upstreams: [{name: g1, grpc: '"+addr+"'}]\nmax_request_bytes: 134217728\n",
		grpc.MaxCallRecvMsgSize(1<<30), grpc.MaxCallSendMsgSize(1<<30))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	size := 3*frontend.ConnWindow + 12345 // over every window, and not a multiple of a frame
	errs := make(chan error, 3)
	for i := range 3 { // three at once share the connection's window
		go func(seed byte) {
			req := bigRequest(size, seed)
			var resp rawMsg
			if err := conn.Invoke(ctx, inferencePrefix+"ModelInfer", &rawMsg{Data: mem.BufferSlice{mem.SliceBuffer(req)}}, &resp); err != nil {
				errs <- err
				return
			}
			got := resp.Data.Materialize()
			resp.Data.Free()
			if !bytes.Equal(got, req) {
				errs <- fmt.Errorf("ModelInfer of %d bytes: %d bytes back, not the request's bytes", len(req), len(got))
				return
			}
			errs <- nil
		}(byte(i))
	}
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}

	cs, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, inferencePrefix+"ModelStreamInfer")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		req := bigRequest(frontend.StreamWindow*2+i, byte(i))
		if err := cs.SendMsg(&rawMsg{Data: mem.BufferSlice{mem.SliceBuffer(req)}}); err != nil {
			t.Fatal(err)
		}
		var resp rawMsg
		if err := cs.RecvMsg(&resp); err != nil {
			t.Fatalf("stream message %d: %v", i, err)
		}
		got := resp.Data.Materialize()
		resp.Data.Free()
		if !bytes.Equal(got, req) {
			t.Fatalf("stream message %d of %d bytes: %d bytes back, not the request's bytes", i, len(req), len(got))
		}
	}
	if err := cs.CloseSend(); err != nil {
		t.Fatal(err)
	}
	var tail rawMsg
	if err := cs.RecvMsg(&tail); err != io.EOF {
		t.Fatalf("after CloseSend: %v, want the stream to end OK", err)
	}
}

// BenchmarkGRPCThroughPool: one small ModelInfer at a time through the pool to an
// in-process upstream (the gateway's cost per gRPC call, with its allocations).
func BenchmarkGRPCThroughPool(b *testing.B) {
	addr := echoUpstream(b)
	conn := throughPoolGRPC(b, "upstreams: [{name: g1, grpc: '"+addr+"'}]\n")
	req := bigRequest(64, 1)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var resp rawMsg
		if err := conn.Invoke(context.Background(), inferencePrefix+"ModelInfer", &rawMsg{Data: mem.BufferSlice{mem.SliceBuffer(req)}}, &resp); err != nil {
			b.Fatal(err)
		}
		resp.Data.Free()
	}
}
