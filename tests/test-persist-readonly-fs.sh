#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# crash-safety=process with the state directory's file system forced
# read-only while nbdkit runs (issue 9 item 6), as the kernel does on
# a file system error with errors=remount-ro: an ext4 image on a loop
# device, its error triggered through /sys/fs/ext4/DEV/trigger_fs_error.
# Then the journal can be neither appended to nor removed, so:
# - a guest write to a chunk already dirty goes on (it needs no record);
# - a guest write that first touches a clean chunk fails (its record
#   cannot be kept, and a stale journal that a restart would trust
#   cannot be removed): the guest sees an error, the disk is unchanged;
# - commands that must save are refused and change nothing;
# - at shutdown the bits cannot be saved; the journal, which holds a
#   record of every write that passed down, brings them back at the
#   next start (the file system mounted again).
# The state is synced before the error: an aborted ext4 journal drops
# what was not written back, as a power cut would (TODO).
# Needs root, loop devices and ext4 (skipped otherwise).
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e
set -x

requires_built "$PLUGIN" "$FILTER"
requires nbdkit --version
requires qemu-io --version
requires mkfs.ext4 -V
requires losetup --version
tmpdir

truncate -s 16M "$tmp/fs.img"
mkfs.ext4 -q "$tmp/fs.img"
mkdir "$tmp/mnt"
if ! mount -o loop,errors=remount-ro "$tmp/fs.img" "$tmp/mnt" 2>"$tmp/mount.err"; then
    cat "$tmp/mount.err"
    skip "cannot mount an ext4 image on a loop device here"
fi
cleanup_fn umount "$tmp/mnt"
dev="$(basename "$(findmnt -n -o SOURCE "$tmp/mnt")")"
trigger="/sys/fs/ext4/$dev/trigger_fs_error"
test -w "$trigger" || skip "no $trigger"

truncate -s 8M "$tmp/a.img"
st="$tmp/mnt/state"
run () {
    start_nbdkit "kit$1" --filter="$FILTER" "$PLUGIN" disk=sda:"$tmp/a.img" \
                 qmp="$tmp/q.qmp" state="$st"
}
bitmaps () {
    qmp_get "$tmp/q.qmp" query-named-block-nodes '' \
      "' '.join(sorted('%s:%d:%s' % (b['name'], b['count'], b['inconsistent'])
                       for n in r for b in n.get('dirty-bitmaps', [])))"
}

run 1
$QMP "$tmp/q.qmp" checkpoint-create '{"name": "c1"}' > /dev/null
$QMP "$tmp/q.qmp" block-dirty-bitmap-add \
     '{"node": "sda", "name": "p", "persistent": true}' > /dev/null
qio "$(nbd_uri sda)" 'write -P 1 0 64k' 'write -P 2 1M 64k'

# What an aborted ext4 journal loses is what a power cut would (the
# page cache is not written back): process mode does not sync, so sync
# here, to test what the filter does, not what ext4 drops.
sync -f "$st"
echo "test: state directory read-only" > "$trigger"
if touch "$tmp/mnt/probe" 2>/dev/null; then
    fail "the file system did not go read-only"
fi

# Into dirty chunks: goes on.
qio "$(nbd_uri sda)" 'write -P 3 4k 4k' 'write -P 3 1M 64k'
# Into a clean chunk: refused, the disk keeps its old contents.
if qemu-io -f raw "$(nbd_uri sda)" -c 'write -P 4 2M 64k' > "$tmp/out" 2>&1 &&
   ! grep -qiE 'failed|error' "$tmp/out"; then
    cat "$tmp/out"
    fail "a write into a clean chunk succeeded with no journal record"
fi
assert_grep "writing the journal: Read-only file system, and it cannot be removed: Read-only file system: failing the write" "$log"
qio "$(nbd_uri sda)" 'read -P 0 2M 64k' 'read -P 3 4k 4k' 'read -P 3 1M 64k'
# Commands refused.
if $QMP "$tmp/q.qmp" checkpoint-create '{"name": "c2"}' > "$tmp/out" 2>&1; then
    fail "checkpoint-create succeeded on a read-only state directory"
fi
assert_grep "Cannot save the state directory" "$tmp/out"
assert_eq "$(qmp_get "$tmp/q.qmp" query-checkpoints '' "' '.join(c['name'] for c in r)")" \
          "c1" "checkpoints after the refused command"
assert_eq "$(bitmaps)" "c1:131072:False p:131072:False" "bitmaps while read-only"
$QMP "$tmp/q.qmp" quit > /dev/null
wait_exit "$pid"
assert_grep "the bitmaps of 'sda' could not be saved cleanly: the next start recovers them from its journal" "$log"

umount "$tmp/mnt"
mount -o loop "$tmp/fs.img" "$tmp/mnt"
run 2
assert_eq "$(bitmaps)" "c1:131072:False p:131072:False" \
          "bitmaps from the journal on the file system mounted again"
qio "$(nbd_uri sda)" 'write -P 5 2M 64k'
assert_eq "$(bitmaps)" "c1:196608:False p:196608:False" "bitmaps after a new write"
$QMP "$tmp/q.qmp" quit > /dev/null
wait_exit "$pid"
