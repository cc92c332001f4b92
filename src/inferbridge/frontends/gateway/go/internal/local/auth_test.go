package local

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	v1reflectiongrpc "google.golang.org/grpc/reflection/grpc_reflection_v1"
	v1reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/inferbridge/inferbridge/gateway/internal/auth"
	"github.com/inferbridge/inferbridge/gateway/internal/clock"
	"github.com/inferbridge/inferbridge/gateway/internal/tlsconf"
	"github.com/inferbridge/inferbridge/gateway/internal/tlsconf/tlsconftest"
)

const (
	paymentsKey = "ib_payments_key_0123456789"
	readerKey   = "ib_reader_key_0123456789"
)

func sha(key string) string {
	d := sha256.Sum256([]byte(key))
	return hex.EncodeToString(d[:])
}

// testAuthority has payments (infer:fraud-*, read; 1/s, burst 3), reader (read) and the
// mTLS subject batch.internal (infer:*), on a fake clock.
func testAuthority(t *testing.T, openHealth bool) (*auth.Authority, *clock.Fake) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keys.yaml")
	keys := fmt.Sprintf(`keys:
  - name: payments
    sha256: %s
    scopes: ["infer:fraud-*", read]
    rate: {per_second: 1, burst: 3}
  - name: reader
    sha256: %s
    scopes: [read]
  - name: batch
    subject: batch.internal
    scopes: ["infer:*"]
`, sha(paymentsKey), sha(readerKey))
	if err := os.WriteFile(path, []byte(keys), 0o600); err != nil {
		t.Fatal(err)
	}
	fake := clock.NewFake()
	a, err := auth.New(auth.Config{KeysFile: path, OpenHealth: openHealth, Clock: fake}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return a, fake
}

