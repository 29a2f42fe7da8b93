// Package store is the coordinator's persistence contract: the Store
// interface and its parts (agents, tokens, tasks, uploads, rollouts,
// nodes, access, the machine policy), the records they keep, and the
// errors callers branch on. It holds no implementation, so the layers
// above it depend on the contract alone; package store/sqlstore
// implements it on SQLite (embedded, the default) and PostgreSQL (shared
// by the nodes of a highly available coordinator).
package store
