package pfop_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/doraproject/dora/admin/pfop"
)

// TestFormUploadOverCap: a form upload over the handler's MaxUploadBytes
// (the file past the cap, or the whole body past the cap and its 1 MiB of
// room for fields) is answered 413 with a JSON error, stores nothing under
// a new key and leaves an existing object under the key as it was.
func TestFormUploadOverCap(t *testing.T) {
	e := newEnv(t)
	const maxUpload = 1 << 10
	h, err := pfop.NewHandler(pfop.HandlerConfig{
		Store: e.st, Queue: e.q, Objects: e.objs, Logger: testLogger(), MaxUploadBytes: maxUpload,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h.Wrap(http.NotFoundHandler()))
	t.Cleanup(srv.Close)
	capped := *e
	capped.api = srv

	e.object("photos", "kept.txt", "old content")
	future := time.Now().Add(time.Hour).Unix()
	bigField := strings.Repeat("f", 60<<10) // under the 64 KiB a field may have
	var manyFields []formPart               // 18 × 60 KiB: past the body's cap (1 KiB + 1 MiB)
	for i := range 18 {
		manyFields = append(manyFields, formPart{name: "x:pad" + string(rune('a'+i)), value: bigField})
	}
	form := func(key string, before []formPart, file string, after []formPart) string {
		tok := uploadToken(alice, map[string]any{"scope": "photos:" + key, "deadline": future})
		parts := append([]formPart{{name: "token", value: tok}, {name: "key", value: key}}, before...)
		parts = append(parts, formPart{name: "file", filename: "f.bin", value: file})
		return rawForm(append(parts, after...)...) + tailEnd
	}
	fits := strings.Repeat("a", maxUpload)
	over := strings.Repeat("b", maxUpload+1)
	if status, v := capped.postRaw(form("fits.txt", nil, fits, nil)); status != 200 {
		t.Fatalf("a file of exactly MaxUploadBytes: %d %v", status, v)
	}
	cases := []struct {
		name          string
		before, after []formPart
		file          string
	}{
		{"file over the cap", nil, nil, over},
		{"fields before the file over the body's cap", manyFields, nil, "small"},
		{"fields after the file over the body's cap", nil, manyFields, "small"},
	}
	for _, c := range cases {
		for _, key := range []string{"new.txt", "kept.txt"} {
			t.Run(c.name+"/"+key, func(t *testing.T) {
				status, v := capped.postRaw(form(key, c.before, c.file, c.after))
				if status != 413 {
					t.Fatalf("status %d %v, want 413", status, v)
				}
				if msg, _ := v["error"].(string); msg == "" {
					t.Fatalf("no JSON error in %v", v)
				}
				got, ok := e.read("photos", key)
				switch key {
				case "new.txt":
					if ok {
						t.Fatalf("a refused upload stored %s: %d bytes", key, len(got))
					}
				default:
					if !ok || got != "old content" {
						t.Fatalf("%s holds %q (%v) after a refused upload, want its old content", key, got, ok)
					}
				}
			})
		}
	}
}
