package proxyrun

import (
	"context"
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
	"time"
)

// Nginx is a running nginx.
type Nginx struct {
	// Addr is its host:port.
	Addr string
	dir  string
	*process
}

// Upgrades counts the WebSocket upgrades nginx passed on (answered 101)
// and that have ended, from its access log, which nginx writes when a
// connection closes: proof that sessions went through it.
func (p *Nginx) Upgrades() int {
	b, _ := os.ReadFile(filepath.Join(p.dir, "access.log"))
	return strings.Count(string(b), "\" 101 ")
}

// nginxConf is the configuration of an nginx on 127.0.0.1:port, in the
// foreground and as one process, with every file it writes in dir,
// terminating TLS with certFile and keyFile and passing WebSocket
// upgrades at path to the plain HTTP upstream.
func nginxConf(dir string, port int, certFile, keyFile, path, upstream string) (string, error) {
	for _, w := range []struct{ what, s string }{
		{"folder", dir}, {"certificate file", certFile}, {"key file", keyFile}, {"path", path}, {"upstream", upstream},
	} {
		if err := checkConfWord(w.what, w.s); err != nil {
			return "", err
		}
	}
	if !strings.HasPrefix(path, "/") {
		return "", fmt.Errorf("path %q does not start with /", path)
	}
	if _, _, err := net.SplitHostPort(upstream); err != nil {
		return "", fmt.Errorf("upstream %q is not host:port: %w", upstream, err)
	}
	return fmt.Sprintf(`daemon off;
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
`, dir, port, certFile, keyFile, path, upstream), nil
}

// StartNginx starts Debian's nginx as a TLS-terminating reverse proxy on a
// free loopback port, passing WebSocket upgrades at path to the plain HTTP
// upstream (host:port), as a load balancer on port 443 would, with its
// configuration, logs and a self-signed certificate made for it in dir
// (made if missing). It returns once nginx listens; Close stops it.
func StartNginx(ctx context.Context, dir, upstream, path string) (*Nginx, error) {
	bin, err := prepare("nginx", dir)
	if err != nil {
		return nil, err
	}
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := selfSigned(certFile, keyFile); err != nil {
		return nil, fmt.Errorf("start nginx: %w", err)
	}
	port, err := freePort()
	if err != nil {
		return nil, fmt.Errorf("start nginx: %w", err)
	}
	conf, err := nginxConf(dir, port, certFile, keyFile, path, upstream)
	if err != nil {
		return nil, fmt.Errorf("start nginx: %w", err)
	}
	confFile := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o644); err != nil {
		return nil, fmt.Errorf("start nginx: %w", err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	errorLog := filepath.Join(dir, "error.log")
	p, err := serve(ctx, exec.Command(bin, "-c", confFile, "-p", dir, "-e", errorLog),
		addr, filepath.Join(dir, "stdout.log"), errorLog)
	if err != nil {
		return nil, err
	}
	return &Nginx{Addr: addr, dir: dir, process: p}, nil
}

// selfSigned writes a certificate for 127.0.0.1 and its key: a private
// load balancer's, which the agent does not check (it pins the
// coordinator inside).
func selfSigned(certFile, keyFile string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("make a certificate key: %w", err)
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
		return fmt.Errorf("make a certificate: %w", err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return fmt.Errorf("encode a certificate key: %w", err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return fmt.Errorf("write the certificate: %w", err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return fmt.Errorf("write the certificate key: %w", err)
	}
	return nil
}
