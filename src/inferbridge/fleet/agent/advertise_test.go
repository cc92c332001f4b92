package main

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestAdvertiseGRPCFlag(t *testing.T) {
	base := []string{"--control-plane", "http://cp", "--repository", "/m", "--memory-limit", "", "--gomaxprocs", "0", "--gc-percent", "0"}
	for _, good := range []string{"10.0.0.5:8001", "node-a.example:8001", "[::1]:8001", "localhost:65535"} {
		cfg, err := parseConfig(append(base, "--advertise-grpc", good))
		if err != nil || cfg.AdvertiseGRPC != good {
			t.Fatalf("%q: cfg.AdvertiseGRPC = %q, err %v", good, cfg.AdvertiseGRPC, err)
		}
	}
	for _, bad := range []string{"10.0.0.5", ":8001", "host:", "host:0", "host:70000", "host:grpc", "http://host:8001", "host:8001/x", "::1:8001", "a b:1"} {
		_, err := parseConfig(append(base, "--advertise-grpc", bad))
		if err == nil || !strings.Contains(err.Error(), "--advertise-grpc") || !strings.Contains(err.Error(), "HOST:PORT") {
			t.Fatalf("%q: err = %v, want an error naming --advertise-grpc and HOST:PORT", bad, err)
		}
	}
	if cfg, err := parseConfig(base); err != nil || cfg.AdvertiseGRPC != "" {
		t.Fatalf("default: %q, %v", cfg.AdvertiseGRPC, err)
	}
}

// The registration carries server_grpc beside server_url when --advertise-grpc is given,
// and leaves it out otherwise.
func TestRegistrationAdvertisesTheGRPCAddress(t *testing.T) {
	bodies := make(chan map[string]any, 2)
	cp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		if r.URL.Path != "/v1/fleet/agent/register" || json.NewDecoder(r.Body).Decode(&body) != nil {
			http.Error(w, `{"error": "unexpected"}`, http.StatusBadRequest)
			return
		}
		bodies <- body
		io.WriteString(w, `{"token": "node-token"}`)
	}))
	defer cp.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, grpc := range []string{"10.0.0.5:8001", ""} {
		a := NewAgent(Config{
			ControlPlane: cp.URL, Name: "n1", AdvertiseURL: "http://10.0.0.5:8000", AdvertiseGRPC: grpc,
			BootstrapToken: "boot", StateDir: t.TempDir(),
		}, log)
		if err := a.register(t.Context()); err != nil {
			t.Fatal(err)
		}
		body := <-bodies
		got, present := body["server_grpc"]
		if body["server_url"] != "http://10.0.0.5:8000" || (grpc != "" && got != grpc) || (grpc == "" && present) {
			t.Fatalf("--advertise-grpc %q: registered %v", grpc, body)
		}
	}
}
