// Package console is the web console: server-rendered pages (environments,
// machines, tasks, rollouts, configuration) over the same operations the
// HTTP API calls, with a sign-in of its own (an API key or a user's
// password, rate-limited) so that the browser holds a session cookie
// rather than the key, CSRF protection on every change, and a strict
// content security policy. Its templates and static files are package ui.
//
// It holds no state but its sessions and never touches the store or the
// coordinator core: it calls httpapi's interfaces and its own Access and
// Machines, which package server wires.
package console
