package grpcclient

import (
	"context"

	"github.com/inferbridge/inferbridge/clients/go/inferencepb"
)

// ModelConfig returns a model's configuration, Triton's ModelConfig message (ModelConfig);
// version "" is the model's default version.
func (c *Client) ModelConfig(ctx context.Context, name, version string) (*inferencepb.ModelConfig, error) {
	r, err := c.inference.ModelConfig(ctx, &inferencepb.ModelConfigRequest{Name: name, Version: version})
	if err != nil {
		return nil, wrap(ctx, "model config "+name, err)
	}
	return r.GetConfig(), nil
}
