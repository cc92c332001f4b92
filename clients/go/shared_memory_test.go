package inferbridge_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	inferbridge "github.com/inferbridge/inferbridge/clients/go"
	"github.com/inferbridge/inferbridge/clients/go/grpcclient"
)

// sharedMemoryClient is what both clients offer for system shared memory and logging.
type sharedMemoryClient interface {
	RegisterSystemSharedMemory(ctx context.Context, name, key string, offset, byteSize uint64) error
	SystemSharedMemoryStatus(ctx context.Context, name string) ([]inferbridge.SharedMemoryRegion, error)
	UnregisterSystemSharedMemory(ctx context.Context, name string) error
	LogSettings(ctx context.Context) (*inferbridge.LogSettings, error)
	UpdateLogSettings(ctx context.Context, update inferbridge.LogSettingsUpdate) (*inferbridge.LogSettings, error)
}

func bothExtensionClients(t *testing.T) map[string]sharedMemoryClient {
	t.Helper()
	rest, err := inferbridge.NewRESTClient(restURL)
	if err != nil {
		t.Fatal(err)
	}
	grpc, err := grpcclient.New(grpcAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rest.Close(); grpc.Close() })
	return map[string]sharedMemoryClient{"rest": rest, "grpc": grpc}
}

// shmObject creates /dev/shm/<name> of size bytes, as shm_open and ftruncate would.
func shmObject(t *testing.T, name string, size int) string {
	t.Helper()
	path := filepath.Join("/dev/shm", name)
	if err := os.WriteFile(path, make([]byte, size), 0o600); err != nil {
		t.Skipf("no /dev/shm here: %v", err)
	}
	t.Cleanup(func() { os.Remove(path) })
	return "/" + name
}

func TestSystemSharedMemoryRegisterStatusUnregister(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for protocol, c := range bothExtensionClients(t) {
		t.Run(protocol, func(t *testing.T) {
			key := shmObject(t, "ib_go_sdk_"+protocol, 256)
			if err := c.UnregisterSystemSharedMemory(ctx, ""); err != nil {
				t.Fatal(err)
			}
			if err := c.RegisterSystemSharedMemory(ctx, "a", key, 0, 128); err != nil {
				t.Fatal(err)
			}
			if err := c.RegisterSystemSharedMemory(ctx, "b", key, 128, 128); err != nil {
				t.Fatal(err)
			}
			got, err := c.SystemSharedMemoryStatus(ctx, "")
			if err != nil {
				t.Fatal(err)
			}
			want := []inferbridge.SharedMemoryRegion{
				{Name: "a", Key: key, Offset: 0, ByteSize: 128},
				{Name: "b", Key: key, Offset: 128, ByteSize: 128},
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("status: got %+v, want %+v", got, want)
			}
			if one, err := c.SystemSharedMemoryStatus(ctx, "b"); err != nil || len(one) != 1 || one[0] != want[1] {
				t.Fatalf("status of b: %+v, %v", one, err)
			}
			err = c.RegisterSystemSharedMemory(ctx, "a", key, 0, 128)
			if !errors.Is(err, inferbridge.ErrInvalidArgument) || !strings.Contains(err.Error(), "already registered") {
				t.Fatalf("registering twice: %v", err)
			}
			err = c.RegisterSystemSharedMemory(ctx, "c", key, 200, 100)
			if !errors.Is(err, inferbridge.ErrInvalidArgument) || !strings.Contains(err.Error(), "beyond the 256 bytes") {
				t.Fatalf("a window beyond the object: %v", err)
			}
			if _, err := c.SystemSharedMemoryStatus(ctx, "nope"); !errors.Is(err, inferbridge.ErrNotFound) {
				t.Fatalf("status of an unknown region: %v", err)
			}
			if err := c.UnregisterSystemSharedMemory(ctx, "a"); err != nil {
				t.Fatal(err)
			}
			if err := c.UnregisterSystemSharedMemory(ctx, ""); err != nil {
				t.Fatal(err)
			}
			if left, err := c.SystemSharedMemoryStatus(ctx, ""); err != nil || len(left) != 0 {
				t.Fatalf("after unregistering all: %+v, %v", left, err)
			}
		})
	}
}

