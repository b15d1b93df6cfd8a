// Package nomadimage holds the real-agent test of OCI images on Nomad: the
// production roles (cli/platform) with Nomad's docker driver talking to
// podman's Docker-compatible API. It is a package of its own so that its
// minutes run in parallel with cli/platform's other real-agent tests.
package nomadimage
