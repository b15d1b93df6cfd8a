package local

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// maxLineBytes bounds one captured output line; longer output is split.
const maxLineBytes = 16 << 10

// logLine is one captured line of output.
type logLine struct {
	t    time.Time
	text string
}

// stream captures one output stream of an instance: complete lines go to a
// ring bounded by max bytes and maxTail lines (for Logs) and to a file
// rotated at max bytes into "<file>.1" (kept for post-mortem `logtail`
// after a restart of the process). It is an io.Writer for exec.Cmd.
type stream struct {
	mu      sync.Mutex
	max     int64
	now     func() time.Time
	partial []byte
	lines   []logLine
	head    int // lines[head:] are live
	size    int64
	path    string
	file    *os.File
	fsize   int64
	// subs receive every new line (formatted) for Follow; a follower too
	// slow to keep up loses lines rather than stalling the instance.
	subs   map[chan string]struct{}
	closed bool
}

func newStream(path string, max int64, now func() time.Time) *stream {
	return &stream{max: max, path: path, now: now}
}

// Write splits p into lines; a trailing partial line waits for its end.
func (s *stream) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			room := maxLineBytes - len(s.partial)
			if len(p) < room {
				s.partial = append(s.partial, p...)
				break
			}
			s.partial = append(s.partial, p[:room]...)
			p = p[room:]
			s.emit()
			continue
		}
		if len(s.partial)+i > maxLineBytes {
			room := maxLineBytes - len(s.partial)
			s.partial = append(s.partial, p[:room]...)
			p = p[room:]
			s.emit()
			continue
		}
		s.partial = append(s.partial, p[:i]...)
		p = p[i+1:]
		s.emit()
	}
	return n, nil
}

// Flush emits a pending partial line (the process exited mid-line).
func (s *stream) Flush() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.partial) > 0 {
		s.emit()
	}
}

// emit records s.partial as a line. Callers hold s.mu.
func (s *stream) emit() {
	text := strings.TrimSuffix(string(s.partial), "\r")
	s.partial = s.partial[:0]
	l := logLine{t: s.now(), text: text}
	s.lines = append(s.lines, l)
	s.size += int64(len(text)) + 1
	// Bounded by bytes of text, and by count: each line costs its record
	// too (a program printing empty lines), and Logs shows at most
	// maxTail of them.
	for (s.size > s.max || len(s.lines)-s.head > maxTail) && s.head < len(s.lines)-1 {
		s.size -= int64(len(s.lines[s.head].text)) + 1
		s.lines[s.head] = logLine{}
		s.head++
	}
	if s.head > 1024 && s.head > len(s.lines)/2 {
		s.lines = append([]logLine(nil), s.lines[s.head:]...)
		s.head = 0
	}
	s.writeFile(l)
	if len(s.subs) > 0 {
		text := format(l)
		for ch := range s.subs {
			select {
			case ch <- text:
			default: // the follower is behind: drop, never block the instance
			}
		}
	}
}

// followBuffer is how many lines a follower may fall behind before lines
// are dropped for it.
const followBuffer = 1024

// Follow returns the last n lines and a channel of the lines written from
// then on; the channel is closed when the stream closes (the instance is
// gone). Call cancel to stop following.
func (s *stream) Follow(n int) (tail []string, lines <-chan string, cancel func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	live := s.lines[s.head:]
	if n < len(live) {
		live = live[len(live)-n:]
	}
	tail = make([]string, len(live))
	for i, l := range live {
		tail[i] = format(l)
	}
	ch := make(chan string, followBuffer)
	if s.closed {
		close(ch)
		return tail, ch, func() {}
	}
	if s.subs == nil {
		s.subs = map[chan string]struct{}{}
	}
	s.subs[ch] = struct{}{}
	return tail, ch, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if _, ok := s.subs[ch]; ok {
			delete(s.subs, ch)
			close(ch)
		}
	}
}

// writeFile appends l to the log file, rotating it at max bytes. Errors
// are dropped: losing a log line must not stop the instance.
func (s *stream) writeFile(l logLine) {
	if s.path == "" {
		return
	}
	rec := format(l) + "\n"
	if s.file != nil && s.fsize+int64(len(rec)) > s.max {
		s.file.Close()
		s.file = nil
		os.Rename(s.path, s.path+".1")
	}
	if s.file == nil {
		f, err := os.OpenFile(s.path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			return
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return
		}
		s.file, s.fsize = f, fi.Size()
	}
	n, _ := s.file.WriteString(rec)
	s.fsize += int64(n)
}

// Tail returns the last n lines, formatted "RFC3339 text".
func (s *stream) Tail(n int) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	live := s.lines[s.head:]
	if n < len(live) {
		live = live[len(live)-n:]
	}
	out := make([]string, len(live))
	for i, l := range live {
		out[i] = format(l)
	}
	return out
}

// Last returns the text of the last line, "" when none.
func (s *stream) Last() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.partial) > 0 {
		return string(s.partial)
	}
	if len(s.lines) > s.head {
		return s.lines[len(s.lines)-1].text
	}
	return ""
}

// Close closes the log file and ends the followers' channels.
func (s *stream) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for ch := range s.subs {
		close(ch)
	}
	s.subs = nil
	if s.file != nil {
		s.file.Close()
		s.file = nil
	}
}

func format(l logLine) string {
	return fmt.Sprintf("%s %s", l.t.UTC().Format(time.RFC3339Nano), l.text)
}

// followReader is an io.ReadCloser over a stream's tail then its new lines.
type followReader struct {
	ctx    context.Context
	pend   []byte
	lines  <-chan string
	cancel func()
}

func newFollowReader(ctx context.Context, tail []string, lines <-chan string, cancel func()) *followReader {
	var b []byte
	for _, l := range tail {
		b = append(b, l...)
		b = append(b, '\n')
	}
	return &followReader{ctx: ctx, pend: b, lines: lines, cancel: cancel}
}

// Read returns what is pending, else waits for the next line; io.EOF when
// the instance is gone or ctx ended.
func (f *followReader) Read(p []byte) (int, error) {
	for len(f.pend) == 0 {
		select {
		case <-f.ctx.Done():
			return 0, io.EOF
		case l, ok := <-f.lines:
			if !ok {
				return 0, io.EOF
			}
			f.pend = append(f.pend[:0], l...)
			f.pend = append(f.pend, '\n')
		}
	}
	n := copy(p, f.pend)
	f.pend = f.pend[n:]
	return n, nil
}

// Close stops following.
func (f *followReader) Close() error {
	f.cancel()
	return nil
}
