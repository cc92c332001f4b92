package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/inferbridge/inferbridge/gateway/internal/tlsconf/tlsconftest"
)

func TestSecurityBlocks(t *testing.T) {
	dir := t.TempDir()
	certs := tlsconftest.Write(t, dir, "gateway")
	for name, text := range map[string]string{"keys.yaml": "keys: []\n", "secret": strings.Repeat("s", 32) + "\n",
		"upstream.key": "sk-upstream\n", "node-b.key": "sk-b"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c, err := Parse(filepath.Join(dir, "g.yaml"), []byte(`
listen:
  http: 127.0.0.1:0
  tls: {cert: server.pem, key: server.key, client_ca: ca.pem, client_auth: request}
auth:
  keys: keys.yaml
  jwt: {hs256_secret_file: secret, issuer: me, audience: you, leeway_s: 5}
  open_health: false
  default_rate: "10:20"
  rate_limits:
    - {model: "fraud-*", per_second: 100, burst: 200}
    - {model: iris, per_second: 0.5}
upstream_tls: {ca: ca.pem, cert: client.pem, key: client.key, server_name: upstream.test}
upstream_api_key_file: upstream.key
upstreams:
  - {name: a, rest: 'https://127.0.0.1:1', grpc: '127.0.0.1:2'}
  - {name: b, rest: 'http://127.0.0.1:3', tls: null, api_key_file: node-b.key}
  - {name: c, grpc: '127.0.0.1:4', tls: {ca: ca.pem}}
`))
	if err == nil || !strings.Contains(err.Error(), "upstreams[1].rest: expected an https:// URL") {
		// tls: null inherits upstream_tls, so an http:// address contradicts it.
		t.Fatalf("err = %v", err)
	}
	c, err = Parse(filepath.Join(dir, "g.yaml"), []byte(`
listen:
  http: 127.0.0.1:0
  tls: {cert: server.pem, key: server.key, client_ca: ca.pem, client_auth: request}
auth:
  keys: keys.yaml
  jwt: {hs256_secret_file: secret, issuer: me, audience: you, leeway_s: 5}
  open_health: false
  default_rate: "10:20"
  rate_limits:
    - {model: "fraud-*", per_second: 100, burst: 200}
    - {model: iris, per_second: 0.5}
upstream_tls: {ca: ca.pem, cert: client.pem, key: client.key, server_name: upstream.test}
upstream_api_key_file: upstream.key
upstreams:
  - {name: a, rest: 'https://127.0.0.1:1', grpc: '127.0.0.1:2'}
  - {name: b, rest: 'https://127.0.0.1:3', api_key_file: node-b.key}
  - {name: c, grpc: '127.0.0.1:4', tls: {ca: ca.pem}}
`))
	if err != nil {
		t.Fatal(err)
	}
	want := ServerTLS{Cert: certs.ServerCert, Key: certs.ServerKey, ClientCA: certs.CAFile, ClientAuth: "request"}
	if c.Listen.TLS == nil || *c.Listen.TLS != want {
		t.Fatalf("listen.tls %+v, want %+v (paths resolved against the file's directory)", c.Listen.TLS, want)
	}
	a := c.Auth
	if !a.Enabled() || a.KeysFile != filepath.Join(dir, "keys.yaml") || a.JWT.HS256SecretFile != filepath.Join(dir, "secret") ||
		a.JWT.Issuer != "me" || a.JWT.Audience != "you" || a.JWT.Leeway != 5*time.Second || a.OpenHealth {
		t.Fatalf("auth %+v", a)
	}
	if a.DefaultRate == nil || *a.DefaultRate != (Rate{10, 20}) {
		t.Fatalf("default_rate %+v", a.DefaultRate)
	}
	if len(a.RateLimits) != 2 || a.RateLimits[0] != (ModelRate{"fraud-*", Rate{100, 200}}) ||
		a.RateLimits[1] != (ModelRate{"iris", Rate{0.5, 1}}) {
		t.Fatalf("rate_limits %+v (burst defaults to per_second rounded up)", a.RateLimits)
	}
	ua, ub, uc := c.Upstreams[0], c.Upstreams[1], c.Upstreams[2]
	if ua.TLS == nil || ua.TLS.ServerName != "upstream.test" || ua.TLS.Cert != certs.ClientCert || ua.APIKey != "sk-upstream" {
		t.Fatalf("upstream a gets the pool's tls and key: %+v %+v", ua, ua.TLS)
	}
	if ub.APIKey != "sk-b" || ub.TLS != ua.TLS {
		t.Fatalf("upstream b: its own key, the pool's tls: %+v", ub)
	}
	if uc.TLS == nil || uc.TLS.CA != certs.CAFile || uc.TLS.Cert != "" || uc.APIKey != "sk-upstream" {
		t.Fatalf("upstream c: its own tls: %+v %+v", uc, uc.TLS)
	}
	if ua.Same(ub) || !ua.Same(ua) {
		t.Fatal("Same")
	}
	other := ua
	other.APIKey = "rotated"
	if ua.Same(other) {
		t.Fatal("an upstream whose key changed is the same")
	}

	d, err := Parse("g.yaml", []byte("upstreams: [{rest: 'http://h:1'}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if d.Auth.Enabled() || !d.Auth.OpenHealth || d.Auth.JWT.Leeway != 30*time.Second || d.Listen.TLS != nil {
		t.Fatalf("defaults: auth %+v tls %+v", d.Auth, d.Listen.TLS)
	}
}

func TestSecurityErrorsNameTheField(t *testing.T) {
	dir := t.TempDir()
	certs := tlsconftest.Write(t, dir, "gateway")
	if err := os.WriteFile(filepath.Join(dir, "empty.key"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "two.key"), []byte("a\nb\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, text := range map[string]string{"bad-keys.yaml": "keys: [{name: x, scopes: [read]}]\n", "short.secret": "tiny\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	const ups = "upstreams: [{rest: 'http://h:1'}]\n"
	for _, tc := range []struct{ yaml, want string }{
		{ups + "listen: {tls: {cert: server.pem}}\n", "g.yaml:2: listen.tls: expected both cert and key"},
		{ups + "listen: {tls: {cert: server.pem, key: nope.key}}\n", "listen.tls.key: stat " + filepath.Join(dir, "nope.key")},
		{ups + "listen: {tls: {cert: server.pem, key: client.key}}\n", "listen.tls: TLS certificate"},
		{ups + "listen: {tls: {cert: server.pem, key: server.key, client_auth: require}}\n",
			"listen.tls.client_auth: expected client_ca beside it"},
		{ups + "listen: {tls: {cert: server.pem, key: server.key, client_ca: ca.pem, client_auth: always}}\n",
			`listen.tls.client_auth: expected require or request, got "always"`},
		{ups + "listen: {tls: {cert: server.pem, key: server.key, ca: ca.pem}}\n", "listen.tls.ca: unknown field (expected one of cert, client_auth, client_ca, key)"},
		{ups + "listen: {tls: {cert: server.pem, key: server.key, client_ca: server.key}}\n", "listen.tls: client CA: "},
		{ups + "auth: {keys: missing.yaml}\n", "g.yaml:2: auth.keys: stat "},
		{ups + "auth: {keys: bad-keys.yaml}\n", "g.yaml: auth: "},
		{ups + "auth: {jwt: {hs256_secret_file: short.secret}}\n", "g.yaml: auth: JWT secret file"},
		{ups + "auth: {jwt: {issuer: me}}\n", "g.yaml: auth: a JWT issuer or audience is set without a JWT verifier"},
		{ups + "auth: {jwt: {leeway_s: 301}}\n", "auth.jwt.leeway_s: expected a whole number of seconds from 0 to 300"},
		{ups + "auth: {jwt: {secret: x}}\n", "auth.jwt.secret: unknown field (expected one of audience, hs256_secret_file, issuer, jwks, leeway_s)"},
		{ups + "auth: {open_health: maybe}\n", "auth.open_health: expected true or false"},
		{ups + "auth: {default_rate: fast}\n", "auth.default_rate: expected RPS[:BURST]"},
		{ups + "auth: {default_rate: '10:0'}\n", "auth.default_rate: expected RPS[:BURST]"},
		{ups + "auth: {default_rate: {burst: 3}}\n", "auth.default_rate.per_second: expected a positive number"},
		{ups + "auth: {rate_limits: {iris: 3}}\n", "auth.rate_limits: expected a list of {model: GLOB, per_second: N, burst: N}"},
		{ups + "auth: {rate_limits: [{per_second: 3}]}\n", "auth.rate_limits[0].model: expected a model name glob"},
		{ups + "auth: {rate_limits: [{model: a, per_second: -1}]}\n", "auth.rate_limits[0].per_second: expected a positive number"},
		{ups + "auth: {rate_limits: [{model: a, per_second: 1, burst: 0.5}]}\n", "auth.rate_limits[0].burst: expected an integer of at least 1"},
		{ups + "auth: {rate_limits: [{model: a, rps: 1}]}\n", "auth.rate_limits[0].rps: unknown field"},
		{ups + "upstream_tls: {cert: client.pem}\n", "upstream_tls: expected cert and key together"},
		{ups + "upstream_tls: {ca: server.key}\n", "upstream_tls: CA: "},
		{ups + "upstream_tls: {ca: ca.pem}\n", "upstreams[0].rest: expected an https:// URL"},
		{"upstreams: [{rest: 'https://h:1'}]\n", "upstreams[0].tls: expected a tls block"},
		{ups + "upstream_api_key_file: empty.key\n", "upstream_api_key_file: expected a file holding one API key on one line, got an empty file"},
		{ups + "upstream_api_key_file: two.key\n", "got several lines"},
		{"upstreams: [{rest: 'http://h:1', api_key_file: gone.key}]\n", "upstreams[0].api_key_file: stat "},
		{"upstreams: [{grpc: 'h:1', tls: {server_name: [a]}}]\n", "upstreams[0].tls.server_name: expected a string"},
	} {
		_, err := Parse(filepath.Join(dir, "g.yaml"), []byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("config %q: error %v, want it to contain %q", tc.yaml, err, tc.want)
		}
	}
	_ = certs
}

func TestUpstreamsFileGetsThePoolsTLSAndKey(t *testing.T) {
	dir := t.TempDir()
	tlsconftest.Write(t, dir, "gateway")
	sub := filepath.Join(dir, "more")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	tlsconftest.Write(t, sub, "gateway") // the file's own tls paths resolve in its directory
	os.WriteFile(filepath.Join(dir, "up.key"), []byte("sk-1\n"), 0o600)
	os.WriteFile(filepath.Join(sub, "ups.yaml"), []byte("- {name: x, rest: 'https://h:1'}\n- {name: y, grpc: 'h:2', tls: {ca: ca.pem}}\n"), 0o600)
	c, err := Parse(filepath.Join(dir, "g.yaml"), []byte("upstreams_file: more/ups.yaml\nupstream_tls: {ca: ca.pem}\nupstream_api_key_file: up.key\n"))
	if err != nil {
		t.Fatal(err)
	}
	ups, err := c.LoadUpstreams()
	if err != nil {
		t.Fatal(err)
	}
	if ups[0].TLS != c.UpstreamTLS || ups[0].APIKey != "sk-1" || ups[1].TLS.CA != filepath.Join(sub, "ca.pem") {
		t.Fatalf("upstreams %+v %+v", ups[0], ups[1].TLS)
	}
	os.WriteFile(filepath.Join(sub, "ups.yaml"), []byte("- {name: x, rest: 'http://h:1'}\n"), 0o600)
	if _, err := c.LoadUpstreams(); err == nil || !strings.Contains(err.Error(), "ups.yaml: upstreams[0].rest: expected an https:// URL") {
		t.Fatalf("err = %v", err)
	}
}
