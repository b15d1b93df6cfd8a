package local

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/build"
	"github.com/doraproject/dora/admin/runtime"
)

// containerName is the podman name of instance id ("<deployment>-<n>"):
// "dora-<id>-<digest of the runtime's directory>". Container names are
// one namespace for the whole host and `podman run --replace` removes a
// container of the same name, so the name carries the runtime's own part:
// two runtimes on one host (two dorad dev, or two test processes using
// the same deployment id) cannot replace each other's containers.
func (r *Runtime) containerName(id string) string {
	return "dora-" + id + "-" + ownerValue(r.cfg.Dir)[:8]
}

// packageUser is the user instances run as under cfg, for a platform
// running as euid: cfg.RunAs; or, when root runs program packages in
// containers without one, nobody (the host's, else 65534:65534). Root in
// such a container (rootful podman, no user namespace) is the host's root
// with podman's default capabilities: it could read whatever is mounted,
// and change what is mounted read-write. A package never needs that, so a
// platform run as its own user ("self") still runs its containers as
// nobody; rootless podman maps the container's root to the platform's own
// user, which is what "self" asks for.
func packageUser(cfg Config, euid int) *build.User {
	if cfg.RunAs != nil || cfg.Podman == nil || !cfg.PackagesInContainers || euid != 0 {
		return cfg.RunAs
	}
	if u, err := build.LookupUser("nobody"); err == nil && u.Uid != 0 {
		return u
	}
	return &build.User{Name: "nobody", Uid: 65534, Gid: 65534}
}

// containerEnv is the environment of a container instance: the lines of
// its environment file (PORT and PORT_HTTP are ContainerPort, then the
// release's variables, DORA_* left out) and, apart, the "KEY=VALUE" pairs
// of values on several lines, which that file cannot carry: podman takes
// them from its own environment (`--env KEY`; see multiLineEnvError).
// Nothing of the platform's own environment is passed: the image brings
// its own.
func containerEnv(rel []dora.EnvVar) (file string, pass []string) {
	var b strings.Builder
	for _, e := range rel {
		if e.Key == "" || strings.ContainsAny(e.Key, "=\x00\n# \t") || strings.HasPrefix(e.Key, "DORA_") ||
			e.Key == "PORT" || e.Key == "PORT_HTTP" || strings.ContainsRune(e.Value, 0) {
			continue
		}
		if strings.ContainsAny(e.Value, "\n\r") {
			pass = append(pass, e.Key+"="+e.Value)
			continue
		}
		b.WriteString(e.Key + "=" + e.Value + "\n")
	}
	b.WriteString("PORT=" + strconv.Itoa(ContainerPort) + "\n")
	b.WriteString("PORT_HTTP=" + strconv.Itoa(ContainerPort) + "\n")
	return b.String(), pass
}

// packageEnv is the environment of a program package in a container, as
// containerEnv splits it: as for a process (instanceEnv) with PORT and
// PORT_HTTP 9100 and HOST 0.0.0.0 unless the release sets it (loopback
// inside the container's namespace is not where its published port
// arrives).
func packageEnv(base []string, rel []dora.EnvVar, dir string, runAs *build.User) (file string, pass []string) {
	hostSet := false
	for _, e := range rel {
		hostSet = hostSet || e.Key == "HOST"
	}
	var b strings.Builder
	for _, kv := range instanceEnv(base, rel, ContainerPort, dir, runAs) {
		if strings.ContainsAny(kv, "\n\r") {
			pass = append(pass, kv)
			continue
		}
		if !hostSet && strings.HasPrefix(kv, "HOST=") {
			kv = "HOST=0.0.0.0"
		}
		b.WriteString(kv + "\n")
	}
	return b.String(), pass
}

// multiLineEnvError refuses a release variable whose value spans several
// lines and whose name podman (or the Go runtime, or the C library it
// runs on) reads from its own environment: such a value can only reach a
// container through podman's environment, where it would change how
// podman itself runs. Other names are passed that way (containerEnv).
func multiLineEnvError(rel []dora.EnvVar) error {
	for _, e := range rel {
		if !strings.ContainsAny(e.Value, "\n\r") {
			continue
		}
		k := strings.ToUpper(e.Key)
		read := strings.HasSuffix(k, "_PROXY")
		switch k {
		case "HOME", "PATH", "TMPDIR", "TZ", "LANG", "LANGUAGE", "USER", "LOGNAME", "SHELL", "TERM", "NOTIFY_SOCKET":
			read = true
		}
		for _, p := range []string{"CONTAINER", "STORAGE_", "BUILDAH_", "PODMAN_", "REGISTRY_", "DOCKER_", "XDG_", "GO", "LC_", "SSL_", "DBUS_", "LD_", "MALLOC_"} {
			read = read || strings.HasPrefix(k, p)
		}
		if read {
			return fmt.Errorf("env %s: a value of several lines cannot reach a container under a name podman reads itself; rename the variable or keep its value on one line", e.Key)
		}
	}
	return nil
}

