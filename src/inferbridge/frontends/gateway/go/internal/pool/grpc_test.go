package pool

import (
	"context"
	"net"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/inferbridge/inferbridge/gateway/internal/clock"
	"github.com/inferbridge/inferbridge/gateway/internal/config"
)

// fakeGRPC is an upstream that serves model m: RepositoryIndex lists it, every other
// method echoes its request and sets the trailer "upstream" and what "traceparent" it saw.
func fakeGRPC(t *testing.T, name string) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.ForceServerCodecV2(rawCodec{}), grpc.UnknownServiceHandler(func(_ any, ss grpc.ServerStream) error {
		method, _ := grpc.MethodFromServerStream(ss)
		var req rawMsg
		if err := ss.RecvMsg(&req); err != nil {
			return err
		}
		if method == methodRepositoryIndex {
			var entry []byte
			entry = protowire.AppendTag(entry, 1, protowire.BytesType)
			entry = protowire.AppendString(entry, "m")
			var b []byte
			b = protowire.AppendTag(b, 1, protowire.BytesType)
			b = protowire.AppendBytes(b, entry)
			return ss.SendMsg(&rawMsg{Data: mem.BufferSlice{mem.SliceBuffer(b)}})
		}
		md, _ := metadata.FromIncomingContext(ss.Context())
		ss.SetTrailer(metadata.Pairs("upstream", name, "saw-traceparent", strings.Join(md.Get("traceparent"), ",")))
		if _, ok := ss.Context().Deadline(); !ok {
			return status.Error(codes.FailedPrecondition, "no deadline passed on")
		}
		return ss.SendMsg(&req)
	}))
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// throughPoolGRPC starts a pool of the configuration yaml (its upstreams discovered)
// behind its gRPC server on loopback, and answers a raw-codec client of it (with
// callOpts); all of it ends with the test.
func throughPoolGRPC(tb testing.TB, yaml string, callOpts ...grpc.CallOption) *grpc.ClientConn {
	cfg, err := config.Parse("t.yaml", []byte(yaml))
	if err != nil {
		tb.Fatal(err)
	}
	p, err := New(cfg, clock.Real{}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(p.Stop)
	p.discoverAll()
	srv, _ := p.GRPCServer()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go srv.Serve(lis)
	tb.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(append([]grpc.CallOption{grpc.ForceCodecV2(rawCodec{})}, callOpts...)...))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return conn
}

func TestGRPCForwardsBytesMetadataAndDeadline(t *testing.T) {
	addr := fakeGRPC(t, "g1")
	conn := throughPoolGRPC(t, "upstreams: [{name: g1, grpc: '"+addr+"'}]\n")

	var req []byte
	req = protowire.AppendTag(req, 1, protowire.BytesType)
	req = protowire.AppendString(req, "m")
	req = protowire.AppendTag(req, 3, protowire.BytesType)
	req = protowire.AppendString(req, "an id")
	ctx := metadata.AppendToOutgoingContext(context.Background(), "traceparent", "00-abc-def-01")
	var resp rawMsg
	var trailer metadata.MD
	err := conn.Invoke(ctx, inferencePrefix+"ModelInfer", &rawMsg{Data: mem.BufferSlice{mem.SliceBuffer(req)}}, &resp, grpc.Trailer(&trailer))
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.Data.Materialize(); string(got) != string(req) {
		t.Fatalf("response %q, want the request's bytes back unchanged", got)
	}
	if trailer.Get("upstream")[0] != "g1" || trailer.Get("saw-traceparent")[0] != "00-abc-def-01" {
		t.Fatalf("trailer %v", trailer)
	}

	var unknown []byte
	unknown = protowire.AppendTag(unknown, 1, protowire.BytesType)
	unknown = protowire.AppendString(unknown, "nope")
	err = conn.Invoke(context.Background(), inferencePrefix+"ModelInfer", &rawMsg{Data: mem.BufferSlice{mem.SliceBuffer(unknown)}}, &resp)
	if status.Code(err) != codes.NotFound {
		t.Fatalf("unknown model: %v, want NOT_FOUND", err)
	}
	err = conn.Invoke(context.Background(), inferencePrefix+"ServerLive", &rawMsg{}, &resp)
	if b := resp.Data.Materialize(); err != nil || string(b) != "\x08\x01" {
		t.Fatalf("ServerLive: %q %v", b, err)
	}
}
