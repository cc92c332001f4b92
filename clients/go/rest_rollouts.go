package inferbridge

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
)

// RolloutOption configures a rollout call.
type RolloutOption func(*rolloutOptions)

type rolloutOptions struct {
	actor string
}

// RolloutActor names who makes the call in the rollout's audit log (the server's default
// is "api"). ApproveRollout names the approver with its who argument instead.
func RolloutActor(actor string) RolloutOption {
	return func(o *rolloutOptions) { o.actor = actor }
}

func resolveRolloutOptions(opts []RolloutOption) rolloutOptions {
	var o rolloutOptions
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// StartRollout starts a rollout of model's spec.Candidate (POST /v1/rollouts) and returns
// its status. The server changes nothing when it refuses: a bad spec (a weight outside
// 0..100, steps that never reach 100, an unparseable duration, an unknown or already
// default candidate) matches ErrInvalidArgument (HTTP 400), a model that is not loaded
// ErrNotFound (404), a model that has an active rollout already ErrConflict (409).
func (c *RESTClient) StartRollout(ctx context.Context, model string, spec RolloutSpec, opts ...RolloutOption) (*Rollout, error) {
	op := "start rollout " + model
	if model == "" {
		return nil, clientError(op, CodeInvalidArgument, errors.New("no model name"))
	}
	raw, err := json.Marshal(spec)
	if err != nil {
		return nil, clientError(op, CodeInvalidArgument, err)
	}
	var body map[string]any
	if err := json.Unmarshal(raw, &body); err != nil {
		return nil, clientError(op, CodeInvalidArgument, err)
	}
	body["model"] = model
	if o := resolveRolloutOptions(opts); o.actor != "" {
		body["actor"] = o.actor
	}
	var status Rollout
	if err := c.postJSON(ctx, op, "/v1/rollouts", body, &status); err != nil {
		return nil, err
	}
	return &status, nil
}

// RolloutStatus is model's rollout (GET /v1/rollouts/{model}): phase, step, weights, the
// recent analyses and the gate it waits at. A model without a rollout is ErrNotFound.
func (c *RESTClient) RolloutStatus(ctx context.Context, model string) (*Rollout, error) {
	op := "rollout status " + model
	if model == "" {
		return nil, clientError(op, CodeInvalidArgument, errors.New("no model name"))
	}
	var status Rollout
	if err := c.getJSON(ctx, op, rolloutPath(model), &status); err != nil {
		return nil, err
	}
	return &status, nil
}

// ListRollouts is every model's rollout, active or ended, by model name (GET /v1/rollouts).
func (c *RESTClient) ListRollouts(ctx context.Context) ([]Rollout, error) {
	var doc struct {
		Rollouts []Rollout `json:"rollouts"`
	}
	if err := c.getJSON(ctx, "list rollouts", "/v1/rollouts", &doc); err != nil {
		return nil, err
	}
	return doc.Rollouts, nil
}

// ApproveRollout adds who's approval, with a comment, to the gate the rollout of model
// waits at (POST /v1/rollouts/{model}/approve); with enough approvals the rollout moves
// on. A gate that is not waiting, or a second approval by the same person, is ErrConflict.
func (c *RESTClient) ApproveRollout(ctx context.Context, model, gate, who, comment string) (*Rollout, error) {
	op := "approve rollout " + model
	if gate == "" || who == "" {
		return nil, clientError(op, CodeInvalidArgument, errors.New("approve needs a gate and who approves"))
	}
	return c.rolloutAction(ctx, op, model, "approve", map[string]string{"gate": gate, "who": who, "comment": comment})
}

// PauseRollout holds the rollout of model at its step (POST /v1/rollouts/{model}/pause):
// the weights stay, the analysis goes on, nothing advances. A paused or ended rollout is
// ErrConflict.
func (c *RESTClient) PauseRollout(ctx context.Context, model, reason string, opts ...RolloutOption) (*Rollout, error) {
	body := actorBody(opts)
	body["reason"] = reason
	return c.rolloutAction(ctx, "pause rollout "+model, model, "pause", body)
}

// ResumeRollout lets a paused rollout move on (POST /v1/rollouts/{model}/resume); one that
// is not paused is ErrConflict.
func (c *RESTClient) ResumeRollout(ctx context.Context, model string, opts ...RolloutOption) (*Rollout, error) {
	return c.rolloutAction(ctx, "resume rollout "+model, model, "resume", actorBody(opts))
}

// AbortRollout ends the rollout of model (POST /v1/rollouts/{model}/abort): all traffic
// goes back to the baseline at once, and the reason goes to the audit log. An ended
// rollout is ErrConflict.
func (c *RESTClient) AbortRollout(ctx context.Context, model, reason string, opts ...RolloutOption) (*Rollout, error) {
	body := actorBody(opts)
	body["reason"] = reason
	return c.rolloutAction(ctx, "abort rollout "+model, model, "abort", body)
}

// PromoteRollout makes the candidate the model's default now, skipping the steps left
// (POST /v1/rollouts/{model}/promote). An ended rollout is ErrConflict.
func (c *RESTClient) PromoteRollout(ctx context.Context, model string, opts ...RolloutOption) (*Rollout, error) {
	return c.rolloutAction(ctx, "promote rollout "+model, model, "promote", actorBody(opts))
}

// RolloutHistory is the audit log of model's rollouts, oldest first (GET
// /v1/rollouts/{model}/history). A model that has no rollout is ErrNotFound.
func (c *RESTClient) RolloutHistory(ctx context.Context, model string) ([]RolloutEvent, error) {
	op := "rollout history " + model
	if model == "" {
		return nil, clientError(op, CodeInvalidArgument, errors.New("no model name"))
	}
	var doc struct {
		Events []RolloutEvent `json:"events"`
	}
	if err := c.getJSON(ctx, op, rolloutPath(model)+"/history", &doc); err != nil {
		return nil, err
	}
	return doc.Events, nil
}

// RolloutAudit is the whole audit log, every model's, oldest first (GET
// /v1/rollout-audit).
func (c *RESTClient) RolloutAudit(ctx context.Context) ([]RolloutEvent, error) {
	var doc struct {
		Events []RolloutEvent `json:"events"`
	}
	if err := c.getJSON(ctx, "rollout audit", "/v1/rollout-audit", &doc); err != nil {
		return nil, err
	}
	return doc.Events, nil
}

// ClearRollout forgets the ended rollout of model (DELETE /v1/rollouts/{model}); the model
// goes back to its version policy, and a new rollout may start. An active rollout is
// ErrConflict (abort it first), a model without one ErrNotFound.
func (c *RESTClient) ClearRollout(ctx context.Context, model string, opts ...RolloutOption) (*RolloutCleared, error) {
	op := "clear rollout " + model
	if model == "" {
		return nil, clientError(op, CodeInvalidArgument, errors.New("no model name"))
	}
	payload, err := json.Marshal(actorBody(opts))
	if err != nil {
		return nil, clientError(op, CodeInvalidArgument, err)
	}
	_, resp, _, err := c.do(ctx, op, http.MethodDelete, rolloutPath(model), payload, nil)
	if err != nil {
		return nil, err
	}
	var cleared RolloutCleared
	if err := json.Unmarshal(resp, &cleared); err != nil {
		return nil, badResponse(op, err)
	}
	return &cleared, nil
}

func (c *RESTClient) rolloutAction(ctx context.Context, op, model, action string, body map[string]string) (*Rollout, error) {
	if model == "" {
		return nil, clientError(op, CodeInvalidArgument, errors.New("no model name"))
	}
	var status Rollout
	if err := c.postJSON(ctx, op, rolloutPath(model)+"/"+action, body, &status); err != nil {
		return nil, err
	}
	return &status, nil
}

func actorBody(opts []RolloutOption) map[string]string {
	body := map[string]string{}
	if o := resolveRolloutOptions(opts); o.actor != "" {
		body["actor"] = o.actor
	}
	return body
}

func rolloutPath(model string) string { return "/v1/rollouts/" + url.PathEscape(model) }
