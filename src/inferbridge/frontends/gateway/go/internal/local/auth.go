package local

import (
	"context"
	"encoding/binary"
	"net/http"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/inferbridge/inferbridge/gateway/internal/auth"
	"github.com/inferbridge/inferbridge/gateway/internal/tlsconf"
)

// Authentication, authorization and rate limits (package auth) at the front end: a
// refused request never reaches Python, and a REST request is refused before its body
// is read. The principal travels to Python as the x-inferbridge-principal header (REST)
// or metadata (gRPC) for its access log; whatever a client sends under that name is
// dropped. Without an active authority (g.auth nil) none of this runs.

const principalKey = "x-inferbridge-principal"

// isPrincipalHeader tells the header a client may not send (any case).
func isPrincipalHeader(name string) bool {
	return len(name) == len(principalKey) && strings.EqualFold(name, principalKey)
}

// Shared WWW-Authenticate values of a 401 (RFC 6750): without and with a credential sent.
var (
	hdrBearer        = []string{`Bearer realm="inferbridge"`}
	hdrBearerInvalid = []string{`Bearer realm="inferbridge", error="invalid_token"`}
)

func duplicateCredential(name string) *auth.Denial {
	return &auth.Denial{Status: http.StatusUnauthorized, TokenSent: true,
		Message: "the request carries more than one " + name + "; send one credential"}
}

// checkHTTP classifies and checks a REST request; the denial is nil when it may go on.
func (g *gateway) checkHTTP(r *http.Request) (string, auth.Action, *auth.Denial) {
	act := auth.ClassifyHTTP(r.Method, r.URL.Path, auth.ParseQuery(r.URL.RawQuery), g.defaultModel)
	authz, keys := r.Header["Authorization"], r.Header["X-Api-Key"]
	switch {
	case len(authz) > 1:
		return "", act, duplicateCredential("Authorization header")
	case len(keys) > 1:
		return "", act, duplicateCredential("x-api-key header")
	}
	c := auth.Credentials{CertSubject: tlsconf.PeerName(r.TLS)}
	if len(authz) == 1 {
		c.Authorization = authz[0]
	}
	if len(keys) == 1 {
		c.APIKey = keys[0]
	}
	principal, d := g.auth.Check(c, act)
	return principal, act, d
}

// writeDenial answers a refused REST request: 401 with WWW-Authenticate, 403, or 429
// with Retry-After, and the JSON error body.
func (g *gateway) writeDenial(w http.ResponseWriter, d *auth.Denial) (int, int) {
	h := w.Header()
	switch d.Status {
	case http.StatusUnauthorized:
		if d.TokenSent {
			h["Www-Authenticate"] = hdrBearerInvalid
		} else {
			h["Www-Authenticate"] = hdrBearer
		}
	case http.StatusTooManyRequests:
		h["Retry-After"] = []string{strconv.Itoa(retrySeconds(d))}
	}
	g.metrics.reject(protoHTTP, nil, denialReason(d))
	return writeError(w, d.Status, errorBody(d.Message), false)
}

func retrySeconds(d *auth.Denial) int {
	if s := int(d.RetryAfter / time.Second); s >= 1 {
		return s
	}
	return 1
}

func denialReason(d *auth.Denial) reason {
	switch d.Status {
	case http.StatusUnauthorized:
		return reasonUnauthenticated
	case http.StatusForbidden:
		return reasonPermissionDenied
	}
	return reasonRateLimit
}

// refusal is a gRPC denial: its status, and the trailer that goes with it (retry-after
// of RESOURCE_EXHAUSTED).
type refusal struct {
	err     error
	trailer metadata.MD
}

func (r *refusal) Error() string              { return r.err.Error() }
func (r *refusal) GRPCStatus() *status.Status { return status.Convert(r.err) }

// grpcRefusal turns d into the refusal of a call of method on model (its request of
// reqBytes, checked from start), and sends its ACCESS frame when asked to.
func (g *gateway) grpcRefusal(ctx context.Context, method, model string, reqBytes int, start time.Time, d *auth.Denial) *refusal {
	g.metrics.reject(protoGRPC, nil, denialReason(d))
	code := codes.ResourceExhausted
	switch d.Status {
	case http.StatusUnauthorized:
		code = codes.Unauthenticated
	case http.StatusForbidden:
		code = codes.PermissionDenied
	}
	r := &refusal{err: status.Error(code, d.Message)}
	if d.Status == http.StatusTooManyRequests {
		r.trailer = metadata.Pairs("retry-after", strconv.Itoa(retrySeconds(d)))
	}
	if g.accessFrames {
		var trace string
		if v := incomingMetadata(ctx)["traceparent"]; len(v) > 0 {
			trace = v[0]
		}
		g.sendAccess(accessRecord{protocol: "grpc", method: method, route: method, model: model,
			status: grpcCodeName(code), start: start, reqBytes: reqBytes, trace: trace, principal: d.Principal})
	}
	return r
}

