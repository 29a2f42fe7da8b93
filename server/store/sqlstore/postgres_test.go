package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/internal/faultproxy"
	"github.com/tendrildeploy/tendril/server/store"
)

// Tests of what only the PostgreSQL store has to get right: several
// coordinators on one database, migrations run by two nodes at once,
// connection errors. The Store contract itself is tested against both
// backends in the other files.

func TestPostgresMigrationsMirrorSQLite(t *testing.T) {
	lite, err := loadMigrations()
	if err != nil {
		t.Fatal(err)
	}
	pgm, err := loadPostgresMigrations()
	if err != nil {
		t.Fatalf("loadPostgresMigrations: %v", err)
	}
	var liteNames, pgNames []string
	for _, m := range lite {
		liteNames = append(liteNames, m.name)
	}
	for _, m := range pgm {
		pgNames = append(pgNames, m.name)
	}
	if !reflect.DeepEqual(pgNames, liteNames) {
		t.Errorf("got PostgreSQL migrations %v, want the SQLite ones %v", pgNames, liteNames)
	}
}

// openTwo opens two stores on one new database, as two coordinator nodes
// would: each has its own connection pool.
func openTwo(t *testing.T) (*Postgres, *Postgres, string) {
	t.Helper()
	a, url := openPostgresTest(t)
	b, err := OpenPostgres(context.Background(), url)
	if err != nil {
		t.Fatalf("second OpenPostgres: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return a, b, url
}

// race runs n calls of fn, alternating between the two stores, released
// at once, and returns their errors in call order.
func race(n int, a, b *Postgres, fn func(s *Postgres, i int) error) []error {
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Go(func() {
			<-start
			errs[i] = fn(s, i)
		})
	}
	close(start)
	wg.Wait()
	return errs
}

func TestPostgresRaceForOneToken(t *testing.T) {
	ctx := context.Background()
	a, b, _ := openTwo(t)
	const rounds, racers = 5, 8
	for r := range rounds {
		secret := fmt.Sprint("shared-", r)
		createToken(t, a, secret, "prod", t0.Add(time.Hour))
		errs := race(racers, a, b, func(s *Postgres, i int) error {
			_, err := s.Register(ctx, store.RegisterParams{
				TokenHash: hashOf(secret), Thumbprint: fmt.Sprintf("tp-%d-%d", r, i),
				Name: fmt.Sprintf("web-%d-%d", r, i), Now: t0, NewID: fmt.Sprintf("id-%d-%d", r, i),
			})
			return err
		})
		won := 0
		for i, err := range errs {
			switch {
			case err == nil:
				won++
			case !errors.Is(err, store.ErrTokenUsed):
				t.Errorf("round %d, racer %d: got %v, want nil or ErrTokenUsed", r, i, err)
			}
		}
		if won != 1 {
			t.Errorf("round %d: got %d registrations with one token, want 1", r, won)
		}
	}
	agents, err := b.ListAgents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(agents) != rounds {
		t.Errorf("got %d agents, want %d", len(agents), rounds)
	}
}

func TestPostgresRaceForOneIdentity(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		params  func(i int) store.RegisterParams // all but the token
		wantErr error
	}{
		{"same name", func(i int) store.RegisterParams {
			return store.RegisterParams{Name: "web-1", Thumbprint: fmt.Sprint("tp-", i)}
		}, store.ErrNameTaken},
		{"same thumbprint", func(i int) store.RegisterParams {
			return store.RegisterParams{Name: fmt.Sprint("web-", i), Thumbprint: "tp-1"}
		}, store.ErrThumbprintTaken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b, _ := openTwo(t)
			const racers = 8
			for i := range racers {
				createToken(t, a, fmt.Sprint("secret-", i), "prod", t0.Add(time.Hour))
			}
			errs := race(racers, a, b, func(s *Postgres, i int) error {
				p := tt.params(i)
				p.TokenHash, p.Now, p.NewID = hashOf(fmt.Sprint("secret-", i)), t0, fmt.Sprint("id-", i)
				_, err := s.Register(ctx, p)
				return err
			})
			won := 0
			for i, err := range errs {
				switch {
				case err == nil:
					won++
				case !errors.Is(err, tt.wantErr):
					t.Errorf("racer %d: got %v, want nil or %v", i, err, tt.wantErr)
				}
			}
			if won != 1 {
				t.Errorf("got %d winners, want 1", won)
			}
			if agents, err := a.ListAgents(ctx); err != nil || len(agents) != 1 {
				t.Errorf("got %d agents (%v), want 1", len(agents), err)
			}
		})
	}
}

