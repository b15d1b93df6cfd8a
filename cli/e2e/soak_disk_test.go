//go:build soak

package e2e

// The disk-full part of the soak (`make soak`): dorad dev with its data
// dir (metadata, objects, upload temp files) on a 64 MiB tmpfs. Uploads
// continue past full: each one refused must get 507 with a JSON error, none
// acknowledged may be lost, dorad must not exit, no half object may be
// visible, and uploads must succeed again once space is freed.

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/doraproject/dora/admin/client"
	"github.com/doraproject/dora/cli/platform/platformtest"
	"github.com/doraproject/dora/internal/auth"
)

func TestSoakDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("mounting the small tmpfs needs root")
	}
	bin := platformtest.BuildDorad(t)
	mnt := t.TempDir()
	os.Chmod(filepath.Dir(mnt), 0o711) // the run-as user (nobody) must reach the data dir
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64m,mode=0711", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", mnt).Run() })
	dataDir := filepath.Join(mnt, "data")
	adminAddr, routerAddr := platformtest.FreeAddr(t), platformtest.FreeAddr(t)
	var logBuf lockedLog
	cmd := exec.Command(bin, "dev", "--data-dir", dataDir, "--admin-addr", adminAddr, "--router-addr", routerAddr)
	cmd.Env = append(os.Environ(), "DORA_ROOT_AK="+rootAK, "DORA_ROOT_SK="+rootSK)
	cmd.Stdout, cmd.Stderr = &logBuf, &logBuf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	alive := func() {
		t.Helper()
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("dorad exited: %v\n%s", err, logBuf.tail())
		default:
		}
	}
	adminURL := "http://" + adminAddr
	for t0 := time.Now(); ; time.Sleep(100 * time.Millisecond) {
		alive()
		if res, err := http.Get(adminURL + "/healthz"); err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				break
			}
		}
		if time.Since(t0) > time.Minute {
			t.Fatalf("dorad not up\n%s", logBuf.tail())
		}
	}
	ctx := context.Background()
	c := client.New(adminURL, rootAK, rootSK)
	if _, err := c.CreateBucket(ctx, client.BucketSpec{Name: "full"}); err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: time.Minute}
	put := func(key string, body []byte) (int, string, error) {
		req, _ := http.NewRequest("PUT", adminURL+"/v1/objects/full/"+key, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/octet-stream")
		auth.SignRequest(req, rootAK, rootSK, nil, time.Now())
		res, err := hc.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b), nil
	}
	acked := map[string][16]byte{}
	refused := map[string]int{} // "status: error" → count
	var badErrors []string
	n := 0
	fullAt := -1
	// 1 MiB objects until 20 uploads past the first refusal.
	for ; n < 200 && (fullAt < 0 || n < fullAt+20); n++ {
		alive()
		key := "o/" + strconv.Itoa(n)
		body := bytes.Repeat([]byte(fmt.Sprintf("%07d\n", n)), (1<<20)/8)
		code, msg, err := put(key, body)
		switch {
		case err != nil:
			refused["transport: "+err.Error()]++
			badErrors = append(badErrors, key+": "+err.Error())
		case code == 200:
			acked[key] = md5.Sum(body)
		default:
			if fullAt < 0 {
				fullAt = n
			}
			var e struct {
				Error string `json:"error"`
			}
			if json.Unmarshal([]byte(msg), &e) != nil || e.Error == "" || code != http.StatusInsufficientStorage {
				badErrors = append(badErrors, fmt.Sprintf("%s: %d %q", key, code, msg))
			}
			refused[fmt.Sprintf("%d %s", code, e.Error)]++
		}
	}
	if fullAt < 0 {
		t.Fatalf("the 64 MiB filesystem never filled (%d uploads acknowledged)", len(acked))
	}
	var fs syscall.Statfs_t
	syscall.Statfs(mnt, &fs)
	freeFull := fs.Bavail * uint64(fs.Bsize)
	tmpLeft, _ := os.ReadDir(filepath.Join(dataDir, "objects", ".tmp"))

	// Acknowledged uploads read back; refused ones are not visible.
	readBack := func() (lost int, visible int) {
		for i := 0; i < n; i++ {
			key := "o/" + strconv.Itoa(i)
			rc, _, err := c.GetObject(ctx, "full", key)
			sum, ok := acked[key]
			if err != nil {
				if ok {
					lost++
				}
				continue
			}
			b, _ := io.ReadAll(rc)
			rc.Close()
			if !ok {
				visible++
			} else if md5.Sum(b) != sum {
				lost++
			}
		}
		return lost, visible
	}
	lost, halfVisible := readBack()

	// Free space: delete half the acknowledged objects, then upload again.
	keys := make([]string, 0, len(acked))
	for k := range acked {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys[:len(keys)/2] {
		if err := c.DeleteObject(ctx, "full", k); err != nil {
			t.Fatalf("delete %s after full: %v", k, err)
		}
		delete(acked, k)
	}
	t0 := time.Now()
	recovered := ""
	for time.Since(t0) < time.Minute {
		alive()
		key := "after/" + strconv.Itoa(n)
		n++
		body := bytes.Repeat([]byte("after\n"), 100000)
		if code, _, err := put(key, body); err == nil && code == 200 {
			recovered = time.Since(t0).Round(time.Millisecond).String()
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	alive()

	var out strings.Builder
	fmt.Fprintf(&out, "\nSOAK DISK FULL (dorad dev data dir on a 64 MiB tmpfs, 1 MiB uploads)\n")
	soakRow(&out, "uploads sent", n)
	soakRow(&out, "acknowledged before full", fullAt)
	soakRows(&out, "refused: ", refused)
	soakRow(&out, "refusals other than 507 with a JSON error", len(badErrors))
	soakRow(&out, "acknowledged uploads lost", lost)
	soakRow(&out, "refused uploads visible afterwards", halfVisible)
	soakRow(&out, "upload temp files left in objects/.tmp while full", len(tmpLeft))
	fmt.Fprintf(&out, "| %-72s | %7d KiB |\n", "free space left while full", freeFull>>10)
	fmt.Fprintf(&out, "| %-72s | %10s |\n", "space freed (half deleted): next upload acknowledged after", orNot(recovered))
	fmt.Print(out.String())
	if p := os.Getenv("SOAK_OUT"); p != "" {
		os.WriteFile(p+".disk", []byte(out.String()), 0o644)
	}
	if len(badErrors) > 0 {
		t.Errorf("refusals other than 507 with a JSON error: %v", badErrors[:min(5, len(badErrors))])
	}
	if lost > 0 {
		t.Errorf("%d acknowledged uploads lost", lost)
	}
	if halfVisible > 0 {
		t.Errorf("%d refused uploads are visible", halfVisible)
	}
	if recovered == "" {
		t.Errorf("uploads did not succeed again after space was freed\n%s", logBuf.tail())
	}
}

func orNot(s string) string {
	if s == "" {
		return "never"
	}
	return s
}
