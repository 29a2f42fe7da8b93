package console

import (
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Sign-in limits. Every attempt takes a token from the bucket of the user
// name it names and of the address it comes from; a success gives them
// back, so only failures count. An empty bucket refuses the attempt
// without checking anything: a guesser learns nothing while it waits.
const (
	// signinUserBurst failures in a row are allowed per user name, then
	// one per signinUserEvery. The name counts whether or not a user has
	// it, so the limit says nothing about which names exist.
	signinUserBurst = 5
	signinUserEvery = time.Minute
	// signinAddrBurst failures are allowed per client address (per /64
	// for IPv6, which hands each host a whole prefix), then one per
	// signinAddrEvery: this stops one client trying many names.
	signinAddrBurst = 20
	signinAddrEvery = 10 * time.Second
	// maxSigninBuckets bounds the limiter's memory. Buckets that are full
	// again are dropped first; a flood from many addresses then drops
	// others, which costs only the history of their failures.
	maxSigninBuckets = 10000
)

// signinLimiter rate-limits failed console sign-ins per user name and per
// client address. It is safe for concurrent use.
type signinLimiter struct {
	mu      sync.Mutex
	buckets map[string]*signinBucket
	now     func() time.Time

	userEvery, addrEvery time.Duration
	userBurst, addrBurst int
}

// signinBucket is a token bucket: tokens refill at one per every, up to
// burst.
type signinBucket struct {
	tokens float64
	last   time.Time
	every  time.Duration
	burst  int
}

func (b *signinBucket) refill(now time.Time) {
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(float64(b.burst), b.tokens+float64(d)/float64(b.every))
	}
	b.last = now
}

func newSigninLimiter() *signinLimiter {
	return &signinLimiter{
		buckets:   make(map[string]*signinBucket),
		now:       time.Now,
		userEvery: signinUserEvery, userBurst: signinUserBurst,
		addrEvery: signinAddrEvery, addrBurst: signinAddrBurst,
	}
}

// signinAttempt holds the tokens one attempt took.
type signinAttempt struct {
	l     *signinLimiter
	taken []*signinBucket
}

// succeeded gives the attempt's tokens back: a right password or key
// must not bring its user or address closer to the limit.
func (a *signinAttempt) succeeded() {
	a.l.mu.Lock()
	defer a.l.mu.Unlock()
	for _, b := range a.taken {
		b.tokens = min(float64(b.burst), b.tokens+1)
	}
}

// begin takes a token for the user name (if any) and the client address
// of an attempt. If either bucket is empty nothing is taken, and begin
// returns how long to wait instead.
func (l *signinLimiter) begin(user, remoteAddr string) (*signinAttempt, time.Duration) {
	now := l.now()
	type spec struct {
		key   string
		every time.Duration
		burst int
	}
	specs := []spec{{"addr:" + clientKey(remoteAddr), l.addrEvery, l.addrBurst}}
	if user != "" {
		specs = append(specs, spec{"user:" + strings.ToLower(user), l.userEvery, l.userBurst})
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	a := &signinAttempt{l: l}
	var wait time.Duration
	for _, sp := range specs {
		b, ok := l.buckets[sp.key]
		if !ok {
			l.makeRoomLocked(now)
			b = &signinBucket{tokens: float64(sp.burst), last: now, every: sp.every, burst: sp.burst}
			l.buckets[sp.key] = b
		}
		b.refill(now)
		if b.tokens < 1 {
			wait = max(wait, time.Duration((1-b.tokens)*float64(b.every)))
		}
		a.taken = append(a.taken, b)
	}
	if wait > 0 {
		// Refused attempts take nothing: waiting out the limit is
		// enough, however often a guesser knocks meanwhile.
		return nil, wait
	}
	for _, b := range a.taken {
		b.tokens--
	}
	return a, 0
}

// makeRoomLocked keeps the number of buckets under maxSigninBuckets.
func (l *signinLimiter) makeRoomLocked(now time.Time) {
	if len(l.buckets) < maxSigninBuckets {
		return
	}
	for k, b := range l.buckets {
		if b.refill(now); b.tokens >= float64(b.burst) {
			delete(l.buckets, k)
		}
	}
	for k := range l.buckets {
		if len(l.buckets) < maxSigninBuckets {
			break
		}
		delete(l.buckets, k)
	}
}

// clientKey is the part of a request's remote address that names the
// client: the IP, or for IPv6 its /64 prefix.
func clientKey(remoteAddr string) string {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}
