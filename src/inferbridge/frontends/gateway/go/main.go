// Command inferbridge-gateway terminates gRPC (and, with --http-listen, REST) for the
// inferbridge Python server (package internal/frontend, the protocol termination, in
// front of package internal/local, the single-server backend).
//
// Python's grpcio costs too much CPU per unary call, so this small program does the
// HTTP/2 and gRPC framing, health, reflection, deadlines and cancellation, and forwards
// each call's raw request bytes to the Python server over an inherited Unix socket.
// Python keeps all the logic: decoding, validation, errors and the dataplane.
//
// With --http-listen it also terminates REST (HTTP/1.1, keep-alive): every request is
// read whole on the gateway's own threads, refused at once when over a limit (413 for
// a body over --max-recv-bytes, 429 for a model at its LIMITS limit or for
// --max-http-inflight, 400 with the reason for a body that cannot be read: a bad chunk
// size or terminator, cut short of its Content-Length or last chunk), and otherwise
// forwarded as one HTTP frame to the Python server, whose ASGI app answers it with one
// REPLY-HTTP frame, or streams it (REPLY-HTTP-START, -CHUNK, -END). A client gone
// before its answer (reset, or EOF: TCP does not tell a half-close from a close) gets
// CANCEL sent for it and its connection closed without an answer, never an empty 200.
//
// With --config FILE it is instead the gateway in front of many OIP servers (the same
// front end before package internal/pool, the upstream-pool backend; docs/gateway.md,
// "Layout"): no backend socket, the upstreams come from FILE.
//
// Usage:
//
//	inferbridge-gateway --config gateway.yaml [--check]
//	inferbridge-gateway --listen HOST:PORT --backend-fd 3 --max-recv-bytes N --max-concurrent-rpcs M
//	    [--http-listen HOST:PORT --max-http-inflight K]
//	    [--auth-keys FILE] [--auth-jwt-hs256-secret-file FILE] [--auth-jwt-jwks FILE]
//	    [--auth-jwt-issuer ISS] [--auth-jwt-audience AUD] [--auth-jwt-leeway-s S]
//	    [--auth-open-health=false] [--auth-default-rate RPS[:BURST]] [--rate-limit GLOB=RPS[:BURST]]...
//	    [--default-model NAME] [--tls-cert FILE --tls-key FILE [--tls-client-ca FILE [--tls-client-auth require|request]]]
//
// # Security
//
// The flags of docs/security.md (package auth): with a keys file or a JWT verifier every
// request needs a credential (Authorization: Bearer, x-api-key, or a verified client
// certificate's common name), except health while --auth-open-health; each is
// classified as the Python app routes it, authorized by scope, and taken from its
// principal's and model's token buckets, in that order, before anything is forwarded
// (REST: before the body is read). Refusals: 401 with WWW-Authenticate, 403, 429 with
// Retry-After and a {"error": ...} body (gRPC: UNAUTHENTICATED, PERMISSION_DENIED,
// RESOURCE_EXHAUSTED with trailing metadata retry-after); ModelStreamInfer is
// authenticated when it opens and every message is checked. The principal reaches the
// backend as the header (HTTP frame) or metadata entry (CALL, STREAM-OPEN)
// x-inferbridge-principal; whatever a client sends under that name is dropped.
// --rate-limit works with authentication off. With --tls-cert and --tls-key both
// listeners speak TLS only (REST HTTP/1.1, gRPC h2; the pair re-read when it changes);
// --tls-client-ca verifies client certificates (require by default, or request). A bad
// value of any of these flags (a rate, a keys file, a certificate) exits 2 naming it.
//
// At startup the gateway reads one DESCRIPTORS frame from the backend, listens on
// --listen and then on --http-listen when given (port 0 picks a free port; on failure
// it prints the reason on stderr and exits 2), prints the line "listening HOST:PORT"
// (gRPC) on stdout, then "listening-http HOST:PORT" when HTTP is on, and serves. The
// health status of "" starts as NOT_SERVING. It exits 0 after a SHUTDOWN frame has been
// handled and 1 when the backend socket fails or reaches EOF.
//
// # Backend protocol
//
// Both directions use the same framing, all integers little-endian:
//
//	u32 length (bytes after this field) | u8 kind | u64 id | body (length-9 bytes)
//
// Kinds:
//
//	1 CALL        gateway->backend, id = fresh call id (never 0).
//	              body = u16 method_len | method ("/pkg.Service/Method") |
//	              i64 timeout_us (time left to the client's deadline when forwarded, > 0;
//	              -1 = no deadline) | u16 meta_count | meta_count × (u16 name_len |
//	              name (lower-case) | u32 value_len | value) | request message bytes
//	              (rest, possibly empty). The metadata are the call's incoming gRPC
//	              metadata under the keys traceparent, tracestate and baggage (in that
//	              order), then those whose key starts with "x-" and does not end in
//	              "-bin" (sorted by key; a rollout's route_key header:<name> reads
//	              them), one entry per value, meta_count 0 when none; no other key.
//	              x-inferbridge-principal is the gateway's own (see Security).
//	2 CANCEL      gateway->backend, id of a call the client cancelled or whose deadline
//	              passed before its REPLY; empty body. A REPLY may still follow and is ignored.
//	3 REPLY       backend->gateway, id of a call. body = u8 gRPC code | response message
//	              bytes if code == 0, else the UTF-8 error message. Unknown ids are ignored.
//	4 HEALTH      backend->gateway, id 0. body = u8 status (1 SERVING, 2 NOT_SERVING) |
//	              service name (rest; "" = the whole server).
//	5 SHUTDOWN    backend->gateway, id 0. body = u32 grace_ms. All health statuses become
//	              NOT_SERVING, the gRPC and HTTP servers stop gracefully (calls and
//	              requests in flight still get their replies; idle HTTP connections are
//	              closed) and are stopped hard after grace_ms; then the process exits 0.
//	6 DESCRIPTORS backend->gateway, id 0, first frame only. body = serialized
//	              google.protobuf.FileDescriptorSet of the forwarded services, for reflection.
//	7 HTTP        gateway->backend, id = fresh id from the CALL id space. body =
//	              u16 method_len | method | u16 path_len | path (decoded) |
//	              u16 rawpath_len | raw (escaped) path | u16 query_len | raw query |
//	              u16 header_count | header_count × (u16 name_len | name, lower-case |
//	              u32 value_len | value) | i64 arrival_unix_ns | request body (rest).
//	              Headers are forwarded as received, one entry per value, plus "host"
//	              (and x-inferbridge-principal: the gateway's own, see Security);
//	              a chunked body arrives de-chunked (no transfer-encoding header).
//	              CANCEL follows when the client goes away before the REPLY-HTTP.
//	8 REPLY-HTTP  backend->gateway, id of an HTTP request. body = u16 status |
//	              u16 header_count | header_count × (u16 name_len | name | u32 value_len |
//	              value) | response body (rest). Content-Length is set from the body
//	              unless given; no Date header is added. Unknown ids are ignored.
//	9 LIMITS      backend->gateway, id 0. body = u16 count | count × (u16 name_len |
//	              model name | u32 limit). Replaces the whole table of per-model limits
//	              on forwarded, unanswered infer requests (POST
//	              /v2/models/{name}[/versions/{v}]/infer, /generate and /generate_stream
//	              (until its last part), and gRPC ModelInfer; absent or
//	              0 = no limit); one more is answered 429 / RESOURCE_EXHAUSTED (or the
//	              code given with --queue-full-code) by the
//	              gateway. Send it again after every change of the model set: a model
//	              absent from the newest frame has no limit. Requests are counted per
//	              name from the first frame naming it, so a limit set later, or set
//	              again, sees the requests already outstanding under older tables.
//	10 METRICS-PULL backend->gateway, id = nonzero id chosen by the backend (its own
//	              id space), empty body. Answered by METRICS with the same id.
//	11 METRICS    gateway->backend, id of a METRICS-PULL. body = the gateway's metrics
//	              in the Prometheus text exposition format (text/plain; version=0.0.4),
//	              UTF-8, ending in a newline; see Metrics below.
//	12 STREAM-OPEN gateway->backend, id = fresh call id. A call of a streaming method
//	              (client- or server-streaming in DESCRIPTORS: ModelStreamInfer). body =
//	              as CALL's without the request message: u16 method_len | method |
//	              i64 timeout_us | u16 meta_count | metadata.
//	13 STREAM-MSG both directions, id of an open stream. body = one message: a request
//	              (gateway->backend) or a response (backend->gateway).
//	14 STREAM-CLOSE gateway->backend, id of a stream; empty body. The client has
//	              half-closed: no more STREAM-MSG follows.
//	15 STREAM-END backend->gateway, id of a stream. body = u8 gRPC code | UTF-8 error
//	              message (empty when code == 0): the call's status, after its last
//	              response; the backend's last frame of the stream.
//	16 STREAM-ACK both directions, id of a stream. body = u32 n: n more of the stream's
//	              STREAM-MSGs have been taken in (backend: read by the stream's handler;
//	              gateway: written to the client). Also gateway->backend for a streamed
//	              REST reply: n more of its REPLY-HTTP-START and -CHUNKs written.
//	17 REPLY-HTTP-START backend->gateway, id of an HTTP request, instead of REPLY-HTTP
//	              when the ASGI app sends its body in parts (more_body, as
//	              generate_stream's Server-Sent Events). body = as REPLY-HTTP's, its
//	              response body the first part. The gateway writes the status and
//	              headers without a Content-Length (chunked transfer encoding) and the
//	              part, flushed.
//	18 REPLY-HTTP-CHUNK backend->gateway, id of a streamed reply. body = the next part,
//	              written and flushed at once.
//	19 REPLY-HTTP-END backend->gateway, id of a streamed reply, its last frame. body =
//	              u8 flag | the last part (possibly empty). flag 0: the body is whole;
//	              1: the app failed mid-body, the connection is closed without ending
//	              the chunked body (the client sees it cut short, not whole).
//	20 ACCESS     gateway->backend, id 0, only with --access-log-frames: a request the
//	              gateway refused itself for authentication, authorization or a rate
//	              limit (see Security), which the backend never saw, for its access log.
//	              body = u16 len | protocol ("http" or "grpc") | u16 len | method (HTTP
//	              method; gRPC full method) | u16 len | route (HTTP: the decoded path;
//	              gRPC: the full method) | u16 len | model ("" when not known) |
//	              u16 len | status (HTTP: decimal; gRPC: the code name, as
//	              UNAUTHENTICATED) | i64 duration_ns | u64 request_bytes |
//	              u64 response_bytes | u16 len | traceparent ("" when none) | u16 len |
//	              principal ("" for a 401).
//
// Flow control of a streamed REST reply is the stream window's: the backend sends no
// REPLY-HTTP-START or -CHUNK while 32 of them are unacknowledged (END needs no credit),
// and the gateway fails when it exceeds that. CANCEL ends it when the client leaves or
// a part cannot be written; its frames that cross the CANCEL are ignored.
//
// Flow control of a stream: neither side sends a STREAM-MSG while 32 (streamWindow) of
// its STREAM-MSGs of that stream are unacknowledged; the gateway stops reading the
// client meanwhile, and fails (as for a malformed frame) when the backend exceeds it.
// CANCEL ends a stream whose client cancelled, whose deadline passed or whose response
// could not be written; frames of it that cross the CANCEL are ignored on both sides.
// A stream counts once in requests_total (route = its method, code = its status) and in
// --max-concurrent-rpcs; LIMITS does not apply to the requests it carries (the backend
// answers a full queue in the stream's error_message).
//
// Every other method that is not health or reflection is forwarded as a unary call,
// without filtering: the backend answers UNIMPLEMENTED for methods it does not know.
//
// # Metrics
//
// Served only through METRICS (the Python server appends them to its GET /metrics), from
// a registry of their own: the families below plus the Go runtime's go_*; never
// process_* or python_*, which are the Python process's. The Python fallback front
// ends emit the same inferbridge_frontend_* names when the gateway is not in use.
//
//	inferbridge_frontend_requests_total{protocol, route, code}     counter
//	inferbridge_frontend_inflight_requests{protocol}               gauge
//	inferbridge_frontend_request_bytes_total{protocol}             counter
//	inferbridge_frontend_response_bytes_total{protocol}            counter
//	inferbridge_frontend_request_duration_seconds{protocol}        histogram
//	inferbridge_frontend_rejected_total{protocol, model, reason}   counter
//	inferbridge_frontend_connections{protocol}                     gauge
//	inferbridge_frontend_connections_total{protocol}               counter
//
// protocol is "http" or "grpc". requests_total counts every request or call finished,
// the gateway's own refusals included. Its route is, for HTTP, the template of the
// path, as the Python REST app routes it (trailing slashes ignored): /v2, /v2/health/live,
// /v2/health/ready, /v2/models/stats, /v2/models/{model}[/versions/{version}] with no
// suffix or /ready, /config, /stats, /infer, /generate or /generate_stream,
// /v2/repository/index,
// /v2/repository/models/{model}/load and /unload, /metrics, /predict,
// /v1/models/{model}:predict, /v1/vision/{service}, /v1/text/{service}, and "other"
// for any other path; for gRPC, the full method name of a forwarded (DESCRIPTORS),
// health or reflection method, and "other" for any other. Its code is the HTTP status
// in decimal ("499" when the client went away before the reply), or the canonical
// gRPC code name as in grpc/status.proto and Python's grpc.StatusCode ("OK",
// "CANCELLED", "RESOURCE_EXHAUSTED", ...).
//
// The byte counters count request and response bodies (HTTP) and messages (gRPC,
// uncompressed). request_duration_seconds is the time from a request's arrival to its
// reply written, with buckets 100µs, 250µs, 500µs, 1ms, 2.5ms, 5ms, 10ms, 25ms, 50ms,
// 100ms, 250ms, 500ms, 1s, 2.5s, 5s, 10s. rejected_total's reason is queue_full (a
// model at its LIMITS bound: 429 / RESOURCE_EXHAUSTED), inflight_limit
// (--max-http-inflight: 429), concurrency_limit (--max-concurrent-rpcs:
// RESOURCE_EXHAUSTED), too_large (over --max-recv-bytes: 413 / RESOURCE_EXHAUSTED),
// unauthenticated (401 / UNAUTHENTICATED), permission_denied (403 /
// PERMISSION_DENIED) or rate_limit (a principal's or model's bucket: 429 /
// RESOURCE_EXHAUSTED);
// its model is the name from LIMITS for queue_full and for a too-large HTTP infer
// request to a model named in LIMITS, and "" otherwise. Series appear once they count
// something (the per-protocol ones at once).
package main

