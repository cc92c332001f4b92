package grpcclient_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	inferbridge "github.com/inferbridge/inferbridge/clients/go"
	"github.com/inferbridge/inferbridge/clients/go/grpcclient"
)

// Connect, infer with a deadline, and tell "no such model" apart from other failures.
// (Runnable against a live server: see Example_grpc in the inferbridge package, which the
// test suite runs.)
func ExampleNew() {
	client, err := grpcclient.New("127.0.0.1:8001")
	if err != nil {
		panic(err)
	}
	defer client.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := client.Infer(ctx, &inferbridge.InferRequest{
		Model:  "iris_onnx",
		Inputs: []*inferbridge.Tensor{inferbridge.NewFP32("input", []int64{1, 4}, []float32{5.1, 3.5, 1.4, 0.2})},
	})
	switch {
	case errors.Is(err, inferbridge.ErrNotFound):
		fmt.Println("no such model")
	case errors.Is(err, inferbridge.ErrDeadlineExceeded):
		fmt.Println("too slow")
	case err != nil:
		fmt.Println("failed:", err)
	default:
		labels, _ := resp.Output("label").Int64s()
		fmt.Println("class", labels[0])
	}
}
