// Package grpcclient is the gRPC client of the inferbridge Go SDK: the Open Inference
// Protocol's inference.GRPCInferenceService with raw tensor contents, and the seed's
// ai.AIService.Predict, over one shared connection.
//
// It implements inferbridge.Client, so it is interchangeable with the REST client, and its
// errors are *inferbridge.Error values that match the same sentinels (errors.Is(err,
// inferbridge.ErrNotFound)) while still unwrapping to the gRPC status error.
package grpcclient

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	inferbridge "github.com/inferbridge/inferbridge/clients/go"
	"github.com/inferbridge/inferbridge/clients/go/aipb"
	"github.com/inferbridge/inferbridge/clients/go/inferencepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// maxMessageBytes lifts grpc-go's 4 MiB default receive limit, so large tensors come back.
const maxMessageBytes = 1 << 30

// Client calls an inferbridge (or any OIP) gRPC server. It is safe for concurrent use:
// every call is multiplexed over one HTTP/2 connection.
type Client struct {
	conn      *grpc.ClientConn
	inference inferencepb.GRPCInferenceServiceClient
	ai        aipb.AIServiceClient
}

// New connects (lazily, on the first call) to target, such as "127.0.0.1:8001". Without
// options it uses plaintext and a 1 GiB message limit; opts are applied after those
// defaults, so WithTLS, WithTLSFiles (or grpc.WithTransportCredentials) in opts enables
// TLS, and WithAPIKey or WithBearerToken sends a credential with every call.
func New(target string, opts ...grpc.DialOption) (*Client, error) {
	if err := optionsError(opts); err != nil {
		return nil, &inferbridge.Error{Op: "new gRPC client", Code: inferbridge.CodeInvalidArgument, Message: err.Error(), Err: err}
	}
	all := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(maxMessageBytes),
			grpc.MaxCallSendMsgSize(maxMessageBytes),
		),
		grpc.WithChainUnaryInterceptor(retryAfterInterceptor),
	}, opts...)
	conn, err := grpc.NewClient(target, all...)
	if err != nil {
		return nil, &inferbridge.Error{Op: "new gRPC client", Code: inferbridge.CodeInvalidArgument, Message: err.Error(), Err: err}
	}
	return &Client{
		conn:      conn,
		inference: inferencepb.NewGRPCInferenceServiceClient(conn),
		ai:        aipb.NewAIServiceClient(conn),
	}, nil
}

// Inference is the generated GRPCInferenceService client on the same connection, for
// calls the SDK does not wrap.
func (c *Client) Inference() inferencepb.GRPCInferenceServiceClient { return c.inference }

// Close closes the connection; calls in flight fail with ErrCanceled or ErrUnavailable.
func (c *Client) Close() error { return c.conn.Close() }

// Live reports whether the server is live (ServerLive).
func (c *Client) Live(ctx context.Context) (bool, error) {
	r, err := c.inference.ServerLive(ctx, &inferencepb.ServerLiveRequest{})
	if err != nil {
		return false, wrap(ctx, "live", err)
	}
	return r.GetLive(), nil
}

// Ready reports whether the server is ready (ServerReady).
func (c *Client) Ready(ctx context.Context) (bool, error) {
	r, err := c.inference.ServerReady(ctx, &inferencepb.ServerReadyRequest{})
	if err != nil {
		return false, wrap(ctx, "ready", err)
	}
	return r.GetReady(), nil
}

// ModelReady reports whether a model version ("" for the default) is ready (ModelReady).
func (c *Client) ModelReady(ctx context.Context, model, version string) (bool, error) {
	r, err := c.inference.ModelReady(ctx, &inferencepb.ModelReadyRequest{Name: model, Version: version})
	if err != nil {
		return false, wrap(ctx, "model ready "+model, err)
	}
	return r.GetReady(), nil
}

