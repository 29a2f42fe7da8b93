package diagnostics

import (
	"bytes"
	"slices"
	"testing"
)

func TestParseLocks(t *testing.T) {
	const locks = `1: POSIX  ADVISORY  READ 4754 fe:00:10569869 124 124
2: FLOCK  ADVISORY  WRITE 812 fe:00:4242 0 EOF
2: -> FLOCK  ADVISORY  WRITE 900 fe:00:4242 0 EOF
3: FLOCK  ADVISORY  WRITE 0 103:0a:4242 0 EOF
4: FLOCK  ADVISORY  WRITE 77 fe:00:99 0 EOF
5: FLOCK  ADVISORY  WRITE x fe:00:4242 0 EOF
garbage
`
	tests := []struct {
		name string
		ino  uint64
		want []flockHolder
	}{
		{"holders of the inode, one from another namespace", 4242, []flockHolder{{pid: 812, major: 0xfe, minor: 0}, {pid: 0, major: 0x103, minor: 0x0a}}},
		{"another inode", 99, []flockHolder{{pid: 77, major: 0xfe}}},
		{"a POSIX lock is not a flock", 10569869, nil},
		{"no lock", 1, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseLocks([]byte(locks), tt.ino); !slices.Equal(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestPickHolder(t *testing.T) {
	tests := []struct {
		name    string
		holders []flockHolder
		filePID int
		want    int
	}{
		{"the file's pid on the file's device", []flockHolder{{pid: 812, major: 0xfe}}, 812, 812},
		{"the file's pid on another device: another file", []flockHolder{{pid: 812, major: 0x08, minor: 1}}, 812, 0},
		{"another pid, the one on the device", []flockHolder{{pid: 77, major: 0x08}, {pid: 900, major: 0xfe}}, 812, 900},
		{"a holder this process cannot see", []flockHolder{{pid: 0, major: 0xfe}}, 812, 0},
		{"two holders on the device, neither the file's", []flockHolder{{pid: 1, major: 0xfe}, {pid: 2, major: 0xfe}}, 812, 0},
		{"none", nil, 812, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := pickHolder(tt.holders, 0xfe, 0, tt.filePID); got != tt.want {
				t.Fatalf("got %d, want %d", got, tt.want)
			}
		})
	}
}

// FuzzParseLocks: no text of /proc/locks makes the parser panic, and it
// finds at most one holder per line that names a flock.
func FuzzParseLocks(f *testing.F) {
	f.Add([]byte("2: FLOCK  ADVISORY  WRITE 812 fe:00:4242 0 EOF\n"), uint64(4242))
	f.Add([]byte("1: POSIX  ADVISORY  READ 4754 fe:00:10569869 124 124\n"), uint64(10569869))
	f.Add([]byte(""), uint64(0))
	f.Fuzz(func(t *testing.T, text []byte, ino uint64) {
		if got, lines := len(parseLocks(text, ino)), bytes.Count(text, []byte("FLOCK")); got > lines {
			t.Fatalf("%d holders from %d lines naming a flock", got, lines)
		}
	})
}
