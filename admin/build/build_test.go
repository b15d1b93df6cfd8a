package build

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/iotest"
	"time"

	"github.com/doraproject/dora/admin/client"
)

// entry is one tar member for the hand-made archives of these tests.
type entry struct {
	name, body, link string
	typ              byte
	mode             int64
}

func tarGz(t *testing.T, entries ...entry) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		mode := e.mode
		if mode == 0 {
			mode = 0o644
		}
		hdr := &tar.Header{Name: e.name, Typeflag: typ, Mode: mode, Linkname: e.link, Size: int64(len(e.body))}
		if typ != tar.TypeReg {
			hdr.Size = 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			tw.Write([]byte(e.body))
		}
	}
	tw.Close()
	zw.Close()
	return &buf
}

// packDir packs a directory's contents as qdoractl build does (its own
// function).
func packDir(t *testing.T, dir string) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	if err := client.WriteTarGz(context.Background(), &buf, dir); err != nil {
		t.Fatal(err)
	}
	return &buf
}

const okYAML = "image: ubuntu\nbuild_script:\n  - cp -r $RESOURCE/. .\nrun: ./run.sh\n"

func TestParseUfopYAML(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    UfopYAML
		wantErr string
	}{
		{"seed example", "image: ubuntu\nbuild_script:\n  - echo building...\n  - mv $RESOURCE/dir/* .\nrun: ./grepd -f grepd.conf\n",
			UfopYAML{Image: "ubuntu", BuildScript: []string{"echo building...", "mv $RESOURCE/dir/* ."}, Run: "./grepd -f grepd.conf"}, ""},
		{"no build script", "image: test.v7\nrun: ./x\n", UfopYAML{Image: "test.v7", Run: "./x"}, ""},
		{"protocol", "image: u\nrun: ./x\nprotocol: Dora\n", UfopYAML{Image: "u", Run: "./x", Protocol: "dora"}, ""},
		{"bad protocol", "image: u\nrun: ./x\nprotocol: grpc\n", UfopYAML{}, `protocol "grpc"`},
		{"missing image", "run: ./x\n", UfopYAML{}, "image is required"},
		{"missing both", "build_script: []\n", UfopYAML{}, "image is required; run is required"},
		{"unknown field", "image: u\nrun: x\nfoo: 1\n", UfopYAML{}, "field foo not found"},
		{"script not a list", "image: u\nrun: x\nbuild_script: echo hi\n", UfopYAML{}, "cannot unmarshal"},
		{"script of maps", "image: u\nrun: x\nbuild_script:\n  - {a: b}\n", UfopYAML{}, "cannot unmarshal"},
		{"empty line", "image: u\nrun: x\nbuild_script:\n  - ''\n", UfopYAML{}, "line 1 is empty"},
		{"empty", "", UfopYAML{}, "empty"},
		{"not yaml", "image: [\n", UfopYAML{}, "ufop.yaml"},
		{"two documents", "image: u\nrun: x\n---\nimage: v\n", UfopYAML{}, "more than one document"},
		{"body limit and cache", "image: u\nrun: x\nbody_limit: 1000\ncache: {enabled: true, ttl: 90}\n",
			UfopYAML{Image: "u", Run: "x", BodyLimit: 1000, Cache: &UfopYAMLCache{Enabled: true, TTL: "90"}, CacheTTL: 90 * time.Second}, ""},
		{"body limit too big", "image: u\nrun: x\nbody_limit: 10000000\n", UfopYAML{}, "body_limit"},
		{"bad cache ttl", "image: u\nrun: x\ncache: {enabled: true, ttl: soon}\n", UfopYAML{}, "cache.ttl"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseUfopYAML([]byte(tt.in))
			if tt.wantErr != "" {
				if !errors.Is(err, ErrBadPackage) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want ErrBadPackage containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Image != tt.want.Image || got.Run != tt.want.Run || strings.Join(got.BuildScript, "|") != strings.Join(tt.want.BuildScript, "|") ||
				got.BodyLimit != tt.want.BodyLimit || got.CacheTTL != tt.want.CacheTTL || (got.Cache == nil) != (tt.want.Cache == nil) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func FuzzParseUfopYAML(f *testing.F) {
	f.Add([]byte(okYAML))
	f.Add([]byte("image: u\nrun: x\nbuild_script: [a, b]\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		u, err := ParseUfopYAML(b)
		if err == nil && (u.Image == "" || u.Run == "") {
			t.Fatalf("accepted %q without image or run", b)
		}
		if err != nil && !errors.Is(err, ErrBadPackage) {
			t.Fatalf("error %v does not wrap ErrBadPackage", err)
		}
	})
}

func TestUnpackRejects(t *testing.T) {
	yaml := entry{name: "ufop.yaml", body: okYAML}
	tests := []struct {
		name     string
		archive  func(t *testing.T) io.Reader
		maxBytes int64
		want     string
	}{
		{"not gzip", func(t *testing.T) io.Reader { return strings.NewReader("plain text") }, 0, "not gzip"},
		{"truncated", func(t *testing.T) io.Reader {
			b := tarGz(t, yaml, entry{name: "big", body: strings.Repeat("x", 10000)}).Bytes()
			return bytes.NewReader(b[:len(b)/2])
		}, 0, ""},
		{"dotdot", func(t *testing.T) io.Reader { return tarGz(t, yaml, entry{name: "../evil", body: "x"}) }, 0, ".. component"},
		{"inner dotdot", func(t *testing.T) io.Reader { return tarGz(t, yaml, entry{name: "a/../../evil", body: "x"}) }, 0, ".. component"},
		{"absolute", func(t *testing.T) io.Reader { return tarGz(t, yaml, entry{name: "/tmp/evil", body: "x"}) }, 0, "absolute"},
		{"symlink absolute", func(t *testing.T) io.Reader {
			return tarGz(t, yaml, entry{name: "l", typ: tar.TypeSymlink, link: "/etc/passwd"})
		}, 0, "leaves the tree"},
		{"symlink climbing", func(t *testing.T) io.Reader {
			return tarGz(t, yaml, entry{name: "d/l", typ: tar.TypeSymlink, link: "../../x"})
		}, 0, "leaves the tree"},
		{"symlink chain escaping", func(t *testing.T) io.Reader {
			return tarGz(t, yaml, entry{name: "s", typ: tar.TypeSymlink, link: "."}, entry{name: "t", typ: tar.TypeSymlink, link: "s/.."})
		}, 0, "resolves outside"},
		{"write through symlink", func(t *testing.T) io.Reader {
			return tarGz(t, yaml, entry{name: "d", typ: tar.TypeSymlink, link: "."}, entry{name: "d/f", body: "x"})
		}, 0, "below a non-directory"},
		{"hardlink out", func(t *testing.T) io.Reader {
			return tarGz(t, yaml, entry{name: "h", typ: tar.TypeLink, link: "../../etc/passwd"})
		}, 0, "leaves the tree"},
		{"hardlink absolute", func(t *testing.T) io.Reader {
			return tarGz(t, yaml, entry{name: "h", typ: tar.TypeLink, link: "/etc/passwd"})
		}, 0, "leaves the tree"},
		{"hardlink to itself", func(t *testing.T) io.Reader {
			return tarGz(t, yaml, entry{name: "h", body: "x"}, entry{name: "h", typ: tar.TypeLink, link: "h"})
		}, 0, "itself"},
		{"name too long", func(t *testing.T) io.Reader {
			return tarGz(t, yaml, entry{name: strings.Repeat("a", 300), body: "x"})
		}, 0, "too long"},
		{"path too long", func(t *testing.T) io.Reader {
			return tarGz(t, yaml, entry{name: strings.Repeat("a/", 3000) + "b", body: "x"})
		}, 0, "too long"},
		{"symlink target too long", func(t *testing.T) io.Reader {
			return tarGz(t, yaml, entry{name: "l", typ: tar.TypeSymlink, link: strings.Repeat("a/", 3000) + "b"})
		}, 0, "too long"},
		{"device", func(t *testing.T) io.Reader { return tarGz(t, yaml, entry{name: "dev", typ: tar.TypeChar}) }, 0, "unsupported entry type"},
		{"fifo", func(t *testing.T) io.Reader { return tarGz(t, yaml, entry{name: "p", typ: tar.TypeFifo}) }, 0, "unsupported entry type"},
		{"too large", func(t *testing.T) io.Reader {
			return tarGz(t, yaml, entry{name: "big", body: strings.Repeat("x", 2000)})
		}, 1000, "more than 1000 bytes"},
		{"no ufop.yaml", func(t *testing.T) io.Reader { return tarGz(t, entry{name: "main.go", body: "package main"}) }, 0, "no ufop.yaml"},
		{"ufop.yaml not at root", func(t *testing.T) io.Reader { return tarGz(t, entry{name: "dir/ufop.yaml", body: okYAML}) }, 0, "no ufop.yaml"},
		{"ufop.yaml a symlink", func(t *testing.T) io.Reader {
			return tarGz(t, entry{name: "real.yaml", body: okYAML}, entry{name: "ufop.yaml", typ: tar.TypeSymlink, link: "real.yaml"})
		}, 0, "no ufop.yaml"},
		{"bad ufop.yaml", func(t *testing.T) io.Reader { return tarGz(t, entry{name: "ufop.yaml", body: "image: u\n"}) }, 0, "run is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			b, err := New(root)
			if err != nil {
				t.Fatal(err)
			}
			_, err = b.Unpack(context.Background(), "testufop", 1, tt.archive(t), tt.maxBytes)
			if !errors.Is(err, ErrBadPackage) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want ErrBadPackage containing %q", err, tt.want)
			}
			// Nothing is left behind: no resource dir, no temp dir.
			left, _ := os.ReadDir(filepath.Join(root, "testufop", "1"))
			if len(left) != 0 {
				t.Fatalf("left behind: %v", left)
			}
			if _, err := os.Lstat(filepath.Join(filepath.Dir(root), "evil")); err == nil {
				t.Fatal("wrote outside the tree")
			}
		})
	}
}

func TestUnpackAccepts(t *testing.T) {
	b, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	arch := tarGz(t,
		entry{name: "./", typ: tar.TypeDir, mode: 0o755},
		entry{name: "./ufop.yaml", body: okYAML},
		entry{name: "./dir/run.sh", body: "#!/bin/sh\necho hi\n", mode: 0o4755},
		entry{name: "dir/sub/link", typ: tar.TypeSymlink, link: "../run.sh"},
		entry{name: "dir/hard", typ: tar.TypeLink, link: "dir/run.sh"},
		entry{name: "dangling", typ: tar.TypeSymlink, link: "nowhere"},
	)
	u, err := b.Unpack(context.Background(), "testufop", 2, arch, 0)
	if err != nil {
		t.Fatal(err)
	}
	if u.Run != "./run.sh" {
		t.Fatalf("run %q", u.Run)
	}
	res := b.resourceDir("testufop", 2)
	fi, err := os.Stat(filepath.Join(res, "dir", "run.sh"))
	if err != nil || fi.Mode().Perm() != 0o755 || fi.Mode()&os.ModeSetuid != 0 {
		t.Fatalf("run.sh: %v %v", fi.Mode(), err)
	}
	if got, err := os.ReadFile(filepath.Join(res, "dir", "sub", "link")); err != nil || string(got) != "#!/bin/sh\necho hi\n" {
		t.Fatalf("link: %q %v", got, err)
	}
	if got, err := os.ReadFile(filepath.Join(res, "dir", "hard")); err != nil || !strings.Contains(string(got), "echo hi") {
		t.Fatalf("hard link: %q %v", got, err)
	}
}

func TestBadNames(t *testing.T) {
	b, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"../x", "a/b", "", "imageInfo"} {
		if _, err := b.Unpack(context.Background(), name, 1, tarGz(t, entry{name: "ufop.yaml", body: okYAML}), 0); err == nil {
			t.Errorf("Unpack accepted ufop name %q", name)
		}
		if err := b.Build(context.Background(), name, 1, "", nil); err == nil {
			t.Errorf("Build accepted ufop name %q", name)
		}
	}
	if _, err := b.Unpack(context.Background(), "testufop", 0, tarGz(t, entry{name: "ufop.yaml", body: okYAML}), 0); err == nil {
		t.Error("Unpack accepted build number 0")
	}
}

