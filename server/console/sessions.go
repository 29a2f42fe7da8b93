package console

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"sync"
	"time"

	"github.com/tendrildeploy/tendril/server/httpapi"
)

// Console session limits.
const (
	// consoleIdle is how long a console session lives without a request.
	consoleIdle = 12 * time.Hour
	// consoleMaxAge is how long a console session lives at most, however
	// busy: the key behind it is checked on every request anyway, but a
	// stolen cookie should not outlive a working day by much.
	consoleMaxAge = 7 * 24 * time.Hour
	// maxConsoleSessions bounds memory: only a valid API key creates a
	// session, but a script signing in in a loop should not grow the map
	// without end. The session closest to expiry gives way.
	maxConsoleSessions = 10000
	// maxFlashes bounds the messages kept for the next page of a session.
	maxFlashes = 5
)

// consoleFlash is a message shown once, on the next page the session
// loads: the outcome of the action that redirected there.
type consoleFlash struct {
	Kind string // "ok" or "error"
	Text string
	// Copy is text shown in a box with a copy button: a secret shown
	// this once (a join command, a new API key). CopyID is the box's id.
	Copy, CopyID string
	// Link, if set, is a page to go on to, e.g. a rollout just started.
	Link, LinkText string
}

// consoleSession is one signed-in browser. Its id exists only in the
// browser's cookie; the map is keyed by the id's hash so that a lookup's
// timing says nothing about stored ids.
type consoleSession struct {
	csrf    string
	keyHash string // the API key signed in with, re-checked on every request
	userID  string // or the user signed in with a password, likewise
	created time.Time
	expires time.Time
	flashes []consoleFlash
}

// consoleSessions keeps the console's sessions in memory: a restart signs
// every browser out, which is a fair price for keeping no session secret
// on disk.
type consoleSessions struct {
	mu  sync.Mutex
	m   map[string]*consoleSession // hash of the session id -> session
	now func() time.Time
}

func newConsoleSessions() *consoleSessions {
	return &consoleSessions{m: make(map[string]*consoleSession), now: time.Now}
}

// randomToken returns 32 random bytes, URL-safe base64.
func randomToken() string {
	b := make([]byte, 32)
	// crypto/rand.Read never fails on the platforms Go supports: it
	// panics instead of returning predictable bytes.
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func sessionKey(id string) string {
	h := sha256.Sum256([]byte(id))
	return hex.EncodeToString(h[:])
}

// create starts a session for the given API key hash and returns its id
// (for the cookie) and its CSRF token.
func (cs *consoleSessions) create(keyHash string) (id, csrf string) {
	return cs.start(&consoleSession{keyHash: keyHash})
}

// createUser starts a session for a user signed in with a password.
func (cs *consoleSessions) createUser(userID string) (id, csrf string) {
	return cs.start(&consoleSession{userID: userID})
}

func (cs *consoleSessions) start(sess *consoleSession) (id, csrf string) {
	id, csrf = randomToken(), randomToken()
	now := cs.now()
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.purgeLocked(now)
	if len(cs.m) >= maxConsoleSessions {
		var oldest string
		for k, s := range cs.m {
			if oldest == "" || s.expires.Before(cs.m[oldest].expires) {
				oldest = k
			}
		}
		delete(cs.m, oldest)
	}
	sess.csrf, sess.created, sess.expires = csrf, now, now.Add(consoleIdle)
	cs.m[sessionKey(id)] = sess
	return id, csrf
}

// purgeLocked drops expired sessions. Sign-ins call it, so the map holds
// at most the sessions created within the idle time: no sweeper
// goroutine is needed.
func (cs *consoleSessions) purgeLocked(now time.Time) {
	for k, s := range cs.m {
		if !now.Before(s.expires) {
			delete(cs.m, k)
		}
	}
}

// sessionInfo is what a request learns about its session.
type sessionInfo struct {
	id      string
	csrf    string
	keyHash string
	userID  string
	// name and caller are filled in by console.session from the key or
	// user the session stands for: who is signed in, and the role and
	// environments every page and action is checked against.
	name   string
	caller httpapi.Caller
}

// get returns the live session with this id and extends its idle
// expiry.
func (cs *consoleSessions) get(id string) (sessionInfo, bool) {
	if id == "" {
		return sessionInfo{}, false
	}
	now := cs.now()
	k := sessionKey(id)
	cs.mu.Lock()
	defer cs.mu.Unlock()
	s, ok := cs.m[k]
	if !ok {
		return sessionInfo{}, false
	}
	if !now.Before(s.expires) {
		delete(cs.m, k)
		return sessionInfo{}, false
	}
	s.expires = now.Add(consoleIdle)
	if end := s.created.Add(consoleMaxAge); end.Before(s.expires) {
		s.expires = end
	}
	if !now.Before(s.expires) {
		delete(cs.m, k)
		return sessionInfo{}, false
	}
	return sessionInfo{id: id, csrf: s.csrf, keyHash: s.keyHash, userID: s.userID}, true
}

// delete ends a session; signing out and a revoked key call it.
func (cs *consoleSessions) delete(id string) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	delete(cs.m, sessionKey(id))
}

// count reports how many sessions are kept, for tests.
func (cs *consoleSessions) count() int {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return len(cs.m)
}

// addFlash keeps a message for the session's next page.
func (cs *consoleSessions) addFlash(id string, f consoleFlash) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if s, ok := cs.m[sessionKey(id)]; ok {
		s.flashes = append(s.flashes, f)
		if len(s.flashes) > maxFlashes {
			s.flashes = s.flashes[len(s.flashes)-maxFlashes:]
		}
	}
}

// takeFlashes returns and forgets the session's messages.
func (cs *consoleSessions) takeFlashes(id string) []consoleFlash {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	s, ok := cs.m[sessionKey(id)]
	if !ok {
		return nil
	}
	f := s.flashes
	s.flashes = nil
	return f
}

// validCSRF compares a submitted token with the session's in constant
// time.
func validCSRF(want, got string) bool {
	return got != "" && subtle.ConstantTimeCompare([]byte(want), []byte(got)) == 1
}
