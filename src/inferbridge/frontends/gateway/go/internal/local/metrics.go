package local

import (
	"bytes"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/grpc/codes"

	"github.com/inferbridge/inferbridge/gateway/internal/frontend"
)

// The gateway's own metrics, pulled by the backend with METRICS-PULL and appended to
// the Python server's /metrics. The names are documented in the package comment; the
// Python fallback front ends emit the same ones, and nothing here may clash with what
// the Python process exports itself (so: no process collector).
//
// The hot path takes no lock and looks no label up once warm: every child it touches
// is resolved in advance (per protocol) or on first use and cached (per route and code,
// per model and reason).

type protocol uint8

const (
	protoHTTP protocol = iota
	protoGRPC
	numProtocols
)

var protocolNames = [numProtocols]string{protoHTTP: "http", protoGRPC: "grpc"}

// reason is the `reason` label of inferbridge_frontend_rejected_total.
type reason uint8

const (
	reasonQueueFull        reason = iota // a model at its LIMITS bound
	reasonInflightLimit                  // --max-http-inflight
	reasonConcurrencyLimit               // --max-concurrent-rpcs
	reasonTooLarge                       // over --max-recv-bytes
	reasonUnauthenticated                // no valid credential: 401 / UNAUTHENTICATED
	reasonPermissionDenied               // a principal without the scope: 403 / PERMISSION_DENIED
	reasonRateLimit                      // a principal's or model's token bucket empty: 429 / RESOURCE_EXHAUSTED
	numReasons
)

var reasonNames = [numReasons]string{
	reasonQueueFull:        "queue_full",
	reasonInflightLimit:    "inflight_limit",
	reasonConcurrencyLimit: "concurrency_limit",
	reasonTooLarge:         "too_large",
	reasonUnauthenticated:  "unauthenticated",
	reasonPermissionDenied: "permission_denied",
	reasonRateLimit:        "rate_limit",
}

// durationBuckets (seconds) are those of the Python server's duration histograms.
var durationBuckets = []float64{
	0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
	2.5, 5, 10,
}

// HTTP status codes with a cached child per route; others are looked up each time.
const (
	minCachedStatus = 100
	numCachedStatus = 500 // 100..599
)

// lazyCounter is one child of a CounterVec, resolved on first use so that a series
// appears only once it counts something; afterwards getting it is one atomic load.
type lazyCounter struct {
	p atomic.Pointer[prometheus.Counter]
}

func (l *lazyCounter) get(vec *prometheus.CounterVec, a, b, c string) prometheus.Counter {
	if p := l.p.Load(); p != nil {
		return *p
	}
	return l.resolve(vec.WithLabelValues(a, b, c))
}

// resolve caches ctr, the child for l's labels (the same child for racing callers).
func (l *lazyCounter) resolve(ctr prometheus.Counter) prometheus.Counter {
	l.p.Store(&ctr)
	return ctr
}

// protoMetrics are the children of one protocol, resolved once.
type protoMetrics struct {
	inflight   prometheus.Gauge
	reqBytes   prometheus.Counter
	respBytes  prometheus.Counter
	duration   prometheus.Observer
	conns      prometheus.Gauge
	connsTotal prometheus.Counter
}

// grpcRoute is one known gRPC method (or "other") with its children per status code.
type grpcRoute struct {
	name      string
	forwarded bool // served by forward (not health or reflection)
	byCode    [frontend.NumCodes]lazyCounter
}

