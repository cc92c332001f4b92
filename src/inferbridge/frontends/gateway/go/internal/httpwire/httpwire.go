// Package httpwire is the HTTP/1.1 message syntax (RFC 9110 §5, RFC 9112 §5) that the
// gateway's lean parsers of request heads (package h1server) and response heads
// (package pool) share: tokens, field lines, canonical field names.
package httpwire

import "net/textproto"

// IsTokenChar reports whether b may appear in a token (a method, a field name).
func IsTokenChar(b byte) bool {
	switch {
	case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		return true
	}
	switch b {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

// SplitField splits a field line "name: value", the value without its surrounding
// whitespace; false for a name that is not a token (folding included) or a value with
// a control character.
func SplitField(line string) (name, value string, ok bool) {
	colon := -1
	for i := 0; i < len(line); i++ {
		if line[i] == ':' {
			colon = i
			break
		}
		if !IsTokenChar(line[i]) {
			return "", "", false
		}
	}
	if colon <= 0 {
		return "", "", false
	}
	value = line[colon+1:]
	for len(value) > 0 && (value[0] == ' ' || value[0] == '\t') {
		value = value[1:]
	}
	for len(value) > 0 && (value[len(value)-1] == ' ' || value[len(value)-1] == '\t') {
		value = value[:len(value)-1]
	}
	for i := 0; i < len(value); i++ {
		if b := value[i]; (b < ' ' && b != '\t') || b == 0x7f {
			return "", "", false
		}
	}
	return line[:colon], value, true
}

// commonKeys are canonical names met often in requests and responses, so that their
// keys cost no allocation.
var commonKeys = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{"Accept", "Accept-Encoding", "Accept-Language", "Authorization",
		"Cache-Control", "Connection", "Content-Encoding", "Content-Length", "Content-Type",
		"Cookie", "Date", "Expect", "Grpc-Status", "Host", "Inference-Header-Content-Length",
		"Keep-Alive", "Origin", "Pragma", "Referer", "Retry-After", "Server", "Te",
		"Traceparent", "Tracestate", "Trailer", "Transfer-Encoding", "Upgrade", "User-Agent",
		"Vary", "X-Api-Key", "X-Forwarded-For", "X-Forwarded-Proto", "X-Request-Id"} {
		m[k] = k
	}
	return m
}()

// CanonicalKey is name in net/http's canonical form (the keys of its header maps).
func CanonicalKey(name string) string {
	if k, ok := commonKeys[name]; ok {
		return k
	}
	return textproto.CanonicalMIMEHeaderKey(name)
}
