#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# The filter's resource limits (man page, LIMITS): bitmaps per disk,
# checkpoints, active backups, connections to backup exports and push
# backup jobs (max-jobs).  For
# each: set low, hit it, get the error that names the limit, find
# nothing half-made (no bitmap, checkpoint, backup, export or file
# descriptor left behind, the whole transaction undone), then go below
# it and succeed again.  Then the defaults (1024 bitmaps, 1024
# checkpoints, 16 backups) are hit with the exact numbers, and bad
# values of the parameters stop nbdkit at start-up.
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e
set -x

requires_built "$PLUGIN" "$FILTER"
requires nbdkit --version
requires nbdinfo --version
requires $PY -c 'import nbd'
tmpdir

head -c 1M /dev/urandom > "$tmp/sda.img"
head -c 1M /dev/urandom > "$tmp/sdb.img"
start_nbdkit kit --filter="$FILTER" "$PLUGIN" disk=sda:"$tmp/sda.img" \
             disk=sdb:"$tmp/sdb.img" qmp="$tmp/q.sock" state="$tmp/state" \
             max-bitmaps-per-disk=3 max-checkpoints=2 max-backups=2 \
             max-backup-connections=2
kitpid=$pid kitlog=$log

$PY - "$tmp/q.sock" "$sock" "$kitpid" "$kitlog" "$tmp/sda.img" <<'EOF'
import os, nbd
from testlib import *
qsock, sock, pid, log, sda = script_args(str, str, int, str, file_bytes)

def fds():
    return len(proc_fds(pid))

def same_fds(n):
    check_comes_back(fds, n, "descriptors", timeout=5)

def names(m, node):
    return [b["name"] for b in bitmap_infos(m, node)]

def add(name, node="sda"):
    return {"type": "block-dirty-bitmap-add",
            "data": {"node": node, "name": name}}

