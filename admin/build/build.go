// Package build turns an uploaded program package (a tar.gz of a directory
// holding ufop.yaml) into a runnable directory: Unpack validates and extracts
// the upload into a staging directory ($RESOURCE), Build runs the
// build_script lines in a fresh working directory and, only when every line
// succeeds, makes it the result directory that runtimes copy for each
// instance (`ufop.yaml`, docs/first-ufop.md; seed 001).
//
// Layout under the builder's root, per ufop and build number n:
//
//	<root>/<ufop>/<n>/resource/   the unpacked upload ($RESOURCE); removed after Build
//	<root>/<ufop>/<n>/result/     the working directory of a successful build (Dir)
//	<root>/<ufop>/<n>/build.log   every line's output (LogPath), capped at MaxLogBytes
//	<root>/<ufop>/<n>/build.id    the id UnpackAs was given (none for Unpack): whose files these are (Owns)
//
// build_script lines are the package owner's code, not the platform's: they
// see only an allowlisted environment (PATH, locale, time zone, the Go
// toolchain's settings, never tokens or keys) with HOME and TMPDIR in a
// private directory beside the working directory, and with Config.RunAs
// they run as another user (e.g. nobody) that cannot read the platform's
// data directory; the finished result is then sealed (given back to the
// platform's user, read-only for others) so no later user code changes it.
//
//	<root>/<ufop>/<n>/home.tmp-*/  the build's HOME, TMPDIR and (by default)
//	                               Go build cache; removed after Build
package build

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/ctxio"
	"github.com/doraproject/dora/internal/procsweep"
	"gopkg.in/yaml.v3"
)

// ErrBadPackage is wrapped by every error about the upload itself: a bad
// tar.gz, unsafe paths or links, no ufop.yaml, a bad ufop.yaml, too large.
var ErrBadPackage = errors.New("bad package")

// ErrStorage is wrapped by every error of the server's own disk while
// unpacking (a full disk or quota, an I/O error: ENOSPC, EDQUOT, EIO stay
// wrapped too): the package is not to blame, and such an error never
// wraps ErrBadPackage.
var ErrStorage = errors.New("server storage error")

// ErrNoBuild is returned when a build's result directory does not exist.
var ErrNoBuild = errors.New("no such successful build")

// Limits.
const (
	// DefaultMaxBytes bounds an upload's unpacked size when Unpack is given
	// maxBytes <= 0.
	DefaultMaxBytes = 1 << 30
	// MaxEntries bounds the number of tar entries of an upload.
	MaxEntries = 100000
	// MaxUfopYAML bounds ufop.yaml's size.
	MaxUfopYAML = 64 << 10
	// MaxLogBytes bounds build.log; later output is dropped with a note.
	MaxLogBytes = 8 << 20
	// MaxBuildLines bounds build_script's length.
	MaxBuildLines = 200
)

// UfopYAML is ufop.yaml: the base image, the build script, the run command.
type UfopYAML struct {
	// Image is the base: "ubuntu" (an empty base) or an earlier build such
	// as "test.v7", whose result directory the caller passes to Build.
	Image string `yaml:"image"`
	// BuildScript lines run in order with /bin/sh -c in the working dir.
	BuildScript []string `yaml:"build_script"`
	// Run is the shell command that starts the program in the working dir.
	Run string `yaml:"run"`
	// Protocol is the instance protocol the program speaks: "ufop" (POST
	// /uop, the default for program packages: seed 001's generation) or
	// "dora" (POST /handler). Optional; `ufopver --protocol` overrides it.
	Protocol string `yaml:"protocol,omitempty"`
	// BodyLimit and Cache are dora.yaml's body_limit and cache, carried
	// into the release ufopver makes (dora.Release.BodyLimit, Cache).
	BodyLimit int64          `yaml:"body_limit,omitempty"`
	Cache     *UfopYAMLCache `yaml:"cache,omitempty"`
	// CacheTTL is Cache.TTL parsed (set by ParseUfopYAML).
	CacheTTL time.Duration `yaml:"-"`
}

// UfopYAMLCache is ufop.yaml's cache: {enabled: true, ttl: "10m"}; a bare
// number of seconds is accepted for ttl.
type UfopYAMLCache struct {
	Enabled bool   `yaml:"enabled"`
	TTL     string `yaml:"ttl,omitempty"`
}

