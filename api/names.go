package api

import (
	"fmt"
	"regexp"
)

var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// ValidateName checks an agent or environment name: 1-63 letters, digits,
// '.', '_' or '-', starting with a letter or digit, so that names are safe
// in paths, URLs and service names.
func ValidateName(kind, name string) error {
	if !namePattern.MatchString(name) {
		return fmt.Errorf("%s name %q: use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit", kind, name)
	}
	return nil
}
