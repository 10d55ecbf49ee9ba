#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# What crash-safety= costs a write (issue 9, item 8; DESIGN.md
# "Performance targets": process within 3% of none for repeat writes
# and 10% for first-touch 4 KiB writes).
#
#   bench/bench-crash-modes.sh BUILDDIR
#
# Four servers on real files of a local file system (WORKDIR, not a
# tmpfs): the file plugin alone (plain), and with the checkpoint filter,
# state= and crash-safety=none, process and power, each with one
# persistent recording bitmap (block-dirty-bitmap-add persistent=true),
# so that process and power write their journal.  Each disk is filled
# once first (the file allocated).  For each round, mode (rand4k: one
# 4 KiB write per 64 KiB chunk, chunks in a random order; seq1m: 1 MiB
# writes in order) and server: the bitmap is cleared, one pass of
# first-touch writes (every write dirties clean chunks), then the same
# pass again: repeat writes (to dirty chunks).  bench-latency times each
# request.  The order of the servers changes from round to round
# (rotated, and reversed every other round): an order effect was seen
# on this machine.  Prints the load average with the results.
#
# bench-latency also reports the server's CPU time per write (us/op),
# less disturbed by the machine's other load than throughput is.
#
# Knobs: ROUNDS=5, REGION=1G (the disks, and the region of rand4k:
# 16384 chunks, so many first touches per pass), SEQ_REGION=256M (that
# of seq1m), QD=16, WORKDIR (default: a new directory under /var/tmp).
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 BUILDDIR" >&2
    exit 2
fi
BUILD=$(cd "$1" && pwd)
SRC=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${ROUNDS:-5}
REGION=${REGION:-1G}
SEQ_REGION=${SEQ_REGION:-256M}
QD=${QD:-16}
PY=/usr/bin/python3
QMPC="$PY $SRC/tests/qmp-client.py"

for d in common/utils common/bitmap common/state common/qmp; do
    make -s -C "$BUILD/$d" >/dev/null
done
make -s -C "$BUILD/filters/checkpoint" nbdkit-checkpoint-filter.la >/dev/null
make -s -C "$BUILD/bench" bench-write bench-latency >/dev/null
FILTER=$BUILD/filters/checkpoint/.libs/nbdkit-checkpoint-filter.so
BW=$BUILD/bench/bench-write
BL=$BUILD/bench/bench-latency

WORK=${WORKDIR:-$(mktemp -d /var/tmp/bench-crash-modes.XXXXXX)}
mkdir -p "$WORK"
fstype=$(stat -f -c %T "$WORK")
if [ "$fstype" = tmpfs ]; then
    echo "$0: $WORK is a tmpfs: use a real file system (WORKDIR=)" >&2
    exit 1
fi
RES=$WORK/results.txt
: > "$RES"

configs=(plain none process power)
declare -A PIDS=()