func TestPostgresRaceForcedRegistrations(t *testing.T) {
	ctx := context.Background()
	a, b, _ := openTwo(t)
	const racers = 8
	for i := range racers {
		createToken(t, a, fmt.Sprint("secret-", i), "prod", t0.Add(time.Hour))
	}
	replaced := make([][]store.Agent, racers)
	errs := race(racers, a, b, func(s *Postgres, i int) error {
		res, err := s.Register(ctx, store.RegisterParams{
			TokenHash: hashOf(fmt.Sprint("secret-", i)), Thumbprint: fmt.Sprint("tp-", i), Name: "web-1",
			Force: true, Now: t0, NewID: fmt.Sprint("id-", i),
		})
		replaced[i] = res.Replaced
		return err
	})
	for i, err := range errs {
		if err != nil {
			t.Errorf("racer %d: %v", i, err)
		}
	}
	agents, err := a.ListAgents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(agents) != 1 {
		t.Fatalf("got %d agents named web-1, want 1", len(agents))
	}
	// Forced registrations queue: each but the first replaced exactly the
	// agent registered just before it, and every replaced thumbprint is
	// revoked.
	n := 0
	for i, r := range replaced {
		n += len(r)
		for _, old := range r {
			mustRevoked(t, a, old.Thumbprint, true)
		}
		if len(r) > 1 {
			t.Errorf("racer %d replaced %d agents, want at most 1", i, len(r))
		}
	}
	if n != racers-1 {
		t.Errorf("got %d replacements, want %d", n, racers-1)
	}
	mustRevoked(t, a, agents[0].Thumbprint, false)
}

