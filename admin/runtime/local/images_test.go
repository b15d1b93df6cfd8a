package local

import (
	"context"
	"errors"
	"io"
	"log"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcr "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/runtime"
	"github.com/doraproject/dora/internal/agenttest"
)

// TestDueImages: an image no deployment uses is due once it has been
// unused for the delay; use resets its clock; a failed removal waits for
// its retry time even when the delay has passed.
func TestDueImages(t *testing.T) {
	const delay = 3 * time.Minute
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	a := &imageRecord{Ref: "r/a:1", ID: "A"}
	b := &imageRecord{Ref: "r/b:1", ID: "B"}
	c := &imageRecord{Ref: "r/c:1", ID: "C", unused: t0.Add(-time.Hour)} // pulled long ago
	recs := []*imageRecord{a, b, c}
	refs := func(due []*imageRecord) string {
		var s []string
		for _, r := range due {
			s = append(s, r.Ref)
		}
		return strings.Join(s, ",")
	}
	steps := []struct {
		at      time.Duration // after t0
		inUse   []string
		due     string
		next    time.Duration // after t0; -1: none
		prepare func()
	}{
		// a used, b not: b's clock starts; c has been unused for an hour.
		{at: 0, inUse: []string{"A"}, due: "r/c:1", next: 3 * time.Minute},
		// c's removal failed: retry in 2 minutes, not before.
		{at: time.Minute, inUse: []string{"A"}, due: "", next: 3 * time.Minute,
			prepare: func() { c.failures, c.retry = 1, t0.Add(3*time.Minute) }},
		// b used again (a scale from zero, a deploy again) before its delay: its clock resets.
		{at: 2 * time.Minute, inUse: []string{"A", "B"}, due: "", next: 3 * time.Minute},
		// c's retry falls due; b is free again, its clock starts now.
		{at: 3 * time.Minute, inUse: []string{"A"}, due: "r/c:1", next: 6 * time.Minute},
		// a released: its clock starts; b not due yet (one second short).
		{at: 6*time.Minute - time.Second, inUse: nil, due: "", next: 6 * time.Minute,
			prepare: func() { recs = []*imageRecord{a, b} }},
		{at: 6 * time.Minute, inUse: nil, due: "r/b:1", next: 9*time.Minute - time.Second},
		{at: 9 * time.Minute, inUse: nil, due: "r/a:1,r/b:1", next: -1},
	}
	for i, st := range steps {
		if st.prepare != nil {
			st.prepare()
		}
		inUse := map[string]bool{}
		for _, id := range st.inUse {
			inUse[id] = true
		}
		due, next := dueImages(recs, inUse, t0.Add(st.at), delay)
		if got := refs(due); got != st.due {
			t.Errorf("step %d (t0+%v): due %q, want %q", i, st.at, got, st.due)
		}
		want := time.Time{}
		if st.next >= 0 {
			want = t0.Add(st.next)
		}
		if !next.Equal(want) {
			t.Errorf("step %d (t0+%v): next %v, want %v", i, st.at, next, want)
		}
	}
	if a.failures != 0 || b.unused.IsZero() {
		t.Fatalf("records: a %+v, b %+v", a, b)
	}
}

// TestRetryWait: a failed removal is tried again after the delay, then
// twice as long per failure, bounded.
func TestRetryWait(t *testing.T) {
	for _, c := range []struct {
		delay    time.Duration
		failures int
		want     time.Duration
	}{
		{3 * time.Minute, 1, 3 * time.Minute},
		{3 * time.Minute, 2, 6 * time.Minute},
		{3 * time.Minute, 6, time.Hour},
		{3 * time.Minute, 100, time.Hour},
		{time.Millisecond, 1, time.Second},
		{time.Millisecond, 3, 4 * time.Second},
	} {
		if got := retryWait(c.delay, c.failures); got != c.want {
			t.Errorf("retryWait(%v, %d) = %v, want %v", c.delay, c.failures, got, c.want)
		}
	}
}

