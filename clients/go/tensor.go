package inferbridge

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Tensor is a named, typed, shaped tensor: an inference input or output.
//
// Raw holds the elements little-endian and row-major, exactly as they travel over gRPC
// (raw_input_contents / raw_output_contents) and REST's binary tensor extension: BOOL is
// one byte per element, and each BYTES element is a 4-byte little-endian length followed by
// its bytes. Build tensors with the typed constructors and read them with the typed
// readers; the readers of a nil *Tensor return an error, so the result of
// InferResponse.Output can be read without a separate nil check.
type Tensor struct {
	// Name is the input or output name the model declares.
	Name string
	// Datatype is the Open Inference Protocol datatype, such as FP32.
	Datatype Datatype
	// Shape is the full shape, batch dimension included.
	Shape []int64
	// Parameters are the tensor's protocol parameters, if any.
	Parameters Parameters
	// Raw is the tensor's data in wire format (see the type's documentation).
	Raw []byte
}

// Parameters are Open Inference Protocol parameters: names mapped to bool, int64,
// uint64, float64 or string values.
type Parameters map[string]any

// Elements is the number of elements the shape describes (1 for an empty shape).
func Elements(shape []int64) int64 {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	return n
}

// NewRaw builds a tensor from data already in wire format; it is how FP16 and BF16
// tensors are sent. The data is not copied.
func NewRaw(name string, datatype Datatype, shape []int64, raw []byte) *Tensor {
	return &Tensor{Name: name, Datatype: datatype, Shape: shape, Raw: raw}
}

// NewFP32 builds an FP32 tensor from a row-major slice.
func NewFP32(name string, shape []int64, data []float32) *Tensor {
	raw := make([]byte, 4*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
	}
	return NewRaw(name, FP32, shape, raw)
}

// NewFP64 builds an FP64 tensor from a row-major slice.
func NewFP64(name string, shape []int64, data []float64) *Tensor {
	raw := make([]byte, 8*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint64(raw[8*i:], math.Float64bits(v))
	}
	return NewRaw(name, FP64, shape, raw)
}

// NewFP16 builds an FP16 tensor from IEEE 754 half-precision bit patterns (see
// Float32ToFP16).
func NewFP16(name string, shape []int64, bits []uint16) *Tensor {
	return NewRaw(name, FP16, shape, putUint16s(bits))
}

// NewInt8 builds an INT8 tensor from a row-major slice.
func NewInt8(name string, shape []int64, data []int8) *Tensor {
	raw := make([]byte, len(data))
	for i, v := range data {
		raw[i] = byte(v)
	}
	return NewRaw(name, INT8, shape, raw)
}

// NewInt16 builds an INT16 tensor from a row-major slice.
func NewInt16(name string, shape []int64, data []int16) *Tensor {
	raw := make([]byte, 2*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint16(raw[2*i:], uint16(v))
	}
	return NewRaw(name, INT16, shape, raw)
}

// NewInt32 builds an INT32 tensor from a row-major slice.
func NewInt32(name string, shape []int64, data []int32) *Tensor {
	raw := make([]byte, 4*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint32(raw[4*i:], uint32(v))
	}
	return NewRaw(name, INT32, shape, raw)
}

// NewInt64 builds an INT64 tensor from a row-major slice.
func NewInt64(name string, shape []int64, data []int64) *Tensor {
	raw := make([]byte, 8*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint64(raw[8*i:], uint64(v))
	}
	return NewRaw(name, INT64, shape, raw)
}

// NewUint8 builds a UINT8 tensor from a row-major slice; the slice is copied.
func NewUint8(name string, shape []int64, data []uint8) *Tensor {
	return NewRaw(name, UINT8, shape, append([]byte(nil), data...))
}

// NewUint16 builds a UINT16 tensor from a row-major slice.
func NewUint16(name string, shape []int64, data []uint16) *Tensor {
	return NewRaw(name, UINT16, shape, putUint16s(data))
}

