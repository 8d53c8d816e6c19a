#!/bin/sh
# Checks a capture port before voxtap uses it: dpdk-testpmd receives on the port and prints per-queue counters.
#
#   perf/dpdk/testpmd-rxonly.sh PCI_ADDRESS [QUEUES] [SECONDS]
#
# Run the replay (testpmd-replay.sh on another box, or a switch's SPAN) while it runs; RX-packets should grow
# on every queue and RX-missed/RX-nombuf stay at 0. Same EAL options as voxtap's dpdk_eal_args on that host.
set -eu
PCI=${1:?usage: $0 PCI_ADDRESS [QUEUES] [SECONDS]}
Q=${2:-2}
SECONDS_TO_RUN=${3:-10}
(sleep "$SECONDS_TO_RUN"; echo "show port xstats 0"; echo quit) | dpdk-testpmd -l 0-2 --in-memory -a "$PCI" -- \
    --rxq="$Q" --txq="$Q" --nb-cores=2 --rss-udp --forward-mode=rxonly --no-flush-rx --auto-start -i
