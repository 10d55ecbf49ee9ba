#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# The crash-safety kill loop (tests/crash_loop.py) for as many rounds
# as asked, for the closing note: nbdkit with state= is killed with
# SIGKILL at random instants while a libnbd client keeps many writes in
# flight, and restarted on the same state; after each restart every
# checkpoint's changed-since must cover every chunk written after it
# was created.  Prints the rounds, how many kills landed with writes in
# flight, and the checks passed.
#
#   bench/bench-crash.sh BUILDDIR [ROUNDS [MODE [churn] [powercut]]]
#
# ROUNDS defaults to 200, MODE (crash-safety=) to process; "churn" runs
# checkpoint-create/-delete in a loop during the writes; "powercut"
# restarts each time on what a power cut would have left of the state
# (tests/powercut-shim.so, built here if missing; on a 256 MiB disk).  CRASH_SEED
# sets the seed (printed either way, to replay a failure).  Needs
# nbdkit (file plugin) and python3 with libnbd's nbd module.
set -e

builddir="${1:?usage: $0 BUILDDIR [ROUNDS [MODE [churn]]]}"
rounds="${2:-200}"
mode="${3:-process}"
shift $(( $# < 3 ? $# : 3 ))
opts=("$@")
src="$(cd "$(dirname "$0")/.." && pwd)"
filter="$(cd "$builddir" && pwd)/filters/checkpoint/.libs/nbdkit-checkpoint-filter.so"

test -f "$filter" || make -C "$builddir" -j2 >/dev/null
export CRASH_DISK_MB=16
if [[ " ${opts[*]} " == *" powercut "* ]]; then
    make -s -C "$builddir/tests" powercut-shim.la >/dev/null
    export POWERCUT_SHIM="$(cd "$builddir" && pwd)/tests/.libs/powercut-shim.so"
    CRASH_DISK_MB=256
fi
work="$(mktemp -d /tmp/bench-crash-XXXXXX)"
trap 'rm -rf "$work"' EXIT
truncate -s ${CRASH_DISK_MB}M "$work/disk.img"
PYTHONPATH="$src/tests" /usr/bin/python3 "$src/tests/crash_loop.py" \
    "$filter" "$work" "$rounds" "$mode" "${opts[@]}"
