#!/usr/bin/env bash
# Incremental pull backups over the file plugin: a full backup with
# checkpoint c1, writes of every kind (aligned, unaligned, straddling
# two chunks, write-zeroes, discard, into a hole, into the partial last
# chunk), then an incremental backup from c1 whose block status shows
# exactly the changed 64 KiB chunks (backup_map.py: nbdinfo, qemu-img
# map and libnbd agree), and whose changed extents applied onto the
# full backup (incremental_apply.py) give the disk at the second
# freeze.  Copy-before-write of an incremental backup saves only the
# chunks it covers; reading an uncovered chunk that changed since the
# freeze is an error, never wrong data.  A second incremental from c2
# completes the chain: full + inc1 + inc2 equals the disk bit for bit.
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e
set -x

requires_built "$FILTER"
requires nbdkit --version
requires nbdinfo --version
requires nbdcopy --version
requires qemu-io --version
requires qemu-img --version
requires $PY -c 'import nbd'
tmpdir

K=1024
C=$((64 * K))                       # the default bitmap granularity
SIZE=$((8 * K * K + 20 * K))        # the last chunk (128) is partial
head -c $SIZE /dev/urandom > "$tmp/disk.img"
fallocate -p -o $((2 * K * K)) -l $((K * K)) "$tmp/disk.img"  # chunks 32-47

start_nbdkit kit --filter="$FILTER" file "$tmp/disk.img" node-name=d0 \
             qmp="$tmp/q.sock" state="$tmp/state"
kitsock=$sock
live=$(nbd_uri '' "$kitsock")
qio "$live" 'write -P 0x5a 6M 256k' 'flush'

# ---- full backup with checkpoint c1 ----
cp "$tmp/disk.img" "$tmp/freeze0"
r="$($QMP "$tmp/q.sock" backup-begin \
      '{"id": "full", "checkpoint": {"name": "c1", "description": "full"}}')"
assert_eq "$r" '{"id": "full", "exports": [{"node": "d0", "export": "d0@full", "size": '$SIZE'}]}' "backup-begin full"
full=$(nbd_uri d0@full "$kitsock")
r="$(qmp_get "$tmp/q.sock" query-backups '' \
      '[(b["id"], b.get("checkpoint"), b.get("incremental")) for b in r]')"
assert_eq "$r" "[('full', 'c1', None)]" "query-backups, full"
# A full backup export reports the true allocation: no HOLE-only
# extent, and the hole of the disk is hole,zero.
nbdinfo --map --json "$full" > "$tmp/fullmap.json"
$PY - "$tmp/fullmap.json" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
assert all(e["type"] in (0, 3) for e in m), m
assert any(e["type"] == 3 and e["offset"] <= 2 << 20 and
           e["offset"] + e["length"] >= 3 << 20 for e in m), m
EOF
$PY "$abs_srcdir/incremental_apply.py" --full "$full" "$tmp/full.img"
nbdcopy "$full" "$tmp/full-nbdcopy.img"
$QMP "$tmp/q.sock" backup-end '{"id": "full"}' > /dev/null
cmp "$tmp/freeze0" "$tmp/full.img" || fail "full backup (libnbd) differs"
cmp "$tmp/freeze0" "$tmp/full-nbdcopy.img" || fail "full backup (nbdcopy) differs"

# ---- changes since c1 ----
qio "$live" \
    'write -P 0x11 1M 64k' \
    'write -P 0x22 200k 3' \
    'write -P 0x33 2044k 8k' \
    'discard 2304k 64k' \
    'write -P 0x44 2560k 64k' \
    'write -z 3M 64k' \
    'write -z 3200k 4k' \
    'discard 4M 64k' \
    'discard 4160k 1k' \
    'write -P 0x55 8200k 4k' \
    'flush'
