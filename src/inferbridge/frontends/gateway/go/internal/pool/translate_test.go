package pool

import (
	"encoding/json"
	"math"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

func TestHalfRoundTrip(t *testing.T) {
	for _, f := range []float32{0, 1, -2.5, 65504, 0.000061035156, 1e-7, float32(math.Inf(1))} {
		got := halfToFloat32(float32ToHalf(f))
		if math.Abs(float64(got-f)) > math.Abs(float64(f))*1e-3+1e-7 {
			t.Errorf("half(%g) reads back %g", f, got)
		}
	}
	if h := float32ToHalf(1e6); h != 0x7c00 {
		t.Errorf("1e6 as half = %#x, want +Inf", h)
	}
}

func TestPackUnpackEveryDatatype(t *testing.T) {
	for _, tc := range []struct{ datatype, data, want string }{
		{"FP32", "[[1.5, -2]]", "[1.5,-2]"},
		{"FP64", "[0.1]", "[0.1]"},
		{"FP16", "[1, 0.5]", "[1,0.5]"},
		{"BF16", "[2]", "[2]"},
		{"INT8", "[-1, 7]", "[-1,7]"},
		{"UINT8", "[255]", "[255]"},
		{"INT16", "[-300]", "[-300]"},
		{"UINT16", "[65535]", "[65535]"},
		{"INT32", "[[1], [2]]", "[1,2]"},
		{"UINT32", "[4294967295]", "[4294967295]"},
		{"INT64", "[-9007199254740993]", "[-9007199254740993]"},
		{"UINT64", "[18446744073709551615]", "[18446744073709551615]"},
		{"BOOL", "[true, false]", "[true,false]"},
		{"BYTES", `["ab", ""]`, `["ab",""]`},
	} {
		raw, err := packJSON(tc.datatype, json.RawMessage(tc.data))
		if err != nil {
			t.Fatalf("%s %s: %v", tc.datatype, tc.data, err)
		}
		v, err := unpackRaw(tc.datatype, raw)
		if err != nil {
			t.Fatalf("%s: %v", tc.datatype, err)
		}
		got, _ := json.Marshal(v)
		if string(got) != tc.want {
			t.Errorf("%s %s: round trip %s, want %s", tc.datatype, tc.data, got, tc.want)
		}
	}
	if _, err := packJSON("FP32", json.RawMessage(`["x"]`)); err == nil {
		t.Errorf("a string accepted as FP32")
	}
}

func TestRequestAndResponseTranslation(t *testing.T) {
	body := []byte(`{"id": "r", "parameters": {"priority": 2, "binary_data_output": true, "timeout": 9},
		"inputs": [{"name": "a", "datatype": "INT32", "shape": [2], "data": [1, 2]},
		           {"name": "b", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 4}}],
		"outputs": [{"name": "o", "parameters": {"binary_data": false}}]}`)
	jsonLen := len(body)
	body = append(body, 0, 0, 0x80, 0x3f) // 1.0 as FP32
	msg, tr, err := encodeInferRequest("m", "3", body, jsonLen, 1234)
	if err != nil {
		t.Fatal(err)
	}
	if !tr.binaryAll || tr.binaryOut["o"] || tr.requestID != "r" {
		t.Fatalf("translation %+v", tr)
	}
	var raws [][]byte
	var params []string
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		msg = msg[n:]
		v, k := protowire.ConsumeBytes(msg)
		if typ != protowire.BytesType || k < 0 {
			t.Fatalf("field %d: not bytes", num)
		}
		msg = msg[k:]
		switch num {
		case 4:
			p := map[string]any{}
			decodeParameter(v, p)
			for key, value := range p {
				params = append(params, key+"="+strings.TrimSpace(jsonString(value)))
			}
		case 7:
			raws = append(raws, v)
		}
	}
	if len(raws) != 2 || len(raws[0]) != 8 || string(raws[1]) != "\x00\x00\x80\x3f" {
		t.Fatalf("raw contents %q", raws)
	}
	joined := strings.Join(params, ",")
	if !strings.Contains(joined, "priority=2") || !strings.Contains(joined, "timeout=1234") || strings.Contains(joined, "binary") {
		t.Fatalf("parameters %s", joined)
	}

	// A response with two outputs: o as JSON (asked), p binary (binary_data_output).
	var resp []byte
	resp = protowire.AppendTag(resp, 1, protowire.BytesType)
	resp = protowire.AppendString(resp, "m")
	for _, name := range []string{"o", "p"} {
		var o []byte
		o = protowire.AppendTag(o, 1, protowire.BytesType)
		o = protowire.AppendString(o, name)
		o = protowire.AppendTag(o, 2, protowire.BytesType)
		o = protowire.AppendString(o, "INT32")
		o = protowire.AppendTag(o, 3, protowire.BytesType)
		o = protowire.AppendBytes(o, protowire.AppendVarint(nil, 1))
		resp = protowire.AppendTag(resp, 5, protowire.BytesType)
		resp = protowire.AppendBytes(resp, o)
	}
	for i := 0; i < 2; i++ {
		resp = protowire.AppendTag(resp, 6, protowire.BytesType)
		resp = protowire.AppendBytes(resp, []byte{7, 0, 0, 0})
	}
	out, n, err := decodeInferResponse(resp, tr)
	if err != nil {
		t.Fatal(err)
	}
	js := string(out[:n])
	if !strings.Contains(js, `"name":"o","datatype":"INT32","shape":[1],"data":[7]`) ||
		!strings.Contains(js, `"binary_data_size":4`) || string(out[n:]) != "\x07\x00\x00\x00" {
		t.Fatalf("response %s + %q", js, out[n:])
	}
}

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
