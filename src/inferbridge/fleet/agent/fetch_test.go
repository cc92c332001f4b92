package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"testing/iotest"
)

func digest(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

func TestDownloadResumesAnInterruptedTransfer(t *testing.T) {
	payload := []byte(strings.Repeat("inferbridge-artefact-", 5000))
	var requests, ranged atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := requests.Add(1)
		if r.Header.Get("Range") != "" {
			ranged.Add(1)
			http.ServeContent(w, r, "a", zeroTime, strings.NewReader(string(payload)))
			return
		}
		if n == 1 { // the first transfer breaks half-way
			w.Header().Set("Content-Length", fmt.Sprint(len(payload)))
			w.WriteHeader(http.StatusOK)
			w.Write(payload[:len(payload)/2])
			if hj, ok := w.(http.Hijacker); ok {
				conn, _, _ := hj.Hijack()
				conn.Close()
			}
			return
		}
		w.Write(payload)
	}))
	defer srv.Close()
	partial := filepath.Join(t.TempDir(), "x.part")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	err := Download(context.Background(), &Sources{HTTP: srv.Client()}, srv.URL+"/a", partial, int64(len(payload)), digest(payload), log)
	if err != nil {
		t.Fatal(err)
	}
	if ranged.Load() != 1 {
		t.Fatalf("%d ranged requests, want 1 (resume)", ranged.Load())
	}
	got, _ := os.ReadFile(partial)
	if digest(got) != digest(payload) {
		t.Fatal("resumed file differs")
	}
}

func TestDownloadRefusesADigestMismatch(t *testing.T) {
	dir := t.TempDir()
	source := filepath.Join(dir, "artefact")
	os.WriteFile(source, []byte("tampered"), 0o600)
	partial := filepath.Join(dir, "x.part")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	err := Download(context.Background(), &Sources{}, "file://"+source, partial, 8, digest([]byte("original")), log)
	if !errors.Is(err, ErrDigest) {
		t.Fatalf("err = %v, want a digest mismatch", err)
	}
	if _, statErr := os.Stat(partial); !os.IsNotExist(statErr) {
		t.Fatal("the mismatching download was kept")
	}
}

func TestUnpackRefusesPathsOutsideTheDirectory(t *testing.T) {
	for _, name := range []string{"../evil", "/etc/evil"} {
		if _, err := unpackNamed(t, name); err == nil {
			t.Fatalf("%q was unpacked", name)
		}
	}
	if _, err := unpackNamed(t, "1/model.onnx"); err != nil {
		t.Fatal(err)
	}
}

func TestParsers(t *testing.T) {
	gpus := parseNvidiaSMI("NVIDIA H200, 143771\nNVIDIA H200, 143771\nTesla T4, 15360\n")
	if len(gpus) != 2 || gpus[0].Type != "H200" || gpus[0].Count != 2 || gpus[1].Type != "Tesla-T4" {
		t.Fatalf("gpus = %+v", gpus)
	}
	a, err := parseAccelerator("type=T4,count=2,memory=16Gi")
	if err != nil || a.Count != 2 || a.Memory != 16<<30 {
		t.Fatalf("accelerator = %+v, %v", a, err)
	}
	m, err := parseMetrics(strings.NewReader("# HELP x\ninferbridge_request_success_total{model=\"a\"} 3\ninferbridge_request_success_total{model=\"b\"} 4\nprocess_resident_memory_bytes 1e+06\n"))
	if err != nil || m["requests_ok"] != 7 || m["server_rss_bytes"] != 1e6 {
		t.Fatalf("metrics = %v, %v", m, err)
	}
	// Read in pieces, a timestamp after a value, labels with spaces and braces, CRLF, no
	// final newline; a line over the limit is an error, not a partial sum.
	page := "inferbridge_inflight_requests{model=\"a b\",x=\"}\"} 2 1700000000\r\n" +
		strings.Repeat("# filler\n", 2000) + "inferbridge_inflight_requests 3\ninferbridge_pending_requests 5"
	m, err = parseMetrics(iotest.OneByteReader(strings.NewReader(page)))
	if err != nil || m["inflight"] != 5 || m["pending"] != 5 || len(m) != 2 {
		t.Fatalf("metrics = %v, %v", m, err)
	}
	if _, err := parseMetrics(strings.NewReader("x " + strings.Repeat("1", maxMetricsLine) + "\n")); err == nil {
		t.Fatal("a line over the limit was accepted")
	}
}

// A reconcile pass that downloaded asks for a trim at once: Fetch counts every call,
// failed ones too, and the request to trim does not block or pile up.
func TestFetchesCountEveryFetchAndTrimSoonCoalesces(t *testing.T) {
	d := &DiskArtifacts{Repository: t.TempDir(), StateDir: t.TempDir()}
	before := d.Fetches()
	if err := d.Fetch(context.Background(), Assignment{Model: "m", Version: 1, Format: "zip"}); err == nil {
		t.Fatal("a zip artefact was accepted")
	}
	if got := d.Fetches() - before; got != 1 {
		t.Fatalf("Fetches moved by %d, want 1", got)
	}
	a := &Agent{trimNow: make(chan struct{}, 1)}
	a.trimSoon()
	a.trimSoon() // the second finds one pending and returns
	if len(a.trimNow) != 1 {
		t.Fatalf("%d trims pending, want 1", len(a.trimNow))
	}
}
