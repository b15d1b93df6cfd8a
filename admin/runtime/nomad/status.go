package nomad

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/runtime"
	consulapi "github.com/hashicorp/consul/api"
	"github.com/hashicorp/nomad/api"
)

// Status reports the deployment as Nomad (and Consul, when configured)
// sees it; see the package comment for the mapping.
func (r *Runtime) Status(ctx context.Context, id string) (runtime.DeploymentStatus, error) {
	ref, job, err := r.find(ctx, id)
	if err != nil {
		return runtime.DeploymentStatus{}, fmt.Errorf("nomad status: %w", err)
	}
	allocs, err := r.allocs(ctx, ref)
	if err != nil {
		return runtime.DeploymentStatus{}, fmt.Errorf("nomad status %s: %w", id, err)
	}
	passing, err := r.consulPassing(ctx, job)
	if err != nil {
		return runtime.DeploymentStatus{}, fmt.Errorf("nomad status %s: %w", id, err)
	}
	count, stopped := counts(job)
	st := runtime.DeploymentStatus{Instances: []runtime.InstanceStatus{}}
	var reasons []string
	if jobStopped(job) {
		for _, a := range latestPerName(allocs, false) {
			st.Instances = append(st.Instances, runtime.InstanceStatus{
				Index: nameIndex(a.Name) + 1, ID: a.ID, State: runtime.StateStopped, Addr: allocAddr(a),
			})
		}
		st.Status, st.Message = dora.DeployStopped, "job stopped"
		return st, nil
	}
	live := latestPerName(allocs, true)
	seen := map[int]bool{}
	for _, a := range live {
		in := instance(a, passing)
		seen[in.Index] = true
		if in.Healthy {
			st.Healthy++
		}
		if in.Message != "" && !in.Healthy {
			reasons = append(reasons, fmt.Sprintf("instance %d (%.8s): %s", in.Index, a.ID, in.Message))
		}
		st.Instances = append(st.Instances, in)
	}
	for i := count + 1; i <= count+stopped; i++ {
		if !seen[i] {
			st.Instances = append(st.Instances, runtime.InstanceStatus{Index: i, State: runtime.StateStopped, Message: "stopped"})
		}
	}
	sort.SliceStable(st.Instances, func(i, j int) bool { return st.Instances[i].Index < st.Instances[j].Index })

	if count == 0 && stopped > 0 {
		st.Status, st.Message = dora.DeployStopped, "all instances stopped"
		return st, nil
	}
	qq := (&api.QueryOptions{Region: ref.NomadRegion}).WithContext(ctx)
	dep, _, err := r.client.Jobs().LatestDeployment(ref.ID, qq)
	if err != nil && !isNotFound(err) {
		return st, fmt.Errorf("nomad status %s: latest deployment: %w", id, err)
	}
	rolling := dep != nil && (dep.Status == "running" || dep.Status == "pending" || dep.Status == "paused")
	if st.Healthy >= count {
		if !rolling {
			st.Status = dora.DeployRunning
			return st, nil
		}
		st.Status = dora.DeployPending
		st.Message = fmt.Sprintf("%d/%d instances healthy; Nomad deployment %.8s %s", st.Healthy, count, dep.ID, dep.Status)
		return st, nil
	}
	if dep != nil && dep.Status == "failed" {
		st.Status = dora.DeployFailed
		st.Message = joinReasons("nomad deployment failed: "+dep.StatusDescription, reasons)
		return st, nil
	}
	placement, err := r.placementFailure(ctx, ref, job)
	if err != nil {
		return st, fmt.Errorf("nomad status %s: %w", id, err)
	}
	if placement != "" && len(live) == 0 {
		st.Status, st.Message = dora.DeployFailed, placement
		return st, nil
	}
	st.Status = dora.DeployPending
	msg := fmt.Sprintf("%d/%d instances healthy", st.Healthy, count)
	if placement != "" {
		msg += "; " + placement
	}
	st.Message = joinReasons(msg, reasons)
	return st, nil
}

// joinReasons appends the first few instance reasons to msg.
func joinReasons(msg string, reasons []string) string {
	const maxReasons = 3
	if len(reasons) > maxReasons {
		reasons = append(reasons[:maxReasons:maxReasons], fmt.Sprintf("and %d more", len(reasons)-maxReasons))
	}
	if len(reasons) == 0 {
		return msg
	}
	return msg + "; " + strings.Join(reasons, "; ")
}

// allocs lists the job's allocations with their resources (for addresses).
func (r *Runtime) allocs(ctx context.Context, ref jobRef) ([]*api.AllocationListStub, error) {
	q := (&api.QueryOptions{
		Region: ref.NomadRegion,
		Filter: fmt.Sprintf("JobID == %q", ref.ID),
		Params: map[string]string{"resources": "true"},
	}).WithContext(ctx)
	allocs, _, err := r.client.Allocations().List(q)
	if err != nil {
		return nil, fmt.Errorf("list allocations of %s: %w", ref.ID, err)
	}
	return allocs, nil
}

