package local

import (
	"context"
	"encoding/binary"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/inferbridge/inferbridge/gateway/internal/frontend"
)

const streamMethod = "/streamtest.Streamer/Chat"

// streamDescriptors adds a file with one bidi-streaming method to testDescriptors.
func streamDescriptors(t testing.TB) []byte {
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(testDescriptors(t), &set); err != nil {
		t.Fatal(err)
	}
	set.File = append(set.File, &descriptorpb.FileDescriptorProto{
		Name:        proto.String("stream.proto"),
		Package:     proto.String("streamtest"),
		Syntax:      proto.String("proto3"),
		MessageType: []*descriptorpb.DescriptorProto{{Name: proto.String("Msg")}},
		Service: []*descriptorpb.ServiceDescriptorProto{{
			Name: proto.String("Streamer"),
			Method: []*descriptorpb.MethodDescriptorProto{{
				Name:            proto.String("Chat"),
				InputType:       proto.String(".streamtest.Msg"),
				OutputType:      proto.String(".streamtest.Msg"),
				ClientStreaming: proto.Bool(true),
				ServerStreaming: proto.Bool(true),
			}},
		}},
	})
	b, err := proto.Marshal(&set)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (h *harness) openStream(ctx context.Context) grpc.ClientStream {
	h.t.Helper()
	cs, err := h.cc.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, streamMethod)
	if err != nil {
		h.t.Fatal(err)
	}
	return cs
}

func sendRaw(t *testing.T, cs grpc.ClientStream, b []byte) {
	t.Helper()
	if err := cs.SendMsg(&frontend.RawMsg{Data: mem.BufferSlice{mem.SliceBuffer(b)}}); err != nil {
		t.Fatal(err)
	}
}

func recvRaw(cs grpc.ClientStream) ([]byte, error) {
	var m frontend.RawMsg
	err := cs.RecvMsg(&m)
	b := m.Data.Materialize()
	m.Data.Free()
	return b, err
}

// nextKind returns the next frame, which must be of kind.
func (h *harness) nextKind(kind byte) backendFrame {
	h.t.Helper()
	f := h.next()
	if f.kind != kind {
		h.t.Fatalf("got frame kind %d (id %d, body %q), want %d", f.kind, f.id, f.body, kind)
	}
	return f
}

// openBody decodes a STREAM-OPEN body, laid out as a CALL's.
func openBody(t testing.TB, f backendFrame) (method string, timeoutUS int64, meta [][2]string, msg []byte) {
	t.Helper()
	f.kind = kindCall
	return f.callMeta(t)
}

func ack(n uint32) []byte { return binary.LittleEndian.AppendUint32(nil, n) }

// TestStreamRoundTrip: requests go out as STREAM-MSG in order, responses come back in
// order, each acknowledged once written; the half-close is STREAM-CLOSE and STREAM-END
// gives the status.
func TestStreamRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  []byte
		want codes.Code
		msg  string
	}{
		{"ok", []byte{0}, codes.OK, ""},
		{"error", append([]byte{byte(codes.NotFound)}, "no such model"...), codes.NotFound, "no such model"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarnessWith(t, config{maxRecvBytes: 1 << 20}, streamDescriptors(t))
			cs := h.openStream(context.Background())
			open := h.nextKind(kindStreamOpen)
			method, timeoutUS, meta, rest := openBody(t, open)
			if method != streamMethod || timeoutUS != -1 || len(meta) != 0 || len(rest) != 0 {
				t.Fatalf("STREAM-OPEN: %q %d %v %q", method, timeoutUS, meta, rest)
			}
			for _, req := range []string{"a", "bb", ""} {
				sendRaw(t, cs, []byte(req))
				if f := h.nextKind(kindStreamMsg); f.id != open.id || string(f.body) != req {
					t.Fatalf("STREAM-MSG %d %q, want %d %q", f.id, f.body, open.id, req)
				}
			}
			h.send(kindStreamAck, open.id, ack(3))
			for _, resp := range []string{"x", "yy"} {
				h.send(kindStreamMsg, open.id, []byte(resp))
				got, err := recvRaw(cs)
				if err != nil || string(got) != resp {
					t.Fatalf("response %q %v, want %q", got, err, resp)
				}
				if f := h.nextKind(kindStreamAck); f.id != open.id || binary.LittleEndian.Uint32(f.body) != 1 {
					t.Fatalf("STREAM-ACK %d %v", f.id, f.body)
				}
			}
			if err := cs.CloseSend(); err != nil {
				t.Fatal(err)
			}
			if f := h.nextKind(kindStreamClose); f.id != open.id || len(f.body) != 0 {
				t.Fatalf("STREAM-CLOSE %d %q", f.id, f.body)
			}
			h.send(kindStreamEnd, open.id, tc.end)
			_, err := recvRaw(cs)
			if tc.want == codes.OK {
				if err != io.EOF {
					t.Fatalf("after STREAM-END 0: %v, want EOF", err)
				}
			} else {
				wantCode(t, err, tc.want, tc.msg)
			}
			// A unary call still works beside it, and the stream's late frames are ignored.
			h.send(kindStreamMsg, open.id, []byte("late"))
			call := h.invoke(context.Background(), inferMethod, []byte("q"))
			f := h.nextKind(kindCall)
			h.reply(f.id, codes.OK, []byte("r"))
			if r := wait(t, call); r.err != nil || string(r.resp) != "r" {
				t.Fatalf("unary beside a stream: %q %v", r.resp, r.err)
			}
		})
	}
}

