package console

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/server/kind"
	"github.com/tendrildeploy/tendril/server/secret"
)

// Sign-in refusals. A wrong user name and a wrong password get the same
// words, so the answer never says which names exist.
const (
	signinEmpty       = "Enter a user name and password, or an API key."
	signinIncomplete  = "Enter both a user name and a password."
	signinBadPassword = "That user name and password do not match."
	signinBadKey      = "That API key is not valid."
)

// authenticate checks a sign-in form: an API key ("key") or a user name
// and password ("user", "password"). On success it returns start, which
// opens the session and returns its id and who it is for. A refusal is a
// status and a message for the form; err is for failures of the
// coordinator itself.
func (c *Console) authenticate(w http.ResponseWriter, r *http.Request) (start func() (id, who string), status int, msg string, err error) {
	key := strings.TrimSpace(r.PostForm.Get("key"))
	user := strings.TrimSpace(r.PostForm.Get("user"))
	password := r.PostForm.Get("password")
	switch {
	case key == "" && user == "" && password == "":
		return nil, http.StatusBadRequest, signinEmpty, nil
	case key == "" && (user == "" || password == ""):
		return nil, http.StatusBadRequest, signinIncomplete, nil
	}
	limited := user
	if key != "" {
		limited = "" // a key names no user
	}
	attempt, wait := c.limits.begin(limited, r.RemoteAddr)
	if attempt == nil {
		secs := int(math.Ceil(wait.Seconds()))
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		c.log.Warn("console sign-in refused: too many failures", zap.String("remote", r.RemoteAddr), zap.String("user", user))
		return nil, http.StatusTooManyRequests, fmt.Sprintf("Too many failed sign-ins. Try again in %d seconds.", secs), nil
	}
	if key != "" {
		k, err := c.access.CheckAPIKey(r.Context(), key)
		if errors.Is(err, kind.ErrNotFound) {
			c.log.Info("console sign-in refused: wrong API key", zap.String("remote", r.RemoteAddr))
			return nil, http.StatusUnauthorized, signinBadKey, nil
		}
		if err != nil {
			return nil, 0, "", fmt.Errorf("check API key: %w", err)
		}
		attempt.succeeded()
		return func() (string, string) {
			id, _ := c.sessions.create(secret.Hash(key))
			return id, "API key " + k.Name
		}, 0, "", nil
	}
	u, err := c.access.Authenticate(r.Context(), user, password)
	if c.access.IsBadCredentials(err) {
		c.log.Info("console sign-in refused: wrong user name or password", zap.String("remote", r.RemoteAddr), zap.String("user", user))
		return nil, http.StatusUnauthorized, signinBadPassword, nil
	}
	if err != nil {
		return nil, 0, "", fmt.Errorf("check password of %q: %w", user, err)
	}
	attempt.succeeded()
	return func() (string, string) {
		id, _ := c.sessions.createUser(u.ID)
		return id, u.Name
	}, 0, "", nil
}
