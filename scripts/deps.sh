#!/bin/sh
# Installs the Debian packages voxtap's build, demo and tests need, when they are missing (idempotent).
set -eu
want="python3 tshark tcpdump pkg-config libpcap-dev libdpdk-dev libclang-dev"
[ "${1:-}" = "--test" ] && want="$want sip-tester tcpreplay dpdk-dev mariadb-server mariadb-client shellcheck systemd libcap2-bin"
missing=""
for p in $want; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "installing:$missing"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "wireshark-common wireshark-common/install-setuid boolean false" | $SUDO debconf-set-selections 2>/dev/null || true
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y $missing \
        || { $SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y $missing; }
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "voxtap needs a Rust toolchain (cargo, rustc >= 1.95): install it with rustup, then run this again" >&2
    exit 1
fi
