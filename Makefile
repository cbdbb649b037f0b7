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
HEARTH_BIN := $(REPO)/target/release/hearth
FUZZ_SECONDS ?= 60

.PHONY: help up test deps check fmt-check clippy unit envd hearth template vm-test conformance bench fuzz clean

help:
	@echo "make up      install what is missing, build, run a node on 127.0.0.1:3000"
	@echo "make test    the whole test suite (fmt, clippy, unit, integration, SDK conformance)"
	@echo "make bench   benchmarks (results belong in docs/benchmarks.md)"
	@echo "make fuzz    run each fuzz target for FUZZ_SECONDS (default 60)"

deps:
	@scripts/install-deps.sh

up: deps envd template
	@echo "hearth up: not yet available — the control plane has not landed."
	@echo "What exists today: envd ($(ENVD_BIN)) and the base template VM snapshot (see above)."

test: deps check unit envd vm-test conformance
	@echo "make test: all suites passed"

check: fmt-check clippy

fmt-check:
	cargo fmt --all -- --check

clippy:
	cargo clippy --workspace --all-targets --locked -- -D warnings

unit:
	cargo test --workspace --locked

# The checkout's path is remapped so that every clone builds the same bytes:
# the guest rootfs and template caches are keyed by envd's hash.
envd:
	RUSTFLAGS="-C target-feature=+crt-static --remap-path-prefix=$(REPO)=/hearth" cargo build --locked --release -p envd --target $(ENVD_TARGET)
	@scripts/check-static.sh $(ENVD_BIN)

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
	HEARTH_ENVD=$(ENVD_BIN) cargo test --locked -p hearth-orchestrator --test vm --test faults --test grpc --test stress --test recovery -- --ignored --test-threads=1

conformance: envd
	ENVD_BIN=$(ENVD_BIN) BUILD_DIR=$(BUILD_DIR) tests/conformance/run.sh

bench: deps envd template
	cargo build --locked --release -p envd-bench -p hearth-bench
	ENVD_BIN=$(ENVD_BIN) $(REPO)/target/release/envd-bench
	HEARTH_ENVD=$(ENVD_BIN) $(REPO)/target/release/hearth-bench --build-from-nothing

fuzz:
	@scripts/fuzz.sh $(FUZZ_SECONDS)

clean:
	cargo clean
	rm -rf $(BUILD_DIR)
