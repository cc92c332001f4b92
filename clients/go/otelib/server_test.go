package otelib_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	inferbridge "github.com/inferbridge/inferbridge/clients/go"
	"github.com/inferbridge/inferbridge/clients/go/grpcclient"
	"github.com/inferbridge/inferbridge/clients/go/internal/testserver"
	"github.com/inferbridge/inferbridge/clients/go/otelib"
	"go.opentelemetry.io/otel/trace"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// otlpReceiver is an OTLP/HTTP trace endpoint that keeps the parent of every span by
// trace id and span id.
type otlpReceiver struct {
	mu      sync.Mutex
	parents map[[2]string]bool // {trace id, parent span id} of every span received
}

func (o *otlpReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		gz, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = gz
	}
	data, err := io.ReadAll(body)
	var req collectortrace.ExportTraceServiceRequest
	if err == nil {
		err = proto.Unmarshal(data, &req)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	o.mu.Lock()
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				var tid trace.TraceID
				var pid trace.SpanID
				copy(tid[:], s.GetTraceId())
				copy(pid[:], s.GetParentSpanId())
				o.parents[[2]string{tid.String(), pid.String()}] = true
			}
		}
	}
	o.mu.Unlock()
	out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = io.Copy(w, bytes.NewReader(out))
}

func (o *otlpReceiver) hasChildOf(sc trace.SpanContext) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.parents[[2]string{sc.TraceID().String(), sc.SpanID().String()}]
}

// TestServerContinuesTrace: a real inferbridge server with OpenTelemetry on exports spans
// whose parent is the caller's span, over REST and over gRPC.
func TestServerContinuesTrace(t *testing.T) {
	python := testserver.FindPython("..")
	if python == "" {
		t.Skip("no Python found (set INFERBRIDGE_PYTHON)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if ok, err := testserver.ServeHasFlag(ctx, python, "--trace-mode"); err != nil || !ok {
		t.Skipf("inferbridge serve has no --trace-mode (%v)", err)
	}
	receiver := &otlpReceiver{parents: map[[2]string]bool{}}
	collector := httptest.NewServer(receiver)
	defer collector.Close()
	repo := t.TempDir()
	if err := testserver.LinkExamples(ctx, python, repo, "iris_onnx"); err != nil {
		t.Fatal(err)
	}
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "100") // export every 100 ms, not every 5 s
	server, err := testserver.Start(python, repo, 3*time.Minute, "--trace-mode", "opentelemetry",
		"--trace-rate", "1", "--trace-endpoint", collector.URL, "--trace-protocol", "http/protobuf")
	if err != nil {
		t.Fatal(err)
	}
	defer server.Stop()
	defer func() {
		if t.Failed() {
			t.Logf("server output:\n%s", server.Output())
		}
	}()

	rest, err := inferbridge.NewRESTClient(server.RESTURL, inferbridge.WithTransportMiddleware(otelib.Middleware()))
	if err != nil {
		t.Fatal(err)
	}
	defer rest.Close()
	grpc, err := grpcclient.New(server.GRPCAddr, otelib.DialOption())
	if err != nil {
		t.Fatal(err)
	}
	defer grpc.Close()
	req := &inferbridge.InferRequest{Model: "iris_onnx", Inputs: []*inferbridge.Tensor{
		inferbridge.NewFP32("input", []int64{1, 4}, []float32{5.1, 3.5, 1.4, 0.2})}}
	spans := map[string]trace.SpanContext{}
	for name, c := range map[string]inferbridge.Client{"rest": rest, "grpc": grpc} {
		callCtx, sc := startSpan(t)
		if _, err := c.Infer(callCtx, req); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		spans[name] = sc
	}
	deadline := time.Now().Add(20 * time.Second)
	for name, sc := range spans {
		for !receiver.hasChildOf(sc) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: no server span with parent %s in trace %s", name, sc.SpanID(), sc.TraceID())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}
