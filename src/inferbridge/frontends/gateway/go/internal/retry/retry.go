// Package retry decides whether a failed attempt may be tried again: which failures are
// safe to retry, a retry budget (Envoy's: retries in flight at most a percentage of the
// requests in flight, with a floor), and jittered exponential back-off.
package retry

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/inferbridge/inferbridge/gateway/internal/clock"
)

// Reason classifies a failed attempt.
type Reason int

// The reasons. Only these may be retried, each when the configuration names it.
const (
	None           Reason = iota
	ConnectFailure        // the connection could not be made: the request never left
	Reset                 // the connection failed before a response began
	Unavailable           // gRPC UNAVAILABLE from the upstream
	Status503             // HTTP 503 from the upstream
	Status429             // HTTP 429 with Retry-After, or gRPC RESOURCE_EXHAUSTED
	numReasons
)

var names = [numReasons]string{None: "none", ConnectFailure: "connect-failure", Reset: "reset",
	Unavailable: "unavailable", Status503: "503", Status429: "429"}

func (r Reason) String() string { return names[r] }

// ParseReason reads a reason by its configuration name.
func ParseReason(s string) (Reason, error) {
	for r := ConnectFailure; r < numReasons; r++ {
		if names[r] == s {
			return r, nil
		}
	}
	return None, fmt.Errorf("unknown retry condition %q (want connect-failure, reset, unavailable, 503 or 429)", s)
}

// On is a set of reasons.
type On uint32

// Add puts r in the set.
func (o On) Add(r Reason) On { return o | 1<<r }

// Has reports whether r is in the set.
func (o On) Has(r Reason) bool { return r != None && o&(1<<r) != 0 }

// Budget bounds concurrent retries to Percent % of the requests in flight, but always
// allows Min. Counters are atomic; the hot path takes no lock.
type Budget struct {
	Percent float64
	Min     int64

	active  atomic.Int64
	retries atomic.Int64
}

// Begin counts a request in flight; End must follow.
func (b *Budget) Begin() { b.active.Add(1) }

// End ends a request counted by Begin.
func (b *Budget) End() { b.active.Add(-1) }

// Acquire takes a retry from the budget, or reports false when it is spent; a true
// result must be given back with Release when the retry ends.
func (b *Budget) Acquire() bool {
	limit := int64(float64(b.active.Load()) * b.Percent / 100)
	if limit < b.Min {
		limit = b.Min
	}
	if b.retries.Add(1) > limit {
		b.retries.Add(-1)
		return false
	}
	return true
}

// Charged reports whether a retry after a failure for reason r needs a budget slot. A
// connection that could not be made carried no request: the retry is the request's
// first real attempt, so it adds no load on any upstream and is bounded by the
// attempts alone.
func Charged(r Reason) bool { return r != ConnectFailure }

// Sleeper waits d, or less when ctx ends first (then it returns false).
type Sleeper func(ctx context.Context, d time.Duration) bool

// Sleep is the real Sleeper.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Wait is how a retry that finds the budget spent waits for a slot: it tries again
// after jittered back-off, for at most MaxWait and never past the request's deadline.
// The budget still bounds the retries in flight (the extra load on the upstreams); a
// burst of failures larger than the budget (an upstream killed with many requests on
// it) is spread over the next milliseconds instead of failing.
type Wait struct {
	MaxWait time.Duration // 0: a spent budget refuses at once
	Backoff Backoff
	Clock   clock.Clock
	Sleep   Sleeper        // nil: Sleep
	Rand    func() float64 // nil: math/rand
}

// Acquire takes a slot of b, waiting as w allows; deadline (zero = none) less minLeft
// is the latest a slot is still worth having. It reports whether a slot was taken and
// how many times it had to wait.
func (w Wait) Acquire(ctx context.Context, b *Budget, deadline time.Time, minLeft time.Duration) (bool, int) {
	if b.Acquire() {
		return true, 0
	}
	if w.MaxWait <= 0 {
		return false, 0
	}
	sleep := w.Sleep
	if sleep == nil {
		sleep = Sleep
	}
	// The time waited is the sum of the waits (not a clock reading), so that MaxWait
	// bounds the loop whatever the clock does; the deadline is checked on the clock.
	var waited time.Duration
	latest := deadline.Add(-minLeft)
	for n := 1; ; n++ {
		d := w.Backoff.Delay(n, w.Rand)
		if waited+d > w.MaxWait || (!deadline.IsZero() && w.Clock.Now().Add(d).After(latest)) {
			return false, n - 1
		}
		if !sleep(ctx, d) {
			return false, n
		}
		waited += d
		if b.Acquire() {
			return true, n
		}
	}
}

// Release gives back a retry taken by Acquire.
func (b *Budget) Release() { b.retries.Add(-1) }

// Active is the number of requests in flight; Retries the retries in flight.
func (b *Budget) Active() int64  { return b.active.Load() }
func (b *Budget) Retries() int64 { return b.retries.Load() }

// Backoff is full-jitter exponential back-off: before retry n (1, 2, ...) wait a random
// time in [Base, min(Max, Base·2^(n-1))] (Envoy: 25 ms base, 250 ms cap).
type Backoff struct {
	Base, Max time.Duration
}

// Delay returns the wait before retry n; rnd returns a float in [0, 1) (nil: math/rand).
func (b Backoff) Delay(n int, rnd func() float64) time.Duration {
	if n < 1 {
		n = 1
	}
	upper := b.Base
	for i := 1; i < n && upper < b.Max; i++ {
		upper *= 2
	}
	if upper > b.Max {
		upper = b.Max
	}
	if rnd == nil {
		rnd = rand.Float64
	}
	if upper <= b.Base {
		return b.Base
	}
	return b.Base + time.Duration(rnd()*float64(upper-b.Base))
}

// Fits reports whether waiting delay and then trying again leaves time before deadline
// (zero = none): a retry never starts past the deadline, nor so close to it that no
// useful answer can come back (minLeft).
func Fits(now, deadline time.Time, delay, minLeft time.Duration) bool {
	return deadline.IsZero() || deadline.Sub(now) > delay+minLeft
}
