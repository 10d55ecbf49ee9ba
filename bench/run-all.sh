#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# Run the nbdkit-checkpoint benchmarks and print a results table.
#
#   bench/run-all.sh BUILDDIR
#
# BUILDDIR is a configured build tree (the one `make` ran in).  This
# script builds what it needs there (common/*, the filter, bench/), so
# it works even when an unrelated part of the tree does not build.
# See bench/README.md for what is measured and what each figure means.
#
# Knobs (environment):
#   RUNS=7        interleaved repetitions of each throughput measurement
#   SECS=1.5      seconds per throughput measurement
#   REGION=1G     disk size for the throughput runs (the written region)
#   QD=16         requests in flight
#   PLUGINS="memory file"   plugins under the throughput runs
#   CKPTS=1000    checkpoints in the scale scenario
#   WRITES=512    scattered 4 KiB writes between consecutive checkpoints
#   SCALE_DISK=1T size of the sparse disk of the scale scenario
#   WORKDIR=DIR   where disks, sockets and logs go (default: a new
#                 directory under ${TMPDIR:-/tmp}; must be a local file
#                 system that takes a sparse 1 TiB file)
#   KEEP=1        keep the disk images (default: only the logs are kept)
#   PERF=auto     count the server's instructions and cycles per write
#                 with `perf stat` (auto: when perf works here; 0: never)
#   CRASH_MODES=1 also run bench-crash-modes.sh (what crash-safety=
#                 costs a write; 0: skip it), in WORK, ROUNDS=RUNS
#
# Takes about 7 minutes with the defaults (a minute or two of it is
# removing the scale scenario's disk images).

set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 BUILDDIR" >&2
    exit 2
fi
BUILD=$(cd "$1" && pwd)
SRC=$(cd "$(dirname "$0")" && pwd)

RUNS=${RUNS:-7}
SECS=${SECS:-1.5}
REGION=${REGION:-1G}
QD=${QD:-16}
PLUGINS=${PLUGINS:-memory file}
CKPTS=${CKPTS:-1000}
WRITES=${WRITES:-512}
SCALE_DISK=${SCALE_DISK:-1T}
KEEP=${KEEP:-0}
PERF=${PERF:-auto}
CRASH_MODES=${CRASH_MODES:-1}

# Build what the benchmarks need, and only that.
for d in common/utils common/bitmap common/state common/qmp; do
    make -s -C "$BUILD/$d" >/dev/null
done
make -s -C "$BUILD/filters/checkpoint" nbdkit-checkpoint-filter.la >/dev/null
make -s -C "$BUILD/bench" bench-write bench-ckpt >/dev/null

FILTER=$BUILD/filters/checkpoint/.libs/nbdkit-checkpoint-filter.so
BW=$BUILD/bench/bench-write
BC=$BUILD/bench/bench-ckpt
for f in "$FILTER" "$BW" "$BC"; do
    [ -x "$f" ] || [ -f "$f" ] || { echo "$0: $f not built" >&2; exit 1; }
done
command -v nbdkit >/dev/null || { echo "$0: nbdkit not found" >&2; exit 1; }
if [ "$PERF" = auto ]; then
    if perf stat -x, -e instructions:u,cycles -o /dev/null -- true \
           >/dev/null 2>&1; then
        PERF=1
    else
        PERF=0
    fi
fi

WORK=${WORKDIR:-$(mktemp -d "${TMPDIR:-/tmp}/nbdkit-bench.XXXXXX")}
mkdir -p "$WORK"
LOG=$WORK/logs
mkdir -p "$LOG"

# Servers we started: name -> pid.  Only these are ever killed.
declare -A PIDS=()

# Is PID running?  A daemonised nbdkit that has exited stays a zombie
# until init reaps it, which can take a while: a zombie counts as gone.
alive ()
{
    local state
    state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}

stop_server ()
{
    local name=$1 pid=${PIDS[$1]:-} i
    [ -n "$pid" ] || return 0
    kill "$pid" 2>/dev/null || true
    for (( i = 0; i < 3000; i++ )); do
        alive "$pid" || break
        sleep 0.02
    done
    if alive "$pid"; then
        echo "$0: server $name (pid $pid) did not stop; killing it" >&2
        kill -9 "$pid" 2>/dev/null || true
    fi
    unset "PIDS[$name]"
}

