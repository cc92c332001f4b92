package local

import "sync"

// registry holds the calls in progress of one kind (open gRPC streams, streamed REST
// replies) by request id; the frame reader and the handlers meet in it.
type registry[T any] struct {
	mu sync.Mutex
	m  map[uint64]*T
}

func (r *registry[T]) add(id uint64, v *T) {
	r.mu.Lock()
	if r.m == nil {
		r.m = make(map[uint64]*T)
	}
	r.m[id] = v
	r.mu.Unlock()
}

func (r *registry[T]) get(id uint64) *T {
	r.mu.Lock()
	v := r.m[id]
	r.mu.Unlock()
	return v
}

// remove unregisters id and returns what was registered (nil when nothing was).
func (r *registry[T]) remove(id uint64) *T {
	r.mu.Lock()
	v := r.m[id]
	delete(r.m, id)
	r.mu.Unlock()
	return v
}
