package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/doraproject/dora/cli/platform"
	"github.com/doraproject/dora/cli/platform/platformtest"
	"github.com/doraproject/dora/cli/qdoractl/cmd"
	"github.com/doraproject/dora/internal/agenttest"
	"github.com/doraproject/dora/internal/auth"
)

// TestDevOnS3 runs `dorad dev --objects s3://...` on a real S3 server
// (SeaweedFS): an upload lands in S3 at <prefix>/<bucket>/<key>; an
// object written straight to S3 by a plain S3 client is served (whole and
// by Range) and processed (a built ufop, then qhash/md5); a saveas result
// and a pfop result land in S3.
func TestDevOnS3(t *testing.T) {
	w := agenttest.StartSeaweedFS(t)
	w.CreateBucket(t, "dora-e2e")
	// The standard AWS chain, as an operator sets it; nothing from the
	// machine's own AWS configuration.
	t.Setenv("AWS_ACCESS_KEY_ID", w.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", w.SecretKey)
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_PROFILE", "")
	objectsURL := "s3://dora-e2e/dev?endpoint=" + w.Endpoint
	h := newTunedHarness(t, func(c *platform.DevConfig) { c.Objects = objectsURL })
	s3c := w.Client()
	ctx := context.Background()
	s3get := func(key string) (string, error) {
		out, err := s3c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("dora-e2e"), Key: aws.String(key)})
		if err != nil {
			return "", err
		}
		defer out.Body.Close()
		b, err := io.ReadAll(out.Body)
		return string(b), err
	}

	// qdoractl put: the object is in S3 at dev/demo/demo.txt.
	h.putDemo("demo")
	if got, err := s3get("dev/demo/demo.txt"); err != nil || got != demoText {
		t.Fatalf("uploaded object in S3: %q, %v", got, err)
	}
	if code, body := h.get("demo.localhost", "/demo.txt"); code != 200 || string(body) != demoText {
		t.Fatalf("GET of the uploaded object: %d %q", code, body)
	}

	// Written by a plain S3 client, served in place, whole and by Range.
	const foreign = "hello from s3\nplain line\nhello twice\n"
	if _, err := s3c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("dora-e2e"), Key: aws.String("dev/demo/in s3/raw.txt"),
		Body: strings.NewReader(foreign), ContentType: aws.String("text/plain")}); err != nil {
		t.Fatal(err)
	}
	if code, body := h.get("demo.localhost", "/in%20s3/raw.txt"); code != 200 || string(body) != foreign {
		t.Fatalf("GET of an object written straight to S3: %d %q", code, body)
	}
	req, _ := http.NewRequest(http.MethodGet, h.dev.RouterURL+"/in%20s3/raw.txt", nil)
	req.Host = "demo.localhost"
	req.Header.Set("Range", "bytes=6-12")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || string(body) != "from s3" || resp.Header.Get("Content-Range") != fmt.Sprintf("bytes 6-12/%d", len(foreign)) {
		t.Fatalf("Range GET: %d %q %q", resp.StatusCode, body, resp.Header.Get("Content-Range"))
	}
	if out := h.q("stat", "demo", "in s3/raw.txt"); !strings.Contains(out, fmt.Sprint(len(foreign))) {
		t.Fatalf("stat of the S3-written object:\n%s", out)
	}

	// Processed: a built ufop, then a built-in.
	h.q("reg", "grepd", "-mode", "1")
	// The build compiles as the run-as user with a fresh Go cache: give
	// it longer than qcode's three minutes on a loaded machine.
	var bout, berr bytes.Buffer
	bctx, bcancel := context.WithTimeout(ctx, 10*time.Minute)
	code := cmd.Run(bctx, []string{"build", "grepd", "-dir", filepath.Join(platformtest.RepoRoot(t), "examples", "grepd")}, strings.NewReader(""), &bout, &berr)
	bcancel()
	if code != 0 || !strings.Contains(bout.String(), "SUCCESS") {
		t.Fatalf("build grepd: exit %d\n%s\n%s", code, bout.String(), berr.String())
	}
	h.q("ufopver", "grepd", "-c", "1")
	h.q("resize", "grepd", "-num", "1")
	h.eventually("grepd answering through the router", func() (bool, string) {
		code, body := h.get("demo.localhost", "/in%20s3/raw.txt?grepd/hello")
		return code == 200 && string(body) == "hello from s3\nhello twice\n", fmt.Sprintf("%d %q", code, body)
	})
	code, body = h.get("demo.localhost", "/in%20s3/raw.txt?grepd/hello|qhash/md5")
	var hash struct {
		Hash  string `json:"hash"`
		Fsize int64  `json:"fsize"`
	}
	if code != 200 || json.Unmarshal(body, &hash) != nil || hash.Hash != md5hex("hello from s3\nhello twice\n") || hash.Fsize != 26 {
		t.Fatalf("grepd|qhash/md5 on the S3-written object: %d %q", code, body)
	}

	// saveas: the result lands in S3.
	q := "grepd/twice|saveas/" + auth.EncodedEntryURI("demo", "out/saved.txt")
	sign := auth.SaveAsSign(rootSK, "demo.localhost/in%20s3/raw.txt?"+q)
	code, body = h.get("demo.localhost", "/in%20s3/raw.txt?"+q+"/sign/"+rootAK+":"+sign)
	if code != 200 || string(body) != "hello twice\n" {
		t.Fatalf("saveas: %d %q", code, body)
	}
	if got, err := s3get("dev/demo/out/saved.txt"); err != nil || got != "hello twice\n" {
		t.Fatalf("saveas result in S3: %q, %v", got, err)
	}

	// pfop: the worker's result lands in S3.
	if out := h.q("pfop", "demo", "in s3/raw.txt", "grepd/plain|saveas/"+auth.EncodedEntryURI("demo", "out/pfop.txt"), "--wait"); !strings.Contains(out, "code 0") {
		t.Fatalf("pfop --wait did not end with code 0:\n%s", out)
	}
	if got, err := s3get("dev/demo/out/pfop.txt"); err != nil || got != "plain line\n" {
		t.Fatalf("pfop result in S3: %q, %v", got, err)
	}
	// And what is in S3 is what the admin lists.
	if out := h.q("ls", "demo"); !strings.Contains(out, "out/pfop.txt") || !strings.Contains(out, "in s3/raw.txt") {
		t.Fatalf("listing of the S3-backed bucket:\n%s", out)
	}
}