// latestPerName keeps, per alloc name (instance), the newest allocation;
// with wanted, only allocations Nomad wants running.
func latestPerName(allocs []*api.AllocationListStub, wanted bool) []*api.AllocationListStub {
	sorted := slices.Clone(allocs)
	slices.SortStableFunc(sorted, cmpAllocs)
	var out []*api.AllocationListStub
	last := -2
	for _, a := range sorted {
		if wanted && a.DesiredStatus != api.AllocDesiredStatusRun {
			continue
		}
		if n := nameIndex(a.Name); n != last {
			out = append(out, a)
			last = n
		}
	}
	return out
}

// consulPassing returns the alloc ids whose Consul checks all pass, or nil
// without Config.Consul.
func (r *Runtime) consulPassing(ctx context.Context, job *api.Job) (map[string]bool, error) {
	if r.cfg.Consul == nil {
		return nil, nil
	}
	q := (&consulapi.QueryOptions{}).WithContext(ctx)
	entries, _, err := r.cfg.Consul.Health().ServiceMultipleTags("ufop-"+job.Meta["ufop"],
		[]string{"version=" + job.Meta["version"], "region=" + job.Meta["region"]}, true, q)
	if err != nil {
		return nil, fmt.Errorf("consul health of ufop-%s: %w", job.Meta["ufop"], err)
	}
	passing := map[string]bool{}
	for _, e := range entries {
		if id := e.Service.Meta["alloc_id"]; id != "" {
			passing[id] = true
		}
	}
	return passing, nil
}

// instance describes one wanted allocation.
func instance(a *api.AllocationListStub, passing map[string]bool) runtime.InstanceStatus {
	in := runtime.InstanceStatus{Index: nameIndex(a.Name) + 1, ID: a.ID, Addr: allocAddr(a)}
	var ts *api.TaskState
	for _, t := range a.TaskStates {
		ts = t // one task per group
	}
	if ts != nil {
		in.Restarts = int(ts.Restarts)
		if !ts.StartedAt.IsZero() {
			in.Started = ts.StartedAt.UTC()
		}
	}
	nomadHealthy := a.DeploymentStatus != nil && a.DeploymentStatus.Healthy != nil && *a.DeploymentStatus.Healthy
	nomadUnhealthy := a.DeploymentStatus != nil && a.DeploymentStatus.Healthy != nil && !*a.DeploymentStatus.Healthy
	switch a.ClientStatus {
	case api.AllocClientStatusRunning:
		switch {
		case passing != nil:
			in.Healthy = passing[a.ID]
		default:
			in.Healthy = !nomadUnhealthy && (nomadHealthy || a.DeploymentStatus == nil)
		}
		switch {
		case in.Healthy:
			in.State = runtime.StateRunning
		case nomadUnhealthy || (passing != nil && nomadHealthy):
			in.State = runtime.StateUnhealthy
			in.Message = "health check failing"
		default:
			in.State = runtime.StateStarting
		}
	case api.AllocClientStatusPending:
		in.State = runtime.StateStarting
		if ts != nil && ts.Restarts > 0 {
			in.State = runtime.StateCrashed
		}
	case api.AllocClientStatusFailed, api.AllocClientStatusLost:
		in.State = runtime.StateFailed
	default: // complete, unknown
		in.State = runtime.StateCrashed
	}
	if !in.Healthy && in.Message == "" || in.State == runtime.StateCrashed || in.State == runtime.StateFailed {
		if reason := failureReason(ts); reason != "" {
			in.Message = reason
		} else if a.ClientDescription != "" && in.State != runtime.StateStarting {
			in.Message = a.ClientDescription
		}
	}
	return in
}

// failureEvents are the task events that explain a failure.
var failureEvents = []string{
	api.TaskTerminated, api.TaskDriverFailure, api.TaskArtifactDownloadFailed, api.TaskNotRestarting,
	api.TaskSetupFailure, api.TaskFailedValidation, api.TaskKilled,
}

// failureReason returns the latest failure event of a task, as the Nomad
// UI shows it ("Driver Failure: ...").
func failureReason(ts *api.TaskState) string {
	if ts == nil {
		return ""
	}
	for i := len(ts.Events) - 1; i >= 0; i-- {
		e := ts.Events[i]
		if e == nil || (!e.FailsTask && !slices.Contains(failureEvents, e.Type)) {
			continue
		}
		msg := e.DisplayMessage
		if msg == "" {
			msg = cmpOr(e.DriverError, e.DownloadError, e.SetupError, e.ValidationError, e.Message)
		}
		return strings.TrimSpace(e.Type + ": " + msg)
	}
	return ""
}

