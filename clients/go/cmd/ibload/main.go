// Command ibload is a load generator for inferbridge and other Open Inference Protocol
// servers: closed-loop (fixed concurrency) or open-loop (fixed rate) inference over REST
// JSON, REST with the binary tensor extension, or gRPC, with a warm-up, a measured
// duration and a per-request deadline. With -raw, REST goes through a minimal HTTP/1.1
// client over plain keep-alive connections (pre-built request bytes, only the status line
// and framing headers parsed), cheap enough to overload a server on the same small machine. It reports requests/s, latency percentiles and
// errors by kind as a text table, and as JSON with -json.
//
//	ibload -protocol grpc -target 127.0.0.1:8001 -model iris_onnx -concurrency 8 -duration 20s
//	ibload -protocol rest-binary -target http://127.0.0.1:8000 -model iris_onnx -rate 500
//	ibload -protocol rest-json -raw -rate 12000 -max-inflight 1024 -timeout 2s
//
// Request inputs are built from the model's metadata (variable dimensions become -batch
// rows) and filled with -data, a JSON list of numbers repeated as needed, or a fixed
// pattern.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strings"
	"time"

	inferbridge "github.com/inferbridge/inferbridge/clients/go"
	"github.com/inferbridge/inferbridge/clients/go/grpcclient"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "ibload:", err)
		os.Exit(1)
	}
}

// options are ibload's command-line settings.
type options struct {
	protocol    string
	target      string
	model       string
	version     string
	concurrency int
	rate        float64
	maxInflight int
	connections int
	duration    time.Duration
	warmup      time.Duration
	timeout     time.Duration
	batch       int64
	data        string
	jsonOut     string
	raw         bool
	body        string
	cpuProfile  string
	timeline    time.Duration
}

func parseFlags(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("ibload", flag.ContinueOnError)
	fs.StringVar(&o.protocol, "protocol", "grpc", "grpc, rest-binary or rest-json")
	fs.StringVar(&o.target, "target", "", "server address: host:port for gRPC, http://host:port for REST (default 127.0.0.1:8001 or http://127.0.0.1:8000)")
	fs.StringVar(&o.model, "model", "iris_onnx", "model name")
	fs.StringVar(&o.version, "version", "", "model version (default: the server's default)")
	fs.IntVar(&o.concurrency, "concurrency", 8, "closed loop: requests kept in flight")
	fs.Float64Var(&o.rate, "rate", 0, "open loop: requests per second (0 = closed loop)")
	fs.IntVar(&o.maxInflight, "max-inflight", 10000, "open loop: requests in flight at most; beyond it a request is counted as DROPPED")
	fs.IntVar(&o.connections, "connections", 1, "gRPC connections (requests are spread over them)")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "measured duration")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "warm-up before measuring (results discarded)")
	fs.DurationVar(&o.timeout, "timeout", 5*time.Second, "per-request deadline (0 = none)")
	fs.Int64Var(&o.batch, "batch", 1, "rows per request (replaces -1 dimensions)")
	fs.StringVar(&o.data, "data", "", `input values as a JSON list of numbers, repeated to fill each input, e.g. "[5.1,3.5,1.4,0.2]"`)
	fs.BoolVar(&o.raw, "raw", false, "REST only: send the request's pre-built bytes over plain keep-alive TCP connections with a minimal HTTP/1.1 client "+
		"(one connection per request in flight: -concurrency of them, or up to -max-inflight in open loop); far cheaper per request than net/http. "+
		"No timeout parameter is sent (the server's default applies); -timeout only bounds the client's wait")
	fs.StringVar(&o.body, "body", "", "with -raw and rest-json: send this file's bytes as the request body instead of one built from the model's metadata")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the load generator itself to this file (go tool pprof)")
	fs.DurationVar(&o.timeline, "timeline", 0, "also report the measured window in slices of this length (requests, ok, errors, p50/p99 of the requests due in each; JSON field timeline); 0 = off")
	fs.StringVar(&o.jsonOut, "json", "", `also write the report as JSON to this file ("-" for stdout instead of the table)`)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	switch o.protocol {
	case "grpc", "rest-binary", "rest-json":
	default:
		return nil, fmt.Errorf("-protocol %q: use grpc, rest-binary or rest-json", o.protocol)
	}
	if o.target == "" {
		o.target = "127.0.0.1:8001"
		if o.protocol != "grpc" {
			o.target = "http://127.0.0.1:8000"
		}
	}
	if o.raw {
		if o.protocol == "grpc" {
			return nil, errors.New("-raw is for -protocol rest-json or rest-binary")
		}
		if err := restTargetURL(o.target); err != nil {
			return nil, err
		}
	}
	if o.body != "" && (!o.raw || o.protocol != "rest-json") {
		return nil, errors.New("-body needs -raw and -protocol rest-json")
	}
	if o.concurrency < 1 || o.connections < 1 || o.maxInflight < 1 || o.batch < 1 || o.rate < 0 || o.duration <= 0 || o.warmup < 0 || o.timeline < 0 {
		return nil, errors.New("-concurrency, -connections, -max-inflight, -batch and -duration must be positive")
	}
	return o, nil
}

