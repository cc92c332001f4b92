package main

import (
	"bytes"
	"encoding/json"
	"math"
	"testing"
)

// The hand-written heartbeat is byte for byte what encoding/json wrote for the same body
// (without its HTML escaping, which changes no value).
func TestHeartbeatEncodingMatchesEncodingJSON(t *testing.T) {
	odd := "q\"b\\s\n\r\t\x01\x1f<&> é \u2028\u2029 \xff end"
	cases := []heartbeat{
		{Live: true, Ready: true, Models: []ModelStatus{}, Metrics: nil, Events: nil},
		{
			Live: true, Ready: false,
			Models: []ModelStatus{
				{Model: "a", Version: 1, State: StateReady},
				{Model: odd, Version: 12, State: StateFailed, Reason: odd},
			},
			Metrics: map[string]float64{
				"requests_ok": 12, "inflight": 0, "server_rss_bytes": 1.23456789e9,
				"tiny": 1e-7, "huge": 1e21, "neg": -0.5, "frac": 0.1, "big": 123456789012345680000,
			},
			Disk:   DiskUsage{Path: "/var/lib/" + odd, TotalBytes: 1 << 40, FreeBytes: 12345, ModelBytes: 678},
			Events: []Event{{Time: "2026-12-02T06:00:00Z", Model: "a", Version: 1, State: StateReady}, {Time: "t", Model: "b", Version: 2, State: StateFailed, Reason: "digest"}},
			Stats:  []VersionStats{{Model: "a", Version: 1, Success: 10, Fail: 1, SuccessNs: 1 << 50, FailNs: 7}},
		},
		{Models: []ModelStatus{}, Metrics: map[string]float64{}, Events: []Event{}, Stats: []VersionStats{}},
	}
	for i, h := range cases {
		body := map[string]any{
			"server":  map[string]bool{"live": h.Live, "ready": h.Ready},
			"models":  h.Models,
			"metrics": h.Metrics,
			"disk":    h.Disk,
			"events":  h.Events,
		}
		if h.Stats != nil {
			body["version_stats"] = h.Stats
		}
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(body); err != nil {
			t.Fatal(err)
		}
		got, _ := appendHeartbeat(nil, &h, nil)
		if !bytes.Equal(got, bytes.TrimSuffix(want.Bytes(), []byte("\n"))) {
			t.Errorf("case %d:\n got %s\nwant %s", i, got, want.Bytes())
		}
	}
}

// A metric that is not a finite number is left out; encoding/json refused the whole body.
func TestHeartbeatLeavesOutNonFiniteMetrics(t *testing.T) {
	h := heartbeat{Models: []ModelStatus{}, Metrics: map[string]float64{"a": math.NaN(), "b": 2, "c": math.Inf(1)}}
	got, _ := appendHeartbeat(nil, &h, nil)
	var decoded struct {
		Metrics map[string]float64 `json:"metrics"`
	}
	if err := json.Unmarshal(got, &decoded); err != nil || len(decoded.Metrics) != 1 || decoded.Metrics["b"] != 2 {
		t.Fatalf("%s: %v %v", got, decoded.Metrics, err)
	}
}

func TestHeartbeatAllocatesNothingOnceWarm(t *testing.T) {
	h := heartbeat{
		Models:  []ModelStatus{{Model: "a", Version: 1, State: StateReady}},
		Metrics: map[string]float64{"requests_ok": 1, "inflight": 2},
	}
	var buf []byte
	var keys []string
	buf, keys = appendHeartbeat(buf, &h, keys)
	if n := testing.AllocsPerRun(100, func() { buf, keys = appendHeartbeat(buf[:0], &h, keys) }); n != 0 {
		t.Fatalf("%v allocations a heartbeat", n)
	}
}
