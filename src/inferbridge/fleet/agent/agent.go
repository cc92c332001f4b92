package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"time"
)

const agentVersion = "0.1.0"

// errUnregistered means the control plane does not know this node or its token.
var errUnregistered = errors.New("not registered")

// Agent runs the node: registration, heartbeats, the assignment long poll, the
// reconciler and diagnostics. Only answers from the control plane change what is
// assigned; losing the control plane changes nothing on the node.
type Agent struct {
	cfg        Config
	log        *slog.Logger
	http       *httpClient // control plane requests
	poll       *httpClient // the long poll (longer timeout)
	server     *HTTPServer
	reconciler *Reconciler
	artifacts  *DiskArtifacts
	started    time.Time
	apiKey     *APIKeyFile // nil: node tokens (a control plane without --auth-keys)

	mu       sync.Mutex
	replica  int // index into the control-plane URLs
	token    string
	desired  []Assignment
	etag     string
	online   bool
	metrics  map[string]float64
	stats    []VersionStats // nil: the server's statistics could not be read
	disk     DiskUsage
	capacity Capacity
	// lastWarning is the last problem warnOnce logged.
	lastWarning string

	trigger chan struct{}
	// trimNow asks the trim loop to give memory back at once (after a download).
	trimNow chan struct{}
}

// NewAgent wires an agent from its configuration.
func NewAgent(cfg Config, log *slog.Logger) *Agent {
	server := &HTTPServer{Base: strings.TrimRight(cfg.Server, "/"), Client: &httpClient{Timeout: 10 * time.Minute}}
	artifacts := &DiskArtifacts{
		Repository: cfg.Repository,
		StateDir:   cfg.StateDir,
		Source:     &Sources{S3Endpoint: cfg.S3Endpoint, HTTP: &http.Client{}},
		Log:        log,
	}
	var apiKey *APIKeyFile
	if cfg.APIKeyFile != "" {
		apiKey = &APIKeyFile{Path: cfg.APIKeyFile}
	}
	return &Agent{
		apiKey:    apiKey,
		cfg:       cfg,
		log:       log,
		http:      &httpClient{Timeout: 10 * time.Second},
		poll:      &httpClient{Timeout: 60 * time.Second},
		server:    server,
		artifacts: artifacts,
		reconciler: &Reconciler{
			Server: server, Artifacts: artifacts, Log: log, RetryAfter: cfg.RetryAfter,
		},
		started: time.Now(),
		online:  true,
		trigger: make(chan struct{}, 1),
		trimNow: make(chan struct{}, 1),
	}
}

func (a *Agent) statePath(name string) string { return filepath.Join(a.cfg.StateDir, name) }

// Run blocks until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	if err := os.MkdirAll(a.cfg.StateDir, 0o700); err != nil {
		return err
	}
	if data, err := os.ReadFile(a.statePath("token")); err == nil {
		a.token = strings.TrimSpace(string(data))
	}
	// What was assigned before a restart is served again at once, control plane or not.
	if data, err := os.ReadFile(a.statePath("assignments.json")); err == nil {
		var saved struct {
			Etag        string       `json:"etag"`
			Assignments []Assignment `json:"assignments"`
		}
		if json.Unmarshal(data, &saved) == nil {
			a.desired, a.etag = saved.Assignments, saved.Etag
			a.log.Info("restored assignments", "models", len(saved.Assignments))
		}
	}
	a.capacity = DetectCapacity(ctx, a.cfg.Accelerators, a.cfg.CPU, a.cfg.Memory)
	if a.cfg.TrimEvery > 0 {
		go a.trimLoop(ctx)
	}
	var wg sync.WaitGroup
	for _, loop := range []func(context.Context){a.reconcileLoop, a.channelLoop, a.heartbeatLoop, a.figuresLoop} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			loop(ctx)
		}()
	}
	wg.Wait()
	return nil
}

// trimLoop gives memory back every TrimEvery, and at once after a reconcile pass that
// downloaded: a download's buffers and the S3 client's code are off the steady path, so
// the resident set comes back down then instead of up to a period later.
func (a *Agent) trimLoop(ctx context.Context) {
	timer := time.NewTimer(a.cfg.TrimEvery)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-a.trimNow:
		}
		// The collection first: it walks every stack and much of the binary's read-only
		// data, pages that the trim then drops.
		debug.FreeOSMemory()
		trimFilePages()
		timer.Reset(a.cfg.TrimEvery) // Go ≥ 1.23: no stale tick survives a Reset
	}
}

// trimSoon asks the trim loop (when there is one) to run now.
func (a *Agent) trimSoon() {
	select {
	case a.trimNow <- struct{}{}:
	default:
	}
}

