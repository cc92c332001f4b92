package main

import (
	"errors"
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// jsonValue is a parsed JSON document, for the answers the agent reads over and over (the
// server's repository index every few seconds, its statistics, the assignment long
// poll). encoding/json decodes by reflection, and that code (with reflect's) and the deep
// stacks it grows were a good part of what the steady path kept resident (issue #13);
// this parser is a page of code and its callers pick the fields they need.
type jsonValue struct {
	kind  jsonKind
	text  string      // a string's value; a number as written
	truth bool        // a bool's value
	items []jsonValue // an array's elements; an object's values, in order
	keys  []string    // an object's keys
}

type jsonKind uint8

const (
	jsonNull jsonKind = iota
	jsonBool
	jsonNumber
	jsonString
	jsonArray
	jsonObject
)

func (k jsonKind) String() string {
	return [...]string{"null", "a boolean", "a number", "a string", "an array", "an object"}[k]
}

const maxJSONDepth = 256

// parseJSON parses one JSON value (RFC 8259; nothing but white space after it).
func parseJSON(data []byte) (jsonValue, error) {
	return parseJSONKeeping(data, nil)
}

// parseJSONKeeping is parseJSON that keeps only the objects' members whose key `keep`
// accepts (nil: all): the others are checked and skipped without being built, so that a
// document the agent needs a few fields of costs no more than those fields.
func parseJSONKeeping(data []byte, keep func(key string) bool) (jsonValue, error) {
	p := jsonParser{data: data, keep: keep}
	v, err := p.value(0)
	if err != nil {
		return jsonValue{}, err
	}
	p.space()
	if p.pos != len(p.data) {
		return jsonValue{}, p.fail("data after the value")
	}
	return v, nil
}

// get answers an object's member (null when absent or v is no object).
func (v jsonValue) get(key string) jsonValue {
	for i, k := range v.keys {
		if k == key {
			return v.items[i]
		}
	}
	return jsonValue{}
}

// str answers a string member: "" for null or absent, an error naming the member for
// another type.
func (v jsonValue) str(key string) (string, error) {
	m := v.get(key)
	switch m.kind {
	case jsonNull:
		return "", nil
	case jsonString:
		return m.text, nil
	}
	return "", fmt.Errorf("%q is %s, not a string", key, m.kind)
}

// integer answers an integer member: 0 for null or absent, an error naming the member for
// another type or a number with a fraction or out of range.
func (v jsonValue) integer(key string) (int64, error) {
	m := v.get(key)
	switch m.kind {
	case jsonNull:
		return 0, nil
	case jsonNumber:
		n, err := strconv.ParseInt(m.text, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%q is %s, not an integer", key, m.text)
		}
		return n, nil
	}
	return 0, fmt.Errorf("%q is %s, not a number", key, m.kind)
}

// unsigned is integer for a non-negative counter.
func (v jsonValue) unsigned(key string) (uint64, error) {
	m := v.get(key)
	if m.kind != jsonNumber {
		n, err := v.integer(key)
		return uint64(n), err
	}
	n, err := strconv.ParseUint(m.text, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is %s, not a non-negative integer", key, m.text)
	}
	return n, nil
}

// list answers an array member's elements (none for null or absent).
func (v jsonValue) list(key string) ([]jsonValue, error) {
	m := v.get(key)
	switch m.kind {
	case jsonNull:
		return nil, nil
	case jsonArray:
		return m.items, nil
	}
	return nil, fmt.Errorf("%q is %s, not an array", key, m.kind)
}

// toAny converts to what encoding/json decodes into an `any`.
func (v jsonValue) toAny() any {
	switch v.kind {
	case jsonBool:
		return v.truth
	case jsonNumber:
		f, _ := strconv.ParseFloat(v.text, 64)
		return f
	case jsonString:
		return v.text
	case jsonArray:
		out := make([]any, len(v.items))
		for i, item := range v.items {
			out[i] = item.toAny()
		}
		return out
	case jsonObject:
		out := make(map[string]any, len(v.keys))
		for i, k := range v.keys {
			out[k] = v.items[i].toAny()
		}
		return out
	}
	return nil
}

type jsonParser struct {
	data []byte
	pos  int
	keep func(key string) bool
	// skipping > 0: inside a member not kept (checked, not built).
	skipping int
	// Members and elements being parsed, then moved into the arena in one block per
	// container (few allocations for a document of many small objects).
	stack    []jsonValue
	keyStack []string
	arena    []jsonValue
	keyArena []string
}

func (p *jsonParser) take(src []jsonValue) []jsonValue {
	if len(src) == 0 {
		return nil
	}
	if cap(p.arena)-len(p.arena) < len(src) {
		p.arena = make([]jsonValue, 0, max(64, len(src)))
	}
	start := len(p.arena)
	p.arena = append(p.arena, src...)
	return p.arena[start:len(p.arena):len(p.arena)]
}

func (p *jsonParser) takeKeys(src []string) []string {
	if len(src) == 0 {
		return nil
	}
	if cap(p.keyArena)-len(p.keyArena) < len(src) {
		p.keyArena = make([]string, 0, max(64, len(src)))
	}
	start := len(p.keyArena)
	p.keyArena = append(p.keyArena, src...)
	return p.keyArena[start:len(p.keyArena):len(p.keyArena)]
}

var errJSONEnd = errors.New("unexpected end of JSON")

func (p *jsonParser) fail(what string) error {
	if p.pos >= len(p.data) {
		return errJSONEnd
	}
	return fmt.Errorf("invalid JSON at offset %d: %s", p.pos, what)
}

func (p *jsonParser) space() {
	for p.pos < len(p.data) {
		switch p.data[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

func (p *jsonParser) literal(word string) bool {
	if len(p.data)-p.pos >= len(word) && string(p.data[p.pos:p.pos+len(word)]) == word {
		p.pos += len(word)
		return true
	}
	return false
}

func (p *jsonParser) value(depth int) (jsonValue, error) {
	if depth > maxJSONDepth {
		return jsonValue{}, p.fail("nested too deep")
	}
	p.space()
	if p.pos >= len(p.data) {
		return jsonValue{}, errJSONEnd
	}
	switch c := p.data[p.pos]; {
	case c == '{':
		return p.object(depth)
	case c == '[':
		return p.array(depth)
	case c == '"':
		s, err := p.string()
		return jsonValue{kind: jsonString, text: s}, err
	case c == '-' || (c >= '0' && c <= '9'):
		return p.number()
	case p.literal("true"):
		return jsonValue{kind: jsonBool, truth: true}, nil
	case p.literal("false"):
		return jsonValue{kind: jsonBool}, nil
	case p.literal("null"):
		return jsonValue{}, nil
	}
	return jsonValue{}, p.fail("expected a value")
}

func (p *jsonParser) object(depth int) (jsonValue, error) {
	v := jsonValue{kind: jsonObject}
	p.pos++ // {
	p.space()
	if p.pos < len(p.data) && p.data[p.pos] == '}' {
		p.pos++
		return v, nil
	}
	base, keyBase := len(p.stack), len(p.keyStack)
	done := func() {
		if p.skipping == 0 {
			v.items, v.keys = p.take(p.stack[base:]), p.takeKeys(p.keyStack[keyBase:])
		}
		p.stack, p.keyStack = p.stack[:base], p.keyStack[:keyBase]
	}
	for {
		p.space()
		if p.pos >= len(p.data) || p.data[p.pos] != '"' {
			return v, p.fail("expected a key")
		}
		key, err := p.string()
		if err != nil {
			return v, err
		}
		p.space()
		if p.pos >= len(p.data) || p.data[p.pos] != ':' {
			return v, p.fail("expected ':'")
		}
		p.pos++
		kept := p.skipping == 0 && (p.keep == nil || p.keep(key))
		if !kept {
			p.skipping++
		}
		item, err := p.value(depth + 1)
		if !kept {
			p.skipping--
		}
		if err != nil {
			return v, err
		}
		if kept {
			p.keyStack = append(p.keyStack, key)
			p.stack = append(p.stack, item)
		}
		p.space()
		if p.pos >= len(p.data) {
			return v, errJSONEnd
		}
		switch p.data[p.pos] {
		case ',':
			p.pos++
		case '}':
			p.pos++
			done()
			return v, nil
		default:
			return v, p.fail("expected ',' or '}'")
		}
	}
}

func (p *jsonParser) array(depth int) (jsonValue, error) {
	v := jsonValue{kind: jsonArray}
	p.pos++ // [
	p.space()
	if p.pos < len(p.data) && p.data[p.pos] == ']' {
		p.pos++
		return v, nil
	}
	base := len(p.stack)
	for {
		item, err := p.value(depth + 1)
		if err != nil {
			return v, err
		}
		if p.skipping == 0 {
			p.stack = append(p.stack, item)
		}
		p.space()
		if p.pos >= len(p.data) {
			return v, errJSONEnd
		}
		switch p.data[p.pos] {
		case ',':
			p.pos++
		case ']':
			p.pos++
			if p.skipping == 0 {
				v.items = p.take(p.stack[base:])
			}
			p.stack = p.stack[:base]
			return v, nil
		default:
			return v, p.fail("expected ',' or ']'")
		}
	}
}

func (p *jsonParser) number() (jsonValue, error) {
	start := p.pos
	digits := func() int {
		n := 0
		for p.pos < len(p.data) && p.data[p.pos] >= '0' && p.data[p.pos] <= '9' {
			p.pos++
			n++
		}
		return n
	}
	if p.data[p.pos] == '-' {
		p.pos++
	}
	if p.pos < len(p.data) && p.data[p.pos] == '0' {
		p.pos++
	} else if digits() == 0 {
		return jsonValue{}, p.fail("expected a digit")
	}
	if p.pos < len(p.data) && p.data[p.pos] == '.' {
		p.pos++
		if digits() == 0 {
			return jsonValue{}, p.fail("expected a digit after '.'")
		}
	}
	if p.pos < len(p.data) && (p.data[p.pos] == 'e' || p.data[p.pos] == 'E') {
		p.pos++
		if p.pos < len(p.data) && (p.data[p.pos] == '+' || p.data[p.pos] == '-') {
			p.pos++
		}
		if digits() == 0 {
			return jsonValue{}, p.fail("expected an exponent")
		}
	}
	if p.skipping > 0 {
		return jsonValue{kind: jsonNumber}, nil
	}
	return jsonValue{kind: jsonNumber, text: string(p.data[start:p.pos])}, nil
}

// string reads a quoted string, escapes decoded (invalid UTF-8 and lone surrogates
// become U+FFFD, as encoding/json does).
func (p *jsonParser) string() (string, error) {
	p.pos++ // "
	start := p.pos
	for p.pos < len(p.data) { // the common case: nothing to decode
		c := p.data[p.pos]
		if c == '"' {
			if p.skipping > 0 {
				p.pos++
				return "", nil
			}
			s := string(p.data[start:p.pos])
			p.pos++
			if utf8.ValidString(s) {
				return s, nil
			}
			return string([]rune(s)), nil // each invalid byte to U+FFFD
		}
		if c == '\\' || c < 0x20 {
			break
		}
		p.pos++
	}
	out := append([]byte(nil), p.data[start:p.pos]...)
	for p.pos < len(p.data) {
		c := p.data[p.pos]
		switch {
		case c == '"':
			p.pos++
			if !utf8.Valid(out) {
				return string([]rune(string(out))), nil
			}
			return string(out), nil
		case c < 0x20:
			return "", p.fail("a control character in a string")
		case c != '\\':
			out = append(out, c)
			p.pos++
			continue
		}
		p.pos++ // the backslash
		if p.pos >= len(p.data) {
			return "", errJSONEnd
		}
		e := p.data[p.pos]
		p.pos++
		switch e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := p.hex4()
			if !ok {
				return "", p.fail("a bad \\u escape")
			}
			if utf16.IsSurrogate(r) {
				r2 := rune(-1)
				save := p.pos
				if p.literal(`\u`) {
					r2, _ = p.hex4()
				}
				if pair := utf16.DecodeRune(r, r2); pair != utf8.RuneError {
					r = pair
				} else {
					r, p.pos = utf8.RuneError, save
				}
			}
			out = utf8.AppendRune(out, r)
		default:
			p.pos--
			return "", p.fail("a bad escape")
		}
	}
	return "", errJSONEnd
}

func (p *jsonParser) hex4() (rune, bool) {
	if len(p.data)-p.pos < 4 {
		return 0, false
	}
	var r rune
	for _, c := range p.data[p.pos : p.pos+4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, false
		}
	}
	p.pos += 4
	return r, true
}
