package local

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
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
	"github.com/doraproject/dora/admin/build"
	"github.com/doraproject/dora/admin/runtime"
	"github.com/doraproject/dora/internal/procsweep"
)

// unhealthyAfter is how many failed probes in a row take a healthy
// instance out of the published set.
const unhealthyAfter = 2

// Until an instance is first healthy it is probed on a schedule of its
// own, so that it joins the pool (and a request held for it goes on) as
// soon as it answers, the way Knative's activator probes a new revision:
// the first probe firstProbe after the start, then each wait a quarter of
// the time since the start, at most startupProbe (or the release's
// interval when shorter). An instance that answers t after its start is
// found by about 1.25 t + firstProbe, with about 20 probes before the
// waits reach startupProbe (a refused connection costs microseconds).
// Once healthy, the release's interval applies.
const (
	firstProbe   = 2 * time.Millisecond
	startupProbe = 100 * time.Millisecond
)

// startupWait is the wait before the next probe of an instance not yet
// healthy, elapsed after probing began, when the release's interval is
// interval.
func startupWait(elapsed, interval time.Duration) time.Duration {
	return min(max(elapsed/4, firstProbe), startupProbe, interval)
}

// supervise runs in until rn is stopped, restarting it with exponential
// backoff when it exits.
func (r *Runtime) supervise(d *deployment, in *instance, rn *run) {
	defer close(rn.done)
	if rn.after != nil {
		select {
		case <-rn.after:
		case <-rn.stop:
			return
		}
	}
	if in.after != nil {
		// The instance that had this index before is still stopping:
		// its working dir, log files and container name are still its.
		select {
		case <-in.after:
		case <-rn.stop:
			return
		}
	}
	// restored: the image was pulled again for this start; missing
	// again at once, it is not pulled again before the backoff.
	restored := false
	for {
		r.mu.Lock()
		spec, image := d.spec, d.image
		in.image = image // in use while this run lasts (images.go)
		r.mu.Unlock()
		var crashed, fatal, missing bool
		var why string
		if spec.Package != nil && !r.containers() {
			crashed, why = r.runOnce(d, in, rn, spec)
		} else {
			crashed, fatal, missing, why = r.runContainer(d, in, rn, spec, image)
		}
		if missing && !restored {
			// Removed from podman's storage since the deployment
			// pulled it (it starts from the image id, never pulling):
			// pulled again from the deployment's reference, the start
			// goes on; not a crash.
			r.mu.Lock()
			if in.run == rn {
				in.pid, in.port = 0, 0
				in.message = why + "; pulling it again"
			}
			r.mu.Unlock()
			var err error
			fatal, err = r.restoreImage(stopContext(rn), spec.OCIImage, image)
			if err == nil {
				in.stderr.Write([]byte("dora: image " + spec.OCIImage + " pulled again\n"))
				restored = true
				continue
			}
			select {
			case <-rn.stop:
				return // stopped during the pull
			default:
			}
			why = err.Error()
			in.stderr.Write([]byte("dora: " + why + "\n"))
		}
		restored = false
		if !crashed && !fatal {
			return
		}
		r.mu.Lock()
		if in.run != rn {
			r.mu.Unlock()
			return
		}
		in.healthy = false
		in.pid, in.port = 0, 0 // nothing listens there any more
		if fatal {
			// Stopped for good (an image whose health check never
			// passes); it stays FAILED until started again.
			in.state, in.message = runtime.StateFailed, why
			r.mu.Unlock()
			r.markDirty()
			r.log.Warn("instance failed", "instance", in.id, "why", why)
			<-rn.stop
			return
		}
		in.restarts++
		in.crashes++
		if spec.Package == nil {
			in.lastExit = "last exit: " + why
		}
		if last := in.stderr.Last(); last != "" && !strings.HasSuffix(last, why) {
			why += "; last stderr: " + last
		}
		if in.crashes >= r.cfg.MaxCrashes {
			in.state = runtime.StateFailed
			in.message = fmt.Sprintf("crashed %d times without becoming healthy: %s", in.crashes, why)
			if spec.Package == nil {
				// A container that keeps exiting is not restarted
				// for ever: nothing of it stays running.
				msg := in.message // read under r.mu: Close may clear it
				r.mu.Unlock()
				r.markDirty()
				r.log.Warn("instance failed", "instance", in.id, "why", msg)
				<-rn.stop
				return
			}
		} else {
			in.state = runtime.StateCrashed
			in.message = why
		}
		delay := backoff(r.cfg.RestartBackoff, in.crashes)
		r.mu.Unlock()
		r.markDirty()
		r.log.Warn("instance exited", "instance", in.id, "why", why, "restart_in", delay)
		t := time.NewTimer(delay)
		select {
		case <-rn.stop:
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// stopContext returns a context that ends when rn is stopped (or has
// ended).
func stopContext(rn *run) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		defer cancel()
		select {
		case <-rn.stop:
		case <-rn.done:
		}
	}()
	return ctx
}

// backoff is base doubled per consecutive crash after the first, capped.
func backoff(base time.Duration, crashes int) time.Duration {
	d := base
	for i := 1; i < crashes && d < MaxRestartBackoff; i++ {
		d *= 2
	}
	if d > MaxRestartBackoff {
		d = MaxRestartBackoff
	}
	return d
}

// runOnce starts the process and watches it until it exits (crashed, with
// the reason) or rn is stopped (not crashed; the process is terminated).
func (r *Runtime) runOnce(d *deployment, in *instance, rn *run, spec runtime.Spec) (crashed bool, why string) {
	if err := os.RemoveAll(in.dir); err != nil {
		return true, fmt.Sprintf("prepare working dir: %v", err)
	}
	if err := r.prepareDir(d, in.dir, spec.Package.Dir); err != nil {
		return true, fmt.Sprintf("prepare working dir: %v", err)
	}
	port, err := freePort()
	if err != nil {
		return true, fmt.Sprintf("pick a port: %v", err)
	}
	cmd := exec.Command("/bin/sh", "-c", shellCommand(spec.Package.Run))
	cmd.Dir = in.dir
	cmd.Env = append(instanceEnv(r.cfg.Env, spec.Release.Env, port, in.dir, r.runAs), procsweep.Env(r.owner))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if r.runAs != nil {
		cmd.SysProcAttr.Credential = r.runAs.Credential()
	}
	pid, exited, drain, err := startLogged(in, cmd, r.spawner.Start)
	if err != nil {
		return true, fmt.Sprintf("start: %v", err)
	}
	// finish reaps the process group and drains the output pipes; a
	// daemonised grandchild holding them gets 2s before they are closed.
	finish := func() {
		syscall.Kill(-pid, syscall.SIGKILL)
		drain()
	}

	r.mu.Lock()
	if in.run != rn { // stopped while starting
		r.mu.Unlock()
		r.terminate(pid, exited)
		finish()
		return false, ""
	}
	in.pid, in.port, in.started = pid, port, time.Now()
	if in.crashes < r.cfg.MaxCrashes {
		in.state = runtime.StateStarting
	} // else it stays FAILED, with its message, until it becomes healthy
	in.healthy = false
	r.mu.Unlock()
	r.log.Info("instance started", "instance", in.id, "pid", pid, "port", port)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	probes := make(chan error)
	go r.probe(ctx, spec.Release.HealthCheck, port, probes)
	fails := 0
	for {
		select {
		case err := <-exited:
			finish()
			if err == nil {
				return true, "exited with status 0"
			}
			return true, err.Error()
		case <-rn.stop:
			r.terminate(pid, exited)
			finish()
			return false, ""
		case perr := <-probes:
			if perr == nil {
				fails = 0
			} else {
				fails++
			}
			r.setHealth(in, rn, perr, fails)
		}
	}
}

// terminate sends SIGTERM to the process group, then SIGKILL after
// StopTimeout, and waits for the process to exit.
func (r *Runtime) terminate(pid int, exited <-chan error) {
	syscall.Kill(-pid, syscall.SIGTERM)
	t := time.NewTimer(r.cfg.StopTimeout)
	defer t.Stop()
	select {
	case <-exited:
	case <-t.C:
		syscall.Kill(-pid, syscall.SIGKILL)
		<-exited
	}
}

// setHealth records a probe result of rn's process.
func (r *Runtime) setHealth(in *instance, rn *run, perr error, fails int) {
	r.mu.Lock()
	if in.run != rn {
		r.mu.Unlock()
		return
	}
	changed := false
	switch {
	case perr == nil:
		changed = !in.healthy
		in.healthy = true
		in.state = runtime.StateRunning
		in.crashes = 0
		in.message = in.lastExit
	case in.healthy && fails >= unhealthyAfter:
		changed = true
		in.healthy = false
		in.state = runtime.StateUnhealthy
		in.message = "health check: " + perr.Error()
	case !in.healthy:
		in.message = "health check: " + perr.Error()
	}
	started := in.started
	r.mu.Unlock()
	if changed {
		r.markDirty()
		if perr == nil {
			r.log.Info("instance healthy", "instance", in.id, "after", time.Since(started))
		}
	}
}

// probe checks the instance until ctx ends: GET hc.Path (200 is healthy)
// or, without a path, a TCP connect; every result goes to out.
func (r *Runtime) probe(ctx context.Context, hc dora.HealthCheck, port int, out chan<- error) {
	interval := r.cfg.HealthInterval
	if hc.Timeout > 0 {
		interval = time.Duration(hc.Timeout) * time.Second
	}
	timeout := interval
	if timeout < time.Second {
		timeout = time.Second
	}
	if timeout > 10*time.Second {
		timeout = 10 * time.Second
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	p := hc.Path
	if p != "" && !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	healthy := false
	begun := time.Now()
	for {
		wait := interval
		if !healthy {
			wait = startupWait(time.Since(begun), interval)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, timeout)
		err := r.check(cctx, addr, p)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			healthy = true
		}
		select {
		case out <- err:
		case <-ctx.Done():
			return
		}
	}
}

// check probes the instance at addr once. With a health path p it wants
// 200 from GET p. Without one it asks GET / and any HTTP response counts
// (the program answers): a bare TCP connect is not enough, since podman's
// rootlessport accepts connections on a container's published port before
// (and after) anything listens inside, then closes them without a byte.
func (r *Runtime) check(ctx context.Context, addr, p string) error {
	path := p
	if path == "" {
		path = "/"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return err
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if p != "" && resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: status %d", p, resp.StatusCode)
	}
	return nil
}

// freePort asks the kernel for a free loopback port.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// shellCommand prefixes a single simple command with exec, so the program
// replaces the shell and Pdeathsig and signals reach it directly.
func shellCommand(run string) string {
	run = strings.TrimSpace(run)
	if strings.ContainsAny(run, ";&|<>()$`\\\"'\n*?[]{}~#=") || strings.HasPrefix(run, "exec ") {
		return run
	}
	return "exec " + run
}

// prepareDir makes dir, which must not exist, a fresh copy of d's package
// pkg with a private .tmp, owned by the run-as user and closed to everyone
// else: the copy made ahead when one is ready (spare.go), else one made
// now.
func (r *Runtime) prepareDir(d *deployment, dir, pkg string) error {
	spare := r.takeSpare(d, pkg)
	if spare != "" {
		if err := os.Rename(spare, dir); err != nil {
			r.log.Warn("using the package copied ahead", "dir", dir, "err", err)
			os.RemoveAll(spare)
			spare = ""
		}
	}
	if spare == "" {
		if err := build.CopyDir(dir, pkg); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, tmpDirName), 0o700); err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return err
	}
	return build.ChownTree(dir, r.runAs)
}

