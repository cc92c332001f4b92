// Package tlsconf builds the gateway's TLS configurations from PEM files: a server's
// (with a certificate pair re-read when its files change, and optional client
// certificate verification) and a client's (for upstream connections), and names the
// verified peer of a connection (docs/security.md, "Transport security").
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/inferbridge/inferbridge/gateway/internal/clock"
)

// Files names the PEM files of a server's TLS configuration.
type Files struct {
	Cert       string // certificate chain, leaf first
	Key        string // private key of the leaf
	ClientCA   string // CAs that client certificates are verified against ("" = no mutual TLS)
	ClientAuth string // "require" (the default with a client CA), "request", or ""
}

// ClientAuth values.
const (
	ClientAuthRequire = "require"
	ClientAuthRequest = "request"
)

// reloadInterval is how often, at most, a handshake looks at the pair's files again:
// a stat of two files per handshake would cost more than the handshake's own work
// under a burst of new connections.
const reloadInterval = time.Second

// Server returns a TLS 1.2+ server configuration serving the pair f.Cert / f.Key,
// which it re-reads when either file's modification time or size changes (looked at
// at most once a second, at a handshake). A changed pair that does not load is
// logged through logf and the last good one keeps serving. With f.ClientCA, client
// certificates are verified against it: always required ("require", the default) or
// verified when sent ("request"). NextProtos offer h2 and http/1.1.
func Server(f Files, logf func(string, ...any)) (*tls.Config, error) {
	return server(f, logf, clock.Real{})
}

func server(f Files, logf func(string, ...any), clk clock.Clock) (*tls.Config, error) {
	if f.Cert == "" || f.Key == "" {
		return nil, errors.New("TLS needs both a certificate file and a key file (one of them is empty)")
	}
	if logf == nil {
		logf = func(string, ...any) {}
	}
	pair, err := newReloadingPair(f.Cert, f.Key, logf, clk)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"h2", "http/1.1"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return pair.current(), nil },
	}
	switch {
	case f.ClientCA == "" && f.ClientAuth != "":
		return nil, fmt.Errorf("client auth %q needs a client CA file to verify client certificates against", f.ClientAuth)
	case f.ClientCA == "":
		return cfg, nil
	}
	switch f.ClientAuth {
	case "", ClientAuthRequire:
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	case ClientAuthRequest:
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
	default:
		return nil, fmt.Errorf("client auth %q: expected %q or %q", f.ClientAuth, ClientAuthRequire, ClientAuthRequest)
	}
	if cfg.ClientCAs, err = loadCAs(f.ClientCA); err != nil {
		return nil, fmt.Errorf("client CA: %w", err)
	}
	return cfg, nil
}

// Client returns a TLS 1.2+ client configuration: servers are verified against the
// CAs of the PEM file ca ("" = the system's roots) under serverName ("" = the host
// dialled); with cert and key (both or neither) it presents that client certificate,
// re-read like a server's pair when its files change.
func Client(ca, cert, key, serverName string) (*tls.Config, error) {
	return client(ca, cert, key, serverName, clock.Real{})
}

func client(ca, cert, key, serverName string, clk clock.Clock) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if ca != "" {
		pool, err := loadCAs(ca)
		if err != nil {
			return nil, fmt.Errorf("CA: %w", err)
		}
		cfg.RootCAs = pool
	}
	switch {
	case cert == "" && key == "":
		return cfg, nil
	case cert == "" || key == "":
		return nil, errors.New("a client certificate needs both a certificate file and a key file (one of them is empty)")
	}
	// Upstream connections have no log of their own to report a bad reload to; the
	// last good pair keeps being presented, as on the server side.
	pair, err := newReloadingPair(cert, key, func(string, ...any) {}, clk)
	if err != nil {
		return nil, err
	}
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		return pair.current(), nil
	}
	return cfg, nil
}

// PeerName is the subject common name of the connection's verified client
// certificate, or "" when there is none (no TLS, no certificate, or one sent but not
// verified).
func PeerName(cs *tls.ConnectionState) string {
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return ""
	}
	return cs.VerifiedChains[0][0].Subject.CommonName
}

func loadCAs(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("%s: no PEM certificate in it (expected one or more \"-----BEGIN CERTIFICATE-----\" blocks)", path)
	}
	return pool, nil
}

// fileStamp is what tells a changed file from an unchanged one.
type fileStamp struct {
	mtime time.Time
	size  int64
}

func (s fileStamp) same(o fileStamp) bool { return s.mtime.Equal(o.mtime) && s.size == o.size }

func stampOf(path string) (fileStamp, error) {
	st, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{st.ModTime(), st.Size()}, nil
}

// reloadingPair holds the last good certificate of a cert / key pair of files.
type reloadingPair struct {
	certPath, keyPath string
	logf              func(string, ...any)
	clk               clock.Clock

	mu        sync.Mutex
	cert      *tls.Certificate
	checked   time.Time
	certStamp fileStamp // of the files as last tried, good or not: a bad pair is logged once
	keyStamp  fileStamp
}

func newReloadingPair(certPath, keyPath string, logf func(string, ...any), clk clock.Clock) (*reloadingPair, error) {
	p := &reloadingPair{certPath: certPath, keyPath: keyPath, logf: logf, clk: clk}
	certStamp, keyStamp, err := p.stamps()
	if err != nil {
		return nil, err
	}
	cert, err := p.load()
	if err != nil {
		return nil, err
	}
	p.cert, p.certStamp, p.keyStamp, p.checked = cert, certStamp, keyStamp, clk.Now()
	return p, nil
}

func (p *reloadingPair) stamps() (fileStamp, fileStamp, error) {
	certStamp, err := stampOf(p.certPath)
	if err != nil {
		return fileStamp{}, fileStamp{}, fmt.Errorf("TLS certificate: %w", err)
	}
	keyStamp, err := stampOf(p.keyPath)
	if err != nil {
		return fileStamp{}, fileStamp{}, fmt.Errorf("TLS key: %w", err)
	}
	return certStamp, keyStamp, nil
}

func (p *reloadingPair) load() (*tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(p.certPath, p.keyPath)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate %s and key %s: %w", p.certPath, p.keyPath, err)
	}
	return &cert, nil
}

// current returns the pair to present, first re-reading the files when a second has
// passed since the last look and either changed.
func (p *reloadingPair) current() *tls.Certificate {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.clk.Now()
	if now.Sub(p.checked) < reloadInterval {
		return p.cert
	}
	p.checked = now
	certStamp, keyStamp, err := p.stamps()
	if err != nil {
		// A file being replaced (removed, then written) is briefly absent: keep the
		// old pair and look again later without logging every second.
		if !certStamp.same(p.certStamp) || !keyStamp.same(p.keyStamp) {
			p.logf("TLS: keeping the certificate in use: %v", err)
			p.certStamp, p.keyStamp = certStamp, keyStamp
		}
		return p.cert
	}
	if certStamp.same(p.certStamp) && keyStamp.same(p.keyStamp) {
		return p.cert
	}
	p.certStamp, p.keyStamp = certStamp, keyStamp
	cert, err := p.load()
	if err != nil {
		p.logf("TLS: the changed certificate pair does not load, keeping the one in use: %v", err)
		return p.cert
	}
	p.cert = cert
	p.logf("TLS: reloaded certificate %s and key %s", p.certPath, p.keyPath)
	return p.cert
}
