package inferbridge_test

import (
	"bytes"
	"fmt"
	"testing"

	inferbridge "github.com/inferbridge/inferbridge/clients/go"
)

// FuzzDecodeBytes: any input either fails to parse or re-encodes to itself, and never
// panics. `go test` runs the seeds; `go test -fuzz FuzzDecodeBytes` explores.
func FuzzDecodeBytes(f *testing.F) {
	f.Add([]byte{})
	f.Add(inferbridge.EncodeBytes([][]byte{[]byte("a"), {}, []byte("héllo")}))
	f.Add([]byte{5, 0, 0, 0, 'a'})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, raw []byte) {
		items, err := inferbridge.DecodeBytes(raw)
		if err != nil {
			return
		}
		if again := inferbridge.EncodeBytes(items); !bytes.Equal(again, raw) {
			t.Fatalf("%x decodes to %q, which encodes to %x", raw, items, again)
		}
	})
}

// Half-precision values travel as raw bit patterns; these helpers convert.
func ExampleFloat32ToFP16() {
	bits := []uint16{inferbridge.Float32ToFP16(1.5), inferbridge.Float32ToFP16(-0.1)}
	t := inferbridge.NewFP16("x", []int64{2}, bits)
	back, _ := t.FP16Bits()
	fmt.Printf("%#04x %v %v\n", back, inferbridge.FP16ToFloat32(back[0]), inferbridge.FP16ToFloat32(back[1]))
	// Output: [0x3e00 0xae66] 1.5 -0.099975586
}
