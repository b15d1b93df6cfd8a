package local

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	goruntime "runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ContainerPort is the port a containerised instance listens on inside its
// own network namespace, as on Qiniu Dora; it is published on a loopback
// host port.
const ContainerPort = 9100

// HostLoopback is the host's loopback as a container sees it: containers
// run on podman's slirp4netns network with allow_host_loopback, so they
// reach the router's one-shot input URLs (on the host's 127.0.0.1) at
// 10.0.2.2. A bridge network would be faster but cannot reach a listener
// bound to the host's loopback, and the platform's listeners stay on
// loopback by default.
const HostLoopback = "10.0.2.2"

// InstallHint tells an operator how to get a container runtime; it ends
// the "needs a container runtime" errors.
const InstallHint = "install podman and runc (Debian/Ubuntu: apt-get install podman runc) and restart dorad dev"

// ErrNoPodman is returned by DetectPodman when podman or runc is missing.
var ErrNoPodman = errors.New("no container runtime")

// Podman runs containers through the podman CLI. The CLI rather than
// podman's Go bindings: the bindings need a long-running `podman system
// service` and pull in containers/storage and friends (cgo, btrfs, gpgme)
// into the platform's binary, while the CLI is daemonless, is what the
// Debian package installs, and `podman run` in the foreground gives the
// supervisor exactly what it has for a process: a child to wait for and its
// stdout/stderr.
//
// Every call passes --runtime (runc by default: crun refuses the hybrid
// cgroup layout of some hosts) and explicit ulimits no higher than the
// host's hard limits (podman otherwise asks for nofile=1048576, which a
// host without CAP_SYS_RESOURCE refuses), instead of editing the machine's
// containers.conf.
type Podman struct {
	// Bin is the podman executable.
	Bin string
	// OCIRuntime is the OCI runtime podman uses (--runtime), "runc".
	OCIRuntime string
	// NoFile and NProc are the containers' ulimits (soft = hard).
	NoFile, NProc uint64
	// Version is podman's version, for the start-up log.
	Version string
	// AuthFile is a containers-auth.json with the registry credentials
	// used to pull (written by SetRegistryAuth); empty: anonymous.
	AuthFile string
}

// DetectPodman finds podman and runc on PATH and checks that podman
// answers. The error wraps ErrNoPodman and says what to install.
func DetectPodman(ctx context.Context) (*Podman, error) {
	bin, err := exec.LookPath("podman")
	if err != nil {
		return nil, fmt.Errorf("%w: podman not found on PATH; %s", ErrNoPodman, InstallHint)
	}
	runc, err := exec.LookPath("runc")
	if err != nil {
		return nil, fmt.Errorf("%w: runc not found on PATH (podman's crun cannot run on hosts with hybrid cgroups); %s", ErrNoPodman, InstallHint)
	}
	p := &Podman{Bin: bin, OCIRuntime: runc, NoFile: 65536, NProc: 32768}
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil && lim.Max < p.NoFile {
		p.NoFile = lim.Max
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := p.output(ctx, "version", "--format", "{{.Client.Version}}")
	if err != nil {
		return nil, fmt.Errorf("%w: podman version: %v", ErrNoPodman, err)
	}
	p.Version = strings.TrimSpace(string(out))
	return p, nil
}

// SetRegistryAuth writes an auth file at path giving user/pass for
// registry host (host:port) and uses it for pulls.
func (p *Podman) SetRegistryAuth(path, host, user, pass string) error {
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
	b, err := json.Marshal(map[string]any{"auths": map[string]any{host: map[string]string{"auth": auth}}})
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("registry auth file: %w", err)
	}
	p.AuthFile = path
	return nil
}

// command returns an exec.Cmd running podman with the global flags.
func (p *Podman) command(ctx context.Context, args ...string) *exec.Cmd {
	all := append([]string{"--runtime", p.OCIRuntime}, args...)
	if ctx == nil {
		return exec.Command(p.Bin, all...)
	}
	return exec.CommandContext(ctx, p.Bin, all...)
}

// output runs podman and returns its stdout; the error carries stderr.
func (p *Podman) output(ctx context.Context, args ...string) ([]byte, error) {
	cmd := p.command(ctx, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if i := strings.LastIndex(msg, "\n"); i >= 0 {
			msg = strings.TrimSpace(msg[i+1:])
		}
		if msg == "" {
			msg = err.Error()
		}
		return out, fmt.Errorf("podman %s: %s", args[0], strings.TrimPrefix(msg, "Error: "))
	}
	return out, nil
}

