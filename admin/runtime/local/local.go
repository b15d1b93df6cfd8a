// Package local runs ufop instances as child processes of the platform: the
// embedded runtime of `dorad dev`. Each instance gets a fresh copy of the
// built package as its working directory, a free loopback port in PORT and
// PORT_HTTP, a health probe, restarts with exponential backoff when it
// crashes, and bounded, timestamped captures of its output. Healthy
// instances are published to a Publisher (pool/memory) so the router finds
// them. OCI images run as podman containers when Config.Podman is set
// (podman.go): each instance in its own network namespace, listening on
// ContainerPort (9100) published on a free loopback port, limited to its
// flavor's CPU and memory; without podman an image is refused with
// runtime.ErrUnsupported.
//
// Files under Config.Dir:
//
//	<Dir>/<deployment>/<index>/             instance working dir (recreated at every start)
//	<Dir>/<deployment>/spare-<n>/           the package copied ahead of the next start
//	                                        (0700, the platform's; spare.go)
//	<Dir>/<deployment>/logs/<index>.stdout  captured output, "RFC3339 text" lines,
//	<Dir>/<deployment>/logs/<index>.stderr  rotated to .1 at MaxLogBytes
//	<Dir>/.images.json                      the image names the runtime pulled into
//	                                        podman's storage, removed ImageGCDelay
//	                                        after no deployment uses them (images.go)
//
// Instances are user code: they see only an allowlisted environment (PATH,
// locale, time zone, the release's variables, HOST, PORT, PORT_HTTP; HOME is
// the working dir, TMPDIR <working dir>/.tmp), never the platform's tokens,
// and with Config.RunAs they run as another user (e.g. nobody) owning only
// their working dir, so they cannot read the platform's data directory
// (keys, metadata, objects, logs). Every process instance runs as that one
// user, so instances are not isolated from each other: one that knows
// another's path or pid can read its files and environment
// (docs/security.md). Program packages in containers see only their own
// working dir and processes, and never run as root: without Config.RunAs,
// a platform run as root runs them as nobody (packageUser); of the host's
// /etc they see only what programs read (hostEtc), not its secrets.
// Deployment and Dir directories are 0711 (traverse only), logs 0700,
// working dirs 0700.
//
// Instances are started with Setpgid and Pdeathsig=SIGKILL (a run command
// that is a single simple command is exec'ed by the shell so the signal
// reaches the program itself; compound commands' children are killed
// through the process group on every stop). What the signal does not reach
// (a compound command's other processes, anything that left the group) is
// killed by a watchdog (internal/procsweep) when dorad dies, kill -9
// included (by Close on a clean shutdown); it also removes the containers,
// whose conmon does not die with dorad, and the working directories.
package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/build"
	"github.com/doraproject/dora/admin/runtime"
	"github.com/doraproject/dora/internal/procsweep"
	"github.com/doraproject/dora/pool"
)

// Publisher receives the complete set of healthy instances every time it
// changes; pool/memory.Discovery satisfies it.
type Publisher interface {
	Publish(instances []pool.Instance)
}

// Config configures a Runtime. Zero fields take the defaults noted.
type Config struct {
	// Dir holds the instances' working directories and logs (required).
	Dir string
	// Region is reported on published instances; empty: the deployment's.
	Region string
	// Publisher receives healthy instances; may be nil.
	Publisher Publisher
	// Logger; default slog.Default().
	Logger *slog.Logger
	// HealthInterval is the probe interval when a release's health check
	// gives none (default 2s).
	HealthInterval time.Duration
	// RestartBackoff is the first restart delay after a crash, doubled per
	// consecutive crash up to MaxRestartBackoff (default 1s).
	RestartBackoff time.Duration
	// MaxLogBytes bounds each captured stream in memory and on disk
	// (default 1 MiB).
	MaxLogBytes int64
	// StopTimeout is how long a stopping instance has between SIGTERM and
	// SIGKILL (default 5s).
	StopTimeout time.Duration
	// MaxCrashes is how many consecutive crashes without ever becoming
	// healthy mark an instance FAILED (default 5). It is still restarted,
	// at the maximum backoff.
	MaxCrashes int
	// Env, when non-nil, replaces os.Environ as the source of the
	// allowlisted variables instances see.
	Env []string
	// RunAs, when non-nil, is the user every instance runs as (the
	// platform must be root); its working dir is given to that user and
	// Dir's ancestors must let it through (checked by New). Nil runs
	// instances as the platform's own user.
	RunAs *build.User
	// Podman, when non-nil, runs OCI images as containers; nil refuses
	// them (Apply returns runtime.ErrUnsupported naming what to install).
	Podman *Podman
	// HealthyDeadline is how long a container instance has to pass its
	// first health check before it is stopped and marked FAILED (default
	// 60s, Nomad's healthy_deadline). Program packages keep waiting.
	HealthyDeadline time.Duration
	// PackagesInContainers (with Podman) runs program packages in
	// containers too: each instance in its own network namespace, so a
	// program listening on the fixed port 9100 runs as many instances as
	// asked, in a minimal root filesystem (the host's /usr and what
	// programs read of its /etc read-only, its working directory
	// read-write; see hostRoot), with its flavor's limits, as RunAs or,
	// without one, nobody when the platform is root (packageUser). Off:
	// packages run as plain processes on a free loopback port given in
	// PORT.
	PackagesInContainers bool
	// ImageGCDelay (with Podman) is how long an image the runtime pulled
	// stays in podman's storage once no deployment of the runtime uses
	// it (default DefaultImageGCDelay, as Nomad's docker driver's
	// image_delay), so that a deployment removed and deployed again, or
	// a restart that applies the deployments again, does not pull it
	// again; negative keeps every image. Images the runtime did not pull
	// (a name podman had before) are never removed (images.go).
	ImageGCDelay time.Duration
}

