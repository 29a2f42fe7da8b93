package server

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

	"github.com/tendrildeploy/tendril/api"

	"go.uber.org/zap"
	"golang.org/x/mod/semver"

	"github.com/tendrildeploy/tendril/bundle"
)

// Release feed limits.
const (
	// DefaultReleaseCheckInterval is how often the release feed is read
	// unless told otherwise.
	DefaultReleaseCheckInterval = 6 * time.Hour
	// releaseFetchTimeout bounds one read of a feed over HTTP.
	releaseFetchTimeout = 10 * time.Second
	// maxReleaseFeed bounds a feed's size: a list of releases, not a
	// download.
	maxReleaseFeed = 1 << 20
)

// Release is one entry of a release feed.
type Release struct {
	Version  string `json:"version"`
	Date     string `json:"date,omitempty"`
	NotesURL string `json:"notes_url,omitempty"`
	Notes    string `json:"notes,omitempty"`
	Breaking bool   `json:"breaking"`
}

// ReleaseFeed is the document at --release-feed:
// {"releases": [{"version", "date", "notes_url", "notes", "breaking"}]}.
type ReleaseFeed struct {
	Releases []Release `json:"releases"`
}

// errNoReleaseFeed is what GET /api/updates says when there is nothing to
// check against.
const errNoReleaseFeed = "no release feed is configured (start the coordinator with --release-feed URL-or-FILE)"

// releaseSource is where the feed is read from: a URL or a file.
type releaseSource struct {
	url  string // http:// or https://
	file string
}

// parseReleaseSource accepts http(s) URLs, file:// URLs and plain paths.
func parseReleaseSource(s string) (releaseSource, error) {
	u, err := url.Parse(s)
	// One letter before a colon is a Windows drive, not a scheme.
	if err != nil || u.Scheme == "" || len(u.Scheme) == 1 {
		return releaseSource{file: s}, nil
	}
	switch u.Scheme {
	case "http", "https":
		if u.Host == "" {
			return releaseSource{}, fmt.Errorf("release feed %q: no host", s)
		}
		return releaseSource{url: s}, nil
	case "file":
		if u.Path == "" {
			return releaseSource{}, fmt.Errorf("release feed %q: no path", s)
		}
		return releaseSource{file: u.Path}, nil
	}
	return releaseSource{}, fmt.Errorf("release feed %q: want an http://, https:// or file:// URL, or a file path", s)
}

// releaseState is the outcome of reading the feed, kept between reads.
type releaseState struct {
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

// Updates returns what the release feed says about newer versions.
func (s *Server) Updates() api.UpdatesView {
	s.releases.mu.Lock()
	v := s.releases.view
	s.releases.mu.Unlock()
	v.Current = s.cfg.Version
	if s.cfg.ReleaseFeed == "" {
		v.Error = errNoReleaseFeed
	}
	return v
}

func (s *Server) apiUpdates(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.Updates())
}

// watchReleases reads the feed now and then every interval until ctx is
// done.
func (s *Server) watchReleases(ctx context.Context) {
	t := time.NewTicker(s.cfg.ReleaseCheckInterval)
	defer t.Stop()
	for {
		s.checkReleases(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// checkReleases reads the feed once and records the outcome. A failure
// keeps the last good result and is logged once until it changes or a
// read succeeds.
func (s *Server) checkReleases(ctx context.Context) {
	feed, err := s.fetchReleaseFeed(ctx)
	if ctx.Err() != nil {
		return // shutting down: not the feed's fault
	}
	var (
		latest   Release
		breaking bool
		skipped  int
	)
	if err == nil {
		latest, breaking, skipped, err = newestRelease(s.cfg.Version, feed.Releases)
	}
	rs := &s.releases
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.attempts++
	if err != nil {
		msg := err.Error()
		rs.view.Error = msg
		if msg != rs.warned {
			rs.warned = msg
			s.log.Warn("release feed check failed; will retry", zap.String("feed", s.cfg.ReleaseFeed),
				zap.Duration("interval", s.cfg.ReleaseCheckInterval), zap.Error(err))
		}
		return
	}
	now := time.Now().UTC()
	rs.view = api.UpdatesView{
		Latest: latest.Version, UpdateAvailable: latest.Version != "", Breaking: breaking,
		NotesURL: latest.NotesURL, Notes: latest.Notes, CheckedAt: &now,
	}
	if skipped > 0 && (rs.skipped != skipped || rs.warned != "") {
		s.log.Warn("release feed lists invalid versions; they were skipped", zap.String("feed", s.cfg.ReleaseFeed), zap.Int("skipped", skipped))
	}
	rs.skipped, rs.warned = skipped, ""
	if latest.Version != "" && latest.Version != rs.announced {
		rs.announced = latest.Version
		s.log.Info("a newer coordinator is available", zap.String("current", s.cfg.Version),
			zap.String("latest", latest.Version), zap.Bool("breaking", breaking), zap.String("notes_url", latest.NotesURL))
	}
}

// fetchReleaseFeed reads and decodes the feed.
func (s *Server) fetchReleaseFeed(ctx context.Context) (ReleaseFeed, error) {
	src, err := parseReleaseSource(s.cfg.ReleaseFeed)
	if err != nil {
		return ReleaseFeed{}, err
	}
	var body []byte
	if src.file != "" {
		body, err = readReleaseFile(src.file)
	} else {
		body, err = fetchReleaseURL(ctx, src.url)
	}
	if err != nil {
		return ReleaseFeed{}, err
	}
	var feed ReleaseFeed
	if err := json.Unmarshal(body, &feed); err != nil {
		return ReleaseFeed{}, fmt.Errorf("release feed %s is not valid JSON: %w", s.cfg.ReleaseFeed, err)
	}
	if feed.Releases == nil {
		return ReleaseFeed{}, fmt.Errorf("release feed %s has no \"releases\" list", s.cfg.ReleaseFeed)
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
	ctx, cancel := context.WithTimeout(ctx, releaseFetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("read release feed: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	// One read every few hours: no connection is worth keeping open.
	tr := &http.Transport{Proxy: http.ProxyFromEnvironment, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: releaseFetchTimeout}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("read release feed: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("read release feed %s: HTTP %s", u, resp.Status)
	}
	return readReleaseBody(resp.Body, u)
}

// readReleaseBody reads at most maxReleaseFeed bytes and refuses more.
func readReleaseBody(r io.Reader, name string) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxReleaseFeed+1))
	if err != nil {
		return nil, fmt.Errorf("read release feed %s: %w", name, err)
	}
	if len(b) > maxReleaseFeed {
		return nil, fmt.Errorf("release feed %s is larger than %d bytes", name, maxReleaseFeed)
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
