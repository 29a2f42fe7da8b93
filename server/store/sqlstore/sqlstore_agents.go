package sqlstore

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/kind"
	"github.com/tendrildeploy/tendril/server/store"
)

// Register implements Store.
//
// Beyond the interface's contract: a zero Now means the current time;
// Name, Thumbprint and NewID must not be empty.
//
// Concurrent registrations, from this process or another coordinator,
// are serialized by the identities lock, and the token row is locked, so
// that one token enrols one agent.
func (s *sqlStore) Register(ctx context.Context, p store.RegisterParams) (store.RegisterResult, error) {
	if p.Now.IsZero() {
		p.Now = time.Now()
	}
	var res store.RegisterResult
	err := s.tx(ctx, func(tx *sqlTx) error {
		var err error
		res, err = register(ctx, tx, p)
		return err
	})
	if err != nil {
		return store.RegisterResult{}, fmt.Errorf("register agent %q: %w", p.Name, err)
	}
	return res, nil
}

func register(ctx context.Context, tx *sqlTx, p store.RegisterParams) (store.RegisterResult, error) {
	switch {
	case p.Name == "":
		return store.RegisterResult{}, errors.New("name is empty")
	case p.Thumbprint == "":
		return store.RegisterResult{}, errors.New("thumbprint is empty")
	case p.NewID == "":
		return store.RegisterResult{}, errors.New("new agent ID is empty")
	}
	now, err := timeArg(p.Now)
	if err != nil {
		return store.RegisterResult{}, err
	}
	if err := tx.d.lock(ctx, tx, lockIdentities); err != nil {
		return store.RegisterResult{}, err
	}

	var (
		tokID, tokEnv     string
		expiresAt, usedAt sql.NullInt64
		usedBy            sql.NullString
	)
	err = tx.QueryRowContext(ctx,
		`SELECT id, environment, expires_at, used_at, used_by FROM tokens WHERE hash = ?`+tx.d.forUpdate(),
		p.TokenHash).Scan(&tokID, &tokEnv, &expiresAt, &usedAt, &usedBy)
	if errors.Is(err, sql.ErrNoRows) {
		return store.RegisterResult{}, store.ErrTokenInvalid
	}
	if err != nil {
		return store.RegisterResult{}, err
	}

	if usedAt.Valid {
		// The agent may not have received the reply to its first attempt;
		// giving it the same answer again lets it retry safely.
		if usedBy.String == p.Thumbprint {
			a, err := agentBy(ctx, tx, "thumbprint", p.Thumbprint)
			if err == nil {
				return store.RegisterResult{Agent: a}, nil
			}
			if !errors.Is(err, store.ErrNotFound) {
				return store.RegisterResult{}, err
			}
		}
		return store.RegisterResult{}, store.ErrTokenUsed
	}
	if p.Now.After(fromNanos(expiresAt)) {
		return store.RegisterResult{}, store.ErrTokenExpired
	}
	env := p.Environment
	if env == "" {
		env = tokEnv
	} else if env != tokEnv {
		return store.RegisterResult{}, fmt.Errorf("token is for environment %q, not %q: %w", tokEnv, env, store.ErrTokenInvalid)
	}

	// A revoked certificate belonged to an agent an operator removed (or
	// replaced, or rotated away from): neither a token nor Force brings
	// it back, the agent registers with a new one.
	reason, err := revocationReason(ctx, tx, p.Thumbprint)
	if err == nil {
		return store.RegisterResult{}, fmt.Errorf("thumbprint %s was revoked (%s): %w", p.Thumbprint, reason, store.ErrRevoked)
	}
	if !errors.Is(err, store.ErrNotFound) {
		return store.RegisterResult{}, err
	}
	conflicts, err := identityConflicts(ctx, tx, p.Name, p.Thumbprint)
	if err != nil {
		return store.RegisterResult{}, err
	}
	// A token enrols into its environment only; replacing an agent of
	// another one would let a token for Dev take over a Prod agent's
	// name, and with it the tasks sent to that name.
	for _, a := range conflicts {
		if a.Environment != env {
			return store.RegisterResult{}, &store.EnvironmentError{
				Agent: a.Name, Environment: a.Environment, ByName: a.Name == p.Name, TokenEnvironment: env}
		}
	}
	if !p.Force {
		if err := refuseConflicts(p.Name, p.Thumbprint, conflicts); err != nil {
			return store.RegisterResult{}, err
		}
	}

	for _, a := range conflicts {
		if _, err := tx.ExecContext(ctx, `DELETE FROM agents WHERE id = ?`, a.ID); err != nil {
			return store.RegisterResult{}, err
		}
		for _, tp := range []string{a.Thumbprint, a.NextThumbprint} {
			if tp == "" || tp == p.Thumbprint {
				continue
			}
			if err := revoke(ctx, tx, tp, store.RevokedReplaced, now); err != nil {
				return store.RegisterResult{}, err
			}
		}
	}

	_, err = tx.ExecContext(ctx,
		`INSERT INTO agents (id, name, environment, thumbprint, health, disk_free, registered_at)
		 VALUES (?, ?, ?, ?, ?, -1, ?)`,
		p.NewID, p.Name, env, p.Thumbprint, api.HealthUnavailable, now)
	if tx.d.uniqueViolation(err) {
		// Unreachable under the identities lock but for an agent ID that
		// is already used; kept so that a change to the locking fails
		// safe.
		return store.RegisterResult{}, fmt.Errorf("agent %s: %w", p.NewID, store.ErrExists)
	}
	if err != nil {
		return store.RegisterResult{}, err
	}
	err = oneRow(tx.ExecContext(ctx,
		`UPDATE tokens SET used_at = ?, used_by = ? WHERE id = ? AND used_at IS NULL`,
		now, p.Thumbprint, tokID))
	if errors.Is(err, store.ErrNotFound) {
		// Unreachable while the token row is locked and writes are
		// serialized; kept so that a change to that cannot let one token
		// enrol two agents.
		return store.RegisterResult{}, store.ErrTokenUsed
	}
	if err != nil {
		return store.RegisterResult{}, err
	}

	a, err := agentBy(ctx, tx, "id", p.NewID)
	if err != nil {
		return store.RegisterResult{}, err
	}
	return store.RegisterResult{Agent: a, Replaced: conflicts}, nil
}

