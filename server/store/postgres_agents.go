package store

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// Register implements Store, with the SQLite store's extra rules (see
// SQLite.Register). Concurrent registrations, from this process or
// another coordinator, are serialized by lockAgentIdentities, and the token
// row is locked, so that one token enrols one agent.
func (s *Postgres) Register(ctx context.Context, p RegisterParams) (RegisterResult, error) {
	if p.Now.IsZero() {
		p.Now = time.Now()
	}
	var res RegisterResult
	err := s.tx(ctx, func(tx pgx.Tx) error {
		var err error
		res, err = pgRegister(ctx, tx, p)
		return err
	})
	if err != nil {
		return RegisterResult{}, fmt.Errorf("register agent %q: %w", p.Name, err)
	}
	return res, nil
}

func pgRegister(ctx context.Context, tx pgx.Tx, p RegisterParams) (RegisterResult, error) {
	switch {
	case p.Name == "":
		return RegisterResult{}, errors.New("name is empty")
	case p.Thumbprint == "":
		return RegisterResult{}, errors.New("thumbprint is empty")
	case p.NewID == "":
		return RegisterResult{}, errors.New("new agent ID is empty")
	}
	now, err := timeArg(p.Now)
	if err != nil {
		return RegisterResult{}, err
	}
	if err := lockAgentIdentities(ctx, tx); err != nil {
		return RegisterResult{}, err
	}

	var (
		tokID, tokEnv     string
		expiresAt, usedAt sql.NullInt64
		usedBy            sql.NullString
	)
	err = tx.QueryRow(ctx,
		`SELECT id, environment, expires_at, used_at, used_by FROM tokens WHERE hash = $1 FOR UPDATE`,
		p.TokenHash).Scan(&tokID, &tokEnv, &expiresAt, &usedAt, &usedBy)
	if errors.Is(err, pgx.ErrNoRows) {
		return RegisterResult{}, ErrTokenInvalid
	}
	if err != nil {
		return RegisterResult{}, err
	}

	if usedAt.Valid {
		// The agent may not have received the reply to its first attempt;
		// giving it the same answer again lets it retry safely.
		if usedBy.String == p.Thumbprint {
			a, err := scanAgent(tx.QueryRow(ctx,
				`SELECT `+agentColumns+` FROM agents WHERE thumbprint = $1`, p.Thumbprint))
			if err == nil {
				return RegisterResult{Agent: a}, nil
			}
			if !errors.Is(err, ErrNotFound) {
				return RegisterResult{}, err
			}
		}
		return RegisterResult{}, ErrTokenUsed
	}
	if p.Now.After(fromNanos(expiresAt)) {
		return RegisterResult{}, ErrTokenExpired
	}
	env := p.Environment
	if env == "" {
		env = tokEnv
	} else if env != tokEnv {
		return RegisterResult{}, fmt.Errorf("token is for environment %q, not %q: %w", tokEnv, env, ErrTokenInvalid)
	}

	// An agent whose next thumbprint is the new one counts as a holder of
	// it: otherwise AgentByThumbprint could match two agents.
	conflicts, err := pgQueryAgents(ctx, tx,
		`SELECT `+agentColumns+` FROM agents
		 WHERE name = $1 OR thumbprint = $2 OR next_thumbprint = $2
		 ORDER BY name`,
		p.Name, p.Thumbprint)
	if err != nil {
		return RegisterResult{}, err
	}
	revoked, err := pgIsRevoked(ctx, tx, p.Thumbprint)
	if err != nil {
		return RegisterResult{}, err
	}
	if !p.Force {
		for _, a := range conflicts {
			if a.Name == p.Name && a.Thumbprint != p.Thumbprint {
				return RegisterResult{}, ErrNameTaken
			}
		}
		if len(conflicts) > 0 {
			return RegisterResult{}, fmt.Errorf("thumbprint %s: %w", p.Thumbprint, ErrThumbprintTaken)
		}
		// A revoked certificate belonged to an agent an operator removed;
		// a token alone is not enough to bring it back.
		if revoked {
			return RegisterResult{}, fmt.Errorf("thumbprint %s was revoked, register with force to reinstate it: %w",
				p.Thumbprint, ErrThumbprintTaken)
		}
	}

	for _, a := range conflicts {
		if _, err := tx.Exec(ctx, `DELETE FROM agents WHERE id = $1`, a.ID); err != nil {
			return RegisterResult{}, err
		}
		for _, tp := range []string{a.Thumbprint, a.NextThumbprint} {
			if tp == "" || tp == p.Thumbprint {
				continue
			}
			if err := pgRevoke(ctx, tx, tp, "replaced", now); err != nil {
				return RegisterResult{}, err
			}
		}
	}
	if revoked {
		if _, err := tx.Exec(ctx, `DELETE FROM revoked_thumbprints WHERE thumbprint = $1`, p.Thumbprint); err != nil {
			return RegisterResult{}, err
		}
	}

	_, err = tx.Exec(ctx,
		`INSERT INTO agents (id, name, environment, thumbprint, health, disk_free, registered_at)
		 VALUES ($1, $2, $3, $4, $5, -1, $6)`,
		p.NewID, p.Name, env, p.Thumbprint, HealthUnavailable, now)
	if uniqueViolation(err) {
		// Unreachable under the identities lock but for an agent ID that
		// is already used; kept so that a change to the locking fails
		// safe.
		return RegisterResult{}, fmt.Errorf("agent %s: %w", p.NewID, ErrExists)
	}
	if err != nil {
		return RegisterResult{}, err
	}
	err = pgTag(tx.Exec(ctx,
		`UPDATE tokens SET used_at = $1, used_by = $2 WHERE id = $3 AND used_at IS NULL`,
		now, p.Thumbprint, tokID))
	if errors.Is(err, ErrNotFound) {
		// Unreachable while the token row is locked; kept so that a change
		// to that cannot let one token enrol two agents.
		return RegisterResult{}, ErrTokenUsed
	}
	if err != nil {
		return RegisterResult{}, err
	}

	a, err := pgAgentBy(ctx, tx, "id", p.NewID)
	if err != nil {
		return RegisterResult{}, err
	}
	return RegisterResult{Agent: a, Replaced: conflicts}, nil
}

