package balancer

import (
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
)

// Picker chooses one of the hosts it was built over. Pick returns an index into that
// slice, or -1 when every host is skipped. skip (may be nil) excludes hosts: those a
// retry already tried, those whose breaker refuses. key is the request's affinity key
// (consistent hashing only; "" = none). A Picker is safe for concurrent use.
type Picker interface {
	Pick(key string, skip func(i int) bool) int
}

// Policy names a balancing algorithm.
type Policy string

// The policies.
const (
	PeakEWMA          Policy = "p2c-ewma"
	LeastOutstanding  Policy = "least-outstanding"
	RoundRobin        Policy = "round-robin"
	ConsistentHashing Policy = "consistent-hash"
)

// ParsePolicy reads a policy name; "consistent-hash:<key>" also returns the key.
func ParsePolicy(s string) (Policy, string, error) {
	name, key, _ := strings.Cut(s, ":")
	switch p := Policy(name); p {
	case PeakEWMA, LeastOutstanding, RoundRobin:
		if key != "" {
			return "", "", fmt.Errorf("%s takes no key", p)
		}
		return p, "", nil
	case ConsistentHashing:
		if key == "" {
			return "", "", fmt.Errorf("consistent-hash needs a key: consistent-hash:<header or metadata name>")
		}
		return p, strings.ToLower(key), nil
	}
	return "", "", fmt.Errorf("unknown balancer %q (want p2c-ewma, least-outstanding, round-robin or consistent-hash:<key>)", s)
}

// New builds the picker of policy over hosts. hosts must not change afterwards;
// names (same length) are the hosts' stable names, hashed by consistent hashing.
func New(policy Policy, hosts []*Load, names []string) Picker {
	switch policy {
	case LeastOutstanding:
		return leastPicker{hosts}
	case RoundRobin:
		return &rrPicker{hosts: hosts}
	case ConsistentHashing:
		return newHashPicker(hosts, names)
	}
	return p2cPicker{hosts}
}

// eligible collects the indices skip allows; buf avoids an allocation for small sets.
func eligible(n int, skip func(int) bool, buf []int) []int {
	out := buf[:0]
	for i := 0; i < n; i++ {
		if skip == nil || !skip(i) {
			out = append(out, i)
		}
	}
	return out
}

// p2cPicker is power of two choices over peak-EWMA cost.
type p2cPicker struct{ hosts []*Load }

func (p p2cPicker) Pick(_ string, skip func(int) bool) int {
	n := len(p.hosts)
	switch {
	case n == 0:
		return -1
	case n == 1:
		if skip != nil && skip(0) {
			return -1
		}
		return 0
	}
	var buf [16]int
	idx := eligible(n, skip, buf[:])
	switch len(idx) {
	case 0:
		return -1
	case 1:
		return idx[0]
	}
	a := rand.IntN(len(idx))
	b := rand.IntN(len(idx) - 1)
	if b >= a {
		b++
	}
	ia, ib := idx[a], idx[b]
	if p.hosts[ib].Cost() < p.hosts[ia].Cost() {
		return ib
	}
	return ia
}

// leastPicker takes the host with the fewest outstanding requests (ties at random).
type leastPicker struct{ hosts []*Load }

func (p leastPicker) Pick(_ string, skip func(int) bool) int {
	best, bestN, ties := -1, int64(0), 0
	for i, h := range p.hosts {
		if skip != nil && skip(i) {
			continue
		}
		n := h.Outstanding()
		switch {
		case best < 0 || n < bestN:
			best, bestN, ties = i, n, 1
		case n == bestN:
			ties++
			if rand.IntN(ties) == 0 {
				best = i
			}
		}
	}
	return best
}

// rrPicker cycles through the hosts.
type rrPicker struct {
	hosts []*Load
	next  atomic.Uint64
}

func (p *rrPicker) Pick(_ string, skip func(int) bool) int {
	n := len(p.hosts)
	if n == 0 {
		return -1
	}
	start := int(p.next.Add(1) % uint64(n))
	for k := 0; k < n; k++ {
		i := (start + k) % n
		if skip == nil || !skip(i) {
			return i
		}
	}
	return -1
}

// hashPicker is a consistent-hash ring (virtual nodes per host); a request without a
// key falls back to power of two choices.
type hashPicker struct {
	ring     []ringPoint
	fallback p2cPicker
}

type ringPoint struct {
	hash uint64
	host int
}

const virtualNodes = 100

func newHashPicker(hosts []*Load, names []string) *hashPicker {
	p := &hashPicker{fallback: p2cPicker{hosts}}
	for i := range hosts {
		for v := 0; v < virtualNodes; v++ {
			p.ring = append(p.ring, ringPoint{hash: hashString(names[i] + "#" + strconv.Itoa(v)), host: i})
		}
	}
	sort.Slice(p.ring, func(a, b int) bool { return p.ring[a].hash < p.ring[b].hash })
	return p
}

func hashString(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	// fnv's low bits mix poorly for similar strings: finish with a 64-bit mixer.
	x := h.Sum64()
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

func (p *hashPicker) Pick(key string, skip func(int) bool) int {
	if key == "" || len(p.ring) == 0 {
		return p.fallback.Pick(key, skip)
	}
	h := hashString(key)
	start := sort.Search(len(p.ring), func(i int) bool { return p.ring[i].hash >= h })
	for k := 0; k < len(p.ring); k++ {
		pt := p.ring[(start+k)%len(p.ring)]
		if skip == nil || !skip(pt.host) {
			return pt.host
		}
	}
	return -1
}
