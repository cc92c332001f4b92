package local

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding/gzip"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	v1reflectiongrpc "google.golang.org/grpc/reflection/grpc_reflection_v1"
	v1reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	v1alphareflectiongrpc "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	v1alphareflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/inferbridge/inferbridge/gateway/internal/frontend"
)

const inferMethod = "/inference.GRPCInferenceService/ModelInfer"

// testDescriptors is a FileDescriptorSet shaped like the real one: two files, two
// services, no imports.
func testDescriptors(t testing.TB) []byte {
	file := func(name, pkg, service, method string) *descriptorpb.FileDescriptorProto {
		return &descriptorpb.FileDescriptorProto{
			Name:    proto.String(name),
			Package: proto.String(pkg),
			Syntax:  proto.String("proto3"),
			MessageType: []*descriptorpb.DescriptorProto{
				{Name: proto.String(method + "Request")},
				{Name: proto.String(method + "Response")},
			},
			Service: []*descriptorpb.ServiceDescriptorProto{{
				Name: proto.String(service),
				Method: []*descriptorpb.MethodDescriptorProto{{
					Name:       proto.String(method),
					InputType:  proto.String("." + pkg + "." + method + "Request"),
					OutputType: proto.String("." + pkg + "." + method + "Response"),
				}},
			}},
		}
	}
	b, err := proto.Marshal(&descriptorpb.FileDescriptorSet{File: []*descriptorpb.FileDescriptorProto{
		file("grpc_service.proto", "inference", "GRPCInferenceService", "ModelInfer"),
		file("ai_service.proto", "ai", "AIService", "Chat"),
	}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// socketpair returns the two ends of a connected AF_UNIX stream socket pair as files.
func socketpair(t testing.TB) (*os.File, *os.File) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return os.NewFile(uintptr(fds[0]), "gateway"), os.NewFile(uintptr(fds[1]), "backend")
}

func fileConn(t testing.TB, f *os.File) net.Conn {
	c, err := net.FileConn(f)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	return c
}

// backendFrame is one frame as the fake backend sees it.
type backendFrame struct {
	kind byte
	id   uint64
	body []byte
}

// call decodes a CALL body (callMeta gives its metadata too).
func (f backendFrame) call(t testing.TB) (method string, timeoutUS int64, msg []byte) {
	t.Helper()
	method, timeoutUS, _, msg = f.callMeta(t)
	return method, timeoutUS, msg
}

func writeBackendFrame(w io.Writer, kind byte, id uint64, body []byte) error {
	b := make([]byte, frameHeader, frameHeader+len(body))
	binary.LittleEndian.PutUint32(b, uint32(9+len(body)))
	b[4] = kind
	binary.LittleEndian.PutUint64(b[5:], id)
	_, err := w.Write(append(b, body...))
	return err
}

func readBackendFrame(r io.Reader) (backendFrame, error) {
	var hdr [frameHeader]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return backendFrame{}, err
	}
	f := backendFrame{kind: hdr[4], id: binary.LittleEndian.Uint64(hdr[5:])}
	f.body = make([]byte, binary.LittleEndian.Uint32(hdr[:])-9)
	_, err := io.ReadFull(r, f.body)
	return f, err
}

// harness runs the gateway in-process between a fake backend and a real client.
type harness struct {
	t       *testing.T
	backend net.Conn // the Python side
	frames  chan backendFrame
	cc      *grpc.ClientConn
	runErr  chan error
	httpURL string // http://HOST:PORT of the HTTP listener
	g       *gateway
}

func newHarness(t *testing.T, cfg config) *harness {
	return newHarnessWith(t, cfg, testDescriptors(t))
}

// newHarnessWith is newHarness with the DESCRIPTORS frame's body given.
func newHarnessWith(t *testing.T, cfg config, descriptors []byte) *harness {
	return newHarnessTLS(t, cfg, descriptors, nil)
}

// newHarnessTLS is newHarnessWith whose gRPC client speaks TLS with clientTLS (when
// cfg.tls is set; httpURL is then https://).
func newHarnessTLS(t *testing.T, cfg config, descriptors []byte, clientTLS *tls.Config) *harness {
	gwFile, beFile := socketpair(t)
	h := &harness{
		t:       t,
		backend: fileConn(t, beFile),
		frames:  make(chan backendFrame, 100),
		runErr:  make(chan error, 1),
	}
	gwConn := fileConn(t, gwFile)
	t.Cleanup(func() { h.backend.Close(); gwConn.Close() })
	h.send(kindDescriptors, 0, descriptors)
	g, err := newGateway(gwConn, cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.g = g
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.httpURL = "http://" + httpLis.Addr().String()
	creds := insecure.NewCredentials()
	if cfg.tls != nil {
		h.httpURL = "https://" + httpLis.Addr().String()
		creds = credentials.NewTLS(clientTLS)
	}
	go func() { h.runErr <- g.run(lis, httpLis) }()
	go func() {
		defer close(h.frames)
		br := bufio.NewReader(h.backend)
		for {
			f, err := readBackendFrame(br)
			if err != nil {
				return
			}
			h.frames <- f
		}
	}()
	h.cc, err = grpc.NewClient(lis.Addr().String(),
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(frontend.Codec{})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.cc.Close() })
	return h
}

func (h *harness) send(kind byte, id uint64, body []byte) {
	h.t.Helper()
	if err := writeBackendFrame(h.backend, kind, id, body); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) reply(id uint64, code codes.Code, body []byte) {
	h.t.Helper()
	h.send(kindReply, id, append([]byte{byte(code)}, body...))
}

// next returns the next frame the gateway sent.
func (h *harness) next() backendFrame {
	h.t.Helper()
	select {
	case f, ok := <-h.frames:
		if !ok {
			h.t.Fatal("backend connection closed")
		}
		return f
	case <-time.After(10 * time.Second):
		h.t.Fatal("no frame from the gateway")
	}
	return backendFrame{}
}

// invoke calls method with raw request bytes in a goroutine; the result arrives on
// the returned channel.
func (h *harness) invoke(ctx context.Context, method string, req []byte, opts ...grpc.CallOption) <-chan result {
	done := make(chan result, 1)
	go func() {
		in := &frontend.RawMsg{Data: mem.BufferSlice{mem.SliceBuffer(req)}}
		var out frontend.RawMsg
		err := h.cc.Invoke(ctx, method, in, &out, opts...)
		done <- result{out.Data.Materialize(), err}
		out.Data.Free()
	}()
	return done
}

type result struct {
	resp []byte
	err  error
}

func wait(t *testing.T, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("call did not finish")
	}
	return result{}
}

