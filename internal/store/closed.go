package store

import "sync"

// MarkClosed sets *closed, under mu (the lock that guards it in the
// store), and reports whether this call closed the store: the first Close
// of a store does the work, later ones find it done and return nil.
func MarkClosed(mu sync.Locker, closed *bool) (first bool) {
	mu.Lock()
	defer mu.Unlock()
	first = !*closed
	*closed = true
	return first
}
