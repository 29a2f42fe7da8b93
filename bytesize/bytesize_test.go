package bytesize

import "testing"

func TestFormat(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{
		{0, "0 B"},
		{1023, "1023 B"},
		{1024, "1.0 KiB"},
		{1536, "1.5 KiB"},
		{12_345_678, "11.8 MiB"},
		{10 << 30, "10.0 GiB"},
		{5 << 40, "5.0 TiB"},
		{5 << 50, "5.0 PiB"},
		{1<<63 - 1, "8.0 EiB"},
	} {
		if got := Format(tc.n); got != tc.want {
			t.Errorf("Format(%d): got %q, want %q", tc.n, got, tc.want)
		}
	}
}
