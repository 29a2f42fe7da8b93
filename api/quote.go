package api

import "strings"

// shellSafe are the bytes an argument may hold and still be shown bare:
// none of them is split, expanded or quoted by a POSIX shell.
const shellSafe = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@%+=:,./_-"

// QuoteArgs joins a task's Calamari arguments into one line that a POSIX
// shell would split back into the same arguments: an argument that is
// empty or holds anything but shellSafe bytes (a space, a quote, a $) is
// put in single quotes, e.g. run-script --inline 'echo hello'. The
// console and the commands show arguments with it, so that what a person
// reads is what they could paste after "tendril-server task run --".
func QuoteArgs(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if a != "" && strings.Trim(a, shellSafe) == "" {
			out[i] = a
			continue
		}
		out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(out, " ")
}