// AddListening implements Store.
//
// Beyond the interface's contract: a zero Now means the current time;
// Name, Thumbprint, Address and NewID must not be empty. Unlike Register
// there is no Force: an operator who wants a name back deletes the agent
// holding it first, so that adding an agent never silently drops another
// one's session (and a deleted agent's certificate stays revoked).
//
// It takes the identities lock, as Register does, so that an agent added
// here and one registering with the same name or thumbprint, on this
// coordinator or another, cannot both succeed.
func (s *sqlStore) AddListening(ctx context.Context, p store.ListeningParams) (store.Agent, error) {
	if p.Now.IsZero() {
		p.Now = time.Now()
	}
	var a store.Agent
	err := s.tx(ctx, func(tx *sqlTx) error {
		var err error
		a, err = addListening(ctx, tx, p)
		return err
	})
	if err != nil {
		return store.Agent{}, fmt.Errorf("add listening agent %q: %w", p.Name, err)
	}
	return a, nil
}

func addListening(ctx context.Context, tx *sqlTx, p store.ListeningParams) (store.Agent, error) {
	switch {
	case p.Name == "":
		return store.Agent{}, errors.New("name is empty")
	case p.Thumbprint == "":
		return store.Agent{}, errors.New("thumbprint is empty")
	case p.Address == "":
		return store.Agent{}, errors.New("address is empty")
	case p.NewID == "":
		return store.Agent{}, errors.New("new agent ID is empty")
	}
	now, err := timeArg(p.Now)
	if err != nil {
		return store.Agent{}, err
	}
	if err := tx.d.lock(ctx, tx, lockIdentities); err != nil {
		return store.Agent{}, err
	}

	// The same conflicts as register's, answered the same way, so that an
	// operator gets one meaning for each error whichever way the agent
	// came in.
	conflicts, err := identityConflicts(ctx, tx, p.Name, p.Thumbprint)
	if err != nil {
		return store.Agent{}, err
	}
	if err := refuseConflicts(p.Name, p.Thumbprint, conflicts); err != nil {
		return store.Agent{}, err
	}
	revoked, err := isRevoked(ctx, tx, p.Thumbprint)
	if err != nil {
		return store.Agent{}, err
	}
	if revoked {
		// Register can reinstate it with Force; adding an agent by its
		// thumbprint is not meant to undo an operator's removal of it.
		return store.Agent{}, fmt.Errorf("thumbprint %s was revoked: %w", p.Thumbprint, store.ErrThumbprintTaken)
	}

	_, err = tx.ExecContext(ctx,
		`INSERT INTO agents (id, name, environment, thumbprint, address, health, disk_free, registered_at)
		 VALUES (?, ?, ?, ?, ?, ?, -1, ?)`,
		p.NewID, p.Name, p.Environment, p.Thumbprint, p.Address, api.HealthUnavailable, now)
	if tx.d.uniqueViolation(err) {
		// As in register: only an agent ID already used gets here.
		return store.Agent{}, fmt.Errorf("agent %s: %w", p.NewID, store.ErrExists)
	}
	if err != nil {
		return store.Agent{}, err
	}
	return agentBy(ctx, tx, "id", p.NewID)
}