with QMP(qsock) as m:
    @section("bitmaps per disk")
    def _():
        for b in ("b1", "b2", "b3"):
            m.command("block-dirty-bitmap-add", {"node": "sda", "name": b})
        expect_error(m, "block-dirty-bitmap-add", {"node": "sda", "name": "b4"},
                     desc="Cannot add bitmap 'b4' to 'sda': it has 3 "
                     "bitmaps, the limit (max-bitmaps-per-disk=3); remove "
                     "unused ones first")
        check(sorted(names(m, "sda")) == ["b1", "b2", "b3"], names(m, "sda"))
        # Per disk: sdb has room for 3, and a transaction that would
        # take it to 4 is undone whole.
        m.command("transaction", {"actions": [add("x1", "sdb"), add("x2", "sdb")]})
        expect_error(m, "transaction", {"actions": [
            add("x3", "sdb"), add("x4", "sdb")]},
            contains=["Cannot add bitmap 'x4' to 'sdb'",
                      "max-bitmaps-per-disk=3"])
        check(sorted(names(m, "sdb")) == ["x1", "x2"], names(m, "sdb"))
        # Below it again: works.
        m.command("block-dirty-bitmap-remove", {"node": "sda", "name": "b2"})
        m.command("block-dirty-bitmap-add", {"node": "sda", "name": "b4"})
        check(sorted(names(m, "sda")) == ["b1", "b3", "b4"], names(m, "sda"))
        for b in ("b1", "b3", "b4"):
            m.command("block-dirty-bitmap-remove", {"node": "sda", "name": b})
        for b in ("x1", "x2"):
            m.command("block-dirty-bitmap-remove", {"node": "sdb", "name": b})

    @section("checkpoints")
    def _():
        m.command("checkpoint-create", {"name": "c1"})
        m.command("checkpoint-create", {"name": "c2"})
        before = snapshot(m, ["sda", "sdb"])
        expect_error(m, "checkpoint-create", {"name": "c3"},
                     desc="Cannot create checkpoint 'c3': there are 2 "
                     "checkpoints, the limit (max-checkpoints=2); delete "
                     "old ones first")
        # Nor through backup-begin: no backup, no checkpoint, no fd.
        n = settled(fds)
        expect_error(m, "backup-begin", {"id": "bk", "checkpoint": {"name": "c3"}},
                     contains="max-checkpoints=2")
        check(m.command("query-backups") == [], "a backup was left")
        same_fds(n)
        check(snapshot(m, ["sda", "sdb"]) == before, "state changed")
        # A checkpoint refused for want of room for its bitmap on one
        # disk is not made on the other either.
        m.command("checkpoint-delete", {"name": "c1"})
        m.command("block-dirty-bitmap-add", {"node": "sdb", "name": "y"})
        check(sorted(names(m, "sdb")) == ["c2", "y"], names(m, "sdb"))
        m.command("block-dirty-bitmap-add", {"node": "sdb", "name": "z"})
        before = snapshot(m, ["sda", "sdb"])
        expect_error(m, "checkpoint-create", {"name": "c3"},
                     desc="Cannot add bitmap 'c3' to 'sdb': it has 3 "
                     "bitmaps, the limit (max-bitmaps-per-disk=3); remove "
                     "unused ones first")
        check(snapshot(m, ["sda", "sdb"]) == before, "state changed")
        for b in ("y", "z"):
            m.command("block-dirty-bitmap-remove", {"node": "sdb", "name": b})
        m.command("checkpoint-create", {"name": "c3"})
        cps = [c["name"] for c in m.command("query-checkpoints")]
        check(cps == ["c2", "c3"], cps)
        for c in cps:
            m.command("checkpoint-delete", {"name": c})

    @section("backups")
    def _():
        m.command("backup-begin", {"id": "k1"})
        m.command("backup-begin", {"id": "k2", "disks": [{"node": "sda"}]})
        # (nbdkit's first NBD connection opens 2 descriptors for good.)
        ex = nbd_exports(sock)
        n = settled(fds)
        expect_error(m, "backup-begin", {"id": "k3"},
                     desc="Cannot begin a backup: 2 backups are active, "
                     "the limit (max-backups=2); end one first")
        # In a transaction with a bitmap: both undone.
        expect_error(m, "transaction", {"actions": [
            add("t1"), {"type": "backup-begin", "data": {"id": "k3"}}]},
            contains="max-backups=2")
        check(names(m, "sda") == [], names(m, "sda"))
        ids = [b["id"] for b in m.command("query-backups")]
        check(sorted(ids) == ["k1", "k2"], ids)
        check(nbd_exports(sock) == ex, "exports changed: %r" % nbd_exports(sock))
        same_fds(n)
        m.command("backup-end", {"id": "k1"})
        m.command("backup-begin", {"id": "k3"})
        ids = [b["id"] for b in m.command("query-backups")]
        check(sorted(ids) == ["k2", "k3"], ids)

    @section("connections to backup exports")
    def _():
        # k2 and k3 from above; two connections on two backups' exports.
        a = nbd_open(uri(sock, "sda@k2"))
        b = nbd_open(uri(sock, "sdb@k3"))
        try:
            nbd_open(uri(sock, "sda@k3"))
            fail("a third connection to a backup export was accepted")
        except nbd.Error:
            pass
        text = open(log).read()
        check("checkpoint: backup export 'sda@k3' refused: 2 connections to "
              "backup exports are open, the limit (max-backup-connections=2)"
              in text, "no limit message in the log")
        # The live disks are not limited.
        live = nbd_open(uri(sock, "sda"))
        live.pwrite(b"\x77" * 4096, 0)
        check(a.pread(65536, 0) == sda[:65536], "frozen data")
        a.shutdown()
        # Below it again (the server sees the close a moment later).
        for _ in range(100):
            try:
                c = nbd_open(uri(sock, "sda@k3"))
                break
            except nbd.Error:
                time.sleep(0.05)
        else:
            fail("no connection after one closed")
        check(c.pread(len(sda), 0) == sda, "frozen data of sda@k3")
        # Connections to an ended backup count until they close.
        m.command("backup-end", {"id": "k2"})
        try:
            nbd_open(uri(sock, "sda@k3"))
            fail("a third connection was accepted after backup-end")
        except nbd.Error:
            pass
        for h in (b, c, live):
            h.shutdown()
        m.command("backup-end", {"id": "k3"})
        check(m.command("query-backups") == [], "backups left")