import (
	"bufio"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log"
	"math"
	"net"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	_ "google.golang.org/grpc/encoding/gzip" // accept and answer gzip-compressed calls

	"github.com/inferbridge/inferbridge/gateway/internal/auth"
	gwconfig "github.com/inferbridge/inferbridge/gateway/internal/config"
	"github.com/inferbridge/inferbridge/gateway/internal/local"
	"github.com/inferbridge/inferbridge/gateway/internal/pool"
	"github.com/inferbridge/inferbridge/gateway/internal/tlsconf"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "gRPC listen address HOST:PORT (port 0 picks a free one)")
	backendFD := flag.Int("backend-fd", 3, "inherited, connected AF_UNIX SOCK_STREAM socket to the Python server")
	maxRecv := flag.Int("max-recv-bytes", 4<<20, "largest request message accepted, in bytes")
	maxRPCs := flag.Int("max-concurrent-rpcs", 0, "most forwarded calls in flight (0 = unlimited)")
	httpListen := flag.String("http-listen", "", "HTTP/1.1 listen address HOST:PORT (empty: no HTTP listener)")
	maxHTTP := flag.Int("max-http-inflight", 0, "most forwarded HTTP requests in flight (0 = unlimited)")
	accessFrames := flag.Bool("access-log-frames", false, "send the backend an ACCESS frame for each request refused by authentication, authorization or a rate limit")
	queueFull := flag.String("queue-full-code", "resource_exhausted",
		"gRPC code of a ModelInfer refused at its model's LIMITS bound: resource_exhausted or unavailable")
	configPath := flag.String("config", "", "pool mode: the gateway configuration file (YAML); the other flags are ignored")
	checkOnly := flag.Bool("check", false, "with --config: validate the configuration, print ok and exit")
	sec := securityFlags()
	flag.Parse()
	if *configPath != "" {
		runPool(*configPath, *checkOnly)
		return
	}
	fullCode, known := queueFullCodes[*queueFull]
	if flag.NArg() != 0 || *maxRecv <= 0 || *maxRPCs < 0 || *maxHTTP < 0 || !known {
		flag.Usage()
		os.Exit(2)
	}

	authority, tlsConfig := sec.build() // before the backend: a bad flag exits 2 at once
	f := os.NewFile(uintptr(*backendFD), "backend")
	if f == nil {
		fatal(2, "invalid --backend-fd %d", *backendFD)
	}
	backend, err := net.FileConn(f)
	if err != nil {
		fatal(2, "--backend-fd %d: %v", *backendFD, err)
	}
	f.Close() // FileConn holds its own duplicate of the descriptor

	g, err := local.New(backend, local.Config{
		MaxRecvBytes: *maxRecv, MaxConcurrentRPCs: *maxRPCs, MaxHTTPInflight: *maxHTTP, QueueFullCode: fullCode,
		Auth: authority, DefaultModel: sec.defaultModel, TLS: tlsConfig, AccessFrames: *accessFrames,
	})
	if err != nil {
		fatal(1, "%v", err)
	}
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		fatal(2, "listen on %s: %v", *listen, err)
	}
	var httpLis net.Listener
	if *httpListen != "" {
		if httpLis, err = net.Listen("tcp", *httpListen); err != nil {
			fatal(2, "listen on %s (HTTP): %v", *httpListen, err)
		}
	}
	out := bufio.NewWriter(os.Stdout)
	fmt.Fprintf(out, "listening %s\n", lis.Addr())
	if httpLis != nil {
		fmt.Fprintf(out, "listening-http %s\n", httpLis.Addr())
	}
	if err := out.Flush(); err != nil {
		fatal(1, "stdout: %v", err)
	}
	if err := g.Run(lis, httpLis); err != nil {
		fatal(1, "%v", err)
	}
}

