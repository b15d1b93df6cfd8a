package dora

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateKey(t *testing.T) {
	for _, tc := range []struct {
		key string
		ok  bool
	}{
		{"a", true}, {"a/b/c.jpg", true}, {"ü/..x", true}, {"a//b", false}, {"/a", false}, {"a/", false},
		{"", false}, {".", false}, {"..", false}, {"a/./b", false}, {"a/..", false},
		{"a\x00b", false}, {"\xff", false}, {"a\\b", false}, {"a\nb", false}, {"a\x1fb", false}, {"a\x7f", false}, {strings.Repeat("k", MaxKeyBytes), true}, {strings.Repeat("k", MaxKeyBytes+1), false},
	} {
		err := ValidateKey(tc.key)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateKey(%q) = %v, want ok=%v", tc.key, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrBadKey) {
			t.Errorf("ValidateKey(%q) = %v, does not wrap ErrBadKey", tc.key, err)
		}
	}
}

// FuzzValidateKey: an accepted key has no empty, "." or ".." segment.
func FuzzValidateKey(f *testing.F) {
	for _, k := range []string{"a", "a/b", "../x", "a//b", "\x00", "ü"} {
		f.Add(k)
	}
	f.Fuzz(func(t *testing.T, key string) {
		if ValidateKey(key) != nil {
			return
		}
		for _, seg := range strings.Split(key, "/") {
			if seg == "" || seg == "." || seg == ".." {
				t.Fatalf("accepted %q", key)
			}
		}
	})
}

func TestReservedKey(t *testing.T) {
	for key, want := range map[string]bool{
		".dora-upload": true, ".dora-upload/": true, ".dora-upload/0123abcd": true, ".dora-upload/a/b": true,
		".dora-uploads": false, ".dora-upload.txt": false, "a/.dora-upload/x": false, "dora-upload/x": false, "": false,
	} {
		if got := ReservedKey(key); got != want {
			t.Errorf("ReservedKey(%q) = %v, want %v", key, got, want)
		}
	}
}

// CheckUserKey is the one wording of the refusal of a key under the
// upload temporaries' namespace, which every API branches on.
func TestCheckUserKey(t *testing.T) {
	for _, k := range []string{".dora-upload", ".dora-upload/", ".dora-upload/" + strings.Repeat("x", 100)} {
		err := CheckUserKey(k)
		if !errors.Is(err, ErrReservedKey) || len(err.Error()) > 200 {
			t.Errorf("CheckUserKey(%.20q…) = %v, want ErrReservedKey, briefly", k, err)
		}
	}
	for _, k := range []string{"a", ".dora-uploads/x", "a/.dora-upload/x"} {
		if err := CheckUserKey(k); err != nil {
			t.Errorf("CheckUserKey(%q) = %v, want nil", k, err)
		}
	}
}
