package store

import (
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

// Key builders of the metadata layout: the only place a key is spelled out.
// Every reader and writer calls these instead of concatenating prefixes, so
// the layout can change in one file (TestKeysBuiltOnlyInStore enforces it).
// The "...Of" builders return the prefix that lists one parent's records,
// with its trailing slash.

// AccountKey is accounts/<id> → dora.Account.
func AccountKey(id string) string { return PrefixAccounts + id }

// AccessKeyKey is aks/<ak> → account id (raw bytes).
func AccessKeyKey(ak string) string { return PrefixAccessKeys + ak }

// BucketKey is buckets/<name> → dora.Bucket.
func BucketKey(name string) string { return PrefixBuckets + name }

// DomainKey is domains/<host> → bucket name (raw bytes).
func DomainKey(host string) string { return PrefixDomains + host }

// UfopKey is ufops/<name> → dora.Ufop.
func UfopKey(name string) string { return PrefixUfops + name }

// ReleaseKey is releases/<ufop>/<version> → dora.Release.
func ReleaseKey(ufop, version string) string { return ReleasesOf(ufop) + version }

// ReleasesOf lists a ufop's releases.
func ReleasesOf(ufop string) string { return PrefixReleases + ufop + "/" }

// BuildKey is builds/<ufop>/<%06d number> → dora.Build; keys sort by number.
func BuildKey(ufop string, n int) string { return fmt.Sprintf("%s%06d", BuildsOf(ufop), n) }

// BuildsOf lists a ufop's builds.
func BuildsOf(ufop string) string { return PrefixBuilds + ufop + "/" }

// ImageKey is images/<owner>/<name>:<tag> → the registry's image record.
func ImageKey(owner, name, tag string) string { return ImagesOf(owner) + name + ":" + tag }

// ImagesOf lists an owner's images.
func ImagesOf(owner string) string { return PrefixImages + owner + "/" }

// DeploymentKey is deployments/<ufop>/<id> → dora.Deployment.
func DeploymentKey(ufop, id string) string { return DeploymentsOf(ufop) + id }

// DeploymentsOf lists a ufop's deployments.
func DeploymentsOf(ufop string) string { return PrefixDeployments + ufop + "/" }

// ScaleEventKey is scaleevents/<deployment id>/<unix nanos, 20 digits> →
// autoscaler.Event; keys sort by time.
func ScaleEventKey(deploymentID string, at time.Time) string {
	return fmt.Sprintf("%s%020d", ScaleEventsOf(deploymentID), at.UnixNano())
}

// ScaleEventsOf lists a deployment's scaling events.
func ScaleEventsOf(deploymentID string) string { return PrefixScaleEvents + deploymentID + "/" }

// JobKey is pfop/jobs/<id> → the pfop job.
func JobKey(id string) string { return PrefixJobs + id }

// ResultKey is pfop/results/<bucket>/<hex SHA-1 of key NUL fop> →
// dora.PfopResult, for fop the canonical pipeline (router/fop.Canonical).
func ResultKey(bucket, key, fop string) string {
	h := sha1.Sum([]byte(key + "\x00" + fop))
	return PrefixResults + bucket + "/" + hex.EncodeToString(h[:])
}

// ObjectMetaKey is objmeta/<bucket>/<key> → what admin/rs keeps of an
// object beyond the object store's metadata (chtype, deleteAfterDays).
func ObjectMetaKey(bucket, key string) string { return PrefixObjectMeta + bucket + "/" + key }

// Name returns the last segment of key below prefix: the account id of
// accounts/<id>, the host of domains/<host>; "" when key is not under prefix.
func Name(prefix, key string) string {
	rest, ok := strings.CutPrefix(key, prefix)
	if !ok {
		return ""
	}
	return rest
}

// ParseReleaseKey splits releases/<ufop>/<version>; ok is false for a key of
// another shape.
func ParseReleaseKey(key string) (ufop, version string, ok bool) {
	rest, found := strings.CutPrefix(key, PrefixReleases)
	if !found {
		return "", "", false
	}
	ufop, version, ok = strings.Cut(rest, "/")
	return ufop, version, ok && ufop != "" && version != ""
}

// ConsoleSessionKey holds the random key (raw bytes) the admins sign web
// console sessions with when they are given none, so that every admin of a
// platform accepts the sessions of the others.
const ConsoleSessionKey = "console/session-key"

// ConsoleSessionGenKey is console/sessions/<account id> → the account's web
// console session generation (decimal; 0 when absent). Every session cookie
// carries the generation it was made in; signing out moves it on, which ends
// the account's sessions on every admin sharing the store.
func ConsoleSessionGenKey(accountID string) string { return "console/sessions/" + accountID }