// ServerMetadata describes the server (ServerMetadata).
func (c *Client) ServerMetadata(ctx context.Context) (*inferbridge.ServerMetadata, error) {
	r, err := c.inference.ServerMetadata(ctx, &inferencepb.ServerMetadataRequest{})
	if err != nil {
		return nil, wrap(ctx, "server metadata", err)
	}
	return &inferbridge.ServerMetadata{Name: r.GetName(), Version: r.GetVersion(), Extensions: r.GetExtensions()}, nil
}

// ModelMetadata describes a model version, "" for the default (ModelMetadata).
func (c *Client) ModelMetadata(ctx context.Context, model, version string) (*inferbridge.ModelMetadata, error) {
	r, err := c.inference.ModelMetadata(ctx, &inferencepb.ModelMetadataRequest{Name: model, Version: version})
	if err != nil {
		return nil, wrap(ctx, "model metadata "+model, err)
	}
	tensors := func(in []*inferencepb.ModelMetadataResponse_TensorMetadata) []inferbridge.TensorMetadata {
		out := make([]inferbridge.TensorMetadata, len(in))
		for i, t := range in {
			out[i] = inferbridge.TensorMetadata{Name: t.GetName(), Datatype: t.GetDatatype(), Shape: t.GetShape()}
		}
		return out
	}
	return &inferbridge.ModelMetadata{
		Name: r.GetName(), Versions: r.GetVersions(), Platform: r.GetPlatform(),
		Inputs: tensors(r.GetInputs()), Outputs: tensors(r.GetOutputs()),
	}, nil
}

// Predict sends one feature row to ai.AIService/Predict (the server's default model) and
// returns the predicted class as text.
func (c *Client) Predict(ctx context.Context, features []float32) (string, error) {
	r, err := c.ai.Predict(ctx, &aipb.PredictRequest{Values: features})
	if err != nil {
		return "", wrap(ctx, "predict", err)
	}
	return r.GetResult(), nil
}

// Infer runs one inference (ModelInfer) with every input in raw_input_contents. The
// context's deadline becomes the gRPC deadline.
func (c *Client) Infer(ctx context.Context, req *inferbridge.InferRequest) (*inferbridge.InferResponse, error) {
	op := "infer"
	if req != nil {
		op = "infer " + req.Model
	}
	if err := inferbridge.ValidateRequest(req); err != nil {
		return nil, &inferbridge.Error{Op: op, Code: inferbridge.CodeInvalidArgument, Message: err.Error(), Err: err}
	}
	msg, err := EncodeRequest(req)
	if err != nil {
		return nil, &inferbridge.Error{Op: op, Code: inferbridge.CodeInvalidArgument, Message: err.Error(), Err: err}
	}
	r, err := c.inference.ModelInfer(ctx, msg)
	if err != nil {
		return nil, wrap(ctx, op, err)
	}
	resp, err := DecodeResponse(r)
	if err != nil {
		return nil, &inferbridge.Error{Op: op, Code: inferbridge.CodeInternal, Message: "malformed response: " + err.Error(), Err: err}
	}
	return resp, nil
}

// EncodeRequest builds the ModelInferRequest for req, inputs in raw_input_contents.
func EncodeRequest(req *inferbridge.InferRequest) (*inferencepb.ModelInferRequest, error) {
	msg := &inferencepb.ModelInferRequest{
		ModelName:        req.Model,
		ModelVersion:     req.Version,
		Id:               req.ID,
		Inputs:           make([]*inferencepb.ModelInferRequest_InferInputTensor, len(req.Inputs)),
		RawInputContents: make([][]byte, 0, len(req.Inputs)),
	}
	var err error
	if msg.Parameters, err = encodeParameters(req.Parameters); err != nil {
		return nil, err
	}
	for i, t := range req.Inputs {
		in := &inferencepb.ModelInferRequest_InferInputTensor{Name: t.Name, Datatype: t.Datatype, Shape: t.Shape}
		if in.Parameters, err = encodeParameters(t.Parameters); err != nil {
			return nil, fmt.Errorf("input %q: %w", t.Name, err)
		}
		msg.Inputs[i] = in
		if !t.InSharedMemory() { // an input in shared memory has no buffer (Triton's rule)
			msg.RawInputContents = append(msg.RawInputContents, t.Raw)
		}
	}
	for _, name := range req.Outputs {
		out := &inferencepb.ModelInferRequest_InferRequestedOutputTensor{Name: name}
		if out.Parameters, err = encodeParameters(req.OutputParameters[name]); err != nil {
			return nil, fmt.Errorf("output %q: %w", name, err)
		}
		msg.Outputs = append(msg.Outputs, out)
	}
	return msg, nil
}

