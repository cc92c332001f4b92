// Package config reads the gateway's YAML configuration (`inferbridge gateway --config
// gateway.yaml`). Every field has a default (Default); an error names the file, the
// line, the field and what was expected, and nothing is half-applied: Load returns a
// whole Config or an error.
package config

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/inferbridge/inferbridge/gateway/internal/auth"
	"github.com/inferbridge/inferbridge/gateway/internal/balancer"
	"github.com/inferbridge/inferbridge/gateway/internal/breaker"
	"github.com/inferbridge/inferbridge/gateway/internal/health"
	"github.com/inferbridge/inferbridge/gateway/internal/retry"
)

// Upstream is one OIP server: a REST base URL and/or a gRPC address.
type Upstream struct {
	Name string
	REST string // http://host:port or https://host:port, no trailing slash ("" = none)
	GRPC string // host:port ("" = none)
	// TLS: how it is reached over TLS (its own `tls`, else `upstream_tls`); nil = plaintext.
	TLS *UpstreamTLS
	// APIKey is sent as x-api-key instead of the client's credentials ("" = the client's
	// authorization and x-api-key are forwarded as they are). APIKeyFile is where it was read.
	APIKey, APIKeyFile string
	// Models: the models and versions it serves as its source says (the fleet's routing
	// table); nil = learnt by discovery from its repository index.
	Models map[string][]string
}

// Same tells whether u and o reach the same server the same way (a rename keeps the state).
func (u Upstream) Same(o Upstream) bool {
	sameTLS := (u.TLS == nil) == (o.TLS == nil) && (u.TLS == nil || *u.TLS == *o.TLS)
	return u.REST == o.REST && u.GRPC == o.GRPC && sameTLS && u.APIKey == o.APIKey &&
		(u.Models == nil) == (o.Models == nil)
}

// FleetUpstream is the upstream of a node of the fleet's routing table: its server's
// REST address, the models it serves there, and the pool's upstream_tls and
// upstream_api_key_file.
func (c *Config) FleetUpstream(node, rest string, models map[string][]string) (Upstream, error) {
	parsed, err := url.Parse(rest)
	if err != nil || (parsed.Scheme != "http" && parsed.Scheme != "https") || parsed.Host == "" ||
		(parsed.Path != "" && parsed.Path != "/") {
		return Upstream{}, fmt.Errorf("node %s: url %q is not an http://HOST:PORT or https://HOST:PORT base URL", node, rest)
	}
	u := Upstream{Name: node, REST: parsed.Scheme + "://" + parsed.Host, Models: models, TLS: c.UpstreamTLS,
		APIKey: c.UpstreamAPIKey, APIKeyFile: c.UpstreamAPIKeyFile}
	if https := parsed.Scheme == "https"; https != (u.TLS != nil) {
		return Upstream{}, fmt.Errorf("node %s: url %s needs %s", node, rest,
			map[bool]string{true: "upstream_tls in the configuration (https://)", false: "https:// (upstream_tls is set)"}[https])
	}
	return u, nil
}

// Config is the whole gateway configuration, defaults filled in.
type Config struct {
	File string // the file it was read from

	Listen struct {
		HTTP string     // "" = no REST listener
		GRPC string     // "" = no gRPC listener
		TLS  *ServerTLS // nil = plaintext
	}
	Upstreams     []Upstream
	UpstreamsFile string // absolute; re-read when it changes ("" = none)
	// UpstreamTLS and UpstreamAPIKey apply to every upstream without its own.
	UpstreamTLS                        *UpstreamTLS
	UpstreamAPIKey, UpstreamAPIKeyFile string
	Auth                               Auth

	Discovery struct {
		Interval time.Duration
		Timeout  time.Duration
	}
	// Fleet: upstreams from the fleet control plane's routing table (nil = none).
	Fleet *Fleet
	// Tracing: OpenTelemetry spans of requests and their attempts (nil = off).
	Tracing  *Tracing
	Balancer struct {
		Policy       balancer.Policy
		HashKey      string // consistent-hash: the header / metadata name (lower-case)
		Decay        time.Duration
		ErrorPenalty time.Duration
	}
	Retries struct {
		Attempts      int // tries of one request in all, the first included
		BudgetPercent float64
		MinRetries    int
		// BudgetWait: the longest a retry that finds the budget spent waits for a slot
		// (0: refused at once), never past the request's deadline
		BudgetWait time.Duration
		Backoff    retry.Backoff
		On         retry.On
	}
	Breaker   breaker.Settings
	Health    HealthChecks
	Outlier   health.Outlier
	Admission struct {
		MaxInflight int            // requests in flight at the gateway (0 = no limit)
		PerModel    int            // default in-flight limit of every model (0 = none)
		Models      map[string]int // per-model in-flight limits
	}
	Timeouts struct {
		Default time.Duration // a request's deadline when the client sets none
	}
	MaxRequestBytes int
	// Batching: per model, merge concurrent infer requests into one upstream request.
	Batching map[string]Batching
}

