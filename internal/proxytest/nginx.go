package proxytest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// ReverseProxy is a running nginx.
type ReverseProxy struct {
	// Addr is its host:port.
	Addr string
	dir  string
}

// Upgrades counts the WebSocket upgrades nginx passed on (answered 101)
// and that have ended, from its access log, which nginx writes when a
// connection closes: proof that sessions went through it.
func (p *ReverseProxy) Upgrades() int {
	b, _ := os.ReadFile(filepath.Join(p.dir, "access.log"))
	return strings.Count(string(b), "\" 101 ")
}

// Nginx starts Debian's nginx as a TLS-terminating reverse proxy on a free
// loopback port for t, passing WebSocket upgrades at path to the plain
// HTTP upstream (host:port), as a load balancer on port 443 would. Its
// certificate is self-signed, made for the test. It skips or fails
// without nginx as Tinyproxy does.
func Nginx(t testing.TB, upstream, path string) *ReverseProxy {
	t.Helper()
	bin, dir := prepare(t, "nginx")
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	selfSigned(t, certFile, keyFile)
	port := freePort(t)
	conf := fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
events { worker_connections 256; }
http {
	access_log %[1]s/access.log;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	server {
		listen 127.0.0.1:%[2]d ssl;
		ssl_certificate %[3]s;
		ssl_certificate_key %[4]s;
		location = %[5]s {
			proxy_pass http://%[6]s;
			proxy_http_version 1.1;
			proxy_set_header Upgrade $http_upgrade;
			proxy_set_header Connection "upgrade";
			proxy_read_timeout 1h;
			proxy_send_timeout 1h;
		}
		location / { return 404; }
	}
}
`, dir, port, certFile, keyFile, path, upstream)
	confFile := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	serve(t, exec.Command(bin, "-c", confFile, "-p", dir, "-e", filepath.Join(dir, "error.log")),
		addr, filepath.Join(dir, "stdout.log"), filepath.Join(dir, "error.log"))
	return &ReverseProxy{Addr: addr, dir: dir}
}

// selfSigned writes a certificate for 127.0.0.1 and its key.
func selfSigned(t testing.TB, certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "load-balancer.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
}
