// Package pool is the gateway's upstream-pool backend: it forwards OIP REST and gRPC
// requests to a set of upstream servers, routing by model (learnt from each upstream's
// repository index), balancing, retrying within a budget and the client's deadline,
// and keeping unhealthy upstreams out of rotation (active health checks, passive
// outlier ejection, per-upstream circuit breakers).
//
// The routing state is an immutable snapshot swapped atomically whenever the upstream
// set, their health or the models they serve change; a request reads it with one
// atomic load and picks with the snapshot's pickers, without a lock.
package pool

import (
	"crypto/tls"
	"fmt"
	"log"
	"net/http"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/inferbridge/inferbridge/gateway/internal/auth"
	"github.com/inferbridge/inferbridge/gateway/internal/balancer"
	"github.com/inferbridge/inferbridge/gateway/internal/batching"
	"github.com/inferbridge/inferbridge/gateway/internal/clock"
	"github.com/inferbridge/inferbridge/gateway/internal/config"
	"github.com/inferbridge/inferbridge/gateway/internal/frontend"
	"github.com/inferbridge/inferbridge/gateway/internal/health"
	"github.com/inferbridge/inferbridge/gateway/internal/retry"
)

// Pool is the set of upstreams and the routing built over it.
type Pool struct {
	cfg     *config.Config
	clock   clock.Clock
	metrics *metrics
	ejector *health.Ejector
	budget  retry.Budget
	// budgetWait: how a retry waits for a slot of budget
	budgetWait retry.Wait
	logger     *log.Logger

	mu  sync.Mutex // guards ups and rebuilds
	ups []*upstream

	snap atomic.Pointer[snapshot]

	limits   *admission
	batchers map[string]*batching.Batcher // by model; read-only after New

	auth      *auth.Authority // nil: nothing to check (no authentication, no rate limits)
	tracing   *tracing        // nil: no spans (no tracing block)
	serverTLS *tls.Config     // the listeners' (nil: plaintext)

	fe             *frontend.Frontend // the REST and gRPC servers; p is their Backend
	metricsHandler http.Handler       // GET /metrics

	stop     chan struct{}
	stopOnce sync.Once
	fileStat os.FileInfo // last seen upstreams file (reload loop only)

	// The upstreams come from three sources: the configuration's, the upstreams file's
	// and the fleet routing table's; each change re-applies the three together.
	sourcesMu    sync.Mutex
	fileUps      []config.Upstream
	fleetUps     []config.Upstream // the last routing table applied, by node name
	fleetApplied bool              // a routing table was applied once (an empty one too)
	fleetErr     string            // the last failure to read the table, logged once
	// fleetRejected: the last table whose upstreams could not be set (a name taken)
	fleetRejected *[]config.Upstream
	fleetClient   *http.Client
}

// snapshot is the immutable routing view.
type snapshot struct {
	ups    []*upstream       // every upstream, in configuration order
	models map[string]*route // by model name
	all    *route            // every routable upstream (requests that name no model)
}

// route holds the upstreams serving one model (or one model version) by protocol.
type route struct {
	rest, grpc group
	versions   map[string]*route // by version, for a model's route
	unversion  *route            // upstreams that serve the model with versions unknown
	served     int               // upstreams serving it, routable or not
}

// group is the routable upstreams of one protocol and their picker.
type group struct {
	ups    []*upstream
	picker balancer.Picker
}

