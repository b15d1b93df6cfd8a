package autoscaler

import "testing"

// A deployment grows only into what the ufop's other deployments leave of
// the owner's limit, never below its own floor.
func TestShareOfLimit(t *testing.T) {
	for _, c := range []struct{ limit, others, floor, want int }{
		{0, 3, 1, 0}, // no limit known
		{5, 0, 1, 5},
		{5, 1, 1, 4},
		{5, 4, 1, 1},
		{5, 5, 0, 1},
		{5, 4, 2, 2}, // the floor wins: the admin API keeps floors within the limit
	} {
		if got := ShareOfLimit(c.limit, c.others, c.floor); got != c.want {
			t.Errorf("ShareOfLimit(%d, %d, %d) = %d, want %d", c.limit, c.others, c.floor, got, c.want)
		}
	}
}
