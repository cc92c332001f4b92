package pool

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"strconv"

	"google.golang.org/protobuf/encoding/protowire"
)

// REST→gRPC translation of an OIP infer request, for a REST client in front of a
// gRPC-only upstream. Tensor data always travels as raw_input_contents /
// raw_output_contents: binary-extension tensors are copied as they are (the fast path);
// JSON `data` is packed little-endian once. Field numbers are those of
// grpc_service.proto (ModelInferRequest, ModelInferResponse).

type restInput struct {
	Name       string                     `json:"name"`
	Datatype   string                     `json:"datatype"`
	Shape      []int64                    `json:"shape"`
	Parameters map[string]json.RawMessage `json:"parameters"`
	Data       json.RawMessage            `json:"data"`
}

type restOutput struct {
	Name       string                     `json:"name"`
	Parameters map[string]json.RawMessage `json:"parameters"`
}

type restRequest struct {
	ID         string                     `json:"id"`
	Parameters map[string]json.RawMessage `json:"parameters"`
	Inputs     []restInput                `json:"inputs"`
	Outputs    []restOutput               `json:"outputs"`
}

// restOnlyParameters are the binary extension's, meaningless over gRPC.
var restOnlyParameters = map[string]bool{"binary_data_size": true, "binary_data": true, "binary_data_output": true}

// translation remembers what the REST answer needs from the request.
type translation struct {
	binaryAll bool            // binary_data_output
	binaryOut map[string]bool // outputs[].parameters.binary_data
	requestID string
}

// encodeInferRequest builds a ModelInferRequest from a REST body (JSON, or JSON then
// binary tensors when jsonLen < len(body)); timeoutUS > 0 sets the timeout parameter.
func encodeInferRequest(model, version string, body []byte, jsonLen int, timeoutUS int64) ([]byte, *translation, error) {
	var req restRequest
	if err := json.Unmarshal(body[:jsonLen], &req); err != nil {
		return nil, nil, fmt.Errorf("the request body is not a valid inference request: %v", err)
	}
	tr := &translation{binaryOut: map[string]bool{}, requestID: req.ID}
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, model)
	if version != "" {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendString(b, version)
	}
	if req.ID != "" {
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		b = protowire.AppendString(b, req.ID)
	}
	for k, v := range req.Parameters {
		if k == "binary_data_output" {
			tr.binaryAll = string(v) == "true"
			continue
		}
		if k == "timeout" && timeoutUS > 0 || restOnlyParameters[k] {
			continue
		}
		var err error
		if b, err = appendParameter(b, 4, k, v); err != nil {
			return nil, nil, err
		}
	}
	if timeoutUS > 0 {
		b, _ = appendParameter(b, 4, "timeout", json.RawMessage(strconv.FormatInt(timeoutUS, 10)))
	}
	tail := body[jsonLen:]
	raws := make([][]byte, len(req.Inputs))
	for i, in := range req.Inputs {
		var t []byte
		t = protowire.AppendTag(t, 1, protowire.BytesType)
		t = protowire.AppendString(t, in.Name)
		t = protowire.AppendTag(t, 2, protowire.BytesType)
		t = protowire.AppendString(t, in.Datatype)
		var shape []byte
		for _, d := range in.Shape {
			shape = protowire.AppendVarint(shape, uint64(d))
		}
		t = protowire.AppendTag(t, 3, protowire.BytesType)
		t = protowire.AppendBytes(t, shape)
		for k, v := range in.Parameters {
			if restOnlyParameters[k] {
				continue
			}
			var err error
			if t, err = appendParameter(t, 4, k, v); err != nil {
				return nil, nil, err
			}
		}
		b = protowire.AppendTag(b, 5, protowire.BytesType)
		b = protowire.AppendBytes(b, t)
		if size, ok := in.Parameters["binary_data_size"]; ok {
			n, err := strconv.Atoi(string(size))
			if err != nil || n < 0 || n > len(tail) {
				return nil, nil, fmt.Errorf("input '%s': binary_data_size %s is not within the %d binary bytes left", in.Name, size, len(tail))
			}
			raws[i], tail = tail[:n], tail[n:]
			continue
		}
		raw, err := packJSON(in.Datatype, in.Data)
		if err != nil {
			return nil, nil, fmt.Errorf("input '%s': %v", in.Name, err)
		}
		raws[i] = raw
	}
	for _, out := range req.Outputs {
		var o []byte
		o = protowire.AppendTag(o, 1, protowire.BytesType)
		o = protowire.AppendString(o, out.Name)
		for k, v := range out.Parameters {
			if k == "binary_data" {
				tr.binaryOut[out.Name] = string(v) == "true"
				continue
			}
			if restOnlyParameters[k] {
				continue
			}
			var err error
			if o, err = appendParameter(o, 2, k, v); err != nil {
				return nil, nil, err
			}
		}
		b = protowire.AppendTag(b, 6, protowire.BytesType)
		b = protowire.AppendBytes(b, o)
	}
	for _, raw := range raws {
		b = protowire.AppendTag(b, 7, protowire.BytesType)
		b = protowire.AppendBytes(b, raw)
	}
	return b, tr, nil
}

