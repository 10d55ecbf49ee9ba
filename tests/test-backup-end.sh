#!/usr/bin/env bash
# The end of pull backups, and their mistakes:
# - backup-end ends the exports: connections held open get EIO on
#   reads and block status, new connections are refused, the export is
#   no longer listed, the live disk is untouched, and the same id can
#   begin a new backup (with a new freeze) while an old connection to
#   the ended one is still open;
# - backup-end success=false deletes the checkpoint the backup created
#   (full or incremental), so that the next incremental from the older
#   checkpoint covers every change since that one (exact map);
# - bad arguments answer GenericError with a clear desc and change
#   nothing (no backup, export or checkpoint left behind);
# - backup-begin in a transaction that fails is rolled back with the
#   other actions; one that succeeds takes effect at one instant.
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e
set -x

requires_built "$PLUGIN" "$FILTER"
requires nbdkit --version
requires nbdinfo --version
requires qemu-io --version
requires qemu-img --version
requires $PY -c 'import nbd'
tmpdir

K=1024
C=$((64 * K))
head -c 4M /dev/urandom > "$tmp/disk.img"
start_nbdkit kit --filter="$FILTER" file "$tmp/disk.img" node-name=d0 \
             qmp="$tmp/q.sock" state="$tmp/state"
kitsock=$sock kitpid=$pid
live=$(nbd_uri '' "$kitsock")

# ---- success=false deletes the backup's checkpoint ----
$QMP "$tmp/q.sock" backup-begin '{"id": "full", "checkpoint": {"name": "c1"}}' >/dev/null
$QMP "$tmp/q.sock" backup-end '{"id": "full"}' > /dev/null
qio "$live" 'write -P 1 640k 4k'                        # chunk 10, W1
$QMP "$tmp/q.sock" backup-begin \
     '{"id": "b2", "incremental": "c1", "checkpoint": {"name": "c2"}}' >/dev/null
$PY "$abs_srcdir/backup_map.py" "$(nbd_uri d0@b2 "$kitsock")" $C "10"
qio "$live" 'write -P 2 1280k 4k'                       # chunk 20, W2
r="$(qmp_get "$tmp/q.sock" query-checkpoints '' '[c["name"] for c in r]')"
assert_eq "$r" "['c1', 'c2']" "checkpoints during b2"
$QMP "$tmp/q.sock" backup-end '{"id": "b2", "success": false}' > /dev/null
r="$(qmp_get "$tmp/q.sock" query-checkpoints '{"size": true}' \
      '[(c["name"], c["current"], c["children"], c["disks"][0]["size"]) for c in r]')"
assert_eq "$r" "[('c1', True, [], $((2 * C)))]" "checkpoints after b2 failed"
r="$(qmp_get "$tmp/q.sock" query-named-block-nodes '' \
      '[(b["name"], b["recording"], b["count"]) for b in r[0]["dirty-bitmaps"]]')"
assert_eq "$r" "[('c1', True, $((2 * C)))]" "bitmaps after b2 failed"
qio "$live" 'write -P 3 1920k 4k'                       # chunk 30, W3
# A full backup with a checkpoint that fails: its checkpoint goes too.
$QMP "$tmp/q.sock" backup-begin '{"id": "b4", "checkpoint": {"name": "c4"}}' >/dev/null
qio "$live" 'write -P 4 2560k 4k'                       # chunk 40, W4
$QMP "$tmp/q.sock" backup-end '{"id": "b4", "success": false}' > /dev/null
r="$(qmp_get "$tmp/q.sock" query-checkpoints '' '[(c["name"], c["current"]) for c in r]')"
assert_eq "$r" "[('c1', True)]" "checkpoints after b4 failed"
# The next incremental from c1 covers W1 to W4.
cp "$tmp/disk.img" "$tmp/freeze3"
$QMP "$tmp/q.sock" backup-begin '{"id": "b3", "incremental": "c1"}' >/dev/null
b3=$(nbd_uri d0@b3 "$kitsock")
$PY "$abs_srcdir/backup_map.py" "$b3" $C "10 20 30 40"
# Garbage in chunks 10-40 of a copy: the incremental must repair them.
cp "$tmp/freeze3" "$tmp/restore"
$PY -c '
import sys
with open(sys.argv[1], "r+b") as f:
    for c in (10, 20, 30, 40):
        f.seek(c * 65536); f.write(b"\xff" * 65536)' "$tmp/restore"