// ParseUfopYAML reads ufop.yaml strictly: unknown fields, a missing image or
// run, a build_script that is not a list of strings are errors wrapping
// ErrBadPackage.
func ParseUfopYAML(b []byte) (UfopYAML, error) {
	var u UfopYAML
	if len(b) > MaxUfopYAML {
		return u, fmt.Errorf("%w: ufop.yaml larger than %d bytes", ErrBadPackage, MaxUfopYAML)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&u); err != nil {
		if errors.Is(err, io.EOF) {
			return u, fmt.Errorf("%w: ufop.yaml is empty", ErrBadPackage)
		}
		return u, fmt.Errorf("%w: ufop.yaml: %v", ErrBadPackage, err)
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return u, fmt.Errorf("%w: ufop.yaml: more than one document", ErrBadPackage)
	}
	u.Image = strings.TrimSpace(u.Image)
	u.Run = strings.TrimSpace(u.Run)
	var problems []string
	if u.Image == "" {
		problems = append(problems, "image is required")
	}
	if u.Run == "" {
		problems = append(problems, "run is required")
	}
	if len(u.BuildScript) > MaxBuildLines {
		problems = append(problems, fmt.Sprintf("build_script has more than %d lines", MaxBuildLines))
	}
	for i, l := range u.BuildScript {
		if strings.TrimSpace(l) == "" {
			problems = append(problems, fmt.Sprintf("build_script line %d is empty", i+1))
		}
		if strings.ContainsRune(l, 0) {
			problems = append(problems, fmt.Sprintf("build_script line %d holds a NUL", i+1))
		}
	}
	if strings.ContainsRune(u.Run, 0) {
		problems = append(problems, "run holds a NUL")
	}
	u.Protocol = strings.ToLower(strings.TrimSpace(u.Protocol))
	switch u.Protocol {
	case "", "dora", "ufop":
	default:
		problems = append(problems, fmt.Sprintf("protocol %q: must be dora or ufop", u.Protocol))
	}
	if u.BodyLimit < -1 || u.BodyLimit > dora.MaxBodyLimit {
		problems = append(problems, fmt.Sprintf("body_limit %d: must be -1 (never), 0 (default) or up to %d bytes", u.BodyLimit, dora.MaxBodyLimit))
	}
	if c := u.Cache; c != nil && strings.TrimSpace(c.TTL) != "" {
		t := strings.TrimSpace(c.TTL)
		if _, err := strconv.ParseFloat(t, 64); err == nil {
			t += "s"
		}
		d, err := time.ParseDuration(t)
		if err != nil || d < 0 || d > dora.MaxCacheTTL {
			problems = append(problems, fmt.Sprintf("cache.ttl %q: a duration from 0 to %s", c.TTL, dora.MaxCacheTTL))
		}
		u.CacheTTL = d
	}
	if len(problems) > 0 {
		return u, fmt.Errorf("%w: ufop.yaml: %s", ErrBadPackage, strings.Join(problems, "; "))
	}
	return u, nil
}

// Builder unpacks and builds program packages under one root directory.
// Builds of different (ufop, n) may run concurrently.
type Builder struct {
	root string
	// Env, when set, replaces os.Environ as the source of the variables
	// build_script lines may see (only allowlisted ones pass).
	Env     []string
	runAs   *User
	goCache string
	// owner marks the build lines' processes (internal/procsweep).
	owner string
	// watchOnce starts watchErr's watchdog at the first build: it kills
	// the build lines' processes (and removes the half builds) when this
	// process dies.
	watchOnce sync.Once
	watchErr  error
	// spawner starts build lines from a thread that never ends
	// (Pdeathsig follows the forking thread); made with the watchdog.
	spawner *procsweep.Spawner
	mu      sync.Mutex
	// busy holds the (ufop, n) pairs being unpacked or built.
	busy map[string]bool
	// doomed holds the busy pairs Remove could not delete: their
	// directories go when they are released.
	doomed map[string]bool
	// create creates an unpacked file (createFile; tests make it fail as
	// a full disk does).
	create func(path string, perm os.FileMode) (io.WriteCloser, error)
}

// createFile creates a new file for writing, failing if it exists.
func createFile(path string, perm os.FileMode) (io.WriteCloser, error) {
	return os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, perm)
}

// Config configures a Builder made by NewWithConfig.
type Config struct {
	// Root holds every upload, build log and result (required; created
	// with mode 0711 when missing).
	Root string
	// RunAs, when non-nil, is the user every build_script line runs as
	// (the platform must be root): the working directory, $RESOURCE and
	// the private HOME are given to it, and Root's ancestors must let it
	// through (checked here). Nil runs lines as the platform's own user.
	RunAs *User
	// GoCache, when non-empty, is a Go build cache directory shared by all
	// builds (created 0700 and given to RunAs). Empty: with RunAs, each
	// build gets a fresh private cache (slow: the standard library is
	// compiled every time); without RunAs, the platform's own GOCACHE.
	// A shared cache is writable by every account's build script, so one
	// account could plant compiled code another's build picks up: share it
	// only where all accounts trust each other (a developer's platform).
	GoCache string
	// Env, when non-nil, replaces os.Environ as the source of allowlisted
	// variables.
	Env []string
}

// New returns a Builder keeping its files under root (created if missing),
// running build lines as the platform's own user.
func New(root string) (*Builder, error) {
	return NewWithConfig(Config{Root: root})
}