// DecodeResponse converts a ModelInferResponse, whether its outputs travel in
// raw_output_contents or in typed contents, into an InferResponse.
func DecodeResponse(r *inferencepb.ModelInferResponse) (*inferbridge.InferResponse, error) {
	raw := r.GetRawOutputContents()
	if len(raw) > 0 && len(raw) != len(r.GetOutputs()) {
		return nil, fmt.Errorf("%d raw_output_contents for %d outputs", len(raw), len(r.GetOutputs()))
	}
	resp := &inferbridge.InferResponse{
		Model: r.GetModelName(), Version: r.GetModelVersion(), ID: r.GetId(),
		Parameters: decodeParameters(r.GetParameters()),
		Outputs:    make([]*inferbridge.Tensor, len(r.GetOutputs())),
	}
	for i, o := range r.GetOutputs() {
		t := &inferbridge.Tensor{Name: o.GetName(), Datatype: o.GetDatatype(), Shape: o.GetShape(), Parameters: decodeParameters(o.GetParameters())}
		if t.Shape == nil {
			t.Shape = []int64{}
		}
		if len(raw) > 0 {
			t.Raw = raw[i]
		} else {
			var err error
			if t.Raw, err = rawFromContents(t.Datatype, o.GetContents()); err != nil {
				return nil, fmt.Errorf("output %q: %w", t.Name, err)
			}
		}
		if err := t.Validate(); err != nil {
			return nil, err
		}
		resp.Outputs[i] = t
	}
	return resp, nil
}

func rawFromContents(dt inferbridge.Datatype, c *inferencepb.InferTensorContents) ([]byte, error) {
	le := binary.LittleEndian
	var out []byte
	switch dt {
	case inferbridge.BOOL:
		for _, v := range c.GetBoolContents() {
			b := byte(0)
			if v {
				b = 1
			}
			out = append(out, b)
		}
	case inferbridge.INT8:
		for _, v := range c.GetIntContents() {
			out = append(out, byte(int8(v)))
		}
	case inferbridge.INT16:
		for _, v := range c.GetIntContents() {
			out = le.AppendUint16(out, uint16(int16(v)))
		}
	case inferbridge.INT32:
		for _, v := range c.GetIntContents() {
			out = le.AppendUint32(out, uint32(v))
		}
	case inferbridge.INT64:
		for _, v := range c.GetInt64Contents() {
			out = le.AppendUint64(out, uint64(v))
		}
	case inferbridge.UINT8:
		for _, v := range c.GetUintContents() {
			out = append(out, byte(v))
		}
	case inferbridge.UINT16:
		for _, v := range c.GetUintContents() {
			out = le.AppendUint16(out, uint16(v))
		}
	case inferbridge.UINT32:
		for _, v := range c.GetUintContents() {
			out = le.AppendUint32(out, v)
		}
	case inferbridge.UINT64:
		for _, v := range c.GetUint64Contents() {
			out = le.AppendUint64(out, v)
		}
	case inferbridge.FP32:
		for _, v := range c.GetFp32Contents() {
			out = le.AppendUint32(out, math.Float32bits(v))
		}
	case inferbridge.FP64:
		for _, v := range c.GetFp64Contents() {
			out = le.AppendUint64(out, math.Float64bits(v))
		}
	case inferbridge.BYTES:
		out = inferbridge.EncodeBytes(c.GetBytesContents())
	default:
		return nil, fmt.Errorf("%s output without raw_output_contents", dt)
	}
	if out == nil {
		out = []byte{}
	}
	return out, nil
}