// queueFullCodes are the values of --queue-full-code (Python's Settings.grpc_queue_full_code).
var queueFullCodes = map[string]codes.Code{
	"resource_exhausted": codes.ResourceExhausted,
	"unavailable":        codes.Unavailable,
}

// runPool serves the upstream pool of the configuration at path; a configuration
// error is printed and the process exits 2 without serving.
func runPool(path string, checkOnly bool) {
	cfg, err := gwconfig.Load(path)
	if err != nil {
		fatal(2, "%v", err)
	}
	if checkOnly {
		fmt.Printf("%s: ok\n", path)
		return
	}
	if err := pool.Run(cfg, os.Stdout); err != nil {
		fatal(1, "%v", err)
	}
}

func fatal(code int, format string, args ...any) {
	fmt.Fprintf(os.Stderr, "inferbridge-gateway: "+format+"\n", args...)
	os.Exit(code)
}

// security holds the flags of authentication, rate limits and TLS (docs/security.md).
type security struct {
	keys, secretFile, jwks, issuer, audience string
	leewayS                                  float64
	openHealth, noOpenHealth                 bool
	defaultRate                              string
	modelRates                               []auth.ModelRate
	defaultModel                             string
	tls                                      tlsconf.Files
}

func securityFlags() *security {
	s := &security{}
	flag.StringVar(&s.keys, "auth-keys", "", "API keys file (YAML); re-read when it changes")
	flag.StringVar(&s.secretFile, "auth-jwt-hs256-secret-file", "", "accept JWTs signed HS256 with the secret in this file (at least 32 bytes)")
	flag.StringVar(&s.jwks, "auth-jwt-jwks", "", "accept JWTs signed RS256 or ES256 by a key of this JWKS file (matched by kid); re-read when it changes")
	flag.StringVar(&s.issuer, "auth-jwt-issuer", "", "when set, a JWT's iss must equal it")
	flag.StringVar(&s.audience, "auth-jwt-audience", "", "when set, a JWT's aud must be or contain it")
	flag.Float64Var(&s.leewayS, "auth-jwt-leeway-s", 30, "clock skew allowed on a JWT's exp and nbf, in seconds (at most 300)")
	flag.BoolVar(&s.openHealth, "auth-open-health", true, "health endpoints need no credential")
	flag.BoolVar(&s.noOpenHealth, "no-auth-open-health", false, "health endpoints need the read scope (the same as --auth-open-health=false)")
	flag.StringVar(&s.defaultRate, "auth-default-rate", "", "RPS[:BURST]: rate limit of a principal without one of its own")
	flag.Func("rate-limit", "GLOB=RPS[:BURST]: one bucket per model whose name matches (repeatable; the first match applies)", func(v string) error {
		mr, err := auth.ParseModelRate(v)
		if err != nil {
			return err
		}
		s.modelRates = append(s.modelRates, mr)
		return nil
	})
	flag.StringVar(&s.defaultModel, "default-model", "iris", "the model of POST /predict and AIService.Predict (for authorization)")
	flag.StringVar(&s.tls.Cert, "tls-cert", "", "PEM certificate chain: REST and gRPC speak TLS only (with --tls-key)")
	flag.StringVar(&s.tls.Key, "tls-key", "", "PEM private key of --tls-cert")
	flag.StringVar(&s.tls.ClientCA, "tls-client-ca", "", "PEM CAs to verify client certificates against (mutual TLS)")
	flag.StringVar(&s.tls.ClientAuth, "tls-client-auth", "", "with --tls-client-ca: require (the default) or request")
	return s
}

