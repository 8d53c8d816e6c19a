#!/bin/bash
# Boots the image under QEMU (TCG: no KVM needed) with the disk as a throw-away snapshot and waits for the
# appliance's own verdict on the serial console: APPLIANCE-READY (exit 0) or APPLIANCE-FAILED (exit 1);
# 3 on timeout. usage: smoke.sh [bios|uefi] [IMAGE]   env: TIMEOUT (s, default 900), QEMU
. "$(dirname "$0")/common.sh"
MODE=${1:-bios}
IMG=${2:-$OUT/voxtap.img}
TIMEOUT=${TIMEOUT:-900}
QEMU=${QEMU:-$(command -v qemu-system-x86_64 || echo "$HERE/.qemu/usr/bin/qemu-system-x86_64")}
[ -x "$QEMU" ] || { echo "qemu-system-x86_64 not found (./build.sh deps installs it)" >&2; exit 2; }
QEMU_EXTRA=()
# A QEMU unpacked beside the build (see build.sh deps) finds its firmware there.
[ -d "$HERE/.qemu/usr/share/qemu" ] && QEMU_EXTRA+=(-L "$HERE/.qemu/usr/share/qemu" -L /usr/share/seabios -L /usr/lib/ipxe/qemu)
LOG=$OUT/serial-$MODE.log
FMT=raw; case "$IMG" in *.qcow2) FMT=qcow2 ;; esac
ARGS=(-machine q35 -accel tcg -cpu max -smp 2 -m 2048 -display none -monitor none -serial "file:$LOG" -no-reboot
    -drive "file=$IMG,format=$FMT,if=virtio,snapshot=on" -nic user,model=virtio-net-pci)
if [ "$MODE" = uefi ]; then
    cp /usr/share/OVMF/OVMF_VARS.fd "$OUT/OVMF_VARS.fd"
    ARGS+=(-drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE.fd
        -drive "if=pflash,format=raw,file=$OUT/OVMF_VARS.fd")
fi
: > "$LOG"
start=$SECONDS
"$QEMU" "${QEMU_EXTRA[@]}" "${ARGS[@]}" &
QPID=$!
rc=3
while kill -0 "$QPID" 2> /dev/null; do
    if grep -qa 'APPLIANCE-READY' "$LOG"; then rc=0; break; fi
    if grep -qa 'APPLIANCE-FAILED' "$LOG"; then rc=1; break; fi
    if [ $((SECONDS - start)) -ge "$TIMEOUT" ]; then echo "timeout after ${TIMEOUT}s"; break; fi
    sleep 1
done
sleep 1
kill "$QPID" 2> /dev/null
wait "$QPID" 2> /dev/null
grep -aE 'APPLIANCE-|devbind:|Failed to start|emergency' "$LOG" | tr -d '\r' | head -40
echo "smoke $MODE: rc=$rc after $((SECONDS - start))s (serial log: $LOG)"
exit $rc