finish()
EOF

# ---- the defaults ----
start_nbdkit def --filter="$FILTER" "$PLUGIN" disk=sda:"$tmp/sda.img" \
             qmp="$tmp/d.sock"
$PY - "$tmp/d.sock" <<'EOF'
from testlib import *
qsock, = script_args(str)
with QMP(qsock) as m:
    @section("default: 1024 bitmaps per disk")
    def _():
        for i in range(1024):
            m.command("block-dirty-bitmap-add", {"node": "sda", "name": "b%d" % i})
        expect_error(m, "block-dirty-bitmap-add", {"node": "sda", "name": "b"},
                     contains="it has 1024 bitmaps, the limit "
                     "(max-bitmaps-per-disk=1024)")
        for i in range(1024):
            m.command("block-dirty-bitmap-remove", {"node": "sda", "name": "b%d" % i})

    @section("default: 1024 checkpoints")
    def _():
        for i in range(1024):
            m.command("checkpoint-create", {"name": "c%d" % i})
        expect_error(m, "checkpoint-create", {"name": "c"},
                     contains="there are 1024 checkpoints, the limit "
                     "(max-checkpoints=1024)")
        check(len(m.command("query-checkpoints")) == 1024, "checkpoints")

    @section("default: 16 backups")
    def _():
        for i in range(16):
            m.command("backup-begin", {"id": "k%d" % i})
        expect_error(m, "backup-begin", {"id": "k"},
                     contains="16 backups are active, the limit "
                     "(max-backups=16)")
        for i in range(16):
            m.command("backup-end", {"id": "k%d" % i})
finish()
EOF

# ---- bad values stop nbdkit at start-up ----
for v in max-backups=0 max-checkpoints=1000001 max-bitmaps-per-disk=x max-jobs=0 \
         max-backup-connections=-1; do
    ! nbdkit -f -U "$tmp/bad.sock" --filter="$FILTER" "$PLUGIN" \
      disk=sda:"$tmp/sda.img" "$v" > "$tmp/bad.log" 2>&1 ||
        fail "nbdkit started with $v"
    assert_grep "${v%%=*}" "$tmp/bad.log"
done

# ---- max-jobs: push backup jobs that exist at once ----
truncate -s 64M "$tmp/big.img"
start_nbdkit jobs --filter="$FILTER" "$PLUGIN" disk=sda:"$tmp/big.img" \
             qmp="$tmp/j.sock" max-jobs=1
$PY - "$tmp/j.sock" "$tmp" <<'EOF2'
import os, time
from testlib import *
qsock, tmp = script_args(str, str)
with connect(qsock) as m:
    qio(uri(qsock.replace("j.sock", "jobs.sock"), "sda"), "write -P 1 0 32M")
    # Slow (1 MiB/s): it is still running while the second is refused.
    m.command("drive-backup", {"job-id": "j1", "device": "sda", "sync": "full",
                               "speed": 1 << 20, "target": tmp + "/t1.img"})
    expect_error(m, "drive-backup",
                 {"job-id": "j2", "device": "sda", "sync": "full",
                  "target": tmp + "/t2.img"},
                 contains="1 jobs exist, the limit (max-jobs=1)")
    check(not os.path.exists(tmp + "/t2.img"), "the refused job's target")
    check([j["id"] for j in m.command("query-jobs")] == ["j1"], "jobs")
    m.command("job-cancel", {"id": "j1"})
    for _ in range(500):
        if m.command("query-jobs") == []:
            break
        time.sleep(0.02)
    check(m.command("query-jobs") == [], "j1 gone after its cancel")
    # Below the limit again: the next job starts and completes.
    m.command("drive-backup", {"job-id": "j3", "device": "sda", "sync": "full",
                               "target": tmp + "/t3.img"})
    for _ in range(1000):
        if m.command("query-jobs") == []:
            break
        time.sleep(0.02)
    check(m.command("query-jobs") == [], "j3 done")
    check(open(tmp + "/t3.img", "rb").read(1 << 20) == b"\x01" * (1 << 20),
          "j3's target holds the disk")
EOF2
