package admin

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/runtime"
)

// fakeRuntime records what the server asks and reports statuses the test
// sets.
type fakeRuntime struct {
	mu       sync.Mutex
	applied  []runtime.Spec
	specs    map[string]runtime.Spec
	status   map[string]runtime.DeploymentStatus
	removed  []string
	stopped  map[string][]int
	started  map[string][]int
	applyErr func(runtime.Spec) error
	applyCh  chan string // receives the deployment id of every Apply, when set
}

func newFakeRuntime() *fakeRuntime {
	return &fakeRuntime{
		specs:   map[string]runtime.Spec{},
		status:  map[string]runtime.DeploymentStatus{},
		stopped: map[string][]int{},
		started: map[string][]int{},
	}
}

var _ runtime.Runtime = (*fakeRuntime)(nil)

func (f *fakeRuntime) Apply(ctx context.Context, spec runtime.Spec) error {
	f.mu.Lock()
	fn := f.applyErr
	ch := f.applyCh
	f.mu.Unlock()
	if fn != nil {
		if err := fn(spec); err != nil {
			return err
		}
	}
	f.mu.Lock()
	f.applied = append(f.applied, spec)
	id := spec.Deployment.ID
	f.specs[id] = spec
	if _, ok := f.status[id]; !ok {
		f.status[id] = runtime.DeploymentStatus{Status: dora.DeployPending}
	}
	f.mu.Unlock()
	if ch != nil {
		select {
		case ch <- id:
		case <-ctx.Done():
		}
	}
	return nil
}

func (f *fakeRuntime) Scale(ctx context.Context, id string, count int, reason string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.specs[id]; !ok {
		return runtime.ErrNotFound
	}
	return nil
}

func (f *fakeRuntime) Status(ctx context.Context, id string) (runtime.DeploymentStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, ok := f.status[id]
	if !ok {
		return st, fmt.Errorf("status %s: %w", id, runtime.ErrNotFound)
	}
	return st, nil
}

// setRunning marks a deployment RUNNING with n healthy instances.
func (f *fakeRuntime) setRunning(id string, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := runtime.DeploymentStatus{Status: dora.DeployRunning, Healthy: n}
	for i := 1; i <= n; i++ {
		st.Instances = append(st.Instances, runtime.InstanceStatus{Index: i, ID: fmt.Sprintf("%s-%d", id, i),
			State: runtime.StateRunning, Healthy: true, Addr: fmt.Sprintf("127.0.0.1:%d", 9100+i)})
	}
	f.status[id] = st
}

func (f *fakeRuntime) StopInstances(ctx context.Context, id string, idx []int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.specs[id]; !ok {
		return runtime.ErrNotFound
	}
	f.stopped[id] = append(f.stopped[id], idx...)
	return nil
}

func (f *fakeRuntime) StartInstances(ctx context.Context, id string, idx []int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.specs[id]; !ok {
		return runtime.ErrNotFound
	}
	f.started[id] = append(f.started[id], idx...)
	return nil
}

func (f *fakeRuntime) Logs(ctx context.Context, id string, q runtime.LogQuery) (io.ReadCloser, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.specs[id]; !ok {
		return nil, runtime.ErrNotFound
	}
	if q.Index > 2 {
		return nil, runtime.ErrNotFound
	}
	text := fmt.Sprintf("2026-01-02T03:04:05Z %s line one of %d\n2026-01-02T03:05:05Z %s line two of %d\n", q.Stream, q.Index, q.Stream, q.Index)
	return io.NopCloser(strings.NewReader(text)), nil
}

// CollectedLogs stands for the lines of files under log_file_paths.
func (f *fakeRuntime) CollectedLogs(id string, index int) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.specs[id]; !ok || index > 2 {
		return nil, runtime.ErrNotFound
	}
	return []string{fmt.Sprintf("app.log: request two served by %d", index), "app.log: idle"}, nil
}

func (f *fakeRuntime) Remove(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removed = append(f.removed, id)
	delete(f.specs, id)
	delete(f.status, id)
	return nil
}

func (f *fakeRuntime) appliedIDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ids []string
	for _, s := range f.applied {
		ids = append(ids, s.Deployment.ID)
	}
	return ids
}

func (f *fakeRuntime) lastSpec(id string) (runtime.Spec, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.specs[id]
	return s, ok
}

func (f *fakeRuntime) removedIDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.removed...)
}