// tmpDirName is the instance's TMPDIR inside its working dir.
const tmpDirName = ".tmp"

// envAllowed reports whether an instance may see the platform's variable
// k: PATH, locale, time zone and the user name. Everything else (Consul
// and Nomad tokens, cloud keys, DORA_*) stays with the platform.
func envAllowed(k string) bool {
	switch k {
	case "PATH", "LANG", "LANGUAGE", "TZ", "USER", "LOGNAME":
		return true
	}
	return strings.HasPrefix(k, "LC_")
}

// instanceEnv is what an instance sees: the allowlisted variables of base
// (os.Environ when nil), HOME=dir and TMPDIR=dir/.tmp, USER/LOGNAME of
// runAs, the release's variables (DORA_* refused), HOST=127.0.0.1 unless
// the release sets HOST (so example programs bind loopback only), then
// PORT and PORT_HTTP.
func instanceEnv(base []string, rel []dora.EnvVar, port int, dir string, runAs *build.User) []string {
	env := build.NewEnv(base, envAllowed)
	if _, ok := env.Get("PATH"); !ok {
		env.Set("PATH", "/usr/local/bin:/usr/bin:/bin")
	}
	if runAs != nil {
		env.Delete("USER")
		env.Delete("LOGNAME")
		if runAs.Name != "" {
			env.Set("USER", runAs.Name)
			env.Set("LOGNAME", runAs.Name)
		}
	}
	env.Set("HOME", dir)
	env.Set("TMPDIR", filepath.Join(dir, tmpDirName))
	hostSet := false
	for _, e := range rel {
		if e.Key == "" || strings.ContainsAny(e.Key, "=\x00") || strings.HasPrefix(e.Key, "DORA_") {
			continue
		}
		if e.Key == "HOST" {
			hostSet = true
		}
		env.Set(e.Key, e.Value)
	}
	if !hostSet {
		env.Set("HOST", "127.0.0.1")
	}
	env.Set("PORT", strconv.Itoa(port))
	env.Set("PORT_HTTP", strconv.Itoa(port))
	return env.Environ()
}

