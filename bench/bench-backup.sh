#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# Backup benchmarks: copy-before-write cost and incremental read
# throughput, against qemu-storage-daemon's copy-before-write filter.
#
#   bench/bench-backup.sh BUILDDIR
#
# BUILDDIR is a configured build tree; the checkpoint filter is built
# there if needed.  The client, bench/bench-cbw.c, is compiled into the
# work directory with  cc $(pkg-config --cflags --libs libnbd).
# Needs nbdkit (file plugin), libnbd, nbdcopy, python3, and for the
# comparison qemu-storage-daemon (skipped with a note if missing).
# Run as root so that the page cache can be dropped between
# measurements (otherwise "cold" is only "as it happens", and the
# table says so).
#
# 1. Copy-before-write (CBW).  One raw disk file of DISK bytes, full of
#    non-zero data.  First-touch writes (bench-cbw write): rand4k =
#    RAND_COUNT 4 KiB writes, each in a different 64 KiB cluster
#    (random order), so each is the first touch both for our 4 KiB
#    blocks and for qemu's 64 KiB clusters; seq1m = SEQ_COUNT 1 MiB
#    writes in order from offset 0.  QD in flight, one connection, the
#    same client and the same offsets (seed = run number) for every
#    configuration:
#      plain   nbdkit file (no filter)
#      nobk    nbdkit --filter=checkpoint file, no backup  (baseline)
#      bk      the same during a full backup (backup-begin; backup-end
#              after the load; scratch=WORK)
#      qsrc    qemu-storage-daemon exporting the file node  (qsd baseline)
#      qcbw    qemu-storage-daemon exporting a copy-before-write node
#              over it, target a fresh sparse raw file in WORK
#      rd      nbdkit file: the same offsets READ instead of written:
#              the floor of the reads that a copy adds
#    The throughput figure is the writes alone (the client's flush
#    afterwards is logged, not counted).  Cache states (CACHE):
#      cold    sync + drop_caches before each measurement: the old data
#              that a copy reads comes from the disk
#      warm    the whole disk file read into the page cache once (in
#              4 KiB folios: see preload), then only sync between
#              measurements: isolates the CPU and syscall cost
#    Runs are interleaved (each run measures every configuration once,
#    in an order rotated by the run number).
#
# 2. Incremental read.  Per run, one filter server on the same disk:
#    a full backup export read in full; then for each F in FRACTIONS:
#    checkpoint-create, F% of the disk written as scattered distinct
#    64 KiB chunks, backup-begin incremental from that checkpoint, and
#    only the changed extents read (block status, then pread of the
#    extents without HOLE: bench-cbw read).  Always cold.  Readers:
#      filter  bench-cbw read on the backup export
#      plain   the same extents (block status from the backup export)
#              read through a plain nbdkit file server on the same file:
#              the same I/O pattern without the filter
#      nbdcopy nbdcopy EXPORT null: (full read only: nbdcopy skips only
#              ZERO extents, so on an incremental export it reads the
#              HOLE-only, unchanged chunks too, i.e. the whole disk)
#    Throughput is data bytes read / time (block status included).
#
# Knobs (environment): RUNS=5, DISK=4G, QD=16, RAND_COUNT (default
# DISK/64K: every cluster once), SEQ_COUNT=1024 (1 GiB), CACHE="cold
# warm", FRACTIONS="1 10", REQSIZE=1M (reader's largest request),
# QSD=auto|0, WORKDIR (default a new dir under ${TMPDIR:-/tmp}; must be
# a local disk file system, not tmpfs), KEEP=1 (keep disk + logs).
# With the defaults it takes about 4-5 minutes on 2 cores (plus ~30 s
# to create the disk unless WORKDIR holds one from KEEP=1).
# Raw results: WORK/logs/cbw.txt and WORK/logs/incr.txt.

set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 BUILDDIR" >&2
    exit 2
fi
BUILD=$(cd "$1" && pwd)
SRC=$(cd "$(dirname "$0")" && pwd)

RUNS=${RUNS:-5}
DISK=${DISK:-4G}
QD=${QD:-16}
SEQ_COUNT=${SEQ_COUNT:-1024}
CACHE=${CACHE:-cold warm}
FRACTIONS=${FRACTIONS:-1 10}
REQSIZE=${REQSIZE:-1M}
QSD=${QSD:-auto}
KEEP=${KEEP:-0}