# Chunk 3 (unaligned 3 bytes), 16, 31+32 (straddling), 36 (discard in
# the hole), 40 (data in the hole), 48 (write-zeroes over data), 50
# (partial write-zeroes), 64 (discard of data), 65 (partial discard),
# 128 (the partial last chunk).
CHANGED1="3 16 31 32 36 40 48 50 64 65 128"
ZERO1="36 64"
r="$(qmp_get "$tmp/q.sock" query-checkpoints '{"size": true}' \
      '[(c["name"], c["disks"][0]["size"]) for c in r]')"
assert_eq "$r" "[('c1', $((10 * C + 20 * K)))]" "size of c1"

# ---- incremental backup from c1, creating c2 ----
cp "$tmp/disk.img" "$tmp/freeze1"
r="$($QMP "$tmp/q.sock" backup-begin \
      '{"id": "inc1", "incremental": "c1", "checkpoint": {"name": "c2"}}')"
assert_eq "$r" '{"id": "inc1", "exports": [{"node": "d0", "export": "d0@inc1", "size": '$SIZE'}]}' "backup-begin inc1"
inc1=$(nbd_uri d0@inc1 "$kitsock")
r="$(qmp_get "$tmp/q.sock" query-backups '' \
      '[(b["id"], b.get("checkpoint"), b.get("incremental"), b["status"]) for b in r]')"
assert_eq "$r" "[('inc1', 'c2', 'c1', 'active')]" "query-backups, inc1"
$PY "$abs_srcdir/backup_map.py" "$inc1" $C "$CHANGED1" "$ZERO1"

# Guest writes after the freeze: to a covered chunk (saved), over a
# whole covered chunk with zeroes (saved), and to chunks the backup does
# not cover (not saved).
qio "$live" 'write -P 0x66 1M 4k' 'write -z 3M 64k' 'write -P 0x77 0 64k' \
    'write -P 0x78 5M 8k' 'flush'
r="$(qmp_get "$tmp/q.sock" query-backups '' 'r[0]["copied-bytes"]')"
assert_eq "$r" $((4 * K + 64 * K)) "copied-bytes of inc1 (covered chunks only)"
# The map is the same after those writes.
$PY "$abs_srcdir/backup_map.py" "$inc1" $C "$CHANGED1" "$ZERO1"

# Uncovered chunks: unchanged ones read the (frozen) data, changed ones
# fail with EIO; covered chunks read the frozen data.
$PY - "$inc1" "$tmp/freeze1" <<'EOF'
import errno, nbd
from testlib import *
uri, ref = script_args(str, file_bytes)
h = nbd_open(uri)
K = 1024
assert h.is_read_only()
assert h.pread(64 * K, 64 * K) == ref[64 * K:128 * K]     # chunk 1
assert h.pread(64 * K, 1024 * K) == ref[1024 * K:1088 * K]  # chunk 16
for off, n in ((0, 64 * K), (4 * K, 512), (5 * K * K, 4 * K),
               (5 * K * K - 4 * K, 12 * K)):
    try:
        h.pread(n, off)
    except nbd.Error as e:
        assert e.errnum == errno.EIO, (off, n, e)
    else:
        raise AssertionError("read of changed uncovered [%d, +%d) worked"
                             % (off, n))
# A read spanning covered and changed uncovered chunks fails too.
try:
    h.pread(128 * K, 0)
except nbd.Error:
    pass
else:
    raise AssertionError("read across chunk 0 and 1 worked")
# The connection still works after those errors.
assert h.pread(4096, 3 * 64 * K) == ref[3 * 64 * K:3 * 64 * K + 4096]
h.shutdown()
EOF

# Apply inc1 onto the full backup: the disk at the second freeze.
cp "$tmp/full.img" "$tmp/restore.img"
$PY "$abs_srcdir/incremental_apply.py" --json "$inc1" "$tmp/restore.img" \
    > "$tmp/inc1.json"
cmp "$tmp/freeze1" "$tmp/restore.img" || fail "full + inc1 differs from the disk"
r="$($PY -c '
import json, sys
s = json.load(open(sys.argv[1]))
print(s["read"] + s["zeroed"], s["skipped"], s["read"] < s["size"] // 4)' \
      "$tmp/inc1.json")"
