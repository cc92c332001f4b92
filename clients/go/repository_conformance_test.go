package inferbridge_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	inferbridge "github.com/inferbridge/inferbridge/clients/go"
	"github.com/inferbridge/inferbridge/clients/go/grpcclient"
	"github.com/inferbridge/inferbridge/clients/go/internal/testserver"
)

// The explicit-mode server: started by the first test that needs it, on a repository of
// iris_onnx and digits with only digits loaded at start (--load-model digits).
var explicit struct {
	once   sync.Once
	server *testserver.Server
	repo   string
	skip   string
	err    error
}

// explicitServer returns the explicit-mode server and its repository directory. It skips
// the test only when `inferbridge serve --help` has no --model-control-mode (the server
// side has not landed).
func explicitServer(t *testing.T) (*testserver.Server, string) {
	t.Helper()
	explicit.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		defer cancel()
		ok, err := testserver.ServeHasFlag(ctx, python, "--model-control-mode")
		if err != nil {
			explicit.err = err
			return
		}
		if !ok {
			explicit.skip = "inferbridge serve has no --model-control-mode yet"
			return
		}
		repo, err := os.MkdirTemp("", "inferbridge-go-explicit-")
		if err != nil {
			explicit.err = err
			return
		}
		if err := testserver.LinkExamples(ctx, python, repo, "iris_onnx", "digits"); err != nil {
			_ = os.RemoveAll(repo)
			explicit.err = err
			return
		}
		server, err := testserver.Start(python, repo, 3*time.Minute, "--model-control-mode", "explicit", "--load-model", "digits")
		if err != nil {
			_ = os.RemoveAll(repo)
			explicit.err = fmt.Errorf("cannot start inferbridge in explicit mode: %w", err)
			return
		}
		explicit.server, explicit.repo = server, repo
		atExit.Lock()
		atExit.funcs = append(atExit.funcs, func(failed bool) {
			if failed {
				fmt.Printf("--- explicit-mode server output:\n%s", server.Output())
			}
			server.Stop()
			_ = os.RemoveAll(repo)
		})
		atExit.Unlock()
	})
	if explicit.skip != "" {
		t.Skip(explicit.skip)
	}
	if explicit.err != nil {
		t.Fatal(explicit.err)
	}
	return explicit.server, explicit.repo
}

// repositoryClients are a REST and a gRPC client of server.
func repositoryClients(t *testing.T, restURL, grpcAddr string) map[string]inferbridge.Client {
	t.Helper()
	rest, err := inferbridge.NewRESTClient(restURL)
	if err != nil {
		t.Fatal(err)
	}
	grpc, err := grpcclient.New(grpcAddr)
	if err != nil {
		t.Fatal(err)
	}
	clients := map[string]inferbridge.Client{"rest": rest, "grpc": grpc}
	t.Cleanup(func() {
		for _, c := range clients {
			_ = c.Close()
		}
	})
	return clients
}

func indexHas(index []inferbridge.ModelIndex, name, version, state string) bool {
	return slices.ContainsFunc(index, func(e inferbridge.ModelIndex) bool {
		return e.Name == name && (version == "" || e.Version == version) && e.State == state
	})
}

func inferIris(ctx context.Context, c inferbridge.Client, model string) error {
	in := inferbridge.NewFP32("input", []int64{3, 4}, irisRows)
	resp, err := c.Infer(ctx, &inferbridge.InferRequest{Model: model, Inputs: []*inferbridge.Tensor{in}})
	if err != nil {
		return err
	}
	labels, err := resp.Output("label").Int64s()
	if err != nil || !slices.Equal(labels, []int64{0, 1, 2}) {
		return fmt.Errorf("labels %v, %v; want [0 1 2]", labels, err)
	}
	return nil
}

func statsOf(t *testing.T, ctx context.Context, c inferbridge.Client, model string) inferbridge.ModelStatistics {
	t.Helper()
	stats, err := c.ModelStatistics(ctx, model, "")
	if err != nil || len(stats) != 1 || stats[0].Name != model || stats[0].Version != "1" {
		t.Fatalf("statistics of %s: %+v %v", model, stats, err)
	}
	return stats[0]
}