// NewUint32 builds a UINT32 tensor from a row-major slice.
func NewUint32(name string, shape []int64, data []uint32) *Tensor {
	raw := make([]byte, 4*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint32(raw[4*i:], v)
	}
	return NewRaw(name, UINT32, shape, raw)
}

// NewUint64 builds a UINT64 tensor from a row-major slice.
func NewUint64(name string, shape []int64, data []uint64) *Tensor {
	raw := make([]byte, 8*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint64(raw[8*i:], v)
	}
	return NewRaw(name, UINT64, shape, raw)
}

// NewBool builds a BOOL tensor from a row-major slice.
func NewBool(name string, shape []int64, data []bool) *Tensor {
	raw := make([]byte, len(data))
	for i, v := range data {
		if v {
			raw[i] = 1
		}
	}
	return NewRaw(name, BOOL, shape, raw)
}

// NewBytes builds a BYTES tensor from a row-major slice of byte strings.
func NewBytes(name string, shape []int64, data [][]byte) *Tensor {
	return NewRaw(name, BYTES, shape, EncodeBytes(data))
}

// NewStrings builds a BYTES tensor from a row-major slice of strings.
func NewStrings(name string, shape []int64, data []string) *Tensor {
	items := make([][]byte, len(data))
	for i, s := range data {
		items[i] = []byte(s)
	}
	return NewBytes(name, shape, items)
}

// EncodeBytes serializes BYTES elements: each is a 4-byte little-endian length followed by
// its bytes.
func EncodeBytes(items [][]byte) []byte {
	size := 0
	for _, b := range items {
		size += 4 + len(b)
	}
	raw := make([]byte, 0, size)
	for _, b := range items {
		raw = binary.LittleEndian.AppendUint32(raw, uint32(len(b)))
		raw = append(raw, b...)
	}
	return raw
}

// DecodeBytes parses serialized BYTES elements (see EncodeBytes). The elements alias raw.
func DecodeBytes(raw []byte) ([][]byte, error) {
	var items [][]byte
	for off := 0; off < len(raw); {
		if off+4 > len(raw) {
			return nil, fmt.Errorf("BYTES data ends inside an element's 4-byte length at offset %d", off)
		}
		n := int(binary.LittleEndian.Uint32(raw[off:]))
		off += 4
		if n > len(raw)-off {
			return nil, fmt.Errorf("BYTES element of %d bytes runs past the end of the data", n)
		}
		items = append(items, raw[off:off+n:off+n])
		off += n
	}
	return items, nil
}

