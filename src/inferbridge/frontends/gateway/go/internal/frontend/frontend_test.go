package frontend

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/inferbridge/inferbridge/gateway/internal/auth"
)

const (
	inferKey  = "ib_infer_key_0123456789"
	readerKey = "ib_reader_key_0123456789"
)

// fakeBackend answers REST with 200 "ok" (or what status says) and echoes gRPC
// messages, recording what it was given.
type fakeBackend struct {
	f        *Frontend
	mu       sync.Mutex
	rest     []Request
	grpcSeen []string
	status   int // of ServeREST; 0: 200 "ok"
}

func (b *fakeBackend) ServeREST(w http.ResponseWriter, r *http.Request, req Request) (int, int) {
	b.mu.Lock()
	b.rest = append(b.rest, req)
	st := b.status
	b.mu.Unlock()
	if st != 0 {
		return st, 0
	}
	w.Write([]byte("ok"))
	return http.StatusOK, 2
}

func (b *fakeBackend) ServeGRPC(_ any, ss grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(ss)
	b.mu.Lock()
	b.grpcSeen = append(b.grpcSeen, method)
	b.mu.Unlock()
	var m RawMsg
	if err := ss.RecvMsg(&m); err != nil {
		return err
	}
	name, _ := BufferModel(m.Data)
	if _, err := b.f.CheckGRPC(ss.Context(), method, string(name), m.Data.Len()); err != nil {
		m.Data.Free()
		return err
	}
	return ss.SendMsg(&m)
}

// recorder is an Observer.
type recorder struct {
	mu       sync.Mutex
	started  int
	done     []string // "route status"
	refusals []Refusal
}

func (o *recorder) RESTStarted() { o.mu.Lock(); o.started++; o.mu.Unlock() }
func (o *recorder) RESTDone(route Route, status, _ int, _ time.Time) {
	o.mu.Lock()
	o.done = append(o.done, fmt.Sprintf("%s %d", route, status))
	o.mu.Unlock()
}
func (o *recorder) Refused(r Refusal) { o.mu.Lock(); o.refusals = append(o.refusals, r); o.mu.Unlock() }

func sha(key string) string {
	d := sha256.Sum256([]byte(key))
	return hex.EncodeToString(d[:])
}

