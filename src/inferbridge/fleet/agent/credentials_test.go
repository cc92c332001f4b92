package main

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestAPIKeyFileIsReadAgainWhenItChanges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "key")
	f := &APIKeyFile{Path: path}
	if _, err := f.Key(); err == nil {
		t.Fatal("a missing file gave a key")
	}
	os.WriteFile(path, []byte("\n"), 0o600)
	if _, err := f.Key(); err == nil {
		t.Fatal("an empty file gave a key")
	}
	os.WriteFile(path, []byte("ib_first\n"), 0o600)
	if key, err := f.Key(); err != nil || key != "ib_first" {
		t.Fatalf("key = %q, %v", key, err)
	}
	os.WriteFile(path, []byte("ib_second-key\n"), 0o600)
	later := time.Now().Add(time.Second)
	os.Chtimes(path, later, later)
	if key, err := f.Key(); err != nil || key != "ib_second-key" {
		t.Fatalf("after a rotation: key = %q, %v", key, err)
	}
}

func TestRequestsCarryTheAPIKeyAndNeverTheNodeToken(t *testing.T) {
	seen := make(chan http.Header, 4)
	cp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
		io.WriteString(w, "{}")
	}))
	defer cp.Close()
	path := filepath.Join(t.TempDir(), "key")
	os.WriteFile(path, []byte("ib_agent-key\n"), 0o600)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	withKey := NewAgent(Config{ControlPlane: cp.URL, APIKeyFile: path}, log)
	if err := withKey.request(t.Context(), withKey.http, http.MethodGet, "/x", nil, "node-token", nil); err != nil {
		t.Fatal(err)
	}
	h := <-seen
	if h.Get("X-Api-Key") != "ib_agent-key" || h.Get("Authorization") != "" {
		t.Fatalf("with a key file: x-api-key %q, authorization %q", h.Get("X-Api-Key"), h.Get("Authorization"))
	}

	withToken := NewAgent(Config{ControlPlane: cp.URL}, log)
	if err := withToken.request(t.Context(), withToken.http, http.MethodGet, "/x", nil, "node-token", nil); err != nil {
		t.Fatal(err)
	}
	h = <-seen
	if h.Get("Authorization") != "Bearer node-token" || h.Get("X-Api-Key") != "" {
		t.Fatalf("without one: authorization %q, x-api-key %q", h.Get("Authorization"), h.Get("X-Api-Key"))
	}

	os.Remove(path)
	if err := withKey.request(t.Context(), withKey.http, http.MethodGet, "/x", nil, "node-token", nil); err != nil {
		t.Fatal(err)
	}
	h = <-seen
	if h.Get("X-Api-Key") != "" || h.Get("Authorization") != "" {
		t.Fatalf("a key file gone: nothing is sent, got %v", h)
	}
}

func TestAPIKeyFileFlag(t *testing.T) {
	cfg, err := parseConfig([]string{"--control-plane", "http://cp", "--repository", "/m", "--api-key-file", "/run/key", "--memory-limit", ""})
	if err != nil || cfg.APIKeyFile != "/run/key" {
		t.Fatalf("cfg = %+v, %v", cfg, err)
	}
}