to_bytes () {
    local s=$1
    case $s in
        *K|*k) echo $(( ${s%?} << 10 )) ;;
        *M|*m) echo $(( ${s%?} << 20 )) ;;
        *G|*g) echo $(( ${s%?} << 30 )) ;;
        *)     echo "$s" ;;
    esac
}
DISK_BYTES=$(to_bytes "$DISK")
RAND_COUNT=${RAND_COUNT:-$(( DISK_BYTES / 65536 ))}

FILTER=$BUILD/filters/checkpoint/.libs/nbdkit-checkpoint-filter.so
if [ ! -f "$FILTER" ]; then
    for d in common/utils common/bitmap common/state common/qmp; do
        [ -d "$BUILD/$d" ] && make -s -C "$BUILD/$d" >/dev/null
    done
    make -s -C "$BUILD/filters/checkpoint" nbdkit-checkpoint-filter.la >/dev/null
fi
[ -f "$FILTER" ] || { echo "$0: $FILTER not built" >&2; exit 1; }
for p in nbdkit nbdcopy python3 cc pkg-config; do
    command -v $p >/dev/null || { echo "$0: $p not found" >&2; exit 1; }
done
if [ "$QSD" = auto ]; then
    if command -v qemu-storage-daemon >/dev/null; then QSD=1; else QSD=0; fi
fi

WORK=${WORKDIR:-$(mktemp -d "${TMPDIR:-/tmp}/nbdkit-bench-backup.XXXXXX")}
mkdir -p "$WORK" "$WORK/scratch"
WORK=$(cd "$WORK" && pwd)
LOG=$WORK/logs
mkdir -p "$LOG"
if [ "$(stat -f -c %T "$WORK")" = tmpfs ]; then
    echo "$0: warning: $WORK is on tmpfs: 'cold' means nothing there" >&2
fi

BC=$WORK/bench-cbw
cc -O2 -Wall -o "$BC" "$SRC/bench-cbw.c" $(pkg-config --cflags --libs libnbd)

# The QMP client: send commands (JSON arguments), print each answer's
# "return" on a line, exit 1 on an error answer.
QMP=$WORK/qmp.py
cat > "$QMP" <<'EOF'
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
f = s.makefile("rw")
def answer():
    while True:
        m = json.loads(f.readline())
        if "event" not in m:
            return m
answer()                                   # greeting
for c in [{"execute": "qmp_capabilities"}] + [json.loads(a) for a in sys.argv[2:]]:
    f.write(json.dumps(c) + "\n"); f.flush()
    r = answer()
    if "error" in r:
        sys.exit("qmp: %s -> %s" % (json.dumps(c), json.dumps(r["error"])))
    if c["execute"] != "qmp_capabilities":
        print(json.dumps(r["return"]))
EOF
qmp () { python3 "$QMP" "$@"; }

# Processes we started: name -> pid.  Only these are ever killed.
declare -A PIDS=()

alive ()
{
    local state
    state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}

stop_pid ()
{
    local name=$1 pid=${PIDS[$1]:-} i
    [ -n "$pid" ] || return 0
    for (( i = 0; i < 500; i++ )); do
        alive "$pid" || break
        [ "$i" = 100 ] && kill "$pid" 2>/dev/null
        sleep 0.02
    done
    if alive "$pid"; then
        echo "$0: $name (pid $pid) did not stop; killing it" >&2
        kill -9 "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    unset "PIDS[$name]"
}

# stop NAME: quit through QMP if it has a monitor, else SIGTERM.
stop ()
{
    local name=$1
    [ -n "${PIDS[$name]:-}" ] || return 0
    if [ -S "$WORK/$name.qmp" ]; then
        qmp "$WORK/$name.qmp" '{"execute":"quit"}' >/dev/null 2>&1 ||
            kill "${PIDS[$name]}" 2>/dev/null || true
    else
        kill "${PIDS[$name]}" 2>/dev/null || true
    fi
    stop_pid "$name"
    rm -f "$WORK/$name.sock" "$WORK/$name.qmp" "$WORK/$name.pid"
}

