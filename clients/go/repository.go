package inferbridge

import (
	"encoding/json"
	"fmt"
)

// The states a model version has in the repository index.
const (
	StateReady       = "READY"
	StateUnavailable = "UNAVAILABLE"
	StateLoading     = "LOADING"
	StateUnloading   = "UNLOADING"
)

// ModelIndex is one model version in the repository index (Triton's repository extension:
// POST /v2/repository/index, or RepositoryIndex over gRPC).
type ModelIndex struct {
	// Name is the model's name.
	Name string `json:"name"`
	// Version is the version number, as a string; empty for a model the server has
	// not loaded.
	Version string `json:"version"`
	// State is the version's state: StateReady, StateUnavailable, StateLoading or
	// StateUnloading.
	State string `json:"state"`
	// Reason says why a version is not ready.
	Reason string `json:"reason"`
}

// ModelIndexEntry is the former name of ModelIndex.
//
// Deprecated: use ModelIndex.
type ModelIndexEntry = ModelIndex

// LoadOption configures LoadModel.
type LoadOption func(*LoadOptions)

// LoadOptions is what the LoadOption values of one LoadModel call add up to; the
// transports read it through ResolveLoadOptions.
type LoadOptions struct {
	// Config is a JSON model config that replaces the one in the repository; "" keeps it.
	Config string
	// Files are the model's files keyed "<version>/<path>" (such as "1/model.onnx"), used
	// instead of the files on disk; the server then needs Config too.
	Files map[string][]byte

	err error
}

// WithModelConfig makes the load use the model config configJSON (a JSON document)
// instead of the one in the repository. The server checks it: malformed JSON is an error
// matching ErrInvalidArgument.
func WithModelConfig(configJSON string) LoadOption {
	return func(o *LoadOptions) { o.Config = configJSON }
}

// WithModelConfigValue is WithModelConfig for a value marshalled with encoding/json, such
// as a map or a struct with json tags. A value that does not marshal fails the load with
// ErrInvalidArgument before anything is sent.
func WithModelConfigValue(config any) LoadOption {
	return func(o *LoadOptions) {
		data, err := json.Marshal(config)
		if err != nil {
			o.err = fmt.Errorf("model config: %w", err)
			return
		}
		o.Config = string(data)
	}
}

// WithModelFiles sends the model's files with the load, keyed "<version>/<path>" (such as
// "1/model.onnx"): base64 over REST, bytes over gRPC. The model then need not exist in
// the server's repository, but the load needs WithModelConfig as well. Several
// WithModelFiles options add up; a later one wins for the same path.
func WithModelFiles(files map[string][]byte) LoadOption {
	return func(o *LoadOptions) {
		if o.Files == nil {
			o.Files = make(map[string][]byte, len(files))
		}
		for path, data := range files {
			o.Files[path] = data
		}
	}
}

// ResolveLoadOptions applies opts in order; the error is that of an option that could not
// be applied (a config value that does not marshal).
func ResolveLoadOptions(opts ...LoadOption) (*LoadOptions, error) {
	o := &LoadOptions{}
	for _, opt := range opts {
		opt(o)
		if o.err != nil {
			return nil, o.err
		}
	}
	return o, nil
}

// Parameters are the load's repository parameters, as both transports name them: "config"
// (a string) and one "file:<version>/<path>" per file (a []byte); nil when there are none.
func (o *LoadOptions) Parameters() map[string]any {
	if o.Config == "" && len(o.Files) == 0 {
		return nil
	}
	params := make(map[string]any, len(o.Files)+1)
	if o.Config != "" {
		params["config"] = o.Config
	}
	for path, data := range o.Files {
		if data == nil {
			data = []byte{} // an empty file, not a missing value
		}
		params["file:"+path] = data
	}
	return params
}

// UnloadOption configures UnloadModel.
type UnloadOption func(*UnloadOptions)

// UnloadOptions is what the UnloadOption values of one UnloadModel call add up to.
type UnloadOptions struct {
	// UnloadDependents also unloads the models that depend on this one (ensembles).
	UnloadDependents bool
}

// UnloadDependents makes the unload also unload the models that depend on the model (the
// "unload_dependents" parameter).
func UnloadDependents() UnloadOption {
	return func(o *UnloadOptions) { o.UnloadDependents = true }
}

// ResolveUnloadOptions applies opts in order.
func ResolveUnloadOptions(opts ...UnloadOption) *UnloadOptions {
	o := &UnloadOptions{}
	for _, opt := range opts {
		opt(o)
	}
	return o
}

// Parameters are the unload's repository parameters: "unload_dependents" (a bool) when
// set; nil when there are none.
func (o *UnloadOptions) Parameters() map[string]any {
	if !o.UnloadDependents {
		return nil
	}
	return map[string]any{"unload_dependents": true}
}
