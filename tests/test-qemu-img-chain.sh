#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
#
# A backup chain made and restored with stock qemu-img only, while a
# guest (chain_guest.py) writes to the disk during every backup:
#   full backup      -> full.qcow2              (qemu-img convert)
#   incremental c1   -> inc1.qcow2 over full    (qemu-img convert -B)
#   incremental c2   -> inc2.qcow2 over inc1
# Each image passes qemu-img check, and qemu-img compare and cmp find it
# equal to the disk at its backup's instant, as the guest recorded it
# from its own writes (not from another read of the server).  Each
# overlay holds exactly the chunks the incremental export reports
# changed.  Restores: the chain flattened into a raw file, and inc1
# written back into the live disk through its NBD export (guest
# stopped); the restore's writes are recorded like any other, so the
# next incremental, from the last checkpoint and over inc2.qcow2, gives
# the disk again.
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e
set -x

requires_built "$PLUGIN" "$FILTER"
requires nbdkit --version
requires nbdinfo --version
requires nbdcopy --version
requires qemu-img --version
requires $PY -c 'import nbd'
tmpdir

K=1024
C=$((64 * K))                       # bitmap granularity = qcow2 cluster
SIZE=$((32 * K * K + 20 * K))       # the last chunk is partial
head -c $SIZE /dev/urandom > "$tmp/disk.img"
fallocate -p -o $((4 * K * K)) -l $((4 * K * K)) "$tmp/disk.img"

start_nbdkit kit --filter="$FILTER" "$PLUGIN" disk=vda:"$tmp/disk.img" \
             qmp="$tmp/q.sock" state="$tmp/state"
S=$sock
live="nbd+unix:///vda?socket=$S"