// NewWithConfig returns a Builder configured by cfg.
func NewWithConfig(cfg Config) (*Builder, error) {
	if cfg.Root == "" {
		return nil, errors.New("build: root directory is required")
	}
	abs, err := filepath.Abs(cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("build: root %s: %w", cfg.Root, err)
	}
	if err := ensureDir(abs, 0o711); err != nil {
		return nil, fmt.Errorf("build: root %s: %w", cfg.Root, err)
	}
	if err := CheckReachable(abs, cfg.RunAs); err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	b := &Builder{root: abs, Env: cfg.Env, runAs: cfg.RunAs, busy: map[string]bool{}, doomed: map[string]bool{},
		owner: procsweep.Owner("build", abs), create: createFile}
	// Processes of build lines an earlier process started and did not
	// outlive (a kill -9): the lines' shells died with it, but their
	// background children and anything that left the process group did
	// not. None of ours runs yet.
	_, _ = procsweep.Sweep(b.owner)
	b.removeLeftovers()
	if cfg.GoCache != "" {
		if b.goCache, err = filepath.Abs(cfg.GoCache); err != nil {
			return nil, fmt.Errorf("build: go cache %s: %w", cfg.GoCache, err)
		}
		if err := os.MkdirAll(filepath.Dir(b.goCache), 0o711); err != nil {
			return nil, fmt.Errorf("build: go cache %s: %w", cfg.GoCache, err)
		}
		if err := ensureDir(b.goCache, 0o700); err != nil {
			return nil, fmt.Errorf("build: go cache %s: %w", cfg.GoCache, err)
		}
		if err := ChownTree(b.goCache, cfg.RunAs); err != nil {
			return nil, fmt.Errorf("build: go cache: %w", err)
		}
		if err := CheckReachable(b.goCache, cfg.RunAs); err != nil {
			return nil, fmt.Errorf("build: go cache: %w", err)
		}
	}
	return b, nil
}

// RunAs is the user build lines run as; nil for the platform's own.
func (b *Builder) RunAs() *User { return b.runAs }

func (b *Builder) base(ufop string, n int) string {
	return filepath.Join(b.root, ufop, strconv.Itoa(n))
}

// Dir is the result directory of build n of ufop: the working directory
// template instances are started in.
func (b *Builder) Dir(ufop string, n int) string { return filepath.Join(b.base(ufop, n), "result") }

// Has reports whether build n of ufop's result is on this host (another
// admin's builds are not).
func (b *Builder) Has(ufop string, n int) bool {
	if checkName(ufop, n) != nil {
		return false
	}
	fi, err := os.Stat(b.Dir(ufop, n))
	return err == nil && fi.IsDir()
}

// LogPath is build n's log file.
func (b *Builder) LogPath(ufop string, n int) string {
	return filepath.Join(b.base(ufop, n), "build.log")
}

func (b *Builder) resourceDir(ufop string, n int) string {
	return filepath.Join(b.base(ufop, n), "resource")
}

func checkName(ufop string, n int) error {
	if err := dora.ValidateUfopName(ufop); err != nil {
		return fmt.Errorf("build: %w", err)
	}
	if n < 1 {
		return fmt.Errorf("build: %s: build number %d must be positive", ufop, n)
	}
	return nil
}

// claim marks (ufop, n) busy so two callers never share its directories.
func (b *Builder) claim(ufop string, n int) (release func(), err error) {
	key := ufop + "/" + strconv.Itoa(n)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.busy[key] {
		return nil, fmt.Errorf("build %s.v%d: already in progress", ufop, n)
	}
	b.busy[key] = true
	return func() {
		b.mu.Lock()
		delete(b.busy, key)
		var trash string
		if b.doomed[key] {
			delete(b.doomed, key)
			trash, _ = b.moveToTrash(filepath.Join(b.root, ufop), []string{strconv.Itoa(n)})
			os.Remove(filepath.Join(b.root, ufop)) // only when it was the last
		}
		b.mu.Unlock()
		if trash != "" {
			_ = removeTree(trash) // best effort: NewWithConfig retries leftovers
		}
	}, nil
}

// Unpack validates and extracts a tar.gz upload into build n's staging
// directory ($RESOURCE), replacing any earlier one, and returns its parsed
// ufop.yaml. Absolute paths, ".." components, links leaving the tree, a hard
// link to itself, names too long for the file system, device
// files and FIFOs, more than maxBytes of file content (DefaultMaxBytes when
// maxBytes <= 0), more than MaxEntries entries and a missing or invalid
// ufop.yaml at the root are rejected with errors wrapping ErrBadPackage;
// nothing is left behind then. A failure of the server's own disk (full,
// over quota, an I/O error) wraps ErrStorage instead, and a cancelled ctx
// its error.
func (b *Builder) Unpack(ctx context.Context, ufop string, n int, tarGz io.Reader, maxBytes int64) (UfopYAML, error) {
	return b.UnpackAs(ctx, ufop, n, "", tarGz, maxBytes)
}

// idFile, in a build's directory, holds the id UnpackAs was given.
const idFile = "build.id"

// UnpackAs is Unpack for the build named id (unique to it, e.g. its
// record's): this host's files of build n of ufop become id's (Owns), and
// those of another build numbered the same, an earlier ufop of that name
// (its log, result and id), are removed first. Unpack is UnpackAs with
// the id "". id is at most 64 URL-safe characters.
func (b *Builder) UnpackAs(ctx context.Context, ufop string, n int, id string, tarGz io.Reader, maxBytes int64) (UfopYAML, error) {
	if err := checkName(ufop, n); err != nil {
		return UfopYAML{}, err
	}
	if err := checkID(id); err != nil {
		return UfopYAML{}, err
	}
	release, err := b.claim(ufop, n)
	if err != nil {
		return UfopYAML{}, err
	}
	defer release()
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	if err := b.disown(ufop, n, id); err != nil {
		return UfopYAML{}, fmt.Errorf("unpack %s.v%d: %w: remove the files of another build: %w", ufop, n, ErrStorage, err)
	}
	u, err := b.unpack(ctx, ufop, n, tarGz, maxBytes)
	if err == nil && id != "" {
		err = writeID(filepath.Join(b.base(ufop, n), idFile), id)
	}
	if err != nil {
		return UfopYAML{}, fmt.Errorf("unpack %s.v%d: %w", ufop, n, storageError(err))
	}
	return u, nil
}

