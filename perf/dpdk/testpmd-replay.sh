#!/bin/sh
# Replays a capture (e.g. one made by perf/gen/voxgen.py) at full speed out of a DPDK port, with dpdk-testpmd:
# the traffic source for testing an appliance's capture port on real hardware (connect the two boxes' ports).
#
#   perf/dpdk/testpmd-replay.sh FILE.pcap PCI_ADDRESS [LOOPS]
#
# The pcap virtual device reads FILE (infinite_rx=1 replays it from memory in a loop) and testpmd forwards
# every packet out of the physical port at PCI_ADDRESS (bound to vfio-pci). Without a PCI address the port is
# a null device, which measures how fast this host can replay (no NIC needed).
# infinite_rx keeps the whole file in mbufs: MBUFS (default 65536) must exceed its packet count.
set -eu
FILE=${1:?usage: $0 FILE.pcap [PCI_ADDRESS] [SECONDS]}
PCI=${2:-}
SECONDS_TO_RUN=${3:-10}
if [ -n "$PCI" ]; then
    OUT="-a $PCI"
    MEM="--in-memory"          # hugepages: echo 1024 > /proc/sys/vm/nr_hugepages
else
    OUT="--no-pci --vdev net_null0"
    MEM="--no-huge -m 512 --no-shconf"
fi
# shellcheck disable=SC2086
(sleep "$SECONDS_TO_RUN"; echo "show port stats all"; echo quit) | dpdk-testpmd -l 0-1 $MEM $OUT \
    --vdev "net_pcap0,rx_pcap=$FILE,infinite_rx=1" -- \
    --total-num-mbufs="${MBUFS:-65536}" --forward-mode=io --port-topology=paired --no-flush-rx \
    --auto-start -i
