// Package dora holds the domain model shared by every part of the platform:
// accounts, buckets, ufops, builds, releases and deployments, as they are kept
// in the metadata store and exchanged over the admin API.
//
// The data plane (router, pool) reads these types; the control plane (admin)
// writes them. Backends live in their own packages and depend on this one,
// never the other way round.
package dora
