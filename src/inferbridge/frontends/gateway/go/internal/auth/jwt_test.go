package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/inferbridge/inferbridge/gateway/internal/clock"
)

const testSecret = "0123456789abcdef0123456789abcdef" // 32 bytes

var (
	rsaOnce sync.Once
	rsaPriv *rsa.PrivateKey
)

// testRSAKey is generated once: 2048-bit generation is slow under -race.
func testRSAKey(t testing.TB) *rsa.PrivateKey {
	rsaOnce.Do(func() {
		var err error
		if rsaPriv, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
	})
	return rsaPriv
}

func b64u(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func rsaJWK(kid string, pub *rsa.PublicKey) map[string]any {
	return map[string]any{"kty": "RSA", "kid": kid, "use": "sig", "n": b64u(pub.N.Bytes()), "e": b64u(big.NewInt(int64(pub.E)).Bytes())}
}

func ecJWK(t testing.TB, kid string, pub *ecdsa.PublicKey) map[string]any {
	raw, err := pub.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return map[string]any{"kty": "EC", "crv": "P-256", "kid": kid, "x": b64u(raw[1:33]), "y": b64u(raw[33:65])}
}

func writeJWKS(t testing.TB, path string, keys ...map[string]any) {
	t.Helper()
	b, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, string(b))
}

type jwtFixture struct {
	a     *Authority
	clock *clock.Fake
	rsa   *rsa.PrivateKey
	ec    *ecdsa.PrivateKey
	jwks  string
}

func newJWTFixture(t testing.TB, c Config) *jwtFixture {
	t.Helper()
	dir := t.TempDir()
	secretPath := filepath.Join(dir, "secret")
	writeFile(t, secretPath, testSecret+"\n") // the trailing newline is ignored
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	f := &jwtFixture{clock: clock.NewFake(), rsa: testRSAKey(t), ec: ec, jwks: filepath.Join(dir, "jwks.json")}
	other, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	enc := ecJWK(t, "p384", &other.PublicKey)
	enc["crv"], enc["use"] = "P-384", "enc" // skipped: not a signing key
	writeJWKS(t, f.jwks, rsaJWK("rsa1", &f.rsa.PublicKey), ecJWK(t, "ec1", &ec.PublicKey), enc,
		map[string]any{"kty": "oct", "kid": "sym", "k": "c2VjcmV0", "use": "enc"})
	c.JWTSecretFile, c.JWKSFile, c.Clock = secretPath, f.jwks, f.clock
	if f.a, err = New(c, nil); err != nil {
		t.Fatal(err)
	}
	return f
}

