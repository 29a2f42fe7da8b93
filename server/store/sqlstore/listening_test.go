package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/kind"
	"github.com/tendrildeploy/tendril/server/store"
)

// mustAddListening adds a listening agent, for tests whose subject is not
// AddListening.
func mustAddListening(t testing.TB, s store.Store, name, thumbprint, address string) store.Agent {
	t.Helper()
	a, err := s.AddListening(context.Background(), store.ListeningParams{
		NewID: "agent-" + name, Name: name, Environment: "prod",
		Thumbprint: thumbprint, Address: address, Now: t0,
	})
	if err != nil {
		t.Fatalf("AddListening(%s): %v", name, err)
	}
	return a
}

func TestAddListening(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		polling := enroll(t, s, "web-0", "prod", "tp-0")
		got, err := s.AddListening(ctx, store.ListeningParams{
			NewID: "id-1", Name: "web-1", Environment: "prod",
			Thumbprint: "tp-1", Address: "web-1.example.com:10933", Now: t0,
		})
		if err != nil {
			t.Fatalf("AddListening: %v", err)
		}
		want := store.Agent{
			ID: "id-1", Name: "web-1", Environment: "prod", Thumbprint: "tp-1",
			Health: api.HealthUnavailable, DiskFree: -1, RegisteredAt: t0,
			Address: "web-1.example.com:10933",
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("got %+v, want %+v", got, want)
		}
		if !got.Listening() {
			t.Errorf("Listening: got false, want true")
		}
		if polling.Listening() || polling.Address != "" {
			t.Errorf("enrolled agent: got Listening %v Address %q, want false and empty", polling.Listening(), polling.Address)
		}

		tests := []struct {
			name   string
			lookup func() (store.Agent, error)
		}{
			{"by ID", func() (store.Agent, error) { return s.AgentByID(ctx, "id-1") }},
			{"by thumbprint", func() (store.Agent, error) { return s.AgentByThumbprint(ctx, "tp-1") }},
			{"by name", func() (store.Agent, error) { return s.AgentByName(ctx, "web-1") }},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				got, err := tt.lookup()
				if err != nil {
					t.Fatalf("got error %v, want nil", err)
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("got %+v, want %+v", got, want)
				}
			})
		}
		agents, err := s.ListAgents(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if w := []store.Agent{polling, want}; !reflect.DeepEqual(agents, w) {
			t.Errorf("ListAgents: got %+v, want %+v", agents, w)
		}
		listening, err := s.ListListeningAgents(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if w := []store.Agent{want}; !reflect.DeepEqual(listening, w) {
			t.Errorf("ListListeningAgents: got %+v, want only the listening agent %+v", listening, w)
		}
	})
}

func TestAddListeningNowDefaultsToCurrentTime(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		s, _ := db.open(t)
		before := time.Now()
		a, err := s.AddListening(context.Background(), store.ListeningParams{
			NewID: "id-1", Name: "web-1", Thumbprint: "tp-1", Address: "web-1:10933",
		})
		if err != nil {
			t.Fatalf("AddListening: %v", err)
		}
		if a.RegisteredAt.Before(before) || a.RegisteredAt.After(time.Now()) {
			t.Errorf("got RegisteredAt %v, want between %v and now", a.RegisteredAt, before)
		}
	})
}

