package pool

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// The REST forwarding path over h1Client, through the pool.

func TestClientGoneClosesTheUpstreamRequest(t *testing.T) {
	started, gone := make(chan struct{}), make(chan struct{})
	up := &fakeUpstream{name: "up"}
	up.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/repository/index" {
			fmt.Fprint(w, `[{"name": "m", "state": "READY"}]`)
			return
		}
		if strings.HasSuffix(r.URL.Path, "/infer") {
			io.ReadAll(r.Body) // the server watches for a close once the body is read
			close(started)
			select {
			case <-r.Context().Done(): // the gateway closed the connection
				close(gone)
			case <-time.After(10 * time.Second):
			}
		}
	}))
	t.Cleanup(up.srv.Close)
	_, srv := newTestPool(t, "", up)

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/v2/models/m/infer", strings.NewReader(inferBody))
	done := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	<-started
	cancel()
	select {
	case <-gone:
	case <-time.After(5 * time.Second):
		t.Fatal("the client went away and the upstream's request went on")
	}
	<-done
}

func TestPooledConnectionsOfAStoppedUpstreamAreConnectFailures(t *testing.T) {
	a, b := newFake(t, "a", "m"), newFake(t, "b", "m")
	p, srv := newTestPool(t, "balancer: round-robin\n", a, b)
	for i := 0; i < 4; i++ { // keep-alive connections to both in the pool
		if code, body := infer(t, srv, "/v2/models/m/infer", inferBody); code != 200 {
			t.Fatalf("warm-up %d: %d %s", i, code, body)
		}
	}
	a.srv.Close() // closes its idle connections: the gateway's pooled ones go stale
	time.Sleep(20 * time.Millisecond)
	for i := 0; i < 6; i++ {
		if code, body := infer(t, srv, "/v2/models/m/infer", inferBody); code != 200 || !strings.Contains(body, `"b"`) {
			t.Fatalf("request %d after a stopped: %d %s", i, code, body)
		}
	}
	connect := counterValue(t, p.metrics.retries.WithLabelValues("connect-failure"))
	reset := counterValue(t, p.metrics.retries.WithLabelValues("reset"))
	if connect == 0 || reset != 0 {
		t.Fatalf("retries: %g connect-failure, %g reset; want connect failures only (nothing reached a)", connect, reset)
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
