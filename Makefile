# hearth — the two set-up commands are `make up` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

REPO := $(abspath .)
BUILD_DIR ?= $(REPO)/build
# envd must run on any Linux rootfs, so it is linked statically (glibc
# static-pie; the musl target cannot be fetched on our machines).
ENVD_TARGET := x86_64-unknown-linux-gnu
ENVD_BIN := $(REPO)/target/$(ENVD_TARGET)/release/envd
# The code interpreter server goes into a template the same way.
INTERPRETER_BIN := $(REPO)/target/$(ENVD_TARGET)/release/hearth-interpreter
HEARTH_BIN := $(REPO)/target/release/hearth
FUZZ_SECONDS ?= 60
# Templates trust what this host trusts (e.g. a TLS-intercepting gateway's CA),
# so their build steps reach the package registries as the host does.
HOST_CA_BUNDLE := /etc/ssl/certs/ca-certificates.crt
HEARTH_UP_ARGS ?= $(if $(wildcard $(HOST_CA_BUNDLE)),--ca-bundle $(HOST_CA_BUNDLE))

.PHONY: help up test deps deps-test check fmt-check clippy unit api-postgres envd interpreter hearth template vm-test conformance node-conformance bench soak fuzz clean

help:
	@echo "make up      install what is missing, build, run a node on 127.0.0.1:3000"
	@echo "make test    the whole test suite (fmt, clippy, unit, integration, SDK conformance)"
	@echo "make bench   benchmarks (results belong in docs/benchmarks.md)"
	@echo "make soak    SOAK_CYCLES create/run/kill cycles (default 1000) and fault tests against hearth up"
	@echo "make fuzz    run each fuzz target for FUZZ_SECONDS (default 60)"

deps:
	@scripts/install-deps.sh

deps-test:
	@scripts/install-deps.sh --test

# Builds, then runs API, proxy and node in the foreground; the first start
# builds the base template (minutes) and writes <data dir>/sdk.env
# (data dir: $$HEARTH_DATA_DIR, default /var/lib/hearth). Once up, hearth
# builds the code-interpreter-v1 template in the background (minutes the
# first time, then from its cache).
up: deps envd interpreter hearth
	$(HEARTH_BIN) up --envd $(ENVD_BIN) --code-interpreter $(INTERPRETER_BIN) $(HEARTH_UP_ARGS)

test: deps-test check unit api-postgres envd vm-test conformance node-conformance
	@echo "make test: all suites passed"

check: fmt-check clippy

fmt-check:
	cargo fmt --all -- --check

clippy:
	cargo clippy --workspace --all-targets --locked -- -D warnings

unit:
	cargo test --workspace --locked

# The control plane's tests again, with the store in PostgreSQL.
api-postgres:
	scripts/with-test-postgres.sh cargo test --locked -p hearth-api

# The checkout's path is remapped so that every clone builds the same bytes:
# the guest rootfs and template caches are keyed by envd's hash.
envd:
	RUSTFLAGS="-C target-feature=+crt-static --remap-path-prefix=$(REPO)=/hearth" cargo build --locked --release -p envd --target $(ENVD_TARGET)
	@scripts/check-static.sh $(ENVD_BIN)

interpreter:
	RUSTFLAGS="-C target-feature=+crt-static --remap-path-prefix=$(REPO)=/hearth" cargo build --locked --release -p hearth-interpreter --target $(ENVD_TARGET)
	@scripts/check-static.sh $(INTERPRETER_BIN)

hearth:
	cargo build --locked --release -p hearth

# Builds (or reuses, from the data directory's cache) the guest kernel,
# initramfs, Debian rootfs and the base template snapshot.
template: envd hearth
	$(HEARTH_BIN) doctor
	$(HEARTH_BIN) template build --envd $(ENVD_BIN)

# Real VMs (TCG here): template, clones, isolation, faults. Needs root.
vm-test: template
	cargo test --locked -p hearth-net --test slot -- --ignored
	HEARTH_ENVD=$(ENVD_BIN) cargo test --locked -p hearth-orchestrator --test vm --test pause --test snapshot --test jail --test faults --test grpc --test stress --test recovery -- --ignored --test-threads=1