// authDescriptors are testDescriptors with ModelStreamInfer, a streaming method.
func authDescriptors(t testing.TB) []byte {
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(testDescriptors(t), &set); err != nil {
		t.Fatal(err)
	}
	svc := set.File[0].Service[0]
	svc.Method = append(svc.Method, &descriptorpb.MethodDescriptorProto{
		Name:            proto.String("ModelStreamInfer"),
		InputType:       proto.String(".inference.ModelInferRequest"),
		OutputType:      proto.String(".inference.ModelInferResponse"),
		ClientStreaming: proto.Bool(true),
		ServerStreaming: proto.Bool(true),
	})
	b, err := proto.Marshal(&set)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// noFrame checks that the gateway forwarded nothing (more) to the backend.
func (h *harness) noFrame() {
	h.t.Helper()
	select {
	case f := <-h.frames:
		h.t.Fatalf("forwarded a frame of kind %d: %q", f.kind, f.body)
	case <-time.After(50 * time.Millisecond):
	}
}

func errorMessage(t *testing.T, body []byte) string {
	t.Helper()
	var doc struct{ Error string }
	if err := json.Unmarshal(body, &doc); err != nil || doc.Error == "" {
		t.Fatalf("body %q is not {\"error\": ...}", body)
	}
	return doc.Error
}

func TestHTTPAuth(t *testing.T) {
	a, fake := testAuthority(t, true)
	h := newHarness(t, config{maxRecvBytes: 1 << 20, auth: a, defaultModel: "iris"})
	client := &http.Client{}

	request := func(method, path string, headers map[string]string) *http.Request {
		req := mustRequest(t, method, h.httpURL+path, strings.NewReader(`{}`))
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		return req
	}
	refused := []struct {
		name, method, path string
		headers            map[string]string
		status             int
		wwwAuth, message   string
	}{
		{"no credential", "POST", "/v2/models/iris/infer", nil, 401, `Bearer realm="inferbridge"`,
			"authentication required: send an API key (x-api-key: <key>) or a bearer credential (Authorization: Bearer <credential>)"},
		{"unknown key", "POST", "/v2/models/iris/infer", map[string]string{"X-Api-Key": "ib_wrong_key"}, 401,
			`Bearer realm="inferbridge", error="invalid_token"`, "the API key is not valid"},
		{"bad bearer beats a good key", "POST", "/v2/models/fraud-1/infer",
			map[string]string{"Authorization": "Bearer ib_wrong_key", "X-Api-Key": paymentsKey}, 401,
			`Bearer realm="inferbridge", error="invalid_token"`, "the API key is not valid"},
		{"no scope", "POST", "/v2/models/iris/infer", map[string]string{"X-Api-Key": paymentsKey}, 403, "",
			"principal 'payments' may not infer on model 'iris' (its scopes: infer:fraud-*, read)"},
		{"predict is the default model", "POST", "/predict", map[string]string{"X-Api-Key": paymentsKey}, 403, "",
			"principal 'payments' may not infer on model 'iris' (its scopes: infer:fraud-*, read)"},
		{"vision service default", "POST", "/v1/vision/faces", map[string]string{"X-Api-Key": paymentsKey}, 403, "",
			"principal 'payments' may not infer on model 'face_detection' (its scopes: infer:fraud-*, read)"},
		{"read may not load", "POST", "/v2/repository/models/iris/load", map[string]string{"X-Api-Key": readerKey}, 403, "",
			"principal 'reader' may not change the server (it needs the admin scope) (its scopes: read)"},
		{"unknown route needs a credential", "GET", "/nowhere", nil, 401, `Bearer realm="inferbridge"`, ""},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			fake.Advance(time.Minute)
			r := waitHTTP(t, h.do(client, request(tc.method, tc.path, tc.headers)))
			if r.err != nil || r.status != tc.status {
				t.Fatalf("got %d %v %q, want %d", r.status, r.err, r.body, tc.status)
			}
			if got := r.header.Get("WWW-Authenticate"); got != tc.wwwAuth {
				t.Fatalf("WWW-Authenticate %q, want %q", got, tc.wwwAuth)
			}
			msg := errorMessage(t, r.body)
			if tc.message != "" && msg != tc.message {
				t.Fatalf("message %q, want %q", msg, tc.message)
			}
			for _, key := range []string{paymentsKey, readerKey, "ib_wrong_key"} {
				if strings.Contains(msg, key) {
					t.Fatalf("the message quotes a key: %q", msg)
				}
			}
			h.noFrame()
		})
	}

	t.Run("allowed, with the principal and without the client's", func(t *testing.T) {
		fake.Advance(time.Minute)
		req := request("POST", "/v2/models/fraud-1/infer?x=1", map[string]string{
			"Authorization": "Bearer " + paymentsKey, "X-Inferbridge-Principal": "admin"})
		req.Header.Add("x-INFERBRIDGE-principal", "admin2")
		done := h.do(client, req)
		f := h.next().http(t)
		if got := f.header(principalKey); len(got) != 1 || got[0] != "payments" {
			t.Fatalf("x-inferbridge-principal %q, want [payments] (headers %q)", got, f.headers)
		}
		h.replyHTTP(f.id, 200, nil, []byte("ok"))
		if r := waitHTTP(t, done); r.status != 200 || string(r.body) != "ok" {
			t.Fatalf("%+v", r)
		}
	})

	t.Run("open health needs no credential and has no principal", func(t *testing.T) {
		req := request("GET", "/v2/health/ready", map[string]string{"X-Inferbridge-Principal": "evil"})
		done := h.do(client, req)
		f := h.next().http(t)
		if got := f.header(principalKey); len(got) != 0 {
			t.Fatalf("a client's principal header was forwarded: %q", got)
		}
		h.replyHTTP(f.id, 200, nil, nil)
		if r := waitHTTP(t, done); r.status != 200 {
			t.Fatalf("%+v", r)
		}
	})

	t.Run("rate limit", func(t *testing.T) {
		fake.Advance(time.Minute) // payments' bucket (burst 3) is full
		for i := 0; i < 3; i++ {
			done := h.do(client, request("POST", "/v2/models/fraud-1/infer", map[string]string{"X-Api-Key": paymentsKey}))
			h.replyHTTP(h.next().id, 200, nil, nil)
			if r := waitHTTP(t, done); r.status != 200 {
				t.Fatalf("request %d: %+v", i, r)
			}
		}
		r := waitHTTP(t, h.do(client, request("POST", "/v2/models/fraud-1/infer", map[string]string{"X-Api-Key": paymentsKey})))
		if r.status != 429 || r.header.Get("Retry-After") != "1" ||
			errorMessage(t, r.body) != "principal 'payments' is over its rate limit of 1 requests/s (burst 3); retry in 1 s" {
			t.Fatalf("over the rate: %d %q %q", r.status, r.header.Get("Retry-After"), r.body)
		}
		h.noFrame()
	})

	t.Run("two Authorization headers", func(t *testing.T) {
		req := request("GET", "/v2", nil)
		req.Header.Add("Authorization", "Bearer "+readerKey)
		req.Header.Add("Authorization", "Bearer "+paymentsKey)
		r := waitHTTP(t, h.do(client, req))
		if r.status != 401 || !strings.Contains(errorMessage(t, r.body), "more than one Authorization header") {
			t.Fatalf("%d %q", r.status, r.body)
		}
	})

	t.Run("refused before the body is read", func(t *testing.T) {
		// Headers announcing a body far over --max-recv-bytes and no body at all: the
		// answer is the 401, at once, not a 413 or a wait for the body.
		conn, err := net.Dial("tcp", strings.TrimPrefix(h.httpURL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(conn, "POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Fatalf("status %d, want 401", resp.StatusCode)
		}
		h.noFrame()
	})
}

func TestHTTPClosedHealth(t *testing.T) {
	a, _ := testAuthority(t, false)
	h := newHarness(t, config{maxRecvBytes: 1 << 20, auth: a})
	r := waitHTTP(t, h.do(http.DefaultClient, mustRequest(t, "GET", h.httpURL+"/v2/health/live", nil)))
	if r.status != 401 {
		t.Fatalf("health without a credential: %d %q", r.status, r.body)
	}
	req := mustRequest(t, "GET", h.httpURL+"/v2/health/live", nil)
	req.Header.Set("X-Api-Key", readerKey)
	done := h.do(http.DefaultClient, req)
	f := h.next().http(t)
	if got := f.header(principalKey); len(got) != 1 || got[0] != "reader" {
		t.Fatalf("principal %q", got)
	}
	h.replyHTTP(f.id, 200, nil, nil)
	if r := waitHTTP(t, done); r.status != 200 {
		t.Fatalf("%+v", r)
	}
}

func withKey(key string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "x-api-key", key)
}

