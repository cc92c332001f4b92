package pool

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"

	"google.golang.org/protobuf/encoding/protowire"
)

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

type grpcOutput struct {
	name, datatype string
	shape          []int64
	params         map[string]any
}

// decodeInferResponse turns a ModelInferResponse into the REST answer: JSON, or JSON
// then binary tensors (returning the JSON's length) for the outputs the request asked
// binary. Outputs must come as raw_output_contents (Triton's and inferbridge's way).
func decodeInferResponse(msg []byte, tr *translation) (body []byte, jsonLen int, err error) {
	var modelName, modelVersion, id string
	params := map[string]any{}
	var outputs []grpcOutput
	var raws [][]byte
	bad := fmt.Errorf("malformed ModelInferResponse")
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return nil, 0, bad
		}
		msg = msg[n:]
		if typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, msg); n < 0 {
				return nil, 0, bad
			}
			msg = msg[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(msg)
		if n < 0 {
			return nil, 0, bad
		}
		msg = msg[n:]
		switch num {
		case 1:
			modelName = string(v)
		case 2:
			modelVersion = string(v)
		case 3:
			id = string(v)
		case 4:
			if err := decodeParameter(v, params); err != nil {
				return nil, 0, err
			}
		case 5:
			out, err := decodeOutput(v)
			if err != nil {
				return nil, 0, err
			}
			outputs = append(outputs, out)
		case 6:
			raws = append(raws, v)
		}
	}
	if len(raws) != len(outputs) {
		return nil, 0, fmt.Errorf("the upstream's response has %d outputs and %d raw contents (tensor contents are not translated)", len(outputs), len(raws))
	}
	type restOut struct {
		Name       string         `json:"name"`
		Datatype   string         `json:"datatype"`
		Shape      []int64        `json:"shape"`
		Parameters map[string]any `json:"parameters,omitempty"`
		Data       any            `json:"data,omitempty"`
	}
	resp := struct {
		ModelName    string         `json:"model_name"`
		ModelVersion string         `json:"model_version,omitempty"`
		ID           string         `json:"id,omitempty"`
		Parameters   map[string]any `json:"parameters,omitempty"`
		Outputs      []restOut      `json:"outputs"`
	}{ModelName: modelName, ModelVersion: modelVersion, ID: id, Parameters: params, Outputs: []restOut{}}
	if len(params) == 0 {
		resp.Parameters = nil
	}
	var tail []byte
	for i, out := range outputs {
		ro := restOut{Name: out.name, Datatype: out.datatype, Shape: out.shape, Parameters: out.params}
		if ro.Shape == nil {
			ro.Shape = []int64{}
		}
		binaryOut, asked := tr.binaryOut[out.name]
		if !asked {
			binaryOut = tr.binaryAll
		}
		if binaryOut {
			if ro.Parameters == nil {
				ro.Parameters = map[string]any{}
			}
			ro.Parameters["binary_data_size"] = len(raws[i])
			tail = append(tail, raws[i]...)
		} else {
			data, err := unpackRaw(out.datatype, raws[i])
			if err != nil {
				return nil, 0, fmt.Errorf("output '%s': %v", out.name, err)
			}
			ro.Data = data
		}
		resp.Outputs = append(resp.Outputs, ro)
	}
	js, err := json.Marshal(resp)
	if err != nil {
		return nil, 0, err
	}
	return append(js, tail...), len(js), nil
}

func decodeOutput(m []byte) (grpcOutput, error) {
	var out grpcOutput
	bad := fmt.Errorf("malformed InferOutputTensor")
	for len(m) > 0 {
		num, typ, n := protowire.ConsumeTag(m)
		if n < 0 {
			return out, bad
		}
		m = m[n:]
		if num == 3 && typ == protowire.VarintType { // unpacked shape
			d, k := protowire.ConsumeVarint(m)
			if k < 0 {
				return out, bad
			}
			out.shape = append(out.shape, int64(d))
			m = m[k:]
			continue
		}
		if typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, m); n < 0 {
				return out, bad
			}
			m = m[n:]
			continue
		}
		v, k := protowire.ConsumeBytes(m)
		if k < 0 {
			return out, bad
		}
		m = m[k:]
		switch num {
		case 1:
			out.name = string(v)
		case 2:
			out.datatype = string(v)
		case 3:
			for len(v) > 0 {
				d, j := protowire.ConsumeVarint(v)
				if j < 0 {
					return out, bad
				}
				out.shape = append(out.shape, int64(d))
				v = v[j:]
			}
		case 4:
			if out.params == nil {
				out.params = map[string]any{}
			}
			if err := decodeParameter(v, out.params); err != nil {
				return out, err
			}
		}
	}
	return out, nil
}

