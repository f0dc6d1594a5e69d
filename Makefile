# natsfleet
#
#   make run     build the binaries, start NATS, two worker agents and the example client; stop everything after
#   make test    go vet, unit tests with the race detector, then the end-to-end integration tests
#   make build   build cmd/* and examples/fleetdemo into bin/
#   make bench   run the benchmark report (cmd/bench)
#   make lint    gofmt check and go vet

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

# CI runs with the machine's environment, where Go may not be on PATH.
ifeq ($(shell command -v go 2>/dev/null),)
export PATH := /usr/local/go/bin:$(PATH)
endif

GO ?= go
# Every package but the integration tests (many processes: no race detector there) and the benchmark report.
UNIT_PKGS = $(GO) list ./... | grep -v -e /integration -e /cmd/bench

.PHONY: build test run bench lint

build:
	$(GO) build -o bin/ ./cmd/... ./examples/fleetdemo

test:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 15m $$($(UNIT_PKGS))
	$(GO) test -count=1 -timeout 15m ./integration/...

run:
	./scripts/run.sh

# cmd/bench is a module of its own (its peers are not the library's dependencies); -mod=mod lets its go.sum follow
# the library's.
bench:
	cd cmd/bench && $(GO) run -mod=mod . $(BENCHFLAGS)

lint:
	@files=$$(gofmt -l .); if [[ -n "$$files" ]]; then echo "gofmt -l lists files that need formatting:"; echo "$$files"; exit 1; fi
	$(GO) vet ./...
