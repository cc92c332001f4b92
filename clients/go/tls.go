package inferbridge

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// LoadTLSConfig builds a TLS 1.2+ client configuration from PEM files: the server's
// certificate is verified against the CAs in caFile ("" = the system's roots) and, with
// certFile and keyFile (both or neither), the client presents that certificate (mutual
// TLS). Both clients' WithTLSFiles use it; pass the result to WithTLS to change it first
// (a ServerName, for example).
func LoadTLSConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		data, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("TLS CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(data) {
			return nil, fmt.Errorf("TLS CA file %s: no PEM certificate in it (expected \"-----BEGIN CERTIFICATE-----\" blocks)", caFile)
		}
		cfg.RootCAs = pool
	}
	switch {
	case certFile == "" && keyFile == "":
	case certFile == "" || keyFile == "":
		return nil, errors.New("a TLS client certificate needs both a certificate file and a key file (one of them is empty)")
	default:
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("TLS client certificate %s and key %s: %w", certFile, keyFile, err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// WithTLS makes the client speak TLS with cfg (the base URL must be https://). The
// client's default transport is used, with cfg as its TLS configuration; with
// WithHTTPClient, configure TLS on that client's transport instead.
func WithTLS(cfg *tls.Config) RESTOption {
	return func(c *RESTClient) {
		if cfg == nil {
			c.optionErr = errors.New("WithTLS: the TLS configuration is nil")
			return
		}
		c.tls = cfg
	}
}

// WithTLSFiles is WithTLS with the configuration LoadTLSConfig(caFile, certFile, keyFile)
// builds; NewRESTClient returns its error when the files do not load.
func WithTLSFiles(caFile, certFile, keyFile string) RESTOption {
	return func(c *RESTClient) {
		cfg, err := LoadTLSConfig(caFile, certFile, keyFile)
		if err != nil {
			c.optionErr = fmt.Errorf("WithTLSFiles: %w", err)
			return
		}
		c.tls = cfg
	}
}

// WithAPIKey sends key as the x-api-key header of every request (an inferbridge server's
// API keys: docs/security.md). It travels in the clear over http://: use TLS beyond
// loopback.
func WithAPIKey(key string) RESTOption {
	return func(c *RESTClient) { c.credentialHeader, c.credential = "X-Api-Key", key }
}

// WithBearerToken sends "Authorization: Bearer <token>" with every request (a JWT, or an
// API key). The last of WithAPIKey and WithBearerToken given is the one sent.
func WithBearerToken(token string) RESTOption {
	return func(c *RESTClient) { c.credentialHeader, c.credential = "Authorization", "Bearer "+token }
}