func (a *Agent) kick() {
	select {
	case a.trigger <- struct{}{}:
	default:
	}
}

func (a *Agent) reconcileLoop(ctx context.Context) {
	ticker := time.NewTicker(a.cfg.Resync)
	defer ticker.Stop()
	for {
		a.mu.Lock()
		desired := append([]Assignment(nil), a.desired...)
		a.mu.Unlock()
		fetches := a.artifacts.Fetches()
		a.reconciler.Reconcile(ctx, desired)
		if a.artifacts.Fetches() != fetches {
			a.trimSoon()
		}
		wanted := map[string]bool{}
		for _, d := range desired {
			wanted[d.SHA256] = true
		}
		a.artifacts.GCStaging(wanted, 10*time.Minute)
		select {
		case <-ctx.Done():
			return
		case <-a.trigger:
		case <-ticker.C:
		}
	}
}

// request sends one JSON request to the control plane with this node's token, or
// with the API key instead when the agent has one: a control plane with --auth-keys lets
// the Authorization header decide, so the two are never sent together.
func (a *Agent) request(ctx context.Context, client *httpClient, method, path string, body any, token string, out any) error {
	var payload []byte
	switch body := body.(type) {
	case nil:
	case rawJSON:
		payload = body
	default:
		data, err := json.Marshal(body)
		if err != nil {
			return err
		}
		payload = data
	}
	base := a.controlPlane()
	headers := []string{"Content-Type", "application/json"}
	if a.apiKey != nil {
		key, err := a.apiKey.Key()
		if err != nil {
			// Sent without: the control plane's 401 says so, and the agent retries
			// until the file holds a key.
			a.warnOnce("no API key to send", err)
		} else {
			headers = append(headers, "X-Api-Key", key)
			a.mu.Lock()
			a.lastWarning = "" // a problem that comes back is logged again
			a.mu.Unlock()
		}
	} else if token != "" {
		headers = append(headers, "Authorization", "Bearer "+token)
	}
	status, data, err := client.Do(ctx, method, base+path, payload, 16<<20, headers...)
	if err != nil {
		a.rotate(base)
		return err
	}
	if status == http.StatusServiceUnavailable {
		a.rotate(base) // a follower replica, or one without etcd: try the next
	}
	if status == http.StatusUnauthorized || status == http.StatusNotFound {
		return fmt.Errorf("%w: HTTP %d: %s", errUnregistered, status, errorText(data))
	}
	if status >= 300 {
		return fmt.Errorf("control plane: HTTP %d: %s", status, errorText(data))
	}
	switch out := out.(type) {
	case nil:
		return nil
	case *pollAnswer:
		return out.decode(data)
	default:
		return json.Unmarshal(data, out)
	}
}

// pollAnswer is the long poll's answer, decoded without reflection (every 25 s at most).
type pollAnswer struct {
	Etag        string
	Assignments []Assignment
	Requests    []map[string]any
}

func (p *pollAnswer) decode(data []byte) error {
	doc, err := parseJSON(data)
	if err != nil {
		return fmt.Errorf("assignments: %w", err)
	}
	if doc.kind != jsonObject {
		return fmt.Errorf("assignments: expected an object, got %s", doc.kind)
	}
	if p.Etag, err = doc.str("etag"); err != nil {
		return fmt.Errorf("assignments: %w", err)
	}
	assignments, err := doc.list("assignments")
	if err != nil {
		return fmt.Errorf("assignments: %w", err)
	}
	if assignments != nil {
		p.Assignments = make([]Assignment, 0, len(assignments))
	}
	for i, item := range assignments {
		a, err := decodeAssignment(item)
		if err != nil {
			return fmt.Errorf("assignments[%d]: %w", i, err)
		}
		p.Assignments = append(p.Assignments, a)
	}
	requests, err := doc.list("requests")
	if err != nil {
		return fmt.Errorf("assignments: %w", err)
	}
	for i, item := range requests {
		request, ok := item.toAny().(map[string]any)
		if !ok {
			return fmt.Errorf("requests[%d] is %s, not an object", i, item.kind)
		}
		p.Requests = append(p.Requests, request)
	}
	return nil
}

func decodeAssignment(v jsonValue) (Assignment, error) {
	var a Assignment
	if v.kind != jsonObject {
		return a, fmt.Errorf("%s, not an object", v.kind)
	}
	var err error
	for _, field := range [...]struct {
		key    string
		target *string
	}{{"model", &a.Model}, {"uri", &a.URI}, {"sha256", &a.SHA256}, {"format", &a.Format}} {
		if *field.target, err = v.str(field.key); err != nil {
			return a, err
		}
	}
	version, err := v.integer("version")
	if err != nil {
		return a, err
	}
	if version != int64(int(version)) {
		return a, fmt.Errorf("\"version\" %d is out of range", version)
	}
	a.Version = int(version)
	if a.Size, err = v.integer("size"); err != nil {
		return a, err
	}
	return a, nil
}

