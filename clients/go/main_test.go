package inferbridge_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/inferbridge/inferbridge/clients/go/internal/testserver"
)

// Addresses of the live server TestMain starts. It serves the conformance repository
// (tests/conformance/build_repo.py) plus the bundled examples iris, iris_onnx and digits;
// the conformance tests use the conf* names, the others the short ones.
var (
	restURL      string
	grpcAddr     string
	confRESTURL  string
	confGRPCAddr string
	// python runs the servers.
	python string
	// atExit holds what tests started on demand (explicitServer) and runWithServers stops
	// after the tests, told whether they failed.
	atExit struct {
		sync.Mutex
		funcs []func(failed bool)
	}
)

// TestMain starts a real inferbridge server. Without a Python interpreter
// ($INFERBRIDGE_PYTHON, or the repository's .venv) only the TestUnit* tests run.
func TestMain(m *testing.M) {
	flag.Parse()
	if fuzz := flag.Lookup("test.fuzz"); fuzz != nil && fuzz.Value.String() != "" {
		os.Exit(m.Run()) // a fuzzing run (scripts/test_go.sh) needs no live server
	}
	python = testserver.FindPython(".")
	if python == "" {
		fmt.Println("inferbridge: no Python found (set INFERBRIDGE_PYTHON); skipping the live-server tests and examples")
		_ = flag.Set("test.run", "^TestUnit")
		os.Exit(m.Run())
	}
	os.Exit(runWithServers(m, python))
}

func runWithServers(m *testing.M, python string) int {
	repo, err := os.MkdirTemp("", "inferbridge-go-tests-")
	if err != nil {
		fmt.Println(err)
		return 1
	}
	defer os.RemoveAll(repo)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	if err := testserver.BuildConformanceRepo(ctx, python, ".", repo); err != nil {
		fmt.Println(err)
		return 1
	}
	// Only the light example models: the whole example repository loads every runtime.
	if err := testserver.LinkExamples(ctx, python, repo, "iris", "iris_onnx", "digits"); err != nil {
		fmt.Println(err)
		return 1
	}
	server, err := testserver.Start(python, repo, 3*time.Minute)
	if err != nil {
		fmt.Println("cannot start inferbridge:", err)
		return 1
	}
	defer server.Stop()
	restURL, grpcAddr = server.RESTURL, server.GRPCAddr
	confRESTURL, confGRPCAddr = server.RESTURL, server.GRPCAddr
	code := m.Run()
	atExit.Lock()
	for i := len(atExit.funcs) - 1; i >= 0; i-- {
		atExit.funcs[i](code != 0)
	}
	atExit.Unlock()
	if code != 0 {
		fmt.Printf("--- server output:\n%s", server.Output())
	}
	return code
}
