package pool

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/inferbridge/inferbridge/gateway/internal/clock"
	"github.com/inferbridge/inferbridge/gateway/internal/config"
)

// fakeUpstream is an in-memory OIP REST server: it serves the models it is given and
// answers infer with its own name, or with status when set.
type fakeUpstream struct {
	name   string
	models []indexEntry
	status atomic.Int32  // 0 = 200
	block  chan struct{} // when set, infer waits for it to close
	srv    *httptest.Server

	mu       sync.Mutex
	infers   int
	timeouts []int64
	headers  []http.Header
}

func newFake(t *testing.T, name string, models ...string) *fakeUpstream {
	f := &fakeUpstream{name: name}
	for _, m := range models {
		n, v, _ := strings.Cut(m, ":")
		f.models = append(f.models, indexEntry{Name: n, Version: v, State: "READY"})
	}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v2/repository/index":
			json.NewEncoder(w).Encode(f.models)
		case r.URL.Path == "/v2/health/ready":
		case strings.HasSuffix(r.URL.Path, "/infer"):
			body, _ := io.ReadAll(r.Body)
			f.mu.Lock()
			f.infers++
			f.timeouts = append(f.timeouts, timeoutParam(body))
			f.headers = append(f.headers, r.Header.Clone())
			block := f.block
			f.mu.Unlock()
			if block != nil {
				select {
				case <-block:
				case <-r.Context().Done():
				}
			}
			if s := f.status.Load(); s != 0 {
				w.WriteHeader(int(s))
				return
			}
			fmt.Fprintf(w, `{"upstream": %q}`, f.name)
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeUpstream) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.infers
}

