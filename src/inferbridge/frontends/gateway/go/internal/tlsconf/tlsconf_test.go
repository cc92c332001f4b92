package tlsconf

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/inferbridge/inferbridge/gateway/internal/clock"
	"github.com/inferbridge/inferbridge/gateway/internal/tlsconf/tlsconftest"
)

// fixture is a CA, a server pair for 127.0.0.1 and a client pair, written to files.
type fixture struct {
	dir                           string
	ca                            *tlsconftest.CA
	caFile, certFile, keyFile     string
	clientCertFile, clientKeyFile string
	serverCN                      string
	logMu                         sync.Mutex
	logs                          []string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	files := tlsconftest.Write(t, dir, "batch.internal")
	return &fixture{dir: dir, ca: files.CA, caFile: files.CAFile, certFile: files.ServerCert, keyFile: files.ServerKey,
		clientCertFile: files.ClientCert, clientKeyFile: files.ClientKey, serverCN: "server-1"}
}

func (f *fixture) logf(format string, args ...any) {
	f.logMu.Lock()
	defer f.logMu.Unlock()
	f.logs = append(f.logs, fmt.Sprintf(format, args...))
}

func (f *fixture) logged() string {
	f.logMu.Lock()
	defer f.logMu.Unlock()
	return strings.Join(f.logs, "\n")
}

