package inferbridge

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"
)

// appendJSONData appends the tensor's elements as a flat JSON list (the "data" of the OIP
// JSON encoding).
func appendJSONData(buf []byte, t *Tensor) ([]byte, error) {
	buf = append(buf, '[')
	size := ElementSize(t.Datatype)
	var n int
	if size > 0 {
		n = len(t.Raw) / size
	}
	r := t.Raw
	le := binary.LittleEndian
	for i := 0; i < n; i++ {
		if i > 0 {
			buf = append(buf, ',')
		}
		switch t.Datatype {
		case BOOL:
			buf = strconv.AppendBool(buf, r[i] != 0)
		case UINT8:
			buf = strconv.AppendUint(buf, uint64(r[i]), 10)
		case UINT16:
			buf = strconv.AppendUint(buf, uint64(le.Uint16(r[2*i:])), 10)
		case UINT32:
			buf = strconv.AppendUint(buf, uint64(le.Uint32(r[4*i:])), 10)
		case UINT64:
			buf = strconv.AppendUint(buf, le.Uint64(r[8*i:]), 10)
		case INT8:
			buf = strconv.AppendInt(buf, int64(int8(r[i])), 10)
		case INT16:
			buf = strconv.AppendInt(buf, int64(int16(le.Uint16(r[2*i:]))), 10)
		case INT32:
			buf = strconv.AppendInt(buf, int64(int32(le.Uint32(r[4*i:]))), 10)
		case INT64:
			buf = strconv.AppendInt(buf, int64(le.Uint64(r[8*i:])), 10)
		case FP16:
			var err error
			if buf, err = appendFloat(buf, float64(FP16ToFloat32(le.Uint16(r[2*i:]))), 32); err != nil {
				return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
			}
		case FP32:
			var err error
			if buf, err = appendFloat(buf, float64(math.Float32frombits(le.Uint32(r[4*i:]))), 32); err != nil {
				return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
			}
		case FP64:
			var err error
			if buf, err = appendFloat(buf, math.Float64frombits(le.Uint64(r[8*i:])), 64); err != nil {
				return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
			}
		default:
			return nil, fmt.Errorf("tensor %q: %s cannot travel as JSON; use the binary encoding", t.Name, t.Datatype)
		}
	}
	if t.Datatype == BYTES {
		items, err := DecodeBytes(t.Raw)
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		for i, b := range items {
			if !utf8.Valid(b) {
				return nil, fmt.Errorf("tensor %q: BYTES element %d is not UTF-8 text, which JSON cannot carry; use the binary encoding", t.Name, i)
			}
			if i > 0 {
				buf = append(buf, ',')
			}
			s, _ := json.Marshal(string(b))
			buf = append(buf, s...)
		}
	}
	return append(buf, ']'), nil
}

func appendFloat(buf []byte, v float64, bits int) ([]byte, error) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil, fmt.Errorf("%v cannot travel as JSON; use the binary encoding", v)
	}
	return strconv.AppendFloat(buf, v, 'g', -1, bits), nil
}

// rawFromJSON converts the "data" of an OIP JSON tensor (nested or flat) to wire format.
func rawFromJSON(name string, dt Datatype, shape []int64, data json.RawMessage) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var tree any
	if err := dec.Decode(&tree); err != nil {
		return nil, fmt.Errorf("output %q: data is not JSON: %w", name, err)
	}
	flat := flatten(tree, nil)
	if want := Elements(shape); int64(len(flat)) != want {
		return nil, fmt.Errorf("output %q: shape %v needs %d elements, data holds %d", name, shape, want, len(flat))
	}
	size := ElementSize(dt)
	if size < 0 {
		return nil, fmt.Errorf("output %q: unknown datatype %q", name, dt)
	}
	if dt == BYTES {
		items := make([][]byte, len(flat))
		for i, v := range flat {
			s, ok := v.(string)
			if !ok {
				return nil, fmt.Errorf("output %q: BYTES element %d is %T, not a string", name, i, v)
			}
			items[i] = []byte(s)
		}
		return EncodeBytes(items), nil
	}
	raw := make([]byte, size*len(flat))
	le := binary.LittleEndian
	for i, v := range flat {
		if dt == BOOL {
			b, ok := v.(bool)
			if !ok {
				return nil, fmt.Errorf("output %q: BOOL element %d is %T", name, i, v)
			}
			if b {
				raw[i] = 1
			}
			continue
		}
		num, ok := v.(json.Number)
		if !ok {
			return nil, fmt.Errorf("output %q: %s element %d is %T, not a number", name, dt, i, v)
		}
		s := string(num)
		var err error
		switch dt {
		case UINT8, UINT16, UINT32, UINT64:
			var u uint64
			u, err = strconv.ParseUint(s, 10, 8*size)
			putInt(raw[size*i:], size, u)
		case INT8, INT16, INT32, INT64:
			var n int64
			n, err = strconv.ParseInt(s, 10, 8*size)
			putInt(raw[size*i:], size, uint64(n)) // two's complement: the low bytes are the value
		case FP16:
			var f float64
			f, err = strconv.ParseFloat(s, 32)
			le.PutUint16(raw[2*i:], Float32ToFP16(float32(f)))
		case FP32:
			var f float64
			f, err = strconv.ParseFloat(s, 32)
			le.PutUint32(raw[4*i:], math.Float32bits(float32(f)))
		case FP64:
			var f float64
			f, err = strconv.ParseFloat(s, 64)
			le.PutUint64(raw[8*i:], math.Float64bits(f))
		default:
			err = fmt.Errorf("datatype cannot travel as JSON")
		}
		if err != nil {
			return nil, fmt.Errorf("output %q: %s element %d (%s): %w", name, dt, i, s, err)
		}
	}
	return raw, nil
}

func flatten(v any, out []any) []any {
	if list, ok := v.([]any); ok {
		for _, item := range list {
			out = flatten(item, out)
		}
		return out
	}
	return append(out, v)
}

// parametersFromJSON converts decoded JSON parameters (json.Number for numbers) to
// int64, uint64 or float64 values.
func parametersFromJSON(in map[string]any) Parameters {
	if len(in) == 0 {
		return nil
	}
	out := make(Parameters, len(in))
	for k, v := range in {
		if num, ok := v.(json.Number); ok {
			if i, err := strconv.ParseInt(string(num), 10, 64); err == nil {
				v = i
			} else if u, err := strconv.ParseUint(string(num), 10, 64); err == nil {
				v = u
			} else if f, err := num.Float64(); err == nil {
				v = f
			}
		}
		out[k] = v
	}
	return out
}

// putInt writes the low size bytes of v, little-endian, at the start of dst.
func putInt(dst []byte, size int, v uint64) {
	switch size {
	case 1:
		dst[0] = byte(v)
	case 2:
		binary.LittleEndian.PutUint16(dst, uint16(v))
	case 4:
		binary.LittleEndian.PutUint32(dst, uint32(v))
	default:
		binary.LittleEndian.PutUint64(dst, v)
	}
}