// MaxRestartBackoff caps the restart delay.
const MaxRestartBackoff = 30 * time.Second

// maxTail bounds LogQuery.Tail.
const maxTail = 10000

var _ runtime.Runtime = (*Runtime)(nil)

// Runtime runs deployments as local processes. It is safe for concurrent use.
type Runtime struct {
	cfg    Config
	log    *slog.Logger
	client *http.Client
	// owner marks the instances' processes (internal/procsweep).
	owner string
	// watchdog kills them, the containers and the working directories
	// when this process dies without Close.
	watchdog *procsweep.Watchdog
	// spawner starts instance processes from a thread of its own, which
	// ends only at Close (Pdeathsig follows the forking thread).
	spawner *procsweep.Spawner

	mu       sync.Mutex
	deps     map[string]*deployment
	closed   bool
	spareSeq int // names spare copies (spare.go)

	fills      sync.WaitGroup // spare copies being made
	spareSlots chan struct{}  // one token per spare copy being made (spareCopies)
	// copySpare makes a spare copy (spare.go; a test replaces it to
	// watch the copies made at once).
	copySpare func(dir, src string) (os.FileInfo, error)

	hostRoot hostRoot // with PackagesInContainers
	// runAs is the user instances run as: Config.RunAs, or, for packages
	// in containers started by root without one, nobody (packageUser).
	runAs *build.User

	// leaving holds, by working directory, the instances scaled away or
	// removed whose files are not freed yet: a new instance at the same
	// index (same working dir, log files and container name) starts only
	// once they are. Guarded by mu.
	leaving map[string]*instance

	dirty   chan struct{} // cap 1: the healthy set may have changed
	quit    chan struct{}
	pubDone chan struct{}

	// Image collection (images.go). imgMu is held shared by a pull
	// until its deployment names the image (holdImages), and by the
	// collector alone for each removal; imgRecMu guards images, the names
	// the runtime pulled (<Dir>/.images.json).
	imgMu     sync.RWMutex
	imgRecMu  sync.Mutex
	images    []*imageRecord
	imgKick   chan struct{} // cap 1
	imgDone   chan struct{} // closed when the collector has stopped
	imgCancel context.CancelFunc
	// restores are the pulls of missing images under way, by image id
	// (restoreImage). Guarded by mu.
	restores map[string]*imageRestore
}

type deployment struct {
	id      string
	spec    runtime.Spec
	dir     string
	desired int
	stopped map[int]bool // indexes the user stopped; survives Scale
	insts   map[int]*instance
	image   string // podman image id of an OCI deployment
	failure string // why the deployment cannot run (image pull or check), "" when it can
	spare   spareCopy
}

type instance struct {
	index          int
	id             string
	dir            string
	stdout, stderr *stream
	// gone is closed once the instance has exited and its files are
	// freed; after, when non-nil, is the gone of the instance that had
	// the same working dir before, which this one waits for before its
	// first start.
	gone  chan struct{}
	after <-chan struct{}

	// Guarded by Runtime.mu.
	run      *run // nil when not running
	state    string
	healthy  bool
	pid      int
	port     int
	restarts int
	started  time.Time
	message  string
	crashes  int    // consecutive crashes without becoming healthy
	lastExit string // containers: how the last run ended, shown while running again
	image    string // containers: the image id of the current run
}

// run is one supervised life of an instance, from start to stop.
type run struct {
	stop chan struct{}
	done chan struct{}
	// after, when non-nil, is the done of the instance's previous run,
	// still ending when this one began: this one waits for it.
	after <-chan struct{}
}

