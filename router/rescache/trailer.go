package rescache

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// An entry file: the result's bytes, then the trailer (JSON), then the
// footer: the trailer's length (uint32, little-endian) and footerMagic.
const (
	footerMagic = "DRC1"
	footerLen   = 8
	// maxTrailer bounds a trailer (a key is an object key and a pipeline's
	// text, each bounded well below this).
	maxTrailer = 64 << 10
)

// trailer is an entry's metadata as stored after its bytes.
type trailer struct {
	Key      string `json:"key"`
	MimeType string `json:"mime"`
	ETag     string `json:"etag"`
	Created  int64  `json:"created"` // unix nanoseconds
	Expires  int64  `json:"expires"`
	Size     int64  `json:"size"`   // the result's bytes before the trailer
	CRC      uint32 `json:"crc32c"` // CRC-32C (Castagnoli) of them
}

var errBadTrailer = errors.New("rescache: bad entry trailer")

// encodeTrailer returns the trailer and footer to append to an entry's
// bytes.
func encodeTrailer(t trailer) ([]byte, error) {
	b, err := json.Marshal(t)
	if err != nil {
		return nil, err
	}
	if len(b) > maxTrailer {
		return nil, fmt.Errorf("%w: %d bytes", errBadTrailer, len(b))
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(b)))
	return append(b, footerMagic...), nil
}

// readTrailer reads and checks the trailer of an entry file of size bytes:
// the footer's magic and length, a trailer that decodes, a Size that
// accounts for exactly the bytes before it, a key, and an expiry after the
// creation.
func readTrailer(r io.ReaderAt, size int64) (trailer, error) {
	var t trailer
	if size < footerLen {
		return t, fmt.Errorf("%w: file of %d bytes", errBadTrailer, size)
	}
	var foot [footerLen]byte
	if _, err := r.ReadAt(foot[:], size-footerLen); err != nil {
		return t, fmt.Errorf("%w: %v", errBadTrailer, err)
	}
	if string(foot[4:]) != footerMagic {
		return t, fmt.Errorf("%w: no footer", errBadTrailer)
	}
	n := int64(binary.LittleEndian.Uint32(foot[:4]))
	if n == 0 || n > maxTrailer || n > size-footerLen {
		return t, fmt.Errorf("%w: trailer length %d in a file of %d bytes", errBadTrailer, n, size)
	}
	b := make([]byte, n)
	if _, err := r.ReadAt(b, size-footerLen-n); err != nil {
		return t, fmt.Errorf("%w: %v", errBadTrailer, err)
	}
	if err := json.Unmarshal(b, &t); err != nil {
		return trailer{}, fmt.Errorf("%w: %v", errBadTrailer, err)
	}
	switch {
	case t.Size != size-footerLen-n:
		return trailer{}, fmt.Errorf("%w: %d bytes recorded, %d present", errBadTrailer, t.Size, size-footerLen-n)
	case t.Key == "":
		return trailer{}, fmt.Errorf("%w: no key", errBadTrailer)
	case t.Expires <= t.Created:
		return trailer{}, fmt.Errorf("%w: expires before its creation", errBadTrailer)
	}
	return t, nil
}
