package dora

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"
)

// Mode says which accounts' buckets may use a ufop (docs/api.md, Ufops).
type Mode int

// The three ufop access modes, numbered as the older qufopctl spells them.
const (
	ModePublic    Mode = 0 // any account may use it
	ModeProtected Mode = 1 // accounts that applied for it may use it
	ModePrivate   Mode = 2 // only the owner's buckets may use it
)

// String returns the mode as qdoractl spells it: public, protected, private.
func (m Mode) String() string {
	switch m {
	case ModePublic:
		return "public"
	case ModeProtected:
		return "protected"
	case ModePrivate:
		return "private"
	}
	return fmt.Sprintf("mode(%d)", int(m))
}

// ErrBadMode is returned by ParseMode for a spelling it does not know.
var ErrBadMode = errors.New("mode must be public, protected, private or 0, 1, 2")

// ParseMode reads a mode in either spelling: public|protected|private or 0|1|2.
func ParseMode(s string) (Mode, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "public", "0":
		return ModePublic, nil
	case "protected", "1":
		return ModeProtected, nil
	case "private", "2", "":
		return ModePrivate, nil
	}
	return 0, fmt.Errorf("%q: %w", s, ErrBadMode)
}

// Protocol is the instance protocol a release's program speaks (docs/instance-protocols.md).
type Protocol string

// The two instance protocols.
const (
	ProtocolDora Protocol = "dora" // POST /handler?cmd=&url=
	ProtocolUfop Protocol = "ufop" // POST /uop with a JSON body
)

// Account is a tenant: one AK/SK pair that owns buckets and ufops.
type Account struct {
	ID            string    `json:"id"` // stable numeric-looking uid, e.g. "1366779853"
	Name          string    `json:"name,omitempty"`
	AccessKey     string    `json:"ak"`
	SecretKey     string    `json:"sk,omitempty"`
	Root          bool      `json:"root,omitempty"`
	Disabled      bool      `json:"disabled,omitempty"`
	InstanceLimit int       `json:"instanceLimit"`     // max instances per ufop; 0 means DefaultInstanceLimit
	Applied       []string  `json:"applied,omitempty"` // protected ufops this account applied for
	Created       time.Time `json:"created"`
}

// DefaultInstanceLimit is the per-account ceiling of instances per ufop.
const DefaultInstanceLimit = 5

// Limit returns the account's effective instance limit per ufop.
func (a Account) Limit() int {
	if a.InstanceLimit > 0 {
		return a.InstanceLimit
	}
	return DefaultInstanceLimit
}

// HasApplied reports whether the account added the protected ufop to its list.
func (a Account) HasApplied(ufop string) bool {
	for _, u := range a.Applied {
		if u == ufop {
			return true
		}
	}
	return false
}

// Bucket is a namespace of objects owned by one account.
type Bucket struct {
	Name    string   `json:"name"`
	Owner   string   `json:"owner"` // Account.ID
	Private bool     `json:"private"`
	Domains []string `json:"domains,omitempty"` // extra host names bound to the bucket
	// Mirror is an http(s) URL prefix the router fetches missing objects
	// from (back-to-source); set by the owner, never taken from a request.
	Mirror  string    `json:"mirror,omitempty"`
	Created time.Time `json:"created"`
}

// Ufop is a registered user-defined file operation.
type Ufop struct {
	Name    string    `json:"name"`
	Owner   string    `json:"owner"` // Account.ID
	Desc    string    `json:"desc,omitempty"`
	Mode    Mode      `json:"mode"`
	Created time.Time `json:"created"`
	// ActiveVersion is the release version the router sends traffic to.
	ActiveVersion string `json:"activeVersion,omitempty"`
	// PreviousVersion keeps serving while ActiveVersion has no healthy
	// instance yet (blue/green switch); cleared once the switch completes.
	PreviousVersion string `json:"previousVersion,omitempty"`
}

