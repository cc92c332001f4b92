package frontend

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
)

// The REST error replies both backends give: a JSON body {"error": message} (the
// Python app's shape), the status, and Retry-After where waiting helps.

// StatusClientGone is the status recorded for a request whose client went away before
// its reply (nginx's "client closed request"): nothing was sent.
const StatusClientGone = 499

// Aborted, or'ed into a status a backend returns, says that the reply was cut short
// (a streamed body failed mid-way): the front end closes the connection instead of
// ending the body, so that the client does not take it for whole.
const Aborted = 1 << 16

// Shared header values; net/http only reads them.
var (
	hdrJSON       = []string{"application/json"}
	hdrRetryAfter = []string{"1"}
	hdrClose      = []string{"close"}
)

// ErrorBody is the JSON error body {"error": msg}.
func ErrorBody(msg string) []byte {
	q, _ := json.Marshal(msg)
	return append(append([]byte(`{"error": `), q...), '}')
}

// WriteError writes an error reply (body from ErrorBody; retry adds Retry-After: 1)
// without a Date header, and returns its status and body length.
func WriteError(w http.ResponseWriter, code int, body []byte, retry bool) (int, int) {
	h := w.Header()
	h["Content-Type"] = hdrJSON
	if retry {
		h["Retry-After"] = hdrRetryAfter
	}
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	h["Date"] = nil
	w.WriteHeader(code)
	w.Write(body)
	return code, len(body)
}

// UnreadableBody answers a request whose body could not be read (err, after n bytes
// of it): 400 with the reason when the body is malformed or cut short (an EOF: a
// half-closed client may still read the answer; a gone one does not mind it), nothing
// (StatusClientGone) when the connection itself failed (a reset).
func UnreadableBody(w http.ResponseWriter, r *http.Request, err error, n int) (int, int) {
	if netErr := net.Error(nil); errors.As(err, &netErr) {
		return StatusClientGone, 0
	}
	var msg string
	switch {
	case !errors.Is(err, io.ErrUnexpectedEOF):
		msg = "the request body cannot be read: " + err.Error() // net/http's chunked reader
	case r.ContentLength > 0:
		msg = fmt.Sprintf("the request body ended after %d of its %d bytes (Content-Length)", n, r.ContentLength)
	default:
		msg = fmt.Sprintf("the chunked request body ended after %d bytes, before its last chunk", n)
	}
	// The connection's framing is lost: it cannot carry another request.
	w.Header()["Connection"] = hdrClose
	return WriteError(w, http.StatusBadRequest, ErrorBody(msg), false)
}

// TooLarge answers a body over limit bytes (413); length is its Content-Length, or
// negative for a chunked body found over the limit while reading it.
func TooLarge(w http.ResponseWriter, length, limit int64) (int, int) {
	msg := fmt.Sprintf("request body of %d bytes is over the limit of %d bytes", length, limit)
	if length < 0 {
		msg = fmt.Sprintf("request body of more than %d bytes is over the limit of %d bytes", limit, limit)
	}
	return WriteError(w, http.StatusRequestEntityTooLarge, ErrorBody(msg), false)
}
