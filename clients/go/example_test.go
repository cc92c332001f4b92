package inferbridge_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	inferbridge "github.com/inferbridge/inferbridge/clients/go"
	"github.com/inferbridge/inferbridge/clients/go/grpcclient"
)

// Infer with the REST client: one iris flower in, its class and class probabilities out.
// restURL is the server's REST address, such as "http://127.0.0.1:8000".
func ExampleRESTClient_Infer() {
	client, err := inferbridge.NewRESTClient(restURL)
	if err != nil {
		panic(err)
	}
	defer client.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := client.Infer(ctx, &inferbridge.InferRequest{
		Model:  "iris_onnx",
		Inputs: []*inferbridge.Tensor{inferbridge.NewFP32("input", []int64{2, 4}, []float32{5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3})},
	})
	if err != nil {
		panic(err)
	}
	labels, err := resp.Output("label").Int64s()
	if err != nil {
		panic(err)
	}
	probabilities := resp.Output("probabilities")
	fmt.Println("labels:", labels)
	fmt.Println("probabilities shape:", probabilities.Shape, probabilities.CheckShape(-1, 3) == nil)
	// Output:
	// labels: [0 2]
	// probabilities shape: [2 3] true
}

// The seed-compatible shortcut: POST /predict with a bare feature row.
func ExampleRESTClient_Predict() {
	client, err := inferbridge.NewRESTClient(restURL)
	if err != nil {
		panic(err)
	}
	class, err := client.Predict(context.Background(), []float32{5.1, 3.5, 1.4, 0.2})
	if err != nil {
		panic(err)
	}
	fmt.Println("class", class)
	// Output: class 0
}

// The same inference over gRPC, with grpcclient; the context's deadline becomes the gRPC
// deadline. grpcAddr is the server's gRPC address, such as "127.0.0.1:8001".
func Example_grpc() {
	client, err := grpcclient.New(grpcAddr)
	if err != nil {
		panic(err)
	}
	defer client.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := client.Infer(ctx, &inferbridge.InferRequest{
		Model:  "iris_onnx",
		Inputs: []*inferbridge.Tensor{inferbridge.NewFP32("input", []int64{1, 4}, []float32{5.9, 3.0, 4.2, 1.5})},
	})
	if err != nil {
		panic(err)
	}
	labels, _ := resp.Output("label").Int64s()
	fmt.Println("label:", labels[0])

	// ai.AIService/Predict, the seed's shortcut, on the same connection.
	class, err := client.Predict(ctx, []float32{5.1, 3.5, 1.4, 0.2})
	if err != nil {
		panic(err)
	}
	fmt.Println("predict:", class)
	// Output:
	// label: 1
	// predict: 0
}

// Errors carry the status and the server's message, and match by class whichever
// transport produced them.
func Example_errors() {
	rest, _ := inferbridge.NewRESTClient(restURL)
	grpc, _ := grpcclient.New(grpcAddr)
	defer grpc.Close()
	req := &inferbridge.InferRequest{
		Model:  "no_such_model",
		Inputs: []*inferbridge.Tensor{inferbridge.NewFP32("input", []int64{1, 4}, []float32{1, 2, 3, 4})},
	}
	for _, client := range []inferbridge.Client{rest, grpc} {
		_, err := client.Infer(context.Background(), req)
		var e *inferbridge.Error
		if errors.Is(err, inferbridge.ErrNotFound) && errors.As(err, &e) {
			fmt.Printf("not found: HTTP %d, gRPC code %d: %s\n", e.HTTPStatus, e.GRPCCode, e.Message)
		}
	}
	// Output:
	// not found: HTTP 404, gRPC code 0: Request for unknown model: 'no_such_model' is not found
	// not found: HTTP 0, gRPC code 5: Request for unknown model: 'no_such_model' is not found
}

// Load a model, with a config of its own, and react to the server's model control mode.
// The test server runs in the default mode "none", which refuses loads; a server started
// with --model-control-mode explicit loads it.
func ExampleRESTClient_LoadModel() {
	client, err := inferbridge.NewRESTClient(restURL)
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	config := map[string]any{"runtime": "onnx", "max_batch_size": 16}
	err = client.LoadModel(ctx, "iris_onnx", inferbridge.WithModelConfigValue(config))
	switch {
	case errors.Is(err, inferbridge.ErrFailedPrecondition):
		fmt.Println("the server does not load models on request")
	case errors.Is(err, inferbridge.ErrNotFound):
		fmt.Println("no such model in the server's repository")
	case err != nil:
		fmt.Println("load failed:", err)
	default:
		fmt.Println("loaded")
	}
	// Output: the server does not load models on request
}

// A model's cumulative statistics (Triton's statistics extension), per version.
func ExampleRESTClient_ModelStatistics() {
	client, err := inferbridge.NewRESTClient(restURL)
	if err != nil {
		panic(err)
	}
	stats, err := client.ModelStatistics(context.Background(), "digits", "")
	if err != nil {
		panic(err)
	}
	for _, s := range stats {
		// The counts grow with every request: s.InferenceCount (batch elements),
		// s.InferenceStats.Success.Count (requests), s.InferenceStats.ComputeInfer.Mean().
		fmt.Printf("%s version %s\n", s.Name, s.Version)
	}
	// Output: digits version 1
}
