package inferbridge_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	inferbridge "github.com/inferbridge/inferbridge/clients/go"
	"github.com/inferbridge/inferbridge/clients/go/grpcclient"
	"github.com/inferbridge/inferbridge/clients/go/inferencepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// tritonStats is a statistics answer in Triton's JSON shape; statsProto is the same
// content as the gRPC message.
const tritonStats = `{"model_stats":[{"name":"m","version":"2","last_inference":1700000000123,
 "inference_count":6,"execution_count":4,
 "inference_stats":{"success":{"count":5,"ns":5000},"fail":{"count":1,"ns":70},
  "queue":{"count":5,"ns":500},"compute_input":{"count":5,"ns":50},
  "compute_infer":{"count":5,"ns":4000},"compute_output":{"count":5,"ns":40},
  "cache_hit":{"count":0,"ns":0},"cache_miss":{"count":0,"ns":0}},
 "batch_stats":[{"batch_size":1,"compute_input":{"count":3,"ns":30},"compute_infer":{"count":3,"ns":2000},"compute_output":{"count":3,"ns":20}},
  {"batch_size":3,"compute_input":{"count":1,"ns":20},"compute_infer":{"count":1,"ns":2000},"compute_output":{"count":1,"ns":20}}]}]}`

func statsProto() *inferencepb.ModelStatistics {
	d := func(count, ns uint64) *inferencepb.StatisticDuration {
		return &inferencepb.StatisticDuration{Count: count, Ns: ns}
	}
	return &inferencepb.ModelStatistics{
		Name: "m", Version: "2", LastInference: 1700000000123, InferenceCount: 6, ExecutionCount: 4,
		InferenceStats: &inferencepb.InferStatistics{
			Success: d(5, 5000), Fail: d(1, 70), Queue: d(5, 500), ComputeInput: d(5, 50),
			ComputeInfer: d(5, 4000), ComputeOutput: d(5, 40), CacheHit: d(0, 0), CacheMiss: d(0, 0),
		},
		BatchStats: []*inferencepb.InferBatchStatistics{
			{BatchSize: 1, ComputeInput: d(3, 30), ComputeInfer: d(3, 2000), ComputeOutput: d(3, 20)},
			{BatchSize: 3, ComputeInput: d(1, 20), ComputeInfer: d(1, 2000), ComputeOutput: d(1, 20)},
		},
	}
}

type recorded struct {
	method, path string
	body         map[string]any
}

