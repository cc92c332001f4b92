package local

import (
	"context"
	"encoding/binary"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
)

// callMeta decodes a CALL body: u16 method_len | method | i64 timeout_us |
// u16 meta_count | meta_count × (u16 name_len | name | u32 value_len | value) | message.
func (f backendFrame) callMeta(t testing.TB) (method string, timeoutUS int64, meta [][2]string, msg []byte) {
	t.Helper()
	if f.kind != kindCall {
		t.Fatalf("frame kind %d, want CALL", f.kind)
	}
	b := f.body
	n := int(binary.LittleEndian.Uint16(b))
	method = string(b[2 : 2+n])
	timeoutUS = int64(binary.LittleEndian.Uint64(b[2+n:]))
	b = b[2+n+8:]
	count := int(binary.LittleEndian.Uint16(b))
	b = b[2:]
	for range count {
		n := int(binary.LittleEndian.Uint16(b))
		name := string(b[2 : 2+n])
		vn := int(binary.LittleEndian.Uint32(b[2+n:]))
		meta = append(meta, [2]string{name, string(b[2+n+4 : 2+n+4+vn])})
		b = b[2+n+4+vn:]
	}
	return method, timeoutUS, meta, b
}

func TestCallMetadata(t *testing.T) {
	h := newHarness(t, config{maxRecvBytes: 1 << 20})
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	long := strings.Repeat("k=v,", 20_000) // over 65535 bytes: value_len is a u32
	for _, tc := range []struct {
		name string
		md   []string // key, value pairs sent by the client
		want [][2]string
	}{
		{name: "none", md: nil, want: nil},
		{name: "unlisted keys only", md: []string{"authorization", "Bearer x", "x-data-bin", "\x00", "x-", "v"}, want: nil},
		{
			name: "the listed keys, lower-cased, in table order, then x- keys by name, others dropped",
			md: []string{
				"Baggage", "userId=alice", "X-User-Id", "u7", "TraceParent", tp, "x-b", "2", "x-a", "1",
				"tracestate", "a=1", "tracestate", "b=2", "grpc-trace-bin", "bin", "x-a", "3", "x-ids-bin", "\x01",
			},
			want: [][2]string{
				{"traceparent", tp}, {"tracestate", "a=1"}, {"tracestate", "b=2"}, {"baggage", "userId=alice"},
				{"x-a", "1"}, {"x-a", "3"}, {"x-b", "2"}, {"x-user-id", "u7"},
			},
		},
		{name: "an x- key only", md: []string{"x-user-id", "alice"}, want: [][2]string{{"x-user-id", "alice"}}},
		{name: "a long value", md: []string{"baggage", long}, want: [][2]string{{"baggage", long}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := metadata.AppendToOutgoingContext(context.Background(), tc.md...)
			req := []byte("\x0a\x01m")
			done := h.invoke(ctx, inferMethod, req)
			f := h.next()
			method, timeout, meta, msg := f.callMeta(t)
			if method != inferMethod || timeout != -1 || string(msg) != string(req) {
				t.Fatalf("CALL %q %d %q", method, timeout, msg)
			}
			if !slices.Equal(meta, tc.want) {
				t.Fatalf("metadata %q, want %q", meta, tc.want)
			}
			h.reply(f.id, codes.OK, nil)
			if r := wait(t, done); r.err != nil {
				t.Fatal(r.err)
			}
		})
	}
}

// The fast path of incomingMetadata is on: it reads the transport's map in place.
func TestIncomingKey(t *testing.T) {
	if incomingKey == nil {
		t.Fatal("grpc-go's incoming metadata key was not found: every call copies its metadata")
	}
	md := metadata.Pairs("x-a", "1")
	ctx := context.WithValue(metadata.NewIncomingContext(context.Background(), md), struct{ k int }{}, 1)
	if got := incomingMetadata(ctx); len(got["x-a"]) != 1 || &got["x-a"][0] != &md["x-a"][0] {
		t.Fatalf("incomingMetadata %v is not the context's map", got)
	}
	if incomingMetadata(context.Background()) != nil {
		t.Fatal("metadata without any")
	}
	if n := testing.AllocsPerRun(100, func() { callMetadata(ctx, "") }); n != 0 {
		// x-a is forwarded: the pairs are the only allocation allowed, and only then.
		if n > 1 {
			t.Fatalf("%v allocations with one x- key", n)
		}
	}
	none := metadata.NewIncomingContext(context.Background(), metadata.Pairs("user-agent", "u", "content-type", "c"))
	if n := testing.AllocsPerRun(100, func() { callMetadata(none, "") }); n != 0 {
		t.Fatalf("%v allocations for a call with nothing to forward", n)
	}
}

// BenchmarkCallMetadata is the metadata cost of a call in its handler (typical headers
// of a tritonclient call; nothing to forward, then an x-user-id).
func BenchmarkCallMetadata(b *testing.B) {
	for _, bc := range []struct {
		name string
		md   metadata.MD
	}{
		{"none", metadata.Pairs("content-type", "application/grpc", "user-agent", "grpc-python/1.7",
			"grpc-accept-encoding", "identity,deflate,gzip", ":authority", "127.0.0.1:8001")},
		{"x-user-id", metadata.Pairs("content-type", "application/grpc", "user-agent", "grpc-python/1.7",
			"grpc-accept-encoding", "identity,deflate,gzip", ":authority", "127.0.0.1:8001", "x-user-id", "alice")},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ctx := metadata.NewIncomingContext(context.Background(), bc.md)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := callMetadata(ctx, ""); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