$PY "$abs_srcdir/incremental_apply.py" "$b3" "$tmp/restore"
cmp "$tmp/freeze3" "$tmp/restore" || fail "incremental after failures differs"
# success=false without a checkpoint of its own deletes nothing.
$QMP "$tmp/q.sock" backup-end '{"id": "b3", "success": false}' > /dev/null
r="$(qmp_get "$tmp/q.sock" query-checkpoints '' '[c["name"] for c in r]')"
assert_eq "$r" "['c1']" "checkpoints after b3 failed"

# ---- bad arguments ----
$PY - "$tmp/q.sock" "$kitsock" <<'EOF'
from testlib import *
qsock, sock = script_args(str, str)

def state(m):
    return (m.command("query-backups"), m.command("query-checkpoints"),
            [b["name"] for b in
             m.command("query-named-block-nodes")[0]["dirty-bitmaps"]],
            sorted(nbd_exports(sock)))

with connect(qsock) as m:
    assert m.command("backup-begin", {"id": "dup"})["id"] == "dup"
    before = state(m)
    assert [b["id"] for b in before[0]] == ["dup"], before
    assert before[3] == ["", "d0@dup"], before

    def bad(cmd, args, *words):
        cls, desc = m.error(cmd, args)
        assert cls == "GenericError", (cmd, args, cls, desc)
        for w in words:
            assert w in desc, (cmd, args, desc, w)
        after = state(m)
        assert after == before, (cmd, args, before, after)
        print("%s %s: %s" % (cmd, args, desc))

    bad("backup-begin", {"incremental": "nope"}, "nope")
    bad("backup-begin", {"id": "x", "incremental": "nope",
                         "checkpoint": {"name": "cx"}}, "nope")
    bad("backup-begin", {"id": "dup"}, "dup")
    bad("backup-end", {"id": "ghost"}, "ghost")
    bad("backup-end", {}, "id")
    bad("backup-end", {"id": "dup", "success": "no"}, "success")
    bad("backup-begin", {"disks": [{"node": "d0"}, {"node": "d0"}]}, "d0")
    bad("backup-begin", {"id": "x", "disks": [{"node": "nonode"}]}, "nonode")
    bad("backup-begin", {"disks": [{}]}, "node")
    bad("backup-begin", {"disks": [{"node": "d0", "bogus": 1}]}, "bogus")
    bad("backup-begin", {"disks": ["d0"]}, "disks")
    bad("backup-begin", {"on-cbw-error": "explode"}, "on-cbw-error")
    bad("backup-begin", {"on-cbw-error": 1}, "on-cbw-error")
    bad("backup-begin", {"bogus": True}, "bogus")
    bad("backup-begin", {"id": 7}, "id")
    # The checkpoint exists already: no backup either.
    bad("backup-begin", {"id": "x", "checkpoint": {"name": "c1"}}, "c1")
    bad("backup-begin", {"id": "x", "checkpoint": {}}, "name")
    bad("backup-begin", {"id": "x", "checkpoint": {"name": "cy",
                                                  "bogus": 1}}, "bogus")
    # Export names must not clash with a disk's or a backup's.
    bad("backup-begin", {"id": "x", "disks": [{"node": "d0",
                                              "export": "d0@dup"}]}, "d0@dup")
    bad("backup-begin", {"id": "x", "disks": [{"node": "d0",
                                              "export": "d0"}]}, "d0")
    # Transactions: a failing one leaves nothing behind.
    bad("transaction", {"actions": [
        {"type": "backup-begin",
         "data": {"id": "tx", "checkpoint": {"name": "ctx1"}}},
        {"type": "checkpoint-create", "data": {"name": "ctx2"}},
        {"type": "abort", "data": {}}]})
    bad("transaction", {"actions": [
        {"type": "checkpoint-create", "data": {"name": "ctx3"}},
        {"type": "backup-begin", "data": {"id": "tx", "incremental": "c1"}},
        {"type": "block-dirty-bitmap-add", "data": {"node": "d0",
                                                    "name": "bm"}},
        {"type": "abort", "data": {}}]})
    bad("transaction", {"actions": [
        {"type": "backup-begin", "data": {"id": "tx"}},
        {"type": "backup-begin", "data": {"id": "tx"}}]}, "tx")
    bad("transaction", {"actions": [
        {"type": "backup-begin", "data": {"id": "tx"}},
        {"type": "backup-begin", "data": {"on-cbw-error": "no"}}]},
        "on-cbw-error")
    # The busy base checkpoint of an incremental backup is not changed.
    assert m.command("backup-begin", {"id": "inc", "incremental": "c1"})
    before = state(m)
    bad("block-dirty-bitmap-clear", {"node": "d0", "name": "c1"}, "c1")
    bad("block-dirty-bitmap-remove", {"node": "d0", "name": "c1"}, "c1")
    assert m.command("backup-end", {"id": "inc"}) == {}
    assert m.command("backup-end", {"id": "dup"}) == {}
