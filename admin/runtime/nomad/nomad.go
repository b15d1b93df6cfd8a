// Package nomad is the production runtime.Runtime: each deployment is one
// Nomad job, rendered from nomad-jobs/ufop.nomad.hcl.tmpl.
//
// # Jobs
//
// A deployment of ufop U, version V in platform region R is the service job
// "ufop-U-V" (default region) or "ufop-U-V-R" (any other region; see
// nomadjobs.JobID), in the Nomad region and datacenters that Config.Regions
// gives for R. Its meta carries platform=dora, owner, ufop, version,
// region, deployment (the Dora deployment id, by which this runtime finds
// the job again after a restart) and stopped. It has one group "ufop" whose
// count is the deployment's desired count; resources come from the flavor.
// Program packages run under raw_exec (or exec) from an artifact block
// fetching the build over the admin's signed, expiring URL; OCI images run
// under docker with the container port 9100. A package reads its
// allocated port in PORT and PORT_HTTP, or, with Config.Network "bridge",
// runs in its own network namespace and listens on 9100 like an image.
// The group registers the Consul service "ufop-U" tagged version=V,
// region=R, ufop=U (meta alike) with the release's HTTP health check, or a
// TCP check when the release has none; the check interval is the release's health_check.timeout (default 2s).
// The update block makes Nomad deployments wait for passing checks.
//
// # Status
//
// Instances are the job's allocations that Nomad wants running, numbered by
// their Nomad name index ("ufop-grepd-v1.ufop[0]" is instance 1), so a
// replacement keeps its predecessor's number and the numbers match the
// Nomad UI. An instance is healthy when its allocation runs and, with
// Config.Consul set, all its Consul checks pass (otherwise when Nomad's
// deployment health for it is not false). The deployment is RUNNING when
// every wanted instance is healthy and no Nomad deployment (rollout) of
// the job is in progress; FAILED when Nomad's latest deployment
// failed or nothing can be placed (Nomad's reason in the message, e.g.
// "missing drivers" for an OCI image on a node without Docker); STOPPED
// when the job or all its instances are stopped; PENDING otherwise, with
// the latest task failure as the message.
//
// # Differences from the local runtime
//
//   - Stopping instances by index lowers the group count: Nomad chooses
//     which allocations stop, and it stops the highest-numbered ones. So
//     `stop 3` of three instances stops exactly instance 3, but `stop 1`
//     of three stops instance 3 and instance 1 keeps running; the state
//     shows the highest numbers as STOPPED. The count of stopped instances
//     is kept in the job's meta; starting instances raises the count again.
//     Stopping all instances stops the job (it stays, "dead", in Nomad).
//     Allocations().Stop would not do: Nomad replaces a stopped allocation.
//   - Nomad's logs carry no timestamps: Logs prefixes each line with the
//     time it was read, not the time it was written.
//   - Nomad refuses to scale a job while one of its deployments is in
//     progress; Scale then returns runtime.ErrBusy.
package nomad

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/runtime"
	nomadjobs "github.com/doraproject/dora/nomad-jobs"
	consulapi "github.com/hashicorp/consul/api"
	"github.com/hashicorp/nomad/api"
)

var _ runtime.Runtime = (*Runtime)(nil)

// RegionConfig places one platform region in Nomad.
type RegionConfig struct {
	NomadRegion string   // default "global"
	Datacenters []string // default ["*"]: every datacenter of the region
}

