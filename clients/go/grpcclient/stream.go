package grpcclient

import (
	"context"
	"errors"
	"io"

	inferbridge "github.com/inferbridge/inferbridge/clients/go"
	"github.com/inferbridge/inferbridge/clients/go/inferencepb"
	"google.golang.org/grpc"
)

// FinalResponseParameter is the response parameter Triton sets, when a request asks for
// it with EnableFinalResponse, on every response of a stream: true on the last one
// (for a decoupled model, an extra response without outputs).
const FinalResponseParameter = "triton_final_response"

// EnableFinalResponse asks, as a request parameter, for FinalResponseParameter.
const EnableFinalResponse = "triton_enable_empty_final_response"

// Stream is one ModelStreamInfer call: many requests in flight on one stream, answered
// in the server's order (match them by ID), several answers to one request for a
// decoupled model. Send and Recv may run on two goroutines; neither is safe for
// concurrent use with itself.
type Stream struct {
	ctx    context.Context
	stream grpc.BidiStreamingClient[inferencepb.ModelInferRequest, inferencepb.ModelStreamInferResponse]
}

// StreamInfer opens a ModelStreamInfer stream. Cancelling ctx ends it, and the server
// cancels the work in flight; its deadline is the whole stream's.
func (c *Client) StreamInfer(ctx context.Context) (*Stream, error) {
	s, err := c.inference.ModelStreamInfer(ctx)
	if err != nil {
		return nil, wrap(ctx, "stream infer", err)
	}
	return &Stream{ctx: ctx, stream: s}, nil
}

// Send writes one request (inputs in raw_input_contents).
func (s *Stream) Send(req *inferbridge.InferRequest) error {
	op := "stream infer"
	if req != nil {
		op = "stream infer " + req.Model
	}
	if err := inferbridge.ValidateRequest(req); err != nil {
		return &inferbridge.Error{Op: op, Code: inferbridge.CodeInvalidArgument, Message: err.Error(), Err: err}
	}
	msg, err := EncodeRequest(req)
	if err != nil {
		return &inferbridge.Error{Op: op, Code: inferbridge.CodeInvalidArgument, Message: err.Error(), Err: err}
	}
	if err := s.stream.Send(msg); err != nil {
		if errors.Is(err, io.EOF) { // the stream has ended: Recv says why
			return &inferbridge.Error{Op: op, Code: inferbridge.CodeUnknown, Message: "the stream has ended", Err: err}
		}
		return wrap(s.ctx, op, err)
	}
	return nil
}

// CloseSend tells the server that no more requests follow; Recv returns the answers
// still due, then io.EOF.
func (s *Stream) CloseSend() error { return s.stream.CloseSend() }

// Recv returns the next answer. A request that failed comes back as a non-nil response
// (its ID, model and version, no outputs) with an *inferbridge.Error of CodeUnknown
// (the stream carries only the message), and the stream goes on. Recv returns
// (nil, io.EOF) once the server has answered everything after CloseSend, and (nil, the
// stream's error) when the stream itself failed.
func (s *Stream) Recv() (*inferbridge.InferResponse, error) {
	r, err := s.stream.Recv()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		return nil, wrap(s.ctx, "stream infer", err)
	}
	if msg := r.GetErrorMessage(); msg != "" {
		ir := r.GetInferResponse()
		resp := &inferbridge.InferResponse{Model: ir.GetModelName(), Version: ir.GetModelVersion(), ID: ir.GetId()}
		return resp, &inferbridge.Error{Op: "stream infer " + resp.Model, Code: inferbridge.CodeUnknown, Message: msg}
	}
	resp, err := DecodeResponse(r.GetInferResponse())
	if err != nil {
		return nil, &inferbridge.Error{Op: "stream infer", Code: inferbridge.CodeInternal, Message: "malformed response: " + err.Error(), Err: err}
	}
	return resp, nil
}
