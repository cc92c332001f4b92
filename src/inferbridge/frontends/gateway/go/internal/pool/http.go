package pool

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/inferbridge/inferbridge/gateway/internal/frontend"
	"github.com/inferbridge/inferbridge/gateway/internal/retry"
)

// REST in pool mode (the front end terminates it, package frontend): the gateway
// answers health, the repository index, /metrics and its admin endpoint itself, and
// forwards the rest to an upstream chosen by model (or any upstream for requests that
// name none).

// hopHeaders are not forwarded (RFC 9110 §7.6.1).
var hopHeaders = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Connection": true, "Proxy-Authenticate": true,
	"Proxy-Authorization": true, "Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// writeJSONError writes the front end's error reply {"error": msg}.
func writeJSONError(w http.ResponseWriter, code int, msg string, retryAfter bool) {
	frontend.WriteError(w, code, frontend.ErrorBody(msg), retryAfter)
}

// statusWriter remembers the status written, for the metrics.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// ServeREST answers a REST request the front end has routed and authorized
// (frontend.Backend); it returns the status written (StatusClientGone for none).
func (p *Pool) ServeREST(w http.ResponseWriter, r *http.Request, req frontend.Request) (int, int) {
	sw := &statusWriter{ResponseWriter: w}
	p.serveHTTP(sw, r, req.Path)
	if sw.code == 0 {
		return statusClientGone, 0
	}
	return sw.code, 0
}

// RESTStarted and RESTDone record every REST request (frontend.Observer).
func (p *Pool) RESTStarted() {}

func (p *Pool) RESTDone(_ frontend.Route, status, _ int, start time.Time) {
	p.metrics.done(protoHTTP, status, time.Since(start))
}

const statusClientGone = frontend.StatusClientGone

