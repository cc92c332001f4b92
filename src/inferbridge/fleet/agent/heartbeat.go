package main

import (
	"math"
	"slices"
	"strconv"
	"unicode/utf8"
)

// heartbeat is the body of a heartbeat, written by appendHeartbeat. encoding/json did it
// before: once a second it walked the body by reflection and allocated as it went, and
// under the agent's small memory limit each allocation is soon a garbage collection that
// scans every stack (the runtime's tables it reads then stay resident: issue #13's 8 MB).
// The encoding writes the same JSON into one reused buffer.
type heartbeat struct {
	Live, Ready bool
	Models      []ModelStatus
	Metrics     map[string]float64 // nil: null (the server's metrics could not be read)
	Disk        DiskUsage
	Events      []Event        // nil: null
	Stats       []VersionStats // nil: left out
}

// rawJSON is a request body already encoded.
type rawJSON []byte

// appendHeartbeat appends h as JSON to b. Keys are in order, as encoding/json writes
// maps; a metric that is not a finite number (a NaN gauge) is left out, where
// encoding/json refused the whole heartbeat.
func appendHeartbeat(b []byte, h *heartbeat, keys []string) ([]byte, []string) {
	b = append(b, `{"disk":{"path":`...)
	b = appendString(b, h.Disk.Path)
	b = append(b, `,"total_bytes":`...)
	b = strconv.AppendUint(b, h.Disk.TotalBytes, 10)
	b = append(b, `,"free_bytes":`...)
	b = strconv.AppendUint(b, h.Disk.FreeBytes, 10)
	b = append(b, `,"model_bytes":`...)
	b = strconv.AppendInt(b, h.Disk.ModelBytes, 10)
	b = append(b, '}')
	b = append(b, `,"events":`...)
	if h.Events == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, e := range h.Events {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendStatus(b, e.Model, e.Version, e.State, e.Reason, e.Time)
		}
		b = append(b, ']')
	}
	b = append(b, `,"metrics":`...)
	if h.Metrics == nil {
		b = append(b, "null"...)
	} else {
		keys = keys[:0]
		for k := range h.Metrics {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = append(b, '{')
		first := true
		for _, k := range keys {
			v := h.Metrics[k]
			if math.IsNaN(v) || math.IsInf(v, 0) {
				continue
			}
			if !first {
				b = append(b, ',')
			}
			first = false
			b = appendString(b, k)
			b = append(b, ':')
			b = appendFloat(b, v)
		}
		b = append(b, '}')
	}
	b = append(b, `,"models":[`...)
	for i, m := range h.Models {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendStatus(b, m.Model, m.Version, m.State, m.Reason, "")
	}
	b = append(b, ']')
	b = append(b, `,"server":{"live":`...)
	b = strconv.AppendBool(b, h.Live)
	b = append(b, `,"ready":`...)
	b = strconv.AppendBool(b, h.Ready)
	b = append(b, '}')
	if h.Stats != nil {
		b = append(b, `,"version_stats":[`...)
		for i, s := range h.Stats {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"model":`...)
			b = appendString(b, s.Model)
			b = append(b, `,"version":`...)
			b = strconv.AppendInt(b, int64(s.Version), 10)
			b = append(b, `,"success":`...)
			b = strconv.AppendUint(b, s.Success, 10)
			b = append(b, `,"fail":`...)
			b = strconv.AppendUint(b, s.Fail, 10)
			b = append(b, `,"success_ns":`...)
			b = strconv.AppendUint(b, s.SuccessNs, 10)
			b = append(b, `,"fail_ns":`...)
			b = strconv.AppendUint(b, s.FailNs, 10)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	return append(b, '}'), keys
}

// appendStatus writes a ModelStatus, or an Event when at is set (its "time" first), with
// encoding/json's field order and omitempty reason.
func appendStatus(b []byte, model string, version int, state, reason, at string) []byte {
	b = append(b, '{')
	if at != "" {
		b = append(b, `"time":`...)
		b = appendString(b, at)
		b = append(b, ',')
	}
	b = append(b, `"model":`...)
	b = appendString(b, model)
	b = append(b, `,"version":`...)
	b = strconv.AppendInt(b, int64(version), 10)
	b = append(b, `,"state":`...)
	b = appendString(b, state)
	if reason != "" {
		b = append(b, `,"reason":`...)
		b = appendString(b, reason)
	}
	return append(b, '}')
}

// appendFloat writes a finite float as encoding/json does (ES6 number formatting).
func appendFloat(b []byte, f float64) []byte {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// clean up e-09 to e-9, as encoding/json does
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

const hexDigits = "0123456789abcdef"

// appendString writes s as a JSON string: quotes, backslashes and control characters
// escaped, invalid UTF-8 replaced by U+FFFD, U+2028 and U+2029 escaped (as encoding/json).
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
