package grpcclient

import (
	"context"
	"fmt"

	inferbridge "github.com/inferbridge/inferbridge/clients/go"
	"github.com/inferbridge/inferbridge/clients/go/inferencepb"
)

// RepositoryIndex lists the models in the server's repository with their states
// (RepositoryIndex); readyOnly keeps only the versions that are ready.
func (c *Client) RepositoryIndex(ctx context.Context, readyOnly bool) ([]inferbridge.ModelIndex, error) {
	r, err := c.inference.RepositoryIndex(ctx, &inferencepb.RepositoryIndexRequest{Ready: readyOnly})
	if err != nil {
		return nil, wrap(ctx, "repository index", err)
	}
	out := make([]inferbridge.ModelIndex, len(r.GetModels()))
	for i, m := range r.GetModels() {
		out[i] = inferbridge.ModelIndex{Name: m.GetName(), Version: m.GetVersion(), State: m.GetState(), Reason: m.GetReason()}
	}
	return out, nil
}

// LoadModel loads (or reloads) a model (RepositoryModelLoad), with the options' config
// and files (bytes_param) in place of the repository's. The errors are the REST client's:
// FAILED_PRECONDITION (the model control mode does not allow it) matches
// inferbridge.ErrFailedPrecondition, NOT_FOUND ErrNotFound, INVALID_ARGUMENT
// ErrInvalidArgument, ABORTED (loading already) ErrAborted.
func (c *Client) LoadModel(ctx context.Context, name string, opts ...inferbridge.LoadOption) error {
	op := "load model " + name
	o, err := inferbridge.ResolveLoadOptions(opts...)
	if err != nil {
		return &inferbridge.Error{Op: op, Code: inferbridge.CodeInvalidArgument, Message: err.Error(), Err: err}
	}
	if name == "" {
		return noModelName(op)
	}
	params, err := repositoryParameters(o.Parameters())
	if err != nil {
		return &inferbridge.Error{Op: op, Code: inferbridge.CodeInvalidArgument, Message: err.Error(), Err: err}
	}
	if _, err := c.inference.RepositoryModelLoad(ctx, &inferencepb.RepositoryModelLoadRequest{ModelName: name, Parameters: params}); err != nil {
		return wrap(ctx, op, err)
	}
	return nil
}

// UnloadModel unloads every version of a model (RepositoryModelUnload). The errors are
// those of LoadModel.
func (c *Client) UnloadModel(ctx context.Context, name string, opts ...inferbridge.UnloadOption) error {
	op := "unload model " + name
	if name == "" {
		return noModelName(op)
	}
	params, err := repositoryParameters(inferbridge.ResolveUnloadOptions(opts...).Parameters())
	if err != nil {
		return &inferbridge.Error{Op: op, Code: inferbridge.CodeInvalidArgument, Message: err.Error(), Err: err}
	}
	if _, err := c.inference.RepositoryModelUnload(ctx, &inferencepb.RepositoryModelUnloadRequest{ModelName: name, Parameters: params}); err != nil {
		return wrap(ctx, op, err)
	}
	return nil
}

func noModelName(op string) error {
	err := fmt.Errorf("no model name")
	return &inferbridge.Error{Op: op, Code: inferbridge.CodeInvalidArgument, Message: err.Error(), Err: err}
}

// repositoryParameters converts the transport-neutral parameters (bool, int64, string,
// []byte) into ModelRepositoryParameter values.
func repositoryParameters(in map[string]any) (map[string]*inferencepb.ModelRepositoryParameter, error) {
	if len(in) == 0 {
		return nil, nil
	}
	out := make(map[string]*inferencepb.ModelRepositoryParameter, len(in))
	for k, v := range in {
		p := &inferencepb.ModelRepositoryParameter{}
		switch x := v.(type) {
		case bool:
			p.ParameterChoice = &inferencepb.ModelRepositoryParameter_BoolParam{BoolParam: x}
		case int64:
			p.ParameterChoice = &inferencepb.ModelRepositoryParameter_Int64Param{Int64Param: x}
		case string:
			p.ParameterChoice = &inferencepb.ModelRepositoryParameter_StringParam{StringParam: x}
		case []byte:
			p.ParameterChoice = &inferencepb.ModelRepositoryParameter_BytesParam{BytesParam: x}
		default:
			return nil, fmt.Errorf("repository parameter %q has type %T; use bool, int64, string or []byte", k, v)
		}
		out[k] = p
	}
	return out, nil
}

// ModelStatistics returns the statistics of a model version (ModelStatistics); version ""
// is every version of the model, and name "" every model.
func (c *Client) ModelStatistics(ctx context.Context, name, version string) ([]inferbridge.ModelStatistics, error) {
	op := "model statistics " + name
	if name == "" {
		op = "model statistics"
		if version != "" {
			err := fmt.Errorf("a version needs a model name")
			return nil, &inferbridge.Error{Op: op, Code: inferbridge.CodeInvalidArgument, Message: err.Error(), Err: err}
		}
	}
	r, err := c.inference.ModelStatistics(ctx, &inferencepb.ModelStatisticsRequest{Name: name, Version: version})
	if err != nil {
		return nil, wrap(ctx, op, err)
	}
	out := make([]inferbridge.ModelStatistics, len(r.GetModelStats()))
	for i, s := range r.GetModelStats() {
		out[i] = modelStatistics(s)
	}
	return out, nil
}

// modelStatistics converts one ModelStatistics message.
func modelStatistics(s *inferencepb.ModelStatistics) inferbridge.ModelStatistics {
	is := s.GetInferenceStats()
	out := inferbridge.ModelStatistics{
		Name: s.GetName(), Version: s.GetVersion(), LastInference: s.GetLastInference(),
		InferenceCount: s.GetInferenceCount(), ExecutionCount: s.GetExecutionCount(),
		InferenceStats: inferbridge.InferStatistics{
			Success: duration(is.GetSuccess()), Fail: duration(is.GetFail()), Queue: duration(is.GetQueue()),
			ComputeInput: duration(is.GetComputeInput()), ComputeInfer: duration(is.GetComputeInfer()),
			ComputeOutput: duration(is.GetComputeOutput()),
			CacheHit:      duration(is.GetCacheHit()), CacheMiss: duration(is.GetCacheMiss()),
		},
		BatchStats: make([]inferbridge.InferBatchStatistics, len(s.GetBatchStats())),
	}
	for i, b := range s.GetBatchStats() {
		out.BatchStats[i] = inferbridge.InferBatchStatistics{
			BatchSize: b.GetBatchSize(), ComputeInput: duration(b.GetComputeInput()),
			ComputeInfer: duration(b.GetComputeInfer()), ComputeOutput: duration(b.GetComputeOutput()),
		}
	}
	for _, m := range s.GetMemoryUsage() {
		out.MemoryUsage = append(out.MemoryUsage, inferbridge.MemoryUsage{Type: m.GetType(), ID: m.GetId(), ByteSize: m.GetByteSize()})
	}
	return out
}

func duration(d *inferencepb.StatisticDuration) inferbridge.StatisticDuration {
	return inferbridge.StatisticDuration{Count: d.GetCount(), Ns: d.GetNs()}
}