func wantCode(t *testing.T, err error, code codes.Code, msgPart string) {
	t.Helper()
	if s := status.Convert(err); s.Code() != code || !strings.Contains(s.Message(), msgPart) {
		t.Fatalf("got %v, want code %v with message containing %q", err, code, msgPart)
	}
}

func TestUnaryRoundTrip(t *testing.T) {
	h := newHarness(t, config{maxRecvBytes: 1 << 20})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req := []byte("\x0a\x01x request bytes")
	done := h.invoke(ctx, inferMethod, req)
	f := h.next()
	method, timeout, msg := f.call(t)
	if method != inferMethod || !bytes.Equal(msg, req) || f.id == 0 {
		t.Fatalf("CALL %d %q %q, want %q %q", f.id, method, msg, inferMethod, req)
	}
	if timeout <= 0 || timeout > 5e6 {
		t.Fatalf("timeout_us %d, want in (0, 5e6]", timeout)
	}
	h.reply(f.id, codes.OK, []byte("response bytes"))
	if r := wait(t, done); r.err != nil || string(r.resp) != "response bytes" {
		t.Fatalf("got %q, %v", r.resp, r.err)
	}

	// No deadline, an empty request, an empty response, gzip, any method name.
	done = h.invoke(context.Background(), "/ai.AIService/Chat", nil, grpc.UseCompressor(gzip.Name))
	f2 := h.next()
	method, timeout, msg = f2.call(t)
	if method != "/ai.AIService/Chat" || timeout != -1 || len(msg) != 0 || f2.id == f.id {
		t.Fatalf("CALL %d %q %d %q", f2.id, method, timeout, msg)
	}
	h.reply(f2.id, codes.OK, nil)
	if r := wait(t, done); r.err != nil || len(r.resp) != 0 {
		t.Fatalf("got %q, %v", r.resp, r.err)
	}

	// A large gzip-compressed message arrives decompressed and whole.
	big := bytes.Repeat([]byte("0123456789"), 50_000)
	done = h.invoke(context.Background(), inferMethod, big, grpc.UseCompressor(gzip.Name))
	f3 := h.next()
	if _, _, msg = f3.call(t); !bytes.Equal(msg, big) {
		t.Fatalf("large message: got %d bytes, want %d", len(msg), len(big))
	}
	h.reply(f3.id, codes.OK, big)
	if r := wait(t, done); r.err != nil || !bytes.Equal(r.resp, big) {
		t.Fatalf("large response: got %d bytes, %v", len(r.resp), r.err)
	}
}

func TestErrorReply(t *testing.T) {
	h := newHarness(t, config{maxRecvBytes: 1 << 20})
	done := h.invoke(context.Background(), inferMethod, []byte("x"))
	f := h.next()
	h.reply(f.id, codes.NotFound, []byte("Request for unknown model: 'x' — ünïcode"))
	r := wait(t, done)
	if s := status.Convert(r.err); s.Code() != codes.NotFound || s.Message() != "Request for unknown model: 'x' — ünïcode" {
		t.Fatalf("got %v", r.err)
	}
	// An unknown id is ignored.
	h.reply(12345, codes.OK, []byte("stray"))
	done = h.invoke(context.Background(), inferMethod, []byte("y"))
	f = h.next()
	h.reply(f.id, codes.Unimplemented, []byte("unknown method"))
	wantCode(t, wait(t, done).err, codes.Unimplemented, "unknown method")
}

func TestCancelAndDeadline(t *testing.T) {
	h := newHarness(t, config{maxRecvBytes: 1 << 20})

	ctx, cancel := context.WithCancel(context.Background())
	done := h.invoke(ctx, inferMethod, []byte("a"))
	call := h.next()
	cancel()
	if c := h.next(); c.kind != kindCancel || c.id != call.id || len(c.body) != 0 {
		t.Fatalf("got frame %d id %d, want CANCEL of %d", c.kind, c.id, call.id)
	}
	wantCode(t, wait(t, done).err, codes.Canceled, "")

	ctx, cancel = context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	done = h.invoke(ctx, inferMethod, []byte("b"))
	call2 := h.next()
	if c := h.next(); c.kind != kindCancel || c.id != call2.id {
		t.Fatalf("got frame %d id %d, want CANCEL of %d", c.kind, c.id, call2.id)
	}
	wantCode(t, wait(t, done).err, codes.DeadlineExceeded, "")

	// Late REPLYs are ignored, and the next call gets its own.
	h.reply(call.id, codes.OK, []byte("late"))
	h.reply(call2.id, codes.OK, []byte("late"))
	done = h.invoke(context.Background(), inferMethod, []byte("c"))
	f := h.next()
	h.reply(f.id, codes.OK, []byte("mine"))
	if r := wait(t, done); r.err != nil || string(r.resp) != "mine" {
		t.Fatalf("got %q, %v", r.resp, r.err)
	}
}

func TestConcurrencyLimit(t *testing.T) {
	h := newHarness(t, config{maxRecvBytes: 1 << 20, maxConcurrentRPCs: 2})
	d1 := h.invoke(context.Background(), inferMethod, []byte("1"))
	d2 := h.invoke(context.Background(), inferMethod, []byte("2"))
	f1, f2 := h.next(), h.next()
	wantCode(t, wait(t, h.invoke(context.Background(), inferMethod, []byte("3"))).err,
		codes.ResourceExhausted, "too many concurrent RPCs (limit 2)")
	h.reply(f1.id, codes.OK, nil)
	h.reply(f2.id, codes.OK, nil)
	if wait(t, d1).err != nil || wait(t, d2).err != nil {
		t.Fatal("calls within the limit failed")
	}
	// The slots are released.
	d := h.invoke(context.Background(), inferMethod, []byte("4"))
	h.reply(h.next().id, codes.OK, nil)
	if r := wait(t, d); r.err != nil {
		t.Fatal(r.err)
	}
}