// Config configures a Runtime.
type Config struct {
	// Address of the Nomad HTTP API (default: $NOMAD_ADDR, else
	// http://127.0.0.1:4646); Token is an ACL token, if ACLs are on.
	Address, Token string
	// HTTPClient, when set, is used for every Nomad call.
	HTTPClient *http.Client
	// Regions maps each platform region to its Nomad region and
	// datacenters. A region missing from a non-empty map is refused; an
	// empty map runs every platform region in Nomad's "global" region.
	Regions map[string]RegionConfig
	// DefaultRegion is the platform region whose jobs carry no region
	// suffix (default dora.DefaultRegion).
	DefaultRegion string
	// Driver runs program packages: "raw_exec" (default) or "exec".
	Driver string
	// Network is how program packages are networked: "host" (default:
	// the client's network, the program listens on the port in PORT) or
	// "bridge" (a network namespace per instance through Nomad's CNI
	// bridge: the program listens on 9100, so fixed-port programs run
	// several instances per client; the clients need the CNI plugins).
	// OCI images always get their own namespace from the docker driver.
	Network string
	// RegistryUser and RegistryPassword, when set, are the platform
	// registry's read-only pull credentials, written into every docker
	// task's auth block so that Nomad clients can pull OCI images from
	// the admin's registry (which refuses anonymous pulls).
	RegistryUser, RegistryPassword string
	// Consul, when set, makes instance health follow Consul's checks (what
	// the router sees) rather than Nomad's deployment health alone.
	Consul *consulapi.Client
	// Timings of the ufop job (zero: nomadjobs defaults).
	MinHealthyTime, HealthyDeadline, ProgressDeadline, RestartDelay time.Duration
	Logger                                                          *slog.Logger
}

// Networking modes of program packages (Config.Network).
const (
	NetworkHost   = "host"
	NetworkBridge = "bridge"
)

// Limits.
const (
	// MaxLogTail bounds LogQuery.Tail.
	MaxLogTail = 10000
	// maxLogBytes bounds what Logs reads from Nomad.
	maxLogBytes = 4 << 20
	// logBytesPerLine estimates the bytes to read per wanted line.
	logBytesPerLine = 512
)

// group is the task group of every ufop job.
const group = "ufop"

// jobRef locates a deployment's job.
type jobRef struct {
	ID, NomadRegion string
}

// Runtime runs deployments as Nomad jobs. It keeps no state that Nomad does
// not have: a cache maps deployment ids to jobs, rebuilt from job meta.
type Runtime struct {
	cfg    Config
	client *api.Client
	log    *slog.Logger

	mu   sync.Mutex
	jobs map[string]jobRef // deployment id → job
}

