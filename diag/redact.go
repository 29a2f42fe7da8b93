package diag

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
)

// Redacted replaces a secret's value.
const Redacted = "xxxxx"

// secretName matches the names of settings and flags whose values are
// secrets, whatever the setting: a password, a token, a key that is not
// public, credentials, a cookie, a signature, a connection string. It
// matches within a name (access_token, x-api-key, client_secret); "key",
// "sig" and "dsn", too common inside other words, only as a whole word
// or after "_", "-" or ".".
var secretName = regexp.MustCompile(`(?i)(pass(word|wd|phrase)?|pwd|secret|token|private|credential|api[_-]?key|auth|master|cookie|session|(^|[_.-])(key|sig|signature|dsn)$)`)

// urlUserinfo is the user information of a URL: what stands between
// "scheme://" and the last "@" before the host's end, so that a password
// holding "@" (postgres://u:p@ss@db) is hidden whole.
var urlUserinfo = regexp.MustCompile(`\b([a-zA-Z][a-zA-Z0-9+.\-]*://)[^/?#\s"']*@`)

// secretParam is a secret in a query string or a key=value connection
// string (PostgreSQL's "password='...'" and "sslpassword=..."). A name
// starts the text or follows a separator, "_" included: \b does not
// match between "_" and a letter, and access_token= and client_secret=
// must be caught. A value quoted with ' or " is hidden to its closing
// quote, spaces and all.
var secretParam = regexp.MustCompile(`(?i)(^|[?&;,\s_.\-"'])((?:ssl)?password|passwd|pwd|secret|token|api[_-]?key|key|dsn|cookie|sig|signature|auth|authorization|credentials?)=('(?:[^'\\]|\\.)*'?|"(?:[^"\\]|\\.)*"?|[^&\s;'"]*)`)

// publicKeyName matches the names of keys that are public: the
// coordinator's signing key, as agent.json and the API name it, is the
// public half agents verify with.
var publicKeyName = regexp.MustCompile(`(?i)^(public|signing)[_.-]?key$`)

// SecretName reports whether a setting or flag named name holds a secret.
func SecretName(name string) bool {
	return secretName.MatchString(name) && !publicKeyName.MatchString(name)
}

// RedactString hides the secrets a free-form value can carry: the user
// information of URLs (a proxy's or a database's credentials), secret
// query or connection-string parameters, and private key blocks.
func RedactString(s string) string {
	if strings.Contains(s, string(privateKeyMarker)) {
		b, _ := RemovePrivateKeys([]byte(s))
		s = string(b)
	}
	s = urlUserinfo.ReplaceAllString(s, "${1}"+Redacted+"@")
	return secretParam.ReplaceAllString(s, "${1}${2}="+Redacted)
}

// Redact returns v, a value decoded from JSON (maps, slices, strings,
// numbers, booleans, nil), with every secret hidden: the value of any
// field whose name says it is secret (SecretName), and within every
// string what RedactString hides. Unknown fields are covered as well as
// known ones, so a setting added later is redacted by its name.
func Redact(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, val := range t {
			if SecretName(k) && !empty(val) {
				out[k] = Redacted
				continue
			}
			out[k] = Redact(val)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, val := range t {
			out[i] = Redact(val)
		}
		return out
	case string:
		return RedactString(t)
	}
	return v
}

func empty(v any) bool {
	switch t := v.(type) {
	case nil:
		return true
	case bool:
		return true // a switch says nothing secret
	case string:
		return t == ""
	}
	return false
}

// RedactJSON decodes b, redacts it (Redact) and encodes it indented. Text
// that is not JSON is an error: it cannot be redacted field by field, so
// the caller leaves it out rather than copy it.
func RedactJSON(b []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("not valid JSON: %w", err)
	}
	out, err := json.MarshalIndent(Redact(v), "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode redacted JSON: %w", err)
	}
	return append(out, '\n'), nil
}

// RedactArgs hides secrets in a command line: the value of every flag
// whose name says it is secret (--token T, --api-key=K), and in every
// argument what RedactString hides. values redacts the value of the
// flags it names in its own way (e.g. a proxy URL).
func RedactArgs(args []string, values map[string]func(string) string) []string {
	out := make([]string, len(args))
	var next func(string) string
	for i, a := range args {
		if next != nil {
			out[i], next = next(a), nil
			continue
		}
		out[i] = RedactString(a)
		if !strings.HasPrefix(a, "-") {
			continue
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		f := values[name]
		if f == nil && SecretName(name) {
			f = func(string) string { return Redacted }
		}
		switch {
		case f == nil:
		case hasVal:
			out[i] = a[:len(a)-len(val)] + f(val)
		default:
			next = f
		}
	}
	return out
}