func TestPostgresRaceAcrossStores(t *testing.T) {
	ctx := context.Background()
	t.Run("AddBundle", func(t *testing.T) {
		a, b, _ := openTwo(t)
		errs := race(8, a, b, func(s *Postgres, i int) error {
			return s.AddBundle(ctx, store.Bundle{Version: "1.0.0", SHA256: fmt.Sprint(i), Manifest: []byte("{}"), Signature: []byte{1}, UploadedAt: t0})
		})
		wantOneWinner(t, errs, store.ErrExists)
	})
	t.Run("AddAgentPackage", func(t *testing.T) {
		a, b, _ := openTwo(t)
		errs := race(8, a, b, func(s *Postgres, i int) error {
			return s.AddAgentPackage(ctx, store.AgentPackage{Version: "1.0.0", OS: "linux", Arch: "amd64", SHA256: fmt.Sprint(i), Signature: []byte{1}, UploadedAt: t0})
		})
		wantOneWinner(t, errs, store.ErrExists)
	})
	t.Run("SetRolloutAgentState", func(t *testing.T) {
		a, b, _ := openTwo(t)
		r := store.Rollout{ID: "r1", Version: "2.0.0", Batch: 1, State: api.RolloutRunning, CreatedAt: t0}
		if err := a.CreateRollout(ctx, r, []store.RolloutAgent{{AgentID: "x", AgentName: "web-1", State: api.UpgradeQueued, UpdatedAt: t0}}); err != nil {
			t.Fatal(err)
		}
		errNotChanged := errors.New("not changed")
		errs := race(8, a, b, func(s *Postgres, i int) error {
			changed, err := s.SetRolloutAgentState(ctx, "r1", "x", []string{api.UpgradeQueued}, api.UpgradeSending, fmt.Sprint("racer ", i), t0)
			if err == nil && !changed {
				err = errNotChanged
			}
			return err
		})
		wantOneWinner(t, errs, errNotChanged)
	})
	t.Run("AppendTaskLogs", func(t *testing.T) {
		a, b, _ := openTwo(t)
		if err := a.CreateTasks(ctx, []store.Task{newTask("a", "g", t0)}); err != nil {
			t.Fatal(err)
		}
		// Two nodes following the same agent after a reconnect, and both
		// adding lines of their own.
		errs := race(6, a, b, func(s *Postgres, i int) error {
			var batch []store.LogLine
			for seq := int64(1); seq <= 100; seq++ {
				batch = append(batch, store.LogLine{AgentSeq: seq, Time: t0, Stream: "stdout", Text: fmt.Sprint(seq)})
			}
			batch = append(batch, store.LogLine{Time: t0, Stream: "coordinator", Text: fmt.Sprint("node ", i)})
			_, err := s.AppendTaskLogs(ctx, "a", batch)
			return err
		})
		for i, err := range errs {
			if err != nil {
				t.Errorf("appender %d: %v", i, err)
			}
		}
		lines, err := b.TaskLogs(ctx, "a", 1, 1000)
		if err != nil {
			t.Fatal(err)
		}
		agentLines := 0
		for i, l := range lines {
			if l.Seq != int64(i+1) {
				t.Fatalf("line %d: got Seq %d, want %d", i, l.Seq, i+1)
			}
			if l.AgentSeq > 0 {
				agentLines++
			}
		}
		if want := 100 + 6; len(lines) != want || agentLines != 100 {
			t.Errorf("got %d lines, %d from the agent; want %d, 100", len(lines), agentLines, want)
		}
	})
	t.Run("overlapping health batches", func(t *testing.T) {
		a, b, _ := openTwo(t)
		ids := pgSeedAgents(t, a, 200)
		reversed := make([]string, len(ids))
		for i, id := range ids {
			reversed[len(ids)-1-i] = id
		}
		// Opposite orders: without locking rows in one order these would
		// deadlock.
		errs := race(8, a, b, func(s *Postgres, i int) error {
			order := ids
			if i%4 >= 2 {
				order = reversed
			}
			if i%2 == 0 {
				return s.RecordHealth(ctx, healthBatch(order))
			}
			return s.TouchAgents(ctx, order, t0.Add(time.Hour))
		})
		for i, err := range errs {
			if err != nil {
				t.Errorf("writer %d: %v", i, err)
			}
		}
	})
}

// wantOneWinner checks that exactly one call succeeded and every other
// failed with lost.
func wantOneWinner(t *testing.T, errs []error, lost error) {
	t.Helper()
	won := 0
	for i, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, lost):
			t.Errorf("call %d: got %v, want nil or %v", i, err, lost)
		}
	}
	if won != 1 {
		t.Errorf("got %d winners, want 1", won)
	}
}

func TestPostgresConcurrentMigrations(t *testing.T) {
	ctx := context.Background()
	migs, err := loadPostgresMigrations()
	if err != nil {
		t.Fatal(err)
	}
	for _, from := range []int{0, 1} {
		t.Run(fmt.Sprint("from schema ", from), func(t *testing.T) {
			url := pg.Cluster(t).NewDatabase(t)
			if from > 0 {
				s, err := openPostgres(ctx, url, migs[:from])
				if err != nil {
					t.Fatal(err)
				}
				s.Close()
			}
			const nodes = 6
			stores := make([]*Postgres, nodes)
			errs := make([]error, nodes)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range nodes {
				wg.Go(func() {
					<-start
					stores[i], errs[i] = OpenPostgres(ctx, url)
				})
			}
			close(start)
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Errorf("node %d: %v", i, err)
					continue
				}
				defer stores[i].Close()
			}
			if t.Failed() {
				return
			}
			applied := backends[1].applied(t, stores[0])
			if len(applied) != SchemaVersion {
				t.Errorf("got %d schema_migrations rows, want %d", len(applied), SchemaVersion)
			}
			if err := stores[nodes-1].SetSetting(ctx, "k", "v"); err != nil {
				t.Errorf("store usable after migrating: %v", err)
			}
		})
	}
}

