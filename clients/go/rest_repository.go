package inferbridge

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
)

// RepositoryIndex lists the models in the server's repository with their states (POST
// /v2/repository/index); readyOnly keeps only the versions that are ready.
func (c *RESTClient) RepositoryIndex(ctx context.Context, readyOnly bool) ([]ModelIndex, error) {
	const op = "repository index"
	body := []byte("{}")
	if readyOnly {
		body = []byte(`{"ready":true}`)
	}
	_, resp, _, err := c.do(ctx, op, http.MethodPost, "/v2/repository/index", body, nil)
	if err != nil {
		return nil, err
	}
	var entries []ModelIndex
	if err := json.Unmarshal(resp, &entries); err != nil {
		return nil, badResponse(op, err)
	}
	return entries, nil
}

// LoadModel loads (or reloads) a model (POST /v2/repository/models/{m}/load), with the
// options' config and files (base64) in place of the repository's. It returns when the
// server has answered (inferbridge and Triton answer once the model is loaded). A server
// whose model control mode does not allow it answers an error matching
// ErrFailedPrecondition; an unknown model directory ErrNotFound; a bad config or a model
// that fails to load ErrInvalidArgument; a model that is loading already ErrAborted.
func (c *RESTClient) LoadModel(ctx context.Context, name string, opts ...LoadOption) error {
	op := "load model " + name
	o, err := ResolveLoadOptions(opts...)
	if err != nil {
		return clientError(op, CodeInvalidArgument, err)
	}
	return c.repositoryCall(ctx, op, name, "load", o.Parameters())
}

// UnloadModel unloads every version of a model (POST /v2/repository/models/{m}/unload).
// The errors are those of LoadModel.
func (c *RESTClient) UnloadModel(ctx context.Context, name string, opts ...UnloadOption) error {
	return c.repositoryCall(ctx, "unload model "+name, name, "unload", ResolveUnloadOptions(opts...).Parameters())
}

func (c *RESTClient) repositoryCall(ctx context.Context, op, name, action string, params map[string]any) error {
	if name == "" {
		return clientError(op, CodeInvalidArgument, errors.New("no model name"))
	}
	doc := struct {
		// []byte values marshal as base64, which is how REST carries "file:" parameters.
		Parameters map[string]any `json:"parameters,omitempty"`
	}{params}
	body, err := json.Marshal(doc)
	if err != nil {
		return clientError(op, CodeInvalidArgument, err)
	}
	_, _, _, err = c.do(ctx, op, http.MethodPost, "/v2/repository/models/"+url.PathEscape(name)+"/"+action, body, nil)
	return err
}

// ModelStatistics returns the statistics of a model version (GET
// /v2/models/{m}[/versions/{v}]/stats); version "" is every version of the model, and
// name "" every model (GET /v2/models/stats).
func (c *RESTClient) ModelStatistics(ctx context.Context, name, version string) ([]ModelStatistics, error) {
	op := "model statistics " + name
	path := "/v2/models/stats"
	if name == "" {
		op = "model statistics"
		if version != "" {
			return nil, clientError(op, CodeInvalidArgument, errors.New("a version needs a model name"))
		}
	} else {
		path = modelPath(name, version) + "/stats"
	}
	var doc struct {
		ModelStats []ModelStatistics `json:"model_stats"`
	}
	if err := c.getJSON(ctx, op, path, &doc); err != nil {
		return nil, err
	}
	return doc.ModelStats, nil
}
