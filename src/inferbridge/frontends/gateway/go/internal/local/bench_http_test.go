package local

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"testing"
)

// okGateway serves HTTP in front of a backend that answers every HTTP frame 200 "ok"
// at once, and returns the gateway's http://HOST:PORT.
func okGateway(tb testing.TB, maxRecvBytes int) string {
	tb.Helper()
	gwFile, beFile := socketpair(tb)
	be := fileConn(tb, beFile)
	gwConn := fileConn(tb, gwFile)
	tb.Cleanup(func() { be.Close(); gwConn.Close() })
	if err := writeBackendFrame(be, kindDescriptors, 0, testDescriptors(tb)); err != nil {
		tb.Fatal(err)
	}
	g, err := newGateway(gwConn, config{maxRecvBytes: maxRecvBytes})
	if err != nil {
		tb.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	httpLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go g.run(lis, httpLis)
	go func() {
		br := bufio.NewReader(be)
		bw := bufio.NewWriter(be)
		ok := []byte{200, 0, 0, 0, 'o', 'k'}
		for {
			fr, err := readBackendFrame(br)
			if err != nil {
				return
			}
			if fr.kind == kindHTTP {
				writeBackendFrame(bw, kindReplyHTTP, fr.id, ok)
			}
			if br.Buffered() == 0 && bw.Flush() != nil {
				return
			}
		}
	}()
	return "http://" + httpLis.Addr().String()
}

// BenchmarkHTTPUnary is one small REST infer request through the gateway and back
// (keep-alive, one connection): the single-server hot path, client included.
func BenchmarkHTTPUnary(b *testing.B) {
	url := okGateway(b, 1<<20) + "/v2/models/m/infer"
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	body := []byte(`{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}`)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resp, err := client.Post(url, "application/json", bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatal(resp.Status)
		}
	}
}