// maxCollected bounds what CollectedLogs reads from each file.
const maxCollected = 256 << 10

// CollectedLogs returns the lines of the files under the release's
// LogFilePaths in the instance's current working directory (each path is
// relative to it, may be a glob or a directory), oldest file content first,
// bounded to the last 256 KiB of each file and MaxLogBytes in total. Paths
// leaving the working directory are refused. The working directory is
// recreated at every start, as the seed's stateless instances expect, so
// only the current run's files are seen.
//
// An OCI image instance's files are read from its running container's
// root filesystem: an absolute path is the path the program sees, a
// relative one starts at the image's working directory; a symlink leading
// out of the container's root is not followed. A container not running
// has no files to show.
func (r *Runtime) CollectedLogs(deploymentID string, index int) ([]string, error) {
	r.mu.Lock()
	d := r.deps[deploymentID]
	if d == nil {
		r.mu.Unlock()
		return nil, fmt.Errorf("collected logs %s: %w", deploymentID, runtime.ErrNotFound)
	}
	in := d.insts[index]
	if in == nil {
		r.mu.Unlock()
		return nil, fmt.Errorf("collected logs: instance %d of %s: %w", index, deploymentID, runtime.ErrNotFound)
	}
	paths := append([]string(nil), d.spec.Release.LogFilePaths...)
	dir := in.dir
	image := d.spec.Package == nil && d.spec.OCIImage != ""
	running := in.run != nil && in.pid != 0
	name := r.containerName(in.id)
	r.mu.Unlock()

	if image {
		rels := make([]string, 0, len(paths))
		for _, p := range paths {
			c := path.Clean(strings.TrimSpace(p))
			if !path.IsAbs(c) && (c == "." || c == ".." || strings.HasPrefix(c, "../")) {
				return nil, fmt.Errorf("collected logs %s: log path %q must be absolute or below the working dir", deploymentID, p)
			}
			if _, err := path.Match(c, ""); err != nil {
				return nil, fmt.Errorf("collected logs %s: log path %q: %w", deploymentID, p, err)
			}
			rels = append(rels, c)
		}
		if !running || r.cfg.Podman == nil {
			return []string{}, nil
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		root, wd, err := r.cfg.Podman.RootFS(ctx, name)
		if err != nil {
			r.log.Debug("collected logs: container root", "instance", in.id, "err", err)
			return []string{}, nil // stopped meanwhile
		}
		for i, c := range rels {
			if !path.IsAbs(c) {
				c = path.Join("/", wd, c)
			}
			rels[i] = strings.TrimPrefix(c, "/")
			if rels[i] == "" {
				rels[i] = "."
			}
		}
		return r.collectFiles(root, rels, nil), nil
	}
	rels := make([]string, 0, len(paths))
	for _, p := range paths {
		c := path.Clean(strings.TrimSpace(p))
		if c == "." || path.IsAbs(c) || c == ".." || strings.HasPrefix(c, "../") {
			return nil, fmt.Errorf("collected logs %s: log path %q must be relative to the working dir", deploymentID, p)
		}
		if _, err := path.Match(c, ""); err != nil {
			return nil, fmt.Errorf("collected logs %s: log path %q: %w", deploymentID, p, err)
		}
		rels = append(rels, c)
	}
	root, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return []string{}, nil // not started yet
	}
	return r.collectFiles(root, rels, r.runAs), nil
}

