package inferbridge_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	inferbridge "github.com/inferbridge/inferbridge/clients/go"
	"github.com/inferbridge/inferbridge/clients/go/grpcclient"
	"github.com/inferbridge/inferbridge/clients/go/inferencepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// testPKI is a CA with a server certificate for 127.0.0.1 and a client certificate
// (CN "sdk-client"), written as PEM files.
type testPKI struct {
	caFile, clientCert, clientKey string
	serverCert, serverKey         string // the server pair's files
	server                        tls.Certificate
	pool                          *x509.CertPool
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sdk test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	issue := func(serial int64, cn string, usage x509.ExtKeyUsage) (certPEM, keyPEM []byte) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	}
	p := &testPKI{caFile: filepath.Join(dir, "ca.pem"), clientCert: filepath.Join(dir, "client.pem"),
		clientKey: filepath.Join(dir, "client.key"), serverCert: filepath.Join(dir, "server.pem"),
		serverKey: filepath.Join(dir, "server.key"), pool: x509.NewCertPool()}
	p.pool.AddCert(caCert)
	write := func(path string, data []byte) {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(p.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))
	certPEM, keyPEM := issue(2, "server", x509.ExtKeyUsageServerAuth)
	if p.server, err = tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	write(p.serverCert, certPEM)
	write(p.serverKey, keyPEM)
	certPEM, keyPEM = issue(3, "sdk-client", x509.ExtKeyUsageClientAuth)
	write(p.clientCert, certPEM)
	write(p.clientKey, keyPEM)
	return p
}

// serverTLS requires and verifies client certificates of the PKI's CA.
func (p *testPKI) serverTLS() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{p.server}, ClientCAs: p.pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
}

// seen records what a test server received.
type seen struct {
	mu                      sync.Mutex
	apiKey, authz, clientCN string
}

func (s *seen) get() (apiKey, authz, clientCN string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.apiKey, s.authz, s.clientCN
}