cleanup ()
{
    local c pid i
    set +e
    for c in "${!PIDS[@]}"; do
        pid=${PIDS[$c]}
        kill "$pid" 2>/dev/null
        for (( i = 0; i < 500; i++ )); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.02
        done
    done
    rm -f "$WORK"/*.img "$WORK"/*.sock "$WORK"/*.qmp "$WORK"/*.pid
    rm -rf "$WORK"/state-*
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start ()
{
    local c=$1 i args=()
    rm -f "$WORK/$c.img" "$WORK/$c.sock" "$WORK/$c.pid" "$WORK/$c.qmp"
    rm -rf "$WORK/state-$c"
    truncate -s "$REGION" "$WORK/$c.img"
    [ "$c" = plain ] || args=(--filter="$FILTER")
    args+=(file "$WORK/$c.img")
    [ "$c" = plain ] || args+=(node-name=d0 qmp="$WORK/$c.qmp"
                               state="$WORK/state-$c" crash-safety="$c")
    nbdkit -U "$WORK/$c.sock" -P "$WORK/$c.pid" "${args[@]}" \
        2>>"$WORK/nbdkit-$c.err"
    for (( i = 0; i < 100; i++ )); do
        [ -s "$WORK/$c.pid" ] && [ -S "$WORK/$c.sock" ] &&
            { [ "$c" = plain ] || [ -S "$WORK/$c.qmp" ]; } && break
        sleep 0.1
    done
    [ -s "$WORK/$c.pid" ] || { echo "$0: nbdkit $c did not start" >&2
                               cat "$WORK/nbdkit-$c.err" >&2; exit 1; }
    PIDS[$c]=$(cat "$WORK/$c.pid")
    "$BW" "$WORK/$c.sock" fill "$REGION" 0 "$QD" > /dev/null
    if [ "$c" != plain ]; then
        $QMPC "$WORK/$c.qmp" block-dirty-bitmap-add \
              '{"node": "d0", "name": "b0", "persistent": true}' > /dev/null
    fi
}

echo "bench-crash-modes: $(nproc) CPUs, $WORK ($fstype), REGION=$REGION," \
     "SEQ_REGION=$SEQ_REGION, QD=$QD, ROUNDS=$ROUNDS"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
for c in "${configs[@]}"; do
    start "$c"
done
for (( r = 1; r <= ROUNDS; r++ )); do
    order=()
    for (( k = 0; k < ${#configs[@]}; k++ )); do
        order+=("${configs[$(( (k + r) % ${#configs[@]} ))]}")
    done
    if (( r % 2 == 0 )); then
        order=($(printf '%s\n' "${order[@]}" | tac))
    fi
    for mode in rand4k seq1m; do
        region=$REGION
        [ $mode = rand4k ] || region=$SEQ_REGION
        for c in "${order[@]}"; do
            if [ "$c" != plain ]; then
                $QMPC "$WORK/$c.qmp" block-dirty-bitmap-clear \
                      '{"node": "d0", "name": "b0"}' > /dev/null
            fi
            for phase in first repeat; do
                out=$("$BL" "$WORK/$c.sock" $mode "$region" 64K "$QD" $r \
                          "${PIDS[$c]}")
                echo "$c $phase $r $out" >> "$RES"
            done
        done
    done
    echo "  round $r/$ROUNDS (${order[*]}) done, load average" \
         "$(cut -d' ' -f1-3 /proc/loadavg)"
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
for c in none process power; do
    count=$($QMPC "$WORK/$c.qmp" query-named-block-nodes | $PY -c '
import json, sys
for n in json.load(sys.stdin):
    for d in n.get("dirty-bitmaps", []):
        print(d["count"])' | head -1)
    echo "bitmap b0 under $c: ${count:-?} bytes dirty (every chunk)"
done

$PY - "$RES" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    c, phase, r, *kv = line.split()
    d = dict(x.split("=") for x in kv)
    rows.setdefault((d["mode"], phase, c), []).append(
        (float(d["mibps"]), float(d["p50_us"]), float(d["p99_us"]),
         float(d.get("srv_us_per_op", "nan"))))
med = lambda v: statistics.median(v)
print()
print("medians over rounds: MiB/s, request latency (us), server CPU per "
      "write (us);")
print("ratios: MiB/s over none's and over plain's")
print("%-7s %-7s %-8s %9s %9s %9s %8s %8s %8s"
      % ("mode", "writes", "config", "MiB/s", "p50", "p99", "cpu/op",
         "/none", "/plain"))
for mode in ("rand4k", "seq1m"):
    for phase in ("first", "repeat"):
        base = {c: med([x[0] for x in rows[(mode, phase, c)]])
                for c in ("none", "plain")}
        for c in ("plain", "none", "process", "power"):
            v = rows[(mode, phase, c)]
            t = med([x[0] for x in v])
            print("%-7s %-7s %-8s %9.1f %9.0f %9.0f %8.1f %8.3f %8.3f"
                  % (mode, phase, c, t, med([x[1] for x in v]),
                     med([x[2] for x in v]), med([x[3] for x in v]),
                     t / base["none"], t / base["plain"]))
EOF
echo "raw results: $RES"