// claims returns valid claims for the fixture's clock, with the given overrides (a nil
// value deletes the claim).
func (f *jwtFixture) claims(over map[string]any) jwt.MapClaims {
	now := f.clock.Now()
	c := jwt.MapClaims{"sub": "alice", "exp": now.Add(time.Hour).Unix(), "scope": "infer:iris read"}
	for k, v := range over {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

func sign(t testing.TB, method jwt.SigningMethod, kid string, claims jwt.MapClaims, key any) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (f *jwtFixture) check(token string, act Action) (string, *Denial) {
	return f.a.Check(Credentials{Authorization: "Bearer " + token}, act)
}

func TestJWTAlgorithms(t *testing.T) {
	f := newJWTFixture(t, Config{})
	ok := f.claims(nil)
	noneToken := sign(t, jwt.SigningMethodNone, "", ok, jwt.UnsafeAllowNoneSignatureType)
	// Algorithm confusion: an HS256 token whose "secret" is the RSA public key.
	pubBytes := f.rsa.PublicKey.N.Bytes()
	cases := []struct {
		name, token, want string
	}{
		{"HS256", sign(t, jwt.SigningMethodHS256, "", ok, []byte(testSecret)), ""},
		{"RS256", sign(t, jwt.SigningMethodRS256, "rsa1", ok, f.rsa), ""},
		{"ES256", sign(t, jwt.SigningMethodES256, "ec1", ok, f.ec), ""},
		{"HS256 wrong secret", sign(t, jwt.SigningMethodHS256, "", ok, []byte(strings.Repeat("x", 32))), "its signature does not verify"},
		{"none", noneToken, "its signing algorithm (alg) 'none' is not accepted here (accepted: HS256, RS256, ES256)"},
		{"HS512", sign(t, jwt.SigningMethodHS512, "", ok, []byte(testSecret)), "its signing algorithm (alg) 'HS512' is not accepted"},
		{"RS512", sign(t, jwt.SigningMethodRS512, "rsa1", ok, f.rsa), "its signing algorithm (alg) 'RS512' is not accepted"},
		{"HS256 keyed with the RSA public key", sign(t, jwt.SigningMethodHS256, "rsa1", ok, pubBytes), "its signature does not verify"},
		{"RS256 unknown kid", sign(t, jwt.SigningMethodRS256, "rsa2", ok, f.rsa), "no key of the JWKS file has its kid and algorithm"},
		{"RS256 without kid", sign(t, jwt.SigningMethodRS256, "", ok, f.rsa), "it has no kid, and no key of the JWKS file without a kid can verify it"},
		{"ES256 under the RSA kid", sign(t, jwt.SigningMethodES256, "rsa1", ok, f.ec), "no key of the JWKS file has its kid and algorithm"},
		{"RS256 signed by another key", func() string {
			other, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				t.Fatal(err)
			}
			return sign(t, jwt.SigningMethodRS256, "rsa1", ok, other)
		}(), "its signature does not verify"},
		{"tampered payload", func() string {
			parts := strings.Split(sign(t, jwt.SigningMethodHS256, "", ok, []byte(testSecret)), ".")
			evil, _ := json.Marshal(f.claims(map[string]any{"scope": "admin"}))
			return parts[0] + "." + b64u(evil) + "." + parts[2]
		}(), "its signature does not verify"},
		{"malformed", "aaaa.bbbb.cccc", "it is malformed (not three base64url parts of JSON)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, d := f.check(tc.token, infer("iris"))
			if tc.want == "" {
				if d != nil || p != "alice" {
					t.Fatalf("refused: %q %+v", p, d)
				}
				return
			}
			if d == nil {
				t.Fatalf("accepted as %q", p)
			}
			if d.Status != 401 || !d.TokenSent || d.Message != "the bearer token is not valid: "+tc.want &&
				!strings.HasPrefix(d.Message, "the bearer token is not valid: "+tc.want) {
				t.Fatalf("got %d %q, want 401 %q", d.Status, d.Message, tc.want)
			}
			for _, part := range strings.Split(tc.token, ".") {
				if len(part) > 3 && strings.Contains(d.Message, part) {
					t.Fatalf("the message quotes the token: %q", d.Message)
				}
			}
		})
	}
}

