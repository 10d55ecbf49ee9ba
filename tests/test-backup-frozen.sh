#!/usr/bin/env bash
# Pull backup: the exports show the disks frozen at the instant
# backup-begin ran, whatever the guest writes while they are read.
#
# The filter runs over qmpdisk with two disks.  Each freeze instant is
# copied with cp while no writer runs; then a libnbd writer
# (backup_writer.py: random writes, zeroes and trims, keeping a model
# of the disk) runs while nbdcopy (several at once), qemu-img convert
# and nbdfuse read the exports, and every copy must equal the freeze,
# byte for byte.  The writer's model must equal the disk afterwards
# (copy-before-write does not disturb guest writes), and the writer
# must have made progress while the readers ran.  Two backups with
# different freeze points are read at once.  The disk size is not a
# multiple of 4 KiB, and the writer also writes its last bytes.
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e
set -x

requires_built "$PLUGIN" "$FILTER"
requires nbdkit --version
requires nbdinfo --version
requires nbdcopy --version
requires qemu-io --version
requires qemu-img --version
requires $PY -c 'import nbd'
tmpdir

SIZE=$(( 8 * 1024 * 1024 + 2560 ))    # a multiple of 512, not of 4096
# sda: random data, a hole at [2M, 3M) and zeros at [5M, 5M+64k).
head -c $SIZE /dev/urandom > "$tmp/sda.img"
fallocate -p -o $((2 * 1024 * 1024)) -l $((1024 * 1024)) "$tmp/sda.img"
dd if=/dev/zero of="$tmp/sda.img" bs=64k seek=80 count=1 conv=notrunc \
   2>/dev/null
head -c 2M /dev/urandom > "$tmp/sdb.img"

start_nbdkit kit --filter="$FILTER" "$PLUGIN" \
             disk=sda:"$tmp/sda.img" disk=sdb:"$tmp/sdb.img" \
             qmp="$tmp/q.sock" state="$tmp/state"
kitsock=$sock
sda=$(nbd_uri sda "$kitsock")
sdb=$(nbd_uri sdb "$kitsock")

# A pattern written by the guest before the backup.
qio "$sda" 'write -P 0x5a 64k 192k' 'write -P 0xa5 8388608 2560' 'flush'
qio "$sdb" 'write -P 0x33 1M 4k' 'flush'

# wait_ops STATUSFILE N: until the writer has done at least N requests.
wait_ops ()
{
    local i
    for (( i = 0; i < 400; ++i )); do
        if [ -s "$1" ] && [ "$(cat "$1")" -ge "$2" ]; then return 0; fi
        sleep 0.05
    done
    fail "writer ($1) did not reach $2 requests"
}

# ---- freeze 1: both disks ----
# The freeze instant: nothing writes now, so the files are the disks.
cp "$tmp/sda.img" "$tmp/freeze1-sda"
cp "$tmp/sdb.img" "$tmp/freeze1-sdb"
r="$($QMP "$tmp/q.sock" backup-begin '{"id": "b1"}')"
assert_eq "$r" '{"id": "b1", "exports": [{"node": "sda", "export": "sda@b1", "size": '$SIZE'}, {"node": "sdb", "export": "sdb@b1", "size": 2097152}]}' "backup-begin b1"
assert_eq "$(exports "$kitsock" | tr '\n' ' ')" \
          "sda $SIZE sda@b1 $SIZE sdb 2097152 sdb@b1 2097152 " "exports with b1"
b1a=$(nbd_uri sda@b1 "$kitsock")
b1b=$(nbd_uri sdb@b1 "$kitsock")
assert_eq "$(size "$b1a")" $SIZE "size of sda@b1"
# The backup exports are read-only.
nbdinfo --json "$b1a" > "$tmp/info.json"
assert_grep '"is_read_only": true' "$tmp/info.json"

# The guest writes sdb after the freeze (qemu-io), and sda with the
# random writer while the readers run.
qio "$sdb" 'write -P 0xee 0 1M' 'write -z 1M 512k' 'discard 1536k 512k'
$PY "$abs_srcdir/backup_writer.py" --seed 1 --stop "$tmp/stop1" \
    --status "$tmp/ops1" "$sda" "$tmp/freeze1-sda" "$tmp/model1" \
    > "$tmp/writer1.out" &
writer=$!
cleanup_fn kill_nbdkit "$writer"
wait_ops "$tmp/ops1" 100
before=$(cat "$tmp/ops1")

# Several readers at once: three nbdcopy, qemu-img convert, nbdfuse
# (each with a time limit: a deadlock must fail the test, not hang it).
T="timeout 60"
$T nbdcopy "$b1a" "$tmp/c1.raw" & r1=$!
$T nbdcopy --connections=4 --requests=16 "$b1a" "$tmp/c2.raw" & r2=$!
$T nbdcopy --request-size=4096 "$b1a" "$tmp/c3.raw" & r3=$!
$T qemu-img convert -f raw -O raw "$b1a" "$tmp/q1.raw" & r4=$!
fuse=no
if ! [ -c /dev/fuse ] || ! command -v nbdfuse >/dev/null ||
   ! command -v fusermount3 >/dev/null; then
    echo "$0: no /dev/fuse, nbdfuse or fusermount3: nbdfuse not tested"
