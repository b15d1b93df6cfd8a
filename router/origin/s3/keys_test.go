package s3_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/doraproject/dora/router/origin"
	"github.com/doraproject/dora/router/origin/local"
	"github.com/doraproject/dora/router/origin/origintest"
	s3origin "github.com/doraproject/dora/router/origin/s3"
)

// cleanableKeys are keys an HTTP server or client could clean into
// "target" (or another key) on the way: the platform's key rule refuses
// them, so no operation may reach the store with one.
var cleanableKeys = []string{
	"x/../target", "./target", "x/./target", "a//b", "x/..", "target/.", "target/", "target//", "x/../../target",
}

// exactKeys are valid keys that look like "target", like a path some layer
// could clean, decode twice or normalize: each is an object of its own.
var exactKeys = []string{
	"target/child", "target.", ".target", "...", "x/.../target", "x/..a/target", "x/a../target", "x/.hidden",
	"x/%2e%2e/target", "%2E%2E/target", "%2e/target", "x/..%2Ftarget", "x%2F..%2Ftarget", "x/%2E%2E%2Ftarget",
	"x/..;/target", "x/.. /target", "x/. /target", "x/..%00/target", "x/..%5C/target",
	"target ", " target", "tar get", "tar+get", "tar%20get", "tar%2Bget", "tar%2bget",
	"target?", "target?x=1", "target#", "target#frag", "target%", "target%%", "target%2", "target+",
	"Target", "TARGET", "tärget", "ta\u0308rget", "ｔａｒｇｅｔ", "x/．．/target", "x/\u2025/target",
	"日本/写真 1.jpg", "emoji 😀/target", "x/~/target", "x/*/target", "x/&/target", "x/=/target",
}