// pushSaltedImage pushes an image of grepd new to podman (salted: its id
// is no other test's) to a registry on loopback under repo and returns
// its reference; podman's copy is removed when the test ends, whoever
// holds it.
func pushSaltedImage(t *testing.T, repo string) string {
	t.Helper()
	srv := httptest.NewServer(ggcr.New(ggcr.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	ref := strings.TrimPrefix(srv.URL, "http://") + "/" + repo
	tag, err := name.NewTag(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img := agenttest.Image(t, filepath.Join(grepdDir, "grepd"), agenttest.ImageOptions{Salt: true})
	if err := remote.Write(tag, img); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { exec.Command("podman", "rmi", "--ignore", ref).Run() })
	return ref
}

// imageExists asks podman whether it has an image named ref.
func imageExists(t *testing.T, ref string) bool {
	t.Helper()
	err := exec.Command("podman", "image", "exists", ref).Run()
	if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 1 {
		return false
	}
	if err != nil {
		t.Fatalf("podman image exists %s: %v", ref, err)
	}
	return true
}

// stays checks that podman still has ref for a while (longer than the
// collector's delay and its next look).
func stays(t *testing.T, ref string, d time.Duration, why string) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if !imageExists(t, ref) {
			t.Fatalf("image %s was removed: %s", ref, why)
		}
	}
}