// checkID refuses an id that could not be a file's content on one line.
func checkID(id string) error {
	if len(id) > 64 {
		return fmt.Errorf("build: id of %d bytes, over 64", len(id))
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("build: id %q: only letters, digits, - and _", id)
		}
	}
	return nil
}

// disown removes the log, result and id of build n of ufop when they are
// not id's (the caller claimed the build), so that no file of another
// build is taken for id's.
func (b *Builder) disown(ufop string, n int, id string) error {
	got, err := b.readID(ufop, n)
	if err != nil {
		return err
	}
	if got == id {
		return nil
	}
	// The id goes first: whatever is left after a failure is nobody's.
	for _, p := range []string{filepath.Join(b.base(ufop, n), idFile), b.LogPath(ufop, n)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return removeTree(b.Dir(ufop, n))
}

// readID is the id build n of ufop was unpacked as: "" when it has none
// (Unpack, or nothing on this host).
func (b *Builder) readID(ufop string, n int) (string, error) {
	raw, err := readCapped(filepath.Join(b.base(ufop, n), idFile), 64)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return string(raw), nil
}

// writeID writes id to path through a temporary file renamed into place.
func writeID(path, id string) error {
	f, err := os.CreateTemp(filepath.Dir(path), idFile+".tmp-")
	if err != nil {
		return err
	}
	_, err = f.WriteString(id)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// Owns reports whether this host's files of build n of ufop (its log and
// result) are those of the build named id: unpacked by UnpackAs with id
// (Unpack: ""). With several admins, a ufop deleted through another one
// leaves this host's files of its builds, which a later ufop of the same
// name, numbering its builds from 1 again, must not take for its own:
// when they are another build's, and no build of (ufop, n) is being
// unpacked or run here, Owns removes them, so that Has, Dir and LogPath
// then name nothing, as for a build of another host. It removes nothing
// when id is "" (a record written before builds had ids, or rewritten by
// an admin of that version while this one ran it): such a record names
// no build that proves the files another's, so they are only not its.
func (b *Builder) Owns(ufop string, n int, id string) bool {
	if checkName(ufop, n) != nil || checkID(id) != nil {
		return false
	}
	b.mu.Lock()
	got, err := b.readID(ufop, n)
	if err != nil || got == id || id == "" {
		b.mu.Unlock()
		return err == nil && got == id
	}
	var trash string
	if _, serr := os.Lstat(b.base(ufop, n)); serr == nil && !b.busy[ufop+"/"+strconv.Itoa(n)] {
		trash, _ = b.moveToTrash(filepath.Join(b.root, ufop), []string{strconv.Itoa(n)})
	}
	b.mu.Unlock()
	if trash != "" {
		_ = removeTree(trash) // best effort: NewWithConfig retries leftovers
	}
	return false
}

// storageError marks err as the server's: any error of an unpack but the
// package's own (ErrBadPackage, which also carries the upload's read
// errors) and a cancellation is a failure of the disk being written.
func storageError(err error) error {
	if errors.Is(err, ErrBadPackage) || errors.Is(err, ErrStorage) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrStorage, err)
}

func (b *Builder) unpack(ctx context.Context, ufop string, n int, tarGz io.Reader, maxBytes int64) (UfopYAML, error) {
	base := b.base(ufop, n)
	if err := os.MkdirAll(filepath.Dir(base), 0o711); err != nil {
		return UfopYAML{}, err
	}
	// Traverse only: user code reaches its own working dir and $RESOURCE
	// by name, never lists or writes the build's own files (build.log).
	if err := os.MkdirAll(base, 0o711); err != nil {
		return UfopYAML{}, err
	}
	tmp, err := os.MkdirTemp(base, "resource.tmp-")
	if err != nil {
		return UfopYAML{}, err
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(tmp)
		}
	}()
	if err := extract(ctx, tarGz, tmp, maxBytes, b.create); err != nil {
		return UfopYAML{}, err
	}
	fi, err := os.Lstat(filepath.Join(tmp, "ufop.yaml"))
	if errors.Is(err, fs.ErrNotExist) || err == nil && !fi.Mode().IsRegular() {
		return UfopYAML{}, fmt.Errorf("%w: no ufop.yaml file at the root of the package", ErrBadPackage)
	}
	if err != nil {
		return UfopYAML{}, err
	}
	raw, err := readCapped(filepath.Join(tmp, "ufop.yaml"), MaxUfopYAML)
	if err != nil {
		return UfopYAML{}, err
	}
	u, err := ParseUfopYAML(raw)
	if err != nil {
		return UfopYAML{}, err
	}
	dst := b.resourceDir(ufop, n)
	if err := removeTree(dst); err != nil {
		return UfopYAML{}, err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return UfopYAML{}, err
	}
	ok = true
	return u, nil
}

func readCapped(p string, max int64) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(raw)) > max {
		return nil, fmt.Errorf("%w: %s larger than %d bytes", ErrBadPackage, filepath.Base(p), max)
	}
	return raw, nil
}