// TestAgainstSeaweedFS/ExactKeys (run from TestAgainstSeaweedFS, which
// shares its server): beside "target", every key that some layer (the
// SDK's path building and signing, the store's HTTP router, its file
// tree) could clean, decode or normalize into another is its own object
// for every operation: Put, Stat, Open and its ranges, List by prefix and
// marker, Keys, Delete, and a multipart Put's etag stamping copy.
func testExactKeys(t *testing.T, e *env) {
	cfg := e.config(e.w.Endpoint)
	s := e.open(t, cfg)
	ctx := t.Context()
	const b = "exact"
	content := func(k string) string { return "<" + k + ">" }
	origintest.Put(t, s, b, "target", content("target"))

	read := func(k string, off, n int64) (string, origin.Object, error) {
		rc, obj, err := s.Open(ctx, b, k, off, n)
		if err != nil {
			return "", obj, err
		}
		defer rc.Close()
		data, err := io.ReadAll(rc)
		return string(data), obj, err
	}
	checkTarget := func(after string) {
		t.Helper()
		got, obj, err := read("target", 0, -1)
		if err != nil || got != content("target") || obj.Key != "target" {
			t.Errorf("after %s: target reads %q (key %q), %v; want %q", after, got, obj.Key, err, content("target"))
		}
	}

	// Keys a layer could clean are refused before they reach the store,
	// and touch nothing.
	for _, k := range cleanableKeys {
		if _, err := s.Put(ctx, b, k, strings.NewReader("not target"), origin.PutOptions{}); !errors.Is(err, origin.ErrBadKey) {
			t.Errorf("Put(%q) = %v, want ErrBadKey", k, err)
		}
		if _, err := s.Stat(ctx, b, k); !errors.Is(err, origin.ErrBadKey) {
			t.Errorf("Stat(%q) = %v, want ErrBadKey", k, err)
		}
		if _, _, err := read(k, 0, -1); !errors.Is(err, origin.ErrBadKey) {
			t.Errorf("Open(%q) = %v, want ErrBadKey", k, err)
		}
		if err := s.Delete(ctx, b, k); !errors.Is(err, origin.ErrBadKey) {
			t.Errorf("Delete(%q) = %v, want ErrBadKey", k, err)
		}
		checkTarget(fmt.Sprintf("the refused key %q", k))
	}

	for _, k := range exactKeys {
		origintest.Put(t, s, b, k, content(k))
	}
	checkTarget("putting every odd key")
	all := append([]string{"target"}, exactKeys...)
	slices.Sort(all) // S3 lists in byte order, as Go compares strings
	for _, k := range all {
		want := content(k)
		if got, obj, err := read(k, 0, -1); err != nil || got != want || obj.Key != k || obj.Size != int64(len(want)) {
			t.Errorf("Open(%q) = %q (key %q, size %d), %v; want %q", k, got, obj.Key, obj.Size, err, want)
		}
		if got, _, err := read(k, 1, 3); err != nil || got != want[1:4] {
			t.Errorf("Open(%q, 1, 3) = %q, %v; want %q", k, got, err, want[1:4])
		}
		if obj, err := s.Stat(ctx, b, k); err != nil || obj.Key != k || obj.Size != int64(len(want)) {
			t.Errorf("Stat(%q) = %+v, %v; want its own %d bytes", k, obj, err, len(want))
		}
		// Listing by the key as prefix lists it once, with the keys that
		// extend it.
		var ext []string
		for _, o := range all {
			if strings.HasPrefix(o, k) {
				ext = append(ext, o)
			}
		}
		if objs, err := s.List(ctx, b, k, 0); err != nil || keysOf(objs) != strings.Join(ext, "|") {
			t.Errorf("List(prefix %q) = %q, %v; want %q", k, keysOf(objs), err, ext)
		}
		// The key as marker: the page goes on with the next key.
		i, _ := slices.BinarySearch(all, k)
		next := ""
		if i+1 < len(all) {
			next = all[i+1]
		}
		if p, err := s.ListPage(ctx, b, s3origin.ListOptions{Marker: k, Limit: 1}); err != nil || keysOf(p.Objects) != next {
			t.Errorf("ListPage(marker %q, limit 1) = %q, %v; want %q", k, keysOf(p.Objects), err, next)
		}
	}
	// A prefix or marker is a string compared, not a path: one a layer
	// could clean lists what starts with (or follows) it as it is.
	for _, k := range cleanableKeys {
		var ext []string
		next := ""
		for _, o := range all {
			if strings.HasPrefix(o, k) {
				ext = append(ext, o)
			}
			if next == "" && o > k {
				next = o
			}
		}
		if objs, err := s.List(ctx, b, k, 0); err != nil || keysOf(objs) != strings.Join(ext, "|") {
			t.Errorf("List(prefix %q) = %q, %v; want %q", k, keysOf(objs), err, ext)
		}
		if p, err := s.ListPage(ctx, b, s3origin.ListOptions{Marker: k, Limit: 1}); err != nil || keysOf(p.Objects) != next {
			t.Errorf("ListPage(marker %q, limit 1) = %q, %v; want %q", k, keysOf(p.Objects), err, next)
		}
	}
	objs, err := s.List(ctx, b, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := keysOf(objs), strings.Join(all, "|"); got != want {
		t.Errorf("List = %q,\nwant %q", got, want)
	}
	for _, o := range objs {
		if want := content(o.Key); o.Size != int64(len(want)) || o.ETag != etagOf(t, want) {
			t.Errorf("List's %q: size %d etag %s, want its own (%d bytes, %s)", o.Key, o.Size, o.ETag, len(want), etagOf(t, want))
		}
	}
	if ks, err := s.Keys(ctx, b, ""); err != nil || strings.Join(ks, "|") != strings.Join(all, "|") {
		t.Errorf("Keys = %q, %v; want %q", ks, err, all)
	}
	// By "directory": the keys under x/ and the "subdirectories" of x/.
	var dirObjs, dirs []string
	for _, k := range all {
		rest, ok := strings.CutPrefix(k, "x/")
		if !ok {
			continue
		}
		if d, _, ok := strings.Cut(rest, "/"); ok {
			if d := "x/" + d + "/"; !slices.Contains(dirs, d) {
				dirs = append(dirs, d)
			}
			continue
		}
		dirObjs = append(dirObjs, k)
	}
	if p, err := s.ListPage(ctx, b, s3origin.ListOptions{Prefix: "x/", Delimiter: "/"}); err != nil ||
		keysOf(p.Objects) != strings.Join(dirObjs, "|") || strings.Join(p.Prefixes, "|") != strings.Join(dirs, "|") {
		t.Errorf("ListPage(prefix x/, delimiter /) = %q and prefixes %q, %v; want %q and %q", keysOf(p.Objects), p.Prefixes, err, dirObjs, dirs)
	}
	// In the S3 bucket: exactly <prefix>/exact/<key>, byte for byte.
	raw := rawKeys(t, e, cfg.Prefix+"/"+b+"/")
	if got, want := strings.Join(raw, "|"), strings.Join(all, "|"); got != want {
		t.Errorf("S3 keys under %s/%s/ = %q,\nwant %q", cfg.Prefix, b, raw, all)
	}

	// A multipart Put stamps its etag with a copy of the object onto
	// itself: the copy source names the key exactly.
	big := bytes.Repeat([]byte("0123456789abcdef"), (s3origin.MinPartSize+1<<20)/16)
	wantETag, _, _ := local.ETag(bytes.NewReader(big))
	for _, k := range []string{"x/%2e%2e/target", "x/..%2Ftarget", "tar+get ?#%", "ta\u0308rget"} {
		if _, err := s.Put(ctx, b, k, bytes.NewReader(big), origin.PutOptions{}); err != nil {
			t.Errorf("multipart Put(%q): %v", k, err)
			continue
		}
		if obj, err := s.Stat(ctx, b, k); err != nil || obj.ETag != wantETag || obj.Size != int64(len(big)) {
			t.Errorf("multipart %q: %+v, %v; want size %d and the Qiniu etag %s stamped", k, obj, err, len(big), wantETag)
		}
		checkTarget(fmt.Sprintf("a multipart Put of %q", k))
		if !slices.Contains(exactKeys, k) {
			if err := s.Delete(ctx, b, k); err != nil {
				t.Errorf("Delete(%q) after multipart: %v", k, err)
			}
			continue
		}
		origintest.Put(t, s, b, k, content(k))
		if got, _, err := read(k, 0, -1); err != nil || got != content(k) {
			t.Errorf("%q rewritten after multipart reads %q, %v", k, got, err)
		}
	}

	// Deleting each odd key leaves every other one, "target" first.
	left := slices.Clone(all)
	for _, k := range exactKeys {
		if err := s.Delete(ctx, b, k); err != nil {
			t.Errorf("Delete(%q): %v", k, err)
			continue
		}
		left = slices.DeleteFunc(left, func(o string) bool { return o == k })
		if _, err := s.Stat(ctx, b, k); !errors.Is(err, origin.ErrNotFound) {
			t.Errorf("Stat(%q) after its Delete = %v, want ErrNotFound", k, err)
		}
		checkTarget(fmt.Sprintf("Delete(%q)", k))
	}
	if objs, err := s.List(ctx, b, "", 0); err != nil || keysOf(objs) != "target" {
		t.Errorf("after deleting the odd keys: List = %q, %v; want only target", keysOf(objs), err)
	}
	if raw := rawKeys(t, e, cfg.Prefix+"/"+b+"/"); strings.Join(raw, "|") != "target" {
		t.Errorf("after deleting the odd keys: S3 keys %q, want only target", raw)
	}
}

// keysOf joins the keys of objs with "|" (no test key holds one).
func keysOf(objs []origin.Object) string {
	ks := make([]string, len(objs))
	for i, o := range objs {
		ks[i] = o.Key
	}
	return strings.Join(ks, "|")
}

func etagOf(t *testing.T, data string) string {
	t.Helper()
	e, _, err := local.ETag(strings.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// rawKeys lists the test bucket's S3 keys under prefix with a plain S3
// client, the prefix cut off.
func rawKeys(t *testing.T, e *env, prefix string) []string {
	t.Helper()
	var keys []string
	p := awss3.NewListObjectsV2Paginator(e.w.Client(), &awss3.ListObjectsV2Input{Bucket: aws.String(testBucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		out, err := p.NextPage(context.WithoutCancel(t.Context()))
		if err != nil {
			t.Fatalf("ListObjectsV2: %v", err)
		}
		for _, o := range out.Contents {
			keys = append(keys, strings.TrimPrefix(aws.ToString(o.Key), prefix))
		}
	}
	return keys
}
