package pool

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/inferbridge/inferbridge/gateway/internal/auth"
	"github.com/inferbridge/inferbridge/gateway/internal/config"
	"github.com/inferbridge/inferbridge/gateway/internal/frontend"
	"github.com/inferbridge/inferbridge/gateway/internal/tlsconf"
)

// Security at the pool's listeners (docs/security.md): TLS and mutual TLS, then every
// request is checked by the authority (authenticate, authorize, the principal's and the
// model's token buckets) before its body is read and before anything reaches an
// upstream. The front end (package frontend) applies both; what is the pool's is its
// configuration, its admin path and its metrics' labels.

// newAuthority builds the `auth` block's authority; nil when it can refuse nothing.
func newAuthority(cfg *config.Config, logf func(string, ...any)) (*auth.Authority, error) {
	authority, err := auth.New(cfg.Auth.AuthConfig(), logf)
	if err != nil {
		return nil, fmt.Errorf("%s: auth: %w", cfg.File, err)
	}
	if !authority.Active() {
		return nil, nil
	}
	return authority, nil
}

// newServerTLS builds the listeners' TLS configuration (nil = plaintext).
func newServerTLS(cfg *config.Config, logf func(string, ...any)) (*tls.Config, error) {
	t := cfg.Listen.TLS
	if t == nil {
		return nil, nil
	}
	c, err := tlsconf.Server(tlsconf.Files{Cert: t.Cert, Key: t.Key, ClientCA: t.ClientCA, ClientAuth: t.ClientAuth}, logf)
	if err != nil {
		return nil, fmt.Errorf("%s: listen.tls: %w", cfg.File, err)
	}
	return c, nil
}

// exposedWithoutAuth returns the warning to print when a listener's address is not
// loopback while authentication is off, else "".
func exposedWithoutAuth(cfg *config.Config, addrs ...net.Addr) string {
	if cfg.Auth.Enabled() {
		return ""
	}
	var exposed []string
	for _, a := range addrs {
		if addr, ok := a.(*net.TCPAddr); ok && !addr.IP.IsLoopback() {
			exposed = append(exposed, addr.String())
		}
	}
	if len(exposed) == 0 {
		return ""
	}
	return fmt.Sprintf("warning: listening on %s (not loopback) with authentication off: anyone who can reach it may call every model; "+
		"configure the auth: block (auth.keys or auth.jwt) of %s", strings.Join(exposed, ", "), cfg.File)
}

// adminPath is the gateway's own upstream listing: read-only, so the read scope.
const adminPath = "/v1/gateway/upstreams"

// classifyHTTP classifies the pool's own REST path for the front end's authority; the
// others are classified as the Python app routes them. The pool has no default model:
// POST /predict goes to any upstream, and needs an infer: scope matching the empty name
// (infer or infer:*).
func classifyHTTP(r *http.Request, _ frontend.Path) (auth.Action, bool) {
	if strings.TrimRight(r.URL.Path, "/") == adminPath {
		return auth.Action{Kind: auth.Read}, true
	}
	return auth.Action{}, false
}

// Refused counts a request the front end's authority refused (frontend.Observer).
func (p *Pool) Refused(r frontend.Refusal) {
	p.metrics.rejected.WithLabelValues(r.Protocol, r.Model, denialReason(r.Denial)).Inc()
}

// denialReason labels a refusal in inferbridge_gateway_rejected_total.
func denialReason(d *auth.Denial) string {
	switch d.Status {
	case http.StatusUnauthorized:
		return "unauthenticated"
	case http.StatusForbidden:
		return "forbidden"
	}
	return "rate_limited"
}
