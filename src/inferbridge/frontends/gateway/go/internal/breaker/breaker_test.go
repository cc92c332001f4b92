package breaker

import (
	"testing"
	"time"

	"github.com/inferbridge/inferbridge/gateway/internal/clock"
)

func request(t *testing.T, b *Breaker, success bool) {
	t.Helper()
	ok, probe := b.Allow()
	if !ok {
		t.Fatalf("request refused in state %v", b.State())
	}
	b.Record(success, probe)
}

func TestOpensOnConsecutiveFailuresThenProbes(t *testing.T) {
	c := clock.NewFake()
	var changes []State
	b := New(Settings{ConsecutiveFailures: 3, OpenFor: 10 * time.Second}, c, func(s State) { changes = append(changes, s) })
	request(t, b, false)
	request(t, b, false)
	request(t, b, true) // a success resets the run
	request(t, b, false)
	request(t, b, false)
	if b.State() != Closed {
		t.Fatalf("opened after 2 failures in a row")
	}
	request(t, b, false)
	if b.State() != Open {
		t.Fatalf("state %v after 3 failures in a row, want open", b.State())
	}
	if ok, _ := b.Allow(); ok {
		t.Fatalf("an open breaker let a request through")
	}
	c.Advance(10 * time.Second)
	ok, probe := b.Allow()
	if !ok || !probe || b.State() != HalfOpen {
		t.Fatalf("after open_for: ok=%v probe=%v state=%v, want one probe, half-open", ok, probe, b.State())
	}
	if ok2, _ := b.Allow(); ok2 {
		t.Fatalf("half-open let a second probe through at once")
	}
	b.Record(false, true)
	if b.State() != Open {
		t.Fatalf("a failed probe leaves %v, want open", b.State())
	}
	c.Advance(10 * time.Second)
	ok, probe = b.Allow()
	b.Record(true, probe)
	if !ok || b.State() != Closed {
		t.Fatalf("a good probe leaves %v, want closed", b.State())
	}
	want := []State{Open, HalfOpen, Open, HalfOpen, Closed}
	if len(changes) != len(want) {
		t.Fatalf("changes %v, want %v", changes, want)
	}
	for i := range want {
		if changes[i] != want[i] {
			t.Fatalf("changes %v, want %v", changes, want)
		}
	}
}

func TestOpensOnFailureRateWithMinRequests(t *testing.T) {
	c := clock.NewFake()
	b := New(Settings{FailureRate: 0.5, Window: 10 * time.Second, MinRequests: 10, OpenFor: time.Second}, c, nil)
	for i := 0; i < 8; i++ { // alternate: 50 %, but under min_requests for a while
		request(t, b, i%2 == 0)
		if b.State() != Closed {
			t.Fatalf("opened after %d requests (min 10)", i+1)
		}
		c.Advance(100 * time.Millisecond)
	}
	request(t, b, true)
	request(t, b, false)
	if b.State() != Open {
		t.Fatalf("50 %% failures over 10 requests: state %v, want open", b.State())
	}
}

func TestOldFailuresLeaveTheWindow(t *testing.T) {
	c := clock.NewFake()
	b := New(Settings{FailureRate: 0.5, Window: 10 * time.Second, MinRequests: 4, OpenFor: time.Second}, c, nil)
	request(t, b, false)
	request(t, b, false)
	request(t, b, false)
	c.Advance(20 * time.Second)
	request(t, b, true)
	request(t, b, true)
	request(t, b, true)
	request(t, b, false)
	if b.State() != Closed {
		t.Fatalf("failures older than the window counted: state %v", b.State())
	}
}

func TestSeveralProbesNeeded(t *testing.T) {
	c := clock.NewFake()
	b := New(Settings{ConsecutiveFailures: 1, OpenFor: time.Second, HalfOpenProbes: 2}, c, nil)
	request(t, b, false)
	c.Advance(time.Second)
	ok1, p1 := b.Allow()
	ok2, p2 := b.Allow()
	if !ok1 || !ok2 {
		t.Fatalf("half-open with 2 probes refused one")
	}
	b.Record(true, p1)
	if b.State() != HalfOpen {
		t.Fatalf("closed after 1 of 2 probes")
	}
	b.Record(true, p2)
	if b.State() != Closed {
		t.Fatalf("state %v after 2 good probes", b.State())
	}
}
