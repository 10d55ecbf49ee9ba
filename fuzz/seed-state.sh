#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# Make seed inputs for fuzz-journal and fuzz-persist from state files
# that the checkpoint filter really writes: a disk d0 with persistent
# bitmaps and checkpoints, killed with SIGKILL (unclean node file and a
# journal), then started again and quit cleanly; and the same with
# crash-safety=none (bits files named by position).  Run from the build
# tree after make: fuzz/seed-state.sh OUTDIR (default fuzz/corpus).
set -e
set -m                          # so that a killed server says nothing
top=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$top/fuzz/corpus}
filter=$top/filters/checkpoint/.libs/nbdkit-checkpoint-filter.so
test -f "$filter" || { echo "$0: $filter: run make first" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'kill $pid 2>/dev/null || :; rm -rf "$tmp"' EXIT
export PYTHONPATH=$top/tests

start ()                        # start MODE
{
    rm -f "$tmp/q.qmp" "$tmp/nbd.sock"
    nbdkit -f -U "$tmp/nbd.sock" --filter="$filter" file "$tmp/d0.img" \
           node-name=d0 qmp="$tmp/q.qmp" state="$tmp/state" \
           crash-safety="$1" &
    pid=$!
    for i in $(seq 100); do test -S "$tmp/q.qmp" && break; sleep 0.1; done
}
qmp ()                          # qmp STEP
{
    python3 - "$tmp" "$1" <<'PY'
import sys
from testlib import *
tmp, step = sys.argv[1:]
m = connect(tmp + "/q.qmp")
nbd = uri(tmp + "/nbd.sock")
if step == "setup":
    m.command("block-dirty-bitmap-add", {"node": "d0", "name": "p1",
                                         "persistent": True})
    m.command("block-dirty-bitmap-add", {"node": "d0", "name": "g4k",
                                         "persistent": True,
                                         "granularity": 4096})
    qio(nbd, "write -P 1 0 64k", "write -P 2 1m 8k")
    m.command("checkpoint-create", {"name": "c1", "description": "first"})
    qio(nbd, "write -P 3 512k 4k")
    m.command("block-dirty-bitmap-add", {"node": "d0", "name": "off",
                                         "persistent": True,
                                         "disabled": True})
    m.command("checkpoint-create", {"name": "c2"})
    qio(nbd, "write -P 4 2m 192k", "write -P 5 100k 1k")
else:
    m.command("quit")
PY
}
copy ()                         # copy TAG
{
    for f in "$tmp"/state/*; do cp "$f" "$tmp/files/$1.${f##*/}"; done
}

mkdir "$tmp/files"
# process: killed, then recovered and quit.  none: quit (so that the
# bits are saved), then started and killed (the node file in use).
kill9 () { kill -9 $pid; wait $pid 2>/dev/null || :; }
rm -rf "$tmp/state"; truncate -s 4M "$tmp/d0.img"
start process; qmp setup; kill9; copy process-killed
start process; qmp quit; wait $pid; copy process-clean
rm -rf "$tmp/state"; truncate -s 4M "$tmp/d0.img"
start none; qmp setup; qmp quit; wait $pid; copy none-clean
start none; kill9; copy none-killed
pid=
mkdir -p "$out/fuzz-journal" "$out/fuzz-persist"
python3 "$top/fuzz/seed-state.py" "$tmp/files" "$out"
