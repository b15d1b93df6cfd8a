// Package pool keeps, per (ufop, version, region), the set of healthy
// instances the router may send a pipeline step to, and picks one per step.
//
// Discovery backends feed it: pool/memory (the embedded local runtime) and
// pool/consul (Consul health, passing checks only).
package pool

import "context"

// Key names one pool: the instances of one version of a ufop in one region.
type Key struct {
	Ufop    string
	Version string
	Region  string
}

// Instance is one healthy, reachable instance of a ufop version.
type Instance struct {
	// ID is unique and stable for the life of the instance (local runtime:
	// "<deployment>-<index>"; Nomad: the allocation id).
	ID      string
	Ufop    string
	Version string
	Region  string
	// Addr is host:port of the instance's HTTP listener.
	Addr string
	// RouterHost, when set, is the address at which the instance reaches
	// the router's host: a container in its own network namespace on
	// podman's slirp4netns network sees the host's loopback as 10.0.2.2.
	// The router's input URLs for it then name RouterHost with the port
	// of the router's public address.
	RouterHost string
}

// Key returns the pool the instance belongs to.
func (i Instance) Key() Key { return Key{Ufop: i.Ufop, Version: i.Version, Region: i.Region} }

// Discovery reports the healthy instances of every ufop. Each value sent is
// the complete current set (not a delta); the channel closes when ctx ends.
type Discovery interface {
	Watch(ctx context.Context) <-chan []Instance
}