// decodeParameter reads one map<string, InferParameter> entry into params.
func decodeParameter(entry []byte, params map[string]any) error {
	var key string
	var value any
	for len(entry) > 0 {
		num, typ, n := protowire.ConsumeTag(entry)
		if n < 0 || typ != protowire.BytesType {
			return fmt.Errorf("malformed parameter")
		}
		entry = entry[n:]
		v, k := protowire.ConsumeBytes(entry)
		if k < 0 {
			return fmt.Errorf("malformed parameter")
		}
		entry = entry[k:]
		if num == 1 {
			key = string(v)
			continue
		}
		for len(v) > 0 {
			pnum, ptyp, j := protowire.ConsumeTag(v)
			if j < 0 {
				return fmt.Errorf("malformed parameter")
			}
			v = v[j:]
			switch {
			case ptyp == protowire.VarintType:
				x, j := protowire.ConsumeVarint(v)
				if j < 0 {
					return fmt.Errorf("malformed parameter")
				}
				v = v[j:]
				switch pnum {
				case 1:
					value = x != 0
				case 2:
					value = int64(x)
				default:
					value = x
				}
			case ptyp == protowire.Fixed64Type:
				x, j := protowire.ConsumeFixed64(v)
				if j < 0 {
					return fmt.Errorf("malformed parameter")
				}
				v = v[j:]
				value = math.Float64frombits(x)
			case ptyp == protowire.BytesType:
				s, j := protowire.ConsumeBytes(v)
				if j < 0 {
					return fmt.Errorf("malformed parameter")
				}
				v = v[j:]
				value = string(s)
			default:
				return fmt.Errorf("malformed parameter")
			}
		}
	}
	params[key] = value
	return nil
}

// unpackRaw decodes little-endian raw tensor bytes into a flat JSON-ready slice.
func unpackRaw(datatype string, raw []byte) (any, error) {
	size := map[string]int{"BOOL": 1, "INT8": 1, "UINT8": 1, "INT16": 2, "UINT16": 2, "FP16": 2, "BF16": 2,
		"INT32": 4, "UINT32": 4, "FP32": 4, "INT64": 8, "UINT64": 8, "FP64": 8}[datatype]
	if datatype == "BYTES" {
		var out []string
		for len(raw) > 0 {
			if len(raw) < 4 {
				return nil, fmt.Errorf("truncated BYTES element")
			}
			n := int(binary.LittleEndian.Uint32(raw))
			if len(raw) < 4+n {
				return nil, fmt.Errorf("truncated BYTES element")
			}
			out = append(out, string(raw[4:4+n]))
			raw = raw[4+n:]
		}
		return out, nil
	}
	if size == 0 {
		return nil, fmt.Errorf("unknown datatype %s", datatype)
	}
	if len(raw)%size != 0 {
		return nil, fmt.Errorf("%d bytes is not a whole number of %s elements", len(raw), datatype)
	}
	out := make([]json.RawMessage, 0, len(raw)/size)
	for i := 0; i < len(raw); i += size {
		e := raw[i : i+size]
		var s string
		switch datatype {
		case "BOOL":
			s = strconv.FormatBool(e[0] != 0)
		case "INT8":
			s = strconv.FormatInt(int64(int8(e[0])), 10)
		case "UINT8":
			s = strconv.FormatUint(uint64(e[0]), 10)
		case "INT16":
			s = strconv.FormatInt(int64(int16(binary.LittleEndian.Uint16(e))), 10)
		case "UINT16":
			s = strconv.FormatUint(uint64(binary.LittleEndian.Uint16(e)), 10)
		case "INT32":
			s = strconv.FormatInt(int64(int32(binary.LittleEndian.Uint32(e))), 10)
		case "UINT32":
			s = strconv.FormatUint(uint64(binary.LittleEndian.Uint32(e)), 10)
		case "INT64":
			s = strconv.FormatInt(int64(binary.LittleEndian.Uint64(e)), 10)
		case "UINT64":
			s = strconv.FormatUint(binary.LittleEndian.Uint64(e), 10)
		case "FP16":
			s = formatFloat(float64(halfToFloat32(binary.LittleEndian.Uint16(e))), 32)
		case "BF16":
			s = formatFloat(float64(math.Float32frombits(uint32(binary.LittleEndian.Uint16(e))<<16)), 32)
		case "FP32":
			s = formatFloat(float64(math.Float32frombits(binary.LittleEndian.Uint32(e))), 32)
		case "FP64":
			s = formatFloat(math.Float64frombits(binary.LittleEndian.Uint64(e)), 64)
		}
		out = append(out, json.RawMessage(s))
	}
	return out, nil
}

// formatFloat writes a float as JSON; NaN and infinities, which JSON lacks, as strings.
func formatFloat(f float64, bits int) string {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return strconv.Quote(strconv.FormatFloat(f, 'g', -1, bits))
	}
	return strconv.FormatFloat(f, 'g', -1, bits)
}
