package inferbridge_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	inferbridge "github.com/inferbridge/inferbridge/clients/go"
	"github.com/inferbridge/inferbridge/clients/go/grpcclient"
	"github.com/inferbridge/inferbridge/clients/go/inferencepb"
	"google.golang.org/grpc"
)

func TestUnitTensorRoundTrips(t *testing.T) {
	shape := []int64{2, 2}
	check := func(name string, err error, ok bool) {
		t.Helper()
		if err != nil || !ok {
			t.Errorf("%s: %v", name, err)
		}
	}
	f32, err := inferbridge.NewFP32("x", shape, []float32{1.5, -0, float32(math.Inf(1)), math.MaxFloat32}).Float32s()
	check("fp32", err, slices.Equal(f32, []float32{1.5, -0, float32(math.Inf(1)), math.MaxFloat32}))
	f64, err := inferbridge.NewFP64("x", shape, []float64{0.1, -1e300, 5e-324, 3}).Float64s()
	check("fp64", err, slices.Equal(f64, []float64{0.1, -1e300, 5e-324, 3}))
	i8, err := inferbridge.NewInt8("x", shape, []int8{-128, -1, 0, 127}).Int8s()
	check("int8", err, slices.Equal(i8, []int8{-128, -1, 0, 127}))
	i16, err := inferbridge.NewInt16("x", shape, []int16{-32768, -1, 0, 32767}).Int16s()
	check("int16", err, slices.Equal(i16, []int16{-32768, -1, 0, 32767}))
	i32, err := inferbridge.NewInt32("x", shape, []int32{math.MinInt32, -1, 0, math.MaxInt32}).Int32s()
	check("int32", err, slices.Equal(i32, []int32{math.MinInt32, -1, 0, math.MaxInt32}))
	i64, err := inferbridge.NewInt64("x", shape, []int64{math.MinInt64, -1, 0, math.MaxInt64}).Int64s()
	check("int64", err, slices.Equal(i64, []int64{math.MinInt64, -1, 0, math.MaxInt64}))
	u8, err := inferbridge.NewUint8("x", shape, []uint8{0, 1, 128, 255}).Uint8s()
	check("uint8", err, slices.Equal(u8, []uint8{0, 1, 128, 255}))
	u16, err := inferbridge.NewUint16("x", shape, []uint16{0, 1, 256, 65535}).Uint16s()
	check("uint16", err, slices.Equal(u16, []uint16{0, 1, 256, 65535}))
	u32, err := inferbridge.NewUint32("x", shape, []uint32{0, 1, 1 << 31, math.MaxUint32}).Uint32s()
	check("uint32", err, slices.Equal(u32, []uint32{0, 1, 1 << 31, math.MaxUint32}))
	u64, err := inferbridge.NewUint64("x", shape, []uint64{0, 1, 1 << 63, math.MaxUint64}).Uint64s()
	check("uint64", err, slices.Equal(u64, []uint64{0, 1, 1 << 63, math.MaxUint64}))
	b, err := inferbridge.NewBool("x", shape, []bool{true, false, false, true}).Bools()
	check("bool", err, slices.Equal(b, []bool{true, false, false, true}))
	s, err := inferbridge.NewStrings("x", shape, []string{"", "a", "héllo", "\x00\xff"}).Strings()
	check("bytes", err, slices.Equal(s, []string{"", "a", "héllo", "\x00\xff"}))
	h, err := inferbridge.NewFP16("x", shape, []uint16{0x3c00, 0xc000, 0x7bff, 0}).FP16Bits()
	check("fp16", err, slices.Equal(h, []uint16{0x3c00, 0xc000, 0x7bff, 0}))

	if _, err := inferbridge.NewFP32("x", []int64{3}, []float32{1, 2}).Float32s(); err == nil {
		t.Error("data shorter than the shape must not read")
	}
	if _, err := inferbridge.NewInt32("x", []int64{1}, []int32{1}).Int64s(); err == nil {
		t.Error("reading INT32 as INT64 must fail")
	}
	var missing *inferbridge.Tensor
	if _, err := missing.Float32s(); err == nil {
		t.Error("a nil tensor must not read")
	}
	if err := inferbridge.NewFP32("x", []int64{2, 3}, make([]float32, 6)).CheckShape(-1, 3); err != nil {
		t.Error(err)
	}
	if err := inferbridge.NewFP32("x", []int64{2, 3}, make([]float32, 6)).CheckShape(2); err == nil {
		t.Error("rank mismatch must fail CheckShape")
	}
	if _, err := inferbridge.DecodeBytes([]byte{5, 0, 0, 0, 'a'}); err == nil {
		t.Error("truncated BYTES must fail")
	}
}

