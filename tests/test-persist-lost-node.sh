#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# State files lost or damaged while nbdkit was down, with checkpoints
# covering the disk:
# - node.sda deleted: the log names each checkpoint whose bitmap on sda
#   is lost; those bitmaps are listed as inconsistent (not silently
#   gone), an incremental from them is refused, and checkpoint-delete
#   still works;
# - bitmap.sdb.0 damaged: the log names the bitmap and its node and
#   says it is inconsistent; sdb's other bitmap is intact.
# Under crash-safety=none (state saved at clean shutdown only, bits
# files named by position); test-crash-safety.sh covers the default.
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e
set -x

requires_built "$PLUGIN" "$FILTER"
requires nbdkit --version
requires qemu-io --version
tmpdir

truncate -s 8M "$tmp/a.img" "$tmp/b.img"
run () {
    start_nbdkit "kit$1" --filter="$FILTER" "$PLUGIN" disk=sda:"$tmp/a.img" \
                 disk=sdb:"$tmp/b.img" qmp="$tmp/q.qmp" state="$tmp/state" \
                 crash-safety=none
}
run 1
$QMP "$tmp/q.qmp" checkpoint-create '{"name": "c1"}' > /dev/null
qio "$(nbd_uri sda)" 'write -P 1 0 64k'
qio "$(nbd_uri sdb)" 'write -P 1 0 64k'
$QMP "$tmp/q.qmp" checkpoint-create '{"name": "c2"}' > /dev/null
qio "$(nbd_uri sdb)" 'write -P 2 1M 64k'
$QMP "$tmp/q.qmp" quit > /dev/null
wait_exit "$pid"

rm "$tmp/state/node.sda"
# bitmap.sdb.0 is the oldest persistent bitmap of sdb: c1's.
printf '\xff\xff\xff\xff' | dd of="$tmp/state/bitmap.sdb.0" bs=1 seek=40 conv=notrunc 2>/dev/null
run 2
for c in c1 c2; do
    grep -q "checkpoint '$c' covers node 'sda' but its node file is missing" "$log" ||
        fail "the log does not say that $c's bitmap on sda is lost"
done
grep -q "bitmap 'c1' of node 'sdb' .*bitmap.sdb.0.*inconsistent from now on" "$log" ||
    fail "the log does not name the damaged bitmap"
bitmaps () {
    qmp_get "$tmp/q.qmp" query-named-block-nodes '' \
      '[(n["node-name"], sorted((b["name"], b["inconsistent"], b["persistent"]) for b in n.get("dirty-bitmaps", []))) for n in r]'
}
assert_eq "$(bitmaps)" \
  "[('sda', [('c1', True, True), ('c2', True, True)]), ('sdb', [('c1', True, True), ('c2', False, True)])]" \
  "bitmaps after the restart"
if $QMP "$tmp/q.qmp" backup-begin '{"id": "i", "incremental": "c2", "disks": [{"node": "sda"}]}' \
   > "$tmp/out" 2>&1; then
    fail "an incremental from a lost bitmap was accepted"
fi
assert_grep "inconsistent" "$tmp/out"
$QMP "$tmp/q.qmp" checkpoint-delete '{"name": "c1"}' > /dev/null
assert_eq "$(qmp_get "$tmp/q.qmp" query-checkpoints '' '[c["name"] for c in r]')" \
          "['c2']" "checkpoints after deleting c1"