func TestUnitRESTRepositoryRequests(t *testing.T) {
	var mu sync.Mutex
	var got []recorded
	url := fakeREST(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		rec := recorded{method: r.Method, path: r.URL.Path}
		if len(body) > 0 {
			if err := json.Unmarshal(body, &rec.body); err != nil {
				t.Errorf("%s: body %q is not JSON", r.URL.Path, body)
			}
		}
		mu.Lock()
		got = append(got, rec)
		mu.Unlock()
		switch {
		case r.URL.Path == "/v2/repository/index":
			_, _ = w.Write([]byte(`[{"name":"a","version":"1","state":"READY","reason":""},{"name":"b","version":"","state":"UNAVAILABLE","reason":"unloaded"}]`))
		case strings.HasSuffix(r.URL.Path, "/stats"):
			_, _ = w.Write([]byte(tritonStats))
		default:
			_, _ = w.Write([]byte(`{}`))
		}
	})
	client, _ := inferbridge.NewRESTClient(url)
	ctx := context.Background()

	index, err := client.RepositoryIndex(ctx, false)
	want := []inferbridge.ModelIndex{{Name: "a", Version: "1", State: inferbridge.StateReady}, {Name: "b", State: inferbridge.StateUnavailable, Reason: "unloaded"}}
	if err != nil || !reflect.DeepEqual(index, want) {
		t.Fatalf("index: %+v %v", index, err)
	}
	if _, err := client.RepositoryIndex(ctx, true); err != nil {
		t.Fatal(err)
	}
	if err := client.LoadModel(ctx, "plain"); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{"1/model.onnx": {0, 1, 2, 0xff}, "1/empty.txt": nil}
	if err := client.LoadModel(ctx, "sent", inferbridge.WithModelConfig(`{"runtime":"onnx"}`), inferbridge.WithModelFiles(files)); err != nil {
		t.Fatal(err)
	}
	type cfg struct {
		Runtime      string `json:"runtime"`
		MaxBatchSize int    `json:"max_batch_size"`
	}
	if err := client.LoadModel(ctx, "a b", inferbridge.WithModelConfigValue(cfg{"onnx", 8})); err != nil {
		t.Fatal(err)
	}
	if err := client.UnloadModel(ctx, "plain"); err != nil {
		t.Fatal(err)
	}
	if err := client.UnloadModel(ctx, "plain", inferbridge.UnloadDependents()); err != nil {
		t.Fatal(err)
	}
	stats, err := client.ModelStatistics(ctx, "m", "2")
	if err != nil || len(stats) != 1 {
		t.Fatalf("stats: %+v %v", stats, err)
	}
	if _, err := client.ModelStatistics(ctx, "m", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := client.ModelStatistics(ctx, "", ""); err != nil {
		t.Fatal(err)
	}

	params := func(kv ...any) map[string]any {
		p := map[string]any{}
		for i := 0; i < len(kv); i += 2 {
			p[kv[i].(string)] = kv[i+1]
		}
		return map[string]any{"parameters": p}
	}
	wantCalls := []recorded{
		{"POST", "/v2/repository/index", map[string]any{}},
		{"POST", "/v2/repository/index", map[string]any{"ready": true}},
		{"POST", "/v2/repository/models/plain/load", map[string]any{}},
		{"POST", "/v2/repository/models/sent/load", params("config", `{"runtime":"onnx"}`,
			"file:1/model.onnx", "AAEC/w==", "file:1/empty.txt", "")},
		{"POST", "/v2/repository/models/a b/load", params("config", `{"runtime":"onnx","max_batch_size":8}`)},
		{"POST", "/v2/repository/models/plain/unload", map[string]any{}},
		{"POST", "/v2/repository/models/plain/unload", params("unload_dependents", true)},
		{"GET", "/v2/models/m/versions/2/stats", nil},
		{"GET", "/v2/models/m/stats", nil},
		{"GET", "/v2/models/stats", nil},
	}
	if !reflect.DeepEqual(got, wantCalls) {
		t.Fatalf("requests:\n got  %v\n want %v", got, wantCalls)
	}
}

// TestUnitStatisticsSameOverBothTransports: Triton's JSON over REST and the proto message
// over gRPC decode to the same ModelStatistics.
func TestUnitStatisticsSameOverBothTransports(t *testing.T) {
	url := fakeREST(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		_, _ = w.Write([]byte(tritonStats))
	})
	rest, _ := inferbridge.NewRESTClient(url)
	fromREST, err := rest.ModelStatistics(context.Background(), "m", "2")
	if err != nil {
		t.Fatal(err)
	}
	fake, grpcClient := startFakeRepository(t)
	fake.stats = []*inferencepb.ModelStatistics{statsProto()}
	fromGRPC, err := grpcClient.ModelStatistics(context.Background(), "m", "2")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fromREST, fromGRPC) {
		t.Fatalf("REST %+v\ngRPC %+v", fromREST, fromGRPC)
	}
	s := fromREST[0]
	if s.InferenceCount != 6 || s.ExecutionCount != 4 || s.InferenceStats.Success != (inferbridge.StatisticDuration{Count: 5, Ns: 5000}) ||
		len(s.BatchStats) != 2 || s.BatchStats[1].BatchSize != 3 || s.BatchStats[1].ComputeInfer.Ns != 2000 {
		t.Fatalf("decoded %+v", s)
	}
	if s.InferenceStats.Success.Mean() != time.Microsecond || s.InferenceStats.Success.Total() != 5*time.Microsecond {
		t.Fatalf("mean %v total %v", s.InferenceStats.Success.Mean(), s.InferenceStats.Success.Total())
	}
	if (inferbridge.StatisticDuration{}).Mean() != 0 {
		t.Fatal("the mean of no events is 0")
	}
	if got := s.LastInferenceTime(); !got.Equal(time.UnixMilli(1700000000123)) {
		t.Fatalf("last inference %v", got)
	}
	if !(inferbridge.ModelStatistics{}).LastInferenceTime().IsZero() {
		t.Fatal("no inference is the zero time")
	}
}

