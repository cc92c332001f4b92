package inferbridge

import (
	"context"
	"fmt"
)

// InferRequest is one inference call.
type InferRequest struct {
	// Model is the model name.
	Model string
	// Version is the model version; empty selects the server's default version.
	Version string
	// ID is an optional request id, echoed in the response.
	ID string
	// Inputs are the input tensors, in any order.
	Inputs []*Tensor
	// Outputs names the outputs wanted; empty asks for every output.
	Outputs []string
	// OutputParameters are the parameters of requested outputs, by name, such as those
	// that place an output in shared memory (OutputToSharedMemory sets them).
	OutputParameters map[string]Parameters
	// Parameters are request-level protocol parameters (the clients add "timeout" over
	// REST from the context's deadline).
	Parameters Parameters
}

// InferResponse is the answer to an InferRequest.
type InferResponse struct {
	// Model is the name of the model that answered.
	Model string
	// Version is the version that answered.
	Version string
	// ID echoes the request id.
	ID string
	// Parameters are response-level protocol parameters.
	Parameters Parameters
	// Outputs are the output tensors, in the server's order.
	Outputs []*Tensor
}

// Output returns the named output, or nil when the response has none by that name; the
// typed readers of a nil *Tensor return an error.
func (r *InferResponse) Output(name string) *Tensor {
	for _, t := range r.Outputs {
		if t.Name == name {
			return t
		}
	}
	return nil
}

// ServerMetadata describes the server: GET /v2, or ServerMetadata over gRPC.
type ServerMetadata struct {
	// Name is the server's name.
	Name string `json:"name"`
	// Version is the server's version.
	Version string `json:"version"`
	// Extensions lists the protocol extensions it implements.
	Extensions []string `json:"extensions"`
}

// TensorMetadata describes an input or output a model declares; -1 in Shape is a
// variable dimension.
type TensorMetadata struct {
	// Name is the tensor's name.
	Name string `json:"name"`
	// Datatype is the tensor's datatype.
	Datatype Datatype `json:"datatype"`
	// Shape is the declared shape, -1 for a variable dimension.
	Shape []int64 `json:"shape"`
}

// ModelMetadata describes a model: GET /v2/models/{m}, or ModelMetadata over gRPC.
type ModelMetadata struct {
	// Name is the model's name.
	Name string `json:"name"`
	// Versions lists the versions being served.
	Versions []string `json:"versions"`
	// Platform names the runtime, such as "onnx_onnxv1".
	Platform string `json:"platform"`
	// Inputs are the declared inputs.
	Inputs []TensorMetadata `json:"inputs"`
	// Outputs are the declared outputs.
	Outputs []TensorMetadata `json:"outputs"`
}

// Client is what both transports offer; RESTClient and grpcclient.Client implement it,
// and both are safe for concurrent use.
type Client interface {
	// Live reports whether the server is live.
	Live(ctx context.Context) (bool, error)
	// Ready reports whether the server is ready to serve.
	Ready(ctx context.Context) (bool, error)
	// ModelReady reports whether a model (version "" for the default) is ready.
	ModelReady(ctx context.Context, model, version string) (bool, error)
	// ServerMetadata describes the server.
	ServerMetadata(ctx context.Context) (*ServerMetadata, error)
	// ModelMetadata describes a model (version "" for the default).
	ModelMetadata(ctx context.Context, model, version string) (*ModelMetadata, error)
	// RepositoryIndex lists the models in the server's repository with their states;
	// readyOnly keeps only the versions that are ready.
	RepositoryIndex(ctx context.Context, readyOnly bool) ([]ModelIndex, error)
	// LoadModel loads (or reloads) a model, with the options' config and files in place of
	// the repository's.
	LoadModel(ctx context.Context, name string, opts ...LoadOption) error
	// UnloadModel unloads every version of a model.
	UnloadModel(ctx context.Context, name string, opts ...UnloadOption) error
	// ModelStatistics returns the statistics of a model version; version "" is every
	// version of the model, and name "" every model.
	ModelStatistics(ctx context.Context, name, version string) ([]ModelStatistics, error)
	// Infer runs one inference.
	Infer(ctx context.Context, req *InferRequest) (*InferResponse, error)
	// Predict sends one feature row to the server's default model (the seed shortcut:
	// POST /predict, or ai.AIService/Predict) and returns the predicted class as text.
	Predict(ctx context.Context, features []float32) (string, error)
	// Close releases the client's connections.
	Close() error
}

// ValidateRequest checks a request before it is sent: a model name, at least one input,
// well-formed tensors with distinct names.
func ValidateRequest(req *InferRequest) error {
	if req == nil {
		return fmt.Errorf("nil request")
	}
	if req.Model == "" {
		return fmt.Errorf("request has no model name")
	}
	if len(req.Inputs) == 0 {
		return fmt.Errorf("request has no inputs")
	}
	seen := make(map[string]bool, len(req.Inputs))
	for _, t := range req.Inputs {
		if err := t.Validate(); err != nil {
			return err
		}
		if seen[t.Name] {
			return fmt.Errorf("input %q appears more than once", t.Name)
		}
		seen[t.Name] = true
	}
	return nil
}
