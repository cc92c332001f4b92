package pool

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// Discovery: every upstream's repository index (REST POST /v2/repository/index, else
// gRPC RepositoryIndex) says which models and versions it serves; only READY entries
// count. An upstream that cannot be asked keeps what it served last, so that a
// restarting upstream is unhealthy (503) rather than unknown (404).

const (
	methodRepositoryIndex = "/inference.GRPCInferenceService/RepositoryIndex"
	methodServerReady     = "/inference.GRPCInferenceService/ServerReady"
)

type indexEntry struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	State   string `json:"state"`
}

func (p *Pool) discoverAll() {
	var wg sync.WaitGroup
	for _, u := range p.upstreams() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.discover(u)
		}()
	}
	wg.Wait()
}

func (p *Pool) discover(u *upstream) {
	if u.fromFleet {
		return // the routing table says what it serves
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.Discovery.Timeout)
	defer cancel()
	var entries []indexEntry
	var err error
	if u.http != nil {
		entries, err = indexREST(ctx, u)
	} else {
		entries, err = indexGRPC(ctx, u)
	}
	if err != nil {
		msg := err.Error()
		if prev := u.discoveryErr.Swap(&msg); prev == nil || *prev != msg {
			p.logf("upstream %s: discovery: %v", u.cfg.Name, err)
		}
		u.m.discoveryErrors.Inc()
		return
	}
	u.discoveryErr.Store(nil)
	models := map[string][]string{}
	for _, e := range entries {
		if e.State != "" && e.State != "READY" {
			continue
		}
		if !slices.Contains(models[e.Name], e.Version) {
			models[e.Name] = append(models[e.Name], e.Version)
		}
	}
	if !sameModels(*u.models.Load(), models) {
		u.models.Store(&models)
		p.rebuild()
	}
}

func sameModels(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, va := range a {
		vb, ok := b[k]
		if !ok || len(va) != len(vb) {
			return false
		}
		for _, v := range va {
			if !slices.Contains(vb, v) {
				return false
			}
		}
	}
	return true
}

func indexREST(ctx context.Context, u *upstream) ([]indexEntry, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.cfg.REST+"/v2/repository/index",
		bytes.NewReader([]byte(`{"ready": true}`)))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	u.setHTTPCredentials(req.Header)
	resp, err := u.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("POST /v2/repository/index answered %d", resp.StatusCode)
	}
	var entries []indexEntry
	if err := json.Unmarshal(body, &entries); err != nil {
		var wrapped struct {
			Models []indexEntry `json:"models"`
		}
		if err2 := json.Unmarshal(body, &wrapped); err2 != nil {
			return nil, fmt.Errorf("POST /v2/repository/index: not a list of models: %v", err)
		}
		entries = wrapped.Models
	}
	return entries, nil
}

func indexGRPC(ctx context.Context, u *upstream) ([]indexEntry, error) {
	// RepositoryIndexRequest{ready: true}: field 2, varint 1.
	req := &rawMsg{Data: mem.BufferSlice{mem.SliceBuffer([]byte{0x10, 0x01})}}
	var resp rawMsg
	if err := u.conn.Invoke(u.grpcContext(ctx), methodRepositoryIndex, req, &resp); err != nil {
		return nil, err
	}
	b := resp.Data.Materialize()
	resp.Data.Free()
	return parseIndexResponse(b)
}

// parseIndexResponse decodes RepositoryIndexResponse{repeated ModelIndex models = 1},
// ModelIndex{name = 1, version = 2, state = 3, reason = 4}.
func parseIndexResponse(b []byte) ([]indexEntry, error) {
	var out []indexEntry
	bad := fmt.Errorf("malformed RepositoryIndexResponse")
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, bad
		}
		b = b[n:]
		if num != 1 || typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return nil, bad
			}
			b = b[n:]
			continue
		}
		m, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return nil, bad
		}
		b = b[n:]
		var e indexEntry
		for len(m) > 0 {
			fnum, ftyp, k := protowire.ConsumeTag(m)
			if k < 0 {
				return nil, bad
			}
			m = m[k:]
			if ftyp == protowire.BytesType {
				v, k := protowire.ConsumeBytes(m)
				if k < 0 {
					return nil, bad
				}
				m = m[k:]
				switch fnum {
				case 1:
					e.Name = string(v)
				case 2:
					e.Version = string(v)
				case 3:
					e.State = string(v)
				}
				continue
			}
			if k = protowire.ConsumeFieldValue(fnum, ftyp, m); k < 0 {
				return nil, bad
			}
			m = m[k:]
		}
		out = append(out, e)
	}
	return out, nil
}

// Active health checks: REST GET /v2/health/ready (200 = ready), else gRPC ServerReady.

func (p *Pool) checkAll() {
	var wg sync.WaitGroup
	changed := false
	var mu sync.Mutex
	for _, u := range p.upstreams() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok := p.probe(u)
			if u.healthTracker.Observe(ok) {
				u.healthy.Store(u.healthTracker.Healthy())
				v := 0.0
				if u.healthTracker.Healthy() {
					v = 1
				}
				u.m.healthy.Set(v)
				p.logf("upstream %s: healthy=%v", u.cfg.Name, u.healthTracker.Healthy())
				mu.Lock()
				changed = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if changed {
		p.rebuild()
	}
}

func (p *Pool) probe(u *upstream) bool {
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.Health.Timeout)
	defer cancel()
	if u.http != nil {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.cfg.REST+"/v2/health/ready", nil)
		if err != nil {
			return false
		}
		u.setHTTPCredentials(req.Header)
		resp, err := u.http.Do(req)
		if err != nil {
			return false
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	var resp rawMsg
	if err := u.conn.Invoke(u.grpcContext(ctx), methodServerReady, &rawMsg{}, &resp); err != nil {
		return false
	}
	b := resp.Data.Materialize()
	resp.Data.Free()
	// ServerReadyResponse{ready = 1}: true is 0x08 0x01.
	return len(b) >= 2 && b[0] == 0x08 && b[1] == 0x01
}