func encodeParameters(in inferbridge.Parameters) (map[string]*inferencepb.InferParameter, error) {
	if len(in) == 0 {
		return nil, nil
	}
	out := make(map[string]*inferencepb.InferParameter, len(in))
	for k, v := range in {
		p := &inferencepb.InferParameter{}
		switch x := v.(type) {
		case bool:
			p.ParameterChoice = &inferencepb.InferParameter_BoolParam{BoolParam: x}
		case int:
			p.ParameterChoice = &inferencepb.InferParameter_Int64Param{Int64Param: int64(x)}
		case int32:
			p.ParameterChoice = &inferencepb.InferParameter_Int64Param{Int64Param: int64(x)}
		case int64:
			p.ParameterChoice = &inferencepb.InferParameter_Int64Param{Int64Param: x}
		case uint64:
			p.ParameterChoice = &inferencepb.InferParameter_Uint64Param{Uint64Param: x}
		case float32:
			p.ParameterChoice = &inferencepb.InferParameter_DoubleParam{DoubleParam: float64(x)}
		case float64:
			p.ParameterChoice = &inferencepb.InferParameter_DoubleParam{DoubleParam: x}
		case string:
			p.ParameterChoice = &inferencepb.InferParameter_StringParam{StringParam: x}
		default:
			return nil, fmt.Errorf("parameter %q has type %T; use bool, int64, uint64, float64 or string", k, v)
		}
		out[k] = p
	}
	return out, nil
}

func decodeParameters(in map[string]*inferencepb.InferParameter) inferbridge.Parameters {
	if len(in) == 0 {
		return nil
	}
	out := make(inferbridge.Parameters, len(in))
	for k, p := range in {
		switch x := p.GetParameterChoice().(type) {
		case *inferencepb.InferParameter_BoolParam:
			out[k] = x.BoolParam
		case *inferencepb.InferParameter_Int64Param:
			out[k] = x.Int64Param
		case *inferencepb.InferParameter_Uint64Param:
			out[k] = x.Uint64Param
		case *inferencepb.InferParameter_DoubleParam:
			out[k] = x.DoubleParam
		case *inferencepb.InferParameter_StringParam:
			out[k] = x.StringParam
		}
	}
	return out
}

var codeMap = map[codes.Code]inferbridge.Code{
	codes.InvalidArgument:    inferbridge.CodeInvalidArgument,
	codes.FailedPrecondition: inferbridge.CodeFailedPrecondition,
	codes.Aborted:            inferbridge.CodeAborted,
	codes.AlreadyExists:      inferbridge.CodeAborted,
	codes.OutOfRange:         inferbridge.CodeInvalidArgument,
	codes.NotFound:           inferbridge.CodeNotFound,
	codes.ResourceExhausted:  inferbridge.CodeResourceExhausted,
	codes.Unavailable:        inferbridge.CodeUnavailable,
	codes.DeadlineExceeded:   inferbridge.CodeDeadlineExceeded,
	codes.Canceled:           inferbridge.CodeCanceled,
	codes.Internal:           inferbridge.CodeInternal,
	codes.Unimplemented:      inferbridge.CodeUnimplemented,
	codes.Unauthenticated:    inferbridge.CodeUnauthenticated,
	codes.PermissionDenied:   inferbridge.CodePermissionDenied,
}

// wrap turns a gRPC error into an *inferbridge.Error that unwraps to the status error
// (and, for a context that ended on the client side, matches the context error too).
func wrap(ctx context.Context, op string, err error) error {
	st, _ := status.FromError(err)
	e := &inferbridge.Error{Op: op, Code: codeMap[st.Code()], GRPCCode: uint32(st.Code()), Message: st.Message(), Err: err}
	var ra *retryAfterError
	if errors.As(err, &ra) {
		e.RetryAfter = ra.after
	}
	if cerr := ctx.Err(); cerr != nil {
		e.Err = errors.Join(err, cerr)
	}
	return e
}

var _ inferbridge.Client = (*Client)(nil)
