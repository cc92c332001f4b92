package local

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"

	"github.com/inferbridge/inferbridge/gateway/internal/frontend"
)

// okGateway serves HTTP in front of a backend that answers every HTTP frame 200 "ok"
// at once, and returns the gateway's http://HOST:PORT.
func okGateway(tb testing.TB, maxRecvBytes int) string {
	url, _ := okGateways(tb, maxRecvBytes)
	return url
}

// okGateways is okGateway that also answers every CALL with an OK "ok" REPLY, and
// returns the gRPC address too.
func okGateways(tb testing.TB, maxRecvBytes int) (string, string) {
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
			switch fr.kind {
			case kindHTTP:
				writeBackendFrame(bw, kindReplyHTTP, fr.id, ok)
			case kindCall:
				writeBackendFrame(bw, kindReply, fr.id, []byte{0, 'o', 'k'})
			}
			if br.Buffered() == 0 && bw.Flush() != nil {
				return
			}
		}
	}()
	return "http://" + httpLis.Addr().String(), lis.Addr().String()
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

// BenchmarkGRPCUnary is one small unary call through the gateway and back, without
// forwarded metadata: the gRPC hot path, client included.
func BenchmarkGRPCUnary(b *testing.B) {
	_, addr := okGateways(b, 1<<20)
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(frontend.Codec{})))
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Close()
	req := []byte("\x0a\x01m")
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		in := &frontend.RawMsg{Data: mem.BufferSlice{mem.SliceBuffer(req)}}
		var out frontend.RawMsg
		if err := cc.Invoke(ctx, inferMethod, in, &out); err != nil {
			b.Fatal(err)
		}
		out.Data.Free()
	}
}