// cleanName validates a tar entry name and returns it as a clean relative
// slash path ("" for the root itself).
func cleanName(name string) (string, error) {
	if name == "" || strings.ContainsRune(name, 0) {
		return "", fmt.Errorf("%w: empty or NUL in entry name %q", ErrBadPackage, name)
	}
	if strings.HasPrefix(name, "/") || strings.Contains(name, "\\") {
		return "", fmt.Errorf("%w: absolute or backslash path %q", ErrBadPackage, name)
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", fmt.Errorf("%w: path %q has a .. component", ErrBadPackage, name)
		}
	}
	c := path.Clean(name)
	if c == "." {
		return "", nil
	}
	return c, nil
}

// extract unpacks a gzip'ed tar into dir (which exists and is empty),
// creating files with create. Errors reading r wrap ErrBadPackage (or are
// ctx's); a file's failed write or close wraps ErrStorage.
func extract(ctx context.Context, r io.Reader, dir string, maxBytes int64, create func(string, os.FileMode) (io.WriteCloser, error)) error {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return readError("not gzip", err)
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	var total int64
	var links []string // symlinks created, checked again once all exist
	for entries := 0; ; entries++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		if entries >= MaxEntries {
			return fmt.Errorf("%w: more than %d entries", ErrBadPackage, MaxEntries)
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return readError("tar", err)
		}
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		name, err := cleanName(hdr.Name)
		if err != nil {
			return err
		}
		if name == "" {
			if hdr.Typeflag == tar.TypeDir {
				continue
			}
			return fmt.Errorf("%w: entry %q names the root", ErrBadPackage, hdr.Name)
		}
		target := filepath.Join(dir, filepath.FromSlash(name))
		if err := checkLength(name, target); err != nil {
			return err
		}
		if err := safeParent(dir, name); err != nil {
			return err
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if fi, err := os.Lstat(target); err == nil {
				if !fi.IsDir() {
					return fmt.Errorf("%w: %q is both a directory and not", ErrBadPackage, name)
				}
				continue
			}
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
		case tar.TypeReg, tar.TypeRegA: //nolint:staticcheck // old archives use TypeRegA
			if hdr.Size < 0 || hdr.Size > maxBytes-total {
				return fmt.Errorf("%w: more than %d bytes unpacked", ErrBadPackage, maxBytes)
			}
			if err := removeNonDir(target, name); err != nil {
				return err
			}
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			f, err := create(target, fileMode(hdr.Mode))
			if err != nil {
				return err
			}
			// A failed write is the disk's (ENOSPC, EDQUOT, EIO), a failed
			// read the upload's.
			fw := &errWriter{w: f}
			n, err := io.Copy(fw, io.LimitReader(ctxio.Reader(ctx, tr), hdr.Size))
			cerr := f.Close()
			switch {
			case fw.err != nil:
				return fmt.Errorf("%w: writing %s: %w", ErrStorage, name, fw.err)
			case err != nil:
				return readError(name, err)
			case cerr != nil:
				return fmt.Errorf("%w: writing %s: %w", ErrStorage, name, cerr)
			}
			if n != hdr.Size {
				return fmt.Errorf("%w: %s: truncated", ErrBadPackage, name)
			}
			total += n
		case tar.TypeSymlink:
			if err := checkLinkTarget(name, hdr.Linkname); err != nil {
				return err
			}
			if err := removeNonDir(target, name); err != nil {
				return err
			}
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			if err := os.Symlink(hdr.Linkname, target); err != nil {
				return err
			}
			links = append(links, target)
		case tar.TypeLink:
			src, err := cleanName(hdr.Linkname)
			if err != nil || src == "" {
				return fmt.Errorf("%w: hard link %q -> %q leaves the tree", ErrBadPackage, name, hdr.Linkname)
			}
			if src == name {
				return fmt.Errorf("%w: hard link %q to itself", ErrBadPackage, name)
			}
			if err := safeParent(dir, src); err != nil {
				return err
			}
			srcPath := filepath.Join(dir, filepath.FromSlash(src))
			fi, err := os.Lstat(srcPath)
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			if err != nil || !fi.Mode().IsRegular() {
				return fmt.Errorf("%w: hard link %q -> %q: target is not an earlier regular file", ErrBadPackage, name, hdr.Linkname)
			}
			if err := removeNonDir(target, name); err != nil {
				return err
			}
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			if err := os.Link(srcPath, target); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%w: %q: unsupported entry type %q (devices, FIFOs and sockets are refused)", ErrBadPackage, name, string(hdr.Typeflag))
		}
	}
	// A chain of links can escape although each target looks lexically
	// inside (a -> ., b -> a/..): resolve every link that resolves.
	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return err
	}
	for _, l := range links {
		res, err := filepath.EvalSymlinks(l)
		if err != nil {
			continue // dangling or a loop: it cannot reach outside today
		}
		if !Within(realDir, res) {
			rel, _ := filepath.Rel(dir, l)
			return fmt.Errorf("%w: symlink %q resolves outside the package", ErrBadPackage, filepath.ToSlash(rel))
		}
	}
	return nil
}

// errWriter keeps the first error of its writer.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	n, err := e.w.Write(p)
	if err != nil && e.err == nil {
		e.err = err
	}
	return n, err
}

// readError reports a failed read of the upload at what: a bad package,
// except when the context ended; the cause stays wrapped either way, so a
// caller's body limit (http.MaxBytesError) or cancellation is recognised.
func readError(what string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", what, err)
	}
	return fmt.Errorf("%w: %s: %w", ErrBadPackage, what, err)
}

