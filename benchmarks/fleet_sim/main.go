// Command fleet_sim runs many simulated node agents in one process against a fleet control
// plane: each registers with its own name and token, heartbeats every interval, and holds
// an assignment long poll; assigned models are reported READY at once. It prints heartbeat
// latency percentiles as JSON when it ends.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type assignment struct {
	Model   string `json:"model"`
	Version int    `json:"version"`
}

type sim struct {
	bases     []string // agent i talks to bases[i % len(bases)]
	bootstrap string
	interval  time.Duration
	client    *http.Client
	poll      *http.Client

	mu        sync.Mutex
	latencies []time.Duration
	errors    atomic.Int64
	beats     atomic.Int64
}

func (s *sim) do(ctx context.Context, client *http.Client, base, method, path, token string, body any, out any) error {
	var reader io.Reader
	if body != nil {
		data, _ := json.Marshal(body)
		reader = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, reader)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, data)
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

func (s *sim) agent(ctx context.Context, i int, measureAfter time.Time, dieAt time.Time) {
	name := fmt.Sprintf("sim-%04d", i)
	base := s.bases[i%len(s.bases)]
	var reg struct {
		Token string `json:"token"`
	}
	body := map[string]any{
		"name": name, "labels": map[string]string{"zone": fmt.Sprintf("z%d", i%4)},
		"capacity":             map[string]any{"cpu": 8, "memory": 16 << 30},
		"heartbeat_interval_s": s.interval.Seconds(), "server_url": "http://" + name + ":8000",
	}
	for {
		if err := s.do(ctx, s.client, base, http.MethodPost, "/v1/fleet/agent/register", s.bootstrap, body, &reg); err == nil {
			break
		}
		if ctx.Err() != nil {
			return
		}
		time.Sleep(time.Second)
	}
	var mu sync.Mutex
	models := []map[string]any{}
	go func() { // the long poll
		etag := ""
		for ctx.Err() == nil {
			var answer struct {
				Etag        string       `json:"etag"`
				Assignments []assignment `json:"assignments"`
			}
			path := "/v1/fleet/agent/" + name + "/assignments?wait_s=25&etag=" + url.QueryEscape(etag)
			if err := s.do(ctx, s.poll, base, http.MethodGet, path, reg.Token, nil, &answer); err != nil {
				time.Sleep(time.Second)
				continue
			}
			etag = answer.Etag
			next := []map[string]any{}
			for _, a := range answer.Assignments {
				next = append(next, map[string]any{"model": a.Model, "version": a.Version, "state": "READY"})
			}
			mu.Lock()
			models = next
			mu.Unlock()
		}
	}()
	// Spread the first heartbeats over one interval.
	time.Sleep(time.Duration(i) * s.interval / 1000 % s.interval)
	ticker := time.NewTicker(s.interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		if !dieAt.IsZero() && time.Now().After(dieAt) {
			return // this agent dies: no more heartbeats
		}
		mu.Lock()
		hb := map[string]any{"server": map[string]bool{"live": true, "ready": true}, "models": models,
			"metrics": map[string]float64{"requests_ok": 1}}
		mu.Unlock()
		start := time.Now()
		err := s.do(ctx, s.client, base, http.MethodPost, "/v1/fleet/agent/"+name+"/heartbeat", reg.Token, hb, nil)
		took := time.Since(start)
		if err != nil {
			if ctx.Err() == nil {
				s.errors.Add(1)
			}
			continue
		}
		s.beats.Add(1)
		if start.After(measureAfter) {
			s.mu.Lock()
			s.latencies = append(s.latencies, took)
			s.mu.Unlock()
		}
	}
}

func main() {
	base := flag.String("control-plane", "http://127.0.0.1:9000", "control-plane URL, or several comma-separated: agent i talks to the i-th modulo their number")
	agents := flag.Int("agents", 1000, "")
	interval := flag.Duration("interval", time.Second, "")
	duration := flag.Duration("duration", 60*time.Second, "")
	warmup := flag.Duration("warmup", 10*time.Second, "")
	die := flag.Int("die", 0, "how many agents stop heartbeating at -die-at")
	dieAt := flag.Duration("die-at", 0, "")
	flag.Parse()
	transport := &http.Transport{MaxIdleConns: 4 * *agents, MaxIdleConnsPerHost: 4 * *agents, IdleConnTimeout: time.Minute}
	s := &sim{
		bases: strings.Split(*base, ","), bootstrap: os.Getenv("INFERBRIDGE_FLEET_BOOTSTRAP_TOKEN"), interval: *interval,
		client: &http.Client{Timeout: 30 * time.Second, Transport: transport},
		poll:   &http.Client{Timeout: 60 * time.Second, Transport: transport},
	}
	ctx, cancel := context.WithTimeout(context.Background(), *duration)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
	defer stop()
	started := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < *agents; i++ {
		var dies time.Time
		if i < *die {
			dies = started.Add(*dieAt)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.agent(ctx, i, started.Add(*warmup), dies)
		}()
	}
	wg.Wait()
	sort.Slice(s.latencies, func(i, j int) bool { return s.latencies[i] < s.latencies[j] })
	pct := func(p float64) float64 {
		if len(s.latencies) == 0 {
			return 0
		}
		return float64(s.latencies[int(p*float64(len(s.latencies)-1))].Microseconds()) / 1000
	}
	json.NewEncoder(os.Stdout).Encode(map[string]any{
		"agents": *agents, "heartbeats": s.beats.Load(), "errors": s.errors.Load(),
		"measured": len(s.latencies), "p50_ms": pct(0.5), "p90_ms": pct(0.9), "p99_ms": pct(0.99),
		"max_ms": pct(1), "seconds": time.Since(started).Seconds(),
	})
}