// unpackScript unpacks a package whose ufop.yaml runs script.
func unpackScript(t *testing.T, b *Builder, n int, script ...string) {
	t.Helper()
	y := "image: ubuntu\nrun: ./run.sh\nbuild_script:\n"
	for _, l := range script {
		y += "  - '" + strings.ReplaceAll(l, "'", "''") + "'\n"
	}
	if _, err := b.Unpack(context.Background(), "testufop", n, tarGz(t, entry{name: "ufop.yaml", body: y}, entry{name: "data.txt", body: "payload"}), 0); err != nil {
		t.Fatal(err)
	}
}

func TestBuildFailingLine(t *testing.T) {
	b, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	unpackScript(t, b, 1, "echo first", "cp $RESOURCE/data.txt . && echo copied", "echo oops >&2; exit 3", "echo never")
	var log bytes.Buffer
	err = b.Build(context.Background(), "testufop", 1, "", &log)
	if err == nil || !strings.Contains(err.Error(), "line 3") || !strings.Contains(err.Error(), "exit 3") {
		t.Fatalf("err = %v, want line 3 and its command", err)
	}
	for _, want := range []string{"$ echo first\nfirst\n", "copied\n", "$ echo oops >&2; exit 3\noops\n", "build failed"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, log.String())
		}
	}
	if strings.Contains(log.String(), "never") && !strings.Contains(log.String(), "echo never") {
		t.Error("ran the line after the failing one")
	}
	if strings.Contains(log.String(), "$ echo never") {
		t.Error("ran the line after the failing one")
	}
	if _, err := os.Stat(b.Dir("testufop", 1)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("failed build left a result dir: %v", err)
	}
	fileLog, err := os.ReadFile(b.LogPath("testufop", 1))
	if err != nil || string(fileLog) != log.String() {
		t.Fatalf("log file differs from the streamed log: %v", err)
	}
	entries, _ := os.ReadDir(filepath.Dir(b.Dir("testufop", 1)))
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "result") {
			t.Fatalf("left %s behind", e.Name())
		}
	}
	if err := b.WriteTarGz("testufop", 1, io.Discard); !errors.Is(err, ErrNoBuild) {
		t.Fatalf("WriteTarGz of a failed build: %v", err)
	}
}

