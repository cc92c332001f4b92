package pool

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

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
	if p.serverTLS != nil && httpLis != nil {
		httpLis = tls.NewListener(httpLis, p.serverTLS) // gRPC gets the same through its credentials
	}
	p.Start()
	defer p.Stop()

	errs := make(chan error, 2)
	var httpSrv *http.Server
	if httpLis != nil {
		httpSrv = &http.Server{Handler: p.HTTPHandler(), ReadHeaderTimeout: 30 * time.Second, IdleTimeout: 5 * time.Minute}
		go func() {
			if err := httpSrv.Serve(httpLis); !errors.Is(err, http.ErrServerClosed) {
				errs <- err
			}
		}()
		fmt.Fprintf(stdout, "listening-http %s\n", httpLis.Addr())
	}
	grpcSrv, hs := p.GRPCServer()
	if grpcLis != nil {
		go func() {
			if err := grpcSrv.Serve(grpcLis); err != nil {
				errs <- err
			}
		}()
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
				hs.SetServingStatus("", want)
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
	case err := <-errs:
		return err
	}
	hs.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() {
		grpcSrv.GracefulStop()
		close(done)
	}()
	if httpSrv != nil {
		httpSrv.Shutdown(ctx)
	}
	select {
	case <-done:
	case <-ctx.Done():
		grpcSrv.Stop()
	}
	return nil
}
