package rs

import (
	"crypto/rand"
	"encoding/hex"
	"strings"
)

// UploadTempPrefix is the key namespace reserved for the temporaries of
// writes in progress: an upload that names no key (admin/pfop: keyless
// and saveKey uploads) and a fetch to a bare bucket store the file there
// under a random name (TempKey), then copy it to its key and delete it.
// Keys there are left out of listings, refused by every rs operation and
// upload.
const UploadTempPrefix = ".dora-upload/"

// ReservedKey reports whether key is UploadTempPrefix's directory or lies
// under it: a key no user may read, write, list or delete.
func ReservedKey(key string) bool {
	return key == strings.TrimSuffix(UploadTempPrefix, "/") || strings.HasPrefix(key, UploadTempPrefix)
}

// TempKey returns a new key under UploadTempPrefix: 96 random bits, so
// that no two writes share one and nobody can guess one.
func TempKey() string {
	var rnd [12]byte
	_, _ = rand.Read(rnd[:])
	return UploadTempPrefix + hex.EncodeToString(rnd[:])
}
