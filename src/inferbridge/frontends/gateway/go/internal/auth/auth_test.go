package auth

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/inferbridge/inferbridge/gateway/internal/clock"
)

func digest(key string) string {
	d := sha256.Sum256([]byte(key))
	return hex.EncodeToString(d[:])
}

const (
	paymentsKey = "ib_payments_0123456789abcdef"
	readerKey   = "ib_reader_0123456789abcdef"
	adminKey    = "ib_admin_0123456789abcdef"
	expiredKey  = "ib_expired_0123456789abcdef"
)

func keysYAML(extra string) string {
	return fmt.Sprintf(`keys:
  - name: payments
    sha256: %s
    scopes: ["infer:fraud-*", read]
    rate: {per_second: 1, burst: 2}
  - name: reader
    sha256: %s
    scopes: [read]
  - name: ops
    sha256: %s
    scopes: [admin]
  - name: old
    sha256: %s
    scopes: [infer]
    expires: 2020-01-01T00:00:00Z
  - name: batch
    subject: batch.internal
    scopes: ["infer:*"]
%s`, digest(paymentsKey), digest(readerKey), digest(adminKey), digest(expiredKey), extra)
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// logRecorder collects the authority's log lines.
type logRecorder struct {
	mu    sync.Mutex
	lines []string
}

func (l *logRecorder) logf(format string, args ...any) {
	l.mu.Lock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
	l.mu.Unlock()
}

func (l *logRecorder) text() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

func newKeysAuthority(t testing.TB, c Config) (*Authority, *clock.Fake, string, *logRecorder) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keys.yaml")
	writeFile(t, path, keysYAML(""))
	fake := clock.NewFake()
	c.KeysFile, c.Clock = path, fake
	logs := &logRecorder{}
	a, err := New(c, logs.logf)
	if err != nil {
		t.Fatal(err)
	}
	return a, fake, path, logs
}

func infer(model string) Action { return Action{Kind: Infer, Model: model} }

