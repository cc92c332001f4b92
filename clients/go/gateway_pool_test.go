package inferbridge_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	inferbridge "github.com/inferbridge/inferbridge/clients/go"
	"github.com/inferbridge/inferbridge/clients/go/grpcclient"
)

// startPoolGateway runs `inferbridge gateway --config` (the gateway across servers) in
// front of the live test server and returns its REST URL and gRPC address.
func startPoolGateway(t *testing.T) (string, string) {
	return startPoolGatewayWith(t, "", "")
}

// startPoolGatewayWith is startPoolGateway with more fields in its listen block (listenTLS,
// such as "tls: {...}": the REST URL is then https://) and at the top level (extra).
func startPoolGatewayWith(t *testing.T, listenTLS, extra string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	config := filepath.Join(dir, "gateway.yaml")
	listen := "{http: 127.0.0.1:0, grpc: 127.0.0.1:0}"
	scheme := "http://"
	if listenTLS != "" {
		listen = "{http: 127.0.0.1:0, grpc: 127.0.0.1:0, " + listenTLS + "}"
		scheme = "https://"
	}
	spec := fmt.Sprintf("listen: %s\n"+
		"upstreams:\n  - {name: live, rest: '%s', grpc: '%s'}\nhealth: {interval: 1s}\n%s",
		listen, restURL, grpcAddr, extra)
	if err := os.WriteFile(config, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, python, "-m", "inferbridge", "gateway", "--config", config)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
	})
	lines := make(chan string)
	go func() {
		scanner := bufio.NewScanner(out)
		for scanner.Scan() {
			lines <- scanner.Text()
		}
		close(lines)
	}()
	var rest, grpc string
	deadline := time.After(3 * time.Minute) // the first use may build the gateway
	for rest == "" || grpc == "" {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatal("the gateway exited before listening")
			}
			if addr, found := strings.CutPrefix(line, "listening-http "); found {
				rest = scheme + addr
			} else if addr, found := strings.CutPrefix(line, "listening "); found {
				grpc = addr
			}
		case <-deadline:
			t.Fatal("the gateway did not start listening")
		}
	}
	go func() { // keep draining its output
		for range lines {
		}
	}()
	return rest, grpc
}

// The SDK works unchanged through the gateway across servers, over REST (binary and JSON)
// and gRPC, including the gateway's own answers (health, an unknown model).
func TestSDKThroughThePoolGateway(t *testing.T) {
	rest, grpc := startPoolGateway(t)
	restBinary, err := inferbridge.NewRESTClient(rest)
	if err != nil {
		t.Fatal(err)
	}
	restJSON, err := inferbridge.NewRESTClient(rest, inferbridge.WithEncoding(inferbridge.EncodingJSON))
	if err != nil {
		t.Fatal(err)
	}
	grpcClient, err := grpcclient.New(grpc)
	if err != nil {
		t.Fatal(err)
	}
	clients := map[string]inferbridge.Client{"rest_binary": restBinary, "rest_json": restJSON, "grpc": grpcClient}
	for name, c := range clients {
		t.Run(name, func(t *testing.T) {
			defer c.Close()
			ctx := ctxTimeout(t)
			if ready, err := c.Ready(ctx); err != nil || !ready {
				t.Fatalf("ready: %v %v", ready, err)
			}
			in := inferbridge.NewFP32("input", []int64{3, 4}, irisRows)
			resp, err := c.Infer(ctx, &inferbridge.InferRequest{Model: "iris_onnx", ID: "via-gateway", Inputs: []*inferbridge.Tensor{in}})
			if err != nil {
				t.Fatal(err)
			}
			labels, err := resp.Output("label").Int64s()
			if err != nil || !slices.Equal(labels, []int64{0, 1, 2}) || resp.ID != "via-gateway" {
				t.Fatalf("labels %v %v, response %+v", labels, err, resp)
			}
			_, err = c.Infer(ctx, &inferbridge.InferRequest{Model: "no_such_model", Inputs: []*inferbridge.Tensor{in}})
			if !errors.Is(err, inferbridge.ErrNotFound) || !strings.Contains(err.Error(), "no_such_model") {
				t.Fatalf("an unknown model through the gateway: %v", err)
			}
		})
	}
}
