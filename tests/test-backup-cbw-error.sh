#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# Copy-before-write into a scratch store that fills up (scratch= on a
# 256 KiB tmpfs):
# - on-cbw-error=break-snapshot (the default): the guest write that
#   does not fit succeeds and lands; the backup is failed with an error
#   that says why (no space), its exports fail reads (also of what was
#   saved) and refuse new connections; backup-end frees the scratch;
# - on-cbw-error=break-guest-write: the guest write fails (ENOSPC or
#   EIO) and changes nothing; the backup stays active and its export
#   still returns the frozen data everywhere; writes that need no new
#   scratch space still work; after backup-end the write works.
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e
set -x

requires_built "$FILTER"
requires nbdkit --version
requires nbdinfo --version
requires nbdcopy --version
requires qemu-io --version
requires $PY -c 'import nbd'
tmpdir

K=1024
mount_tmpfs "$tmp/scratch" 256k
used () { df --output=used -B1 "$tmp/scratch" | tail -n 1 | tr -d ' '; }
assert_eq "$(df --output=size -B1 "$tmp/scratch" | tail -n 1 | tr -d ' ')" \
          $((256 * K)) "size of the scratch tmpfs"

head -c 4M /dev/urandom > "$tmp/disk.img"
start_nbdkit kit --filter="$FILTER" file "$tmp/disk.img" node-name=d0 \
             qmp="$tmp/q.sock" state="$tmp/state" scratch="$tmp/scratch"
kitsock=$sock kitpid=$pid
live=$(nbd_uri '' "$kitsock")

# expect FILE CMDS...: FILE with the python statements applied to
# bytearray d (the expected disk), written to $tmp/expect.
expect ()
{
    $PY -c "
import sys
d = bytearray(open(sys.argv[1], 'rb').read())
exec(sys.argv[2])
open(sys.argv[3], 'wb').write(d)" "$1" "$2" "$tmp/expect"
}

# ---- what is saved, and where ----
# Copy-before-write saves whole 4 KiB blocks, once each, to an
# unlinked file: nothing shows in the scratch directory.
cp "$tmp/disk.img" "$tmp/freeze0"
$QMP "$tmp/q.sock" backup-begin '{"id": "b0"}' > /dev/null
copied () { qmp_get "$1" query-backups '' 'r[0]["copied-bytes"]'; }
qio "$live" 'write -P 1 5000 1'
assert_eq "$(copied "$tmp/q.sock")" 4096 "copied-bytes after a 1-byte write"
qio "$live" 'write -P 2 7936 512'           # blocks 1 (saved) and 2
assert_eq "$(copied "$tmp/q.sock")" 8192 "copied-bytes after a straddling write"
qio "$live" 'write -P 3 5001 1' 'write -z 4096 8192'
assert_eq "$(copied "$tmp/q.sock")" 8192 "copied-bytes after rewrites"
test "$(used)" -ge 8192 || fail "scratch is not in scratch="
assert_eq "$(ls -A "$tmp/scratch")" "" "files visible in scratch="
nbdcopy "$(nbd_uri d0@b0 "$kitsock")" "$tmp/b0.raw"
cmp "$tmp/freeze0" "$tmp/b0.raw" || fail "b0 differs from its freeze"
$QMP "$tmp/q.sock" backup-end '{"id": "b0"}' > /dev/null
test "$(used)" -lt 8192 || fail "scratch not freed: $(used) bytes used"

# scratch_elsewhere NAME: with nbdkit NAME (no scratch=) started, a
# backup saves 128 KiB into the tmpfs, invisibly.
scratch_elsewhere ()
{
    local q="$tmp/$1.qmp" u
    u="$(nbd_uri '' "$sock")"
    $QMP "$q" backup-begin '{"id": "x"}' > /dev/null
    qio "$u" 'write -P 7 0 128k'
    assert_eq "$(copied "$q")" $((128 * K)) "copied-bytes ($1)"
    test "$(used)" -ge $((128 * K)) ||
        fail "$1: scratch is not on the tmpfs ($(used) bytes used)"
    assert_eq "$(find "$tmp/scratch" -type f -size +100k)" "" \
              "scratch files visible ($1)"
    $QMP "$q" backup-end '{"id": "x"}' > /dev/null
    test "$(used)" -lt $((64 * K)) || fail "$1: scratch not freed"
    kill_nbdkit $pid
}
# Without scratch=, in state=.
head -c 1M /dev/urandom > "$tmp/small.img"
start_nbdkit st --filter="$FILTER" file "$tmp/small.img" \
             qmp="$tmp/st.qmp" state="$tmp/scratch/state"
scratch_elsewhere st
# Without scratch= or state=, in $TMPDIR.
TMPDIR="$tmp/scratch" start_nbdkit td --filter="$FILTER" file "$tmp/small.img" \
             qmp="$tmp/td.qmp"
scratch_elsewhere td
rm -rf "$tmp/scratch/state"
# A scratch directory that does not exist: backup-begin says so.
start_nbdkit nd --filter="$FILTER" file "$tmp/small.img" \
             qmp="$tmp/nd.qmp" scratch="$tmp/nonexistent"
$PY - "$tmp/nd.qmp" "$tmp/nonexistent" <<'EOF'
import sys
from testlib import *
with connect(sys.argv[1]) as m:
    cls, desc = m.error("backup-begin", {"id": "x"})
    assert cls == "GenericError" and sys.argv[2] in desc, (cls, desc)
    print(desc)
    assert m.command("query-backups") == []
EOF
kill_nbdkit $pid

# ---- break-guest-write ----
cp "$tmp/disk.img" "$tmp/freeze2"
$QMP "$tmp/q.sock" backup-begin \
     '{"id": "b2", "on-cbw-error": "break-guest-write"}' > /dev/null
