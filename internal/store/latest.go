package store

// OfferLatest puts kvs in out, a channel with a buffer of one, replacing a
// listing the reader has not taken yet, so a slow watcher always gets the
// newest listing and never a backlog. It never blocks as long as the caller
// is the only sender on out (the watch goroutine of a Store implementation).
func OfferLatest(out chan []KV, kvs []KV) {
	select {
	case out <- kvs:
		return
	default:
	}
	select {
	case <-out:
	default:
	}
	out <- kvs
}
