package cli

import (
	"fmt"

	"github.com/tendrildeploy/tendril/api/client"
)

// targetFlags are an admin command's flags naming the coordinator to talk
// to.
type targetFlags struct {
	URL, APIKey, DataDir string
}

// resolveTarget picks the API URL and key. Each is taken from its flag,
// else from its environment variable, else from the data folder (--data,
// else $TENDRIL_DATA): run.json for the URL, admin.key for the key. So
// "--url" with "--data" uses that URL with the folder's admin key, and the
// folder is read only for what nothing else gave.
func resolveTarget(f targetFlags, getenv func(string) string) (url, key string, err error) {
	url = first(f.URL, getenv(envURL))
	key = first(f.APIKey, getenv(envAPIKey))
	if url != "" && key != "" {
		return url, key, nil
	}
	data := first(f.DataDir, getenv(envData))
	if data == "" {
		if url == "" {
			return "", "", &usageError{err: fmt.Errorf("no coordinator given: use --data DIR on the coordinator's host, or --url URL and --api-key KEY (or %s and %s)", envURL, envAPIKey)}
		}
		return "", "", &usageError{err: fmt.Errorf("no API key given: use --api-key KEY or %s, or --data DIR on the coordinator's host", envAPIKey)}
	}
	if url == "" {
		if url, err = client.DataDirURL(data); err != nil {
			return "", "", err
		}
	}
	if key == "" {
		if key, err = client.DataDirKey(data); err != nil {
			return "", "", err
		}
	}
	return url, key, nil
}

// first returns the first non-empty string.
func first(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}
