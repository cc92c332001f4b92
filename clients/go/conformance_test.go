package inferbridge_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	inferbridge "github.com/inferbridge/inferbridge/clients/go"
	"github.com/inferbridge/inferbridge/clients/go/grpcclient"
)

// The conformance table shared with the Python suite (tests/conformance/test_conformance.py).
const casesFile = "../../tests/conformance/cases.json"

type caseTensor struct {
	Name     string            `json:"name"`
	Datatype string            `json:"datatype"`
	Shape    []int64           `json:"shape"`
	Data     []json.RawMessage `json:"data"`
}

type conformanceCase struct {
	Name         string       `json:"name"`
	Model        string       `json:"model"`
	ModelVersion string       `json:"model_version"`
	Inputs       []caseTensor `json:"inputs"`
	Outputs      []string     `json:"outputs"`
	Expect       struct {
		Outputs         []caseTensor `json:"outputs"`
		Error           string       `json:"error"`
		MessageContains string       `json:"message_contains"`
	} `json:"expect"`
}

func loadCases(t *testing.T) []conformanceCase {
	t.Helper()
	data, err := os.ReadFile(casesFile)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Cases []conformanceCase `json:"cases"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	return doc.Cases
}

// tensorOf builds the SDK tensor for a case tensor with the SDK's typed constructors.
func tensorOf(c caseTensor) (*inferbridge.Tensor, error) {
	n := len(c.Data)
	text := make([]string, n)
	for i, v := range c.Data {
		text[i] = string(v)
	}
	ints := func(bits int) ([]int64, error) {
		out := make([]int64, n)
		for i, s := range text {
			v, err := strconv.ParseInt(s, 10, bits)
			if err != nil {
				return nil, err
			}
			out[i] = v
		}
		return out, nil
	}
	uints := func(bits int) ([]uint64, error) {
		out := make([]uint64, n)
		for i, s := range text {
			v, err := strconv.ParseUint(s, 10, bits)
			if err != nil {
				return nil, err
			}
			out[i] = v
		}
		return out, nil
	}
	floats := func() ([]float64, error) {
		out := make([]float64, n)
		for i, s := range text {
			v, err := strconv.ParseFloat(s, 64)
			if err != nil {
				return nil, err
			}
			out[i] = v
		}
		return out, nil
	}
	name, shape := c.Name, c.Shape
	switch c.Datatype {
	case "BOOL":
		out := make([]bool, n)
		for i, s := range text {
			out[i] = s == "true"
		}
		return inferbridge.NewBool(name, shape, out), nil
	case "INT8", "INT16", "INT32", "INT64":
		bits, _ := strconv.Atoi(strings.TrimPrefix(c.Datatype, "INT"))
		v, err := ints(bits)
		if err != nil {
			return nil, err
		}
		switch bits {
		case 8:
			return inferbridge.NewInt8(name, shape, convert[int64, int8](v)), nil
		case 16:
			return inferbridge.NewInt16(name, shape, convert[int64, int16](v)), nil
		case 32:
			return inferbridge.NewInt32(name, shape, convert[int64, int32](v)), nil
		}
		return inferbridge.NewInt64(name, shape, v), nil
	case "UINT8", "UINT16", "UINT32", "UINT64":
		bits, _ := strconv.Atoi(strings.TrimPrefix(c.Datatype, "UINT"))
		v, err := uints(bits)
		if err != nil {
			return nil, err
		}
		switch bits {
		case 8:
			return inferbridge.NewUint8(name, shape, convert[uint64, uint8](v)), nil
		case 16:
			return inferbridge.NewUint16(name, shape, convert[uint64, uint16](v)), nil
		case 32:
			return inferbridge.NewUint32(name, shape, convert[uint64, uint32](v)), nil
		}
		return inferbridge.NewUint64(name, shape, v), nil
	case "FP16", "FP32", "FP64":
		v, err := floats()
		if err != nil {
			return nil, err
		}
		switch c.Datatype {
		case "FP16":
			bits := make([]uint16, n)
			for i, f := range v {
				bits[i] = inferbridge.Float32ToFP16(float32(f))
			}
			return inferbridge.NewFP16(name, shape, bits), nil
		case "FP32":
			return inferbridge.NewFP32(name, shape, convert[float64, float32](v)), nil
		}
		return inferbridge.NewFP64(name, shape, v), nil
	case "BYTES":
		out := make([]string, n)
		for i, raw := range c.Data {
			if err := json.Unmarshal(raw, &out[i]); err != nil {
				return nil, err
			}
		}
		return inferbridge.NewStrings(name, shape, out), nil
	}
	return nil, fmt.Errorf("unknown datatype %s", c.Datatype)
}

func convert[From, To int64 | uint64 | float64 | int8 | int16 | int32 | uint8 | uint16 | uint32 | float32](in []From) []To {
	out := make([]To, len(in))
	for i, v := range in {
		out[i] = To(v)
	}
	return out
}

// readTyped reads a tensor back with the typed reader for its datatype, so that every
// reader is exercised against real server output.
func readTyped(t *inferbridge.Tensor) (int, error) {
	var n int
	var err error
	switch t.Datatype {
	case "BOOL":
		var v []bool
		v, err = t.Bools()
		n = len(v)
	case "INT8":
		var v []int8
		v, err = t.Int8s()
		n = len(v)
	case "INT16":
		var v []int16
		v, err = t.Int16s()
		n = len(v)
	case "INT32":
		var v []int32
		v, err = t.Int32s()
		n = len(v)
	case "INT64":
		var v []int64
		v, err = t.Int64s()
		n = len(v)
	case "UINT8":
		var v []uint8
		v, err = t.Uint8s()
		n = len(v)
	case "UINT16":
		var v []uint16
		v, err = t.Uint16s()
		n = len(v)
	case "UINT32":
		var v []uint32
		v, err = t.Uint32s()
		n = len(v)
	case "UINT64":
		var v []uint64
		v, err = t.Uint64s()
		n = len(v)
	case "FP16":
		var v []uint16
		v, err = t.FP16Bits()
		n = len(v)
	case "FP32":
		var v []float32
		v, err = t.Float32s()
		n = len(v)
	case "FP64":
		var v []float64
		v, err = t.Float64s()
		n = len(v)
	case "BYTES":
		var v []string
		v, err = t.Strings()
		n = len(v)
	default:
		err = fmt.Errorf("unknown datatype %s", t.Datatype)
	}
	return n, err
}

func conformanceClients(t *testing.T) map[string]inferbridge.Client {
	t.Helper()
	restJSON, err := inferbridge.NewRESTClient(confRESTURL, inferbridge.WithEncoding(inferbridge.EncodingJSON))
	if err != nil {
		t.Fatal(err)
	}
	restBinary, err := inferbridge.NewRESTClient(confRESTURL, inferbridge.WithEncoding(inferbridge.EncodingBinary))
	if err != nil {
		t.Fatal(err)
	}
	grpc, err := grpcclient.New(confGRPCAddr)
	if err != nil {
		t.Fatal(err)
	}
	clients := map[string]inferbridge.Client{"go_rest_json": restJSON, "go_rest_binary": restBinary, "go_grpc": grpc}
	t.Cleanup(func() {
		for _, c := range clients {
			_ = c.Close()
		}
	})
	return clients
}

var sentinelByClass = map[string]error{
	"INVALID_ARGUMENT":   inferbridge.ErrInvalidArgument,
	"NOT_FOUND":          inferbridge.ErrNotFound,
	"RESOURCE_EXHAUSTED": inferbridge.ErrResourceExhausted,
	"UNAVAILABLE":        inferbridge.ErrUnavailable,
	"DEADLINE_EXCEEDED":  inferbridge.ErrDeadlineExceeded,
	"INTERNAL":           inferbridge.ErrInternal,
}

// TestConformance runs every case of the shared table through the Go REST client (JSON
// and binary) and the Go gRPC client.
func TestConformance(t *testing.T) {
	cases := loadCases(t)
	if len(cases) == 0 {
		t.Fatal("no cases")
	}
	for clientName, client := range conformanceClients(t) {
		t.Run(clientName, func(t *testing.T) {
			for _, c := range cases {
				t.Run(c.Name, func(t *testing.T) {
					t.Parallel()
					runCase(t, client, c)
				})
			}
		})
	}
}

func runCase(t *testing.T, client inferbridge.Client, c conformanceCase) {
	req := &inferbridge.InferRequest{Model: c.Model, Version: c.ModelVersion, Outputs: c.Outputs}
	for _, in := range c.Inputs {
		tensor, err := tensorOf(in)
		if err != nil {
			t.Fatalf("input %s: %v", in.Name, err)
		}
		req.Inputs = append(req.Inputs, tensor)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := client.Infer(ctx, req)
	if c.Expect.Error != "" {
		if err == nil {
			t.Fatalf("expected %s, got a response", c.Expect.Error)
		}
		if got := inferbridge.CodeOf(err).String(); got != c.Expect.Error {
			t.Fatalf("error class %s, want %s: %v", got, c.Expect.Error, err)
		}
		if !errors.Is(err, sentinelByClass[c.Expect.Error]) {
			t.Fatalf("errors.Is(err, %v) is false: %v", sentinelByClass[c.Expect.Error], err)
		}
		var e *inferbridge.Error
		if !errors.As(err, &e) || !strings.Contains(e.Message, c.Expect.MessageContains) || (e.HTTPStatus == 0 && e.GRPCCode == 0) {
			t.Fatalf("error %#v should carry a status and a message containing %q", e, c.Expect.MessageContains)
		}
		return
	}
	if err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
	if len(resp.Outputs) != len(c.Expect.Outputs) {
		t.Fatalf("got %d outputs, want %d", len(resp.Outputs), len(c.Expect.Outputs))
	}
	if resp.Model != c.Model {
		t.Fatalf("model_name %q, want %q", resp.Model, c.Model)
	}
	for _, want := range c.Expect.Outputs {
		got := resp.Output(want.Name)
		if got == nil {
			t.Fatalf("no output %s", want.Name)
		}
		wantTensor, err := tensorOf(want)
		if err != nil {
			t.Fatal(err)
		}
		if got.Datatype != want.Datatype || fmt.Sprint(got.Shape) != fmt.Sprint(want.Shape) {
			t.Fatalf("output %s: %s %v, want %s %v", want.Name, got.Datatype, got.Shape, want.Datatype, want.Shape)
		}
		if err := got.CheckShape(want.Shape...); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Raw, wantTensor.Raw) {
			t.Fatalf("output %s: data differs\n got  %v\n want %v", want.Name, got.Raw, wantTensor.Raw)
		}
		if n, err := readTyped(got); err != nil || int64(n) != inferbridge.Elements(want.Shape) {
			t.Fatalf("output %s: typed reader gave %d elements, %v", want.Name, n, err)
		}
	}
}

// TestUnitConformanceTable checks the table itself: every datatype, both error classes.
func TestUnitConformanceTable(t *testing.T) {
	seen := map[string]bool{}
	classes := map[string]bool{}
	for _, c := range loadCases(t) {
		for _, in := range c.Inputs {
			if _, err := tensorOf(in); err != nil {
				t.Fatalf("%s: %v", c.Name, err)
			}
			if c.Expect.Error == "" {
				seen[in.Datatype] = true
			}
		}
		if c.Expect.Error != "" {
			classes[c.Expect.Error] = true
		}
	}
	for _, dt := range []string{"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES"} {
		if !seen[dt] {
			t.Errorf("no case sends %s", dt)
		}
	}
	if !classes["NOT_FOUND"] || !classes["INVALID_ARGUMENT"] {
		t.Errorf("error classes covered: %v", classes)
	}
}

// TestConformanceErrorMessages: every Go client shows the server's message unchanged, so
// all three see the same text for each error case.
func TestConformanceErrorMessages(t *testing.T) {
	clients := conformanceClients(t)
	for _, c := range loadCases(t) {
		if c.Expect.Error == "" {
			continue
		}
		t.Run(c.Name, func(t *testing.T) {
			req := &inferbridge.InferRequest{Model: c.Model, Version: c.ModelVersion, Outputs: c.Outputs}
			for _, in := range c.Inputs {
				tensor, err := tensorOf(in)
				if err != nil {
					t.Fatal(err)
				}
				req.Inputs = append(req.Inputs, tensor)
			}
			messages := map[string]string{}
			for name, client := range clients {
				_, err := client.Infer(context.Background(), req)
				var e *inferbridge.Error
				if !errors.As(err, &e) {
					t.Fatalf("%s: %v", name, err)
				}
				messages[e.Message] = name
			}
			if len(messages) != 1 {
				t.Fatalf("different messages: %v", messages)
			}
		})
	}
}
