#!/bin/sh
# Offline throughput benchmark (results go to docs/performance.md by hand, with this command):
#   ./perf/bench.sh            # generates target/bench/g711.pcap once (3,042,000 packets, 6,000 concurrent calls)
# It prints packets/s per core (packets / CPU seconds of the whole process), wall-clock rates for 1 and 2
# owner workers, tshark's time for `-z rtp,streams` on the same file, and the state bytes per active stream.
set -eu
cd "$(dirname "$0")/.."
F=${BENCH_FILE:-target/bench/g711.pcap}
RUNS=${RUNS:-3}
mkdir -p "$(dirname "$F")"
if [ ! -f "$F" ]; then
    python3 perf/gen/voxgen.py -o "$F" --calls 6000 --cps 3000 --duration 5 --seed 3
fi
cargo build --release --quiet
cargo build --release --quiet --example state_size
cat "$F" > /dev/null   # into the page cache
echo "file: $F ($(stat -c %s "$F") bytes)"
for w in 1 2; do
    i=0
    while [ $i -lt "$RUNS" ]; do
        i=$((i + 1))
        /usr/bin/time -f "%e %U %S %M" -o target/bench/time.txt ./target/release/voxtap -r "$F" --json --workers $w \
            > target/bench/cdrs.json 2> target/bench/summary.txt
        set -- $(cat target/bench/time.txt)
        pk=$(sed -n 's/.*packets=\([0-9]*\).*/\1/p' target/bench/summary.txt)
        peak=$(sed -n 's/.*concurrent_calls_peak=\([0-9]*\).*/\1/p' target/bench/summary.txt)
        awk -v pk="$pk" -v wall="$1" -v u="$2" -v s="$3" -v w="$w" -v peak="$peak" 'BEGIN {
            printf "workers=%d packets=%d peak_calls=%d wall=%.2fs cpu=%.2fs  %.2f Mpps/core  %.2f Mpps wall\n",
                w, pk, peak, wall, u + s, pk / (u + s) / 1e6, pk / wall / 1e6 }'
    done
done
if command -v tshark >/dev/null 2>&1 && [ "${SKIP_TSHARK:-0}" != 1 ]; then
    /usr/bin/time -f "%e %U %S" -o target/bench/tshark.txt tshark -n -q -r "$F" -z rtp,streams > target/bench/tshark-streams.txt 2>/dev/null
    set -- $(cat target/bench/tshark.txt)
    echo "tshark -z rtp,streams: wall=${1}s cpu=$(awk -v u="$2" -v s="$3" 'BEGIN{print u+s}')s"
fi
./target/release/examples/state_size 10000
