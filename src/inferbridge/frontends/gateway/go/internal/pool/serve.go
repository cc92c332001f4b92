package pool

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/inferbridge/inferbridge/gateway/internal/clock"
	"github.com/inferbridge/inferbridge/gateway/internal/config"
)

// Run serves cfg until SIGTERM or SIGINT: it builds the pool, runs one discovery round,
// listens, prints "listening-http HOST:PORT" and "listening HOST:PORT" (gRPC) on
// stdout for the listeners configured, and serves. Logs go to stderr.
func Run(cfg *config.Config, stdout io.Writer) error {
	logger := log.New(os.Stderr, "inferbridge-gateway: ", log.LstdFlags|log.Lmicroseconds)
	p, err := New(cfg, clock.Real{}, logger)
	if err != nil {
		return err
	}
	var httpLis, grpcLis net.Listener
	if cfg.Listen.HTTP != "" {
		if httpLis, err = net.Listen("tcp", cfg.Listen.HTTP); err != nil {
			return fmt.Errorf("%s: listen.http: %w", cfg.File, err)
		}
	}
	if cfg.Listen.GRPC != "" {
		if grpcLis, err = net.Listen("tcp", cfg.Listen.GRPC); err != nil {
			return fmt.Errorf("%s: listen.grpc: %w", cfg.File, err)
		}
	}
	var addrs []net.Addr
	for _, lis := range []net.Listener{httpLis, grpcLis} {
		if lis != nil {
			addrs = append(addrs, lis.Addr())
		}
	}
	if warning := exposedWithoutAuth(cfg, addrs...); warning != "" {
		logger.Print(warning)
	}
	p.Start()
	defer p.Stop()

	failed := p.fe.Serve(grpcLis, httpLis) // TLS on both when configured
	if httpLis != nil {
		fmt.Fprintf(stdout, "listening-http %s\n", httpLis.Addr())
	}
	if grpcLis != nil {
		fmt.Fprintf(stdout, "listening %s\n", grpcLis.Addr())
	}
	if f, ok := stdout.(interface{ Sync() error }); ok {
		f.Sync()
	}
	logger.Printf("serving %d upstreams (balancer %s)", len(p.upstreams()), cfg.Balancer.Policy)

	// The gRPC health of "" follows the pool's readiness.
	go func() {
		last := healthpb.HealthCheckResponse_UNKNOWN
		for {
			want := healthpb.HealthCheckResponse_NOT_SERVING
			if p.ready() {
				want = healthpb.HealthCheckResponse_SERVING
			}
			if want != last {
				p.fe.Health().SetServingStatus("", want)
				last = want
			}
			select {
			case <-p.stop:
				return
			case <-time.After(250 * time.Millisecond):
			}
		}
	}()

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	select {
	case sig := <-sigs:
		logger.Printf("%v: draining", sig)
	case err := <-failed:
		p.fe.Stop()
		return err
	}
	p.fe.Drain(drainGrace)
	return nil
}

// drainGrace is how long calls and requests in flight may take after SIGTERM.
const drainGrace = 10 * time.Second

// HTTPHandler is the pool's REST handler: its front end.
func (p *Pool) HTTPHandler() http.Handler { return p.fe }

// GRPCServer is the pool's gRPC server and its health service (the front end's).
func (p *Pool) GRPCServer() (*grpc.Server, *health.Server) { return p.fe.GRPCServer(), p.fe.Health() }
