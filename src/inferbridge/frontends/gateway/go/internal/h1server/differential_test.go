package h1server

import (
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
)

// behaviours a handler may have, answered by the lane and by net/http alike.
var behaviours = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/error": // frontend.WriteError's shape
		h := w.Header()
		h["Content-Type"] = []string{"application/json"}
		h["Content-Length"] = []string{"13"}
		h["Date"] = nil
		w.WriteHeader(http.StatusTooManyRequests)
		io.WriteString(w, `{"error":"x"}`)
	case "/small":
		io.WriteString(w, "<html>hi</html>")
	case "/json":
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		w.WriteHeader(http.StatusOK) // superfluous: ignored
		io.WriteString(w, `{}`)
	case "/nothing":
	case "/status-only":
		w.WriteHeader(http.StatusServiceUnavailable)
	case "/nocontent":
		w.WriteHeader(http.StatusNoContent)
	case "/big":
		io.WriteString(w, strings.Repeat("y", 200<<10))
	case "/header-after":
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, "body")
	}
})

func TestResponsesMatchNetHTTP(t *testing.T) {
	addr, _ := serve(t, behaviours)
	ref := httptest.NewServer(behaviours)
	defer ref.Close()
	for _, method := range []string{"GET", "HEAD"} {
		for _, path := range []string{"/error", "/small", "/json", "/nothing", "/status-only", "/nocontent", "/big", "/header-after"} {
			lane := fetch(t, method, "http://"+addr+path)
			want := fetch(t, method, ref.URL+path)
			if !reflect.DeepEqual(lane, want) {
				t.Errorf("%s %s:\n lane     %+v\n net/http %+v", method, path, lane, want)
			}
		}
	}
}

type answer struct {
	Status int
	Header http.Header
	Body   string
}

func fetch(t *testing.T, method, url string) answer {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	h := resp.Header.Clone()
	// Framing may differ (net/http chunks a body over 2 KB, the lane over 64 KB) and
	// Date is the clock's; the rest must not.
	for _, k := range []string{"Date", "Content-Length", "Transfer-Encoding", "X-Served-By"} {
		delete(h, k)
	}
	return answer{resp.StatusCode, h, string(b)}
}
