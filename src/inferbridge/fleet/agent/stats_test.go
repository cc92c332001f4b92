package main

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

const statsBody = `{"model_stats": [
 {"name": "iris", "version": "2", "last_inference": 5, "inference_count": 9, "execution_count": 4,
  "inference_stats": {"success": {"count": 7, "ns": 7000}, "fail": {"count": 2, "ns": 300},
   "queue": {"count": 7, "ns": 10}}, "batch_stats": []},
 {"name": "iris", "version": "1", "inference_stats": {"success": {"count": 1, "ns": 50}, "fail": {"count": 0, "ns": 0}}},
 {"name": "adder", "version": "latest", "inference_stats": {"success": {"count": 3, "ns": 3}}}
]}`

func TestStatsPerVersion(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != "/v2/models/stats" {
			http.Error(w, `{"error": "unexpected"}`, http.StatusNotFound)
			return
		}
		w.Write([]byte(statsBody))
	}))
	defer srv.Close()
	server := &HTTPServer{Base: srv.URL, Client: &httpClient{}}
	got, err := server.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := []VersionStats{
		{Model: "iris", Version: 1, Success: 1, SuccessNs: 50},
		{Model: "iris", Version: 2, Success: 7, Fail: 2, SuccessNs: 7000, FailNs: 300},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("entry %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestStatsErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("bad") != "" {
			w.Write([]byte(`{"model_stats": [`))
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(`{"error": "server is shutting down"}`))
	}))
	defer srv.Close()
	server := &HTTPServer{Base: srv.URL, Client: &httpClient{}}
	if _, err := server.Stats(t.Context()); err == nil || err.Error() != "statistics: HTTP 503: server is shutting down" {
		t.Fatalf("err = %v", err)
	}
	if _, err := parseStats([]byte(`{"model_stats": [`)); err == nil {
		t.Fatal("a truncated document was accepted")
	}
}