// Linux's limits on a name (NAME_MAX) and on a path or a symlink's target
// (PATH_MAX, with its NUL).
const (
	maxName = 255
	maxPath = 4096
)

// checkLength refuses an entry whose name the file system would refuse
// (ENAMETOOLONG): a component longer than maxName bytes, or a path under
// the unpacking directory (target) of maxPath bytes or more.
func checkLength(name, target string) error {
	short := name
	if len(short) > 64 {
		short = short[:64] + "..."
	}
	if len(target) >= maxPath {
		return fmt.Errorf("%w: %q: path too long", ErrBadPackage, short)
	}
	for _, part := range strings.Split(name, "/") {
		if len(part) > maxName {
			return fmt.Errorf("%w: %q: name too long (over %d bytes)", ErrBadPackage, short, maxName)
		}
	}
	return nil
}

// checkLinkTarget rejects a symlink whose target is absolute or climbs out
// of the tree, judged lexically from the link's directory.
func checkLinkTarget(name, target string) error {
	if target == "" || strings.ContainsRune(target, 0) || path.IsAbs(target) {
		return fmt.Errorf("%w: symlink %q -> %q leaves the tree", ErrBadPackage, name, target)
	}
	if len(target) >= maxPath {
		return fmt.Errorf("%w: symlink %q: target too long", ErrBadPackage, name)
	}
	joined := path.Join(path.Dir(name), target)
	if joined == ".." || strings.HasPrefix(joined, "../") {
		return fmt.Errorf("%w: symlink %q -> %q leaves the tree", ErrBadPackage, name, target)
	}
	return nil
}

// safeParent refuses to write below an existing symlink: every existing
// ancestor of name inside dir must be a real directory, so extraction never
// writes through a link.
func safeParent(dir, name string) error {
	parts := strings.Split(name, "/")
	p := dir
	for _, part := range parts[:len(parts)-1] {
		p = filepath.Join(p, part)
		fi, err := os.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			return fmt.Errorf("%w: %q lies below a non-directory (%s)", ErrBadPackage, name, part)
		}
	}
	return nil
}

// removeNonDir clears a path before a file or link replaces it; a later
// entry overrides an earlier one as tar does, but never a directory.
func removeNonDir(target, name string) error {
	fi, err := os.Lstat(target)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return fmt.Errorf("%w: %q is both a directory and not", ErrBadPackage, name)
	}
	return os.Remove(target)
}

// fileMode keeps the permission bits, without setuid/setgid/sticky, and
// always lets the owner read and write.
func fileMode(m int64) os.FileMode {
	return os.FileMode(m)&0o777 | 0o600
}

// Build runs build n's build_script in a fresh working directory (a copy of
// baseDir when non-empty, the result of an earlier build named by ufop.yaml's
// image, else empty), each line with /bin/sh -c, RESOURCE set to the
// unpacked upload and PWD to the working directory. Every line is logged as
// "$ <line>" followed by its combined output, to log (when non-nil) and to
// LogPath. It stops at the first failing line, returning an error naming the
// line number and command; only a build whose every line succeeds becomes
// Dir(ufop, n). Cancelling ctx kills the running line's process group.
func (b *Builder) Build(ctx context.Context, ufop string, n int, baseDir string, log io.Writer) (err error) {
	if err := checkName(ufop, n); err != nil {
		return err
	}
	release, err := b.claim(ufop, n)
	if err != nil {
		return err
	}
	defer release()
	res := b.resourceDir(ufop, n)
	raw, err := readCapped(filepath.Join(res, "ufop.yaml"), MaxUfopYAML)
	if err != nil {
		return fmt.Errorf("build %s.v%d: not unpacked: %w", ufop, n, err)
	}
	u, err := ParseUfopYAML(raw)
	if err != nil {
		return fmt.Errorf("build %s.v%d: %w", ufop, n, err)
	}
	lf, err := os.OpenFile(b.LogPath(ufop, n), os.O_CREATE|os.O_TRUNC|os.O_WRONLY|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("build %s.v%d: log: %w", ufop, n, err)
	}
	defer lf.Close()
	if err := lf.Chmod(0o600); err != nil { // an older log may be 0644
		return fmt.Errorf("build %s.v%d: log: %w", ufop, n, err)
	}
	var out io.Writer = &cappedWriter{w: lf, left: MaxLogBytes}
	if log != nil {
		out = io.MultiWriter(out, &safeWriter{w: log})
	}
	out = &lockedWriter{w: out}
	defer func() {
		if err != nil {
			fmt.Fprintf(out, "build failed: %v\n", err)
		} else {
			fmt.Fprintf(out, "build succeeded: %s\n", dora.BuildImageName(ufop, n))
		}
	}()

	work, err := os.MkdirTemp(b.base(ufop, n), "result.tmp-")
	if err != nil {
		return fmt.Errorf("build %s.v%d: %w", ufop, n, err)
	}
	defer removeTree(work) // a no-op once renamed into place
	if baseDir != "" {
		fmt.Fprintf(out, "# base image %s\n", u.Image)
		if err := CopyDirContext(ctx, work, baseDir); err != nil {
			return fmt.Errorf("build %s.v%d: copy base %s: %w", ufop, n, u.Image, err)
		}
	}
	home, err := os.MkdirTemp(b.base(ufop, n), "home.tmp-")
	if err != nil {
		return fmt.Errorf("build %s.v%d: %w", ufop, n, err)
	}
	defer removeTree(home)
	if err := os.Mkdir(filepath.Join(home, "tmp"), 0o700); err != nil {
		return fmt.Errorf("build %s.v%d: %w", ufop, n, err)
	}
	for _, d := range []string{res, work, home} {
		if err := ChownTreeContext(ctx, d, b.runAs); err != nil {
			return fmt.Errorf("build %s.v%d: give %s to %s: %w", ufop, n, filepath.Base(d), b.runAs, err)
		}
	}
	if err := b.watch(); err != nil {
		return fmt.Errorf("build %s.v%d: %w", ufop, n, err)
	}
	env := b.buildEnv(res, work, home)
	for i, line := range u.BuildScript {
		fmt.Fprintf(out, "$ %s\n", line)
		if err := runLine(ctx, b.spawner.Start, work, env, b.runAs, line, out); err != nil {
			return fmt.Errorf("build %s.v%d: build_script line %d %q: %w", ufop, n, i+1, line, err)
		}
	}
	if b.runAs != nil {
		if err := SealTreeContext(ctx, work, b.runAs); err != nil {
			return fmt.Errorf("build %s.v%d: seal result: %w", ufop, n, err)
		}
	}
	// Only the platform reads results (runtimes copy them for instances):
	// other accounts' code running as the same user cannot look inside.
	if err := os.Chmod(work, 0o700); err != nil {
		return fmt.Errorf("build %s.v%d: %w", ufop, n, err)
	}
	dst := b.Dir(ufop, n)
	if err := removeTree(dst); err != nil {
		return fmt.Errorf("build %s.v%d: %w", ufop, n, err)
	}
	if err := os.Rename(work, dst); err != nil {
		return fmt.Errorf("build %s.v%d: %w", ufop, n, err)
	}
	// $RESOURCE is not kept for run time (seed 001).
	_ = removeTree(res)
	return nil
}

