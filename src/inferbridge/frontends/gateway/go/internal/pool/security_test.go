package pool

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/inferbridge/inferbridge/gateway/internal/clock"
	"github.com/inferbridge/inferbridge/gateway/internal/config"
	"github.com/inferbridge/inferbridge/gateway/internal/tlsconf"
	"github.com/inferbridge/inferbridge/gateway/internal/tlsconf/tlsconftest"
)

func digest(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// writeKeys writes a keys file of docs/security.md's form into dir.
func writeKeys(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "keys.yaml")
	text := fmt.Sprintf(`keys:
  - {name: payments, sha256: %s, scopes: ["infer:fraud-*", read], rate: {per_second: 0.001, burst: 3}}
  - {name: ops, sha256: %s, scopes: [read]}
  - {name: batch, subject: batch.internal, scopes: ["infer:*"]}
  - {name: all, sha256: %s, scopes: [admin]}
`, digest("sk-pay"), digest("sk-ops"), digest("sk-all"))
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

type answer struct {
	code   int
	body   string
	header http.Header
}

func call(t *testing.T, client *http.Client, method, url, body string, headers ...string) answer {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, string(b), resp.Header}
}

func errorOf(t *testing.T, a answer) string {
	t.Helper()
	var doc struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal([]byte(a.body), &doc); err != nil {
		t.Fatalf("body %q is not {\"error\": ...}: %v", a.body, err)
	}
	return doc.Error
}

func TestRESTAuthRefusesBeforeTheUpstream(t *testing.T) {
	dir := t.TempDir()
	keys := writeKeys(t, dir)
	up := newFake(t, "a", "fraud-a:1", "iris:1")
	_, srv := newTestPool(t, "auth:\n  keys: "+keys+"\n  rate_limits: [{model: iris, per_second: 0.001, burst: 1}]\n", up)
	c := http.DefaultClient
	inferURL := func(model string) string { return srv.URL + "/v2/models/" + model + "/infer" }

	a := call(t, c, "POST", inferURL("fraud-a"), inferBody)
	if a.code != 401 || a.header.Get("WWW-Authenticate") != `Bearer realm="inferbridge"` ||
		!strings.Contains(errorOf(t, a), "authentication required") {
		t.Fatalf("no credential: %d %q %v", a.code, a.body, a.header)
	}
	a = call(t, c, "POST", inferURL("fraud-a"), inferBody, "X-Api-Key", "sk-wrong")
	if a.code != 401 || a.header.Get("WWW-Authenticate") != `Bearer realm="inferbridge", error="invalid_token"` ||
		strings.Contains(a.body, "sk-wrong") {
		t.Fatalf("unknown key: %d %q %v", a.code, a.body, a.header)
	}
	a = call(t, c, "POST", inferURL("iris"), inferBody, "X-Api-Key", "sk-pay")
	if want := "principal 'payments' may not infer on model 'iris' (its scopes: infer:fraud-*, read)"; a.code != 403 || errorOf(t, a) != want {
		t.Fatalf("without the scope: %d %q, want 403 %q", a.code, a.body, want)
	}
	if n := up.count(); n != 0 {
		t.Fatalf("%d refused requests reached the upstream", n)
	}

	a = call(t, c, "POST", inferURL("fraud-a"), inferBody, "X-Api-Key", "sk-pay")
	if a.code != 200 || up.count() != 1 {
		t.Fatalf("allowed: %d %q (upstream saw %d)", a.code, a.body, up.count())
	}
	up.mu.Lock()
	forwarded := up.headers[0].Get("X-Api-Key")
	up.mu.Unlock()
	if forwarded != "sk-pay" {
		t.Fatalf("without api_key_file the client's key goes on: the upstream saw %q", forwarded)
	}

	// Health is open by default; the gateway's own endpoints need read.
	if a = call(t, c, "GET", srv.URL+"/v2/health/live", ""); a.code != 200 {
		t.Fatalf("open health: %d", a.code)
	}
	for _, path := range []string{"/v1/gateway/upstreams", "/metrics", "/v2"} {
		if a = call(t, c, "GET", srv.URL+path, ""); a.code != 401 {
			t.Fatalf("%s without a credential: %d", path, a.code)
		}
	}
	if a = call(t, c, "GET", srv.URL+"/v1/gateway/upstreams", "", "Authorization", "Bearer sk-ops"); a.code != 200 {
		t.Fatalf("admin listing with read: %d %s", a.code, a.body)
	}
	if a = call(t, c, "POST", srv.URL+"/v2/repository/models/iris/unload", "{}", "X-Api-Key", "sk-ops"); a.code != 403 ||
		!strings.Contains(errorOf(t, a), "needs the admin scope") {
		t.Fatalf("unload with read only: %d %s", a.code, a.body)
	}
	// A bad Authorization decides even beside a good x-api-key.
	if a = call(t, c, "POST", inferURL("fraud-a"), inferBody, "Authorization", "Basic eA==", "X-Api-Key", "sk-pay"); a.code != 401 {
		t.Fatalf("bad authorization with a good key: %d", a.code)
	}
	// A credential sent twice is refused, not the first one taken (as in single-server mode).
	if a = call(t, c, "POST", inferURL("fraud-a"), inferBody, "X-Api-Key", "sk-pay", "X-Api-Key", "sk-pay"); a.code != 401 ||
		!strings.Contains(errorOf(t, a), "more than one x-api-key header") {
		t.Fatalf("a key sent twice: %d %s", a.code, a.body)
	}

	// The principal's bucket (burst 3: one taken above, two left), then the model's.
	for i := 0; i < 2; i++ {
		if a = call(t, c, "POST", inferURL("fraud-a"), inferBody, "X-Api-Key", "sk-pay"); a.code != 200 {
			t.Fatalf("request %d within the burst: %d", i, a.code)
		}
	}
	before := up.count()
	a = call(t, c, "POST", inferURL("fraud-a"), inferBody, "X-Api-Key", "sk-pay")
	if a.code != 429 || a.header.Get("Retry-After") == "" || a.header.Get("Retry-After") == "0" ||
		!strings.Contains(errorOf(t, a), "principal 'payments' is over its rate limit") {
		t.Fatalf("over the principal's rate: %d %q %v", a.code, a.body, a.header)
	}
	if a = call(t, c, "POST", inferURL("iris"), inferBody, "X-Api-Key", "sk-all"); a.code != 200 {
		t.Fatalf("iris, first: %d %s", a.code, a.body)
	}
	if a = call(t, c, "POST", inferURL("iris"), inferBody, "X-Api-Key", "sk-all"); a.code != 429 ||
		!strings.Contains(errorOf(t, a), "model 'iris' is over its rate limit") {
		t.Fatalf("over the model's rate: %d %s", a.code, a.body)
	}
	if got := up.count(); got != before+1 {
		t.Fatalf("the upstream saw %d requests after the refusals, want %d (only the allowed one)", got, before+1)
	}
}

