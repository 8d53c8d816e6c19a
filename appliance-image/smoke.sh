#!/bin/bash
# Boots the image under QEMU (TCG: no KVM needed) with the disk as a throw-away snapshot and waits for the
# appliance's own verdict on the serial console: APPLIANCE-READY (exit 0) or APPLIANCE-FAILED (exit 1);
# 3 on timeout. A second virtio NIC is the capture port: the first-boot settings (passed through fw_cfg, as an
# operator's firstboot.conf would be) make voxtap capture it with AF_PACKET; once the appliance is ready a
# generated capture is played into it and the test waits until the guest's database holds every CDR (exit 4
# if not). usage: smoke.sh [bios|uefi] [IMAGE]   env: TIMEOUT (s, default 900), QEMU
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
# The calls to play, and how many CDRs the host's own voxtap finds in them.
CAP=$OUT/smoke-calls.pcap
python3 "$REPO/perf/gen/voxgen.py" -o "$CAP" --calls 8 --cps 4 --duration 2 --seed 11 > /dev/null
WANT=$("$REPO/target/release/voxtap" -r "$CAP" --json 2> /dev/null | wc -l)
SEED=$OUT/smoke-firstboot.conf
printf 'HOSTNAME=voxtap-smoke\nCAPTURE_IFACE=enp0s5\nSMOKETEST=1\n' > "$SEED"
# Two free UDP ports on the loopback: QEMU's end of the capture NIC, and where it would send to.
read -r P_IN P_OUT < <(python3 -c 'import socket
a=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); b=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)
a.bind(("127.0.0.1",0)); b.bind(("127.0.0.1",0)); print(a.getsockname()[1], b.getsockname()[1])')
ARGS=(-machine q35 -accel tcg -cpu max -smp 2 -m 2048 -display none -monitor none -serial "file:$LOG" -no-reboot
    -drive "file=$IMG,format=$FMT,if=virtio,snapshot=on" -nic user,model=virtio-net-pci
    -netdev "socket,id=cap,udp=127.0.0.1:$P_OUT,localaddr=127.0.0.1:$P_IN" -device virtio-net-pci,netdev=cap,addr=0x5
    -fw_cfg "name=opt/voxtap/firstboot.conf,file=$SEED")
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
ready=$((SECONDS - start))
if [ "$rc" = 0 ]; then
    python3 "$HERE/send-frames.py" "$CAP" 127.0.0.1 "$P_IN" 400
    rc=4
    while kill -0 "$QPID" 2> /dev/null && [ $((SECONDS - start)) -lt "$TIMEOUT" ]; do
        if grep -qa "APPLIANCE-CDRS=$WANT" "$LOG"; then rc=0; break; fi
        sleep 2
    done
    echo "CDRs in the appliance's database: $(grep -ao 'APPLIANCE-CDRS=[0-9]*' "$LOG" | tail -1) (want $WANT)"
fi
sleep 1
kill "$QPID" 2> /dev/null || true
wait "$QPID" 2> /dev/null || true
grep -aE 'APPLIANCE-[A-Z]+[: ]|APPLIANCE-READY|APPLIANCE-FAILED|devbind:|Failed to start|emergency' "$LOG" | tr -d '\r' | grep -v 'APPLIANCE-CDRS' | head -40
echo "smoke $MODE: rc=$rc, ready after ${ready}s, done after $((SECONDS - start))s (serial log: $LOG)"
exit $rc