cleanup ()
{
    local name
    set +e
    for name in "${!PIDS[@]}"; do
        stop_server "$name"
    done
    if [ "$KEEP" != 1 ]; then
        rm -f "$WORK"/*.img
        rm -rf "$WORK"/state-*
    fi
    rm -f "$WORK"/*.sock "$WORK"/*.qmp "$WORK"/*.pid "$WORK"/perf.txt
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_server NAME NBDKIT-ARGS...: a daemonised nbdkit serving
# $WORK/NAME.sock, its pid in PIDS[NAME].
start_server ()
{
    local name=$1 i
    shift
    rm -f "$WORK/$name.sock" "$WORK/$name.pid" "$WORK/$name.qmp"
    nbdkit -U "$WORK/$name.sock" -P "$WORK/$name.pid" "$@" \
        2>>"$LOG/nbdkit-$name.err"
    for (( i = 0; i < 100; i++ )); do
        [ -s "$WORK/$name.pid" ] && [ -S "$WORK/$name.sock" ] && break
        sleep 0.1
    done
    [ -s "$WORK/$name.pid" ] || { echo "$0: nbdkit $name did not start" >&2
                                 cat "$LOG/nbdkit-$name.err" >&2; exit 1; }
    PIDS[$name]=$(cat "$WORK/$name.pid")
    # The monitor socket, when there is one.
    if [[ " $* " == *" qmp="* ]]; then
        for (( i = 0; i < 100; i++ )); do
            [ -S "$WORK/$name.qmp" ] && break
            sleep 0.1
        done
    fi
}

# What one throughput configuration is: the nbdkit arguments after the
# plugin's, given the plugin, and the number of checkpoints to create.
configs="plain f0 f1 f100 f1000 f1000s"
ncheckpoints () { case $1 in plain|f0) echo 0 ;; f1) echo 1 ;; f100) echo 100 ;;
                               f1000|f1000s) echo 1000 ;; esac; }

start_config ()
{
    local plugin=$1 config=$2 name="$1-$2" args=()
    case $plugin in
        memory) args=(memory "$REGION") ;;
        file)   rm -f "$WORK/$name.img"; truncate -s "$REGION" "$WORK/$name.img"
                args=(file "$WORK/$name.img") ;;
    esac
    case $config in
        plain) start_server "$name" "${args[@]}" ;;
        f1000s)
            rm -rf "$WORK/state-$name"
            start_server "$name" --filter="$FILTER" "${args[@]}" \
                qmp="$WORK/$name.qmp" node-name=d0 state="$WORK/state-$name" ;;
        *)  start_server "$name" --filter="$FILTER" "${args[@]}" \
                qmp="$WORK/$name.qmp" node-name=d0 ;;
    esac
    # Precondition: every block written once (the plugin allocated, and
    # the recording bitmap, if any, fully dirty: the steady state).
    "$BW" "$WORK/$name.sock" fill "$REGION" 0 "$QD" >>"$LOG/fill.txt"
    local n; n=$(ncheckpoints "$config")
    if [ "$n" -gt 0 ]; then
        "$BC" setup "$WORK/$name.qmp" "$n" >>"$LOG/setup-$name.txt"
        # Fill again so that the newest checkpoint's bitmap is dirty too.
        "$BW" "$WORK/$name.sock" fill "$REGION" 0 "$QD" >>"$LOG/fill.txt"
    fi
}

echo "nbdkit-checkpoint benchmarks: $(nproc) CPUs, work dir $WORK"
echo "throughput: RUNS=$RUNS x SECS=$SECS, REGION=$REGION, QD=$QD, plugins: $PLUGINS, perf: $PERF"
date -u +"started %Y-%m-%dT%H:%M:%SZ"
start_time=$SECONDS

WRITE_RESULTS=$LOG/write.txt
: > "$WRITE_RESULTS"
read -r -a cfg_list <<< "$configs"
ncfg=${#cfg_list[@]}
for plugin in $PLUGINS; do
    for config in "${cfg_list[@]}"; do
        start_config "$plugin" "$config"
    done
    # Interleaved: each run measures every configuration once, starting
    # at a different one, so that slow drifts of the machine hit all of
    # them alike.  Every configuration of a run uses the same seed.
    for (( run = 1; run <= RUNS; run++ )); do
        for mode in rand4k seq1m; do
            for (( k = 0; k < ncfg; k++ )); do
                config=${cfg_list[$(( (k + run) % ncfg ))]}
                pid=${PIDS[$plugin-$config]}
                cmd=("$BW" "$WORK/$plugin-$config.sock" "$mode" "$REGION"
                     "$SECS" "$QD" "$run" "$pid")
                if [ "$PERF" = 1 ]; then
                    # Counts the server (all its threads) while the load runs.
                    out=$(perf stat -x, -e instructions:u,cycles -p "$pid" \
                          -o "$WORK/perf.txt" -- "${cmd[@]}")
                else
                    out=$("${cmd[@]}")
                fi
                ops=$(sed -n 's/.* ops=\([0-9]*\).*/\1/p' <<< " $out")
                mibps=$(sed -n 's/.* mibps=\([0-9.]*\).*/\1/p' <<< "$out")
                iops=$(sed -n 's/.* iops=\([0-9.]*\).*/\1/p' <<< "$out")
                us=$(sed -n 's/.* srv_us_per_op=\([0-9.]*\).*/\1/p' <<< "$out")
                uinstr=- cyc=-
                if [ "$PERF" = 1 ] && [ "${ops:-0}" -gt 0 ]; then
                    uinstr=$(awk -F, -v ops="$ops" '$3 ~ /^instructions/ \
                        { printf "%.0f", $1 / ops }' "$WORK/perf.txt")
                    cyc=$(awk -F, -v ops="$ops" '$3 ~ /^cycles/ \
                        { printf "%.0f", $1 / ops }' "$WORK/perf.txt")
                fi
                echo "$plugin $mode $config $run $mibps $iops ${us:--}" \
                     "${uinstr:--} ${cyc:--}" >> "$WRITE_RESULTS"
            done
        done
        echo "  $plugin: run $run/$RUNS done ($(( SECONDS - start_time )) s)"
    done
    for config in "${cfg_list[@]}"; do
        stop_server "$plugin-$config"
        rm -f "$WORK/$plugin-$config.img"
        rm -rf "$WORK/state-$plugin-$config"
    done
done

# The floor under one durable state save on this disk.
"$BC" fsync "$WORK" 50 > "$LOG/fsync.txt"

# The scale scenario, without and with state=.
for variant in nostate state; do
    name=scale-$variant
    rm -f "$WORK/$name.img"
    truncate -s "$SCALE_DISK" "$WORK/$name.img"
    extra=()
    if [ $variant = state ]; then
        rm -rf "$WORK/state-$name"
        extra=(state="$WORK/state-$name")
    fi
    start_server "$name" --filter="$FILTER" file "$WORK/$name.img" \
        qmp="$WORK/$name.qmp" node-name=d0 "${extra[@]}"
    "$BC" scale "$WORK/$name.sock" "$WORK/$name.qmp" "${PIDS[$name]}" \
        "$CKPTS" "$WRITES" 1 "$WORK" > "$LOG/$name.txt"
    # Shutdown: with state= the filter saves every bitmap then.
    t0=$(date +%s%N)
    stop_server "$name"
    t1=$(date +%s%N)
    echo "shutdown ms=$(( (t1 - t0) / 1000000 ))" >> "$LOG/$name.txt"
    echo "  $name done ($(( SECONDS - start_time )) s); removing its image" \
         "(ext4 frees the scattered blocks: up to a minute)"
    rm -f "$WORK/$name.img"
done

if [ "$CRASH_MODES" = 1 ]; then
    echo "  crash-safety modes ($(( SECONDS - start_time )) s)"
    ROUNDS=$RUNS WORKDIR="$WORK/crash-modes" "$SRC/bench-crash-modes.sh" \
        "$BUILD" > "$LOG/crash-modes.txt"
fi

echo "finished in $(( SECONDS - start_time )) s; raw results in $LOG"
echo
python3 "$SRC/summarize.py" "$LOG"
if [ "$CRASH_MODES" = 1 ]; then
    echo
    echo "crash-safety= modes (bench-crash-modes.sh):"
    sed -n '/^load average/p; /^medians/,$p' "$LOG/crash-modes.txt"
fi