func TestRateLimitsWithoutAuthentication(t *testing.T) {
	up := newFake(t, "a", "iris:1")
	_, srv := newTestPool(t, "auth: {rate_limits: [{model: 'ir*', per_second: 0.001}]}\n", up)
	if code, _ := infer(t, srv, "/v2/models/iris/infer", inferBody); code != 200 {
		t.Fatalf("first: %d", code)
	}
	if code, body := infer(t, srv, "/v2/models/iris/infer", inferBody); code != 429 || !strings.Contains(body, "over its rate limit") {
		t.Fatalf("second: %d %s", code, body)
	}
	if a := call(t, http.DefaultClient, "GET", srv.URL+"/v2", ""); a.code == 401 {
		t.Fatal("authentication is off: no credential is needed")
	}
}

// countingGRPC is a gRPC upstream serving model m that counts the calls reaching it.
func countingGRPC(t *testing.T) (string, *atomic.Int64) {
	var calls atomic.Int64
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.ForceServerCodecV2(rawCodec{}), grpc.UnknownServiceHandler(func(_ any, ss grpc.ServerStream) error {
		method, _ := grpc.MethodFromServerStream(ss)
		if method == methodRepositoryIndex {
			var req rawMsg
			if err := ss.RecvMsg(&req); err != nil {
				return err
			}
			var entry, b []byte
			entry = protowire.AppendTag(entry, 1, protowire.BytesType)
			entry = protowire.AppendString(entry, "m")
			b = protowire.AppendTag(b, 1, protowire.BytesType)
			b = protowire.AppendBytes(b, entry)
			return ss.SendMsg(&rawMsg{Data: mem.BufferSlice{mem.SliceBuffer(b)}})
		}
		for { // every message is answered by its own bytes (unary and streaming alike)
			var req rawMsg
			if err := ss.RecvMsg(&req); err != nil {
				if err == io.EOF {
					return nil
				}
				return err
			}
			if method != methodServerReady {
				calls.Add(1)
			}
			if err := ss.SendMsg(&req); err != nil {
				return err
			}
		}
	}))
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String(), &calls
}

