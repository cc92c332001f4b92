package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
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

type statDuration struct {
	Count uint64 `json:"count"`
	Ns    uint64 `json:"ns"`
}

// statsDocument is the part of the statistics document the heartbeat carries; the rest
// (queue, compute, batch figures) is left undecoded.
type statsDocument struct {
	ModelStats []struct {
		Name           string `json:"name"`
		Version        string `json:"version"`
		InferenceStats struct {
			Success statDuration `json:"success"`
			Fail    statDuration `json:"fail"`
		} `json:"inference_stats"`
	} `json:"model_stats"`
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
	var doc statsDocument
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("statistics: %w", err)
	}
	out := make([]VersionStats, 0, len(doc.ModelStats))
	for _, m := range doc.ModelStats {
		version, err := strconv.Atoi(m.Version)
		if err != nil {
			continue // the fleet deploys numbered versions only
		}
		out = append(out, VersionStats{
			Model:     m.Name,
			Version:   version,
			Success:   m.InferenceStats.Success.Count,
			Fail:      m.InferenceStats.Fail.Count,
			SuccessNs: m.InferenceStats.Success.Ns,
			FailNs:    m.InferenceStats.Fail.Ns,
		})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Model != out[j].Model {
			return out[i].Model < out[j].Model
		}
		return out[i].Version < out[j].Version
	})
	return out, nil
}
