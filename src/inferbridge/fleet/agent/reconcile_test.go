package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"testing"
	"time"
)

// fakeServer is an in-memory inferbridge server: Load serves whatever version the
// fake store has installed.
type fakeServer struct {
	store   *fakeArtifacts
	served  map[string]int
	failing map[string]string // model -> load error
	down    bool
	calls   []string
}

func (s *fakeServer) Index(context.Context) (map[string]Served, error) {
	if s.down {
		return nil, errors.New("connection refused")
	}
	out := map[string]Served{}
	for m, v := range s.served {
		out[m] = Served{Ready: []int{v}, Failed: map[int]string{}, States: map[int]string{v: "READY"}}
	}
	return out, nil
}

func (s *fakeServer) Load(_ context.Context, model string) error {
	s.calls = append(s.calls, "load "+model)
	if why, ok := s.failing[model]; ok {
		return errors.New(why)
	}
	s.served[model] = s.store.installed[model]
	return nil
}

func (s *fakeServer) Unload(_ context.Context, model string) error {
	s.calls = append(s.calls, "unload "+model)
	delete(s.served, model)
	return nil
}

type fakeArtifacts struct {
	have      map[string]string // "model/version" -> sha
	installed map[string]int
	bad       map[string]bool // sha -> digest mismatch
	fetches   int
	gcKeep    map[string]int
}

func key(model string, version int) string { return fmt.Sprintf("%s/%d", model, version) }