// Fleet is where the fleet control plane's routing table is read, and how often.
type Fleet struct {
	// ControlPlanes: base URLs, tried in turn (replicas: a follower answers 503)
	ControlPlanes []string
	Interval      time.Duration
	Timeout       time.Duration
	// APIKeyFile: a key with scope read, sent as x-api-key (a control plane with
	// --auth-keys); TokenFile: its admin token, sent as Authorization: Bearer (one
	// without). Both are re-read at every round; APIKey and Token are the first reading.
	APIKeyFile, APIKey string
	TokenFile, Token   string
}

// Tracing is where spans are exported (OTLP) and how many new traces are sampled.
type Tracing struct {
	Endpoint string  // host:port, or a URL (http:// = plaintext, https:// = TLS)
	Protocol string  // "grpc" or "http/protobuf"
	Rate     float64 // fraction of new traces sampled, 0 to 1; a sampled caller is followed
}

// Batching configures one model's batch aggregation at the gateway.
type Batching struct {
	MaxBatchSize  int           // most rows (first dimension) of a merged request
	MaxQueueDelay time.Duration // longest wait of the first request for others
	// IdleDispatch: a request that finds no batch of its model running leaves at once;
	// those arriving meanwhile leave together when it ends (default true).
	IdleDispatch bool
}

// HealthChecks configure the active checks.
type HealthChecks struct {
	Interval       time.Duration
	Timeout        time.Duration
	UnhealthyAfter int
	HealthyAfter   int
}

// Default returns the configuration with every default (and no upstreams).
func Default() *Config {
	c := &Config{}
	c.Listen.HTTP, c.Listen.GRPC = "127.0.0.1:8000", "127.0.0.1:8001"
	c.Discovery.Interval, c.Discovery.Timeout = 5*time.Second, 2*time.Second
	c.Balancer.Policy = balancer.PeakEWMA
	c.Balancer.Decay, c.Balancer.ErrorPenalty = 10*time.Second, 250*time.Millisecond
	c.Retries.Attempts, c.Retries.BudgetPercent, c.Retries.MinRetries = 3, 20, 3
	c.Retries.BudgetWait = time.Second
	c.Retries.Backoff = retry.Backoff{Base: 25 * time.Millisecond, Max: 250 * time.Millisecond}
	c.Retries.On = retry.On(0).Add(retry.ConnectFailure).Add(retry.Reset).Add(retry.Unavailable).Add(retry.Status503)
	c.Breaker = breaker.Settings{ConsecutiveFailures: 5, FailureRate: 0.5, Window: 10 * time.Second,
		MinRequests: 20, OpenFor: 10 * time.Second, HalfOpenProbes: 1}
	c.Health = HealthChecks{Interval: 2 * time.Second, Timeout: time.Second, UnhealthyAfter: 2, HealthyAfter: 2}
	c.Outlier = health.Outlier{ConsecutiveFailures: 5, BaseEjection: 30 * time.Second,
		MaxEjection: 300 * time.Second, MaxEjectionPercent: 10}
	c.Admission.Models = map[string]int{}
	c.Timeouts.Default = 60 * time.Second
	c.MaxRequestBytes = 64 << 20
	c.Batching = map[string]Batching{}
	c.Auth = defaultAuth()
	return c
}

// Load reads and validates path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return Parse(path, data)
}

