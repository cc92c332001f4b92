package inferbridge

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"
)

// The phases of a rollout. A progressing or paused rollout routes traffic and runs its
// analysis; an aborted or promoted one has ended.
const (
	RolloutProgressing = "progressing"
	RolloutPaused      = "paused"
	RolloutAborted     = "aborted"
	RolloutPromoted    = "promoted"
)

// ErrConflict is ErrAborted under the name that reads best for the rollout calls: the
// server answered 409 because the rollout's state does not allow the call (a second
// rollout of a model, a gate that is not waiting, an action on an ended rollout).
var ErrConflict = ErrAborted

// RolloutDuration is a duration in a rollout spec. It travels as a number of seconds and
// reads the server's numbers and duration strings ("500ms", "10m", "1m30s").
type RolloutDuration time.Duration

// Duration is d as a time.Duration.
func (d RolloutDuration) Duration() time.Duration { return time.Duration(d) }

// String formats d as time.Duration does.
func (d RolloutDuration) String() string { return time.Duration(d).String() }

// MarshalJSON writes d as seconds.
func (d RolloutDuration) MarshalJSON() ([]byte, error) {
	return strconv.AppendFloat(nil, time.Duration(d).Seconds(), 'g', -1, 64), nil
}

// UnmarshalJSON reads a number of seconds or a Go duration string.
func (d *RolloutDuration) UnmarshalJSON(data []byte) error {
	if bytes.Equal(data, []byte("null")) {
		return nil
	}
	var text string
	if json.Unmarshal(data, &text) == nil {
		parsed, err := time.ParseDuration(text)
		if err != nil {
			return fmt.Errorf("rollout duration %q: %w", text, err)
		}
		*d = RolloutDuration(parsed)
		return nil
	}
	var seconds float64
	if err := json.Unmarshal(data, &seconds); err != nil {
		return fmt.Errorf("rollout duration %s: not a number of seconds or a duration string", data)
	}
	*d = RolloutDuration(time.Duration(math.Round(seconds * float64(time.Second))))
	return nil
}

// RolloutTime is a moment the server reports as Unix seconds (a JSON number).
type RolloutTime struct{ time.Time }

// UnmarshalJSON reads Unix seconds with a fraction; null leaves the zero time.
func (t *RolloutTime) UnmarshalJSON(data []byte) error {
	if bytes.Equal(data, []byte("null")) {
		return nil
	}
	var seconds float64
	if err := json.Unmarshal(data, &seconds); err != nil {
		return fmt.Errorf("rollout time %s: not Unix seconds", data)
	}
	whole, fraction := math.Modf(seconds)
	t.Time = time.Unix(int64(whole), int64(math.Round(fraction*1e9)))
	return nil
}

// MarshalJSON writes Unix seconds (null for the zero time).
func (t RolloutTime) MarshalJSON() ([]byte, error) {
	if t.IsZero() {
		return []byte("null"), nil
	}
	return strconv.AppendFloat(nil, float64(t.UnixNano())/1e9, 'f', 6, 64), nil
}

// RolloutSpec declares a rollout (the body of POST /v1/rollouts without the model, or a
// model config's `rollout:` block). The server validates all of it before anything
// changes; omitted fields take the server's defaults.
type RolloutSpec struct {
	// Candidate is the version under test; the baseline is the model's current default.
	Candidate int `json:"candidate"`
	// RouteKey makes the split sticky: "header:<name>" (an HTTP header or gRPC metadata)
	// or "parameter:<name>" (an inference request parameter). "" splits at random.
	RouteKey string `json:"route_key,omitempty"`
	// Steps run in order; the last canary step must have weight 100.
	Steps []RolloutStep `json:"steps"`
	// Analysis judges the candidate every interval; nil takes the server's defaults.
	Analysis *AnalysisSpec `json:"analysis,omitempty"`
	// OnAbort is "unload" (the default) or "keep" (the candidate stays loaded for
	// inspection).
	OnAbort string `json:"on_abort,omitempty"`
	// Webhooks are URLs that get a JSON event at step changes, aborts and promotions.
	Webhooks []string `json:"webhooks,omitempty"`
	// ShadowQueue bounds the shadow copies in flight (0: the server's default, 64).
	ShadowQueue int `json:"shadow_queue,omitempty"`
}

