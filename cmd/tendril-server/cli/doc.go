// Package cli is the tendril-server command line: every command, flag,
// help text, output format and exit code. The commands turn flags,
// environment variables and files into the configuration of package server
// (init, run) or into calls to a running coordinator through package
// api/client (the admin commands).
//
// Package main only connects Run to the process: signals, the standard
// streams, the environment and whether the streams are terminals. Keeping
// the commands here lets tests run them in the test process with an Env of
// their own.
package cli
