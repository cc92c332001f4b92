package inferbridge_test

import (
	"context"
	"errors"
	"testing"

	inferbridge "github.com/inferbridge/inferbridge/clients/go"
	"github.com/inferbridge/inferbridge/clients/go/grpcclient"
	"github.com/inferbridge/inferbridge/clients/go/inferencepb"
)

// modelConfigClient is what both clients offer for a model's config.
type modelConfigClient interface {
	ModelConfig(ctx context.Context, name, version string) (*inferencepb.ModelConfig, error)
}

// TestModelConfig reads iris_onnx's config (config.yaml: runtime onnx) as Triton's
// ModelConfig over REST and gRPC.
func TestModelConfig(t *testing.T) {
	rest, err := inferbridge.NewRESTClient(restURL)
	if err != nil {
		t.Fatal(err)
	}
	defer rest.Close()
	grpc, err := grpcclient.New(grpcAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer grpc.Close()
	for name, c := range map[string]modelConfigClient{"rest": rest, "grpc": grpc} {
		t.Run(name, func(t *testing.T) {
			ctx := ctxTimeout(t)
			config, err := c.ModelConfig(ctx, "iris_onnx", "")
			if err != nil {
				t.Fatal(err)
			}
			if config.GetName() != "iris_onnx" || config.GetPlatform() != "onnxruntime_onnx" || config.GetBackend() != "onnxruntime" {
				t.Fatalf("name/platform/backend: %q %q %q", config.GetName(), config.GetPlatform(), config.GetBackend())
			}
			inputs := config.GetInput()
			if len(inputs) != 1 || inputs[0].GetDataType() != inferencepb.DataType_TYPE_FP32 || len(inputs[0].GetDims()) == 0 {
				t.Fatalf("inputs: %v", inputs)
			}
			if len(config.GetOutput()) == 0 || config.GetVersionPolicy().GetLatest().GetNumVersions() != 1 {
				t.Fatalf("outputs or version policy: %v", config)
			}
			if g := config.GetInstanceGroup(); len(g) != 1 || g[0].GetKind() != inferencepb.ModelInstanceGroup_KIND_CPU || g[0].GetCount() != 1 {
				t.Fatalf("instance groups: %v", g)
			}
			versioned, err := c.ModelConfig(ctx, "iris_onnx", "1")
			if err != nil || versioned.GetName() != "iris_onnx" {
				t.Fatalf("version 1: %v %v", versioned, err)
			}
			if _, err := c.ModelConfig(ctx, "no_such_model", ""); !errors.Is(err, inferbridge.ErrNotFound) {
				t.Fatalf("unknown model: %v, want ErrNotFound", err)
			}
		})
	}
	document, err := rest.ModelConfigDocument(ctxTimeout(t), "iris_onnx", "")
	if err != nil {
		t.Fatal(err)
	}
	own, ok := document[inferbridge.OwnConfigKey].(map[string]any)
	if !ok || own["runtime"] != "onnx" || document["name"] != "iris_onnx" {
		t.Fatalf("document: %v", document)
	}
}