// AgentByThumbprint implements Store.
func (s *Postgres) AgentByThumbprint(ctx context.Context, thumbprint string) (Agent, error) {
	a, err := scanAgent(s.pool.QueryRow(ctx,
		`SELECT `+agentColumns+` FROM agents WHERE thumbprint = $1 OR next_thumbprint = $1`, thumbprint))
	if err != nil {
		return Agent{}, fmt.Errorf("get agent by thumbprint %s: %w", thumbprint, err)
	}
	return a, nil
}

// AgentByID implements Store.
func (s *Postgres) AgentByID(ctx context.Context, id string) (Agent, error) {
	a, err := pgAgentBy(ctx, s.pool, "id", id)
	if err != nil {
		return Agent{}, fmt.Errorf("get agent %s: %w", id, err)
	}
	return a, nil
}

// AgentByName implements Store.
func (s *Postgres) AgentByName(ctx context.Context, name string) (Agent, error) {
	a, err := pgAgentBy(ctx, s.pool, "name", name)
	if err != nil {
		return Agent{}, fmt.Errorf("get agent by name %q: %w", name, err)
	}
	return a, nil
}

// ListAgents implements Store.
func (s *Postgres) ListAgents(ctx context.Context) ([]Agent, error) {
	agents, err := pgQueryAgents(ctx, s.pool, `SELECT `+agentColumns+` FROM agents ORDER BY environment, name`)
	if err != nil {
		return nil, fmt.Errorf("list agents: %w", err)
	}
	return agents, nil
}