// collectFiles reads the files matching rels (slash-separated globs or
// directories below root) for CollectedLogs; with runAs set, only files
// that user owns.
func (r *Runtime) collectFiles(root string, rels []string, runAs *build.User) []string {
	var files []string
	for _, c := range rels {
		matches, err := filepath.Glob(filepath.Join(root, filepath.FromSlash(c)))
		if err != nil {
			continue // a malformed pattern matches nothing
		}
		for _, m := range matches {
			filepath.WalkDir(m, func(f string, de os.DirEntry, err error) error {
				if err == nil && de.Type().IsRegular() {
					files = append(files, f)
				}
				return nil
			})
		}
	}
	// The working dir belongs to user code, which may swap a file for a
	// link to the platform's secrets at any time: files are opened through
	// an os.Root, which never leaves the working dir.
	wd, err := os.OpenRoot(root)
	if err != nil {
		return []string{}
	}
	defer wd.Close()
	var found []string // below root, each once
	seen := map[string]bool{}
	for _, f := range files {
		real, err := filepath.EvalSymlinks(f)
		if err != nil || seen[real] || !build.Within(root, real) {
			continue
		}
		seen[real] = true
		rel, err := filepath.Rel(root, real)
		if err != nil {
			continue
		}
		found = append(found, rel)
	}
	// Only the last MaxLogBytes are kept: the files are read from the
	// last one back, each no further than the room left, so that what is
	// read stays within that however many files the instance writes.
	var parts [][]string
	var total int64
	for i := len(found) - 1; i >= 0 && total < r.cfg.MaxLogBytes; i-- {
		fl, n, err := tailFile(wd, found[i], min(maxCollected, r.cfg.MaxLogBytes-total), runAs)
		if err != nil {
			continue
		}
		parts = append(parts, fl)
		total += n
	}
	var lines []string
	for i := len(parts) - 1; i >= 0; i-- {
		lines = append(lines, parts[i]...)
	}
	for total > r.cfg.MaxLogBytes && len(lines) > 0 {
		total -= int64(len(lines[0])) + 1
		lines = lines[1:]
	}
	if lines == nil {
		lines = []string{}
	}
	return lines
}