func TestGRPCAuth(t *testing.T) {
	a, fake := testAuthority(t, true)
	h := newHarnessWith(t, config{maxRecvBytes: 1 << 20, auth: a, defaultModel: "iris"}, authDescriptors(t))
	bg := context.Background()

	wantCode(t, wait(t, h.invoke(bg, inferMethod, inferRequest("fraud-1"))).err, codes.Unauthenticated, "authentication required")
	wantCode(t, wait(t, h.invoke(withKey("ib_wrong_key"), inferMethod, inferRequest("fraud-1"))).err, codes.Unauthenticated, "the API key is not valid")
	wantCode(t, wait(t, h.invoke(withKey(paymentsKey), inferMethod, inferRequest("iris"))).err, codes.PermissionDenied,
		"principal 'payments' may not infer on model 'iris' (its scopes: infer:fraud-*, read)")
	// model_name twice: protobuf's parsers take the last, and so does the check.
	twice := append(inferRequest("fraud-1"), inferRequest("iris")...)
	wantCode(t, wait(t, h.invoke(withKey(paymentsKey), inferMethod, twice)).err, codes.PermissionDenied, "model 'iris'")
	wantCode(t, wait(t, h.invoke(withKey(paymentsKey), auth.GRPCPredict, nil)).err, codes.PermissionDenied, "model 'iris'")
	wantCode(t, wait(t, h.invoke(withKey(readerKey), "/inference.GRPCInferenceService/RepositoryModelLoad", nil)).err,
		codes.PermissionDenied, "needs the admin scope")
	// Reflection is the gateway's own; it needs a credential too.
	rc, err := v1reflectiongrpc.NewServerReflectionClient(h.cc).ServerReflectionInfo(bg)
	if err != nil {
		t.Fatal(err)
	}
	rc.Send(&v1reflectionpb.ServerReflectionRequest{MessageRequest: &v1reflectionpb.ServerReflectionRequest_ListServices{}})
	_, err = rc.Recv()
	wantCode(t, err, codes.Unauthenticated, "authentication required")
	h.noFrame()

	// Allowed: the principal travels as metadata, a client's own is dropped.
	ctx := metadata.AppendToOutgoingContext(withKey(paymentsKey), principalKey, "admin", "x-other", "kept")
	done := h.invoke(ctx, inferMethod, inferRequest("fraud-1"))
	f := h.next()
	_, _, meta, _ := f.callMeta(t)
	if want := [][2]string{{"x-api-key", paymentsKey}, {principalKey, "payments"}, {"x-other", "kept"}}; fmt.Sprint(meta) != fmt.Sprint(want) {
		t.Fatalf("metadata %q, want %q", meta, want)
	}
	h.reply(f.id, codes.OK, []byte("ok"))
	if r := wait(t, done); r.err != nil {
		t.Fatal(r.err)
	}

	// Health is open.
	hc := healthpb.NewHealthClient(h.cc)
	if _, err := hc.Check(bg, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("open health: %v", err)
	}

	// Over the rate: RESOURCE_EXHAUSTED with the retry-after trailer.
	fake.Advance(time.Minute)
	for i := 0; i < 3; i++ {
		done := h.invoke(withKey(paymentsKey), inferMethod, inferRequest("fraud-1"))
		h.reply(h.next().id, codes.OK, nil)
		if r := wait(t, done); r.err != nil {
			t.Fatal(r.err)
		}
	}
	var trailer metadata.MD
	r := wait(t, h.invoke(withKey(paymentsKey), inferMethod, inferRequest("fraud-1"), grpc.Trailer(&trailer)))
	wantCode(t, r.err, codes.ResourceExhausted, "principal 'payments' is over its rate limit")
	if got := trailer.Get("retry-after"); len(got) != 1 || got[0] != "1" {
		t.Fatalf("retry-after trailer %q", got)
	}
	h.noFrame()
}

