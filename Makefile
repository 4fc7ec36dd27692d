# Patchbay — the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help
export PATH := $(CURDIR)/.tools/bin:$(PATH)

CARGO ?= cargo

.PHONY: help tools build run test fuzz check-run-stop check-deploy chaos bench bench-short lint fmt schemas clean

help: ## Show the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

tools: ## Install what is missing: pinned nats-server and kubectl into .tools/, PostgreSQL server binaries, Chromium and chromedriver.
	@./scripts/install-tools.sh

build: ## Build every binary (debug).
	$(CARGO) build --workspace --bins

run: tools ## Start NATS, PostgreSQL and every service (patchbay all) on 127.0.0.1:8080.
	@./scripts/run.sh

test: tools ## The whole suite (unit, integration, end to end) against real NATS and PostgreSQL.
	@./scripts/check-deploy.sh
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --no-fail-fast; \
	else \
		$(CARGO) test --workspace --no-fail-fast; \
	fi
	@./scripts/check-run-stop.sh

check-run-stop: ## `make run` stops everything on SIGTERM to make, held connections and all (part of `make test`).
	@./scripts/check-run-stop.sh

# Cases per property test in `make fuzz` (`make test` runs each with the few of
# patchbay_testkit::fuzz::DEFAULT_CASES).
FUZZ_CASES ?= 100000

fuzz: ## Every parser's property tests (`fuzz_*`) at 100,000 cases each (FUZZ_CASES=n to change; docs/security.md).
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) nextest run --workspace --lib -E 'test(/(^|::)fuzz_/)' --no-fail-fast; \
	else \
		PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --workspace --lib --no-fail-fast fuzz_; \
	fi

check-deploy: ## Render and validate k8s/ and deploy/ offline (part of `make test`).
	@./scripts/check-deploy.sh

chaos: tools ## The chaos suite at ten times the size used by `make test` (real processes).
	PATCHBAY_CHAOS_SCALE=10 $(CARGO) nextest run --profile chaos -p patchbay -E 'binary(chaos)' --no-fail-fast --no-capture

bench: tools ## Release build, then the full benchmark: bench/results/latest.{json,md}, latency.svg.
	$(CARGO) build --release -p patchbay -p patchbay-bench --bins
	$${CARGO_TARGET_DIR:-target}/release/patchbay-bench --out bench/results

bench-short: tools ## The benchmark's short mode (debug build, seconds; also runs in `make test`).
	$(CARGO) build -p patchbay -p patchbay-bench --bins
	$${CARGO_TARGET_DIR:-target}/debug/patchbay-bench --short --out bench/results/short

lint: ## rustfmt and clippy, warnings are errors.
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt: ## Format the code.
	$(CARGO) fmt --all

schemas: ## Regenerate proto-schemas/ from the wire types.
	PATCHBAY_UPDATE_SCHEMAS=1 $(CARGO) test -p patchbay-contract --lib schema

clean: ## Remove build output and local data (.data/).
	$(CARGO) clean
	rm -rf .data