// TestStreamWindow: no more than streamWindow requests are forwarded unacknowledged.
func TestStreamWindow(t *testing.T) {
	h := newHarnessWith(t, config{maxRecvBytes: 1 << 20}, streamDescriptors(t))
	cs := h.openStream(context.Background())
	open := h.nextKind(kindStreamOpen)
	go func() {
		for i := 0; i < streamWindow+8; i++ {
			if cs.SendMsg(&frontend.RawMsg{Data: mem.BufferSlice{mem.SliceBuffer([]byte{byte(i)})}}) != nil {
				return
			}
		}
	}()
	for i := 0; i < streamWindow; i++ {
		if f := h.nextKind(kindStreamMsg); f.body[0] != byte(i) {
			t.Fatalf("message %d: %v", i, f.body)
		}
	}
	select {
	case f := <-h.frames:
		t.Fatalf("frame kind %d beyond the window", f.kind)
	case <-time.After(200 * time.Millisecond):
	}
	h.send(kindStreamAck, open.id, ack(8))
	for i := streamWindow; i < streamWindow+8; i++ {
		if f := h.nextKind(kindStreamMsg); f.body[0] != byte(i) {
			t.Fatalf("message %d: %v", i, f.body)
		}
	}
}

// TestStreamCancelAndDeadline: a cancelled client and a passed deadline both end the
// stream with CANCEL to the backend.
func TestStreamCancelAndDeadline(t *testing.T) {
	for _, tc := range []struct {
		name     string
		deadline bool
		want     codes.Code
	}{
		{"cancel", false, codes.Canceled},
		{"deadline", true, codes.DeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarnessWith(t, config{maxRecvBytes: 1 << 20}, streamDescriptors(t))
			ctx, cancel := context.WithCancel(context.Background())
			if tc.deadline {
				ctx, cancel = context.WithTimeout(context.Background(), 300*time.Millisecond)
			}
			defer cancel()
			cs := h.openStream(ctx)
			open := h.nextKind(kindStreamOpen)
			if _, timeoutUS, _, _ := openBody(t, open); (timeoutUS > 0) != tc.deadline {
				t.Fatalf("timeout_us %d", timeoutUS)
			}
			sendRaw(t, cs, []byte("a"))
			h.nextKind(kindStreamMsg)
			if !tc.deadline {
				cancel()
			}
			if f := h.nextKind(kindCancel); f.id != open.id {
				t.Fatalf("CANCEL for %d, want %d", f.id, open.id)
			}
			_, err := recvRaw(cs)
			wantCode(t, err, tc.want, "")
			h.send(kindStreamEnd, open.id, []byte{0}) // crosses the CANCEL: ignored
		})
	}
}

// TestStreamCountsOnce: a stream is one request in requests_total, under its method.
func TestStreamCountsOnce(t *testing.T) {
	h := newHarnessWith(t, config{maxRecvBytes: 1 << 20}, streamDescriptors(t))
	cs := h.openStream(context.Background())
	open := h.nextKind(kindStreamOpen)
	for i := 0; i < 3; i++ {
		sendRaw(t, cs, []byte("a"))
		h.nextKind(kindStreamMsg)
	}
	cs.CloseSend()
	h.nextKind(kindStreamClose)
	h.send(kindStreamEnd, open.id, []byte{0})
	if _, err := recvRaw(cs); err != io.EOF {
		t.Fatal(err)
	}
	text, err := h.g.metrics.appendText(nil)
	if err != nil {
		t.Fatal(err)
	}
	want := `inferbridge_frontend_requests_total{code="OK",protocol="grpc",route="` + streamMethod + `"} 1`
	if !containsLine(string(text), want) {
		t.Fatalf("metrics lack %s:\n%s", want, text)
	}
}

func containsLine(text, line string) bool {
	for len(text) > 0 {
		i := 0
		for i < len(text) && text[i] != '\n' {
			i++
		}
		if text[:i] == line {
			return true
		}
		if i == len(text) {
			break
		}
		text = text[i+1:]
	}
	return false
}

// TestStreamEndsEarly: the backend may end a stream before the client half-closes (an
// unknown method); the client gets the status and its later messages are
// dropped or ignored.
func TestStreamEndsEarly(t *testing.T) {
	h := newHarnessWith(t, config{maxRecvBytes: 1 << 20}, streamDescriptors(t))
	cs := h.openStream(context.Background())
	open := h.nextKind(kindStreamOpen)
	h.send(kindStreamEnd, open.id, append([]byte{byte(codes.Unimplemented)}, "unknown streaming method"...))
	_, err := recvRaw(cs)
	wantCode(t, err, codes.Unimplemented, "unknown streaming method")
	for i := 0; i < 3; i++ {
		if cs.SendMsg(&frontend.RawMsg{Data: mem.BufferSlice{mem.SliceBuffer([]byte("x"))}}) != nil {
			break
		}
	}
	// Whatever of them crossed the END is ignored by the backend; the gateway serves on.
	call := h.invoke(context.Background(), inferMethod, []byte("q"))
	for f := h.next(); ; f = h.next() {
		if f.kind == kindCall {
			h.reply(f.id, codes.OK, []byte("r"))
			break
		}
	}
	if r := wait(t, call); r.err != nil || string(r.resp) != "r" {
		t.Fatalf("unary after an ended stream: %q %v", r.resp, r.err)
	}
}
