//go:build !linux

package build

import (
	"context"
	"errors"
)

// errNoSandbox is returned where running user code as another user is not
// implemented.
var errNoSandbox = errors.New("running user code as another user is supported on Linux only")

// ChownTree gives dir and everything below it to u (Linux only; a nil u is
// a no-op everywhere).
func ChownTree(dir string, u *User) error { return ChownTreeContext(context.Background(), dir, u) }

// ChownTreeContext is ChownTree with a context (Linux only).
func ChownTreeContext(ctx context.Context, dir string, u *User) error {
	if u == nil {
		return nil
	}
	return errNoSandbox
}

// SealTree gives a finished build back to the platform's user (Linux only;
// elsewhere builds never run as another user, so there is nothing to do).
func SealTree(dir string, u *User) error { return nil }

// SealTreeContext is SealTree with a context (nothing to do either).
func SealTreeContext(ctx context.Context, dir string, u *User) error { return nil }