// SetAgentAddress implements Store. An empty address is refused with
// kind.ErrBadRequest too: it would silently make the agent a polling one,
// and nothing would dial it again.
func (s *sqlStore) SetAgentAddress(ctx context.Context, id, address string) error {
	if err := s.setAgentAddress(ctx, id, address); err != nil {
		return fmt.Errorf("set address of agent %s: %w", id, err)
	}
	return nil
}

func (s *sqlStore) setAgentAddress(ctx context.Context, id, address string) error {
	if address == "" {
		return kind.Errorf(kind.ErrBadRequest, "the address is empty")
	}
	// One statement checks and changes, so there is no window between
	// them to reason about; the lookup after it only chooses the error.
	n, err := affected(s.w.ExecContext(ctx,
		`UPDATE agents SET address = ?, dial_error = '' WHERE id = ? AND address <> ''`, address, id))
	if err != nil || n > 0 {
		return err
	}
	a, err := agentBy(ctx, s.r, "id", id)
	if err != nil {
		return err
	}
	return kind.Errorf(kind.ErrBadRequest,
		"agent %q is a polling agent: it connects to the coordinator, which has no address to dial", a.Name)
}

// SetDialError implements Store. A message PostgreSQL cannot store (NUL
// bytes, invalid UTF-8) is stored there with U+FFFD in their place.
//
// The coordinator calls it after every dial attempt, and an agent that
// is down fails the same way each time: the stored value is read first,
// on the read path, and written only when it differs, so that such an
// agent costs a read per attempt and no write (no turn of SQLite's one
// writer, no new row version in PostgreSQL).
func (s *sqlStore) SetDialError(ctx context.Context, id, message string) error {
	if err := s.setDialError(ctx, id, s.d.text(message)); err != nil {
		return fmt.Errorf("set dial error of agent %s: %w", id, err)
	}
	return nil
}

func (s *sqlStore) setDialError(ctx context.Context, id, message string) error {
	var stored string
	err := s.hr.QueryRowContext(ctx, `SELECT dial_error FROM agents WHERE id = ?`, id).Scan(&stored)
	if errors.Is(err, sql.ErrNoRows) {
		return store.ErrNotFound
	}
	if err != nil || stored == message {
		return err
	}
	// The condition keeps two coordinators that both saw the old value
	// from writing the same new one twice; no row then means either that
	// or that the agent was deleted meanwhile, which the lookup tells
	// apart.
	n, err := affected(s.hw.ExecContext(ctx,
		`UPDATE agents SET dial_error = ? WHERE id = ? AND dial_error <> ?`, message, id, message))
	if err != nil || n > 0 {
		return err
	}
	found, err := exists(ctx, s.hr, `SELECT 1 FROM agents WHERE id = ?`, id)
	if err == nil && !found {
		err = store.ErrNotFound
	}
	return err
}

