package auth

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Scopes (docs/security.md, "Scopes"): infer:<glob> (infer = infer:*), read, admin, and
// agent (the fleet's node agents; it grants nothing on a server, but a keys file shared
// with the control plane may hold it).

// scopeSet is what a principal may do, parsed once from its scopes.
type scopeSet struct {
	admin, read bool
	infer       []string // model globs
	names       []string // the scopes as given, for messages
}

// parseScope checks one keys-file scope.
func parseScope(s string) error {
	switch {
	case s == "read", s == "admin", s == "agent", s == "infer":
		return nil
	case s == "infer:":
		return fmt.Errorf("scope 'infer:' needs a model glob after the colon (or use 'infer')")
	case strings.HasPrefix(s, "infer:"):
		if strings.IndexFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
			return fmt.Errorf("scope %q: a model glob has no spaces or control characters", s)
		}
		return nil
	}
	return fmt.Errorf("scope %q is not one of infer, infer:<glob>, read, admin, agent", s)
}

// newScopeSet reads scopes; those that are not inferbridge scopes (a JWT may carry
// others, as openid) grant nothing.
func newScopeSet(scopes []string) scopeSet {
	ss := scopeSet{names: scopes}
	for _, s := range scopes {
		switch {
		case s == "admin":
			ss.admin = true
		case s == "read":
			ss.read = true
		case s == "infer":
			ss.infer = append(ss.infer, "*")
		case strings.HasPrefix(s, "infer:") && len(s) > len("infer:"):
			ss.infer = append(ss.infer, s[len("infer:"):])
		}
	}
	return ss
}

// allows tells whether the scopes grant act.
func (ss *scopeSet) allows(act Action) bool {
	if ss.admin {
		return true
	}
	switch act.Kind {
	case Health, Read:
		return ss.read
	case Infer:
		for _, g := range ss.infer {
			if globMatch(g, act.Model) {
				return true
			}
		}
		return false
	case SharedMemory:
		return len(ss.infer) > 0
	case Any:
		return true
	}
	return false // Admin
}

// refusal is the 403 message for a principal whose scopes do not grant act (the Python
// front ends use the same words).
func (ss *scopeSet) refusal(principal string, act Action) string {
	var what string
	switch act.Kind {
	case Infer:
		what = fmt.Sprintf("infer on model '%s'", act.Model)
	case SharedMemory:
		what = "use shared memory (it needs an infer: scope)"
	case Health, Read:
		what = "read server or model information (it needs the read scope)"
	default:
		what = "change the server (it needs the admin scope)"
	}
	have := "none"
	if len(ss.names) > 0 {
		have = strings.Join(ss.names, ", ")
	}
	return fmt.Sprintf("principal '%s' may not %s (its scopes: %s)", principal, what, have)
}

// globMatch reports whether name matches glob, where '*' is any run of characters
// (possibly empty), '?' exactly one character and every other character itself.
// Characters are runes, so '?' matches one UTF-8 character, not one byte.
func globMatch(glob, name string) bool {
	// Iterative matching with one backtrack point (the last '*'): linear in practice,
	// O(len(glob)·len(name)) at worst, never exponential.
	gi, ni := 0, 0
	starG, starN := -1, 0
	for ni < len(name) {
		if gi < len(glob) {
			switch glob[gi] {
			case '*':
				starG, starN = gi, ni
				gi++
				continue
			case '?':
				_, size := utf8.DecodeRuneInString(name[ni:])
				gi++
				ni += size
				continue
			default:
				_, gsize := utf8.DecodeRuneInString(glob[gi:])
				_, nsize := utf8.DecodeRuneInString(name[ni:])
				if gsize == nsize && glob[gi:gi+gsize] == name[ni:ni+nsize] {
					gi += gsize
					ni += nsize
					continue
				}
			}
		}
		if starG < 0 {
			return false
		}
		// Let the last '*' take one more character and retry after it.
		_, size := utf8.DecodeRuneInString(name[starN:])
		starN += size
		gi, ni = starG+1, starN
	}
	for gi < len(glob) && glob[gi] == '*' {
		gi++
	}
	return gi == len(glob)
}