func TestAddListeningErrors(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		base := store.ListeningParams{
			NewID: "id-new", Name: "web-new", Environment: "prod",
			Thumbprint: "tp-new", Address: "web-new:10933", Now: t0,
		}
		tests := []struct {
			name    string
			setup   func(t *testing.T, s store.Store)
			change  func(p *store.ListeningParams)
			wantErr error  // nil means any error
			wantMsg string // a substring of the error, if set
		}{
			{
				name:    "name taken by a polling agent",
				setup:   func(t *testing.T, s store.Store) { enroll(t, s, "web-new", "prod", "tp-existing") },
				wantErr: store.ErrNameTaken,
			},
			{
				name:    "name taken by a listening agent",
				setup:   func(t *testing.T, s store.Store) { mustAddListening(t, s, "web-new", "tp-existing", "other:10933") },
				wantErr: store.ErrNameTaken,
			},
			{
				name:    "thumbprint taken",
				setup:   func(t *testing.T, s store.Store) { enroll(t, s, "web-existing", "prod", "tp-new") },
				wantErr: store.ErrThumbprintTaken,
			},
			{
				name:    "added twice",
				setup:   func(t *testing.T, s store.Store) { mustAddListening(t, s, "web-new", "tp-new", "web-new:10933") },
				change:  func(p *store.ListeningParams) { p.NewID = "id-again" },
				wantErr: store.ErrThumbprintTaken,
			},
			{
				name: "thumbprint is another agent's next thumbprint",
				setup: func(t *testing.T, s store.Store) {
					a := enroll(t, s, "web-existing", "prod", "tp-existing")
					if err := s.SetNextThumbprint(ctx, a.ID, "tp-new"); err != nil {
						t.Fatal(err)
					}
				},
				wantErr: store.ErrThumbprintTaken,
			},
			{
				name: "revoked thumbprint",
				setup: func(t *testing.T, s store.Store) {
					a := enroll(t, s, "web-old", "prod", "tp-new")
					if err := s.DeleteAgent(ctx, a.ID); err != nil {
						t.Fatal(err)
					}
				},
				wantErr: store.ErrThumbprintTaken,
				wantMsg: "revoked",
			},
			{
				name:    "ID taken",
				setup:   func(t *testing.T, s store.Store) { mustAddListening(t, s, "web-other", "tp-other", "other:10933") },
				change:  func(p *store.ListeningParams) { p.NewID = "agent-web-other" },
				wantErr: store.ErrExists,
			},
			{name: "empty name", change: func(p *store.ListeningParams) { p.Name = "" }},
			{name: "empty thumbprint", change: func(p *store.ListeningParams) { p.Thumbprint = "" }},
			{name: "empty address", change: func(p *store.ListeningParams) { p.Address = "" }},
			{name: "empty ID", change: func(p *store.ListeningParams) { p.NewID = "" }},
			{
				name:   "time out of range",
				change: func(p *store.ListeningParams) { p.Now = time.Date(1500, 1, 1, 0, 0, 0, 0, time.UTC) },
			},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				s, _ := db.open(t)
				if tt.setup != nil {
					tt.setup(t, s)
				}
				before, err := s.ListAgents(ctx)
				if err != nil {
					t.Fatal(err)
				}

				p := base
				if tt.change != nil {
					tt.change(&p)
				}
				a, err := s.AddListening(ctx, p)
				if err == nil {
					t.Fatalf("got agent %+v, want an error", a)
				}
				if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
					t.Errorf("got error %v, want %v", err, tt.wantErr)
				}
				if tt.wantMsg != "" && !strings.Contains(err.Error(), tt.wantMsg) {
					t.Errorf("got error %q, want it to contain %q", err, tt.wantMsg)
				}
				if prefix := fmt.Sprintf("add listening agent %q: ", p.Name); !strings.HasPrefix(err.Error(), prefix) {
					t.Errorf("got error %q, want prefix %q", err, prefix)
				}

				// A refused agent must change nothing.
				after, err := s.ListAgents(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(after, before) {
					t.Errorf("agents changed: got %+v, want %+v", after, before)
				}
			})
		}
	})
}

// A listening agent's identity is an agent's identity like any other: a
// polling agent enrolling with its name or certificate meets the same
// refusals, and with Force replaces it.
func TestRegisterOverListeningAgent(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		listening := mustAddListening(t, s, "web-1", "tp-1", "web-1:10933")

		createToken(t, s, "good", "prod", t0.Add(time.Hour))
		p := store.RegisterParams{
			TokenHash: hashOf("good"), Thumbprint: "tp-1", Name: "web-2", Now: t0, NewID: "id-new",
		}
		if _, err := s.Register(ctx, p); !errors.Is(err, store.ErrThumbprintTaken) {
			t.Fatalf("without force: got %v, want %v", err, store.ErrThumbprintTaken)
		}
		p.Name = "web-1"
		p.Thumbprint = "tp-2"
		if _, err := s.Register(ctx, p); !errors.Is(err, store.ErrNameTaken) {
			t.Fatalf("name without force: got %v, want %v", err, store.ErrNameTaken)
		}

		p.Force = true
		res, err := s.Register(ctx, p)
		if err != nil {
			t.Fatalf("with force: %v", err)
		}
		if want := []store.Agent{listening}; !reflect.DeepEqual(res.Replaced, want) {
			t.Errorf("got Replaced %+v, want %+v", res.Replaced, want)
		}
		if res.Agent.Listening() || res.Agent.Address != "" || res.Agent.DialError != "" {
			t.Errorf("new agent: got Address %q DialError %q, want a polling agent", res.Agent.Address, res.Agent.DialError)
		}
		mustRevoked(t, s, "tp-1", true)
		if _, err := s.AgentByID(ctx, listening.ID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("replaced agent: got %v, want %v", err, store.ErrNotFound)
		}
	})
}

