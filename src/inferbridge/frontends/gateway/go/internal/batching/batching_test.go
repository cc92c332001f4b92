package batching

import (
	"context"
	"sync"
	"testing"
	"time"
)

// manualTimers fire only when told to.
type manualTimers struct {
	mu   sync.Mutex
	next int
	fns  map[int]func()
}

func (m *manualTimers) timer(_ time.Duration, f func()) func() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fns == nil {
		m.fns = map[int]func(){}
	}
	i := m.next
	m.next++
	m.fns[i] = f
	return func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		_, ok := m.fns[i]
		delete(m.fns, i)
		return ok
	}
}

func (m *manualTimers) fireAll() {
	m.mu.Lock()
	fns := m.fns
	m.fns = nil
	m.mu.Unlock()
	for _, f := range fns {
		f()
	}
}

type recorder struct {
	mu      sync.Mutex
	batches [][]int // rows of each batch run
	ran     chan struct{}
}

func (r *recorder) run(batch []*Request) {
	var rows []int
	for _, req := range batch {
		rows = append(rows, req.Rows)
	}
	r.mu.Lock()
	r.batches = append(r.batches, rows)
	r.mu.Unlock()
	for _, req := range batch {
		req.Answer(Result{Payload: len(batch)})
	}
	r.ran <- struct{}{}
}

func submitAsync(b *Batcher, rows int, key string) chan int {
	out := make(chan int, 1)
	go func() {
		v, err := b.Submit(context.Background(), &Request{Rows: rows, Key: key})
		if err != nil {
			out <- -1
			return
		}
		out <- v.(int)
	}()
	return out
}

func waitQueued(t *testing.T, b *Batcher, key string, n int) {
	t.Helper()
	for {
		b.mu.Lock()
		q := b.queues[key]
		got := 0
		if q != nil {
			got = len(q.reqs)
		}
		b.mu.Unlock()
		if got == n {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

func TestFlushesWhenFull(t *testing.T) {
	timers := &manualTimers{}
	rec := &recorder{ran: make(chan struct{}, 10)}
	b := &Batcher{MaxRows: 4, MaxDelay: time.Hour, Run: rec.run, Timer: timers.timer}
	a := submitAsync(b, 2, "k")
	waitQueued(t, b, "k", 1)
	c := submitAsync(b, 2, "k")
	if <-a != 2 || <-c != 2 {
		t.Fatalf("two requests of 2 rows did not run as one batch of 4")
	}
	<-rec.ran
}

func TestFlushesAfterTheDelay(t *testing.T) {
	timers := &manualTimers{}
	rec := &recorder{ran: make(chan struct{}, 10)}
	b := &Batcher{MaxRows: 8, MaxDelay: time.Millisecond, Run: rec.run, Timer: timers.timer}
	a := submitAsync(b, 1, "k")
	waitQueued(t, b, "k", 1)
	c := submitAsync(b, 1, "k")
	waitQueued(t, b, "k", 2)
	timers.fireAll()
	if <-a != 2 || <-c != 2 {
		t.Fatalf("the delay's flush did not take both requests")
	}
}

func TestKeysDoNotMix(t *testing.T) {
	timers := &manualTimers{}
	rec := &recorder{ran: make(chan struct{}, 10)}
	b := &Batcher{MaxRows: 8, MaxDelay: time.Millisecond, Run: rec.run, Timer: timers.timer}
	a := submitAsync(b, 1, "x")
	c := submitAsync(b, 1, "y")
	waitQueued(t, b, "x", 1)
	waitQueued(t, b, "y", 1)
	timers.fireAll()
	if <-a != 1 || <-c != 1 {
		t.Fatalf("requests of different keys batched together")
	}
}

func TestOversizeRunsAloneAndOverflowFlushes(t *testing.T) {
	timers := &manualTimers{}
	rec := &recorder{ran: make(chan struct{}, 10)}
	b := &Batcher{MaxRows: 4, MaxDelay: time.Hour, Run: rec.run, Timer: timers.timer}
	if v := <-submitAsync(b, 5, "k"); v != 1 {
		t.Fatalf("a request over max rows did not run alone")
	}
	a := submitAsync(b, 3, "k")
	waitQueued(t, b, "k", 1)
	c := submitAsync(b, 2, "k") // 3 + 2 > 4: the 3 goes first, the 2 waits
	if <-a != 1 {
		t.Fatalf("the waiting request was not flushed when the next did not fit")
	}
	waitQueued(t, b, "k", 1)
	timers.fireAll()
	if <-c != 1 {
		t.Fatalf("the overflowing request did not run after its delay")
	}
}

func TestCancelledWaiterDoesNotBlockTheBatch(t *testing.T) {
	timers := &manualTimers{}
	rec := &recorder{ran: make(chan struct{}, 10)}
	b := &Batcher{MaxRows: 8, MaxDelay: time.Hour, Run: rec.run, Timer: timers.timer}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := b.Submit(ctx, &Request{Rows: 1, Key: "k"})
		errc <- err
	}()
	waitQueued(t, b, "k", 1)
	other := submitAsync(b, 1, "k")
	waitQueued(t, b, "k", 2)
	cancel()
	if err := <-errc; err == nil {
		t.Fatalf("a cancelled waiter got no error")
	}
	timers.fireAll()
	if <-other != 2 {
		t.Fatalf("the batch did not run with the cancelled request in it")
	}
}

// With IdleDispatch a request that finds nothing running leaves at once (no timer fires);
// requests arriving while it runs wait for it and then leave together, again without a
// timer.
func TestIdleDispatchSendsAtOnceAndBatchesWhileBusy(t *testing.T) {
	timers := &manualTimers{}
	release := make(chan struct{})
	var mu sync.Mutex
	var batches [][]int
	run := func(batch []*Request) {
		var rows []int
		for _, req := range batch {
			rows = append(rows, req.Rows)
		}
		mu.Lock()
		first := len(batches) == 0
		batches = append(batches, rows)
		mu.Unlock()
		if first {
			<-release // the first batch runs until the test lets it end
		}
		for _, req := range batch {
			req.Answer(Result{Payload: len(batch)})
		}
	}
	b := &Batcher{MaxRows: 8, MaxDelay: time.Hour, Run: run, Timer: timers.timer, IdleDispatch: true}
	first := submitAsync(b, 1, "k")
	for { // it leaves without any timer
		mu.Lock()
		n := len(batches)
		mu.Unlock()
		if n == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	second, third := submitAsync(b, 1, "k"), submitAsync(b, 2, "k")
	waitQueued(t, b, "k", 2) // they wait for the running batch
	close(release)
	if got := <-first; got != 1 {
		t.Fatalf("the first request's batch had %d requests, want 1", got)
	}
	if a, c := <-second, <-third; a != 2 || c != 2 {
		t.Fatalf("the waiting requests left in batches of %d and %d, want one of 2", a, c)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(batches) != 2 || len(batches[1]) != 2 {
		t.Fatalf("batches %v, want [[1] [1 2]]", batches)
	}
}
