package pool

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/inferbridge/inferbridge/gateway/internal/retry"
)

// attemptResult is what one attempt on one upstream came to.
type attemptResult struct {
	reason  retry.Reason // why it failed in a retriable way (None: an answer to return)
	failed  bool         // counts as a failure of the upstream (breaker, outlier ejection)
	fast    bool         // an error answered fast (429/503): charge the EWMA penalty
	neutral bool         // the client went away or its deadline passed: says nothing of the upstream
	label   string       // the outcome label of the upstream metrics
	status  int          // the HTTP status answered (0: none, or a gRPC attempt)
	// isGRPC: a gRPC attempt, whose status code is grpcCode (0 = OK)
	isGRPC   bool
	grpcCode int
}

// errNoRoute is why forward chose no upstream.
type errNoRoute int

const (
	routeNone        errNoRoute = iota + 1 // no upstream serves the model: 404 / NOT_FOUND
	routeUnavailable                       // none routable, or all refused by breakers: 503 / UNAVAILABLE
)

// forward runs attempt on upstreams of the route chosen by pick until one gives an
// answer to return, retrying (on another upstream, within the retry budget, with
// back-off, before the deadline) when the failure is a retriable one. It returns the
// last attempt's value, or a routing refusal when no attempt could be made. discard
// releases the value of an attempt that is retried.
// op names the request in its trace spans.
func forward[T any](ctx context.Context, p *Pool, op string, grp func(*snapshot) (*group, errNoRoute), key string, deadline time.Time,
	attempt func(ctx context.Context, u *upstream, try int) (T, attemptResult), discard func(T)) (T, errNoRoute) {
	if p.tracing == nil {
		v, refusal, _ := forwardTries(ctx, p, op, grp, key, deadline, attempt, discard)
		return v, refusal
	}
	ctx, span := p.startRequest(ctx, op)
	v, refusal, tries := forwardTries(ctx, p, op, grp, key, deadline, attempt, discard)
	endRequest(span, tries, refusal)
	return v, refusal
}

// forwardTries is forward's loop; it also returns the number of attempts made.
func forwardTries[T any](ctx context.Context, p *Pool, op string, grp func(*snapshot) (*group, errNoRoute), key string,
	deadline time.Time, attempt func(ctx context.Context, u *upstream, try int) (T, attemptResult),
	discard func(T)) (T, errNoRoute, int) {
	var zero T
	var tried []*upstream // allocated on the first retry only: the first attempt costs no allocation
	p.budget.Begin()
	defer p.budget.End()
	retrying := false // this attempt is a retry holding a budget slot
	for try := 1; ; try++ {
		g, refusal := grp(p.snap.Load())
		if refusal != 0 {
			if retrying {
				p.budget.Release()
			}
			return zero, refusal, try - 1
		}
		u, probe := p.choose(g, key, tried)
		if u == nil { // none routable, or every breaker open
			if retrying {
				p.budget.Release()
			}
			return zero, routeUnavailable, try - 1
		}
		start := u.load.Start()
		u.m.inflight.Inc()
		actx := ctx
		var span trace.Span
		if p.tracing != nil {
			actx, span = p.startAttempt(ctx, op, u, try)
		}
		v, res := attempt(actx, u, try)
		if span != nil {
			endAttempt(span, res)
		}
		if retrying {
			p.budget.Release()
			retrying = false
		}
		u.m.inflight.Dec()
		u.load.Done(start, res.fast)
		u.m.observe(res.label, time.Since(start))
		switch {
		case res.neutral:
			u.breaker.Cancel(probe)
		default:
			u.breaker.Record(!res.failed, probe)
			if p.ejector.Record(&u.passive, res.failed, len(p.snap.Load().ups)) {
				u.m.ejections.Inc()
				u.m.ejected.Set(1)
				p.logf("upstream %s: ejected (consecutive failures)", u.cfg.Name)
				p.rebuild()
			}
		}
		if res.failed {
			u.m.failure(res.label)
		}
		if res.reason == retry.None || !p.cfg.Retries.On.Has(res.reason) || try >= p.cfg.Retries.Attempts || ctx.Err() != nil {
			return v, 0, try
		}
		tried = append(tried, u)
		if !p.hasOther(g, tried) {
			return v, 0, try
		}
		// A refused connection never reached anyone and the retry goes elsewhere: no
		// reason to wait.
		var delay time.Duration
		if res.reason != retry.ConnectFailure {
			delay = p.cfg.Retries.Backoff.Delay(try, nil)
		}
		if !retry.Fits(time.Now(), deadline, delay, time.Millisecond) {
			p.metrics.retriesRefused.WithLabelValues("deadline").Inc()
			return v, 0, try
		}
		if delay > 0 {
			timer := time.NewTimer(delay)
			select {
			case <-timer.C:
			case <-ctx.Done():
				timer.Stop()
				return v, 0, try
			}
		}
		// The budget bounds retry attempts in flight (the extra load on the upstreams),
		// so a retry takes its slot after the back-off and gives it back when its
		// attempt ends. One whose first attempt reached no upstream adds no load and
		// takes none; one that finds the budget spent waits a little for a slot.
		if retry.Charged(res.reason) {
			ok, waits := p.budgetWait.Acquire(ctx, &p.budget, deadline, time.Millisecond)
			if waits > 0 {
				p.metrics.retryBudgetWaits.Inc()
			}
			if !ok {
				if ctx.Err() == nil {
					p.metrics.retriesRefused.WithLabelValues("budget").Inc()
				}
				return v, 0, try
			}
			retrying = true
		}
		discard(v)
		p.metrics.retries.WithLabelValues(res.reason.String()).Inc()
	}
}

// choose picks an upstream of g not yet tried whose breaker lets a request through.
func (p *Pool) choose(g *group, key string, tried []*upstream) (*upstream, bool) {
	if len(tried) == 0 {
		// The common case, a first attempt: pick without a skip function (a closure
		// would be allocated for every request) and go further only if its breaker refuses.
		i := g.picker.Pick(key, nil)
		if i < 0 {
			return nil, false
		}
		u := g.ups[i]
		if ok, probe := u.breaker.Allow(); ok {
			return u, probe
		}
		return p.chooseSkipping(g, key, nil, u)
	}
	return p.chooseSkipping(g, key, tried, nil)
}

// chooseSkipping picks as choose does, skipping tried and refused (when not nil: an
// upstream whose breaker already refused).
func (p *Pool) chooseSkipping(g *group, key string, tried []*upstream, refusedFirst *upstream) (*upstream, bool) {
	var refusedBuf [4]*upstream
	refused := refusedBuf[:0]
	if refusedFirst != nil {
		refused = append(refused, refusedFirst)
	}
	skip := func(i int) bool {
		u := g.ups[i]
		for _, t := range tried {
			if t == u {
				return true
			}
		}
		for _, r := range refused {
			if r == u {
				return true
			}
		}
		return false
	}
	for range g.ups {
		i := g.picker.Pick(key, skip)
		if i < 0 {
			return nil, false
		}
		u := g.ups[i]
		if ok, probe := u.breaker.Allow(); ok {
			return u, probe
		}
		refused = append(refused, u)
	}
	return nil, false
}

func (p *Pool) hasOther(g *group, tried []*upstream) bool {
	for _, u := range g.ups {
		found := false
		for _, t := range tried {
			if t == u {
				found = true
				break
			}
		}
		if !found {
			return true
		}
	}
	return false
}
