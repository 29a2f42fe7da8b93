// Package releases reads a release feed and tells whether a newer
// coordinator than this one is out: the update notice of the console,
// GET /api/updates and "tendril-server version --check".
//
// The feed is read at start and then on an interval. A feed that cannot be
// read or parsed keeps the last good result and is logged once per
// distinct failure: an update notice must never disturb the coordinator.
package releases

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/mod/semver"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/bundle"
)

// Release feed limits.
const (
	// DefaultInterval is how often the release feed is read unless told
	// otherwise.
	DefaultInterval = 6 * time.Hour
	// fetchTimeout bounds one read of a feed over HTTP.
	fetchTimeout = 10 * time.Second
	// MaxFeedSize bounds a feed's size: a list of releases, not a
	// download.
	MaxFeedSize = 1 << 20
)

// Release is one entry of a release feed.
type Release struct {
	Version  string `json:"version"`
	Date     string `json:"date,omitempty"`
	NotesURL string `json:"notes_url,omitempty"`
	Notes    string `json:"notes,omitempty"`
	Breaking bool   `json:"breaking"`
}

// Feed is the document at --release-feed:
// {"releases": [{"version", "date", "notes_url", "notes", "breaking"}]}.
type Feed struct {
	Releases []Release `json:"releases"`
}

// NoFeedMessage is what GET /api/updates says when there is nothing to check
// against.
const NoFeedMessage = "no release feed is configured (start the coordinator with --release-feed URL-or-FILE)"

// source is where the feed is read from: a URL or a file.
type source struct {
	url  string // http:// or https://
	file string
}

// parseSource accepts http(s) URLs, file:// URLs and plain paths.
func parseSource(s string) (source, error) {
	u, err := url.Parse(s)
	// One letter before a colon is a Windows drive, not a scheme.
	if err != nil || u.Scheme == "" || len(u.Scheme) == 1 {
		return source{file: s}, nil
	}
	switch u.Scheme {
	case "http", "https":
		if u.Host == "" {
			return source{}, fmt.Errorf("release feed %q: no host", s)
		}
		return source{url: s}, nil
	case "file":
		if u.Path == "" {
			return source{}, fmt.Errorf("release feed %q: no path", s)
		}
		return source{file: u.Path}, nil
	}
	return source{}, fmt.Errorf("release feed %q: want an http://, https:// or file:// URL, or a file path", s)
}

// Config configures a Watcher.
type Config struct {
	// Feed is where releases are listed: an http(s) URL, a file:// URL
	// or a file path. "" reads nothing, and Updates says so.
	Feed string
	// Interval is how often Feed is read after the first read. Default
	// DefaultInterval.
	Interval time.Duration
	// Current is this coordinator's version.
	Current string
	// Logger receives a warning per distinct failure and a notice per new
	// release. Default: no logs.
	Logger *zap.Logger
}

// Watcher reads a release feed and keeps what it last said.
type Watcher struct {
	cfg Config
	log *zap.Logger

	mu   sync.Mutex
	view api.UpdatesView // without Current
	// skipped counts the entries of the last good read whose version was
	// not valid.
	skipped int
	// attempts counts reads, good or bad.
	attempts int
	// warned is the failure last logged, so that a feed that stays broken
	// is reported once, not on every interval.
	warned string
	// announced is the newest version last logged as available.
	announced string
}

