package builtin

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/rwcarlsen/goexif/tiff"
)

// Bounds of the EXIF data handed to the EXIF decoder (goexif). A JPEG's
// EXIF lives in one APP1 segment (at most 64 KiB); these leave room for a
// raw TIFF's tags and refuse only structures made to exhaust the router.
const (
	maxExifDirs       = 64      // IFDs walked, the chain and its sub-IFDs together
	maxExifTags       = 8192    // tag entries, all IFDs together
	maxExifValueBytes = 1 << 20 // bytes of tag values, all tags together
)

// errExifStructure is wrapped by checkTIFF's refusals: EXIF data the
// decoder would walk forever or allocate far more than its size for.
var errExifStructure = errors.New("EXIF structure refused")

// exifTIFF returns the TIFF block of b that exif.Decode would read, found
// as it finds it: b itself when it is a TIFF, what follows "Exif\0\0" when
// b starts with "Exif", else the payload of the first APP1 segment (the
// first 0xFF 0xE1 pair) after its "Exif\0\0" header. ok is false when
// there is none, or it does not start with a TIFF header (the decoder
// would fail on it).
func exifTIFF(b []byte) (t []byte, ok bool) {
	switch {
	case len(b) < 4:
		return nil, false
	case string(b[:4]) == "II*\x00" || string(b[:4]) == "MM\x00*":
		t = b
	case string(b[:4]) == "Exif":
		if len(b) < 6 || string(b[:6]) != "Exif\x00\x00" {
			return nil, false
		}
		t = b[6:]
	default:
		var seg []byte
		for p := 0; seg == nil; {
			i := bytes.IndexByte(b[p:], 0xff)
			if i < 0 || p+i+1 >= len(b) {
				return nil, false
			}
			p += i + 2 // the 0xFF and the byte after it, as goexif consumes them
			if b[p-1] != 0xe1 {
				continue
			}
			if p+2 > len(b) {
				return nil, false
			}
			n := int(binary.BigEndian.Uint16(b[p:])) - 2
			p += 2
			switch {
			case n == 0: // goexif looks for the next APP1
				continue
			case n < 0 || p+n > len(b):
				return nil, false
			}
			seg = b[p : p+n]
		}
		if len(seg) < 6 || string(seg[:6]) != "Exif\x00\x00" {
			return nil, false
		}
		t = seg[6:]
	}
	if len(t) < 8 || string(t[:4]) != "II*\x00" && string(t[:4]) != "MM\x00*" {
		return nil, false
	}
	return t, true
}

// checkTIFF walks the IFDs of the TIFF block t as goexif decodes them (the
// chain from the header, and the sub-IFDs its Exif, GPS and Interop
// pointers name) and refuses, with an error wrapping errExifStructure, what
// would make goexif loop or allocate beyond the data: a chain that comes
// back to an IFD (goexif follows it forever), a tag count whose byte length
// overflows 32 bits (goexif then reads a few bytes and allocates Count
// values: 16 GiB for a 26-byte file), or more IFDs, tags or value bytes
// than the bounds above (tags may share their value bytes). What goexif
// merely fails on is left to it.
func checkTIFF(t []byte) error {
	w := tiffWalk{t: t, order: binary.LittleEndian, seen: map[int64]bool{}}
	if t[0] == 'M' {
		w.order = binary.BigEndian
	}
	for off := int64(int32(w.order.Uint32(t[4:]))); off != 0; {
		if off < 0 || off >= int64(len(t)) {
			return nil // goexif fails here
		}
		if w.seen[off] {
			return fmt.Errorf("IFD chain comes back to offset %d: %w", off, errExifStructure)
		}
		w.seen[off] = true
		next, ok, err := w.dir(off)
		if err != nil || !ok {
			return err
		}
		off = next
	}
	for len(w.sub) > 0 {
		off := w.sub[0]
		w.sub = w.sub[1:]
		if off < 0 || off >= int64(len(t)) || w.seen[off] {
			continue
		}
		w.seen[off] = true
		if _, _, err := w.dir(off); err != nil {
			return err
		}
	}
	return nil
}