// Parse validates data as read from path (path is only named in errors and resolves
// a relative upstreams_file).
func Parse(path string, data []byte) (*Config, error) {
	c := Default()
	c.File = path
	p := &parser{file: path}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%s: not valid YAML: %v", path, err)
	}
	if len(doc.Content) == 0 {
		return nil, fmt.Errorf("%s: the file is empty; it needs at least `upstreams` or `upstreams_file`", path)
	}
	root := doc.Content[0]
	err := p.mapping(root, "", map[string]func(*yaml.Node, string) error{
		"listen": func(n *yaml.Node, f string) error {
			return p.mapping(n, f, map[string]func(*yaml.Node, string) error{
				"http": func(n *yaml.Node, f string) error { return p.address(n, f, &c.Listen.HTTP) },
				"grpc": func(n *yaml.Node, f string) error { return p.address(n, f, &c.Listen.GRPC) },
				"tls": func(n *yaml.Node, f string) (err error) {
					c.Listen.TLS, err = p.serverTLS(n, f)
					return err
				},
			})
		},
		"auth": func(n *yaml.Node, f string) error { return p.auth(n, f, &c.Auth) },
		"upstream_tls": func(n *yaml.Node, f string) (err error) {
			c.UpstreamTLS, err = p.upstreamTLS(n, f)
			return err
		},
		"upstream_api_key_file": p.apiKeyFile(&c.UpstreamAPIKeyFile, &c.UpstreamAPIKey),
		"upstreams": func(n *yaml.Node, f string) error {
			ups, err := p.upstreams(n, f)
			c.Upstreams = ups
			return err
		},
		"upstreams_file": func(n *yaml.Node, f string) error {
			if err := p.str(n, f, &c.UpstreamsFile); err != nil {
				return err
			}
			if c.UpstreamsFile != "" && !filepath.IsAbs(c.UpstreamsFile) {
				c.UpstreamsFile = filepath.Join(filepath.Dir(path), c.UpstreamsFile)
			}
			return nil
		},
		"discovery": func(n *yaml.Node, f string) error {
			return p.mapping(n, f, map[string]func(*yaml.Node, string) error{
				"interval": p.positiveDuration(&c.Discovery.Interval),
				"timeout":  p.positiveDuration(&c.Discovery.Timeout),
			})
		},
		"fleet": func(n *yaml.Node, f string) (err error) {
			c.Fleet, err = p.fleet(n, f)
			return err
		},
		"tracing": func(n *yaml.Node, f string) (err error) {
			c.Tracing, err = p.tracing(n, f)
			return err
		},
		"balancer": func(n *yaml.Node, f string) error { return p.balancer(n, f, c) },
		"retries": func(n *yaml.Node, f string) error {
			return p.mapping(n, f, map[string]func(*yaml.Node, string) error{
				"attempts":       p.intAtLeast(1, &c.Retries.Attempts),
				"budget_percent": p.floatIn(0, 100, &c.Retries.BudgetPercent),
				"min_retries":    p.intAtLeast(0, &c.Retries.MinRetries),
				"budget_wait":    p.nonNegativeDuration(&c.Retries.BudgetWait),
				"backoff_base":   p.positiveDuration(&c.Retries.Backoff.Base),
				"backoff_max":    p.positiveDuration(&c.Retries.Backoff.Max),
				"on":             func(n *yaml.Node, f string) error { return p.retryOn(n, f, &c.Retries.On) },
			})
		},
		"breaker": func(n *yaml.Node, f string) error {
			return p.mapping(n, f, map[string]func(*yaml.Node, string) error{
				"consecutive_failures": p.intAtLeast(0, &c.Breaker.ConsecutiveFailures),
				"failure_rate":         p.floatIn(0, 1, &c.Breaker.FailureRate),
				"window":               p.positiveDuration(&c.Breaker.Window),
				"min_requests":         p.intAtLeast(0, &c.Breaker.MinRequests),
				"open_for":             p.positiveDuration(&c.Breaker.OpenFor),
				"half_open_probes":     p.intAtLeast(1, &c.Breaker.HalfOpenProbes),
			})
		},
		"health": func(n *yaml.Node, f string) error {
			return p.mapping(n, f, map[string]func(*yaml.Node, string) error{
				"interval":        p.positiveDuration(&c.Health.Interval),
				"timeout":         p.positiveDuration(&c.Health.Timeout),
				"unhealthy_after": p.intAtLeast(1, &c.Health.UnhealthyAfter),
				"healthy_after":   p.intAtLeast(1, &c.Health.HealthyAfter),
			})
		},
		"outlier": func(n *yaml.Node, f string) error {
			return p.mapping(n, f, map[string]func(*yaml.Node, string) error{
				"consecutive_failures": p.intAtLeast(0, &c.Outlier.ConsecutiveFailures),
				"base_ejection":        p.positiveDuration(&c.Outlier.BaseEjection),
				"max_ejection":         p.positiveDuration(&c.Outlier.MaxEjection),
				"max_ejection_percent": p.floatIn(0, 100, &c.Outlier.MaxEjectionPercent),
			})
		},
		"admission": func(n *yaml.Node, f string) error {
			return p.mapping(n, f, map[string]func(*yaml.Node, string) error{
				"max_inflight": p.intAtLeast(0, &c.Admission.MaxInflight),
				"per_model":    p.intAtLeast(0, &c.Admission.PerModel),
				"models": func(n *yaml.Node, f string) error {
					return p.limits(n, f, c.Admission.Models)
				},
			})
		},
		"timeouts": func(n *yaml.Node, f string) error {
			return p.mapping(n, f, map[string]func(*yaml.Node, string) error{
				"default": p.positiveDuration(&c.Timeouts.Default),
			})
		},
		"max_request_bytes": p.intAtLeast(1, &c.MaxRequestBytes),
		"batching": func(n *yaml.Node, f string) error {
			return p.mapping(n, f, map[string]func(*yaml.Node, string) error{
				"models": func(n *yaml.Node, f string) error { return p.batching(n, f, c.Batching) },
			})
		},
	})
	if err != nil {
		return nil, err
	}
	switch {
	case c.Listen.HTTP == "" && c.Listen.GRPC == "":
		return nil, p.missing("listen", "at least one of listen.http and listen.grpc")
	case len(c.Upstreams) == 0 && c.UpstreamsFile == "" && c.Fleet == nil:
		return nil, p.missing("upstreams", "a list of upstreams, upstreams_file or fleet")
	case c.Retries.Backoff.Max < c.Retries.Backoff.Base:
		return nil, p.missing("retries.backoff_max", fmt.Sprintf("at least backoff_base (%v)", c.Retries.Backoff.Base))
	}
	if err := c.applyUpstreamDefaults(p, c.Upstreams, "upstreams"); err != nil {
		return nil, err
	}
	// Load the keys file and JWT keys now (and drop them): a bad one fails --check.
	if _, err := auth.New(c.Auth.AuthConfig(), nil); err != nil {
		return nil, fmt.Errorf("%s: auth: %w", path, err)
	}
	return c, nil
}

