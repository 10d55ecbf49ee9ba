#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# Disk identity (issue 9 item 5): a clean shutdown records each disk's
# device, inode, size and change time in node.NODE; at start-up (or at
# blockdev-add) a disk changed meanwhile makes its bitmaps inconsistent
# and the log says what changed.  With the qmpdisk plugin and a file:
# (1) an unchanged disk restarts consistent with the same counts, also
#     from a node file in the layout without identity (older state);
# (2) a write with dd while nbdkit is down: change time, and an
#     incremental backup from the checkpoint is refused;
# (3) a shrink then regrow to the same size (blockdev-add): change
#     time; a size change refuses the disk (saved size differs);
# (4) the file replaced by a copy (new inode); after a kill -9 too.
# With nbdkit's file plugin: unchanged, then written with dd.
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e
set -x

requires_built "$PLUGIN" "$FILTER"
requires nbdkit --version
requires qemu-io --version
tmpdir

truncate -s 8M "$tmp/a.img"
run () {
    start_nbdkit "kit$1" --filter="$FILTER" "$PLUGIN" "${@:2}" \
                 qmp="$tmp/q.qmp" state="$tmp/state"
}
quit () {
    $QMP "$tmp/q.qmp" quit > /dev/null
    wait_exit "$pid"
    assert_eq "$exit_status" 0 "nbdkit's exit status"
}
# NODE: "name count inconsistent" per bitmap, sorted.
bitmaps () {
    qmp_get "$tmp/q.qmp" query-named-block-nodes '' \
      "' '.join(sorted('%s:%d:%s' % (b['name'], b['count'], b['inconsistent'])
                       for n in r if n['node-name'] == '$1'
                       for b in n.get('dirty-bitmaps', [])))"
}
changed () {
    grep "disk '$1' changed while nbdkit was not running" "$log" || :
}
fresh () {              # NODE: new checkpoint c1 and bitmap p, 2 writes
    $QMP "$tmp/q.qmp" checkpoint-create '{"name": "c1"}' > /dev/null
    $QMP "$tmp/q.qmp" block-dirty-bitmap-add \
         "{\"node\": \"$1\", \"name\": \"p\", \"persistent\": true}" > /dev/null
    qio "$(nbd_uri "$1")" 'write -P 1 0 64k' 'write -P 2 1M 128k'
}
forget () {             # NODE: drop c1 and p
    $QMP "$tmp/q.qmp" checkpoint-delete '{"name": "c1"}' > /dev/null
    $QMP "$tmp/q.qmp" block-dirty-bitmap-remove \
         "{\"node\": \"$1\", \"name\": \"p\"}" > /dev/null
}
good="c1:196608:False p:196608:False"
bad="c1:0:True p:0:True"      # QEMU counts nothing in those

run 1 disk=sda:"$tmp/a.img"
fresh sda
assert_eq "$(bitmaps sda)" "$good" "bitmaps before the first shutdown"
quit

# (1) Unchanged: nbdkit's own writes came before the identity was taken.
run 2 disk=sda:"$tmp/a.img"
assert_eq "$(bitmaps sda)" "$good" "bitmaps of the unchanged disk"
assert_eq "$(changed sda)" "" "log of the unchanged disk"
quit

# (1b) node.sda without its identity (the layout before it): loads
# consistent, unchecked, and the next clean shutdown records it.
$PY - "$tmp/state/node.sda" <<'EOF'
import hashlib, struct, sys
path = sys.argv[1]
data = open(path, "rb").read()
head, payload = data[:64], data[64:]
assert head[:8] == b"NBDKCKPT"
n, = struct.unpack_from("<I", payload, len(payload) - 51)
assert n == 46, n                  # the identity: u32 length, 46 bytes
payload = payload[:-51] + payload[-1:]
head = bytearray(head[:16] + struct.pack("<Q", len(payload)) +
                 hashlib.sha256(payload).digest())
head += hashlib.sha256(bytes(head)).digest()[:8]
open(path, "wb").write(bytes(head) + payload)
EOF
run 3 disk=sda:"$tmp/a.img"
assert_eq "$(bitmaps sda)" "$good" "bitmaps from a node file without identity"
assert_eq "$(changed sda)" "" "log with a node file without identity"
quit

# (2) Written by another program while nbdkit was down.
dd if=/dev/urandom of="$tmp/a.img" bs=512 count=1 seek=4096 conv=notrunc \
   2>/dev/null
