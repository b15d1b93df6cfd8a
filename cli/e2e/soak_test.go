//go:build soak

package e2e

// The soak and fault suite (`make soak`): `dorad dev` runs as a separate
// process under a low RLIMIT_NOFILE while steady mixed load (object reads,
// pipeline reads through two grepd instances, signed uploads) goes through
// it and faults are injected one after another: an instance killed, a
// connection flood past the file limit, slow clients on both listeners,
// and dorad itself killed with SIGKILL and restarted. It prints one table
// (requests, failures by cause, acknowledged writes lost, fds and RSS,
// recovery times) and fails when an acknowledged write is lost, a 200
// carries the wrong bytes, dorad exits on its own, or a recovery does not
// happen.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/doraproject/dora/cli/platform/platformtest"
	"github.com/doraproject/dora/cli/qdoractl/cmd"
	"github.com/doraproject/dora/internal/auth"
)

// soakNoFile is dorad's RLIMIT_NOFILE during the soak (prlimit).
const soakNoFile = 1024

type soakStats struct {
	mu     sync.Mutex
	sent   map[string]int
	failed map[string]int // "<kind> <cause>"
	acked  map[string][16]byte
}

func (s *soakStats) record(kind string, cause string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sent[kind]++
	if cause != "" {
		s.failed[kind+": "+cause]++
	}
}

// cause classifies a failed request.
func cause(err error, status int) string {
	switch {
	case err == nil && status >= 200 && status < 300:
		return ""
	case err == nil && status == 599:
		return "HTTP 200 with wrong bytes"
	case err == nil:
		return "HTTP " + strconv.Itoa(status)
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused (dorad down)"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection reset/closed"
	case errors.Is(err, context.DeadlineExceeded), os.IsTimeout(err):
		return "timeout"
	}
	return "other: " + err.Error()
}

// soakRow writes one row of a soak report's table.
func soakRow[N int | int64](out *strings.Builder, name string, n N) {
	fmt.Fprintf(out, "| %-72s | %10d |\n", name, n)
}

// soakRows writes one row per key of m, in key order, named prefix+key.
func soakRows(out *strings.Builder, prefix string, m map[string]int) {
	for _, k := range slices.Sorted(maps.Keys(m)) {
		soakRow(out, prefix+k, m[k])
	}
}

// soakBuild builds dorad for a soak run, in a directory the run-as user
// (nobody) may enter, and returns its path.
func soakBuild(t *testing.T) string {
	t.Helper()
	bin := platformtest.BuildDorad(t)
	os.Chmod(filepath.Dir(bin), 0o755)
	return bin
}

// soakGoCache is a Go build cache kept across soak runs: the first build
// compiles the standard library as the run-as user, minutes on a busy
// machine.
func soakGoCache(t *testing.T) string {
	t.Helper()
	cacheRoot := filepath.Join(os.TempDir(), "dora-soak-gocache")
	if err := os.MkdirAll(cacheRoot, 0o711); err != nil {
		t.Fatal(err)
	}
	os.Chmod(cacheRoot, 0o711)
	return filepath.Join(cacheRoot, "go-build")
}

// soakLoop runs fn again and again in a goroutine of wg until stop is
// closed, pausing after each call; a call that failed (false: dorad down)
// is retried after a further 50 ms, as a client would, not in a tight loop.
func soakLoop(wg *sync.WaitGroup, stop <-chan struct{}, pause time.Duration, fn func() bool) {
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if !fn() {
				time.Sleep(50 * time.Millisecond)
			}
			time.Sleep(pause)
		}
	})
}

// soakGet returns a GET through the router at addr with bucket soak's Host.
func soakGet(hc *http.Client, addr string) func(pathQuery string) (int, []byte, error) {
	return func(pathQuery string) (int, []byte, error) {
		return platformtest.Get(hc, "http://"+addr, "soak", pathQuery)
	}
}

// upload PUTs object w/<n> of bucket soak through the admin, signed as
// root, records its MD5 in st when it is acknowledged, and returns the
// failure's cause ("" for none).
func (st *soakStats) upload(hc *http.Client, adminURL string, n int64) string {
	key := fmt.Sprintf("w/%d", n)
	body := bytes.Repeat([]byte(key+"\n"), 200+int(n%50)*100)
	req, _ := http.NewRequest("PUT", adminURL+"/v1/objects/soak/"+key, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/octet-stream")
	auth.SignRequest(req, rootAK, rootSK, nil, time.Now())
	res, err := hc.Do(req)
	code := 0
	if err == nil {
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		code = res.StatusCode
	}
	if err == nil && code == 200 {
		st.mu.Lock()
		st.acked[key] = md5.Sum(body)
		st.mu.Unlock()
	}
	return cause(err, code)
}

type dorad struct {
	cmd      *exec.Cmd
	exited   chan error
	adminURL string
	router   string // host:port
}

// procStat returns the open descriptors and RSS (KiB) of pid.
func procStat(pid int) (fds int, rssKiB int) {
	ents, _ := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	fds = len(ents)
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			rssKiB, _ = strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		}
	}
	return fds, rssKiB
}