// New builds the pool of cfg (nothing runs until Start).
func New(cfg *config.Config, c clock.Clock, logger *log.Logger) (*Pool, error) {
	p := &Pool{cfg: cfg, clock: c, metrics: newMetrics(), logger: logger, stop: make(chan struct{})}
	p.ejector = health.NewEjector(cfg.Outlier, c)
	p.budget = retry.Budget{Percent: cfg.Retries.BudgetPercent, Min: int64(cfg.Retries.MinRetries)}
	p.budgetWait = retry.Wait{MaxWait: cfg.Retries.BudgetWait, Backoff: cfg.Retries.Backoff, Clock: c}
	p.limits = newAdmission(cfg)
	var err error
	if p.auth, err = newAuthority(cfg, p.logf); err != nil {
		return nil, err
	}
	if p.serverTLS, err = newServerTLS(cfg, p.logf); err != nil {
		return nil, err
	}
	if cfg.Tracing != nil {
		if p.tracing, err = newTracing(cfg.Tracing, p.logf); err != nil {
			return nil, err
		}
	}
	p.batchers = map[string]*batching.Batcher{}
	for model, b := range cfg.Batching {
		p.batchers[model] = p.newBatcher(model, b.MaxBatchSize, b.MaxQueueDelay, b.IdleDispatch)
	}
	if cfg.UpstreamsFile != "" {
		if p.fileUps, err = cfg.LoadUpstreams(); err != nil {
			return nil, err
		}
		p.fileStat, _ = os.Stat(cfg.UpstreamsFile)
	}
	if cfg.Fleet != nil {
		p.fleetClient = &http.Client{Timeout: cfg.Fleet.Timeout}
	}
	p.metricsHandler = promhttp.HandlerFor(p.metrics.reg, promhttp.HandlerOpts{})
	p.fe = frontend.New(frontend.Config{
		MaxRecvBytes:         cfg.MaxRequestBytes,
		MaxConcurrentStreams: 1 << 20,
		TLS:                  p.serverTLS,
		Auth:                 p.auth,
		ClassifyHTTP:         classifyHTTP,
		Lane:                 true,
	}, p, p)
	p.sourcesMu.Lock()
	defer p.sourcesMu.Unlock()
	if err := p.applySourcesLocked(); err != nil {
		return nil, err
	}
	return p, nil
}

// applySourcesLocked sets the upstreams of every source (sourcesMu held).
func (p *Pool) applySourcesLocked() error {
	ups := make([]config.Upstream, 0, len(p.cfg.Upstreams)+len(p.fileUps)+len(p.fleetUps))
	ups = append(append(append(ups, p.cfg.Upstreams...), p.fileUps...), p.fleetUps...)
	return p.setUpstreams(ups)
}

func (p *Pool) logf(format string, args ...any) {
	if p.logger != nil {
		p.logger.Printf(format, args...)
	}
}

// setUpstreams replaces the upstream set; an upstream whose name and addresses are
// unchanged keeps its state (load, breaker, models).
func (p *Pool) setUpstreams(cfgs []config.Upstream) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := map[string]*upstream{}
	for _, u := range p.ups {
		old[u.cfg.Name] = u
	}
	seen := map[string]bool{}
	var next []*upstream
	for _, c := range cfgs {
		if seen[c.Name] {
			return fmt.Errorf("upstream %q is named twice", c.Name)
		}
		seen[c.Name] = true
		if u := old[c.Name]; u != nil && u.sameAddresses(c) {
			if c.Models != nil && !sameModels(*u.models.Load(), c.Models) {
				models := c.Models
				u.models.Store(&models)
			}
			next = append(next, u)
			delete(old, c.Name)
			continue
		}
		u, err := newUpstream(p, c)
		if err != nil {
			return fmt.Errorf("upstream %s: %w", c.Name, err)
		}
		next = append(next, u)
		if p.snap.Load() != nil {
			p.logf("upstream %s added (rest %q, grpc %q)", c.Name, c.REST, c.GRPC)
		}
	}
	for _, u := range old {
		p.ejector.Forget(&u.passive)
		u.close()
		p.metrics.forget(u.cfg.Name)
		p.logf("upstream %s removed", u.cfg.Name)
	}
	p.ups = next
	p.rebuildLocked()
	return nil
}

// rebuild swaps in a fresh snapshot (after a change of health, ejection or models).
func (p *Pool) rebuild() {
	p.mu.Lock()
	p.rebuildLocked()
	p.mu.Unlock()
}

func (p *Pool) rebuildLocked() {
	s := &snapshot{ups: p.ups, models: map[string]*route{}}
	type entry struct {
		byVersion map[string][]*upstream
		any       []*upstream // every upstream serving the model
	}
	served := map[string]*entry{}
	for _, u := range p.ups {
		for name, versions := range *u.models.Load() {
			e := served[name]
			if e == nil {
				e = &entry{byVersion: map[string][]*upstream{}}
				served[name] = e
			}
			e.any = append(e.any, u)
			for _, v := range versions {
				e.byVersion[v] = append(e.byVersion[v], u)
			}
		}
	}
	for name, e := range served {
		r := p.newRoute(e.any)
		r.versions = map[string]*route{}
		for v, ups := range e.byVersion {
			if v == "" {
				r.unversion = p.newRoute(ups)
				continue
			}
			r.versions[v] = p.newRoute(append(append([]*upstream(nil), ups...), e.byVersion[""]...))
		}
		s.models[name] = r
	}
	s.all = p.newRoute(p.ups)
	p.snap.Store(s)
	routable := 0
	for _, u := range p.ups {
		if u.routable() {
			routable++
		}
	}
	p.metrics.routable.Set(float64(routable))
}