// New returns a Runtime talking to the Nomad API at cfg.Address. It does
// not contact Nomad.
func New(cfg Config) (*Runtime, error) {
	if cfg.Driver == "" {
		cfg.Driver = nomadjobs.DriverRawExec
	}
	if cfg.Driver != nomadjobs.DriverRawExec && cfg.Driver != nomadjobs.DriverExec {
		return nil, fmt.Errorf("nomad runtime: driver %q must be raw_exec or exec", cfg.Driver)
	}
	switch cfg.Network {
	case "":
		cfg.Network = NetworkHost
	case NetworkHost, NetworkBridge:
	default:
		return nil, fmt.Errorf("nomad runtime: network %q must be %s or %s", cfg.Network, NetworkHost, NetworkBridge)
	}
	if cfg.DefaultRegion == "" {
		cfg.DefaultRegion = dora.DefaultRegion
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	for r, rc := range cfg.Regions {
		if !nomadjobs.ValidName(r) {
			return nil, fmt.Errorf("nomad runtime: region name %q is not valid", r)
		}
		if rc.NomadRegion != "" && !nomadjobs.ValidName(rc.NomadRegion) {
			return nil, fmt.Errorf("nomad runtime: region %s: Nomad region %q is not valid", r, rc.NomadRegion)
		}
	}
	acfg := api.DefaultConfig()
	if cfg.Address != "" {
		acfg.Address = cfg.Address
	}
	if cfg.Token != "" {
		acfg.SecretID = cfg.Token
	}
	if cfg.HTTPClient != nil {
		acfg.HttpClient = cfg.HTTPClient
	}
	client, err := api.NewClient(acfg)
	if err != nil {
		return nil, fmt.Errorf("nomad runtime: client for %s: %w", acfg.Address, err)
	}
	return &Runtime{
		cfg:    cfg,
		client: client,
		log:    cfg.Logger.With("component", "runtime", "backend", "nomad"),
		jobs:   map[string]jobRef{},
	}, nil
}

// Client returns the Nomad API client (for tools and tests).
func (r *Runtime) Client() *api.Client { return r.client }

// region returns the Nomad placement of a platform region.
func (r *Runtime) region(platform string) (RegionConfig, error) {
	rc, ok := r.cfg.Regions[platform]
	if !ok && len(r.cfg.Regions) > 0 {
		return RegionConfig{}, fmt.Errorf("region %q has no Nomad region configured: %w", platform, runtime.ErrUnsupported)
	}
	if rc.NomadRegion == "" {
		rc.NomadRegion = "global"
	}
	return rc, nil
}

// nomadRegions lists the distinct Nomad regions of the configuration.
func (r *Runtime) nomadRegions() []string {
	set := map[string]bool{}
	for p := range r.cfg.Regions {
		rc, _ := r.region(p)
		set[rc.NomadRegion] = true
	}
	if len(set) == 0 {
		set["global"] = true
	}
	return slices.Sorted(maps.Keys(set))
}

// JobID returns the Nomad job id of a deployment of ufop, version, region.
func (r *Runtime) JobID(ufop, version, region string) string {
	return nomadjobs.JobID(ufop, version, region, r.cfg.DefaultRegion)
}

// isNotFound reports whether err is Nomad's 404.
func isNotFound(err error) bool {
	var ure api.UnexpectedResponseError
	if errors.As(err, &ure) {
		return ure.StatusCode() == http.StatusNotFound
	}
	var pure *api.UnexpectedResponseError
	if errors.As(err, &pure) {
		return pure.StatusCode() == http.StatusNotFound
	}
	return false
}

// Apply renders the deployment's job and registers it. Registering the
// same job again changes nothing in Nomad (no new job version). Instances
// stopped by index stay stopped while the desired count is unchanged.
func (r *Runtime) Apply(ctx context.Context, spec runtime.Spec) error {
	d := spec.Deployment
	if d.ID == "" {
		return errors.New("nomad apply: deployment without id")
	}
	rc, err := r.region(d.Region)
	if err != nil {
		return fmt.Errorf("nomad apply %s: %w", d.ID, err)
	}
	j := nomadjobs.UfopJob{
		JobID:       r.JobID(d.Ufop, d.Version, d.Region),
		NomadRegion: rc.NomadRegion, Datacenters: rc.Datacenters,
		Owner: spec.Owner, Ufop: d.Ufop, Version: d.Version, Region: d.Region, DeploymentID: d.ID,
		Count: d.Desired, CPU: spec.Flavor.CPU, MemoryMB: spec.Flavor.MemoryMB,
		HealthPath:     spec.Release.HealthCheck.Path,
		CheckInterval:  time.Duration(spec.Release.HealthCheck.Timeout) * time.Second,
		MinHealthyTime: r.cfg.MinHealthyTime, HealthyDeadline: r.cfg.HealthyDeadline,
		ProgressDeadline: r.cfg.ProgressDeadline, RestartDelay: r.cfg.RestartDelay,
	}
	for _, e := range spec.Release.Env {
		j.Env = append(j.Env, nomadjobs.EnvVar{Key: e.Key, Value: e.Value})
	}
	switch {
	case spec.Package != nil:
		if spec.Package.ArtifactURL == "" {
			return fmt.Errorf("nomad apply %s: the package has no artifact URL (admin without root keys or public URL): %w", d.ID, runtime.ErrUnsupported)
		}
		j.Driver, j.ArtifactURL, j.Run = r.cfg.Driver, spec.Package.ArtifactURL, spec.Package.Run
		j.Bridge = r.cfg.Network == NetworkBridge
	case spec.OCIImage != "":
		j.Driver, j.Image = nomadjobs.DriverDocker, spec.OCIImage
		j.RegistryUser, j.RegistryPassword = r.cfg.RegistryUser, r.cfg.RegistryPassword
	default:
		return fmt.Errorf("nomad apply %s: neither a package nor an OCI image: %w", d.ID, runtime.ErrUnsupported)
	}
	wq := (&api.WriteOptions{Region: rc.NomadRegion}).WithContext(ctx)
	qq := (&api.QueryOptions{Region: rc.NomadRegion}).WithContext(ctx)
	// Keep the instances stopped by index while the desired count holds.
	if old, _, err := r.client.Jobs().Info(j.JobID, qq); err == nil {
		if old.Meta["deployment"] == d.ID && !jobStopped(old) {
			count, stopped := counts(old)
			if count+stopped == d.Desired {
				j.Count, j.Stopped = count, stopped
			}
		}
	} else if !isNotFound(err) {
		return fmt.Errorf("nomad apply %s: read job %s: %w", d.ID, j.JobID, err)
	}
	hcl, err := nomadjobs.RenderUfop(j)
	if err != nil {
		return fmt.Errorf("nomad apply %s: %w", d.ID, err)
	}
	if err := r.register(ctx, j.JobID, hcl, wq); err != nil {
		return fmt.Errorf("nomad apply %s: %w", d.ID, err)
	}
	r.remember(d.ID, jobRef{ID: j.JobID, NomadRegion: rc.NomadRegion})
	r.log.Info("nomad: job registered", "deployment", d.ID, "job", j.JobID, "count", j.Count, "driver", j.Driver)
	return nil
}

// register has the agent parse the HCL, then validates and registers it.
func (r *Runtime) register(ctx context.Context, jobID, hcl string, wq *api.WriteOptions) error {
	// Jobs().ParseHCL takes no options, so no context: a hung agent
	// would hold Apply for ever. The same request, with ctx.
	var job api.Job
	req := &api.JobsParseRequest{JobHCL: hcl, Canonicalize: true}
	if _, err := r.client.Raw().Write("/v1/jobs/parse", req, &job, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("parse job %s: %w", jobID, err)
	}
	vr, _, err := r.client.Jobs().Validate(&job, wq)
	if err != nil {
		return fmt.Errorf("validate job %s: %w", jobID, err)
	}
	if vr.Error != "" {
		return fmt.Errorf("job %s is invalid: %s", jobID, vr.Error)
	}
	if _, _, err := r.client.Jobs().Register(&job, wq); err != nil {
		return fmt.Errorf("register job %s: %w", jobID, err)
	}
	return nil
}

func (r *Runtime) remember(id string, ref jobRef) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.jobs[id] = ref
}

