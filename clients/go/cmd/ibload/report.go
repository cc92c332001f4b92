package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is what ibload measured, as printed and as written with -json.
type Report struct {
	Protocol    string             `json:"protocol"`              // grpc, rest-binary or rest-json
	Engine      string             `json:"engine"`                // "sdk" (the Go SDK's clients) or "raw" (REST over plain TCP)
	Target      string             `json:"target"`                // server address
	Model       string             `json:"model"`                 // model name
	Mode        string             `json:"mode"`                  // "closed" (fixed concurrency) or "open" (fixed rate)
	Concurrency int                `json:"concurrency,omitempty"` // closed loop: requests in flight
	Rate        float64            `json:"rate,omitempty"`        // open loop: requests per second
	Connections int                `json:"connections,omitempty"` // gRPC connections
	Batch       int64              `json:"batch"`                 // rows per request
	WarmupS     float64            `json:"warmup_s"`              // warm-up, seconds
	DurationS   float64            `json:"duration_s"`            // measured window, seconds
	TimeoutS    float64            `json:"timeout_s"`             // per-request deadline, seconds
	Requests    int                `json:"requests"`              // requests due in the measured window
	OK          int                `json:"ok"`                    // of which succeeded
	Errors      map[string]int     `json:"errors"`                // failures by kind (gRPC code name, or DROPPED)
	RPS         float64            `json:"requests_per_s"`        // requests per second over the window
	Latency     Latency            `json:"latency_ms"`            // latency of the successful requests
	LatencyAll  Latency            `json:"latency_all_ms"`        // latency of every request sent (answered, refused or failed), until its end
	SendLag     Latency            `json:"send_lag_ms"`           // open loop: from each request's due time until the client sent it (the client's own lateness)
	ByKind      map[string]Latency `json:"latency_by_kind_ms"`    // latency of the failed requests, by error kind (DROPPED excluded)
	Timeline    []Slice            `json:"timeline,omitempty"`    // with -timeline: the window in slices, by due time
}

// Slice is one -timeline slice of the measured window: the requests due in it.
type Slice struct {
	StartS   float64        `json:"start_s"`          // seconds from the window's start
	Requests int            `json:"requests"`         // requests due in the slice
	OK       int            `json:"ok"`               // of which succeeded
	Errors   map[string]int `json:"errors,omitempty"` // failures by kind
	P50      float64        `json:"p50_ms"`           // latency of every request sent in it (DROPPED excluded)
	P99      float64        `json:"p99_ms"`
}

// Latency summarizes the latencies of successful requests, in milliseconds.
type Latency struct {
	Min  float64 `json:"min"`  // fastest
	Mean float64 `json:"mean"` // average
	P50  float64 `json:"p50"`  // median
	P90  float64 `json:"p90"`  // 90th percentile
	P99  float64 `json:"p99"`  // 99th percentile
	Max  float64 `json:"max"`  // slowest
}

// buildReport keeps the samples due inside the measured window [from, to) and divides
// their count by the time from the window's start until the last of them finished (or
// the window's length, if longer).
func buildReport(o *options, shards [][]sample, from, to time.Time) *Report {
	r := &Report{
		Protocol: o.protocol, Target: o.target, Model: o.model, Batch: o.batch,
		WarmupS: o.warmup.Seconds(), DurationS: o.duration.Seconds(), TimeoutS: o.timeout.Seconds(),
		Errors: map[string]int{}, Engine: "sdk",
	}
	if o.raw {
		r.Engine = "raw"
	}
	if o.rate > 0 {
		r.Mode, r.Rate = "open", o.rate
	} else {
		r.Mode, r.Concurrency = "closed", o.concurrency
	}
	if o.protocol == "grpc" {
		r.Connections = o.connections
	}
	var latencies, all, lags []time.Duration
	byKind := map[string][]time.Duration{}
	last := from
	for _, shard := range shards {
		for _, s := range shard {
			if s.due.Before(from) || !s.due.Before(to) {
				continue
			}
			r.Requests++
			if end := s.due.Add(s.latency); end.After(last) {
				last = end
			}
			dropped := s.code == codeDropped || s.kind == kindDropped
			if !dropped {
				all = append(all, s.latency)
				lags = append(lags, s.lag)
			}
			if s.ok {
				r.OK++
				latencies = append(latencies, s.latency)
				continue
			}
			name := s.kind
			switch {
			case dropped:
				name = kindDropped
			case name == "":
				name = s.code.String()
			}
			r.Errors[name]++
			if !dropped {
				byKind[name] = append(byKind[name], s.latency)
			}
		}
	}
	r.RPS = float64(r.Requests) / math.Max(last.Sub(from).Seconds(), to.Sub(from).Seconds())
	r.Latency = summarize(latencies)
	r.LatencyAll = summarize(all)
	if len(byKind) > 0 {
		r.ByKind = make(map[string]Latency, len(byKind))
		for k, v := range byKind {
			r.ByKind[k] = summarize(v)
		}
	}
	if r.Mode == "open" {
		r.SendLag = summarize(lags)
	}
	if o.timeline > 0 {
		r.Timeline = buildTimeline(shards, from, to, o.timeline)
	}
	return r
}