// runContainer runs one life of a container instance with `podman run` in
// the foreground: its stdout and stderr are the container's, its exit is
// the container's. It returns crashed when the container exited on its
// own (why says how: exit status, or OOM from `podman inspect`), fatal
// when it never passed its health check within HealthyDeadline (it is
// stopped and not restarted), and missing too when an OCI image
// deployment's container could not be created because its image is no
// longer in podman's storage (asked only then: a start whose image is
// there costs nothing more).
func (r *Runtime) runContainer(d *deployment, in *instance, rn *run, spec runtime.Spec, image string) (crashed, fatal, missing bool, why string) {
	pod := r.cfg.Podman
	name := r.containerName(in.id)
	port, err := freePort()
	if err != nil {
		return true, false, false, fmt.Sprintf("pick a port: %v", err)
	}
	envFile := filepath.Join(d.dir, "logs", strconv.Itoa(in.index)+".env")
	env, pass := containerEnv(spec.Release.Env)
	if spec.Package != nil {
		if err := os.RemoveAll(in.dir); err != nil {
			return true, false, false, fmt.Sprintf("prepare working dir: %v", err)
		}
		if err := r.prepareDir(d, in.dir, spec.Package.Dir); err != nil {
			return true, false, false, fmt.Sprintf("prepare working dir: %v", err)
		}
		env, pass = packageEnv(r.cfg.Env, spec.Release.Env, in.dir, r.runAs)
	}
	if err := os.WriteFile(envFile, []byte(env), 0o600); err != nil {
		return true, false, false, fmt.Sprintf("environment file: %v", err)
	}
	cs := containerSpec{
		Name: name, Image: image, EnvFile: envFile, PassEnv: pass, HostPort: port,
		Labels: map[string]string{
			ownerLabel:        ownerValue(r.cfg.Dir),
			"dora.deployment": d.id,
			"dora.instance":   strconv.Itoa(in.index),
			"dora.ufop":       spec.Release.Ufop,
			"dora.version":    spec.Release.Version,
		},
		CPUs:     float64(spec.Flavor.CPU) / 1000,
		MemoryMB: spec.Flavor.MemoryMB,
	}
	if spec.Package != nil {
		cs.Image = r.hostRoot.Image
		cs.Mounts = append(append([]string(nil), r.hostRoot.Mounts...), in.dir+":"+in.dir)
		cs.Workdir = in.dir
		cs.Command = []string{"/bin/sh", "-c", shellCommand(spec.Package.Run)}
		if u := r.runAs; u != nil {
			cs.User = fmt.Sprintf("%d:%d", u.Uid, u.Gid)
		}
	}
	cmd := pod.command(nil, pod.runArgs(cs)...)
	if len(pass) > 0 {
		cmd.Env = append(os.Environ(), pass...)
	}
	cmd.Stdin = nil
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	t0 := time.Now()
	pid, exited, drain, err := startLogged(in, cmd, r.spawner.Start)
	if err != nil {
		return true, false, false, fmt.Sprintf("podman run: %v", err)
	}
	bg := context.Background()
	// stop asks podman to stop the container (SIGTERM, SIGKILL after
	// StopTimeout) and waits for `podman run` to return.
	stop := func() {
		ctx, cancel := context.WithTimeout(bg, r.cfg.StopTimeout+30*time.Second)
		defer cancel()
		if err := pod.Stop(ctx, name, r.cfg.StopTimeout); err != nil {
			r.log.Warn("podman stop", "instance", in.id, "err", err)
		}
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			syscall.Kill(-pid, syscall.SIGKILL)
			<-exited
		}
	}
	// finish drains the output, reads how the container ended and removes it.
	finish := func() (info exitInfo, ierr error) {
		drain()
		ctx, cancel := context.WithTimeout(bg, time.Minute)
		defer cancel()
		info, ierr = pod.Exit(ctx, name)
		if err := pod.Remove(ctx, name); err != nil {
			r.log.Warn("podman rm", "instance", in.id, "err", err)
		}
		return info, ierr
	}

	r.mu.Lock()
	if in.run != rn { // stopped while starting
		r.mu.Unlock()
		stop()
		finish()
		return false, false, false, ""
	}
	in.pid, in.port, in.started = pid, port, time.Now()
	if in.crashes < r.cfg.MaxCrashes {
		in.state = runtime.StateStarting
	}
	in.healthy = false
	r.mu.Unlock()
	r.log.Info("container started", "instance", in.id, "container", name, "image", image, "port", port)

	ctx, cancel := context.WithCancel(bg)
	defer cancel()
	var watch *oomWatch // set before wdone is closed
	wdone := make(chan struct{})
	running := make(chan struct{}) // closed once the container runs on port
	go func() { defer close(wdone); watch = r.watchContainer(ctx, name, port, running) }()
	defer func() {
		cancel()
		<-wdone
		watch.Close()
	}()
	oomKilled := func() bool {
		select {
		case <-wdone:
			return watch.Killed(300 * time.Millisecond)
		case <-time.After(time.Second):
			return false
		}
	}
	// The port was free when picked; until podman has bound it (which it
	// does before it starts the container, and fails the start if it
	// cannot) another listener may hold it, and an answer from there
	// must not make this instance healthy: probing starts once the
	// container runs.
	probes := make(chan error)
	go func() {
		select {
		case <-running:
			r.probe(ctx, spec.Release.HealthCheck, port, probes)
		case <-ctx.Done():
		}
	}()
	deadline := time.NewTimer(r.cfg.HealthyDeadline)
	defer deadline.Stop()
	fails, everHealthy := 0, false
	var lastProbe error
	for {
		select {
		case err := <-exited:
			info, ierr := finish()
			if ierr != nil && spec.Package == nil && r.imageMissing(ctx, image) {
				// No container to inspect: podman run found no
				// image (--pull never), removed behind the runtime's back.
				why = fmt.Sprintf("image %s (%s) is no longer in podman's storage", spec.OCIImage, shortID(image))
				in.stderr.Write([]byte("dora: " + why + "\n"))
				return true, false, true, why
			}
			oom := oomKilled()
			switch {
			case info.OOMKilled || oom:
				why = fmt.Sprintf("killed: out of memory (OOM; limit %d MiB of flavor %s)", spec.Flavor.MemoryMB, spec.Flavor.Name)
			case ierr != nil:
				why = fmt.Sprintf("podman run exited: %v (inspect: %v)", err, ierr)
			case info.Error != "":
				why = fmt.Sprintf("exited with status %d: %s", info.ExitCode, info.Error)
			default:
				why = fmt.Sprintf("exited with status %d", info.ExitCode)
			}
			in.stderr.Write([]byte("dora: container " + why + "\n"))
			return true, false, false, why
		case <-rn.stop:
			stop()
			finish()
			return false, false, false, ""
		case <-deadline.C:
			if everHealthy {
				continue
			}
			why = fmt.Sprintf("health check never passed within %v", r.cfg.HealthyDeadline)
			if lastProbe != nil {
				why += ": " + lastProbe.Error()
			}
			in.stderr.Write([]byte("dora: " + why + "; container stopped\n"))
			stop()
			finish()
			return false, true, false, why
		case perr := <-probes:
			if perr == nil {
				if !everHealthy {
					r.log.Info("container healthy", "instance", in.id, "after", time.Since(t0))
				}
				fails, everHealthy = 0, true
			} else {
				fails++
				lastProbe = perr
			}
			r.setHealth(in, rn, perr, fails)
		}
	}
}

// watchContainer waits for the container to run with port published,
// closes running, and watches its memory cgroup; nil when that is not
// possible (cgroup v2: podman's own State.OOMKilled then applies) or ctx
// ends first. It asks podman every 50 ms for the first 10 s, then every
// 500 ms (a loaded host can take longer to start a container).
func (r *Runtime) watchContainer(ctx context.Context, name string, port int, running chan<- struct{}) *oomWatch {
	for i := 0; ; i++ {
		pid, err := r.cfg.Podman.Running(ctx, name, port)
		if err == nil && pid > 0 {
			close(running)
			w, err := watchOOM(pid)
			if err != nil {
				r.log.Debug("oom watch", "container", name, "err", err)
				return nil
			}
			return w
		}
		wait := 50 * time.Millisecond
		if i >= 200 {
			wait = 500 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}
