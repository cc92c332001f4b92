package inferbridge_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// goTool is the go command that runs these tests.
func goTool(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	p := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(p); err != nil {
		t.Skip("no go command found")
	}
	return p
}

// TestQuickstartFromDocs runs the README's quick-start program (README.md, Go SDK) exactly as
// printed, with only the server addresses changed to the live test server's.
func TestQuickstartFromDocs(t *testing.T) {
	doc, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(doc), "<!-- quickstart -->\n```go\n")
	program, _, ok2 := strings.Cut(after, "```")
	if !ok || !ok2 {
		t.Fatal("README.md has no quick-start program after <!-- quickstart -->")
	}
	if n := strings.Count(program, "\n"); n > 30 {
		t.Fatalf("the quick-start program has grown to %d lines", n)
	}
	program = strings.Replace(program, `"http://localhost:8000"`, `"`+restURL+`"`, 1)
	program = strings.Replace(program, `"localhost:8001"`, `"`+grpcAddr+`"`, 1)
	dir, err := os.MkdirTemp(".", "_quickstart")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(program), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(goTool(t), "run", "./"+filepath.Base(dir)).CombinedOutput()
	if err != nil {
		t.Fatalf("go run: %v\n%s", err, out)
	}
	want := "*inferbridge.RESTClient: class 0\n*grpcclient.Client: class 0\n"
	if string(out) != want {
		t.Fatalf("quick start printed %q, want %q", out, want)
	}
}

// TestIbload runs the load generator briefly over every protocol and mode.
func TestIbload(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs ibload")
	}
	bin := filepath.Join(t.TempDir(), "ibload")
	if out, err := exec.Command(goTool(t), "build", "-o", bin, "./cmd/ibload").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	runs := map[string][]string{
		"grpc_closed":        {"-protocol", "grpc", "-target", grpcAddr, "-concurrency", "4", "-connections", "2"},
		"rest_binary_closed": {"-protocol", "rest-binary", "-target", restURL, "-concurrency", "4"},
		"rest_json_open":     {"-protocol", "rest-json", "-target", restURL, "-rate", "200"},
		"grpc_open_batch":    {"-protocol", "grpc", "-target", grpcAddr, "-rate", "100", "-batch", "8", "-data", "[5.1,3.5,1.4,0.2]"},
	}
	for name, args := range runs {
		t.Run(name, func(t *testing.T) {
			args = append(args, "-model", "iris_onnx", "-duration", "1s", "-warmup", "200ms", "-timeout", "2s", "-json", "-")
			out, err := exec.Command(bin, args...).CombinedOutput()
			if err != nil {
				t.Fatalf("ibload: %v\n%s", err, out)
			}
			var r struct {
				Requests int                        `json:"requests"`
				OK       int                        `json:"ok"`
				Errors   map[string]int             `json:"errors"`
				RPS      float64                    `json:"requests_per_s"`
				Latency  struct{ P50, P99 float64 } `json:"latency_ms"`
			}
			if err := json.Unmarshal(out, &r); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if r.Requests == 0 || r.OK != r.Requests || len(r.Errors) != 0 || r.RPS <= 0 || r.Latency.P50 <= 0 || r.Latency.P99 < r.Latency.P50 {
				t.Fatalf("report: %s", out)
			}
		})
	}
	// A deadline too short to meet is reported by kind, not as a failure of ibload.
	out, err := exec.Command(bin, "-protocol", "grpc", "-target", grpcAddr, "-model", "iris_onnx",
		"-duration", "300ms", "-warmup", "0s", "-timeout", "1us", "-concurrency", "2").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "DEADLINE_EXCEEDED") {
		t.Fatalf("ibload with a 1µs deadline: %v\n%s", err, out)
	}
}