// handshake connects a client with clientCfg to a listener serving serverCfg and
// returns both sides' connection states, or the first handshake error.
func handshake(t *testing.T, serverCfg, clientCfg *tls.Config) (server, client tls.ConnectionState, err error) {
	t.Helper()
	lis, err := tls.Listen("tcp", "127.0.0.1:0", serverCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	type result struct {
		state tls.ConnectionState
		err   error
	}
	done := make(chan result, 1)
	go func() {
		conn, err := lis.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer conn.Close()
		tc := conn.(*tls.Conn)
		_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
		err = tc.Handshake()
		done <- result{tc.ConnectionState(), err}
	}()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", lis.Addr().String(), clientCfg)
	if err == nil {
		client = conn.ConnectionState()
		// TLS 1.3 reports a refused client certificate only on the first read.
		_ = conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		var one [1]byte
		if _, rerr := conn.Read(one[:]); rerr != nil && !isTimeout(rerr) && !strings.Contains(rerr.Error(), "EOF") {
			err = rerr
		}
		conn.Close()
	}
	r := <-done
	if err == nil {
		err = r.err
	}
	return r.state, client, err
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func TestServerMutualTLSNamesTheVerifiedClient(t *testing.T) {
	f := newFixture(t)
	srv, err := Server(Files{Cert: f.certFile, Key: f.keyFile, ClientCA: f.caFile}, f.logf)
	if err != nil {
		t.Fatal(err)
	}
	if srv.ClientAuth != tls.RequireAndVerifyClientCert {
		t.Fatalf("ClientAuth = %v, want RequireAndVerifyClientCert by default with a client CA", srv.ClientAuth)
	}
	if srv.MinVersion != tls.VersionTLS12 || !slices.Contains(srv.NextProtos, "h2") || !slices.Contains(srv.NextProtos, "http/1.1") {
		t.Fatalf("MinVersion %x NextProtos %v", srv.MinVersion, srv.NextProtos)
	}
	cli, err := Client(f.caFile, f.clientCertFile, f.clientKeyFile, "")
	if err != nil {
		t.Fatal(err)
	}
	cli.ServerName = "127.0.0.1"
	serverState, clientState, err := handshake(t, srv, cli)
	if err != nil {
		t.Fatal(err)
	}
	if got := PeerName(&serverState); got != "batch.internal" {
		t.Fatalf("PeerName = %q, want batch.internal", got)
	}
	if got := clientState.PeerCertificates[0].Subject.CommonName; got != f.serverCN {
		t.Fatalf("server certificate CN = %q, want %q", got, f.serverCN)
	}
	if PeerName(nil) != "" || PeerName(&clientState) == "" {
		// the client verified the server's chain, so its state names the server
		t.Fatalf("PeerName(nil) = %q, PeerName(client side) = %q", PeerName(nil), PeerName(&clientState))
	}
}

func TestServerRequireRefusesAClientWithoutCertificate(t *testing.T) {
	f := newFixture(t)
	srv, err := Server(Files{Cert: f.certFile, Key: f.keyFile, ClientCA: f.caFile, ClientAuth: "require"}, f.logf)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := Client(f.caFile, "", "", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := handshake(t, srv, cli); err == nil {
		t.Fatal("a client without a certificate connected to a server that requires one")
	}
}

func TestServerRequestAcceptsAClientWithoutCertificate(t *testing.T) {
	f := newFixture(t)
	srv, err := Server(Files{Cert: f.certFile, Key: f.keyFile, ClientCA: f.caFile, ClientAuth: "request"}, f.logf)
	if err != nil {
		t.Fatal(err)
	}
	if srv.ClientAuth != tls.VerifyClientCertIfGiven {
		t.Fatalf("ClientAuth = %v, want VerifyClientCertIfGiven", srv.ClientAuth)
	}
	cli, err := Client(f.caFile, "", "", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	serverState, _, err := handshake(t, srv, cli)
	if err != nil {
		t.Fatal(err)
	}
	if got := PeerName(&serverState); got != "" {
		t.Fatalf("PeerName = %q without a client certificate, want empty", got)
	}

	// A certificate from another CA is refused even in request mode.
	other := tlsconftest.NewCA(t, "other CA")
	cert, key := other.Issue(t, "intruder", false)
	pair, err := tls.X509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	// GetClientCertificate sends it regardless of the CAs the server names (with
	// Certificates, crypto/tls would send nothing, which request mode accepts).
	cli.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &pair, nil }
	if _, _, err := handshake(t, srv, cli); err == nil {
		t.Fatal("a client certificate of an unknown CA was accepted")
	}
}

func TestServerRefusesTLS11(t *testing.T) {
	f := newFixture(t)
	srv, err := Server(Files{Cert: f.certFile, Key: f.keyFile}, f.logf)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := Client(f.caFile, "", "", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	cli.MinVersion, cli.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	if _, _, err := handshake(t, srv, cli); err == nil {
		t.Fatal("a TLS 1.1 client connected")
	}
}

func TestClientRefusesAServerOfAnotherCA(t *testing.T) {
	f := newFixture(t)
	srv, err := Server(Files{Cert: f.certFile, Key: f.keyFile}, f.logf)
	if err != nil {
		t.Fatal(err)
	}
	otherCAFile := filepath.Join(f.dir, "other-ca.pem")
	tlsconftest.WriteFile(t, otherCAFile, tlsconftest.NewCA(t, "other CA").PEM)
	cli, err := Client(otherCAFile, "", "", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := handshake(t, srv, cli); err == nil {
		t.Fatal("the client accepted a server certificate of a CA it does not trust")
	}
	// server_name is what the certificate is checked against.
	cli, err = Client(f.caFile, "", "", "upstream.test")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := handshake(t, srv, cli); err != nil {
		t.Fatalf("server name upstream.test (a DNS name of the certificate): %v", err)
	}
	cli, err = Client(f.caFile, "", "", "elsewhere.test")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := handshake(t, srv, cli); err == nil {
		t.Fatal("server name elsewhere.test accepted a certificate that does not name it")
	}
}

func TestServerReloadsAChangedPairAtTheNextHandshakeAfterASecond(t *testing.T) {
	f := newFixture(t)
	clk := clock.NewFake()
	srv, err := server(Files{Cert: f.certFile, Key: f.keyFile}, f.logf, clk)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := Client(f.caFile, "", "", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	servedCN := func() string {
		t.Helper()
		_, state, err := handshake(t, srv, cli)
		if err != nil {
			t.Fatal(err)
		}
		return state.PeerCertificates[0].Subject.CommonName
	}
	if got := servedCN(); got != "server-1" {
		t.Fatalf("served %q, want server-1", got)
	}

	cert, key := f.ca.Issue(t, "server-2", true)
	tlsconftest.WriteFile(t, f.certFile, cert)
	tlsconftest.WriteFile(t, f.keyFile, key)
	clk.Advance(500 * time.Millisecond)
	if got := servedCN(); got != "server-1" {
		t.Fatalf("served %q within a second of the last look, want the old server-1", got)
	}
	clk.Advance(600 * time.Millisecond)
	if got := servedCN(); got != "server-2" {
		t.Fatalf("served %q after the files changed, want server-2", got)
	}
	if !strings.Contains(f.logged(), "reloaded certificate") {
		t.Fatalf("the reload was not logged: %q", f.logged())
	}
}

func TestServerKeepsTheLastGoodPairWhenTheNewOneDoesNotLoad(t *testing.T) {
	f := newFixture(t)
	clk := clock.NewFake()
	srv, err := server(Files{Cert: f.certFile, Key: f.keyFile}, f.logf, clk)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := Client(f.caFile, "", "", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	// A new certificate whose key has not been written yet: the pair does not match.
	cert, _ := f.ca.Issue(t, "server-2", true)
	tlsconftest.WriteFile(t, f.certFile, cert)
	clk.Advance(2 * time.Second)
	_, state, err := handshake(t, srv, cli)
	if err != nil {
		t.Fatalf("a broken new pair broke the handshake: %v", err)
	}
	if got := state.PeerCertificates[0].Subject.CommonName; got != "server-1" {
		t.Fatalf("served %q, want the last good server-1", got)
	}
	if !strings.Contains(f.logged(), "does not load, keeping the one in use") {
		t.Fatalf("the bad pair was not logged: %q", f.logged())
	}
	// Logged once per change, not at every look.
	clk.Advance(2 * time.Second)
	if _, _, err := handshake(t, srv, cli); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(f.logged(), "does not load"); n != 1 {
		t.Fatalf("the same bad pair was logged %d times, want once", n)
	}
	// Garbage in the key file, then a removed certificate: still the old pair.
	tlsconftest.WriteFile(t, f.keyFile, []byte("not a key"))
	clk.Advance(2 * time.Second)
	if _, state, err = handshake(t, srv, cli); err != nil || state.PeerCertificates[0].Subject.CommonName != "server-1" {
		t.Fatalf("garbage key: err %v", err)
	}
	if err := os.Remove(f.certFile); err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Second)
	if _, state, err = handshake(t, srv, cli); err != nil || state.PeerCertificates[0].Subject.CommonName != "server-1" {
		t.Fatalf("removed certificate: err %v", err)
	}
	// The pair is whole again: served at the next look.
	cert, key := f.ca.Issue(t, "server-3", true)
	tlsconftest.WriteFile(t, f.certFile, cert)
	tlsconftest.WriteFile(t, f.keyFile, key)
	clk.Advance(2 * time.Second)
	if _, state, err = handshake(t, srv, cli); err != nil || state.PeerCertificates[0].Subject.CommonName != "server-3" {
		t.Fatalf("fixed pair: err %v, served %v", err, state.PeerCertificates)
	}
}

func TestClientPresentsAReloadedCertificate(t *testing.T) {
	f := newFixture(t)
	clk := clock.NewFake()
	srv, err := Server(Files{Cert: f.certFile, Key: f.keyFile, ClientCA: f.caFile}, f.logf)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := client(f.caFile, f.clientCertFile, f.clientKeyFile, "127.0.0.1", clk)
	if err != nil {
		t.Fatal(err)
	}
	cert, key := f.ca.Issue(t, "batch-2.internal", false)
	tlsconftest.WriteFile(t, f.clientCertFile, cert)
	tlsconftest.WriteFile(t, f.clientKeyFile, key)
	clk.Advance(2 * time.Second)
	serverState, _, err := handshake(t, srv, cli)
	if err != nil {
		t.Fatal(err)
	}
	if got := PeerName(&serverState); got != "batch-2.internal" {
		t.Fatalf("PeerName = %q, want the reloaded batch-2.internal", got)
	}
}

func TestConfigurationErrorsSayWhatIsWrong(t *testing.T) {
	f := newFixture(t)
	notPEM := filepath.Join(f.dir, "not.pem")
	tlsconftest.WriteFile(t, notPEM, []byte("hello"))
	missing := filepath.Join(f.dir, "missing.pem")
	serverCases := []struct {
		name  string
		files Files
		want  string
	}{
		{"no key", Files{Cert: f.certFile}, "both a certificate file and a key file"},
		{"missing cert", Files{Cert: missing, Key: f.keyFile}, "missing.pem"},
		{"mismatched pair", Files{Cert: f.certFile, Key: f.clientKeyFile}, "does not match"},
		{"client auth without CA", Files{Cert: f.certFile, Key: f.keyFile, ClientAuth: "require"}, "needs a client CA"},
		{"bad client auth", Files{Cert: f.certFile, Key: f.keyFile, ClientCA: f.caFile, ClientAuth: "always"}, `client auth "always": expected "require" or "request"`},
		{"CA without PEM", Files{Cert: f.certFile, Key: f.keyFile, ClientCA: notPEM}, "no PEM certificate"},
		{"missing CA", Files{Cert: f.certFile, Key: f.keyFile, ClientCA: missing}, "missing.pem"},
	}
	for _, c := range serverCases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Server(c.files, nil)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want one containing %q", err, c.want)
			}
		})
	}
	clientCases := []struct {
		name, ca, cert, key, want string
	}{
		{"cert without key", "", f.clientCertFile, "", "both a certificate file and a key file"},
		{"CA without PEM", notPEM, "", "", "no PEM certificate"},
		{"missing key", f.caFile, f.clientCertFile, missing, "missing.pem"},
	}
	for _, c := range clientCases {
		t.Run("client "+c.name, func(t *testing.T) {
			_, err := Client(c.ca, c.cert, c.key, "")
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want one containing %q", err, c.want)
			}
		})
	}
}
