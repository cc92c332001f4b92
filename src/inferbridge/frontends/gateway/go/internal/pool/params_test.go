package pool

import (
	"encoding/json"
	"testing"
)

func TestTimeoutParam(t *testing.T) {
	for _, tc := range []struct {
		body string
		us   int64
	}{
		{`{"inputs": [{"name": "x", "data": [1, 2, "}"]}], "parameters": {"priority": 1, "timeout": 2500}}`, 2500},
		{`{"parameters": {"timeout": "x"}}`, 0},
		{`{"inputs": []}`, 0},
		{`not json`, 0},
	} {
		if got := timeoutParam([]byte(tc.body)); got != tc.us {
			t.Errorf("timeoutParam(%s) = %d, want %d", tc.body, got, tc.us)
		}
	}
}

func TestWithTimeout(t *testing.T) {
	for _, body := range []string{
		`{"inputs": [{"name": "x", "data": [1]}]}`,
		`{}`,
		` { "parameters" : {} , "inputs": []}`,
		`{"parameters": {"priority": 2}, "inputs": []}`,
		`{"inputs": [], "parameters": {"timeout": 99999999, "priority": 2}}`,
	} {
		out := withTimeout([]byte(body), 1234)
		var parsed struct {
			Parameters map[string]any `json:"parameters"`
			Inputs     []any          `json:"inputs"`
		}
		if err := json.Unmarshal(out, &parsed); err != nil {
			t.Fatalf("withTimeout(%s) = %s: %v", body, out, err)
		}
		if parsed.Parameters["timeout"] != float64(1234) {
			t.Fatalf("withTimeout(%s) = %s: timeout not 1234", body, out)
		}
		if timeoutParam(out) != 1234 {
			t.Fatalf("timeoutParam does not read back %s", out)
		}
	}
	if out := withTimeout([]byte(`[1]`), 5); string(out) != `[1]` {
		t.Fatalf("a non-object changed: %s", out)
	}
}