// tailFile returns the complete lines among the last max bytes of the
// regular file p below root, which must belong to runAs when non-nil: a
// file it does not own was hard-linked into the working dir (a platform
// file, where hard links are not restricted) and is not the instance's.
func tailFile(root *os.Root, p string, max int64, runAs *build.User) ([]string, int64, error) {
	f, err := root.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	if !fi.Mode().IsRegular() {
		return nil, 0, fmt.Errorf("%s: not a regular file", p)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); runAs != nil && (!ok || st.Uid != runAs.Uid) {
		return nil, 0, fmt.Errorf("%s: not the instance's file", p)
	}
	skipFirst := false
	if fi.Size() > max {
		if _, err := f.Seek(fi.Size()-max, io.SeekStart); err != nil {
			return nil, 0, err
		}
		skipFirst = true
	}
	sc := bufio.NewScanner(io.LimitReader(f, max))
	sc.Buffer(make([]byte, min(64<<10, int(max)+1)), int(max)+1)
	var lines []string
	var n int64
	for sc.Scan() {
		if skipFirst {
			skipFirst = false
			continue
		}
		lines = append(lines, sc.Text())
		n += int64(len(sc.Bytes())) + 1
	}
	if err := sc.Err(); err != nil && !errors.Is(err, io.EOF) {
		return lines, n, err
	}
	return lines, n, nil
}

// startLogged starts cmd with its stdout and stderr copied into in's logs
// through pipes, and waits for it in the background: exited gets Wait's
// result. drain, once the process is reaped, waits for the copies (a
// daemonised grandchild holding the pipes gets 2 s before they are
// closed) and flushes the logs. The caller sets cmd's process attributes;
// start starts it (the runtime's Spawner, so that Pdeathsig holds).
func startLogged(in *instance, cmd *exec.Cmd, start func(*exec.Cmd) error) (pid int, exited <-chan error, drain func(), err error) {
	outR, outW, err := os.Pipe()
	if err != nil {
		return 0, nil, nil, fmt.Errorf("pipe: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return 0, nil, nil, fmt.Errorf("pipe: %w", err)
	}
	cmd.Stdout, cmd.Stderr = outW, errW
	err = start(cmd)
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return 0, nil, nil, err
	}
	var copiers sync.WaitGroup
	copiers.Add(2)
	go func() { defer copiers.Done(); io.Copy(in.stdout, outR) }()
	go func() { defer copiers.Done(); io.Copy(in.stderr, errR) }()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	drain = func() {
		drained := make(chan struct{})
		go func() { copiers.Wait(); close(drained) }()
		select {
		case <-drained:
		case <-time.After(2 * time.Second):
		}
		outR.Close()
		errR.Close()
		<-drained
		in.stdout.Flush()
		in.stderr.Flush()
	}
	return cmd.Process.Pid, done, drain, nil
}
