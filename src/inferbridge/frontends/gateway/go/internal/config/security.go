package config

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/inferbridge/inferbridge/gateway/internal/auth"
	"github.com/inferbridge/inferbridge/gateway/internal/tlsconf"
)

// The security settings of the pool gateway (docs/security.md, docs/gateway.md
// "Security"): TLS on the listeners, authentication and rate limits of the clients, and
// TLS and a key towards the upstreams. Paths are resolved against the directory of the
// file they are written in.

// ServerTLS is the listeners' TLS (`listen.tls`): REST and gRPC speak TLS only.
type ServerTLS struct {
	Cert, Key  string // PEM chain and key, re-read when they change
	ClientCA   string // mutual TLS ("" = none)
	ClientAuth string // "require" (the default with a client CA) or "request"
}

// UpstreamTLS is how the gateway reaches an upstream over TLS (`tls` of an upstream, or
// `upstream_tls` for all).
type UpstreamTLS struct {
	CA         string // CAs the upstream's certificate is verified against ("" = the system's)
	Cert, Key  string // the gateway's client certificate ("" = none)
	ServerName string // the name the certificate must carry ("" = the host of the address)
}

// Rate is a token bucket: up to Burst tokens, PerSecond more a second.
type Rate struct {
	PerSecond float64
	Burst     int
}

// ModelRate is one `auth.rate_limits` rule: each model matching Glob has its own bucket.
type ModelRate struct {
	Glob string
	Rate Rate
}

// Auth is the `auth` block: who may call what, and how often.
type Auth struct {
	KeysFile string // the API keys file ("" = none)
	JWT      struct {
		HS256SecretFile  string
		JWKSFile         string
		Issuer, Audience string
		Leeway           time.Duration
	}
	OpenHealth  bool  // health endpoints without credentials (default true)
	DefaultRate *Rate // of principals without a rate of their own (nil = none)
	RateLimits  []ModelRate
}

// Enabled tells whether requests need a credential (a keys file or a JWT verifier).
func (a *Auth) Enabled() bool {
	return a.KeysFile != "" || a.JWT.HS256SecretFile != "" || a.JWT.JWKSFile != ""
}

// AuthConfig is the block as package auth takes it.
func (a *Auth) AuthConfig() auth.Config {
	ac := auth.Config{
		KeysFile: a.KeysFile, JWTSecretFile: a.JWT.HS256SecretFile, JWKSFile: a.JWT.JWKSFile,
		Issuer: a.JWT.Issuer, Audience: a.JWT.Audience, Leeway: a.JWT.Leeway, OpenHealth: a.OpenHealth,
	}
	if a.DefaultRate != nil {
		ac.DefaultRate = &auth.Rate{PerSecond: a.DefaultRate.PerSecond, Burst: a.DefaultRate.Burst}
	}
	for _, mr := range a.RateLimits {
		ac.ModelRates = append(ac.ModelRates, auth.ModelRate{Glob: mr.Glob, Rate: auth.Rate{PerSecond: mr.Rate.PerSecond, Burst: mr.Rate.Burst}})
	}
	return ac
}

func defaultAuth() Auth {
	a := Auth{OpenHealth: true}
	a.JWT.Leeway = 30 * time.Second
	return a
}

// relPath resolves a path written in the parser's file against that file's directory.
func (p *parser) relPath(path string) string {
	if path == "" || filepath.IsAbs(path) {
		return path
	}
	return filepath.Join(filepath.Dir(p.file), path)
}

// path reads a path field (resolved against the file's directory; it must exist).
func (p *parser) path(dst *string) func(*yaml.Node, string) error {
	return func(n *yaml.Node, field string) error {
		if err := p.str(n, field, dst); err != nil {
			return err
		}
		if *dst == "" {
			return p.errorf(n, field, "a file path")
		}
		*dst = p.relPath(*dst)
		if _, err := os.Stat(*dst); err != nil {
			return fmt.Errorf("%s:%d: %s: %v", p.file, n.Line, field, err)
		}
		return nil
	}
}

