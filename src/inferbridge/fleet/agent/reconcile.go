package main

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
)

// Model states reported to the control plane.
const (
	StateDownloading = "DOWNLOADING"
	StateLoading     = "LOADING"
	StateReady       = "READY"
	StateFailed      = "FAILED"
	StateUnloading   = "UNLOADING"
)

// ModelStatus is one model as this node reports it.
type ModelStatus struct {
	Model   string `json:"model"`
	Version int    `json:"version"`
	State   string `json:"state"`
	Reason  string `json:"reason,omitempty"`
}

// Event is a state change, buffered until a heartbeat delivers it.
type Event struct {
	Time    string `json:"time"`
	Model   string `json:"model"`
	Version int    `json:"version"`
	State   string `json:"state"`
	Reason  string `json:"reason,omitempty"`
}

type failure struct {
	sha    string
	reason string
	retry  time.Time
}

// Reconciler brings the local server and repository to the assigned model versions:
// download and verify what is missing, switch the repository entry, ask the server to
// load, unload and uninstall what is no longer assigned, and garbage-collect old
// versions. Each pass is level-triggered: it compares and acts, idempotently.
type Reconciler struct {
	Server    Server
	Artifacts Artifacts
	Log       *slog.Logger
	Now       func() time.Time
	// Backoff before an artefact that failed (digest, download, load) is tried again.
	RetryAfter time.Duration

	mu       sync.Mutex
	status   map[string]ModelStatus
	events   []Event
	failures map[string]failure // model -> last failure of its assigned version
}

const maxEvents = 256

func (r *Reconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *Reconciler) set(s ModelStatus) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.status == nil {
		r.status = map[string]ModelStatus{}
	}
	if old, ok := r.status[s.Model]; ok && old == s {
		return
	}
	r.status[s.Model] = s
	r.events = append(r.events, Event{r.now().UTC().Format(time.RFC3339Nano), s.Model, s.Version, s.State, s.Reason})
	if len(r.events) > maxEvents {
		r.events = r.events[len(r.events)-maxEvents:]
	}
	if s.State == StateFailed {
		r.Log.Warn("model failed", "model", s.Model, "version", s.Version, "reason", s.Reason)
	} else {
		r.Log.Info("model state", "model", s.Model, "version", s.Version, "state", s.State)
	}
}

func (r *Reconciler) drop(model string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.status, model)
}

// Status answers every model's state, sorted by name.
func (r *Reconciler) Status() []ModelStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]ModelStatus, 0, len(r.status))
	for _, s := range r.status {
		out = append(out, s)
	}
	slices.SortFunc(out, func(x, y ModelStatus) int { return strings.Compare(x.Model, y.Model) })
	return out
}

// TakeEvents hands over the buffered events; Restore puts them back when a heartbeat
// could not deliver them.
func (r *Reconciler) TakeEvents() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.events
	r.events = nil
	return out
}

// Restore puts undelivered events back in front of newer ones.
func (r *Reconciler) Restore(events []Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(events, r.events...)
	if len(r.events) > maxEvents {
		r.events = r.events[len(r.events)-maxEvents:]
	}
}

func (r *Reconciler) failed(a Assignment, reason string) {
	r.mu.Lock()
	if r.failures == nil {
		r.failures = map[string]failure{}
	}
	r.failures[a.Model] = failure{a.SHA256, reason, r.now().Add(r.RetryAfter)}
	r.mu.Unlock()
	r.set(ModelStatus{a.Model, a.Version, StateFailed, reason})
}

func (r *Reconciler) backingOff(a Assignment) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f, ok := r.failures[a.Model]
	if !ok || f.sha != a.SHA256 {
		return "", false
	}
	if r.now().Before(f.retry) {
		return f.reason, true
	}
	return "", false
}

func (r *Reconciler) clearFailure(model string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.failures, model)
}