func (r *Runtime) forget(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.jobs, id)
}

// find returns the job of a deployment: from the cache, else by scanning
// the ufop jobs' meta in every configured Nomad region.
func (r *Runtime) find(ctx context.Context, id string) (jobRef, *api.Job, error) {
	r.mu.Lock()
	ref, ok := r.jobs[id]
	r.mu.Unlock()
	if ok {
		job, _, err := r.client.Jobs().Info(ref.ID, (&api.QueryOptions{Region: ref.NomadRegion}).WithContext(ctx))
		switch {
		case err == nil && job.Meta["deployment"] == id:
			return ref, job, nil
		case err == nil || isNotFound(err):
			r.forget(id) // purged or taken over by another deployment
		default:
			return ref, nil, fmt.Errorf("deployment %s: read job %s: %w", id, ref.ID, err)
		}
	}
	for _, region := range r.nomadRegions() {
		q := (&api.QueryOptions{Region: region, Prefix: "ufop-"}).WithContext(ctx)
		stubs, _, err := r.client.Jobs().ListOptions(&api.JobListOptions{Fields: &api.JobListFields{Meta: true}}, q)
		if err != nil {
			return jobRef{}, nil, fmt.Errorf("deployment %s: list jobs in %s: %w", id, region, err)
		}
		for _, s := range stubs {
			if s.Meta["deployment"] != id || s.Meta["platform"] != "dora" {
				continue
			}
			ref := jobRef{ID: s.ID, NomadRegion: region}
			job, _, err := r.client.Jobs().Info(s.ID, (&api.QueryOptions{Region: region}).WithContext(ctx))
			if err != nil {
				if isNotFound(err) {
					continue
				}
				return ref, nil, fmt.Errorf("deployment %s: read job %s: %w", id, s.ID, err)
			}
			r.remember(id, ref)
			return ref, job, nil
		}
	}
	return jobRef{}, nil, fmt.Errorf("deployment %s: %w", id, runtime.ErrNotFound)
}

