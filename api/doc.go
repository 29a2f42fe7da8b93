// Package api is the wire contract of the coordinator's HTTP API: the
// views it answers with, the requests it takes, its error body, and the
// files of a data folder that a client on the coordinator's host reads to
// find it (run.json, admin.key).
//
// It imports nothing of the coordinator, so a program that only calls the
// API (package api/client, scripts, the fleet simulator) does not link the
// coordinator's database drivers, yamux or logging. Field names and JSON
// tags here are a contract: add fields freely, never rename or remove one.
//
// A request field's schema tag names the rule the coordinator holds it
// to, which the OpenAPI document declares and every request is validated
// against: schema:"name" (NamePattern), "duration" (a Go duration such as
// 10m) or "size" (what ParseSize reads).
package api
