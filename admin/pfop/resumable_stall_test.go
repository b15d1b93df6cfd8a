package pfop_test

import (
	"bytes"
	"hash/fnv"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"
)

// stallBody is a request body that says when it is first read and then
// blocks until released: a client whose chunk stops arriving.
type stallBody struct {
	reading chan struct{}
	release chan struct{}
	first   bool
}

func (b *stallBody) Read(p []byte) (int, error) {
	if !b.first {
		b.first = true
		close(b.reading)
	}
	<-b.release
	return 0, io.EOF
}

// A chunk whose body stalls (a slow or vanished client) holds up no other
// upload: a bput of another block answers while it waits, even one whose
// ctx shares the handler's lock stripe (fnv32a(ctx) mod 64).
func TestStalledChunkBlocksNoOtherBlock(t *testing.T) {
	e := newEnv(t)
	tok := uploadToken(alice, map[string]any{"scope": "photos", "deadline": time.Now().Add(time.Hour).Unix()})
	stripe := func(id string) uint32 {
		h := fnv.New32a()
		h.Write([]byte(id))
		return h.Sum32() % 64
	}
	mkblk := func() string {
		status, v := e.upCall("POST", "/mkblk/8", tok, "application/octet-stream", []byte("abcd"), nil)
		if status != 200 {
			t.Fatalf("mkblk: %d %v", status, v)
		}
		return v["ctx"].(string)
	}
	a := mkblk()
	b := ""
	for range 2000 {
		if id := mkblk(); stripe(id) == stripe(a) {
			b = id
			break
		}
	}
	if b == "" {
		t.Fatal("no block shares the first one's stripe")
	}

	body := &stallBody{reading: make(chan struct{}), release: make(chan struct{})}
	reqA := httptest.NewRequest("POST", "/bput/"+a+"/4", body)
	reqA.Header.Set("Authorization", "UpToken "+tok)
	doneA := make(chan struct{})
	go func() {
		defer close(doneA)
		e.h.ServeHTTP(httptest.NewRecorder(), reqA)
	}()
	defer func() { <-doneA }()
	defer close(body.release)
	<-body.reading // A's handler is reading its chunk

	doneB := make(chan int, 1)
	go func() {
		reqB := httptest.NewRequest("POST", "/bput/"+b+"/4", bytes.NewReader([]byte("efgh")))
		reqB.Header.Set("Authorization", "UpToken "+tok)
		rec := httptest.NewRecorder()
		e.h.ServeHTTP(rec, reqB)
		doneB <- rec.Code
	}()
	select {
	case code := <-doneB:
		if code != http.StatusOK {
			t.Fatalf("bput of the other block: %d", code)
		}
	case <-time.After(20 * time.Second): // a hang detector, not a timing
		t.Fatal("bput of another block waits for the stalled chunk of " + a + " (stripe " + strconv.Itoa(int(stripe(a))) + ")")
	}
}
