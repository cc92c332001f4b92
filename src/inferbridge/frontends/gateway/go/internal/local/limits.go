package local

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"

	"google.golang.org/grpc/status"

	"github.com/inferbridge/inferbridge/gateway/internal/frontend"
)

// Per-model admission from the LIMITS frames. Each frame replaces the whole table; the
// Python server re-sends it after every change of its model set.

// modelState is the admission state of one model ever named in a LIMITS frame. States
// are never removed (a model dropped from the table keeps its state with no limit), so
// that a request always releases the counter it took, whatever tables came in between,
// and a model that comes back finds its outstanding requests still counted.
type modelState struct {
	name     string
	count    atomic.Int64               // forwarded infer requests not answered yet
	limit    atomic.Pointer[modelLimit] // nil = no limit
	rejected [numProtocols][numReasons]lazyCounter
}

type modelLimit struct {
	n       int64
	body    []byte // the ready 429 body
	grpcErr error  // the same message with --queue-full-code (RESOURCE_EXHAUSTED)
}

// admit counts one more request for st, or refuses it (returning nil) when that would
// exceed the model's limit. A non-nil result must be released once the request is
// answered. Requests are counted whether or not the model has a limit now, so that a
// limit set later sees the requests already outstanding.
func (st *modelState) admit() *modelLimit {
	n := st.count.Add(1)
	if lim := st.limit.Load(); lim != nil && n > lim.n {
		st.count.Add(-1)
		return lim
	}
	return nil
}

func (st *modelState) release() { st.count.Add(-1) }

// admission is one admitted request's hold on its model's count. Its release is
// idempotent, so that a request given up on frees its slot before its CANCEL is sent
// (whoever sees the CANCEL, Python or a test, finds the slot free) while the deferred
// release that covers every other way out does nothing more.
type admission struct{ st *modelState }

func (a *admission) release() {
	if a.st != nil {
		a.st.release()
		a.st = nil
	}
}

// setLimits handles a LIMITS frame: body = u16 count | count × (u16 name_len | name |
// u32 limit). The frame is parsed whole before anything changes, and each state's
// limit is replaced by one atomic store, so that no request sees a half-applied table.
func (g *gateway) setLimits(body []byte) error {
	bad := errors.New("backend: malformed LIMITS frame")
	if len(body) < 2 {
		return bad
	}
	count := int(binary.LittleEndian.Uint16(body))
	body = body[2:]
	limits := make(map[string]int64, count)
	for i := 0; i < count; i++ {
		if len(body) < 2 {
			return bad
		}
		n := int(binary.LittleEndian.Uint16(body))
		if len(body) < 2+n+4 {
			return bad
		}
		limits[string(body[2:2+n])] = int64(binary.LittleEndian.Uint32(body[2+n:]))
		body = body[2+n+4:]
	}

	old := *g.models.Load()
	next := make(map[string]*modelState, len(old)+len(limits))
	for name, st := range old {
		next[name] = st
	}
	for name := range limits {
		if next[name] == nil {
			next[name] = &modelState{name: name}
		}
	}
	for name, st := range next {
		var lim *modelLimit
		if n := limits[name]; n > 0 {
			message := fmt.Sprintf("model '%s' is overloaded: its queue is full "+
				"(%d requests queued or running); retry later", name, n)
			lim = &modelLimit{n: n, body: frontend.ErrorBody(message), grpcErr: status.Error(g.queueFullCode, message)}
		}
		st.limit.Store(lim)
	}
	g.models.Store(&next)
	return nil
}

// model returns the state of a model named in some LIMITS frame, or nil.
func (g *gateway) model(name string) *modelState { return (*g.models.Load())[name] }
