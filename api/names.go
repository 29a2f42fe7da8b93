package api

import (
	"fmt"
	"regexp"
)

// NamePattern is the rule for agent, environment, user, API key and lock
// names, as a regular expression: the coordinator checks names with it,
// and the OpenAPI document declares it for the fields that take a name.
const NamePattern = `^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`

// NameRule says NamePattern in words, for messages and the document.
const NameRule = "use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"

var namePattern = regexp.MustCompile(NamePattern)

// ValidateName checks an agent or environment name: 1-63 letters, digits,
// '.', '_' or '-', starting with a letter or digit, so that names are safe
// in paths, URLs and service names.
func ValidateName(kind, name string) error {
	if !namePattern.MatchString(name) {
		return fmt.Errorf("%s name %q: %s", kind, name, NameRule)
	}
	return nil
}