// CanBeUsedBy reports whether buckets owned by account may run this ufop.
// The check is on the bucket owner, not on whoever sends the request.
func (u Ufop) CanBeUsedBy(account Account) bool {
	if account.ID == u.Owner {
		return true
	}
	switch u.Mode {
	case ModePublic:
		return true
	case ModeProtected:
		return account.HasApplied(u.Name)
	}
	return false
}

// HealthCheck is a release's health probe: GET Path every Interval seconds
// (dora.yaml calls the interval "timeout"). An empty Path means a TCP connect.
type HealthCheck struct {
	Path    string `json:"path,omitempty" yaml:"path,omitempty"`
	Timeout int    `json:"timeout,omitempty" yaml:"timeout,omitempty"`
}

// EnvVar is one variable of a release's environment.
type EnvVar struct {
	Key   string `json:"key" yaml:"key"`
	Value string `json:"value" yaml:"value"`
}

// StepTimeouts bound one pipeline step's call to an instance.
type StepTimeouts struct {
	Connect   time.Duration `json:"connect,omitempty"`
	FirstByte time.Duration `json:"firstByte,omitempty"`
	Idle      time.Duration `json:"idle,omitempty"`
}

// Default step timeouts (issue: router, item 5).
const (
	DefaultConnectTimeout   = 2 * time.Second
	DefaultFirstByteTimeout = 30 * time.Second
	DefaultIdleTimeout      = 30 * time.Second
)

// WithDefaults fills zero fields with the platform defaults.
func (t StepTimeouts) WithDefaults() StepTimeouts {
	if t.Connect <= 0 {
		t.Connect = DefaultConnectTimeout
	}
	if t.FirstByte <= 0 {
		t.FirstByte = DefaultFirstByteTimeout
	}
	if t.Idle <= 0 {
		t.Idle = DefaultIdleTimeout
	}
	return t
}

// AutoscalePolicy is the per-release or per-deployment scaling policy. Zero
// fields take the autoscaler's defaults.
type AutoscalePolicy struct {
	Target             float64       `json:"target,omitempty" yaml:"target,omitempty"` // in-flight requests per instance
	StableWindow       time.Duration `json:"stableWindow,omitempty" yaml:"stable_window,omitempty"`
	PanicWindow        time.Duration `json:"panicWindow,omitempty" yaml:"panic_window,omitempty"`
	PanicThreshold     float64       `json:"panicThreshold,omitempty" yaml:"panic_threshold,omitempty"`
	MaxScaleUpRate     float64       `json:"maxScaleUpRate,omitempty" yaml:"max_scale_up_rate,omitempty"`
	MaxScaleDownRate   float64       `json:"maxScaleDownRate,omitempty" yaml:"max_scale_down_rate,omitempty"`
	ScaleUpCooldown    time.Duration `json:"scaleUpCooldown,omitempty" yaml:"scale_up_cooldown,omitempty"`
	ScaleDownCooldown  time.Duration `json:"scaleDownCooldown,omitempty" yaml:"scale_down_cooldown,omitempty"`
	EvaluationInterval time.Duration `json:"evaluationInterval,omitempty" yaml:"evaluation_interval,omitempty"`
}

// Release is a deployable version of a ufop: an image (OCI image or built
// program package) plus how to run and probe it.
type Release struct {
	Ufop         string           `json:"ufop"`
	Version      string           `json:"version"` // verstr, e.g. "v1"
	Image        string           `json:"image"`   // "ufopdemo:v1" (OCI) or "grepd.v1" (built package)
	Flavor       string           `json:"flavor"`
	Desc         string           `json:"desc,omitempty"`
	HealthCheck  HealthCheck      `json:"healthCheck"`
	LogFilePaths []string         `json:"logFilePaths,omitempty"`
	Env          []EnvVar         `json:"env,omitempty"`
	Protocol     Protocol         `json:"protocol"` // default ProtocolDora
	Timeouts     StepTimeouts     `json:"timeouts,omitempty"`
	Autoscale    *AutoscalePolicy `json:"autoscale,omitempty"`
	// BodyLimit is the largest input of known size a Dora-protocol step
	// gets as its POST body instead of through a one-shot url=
	// (DefaultBodyLimit when 0, never when negative): small inputs then
	// cost the program no fetch back from the router.
	BodyLimit int64 `json:"bodyLimit,omitempty"`
	// Cache lets the router keep this release's results (nil: not cached).
	Cache   *CachePolicy `json:"cache,omitempty"`
	Created time.Time    `json:"created"`
}