b2=$(nbd_uri d0@b2 "$kitsock")
qio "$live" 'write -P 0x33 0 192k'          # fits: 192 KiB saved
# 256 KiB of frozen data does not fit in the 64 KiB left: the write
# fails, through qemu-io and through libnbd.
if qemu-io -f raw "$live" -c 'write -P 0x44 1M 256k' > "$tmp/qio.out" 2>&1 &&
   ! grep -qiE 'failed|error' "$tmp/qio.out"; then
    cat "$tmp/qio.out"
    fail "a guest write that does not fit in scratch worked"
fi
cat "$tmp/qio.out"
assert_grep 'No space left on device|Input/output error' "$tmp/qio.out"
$PY - "$live" <<'EOF'
import errno, nbd
from testlib import *
[live] = script_args(str)
h = nbd_open(live)
for off, n in ((2 << 20, 256 * 1024), (3 << 20, 1 << 20)):
    try:
        h.pwrite(b"\x45" * n, off)
    except nbd.Error as e:
        assert e.errnum in (errno.ENOSPC, errno.EIO), e
    else:
        raise AssertionError("write of %d bytes at %d worked" % (n, off))
# Writes over blocks already saved need no scratch: they work.
h.pwrite(b"\x55" * 65536, 0)
h.pwrite(b"\x56" * 1000, 70000)
h.shutdown()
EOF
expect "$tmp/freeze2" 'd[0:192*1024] = b"\x33" * (192*1024); d[0:65536] = b"\x55" * 65536; d[70000:71000] = b"\x56" * 1000'
cmp "$tmp/expect" "$tmp/disk.img" ||
    fail "failed guest writes changed the disk (or good ones were lost)"
r="$(qmp_get "$tmp/q.sock" query-backups '' \
      '"%s %s" % (r[0]["status"], "error" in r[0])')"
assert_eq "$r" "active False" "b2 after refused guest writes"
# The export returns the frozen data, what was saved included.
nbdcopy "$b2" "$tmp/b2.raw"
cmp "$tmp/freeze2" "$tmp/b2.raw" || fail "b2 differs from its freeze"
$QMP "$tmp/q.sock" backup-end '{"id": "b2"}' > /dev/null
test "$(used)" -lt $((16 * K)) || fail "scratch not freed: $(used) bytes used"
# Without a backup the same write works.
qio "$live" 'write -P 0x44 1M 256k' 'read -P 0x44 1M 256k'

# ---- break-snapshot ----
cp "$tmp/disk.img" "$tmp/freeze1"
$QMP "$tmp/q.sock" backup-begin '{"id": "b1"}' > /dev/null
b1=$(nbd_uri d0@b1 "$kitsock")
qio "$live" 'write -P 0x11 0 128k'          # fits: 128 KiB saved
r="$(qmp_get "$tmp/q.sock" query-backups '' \
      '"%s %d %s" % (r[0]["status"], r[0]["copied-bytes"], "error" in r[0])')"
assert_eq "$r" "active $((128 * K)) False" "b1 after a write that fits"
test "$(used)" -ge $((128 * K)) || fail "scratch is not on the tmpfs"
# A connection opened before the failure.
$PY - "$b1" "$tmp/freeze1" "$tmp/b1.ready" "$tmp/b1.go" "$tmp/b1.out" <<'EOF' &
import errno, nbd, os, time
from testlib import *
uri, ref, ready, go, result = script_args(str, file_bytes, str, str, str)
h = nbd_open(uri)
assert h.pread(128 * 1024, 0) == ref[:128 * 1024]
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.02)
out = []
for off in (0, 1 << 20, 3 << 20):         # saved, being written, untouched
    try:
        h.pread(4096, off)
        out.append("ok")
    except nbd.Error as e:
        out.append(errno.errorcode.get(e.errnum, str(e.errnum)))
open(result, "w").write(" ".join(out) + "\n")
h.shutdown()
EOF
reader=$!
for (( i = 0; i < 200; ++i )); do [ -e "$tmp/b1.ready" ] && break; sleep 0.05; done
test -e "$tmp/b1.ready" || fail "reader did not start"
# 1 MiB of frozen data does not fit in what is left: the guest write
# still succeeds and lands.
qio "$live" 'write -P 0x22 1M 1M' 'read -P 0x22 1M 1M'
expect "$tmp/freeze1" 'd[0:128*1024] = b"\x11" * (128*1024); d[1<<20:2<<20] = b"\x22" * (1<<20)'
cmp "$tmp/expect" "$tmp/disk.img" || fail "guest data after break-snapshot"
r="$(qmp_get "$tmp/q.sock" query-backups '' \
      '"%s|%s" % (r[0]["status"], r[0].get("error", ""))')"
case "$r" in
    failed\|*[Ss]pace*) ;;
    *) fail "b1 after the scratch filled up: expected failed with an error about space, got '$r'" ;;
esac
touch "$tmp/b1.go"
wait $reader || fail "reader of b1 failed"
assert_eq "$(cat "$tmp/b1.out")" "EIO EIO EIO" "reads of a failed backup"
# Guest writes go on working.
qio "$live" 'write -P 0x23 3M 512k' 'read -P 0x23 3M 512k'
# A failed backup's export refuses new connections.
! nbdinfo "$b1" > "$tmp/out" 2>&1 ||
    fail "a new connection to the failed backup's export worked"
$QMP "$tmp/q.sock" backup-end '{"id": "b1"}' > /dev/null
assert_eq "$($QMP "$tmp/q.sock" query-backups)" "[]" "after backup-end b1"
test "$(used)" -lt $((16 * K)) || fail "scratch not freed: $(used) bytes used"
kill -0 $kitpid || fail "nbdkit died"

