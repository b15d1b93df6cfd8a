package admin

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"time"
)

// followPoll is how often a followed log is checked for new bytes.
const followPoll = 250 * time.Millisecond

// wantFollow reports whether a request asks to follow a log (?follow=1,
// true or yes; Qiniu's tools spell it -f).
func wantFollow(r *http.Request) bool {
	switch r.URL.Query().Get("follow") {
	case "1", "true", "yes":
		return true
	}
	return false
}

// streaming prepares w for a reply that lasts as long as what it follows:
// no write deadline (the server's WriteTimeout would cut it), headers sent
// at once so the client sees the stream start, and every later write
// flushed (flushWriter).
func streaming(w http.ResponseWriter) *flushWriter {
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{}) // ErrNotSupported: nothing to lift
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_ = rc.Flush()
	return &flushWriter{w: w, rc: rc}
}

// flushWriter flushes after every write so followed lines reach the client
// as they come (chunked transfer).
type flushWriter struct {
	w  io.Writer
	rc *http.ResponseController
}

func (f *flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if err == nil {
		err = f.rc.Flush()
	}
	return n, err
}

// followFile copies the file at path to w and keeps copying what is
// appended until finished reports true (checked before the last read, so
// every byte written before the end is sent) or ctx ends. A file that does
// not exist yet is waited for.
func followFile(ctx context.Context, w io.Writer, path string, finished func(context.Context) bool) error {
	var f *os.File
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	t := time.NewTicker(followPoll)
	defer t.Stop()
	buf := make([]byte, 32<<10)
	for {
		done := finished(ctx)
		if f == nil {
			var err error
			f, err = os.Open(path)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
		if f != nil {
			if _, err := io.CopyBuffer(w, f, buf); err != nil {
				return err
			}
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
