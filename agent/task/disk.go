package task

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
	"unicode"

	"github.com/tendrildeploy/tendril/atomicfile"

	"github.com/tendrildeploy/tendril/protocol"
)

// Names inside a task's folder, <home>/Work/<ticket>/.
const (
	infoFile   = "task.json"   // written when the task starts: the ticket is taken
	logFile    = "log.jsonl"   // one protocol.LogEntry per line, seq 1, 2, 3...
	resultFile = "result.json" // written last: the task has finished
	filesDir   = "files"       // files pushed for the task
	partialDir = ".partial"    // pushes of files not yet complete
)

// info is task.json.
type info struct {
	Ticket    string    `json:"ticket"`
	Calamari  string    `json:"calamari"`
	Args      []string  `json:"args"`
	Isolation string    `json:"isolation,omitempty"`
	Locks     []string  `json:"locks,omitempty"`
	StartedAt time.Time `json:"started_at"`
	// PID is the process id once it started; 0 before, or if it never
	// did.
	PID int `json:"pid,omitempty"`
}

// result is result.json.
type result struct {
	State      string    `json:"state"`
	ExitCode   int       `json:"exit_code"`
	Error      string    `json:"error,omitempty"`
	FinishedAt time.Time `json:"finished_at"`
	// Outputs and Artifacts are what the script's service messages set.
	Outputs   map[string]string   `json:"outputs,omitempty"`
	Artifacts []protocol.Artifact `json:"artifacts,omitempty"`
	// LostLines counts the lines of output lost because the log could not
	// take them, and LostReason says why (tail.go).
	LostLines  int64  `json:"lost_lines,omitempty"`
	LostReason string `json:"lost_reason,omitempty"`
}

// ticketRE is a ticket: a plain, portable folder name.
var ticketRE = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$`)

// ValidateTicket checks that a ticket can name a task folder: 1-128
// characters of [A-Za-z0-9._-], not starting with a dot, and not a name
// Windows reserves for a device.
func ValidateTicket(ticket string) error {
	if !ticketRE.MatchString(ticket) || strings.HasSuffix(ticket, ".") || reservedName(ticket) {
		return fmt.Errorf("%w %q: want 1-128 characters of A-Z a-z 0-9 . _ -, not starting with a dot", ErrInvalidTicket, ticket)
	}
	return nil
}

// ValidateFileName checks that name is a plain file name that means the
// same file on every system: no folders, no leading dot (those are the
// agent's), no control characters, nothing Windows would alter or refuse.
func ValidateFileName(name string) error {
	bad := name == "" || len(name) > 255 || name[0] == '.' ||
		strings.ContainsAny(name, `/\:*?"<>|`) || strings.HasSuffix(name, ".") || strings.HasSuffix(name, " ") ||
		strings.ContainsFunc(name, unicode.IsControl) || reservedName(name) || !filepath.IsLocal(name)
	if bad {
		return fmt.Errorf("%w %q: want a plain file name", ErrInvalidFileName, name)
	}
	return nil
}

// reservedName reports a name Windows maps to a device whatever its
// extension ("NUL", "com1.txt"). Refused everywhere, so a ticket or file
// that works on one agent works on all.
func reservedName(name string) bool {
	base, _, _ := strings.Cut(strings.ToUpper(name), ".")
	switch base {
	case "CON", "PRN", "AUX", "NUL":
		return true
	}
	if len(base) == 4 && (strings.HasPrefix(base, "COM") || strings.HasPrefix(base, "LPT")) && base[3] >= '0' && base[3] <= '9' {
		return true
	}
	return false
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func writeJSON(path string, v any) error {
	return writeJSONWith(atomicfile.Write, path, v)
}

// rewriteJSON replaces a file writeJSON wrote with content whose loss in
// a system crash is harmless: the file is found whole after it, old or
// new, for one sync less (atomicfile.Replace).
func rewriteJSON(path string, v any) error {
	return writeJSONWith(atomicfile.Replace, path, v)
}

func writeJSONWith(write func(string, []byte, os.FileMode) error, path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", filepath.Base(path), err)
	}
	// Task files may hold deployment details: the agent's user only.
	return write(path, append(b, '\n'), 0o600)
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	return nil
}

// readResult reads a task's result.json; fs.ErrNotExist means the task has
// not finished.
func readResult(dir string) (result, error) {
	var res result
	err := readJSON(filepath.Join(dir, resultFile), &res)
	return res, err
}

// openLog opens a task's log for appending and returns how many entries it
// holds. A last line cut short by a crash is removed, so the next entry
// starts on a line of its own and every line parses.
func openLog(dir string) (f *os.File, size, lastSeq int64, err error) {
	path := filepath.Join(dir, logFile)
	f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("open task log: %w", err)
	}
	br := bufio.NewReader(f)
	var whole int64 // bytes up to the end of the last complete line
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// Longer than the buffer: keep reading the same line.
			size += int64(len(line))
			continue
		}
		size += int64(len(line))
		if err == nil {
			whole = size
			lastSeq++
			continue
		}
		if errors.Is(err, io.EOF) {
			break
		}
		f.Close()
		return nil, 0, 0, fmt.Errorf("read task log: %w", err)
	}
	if size != whole {
		if err := f.Truncate(whole); err != nil {
			f.Close()
			return nil, 0, 0, fmt.Errorf("repair task log: %w", err)
		}
	}
	return f, whole, lastSeq, nil
}

// isNotExist is errors.Is(err, fs.ErrNotExist), named for reading.
func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