// DeleteAgent implements Store.
func (s *Postgres) DeleteAgent(ctx context.Context, id string) error {
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if err := lockAgentIdentities(ctx, tx); err != nil {
			return err
		}
		a, err := pgAgentBy(ctx, tx, "id", id)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM agents WHERE id = $1`, id); err != nil {
			return err
		}
		now := time.Now().UnixNano()
		for _, tp := range []string{a.Thumbprint, a.NextThumbprint} {
			if tp == "" {
				continue
			}
			if err := pgRevoke(ctx, tx, tp, "deleted", now); err != nil {
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
func (s *Postgres) IsRevoked(ctx context.Context, thumbprint string) (bool, error) {
	revoked, err := pgIsRevoked(ctx, s.pool, thumbprint)
	if err != nil {
		return false, fmt.Errorf("check revocation of thumbprint %s: %w", thumbprint, err)
	}
	return revoked, nil
}

// RecordConnection implements Store. ErrNotFound if the agent does not
// exist.
func (s *Postgres) RecordConnection(ctx context.Context, c Connection) error {
	if err := s.recordConnection(ctx, c); err != nil {
		return fmt.Errorf("record connection of agent %s: %w", c.AgentID, err)
	}
	return nil
}

func (s *Postgres) recordConnection(ctx context.Context, c Connection) error {
	at, err := timeArg(c.At)
	if err != nil {
		return err
	}
	calamari, err := listArg(c.CalamariVersions)
	if err != nil {
		return err
	}
	return pgTag(s.pool.Exec(ctx,
		`UPDATE agents SET version = $1, os = $2, arch = $3, protocol = $4, tls_version = $5,
		 calamari_versions = $6, last_seen = $7, node = $8
		 WHERE id = $9`,
		c.Version, c.OS, c.Arch, c.Protocol, c.TLSVersion, calamari, at, nullString(c.Node), c.AgentID))
}

// RecordHealth implements Store, as SQLite.RecordHealth does: results for
// agents that no longer exist are skipped, and an empty Version keeps the
// stored one. A health detail holding NUL bytes or invalid UTF-8 is stored
// with U+FFFD in their place.
func (s *Postgres) RecordHealth(ctx context.Context, results []HealthResult) error {
	if err := s.recordHealth(ctx, results); err != nil {
		return fmt.Errorf("record health of %d agents: %w", len(results), err)
	}
	return nil
}

func (s *Postgres) recordHealth(ctx context.Context, results []HealthResult) error {
	if len(results) == 0 {
		return nil
	}
	// Converting before the transaction means a bad result fails the batch
	// without touching the database.
	type row struct {
		r        *HealthResult
		at       any
		calamari string
	}
	rows := make([]row, len(results))
	for i := range results {
		r := &results[i]
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
		rows[i] = row{r: r, at: at, calamari: calamari}
	}
	// Rows are locked in ID order, so that two coordinators writing
	// overlapping batches queue rather than deadlock. The sort is stable:
	// of two results for one agent, the later one still wins.
	slices.SortStableFunc(rows, func(a, b row) int { return cmp.Compare(a.r.AgentID, b.r.AgentID) })
	return s.tx(ctx, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		for _, w := range rows {
			r := w.r
			b.Queue(`UPDATE agents SET health = $1, health_detail = $2, health_rtt = $3,
				version = COALESCE(NULLIF($4, ''), version), calamari_versions = $5,
				disk_free = $6, last_health_at = $7,
				last_seen = CASE WHEN $8 THEN $7 ELSE last_seen END
				WHERE id = $9`,
				r.Health, pgText(r.Detail), int64(r.RTT), r.Version, w.calamari, r.DiskFree, w.at,
				r.Health != HealthUnhealthy, r.AgentID)
		}
		return execBatch(ctx, tx, b, func(i int) string { return rows[i].r.AgentID })
	})
}

// execBatch sends b in one round trip and reads every result, naming the
// statement that failed by key.
func execBatch(ctx context.Context, tx pgx.Tx, b *pgx.Batch, key func(i int) string) error {
	br := tx.SendBatch(ctx, b)
	for i := range b.Len() {
		if _, err := br.Exec(); err != nil {
			br.Close()
			return fmt.Errorf("%s: %w", key(i), err)
		}
	}
	return br.Close()
}

// TouchAgents implements Store. Unknown IDs are skipped, as in
// RecordHealth.
func (s *Postgres) TouchAgents(ctx context.Context, ids []string, at time.Time) error {
	if err := s.touchAgents(ctx, ids, at); err != nil {
		return fmt.Errorf("touch %d agents: %w", len(ids), err)
	}
	return nil
}

func (s *Postgres) touchAgents(ctx context.Context, ids []string, at time.Time) error {
	if len(ids) == 0 {
		return nil
	}
	t, err := timeArg(at)
	if err != nil {
		return err
	}
	// In ID order, for the reason given in recordHealth.
	sorted := slices.Clone(ids)
	slices.Sort(sorted)
	return s.tx(ctx, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		for _, id := range sorted {
			b.Queue(`UPDATE agents SET last_seen = $1 WHERE id = $2`, t, id)
		}
		return execBatch(ctx, tx, b, func(i int) string { return "agent " + sorted[i] })
	})
}

// SetNextThumbprint implements Store, as SQLite.SetNextThumbprint does.
func (s *Postgres) SetNextThumbprint(ctx context.Context, id, next string) error {
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if err := lockAgentIdentities(ctx, tx); err != nil {
			return err
		}
		a, err := pgAgentBy(ctx, tx, "id", id)
		if err != nil {
			return err
		}
		if next == a.Thumbprint {
			return nil
		}
		if next != "" {
			var other string
			err := tx.QueryRow(ctx,
				`SELECT id FROM agents WHERE (thumbprint = $1 OR next_thumbprint = $1) AND id <> $2`,
				next, id).Scan(&other)
			if err == nil {
				return ErrThumbprintTaken
			}
			if !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
			revoked, err := pgIsRevoked(ctx, tx, next)
			if err != nil {
				return err
			}
			if revoked {
				return fmt.Errorf("thumbprint was revoked: %w", ErrThumbprintTaken)
			}
		}
		_, err = tx.Exec(ctx, `UPDATE agents SET next_thumbprint = $1 WHERE id = $2`, nullString(next), id)
		return err
	})
	if err != nil {
		return fmt.Errorf("set next thumbprint of agent %s to %s: %w", id, next, err)
	}
	return nil
}

// PromoteThumbprint implements Store. ErrNotFound if the agent does not
// exist.
func (s *Postgres) PromoteThumbprint(ctx context.Context, id string) error {
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if err := lockAgentIdentities(ctx, tx); err != nil {
			return err
		}
		a, err := pgAgentBy(ctx, tx, "id", id)
		if err != nil {
			return err
		}
		if a.NextThumbprint == "" {
			return nil
		}
		_, err = tx.Exec(ctx,
			`UPDATE agents SET thumbprint = next_thumbprint, next_thumbprint = NULL WHERE id = $1`, id)
		if err != nil {
			return err
		}
		return pgRevoke(ctx, tx, a.Thumbprint, "rotated", time.Now().UnixNano())
	})
	if err != nil {
		return fmt.Errorf("promote next thumbprint of agent %s: %w", id, err)
	}
	return nil
}

// SetServerThumbprintAck implements Store. ErrNotFound if the agent does
// not exist.
func (s *Postgres) SetServerThumbprintAck(ctx context.Context, id, thumbprint string) error {
	err := pgTag(s.pool.Exec(ctx, `UPDATE agents SET server_thumbprint_ack = $1 WHERE id = $2`, thumbprint, id))
	if err != nil {
		return fmt.Errorf("set server thumbprint ack of agent %s: %w", id, err)
	}
	return nil
}

// CreateToken implements Store.
func (s *Postgres) CreateToken(ctx context.Context, t Token) error {
	if err := s.createToken(ctx, t); err != nil {
		return fmt.Errorf("create token %s: %w", t.ID, err)
	}
	return nil
}

func (s *Postgres) createToken(ctx context.Context, t Token) error {
	var times [3]any
	for i, v := range []time.Time{t.CreatedAt, t.ExpiresAt, t.UsedAt} {
		var err error
		if times[i], err = timeArg(v); err != nil {
			return err
		}
	}
	// See SQLite.createToken.
	if times[1] == nil {
		return errors.New("expiry is not set")
	}
	if times[0] == nil {
		return errors.New("creation time is not set")
	}
	_, err := s.pool.Exec(ctx,
		`INSERT INTO tokens (id, hash, environment, created_at, expires_at, used_at, used_by)
		 VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		t.ID, t.Hash, t.Environment, times[0], times[1], times[2], nullString(t.UsedBy))
	return err
}