func cmpOr(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

// placementFailure explains why Nomad cannot place some instances (a
// blocked evaluation), or returns "".
func (r *Runtime) placementFailure(ctx context.Context, ref jobRef, job *api.Job) (string, error) {
	qq := (&api.QueryOptions{Region: ref.NomadRegion}).WithContext(ctx)
	evals, _, err := r.client.Jobs().Evaluations(ref.ID, qq)
	if err != nil {
		return "", fmt.Errorf("evaluations of %s: %w", ref.ID, err)
	}
	blocked := false
	var latest *api.Evaluation
	for _, e := range evals {
		if e.Status == "blocked" {
			blocked = true
		}
		if len(e.FailedTGAllocs) > 0 && (latest == nil || e.CreateIndex > latest.CreateIndex) {
			latest = e
		}
	}
	if !blocked || latest == nil {
		return "", nil
	}
	m := latest.FailedTGAllocs[group]
	if m == nil {
		for _, v := range latest.FailedTGAllocs {
			m = v
		}
	}
	driver := "?"
	if tg := job.LookupTaskGroup(group); tg != nil && len(tg.Tasks) > 0 {
		driver = tg.Tasks[0].Driver
	}
	return fmt.Sprintf("no Nomad node can run it (task driver %s): %s", driver, describeMetric(m)), nil
}

// describeMetric renders an allocation metric as `nomad job status` does.
func describeMetric(m *api.AllocationMetric) string {
	if m == nil {
		return "placement failed"
	}
	parts := []string{fmt.Sprintf("%d nodes evaluated", m.NodesEvaluated)}
	if m.CoalescedFailures > 0 {
		parts = append(parts, fmt.Sprintf("%d more placements failed", m.CoalescedFailures))
	}
	add := func(what string, mm map[string]int) {
		for _, k := range slices.Sorted(maps.Keys(mm)) {
			parts = append(parts, fmt.Sprintf("%s %q filtered %d nodes", what, k, mm[k]))
		}
	}
	add("class", m.ClassFiltered)
	add("constraint", m.ConstraintFiltered)
	for _, k := range slices.Sorted(maps.Keys(m.DimensionExhausted)) {
		parts = append(parts, fmt.Sprintf("resources exhausted: %s on %d nodes", k, m.DimensionExhausted[k]))
	}
	if m.NodesEvaluated == 0 && len(m.NodesAvailable) == 0 {
		parts = append(parts, "no nodes in the datacenters")
	}
	return strings.Join(parts, "; ")
}

// Logs reads the tail of an instance's stdout or stderr through Nomad's
// log API. Nomad keeps no timestamps: every line is prefixed with the time
// it was read (RFC 3339, UTC).
func (r *Runtime) Logs(ctx context.Context, id string, q runtime.LogQuery) (io.ReadCloser, error) {
	stream := q.Stream
	if stream == "" {
		stream = "stdout"
	}
	if stream != "stdout" && stream != "stderr" {
		return nil, fmt.Errorf("nomad logs %s: stream %q must be stdout or stderr", id, q.Stream)
	}
	tail := q.Tail
	if tail <= 0 {
		tail = 100
	}
	tail = min(tail, MaxLogTail)
	ref, job, err := r.find(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("nomad logs: %w", err)
	}
	allocs, err := r.allocs(ctx, ref)
	if err != nil {
		return nil, fmt.Errorf("nomad logs %s: %w", id, err)
	}
	var stub *api.AllocationListStub
	for _, a := range latestPerName(allocs, !jobStopped(job)) {
		if nameIndex(a.Name)+1 == q.Index {
			stub = a
		}
	}
	if stub == nil {
		return nil, fmt.Errorf("nomad logs %s: instance %d: %w", id, q.Index, runtime.ErrNotFound)
	}
	qq := (&api.QueryOptions{Region: ref.NomadRegion}).WithContext(ctx)
	alloc, _, err := r.client.Allocations().Info(stub.ID, qq)
	if err != nil {
		return nil, fmt.Errorf("nomad logs %s: allocation %s: %w", id, stub.ID, err)
	}
	task := job.Meta["ufop"]
	data, err := readLogTail(ctx, r.client, alloc, task, stream, min(int64(tail)*logBytesPerLine, maxLogBytes), qq)
	if err != nil {
		return nil, fmt.Errorf("nomad logs %s: instance %d (%s): %w", id, q.Index, alloc.ID, err)
	}
	partial := int64(len(data)) >= min(int64(tail)*logBytesPerLine, maxLogBytes)
	head := stampLines(data, tail, partial, time.Now())
	if !q.Follow {
		return io.NopCloser(bytes.NewReader(head)), nil
	}
	return followLogs(ctx, r.client, alloc, task, stream, head, qq), nil
}

// followLogs streams head, then the task's output from its current end as
// Nomad sends it, each complete line stamped with the time it arrived. Lines
// written between the tail read and the start of the follow may be missed.
func followLogs(ctx context.Context, c *api.Client, alloc *api.Allocation, task, stream string, head []byte, q *api.QueryOptions) io.ReadCloser {
	ctx, cancel := context.WithCancel(ctx)
	pr, pw := io.Pipe()
	go func() {
		defer cancel()
		if _, err := pw.Write(head); err != nil {
			return
		}
		frames, errc := c.AllocFS().Logs(alloc, true, task, stream, api.OriginEnd, 0, ctx.Done(), q.WithContext(ctx))
		if frames == nil {
			pw.CloseWithError(<-errc)
			return
		}
		ended := false // Nomad's reader has sent its error
		defer func() {
			if !ended {
				drainFrames(frames, errc)
			}
		}()
		var partial []byte
		for {
			select {
			case f, ok := <-frames:
				if !ok {
					// Nomad ended the follow (the task is gone): what
					// came after the last newline is the last line.
					if len(partial) > 0 {
						pw.Write(stampLines(partial, maxLogBytes, false, time.Now()))
					}
					pw.Close()
					return
				}
				partial = append(partial, f.Data...)
				i := bytes.LastIndexByte(partial, '\n')
				if i < 0 {
					if len(partial) < maxLogBytes {
						continue
					}
					i = len(partial) - 1
				}
				out := stampLines(partial[:i+1], maxLogBytes, false, time.Now())
				partial = append(partial[:0], partial[i+1:]...)
				if _, err := pw.Write(out); err != nil {
					return
				}
			case err := <-errc:
				ended = true
				pw.CloseWithError(err)
				return
			case <-ctx.Done():
				pw.Close()
				return
			}
		}
	}()
	return &cancelReader{PipeReader: pr, cancel: cancel}
}

// cancelReader stops the follow when the reader is closed.
type cancelReader struct {
	*io.PipeReader
	cancel func()
}

// Close stops the follow and closes the pipe.
func (c *cancelReader) Close() error {
	c.cancel()
	return c.PipeReader.Close()
}

// readLogTail reads the last n bytes of a task's log without following it.
func readLogTail(ctx context.Context, c *api.Client, alloc *api.Allocation, task, stream string, n int64, q *api.QueryOptions) ([]byte, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	frames, errc := c.AllocFS().Logs(alloc, false, task, stream, api.OriginEnd, n, ctx.Done(), q.WithContext(ctx))
	if frames == nil {
		return nil, <-errc
	}
	ended := false // Nomad's reader has sent its error
	defer func() {
		if !ended {
			drainFrames(frames, errc)
		}
	}()
	var buf bytes.Buffer
	for {
		select {
		case f, ok := <-frames:
			if !ok {
				select {
				case err := <-errc:
					ended = true
					return nil, err
				default:
				}
				return buf.Bytes(), nil
			}
			if buf.Len()+len(f.Data) > maxLogBytes {
				return buf.Bytes(), nil
			}
			buf.Write(f.Data)
		case err := <-errc:
			ended = true
			return nil, err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// drainFrames lets Nomad's log reader goroutine finish after its reader
// stopped early (it may be blocked sending a frame). That goroutine ends
// either closing frames or, when the request was cancelled while it
// waited for data, sending an error on errc and leaving frames open: the
// drain stops at whichever comes, so it does not wait for ever. Call it
// only when errc has not been received from.
func drainFrames(frames <-chan *api.StreamFrame, errc <-chan error) {
	go func() {
		for {
			select {
			case _, ok := <-frames:
				if !ok {
					return
				}
			case <-errc:
				return
			}
		}
	}()
}

// stampLines keeps the last tail lines of data and prefixes each with now
// in RFC 3339. With partial (the read may have started in the middle of a
// line) the first line is dropped when others follow.
func stampLines(data []byte, tail int, partial bool, now time.Time) []byte {
	data = bytes.TrimSuffix(data, []byte("\n"))
	if len(data) == 0 {
		return nil
	}
	lines := bytes.Split(data, []byte("\n"))
	if partial && len(lines) > 1 {
		lines = lines[1:]
	}
	if len(lines) > tail {
		lines = lines[len(lines)-tail:]
	}
	stamp := now.UTC().Format(time.RFC3339) + " "
	var out bytes.Buffer
	for _, l := range lines {
		out.WriteString(stamp)
		out.Write(bytes.TrimSuffix(l, []byte("\r")))
		out.WriteByte('\n')
	}
	return out.Bytes()
}
