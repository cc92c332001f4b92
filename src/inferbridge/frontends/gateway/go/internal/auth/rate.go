package auth

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Rate is a token bucket: it holds up to Burst tokens and gains PerSecond a second.
type Rate struct {
	PerSecond float64
	Burst     int
}

func (r Rate) String() string {
	return fmt.Sprintf("%s requests/s (burst %d)", strconv.FormatFloat(r.PerSecond, 'g', -1, 64), r.Burst)
}

// ModelRate is one --rate-limit rule: the models whose name matches Glob share nothing,
// each gets its own bucket of Rate.
type ModelRate struct {
	Glob string
	Rate Rate
}

// ParseRate parses RPS[:BURST] ("100:200", "0.5"); BURST defaults to RPS rounded up.
func ParseRate(s string) (Rate, error) {
	rps, burst, hasBurst := strings.Cut(s, ":")
	perSecond, err := strconv.ParseFloat(rps, 64)
	if err != nil || perSecond <= 0 || math.IsInf(perSecond, 0) || math.IsNaN(perSecond) {
		return Rate{}, fmt.Errorf("rate %q: RPS must be a positive number (expected RPS[:BURST], as 100:200)", s)
	}
	r := Rate{PerSecond: perSecond, Burst: int(math.Ceil(perSecond))}
	if hasBurst {
		b, err := strconv.Atoi(burst)
		if err != nil || b < 1 {
			return Rate{}, fmt.Errorf("rate %q: BURST must be a positive whole number (expected RPS[:BURST], as 100:200)", s)
		}
		r.Burst = b
	}
	return r, nil
}

// ParseModelRate parses GLOB=RPS[:BURST] ("fraud-*=100:200").
func ParseModelRate(s string) (ModelRate, error) {
	glob, spec, ok := strings.Cut(s, "=")
	if !ok || glob == "" {
		return ModelRate{}, fmt.Errorf("rate limit %q: expected GLOB=RPS[:BURST], as fraud-*=100:200", s)
	}
	r, err := ParseRate(spec)
	if err != nil {
		return ModelRate{}, fmt.Errorf("rate limit %q: %w", s, err)
	}
	return ModelRate{Glob: glob, Rate: r}, nil
}

// maxIdleBuckets bounds a bucket table: past it, buckets that are full again (so the
// same as new ones) are dropped, so that callers inventing names cannot grow it forever.
const maxIdleBuckets = 4096

// bucket is one named token bucket and the rate it was made with.
type bucket struct {
	rate    Rate
	limiter *rate.Limiter
}

// buckets are token buckets by name (principals, or models). A name keeps its bucket
// while its rate is unchanged, whatever reloads happen in between.
type buckets struct {
	mu sync.Mutex
	m  map[string]*bucket
}

// take takes one token from name's bucket of rate r at now; it returns 0 when it got
// one, else how long until one is there (and takes nothing). The reservation is
// returned so that a later refusal of the same request can give the token back.
func (b *buckets) take(name string, r Rate, now time.Time) (*rate.Reservation, time.Duration) {
	b.mu.Lock()
	if b.m == nil {
		b.m = make(map[string]*bucket)
	}
	bk := b.m[name]
	if bk == nil || bk.rate != r {
		if bk == nil && len(b.m) >= maxIdleBuckets {
			b.sweep(now)
		}
		bk = &bucket{rate: r, limiter: rate.NewLimiter(rate.Limit(r.PerSecond), r.Burst)}
		b.m[name] = bk
	}
	b.mu.Unlock()
	res := bk.limiter.ReserveN(now, 1)
	if !res.OK() {
		return nil, time.Second // burst below 1 cannot happen (ParseRate, the keys file)
	}
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return nil, d
	}
	return res, 0
}

// sweep drops the buckets that are full (called with mu held).
func (b *buckets) sweep(now time.Time) {
	for name, bk := range b.m {
		if bk.limiter.TokensAt(now) >= float64(bk.rate.Burst) {
			delete(b.m, name)
		}
	}
}

// retryAfter is a wait in whole seconds, at least 1 (the Retry-After header's unit).
func retryAfter(d time.Duration) time.Duration {
	s := math.Ceil(d.Seconds())
	if s < 1 {
		s = 1
	}
	return time.Duration(s) * time.Second
}