cleanup ()
{
    local name
    set +e
    for name in "${!PIDS[@]}"; do
        kill "${PIDS[$name]}" 2>/dev/null
        stop_pid "$name"
    done
    rm -f "$WORK"/*.sock "$WORK"/*.qmp "$WORK"/*.pid "$WORK"/qscratch.raw
    [ "$KEEP" = 1 ] || rm -f "$WORK/disk.img"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_sock ()
{
    local i
    for (( i = 0; i < 200; i++ )); do
        [ -S "$1" ] && return 0
        sleep 0.05
    done
    echo "$0: $1 did not appear" >&2
    return 1
}

# start_nbdkit NAME ARGS...: daemonised, serving $WORK/NAME.sock.
start_nbdkit ()
{
    local name=$1
    shift
    rm -f "$WORK/$name.sock" "$WORK/$name.pid" "$WORK/$name.qmp"
    nbdkit -U "$WORK/$name.sock" -P "$WORK/$name.pid" "$@" \
        2>>"$LOG/nbdkit-$name.err"
    wait_sock "$WORK/$name.sock"
    local i
    for (( i = 0; i < 100; i++ )); do [ -s "$WORK/$name.pid" ] && break; sleep 0.05; done
    PIDS[$name]=$(cat "$WORK/$name.pid")
    if [[ " $* " == *" qmp="* ]]; then wait_sock "$WORK/$name.qmp"; fi
}

start_filter ()
{
    start_nbdkit "$1" --filter="$FILTER" file "$WORK/disk.img" \
        node-name=d0 qmp="$WORK/$1.qmp" scratch="$WORK/scratch"
}

# start_qsd NAME cbw|src: export "cbw" (copy-before-write over the
# file, target a fresh sparse raw file) or "src" (the file node).
start_qsd ()
{
    local name=$1 kind=$2 args=()
    rm -f "$WORK/$name.sock" "$WORK/$name.qmp" "$WORK/qscratch.raw"
    args=(--blockdev driver=file,node-name=src,filename="$WORK/disk.img")
    if [ "$kind" = cbw ]; then
        truncate -s "$DISK_BYTES" "$WORK/qscratch.raw"
        args+=(--blockdev driver=file,node-name=tmp,filename="$WORK/qscratch.raw"
               --blockdev driver=copy-before-write,node-name=cbw,file=src,target=tmp)
    fi
    qemu-storage-daemon "${args[@]}" \
        --nbd-server addr.type=unix,addr.path="$WORK/$name.sock" \
        --export type=nbd,id=e,node-name="$kind",name="$kind",writable=on \
        --chardev socket,id=m,path="$WORK/$name.qmp",server=on,wait=off \
        --monitor chardev=m 2>>"$LOG/qsd-$name.err" >&2 &
    PIDS[$name]=$!
    wait_sock "$WORK/$name.sock"
    wait_sock "$WORK/$name.qmp"
}

DROPPED=yes
drop_caches ()
{
    sync
    if ! { echo 3 > /proc/sys/vm/drop_caches; } 2>/dev/null; then
        DROPPED=no
    fi
}

# Load the whole disk file into the page cache, in small folios: with
# readahead (e.g. dd), a kernel with large page-cache folios (6.16+ on
# ext4) caches it in folios of up to 2 MiB, and then every 4 KiB write
# dirties a whole folio: writeback and dirty throttling make 4 KiB
# writes ~10x slower than into uncached space, for every server alike.
# POSIX_FADV_RANDOM turns readahead off, so the folios are single pages.
preload ()
{
    python3 - "$1" <<'PYEOF'
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
while os.read(fd, 1 << 20):
    pass
PYEOF
}

# cold: nothing of the disk cached.  warm: the disk was preloaded at
# the start of the section and stays cached (23 GiB of RAM is plenty;
# the writes only dirty pages that are already there); only sync.
prepare_cache ()
{
    if [ "$1" = cold ]; then drop_caches; else sync; fi
}

uri () { echo "nbd+unix:///$2?socket=$WORK/$1.sock"; }

# The disk: non-zero data everywhere (allocated, so reads are real).
if [ ! -f "$WORK/disk.img" ] || [ "$(stat -c %s "$WORK/disk.img")" != "$DISK_BYTES" ]; then
    python3 - "$WORK/disk.img" "$DISK_BYTES" <<'EOF'
import os, sys
path, size = sys.argv[1], int(sys.argv[2])
block = bytearray(os.urandom(1 << 20))
with open(path, "wb") as f:
    for i in range(size >> 20):
        block[0:8] = i.to_bytes(8, "little")
        f.write(block)
    f.flush(); os.fsync(f.fileno())
EOF
fi

echo "bench-backup: $(nproc) CPUs, disk $DISK ($WORK), RUNS=$RUNS QD=$QD"
echo "  rand4k: $RAND_COUNT first-touch 4 KiB writes; seq1m: $SEQ_COUNT x 1 MiB; cache: $CACHE"
echo "  nbdkit $(nbdkit --version | awk '{print $2}'), $( [ "$QSD" = 1 ] && qemu-storage-daemon --version | head -1 || echo 'no qemu-storage-daemon')"
date -u +"  started %Y-%m-%dT%H:%M:%SZ"
t_start=$SECONDS

# ---------------------------------------------------------------- CBW
CBW_LOG=$LOG/cbw.txt
: > "$CBW_LOG"
configs=(plain nobk bk rd)
[ "$QSD" = 1 ] && configs+=(qsrc qcbw)
ncfg=${#configs[@]}

start_nbdkit plain file "$WORK/disk.img"
start_filter flt

for cache in $CACHE; do
    if [ "$cache" = warm ]; then
        drop_caches
        preload "$WORK/disk.img"
    fi
    for (( run = 1; run <= RUNS; run++ )); do
        for mode in rand4k seq1m; do
            count=$RAND_COUNT
            [ "$mode" = seq1m ] && count=$SEQ_COUNT
            for (( k = 0; k < ncfg; k++ )); do
                cfg=${configs[$(( (k + run) % ncfg ))]}
                op=write extra=""
                case $cfg in
                    plain) target=$(uri plain "") ;;
                    rd)    target=$(uri plain ""); op=pread ;;
                    nobk)  target=$(uri flt d0) ;;
                    bk)    target=$(uri flt d0)
                           qmp "$WORK/flt.qmp" \
                               '{"execute":"backup-begin","arguments":{"id":"bk"}}' >/dev/null ;;
                    qsrc)  start_qsd qsd src; target=$(uri qsd src) ;;
                    qcbw)  start_qsd qsd cbw; target=$(uri qsd cbw) ;;
                esac
                prepare_cache "$cache"
                out=$("$BC" "$op" "$target" "$mode" "$DISK_BYTES" "$count" "$QD" "$run")
                case $cfg in
                    bk) extra=$(qmp "$WORK/flt.qmp" '{"execute":"query-backups"}' |
                                python3 -c 'import json,sys; b=json.load(sys.stdin)[0]; print("copied=%d status=%s" % (b["copied-bytes"], b["status"]))')
                        qmp "$WORK/flt.qmp" \
                            '{"execute":"backup-end","arguments":{"id":"bk"}}' >/dev/null ;;
                    qsrc|qcbw)
                        extra="scratch_alloc=$(du -B1 "$WORK/qscratch.raw" 2>/dev/null | cut -f1 || echo 0)"
                        stop qsd ;;
                esac
                echo "cache=$cache run=$run cfg=$cfg ${out#read } $extra" >> "$CBW_LOG"
            done
        done
    done
done
stop flt
stop plain
t_cbw=$(( SECONDS - t_start ))

# ---------------------------------------------------------------- incremental
INC_LOG=$LOG/incr.txt
: > "$INC_LOG"
nbdcopy_time ()
{
    local t0 t1
    t0=$(date +%s.%N)
    nbdcopy "$1" null:
    t1=$(date +%s.%N)
    python3 -c "print('%.4f' % ($t1 - $t0))"
}

# read_one RUN WHAT READER EXPORT-URI [EXTRA]: one cold read, logged.
read_one ()
{
    local run=$1 what=$2 reader=$3 exp=$4 extra=${5:-} out
    prepare_cache cold
    case $reader in
        filter)  out=$("$BC" read "$exp" "$REQSIZE" "$QD") ;;
        plain)   if [ "$what" = full ]; then
                     out=$("$BC" read "$(uri rdp "")" "$REQSIZE" "$QD")
                 else   # the backup's extents, read from the plain server
                     out=$("$BC" read "$exp" "$REQSIZE" "$QD" "$(uri rdp "")")
                 fi ;;
        nbdcopy) out="data_bytes=$DISK_BYTES secs=$(nbdcopy_time "$exp")" ;;
    esac
    echo "run=$run what=$what reader=$reader $extra $out" >> "$INC_LOG"
}

for (( run = 1; run <= RUNS; run++ )); do
    start_filter inc
    start_nbdkit rdp -r file "$WORK/disk.img"
    qmp "$WORK/inc.qmp" '{"execute":"backup-begin","arguments":{"id":"full"}}' >/dev/null
    # The first cold read after a pause tends to be slow here: rotate
    # the readers' order so that no reader is always first.
    readers=(filter plain nbdcopy)
    for (( k = 0; k < 3; k++ )); do
        read_one "$run" full "${readers[$(( (k + run) % 3 ))]}" "$(uri inc d0@full)"
    done
    qmp "$WORK/inc.qmp" '{"execute":"backup-end","arguments":{"id":"full"}}' >/dev/null
    for f in $FRACTIONS; do
        chunks=$(( DISK_BYTES / 65536 * f / 100 ))
        qmp "$WORK/inc.qmp" "{\"execute\":\"checkpoint-create\",\"arguments\":{\"name\":\"c$f\"}}" >/dev/null
        "$BC" write "$(uri inc d0)" chunks64k "$DISK_BYTES" "$chunks" "$QD" $(( 1000 + run )) >/dev/null
        qmp "$WORK/inc.qmp" "{\"execute\":\"backup-begin\",\"arguments\":{\"id\":\"i$f\",\"incremental\":\"c$f\",\"checkpoint\":{\"name\":\"n$f\"}}}" >/dev/null
        readers=(filter plain)
        for (( k = 0; k < 2; k++ )); do
            read_one "$run" "inc$f" "${readers[$(( (k + run) % 2 ))]}" \
                "$(uri inc "d0@i$f")" "changed=$(( chunks * 65536 ))"
        done
        qmp "$WORK/inc.qmp" "{\"execute\":\"backup-end\",\"arguments\":{\"id\":\"i$f\"}}" >/dev/null
    done
    stop inc
    stop rdp
done
t_inc=$(( SECONDS - t_start - t_cbw ))

# ---------------------------------------------------------------- table
python3 - "$CBW_LOG" "$INC_LOG" "$DROPPED" "$t_cbw" "$t_inc" <<'EOF'
import re, statistics as st, sys
from collections import defaultdict
cbw_log, inc_log, dropped, t_cbw, t_inc = sys.argv[1:6]

def parse(line):
    return dict(re.findall(r"(\w+)=(\S+)", line))

def med(v): return st.median(v)
def spread(v):
    m = med(v)
    return (max(v) - min(v)) / m if m else 0.0

rows = [parse(l) for l in open(cbw_log) if l.strip()]
val = defaultdict(dict)          # (cache, mode, cfg) -> run -> MiB/s
for r in rows:
    val[(r["cache"], r["mode"], r["cfg"])][r["run"]] = float(r["mibps"])
names = {"plain": "nbdkit file, no filter", "nobk": "filter, no backup",
         "bk": "filter, backup active", "rd": "(reads of the same blocks)",
         "qsrc": "qsd, no cbw", "qcbw": "qsd, copy-before-write"}
print()
print("Copy-before-write, first-touch writes (MiB/s; median [min-max] "
      "over runs; caches dropped: %s)" % dropped)
print("%-6s %-6s %-28s %9s %21s %7s" % ("cache", "mode", "configuration",
                                         "median", "min-max", "spread"))
for cache in dict.fromkeys(r["cache"] for r in rows):
    for mode in ("rand4k", "seq1m"):
        for cfg in ("plain", "nobk", "bk", "rd", "qsrc", "qcbw"):
            v = list(val[(cache, mode, cfg)].values())
            if not v:
                continue
            print("%-6s %-6s %-28s %9.1f %10.1f-%-10.1f %6.0f%%" % (
                cache, mode, names[cfg], med(v), min(v), max(v),
                100 * spread(v)))

def ratio(cache, mode, a, b):
    A, B = val[(cache, mode, a)], val[(cache, mode, b)]
    rs = [A[k] / B[k] for k in A if k in B and B[k] > 0]
    return rs

print()
print("Ratios (median of per-run ratios [min-max])")
print("%-6s %-6s %-44s %7s %15s" % ("cache", "mode", "ratio", "median", "min-max"))
for cache in dict.fromkeys(r["cache"] for r in rows):
    for mode in ("rand4k", "seq1m"):
        for a, b, label, target in (
                ("bk", "nobk", "ours: backup / no backup", 0.5 if mode == "rand4k" else None),
                ("bk", "rd", "ours backup / reads of the same blocks", None),
                ("qcbw", "qsrc", "qsd: cbw / no cbw", None),
                ("bk", "qcbw", "ours backup / qsd cbw (>=1: ours faster)", 1.0),
                ("nobk", "plain", "filter no backup / no filter", None)):
            rs = ratio(cache, mode, a, b)
            if not rs:
                continue
            verdict = ""
            if target is not None:
                verdict = "  target >= %.2f: %s" % (target, "met" if med(rs) >= target else "NOT met")
            print("%-6s %-6s %-44s %7.3f %7.3f-%-7.3f%s" % (
                cache, mode, label, med(rs), min(rs), max(rs), verdict))

# sanity: what the copies saved
for r in rows:
    if r["cfg"] == "bk" and "copied" in r:
        exp = int(r["bytes"])
        if int(r["copied"]) != exp or r.get("status") != "active":
            print("NOTE: backup copied %s bytes for %s written (run %s %s %s), status %s"
                  % (r["copied"], exp, r["run"], r["cache"], r["mode"], r.get("status")))

inc = [parse(l) for l in open(inc_log) if l.strip()]
if inc:
    tp = defaultdict(dict)       # (what, reader) -> run -> MiB/s
    secs = defaultdict(dict)
    data = defaultdict(dict)
    for r in inc:
        s = float(r["secs"]); d = int(r["data_bytes"])
        tp[(r["what"], r["reader"])][r["run"]] = d / s / 1048576
        secs[(r["what"], r["reader"])][r["run"]] = s
        data[(r["what"], r["reader"])][r["run"]] = d
    print()
    print("Incremental read, cold cache (MiB/s of data read, block status included)")
    print("%-6s %-8s %10s %9s %17s %8s %9s %9s" % ("what", "reader", "read MiB", "median",
          "min-max", "spread", "secs", "vs full"))
    whats = list(dict.fromkeys(r["what"] for r in inc))
    for what in whats:
        for reader in ("filter", "plain", "nbdcopy"):
            v = tp[(what, reader)]
            if not v:
                continue
            full = tp[("full", reader)]
            rs = [v[k] / full[k] for k in v if k in full]
            print("%-6s %-8s %10.1f %9.1f %8.1f-%-8.1f %7.0f%% %9.3f %9.3f" % (
                what, reader, med(data[(what, reader)].values()) / 1048576,
                med(v.values()), min(v.values()), max(v.values()),
                100 * spread(list(v.values())), med(secs[(what, reader)].values()),
                med(rs)))
    print()
    for what in whats:
        f, p = tp[(what, "filter")], tp[(what, "plain")]
        rs = [f[k] / p[k] for k in f if k in p]
        if rs:
            print("%s: filter / plain server, the same reads = %.3f [%.3f-%.3f]"
                  % (what, med(rs), min(rs), max(rs)))
    for r in inc:
        if "changed" in r and int(r["data_bytes"]) != int(r["changed"]):
            print("NOTE: run %s %s %s: read %s bytes, %s changed"
                  % (r["run"], r["what"], r["reader"], r["data_bytes"], r["changed"]))
    for what in whats:
        if what == "full":
            continue
        rs = [tp[(what, "filter")][k] / tp[("full", "filter")][k]
              for k in tp[(what, "filter")] if k in tp[("full", "filter")]]
        ts = [secs[(what, "filter")][k] / secs[("full", "filter")][k]
              for k in secs[(what, "filter")] if k in secs[("full", "filter")]]
        print("%s: filter per-byte throughput / full read = %.3f [%.3f-%.3f] "
              "(target >= 0.90: %s); time / full-read time = %.3f"
              % (what, med(rs), min(rs), max(rs),
                 "met" if med(rs) >= 0.9 else "NOT met", med(ts)))
print()
print("time: cbw %ss, incremental %ss" % (t_cbw, t_inc))
EOF
echo "raw results: $LOG"
