package builtin

import (
	"encoding/binary"
	"net/http"
	"runtime"
	"testing"
	"time"
)

// tiffEntry is one IFD entry of a test TIFF.
type tiffEntry struct {
	id, typ uint16
	count   uint32
	val     uint32 // the value inline, or its offset
}

// tiffIFDs lays out a little-endian TIFF whose IFDs follow the header in
// order, each the next one's predecessor in the chain; the last IFD's
// next offset is last. tail is appended after the IFDs, at the offset
// returned.
func tiffIFDs(last uint32, tail []byte, dirs ...[]tiffEntry) ([]byte, uint32) {
	le := binary.LittleEndian
	t := le.AppendUint32([]byte{'I', 'I', 42, 0}, 8)
	off := 8
	for i, d := range dirs {
		t = le.AppendUint16(t, uint16(len(d)))
		for _, e := range d {
			t = le.AppendUint16(t, e.id)
			t = le.AppendUint16(t, e.typ)
			t = le.AppendUint32(t, e.count)
			t = le.AppendUint32(t, e.val)
		}
		off += 2 + 12*len(d) + 4
		next := uint32(off)
		if i == len(dirs)-1 {
			next = last
		}
		t = le.AppendUint32(t, next)
	}
	return append(t, tail...), uint32(len(t))
}

// jpegWithAPP1 puts tiff in an Exif APP1 segment of a small JPEG.
func jpegWithAPP1(t *testing.T, tiff []byte) []byte {
	payload := append([]byte("Exif\x00\x00"), tiff...)
	seg := binary.BigEndian.AppendUint16([]byte{0xff, 0xe1}, uint16(len(payload)+2))
	j := encJPEG(t, twoColour(8, 8))
	out := append(append(append([]byte{}, j[:2]...), seg...), payload...)
	return append(out, j[2:]...)
}

// TestExifCorruptStructure: EXIF made to exhaust the router (a tag count
// whose length overflows, an IFD chain that loops, tags sharing one large
// value) is refused in a bounded time and allocation, by exif (400) and by
// imageMogr2/auto-orient (which then leaves the image as is).
func TestExifCorruptStructure(t *testing.T) {
	// 0x80000002 SHORTs are 2^32+4 bytes: 4 once truncated to 32 bits.
	overflow, _ := tiffIFDs(0, nil, []tiffEntry{{0x0112, 3, 0x80000002, 6}})
	// IFD 8 -> IFD 14 -> IFD 8 -> ...
	loop, _ := tiffIFDs(8, nil, nil, nil)
	// 4000 tags, each 60000 BYTEs at the same offset.
	shared := make([]tiffEntry, 4000)
	_, at := tiffIFDs(0, nil, shared)
	for i := range shared {
		shared[i] = tiffEntry{0x010e, 1, 60000, at}
	}
	sharedTIFF, _ := tiffIFDs(0, make([]byte, 60000), shared)
	for name, in := range map[string][]byte{"overflow": overflow, "loop": loop, "shared": sharedTIFF} {
		for _, c := range []struct {
			fop, in string
		}{{"exif", "tiff"}, {"exif", "jpeg"}, {"imageMogr2/auto-orient/format/png", "jpeg"}} {
			b := in
			if c.in == "jpeg" {
				if len(in) > 65000 {
					continue // an APP1 segment holds at most 64 KiB
				}
				b = jpegWithAPP1(t, in)
			}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			done := make(chan error, 1)
			go func() {
				_, _, err := runBytes(t, c.fop, b)
				done <- err
			}()
			var err error
			select {
			case err = <-done:
			case <-time.After(5 * time.Second):
				t.Fatalf("%s %s in %s: still running after 5s", name, c.fop, c.in)
			}
			runtime.ReadMemStats(&after)
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20 {
				t.Errorf("%s %s in %s: allocated %d MiB", name, c.fop, c.in, grew>>20)
			}
			if c.fop == "exif" {
				wantStatus(t, err, http.StatusBadRequest, "no exif data")
			} else if err != nil {
				t.Errorf("%s %s in %s: %v", name, c.fop, c.in, err)
			}
		}
	}
}
