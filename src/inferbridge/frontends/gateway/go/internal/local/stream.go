package local

import (
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	protov2 "google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/inferbridge/inferbridge/gateway/internal/frontend"
)

// Streaming calls (ModelStreamInfer): every message of a forwarded streaming method
// travels as its own STREAM-MSG frame, in both directions, under a window of
// streamWindow unacknowledged messages per stream and direction (see the package
// comment). The window is the back-pressure: a client that sends faster than the
// backend takes requests stops being read (and gRPC flow control holds it back), and a
// backend that answers faster than the client reads waits for the gateway's acks.

// streamWindow is the most STREAM-MSG frames of one stream that either side may have
// sent and not yet seen acknowledged by STREAM-ACK.
const streamWindow = 32

// stream is the gateway's state of one forwarded streaming call.
type stream struct {
	in     chan streamEvent // backend -> client, in order: STREAM-MSGs, then one STREAM-END
	credit chan struct{}    // one token per request message forwarded and not yet acked
}

// streamEvent is a STREAM-MSG (end false) or the STREAM-END handed by the reader.
type streamEvent struct {
	data mem.Buffer // the response message (nil when empty)
	end  bool
	code codes.Code
	msg  string
}

// streams holds the streams awaiting their STREAM-END, and the methods that stream.
type streams struct {
	registry[stream]
	methods map[string]bool // full names of the forwarded methods that stream
}

// streamingMethods lists the full names of the client- or server-streaming methods of
// the services in set (a serialized FileDescriptorSet).
func streamingMethods(set []byte) (map[string]bool, error) {
	var fds descriptorpb.FileDescriptorSet
	if err := protov2.Unmarshal(set, &fds); err != nil {
		return nil, fmt.Errorf("backend: DESCRIPTORS: %w", err)
	}
	files, err := protodesc.NewFiles(&fds)
	if err != nil {
		return nil, fmt.Errorf("backend: DESCRIPTORS: %w", err)
	}
	methods := map[string]bool{}
	files.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		for i := 0; i < fd.Services().Len(); i++ {
			sd := fd.Services().Get(i)
			for j := 0; j < sd.Methods().Len(); j++ {
				if m := sd.Methods().Get(j); m.IsStreamingClient() || m.IsStreamingServer() {
					methods["/"+string(sd.FullName())+"/"+string(m.Name())] = true
				}
			}
		}
		return true
	})
	return methods, nil
}

// forwardStream serves one call of a streaming method: STREAM-OPEN, then each request
// as STREAM-MSG (STREAM-CLOSE when the client half-closes), each STREAM-MSG from the
// backend as a response, and the STREAM-END as the call's status. A client that
// cancels or whose deadline passes ends the call at once and the backend gets CANCEL.
func (g *gateway) forwardStream(ss grpc.ServerStream, method string) error {
	ctx := ss.Context()
	principal, err := g.fe.AuthenticateGRPC(ctx, method)
	if err != nil {
		return err
	}
	meta, err := callMetadata(ctx, principal)
	if err != nil {
		return err
	}
	timeoutUS := int64(-1)
	if deadline, ok := ctx.Deadline(); ok {
		if timeoutUS = int64(time.Until(deadline) / time.Microsecond); timeoutUS <= 0 {
			return status.Error(codes.DeadlineExceeded, "inferbridge: deadline exceeded before the call was forwarded")
		}
	}
	st := &stream{in: make(chan streamEvent, streamWindow+1), credit: make(chan struct{}, streamWindow)}
	id := g.nextID.Add(1)
	g.streams.add(id, st)
	if !g.enqueue(frame{kind: kindStreamOpen, id: id, method: method, timeoutUS: timeoutUS, meta: meta}, nil) {
		g.streams.remove(id)
		return errBackendGone
	}
	stop := make(chan struct{})
	defer close(stop)
	failed := make(chan error, 1)
	go g.pumpRequests(ss, method, id, st, stop, failed)
	answerBy, stopTimer := answerBefore(ctx)
	defer stopTimer()

	pm := &g.metrics.proto[protoGRPC]
	for {
		select {
		case ev := <-st.in:
			if ev.end {
				if ev.code != codes.OK {
					return status.Error(ev.code, ev.msg)
				}
				return nil
			}
			var resp frontend.RawMsg
			n := 0
			if ev.data != nil {
				n = ev.data.Len()
				resp.Data = mem.BufferSlice{ev.data} // grpc-go frees it once sent
			}
			if err := ss.SendMsg(&resp); err != nil {
				g.cancelStream(id, st)
				return err
			}
			pm.respBytes.Add(float64(n))
			if !g.enqueue(frame{kind: kindStreamAck, id: id, count: 1}, nil) {
				return errBackendGone
			}
		case err := <-failed:
			g.cancelStream(id, st)
			if r, ok := err.(refusedMsg); ok { // a message refused by auth
				return r.error
			}
			if ctx.Err() != nil { // the receive failed because the call ended: say why
				return status.FromContextError(ctx.Err()).Err()
			}
			return err
		case <-answerBy:
			g.cancelStream(id, st)
			return errDeadline
		case <-ctx.Done():
			g.cancelStream(id, st)
			return status.FromContextError(ctx.Err()).Err()
		case <-g.dead:
			return errBackendGone
		}
	}
}

