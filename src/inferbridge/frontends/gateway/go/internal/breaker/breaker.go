// Package breaker is a per-upstream circuit breaker: closed → open after a run of
// consecutive failures, or when the failure rate over a sliding window reaches a
// threshold with enough requests seen; open → half-open once open_for has passed,
// letting a few probe requests through; half-open → closed when the probes succeed,
// back to open when one fails.
package breaker

import (
	"sync"
	"time"

	"github.com/inferbridge/inferbridge/gateway/internal/clock"
)

// State is a breaker's state.
type State int

// The states, in the order of the breaker_state metric's values.
const (
	Closed State = iota
	Open
	HalfOpen
)

func (s State) String() string {
	switch s {
	case Open:
		return "open"
	case HalfOpen:
		return "half-open"
	}
	return "closed"
}

// Settings configure a breaker; a zero threshold disables that trigger.
type Settings struct {
	ConsecutiveFailures int           // open after this many failures in a row (0 = off)
	FailureRate         float64       // open when failures/requests over Window reach it (0 = off)
	Window              time.Duration // the failure-rate window
	MinRequests         int           // requests the window needs before the rate counts
	OpenFor             time.Duration // how long it stays open before probing
	HalfOpenProbes      int           // probes let through at once while half-open (and successes needed)
}

// buckets is how many slices the sliding window is cut into.
const buckets = 10

type bucket struct {
	start            time.Time
	requests, failed int
}

// Breaker is safe for concurrent use.
type Breaker struct {
	s     Settings
	clock clock.Clock
	// onChange, when set, is called (outside the lock) with the new state.
	onChange func(State)

	mu          sync.Mutex
	state       State
	consecutive int
	window      [buckets]bucket
	openedAt    time.Time
	probing     int // probes let through and not recorded
	probeOK     int
}

// New returns a closed breaker. onChange may be nil.
func New(s Settings, c clock.Clock, onChange func(State)) *Breaker {
	if s.HalfOpenProbes <= 0 {
		s.HalfOpenProbes = 1
	}
	if s.Window <= 0 {
		s.Window = 10 * time.Second
	}
	return &Breaker{s: s, clock: c, onChange: onChange}
}

// State returns the current state (moving open to half-open when its time is up).
func (b *Breaker) State() State {
	b.mu.Lock()
	changed := b.tick(b.clock.Now())
	st := b.state
	b.mu.Unlock()
	b.notify(changed, st)
	return st
}

func (b *Breaker) notify(changed bool, st State) {
	if changed && b.onChange != nil {
		b.onChange(st)
	}
}

// tick moves open to half-open once OpenFor has passed; it reports a change.
func (b *Breaker) tick(now time.Time) bool {
	if b.state == Open && now.Sub(b.openedAt) >= b.s.OpenFor {
		b.state, b.probing, b.probeOK = HalfOpen, 0, 0
		return true
	}
	return false
}

// Allow reports whether a request may go to the upstream now; a request allowed must
// be followed by exactly one Record with the same probe value.
func (b *Breaker) Allow() (ok, probe bool) {
	b.mu.Lock()
	changed := b.tick(b.clock.Now())
	st := b.state
	switch st {
	case Closed:
		ok = true
	case HalfOpen:
		if b.probing < b.s.HalfOpenProbes {
			b.probing++
			ok, probe = true, true
		}
	}
	b.mu.Unlock()
	b.notify(changed, st)
	return ok, probe
}

// Record reports the outcome of a request Allow let through.
func (b *Breaker) Record(success, probe bool) {
	now := b.clock.Now()
	b.mu.Lock()
	changed := false
	if probe {
		if b.state == HalfOpen {
			b.probing--
			if !success {
				b.open(now)
				changed = true
			} else if b.probeOK++; b.probeOK >= b.s.HalfOpenProbes {
				b.state, b.consecutive, b.window = Closed, 0, [buckets]bucket{}
				changed = true
			}
		}
	} else if b.state == Closed {
		bk := b.bucket(now)
		bk.requests++
		if success {
			b.consecutive = 0
		} else {
			bk.failed++
			b.consecutive++
			if b.tripped(now) {
				b.open(now)
				changed = true
			}
		}
	}
	st := b.state
	b.mu.Unlock()
	b.notify(changed, st)
}

// Cancel ends a request Allow let through whose outcome says nothing about the upstream
// (the client cancelled, or its deadline passed): a probe's slot is freed.
func (b *Breaker) Cancel(probe bool) {
	if !probe {
		return
	}
	b.mu.Lock()
	if b.state == HalfOpen && b.probing > 0 {
		b.probing--
	}
	b.mu.Unlock()
}

func (b *Breaker) open(now time.Time) {
	b.state, b.openedAt, b.probing, b.probeOK = Open, now, 0, 0
}

func (b *Breaker) bucket(now time.Time) *bucket {
	width := b.s.Window / buckets
	if width <= 0 {
		width = 1
	}
	slot := now.UnixNano() / int64(width)
	bk := &b.window[slot%buckets]
	start := time.Unix(0, slot*int64(width))
	if !bk.start.Equal(start) {
		*bk = bucket{start: start}
	}
	return bk
}

func (b *Breaker) tripped(now time.Time) bool {
	if b.s.ConsecutiveFailures > 0 && b.consecutive >= b.s.ConsecutiveFailures {
		return true
	}
	if b.s.FailureRate <= 0 {
		return false
	}
	requests, failed := 0, 0
	for _, bk := range b.window {
		if now.Sub(bk.start) < b.s.Window {
			requests += bk.requests
			failed += bk.failed
		}
	}
	return requests >= b.s.MinRequests && requests > 0 && float64(failed) >= b.s.FailureRate*float64(requests)
}