// Reconcile runs one pass towards `desired`.
func (r *Reconciler) Reconcile(ctx context.Context, desired []Assignment) {
	served, err := r.Server.Index(ctx)
	if err != nil {
		// The server is down or restarting: nothing can be loaded now; the next pass
		// (a timer or the server's return) tries again. Never unload because of it.
		r.Log.Warn("server unreachable; will retry", "error", err)
		return
	}
	want := map[string]int{}
	for _, a := range desired {
		want[a.Model] = a.Version
		r.ensure(ctx, a, served[a.Model])
	}
	for _, model := range r.Artifacts.Managed() {
		if _, ok := want[model]; ok {
			continue
		}
		version, _ := r.Artifacts.Installed(model)
		r.set(ModelStatus{model, version, StateUnloading, "no longer assigned"})
		if err := r.Server.Unload(ctx, model); err != nil {
			r.Log.Warn("unload failed; will retry", "model", model, "error", err)
			continue
		}
		if err := r.Artifacts.Uninstall(model); err != nil {
			r.Log.Warn("uninstall failed", "model", model, "error", err)
			continue
		}
		r.Log.Info("unloaded and uninstalled (no longer assigned)", "model", model)
		r.drop(model)
		r.clearFailure(model)
	}
	managed := r.Artifacts.Managed()
	r.mu.Lock()
	for model := range r.status {
		if _, ok := want[model]; !ok && !contains(managed, model) {
			delete(r.status, model)
		}
	}
	r.mu.Unlock()
	// GC never removes the version the repository points at, so a version whose load
	// failed (the repository points back at the previous one) keeps both.
	keep := want
	if err := r.Artifacts.GC(keep); err != nil {
		r.Log.Warn("gc failed", "error", err)
	}
}

func contains(list []string, item string) bool {
	for _, s := range list {
		if s == item {
			return true
		}
	}
	return false
}

func (r *Reconciler) ensure(ctx context.Context, a Assignment, served Served) {
	installed, isInstalled := r.Artifacts.Installed(a.Model)
	if isInstalled && installed == a.Version && served.ReadyAt(a.Version) && r.Artifacts.Has(a) {
		r.clearFailure(a.Model)
		r.set(ModelStatus{a.Model, a.Version, StateReady, ""})
		return
	}
	if reason, waiting := r.backingOff(a); waiting {
		r.set(ModelStatus{a.Model, a.Version, StateFailed, reason})
		return
	}
	if !r.Artifacts.Has(a) {
		r.set(ModelStatus{a.Model, a.Version, StateDownloading, ""})
		if err := r.Artifacts.Fetch(ctx, a); err != nil {
			if ctx.Err() != nil {
				return
			}
			reason := "download failed: " + err.Error()
			if errors.Is(err, ErrDigest) {
				reason = err.Error() + " (not served)"
			}
			r.failed(a, reason)
			return
		}
	}
	previous, hadPrevious := installed, isInstalled && installed != a.Version
	if !isInstalled || installed != a.Version {
		if err := r.Artifacts.Install(a.Model, a.Version); err != nil {
			r.failed(a, "install failed: "+err.Error())
			return
		}
	}
	r.set(ModelStatus{a.Model, a.Version, StateLoading, ""})
	if err := r.Server.Load(ctx, a.Model); err != nil {
		if ctx.Err() != nil {
			return
		}
		// What served before serves on (the server keeps it); point the repository back
		// at it so that a server restart loads what was serving.
		if hadPrevious {
			_ = r.Artifacts.Install(a.Model, previous)
		}
		r.failed(a, err.Error())
		return
	}
	index, err := r.Server.Index(ctx)
	if err == nil && index[a.Model].ReadyAt(a.Version) {
		r.clearFailure(a.Model)
		r.set(ModelStatus{a.Model, a.Version, StateReady, ""})
		return
	}
	reason := "the server does not report it READY after the load"
	if err == nil {
		if why, ok := index[a.Model].Failed[a.Version]; ok {
			reason = why
		}
	}
	r.failed(a, reason)
}