// refusedMsg is the refusal of a stream's message by the front end's authority.
type refusedMsg struct{ error }

// pumpRequests forwards the client's messages while the window allows, then
// STREAM-CLOSE at the client's half-close. A receive error (the client went away, or a
// message over --max-recv-bytes), or a message that auth refuses (each is checked on
// its own model), is handed to failed. It stops when stop is closed.
func (g *gateway) pumpRequests(ss grpc.ServerStream, method string, id uint64, st *stream, stop <-chan struct{}, failed chan<- error) {
	pm := &g.metrics.proto[protoGRPC]
	for {
		var m frontend.RawMsg
		err := ss.RecvMsg(&m)
		if err == io.EOF {
			g.enqueue(frame{kind: kindStreamClose, id: id}, stop)
			return
		}
		if err != nil {
			if status.Code(err) == codes.ResourceExhausted { // over --max-recv-bytes
				g.metrics.reject(protoGRPC, nil, reasonTooLarge)
			}
			failed <- err
			return
		}
		pm.reqBytes.Add(float64(m.Data.Len()))
		if g.authActive {
			if _, err := g.checkCall(ss.Context(), method, m.Data); err != nil {
				m.Data.Free()
				failed <- refusedMsg{err}
				return
			}
		}
		select {
		case st.credit <- struct{}{}:
		case <-stop:
			m.Data.Free()
			return
		case <-g.dead:
			m.Data.Free()
			return
		}
		if !g.enqueue(frame{kind: kindStreamMsg, id: id, body: m.Data}, stop) {
			m.Data.Free()
			return
		}
	}
}

// enqueue hands f to the writer; false when the backend is gone or stop closed first.
func (g *gateway) enqueue(f frame, stop <-chan struct{}) bool {
	select {
	case g.out <- f:
		return true
	case <-g.dead:
		return false
	case <-stop:
		return false
	}
}

// cancelStream ends a stream the client no longer waits for: CANCEL to the backend when
// it had not ended it, and the responses already queued are freed.
func (g *gateway) cancelStream(id uint64, st *stream) {
	if g.streams.remove(id) != nil {
		g.enqueue(frame{kind: kindCancel, id: id}, nil)
	}
	for {
		select {
		case ev := <-st.in:
			if ev.data != nil {
				ev.data.Free()
			}
		default:
			return
		}
	}
}

// readStreamFrame handles a STREAM-MSG, STREAM-END or STREAM-ACK of n body bytes.
func (g *gateway) readStreamFrame(kind byte, id uint64, n int) error {
	st := g.streams.get(id)
	if st == nil { // cancelled, or never ours: ignore
		_, err := g.br.Discard(n)
		return err
	}
	switch kind {
	case kindStreamMsg:
		r, err := g.readReply(codes.OK, n)
		if err != nil {
			return err
		}
		select {
		case st.in <- streamEvent{data: r.data}:
		default:
			if r.data != nil {
				r.data.Free()
			}
			return fmt.Errorf("backend: stream %d sent more than %d unacknowledged messages", id, streamWindow)
		}
	case kindStreamEnd:
		if n < 1 {
			return fmt.Errorf("backend: STREAM-END %d has no code", id)
		}
		body, err := g.readBody(n)
		if err != nil {
			return err
		}
		if g.streams.remove(id) != nil {
			st.in <- streamEvent{end: true, code: codes.Code(body[0]), msg: string(body[1:])} // room by the window
		}
	case kindStreamAck:
		body, err := g.readBody(n)
		if err != nil || len(body) != 4 {
			return fmt.Errorf("backend: STREAM-ACK %d: want a 4-byte body (%v)", id, err)
		}
		for k := leU32(body); k > 0; k-- {
			select {
			case <-st.credit:
			default:
				return nil // more than was outstanding: nothing left to release
			}
		}
	}
	return nil
}

func leU32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}
