package sqlstore

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"

	"github.com/tendrildeploy/tendril/server/store"
)

// checkedReader reads exactly the blob's size from r and fails at the end
// unless its SHA-256 is the blob's, so a store never keeps a blob that is
// not what it claims to be.
type checkedReader struct {
	r io.Reader
	b store.Blob
	h hash.Hash
	n int64
}

func newCheckedReader(r io.Reader, b store.Blob) *checkedReader {
	return &checkedReader{r: io.LimitReader(r, b.Size+1), b: b, h: sha256.New()}
}

func (c *checkedReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	if c.n > c.b.Size {
		return n, fmt.Errorf("blob %s: more than %d bytes", c.b.Key, c.b.Size)
	}
	if err == io.EOF {
		if c.n != c.b.Size {
			return n, fmt.Errorf("blob %s: got %d bytes, want %d", c.b.Key, c.n, c.b.Size)
		}
		if sum := hex.EncodeToString(c.h.Sum(nil)); sum != c.b.SHA256 {
			return n, fmt.Errorf("blob %s: SHA-256 is %s, want %s", c.b.Key, sum, c.b.SHA256)
		}
	}
	return n, err
}
