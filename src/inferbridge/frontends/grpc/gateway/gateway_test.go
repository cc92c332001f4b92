package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding/gzip"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	v1reflectiongrpc "google.golang.org/grpc/reflection/grpc_reflection_v1"
	v1reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	v1alphareflectiongrpc "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	v1alphareflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"
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

// call decodes a CALL body.
func (f backendFrame) call(t testing.TB) (method string, timeoutUS int64, msg []byte) {
	t.Helper()
	if f.kind != kindCall {
		t.Fatalf("frame kind %d, want CALL", f.kind)
	}
	n := int(binary.LittleEndian.Uint16(f.body))
	method = string(f.body[2 : 2+n])
	timeoutUS = int64(binary.LittleEndian.Uint64(f.body[2+n:]))
	return method, timeoutUS, f.body[2+n+8:]
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
}

func newHarness(t *testing.T, cfg config) *harness {
	gwFile, beFile := socketpair(t)
	h := &harness{
		t:       t,
		backend: fileConn(t, beFile),
		frames:  make(chan backendFrame, 100),
		runErr:  make(chan error, 1),
	}
	gwConn := fileConn(t, gwFile)
	t.Cleanup(func() { h.backend.Close(); gwConn.Close() })
	h.send(kindDescriptors, 0, testDescriptors(t))
	g, err := newGateway(gwConn, cfg)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { h.runErr <- g.run(lis) }()
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
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(newCodec())))
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
		in := &rawMsg{data: mem.BufferSlice{mem.SliceBuffer(req)}}
		var out rawMsg
		err := h.cc.Invoke(ctx, method, in, &out, opts...)
		done <- result{out.data.Materialize(), err}
		out.data.Free()
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
	bin := filepath.Join(t.TempDir(), "inferbridge-grpc-gateway")
	build := exec.Command(goTool, "build", "-trimpath", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=readonly")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	start := func(t *testing.T) (*exec.Cmd, net.Conn, *bufio.Reader, *bytes.Buffer) {
		gwFile, beFile := socketpair(t)
		cmd := exec.Command(bin, "--listen", "127.0.0.1:0", "--backend-fd", "3",
			"--max-recv-bytes", "1048576", "--max-concurrent-rpcs", "8")
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
