// Package sqlstore implements store.Store, the coordinator's persistence,
// on two backends: SQLite (OpenSQLite), the default, embedded in the
// coordinator's data folder, and PostgreSQL (OpenPostgres), which several
// coordinators share for high availability. Both satisfy the same
// contract and run the same tests.
//
// # One SQL store, two dialects
//
// store.Store is implemented once, by sqlStore, on database/sql: every
// query is written once, with ? placeholders, and the two schemas
// (migrations/sqlite and migrations/postgres, mirroring each other file
// for file) have the same tables and columns, times as BIGINT unix
// nanoseconds and string lists as JSON in TEXT. SQLite and Postgres are
// thin types that embed it. What the two databases do differently is a
// dialect's (see the dialect interface):
//
//   - Concurrency. An SQLite file has one coordinator and one writer
//     connection, which serializes every write transaction. A PostgreSQL
//     database is shared by coordinators whose transactions run at once,
//     so the same transactions take advisory locks for the checks no
//     constraint can express (unique thumbprints, a token used once, a
//     live node's name, an agent in one running rollout), lock the rows
//     they read to change (FOR UPDATE), and run again when PostgreSQL
//     gives one up for a deadlock or a serialization failure. Where a
//     constraint can decide (a bundle's version, a user's name), an
//     INSERT's conflict decides, in both.
//   - Types. SQLite keeps booleans as integers and bytes in TEXT
//     (signatures as hex); PostgreSQL has BOOLEAN and BYTEA, and refuses
//     NUL bytes and invalid UTF-8 in TEXT, so free text from agents and
//     people is made valid first.
//   - Mechanics only one of them has, which stay on its own type:
//     PostgreSQL's LISTEN/NOTIFY wakes the other nodes, large objects hold
//     shared uploads, and statements are batched into one round trip;
//     pgx's stdlib driver gives database/sql, and sql.Conn.Raw pgx itself
//     for these. SQLite caches the prepared statements of the agent
//     connection path, backs a database up before migrating it and takes
//     consistent copies with VACUUM INTO; in one process a notification
//     is a function call.
package sqlstore

import (
	"time"

	"github.com/tendrildeploy/tendril/server/store"
)

// numberLogLines picks the lines of an append that are new and numbers
// them after last: a line whose agent sequence is at or below agentSeq was
// stored already (the agent re-sent it after a reconnect). Lines without a
// time get now. It returns the new lines and the task's new last and
// agent sequences. Both stores number lines this way, inside the
// transaction that read last and agentSeq.
func numberLogLines(lines []store.LogLine, last, agentSeq int64, now time.Time) (fresh []store.LogLine, newLast, newAgentSeq int64) {
	for _, l := range lines {
		if l.AgentSeq > 0 && l.AgentSeq <= agentSeq {
			continue
		}
		if l.Time.IsZero() {
			l.Time = now
		}
		if l.AgentSeq > 0 {
			agentSeq = l.AgentSeq
		}
		last++
		l.Seq = last
		fresh = append(fresh, l)
	}
	return fresh, last, agentSeq
}