// TestImageCollected: an image the runtime pulled stays while its
// deployment exists (scaled to zero too) and for ImageGCDelay after it is
// removed (deployed again within it, it is not pulled again), then is
// removed from podman's storage; an image an operator pulled himself
// (podman had the name before) is never removed.
func TestImageCollected(t *testing.T) {
	pod, err := DetectPodman(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	const delay = 2 * time.Second
	r := newRuntimeWith(t, Config{Dir: t.TempDir(), Podman: pod, ImageGCDelay: delay})
	ctx := context.Background()
	ours := pushSaltedImage(t, "test/gc-ours:v1")
	theirs := pushSaltedImage(t, "test/gc-theirs:v1")
	if out, err := exec.Command("podman", "pull", "--quiet", "--tls-verify=false", theirs).CombinedOutput(); err != nil {
		t.Fatalf("the operator's pull: %v: %s", err, out)
	}

	spec := grepdSpec("deploy-gc", 1)
	spec.Package = nil
	spec.OCIImage = ours
	if err := r.Apply(ctx, spec); err != nil {
		t.Fatal(err)
	}
	other := grepdSpec("deploy-gc-theirs", 0)
	other.Package = nil
	other.OCIImage = theirs
	if err := r.Apply(ctx, other); err != nil {
		t.Fatal(err)
	}
	eventually(t, "healthy", func() bool { return status(t, r, "deploy-gc").Healthy == 1 })
	if err := r.Scale(ctx, "deploy-gc", 0, "test"); err != nil {
		t.Fatal(err)
	}
	stays(t, ours, 2*delay, "its deployment, scaled to zero, still names it")

	// Removed, then deployed again within the delay: the image is still
	// there, and in use again.
	if err := r.Remove(ctx, "deploy-gc"); err != nil {
		t.Fatal(err)
	}
	if !imageExists(t, ours) {
		t.Fatal("the image was removed with its deployment, not after the delay")
	}
	if err := r.Apply(ctx, spec); err != nil {
		t.Fatal(err)
	}
	stays(t, ours, 2*delay, "deployed again within the delay")
	if err := r.Remove(ctx, "deploy-gc"); err != nil {
		t.Fatal(err)
	}
	if err := r.Remove(ctx, "deploy-gc-theirs"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the pulled image removed", func() bool { return !imageExists(t, ours) })
	stays(t, theirs, 2*delay, "the operator pulled it, not the runtime")
}

// TestImageCollectedAfterRestart: the images a previous run of the
// runtime pulled (same directory) and nothing applies again are removed
// ImageGCDelay after the new run starts; one applied again stays.
func TestImageCollectedAfterRestart(t *testing.T) {
	pod, err := DetectPodman(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ctx := context.Background()
	dropped := pushSaltedImage(t, "test/gc-dropped:v1")
	kept := pushSaltedImage(t, "test/gc-kept:v1")
	specs := map[string]string{"deploy-dropped": dropped, "deploy-kept": kept}
	first, err := New(Config{Dir: dir, Podman: pod, ImageGCDelay: -1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	for id, ref := range specs {
		spec := grepdSpec(id, 0)
		spec.Package = nil
		spec.OCIImage = ref
		if err := first.Apply(ctx, spec); err != nil {
			t.Fatal(err)
		}
	}
	first.Close()

	const delay = 2 * time.Second
	second := newRuntimeWith(t, Config{Dir: dir, Podman: pod, ImageGCDelay: delay})
	spec := grepdSpec("deploy-kept", 0)
	spec.Package = nil
	spec.OCIImage = kept
	if err := second.Apply(ctx, spec); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the image nothing applied again removed", func() bool { return !imageExists(t, dropped) })
	stays(t, kept, 2*delay, "applied again after the restart")
}

// TestImageInUseOutsideRetried: an image a container started outside Dora
// uses is not removed (podman refuses; the runtime logs it and goes on),
// and is removed on a later try once that container is gone.
func TestImageInUseOutsideRetried(t *testing.T) {
	pod, err := DetectPodman(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	const delay = time.Second
	r := newRuntimeWith(t, Config{Dir: t.TempDir(), Podman: pod, ImageGCDelay: delay})
	ctx := context.Background()
	ref := pushSaltedImage(t, "test/gc-outside:v1")
	spec := grepdSpec("deploy-gc-outside", 0)
	spec.Package = nil
	spec.OCIImage = ref
	if err := r.Apply(ctx, spec); err != nil {
		t.Fatal(err)
	}
	ctr := "dora-test-outside-" + ownerValue(r.cfg.Dir)[:8]
	if out, err := exec.Command("podman", "--runtime", pod.OCIRuntime, "create", "--name", ctr, ref).CombinedOutput(); err != nil {
		t.Fatalf("podman create: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("podman", "rm", "--force", "--ignore", ctr).Run() })
	if err := r.Remove(ctx, "deploy-gc-outside"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a failed removal", func() bool {
		r.imgRecMu.Lock()
		defer r.imgRecMu.Unlock()
		return len(r.images) == 1 && r.images[0].failures > 0
	})
	if !imageExists(t, ref) {
		t.Fatal("the image a container uses was removed")
	}
	if out, err := exec.Command("podman", "rm", "--force", ctr).CombinedOutput(); err != nil {
		t.Fatalf("podman rm: %v: %s", err, out)
	}
	eventually(t, "the image removed on a later try", func() bool { return !imageExists(t, ref) })
	if b, err := os.ReadFile(filepath.Join(r.cfg.Dir, imagesFile)); err != nil || string(b) != "[]" {
		t.Fatalf("records after the removal: %q, %v", b, err)
	}
}

// TestSameImage: podman's ids match in full or abbreviated, never on a
// prefix too short to tell images apart.
func TestSameImage(t *testing.T) {
	full := "5b72330ec47bec954c1a8748828b8ff95b8c26018cd37d10d547befe19e51c5b"
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{full, full, true},
		{full[:12], full, true},
		{full, "sha256:" + full, true},
		{full[:11], full, false},
		{"", full, false},
		{full, "6" + full[1:], false},
	} {
		if got := sameImage(c.a, c.b); got != c.want {
			t.Errorf("sameImage(%q, %q) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}

// TestTestsLeaveNoImages: a test's runtime (newRuntimeWith) removes the
// images it pulled when the test ends, as it does its containers: the
// package's tests do not fill podman's storage run after run.
func TestTestsLeaveNoImages(t *testing.T) {
	var ref string
	t.Run("deploy", func(t *testing.T) {
		r := podmanRuntime(t, nil, false)
		ref = pushGrepdImageWith(t, agenttest.ImageOptions{Salt: true})
		spec := grepdSpec("deploy-leaves", 1)
		spec.Package = nil
		spec.OCIImage = ref
		if err := r.Apply(context.Background(), spec); err != nil {
			t.Fatal(err)
		}
		eventually(t, "healthy", func() bool { return status(t, r, "deploy-leaves").Healthy == 1 })
	})
	if ref != "" && imageExists(t, ref) {
		exec.Command("podman", "rmi", ref).Run()
		t.Fatalf("the test left image %s in podman's storage", ref)
	}
}

// rmiBehind removes ref from podman's storage behind the runtime's back,
// as an operator's `podman rmi` would, and checks that image id is gone.
func rmiBehind(t *testing.T, ref, id string) {
	t.Helper()
	if out, err := exec.Command("podman", "rmi", ref).CombinedOutput(); err != nil {
		t.Fatalf("podman rmi %s: %v: %s", ref, err, out)
	}
	if imageExists(t, id) {
		t.Fatalf("image %s still there after podman rmi %s", id, ref)
	}
}

// TestMissingImagePulledAgain: an instance whose image was removed from
// podman's storage behind the runtime's back (the deployment at zero or
// its instance stopped) pulls it again from the deployment's reference
// when it starts, runs it, and the name is the runtime's to collect now
// (an operator had pulled it first); when the reference names another
// image by then, the instance fails saying so instead of running it.
func TestMissingImagePulledAgain(t *testing.T) {
	pod, err := DetectPodman(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	r := newRuntimeWith(t, Config{Dir: t.TempDir(), Podman: pod})
	ctx := context.Background()
	ref := pushSaltedImage(t, "test/restore:v1")
	if out, err := exec.Command("podman", "pull", "--quiet", "--tls-verify=false", ref).CombinedOutput(); err != nil {
		t.Fatalf("the operator's pull: %v: %s", err, out)
	}
	spec := grepdSpec("deploy-restore", 1)
	spec.Package = nil
	spec.OCIImage = ref
	if err := r.Apply(ctx, spec); err != nil {
		t.Fatal(err)
	}
	eventually(t, "healthy", func() bool { return status(t, r, "deploy-restore").Healthy == 1 })
	if r.ownsRef(ref) {
		t.Fatal("a name the operator pulled was claimed")
	}
	r.mu.Lock()
	id := r.deps["deploy-restore"].image
	r.mu.Unlock()

	// Scaled to zero, the image removed: the wake-up (two instances,
	// one pull) pulls it again.
	if err := r.Scale(ctx, "deploy-restore", 0, "test"); err != nil {
		t.Fatal(err)
	}
	rmiBehind(t, ref, id)
	if err := r.Scale(ctx, "deploy-restore", 2, "test"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "healthy again after the pull", func() bool { return status(t, r, "deploy-restore").Healthy == 2 })
	for _, in := range status(t, r, "deploy-restore").Instances {
		if in.Restarts != 0 {
			t.Errorf("the missing image counted as a crash: %+v", in)
		}
	}
	if !imageExists(t, id) || !r.ownsRef(ref) {
		t.Fatalf("after the pull: image %s there %v, name claimed %v", id, imageExists(t, id), r.ownsRef(ref))
	}
	logs, err := r.Logs(ctx, "deploy-restore", runtime.LogQuery{Index: 1, Stream: "stderr"})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(logs)
	logs.Close()
	if !strings.Contains(string(b), "no longer in podman's storage") || !strings.Contains(string(b), "pulled again") {
		t.Errorf("stderr does not say the image was pulled again:\n%s", b)
	}

	// The instance stopped, the image removed, the instance started.
	if err := r.StopInstances(ctx, "deploy-restore", nil); err != nil {
		t.Fatal(err)
	}
	rmiBehind(t, ref, id)
	if err := r.StartInstances(ctx, "deploy-restore", nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, "healthy again after start", func() bool { return status(t, r, "deploy-restore").Healthy == 2 })

	// The tag moved in the registry meanwhile: the instance fails and
	// does not run the other image.
	tag, err := name.NewTag(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, agenttest.Image(t, filepath.Join(grepdDir, "grepd"), agenttest.ImageOptions{Salt: true})); err != nil {
		t.Fatal(err)
	}
	if err := r.StopInstances(ctx, "deploy-restore", nil); err != nil {
		t.Fatal(err)
	}
	rmiBehind(t, ref, id)
	if err := r.StartInstances(ctx, "deploy-restore", nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, "FAILED saying the reference names another image", func() bool {
		st := status(t, r, "deploy-restore")
		return st.Status == dora.DeployFailed && strings.Contains(st.Message, "names another image now") && strings.Contains(st.Message, "deploy again")
	})
	if running := labelled(t, r, "deploy-restore"); len(running) != 0 {
		t.Fatalf("containers of the deployment: %v", running)
	}
}

// fakePodman writes a podman stand-in into dir: `image exists` says no,
// a pull prints the id of localhost/b:1, `image inspect` answers for
// localhost/a:1, b:1 and c:1, and every call that changes something is
// logged to dir/log. `rmi localhost/a:1` opens the fifo dir/started for
// writing and then waits until the fifo dir/release is written.
func fakePodman(t *testing.T, dir string) *Podman {
	t.Helper()
	for _, f := range []string{"started", "release"} {
		if err := syscall.Mkfifo(filepath.Join(dir, f), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	script := `#!/bin/sh
dir='` + dir + `'
shift 2 # --runtime <oci runtime>
for a; do last=$a; done
case "$1" in
rmi)
	echo "rmi $last" >>"$dir/log"
	if [ "$last" = localhost/a:1 ]; then
		echo >"$dir/started"
		cat "$dir/release" >/dev/null
	fi ;;
pull)
	echo "pull $last" >>"$dir/log"
	echo ` + fakeID("b") + ` ;;
image)
	case "$2" in
	exists) exit 1 ;;
	inspect)
		case "$4" in
		json) echo '[{"Config":{"Cmd":["x"]}}]' ;;
		*)
			case "$last" in
			localhost/a:1) echo ` + fakeID("a") + ` ;;
			localhost/b:1) echo ` + fakeID("b") + ` ;;
			localhost/c:1) echo ` + fakeID("c") + ` ;;
			*) exit 1 ;;
			esac ;;
		esac ;;
	esac ;;
esac
exit 0
`
	bin := filepath.Join(dir, "podman")
	if err := os.WriteFile(bin, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	return &Podman{Bin: bin, OCIRuntime: "runc"}
}

// fakeID is a 64-hex-digit image id made of c.
func fakeID(c string) string { return strings.Repeat(c, 64) }

// waitBlockedIn returns once a goroutine whose stack names fn waits to
// take an RWMutex shared.
func waitBlockedIn(t *testing.T, fn string) {
	t.Helper()
	buf := make([]byte, 1<<20)
	for {
		n := goruntime.Stack(buf, true)
		for _, g := range strings.Split(string(buf[:n]), "\n\n") {
			if strings.Contains(g, fn) && strings.Contains(g, "SemacquireRWMutexR") {
				return
			}
		}
		time.Sleep(time.Millisecond)
	}
}

// TestPullWaitsForOneRemoval: a deploy whose pull comes while the
// collector removes an image waits for that removal only, not for the
// collector's whole pass: the next due image is removed after the pull
// (or later), never before it.
func TestPullWaitsForOneRemoval(t *testing.T) {
	fake := t.TempDir()
	r := newRuntimeWith(t, Config{Dir: t.TempDir(), Podman: fakePodman(t, fake), ImageGCDelay: -1})
	now := time.Now()
	r.recordPull("localhost/a:1", fakeID("a"), now.Add(-time.Hour))
	r.recordPull("localhost/c:1", fakeID("c"), now.Add(-time.Hour))

	collected := make(chan struct{})
	go func() {
		defer close(collected)
		r.collectImages(context.Background(), now)
	}()
	if _, err := os.ReadFile(filepath.Join(fake, "started")); err != nil { // a's removal is under way
		t.Fatal(err)
	}
	applied := make(chan error, 1)
	go func() {
		applied <- r.Apply(context.Background(), runtime.Spec{
			Deployment: dora.Deployment{ID: "b", Ufop: "b", Version: "v1", Region: "z0"},
			Release:    dora.Release{Ufop: "b", Version: "v1"},
			OCIImage:   "localhost/b:1",
		})
	}()
	waitBlockedIn(t, "holdImages") // the deploy waits for a's removal
	if err := os.WriteFile(filepath.Join(fake, "release"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := <-applied; err != nil {
		t.Fatal(err)
	}
	<-collected

	b, err := os.ReadFile(filepath.Join(fake, "log"))
	if err != nil {
		t.Fatal(err)
	}
	log := strings.Split(strings.TrimSpace(string(b)), "\n")
	at := map[string]int{}
	for i, l := range log {
		at[l] = i + 1
	}
	pull, rmC := at["pull localhost/b:1"], at["rmi localhost/c:1"]
	if at["rmi localhost/a:1"] != 1 || pull == 0 || (rmC != 0 && rmC < pull) {
		t.Fatalf("podman calls %q: want a's removal, then the deploy's pull, then c's removal if any", log)
	}
	if !r.ownsRef("localhost/b:1") || r.ownsRef("localhost/a:1") {
		t.Errorf("records after the pass: b pulled and a removed expected")
	}
}

// TestPullGivesUpWaitingForCollector: a deploy waiting for the collector
// to finish a removal gives up when its context ends, and lets the
// collector have the lock once it would have got it.
func TestPullGivesUpWaitingForCollector(t *testing.T) {
	r := newRuntimeWith(t, Config{Dir: t.TempDir(), Podman: fakePodman(t, t.TempDir()), ImageGCDelay: -1})
	r.imgMu.Lock() // a removal under way
	ctx, cancel := context.WithCancel(context.Background())
	applied := make(chan error, 1)
	go func() {
		applied <- r.Apply(ctx, runtime.Spec{
			Deployment: dora.Deployment{ID: "b", Ufop: "b", Version: "v1", Region: "z0"},
			Release:    dora.Release{Ufop: "b", Version: "v1"},
			OCIImage:   "localhost/b:1",
		})
	}()
	waitBlockedIn(t, "holdImages")
	cancel()
	if err := <-applied; !errors.Is(err, context.Canceled) {
		t.Fatalf("Apply = %v, want context.Canceled", err)
	}
	r.imgMu.Unlock()
	r.imgMu.Lock() // the abandoned wait let it go again
	r.imgMu.Unlock()
	if r.ownsRef("localhost/b:1") {
		t.Error("an abandoned deploy pulled its image")
	}
}