func TestBuildEnvAndBase(t *testing.T) {
	t.Setenv("DORA_ROOT_SK", "secret")
	b, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// Build 1 is the base "image": it leaves base.txt and a symlink.
	unpackScript(t, b, 1, "echo base > base.txt", "ln -s base.txt base.link")
	if err := b.Build(context.Background(), "testufop", 1, "", nil); err != nil {
		t.Fatal(err)
	}
	unpackScript(t, b, 2,
		"test -f base.txt && test -L base.link",
		`test "$PWD" = "$(pwd)"`,
		`test -z "$DORA_ROOT_SK"`,
		"cp $RESOURCE/data.txt .",
		`echo "$RESOURCE" > resource.txt`,
	)
	var log bytes.Buffer
	if err := b.Build(context.Background(), "testufop", 2, b.Dir("testufop", 1), &log); err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	dir := b.Dir("testufop", 2)
	for name, want := range map[string]string{"base.txt": "base\n", "data.txt": "payload", "base.link": "base\n"} {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || string(got) != want {
			t.Errorf("%s = %q, %v; want %q", name, got, err, want)
		}
	}
	// The base build is untouched, and $RESOURCE is gone after the build.
	if _, err := os.Stat(filepath.Join(b.Dir("testufop", 1), "data.txt")); err == nil {
		t.Error("build 2 wrote into its base")
	}
	res, _ := os.ReadFile(filepath.Join(dir, "resource.txt"))
	if _, err := os.Stat(strings.TrimSpace(string(res))); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("resource dir %s kept after the build", res)
	}

	// The artifact holds the same files.
	var art bytes.Buffer
	if err := b.WriteTarGz("testufop", 2, &art); err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(&art)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	got := map[string]string{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		got[hdr.Name] = string(body) + hdr.Linkname
	}
	if got["base.txt"] != "base\n" || got["data.txt"] != "payload" || got["base.link"] != "base.txt" {
		t.Fatalf("artifact = %v", got)
	}
}