func TestUnitRESTRepositoryErrors(t *testing.T) {
	var requests atomic.Int64
	url := fakeREST(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		requests.Add(1)
		// The model name is the situation: /v2/repository/models/{situation}/load.
		situation := strings.Split(r.URL.Path, "/")[4]
		status := map[string]int{"locked": 403, "busy": 409, "missing": 404, "bad": 400}[situation]
		w.WriteHeader(status)
		_, _ = w.Write([]byte(`{"error":"said the server"}`))
	})
	client, _ := inferbridge.NewRESTClient(url)
	ctx := context.Background()
	for name, sentinel := range map[string]error{
		"locked": inferbridge.ErrFailedPrecondition, "busy": inferbridge.ErrAborted,
		"missing": inferbridge.ErrNotFound, "bad": inferbridge.ErrInvalidArgument,
	} {
		for call, err := range map[string]error{"load": client.LoadModel(ctx, name), "unload": client.UnloadModel(ctx, name)} {
			var e *inferbridge.Error
			if !errors.Is(err, sentinel) || !errors.As(err, &e) || e.Message != "said the server" || !strings.Contains(e.Op, call+" model "+name) {
				t.Errorf("%s %s: %v", call, name, err)
			}
		}
	}
	sent := requests.Load()
	checkClientSide := func(what string, err error) {
		t.Helper()
		var e *inferbridge.Error
		if !errors.Is(err, inferbridge.ErrInvalidArgument) || !errors.As(err, &e) || e.HTTPStatus != 0 {
			t.Errorf("%s: %v", what, err)
		}
	}
	checkClientSide("unmarshalable config", client.LoadModel(ctx, "m", inferbridge.WithModelConfigValue(make(chan int))))
	checkClientSide("no model name", client.LoadModel(ctx, ""))
	checkClientSide("no model name", client.UnloadModel(ctx, ""))
	_, err := client.ModelStatistics(ctx, "", "1")
	checkClientSide("version without a name", err)
	if now := requests.Load(); now != sent {
		t.Errorf("client-side failures sent %d requests", now-sent)
	}
}

// fakeRepository is a gRPC server with the repository and statistics RPCs; a model named
// locked, busy or missing answers FAILED_PRECONDITION, ABORTED or NOT_FOUND.
type fakeRepository struct {
	inferencepb.UnimplementedGRPCInferenceServiceServer
	mu      sync.Mutex
	loads   []*inferencepb.RepositoryModelLoadRequest
	unloads []*inferencepb.RepositoryModelUnloadRequest
	index   []*inferencepb.RepositoryIndexRequest
	statsRq []*inferencepb.ModelStatisticsRequest
	stats   []*inferencepb.ModelStatistics
}

func situation(name string) error {
	switch name {
	case "locked":
		return status.Error(codes.FailedPrecondition, "the repository is not modifiable in model control mode none")
	case "busy":
		return status.Error(codes.Aborted, "model 'busy' is being loaded already")
	case "missing":
		return status.Error(codes.NotFound, "no model directory 'missing'")
	}
	return nil
}

func (f *fakeRepository) RepositoryIndex(_ context.Context, req *inferencepb.RepositoryIndexRequest) (*inferencepb.RepositoryIndexResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.index = append(f.index, req)
	return &inferencepb.RepositoryIndexResponse{Models: []*inferencepb.RepositoryIndexResponse_ModelIndex{
		{Name: "a", Version: "1", State: "READY"}, {Name: "b", State: "UNAVAILABLE", Reason: "unloaded"},
	}}, nil
}

func (f *fakeRepository) RepositoryModelLoad(_ context.Context, req *inferencepb.RepositoryModelLoadRequest) (*inferencepb.RepositoryModelLoadResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.loads = append(f.loads, req)
	return &inferencepb.RepositoryModelLoadResponse{}, situation(req.GetModelName())
}