// applyUpstreamDefaults gives upstreams without their own `tls` / `api_key_file` the
// pool's, and checks that a REST address says https exactly when TLS is used.
func (c *Config) applyUpstreamDefaults(p *parser, ups []Upstream, field string) error {
	for i := range ups {
		u := &ups[i]
		if u.TLS == nil {
			u.TLS = c.UpstreamTLS
		}
		if u.APIKey == "" {
			u.APIKey, u.APIKeyFile = c.UpstreamAPIKey, c.UpstreamAPIKeyFile
		}
		switch https := strings.HasPrefix(u.REST, "https://"); {
		case u.REST == "":
		case https && u.TLS == nil:
			return p.missing(fmt.Sprintf("%s[%d].tls", field, i),
				"a tls block (its own or upstream_tls; {} for the system's CAs) for its https:// rest address")
		case !https && u.TLS != nil:
			return p.missing(fmt.Sprintf("%s[%d].rest", field, i),
				"an https:// URL: the upstream is reached over TLS (its own tls or upstream_tls)")
		}
	}
	return nil
}

// LoadUpstreams reads the upstreams file: a YAML list of upstreams, or a mapping with
// the key `upstreams` holding one. Upstreams without their own tls and api_key_file get
// the configuration's; paths in it are relative to its own directory.
func (c *Config) LoadUpstreams() ([]Upstream, error) {
	ups, err := loadUpstreamsFile(c.UpstreamsFile)
	if err != nil {
		return nil, err
	}
	if err := c.applyUpstreamDefaults(&parser{file: c.UpstreamsFile}, ups, "upstreams"); err != nil {
		return nil, err
	}
	return ups, nil
}