func TestUnitFP16(t *testing.T) {
	// Every finite half value survives float32 and back.
	for h := 0; h < 1<<16; h++ {
		bits := uint16(h)
		if bits&0x7c00 == 0x7c00 && bits&0x3ff != 0 {
			continue // NaN payloads are not preserved
		}
		if got := inferbridge.Float32ToFP16(inferbridge.FP16ToFloat32(bits)); got != bits {
			t.Fatalf("%#04x -> %v -> %#04x", bits, inferbridge.FP16ToFloat32(bits), got)
		}
	}
	cases := map[float32]uint16{
		1: 0x3c00, -2: 0xc000, 65504: 0x7bff, 65520: 0x7c00, 1e10: 0x7c00,
		6.103515625e-05: 0x0400, 5.960464477539063e-08: 0x0001, 1e-9: 0,
		1.0009765625: 0x3c01, 1.00048828125: 0x3c00, // a tie rounds to even
		1.00146484375: 0x3c02, 0.333333333: 0x3555,
	}
	for f, want := range cases {
		if got := inferbridge.Float32ToFP16(f); got != want {
			t.Errorf("Float32ToFP16(%v) = %#04x, want %#04x", f, got, want)
		}
	}
	if !math.IsNaN(float64(inferbridge.FP16ToFloat32(inferbridge.Float32ToFP16(float32(math.NaN()))))) {
		t.Error("NaN must stay NaN")
	}
}

func TestUnitErrorMatching(t *testing.T) {
	err := error(&inferbridge.Error{Op: "infer m", Code: inferbridge.CodeNotFound, HTTPStatus: 404, Message: "unknown model 'm'"})
	if !errors.Is(err, inferbridge.ErrNotFound) || errors.Is(err, inferbridge.ErrInvalidArgument) {
		t.Fatal("sentinel matching by code")
	}
	if got := err.Error(); got != "inferbridge: infer m: NOT_FOUND (HTTP 404): unknown model 'm'" {
		t.Fatal(got)
	}
	for status, code := range map[int]inferbridge.Code{400: inferbridge.CodeInvalidArgument, 404: inferbridge.CodeNotFound,
		413: inferbridge.CodeResourceExhausted, 429: inferbridge.CodeResourceExhausted, 503: inferbridge.CodeUnavailable,
		504: inferbridge.CodeDeadlineExceeded, 500: inferbridge.CodeInternal,
		403: inferbridge.CodeFailedPrecondition, 409: inferbridge.CodeAborted} {
		if got := inferbridge.CodeFromHTTPStatus(status); got != code {
			t.Errorf("HTTP %d -> %v, want %v", status, got, code)
		}
	}
	if inferbridge.CodeOf(context.Canceled) != inferbridge.CodeCanceled {
		t.Error("context.Canceled is CANCELLED")
	}
}

// fakeREST answers like an inferbridge REST server and records what it was sent.
func fakeREST(t *testing.T, handler func(w http.ResponseWriter, r *http.Request, body []byte)) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		handler(w, r, body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestUnitRESTSendsTimeoutAndBinaryBody(t *testing.T) {
	var header map[string]any
	var rawTail []byte
	url := fakeREST(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		n, _ := strconv.Atoi(r.Header.Get("Inference-Header-Content-Length"))
		_ = json.Unmarshal(body[:n], &header)
		rawTail = body[n:]
		out := []byte(`{"model_name":"m","model_version":"1","outputs":[{"name":"y","datatype":"INT32","shape":[2],"parameters":{"binary_data_size":8}}]}`)
		w.Header().Set("Inference-Header-Content-Length", strconv.Itoa(len(out)))
		_, _ = w.Write(append(out, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff))
	})
	client, _ := inferbridge.NewRESTClient(url)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := client.Infer(ctx, &inferbridge.InferRequest{Model: "m", Inputs: []*inferbridge.Tensor{inferbridge.NewInt32("x", []int64{1}, []int32{7})}})
	if err != nil {
		t.Fatal(err)
	}
	params := header["parameters"].(map[string]any)
	timeout := params["timeout"].(float64)
	if timeout <= 1.5e6 || timeout > 2e6 {
		t.Fatalf("timeout parameter %v µs, want about 2e6", timeout)
	}
	if params["binary_data_output"] != true || !bytes.Equal(rawTail, []byte{7, 0, 0, 0}) {
		t.Fatalf("binary request: %v %v", header, rawTail)
	}
	if y, err := resp.Output("y").Int32s(); err != nil || !slices.Equal(y, []int32{1, -1}) {
		t.Fatalf("binary response: %v %v", y, err)
	}
}