func (f *fakeRepository) RepositoryModelUnload(_ context.Context, req *inferencepb.RepositoryModelUnloadRequest) (*inferencepb.RepositoryModelUnloadResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.unloads = append(f.unloads, req)
	return &inferencepb.RepositoryModelUnloadResponse{}, situation(req.GetModelName())
}

func (f *fakeRepository) ModelStatistics(_ context.Context, req *inferencepb.ModelStatisticsRequest) (*inferencepb.ModelStatisticsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.statsRq = append(f.statsRq, req)
	return &inferencepb.ModelStatisticsResponse{ModelStats: f.stats}, situation(req.GetName())
}

func startFakeRepository(t *testing.T) (*fakeRepository, *grpcclient.Client) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	fake := &fakeRepository{}
	inferencepb.RegisterGRPCInferenceServiceServer(srv, fake)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	client, err := grpcclient.New(lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	return fake, client
}

func TestUnitGRPCRepositoryRequests(t *testing.T) {
	fake, client := startFakeRepository(t)
	ctx := context.Background()
	index, err := client.RepositoryIndex(ctx, true)
	want := []inferbridge.ModelIndex{{Name: "a", Version: "1", State: "READY"}, {Name: "b", State: "UNAVAILABLE", Reason: "unloaded"}}
	if err != nil || !reflect.DeepEqual(index, want) || !fake.index[0].GetReady() {
		t.Fatalf("index: %+v %v", index, err)
	}
	if err := client.LoadModel(ctx, "plain"); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{"1/model.onnx": {0, 1, 2, 0xff}}
	if err := client.LoadModel(ctx, "sent", inferbridge.WithModelConfigValue(map[string]any{"runtime": "onnx"}), inferbridge.WithModelFiles(files)); err != nil {
		t.Fatal(err)
	}
	if err := client.UnloadModel(ctx, "plain", inferbridge.UnloadDependents()); err != nil {
		t.Fatal(err)
	}
	if _, err := client.ModelStatistics(ctx, "", ""); err != nil {
		t.Fatal(err)
	}
	if len(fake.loads) != 2 || fake.loads[0].GetModelName() != "plain" || len(fake.loads[0].GetParameters()) != 0 {
		t.Fatalf("plain load: %v", fake.loads)
	}
	p := fake.loads[1].GetParameters()
	if fake.loads[1].GetModelName() != "sent" || len(p) != 2 || p["config"].GetStringParam() != `{"runtime":"onnx"}` ||
		string(p["file:1/model.onnx"].GetBytesParam()) != "\x00\x01\x02\xff" {
		t.Fatalf("load with config and files: %v", fake.loads[1])
	}
	up := fake.unloads[0].GetParameters()
	if fake.unloads[0].GetModelName() != "plain" || len(up) != 1 || !up["unload_dependents"].GetBoolParam() {
		t.Fatalf("unload: %v", fake.unloads[0])
	}
	if fake.statsRq[0].GetName() != "" || fake.statsRq[0].GetVersion() != "" {
		t.Fatalf("statistics request: %v", fake.statsRq[0])
	}
}