// insecureHost reports whether ref's registry is on loopback, where the
// platform's registry speaks plain HTTP.
func insecureHost(ref string) bool {
	host := ref
	if i := strings.IndexByte(host, '/'); i >= 0 {
		host = host[:i]
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// Pull pulls ref (layers already present are not fetched again: podman's
// store is content-addressed) and returns the image id, which instances
// then run, so a tag moved later does not change a running deployment.
func (p *Podman) Pull(ctx context.Context, ref string) (string, error) {
	args := []string{"pull", "--quiet"}
	if insecureHost(ref) {
		args = append(args, "--tls-verify=false")
	}
	if p.AuthFile != "" {
		args = append(args, "--authfile", p.AuthFile)
	}
	out, err := p.output(ctx, append(args, ref)...)
	if err != nil {
		return "", fmt.Errorf("pull %s: %w", ref, err)
	}
	lines := strings.Fields(string(out))
	if len(lines) == 0 {
		return "", fmt.Errorf("pull %s: podman printed no image id", ref)
	}
	return lines[len(lines)-1], nil
}

// imageInfo is what CheckImage reads from `podman image inspect`.
type imageInfo struct {
	Architecture string
	Os           string
	Config       struct {
		Entrypoint []string
		Cmd        []string
	}
}

// CheckImage refuses an image this host cannot run: another OS or CPU
// architecture, or neither an entrypoint nor a command.
func (p *Podman) CheckImage(ctx context.Context, id string) error {
	out, err := p.output(ctx, "image", "inspect", "--format", "json", id)
	if err != nil {
		return err
	}
	var infos []imageInfo
	if err := json.Unmarshal(out, &infos); err != nil || len(infos) != 1 {
		return fmt.Errorf("podman image inspect %s: unreadable answer", id)
	}
	in := infos[0]
	if in.Os != "" && in.Os != goruntime.GOOS {
		return fmt.Errorf("image is for %s/%s; this host runs %s/%s", in.Os, in.Architecture, goruntime.GOOS, goruntime.GOARCH)
	}
	if in.Architecture != "" && in.Architecture != goruntime.GOARCH {
		return fmt.Errorf("image is for architecture %s; this host runs %s", in.Architecture, goruntime.GOARCH)
	}
	if len(in.Config.Entrypoint) == 0 && len(in.Config.Cmd) == 0 {
		return errors.New("image has no entrypoint and no command (set ENTRYPOINT or CMD in its Dockerfile)")
	}
	return nil
}

// containerSpec is one container to run.
type containerSpec struct {
	Name    string
	Image   string
	Labels  map[string]string
	EnvFile string
	// PassEnv are "KEY=VALUE" pairs the container gets from podman's own
	// environment (`--env KEY`): values an env file cannot carry.
	PassEnv  []string
	HostPort int
	CPUs     float64 // 0: unlimited
	MemoryMB int     // 0: unlimited
	// Program packages (hostRoot image): binds, working dir, user, command.
	Mounts  []string
	Workdir string
	User    string
	Command []string
}

// runArgs is `podman run` in the foreground for c: its own network
// namespace with ContainerPort published on a loopback host port, limits,
// no swap beyond the memory limit, no new privileges.
func (p *Podman) runArgs(c containerSpec) []string {
	args := []string{"run", "--name", c.Name, "--replace",
		"--ulimit", fmt.Sprintf("nofile=%d:%d", p.NoFile, p.NoFile),
		"--ulimit", fmt.Sprintf("nproc=%d:%d", p.NProc, p.NProc),
		"--security-opt", "no-new-privileges",
		"--pull", "never",
		"--log-driver", "none", // the supervisor captures stdout/stderr itself
		"--network", "slirp4netns:allow_host_loopback=true",
		"-p", fmt.Sprintf("127.0.0.1:%d:%d", c.HostPort, ContainerPort),
	}
	for _, k := range sortedKeys(c.Labels) {
		args = append(args, "--label", k+"="+c.Labels[k])
	}
	if c.EnvFile != "" {
		args = append(args, "--env-file", c.EnvFile)
	}
	for _, kv := range c.PassEnv {
		k, _, _ := strings.Cut(kv, "=")
		args = append(args, "--env", k)
	}
	if c.CPUs > 0 {
		args = append(args, "--cpus", strconv.FormatFloat(c.CPUs, 'f', -1, 64))
	}
	if c.MemoryMB > 0 {
		m := strconv.Itoa(c.MemoryMB) + "m"
		args = append(args, "--memory", m, "--memory-swap", m)
	}
	for _, m := range c.Mounts {
		args = append(args, "--volume", m)
	}
	if c.Workdir != "" {
		args = append(args, "--workdir", c.Workdir)
	}
	if c.User != "" {
		args = append(args, "--user", c.User)
	}
	return append(append(args, c.Image), c.Command...)
}

// exitInfo is how a container ended.
type exitInfo struct {
	OOMKilled bool
	ExitCode  int
	Error     string
}

// Exit inspects a stopped container.
func (p *Podman) Exit(ctx context.Context, name string) (exitInfo, error) {
	out, err := p.output(ctx, "container", "inspect", "--format", "{{json .State}}", name)
	if err != nil {
		return exitInfo{}, err
	}
	var st exitInfo
	if err := json.Unmarshal(bytes.TrimSpace(out), &st); err != nil {
		return exitInfo{}, fmt.Errorf("podman inspect %s: %w", name, err)
	}
	return st, nil
}

// RootFS returns where a running container's root filesystem is mounted
// on this host (podman's overlay merged directory) and the container's
// working directory, for reading the files it writes.
func (p *Podman) RootFS(ctx context.Context, name string) (root, workdir string, err error) {
	out, err := p.output(ctx, "container", "inspect", "--format",
		"{{.State.Running}}\t{{.GraphDriver.Data.MergedDir}}\t{{.Config.WorkingDir}}", name)
	if err != nil {
		return "", "", err
	}
	f := strings.Split(strings.TrimRight(string(out), "\n"), "\t")
	if len(f) != 3 || f[0] != "true" || !filepath.IsAbs(f[1]) {
		return "", "", fmt.Errorf("podman inspect %s: not running or no merged directory (%q)", name, out)
	}
	return f[1], f[2], nil
}

// Stop stops a container: SIGTERM, then SIGKILL after timeout.
func (p *Podman) Stop(ctx context.Context, name string, timeout time.Duration) error {
	secs := int(timeout / time.Second)
	if secs < 1 {
		secs = 1
	}
	_, err := p.output(ctx, "stop", "--ignore", "-t", strconv.Itoa(secs), name)
	return err
}

// Remove removes containers, running or not; missing ones are ignored.
func (p *Podman) Remove(ctx context.Context, names ...string) error {
	if len(names) == 0 {
		return nil
	}
	_, err := p.output(ctx, append([]string{"rm", "--force", "--ignore", "-t", "1"}, names...)...)
	return err
}

// Sweep removes every container carrying label k=v (left by a platform
// that died without stopping them) and returns how many there were.
func (p *Podman) Sweep(ctx context.Context, k, v string) (int, error) {
	out, err := p.output(ctx, "ps", "--all", "--quiet", "--filter", "label="+k+"="+v)
	if err != nil {
		return 0, err
	}
	ids := strings.Fields(string(out))
	return len(ids), p.Remove(ctx, ids...)
}

// ownerLabel is the label naming the runtime directory that started a
// container, so several platforms on one host sweep only their own.
const ownerLabel = "dora.instances"

// ownerValue is a short stable digest of the runtime's directory.
func ownerValue(dir string) string {
	sum := sha256.Sum256([]byte(dir))
	return hex.EncodeToString(sum[:8])
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// hostRoot is the minimal root filesystem program packages run in: an
// image holding only the top-level directories and the host's top-level
// symlinks (bin -> usr/bin on merged-/usr systems), with the host's /usr,
// the parts of its /etc that programs read (hostEtc) and any top-level
// program directory that is not a symlink bind-mounted read-only at run
// time and the instance's working directory read-write. A program package
// is built on this host against this host's libraries, so it needs them;
// it does not need the platform's data directory, other instances' files,
// the host's secrets (/etc/shadow, ssh and TLS keys, services' configs) or
// the rest of the host, which it does not see. A scratch image rather than
// `podman run --rootfs`: podman 4.3 ignores --ulimit with --rootfs and asks
// runc for nofile=1048576, which a host without CAP_SYS_RESOURCE refuses.
type hostRoot struct {
	Image  string
	Mounts []string // read-only binds, "src:dst:ro"
}

// EnsureHostRoot imports the host-root image when podman lacks it and
// returns it with the binds it needs.
func (p *Podman) EnsureHostRoot(ctx context.Context) (hostRoot, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	hr := hostRoot{Mounts: append([]string{"/usr:/usr:ro"}, etcMounts("/etc")...)}
	dir := func(name string, mode int64) error {
		return tw.WriteHeader(&tar.Header{Name: name + "/", Mode: mode, Typeflag: tar.TypeDir, ModTime: time.Unix(0, 0)})
	}
	for _, d := range []string{"usr", "etc", "proc", "dev", "sys", "run", "var", "home"} {
		if err := dir(d, 0o755); err != nil {
			return hr, err
		}
	}
	if err := dir("tmp", 0o1777); err != nil {
		return hr, err
	}
	for _, n := range []string{"bin", "sbin", "lib", "lib32", "lib64", "libx32"} {
		fi, err := os.Lstat("/" + n)
		if err != nil {
			continue
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			target, err := os.Readlink("/" + n)
			if err != nil {
				return hr, err
			}
			if err := tw.WriteHeader(&tar.Header{Name: n, Linkname: target, Typeflag: tar.TypeSymlink, Mode: 0o777, ModTime: time.Unix(0, 0)}); err != nil {
				return hr, err
			}
		} else if fi.IsDir() {
			if err := dir(n, 0o755); err != nil {
				return hr, err
			}
			hr.Mounts = append(hr.Mounts, "/"+n+":/"+n+":ro")
		}
	}
	if err := tw.Close(); err != nil {
		return hr, err
	}
	sum := sha256.Sum256(buf.Bytes())
	hr.Image = "localhost/dora-hostroot:" + hex.EncodeToString(sum[:6])
	if err := p.command(ctx, "image", "exists", hr.Image).Run(); err == nil {
		return hr, nil
	}
	cmd := p.command(ctx, "import", "--quiet", "-", hr.Image)
	cmd.Stdin = &buf
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return hr, fmt.Errorf("podman import %s: %v: %s", hr.Image, err, strings.TrimSpace(stderr.String()))
	}
	return hr, nil
}

// hostEtc are the entries of the host's /etc (shell patterns) a program
// built on this host may read, bound read-only into its container when
// they exist: account and group names (no passwords: those are in shadow
// and gshadow, never bound), the dynamic linker's cache, the alternatives
// /usr/bin's commands link to, CA certificates (not private keys), time
// zone, name service and protocol tables, MIME and magic databases, fonts
// and the configuration directories of language runtimes whose files in
// /usr link there. podman itself provides resolv.conf, hosts and hostname.
// Anything else of /etc (services' configs and credentials, ssh keys,
// the platform's own files) is not there.
var hostEtc = []string{
	"passwd", "group",
	"ld.so.cache", "ld.so.conf", "ld.so.conf.d",
	"alternatives",
	"ssl/certs", "ssl/openssl.cnf", "ca-certificates", "ca-certificates.conf",
	"pki/ca-trust", "pki/tls/certs", "pki/tls/cert.pem", "pki/tls/openssl.cnf", "crypto-policies",
	"localtime", "timezone", "locale.alias", "locale.conf",
	"nsswitch.conf", "host.conf", "gai.conf", "services", "protocols", "networks", "rpc",
	"mime.types", "mailcap", "magic", "magic.mime",
	"fonts", "ImageMagick-*",
	"os-release", "debian_version", "lsb-release",
	"java-*", "python3*", "perl",
}

// etcMounts returns the read-only binds ("src:/etc/...:ro") of the entries
// of hostEtc that exist below etc (the host's /etc), in hostEtc's order.
func etcMounts(etc string) []string {
	var mounts []string
	for _, pat := range hostEtc {
		matches, _ := filepath.Glob(filepath.Join(etc, pat))
		for _, m := range matches {
			if _, err := os.Stat(m); err != nil || strings.ContainsAny(m, ":,") {
				continue // a dangling link, or a name --volume cannot carry
			}
			rel, err := filepath.Rel(etc, m)
			if err != nil {
				continue
			}
			mounts = append(mounts, m+":"+path.Join("/etc", filepath.ToSlash(rel))+":ro")
		}
	}
	return mounts
}