func (p *parser) serverTLS(n *yaml.Node, field string) (*ServerTLS, error) {
	if isNull(n) {
		return nil, nil
	}
	t := &ServerTLS{}
	err := p.mapping(n, field, map[string]func(*yaml.Node, string) error{
		"cert":      p.path(&t.Cert),
		"key":       p.path(&t.Key),
		"client_ca": p.path(&t.ClientCA),
		"client_auth": func(n *yaml.Node, f string) error {
			if err := p.str(n, f, &t.ClientAuth); err != nil {
				return err
			}
			if t.ClientAuth != tlsconf.ClientAuthRequire && t.ClientAuth != tlsconf.ClientAuthRequest {
				return p.errorf(n, f, "require or request")
			}
			return nil
		},
	})
	switch {
	case err != nil:
		return nil, err
	case t.Cert == "" || t.Key == "":
		return nil, p.errorf(n, field, "both cert and key")
	case t.ClientAuth != "" && t.ClientCA == "":
		return nil, p.errorf(n, field+".client_auth", "client_ca beside it (the CAs client certificates are verified against)")
	}
	// Load the files now, so that a bad pair fails --check and the start, not a handshake.
	if _, err := tlsconf.Server(tlsconf.Files{Cert: t.Cert, Key: t.Key, ClientCA: t.ClientCA, ClientAuth: t.ClientAuth}, nil); err != nil {
		return nil, fmt.Errorf("%s:%d: %s: %v", p.file, n.Line, field, err)
	}
	return t, nil
}

func (p *parser) upstreamTLS(n *yaml.Node, field string) (*UpstreamTLS, error) {
	if isNull(n) {
		return nil, nil
	}
	t := &UpstreamTLS{}
	err := p.mapping(n, field, map[string]func(*yaml.Node, string) error{
		"ca":          p.path(&t.CA),
		"cert":        p.path(&t.Cert),
		"key":         p.path(&t.Key),
		"server_name": func(n *yaml.Node, f string) error { return p.str(n, f, &t.ServerName) },
	})
	if err != nil {
		return nil, err
	}
	if (t.Cert == "") != (t.Key == "") {
		return nil, p.errorf(n, field, "cert and key together (the gateway's client certificate), or neither")
	}
	if _, err := tlsconf.Client(t.CA, t.Cert, t.Key, t.ServerName); err != nil {
		return nil, fmt.Errorf("%s:%d: %s: %v", p.file, n.Line, field, err)
	}
	return t, nil
}

// apiKeyFile reads the key an upstream is sent (`api_key_file`): the file's text less one
// trailing newline.
func (p *parser) apiKeyFile(path, key *string) func(*yaml.Node, string) error {
	return func(n *yaml.Node, field string) error {
		if err := p.path(path)(n, field); err != nil {
			return err
		}
		data, err := os.ReadFile(*path)
		if err != nil {
			return fmt.Errorf("%s:%d: %s: %v", p.file, n.Line, field, err)
		}
		*key = strings.TrimSuffix(strings.TrimSuffix(string(data), "\n"), "\r")
		if *key == "" || strings.ContainsAny(*key, "\r\n") {
			return fmt.Errorf("%s:%d: %s: expected a file holding one API key on one line, got %s",
				p.file, n.Line, field, map[bool]string{true: "an empty file", false: "several lines"}[*key == ""])
		}
		return nil
	}
}

