package retry

import (
	"context"
	"testing"
	"time"

	"github.com/inferbridge/inferbridge/gateway/internal/clock"
)

func TestBudgetFloorAndPercent(t *testing.T) {
	b := &Budget{Percent: 20, Min: 3}
	for i := 0; i < 3; i++ {
		if !b.Acquire() {
			t.Fatalf("retry %d refused under the floor of 3", i+1)
		}
	}
	if b.Acquire() {
		t.Fatalf("a 4th concurrent retry allowed with no requests in flight")
	}
	for i := 0; i < 50; i++ {
		b.Begin()
	}
	// 20 % of 50 = 10
	for i := 3; i < 10; i++ {
		if !b.Acquire() {
			t.Fatalf("retry %d refused (budget 10)", i+1)
		}
	}
	if b.Acquire() {
		t.Fatalf("an 11th retry allowed (budget 10)")
	}
	b.Release()
	if !b.Acquire() {
		t.Fatalf("a released retry was not given back")
	}
	if b.Retries() != 10 || b.Active() != 50 {
		t.Fatalf("retries %d active %d", b.Retries(), b.Active())
	}
}

func TestBackoffBounds(t *testing.T) {
	b := Backoff{Base: 25 * time.Millisecond, Max: 250 * time.Millisecond}
	for n := 1; n <= 10; n++ {
		lo := b.Delay(n, func() float64 { return 0 })
		hi := b.Delay(n, func() float64 { return 0.999999 })
		if lo != 25*time.Millisecond {
			t.Fatalf("retry %d: lowest delay %v, want 25ms", n, lo)
		}
		if hi > 250*time.Millisecond {
			t.Fatalf("retry %d: highest delay %v over 250ms", n, hi)
		}
	}
	if hi := b.Delay(2, func() float64 { return 0.999999 }); hi < 49*time.Millisecond || hi > 50*time.Millisecond {
		t.Fatalf("retry 2 upper bound %v, want 50ms", hi)
	}
	if hi := b.Delay(8, func() float64 { return 0.999999 }); hi < 249*time.Millisecond {
		t.Fatalf("retry 8 upper bound %v, want 250ms", hi)
	}
}

func TestFits(t *testing.T) {
	now := time.Unix(100, 0)
	if !Fits(now, time.Time{}, time.Second, time.Millisecond) {
		t.Fatalf("no deadline must always fit")
	}
	if Fits(now, now.Add(30*time.Millisecond), 25*time.Millisecond, 10*time.Millisecond) {
		t.Fatalf("a retry that would start 5 ms before the deadline fits")
	}
	if !Fits(now, now.Add(time.Second), 25*time.Millisecond, 10*time.Millisecond) {
		t.Fatalf("a retry well before the deadline does not fit")
	}
}

func TestReasons(t *testing.T) {
	var on On
	for _, s := range []string{"connect-failure", "503"} {
		r, err := ParseReason(s)
		if err != nil {
			t.Fatal(err)
		}
		on = on.Add(r)
	}
	if !on.Has(ConnectFailure) || !on.Has(Status503) || on.Has(Reset) || on.Has(None) {
		t.Fatalf("set %b", on)
	}
	if _, err := ParseReason("500"); err == nil {
		t.Fatalf("500 accepted as a retry condition")
	}
}

// fakeSleep advances clk instead of sleeping and runs then (if set) after each wait, as
// another goroutine releasing a slot meanwhile would.
func fakeSleep(clk *clock.Fake, slept *[]time.Duration, then func(n int)) Sleeper {
	return func(ctx context.Context, d time.Duration) bool {
		if ctx.Err() != nil {
			return false
		}
		clk.Advance(d)
		*slept = append(*slept, d)
		if then != nil {
			then(len(*slept))
		}
		return true
	}
}

func spent(t *testing.T) *Budget {
	t.Helper()
	b := &Budget{Percent: 20, Min: 3}
	for i := 0; i < 3; i++ {
		if !b.Acquire() {
			t.Fatalf("slot %d refused", i+1)
		}
	}
	return b
}

func TestWaitTakesASlotFreedWhileWaiting(t *testing.T) {
	clk := clock.NewFake()
	b := spent(t)
	var slept []time.Duration
	w := Wait{MaxWait: time.Second, Backoff: Backoff{Base: 25 * time.Millisecond, Max: 250 * time.Millisecond},
		Clock: clk, Rand: func() float64 { return 0 },
		Sleep: fakeSleep(clk, &slept, func(n int) {
			if n == 2 { // a retry in flight ends during the second wait
				b.Release()
			}
		})}
	ok, waits := w.Acquire(context.Background(), b, time.Time{}, time.Millisecond)
	if !ok || waits != 2 {
		t.Fatalf("acquired %v after %d waits, want true after 2", ok, waits)
	}
	if b.Retries() != 3 {
		t.Fatalf("retries in flight %d, want 3 (the freed slot taken again)", b.Retries())
	}
	if len(slept) != 2 || slept[0] != 25*time.Millisecond || slept[1] != 25*time.Millisecond {
		t.Fatalf("waits %v, want two of 25ms (jitter 0)", slept)
	}
}

