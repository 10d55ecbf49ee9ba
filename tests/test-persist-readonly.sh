#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# A state directory that stops taking changes while nbdkit runs (issue
# 9 item 6): the next command that must save fails, says so and
# changes nothing; guest writes go on and are still tracked; nothing
# is silently dropped.
# - crash-safety=none on a tmpfs remounted read-only (possible: none
#   keeps no state file open between saves): commands refused, writes
#   tracked; remounted read-write, commands work again; a clean
#   shutdown that cannot save says so, and the bitmaps then load as
#   inconsistent (never as silently short).
# - crash-safety=process: the kernel refuses to remount read-only a
#   file system with the journal open for writing (EBUSY), so the
#   state directory is made immutable (chattr +i: no file can be made,
#   renamed or removed in it; as root, chmod would not stop us).
#   Commands are refused; guest writes go on into the open journal; a
#   clean shutdown cannot save the bits, but the journal (never
#   restarted meanwhile) covers every write: the restart finds them.
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e
set -x

requires_built "$PLUGIN" "$FILTER"
requires nbdkit --version
requires qemu-io --version
tmpdir

truncate -s 8M "$tmp/a.img"
run () {
    start_nbdkit "kit$1" --filter="$FILTER" "$PLUGIN" disk=sda:"$tmp/a.img" \
                 qmp="$tmp/q.qmp" state="$st" "${@:2}"
}
quit () {
    $QMP "$tmp/q.qmp" quit > /dev/null
    wait_exit "$pid"
}
bitmaps () {
    qmp_get "$tmp/q.qmp" query-named-block-nodes '' \
      "' '.join(sorted('%s:%d:%s' % (b['name'], b['count'], b['inconsistent'])
                       for n in r for b in n.get('dirty-bitmaps', [])))"
}
checkpoints () {
    qmp_get "$tmp/q.qmp" query-checkpoints '' "' '.join(c['name'] for c in r)"
}
refused () {                    # COMMAND ARGS: must fail for the state
    if $QMP "$tmp/q.qmp" "$1" "$2" > "$tmp/out" 2>&1; then
        fail "$1 succeeded with the state directory read-only"
    fi
    assert_grep "Cannot save the state directory \\(see nbdkit's log\\): nothing was changed" "$tmp/out"
}
setup () {                      # c1 and p, 2 chunks written
    $QMP "$tmp/q.qmp" checkpoint-create '{"name": "c1"}' > /dev/null
    $QMP "$tmp/q.qmp" block-dirty-bitmap-add \
         '{"node": "sda", "name": "p", "persistent": true}' > /dev/null
    qio "$(nbd_uri sda)" 'write -P 1 0 64k' 'write -P 2 1M 64k'
}
# Guest writes while the directory is read-only: 2 more chunks, read
# back.
guest () {
    qio "$(nbd_uri sda)" "write -P $1 2M 64k" "write -P $1 3M 4k"
    qio "$(nbd_uri sda)" "read -P $1 2M 64k" "read -P $1 3M 4k" \
        'read -P 1 0 64k'
}

# ---- crash-safety=none, a tmpfs remounted read-only ----
mount_tmpfs "$tmp/ro" 4m
st="$tmp/ro/state"
run 1 crash-safety=none
setup
mount -o remount,ro "$tmp/ro"
refused checkpoint-create '{"name": "c2"}'
refused block-dirty-bitmap-add '{"node": "sda", "name": "q", "persistent": true}'
refused transaction '{"actions": [{"type": "block-dirty-bitmap-clear", "data": {"node": "sda", "name": "p"}}]}'
assert_grep "saving $st/.*: Read-only file system" "$log"
guest 7
assert_eq "$(checkpoints)" "c1" "checkpoints after refused commands"
assert_eq "$(bitmaps)" "c1:262144:False p:262144:False" "bitmaps while read-only"
# Every command that changes bitmaps saves the state, even one that
# changes a transient bitmap only (TODO).
refused block-dirty-bitmap-add '{"node": "sda", "name": "t"}'
mount -o remount,rw "$tmp/ro"
$QMP "$tmp/q.qmp" checkpoint-create '{"name": "c2"}' > /dev/null
assert_eq "$(checkpoints)" "c1 c2" "checkpoints once writable again"
qio "$(nbd_uri sda)" 'write -P 3 4M 64k'
quit
run 2 crash-safety=none
assert_eq "$(bitmaps)" "c1:262144:False c2:65536:False p:327680:False" \
          "bitmaps after a clean shutdown"
# A clean shutdown that cannot save: said, and inconsistent after.
mount -o remount,ro "$tmp/ro"
qio "$(nbd_uri sda)" 'write -P 4 5M 64k'
quit
assert_grep "saving $st/.*: Read-only file system" "$log"
assert_grep "the bitmaps of 'sda' could not be saved cleanly: they load as inconsistent at the next start" "$log"
mount -o remount,rw "$tmp/ro"
run 3 crash-safety=none
assert_eq "$(bitmaps)" "c1:0:True c2:0:True p:0:True" \
          "bitmaps after a shutdown that could not save"
quit

# ---- crash-safety=process, an immutable state directory ----
st="$tmp/state"
mkdir "$st"
chattr +i "$st" 2>"$tmp/chattr.err" && chattr -i "$st" ||
    { cat "$tmp/chattr.err"; skip "chattr +i does not work on $tmp"; }
run 4
setup
cleanup_fn chattr -i "$st"
chattr +i "$st"
refused checkpoint-create '{"name": "c2"}'
refused block-dirty-bitmap-add '{"node": "sda", "name": "q", "persistent": true}'
refused block-dirty-bitmap-clear '{"node": "sda", "name": "p"}'
assert_grep "saving $st/.*: Operation not permitted" "$log"
guest 8
assert_eq "$(checkpoints)" "c1" "process: checkpoints after refused commands"
assert_eq "$(bitmaps)" "c1:262144:False p:262144:False" \
          "process: bitmaps while the directory is immutable"
quit
assert_grep "saving $st/.*: Operation not permitted" "$log"
assert_grep "the bitmaps of 'sda' could not be saved cleanly: the next start recovers them from its journal" "$log"
chattr -i "$st"
run 5
assert_eq "$(bitmaps)" "c1:262144:False p:262144:False" \
          "process: bitmaps from the journal after a shutdown that could not save"
quit
