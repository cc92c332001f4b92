package inferbridge_test

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	inferbridge "github.com/inferbridge/inferbridge/clients/go"
	"github.com/inferbridge/inferbridge/clients/go/grpcclient"
)

// TestStreamInfer sends many iris_onnx requests and one bad one on one ModelStreamInfer
// stream: every good one is answered with its ID and label, the bad one with an error
// that names it, and the stream ends after CloseSend.
func TestStreamInfer(t *testing.T) {
	c, err := grpcclient.New(grpcAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := ctxTimeout(t)
	s, err := c.StreamInfer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string][]float32{"setosa": {5.1, 3.5, 1.4, 0.2}, "virginica": {6.7, 3.0, 5.2, 2.3}}
	want := map[string]int64{}
	for i := 0; i < 10; i++ {
		name := []string{"setosa", "virginica"}[i%2]
		id := fmt.Sprintf("%s-%d", name, i)
		want[id] = map[string]int64{"setosa": 0, "virginica": 2}[name]
		req := &inferbridge.InferRequest{Model: "iris_onnx", ID: id, Inputs: []*inferbridge.Tensor{
			inferbridge.NewFP32("input", []int64{1, 4}, rows[name]),
		}, Parameters: inferbridge.Parameters{grpcclient.EnableFinalResponse: true}}
		if err := s.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	bad := &inferbridge.InferRequest{Model: "iris_onnx", ID: "bad", Inputs: []*inferbridge.Tensor{
		inferbridge.NewFP32("nope", []int64{1, 4}, rows["setosa"]),
	}}
	if err := s.Send(bad); err != nil {
		t.Fatal(err)
	}
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	failed := 0
	for {
		resp, err := s.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		var e *inferbridge.Error
		if errors.As(err, &e) && resp != nil {
			if resp.ID != "bad" || !strings.Contains(e.Message, "[request id: bad]") {
				t.Fatalf("error for %q: %v", resp.ID, err)
			}
			failed++
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if final, _ := resp.Parameters[grpcclient.FinalResponseParameter].(bool); !final {
			t.Fatalf("%s: an ordinary model's one response is final: %v", resp.ID, resp.Parameters)
		}
		labels, err := resp.Output("label").Int64s()
		if err != nil || len(labels) != 1 {
			t.Fatalf("%s: label %v %v", resp.ID, labels, err)
		}
		got[resp.ID] = labels[0]
	}
	if failed != 1 || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v (%d failed), want %v", got, failed, want)
	}
}