func TestWaitGivesUpAtMaxWaitAndNeverExceedsTheBudget(t *testing.T) {
	clk := clock.NewFake()
	b := spent(t)
	var slept []time.Duration
	w := Wait{MaxWait: 300 * time.Millisecond, Backoff: Backoff{Base: 25 * time.Millisecond, Max: 250 * time.Millisecond},
		Clock: clk, Rand: func() float64 { return 0.999999 }, Sleep: fakeSleep(clk, &slept, nil)}
	start := clk.Now()
	ok, waits := w.Acquire(context.Background(), b, time.Time{}, time.Millisecond)
	if ok {
		t.Fatalf("a slot taken with the budget spent throughout")
	}
	if b.Retries() != 3 {
		t.Fatalf("retries in flight %d, want 3: a refused wait must leave the budget as it was", b.Retries())
	}
	// waits of ~25, ~50, ~100 ms fit in 300 ms; the next (~200 ms) would pass it
	if waits != 3 || clk.Now().Sub(start) > 300*time.Millisecond {
		t.Fatalf("%d waits, %v waited; want 3 within 300ms", waits, clk.Now().Sub(start))
	}
}

func TestWaitStopsBeforeTheDeadline(t *testing.T) {
	clk := clock.NewFake()
	b := spent(t)
	var slept []time.Duration
	w := Wait{MaxWait: 10 * time.Second, Backoff: Backoff{Base: 25 * time.Millisecond, Max: 25 * time.Millisecond},
		Clock: clk, Sleep: fakeSleep(clk, &slept, nil)}
	deadline := clk.Now().Add(110 * time.Millisecond)
	ok, waits := w.Acquire(context.Background(), b, deadline, 10*time.Millisecond)
	if ok || waits != 4 {
		t.Fatalf("acquired %v after %d waits; want a refusal after 4 waits of 25ms (100ms of the 110ms less 10ms)", ok, waits)
	}
	if clk.Now().After(deadline.Add(-10 * time.Millisecond)) {
		t.Fatalf("waited past the deadline less the time an answer needs")
	}
}

func TestWaitEndsWithTheContextAndZeroMaxWaitRefusesAtOnce(t *testing.T) {
	clk := clock.NewFake()
	b := spent(t)
	var slept []time.Duration
	ctx, cancel := context.WithCancel(context.Background())
	w := Wait{MaxWait: time.Second, Backoff: Backoff{Base: 25 * time.Millisecond, Max: 250 * time.Millisecond},
		Clock: clk, Sleep: fakeSleep(clk, &slept, func(int) { cancel() })}
	if ok, _ := w.Acquire(ctx, b, time.Time{}, 0); ok {
		t.Fatalf("a slot taken after the client went away")
	}
	if len(slept) != 1 {
		t.Fatalf("kept waiting after the context ended: %v", slept)
	}
	slept = nil
	w.MaxWait = 0
	if ok, waits := w.Acquire(context.Background(), b, time.Time{}, 0); ok || waits != 0 || len(slept) != 0 {
		t.Fatalf("budget_wait 0: acquired %v after %d waits", ok, waits)
	}
	b.Release()
	if ok, waits := w.Acquire(context.Background(), b, time.Time{}, 0); !ok || waits != 0 {
		t.Fatalf("a free slot not taken at once: %v, %d waits", ok, waits)
	}
}

func TestChargedExemptsOnlyConnectFailures(t *testing.T) {
	for r := ConnectFailure; r < numReasons; r++ {
		if got, want := Charged(r), r != ConnectFailure; got != want {
			t.Errorf("Charged(%s) = %v, want %v", r, got, want)
		}
	}
}

func TestWaitIsBoundedByMaxWaitEvenWhenTheClockStands(t *testing.T) {
	clk := clock.NewFake() // never advanced: only the sum of the waits can end the loop
	b := spent(t)
	var slept []time.Duration
	w := Wait{MaxWait: 100 * time.Millisecond, Backoff: Backoff{Base: 10 * time.Millisecond, Max: 10 * time.Millisecond},
		Clock: clk, Sleep: func(_ context.Context, d time.Duration) bool { slept = append(slept, d); return true }}
	if ok, waits := w.Acquire(context.Background(), b, clk.Now().Add(time.Hour), time.Millisecond); ok || waits != 10 {
		t.Fatalf("acquired %v after %d waits, want a refusal after 10 waits of 10ms", ok, waits)
	}
}
