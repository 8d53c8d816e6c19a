#!/bin/sh
# The whole test suite: formatting, lints, unit + property + integration tests (conformance with the shared
# corpus, generated captures checked by tshark, determinism, bad input), and a short fuzz run.
set -eu
cd "$(dirname "$0")/.."
./scripts/deps.sh --test
# The MySQL tests use the machine's MariaDB on 127.0.0.1:3306 (root, no password) when it answers; start it if it
# is installed but down. Where it cannot start, the tests run a private server of their own.
if ! mariadb --no-defaults -h127.0.0.1 -uroot -e 'SELECT 1' >/dev/null 2>&1 && [ -x /usr/sbin/mariadbd ]; then
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        mariadb --no-defaults -h127.0.0.1 -uroot -e 'SELECT 1' >/dev/null 2>&1 && break
        sleep 1
    done
fi
cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo test --release -- --test-threads=2
