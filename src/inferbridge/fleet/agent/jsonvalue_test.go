package main

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// The parser agrees with encoding/json: the same value for every valid document, an error
// for every invalid one.
func TestParseJSONAgreesWithEncodingJSON(t *testing.T) {
	valid := []string{
		`null`, `true`, ` false `, `0`, `-0`, `12`, `-3.25e+2`, `1E-7`, `1.5e300`, `""`,
		`"plain"`, `"esc \" \\ \/ \b \f \n \r \t \u00e9 \u2028"`, `"pair \ud83d\ude00"`,
		`"lone \ud800 x"`, `"lone end \udc00"`, "\"bad utf8 \xff\xfe\"", `"é 漢字"`,
		`[]`, `{}`, `[1,"a",null,true,{"k":[{}]}]`, ` { "a" : 1 , "b" : [ 2 , 3 ] } `,
		`{"dup":1,"dup":2}`, `[[[[[[[[[[1]]]]]]]]]]`,
		`{"etag":"e1","assignments":[{"model":"m","version":2,"uri":"s3://b/k","sha256":"ab","size":10,"format":"tar.gz"}],"requests":[{"id":"r","kind":"logs","lines":5}]}`,
	}
	for _, doc := range valid {
		var want any
		if err := json.Unmarshal([]byte(doc), &want); err != nil {
			t.Fatalf("%q: encoding/json: %v", doc, err)
		}
		v, err := parseJSON([]byte(doc))
		if err != nil {
			t.Errorf("%q: %v", doc, err)
			continue
		}
		if got := v.toAny(); !reflect.DeepEqual(got, want) {
			t.Errorf("%q: got %#v, want %#v", doc, got, want)
		}
	}
	invalid := []string{
		``, ` `, `nul`, `tru`, `01`, `-`, `1.`, `.5`, `1e`, `+1`, `0x10`, `"open`, `"bad \x"`,
		`"\u12"`, "\"ctrl \x01\"", `[1,]`, `[1 2]`, `{"a" 1}`, `{"a":1,}`, `{a:1}`, `{"a":1`,
		`[`, `{"a":[}`, `1 2`, `[] x`, `NaN`, `Infinity`, strings.Repeat("[", 300) + strings.Repeat("]", 300),
	}
	for _, doc := range invalid {
		if _, err := parseJSON([]byte(doc)); err == nil {
			t.Errorf("%q was accepted", doc)
		}
	}
}

func TestPollAnswerDecoding(t *testing.T) {
	var p pollAnswer
	doc := `{"etag":"e1","assignments":[{"model":"m","version":2,"uri":"s3://b/k","sha256":"ab","size":10,"format":"tar.gz","extra":{}}],"requests":[{"id":"r","kind":"logs","lines":5}],"other":1}`
	if err := p.decode([]byte(doc)); err != nil {
		t.Fatal(err)
	}
	want := Assignment{Model: "m", Version: 2, URI: "s3://b/k", SHA256: "ab", Size: 10, Format: "tar.gz"}
	if p.Etag != "e1" || len(p.Assignments) != 1 || p.Assignments[0] != want || len(p.Requests) != 1 || p.Requests[0]["lines"] != 5.0 {
		t.Fatalf("decoded %+v", p)
	}
	var empty pollAnswer
	if err := empty.decode([]byte(`{"etag":"e2","assignments":null}`)); err != nil || empty.Assignments != nil || empty.Etag != "e2" {
		t.Fatalf("null assignments: %+v, %v", empty, err)
	}
	for doc, want := range map[string]string{
		`[]`:                 "expected an object",
		`{"etag":3}`:         `"etag" is a number, not a string`,
		`{"assignments":{}}`: `"assignments" is an object, not an array`,
		`{"assignments":[{"model":"m","version":1.5}]}`: `assignments[0]: "version" is 1.5, not an integer`,
		`{"assignments":[{"model":"m","size":"10"}]}`:   `"size" is a string, not a number`,
		`{"assignments":[7]}`:                           "assignments[0]: a number, not an object",
		`{"requests":[1]}`:                              "requests[0] is a number, not an object",
		`{"etag":"e"`:                                   "unexpected end of JSON",
	} {
		var p pollAnswer
		if err := p.decode([]byte(doc)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want %q", doc, err, want)
		}
	}
}

func TestIndexDecoding(t *testing.T) {
	entries, err := decodeIndex([]byte(`[{"name":"a","version":"1","state":"READY"},{"name":"b","version":"2","state":"UNAVAILABLE","reason":"bad model"}]`))
	if err != nil || len(entries) != 2 || entries[1] != (indexEntry{"b", "2", "UNAVAILABLE", "bad model"}) {
		t.Fatalf("%+v, %v", entries, err)
	}
	for _, bad := range []string{`{}`, `[1]`, `[{"name":1}]`, `[{"name":"a"`} {
		if _, err := decodeIndex([]byte(bad)); err == nil {
			t.Errorf("%s was accepted", bad)
		}
	}
}

// Members not kept are checked but not built; an invalid one is still an error.
func TestParseJSONKeeping(t *testing.T) {
	keep := func(key string) bool { return key == "a" || key == "b" }
	v, err := parseJSONKeeping([]byte(`{"a":{"b":1,"c":[1,{"b":2}]},"z":{"a":"x\u00e9","b":[true]},"b":[{"a":null,"q":"\"s\""}]}`), keep)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"a": map[string]any{"b": 1.0}, "b": []any{map[string]any{"a": nil}}}
	if got := v.toAny(); !reflect.DeepEqual(got, want) {
		t.Fatalf("got %#v, want %#v", got, want)
	}
	for _, bad := range []string{`{"z":[1,]}`, `{"z":"\x"}`, `{"z":01}`, `{"z":{"a":}}`} {
		if _, err := parseJSONKeeping([]byte(bad), keep); err == nil {
			t.Errorf("%s was accepted", bad)
		}
	}
}