func loadUpstreamsFile(path string) ([]Upstream, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	p := &parser{file: path}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%s: not valid YAML: %v", path, err)
	}
	if len(doc.Content) == 0 {
		return nil, nil
	}
	root := doc.Content[0]
	if root.Kind == yaml.MappingNode {
		var ups []Upstream
		err := p.mapping(root, "", map[string]func(*yaml.Node, string) error{
			"upstreams": func(n *yaml.Node, f string) (err error) { ups, err = p.upstreams(n, f); return },
		})
		return ups, err
	}
	return p.upstreams(root, "upstreams")
}

type parser struct{ file string }

func (p *parser) errorf(n *yaml.Node, field, expected string) error {
	got := ""
	if n != nil && n.Kind == yaml.ScalarNode {
		got = fmt.Sprintf(", got %q", n.Value)
	} else if n != nil {
		got = ", got a " + kindName(n.Kind)
	}
	line := 0
	if n != nil {
		line = n.Line
	}
	return fmt.Errorf("%s:%d: %s: expected %s%s", p.file, line, field, expected, got)
}

// missing reports a whole-file requirement that no field meets.
func (p *parser) missing(field, expected string) error {
	return fmt.Errorf("%s: %s: expected %s", p.file, field, expected)
}

func kindName(k yaml.Kind) string {
	switch k {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	}
	return "value"
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// mapping decodes n's keys with fields; an unknown key is an error naming the known ones.
func (p *parser) mapping(n *yaml.Node, path string, fields map[string]func(*yaml.Node, string) error) error {
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return p.errorf(n, orRoot(path), "a mapping")
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, value := n.Content[i].Value, n.Content[i+1]
		field := join(path, key)
		set, ok := fields[key]
		if !ok {
			known := make([]string, 0, len(fields))
			for k := range fields {
				known = append(known, k)
			}
			sort.Strings(known)
			return fmt.Errorf("%s:%d: %s: unknown field (expected one of %s)", p.file, n.Content[i].Line, field, strings.Join(known, ", "))
		}
		if seen[key] {
			return fmt.Errorf("%s:%d: %s: given twice", p.file, n.Content[i].Line, field)
		}
		seen[key] = true
		if err := set(value, field); err != nil {
			return err
		}
	}
	return nil
}

func orRoot(path string) string {
	if path == "" {
		return "(top level)"
	}
	return path
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.Tag == "!!null" }

func (p *parser) str(n *yaml.Node, field string, dst *string) error {
	if isNull(n) {
		*dst = ""
		return nil
	}
	if n.Kind != yaml.ScalarNode {
		return p.errorf(n, field, "a string")
	}
	*dst = n.Value
	return nil
}

func (p *parser) address(n *yaml.Node, field string, dst *string) error {
	if err := p.str(n, field, dst); err != nil || *dst == "" {
		return err
	}
	if _, _, err := net.SplitHostPort(*dst); err != nil {
		return p.errorf(n, field, "HOST:PORT (port 0 picks a free one; empty or null: no listener)")
	}
	return nil
}

func (p *parser) positiveDuration(dst *time.Duration) func(*yaml.Node, string) error {
	return func(n *yaml.Node, field string) error {
		d, err := time.ParseDuration(n.Value)
		if n.Kind != yaml.ScalarNode || err != nil || d <= 0 {
			return p.errorf(n, field, "a positive duration such as 500ms, 2s or 1m")
		}
		*dst = d
		return nil
	}
}

func (p *parser) nonNegativeDuration(dst *time.Duration) func(*yaml.Node, string) error {
	return func(n *yaml.Node, field string) error {
		d, err := time.ParseDuration(n.Value)
		if n.Kind != yaml.ScalarNode || err != nil || d < 0 {
			return p.errorf(n, field, "a duration of 0 or more such as 0, 500ms or 2s")
		}
		*dst = d
		return nil
	}
}

func (p *parser) boolean(dst *bool) func(*yaml.Node, string) error {
	return func(n *yaml.Node, field string) error {
		var v bool
		if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" || n.Decode(&v) != nil {
			return p.errorf(n, field, "true or false")
		}
		*dst = v
		return nil
	}
}

func (p *parser) intAtLeast(lo int, dst *int) func(*yaml.Node, string) error {
	return func(n *yaml.Node, field string) error {
		var v int
		if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || n.Decode(&v) != nil || v < lo {
			return p.errorf(n, field, fmt.Sprintf("an integer of at least %d", lo))
		}
		*dst = v
		return nil
	}
}

