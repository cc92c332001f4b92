package local

import (
	"context"
	"encoding/binary"
	"net/http"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
)

// TestLimitsReplacement runs the model set changing under traffic: every LIMITS frame
// replaces the whole table, and requests admitted under an older table stay counted
// until they are answered.
func TestLimitsReplacement(t *testing.T) {
	h := newHarness(t, config{maxRecvBytes: 1 << 20})
	client := &http.Client{Transport: &http.Transport{}}
	httpInfer := func(model string) <-chan httpResult {
		return h.do(client, mustRequest(t, "POST", h.httpURL+"/v2/models/"+model+"/infer", strings.NewReader("{}")))
	}
	grpcInfer := func(model string) <-chan result {
		return h.invoke(context.Background(), inferMethod, inferRequest(model))
	}
	refusedHTTP := func(model string) {
		t.Helper()
		if res := waitHTTP(t, httpInfer(model)); res.status != 429 {
			t.Fatalf("%s: got %+v, want 429", model, res)
		}
	}
	refusedGRPC := func(model string) {
		t.Helper()
		wantCode(t, wait(t, grpcInfer(model)).err, codes.ResourceExhausted, "model '"+model+"' is overloaded")
	}
	count := func(model string) int64 {
		t.Helper()
		st := h.g.model(model)
		if st == nil {
			t.Fatalf("no state for %s", model)
		}
		return st.count.Load()
	}
	var pendingHTTP []<-chan httpResult
	var pendingGRPC []<-chan result
	var ids []uint64
	forwardHTTP := func(model string) {
		t.Helper()
		pendingHTTP = append(pendingHTTP, httpInfer(model))
		ids = append(ids, h.next().id)
	}
	forwardGRPC := func(model string) {
		t.Helper()
		pendingGRPC = append(pendingGRPC, grpcInfer(model))
		ids = append(ids, h.next().id)
	}

	// a and b at 1, each with one request outstanding.
	h.sendLimits(map[string]uint32{"a": 1, "b": 1})
	forwardHTTP("a")
	forwardGRPC("b")
	refusedHTTP("a")
	refusedGRPC("b")

	// a dropped, b raised to 2: a is unlimited, b's outstanding request still counts.
	h.sendLimits(map[string]uint32{"b": 2})
	forwardHTTP("a")
	forwardGRPC("a")
	forwardHTTP("b")
	refusedGRPC("b")
	refusedHTTP("b")
	if count("a") != 3 || count("b") != 2 {
		t.Fatalf("outstanding a %d, b %d; want 3 and 2", count("a"), count("b"))
	}

	// a back at 2 with three outstanding (two admitted with no limit): refused; b
	// unlimited.
	h.sendLimits(map[string]uint32{"a": 2, "c": 0})
	refusedHTTP("a")
	refusedGRPC("a")
	forwardGRPC("b")

	// Every answer releases the counter its request took, across the three tables.
	for _, id := range ids {
		h.send(kindReply, id, []byte{0}) // a REPLY for gRPC ids; ignored for HTTP ids
		h.replyHTTP(id, 200, nil, nil)   // and the other way round
	}
	for _, d := range pendingHTTP {
		if res := waitHTTP(t, d); res.err != nil || res.status != 200 {
			t.Fatalf("response %+v", res)
		}
	}
	for _, d := range pendingGRPC {
		if r := wait(t, d); r.err != nil {
			t.Fatal(r.err)
		}
	}
	for _, model := range []string{"a", "b", "c"} {
		if n := count(model); n != 0 {
			t.Fatalf("%s: %d outstanding after every reply, want 0", model, n)
		}
	}
	ids, pendingHTTP, pendingGRPC = nil, nil, nil
	forwardGRPC("a")
	forwardHTTP("a")
	refusedHTTP("a")

	// An empty table lifts every limit.
	h.sendLimits(map[string]uint32{})
	forwardHTTP("a")
	forwardGRPC("c")
	for _, id := range ids {
		h.send(kindReply, id, []byte{0})
		h.replyHTTP(id, 200, nil, nil)
	}
	for _, d := range pendingHTTP {
		waitHTTP(t, d)
	}
	for _, d := range pendingGRPC {
		wait(t, d)
	}
}

func TestSetLimitsFrames(t *testing.T) {
	entry := func(name string, limit uint32) []byte {
		b := binary.LittleEndian.AppendUint16(nil, uint16(len(name)))
		return binary.LittleEndian.AppendUint32(append(b, name...), limit)
	}
	frame := func(count uint16, entries ...[]byte) []byte {
		b := binary.LittleEndian.AppendUint16(nil, count)
		for _, e := range entries {
			b = append(b, e...)
		}
		return b
	}
	for _, tc := range []struct {
		name  string
		body  []byte
		valid bool
		want  map[string]int64 // limit by model; 0 = none. Starts from {old: 4}
	}{
		{"empty table", frame(0), true, map[string]int64{"old": 0}},
		{"replaced", frame(2, entry("m", 3), entry("n", 0)), true, map[string]int64{"old": 0, "m": 3, "n": 0}},
		{"kept and changed", frame(1, entry("old", 9)), true, map[string]int64{"old": 9}},
		{"no count", nil, false, map[string]int64{"old": 4}},
		{"count over entries", frame(2, entry("m", 3)), false, map[string]int64{"old": 4}},
		{"truncated entry", frame(1, entry("m", 3)[:4]), false, map[string]int64{"old": 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := &gateway{}
			g.models.Store(&map[string]*modelState{})
			if err := g.setLimits(frame(1, entry("old", 4))); err != nil {
				t.Fatal(err)
			}
			err := g.setLimits(tc.body)
			if (err == nil) != tc.valid {
				t.Fatalf("setLimits: %v, want valid=%v", err, tc.valid)
			}
			for name, want := range tc.want {
				st := g.model(name)
				if st == nil {
					t.Fatalf("no state for %s", name)
				}
				got := int64(0)
				if lim := st.limit.Load(); lim != nil {
					got = lim.n
				}
				if got != want {
					t.Errorf("%s: limit %d, want %d", name, got, want)
				}
			}
			if len(*g.models.Load()) != len(tc.want) {
				t.Errorf("states %v, want %v", *g.models.Load(), tc.want)
			}
		})
	}
}

// TestLimitsQueueFullCode: --queue-full-code unavailable answers a ModelInfer over its
// model's bound with UNAVAILABLE (Triton's code, which KServe's client retries); REST
// stays 429.
func TestLimitsQueueFullCode(t *testing.T) {
	h := newHarness(t, config{maxRecvBytes: 1 << 20, queueFullCode: codes.Unavailable})
	h.sendLimits(map[string]uint32{"m": 1})
	first := h.invoke(context.Background(), inferMethod, inferRequest("m"))
	f := h.next()
	wantCode(t, wait(t, h.invoke(context.Background(), inferMethod, inferRequest("m"))).err,
		codes.Unavailable, "model 'm' is overloaded")
	client := &http.Client{Transport: &http.Transport{}}
	res := waitHTTP(t, h.do(client, mustRequest(t, "POST", h.httpURL+"/v2/models/m/infer", strings.NewReader("{}"))))
	if res.status != 429 {
		t.Fatalf("REST over the bound: got %+v, want 429", res)
	}
	h.reply(f.id, codes.OK, nil)
	if r := wait(t, first); r.err != nil {
		t.Fatalf("the admitted call: %v", r.err)
	}
}
