package store

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxKeyBytes is the longest key every implementation accepts (Consul KV's
// own limit is larger; bbolt's is 32 KiB).
const MaxKeyBytes = 1024

// ErrInvalid is wrapped by every error about a bad key, prefix, value or
// operation, whatever the implementation.
var ErrInvalid = errors.New("store: invalid argument")

// ValidateKey is the one key rule of every implementation: non-empty, at
// most MaxKeyBytes, no leading slash, valid UTF-8. Errors wrap ErrInvalid.
func ValidateKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("%w: empty key", ErrInvalid)
	case len(key) > MaxKeyBytes:
		return fmt.Errorf("%w: key of %d bytes (max %d)", ErrInvalid, len(key), MaxKeyBytes)
	case strings.HasPrefix(key, "/"):
		return fmt.Errorf("%w: key %q starts with a slash", ErrInvalid, key)
	case !utf8.ValidString(key):
		return fmt.Errorf("%w: key %q is not valid UTF-8", ErrInvalid, key)
	}
	return nil
}

// ValidatePrefix applies ValidateKey to a non-empty prefix; the empty
// prefix (everything) is valid.
func ValidatePrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	return ValidateKey(prefix)
}

// ValidateOp checks a transaction op's key and shape (a known kind; a
// create-only put has no version). Value limits are the implementation's.
func ValidateOp(op Op) error {
	if err := ValidateKey(op.Key); err != nil {
		return err
	}
	switch op.Kind {
	case OpPut:
		if op.CreateOnly && op.Version != 0 {
			return fmt.Errorf("%w: put of %s is create-only and also at version %d", ErrInvalid, op.Key, op.Version)
		}
	case OpDelete, OpCheck:
	default:
		return fmt.Errorf("%w: unknown op kind %d", ErrInvalid, op.Kind)
	}
	return nil
}
