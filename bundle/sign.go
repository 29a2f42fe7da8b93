package bundle

import (
	"errors"
	"fmt"

	"github.com/tendrildeploy/tendril/certs"
)

// Sign signs manifest bytes (as they appear in the archive) with the
// coordinator's signing key. The signature is installed as manifest.sig.
func Sign(key *certs.SigningKey, manifest []byte) []byte {
	return key.Sign(manifest)
}

// VerifySignature checks sig over the manifest bytes against the
// coordinator's public key (hex, as certs.SigningKey.Public returns it).
// Every failure, including an empty signature or a malformed key, wraps
// ErrBadSignature: there is no way to skip verification.
func VerifySignature(publicKeyHex string, manifest, sig []byte) error {
	if len(sig) == 0 {
		return fmt.Errorf("%w: the manifest is not signed", ErrBadSignature)
	}
	err := certs.Verify(publicKeyHex, manifest, sig)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, certs.ErrBadSignature):
		return fmt.Errorf("%w (signed by another key, or changed since it was signed)", ErrBadSignature)
	default:
		return fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
}
