package registry

import (
	"context"

	"github.com/doraproject/dora"
)

// ByAccount adapts a check that returns the whole account (such as
// admin.BasicAuthenticator) to Config.Authenticate, which needs only the
// account id.
func ByAccount(check func(ctx context.Context, user, pass string) (dora.Account, error)) func(ctx context.Context, user, pass string) (string, error) {
	return func(ctx context.Context, user, pass string) (string, error) {
		acct, err := check(ctx, user, pass)
		if err != nil {
			return "", err
		}
		return acct.ID, nil
	}
}
