// Command tendril-server is the Tendril coordinator: it initializes a data
// folder, runs the coordinator, and administers a running one through its
// HTTP API. The work is done by package server and package server/admin;
// this command only turns flags, environment variables and files into
// their configuration.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/mattn/go-isatty"
)

func main() {
	// Signals stay caught until the command returns: a second Ctrl-C (or
	// the TERM that follows it from a supervising script) must not cut a
	// graceful shutdown short.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := execute(ctx, os.Args[1:], env{
		stdout:   os.Stdout,
		stderr:   os.Stderr,
		stdin:    os.Stdin,
		getenv:   os.Getenv,
		console:  isatty.IsTerminal(os.Stderr.Fd()) || isatty.IsCygwinTerminal(os.Stderr.Fd()),
		terminal: isatty.IsTerminal(os.Stdout.Fd()) || isatty.IsCygwinTerminal(os.Stdout.Fd()),
	})
	stop()
	os.Exit(code)
}
