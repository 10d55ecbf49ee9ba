#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# A state directory that fills up (state= on a 64 KiB tmpfs): a change
# whose metadata cannot be saved is not made.  checkpoint-create,
# block-dirty-bitmap-add persistent=true and a transaction fail with a
# clear error and leave checkpoints, bitmaps and their counts exactly
# as before; guest writes keep working and keep being tracked; once
# there is room again the same commands succeed, and a restart finds
# what was saved.
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e
set -x

requires_built "$FILTER"
requires nbdkit --version
requires qemu-io --version
tmpdir

mount_tmpfs "$tmp/state" 64k

truncate -s 16M "$tmp/disk.img"
start_nbdkit kit --filter="$FILTER" file "$tmp/disk.img" node-name=d0 \
             qmp="$tmp/q.sock" state="$tmp/state"
live=$(nbd_uri '' "$sock")

# What the monitor says about checkpoints and bitmaps, in one line.
snapshot ()
{
    qmp_get "$tmp/q.sock" query-checkpoints '{"size": true}' \
            'json.dumps([(c["name"], c["disks"]) for c in r])'
    qmp_get "$tmp/q.sock" query-named-block-nodes '' \
            'json.dumps(r[0].get("dirty-bitmaps", []), sort_keys=True)'
}

$QMP "$tmp/q.sock" checkpoint-create '{"name": "c1"}' > /dev/null
qio "$live" 'write -P 1 0 64k'

# Fill the file system to the last block.
dd if=/dev/zero of="$tmp/state/filler" bs=4k 2>/dev/null || true
before=$(snapshot)

for cmd in "checkpoint-create {\"name\": \"c2\"}" \
           "block-dirty-bitmap-add {\"node\": \"d0\", \"name\": \"p\", \"persistent\": true}" \
           "transaction {\"actions\": [{\"type\": \"block-dirty-bitmap-add\", \"data\": {\"node\": \"d0\", \"name\": \"t\", \"persistent\": true}}, {\"type\": \"checkpoint-create\", \"data\": {\"name\": \"c3\"}}]}"; do
    if out=$($QMP "$tmp/q.sock" ${cmd%% *} "${cmd#* }" 2>&1); then
        fail "'$cmd' succeeded on a full state directory: $out"
    fi
    echo "$out" > "$tmp/out"
    assert_grep "Cannot save the state directory" "$tmp/out"
    assert_eq "$(snapshot)" "$before" "state after the failed '$cmd'"
done
grep -q 'No space left on device' "$log" || fail "nbdkit's log does not say why"

# Guest writes still work and are still tracked by c1.
qio "$live" 'write -P 2 1M 4k'
assert_eq "$(qmp_get "$tmp/q.sock" query-checkpoints '{"size": true}' \
             'r[0]["disks"][0]["size"]')" 131072 "bytes changed since c1"

# Room again: the same commands work, and survive a restart.
rm "$tmp/state/filler"
$QMP "$tmp/q.sock" checkpoint-create '{"name": "c2"}' > /dev/null
$QMP "$tmp/q.sock" block-dirty-bitmap-add \
     '{"node": "d0", "name": "p", "persistent": true}' > /dev/null
after=$(snapshot)
$QMP "$tmp/q.sock" quit > /dev/null
wait_exit "$pid"
start_nbdkit kit2 --filter="$FILTER" file "$tmp/disk.img" node-name=d0 \
             qmp="$tmp/q.sock" state="$tmp/state"
assert_eq "$(snapshot)" "$after" "state after the restart"
