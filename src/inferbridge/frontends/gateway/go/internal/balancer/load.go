// Package balancer chooses an upstream for each request.
//
// A Picker is immutable: it is built over a snapshot of the routable hosts (their Load
// trackers) and swapped atomically by its owner when the set or its health changes, so
// that choosing a host takes no lock (grpc-go's builder/picker split). The per-host
// Load is shared by every picker that holds the host, so outstanding requests and
// latency survive a rebuild.
package balancer

import (
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/inferbridge/inferbridge/gateway/internal/clock"
)

// Load tracks one host's outstanding requests and its peak-EWMA latency (Finagle's and
// Linkerd's): a sample above the average replaces it at once (the peak), a sample below
// decays into it with weight exp(-elapsed/decay), so that a host that turns slow is
// avoided immediately and recovers gradually.
type Load struct {
	outstanding atomic.Int64

	clock   clock.Clock
	decay   time.Duration
	penalty time.Duration

	mu    sync.Mutex
	ewma  float64 // nanoseconds
	stamp time.Time
}

// NewLoad returns the tracker of one host. decay is the EWMA's time constant; penalty
// is the latency charged for a failure that came back fast (429, 503, a refused
// connection), so that a host answering errors quickly does not attract traffic.
func NewLoad(c clock.Clock, decay, penalty time.Duration) *Load {
	if decay <= 0 {
		decay = 10 * time.Second
	}
	return &Load{clock: c, decay: decay, penalty: penalty, stamp: c.Now()}
}

// Start counts one more outstanding request and returns its start time.
func (l *Load) Start() time.Time {
	l.outstanding.Add(1)
	return l.clock.Now()
}

// Done ends a request started at start; failed charges the error penalty when the
// request's own latency was below it.
func (l *Load) Done(start time.Time, failed bool) {
	now := l.clock.Now()
	l.outstanding.Add(-1)
	rtt := now.Sub(start)
	if failed && rtt < l.penalty {
		rtt = l.penalty
	}
	l.observe(now, float64(rtt))
}

func (l *Load) observe(now time.Time, rtt float64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if rtt > l.ewma {
		l.ewma = rtt
	} else {
		w := l.weight(now)
		l.ewma = l.ewma*w + rtt*(1-w)
	}
	l.stamp = now
}

func (l *Load) weight(now time.Time) float64 {
	elapsed := now.Sub(l.stamp)
	if elapsed < 0 {
		elapsed = 0
	}
	return math.Exp(-float64(elapsed) / float64(l.decay))
}

// Outstanding is the number of requests started and not done.
func (l *Load) Outstanding() int64 { return l.outstanding.Load() }

// EWMA is the host's current latency estimate.
func (l *Load) EWMA() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return time.Duration(l.ewma)
}

// Cost is the peak-EWMA cost: the latency estimate, decayed toward zero since the last
// sample (as Finagle does, so that a host avoided for being slow gets tried again),
// times (outstanding + 1). A host never measured costs its outstanding count alone.
func (l *Load) Cost() float64 {
	now := l.clock.Now()
	l.mu.Lock()
	ewma := l.ewma * l.weight(now)
	l.mu.Unlock()
	out := float64(l.outstanding.Load())
	if ewma == 0 {
		return out
	}
	return ewma * (out + 1)
}
