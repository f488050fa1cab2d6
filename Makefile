# hakit — the two commands a newcomer runs are `make demo` and `make test`.
# Both install what they need first (make deps).

SHELL := /bin/bash
GO ?= go
STATICCHECK := $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2
# Example apps are modules of their own (replace hakit.dev => ../..).
EXAMPLES := $(patsubst %/go.mod,%,$(wildcard examples/*/go.mod))
TESTFLAGS ?= -race -count=1 -timeout 30m
SUITE ?= harness

.PHONY: all deps test lint fmt vet staticcheck demo bench

all: test

## deps: install the services tests, benchmarks and the lab run against (idempotent)
deps:
	@./scripts/deps

## test: deps, lint, then every test with -race in the library and each example
test: deps lint
	$(GO) test $(TESTFLAGS) ./...
	@set -e; for d in $(EXAMPLES); do \
		echo "== $$d"; \
		(cd $$d && $(GO) vet ./... && $(STATICCHECK) ./... && $(GO) test $(TESTFLAGS) ./...); \
	done

## lint: gofmt, go vet and staticcheck
lint: fmt vet staticcheck

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

staticcheck:
	$(STATICCHECK) ./...

## demo: the whole HA lab on this machine, in the foreground (Ctrl-C stops it)
demo: deps
	$(GO) run ./cmd/halab

## bench: go run ./bench $(SUITE) (make bench SUITE=harness)
bench: deps
	$(GO) run ./bench $(SUITE)
