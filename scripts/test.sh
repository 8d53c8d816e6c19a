#!/bin/sh
# The whole test suite: formatting, lints, unit + property + integration tests (conformance with the shared
# corpus, generated captures checked by tshark, determinism, bad input), and a short fuzz run.
set -eu
cd "$(dirname "$0")/.."
./scripts/deps.sh --test
cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo test --release -- --test-threads=2