func TestOversizeMessage(t *testing.T) {
	h := newHarness(t, config{maxRecvBytes: 1000})
	wantCode(t, wait(t, h.invoke(context.Background(), inferMethod, make([]byte, 1001))).err,
		codes.ResourceExhausted, "larger than max")
	// Nothing was forwarded: the next frame is the next call.
	d := h.invoke(context.Background(), inferMethod, make([]byte, 1000))
	f := h.next()
	if _, _, msg := f.call(t); len(msg) != 1000 {
		t.Fatalf("forwarded %d bytes", len(msg))
	}
	h.reply(f.id, codes.OK, nil)
	if r := wait(t, d); r.err != nil {
		t.Fatal(r.err)
	}
}

func TestHealth(t *testing.T) {
	h := newHarness(t, config{maxRecvBytes: 1 << 20})
	client := healthpb.NewHealthClient(h.cc)
	check := func(service string) healthpb.HealthCheckResponse_ServingStatus {
		t.Helper()
		resp, err := client.Check(context.Background(), &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			t.Fatal(err)
		}
		return resp.Status
	}
	waitFor := func(service string, want healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); check(service) != want; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("health of %q: got %v, want %v", service, check(service), want)
			}
		}
	}
	if s := check(""); s != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("initial health %v, want NOT_SERVING", s)
	}
	watch, err := client.Watch(context.Background(), &healthpb.HealthCheckRequest{Service: ""})
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := watch.Recv(); err != nil || resp.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("watch: %v %v", resp, err)
	}
	h.send(kindHealth, 0, []byte{1})
	h.send(kindHealth, 0, append([]byte{1}, "inference.GRPCInferenceService"...))
	waitFor("", healthpb.HealthCheckResponse_SERVING)
	waitFor("inference.GRPCInferenceService", healthpb.HealthCheckResponse_SERVING)
	if resp, err := watch.Recv(); err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("watch: %v %v", resp, err)
	}
	h.send(kindHealth, 0, []byte{2})
	waitFor("", healthpb.HealthCheckResponse_NOT_SERVING)
}

func TestReflection(t *testing.T) {
	h := newHarness(t, config{maxRecvBytes: 1 << 20})
	wantServices := []string{"ai.AIService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
		"grpc.reflection.v1alpha.ServerReflection", "inference.GRPCInferenceService"}

	stream, err := v1reflectiongrpc.NewServerReflectionClient(h.cc).ServerReflectionInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ask := func(req *v1reflectionpb.ServerReflectionRequest) *v1reflectionpb.ServerReflectionResponse {
		t.Helper()
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if e := resp.GetErrorResponse(); e != nil {
			t.Fatalf("reflection error %v", e)
		}
		return resp
	}
	var got []string
	for _, s := range ask(&v1reflectionpb.ServerReflectionRequest{
		MessageRequest: &v1reflectionpb.ServerReflectionRequest_ListServices{}}).GetListServicesResponse().GetService() {
		got = append(got, s.Name)
	}
	if strings.Join(got, " ") != strings.Join(wantServices, " ") {
		t.Fatalf("services %v, want %v", got, wantServices)
	}
	for symbol, file := range map[string]string{
		"inference.GRPCInferenceService": "grpc_service.proto",
		"ai.AIService.Chat":              "ai_service.proto",
		"grpc.health.v1.Health":          "grpc/health/v1/health.proto",
	} {
		resp := ask(&v1reflectionpb.ServerReflectionRequest{
			MessageRequest: &v1reflectionpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: symbol}})
		fds := resp.GetFileDescriptorResponse().GetFileDescriptorProto()
		var fd descriptorpb.FileDescriptorProto
		if len(fds) == 0 || proto.Unmarshal(fds[0], &fd) != nil || fd.GetName() != file {
			t.Fatalf("file containing %s: got %q, want %s", symbol, fd.GetName(), file)
		}
	}
	resp := ask(&v1reflectionpb.ServerReflectionRequest{
		MessageRequest: &v1reflectionpb.ServerReflectionRequest_FileByFilename{FileByFilename: "grpc_service.proto"}})
	if len(resp.GetFileDescriptorResponse().GetFileDescriptorProto()) != 1 {
		t.Fatalf("file by name: %v", resp)
	}

	// v1alpha lists the same.
	alpha, err := v1alphareflectiongrpc.NewServerReflectionClient(h.cc).ServerReflectionInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := alpha.Send(&v1alphareflectionpb.ServerReflectionRequest{
		MessageRequest: &v1alphareflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	aresp, err := alpha.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if n := len(aresp.GetListServicesResponse().GetService()); n != len(wantServices) {
		t.Fatalf("v1alpha lists %d services, want %d", n, len(wantServices))
	}
}

func TestShutdownDrains(t *testing.T) {
	h := newHarness(t, config{maxRecvBytes: 1 << 20})
	h.send(kindHealth, 0, []byte{1})
	done := h.invoke(context.Background(), inferMethod, []byte("in flight"))
	f := h.next()
	h.send(kindShutdown, 0, binary.LittleEndian.AppendUint32(nil, 10_000))

	// Health turns NOT_SERVING while the call is still in flight.
	client := healthpb.NewHealthClient(h.cc)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		resp, err := client.Check(context.Background(), &healthpb.HealthCheckRequest{})
		if err != nil || resp.Status == healthpb.HealthCheckResponse_NOT_SERVING {
			break // NOT_SERVING, or already refusing new streams
		}
		if time.Now().After(deadline) {
			t.Fatal("health still SERVING during the drain")
		}
	}
	select {
	case err := <-h.runErr:
		t.Fatalf("run returned %v before the call in flight finished", err)
	case <-time.After(100 * time.Millisecond):
	}
	h.reply(f.id, codes.OK, []byte("done"))
	if r := wait(t, done); r.err != nil || string(r.resp) != "done" {
		t.Fatalf("in-flight call: %q, %v", r.resp, r.err)
	}
	select {
	case err := <-h.runErr:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after the drain")
	}
}

func TestShutdownGraceExpires(t *testing.T) {
	h := newHarness(t, config{maxRecvBytes: 1 << 20})
	done := h.invoke(context.Background(), inferMethod, []byte("stuck"))
	h.next()
	h.send(kindShutdown, 0, binary.LittleEndian.AppendUint32(nil, 100))
	select {
	case err := <-h.runErr:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after the grace period")
	}
	if r := wait(t, done); r.err == nil {
		t.Fatal("the stuck call succeeded")
	}
}

