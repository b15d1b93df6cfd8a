package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/doraproject/dora/admin/pfop"
	"github.com/doraproject/dora/cli/platform/platformtest"
	"github.com/doraproject/dora/internal/auth"
)

// loginAs creates an ordinary account (default instance limit) as root and
// logs qdoractl in as it; it returns the keys.
func (h *harness) loginAs(name string) (ak, sk string) {
	h.t.Helper()
	out := h.q("account", "create", name)
	ak = regexp.MustCompile(`(?m)^Access key: (\S+)$`).FindStringSubmatch(out)[1]
	sk = regexp.MustCompile(`(?m)^Secret key: (\S+)$`).FindStringSubmatch(out)[1]
	if !strings.Contains(out, "Instance limit: 5") {
		h.t.Fatalf("account create:\n%s", out)
	}
	h.q("login", "-u", ak, "-p", sk, "--api", h.dev.AdminURL)
	return ak, sk
}

// TestSeedFlows follows both seeds as an ordinary account with the
// default limits, where the issue found them breaking:
//
//   - seed 001: reg, build of a program that speaks only POST /uop
//     (examples/wordcount), ufopver with no protocol flag, resize, a
//     processing URL; info prints "Version: 1"; the mode changes after reg.
//   - seed 000: release (dora.yaml) and deploy v1, then v2 deployed beside
//     it with no --max, then switched to: no 403 from the instance limit.
//   - a resumable upload and a bucket API call as the SDKs send them, on
//     the admin address.
func TestSeedFlows(t *testing.T) {
	h := newHarness(t)
	ak, sk := h.loginAs("seeduser")
	work := t.TempDir()
	h.putDemo("seeds")

	// Seed 001.
	h.q("reg", "wordcount", "-mode", "1", "-desc", "demo ufop")
	h.build("wordcount", filepath.Join(platformtest.RepoRoot(t), "examples", "wordcount"))
	h.q("ufopver", "wordcount", "-c", "1")
	h.q("resize", "wordcount", "-num", "1")
	h.eventually("wordcount (a /uop program) answering through the router", func() (bool, string) {
		code, body := h.get("seeds.localhost", "/demo.txt?wordcount")
		var wc struct{ Lines, Words, Bytes int }
		return code == 200 && json.Unmarshal(body, &wc) == nil && wc.Lines == 3 && wc.Bytes == len(demoText), fmt.Sprintf("%d %q", code, body)
	})
	out := h.q("info", "wordcount")
	if !strings.Contains(out, "\nVersion: 1\n") || !strings.Contains(out, "Access mode: PROTECTED") {
		t.Fatalf("info:\n%s", out)
	}
	h.q("mode", "wordcount", "private")
	if out := h.q("info", "wordcount"); !strings.Contains(out, "Access mode: PRIVATE") {
		t.Fatalf("info after mode:\n%s", out)
	}

	// Seed 000: v1, then v2 beside it with the defaults, then the switch.
	h.q("reg", "grepd", "-mode", "1")
	h.build("grepd", filepath.Join(platformtest.RepoRoot(t), "examples", "grepd"))
	relDir := filepath.Join(work, "release")
	if err := os.MkdirAll(relDir, 0o755); err != nil {
		t.Fatal(err)
	}
	release := func(ver string) {
		y := "ufopname: grepd\nverstr: " + ver + "\nimage: grepd.v1\ndesc: e2e\nflavor: C1M1\nhealth_check:\n  path: /health\n  timeout: 1\nlog_file_paths: []\n"
		if err := os.WriteFile(filepath.Join(relDir, "dora.yaml"), []byte(y), 0o644); err != nil {
			t.Fatal(err)
		}
		h.q("release", "--config", relDir)
	}
	running := func(ver string) {
		h.eventually("grepd "+ver+" RUNNING", func() (bool, string) {
			out, _, _ := h.qcode("deploy", "grepd", "--all")
			return regexp.MustCompile(`(?m)^` + ver + `\s.*RUNNING`).MatchString(out), out
		})
	}
	release("v1")
	h.q("deploy", "grepd", "v1", "--region", "z0", "--expect", "1")
	running("v1")
	h.eventually("grepd v1 answering", func() (bool, string) {
		code, body := h.get("seeds.localhost", "/demo.txt?grepd/again")
		return code == 200 && string(body) == "hello again\n", fmt.Sprintf("%d %q", code, body)
	})
	release("v2")
	h.q("deploy", "grepd", "v2", "--region", "z0", "--expect", "1") // beside v1, no --max
	running("v2")
	h.q("deploy", "grepd", "v2", "--region", "z0", "--expect", "1", "--activate")
	h.eventually("v2 active and v1 replaced", func() (bool, string) {
		info, _, _ := h.qcode("info", "grepd")
		all, _, _ := h.qcode("deploy", "grepd", "--all")
		return strings.Contains(info, "\nVersion: 2\n") && regexp.MustCompile(`(?m)^v1\s.*REPLACED`).MatchString(all), info + all
	})
	if code, body := h.get("seeds.localhost", "/demo.txt?grepd/hello"); code != 200 || string(body) != "hello dora\nhello again\n" {
		t.Fatalf("grepd v2: %d %q", code, body)
	}

	// The SDK paths on the admin address: resumable v1 upload, then stat.
	data := bytes.Repeat([]byte("0123456789abcdef"), 300<<10/16) // 300 KiB
	tok := pfop.UploadToken(ak, sk, pfop.PutPolicy{Scope: "seeds:big.bin", Deadline: time.Now().Add(time.Hour).Unix()})
	up := func(path string, body []byte) map[string]any {
		req, _ := http.NewRequest(http.MethodPost, h.dev.AdminURL+path, bytes.NewReader(body))
		req.Header.Set("Authorization", "UpToken "+tok)
		req.Header.Set("Content-Type", "application/octet-stream")
		return doJSON(t, req, 200)
	}
	blk := up("/mkblk/"+strconv.Itoa(len(data)), data)
	done := up("/mkfile/"+strconv.Itoa(len(data))+"/key/"+auth.URLSafeBase64([]byte("big.bin")), []byte(blk["ctx"].(string)))
	req, _ := http.NewRequest(http.MethodPost, h.dev.AdminURL+"/stat/"+auth.EncodedEntryURI("seeds", "big.bin"), nil)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	auth.SignRequestQBox(req, ak, sk, nil)
	st := doJSON(t, req, 200)
	if st["hash"] != done["hash"] || st["fsize"] != float64(len(data)) {
		t.Fatalf("stat %v after mkfile %v", st, done)
	}
	if code, body := h.get("seeds.localhost", "/big.bin"); code != 200 || !bytes.Equal(body, data) {
		t.Fatalf("uploaded object through the router: %d, %d bytes", code, len(body))
	}
}

// build starts build 1 of ufop from dir and waits for SUCCESS with a
// generous deadline: a cold Go build on a loaded machine can outlast
// qdoractl's own wait.
func (h *harness) build(ufop, dir string) {
	h.t.Helper()
	h.q("build", ufop, "-dir", dir, "--no-wait")
	deadline := time.Now().Add(10 * time.Minute)
	for {
		out, _, _ := h.qcode("imageinfo", ufop)
		if strings.Contains(out, "SUCCESS") {
			return
		}
		if strings.Contains(out, "FAILED") || time.Now().After(deadline) {
			log, _, _ := h.qcode("buildlog", ufop, "-v", "1")
			h.t.Fatalf("build %s:\n%s\n%s", ufop, out, log)
		}
		time.Sleep(time.Second)
	}
}

func doJSON(t *testing.T, req *http.Request, want int) map[string]any {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var v map[string]any
	if resp.StatusCode != want || json.Unmarshal(b, &v) != nil {
		t.Fatalf("%s %s: %d %s", req.Method, req.URL.Path, resp.StatusCode, b)
	}
	return v
}
