#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# libvirt's checkpoint REDEFINE (checkpoint-create redefine=true; the
# refusals are listed in docs/qmp-reference.md): a metadata-only
# delete of the newest checkpoint, then its redefinition with its
# parent and creation-time, after which an incremental backup from it
# and from its parent is exact (the export's changed chunks are the
# chunks written since, and their data is the disk's); the same for a
# checkpoint in the middle of the chain; REDEFINE as a transaction
# action (rolled back by abort); every refusal, each leaving the state
# as it was; and after a clean restart the redefined checkpoints are
# still there and still exact.  After kill -9 a persistent bitmap
# loads inconsistent (crash-safety=none), and then REDEFINE refuses it.
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e
set -x

requires_built "$PLUGIN" "$FILTER"
requires nbdkit --version
requires qemu-io --version
requires $PY -c 'import nbd'
tmpdir

# The last 64 KiB chunk is partial.
S=$(( 16 * 65536 + 12288 ))
truncate -s $S "$tmp/a.img" "$tmp/b.img"
args=(--filter="$FILTER" "$PLUGIN" disk=sda:"$tmp/a.img"
      disk=sdb:"$tmp/b.img" qmp="$tmp/q.qmp" state="$tmp/state"
      crash-safety=none)

py ()
{
    $PY - "$1" "$tmp" "$sock" $S <<'EOF'
import json, os
import nbd
from ckpt_model import *

step, tmp, nsock, S = script_args(str, str, str, int)
C = 65536
m = connect(tmp + "/q.qmp")
SAVED = tmp + "/saved.json"
saved = json.load(open(SAVED)) if os.path.exists(SAVED) else {
    "since": {}, "times": {}}
# since[k][node]: the chunks written on node since checkpoint k.
since = saved["since"]

def A(t, **data):
    return {"type": t, "data": data}

def write(node, *ops):
    qio(uri(nsock, node), *[qio_cmd(*o, pattern=0x41 + len(ops)) for o in ops])
    for op, off, ln in ops:
        for k in since:
            s = set(since[k].get(node, []))
            s |= set(range(off // C, (off + ln - 1) // C + 1))
            since[k][node] = sorted(s)

def created(name, nodes=("sda", "sdb")):
    since[name] = {n: [] for n in nodes}

def changed_chunks(h):
    """The chunks an incremental export does not report as unchanged
    (HOLE without ZERO), checked chunk by chunk."""
    size = h.get_size()
    out = set()
    pos = 0
    while pos < size:
        got = []
        def cb(ctx, offset, entries, err):
            if ctx == nbd.CONTEXT_BASE_ALLOCATION:
                p = offset
                for i in range(0, len(entries), 2):
                    got.append((p, entries[i], entries[i + 1]))
                    p += entries[i]
            return 0
        h.block_status(size - pos, pos, cb)
        check(got and got[0][0] == pos, "block status at %d: %r" % (pos, got))
        for off, ln, flags in got:
            ln = min(ln, size - off)
            if flags & 3 != 1:
                out |= set(range(off // C, (off + ln - 1) // C + 1))
            pos = off + ln
    return out

def incremental_exact(base, what):
    """An incremental backup from BASE: on each disk its changed chunks
    are exactly those written since BASE, with the disk's data."""
    bid = "i-" + base
    r = m.command("backup-begin", {"id": bid, "incremental": base})
    for e in r["exports"]:
        node = e["node"]
        img = open(tmp + ("/a.img" if node == "sda" else "/b.img"),
                   "rb").read()
        h = nbd_open(uri(nsock, e["export"]), base_allocation=True)
        got = changed_chunks(h)
        exp = set(since[base][node])
        check(got == exp, "%s: incremental from %s on %s: changed chunks %s,"
              " expected %s" % (what, base, node, sorted(got), sorted(exp)))
        for c in sorted(got):
            ln = min(C, S - c * C)
            check(h.pread(ln, c * C) == img[c * C:c * C + ln],
                  "%s: %s chunk %d data" % (what, node, c))
        h.shutdown()
    m.command("backup-end", {"id": bid})

def chain():
    return [[c["name"], c.get("parent"), c["current"],
             [d["node"] for d in c["disks"]]]
            for c in m.command("query-checkpoints")]

def infos(node):
    return {b["name"]: b for b in bitmap_infos(m, node)}

E = expect_error

def refused(args, desc=None, contains=None, what=""):
    before = snapshot(m, ["sda", "sdb"])
    E(m, "checkpoint-create", args, desc, contains)
    check(snapshot(m, ["sda", "sdb"]) == before,
          "%s: a refused redefine changed the state" % what)

if step == "setup":
    m.command("checkpoint-create", {"name": "k1"})
    created("k1")
    write("sda", ("write", 0, 4096), ("write", S - 100, 100))
    write("sdb", ("write", 3 * C + 17, C))
    r = m.command("checkpoint-create", {"name": "k2",
                                        "description": "second"})
    created("k2")
    saved["times"]["k2"] = r["creation-time"]
    write("sda", ("write", 5 * C, 2 * C + 1))
    write("sdb", ("zero", 9 * C, 512), ("discard", 12 * C, C))

    @section("metadata-only delete of the newest, then redefine")
    def _():
        m.command("checkpoint-delete", {"name": "k2", "metadata-only": True})
        check(chain() == [["k1", None, True, ["sda", "sdb"]]], chain())
        for n in ("sda", "sdb"):
            b = infos(n)["k2"]
            check(b["busy"] is False and b["recording"] is True and
                  b["persistent"] is True, "plain k2 on %s: %r" % (n, b))
            check(infos(n)["k1"]["recording"] is True, "k1 records again")
        write("sda", ("write", 10 * C, 10))
        r = m.command("checkpoint-create",
                      {"name": "k2", "redefine": True, "parent": "k1",
                       "creation-time": saved["times"]["k2"],
                       "description": "second, again"})
        check(r == {"name": "k2", "parent": "k1",
                    "creation-time": saved["times"]["k2"]}, r)
        check(chain() == [["k1", None, False, ["sda", "sdb"]],
                          ["k2", "k1", True, ["sda", "sdb"]]], chain())
        cks = m.command("query-checkpoints")
        check(cks[1]["description"] == "second, again" and
              cks[1]["creation-time"] == saved["times"]["k2"], cks)
        for n in ("sda", "sdb"):
            i = infos(n)
            check(i["k2"]["busy"] is True and i["k2"]["recording"] is True
                  and i["k1"]["recording"] is False,
                  "bitmaps on %s after redefine: %r" % (n, i))
        write("sdb", ("write", 14 * C + 1, 3))
        incremental_exact("k2", "redefined newest")
        incremental_exact("k1", "parent of the redefined newest")

    @section("refusals")
    def _():
        m.command("block-dirty-bitmap-add", {"node": "sda", "name": "p",
                                             "persistent": True})
        m.command("block-dirty-bitmap-add", {"node": "sda", "name": "t"})
        m.command("block-dirty-bitmap-add", {"node": "sda", "name": "dz",
                                             "persistent": True,
                                             "disabled": True})
        R = lambda **a: dict(a, redefine=True)
        refused({"name": "x", "parent": "k1"},
                "Parameter 'parent' needs 'redefine'")
        refused({"name": "x", "creation-time": 5},
                "Parameter 'creation-time' needs 'redefine'")
        refused(R(name="p", **{"creation-time": -1}),
                "Parameter 'creation-time' expects a non-negative value")
        refused(R(name="k1"), "Checkpoint 'k1' already exists")
        refused(R(name="p", parent="nope"), "Checkpoint 'nope' not found")
        refused(R(name="x", parent="k2"), "Cannot redefine checkpoint 'x': no disk has "
                "a bitmap of that name")
        refused(R(name="p", parent="k2", disks=["sda", "sdb"]),
                "Cannot redefine checkpoint 'p': disk 'sdb' has no bitmap "
                "'p'")
        refused(R(name="p", parent="k2", disks=["sda", "nope"]),
                "Cannot find device='nope' nor node-name='nope'")
        refused(R(name="p", parent="k2", disks=["sda", "sda"]),
                "Disk 'sda' is named twice")
        refused(R(name="p", parent="k2", disks=[]),
                "A checkpoint needs at least one disk")
        refused(R(name="t", parent="k2"),
                "Cannot redefine checkpoint 't': bitmap 't' on 'sda' is not "
                "persistent")
        refused(R(name="dz", parent="k2"),
                "Cannot redefine checkpoint 'dz': it would be the newest on "
                "'sda', but bitmap 'dz' there is disabled")
        # A root in front of k1: p records, but k1 is newer on sda.
        refused(R(name="p", **{"creation-time": 0}),
                "Cannot redefine checkpoint 'p': bitmap 'p' on 'sda' "
                "records, but a newer checkpoint covers that disk")
        refused(R(name="p", parent="k2", **{"creation-time": 0}),
                "Cannot redefine checkpoint 'p': its creation-time is "
                "before its parent's ('k2')")
        refused(R(name="dz", **{"creation-time": 1 << 40}),
                "Cannot redefine checkpoint 'dz': its creation-time is "
                "after that of 'k1', which would follow it")
        # Busy: removed earlier in the same transaction.
        before = snapshot(m, ["sda", "sdb"])
        E(m, "transaction", {"actions": [
            A("block-dirty-bitmap-remove", node="sda", name="p"),
            A("checkpoint-create", name="p", redefine=True, parent="k2")]},
          "Bitmap 'p' is currently in use by another operation and cannot "
          "be used")
        # Rolled back by abort.
        E(m, "transaction", {"actions": [
            A("checkpoint-create", name="p", redefine=True, parent="k2"),
            A("abort")]})
        check(snapshot(m, ["sda", "sdb"]) == before, "transactions refused")
        check(infos("sda")["k2"]["recording"] is True and
              infos("sda")["p"]["busy"] is False, "undone: %r" % infos("sda"))
        incremental_exact("k2", "after the refusals")
        for b in ("p", "t", "dz"):
            m.command("block-dirty-bitmap-remove", {"node": "sda", "name": b})

    @section("a transaction action; a checkpoint in the middle")
    def _():
        m.command("checkpoint-create", {"name": "k3"})
        created("k3")
        write("sda", ("write", 2 * C, 1), ("write", 15 * C, 8192))
        write("sdb", ("write", 0, 1))
        m.command("checkpoint-delete", {"name": "k2", "metadata-only": True})
        check(chain() == [["k1", None, False, ["sda", "sdb"]],
                          ["k3", "k1", True, ["sda", "sdb"]]], chain())
        # Without the old creation-time it would be newer than k3.
        E(m, "checkpoint-create", {"name": "k2", "redefine": True,
                                   "parent": "k1",
                                   "creation-time": (1 << 40)},
          contains="after that of 'k3'")
        r = m.command("transaction", {"actions": [
            A("block-dirty-bitmap-add", node="sdb", name="side"),
            A("checkpoint-create", name="k2", redefine=True, parent="k1",
              description="second, again",
              **{"creation-time": saved["times"]["k2"]})]})
        check(r == {}, r)
        check(chain() == [["k1", None, False, ["sda", "sdb"]],
                          ["k2", "k1", False, ["sda", "sdb"]],
                          ["k3", "k2", True, ["sda", "sdb"]]], chain())
        for n in ("sda", "sdb"):
            i = infos(n)
            check([i[k]["recording"] for k in ("k1", "k2", "k3")] ==
                  [False, False, True], "%s: %r" % (n, i))
        m.command("block-dirty-bitmap-remove", {"node": "sdb",
                                                "name": "side"})
        write("sdb", ("write", 7 * C, C))
        for k in ("k3", "k2", "k1"):
            incremental_exact(k, "middle redefined")
    saved["chain"] = chain()
    finish()
elif step == "after-restart":
    check(chain() == saved["chain"] == [
        ["k1", None, False, ["sda", "sdb"]],
        ["k2", "k1", False, ["sda", "sdb"]],
        ["k3", "k2", True, ["sda", "sdb"]]], "after restart: %r" % chain())
    k2 = m.command("query-checkpoints")[1]
    check(k2["creation-time"] == saved["times"]["k2"] and
          k2["description"] == "second, again", k2)
    for k in ("k3", "k2", "k1"):
        incremental_exact(k, "after restart")
    write("sda", ("write", 11 * C, 1))
    for k in ("k3", "k1"):
        incremental_exact(k, "writes after restart")
    m.command("block-dirty-bitmap-add", {"node": "sdb", "name": "q",
                                         "persistent": True})
elif step == "after-crash":
    b = infos("sdb")["q"]
    check(b["inconsistent"] is True, "q after kill -9: %r" % b)
    before = snapshot(m, ["sda", "sdb"])
    E(m, "checkpoint-create", {"name": "q", "redefine": True,
                               "parent": "k3"},
      "Bitmap 'q' on 'sdb' is inconsistent and cannot be used")
    check(snapshot(m, ["sda", "sdb"]) == before, "refused, unchanged")
json.dump(saved, open(SAVED, "w"))
print("step %s: ok" % step)
EOF
}

start_nbdkit r1 "${args[@]}"
py setup
$QMP "$tmp/q.qmp" quit
wait_exit $pid
assert_eq $exit_status 0 "exit status after quit"

start_nbdkit r2 "${args[@]}"
py after-restart
kill -9 $pid
wait_exit $pid

start_nbdkit r3 "${args[@]}"
py after-crash
