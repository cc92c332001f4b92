package main

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// VersionStats is one model version's request counters as the server's statistics
// extension (GET /v2/models/stats) reports them: cumulative since the version loaded.
type VersionStats struct {
	Model     string `json:"model"`
	Version   int    `json:"version"`
	Success   uint64 `json:"success"`    // inference_stats.success.count
	Fail      uint64 `json:"fail"`       // inference_stats.fail.count
	SuccessNs uint64 `json:"success_ns"` // inference_stats.success.ns: time spent in successful requests
	FailNs    uint64 `json:"fail_ns"`    // inference_stats.fail.ns
}

// Stats reads every loaded version's request counters from the server.
func (s *HTTPServer) Stats(ctx context.Context) ([]VersionStats, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	data, status, err := s.get(ctx, "/v2/models/stats", 8<<20)
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("statistics: HTTP %d: %s", status, errorText(data))
	}
	return parseStats(data)
}

func parseStats(data []byte) ([]VersionStats, error) {
	out, err := decodeStats(data)
	if err != nil {
		return nil, fmt.Errorf("statistics: %w", err)
	}
	slices.SortFunc(out, func(x, y VersionStats) int {
		if c := strings.Compare(x.Model, y.Model); c != 0 {
			return c
		}
		return x.Version - y.Version
	})
	return out, nil
}

// decodeStats reads model_stats[].{name, version, inference_stats.{success,fail}.{count,ns}}.
func decodeStats(data []byte) ([]VersionStats, error) {
	doc, err := parseJSONKeeping(data, statsKeys)
	if err != nil {
		return nil, err
	}
	if doc.kind != jsonObject {
		return nil, fmt.Errorf("expected an object, got %s", doc.kind)
	}
	models, err := doc.list("model_stats")
	if err != nil {
		return nil, err
	}
	out := make([]VersionStats, 0, len(models))
	for _, m := range models {
		name, err := m.str("name")
		if err != nil {
			return nil, err
		}
		text, err := m.str("version")
		if err != nil {
			return nil, err
		}
		version, err := strconv.Atoi(text)
		if err != nil {
			continue // the fleet deploys numbered versions only
		}
		stats := VersionStats{Model: name, Version: version}
		inference := m.get("inference_stats")
		for _, field := range [...]struct {
			outcome, figure string
			target          *uint64
		}{
			{"success", "count", &stats.Success}, {"success", "ns", &stats.SuccessNs},
			{"fail", "count", &stats.Fail}, {"fail", "ns", &stats.FailNs},
		} {
			if *field.target, err = inference.get(field.outcome).unsigned(field.figure); err != nil {
				return nil, fmt.Errorf("%s version %s: inference_stats.%s: %w", name, text, field.outcome, err)
			}
		}
		out = append(out, stats)
	}
	return out, nil
}

// statsKeys are the members decodeStats reads (the queue, compute and batch figures are
// skipped unbuilt).
func statsKeys(key string) bool {
	switch key {
	case "model_stats", "name", "version", "inference_stats", "success", "fail", "count", "ns":
		return true
	}
	return false
}