// Validate reports whether the tensor is well formed: a name, a known datatype, no
// negative dimension, and data that exactly fills the shape.
func (t *Tensor) Validate() error {
	if t == nil {
		return fmt.Errorf("nil tensor")
	}
	if t.Name == "" {
		return fmt.Errorf("tensor has no name")
	}
	size := ElementSize(t.Datatype)
	if size < 0 {
		return fmt.Errorf("tensor %q: unknown datatype %q", t.Name, t.Datatype)
	}
	for _, d := range t.Shape {
		if d < 0 {
			return fmt.Errorf("tensor %q: shape %v has a negative dimension", t.Name, t.Shape)
		}
	}
	if t.InSharedMemory() {
		return nil // the data is in the region, and the server checks it
	}
	want := Elements(t.Shape)
	if size == 0 {
		items, err := DecodeBytes(t.Raw)
		if err != nil {
			return fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		if int64(len(items)) != want {
			return fmt.Errorf("tensor %q: shape %v needs %d BYTES elements, the data holds %d",
				t.Name, t.Shape, want, len(items))
		}
		return nil
	}
	if int64(len(t.Raw)) != want*int64(size) {
		return fmt.Errorf("tensor %q: %s shape %v needs %d bytes of data, got %d",
			t.Name, t.Datatype, t.Shape, want*int64(size), len(t.Raw))
	}
	return nil
}

// CheckShape reports whether the tensor's shape matches want, where -1 matches any size.
func (t *Tensor) CheckShape(want ...int64) error {
	if t == nil {
		return errNilTensor
	}
	ok := len(t.Shape) == len(want)
	for i := 0; ok && i < len(want); i++ {
		ok = want[i] == -1 || want[i] == t.Shape[i]
	}
	if !ok {
		return fmt.Errorf("tensor %q has shape %v, expected %v", t.Name, t.Shape, want)
	}
	return nil
}

var errNilTensor = fmt.Errorf("no such tensor (nil *Tensor)")

// check is the common part of every typed reader: the datatype matches and the data fills
// the shape. It returns the element count.
func (t *Tensor) check(dt Datatype) (int, error) {
	if t == nil {
		return 0, errNilTensor
	}
	if t.Datatype != dt {
		return 0, fmt.Errorf("tensor %q is %s, not %s", t.Name, t.Datatype, dt)
	}
	if err := t.Validate(); err != nil {
		return 0, err
	}
	return int(Elements(t.Shape)), nil
}

// Float32s reads an FP32 tensor into a new row-major slice.
func (t *Tensor) Float32s() ([]float32, error) {
	n, err := t.check(FP32)
	if err != nil {
		return nil, err
	}
	out := make([]float32, n)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.Raw[4*i:]))
	}
	return out, nil
}

// Float64s reads an FP64 tensor into a new row-major slice.
func (t *Tensor) Float64s() ([]float64, error) {
	n, err := t.check(FP64)
	if err != nil {
		return nil, err
	}
	out := make([]float64, n)
	for i := range out {
		out[i] = math.Float64frombits(binary.LittleEndian.Uint64(t.Raw[8*i:]))
	}
	return out, nil
}

// FP16Bits reads an FP16 tensor as IEEE 754 half-precision bit patterns (see
// FP16ToFloat32).
func (t *Tensor) FP16Bits() ([]uint16, error) {
	n, err := t.check(FP16)
	if err != nil {
		return nil, err
	}
	return getUint16s(t.Raw, n), nil
}

// Int8s reads an INT8 tensor into a new row-major slice.
func (t *Tensor) Int8s() ([]int8, error) {
	n, err := t.check(INT8)
	if err != nil {
		return nil, err
	}
	out := make([]int8, n)
	for i := range out {
		out[i] = int8(t.Raw[i])
	}
	return out, nil
}

// Int16s reads an INT16 tensor into a new row-major slice.
func (t *Tensor) Int16s() ([]int16, error) {
	n, err := t.check(INT16)
	if err != nil {
		return nil, err
	}
	out := make([]int16, n)
	for i := range out {
		out[i] = int16(binary.LittleEndian.Uint16(t.Raw[2*i:]))
	}
	return out, nil
}

// Int32s reads an INT32 tensor into a new row-major slice.
func (t *Tensor) Int32s() ([]int32, error) {
	n, err := t.check(INT32)
	if err != nil {
		return nil, err
	}
	out := make([]int32, n)
	for i := range out {
		out[i] = int32(binary.LittleEndian.Uint32(t.Raw[4*i:]))
	}
	return out, nil
}

// Int64s reads an INT64 tensor into a new row-major slice.
func (t *Tensor) Int64s() ([]int64, error) {
	n, err := t.check(INT64)
	if err != nil {
		return nil, err
	}
	out := make([]int64, n)
	for i := range out {
		out[i] = int64(binary.LittleEndian.Uint64(t.Raw[8*i:]))
	}
	return out, nil
}

// Uint8s reads a UINT8 tensor into a new row-major slice.
func (t *Tensor) Uint8s() ([]uint8, error) {
	if _, err := t.check(UINT8); err != nil {
		return nil, err
	}
	return append([]uint8(nil), t.Raw...), nil
}

