package diag

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/tendrildeploy/tendril/certs"
)

// Certificate is what an archive says of a certificate file: never the
// file, and never a key, only what identifies the certificate and when
// it expires.
type Certificate struct {
	File       string    `json:"file"`
	Subject    string    `json:"subject,omitempty"`
	Issuer     string    `json:"issuer,omitempty"`
	Thumbprint string    `json:"thumbprint,omitempty"`
	NotBefore  time.Time `json:"not_before,omitzero"`
	NotAfter   time.Time `json:"not_after,omitzero"`
	Expired    bool      `json:"expired,omitempty"`
	// Error says why the file is not a readable certificate.
	Error string `json:"error,omitempty"`
}

// DescribeCertificate reads the first PEM CERTIFICATE block of the file
// at path. A file that is not one is described by its Error; nothing of
// its content is kept.
func DescribeCertificate(path string, now time.Time) Certificate {
	c := Certificate{File: filepath.Base(path)}
	b, err := os.ReadFile(path)
	if err != nil {
		c.Error = err.Error()
		return c
	}
	var block *pem.Block
	for rest := b; ; {
		block, rest = pem.Decode(rest)
		if block == nil || block.Type == "CERTIFICATE" {
			break
		}
	}
	if block == nil {
		c.Error = "no PEM CERTIFICATE block"
		return c
	}
	x, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		c.Error = fmt.Sprintf("parse certificate: %v", err)
		return c
	}
	c.Subject, c.Issuer = x.Subject.String(), x.Issuer.String()
	c.Thumbprint = certs.Thumbprint(x.Raw)
	c.NotBefore, c.NotAfter = x.NotBefore.UTC(), x.NotAfter.UTC()
	c.Expired = now.After(x.NotAfter)
	return c
}

// FileInfo is what an archive says of a file it does not copy: a private
// key, a database. Its mode matters: the agent refuses files others can
// write.
type FileInfo struct {
	Name     string    `json:"name"`
	Dir      bool      `json:"dir,omitempty"`
	Size     int64     `json:"size"`
	Mode     string    `json:"mode"`
	Modified time.Time `json:"modified"`
}

// ListDir describes the entries of dir, sorted by name, without reading
// any of them. A missing folder is fs.ErrNotExist.
func ListDir(dir string) ([]FileInfo, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := []FileInfo{}
	var errs []error
	for _, e := range entries {
		st, err := e.Info()
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) { // removed since the listing
				errs = append(errs, err)
			}
			continue
		}
		out = append(out, FileInfo{Name: e.Name(), Dir: st.IsDir(), Size: st.Size(), Mode: st.Mode().String(), Modified: st.ModTime().UTC()})
	}
	slices.SortFunc(out, func(a, b FileInfo) int { return strings.Compare(a.Name, b.Name) })
	return out, errors.Join(errs...)
}
