package local

import (
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"hash"
	"io"
)

// BlockSize is the block size of the Qiniu etag.
const BlockSize = 4 << 20

// etagHasher computes the Qiniu etag of what is written to it:
// urlsafe_b64(0x16 + sha1(data)) for at most one 4 MiB block, else
// urlsafe_b64(0x96 + sha1(sha1(block1) + sha1(block2) + ...)).
type etagHasher struct {
	cur    hash.Hash // sha1 of the current block
	inBlk  int       // bytes in the current block
	digest []byte    // sha1s of the finished blocks, concatenated
	n      int64
}

func newEtagHasher() *etagHasher { return &etagHasher{cur: sha1.New()} }

func (e *etagHasher) nextBlock() {
	e.digest = e.cur.Sum(e.digest)
	e.cur.Reset()
	e.inBlk = 0
}

// Write never fails.
func (e *etagHasher) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if e.inBlk == BlockSize {
			e.nextBlock()
		}
		k := min(len(p), BlockSize-e.inBlk)
		e.cur.Write(p[:k])
		e.inBlk += k
		e.n += int64(k)
		p = p[k:]
	}
	return n, nil
}

// ETag returns the etag of everything written.
func (e *etagHasher) ETag() string {
	last := e.cur.Sum(nil)
	if len(e.digest) == 0 { // at most one block
		return base64.URLEncoding.EncodeToString(append([]byte{0x16}, last...))
	}
	all := append(append([]byte{}, e.digest...), last...)
	s := sha1.Sum(all)
	return base64.URLEncoding.EncodeToString(append([]byte{0x96}, s[:]...))
}

// ETag reads r to its end and returns its Qiniu etag (4 MiB blocks, sha1)
// and its size.
func ETag(r io.Reader) (string, int64, error) {
	h := newEtagHasher()
	if _, err := io.Copy(h, r); err != nil {
		return "", h.n, fmt.Errorf("etag: %w", err)
	}
	return h.ETag(), h.n, nil
}

// Hasher computes the Qiniu etag of a stream as it is written to it, for
// other origins (S3) that learn an object's etag while streaming it.
type Hasher struct{ h *etagHasher }

// NewHasher returns a Hasher that has seen no byte.
func NewHasher() *Hasher { return &Hasher{h: newEtagHasher()} }

// Write adds p to the stream; it never fails.
func (h *Hasher) Write(p []byte) (int, error) { return h.h.Write(p) }

// ETag returns the etag of everything written so far.
func (h *Hasher) ETag() string { return h.h.ETag() }

// Size returns how many bytes were written.
func (h *Hasher) Size() int64 { return h.h.n }
