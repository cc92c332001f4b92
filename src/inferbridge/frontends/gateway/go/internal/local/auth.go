package local

import (
	"context"
	"encoding/binary"
	"net/http"
	"time"

	"google.golang.org/grpc/mem"

	"github.com/inferbridge/inferbridge/gateway/internal/auth"
	"github.com/inferbridge/inferbridge/gateway/internal/frontend"
)

// Authentication, authorization and rate limits are the front end's (package
// frontend): a refused request never reaches Python. What is this backend's: checking
// a forwarded call once its model is known, passing the principal on to Python as
// the x-inferbridge-principal header (REST) or metadata (gRPC) for its access log, and
// the ACCESS frame of each refusal (--access-log-frames), since Python never sees them.

const principalKey = frontend.PrincipalKey

// checkCall checks a forwarded call of method whose request message is body.
func (g *gateway) checkCall(ctx context.Context, method string, body mem.BufferSlice) (string, error) {
	var model string
	switch method {
	case auth.GRPCModelInfer, auth.GRPCModelStreamInfer:
		if name, ok := frontend.BufferModel(body); ok {
			model = string(name)
		}
	case auth.GRPCPredict:
		model = g.defaultModel
	}
	return g.fe.CheckGRPC(ctx, method, model, body.Len())
}

// RESTStarted, RESTDone and Refused record what the front end did (frontend.Observer).
func (g *gateway) RESTStarted() { g.metrics.proto[protoHTTP].inflight.Inc() }

func (g *gateway) RESTDone(route frontend.Route, status, n int, start time.Time) {
	pm := &g.metrics.proto[protoHTTP]
	pm.respBytes.Add(float64(n))
	pm.inflight.Dec()
	g.metrics.httpDone(route, status, start)
}

func (g *gateway) Refused(r frontend.Refusal) {
	p := protoHTTP
	if r.Protocol == "grpc" {
		p = protoGRPC
	}
	g.metrics.reject(p, nil, denialReason(r.Denial))
	if g.accessFrames {
		g.sendAccess(r)
	}
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

// sendAccess queues the ACCESS frame of a refusal: u16 len | protocol ("http", "grpc")
// | u16 len | method | u16 len | route (HTTP: the decoded path; gRPC: the method) |
// u16 len | model ("" when unknown) | u16 len | status (HTTP: decimal; gRPC: the code
// name) | i64 duration_ns | u64 request_bytes | u64 response_bytes | u16 len |
// traceparent | u16 len | principal ("" when none). Strings are cut at 65535 bytes.
func (g *gateway) sendAccess(a frontend.Refusal) {
	bp := getBuf()
	b := (*bp)[:0]
	for _, s := range []string{a.Protocol, a.Method, a.Route, a.Model, a.Status} {
		b = appendStr16(b, cut16(s))
	}
	b = binary.LittleEndian.AppendUint64(b, uint64(time.Since(a.Start)))
	b = binary.LittleEndian.AppendUint64(b, uint64(a.ReqBytes))
	b = binary.LittleEndian.AppendUint64(b, uint64(a.RespBytes))
	b = appendStr16(b, cut16(a.Trace))
	b = appendStr16(b, cut16(a.Denial.Principal))
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