func (p *Pool) newRoute(ups []*upstream) *route {
	r := &route{served: len(ups)}
	var rest, grpc []*upstream
	for _, u := range ups {
		if !u.routable() {
			continue
		}
		if u.http != nil {
			rest = append(rest, u)
		}
		if u.conn != nil {
			grpc = append(grpc, u)
		}
	}
	r.rest = p.newGroup(rest)
	r.grpc = p.newGroup(grpc)
	return r
}

func (p *Pool) newGroup(ups []*upstream) group {
	loads := make([]*balancer.Load, len(ups))
	names := make([]string, len(ups))
	for i, u := range ups {
		loads[i], names[i] = u.load, u.cfg.Name
	}
	return group{ups: ups, picker: balancer.New(p.cfg.Balancer.Policy, loads, names)}
}

// lookup returns the route of model (and version, "" = any), or nil when no upstream
// serves it. model "" is every upstream.
func (s *snapshot) lookup(model, version string) *route {
	if model == "" {
		return s.all
	}
	r := s.models[model]
	if r == nil || version == "" {
		return r
	}
	if rv := r.versions[version]; rv != nil {
		return rv
	}
	return r.unversion
}

// modelNames lists the models served, sorted.
func (s *snapshot) modelNames() []string {
	names := make([]string, 0, len(s.models))
	for n := range s.models {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Start runs the discovery, health, ejection, upstreams-file and fleet loops. It reads
// the fleet's routing table and runs one discovery round first, so that the first
// requests route by model.
func (p *Pool) Start() {
	if p.cfg.Fleet != nil {
		p.refreshFleet()
		go p.every(p.cfg.Fleet.Interval, p.refreshFleet)
	}
	p.discoverAll()
	go p.every(p.cfg.Discovery.Interval, p.discoverAll)
	go p.every(p.cfg.Health.Interval, p.checkAll)
	go p.every(time.Second, func() {
		p.mu.Lock()
		hosts := make([]*health.Host, len(p.ups))
		for i, u := range p.ups {
			hosts[i] = &u.passive
		}
		p.mu.Unlock()
		if p.ejector.Expire(hosts) {
			p.rebuild()
			p.updateEjectedGauges()
		}
	})
	if p.cfg.UpstreamsFile != "" {
		go p.every(time.Second, p.reloadUpstreamsFile)
	}
}

// Stop ends the loops and closes the upstream connections.
func (p *Pool) Stop() {
	p.stopOnce.Do(func() {
		close(p.stop)
		p.mu.Lock()
		for _, u := range p.ups {
			u.close()
		}
		p.mu.Unlock()
		if p.tracing != nil {
			p.tracing.shutdown()
		}
	})
}

func (p *Pool) every(d time.Duration, f func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			f()
		}
	}
}

func (p *Pool) upstreams() []*upstream { return p.snap.Load().ups }

func (p *Pool) updateEjectedGauges() {
	for _, u := range p.upstreams() {
		v := 0.0
		if u.passive.Ejected() {
			v = 1
		}
		u.m.ejected.Set(v)
	}
}

// reloadUpstreamsFile re-reads the upstreams file when its size or time changed; a
// file that does not parse leaves the current set in place (and is logged).
func (p *Pool) reloadUpstreamsFile() {
	st, err := os.Stat(p.cfg.UpstreamsFile)
	if err != nil {
		return
	}
	if p.fileStat != nil && st.ModTime().Equal(p.fileStat.ModTime()) && st.Size() == p.fileStat.Size() {
		return
	}
	p.fileStat = st
	ups, err := p.cfg.LoadUpstreams()
	if err != nil {
		p.logf("upstreams file not applied: %v", err)
		return
	}
	p.sourcesMu.Lock()
	prev := p.fileUps
	p.fileUps = ups
	err = p.applySourcesLocked()
	if err != nil {
		p.fileUps = prev
	}
	p.sourcesMu.Unlock()
	if err != nil {
		p.logf("upstreams file not applied: %v", err)
		return
	}
	p.logf("upstreams file %s applied: %d upstreams", p.cfg.UpstreamsFile, len(p.upstreams()))
	go p.discoverAll()
}
