package registry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	ggcr "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// ErrTooLarge is returned when a blob exceeds Config.MaxBlobBytes.
var ErrTooLarge = errors.New("registry: blob too large")

var hexRE = regexp.MustCompile(`^[a-f0-9]{64}$`)

// diskBlobs stores blobs content-addressed under <dir>/blobs/sha256/<hex>,
// and records which accounts uploaded each one under
// <dir>/links/<owner>/sha256/<hex>: an account may only read blobs it
// uploaded itself (knowing a digest is not enough to read someone else's
// layer). It implements pkg/registry's BlobHandler, BlobStatHandler and
// BlobPutHandler.
type diskBlobs struct {
	dir     string
	maxSize int64
	// syncFile and syncDir make a blob durable before a manifest can name
	// it: the content is synced before it is renamed to its address, and
	// the directory after (tests replace them to watch the order).
	syncFile func(*os.File) error
	syncDir  func(dir string) error
}

var (
	_ ggcr.BlobHandler     = (*diskBlobs)(nil)
	_ ggcr.BlobStatHandler = (*diskBlobs)(nil)
	_ ggcr.BlobPutHandler  = (*diskBlobs)(nil)
)

func newDiskBlobs(dir string, maxSize int64) (*diskBlobs, error) {
	for _, d := range []string{"blobs/sha256", "links", "uploads"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return nil, fmt.Errorf("registry dir: %w", err)
		}
	}
	// Uploads in progress do not survive a restart.
	tmp, _ := filepath.Glob(filepath.Join(dir, "uploads", "*"))
	for _, p := range tmp {
		os.Remove(p)
	}
	return &diskBlobs{dir: dir, maxSize: maxSize, syncFile: (*os.File).Sync, syncDir: syncDir}, nil
}

// syncDir fsyncs a directory, making the renames and creations in it
// durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func checkHash(h v1.Hash) error {
	if h.Algorithm != "sha256" || !hexRE.MatchString(h.Hex) {
		return fmt.Errorf("unsupported digest %s: %w", h, ggcr.ErrNotFound)
	}
	return nil
}

func (b *diskBlobs) blobPath(h v1.Hash) string {
	return filepath.Join(b.dir, "blobs", "sha256", h.Hex)
}

func (b *diskBlobs) linkPath(owner string, h v1.Hash) string {
	return filepath.Join(b.dir, "links", owner, "sha256", h.Hex)
}

// ownerOf is the account id that a repository ("<owner>/<name>") belongs to.
func ownerOf(repo string) string {
	owner, _, _ := strings.Cut(repo, "/")
	return owner
}

// visible checks that the blob exists and that repo's owner uploaded it.
func (b *diskBlobs) visible(repo string, h v1.Hash) (os.FileInfo, error) {
	if err := checkHash(h); err != nil {
		return nil, err
	}
	owner := ownerOf(repo)
	if !validOwner(owner) {
		return nil, ggcr.ErrNotFound
	}
	if _, err := os.Stat(b.linkPath(owner, h)); err != nil {
		return nil, ggcr.ErrNotFound
	}
	st, err := os.Stat(b.blobPath(h))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ggcr.ErrNotFound
	}
	return st, err
}

// Stat returns the size of a blob repo's owner may read.
func (b *diskBlobs) Stat(_ context.Context, repo string, h v1.Hash) (int64, error) {
	st, err := b.visible(repo, h)
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// Get opens a blob repo's owner may read.
func (b *diskBlobs) Get(_ context.Context, repo string, h v1.Hash) (io.ReadCloser, error) {
	return b.open(repo, h)
}

// open opens a blob repo's owner may read; ggcr.ErrNotFound when there is
// none.
func (b *diskBlobs) open(repo string, h v1.Hash) (*os.File, error) {
	if _, err := b.visible(repo, h); err != nil {
		return nil, err
	}
	f, err := os.Open(b.blobPath(h))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ggcr.ErrNotFound
	}
	return f, err
}

// Put stores rc (which pkg/registry verifies against h as it is read) and
// links it to repo's owner once it has been read completely.
func (b *diskBlobs) Put(_ context.Context, repo string, h v1.Hash, rc io.ReadCloser) error {
	defer rc.Close()
	if err := checkHash(h); err != nil {
		return err
	}
	f, err := b.newUpload()
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	n, err := io.Copy(f, io.LimitReader(rc, b.maxSize+1))
	if err == nil && n > b.maxSize {
		err = fmt.Errorf("%w: more than %d bytes", ErrTooLarge, b.maxSize)
	}
	if err != nil {
		f.Close()
		return err
	}
	return b.commit(repo, h, f)
}

// newUpload creates a temporary file in the uploads directory.
func (b *diskBlobs) newUpload() (*os.File, error) {
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	return os.OpenFile(filepath.Join(b.dir, "uploads", hex.EncodeToString(rnd[:])), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
}

// commit syncs and closes a verified temporary file, moves it to its
// content address (keeping an existing copy), syncs that directory, and
// links the blob to repo's owner. The content is on disk before its name
// is: after a power loss a blob HEAD reports present is never empty or
// cut (a client would not push it again, and a manifest saved after it
// would name broken content).
func (b *diskBlobs) commit(repo string, h v1.Hash, f *os.File) error {
	tmp := f.Name()
	err := b.syncFile(f)
	if cerr := f.Close(); err == nil && !errors.Is(cerr, os.ErrClosed) {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("store blob %s: %w", h, err)
	}
	owner := ownerOf(repo)
	if !validOwner(owner) {
		return fmt.Errorf("repository %q has no owner", repo)
	}
	dst := b.blobPath(h)
	if _, err := os.Stat(dst); errors.Is(err, os.ErrNotExist) {
		if err := os.Rename(tmp, dst); err != nil {
			return fmt.Errorf("store blob %s: %w", h, err)
		}
	}
	// Synced even when another upload stored the blob first: it may not
	// have synced the directory yet.
	if err := b.syncDir(filepath.Dir(dst)); err != nil {
		return fmt.Errorf("store blob %s: %w", h, err)
	}
	link := b.linkPath(owner, h)
	if _, err := os.Stat(link); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(link), 0o700); err != nil {
		return err
	}
	lf, err := os.OpenFile(link, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("link blob %s: %w", h, err)
	}
	if err := lf.Close(); err != nil {
		return fmt.Errorf("link blob %s: %w", h, err)
	}
	// links/<owner>/sha256/<hex>: the link, and the directories MkdirAll
	// may have just made.
	for d := filepath.Dir(link); d != filepath.Dir(b.dir); d = filepath.Dir(d) {
		if err := b.syncDir(d); err != nil {
			return fmt.Errorf("link blob %s: %w", h, err)
		}
		if d == filepath.Join(b.dir, "links") {
			break
		}
	}
	return nil
}

// readBlob reads a whole (small) blob, for manifests.
func (b *diskBlobs) readBlob(h v1.Hash, limit int64) ([]byte, error) {
	if err := checkHash(h); err != nil {
		return nil, err
	}
	f, err := os.Open(b.blobPath(h))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, limit))
}