func TestBackendEOF(t *testing.T) {
	h := newHarness(t, config{maxRecvBytes: 1 << 20})
	done := h.invoke(context.Background(), inferMethod, []byte("x"))
	h.next()
	h.backend.Close()
	select {
	case err := <-h.runErr:
		if err == nil || !errors.Is(err, io.EOF) {
			t.Fatalf("run returned %v, want a backend EOF error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after backend EOF")
	}
	if r := wait(t, done); r.err == nil {
		t.Fatal("the call in flight succeeded")
	}
}

func TestBadFirstFrame(t *testing.T) {
	gwFile, beFile := socketpair(t)
	gw, be := fileConn(t, gwFile), fileConn(t, beFile)
	defer gw.Close()
	defer be.Close()
	if err := writeBackendFrame(be, kindHealth, 0, []byte{1}); err != nil {
		t.Fatal(err)
	}
	if _, err := newGateway(gw, config{maxRecvBytes: 1}); err == nil || !strings.Contains(err.Error(), "DESCRIPTORS") {
		t.Fatalf("got %v, want a DESCRIPTORS error", err)
	}
}

// TestBinary builds the real binary and runs it the way the Python server does.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool on PATH")
	}
	bin := filepath.Join(t.TempDir(), "inferbridge-gateway")
	build := exec.Command(goTool, "build", "-trimpath", "-o", bin, "../..") // the command, at the module root
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=readonly")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	start := func(t *testing.T, extra ...string) (*exec.Cmd, net.Conn, *bufio.Reader, *bytes.Buffer) {
		gwFile, beFile := socketpair(t)
		cmd := exec.Command(bin, append([]string{"--listen", "127.0.0.1:0", "--backend-fd", "3",
			"--max-recv-bytes", "1048576", "--max-concurrent-rpcs", "8"}, extra...)...)
		cmd.ExtraFiles = []*os.File{gwFile}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		gwFile.Close()
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		be := fileConn(t, beFile)
		t.Cleanup(func() { be.Close() })
		if err := writeBackendFrame(be, kindDescriptors, 0, testDescriptors(t)); err != nil {
			t.Fatal(err)
		}
		return cmd, be, bufio.NewReader(stdout), &stderr
	}
	exitCode := func(t *testing.T, cmd *exec.Cmd) int {
		t.Helper()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
			return cmd.ProcessState.ExitCode()
		case <-time.After(10 * time.Second):
			t.Fatal("the gateway did not exit")
		}
		return -1
	}

	t.Run("listening and SHUTDOWN", func(t *testing.T) {
		cmd, be, stdout, stderr := start(t)
		line, err := stdout.ReadString('\n')
		if err != nil {
			t.Fatalf("reading stdout: %v (stderr: %s)", err, stderr)
		}
		addr, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "listening ")
		host, port, splitErr := net.SplitHostPort(addr)
		if !ok || splitErr != nil || host != "127.0.0.1" || port == "0" {
			t.Fatalf("stdout line %q, want \"listening 127.0.0.1:PORT\"", line)
		}
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		resp, err := healthpb.NewHealthClient(cc).Check(context.Background(), &healthpb.HealthCheckRequest{})
		if err != nil || resp.Status != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Fatalf("health: %v %v", resp, err)
		}
		if err := writeBackendFrame(be, kindShutdown, 0, binary.LittleEndian.AppendUint32(nil, 1000)); err != nil {
			t.Fatal(err)
		}
		if code := exitCode(t, cmd); code != 0 {
			t.Fatalf("exit code %d after SHUTDOWN, want 0 (stderr: %s)", code, stderr)
		}
		if rest, _ := io.ReadAll(stdout); len(rest) != 0 {
			t.Fatalf("more stdout after the listening line: %q", rest)
		}
	})

	t.Run("HTTP listening, a request and SHUTDOWN", func(t *testing.T) {
		cmd, be, stdout, stderr := start(t, "--http-listen", "127.0.0.1:0", "--max-http-inflight", "4")
		var addrs []string
		for _, prefix := range []string{"listening ", "listening-http "} {
			line, err := stdout.ReadString('\n')
			if err != nil {
				t.Fatalf("reading stdout: %v (stderr: %s)", err, stderr)
			}
			addr, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), prefix)
			host, port, splitErr := net.SplitHostPort(addr)
			if !ok || splitErr != nil || host != "127.0.0.1" || port == "0" {
				t.Fatalf("stdout line %q, want \"%sHOST:PORT\"", line, prefix)
			}
			addrs = append(addrs, addr)
		}
		if addrs[0] == addrs[1] {
			t.Fatalf("same address twice: %v", addrs)
		}
		frames := make(chan backendFrame, 10)
		go func() {
			br := bufio.NewReader(be)
			for {
				f, err := readBackendFrame(br)
				if err != nil {
					close(frames)
					return
				}
				frames <- f
			}
		}()
		done := make(chan httpResult, 1)
		go func() {
			resp, err := http.Post("http://"+addrs[1]+"/v2/models/m/infer", "application/json", strings.NewReader("{}"))
			if err != nil {
				done <- httpResult{err: err}
				return
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			done <- httpResult{resp.StatusCode, resp.Header, body, err}
		}()
		var f backendFrame
		select {
		case f = <-frames:
		case <-time.After(10 * time.Second):
			t.Fatal("no HTTP frame")
		}
		if r := f.http(t); r.path != "/v2/models/m/infer" || string(r.body) != "{}" {
			t.Fatalf("forwarded %+v", r)
		}
		reply := append(binary.LittleEndian.AppendUint16(nil, 200), 0, 0)
		if err := writeBackendFrame(be, kindReplyHTTP, f.id, append(reply, `{"ok":1}`...)); err != nil {
			t.Fatal(err)
		}
		if res := waitHTTP(t, done); res.err != nil || res.status != 200 || string(res.body) != `{"ok":1}` {
			t.Fatalf("response %+v", res)
		}
		if err := writeBackendFrame(be, kindShutdown, 0, binary.LittleEndian.AppendUint32(nil, 1000)); err != nil {
			t.Fatal(err)
		}
		if code := exitCode(t, cmd); code != 0 {
			t.Fatalf("exit code %d after SHUTDOWN, want 0 (stderr: %s)", code, stderr)
		}
	})

	t.Run("HTTP listen failure", func(t *testing.T) {
		gwFile, beFile := socketpair(t)
		defer beFile.Close()
		be := fileConn(t, beFile)
		defer be.Close()
		writeBackendFrame(be, kindDescriptors, 0, testDescriptors(t))
		cmd := exec.Command(bin, "--listen", "127.0.0.1:0", "--http-listen", "256.0.0.1:1", "--backend-fd", "3")
		cmd.ExtraFiles = []*os.File{gwFile}
		out, err := cmd.CombinedOutput()
		gwFile.Close()
		if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 2 || !strings.Contains(string(out), "HTTP") {
			t.Fatalf("exit %v, output %q; want exit 2 and the reason", err, out)
		}
	})

	t.Run("backend EOF", func(t *testing.T) {
		cmd, be, stdout, stderr := start(t)
		if _, err := stdout.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
		be.Close()
		if code := exitCode(t, cmd); code != 1 || !strings.Contains(stderr.String(), "backend") {
			t.Fatalf("exit code %d, stderr %q; want 1 and a line about the backend", code, stderr)
		}
	})

	t.Run("bad security flags exit 2 naming the flag", func(t *testing.T) {
		dir := t.TempDir()
		short := filepath.Join(dir, "short-secret")
		badKeys := filepath.Join(dir, "keys.yaml")
		if os.WriteFile(short, []byte("too short\n"), 0o600) != nil || os.WriteFile(badKeys, []byte("keys:\n  - name: a\n"), 0o600) != nil {
			t.Fatal("writing the files")
		}
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"--auth-keys", filepath.Join(dir, "missing.yaml")}, "--auth-keys: keys file"},
			{[]string{"--auth-keys", badKeys}, "--auth-keys: keys file " + badKeys + ": keys[0]"},
			{[]string{"--auth-jwt-hs256-secret-file", short}, "--auth-jwt-hs256-secret-file: JWT secret file"},
			{[]string{"--auth-jwt-jwks", badKeys}, "--auth-jwt-jwks: JWKS file"},
			{[]string{"--auth-jwt-issuer", "x"}, "--auth-jwt-issuer:"},
			{[]string{"--auth-jwt-leeway-s", "400"}, "--auth-jwt-leeway-s 400: expected 0 to 300 seconds"},
			{[]string{"--auth-default-rate", "fast"}, "--auth-default-rate: rate \"fast\""},
			{[]string{"--rate-limit", "iris"}, "-rate-limit: rate limit \"iris\": expected GLOB=RPS[:BURST]"},
			{[]string{"--tls-cert", short}, "--tls-cert and --tls-key"},
			{[]string{"--tls-cert", short, "--tls-key", short}, "--tls-cert / --tls-key:"},
			{[]string{"--tls-cert", short, "--tls-key", short, "--tls-client-auth", "maybe"}, "--tls-client-auth \"maybe\""},
			{[]string{"--tls-cert", short, "--tls-key", short, "--tls-client-auth", "require"}, "needs --tls-client-ca"},
		} {
			// No backend is needed: the flags are checked before it is read.
			out, _ := exec.Command(bin, append([]string{"--listen", "127.0.0.1:0", "--backend-fd", "3"}, tc.args...)...).CombinedOutput()
			if !strings.Contains(string(out), tc.want) {
				t.Errorf("%q: output %q, want it to contain %q", tc.args, out, tc.want)
			}
		}
		for _, args := range [][]string{{"--auth-keys", badKeys}, {"--rate-limit", "iris"}} {
			cmd := exec.Command(bin, append([]string{"--listen", "127.0.0.1:0", "--backend-fd", "3"}, args...)...)
			cmd.Run()
			if code := cmd.ProcessState.ExitCode(); code != 2 {
				t.Errorf("%q: exit code %d, want 2", args, code)
			}
		}
	})

	t.Run("listen failure", func(t *testing.T) {
		gwFile, beFile := socketpair(t)
		defer beFile.Close()
		be := fileConn(t, beFile)
		defer be.Close()
		writeBackendFrame(be, kindDescriptors, 0, testDescriptors(t))
		cmd := exec.Command(bin, "--listen", "256.0.0.1:1", "--backend-fd", "3")
		cmd.ExtraFiles = []*os.File{gwFile}
		out, err := cmd.CombinedOutput()
		gwFile.Close()
		if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 2 || !strings.Contains(string(out), "listen") {
			t.Fatalf("exit %v, output %q; want exit 2 and the reason", err, out)
		}
	})
}

