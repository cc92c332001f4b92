package pool

import (
	"strconv"
)

// The OIP `timeout` request parameter (microseconds) in a REST request's JSON: read to
// learn the client's deadline, rewritten per attempt to the time left. Only the top
// level of the JSON object is scanned; tensor data is skipped, never decoded, and the
// body is copied only when the parameter is written.

// scanObject calls visit for each top-level key of the JSON object b with the span of
// its value; it returns the offset just inside the opening '{' and false when b is not
// an object.
func scanObject(b []byte, visit func(key []byte, start, end int) bool) (open int, ok bool) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return 0, false
	}
	open = i + 1
	i = skipSpace(b, open)
	if i < len(b) && b[i] == '}' {
		return open, true
	}
	for i < len(b) {
		if b[i] != '"' {
			return 0, false
		}
		keyEnd := skipString(b, i)
		if keyEnd < 0 {
			return 0, false
		}
		key := b[i+1 : keyEnd-1]
		i = skipSpace(b, keyEnd)
		if i >= len(b) || b[i] != ':' {
			return 0, false
		}
		start := skipSpace(b, i+1)
		end := skipValue(b, start)
		if end < 0 {
			return 0, false
		}
		if !visit(key, start, end) {
			return open, true
		}
		i = skipSpace(b, end)
		if i < len(b) && b[i] == ',' {
			i = skipSpace(b, i+1)
			continue
		}
		if i < len(b) && b[i] == '}' {
			return open, true
		}
		return 0, false
	}
	return 0, false
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\r' || b[i] == '\t') {
		i++
	}
	return i
}

// skipString returns the offset after the string starting at b[i] ('"'), or -1.
func skipString(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return -1
}

// skipValue returns the offset after the JSON value starting at b[i], or -1.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				k := skipString(b, j)
				if k < 0 {
					return -1
				}
				j = k - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return -1
	}
	j := i
	for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && b[j] != ' ' && b[j] != '\n' && b[j] != '\r' && b[j] != '\t' {
		j++
	}
	if j == i {
		return -1
	}
	return j
}

// paramsSpan finds the top-level "parameters" object of a request JSON.
func paramsSpan(b []byte) (open, start, end int, ok bool) {
	start, end = -1, -1
	open, ok = scanObject(b, func(key []byte, s, e int) bool {
		if string(key) == "parameters" {
			start, end = s, e
			return false
		}
		return true
	})
	return open, start, end, ok
}

// timeoutParam returns the request's `timeout` parameter in microseconds (0 = none).
func timeoutParam(b []byte) int64 {
	_, start, end, ok := paramsSpan(b)
	if !ok || start < 0 || b[start] != '{' {
		return 0
	}
	var us int64
	scanObject(b[start:end], func(key []byte, s, e int) bool {
		if string(key) == "timeout" {
			v, err := strconv.ParseInt(string(b[start+s:start+e]), 10, 64)
			if err == nil && v > 0 {
				us = v
			}
			return false
		}
		return true
	})
	return us
}

// withTimeout returns b with its `timeout` parameter set to us (a new slice), or b
// itself when b is not a JSON object (or its parameters are not an object).
func withTimeout(b []byte, us int64) []byte {
	// The pieces inserted are built in stack buffers: only the result is allocated.
	var valueBuf [20]byte
	var insBuf [48]byte
	value := strconv.AppendInt(valueBuf[:0], us, 10)
	open, start, end, ok := paramsSpan(b)
	if !ok {
		return b
	}
	if start < 0 { // no parameters: insert them first
		ins := append(append(insBuf[:0], `"parameters":{"timeout":`...), value...)
		ins = append(ins, '}')
		if j := skipSpace(b, open); j < len(b) && b[j] != '}' {
			ins = append(ins, ',')
		}
		return splice(b, open, open, ins)
	}
	if b[start] != '{' {
		return b
	}
	pOpen, tStart, tEnd := -1, -1, -1
	pOpen, ok = scanObject(b[start:end], func(key []byte, s, e int) bool {
		if string(key) == "timeout" {
			tStart, tEnd = s, e
			return false
		}
		return true
	})
	if !ok {
		return b
	}
	if tStart >= 0 {
		return splice(b, start+tStart, start+tEnd, value)
	}
	ins := append(append(insBuf[:0], `"timeout":`...), value...)
	if j := skipSpace(b, start+pOpen); j < len(b) && b[j] != '}' {
		ins = append(ins, ',')
	}
	return splice(b, start+pOpen, start+pOpen, ins)
}

func splice(b []byte, from, to int, ins []byte) []byte {
	out := make([]byte, 0, len(b)-(to-from)+len(ins))
	out = append(out, b[:from]...)
	out = append(out, ins...)
	return append(out, b[to:]...)
}
