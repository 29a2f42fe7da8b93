package pgtest

import (
	"fmt"
	"io"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// Main is a test binary's whole TestMain for a package that shares a
// cluster: it runs the tests, stops the cluster if a test started one, and,
// when leaks is true and everything passed, fails the binary if goroutines
// are left running (goleak.Find), since a leaked goroutine outlives the test
// that started it and can break the next. Then it exits with the code.
//
//	var pg pgtest.Shared
//
//	func TestMain(m *testing.M) { pg.Main(m, true) }
func (s *Shared) Main(m *testing.M, leaks bool) {
	os.Exit(s.runTests(m, leaks, os.Stderr))
}

// runTests is Main without the exit; problems are reported on stderr.
// ignore is for tests of runTests, which run beside goroutines of their
// own.
func (s *Shared) runTests(m interface{ Run() int }, leaks bool, stderr io.Writer, ignore ...goleak.Option) int {
	code := m.Run()
	if err := s.Stop(); err != nil {
		fmt.Fprintln(stderr, "stop postgres:", err)
		code = 1
	}
	if code == 0 && leaks {
		if err := goleak.Find(ignore...); err != nil {
			fmt.Fprintln(stderr, "goleak:", err)
			code = 1
		}
	}
	return code
}