// New returns a Runtime; Close it to stop every instance.
func New(cfg Config) (*Runtime, error) {
	if cfg.Dir == "" {
		return nil, errors.New("local runtime: Dir is required")
	}
	abs, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("local runtime: dir %s: %w", cfg.Dir, err)
	}
	cfg.Dir = abs
	if err := ensureDir(cfg.Dir, 0o711); err != nil {
		return nil, fmt.Errorf("local runtime: dir %s: %w", cfg.Dir, err)
	}
	if err := build.CheckReachable(cfg.Dir, cfg.RunAs); err != nil {
		return nil, fmt.Errorf("local runtime: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.HealthInterval <= 0 {
		cfg.HealthInterval = 2 * time.Second
	}
	if cfg.RestartBackoff <= 0 {
		cfg.RestartBackoff = time.Second
	}
	if cfg.MaxLogBytes <= 0 {
		cfg.MaxLogBytes = 1 << 20
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 5 * time.Second
	}
	if cfg.MaxCrashes <= 0 {
		cfg.MaxCrashes = 5
	}
	if cfg.HealthyDeadline <= 0 {
		cfg.HealthyDeadline = time.Minute
	}
	if cfg.ImageGCDelay == 0 {
		cfg.ImageGCDelay = DefaultImageGCDelay
	}
	r := &Runtime{
		cfg:     cfg,
		runAs:   packageUser(cfg, os.Geteuid()),
		log:     cfg.Logger.With("component", "runtime/local"),
		client:  &http.Client{Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}},
		deps:    map[string]*deployment{},
		leaving: map[string]*instance{},
		dirty:   make(chan struct{}, 1),
		quit:    make(chan struct{}),
		pubDone: make(chan struct{}),

		spareSlots: make(chan struct{}, spareCopies),
		copySpare:  copySpare,

		imgKick:  make(chan struct{}, 1),
		imgDone:  make(chan struct{}),
		restores: map[string]*imageRestore{},
	}
	// Instance processes an earlier process left running (it was killed:
	// the shells died with it, their background children and anything
	// that left the process group did not). None of ours runs yet.
	r.owner = procsweep.Owner("local", cfg.Dir)
	if n, err := procsweep.Sweep(r.owner); err != nil {
		r.log.Warn("kill stale instance processes", "err", err, "killed", n)
	} else if n > 0 {
		r.log.Info("killed stale instance processes", "count", n)
	}
	r.removeLeftovers()
	if r.runAs != cfg.RunAs {
		r.log.Info("no run-as user: program packages in containers run as nobody, not root", "user", r.runAs.String())
	}
	if cfg.Podman != nil {
		// Containers a previous run left behind (it was killed before it
		// could stop them) are removed before anything starts.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		n, err := cfg.Podman.Sweep(ctx, ownerLabel, ownerValue(cfg.Dir))
		cancel()
		if err != nil {
			return nil, fmt.Errorf("local runtime: remove stale containers: %w", err)
		}
		if n > 0 {
			r.log.Info("removed stale containers", "count", n)
		}
		if cfg.PackagesInContainers {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			r.hostRoot, err = cfg.Podman.EnsureHostRoot(ctx)
			cancel()
			if err != nil {
				return nil, fmt.Errorf("local runtime: %w", err)
			}
		}
	}
	if r.watchdog, err = procsweep.Watch(r.owner, r.onDeath()...); err != nil {
		return nil, fmt.Errorf("local runtime: %w", err)
	}
	r.spawner = procsweep.NewSpawner()
	go r.publishLoop()
	if cfg.Podman != nil {
		r.loadImages()
	}
	if cfg.Podman != nil && cfg.ImageGCDelay > 0 {
		ctx, cancel := context.WithCancel(context.Background())
		r.imgCancel = cancel
		go r.imageLoop(ctx)
	} else {
		close(r.imgDone)
	}
	return r, nil
}

// onDeath is what the watchdog runs once it has killed the instances'
// processes because this process died: remove the containers (podman run
// died with it, but conmon keeps a container running) and the instances'
// working directories, as the next New would.
func (r *Runtime) onDeath() []string {
	script := `[ -n "$1" ] && "$1" --runtime "$2" rm --force --ignore -t 0 --filter "label=$3" >/dev/null 2>&1
rm -rf -- "$0"/*/[0-9]* "$0"/*/` + sparePrefix + `*`
	argv := []string{"/bin/sh", "-c", script, r.cfg.Dir}
	if p := r.cfg.Podman; p != nil {
		argv = append(argv, p.Bin, p.OCIRuntime, ownerLabel+"="+ownerValue(r.cfg.Dir))
	}
	return argv
}