func TestSetAgentAddress(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		tests := []struct {
			name        string
			id, address string
			wantErr     error
			want        store.Agent // the listening agent after it, if it exists
		}{
			{
				name: "moves the agent and clears its dial error",
				id:   "agent-web-1", address: "web-1.new:10933",
				want: store.Agent{Address: "web-1.new:10933"},
			},
			{
				name: "same address still clears the dial error",
				id:   "agent-web-1", address: "web-1:10933",
				want: store.Agent{Address: "web-1:10933"},
			},
			{
				name: "empty address", id: "agent-web-1", address: "",
				wantErr: kind.ErrBadRequest,
				want:    store.Agent{Address: "web-1:10933", DialError: "connection refused"},
			},
			{
				name: "polling agent", id: "agent-web-2", address: "web-2:10933",
				wantErr: kind.ErrBadRequest,
				want:    store.Agent{Address: "web-1:10933", DialError: "connection refused"},
			},
			{
				name: "unknown agent", id: "nope", address: "nope:10933",
				wantErr: store.ErrNotFound,
				want:    store.Agent{Address: "web-1:10933", DialError: "connection refused"},
			},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				s, _ := db.open(t)
				a := mustAddListening(t, s, "web-1", "tp-1", "web-1:10933")
				polling := enroll(t, s, "web-2", "prod", "tp-2")
				if err := s.SetDialError(ctx, a.ID, "connection refused"); err != nil {
					t.Fatal(err)
				}

				err := s.SetAgentAddress(ctx, tt.id, tt.address)
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("got error %v, want %v", err, tt.wantErr)
				}
				if err != nil && !strings.Contains(err.Error(), tt.id) {
					t.Errorf("got error %q, want it to name agent %s", err, tt.id)
				}
				got := mustAgent(t, s, a.ID)
				if got.Address != tt.want.Address || got.DialError != tt.want.DialError {
					t.Errorf("got Address %q DialError %q, want %q %q", got.Address, got.DialError, tt.want.Address, tt.want.DialError)
				}
				if got := mustAgent(t, s, polling.ID); !reflect.DeepEqual(got, polling) {
					t.Errorf("polling agent: got %+v, want %+v", got, polling)
				}
			})
		}
	})
}

func TestSetDialError(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		a := mustAddListening(t, s, "web-1", "tp-1", "web-1:10933")
		other := mustAddListening(t, s, "web-2", "tp-2", "web-2:10933")
		writes := countDialErrorWrites(t, db, s)

		// In order, on one agent: each step's stored value and how many
		// rows have been written by then.
		steps := []struct {
			name       string
			id, msg    string
			wantErr    error
			want       string
			wantWrites int
		}{
			{name: "set", id: a.ID, msg: "dial tcp: connection refused", want: "dial tcp: connection refused", wantWrites: 1},
			{name: "unchanged", id: a.ID, msg: "dial tcp: connection refused", want: "dial tcp: connection refused", wantWrites: 1},
			{name: "unchanged again", id: a.ID, msg: "dial tcp: connection refused", want: "dial tcp: connection refused", wantWrites: 1},
			{name: "changed", id: a.ID, msg: "dial tcp: i/o timeout", want: "dial tcp: i/o timeout", wantWrites: 2},
			{name: "cleared", id: a.ID, msg: "", want: "", wantWrites: 3},
			{name: "cleared again", id: a.ID, msg: "", want: "", wantWrites: 3},
			{name: "not found", id: "nope", msg: "refused", wantErr: store.ErrNotFound, want: "", wantWrites: 3},
			{name: "not found, empty", id: "nope", msg: "", wantErr: store.ErrNotFound, want: "", wantWrites: 3},
		}
		for _, st := range steps {
			err := s.SetDialError(ctx, st.id, st.msg)
			if !errors.Is(err, st.wantErr) {
				t.Fatalf("%s: got error %v, want %v", st.name, err, st.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), st.id) {
				t.Errorf("%s: got error %q, want it to name agent %s", st.name, err, st.id)
			}
			if got := mustAgent(t, s, a.ID).DialError; got != st.want {
				t.Errorf("%s: got DialError %q, want %q", st.name, got, st.want)
			}
			if got := writes(); got != st.wantWrites {
				t.Errorf("%s: got %d writes, want %d", st.name, got, st.wantWrites)
			}
		}
		if got := mustAgent(t, s, other.ID); !reflect.DeepEqual(got, other) {
			t.Errorf("other agent: got %+v, want %+v", got, other)
		}
	})
}