func modelMsg(model string) *rawMsg {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, model)
	return &rawMsg{Data: mem.BufferSlice{mem.SliceBuffer(b)}}
}

func TestGRPCAuthRefusesBeforeTheUpstream(t *testing.T) {
	dir := t.TempDir()
	keys := writeKeys(t, dir)
	addr, calls := countingGRPC(t)
	cfg, err := config.Parse("t.yaml", []byte(fmt.Sprintf(
		"upstreams: [{name: g, grpc: '%s'}]\nauth: {keys: %s, rate_limits: [{model: m, per_second: 0.001, burst: 3}]}\n", addr, keys)))
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(cfg, clock.Real{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	p.discoverAll()
	srv, hs := p.GRPCServer()
	hs.SetServingStatus("", 1)
	lis, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(lis)
	defer srv.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	withKey := func(key string) context.Context { return metadata.AppendToOutgoingContext(ctx, "x-api-key", key) }
	invoke := func(ctx context.Context, method string, msg *rawMsg, opts ...grpc.CallOption) error {
		var resp rawMsg
		return conn.Invoke(ctx, inferencePrefix+method, msg, &resp, opts...)
	}

	if err := invoke(ctx, "ModelInfer", modelMsg("m")); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("no credential: %v", err)
	}
	err = invoke(withKey("sk-pay"), "ModelInfer", modelMsg("m"))
	if want := "principal 'payments' may not infer on model 'm' (its scopes: infer:fraud-*, read)"; status.Code(err) != codes.PermissionDenied ||
		status.Convert(err).Message() != want {
		t.Fatalf("without the scope: %v, want PERMISSION_DENIED %q", err, want)
	}
	if err := invoke(withKey("sk-all"), "ModelMetadata", modelMsg("m")); status.Code(err) != codes.OK {
		t.Fatalf("admin reads metadata: %v", err)
	}
	if err := invoke(withKey("sk-pay"), "RepositoryModelLoad", modelMsg("m")); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("load with read: %v", err)
	}
	if err := invoke(ctx, "ServerLive", &rawMsg{}); status.Code(err) != codes.OK {
		t.Fatalf("ServerLive is open health: %v", err)
	}
	var health rawMsg
	if err := conn.Invoke(ctx, "/grpc.health.v1.Health/Check", &rawMsg{}, &health); status.Code(err) != codes.OK {
		t.Fatalf("grpc.health.v1 Check is open health: %v", err)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("upstream calls %d, want 1 (the metadata call; refusals never reach it)", n)
	}

	if err := invoke(withKey("sk-all"), "ModelInfer", modelMsg("m")); err != nil {
		t.Fatalf("allowed: %v", err)
	}
	// A stream: every message is checked; the one over the model's rate (burst 3: one
	// taken above) ends the call and never reaches the upstream.
	stream, err := conn.NewStream(withKey("sk-all"), &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, inferencePrefix+"ModelStreamInfer")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := stream.SendMsg(modelMsg("m")); err != nil {
			t.Fatal(err)
		}
		var resp rawMsg
		if err := stream.RecvMsg(&resp); err != nil {
			t.Fatalf("stream message %d: %v", i, err)
		}
	}
	if err := stream.SendMsg(modelMsg("m")); err != nil {
		t.Fatal(err)
	}
	var resp rawMsg
	err = stream.RecvMsg(&resp)
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "model 'm' is over its rate limit") {
		t.Fatalf("stream message over the rate: %v", err)
	}
	if ra := stream.Trailer().Get("retry-after"); len(ra) != 1 || ra[0] == "0" {
		t.Fatalf("retry-after trailer %v", stream.Trailer())
	}
	var trailer metadata.MD
	err = invoke(withKey("sk-all"), "ModelInfer", modelMsg("m"), grpc.Trailer(&trailer))
	if status.Code(err) != codes.ResourceExhausted || len(trailer.Get("retry-after")) != 1 {
		t.Fatalf("unary over the rate: %v, trailer %v", err, trailer)
	}
	if n := calls.Load(); n != 4 {
		t.Fatalf("upstream calls %d, want 4 (metadata, one infer, two stream messages)", n)
	}
}

