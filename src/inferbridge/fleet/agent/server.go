package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Served is what the local server says about one model: the versions it serves and the
// reason of a version that failed.
type Served struct {
	Ready   []int          // versions READY, ascending
	Loading []int          // versions LOADING
	Failed  map[int]string // version -> reason (UNAVAILABLE with a reason other than "not loaded")
	States  map[int]string // version -> state, as reported
}

// ReadyAt tells whether `version` is among the served versions.
func (s Served) ReadyAt(version int) bool {
	for _, v := range s.Ready {
		if v == version {
			return true
		}
	}
	return false
}

// Server is the local inferbridge server as the reconciler needs it.
type Server interface {
	Index(ctx context.Context) (map[string]Served, error)
	Load(ctx context.Context, model string) error
	Unload(ctx context.Context, model string) error
}

// HTTPServer talks to the node's inferbridge server over its REST API.
type HTTPServer struct {
	Base   string
	Client *httpClient
}

func (s *HTTPServer) post(ctx context.Context, path string, body []byte) ([]byte, int, error) {
	status, data, err := s.Client.Do(ctx, http.MethodPost, s.Base+path, body, 4<<20, "Content-Type", "application/json")
	return data, status, err
}

func (s *HTTPServer) get(ctx context.Context, path string, limit int) ([]byte, int, error) {
	status, data, err := s.Client.Do(ctx, http.MethodGet, s.Base+path, nil, limit)
	return data, status, err
}

type indexEntry struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	State   string `json:"state"`
	Reason  string `json:"reason"`
}

// Index reads the server's repository index.
func (s *HTTPServer) Index(ctx context.Context) (map[string]Served, error) {
	data, status, err := s.post(ctx, "/v2/repository/index", []byte("{}"))
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("repository index: HTTP %d: %s", status, errorText(data))
	}
	entries, err := decodeIndex(data)
	if err != nil {
		return nil, fmt.Errorf("repository index: %w", err)
	}
	return parseIndex(entries), nil
}

// decodeIndex reads the index's array of {name, version, state, reason}.
func decodeIndex(data []byte) ([]indexEntry, error) {
	doc, err := parseJSON(data)
	if err != nil {
		return nil, err
	}
	if doc.kind != jsonArray {
		return nil, fmt.Errorf("expected an array, got %s", doc.kind)
	}
	entries := make([]indexEntry, 0, len(doc.items))
	for _, item := range doc.items {
		if item.kind != jsonObject {
			return nil, fmt.Errorf("an entry is %s, not an object", item.kind)
		}
		var e indexEntry
		for _, field := range [...]struct {
			key    string
			target *string
		}{{"name", &e.Name}, {"version", &e.Version}, {"state", &e.State}, {"reason", &e.Reason}} {
			if *field.target, err = item.str(field.key); err != nil {
				return nil, err
			}
		}
		entries = append(entries, e)
	}
	return entries, nil
}

func parseIndex(entries []indexEntry) map[string]Served {
	out := map[string]Served{}
	for _, e := range entries {
		served := out[e.Name]
		if served.Failed == nil {
			served.Failed = map[int]string{}
			served.States = map[int]string{}
		}
		version, err := strconv.Atoi(e.Version)
		if err != nil {
			out[e.Name] = served
			continue
		}
		served.States[version] = e.State
		switch e.State {
		case "READY":
			served.Ready = append(served.Ready, version)
		case "LOADING":
			served.Loading = append(served.Loading, version)
		case "UNAVAILABLE":
			if e.Reason != "" && e.Reason != "not loaded" && e.Reason != "unloaded" {
				served.Failed[version] = e.Reason
			}
		}
		slices.Sort(served.Ready)
		out[e.Name] = served
	}
	return out
}

// Load asks the server to load (or reload) a model from its repository directory.
func (s *HTTPServer) Load(ctx context.Context, model string) error {
	data, status, err := s.post(ctx, "/v2/repository/models/"+url.PathEscape(model)+"/load", []byte("{}"))
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return fmt.Errorf("load %s: HTTP %d: %s", model, status, errorText(data))
	}
	return nil
}

// Unload asks the server to drain and unload a model.
func (s *HTTPServer) Unload(ctx context.Context, model string) error {
	data, status, err := s.post(ctx, "/v2/repository/models/"+url.PathEscape(model)+"/unload", []byte("{}"))
	if err != nil {
		return err
	}
	if status != http.StatusOK && status != http.StatusNotFound {
		return fmt.Errorf("unload %s: HTTP %d: %s", model, status, errorText(data))
	}
	return nil
}

// Health answers the server's liveness and readiness.
func (s *HTTPServer) Health(ctx context.Context) (live, ready bool) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, status, err := s.get(ctx, "/v2/health/live", 1024); err == nil && status == http.StatusOK {
		live = true
	}
	if _, status, err := s.get(ctx, "/v2/health/ready", 1024); err == nil && status == http.StatusOK {
		ready = true
	}
	return live, ready
}

// metricNames are the series summed into the heartbeat's figures.
var metricNames = map[string]string{
	"inferbridge_request_success":         "requests_ok",
	"inferbridge_request_success_total":   "requests_ok",
	"inferbridge_request_failure":         "requests_failed",
	"inferbridge_request_failure_total":   "requests_failed",
	"inferbridge_inflight_requests":       "inflight",
	"inferbridge_pending_requests":        "pending",
	"inferbridge_inference_count":         "inferences",
	"inferbridge_inference_count_total":   "inferences",
	"process_resident_memory_bytes":       "server_rss_bytes",
	"process_cpu_seconds_total":           "server_cpu_seconds",
	"inferbridge_frontend_rejected_total": "rejected",
}

// Metrics sums a few series of the server's /metrics, read as it arrives: the page is a
// few hundred kilobytes with 20 models (every histogram bucket), read every few seconds,
// and holding it whole was most of what the agent allocated.
func (s *HTTPServer) Metrics(ctx context.Context) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	var out map[string]float64
	err := s.Client.Stream(ctx, http.MethodGet, s.Base+"/metrics", func(status int, body io.Reader) error {
		if status != http.StatusOK {
			return fmt.Errorf("metrics: HTTP %d", status)
		}
		var err error
		out, err = parseMetrics(body)
		return err
	})
	return out, err
}

// maxMetricsLine bounds one line of /metrics (a series with its labels).
const maxMetricsLine = 64 << 10

func parseMetrics(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	lines := lineReader{r: r, buf: make([]byte, 4096), max: maxMetricsLine, lastLine: true}
	for {
		line, err := lines.line()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		name := line
		if i := bytes.IndexAny(line, "{ "); i >= 0 {
			name = line[:i]
		}
		key, ok := metricNames[string(name)]
		if !ok {
			continue
		}
		rest := line[len(name):]
		if len(rest) > 0 && rest[0] == '{' {
			rest = rest[bytes.LastIndexByte(rest, '}')+1:]
		}
		rest = bytes.TrimLeft(rest, " \t")
		if i := bytes.IndexAny(rest, " \t"); i >= 0 {
			rest = rest[:i] // a timestamp may follow the value
		}
		if len(rest) == 0 {
			continue
		}
		if value, err := strconv.ParseFloat(string(rest), 64); err == nil {
			out[key] += value
		}
	}
}

func errorText(data []byte) string {
	var body struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(data, &body) == nil && body.Error != "" {
		return body.Error
	}
	if len(data) > 300 {
		data = data[:300]
	}
	return strings.TrimSpace(string(data))
}
