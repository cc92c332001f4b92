package pool

import (
	"encoding/json"
	"net/http"
	"sort"
	"time"
)

// UpstreamStatus is one entry of GET /v1/gateway/upstreams.
type UpstreamStatus struct {
	Name           string              `json:"name"`
	REST           string              `json:"rest,omitempty"`
	GRPC           string              `json:"grpc,omitempty"`
	Healthy        bool                `json:"healthy"`
	Ejected        bool                `json:"ejected"`
	EjectedUntil   string              `json:"ejected_until,omitempty"`
	Ejections      int                 `json:"ejections"`
	Breaker        string              `json:"breaker"`
	Routable       bool                `json:"routable"`
	EWMAMillis     float64             `json:"ewma_latency_ms"`
	Outstanding    int64               `json:"outstanding"`
	Models         map[string][]string `json:"models"`
	DiscoveryError string              `json:"discovery_error,omitempty"`
	// Source: "fleet" when the fleet routing table named it (and says what it serves)
	Source string `json:"source,omitempty"`
}

// Status lists the upstreams as the admin endpoint shows them.
func (p *Pool) Status() []UpstreamStatus {
	out := []UpstreamStatus{} // an empty pool is [] in the JSON, not null
	for _, u := range p.upstreams() {
		st := UpstreamStatus{
			Name: u.cfg.Name, REST: u.cfg.REST, GRPC: u.cfg.GRPC,
			Healthy: u.healthy.Load(), Ejected: u.passive.Ejected(), Ejections: u.passive.Times(p.ejector),
			Breaker: u.breaker.State().String(), Routable: u.routable(),
			EWMAMillis:  float64(u.load.EWMA()) / float64(time.Millisecond),
			Outstanding: u.load.Outstanding(),
			Models:      map[string][]string{},
		}
		if until := u.passive.Until(p.ejector); !until.IsZero() {
			st.EjectedUntil = until.UTC().Format(time.RFC3339Nano)
		}
		for name, versions := range *u.models.Load() {
			vs := append([]string{}, versions...)
			sort.Strings(vs)
			st.Models[name] = vs
		}
		if e := u.discoveryErr.Load(); e != nil {
			st.DiscoveryError = *e
		}
		if u.fromFleet {
			st.Source = "fleet"
		}
		out = append(out, st)
	}
	return out
}

func (p *Pool) serveAdmin(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		writeJSONError(w, http.StatusMethodNotAllowed, "GET only", false)
		return
	}
	body, _ := json.MarshalIndent(map[string]any{
		"balancer":  string(p.cfg.Balancer.Policy),
		"upstreams": p.Status(),
		"retries": map[string]int64{
			"requests_in_flight": p.budget.Active(),
			"retries_in_flight":  p.budget.Retries(),
		},
	}, "", "  ")
	w.Header().Set("Content-Type", "application/json")
	w.Write(append(body, '\n'))
}