func TestMutualTLSListenerAndTLSUpstreamWithItsOwnKey(t *testing.T) {
	dir := t.TempDir()
	certs := tlsconftest.Write(t, dir, "batch.internal")
	keys := writeKeys(t, dir)
	if err := os.WriteFile(filepath.Join(dir, "upstream.key"), []byte("sk-upstream\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The upstream requires the gateway's client certificate, and records what it got.
	var mu sync.Mutex
	var gotKey, gotAuthz, gotPeer string
	upstreamPair, err := tls.LoadX509KeyPair(certs.ServerCert, certs.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	upstreamTLS, err := tlsconf.Server(tlsconf.Files{Cert: certs.ServerCert, Key: certs.ServerKey, ClientCA: certs.CAFile}, nil)
	if err != nil {
		t.Fatal(err)
	}
	upstreamTLS.Certificates = []tls.Certificate{upstreamPair} // httptest adds its own pair otherwise
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v2/repository/index":
			if r.Header.Get("X-Api-Key") != "sk-upstream" {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			w.Write([]byte(`[{"name": "fraud-a", "version": "1", "state": "READY"}]`))
		case "/v2/health/ready":
		default:
			mu.Lock()
			gotKey, gotAuthz, gotPeer = r.Header.Get("X-Api-Key"), r.Header.Get("Authorization"), tlsconf.PeerName(r.TLS)
			mu.Unlock()
			w.Write([]byte(`{"ok": true}`))
		}
	}))
	up.TLS = upstreamTLS
	up.StartTLS()
	defer up.Close()

	cfg, err := config.Parse(filepath.Join(dir, "g.yaml"), []byte(fmt.Sprintf(`
listen: {http: 127.0.0.1:0, tls: {cert: server.pem, key: server.key, client_ca: ca.pem, client_auth: request}}
auth: {keys: keys.yaml}
upstreams: [{name: a, rest: '%s', tls: {ca: ca.pem, cert: client.pem, key: client.key}, api_key_file: upstream.key}]
`, up.URL)))
	if err != nil {
		t.Fatal(err)
	}
	_ = keys
	p, err := New(cfg, clock.Real{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	p.discoverAll()
	if p.snap.Load().lookup("fraud-a", "") == nil {
		t.Fatal("discovery over TLS with the upstream's key found no model")
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gw := &http.Server{Handler: p.HTTPHandler()}
	go gw.Serve(tls.NewListener(lis, p.serverTLS))
	defer gw.Close()
	url := "https://" + lis.Addr().String() + "/v2/models/fraud-a/infer"

	clientTLS, err := tlsconf.Client(certs.CAFile, certs.ClientCert, certs.ClientKey, "")
	if err != nil {
		t.Fatal(err)
	}
	withCert := &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS}}
	// The certificate's subject batch.internal is a principal with infer:*.
	if a := call(t, withCert, "POST", url, inferBody); a.code != 200 {
		t.Fatalf("mutual TLS principal: %d %s", a.code, a.body)
	}
	mu.Lock()
	if gotKey != "sk-upstream" || gotAuthz != "" || gotPeer != "batch.internal" {
		t.Fatalf("upstream saw x-api-key %q, authorization %q, peer %q: want the gateway's key and certificate", gotKey, gotAuthz, gotPeer)
	}
	mu.Unlock()
	// With a key of its own the client's key is not passed on either.
	if a := call(t, withCert, "POST", url, inferBody, "X-Api-Key", "sk-all"); a.code != 200 {
		t.Fatalf("admin key: %d %s", a.code, a.body)
	}
	mu.Lock()
	if gotKey != "sk-upstream" {
		t.Fatalf("the upstream got the client's key %q", gotKey)
	}
	mu.Unlock()

	// request mode: no certificate is accepted at the handshake, then authentication applies.
	noCertTLS, _ := tlsconf.Client(certs.CAFile, "", "", "")
	noCert := &http.Client{Transport: &http.Transport{TLSClientConfig: noCertTLS}}
	if a := call(t, noCert, "POST", url, inferBody); a.code != 401 {
		t.Fatalf("no certificate, no credential: %d", a.code)
	}
	if a := call(t, noCert, "POST", url, inferBody, "X-Api-Key", "sk-all"); a.code != 200 {
		t.Fatalf("no certificate, a key: %d %s", a.code, a.body)
	}
	// Plaintext HTTP to the TLS listener is not served.
	if resp, err := http.Post("http://"+lis.Addr().String()+"/v2/models/fraud-a/infer", "application/json", strings.NewReader(inferBody)); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatal("plaintext request answered 200 by the TLS listener")
		}
	}
}