// removeLeftovers deletes the instance working directories
// (<Dir>/<deployment>/<index>) an earlier process left when it died: no
// instance runs while a Runtime starts, and each start prepares a fresh
// one. Logs stay.
func (r *Runtime) removeLeftovers() {
	deps, err := os.ReadDir(r.cfg.Dir)
	if err != nil {
		return
	}
	for _, d := range deps {
		if !d.IsDir() {
			continue
		}
		dir := filepath.Join(r.cfg.Dir, d.Name())
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range ents {
			if _, err := strconv.Atoi(e.Name()); (err == nil || isSpareDir(e.Name())) && e.IsDir() {
				if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
					r.log.Warn("removing a leftover instance directory", "dir", filepath.Join(dir, e.Name()), "err", err)
				}
			}
		}
	}
}

// CanRunImages returns nil when OCI images can run here, else an error
// wrapping runtime.ErrUnsupported that says what to install. The admin
// asks before it accepts an image deployment.
func (r *Runtime) CanRunImages() error {
	if r.cfg.Podman == nil {
		return fmt.Errorf("this platform has no container runtime to run OCI images: %s: %w", InstallHint, runtime.ErrUnsupported)
	}
	return nil
}

var deploymentIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// ErrClosed is returned by calls made after Close.
var ErrClosed = errors.New("local runtime: closed")

// Apply creates the deployment or updates it to spec, then scales it to
// spec.Deployment.Desired. Running instances keep the spec they started
// with until their next start.
func (r *Runtime) Apply(ctx context.Context, spec runtime.Spec) error {
	id := spec.Deployment.ID
	if !deploymentIDRE.MatchString(id) {
		return fmt.Errorf("apply %q: bad deployment id", id)
	}
	switch {
	case spec.Package != nil:
		if strings.TrimSpace(spec.Package.Run) == "" {
			return fmt.Errorf("apply %s: package has no run command", id)
		}
		if fi, err := os.Stat(spec.Package.Dir); err != nil || !fi.IsDir() {
			return fmt.Errorf("apply %s: package dir %q is not a directory", id, spec.Package.Dir)
		}
	case spec.OCIImage != "":
		if err := r.CanRunImages(); err != nil {
			return fmt.Errorf("apply %s: image %s: %w", id, spec.OCIImage, err)
		}
	default:
		return fmt.Errorf("apply %s: spec has neither a package nor an image", id)
	}
	if spec.Deployment.Desired < 0 {
		return fmt.Errorf("apply %s: desired %d is negative", id, spec.Deployment.Desired)
	}
	image, failure := "", ""
	if spec.Package == nil || r.containers() {
		if err := multiLineEnvError(spec.Release.Env); err != nil {
			failure = err.Error()
		}
	}
	// pulled ends the hold a pull has on the image collector, once the
	// deployment names the image (or failed).
	pulled := func() {}
	defer func() { pulled() }()
	if spec.Package == nil && failure == "" {
		release, err := r.holdImages(ctx)
		if err != nil {
			return fmt.Errorf("apply %s: image %s: %w", id, spec.OCIImage, err)
		}
		pulled = release
		if image, err = r.prepareImage(ctx, spec.OCIImage); err != nil {
			if cur := r.imageInUse(id, spec.OCIImage); cur != "" {
				// Applied again (a resize) with the registry out of
				// reach: the image the deployment runs is here, and
				// failing would stop every instance.
				r.log.Warn("pull failed; keeping the image the deployment runs", "deployment", id, "ref", spec.OCIImage, "image", cur, "err", err)
				image = cur
			} else {
				failure = err.Error()
			}
		}
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return ErrClosed
	}
	d := r.deps[id]
	if d == nil {
		d = &deployment{id: id, dir: filepath.Join(r.cfg.Dir, id), stopped: map[int]bool{}, insts: map[int]*instance{}}
		if err := ensureDir(d.dir, 0o711); err != nil {
			r.mu.Unlock()
			return fmt.Errorf("apply %s: %w", id, err)
		}
		if err := ensureDir(filepath.Join(d.dir, "logs"), 0o700); err != nil {
			r.mu.Unlock()
			return fmt.Errorf("apply %s: %w", id, err)
		}
		r.deps[id] = d
	}
	d.spec = spec
	var stale string
	if d.spare.dir != "" && (spec.Package == nil || d.spare.src != spec.Package.Dir) {
		stale, _ = dropSpareLocked(d)
	}
	imageChanged := false
	if spec.Package == nil && failure == "" && d.image != image {
		d.image, imageChanged = image, true
	}
	if failure != "" {
		p := r.failLocked(d, spec.Deployment.Desired, failure)
		r.mu.Unlock()
		pulled()
		r.kickImages() // a pulled image that failed its check is not used
		r.markDirty()
		p.wait(ctx)
		return fmt.Errorf("apply %s: %s", id, failure)
	}
	d.failure = ""
	p := r.scaleLocked(d, spec.Deployment.Desired)
	if spec.Deployment.Desired == 0 {
		r.fillSpareLocked(d) // for the wake-up from zero (spare.go)
	}
	r.mu.Unlock()
	pulled()
	if imageChanged {
		r.kickImages()
	}
	if stale != "" {
		os.RemoveAll(stale)
	}
	r.markDirty()
	return p.wait(ctx)
}