// appendParameter appends one map<string, InferParameter> entry as field num.
func appendParameter(b []byte, num protowire.Number, key string, v json.RawMessage) ([]byte, error) {
	var p []byte
	var any interface{}
	if err := json.Unmarshal(v, &any); err != nil {
		return nil, fmt.Errorf("parameter '%s': %v", key, err)
	}
	switch x := any.(type) {
	case bool:
		p = protowire.AppendTag(p, 1, protowire.VarintType)
		p = protowire.AppendVarint(p, protowire.EncodeBool(x))
	case string:
		p = protowire.AppendTag(p, 3, protowire.BytesType)
		p = protowire.AppendString(p, x)
	case float64:
		if i, err := strconv.ParseInt(string(v), 10, 64); err == nil {
			p = protowire.AppendTag(p, 2, protowire.VarintType)
			p = protowire.AppendVarint(p, uint64(i))
		} else {
			p = protowire.AppendTag(p, 4, protowire.Fixed64Type)
			p = protowire.AppendFixed64(p, math.Float64bits(x))
		}
	default:
		return nil, fmt.Errorf("parameter '%s' must be a bool, a number or a string", key)
	}
	var e []byte
	e = protowire.AppendTag(e, 1, protowire.BytesType)
	e = protowire.AppendString(e, key)
	e = protowire.AppendTag(e, 2, protowire.BytesType)
	e = protowire.AppendBytes(e, p)
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, e), nil
}

// flatten appends the leaves of a (nested) JSON array.
func flatten(v any, out []any) []any {
	if arr, ok := v.([]any); ok {
		for _, x := range arr {
			out = flatten(x, out)
		}
		return out
	}
	return append(out, v)
}

// packJSON packs JSON tensor data little-endian as the datatype's raw bytes.
func packJSON(datatype string, data json.RawMessage) ([]byte, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("no data")
	}
	dec := json.NewDecoder(bytesReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	leaves := flatten(v, nil)
	var b []byte
	for _, leaf := range leaves {
		var err error
		if b, err = appendElement(b, datatype, leaf); err != nil {
			return nil, err
		}
	}
	return b, nil
}

func appendElement(b []byte, datatype string, leaf any) ([]byte, error) {
	if datatype == "BYTES" {
		s, ok := leaf.(string)
		if !ok {
			return nil, fmt.Errorf("BYTES data must be strings")
		}
		b = binary.LittleEndian.AppendUint32(b, uint32(len(s)))
		return append(b, s...), nil
	}
	if datatype == "BOOL" {
		x, ok := leaf.(bool)
		if !ok {
			return nil, fmt.Errorf("BOOL data must be true or false")
		}
		if x {
			return append(b, 1), nil
		}
		return append(b, 0), nil
	}
	n, ok := leaf.(json.Number)
	if !ok {
		return nil, fmt.Errorf("%s data must be numbers", datatype)
	}
	switch datatype {
	case "FP32", "FP64", "FP16", "BF16":
		f, err := n.Float64()
		if err != nil {
			return nil, err
		}
		switch datatype {
		case "FP32":
			return binary.LittleEndian.AppendUint32(b, math.Float32bits(float32(f))), nil
		case "FP64":
			return binary.LittleEndian.AppendUint64(b, math.Float64bits(f)), nil
		case "BF16":
			return binary.LittleEndian.AppendUint16(b, uint16(math.Float32bits(float32(f))>>16)), nil
		}
		return binary.LittleEndian.AppendUint16(b, float32ToHalf(float32(f))), nil
	}
	i, err := strconv.ParseInt(n.String(), 10, 64)
	if err != nil {
		u, uerr := strconv.ParseUint(n.String(), 10, 64)
		if uerr != nil {
			return nil, fmt.Errorf("%s data must be integers", datatype)
		}
		i = int64(u)
	}
	switch datatype {
	case "INT8", "UINT8":
		return append(b, byte(i)), nil
	case "INT16", "UINT16":
		return binary.LittleEndian.AppendUint16(b, uint16(i)), nil
	case "INT32", "UINT32":
		return binary.LittleEndian.AppendUint32(b, uint32(i)), nil
	case "INT64", "UINT64":
		return binary.LittleEndian.AppendUint64(b, uint64(i)), nil
	}
	return nil, fmt.Errorf("unknown datatype %s", datatype)
}

// float32ToHalf rounds to the nearest IEEE 754 half (ties to even), with infinities and NaN.
func float32ToHalf(f float32) uint16 {
	bits := math.Float32bits(f)
	sign := uint16(bits>>16) & 0x8000
	exp := int((bits>>23)&0xff) - 127 + 15
	mant := bits & 0x7fffff
	switch {
	case (bits>>23)&0xff == 0xff: // Inf or NaN
		if mant != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	case exp >= 31:
		return sign | 0x7c00
	case exp <= 0:
		if exp < -10 {
			return sign
		}
		mant |= 0x800000
		shift := uint(14 - exp)
		half := uint16(mant >> shift)
		if rem := mant & (1<<shift - 1); rem > 1<<(shift-1) || (rem == 1<<(shift-1) && half&1 == 1) {
			half++
		}
		return sign | half
	}
	half := sign | uint16(exp)<<10 | uint16(mant>>13)
	if rem := mant & 0x1fff; rem > 0x1000 || (rem == 0x1000 && half&1 == 1) {
		half++
	}
	return half
}

func halfToFloat32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case exp == 0:
		if mant == 0 {
			return math.Float32frombits(sign)
		}
		f := float32(mant) / 1024 / 16384
		if sign != 0 {
			f = -f
		}
		return f
	}
	return math.Float32frombits(sign | (exp-15+127)<<23 | mant<<13)
}