func testAuthority(t *testing.T) *auth.Authority {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keys.yaml")
	keys := fmt.Sprintf("keys:\n  - name: inferer\n    sha256: %s\n    scopes: [\"infer:iris*\"]\n"+
		"  - name: reader\n    sha256: %s\n    scopes: [read]\n", sha(inferKey), sha(readerKey))
	if err := os.WriteFile(path, []byte(keys), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := auth.New(auth.Config{KeysFile: path, OpenHealth: false}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// serve starts a front end of a fake backend on loopback.
func serve(t *testing.T, a *auth.Authority) (*Frontend, *fakeBackend, *recorder, string, string) {
	t.Helper()
	b, o := &fakeBackend{}, &recorder{}
	f := New(Config{MaxRecvBytes: 1 << 20, MaxConcurrentStreams: 100, Auth: a, DefaultModel: "iris"}, b, o)
	b.f = f
	glis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hlis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	failed := f.Serve(glis, hlis)
	t.Cleanup(func() {
		f.Drain(time.Second)
		select {
		case err := <-failed:
			t.Errorf("a listener failed: %v", err)
		default:
		}
	})
	return f, b, o, glis.Addr().String(), "http://" + hlis.Addr().String()
}

func get(t *testing.T, url string, header http.Header) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(`{"inputs": []}`))
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// TestRESTChecksBeforeTheBackend: a refused request never reaches the backend and is
// answered 401 or 403 with the JSON body; an allowed one arrives parsed, with its
// principal; every one is observed.
func TestRESTChecksBeforeTheBackend(t *testing.T) {
	_, b, o, _, base := serve(t, testAuthority(t))

	code, h, body := get(t, base+"/v2/models/iris/infer", nil)
	if code != 401 || h.Get("Www-Authenticate") != `Bearer realm="inferbridge"` || !strings.HasPrefix(body, `{"error": `) {
		t.Fatalf("no credential: %d %v %s", code, h, body)
	}
	code, h, _ = get(t, base+"/v2/models/iris/infer", http.Header{"X-Api-Key": {inferKey, inferKey}})
	if code != 401 || !strings.Contains(h.Get("Www-Authenticate"), "invalid_token") {
		t.Fatalf("a key sent twice: %d %v", code, h)
	}
	if code, _, body = get(t, base+"/v2/models/iris/infer", http.Header{"X-Api-Key": {readerKey}}); code != 403 {
		t.Fatalf("reader on infer: %d %s", code, body)
	}
	if len(b.rest) != 0 {
		t.Fatalf("the backend saw refused requests: %+v", b.rest)
	}
	if code, _, body = get(t, base+"/v2/models/iris_onnx/versions/2/infer", http.Header{"X-Api-Key": {inferKey}}); code != 200 || body != "ok" {
		t.Fatalf("allowed: %d %s", code, body)
	}
	want := Request{Path: Path{Route: RouteVersionInfer, Model: "iris_onnx", Version: "2"}, Principal: "inferer"}
	if got := b.rest[0]; got.Path != want.Path || got.Principal != want.Principal || got.Start.IsZero() {
		t.Fatalf("the backend got %+v, want %+v", got, want)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.started != 4 || strings.Join(o.done, ",") != "/v2/models/{model}/infer 401,/v2/models/{model}/infer 401,"+
		"/v2/models/{model}/infer 403,/v2/models/{model}/versions/{version}/infer 200" {
		t.Fatalf("observed %d started, done %q", o.started, o.done)
	}
	if len(o.refusals) != 3 || o.refusals[2].Model != "iris" || o.refusals[2].Protocol != "http" ||
		o.refusals[2].Status != "403" || o.refusals[2].Denial.Principal != "reader" {
		t.Fatalf("refusals %+v", o.refusals)
	}
}

// TestRESTClientGone: a backend that answers nothing (StatusClientGone) gets the
// connection closed, never an implicit empty 200.
func TestRESTClientGone(t *testing.T) {
	_, b, o, _, base := serve(t, nil)
	b.mu.Lock()
	b.status = StatusClientGone
	b.mu.Unlock()
	resp, err := http.Post(base+"/v2/health/ready", "application/json", nil)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("got %d, want the connection closed", resp.StatusCode)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.done) != 1 || o.done[0] != "/v2/health/ready 499" {
		t.Fatalf("observed %q", o.done)
	}
}

// TestGRPCOwnMethodsChecked: the health service (the front end's own) is checked by the
// front end; forwarded methods reach the backend, which checks them with CheckGRPC.
func TestGRPCOwnMethodsChecked(t *testing.T) {
	f, b, o, addr, _ := serve(t, testAuthority(t))
	f.Health().SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(Codec{})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hc := healthpb.NewHealthClient(conn)
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("health without a credential: %v", err)
	}
	withKey := func(key string) context.Context { return metadata.AppendToOutgoingContext(ctx, "x-api-key", key) }
	if r, err := hc.Check(withKey(readerKey), &healthpb.HealthCheckRequest{}); err != nil || r.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health with read: %v %v", r, err)
	}
	msg := &RawMsg{Data: mem.BufferSlice{mem.SliceBuffer(field(1, "iris"))}}
	var out RawMsg
	if err := conn.Invoke(withKey(readerKey), auth.GRPCModelInfer, msg, &out); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("reader's ModelInfer: %v", err)
	}
	msg = &RawMsg{Data: mem.BufferSlice{mem.SliceBuffer(field(1, "iris"))}}
	if err := conn.Invoke(withKey(inferKey), auth.GRPCModelInfer, msg, &out); err != nil {
		t.Fatalf("ModelInfer: %v", err)
	}
	out.Data.Free()
	b.mu.Lock()
	defer b.mu.Unlock()
	if strings.Join(b.grpcSeen, ",") != auth.GRPCModelInfer+","+auth.GRPCModelInfer {
		t.Fatalf("the backend saw %q", b.grpcSeen)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.refusals) != 2 || o.refusals[0].Status != "UNAUTHENTICATED" || o.refusals[1].Status != "PERMISSION_DENIED" ||
		o.refusals[1].Model != "iris" || o.refusals[1].ReqBytes != len(field(1, "iris")) {
		t.Fatalf("refusals %+v", o.refusals)
	}
}

