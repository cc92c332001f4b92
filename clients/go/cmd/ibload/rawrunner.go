package main

import (
	"bytes"
	"strconv"
	"sync"
	"time"
)

// statusKinds names HTTP error statuses without formatting on the hot path.
var statusKinds = func() []string {
	kinds := make([]string, 600)
	for s := range kinds {
		kinds[s] = "HTTP " + strconv.Itoa(s)
	}
	return kinds
}()

func statusKind(status int) string {
	if status >= 0 && status < len(statusKinds) {
		return statusKinds[status]
	}
	return "HTTP " + strconv.Itoa(status)
}

// rawRunner drives the -raw engine: closed loop over -concurrency connections, or open
// loop over a pool of up to -max-inflight connections, dialled as the load needs them.
type rawRunner struct {
	o   *options
	req *rawRequest
}

// rawWorker owns one connection and the samples of the requests sent on it.
type rawWorker struct {
	conn      *rawConn
	jobs      chan time.Time // open loop: due times handed over by the scheduler
	samples   []sample
	validated bool // the first successful response's body has been checked
}

func (r *rawRunner) newWorker() *rawWorker {
	return &rawWorker{conn: newRawConn(r.req.addr), jobs: make(chan time.Time, 1), samples: make([]sample, 0, 1024)}
}

// send makes one request due at due; latency is counted from due.
func (r *rawRunner) send(w *rawWorker, due time.Time) {
	var deadline time.Time
	if r.o.timeout > 0 {
		deadline = due.Add(r.o.timeout)
	}
	lag := time.Since(due)
	res := w.conn.roundTrip(r.req.bytes, deadline, !w.validated)
	s := sample{due: due, latency: time.Since(due), lag: lag}
	switch {
	case res.kind != "":
		s.kind = res.kind
	case res.status < 200 || res.status > 299:
		s.kind = statusKind(res.status)
	case !w.validated:
		w.validated = true
		// An OIP inference response (JSON, or the JSON header of the binary encoding)
		// names its outputs; anything else is not a successful inference.
		if res.body != nil && !bytes.Contains(res.body, []byte(`"outputs"`)) {
			s.kind = kindBad
		} else {
			s.ok = true
		}
	default:
		s.ok = true
	}
	w.samples = append(w.samples, s)
}

func (r *rawRunner) run() *Report { return runLoops(r.o, r) }

func (r *rawRunner) closedLoop(stopAt time.Time) [][]sample {
	workers := make([]*rawWorker, r.o.concurrency)
	var wg sync.WaitGroup
	for i := range workers {
		w := r.newWorker()
		workers[i] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				now := time.Now()
				if !now.Before(stopAt) {
					break
				}
				r.send(w, now)
			}
			w.conn.close()
		}()
	}
	wg.Wait()
	shards := make([][]sample, len(workers))
	for i, w := range workers {
		shards[i] = w.samples
	}
	return shards
}

// openLoop schedules request i at start + i/rate. At each wake-up the scheduler hands
// every request that has come due to a free connection (dialling a new one while the
// pool is below -max-inflight), or records it as DROPPED; then it sleeps until the next
// due time. A late wake-up delays sending, and the delay counts in the latency.
func (r *rawRunner) openLoop(start, stopAt time.Time) [][]sample {
	free := make(chan *rawWorker, r.o.maxInflight)
	var workers []*rawWorker
	var dropped []sample
	var wg sync.WaitGroup
	nsPerRequest := 1e9 / r.o.rate
	dueAt := func(i int) time.Time { return start.Add(time.Duration(float64(i) * nsPerRequest)) }
	for i := 0; ; {
		now := time.Now()
		for ; ; i++ {
			due := dueAt(i)
			if !due.Before(stopAt) {
				goto done
			}
			if due.After(now) {
				break
			}
			select {
			case w := <-free:
				w.jobs <- due
			default:
				if len(workers) == r.o.maxInflight {
					dropped = append(dropped, sample{due: due, kind: kindDropped})
					continue
				}
				w := r.newWorker()
				workers = append(workers, w)
				wg.Add(1)
				go func() {
					defer wg.Done()
					for due := range w.jobs {
						r.send(w, due)
						free <- w
					}
					w.conn.close()
				}()
				w.jobs <- due
			}
		}
		time.Sleep(time.Until(dueAt(i)))
	}
done:
	for _, w := range workers {
		close(w.jobs)
	}
	wg.Wait()
	shards := make([][]sample, 0, len(workers)+1)
	shards = append(shards, dropped)
	for _, w := range workers {
		shards = append(shards, w.samples)
	}
	return shards
}