func TestGRPCListenerTLSAndTLSUpstream(t *testing.T) {
	dir := t.TempDir()
	certs := tlsconftest.Write(t, dir, "gateway")
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	upTLS, err := tlsconf.Server(tlsconf.Files{Cert: certs.ServerCert, Key: certs.ServerKey, ClientCA: certs.CAFile}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var peers sync.Map
	upSrv := grpc.NewServer(grpc.Creds(credentials.NewTLS(upTLS)), grpc.ForceServerCodecV2(rawCodec{}),
		grpc.UnknownServiceHandler(func(_ any, ss grpc.ServerStream) error {
			var req rawMsg
			if err := ss.RecvMsg(&req); err != nil {
				return err
			}
			method, _ := grpc.MethodFromServerStream(ss)
			if method == methodRepositoryIndex {
				var entry, b []byte
				entry = protowire.AppendTag(entry, 1, protowire.BytesType)
				entry = protowire.AppendString(entry, "m")
				b = protowire.AppendTag(b, 1, protowire.BytesType)
				b = protowire.AppendBytes(b, entry)
				return ss.SendMsg(&rawMsg{Data: mem.BufferSlice{mem.SliceBuffer(b)}})
			}
			md, _ := metadata.FromIncomingContext(ss.Context())
			peers.Store("authorization", strings.Join(md.Get("authorization"), ","))
			return ss.SendMsg(&req)
		}))
	go upSrv.Serve(lis)
	defer upSrv.Stop()

	cfg, err := config.Parse(filepath.Join(dir, "g.yaml"), []byte(fmt.Sprintf(`
listen: {grpc: 127.0.0.1:0, tls: {cert: server.pem, key: server.key}}
upstream_tls: {ca: ca.pem, cert: client.pem, key: client.key, server_name: upstream.test}
upstreams: [{name: g, grpc: '%s'}]
`, lis.Addr())))
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(cfg, clock.Real{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	p.discoverAll()
	gw, _ := p.GRPCServer()
	gwLis, _ := net.Listen("tcp", "127.0.0.1:0")
	go gw.Serve(gwLis)
	defer gw.Stop()

	clientTLS, err := tlsconf.Client(certs.CAFile, "", "", "")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(gwLis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(clientTLS)),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var resp rawMsg
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer client-token")
	if err := conn.Invoke(ctx, inferencePrefix+"ModelInfer", modelMsg("m"), &resp); err != nil {
		t.Fatalf("TLS client -> gateway -> mutual-TLS upstream: %v", err)
	}
	if v, _ := peers.Load("authorization"); v != "Bearer client-token" {
		t.Fatalf("the upstream saw authorization %q, want the client's (no api_key_file)", v)
	}
	plain, _ := grpc.NewClient(gwLis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})))
	defer plain.Close()
	if err := plain.Invoke(ctx, inferencePrefix+"ModelInfer", modelMsg("m"), &resp); status.Code(err) != codes.Unavailable {
		t.Fatalf("plaintext client against the TLS listener: %v", err)
	}
}

func TestWarningWhenExposedWithoutAuth(t *testing.T) {
	cfg := config.Default()
	cfg.File = "g.yaml"
	loop := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8000}
	if w := exposedWithoutAuth(cfg, loop, &net.TCPAddr{IP: net.IPv6loopback, Port: 8001}); w != "" {
		t.Fatalf("loopback: %q", w)
	}
	all := &net.TCPAddr{IP: net.IPv4zero, Port: 8001}
	w := exposedWithoutAuth(cfg, loop, all)
	if !strings.Contains(w, "0.0.0.0:8001 (not loopback)") || !strings.Contains(w, "auth:") || strings.Contains(w, "\n") ||
		strings.Contains(w, "127.0.0.1") {
		t.Fatalf("warning %q", w)
	}
	cfg.Auth.KeysFile = "keys.yaml"
	if w := exposedWithoutAuth(cfg, all); w != "" {
		t.Fatalf("with authentication: %q", w)
	}
}

func TestClosedHealthNeedsRead(t *testing.T) {
	keys := writeKeys(t, t.TempDir())
	up := newFake(t, "a", "iris:1")
	_, srv := newTestPool(t, "auth: {keys: "+keys+", open_health: false}\n", up)
	c := http.DefaultClient
	for _, path := range []string{"/v2/health/live", "/v2/health/ready"} {
		if a := call(t, c, "GET", srv.URL+path, ""); a.code != 401 {
			t.Fatalf("%s without a credential: %d", path, a.code)
		}
		if a := call(t, c, "GET", srv.URL+path, "", "X-Api-Key", "sk-ops"); a.code != 200 {
			t.Fatalf("%s with read: %d", path, a.code)
		}
	}
	if a := call(t, c, "GET", srv.URL+"/v2/health/live", "", "X-Api-Key", "sk-bad"); a.code != 401 {
		t.Fatalf("a bad key: %d", a.code)
	}
}