// serveHTTP answers health, the repository index, /metrics and the admin endpoint
// itself, and forwards the rest to an upstream chosen by the model its path names (or
// any upstream for requests that name none).
func (p *Pool) serveHTTP(w http.ResponseWriter, r *http.Request, route frontend.Path) {
	path := strings.TrimRight(r.URL.Path, "/")
	switch path {
	case "/v2/health/live":
		w.WriteHeader(http.StatusOK)
		return
	case "/v2/health/ready":
		if p.ready() {
			w.WriteHeader(http.StatusOK)
		} else {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		return
	case "/metrics":
		p.metricsHandler.ServeHTTP(w, r)
		return
	case "/v1/gateway/upstreams":
		p.serveAdmin(w, r)
		return
	case "/v2/repository/index":
		if r.Method == http.MethodPost {
			p.serveIndex(w, r)
			return
		}
	}
	if strings.HasPrefix(path, "/v2/repository/models/") && r.Method == http.MethodPost {
		p.serveRepositoryControl(w, r)
		return
	}

	model, version := route.Model, route.Version
	infer := route.Route.IsInfer() || route.Route == frontend.RouteV1Predict
	if r.ContentLength > int64(p.cfg.MaxRequestBytes) {
		p.metrics.rejected.WithLabelValues("http", model, "too_large").Inc()
		writeJSONError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body of %d bytes is over the limit of %d bytes",
			r.ContentLength, p.cfg.MaxRequestBytes), false)
		return
	}
	body, err := readBody(r, p.cfg.MaxRequestBytes)
	if err != nil {
		if status, _ := frontend.UnreadableBody(w, r, err, len(body)); status == statusClientGone {
			panic(http.ErrAbortHandler) // the connection failed: close it without an answer
		}
		return
	}
	if len(body) > p.cfg.MaxRequestBytes {
		p.metrics.rejected.WithLabelValues("http", model, "too_large").Inc()
		writeJSONError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is over the limit of %d bytes", p.cfg.MaxRequestBytes), false)
		return
	}

	snap := p.snap.Load()
	if model != "" && snap.lookup(model, "") == nil {
		p.metrics.rejected.WithLabelValues("http", "", "unknown_model").Inc()
		writeJSONError(w, http.StatusNotFound, fmt.Sprintf("model '%s' is not served by any upstream", model), false)
		return
	}
	if model != "" && version != "" && snap.lookup(model, version) == nil {
		p.metrics.rejected.WithLabelValues("http", "", "unknown_model").Inc()
		writeJSONError(w, http.StatusNotFound, fmt.Sprintf("model '%s' version %s is not served by any upstream", model, version), false)
		return
	}
	if infer {
		release, refused := p.limits.admit(model)
		if refused != "" {
			p.metrics.rejected.WithLabelValues("http", model, refused).Inc()
			writeJSONError(w, http.StatusTooManyRequests, fmt.Sprintf("gateway is at its in-flight limit for model '%s'; retry later", model), true)
			return
		}
		defer release()
	}

	// The deadline: the client's `timeout` parameter (OIP infer requests), else the default.
	infer = route.Route.IsInfer()
	jsonPart, binaryHeader := body, false
	timeout := p.cfg.Timeouts.Default
	if infer {
		if h := r.Header.Get("Inference-Header-Content-Length"); h != "" {
			if n, err := strconv.Atoi(h); err == nil && n >= 0 && n <= len(body) {
				jsonPart, binaryHeader = body[:n], true
			}
		}
		if us := timeoutParam(jsonPart); us > 0 {
			timeout = time.Duration(us) * time.Microsecond
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	ctx = p.traceFromHTTP(ctx, r.Header)

	var key string
	if p.cfg.Balancer.HashKey != "" {
		key = r.Header.Get(p.cfg.Balancer.HashKey)
	}

	if infer {
		rt := snap.lookup(model, version)
		if rt != nil && len(rt.grpc.ups) > 0 && (len(rt.rest.ups) == 0 || p.batchers[model] != nil) {
			p.translateInfer(ctx, w, r, model, version, body, len(jsonPart), deadline, key)
			return
		}
	}
	pickGroup := func(s *snapshot) (*group, errNoRoute) {
		rt := s.lookup(model, version)
		if rt == nil {
			return nil, routeNone
		}
		return &rt.rest, 0
	}
	resp, refusal := forward(ctx, p, p.spanName(r), pickGroup, key, deadline,
		func(ctx context.Context, u *upstream, try int) (*http.Response, attemptResult) {
			resp, res := p.attemptHTTP(ctx, u, r, body, jsonPart, binaryHeader, infer, deadline)
			if resp != nil {
				res.status = resp.StatusCode
			}
			return resp, res
		},
		func(resp *http.Response) {
			if resp != nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	switch {
	case refusal == routeNone:
		writeJSONError(w, http.StatusNotFound, fmt.Sprintf("model '%s' is not served by any upstream", model), false)
		return
	case resp == nil && r.Context().Err() != nil:
		return // the client went away
	case resp == nil && ctx.Err() == context.DeadlineExceeded:
		writeJSONError(w, http.StatusGatewayTimeout, "deadline exceeded before an upstream answered", false)
		return
	case resp == nil:
		p.metrics.rejected.WithLabelValues("http", model, "no_upstream").Inc()
		what := "no upstream is available"
		if model != "" {
			what = fmt.Sprintf("no upstream serving model '%s' is available", model)
		}
		writeJSONError(w, http.StatusServiceUnavailable, what, true)
		return
	}
	defer resp.Body.Close()
	h := w.Header()
	for name, values := range resp.Header {
		if !hopHeaders[name] {
			h[name] = values
		}
	}
	w.WriteHeader(resp.StatusCode)
	bp := copyBufs.Get().(*[]byte)
	io.CopyBuffer(w, resp.Body, *bp)
	copyBufs.Put(bp)
}

// attemptHTTP sends one attempt to u. A response is returned for every status (the
// caller writes it or, when retried, discards it); nil when no response came.
func (p *Pool) attemptHTTP(ctx context.Context, u *upstream, r *http.Request, body, jsonPart []byte,
	binaryHeader, infer bool, deadline time.Time) (*http.Response, attemptResult) {
	out := body
	var headerLen string
	if infer { // pass the time left on as the OIP timeout parameter
		left := time.Until(deadline)
		if left < time.Microsecond {
			left = time.Microsecond
		}
		newJSON := withTimeout(jsonPart, int64(left/time.Microsecond))
		if binaryHeader {
			out = make([]byte, 0, len(newJSON)+len(body)-len(jsonPart))
			out = append(append(out, newJSON...), body[len(jsonPart):]...)
			headerLen = strconv.Itoa(len(newJSON))
		} else {
			out = newJSON
		}
	}
	var fields [6]h1Field
	extra := fields[:0]
	xff := clientIP(r)
	if prev := r.Header.Get("X-Forwarded-For"); prev != "" {
		xff = prev + ", " + xff
	}
	extra = append(extra, h1Field{"X-Forwarded-For", xff})
	if headerLen != "" {
		extra = append(extra, h1Field{"Inference-Header-Content-Length", headerLen})
	}
	var omit []string
	if u.cfg.APIKey != "" { // u's key in place of the client's credentials
		omit = credentialFields
		extra = append(extra, h1Field{"X-Api-Key", u.cfg.APIKey})
	}
	if p.tracing != nil {
		h := http.Header{}
		p.traceToHTTP(ctx, h)
		for name, values := range h {
			extra = append(extra, h1Field{name, values[0]})
		}
	}
	resp, err := u.rest.do(ctx, &h1Request{method: r.Method, target: requestTarget(r), header: r.Header,
		omit: omit, extra: extra, body: out})
	if err != nil {
		if ctx.Err() != nil {
			return nil, attemptResult{neutral: true, label: "cancelled"}
		}
		if _, ok := errors.AsType[*h1ConnectError](err); ok { // nothing reached the upstream
			return nil, attemptResult{reason: retry.ConnectFailure, failed: true, fast: true, label: "connect_failure"}
		}
		return nil, attemptResult{reason: retry.Reset, failed: true, fast: true, label: "reset"}
	}
	switch code := resp.StatusCode; {
	case code == http.StatusServiceUnavailable:
		return resp, attemptResult{reason: retry.Status503, failed: true, fast: true, label: "503"}
	case code == http.StatusTooManyRequests:
		res := attemptResult{fast: true, label: "429"}
		if resp.Header.Get("Retry-After") != "" {
			res.reason = retry.Status429
		}
		return resp, res
	case code >= 500 && code != http.StatusGatewayTimeout:
		return resp, attemptResult{failed: true, label: "5xx"}
	case code == http.StatusGatewayTimeout:
		return resp, attemptResult{neutral: true, label: "504"}
	}
	return resp, attemptResult{label: "ok"}
}

// readBody reads a request body whole: exactly Content-Length bytes when given, else up
// to limit+1 (so that the caller sees a body over the limit).
func readBody(r *http.Request, limit int) ([]byte, error) {
	if r.ContentLength == 0 {
		return nil, nil
	}
	if r.ContentLength > 0 {
		body := make([]byte, r.ContentLength)
		n, err := io.ReadFull(r.Body, body)
		return body[:n], err
	}
	return io.ReadAll(io.LimitReader(r.Body, int64(limit)+1))
}

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func (p *Pool) ready() bool {
	all := p.snap.Load().all
	return len(all.rest.ups) > 0 || len(all.grpc.ups) > 0
}

// serveIndex answers POST /v2/repository/index from the gateway's view: every model
// version some upstream serves, READY.
func (p *Pool) serveIndex(w http.ResponseWriter, _ *http.Request) {
	type entry struct {
		Name    string `json:"name"`
		Version string `json:"version,omitempty"`
		State   string `json:"state"`
	}
	out := []entry{}
	for _, e := range p.indexEntries() {
		out = append(out, entry{Name: e.Name, Version: e.Version, State: "READY"})
	}
	body, _ := json.Marshal(out)
	w.Header().Set("Content-Type", "application/json")
	w.Write(body)
}

// indexEntries lists (model, version) served by some upstream, sorted.
func (p *Pool) indexEntries() []indexEntry {
	s := p.snap.Load()
	var out []indexEntry
	for _, name := range s.modelNames() {
		seen := map[string]bool{}
		for _, u := range s.ups {
			for _, v := range (*u.models.Load())[name] {
				if !seen[v] {
					seen[v] = true
					out = append(out, indexEntry{Name: name, Version: v})
				}
			}
		}
	}
	return out
}

// serveRepositoryControl applies POST /v2/repository/models/{m}/load|unload to every
// REST upstream in rotation; it answers the first failure, or the last success.
func (p *Pool) serveRepositoryControl(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, int64(p.cfg.MaxRequestBytes)))
	if err != nil {
		return
	}
	ups := p.snap.Load().all.rest.ups
	if len(ups) == 0 {
		writeJSONError(w, http.StatusServiceUnavailable, "no upstream is available", true)
		return
	}
	var last *http.Response
	var lastBody []byte
	for _, u := range ups {
		req, err := http.NewRequestWithContext(r.Context(), http.MethodPost, u.cfg.REST+r.URL.EscapedPath(), bytes.NewReader(body))
		if err != nil {
			continue
		}
		req.Header.Set("Content-Type", "application/json")
		for name, values := range clientCredentialsMD(r.Header) {
			req.Header[http.CanonicalHeaderKey(name)] = values
		}
		u.setHTTPCredentials(req.Header)
		resp, err := u.http.Do(req)
		if err != nil {
			writeJSONError(w, http.StatusBadGateway, fmt.Sprintf("upstream %s: %v", u.cfg.Name, err), false)
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		last, lastBody = resp, b
		if resp.StatusCode != http.StatusOK {
			break
		}
	}
	p.discoverAll() // so that the next request routes by the new model set
	if last == nil {
		writeJSONError(w, http.StatusServiceUnavailable, "no upstream is available", true)
		return
	}
	if ct := last.Header.Get("Content-Type"); ct != "" {
		w.Header().Set("Content-Type", ct)
	}
	w.WriteHeader(last.StatusCode)
	w.Write(lastBody)
}