func TestLogSettingsRoundTrip(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for protocol, c := range bothExtensionClients(t) {
		t.Run(protocol, func(t *testing.T) {
			before, err := c.LogSettings(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if before.File != "" || before.Format == "" {
				t.Fatalf("log settings: %+v", before)
			}
			verbose, off, iso := uint32(1), false, "ISO8601"
			after, err := c.UpdateLogSettings(ctx, inferbridge.LogSettingsUpdate{VerboseLevel: &verbose, Warning: &off, Format: &iso})
			if err != nil {
				t.Fatal(err)
			}
			want := *before
			want.VerboseLevel, want.Warning, want.Format = 1, false, "ISO8601"
			if *after != want {
				t.Fatalf("after the update: got %+v, want %+v", *after, want)
			}
			bad := "xml"
			if _, err := c.UpdateLogSettings(ctx, inferbridge.LogSettingsUpdate{Format: &bad}); !errors.Is(err, inferbridge.ErrInvalidArgument) {
				t.Fatalf("a bad format: %v", err)
			}
			restore := inferbridge.LogSettingsUpdate{
				Info: &before.Info, Warning: &before.Warning, Error: &before.Error,
				VerboseLevel: &before.VerboseLevel, Format: &before.Format,
			}
			if back, err := c.UpdateLogSettings(ctx, restore); err != nil || *back != *before {
				t.Fatalf("restoring: %+v, %v", back, err)
			}
		})
	}
}

func TestTraceSettingsWithoutTracing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rest, err := inferbridge.NewRESTClient(restURL)
	if err != nil {
		t.Fatal(err)
	}
	defer rest.Close()
	grpc, err := grpcclient.New(grpcAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer grpc.Close()
	type traceClient interface {
		TraceSettings(ctx context.Context, model string) (*inferbridge.TraceSettings, error)
		UpdateTraceSettings(ctx context.Context, model string, changes map[string][]string) (*inferbridge.TraceSettings, error)
	}
	want := &inferbridge.TraceSettings{Level: []string{"OFF"}, Rate: "1", Count: "-1", LogFrequency: "0", Mode: "opentelemetry"}
	for protocol, c := range map[string]traceClient{"rest": rest, "grpc": grpc} {
		t.Run(protocol, func(t *testing.T) {
			got, err := c.TraceSettings(ctx, "iris")
			if err != nil || !reflect.DeepEqual(got, want) {
				t.Fatalf("trace settings: %+v, %v", got, err)
			}
			if _, err := c.UpdateTraceSettings(ctx, "", map[string][]string{"trace_level": {"OFF"}}); err != nil {
				t.Fatal(err)
			}
			_, err = c.UpdateTraceSettings(ctx, "", map[string][]string{"trace_level": {"TIMESTAMPS"}})
			if !errors.Is(err, inferbridge.ErrInvalidArgument) || !strings.Contains(err.Error(), "tracing is off on this server") {
				t.Fatalf("turning tracing on: %v", err)
			}
			_, err = c.UpdateTraceSettings(ctx, "", map[string][]string{"trace_colour": {"red"}})
			if !errors.Is(err, inferbridge.ErrInvalidArgument) {
				t.Fatalf("an unknown key: %v", err)
			}
		})
	}
}

func TestInferThroughSystemSharedMemory(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	restJSON, err := inferbridge.NewRESTClient(restURL, inferbridge.WithEncoding(inferbridge.EncodingJSON))
	if err != nil {
		t.Fatal(err)
	}
	defer restJSON.Close()
	type inferClient interface {
		sharedMemoryClient
		Infer(ctx context.Context, req *inferbridge.InferRequest) (*inferbridge.InferResponse, error)
	}
	clients := map[string]inferClient{"rest-json": restJSON}
	for protocol, c := range bothExtensionClients(t) {
		clients[protocol] = c.(inferClient)
	}
	values := []float32{1.5, -2, 3.25, 4, 5, 6e7}
	raw := inferbridge.NewFP32("x", []int64{2, 3}, values).Raw
	for protocol, c := range clients {
		t.Run(protocol, func(t *testing.T) {
			name := "ib_go_sdk_infer_" + strings.ReplaceAll(protocol, "-", "_")
			key := shmObject(t, name, 64)
			path := filepath.Join("/dev/shm", name)
			if err := os.WriteFile(path, append(append([]byte{}, raw...), make([]byte, 40)...), 0o600); err != nil {
				t.Fatal(err)
			}
			region := "go_" + name
			if err := c.RegisterSystemSharedMemory(ctx, region, key, 0, 64); err != nil {
				t.Fatal(err)
			}
			defer c.UnregisterSystemSharedMemory(ctx, region)
			req := &inferbridge.InferRequest{
				Model:  "identity_fp32",
				Inputs: []*inferbridge.Tensor{inferbridge.NewSharedMemoryTensor("INPUT0", inferbridge.FP32, []int64{2, 3}, region, 24, 0)},
			}
			req.OutputToSharedMemory("OUTPUT0", region, 32, 32)
			resp, err := c.Infer(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			out := resp.Output("OUTPUT0")
			if !out.InSharedMemory() || !reflect.DeepEqual(out.Shape, []int64{2, 3}) || len(out.Raw) != 0 {
				t.Fatalf("output: %+v", out)
			}
			written, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			got := inferbridge.NewRaw("OUTPUT0", inferbridge.FP32, []int64{2, 3}, written[32:56])
			floats, err := got.Float32s()
			if err != nil || !reflect.DeepEqual(floats, values) {
				t.Fatalf("the region holds %v (%v), want %v", floats, err, values)
			}
			// Out of bounds: the server says where.
			req.Inputs[0] = inferbridge.NewSharedMemoryTensor("INPUT0", inferbridge.FP32, []int64{2, 3}, region, 24, 48)
			if _, err := c.Infer(ctx, req); !errors.Is(err, inferbridge.ErrInvalidArgument) || !strings.Contains(err.Error(), "beyond shared memory region") {
				t.Fatalf("an input beyond the region: %v", err)
			}
		})
	}
}
