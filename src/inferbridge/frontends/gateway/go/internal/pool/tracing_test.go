package pool

import (
	"net/http"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func attrs(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value
	}
	return m
}

func TestSpansPerAttemptAndTheirTraceparentUpstream(t *testing.T) {
	bad := newFake(t, "bad", "m")
	good := newFake(t, "good", "m")
	bad.status.Store(503)
	p, srv := newTestPool(t, "balancer: round-robin\nretries: {backoff_base: 1ms, backoff_max: 2ms}\n"+
		"outlier: {consecutive_failures: 0}\nbreaker: {consecutive_failures: 0, failure_rate: 0}\n", bad, good)
	spans := tracetest.NewSpanRecorder()
	p.tracing = newTracingTo(spans, 0) // rate 0: only a sampled caller is traced
	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"

	// Round-robin from the first upstream: some request starts on bad and is retried.
	for i := 0; i < 2; i++ {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v2/models/m/infer", strings.NewReader(inferBody))
		req.Header.Set("traceparent", "00-"+traceID+"-"+parentID+"-01")
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("infer: %v %v", resp, err)
		}
		resp.Body.Close()
	}
	ended := spans.Ended()
	var server []sdktrace.ReadOnlySpan
	attempts := map[string]sdktrace.ReadOnlySpan{} // by span ID
	for _, s := range ended {
		if s.SpanContext().TraceID().String() != traceID {
			t.Fatalf("span %q in trace %s, want the caller's %s", s.Name(), s.SpanContext().TraceID(), traceID)
		}
		switch s.SpanKind() {
		case trace.SpanKindServer:
			server = append(server, s)
			if s.Parent().SpanID().String() != parentID || s.Name() != "POST /v2/models/m/infer" {
				t.Fatalf("request span %q has parent %s, want the caller's %s", s.Name(), s.Parent().SpanID(), parentID)
			}
		case trace.SpanKindClient:
			attempts[s.SpanContext().SpanID().String()] = s
		}
	}
	if len(server) != 2 || len(attempts) != 3 {
		t.Fatalf("%d request spans and %d attempt spans, want 2 and 3 (one request retried)", len(server), len(attempts))
	}
	retried := false
	for _, s := range attempts {
		a := attrs(s)
		up, try, code := a["inferbridge.upstream"].AsString(), a["inferbridge.attempt"].AsInt64(), a["http.response.status_code"].AsInt64()
		switch up {
		case "bad":
			if code != 503 || a["inferbridge.retry_reason"].AsString() != "503" || try != 1 || s.Status().Code.String() != "Error" {
				t.Fatalf("the attempt on bad: %v, status %v", a, s.Status())
			}
			retried = true
		case "good":
			if code != 200 || a["inferbridge.outcome"].AsString() != "ok" || a["inferbridge.retry_reason"].Type() != attribute.INVALID {
				t.Fatalf("the attempt on good: %v", a)
			}
		default:
			t.Fatalf("attempt on %q", up)
		}
		isChild := false
		for _, r := range server {
			isChild = isChild || s.Parent().SpanID() == r.SpanContext().SpanID()
		}
		if !isChild {
			t.Fatalf("attempt span %v is not a child of a request span", a)
		}
	}
	if !retried {
		t.Fatalf("no attempt on bad")
	}
	// What each upstream got as traceparent is its attempt's span, sampled.
	for _, f := range []*fakeUpstream{bad, good} {
		f.mu.Lock()
		for _, h := range f.headers {
			tp := strings.Split(h.Get("traceparent"), "-")
			if len(tp) != 4 || tp[1] != traceID || tp[3] != "01" {
				t.Fatalf("%s got traceparent %q", f.name, h.Get("traceparent"))
			}
			s := attempts[tp[2]]
			if s == nil || attrs(s)["inferbridge.upstream"].AsString() != f.name {
				t.Fatalf("%s got parent %s, which is not its attempt's span", f.name, tp[2])
			}
		}
		f.mu.Unlock()
	}

	// Tracing off: the caller's traceparent reaches the upstream as it came.
	p.tracing = nil
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v2/models/m/infer", strings.NewReader(inferBody))
	req.Header.Set("traceparent", "00-"+traceID+"-"+parentID+"-01")
	good.status.Store(0)
	bad.status.Store(0)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("infer: %v %v", resp, err)
	}
	resp.Body.Close()
	var got []string
	for _, f := range []*fakeUpstream{bad, good} {
		f.mu.Lock()
		got = append(got, f.headers[len(f.headers)-1].Get("traceparent"))
		f.mu.Unlock()
	}
	// The third request went to one of the two (round-robin): its traceparent is the
	// caller's, not a span of the gateway's.
	if got[0] != "00-"+traceID+"-"+parentID+"-01" && got[1] != "00-"+traceID+"-"+parentID+"-01" {
		t.Fatalf("with tracing off the upstream got %v, want the caller's traceparent unchanged", got)
	}
	if n := len(spans.Ended()); n != len(ended) {
		t.Fatalf("%d spans made with tracing off", n-len(ended))
	}
}
