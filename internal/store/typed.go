package store

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/doraproject/dora"
)

// Typed records: the values of the layout are JSON of the dora types. These
// helpers are the one place they are encoded and decoded.

// Get reads key into a T and returns its version. ErrNotFound passes
// through wrapped; a value that does not decode is an error.
func Get[T any](ctx context.Context, st Store, key string) (T, uint64, error) {
	var v T
	kv, err := st.Get(ctx, key)
	if err != nil {
		return v, 0, fmt.Errorf("get %s: %w", key, err)
	}
	if err := json.Unmarshal(kv.Value, &v); err != nil {
		return v, 0, fmt.Errorf("decode %s: %w", key, err)
	}
	return v, kv.Version, nil
}

// List reads every key under prefix into Ts, sorted by key, with the KVs
// they came from (same order). Values that do not decode are skipped: one
// bad record must not hide the others.
func List[T any](ctx context.Context, st Store, prefix string) ([]T, []KV, error) {
	kvs, err := st.List(ctx, prefix)
	if err != nil {
		return nil, nil, fmt.Errorf("list %s: %w", prefix, err)
	}
	out := make([]T, 0, len(kvs))
	keep := make([]KV, 0, len(kvs))
	for _, kv := range kvs {
		var v T
		if json.Unmarshal(kv.Value, &v) != nil {
			continue
		}
		out = append(out, v)
		keep = append(keep, kv)
	}
	return out, keep, nil
}

// Put writes v as JSON under key and returns the new version.
func Put(ctx context.Context, st Store, key string, v any) (uint64, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return 0, fmt.Errorf("encode %s: %w", key, err)
	}
	ver, err := st.Put(ctx, key, b)
	if err != nil {
		return 0, fmt.Errorf("put %s: %w", key, err)
	}
	return ver, nil
}

// CAS writes v as JSON under key only if the key is at version (0: absent);
// otherwise ErrConflict, wrapped.
func CAS(ctx context.Context, st Store, key string, v any, version uint64) (uint64, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return 0, fmt.Errorf("encode %s: %w", key, err)
	}
	ver, err := st.CAS(ctx, key, b, version)
	if err != nil {
		return 0, fmt.Errorf("cas %s: %w", key, err)
	}
	return ver, nil
}

// PutOp is a transaction op writing v as JSON under key (at version when
// version > 0).
func PutOp(key string, v any, version uint64) (Op, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return Op{}, fmt.Errorf("encode %s: %w", key, err)
	}
	return Op{Kind: OpPut, Key: key, Value: b, Version: version}, nil
}

// GetResult returns where pfop saved the result of fop (canonical) on
// bucket:key, or ErrNotFound (also for a record of another bucket, key or
// fop: a digest collision is not ours).
func GetResult(ctx context.Context, st Store, bucket, key, fop string) (dora.PfopResult, error) {
	r, _, err := Get[dora.PfopResult](ctx, st, ResultKey(bucket, key, fop))
	if err != nil {
		return dora.PfopResult{}, err
	}
	if r.Bucket != bucket || r.Key != key || r.Fop != fop {
		return dora.PfopResult{}, fmt.Errorf("result of %s on %s:%s: %w", fop, bucket, key, ErrNotFound)
	}
	return r, nil
}
