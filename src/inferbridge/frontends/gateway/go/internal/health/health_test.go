package health

import (
	"testing"
	"time"

	"github.com/inferbridge/inferbridge/gateway/internal/clock"
)

func TestTrackerHysteresis(t *testing.T) {
	tr := &Tracker{UnhealthyAfter: 2, HealthyAfter: 3}
	steps := []struct {
		ok      bool
		healthy bool
	}{
		{false, true}, {true, true}, {false, true}, {false, false},
		{true, false}, {true, false}, {false, false}, {true, false}, {true, false}, {true, true},
	}
	for i, s := range steps {
		tr.Observe(s.ok)
		if tr.Healthy() != s.healthy {
			t.Fatalf("step %d (ok=%v): healthy=%v, want %v", i, s.ok, tr.Healthy(), s.healthy)
		}
	}
}

func TestEjectionLengthGrowsAndExpires(t *testing.T) {
	c := clock.NewFake()
	e := NewEjector(Outlier{ConsecutiveFailures: 2, BaseEjection: 30 * time.Second, MaxEjection: 50 * time.Second, MaxEjectionPercent: 50}, c)
	hosts := []*Host{{}, {}, {}, {}}
	h := hosts[0]
	if e.Record(h, true, 4) {
		t.Fatalf("ejected after one failure")
	}
	if !e.Record(h, true, 4) || !h.Ejected() {
		t.Fatalf("not ejected after two failures in a row")
	}
	if got := h.Until(e).Sub(c.Now()); got != 30*time.Second {
		t.Fatalf("first ejection lasts %v, want 30s", got)
	}
	c.Advance(29 * time.Second)
	if e.Expire(hosts) || !h.Ejected() {
		t.Fatalf("ejection ended early")
	}
	c.Advance(time.Second)
	if !e.Expire(hosts) || h.Ejected() {
		t.Fatalf("ejection did not end after 30 s")
	}
	e.Record(h, true, 4)
	e.Record(h, true, 4)
	if got := h.Until(e).Sub(c.Now()); got != 50*time.Second {
		t.Fatalf("second ejection lasts %v, want 60s capped at 50s", got)
	}
}

func TestSuccessResetsTheRun(t *testing.T) {
	e := NewEjector(Outlier{ConsecutiveFailures: 2, BaseEjection: time.Second, MaxEjectionPercent: 100}, clock.NewFake())
	h := &Host{}
	e.Record(h, true, 3)
	e.Record(h, false, 3)
	if e.Record(h, true, 3) {
		t.Fatalf("ejected though a success broke the run")
	}
}

func TestEjectionCapKeepsOneHost(t *testing.T) {
	c := clock.NewFake()
	e := NewEjector(Outlier{ConsecutiveFailures: 1, BaseEjection: time.Second, MaxEjectionPercent: 10}, c)
	hosts := []*Host{{}, {}, {}}
	if !e.Record(hosts[0], true, 3) {
		t.Fatalf("10 %% of 3 hosts still allows one ejection")
	}
	if e.Record(hosts[1], true, 3) {
		t.Fatalf("a second ejection went past the 10 %% cap")
	}
	e2 := NewEjector(Outlier{ConsecutiveFailures: 1, BaseEjection: time.Second, MaxEjectionPercent: 100}, c)
	two := []*Host{{}, {}}
	e2.Record(two[0], true, 2)
	if e2.Record(two[1], true, 2) {
		t.Fatalf("the last routable host was ejected")
	}
	if e2.Record((&Host{}), true, 1) {
		t.Fatalf("a pool's only host was ejected")
	}
}
