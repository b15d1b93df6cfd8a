package store

import "testing"

func TestOfferLatestKeepsNewest(t *testing.T) {
	out := make(chan []KV, 1)
	OfferLatest(out, []KV{{Key: "a"}})
	OfferLatest(out, []KV{{Key: "b"}})
	OfferLatest(out, []KV{{Key: "c"}})
	got := <-out
	if len(got) != 1 || got[0].Key != "c" {
		t.Fatalf("got %v, want the newest listing [c]", got)
	}
	select {
	case extra := <-out:
		t.Fatalf("a stale listing stayed queued: %v", extra)
	default:
	}
}
