#!/bin/bash
# Builds the voxtap appliance disk image: ./appliance-image/build.sh [deps|rootfs|disk|artifacts|image|smoke|all]
# (image = deps rootfs disk artifacts; all = image, then the BIOS and UEFI boot test). Needs root (mmdebstrap --mode=root, file ownership in the
# image). Output in appliance-image/out/: voxtap.img (raw, boots BIOS and UEFI), voxtap.img.zst + voxtap.bmap
# for flashing, voxtap.qcow2 for VMs, manifest.txt (package versions), SHA256SUMS.
. "$(dirname "$0")/common.sh"

deps() {
    local pkgs=(mmdebstrap grub-pc-bin grub-efi-amd64-bin grub-common dosfstools mtools fdisk e2fsprogs zstd
        bmap-tools ovmf seabios ipxe-qemu dpdk-dev)
    local missing=()
    for p in "${pkgs[@]}"; do dpkg -s "$p" > /dev/null 2>&1 || missing+=("$p"); done
    command -v qemu-img > /dev/null || missing+=(qemu-utils)
    if [ ${#missing[@]} -gt 0 ]; then
        apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${missing[@]}"
    fi
    if ! command -v qemu-system-x86_64 > /dev/null && [ ! -e "$HERE/.qemu/usr/lib/x86_64-linux-gnu/qemu/accel-tcg-x86_64.so" ]; then
        # A newer qemu-utils (as some machines carry from backports) conflicts with bookworm's QEMU, and apt would
        # remove it: never let it (--no-remove); unpack QEMU beside the build instead, its libraries installed
        # normally.
        if ! apt-get -o DPkg::Lock::Timeout=600 install -y --no-remove --no-install-recommends qemu-system-x86; then
            local d=$HERE/.qemu
            mkdir -p "$d"
            # qemu-system-common holds the accelerator modules (TCG among them); smoke.sh points QEMU at them.
            (cd "$d" && apt-get download qemu-system-x86 qemu-system-common qemu-system-data &&
                for f in ./*.deb; do dpkg-deb -x "$f" .; done && rm -f ./*.deb)
            local libs
            libs=$(apt-cache depends qemu-system-x86 qemu-system-common | awk '/Depends: lib/ { print $2 }' | tr -d '<>' | sort -u)
            # shellcheck disable=SC2086
            apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends $libs
        fi
    fi
}

binary() {
    if [ -z "${VOXTAP_BIN:-}" ]; then
        (cd "$REPO" && cargo build --release)
    fi
}

artifacts() {
    local img=$OUT/voxtap.img
    zstd -q -T0 -f -3 "$img" -o "$img.zst"
    bmaptool -q create -o "$OUT/voxtap.bmap" "$img"
    qemu-img convert -O qcow2 "$img" "$OUT/voxtap.qcow2"
    (cd "$OUT" && sha256sum voxtap.img.zst voxtap.bmap voxtap.qcow2 manifest.txt > SHA256SUMS)
    ls -ls "$OUT"/voxtap.* "$OUT/SHA256SUMS"
}

# Runs a step and says how long it took; its exit status is the step's, so `a && b` stops at a failed step.
stage() {
    local s=$SECONDS rc=0
    "$@" || rc=$?
    echo "== $1: $((SECONDS - s)) s$([ $rc = 0 ] || echo ", exit status $rc")"
    return $rc
}

case ${1:-all} in
    deps) stage deps ;;
    rootfs) stage binary; stage "$HERE/rootfs.sh" ;;
    disk) stage "$HERE/disk.sh" ;;
    artifacts) stage artifacts ;;
    smoke) stage "$HERE/smoke.sh" bios && stage "$HERE/smoke.sh" uefi && stage "$HERE/smoke.sh" central ;;
    image) stage deps; stage binary; stage "$HERE/rootfs.sh"; stage "$HERE/disk.sh"; stage artifacts ;;
    all) stage deps; stage binary; stage "$HERE/rootfs.sh"; stage "$HERE/disk.sh"; stage artifacts
        stage "$HERE/smoke.sh" bios && stage "$HERE/smoke.sh" uefi && stage "$HERE/smoke.sh" central ;;
    *) echo "usage: $0 [deps|rootfs|disk|artifacts|image|smoke|all]" >&2; exit 2 ;;
esac