// ListTokens implements Store.
func (s *Postgres) ListTokens(ctx context.Context) ([]Token, error) {
	tokens, err := s.listTokens(ctx)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	return tokens, nil
}

func (s *Postgres) listTokens(ctx context.Context) ([]Token, error) {
	rows, err := s.pool.Query(ctx,
		`SELECT id, hash, environment, created_at, expires_at, used_at, used_by
		 FROM tokens ORDER BY created_at DESC, id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var tokens []Token
	for rows.Next() {
		var (
			t                      Token
			created, expires, used sql.NullInt64
			usedBy                 sql.NullString
		)
		if err := rows.Scan(&t.ID, &t.Hash, &t.Environment, &created, &expires, &used, &usedBy); err != nil {
			return nil, err
		}
		t.CreatedAt, t.ExpiresAt, t.UsedAt = fromNanos(created), fromNanos(expires), fromNanos(used)
		t.UsedBy = usedBy.String
		tokens = append(tokens, t)
	}
	return tokens, rows.Err()
}

// CreateAPIKey implements Store.
func (s *Postgres) CreateAPIKey(ctx context.Context, k APIKey) error {
	if err := s.createAPIKey(ctx, k); err != nil {
		return fmt.Errorf("create API key %q: %w", k.Name, err)
	}
	return nil
}

func (s *Postgres) createAPIKey(ctx context.Context, k APIKey) error {
	created, err := timeArg(k.CreatedAt)
	if err != nil {
		return err
	}
	revoked, err := timeArg(k.RevokedAt)
	if err != nil {
		return err
	}
	if created == nil {
		return errors.New("creation time is not set")
	}
	_, err = s.pool.Exec(ctx,
		`INSERT INTO api_keys (id, name, hash, created_at, revoked_at, admin) VALUES ($1, $2, $3, $4, $5, $6)`,
		k.ID, k.Name, k.Hash, created, revoked, k.Admin)
	return err
}

// APIKeyByHash implements Store.
func (s *Postgres) APIKeyByHash(ctx context.Context, hash string) (APIKey, error) {
	var (
		k       APIKey
		created sql.NullInt64
	)
	err := s.pool.QueryRow(ctx,
		`SELECT id, name, hash, created_at, admin FROM api_keys WHERE hash = $1 AND revoked_at IS NULL`,
		hash).Scan(&k.ID, &k.Name, &k.Hash, &created, &k.Admin)
	if errors.Is(err, pgx.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		// The hash is of a credential: keep it out of error messages.
		return APIKey{}, fmt.Errorf("get API key by hash: %w", err)
	}
	k.CreatedAt = fromNanos(created)
	return k, nil
}

// Setting implements Store.
func (s *Postgres) Setting(ctx context.Context, key string) (string, error) {
	var v string
	err := s.pool.QueryRow(ctx, `SELECT value FROM settings WHERE key = $1`, key).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("get setting %q: %w", key, err)
	}
	return v, nil
}

// SetSetting implements Store.
func (s *Postgres) SetSetting(ctx context.Context, key, value string) error {
	_, err := s.pool.Exec(ctx,
		`INSERT INTO settings (key, value) VALUES ($1, $2)
		 ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, value)
	if err != nil {
		return fmt.Errorf("set setting %q: %w", key, err)
	}
	return nil
}

// pgAgentBy looks an agent up by a unique column. col is always a
// constant from this package, never input.
func pgAgentBy(ctx context.Context, q pgq, col, value string) (Agent, error) {
	return scanAgent(q.QueryRow(ctx, `SELECT `+agentColumns+` FROM agents WHERE `+col+` = $1`, value))
}

func pgQueryAgents(ctx context.Context, q pgq, query string, args ...any) ([]Agent, error) {
	rows, err := q.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return collectRows(rows, scanAgent)
}

func pgIsRevoked(ctx context.Context, q pgq, thumbprint string) (bool, error) {
	var revoked bool
	err := q.QueryRow(ctx,
		`SELECT EXISTS (SELECT 1 FROM revoked_thumbprints WHERE thumbprint = $1)`, thumbprint).Scan(&revoked)
	return revoked, err
}

// pgRevoke keeps the first revocation of a thumbprint, as revoke does.
func pgRevoke(ctx context.Context, q pgq, thumbprint, reason string, at any) error {
	_, err := q.Exec(ctx,
		`INSERT INTO revoked_thumbprints (thumbprint, revoked_at, reason) VALUES ($1, $2, $3)
		 ON CONFLICT (thumbprint) DO NOTHING`, thumbprint, at, reason)
	return err
}