func TestNilAndDisabledAuthorityAllowEverything(t *testing.T) {
	var a *Authority
	if a.Enabled() || a.Active() {
		t.Fatal("a nil authority is enabled")
	}
	if p, d := a.Check(Credentials{}, Action{Kind: Admin}); p != "" || d != nil {
		t.Fatalf("nil authority: %q %+v", p, d)
	}
	off, err := New(Config{OpenHealth: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if off.Enabled() || off.Active() {
		t.Fatal("an authority without files or rates is active")
	}
	if p, d := off.Check(Credentials{}, Action{Kind: Admin}); p != "" || d != nil {
		t.Fatalf("disabled authority: %q %+v", p, d)
	}
}

func TestAPIKeys(t *testing.T) {
	a, fake, _, _ := newKeysAuthority(t, Config{OpenHealth: true})
	if !a.Enabled() {
		t.Fatal("keys file configured but not enabled")
	}
	cases := []struct {
		name      string
		cred      Credentials
		act       Action
		principal string
		status    int
		message   string
		sent      bool
	}{
		{"key in x-api-key", Credentials{APIKey: paymentsKey}, infer("fraud-v2"), "payments", 0, "", false},
		{"key as bearer", Credentials{Authorization: "Bearer " + paymentsKey}, infer("fraud-v2"), "payments", 0, "", false},
		{"bearer scheme is case-insensitive", Credentials{Authorization: "bearer " + readerKey}, Action{Kind: Read}, "reader", 0, "", false},
		{"no credential", Credentials{}, infer("iris"), "", 401, noCredential, false},
		{"unknown key", Credentials{APIKey: "nope"}, infer("iris"), "", 401, "the API key is not valid", true},
		{"not bearer", Credentials{Authorization: "Basic " + paymentsKey}, infer("iris"), "", 401, "the Authorization header must be 'Bearer <credential>'", true},
		{"empty bearer", Credentials{Authorization: "Bearer "}, infer("iris"), "", 401, "the Authorization header must be 'Bearer <credential>'", true},
		{"bad authorization decides over a good x-api-key", Credentials{Authorization: "Bearer nope", APIKey: paymentsKey}, infer("fraud-1"), "", 401, "the API key is not valid", true},
		{"no scope for the model", Credentials{APIKey: paymentsKey}, infer("iris"), "", 403,
			"principal 'payments' may not infer on model 'iris' (its scopes: infer:fraud-*, read)", false},
		{"read may read", Credentials{APIKey: readerKey}, Action{Kind: Read}, "reader", 0, "", false},
		{"read may not infer", Credentials{APIKey: readerKey}, infer("iris"), "", 403,
			"principal 'reader' may not infer on model 'iris' (its scopes: read)", false},
		{"read may not change", Credentials{APIKey: readerKey}, Action{Kind: Admin}, "", 403,
			"principal 'reader' may not change the server (it needs the admin scope) (its scopes: read)", false},
		{"read may not use shared memory", Credentials{APIKey: readerKey}, Action{Kind: SharedMemory}, "", 403,
			"principal 'reader' may not use shared memory (it needs an infer: scope) (its scopes: read)", false},
		{"any infer scope grants shared memory", Credentials{APIKey: paymentsKey}, Action{Kind: SharedMemory}, "payments", 0, "", false},
		{"admin may do everything", Credentials{APIKey: adminKey}, infer("iris"), "ops", 0, "", false},
		{"admin may change", Credentials{APIKey: adminKey}, Action{Kind: Admin}, "ops", 0, "", false},
		{"any valid credential for unknown routes", Credentials{APIKey: readerKey}, Action{Kind: Any}, "reader", 0, "", false},
		{"unknown route without credential", Credentials{}, Action{Kind: Any}, "", 401, noCredential, false},
		{"open health", Credentials{}, Action{Kind: Health}, "", 0, "", false},
		{"open health ignores a bad key", Credentials{APIKey: "nope"}, Action{Kind: Health}, "", 0, "", false},
		{"expired key", Credentials{APIKey: expiredKey}, infer("iris"), "", 401, "API key 'old' expired at 2020-01-01T00:00:00Z", true},
		{"client certificate subject", Credentials{CertSubject: "batch.internal"}, infer("iris"), "batch", 0, "", false},
		{"unknown certificate subject", Credentials{CertSubject: "stranger"}, infer("iris"), "", 401,
			"the client certificate's subject 'stranger' is not a principal of the keys file", false},
		{"a key beats the certificate", Credentials{CertSubject: "batch.internal", APIKey: readerKey}, infer("iris"), "", 403,
			"principal 'reader' may not infer on model 'iris' (its scopes: read)", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fake.Advance(time.Minute) // payments' bucket (burst 2) is full again
			p, d := a.Check(tc.cred, tc.act)
			if tc.status == 0 {
				if d != nil {
					t.Fatalf("refused: %+v", d)
				}
				if p != tc.principal {
					t.Fatalf("principal %q, want %q", p, tc.principal)
				}
				return
			}
			if d == nil {
				t.Fatalf("allowed as %q, want %d", p, tc.status)
			}
			if d.Status != tc.status || d.Message != tc.message || d.TokenSent != tc.sent {
				t.Fatalf("got %d %q sent=%v, want %d %q sent=%v", d.Status, d.Message, d.TokenSent, tc.status, tc.message, tc.sent)
			}
			for _, secret := range []string{paymentsKey, readerKey, adminKey, expiredKey} {
				if strings.Contains(d.Message, secret) {
					t.Fatalf("the message quotes a key: %q", d.Message)
				}
			}
		})
	}
}

func TestClosedHealthNeedsRead(t *testing.T) {
	a, _, _, _ := newKeysAuthority(t, Config{OpenHealth: false})
	if _, d := a.Check(Credentials{}, Action{Kind: Health}); d == nil || d.Status != 401 {
		t.Fatalf("health without credential: %+v", d)
	}
	if p, d := a.Check(Credentials{APIKey: readerKey}, Action{Kind: Health}); d != nil || p != "reader" {
		t.Fatalf("health with read: %q %+v", p, d)
	}
	if _, d := a.Check(Credentials{CertSubject: "batch.internal"}, Action{Kind: Health}); d == nil || d.Status != 403 {
		t.Fatalf("health with only infer: %+v", d)
	}
}

func TestKeysFileErrors(t *testing.T) {
	good := digest("k1")
	cases := []struct {
		name, file, want string
	}{
		{"empty", "", "the file is empty"},
		{"not a mapping", "- a\n", "expected a mapping with a 'keys' list"},
		{"unknown top-level field", "keys: []\nextra: 1\n", "unknown field 'extra' (expected keys)"},
		{"no keys field", "{}\n", "no 'keys' field"},
		{"unknown entry field", "keys:\n  - name: a\n    sha256: " + good + "\n    scopes: [read]\n    scope: x\n", "keys[0] (line 2): unknown field 'scope'"},
		{"bad name", "keys:\n  - name: 'a b'\n    sha256: " + good + "\n    scopes: [read]\n", "keys[0] (line 2): field 'name'"},
		{"missing name", "keys:\n  - sha256: " + good + "\n    scopes: [read]\n", "field 'name' is missing"},
		{"both digest and subject", "keys:\n  - name: a\n    sha256: " + good + "\n    subject: x\n    scopes: [read]\n", "exactly one of the fields 'sha256' and 'subject'"},
		{"neither digest nor subject", "keys:\n  - name: a\n    scopes: [read]\n", "exactly one of the fields 'sha256' and 'subject'"},
		{"bad digest", "keys:\n  - name: a\n    sha256: my-secret-key\n    scopes: [read]\n", "field 'sha256': expected the key's SHA-256 as 64 lower-case hex digits"},
		{"bad scope", "keys:\n  - name: a\n    sha256: " + good + "\n    scopes: [write]\n", `field 'scopes': scope "write" is not one of`},
		{"empty infer glob", "keys:\n  - name: a\n    sha256: " + good + "\n    scopes: ['infer:']\n", "scope 'infer:' needs a model glob"},
		{"upper-case digest", "keys:\n  - name: a\n    sha256: " + strings.ToUpper(good) + "\n    scopes: [read]\n", "64 lower-case hex digits"},
		{"agent scope is allowed, unknown ones are not", "keys:\n  - name: a\n    sha256: " + good + "\n    scopes: [agent, write]\n", `scope "write" is not one of`},
		{"scopes missing", "keys:\n  - name: a\n    sha256: " + good + "\n", "field 'scopes' is missing"},
		{"bad date", "keys:\n  - name: a\n    sha256: " + good + "\n    scopes: [read]\n    expires: tomorrow\n", `field 'expires': "tomorrow" is not an RFC 3339 date-time`},
		{"date without time", "keys:\n  - name: a\n    sha256: " + good + "\n    scopes: [read]\n    expires: 2027-06-30\n", "field 'expires'"},
		{"time without zone", "keys:\n  - name: a\n    sha256: " + good + "\n    scopes: [read]\n    expires: 2027-06-30T00:00:00\n", "with a time zone"},
		{"bad rate", "keys:\n  - name: a\n    sha256: " + good + "\n    scopes: [read]\n    rate: {per_second: 0}\n", "field 'rate': per_second must be a positive number"},
		{"unknown rate field", "keys:\n  - name: a\n    sha256: " + good + "\n    scopes: [read]\n    rate: {per_second: 1, bursts: 2}\n", "field 'rate': unknown field 'bursts'"},
		{"duplicate name", "keys:\n  - name: a\n    sha256: " + good + "\n    scopes: [read]\n  - name: a\n    sha256: " + digest("k2") + "\n    scopes: [read]\n", "keys[1] (line 5): field 'name': 'a' is also the name of keys[0]"},
		{"duplicate digest", "keys:\n  - name: a\n    sha256: " + good + "\n    scopes: [read]\n  - name: b\n    sha256: " + good + "\n    scopes: [read]\n", "keys[1] (line 5): field 'sha256': the same digest as 'a'"},
		{"duplicate subject", "keys:\n  - name: a\n    subject: s\n    scopes: [read]\n  - name: b\n    subject: s\n    scopes: [read]\n", "field 'subject': 's' is also the subject of 'a'"},
		{"duplicate field", "keys:\n  - name: a\n    name: b\n    sha256: " + good + "\n    scopes: [read]\n", "field 'name' given twice"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseKeys([]byte(tc.file))
			if err == nil {
				t.Fatalf("accepted; want an error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want it to contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "my-secret-key") {
				t.Fatalf("the error quotes the sha256 field: %q", err)
			}
		})
	}
	// A good file with every field.
	ks, err := parseKeys([]byte(keysYAML("")))
	if err != nil {
		t.Fatal(err)
	}
	if e := ks.byKey(paymentsKey); e == nil || e.name != "payments" || *e.rate != (Rate{1, 2}) {
		t.Fatalf("payments entry: %+v", e)
	}
	if e := ks.bySubject["batch.internal"]; e == nil || e.name != "batch" {
		t.Fatalf("batch entry: %+v", e)
	}
	// burst defaults to per_second, rounded up.
	ks, err = parseKeys([]byte("keys:\n  - name: a\n    sha256: " + good + "\n    scopes: []\n    rate: {per_second: 2.5}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if r := *ks.byKey("k1").rate; r != (Rate{2.5, 3}) {
		t.Fatalf("default burst: %+v", r)
	}
}

func TestNewRefusesBadFiles(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	writeFile(t, bad, "keys:\n  - name: a\n")
	short := filepath.Join(dir, "short")
	writeFile(t, short, "too short\n")
	cases := []struct {
		c    Config
		want string
	}{
		{Config{KeysFile: filepath.Join(dir, "missing.yaml")}, "keys file " + dir + "/missing.yaml cannot be read (no such file or directory)"},
		{Config{KeysFile: bad}, "keys file " + bad + ": keys[0]"},
		{Config{JWTSecretFile: short}, "the HS256 secret has 9 bytes; at least 32 are needed"},
		{Config{JWKSFile: bad}, "JWKS file " + bad + ": not valid JSON"},
		{Config{JWTSecretFile: filepath.Join(dir, "nope")}, "JWT secret file"},
		{Config{Issuer: "x"}, "without a JWT verifier"},
		{Config{Leeway: time.Hour}, "JWT leeway 1h0m0s: expected 0 to 5m0s"},
		{Config{DefaultRate: &Rate{0, 1}}, "default rate"},
		{Config{ModelRates: []ModelRate{{Glob: "", Rate: Rate{1, 1}}}}, "the glob is empty"},
	}
	for _, tc := range cases {
		if _, err := New(tc.c, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want an error containing %q", tc.c, err, tc.want)
		}
	}
}

func TestKeysFileReload(t *testing.T) {
	a, fake, path, logs := newKeysAuthority(t, Config{})
	const newKey = "ib_new_0123456789abcdef"
	extra := "  - name: newcomer\n    sha256: " + digest(newKey) + "\n    scopes: [read]\n"
	writeFile(t, path, keysYAML(extra))
	// Not looked at again within a second.
	if _, d := a.Check(Credentials{APIKey: newKey}, Action{Kind: Read}); d == nil {
		t.Fatal("reloaded within the second")
	}
	fake.Advance(reloadEvery)
	if p, d := a.Check(Credentials{APIKey: newKey}, Action{Kind: Read}); d != nil || p != "newcomer" {
		t.Fatalf("after the reload: %q %+v", p, d)
	}
	if !strings.Contains(logs.text(), "reloaded") {
		t.Fatalf("no reload logged: %q", logs.text())
	}
	// A bad file is logged once and the last good one stays.
	writeFile(t, path, "keys:\n  - name: broken\n")
	for i := 0; i < 3; i++ {
		fake.Advance(reloadEvery)
		if p, d := a.Check(Credentials{APIKey: newKey}, Action{Kind: Read}); d != nil || p != "newcomer" {
			t.Fatalf("the last good file is not in force: %q %+v", p, d)
		}
	}
	if n := strings.Count(logs.text(), "the last good one stays in force"); n != 1 {
		t.Fatalf("the bad file was logged %d times: %q", n, logs.text())
	}
	if !strings.Contains(logs.text(), "is not valid (keys[0]") {
		t.Fatalf("the log does not say why: %q", logs.text())
	}
	// A removed file too.
	os.Remove(path)
	fake.Advance(reloadEvery)
	if _, d := a.Check(Credentials{APIKey: newKey}, Action{Kind: Read}); d != nil {
		t.Fatalf("a removed file dropped the keys: %+v", d)
	}
	// Fixed again: a key dropped from the file stops working.
	writeFile(t, path, keysYAML(""))
	fake.Advance(reloadEvery)
	if _, d := a.Check(Credentials{APIKey: newKey}, Action{Kind: Read}); d == nil || d.Status != 401 {
		t.Fatalf("a removed key still works: %+v", d)
	}
}

func TestBucketSurvivesReloadWhenRateUnchanged(t *testing.T) {
	a, fake, path, _ := newKeysAuthority(t, Config{})
	use := func() *Denial {
		_, d := a.Check(Credentials{APIKey: paymentsKey}, infer("fraud-1"))
		return d
	}
	if use() != nil || use() != nil {
		t.Fatal("burst of 2 refused")
	}
	if d := use(); d == nil || d.Status != 429 {
		t.Fatalf("third request: %+v", d)
	}
	// Another entry changes; payments' name and rate do not: its bucket stays empty.
	writeFile(t, path, keysYAML("  - name: other\n    subject: other\n    scopes: [read]\n"))
	fake.Advance(reloadEvery) // also one more token
	if use() != nil {
		t.Fatal("the token gained over a second was refused")
	}
	if d := use(); d == nil || d.Status != 429 {
		t.Fatalf("the bucket was reset by a reload that did not change the rate: %+v", d)
	}
	// Its rate changes: a new bucket, full.
	writeFile(t, path, strings.Replace(keysYAML(""), "{per_second: 1, burst: 2}", "{per_second: 1, burst: 3}", 1))
	fake.Advance(reloadEvery)
	for i := 0; i < 3; i++ {
		if d := use(); d != nil {
			t.Fatalf("request %d under the new rate refused: %+v", i, d)
		}
	}
	if d := use(); d == nil || d.Status != 429 {
		t.Fatalf("over the new burst: %+v", d)
	}
}

func TestRates(t *testing.T) {
	def := Rate{PerSecond: 0.5, Burst: 1}
	a, fake, _, _ := newKeysAuthority(t, Config{
		DefaultRate: &def,
		ModelRates: []ModelRate{
			{Glob: "fraud-*", Rate: Rate{PerSecond: 1, Burst: 1}},
			{Glob: "*", Rate: Rate{PerSecond: 100, Burst: 100}},
		},
	})
	// payments has its own rate (1/s burst 2); model fraud-1 has 1/s burst 1.
	if _, d := a.Check(Credentials{APIKey: paymentsKey}, infer("fraud-1")); d != nil {
		t.Fatal(d)
	}
	_, d := a.Check(Credentials{APIKey: paymentsKey}, infer("fraud-1"))
	if d == nil || d.Status != 429 || d.RetryAfter != time.Second ||
		d.Message != "model 'fraud-1' is over its rate limit of 1 requests/s (burst 1); retry in 1 s" {
		t.Fatalf("model bucket: %+v", d)
	}
	// The model refused it, so the principal's token was given back: fraud-2 (its own
	// bucket) still has room for payments' second token.
	if _, d := a.Check(Credentials{APIKey: paymentsKey}, infer("fraud-2")); d != nil {
		t.Fatalf("the principal's token was not given back: %+v", d)
	}
	_, d = a.Check(Credentials{APIKey: paymentsKey}, infer("fraud-3"))
	if d == nil || d.Status != 429 || !strings.HasPrefix(d.Message, "principal 'payments' is over its rate limit of 1 requests/s (burst 2); retry in 1 s") {
		t.Fatalf("principal bucket: %+v", d)
	}
	// The default rate: 0.5/s, so the wait is 2 s.
	if _, d := a.Check(Credentials{APIKey: readerKey}, Action{Kind: Read}); d != nil {
		t.Fatal(d)
	}
	_, d = a.Check(Credentials{APIKey: readerKey}, Action{Kind: Read})
	if d == nil || d.RetryAfter != 2*time.Second || !strings.HasSuffix(d.Message, "retry in 2 s") {
		t.Fatalf("default rate: %+v", d)
	}
	fake.Advance(2 * time.Second)
	if _, d := a.Check(Credentials{APIKey: readerKey}, Action{Kind: Read}); d != nil {
		t.Fatalf("after the wait: %+v", d)
	}
}

func TestModelRatesWithAuthenticationOff(t *testing.T) {
	fake := clock.NewFake()
	a, err := New(Config{Clock: fake, ModelRates: []ModelRate{{Glob: "iris", Rate: Rate{PerSecond: 10, Burst: 2}}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if a.Enabled() || !a.Active() {
		t.Fatal("model rates alone: want active, not enabled")
	}
	for i := 0; i < 2; i++ {
		if _, d := a.Check(Credentials{}, infer("iris")); d != nil {
			t.Fatal(d)
		}
	}
	_, d := a.Check(Credentials{}, infer("iris"))
	if d == nil || d.Status != http.StatusTooManyRequests || d.RetryAfter != time.Second {
		t.Fatalf("over the model's rate: %+v", d)
	}
	if _, d := a.Check(Credentials{}, infer("other")); d != nil {
		t.Fatalf("a model without a rule: %+v", d)
	}
	if _, d := a.Check(Credentials{}, Action{Kind: Read}); d != nil {
		t.Fatalf("a non-infer request: %+v", d)
	}
	fake.Advance(100 * time.Millisecond)
	if _, d := a.Check(Credentials{}, infer("iris")); d != nil {
		t.Fatalf("after a token's time: %+v", d)
	}
}

func TestBucketTableIsBounded(t *testing.T) {
	var b buckets
	now := time.Unix(1000, 0)
	r := Rate{PerSecond: 1000, Burst: 1}
	for i := 0; i < 3*maxIdleBuckets; i++ {
		b.take(fmt.Sprintf("m%d", i), r, now)
		now = now.Add(time.Millisecond) // each earlier bucket is full again
	}
	if n := len(b.m); n > maxIdleBuckets+1 {
		t.Fatalf("%d buckets kept", n)
	}
}

func TestParseRate(t *testing.T) {
	good := map[string]Rate{"100:200": {100, 200}, "5": {5, 5}, "0.5": {0.5, 1}, "2.5:1": {2.5, 1}}
	for s, want := range good {
		if r, err := ParseRate(s); err != nil || r != want {
			t.Errorf("ParseRate(%q) = %+v, %v; want %+v", s, r, err, want)
		}
	}
	for _, s := range []string{"", "x", "0", "-1", "1:0", "1:x", "1:2.5", "NaN", "Inf", "1:2:3"} {
		if _, err := ParseRate(s); err == nil || !strings.Contains(err.Error(), "RPS[:BURST]") {
			t.Errorf("ParseRate(%q) = %v, want an error naming RPS[:BURST]", s, err)
		}
	}
	mr, err := ParseModelRate("fraud-*=100:200")
	if err != nil || mr != (ModelRate{"fraud-*", Rate{100, 200}}) {
		t.Fatalf("ParseModelRate: %+v %v", mr, err)
	}
	for _, s := range []string{"fraud", "=1", "m=", "m=0"} {
		if _, err := ParseModelRate(s); err == nil || !strings.Contains(err.Error(), s) {
			t.Errorf("ParseModelRate(%q) = %v, want an error quoting it", s, err)
		}
	}
}

func TestGlobMatch(t *testing.T) {
	cases := []struct {
		glob, name string
		want       bool
	}{
		{"*", "", true},
		{"*", "anything", true},
		{"iris", "iris", true},
		{"iris", "iris2", false},
		{"fraud-*", "fraud-", true},
		{"fraud-*", "fraud-v2", true},
		{"fraud-*", "afraud-v2", false},
		{"*-v?", "fraud-v2", true},
		{"*-v?", "fraud-v22", false},
		{"?", "é", true}, // one character, two bytes
		{"??", "é", false},
		{"a*b*c", "axxbyyc", true},
		{"a*b*c", "axxbyy", false},
		{"a*a*a*a*b", strings.Repeat("a", 60), false},
		{"[ab]", "a", false}, // only * and ? are special
		{"[ab]", "[ab]", true},
		{"a\\*", "a\\xyz", true},
		{"a.c", "abc", false},
		{"**", "x", true},
	}
	for _, tc := range cases {
		if got := globMatch(tc.glob, tc.name); got != tc.want {
			t.Errorf("globMatch(%q, %q) = %v, want %v", tc.glob, tc.name, got, tc.want)
		}
	}
}

func TestDenialNamesThePrincipal(t *testing.T) {
	a, _, _, _ := newKeysAuthority(t, Config{})
	if _, d := a.Check(Credentials{APIKey: paymentsKey}, infer("iris")); d == nil || d.Principal != "payments" {
		t.Fatalf("403: %+v", d)
	}
	if _, d := a.Check(Credentials{APIKey: "nope"}, infer("iris")); d == nil || d.Principal != "" {
		t.Fatalf("401: %+v", d)
	}
	for i := 0; i < 2; i++ {
		a.Check(Credentials{APIKey: paymentsKey}, infer("fraud-1"))
	}
	if _, d := a.Check(Credentials{APIKey: paymentsKey}, infer("fraud-1")); d == nil || d.Status != 429 || d.Principal != "payments" {
		t.Fatalf("429: %+v", d)
	}
}

func TestExpiryLayouts(t *testing.T) {
	want := time.Date(2027, 6, 30, 0, 0, 0, 0, time.UTC)
	for _, s := range []string{"2027-06-30T00:00:00Z", "2027-06-30 00:00:00Z", "2027-06-30T00:00Z", "2027-06-30T02:00:00+02:00", "2027-06-30T00:00:00.000Z"} {
		if got, err := parseExpiry(s); err != nil || !got.Equal(want) {
			t.Errorf("parseExpiry(%q) = %v, %v", s, got, err)
		}
	}
}

// TestConcurrentChecksDuringReloads: checks from many goroutines while the keys file
// changes and the clock moves (run with -race).
func TestConcurrentChecksDuringReloads(t *testing.T) {
	a, fake, path, _ := newKeysAuthority(t, Config{ModelRates: []ModelRate{{Glob: "*", Rate: Rate{PerSecond: 1e6, Burst: 1000}}}})
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if p, d := a.Check(Credentials{APIKey: readerKey}, Action{Kind: Read}); d != nil || p != "reader" {
					t.Errorf("reader refused: %+v", d)
					return
				}
				a.Check(Credentials{APIKey: paymentsKey}, infer("fraud-1"))
			}
		}()
	}
	for i := 0; i < 20; i++ {
		writeFile(t, path, keysYAML(fmt.Sprintf("  - name: extra%d\n    subject: s%d\n    scopes: [read]\n", i, i)))
		fake.Advance(reloadEvery)
		time.Sleep(time.Millisecond)
	}
	close(stop)
	wg.Wait()
}
