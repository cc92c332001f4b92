package pool

import (
	"bytes"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/inferbridge/inferbridge/gateway/internal/clock"
	"github.com/inferbridge/inferbridge/gateway/internal/config"
)

// fakeControlPlane answers GET /v1/fleet/routing with table (status when not 200),
// to requests carrying the API key "k".
type fakeControlPlane struct {
	mu     sync.Mutex
	table  string
	status int
	srv    *httptest.Server
}

func newFakeControlPlane(t *testing.T) *fakeControlPlane {
	cp := &fakeControlPlane{status: 200, table: `{"models": {}}`}
	cp.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cp.mu.Lock()
		defer cp.mu.Unlock()
		switch {
		case r.URL.Path != "/v1/fleet/routing":
			w.WriteHeader(http.StatusNotFound)
		case r.Header.Get("X-Api-Key") != "k":
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"error": "an API key is required"}`)
		case cp.status != 200:
			w.WriteHeader(cp.status)
			fmt.Fprint(w, `{"error": "follower"}`)
		default:
			fmt.Fprint(w, cp.table)
		}
	}))
	t.Cleanup(cp.srv.Close)
	return cp
}

func (cp *fakeControlPlane) set(status int, table string) {
	cp.mu.Lock()
	cp.status, cp.table = status, table
	cp.mu.Unlock()
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestFleetTableDrivesTheUpstreams(t *testing.T) {
	a := newFake(t, "a", "m:1", "other:1")
	b := newFake(t, "b", "m:1")
	cp := newFakeControlPlane(t)
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close() // a replica that is down: the next one is asked
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "cp.key"), []byte("k\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(filepath.Join(dir, "g.yaml"), []byte(fmt.Sprintf(
		"fleet: {control_plane: ['%s', '%s'], api_key_file: cp.key}\n", dead.URL, cp.srv.URL)))
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	p, err := New(cfg, clock.Real{}, log.New(&logs, "", 0))
	if err != nil {
		t.Fatal(err)
	}
	srv := serveREST(t, p)

	table := func(entries ...string) string {
		return `{"models": {"m": [` + strings.Join(entries, ", ") + `]}}`
	}
	entry := func(node string, f *fakeUpstream) string {
		return fmt.Sprintf(`{"node": %q, "version": 1, "url": %q}`, node, f.srv.URL)
	}
	cp.set(200, table(entry("na", a), entry("nb", b)))
	p.refreshFleet()
	if got := upstreamNames(p); got != "na nb" {
		t.Fatalf("upstreams %q, want na nb", got)
	}
	p.discoverAll() // must not replace what the table says with a's index
	for i := 0; i < 4; i++ {
		if code, body := infer(t, srv, "/v2/models/m/versions/1/infer", inferBody); code != 200 {
			t.Fatalf("m v1: %d %s", code, body)
		}
	}
	if code, _ := infer(t, srv, "/v2/models/other/infer", inferBody); code != 404 {
		t.Fatalf("a model a serves but the table does not name: %d, want 404", code)
	}
	if a.count() == 0 || b.count() == 0 {
		t.Fatalf("infers a %d b %d: both nodes should serve", a.count(), b.count())
	}

	// nb leaves the table (NotReady): it leaves the pool; an entry without a url is
	// skipped and said.
	cp.set(200, table(entry("na", a), `{"node": "nc", "version": 1, "url": ""}`))
	p.refreshFleet()
	if got := upstreamNames(p); got != "na" {
		t.Fatalf("upstreams %q after nb left, want na", got)
	}
	if !strings.Contains(logs.String(), "upstream nb removed") || !strings.Contains(logs.String(), "without node or url") {
		t.Fatalf("logs: %s", logs.String())
	}

	// The control plane failing (every replica): the last table stays, said once.
	cp.set(503, "")
	p.refreshFleet()
	p.refreshFleet()
	if got := upstreamNames(p); got != "na" {
		t.Fatalf("upstreams %q with the control plane down, want the last table's na", got)
	}
	if n := strings.Count(logs.String(), "keeping the last one"); n != 1 {
		t.Fatalf("the failure logged %d times, want once: %s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "routing answered 503") {
		t.Fatalf("the failure does not say what the control plane answered: %s", logs.String())
	}
	for _, bad := range []string{`{"models": `, `[1, 2]`} {
		cp.set(200, bad)
		p.refreshFleet()
		if got := upstreamNames(p); got != "na" {
			t.Fatalf("upstreams %q after the answer %q, want na", got, bad)
		}
	}
	if !strings.Contains(logs.String(), "not a routing table") {
		t.Fatalf("a malformed table not said: %s", logs.String())
	}
	cp.set(200, table(entry("na", a), entry("nb", b)))
	p.refreshFleet()
	if got := upstreamNames(p); got != "na nb" || !strings.Contains(logs.String(), "routing table read again") {
		t.Fatalf("upstreams %q after the control plane came back; logs %s", got, logs.String())
	}
}

func TestFleetNodeNamedLikeAConfiguredUpstreamIsRefusedOnce(t *testing.T) {
	a := newFake(t, "a", "m:1")
	cp := newFakeControlPlane(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "cp.key"), []byte("k\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(filepath.Join(dir, "g.yaml"), []byte(fmt.Sprintf(
		"upstreams: [{name: na, rest: '%s'}]\nfleet: {control_plane: '%s', api_key_file: cp.key}\n", a.srv.URL, cp.srv.URL)))
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	p, err := New(cfg, clock.Real{}, log.New(&logs, "", 0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	cp.set(200, fmt.Sprintf(`{"models": {"m": [{"node": "na", "version": 1, "url": %q}]}}`, a.srv.URL))
	p.refreshFleet()
	p.refreshFleet()
	if n := strings.Count(logs.String(), "routing table not applied"); n != 1 || !strings.Contains(logs.String(), `"na" is named twice`) {
		t.Fatalf("the clash logged %d times, want once naming na: %s", n, logs.String())
	}
	if got := upstreamNames(p); got != "na" {
		t.Fatalf("upstreams %q, want the configured na alone", got)
	}
}

func TestFleetVersions(t *testing.T) {
	for raw, want := range map[string]string{`2`: "2", `"3"`: "3", `null`: "", ``: "", `2.5`: "2.5"} {
		if got := versionString([]byte(raw)); got != want {
			t.Errorf("version %s read as %q, want %q", raw, got, want)
		}
	}
}

func upstreamNames(p *Pool) string {
	var names []string
	for _, u := range p.upstreams() {
		names = append(names, u.cfg.Name)
	}
	return strings.Join(names, " ")
}

func TestFleetGRPCAddressesReachTheUpstreams(t *testing.T) {
	a := newFake(t, "a", "m:1")
	b := newFake(t, "b", "m:1")
	cp := newFakeControlPlane(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "cp.key"), []byte("k\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(filepath.Join(dir, "g.yaml"), []byte(fmt.Sprintf(
		"fleet: {control_plane: '%s', api_key_file: cp.key}\n", cp.srv.URL)))
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	p, err := New(cfg, clock.Real{}, log.New(&logs, "", 0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	table := func(grpcA, grpcB string) string {
		return fmt.Sprintf(`{"models": {"m": [`+
			`{"node": "na", "version": 1, "url": %q, "grpc": %q}, `+
			`{"node": "nb", "version": 1, "url": %q, "grpc": %q}]}}`, a.srv.URL, grpcA, b.srv.URL, grpcB)
	}
	grpcOf := func() map[string]string {
		out := map[string]string{}
		for _, u := range p.upstreams() {
			out[u.cfg.Name] = u.cfg.GRPC
		}
		return out
	}
	cp.set(200, table("127.0.0.1:18001", "not an address"))
	p.refreshFleet()
	if got := grpcOf(); got["na"] != "127.0.0.1:18001" || got["nb"] != "" || len(got) != 2 {
		t.Fatalf("gRPC addresses %v, want na's and none for nb (REST only)", got)
	}
	if !strings.Contains(logs.String(), `node nb: grpc "not an address"`) || !strings.Contains(logs.String(), "REST only") {
		t.Fatalf("the bad address not said: %s", logs.String())
	}
	// A changed address is a changed upstream: the table is applied again.
	cp.set(200, table("[::1]:18002", "127.0.0.1:18003"))
	p.refreshFleet()
	if got := grpcOf(); got["na"] != "[::1]:18002" || got["nb"] != "127.0.0.1:18003" {
		t.Fatalf("gRPC addresses %v after the change", got)
	}
	// An entry without one (an agent without --advertise-grpc) is REST only.
	cp.set(200, fmt.Sprintf(`{"models": {"m": [{"node": "na", "version": 1, "url": %q}]}}`, a.srv.URL))
	p.refreshFleet()
	if got := grpcOf(); got["na"] != "" || len(got) != 1 {
		t.Fatalf("gRPC addresses %v, want na REST only", got)
	}
}

func TestFleetGRPCAddressCheck(t *testing.T) {
	for addr, ok := range map[string]bool{
		"": true, "10.0.0.5:8001": true, "[::1]:8001": true, "node-a.lan:65535": true,
		"nohost": false, ":8001": false, "h:0": false, "h:65536": false, "h:x": false,
		"http://h:1": false, "a b:1": false,
	} {
		if err := checkGRPCAddress(addr); (err == nil) != ok {
			t.Errorf("checkGRPCAddress(%q) = %v, want ok=%v", addr, err, ok)
		}
	}
}
