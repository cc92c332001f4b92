// Package local is the gateway's single-server backend: the front-end process of one
// inferbridge Python server. Behind the protocol termination of package frontend (its
// frontend.Backend and frontend.Observer), it refuses overload itself and forwards
// each call as frames over an inherited Unix socket pair to the Python process, which
// answers them (the protocol is documented on the command, main.go).
//
// The upstream-pool backend (package pool) is the other one: the same binary with
// --config, in front of many servers.
package local

import (
	"crypto/tls"
	"net"

	"google.golang.org/grpc/codes"

	"github.com/inferbridge/inferbridge/gateway/internal/auth"
)

// Config is the single-server front end's configuration (the command's flags).
type Config struct {
	MaxRecvBytes      int
	MaxConcurrentRPCs int // 0 = unlimited
	MaxHTTPInflight   int // 0 = unlimited
	// QueueFullCode answers a ModelInfer over its model's LIMITS bound (OK = RESOURCE_EXHAUSTED).
	QueueFullCode codes.Code
	// Auth checks every request before it is forwarded (nil, or one that is not
	// Active: no checks, and no cost on the hot path).
	Auth *auth.Authority
	// DefaultModel is the model of POST /predict and AIService.Predict, for Auth.
	DefaultModel string
	// TLS, when set, makes both listeners speak TLS only (tlsconf.Server's config).
	TLS *tls.Config
	// AccessFrames sends an ACCESS frame for each request Auth refuses, so that the
	// backend's access log has a line for it (the backend asks for them: --access-log-frames).
	AccessFrames bool
}

// Gateway is the front end of one Python server.
type Gateway struct{ g *gateway }

// New reads the DESCRIPTORS frame from backend and builds the servers; nothing is
// served until Run.
func New(backend net.Conn, c Config) (*Gateway, error) {
	g, err := newGateway(backend, config{
		maxRecvBytes: c.MaxRecvBytes, maxConcurrentRPCs: c.MaxConcurrentRPCs,
		maxHTTPInflight: c.MaxHTTPInflight, queueFullCode: c.QueueFullCode,
		auth: c.Auth, defaultModel: c.DefaultModel, tls: c.TLS, accessFrames: c.AccessFrames,
	})
	if err != nil {
		return nil, err
	}
	return &Gateway{g: g}, nil
}

// Run serves lis (gRPC) and httpLis (REST; may be nil) until a SHUTDOWN frame has been
// handled (nil) or the backend or a listener fails (the error).
func (g *Gateway) Run(lis, httpLis net.Listener) error { return g.g.run(lis, httpLis) }
