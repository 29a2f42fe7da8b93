package proxyrun

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

// TinyproxyOptions configure a tinyproxy.
type TinyproxyOptions struct {
	// User and Password, if User is set, are the only credentials the
	// proxy accepts (Basic); without them it asks for none. tinyproxy
	// takes letters, digits and "-._" only.
	User, Password string
	// Allow is the client networks the proxy serves; nil means loopback.
	// A client outside them is refused with 403.
	Allow []string
	// ConnectPorts, if set, are the only ports CONNECT may reach; others
	// are refused with 403.
	ConnectPorts []int
}

// Tinyproxy is a running tinyproxy.
type Tinyproxy struct {
	// Addr is its host:port.
	Addr string
	*process
}

// Tunnels counts the CONNECT requests for target the proxy received, from
// its log: proof that a connection went through it.
func (p *Tinyproxy) Tunnels(target string) int {
	return strings.Count(p.Log(), "CONNECT "+target+" ")
}

// basicAuthWord is what tinyproxy's configuration parser takes as a
// BasicAuth user or password (its ALNUM); anything else makes it refuse
// the whole file.
var basicAuthWord = regexp.MustCompile(`^[-A-Za-z0-9._]+$`)

// tinyproxyConf is the configuration of a tinyproxy on 127.0.0.1:port,
// logging to its standard output.
func tinyproxyConf(port int, o TinyproxyOptions) (string, error) {
	var conf strings.Builder
	fmt.Fprintf(&conf, "User nobody\nGroup nogroup\nPort %d\nListen 127.0.0.1\nTimeout 60\nMaxClients 64\nLogLevel Info\n", port)
	allow := o.Allow
	if allow == nil {
		allow = []string{"127.0.0.1"}
	}
	for _, a := range allow {
		if err := checkConfWord("allowed network", a); err != nil {
			return "", err
		}
		fmt.Fprintf(&conf, "Allow %s\n", a)
	}
	for _, p := range o.ConnectPorts {
		if p < 1 || p > 65535 {
			return "", fmt.Errorf("CONNECT port %d is out of range", p)
		}
		fmt.Fprintf(&conf, "ConnectPort %d\n", p)
	}
	if o.User != "" {
		if !basicAuthWord.MatchString(o.User) || !basicAuthWord.MatchString(o.Password) {
			return "", fmt.Errorf("tinyproxy takes a user and a password of letters, digits and -._ only")
		}
		fmt.Fprintf(&conf, "BasicAuth %s %s\n", o.User, o.Password)
	}
	return conf.String(), nil
}

// StartTinyproxy starts a tinyproxy on a free loopback port, with its
// configuration and log in dir (made if missing), and returns once it
// listens. Close stops it.
func StartTinyproxy(ctx context.Context, dir string, o TinyproxyOptions) (*Tinyproxy, error) {
	bin, err := prepare("tinyproxy", dir)
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, fmt.Errorf("start tinyproxy: %w", err)
	}
	conf, err := tinyproxyConf(port, o)
	if err != nil {
		return nil, fmt.Errorf("start tinyproxy: %w", err)
	}
	path := filepath.Join(dir, "tinyproxy.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, fmt.Errorf("start tinyproxy: %w", err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	logPath := filepath.Join(dir, "tinyproxy.log")
	p, err := serve(ctx, exec.Command(bin, "-d", "-c", path), addr, logPath, logPath)
	if err != nil {
		return nil, err
	}
	return &Tinyproxy{Addr: addr, process: p}, nil
}