// httpRequest is a decoded HTTP frame.
type httpRequest struct {
	id                           uint64
	method, path, rawPath, query string
	headers                      [][2]string
	arrival                      int64
	body                         []byte
}

func (r httpRequest) header(name string) []string {
	var vs []string
	for _, h := range r.headers {
		if h[0] == name {
			vs = append(vs, h[1])
		}
	}
	return vs
}

// httpFrame decodes an HTTP frame.
func (f backendFrame) http(t testing.TB) httpRequest {
	t.Helper()
	if f.kind != kindHTTP {
		t.Fatalf("frame kind %d, want HTTP", f.kind)
	}
	b := f.body
	str16 := func() string {
		n := int(binary.LittleEndian.Uint16(b))
		s := string(b[2 : 2+n])
		b = b[2+n:]
		return s
	}
	r := httpRequest{id: f.id, method: str16(), path: str16(), rawPath: str16(), query: str16()}
	count := int(binary.LittleEndian.Uint16(b))
	b = b[2:]
	for i := 0; i < count; i++ {
		name := str16()
		n := int(binary.LittleEndian.Uint32(b))
		r.headers = append(r.headers, [2]string{name, string(b[4 : 4+n])})
		b = b[4+n:]
	}
	r.arrival = int64(binary.LittleEndian.Uint64(b))
	r.body = b[8:]
	return r
}

// replyHTTP sends a REPLY-HTTP frame.
func (h *harness) replyHTTP(id uint64, status int, headers [][2]string, body []byte) {
	h.t.Helper()
	b := binary.LittleEndian.AppendUint16(nil, uint16(status))
	b = binary.LittleEndian.AppendUint16(b, uint16(len(headers)))
	for _, kv := range headers {
		b = binary.LittleEndian.AppendUint16(b, uint16(len(kv[0])))
		b = append(b, kv[0]...)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(kv[1])))
		b = append(b, kv[1]...)
	}
	h.send(kindReplyHTTP, id, append(b, body...))
}