func TestJWTClaims(t *testing.T) {
	f := newJWTFixture(t, Config{Issuer: "https://issuer.example", Audience: "inferbridge", Leeway: 30 * time.Second})
	now := f.clock.Now()
	base := map[string]any{"iss": "https://issuer.example", "aud": "inferbridge"}
	with := func(over map[string]any) jwt.MapClaims {
		m := map[string]any{}
		for k, v := range base {
			m[k] = v
		}
		for k, v := range over {
			m[k] = v
		}
		return f.claims(m)
	}
	cases := []struct {
		name   string
		claims jwt.MapClaims
		act    Action
		want   string // "" = accepted; else the reason, or "403 ..." for a refusal
	}{
		{"valid", with(nil), infer("iris"), ""},
		{"aud list containing ours", with(map[string]any{"aud": []string{"other", "inferbridge"}}), infer("iris"), ""},
		{"aud list without ours", with(map[string]any{"aud": []string{"other"}}), infer("iris"), "its audience (aud) does not include 'inferbridge'"},
		{"wrong aud", with(map[string]any{"aud": "other"}), infer("iris"), "its audience (aud) does not include 'inferbridge'"},
		{"wrong iss", with(map[string]any{"iss": "https://evil.example"}), infer("iris"), "its issuer (iss) is not the one this server accepts"},
		{"no exp", with(map[string]any{"exp": nil}), infer("iris"), "it has no exp claim"},
		{"expired", with(map[string]any{"exp": now.Add(-time.Minute).Unix()}), infer("iris"), "it has expired (exp)"},
		{"expired within the leeway", with(map[string]any{"exp": now.Add(-20 * time.Second).Unix()}), infer("iris"), ""},
		{"nbf in the future", with(map[string]any{"nbf": now.Add(time.Minute).Unix()}), infer("iris"), "it is not valid yet (nbf)"},
		{"nbf within the leeway", with(map[string]any{"nbf": now.Add(20 * time.Second).Unix()}), infer("iris"), ""},
		{"nbf past", with(map[string]any{"nbf": now.Add(-time.Minute).Unix()}), infer("iris"), ""},
		{"exp not a number", with(map[string]any{"exp": "tomorrow"}), infer("iris"), "it cannot be verified"},
		{"no sub", with(map[string]any{"sub": nil}), infer("iris"), "it has no sub claim (the principal)"},
		{"sub with a newline", with(map[string]any{"sub": "a\nb"}), infer("iris"), "its sub claim has control characters"},
		{"scopes list", with(map[string]any{"scope": nil, "scopes": []string{"infer:ir*"}}), infer("iris"), ""},
		{"scp list", with(map[string]any{"scope": nil, "scp": []string{"admin"}}), Action{Kind: Admin}, ""},
		{"scope without the model", with(map[string]any{"scope": "infer:fraud-* read"}), infer("iris"),
			"403 principal 'alice' may not infer on model 'iris' (its scopes: infer:fraud-*, read)"},
		{"no scope at all", with(map[string]any{"scope": nil}), Action{Kind: Read},
			"403 principal 'alice' may not read server or model information (it needs the read scope) (its scopes: none)"},
		{"scopes not strings are ignored", with(map[string]any{"scope": nil, "scopes": []any{1, "infer:iris"}}), infer("iris"), ""},
		{"no aud", with(map[string]any{"aud": nil}), infer("iris"), "its audience (aud) does not include 'inferbridge'"},
		{"unknown scopes grant nothing", with(map[string]any{"scope": "openid profile infer:iris"}), infer("iris"), ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, d := f.check(sign(t, jwt.SigningMethodHS256, "", tc.claims, []byte(testSecret)), tc.act)
			switch {
			case tc.want == "":
				if d != nil {
					t.Fatalf("refused: %+v", d)
				}
				if p != "alice" {
					t.Fatalf("principal %q", p)
				}
			case strings.HasPrefix(tc.want, "403 "):
				if d == nil || d.Status != 403 || d.Message != tc.want[4:] {
					t.Fatalf("got %+v, want %s", d, tc.want)
				}
			default:
				if d == nil || d.Status != 401 || !strings.HasPrefix(d.Message, "the bearer token is not valid: "+tc.want) {
					t.Fatalf("got %+v, want 401 %q", d, tc.want)
				}
			}
		})
	}
}

