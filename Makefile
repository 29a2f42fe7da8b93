# Tendril build, run and test entry points. `make run` and `make test` are
# the two commands a new machine needs; both install what they lack.

# Go may be installed without being on PATH yet (a fresh machine, CI).
export PATH := $(PATH):/usr/local/go/bin

GO ?= go

# VERSION stamps every binary. Default: the git tag describing this commit
# (without its leading "v") when there is one, else 0.0.0-dev, so untagged
# builds never pose as releases.
ifndef VERSION
VERSION := $(shell v=$$(git describe --tags --always --dirty 2>/dev/null | sed -nE 's/^v?([0-9]+\.[0-9]+\.[0-9]+([-+.][0-9A-Za-z.+-]*)?)$$/\1/p'); echo "$${v:-0.0.0-dev}")
endif
# A leading "v" is dropped from a given VERSION too: versions are compared
# as semantic versions without it.
override VERSION := $(patsubst v%,%,$(VERSION))

LDFLAGS := -X github.com/tendrildeploy/tendril/version.Version=$(VERSION)
FUZZTIME ?= 30s

.PHONY: build run test fuzz dist bench-quick bench bench-build

## build: put tendril-server, tendril-agent and calamari, stamped with VERSION, in ./bin,
## and the Calamari bundle (cross-built for every platform, unsigned) in ./dist
build:
	@mkdir -p bin dist
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/tendril-server ./cmd/tendril-server
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/tendril-agent ./cmd/tendril-agent
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/calamari ./cmd/calamari
	$(GO) run ./internal/mkbundle -go "$(GO)" -version "$(VERSION)" -out "dist/calamari-$(VERSION).tar.gz"
	@echo "built bin/tendril-server, bin/tendril-agent, bin/calamari and dist/calamari-$(VERSION).tar.gz, version $(VERSION)"

## run: start a coordinator in ./data and one agent enrolled with it; Ctrl-C stops both
run: build
	@VERSION=$(VERSION) scripts/run.sh

## test: install test dependencies, vet, cross-build for Windows and macOS, and run
## every test with the race detector
test:
	@scripts/deps.sh
	$(GO) vet ./...
	GOOS=windows $(GO) vet ./agent/... ./cmd/...
	GOOS=windows $(GO) build ./...
	GOOS=darwin $(GO) build ./...
	sh -n scripts/install.sh && bash -n scripts/dist.sh
	$(GO) test -race -count=1 -timeout 20m ./...

## dist: release archives for linux/amd64, linux/arm64, windows/amd64 and darwin/arm64
## (agent with install.sh, server, Calamari bundle) and SHA256SUMS in ./dist
dist:
	@scripts/dist.sh "$(VERSION)"

## fuzz: run every fuzz target for FUZZTIME each (default 30s)
fuzz:
	@FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

## bench-quick: fleet benchmark at 1,000 simulated agents (a few minutes); results and
## coordinator profiles in bench-results/ (see BENCHMARKS.md). Not part of test.
bench-quick: bench-build
	bin/tendril-fleet bench --agents 1000 --storms 3 --out bench-results/quick.md

## bench: every figure of BENCHMARKS.md: fleet of 1,000, 5,000 and 10,000 simulated agents,
## bundle pushes and task round trips against raw TLS, scp and ssh, also through tinyproxy
## and nginx (WebSocket) next to direct, a rollout to 1,000 agents, and an agent reconnecting
## with and without a flood of 2,000 silent sockets, and 10,000 agents again with the
## README's fleet-sized GOMEMLIMIT (64 MiB + 35 KiB per agent) for the coordinator and the
## anchor alike (within 25 minutes; run it on an otherwise idle machine)
bench: bench-build
	bin/tendril-fleet bench --agents 1000,5000,10000 --out bench-results/results.md
	bin/tendril-fleet bench --agents 10000 --gc-env GOMEMLIMIT=406MiB --out bench-results/results-memlimit.md
	bin/tendril-fleet bench-transfer --out bench-results/transfer.md
	bin/tendril-fleet bench-rollout --agents 1000 --batch 100 --out bench-results/rollout.md
	bin/tendril-fleet bench-flood --out bench-results/flood.md

# bench-build: the binaries and Calamari bundle the benchmarks run, and sshd,
# tinyproxy and nginx for the transfer comparison
bench-build: build
	@scripts/bench-deps.sh
	@mkdir -p bench-results
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/tendril-fleet ./cmd/tendril-fleet
