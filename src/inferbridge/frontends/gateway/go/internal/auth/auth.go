// Package auth decides who may call what and how often (docs/security.md,
// "Authentication and authorization" and "Rate limits"): API keys from a keys file
// (hashed, re-read when it changes), JWTs (HS256 with a secret, RS256 / ES256 with a
// JWKS file), mutual-TLS subjects, scopes, and token buckets per principal and per
// model. The front ends (package local, the pool gateway) classify each request into an
// Action, collect its Credentials and ask Check, before reading a request body.
package auth

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"github.com/inferbridge/inferbridge/gateway/internal/clock"
)

// Config is the authority's configuration (the --auth-* and --rate-limit flags).
type Config struct {
	KeysFile      string // --auth-keys
	JWTSecretFile string // --auth-jwt-hs256-secret-file
	JWKSFile      string // --auth-jwt-jwks
	Issuer        string // --auth-jwt-issuer; "" = not checked
	Audience      string // --auth-jwt-audience; "" = not checked
	Leeway        time.Duration
	OpenHealth    bool        // health needs no credential
	DefaultRate   *Rate       // of principals without a rate of their own; nil = none
	ModelRates    []ModelRate // the first matching glob gives a model its bucket
	Clock         clock.Clock // nil = the wall clock
}

// Credentials are what a request carries to prove who sent it.
type Credentials struct {
	Authorization string // the Authorization header / metadata, as sent
	APIKey        string // x-api-key
	CertSubject   string // the common name of a verified client certificate, or ""
}

// Denial is a refused request: Status 401, 403 or 429, a message that quotes no part of
// a credential, and for 429 the wait in whole seconds (at least 1). TokenSent says a
// credential was sent with a 401 (WWW-Authenticate then carries error="invalid_token").
// Principal is who was refused when known (403, and 429 when authenticated), for the
// access log.
type Denial struct {
	Status     int
	Message    string
	RetryAfter time.Duration
	TokenSent  bool
	Principal  string
}

// Authority checks requests. A nil *Authority allows everything.
type Authority struct {
	keys       *watchedFile[keySet] // nil without --auth-keys
	jwt        *jwtVerifier         // nil without a JWT verifier
	openHealth bool
	defaultRt  *Rate
	modelRates []ModelRate
	clock      clock.Clock

	principals buckets
	models     buckets
}

// ConfigError is a configuration New refuses: Field is the Config field at fault
// (KeysFile, JWTSecretFile, JWKSFile, Issuer, Leeway, DefaultRate, ModelRates), so that
// a front end can name its own flag or setting.
type ConfigError struct {
	Field string
	Err   error
}

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// New loads the configured files; any problem is a *ConfigError naming the file, and
// the server should not start.
func New(c Config, logf func(string, ...any)) (*Authority, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	bad := func(field string, err error) (*Authority, error) { return nil, &ConfigError{Field: field, Err: err} }
	a := &Authority{openHealth: c.OpenHealth, clock: c.Clock, modelRates: c.ModelRates}
	if a.clock == nil {
		a.clock = clock.Real{}
	}
	if c.Leeway < 0 || c.Leeway > maxLeeway {
		return bad("Leeway", fmt.Errorf("JWT leeway %v: expected 0 to %v", c.Leeway, maxLeeway))
	}
	if c.DefaultRate != nil {
		if err := checkRate(*c.DefaultRate); err != nil {
			return bad("DefaultRate", fmt.Errorf("default rate: %w", err))
		}
		r := *c.DefaultRate
		a.defaultRt = &r
	}
	for _, mr := range c.ModelRates {
		if mr.Glob == "" {
			return bad("ModelRates", fmt.Errorf("rate limit for models %q: the glob is empty", mr.Glob))
		}
		if err := checkRate(mr.Rate); err != nil {
			return bad("ModelRates", fmt.Errorf("rate limit for models %q: %w", mr.Glob, err))
		}
	}
	now := a.clock.Now()
	if c.KeysFile != "" {
		keys, err := newWatchedFile(c.KeysFile, "keys file", parseKeys, logf, now)
		if err != nil {
			return bad("KeysFile", err)
		}
		a.keys = keys
	}
	var secret []byte
	if c.JWTSecretFile != "" {
		var err error
		if secret, err = readSecret(c.JWTSecretFile); err != nil {
			return bad("JWTSecretFile", fmt.Errorf("JWT secret file %s: %w", c.JWTSecretFile, err))
		}
	}
	var jwks *watchedFile[jwkSet]
	if c.JWKSFile != "" {
		var err error
		if jwks, err = newWatchedFile(c.JWKSFile, "JWKS file", parseJWKS, logf, now); err != nil {
			return bad("JWKSFile", err)
		}
	}
	if secret != nil || jwks != nil {
		a.jwt = newJWTVerifier(secret, jwks, c, a.clock.Now)
	} else if c.Issuer != "" || c.Audience != "" {
		field := "Issuer"
		if c.Issuer == "" {
			field = "Audience"
		}
		return bad(field, fmt.Errorf("a JWT issuer or audience is set without a JWT verifier (an HS256 secret file or a JWKS file)"))
	}
	return a, nil
}

func checkRate(r Rate) error {
	if !(r.PerSecond > 0) || r.Burst < 1 {
		return fmt.Errorf("%v: expected a positive rate and a burst of at least 1", r)
	}
	return nil
}

// Enabled tells whether authentication is on (a keys file or a JWT verifier).
func (a *Authority) Enabled() bool { return a != nil && (a.keys != nil || a.jwt != nil) }

