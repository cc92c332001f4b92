package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/inferbridge/inferbridge/gateway/internal/balancer"
	"github.com/inferbridge/inferbridge/gateway/internal/retry"
)

func TestTheIssuesExample(t *testing.T) {
	c, err := Parse("gateway.yaml", []byte(`
listen: {http: 0.0.0.0:8000, grpc: 0.0.0.0:8001}
upstreams:
  - name: node-a
    rest: http://10.0.0.5:8000
  - {name: node-b, grpc: 10.0.0.6:8001}
  - {name: triton-1, rest: http://10.0.0.7:8000, grpc: 10.0.0.7:8001}
discovery: {interval: 5s}
balancer: p2c-ewma
retries: {attempts: 2, budget_percent: 20, on: [connect-failure, reset, unavailable, 503]}
breaker: {consecutive_failures: 5, failure_rate: 0.5, window: 10s, min_requests: 20, open_for: 10s}
health: {interval: 2s, timeout: 1s, unhealthy_after: 2, healthy_after: 2}
outlier: {max_ejection_percent: 50}
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Upstreams) != 3 || c.Upstreams[1].GRPC != "10.0.0.6:8001" || c.Upstreams[0].REST != "http://10.0.0.5:8000" {
		t.Fatalf("upstreams %+v", c.Upstreams)
	}
	if c.Retries.Attempts != 2 || !c.Retries.On.Has(retry.Reset) || c.Retries.On.Has(retry.Status429) {
		t.Fatalf("retries %+v", c.Retries)
	}
	if c.Outlier.MaxEjectionPercent != 50 || c.Outlier.ConsecutiveFailures != 5 || c.Outlier.BaseEjection != 30*time.Second {
		t.Fatalf("outlier %+v", c.Outlier)
	}
	if c.Listen.HTTP != "0.0.0.0:8000" || c.Balancer.Policy != balancer.PeakEWMA {
		t.Fatalf("listen %+v balancer %+v", c.Listen, c.Balancer)
	}
}

func TestDefaults(t *testing.T) {
	c, err := Parse("g.yaml", []byte("upstreams: [{rest: 'http://127.0.0.1:9'}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	d := Default()
	if c.Upstreams[0].Name != "http://127.0.0.1:9" {
		t.Fatalf("an unnamed upstream is named by its address: %q", c.Upstreams[0].Name)
	}
	if c.Breaker != d.Breaker || c.Health != d.Health || c.Retries.Attempts != 3 || c.Timeouts.Default != time.Minute {
		t.Fatalf("defaults not applied: %+v", c)
	}
}

func TestRetriesBudgetWait(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		want time.Duration
	}{
		{"", time.Second},
		{"retries: {budget_wait: 0}\n", 0},
		{"retries: {budget_wait: 250ms}\n", 250 * time.Millisecond},
	} {
		c, err := Parse("g.yaml", []byte("upstreams: [{rest: 'http://h:1'}]\n"+tc.yaml))
		if err != nil {
			t.Fatal(err)
		}
		if c.Retries.BudgetWait != tc.want {
			t.Errorf("%q: budget_wait %v, want %v", tc.yaml, c.Retries.BudgetWait, tc.want)
		}
	}
}

func TestTracing(t *testing.T) {
	c, err := Parse("g.yaml", []byte("upstreams: [{rest: 'http://h:1'}]\n"))
	if err != nil || c.Tracing != nil {
		t.Fatalf("tracing on by default: %+v, %v", c.Tracing, err)
	}
	c, err = Parse("g.yaml", []byte("upstreams: [{rest: 'http://h:1'}]\ntracing: {endpoint: 'http://otel:4318', protocol: http/protobuf}\n"))
	if err != nil || *c.Tracing != (Tracing{Endpoint: "http://otel:4318", Protocol: "http/protobuf", Rate: 1}) {
		t.Fatalf("tracing %+v, %v", c.Tracing, err)
	}
}

func TestFleet(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "fleet.key")
	if err := os.WriteFile(key, []byte("ib_reader\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Parse(filepath.Join(dir, "g.yaml"), []byte(
		"fleet: {control_plane: ['http://cp-a:9000/', 'https://cp-b:9000'], interval: 1s, api_key_file: fleet.key}\n"))
	if err != nil {
		t.Fatal(err)
	}
	f := c.Fleet
	if f == nil || len(f.ControlPlanes) != 2 || f.ControlPlanes[0] != "http://cp-a:9000" || f.Interval != time.Second ||
		f.Timeout != 2*time.Second || f.APIKey != "ib_reader" || f.APIKeyFile != key || f.Token != "" {
		t.Fatalf("fleet %+v", f)
	}
	u, err := c.FleetUpstream("node-a", "http://10.0.0.5:8000/", map[string][]string{"iris": {"2"}})
	if err != nil || u.REST != "http://10.0.0.5:8000" || u.Name != "node-a" || u.Models["iris"][0] != "2" || u.TLS != nil {
		t.Fatalf("upstream %+v, %v", u, err)
	}
	if _, err := c.FleetUpstream("node-b", "https://10.0.0.6:8443", nil); err == nil ||
		!strings.Contains(err.Error(), "node node-b: url https://10.0.0.6:8443 needs upstream_tls") {
		t.Fatalf("an https node without upstream_tls: %v", err)
	}
	if _, err := c.FleetUpstream("node-c", "10.0.0.7:8000", nil); err == nil || !strings.Contains(err.Error(), "node node-c: url") {
		t.Fatalf("a url without a scheme: %v", err)
	}
	static := Upstream{Name: "n", REST: "http://h:1"}
	fleet := static
	fleet.Models = map[string][]string{}
	if static.Same(fleet) {
		t.Fatalf("an upstream from the fleet and one that discovers its models are the same")
	}
}

func TestBalancerForms(t *testing.T) {
	c, err := Parse("g.yaml", []byte("upstreams: [{grpc: 'h:1'}]\nbalancer: {policy: 'consistent-hash:X-Session', decay: 5s}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Balancer.Policy != balancer.ConsistentHashing || c.Balancer.HashKey != "x-session" || c.Balancer.Decay != 5*time.Second {
		t.Fatalf("balancer %+v", c.Balancer)
	}
}

func TestErrorsNameFileLineFieldAndExpectation(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"upstreams: [{rest: 'http://h:1'}]\nbreaker: {failure_rate: lots}\n",
			`g.yaml:2: breaker.failure_rate: expected a number from 0 to 1, got "lots"`},
		{"upstreams: [{rest: 'http://h:1'}]\nretries: {attempts: 0}\n",
			`g.yaml:2: retries.attempts: expected an integer of at least 1, got "0"`},
		{"upstreams: [{rest: 'http://h:1'}]\nhealth: {interval: 2}\n",
			`g.yaml:2: health.interval: expected a positive duration`},
		{"upstreams: [{rest: 'http://h:1'}]\nbalancer: random\n",
			`g.yaml:2: balancer: expected p2c-ewma, least-outstanding, round-robin or consistent-hash`},
		{"upstreams: [{rest: 'ftp://h:1'}]\n", `g.yaml:1: upstreams[0].rest: expected an http://HOST:PORT or https://HOST:PORT base URL`},
		{"upstreams: [{name: a}]\n", `g.yaml:1: upstreams[0]: expected rest and/or grpc`},
		{"upstreams: [{name: a, grpc: 'h:1'}, {name: a, grpc: 'h:2'}]\n", `upstreams[1].name: expected a name no other upstream has`},
		{"upstreams: [{rest: 'http://h:1'}]\nretry: {}\n", `g.yaml:2: retry: unknown field (expected one of admission, auth, balancer`},
		{"upstreams: [{rest: 'http://h:1'}]\nretries: {on: [500]}\n", `retries.on[0]: expected one of connect-failure`},
		{"listen: {http: ':8000'}\n", `upstreams: expected a list of upstreams, upstreams_file or fleet`},
		{"upstreams: [{rest: 'http://h:1'}]\nlisten: {http: null, grpc: null}\n", `listen: expected at least one of listen.http and listen.grpc`},
		{"upstreams: {a: 1}\n", `g.yaml:1: upstreams: expected a list of upstreams`},
		{"upstreams: [{rest: 'http://h:1'}]\nretries: {budget_wait: -1s}\n",
			`g.yaml:2: retries.budget_wait: expected a duration of 0 or more`},
		{"fleet: {interval: 1s}\n", `g.yaml: fleet.control_plane: expected the control plane's URL`},
		{"fleet: {control_plane: 'cp:9000'}\n", `g.yaml:1: fleet.control_plane: expected the control plane's http://HOST:PORT`},
		{"fleet: {control_plane: ['http://cp:1', 'x']}\n", `g.yaml:1: fleet.control_plane[1]: expected the control plane's`},
		{"fleet: {control_plane: 'http://cp:1', api_key_file: /nonexistent/key}\n", `g.yaml:1: fleet.api_key_file:`},
		{"fleet: {control_plane: 'http://cp:1', every: 1s}\n", `g.yaml:1: fleet.every: unknown field (expected one of api_key_file, control_plane, interval, timeout, token_file)`},
		{"upstreams: [{rest: 'http://h:1'}]\ntracing: {rate: 1}\n", `g.yaml: tracing.endpoint: expected the OTLP collector's HOST:PORT or URL`},
		{"upstreams: [{rest: 'http://h:1'}]\ntracing: {endpoint: collector}\n", `g.yaml:2: tracing.endpoint: expected an OTLP collector's HOST:PORT`},
		{"upstreams: [{rest: 'http://h:1'}]\ntracing: {endpoint: 'h:4317', protocol: http}\n", `g.yaml:2: tracing.protocol: expected grpc or http/protobuf`},
		{"upstreams: [{rest: 'http://h:1'}]\ntracing: {endpoint: 'h:4317', rate: 2}\n", `g.yaml:2: tracing.rate: expected a number from 0 to 1`},
		{"", `g.yaml: the file is empty`},
		{"upstreams: [\n", `g.yaml: not valid YAML`},
	} {
		_, err := Parse("g.yaml", []byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("config %q: error %v, want it to contain %q", tc.yaml, err, tc.want)
		}
	}
}

func TestUpstreamsFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ups.yaml"), []byte("- {name: a, rest: 'http://h:1'}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Parse(filepath.Join(dir, "g.yaml"), []byte("upstreams_file: ups.yaml\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.UpstreamsFile != filepath.Join(dir, "ups.yaml") {
		t.Fatalf("upstreams_file %q is not resolved against the config's directory", c.UpstreamsFile)
	}
	ups, err := c.LoadUpstreams()
	if err != nil || len(ups) != 1 || ups[0].Name != "a" {
		t.Fatalf("LoadUpstreams: %+v %v", ups, err)
	}
	os.WriteFile(c.UpstreamsFile, []byte("upstreams: [{name: b, grpc: 'h:2'}]\n"), 0o644)
	if ups, err = c.LoadUpstreams(); err != nil || ups[0].Name != "b" {
		t.Fatalf("mapping form: %+v %v", ups, err)
	}
	os.WriteFile(c.UpstreamsFile, []byte("- {name: b}\n"), 0o644)
	if _, err = c.LoadUpstreams(); err == nil || !strings.Contains(err.Error(), "ups.yaml:1: upstreams[0]") {
		t.Fatalf("a bad upstreams file: %v", err)
	}
}

func TestBatching(t *testing.T) {
	c, err := Parse("g.yaml", []byte("upstreams: [{grpc: 'h:1'}]\nbatching:\n  models:\n    iris: {max_batch_size: 16, idle_dispatch: false}\n    echo: {}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Batching["iris"] != (Batching{MaxBatchSize: 16, MaxQueueDelay: time.Millisecond}) ||
		c.Batching["echo"] != (Batching{MaxBatchSize: 32, MaxQueueDelay: time.Millisecond, IdleDispatch: true}) {
		t.Fatalf("batching %+v", c.Batching)
	}
	_, err = Parse("g.yaml", []byte("upstreams: [{grpc: 'h:1'}]\nbatching: {models: {iris: {idle_dispatch: sometimes}}}\n"))
	if err == nil || !strings.Contains(err.Error(), "batching.models.iris.idle_dispatch: expected true or false") {
		t.Fatalf("error %v", err)
	}
	_, err = Parse("g.yaml", []byte("upstreams: [{grpc: 'h:1'}]\nbatching: {models: {iris: {max_batch_size: 0}}}\n"))
	if err == nil || !strings.Contains(err.Error(), "batching.models.iris.max_batch_size: expected an integer of at least 1") {
		t.Fatalf("error %v", err)
	}
}
