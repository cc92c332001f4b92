package inferbridge_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	inferbridge "github.com/inferbridge/inferbridge/clients/go"
	"github.com/inferbridge/inferbridge/clients/go/grpcclient"
)

// exampleClients are every client (and REST encoding) against the examples server.
func exampleClients(t *testing.T) map[string]inferbridge.Client {
	t.Helper()
	restBinary, err := inferbridge.NewRESTClient(restURL)
	if err != nil {
		t.Fatal(err)
	}
	restJSON, err := inferbridge.NewRESTClient(restURL, inferbridge.WithEncoding(inferbridge.EncodingJSON))
	if err != nil {
		t.Fatal(err)
	}
	grpc, err := grpcclient.New(grpcAddr)
	if err != nil {
		t.Fatal(err)
	}
	clients := map[string]inferbridge.Client{"rest_binary": restBinary, "rest_json": restJSON, "grpc": grpc}
	t.Cleanup(func() {
		for _, c := range clients {
			_ = c.Close()
		}
	})
	return clients
}

func ctxTimeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var irisRows = []float32{5.1, 3.5, 1.4, 0.2, 5.9, 3.0, 4.2, 1.5, 6.7, 3.0, 5.2, 2.3}

func TestHealthAndMetadata(t *testing.T) {
	for name, c := range exampleClients(t) {
		t.Run(name, func(t *testing.T) {
			ctx := ctxTimeout(t)
			if live, err := c.Live(ctx); err != nil || !live {
				t.Fatalf("live: %v %v", live, err)
			}
			if ready, err := c.Ready(ctx); err != nil || !ready {
				t.Fatalf("ready: %v %v", ready, err)
			}
			if ready, err := c.ModelReady(ctx, "iris_onnx", ""); err != nil || !ready {
				t.Fatalf("model ready: %v %v", ready, err)
			}
			if ready, err := c.ModelReady(ctx, "iris_onnx", "1"); err != nil || !ready {
				t.Fatalf("model version ready: %v %v", ready, err)
			}
			if ready, err := c.ModelReady(ctx, "no_such_model", ""); err != nil || ready {
				t.Fatalf("unknown model ready: %v %v", ready, err)
			}
			server, err := c.ServerMetadata(ctx)
			if err != nil || server.Name != "inferbridge" || !slices.Contains(server.Extensions, "binary_tensor_data") {
				t.Fatalf("server metadata: %+v %v", server, err)
			}
			model, err := c.ModelMetadata(ctx, "iris_onnx", "")
			if err != nil {
				t.Fatal(err)
			}
			want := `&{iris_onnx [1] onnx_onnxv1 [{input FP32 [-1 4]}] [{label INT64 [-1]} {probabilities FP32 [-1 3]}]}`
			if got := fmt.Sprint(model); got != want {
				t.Fatalf("model metadata %s, want %s", got, want)
			}
			if _, err := c.ModelMetadata(ctx, "iris_onnx", "9"); !errors.Is(err, inferbridge.ErrNotFound) {
				t.Fatalf("unknown version: %v", err)
			}
			index, err := c.RepositoryIndex(ctx, false)
			if err != nil || !slices.ContainsFunc(index, func(e inferbridge.ModelIndex) bool {
				return e.Name == "digits" && e.Version == "1" && e.State == "READY"
			}) {
				t.Fatalf("repository index: %+v %v", index, err)
			}
		})
	}
}

func TestInferIris(t *testing.T) {
	for name, c := range exampleClients(t) {
		t.Run(name, func(t *testing.T) {
			ctx := ctxTimeout(t)
			in := inferbridge.NewFP32("input", []int64{3, 4}, irisRows)
			resp, err := c.Infer(ctx, &inferbridge.InferRequest{Model: "iris_onnx", ID: "req-1", Inputs: []*inferbridge.Tensor{in}})
			if err != nil {
				t.Fatal(err)
			}
			if resp.Model != "iris_onnx" || resp.Version != "1" || resp.ID != "req-1" {
				t.Fatalf("response header %+v", resp)
			}
			labels, err := resp.Output("label").Int64s()
			if err != nil || !slices.Equal(labels, []int64{0, 1, 2}) {
				t.Fatalf("labels %v %v", labels, err)
			}
			probs := resp.Output("probabilities")
			if err := probs.CheckShape(3, 3); err != nil {
				t.Fatal(err)
			}
			p, err := probs.Float32s()
			if err != nil {
				t.Fatal(err)
			}
			for row := 0; row < 3; row++ {
				sum := p[3*row] + p[3*row+1] + p[3*row+2]
				if math.Abs(float64(sum)-1) > 1e-4 {
					t.Fatalf("row %d probabilities %v sum to %v", row, p[3*row:3*row+3], sum)
				}
			}
			// The scikit-learn model answers FP64 probabilities; ask for that output only.
			resp, err = c.Infer(ctx, &inferbridge.InferRequest{Model: "iris", Inputs: []*inferbridge.Tensor{in}, Outputs: []string{"probabilities"}})
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.Outputs) != 1 {
				t.Fatalf("asked for one output, got %d", len(resp.Outputs))
			}
			if p64, err := resp.Output("probabilities").Float64s(); err != nil || len(p64) != 9 {
				t.Fatalf("FP64 probabilities %v %v", p64, err)
			}
			if _, err := resp.Output("label").Int64s(); err == nil {
				t.Fatal("reading a missing output should fail")
			}
			if _, err := resp.Output("probabilities").Float32s(); err == nil {
				t.Fatal("reading FP64 as FP32 should fail")
			}
		})
	}
}