// RolloutStep is one step: exactly one of its fields is set. Shadow, Canary and Approval
// build them.
type RolloutStep struct {
	Shadow   *ShadowStep   `json:"shadow,omitempty"`
	Canary   *CanaryStep   `json:"canary,omitempty"`
	Approval *ApprovalStep `json:"approval,omitempty"`
}

// ShadowStep sends the candidate a copy of a share of the requests for a while; its
// answers never reach the client and are compared with the baseline's.
type ShadowStep struct {
	Duration RolloutDuration `json:"duration"`
	// Sample is the share of requests copied, in (0, 1]; 0 means the server's default, 1.
	Sample float64 `json:"sample,omitempty"`
}

// CanaryStep sends the candidate Weight percent of the model's unversioned requests for
// Duration (and until an analysis has passed).
type CanaryStep struct {
	Weight   float64         `json:"weight"`
	Duration RolloutDuration `json:"duration"`
}

// ApprovalStep waits until the named gate has Approvers approvals (0: one); with a
// Timeout, the rollout aborts when the gate waits longer.
type ApprovalStep struct {
	Name      string           `json:"name"`
	Approvers int              `json:"approvers,omitempty"`
	Timeout   *RolloutDuration `json:"timeout,omitempty"`
}

// Shadow is a shadow step of duration d copying the share sample of the requests.
func Shadow(d time.Duration, sample float64) RolloutStep {
	return RolloutStep{Shadow: &ShadowStep{Duration: RolloutDuration(d), Sample: sample}}
}

// Canary is a canary step at weight percent for d.
func Canary(weight float64, d time.Duration) RolloutStep {
	return RolloutStep{Canary: &CanaryStep{Weight: weight, Duration: RolloutDuration(d)}}
}

// Approval is a gate named name that needs approvers approvals.
func Approval(name string, approvers int) RolloutStep {
	return RolloutStep{Approval: &ApprovalStep{Name: name, Approvers: approvers}}
}

// AnalysisSpec says how the candidate is judged. Zero fields take the server's defaults
// (interval 10 s, window one interval, 50 requests, failure limit 2, an error-rate check).
type AnalysisSpec struct {
	Interval RolloutDuration `json:"interval,omitempty"`
	// Window is how far back each analysis looks; not shorter than Interval.
	Window RolloutDuration `json:"window,omitempty"`
	// MinRequests is how many requests the candidate needs in the window before it is
	// judged; nil takes the default (50), so that 0 can be asked for.
	MinRequests *int `json:"min_requests,omitempty"`
	// FailureLimit is how many failed analyses in a row abort the rollout.
	FailureLimit int `json:"failure_limit,omitempty"`
	// Checks are judged every interval; none takes the server's default check.
	Checks []AnalysisCheck `json:"checks,omitempty"`
}

// AnalysisCheck is one check: exactly one of its fields is set.
type AnalysisCheck struct {
	ErrorRate  *ErrorRateCheck  `json:"error_rate,omitempty"`
	LatencyP99 *LatencyCheck    `json:"latency_p99,omitempty"`
	LatencyP50 *LatencyCheck    `json:"latency_p50,omitempty"`
	Agreement  *AgreementCheck  `json:"agreement,omitempty"`
	Prometheus *PrometheusCheck `json:"prometheus,omitempty"`
}

// ErrorRateCheck bounds the candidate's error rate: at most Max, and at most
// MaxRatioToBaseline times the baseline's (at least one of them).
type ErrorRateCheck struct {
	Max                *float64 `json:"max,omitempty"`
	MaxRatioToBaseline float64  `json:"max_ratio_to_baseline,omitempty"`
	// Reasons are the failure reasons counted as errors (rejected, canceled, timeout,
	// invalid, backend); none takes the default, timeout and backend.
	Reasons []string `json:"reasons,omitempty"`
}

