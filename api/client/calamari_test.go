package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/bundle"
)

// packBundle builds a small Calamari bundle for this platform. The entry
// point is never run by these tests: the fake agent only pretends.
func packBundle(t *testing.T, version, content string) []byte {
	t.Helper()
	src := t.TempDir()
	plat := runtime.GOOS + "-" + runtime.GOARCH
	if err := os.MkdirAll(filepath.Join(src, plat), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, plat, "calamari"), []byte("#!/bin/sh\n# "+content+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := bundle.Pack(context.Background(), &buf, "calamari", version, src,
		map[string]string{runtime.GOOS + "/" + runtime.GOARCH: plat + "/calamari"}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestCalamariUploadAndList(t *testing.T) {
	co := startCoordinator(t)
	c := newClient(t, co.url, co.init.AdminKey)
	ctx := testContext(t)

	if bs, err := c.CalamariBundles(ctx); err != nil || len(bs) != 0 {
		t.Fatalf("bundles before upload: got %+v, %v; want none", bs, err)
	}
	b1 := packBundle(t, "1.0.0", "one")
	sum := sha256.Sum256(b1)
	plat := runtime.GOOS + "/" + runtime.GOARCH
	for _, tc := range []struct {
		name        string
		body        []byte
		wantCreated bool
	}{
		{"first upload", b1, true},
		{"same bundle again", b1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := c.UploadCalamari(ctx, bytes.NewReader(tc.body), int64(len(tc.body)))
			if err != nil {
				t.Fatal(err)
			}
			if v.Created != tc.wantCreated || !v.Latest || v.Version != "1.0.0" || v.SHA256 != hex.EncodeToString(sum[:]) ||
				v.Size != int64(len(b1)) || len(v.Platforms) != 1 || v.Platforms[0] != plat {
				t.Fatalf("got %+v, want version 1.0.0 created=%v latest on %s", v, tc.wantCreated, plat)
			}
		})
	}

	b2 := packBundle(t, "1.1.0", "two")
	if v, err := c.UploadCalamari(ctx, bytes.NewReader(b2), int64(len(b2))); err != nil || !v.Created || !v.Latest {
		t.Fatalf("upload 1.1.0: got %+v, %v; want created and latest", v, err)
	}
	bs, err := c.CalamariBundles(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(bs) != 2 || bs[0].Version != "1.1.0" || !bs[0].Latest || bs[1].Version != "1.0.0" || bs[1].Latest {
		t.Fatalf("bundles: got %+v, want 1.1.0 (latest) then 1.0.0", bs)
	}

	t.Run("same version, other content", func(t *testing.T) {
		b := packBundle(t, "1.0.0", "changed")
		_, err := c.UploadCalamari(ctx, bytes.NewReader(b), int64(len(b)))
		if !IsStatus(err, http.StatusConflict) || !strings.Contains(err.Error(), "already stored with other content") {
			t.Fatalf("got %v, want 409 saying the version is taken", err)
		}
	})
}

func TestCalamariBadUploads(t *testing.T) {
	co := startCoordinator(t)
	c := newClient(t, co.url, co.init.AdminKey)
	ctx := testContext(t)
	b := packBundle(t, "1.0.0", "x")
	for _, tc := range []struct {
		name string
		body []byte
		want string
	}{
		{"not a bundle", []byte("hello, I am not a tar.gz"), "not a valid Calamari bundle"},
		{"truncated", b[:len(b)/2], "not a valid Calamari bundle"},
		{"empty", nil, "not a valid Calamari bundle"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.UploadCalamari(ctx, bytes.NewReader(tc.body), int64(len(tc.body)))
			if !IsStatus(err, http.StatusBadRequest) || !strings.Contains(err.Error(), tc.want) ||
				!strings.HasPrefix(err.Error(), "upload calamari: ") {
				t.Fatalf("got %v, want 400 containing %q", err, tc.want)
			}
		})
	}
	if bs, err := c.CalamariBundles(ctx); err != nil || len(bs) != 0 {
		t.Fatalf("bundles after bad uploads: got %+v, %v; want none", bs, err)
	}
	t.Run("short body", func(t *testing.T) {
		// The reader ends before the size given: nothing must be stored.
		_, err := c.UploadCalamari(ctx, bytes.NewReader(b), int64(len(b))+10)
		if err == nil {
			t.Fatal("got success, want an error")
		}
	})
	t.Run("negative size", func(t *testing.T) {
		if _, err := c.UploadCalamari(ctx, bytes.NewReader(b), -1); err == nil || !strings.Contains(err.Error(), "size -1") {
			t.Fatalf("got %v, want an error about the size", err)
		}
	})
	t.Run("update with no bundle", func(t *testing.T) {
		_, err := c.UpdateCalamari(ctx, api.UpdateTarget{Environment: "Test"})
		if !IsStatus(err, http.StatusBadRequest) || !strings.Contains(err.Error(), "no Calamari bundle has been uploaded") {
			t.Fatalf("got %v, want 400", err)
		}
	})
}

func TestUpdateCalamari(t *testing.T) {
	co := startCoordinator(t)
	c := newClient(t, co.url, co.init.AdminKey)
	ctx := testContext(t)
	b := packBundle(t, "2.0.0", "x")
	if _, err := c.UploadCalamari(ctx, bytes.NewReader(b), int64(len(b))); err != nil {
		t.Fatal(err)
	}
	tok, err := c.CreateToken(ctx, api.TokenRequest{Environment: "Test"})
	if err != nil {
		t.Fatal(err)
	}
	enrollAgent(t, tok, "web01")
	waitForAgent(t, c, "web01", func(a api.AgentView) bool { return a.Connected })

	for _, tc := range []struct {
		name   string
		target api.UpdateTarget
		status int // 0: success
		want   string
	}{
		{"by agent", api.UpdateTarget{Agent: "web01"}, 0, ""},
		{"by environment, any case", api.UpdateTarget{Environment: "test"}, 0, ""},
		{"both", api.UpdateTarget{Agent: "web01", Environment: "Test"}, http.StatusBadRequest, "exactly one"},
		{"neither", api.UpdateTarget{}, http.StatusBadRequest, "exactly one"},
		{"unknown agent", api.UpdateTarget{Agent: "nobody"}, http.StatusNotFound, `no agent named "nobody"`},
		{"empty environment", api.UpdateTarget{Environment: "Nowhere"}, http.StatusNotFound, "has no agents"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := c.UpdateCalamari(ctx, tc.target)
			if tc.status != 0 {
				if !IsStatus(err, tc.status) || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("got %v, want HTTP %d containing %q", err, tc.status, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			// The fake agent reports every version installed.
			want := api.UpdateResult{Agent: "web01", Version: "2.0.0", Result: "current"}
			if len(res) != 1 || res[0] != want {
				t.Fatalf("got %+v, want [%+v]", res, want)
			}
		})
	}
}