guest_pid=
# guest_start DIR START-IMAGE SEED: the guest writes until guest_stop.
guest_start ()
{
    gdir="$1"
    mkdir -p "$gdir"
    $PY "$abs_srcdir/chain_guest.py" --seed "$3" "$live" "$tmp/q.sock" \
        "$2" "$gdir" 2> "$gdir/guest.log" &
    guest_pid=$!
    cleanup_fn kill "$guest_pid"
    wait_file "$gdir/ops"
}
# wait_file FILE: until FILE exists (the guest is alive meanwhile).
wait_file ()
{
    local i
    for (( i = 0; i < 400; ++i )); do
        [ -e "$1" ] && return 0
        if [ -n "$guest_pid" ] && ! kill -0 "$guest_pid" 2>/dev/null; then
            cat "$gdir/guest.log" >&2
            fail "the guest exited"
        fi
        sleep 0.05
    done
    fail "$1 did not appear in 20 s"
}
ops () { cat "$gdir/ops"; }
# wait_ops N: until the guest has made N more requests.
wait_ops ()
{
    local want=$(( $(ops) + $1 )) i
    for (( i = 0; i < 400; ++i )); do
        [ "$(ops)" -ge $want ] && return 0
        kill -0 "$guest_pid" 2>/dev/null || fail "the guest exited"
        sleep 0.05
    done
    fail "the guest did not make $1 requests in 20 s"
}
guest_stop ()
{
    touch "$gdir/stop"
    wait_file "$gdir/done"
    wait "$guest_pid"
    guest_pid=
    # The guest's record is the disk.
    cmp "$gdir/final.img" "$tmp/disk.img" || fail "the guest's model is not the disk"
}
# backup N JSON: the guest starts backup N between two of its writes;
# then it writes on while the test reads the export.
backup ()
{
    # Renamed into place: the guest polls for it and must not read it
    # half written (an empty file failed its json.load once).
    echo "$2" > "$gdir/.begin.$1"
    mv "$gdir/.begin.$1" "$gdir/begin.$1"
    wait_file "$gdir/begun.$1"
    wait_ops 20
}
# changed_chunks URI: the chunks an incremental export reports changed
# (not HOLE-only), one per line.
changed_chunks ()
{
    nbdinfo --map --json "$1" | $PY -c '
import json, sys
C = int(sys.argv[1])
s = set()
for e in json.load(sys.stdin):
    if e["type"] != 1:                  # 1 = HOLE only: unchanged
        s.update(range(e["offset"] // C, (e["offset"] + e["length"] + C - 1) // C))
print("\n".join(map(str, sorted(s))))' $C
}
# top_chunks QCOW2: the chunks allocated in the image itself (depth 0:
# data or zero clusters), not in its backing chain.
top_chunks ()
{
    qemu-img map -f qcow2 --output=json "$1" | $PY -c '
import json, sys
C = int(sys.argv[1])
s = set()
for e in json.load(sys.stdin):
    if e["depth"] == 0 and e["present"]:
        s.update(range(e["start"] // C, (e["start"] + e["length"] + C - 1) // C))
print("\n".join(map(str, sorted(s))))' $C
}
# check_image QCOW2 REF: qemu-img check, compare, and bit for bit.
check_image ()
{
    qemu-img check -f qcow2 "$1"
    qemu-img compare -f raw -F qcow2 "$2" "$1" > "$tmp/compare.out" ||
        fail "qemu-img compare: $1 differs from $2: $(cat "$tmp/compare.out")"
    assert_grep '^Images are identical' "$tmp/compare.out"
    qemu-img convert -f qcow2 -O raw "$1" "$tmp/flat.raw"
    cmp "$2" "$tmp/flat.raw" || fail "$1 flattened differs from $2"
    rm -f "$tmp/flat.raw"
}
# inc_backup N ID FROM NEW PREV.qcow2 OUT.qcow2 [whole]
inc_backup ()
{
    local uri="nbd+unix:///vda@$2?socket=$S" before
    wait_ops 30
    backup "$1" '{"id": "'$2'", "incremental": "'$3'", "checkpoint": {"name": "'$4'"}}'
    assert_eq "$(cat "$gdir/begun.$1")" \
              '{"id": "'$2'", "exports": [{"node": "vda", "export": "vda@'$2'", "size": '$SIZE'}]}' \
              "backup-begin $2"
    changed_chunks "$uri" > "$tmp/$2.changed"
    before=$(ops)
    qemu-img convert -f raw -O qcow2 -B "$5" -F qcow2 "$uri" "$6"
    changed_chunks "$uri" | cmp - "$tmp/$2.changed" ||
        fail "$2: the export's changed chunks changed while the guest wrote"
    wait_ops 5
    echo "$2: the guest made $(( $(ops) - before )) requests while qemu-img read"
    $QMP "$tmp/q.sock" backup-end '{"id": "'$2'"}' > /dev/null
    # Something changed (and, after guest writes only, not everything).
    n=$(wc -l < "$tmp/$2.changed")
    [ "$n" -gt 0 ] || fail "$2: no changed chunk"
    if [ "${7:-}" != whole ] && [ "$n" -ge $(( (SIZE + C - 1) / C )) ]; then
        fail "$2: every chunk changed"
    fi
    top_chunks "$6" | cmp - "$tmp/$2.changed" ||
        fail "$6 does not hold exactly the changed chunks of $2"
    qemu-img info --backing-chain "$6" | grep -q "^backing file: $5" ||
        fail "$6 is not backed by $5"
}

# ---- the chain, with the guest writing ----
cp "$tmp/disk.img" "$tmp/start.img"
guest_start "$tmp/g1" "$tmp/start.img" 1
wait_ops 20

backup 0 '{"id": "full", "checkpoint": {"name": "c1"}}'
qemu-img convert -f raw -O qcow2 "nbd+unix:///vda@full?socket=$S" "$tmp/full.qcow2"
wait_ops 5
$QMP "$tmp/q.sock" backup-end '{"id": "full"}' > /dev/null
check_image "$tmp/full.qcow2" "$gdir/ref.0.img"

inc_backup 1 inc1 c1 c2 "$tmp/full.qcow2" "$tmp/inc1.qcow2"
check_image "$tmp/inc1.qcow2" "$gdir/ref.1.img"
inc_backup 2 inc2 c2 c3 "$tmp/inc1.qcow2" "$tmp/inc2.qcow2"
check_image "$tmp/inc2.qcow2" "$gdir/ref.2.img"
# The lower layers did not change under the overlays.
check_image "$tmp/full.qcow2" "$gdir/ref.0.img"
check_image "$tmp/inc1.qcow2" "$gdir/ref.1.img"
guest_stop
g1=$gdir

# ---- restore: the chain flattened into a new raw file ----
qemu-img convert -f qcow2 -O raw "$tmp/inc2.qcow2" "$tmp/restored.raw"
cmp "$g1/ref.2.img" "$tmp/restored.raw" || fail "flattened chain differs"
assert_eq "$(stat -c %s "$tmp/restored.raw")" $SIZE "size of the flattened chain"

# ---- restore: inc1 into the live disk through its export ----
qemu-img convert -n -f qcow2 -O raw "$tmp/inc1.qcow2" "$live"
nbdcopy "$live" "$tmp/live.raw"
cmp "$g1/ref.1.img" "$tmp/live.raw" || fail "the live disk after restore differs"
cmp "$g1/ref.1.img" "$tmp/disk.img" || fail "the disk file after restore differs"
# The restore's writes are in c3's bitmap: at least every chunk where
# the disk at inc1 and at inc2 differ.
differ="$($PY - "$g1/ref.1.img" "$g1/ref.2.img" $C <<'EOF'
import sys
a, b = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read()
C = int(sys.argv[3])
print(sum(min(C, len(a) - i) for i in range(0, len(a), C) if a[i:i + C] != b[i:i + C]))
EOF
)"
[ "$differ" -gt 0 ] || fail "inc1 and inc2 are the same disk"
size="$(qmp_get "$tmp/q.sock" query-checkpoints '{"size": true}' \
        '[c["disks"][0]["size"] for c in r if c["name"] == "c3"][0]')"
[ "$size" -ge "$differ" ] ||
    fail "c3 records $size bytes, the restore changed $differ"

# The next incremental, from c3 over inc2.qcow2, is the disk again
# (restored, then written by the guest).  qemu-img convert -n writes
# the whole target, so every chunk may have changed.
guest_start "$tmp/g2" "$tmp/live.raw" 2
inc_backup 0 inc3 c3 c4 "$tmp/inc2.qcow2" "$tmp/inc3.qcow2" whole
check_image "$tmp/inc3.qcow2" "$gdir/ref.0.img"
guest_stop

r="$(qmp_get "$tmp/q.sock" query-checkpoints '' \
      '[(c["name"], c.get("parent"), c["current"]) for c in r]')"
assert_eq "$r" "[('c1', None, False), ('c2', 'c1', False), ('c3', 'c2', False), ('c4', 'c3', True)]" \
          "checkpoints at the end"
qemu-img info --backing-chain "$tmp/inc3.qcow2" | grep -c '^image:' > "$tmp/depth"
assert_eq "$(cat "$tmp/depth")" 4 "images in the chain"