func TestPredictShortcuts(t *testing.T) {
	for name, c := range exampleClients(t) {
		t.Run(name, func(t *testing.T) {
			class, err := c.Predict(ctxTimeout(t), irisRows[8:12])
			if err != nil || class != "2" {
				t.Fatalf("predict %q %v", class, err)
			}
		})
	}
	rest, _ := inferbridge.NewRESTClient(restURL)
	classes, err := rest.PredictBatch(ctxTimeout(t), [][]float32{irisRows[0:4], irisRows[4:8]})
	if err != nil || !slices.Equal(classes, []string{"0", "1"}) {
		t.Fatalf("predict batch %v %v", classes, err)
	}
	var predictions []int
	if err := rest.PredictV1(ctxTimeout(t), "iris_onnx", [][]float32{irisRows[8:12]}, &predictions); err != nil || !slices.Equal(predictions, []int{2}) {
		t.Fatalf("v1 predict %v %v", predictions, err)
	}
}

func TestErrorsCarryStatusAndMessage(t *testing.T) {
	for name, c := range exampleClients(t) {
		t.Run(name, func(t *testing.T) {
			ctx := ctxTimeout(t)
			_, err := c.Infer(ctx, &inferbridge.InferRequest{Model: "iris_onnx", Inputs: []*inferbridge.Tensor{
				inferbridge.NewFP32("input", []int64{1, 3}, irisRows[:3])}})
			var e *inferbridge.Error
			if !errors.Is(err, inferbridge.ErrInvalidArgument) || !errors.As(err, &e) {
				t.Fatalf("wrong shape: %v", err)
			}
			if e.Message == "" || (e.HTTPStatus != 400 && e.GRPCCode != 3) {
				t.Fatalf("error detail: %#v", e)
			}
			// A malformed tensor never leaves the client.
			_, err = c.Infer(ctx, &inferbridge.InferRequest{Model: "iris_onnx", Inputs: []*inferbridge.Tensor{
				inferbridge.NewFP32("input", []int64{1, 4}, irisRows[:3])}})
			if !errors.As(err, &e) || e.Code != inferbridge.CodeInvalidArgument || e.HTTPStatus != 0 || e.GRPCCode != 0 {
				t.Fatalf("client-side validation: %v", err)
			}
		})
	}
}

func TestUnreachableServerIsUnavailable(t *testing.T) {
	rest, _ := inferbridge.NewRESTClient("http://127.0.0.1:1")
	grpc, err := grpcclient.New("127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	defer grpc.Close()
	for _, c := range []inferbridge.Client{rest, grpc} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := c.Live(ctx)
		cancel()
		if !errors.Is(err, inferbridge.ErrUnavailable) {
			t.Fatalf("%T: %v", c, err)
		}
	}
}

func TestExpiredDeadline(t *testing.T) {
	for name, c := range exampleClients(t) {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
			defer cancel()
			_, err := c.Infer(ctx, &inferbridge.InferRequest{Model: "iris_onnx", Inputs: []*inferbridge.Tensor{
				inferbridge.NewFP32("input", []int64{1, 4}, irisRows[:4])}})
			if !errors.Is(err, inferbridge.ErrDeadlineExceeded) || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("expired deadline: %v", err)
			}
		})
	}
}

// TestConcurrentUse shares each client between many goroutines (run with -race too).
func TestConcurrentUse(t *testing.T) {
	for name, c := range exampleClients(t) {
		t.Run(name, func(t *testing.T) {
			ctx := ctxTimeout(t)
			var wg sync.WaitGroup
			errs := make(chan error, 32)
			for g := 0; g < 32; g++ {
				wg.Add(1)
				go func(g int) {
					defer wg.Done()
					for i := 0; i < 10; i++ {
						row := (g + i) % 3
						resp, err := c.Infer(ctx, &inferbridge.InferRequest{Model: "iris_onnx", Inputs: []*inferbridge.Tensor{
							inferbridge.NewFP32("input", []int64{1, 4}, irisRows[4*row:4*row+4])}})
						if err != nil {
							errs <- err
							return
						}
						labels, err := resp.Output("label").Int64s()
						if err != nil || labels[0] != int64(row) {
							errs <- fmt.Errorf("row %d: label %v %v", row, labels, err)
							return
						}
					}
				}(g)
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}