// newTestPool builds a pool over fakes (no loops running: discovery once, by hand).
func newTestPool(t *testing.T, extra string, fakes ...*fakeUpstream) (*Pool, *httptest.Server) {
	var b strings.Builder
	b.WriteString("upstreams:\n")
	for _, f := range fakes {
		fmt.Fprintf(&b, "  - {name: %s, rest: '%s'}\n", f.name, f.srv.URL)
	}
	b.WriteString(extra)
	cfg, err := config.Parse("test.yaml", []byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(cfg, clock.Real{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	p.discoverAll()
	return p, serveREST(t, p)
}

// serveREST serves p's REST front end on loopback as the gateway does (the lean lane,
// net/http behind it), stopped at the test's end; the result is for its URL.
func serveREST(t *testing.T, p *Pool) *httptest.Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.fe.Serve(nil, ln)
	t.Cleanup(func() { p.fe.Stop(); p.Stop() })
	return &httptest.Server{URL: "http://" + ln.Addr().String(), Listener: ln, Config: &http.Server{}}
}

func infer(t *testing.T, srv *httptest.Server, path, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(srv.URL+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

const inferBody = `{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}`

func TestRoutesByModelAndVersion(t *testing.T) {
	a := newFake(t, "a", "m:1", "only_a:1")
	b := newFake(t, "b", "m:2")
	_, srv := newTestPool(t, "", a, b)
	for i := 0; i < 5; i++ {
		if code, body := infer(t, srv, "/v2/models/only_a/infer", inferBody); code != 200 || !strings.Contains(body, `"a"`) {
			t.Fatalf("only_a: %d %s", code, body)
		}
		if code, body := infer(t, srv, "/v2/models/m/versions/2/infer", inferBody); code != 200 || !strings.Contains(body, `"b"`) {
			t.Fatalf("m v2: %d %s", code, body)
		}
	}
	if code, _ := infer(t, srv, "/v2/models/m/versions/3/infer", inferBody); code != 404 {
		t.Fatalf("m v3 (served by none): %d, want 404", code)
	}
	if code, _ := infer(t, srv, "/v2/models/nope/infer", inferBody); code != 404 {
		t.Fatalf("unknown model: %d, want 404", code)
	}
}

func TestRetriesOn503GoToAnotherUpstream(t *testing.T) {
	bad := newFake(t, "bad", "m")
	good := newFake(t, "good", "m")
	bad.status.Store(503)
	p, srv := newTestPool(t, "balancer: round-robin\nretries: {backoff_base: 1ms, backoff_max: 2ms}\n"+
		"outlier: {consecutive_failures: 0}\nbreaker: {consecutive_failures: 0, failure_rate: 0}\n", bad, good)
	for i := 0; i < 10; i++ {
		if code, body := infer(t, srv, "/v2/models/m/infer", inferBody); code != 200 {
			t.Fatalf("request %d: %d %s", i, code, body)
		}
	}
	if bad.count() == 0 || good.count() != 10 {
		t.Fatalf("bad saw %d, good %d: want retries from bad to good", bad.count(), good.count())
	}
	if p.budget.Active() != 0 || p.budget.Retries() != 0 {
		t.Fatalf("budget not released: %d active, %d retries", p.budget.Active(), p.budget.Retries())
	}
}

func TestASpentBudgetStopsRetries(t *testing.T) {
	bad := newFake(t, "bad", "m")
	good := newFake(t, "good", "m")
	bad.status.Store(503)
	_, srv := newTestPool(t, "balancer: round-robin\nretries: {budget_percent: 0, min_retries: 0}\n"+
		"outlier: {consecutive_failures: 0}\nbreaker: {consecutive_failures: 0, failure_rate: 0}\n", bad, good)
	failed := 0
	for i := 0; i < 10; i++ {
		if code, _ := infer(t, srv, "/v2/models/m/infer", inferBody); code == 503 {
			failed++
		}
	}
	if failed != 5 || good.count() != 5 {
		t.Fatalf("%d failed, good saw %d: want every request that picked bad to fail", failed, good.count())
	}
}

func TestBreakerOpensAndRefusesAtOnce(t *testing.T) {
	only := newFake(t, "only", "m")
	only.status.Store(500)
	p, srv := newTestPool(t, "breaker: {consecutive_failures: 3, open_for: 1h}\noutlier: {consecutive_failures: 0}\n", only)
	for i := 0; i < 3; i++ {
		if code, _ := infer(t, srv, "/v2/models/m/infer", inferBody); code != 500 {
			t.Fatalf("request %d: %d, want the upstream's 500", i, code)
		}
	}
	code, body := infer(t, srv, "/v2/models/m/infer", inferBody)
	if code != 503 || !strings.Contains(body, "no upstream") || only.count() != 3 {
		t.Fatalf("after 3 failures: %d %s (upstream saw %d), want 503 from the gateway", code, body, only.count())
	}
	if st := p.Status()[0]; st.Breaker != "open" {
		t.Fatalf("breaker %s", st.Breaker)
	}
}

func TestOutlierEjectionKeepsOneUpstream(t *testing.T) {
	a := newFake(t, "a", "m")
	b := newFake(t, "b", "m")
	a.status.Store(500)
	b.status.Store(500)
	p, srv := newTestPool(t, "outlier: {consecutive_failures: 2, max_ejection_percent: 100}\n"+
		"breaker: {consecutive_failures: 0, failure_rate: 0}\n", a, b)
	for i := 0; i < 10; i++ {
		infer(t, srv, "/v2/models/m/infer", inferBody)
	}
	ejected := 0
	for _, st := range p.Status() {
		if st.Ejected {
			ejected++
		}
	}
	if ejected != 1 {
		t.Fatalf("%d of 2 upstreams ejected, want exactly 1 (never the last)", ejected)
	}
}

func TestAdmissionRefusesBeforeForwarding(t *testing.T) {
	slow := newFake(t, "slow", "m", "other")
	slow.block = make(chan struct{})
	_, srv := newTestPool(t, "admission: {models: {m: 1}}\n", slow)
	done := make(chan int)
	go func() {
		code, _ := infer(t, srv, "/v2/models/m/infer", inferBody)
		done <- code
	}()
	for slow.count() == 0 {
		runtime.Gosched()
	}
	resp, err := http.Post(srv.URL+"/v2/models/m/infer", "application/json", strings.NewReader(inferBody))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" || slow.count() != 1 {
		t.Fatalf("second request: %d (Retry-After %q), upstream saw %d", resp.StatusCode, resp.Header.Get("Retry-After"), slow.count())
	}
	close(slow.block)
	if code := <-done; code != 200 {
		t.Fatalf("first request: %d", code)
	}
}

func TestDeadlineAndTraceArePassedOn(t *testing.T) {
	up := newFake(t, "up", "m")
	_, srv := newTestPool(t, "timeouts: {default: 3s}\n", up)
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v2/models/m/infer",
		strings.NewReader(`{"inputs": [], "parameters": {"timeout": 500000}}`))
	req.Header.Set("Traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	infer(t, srv, "/v2/models/m/infer", inferBody)
	up.mu.Lock()
	defer up.mu.Unlock()
	if got := up.timeouts[0]; got <= 0 || got > 500000 {
		t.Fatalf("timeout passed on: %d µs, want (0, 500000]", got)
	}
	if got := up.timeouts[1]; got <= 500000 || got > 3000000 {
		t.Fatalf("default timeout passed on: %d µs, want (0.5 s, 3 s]", got)
	}
	if got := up.headers[0].Get("Traceparent"); !strings.HasPrefix(got, "00-0af7") {
		t.Fatalf("traceparent %q not passed on", got)
	}
}