// New validates cfg: a feed that is neither a URL it can read nor a path is
// refused here, not on every interval.
func New(cfg Config) (*Watcher, error) {
	if cfg.Feed != "" {
		if _, err := parseSource(cfg.Feed); err != nil {
			return nil, err
		}
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	return &Watcher{cfg: cfg, log: cfg.Logger}, nil
}

// Updates returns what the release feed says about newer versions.
func (w *Watcher) Updates() api.UpdatesView {
	w.mu.Lock()
	v := w.view
	w.mu.Unlock()
	v.Current = w.cfg.Current
	if w.cfg.Feed == "" {
		v.Error = NoFeedMessage
	}
	return v
}

// Reads returns how many times the feed was read, well or not, and how
// many entries the last good read skipped as invalid.
func (w *Watcher) Reads() (attempts, skipped int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.attempts, w.skipped
}

// Run reads the feed now and then every interval until ctx is done. It
// returns at once without a feed.
func (w *Watcher) Run(ctx context.Context) {
	if w.cfg.Feed == "" {
		return
	}
	t := time.NewTicker(w.cfg.Interval)
	defer t.Stop()
	for {
		w.check(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// check reads the feed once and records the outcome. A failure keeps the
// last good result and is logged once until it changes or a read
// succeeds.
func (w *Watcher) check(ctx context.Context) {
	feed, err := w.fetch(ctx)
	if ctx.Err() != nil {
		return // shutting down: not the feed's fault
	}
	var (
		latest   Release
		breaking bool
		skipped  int
	)
	if err == nil {
		latest, breaking, skipped, err = newestRelease(w.cfg.Current, feed.Releases)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.attempts++
	if err != nil {
		msg := err.Error()
		w.view.Error = msg
		if msg != w.warned {
			w.warned = msg
			w.log.Warn("release feed check failed; will retry", zap.String("feed", w.cfg.Feed),
				zap.Duration("interval", w.cfg.Interval), zap.Error(err))
		}
		return
	}
	now := time.Now().UTC()
	w.view = api.UpdatesView{
		Latest: latest.Version, UpdateAvailable: latest.Version != "", Breaking: breaking,
		NotesURL: latest.NotesURL, Notes: latest.Notes, CheckedAt: &now,
	}
	if skipped > 0 && (w.skipped != skipped || w.warned != "") {
		w.log.Warn("release feed lists invalid versions; they were skipped", zap.String("feed", w.cfg.Feed), zap.Int("skipped", skipped))
	}
	w.skipped, w.warned = skipped, ""
	if latest.Version != "" && latest.Version != w.announced {
		w.announced = latest.Version
		w.log.Info("a newer coordinator is available", zap.String("current", w.cfg.Current),
			zap.String("latest", latest.Version), zap.Bool("breaking", breaking), zap.String("notes_url", latest.NotesURL))
	}
}

// fetch reads and decodes the feed.
func (w *Watcher) fetch(ctx context.Context) (Feed, error) {
	src, err := parseSource(w.cfg.Feed)
	if err != nil {
		return Feed{}, err
	}
	var body []byte
	if src.file != "" {
		body, err = readReleaseFile(src.file)
	} else {
		body, err = fetchReleaseURL(ctx, src.url)
	}
	if err != nil {
		return Feed{}, err
	}
	var feed Feed
	if err := json.Unmarshal(body, &feed); err != nil {
		return Feed{}, fmt.Errorf("release feed %s is not valid JSON: %w", w.cfg.Feed, err)
	}
	if feed.Releases == nil {
		return Feed{}, fmt.Errorf("release feed %s has no \"releases\" list", w.cfg.Feed)
	}
	return feed, nil
}

func readReleaseFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read release feed: %w", err)
	}
	defer f.Close()
	return readReleaseBody(f, path)
}

func fetchReleaseURL(ctx context.Context, u string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("read release feed: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	// One read every few hours: no connection is worth keeping open.
	tr := &http.Transport{Proxy: http.ProxyFromEnvironment, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: fetchTimeout}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("read release feed: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("read release feed %s: HTTP %s", u, resp.Status)
	}
	return readReleaseBody(resp.Body, u)
}

// readReleaseBody reads at most MaxFeedSize bytes and refuses more.
func readReleaseBody(r io.Reader, name string) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxFeedSize+1))
	if err != nil {
		return nil, fmt.Errorf("read release feed %s: %w", name, err)
	}
	if len(b) > MaxFeedSize {
		return nil, fmt.Errorf("release feed %s is larger than %d bytes", name, MaxFeedSize)
	}
	return b, nil
}

// newestRelease picks the newest release above current, and whether any
// release above current up to it is breaking. Entries whose version is not
// valid are skipped and counted. Pre-releases are offered only to a
// coordinator that runs one: an operator on a stable release is told about
// stable releases. latest is zero when nothing is newer.
func newestRelease(current string, releases []Release) (latest Release, breaking bool, skipped int, err error) {
	if !bundle.ValidVersion(current) {
		return Release{}, false, 0, errors.New("this coordinator's version " + current + " is not a semantic version; it cannot be compared with the feed")
	}
	wantPre := semver.Prerelease("v"+current) != ""
	for _, r := range releases {
		if !bundle.ValidVersion(r.Version) {
			skipped++
			continue
		}
		if !wantPre && semver.Prerelease("v"+r.Version) != "" {
			continue
		}
		if bundle.CompareVersions(r.Version, current) > 0 {
			// Every newer release is at most the newest, so each is
			// on the way to it.
			breaking = breaking || r.Breaking
			if latest.Version == "" || bundle.CompareVersions(r.Version, latest.Version) > 0 {
				latest = r
			}
		}
	}
	return latest, breaking, skipped, nil
}