func TestUnitRESTCancellation(t *testing.T) {
	release := make(chan struct{})
	url := fakeREST(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	defer close(release)
	client, _ := inferbridge.NewRESTClient(url)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err := client.Live(ctx)
	if !errors.Is(err, inferbridge.ErrCanceled) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled call: %v", err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = client.Live(ctx)
	if !errors.Is(err, inferbridge.ErrDeadlineExceeded) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("deadline: %v", err)
	}
}

type fakeInference struct {
	inferencepb.UnimplementedGRPCInferenceServiceServer
	deadlines chan time.Duration
}

func (f *fakeInference) ModelInfer(ctx context.Context, req *inferencepb.ModelInferRequest) (*inferencepb.ModelInferResponse, error) {
	deadline, ok := ctx.Deadline()
	if ok {
		f.deadlines <- time.Until(deadline)
	} else {
		f.deadlines <- 0
	}
	if req.GetId() == "block" {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return &inferencepb.ModelInferResponse{ModelName: req.GetModelName()}, nil
}

func TestUnitGRPCDeadlineAndCancellation(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	fake := &fakeInference{deadlines: make(chan time.Duration, 4)}
	inferencepb.RegisterGRPCInferenceServiceServer(srv, fake)
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	client, err := grpcclient.New(lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	req := &inferbridge.InferRequest{Model: "m", Inputs: []*inferbridge.Tensor{inferbridge.NewInt32("x", []int64{1}, []int32{7})}}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := client.Infer(ctx, req); err != nil {
		t.Fatal(err)
	}
	if left := <-fake.deadlines; left < 2*time.Second || left > 3*time.Second {
		t.Fatalf("server saw a deadline %v away, want about 3s", left)
	}

	blocking := *req
	blocking.ID = "block"
	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err = client.Infer(ctx, &blocking)
	if !errors.Is(err, inferbridge.ErrCanceled) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled call: %v", err)
	}
	<-fake.deadlines

	ctx, cancel = context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = client.Infer(ctx, &blocking)
	var e *inferbridge.Error
	if !errors.Is(err, inferbridge.ErrDeadlineExceeded) || !errors.As(err, &e) || e.GRPCCode != 4 {
		t.Fatalf("deadline: %v", err)
	}
}

func TestUnitRESTReusesConnections(t *testing.T) {
	var mu sync.Mutex
	opened := 0
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"live":true}`))
	}))
	srv.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			mu.Lock()
			opened++
			mu.Unlock()
		}
	}
	srv.Start()
	defer srv.Close()
	client, _ := inferbridge.NewRESTClient(srv.URL)
	const workers, calls = 16, 25
	round := func() {
		var wg sync.WaitGroup
		for g := 0; g < workers; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < calls; i++ {
					if live, err := client.Live(context.Background()); err != nil || !live {
						t.Error(live, err)
						return
					}
				}
			}()
		}
		wg.Wait()
	}
	round() // opens about one connection per goroutine (a few more while dials race)
	mu.Lock()
	first := opened
	mu.Unlock()
	round() // the idle connections serve all of it
	mu.Lock()
	defer mu.Unlock()
	if first > 4*workers || opened != first {
		t.Fatalf("%d goroutines opened %d connections, then %d more; want keep-alive reuse", workers, first, opened-first)
	}
}

func TestUnitRESTErrorStatuses(t *testing.T) {
	url := fakeREST(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		// The "model name" is the status to answer with: /v2/models/404.
		status, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/v2/models/"))
		if status == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", "3")
		}
		w.WriteHeader(status)
		_, _ = w.Write([]byte(`{"error":"said the server"}`))
	})
	client, _ := inferbridge.NewRESTClient(url)
	for status, sentinel := range map[int]error{
		400: inferbridge.ErrInvalidArgument, 404: inferbridge.ErrNotFound, 413: inferbridge.ErrResourceExhausted,
		429: inferbridge.ErrResourceExhausted, 500: inferbridge.ErrInternal, 503: inferbridge.ErrUnavailable,
		504: inferbridge.ErrDeadlineExceeded,
	} {
		_, err := client.ModelMetadata(context.Background(), strconv.Itoa(status), "")
		var e *inferbridge.Error
		if !errors.Is(err, sentinel) || !errors.As(err, &e) || e.HTTPStatus != status || e.Message != "said the server" {
			t.Errorf("HTTP %d: %v", status, err)
		}
		if status == 429 && e.RetryAfter != 3*time.Second {
			t.Errorf("Retry-After: %v", e.RetryAfter)
		}
	}
}