func TestBuildCancel(t *testing.T) {
	b, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	unpackScript(t, b, 1, "echo started; sleep 600 & sleep 600")
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- b.Build(ctx, "testufop", 1, "", pw); pw.Close() }()
	// Cancel once the line is running (its first output arrived).
	buf := make([]byte, 64)
	var seen string
	for !strings.Contains(seen, "started") {
		n, err := pr.Read(buf)
		if err != nil {
			t.Fatalf("log ended early: %q %v", seen, err)
		}
		seen += string(buf[:n])
	}
	cancel()
	go io.Copy(io.Discard, pr)
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if _, err := os.Stat(b.Dir("testufop", 1)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("cancelled build left a result")
	}
}

// TestBuildGrepdEndToEnd packs examples/grepd as qdoractl would, builds it
// with its own ufop.yaml and the go on PATH, then runs the result.
func TestBuildGrepdEndToEnd(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Fatal("go is not on PATH; the example's build_script needs it")
	}
	_, file, _, _ := runtime.Caller(0)
	src := filepath.Join(filepath.Dir(file), "..", "..", "examples", "grepd")
	b, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	u, err := b.Unpack(ctx, "grepd", 1, packDir(t, src), 0)
	if err != nil {
		t.Fatal(err)
	}
	if u.Run != "./grepd" || u.Image != "ubuntu" {
		t.Fatalf("ufop.yaml = %+v", u)
	}
	var log bytes.Buffer
	if err := b.Build(ctx, "grepd", 1, "", &log); err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	if !strings.Contains(log.String(), "$ go build -o grepd .") {
		t.Fatalf("log:\n%s", log.String())
	}

	// Run the built program as a runtime would and call it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", u.Run)
	cmd.Dir = b.Dir("grepd", 1)
	cmd.Env = append(os.Environ(), "HOST=127.0.0.1", "PORT="+itoa(port))
	// Its own process group, killed whole: sh may fork grepd rather than
	// exec it, and killing sh alone left grepd running (seen: one leaked
	// per run of make flaky).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Wait() }()
	url := "http://127.0.0.1:" + itoa(port)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url + "/health")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("built grepd never answered: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	resp, err := http.Post(url+"/handler?cmd=grepd/yes", "text/plain", strings.NewReader("no\nyes 1\nnope\nyes 2\n"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	if string(got) != "yes 1\nyes 2\n" {
		t.Fatalf("grepd answered %q", got)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// failingReader returns data, then err.
type failingReader struct {
	data []byte
	err  error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if len(f.data) == 0 {
		return 0, f.err
	}
	n := copy(p, f.data)
	f.data = f.data[n:]
	return n, nil
}

// TestUnpackKeepsReadErrors checks that an upload cut by the caller (the
// admin's http.MaxBytesReader: 413, not 400) or by its context is not
// reported as a bad package only: the cause stays visible to errors.As and
// errors.Is, wherever in the archive the read failed.
func TestUnpackKeepsReadErrors(t *testing.T) {
	arch := tarGz(t, entry{name: "ufop.yaml", body: okYAML}, entry{name: "big", body: strings.Repeat("x", 1<<20)}).Bytes()
	tooLarge := &http.MaxBytesError{Limit: 100}
	for _, cut := range []int{5, 30, len(arch) / 2} {
		for _, cause := range []error{tooLarge, context.Canceled} {
			b, err := New(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			_, err = b.Unpack(context.Background(), "testufop", 1, &failingReader{data: arch[:cut], err: cause}, 0)
			if !errors.Is(err, cause) || (cause == context.Canceled && errors.Is(err, ErrBadPackage)) {
				t.Errorf("cut at %d by %v: err = %v, want it to wrap the reader's error", cut, cause, err)
			}
		}
	}
	// Cancelling the context mid-file is a cancellation too.
	b, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &cancelAfter{r: iotest.OneByteReader(bytes.NewReader(arch)), n: len(arch) / 2, cancel: cancel}
	if _, err := b.Unpack(ctx, "testufop", 1, r, 0); !errors.Is(err, context.Canceled) || errors.Is(err, ErrBadPackage) {
		t.Errorf("cancelled mid-file: err = %v, want context.Canceled", err)
	}
}

// cancelAfter cancels once n bytes have been read.
type cancelAfter struct {
	r      io.Reader
	n      int
	cancel func()
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n -= n
	if c.n <= 0 {
		c.cancel()
	}
	return n, err
}

// TestBuildRemovesReadOnlyDirs checks that directories user code left
// without write permission (chmod, or a Go module cache, which is made
// read-only) do not keep a build's working directory, HOME or $RESOURCE
// on disk after the build, failed or not. Root removes them anyway: the
// case is a platform running as an ordinary user (dorad dev).
func TestBuildRemovesReadOnlyDirs(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root removes read-only directories anyway")
	}
	b, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ro := `mkdir -p "$1/ro" && touch "$1/ro/f" && chmod 555 "$1/ro"`
	unpackScript(t, b, 1, "sh -c '"+ro+"' - \"$HOME\"", "sh -c '"+ro+"' - \"$RESOURCE\"")
	if err := b.Build(context.Background(), "testufop", 1, "", nil); err != nil {
		t.Fatal(err)
	}
	unpackScript(t, b, 2, "sh -c '"+ro+"' - .", "sh -c '"+ro+"' - \"$HOME\"", "false")
	if err := b.Build(context.Background(), "testufop", 2, "", nil); err == nil {
		t.Fatal("build 2 succeeded")
	}
	for n, want := range map[int][]string{1: {"build.log", "result"}, 2: {"build.log", "resource"}} {
		ents, _ := os.ReadDir(filepath.Dir(b.Dir("testufop", n)))
		var got []string
		for _, e := range ents {
			got = append(got, e.Name())
		}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("build %d left %v, want %v", n, got, want)
		}
	}
}

