package pool

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// BenchmarkDirect and BenchmarkThroughPool: one REST infer at a time to an in-memory
// upstream, directly and through the pool; the difference is the gateway's cost.
func BenchmarkDirect(b *testing.B) {
	up := newFake(&testing.T{}, "up", "m")
	defer up.srv.Close()
	benchPost(b, up.srv.URL)
}

func BenchmarkThroughPool(b *testing.B) {
	t := &testing.T{}
	up := newFake(t, "up", "m")
	defer up.srv.Close()
	_, srv := newTestPool(t, "", up)
	defer srv.Close()
	benchPost(b, srv.URL)
}

func benchPost(b *testing.B, base string) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resp, err := client.Post(base+"/v2/models/m/infer", "application/json", strings.NewReader(inferBody))
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatal(resp.StatusCode)
		}
	}
}