// Limits of Release.BodyLimit: the default fits the socket buffers of a
// loopback or LAN connection, so the whole body is written before the
// response is read even by a program that answers without reading it.
const (
	DefaultBodyLimit = 64 << 10
	MaxBodyLimit     = 256 << 10
)

// EffectiveBodyLimit is the body limit a step of the release uses: -1 when
// inputs always go through url=.
func (r Release) EffectiveBodyLimit() int64 {
	switch {
	case r.BodyLimit < 0:
		return -1
	case r.BodyLimit == 0:
		return DefaultBodyLimit
	}
	return min(r.BodyLimit, MaxBodyLimit)
}

// CachePolicy is a release's opt-in to the router's result cache: a
// pipeline's output is kept for TTL (DefaultCacheTTL when 0), keyed by the
// object's etag, the pipeline text and each ufop's active version. Only a
// program whose output depends on nothing else should enable it.
type CachePolicy struct {
	Enabled bool          `json:"enabled"`
	TTL     time.Duration `json:"ttl,omitempty"`
}

// Limits of CachePolicy.TTL.
const (
	DefaultCacheTTL = time.Hour
	MaxCacheTTL     = 30 * 24 * time.Hour
)

// Build statuses.
const (
	BuildRunning = "RUNNING"
	BuildSuccess = "SUCCESS"
	BuildFailed  = "FAILED"
)

// Build is one build of a program package (ufop.yaml): version Number of the
// ufop, producing the image "<ufop>.v<Number>".
type Build struct {
	Ufop   string `json:"ufop"`
	Number int    `json:"number"`
	Status string `json:"status"`
	Image  string `json:"image"` // "<ufop>.v<Number>"
	Base   string `json:"base"`  // ufop.yaml image: "ubuntu" or "<other>.v<M>"
	Run    string `json:"run"`   // ufop.yaml run command
	// Protocol is ufop.yaml's protocol ("" when it names none): the
	// default of the release `ufopver` makes from the build.
	Protocol Protocol `json:"protocol,omitempty"`
	// BodyLimit and Cache are ufop.yaml's, the defaults of the release
	// `ufopver` makes from the build.
	BodyLimit int64        `json:"bodyLimit,omitempty"`
	Cache     *CachePolicy `json:"cache,omitempty"`
	Error     string       `json:"error,omitempty"`
	Created   time.Time    `json:"created"`
	Finished  time.Time    `json:"finished,omitempty"`
	// Owner is an opaque id of the admin process running a RUNNING build
	// and Heartbeat when it last said it still does: with several admins
	// on one store, the leader fails a build whose owner stopped beating
	// (the process died) rather than leaving it RUNNING for ever.
	Owner     string    `json:"owner,omitempty"`
	Heartbeat time.Time `json:"heartbeat,omitempty"`
	// ArtifactID, random, tells this build's copy in the shared objects
	// store apart from that of any other build numbered the same: a ufop
	// deleted and registered again numbers its builds from 1 again. The
	// copy is artifacts/<ufop>/<n>-<ArtifactID>.tar.gz; a record written
	// before the field existed has none, and its copy is
	// artifacts/<ufop>/<n>.tar.gz.
	ArtifactID string `json:"artifactId,omitempty"`
}

// BuildImageName is the image name a build produces: "<ufop>.v<n>".
func BuildImageName(ufop string, n int) string { return fmt.Sprintf("%s.v%d", ufop, n) }

