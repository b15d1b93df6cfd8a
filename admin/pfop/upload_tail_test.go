package pfop_test

import (
	"context"
	"fmt"
	"hash/crc32"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The parts of a form upload that come after the file (Qiniu's old HTML
// example sends crc32 and accept there) are read before the file takes
// effect: a form that turns out bad after the file stores nothing and
// leaves an existing object as it was.

const tailBoundary = "dora-tail-boundary"

// formPart is one part of a hand-made form: a file when filename is set.
type formPart struct{ name, filename, value string }

// rawForm is the multipart body of parts in order, without its closing
// delimiter (append tailEnd, or anything else).
func rawForm(parts ...formPart) string {
	var b strings.Builder
	for _, p := range parts {
		b.WriteString("--" + tailBoundary + "\r\n")
		if p.filename != "" {
			fmt.Fprintf(&b, "Content-Disposition: form-data; name=%q; filename=%q\r\nContent-Type: application/octet-stream\r\n\r\n", p.name, p.filename)
		} else {
			fmt.Fprintf(&b, "Content-Disposition: form-data; name=%q\r\n\r\n", p.name)
		}
		b.WriteString(p.value + "\r\n")
	}
	return b.String()
}

const tailEnd = "--" + tailBoundary + "--\r\n"

// postRaw POSTs body as the form upload, with its exact length.
func (e *env) postRaw(body string) (int, map[string]any) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.api.URL+"/", strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "multipart/form-data; boundary="+tailBoundary)
	status, v, _ := e.do(req)
	return status, v
}

func crcOf(s string) string { return strconv.FormatUint(uint64(crc32.ChecksumIEEE([]byte(s))), 10) }

func TestFormUploadBadPartAfterFile(t *testing.T) {
	e := newEnv(t)
	future := time.Now().Add(time.Hour).Unix()
	tok := uploadToken(alice, map[string]any{"scope": "photos:keep.txt", "deadline": future})
	head := rawForm(formPart{name: "token", value: tok}, formPart{name: "key", value: "keep.txt"},
		formPart{name: "file", filename: "f.txt", value: "new content"})
	many := ""
	for i := range 300 {
		many += rawForm(formPart{name: "x:v" + strconv.Itoa(i), value: "v"})
	}
	for _, c := range []struct{ name, after string }{
		{"a field over 64 KiB", rawForm(formPart{name: "x:big", value: strings.Repeat("b", 64<<10+1)}) + tailEnd},
		{"too many fields", many + tailEnd},
		{"a broken part header", "--" + tailBoundary + "\r\nnot a header line\r\n\r\nx\r\n" + tailEnd},
		{"a second file", rawForm(formPart{name: "file", filename: "g.txt", value: "other"}) + tailEnd},
		{"a crc32 that is not a number", rawForm(formPart{name: "crc32", value: "abc"}) + tailEnd},
		{"another key", rawForm(formPart{name: "key", value: "other.txt"}) + tailEnd},
		{"another token", rawForm(formPart{name: "token", value: "AK:sign:policy"}) + tailEnd},
	} {
		t.Run(c.name, func(t *testing.T) {
			e.object("photos", "keep.txt", "old")
			before := e.objs.putCount("photos", "keep.txt")
			status, v := e.postRaw(head + c.after)
			if status != http.StatusBadRequest || v["error"] == nil {
				t.Fatalf("%d %v, want 400 with an error", status, v)
			}
			if got, _ := e.read("photos", "keep.txt"); got != "old" {
				t.Fatalf("the existing object now holds %q", got)
			}
			if n := e.objs.putCount("photos", "keep.txt"); n != before {
				t.Fatalf("%d puts of keep.txt", n-before)
			}
			if _, stored := e.read("photos", "other.txt"); stored {
				t.Fatal("other.txt stored")
			}
		})
	}
}

func TestFormUploadBodyStopsAfterFile(t *testing.T) {
	e := newEnv(t)
	future := time.Now().Add(time.Hour).Unix()
	for _, c := range []struct{ name, after string }{
		{"after the delimiter line", "--" + tailBoundary + "\r\n"},
		{"in the delimiter", "--" + tailBoundary},
		{"in the next part's header", "--" + tailBoundary + "\r\nContent-Disposition: form-da"},
		{"in the next field", "--" + tailBoundary + "\r\nContent-Disposition: form-data; name=\"x:a\"\r\n\r\nval"},
		{"in the file", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, key := range []string{"stop-new.txt", "stop-old.txt"} {
				e.object("photos", "stop-old.txt", "old")
				tok := uploadToken(alice, map[string]any{"scope": "photos:" + key, "deadline": future})
				body := rawForm(formPart{name: "token", value: tok}, formPart{name: "key", value: key},
					formPart{name: "file", filename: "f.txt", value: "new content"})
				if c.after == "" {
					body = strings.TrimSuffix(body, "\r\n")
				}
				status, v := e.postRaw(body + c.after)
				if status != http.StatusBadRequest || v["error"] == nil {
					t.Fatalf("%s: %d %v, want 400 with an error", key, status, v)
				}
				got, stored := e.read("photos", key)
				if key == "stop-new.txt" && stored || key == "stop-old.txt" && got != "old" {
					t.Fatalf("%s holds %q (stored %v)", key, got, stored)
				}
			}
		})
	}
}

