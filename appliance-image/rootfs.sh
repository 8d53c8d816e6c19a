#!/bin/bash
# Stage 1: the appliance's root file system as a directory (mmdebstrap, Debian bookworm; no docker, no loop
# devices). Downloaded packages are kept in appliance-image/apt-cache between builds.
. "$(dirname "$0")/common.sh"
BIN=${VOXTAP_BIN:-$REPO/target/release/voxtap}
[ -x "$BIN" ] || { echo "build voxtap first (cargo build --release): $BIN is missing" >&2; exit 1; }
MAIN=$(archive_for bookworm)
SECURITY=$(archive_for bookworm-security)
PKGS=(
    systemd-sysv udev dbus kmod linux-image-amd64 initramfs-tools zstd ca-certificates
    iproute2 procps less openssh-server netcat-openbsd systemd-timesyncd ethtool tcpdump
    mariadb-server
    dpdk pciutils python3
    librte-eal23 librte-ethdev23 librte-mempool23 librte-mempool-ring23 librte-mbuf23 librte-ring23 librte-bus-pci23
    librte-bus-vdev23 librte-net-virtio23 librte-net-ixgbe23 librte-net-i40e23 librte-net-ice23 librte-net-igc23
    librte-net-e1000-23 librte-net-af-packet23 librte-net-mlx5-23 librte-net-pcap23
    libpcap0.8
)
# DPDK's testpmd, to check a port before voxtap takes it: Debian ships it in dpdk-dev, which would bring the
# headers and every -dev package along, so the binary alone is taken from this bookworm host (build.sh deps
# installs dpdk-dev), with the runtime libraries it links.
TESTPMD=/usr/bin/dpdk-testpmd
[ -x "$TESTPMD" ] || { echo "$TESTPMD is missing (apt-get install dpdk-dev)" >&2; exit 1; }
# Whatever shared libraries voxtap and testpmd need (their DPDK libraries among them), as this bookworm host's
# packages name them.
mapfile -t NEEDED < <(ldd "$BIN" "$TESTPMD" | awk '$3 ~ /^\// { print $3 }' | sort -u | while read -r lib; do
    dpkg -S "$(readlink -f "$lib")" 2>/dev/null || dpkg -S "$lib" 2>/dev/null || true
done | cut -d: -f1 | sort -u | grep -v '^libc6$')
PKGS+=("${NEEDED[@]}")
STAGE=$OUT/stage
rm -rf "$STAGE" "$ROOTFS"
cp -a "$HERE/overlay" "$STAGE"
install -D -m 0755 "$BIN" "$STAGE/usr/bin/voxtap"
install -D -m 0755 "$TESTPMD" "$STAGE/usr/bin/dpdk-testpmd"
# The operator's documentation, on the box.
for d in appliance configuration sensor-modes manager database spool performance; do
    [ ! -f "$REPO/docs/$d.md" ] || install -D -m 0644 "$REPO/docs/$d.md" "$STAGE/usr/share/doc/voxtap/$d.md"
done
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$REPO" log -1 --format=%ct 2>/dev/null || date +%s)}
mmdebstrap --mode=root --variant=minbase --format=directory \
    --include="$(IFS=,; echo "${PKGS[*]}")" \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
    --setup-hook="sync-in $CACHE /var/cache/apt/archives/" \
    --customize-hook="sync-out /var/cache/apt/archives $CACHE" \
    --customize-hook="sync-in $STAGE /" \
    --customize-hook="\"$HERE/customize.sh\" \"\$1\"" \
    bookworm "$ROOTFS" \
    "deb $MAIN bookworm main" "deb $MAIN bookworm-updates main" "deb $SECURITY bookworm-security main"
rm -rf "$STAGE"
cp "$ROOTFS/usr/share/voxtap-manifest.txt" "$OUT/manifest.txt"
du -sh "$ROOTFS"
