package inferbridge

import (
	"context"
	"net/http"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/inferbridge/inferbridge/clients/go/inferencepb"
)

// OwnConfigKey is the key of the REST config document that holds the server's own model
// config (config.yaml's schema) beside Triton's ModelConfig fields.
const OwnConfigKey = "inferbridge"

// ModelConfig returns a model's configuration as Triton's ModelConfig message (GET
// /v2/models/{m}[/versions/{v}]/config); version "" is the model's default version. The
// server's own fields (OwnConfigKey) are not part of the message: ModelConfigDocument
// returns the whole document.
func (c *RESTClient) ModelConfig(ctx context.Context, name, version string) (*inferencepb.ModelConfig, error) {
	op := "model config " + name
	_, body, _, err := c.do(ctx, op, http.MethodGet, modelPath(name, version)+"/config", nil, nil)
	if err != nil {
		return nil, err
	}
	config := &inferencepb.ModelConfig{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(body, config); err != nil {
		return nil, badResponse(op, err)
	}
	return config, nil
}

// ModelConfigDocument returns the config document as the server sent it: Triton's
// ModelConfig JSON, and the server's own config under OwnConfigKey.
func (c *RESTClient) ModelConfigDocument(ctx context.Context, name, version string) (map[string]any, error) {
	var document map[string]any
	if err := c.getJSON(ctx, "model config "+name, modelPath(name, version)+"/config", &document); err != nil {
		return nil, err
	}
	return document, nil
}
