package cli

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tendrildeploy/tendril/api"
)

// fakeDataDir is a data folder with the two files admin commands read: a
// run.json naming the API and the admin key.
func fakeDataDir(t *testing.T, httpAddr, key string) string {
	t.Helper()
	dir := t.TempDir()
	b, _ := json.Marshal(api.RunInfo{PID: 1, HTTP: httpAddr, AgentAddr: "127.0.0.1:10943"})
	if err := os.WriteFile(filepath.Join(dir, api.RunFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, api.AdminKeyFile), []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestResolveTargetPrecedence(t *testing.T) {
	flagData := fakeDataDir(t, "127.0.0.1:1001", "key-flag-data")
	envDataDir := fakeDataDir(t, "0.0.0.0:1002", "key-env-data")

	for _, tc := range []struct {
		name             string
		flags            targetFlags
		env              map[string]string
		wantURL, wantKey string
	}{
		{"flags only", targetFlags{URL: "http://flag:1", APIKey: "key-flag"}, nil,
			"http://flag:1", "key-flag"},
		{"flags beat env and data", targetFlags{URL: "http://flag:1", APIKey: "key-flag", DataDir: flagData},
			map[string]string{envURL: "http://env:2", envAPIKey: "key-env", envData: envDataDir},
			"http://flag:1", "key-flag"},
		{"env beats data", targetFlags{DataDir: flagData},
			map[string]string{envURL: "http://env:2", envAPIKey: "key-env"},
			"http://env:2", "key-env"},
		{"data fills what flags and env left", targetFlags{URL: "http://flag:1", DataDir: flagData}, nil,
			"http://flag:1", "key-flag-data"},
		{"env key with data URL", targetFlags{DataDir: flagData}, map[string]string{envAPIKey: "key-env"},
			"http://127.0.0.1:1001", "key-env"},
		{"data flag only", targetFlags{DataDir: flagData}, nil,
			"http://127.0.0.1:1001", "key-flag-data"},
		{"data flag beats TENDRIL_DATA", targetFlags{DataDir: flagData}, map[string]string{envData: envDataDir},
			"http://127.0.0.1:1001", "key-flag-data"},
		{"TENDRIL_DATA alone; wildcard bind reached on loopback", targetFlags{}, map[string]string{envData: envDataDir},
			"http://127.0.0.1:1002", "key-env-data"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{envURL, envAPIKey, envData} {
				t.Setenv(k, tc.env[k])
			}
			url, key, err := resolveTarget(tc.flags, os.Getenv)
			if err != nil {
				t.Fatal(err)
			}
			if url != tc.wantURL || key != tc.wantKey {
				t.Fatalf("got %s %s, want %s %s", url, key, tc.wantURL, tc.wantKey)
			}
		})
	}
}

func TestResolveTargetMissing(t *testing.T) {
	for _, k := range []string{envURL, envAPIKey, envData} {
		t.Setenv(k, "")
	}
	var ue *usageError
	if _, _, err := resolveTarget(targetFlags{}, os.Getenv); !errors.As(err, &ue) || !strings.Contains(err.Error(), "no coordinator given") {
		t.Fatalf("nothing given: %v", err)
	}
	if _, _, err := resolveTarget(targetFlags{URL: "http://x:1"}, os.Getenv); !errors.As(err, &ue) || !strings.Contains(err.Error(), "no API key given") {
		t.Fatalf("no key: %v", err)
	}
	// A data folder that was never initialized says so, rather than that
	// the coordinator is not running.
	if _, _, err := resolveTarget(targetFlags{DataDir: t.TempDir()}, os.Getenv); !errors.Is(err, api.ErrNotInitialized) {
		t.Fatalf("empty data folder: %v", err)
	}
	// The folder is not read when flags and environment gave everything.
	t.Setenv(envAPIKey, "k")
	if _, _, err := resolveTarget(targetFlags{URL: "http://x:1", DataDir: "/nonexistent"}, os.Getenv); err != nil {
		t.Fatalf("data folder read needlessly: %v", err)
	}
}