// buildTimeline slices [from, to) into steps of `step` and summarizes the requests due in
// each (a fault's effect shows at the time the requests met it).
func buildTimeline(shards [][]sample, from, to time.Time, step time.Duration) []Slice {
	n := int((to.Sub(from) + step - 1) / step)
	out := make([]Slice, n)
	sent := make([][]time.Duration, n)
	for i := range out {
		out[i].StartS = (time.Duration(i) * step).Seconds()
	}
	for _, shard := range shards {
		for _, s := range shard {
			if s.due.Before(from) || !s.due.Before(to) {
				continue
			}
			i := int(s.due.Sub(from) / step)
			sl := &out[i]
			sl.Requests++
			dropped := s.code == codeDropped || s.kind == kindDropped
			if !dropped {
				sent[i] = append(sent[i], s.latency)
			}
			if s.ok {
				sl.OK++
				continue
			}
			name := s.kind
			switch {
			case dropped:
				name = kindDropped
			case name == "":
				name = s.code.String()
			}
			if sl.Errors == nil {
				sl.Errors = map[string]int{}
			}
			sl.Errors[name]++
		}
	}
	for i := range out {
		l := summarize(sent[i])
		out[i].P50, out[i].P99 = l.P50, l.P99
	}
	return out
}

func summarize(latencies []time.Duration) Latency {
	if len(latencies) == 0 {
		return Latency{}
	}
	slices.Sort(latencies)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	var sum time.Duration
	for _, d := range latencies {
		sum += d
	}
	return Latency{
		Min:  ms(latencies[0]),
		Mean: ms(sum / time.Duration(len(latencies))),
		P50:  ms(percentile(latencies, 50)),
		P90:  ms(percentile(latencies, 90)),
		P99:  ms(percentile(latencies, 99)),
		Max:  ms(latencies[len(latencies)-1]),
	}
}

// percentile is the nearest-rank percentile of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

func (r *Report) writeText(w io.Writer) {
	load := fmt.Sprintf("closed loop, concurrency %d", r.Concurrency)
	if r.Mode == "open" {
		load = fmt.Sprintf("open loop, %g req/s", r.Rate)
	}
	if r.Connections > 1 {
		load += fmt.Sprintf(", %d connections", r.Connections)
	}
	engine := ""
	if r.Engine == "raw" {
		engine = " (raw HTTP/1.1)"
	}
	fmt.Fprintf(w, "ibload: %s%s %s at %s, %s, batch %d, %gs after %gs warm-up, timeout %gs\n",
		r.Protocol, engine, r.Model, r.Target, load, r.Batch, r.DurationS, r.WarmupS, r.TimeoutS)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "requests\tok\terrors\treq/s\tmean ms\tp50 ms\tp90 ms\tp99 ms\tmax ms\t")
	fmt.Fprintf(tw, "%d\t%d\t%d\t%.1f\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t\n",
		r.Requests, r.OK, r.Requests-r.OK, r.RPS, r.Latency.Mean, r.Latency.P50, r.Latency.P90, r.Latency.P99, r.Latency.Max)
	_ = tw.Flush()
	if r.OK < r.Requests && r.LatencyAll != r.Latency {
		a := r.LatencyAll
		fmt.Fprintf(w, "every request sent (not only the successful): mean %.3f, p50 %.3f, p90 %.3f, p99 %.3f, max %.3f ms\n",
			a.Mean, a.P50, a.P90, a.P99, a.Max)
	}
	if r.Mode == "open" {
		fmt.Fprintf(w, "sent late by (included above): p50 %.3f, p99 %.3f, max %.3f ms\n", r.SendLag.P50, r.SendLag.P99, r.SendLag.Max)
	}
	if len(r.Errors) > 0 {
		kinds := make([]string, 0, len(r.Errors))
		for k := range r.Errors {
			kinds = append(kinds, k)
		}
		sort.Strings(kinds)
		parts := make([]string, len(kinds))
		for i, k := range kinds {
			parts[i] = fmt.Sprintf("%s %d", k, r.Errors[k])
			if l, ok := r.ByKind[k]; ok {
				parts[i] += fmt.Sprintf(" (p50 %.1f, p99 %.1f ms)", l.P50, l.P99)
			}
		}
		fmt.Fprintf(w, "errors by kind: %s\n", strings.Join(parts, ", "))
	}
}