else
    mkdir "$tmp/mnt"
    rm -f "$tmp/fuse.pid"
    nbdfuse -r -P "$tmp/fuse.pid" "$tmp/mnt/disk" "$b1a" \
            2>"$tmp/nbdfuse.log" &
    fusepid=$!
    for (( i = 0; i < 200; ++i )); do
        [ -s "$tmp/fuse.pid" ] && break
        kill -0 $fusepid 2>/dev/null || break
        sleep 0.05
    done
    if [ -s "$tmp/fuse.pid" ]; then
        fuse=yes
        cleanup_fn fusermount3 -u "$tmp/mnt"
        $T cat "$tmp/mnt/disk" > "$tmp/fuse.raw"
        fusermount3 -u "$tmp/mnt"
        wait $fusepid
    else
        cat "$tmp/nbdfuse.log"
        echo "$0: nbdfuse cannot mount here (no FUSE?), not testing it"
        if [ "$CI" = true ]; then fail "nbdfuse did not mount"; fi
    fi
fi
for p in $r1 $r2 $r3 $r4; do wait $p || fail "reader $p failed"; done
during=$(cat "$tmp/ops1")
touch "$tmp/stop1"
wait $writer || fail "writer 1 failed"
test "$during" -gt "$before" ||
    fail "the writer made no progress while the backup was read"

for f in c1.raw c2.raw c3.raw q1.raw; do
    cmp "$tmp/freeze1-sda" "$tmp/$f" || fail "$f differs from the freeze"
done
if [ $fuse = yes ]; then
    cmp "$tmp/freeze1-sda" "$tmp/fuse.raw" || fail "nbdfuse read differs"
fi
nbdcopy "$b1b" "$tmp/sdb-b1.raw"
cmp "$tmp/freeze1-sdb" "$tmp/sdb-b1.raw" || fail "sdb@b1 differs"
# The guest's writes all landed.
cmp "$tmp/model1" "$tmp/sda.img" || fail "sda differs from the writer's model"
! cmp -s "$tmp/freeze1-sda" "$tmp/sda.img" || fail "the writer changed nothing"
qio "$sdb" 'read -P 0xee 0 1M' 'read -P 0 1M 1M'

# copied-bytes counts what copy-before-write saved.
r="$(qmp_get "$tmp/q.sock" query-backups '' \
      '"%s %s %s" % (len(r), r[0]["status"], r[0]["copied-bytes"] > 0)')"
assert_eq "$r" "1 active True" "query-backups during b1"

# ---- freeze 2: sda only, custom export name, while b1 lives ----
cp "$tmp/sda.img" "$tmp/freeze2-sda"
r="$($QMP "$tmp/q.sock" backup-begin \
      '{"id": "b2", "disks": [{"node": "sda", "export": "second"}]}')"
assert_eq "$r" '{"id": "b2", "exports": [{"node": "sda", "export": "second", "size": '$SIZE'}]}' "backup-begin b2"
b2a=$(nbd_uri second "$kitsock")
assert_eq "$(exports "$kitsock" | tr '\n' ' ')" \
          "sda $SIZE sda@b1 $SIZE sdb 2097152 sdb@b1 2097152 second $SIZE " \
          "exports with b1 and b2"

$PY "$abs_srcdir/backup_writer.py" --seed 2 --stop "$tmp/stop2" \
    --status "$tmp/ops2" "$sda" "$tmp/freeze2-sda" "$tmp/model2" \
    > "$tmp/writer2.out" &
writer=$!
cleanup_fn kill_nbdkit "$writer"
wait_ops "$tmp/ops2" 100
before=$(cat "$tmp/ops2")
$T nbdcopy "$b1a" "$tmp/d1.raw" & r1=$!
$T nbdcopy "$b2a" "$tmp/d2.raw" & r2=$!
$T qemu-img convert -f raw -O raw "$b2a" "$tmp/q2.raw" & r3=$!
# A libnbd client reading both exports in small random pieces.
$T $PY - "$b1a" "$tmp/freeze1-sda" "$b2a" "$tmp/freeze2-sda" <<'EOF' & r4=$!
import random
from testlib import *
b1, ref1, b2, ref2 = script_args(str, str, str, str)
rnd = random.Random(3)
for uri, ref in ((b1, ref1), (b2, ref2)):
    data = open(ref, "rb").read()
    h = nbd_open(uri)
    for _ in range(300):
        n = rnd.randint(1, 200000)
        off = rnd.randint(0, len(data) - n)
        assert h.pread(n, off) == data[off:off + n], (uri, off, n)
    h.shutdown()
EOF
for p in $r1 $r2 $r3 $r4; do wait $p || fail "reader $p failed"; done
during=$(cat "$tmp/ops2")
touch "$tmp/stop2"
wait $writer || fail "writer 2 failed"
test "$during" -gt "$before" ||
    fail "the writer made no progress while the backups were read"