func TestSoak(t *testing.T) {
	duration := 20 * time.Second // per phase
	if d, err := time.ParseDuration(os.Getenv("SOAK_PHASE")); err == nil {
		duration = d
	}
	root := platformtest.RepoRoot(t)
	bin := soakBuild(t)
	goCache := soakGoCache(t)
	dataDir := reachableDataDir(t)
	adminAddr, routerAddr := platformtest.FreeAddr(t), platformtest.FreeAddr(t)
	var logBuf lockedLog
	start := func() *dorad {
		t.Helper()
		cmd := exec.Command("prlimit", "--nofile="+strconv.Itoa(soakNoFile)+":"+strconv.Itoa(soakNoFile), bin, "dev",
			"--data-dir", dataDir, "--admin-addr", adminAddr, "--router-addr", routerAddr, "--go-cache", goCache)
		cmd.Env = append(os.Environ(), "DORA_ROOT_AK="+rootAK, "DORA_ROOT_SK="+rootSK)
		cmd.Stdout, cmd.Stderr = &logBuf, &logBuf
		if p := os.Getenv("SOAK_DORAD_LOG"); p != "" {
			// The whole log, for reading a run's failures afterwards.
			if f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err == nil {
				t.Cleanup(func() { f.Close() })
				cmd.Stdout = io.MultiWriter(&logBuf, f)
				cmd.Stderr = cmd.Stdout
			}
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		d := &dorad{cmd: cmd, exited: make(chan error, 1), adminURL: "http://" + adminAddr, router: routerAddr}
		go func() { d.exited <- cmd.Wait() }()
		return d
	}
	waitUp := func(d *dorad) time.Duration {
		t.Helper()
		t0 := time.Now()
		for time.Since(t0) < 2*time.Minute {
			select {
			case err := <-d.exited:
				t.Fatalf("dorad exited: %v\n%s", err, logBuf.tail())
			default:
			}
			r1, e1 := http.Get(d.adminURL + "/healthz")
			r2, e2 := http.Get("http://" + d.router + "/healthz")
			if e1 == nil && e2 == nil && r1.StatusCode == 200 && r2.StatusCode == 200 {
				r1.Body.Close()
				r2.Body.Close()
				return time.Since(t0)
			}
			if e1 == nil {
				r1.Body.Close()
			}
			if e2 == nil {
				r2.Body.Close()
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("dorad not up in 2m\n%s", logBuf.tail())
		return 0
	}
	d := start()
	t.Cleanup(func() {
		d.cmd.Process.Kill()
		<-d.exited
		killInstances(dataDir)
	})
	waitUp(d)

	// Setup through qdoractl, as a user would.
	t.Setenv("HOME", t.TempDir())
	h := &harness{t: t, dataDir: dataDir}
	h.q("login", "-u", rootAK, "-p", rootSK, "--api", d.adminURL)
	h.q("bucket", "create", "soak")
	objData := bytes.Repeat([]byte("hello dora soak line\nanother line\n"), 3000)
	objFile := filepath.Join(t.TempDir(), "obj.txt")
	os.WriteFile(objFile, objData, 0o644)
	h.q("put", "soak", "obj.txt", objFile)
	h.q("reg", "grepd", "-mode", "1")
	{
		var stdout, stderr bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		code := cmd.Run(ctx, []string{"build", "grepd", "-dir", filepath.Join(root, "examples", "grepd")}, strings.NewReader(""), &stdout, &stderr)
		cancel()
		if code != 0 || !strings.Contains(stdout.String(), "SUCCESS") {
			t.Fatalf("build: exit %d\n%s\n%s", code, stdout.String(), stderr.String())
		}
	}
	h.q("ufopver", "grepd", "-c", "1")
	h.q("resize", "grepd", "-num", "2")
	wantPipe := bytes.Repeat([]byte("hello dora soak line\n"), 3000)
	client := &http.Client{Timeout: 30 * time.Second}
	get := soakGet(client, d.router)
	deadline := time.Now().Add(3 * time.Minute)
	for {
		code, body, err := get("/obj.txt?grepd/hello")
		if err == nil && code == 200 && bytes.Equal(body, wantPipe) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pipeline never answered: %d %v %.200s", code, err, body)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Steady mixed load until stop.
	st := &soakStats{sent: map[string]int{}, failed: map[string]int{}, acked: map[string][16]byte{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var seq atomic.Int64
	loop := func(fn func() bool) { soakLoop(&wg, stop, 0, fn) }
	for range 2 {
		loop(func() bool {
			code, body, err := get("/obj.txt")
			if err == nil && code == 200 && !bytes.Equal(body, objData) {
				code = 599 // a 200 with the wrong bytes
			}
			c := cause(err, code)
			st.record("object GET", c)
			return c == ""
		})
		loop(func() bool {
			code, body, err := get("/obj.txt?grepd/hello")
			if err == nil && code == 200 && !bytes.Equal(body, wantPipe) {
				code = 599 // a 200 with the wrong bytes
			}
			c := cause(err, code)
			if err == nil && code >= 500 && code < 599 {
				// The router's JSON error says which step failed and how.
				var e struct{ Error string }
				if json.Unmarshal(body, &e) == nil && e.Error != "" {
					c += ": " + e.Error[:min(len(e.Error), 60)]
				}
			}
			st.record("pipeline GET", c)
			if c != "" {
				t.Logf("%s pipeline GET failed: %s", time.Now().UTC().Format("15:04:05.000"), c)
			}
			return c == ""
		})
	}
	// The loops read the addresses once: d is replaced when dorad restarts
	// (same addresses), and reading it from the loops would race with that.
	adminURL := d.adminURL
	loop(func() bool {
		c := st.upload(client, adminURL, seq.Add(1))
		st.record("upload PUT", c)
		time.Sleep(20 * time.Millisecond)
		return c == ""
	})

	type row struct{ name, value string }
	var rows []row
	note := func(name, value string) {
		rows = append(rows, row{name, value})
		t.Logf("%s %s: %s", time.Now().UTC().Format("15:04:05.000"), name, value)
	}
	pid := func() int {
		// prlimit execs dorad: the child's pid is dorad's.
		return d.cmd.Process.Pid
	}
	time.Sleep(duration)
	fds0, rss0 := procStat(pid())
	note("dorad fds / RSS after warm-up", fmt.Sprintf("%d / %d MiB", fds0, rss0/1024))

	// 1. Kill an instance.
	ipids := instancePids(dataDir)
	if len(ipids) == 0 {
		t.Fatal("no instance process found")
	}
	t0 := time.Now()
	t.Logf("%s killing instance pid %d of %v", t0.UTC().Format("15:04:05.000"), ipids[0], ipids)
	syscall.Kill(ipids[0], syscall.SIGKILL)
	rec := ""
	for time.Since(t0) < time.Minute {
		ps := instancePids(dataDir)
		if len(ps) >= 2 && !slicesContains(ps, ipids[0]) {
			rec = time.Since(t0).Round(10 * time.Millisecond).String()
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if rec == "" {
		rec = "not replaced in 1m"
	}
	note("instance killed (SIGKILL): replaced after", rec)
	time.Sleep(duration)

	// 2. Connection flood past the file limit.
	var flood []net.Conn
	for range 3 * soakNoFile {
		c, err := net.DialTimeout("tcp", d.router, time.Second)
		if err != nil {
			break
		}
		flood = append(flood, c)
	}
	time.Sleep(duration / 2)
	select {
	case err := <-d.exited:
		t.Fatalf("dorad exited during the flood: %v\n%s", err, logBuf.tail())
	default:
	}
	for _, c := range flood {
		c.Close()
	}
	t0 = time.Now()
	rec = "not serving in 1m"
	for time.Since(t0) < time.Minute {
		if code, _, err := get("/obj.txt"); err == nil && code == 200 {
			rec = time.Since(t0).Round(time.Millisecond).String()
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	note(fmt.Sprintf("flood: %d idle conns (RLIMIT_NOFILE %d): serving after close in", len(flood), soakNoFile), rec)
	time.Sleep(duration / 2)

	// 3. Slow clients: headers trickled to the router, bodies to the admin.
	var cut atomic.Int64
	var slow sync.WaitGroup
	slowWindow := 40 * time.Second // beyond the router's 30 s ReadTimeout and the admin's 15 s body grace
	slowUntil := time.Now().Add(slowWindow)
	for i := range 100 {
		addr, head := d.router, "GET /obj.txt HTTP/1.1\r\nHost: soak.localhost\r\nX-Slow: "
		if i%2 == 1 {
			addr, head = adminAddr, "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 10000000\r\n\r\n"
		}
		slow.Go(func() {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				return
			}
			defer c.Close()
			io.WriteString(c, head)
			for time.Now().Before(slowUntil) {
				c.SetWriteDeadline(time.Now().Add(time.Second))
				if _, err := c.Write([]byte("x")); err != nil {
					cut.Add(1)
					return
				}
				time.Sleep(500 * time.Millisecond)
			}
		})
	}
	slow.Wait()
	note("slow clients (50 router headers, 50 admin bodies, 1 B/0.5 s): cut by the server", fmt.Sprintf("%d of 100 within %s", cut.Load(), slowWindow))
	time.Sleep(duration / 2)
	fds1, rss1 := procStat(pid())
	note("dorad fds / RSS after the faults above", fmt.Sprintf("%d / %d MiB", fds1, rss1/1024))

	// 4. Kill dorad (SIGKILL) and restart it.
	t.Logf("%s killing dorad", time.Now().UTC().Format("15:04:05.000"))
	d.cmd.Process.Kill()
	<-d.exited
	t0 = time.Now()
	d = start()
	up := waitUp(d)
	rec = "pipeline not answering in 2m"
	for time.Since(t0) < 2*time.Minute {
		if code, body, err := get("/obj.txt?grepd/hello"); err == nil && code == 200 && bytes.Equal(body, wantPipe) {
			rec = time.Since(t0).Round(10 * time.Millisecond).String()
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	note("dorad killed (SIGKILL) and restarted: listeners up after", up.Round(10*time.Millisecond).String())
	note("dorad killed and restarted: pipelines answering after", rec)
	orphans := 0
	for _, p := range instancePids(dataDir) {
		if ppid(p) == 1 {
			orphans++
		}
	}
	note("instances of the killed dorad left running (re-parented to 1)", strconv.Itoa(orphans))
	time.Sleep(duration)

	close(stop)
	wg.Wait()
	fds2, rss2 := procStat(pid())
	note("restarted dorad fds / RSS at the end", fmt.Sprintf("%d / %d MiB", fds2, rss2/1024))

	// Every acknowledged upload must read back intact.
	lost := 0
	for key, sum := range st.acked {
		req, _ := http.NewRequest("GET", d.adminURL+"/v1/objects/soak/"+key, nil)
		auth.SignRequest(req, rootAK, rootSK, nil, time.Now())
		res, err := client.Do(req)
		if err != nil {
			lost++
			continue
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || md5.Sum(b) != sum {
			lost++
		}
	}
	tmpLeft, _ := os.ReadDir(filepath.Join(dataDir, "objects", ".tmp"))

	var out strings.Builder
	fmt.Fprintf(&out, "\nSOAK (phase %s, dorad RLIMIT_NOFILE %d)\n", duration, soakNoFile)
	soakRows(&out, "requests sent: ", st.sent)
	soakRows(&out, "failed: ", st.failed)
	if len(st.failed) == 0 {
		soakRow(&out, "failed", 0)
	}
	soakRow(&out, "acknowledged uploads", len(st.acked))
	soakRow(&out, "acknowledged uploads lost", lost)
	soakRow(&out, "upload temp files left in objects/.tmp", len(tmpLeft))
	for _, r := range rows {
		fmt.Fprintf(&out, "| %-72s | %10s |\n", r.name, r.value)
	}
	fmt.Print(out.String())
	if p := os.Getenv("SOAK_OUT"); p != "" {
		os.WriteFile(p, []byte(out.String()), 0o644)
	}
	if lost > 0 {
		t.Errorf("%d acknowledged uploads lost", lost)
	}
	for k, n := range st.failed {
		if strings.HasSuffix(k, "HTTP 200 with wrong bytes") {
			t.Errorf("%s: %d (a truncated or corrupted answer that looked complete)", k, n)
		}
	}
	if orphans > 0 {
		t.Errorf("%d instances outlived the killed dorad", orphans)
	}
	for _, r := range rows {
		if strings.HasPrefix(r.value, "not ") || strings.Contains(r.value, "not answering") {
			t.Errorf("%s: %s", r.name, r.value)
		}
	}
}

// instancePids lists the processes whose working directory is an instance
// directory under dataDir/instances.
func instancePids(dataDir string) []int {
	prefix, _ := filepath.Abs(filepath.Join(dataDir, "instances"))
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cwd, err := os.Readlink("/proc/" + e.Name() + "/cwd")
		if err == nil && strings.HasPrefix(cwd, prefix+"/") {
			pids = append(pids, pid)
		}
	}
	sort.Ints(pids)
	return pids
}

func killInstances(dataDir string) {
	for _, p := range instancePids(dataDir) {
		syscall.Kill(p, syscall.SIGKILL)
	}
}

func ppid(pid int) int {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 2 {
		return 0
	}
	n, _ := strconv.Atoi(f[1])
	return n
}

// lockedLog keeps dorad's output (the last 64 KiB) for failure messages.
type lockedLog struct {
	mu sync.Mutex
	b  []byte
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	if len(l.b) > 64<<10 {
		l.b = l.b[len(l.b)-64<<10:]
	}
	return len(p), nil
}

func (l *lockedLog) tail() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	sc := bufio.NewScanner(bytes.NewReader(l.b))
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	return strings.Join(lines, "\n")
}

func slicesContains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
