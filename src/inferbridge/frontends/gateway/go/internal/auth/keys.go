package auth

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// The keys file (docs/security.md, "The keys file"):
//
//	keys:
//	  - name: payments
//	    sha256: <hex SHA-256 of the key>   # or subject: <client certificate CN>
//	    scopes: ["infer:fraud-*", read]
//	    expires: 2027-06-30T00:00:00Z      # optional
//	    rate: {per_second: 100, burst: 200} # optional

// keyEntry is one principal of the keys file.
type keyEntry struct {
	name    string
	scopes  scopeSet
	expires time.Time // zero: never
	rate    *Rate     // nil: the default rate
}

// keySet is a parsed keys file.
type keySet struct {
	byDigest  map[[sha256.Size]byte]*keyEntry
	bySubject map[string]*keyEntry
}

func (ks *keySet) byKey(key string) *keyEntry {
	if ks == nil {
		return nil
	}
	return ks.byDigest[sha256.Sum256([]byte(key))]
}

var principalName = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

var entryFields = []string{"name", "sha256", "subject", "scopes", "expires", "rate"}

// parseKeys parses a keys file's bytes. Errors name the entry (its index and line) and
// the field, and never quote a sha256 value: a key pasted there by mistake would leak.
func parseKeys(data []byte) (*keySet, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("not YAML: %w", err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil, errors.New("the file is empty; expected a mapping with a 'keys' list")
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("line %d: expected a mapping with a 'keys' list", root.Line)
	}
	var list *yaml.Node
	for i := 0; i+1 < len(root.Content); i += 2 {
		k := root.Content[i]
		if k.Value != "keys" {
			return nil, fmt.Errorf("line %d: unknown field '%s' (expected keys)", k.Line, k.Value)
		}
		list = root.Content[i+1]
	}
	if list == nil {
		return nil, errors.New("no 'keys' field; expected a mapping with a 'keys' list")
	}
	if list.Kind != yaml.SequenceNode && !(list.Kind == yaml.ScalarNode && list.Tag == "!!null") {
		return nil, fmt.Errorf("line %d: 'keys' must be a list of entries", list.Line)
	}
	ks := &keySet{byDigest: map[[sha256.Size]byte]*keyEntry{}, bySubject: map[string]*keyEntry{}}
	names := map[string]int{}
	for i, node := range list.Content {
		e, digest, subject, err := parseEntry(node)
		if err != nil {
			return nil, fmt.Errorf("keys[%d] (line %d): %w", i, node.Line, err)
		}
		if j, dup := names[e.name]; dup {
			return nil, fmt.Errorf("keys[%d] (line %d): field 'name': '%s' is also the name of keys[%d]", i, node.Line, e.name, j)
		}
		names[e.name] = i
		if subject != "" {
			if other := ks.bySubject[subject]; other != nil {
				return nil, fmt.Errorf("keys[%d] (line %d): field 'subject': '%s' is also the subject of '%s'", i, node.Line, subject, other.name)
			}
			ks.bySubject[subject] = e
			continue
		}
		if other := ks.byDigest[digest]; other != nil {
			return nil, fmt.Errorf("keys[%d] (line %d): field 'sha256': the same digest as '%s'", i, node.Line, other.name)
		}
		ks.byDigest[digest] = e
	}
	return ks, nil
}