func TestJWTWithKeysFile(t *testing.T) {
	// With both, a JWT-shaped bearer is a JWT and anything else an API key.
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys.yaml")
	writeFile(t, keys, keysYAML(""))
	secret := filepath.Join(dir, "secret")
	writeFile(t, secret, testSecret)
	fake := clock.NewFake()
	a, err := New(Config{KeysFile: keys, JWTSecretFile: secret, Clock: fake, DefaultRate: &Rate{PerSecond: 1, Burst: 1}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p, d := a.Check(Credentials{Authorization: "Bearer " + readerKey}, Action{Kind: Read}); d != nil || p != "reader" {
		t.Fatalf("API key as bearer: %q %+v", p, d)
	}
	claims := jwt.MapClaims{"sub": "reader", "exp": fake.Now().Add(time.Hour).Unix(), "scope": "read"}
	token := sign(t, jwt.SigningMethodHS256, "", claims, []byte(testSecret))
	// The JWT subject 'reader' has its own bucket (the default rate), apart from the key's.
	if p, d := a.Check(Credentials{Authorization: "Bearer " + token}, Action{Kind: Read}); d != nil || p != "reader" {
		t.Fatalf("JWT: %q %+v", p, d)
	}
	if _, d := a.Check(Credentials{Authorization: "Bearer " + token}, Action{Kind: Read}); d == nil || d.Status != 429 {
		t.Fatalf("JWT subject over the default rate: %+v", d)
	}
	// Without a JWKS, RS256 is not accepted.
	rs := sign(t, jwt.SigningMethodRS256, "rsa1", claims, testRSAKey(t))
	if _, d := a.Check(Credentials{Authorization: "Bearer " + rs}, Action{Kind: Read}); d == nil ||
		d.Message != "the bearer token is not valid: its signing algorithm (alg) 'RS256' is not accepted here (accepted: HS256)" {
		t.Fatalf("RS256 without a JWKS: %+v", d)
	}
}

func TestJWKSReload(t *testing.T) {
	f := newJWTFixture(t, Config{})
	newKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	token := sign(t, jwt.SigningMethodES256, "ec2", f.claims(nil), newKey)
	if _, d := f.check(token, infer("iris")); d == nil {
		t.Fatal("a token of a key not yet in the JWKS was accepted")
	}
	writeJWKS(t, f.jwks, rsaJWK("rsa1", &f.rsa.PublicKey), ecJWK(t, "ec2", &newKey.PublicKey))
	f.clock.Advance(reloadEvery)
	if p, d := f.check(token, infer("iris")); d != nil || p != "alice" {
		t.Fatalf("after the JWKS reload: %q %+v", p, d)
	}
	// ec1 was dropped.
	old := sign(t, jwt.SigningMethodES256, "ec1", f.claims(nil), f.ec)
	if _, d := f.check(old, infer("iris")); d == nil {
		t.Fatal("a key removed from the JWKS still verifies")
	}
	// A bad JWKS keeps the last good one.
	writeFile(t, f.jwks, `{"keys": [{"kty": "EC", "crv": "P-256", "kid": "x", "x": "AAAA", "y": "AAAA"}]}`)
	f.clock.Advance(reloadEvery)
	if _, d := f.check(token, infer("iris")); d != nil {
		t.Fatalf("a bad JWKS replaced the good one: %+v", d)
	}
}

func TestParseJWKSErrors(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	good := ecJWK(t, "a", &ec.PublicKey)
	offCurve := ecJWK(t, "b", &ec.PublicKey)
	offCurve["y"] = b64u(make([]byte, 32))
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	cases := []struct {
		doc  any
		want string
	}{
		{"not json", "not valid JSON"},
		{map[string]any{"kes": []any{}}, `expected a JWKS document: {"keys": [...]}`},
		{map[string]any{"keys": []any{"x"}}, "keys[0]: a key must be a JSON object"},
		{map[string]any{"keys": []any{map[string]any{"kty": "oct", "kid": "s"}}}, `keys[0].kty: "oct" is not RSA or EC (P-256)`},
		{map[string]any{"keys": []any{map[string]any{"kty": "RSA", "n": "AQAB", "e": "AQAB"}}}, "keys[0].kid: missing"},
		{map[string]any{"keys": []any{map[string]any{"kty": "EC", "kid": "p", "crv": "P-384"}}}, `keys[0].crv: "P-384"; only P-256 (ES256) is accepted`},
		{map[string]any{"keys": []any{map[string]any{"kty": "EC", "kid": "p", "crv": "P-256", "alg": "RS256"}}}, `keys[0].alg: "RS256" does not go with kty EC (ES256)`},
		{map[string]any{"keys": []any{offCurve}}, "keys[0]: not a valid EC key (the point (x, y) is not on the P-256 curve)"},
		{map[string]any{"keys": []any{rsaJWK("s", &small.PublicKey)}}, "the RSA modulus has 1024 bits; at least 2048 are needed"},
		{map[string]any{"keys": []any{map[string]any{"kty": "RSA", "kid": "r", "n": "!!", "e": "AQAB"}}}, "field 'n' is not base64url"},
		{map[string]any{"keys": []any{good, good}}, "keys[1].kid: 'a' is already the kid of another key"},
	}
	for _, tc := range cases {
		var data []byte
		if s, ok := tc.doc.(string); ok {
			data = []byte(s)
		} else {
			data, _ = json.Marshal(tc.doc)
		}
		if _, err := parseJWKS(data); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseJWKS(%s) = %v, want %q", data, err, tc.want)
		}
	}
}

func TestLooksLikeJWT(t *testing.T) {
	for s, want := range map[string]bool{
		"a.b.c": true, "a.b.": true, "eyJ.eyJ.sig-_": true,
		"abc": false, "a.b": false, "a.b.c.d": false, ".b.c": false, "a..c": false, "a.b.c d": false, "a+b.c.d": false,
	} {
		if got := looksLikeJWT(s); got != want {
			t.Errorf("looksLikeJWT(%q) = %v, want %v", s, got, want)
		}
	}
}
