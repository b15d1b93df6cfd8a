package local

import (
	"fmt"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// dirWatch watches the kept bucket directories with inotify, so that a
// warm object is served with no lookup of its name at all: the only
// system call left on the warm path is one FIONREAD on the inotify
// descriptor, which tells whether anything changed in a watched directory
// since the last look (about a third of the fstatat it replaces, which
// walks the name and fills a stat).
//
// Why this is never stale: the kernel queues an event during the very
// system call that changes a watched directory's entry or one of its
// files (a rename over a key, an unlink, a write or truncate in place, a
// chmod, the directory itself moved or removed) before that call returns.
// Every lookup first takes in every queued event (pending, drain), and an
// event drops the objects it names; an object is trusted without a stat
// only after one stat through the watched directory matched it while the
// watch was alive (bless). A change after that stat queues an event that
// the next lookup sees.
//
// What inotify does not see is left to the stat, or not covered: a change
// made through another name of the file (a hard link in another
// directory) is reported to that name's directory only, so a file with
// more than one link is never blessed (warm.stat); a link added after
// the blessing is not seen (the link count changes on the file alone).
// Nor does inotify report writes through a shared mapping (mmap): a
// blessed object changed that way stays stale until another event names
// it, where a stat would have seen the modification time move.
//
// Only directories on a local file system are watched (rawStatSafe):
// inotify sees no change made by another NFS client. Where a watch cannot
// be added (no inotify, the per-user watch limit reached, no /proc), the
// kept objects of that bucket are revalidated with a stat per Open, as
// before.
type dirWatch struct {
	once sync.Once
	fd   int // the inotify descriptor, -1 when there is none

	// draining is set while a drain has read events it has not yet
	// applied: a lookup that then finds the queue empty waits for it.
	draining atomic.Bool
	mu       sync.Mutex // one drain at a time; guards byWD and buf
	byWD     map[int32]*bucketDir
	watches  atomic.Int32 // len(byWD), read without mu
	buf      [8 << 10]byte
}

// watchMask: every change to the directory's entries or to a file in it,
// and the end of the directory itself.
const watchMask = unix.IN_MODIFY | unix.IN_ATTRIB | unix.IN_CLOSE_WRITE |
	unix.IN_MOVED_FROM | unix.IN_MOVED_TO | unix.IN_CREATE | unix.IN_DELETE |
	unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_ONLYDIR

// init opens the inotify descriptor on first use.
func (dw *dirWatch) init() {
	dw.once.Do(func() {
		fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
		if err != nil {
			fd = -1
		}
		dw.fd = fd
	})
}

// fsCasefoldFL is FS_CASEFOLD_FL, a case-insensitive directory's flag
// (not in x/sys/unix).
const fsCasefoldFL = 0x40000000

// add watches b's directory (through its descriptor, so that the watch
// is on the directory b holds even if its name now points elsewhere).
// A case-insensitive directory is not watched: an event names the entry
// as it is spelt, which a key spelt otherwise may open.
func (dw *dirWatch) add(b *bucketDir) {
	if !b.raw || b.dir == nil {
		return
	}
	if fl, err := unix.IoctlGetUint32(b.fd, unix.FS_IOC_GETFLAGS); err == nil && fl&fsCasefoldFL != 0 {
		return
	}
	dw.init()
	if dw.fd < 0 {
		return
	}
	dw.mu.Lock()
	defer dw.mu.Unlock()
	wd, err := unix.InotifyAddWatch(dw.fd, fmt.Sprintf("/proc/self/fd/%d", b.fd), watchMask)
	if err != nil {
		return
	}
	if dw.byWD == nil {
		dw.byWD = map[int32]*bucketDir{}
	}
	// The same directory kept twice (a handle forgotten and reopened)
	// has one watch: the newest handle owns it.
	if old := dw.byWD[int32(wd)]; old != nil {
		old.watched.Store(false)
	}
	b.wd = int32(wd)
	dw.byWD[b.wd] = b
	dw.watches.Store(int32(len(dw.byWD)))
	b.watched.Store(true)
}

// remove stops watching b's directory (its handle is being closed). b
// stays in byWD until the kernel's IN_IGNORED for the watch is applied:
// the events queued before it still drop what they name.
func (dw *dirWatch) remove(b *bucketDir) {
	if !b.watched.Load() {
		return
	}
	dw.mu.Lock()
	defer dw.mu.Unlock()
	b.watched.Store(false)
	if dw.byWD[b.wd] == b {
		if _, err := unix.InotifyRmWatch(dw.fd, uint32(b.wd)); err != nil {
			// Gone already (its IN_IGNORED, if still queued, finds no
			// entry: the directory was removed, its entries with it).
			delete(dw.byWD, b.wd)
			dw.watches.Store(int32(len(dw.byWD)))
		}
	}
}

// close releases the inotify descriptor.
func (dw *dirWatch) close() {
	dw.init() // no Do may run after this one
	dw.mu.Lock()
	defer dw.mu.Unlock()
	if dw.fd >= 0 {
		unix.Close(dw.fd)
		dw.fd = -1
	}
	dw.unwatchAll()
}

// unwatchAll forgets every watch; under mu.
func (dw *dirWatch) unwatchAll() {
	for wd, b := range dw.byWD {
		b.watched.Store(false)
		delete(dw.byWD, wd)
	}
	dw.watches.Store(0)
}

// active reports whether a directory is watched: only then can a kept
// object be served without a stat, and only then need events be taken in.
func (dw *dirWatch) active() bool { return dw.watches.Load() > 0 }

// pending reports whether events may be waiting to be applied: queued in
// the kernel (FIONREAD, alias TIOCINQ; a raw call: it cannot block) or read by a drain
// that has not applied them yet.
func (dw *dirWatch) pending() bool {
	var n int32
	if _, _, e := unix.RawSyscall(unix.SYS_IOCTL, uintptr(dw.fd), unix.TIOCINQ, uintptr(unsafe.Pointer(&n))); e != 0 {
		return true // drain finds out (and then stops trusting the watch)
	}
	return n > 0 || dw.draining.Load()
}

// drain applies every queued event: drop(bucket, name) for an event on a
// file, dropBucket for one on a directory itself, dropAll when the queue
// overflowed or the descriptor failed.
func (dw *dirWatch) drain(w *warm) {
	dw.mu.Lock()
	defer dw.mu.Unlock()
	if dw.fd < 0 {
		return
	}
	dw.draining.Store(true)
	defer dw.draining.Store(false)
	for {
		n, err := unix.Read(dw.fd, dw.buf[:])
		if err == unix.EINTR {
			continue
		}
		if err != nil || n <= 0 {
			if err != unix.EAGAIN {
				// The queue cannot be read: trust no watch again.
				dw.unwatchAll()
				w.dropAll()
			}
			return
		}
		dw.apply(w, dw.buf[:n])
	}
}

// apply drops what the events in buf name.
func (dw *dirWatch) apply(w *warm, buf []byte) {
	w.applied.Add(1) // before any drop: see insert
	for off := 0; off+unix.SizeofInotifyEvent <= len(buf); {
		ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
		nameAt := off + unix.SizeofInotifyEvent
		off = nameAt + int(ev.Len)
		if ev.Mask&unix.IN_Q_OVERFLOW != 0 {
			w.dropAll()
			// The IN_IGNORED of a watch removed may be among the events lost.
			for wd, b := range dw.byWD {
				if !b.watched.Load() {
					delete(dw.byWD, wd)
				}
			}
			dw.watches.Store(int32(len(dw.byWD)))
			continue
		}
		b := dw.byWD[ev.Wd]
		if b == nil {
			continue // a watch already removed
		}
		if ev.Mask&unix.IN_IGNORED != 0 && !b.watched.Load() {
			// The end of a watch remove took away: nothing changed.
			delete(dw.byWD, ev.Wd)
			dw.watches.Store(int32(len(dw.byWD)))
			continue
		}
		if ev.Mask&(unix.IN_IGNORED|unix.IN_DELETE_SELF|unix.IN_MOVE_SELF|unix.IN_UNMOUNT) != 0 {
			// The directory moved or went: its handle no longer names the
			// bucket; the next lookup opens it afresh. Its watch goes now
			// (remove, when the handle is closed, sees it unwatched): a
			// directory moved away may live on, and its events would
			// drop the objects of the bucket now at its name.
			b.watched.Store(false)
			b.gone.Store(true)
			w.dropBucket(b.name)
			delete(dw.byWD, ev.Wd)
			dw.watches.Store(int32(len(dw.byWD)))
			if ev.Mask&unix.IN_IGNORED == 0 {
				_, _ = unix.InotifyRmWatch(dw.fd, uint32(ev.Wd))
			}
			continue
		}
		if ev.Len == 0 || off > len(buf) {
			w.dropBucket(b.name) // the directory's own attributes
			continue
		}
		name := buf[nameAt:off]
		for len(name) > 0 && name[len(name)-1] == 0 {
			name = name[:len(name)-1]
		}
		w.drop(b.name, string(name))
	}
}
