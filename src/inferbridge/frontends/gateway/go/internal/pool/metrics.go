package pool

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// The gateway's /metrics in pool mode. Names are listed in docs/gateway.md.

var latencyBuckets = []float64{
	0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
}

type protocol int

const (
	protoHTTP protocol = iota
	protoGRPC
)

var protocolNames = [...]string{protoHTTP: "http", protoGRPC: "grpc"}

// maxCode bounds the status codes whose counters are cached (HTTP up to 599; gRPC's
// codes are below 17).
const maxCode = 600

type metrics struct {
	byCode    [2][maxCode]atomic.Pointer[prometheus.Counter]
	durations [2]prometheus.Observer

	reg            *prometheus.Registry
	requests       *prometheus.CounterVec // protocol, code
	duration       *prometheus.HistogramVec
	rejected       *prometheus.CounterVec // protocol, model, reason
	retries        *prometheus.CounterVec // reason
	retriesRefused *prometheus.CounterVec // why: budget, deadline
	// retryBudgetWaits: retries that found the budget spent and waited for a slot
	retryBudgetWaits prometheus.Counter
	fleetReads       *prometheus.CounterVec // result: ok, error
	routable         prometheus.Gauge
	batchSize        *prometheus.HistogramVec // model

	upRequests   *prometheus.CounterVec // upstream, outcome
	upFailures   *prometheus.CounterVec // upstream, reason
	upDuration   *prometheus.HistogramVec
	upInflight   *prometheus.GaugeVec
	upBreaker    *prometheus.GaugeVec
	upHealthy    *prometheus.GaugeVec
	upEjected    *prometheus.GaugeVec
	upEjections  *prometheus.CounterVec
	upDiscovery  *prometheus.CounterVec
	upstreamsMu  sync.Mutex
	upstreamsMap map[string]*upstreamMetrics
}

// upstreamMetrics are one upstream's children, resolved once (outcome children lazily).
type upstreamMetrics struct {
	name            string
	parent          *metrics
	duration        prometheus.Observer
	inflight        prometheus.Gauge
	breakerState    prometheus.Gauge
	healthy         prometheus.Gauge
	ejected         prometheus.Gauge
	ejections       prometheus.Counter
	discoveryErrors prometheus.Counter

	outcomes labelCounters // by outcome
	failures labelCounters // by reason
}

// labelCounters are the children of one upstream's counter vector by its second label,
// resolved once each: a request reads the map without a lock (WithLabelValues hashes
// the labels and locks the vector on every call), and a label seen for the first time
// copies it.
type labelCounters struct {
	vec *prometheus.CounterVec // upstream, the label
	mu  sync.Mutex             // held to add a label
	m   atomic.Pointer[map[string]prometheus.Counter]
}

func (l *labelCounters) init(vec *prometheus.CounterVec) {
	l.vec = vec
	l.m.Store(&map[string]prometheus.Counter{})
}

