package grpcclient

import (
	"context"
	"crypto/tls"
	"fmt"
	"strconv"
	"time"

	inferbridge "github.com/inferbridge/inferbridge/clients/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// WithTLS makes New's connection speak TLS with cfg (an inferbridge server started with
// --tls-cert, or the pool gateway's listen.tls). It is grpc.WithTransportCredentials
// over cfg, which replaces New's default of plaintext.
func WithTLS(cfg *tls.Config) grpc.DialOption {
	if cfg == nil {
		return optionError{err: fmt.Errorf("WithTLS: the TLS configuration is nil")}
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(cfg))
}

// WithTLSFiles is WithTLS with the configuration inferbridge.LoadTLSConfig(caFile,
// certFile, keyFile) builds: the server is verified against caFile ("" = the system's
// roots) and, with certFile and keyFile, the client presents that certificate. New
// returns its error when the files do not load. It takes effect only through New.
func WithTLSFiles(caFile, certFile, keyFile string) grpc.DialOption {
	cfg, err := inferbridge.LoadTLSConfig(caFile, certFile, keyFile)
	if err != nil {
		return optionError{err: fmt.Errorf("WithTLSFiles: %w", err)}
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(cfg))
}

// WithAPIKey sends key as the x-api-key metadata of every call. It travels in the clear
// without TLS: use WithTLS beyond loopback.
func WithAPIKey(key string) grpc.DialOption {
	return grpc.WithPerRPCCredentials(staticCredential{"x-api-key": key})
}

// WithBearerToken sends "authorization: Bearer <token>" metadata with every call (a JWT,
// or an API key). Given with WithAPIKey, both are sent and the server decides by
// authorization.
func WithBearerToken(token string) grpc.DialOption {
	return grpc.WithPerRPCCredentials(staticCredential{"authorization": "Bearer " + token})
}

// staticCredential is per-call metadata that never changes. It does not require
// transport security, so that plaintext servers on loopback can check credentials too.
type staticCredential map[string]string

func (s staticCredential) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return s, nil
}

func (staticCredential) RequireTransportSecurity() bool { return false }

// optionError is an option that could not be built; New returns its error (grpc-go's
// options cannot fail, so the failure travels in the option itself).
type optionError struct {
	grpc.EmptyDialOption
	err error
}

// optionsError returns the first failed option among opts.
func optionsError(opts []grpc.DialOption) error {
	for _, o := range opts {
		if oe, ok := o.(optionError); ok {
			return oe.err
		}
	}
	return nil
}

// retryAfterInterceptor reads the retry-after trailer (whole seconds) a server sends with
// RESOURCE_EXHAUSTED, so that the call's *inferbridge.Error carries it as RetryAfter, as
// the REST client's does from the Retry-After header.
func retryAfterInterceptor(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn,
	invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	var trailer metadata.MD
	err := invoker(ctx, method, req, reply, cc, append(opts, grpc.Trailer(&trailer))...)
	if err == nil || status.Code(err) != codes.ResourceExhausted {
		return err
	}
	if v := trailer.Get("retry-after"); len(v) > 0 {
		if secs, perr := strconv.Atoi(v[0]); perr == nil && secs >= 0 {
			return &retryAfterError{err: err, after: time.Duration(secs) * time.Second}
		}
	}
	return err
}

// retryAfterError is a gRPC status error with the server's retry-after hint.
type retryAfterError struct {
	err   error
	after time.Duration
}

func (e *retryAfterError) Error() string              { return e.err.Error() }
func (e *retryAfterError) Unwrap() error              { return e.err }
func (e *retryAfterError) GRPCStatus() *status.Status { return status.Convert(e.err) }
