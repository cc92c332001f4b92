// Package health holds the two health signals of an upstream: active checks (a Tracker
// turns a series of probe results into healthy/unhealthy with hysteresis) and passive
// outlier ejection (an Ejector takes a host out of rotation after consecutive failures
// of real requests, for a time that grows with each ejection, never ejecting more than
// a percentage of the hosts and never the last routable one).
package health

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/inferbridge/inferbridge/gateway/internal/clock"
)

// Tracker is the active-check state of one host. It starts healthy. Not safe for
// concurrent use: one prober goroutine owns it.
type Tracker struct {
	UnhealthyAfter, HealthyAfter int

	unhealthy bool
	run       int // consecutive results contradicting the current state
}

// Observe records one probe result and reports whether the state changed.
func (t *Tracker) Observe(ok bool) (changed bool) {
	if ok != t.unhealthy { // agrees with the current state
		t.run = 0
		return false
	}
	t.run++
	need := t.UnhealthyAfter
	if t.unhealthy {
		need = t.HealthyAfter
	}
	if t.run >= max(need, 1) {
		t.unhealthy, t.run = !t.unhealthy, 0
		return true
	}
	return false
}

// Healthy reports the current state.
func (t *Tracker) Healthy() bool { return !t.unhealthy }

// Outlier settings.
type Outlier struct {
	ConsecutiveFailures int           // eject after this many failed requests in a row (0 = off)
	BaseEjection        time.Duration // first ejection's length; the n-th lasts n times it
	MaxEjection         time.Duration // cap on one ejection's length
	MaxEjectionPercent  float64       // most hosts ejected at once, in % (at least one may be)
}

// Host is the passive-health state of one host.
type Host struct {
	consecutive  atomic.Int64
	ejected      atomic.Bool
	ejectedUntil time.Time // guarded by the Ejector's lock
	times        int       // ejections so far, guarded by the Ejector's lock
}

// Ejected reports whether the host is out of rotation now.
func (h *Host) Ejected() bool { return h.ejected.Load() }

// Times is how often the host has been ejected.
func (h *Host) Times(e *Ejector) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return h.times
}

// Until is when the current ejection ends (zero when not ejected).
func (h *Host) Until(e *Ejector) time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !h.ejected.Load() {
		return time.Time{}
	}
	return h.ejectedUntil
}

// Ejector decides ejections across one pool's hosts.
type Ejector struct {
	s     Outlier
	clock clock.Clock

	mu      sync.Mutex
	ejected int
}

// NewEjector returns the ejector of a pool.
func NewEjector(s Outlier, c clock.Clock) *Ejector { return &Ejector{s: s, clock: c} }

// Record reports a request's outcome on h; total is the number of hosts in the pool.
// It returns true when this failure ejected h (the caller rebuilds its pickers).
func (e *Ejector) Record(h *Host, failed bool, total int) bool {
	if !failed {
		h.consecutive.Store(0)
		return false
	}
	n := h.consecutive.Add(1)
	if e.s.ConsecutiveFailures <= 0 || n < int64(e.s.ConsecutiveFailures) || h.ejected.Load() {
		return false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if h.ejected.Load() {
		return false
	}
	limit := int(float64(total) * e.s.MaxEjectionPercent / 100)
	if limit < 1 {
		limit = 1
	}
	if e.ejected+1 > limit || e.ejected+1 >= total { // always one host left
		return false
	}
	h.times++
	d := e.s.BaseEjection * time.Duration(h.times)
	if e.s.MaxEjection > 0 && d > e.s.MaxEjection {
		d = e.s.MaxEjection
	}
	h.ejectedUntil = e.clock.Now().Add(d)
	h.ejected.Store(true)
	h.consecutive.Store(0)
	e.ejected++
	return true
}

// Expire returns ejected hosts whose time is up to rotation; it reports whether any was.
func (e *Ejector) Expire(hosts []*Host) bool {
	now := e.clock.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	changed := false
	for _, h := range hosts {
		if h.ejected.Load() && !now.Before(h.ejectedUntil) {
			h.ejected.Store(false)
			e.ejected--
			changed = true
		}
	}
	return changed
}

// Forget drops a host leaving the pool (counts its ejection off).
func (e *Ejector) Forget(h *Host) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if h.ejected.Load() {
		h.ejected.Store(false)
		e.ejected--
	}
}
