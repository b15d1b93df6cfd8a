package local_test

import (
	"testing"

	"github.com/doraproject/dora/router/origin/local"
	"github.com/doraproject/dora/router/origin/origintest"
)

// TestContract runs the origin contract (shared with origin/s3) against
// a fresh directory per test.
func TestContract(t *testing.T) {
	origintest.Run(t, func(t *testing.T) origintest.Store {
		d, err := local.New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		return d
	}, origintest.Options{})
}