run 4 disk=sda:"$tmp/a.img"
assert_eq "$(bitmaps sda)" "$bad" "bitmaps after dd"
assert_grep "disk 'sda' changed while nbdkit was not running: change time .* UTC differs from .* UTC: its bitmaps are inconsistent; a full backup is needed" "$log"
if $QMP "$tmp/q.qmp" backup-begin \
   '{"id": "i", "incremental": "c1", "disks": [{"node": "sda"}]}' \
   > "$tmp/out" 2>&1; then
    fail "an incremental from an inconsistent checkpoint was accepted"
fi
assert_grep "inconsistent" "$tmp/out"
forget sda
fresh sda
quit
# Inconsistent bitmaps stay so across a clean restart (the flag is
# saved), and a new one on the same disk is trusted again.
run 5 disk=sda:"$tmp/a.img"
assert_eq "$(bitmaps sda)" "$good" "new bitmaps after dd"
quit

# (3) Shrunk and regrown to the same size: the tail is zeroed, the
# size is the same, the change time is not.  Re-added with blockdev-add.
truncate -s 4M "$tmp/a.img"
truncate -s 8M "$tmp/a.img"
run 6
$QMP "$tmp/q.qmp" blockdev-add \
     "{\"driver\": \"file\", \"node-name\": \"sda\", \"filename\": \"$tmp/a.img\"}" \
     > /dev/null
assert_eq "$(bitmaps sda)" "$bad" "bitmaps after a shrink and regrow"
assert_grep "disk 'sda' changed while nbdkit was not running: change time" "$log"
forget sda
fresh sda
quit
# Another size: the saved bitmaps cannot describe it; the disk is refused.
truncate -s 9M "$tmp/a.img"
run 7
if $QMP "$tmp/q.qmp" blockdev-add \
   "{\"driver\": \"file\", \"node-name\": \"sda\", \"filename\": \"$tmp/a.img\"}" \
   > "$tmp/out" 2>&1; then
    fail "a disk of another size was accepted"
fi
assert_grep "Disk 'sda' is 9437184 bytes but its saved bitmaps are for 8388608 bytes" "$tmp/out"
quit
truncate -s 8M "$tmp/a.img"

# (4) Replaced by a copy: same size and contents, another inode.
run 8 disk=sda:"$tmp/a.img"
assert_eq "$(bitmaps sda)" "$bad" "bitmaps after truncating back (change time)"
forget sda
fresh sda
quit
cp "$tmp/a.img" "$tmp/copy.img"
mv "$tmp/copy.img" "$tmp/a.img"
run 9 disk=sda:"$tmp/a.img"
assert_eq "$(bitmaps sda)" "$bad" "bitmaps after the file was replaced"
assert_grep "disk 'sda' changed while nbdkit was not running: it is another file \(device [0-9]+:[0-9]+ inode [0-9]+, was device [0-9]+:[0-9]+ inode [0-9]+\)" "$log"
forget sda
fresh sda
# After a kill -9 the change time is not known (the run's own writes
# change it), but a replaced file still is detected.
qio "$(nbd_uri sda)" 'write -P 3 2M 64k'
kill -9 "$pid"
wait "$pid" || :
cp "$tmp/a.img" "$tmp/copy.img"
mv "$tmp/copy.img" "$tmp/a.img"
run 10 disk=sda:"$tmp/a.img"
assert_eq "$(bitmaps sda)" "$bad" \
          "bitmaps after a kill -9 and a replaced file"
assert_grep "disk 'sda' changed while nbdkit was not running: it is another file" "$log"
quit

# nbdkit's file plugin: the filter stats its file=.
truncate -s 8M "$tmp/f.img"
frun () {
    start_nbdkit "file$1" --filter="$FILTER" file "$tmp/f.img" node-name=d0 \
                 qmp="$tmp/q.qmp" state="$tmp/fstate"
}
frun 1
fresh d0
quit
frun 2
assert_eq "$(bitmaps d0)" "$good" "file plugin: bitmaps of the unchanged file"
assert_eq "$(changed d0)" "" "file plugin: log of the unchanged file"
quit
touch "$tmp/f.img"              # no write, but a change all the same
frun 3
assert_eq "$(bitmaps d0)" "$bad" "file plugin: bitmaps after touch"
assert_grep "disk 'd0' changed while nbdkit was not running: change time" "$log"
quit
