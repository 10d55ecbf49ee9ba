#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# crash-safety=process on a state directory that fills up (a 64 KiB
# tmpfs): when the journal cannot grow, guest writes still succeed and
# are still tracked, the log says the journal is gone, and a kill -9
# then leaves the bitmap inconsistent (never silently missing those
# writes); once a command saves the state again, a new journal makes
# the next kill -9 lose nothing.
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e
set -x

requires_built "$FILTER"
requires nbdkit --version
requires qemu-io --version
tmpdir

mount_tmpfs "$tmp/state" 64k

truncate -s 64M "$tmp/disk.img"
args=(--filter="$FILTER" file "$tmp/disk.img" node-name=d0
      qmp="$tmp/q.sock" state="$tmp/state")
count ()
{
    qmp_get "$tmp/q.sock" query-named-block-nodes "" \
            "[b for b in r[0]['dirty-bitmaps'] if b['name'] == '$1'][0]['$2']"
}

start_nbdkit k1 "${args[@]}"
$QMP "$tmp/q.sock" block-dirty-bitmap-add \
     '{"node": "d0", "name": "p", "persistent": true}' > /dev/null
dd if=/dev/zero of="$tmp/state/filler" bs=4k 2>/dev/null || true
# 400 first touches: more records than the journal's last block holds.
cmds=()
for (( i = 0; i < 400; i++ )); do
    cmds+=("write $(( i * 65536 * 2 )) 512")
done
qio "$(nbd_uri d0)" "${cmds[@]}"
assert_eq "$(count p count)" $(( 400 * 65536 )) "bytes tracked by p"
assert_grep "writing the journal: No space left on device: it is removed" "$log"
test ! -e "$tmp/state/journal.d0" || fail "the journal is still there"
kill -9 $pid
wait $pid || :
rm "$tmp/state/filler"

start_nbdkit k2 "${args[@]}"
assert_eq "$(count p inconsistent)" True "p after a kill -9 without journal"
$QMP "$tmp/q.sock" block-dirty-bitmap-remove '{"node": "d0", "name": "p"}' \
     > /dev/null
$QMP "$tmp/q.sock" block-dirty-bitmap-add \
     '{"node": "d0", "name": "p", "persistent": true}' > /dev/null
dd if=/dev/zero of="$tmp/state/filler" bs=4k 2>/dev/null || true
qio "$(nbd_uri d0)" "${cmds[@]}"
rm "$tmp/state/filler"
# A command that saves the state starts a new journal.
$QMP "$tmp/q.sock" block-dirty-bitmap-add \
     '{"node": "d0", "name": "q", "persistent": true}' > /dev/null
test -s "$tmp/state/journal.d0" || fail "no new journal"
qio "$(nbd_uri d0)" "write 1000000 1"
kill -9 $pid
wait $pid || :

start_nbdkit k3 "${args[@]}"
assert_eq "$(count p inconsistent)" False "p after the new journal"
assert_eq "$(count p count)" $(( 401 * 65536 )) "p: saved bits plus chunk 15 from the journal"
assert_eq "$(count q count)" 65536 "q's bits after kill -9"
$QMP "$tmp/q.sock" quit > /dev/null
wait_exit $pid
