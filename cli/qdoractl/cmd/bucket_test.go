package cmd

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/api"
)

func TestBucketCommands(t *testing.T) {
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	f := newFakeAPI(t, map[string]route{
		"POST /v1/buckets":                reply(201, dora.Bucket{Name: "photos", Private: true, Domains: []string{"a.example", "b.example"}, Mirror: "https://m.example/"}),
		"GET /v1/buckets":                 reply(200, []dora.Bucket{{Name: "photos", Private: true, Created: created}}),
		"POST /v1/buckets/photos/domains": reply(200, dora.Bucket{Name: "photos", Domains: []string{"a.example", "c.example"}}),
		"DELETE /v1/buckets/photos":       reply(204, nil),
	})
	r := mustOK(t, runCLI(t, f, "", "bucket", "create", "photos", "--private", "--domain", "a.example", "--domain", "b.example", "--mirror", "https://m.example/"))
	jsonEq(t, f.last(t, "POST /v1/buckets").Body, `{"name":"photos","private":true,"domains":["a.example","b.example"],"mirror":"https://m.example/"}`)
	if !strings.Contains(r.stdout, "Bucket photos created (private: true, domains: a.example b.example, mirror: https://m.example/)") {
		t.Fatalf("stdout %q", r.stdout)
	}
	r = mustOK(t, runCLI(t, f, "", "bucket", "list"))
	if !strings.Contains(r.stdout, "photos  true") {
		t.Fatalf("stdout %q", r.stdout)
	}
	mustOK(t, runCLI(t, f, "", "bucket", "domain", "photos", "c.example"))
	jsonEq(t, f.last(t, "POST /v1/buckets/photos/domains").Body, `{"domain":"c.example"}`)
	mustOK(t, runCLI(t, f, "", "bucket", "rm", "photos"))
}

func TestObjectCommands(t *testing.T) {
	content := bytes.Repeat([]byte("dora "), 2000)
	putTime := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	obj := api.Object{Bucket: "photos", Key: "dir/a b.txt", Size: int64(len(content)), ETag: "FtagX", MimeType: "text/plain", Modified: putTime}
	f := newFakeAPI(t, map[string]route{
		"PUT /v1/objects/photos/dir/a%20b.txt": func(c call) (int, any) {
			if !bytes.Equal(c.Body, content) {
				return 400, map[string]string{"error": "body differs"}
			}
			return 200, obj
		},
		"GET /v1/objects/photos/dir/a%20b.txt":    reply(200, string(content)),
		"GET /v1/stat/photos/dir/a%20b.txt":       reply(200, obj),
		"GET /v1/list/photos":                     reply(200, map[string]any{"items": []api.Object{obj}}),
		"DELETE /v1/objects/photos/dir/a%20b.txt": reply(204, nil),
	})
	dir := t.TempDir()
	src := filepath.Join(dir, "src.txt")
	if err := os.WriteFile(src, content, 0o644); err != nil {
		t.Fatal(err)
	}
	r := mustOK(t, runCLI(t, f, "", "put", "photos", "dir/a b.txt", src, "--insert-only"))
	if !strings.Contains(r.stdout, "Put photos/dir/a b.txt: 10000 bytes, hash FtagX, text/plain") {
		t.Fatalf("stdout %q", r.stdout)
	}
	put := f.last(t, "PUT /v1/objects/photos/dir/a%20b.txt")
	if put.Header.Get("X-Dora-Insert-Only") != "1" || put.Header.Get("Content-Length") != "10000" {
		t.Fatalf("put headers %v", put.Header)
	}

	// from stdin
	mustOK(t, runCLI(t, f, string(content), "put", "photos", "dir/a b.txt", "-"))

	r = mustOK(t, runCLI(t, f, "", "ls", "photos", "dir/"))
	if f.last(t, "GET /v1/list/photos").Query != "prefix=dir%2F" || !strings.Contains(r.stdout, "dir/a b.txt  10000  FtagX  text/plain") {
		t.Fatalf("ls: %q query %q", r.stdout, f.last(t, "GET /v1/list/photos").Query)
	}
	r = mustOK(t, runCLI(t, f, "", "stat", "photos", "dir/a b.txt"))
	if !strings.Contains(r.stdout, "Size: 10000\nHash: FtagX\nMimeType: text/plain") {
		t.Fatalf("stat: %q", r.stdout)
	}
	r = mustOK(t, runCLI(t, f, "", "get", "photos", "dir/a b.txt"))
	if r.stdout != string(content) {
		t.Fatalf("get to stdout: %d bytes", len(r.stdout))
	}
	out := filepath.Join(dir, "out.txt")
	mustOK(t, runCLI(t, f, "", "get", "photos", "dir/a b.txt", "-o", out))
	if b, err := os.ReadFile(out); err != nil || !bytes.Equal(b, content) {
		t.Fatalf("get -o: %d bytes, %v", len(b), err)
	}
	mustOK(t, runCLI(t, f, "", "rm", "photos", "dir/a b.txt"))

	// a missing file is an error before any request
	// and a runtime error, not a usage one: its message, without usage
	nope := filepath.Join(dir, "nope")
	if r := runCLI(t, f, "", "put", "photos", "k", nope); r.code != ExitError || r.stderr != "qdoractl: "+nope+" does not exist\n" {
		t.Fatalf("put of a missing file: %v", r)
	}
	if r := runCLI(t, f, "", "put", "photos", "k", dir); r.code != ExitError || r.stderr != "qdoractl: "+dir+" is a directory: put uploads one file\n" {
		t.Fatalf("put of a directory: %v", r)
	}
	// a failed get leaves no file behind
	bad := filepath.Join(dir, "bad.txt")
	if r := runCLI(t, f, "", "get", "photos", "missing", "-o", bad); r.code != ExitError || !strings.Contains(r.stderr, "status 404") {
		t.Fatalf("get missing: %v", r)
	}
	if _, err := os.Stat(bad); err == nil {
		t.Fatal("get of a missing object created the output file")
	}
}