func TestUnitRESTClientOverMutualTLSSendsItsCredential(t *testing.T) {
	pki := newTestPKI(t)
	var got seen
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.mu.Lock()
		got.apiKey, got.authz = r.Header.Get("X-Api-Key"), r.Header.Get("Authorization")
		if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
			got.clientCN = r.TLS.VerifiedChains[0][0].Subject.CommonName
		}
		got.mu.Unlock()
		switch r.URL.Path {
		case "/v2/health/live":
			w.WriteHeader(http.StatusOK)
		case "/v2/models/iris":
			w.Header().Set("WWW-Authenticate", `Bearer realm="inferbridge"`)
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"error": "authentication required"}`))
		case "/v2/models/fraud":
			w.WriteHeader(http.StatusForbidden)
			w.Write([]byte(`{"error": "principal 'payments' may not read server or model information (its scopes: infer:fraud-*)"}`))
		default:
			w.WriteHeader(http.StatusForbidden)
			w.Write([]byte(`{"error": "the repository is not modifiable"}`))
		}
	}))
	srv.TLS = pki.serverTLS()
	srv.StartTLS()
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	client, err := inferbridge.NewRESTClient(srv.URL, inferbridge.WithTLSFiles(pki.caFile, pki.clientCert, pki.clientKey),
		inferbridge.WithAPIKey("sk-test"))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if live, err := client.Live(ctx); err != nil || !live {
		t.Fatalf("Live over mutual TLS: %v %v", live, err)
	}
	if key, authz, cn := got.get(); key != "sk-test" || authz != "" || cn != "sdk-client" {
		t.Fatalf("server saw x-api-key %q, authorization %q, client certificate %q", key, authz, cn)
	}

	_, err = client.ModelMetadata(ctx, "iris", "")
	var e *inferbridge.Error
	if !errors.Is(err, inferbridge.ErrUnauthenticated) || !errors.As(err, &e) || e.HTTPStatus != 401 {
		t.Fatalf("401: %v", err)
	}
	if _, err = client.ModelMetadata(ctx, "fraud", ""); !errors.Is(err, inferbridge.ErrPermissionDenied) {
		t.Fatalf("403 of a principal's scopes: %v, want ErrPermissionDenied", err)
	}
	if _, err = client.ModelMetadata(ctx, "other", ""); !errors.Is(err, inferbridge.ErrFailedPrecondition) {
		t.Fatalf("403 of the repository: %v, want ErrFailedPrecondition", err)
	}

	// WithTLS takes a configuration as it is; a bearer token replaces the key.
	cfg, err := inferbridge.LoadTLSConfig(pki.caFile, pki.clientCert, pki.clientKey)
	if err != nil {
		t.Fatal(err)
	}
	bearer, err := inferbridge.NewRESTClient(srv.URL, inferbridge.WithTLS(cfg), inferbridge.WithBearerToken("tok.en.x"))
	if err != nil {
		t.Fatal(err)
	}
	defer bearer.Close()
	if live, err := bearer.Live(ctx); err != nil || !live {
		t.Fatalf("Live with WithTLS: %v %v", live, err)
	}
	if key, authz, _ := got.get(); key != "" || authz != "Bearer tok.en.x" {
		t.Fatalf("server saw x-api-key %q, authorization %q", key, authz)
	}

	// No client certificate: the server refuses the connection.
	noCert, err := inferbridge.NewRESTClient(srv.URL, inferbridge.WithTLSFiles(pki.caFile, "", ""))
	if err != nil {
		t.Fatal(err)
	}
	defer noCert.Close()
	if _, err := noCert.Live(ctx); !errors.Is(err, inferbridge.ErrUnavailable) {
		t.Fatalf("without a client certificate: %v, want ErrUnavailable", err)
	}
	// The system's roots do not trust the test CA.
	system, err := inferbridge.NewRESTClient(srv.URL, inferbridge.WithTLSFiles("", pki.clientCert, pki.clientKey))
	if err != nil {
		t.Fatal(err)
	}
	defer system.Close()
	if _, err := system.Live(ctx); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a server of an unknown CA: %v", err)
	}
}

func TestUnitTLSOptionErrorsAreReturnedByTheConstructors(t *testing.T) {
	pki := newTestPKI(t)
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	for _, tc := range []struct {
		name string
		url  string
		opts []inferbridge.RESTOption
		want string
	}{
		{"missing CA", "https://127.0.0.1:1", []inferbridge.RESTOption{inferbridge.WithTLSFiles("/nonexistent/ca.pem", "", "")}, "/nonexistent/ca.pem"},
		{"CA not PEM", "https://127.0.0.1:1", []inferbridge.RESTOption{inferbridge.WithTLSFiles(pki.clientKey, "", "")}, "no PEM certificate"},
		{"cert without key", "https://127.0.0.1:1", []inferbridge.RESTOption{inferbridge.WithTLSFiles(pki.caFile, pki.clientCert, "")}, "both a certificate file and a key file"},
		{"mismatched pair", "https://127.0.0.1:1", []inferbridge.RESTOption{inferbridge.WithTLSFiles(pki.caFile, pki.clientCert, pki.caFile)}, "TLS client certificate"},
		{"nil config", "https://127.0.0.1:1", []inferbridge.RESTOption{inferbridge.WithTLS(nil)}, "nil"},
		{"http URL", "http://127.0.0.1:1", []inferbridge.RESTOption{inferbridge.WithTLS(cfg)}, "is not https://"},
		{"with an HTTP client", "https://127.0.0.1:1", []inferbridge.RESTOption{inferbridge.WithTLS(cfg), inferbridge.WithHTTPClient(http.DefaultClient)}, "WithHTTPClient together"},
	} {
		_, err := inferbridge.NewRESTClient(tc.url, tc.opts...)
		if !errors.Is(err, inferbridge.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want ErrInvalidArgument containing %q", tc.name, err, tc.want)
		}
	}
	for name, opt := range map[string]grpc.DialOption{
		"missing CA": grpcclient.WithTLSFiles("/nonexistent/ca.pem", "", ""),
		"nil config": grpcclient.WithTLS(nil),
	} {
		if _, err := grpcclient.New("127.0.0.1:1", opt); !errors.Is(err, inferbridge.ErrInvalidArgument) {
			t.Errorf("gRPC %s: %v, want ErrInvalidArgument", name, err)
		}
	}
}

// liveServer answers ServerLive, recording the call's credentials, and refuses
// ServerReady with the code in the call's "refuse" metadata.
type liveServer struct {
	inferencepb.UnimplementedGRPCInferenceServiceServer
	got *seen
}

func (s liveServer) ServerLive(ctx context.Context, _ *inferencepb.ServerLiveRequest) (*inferencepb.ServerLiveResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	s.got.mu.Lock()
	defer s.got.mu.Unlock()
	s.got.apiKey, s.got.authz, s.got.clientCN = strings.Join(md.Get("x-api-key"), ","), strings.Join(md.Get("authorization"), ","), ""
	if p, ok := peer.FromContext(ctx); ok {
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(info.State.VerifiedChains) > 0 {
			s.got.clientCN = info.State.VerifiedChains[0][0].Subject.CommonName
		}
	}
	return &inferencepb.ServerLiveResponse{Live: true}, nil
}

func (s liveServer) ServerReady(ctx context.Context, _ *inferencepb.ServerReadyRequest) (*inferencepb.ServerReadyResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("refuse"); len(v) > 0 && v[0] == "unauthenticated" {
		return nil, status.Error(codes.Unauthenticated, "authentication required")
	} else if len(v) > 0 && v[0] == "exhausted" {
		_ = grpc.SetTrailer(ctx, metadata.Pairs("retry-after", "3"))
		return nil, status.Error(codes.ResourceExhausted, "model 'm' is over its rate limit; retry in 3 s")
	}
	return nil, status.Error(codes.PermissionDenied, "principal 'payments' may not read server or model information (its scopes: infer:fraud-*)")
}

func TestUnitGRPCClientOverMutualTLSSendsItsCredential(t *testing.T) {
	pki := newTestPKI(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var got seen
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(pki.serverTLS())))
	inferencepb.RegisterGRPCInferenceServiceServer(srv, liveServer{got: &got})
	go srv.Serve(lis)
	defer srv.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	client, err := grpcclient.New(lis.Addr().String(), grpcclient.WithTLSFiles(pki.caFile, pki.clientCert, pki.clientKey),
		grpcclient.WithAPIKey("sk-grpc"))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if live, err := client.Live(ctx); err != nil || !live {
		t.Fatalf("Live over mutual TLS: %v %v", live, err)
	}
	if key, authz, cn := got.get(); key != "sk-grpc" || authz != "" || cn != "sdk-client" {
		t.Fatalf("server saw x-api-key %q, authorization %q, client certificate %q", key, authz, cn)
	}
	_, err = client.Ready(metadata.AppendToOutgoingContext(ctx, "refuse", "unauthenticated"))
	if !errors.Is(err, inferbridge.ErrUnauthenticated) {
		t.Fatalf("UNAUTHENTICATED: %v", err)
	}
	if _, err = client.Ready(ctx); !errors.Is(err, inferbridge.ErrPermissionDenied) {
		t.Fatalf("PERMISSION_DENIED: %v", err)
	}
	_, err = client.Ready(metadata.AppendToOutgoingContext(ctx, "refuse", "exhausted"))
	var e *inferbridge.Error
	if !errors.Is(err, inferbridge.ErrResourceExhausted) || !errors.As(err, &e) || e.RetryAfter != 3*time.Second ||
		status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("RESOURCE_EXHAUSTED with retry-after 3: %v (RetryAfter %v)", err, e)
	}

	cfg, err := inferbridge.LoadTLSConfig(pki.caFile, pki.clientCert, pki.clientKey)
	if err != nil {
		t.Fatal(err)
	}
	bearer, err := grpcclient.New(lis.Addr().String(), grpcclient.WithTLS(cfg), grpcclient.WithBearerToken("tok.en.x"))
	if err != nil {
		t.Fatal(err)
	}
	defer bearer.Close()
	if live, err := bearer.Live(ctx); err != nil || !live {
		t.Fatalf("Live with WithTLS: %v %v", live, err)
	}
	if key, authz, _ := got.get(); key != "" || authz != "Bearer tok.en.x" {
		t.Fatalf("server saw x-api-key %q, authorization %q", key, authz)
	}

	// Plaintext (New's default) and a client without a certificate do not get through.
	plain, err := grpcclient.New(lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, err := plain.Live(ctx); !errors.Is(err, inferbridge.ErrUnavailable) {
		t.Fatalf("plaintext against a TLS server: %v, want ErrUnavailable", err)
	}
	noCert, err := grpcclient.New(lis.Addr().String(), grpcclient.WithTLSFiles(pki.caFile, "", ""))
	if err != nil {
		t.Fatal(err)
	}
	defer noCert.Close()
	if _, err := noCert.Live(ctx); !errors.Is(err, inferbridge.ErrUnavailable) {
		t.Fatalf("without a client certificate: %v, want ErrUnavailable", err)
	}
}

// The SDK through the pool gateway with TLS, mutual TLS and an auth: keys file, in front
// of the live server: both clients get in with their certificate and key, and read the
// gateway's refusals as ErrUnauthenticated and ErrPermissionDenied.
func TestSDKThroughATLSPoolGatewayWithAuth(t *testing.T) {
	pki := newTestPKI(t)
	keys := filepath.Join(t.TempDir(), "keys.yaml")
	digest := func(key string) string {
		sum := sha256.Sum256([]byte(key))
		return hex.EncodeToString(sum[:])
	}
	if err := os.WriteFile(keys, []byte(fmt.Sprintf("keys:\n"+
		"  - {name: iris-team, sha256: %s, scopes: ['infer:iris*', read]}\n"+
		"  - {name: fraud-team, sha256: %s, scopes: ['infer:fraud-*']}\n", digest("sk-iris"), digest("sk-fraud"))), 0o600); err != nil {
		t.Fatal(err)
	}
	rest, grpcTarget := startPoolGatewayWith(t,
		fmt.Sprintf("tls: {cert: '%s', key: '%s', client_ca: '%s', client_auth: request}", pki.serverCert, pki.serverKey, pki.caFile),
		fmt.Sprintf("auth: {keys: '%s'}\n", keys))
	files := func(o ...inferbridge.RESTOption) []inferbridge.RESTOption {
		return append([]inferbridge.RESTOption{inferbridge.WithTLSFiles(pki.caFile, pki.clientCert, pki.clientKey)}, o...)
	}
	restIris, err := inferbridge.NewRESTClient(rest, files(inferbridge.WithAPIKey("sk-iris"))...)
	if err != nil {
		t.Fatal(err)
	}
	grpcIris, err := grpcclient.New(grpcTarget, grpcclient.WithTLSFiles(pki.caFile, pki.clientCert, pki.clientKey),
		grpcclient.WithBearerToken("sk-iris"))
	if err != nil {
		t.Fatal(err)
	}
	restFraud, err := inferbridge.NewRESTClient(rest, files(inferbridge.WithBearerToken("sk-fraud"))...)
	if err != nil {
		t.Fatal(err)
	}
	grpcFraud, err := grpcclient.New(grpcTarget, grpcclient.WithTLSFiles(pki.caFile, "", ""), grpcclient.WithAPIKey("sk-fraud"))
	if err != nil {
		t.Fatal(err)
	}
	restNone, err := inferbridge.NewRESTClient(rest, files()...)
	if err != nil {
		t.Fatal(err)
	}
	grpcNone, err := grpcclient.New(grpcTarget, grpcclient.WithTLSFiles(pki.caFile, "", ""))
	if err != nil {
		t.Fatal(err)
	}
	in := inferbridge.NewFP32("input", []int64{3, 4}, irisRows)
	req := &inferbridge.InferRequest{Model: "iris_onnx", Inputs: []*inferbridge.Tensor{in}}
	for name, c := range map[string][3]inferbridge.Client{"rest": {restIris, restFraud, restNone}, "grpc": {grpcIris, grpcFraud, grpcNone}} {
		t.Run(name, func(t *testing.T) {
			iris, fraud, none := c[0], c[1], c[2]
			defer iris.Close()
			defer fraud.Close()
			defer none.Close()
			ctx := ctxTimeout(t)
			if ready, err := none.Ready(ctx); err != nil || !ready {
				t.Fatalf("health is open: %v %v", ready, err)
			}
			resp, err := iris.Infer(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			if labels, err := resp.Output("label").Int64s(); err != nil || !slices.Equal(labels, []int64{0, 1, 2}) {
				t.Fatalf("labels %v %v", labels, err)
			}
			if _, err := none.Infer(ctx, req); !errors.Is(err, inferbridge.ErrUnauthenticated) {
				t.Fatalf("no credential: %v, want ErrUnauthenticated", err)
			}
			_, err = fraud.Infer(ctx, req)
			if !errors.Is(err, inferbridge.ErrPermissionDenied) || !strings.Contains(err.Error(), "principal 'fraud-team' may not infer on model 'iris_onnx'") {
				t.Fatalf("without the scope: %v, want ErrPermissionDenied", err)
			}
		})
	}
}
