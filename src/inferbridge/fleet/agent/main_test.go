package main

import (
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"
)

func TestConfigFileAndFlags(t *testing.T) {
	file := filepath.Join(t.TempDir(), "agent.json")
	os.WriteFile(file, []byte(`{"control_plane": "http://cp:9000", "repository": "/models",
		"labels": {"zone": "a"}, "accelerators": [{"type": "NPU-X", "count": 2, "memory": 1024}]}`), 0o600)
	cfg, err := parseConfig([]string{"--config", file, "--name", "n1", "--heartbeat", "2s", "--memory-limit", "",
		"--gomaxprocs", "0", "--gc-percent", "0"}) // leave this test process's runtime as it is
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ControlPlane != "http://cp:9000" || cfg.Name != "n1" || cfg.Labels["zone"] != "a" {
		t.Fatalf("cfg = %+v", cfg)
	}
	if len(cfg.Accelerators) != 1 || cfg.Accelerators[0].Type != "NPU-X" || cfg.Heartbeat != 2*time.Second {
		t.Fatalf("cfg = %+v", cfg)
	}
	if cfg.Server != "http://127.0.0.1:8000" || cfg.AdvertiseURL != cfg.Server {
		t.Fatalf("defaults: %+v", cfg)
	}
	if _, err := parseConfig([]string{"--repository", "/models"}); err == nil {
		t.Fatal("a missing --control-plane was accepted")
	}
	if _, err := parseConfig([]string{"--control-plane", "x", "--repository", "/m", "--labels", "nope"}); err == nil {
		t.Fatal("bad labels were accepted")
	}
	for _, bad := range [][]string{{"--trim-every", "-1s"}} {
		args := append([]string{"--control-plane", "x", "--repository", "/m", "--memory-limit", "", "--gomaxprocs", "0", "--gc-percent", "0"}, bad...)
		if _, err := parseConfig(args); err == nil || !strings.Contains(err.Error(), "must not be negative") {
			t.Fatalf("%v: err = %v", bad, err)
		}
	}
	declared := DetectCapacity(t.Context(), cfg.Accelerators, 0, 0)
	if declared.CPU <= 0 || declared.Memory <= 0 || len(declared.Accelerators) != 1 {
		t.Fatalf("capacity = %+v", declared)
	}
}

// --gomaxprocs and --gc-percent set the runtime unless GOMAXPROCS / GOGC are in the
// environment (which the Go runtime applied already).
func TestRuntimeFlags(t *testing.T) {
	if os.Getenv("GOMAXPROCS") != "" || os.Getenv("GOGC") != "" {
		t.Skip("GOMAXPROCS or GOGC is set for this test process")
	}
	procs := runtime.GOMAXPROCS(0)
	gc := debug.SetGCPercent(100)
	defer func() {
		runtime.GOMAXPROCS(procs)
		debug.SetGCPercent(gc)
	}()
	base := []string{"--control-plane", "x", "--repository", "/m", "--memory-limit", ""}
	if _, err := parseConfig(append(base, "--gomaxprocs", "1", "--gc-percent", "40")); err != nil {
		t.Fatal(err)
	}
	if got := runtime.GOMAXPROCS(0); got != 1 {
		t.Fatalf("GOMAXPROCS = %d, want 1", got)
	}
	if got := debug.SetGCPercent(100); got != 40 {
		t.Fatalf("GC percent = %d, want 40", got)
	}
}