func TestGRPCClosedHealth(t *testing.T) {
	a, _ := testAuthority(t, false)
	h := newHarness(t, config{maxRecvBytes: 1 << 20, auth: a})
	hc := healthpb.NewHealthClient(h.cc)
	_, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{})
	wantCode(t, err, codes.Unauthenticated, "authentication required")
	if _, err := hc.Check(withKey(readerKey), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("health with read: %v", err)
	}
	_, err = hc.Check(withKey(paymentsKey+"x"), &healthpb.HealthCheckRequest{})
	wantCode(t, err, codes.Unauthenticated, "the API key is not valid")
}

func TestGRPCStreamAuth(t *testing.T) {
	a, _ := testAuthority(t, true)
	h := newHarnessWith(t, config{maxRecvBytes: 1 << 20, auth: a}, authDescriptors(t))
	desc := &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}

	// Without a credential the stream does not open.
	cs, err := h.cc.NewStream(context.Background(), desc, auth.GRPCModelStreamInfer)
	if err != nil {
		t.Fatal(err)
	}
	_, err = recvRaw(cs)
	wantCode(t, err, codes.Unauthenticated, "authentication required")
	h.noFrame()

	// With one, every message is checked on its model.
	cs, err = h.cc.NewStream(withKey(paymentsKey), desc, auth.GRPCModelStreamInfer)
	if err != nil {
		t.Fatal(err)
	}
	open := h.nextKind(kindStreamOpen)
	_, _, meta, _ := openBody(t, open)
	if len(meta) != 2 || meta[1] != [2]string{principalKey, "payments"} {
		t.Fatalf("STREAM-OPEN metadata %q", meta)
	}
	sendRaw(t, cs, inferRequest("fraud-1"))
	if m := h.nextKind(kindStreamMsg); m.id != open.id || string(m.body) != string(inferRequest("fraud-1")) {
		t.Fatalf("STREAM-MSG %+v", m)
	}
	sendRaw(t, cs, inferRequest("iris"))
	_, err = recvRaw(cs)
	wantCode(t, err, codes.PermissionDenied, "principal 'payments' may not infer on model 'iris'")
	if c := h.nextKind(kindCancel); c.id != open.id {
		t.Fatalf("CANCEL of stream %d, want %d", c.id, open.id)
	}
}