func (p *parser) floatIn(lo, hi float64, dst *float64) func(*yaml.Node, string) error {
	return func(n *yaml.Node, field string) error {
		var v float64
		if n.Kind != yaml.ScalarNode || (n.Tag != "!!int" && n.Tag != "!!float") || n.Decode(&v) != nil || v < lo || v > hi {
			return p.errorf(n, field, fmt.Sprintf("a number from %g to %g", lo, hi))
		}
		*dst = v
		return nil
	}
}

func (p *parser) limits(n *yaml.Node, field string, dst map[string]int) error {
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return p.errorf(n, field, "a mapping of model name to in-flight limit")
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		var v int
		if err := p.intAtLeast(0, &v)(n.Content[i+1], join(field, n.Content[i].Value)); err != nil {
			return err
		}
		dst[n.Content[i].Value] = v
	}
	return nil
}

func (p *parser) batching(n *yaml.Node, field string, dst map[string]Batching) error {
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return p.errorf(n, field, "a mapping of model name to {max_batch_size, max_queue_delay, idle_dispatch}")
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		b := Batching{MaxBatchSize: 32, MaxQueueDelay: time.Millisecond, IdleDispatch: true}
		model := n.Content[i].Value
		err := p.mapping(n.Content[i+1], join(field, model), map[string]func(*yaml.Node, string) error{
			"max_batch_size":  p.intAtLeast(1, &b.MaxBatchSize),
			"max_queue_delay": p.positiveDuration(&b.MaxQueueDelay),
			"idle_dispatch":   p.boolean(&b.IdleDispatch),
		})
		if err != nil {
			return err
		}
		dst[model] = b
	}
	return nil
}

func (p *parser) retryOn(n *yaml.Node, field string, dst *retry.On) error {
	if n.Kind != yaml.SequenceNode {
		return p.errorf(n, field, "a list of connect-failure, reset, unavailable, 503, 429")
	}
	var on retry.On
	for i, item := range n.Content {
		r, err := retry.ParseReason(item.Value)
		if item.Kind != yaml.ScalarNode || err != nil {
			return p.errorf(item, fmt.Sprintf("%s[%d]", field, i), "one of connect-failure, reset, unavailable, 503, 429")
		}
		on = on.Add(r)
	}
	*dst = on
	return nil
}

func (p *parser) balancer(n *yaml.Node, field string, c *Config) error {
	setPolicy := func(n *yaml.Node, f string) error {
		policy, key, err := balancer.ParsePolicy(n.Value)
		if n.Kind != yaml.ScalarNode || err != nil {
			return p.errorf(n, f, "p2c-ewma, least-outstanding, round-robin or consistent-hash:<header or metadata name>")
		}
		c.Balancer.Policy, c.Balancer.HashKey = policy, key
		return nil
	}
	if n.Kind == yaml.ScalarNode {
		return setPolicy(n, field)
	}
	return p.mapping(n, field, map[string]func(*yaml.Node, string) error{
		"policy":        setPolicy,
		"decay":         p.positiveDuration(&c.Balancer.Decay),
		"error_penalty": p.positiveDuration(&c.Balancer.ErrorPenalty),
	})
}

func (p *parser) tracing(n *yaml.Node, field string) (*Tracing, error) {
	if isNull(n) {
		return nil, nil
	}
	t := &Tracing{Protocol: "grpc", Rate: 1}
	err := p.mapping(n, field, map[string]func(*yaml.Node, string) error{
		"endpoint": func(n *yaml.Node, f string) error {
			if err := p.str(n, f, &t.Endpoint); err != nil {
				return err
			}
			hostPort := t.Endpoint
			if strings.Contains(t.Endpoint, "://") {
				parsed, err := url.Parse(t.Endpoint)
				if err != nil || (parsed.Scheme != "http" && parsed.Scheme != "https") || parsed.Host == "" {
					return p.errorf(n, f, "an OTLP collector's HOST:PORT, or an http:// or https:// URL")
				}
				hostPort = parsed.Host
			}
			if _, port, err := net.SplitHostPort(hostPort); err != nil || port == "" {
				return p.errorf(n, f, "an OTLP collector's HOST:PORT, or an http:// or https:// URL")
			}
			return nil
		},
		"protocol": func(n *yaml.Node, f string) error {
			if err := p.str(n, f, &t.Protocol); err != nil {
				return err
			}
			if t.Protocol != "grpc" && t.Protocol != "http/protobuf" {
				return p.errorf(n, f, "grpc or http/protobuf")
			}
			return nil
		},
		"rate": p.floatIn(0, 1, &t.Rate),
	})
	if err != nil {
		return nil, err
	}
	if t.Endpoint == "" {
		return nil, p.missing(field+".endpoint", "the OTLP collector's HOST:PORT or URL (leave tracing out to turn it off)")
	}
	return t, nil
}

