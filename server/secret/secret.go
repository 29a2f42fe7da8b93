// Package secret makes and hashes the coordinator's bearer secrets:
// enrollment tokens and API keys. They are random and long, so only an
// unsalted fast hash of each is stored, and whoever checks one (the agent
// listener, the HTTP API, the console) hashes what it was sent the same
// way.
package secret

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
)

// New returns a random bearer secret with a prefix that says what it is
// when it turns up in a log or a ticket ("tdk_" for API keys, "tdt_" for
// enrollment tokens).
func New(prefix string) string {
	// crypto/rand.Read never fails (it panics when the platform's source
	// is broken, when nothing safe is left to do).
	b := make([]byte, 24)
	rand.Read(b)
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

// Hash is how tokens and API keys are stored: lower-case hex SHA-256. A
// stolen database is then useless for authentication.
func Hash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}
