package inferbridge_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	inferbridge "github.com/inferbridge/inferbridge/clients/go"
	"github.com/inferbridge/inferbridge/clients/go/internal/testserver"
)

// The rollout server: explicit model control, a state directory, and models of the
// repository's ReleaseEcho test runtime (tests/support/release_runtimes.py: y = x + the
// version's value) with versions 1 (loaded at start) and 2 (the candidate).
var release struct {
	once sync.Once
	url  string
	err  error
}

// releaseModels are the models of the rollout server; each test takes its own.
var releaseModels = []string{"gated", "badspec", "twice", "rollout_example"}

// releaseServerURL starts the rollout server on first use (it stops after the tests).
func releaseServerURL() (string, error) {
	release.once.Do(func() {
		root, err := filepath.Abs(filepath.Join("..", ".."))
		if err != nil {
			release.err = err
			return
		}
		dir, err := os.MkdirTemp("", "inferbridge-go-rollouts-")
		if err != nil {
			release.err = err
			return
		}
		config := "runtime: tests.support.release_runtimes:ReleaseEcho\n" +
			"version_policy: {specific: {versions: [1]}}\n"
		for _, model := range releaseModels {
			for version, value := range map[string]string{"1": "1", "2": "2"} {
				if err := os.MkdirAll(filepath.Join(dir, "repo", model, version), 0o755); err != nil {
					release.err = err
					return
				}
				if err := os.WriteFile(filepath.Join(dir, "repo", model, version, "value.txt"), []byte(value), 0o644); err != nil {
					release.err = err
					return
				}
			}
			if err := os.WriteFile(filepath.Join(dir, "repo", model, "config.yaml"), []byte(config), 0o644); err != nil {
				release.err = err
				return
			}
		}
		server, err := testserver.StartWithEnv(python, filepath.Join(dir, "repo"), []string{"PYTHONPATH=" + root},
			3*time.Minute, "--model-control-mode", "explicit", "--load-model", "*",
			"--state-dir", filepath.Join(dir, "state"))
		if err != nil {
			_ = os.RemoveAll(dir)
			release.err = fmt.Errorf("cannot start the rollout server: %w", err)
			return
		}
		release.url = server.RESTURL
		atExit.Lock()
		atExit.funcs = append(atExit.funcs, func(failed bool) {
			if failed {
				fmt.Printf("--- rollout server output:\n%s", server.Output())
			}
			server.Stop()
			_ = os.RemoveAll(dir)
		})
		atExit.Unlock()
	})
	return release.url, release.err
}

