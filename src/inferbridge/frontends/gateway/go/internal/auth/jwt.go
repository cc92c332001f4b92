package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"regexp"
	"strings"
	"time"
	"unicode"

	"github.com/golang-jwt/jwt/v5"
)

// JWT verification (docs/security.md, "Credentials" and "JWTs"): HS256 with a shared
// secret, RS256 / ES256 (P-256) with the keys of a JWKS file matched by kid; exp and sub
// required, nbf checked when present, iss and aud when configured, with a leeway.

const minSecretBytes = 32

// maxLeeway is the largest clock skew --auth-jwt-leeway-s allows.
const maxLeeway = 300 * time.Second

type jwtVerifier struct {
	secret   []byte               // HS256; nil: not accepted
	jwks     *watchedFile[jwkSet] // RS256, ES256; nil: not accepted
	parser   *jwt.Parser
	allowed  map[string]bool
	algNames string // the accepted algs, for messages
	audience string
}

// readSecret reads an HS256 secret file: at least 32 bytes, one trailing newline ignored.
func readSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	// Only "\n": the Python front ends read the same file, and both must sign alike.
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
	}
	if len(b) < minSecretBytes {
		return nil, fmt.Errorf("the HS256 secret has %d bytes; at least %d are needed (e.g. `head -c 48 /dev/urandom | base64 > FILE`)", len(b), minSecretBytes)
	}
	return b, nil
}

func newJWTVerifier(secret []byte, jwks *watchedFile[jwkSet], c Config, now func() time.Time) *jwtVerifier {
	v := &jwtVerifier{secret: secret, jwks: jwks, allowed: map[string]bool{}, audience: c.Audience}
	var methods []string
	if secret != nil {
		methods = append(methods, "HS256")
	}
	if jwks != nil {
		methods = append(methods, "RS256", "ES256")
	}
	for _, m := range methods {
		v.allowed[m] = true
	}
	v.algNames = strings.Join(methods, ", ")
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(methods),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(c.Leeway),
		jwt.WithTimeFunc(now),
	}
	if c.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(c.Issuer))
	}
	if c.Audience != "" {
		opts = append(opts, jwt.WithAudience(c.Audience))
	}
	v.parser = jwt.NewParser(opts...)
	return v
}

// looksLikeJWT tells a bearer credential of three dot-separated base64url parts.
func looksLikeJWT(s string) bool {
	parts := 0
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == '.' {
			if i == start && parts < 2 { // header and payload are never empty
				return false
			}
			parts++
			start = i + 1
			continue
		}
		c := s[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '=') {
			return false
		}
	}
	return parts == 3
}

// verify checks a JWT and returns its principal (sub) and scopes, or why it is refused
// (in the Python front ends' words, quoting nothing of the token but an algorithm name).
func (v *jwtVerifier) verify(token string, now time.Time) (string, []string, string) {
	claims := jwt.MapClaims{}
	t, err := v.parser.ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) { return v.key(t, now) })
	if err != nil {
		return "", nil, v.reason(t, err)
	}
	name, _ := claims["sub"].(string)
	if name == "" {
		return "", nil, "it has no sub claim (the principal)"
	}
	// The principal goes into a frame header and the access log: no line breaks in it.
	if len(name) > 256 || strings.IndexFunc(name, unicode.IsControl) >= 0 {
		return "", nil, "its sub claim has control characters or is over 256 bytes"
	}
	return name, tokenScopes(claims), ""
}

// key is the jwt.Keyfunc: the secret for HS256, the JWKS key of the token's kid for
// RS256 and ES256 (which must be that key's algorithm).
func (v *jwtVerifier) key(t *jwt.Token, now time.Time) (any, error) {
	alg := t.Method.Alg()
	if alg == "HS256" {
		return v.secret, nil
	}
	kid, _ := t.Header["kid"].(string)
	if kid == "" {
		return nil, keyError("it has no kid, and no key of the JWKS file without a kid can verify it")
	}
	k, ok := v.jwks.get(now).byKid[kid]
	if !ok || k.alg != alg {
		return nil, keyError("no key of the JWKS file has its kid and algorithm")
	}
	return k.key, nil
}

var algorithmName = regexp.MustCompile(`^[A-Za-z0-9+-]{1,16}$`)

// reason turns a jwt error into a message naming the check that failed.
func (v *jwtVerifier) reason(t *jwt.Token, err error) string {
	if errors.Is(err, jwt.ErrTokenMalformed) {
		return "it is malformed (not three base64url parts of JSON)"
	}
	if t != nil {
		if alg, present := t.Header["alg"]; !v.allowed[fmt.Sprint(alg)] {
			name := "(not an algorithm name)"
			if s, ok := alg.(string); ok && algorithmName.MatchString(s) {
				name = "'" + s + "'"
			} else if !present {
				name = "(missing)"
			}
			return fmt.Sprintf("its signing algorithm (alg) %s is not accepted here (accepted: %s)", name, v.algNames)
		}
	}
	// jwt joins the failed checks; a missing claim is told by its name only.
	missing := func(claim string) bool {
		return errors.Is(err, jwt.ErrTokenRequiredClaimMissing) && strings.Contains(err.Error(), claim+" claim is required")
	}
	switch {
	case missing("exp"):
		return "it has no exp claim"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		var ke keyError
		if errors.As(err, &ke) {
			return string(ke)
		}
		return "no key can verify it"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "its signature does not verify"
	case errors.Is(err, jwt.ErrTokenExpired):
		return "it has expired (exp)"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "it is not valid yet (nbf)"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer), missing("iss"):
		return "its issuer (iss) is not the one this server accepts"
	case errors.Is(err, jwt.ErrTokenInvalidAudience), missing("aud"):
		return fmt.Sprintf("its audience (aud) does not include '%s'", v.audience)
	case errors.Is(err, jwt.ErrTokenInvalidClaims):
		return "it cannot be verified (exp, nbf and iat must be numbers, iss a string, aud a string or a list)"
	}
	return "it cannot be verified"
}