func TestPostgresMigratesOldDatabase(t *testing.T) {
	ctx := context.Background()
	migs, err := loadPostgresMigrations()
	if err != nil {
		t.Fatal(err)
	}
	url := pg.Cluster(t).NewDatabase(t)
	old, err := openPostgres(ctx, url, migs[:len(migs)-1])
	if err != nil {
		t.Fatal(err)
	}
	createToken(t, old, "kept", "prod", t0.Add(time.Hour))
	if v, err := old.schemaVersion(ctx); err != nil || v != len(migs)-1 {
		t.Fatalf("old database: got schema %d (%v), want %d", v, err, len(migs)-1)
	}
	old.Close()

	s, err := OpenPostgres(ctx, url)
	if err != nil {
		t.Fatalf("OpenPostgres: %v", err)
	}
	defer s.Close()
	if v, err := s.schemaVersion(ctx); err != nil || v != SchemaVersion {
		t.Errorf("got schema %d (%v), want %d", v, err, SchemaVersion)
	}
	if tok := tokenByHash(t, s, hashOf("kept")); tok.Environment != "prod" {
		t.Errorf("token after migration: got %+v", tok)
	}
}

func TestPostgresSchemaTooNew(t *testing.T) {
	ctx := context.Background()
	migs, err := loadPostgresMigrations()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		newer func(t *testing.T, s *Postgres) int // makes the database newer; returns its version
		open  func(url string) (*Postgres, error) // as the older coordinator
	}{
		{
			name: "from a future coordinator",
			newer: func(t *testing.T, s *Postgres) int {
				if _, err := s.w.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, 0)`, SchemaVersion+1); err != nil {
					t.Fatal(err)
				}
				return SchemaVersion + 1
			},
			open: func(url string) (*Postgres, error) { return OpenPostgres(ctx, url) },
		},
		{
			name:  "opened by the previous coordinator",
			newer: func(t *testing.T, s *Postgres) int { return SchemaVersion },
			open:  func(url string) (*Postgres, error) { return openPostgres(ctx, url, migs[:len(migs)-1]) },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, url := openPostgresTest(t)
			createToken(t, s, "kept", "prod", t0.Add(time.Hour))
			v := tt.newer(t, s)
			before := backends[1].applied(t, s)
			// A database any write to would fail in: an open that tried
			// one would return that error, not ErrSchemaTooNew.
			name := s.cfg.Database
			if _, err := s.w.ExecContext(ctx, `ALTER DATABASE `+pgx.Identifier{name}.Sanitize()+` SET default_transaction_read_only = on`); err != nil {
				t.Fatal(err)
			}
			s.Close()

			old, err := tt.open(url)
			if err == nil {
				old.Close()
				t.Fatal("got nil error, want ErrSchemaTooNew")
			}
			if !errors.Is(err, store.ErrSchemaTooNew) {
				t.Fatalf("got %v, want an error wrapping ErrSchemaTooNew", err)
			}
			older := SchemaVersion
			if tt.name == "opened by the previous coordinator" {
				older = SchemaVersion - 1
			}
			for _, n := range []int{v, older} {
				if !strings.Contains(err.Error(), fmt.Sprint(n)) {
					t.Errorf("error %q does not mention version %d", err, n)
				}
			}

			conn, err := pgx.Connect(ctx, url)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			if _, err := conn.Exec(ctx, `SET default_transaction_read_only = off`); err != nil {
				t.Fatal(err)
			}
			after := map[int]int64{}
			rows, _ := conn.Query(ctx, `SELECT version, applied_at FROM schema_migrations`)
			var ver int
			var at int64
			if _, err := pgx.ForEachRow(rows, []any{&ver, &at}, func() error { after[ver] = at; return nil }); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(after, before) {
				t.Errorf("schema_migrations changed: got %v, want %v", after, before)
			}
		})
	}
}

// deadURL returns a URL with a password for a local port nothing listens
// on.
func deadURL(t *testing.T) (string, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "postgres://tendril:s3cret-pw@" + addr + "/tendril?connect_timeout=5", addr
}

func TestPostgresUnreachable(t *testing.T) {
	ctx := context.Background()
	u, addr := deadURL(t)
	tests := []struct {
		name     string
		url      string
		wantText []string
	}{
		{"nothing listening", u, []string{"open postgres store", addr, "tendril"}},
		{"key=value form", "host=127.0.0.1 port=" + addr[strings.LastIndex(addr, ":")+1:] + " user=tendril password=s3cret-pw dbname=tendril connect_timeout=5",
			[]string{"open postgres store", addr}},
		{"malformed URL", "postgres://tendril:s3cret-pw@127.0.0.1:notaport/tendril", []string{"invalid database URL"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := OpenPostgres(ctx, tt.url)
			if err == nil {
				s.Close()
				t.Fatal("got nil error, want one")
			}
			for _, want := range tt.wantText {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
			if strings.Contains(err.Error(), "s3cret-pw") {
				t.Errorf("error %q leaks the password", err)
			}
		})
	}
}

func TestOpenPostgresRetry(t *testing.T) {
	ctx := context.Background()
	t.Run("waits for the database", func(t *testing.T) {
		u, err := url.Parse(pg.Cluster(t).NewDatabase(t))
		if err != nil {
			t.Fatal(err)
		}
		proxy, err := faultproxy.New(u.Host)
		if err != nil {
			t.Fatal(err)
		}
		defer proxy.Close()
		proxy.SetRefuse(true) // accepted and closed: the database "is down"
		u.Host = proxy.Addr()

		var failures []error
		var waits []time.Duration
		s, err := OpenPostgresRetry(ctx, u.String(), func(err error, wait time.Duration) {
			failures, waits = append(failures, err), append(waits, wait)
			if len(failures) == 2 {
				proxy.SetRefuse(false) // the database is back
			}
		})
		if err != nil {
			t.Fatalf("OpenPostgresRetry: %v", err)
		}
		defer s.Close()
		if len(failures) != 2 {
			t.Errorf("got %d failures notified, want 2: %v", len(failures), failures)
		}
		for i, err := range failures {
			if !strings.Contains(err.Error(), proxy.Addr()) {
				t.Errorf("failure %d: %q does not name the address", i, err)
			}
			if waits[i] <= 0 || waits[i] > openRetryMax {
				t.Errorf("failure %d: got wait %v, want in (0, %v]", i, waits[i], openRetryMax)
			}
		}
		if err := s.SetSetting(ctx, "k", "v"); err != nil {
			t.Errorf("store after waiting: %v", err)
		}
	})
	t.Run("gives up when the context ends", func(t *testing.T) {
		u, addr := deadURL(t)
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		notified := 0
		_, err := OpenPostgresRetry(ctx, u, func(err error, wait time.Duration) {
			notified++
			if notified == 3 {
				cancel()
			}
		})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want an error wrapping context.Canceled", err)
		}
		if !strings.Contains(err.Error(), addr) {
			t.Errorf("error %q does not say what was being waited for", err)
		}
		if notified != 3 {
			t.Errorf("got %d notifications, want 3", notified)
		}
	})
	t.Run("does not retry what waiting cannot mend", func(t *testing.T) {
		c := pg.Cluster(t)
		tooNew, _ := openPostgresTest(t)
		if _, err := tooNew.w.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, 0)`, SchemaVersion+1); err != nil {
			t.Fatal(err)
		}
		tooNewURL := c.URL(tooNew.cfg.Database)
		tooNew.Close()
		for _, tt := range []struct {
			name, url string
			wantErr   error
		}{
			{"missing database", c.URL("no_such_database"), nil},
			{"malformed URL", "postgres://x@127.0.0.1:notaport/db", nil},
			{"schema too new", tooNewURL, store.ErrSchemaTooNew},
		} {
			t.Run(tt.name, func(t *testing.T) {
				notified := 0
				s, err := OpenPostgresRetry(ctx, tt.url, func(error, time.Duration) { notified++ })
				if err == nil {
					s.Close()
					t.Fatal("got nil error, want one")
				}
				if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
					t.Errorf("got %v, want %v", err, tt.wantErr)
				}
				if notified != 0 {
					t.Errorf("got %d retries of %v, want none", notified, err)
				}
			})
		}
	})
}