// imageInUse returns the image id deployment id runs for the reference
// ref, "" when it runs no image of that reference.
func (r *Runtime) imageInUse(id, ref string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.deps[id]
	if d == nil || d.failure != "" || d.spec.Package != nil || d.spec.OCIImage != ref {
		return ""
	}
	return d.image
}

// prepareImage pulls ref and checks that this host can run it; it returns
// the image id instances run.
func (r *Runtime) prepareImage(ctx context.Context, ref string) (string, error) {
	t0 := time.Now()
	// A name podman has before the pull is not the runtime's to remove
	// later, unless the runtime pulled it (an earlier run did).
	had, err := r.cfg.Podman.ImageExists(ctx, ref)
	if err != nil {
		had = true // not known: not claimed
		r.log.Warn("cannot tell whether podman has the image already; it will be kept", "ref", ref, "err", err)
	}
	mine := !had || r.ownsRef(ref)
	id, err := r.cfg.Podman.Pull(ctx, ref)
	if err != nil {
		return "", fmt.Errorf("image %s: %v", ref, err)
	}
	if mine {
		r.recordPull(ref, id, time.Now())
	}
	if err := r.cfg.Podman.CheckImage(ctx, id); err != nil {
		return "", fmt.Errorf("image %s: %v", ref, err)
	}
	r.log.Info("image ready", "ref", ref, "id", id, "took", time.Since(t0))
	return id, nil
}

// failLocked records that d cannot run (why): its instances stop and stay
// FAILED with why as their message and the last line of their stderr, so
// state and logtail say it too. Callers hold r.mu.
func (r *Runtime) failLocked(d *deployment, count int, why string) pending {
	d.failure = why
	p := r.scaleLocked(d, 0)
	d.desired = count
	for i := 1; i <= count; i++ {
		in := r.newInstance(d, i)
		in.state, in.message = runtime.StateFailed, why
		in.stderr.Write([]byte("dora: " + why + "\n"))
		d.insts[i] = in
	}
	return p
}

// Scale sets the instance count: new indexes start (unless the user stopped
// them earlier), the highest indexes stop gracefully and are forgotten.
func (r *Runtime) Scale(ctx context.Context, deploymentID string, count int, reason string) error {
	if count < 0 {
		return fmt.Errorf("scale %s: count %d is negative", deploymentID, count)
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return ErrClosed
	}
	d := r.deps[deploymentID]
	if d == nil {
		r.mu.Unlock()
		return fmt.Errorf("scale %s: %w", deploymentID, runtime.ErrNotFound)
	}
	from := d.desired
	p := r.scaleLocked(d, count)
	d.spec.Deployment.Desired = count
	if count == 0 {
		r.fillSpareLocked(d) // for the wake-up from zero (spare.go)
	}
	r.mu.Unlock()
	if from != count {
		r.log.Info("scale", "deployment", deploymentID, "from", from, "to", count, "reason", reason)
	}
	r.markDirty()
	return p.wait(ctx)
}

// Applied returns the count the deployment is set to run (the last Scale
// or Apply), instances stopped by index included.
func (r *Runtime) Applied(_ context.Context, deploymentID string) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.deps[deploymentID]
	if d == nil {
		return 0, runtime.ErrNotFound // the caller names the deployment
	}
	return d.desired, nil
}

// pending is work left after the lock is released: runs to wait for and
// instances to free once they have exited.
type pending struct {
	runs  []*run
	freed []*instance
}