// TestBuildLineLeavesBackgroundJob runs a line that succeeds but leaves a
// background job holding its output: the line counts as succeeded (its
// shell's status), the job is killed, and the build goes on.
func TestBuildLineLeavesBackgroundJob(t *testing.T) {
	b, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	unpackScript(t, b, 1, "echo hi; sleep 600 & echo $! > bg.pid", "echo next")
	var log bytes.Buffer
	if err := b.Build(context.Background(), "testufop", 1, "", &log); err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	if !strings.Contains(log.String(), "hi\n$ echo next\nnext\n") {
		t.Errorf("log:\n%s", log.String())
	}
	raw, err := os.ReadFile(filepath.Join(b.Dir("testufop", 1), "bg.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid := strings.TrimSpace(string(raw))
	// SIGKILL is asynchronous: allow the job a moment to die. A zombie
	// (no reaper in a container) is dead.
	for i := 0; ; i++ {
		stat, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil || strings.Contains(string(stat), ") Z ") {
			break
		}
		if i == 100 {
			t.Fatalf("background job %s still runs: %s", pid, stat)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// failingFile is an unpacked file whose writes fail with err once after
// bytes have been written (or whose Close fails with it, closeErr).
type failingFile struct {
	f        *os.File
	after    int
	err      error
	closeErr bool
}

func (f *failingFile) Write(p []byte) (int, error) {
	if !f.closeErr && len(p) > f.after {
		n, _ := f.f.Write(p[:f.after])
		f.after = 0
		return n, f.err
	}
	f.after -= len(p)
	return f.f.Write(p)
}

func (f *failingFile) Close() error {
	err := f.f.Close()
	if f.closeErr {
		return f.err
	}
	return err
}

// TestUnpackDiskErrorsAreServers: a full disk, a quota or an I/O error
// while a package is unpacked (a write or a close failing) is the
// server's: the error wraps ErrStorage and the errno, never ErrBadPackage
// (which the admin answers 400, "your package is bad"), and nothing is
// left behind.
func TestUnpackDiskErrorsAreServers(t *testing.T) {
	arch := tarGz(t, entry{name: "ufop.yaml", body: okYAML}, entry{name: "big", body: strings.Repeat("x", 1<<20)}).Bytes()
	for _, errno := range []syscall.Errno{syscall.ENOSPC, syscall.EDQUOT, syscall.EIO} {
		for _, onClose := range []bool{false, true} {
			root := t.TempDir()
			b, err := New(root)
			if err != nil {
				t.Fatal(err)
			}
			b.create = func(p string, perm os.FileMode) (io.WriteCloser, error) {
				f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, perm)
				if err != nil || filepath.Base(p) != "big" {
					return f, err
				}
				return &failingFile{f: f, after: 4096, err: &os.PathError{Op: "write", Path: p, Err: errno}, closeErr: onClose}, nil
			}
			_, err = b.Unpack(context.Background(), "testufop", 1, bytes.NewReader(arch), 0)
			if !errors.Is(err, ErrStorage) || !errors.Is(err, errno) || errors.Is(err, ErrBadPackage) {
				t.Errorf("%v (on close: %v): err = %v, want ErrStorage and the errno, not ErrBadPackage", errno, onClose, err)
			}
			left, _ := filepath.Glob(filepath.Join(root, "testufop", "1", "*"))
			if len(left) != 0 {
				t.Errorf("%v: left behind %v", errno, left)
			}
		}
	}
	// A package that is bad is still bad, not the server's.
	b, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Unpack(context.Background(), "testufop", 1, tarGz(t, entry{name: "x", body: "y"}), 0); !errors.Is(err, ErrBadPackage) || errors.Is(err, ErrStorage) {
		t.Errorf("no ufop.yaml: err = %v", err)
	}
}

// countdown is a context that ends (Err is context.Canceled) after left
// looks at it: a cancellation in the middle of a long walk.
type countdown struct {
	context.Context
	left atomic.Int64
}

func newCountdown(n int64) *countdown {
	c := &countdown{Context: context.Background()}
	c.left.Store(n)
	return c
}

func (c *countdown) Err() error {
	if c.left.Add(-1) < 0 {
		return context.Canceled
	}
	return nil
}

// manyFiles makes a tree of n small files in two directories.
func manyFiles(t *testing.T, n int) string {
	t.Helper()
	dir := t.TempDir()
	for i := 0; i < n; i++ {
		p := filepath.Join(dir, "d"+itoa(i%2), "f"+itoa(i))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func countFiles(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			n++
		}
		return nil
	})
	return n
}

// TestCopyDirHonoursContext: copying a base build stops, with the
// context's error, once the context ends, rather than copying the whole
// tree first.
func TestCopyDirHonoursContext(t *testing.T) {
	src := manyFiles(t, 40)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	dst := filepath.Join(t.TempDir(), "copy")
	if err := CopyDirContext(ctx, dst, src); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled copy: %v", err)
	}
	if n := countFiles(t, dst); n != 0 {
		t.Fatalf("cancelled copy copied %d files", n)
	}
	dst = filepath.Join(t.TempDir(), "copy")
	if err := CopyDirContext(newCountdown(10), dst, src); !errors.Is(err, context.Canceled) {
		t.Fatalf("copy cancelled midway: %v", err)
	}
	if n := countFiles(t, dst); n >= 40 {
		t.Fatalf("copy cancelled midway copied all %d files", n)
	}
	dst = filepath.Join(t.TempDir(), "copy")
	if err := CopyDirContext(context.Background(), dst, src); err != nil || countFiles(t, dst) != 40 {
		t.Fatalf("whole copy: %v, %d files", err, countFiles(t, dst))
	}
}

// TestBuildCancelledWhileCopyingBase: a build cancelled while its base is
// copied stops there, failing with the cancellation.
func TestBuildCancelledWhileCopyingBase(t *testing.T) {
	b, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	unpackScript(t, b, 1, "true")
	base := manyFiles(t, 40)
	err = b.Build(newCountdown(5), "testufop", 1, base, nil)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "copy base") {
		t.Fatalf("err = %v, want a cancellation while copying the base", err)
	}
	if b.Has("testufop", 1) {
		t.Fatal("a cancelled build became a result")
	}
}

// TestChownTreeHonoursContext: giving a tree to the run-as user stops,
// with the context's error, once the context ends.
func TestChownTreeHonoursContext(t *testing.T) {
	u := nobody(t)
	tree := manyFiles(t, 40)
	if err := ChownTreeContext(newCountdown(10), tree, u); !errors.Is(err, context.Canceled) {
		t.Fatalf("chown cancelled midway: %v", err)
	}
	given := 0
	filepath.WalkDir(tree, func(p string, d fs.DirEntry, err error) error {
		if fi, err := os.Lstat(p); err == nil && fi.Sys().(*syscall.Stat_t).Uid == u.Uid {
			given++
		}
		return nil
	})
	if given >= 43 {
		t.Fatalf("cancelled chown gave all %d entries", given)
	}
	if err := ChownTreeContext(context.Background(), tree, u); err != nil {
		t.Fatal(err)
	}
}