func TestUnitGRPCRepositoryErrors(t *testing.T) {
	fake, client := startFakeRepository(t)
	ctx := context.Background()
	for name, want := range map[string]struct {
		sentinel error
		code     codes.Code
	}{
		"locked":  {inferbridge.ErrFailedPrecondition, codes.FailedPrecondition},
		"busy":    {inferbridge.ErrAborted, codes.Aborted},
		"missing": {inferbridge.ErrNotFound, codes.NotFound},
	} {
		_, statsErr := client.ModelStatistics(ctx, name, "")
		for call, err := range map[string]error{"load": client.LoadModel(ctx, name), "unload": client.UnloadModel(ctx, name), "statistics": statsErr} {
			var e *inferbridge.Error
			if !errors.Is(err, want.sentinel) || !errors.As(err, &e) || e.GRPCCode != uint32(want.code) || e.Message == "" {
				t.Errorf("%s %s: %v", call, name, err)
			}
		}
	}
	fake.mu.Lock()
	sent := len(fake.loads) + len(fake.unloads) + len(fake.statsRq)
	fake.mu.Unlock()
	checkClientSide := func(what string, err error) {
		t.Helper()
		var e *inferbridge.Error
		if !errors.Is(err, inferbridge.ErrInvalidArgument) || !errors.As(err, &e) || e.GRPCCode != 0 {
			t.Errorf("%s: %v", what, err)
		}
	}
	checkClientSide("unmarshalable config", client.LoadModel(ctx, "m", inferbridge.WithModelConfigValue(func() {})))
	checkClientSide("no model name", client.LoadModel(ctx, ""))
	checkClientSide("no model name", client.UnloadModel(ctx, ""))
	_, err := client.ModelStatistics(ctx, "", "1")
	checkClientSide("version without a name", err)
	fake.mu.Lock()
	defer fake.mu.Unlock()
	if now := len(fake.loads) + len(fake.unloads) + len(fake.statsRq); now != sent {
		t.Errorf("client-side failures sent %d requests", now-sent)
	}
}

func TestUnitLoadOptions(t *testing.T) {
	o, err := inferbridge.ResolveLoadOptions(
		inferbridge.WithModelFiles(map[string][]byte{"1/a": []byte("x"), "1/b": []byte("y")}),
		inferbridge.WithModelFiles(map[string][]byte{"1/b": []byte("z")}),
		inferbridge.WithModelConfigValue(map[string]int{"max_batch_size": 4}),
		inferbridge.WithModelConfig(`{"runtime":"onnx"}`), // the last config wins
	)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"config": `{"runtime":"onnx"}`, "file:1/a": []byte("x"), "file:1/b": []byte("z")}
	if got := o.Parameters(); !reflect.DeepEqual(got, want) {
		t.Fatalf("parameters %v, want %v", got, want)
	}
	if o, _ := inferbridge.ResolveLoadOptions(); o.Parameters() != nil {
		t.Fatal("no options, no parameters")
	}
	if inferbridge.ResolveUnloadOptions().Parameters() != nil {
		t.Fatal("no unload options, no parameters")
	}
}

// countingTransport counts the requests through it and the CloseIdleConnections calls.
type countingTransport struct {
	base          http.RoundTripper
	tag           string
	order         *[]string
	mu            sync.Mutex
	closedIdle    int
	requestsCount int
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	c.requestsCount++
	*c.order = append(*c.order, c.tag)
	c.mu.Unlock()
	return c.base.RoundTrip(r)
}

func (c *countingTransport) CloseIdleConnections() {
	c.mu.Lock()
	c.closedIdle++
	c.mu.Unlock()
	if ci, ok := c.base.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}

func TestUnitRESTTransportMiddleware(t *testing.T) {
	url := fakeREST(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		_, _ = w.Write([]byte(`{"live":true}`))
	})
	var order []string
	var outer, inner *countingTransport
	mw := func(tag string, keep **countingTransport) func(http.RoundTripper) http.RoundTripper {
		return func(base http.RoundTripper) http.RoundTripper {
			*keep = &countingTransport{base: base, tag: tag, order: &order}
			return *keep
		}
	}
	mine := &http.Client{Timeout: time.Minute}
	client, err := inferbridge.NewRESTClient(url, inferbridge.WithTransportMiddleware(mw("outer", &outer)),
		inferbridge.WithHTTPClient(mine), inferbridge.WithTransportMiddleware(mw("inner", &inner)))
	if err != nil {
		t.Fatal(err)
	}
	if live, err := client.Live(context.Background()); err != nil || !live {
		t.Fatal(live, err)
	}
	if !reflect.DeepEqual(order, []string{"outer", "inner"}) || inner.base != http.DefaultTransport {
		t.Fatalf("middleware order %v, inner wraps %T", order, inner.base)
	}
	if mine.Transport != nil {
		t.Fatal("WithHTTPClient's client must not be modified")
	}
	_ = client.Close()
	if outer.closedIdle != 1 || inner.closedIdle != 1 {
		t.Fatalf("Close reached %d and %d wrappers", outer.closedIdle, inner.closedIdle)
	}
}