// Active tells whether Check can refuse anything: authentication is on, or some model
// has a rate limit. A front end skips Check, and the work of classifying, when not.
func (a *Authority) Active() bool { return a.Enabled() || (a != nil && len(a.modelRates) > 0) }

// identity is an authenticated principal.
type identity struct {
	name      string
	scopes    *scopeSet
	rate      *Rate
	bucketKey string // key principals and JWT subjects of the same name are apart
}

// Check decides one request: authenticate, authorize, the principal's bucket, the
// model's bucket, in that order. It returns the principal's name ("" when
// authentication is off or the request is open health) or why the request is refused.
func (a *Authority) Check(c Credentials, act Action) (principal string, d *Denial) {
	if a == nil {
		return "", nil
	}
	now := a.clock.Now()
	var taken *rate.Reservation // the principal's token, given back if the model refuses
	if a.Enabled() && !(act.Kind == Health && a.openHealth) {
		id, d := a.authenticate(c, now)
		if d != nil {
			return "", d
		}
		if !id.scopes.allows(act) {
			return "", &Denial{Status: http.StatusForbidden, Message: id.scopes.refusal(id.name, act), Principal: id.name}
		}
		principal = id.name
		if r := id.rate; r != nil {
			res, wait := a.principals.take(id.bucketKey, *r, now)
			if wait > 0 {
				return "", rateDenial(fmt.Sprintf("principal '%s' is over its rate limit of %v", id.name, *r), wait, id.name)
			}
			taken = res
		}
	}
	if act.Kind == Infer {
		for _, mr := range a.modelRates {
			if !globMatch(mr.Glob, act.Model) {
				continue
			}
			if _, wait := a.models.take(act.Model, mr.Rate, now); wait > 0 {
				if taken != nil {
					taken.CancelAt(now)
				}
				return "", rateDenial(fmt.Sprintf("model '%s' is over its rate limit of %v", act.Model, mr.Rate), wait, principal)
			}
			break
		}
	}
	return principal, nil
}

// Authenticate identifies the principal of c, authorizing nothing and taking no token
// ("" and nil when authentication is off). A stream is authenticated once when it
// opens; each of its messages is then Checked.
func (a *Authority) Authenticate(c Credentials) (string, *Denial) {
	if !a.Enabled() {
		return "", nil
	}
	id, d := a.authenticate(c, a.clock.Now())
	if d != nil {
		return "", d
	}
	return id.name, nil
}

func rateDenial(what string, wait time.Duration, principal string) *Denial {
	wait = retryAfter(wait)
	return &Denial{
		Status:     http.StatusTooManyRequests,
		Message:    fmt.Sprintf("%s; retry in %d s", what, int(wait/time.Second)),
		RetryAfter: wait,
		Principal:  principal,
	}
}

func unauthenticated(msg string, sent bool) *Denial {
	return &Denial{Status: http.StatusUnauthorized, Message: msg, TokenSent: sent}
}

const noCredential = "authentication required: send an API key (x-api-key: <key>) or a bearer credential (Authorization: Bearer <credential>)"

// authenticate finds the principal of c: the Authorization header decides when
// present, then x-api-key, then a verified client certificate's subject.
func (a *Authority) authenticate(c Credentials, now time.Time) (*identity, *Denial) {
	switch {
	case c.Authorization != "":
		scheme, cred, _ := strings.Cut(strings.TrimSpace(c.Authorization), " ")
		cred = strings.TrimSpace(cred)
		if !strings.EqualFold(scheme, "Bearer") || cred == "" {
			return nil, unauthenticated("the Authorization header must be 'Bearer <credential>'", true)
		}
		if a.jwt != nil && looksLikeJWT(cred) {
			sub, scopes, why := a.jwt.verify(cred, now)
			if why != "" {
				return nil, unauthenticated("the bearer token is not valid: "+why, true)
			}
			ss := newScopeSet(scopes)
			return &identity{name: sub, scopes: &ss, rate: a.defaultRt, bucketKey: "jwt:" + sub}, nil
		}
		return a.byKey(cred, now)
	case strings.TrimSpace(c.APIKey) != "":
		return a.byKey(strings.TrimSpace(c.APIKey), now)
	case c.CertSubject != "":
		var e *keyEntry
		if a.keys != nil {
			e = a.keys.get(now).bySubject[c.CertSubject]
		}
		if e == nil {
			// A certificate is not a token: its 401s carry no error="invalid_token".
			return nil, unauthenticated(fmt.Sprintf(
				"the client certificate's subject '%s' is not a principal of the keys file", c.CertSubject), false)
		}
		if !e.expires.IsZero() && !now.Before(e.expires) {
			return nil, unauthenticated(fmt.Sprintf("client certificate principal '%s' expired at %s", e.name, e.expires.UTC().Format(time.RFC3339)), false)
		}
		return a.entryIdentity(e), nil
	}
	return nil, unauthenticated(noCredential, false)
}

func (a *Authority) byKey(key string, now time.Time) (*identity, *Denial) {
	var e *keyEntry
	if a.keys != nil {
		e = a.keys.get(now).byKey(key)
	}
	if e == nil {
		return nil, unauthenticated("the API key is not valid", true)
	}
	if !e.expires.IsZero() && !now.Before(e.expires) {
		return nil, unauthenticated(fmt.Sprintf("API key '%s' expired at %s", e.name, e.expires.UTC().Format(time.RFC3339)), true)
	}
	return a.entryIdentity(e), nil
}

func (a *Authority) entryIdentity(e *keyEntry) *identity {
	r := e.rate
	if r == nil {
		r = a.defaultRt
	}
	return &identity{name: e.name, scopes: &e.scopes, rate: r, bucketKey: "key:" + e.name}
}