func (p *parser) auth(n *yaml.Node, field string, a *Auth) error {
	return p.mapping(n, field, map[string]func(*yaml.Node, string) error{
		"keys": p.path(&a.KeysFile),
		"jwt": func(n *yaml.Node, f string) error {
			return p.mapping(n, f, map[string]func(*yaml.Node, string) error{
				"hs256_secret_file": p.path(&a.JWT.HS256SecretFile),
				"jwks":              p.path(&a.JWT.JWKSFile),
				"issuer":            func(n *yaml.Node, f string) error { return p.str(n, f, &a.JWT.Issuer) },
				"audience":          func(n *yaml.Node, f string) error { return p.str(n, f, &a.JWT.Audience) },
				"leeway_s": func(n *yaml.Node, f string) error {
					var s int
					if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || n.Decode(&s) != nil || s < 0 || s > 300 {
						return p.errorf(n, f, "a whole number of seconds from 0 to 300")
					}
					a.JWT.Leeway = time.Duration(s) * time.Second
					return nil
				},
			})
		},
		"open_health": p.boolean(&a.OpenHealth),
		"default_rate": func(n *yaml.Node, f string) error {
			r, err := p.rate(n, f)
			a.DefaultRate = &r
			return err
		},
		"rate_limits": func(n *yaml.Node, f string) error {
			if n.Kind != yaml.SequenceNode {
				return p.errorf(n, f, "a list of {model: GLOB, per_second: N, burst: N}")
			}
			for i, item := range n.Content {
				itemField := fmt.Sprintf("%s[%d]", f, i)
				var glob string
				var s rateScratch
				fields := rateFields(p, &s)
				fields["model"] = func(n *yaml.Node, f string) error { return p.str(n, f, &glob) }
				r, err := p.rateWith(item, itemField, &s, fields)
				if err != nil {
					return err
				}
				if glob == "" {
					return p.errorf(item, itemField+".model", "a model name glob (* any run of characters, ? one)")
				}
				a.RateLimits = append(a.RateLimits, ModelRate{Glob: glob, Rate: r})
			}
			return nil
		},
	})
}

// rate reads a token bucket: {per_second: N, burst: N} or the flags' "RPS[:BURST]".
func (p *parser) rate(n *yaml.Node, field string) (Rate, error) {
	if n.Kind == yaml.ScalarNode && !isNull(n) {
		rps, burst, hasBurst := strings.Cut(n.Value, ":")
		perSecond, err := strconv.ParseFloat(rps, 64)
		r := Rate{PerSecond: perSecond, Burst: int(math.Ceil(perSecond))}
		if hasBurst && err == nil {
			r.Burst, err = strconv.Atoi(burst)
		}
		if err != nil || !(perSecond > 0) || math.IsInf(perSecond, 0) || r.Burst < 1 {
			return Rate{}, p.errorf(n, field, "RPS[:BURST] (as 100:200) or {per_second: N, burst: N}, with RPS > 0 and a whole BURST ≥ 1")
		}
		return r, nil
	}
	var s rateScratch
	return p.rateWith(n, field, &s, rateFields(p, &s))
}

// rateFields are the per_second and burst fields of a rate mapping, decoded into s;
// rateWith reads them back once the mapping (which may hold more fields) is decoded.
type rateScratch struct {
	perSecond float64
	burst     int
}

func rateFields(p *parser, s *rateScratch) map[string]func(*yaml.Node, string) error {
	return map[string]func(*yaml.Node, string) error{
		"per_second": func(n *yaml.Node, f string) error {
			var v float64
			if n.Kind != yaml.ScalarNode || (n.Tag != "!!int" && n.Tag != "!!float") || n.Decode(&v) != nil || !(v > 0) || math.IsInf(v, 0) {
				return p.errorf(n, f, "a positive number of requests a second")
			}
			s.perSecond = v
			return nil
		},
		"burst": p.intAtLeast(1, &s.burst),
	}
}

func (p *parser) rateWith(n *yaml.Node, field string, s *rateScratch, fields map[string]func(*yaml.Node, string) error) (Rate, error) {
	if n.Kind != yaml.MappingNode {
		return Rate{}, p.errorf(n, field, "a mapping {per_second: N, burst: N}")
	}
	if err := p.mapping(n, field, fields); err != nil {
		return Rate{}, err
	}
	if s.perSecond == 0 {
		return Rate{}, p.errorf(n, field+".per_second", "a positive number of requests a second (it is required)")
	}
	r := Rate{PerSecond: s.perSecond, Burst: s.burst}
	if r.Burst == 0 {
		r.Burst = int(math.Ceil(s.perSecond))
	}
	return r, nil
}