func TestModelRateWithoutAuthentication(t *testing.T) {
	fake := clock.NewFake()
	a, err := auth.New(auth.Config{Clock: fake, ModelRates: []auth.ModelRate{{Glob: "m*", Rate: auth.Rate{PerSecond: 1, Burst: 1}}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, config{maxRecvBytes: 1 << 20, auth: a})
	done := h.invoke(context.Background(), inferMethod, inferRequest("m1"))
	f := h.next()
	if _, _, meta, _ := f.callMeta(t); len(meta) != 0 {
		t.Fatalf("a principal without authentication: %q", meta)
	}
	h.reply(f.id, codes.OK, nil)
	if r := wait(t, done); r.err != nil {
		t.Fatal(r.err)
	}
	wantCode(t, wait(t, h.invoke(context.Background(), inferMethod, inferRequest("m1"))).err,
		codes.ResourceExhausted, "model 'm1' is over its rate limit of 1 requests/s (burst 1); retry in 1 s")
	r := waitHTTP(t, h.do(http.DefaultClient, mustRequest(t, "POST", h.httpURL+"/v2/models/m1/infer", strings.NewReader("{}"))))
	if r.status != 429 || r.header.Get("Retry-After") != "1" {
		t.Fatalf("REST over the model's rate: %d %q", r.status, r.body)
	}
	h.noFrame()
}

func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	files := tlsconftest.Write(t, dir, "batch.internal")
	serverTLS, err := tlsconf.Server(tlsconf.Files{Cert: files.ServerCert, Key: files.ServerKey,
		ClientCA: files.CAFile, ClientAuth: tlsconf.ClientAuthRequest}, nil)
	if err != nil {
		t.Fatal(err)
	}
	clientTLS, err := tlsconf.Client(files.CAFile, files.ClientCert, files.ClientKey, "upstream.test")
	if err != nil {
		t.Fatal(err)
	}
	a, _ := testAuthority(t, true)
	h := newHarnessTLS(t, config{maxRecvBytes: 1 << 20, auth: a, tls: serverTLS}, authDescriptors(t), clientTLS)

	// gRPC: the certificate's CN is the principal.
	done := h.invoke(context.Background(), inferMethod, inferRequest("iris"))
	f := h.next()
	if _, _, meta, _ := f.callMeta(t); len(meta) != 1 || meta[0] != [2]string{principalKey, "batch"} {
		t.Fatalf("gRPC metadata %q", meta)
	}
	h.reply(f.id, codes.OK, nil)
	if r := wait(t, done); r.err != nil {
		t.Fatal(r.err)
	}

	// REST over TLS (HTTP/1.1), with and without the client certificate.
	withCert := &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS, ForceAttemptHTTP2: true}}
	rdone := h.do(withCert, mustRequest(t, "POST", h.httpURL+"/v2/models/iris/infer", strings.NewReader("{}")))
	hf := h.next().http(t)
	if got := hf.header(principalKey); len(got) != 1 || got[0] != "batch" {
		t.Fatalf("REST principal %q", got)
	}
	h.replyHTTP(hf.id, 200, nil, nil)
	r := waitHTTP(t, rdone)
	if r.status != 200 {
		t.Fatalf("%+v", r)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(files.CA.PEM)
	noCert := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "upstream.test"}}}
	r = waitHTTP(t, h.do(noCert, mustRequest(t, "POST", h.httpURL+"/v2/models/iris/infer", strings.NewReader("{}"))))
	if r.status != 401 {
		t.Fatalf("no certificate under request: %d %q", r.status, r.body)
	}
	// A plain-text client gets no answer from the TLS listener.
	plain := waitHTTP(t, h.do(http.DefaultClient, mustRequest(t, "GET", strings.Replace(h.httpURL, "https", "http", 1)+"/v2", nil)))
	if plain.err == nil && plain.status == 200 {
		t.Fatalf("plain HTTP served over the TLS listener: %+v", plain)
	}
	h.noFrame()
}

