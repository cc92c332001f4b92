package pool

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/inferbridge/inferbridge/gateway/internal/balancer"
	"github.com/inferbridge/inferbridge/gateway/internal/breaker"
	"github.com/inferbridge/inferbridge/gateway/internal/config"
	"github.com/inferbridge/inferbridge/gateway/internal/frontend"
	"github.com/inferbridge/inferbridge/gateway/internal/health"
	"github.com/inferbridge/inferbridge/gateway/internal/tlsconf"
)

// upstream is one OIP server of the pool and everything the gateway knows of it.
type upstream struct {
	cfg     config.Upstream
	load    *balancer.Load
	breaker *breaker.Breaker
	passive health.Host
	healthy atomic.Bool // the active checks' verdict
	// fromFleet: its models are the fleet routing table's (set by setUpstreams), not
	// discovered
	fromFleet bool

	http *http.Client // nil without a REST address (discovery, health, repository control)
	// rest sends forwarded REST requests (h1client.go): nil without a REST address
	rest *h1Client
	conn *grpc.ClientConn // nil without a gRPC address
	// models maps model name → versions served ("" = versions unknown), from discovery.
	models        atomic.Pointer[map[string][]string]
	discoveryErr  atomic.Pointer[string]
	healthTracker health.Tracker // owned by the prober goroutine
	m             *upstreamMetrics
}

func newUpstream(p *Pool, cfg config.Upstream) (*upstream, error) {
	u := &upstream{cfg: cfg}
	u.load = balancer.NewLoad(p.clock, p.cfg.Balancer.Decay, p.cfg.Balancer.ErrorPenalty)
	u.m = p.metrics.upstream(cfg.Name)
	u.breaker = breaker.New(p.cfg.Breaker, p.clock, func(s breaker.State) {
		u.m.breakerState.Set(float64(s))
		p.logf("upstream %s: breaker %s", cfg.Name, s)
	})
	u.healthTracker = health.Tracker{UnhealthyAfter: p.cfg.Health.UnhealthyAfter, HealthyAfter: p.cfg.Health.HealthyAfter}
	u.healthy.Store(true)
	u.m.healthy.Set(1)
	empty := map[string][]string{}
	u.models.Store(&empty)
	if cfg.Models != nil {
		u.fromFleet = true
		models := cfg.Models
		u.models.Store(&models)
	}
	var tlsCfg *tls.Config
	if cfg.TLS != nil {
		var err error
		if tlsCfg, err = tlsconf.Client(cfg.TLS.CA, cfg.TLS.Cert, cfg.TLS.Key, cfg.TLS.ServerName); err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
	}
	if cfg.REST != "" {
		var err error
		if u.rest, err = newH1Client(cfg.REST, tlsCfg); err != nil {
			return nil, err
		}
		dialer := &net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}
		// net/http for the gateway's own requests (a few a second), not forwarded ones
		transport := &http.Transport{
			TLSClientConfig:     tlsCfg, // used for https:// addresses only (config checks they agree)
			TLSHandshakeTimeout: 5 * time.Second,
			DialContext:         dialer.DialContext,
			MaxIdleConnsPerHost: 4,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		}
		u.http = &http.Client{
			Transport:     transport,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	if cfg.GRPC != "" {
		creds := insecure.NewCredentials()
		if tlsCfg != nil {
			creds = credentials.NewTLS(tlsCfg)
		}
		conn, err := grpc.NewClient(cfg.GRPC,
			grpc.WithTransportCredentials(creds),
			grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{}), grpc.MaxCallRecvMsgSize(1<<31-1),
				grpc.MaxCallSendMsgSize(1<<31-1)),
			// static windows: no BDP estimation PINGs (frontend.StreamWindow says why)
			grpc.WithInitialWindowSize(frontend.StreamWindow),
			grpc.WithInitialConnWindowSize(frontend.ConnWindow),
		)
		if err != nil {
			return nil, err
		}
		conn.Connect()
		u.conn = conn
	}
	return u, nil
}

// routable: in rotation (healthy and not ejected). The breaker is asked per request.
func (u *upstream) routable() bool { return u.healthy.Load() && !u.passive.Ejected() }

func (u *upstream) close() {
	if u.http != nil {
		u.http.CloseIdleConnections()
		u.rest.closeIdle()
	}
	if u.conn != nil {
		u.conn.Close()
	}
}

// sameAddresses reports whether cfg names the same server, reached the same way (TLS,
// API key): a rename keeps the state.
func (u *upstream) sameAddresses(cfg config.Upstream) bool {
	return u.cfg.Same(cfg)
}

func (u *upstream) probeContext(parent context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(parent, d)
}

// Credentials towards upstreams: with an api_key_file the upstream gets that key as
// x-api-key and none of the client's credentials; without one the client's
// authorization and x-api-key travel on as they came.

// setHTTPCredentials applies u's key, if any, to the headers of a request to it.
func (u *upstream) setHTTPCredentials(h http.Header) {
	if u.cfg.APIKey == "" {
		return
	}
	h.Del("Authorization")
	h["X-Api-Key"] = []string{u.cfg.APIKey}
}

// grpcContext is ctx with u's key, if any, in place of the client's credentials in the
// outgoing metadata.
func (u *upstream) grpcContext(ctx context.Context) context.Context {
	if u.cfg.APIKey == "" {
		return ctx
	}
	md, _ := metadata.FromOutgoingContext(ctx)
	md = md.Copy()
	delete(md, "authorization")
	md["x-api-key"] = []string{u.cfg.APIKey}
	return metadata.NewOutgoingContext(ctx, md)
}

// clientCredentialsMD carries a REST request's credentials to a gRPC upstream (REST
// infer requests translated to ModelInfer).
func clientCredentialsMD(h http.Header) metadata.MD {
	md := metadata.MD{}
	if v := h.Values("Authorization"); len(v) > 0 {
		md["authorization"] = v
	}
	if v := h.Values("X-Api-Key"); len(v) > 0 {
		md["x-api-key"] = v
	}
	return md
}
