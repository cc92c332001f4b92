package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	inferbridge "github.com/inferbridge/inferbridge/clients/go"
)

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	for p, want := range map[float64]time.Duration{50: 50, 90: 90, 99: 99, 100: 100, 0: 1} {
		if got := percentile(d, p); got != want*time.Millisecond {
			t.Errorf("p%v = %v, want %vms", p, got, want)
		}
	}
}

func TestReportWindowAndErrors(t *testing.T) {
	from := time.Now()
	to := from.Add(time.Second)
	shards := [][]sample{{
		{due: from.Add(-time.Millisecond), latency: time.Millisecond, ok: true}, // warm-up: ignored
		{due: from, latency: 2 * time.Millisecond, ok: true},
		{due: from.Add(time.Millisecond), latency: 4 * time.Millisecond, ok: true},
		{due: from.Add(2 * time.Millisecond), latency: time.Millisecond, code: inferbridge.CodeDeadlineExceeded},
	}, {
		{due: from.Add(3 * time.Millisecond), code: codeDropped},
		{due: to, latency: time.Millisecond, ok: true}, // after the window: ignored
	}}
	o := &options{protocol: "grpc", target: "x", model: "m", concurrency: 2, connections: 1, batch: 1, duration: time.Second}
	r := buildReport(o, shards, from, to)
	if r.Requests != 4 || r.OK != 2 || r.Errors["DEADLINE_EXCEEDED"] != 1 || r.Errors["DROPPED"] != 1 {
		t.Fatalf("report %+v", r)
	}
	if r.RPS != 4 || r.Latency.P50 != 2 || r.Latency.Max != 4 || r.Latency.Mean != 3 {
		t.Fatalf("rates %+v", r)
	}
	var buf bytes.Buffer
	r.writeText(&buf)
	if !strings.Contains(buf.String(), "errors by kind: DEADLINE_EXCEEDED 1 (p50 1.0, p99 1.0 ms), DROPPED 1") {
		t.Fatal(buf.String())
	}
}

func TestReportTimeline(t *testing.T) {
	from := time.Now()
	to := from.Add(2 * time.Second)
	shards := [][]sample{{
		{due: from.Add(-time.Millisecond), latency: time.Millisecond, ok: true}, // warm-up: ignored
		{due: from, latency: 2 * time.Millisecond, ok: true},
		{due: from.Add(999 * time.Millisecond), latency: 4 * time.Millisecond, ok: true},
		{due: from.Add(time.Second), latency: 8 * time.Millisecond, kind: "HTTP 503"},
	}, {
		{due: from.Add(1500 * time.Millisecond), kind: kindDropped},
		{due: to, latency: time.Millisecond, ok: true}, // after the window: ignored
	}}
	o := &options{protocol: "rest-json", raw: true, target: "x", model: "m", concurrency: 2, batch: 1,
		duration: 2 * time.Second, timeline: time.Second}
	r := buildReport(o, shards, from, to)
	if len(r.Timeline) != 2 {
		t.Fatalf("timeline %+v", r.Timeline)
	}
	first, second := r.Timeline[0], r.Timeline[1]
	if first.StartS != 0 || first.Requests != 2 || first.OK != 2 || first.P50 != 2 || first.P99 != 4 || first.Errors != nil {
		t.Fatalf("first slice %+v", first)
	}
	if second.StartS != 1 || second.Requests != 2 || second.OK != 0 || second.Errors["HTTP 503"] != 1 ||
		second.Errors["DROPPED"] != 1 || second.P99 != 8 {
		t.Fatalf("second slice %+v", second)
	}
	o.timeline = 0
	if r := buildReport(o, shards, from, to); r.Timeline != nil {
		t.Fatalf("timeline without -timeline: %+v", r.Timeline)
	}
}

func TestBuildRequestFromMetadata(t *testing.T) {
	meta := &inferbridge.ModelMetadata{Inputs: []inferbridge.TensorMetadata{{Name: "input", Datatype: "FP32", Shape: []int64{-1, 4}}}}
	req, err := buildRequest(&options{model: "m", batch: 2, data: "[5.1,3.5,1.4,0.2]"}, meta)
	if err != nil {
		t.Fatal(err)
	}
	v, err := req.Inputs[0].Float32s()
	if err != nil || len(v) != 8 || v[4] != 5.1 || req.Inputs[0].CheckShape(2, 4) != nil {
		t.Fatalf("%v %v %v", v, err, req.Inputs[0].Shape)
	}
}
