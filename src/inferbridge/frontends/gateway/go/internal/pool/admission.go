package pool

import (
	"sync"
	"sync/atomic"

	"github.com/inferbridge/inferbridge/gateway/internal/config"
)

// admission holds the gateway's in-flight limits: one for all requests and one per
// model. A request over either is refused (429 / RESOURCE_EXHAUSTED with Retry-After)
// before anything is forwarded.
type admission struct {
	maxInflight int64
	inflight    atomic.Int64
	perModel    int64
	limits      map[string]int64

	mu     sync.Mutex
	models map[string]*atomic.Int64 // counters, created on first use, never removed
}

func newAdmission(cfg *config.Config) *admission {
	a := &admission{maxInflight: int64(cfg.Admission.MaxInflight), perModel: int64(cfg.Admission.PerModel),
		limits: map[string]int64{}, models: map[string]*atomic.Int64{}}
	for name, n := range cfg.Admission.Models {
		a.limits[name] = int64(n)
	}
	return a
}

func (a *admission) counter(model string) *atomic.Int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.models[model]
	if c == nil {
		c = new(atomic.Int64)
		a.models[model] = c
	}
	return c
}

// admit takes a slot for a request (model "" = none named); it returns the release
// function, or "" and the refusal's reason ("inflight_limit" or "model_limit").
func (a *admission) admit(model string) (release func(), refused string) {
	if a.maxInflight > 0 {
		if a.inflight.Add(1) > a.maxInflight {
			a.inflight.Add(-1)
			return nil, "inflight_limit"
		}
	}
	limit := a.perModel
	if n, ok := a.limits[model]; ok {
		limit = n
	}
	if model == "" || limit <= 0 {
		if a.maxInflight > 0 {
			return func() { a.inflight.Add(-1) }, ""
		}
		return noop, ""
	}
	c := a.counter(model)
	if c.Add(1) > limit {
		c.Add(-1)
		if a.maxInflight > 0 {
			a.inflight.Add(-1)
		}
		return nil, "model_limit"
	}
	return func() {
		c.Add(-1)
		if a.maxInflight > 0 {
			a.inflight.Add(-1)
		}
	}, ""
}

func noop() {}
