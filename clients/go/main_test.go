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

// Addresses of the live servers TestMain starts: the bundled examples (iris, iris_onnx,
// digits) and the conformance repository (tests/conformance/build_repo.py).
var (
	restURL      string
	grpcAddr     string
	confRESTURL  string
	confGRPCAddr string
)

// TestMain starts two real inferbridge servers. Without a Python interpreter
// ($INFERBRIDGE_PYTHON, or the repository's .venv) only the TestUnit* tests run.
func TestMain(m *testing.M) {
	flag.Parse()
	python := testserver.FindPython(".")
	if python == "" {
		fmt.Println("inferbridge: no Python found (set INFERBRIDGE_PYTHON); skipping the live-server tests and examples")
		_ = flag.Set("test.run", "^TestUnit")
		os.Exit(m.Run())
	}
	os.Exit(runWithServers(m, python))
}

func runWithServers(m *testing.M, python string) int {
	repo, err := os.MkdirTemp("", "inferbridge-conformance-")
	if err != nil {
		fmt.Println(err)
		return 1
	}
	defer os.RemoveAll(repo)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := testserver.BuildConformanceRepo(ctx, python, ".", repo); err != nil {
		fmt.Println(err)
		return 1
	}
	var wg sync.WaitGroup
	var examples, conformance *testserver.Server
	var errExamples, errConformance error
	wg.Add(2)
	go func() { defer wg.Done(); examples, errExamples = testserver.Start(python, "", 6*time.Minute) }()
	go func() { defer wg.Done(); conformance, errConformance = testserver.Start(python, repo, 6*time.Minute) }()
	wg.Wait()
	for _, s := range []*testserver.Server{examples, conformance} {
		if s != nil {
			defer s.Stop()
		}
	}
	if errExamples != nil || errConformance != nil {
		fmt.Println("cannot start inferbridge:", errExamples, errConformance)
		return 1
	}
	restURL, grpcAddr = examples.RESTURL, examples.GRPCAddr
	confRESTURL, confGRPCAddr = conformance.RESTURL, conformance.GRPCAddr
	code := m.Run()
	if code != 0 {
		fmt.Printf("--- examples server output:\n%s--- conformance server output:\n%s", examples.Output(), conformance.Output())
	}
	return code
}
