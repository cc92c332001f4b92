package balancer

import (
	"testing"
	"time"

	"github.com/inferbridge/inferbridge/gateway/internal/clock"
)

func loads(c clock.Clock, n int) ([]*Load, []string) {
	hosts := make([]*Load, n)
	names := make([]string, n)
	for i := range hosts {
		hosts[i] = NewLoad(c, 10*time.Second, time.Second)
		names[i] = string(rune('a' + i))
	}
	return hosts, names
}

// observe records one request of rtt on h.
func observe(c *clock.Fake, h *Load, rtt time.Duration, failed bool) {
	start := h.Start()
	c.Advance(rtt)
	h.Done(start, failed)
}

func TestPeakEWMATakesPeaksAtOnceAndDecays(t *testing.T) {
	c := clock.NewFake()
	h := NewLoad(c, 10*time.Second, 0)
	observe(c, h, 10*time.Millisecond, false)
	if got := h.EWMA(); got != 10*time.Millisecond {
		t.Fatalf("first sample: ewma %v, want 10ms", got)
	}
	observe(c, h, 100*time.Millisecond, false)
	if got := h.EWMA(); got != 100*time.Millisecond {
		t.Fatalf("a peak is taken at once: ewma %v, want 100ms", got)
	}
	for i := 0; i < 50; i++ {
		c.Advance(time.Second)
		observe(c, h, time.Millisecond, false)
	}
	if got := h.EWMA(); got > 10*time.Millisecond {
		t.Fatalf("fast samples decay the peak: ewma %v after 50 s of 1 ms samples", got)
	}
}

func TestFastFailuresArePenalised(t *testing.T) {
	c := clock.NewFake()
	h := NewLoad(c, 10*time.Second, time.Second)
	observe(c, h, time.Millisecond, true)
	if got := h.EWMA(); got != time.Second {
		t.Fatalf("a fast failure costs the penalty: ewma %v, want 1s", got)
	}
}

func TestIdleCostDecaysTowardZero(t *testing.T) {
	c := clock.NewFake()
	h := NewLoad(c, 10*time.Second, 0)
	observe(c, h, time.Second, false)
	before := h.Cost()
	c.Advance(30 * time.Second)
	if after := h.Cost(); after >= before/10 {
		t.Fatalf("cost after 30 s idle is %v, want well below %v", after, before)
	}
}

func TestP2CAvoidsTheSlowHost(t *testing.T) {
	c := clock.NewFake()
	hosts, names := loads(c, 3)
	observe(c, hosts[0], 100*time.Millisecond, false)
	observe(c, hosts[1], time.Millisecond, false)
	observe(c, hosts[2], time.Millisecond, false)
	p := New(PeakEWMA, hosts, names)
	for i := 0; i < 200; i++ {
		if got := p.Pick("", nil); got == 0 {
			t.Fatalf("pick %d chose the slow host", i)
		}
	}
}

func TestP2CWeighsOutstanding(t *testing.T) {
	c := clock.NewFake()
	hosts, names := loads(c, 2)
	observe(c, hosts[0], 10*time.Millisecond, false)
	observe(c, hosts[1], 10*time.Millisecond, false)
	for i := 0; i < 5; i++ {
		hosts[0].Start()
	}
	p := New(PeakEWMA, hosts, names)
	for i := 0; i < 50; i++ {
		if got := p.Pick("", nil); got != 1 {
			t.Fatalf("chose host %d with 5 outstanding over an idle one", got)
		}
	}
}

func TestSkipAndExhaustion(t *testing.T) {
	c := clock.NewFake()
	hosts, names := loads(c, 3)
	for _, policy := range []Policy{PeakEWMA, LeastOutstanding, RoundRobin, ConsistentHashing} {
		p := New(policy, hosts, names)
		for i := 0; i < 30; i++ {
			if got := p.Pick("k", func(i int) bool { return i != 2 }); got != 2 {
				t.Fatalf("%s: picked %d, only 2 allowed", policy, got)
			}
		}
		if got := p.Pick("k", func(int) bool { return true }); got != -1 {
			t.Fatalf("%s: picked %d with every host skipped", policy, got)
		}
		if got := New(policy, nil, nil).Pick("k", nil); got != -1 {
			t.Fatalf("%s: picked %d from no hosts", policy, got)
		}
	}
}

func TestLeastOutstanding(t *testing.T) {
	c := clock.NewFake()
	hosts, names := loads(c, 3)
	hosts[0].Start()
	hosts[0].Start()
	hosts[2].Start()
	if got := New(LeastOutstanding, hosts, names).Pick("", nil); got != 1 {
		t.Fatalf("picked %d, want the idle host 1", got)
	}
}

func TestRoundRobinCycles(t *testing.T) {
	c := clock.NewFake()
	hosts, names := loads(c, 3)
	p := New(RoundRobin, hosts, names)
	seen := map[int]int{}
	for i := 0; i < 30; i++ {
		seen[p.Pick("", nil)]++
	}
	for i := 0; i < 3; i++ {
		if seen[i] != 10 {
			t.Fatalf("round robin counts %v, want 10 each", seen)
		}
	}
}

func TestConsistentHashIsStableAndMovesLittle(t *testing.T) {
	c := clock.NewFake()
	hosts, names := loads(c, 4)
	p := New(ConsistentHashing, hosts, names)
	first := map[string]int{}
	for i := 0; i < 200; i++ {
		k := "key-" + string(rune('A'+i%26)) + string(rune('a'+i/26))
		first[k] = p.Pick(k, nil)
		if again := p.Pick(k, nil); again != first[k] {
			t.Fatalf("key %s moved from %d to %d", k, first[k], again)
		}
	}
	// Skipping host 3 moves only the keys that were on it.
	moved := 0
	for k, h := range first {
		got := p.Pick(k, func(i int) bool { return i == 3 })
		if h != 3 && got != h {
			moved++
		}
	}
	if moved != 0 {
		t.Fatalf("%d keys not on the skipped host moved", moved)
	}
}

func TestParsePolicy(t *testing.T) {
	for _, tc := range []struct {
		in   string
		p    Policy
		key  string
		fail bool
	}{
		{"p2c-ewma", PeakEWMA, "", false},
		{"least-outstanding", LeastOutstanding, "", false},
		{"round-robin", RoundRobin, "", false},
		{"consistent-hash:X-User", ConsistentHashing, "x-user", false},
		{"consistent-hash", "", "", true},
		{"random", "", "", true},
		{"round-robin:x", "", "", true},
	} {
		p, key, err := ParsePolicy(tc.in)
		if (err != nil) != tc.fail || p != tc.p || key != tc.key {
			t.Errorf("ParsePolicy(%q) = %q, %q, %v", tc.in, p, key, err)
		}
	}
}