EOF
assert_eq "$($QMP "$tmp/q.sock" query-backups)" "[]" "no backups left"

# ---- a transaction that succeeds: one instant ----
cp "$tmp/disk.img" "$tmp/freeze4"
$QMP "$tmp/q.sock" transaction '{"actions": [
    {"type": "backup-begin", "data": {"id": "t1"}},
    {"type": "checkpoint-create", "data": {"name": "t1c"}},
    {"type": "block-dirty-bitmap-add", "data": {"node": "d0", "name": "t1b"}}]}' \
    > /dev/null
qio "$live" 'write -P 5 0 4k' 'write -P 6 3M 64k'
nbdcopy "$(nbd_uri d0@t1 "$kitsock")" "$tmp/t1.raw"
cmp "$tmp/freeze4" "$tmp/t1.raw" || fail "backup begun in a transaction differs"
r="$(qmp_get "$tmp/q.sock" query-named-block-nodes '' \
      'sorted((b["name"], b["count"]) for b in r[0]["dirty-bitmaps"])')"
assert_eq "$r" "[('c1', $((4 * C))), ('t1b', $((2 * C))), ('t1c', $((2 * C)))]" \
          "bitmaps created with the backup"
$QMP "$tmp/q.sock" backup-end '{"id": "t1"}' > /dev/null
r="$(qmp_get "$tmp/q.sock" query-checkpoints '' '[(c["name"], c.get("parent")) for c in r]')"
assert_eq "$r" "[('c1', None), ('t1c', 'c1')]" "checkpoints at the end"
kill -0 $kitpid || fail "nbdkit died"

# ---- a backup export cannot take the live disk's export name ----
# Over a stock plugin the live disk's export is "": a backup export
# named "" would give the guest a read-only frozen view of its disk.
$PY - "$tmp/q.sock" <<'EOF'
from testlib import *
[qsock] = script_args(str)
with connect(qsock) as m:
    reply = m.cmd("backup-begin", {"id": "x",
                                   "disks": [{"node": "d0", "export": ""}]})
    if "return" in reply:
        m.command("backup-end", {"id": "x"})
        raise AssertionError("backup export named \"\" accepted: %r" % reply)
    assert reply["error"]["class"] == "GenericError", reply
    assert m.command("query-backups") == []
EOF
qio "$live" 'write -P 9 0 4k' 'read -P 9 0 4k'

# ---- backup-end ends the exports ----
# end_exports QMPSOCK NBDSOCK DISKFILE LIVE-EXPORT NODE: backup b1 of
# NODE, read, end it while two connections are open, begin b1 again.
end_exports ()
{
    cp "$3" "$tmp/freeze1"
    $PY - "$1" "$2" "$tmp/freeze1" "$3" "$4" "$5" <<'EOF'
import errno, nbd
from testlib import *
qsock, sock, ref, disk, live, node = script_args(str, str, file_bytes, str,
                                                 str, str)
backup = uri(sock, node + "@b1")
liveuri = uri(sock, live)

# A new connection to the backup export (this test's connect(), not
# testlib's QMP one: the monitor is m below).
def connect():
    return nbd_open(backup, base_allocation=True)

def must_fail(f, what):
    try:
        f()
    except nbd.Error as e:
        return e
    raise AssertionError("%s worked after backup-end" % what)

with QMP(qsock) as m:
    assert m.command("backup-begin", {"id": "b1"})["id"] == "b1"
    busy, idle = connect(), connect()
    assert busy.pread(65536, 0) == ref[:65536]
    w = nbd_open(liveuri)
    w.pwrite(b"\x42" * 65536, 0)
    assert busy.pread(65536, 0) == ref[:65536]
    assert m.command("backup-end", {"id": "b1"}) == {}
    assert m.command("query-backups") == []
    for h in (busy, idle):
        e = must_fail(lambda: h.pread(4096, 8192), "pread")
        assert e.errnum == errno.EIO, e
        must_fail(lambda: h.block_status(65536, 0, lambda *a: 0),
                  "block status")
    must_fail(connect, "a new connection")
    # The live disk is untouched and still writable.
    assert w.pread(65536, 0) == b"\x42" * 65536
    w.pwrite(b"\x43" * 4096, 65536)
    w.flush()
    # The same id again: a new freeze, while the old connections are
    # still open (and still failing).
    snap = open(disk, "rb").read()
    assert m.command("backup-begin", {"id": "b1"})["id"] == "b1"
    w.pwrite(b"\x44" * 65536, 0)
    again = connect()
    assert again.pread(len(snap), 0) == snap
    e = must_fail(lambda: busy.pread(4096, 0), "pread on the old backup")
    assert e.errnum == errno.EIO, e
    busy.shutdown()
    idle.shutdown()
    assert again.pread(4096, 0) == snap[:4096]
    assert m.command("backup-end", {"id": "b1"}) == {}
    must_fail(lambda: again.pread(4096, 0), "pread")
    again.shutdown()
    w.shutdown()
EOF
    ! nbdinfo "nbd+unix:///$5@b1?socket=$2" > "$tmp/out" 2>&1 ||
        fail "nbdinfo could connect to the ended backup export $5@b1"
}