// tiffWalk is checkTIFF's state: the IFDs seen, the sub-IFDs to visit
// and the counts against the bounds.
type tiffWalk struct {
	t                  []byte
	order              binary.ByteOrder
	seen               map[int64]bool
	sub                []int64
	dirs, tags, values int
}

// exifTypeSize is the byte size of a TIFF value type, 0 for a type goexif
// does not know (it fails on it).
func exifTypeSize(typ tiff.DataType) uint64 {
	switch typ {
	case tiff.DTByte, tiff.DTAscii, tiff.DTSByte, tiff.DTUndefined:
		return 1
	case tiff.DTShort, tiff.DTSShort:
		return 2
	case tiff.DTLong, tiff.DTSLong, tiff.DTFloat:
		return 4
	case tiff.DTRational, tiff.DTSRational, tiff.DTDouble:
		return 8
	}
	return 0
}

// dir checks the IFD at off as tiff.DecodeDir reads it. ok is false where
// DecodeDir would fail; next is the offset of the next IFD in the chain.
func (w *tiffWalk) dir(off int64) (next int64, ok bool, err error) {
	t, end := w.t, int64(len(w.t))
	if w.dirs++; w.dirs > maxExifDirs {
		return 0, false, fmt.Errorf("more than %d IFDs: %w", maxExifDirs, errExifStructure)
	}
	p := off
	if p+2 > end {
		return 0, false, nil
	}
	n := int(int16(w.order.Uint16(t[p:])))
	p += 2
	var ptrs []int64
	for i := 0; i < n; i++ {
		if p+12 > end {
			return 0, false, nil
		}
		id, typ, count := w.order.Uint16(t[p:]), tiff.DataType(w.order.Uint16(t[p+2:])), w.order.Uint32(t[p+4:])
		val := t[p+8 : p+12]
		p += 12
		if count == 1<<32-1 {
			return 0, false, nil
		}
		size := exifTypeSize(typ) * uint64(count)
		if uint64(uint32(size)) != size {
			return 0, false, fmt.Errorf("tag 0x%04x: %d values of type %d overflow its length: %w", id, count, typ, errExifStructure)
		}
		if size == 0 {
			return 0, false, nil
		}
		if size > 4 {
			voff := int64(w.order.Uint32(val))
			if voff+int64(size) > end {
				return 0, false, nil
			}
			val = t[voff : voff+int64(size)]
		}
		w.tags++
		w.values += int(size)
		if w.tags > maxExifTags || w.values > maxExifValueBytes {
			return 0, false, fmt.Errorf("more than %d tags or %d bytes of tag values: %w", maxExifTags, maxExifValueBytes, errExifStructure)
		}
		if id == 0x8769 || id == 0x8825 || id == 0xa005 { // Exif, GPS, Interop sub-IFD
			if v, isInt := w.firstInt(typ, val); isInt {
				ptrs = append(ptrs, v)
			}
		}
	}
	if p+4 > end {
		return 0, false, nil
	}
	w.sub = append(w.sub, ptrs...)
	return int64(int32(w.order.Uint32(t[p:]))), true, nil
}

// firstInt is the first value of an integer tag, as tiff.Tag.Int64(0)
// reads it; isInt is false for other types.
func (w *tiffWalk) firstInt(typ tiff.DataType, val []byte) (v int64, isInt bool) {
	switch typ {
	case tiff.DTByte:
		return int64(val[0]), true
	case tiff.DTSByte:
		return int64(int8(val[0])), true
	case tiff.DTShort:
		return int64(w.order.Uint16(val)), true
	case tiff.DTSShort:
		return int64(int16(w.order.Uint16(val))), true
	case tiff.DTLong:
		return int64(w.order.Uint32(val)), true
	case tiff.DTSLong:
		return int64(int32(w.order.Uint32(val))), true
	}
	return 0, false
}