// TestPrincipalMetadataAllocatesNothing: without a principal, dropping a client's
// x-inferbridge-principal keeps the metadata path free of allocations.
func TestPrincipalMetadataAllocatesNothing(t *testing.T) {
	ctx := metadata.NewIncomingContext(context.Background(), metadata.MD{principalKey: {"evil"}})
	if kv, _ := callMetadata(ctx, ""); len(kv) != 0 {
		t.Fatalf("a client's principal was forwarded: %q", kv)
	}
	if n := testing.AllocsPerRun(100, func() { callMetadata(ctx, "") }); n != 0 {
		t.Fatalf("%v allocations", n)
	}
	if kv, _ := callMetadata(ctx, "p"); fmt.Sprint(kv) != fmt.Sprint([]string{principalKey, "p"}) {
		t.Fatalf("with a principal: %q", kv)
	}
}

func rawBody(b []byte) mem.BufferSlice { return mem.BufferSlice{mem.SliceBuffer(b)} }

// accessFrame decodes an ACCESS body: protocol, method, route, model, status, then
// trace and principal (the duration and byte counts in nums).
func accessFrame(t *testing.T, f backendFrame) (fields []string, nums [3]uint64) {
	t.Helper()
	if f.kind != kindAccess || f.id != 0 {
		t.Fatalf("frame kind %d id %d, want ACCESS (%d) with id 0", f.kind, f.id, kindAccess)
	}
	b := f.body
	str := func() string {
		n := int(binary.LittleEndian.Uint16(b))
		s := string(b[2 : 2+n])
		b = b[2+n:]
		return s
	}
	for range 5 {
		fields = append(fields, str())
	}
	for i := range nums {
		nums[i] = binary.LittleEndian.Uint64(b)
		b = b[8:]
	}
	fields = append(fields, str(), str())
	if len(b) != 0 {
		t.Fatalf("%d bytes after the ACCESS body", len(b))
	}
	return fields, nums
}

func TestAccessFrames(t *testing.T) {
	a, _ := testAuthority(t, true)
	h := newHarnessWith(t, config{maxRecvBytes: 1 << 20, auth: a, defaultModel: "iris", accessFrames: true}, authDescriptors(t))
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

	req := mustRequest(t, "POST", h.httpURL+"/v2/models/iris/infer", strings.NewReader("{}"))
	req.Header.Set("Traceparent", tp)
	r := waitHTTP(t, h.do(http.DefaultClient, req))
	if r.status != 401 {
		t.Fatalf("%+v", r)
	}
	fields, nums := accessFrame(t, h.next())
	if want := []string{"http", "POST", "/v2/models/iris/infer", "iris", "401", tp, ""}; fmt.Sprint(fields) != fmt.Sprint(want) {
		t.Fatalf("ACCESS %q, want %q", fields, want)
	}
	if nums[1] != 0 || nums[2] != uint64(len(r.body)) || nums[0] == 0 || nums[0] > uint64(10*time.Second) {
		t.Fatalf("duration, request and response bytes %v (body %d bytes)", nums, len(r.body))
	}

	ctx := metadata.AppendToOutgoingContext(withKey(paymentsKey), "traceparent", tp)
	wantCode(t, wait(t, h.invoke(ctx, inferMethod, inferRequest("iris"))).err, codes.PermissionDenied, "model 'iris'")
	fields, nums = accessFrame(t, h.next())
	if want := []string{"grpc", inferMethod, inferMethod, "iris", "PERMISSION_DENIED", tp, "payments"}; fmt.Sprint(fields) != fmt.Sprint(want) {
		t.Fatalf("ACCESS %q, want %q", fields, want)
	}
	if nums[1] != uint64(len(inferRequest("iris"))) || nums[2] != 0 {
		t.Fatalf("request and response bytes %v", nums)
	}
	h.noFrame()
}
