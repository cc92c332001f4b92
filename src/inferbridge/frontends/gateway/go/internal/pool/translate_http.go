package pool

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// grpcToHTTP maps an upstream's gRPC status to the REST answer's (as Triton's REST API
// reports the same errors).
var grpcToHTTP = map[codes.Code]int{
	codes.InvalidArgument: http.StatusBadRequest, codes.NotFound: http.StatusNotFound,
	codes.FailedPrecondition: http.StatusBadRequest, codes.OutOfRange: http.StatusBadRequest,
	codes.AlreadyExists: http.StatusConflict, codes.PermissionDenied: http.StatusForbidden,
	codes.Unauthenticated: http.StatusUnauthorized, codes.ResourceExhausted: http.StatusTooManyRequests,
	codes.Unavailable: http.StatusServiceUnavailable, codes.DeadlineExceeded: http.StatusGatewayTimeout,
	codes.Unimplemented: http.StatusNotImplemented, codes.Canceled: statusClientGone,
}

// translateInfer answers a REST infer request through gRPC upstreams (the model's REST
// upstreams are none or out of rotation): ModelInfer with the time left as deadline and
// timeout parameter, retried like any attempt.
func (p *Pool) translateInfer(ctx context.Context, w http.ResponseWriter, r *http.Request, model, version string,
	body []byte, jsonLen int, deadline time.Time, key string) {
	if _, tr, err := encodeInferRequest(model, version, body, jsonLen, 0); err != nil || tr == nil {
		writeJSONError(w, http.StatusBadRequest, err.Error(), false)
		return
	}
	pickGroup := func(s *snapshot) (*group, errNoRoute) {
		rt := s.lookup(model, version)
		if rt == nil {
			return nil, routeNone
		}
		return &rt.grpc, 0
	}
	ctx = metadata.NewOutgoingContext(ctx, clientCredentialsMD(r.Header))
	if p.batchers[model] != nil {
		msg, tr, _ := encodeInferRequest(model, version, body, jsonLen, max(int64(time.Until(deadline)/time.Microsecond), 1))
		if answer, err, ok := p.batched(ctx, model, msg, deadline); ok {
			p.writeTranslated(w, r, answer, tr, err)
			return
		}
	}
	type result struct {
		resp rawMsg
		tr   *translation
		err  error
	}
	res, refusal := forward(ctx, p, p.spanName(r), pickGroup, key, deadline,
		func(ctx context.Context, u *upstream, _ int) (*result, attemptResult) {
			left := time.Until(deadline)
			msg, tr, _ := encodeInferRequest(model, version, body, jsonLen, max(int64(left/time.Microsecond), 1))
			r := &result{tr: tr}
			r.err = u.conn.Invoke(u.grpcContext(ctx), inferencePrefix+"ModelInfer", &rawMsg{Data: mem.BufferSlice{mem.SliceBuffer(msg)}}, &r.resp)
			return r, classifyGRPC(ctx, r.err)
		},
		func(r *result) {
			if r != nil {
				r.resp.Data.Free()
			}
		})
	switch {
	case refusal == routeNone:
		writeJSONError(w, http.StatusNotFound, "model '"+model+"' is not served by any upstream", false)
		return
	case res == nil && r.Context().Err() != nil:
		return
	case res == nil && ctx.Err() == context.DeadlineExceeded:
		writeJSONError(w, http.StatusGatewayTimeout, "deadline exceeded before an upstream answered", false)
		return
	case res == nil:
		writeJSONError(w, http.StatusServiceUnavailable, "no upstream serving model '"+model+"' is available", true)
		return
	}
	p.writeTranslated(w, r, res.resp.Data.Materialize(), res.tr, res.err)
	res.resp.Data.Free()
}

// writeTranslated writes the REST answer of a ModelInferResponse (or of its error).
func (p *Pool) writeTranslated(w http.ResponseWriter, r *http.Request, msg []byte, tr *translation, callErr error) {
	if callErr != nil && r.Context().Err() != nil {
		return // the client went away
	}
	if callErr != nil {
		st := status.Convert(callErr)
		code, ok := grpcToHTTP[st.Code()]
		if !ok {
			code = http.StatusInternalServerError
		}
		writeJSONError(w, code, st.Message(), code == http.StatusServiceUnavailable || code == http.StatusTooManyRequests)
		return
	}
	out, n, err := decodeInferResponse(msg, tr)
	if err != nil {
		writeJSONError(w, http.StatusBadGateway, err.Error(), false)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	if n < len(out) {
		h.Set("Inference-Header-Content-Length", strconv.Itoa(n))
		h.Set("Content-Type", "application/octet-stream")
	}
	h.Set("Content-Length", strconv.Itoa(len(out)))
	w.WriteHeader(http.StatusOK)
	w.Write(out)
}