// TestDrainAnswersInFlight: Drain lets a request in flight finish, then stops.
func TestDrainAnswersInFlight(t *testing.T) {
	b, o := &slowBackend{release: make(chan struct{}), entered: make(chan struct{})}, &recorder{}
	f := New(Config{MaxRecvBytes: 1 << 10, MaxConcurrentStreams: 10}, b, o)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.Serve(nil, lis)
	got := make(chan int, 1)
	go func() {
		resp, err := http.Get("http://" + lis.Addr().String() + "/v2")
		if err != nil {
			got <- 0
			return
		}
		resp.Body.Close()
		got <- resp.StatusCode
	}()
	<-b.entered
	drained := make(chan struct{})
	go func() { f.Drain(5 * time.Second); close(drained) }()
	time.Sleep(50 * time.Millisecond)
	close(b.release)
	if code := <-got; code != 200 {
		t.Fatalf("the request in flight got %d", code)
	}
	<-drained
	if _, err := http.Get("http://" + lis.Addr().String() + "/v2"); err == nil {
		t.Fatal("served after Drain")
	}
}

type slowBackend struct{ release, entered chan struct{} }

func (b *slowBackend) ServeREST(w http.ResponseWriter, _ *http.Request, _ Request) (int, int) {
	close(b.entered)
	<-b.release
	w.WriteHeader(200)
	return 200, 0
}

func (b *slowBackend) ServeGRPC(any, grpc.ServerStream) error {
	return status.Error(codes.Unimplemented, "none")
}

func TestRetryAfterSeconds(t *testing.T) {
	for d, want := range map[time.Duration]int{0: 1, time.Millisecond: 1, time.Second: 1, 1500 * time.Millisecond: 2, 3 * time.Second: 3} {
		if got := RetryAfterSeconds(d); got != want {
			t.Errorf("RetryAfterSeconds(%v) = %d, want %d", d, got, want)
		}
	}
}

type netErr struct{}

func (netErr) Error() string   { return "reset" }
func (netErr) Timeout() bool   { return false }
func (netErr) Temporary() bool { return false }

func TestUnreadableBody(t *testing.T) {
	r, _ := http.NewRequest(http.MethodPost, "/v2/models/m/infer", nil)
	r.ContentLength = 10
	if code, _ := UnreadableBody(nil, r, netErr{}, 3); code != StatusClientGone {
		t.Fatalf("a reset: %d", code)
	}
	w := &memWriter{h: http.Header{}}
	code, n := UnreadableBody(w, r, io.ErrUnexpectedEOF, 3)
	if code != 400 || n != len(w.body) || w.h.Get("Connection") != "close" ||
		w.body != `{"error": "the request body ended after 3 of its 10 bytes (Content-Length)"}` {
		t.Fatalf("cut short: %d %d %v %s", code, n, w.h, w.body)
	}
	w = &memWriter{h: http.Header{}}
	r.ContentLength = -1
	if UnreadableBody(w, r, errors.New("invalid byte in chunk length"), 0); !strings.Contains(w.body, "cannot be read: invalid byte") {
		t.Fatalf("malformed: %s", w.body)
	}
}

type memWriter struct {
	h    http.Header
	code int
	body string
}

func (w *memWriter) Header() http.Header         { return w.h }
func (w *memWriter) WriteHeader(code int)        { w.code = code }
func (w *memWriter) Write(b []byte) (int, error) { w.body += string(b); return len(b), nil }