// waitNotFound waits (briefly) until inferring on model answers NOT_FOUND.
func waitNotFound(t *testing.T, ctx context.Context, c inferbridge.Client, model string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := inferIris(ctx, c, model)
		if errors.Is(err, inferbridge.ErrNotFound) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("infer on unloaded %s: %v, want NOT_FOUND", model, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRepositoryLoadInferUnload: in explicit mode, a model that is not loaded loads, shows
// READY in the index, infers, counts its inferences, unloads, and is then NOT_FOUND.
func TestRepositoryLoadInferUnload(t *testing.T) {
	server, _ := explicitServer(t)
	for name, c := range repositoryClients(t, server.RESTURL, server.GRPCAddr) {
		t.Run(name, func(t *testing.T) {
			ctx := ctxTimeout(t)
			index, err := c.RepositoryIndex(ctx, false)
			if err != nil || !indexHas(index, "digits", "1", inferbridge.StateReady) || indexHas(index, "iris_onnx", "", inferbridge.StateReady) {
				t.Fatalf("index at start (digits loaded by --load-model, iris_onnx not): %+v %v", index, err)
			}
			if err := inferIris(ctx, c, "iris_onnx"); !errors.Is(err, inferbridge.ErrNotFound) {
				t.Fatalf("infer before the load: %v, want NOT_FOUND", err)
			}

			if err := c.LoadModel(ctx, "iris_onnx"); err != nil {
				t.Fatal(err)
			}
			ready, err := c.RepositoryIndex(ctx, true)
			if err != nil || !indexHas(ready, "iris_onnx", "1", inferbridge.StateReady) {
				t.Fatalf("ready index after the load: %+v %v", ready, err)
			}
			for _, e := range ready {
				if e.State != inferbridge.StateReady {
					t.Fatalf("the ready-only index lists %+v", e)
				}
			}
			if ok, err := c.ModelReady(ctx, "iris_onnx", ""); err != nil || !ok {
				t.Fatalf("model ready after the load: %v %v", ok, err)
			}

			before := statsOf(t, ctx, c, "iris_onnx")
			if err := inferIris(ctx, c, "iris_onnx"); err != nil {
				t.Fatal(err)
			}
			after := statsOf(t, ctx, c, "iris_onnx")
			if after.InferenceCount <= before.InferenceCount || after.ExecutionCount <= before.ExecutionCount ||
				after.InferenceStats.Success.Count <= before.InferenceStats.Success.Count ||
				after.InferenceStats.Success.Ns <= before.InferenceStats.Success.Ns || after.LastInference == 0 {
				t.Fatalf("statistics did not grow with an inference:\n before %+v\n after  %+v", before, after)
			}
			if v, err := c.ModelStatistics(ctx, "iris_onnx", "1"); err != nil || len(v) != 1 || v[0].InferenceCount != after.InferenceCount {
				t.Fatalf("statistics of version 1: %+v %v", v, err)
			}
			all, err := c.ModelStatistics(ctx, "", "")
			if err != nil || !slices.ContainsFunc(all, func(s inferbridge.ModelStatistics) bool { return s.Name == "iris_onnx" }) ||
				!slices.ContainsFunc(all, func(s inferbridge.ModelStatistics) bool { return s.Name == "digits" }) {
				t.Fatalf("statistics of every model: %+v %v", all, err)
			}

			if err := c.UnloadModel(ctx, "iris_onnx"); err != nil {
				t.Fatal(err)
			}
			waitNotFound(t, ctx, c, "iris_onnx")
			if ready, err := c.RepositoryIndex(ctx, true); err != nil || indexHas(ready, "iris_onnx", "", inferbridge.StateReady) {
				t.Fatalf("ready index after the unload: %+v %v", ready, err)
			}
			if _, err := c.ModelStatistics(ctx, "no_such_model", ""); !errors.Is(err, inferbridge.ErrNotFound) {
				t.Fatalf("statistics of an unknown model: %v", err)
			}
		})
	}
}

// TestRepositoryLoadFromRequest: a model sent in the load (config and files, base64 over
// REST and bytes over gRPC) serves without being in the repository.
func TestRepositoryLoadFromRequest(t *testing.T) {
	server, repo := explicitServer(t)
	onnx, err := os.ReadFile(filepath.Join(repo, "iris_onnx", "1", "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range repositoryClients(t, server.RESTURL, server.GRPCAddr) {
		t.Run(name, func(t *testing.T) {
			ctx := ctxTimeout(t)
			model := "iris_sent_" + name
			err := c.LoadModel(ctx, model, inferbridge.WithModelConfigValue(map[string]any{"runtime": "onnx"}),
				inferbridge.WithModelFiles(map[string][]byte{"1/model.onnx": onnx}))
			if err != nil {
				t.Fatal(err)
			}
			if err := inferIris(ctx, c, model); err != nil {
				t.Fatal(err)
			}
			if err := c.UnloadModel(ctx, model, inferbridge.UnloadDependents()); err != nil {
				t.Fatal(err)
			}
			waitNotFound(t, ctx, c, model)
		})
	}
}

// TestRepositoryLoadErrors: bad loads are the SDK's error kinds, with the server's status
// and message.
func TestRepositoryLoadErrors(t *testing.T) {
	server, _ := explicitServer(t)
	for name, c := range repositoryClients(t, server.RESTURL, server.GRPCAddr) {
		t.Run(name, func(t *testing.T) {
			ctx := ctxTimeout(t)
			for what, tc := range map[string]struct {
				err      error
				sentinel error
			}{
				"unknown model directory": {c.LoadModel(ctx, "no_such_model"), inferbridge.ErrNotFound},
				"malformed config JSON":   {c.LoadModel(ctx, "iris_onnx", inferbridge.WithModelConfig(`{"runtime": "onnx"`)), inferbridge.ErrInvalidArgument},
				"files without a config":  {c.LoadModel(ctx, "iris_onnx", inferbridge.WithModelFiles(map[string][]byte{"1/model.onnx": {1}})), inferbridge.ErrInvalidArgument},
			} {
				var e *inferbridge.Error
				if !errors.Is(tc.err, tc.sentinel) || !errors.As(tc.err, &e) || e.Message == "" || (e.HTTPStatus == 0 && e.GRPCCode == 0) {
					t.Errorf("%s: %v, want %v from the server", what, tc.err, tc.sentinel)
				}
			}
			// The failed loads left iris_onnx unloaded.
			if index, err := c.RepositoryIndex(ctx, true); err != nil || indexHas(index, "iris_onnx", "", inferbridge.StateReady) {
				t.Fatalf("ready index after failed loads: %+v %v", index, err)
			}
		})
	}
}

// TestRepositoryNotModifiable: the default model control mode ("none", the main test
// server's) refuses loads and unloads with FAILED_PRECONDITION (REST 403).
func TestRepositoryNotModifiable(t *testing.T) {
	explicitServer(t) // for its skip: the main server has no model control modes before then
	for name, c := range repositoryClients(t, restURL, grpcAddr) {
		t.Run(name, func(t *testing.T) {
			ctx := ctxTimeout(t)
			for what, err := range map[string]error{"load": c.LoadModel(ctx, "iris"), "unload": c.UnloadModel(ctx, "iris")} {
				var e *inferbridge.Error
				if !errors.Is(err, inferbridge.ErrFailedPrecondition) || !errors.As(err, &e) ||
					!(e.HTTPStatus == 403 || e.GRPCCode == 9) || !strings.Contains(e.Message, "not modifiable") {
					t.Errorf("%s in mode none: %v", what, err)
				}
			}
			if ok, err := c.ModelReady(ctx, "iris", ""); err != nil || !ok {
				t.Fatalf("iris after the refused unload: %v %v", ok, err)
			}
		})
	}
}