// jobStopped reports whether the whole job is stopped.
func jobStopped(job *api.Job) bool { return job.Stop != nil && *job.Stop }

// counts returns the group's count and the instances stopped by index.
func counts(job *api.Job) (count, stopped int) {
	if tg := job.LookupTaskGroup(group); tg != nil && tg.Count != nil {
		count = *tg.Count
	}
	stopped, _ = strconv.Atoi(job.Meta["stopped"])
	return count, max(stopped, 0)
}

// setCounts changes the group's count and the stopped meta of job and
// registers it (a new job version); with keepStopped a stopped job stays
// stopped, otherwise it runs again.
func (r *Runtime) setCounts(ctx context.Context, ref jobRef, job *api.Job, count, stopped int, keepStopped bool) error {
	tg := job.LookupTaskGroup(group)
	if tg == nil {
		return fmt.Errorf("job %s has no group %q", ref.ID, group)
	}
	tg.Count = &count
	if job.Meta == nil {
		job.Meta = map[string]string{}
	}
	job.Meta["stopped"] = strconv.Itoa(stopped)
	if !keepStopped {
		job.Stop = nil
	}
	wq := (&api.WriteOptions{Region: ref.NomadRegion}).WithContext(ctx)
	if _, _, err := r.client.Jobs().Register(job, wq); err != nil {
		return fmt.Errorf("register job %s: %w", ref.ID, err)
	}
	return nil
}

// Scale sets the instance count through Nomad's scale API, so the event
// and its reason show in the Nomad UI. Instances stopped by index are
// forgotten: count instances run afterwards. A stopped job stays stopped
// (with the new count for when it starts). During a Nomad deployment it
// returns runtime.ErrBusy.
func (r *Runtime) Scale(ctx context.Context, id string, count int, reason string) error {
	if count < 0 || count > nomadjobs.MaxCount {
		return fmt.Errorf("nomad scale %s: count %d out of 0..%d", id, count, nomadjobs.MaxCount)
	}
	ref, job, err := r.find(ctx, id)
	if err != nil {
		return fmt.Errorf("nomad scale: %w", err)
	}
	cur, stopped := counts(job)
	if jobStopped(job) || stopped > 0 {
		if err := r.setCounts(ctx, ref, job, count, 0, true); err != nil {
			return fmt.Errorf("nomad scale %s: %w", id, err)
		}
		return nil
	}
	if cur == count {
		return nil
	}
	if reason == "" {
		reason = "dora: scale"
	}
	wq := (&api.WriteOptions{Region: ref.NomadRegion}).WithContext(ctx)
	meta := map[string]any{"deployment": id, "from": cur, "to": count}
	if _, _, err := r.client.Jobs().Scale(ref.ID, group, &count, reason, false, meta, wq); err != nil {
		if strings.Contains(err.Error(), "active deployment") {
			return fmt.Errorf("nomad scale %s: %w: %v", id, runtime.ErrBusy, err)
		}
		return fmt.Errorf("nomad scale %s (job %s to %d): %w", id, ref.ID, count, err)
	}
	r.log.Info("nomad: scaled", "deployment", id, "job", ref.ID, "from", cur, "to", count, "reason", reason)
	return nil
}

// Applied returns the count the deployment's job is set to run, the
// instances stopped by index included (they lowered the group's count):
// what the last Scale or Apply asked for, whether the job runs or is
// stopped.
func (r *Runtime) Applied(ctx context.Context, id string) (int, error) {
	_, job, err := r.find(ctx, id)
	if err != nil {
		return 0, fmt.Errorf("nomad: %w", err)
	}
	cur, stopped := counts(job)
	return cur + stopped, nil
}

