// Package batching merges concurrent small requests for the same model and signature
// into one upstream request: a queue per key, flushed when it holds MaxRows rows or
// MaxDelay after its first request, whichever comes first (the seed's batcher, in Go).
// With IdleDispatch, a request that finds no batch of its batcher running leaves at once
// (waiting could only add latency: nothing is there to wait for), and the requests that
// arrive while a batch runs leave together as soon as it ends.
// What a batch is made of and how it is run is the caller's: Run gets the requests and
// must answer each.
package batching

import (
	"context"
	"sync"
	"time"
)

// Request is one request waiting in a batch.
type Request struct {
	Rows    int    // its batch dimension
	Key     string // requests batch only with requests of the same key
	Payload any    // the caller's

	done chan Result
}

// Result answers one Request.
type Result struct {
	Payload any
	Err     error
}

// Answer delivers r's result (once; Run calls it for every request of a batch).
func (r *Request) Answer(res Result) { r.done <- res }

// Timer starts f after d; the returned function stops it. Tests replace it.
type Timer func(d time.Duration, f func()) (stop func() bool)

func realTimer(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }

// Batcher holds the queues of one model.
type Batcher struct {
	MaxRows  int
	MaxDelay time.Duration
	Run      func(batch []*Request) // called on its own goroutine
	Timer    Timer                  // nil = time.AfterFunc
	// IdleDispatch sends a request at once when no batch is running, and what queued
	// meanwhile when the running batches end (MaxRows and MaxDelay still bound a queue).
	IdleDispatch bool

	mu      sync.Mutex
	queues  map[string]*queue
	running int // batches started and not yet ended (counted only with IdleDispatch)
}

type queue struct {
	reqs []*Request
	rows int
	stop func() bool
}

// Submit queues r and waits for its answer, or for ctx to end (the batch still runs;
// its answer for r is dropped).
func (b *Batcher) Submit(ctx context.Context, r *Request) (any, error) {
	r.done = make(chan Result, 1)
	if r.Rows >= b.MaxRows {
		b.mu.Lock()
		b.start([]*Request{r})
		b.mu.Unlock()
	} else {
		b.enqueue(r)
	}
	select {
	case res := <-r.done:
		return res.Payload, res.Err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (b *Batcher) enqueue(r *Request) {
	b.mu.Lock()
	if b.queues == nil {
		b.queues = map[string]*queue{}
	}
	q := b.queues[r.Key]
	if q == nil {
		q = &queue{}
		b.queues[r.Key] = q
	}
	if q.rows+r.Rows > b.MaxRows { // r does not fit: flush what waits, start anew
		batch := b.take(r.Key, q)
		q = &queue{}
		b.queues[r.Key] = q
		b.start(batch)
	}
	q.reqs = append(q.reqs, r)
	q.rows += r.Rows
	if q.rows >= b.MaxRows || (b.IdleDispatch && b.running == 0) {
		b.start(b.take(r.Key, q))
		b.mu.Unlock()
		return
	}
	if len(q.reqs) == 1 {
		timer := b.Timer
		if timer == nil {
			timer = realTimer
		}
		key := r.Key
		q.stop = timer(b.MaxDelay, func() { b.flush(key, q) })
	}
	b.mu.Unlock()
}

// take removes q (the queue of key) and returns its requests; b.mu is held.
func (b *Batcher) take(key string, q *queue) []*Request {
	if q.stop != nil {
		q.stop()
	}
	if b.queues[key] == q {
		delete(b.queues, key)
	}
	return q.reqs
}

// flush runs q when its delay is over, unless it was taken meanwhile.
func (b *Batcher) flush(key string, q *queue) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.queues[key] != q {
		return
	}
	if batch := b.take(key, q); len(batch) > 0 {
		b.start(batch)
	}
}

// start runs batch on its own goroutine; b.mu is held. With IdleDispatch, the end of the
// last running batch sends every queue that waited for it.
func (b *Batcher) start(batch []*Request) {
	if !b.IdleDispatch {
		go b.Run(batch)
		return
	}
	b.running++
	go func() {
		b.Run(batch)
		b.mu.Lock()
		defer b.mu.Unlock()
		b.running--
		if b.running > 0 {
			return
		}
		for key, q := range b.queues {
			if waiting := b.take(key, q); len(waiting) > 0 {
				b.start(waiting)
			}
		}
	}()
}