// keyError is why the Keyfunc found no key; it quotes nothing of the token.
type keyError string

func (e keyError) Error() string { return string(e) }

// tokenScopes reads the scope claim (space-separated, OAuth 2.0) and the scopes / scp
// claims (lists; a string is split too, as some issuers send scp that way); values of
// other types are ignored, as by the Python front ends.
func tokenScopes(claims jwt.MapClaims) []string {
	var scopes []string
	for _, name := range []string{"scope", "scopes", "scp"} {
		switch v := claims[name].(type) {
		case string:
			scopes = append(scopes, strings.Fields(v)...)
		case []any:
			for _, s := range v {
				if str, ok := s.(string); ok {
					scopes = append(scopes, str)
				}
			}
		}
	}
	return scopes
}

// A JWKS document: {"keys": [{"kty": "RSA", "kid", "n", "e"} | {"kty": "EC", "crv":
// "P-256", "kid", "x", "y"}, ...]}, read as the Python front ends read it: keys whose
// use is not "sig" are skipped; every other key needs a kid of its own, kty RSA (RS256)
// or EC on P-256 (ES256), an alg (when given) that goes with its kty, and valid numbers.

type jwkKey struct {
	alg string // RS256 or ES256
	key any    // *rsa.PublicKey or *ecdsa.PublicKey
}

type jwkSet struct {
	byKid map[string]jwkKey
}

type jwk struct {
	Kty any    `json:"kty"`
	Kid any    `json:"kid"`
	Use any    `json:"use"`
	Alg any    `json:"alg"`
	N   string `json:"n"`
	E   string `json:"e"`
	Crv any    `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

const minRSABits = 2048

func parseJWKS(data []byte) (*jwkSet, error) {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("not valid JSON: %v", err)
	}
	var keys []json.RawMessage
	if raw, ok := doc["keys"]; !ok || json.Unmarshal(raw, &keys) != nil || keys == nil {
		return nil, errors.New(`expected a JWKS document: {"keys": [...]}`)
	}
	set := &jwkSet{byKid: map[string]jwkKey{}}
	for i, raw := range keys {
		where := fmt.Sprintf("keys[%d]", i)
		var k jwk
		if err := json.Unmarshal(raw, &k); err != nil || raw[0] != '{' {
			return nil, fmt.Errorf("%s: a key must be a JSON object", where)
		}
		if use, given := k.Use.(string); k.Use != nil && (!given || use != "sig") {
			continue
		}
		kid, _ := k.Kid.(string)
		if kid == "" {
			return nil, fmt.Errorf("%s.kid: missing (tokens are matched to keys by kid)", where)
		}
		var alg string
		switch k.Kty {
		case "RSA":
			alg = "RS256"
		case "EC":
			alg = "ES256"
			if k.Crv != "P-256" {
				return nil, fmt.Errorf("%s.crv: %s; only P-256 (ES256) is accepted", where, jsonText(k.Crv))
			}
		default:
			return nil, fmt.Errorf("%s.kty: %s is not RSA or EC (P-256)", where, jsonText(k.Kty))
		}
		if k.Alg != nil && k.Alg != alg {
			return nil, fmt.Errorf("%s.alg: %s does not go with kty %s (%s)", where, jsonText(k.Alg), k.Kty, alg)
		}
		if _, dup := set.byKid[kid]; dup {
			return nil, fmt.Errorf("%s.kid: '%s' is already the kid of another key", where, kid)
		}
		var key any
		var err error
		if alg == "RS256" {
			key, err = rsaKey(k)
		} else {
			key, err = ecKey(k)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: not a valid %s key (%w)", where, k.Kty, err)
		}
		set.byKid[kid] = jwkKey{alg: alg, key: key}
	}
	return set, nil
}

// jsonText shows a JWK field's value in a message.
func jsonText(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// b64 decodes a base64url JWK field (unpadded, as RFC 7518 says; padding tolerated).
func b64(field, s string) ([]byte, error) {
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil || len(b) == 0 {
		return nil, fmt.Errorf("field '%s' is not base64url", field)
	}
	return b, nil
}

func rsaKey(k jwk) (*rsa.PublicKey, error) {
	n, err := b64("n", k.N)
	if err != nil {
		return nil, err
	}
	e, err := b64("e", k.E)
	if err != nil {
		return nil, err
	}
	if len(e) > 4 {
		return nil, errors.New("field 'e' is too large")
	}
	exp := 0
	for _, c := range e {
		exp = exp<<8 | int(c)
	}
	if exp < 3 || exp%2 == 0 {
		return nil, errors.New("field 'e' is not a valid RSA exponent")
	}
	pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: exp}
	if bits := pub.N.BitLen(); bits < minRSABits {
		return nil, fmt.Errorf("the RSA modulus has %d bits; at least %d are needed", bits, minRSABits)
	}
	return pub, nil
}

func ecKey(k jwk) (*ecdsa.PublicKey, error) {
	x, err := b64("x", k.X)
	if err != nil {
		return nil, err
	}
	y, err := b64("y", k.Y)
	if err != nil {
		return nil, err
	}
	if len(x) != 32 || len(y) != 32 {
		return nil, errors.New("fields 'x' and 'y' must be 32 bytes each for P-256")
	}
	point := append(append([]byte{4}, x...), y...)
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), point)
	if err != nil {
		return nil, errors.New("the point (x, y) is not on the P-256 curve")
	}
	return pub, nil
}