// countDialErrorWrites adds a trigger that counts the rows of agents
// whose dial_error an UPDATE wrote, and returns the count so far: a row
// updated to the value it had is a write all the same, which is what
// SetDialError must not do on every failed dial.
func countDialErrorWrites(t *testing.T, db backend, s store.Store) func() int {
	t.Helper()
	ctx := context.Background()
	var (
		q   queryer
		ddl []string
	)
	switch db.name {
	case "sqlite":
		q = s.(*SQLite).w
		ddl = []string{
			`CREATE TABLE dial_error_writes (n INTEGER NOT NULL)`,
			`INSERT INTO dial_error_writes (n) VALUES (0)`,
			`CREATE TRIGGER count_dial_error_writes AFTER UPDATE OF dial_error ON agents
			 BEGIN UPDATE dial_error_writes SET n = n + 1; END`,
		}
	case "postgres":
		q = s.(*Postgres).w
		ddl = []string{
			`CREATE TABLE dial_error_writes (n INTEGER NOT NULL)`,
			`INSERT INTO dial_error_writes (n) VALUES (0)`,
			`CREATE FUNCTION count_dial_error_writes() RETURNS trigger LANGUAGE plpgsql AS
			 $$ BEGIN UPDATE dial_error_writes SET n = n + 1; RETURN NULL; END $$`,
			`CREATE TRIGGER count_dial_error_writes AFTER UPDATE OF dial_error ON agents
			 FOR EACH ROW EXECUTE FUNCTION count_dial_error_writes()`,
		}
	default:
		t.Fatalf("no write counter for backend %s", db.name)
	}
	for _, stmt := range ddl {
		if _, err := q.ExecContext(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	return func() int {
		t.Helper()
		var n int
		if err := q.QueryRowContext(ctx, `SELECT n FROM dial_error_writes`).Scan(&n); err != nil {
			t.Fatalf("count dial error writes: %v", err)
		}
		return n
	}
}

// Every agent stored before listening agents existed dials the
// coordinator: the migration makes it a polling agent.
func TestMigrationMakesAgentsPolling(t *testing.T) {
	ctx := context.Background()
	const before = 7 // the schema before 0008_listening_agents.sql
	const insert = `INSERT INTO agents (id, name, environment, thumbprint, registered_at) VALUES ('id-1', 'web-1', 'prod', 'tp-1', ?)`
	check := func(t *testing.T, s store.Store) {
		t.Helper()
		a, err := s.AgentByID(ctx, "id-1")
		if err != nil {
			t.Fatalf("AgentByID after the migration: %v", err)
		}
		if a.Listening() || a.Address != "" || a.DialError != "" {
			t.Errorf("got Address %q DialError %q, want both empty", a.Address, a.DialError)
		}
	}
	t.Run("sqlite", func(t *testing.T) {
		migs, err := loadMigrations()
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "tendril.db")
		old, err := openSQLite(ctx, path, Options{}, migs[:before])
		if err != nil {
			t.Fatal(err)
		}
		_, err = old.w.ExecContext(ctx, insert, t0.UnixNano())
		old.Close()
		if err != nil {
			t.Fatal(err)
		}
		s, err := OpenSQLite(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		check(t, s)
	})
	t.Run("postgres", func(t *testing.T) {
		migs, err := loadPostgresMigrations()
		if err != nil {
			t.Fatal(err)
		}
		url := pg.Cluster(t).NewDatabase(t)
		old, err := openPostgres(ctx, url, migs[:before])
		if err != nil {
			t.Fatal(err)
		}
		_, err = old.w.ExecContext(ctx, insert, t0.UnixNano())
		old.Close()
		if err != nil {
			t.Fatal(err)
		}
		s, err := OpenPostgres(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		check(t, s)
	})
}

// Two coordinators adding a listening agent and enrolling a polling one
// under one name at once: the identities lock lets exactly one of them
// have it.
func TestPostgresRaceListeningAndRegister(t *testing.T) {
	ctx := context.Background()
	a, b, _ := openTwo(t)
	const racers = 8
	for i := range racers {
		createToken(t, a, fmt.Sprint("secret-", i), "prod", t0.Add(time.Hour))
	}
	errs := race(racers, a, b, func(s *Postgres, i int) error {
		tp, id := fmt.Sprint("tp-", i), fmt.Sprint("id-", i)
		if i%2 == 0 {
			_, err := s.AddListening(ctx, store.ListeningParams{
				NewID: id, Name: "web-1", Environment: "prod", Thumbprint: tp, Address: "web-1:10933", Now: t0,
			})
			return err
		}
		_, err := s.Register(ctx, store.RegisterParams{
			TokenHash: hashOf(fmt.Sprint("secret-", i)), Thumbprint: tp, Name: "web-1", Now: t0, NewID: id,
		})
		return err
	})
	wantOneWinner(t, errs, store.ErrNameTaken)
	if agents, err := a.ListAgents(ctx); err != nil || len(agents) != 1 {
		t.Errorf("got %d agents (%v), want 1", len(agents), err)
	}
}
