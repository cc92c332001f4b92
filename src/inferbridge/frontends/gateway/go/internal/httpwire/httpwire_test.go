package httpwire

import (
	"net/textproto"
	"testing"
)

func TestSplitField(t *testing.T) {
	for _, c := range []struct {
		line, name, value string
		ok                bool
	}{
		{"Content-Type: application/json", "Content-Type", "application/json", true},
		{"x-api-key:\t k \t", "x-api-key", "k", true},
		{"Empty:", "Empty", "", true},
		{" Folded: v", "", "", false},
		{"Bad Name: v", "", "", false},
		{": v", "", "", false},
		{"NoColon", "", "", false},
		{"X: a\x00b", "", "", false},
		{"X: a\x7fb", "", "", false},
	} {
		name, value, ok := SplitField(c.line)
		if name != c.name || value != c.value || ok != c.ok {
			t.Errorf("%q: %q %q %v, want %q %q %v", c.line, name, value, ok, c.name, c.value, c.ok)
		}
	}
}

func TestCanonicalKeyIsTextprotos(t *testing.T) {
	for _, name := range []string{"content-type", "Content-Type", "x-API-key", "Inference-Header-Content-Length", "te", "x_y"} {
		if got, want := CanonicalKey(name), textproto.CanonicalMIMEHeaderKey(name); got != want {
			t.Errorf("%q: %q, want %q", name, got, want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { CanonicalKey("Content-Type") }); n != 0 {
		t.Errorf("a common canonical name costs %v allocations", n)
	}
}