// identityConflicts lists the agents a new agent of this name and
// thumbprint would collide with. An agent whose next thumbprint is the
// new one counts as a holder of it: otherwise AgentByThumbprint could
// match two agents.
func identityConflicts(ctx context.Context, tx *sqlTx, name, thumbprint string) ([]store.Agent, error) {
	return queryRows(ctx, tx, scanAgent,
		`SELECT `+agentColumns+` FROM agents
		 WHERE name = ? OR thumbprint = ? OR next_thumbprint = ?
		 ORDER BY name`,
		name, thumbprint, thumbprint)
}

// refuseConflicts says why a new agent cannot have this name and
// thumbprint, given identityConflicts' answer: ErrNameTaken when another
// certificate holds the name, else ErrThumbprintTaken.
func refuseConflicts(name, thumbprint string, conflicts []store.Agent) error {
	for _, a := range conflicts {
		if a.Name == name && a.Thumbprint != thumbprint {
			return store.ErrNameTaken
		}
	}
	if len(conflicts) > 0 {
		return fmt.Errorf("thumbprint %s: %w", thumbprint, store.ErrThumbprintTaken)
	}
	return nil
}

// AgentByThumbprint implements Store.
func (s *sqlStore) AgentByThumbprint(ctx context.Context, thumbprint string) (store.Agent, error) {
	a, err := queryOne(ctx, s.hr, scanAgent,
		`SELECT `+agentColumns+` FROM agents WHERE thumbprint = ? OR next_thumbprint = ?`,
		thumbprint, thumbprint)
	if err != nil {
		return store.Agent{}, fmt.Errorf("get agent by thumbprint %s: %w", thumbprint, err)
	}
	return a, nil
}

// AgentByID implements Store.
func (s *sqlStore) AgentByID(ctx context.Context, id string) (store.Agent, error) {
	a, err := agentBy(ctx, s.r, "id", id)
	if err != nil {
		return store.Agent{}, fmt.Errorf("get agent %s: %w", id, err)
	}
	return a, nil
}

// AgentByName implements Store.
func (s *sqlStore) AgentByName(ctx context.Context, name string) (store.Agent, error) {
	a, err := agentBy(ctx, s.r, "name", name)
	if err != nil {
		return store.Agent{}, fmt.Errorf("get agent by name %q: %w", name, err)
	}
	return a, nil
}

// ListAgents implements Store.
func (s *sqlStore) ListAgents(ctx context.Context) ([]store.Agent, error) {
	agents, err := queryRows(ctx, s.r, scanAgent, `SELECT `+agentColumns+` FROM agents ORDER BY environment, name`)
	if err != nil {
		return nil, fmt.Errorf("list agents: %w", err)
	}
	return agents, nil
}

// ListListeningAgents implements Store. The dialer asks every few
// seconds; at 10,000 polling agents, reading them all to keep the few
// listening ones was 7% of a coordinator's CPU during a connect ramp.
func (s *sqlStore) ListListeningAgents(ctx context.Context) ([]store.Agent, error) {
	agents, err := queryRows(ctx, s.r, scanAgent, `SELECT `+agentColumns+` FROM agents WHERE address <> '' ORDER BY environment, name`)
	if err != nil {
		return nil, fmt.Errorf("list listening agents: %w", err)
	}
	return agents, nil
}

