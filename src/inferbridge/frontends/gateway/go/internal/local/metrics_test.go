package local

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"math"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/inferbridge/inferbridge/gateway/internal/frontend"
)

// families are parsed metrics by name.
type families map[string]*dto.MetricFamily

// pullMetrics sends METRICS-PULL id and parses the METRICS reply. Nothing else may be
// in flight towards the backend meanwhile.
func (h *harness) pullMetrics(id uint64) families {
	h.t.Helper()
	h.send(kindMetricsPull, id, nil)
	f := h.next()
	if f.kind != kindMetrics || f.id != id {
		h.t.Fatalf("got frame %d id %d, want METRICS %d", f.kind, f.id, id)
	}
	return parseMetrics(h.t, f.body)
}

// pullMetricsWhen pulls until ready holds: a call is recorded once its handler has
// returned, which can be after the client has seen its outcome (a cancelled call).
func (h *harness) pullMetricsWhen(ready func(families) bool) families {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for id := uint64(100); ; id++ {
		fs := h.pullMetrics(id)
		if ready(fs) || time.Now().After(deadline) {
			return fs
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func parseMetrics(t testing.TB, text []byte) families {
	t.Helper()
	parser := expfmt.NewTextParser(model.LegacyValidation) // the names Python's parser takes
	mfs, err := parser.TextToMetricFamilies(bytes.NewReader(text))
	if err != nil {
		t.Fatalf("METRICS body does not parse: %v\n%s", err, text)
	}
	return mfs
}

// value is the value of the series of name with exactly labels (a counter, a gauge,
// or a histogram's count), and whether it exists.
func (fs families) value(name string, labels ...string) (float64, bool) {
	mf := fs[name]
	if mf == nil {
		return 0, false
	}
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	for _, m := range mf.GetMetric() {
		got := map[string]string{}
		for _, lp := range m.GetLabel() {
			got[lp.GetName()] = lp.GetValue()
		}
		if !maps.Equal(got, want) {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

// sum adds the values of every series of name whose labels include labels.
func (fs families) sum(name string, labels ...string) float64 {
	total := 0.0
	for _, m := range fs[name].GetMetric() {
		got := map[string]string{}
		for _, lp := range m.GetLabel() {
			got[lp.GetName()] = lp.GetValue()
		}
		match := true
		for i := 0; i+1 < len(labels); i += 2 {
			match = match && got[labels[i]] == labels[i+1]
		}
		if match {
			total += m.GetCounter().GetValue()
		}
	}
	return total
}

func TestMetricsAfterTraffic(t *testing.T) {
	h := newHarness(t, config{maxRecvBytes: 1000, maxHTTPInflight: 2, maxConcurrentRPCs: 2})
	h.sendLimits(map[string]uint32{"m": 1}) // one GET /sync answered 204
	client := &http.Client{Transport: &http.Transport{}}
	do := func(method, path string, body []byte) <-chan httpResult {
		return h.do(client, mustRequest(t, method, h.httpURL+path, bytes.NewReader(body)))
	}
	wantStatus := func(d <-chan httpResult, status int) {
		t.Helper()
		if res := waitHTTP(t, d); res.err != nil || res.status != status {
			t.Fatalf("got %+v, want status %d", res, status)
		}
	}

	// HTTP: a model at its limit, the global limit, bodies over the limit.
	d1 := do("POST", "/v2/models/m/infer", []byte("{}"))
	f1 := h.next()
	wantStatus(do("POST", "/v2/models/m/infer", []byte("{}")), 429)
	wantStatus(do("POST", "/v2/models/m/versions/2/infer/", []byte("{}")), 429)
	d2 := do("GET", "/v2/health/ready", nil)
	f2 := h.next()
	wantStatus(do("GET", "/v2/models/x", nil), 429) // two in flight: --max-http-inflight
	h.replyHTTP(f1.id, 200, nil, []byte(`{"outputs":[]}`))
	h.replyHTTP(f2.id, 503, nil, nil)
	wantStatus(d1, 200)
	wantStatus(d2, 503)
	wantStatus(do("POST", "/v2/models/m/infer", make([]byte, 1001)), 413)
	wantStatus(do("POST", "/predict", make([]byte, 1001)), 413)
	d3 := do("GET", "/v2/models/a/b/c", nil)
	h.replyHTTP(h.next().id, 404, nil, nil)
	wantStatus(d3, 404)

	// gRPC: a model at its limit, the concurrency limit, a message over the limit, an
	// unknown method, a cancelled call, health.
	g1 := h.invoke(context.Background(), inferMethod, inferRequest("m"))
	c1 := h.next()
	wantCode(t, wait(t, h.invoke(context.Background(), inferMethod, inferRequest("m"))).err,
		codes.ResourceExhausted, "queue is full")
	g2 := h.invoke(context.Background(), inferMethod, inferRequest("other"))
	c2 := h.next()
	wantCode(t, wait(t, h.invoke(context.Background(), inferMethod, inferRequest("third"))).err,
		codes.ResourceExhausted, "too many concurrent RPCs")
	h.reply(c1.id, codes.OK, []byte("resp"))
	h.reply(c2.id, codes.NotFound, []byte("no model 'other'"))
	if r := wait(t, g1); r.err != nil {
		t.Fatal(r.err)
	}
	wantCode(t, wait(t, g2).err, codes.NotFound, "")
	wantCode(t, wait(t, h.invoke(context.Background(), inferMethod, make([]byte, 1001))).err,
		codes.ResourceExhausted, "larger than max")
	g3 := h.invoke(context.Background(), "/foo.Bar/Baz", nil)
	h.reply(h.next().id, codes.Unimplemented, []byte("unknown method"))
	wantCode(t, wait(t, g3).err, codes.Unimplemented, "")
	ctx, cancel := context.WithCancel(context.Background())
	g4 := h.invoke(ctx, inferMethod, inferRequest("m"))
	c4 := h.next()
	cancel()
	if c := h.next(); c.kind != kindCancel || c.id != c4.id {
		t.Fatalf("got frame %d, want CANCEL", c.kind)
	}
	wantCode(t, wait(t, g4).err, codes.Canceled, "")
	if _, err := healthpb.NewHealthClient(h.cc).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}

	const (
		reqs   = "inferbridge_frontend_requests_total"
		rejs   = "inferbridge_frontend_rejected_total"
		health = "/grpc.health.v1.Health/Check"
	)
	fs := h.pullMetricsWhen(func(fs families) bool {
		return fs.sum(reqs, "protocol", "http") == 9 && fs.sum(reqs, "protocol", "grpc") == 8
	})
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{reqs, []string{"protocol", "http", "route", "other", "code", "204"}, 1},
		{reqs, []string{"protocol", "http", "route", "/v2/models/{model}/infer", "code", "200"}, 1},
		{reqs, []string{"protocol", "http", "route", "/v2/models/{model}/infer", "code", "429"}, 1},
		{reqs, []string{"protocol", "http", "route", "/v2/models/{model}/versions/{version}/infer", "code", "429"}, 1},
		{reqs, []string{"protocol", "http", "route", "/v2/health/ready", "code", "503"}, 1},
		{reqs, []string{"protocol", "http", "route", "/v2/models/{model}", "code", "429"}, 1},
		{reqs, []string{"protocol", "http", "route", "/v2/models/{model}/infer", "code", "413"}, 1},
		{reqs, []string{"protocol", "http", "route", "/predict", "code", "413"}, 1},
		{reqs, []string{"protocol", "http", "route", "other", "code", "404"}, 1},
		{reqs, []string{"protocol", "grpc", "route", inferMethod, "code", "OK"}, 1},
		{reqs, []string{"protocol", "grpc", "route", inferMethod, "code", "RESOURCE_EXHAUSTED"}, 3},
		{reqs, []string{"protocol", "grpc", "route", inferMethod, "code", "NOT_FOUND"}, 1},
		{reqs, []string{"protocol", "grpc", "route", inferMethod, "code", "CANCELLED"}, 1},
		{reqs, []string{"protocol", "grpc", "route", "other", "code", "UNIMPLEMENTED"}, 1},
		{reqs, []string{"protocol", "grpc", "route", health, "code", "OK"}, 1},
		{rejs, []string{"protocol", "http", "model", "m", "reason", "queue_full"}, 2},
		{rejs, []string{"protocol", "http", "model", "", "reason", "inflight_limit"}, 1},
		{rejs, []string{"protocol", "http", "model", "m", "reason", "too_large"}, 1},
		{rejs, []string{"protocol", "http", "model", "", "reason", "too_large"}, 1},
		{rejs, []string{"protocol", "grpc", "model", "m", "reason", "queue_full"}, 1},
		{rejs, []string{"protocol", "grpc", "model", "", "reason", "concurrency_limit"}, 1},
		{rejs, []string{"protocol", "grpc", "model", "", "reason", "too_large"}, 1},
		{"inferbridge_frontend_inflight_requests", []string{"protocol", "http"}, 0},
		{"inferbridge_frontend_inflight_requests", []string{"protocol", "grpc"}, 0},
		{"inferbridge_frontend_request_duration_seconds", []string{"protocol", "http"}, 9},
		{"inferbridge_frontend_request_duration_seconds", []string{"protocol", "grpc"}, 8},
		{"inferbridge_frontend_connections_total", []string{"protocol", "grpc"}, 1},
		{"inferbridge_frontend_connections", []string{"protocol", "grpc"}, 1},
	} {
		t.Run(fmt.Sprint(tc.name, tc.labels), func(t *testing.T) {
			if got, ok := fs.value(tc.name, tc.labels...); !ok || got != tc.want {
				t.Errorf("%s%v = %v (present %v), want %v", tc.name, tc.labels, got, ok, tc.want)
			}
		})
	}
	// Totals: no series beyond those above.
	if got := fs.sum(reqs, "protocol", "http"); got != 9 {
		t.Errorf("HTTP requests %v, want 9", got)
	}
	if got := fs.sum(reqs, "protocol", "grpc"); got != 8 {
		t.Errorf("gRPC calls %v, want 8", got)
	}
	if got := fs.sum(rejs); got != 8 {
		t.Errorf("rejections %v, want 8", got)
	}
	if got, _ := fs.value("inferbridge_frontend_connections_total", "protocol", "http"); got < 1 {
		t.Errorf("HTTP connections accepted %v, want at least 1", got)
	}
	for _, name := range []string{
		"inferbridge_frontend_request_bytes_total", "inferbridge_frontend_response_bytes_total",
		"go_goroutines", "go_memstats_alloc_bytes",
	} {
		if fs[name] == nil {
			t.Errorf("no %s", name)
		}
	}
	for name := range fs {
		if !strings.HasPrefix(name, "inferbridge_frontend_") && !strings.HasPrefix(name, "go_") {
			t.Errorf("family %s: only inferbridge_frontend_* and go_* may be exported", name)
		}
	}
	if bounds := bucketBounds(fs["inferbridge_frontend_request_duration_seconds"]); !slices.Equal(bounds, append(slices.Clone(durationBuckets), math.Inf(1))) {
		t.Errorf("duration buckets %v, want %v", bounds, durationBuckets)
	}
}

func bucketBounds(mf *dto.MetricFamily) []float64 {
	var bounds []float64
	for _, b := range mf.GetMetric()[0].GetHistogram().GetBucket() {
		bounds = append(bounds, b.GetUpperBound())
	}
	return bounds
}

func TestMetricsBytesAndConnections(t *testing.T) {
	h := newHarness(t, config{maxRecvBytes: 1 << 20})
	tr := &http.Transport{}
	client := &http.Client{Transport: tr}
	for range 2 { // one keep-alive connection
		d := h.do(client, mustRequest(t, "POST", h.httpURL+"/v1/models/m:predict", strings.NewReader("12345")))
		h.replyHTTP(h.next().id, 200, nil, []byte("1234567"))
		if res := waitHTTP(t, d); res.err != nil || string(res.body) != "1234567" {
			t.Fatalf("response %+v", res)
		}
	}
	g := h.invoke(context.Background(), "/ai.AIService/Chat", []byte("abc"))
	h.reply(h.next().id, codes.OK, []byte("wxyz"))
	if r := wait(t, g); r.err != nil {
		t.Fatal(r.err)
	}

	fs := h.pullMetrics(1)
	for _, tc := range []struct {
		name     string
		protocol string
		want     float64
	}{
		{"inferbridge_frontend_request_bytes_total", "http", 10},
		{"inferbridge_frontend_response_bytes_total", "http", 14},
		{"inferbridge_frontend_request_bytes_total", "grpc", 3},
		{"inferbridge_frontend_response_bytes_total", "grpc", 4},
		{"inferbridge_frontend_connections_total", "http", 1},
		{"inferbridge_frontend_connections", "http", 1},
		{"inferbridge_frontend_connections_total", "grpc", 1},
	} {
		if got, _ := fs.value(tc.name, "protocol", tc.protocol); got != tc.want {
			t.Errorf("%s{protocol=%q} = %v, want %v", tc.name, tc.protocol, got, tc.want)
		}
	}
	if got, _ := fs.value("inferbridge_frontend_requests_total",
		"protocol", "grpc", "route", "/ai.AIService/Chat", "code", "OK"); got != 1 {
		t.Errorf("Chat calls %v, want 1", got)
	}

	// Closed connections leave the gauge; two pulls in flight are both answered.
	tr.CloseIdleConnections()
	deadline := time.Now().Add(10 * time.Second)
	for {
		h.send(kindMetricsPull, 2, nil)
		h.send(kindMetricsPull, 3, nil)
		a, b := h.next(), h.next()
		if a.kind != kindMetrics || b.kind != kindMetrics || a.id+b.id != 5 || a.id*b.id != 6 {
			t.Fatalf("frames %d/%d and %d/%d, want METRICS 2 and 3", a.kind, a.id, b.kind, b.id)
		}
		open, _ := parseMetrics(t, a.body).value("inferbridge_frontend_connections", "protocol", "http")
		if open == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v HTTP connections still open after closing the client's", open)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// BenchmarkHTTPRecord is the per-request cost of the HTTP metrics once warm: it must
// not allocate.
func BenchmarkHTTPRecord(b *testing.B) {
	m := newMetrics()
	start := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		m.httpDone(frontend.ParsePath("/v2/models/resnet/versions/3/infer").Route, 200, start)
	}
	if n := testing.AllocsPerRun(100, func() { m.httpDone(frontend.ParsePath("/v2/models/a/infer").Route, 429, start) }); n != 0 {
		b.Fatalf("%v allocations per request", n)
	}
}