// wait waits for the runs to end, then frees the instances' files. When
// ctx ends first it returns ctx's error and frees them in the background.
func (p pending) wait(ctx context.Context) error {
	all := make(chan struct{})
	go func() {
		for _, rn := range p.runs {
			<-rn.done
		}
		for _, in := range p.freed {
			if in.after != nil {
				// It never ran if stopped while waiting: the dir may
				// still be its predecessor's.
				<-in.after
			}
			in.stdout.Close()
			in.stderr.Close()
			os.RemoveAll(in.dir)
			close(in.gone)
		}
		close(all)
	}()
	select {
	case <-all:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// scaleLocked adds or removes instances. Callers hold r.mu.
func (r *Runtime) scaleLocked(d *deployment, count int) pending {
	d.desired = count
	for i := 1; i <= count; i++ {
		if d.insts[i] != nil {
			if d.failure == "" && d.insts[i].run == nil && d.insts[i].state == runtime.StateFailed && !d.stopped[i] {
				r.startLocked(d, d.insts[i]) // failed at pull time; the image is fixed now
			}
			continue
		}
		in := r.newInstance(d, i)
		d.insts[i] = in
		if !d.stopped[i] {
			r.startLocked(d, in)
		}
	}
	var p pending
	for i, in := range d.insts {
		if i > count {
			if rn := r.stopLocked(in); rn != nil {
				p.runs = append(p.runs, rn)
			}
			delete(d.insts, i)
			p.freed = append(p.freed, in)
			r.leaving[in.dir] = in
		}
	}
	return p
}

// newInstance returns instance i of d, stopped; it will start only once
// the instance that had its working dir before is gone. Callers hold r.mu.
func (r *Runtime) newInstance(d *deployment, i int) *instance {
	in := &instance{
		index:  i,
		id:     fmt.Sprintf("%s-%d", d.id, i),
		dir:    filepath.Join(d.dir, strconv.Itoa(i)),
		stdout: newStream(filepath.Join(d.dir, "logs", strconv.Itoa(i)+".stdout"), r.cfg.MaxLogBytes, time.Now),
		stderr: newStream(filepath.Join(d.dir, "logs", strconv.Itoa(i)+".stderr"), r.cfg.MaxLogBytes, time.Now),
		state:  runtime.StateStopped,
		gone:   make(chan struct{}),
	}
	for dir, old := range r.leaving {
		select {
		case <-old.gone:
			delete(r.leaving, dir)
		default:
		}
	}
	if old := r.leaving[in.dir]; old != nil {
		in.after = old.gone
		delete(r.leaving, in.dir)
	}
	return in
}

// startLocked begins a supervised run of in. Callers hold r.mu.
func (r *Runtime) startLocked(d *deployment, in *instance) {
	r.startAfterLocked(d, in, nil)
}

// startAfterLocked is startLocked with the run waiting for after (when
// non-nil) to be closed before it starts anything. Callers hold r.mu.
func (r *Runtime) startAfterLocked(d *deployment, in *instance, after <-chan struct{}) {
	if in.run != nil || d.failure != "" {
		return
	}
	rn := &run{stop: make(chan struct{}), done: make(chan struct{}), after: after}
	in.run = rn
	in.state = runtime.StateStarting
	in.healthy = false
	in.message = ""
	in.crashes = 0
	go r.supervise(d, in, rn)
}

// stopLocked ends in's run and returns it (nil when it was not running);
// its supervisor terminates the process and closes run.done. Callers hold
// r.mu.
func (r *Runtime) stopLocked(in *instance) *run {
	rn := in.run
	in.run = nil
	if rn != nil {
		close(rn.stop)
	}
	in.state = runtime.StateStopped
	in.healthy = false
	in.pid = 0
	in.message = ""
	return rn
}

// selectIndexes returns the instances named by 1-based indexes (all when
// empty). Callers hold r.mu.
func selectIndexes(d *deployment, indexes []int) ([]*instance, error) {
	if len(indexes) == 0 {
		all := make([]*instance, 0, len(d.insts))
		for _, in := range d.insts {
			all = append(all, in)
		}
		return all, nil
	}
	out := make([]*instance, 0, len(indexes))
	for _, i := range indexes {
		in := d.insts[i]
		if in == nil {
			return nil, fmt.Errorf("instance %d of %s (1..%d): %w", i, d.id, d.desired, runtime.ErrNotFound)
		}
		out = append(out, in)
	}
	return out, nil
}

// StopInstances stops the given instances (all when empty); they stay
// stopped, across restarts and Scale, until StartInstances.
func (r *Runtime) StopInstances(ctx context.Context, deploymentID string, indexes []int) error {
	r.mu.Lock()
	d := r.deps[deploymentID]
	if d == nil {
		r.mu.Unlock()
		return fmt.Errorf("stop %s: %w", deploymentID, runtime.ErrNotFound)
	}
	ins, err := selectIndexes(d, indexes)
	if err != nil {
		r.mu.Unlock()
		return fmt.Errorf("stop: %w", err)
	}
	var p pending
	for _, in := range ins {
		d.stopped[in.index] = true
		if rn := r.stopLocked(in); rn != nil {
			p.runs = append(p.runs, rn)
		}
	}
	r.mu.Unlock()
	r.markDirty()
	return p.wait(ctx)
}

// StartInstances starts stopped instances (all when empty).
func (r *Runtime) StartInstances(ctx context.Context, deploymentID string, indexes []int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	d := r.deps[deploymentID]
	if d == nil {
		return fmt.Errorf("start %s: %w", deploymentID, runtime.ErrNotFound)
	}
	ins, err := selectIndexes(d, indexes)
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	for _, in := range ins {
		delete(d.stopped, in.index)
		var after <-chan struct{}
		if in.run != nil && in.state == runtime.StateFailed && in.pid == 0 {
			// Given up on (a container that never became healthy or
			// kept exiting) or waiting for its next try: "stays
			// FAILED until started again", so a new run, once the old
			// one has ended.
			after = r.stopLocked(in).done
		}
		r.startAfterLocked(d, in, after)
	}
	return nil
}

// Remove stops every instance of the deployment and deletes its files.
func (r *Runtime) Remove(ctx context.Context, deploymentID string) error {
	r.mu.Lock()
	d := r.deps[deploymentID]
	if d == nil {
		r.mu.Unlock()
		return fmt.Errorf("remove %s: %w", deploymentID, runtime.ErrNotFound)
	}
	p := r.scaleLocked(d, 0)
	delete(r.deps, deploymentID)
	_, filling := dropSpareLocked(d)
	r.mu.Unlock()
	r.markDirty()
	if err := p.wait(ctx); err != nil {
		return fmt.Errorf("remove %s: %w", deploymentID, err)
	}
	if filling != nil {
		// It sees the deployment gone and removes its copy.
		select {
		case <-filling:
		case <-ctx.Done():
			return fmt.Errorf("remove %s: %w", deploymentID, ctx.Err())
		}
	}
	r.kickImages() // its image may be unused now: removed after ImageGCDelay
	if err := os.RemoveAll(d.dir); err != nil {
		return fmt.Errorf("remove %s: %w", deploymentID, err)
	}
	return nil
}

// Close stops every instance, waits for them to exit and publishes the
// empty set. Later calls return ErrClosed.
func (r *Runtime) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	if r.imgCancel != nil {
		r.imgCancel()
	}
	var all pending
	var spares []string
	for _, d := range r.deps {
		p := r.scaleLocked(d, 0)
		all.runs = append(all.runs, p.runs...)
		all.freed = append(all.freed, p.freed...)
		if dir, _ := dropSpareLocked(d); dir != "" {
			spares = append(spares, dir)
		}
	}
	r.deps = map[string]*deployment{}
	r.mu.Unlock()
	for _, rn := range all.runs {
		<-rn.done
	}
	// Copies being made see the runtime closed and remove themselves.
	r.fills.Wait()
	for _, dir := range spares {
		os.RemoveAll(dir)
	}
	for _, in := range all.freed {
		in.stdout.Close()
		in.stderr.Close()
	}
	if r.cfg.Podman != nil {
		// Every container was stopped with its instance; this catches
		// one whose `podman stop` failed.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if _, err := r.cfg.Podman.Sweep(ctx, ownerLabel, ownerValue(r.cfg.Dir)); err != nil {
			r.log.Warn("remove containers", "err", err)
		}
		cancel()
	}
	<-r.imgDone // images stay: the next run applies its deployments again
	r.spawner.Close()
	// What the instances started outside their process group (a daemon
	// in a session of its own) survived their stops; the watchdog kills
	// it only when this process dies, and is disarmed now.
	if n, err := procsweep.Sweep(r.owner); err != nil {
		r.log.Warn("kill instance processes left running", "err", err, "killed", n)
	} else if n > 0 {
		r.log.Info("killed instance processes left running", "count", n)
	}
	if err := r.watchdog.Close(); err != nil {
		r.log.Warn("stop the watchdog", "err", err)
	}
	close(r.quit)
	<-r.pubDone
	if r.cfg.Publisher != nil {
		r.cfg.Publisher.Publish([]pool.Instance{})
	}
	return nil
}

