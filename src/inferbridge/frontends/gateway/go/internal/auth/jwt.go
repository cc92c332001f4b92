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
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
		if n := len(b); n > 0 && b[n-1] == '\r' {
			b = b[:n-1]
		}
	}
	if len(b) < minSecretBytes {
		return nil, fmt.Errorf("the HS256 secret has %d bytes; it needs at least %d", len(b), minSecretBytes)
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
// (a message that quotes nothing of the token).
func (v *jwtVerifier) verify(token string, now time.Time) (string, []string, string) {
	claims := jwt.MapClaims{}
	t, err := v.parser.ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) { return v.key(t, now) })
	if err != nil {
		return "", nil, v.reason(t, err)
	}
	sub, _ := claims["sub"].(string)
	if sub == "" {
		return "", nil, "it has no sub claim (the principal)"
	}
	if len(sub) > 256 || strings.IndexFunc(sub, unicode.IsControl) >= 0 {
		return "", nil, "its sub claim is not a usable principal name (control characters, or over 256 bytes)"
	}
	scopes, ok := tokenScopes(claims)
	if !ok {
		return "", nil, "its scope claim must be a space-separated string, and scopes / scp a list of strings"
	}
	return sub, scopes, ""
}

// key is the jwt.Keyfunc: the secret for HS256, the JWKS key of the token's kid and type.
func (v *jwtVerifier) key(t *jwt.Token, now time.Time) (any, error) {
	alg := t.Method.Alg()
	if alg == "HS256" {
		return v.secret, nil
	}
	kid, _ := t.Header["kid"].(string)
	set := v.jwks.get(now)
	k := set.byKid[jwkID{kid: kid, alg: alg}]
	if k == nil {
		if kid == "" {
			return nil, keyError("it has no kid, and no key of the JWKS file without a kid can verify it")
		}
		return nil, keyError("no key of the JWKS file has its kid and algorithm")
	}
	return k, nil
}

// reason turns a jwt error into a message naming the check that failed.
func (v *jwtVerifier) reason(t *jwt.Token, err error) string {
	if errors.Is(err, jwt.ErrTokenMalformed) {
		return "it is malformed (not three base64url parts of JSON)"
	}
	if t != nil {
		if alg, _ := t.Header["alg"].(string); !v.allowed[alg] {
			return "its signing algorithm (alg) is not accepted here (accepted: " + v.algNames + ")"
		}
	}
	// jwt joins the failed checks; a missing claim is told by its name only.
	missing := func(claim string) bool {
		return errors.Is(err, jwt.ErrTokenRequiredClaimMissing) && strings.Contains(err.Error(), claim+" claim is required")
	}
	switch {
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		var ke keyError
		if errors.As(err, &ke) {
			return string(ke)
		}
		return "no key can verify it"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "its signature does not verify"
	case missing("exp"):
		return "it has no exp claim"
	case errors.Is(err, jwt.ErrTokenExpired):
		return "it has expired (exp)"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "it is not valid yet (nbf)"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer), missing("iss"):
		return "its issuer (iss) is not the one this server accepts"
	case errors.Is(err, jwt.ErrTokenInvalidAudience), missing("aud"):
		return fmt.Sprintf("its audience (aud) does not include '%s'", v.audience)
	case errors.Is(err, jwt.ErrTokenInvalidClaims):
		return "its claims are not valid (exp, nbf, iat must be numbers; iss a string; aud a string or list)"
	}
	return "it cannot be verified"
}

// keyError is why the Keyfunc found no key; it quotes nothing of the token.
type keyError string

func (e keyError) Error() string { return string(e) }

// tokenScopes reads the scope claim (space-separated, OAuth 2.0) and the scopes / scp
// claims (lists of strings; a string is split at spaces too, as some issuers send scp).
func tokenScopes(claims jwt.MapClaims) ([]string, bool) {
	var scopes []string
	for _, name := range []string{"scope", "scopes", "scp"} {
		switch v := claims[name].(type) {
		case nil:
		case string:
			scopes = append(scopes, strings.Fields(v)...)
		case []any:
			if name == "scope" {
				return nil, false
			}
			for _, s := range v {
				str, ok := s.(string)
				if !ok {
					return nil, false
				}
				scopes = append(scopes, str)
			}
		default:
			return nil, false
		}
	}
	return scopes, true
}

// A JWKS document: {"keys": [{"kty": "RSA", "kid", "n", "e"} | {"kty": "EC", "crv":
// "P-256", "kid", "x", "y"}, ...]}. Keys of other types or curves, and keys whose use is
// not "sig", are skipped (an identity provider's document may hold them); a malformed
// RSA or P-256 key, or a document without a usable key, is refused.

type jwkID struct{ kid, alg string }

type jwkSet struct {
	byKid map[jwkID]any // *rsa.PublicKey (RS256) or *ecdsa.PublicKey (ES256)
}

type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	N   string `json:"n"`
	E   string `json:"e"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

const minRSABits = 2048

func parseJWKS(data []byte) (*jwkSet, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("not a JWKS document (JSON with a 'keys' list): %v", err)
	}
	set := &jwkSet{byKid: map[jwkID]any{}}
	for i, raw := range doc.Keys {
		var k jwk
		if err := json.Unmarshal(raw, &k); err != nil {
			return nil, fmt.Errorf("keys[%d]: not a JWK object: %v", i, err)
		}
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		var alg string
		var key any
		var err error
		switch {
		case k.Kty == "RSA":
			alg = "RS256"
			key, err = rsaKey(k)
		case k.Kty == "EC" && k.Crv == "P-256":
			alg = "ES256"
			key, err = ecKey(k)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("keys[%d] (kid %q): %w", i, k.Kid, err)
		}
		if k.Alg != "" && k.Alg != alg {
			continue // a key meant for another algorithm (RS512, ...)
		}
		id := jwkID{kid: k.Kid, alg: alg}
		if set.byKid[id] != nil {
			return nil, fmt.Errorf("keys[%d]: kid %q is also the kid of another %s key", i, k.Kid, k.Kty)
		}
		set.byKid[id] = key
	}
	if len(set.byKid) == 0 {
		return nil, errors.New("no usable key: expected RSA (RS256) or EC P-256 (ES256) signing keys")
	}
	return set, nil
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