func (f *fakeArtifacts) Has(a Assignment) bool { return f.have[key(a.Model, a.Version)] == a.SHA256 }
func (f *fakeArtifacts) Fetch(_ context.Context, a Assignment) error {
	f.fetches++
	if f.bad[a.SHA256] {
		return fmt.Errorf("%w: has sha256 x, the manifest says %s", ErrDigest, a.SHA256)
	}
	f.have[key(a.Model, a.Version)] = a.SHA256
	return nil
}
func (f *fakeArtifacts) Installed(model string) (int, bool) {
	v, ok := f.installed[model]
	return v, ok
}
func (f *fakeArtifacts) Install(model string, version int) error {
	f.installed[model] = version
	return nil
}
func (f *fakeArtifacts) Uninstall(model string) error { delete(f.installed, model); return nil }
func (f *fakeArtifacts) Managed() []string {
	var out []string
	for m := range f.installed {
		out = append(out, m)
	}
	sort.Strings(out)
	return out
}
func (f *fakeArtifacts) GC(keep map[string]int) error {
	f.gcKeep = keep
	for k := range f.have {
		wanted := false
		for model, version := range keep {
			wanted = wanted || k == key(model, version)
		}
		for model, version := range f.installed {
			wanted = wanted || k == key(model, version)
		}
		if !wanted {
			delete(f.have, k)
		}
	}
	return nil
}

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func newFixture() (*Reconciler, *fakeServer, *fakeArtifacts, *fakeClock) {
	store := &fakeArtifacts{have: map[string]string{}, installed: map[string]int{}, bad: map[string]bool{}}
	server := &fakeServer{store: store, served: map[string]int{}, failing: map[string]string{}}
	clock := &fakeClock{time.Unix(1000, 0)}
	r := &Reconciler{
		Server: server, Artifacts: store, RetryAfter: 30 * time.Second, Now: clock.now,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	return r, server, store, clock
}

func statusOf(r *Reconciler, model string) ModelStatus {
	for _, s := range r.Status() {
		if s.Model == model {
			return s
		}
	}
	return ModelStatus{}
}

func TestReconcileDownloadsInstallsLoadsAndIsIdempotent(t *testing.T) {
	r, server, store, _ := newFixture()
	desired := []Assignment{{Model: "iris", Version: 1, SHA256: "s1"}}
	r.Reconcile(context.Background(), desired)
	if got := statusOf(r, "iris"); got.State != StateReady || got.Version != 1 {
		t.Fatalf("status = %+v, want READY v1", got)
	}
	r.Reconcile(context.Background(), desired)
	if store.fetches != 1 || len(server.calls) != 1 {
		t.Fatalf("second pass acted again: fetches %d, calls %v", store.fetches, server.calls)
	}
}

func TestReconcileSwitchesVersionAndCollectsTheOldOne(t *testing.T) {
	r, server, store, _ := newFixture()
	r.Reconcile(context.Background(), []Assignment{{Model: "iris", Version: 1, SHA256: "s1"}})
	r.Reconcile(context.Background(), []Assignment{{Model: "iris", Version: 2, SHA256: "s2"}})
	if server.served["iris"] != 2 || store.installed["iris"] != 2 {
		t.Fatalf("served %v installed %v, want version 2", server.served, store.installed)
	}
	if _, ok := store.have["iris/1"]; ok {
		t.Fatalf("version 1 was not garbage-collected: %v", store.have)
	}
}

func TestDigestMismatchIsNeverServedAndBacksOff(t *testing.T) {
	r, server, store, clock := newFixture()
	r.Reconcile(context.Background(), []Assignment{{Model: "iris", Version: 1, SHA256: "s1"}})
	store.bad["s2"] = true
	desired := []Assignment{{Model: "iris", Version: 2, SHA256: "s2"}}
	r.Reconcile(context.Background(), desired)
	got := statusOf(r, "iris")
	if got.State != StateFailed || got.Reason == "" {
		t.Fatalf("status = %+v, want FAILED with a reason", got)
	}
	if server.served["iris"] != 1 || store.installed["iris"] != 1 {
		t.Fatalf("a bad artefact changed what serves: served %v installed %v", server.served, store.installed)
	}
	r.Reconcile(context.Background(), desired)
	if store.fetches != 2 {
		t.Fatalf("retried inside the backoff: %d fetches", store.fetches)
	}
	clock.t = clock.t.Add(31 * time.Second)
	r.Reconcile(context.Background(), desired)
	if store.fetches != 3 {
		t.Fatalf("no retry after the backoff: %d fetches", store.fetches)
	}
}

func TestLoadFailurePointsTheRepositoryBack(t *testing.T) {
	r, server, store, _ := newFixture()
	r.Reconcile(context.Background(), []Assignment{{Model: "iris", Version: 1, SHA256: "s1"}})
	server.failing["iris"] = "failed to load: corrupt model"
	r.Reconcile(context.Background(), []Assignment{{Model: "iris", Version: 2, SHA256: "s2"}})
	if got := statusOf(r, "iris"); got.State != StateFailed || got.Reason != "failed to load: corrupt model" {
		t.Fatalf("status = %+v", got)
	}
	if store.installed["iris"] != 1 || server.served["iris"] != 1 {
		t.Fatalf("installed %v served %v, want version 1 on both", store.installed, server.served)
	}
}

func TestUnassignedModelsAreUnloadedButAnUnreachableServerChangesNothing(t *testing.T) {
	r, server, store, _ := newFixture()
	both := []Assignment{{Model: "a", Version: 1, SHA256: "a1"}, {Model: "b", Version: 1, SHA256: "b1"}}
	r.Reconcile(context.Background(), both)
	server.down = true
	r.Reconcile(context.Background(), both[:1])
	if _, ok := store.installed["b"]; !ok {
		t.Fatal("uninstalled while the server was unreachable")
	}
	server.down = false
	r.Reconcile(context.Background(), both[:1])
	if _, ok := server.served["b"]; ok {
		t.Fatal("b still served after it was unassigned")
	}
	if _, ok := store.installed["b"]; ok {
		t.Fatal("b still installed")
	}
	if len(r.Status()) != 1 {
		t.Fatalf("status lists %v", r.Status())
	}
}

func TestAServerThatLostItsModelsGetsThemBack(t *testing.T) {
	r, server, _, _ := newFixture()
	desired := []Assignment{{Model: "iris", Version: 1, SHA256: "s1"}}
	r.Reconcile(context.Background(), desired)
	server.served = map[string]int{} // the server restarted in explicit mode
	r.Reconcile(context.Background(), desired)
	if server.served["iris"] != 1 {
		t.Fatal("the model was not loaded again")
	}
}

func TestEventsAreBufferedUntilDelivered(t *testing.T) {
	r, _, _, _ := newFixture()
	r.Reconcile(context.Background(), []Assignment{{Model: "iris", Version: 1, SHA256: "s1"}})
	events := r.TakeEvents()
	if len(events) < 2 {
		t.Fatalf("events = %v", events)
	}
	r.Restore(events)
	if again := r.TakeEvents(); len(again) != len(events) {
		t.Fatalf("restored %d of %d events", len(again), len(events))
	}
}