// StopInstances stops the whole job (no indexes) or lowers the group count
// by the number of running instances named (Nomad stops the
// highest-numbered ones; see the package comment).
func (r *Runtime) StopInstances(ctx context.Context, id string, indexes []int) error {
	ref, job, err := r.find(ctx, id)
	if err != nil {
		return fmt.Errorf("nomad stop: %w", err)
	}
	if jobStopped(job) {
		return nil
	}
	count, stopped := counts(job)
	if len(indexes) == 0 {
		wq := (&api.WriteOptions{Region: ref.NomadRegion}).WithContext(ctx)
		if _, _, err := r.client.Jobs().Deregister(ref.ID, false, wq); err != nil {
			return fmt.Errorf("nomad stop %s: stop job %s: %w", id, ref.ID, err)
		}
		return nil
	}
	k, err := countIn(indexes, 1, count, count+stopped, id)
	if err != nil {
		return fmt.Errorf("nomad stop: %w", err)
	}
	if k == 0 {
		return nil
	}
	if err := r.setCounts(ctx, ref, job, count-k, stopped+k, false); err != nil {
		return fmt.Errorf("nomad stop %s: %w", id, err)
	}
	return nil
}

// StartInstances starts a stopped job, or raises the group count by the
// number of stopped instances named (all when none are).
func (r *Runtime) StartInstances(ctx context.Context, id string, indexes []int) error {
	ref, job, err := r.find(ctx, id)
	if err != nil {
		return fmt.Errorf("nomad start: %w", err)
	}
	count, stopped := counts(job)
	k := stopped
	if len(indexes) > 0 {
		if k, err = countIn(indexes, count+1, count+stopped, count+stopped, id); err != nil {
			return fmt.Errorf("nomad start: %w", err)
		}
	}
	if k == 0 && !jobStopped(job) {
		return nil
	}
	if err := r.setCounts(ctx, ref, job, count+k, stopped-k, false); err != nil {
		return fmt.Errorf("nomad start %s: %w", id, err)
	}
	return nil
}

// countIn validates 1-based indexes against 1..total and counts the
// distinct ones within lo..hi.
func countIn(indexes []int, lo, hi, total int, id string) (int, error) {
	seen := map[int]bool{}
	for _, i := range indexes {
		if i < 1 || i > total {
			return 0, fmt.Errorf("deployment %s has no instance %d (1..%d): %w", id, i, total, runtime.ErrNotFound)
		}
		if i >= lo && i <= hi {
			seen[i] = true
		}
	}
	return len(seen), nil
}

// Remove stops the job and purges it from Nomad.
func (r *Runtime) Remove(ctx context.Context, id string) error {
	ref, _, err := r.find(ctx, id)
	if err != nil {
		return fmt.Errorf("nomad remove: %w", err)
	}
	wq := (&api.WriteOptions{Region: ref.NomadRegion}).WithContext(ctx)
	if _, _, err := r.client.Jobs().Deregister(ref.ID, true, wq); err != nil {
		if isNotFound(err) {
			r.forget(id)
			return fmt.Errorf("nomad remove %s: %w", id, runtime.ErrNotFound)
		}
		return fmt.Errorf("nomad remove %s: purge job %s: %w", id, ref.ID, err)
	}
	r.forget(id)
	r.log.Info("nomad: job purged", "deployment", id, "job", ref.ID)
	return nil
}

// allocAddr returns host:port of the alloc's "http" port.
func allocAddr(a *api.AllocationListStub) string {
	if a.AllocatedResources == nil {
		return ""
	}
	for _, p := range a.AllocatedResources.Shared.Ports {
		if p.Label == "http" {
			return net.JoinHostPort(p.HostIP, strconv.Itoa(p.Value))
		}
	}
	return ""
}

// nameIndex parses the index of an alloc name "job.group[3]"; -1 if none.
func nameIndex(name string) int {
	i := strings.LastIndexByte(name, '[')
	if i < 0 || !strings.HasSuffix(name, "]") {
		return -1
	}
	n, err := strconv.Atoi(name[i+1 : len(name)-1])
	if err != nil || n < 0 {
		return -1
	}
	return n
}

// cmpAllocs orders allocations by name index, then newest first.
func cmpAllocs(a, b *api.AllocationListStub) int {
	if c := cmp.Compare(nameIndex(a.Name), nameIndex(b.Name)); c != 0 {
		return c
	}
	return cmp.Compare(b.CreateIndex, a.CreateIndex)
}