// DeleteAgent implements Store.
func (s *sqlStore) DeleteAgent(ctx context.Context, id string) error {
	err := s.tx(ctx, func(tx *sqlTx) error {
		a, err := lockAgent(ctx, tx, id)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM agents WHERE id = ?`, id); err != nil {
			return err
		}
		now := time.Now().UnixNano()
		for _, tp := range []string{a.Thumbprint, a.NextThumbprint} {
			if tp == "" {
				continue
			}
			if err := revoke(ctx, tx, tp, store.RevokedDeleted, now); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete agent %s: %w", id, err)
	}
	return nil
}

// IsRevoked implements Store.
func (s *sqlStore) IsRevoked(ctx context.Context, thumbprint string) (bool, error) {
	revoked, err := isRevoked(ctx, s.hr, thumbprint)
	if err != nil {
		return false, fmt.Errorf("check revocation of thumbprint %s: %w", thumbprint, err)
	}
	return revoked, nil
}

// RevocationReason implements Store.
func (s *sqlStore) RevocationReason(ctx context.Context, thumbprint string) (string, error) {
	reason, err := revocationReason(ctx, s.hr, thumbprint)
	if err != nil {
		return "", fmt.Errorf("revocation of thumbprint %s: %w", thumbprint, err)
	}
	return reason, nil
}

// RecordConnection implements Store. ErrNotFound if the agent does not
// exist.
func (s *sqlStore) RecordConnection(ctx context.Context, c store.Connection) error {
	at, err := timeArg(c.At)
	var calamari, features string
	if err == nil {
		calamari, err = listArg(c.CalamariVersions)
	}
	if err == nil {
		features, err = listArg(c.Features)
	}
	if err == nil {
		err = oneRow(s.hw.ExecContext(ctx,
			`UPDATE agents SET version = ?, os = ?, arch = ?, protocol = ?, tls_version = ?,
			 calamari_versions = ?, features = ?, last_seen = ?, node = ?
			 WHERE id = ?`,
			c.Version, c.OS, c.Arch, c.Protocol, c.TLSVersion, calamari, features, at, nullString(c.Node), c.AgentID))
	}
	if err != nil {
		return fmt.Errorf("record connection of agent %s: %w", c.AgentID, err)
	}
	return nil
}

// RecordHealth implements Store. Results for agents that no longer exist
// are skipped, so that deleting one agent while its check is in flight does
// not lose the rest of the batch. An empty Version keeps the stored one:
// every agent has a version, so "" means the check did not learn it. A
// health detail PostgreSQL cannot store (NUL bytes, invalid UTF-8) is
// stored there with U+FFFD in their place.
func (s *sqlStore) RecordHealth(ctx context.Context, results []store.HealthResult) error {
	if err := s.recordHealth(ctx, results); err != nil {
		return fmt.Errorf("record health of %d agents: %w", len(results), err)
	}
	return nil
}

func (s *sqlStore) recordHealth(ctx context.Context, results []store.HealthResult) error {
	if len(results) == 0 {
		return nil
	}
	// Converting before the transaction keeps it short and means a bad
	// result fails the batch without touching the database.
	rows := make([][]any, len(results))
	for i, r := range results {
		if !validHealth(r.Health) {
			return fmt.Errorf("agent %s: unknown health %q", r.AgentID, r.Health)
		}
		at, err := timeArg(r.At)
		if err != nil {
			return fmt.Errorf("agent %s: %w", r.AgentID, err)
		}
		calamari, err := listArg(r.CalamariVersions)
		if err != nil {
			return fmt.Errorf("agent %s: %w", r.AgentID, err)
		}
		work, err := workArg(r.Work)
		if err != nil {
			return fmt.Errorf("agent %s: %w", r.AgentID, err)
		}
		rows[i] = []any{r.Health, s.d.text(r.Detail), int64(r.RTT), r.Version, calamari, r.DiskFree, work, at,
			r.Health != api.HealthUnhealthy, at, r.AgentID}
	}
	// Rows are written in agent ID order, so that two coordinators writing
	// overlapping batches queue rather than deadlock. The sort is stable:
	// of two results for one agent, the later one still wins.
	id := func(row []any) string { return row[len(row)-1].(string) }
	slices.SortStableFunc(rows, func(a, b []any) int { return cmp.Compare(id(a), id(b)) })
	return s.tx(ctx, func(tx *sqlTx) error {
		return tx.d.execMany(ctx, tx,
			`UPDATE agents SET health = ?, health_detail = ?, health_rtt = ?,
			 version = COALESCE(NULLIF(?, ''), version), calamari_versions = ?,
			 disk_free = ?, work = COALESCE(?, work), last_health_at = ?,
			 last_seen = CASE WHEN ? THEN ? ELSE last_seen END
			 WHERE id = ?`,
			rows, func(i int) string { return "agent " + id(rows[i]) })
	})
}

// workArg converts an agent's work report for storage: nil becomes NULL,
// which keeps the report stored before (see RecordHealth).
func workArg(w *api.AgentWork) (any, error) {
	if w == nil {
		return nil, nil
	}
	b, err := json.Marshal(w)
	if err != nil {
		return nil, fmt.Errorf("work report: %w", err)
	}
	return string(b), nil
}

// SetCalamariVersions implements Store.
func (s *sqlStore) SetCalamariVersions(ctx context.Context, agentID string, versions []string) error {
	list, err := listArg(versions)
	if err == nil {
		err = oneRow(s.w.ExecContext(ctx, `UPDATE agents SET calamari_versions = ? WHERE id = ?`, list, agentID))
	}
	if err != nil {
		return fmt.Errorf("set calamari versions of agent %s: %w", agentID, err)
	}
	return nil
}

func validHealth(h string) bool {
	switch h {
	case api.HealthHealthy, api.HealthWarning, api.HealthUnhealthy, api.HealthUnavailable:
		return true
	}
	return false
}

// TouchAgents implements Store. Unknown IDs are skipped, for the same
// reason as in RecordHealth.
func (s *sqlStore) TouchAgents(ctx context.Context, ids []string, at time.Time) error {
	if len(ids) == 0 {
		return nil
	}
	t, err := timeArg(at)
	if err == nil {
		// In ID order, for the reason given in recordHealth.
		ids = slices.Sorted(slices.Values(ids))
		rows := make([][]any, len(ids))
		for i, id := range ids {
			rows[i] = []any{t, id}
		}
		err = s.tx(ctx, func(tx *sqlTx) error {
			return tx.d.execMany(ctx, tx, `UPDATE agents SET last_seen = ? WHERE id = ?`,
				rows, func(i int) string { return "agent " + ids[i] })
		})
	}
	if err != nil {
		return fmt.Errorf("touch %d agents: %w", len(ids), err)
	}
	return nil
}

// SetNextThumbprint implements Store. ErrNotFound if the agent does not
// exist. next == "" cancels a pending rotation, and next equal to the
// agent's current thumbprint is a no-op, since promoting it would revoke the
// certificate the agent uses. A revoked thumbprint is refused with
// ErrThumbprintTaken.
func (s *sqlStore) SetNextThumbprint(ctx context.Context, id, next string) error {
	err := s.tx(ctx, func(tx *sqlTx) error {
		a, err := lockAgent(ctx, tx, id)
		if err != nil {
			return err
		}
		if next == a.Thumbprint {
			return nil
		}
		if next != "" {
			taken, err := exists(ctx, tx,
				`SELECT 1 FROM agents WHERE (thumbprint = ? OR next_thumbprint = ?) AND id <> ?`, next, next, id)
			if err != nil {
				return err
			}
			if taken {
				return store.ErrThumbprintTaken
			}
			revoked, err := isRevoked(ctx, tx, next)
			if err != nil {
				return err
			}
			if revoked {
				return fmt.Errorf("thumbprint was revoked: %w", store.ErrThumbprintTaken)
			}
		}
		_, err = tx.ExecContext(ctx, `UPDATE agents SET next_thumbprint = ? WHERE id = ?`, nullString(next), id)
		return err
	})
	if err != nil {
		return fmt.Errorf("set next thumbprint of agent %s to %s: %w", id, next, err)
	}
	return nil
}

// PromoteThumbprint implements Store. ErrNotFound if the agent does not
// exist.
func (s *sqlStore) PromoteThumbprint(ctx context.Context, id string) error {
	err := s.tx(ctx, func(tx *sqlTx) error {
		a, err := lockAgent(ctx, tx, id)
		if err != nil {
			return err
		}
		if a.NextThumbprint == "" {
			return nil
		}
		_, err = tx.ExecContext(ctx,
			`UPDATE agents SET thumbprint = next_thumbprint, next_thumbprint = NULL WHERE id = ?`, id)
		if err != nil {
			return err
		}
		return revoke(ctx, tx, a.Thumbprint, store.RevokedRotated, time.Now().UnixNano())
	})
	if err != nil {
		return fmt.Errorf("promote next thumbprint of agent %s: %w", id, err)
	}
	return nil
}

// SetServerThumbprintAck implements Store. ErrNotFound if the agent does
// not exist.
func (s *sqlStore) SetServerThumbprintAck(ctx context.Context, id, thumbprint string) error {
	err := oneRow(s.w.ExecContext(ctx, `UPDATE agents SET server_thumbprint_ack = ? WHERE id = ?`, thumbprint, id))
	if err != nil {
		return fmt.Errorf("set server thumbprint ack of agent %s: %w", id, err)
	}
	return nil
}

// CreateToken implements Store.
func (s *sqlStore) CreateToken(ctx context.Context, t store.Token) error {
	if err := s.createToken(ctx, t); err != nil {
		return fmt.Errorf("create token %s: %w", t.ID, err)
	}
	return nil
}

func (s *sqlStore) createToken(ctx context.Context, t store.Token) error {
	// A missing expiry would be read back as the zero time, which has
	// passed: the token would be unusable, so refuse it now.
	expires, err := requiredTime(t.ExpiresAt, "expiry")
	if err != nil {
		return err
	}
	created, err := requiredTime(t.CreatedAt, "creation time")
	if err != nil {
		return err
	}
	used, err := timeArg(t.UsedAt)
	if err != nil {
		return err
	}
	_, err = s.w.ExecContext(ctx,
		`INSERT INTO tokens (id, hash, environment, created_at, expires_at, used_at, used_by)
		 VALUES (?, ?, ?, ?, ?, ?, ?)`,
		t.ID, t.Hash, t.Environment, created, expires, used, nullString(t.UsedBy))
	return err
}

// ListTokens implements Store.
func (s *sqlStore) ListTokens(ctx context.Context) ([]store.Token, error) {
	tokens, err := queryRows(ctx, s.r, scanToken,
		`SELECT id, hash, environment, created_at, expires_at, used_at, used_by
		 FROM tokens ORDER BY created_at DESC, id`)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	return tokens, nil
}

func scanToken(sc scanner) (store.Token, error) {
	var (
		t                      store.Token
		created, expires, used sql.NullInt64
		usedBy                 sql.NullString
	)
	if err := sc.Scan(&t.ID, &t.Hash, &t.Environment, &created, &expires, &used, &usedBy); err != nil {
		return store.Token{}, err
	}
	t.CreatedAt, t.ExpiresAt, t.UsedAt = fromNanos(created), fromNanos(expires), fromNanos(used)
	t.UsedBy = usedBy.String
	return t, nil
}

// CreateAPIKey implements Store.
func (s *sqlStore) CreateAPIKey(ctx context.Context, k store.APIKey) error {
	created, err := requiredTime(k.CreatedAt, "creation time")
	var revoked any
	if err == nil {
		revoked, err = timeArg(k.RevokedAt)
	}
	var envs string
	if err == nil {
		envs, err = roleArgs(k.Role, k.Environments)
	}
	if err == nil {
		// admin follows the role, whatever the caller set: the last
		// admin key check counts that column.
		_, err = s.w.ExecContext(ctx,
			`INSERT INTO api_keys (`+apiKeyColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			k.ID, k.Name, k.Hash, created, revoked, k.Role == api.RoleAdmin, string(k.Role), envs)
	}
	if err != nil {
		return fmt.Errorf("create API key %q: %w", k.Name, err)
	}
	return nil
}

// APIKeyByHash implements Store.
func (s *sqlStore) APIKeyByHash(ctx context.Context, hash string) (store.APIKey, error) {
	k, err := queryOne(ctx, s.r, scanAPIKey,
		`SELECT `+apiKeyColumns+` FROM api_keys WHERE hash = ? AND revoked_at IS NULL`, hash)
	if err != nil {
		// The hash is of a credential: keep it out of error messages.
		return store.APIKey{}, fmt.Errorf("get API key by hash: %w", err)
	}
	return k, nil
}

// Setting implements Store.
func (s *sqlStore) Setting(ctx context.Context, key string) (string, error) {
	var v string
	err := s.r.QueryRowContext(ctx, `SELECT value FROM settings WHERE key = ?`, key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("get setting %q: %w", key, err)
	}
	return v, nil
}

// SetSetting implements Store.
func (s *sqlStore) SetSetting(ctx context.Context, key, value string) error {
	_, err := s.w.ExecContext(ctx,
		`INSERT INTO settings (key, value) VALUES (?, ?)
		 ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, value)
	if err != nil {
		return fmt.Errorf("set setting %q: %w", key, err)
	}
	return nil
}

const agentColumns = `id, name, environment, thumbprint, next_thumbprint,
	version, os, arch, protocol, tls_version, calamari_versions,
	health, health_detail, health_rtt, disk_free, server_thumbprint_ack,
	registered_at, last_seen, last_health_at, node, address, dial_error, work, features`

// scanAgent reads one row of agentColumns.
func scanAgent(sc scanner) (store.Agent, error) {
	var (
		a                              store.Agent
		next                           sql.NullString
		calamari, features             string
		rtt                            int64
		registered, seen, lastHealthAt sql.NullInt64
		node, work                     sql.NullString
	)
	err := sc.Scan(&a.ID, &a.Name, &a.Environment, &a.Thumbprint, &next,
		&a.Version, &a.OS, &a.Arch, &a.Protocol, &a.TLSVersion, &calamari,
		&a.Health, &a.HealthDetail, &rtt, &a.DiskFree, &a.ServerThumbprintAck,
		&registered, &seen, &lastHealthAt, &node, &a.Address, &a.DialError, &work, &features)
	if err != nil {
		return store.Agent{}, err
	}
	a.NextThumbprint, a.Node = next.String, node.String
	if err := json.Unmarshal([]byte(calamari), &a.CalamariVersions); err != nil {
		return store.Agent{}, fmt.Errorf("agent %s: calamari versions: %w", a.ID, err)
	}
	if len(a.CalamariVersions) == 0 {
		a.CalamariVersions = nil
	}
	if err := json.Unmarshal([]byte(features), &a.Features); err != nil {
		return store.Agent{}, fmt.Errorf("agent %s: features: %w", a.ID, err)
	}
	if len(a.Features) == 0 {
		a.Features = nil
	}
	if work.Valid {
		a.Work = new(api.AgentWork)
		if err := json.Unmarshal([]byte(work.String), a.Work); err != nil {
			return store.Agent{}, fmt.Errorf("agent %s: work report: %w", a.ID, err)
		}
	}
	a.HealthRTT = time.Duration(rtt)
	a.RegisteredAt, a.LastSeen, a.LastHealthAt = fromNanos(registered), fromNanos(seen), fromNanos(lastHealthAt)
	return a, nil
}

// agentBy looks an agent up by a unique column. col is always a constant
// from this package, never input.
func agentBy(ctx context.Context, q queryer, col, value string) (store.Agent, error) {
	return queryOne(ctx, q, scanAgent, `SELECT `+agentColumns+` FROM agents WHERE `+col+` = ?`, value)
}

// lockAgent takes the identities lock and reads the agent.
func lockAgent(ctx context.Context, tx *sqlTx, id string) (store.Agent, error) {
	if err := tx.d.lock(ctx, tx, lockIdentities); err != nil {
		return store.Agent{}, err
	}
	return agentBy(ctx, tx, "id", id)
}

func isRevoked(ctx context.Context, q queryer, thumbprint string) (bool, error) {
	return exists(ctx, q, `SELECT 1 FROM revoked_thumbprints WHERE thumbprint = ?`, thumbprint)
}

// revocationReason is why the thumbprint was revoked, ErrNotFound if it
// was not.
func revocationReason(ctx context.Context, q queryer, thumbprint string) (string, error) {
	var reason string
	err := q.QueryRowContext(ctx, `SELECT reason FROM revoked_thumbprints WHERE thumbprint = ?`, thumbprint).Scan(&reason)
	if errors.Is(err, sql.ErrNoRows) {
		return "", store.ErrNotFound
	}
	return reason, err
}

// revoke keeps the first revocation of a thumbprint: its time and reason
// are the ones an operator investigating it wants.
func revoke(ctx context.Context, q queryer, thumbprint, reason string, at any) error {
	_, err := q.ExecContext(ctx,
		`INSERT INTO revoked_thumbprints (thumbprint, revoked_at, reason) VALUES (?, ?, ?)
		 ON CONFLICT (thumbprint) DO NOTHING`, thumbprint, at, reason)
	return err
}