// sendLimits sends a LIMITS frame and makes sure the gateway has applied it, by a
// request whose reply the gateway reads after it.
func (h *harness) sendLimits(limits map[string]uint32) {
	h.t.Helper()
	b := binary.LittleEndian.AppendUint16(nil, uint16(len(limits)))
	for name, n := range limits {
		b = binary.LittleEndian.AppendUint16(b, uint16(len(name)))
		b = append(b, name...)
		b = binary.LittleEndian.AppendUint32(b, n)
	}
	h.send(kindLimits, 0, b)
	done := h.do(http.DefaultClient, mustRequest(h.t, "GET", h.httpURL+"/sync", nil))
	h.replyHTTP(h.next().id, 204, nil, nil)
	if r := waitHTTP(h.t, done); r.err != nil || r.status != 204 {
		h.t.Fatalf("sync request: %+v", r)
	}
}

type httpResult struct {
	status int
	header http.Header
	body   []byte
	err    error
}

func mustRequest(t testing.TB, method, url string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func (h *harness) do(client *http.Client, req *http.Request) <-chan httpResult {
	done := make(chan httpResult, 1)
	go func() {
		resp, err := client.Do(req)
		if err != nil {
			done <- httpResult{err: err}
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		done <- httpResult{resp.StatusCode, resp.Header, body, err}
	}()
	return done
}

func waitHTTP(t testing.TB, ch <-chan httpResult) httpResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("HTTP request did not finish")
	}
	return httpResult{}
}

func TestHTTPRoundTrip(t *testing.T) {
	h := newHarness(t, config{maxRecvBytes: 1 << 20})
	tr := &http.Transport{MaxConnsPerHost: 1}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	var reused []bool
	for i := 0; i < 4; i++ {
		body := []byte(fmt.Sprintf(`{"inputs": [%d]}`, i))
		req := mustRequest(t, "POST", h.httpURL+"/v2/models/a%2Fb/versions/1/infer?x=1&y=%20z", bytes.NewReader(body))
		req.Header.Add("X-Rep", "one")
		req.Header.Add("X-Rep", "two")
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Inference-Header-Content-Length", "3")
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			GotConn: func(info httptrace.GotConnInfo) { reused = append(reused, info.Reused) },
		}))
		before := time.Now().UnixNano()
		done := h.do(client, req)
		r := h.next().http(t)
		after := time.Now().UnixNano()
		if r.method != "POST" || r.path != "/v2/models/a/b/versions/1/infer" ||
			r.rawPath != "/v2/models/a%2Fb/versions/1/infer" || r.query != "x=1&y=%20z" || !bytes.Equal(r.body, body) {
			t.Fatalf("forwarded %+v", r)
		}
		if r.arrival < before || r.arrival > after {
			t.Fatalf("arrival %d not in [%d, %d]", r.arrival, before, after)
		}
		for name, want := range map[string]string{
			"x-rep":                           "one two",
			"content-type":                    "application/json",
			"inference-header-content-length": "3",
			"content-length":                  strconv.Itoa(len(body)),
			"host":                            strings.TrimPrefix(h.httpURL, "http://"),
		} {
			if got := strings.Join(r.header(name), " "); got != want {
				t.Fatalf("header %q: %q, want %q (all: %q)", name, got, want, r.headers)
			}
		}
		h.replyHTTP(r.id, 201, [][2]string{{"content-type", "application/json"}, {"x-out", "a"}, {"x-out", "b"}},
			[]byte(`{"ok":1}`))
		res := waitHTTP(t, done)
		if res.err != nil || res.status != 201 || string(res.body) != `{"ok":1}` ||
			res.header.Get("Content-Type") != "application/json" || strings.Join(res.header.Values("X-Out"), ",") != "a,b" ||
			res.header.Get("Content-Length") != "8" {
			t.Fatalf("response %+v", res)
		}
	}
	if len(reused) != 4 || reused[0] || !reused[1] || !reused[2] || !reused[3] {
		t.Fatalf("connection reuse %v, want [false true true true]", reused)
	}

	// GET without a body, any path; a reply with its own content-length, an empty body.
	done := h.do(client, mustRequest(t, "GET", h.httpURL+"/v2/health/ready", nil))
	r := h.next().http(t)
	if r.method != "GET" || r.path != "/v2/health/ready" || r.query != "" || len(r.body) != 0 {
		t.Fatalf("forwarded %+v", r)
	}
	h.replyHTTP(r.id, 200, [][2]string{{"content-length", "0"}}, nil)
	if res := waitHTTP(t, done); res.err != nil || res.status != 200 || len(res.body) != 0 {
		t.Fatalf("response %+v", res)
	}
	// A large body and response.
	big := bytes.Repeat([]byte("0123456789"), 60_000)
	done = h.do(client, mustRequest(t, "POST", h.httpURL+"/v2/models/m/infer", bytes.NewReader(big)))
	r = h.next().http(t)
	if !bytes.Equal(r.body, big) {
		t.Fatalf("large body: %d bytes", len(r.body))
	}
	h.replyHTTP(r.id, 200, nil, big)
	if res := waitHTTP(t, done); res.err != nil || !bytes.Equal(res.body, big) {
		t.Fatalf("large response: %d bytes, %v", len(res.body), res.err)
	}
}

