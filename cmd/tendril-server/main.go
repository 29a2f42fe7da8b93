// Command tendril-server is the Tendril coordinator: it initializes a data
// folder, runs the coordinator, and administers a running one through its
// HTTP API. The work is done by package server and package api/client;
// the commands, in package cli, only turn flags, environment variables and
// files into their configuration. This file connects them to the process.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/mattn/go-isatty"

	"github.com/tendrildeploy/tendril/cmd/tendril-server/cli"
)

func main() {
	// Signals stay caught until the command returns: a second Ctrl-C (or
	// the TERM that follows it from a supervising script) must not cut a
	// graceful shutdown short.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], cli.Env{
		Stdout:   os.Stdout,
		Stderr:   os.Stderr,
		Stdin:    os.Stdin,
		Getenv:   os.Getenv,
		Console:  isatty.IsTerminal(os.Stderr.Fd()) || isatty.IsCygwinTerminal(os.Stderr.Fd()),
		Terminal: isatty.IsTerminal(os.Stdout.Fd()) || isatty.IsCygwinTerminal(os.Stdout.Fd()),
	})
	stop()
	os.Exit(code)
}