// Uint16s reads a UINT16 tensor into a new row-major slice.
func (t *Tensor) Uint16s() ([]uint16, error) {
	n, err := t.check(UINT16)
	if err != nil {
		return nil, err
	}
	return getUint16s(t.Raw, n), nil
}

// Uint32s reads a UINT32 tensor into a new row-major slice.
func (t *Tensor) Uint32s() ([]uint32, error) {
	n, err := t.check(UINT32)
	if err != nil {
		return nil, err
	}
	out := make([]uint32, n)
	for i := range out {
		out[i] = binary.LittleEndian.Uint32(t.Raw[4*i:])
	}
	return out, nil
}

// Uint64s reads a UINT64 tensor into a new row-major slice.
func (t *Tensor) Uint64s() ([]uint64, error) {
	n, err := t.check(UINT64)
	if err != nil {
		return nil, err
	}
	out := make([]uint64, n)
	for i := range out {
		out[i] = binary.LittleEndian.Uint64(t.Raw[8*i:])
	}
	return out, nil
}

// Bools reads a BOOL tensor into a new row-major slice.
func (t *Tensor) Bools() ([]bool, error) {
	n, err := t.check(BOOL)
	if err != nil {
		return nil, err
	}
	out := make([]bool, n)
	for i := range out {
		out[i] = t.Raw[i] != 0
	}
	return out, nil
}

// ByteStrings reads a BYTES tensor into a row-major slice of byte strings; the elements
// alias the tensor's data.
func (t *Tensor) ByteStrings() ([][]byte, error) {
	if _, err := t.check(BYTES); err != nil {
		return nil, err
	}
	return DecodeBytes(t.Raw)
}

// Strings reads a BYTES tensor into a row-major slice of strings.
func (t *Tensor) Strings() ([]string, error) {
	items, err := t.ByteStrings()
	if err != nil {
		return nil, err
	}
	out := make([]string, len(items))
	for i, b := range items {
		out[i] = string(b)
	}
	return out, nil
}

func putUint16s(data []uint16) []byte {
	raw := make([]byte, 2*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint16(raw[2*i:], v)
	}
	return raw
}

func getUint16s(raw []byte, n int) []uint16 {
	out := make([]uint16, n)
	for i := range out {
		out[i] = binary.LittleEndian.Uint16(raw[2*i:])
	}
	return out
}

// Float32ToFP16 converts a float32 to the nearest IEEE 754 half-precision value (ties to
// even), returned as its bit pattern; overflow gives infinity, NaN stays NaN.
func Float32ToFP16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int((b >> 23) & 0xff)
	mant := b & 0x7fffff
	switch {
	case exp == 0xff: // Inf or NaN
		if mant != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	case exp-127 > 15: // too large: infinity
		return sign | 0x7c00
	case exp-127 >= -14: // normal half
		e := uint32(exp - 127 + 15)
		m := mant >> 13
		rest := mant & 0x1fff
		v := e<<10 | m
		if rest > 0x1000 || (rest == 0x1000 && v&1 == 1) {
			v++ // may carry into the exponent, which is still correct (up to infinity)
		}
		return sign | uint16(v)
	case exp-127 >= -25: // subnormal half
		mant |= 0x800000 // implicit leading one
		shift := uint32(-14-(exp-127)) + 13
		v := mant >> shift
		rest := mant & (1<<shift - 1)
		half := uint32(1) << (shift - 1)
		if rest > half || (rest == half && v&1 == 1) {
			v++
		}
		return sign | uint16(v)
	}
	return sign // underflow to zero
}

// FP16ToFloat32 converts an IEEE 754 half-precision bit pattern to float32 (exactly).
func FP16ToFloat32(h uint16) float32 {
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
		v := float32(mant) / (1 << 24) // subnormal: mant * 2^-24
		if sign != 0 {
			v = -v
		}
		return v
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
}
