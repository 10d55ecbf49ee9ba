#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# Soak test: one nbdkit (the qmpdisk plugin under the checkpoint filter,
# DISKS disks, a state directory) under mixed load for SECONDS (default
# 300): guest writers, pull backups read and checked against the
# writers' models, checkpoint churn, transactions, hot-add and
# blockdev-del, QMP and NBD clients that vanish mid-command.  Every
# disk and every export is checked against its model, and nbdkit's
# descriptors, threads and RSS must not grow after warm-up.  See
# soak.py for what runs and the margins.  Loopback (Unix sockets)
# only; bounded in time (SECONDS + 120 s at most, then it fails).
#
#     bench/soak.sh [SECONDS [DISKS]]
#
# Under make check (tests/test-soak.sh) PLUGIN and FILTER are set;
# by hand they default to the build tree next to this script.
bench="$(cd "$(dirname "$0")" && pwd)"
srcdir="$bench/../tests"
abs_srcdir="$(cd "$srcdir" && pwd)"
source "$srcdir/functions.sh"
set -e

seconds="${1:-300}"
ndisks="${2:-3}"
: "${PLUGIN:=$bench/../plugins/qmpdisk/.libs/nbdkit-qmpdisk-plugin.so}"
: "${FILTER:=$bench/../filters/checkpoint/.libs/nbdkit-checkpoint-filter.so}"
requires_built "$PLUGIN" "$FILTER"
requires nbdkit --version
requires $PY -c 'import nbd'
[[ "$seconds" =~ ^[0-9]+$ ]] && [ "$seconds" -ge 40 ] ||
    fail "SECONDS must be a number of at least 40 (a warm-up and an epoch)"
[[ "$ndisks" =~ ^[1-9]$ ]] || fail "DISKS must be 1 to 9"
tmpdir

args=()
for (( i = 0; i < ndisks; i++ )); do
    head -c 8M /dev/urandom > "$tmp/d$i.img"
    args+=(disk="d$i:$tmp/d$i.img")
done
# One worker thread per connection (SOAK_THREADS): with more, nbdkit
# 1.32.5 itself aborts (connections.c:402, raw_send_socket: Assertion
# 'sock >= 0') when a client drops its connection while a reply is
# being sent, as the vanishing clients here do: the worker that reads
# the client's EOF closes the socket under the one still sending.
# Connections still run in parallel with each other.
# A fixed mmap threshold: freed buffers of 128 KiB and more go back to
# the system, so RSS follows live memory and growth means a leak (with
# glibc's sliding threshold, RSS climbs to the high-water mark of every
# malloc arena, tens of MiB here, and then wanders).
export MALLOC_MMAP_THRESHOLD_=131072
# Under a sanitizer (make check in a sanitizer build) malloc is the
# sanitizer's: freed memory waits in its quarantine (256 MiB by default)
# and the threshold above means nothing, so RSS is no measure of a leak
# there (the sanitizer reports leaks itself).  A small quarantine and a
# wide RSS margin then; descriptors and threads stay exact.
if [ -n "${NC_SANITIZER:-}" ] && [ "$NC_SANITIZER" != none ]; then
    export ASAN_OPTIONS="quarantine_size_mb=8${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
    export SOAK_RSS_MARGIN_KIB=$((128 * 1024))
fi
# The server of the disk behind the nbd node (soak.py nbd_node).
start_nbdkit backend --threads="${SOAK_THREADS:-1}" memory 2M
backend=$sock
start_nbdkit kit --threads="${SOAK_THREADS:-1}" --filter="$FILTER" \
             "$PLUGIN" "${args[@]}" qmp="$tmp/q.sock" state="$tmp/state"
echo "soak: $seconds s, $ndisks disks, nbdkit pid $pid, in $tmp"
status=0
timeout $((seconds + 120)) \
        $PY "$bench/soak.py" "$tmp/q.sock" "$sock" "$pid" "$tmp" \
        "$seconds" "$ndisks" "$backend" || status=$?
kill -0 "$pid" 2>/dev/null || fail "nbdkit died (log: $log)"
if grep -E 'Assertion|double free|corrupted|AddressSanitizer|runtime error' \
        "$log"; then
    fail "nbdkit reported a crash or sanitizer error"
fi
[ "$status" = 0 ] || fail "soak.py exited with status $status"