cmp "$tmp/freeze1-sda" "$tmp/d1.raw" || fail "b1 differs after a second backup"
cmp "$tmp/freeze2-sda" "$tmp/d2.raw" || fail "b2 differs from its freeze"
cmp "$tmp/freeze2-sda" "$tmp/q2.raw" || fail "qemu-img read of b2 differs"
cmp "$tmp/model2" "$tmp/sda.img" || fail "sda differs from the writer's model"
! cmp -s "$tmp/freeze1-sda" "$tmp/freeze2-sda" || fail "no change between freezes"

r="$(qmp_get "$tmp/q.sock" query-backups '' \
      '" ".join(sorted("%s:%s" % (b["id"], b["status"]) for b in r))')"
assert_eq "$r" "b1:active b2:active" "query-backups with two backups"

# Ending b1 leaves b2 intact.
$QMP "$tmp/q.sock" backup-end '{"id": "b1"}' > /dev/null
nbdcopy "$b2a" "$tmp/e2.raw"
cmp "$tmp/freeze2-sda" "$tmp/e2.raw" || fail "b2 differs after b1 ended"
$QMP "$tmp/q.sock" backup-end '{"id": "b2"}' > /dev/null
assert_eq "$(exports "$kitsock" | tr '\n' ' ')" "sda $SIZE sdb 2097152 " \
          "exports after the backups ended"
assert_eq "$($QMP "$tmp/q.sock" query-backups)" "[]" "query-backups after b1, b2"

# ---- freeze 3: while the writer runs, with a checkpoint ----
# The writer logs the sha256 of the disk after each request and when
# each request started and ended; the export must be one of the states
# between the last request that ended before backup-begin was sent and
# the last one that started before its reply came back: the freeze is
# one instant between two guest requests.
cp "$tmp/sda.img" "$tmp/start3"
$PY "$abs_srcdir/backup_writer.py" --seed 4 --stop "$tmp/stop3" \
    --status "$tmp/ops3" --hash-log "$tmp/hashes3" \
    "$sda" "$tmp/start3" "$tmp/model3" > "$tmp/writer3.out" &
writer=$!
cleanup_fn kill_nbdkit "$writer"
wait_ops "$tmp/ops3" 20
$PY - "$tmp/q.sock" > "$tmp/begin3.times" <<'EOF'
import time
from testlib import *
[qsock] = script_args(str)
with connect(qsock) as m:
    t0 = time.monotonic()
    m.command("backup-begin", {"id": "b3", "disks": [{"node": "sda"}],
                               "checkpoint": {"name": "c3"}})
    t1 = time.monotonic()
print("%.6f %.6f" % (t0, t1))
EOF
wait_ops "$tmp/ops3" $(( $(cat "$tmp/ops3") + 20 ))
$T nbdcopy "$(nbd_uri sda@b3 "$kitsock")" "$tmp/b3.raw"
touch "$tmp/stop3"
wait $writer || fail "writer 3 failed"
cmp "$tmp/model3" "$tmp/sda.img" || fail "sda differs from the writer's model"
$PY - "$tmp/hashes3" "$tmp/begin3.times" "$tmp/b3.raw" <<'EOF'
import hashlib, sys
t0, t1 = map(float, open(sys.argv[2]).read().split())
log = [l.split() for l in open(sys.argv[1])]
sha = {int(k): h for k, s, e, h in log}
kmin = sum(1 for k, s, e, h in log[1:] if float(e) < t0)
kmax = sum(1 for k, s, e, h in log[1:] if float(s) < t1)
got = hashlib.sha256(open(sys.argv[3], "rb").read()).hexdigest()
ok = [k for k in range(kmin, kmax + 1) if sha[k] == got]
print("freeze after request %s (window %d-%d of %d)" % (ok, kmin, kmax,
                                                        len(log) - 1))
assert len(log) - 1 > kmax + 5, "the writer stopped too early"
assert ok, "b3 is none of the states of the disk around backup-begin"
EOF
$QMP "$tmp/q.sock" backup-end '{"id": "b3"}' > /dev/null
# c3 was created at that same instant: the incremental from c3 applied
# onto b3 gives the disk as it is now.
cp "$tmp/sda.img" "$tmp/freeze4"
$QMP "$tmp/q.sock" backup-begin \
     '{"id": "b4", "incremental": "c3", "disks": [{"node": "sda"}]}' >/dev/null
cp "$tmp/b3.raw" "$tmp/restore4"
$PY "$abs_srcdir/incremental_apply.py" "$(nbd_uri sda@b4 "$kitsock")" \
    "$tmp/restore4"
cmp "$tmp/freeze4" "$tmp/restore4" || fail "b3 + incremental from c3 differs"
$QMP "$tmp/q.sock" backup-end '{"id": "b4"}' > /dev/null
assert_eq "$($QMP "$tmp/q.sock" query-backups)" "[]" "query-backups at the end"