func (l *labelCounters) inc(upstream, label string) {
	if c := (*l.m.Load())[label]; c != nil {
		c.Inc()
		return
	}
	l.mu.Lock()
	old := *l.m.Load()
	c := old[label]
	if c == nil {
		c = l.vec.WithLabelValues(upstream, label)
		m := make(map[string]prometheus.Counter, len(old)+1)
		for k, v := range old {
			m[k] = v
		}
		m[label] = c
		l.m.Store(&m)
	}
	l.mu.Unlock()
	c.Inc()
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "inferbridge_gateway_requests_total",
			Help: "Requests and calls the gateway answered, by protocol and status code."}, []string{"protocol", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "inferbridge_gateway_request_duration_seconds",
			Help: "Time from a request's arrival at the gateway to its answer, retries included.", Buckets: latencyBuckets},
			[]string{"protocol"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "inferbridge_gateway_rejected_total",
			Help: "Requests the gateway refused itself (admission limits, no route)."}, []string{"protocol", "model", "reason"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "inferbridge_gateway_retries_total",
			Help: "Retries made, by the failure retried."}, []string{"reason"}),
		retriesRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "inferbridge_gateway_retries_refused_total",
			Help: "Retriable failures not retried: the retry budget was spent, or the deadline too close."}, []string{"why"}),
		retryBudgetWaits: prometheus.NewCounter(prometheus.CounterOpts{Name: "inferbridge_gateway_retry_budget_waits_total",
			Help: "Retries that found the retry budget spent and waited for a slot (retries_refused_total{why=\"budget\"} counts those that got none)."}),
		fleetReads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "inferbridge_gateway_fleet_table_reads_total",
			Help: "Reads of the fleet control plane's routing table, by result (error: the last table stays)."}, []string{"result"}),
		batchSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "inferbridge_gateway_batch_size",
			Help:    "Requests merged into each upstream request by the gateway's batching.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128}}, []string{"model"}),
		routable: prometheus.NewGauge(prometheus.GaugeOpts{Name: "inferbridge_gateway_routable_upstreams",
			Help: "Upstreams in rotation (healthy and not ejected)."}),
		upRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "inferbridge_gateway_upstream_requests_total",
			Help: "Attempts sent to each upstream, by outcome (ok, or the failure)."}, []string{"upstream", "outcome"}),
		upFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "inferbridge_gateway_upstream_failures_total",
			Help: "Attempts that counted as the upstream's failure, by reason."}, []string{"upstream", "reason"}),
		upDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "inferbridge_gateway_upstream_request_duration_seconds",
			Help: "Latency of each attempt on an upstream.", Buckets: latencyBuckets}, []string{"upstream"}),
		upInflight: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "inferbridge_gateway_upstream_inflight_requests",
			Help: "Attempts in flight on each upstream."}, []string{"upstream"}),
		upBreaker: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "inferbridge_gateway_upstream_breaker_state",
			Help: "Circuit breaker state: 0 closed, 1 open, 2 half-open."}, []string{"upstream"}),
		upHealthy: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "inferbridge_gateway_upstream_healthy",
			Help: "1 when the active health checks pass."}, []string{"upstream"}),
		upEjected: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "inferbridge_gateway_upstream_ejected",
			Help: "1 while the upstream is ejected as an outlier."}, []string{"upstream"}),
		upEjections: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "inferbridge_gateway_upstream_ejections_total",
			Help: "Outlier ejections of each upstream."}, []string{"upstream"}),
		upDiscovery: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "inferbridge_gateway_upstream_discovery_errors_total",
			Help: "Repository-index requests that failed."}, []string{"upstream"}),
		upstreamsMap: map[string]*upstreamMetrics{},
	}
	for p, name := range protocolNames {
		m.durations[p] = m.duration.WithLabelValues(name)
	}
	m.reg.MustRegister(m.requests, m.duration, m.rejected, m.retries, m.retriesRefused, m.retryBudgetWaits, m.fleetReads, m.routable, m.batchSize,
		m.upRequests, m.upFailures, m.upDuration, m.upInflight, m.upBreaker, m.upHealthy, m.upEjected,
		m.upEjections, m.upDiscovery, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// done counts a request answered with code (HTTP status, or gRPC code) after d.
func (m *metrics) done(p protocol, code int, d time.Duration) {
	m.durations[p].Observe(d.Seconds())
	if code < 0 || code >= maxCode {
		m.requests.WithLabelValues(protocolNames[p], m.codeLabel(p, code)).Inc()
		return
	}
	slot := &m.byCode[p][code]
	if c := slot.Load(); c != nil {
		(*c).Inc()
		return
	}
	c := m.requests.WithLabelValues(protocolNames[p], m.codeLabel(p, code))
	slot.Store(&c)
	c.Inc()
}

func (m *metrics) codeLabel(p protocol, code int) string {
	if p == protoGRPC {
		return codeName(codes.Code(code))
	}
	return strconv.Itoa(code)
}

func (m *metrics) upstream(name string) *upstreamMetrics {
	m.upstreamsMu.Lock()
	defer m.upstreamsMu.Unlock()
	if u := m.upstreamsMap[name]; u != nil {
		return u
	}
	u := &upstreamMetrics{
		name: name, parent: m,
		duration:        m.upDuration.WithLabelValues(name),
		inflight:        m.upInflight.WithLabelValues(name),
		breakerState:    m.upBreaker.WithLabelValues(name),
		healthy:         m.upHealthy.WithLabelValues(name),
		ejected:         m.upEjected.WithLabelValues(name),
		ejections:       m.upEjections.WithLabelValues(name),
		discoveryErrors: m.upDiscovery.WithLabelValues(name),
	}
	u.outcomes.init(m.upRequests)
	u.failures.init(m.upFailures)
	m.upstreamsMap[name] = u
	return u
}

// forget drops the series of an upstream that left the pool.
func (m *metrics) forget(name string) {
	m.upstreamsMu.Lock()
	delete(m.upstreamsMap, name)
	m.upstreamsMu.Unlock()
	labels := prometheus.Labels{"upstream": name}
	for _, v := range []interface{ DeletePartialMatch(prometheus.Labels) int }{
		m.upRequests, m.upFailures, m.upDuration, m.upInflight, m.upBreaker, m.upHealthy, m.upEjected, m.upEjections, m.upDiscovery,
	} {
		v.DeletePartialMatch(labels)
	}
}

func (u *upstreamMetrics) observe(outcome string, d time.Duration) {
	u.duration.Observe(d.Seconds())
	u.outcomes.inc(u.name, outcome)
}

func (u *upstreamMetrics) failure(reason string) { u.failures.inc(u.name, reason) }
