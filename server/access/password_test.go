package access

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/tendrildeploy/tendril/server/store/sqlstore"
)

func TestPasswordHash(t *testing.T) {
	h := hashPassword("correct horse")
	if !strings.HasPrefix(h, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("got %q, want an argon2id PHC string with its parameters", h)
	}
	if h2 := hashPassword("correct horse"); h2 == h {
		t.Fatal("two hashes of one password are equal; want a random salt each")
	}
	p, salt, key, err := decodeArgon(h)
	if err != nil || p != defaultArgon || len(salt) != argonSaltLen || len(key) != argonKeyLen {
		t.Fatalf("decode: got %+v, %d-byte salt, %d-byte key, %v", p, len(salt), len(key), err)
	}
	// A hash made with other parameters still verifies: they travel with it.
	cheap := argonParams{memory: 64, time: 1, threads: 2}
	other := encodeArgon(cheap, salt, cheap.idKey("other password", salt, 16))
	tests := []struct {
		name, hash, password string
		want                 bool
		wantErr              bool
	}{
		{"right password", h, "correct horse", true, false},
		{"wrong password", h, "correct horsE", false, false},
		{"empty password", h, "", false, false},
		{"other parameters", other, "other password", true, false},
		{"other parameters, wrong password", other, "correct horse", false, false},
		{"not a hash", "x", "correct horse", false, true},
		{"another algorithm", strings.Replace(h, "argon2id", "argon2i", 1), "correct horse", false, true},
		{"another version", strings.Replace(h, "v=19", "v=16", 1), "correct horse", false, true},
		{"a gigantic memory cost", strings.Replace(h, "m=19456", "m=4294967295", 1), "correct horse", false, true},
		{"a zero time cost", strings.Replace(h, "t=2", "t=0", 1), "correct horse", false, true},
		{"trailing parameters", strings.Replace(h, "p=1", "p=1,x=2", 1), "correct horse", false, true},
		{"a broken salt", replacePart(h, 4, "!!!!"), "correct horse", false, true},
		{"a short salt", replacePart(h, 4, "c2FsdA"), "correct horse", false, true},
		{"a short hash", h[:strings.LastIndex(h, "$")+5], "correct horse", false, true},
	}
	for _, tt := range tests {
		got, err := verifyPassword(tt.hash, tt.password)
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("%s: got %v, %v; want %v, error %v", tt.name, got, err, tt.want, tt.wantErr)
		}
		if err != nil && !errors.Is(err, errBadPasswordHash) {
			t.Errorf("%s: got error %v, want errBadPasswordHash", tt.name, err)
		}
	}
}

func TestAuthenticateUser(t *testing.T) {
	ctx := context.Background()
	st, err := sqlstore.OpenSQLite(ctx, filepath.Join(t.TempDir(), "tendril.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ts := New(st, zaptest.NewLogger(t))
	if _, err := ts.CreateUser(ctx, "Alice", "correct horse", "", nil); err != nil {
		t.Fatal(err)
	}
	if u, err := ts.Authenticate(ctx, "alice", "correct horse"); err != nil || u.Name != "Alice" {
		t.Fatalf("right password: got %+v, %v; want Alice", u, err)
	}
	for _, tt := range []struct{ name, user, password string }{
		{"wrong password", "alice", "wrong horse"},
		{"unknown user", "mallory", "correct horse"},
		{"empty password", "alice", ""},
	} {
		if _, err := ts.Authenticate(ctx, tt.user, tt.password); !errors.Is(err, ErrBadCredentials) {
			t.Errorf("%s: got %v, want ErrBadCredentials", tt.name, err)
		}
	}
	// A damaged stored hash refuses the sign-in like a wrong password.
	if err := ts.DeleteUser(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.CreateUser(ctx, "bob", "correct horse", "", nil); err != nil {
		t.Fatal(err)
	}
	u, _ := st.UserByName(ctx, "bob")
	if _, err := st.DeleteUser(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	u.PasswordHash = "$argon2id$v=19$m=999999999,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
	if err := st.CreateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.Authenticate(ctx, "bob", "correct horse"); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("damaged hash: got %v, want ErrBadCredentials", err)
	}
}

// replacePart replaces the i-th $-separated part of a PHC string.
func replacePart(phc string, i int, with string) string {
	parts := strings.Split(phc, "$")
	parts[i] = with
	return strings.Join(parts, "$")
}