func TestTransientOpenError(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"schema too new", fmt.Errorf("x: %w", store.ErrSchemaTooNew), false},
		{"starting up", &pgconn.PgError{Code: "57P03"}, true},
		{"too many clients", &pgconn.PgError{Code: "53300"}, true},
		{"connection failure", &pgconn.PgError{Code: "08006"}, true},
		{"wrong password", &pgconn.PgError{Code: "28P01"}, false},
		{"missing database", &pgconn.PgError{Code: "3D000"}, false},
		{"migration syntax error", fmt.Errorf("apply migration: %w", &pgconn.PgError{Code: "42601"}), false},
		{"dial error", &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}, true},
		{"dropped mid-way", fmt.Errorf("x: %w", io.ErrUnexpectedEOF), true},
		{"anything else", errors.New("boom"), false},
	}
	for _, tt := range tests {
		if got := transientOpenError(tt.err); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestPostgresDescribeDatabase(t *testing.T) {
	tests := []struct {
		url, want string
	}{
		{"postgres://u:pw@db.example:5433/tendril", "postgres://u@db.example:5433/tendril"},
		{"postgres://u:pw@a:1,b:2/tendril", "postgres://u@a:1,b:2/tendril"},
		{"host=/run/postgresql user=u password=pw dbname=d", "postgres://u@/run/postgresql:5432/d"},
		{"postgres://u@[::1]:5432/d", "postgres://u@[::1]:5432/d"},
	}
	for _, tt := range tests {
		cfg, err := pgx.ParseConfig(tt.url)
		if err != nil {
			t.Fatal(err)
		}
		if got := describeDatabase(cfg); got != tt.want {
			t.Errorf("describeDatabase(%s): got %s, want %s", tt.url, got, tt.want)
		}
	}
}

func TestPostgresTextWithNUL(t *testing.T) {
	ctx := context.Background()
	s, _ := openPostgresTest(t)
	a := enroll(t, s, "web-1", "prod", "tp-1")
	if err := s.RecordHealth(ctx, []store.HealthResult{{AgentID: a.ID, Health: api.HealthWarning, Detail: "disk\x00low\xff", At: t0}}); err != nil {
		t.Fatalf("RecordHealth: %v", err)
	}
	if got, want := mustAgent(t, s, a.ID).HealthDetail, "disk\uFFFDlow\uFFFD"; got != want {
		t.Errorf("got detail %q, want %q", got, want)
	}
	if err := s.CreateTasks(ctx, []store.Task{newTask("t", "g", t0)}); err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateTask(ctx, "t", store.TaskUpdate{State: api.TaskFailed, Error: "exit\x00"}); err != nil {
		t.Fatalf("UpdateTask: %v", err)
	}
	if got, _ := s.Task(ctx, "t"); got.Error != "exit\uFFFD" {
		t.Errorf("got task error %q, want %q", got.Error, "exit\uFFFD")
	}
}

func TestPostgresString(t *testing.T) {
	s, dbURL := openPostgresTest(t)
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	want := "postgres://postgres@" + u.Host + u.Path
	if got := s.String(); got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}
