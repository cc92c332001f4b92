package pool

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/inferbridge/inferbridge/gateway/internal/config"
)

// The fleet control plane as a source of upstreams: its routing table
// (GET /v1/fleet/routing) names, per model, the nodes serving it, each with its version
// and its server's addresses (REST `url`, and `grpc` HOST:PORT when the node registered
// one). Every node of the table becomes an upstream named after the node, reached at
// those addresses, serving what the table says (no repository-index discovery for it);
// a node without a usable gRPC address is REST only. A node that
// leaves the table (NotReady, or nothing READY on it) leaves the pool; a table that
// cannot be read leaves the last one in place.

// fleetTable is the routing table's JSON.
type fleetTable struct {
	Models map[string][]struct {
		Node    string          `json:"node"`
		Version json.RawMessage `json:"version"`
		URL     string          `json:"url"`
		GRPC    string          `json:"grpc"`
	} `json:"models"`
}

// fleetUpstreams reads the routing table from the first control plane that answers it,
// and turns it into upstreams; problems with single nodes are returned as notes.
func (p *Pool) fleetUpstreams(ctx context.Context) ([]config.Upstream, []string, error) {
	f := p.cfg.Fleet
	var errs []string
	for _, base := range f.ControlPlanes {
		table, err := p.readFleetTable(ctx, base)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		ups, notes := p.tableUpstreams(table)
		return ups, notes, nil
	}
	return nil, nil, fmt.Errorf("%s", strings.Join(errs, "; "))
}

func (p *Pool) readFleetTable(ctx context.Context, base string) (*fleetTable, error) {
	f := p.cfg.Fleet
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/fleet/routing", nil)
	if err != nil {
		return nil, err
	}
	// Read the credential files each round, so that a rotated key is used at once; an
	// unreadable file keeps the key read before.
	if key := rereadSecret(f.APIKeyFile, f.APIKey); key != "" {
		req.Header.Set("X-Api-Key", key)
	} else if token := rereadSecret(f.TokenFile, f.Token); token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := p.fleetClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s/v1/fleet/routing: %v", base, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("GET %s/v1/fleet/routing: reading the answer: %v", base, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s/v1/fleet/routing answered %d: %s", base, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	var table fleetTable
	if err := json.Unmarshal(body, &table); err != nil || table.Models == nil {
		return nil, fmt.Errorf("GET %s/v1/fleet/routing: not a routing table ({\"models\": {model: [{node, version, url}]}}): %.200s",
			base, body)
	}
	return &table, nil
}

func rereadSecret(path, last string) string {
	if path == "" {
		return last
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return last
	}
	if s := strings.TrimSpace(string(data)); s != "" && !strings.ContainsAny(s, "\r\n") {
		return s
	}
	return last
}

// tableUpstreams makes one upstream per node of table, sorted by name.
func (p *Pool) tableUpstreams(table *fleetTable) ([]config.Upstream, []string) {
	type node struct {
		url, grpc string
		models    map[string][]string
	}
	nodes := map[string]*node{}
	var notes []string
	for model, entries := range table.Models {
		for _, e := range entries {
			if e.Node == "" || e.URL == "" {
				notes = append(notes, fmt.Sprintf("model %s: an entry without node or url (%q, %q) skipped", model, e.Node, e.URL))
				continue
			}
			version := versionString(e.Version)
			n := nodes[e.Node]
			if n == nil {
				n = &node{url: e.URL, models: map[string][]string{}}
				if err := checkGRPCAddress(e.GRPC); err != nil {
					notes = append(notes, fmt.Sprintf("node %s: grpc %q: %v; REST only", e.Node, e.GRPC, err))
				} else {
					n.grpc = e.GRPC
				}
				nodes[e.Node] = n
			} else {
				if n.url != e.URL {
					notes = append(notes, fmt.Sprintf("node %s: two urls (%s, %s); the first kept", e.Node, n.url, e.URL))
				}
				if e.GRPC != n.grpc && checkGRPCAddress(e.GRPC) == nil {
					notes = append(notes, fmt.Sprintf("node %s: two grpc addresses (%q, %q); the first kept", e.Node, n.grpc, e.GRPC))
				}
			}
			n.models[model] = append(n.models[model], version)
		}
	}
	names := make([]string, 0, len(nodes))
	for name := range nodes {
		names = append(names, name)
	}
	sort.Strings(names)
	ups := make([]config.Upstream, 0, len(names))
	for _, name := range names {
		u, err := p.cfg.FleetUpstream(name, nodes[name].url, nodes[name].models)
		if err != nil {
			notes = append(notes, err.Error()+"; skipped")
			continue
		}
		u.GRPC = nodes[name].grpc
		ups = append(ups, u)
	}
	return ups, notes
}

// checkGRPCAddress accepts "" (none) and HOST:PORT with a port 1-65535, as the control
// plane validates it at registration (a table from elsewhere is checked again).
func checkGRPCAddress(addr string) error {
	if addr == "" {
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("not HOST:PORT: %v", err)
	}
	if host == "" || strings.ContainsAny(host, "/ ") {
		return fmt.Errorf("not HOST:PORT: the host %q", host)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("not HOST:PORT: the port %q is not 1-65535", port)
	}
	return nil
}

// versionString is the table's version (a number; a string is taken as it is) as the
// repository index writes it; none = "" (any version).
func versionString(raw json.RawMessage) string {
	var n json.Number
	if err := json.Unmarshal(raw, &n); err == nil {
		if i, err := strconv.ParseInt(n.String(), 10, 64); err == nil {
			return strconv.FormatInt(i, 10)
		}
		return n.String()
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s
	}
	return ""
}

// refreshFleet reads the routing table and applies it when it changed. A table that
// cannot be read is logged once per distinct failure and the last one stays.
func (p *Pool) refreshFleet() {
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.Fleet.Timeout)
	defer cancel()
	ups, notes, err := p.fleetUpstreams(ctx)
	p.sourcesMu.Lock()
	defer p.sourcesMu.Unlock()
	if err != nil {
		p.metrics.fleetReads.WithLabelValues("error").Inc()
		if msg := err.Error(); msg != p.fleetErr {
			p.fleetErr = msg
			p.logf("fleet: routing table not read, keeping the last one (%d nodes): %s", len(p.fleetUps), msg)
		}
		return
	}
	p.metrics.fleetReads.WithLabelValues("ok").Inc()
	if p.fleetErr != "" {
		p.logf("fleet: routing table read again")
		p.fleetErr = ""
	}
	if (p.fleetApplied && sameUpstreams(p.fleetUps, ups)) || (p.fleetRejected != nil && sameUpstreams(*p.fleetRejected, ups)) {
		return // nothing new (or the table refused last time, said then)
	}
	for _, n := range notes {
		p.logf("fleet: routing table: %s", n)
	}
	prev := p.fleetUps
	p.fleetUps = ups
	if err := p.applySourcesLocked(); err != nil {
		p.fleetUps = prev
		p.fleetRejected = &ups
		p.logf("fleet: routing table not applied, keeping the last one: %v", err)
		return
	}
	p.fleetApplied, p.fleetRejected = true, nil
	names := make([]string, len(ups))
	for i, u := range ups {
		names[i] = u.Name
	}
	p.logf("fleet: routing table applied: %d nodes [%s]", len(ups), strings.Join(names, " "))
}

// sameUpstreams reports whether a and b (sorted by name) are the same upstreams serving
// the same models.
func sameUpstreams(a, b []config.Upstream) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Name != b[i].Name || !a[i].Same(b[i]) || !sameModels(a[i].Models, b[i].Models) {
			return false
		}
	}
	return true
}