func (p *parser) fleet(n *yaml.Node, field string) (*Fleet, error) {
	if isNull(n) {
		return nil, nil
	}
	f := &Fleet{Interval: 5 * time.Second, Timeout: 2 * time.Second}
	err := p.mapping(n, field, map[string]func(*yaml.Node, string) error{
		"control_plane": func(n *yaml.Node, field string) error {
			items := []*yaml.Node{n}
			if n.Kind == yaml.SequenceNode {
				items = n.Content
			}
			for i, item := range items {
				var s string
				itemField := field
				if n.Kind == yaml.SequenceNode {
					itemField = fmt.Sprintf("%s[%d]", field, i)
				}
				if err := p.str(item, itemField, &s); err != nil {
					return err
				}
				parsed, err := url.Parse(s)
				if err != nil || (parsed.Scheme != "http" && parsed.Scheme != "https") || parsed.Host == "" {
					return p.errorf(item, itemField, "the control plane's http://HOST:PORT or https://HOST:PORT URL")
				}
				f.ControlPlanes = append(f.ControlPlanes, strings.TrimSuffix(s, "/"))
			}
			return nil
		},
		"interval":     p.positiveDuration(&f.Interval),
		"timeout":      p.positiveDuration(&f.Timeout),
		"api_key_file": p.apiKeyFile(&f.APIKeyFile, &f.APIKey),
		"token_file":   p.apiKeyFile(&f.TokenFile, &f.Token),
	})
	if err != nil {
		return nil, err
	}
	if len(f.ControlPlanes) == 0 {
		return nil, p.missing(field+".control_plane", "the control plane's URL (or a list of its replicas' URLs)")
	}
	return f, nil
}

func (p *parser) upstreams(n *yaml.Node, field string) ([]Upstream, error) {
	if isNull(n) {
		return nil, nil
	}
	if n.Kind != yaml.SequenceNode {
		return nil, p.errorf(n, field, "a list of upstreams ({name, rest, grpc, tls, api_key_file})")
	}
	var ups []Upstream
	names := map[string]bool{}
	for i, item := range n.Content {
		f := fmt.Sprintf("%s[%d]", field, i)
		var u Upstream
		err := p.mapping(item, f, map[string]func(*yaml.Node, string) error{
			"name": func(n *yaml.Node, f string) error { return p.str(n, f, &u.Name) },
			"rest": func(n *yaml.Node, f string) error {
				if err := p.str(n, f, &u.REST); err != nil || u.REST == "" {
					return err
				}
				parsed, err := url.Parse(u.REST)
				if err != nil || (parsed.Scheme != "http" && parsed.Scheme != "https") || parsed.Host == "" ||
					(parsed.Path != "" && parsed.Path != "/") {
					return p.errorf(n, f, "an http://HOST:PORT or https://HOST:PORT base URL")
				}
				u.REST = parsed.Scheme + "://" + parsed.Host
				return nil
			},
			"grpc": func(n *yaml.Node, f string) error { return p.address(n, f, &u.GRPC) },
			"tls": func(n *yaml.Node, f string) (err error) {
				u.TLS, err = p.upstreamTLS(n, f) // `tls: {}`: TLS with the system's CAs
				return err
			},
			"api_key_file": p.apiKeyFile(&u.APIKeyFile, &u.APIKey),
		})
		if err != nil {
			return nil, err
		}
		if item.Kind != yaml.MappingNode {
			return nil, p.errorf(item, f, "a mapping {name, rest, grpc}")
		}
		if u.REST == "" && u.GRPC == "" {
			return nil, p.errorf(item, f, "rest and/or grpc")
		}
		if u.Name == "" {
			u.Name = u.REST
			if u.Name == "" {
				u.Name = u.GRPC
			}
		}
		if names[u.Name] {
			return nil, p.errorf(item, f+".name", "a name no other upstream has")
		}
		names[u.Name] = true
		ups = append(ups, u)
	}
	return ups, nil
}