// authFlags names the flag of each auth.Config field, for errors.
var authFlags = map[string]string{
	"KeysFile": "--auth-keys", "JWTSecretFile": "--auth-jwt-hs256-secret-file", "JWKSFile": "--auth-jwt-jwks",
	"Issuer": "--auth-jwt-issuer", "Audience": "--auth-jwt-audience", "Leeway": "--auth-jwt-leeway-s",
	"DefaultRate": "--auth-default-rate", "ModelRates": "--rate-limit",
}

// build makes the authority (nil when nothing is configured) and the TLS configuration
// (nil without --tls-cert); a bad value exits 2 naming its flag.
func (s *security) build() (*auth.Authority, *tls.Config) {
	logger := log.New(os.Stderr, "inferbridge-gateway: ", 0)
	c := auth.Config{
		KeysFile: s.keys, JWTSecretFile: s.secretFile, JWKSFile: s.jwks, Issuer: s.issuer, Audience: s.audience,
		OpenHealth: s.openHealth && !s.noOpenHealth, ModelRates: s.modelRates,
	}
	if math.IsNaN(s.leewayS) || s.leewayS < 0 || s.leewayS > 300 {
		fatal(2, "--auth-jwt-leeway-s %v: expected 0 to 300 seconds", s.leewayS)
	}
	c.Leeway = time.Duration(s.leewayS * float64(time.Second))
	if s.defaultRate != "" {
		r, err := auth.ParseRate(s.defaultRate)
		if err != nil {
			fatal(2, "--auth-default-rate: %v", err)
		}
		c.DefaultRate = &r
	}
	authority, err := auth.New(c, logger.Printf)
	if err != nil {
		name := "--auth-*"
		var ce *auth.ConfigError
		if errors.As(err, &ce) && authFlags[ce.Field] != "" {
			name = authFlags[ce.Field]
		}
		fatal(2, "%s: %v", name, err)
	}
	if !authority.Active() {
		authority = nil
	}
	if s.tls == (tlsconf.Files{}) {
		return authority, nil
	}
	switch {
	case s.tls.Cert == "" || s.tls.Key == "":
		fatal(2, "--tls-cert and --tls-key: TLS needs both (--tls-client-ca and --tls-client-auth need them too)")
	case s.tls.ClientAuth != "" && s.tls.ClientAuth != tlsconf.ClientAuthRequire && s.tls.ClientAuth != tlsconf.ClientAuthRequest:
		fatal(2, "--tls-client-auth %q: expected %s or %s", s.tls.ClientAuth, tlsconf.ClientAuthRequire, tlsconf.ClientAuthRequest)
	case s.tls.ClientAuth != "" && s.tls.ClientCA == "":
		fatal(2, "--tls-client-auth %s needs --tls-client-ca (the CAs to verify client certificates against)", s.tls.ClientAuth)
	}
	cfg, err := tlsconf.Server(s.tls, logger.Printf)
	if err != nil {
		name := "--tls-cert / --tls-key"
		if strings.HasPrefix(err.Error(), "client CA") {
			name = "--tls-client-ca"
		}
		fatal(2, "%s: %v", name, err)
	}
	return authority, cfg
}