# ---- backup-end ends the exports (over the file plugin) ----
end_exports "$tmp/q.sock" "$kitsock" "$tmp/disk.img" '' d0
# Nor does a backup export name that never existed open the disk.
! nbdinfo "$(nbd_uri d0@never "$kitsock")" > "$tmp/out" 2>&1 ||
    fail "nbdinfo could connect to a backup export that never existed"
assert_eq "$(exports "$kitsock")" '"" 4194304' "exports after backup-end"
kill -0 $kitpid || fail "nbdkit died"

# ---- over qmpdisk (two disks) ----
head -c 2M /dev/urandom > "$tmp/sda.img"
head -c 1M /dev/urandom > "$tmp/sdb.img"
start_nbdkit qd --filter="$FILTER" "$PLUGIN" disk=sda:"$tmp/sda.img" \
             disk=sdb:"$tmp/sdb.img" qmp="$tmp/qdq.sock" state="$tmp/qdstate"
end_exports "$tmp/qdq.sock" "$sock" "$tmp/sda.img" sda sda
assert_eq "$(exports "$sock" | tr '\n' ' ')" 'sda 2097152 sdb 1048576 ' \
          "qmpdisk exports after backup-end"
# Disks and backups: a checkpoint that does not cover a disk is no base
# for its backup; a disk in a backup cannot be removed, nor its frozen
# view resized.
cp "$tmp/sdb.img" "$tmp/sdb-freeze"
$PY - "$tmp/qdq.sock" "$sock" "$tmp/sdb-freeze" <<'EOF'
from testlib import *
qsock, sock, ref = script_args(str, str, file_bytes)
with connect(qsock) as m:
    m.command("checkpoint-create", {"name": "only-a", "disks": ["sda"]})
    cls, desc = m.error("backup-begin", {"id": "x", "incremental": "only-a"})
    assert cls == "GenericError" and "sdb" in desc, (cls, desc)
    assert m.command("query-backups") == []
    r = m.command("backup-begin", {"id": "y", "incremental": "only-a",
                                   "disks": [{"node": "sda"}]})
    assert [e["export"] for e in r["exports"]] == ["sda@y"], r
    r = m.command("backup-begin", {"id": "z", "disks": [{"node": "sdb"}]})
    assert [e["export"] for e in r["exports"]] == ["sdb@z"], r
    cls, desc = m.error("blockdev-del", {"node-name": "sdb"})
    assert cls == "GenericError" and "sdb" in desc, (cls, desc)
    resized = "return" in m.cmd("block_resize", {"node-name": "sdb",
                                                 "size": 2 << 20})
    h = nbd_open(uri(sock, "sdb@z"))
    assert h.get_size() == len(ref), h.get_size()
    assert h.pread(len(ref), 0) == ref
    h.shutdown()
    print("block_resize during a backup: %s" %
          ("done, frozen view intact" if resized else "refused"))
    assert m.command("backup-end", {"id": "y"}) == {}
    assert m.command("backup-end", {"id": "z"}) == {}
    assert m.command("checkpoint-delete", {"name": "only-a"}) == {}
EOF
kill_nbdkit $pid