// Deployment statuses.
const (
	DeployPending  = "PENDING"
	DeployRunning  = "RUNNING"
	DeployFailed   = "FAILED"
	DeployStopped  = "STOPPED"
	DeployReplaced = "REPLACED" // superseded by a blue/green switch
)

// Deployment is a release running in one region with a floor (Expect) and a
// ceiling (Max) of instances; Desired is what the runtime is asked to run.
type Deployment struct {
	ID        string           `json:"id"` // "deploy-<uuid>"
	Ufop      string           `json:"ufop"`
	Version   string           `json:"version"`
	Region    string           `json:"region"`
	Expect    int              `json:"expect"`
	Max       int              `json:"max"`
	Desired   int              `json:"desired"`
	Autoscale *AutoscalePolicy `json:"autoscale,omitempty"`
	Status    string           `json:"status"`
	Message   string           `json:"message,omitempty"`
	Created   time.Time        `json:"created"`
	Updated   time.Time        `json:"updated"`
}

// DefaultMaxInstances is a deployment's ceiling when --max is not given.
const DefaultMaxInstances = 5

// DefaultRegion is the region used when none is configured or given.
const DefaultRegion = "z0"

// Flavor is a named resource size for instances.
type Flavor struct {
	Name     string `json:"name"`
	CPU      int    `json:"cpu"`      // MHz, as Nomad counts it
	MemoryMB int    `json:"memoryMB"` // MiB
	Desc     string `json:"desc,omitempty"`
}

// DefaultFlavors are offered when the configuration names none.
func DefaultFlavors() []Flavor {
	return []Flavor{
		{Name: "C1M1", CPU: 1000, MemoryMB: 1024, Desc: "1 core, 1 GiB"},
		{Name: "C2M2", CPU: 2000, MemoryMB: 2048, Desc: "2 cores, 2 GiB"},
		{Name: "C4M4", CPU: 4000, MemoryMB: 4096, Desc: "4 cores, 4 GiB"},
		{Name: "default", CPU: 500, MemoryMB: 256, Desc: "small"},
	}
}

// builtinFops are the operations the router runs itself; their names are
// reserved and cannot be registered as ufops. Immutable: BuiltinFops
// hands out copies.
var builtinFops = [...]string{"qhash", "imageInfo", "exif", "imageView2", "saveas", "avinfo", "imageMogr2", "imageView", "imageAve", "watermark", "pfop", "prefop"}

// BuiltinFops returns the names of the operations the router runs itself
// (reserved: they cannot be registered as ufops), as a new slice the caller
// may modify.
func BuiltinFops() []string { return append([]string(nil), builtinFops[:]...) }

// IsBuiltin reports whether name is a built-in fop (case-insensitive, so that
// "imageinfo" cannot shadow "imageInfo").
func IsBuiltin(name string) bool {
	for _, b := range builtinFops {
		if strings.EqualFold(b, name) {
			return true
		}
	}
	return false
}

var ufopNameRE = regexp.MustCompile(`^[a-z0-9_-]{5,20}$`)

// Name errors, for callers that branch on them.
var (
	ErrBadUfopName  = errors.New("ufop name must be 5 to 20 characters of a-z 0-9 - _")
	ErrReservedName = errors.New("name is reserved for a built-in fop")
)

// ValidateUfopName applies the ufop name rules (docs/api.md, Ufops).
func ValidateUfopName(name string) error {
	if IsBuiltin(name) {
		return fmt.Errorf("%q: %w", name, ErrReservedName)
	}
	if !ufopNameRE.MatchString(name) {
		return fmt.Errorf("%q: %w", name, ErrBadUfopName)
	}
	return nil
}

var bucketNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$`)

// ErrBadBucketName is returned for a bucket name that is not a DNS label.
var ErrBadBucketName = errors.New("bucket name must be 3 to 63 characters of a-z 0-9 -, a DNS label")

// SystemBucket is the objects-store bucket where the platform keeps its own
// files (successful builds' results, so that every admin can serve them to
// the runtimes); no account may create a bucket of that name, and without
// a bucket record no API or router serves it.
const SystemBucket = "dora-system"

// ValidateBucketName requires a DNS label, since buckets answer at <bucket>.<suffix>.
func ValidateBucketName(name string) error {
	if !bucketNameRE.MatchString(name) {
		return fmt.Errorf("%q: %w", name, ErrBadBucketName)
	}
	return nil
}

// MaxKeyBytes bounds the length of an object key, in bytes.
const MaxKeyBytes = 1024

// ErrBadKey is wrapped by ValidateKey's errors. origin.ErrBadKey is the same
// value, so callers of either package branch on one sentinel.
var ErrBadKey = errors.New("invalid object key")

// ValidateKey is the platform's one object-key rule (docs/api.md), applied
// by the admin API, the router, every origin and the mirror: non-empty, at
// most MaxKeyBytes, valid UTF-8, no NUL nor other control character (C0,
// DEL), no backslash, no leading "/", no empty, "." or ".." segment (so no
// "//" and no trailing "/"). Errors wrap ErrBadKey.
func ValidateKey(key string) error {
	bad := func(why string) error { return fmt.Errorf("key %q: %s: %w", truncateKey(key), why, ErrBadKey) }
	switch {
	case key == "":
		return bad("empty")
	case len(key) > MaxKeyBytes:
		return bad(fmt.Sprintf("longer than %d bytes", MaxKeyBytes))
	case strings.IndexByte(key, 0) >= 0:
		return bad("holds a NUL byte")
	case !utf8.ValidString(key):
		return bad("not UTF-8")
	case key[0] == '/':
		return bad("leading /")
	case strings.IndexByte(key, '\\') >= 0:
		return bad("holds a backslash")
	}
	for _, c := range []byte(key) {
		if c < 0x20 || c == 0x7f {
			return bad("holds a control character")
		}
	}
	for seg := range strings.SplitSeq(key, "/") {
		switch seg {
		case "":
			return bad("empty path segment")
		case ".", "..":
			return bad(fmt.Sprintf("%q segment", seg))
		}
	}
	return nil
}

// UploadTempPrefix is the key namespace reserved in every bucket for the
// temporaries of writes in progress (an upload that names no key, a
// fetch to a bare bucket: stored there under a random name, then copied
// to their key and deleted). It is the one definition of the namespace
// (admin/rs.UploadTempPrefix is this one).
const UploadTempPrefix = ".dora-upload/"

// ErrReservedKey is wrapped by CheckUserKey's refusal of a key under
// UploadTempPrefix, so that every API words it the same.
var ErrReservedKey = errors.New("keys under " + UploadTempPrefix + " are reserved for uploads in progress")

// CheckUserKey refuses (ErrReservedKey) a key a user may not name as the
// object of an operation or the target of a write: one in the namespace
// of the upload temporaries (ReservedKey).
func CheckUserKey(key string) error {
	if ReservedKey(key) {
		return fmt.Errorf("invalid key %q: %w", truncateKey(key), ErrReservedKey)
	}
	return nil
}

// ReservedKey reports whether key is UploadTempPrefix's directory or
// lies under it: a key no user may read, write, list or delete, through
// any API.
func ReservedKey(key string) bool {
	return strings.HasPrefix(key, UploadTempPrefix) || key == UploadTempPrefix[:len(UploadTempPrefix)-1]
}

// truncateKey shortens a key for an error message.
func truncateKey(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// PfopResult says where persistent processing (pfop) saved the result of a
// fop on bucket:key: what `?p/1/<fop>` serves. The pfop worker writes it
// under store.ResultKey; the router reads it there (store.GetResult).
type PfopResult struct {
	Bucket      string    `json:"bucket"`
	Key         string    `json:"key"`
	Fop         string    `json:"fop"` // canonical pipeline, without saveas
	SavedBucket string    `json:"savedBucket"`
	SavedKey    string    `json:"savedKey"`
	Hash        string    `json:"hash"`
	Job         string    `json:"job"` // the job that wrote it
	Created     time.Time `json:"created"`
}
