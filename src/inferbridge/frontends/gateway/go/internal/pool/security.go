package pool

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/inferbridge/inferbridge/gateway/internal/auth"
	"github.com/inferbridge/inferbridge/gateway/internal/config"
	"github.com/inferbridge/inferbridge/gateway/internal/tlsconf"
)

// Security at the pool's listeners (docs/security.md): TLS and mutual TLS, then every
// request is checked by the authority (authenticate, authorize, the principal's and the
// model's token buckets) before its body is read and before anything reaches an
// upstream.

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

// checkHTTP decides a REST request; it writes the refusal and returns false when the
// request may not go on.
func (p *Pool) checkHTTP(w http.ResponseWriter, r *http.Request) bool {
	if p.auth == nil {
		return true
	}
	var act auth.Action
	if strings.TrimRight(r.URL.Path, "/") == adminPath {
		act = auth.Action{Kind: auth.Read}
	} else {
		// The pool has no default model: POST /predict goes to any upstream, and needs an
		// infer: scope matching the empty name (infer or infer:*).
		act = auth.ClassifyHTTP(r.Method, r.URL.Path, auth.ParseQuery(r.URL.RawQuery), "")
	}
	creds := auth.Credentials{
		Authorization: r.Header.Get("Authorization"), APIKey: r.Header.Get("X-Api-Key"),
		CertSubject: tlsconf.PeerName(r.TLS),
	}
	_, d := p.auth.Check(creds, act)
	if d == nil {
		return true
	}
	p.metrics.rejected.WithLabelValues("http", act.Model, denialReason(d)).Inc()
	h := w.Header()
	switch d.Status {
	case http.StatusUnauthorized:
		challenge := `Bearer realm="inferbridge"`
		if d.TokenSent {
			challenge += `, error="invalid_token"`
		}
		h.Set("WWW-Authenticate", challenge)
	case http.StatusTooManyRequests:
		h.Set("Retry-After", strconv.Itoa(retryAfterSeconds(d.RetryAfter)))
	}
	writeJSONError(w, d.Status, d.Message, false)
	return false
}

// checkGRPC decides a gRPC call of method (model: the request's, for inference); the
// error is the refusal's status, nil when the call may go on.
func (p *Pool) checkGRPC(ctx context.Context, method, model string) error {
	if p.auth == nil {
		return nil
	}
	act := auth.ClassifyGRPC(method, model)
	md, _ := metadata.FromIncomingContext(ctx)
	creds := auth.Credentials{Authorization: first(md, "authorization"), APIKey: first(md, "x-api-key")}
	if pr, ok := peer.FromContext(ctx); ok {
		if info, ok := pr.AuthInfo.(credentials.TLSInfo); ok {
			creds.CertSubject = tlsconf.PeerName(&info.State)
		}
	}
	_, d := p.auth.Check(creds, act)
	if d == nil {
		return nil
	}
	p.metrics.rejected.WithLabelValues("grpc", act.Model, denialReason(d)).Inc()
	switch d.Status {
	case http.StatusUnauthorized:
		return status.Error(codes.Unauthenticated, d.Message)
	case http.StatusForbidden:
		return status.Error(codes.PermissionDenied, d.Message)
	}
	_ = grpc.SetTrailer(ctx, metadata.Pairs("retry-after", strconv.Itoa(retryAfterSeconds(d.RetryAfter))))
	return status.Error(codes.ResourceExhausted, d.Message)
}

// inferenceMethods carry their model in the request message: they are checked once it
// is read (a stream: each message), the others as the call starts.
var inferenceMethods = map[string]bool{auth.GRPCModelInfer: true, auth.GRPCModelStreamInfer: true}

// unaryAuth checks calls of the registered services (grpc.health.v1).
func (p *Pool) unaryAuth(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := p.checkGRPC(ctx, info.FullMethod, ""); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

// streamAuth checks streaming calls (health Watch, and every forwarded method, which
// arrives through the unknown-service handler) but the inference methods, which
// forwardGRPC checks with their model.
func (p *Pool) streamAuth(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if !inferenceMethods[info.FullMethod] {
		if err := p.checkGRPC(ss.Context(), info.FullMethod, ""); err != nil {
			return err
		}
	}
	return handler(srv, ss)
}

func first(md metadata.MD, key string) string {
	if v := md.Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

// retryAfterSeconds is a wait in whole seconds, at least 1 (Retry-After's unit).
func retryAfterSeconds(d time.Duration) int {
	s := int((d + time.Second - 1) / time.Second)
	return max(s, 1)
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