type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec // protocol, route, code
	rejected *prometheus.CounterVec // protocol, model, reason
	proto    [numProtocols]protoMetrics

	httpRequests [frontend.NumRoutes][numCachedStatus]lazyCounter
	grpcRoutes   map[string]*grpcRoute // read-only once setGRPCMethods has run
	grpcOther    grpcRoute
	noModel      [numProtocols][numReasons]lazyCounter // rejections with model=""
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "inferbridge_frontend_requests_total",
			Help: "Requests and calls finished by the front end, by templated route and status code.",
		}, []string{"protocol", "route", "code"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "inferbridge_frontend_rejected_total",
			Help: "Requests the front end refused itself, by model (\"\" when none is known) and reason.",
		}, []string{"protocol", "model", "reason"}),
		grpcRoutes: map[string]*grpcRoute{},
		grpcOther:  grpcRoute{name: "other", forwarded: true},
	}
	inflight := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "inferbridge_frontend_inflight_requests",
		Help: "Requests and calls in progress in the front end.",
	}, []string{"protocol"})
	reqBytes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "inferbridge_frontend_request_bytes_total",
		Help: "Bytes of request bodies (HTTP) and request messages (gRPC) received.",
	}, []string{"protocol"})
	respBytes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "inferbridge_frontend_response_bytes_total",
		Help: "Bytes of response bodies (HTTP) and response messages (gRPC) sent.",
	}, []string{"protocol"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "inferbridge_frontend_request_duration_seconds",
		Help:    "Time in the front end from a request read to its reply written.",
		Buckets: durationBuckets,
	}, []string{"protocol"})
	conns := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "inferbridge_frontend_connections",
		Help: "Open client connections.",
	}, []string{"protocol"})
	connsTotal := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "inferbridge_frontend_connections_total",
		Help: "Client connections accepted.",
	}, []string{"protocol"})
	m.reg.MustRegister(m.requests, m.rejected, inflight, reqBytes, respBytes, duration, conns, connsTotal,
		collectors.NewGoCollector())
	for p, name := range protocolNames {
		m.proto[p] = protoMetrics{
			inflight:   inflight.WithLabelValues(name),
			reqBytes:   reqBytes.WithLabelValues(name),
			respBytes:  respBytes.WithLabelValues(name),
			duration:   duration.WithLabelValues(name),
			conns:      conns.WithLabelValues(name),
			connsTotal: connsTotal.WithLabelValues(name),
		}
	}
	return m
}

// setGRPCMethods declares the known full method names: forwarded ones (from the
// DESCRIPTORS frame) and served ones (health, reflection). Others count as "other".
// It must run before the first call.
func (m *metrics) setGRPCMethods(forwarded, served []string) {
	for _, name := range forwarded {
		m.grpcRoutes[name] = &grpcRoute{name: name, forwarded: true}
	}
	for _, name := range served {
		m.grpcRoutes[name] = &grpcRoute{name: name}
	}
}

func (m *metrics) grpcRoute(method string) *grpcRoute {
	if r := m.grpcRoutes[method]; r != nil {
		return r
	}
	return &m.grpcOther
}

// httpDone records a finished HTTP request.
func (m *metrics) httpDone(route frontend.Route, status int, start time.Time) {
	m.httpCounter(route, status).Inc()
	m.proto[protoHTTP].duration.Observe(time.Since(start).Seconds())
}

func (m *metrics) httpCounter(route frontend.Route, status int) prometheus.Counter {
	i := status - minCachedStatus
	if i < 0 || i >= numCachedStatus {
		return m.requests.WithLabelValues("http", route.String(), strconv.Itoa(status))
	}
	l := &m.httpRequests[route][i]
	if p := l.p.Load(); p != nil {
		return *p
	}
	return l.resolve(m.requests.WithLabelValues("http", route.String(), strconv.Itoa(status)))
}

// grpcDone records a finished gRPC call.
func (m *metrics) grpcDone(route *grpcRoute, code codes.Code, start time.Time) {
	var ctr prometheus.Counter
	if int(code) < len(route.byCode) {
		ctr = route.byCode[code].get(m.requests, "grpc", route.name, frontend.CodeName(code))
	} else {
		ctr = m.requests.WithLabelValues("grpc", route.name, frontend.CodeName(code))
	}
	ctr.Inc()
	m.proto[protoGRPC].duration.Observe(time.Since(start).Seconds())
}

// reject counts a request the gateway refused itself; st is the model's state, or nil.
func (m *metrics) reject(p protocol, st *modelState, r reason) {
	slot, model := &m.noModel[p][r], ""
	if st != nil {
		slot, model = &st.rejected[p][r], st.name
	}
	slot.get(m.rejected, protocolNames[p], model, reasonNames[r]).Inc()
}

// appendText appends the metrics in the Prometheus text exposition format 0.0.4.
func (m *metrics) appendText(b []byte) ([]byte, error) {
	families, err := m.reg.Gather()
	buf := bytes.NewBuffer(b)
	for _, mf := range families {
		if _, werr := expfmt.MetricFamilyToText(buf, mf); werr != nil && err == nil {
			err = werr
		}
	}
	return buf.Bytes(), err
}