// Status reports the deployment and its instances by index.
func (r *Runtime) Status(ctx context.Context, deploymentID string) (runtime.DeploymentStatus, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.deps[deploymentID]
	if d == nil {
		return runtime.DeploymentStatus{}, fmt.Errorf("status %s: %w", deploymentID, runtime.ErrNotFound)
	}
	var st runtime.DeploymentStatus
	st.Instances = []runtime.InstanceStatus{}
	idx := make([]int, 0, len(d.insts))
	for i := range d.insts {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	active := 0
	var failed []string
	why := "" // the first instance message, for PENDING
	for _, i := range idx {
		in := d.insts[i]
		is := runtime.InstanceStatus{
			Index: in.index, ID: in.id, State: in.state, Healthy: in.healthy,
			Restarts: in.restarts, Message: in.message,
		}
		if in.run != nil {
			active++
			is.PID = in.pid
			is.Started = in.started
			if in.port != 0 {
				is.Addr = "127.0.0.1:" + strconv.Itoa(in.port)
			}
		}
		if in.healthy {
			st.Healthy++
		}
		if why == "" && in.message != "" && in.run != nil {
			why = fmt.Sprintf("; instance %d: %s", in.index, in.message)
		}
		if in.state == runtime.StateFailed {
			failed = append(failed, fmt.Sprintf("instance %d: %s", in.index, in.message))
		}
		st.Instances = append(st.Instances, is)
	}
	switch {
	case d.failure != "":
		st.Status = dora.DeployFailed
		st.Message = d.failure
	case active == 0:
		st.Status = dora.DeployStopped
	case len(failed) > 0 && st.Healthy < active:
		st.Status = dora.DeployFailed
		st.Message = strings.Join(failed, "; ")
	case st.Healthy >= active:
		st.Status = dora.DeployRunning
	default:
		st.Status = dora.DeployPending
		st.Message = fmt.Sprintf("%d of %d instances healthy%s", st.Healthy, active, why)
	}
	return st, nil
}

// Logs returns the last q.Tail lines (default 100) of an instance's stdout
// or stderr, each "RFC3339 text".
func (r *Runtime) Logs(ctx context.Context, deploymentID string, q runtime.LogQuery) (io.ReadCloser, error) {
	in, err := r.instance(deploymentID, q.Index)
	if err != nil {
		return nil, fmt.Errorf("logs: %w", err)
	}
	var s *stream
	switch q.Stream {
	case "", "stdout":
		s = in.stdout
	case "stderr":
		s = in.stderr
	default:
		return nil, fmt.Errorf("logs %s: stream %q: want stdout or stderr", deploymentID, q.Stream)
	}
	n := q.Tail
	if n <= 0 {
		n = 100
	}
	if n > maxTail {
		n = maxTail
	}
	if q.Follow {
		tail, lines, cancel := s.Follow(n)
		return newFollowReader(ctx, tail, lines, cancel), nil
	}
	lines := s.Tail(n)
	text := ""
	if len(lines) > 0 {
		text = strings.Join(lines, "\n") + "\n"
	}
	return io.NopCloser(strings.NewReader(text)), nil
}

func (r *Runtime) instance(deploymentID string, index int) (*instance, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.deps[deploymentID]
	if d == nil {
		return nil, fmt.Errorf("deployment %s: %w", deploymentID, runtime.ErrNotFound)
	}
	in := d.insts[index]
	if in == nil {
		return nil, fmt.Errorf("instance %d of %s: %w", index, deploymentID, runtime.ErrNotFound)
	}
	return in, nil
}

// Instances returns the healthy instances as published, sorted by ID.
func (r *Runtime) Instances() []pool.Instance {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := []pool.Instance{}
	for _, d := range r.deps {
		ufop, version, region := d.spec.Deployment.Ufop, d.spec.Deployment.Version, r.cfg.Region
		if ufop == "" {
			ufop = d.spec.Release.Ufop
		}
		if version == "" {
			version = d.spec.Release.Version
		}
		if region == "" {
			region = d.spec.Deployment.Region
		}
		routerHost := ""
		if d.spec.Package == nil || r.containers() {
			routerHost = HostLoopback
		}
		for _, in := range d.insts {
			if in.healthy && in.run != nil {
				out = append(out, pool.Instance{ID: in.id, Ufop: ufop, Version: version, Region: region,
					Addr: "127.0.0.1:" + strconv.Itoa(in.port), RouterHost: routerHost})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// containers reports whether program packages run in containers.
func (r *Runtime) containers() bool {
	return r.cfg.Podman != nil && r.cfg.PackagesInContainers
}

// markDirty asks the publisher loop to publish the current healthy set.
func (r *Runtime) markDirty() {
	select {
	case r.dirty <- struct{}{}:
	default:
	}
}

// publishLoop publishes from one goroutine, so sets arrive in order and
// the publisher is never called under r.mu.
func (r *Runtime) publishLoop() {
	defer close(r.pubDone)
	for {
		select {
		case <-r.quit:
			return
		case <-r.dirty:
			if r.cfg.Publisher != nil {
				r.cfg.Publisher.Publish(r.Instances())
			}
		}
	}
}

// ensureDir creates dir (parents with mode too) and sets its mode exactly,
// so a directory made by an older version gets it as well.
func ensureDir(dir string, mode os.FileMode) error {
	if err := os.MkdirAll(dir, mode); err != nil {
		return err
	}
	return os.Chmod(dir, mode)
}
