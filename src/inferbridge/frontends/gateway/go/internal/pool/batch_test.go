package pool

import (
	"encoding/json"
	"fmt"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

func inferMsg(t *testing.T, id string, rows int, value float64) []byte {
	t.Helper()
	data := make([][]float64, rows)
	for i := range data {
		data[i] = []float64{value, value}
	}
	js, _ := json.Marshal(map[string]any{"id": id, "inputs": []any{map[string]any{
		"name": "x", "datatype": "FP32", "shape": []int{rows, 2}, "data": data}}})
	msg, _, err := encodeInferRequest("m", "", js, len(js), 1000)
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

// echoResponse answers a merged request as an identity model would: y = x.
func echoResponse(t *testing.T, merged []byte) []byte {
	t.Helper()
	req, err := parseInferRequest(merged)
	if err != nil {
		t.Fatal(err)
	}
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, "m")
	var o []byte
	o = protowire.AppendTag(o, 1, protowire.BytesType)
	o = protowire.AppendString(o, "y")
	o = protowire.AppendTag(o, 2, protowire.BytesType)
	o = protowire.AppendString(o, "FP32")
	var shape []byte
	for _, d := range req.inputs[0].shape {
		shape = protowire.AppendVarint(shape, uint64(d))
	}
	o = protowire.AppendTag(o, 3, protowire.BytesType)
	o = protowire.AppendBytes(o, shape)
	b = protowire.AppendTag(b, 5, protowire.BytesType)
	b = protowire.AppendBytes(b, o)
	b = protowire.AppendTag(b, 6, protowire.BytesType)
	return protowire.AppendBytes(b, req.raws[0])
}

func TestMergeAndSplitByRows(t *testing.T) {
	var items []*parsedInfer
	var key0 string
	for i, rows := range []int{1, 3, 2} {
		p, err := parseInferRequest(inferMsg(t, fmt.Sprintf("r%d", i), rows, float64(i)))
		if err != nil {
			t.Fatal(err)
		}
		key, n, ok := p.batchKey()
		if !ok || n != rows {
			t.Fatalf("request %d: mergeable %v with %d rows", i, ok, n)
		}
		if i == 0 {
			key0 = key
		} else if key != key0 {
			t.Fatalf("requests of one signature have different keys")
		}
		items = append(items, p)
	}
	merged := mergeInfer(items, 500)
	m, err := parseInferRequest(merged)
	if err != nil || m.inputs[0].shape[0] != 6 || len(m.raws[0]) != 6*2*4 {
		t.Fatalf("merged: %+v %v", m, err)
	}
	answers, err := splitInferResponse(echoResponse(t, merged), items)
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range answers {
		js, _, err := decodeInferResponse(a, &translation{binaryOut: map[string]bool{}})
		if err != nil {
			t.Fatal(err)
		}
		var resp struct {
			ID      string `json:"id"`
			Outputs []struct {
				Shape []int     `json:"shape"`
				Data  []float64 `json:"data"`
			} `json:"outputs"`
		}
		json.Unmarshal(js, &resp)
		rows := []int{1, 3, 2}[i]
		if resp.ID != fmt.Sprintf("r%d", i) || resp.Outputs[0].Shape[0] != rows || len(resp.Outputs[0].Data) != rows*2 {
			t.Fatalf("answer %d: %s", i, js)
		}
		for _, v := range resp.Outputs[0].Data {
			if v != float64(i) {
				t.Fatalf("answer %d carries another request's data: %s", i, js)
			}
		}
	}
}

func TestUnmergeableRequests(t *testing.T) {
	js := []byte(`{"parameters": {"priority": 1}, "inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}`)
	msg, _, _ := encodeInferRequest("m", "", js, len(js), 0)
	p, _ := parseInferRequest(msg)
	if _, _, ok := p.batchKey(); ok {
		t.Fatalf("a request with its own parameters merged")
	}
	a, _ := parseInferRequest(inferMsg(t, "a", 1, 1))
	b, _ := parseInferRequest(inferMsg(t, "b", 1, 1))
	b.inputs[0].shape = []int64{1, 3}
	ka, _, _ := a.batchKey()
	kb, _, _ := b.batchKey()
	if ka == kb {
		t.Fatalf("different shapes share a key")
	}
}

func TestCutBytesRows(t *testing.T) {
	raw, _ := packJSON("BYTES", json.RawMessage(`["a", "bb", "ccc", "d"]`))
	items := []*parsedInfer{{inputs: []inferTensor{{shape: []int64{1}}}}, {inputs: []inferTensor{{shape: []int64{1}}}}}
	parts, err := cutRows("BYTES", raw, 2, items)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := unpackRaw("BYTES", parts[0])
	second, _ := unpackRaw("BYTES", parts[1])
	if fmt.Sprint(first) != "[a bb]" || fmt.Sprint(second) != "[ccc d]" {
		t.Fatalf("BYTES rows %v %v", first, second)
	}
}