// controlPlane answers the control-plane replica in use (--control-plane takes a
// comma-separated list; the agent moves to the next one when a replica fails or is a
// follower).
func (a *Agent) controlPlane() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	urls := strings.Split(a.cfg.ControlPlane, ",")
	return strings.TrimRight(strings.TrimSpace(urls[a.replica%len(urls)]), "/")
}

func (a *Agent) rotate(failed string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	urls := strings.Split(a.cfg.ControlPlane, ",")
	if len(urls) > 1 && strings.TrimRight(strings.TrimSpace(urls[a.replica%len(urls)]), "/") == failed {
		a.replica++
	}
}

// registration is the body of a registration: who the node is, what it offers and where
// the gateway reaches its server (server_grpc only when --advertise-grpc names it).
func (a *Agent) registration() map[string]any {
	body := map[string]any{
		"name":                 a.cfg.Name,
		"labels":               a.cfg.Labels,
		"capacity":             a.capacity,
		"server_url":           a.cfg.AdvertiseURL,
		"heartbeat_interval_s": a.cfg.Heartbeat.Seconds(),
		"agent_version":        agentVersion,
	}
	if a.cfg.AdvertiseGRPC != "" {
		body["server_grpc"] = a.cfg.AdvertiseGRPC
	}
	return body
}

func (a *Agent) register(ctx context.Context) error {
	body := a.registration()
	var answer struct {
		Token string `json:"token"`
	}
	a.mu.Lock()
	token := a.token
	a.mu.Unlock()
	if a.apiKey != nil {
		// The key is the credential: the answer's node token is empty.
		if err := a.request(ctx, a.http, http.MethodPost, "/v1/fleet/agent/register", body, "", &answer); err != nil {
			a.log.Warn("registration refused or failed", "error", err)
			return err
		}
		a.log.Info("registered with the control plane (API key)", "node", a.cfg.Name, "control_plane", a.cfg.ControlPlane)
		return nil
	}
	err := errUnregistered
	if token != "" {
		err = a.request(ctx, a.http, http.MethodPost, "/v1/fleet/agent/register", body, token, &answer)
	}
	if errors.Is(err, errUnregistered) && a.cfg.BootstrapToken != "" {
		err = a.request(ctx, a.http, http.MethodPost, "/v1/fleet/agent/register", body, a.cfg.BootstrapToken, &answer)
	}
	if err != nil {
		return err
	}
	if err := writeFileAtomic(a.statePath("token"), []byte(answer.Token+"\n")); err != nil {
		return err
	}
	a.mu.Lock()
	a.token = answer.Token
	a.mu.Unlock()
	a.log.Info("registered with the control plane", "node", a.cfg.Name, "control_plane", a.cfg.ControlPlane)
	return nil
}

// warnOnce logs err unless it is the one logged last (a problem that persists is
// logged once, not at every heartbeat).
func (a *Agent) warnOnce(msg string, err error) {
	a.mu.Lock()
	repeated := a.lastWarning == err.Error()
	a.lastWarning = err.Error()
	a.mu.Unlock()
	if !repeated {
		a.log.Warn(msg, "error", err)
	}
}

func (a *Agent) setOnline(online bool, err error) {
	a.mu.Lock()
	changed := a.online != online
	a.online = online
	a.mu.Unlock()
	if changed && !online {
		a.log.Warn("control plane unreachable: serving on with the last assignments", "error", err)
	} else if changed {
		a.log.Info("control plane reachable again")
	}
}

// channelLoop keeps the node registered and long-polls for assignments and requests.
func (a *Agent) channelLoop(ctx context.Context) {
	backoff := time.Second
	registered := false
	for ctx.Err() == nil {
		if !registered {
			if err := a.register(ctx); err != nil {
				a.setOnline(false, err)
				sleep(ctx, backoff)
				backoff = min(backoff*2, 10*time.Second)
				continue
			}
			registered = true
		}
		a.mu.Lock()
		etag, token := a.etag, a.token
		a.mu.Unlock()
		var answer pollAnswer
		path := "/v1/fleet/agent/" + url.PathEscape(a.cfg.Name) + "/assignments?wait_s=25&etag=" + url.QueryEscape(etag)
		err := a.request(ctx, a.poll, http.MethodGet, path, nil, token, &answer)
		if errors.Is(err, errUnregistered) {
			a.log.Warn("the control plane does not know this node; registering again", "error", err)
			registered = false
			continue
		}
		if err != nil {
			a.setOnline(false, err)
			sleep(ctx, backoff)
			backoff = min(backoff*2, 10*time.Second)
			continue
		}
		backoff = time.Second
		a.setOnline(true, nil)
		if answer.Etag != etag {
			a.accept(answer.Etag, answer.Assignments)
		}
		for _, request := range answer.Requests {
			go a.answer(ctx, request)
		}
	}
}