func releaseClient(t *testing.T) *inferbridge.RESTClient {
	t.Helper()
	url, err := releaseServerURL()
	if err != nil {
		t.Fatal(err)
	}
	client, err := inferbridge.NewRESTClient(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	return client
}

// waitRollout polls the rollout's status until done says so (a minute at most: a loaded
// machine runs the analysis ticks late).
func waitRollout(t *testing.T, client *inferbridge.RESTClient, model, what string, done func(*inferbridge.Rollout) bool) *inferbridge.Rollout {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		status, err := client.RolloutStatus(context.Background(), model)
		if err != nil {
			t.Fatalf("status while waiting for %s: %v", what, err)
		}
		if done(status) {
			return status
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; last status: phase %s, step %d: %s", what, status.Phase, status.Step, status.Message)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// keepTraffic sends requests to model, one after another, until the returned stop runs.
func keepTraffic(t *testing.T, client *inferbridge.RESTClient, model string) (stop func()) {
	t.Helper()
	done := make(chan struct{})
	finished := make(chan error, 1)
	go func() {
		for {
			select {
			case <-done:
				finished <- nil
				return
			default:
			}
			if _, err := client.Infer(context.Background(), echoRequest(model)); err != nil {
				finished <- err
				return
			}
		}
	}()
	return func() {
		close(done)
		if err := <-finished; err != nil {
			t.Errorf("traffic to %s: %v", model, err)
		}
	}
}

func echoRequest(model string) *inferbridge.InferRequest {
	return &inferbridge.InferRequest{
		Model:  model,
		Inputs: []*inferbridge.Tensor{inferbridge.NewFP32("x", []int64{1, 1}, []float32{0})},
	}
}

// long never ends by itself: the tests that use it end the rollout by hand.
var long = []inferbridge.RolloutStep{
	inferbridge.Canary(30, 10*time.Minute),
	inferbridge.Canary(100, 10*time.Minute),
}

func TestRolloutThroughAnApprovalGateToPromotion(t *testing.T) {
	client := releaseClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	spec := inferbridge.RolloutSpec{
		Candidate: 2,
		Steps: []inferbridge.RolloutStep{
			inferbridge.Canary(10, time.Second),
			inferbridge.Approval("qa", 1),
			inferbridge.Canary(100, time.Second),
		},
		Analysis: &inferbridge.AnalysisSpec{
			Interval:    inferbridge.RolloutDuration(500 * time.Millisecond),
			MinRequests: new(0),
			Checks:      []inferbridge.AnalysisCheck{{ErrorRate: &inferbridge.ErrorRateCheck{Max: new(0.01)}}},
		},
	}
	started, err := client.StartRollout(ctx, "gated", spec, inferbridge.RolloutActor("go-test"))
	if err != nil {
		t.Fatal(err)
	}
	if started.Phase != inferbridge.RolloutProgressing || started.Baseline != 1 || started.Candidate != 2 || started.Step != 0 {
		t.Fatalf("started: phase %s, baseline %d, candidate %d, step %d", started.Phase, started.Baseline, started.Candidate, started.Step)
	}
	if !reflect.DeepEqual(started.Weights, map[int]float64{1: 90, 2: 10}) {
		t.Fatalf("weights %v, want 90/10", started.Weights)
	}
	if got := started.Spec.Steps[0].Canary; got == nil || got.Duration.Duration() != time.Second {
		t.Fatalf("the spec comes back with its steps: %+v", started.Spec.Steps)
	}
	if started.Spec.Analysis == nil || started.Spec.Analysis.Interval.Duration() != 500*time.Millisecond {
		t.Fatalf("the spec comes back with its analysis: %+v", started.Spec.Analysis)
	}
	if !started.Active() || started.Started.IsZero() || time.Since(started.Started.Time) > time.Hour {
		t.Fatalf("started at %v, active %v", started.Started, started.Active())
	}

	// Too early: the rollout is at the canary step, not at the gate.
	_, err = client.ApproveRollout(ctx, "gated", "qa", "alice", "too early")
	var e *inferbridge.Error
	if !errors.Is(err, inferbridge.ErrConflict) || !errors.As(err, &e) || e.HTTPStatus != http.StatusConflict || !strings.Contains(e.Message, "not waiting") {
		t.Fatalf("an early approval: %v, want a 409 saying the gate is not waiting", err)
	}

	// Traffic throughout: a step passes only once an analysis judged the candidate's share.
	defer keepTraffic(t, client, "gated")()
	waiting := waitRollout(t, client, "gated", "the gate", func(r *inferbridge.Rollout) bool { return r.WaitingFor != nil })
	if *waiting.WaitingFor != (inferbridge.RolloutGate{Gate: "qa", Approvals: 0, Required: 1}) || waiting.Step != 1 {
		t.Fatalf("waiting for %+v at step %d", waiting.WaitingFor, waiting.Step)
	}
	if len(waiting.Analyses) == 0 || waiting.Analyses[0].Verdict == "" || len(waiting.Analyses[0].Checks) != 1 {
		t.Fatalf("analyses: %+v", waiting.Analyses)
	}
	if check := waiting.Analyses[0].Checks[0]; check.Check != "error_rate" {
		t.Fatalf("check %+v", check)
	}
	if waiting.StepDescription == "" || len(waiting.StepDescriptions) != 3 {
		t.Fatalf("step descriptions %q / %q", waiting.StepDescription, waiting.StepDescriptions)
	}

	approved, err := client.ApproveRollout(ctx, "gated", "qa", "alice", "tests pass")
	if err != nil {
		t.Fatal(err)
	}
	if got := approved.Approvals["qa"]; len(got) != 1 || got[0].Who != "alice" || got[0].Comment != "tests pass" {
		t.Fatalf("approvals %+v", approved.Approvals)
	}
	promoted := waitRollout(t, client, "gated", "the promotion", func(r *inferbridge.Rollout) bool { return r.Phase == inferbridge.RolloutPromoted })
	if promoted.Active() || promoted.Ended.IsZero() || promoted.Weights[2] != 100 {
		t.Fatalf("promoted: active %v, ended %v, weights %v", promoted.Active(), promoted.Ended, promoted.Weights)
	}
	resp, err := client.Infer(ctx, echoRequest("gated"))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Version != "2" {
		t.Fatalf("after promotion version %q answered, want 2", resp.Version)
	}

	events, err := client.RolloutHistory(ctx, "gated")
	if err != nil {
		t.Fatal(err)
	}
	var story []string
	var mine []inferbridge.RolloutEvent // the model's history holds its earlier rollouts too
	for _, event := range events {
		if event.Rollout != started.ID {
			continue
		}
		mine = append(mine, event)
		story = append(story, event.Event+" by "+event.Actor)
		if event.Model != "gated" || event.At.IsZero() || event.Time == "" {
			t.Fatalf("event %+v", event)
		}
	}
	events = mine
	want := []string{"started by go-test", "step by controller", "approved by alice", "step by alice", "promoted by controller"}
	if !reflect.DeepEqual(story, want) {
		t.Fatalf("history %q, want %q", story, want)
	}
	if events[2].Detail["gate"] != "qa" || events[2].Detail["comment"] != "tests pass" {
		t.Fatalf("the approval's detail: %v", events[2].Detail)
	}

	// An ended rollout refuses actions, and clears.
	if _, err := client.AbortRollout(ctx, "gated", "too late"); !errors.Is(err, inferbridge.ErrConflict) {
		t.Fatalf("abort after promotion: %v, want ErrConflict", err)
	}
	all, err := client.ListRollouts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range all {
		found = found || (r.Model == "gated" && r.Phase == inferbridge.RolloutPromoted)
	}
	if !found {
		t.Fatalf("ListRollouts lacks gated: %+v", all)
	}
	// Right after a promotion the server may still be swapping versions (409, "being
	// loaded"): a later call succeeds.
	cleared, err := client.ClearRollout(ctx, "gated", inferbridge.RolloutActor("go-test"))
	for errors.Is(err, inferbridge.ErrConflict) && strings.Contains(err.Error(), "being loaded") && ctx.Err() == nil {
		time.Sleep(100 * time.Millisecond)
		cleared, err = client.ClearRollout(ctx, "gated", inferbridge.RolloutActor("go-test"))
	}
	if err != nil {
		t.Fatal(err)
	}
	if cleared.Cleared != started.ID || cleared.DefaultVersion == nil {
		t.Fatalf("cleared %+v", cleared)
	}
	if _, err := client.RolloutStatus(ctx, "gated"); !errors.Is(err, inferbridge.ErrNotFound) {
		t.Fatalf("status after clearing: %v, want ErrNotFound", err)
	}
}

func TestRolloutBadSpecIsInvalidArgumentAndChangesNothing(t *testing.T) {
	client := releaseClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, c := range []struct {
		name   string
		spec   inferbridge.RolloutSpec
		phrase string
	}{
		{"unknown candidate", inferbridge.RolloutSpec{Candidate: 9, Steps: long}, "unknown candidate"},
		{"weight above 100", inferbridge.RolloutSpec{Candidate: 2, Steps: []inferbridge.RolloutStep{inferbridge.Canary(101, time.Second)}}, "100"},
		{"never reaches 100", inferbridge.RolloutSpec{Candidate: 2, Steps: []inferbridge.RolloutStep{inferbridge.Canary(50, time.Second)}}, "never reach"},
		{"no steps", inferbridge.RolloutSpec{Candidate: 2}, "steps"},
	} {
		_, err := client.StartRollout(ctx, "badspec", c.spec)
		var e *inferbridge.Error
		if !errors.Is(err, inferbridge.ErrInvalidArgument) || !errors.As(err, &e) || e.HTTPStatus != http.StatusBadRequest {
			t.Fatalf("%s: %v, want a 400 matching ErrInvalidArgument", c.name, err)
		}
		if !strings.Contains(e.Message, c.phrase) {
			t.Fatalf("%s: message %q lacks %q", c.name, e.Message, c.phrase)
		}
	}
	if _, err := client.RolloutStatus(ctx, "badspec"); !errors.Is(err, inferbridge.ErrNotFound) {
		t.Fatalf("a refused rollout left a status: %v", err)
	}
	if _, err := client.RolloutHistory(ctx, "badspec"); !errors.Is(err, inferbridge.ErrNotFound) {
		t.Fatalf("a refused rollout left a history: %v", err)
	}
	index, err := client.RepositoryIndex(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, entry := range index {
		if entry.Name == "badspec" && entry.Version != "1" {
			t.Fatalf("a refused rollout loaded version %s", entry.Version)
		}
	}
	if _, err := client.StartRollout(ctx, "no_such_model", inferbridge.RolloutSpec{Candidate: 2, Steps: long}); !errors.Is(err, inferbridge.ErrNotFound) {
		t.Fatalf("a model that is not loaded: %v, want ErrNotFound", err)
	}
}

func TestRolloutSecondRolloutConflictsAndAbortRollsBack(t *testing.T) {
	client := releaseClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	spec := inferbridge.RolloutSpec{Candidate: 2, Steps: long, RouteKey: "header:x-user-id"}
	if _, err := client.StartRollout(ctx, "twice", spec); err != nil {
		t.Fatal(err)
	}
	_, err := client.StartRollout(ctx, "twice", spec)
	var e *inferbridge.Error
	if !errors.Is(err, inferbridge.ErrConflict) || !errors.As(err, &e) || e.HTTPStatus != http.StatusConflict || !strings.Contains(e.Message, "has a rollout already") {
		t.Fatalf("a second rollout: %v, want a 409 matching ErrConflict", err)
	}
	if inferbridge.CodeOf(err) != inferbridge.CodeAborted {
		t.Fatalf("code %v", inferbridge.CodeOf(err))
	}
	paused, err := client.PauseRollout(ctx, "twice", "a look first", inferbridge.RolloutActor("carol"))
	if err != nil || paused.Phase != inferbridge.RolloutPaused || !paused.Active() {
		t.Fatalf("pause: %v, %+v", err, paused)
	}
	if _, err := client.PauseRollout(ctx, "twice", ""); !errors.Is(err, inferbridge.ErrConflict) {
		t.Fatalf("a second pause: %v, want ErrConflict", err)
	}
	resumed, err := client.ResumeRollout(ctx, "twice", inferbridge.RolloutActor("carol"))
	if err != nil || resumed.Phase != inferbridge.RolloutProgressing {
		t.Fatalf("resume: %v, %+v", err, resumed)
	}
	if _, err := client.ClearRollout(ctx, "twice"); !errors.Is(err, inferbridge.ErrConflict) {
		t.Fatalf("clearing an active rollout: %v, want ErrConflict", err)
	}
	aborted, err := client.AbortRollout(ctx, "twice", "seen enough", inferbridge.RolloutActor("carol"))
	if err != nil {
		t.Fatal(err)
	}
	if aborted.Phase != inferbridge.RolloutAborted || aborted.Weights[2] != 0 || !strings.Contains(aborted.Message, "seen enough") {
		t.Fatalf("aborted: %+v", aborted)
	}
	for range 10 {
		resp, err := client.Infer(ctx, echoRequest("twice"))
		if err != nil {
			t.Fatal(err)
		}
		if resp.Version != "1" {
			t.Fatalf("after the abort version %s answered", resp.Version)
		}
	}
	events, err := client.RolloutHistory(ctx, "twice")
	if err != nil {
		t.Fatal(err)
	}
	last := events[len(events)-1]
	if last.Event != "aborted" || last.Actor != "carol" || last.Detail["why"] != "seen enough" {
		t.Fatalf("the last event: %+v", last)
	}
	audit, err := client.RolloutAudit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(audit) < len(events) {
		t.Fatalf("the audit log has %d events, the model's history %d", len(audit), len(events))
	}
	if _, err := client.PromoteRollout(ctx, "twice"); !errors.Is(err, inferbridge.ErrConflict) {
		t.Fatalf("promoting an aborted rollout: %v, want ErrConflict", err)
	}
	if _, err := client.ApproveRollout(ctx, "no_such_model", "qa", "bob", ""); !errors.Is(err, inferbridge.ErrNotFound) {
		t.Fatalf("approving a model without rollout: %v, want ErrNotFound", err)
	}
}

// The spec's JSON is what the server reads: durations in seconds, omitted fields left to
// the server's defaults, pointers for the values where zero means something.
func TestUnitRolloutSpecJSON(t *testing.T) {
	timeout := inferbridge.RolloutDuration(time.Hour)
	spec := inferbridge.RolloutSpec{
		Candidate: 3,
		RouteKey:  "header:x-user-id",
		Steps: []inferbridge.RolloutStep{
			inferbridge.Shadow(10*time.Minute, 1),
			inferbridge.Canary(5, 1500*time.Millisecond),
			{Approval: &inferbridge.ApprovalStep{Name: "qa", Approvers: 2, Timeout: &timeout}},
			inferbridge.Canary(100, 5*time.Minute),
		},
		Analysis: &inferbridge.AnalysisSpec{
			Interval:     inferbridge.RolloutDuration(time.Second),
			MinRequests:  new(0),
			FailureLimit: 2,
			Checks: []inferbridge.AnalysisCheck{
				{ErrorRate: &inferbridge.ErrorRateCheck{Max: new(0.0), MaxRatioToBaseline: 2}},
				{LatencyP99: &inferbridge.LatencyCheck{MaxRatioToBaseline: 1.5}},
				{Agreement: &inferbridge.AgreementCheck{Min: 0.98, Atol: new(0.0)}},
			},
		},
	}
	got, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"candidate":3,"route_key":"header:x-user-id","steps":[` +
		`{"shadow":{"duration":600,"sample":1}},{"canary":{"weight":5,"duration":1.5}},` +
		`{"approval":{"name":"qa","approvers":2,"timeout":3600}},{"canary":{"weight":100,"duration":300}}],` +
		`"analysis":{"interval":1,"min_requests":0,"failure_limit":2,"checks":[` +
		`{"error_rate":{"max":0,"max_ratio_to_baseline":2}},{"latency_p99":{"max_ratio_to_baseline":1.5}},` +
		`{"agreement":{"min":0.98,"atol":0}}]}}`
	if string(got) != want {
		t.Fatalf("spec JSON\n got %s\nwant %s", got, want)
	}
	var back inferbridge.RolloutSpec
	if err := json.Unmarshal(got, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, spec) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", back, spec)
	}
	// The server's duration strings read too.
	var d inferbridge.RolloutDuration
	for text, want := range map[string]time.Duration{`"1m30s"`: 90 * time.Second, `"500ms"`: 500 * time.Millisecond, `0.25`: 250 * time.Millisecond} {
		if err := json.Unmarshal([]byte(text), &d); err != nil || d.Duration() != want {
			t.Fatalf("duration %s: %v, %v", text, d, err)
		}
	}
	if err := json.Unmarshal([]byte(`"1x"`), &d); err == nil {
		t.Fatal("a bad duration string read without an error")
	}
}

// A status in the server's shape reads into the typed fields.
func TestUnitRolloutStatusJSON(t *testing.T) {
	const status = `{"id":"abc","model":"m","spec":{"candidate":2,"steps":[{"canary":{"weight":10.0,"duration":1.0}},
	 {"approval":{"name":"qa","approvers":1}},{"canary":{"weight":100.0,"duration":1.0}}],
	 "analysis":{"interval":0.5,"min_requests":0,"failure_limit":2,"checks":[{"error_rate":{"max":0.01,"reasons":["timeout","backend"]}}]},
	 "on_abort":"unload","webhooks":[],"shadow_queue":64},
	 "baseline":1,"candidate":2,"source":"api","phase":"progressing","step":1,"started":1700000000.25,
	 "step_started":1700000001.5,"ended":null,"consecutive_failures":0,"step_passes":1,
	 "approvals":{"qa":[{"who":"alice","comment":"ok","at":1700000002.0}]},"message":"waiting for approval 'qa': 1 of 2","pin":true,
	 "steps":["canary weight 10 for 1s","approval 'qa' (1 approver(s))","canary weight 100 for 1s"],
	 "step_description":"approval 'qa' (1 approver(s))","weights":{"1":90.0,"2":10.0},"shadow_sample":null,
	 "analysis":[{"at":1700000001.4,"step":0,"verdict":"pass","why":"every check passed",
	   "baseline":{"requests":18,"failures":{},"p50_ms":0.1,"p99_ms":0.2},
	   "candidate":{"requests":2,"failures":{"backend":1},"p50_ms":null,"p99_ms":null},
	   "checks":[{"check":"error_rate","verdict":"pass","why":"error rate 0.0000","candidate":0.0,"candidate_requests":2}]}],
	 "verdicts":{"pass":1,"fail":0,"inconclusive":0},
	 "shadow":{"sent":0,"dropped":0,"failed":0,"compared":0,"agreed":0,"agreement":null,"outputs":{}},
	 "waiting_for":{"gate":"qa","approvals":1,"required":2}}`
	var r inferbridge.Rollout
	if err := json.Unmarshal([]byte(status), &r); err != nil {
		t.Fatal(err)
	}
	if r.Phase != inferbridge.RolloutProgressing || !r.Active() || r.Step != 1 || !r.Ended.IsZero() {
		t.Fatalf("phase %s step %d ended %v", r.Phase, r.Step, r.Ended)
	}
	if !r.Started.Equal(time.Unix(1700000000, 250_000_000)) {
		t.Fatalf("started %v", r.Started)
	}
	if !reflect.DeepEqual(r.Weights, map[int]float64{1: 90, 2: 10}) || r.ShadowSample != nil {
		t.Fatalf("weights %v, sample %v", r.Weights, r.ShadowSample)
	}
	if *r.WaitingFor != (inferbridge.RolloutGate{Gate: "qa", Approvals: 1, Required: 2}) {
		t.Fatalf("waiting for %+v", r.WaitingFor)
	}
	if r.Approvals["qa"][0].Who != "alice" || r.Spec.Steps[1].Approval.Name != "qa" {
		t.Fatalf("approvals %+v, spec %+v", r.Approvals, r.Spec.Steps)
	}
	a := r.Analyses[0]
	if a.Verdict != "pass" || a.Baseline.Requests != 18 || *a.Baseline.P99MS != 0.2 || a.Candidate.P50MS != nil || a.Candidate.Failures["backend"] != 1 {
		t.Fatalf("analysis %+v", a)
	}
	check := a.Checks[0]
	if n, ok := check.Figure("candidate_requests"); check.Check != "error_rate" || check.Verdict != "pass" || !ok || n != 2 {
		t.Fatalf("check %+v", check)
	}
	if _, ok := check.Figures["check"]; ok {
		t.Fatal("the check's name is left among its figures")
	}
	if r.Spec.Analysis.Interval.Duration() != 500*time.Millisecond || *r.Spec.Analysis.Checks[0].ErrorRate.Max != 0.01 {
		t.Fatalf("analysis spec %+v", r.Spec.Analysis)
	}
	again, err := json.Marshal(check)
	if err != nil || !strings.Contains(string(again), `"check":"error_rate"`) || !strings.Contains(string(again), `"candidate_requests":2`) {
		t.Fatalf("check result JSON %s, %v", again, err)
	}
}

// Each call sends its method, path and body; 400, 404 and 409 answers are typed errors.
func TestUnitRolloutRequestsAndErrors(t *testing.T) {
	var mu sync.Mutex
	var got []recorded
	url := fakeREST(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		rec := recorded{method: r.Method, path: r.URL.Path}
		if len(body) > 0 {
			if err := json.Unmarshal(body, &rec.body); err != nil {
				t.Errorf("%s: body %q is not JSON", r.URL.Path, body)
			}
		}
		mu.Lock()
		got = append(got, rec)
		mu.Unlock()
		switch {
		case strings.HasPrefix(r.URL.Path, "/v1/rollouts/bad"):
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"error":"the rollout: field 'steps': Field required"}`))
		case strings.HasPrefix(r.URL.Path, "/v1/rollouts/missing"):
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"error":"model 'missing' has no rollout"}`))
		case strings.HasPrefix(r.URL.Path, "/v1/rollouts/busy"):
			w.WriteHeader(http.StatusConflict)
			_, _ = w.Write([]byte(`{"error":"gate 'qa' of model 'busy' is not waiting"}`))
		case r.URL.Path == "/v1/rollouts" && r.Method == http.MethodGet:
			_, _ = w.Write([]byte(`{"rollouts":[{"model":"m","phase":"promoted"}]}`))
		case strings.HasSuffix(r.URL.Path, "/history") || r.URL.Path == "/v1/rollout-audit":
			_, _ = w.Write([]byte(`{"events":[{"seq":1,"at":1700000000.0,"event":"started","actor":"api","detail":{"baseline":1}}]}`))
		case r.Method == http.MethodDelete:
			_, _ = w.Write([]byte(`{"model":"m","cleared":"abc","default_version":2}`))
		default:
			_, _ = w.Write([]byte(`{"model":"m","phase":"progressing","weights":{"1":50,"2":50}}`))
		}
	})
	client, _ := inferbridge.NewRESTClient(url)
	ctx := context.Background()
	actor := inferbridge.RolloutActor("carol")
	spec := inferbridge.RolloutSpec{Candidate: 2, Steps: []inferbridge.RolloutStep{inferbridge.Canary(100, time.Minute)}}
	if r, err := client.StartRollout(ctx, "m", spec, actor); err != nil || r.Weights[2] != 50 {
		t.Fatalf("start: %v, %+v", err, r)
	}
	mustRollout := func(r *inferbridge.Rollout, err error) {
		t.Helper()
		if err != nil || r.Model != "m" {
			t.Fatalf("%v, %+v", err, r)
		}
	}
	mustRollout(client.RolloutStatus(ctx, "m"))
	mustRollout(client.ApproveRollout(ctx, "m", "qa", "alice", "fine"))
	mustRollout(client.PauseRollout(ctx, "m", "lunch", actor))
	mustRollout(client.ResumeRollout(ctx, "m"))
	mustRollout(client.AbortRollout(ctx, "m", "bad", actor))
	mustRollout(client.PromoteRollout(ctx, "m", actor))
	if all, err := client.ListRollouts(ctx); err != nil || len(all) != 1 || all[0].Phase != inferbridge.RolloutPromoted {
		t.Fatalf("list: %v, %+v", err, all)
	}
	if events, err := client.RolloutHistory(ctx, "m"); err != nil || len(events) != 1 || events[0].Detail["baseline"] != 1.0 {
		t.Fatalf("history: %v, %+v", err, events)
	}
	if events, err := client.RolloutAudit(ctx); err != nil || len(events) != 1 {
		t.Fatalf("audit: %v, %+v", err, events)
	}
	if cleared, err := client.ClearRollout(ctx, "m", actor); err != nil || *cleared.DefaultVersion != 2 {
		t.Fatalf("clear: %v, %+v", err, cleared)
	}
	want := []recorded{
		{"POST", "/v1/rollouts", map[string]any{"model": "m", "actor": "carol", "candidate": 2.0,
			"steps": []any{map[string]any{"canary": map[string]any{"weight": 100.0, "duration": 60.0}}}}},
		{"GET", "/v1/rollouts/m", nil},
		{"POST", "/v1/rollouts/m/approve", map[string]any{"gate": "qa", "who": "alice", "comment": "fine"}},
		{"POST", "/v1/rollouts/m/pause", map[string]any{"actor": "carol", "reason": "lunch"}},
		{"POST", "/v1/rollouts/m/resume", map[string]any{}},
		{"POST", "/v1/rollouts/m/abort", map[string]any{"actor": "carol", "reason": "bad"}},
		{"POST", "/v1/rollouts/m/promote", map[string]any{"actor": "carol"}},
		{"GET", "/v1/rollouts", nil},
		{"GET", "/v1/rollouts/m/history", nil},
		{"GET", "/v1/rollout-audit", nil},
		{"DELETE", "/v1/rollouts/m", map[string]any{"actor": "carol"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("requests\n got %+v\nwant %+v", got, want)
	}

	for _, c := range []struct {
		model    string
		sentinel error
		code     inferbridge.Code
		status   int
	}{
		{"bad", inferbridge.ErrInvalidArgument, inferbridge.CodeInvalidArgument, 400},
		{"missing", inferbridge.ErrNotFound, inferbridge.CodeNotFound, 404},
		{"busy", inferbridge.ErrConflict, inferbridge.CodeAborted, 409},
	} {
		_, err := client.RolloutStatus(ctx, c.model)
		var e *inferbridge.Error
		if !errors.Is(err, c.sentinel) || !errors.As(err, &e) || e.Code != c.code || e.HTTPStatus != c.status || e.Message == "" {
			t.Fatalf("%s: %v", c.model, err)
		}
		if e.Op != "rollout status "+c.model {
			t.Fatalf("op %q", e.Op)
		}
	}
	if _, err := client.ApproveRollout(ctx, "m", "", "alice", ""); !errors.Is(err, inferbridge.ErrInvalidArgument) {
		t.Fatalf("an approval without a gate: %v", err)
	}
	if _, err := client.StartRollout(ctx, "", spec); !errors.Is(err, inferbridge.ErrInvalidArgument) {
		t.Fatalf("a rollout without a model: %v", err)
	}
}
