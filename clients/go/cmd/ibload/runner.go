package main

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	inferbridge "github.com/inferbridge/inferbridge/clients/go"
)

// sample is one finished request: when it was due, how long it took, how it ended.
type sample struct {
	due     time.Time
	latency time.Duration
	lag     time.Duration // from due until the request went out (open loop: the client's own lateness)
	code    inferbridge.Code
	kind    string // the raw engine's error kind ("HTTP 429", CLIENT_TIMEOUT, ...); overrides code
	ok      bool
}

// runner drives the load and collects samples. Each worker (closed loop) or request
// (open loop) records into its own shard, so recording never contends.
type runner struct {
	o       *options
	clients []inferbridge.Client
	req     *inferbridge.InferRequest
	next    atomic.Uint64
}

func newRunner(o *options, clients []inferbridge.Client, req *inferbridge.InferRequest) *runner {
	return &runner{o: o, clients: clients, req: req}
}

func (r *runner) client() inferbridge.Client {
	if len(r.clients) == 1 {
		return r.clients[0]
	}
	return r.clients[r.next.Add(1)%uint64(len(r.clients))]
}

// once sends one request; latency is counted from due (the scheduled time in open loop,
// so that a slow server cannot hide queueing delay: no coordinated omission).
func (r *runner) once(due time.Time) sample {
	lag := time.Since(due)
	ctx := context.Background()
	var cancel context.CancelFunc
	if r.o.timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, r.o.timeout)
	}
	_, err := r.client().Infer(ctx, r.req)
	if cancel != nil {
		cancel()
	}
	s := sample{due: due, latency: time.Since(due), lag: lag, ok: err == nil}
	if err != nil {
		s.code = inferbridge.CodeOf(err)
	}
	return s
}

func (r *runner) run() *Report { return runLoops(r.o, r) }

// loops is what a runner (SDK clients or the raw HTTP engine) provides to runLoops.
type loops interface {
	openLoop(start, stopAt time.Time) [][]sample
	closedLoop(stopAt time.Time) [][]sample
}

// runLoops runs the warm-up and the measured window, open loop when o.rate is set.
func runLoops(o *options, l loops) *Report {
	start := time.Now()
	measureFrom := start.Add(o.warmup)
	stopAt := measureFrom.Add(o.duration)
	var shards [][]sample
	if o.rate > 0 {
		shards = l.openLoop(start, stopAt)
	} else {
		shards = l.closedLoop(stopAt)
	}
	return buildReport(o, shards, measureFrom, stopAt)
}

func (r *runner) closedLoop(stopAt time.Time) [][]sample {
	shards := make([][]sample, r.o.concurrency)
	var wg sync.WaitGroup
	for w := range shards {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			local := make([]sample, 0, 4096)
			for {
				now := time.Now()
				if !now.Before(stopAt) {
					break
				}
				local = append(local, r.once(now))
			}
			shards[w] = local
		}(w)
	}
	wg.Wait()
	return shards
}

func (r *runner) openLoop(start, stopAt time.Time) [][]sample {
	interval := time.Duration(float64(time.Second) / r.o.rate)
	results := make(chan sample, 4096)
	collected := make(chan []sample)
	go func() {
		var all []sample
		for s := range results {
			all = append(all, s)
		}
		collected <- all
	}()
	slots := make(chan struct{}, r.o.maxInflight)
	var wg sync.WaitGroup
	for i := 0; ; i++ {
		due := start.Add(time.Duration(i) * interval)
		if !due.Before(stopAt) {
			break
		}
		if wait := time.Until(due); wait > 0 {
			time.Sleep(wait)
		}
		select {
		case slots <- struct{}{}:
		default:
			results <- sample{due: due, code: codeDropped}
			continue
		}
		wg.Add(1)
		go func(due time.Time) {
			defer wg.Done()
			results <- r.once(due)
			<-slots
		}(due)
	}
	wg.Wait()
	close(results)
	return [][]sample{<-collected}
}

// codeDropped marks an open-loop request that was never sent because -max-inflight
// requests were already in flight.
const codeDropped inferbridge.Code = -1