// accessRecord is the body of an ACCESS frame: u16 len | protocol ("http", "grpc") |
// u16 len | method | u16 len | route (HTTP: the decoded path; gRPC: the method) |
// u16 len | model ("" when unknown) | u16 len | status (HTTP: decimal; gRPC: the code
// name) | i64 duration_ns | u64 request_bytes | u64 response_bytes | u16 len |
// traceparent | u16 len | principal ("" when none).
type accessRecord struct {
	protocol, method, route, model, status string
	start                                  time.Time
	reqBytes, respBytes                    int
	trace, principal                       string
}

// sendAccess queues an ACCESS frame (strings cut at 65535 bytes).
func (g *gateway) sendAccess(a accessRecord) {
	bp := getBuf()
	b := (*bp)[:0]
	for _, s := range []string{a.protocol, a.method, a.route, a.model, a.status} {
		b = appendStr16(b, cut16(s))
	}
	b = binary.LittleEndian.AppendUint64(b, uint64(time.Since(a.start)))
	b = binary.LittleEndian.AppendUint64(b, uint64(a.reqBytes))
	b = binary.LittleEndian.AppendUint64(b, uint64(a.respBytes))
	b = appendStr16(b, cut16(a.trace))
	b = appendStr16(b, cut16(a.principal))
	*bp = b
	select {
	case g.out <- frame{kind: kindAccess, raw: bp}:
	case <-g.dead:
		putBuf(bp)
	}
}

func cut16(s string) string {
	if len(s) > 0xffff {
		return s[:0xffff]
	}
	return s
}

// refuse ends a call with r: its trailer set, its status returned.
func refuse(ss grpc.ServerStream, r *refusal) error {
	if r.trailer != nil {
		ss.SetTrailer(r.trailer)
	}
	return r.err
}

// grpcCredentials reads a call's credentials from its metadata and TLS peer.
func grpcCredentials(ctx context.Context) (auth.Credentials, *auth.Denial) {
	md := incomingMetadata(ctx)
	authz, keys := md["authorization"], md["x-api-key"]
	switch {
	case len(authz) > 1:
		return auth.Credentials{}, duplicateCredential("authorization metadata entry")
	case len(keys) > 1:
		return auth.Credentials{}, duplicateCredential("x-api-key metadata entry")
	}
	var c auth.Credentials
	if len(authz) == 1 {
		c.Authorization = authz[0]
	}
	if len(keys) == 1 {
		c.APIKey = keys[0]
	}
	if p, ok := peer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			c.CertSubject = tlsconf.PeerName(&ti.State)
		}
	}
	return c, nil
}

// checkGRPC checks a call of method whose request message is body (nil for a method
// served by the gateway itself: health, reflection).
func (g *gateway) checkGRPC(ctx context.Context, method string, body mem.BufferSlice) (string, *refusal) {
	start := time.Now()
	var model string
	switch method {
	case auth.GRPCModelInfer, auth.GRPCModelStreamInfer:
		if name, ok := requestModelName(body); ok {
			model = string(name)
		}
	case auth.GRPCPredict:
		model = g.defaultModel
	}
	c, d := grpcCredentials(ctx)
	if d == nil {
		var principal string
		if principal, d = g.auth.Check(c, auth.ClassifyGRPC(method, model)); d == nil {
			return principal, nil
		}
	}
	return "", g.grpcRefusal(ctx, method, model, body.Len(), start, d)
}

// authenticateStream authenticates a streaming call of method once, when it opens.
func (g *gateway) authenticateStream(ctx context.Context, method string) (string, *refusal) {
	start := time.Now()
	c, d := grpcCredentials(ctx)
	if d == nil {
		var principal string
		if principal, d = g.auth.Authenticate(c); d == nil {
			return principal, nil
		}
	}
	return "", g.grpcRefusal(ctx, method, "", 0, start, d)
}
