package protocol

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/tendrildeploy/tendril/certs"
)

// JoinScheme is the scheme of a join string.
const JoinScheme = "tendril"

// ErrBadJoin means a join string could not be parsed.
var ErrBadJoin = errors.New("malformed join string")

// Join is everything an agent needs to enroll, carried in one string so one
// flag can do it: tendril://HOST:PORT[,HOST:PORT...]/?thumbprint=HEX&token=TOKEN
type Join struct {
	Servers    []string // host:port of each coordinator node
	Thumbprint string
	Token      string
}

// String formats the join string.
func (j Join) String() string {
	q := url.Values{}
	q.Set("thumbprint", j.Thumbprint)
	q.Set("token", j.Token)
	return JoinScheme + "://" + strings.Join(j.Servers, ",") + "/?" + q.Encode()
}

// ParseJoin parses and validates a join string.
func ParseJoin(s string) (Join, error) {
	s = strings.TrimSpace(s)
	prefix := JoinScheme + "://"
	if !strings.HasPrefix(s, prefix) {
		return Join{}, fmt.Errorf("%w: want %sHOST:PORT/?thumbprint=...&token=..., got %q", ErrBadJoin, prefix, truncate(s))
	}
	rest := s[len(prefix):]
	hosts, query, ok := strings.Cut(rest, "/?")
	if !ok {
		return Join{}, fmt.Errorf("%w: no \"/?\" after the coordinator address", ErrBadJoin)
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return Join{}, fmt.Errorf("%w: %v", ErrBadJoin, err)
	}
	var j Join
	for _, h := range strings.Split(hosts, ",") {
		if err := ValidateAddress(h); err != nil {
			return Join{}, fmt.Errorf("%w: %v", ErrBadJoin, err)
		}
		j.Servers = append(j.Servers, h)
	}
	if j.Thumbprint, err = certs.NormalizeThumbprint(q.Get("thumbprint")); err != nil {
		return Join{}, fmt.Errorf("%w: %v", ErrBadJoin, err)
	}
	if j.Token = q.Get("token"); j.Token == "" {
		return Join{}, fmt.Errorf("%w: no token", ErrBadJoin)
	}
	return j, nil
}

// ValidateAddress checks that s is host:port with a non-empty host and a
// numeric port.
func ValidateAddress(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("address %q: %v", s, err)
	}
	if host == "" {
		return fmt.Errorf("address %q: no host", s)
	}
	var p int
	if _, err := fmt.Sscanf(port, "%d", &p); err != nil || p <= 0 || p > 65535 || fmt.Sprint(p) != port {
		return fmt.Errorf("address %q: port must be 1-65535", s)
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