// watch starts, once, the watchdog that makes build lines die with this
// process: when it ends (kill -9 included) every process carrying the
// builder's marker is killed, grandchildren and setsid escapes included,
// and the working directories of the builds it was running are removed.
// It lives as long as this process.
func (b *Builder) watch() error {
	b.watchOnce.Do(func() {
		_, b.watchErr = procsweep.Watch(b.owner, "/bin/sh", "-c", `rm -rf -- "$0"/*/*/*.tmp-*`, b.root)
		b.spawner = procsweep.NewSpawner()
	})
	return b.watchErr
}

// buildEnv is what a build_script line sees: the allowlisted variables of
// the platform's environment (b.Env or os.Environ), HOME and TMPDIR in the
// build's private home, USER when running as another user, RESOURCE and
// PWD. The Go build cache is b.goCache when set; otherwise, with RunAs, a
// fresh one in the private home (the platform's GOCACHE, GOPATH and
// GOMODCACHE belong to another user), and without RunAs the platform's own
// (its GOCACHE, else its default location), as before.
func (b *Builder) buildEnv(resource, work, home string) []string {
	env := NewEnv(b.Env, envAllowed)
	platformCache := ""
	if b.runAs == nil {
		if c, _ := env.Get("GOCACHE"); c != "" {
			platformCache = c
		} else if dir, err := os.UserCacheDir(); err == nil {
			platformCache = filepath.Join(dir, "go-build")
		}
		if _, ok := env.Get("GOPATH"); !ok {
			if h, err := os.UserHomeDir(); err == nil {
				env.Set("GOPATH", filepath.Join(h, "go"))
			}
		}
	} else {
		env.Delete("GOMODCACHE")
		env.Set("GOPATH", filepath.Join(home, "go"))
		if b.runAs.Name != "" {
			env.Set("USER", b.runAs.Name)
			env.Set("LOGNAME", b.runAs.Name)
		}
	}
	switch {
	case b.goCache != "":
		env.Set("GOCACHE", b.goCache)
	case platformCache != "":
		env.Set("GOCACHE", platformCache)
	default:
		env.Set("GOCACHE", filepath.Join(home, ".cache", "go-build"))
	}
	if _, ok := env.Get("PATH"); !ok {
		env.Set("PATH", "/usr/local/bin:/usr/bin:/bin")
	}
	env.Set("HOME", home)
	env.Set("TMPDIR", filepath.Join(home, "tmp"))
	env.Set("RESOURCE", resource)
	env.Set("PWD", work)
	// The platform's data directory is often inside a checkout (make run
	// in a clone) owned by another user than RunAs: git refuses it there
	// ("dubious ownership"), and go build, which finds the checkout by
	// itself and stamps its VCS state into binaries, failed every build.
	// A build is of the package alone: git stops at work, and go build
	// stamps no VCS state unless the script's GOFLAGS or flags ask.
	env.Set("GIT_CEILING_DIRECTORIES", filepath.Dir(work))
	if flags, _ := env.Get("GOFLAGS"); !strings.Contains(flags, "-buildvcs") {
		env.Set("GOFLAGS", strings.TrimSpace(flags+" -buildvcs=false"))
	}
	env.Set(procsweep.EnvKey, b.owner)
	return env.Environ()
}

