package access

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"

	"golang.org/x/crypto/argon2"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/kind"
	"github.com/tendrildeploy/tendril/server/secret"
)

// Argon2id parameters for new passwords: OWASP's recommended 19 MiB, two
// passes, one lane, with a 16-byte salt and a 32-byte hash. Each hash
// stores its own parameters, so raising these later keeps old passwords
// working.
const (
	argonMemory  = 19 * 1024 // KiB
	argonTime    = 2
	argonThreads = 1
	argonSaltLen = 16
	argonKeyLen  = 32
)

// Bounds on the parameters read back from a stored hash: a damaged or
// hand-edited row must not make one sign-in take gigabytes or minutes.
const (
	maxArgonMemory  = 1 << 20 // KiB: 1 GiB
	maxArgonTime    = 16
	maxArgonThreads = 16
)

// errBadPasswordHash means a stored hash cannot be read.
var errBadPasswordHash = errors.New("stored password hash is not an argon2id hash this coordinator can read")

// hashSlots bounds the password hashes computed at once, each of which
// takes argonMemory: a burst of sign-ins queues here instead of taking
// the coordinator's memory. It is shared by every Server of the process,
// which share its memory.
var hashSlots = make(chan struct{}, max(1, runtime.GOMAXPROCS(0)))

// argonParams are the cost parameters of one hash.
type argonParams struct {
	memory  uint32
	time    uint32
	threads uint8
}

var defaultArgon = argonParams{memory: argonMemory, time: argonTime, threads: argonThreads}

// idKey runs argon2id with p, one hash at a time per slot.
func (p argonParams) idKey(password string, salt []byte, keyLen uint32) []byte {
	hashSlots <- struct{}{}
	defer func() { <-hashSlots }()
	return argon2.IDKey([]byte(password), salt, p.time, p.memory, p.threads, keyLen)
}

// hashPassword returns the PHC string of password under a new random
// salt: $argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>.
func hashPassword(password string) string {
	salt := make([]byte, argonSaltLen)
	rand.Read(salt) // never fails: it panics when the platform's source is broken
	return encodeArgon(defaultArgon, salt, defaultArgon.idKey(password, salt, argonKeyLen))
}

func encodeArgon(p argonParams, salt, key []byte) string {
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.memory, p.time, p.threads, b64.EncodeToString(salt), b64.EncodeToString(key))
}

// decodeArgon reads a PHC string written by encodeArgon, refusing
// parameters outside the bounds above.
func decodeArgon(encoded string) (argonParams, []byte, []byte, error) {
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return argonParams{}, nil, nil, errBadPasswordHash
	}
	var version int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return argonParams{}, nil, nil, errBadPasswordHash
	}
	var p argonParams
	if n, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.memory, &p.time, &p.threads); err != nil || n != 3 ||
		p.memory < 8*uint32(p.threads) || p.memory > maxArgonMemory || p.time < 1 || p.time > maxArgonTime ||
		p.threads < 1 || p.threads > maxArgonThreads || encodeParams(p) != parts[3] {
		return argonParams{}, nil, nil, errBadPasswordHash
	}
	b64 := base64.RawStdEncoding
	salt, err := b64.DecodeString(parts[4])
	if err != nil || len(salt) < 8 {
		return argonParams{}, nil, nil, errBadPasswordHash
	}
	key, err := b64.DecodeString(parts[5])
	if err != nil || len(key) < 16 || len(key) > 64 {
		return argonParams{}, nil, nil, errBadPasswordHash
	}
	return p, salt, key, nil
}

// encodeParams is the parameter part of a PHC string, to check that one
// read back had nothing trailing.
func encodeParams(p argonParams) string {
	return fmt.Sprintf("m=%d,t=%d,p=%d", p.memory, p.time, p.threads)
}

// verifyPassword reports whether password matches the stored hash,
// comparing in constant time.
func verifyPassword(encoded, password string) (bool, error) {
	p, salt, want, err := decodeArgon(encoded)
	if err != nil {
		return false, err
	}
	got := p.idKey(password, salt, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}

// dummyPasswordHash is checked against when a sign-in names no user, so
// that an unknown name takes as long to refuse as a wrong password and
// the timing does not tell which names exist.
var dummyPasswordHash = sync.OnceValue(func() string { return hashPassword(secret.New("")) })

// ValidatePassword checks a new password's length.
func ValidatePassword(password string) error {
	switch {
	case len(password) < api.MinPasswordLen:
		return kind.Errorf(kind.ErrBadRequest, "the password is too short: use at least %d characters", api.MinPasswordLen)
	case len(password) > api.MaxPasswordLen:
		return kind.Errorf(kind.ErrBadRequest, "the password is too long: use at most %d bytes", api.MaxPasswordLen)
	}
	return nil
}
