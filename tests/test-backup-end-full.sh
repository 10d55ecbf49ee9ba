#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# A backup can always be ended, and gives its scratch back at once:
# - scratch fills the state file system (a 3 MiB tmpfs): the backup
#   fails (break-snapshot), backup-end success=false ends it, the space
#   comes back, and its checkpoint is deleted, so c1 covers every write;
# - with break-guest-write, guest writes fail while scratch is full and
#   work again as soon as the backup has ended;
# - the state directory full to the last block: backup-end still ends
#   the backup; with success=false it says that its checkpoint could not
#   be deleted, and checkpoint-delete works once there is room;
# - a file descriptor limit: backup-begin refuses, up front, a backup
#   that would leave too few descriptors, and every backup begun can be
#   ended (and state saved) afterwards.
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e
set -x

requires_built "$FILTER"
requires nbdkit --version
requires qemu-io --version
requires prlimit --version
tmpdir

mount_tmpfs "$tmp/state" 3m
free_kib () { df --output=avail -k "$tmp/state" | tail -1; }

head -c 16M /dev/urandom > "$tmp/disk.img"
start_nbdkit kit --filter="$FILTER" file "$tmp/disk.img" node-name=d0 \
             qmp="$tmp/q.qmp" state="$tmp/state"
live=$(nbd_uri '' "$sock")
empty=$(free_kib)
ckpts () {
    qmp_get "$tmp/q.qmp" query-checkpoints '{"size": true}' \
            '[(c["name"], c["disks"][0]["size"]) for c in r]'
}
status () {
    qmp_get "$tmp/q.qmp" query-backups '' '[(b["id"], b["status"]) for b in r]'
}

# ---- scratch fills the state file system (break-snapshot) ----
$QMP "$tmp/q.qmp" checkpoint-create '{"name": "c1"}' > /dev/null
$QMP "$tmp/q.qmp" backup-begin '{"id": "b1", "checkpoint": {"name": "c2"}}' > /dev/null
qio "$live" 'write -P 1 0 6M'           # twice what scratch can hold
assert_eq "$(status)" "[('b1', 'failed')]" "b1 after scratch filled up"
[ "$(free_kib)" -lt 512 ] || fail "scratch did not fill the file system"
$QMP "$tmp/q.qmp" backup-end '{"id": "b1", "success": false}' > /dev/null
assert_eq "$(status)" "[]" "backups after b1 ended"
[ "$(free_kib)" -gt $((empty - 256)) ] ||
    fail "scratch not given back: $(free_kib) KiB free of $empty"
qio "$live" 'write -P 2 8M 64k'
assert_eq "$(ckpts)" "[('c1', $((6 * 1048576 + 65536)))]" "c1 covers every write"

# ---- break-guest-write: writes fail while full, work after the end ----
$QMP "$tmp/q.qmp" backup-begin '{"id": "b2", "on-cbw-error": "break-guest-write"}' > /dev/null
if qemu-io -f raw "$live" -c 'write -P 3 0 6M' > "$tmp/w" 2>&1 &&
   ! grep -qiE 'failed|error' "$tmp/w"; then
    fail "a write that copy-before-write could not save succeeded"
fi
$QMP "$tmp/q.qmp" backup-end '{"id": "b2"}' > /dev/null
qio "$live" 'write -P 4 0 6M' 'read -P 4 0 6M'

# ---- the state directory full to the last block ----
$QMP "$tmp/q.qmp" backup-begin '{"id": "b3", "checkpoint": {"name": "c3"}}' > /dev/null
$QMP "$tmp/q.qmp" backup-begin '{"id": "b4"}' > /dev/null
dd if=/dev/zero of="$tmp/state/filler" bs=4k 2>/dev/null || true
$QMP "$tmp/q.qmp" backup-end '{"id": "b4"}' > /dev/null
if $QMP "$tmp/q.qmp" backup-end '{"id": "b3", "success": false}' > "$tmp/out" 2>&1; then
    fail "the deletion of c3 could not be saved, yet backup-end said nothing"
fi
assert_grep "Backup 'b3' ended, but its checkpoint 'c3' could not be deleted" "$tmp/out"
assert_grep "Cannot save the state directory" "$tmp/out"
assert_eq "$(status)" "[]" "backups after b3 and b4 ended on a full disk"
rm "$tmp/state/filler"
$QMP "$tmp/q.qmp" checkpoint-delete '{"name": "c3"}' > /dev/null
assert_eq "$(qmp_get "$tmp/q.qmp" query-checkpoints '' '[c["name"] for c in r]')" \
          "['c1']" "checkpoints once there is room again"

# ---- a file descriptor budget ----
prlimit --nofile=120:120 --pid "$pid"
n=0
while $QMP "$tmp/q.qmp" backup-begin "{\"id\": \"f$n\"}" > "$tmp/out" 2>&1; do
    n=$((n + 1))
    [ $n -lt 50 ] || fail "the descriptor limit never refused a backup"
done
assert_grep "file descriptors" "$tmp/out"
assert_grep "ulimit -n" "$tmp/out"
[ $n -ge 1 ] || fail "no backup fitted under 120 descriptors"
echo "$n backups fitted under 120 descriptors"
for (( i = 0; i < n; i++ )); do
    $QMP "$tmp/q.qmp" backup-end "{\"id\": \"f$i\"}" > /dev/null
done
$QMP "$tmp/q.qmp" checkpoint-create '{"name": "c4"}' > /dev/null
assert_eq "$(status)" "[]" "backups after the descriptor test"