// LatencyCheck bounds a latency quantile of the candidate: at most MaxMS milliseconds,
// and at most MaxRatioToBaseline times the baseline's (at least one of them).
type LatencyCheck struct {
	MaxRatioToBaseline float64 `json:"max_ratio_to_baseline,omitempty"`
	MaxMS              float64 `json:"max_ms,omitempty"`
}

// AgreementCheck needs the shadow's answers to agree with the primary's in at least Min
// of the comparisons; floats agree within Atol + Rtol*|primary| (nil: the defaults).
type AgreementCheck struct {
	Min        float64  `json:"min"`
	Atol       *float64 `json:"atol,omitempty"`
	Rtol       *float64 `json:"rtol,omitempty"`
	MaxAbsDiff *float64 `json:"max_abs_diff,omitempty"`
}

// PrometheusCheck bounds the value of a PromQL query at URL (Max and/or Min).
type PrometheusCheck struct {
	Query   string          `json:"query"`
	URL     string          `json:"url"`
	Max     *float64        `json:"max,omitempty"`
	Min     *float64        `json:"min,omitempty"`
	Timeout RolloutDuration `json:"timeout,omitempty"`
}

// Rollout is a rollout's status (GET /v1/rollouts/{model}).
type Rollout struct {
	ID        string      `json:"id"`
	Model     string      `json:"model"`
	Spec      RolloutSpec `json:"spec"`
	Baseline  int         `json:"baseline"`
	Candidate int         `json:"candidate"`
	// Source is "api" or "config" (declared in the model's config).
	Source string `json:"source"`
	// Phase is RolloutProgressing, RolloutPaused, RolloutAborted or RolloutPromoted.
	Phase string `json:"phase"`
	// Step is the index of the current step in Spec.Steps (len(Steps) once done).
	Step                int         `json:"step"`
	Started             RolloutTime `json:"started"`
	StepStarted         RolloutTime `json:"step_started"`
	Ended               RolloutTime `json:"ended"`
	ConsecutiveFailures int         `json:"consecutive_failures"`
	StepPasses          int         `json:"step_passes"`
	// Approvals are the approvals given, by gate.
	Approvals map[string][]RolloutApproval `json:"approvals"`
	// Message says what the rollout is doing or why it ended.
	Message string `json:"message"`
	// StepDescriptions describe Spec.Steps, one line each; StepDescription the current one.
	StepDescriptions []string `json:"steps"`
	StepDescription  string   `json:"step_description"`
	// Weights is each version's share of unversioned requests, in percent.
	Weights map[int]float64 `json:"weights"`
	// ShadowSample is the share of requests copied to the candidate now; nil when none.
	ShadowSample *float64 `json:"shadow_sample"`
	// Analyses are the most recent analyses, newest first.
	Analyses []AnalysisResult `json:"analysis"`
	// Verdicts counts the analyses by verdict: pass, fail, inconclusive.
	Verdicts map[string]int `json:"verdicts"`
	// Shadow are the shadow comparisons since the rollout started.
	Shadow ShadowCounts `json:"shadow"`
	// WaitingFor is the approval gate the rollout waits at; nil when it waits at none.
	WaitingFor *RolloutGate `json:"waiting_for"`
}

// Active reports whether the rollout still routes traffic (progressing or paused).
func (r *Rollout) Active() bool {
	return r.Phase == RolloutProgressing || r.Phase == RolloutPaused
}

// RolloutApproval is one approval of a gate.
type RolloutApproval struct {
	Who     string      `json:"who"`
	Comment string      `json:"comment"`
	At      RolloutTime `json:"at"`
}

// RolloutGate is the gate a rollout waits at, with the approvals it has and needs.
type RolloutGate struct {
	Gate      string `json:"gate"`
	Approvals int    `json:"approvals"`
	Required  int    `json:"required"`
}

