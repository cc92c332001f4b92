package frontend

import (
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// RawMsg is a gRPC message kept as the bytes on the wire: both backends pass request
// and response messages through without decoding them.
type RawMsg struct{ Data mem.BufferSlice }

// Codec passes RawMsg through untouched and delegates every other message (those of
// health and reflection) to grpc-go's proto codec. It is the front end's server codec,
// and the pool's client codec towards its upstreams.
type Codec struct{}

var protoCodec = encoding.GetCodecV2(proto.Name)

// Marshal hands over a RawMsg's data (grpc-go frees what Marshal returns once it is sent).
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	if m, ok := v.(*RawMsg); ok {
		data := m.Data
		m.Data = nil
		return data, nil
	}
	return protoCodec.Marshal(v)
}

// Unmarshal keeps data in a RawMsg: grpc-go frees data after Unmarshal, so it takes a
// reference that the message's owner frees once it is written on.
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	if m, ok := v.(*RawMsg); ok {
		data.Ref()
		m.Data = data
		return nil
	}
	return protoCodec.Unmarshal(data, v)
}

// Name is proto's: clients see an ordinary proto service.
func (Codec) Name() string { return proto.Name }

// DeadlineMargin is how long before a call's deadline a backend answers
// DEADLINE_EXCEEDED itself: at the deadline grpc-go resets the stream (RST_STREAM
// CANCEL), which a client whose own timer has not fired yet reads as CANCELLED.
const DeadlineMargin = time.Millisecond

// RequestModel reads the model name (field 1) and version (field 2) of a request of
// the model-scoped methods (ModelInferRequest, ModelMetadataRequest, ...): subslices of
// msg, no allocation. Like protobuf's parsers (Python's included) it takes a field's
// last occurrence, so that a request naming two models is checked under the one that
// runs. found is false when field 1 is absent or msg is malformed.
func RequestModel(msg []byte) (name, version []byte, found bool) {
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return nil, nil, false
		}
		msg = msg[n:]
		if (num == 1 || num == 2) && typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(msg)
			if m < 0 {
				return nil, nil, false
			}
			if num == 1 {
				name, found = v, true
			} else {
				version = v
			}
			msg = msg[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, msg)
		if m < 0 {
			return nil, nil, false
		}
		msg = msg[m:]
	}
	return name, version, found
}

// BufferModel is RequestModel's name of a message still in grpc-go's buffers (one
// buffer: read in place; several: copied together once).
func BufferModel(body mem.BufferSlice) (name []byte, found bool) {
	var msg []byte
	if len(body) == 1 {
		msg = body[0].ReadOnlyData()
	} else {
		msg = body.Materialize()
	}
	name, _, found = RequestModel(msg)
	return name, found
}

// codeNames are the canonical status code names (as in grpc/status.proto and Python's
// grpc.StatusCode), which the metrics' `code` label and access logs carry. They are
// not codes.Code.String(), which gives Go-style names ("ResourceExhausted").
var codeNames = [NumCodes]string{
	codes.OK:                 "OK",
	codes.Canceled:           "CANCELLED",
	codes.Unknown:            "UNKNOWN",
	codes.InvalidArgument:    "INVALID_ARGUMENT",
	codes.DeadlineExceeded:   "DEADLINE_EXCEEDED",
	codes.NotFound:           "NOT_FOUND",
	codes.AlreadyExists:      "ALREADY_EXISTS",
	codes.PermissionDenied:   "PERMISSION_DENIED",
	codes.ResourceExhausted:  "RESOURCE_EXHAUSTED",
	codes.FailedPrecondition: "FAILED_PRECONDITION",
	codes.Aborted:            "ABORTED",
	codes.OutOfRange:         "OUT_OF_RANGE",
	codes.Unimplemented:      "UNIMPLEMENTED",
	codes.Internal:           "INTERNAL",
	codes.Unavailable:        "UNAVAILABLE",
	codes.DataLoss:           "DATA_LOSS",
	codes.Unauthenticated:    "UNAUTHENTICATED",
}

// NumCodes bounds the codes gRPC defines (0 to Unauthenticated), for tables by code.
const NumCodes = int(codes.Unauthenticated) + 1

// CodeName is c's canonical name ("CODE_<n>" for a code gRPC does not define).
func CodeName(c codes.Code) string {
	if int(c) < NumCodes {
		return codeNames[c]
	}
	return "CODE_" + strconv.Itoa(int(c))
}
