package cmd

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// spinnerFrames are drawn in turn on the spinner's line.
var spinnerFrames = []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}

// spinner draws "<frame> <label> (<elapsed>)" on a terminal line and keeps
// it below the lines written through Writer: each write first clears the
// spinner's line, the next tick redraws it. progressbar's spinner mode
// knows nothing of interleaved output, hence this small one.
type spinner struct {
	mu    sync.Mutex
	term  io.Writer // where the spinner is drawn (stderr, a terminal)
	label string
	start time.Time
	frame int
	drawn bool
	stop  chan struct{}
	done  chan struct{}
}

// startSpinner draws on term every 100ms until Stop.
func startSpinner(term io.Writer, label string) *spinner {
	s := &spinner{term: term, label: label, start: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			s.draw()
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *spinner) draw() {
	s.mu.Lock()
	defer s.mu.Unlock()
	fmt.Fprintf(s.term, "\r%s %s (%s)\x1b[K", spinnerFrames[s.frame%len(spinnerFrames)], s.label,
		time.Since(s.start).Round(time.Second))
	s.frame++
	s.drawn = true
}

// clear erases the spinner's line. Callers hold s.mu.
func (s *spinner) clear() {
	if s.drawn {
		fmt.Fprint(s.term, "\r\x1b[K")
		s.drawn = false
	}
}

// Writer returns w wrapped so that what it writes never lands on the
// spinner's line.
func (s *spinner) Writer(w io.Writer) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.clear()
		return w.Write(p)
	})
}

// Stop stops drawing and erases the line.
func (s *spinner) Stop() {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	s.clear()
	s.mu.Unlock()
}

type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
