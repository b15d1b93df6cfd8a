package platform

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// parts is the lifecycle shared by the dev platform (Dev) and each
// production role (Service): the long-lived goroutines (goRun), the first
// failure among them (Done, Err) and what to release at the end (onClose,
// closeAll). Dev and Service each decide in Close in which order parts stop
// and backends close.
type parts struct {
	// failPrefix goes before a failing part's name in its error ("router ").
	failPrefix string
	cancel     context.CancelFunc
	wg         sync.WaitGroup
	errOnce    sync.Once
	err        error
	done       chan struct{}
	closers    []func() error
}

func newParts(failPrefix string) parts {
	return parts{failPrefix: failPrefix, done: make(chan struct{})}
}

// Done is closed when a part fails; Err then says why.
func (p *parts) Done() <-chan struct{} { return p.done }

// Err returns the failure that closed Done, if any.
func (p *parts) Err() error {
	select {
	case <-p.done:
		return p.err
	default:
		return nil
	}
}

// goRun runs part until it returns; an error from any part (but
// cancellation) fails the whole: Done closes.
func (p *parts) goRun(name string, part func() error) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		if err := part(); err != nil && !errors.Is(err, context.Canceled) {
			p.fail(fmt.Errorf("%s%s: %w", p.failPrefix, name, err))
		}
	}()
}

func (p *parts) fail(err error) {
	p.errOnce.Do(func() {
		p.err = err
		close(p.done)
	})
}

// stop cancels the parts' context, when there is one yet.
func (p *parts) stop() {
	if p.cancel != nil {
		p.cancel()
	}
}

// onClose registers f to run at closeAll (last registered, first run).
func (p *parts) onClose(f func() error) { p.closers = append(p.closers, f) }

// closeAll runs the registered closers, last first, and forgets them.
func (p *parts) closeAll() error {
	var errs []error
	for i := len(p.closers) - 1; i >= 0; i-- {
		if err := p.closers[i](); err != nil {
			errs = append(errs, err)
		}
	}
	p.closers = nil
	return errors.Join(errs...)
}

// closeUnless closes every part opened so far unless *started: the Start
// functions defer it so that a start failing half-way leaves nothing
// running or open (the parts' goroutines, such as dorad dev's watches of
// its roles, included: their context is cancelled and they are waited
// for).
func (p *parts) closeUnless(started *bool) {
	if !*started {
		p.stop()
		_ = p.closeAll()
		p.wg.Wait()
	}
}
