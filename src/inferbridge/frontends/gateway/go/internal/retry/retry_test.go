package retry

import (
	"testing"
	"time"
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