// outputDrain bounds how long runLine waits, once a line's process group
// is killed, for the rest of its output: only a process that left the
// group (setsid) can still hold the pipe then.
const outputDrain = 5 * time.Second

// runLine runs one build_script line in its own process group, as runAs
// when non-nil; the group is killed when ctx ends and after the line exits
// (no stray background jobs), and the shell gets SIGKILL when dorad dies
// (Pdeathsig; Go sets it after the credentials change, which would reset
// it). start starts the shell: the Builder's Spawner, whose thread never
// ends, since the signal follows the forking thread. The line's status is
// its shell's: a background job it left holding the output does not fail
// it (the job is killed, and its output up to then is logged).
func runLine(ctx context.Context, start func(*exec.Cmd) error, dir string, env []string, runAs *User, line string, out io.Writer) error {
	// The output goes through a pipe of ours rather than exec's copying
	// goroutines, which Wait would wait for until every background job
	// closed it.
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	defer pr.Close()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", line)
	cmd.Dir = dir
	cmd.Env = env
	cmd.Stdout = pw
	cmd.Stderr = pw
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if runAs != nil {
		cmd.SysProcAttr.Credential = runAs.Credential()
	}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	err = start(cmd)
	pw.Close() // the children hold the write end now
	if err != nil {
		return err
	}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		_, _ = io.Copy(out, pr)
	}()
	err = cmd.Wait()
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	drain := time.NewTimer(outputDrain)
	select {
	case <-copied:
	case <-drain.C:
		pr.Close() // ends the copy
		<-copied
	}
	drain.Stop()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// cappedWriter writes until left runs out, then notes the truncation once
// and swallows the rest (never failing the build for it).
type cappedWriter struct {
	w    io.Writer
	left int64
	done bool
}

func (c *cappedWriter) Write(p []byte) (int, error) {
	if c.done {
		return len(p), nil
	}
	if int64(len(p)) > c.left {
		c.w.Write(p[:c.left])
		c.w.Write([]byte("\n... build log truncated ...\n"))
		c.done = true
		return len(p), nil
	}
	c.left -= int64(len(p))
	c.w.Write(p)
	return len(p), nil
}

// safeWriter ignores the caller's log errors so a closed client connection
// never fails a build.
type safeWriter struct{ w io.Writer }

func (s *safeWriter) Write(p []byte) (int, error) {
	s.w.Write(p)
	return len(p), nil
}

// lockedWriter serialises writes from a line's stdout and stderr copiers.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// WriteTarGz writes build n's result directory as a tar.gz (the artifact
// other hosts download): regular files, directories and symlinks, with
// paths relative to the directory.
func (b *Builder) WriteTarGz(ufop string, n int, w io.Writer) error {
	if err := checkName(ufop, n); err != nil {
		return err
	}
	dir := b.Dir(ufop, n)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("artifact %s.v%d: %w", ufop, n, ErrNoBuild)
	}
	zw := gzip.NewWriter(w)
	tw := tar.NewWriter(zw)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		} else if !fi.Mode().IsRegular() && !fi.IsDir() {
			return nil // sockets, FIFOs left by a build are not part of it
		}
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if fi.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "", ""
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		f, err := openRegular(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.CopyN(tw, f, hdr.Size)
		return err
	})
	if err == nil {
		err = tw.Close()
	}
	if err == nil {
		err = zw.Close()
	}
	if err != nil {
		return fmt.Errorf("artifact %s.v%d: %w", ufop, n, err)
	}
	return nil
}

// CopyDir copies the tree at src into dst (created if missing): directories,
// regular files with their permission bits, and symlinks as symlinks (never
// followed). Other file types are skipped.
func CopyDir(dst, src string) error { return CopyDirContext(context.Background(), dst, src) }

// copyChunk is how much of a file CopyDirContext copies between two looks
// at its context.
const copyChunk = 8 << 20

// CopyDirContext is CopyDir, stopping with ctx's error once ctx is done
// (between entries, and every copyChunk bytes of a file); what it copied
// until then stays in dst.
func CopyDirContext(ctx context.Context, dst, src string) error {
	src = filepath.Clean(src)
	fi, err := os.Stat(src)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("copy %s: not a directory", src)
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil || rel == "." {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case info.IsDir():
			return os.MkdirAll(target, info.Mode().Perm()|0o700)
		case info.Mode()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(l, target)
		case info.Mode().IsRegular():
			return copyFile(ctx, target, p, info.Mode().Perm())
		}
		return nil
	})
}

func copyFile(ctx context.Context, dst, src string, perm os.FileMode) error {
	in, err := openRegular(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, perm)
	if err != nil {
		return err
	}
	// In chunks, each still copied in the kernel (copy_file_range) where
	// it can be.
	for {
		if err := ctx.Err(); err != nil {
			out.Close()
			return err
		}
		_, err := io.CopyN(out, in, copyChunk)
		if err == io.EOF {
			break
		}
		if err != nil {
			out.Close()
			return err
		}
	}
	return out.Close()
}

// openRegular opens p for reading only if it is a regular file itself: a
// symbolic link or FIFO swapped in by user code after the caller's Lstat
// is refused rather than followed (or blocked on).
func openRegular(p string) (*os.File, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s: not a regular file", p)
	}
	return f, nil
}