func run(args []string, stdout io.Writer) error {
	o, err := parseFlags(args)
	if err != nil {
		return err
	}
	clients, err := newClients(o)
	if err != nil {
		return err
	}
	defer func() {
		for _, c := range clients {
			_ = c.Close()
		}
	}()
	var req *inferbridge.InferRequest
	if o.body != "" {
		// Only the request line and headers are taken from this request; the body is the file.
		req = &inferbridge.InferRequest{Model: o.model, Version: o.version,
			Inputs: []*inferbridge.Tensor{inferbridge.NewFP32("x", []int64{1}, []float32{0})}}
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		meta, err := clients[0].ModelMetadata(ctx, o.model, o.version)
		cancel()
		if err != nil {
			return err
		}
		if req, err = buildRequest(o, meta); err != nil {
			return err
		}
	}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
	}
	var report *Report
	if o.raw {
		enc := inferbridge.EncodingBinary
		if o.protocol == "rest-json" {
			enc = inferbridge.EncodingJSON
		}
		var body []byte
		if o.body != "" {
			if body, err = os.ReadFile(o.body); err != nil {
				return err
			}
		}
		raw, err := captureRESTRequest(o.target, enc, req, body)
		if err != nil {
			return err
		}
		report = (&rawRunner{o: o, req: raw}).run()
	} else {
		report = newRunner(o, clients, req).run()
	}
	if o.cpuProfile != "" {
		pprof.StopCPUProfile()
	}
	if o.jsonOut == "-" {
		return writeJSON(stdout, report)
	}
	report.writeText(stdout)
	if o.jsonOut != "" {
		f, err := os.Create(o.jsonOut)
		if err != nil {
			return err
		}
		defer f.Close()
		return writeJSON(f, report)
	}
	return nil
}

func writeJSON(w io.Writer, r *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func newClients(o *options) ([]inferbridge.Client, error) {
	if o.protocol == "grpc" {
		clients := make([]inferbridge.Client, o.connections)
		for i := range clients {
			c, err := grpcclient.New(o.target)
			if err != nil {
				return nil, err
			}
			clients[i] = c
		}
		return clients, nil
	}
	enc := inferbridge.EncodingBinary
	if o.protocol == "rest-json" {
		enc = inferbridge.EncodingJSON
	}
	c, err := inferbridge.NewRESTClient(o.target, inferbridge.WithEncoding(enc))
	if err != nil {
		return nil, err
	}
	return []inferbridge.Client{c}, nil
}

// buildRequest makes the one request every worker sends: each input of the model, its
// variable dimensions set to -batch, filled from -data or a fixed pattern.
func buildRequest(o *options, meta *inferbridge.ModelMetadata) (*inferbridge.InferRequest, error) {
	var values []float64
	if o.data != "" {
		if err := json.Unmarshal([]byte(o.data), &values); err != nil || len(values) == 0 {
			return nil, fmt.Errorf("-data must be a non-empty JSON list of numbers: %v", err)
		}
	}
	req := &inferbridge.InferRequest{Model: o.model, Version: o.version}
	for _, in := range meta.Inputs {
		shape := make([]int64, len(in.Shape))
		for i, d := range in.Shape {
			shape[i] = d
			if d < 0 {
				shape[i] = o.batch
			}
		}
		n := int(inferbridge.Elements(shape))
		value := func(i int) float64 {
			if values != nil {
				return values[i%len(values)]
			}
			return float64(i%7) * 0.5
		}
		t, err := fill(in.Name, in.Datatype, shape, n, value)
		if err != nil {
			return nil, err
		}
		req.Inputs = append(req.Inputs, t)
	}
	return req, nil
}

func fill(name string, dt inferbridge.Datatype, shape []int64, n int, value func(int) float64) (*inferbridge.Tensor, error) {
	switch dt {
	case inferbridge.FP32:
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(value(i))
		}
		return inferbridge.NewFP32(name, shape, v), nil
	case inferbridge.FP64:
		v := make([]float64, n)
		for i := range v {
			v[i] = value(i)
		}
		return inferbridge.NewFP64(name, shape, v), nil
	case inferbridge.FP16:
		v := make([]uint16, n)
		for i := range v {
			v[i] = inferbridge.Float32ToFP16(float32(value(i)))
		}
		return inferbridge.NewFP16(name, shape, v), nil
	case inferbridge.INT32:
		v := make([]int32, n)
		for i := range v {
			v[i] = int32(value(i))
		}
		return inferbridge.NewInt32(name, shape, v), nil
	case inferbridge.INT64:
		v := make([]int64, n)
		for i := range v {
			v[i] = int64(value(i))
		}
		return inferbridge.NewInt64(name, shape, v), nil
	case inferbridge.UINT8:
		v := make([]uint8, n)
		for i := range v {
			v[i] = uint8(value(i))
		}
		return inferbridge.NewUint8(name, shape, v), nil
	case inferbridge.BOOL:
		v := make([]bool, n)
		for i := range v {
			v[i] = value(i) != 0
		}
		return inferbridge.NewBool(name, shape, v), nil
	case inferbridge.BYTES:
		v := make([]string, n)
		for i := range v {
			v[i] = strings.TrimSuffix(fmt.Sprint(value(i)), ".0")
		}
		return inferbridge.NewStrings(name, shape, v), nil
	}
	return nil, fmt.Errorf("input %q: ibload cannot synthesize %s data", name, dt)
}