assert_eq "$r" "$((10 * C + 20 * K)) $((SIZE - 10 * C - 20 * K)) True" \
          "bytes applied from inc1"
$QMP "$tmp/q.sock" backup-end '{"id": "inc1"}' > /dev/null

# ---- a second incremental, from c2 ----
# c2 was created at inc1's freeze, so it has the writes made while
# inc1 was being read (chunks 0, 16, 48, 80) and these.
qio "$live" 'write -P 0x88 5M 128k' 'write -P 0x99 200k 1' \
    'write -P 0xaa 8M 20k' 'flush'
CHANGED2="0 3 16 48 80 81 128"
cp "$tmp/disk.img" "$tmp/freeze2"
r="$($QMP "$tmp/q.sock" backup-begin \
      '{"id": "inc2", "incremental": "c2", "checkpoint": {"name": "c3"}}')"
inc2=$(nbd_uri d0@inc2 "$kitsock")
$PY "$abs_srcdir/backup_map.py" "$inc2" $C "$CHANGED2" ""
# The guest keeps writing; the chain still restores the freeze.
qio "$live" 'write -P 0xbb 0 1M' 'write -z 5M 1M'
$PY "$abs_srcdir/incremental_apply.py" "$inc2" "$tmp/restore.img"
cmp "$tmp/freeze2" "$tmp/restore.img" || fail "full + inc1 + inc2 differs"
$QMP "$tmp/q.sock" backup-end '{"id": "inc2"}' > /dev/null

# The chain of checkpoints: c1 -> c2 -> c3 (current).
r="$(qmp_get "$tmp/q.sock" query-checkpoints '' \
      '[(c["name"], c.get("parent"), c["current"]) for c in r]')"
assert_eq "$r" "[('c1', None, False), ('c2', 'c1', False), ('c3', 'c2', True)]" \
          "checkpoints at the end"
# An incremental from c1 now covers everything since the full backup.
cp "$tmp/disk.img" "$tmp/freeze3"
$QMP "$tmp/q.sock" backup-begin '{"id": "inc3", "incremental": "c1"}' >/dev/null
cp "$tmp/full.img" "$tmp/restore3.img"
$PY "$abs_srcdir/incremental_apply.py" "$(nbd_uri d0@inc3 "$kitsock")" \
    "$tmp/restore3.img"
cmp "$tmp/freeze3" "$tmp/restore3.img" || fail "full + inc(c1) differs"
$QMP "$tmp/q.sock" backup-end '{"id": "inc3"}' > /dev/null

# ---- the chain survives a restart ----
# Since c3 (inc2's freeze): chunks 0-15 and 80-95; then, after a clean
# restart with the same state=, chunk 112.
$QMP "$tmp/q.sock" quit > /dev/null
wait_exit $pid
assert_eq "$exit_status" 0 "exit status after quit"
start_nbdkit kit2 --filter="$FILTER" file "$tmp/disk.img" node-name=d0 \
             qmp="$tmp/q2.sock" state="$tmp/state"
kitsock=$sock
qio "$(nbd_uri '' "$kitsock")" 'write -P 0xcc 7M 4k' 'flush'
cp "$tmp/disk.img" "$tmp/freeze4"
$QMP "$tmp/q2.sock" backup-begin \
     '{"id": "inc4", "incremental": "c3", "checkpoint": {"name": "c4"}}' >/dev/null
inc4=$(nbd_uri d0@inc4 "$kitsock")
$PY "$abs_srcdir/backup_map.py" "$inc4" $C "$(seq -s ' ' 0 15) $(seq -s ' ' 80 95) 112" ""
$PY "$abs_srcdir/incremental_apply.py" "$inc4" "$tmp/restore.img"
cmp "$tmp/freeze4" "$tmp/restore.img" || fail "full + inc1 + inc2 + inc4 differs"
$QMP "$tmp/q2.sock" backup-end '{"id": "inc4"}' > /dev/null