func parseEntry(node *yaml.Node) (e *keyEntry, digest [sha256.Size]byte, subject string, err error) {
	if node.Kind != yaml.MappingNode {
		return nil, digest, "", errors.New("expected a mapping with name, sha256 or subject, scopes")
	}
	e = &keyEntry{}
	var hexDigest string
	var haveDigest, haveSubject, haveScopes bool
	seen := map[string]bool{}
	for i := 0; i+1 < len(node.Content); i += 2 {
		field, value := node.Content[i].Value, node.Content[i+1]
		if seen[field] {
			return nil, digest, "", fmt.Errorf("field '%s' given twice", field)
		}
		seen[field] = true
		switch field {
		case "name":
			if e.name, err = scalar(value, field); err != nil {
				return nil, digest, "", err
			}
			if !principalName.MatchString(e.name) {
				return nil, digest, "", fmt.Errorf("field 'name': %q must be 1 to 64 of A-Z a-z 0-9 . _ -", e.name)
			}
		case "sha256":
			if value.Kind != yaml.ScalarNode {
				return nil, digest, "", errors.New("field 'sha256': expected the key's SHA-256 as 64 hex digits")
			}
			hexDigest, haveDigest = value.Value, true
		case "subject":
			if subject, err = scalar(value, field); err != nil {
				return nil, digest, "", err
			}
			if subject == "" {
				return nil, digest, "", errors.New("field 'subject': expected a client certificate's common name, got an empty string")
			}
			haveSubject = true
		case "scopes":
			var scopes []string
			if value.Kind != yaml.SequenceNode || value.Decode(&scopes) != nil {
				return nil, digest, "", errors.New("field 'scopes': expected a list of scopes (read, admin, infer, infer:<glob>)")
			}
			for _, s := range scopes {
				if err := parseScope(s); err != nil {
					return nil, digest, "", fmt.Errorf("field 'scopes': %w", err)
				}
			}
			e.scopes, haveScopes = newScopeSet(scopes), true
		case "expires":
			s, err := scalar(value, field)
			if err != nil {
				return nil, digest, "", err
			}
			if e.expires, err = parseExpiry(s); err != nil {
				return nil, digest, "", fmt.Errorf("field 'expires': %q is not an RFC 3339 date-time with a time zone (as 2027-06-30T00:00:00Z)", s)
			}
		case "rate":
			if e.rate, err = parseEntryRate(value); err != nil {
				return nil, digest, "", fmt.Errorf("field 'rate': %w", err)
			}
		default:
			return nil, digest, "", fmt.Errorf("unknown field '%s' (expected %s)", field, strings.Join(entryFields, ", "))
		}
	}
	switch {
	case e.name == "":
		return nil, digest, "", errors.New("field 'name' is missing")
	case haveDigest == haveSubject:
		return nil, digest, "", errors.New("exactly one of the fields 'sha256' and 'subject' is needed")
	case !haveScopes:
		return nil, digest, "", errors.New("field 'scopes' is missing (a list; [] grants nothing)")
	}
	if haveDigest {
		b, err := hex.DecodeString(hexDigest)
		if err != nil || len(b) != sha256.Size || strings.ToLower(hexDigest) != hexDigest {
			return nil, digest, "", errors.New("field 'sha256': expected the key's SHA-256 as 64 lower-case hex digits")
		}
		copy(digest[:], b)
	}
	return e, digest, subject, nil
}

func scalar(n *yaml.Node, field string) (string, error) {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		return "", fmt.Errorf("field '%s': expected a string", field)
	}
	return n.Value, nil
}

// parseEntryRate parses {per_second: RPS, burst: N}; burst defaults to RPS rounded up.
func parseEntryRate(n *yaml.Node) (*Rate, error) {
	if n.Kind != yaml.MappingNode {
		return nil, errors.New("expected {per_second: RPS, burst: N}")
	}
	r := &Rate{}
	haveRPS, haveBurst := false, false
	for i := 0; i+1 < len(n.Content); i += 2 {
		field, value := n.Content[i].Value, n.Content[i+1]
		switch field {
		case "per_second":
			if value.Decode(&r.PerSecond) != nil || !(r.PerSecond > 0) || math.IsInf(r.PerSecond, 0) {
				return nil, errors.New("per_second must be a positive number")
			}
			haveRPS = true
		case "burst":
			if value.Decode(&r.Burst) != nil || r.Burst < 1 {
				return nil, errors.New("burst must be a positive whole number")
			}
			haveBurst = true
		default:
			return nil, fmt.Errorf("unknown field '%s' (expected per_second, burst)", field)
		}
	}
	if !haveRPS {
		return nil, errors.New("per_second is missing")
	}
	if !haveBurst {
		r.Burst = int(math.Ceil(r.PerSecond))
	}
	return r, nil
}

// expiryLayouts are the date-times with a zone that Python's datetime.fromisoformat also
// reads (the Python server checks the same file): RFC 3339, a space for the T, minutes
// without seconds.
var expiryLayouts = []string{
	time.RFC3339Nano, "2006-01-02 15:04:05.999999999Z07:00", "2006-01-02T15:04Z07:00", "2006-01-02 15:04Z07:00",
}

func parseExpiry(s string) (time.Time, error) {
	var err error
	for _, layout := range expiryLayouts {
		var t time.Time
		if t, err = time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, err
}
