// An iris logistic-regression classifier as a Go c-shared library (inferbridge native ABI v1).
//
// Built by inferbridge.examples with `go build -buildmode=c-shared`; the weights come
// from a generated weights.go next to this file. Inputs: `input` FP32 [N, 4]. Outputs:
// `probabilities` FP32 [N, 3] (softmax of the linear scores) and `label` INT64 [N].
package main

/*
#include <stdint.h>
#include "ib_native.h"
*/
import "C"

import (
	"fmt"
	"math"
	"unsafe"
)

func main() {}

//export ib_abi_version
func ib_abi_version() C.int32_t { return C.IB_ABI_VERSION }

//export ib_infer
func ib_infer(inputs *C.ib_tensor, nInputs C.int32_t, outputs *C.ib_tensor, nOutputs C.int32_t,
	message *C.char, messageLen C.int32_t) C.int32_t {
	fail := func(code C.int32_t, format string, args ...any) C.int32_t {
		writeMessage(message, messageLen, fmt.Sprintf(format, args...))
		return code
	}
	if nInputs != 1 || nOutputs != 2 {
		return fail(C.IB_INVALID_INPUT, "expected 1 input and 2 outputs, got %d and %d", nInputs, nOutputs)
	}
	in := unsafe.Slice(inputs, 1)[0]
	outs := unsafe.Slice(outputs, 2)
	if in.dtype != C.IB_FP32 || in.ndim != 2 {
		return fail(C.IB_INVALID_INPUT, "input must be FP32 with 2 dimensions")
	}
	shape := unsafe.Slice(in.shape, 2)
	rows, features := int(shape[0]), int(shape[1])
	if features != nFeatures {
		return fail(C.IB_INVALID_INPUT, "input has %d features, the model takes %d", features, nFeatures)
	}
	x := unsafe.Slice((*float32)(in.data), rows*features)
	probs := unsafe.Slice((*float32)(outs[0].data), rows*nClasses)
	labels := unsafe.Slice((*int64)(outs[1].data), rows)
	var scores [nClasses]float64
	for r := 0; r < rows; r++ {
		row := x[r*features : (r+1)*features]
		best := 0
		for c := 0; c < nClasses; c++ {
			s := intercept[c]
			for f := 0; f < features; f++ {
				v := float64(row[f])
				if math.IsNaN(v) || math.IsInf(v, 0) {
					return fail(C.IB_INVALID_INPUT, "row %d feature %d is %v; features must be finite", r, f, v)
				}
				s += coef[c*nFeatures+f] * v
			}
			scores[c] = s
			if s > scores[best] {
				best = c
			}
		}
		total, top := 0.0, scores[best]
		for c := 0; c < nClasses; c++ {
			scores[c] = math.Exp(scores[c] - top)
			total += scores[c]
		}
		for c := 0; c < nClasses; c++ {
			probs[r*nClasses+c] = float32(scores[c] / total)
		}
		labels[r] = int64(best)
	}
	return C.IB_OK
}

func writeMessage(message *C.char, messageLen C.int32_t, text string) {
	if message == nil || messageLen <= 0 {
		return
	}
	buf := unsafe.Slice((*byte)(unsafe.Pointer(message)), int(messageLen))
	n := copy(buf[:len(buf)-1], text)
	buf[n] = 0
}
