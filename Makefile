# Dora — the two commands a newcomer needs: `make run` and `make test`.
SHELL := /bin/bash
export GOTOOLCHAIN := local
GO ?= go
BIN := bin
DEPS_BIN := $(or $(DORA_DEPS_CACHE),$(HOME)/.cache/dora-deps)/bin
FUZZTIME ?= 30s
# VERSION is stamped into both binaries (`dorad version`, `qdoractl version`).
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/doraproject/dora/cli/buildinfo.version=$(VERSION)

.PHONY: all build run test deps vet unit large fuzz bench soak flaky clean

all: build

## build: compile bin/dorad and bin/qdoractl
build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/dorad ./cli/dorad
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/qdoractl ./cli/qdoractl

## run: start the whole platform on this machine (dorad dev, data in ./.dora);
## extra flags through RUN_ARGS, e.g. make run RUN_ARGS="--run-as self"
run: build
	$(BIN)/dorad dev $(RUN_ARGS)

## deps: install Redis, nginx, and build Nomad and Consul into the cache (idempotent)
deps:
	./scripts/install-deps.sh

## test: every test, with real Nomad, Consul and Redis, then the fuzzers for a bounded time
test: deps vet unit large fuzz

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet ./...

unit:
	PATH="$(DEPS_BIN):$$PATH" $(GO) test -race -count=1 -timeout 60m ./...

# Tests too slow under the race detector, or whose figures it changes
# (they skip themselves there), run here without it: a 1 GiB object
# through three streaming steps; the allocations per request of the hot
# paths.
large:
	$(GO) test -count=1 -run '^(TestGiBThroughThreeSteps(FromS3)?|TestHotPathAllocs)$$' -v ./router/

## browser: only the web console test in Debian's chromium (chromedp;
## screenshots in $DORA_ARTIFACTS/console); make test runs it too
browser:
	PATH="$(DEPS_BIN):$$PATH" $(GO) test -count=1 -timeout 30m -v ./cli/e2e/browser/

fuzz:
	./scripts/fuzz.sh $(FUZZTIME)

## soak: the soak and fault suite (dorad dev under load while instances, dorad
## itself, a connection flood and slow clients hit it; dorad dev on a full
## 64 MiB tmpfs (needs root); dorad admin/router/worker on real Consul, Nomad
## and Redis while Redis and Consul stop); prints one table per part.
## Not part of `make test` (it takes several minutes). SOAK_PHASE sets each
## phase's length (default 20s).
soak:
	$(GO) test -tags soak -run '^TestSoak(DiskFull|Prod)?$$' -v -count=1 -timeout 40m ./cli/e2e/

## flaky: the fast packages' tests FLAKY_COUNT (5) times under -race, all
## packages at once (a loaded machine), to catch a test that asserts on
## timing or scheduling; every package but cli/e2e/... and cli/platform (real
## agents, minutes per run); the soak and browser tags are not built.
FLAKY_COUNT ?= 5
flaky:
	PATH="$(DEPS_BIN):$$PATH" $(GO) test -race -count=$(FLAKY_COUNT) -timeout 90m $$($(GO) list ./... | grep -v -e '/cli/e2e' -e '/cli/platform' -e '/cli/multihost')

## bench: router vs direct vs nginx, and a 1 GiB object through three steps
bench: build
	./bench/run.sh

clean:
	rm -rf $(BIN)