func (a *Agent) accept(etag string, assignments []Assignment) {
	if assignments == nil {
		assignments = []Assignment{}
	}
	data, _ := json.Marshal(map[string]any{"etag": etag, "assignments": assignments})
	if err := writeFileAtomic(a.statePath("assignments.json"), data); err != nil {
		a.log.Error("cannot save the assignments", "error", err)
	}
	a.mu.Lock()
	a.desired, a.etag = assignments, etag
	a.mu.Unlock()
	names := make([]string, 0, len(assignments))
	for _, x := range assignments {
		names = append(names, fmt.Sprintf("%s:v%d", x.Model, x.Version))
	}
	a.log.Info("new assignments", "models", strings.Join(names, " "))
	a.kick()
}

func (a *Agent) answer(ctx context.Context, request map[string]any) {
	id, _ := request["id"].(string)
	kind, _ := request["kind"].(string)
	var result any
	switch kind {
	case "logs":
		lines := 200
		if n, ok := request["lines"].(float64); ok && n > 0 {
			lines = int(n)
		}
		if a.cfg.ServerLog == "" {
			result = map[string]any{"error": "the agent was not given the server's log file (--server-log)"}
		} else if tail, err := tailLines(a.cfg.ServerLog, lines); err != nil {
			result = map[string]any{"error": err.Error()}
		} else {
			result = map[string]any{"lines": tail, "path": a.cfg.ServerLog}
		}
	case "diagnose":
		result = a.diagnose(ctx)
	default:
		result = map[string]any{"error": fmt.Sprintf("unknown request kind %q", kind)}
	}
	a.mu.Lock()
	token := a.token
	a.mu.Unlock()
	path := "/v1/fleet/agent/" + url.PathEscape(a.cfg.Name) + "/requests/" + url.PathEscape(id)
	if err := a.request(ctx, a.http, http.MethodPost, path, result, token, nil); err != nil {
		a.log.Warn("could not answer a request", "id", id, "kind", kind, "error", err)
	}
}

func (a *Agent) heartbeatLoop(ctx context.Context) {
	ticker := time.NewTicker(a.cfg.Heartbeat)
	defer ticker.Stop()
	path := "/v1/fleet/agent/" + url.PathEscape(a.cfg.Name) + "/heartbeat"
	var body []byte   // reused: a heartbeat a second allocates next to nothing
	var keys []string // the metrics' names, sorted
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		a.mu.Lock()
		token := a.token
		metrics, stats, disk := a.metrics, a.stats, a.disk
		a.mu.Unlock()
		if token == "" && a.apiKey == nil {
			continue // not registered yet: channelLoop is on it
		}
		live, ready := a.server.Health(ctx)
		events := a.reconciler.TakeEvents()
		h := heartbeat{
			Live: live, Ready: ready, Models: a.reconciler.Status(), Metrics: metrics,
			Disk: disk, Events: events, Stats: stats,
		}
		body, keys = appendHeartbeat(body[:0], &h, keys)
		// The answer (an etag) is not needed: assignments come over the long poll.
		err := a.request(ctx, a.http, http.MethodPost, path, rawJSON(body), token, nil)
		if cap(body) > 64<<10 {
			body = nil // a burst of events: not kept
		}
		if err != nil {
			a.reconciler.Restore(events) // buffered until the control plane is back
			if !errors.Is(err, errUnregistered) {
				a.setOnline(false, err)
			}
			continue
		}
		a.setOnline(true, nil)
	}
}

// figuresLoop refreshes the slower figures (server metrics, per-version request
// statistics, disk usage) off the heartbeat's path.
func (a *Agent) figuresLoop(ctx context.Context) {
	for {
		metrics, err := a.server.Metrics(ctx)
		if err != nil {
			metrics = nil
		} else {
			metrics["agent_rss_bytes"] = float64(selfRSS())
		}
		stats, err := a.server.Stats(ctx)
		if err != nil {
			stats = nil // left out of the heartbeat rather than reported as zeros
		}
		disk := diskUsage(a.cfg.Repository, VersionsDir(a.cfg.Repository))
		a.mu.Lock()
		a.metrics, a.stats, a.disk = metrics, stats, disk
		a.mu.Unlock()
		if !sleep(ctx, a.cfg.FiguresEvery) {
			return
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
