package builtin

import (
	"context"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"net/http"

	"github.com/doraproject/dora/internal/ctxio"
	"github.com/doraproject/dora/router/fop"
)

// qhash streams the input through md5, sha1 or sha256 and answers
// {"hash":"<hex>","fsize":n}.
func qhash(ctx context.Context, step fop.Step, in Input) (Result, error) {
	if len(step.Args) != 1 {
		return Result{}, errorf(http.StatusBadRequest, "qhash: want qhash/<md5|sha1|sha256>")
	}
	var h hash.Hash
	switch step.Args[0] {
	case "md5":
		h = md5.New()
	case "sha1":
		h = sha1.New()
	case "sha256":
		h = sha256.New()
	default:
		return Result{}, errorf(http.StatusBadRequest, "qhash: unsupported algorithm %q (want md5, sha1 or sha256)", step.Args[0])
	}
	n, err := io.Copy(h, ctxio.Reader(ctx, in.Body))
	if err != nil {
		if ctx.Err() != nil {
			return Result{}, ctx.Err()
		}
		return Result{}, fmt.Errorf("qhash: read input: %w", err)
	}
	b, err := json.Marshal(struct {
		Hash  string `json:"hash"`
		FSize int64  `json:"fsize"`
	}{hex.EncodeToString(h.Sum(nil)), n})
	if err != nil {
		return Result{}, fmt.Errorf("qhash: %w", err)
	}
	return bytesResult(b, "application/json"), nil
}
