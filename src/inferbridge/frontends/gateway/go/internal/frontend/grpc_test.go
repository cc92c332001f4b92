package frontend

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

func field(num protowire.Number, v string) []byte {
	return protowire.AppendString(protowire.AppendTag(nil, num, protowire.BytesType), v)
}

// TestRequestModel: the last model_name wins, as in protobuf parsers.
func TestRequestModel(t *testing.T) {
	cases := []struct {
		msg           []byte
		name, version string
		ok            bool
	}{
		{field(1, "m"), "m", "", true},
		{append(field(1, "m"), field(2, "3")...), "m", "3", true},
		{append(field(1, "a"), field(1, "b")...), "b", "", true},
		{append(protowire.AppendVarint(protowire.AppendTag(nil, 5, protowire.VarintType), 7), field(1, "m")...), "m", "", true},
		{field(2, "1"), "", "1", false},
		{[]byte{0xff}, "", "", false},
		{nil, "", "", false},
	}
	for _, tc := range cases {
		name, version, ok := RequestModel(tc.msg)
		if string(name) != tc.name || string(version) != tc.version || ok != tc.ok {
			t.Errorf("RequestModel(%q) = %q %q %v, want %q %q %v", tc.msg, name, version, ok, tc.name, tc.version, tc.ok)
		}
		// Split across two buffers, the name is the same.
		if len(tc.msg) > 1 {
			split := mem.BufferSlice{mem.SliceBuffer(tc.msg[:1]), mem.SliceBuffer(tc.msg[1:])}
			if name, ok := BufferModel(split); string(name) != tc.name || ok != tc.ok {
				t.Errorf("BufferModel(split %q) = %q %v, want %q %v", tc.msg, name, ok, tc.name, tc.ok)
			}
		}
	}
}

func TestCodeName(t *testing.T) {
	for code, want := range map[codes.Code]string{
		codes.OK: "OK", codes.Canceled: "CANCELLED", codes.ResourceExhausted: "RESOURCE_EXHAUSTED",
		codes.Unauthenticated: "UNAUTHENTICATED", codes.Code(42): "CODE_42",
	} {
		if got := CodeName(code); got != want {
			t.Errorf("CodeName(%d) = %q, want %q", code, got, want)
		}
	}
	for c := 0; c < NumCodes; c++ {
		if codeNames[c] == "" {
			t.Errorf("code %d has no name", c)
		}
	}
}

func TestCodecPassesRawMessages(t *testing.T) {
	data := mem.BufferSlice{mem.SliceBuffer([]byte("raw"))}
	var m RawMsg
	if err := (Codec{}).Unmarshal(data, &m); err != nil || string(m.Data.Materialize()) != "raw" {
		t.Fatalf("Unmarshal: %v %q", err, m.Data.Materialize())
	}
	out, err := Codec{}.Marshal(&m)
	if err != nil || string(out.Materialize()) != "raw" || m.Data != nil {
		t.Fatalf("Marshal: %v %q, message keeps %v", err, out.Materialize(), m.Data)
	}
	out.Free()
}