func TestFormUploadCRC32AfterFile(t *testing.T) {
	e := newEnv(t)
	future := time.Now().Add(time.Hour).Unix()
	data := "checked after the file"
	for _, c := range []struct {
		name, key, crc string
		want           int
	}{
		{"not matching, new key", "crc-after-new.txt", crcOf(data + "x"), 406},
		{"not matching, existing key", "crc-after-old.txt", crcOf(data + "x"), 406},
		{"matching", "crc-after-ok.txt", crcOf(data), 200},
	} {
		t.Run(c.name, func(t *testing.T) {
			e.object("photos", "crc-after-old.txt", "old")
			tok := uploadToken(alice, map[string]any{"scope": "photos:" + c.key, "deadline": future})
			status, v := e.postRaw(rawForm(formPart{name: "token", value: tok}, formPart{name: "key", value: c.key},
				formPart{name: "file", filename: "f.txt", value: data}, formPart{name: "crc32", value: c.crc},
				formPart{name: "accept", value: "text/plain"}) + tailEnd)
			if status != c.want {
				t.Fatalf("%d %v, want %d", status, v, c.want)
			}
			got, stored := e.read("photos", c.key)
			switch {
			case c.want == 200 && got != data:
				t.Fatalf("stored %q", got)
			case c.want != 200 && c.key == "crc-after-old.txt" && got != "old":
				t.Fatalf("the existing object now holds %q", got)
			case c.want != 200 && c.key == "crc-after-new.txt" && stored:
				t.Fatalf("stored %q", got)
			}
		})
	}
	t.Run("keyless, not matching", func(t *testing.T) {
		tok := uploadToken(alice, map[string]any{"scope": "photos", "deadline": future})
		status, v := e.postRaw(rawForm(formPart{name: "token", value: tok},
			formPart{name: "file", filename: "f.txt", value: "keyless " + data}, formPart{name: "crc32", value: "1"}) + tailEnd)
		if status != 406 {
			t.Fatalf("%d %v, want 406", status, v)
		}
		if _, stored := e.read("photos", etagOf(t, "keyless "+data)); stored {
			t.Fatal("stored under its etag")
		}
		if objs, err := e.objs.List(context.Background(), "photos", ".dora-upload/", 0); err != nil || len(objs) != 0 {
			t.Fatalf("temporary objects left: %v %v", objs, err)
		}
	})
	t.Run("insert-only, the same content, not matching", func(t *testing.T) {
		e.object("photos", "crc-same.txt", data)
		tok := uploadToken(alice, map[string]any{"scope": "photos", "deadline": future})
		status, v := e.postRaw(rawForm(formPart{name: "token", value: tok}, formPart{name: "key", value: "crc-same.txt"},
			formPart{name: "file", filename: "f.txt", value: data}, formPart{name: "crc32", value: crcOf("other")}) + tailEnd)
		if status != 406 {
			t.Fatalf("%d %v, want 406", status, v)
		}
	})
}

// A valid form with fields after the file stores the file, queues the
// policy's persistentOps and hands the later x: variables to returnBody.
func TestFormUploadFieldsAfterFile(t *testing.T) {
	e := newEnv(t)
	e.startWorker(e.q, nil)
	e.object("photos", "tail.txt", "old")
	data := "process me"
	tok := uploadToken(alice, map[string]any{"scope": "photos:tail.txt", "deadline": time.Now().Add(time.Hour).Unix(),
		"persistentOps": "upper/p", "returnBody": `{"key":"$(key)","id":"$(persistentId)","x":"$(x:after)"}`})
	status, v := e.postRaw(rawForm(formPart{name: "token", value: tok}, formPart{name: "key", value: "tail.txt"},
		formPart{name: "file", filename: "f.txt", value: data}, formPart{name: "crc32", value: crcOf(data)},
		formPart{name: "x:after", value: "later"}, formPart{name: "key", value: "tail.txt"}, formPart{name: "accept", value: "text/plain"}) + tailEnd)
	id, _ := v["id"].(string)
	if status != 200 || v["key"] != "tail.txt" || v["x"] != "later" || id == "" {
		t.Fatalf("%d %v", status, v)
	}
	if got, _ := e.read("photos", "tail.txt"); got != data {
		t.Fatalf("stored %q", got)
	}
	s, _ := e.waitFinal(id)
	if s.Code != 0 || s.InputKey != "tail.txt" {
		t.Fatalf("job %+v", s)
	}
	if got, _ := e.read("photos", s.Items[0].Key); got != "PROCESS ME" {
		t.Fatalf("result %q", got)
	}
}