func TestHTTPBodies(t *testing.T) {
	h := newHarness(t, config{maxRecvBytes: 1000})
	client := &http.Client{Transport: &http.Transport{}}

	// Chunked: a reader of unknown length.
	pr, pw := io.Pipe()
	go func() {
		for i := 0; i < 10; i++ {
			pw.Write(bytes.Repeat([]byte{byte('a' + i)}, 100))
		}
		pw.Close()
	}()
	req := mustRequest(t, "POST", h.httpURL+"/v2/models/m/infer", pr)
	done := h.do(client, req)
	r := h.next().http(t)
	if len(r.body) != 1000 || r.body[999] != 'j' || r.header("content-length") != nil {
		t.Fatalf("chunked body: %d bytes, headers %q", len(r.body), r.headers)
	}
	h.replyHTTP(r.id, 200, nil, nil)
	if res := waitHTTP(t, done); res.err != nil || res.status != 200 {
		t.Fatalf("response %+v", res)
	}

	// Over-size Content-Length.
	res := waitHTTP(t, h.do(client, mustRequest(t, "POST", h.httpURL+"/v2/models/m/infer", bytes.NewReader(make([]byte, 1001)))))
	if res.err != nil || res.status != 413 || res.header.Get("Content-Type") != "application/json" ||
		string(res.body) != `{"error": "request body of 1001 bytes is over the limit of 1000 bytes"}` {
		t.Fatalf("over-size body: %+v %s", res, res.body)
	}
	// Over-size chunked body.
	pr, pw = io.Pipe()
	go func() {
		for i := 0; i < 20; i++ {
			if _, err := pw.Write(make([]byte, 100)); err != nil {
				return
			}
		}
		pw.Close()
	}()
	res = waitHTTP(t, h.do(client, mustRequest(t, "POST", h.httpURL+"/x", pr)))
	if res.err != nil || res.status != 413 ||
		string(res.body) != `{"error": "request body of more than 1000 bytes is over the limit of 1000 bytes"}` {
		t.Fatalf("over-size chunked body: %+v %s", res, res.body)
	}
	// Nothing was forwarded: the next frame is the next request.
	done = h.do(client, mustRequest(t, "PUT", h.httpURL+"/next", strings.NewReader("ok")))
	if r := h.next().http(t); r.method != "PUT" || r.path != "/next" || string(r.body) != "ok" {
		t.Fatalf("forwarded %+v", r)
	} else {
		h.replyHTTP(r.id, 200, nil, nil)
	}
	if res := waitHTTP(t, done); res.err != nil || res.status != 200 {
		t.Fatalf("response %+v", res)
	}
}

func TestHTTPModelLimit(t *testing.T) {
	h := newHarness(t, config{maxRecvBytes: 1 << 20})
	h.sendLimits(map[string]uint32{`m"x`: 1, "other": 5})
	client := &http.Client{Transport: &http.Transport{}}
	post := func(path string) <-chan httpResult {
		return h.do(client, mustRequest(t, "POST", h.httpURL+path, strings.NewReader("{}")))
	}
	d1 := post(`/v2/models/m"x/infer`)
	f1 := h.next().http(t)
	for _, path := range []string{`/v2/models/m"x/infer`, `/v2/models/m"x/versions/3/infer`} {
		res := waitHTTP(t, post(path))
		if res.err != nil || res.status != 429 || res.header.Get("Retry-After") != "1" ||
			res.header.Get("Content-Type") != "application/json" ||
			string(res.body) != `{"error": "model 'm\"x' is overloaded: its queue is full (1 requests queued or running); retry later"}` {
			t.Fatalf("%s: %+v %s", path, res, res.body)
		}
	}
	// Other paths of the model and other models are not limited.
	d2 := h.do(client, mustRequest(t, "GET", h.httpURL+`/v2/models/m"x/infer`, nil))
	d3 := post(`/v2/models/m"x/ready`)
	d4 := post(`/v2/models/other/infer`)
	for range 3 {
		h.replyHTTP(h.next().id, 200, nil, nil)
	}
	for _, d := range []<-chan httpResult{d2, d3, d4} {
		if res := waitHTTP(t, d); res.err != nil || res.status != 200 {
			t.Fatalf("response %+v", res)
		}
	}
	// The reply frees the slot.
	h.replyHTTP(f1.id, 200, nil, []byte("1"))
	if res := waitHTTP(t, d1); res.err != nil || res.status != 200 {
		t.Fatalf("response %+v", res)
	}
	d5 := post(`/v2/models/m"x/versions/3/infer`)
	h.replyHTTP(h.next().id, 200, nil, nil)
	if res := waitHTTP(t, d5); res.err != nil || res.status != 200 {
		t.Fatalf("response %+v", res)
	}
	// A cancel frees the slot too.
	ctx, cancel := context.WithCancel(context.Background())
	d6 := h.do(client, mustRequest(t, "POST", h.httpURL+`/v2/models/m"x/infer`, nil).WithContext(ctx))
	f6 := h.next()
	cancel()
	if c := h.next(); c.kind != kindCancel || c.id != f6.id {
		t.Fatalf("got frame %d id %d, want CANCEL of %d", c.kind, c.id, f6.id)
	}
	waitHTTP(t, d6)
	d7 := post(`/v2/models/m"x/infer`)
	h.replyHTTP(h.next().id, 200, nil, nil)
	if res := waitHTTP(t, d7); res.err != nil || res.status != 200 {
		t.Fatalf("response %+v", res)
	}
	// A new table replaces the old one: m"x is no longer limited.
	h.sendLimits(map[string]uint32{"other": 1})
	d8, d9 := post(`/v2/models/m"x/infer`), post(`/v2/models/m"x/infer`)
	h.replyHTTP(h.next().id, 200, nil, nil)
	h.replyHTTP(h.next().id, 200, nil, nil)
	if r8, r9 := waitHTTP(t, d8), waitHTTP(t, d9); r8.status != 200 || r9.status != 200 {
		t.Fatalf("responses %+v %+v", r8, r9)
	}
}

func TestHTTPGlobalLimit(t *testing.T) {
	h := newHarness(t, config{maxRecvBytes: 1 << 20, maxHTTPInflight: 2})
	client := &http.Client{Transport: &http.Transport{}}
	d1 := h.do(client, mustRequest(t, "GET", h.httpURL+"/a", nil))
	d2 := h.do(client, mustRequest(t, "POST", h.httpURL+"/v2/models/m/infer", nil))
	f1, f2 := h.next(), h.next()
	res := waitHTTP(t, h.do(client, mustRequest(t, "GET", h.httpURL+"/c", nil)))
	if res.status != 429 || res.header.Get("Retry-After") != "1" ||
		string(res.body) != `{"error": "server is overloaded: 2 requests in flight; retry later"}` {
		t.Fatalf("over the limit: %+v %s", res, res.body)
	}
	h.replyHTTP(f1.id, 200, nil, nil)
	h.replyHTTP(f2.id, 200, nil, nil)
	waitHTTP(t, d1)
	waitHTTP(t, d2)
	d := h.do(client, mustRequest(t, "GET", h.httpURL+"/d", nil))
	h.replyHTTP(h.next().id, 200, nil, nil)
	if res := waitHTTP(t, d); res.status != 200 {
		t.Fatalf("after the slots are freed: %+v", res)
	}
}