// AnalysisResult is one analysis window: the versions' figures and each check's verdict.
type AnalysisResult struct {
	At   RolloutTime `json:"at"`
	Step int         `json:"step"`
	// Verdict is "pass", "fail" or "inconclusive" (too few requests to judge).
	Verdict   string         `json:"verdict"`
	Why       string         `json:"why"`
	Baseline  VersionFigures `json:"baseline"`
	Candidate VersionFigures `json:"candidate"`
	Checks    []CheckResult  `json:"checks"`
	// Shadow are the window's shadow comparisons; nil when none ran.
	Shadow *ShadowCounts `json:"shadow"`
	// BaselineReference are the baseline figures the ratios used, when not Baseline's
	// (at weight 100 the baseline gets no traffic, so the last figures it had serve).
	BaselineReference *VersionFigures `json:"baseline_reference"`
}

// VersionFigures are one version's figures over an analysis window.
type VersionFigures struct {
	Requests int `json:"requests"`
	// Failures counts the failed requests by reason.
	Failures map[string]int `json:"failures"`
	// P50MS and P99MS are latency quantiles in milliseconds; nil without samples.
	P50MS *float64 `json:"p50_ms"`
	P99MS *float64 `json:"p99_ms"`
}

// CheckResult is one check's verdict ("pass", "fail", "skip") and the figures behind it
// (such as "candidate_ms" and "limit_ms" of a latency check).
type CheckResult struct {
	Check   string
	Verdict string
	Why     string
	Figures map[string]any
}

// UnmarshalJSON reads a check result, whose figures sit beside check, verdict and why.
func (c *CheckResult) UnmarshalJSON(data []byte) error {
	var fields map[string]any
	if err := json.Unmarshal(data, &fields); err != nil {
		return err
	}
	text := func(key string) string {
		value, _ := fields[key].(string)
		delete(fields, key)
		return value
	}
	c.Check, c.Verdict, c.Why = text("check"), text("verdict"), text("why")
	c.Figures = fields
	return nil
}

// MarshalJSON writes the check result in the server's shape.
func (c CheckResult) MarshalJSON() ([]byte, error) {
	fields := make(map[string]any, len(c.Figures)+3)
	for k, v := range c.Figures {
		fields[k] = v
	}
	fields["check"], fields["verdict"], fields["why"] = c.Check, c.Verdict, c.Why
	return json.Marshal(fields)
}

// Figure is the named figure as a number, and whether it is one.
func (c CheckResult) Figure(name string) (float64, bool) {
	value, ok := c.Figures[name].(float64)
	return value, ok
}

// ShadowCounts are shadow comparisons: copies sent, dropped (the shadow queue was full),
// failed (the candidate raised), compared, and those where every output agreed.
type ShadowCounts struct {
	Sent     int `json:"sent"`
	Dropped  int `json:"dropped"`
	Failed   int `json:"failed"`
	Compared int `json:"compared"`
	Agreed   int `json:"agreed"`
	// Agreement is Agreed / Compared; nil before any comparison.
	Agreement *float64 `json:"agreement"`
	// Outputs are the comparisons per output.
	Outputs map[string]OutputComparison `json:"outputs"`
}

// OutputComparison are one output's comparisons; the differences are of float outputs.
type OutputComparison struct {
	Compared    int     `json:"compared"`
	Agreed      int     `json:"agreed"`
	MaxAbsDiff  float64 `json:"max_abs_diff"`
	MeanAbsDiff float64 `json:"mean_abs_diff"`
}

// RolloutEvent is one record of the audit log: a transition or decision, who made it,
// and the figures that justified it (Detail: such as "why", "analysis", "gate").
type RolloutEvent struct {
	Seq int         `json:"seq"`
	At  RolloutTime `json:"at"`
	// Time is At in UTC, as the server formats it (2006-01-02T15:04:05Z).
	Time    string `json:"time"`
	Model   string `json:"model"`
	Rollout string `json:"rollout"`
	// Event is such as "started", "step", "approved", "analysis_failed", "paused",
	// "resumed", "aborted", "promoted", "cleared".
	Event  string         `json:"event"`
	Actor  string         `json:"actor"`
	Detail map[string]any `json:"detail"`
}

// RolloutCleared is the answer of ClearRollout: the rollout forgotten and the version the
// model serves by default now (nil when the model is not loaded).
type RolloutCleared struct {
	Model          string `json:"model"`
	Cleared        string `json:"cleared"`
	DefaultVersion *int   `json:"default_version"`
}