conformance: envd
	ENVD_BIN=$(ENVD_BIN) BUILD_DIR=$(BUILD_DIR) tests/conformance/run.sh
	# The code interpreter server against real kernels (ipykernel, bash_kernel
	# from the virtualenv run.sh made; Deno as the template installs it).
	deno="$$(scripts/fetch-deno.sh)" && HEARTH_KERNEL_PYTHON=$(BUILD_DIR)/venv/bin/python HEARTH_KERNEL_DENO="$$deno" \
		cargo test --locked -p hearth-interpreter --test kernels -- --ignored

# Both SDKs against `hearth up` with real VMs: once on SQLite, once on PostgreSQL.
# The envd suites in VMs (one per test) do not depend on the database: SQLite run only.
node-conformance: template interpreter
	HEARTH_BIN=$(HEARTH_BIN) ENVD_BIN=$(ENVD_BIN) INTERPRETER_BIN=$(INTERPRETER_BIN) BUILD_DIR=$(BUILD_DIR) tests/conformance/run-node.sh
	HEARTH_BIN=$(HEARTH_BIN) ENVD_BIN=$(ENVD_BIN) BUILD_DIR=$(BUILD_DIR) tests/conformance/node/restart/run.sh
	ENVD_SUITES=0 TEMPLATE_SUITES=0 INTERPRETER_SUITES=0 HEARTH_BIN=$(HEARTH_BIN) ENVD_BIN=$(ENVD_BIN) BUILD_DIR=$(BUILD_DIR) scripts/with-test-postgres.sh tests/conformance/run-node.sh

bench: deps envd interpreter template
	cargo build --locked --release -p envd-bench -p hearth-bench
	ENVD_BIN=$(ENVD_BIN) $(REPO)/target/release/envd-bench
	HEARTH_ENVD=$(ENVD_BIN) $(REPO)/target/release/hearth-bench --build-from-nothing
	HEARTH_BIN=$(HEARTH_BIN) ENVD_BIN=$(ENVD_BIN) BUILD_DIR=$(BUILD_DIR) tests/bench/run-sdk-bench.sh 20 8
	HEARTH_BIN=$(HEARTH_BIN) ENVD_BIN=$(ENVD_BIN) BUILD_DIR=$(BUILD_DIR) tests/bench/run-host-routing-bench.sh 200 5
	HEARTH_BIN=$(HEARTH_BIN) ENVD_BIN=$(ENVD_BIN) BUILD_DIR=$(BUILD_DIR) tests/bench/run-template-bench.sh 10
	HEARTH_BIN=$(HEARTH_BIN) ENVD_BIN=$(ENVD_BIN) INTERPRETER_BIN=$(INTERPRETER_BIN) BUILD_DIR=$(BUILD_DIR) tests/bench/run-interpreter-bench.sh 20
	HEARTH_BIN=$(HEARTH_BIN) ENVD_BIN=$(ENVD_BIN) BUILD_DIR=$(BUILD_DIR) tests/bench/run-pause-bench.sh 10
	HEARTH_BIN=$(HEARTH_BIN) ENVD_BIN=$(ENVD_BIN) BUILD_DIR=$(BUILD_DIR) tests/bench/run-density-bench.sh 100

# Not part of `make test`: SOAK_CYCLES create → run → kill cycles through the
# SDK, SOAK_CONCURRENCY at a time, then faults (a sandbox's QEMU killed, hearth
# killed and restarted); each checks that nothing leaks. hearth listens on
# HEARTH_UP_LISTEN (default 127.0.0.1:3901) with slots HEARTH_UP_SLOTS (htu:25).
SOAK_CYCLES ?= 1000
SOAK_CONCURRENCY ?= 8
soak: deps envd template
	HEARTH_BIN=$(HEARTH_BIN) ENVD_BIN=$(ENVD_BIN) BUILD_DIR=$(BUILD_DIR) tests/soak/run-soak.sh $(SOAK_CYCLES) $(SOAK_CONCURRENCY)
	HEARTH_BIN=$(HEARTH_BIN) ENVD_BIN=$(ENVD_BIN) BUILD_DIR=$(BUILD_DIR) tests/soak/faults.sh

fuzz:
	@scripts/fuzz.sh $(FUZZ_SECONDS)

clean:
	cargo clean
	rm -rf $(BUILD_DIR)
