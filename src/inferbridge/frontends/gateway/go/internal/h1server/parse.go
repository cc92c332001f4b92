package h1server

import (
	"bytes"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/inferbridge/inferbridge/gateway/internal/httpwire"
)

// errNotPlain: the head is one for Fallback.
var errNotPlain = errors.New("not a plain request")

// maxFields bounds the header fields of a request parsed here.
const maxFields = 100

// newRequest parses a plain request's head (RFC 9112 §2-5), or refuses it with
// errNotPlain. Plain is: "METHOD /path[?query] HTTP/1.1" with a token method and a
// path without percent-encoding, CRLF line ends, fields without folding or control
// characters, exactly one Host, at most one Content-Length of digits, and no
// Transfer-Encoding, Expect, Upgrade or Pragma; Connection only keep-alive or close.
// Every string of the request is a substring of one copy of the head.
func (c *conn) newRequest(raw []byte) (*http.Request, error) {
	head := string(raw) // the one allocation behind every string below
	lineEnd := indexCRLF(head, 0)
	if lineEnd < 0 {
		return nil, errNotPlain
	}
	method, target, ok := splitRequestLine(head[:lineEnd])
	if !ok {
		return nil, errNotPlain
	}
	path, query := target, ""
	for i := 0; i < len(target); i++ {
		if target[i] == '?' {
			path, query = target[:i], target[i+1:]
			break
		}
	}

	nfields := bytes.Count(raw, crlf) - 2 // the request line and the blank line
	if nfields < 0 || nfields > maxFields {
		return nil, errNotPlain
	}
	header := make(http.Header, nfields)
	values := make([]string, nfields)
	var contentLength int64
	haveLength, closeConn, hosts := false, false, 0
	pos := lineEnd + 2
	for k := 0; ; k++ {
		end := indexCRLF(head, pos)
		if end < 0 {
			return nil, errNotPlain
		}
		if end == pos {
			break // the blank line
		}
		if k >= nfields {
			return nil, errNotPlain
		}
		name, value, ok := httpwire.SplitField(head[pos:end])
		if !ok {
			return nil, errNotPlain
		}
		pos = end + 2
		key := httpwire.CanonicalKey(name)
		switch key {
		case "Host":
			hosts++
		case "Content-Length":
			n, ok := parseLength(value)
			if !ok || haveLength {
				return nil, errNotPlain
			}
			contentLength, haveLength = n, true
		case "Transfer-Encoding", "Expect", "Upgrade", "Te", "Trailer", "Pragma":
			return nil, errNotPlain
		case "Connection":
			cl, ok := parseConnection(value)
			if !ok {
				return nil, errNotPlain
			}
			closeConn = closeConn || cl
		}
		values[k] = value
		if prev, ok := header[key]; ok {
			header[key] = append(prev, value)
		} else {
			header[key] = values[k : k+1 : k+1]
		}
	}
	if hosts != 1 || !validHost(header["Host"][0]) {
		return nil, errNotPlain
	}

	r := new(http.Request)
	*r = *c.base // the connection's context
	r.Method = method
	r.URL = &url.URL{Path: path, RawQuery: query}
	if r.URL.EscapedPath() != path { // as url.URL's setPath: the path as sent is kept
		r.URL.RawPath = path
	}
	r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/1.1", 1, 1
	r.Header = header
	r.Host = header["Host"][0]
	delete(header, "Host") // as net/http: the host is r.Host
	r.RequestURI = target
	r.RemoteAddr = c.remote
	r.ContentLength = contentLength
	r.Close = closeConn
	if contentLength > 0 {
		r.Body = &c.body
	} else {
		r.Body = http.NoBody
	}
	return r, nil
}

var crlf = []byte("\r\n")

func indexCRLF(s string, from int) int {
	for i := from; i+1 < len(s); i++ {
		switch s[i] {
		case '\r':
			if s[i+1] != '\n' {
				return -1 // a bare CR
			}
			return i
		case '\n':
			return -1 // a bare LF: Fallback's to judge
		}
	}
	return -1
}

// splitRequestLine splits "METHOD TARGET HTTP/1.1" with the method a token and the
// target an origin-form path (and query) of visible characters without '%' or '#'.
func splitRequestLine(line string) (method, target string, ok bool) {
	const proto = " HTTP/1.1"
	if len(line) < len(proto)+3 || line[len(line)-len(proto):] != proto {
		return "", "", false
	}
	line = line[:len(line)-len(proto)]
	sp := -1
	for i := 0; i < len(line); i++ {
		if line[i] == ' ' {
			sp = i
			break
		}
		if !httpwire.IsTokenChar(line[i]) {
			return "", "", false
		}
	}
	if sp <= 0 {
		return "", "", false
	}
	method, target = line[:sp], line[sp+1:]
	if target == "" || target[0] != '/' {
		return "", "", false
	}
	for i := 0; i < len(target); i++ {
		if !isTargetChar(target[i]) {
			return "", "", false
		}
	}
	return method, target, true
}

// isTargetChar: the characters of a path and query without percent-encoding (RFC 3986
// pchar, '/' and '?'); the others go to Fallback, whose URL parser is the reference.
func isTargetChar(b byte) bool {
	switch {
	case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		return true
	}
	return strings.IndexByte("-._~!$&'()*+,;=:@/?", b) >= 0
}

func parseLength(v string) (int64, bool) {
	if v == "" || len(v) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return 0, false
		}
		n = n*10 + int64(v[i]-'0')
	}
	return n, true
}

// parseConnection reads a Connection field of keep-alive and close tokens only; close
// reports a close among them.
func parseConnection(v string) (close, ok bool) {
	for v != "" {
		var t string
		t, v = v, ""
		for i := 0; i < len(t); i++ {
			if t[i] == ',' {
				t, v = t[:i], t[i+1:]
				break
			}
		}
		for len(t) > 0 && (t[0] == ' ' || t[0] == '\t') {
			t = t[1:]
		}
		for len(t) > 0 && (t[len(t)-1] == ' ' || t[len(t)-1] == '\t') {
			t = t[:len(t)-1]
		}
		switch {
		case strings.EqualFold(t, "close"):
			close = true
		case strings.EqualFold(t, "keep-alive"), t == "":
		default:
			return false, false
		}
	}
	return close, true
}

// validHost accepts the characters of a host and port (RFC 3986 §3.2.2), as net/http
// does before it answers 400.
func validHost(h string) bool {
	for i := 0; i < len(h); i++ {
		b := h[i]
		switch {
		case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		case strings.IndexByte("-._~:[]!$&'()*+,;=%@", b) >= 0:
		default:
			return false
		}
	}
	return true
}
