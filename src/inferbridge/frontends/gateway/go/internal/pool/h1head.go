package pool

import (
	"bufio"
	"bytes"
	"net/http"
	"strings"

	"github.com/inferbridge/inferbridge/gateway/internal/httpwire"
)

// leanHead parses the response head at the start of br's buffer when all of it is
// there and it is plain: CRLF line ends, a status line parseStatusLine takes, and
// "Name: value" fields with token names and no folding or control characters. Every
// string of the response is a substring of one copy of the head, where textproto
// allocates per line and per field. It returns the response and the head's length
// (not yet consumed), or nil for the line-by-line path to read (and judge) instead.
// It waits for the first byte only: a head that arrives in pieces takes that path.
func leanHead(br *bufio.Reader) (*http.Response, int) {
	if _, err := br.Peek(1); err != nil {
		return nil, 0
	}
	buf, _ := br.Peek(br.Buffered())
	end := bytes.Index(buf, crlfcrlf)
	if end < 0 || bytes.Contains(buf[:end+2], lflf) {
		return nil, 0
	}
	n := end + 4
	nfields := bytes.Count(buf[:n], crlf) - 2
	if bytes.Count(buf[:n], lf) != nfields+2 {
		return nil, 0 // a bare LF somewhere
	}
	head := string(buf[:n])
	lineEnd := strings.IndexByte(head, '\r')
	if lineEnd < 0 || head[lineEnd+1] != '\n' {
		return nil, 0
	}
	resp, err := parseStatusLine(head[:lineEnd])
	if err != nil {
		return nil, 0 // the line-by-line path reports it
	}
	header := make(http.Header, nfields)
	values := make([]string, max(nfields, 0))
	pos := lineEnd + 2
	for k := 0; pos < end+2; k++ {
		i := strings.IndexByte(head[pos:], '\r')
		if i < 0 || head[pos+i+1] != '\n' || k >= len(values) {
			return nil, 0
		}
		name, value, ok := httpwire.SplitField(head[pos : pos+i])
		if !ok {
			return nil, 0
		}
		pos += i + 2
		key := httpwire.CanonicalKey(name)
		values[k] = value
		if prev, ok := header[key]; ok {
			header[key] = append(prev, value)
		} else {
			header[key] = values[k : k+1 : k+1]
		}
	}
	resp.Header = header
	return resp, n
}

var (
	lf       = []byte("\n")
	crlf     = []byte("\r\n")
	crlfcrlf = []byte("\r\n\r\n")
	lflf     = []byte("\n\n")
)
