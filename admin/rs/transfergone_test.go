package rs_test

import (
	"context"
	"io"
	"sync"
	"testing"

	"github.com/doraproject/dora/admin/rs"
	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/router/origin"
)

// hookAtFirstRead runs hook when the first bytes of an opened object are
// read: a copy or move is then streaming.
type hookAtFirstRead struct {
	rs.Objects
	hook func()
}

func (h hookAtFirstRead) Open(ctx context.Context, bucket, key string, off, n int64) (io.ReadCloser, origin.Object, error) {
	rc, obj, err := h.Objects.Open(ctx, bucket, key, off, n)
	if err != nil {
		return rc, obj, err
	}
	return &firstRead{ReadCloser: rc, hook: h.hook}, obj, nil
}

type firstRead struct {
	io.ReadCloser
	hook func()
	once sync.Once
}

func (f *firstRead) Read(p []byte) (int, error) {
	f.once.Do(f.hook)
	return f.ReadCloser.Read(p)
}

// rs copy and move stream the whole object into the destination: a
// destination bucket deleted meanwhile, or deleted and created again by
// another account, got the object (under the deleted name, which a create
// then refused, or in the new owner's bucket). They now store nothing
// there, answer 631, and a move keeps its source; also when the bucket
// goes between the check at the object's end and the store's commit.
func TestTransferIntoABucketDeletedMeanwhile(t *testing.T) {
	for _, op := range []string{"copy", "move"} {
		for _, at := range []string{"while streaming", "at its commit"} {
			t.Run(op+" "+at, func(t *testing.T) {
				var st store.Store
				e := newEnv(t, func(c *rs.Config) {
					st = c.Store
					hook := func() {
						if err := st.Delete(context.Background(), store.BucketKey("backup")); err != nil {
							t.Error(err)
						}
						recreateAsBob(t, st, "backup")
					}
					if at == "while streaming" {
						c.Objects = hookAtFirstRead{Objects: c.Objects, hook: hook}
					} else {
						c.Objects = stopAtPutEnd{Objects: c.Objects, hook: hook}
					}
				})
				e.object("photos", "p.txt", "alice's")
				status, v := e.call(signers["qiniu"], alice, "POST", "/"+op+"/"+entry("photos", "p.txt")+"/"+entry("backup", "p.txt"), "")
				if status != rs.StatusNoBucket {
					t.Fatalf("%s: %d %v, want 631", op, status, v)
				}
				if keys := e.allKeys("backup"); len(keys) != 0 {
					t.Fatalf("the %s left %q in bob's bucket", op, keys)
				}
				if _, ok := e.read("photos", "p.txt"); !ok {
					t.Fatalf("the %s lost its source", op)
				}
			})
		}
	}
}
