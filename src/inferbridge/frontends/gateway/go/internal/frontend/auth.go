package frontend

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/inferbridge/inferbridge/gateway/internal/auth"
	"github.com/inferbridge/inferbridge/gateway/internal/tlsconf"
)

// Authentication, authorization and rate limits (package auth) at the front end,
// for both backends: a REST request is checked before its body is read, a gRPC call
// of a method the front end serves (health, reflection) by its interceptor, and a
// forwarded call by the backend through CheckGRPC (an inference call once its model
// is read from the request message). Without an active authority none of this runs.

// PrincipalKey is the header (REST) and metadata key (gRPC) under which a backend
// passes the authenticated principal on; whatever a client sends under it is dropped.
const PrincipalKey = "x-inferbridge-principal"

// IsPrincipalHeader tells the header a client may not send (any case).
func IsPrincipalHeader(name string) bool {
	return len(name) == len(PrincipalKey) && strings.EqualFold(name, PrincipalKey)
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

// HTTPCredentials reads a REST request's credentials; a header sent twice is refused
// (which of two credentials would be meant is not for the gateway to guess).
func HTTPCredentials(r *http.Request) (auth.Credentials, *auth.Denial) {
	authz, keys := r.Header["Authorization"], r.Header["X-Api-Key"]
	switch {
	case len(authz) > 1:
		return auth.Credentials{}, duplicateCredential("Authorization header")
	case len(keys) > 1:
		return auth.Credentials{}, duplicateCredential("x-api-key header")
	}
	c := auth.Credentials{CertSubject: tlsconf.PeerName(r.TLS)}
	if len(authz) == 1 {
		c.Authorization = authz[0]
	}
	if len(keys) == 1 {
		c.APIKey = keys[0]
	}
	return c, nil
}

// GRPCCredentials reads a call's credentials from its metadata and TLS peer; an entry
// sent twice is refused.
func GRPCCredentials(ctx context.Context) (auth.Credentials, *auth.Denial) {
	md, _ := metadata.FromIncomingContext(ctx)
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

// RetryAfterSeconds is a wait in whole seconds, rounded up and at least 1 (the unit
// of Retry-After: a client that waits what it is told finds a token).
func RetryAfterSeconds(d time.Duration) int {
	return max(int((d+time.Second-1)/time.Second), 1)
}

// WriteDenial answers a refused REST request: 401 with WWW-Authenticate, 403, or 429
// with Retry-After, and the JSON error body; it returns the status and body length.
func WriteDenial(w http.ResponseWriter, d *auth.Denial) (int, int) {
	h := w.Header()
	switch d.Status {
	case http.StatusUnauthorized:
		if d.TokenSent {
			h["Www-Authenticate"] = hdrBearerInvalid
		} else {
			h["Www-Authenticate"] = hdrBearer
		}
	case http.StatusTooManyRequests:
		h["Retry-After"] = []string{strconv.Itoa(RetryAfterSeconds(d.RetryAfter))}
	}
	return WriteError(w, d.Status, ErrorBody(d.Message), false)
}

// DenialCode is the gRPC code of a denial: UNAUTHENTICATED, PERMISSION_DENIED or
// RESOURCE_EXHAUSTED.
func DenialCode(d *auth.Denial) codes.Code {
	switch d.Status {
	case http.StatusUnauthorized:
		return codes.Unauthenticated
	case http.StatusForbidden:
		return codes.PermissionDenied
	}
	return codes.ResourceExhausted
}

// Refusal is a request the front end's authority refused, as the backend's observer
// records it (its metrics, its access log).
type Refusal struct {
	Protocol string // "http" or "grpc"
	// Method is the HTTP method or the gRPC full method; Route the decoded path (HTTP)
	// or the full method (gRPC).
	Method, Route string
	Model         string // the action's model ("" when none or not known)
	Status        string // HTTP: decimal; gRPC: the code name (CodeName)
	Denial        *auth.Denial
	Start         time.Time
	// ReqBytes and RespBytes are the request message's size (gRPC) and the error
	// body's length (REST).
	ReqBytes, RespBytes int
	Trace               string // the request's traceparent ("" when none)
}

// CheckGRPC checks a call of method on model (the request's, for the inference
// methods; ignored for the others) with the front end's authority. It returns the
// principal, or the refusal's status error, its retry-after trailer already set, after
// recording it; reqBytes is the request message's size, for the record. Without an
// authority it returns "", nil.
func (f *Frontend) CheckGRPC(ctx context.Context, method, model string, reqBytes int) (string, error) {
	return f.admitGRPC(ctx, method, model, reqBytes, true)
}

// AuthenticateGRPC authenticates a streaming call of method when it opens (its
// messages are then checked one by one with CheckGRPC).
func (f *Frontend) AuthenticateGRPC(ctx context.Context, method string) (string, error) {
	return f.admitGRPC(ctx, method, "", 0, false)
}

// admitGRPC is CheckGRPC (authorize: the credentials' scopes for method on model) and
// AuthenticateGRPC (the credentials alone).
func (f *Frontend) admitGRPC(ctx context.Context, method, model string, reqBytes int, authorize bool) (string, error) {
	if f.auth == nil {
		return "", nil
	}
	start := time.Now()
	c, d := GRPCCredentials(ctx)
	if d == nil {
		var principal string
		if authorize {
			principal, d = f.auth.Check(c, auth.ClassifyGRPC(method, model))
		} else {
			principal, d = f.auth.Authenticate(c)
		}
		if d == nil {
			return principal, nil
		}
	}
	return "", f.refuseGRPC(ctx, method, model, reqBytes, start, d)
}

func (f *Frontend) refuseGRPC(ctx context.Context, method, model string, reqBytes int, start time.Time, d *auth.Denial) error {
	code := DenialCode(d)
	if d.Status == http.StatusTooManyRequests {
		grpc.SetTrailer(ctx, metadata.Pairs("retry-after", strconv.Itoa(RetryAfterSeconds(d.RetryAfter))))
	}
	var trace string
	if md, _ := metadata.FromIncomingContext(ctx); len(md["traceparent"]) > 0 {
		trace = md["traceparent"][0]
	}
	f.obs.Refused(Refusal{Protocol: "grpc", Method: method, Route: method, Model: model, Status: CodeName(code),
		Denial: d, Start: start, ReqBytes: reqBytes, Trace: trace})
	return status.Error(code, d.Message)
}

// checkHTTP checks a REST request before its body is read; it writes and records the
// refusal (ok false) or returns the principal.
func (f *Frontend) checkHTTP(w http.ResponseWriter, r *http.Request, p Path, start time.Time) (principal string, code, n int, ok bool) {
	act := f.classify(r, p)
	c, d := HTTPCredentials(r)
	if d == nil {
		if principal, d = f.auth.Check(c, act); d == nil {
			return principal, 0, 0, true
		}
	}
	code, n = WriteDenial(w, d)
	f.obs.Refused(Refusal{Protocol: "http", Method: r.Method, Route: r.URL.Path, Model: act.Model,
		Status: strconv.Itoa(code), Denial: d, Start: start, RespBytes: n, Trace: r.Header.Get("Traceparent")})
	return "", code, n, false
}

func (f *Frontend) classify(r *http.Request, p Path) auth.Action {
	if f.cfg.ClassifyHTTP != nil {
		if act, ok := f.cfg.ClassifyHTTP(r, p); ok {
			return act
		}
	}
	return auth.ClassifyHTTP(r.Method, r.URL.Path, auth.ParseQuery(r.URL.RawQuery), f.cfg.DefaultModel)
}

// ownUnary and ownStream check the calls of the methods registered on the front
// end's server (health, reflection, what a backend registers); forwarded calls reach
// the backend unchecked, which checks them with CheckGRPC once it knows their model.
func (f *Frontend) ownUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if f.own[info.FullMethod] {
		if _, err := f.CheckGRPC(ctx, info.FullMethod, "", 0); err != nil {
			return nil, err
		}
	}
	return handler(ctx, req)
}

func (f *Frontend) ownStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if f.own[info.FullMethod] {
		if _, err := f.CheckGRPC(ss.Context(), info.FullMethod, "", 0); err != nil {
			return err
		}
	}
	return handler(srv, ss)
}