func TestHTTPCancel(t *testing.T) {
	h := newHarness(t, config{maxRecvBytes: 1 << 20})
	client := &http.Client{Transport: &http.Transport{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := h.do(client, mustRequest(t, "POST", h.httpURL+"/v2/models/m/infer", strings.NewReader("x")).WithContext(ctx))
	f := h.next()
	cancel()
	if c := h.next(); c.kind != kindCancel || c.id != f.id || len(c.body) != 0 {
		t.Fatalf("got frame %d id %d, want CANCEL of %d", c.kind, c.id, f.id)
	}
	if res := waitHTTP(t, done); res.err == nil {
		t.Fatalf("cancelled request: %+v", res)
	}
	// The late reply is ignored; the next request gets its own. So do a gRPC REPLY for
	// an HTTP id and a REPLY-HTTP for a gRPC id.
	h.replyHTTP(f.id, 200, nil, []byte("late"))
	done = h.do(client, mustRequest(t, "GET", h.httpURL+"/next", nil))
	f2 := h.next()
	h.reply(f2.id, codes.OK, []byte("wrong kind"))
	gdone := h.invoke(context.Background(), inferMethod, []byte("g"))
	g := h.next()
	h.replyHTTP(g.id, 200, nil, []byte("wrong kind"))
	h.reply(g.id, codes.OK, []byte("grpc"))
	h.replyHTTP(f2.id, 200, nil, []byte("mine"))
	if res := waitHTTP(t, done); res.err != nil || string(res.body) != "mine" {
		t.Fatalf("response %+v", res)
	}
	if r := wait(t, gdone); r.err != nil || string(r.resp) != "grpc" {
		t.Fatalf("gRPC call: %q %v", r.resp, r.err)
	}
}

func TestHTTPShutdownDrains(t *testing.T) {
	h := newHarness(t, config{maxRecvBytes: 1 << 20})
	client := &http.Client{Transport: &http.Transport{}}
	// An idle keep-alive connection, and a request in flight.
	idle := h.do(client, mustRequest(t, "GET", h.httpURL+"/idle", nil))
	h.replyHTTP(h.next().id, 200, nil, nil)
	waitHTTP(t, idle)
	done := h.do(&http.Client{Transport: &http.Transport{}}, mustRequest(t, "POST", h.httpURL+"/v2/models/m/infer", strings.NewReader("x")))
	f := h.next()
	h.send(kindShutdown, 0, binary.LittleEndian.AppendUint32(nil, 10_000))
	select {
	case err := <-h.runErr:
		t.Fatalf("run returned %v before the request in flight finished", err)
	case <-time.After(200 * time.Millisecond):
	}
	// New connections are refused.
	if _, err := net.DialTimeout("tcp", strings.TrimPrefix(h.httpURL, "http://"), time.Second); err == nil {
		t.Fatal("a new connection was accepted during the drain")
	}
	h.replyHTTP(f.id, 200, nil, []byte("done"))
	if res := waitHTTP(t, done); res.err != nil || string(res.body) != "done" {
		t.Fatalf("in-flight request: %+v", res)
	}
	select {
	case err := <-h.runErr:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after the drain")
	}
}

func TestHTTPShutdownGraceExpires(t *testing.T) {
	h := newHarness(t, config{maxRecvBytes: 1 << 20})
	done := h.do(&http.Client{Transport: &http.Transport{}}, mustRequest(t, "GET", h.httpURL+"/stuck", nil))
	h.next()
	h.send(kindShutdown, 0, binary.LittleEndian.AppendUint32(nil, 100))
	select {
	case err := <-h.runErr:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after the grace period")
	}
	if res := waitHTTP(t, done); res.err == nil {
		t.Fatalf("the stuck request succeeded: %+v", res)
	}
}

func TestHTTPBackendEOF(t *testing.T) {
	h := newHarness(t, config{maxRecvBytes: 1 << 20})
	done := h.do(&http.Client{Transport: &http.Transport{}}, mustRequest(t, "GET", h.httpURL+"/x", nil))
	h.next()
	h.backend.Close()
	select {
	case err := <-h.runErr:
		if err == nil || !errors.Is(err, io.EOF) {
			t.Fatalf("run returned %v, want a backend EOF error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after backend EOF")
	}
	if res := waitHTTP(t, done); res.err == nil && res.status == 200 {
		t.Fatalf("the request in flight succeeded: %+v", res)
	}
}

// inferRequest is a ModelInferRequest naming model: field 1 (model_name), then field 2
// (model_version) so that the name is not the only field.
func inferRequest(model string) []byte {
	b := protowire.AppendTag(nil, 1, protowire.BytesType)
	b = protowire.AppendString(b, model)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	return protowire.AppendString(b, "1")
}

func TestGRPCModelLimit(t *testing.T) {
	h := newHarness(t, config{maxRecvBytes: 1 << 20})
	h.sendLimits(map[string]uint32{"m": 1})
	d1 := h.invoke(context.Background(), inferMethod, inferRequest("m"))
	f1 := h.next()
	wantCode(t, wait(t, h.invoke(context.Background(), inferMethod, inferRequest("m"))).err,
		codes.ResourceExhausted, "model 'm' is overloaded: its queue is full (1 requests")
	// Other models, other methods and unparsable requests are not limited.
	d2 := h.invoke(context.Background(), inferMethod, inferRequest("other"))
	d3 := h.invoke(context.Background(), "/inference.GRPCInferenceService/ModelReady", inferRequest("m"))
	d4 := h.invoke(context.Background(), inferMethod, []byte{0xff})
	for range 3 {
		h.reply(h.next().id, codes.OK, nil)
	}
	for _, d := range []<-chan result{d2, d3, d4} {
		if r := wait(t, d); r.err != nil {
			t.Fatal(r.err)
		}
	}
	// The slot is freed by the reply.
	h.reply(f1.id, codes.OK, nil)
	if r := wait(t, d1); r.err != nil {
		t.Fatal(r.err)
	}
	d := h.invoke(context.Background(), inferMethod, inferRequest("m"))
	h.reply(h.next().id, codes.OK, nil)
	if r := wait(t, d); r.err != nil {
		t.Fatal(r.err)
	}
}
