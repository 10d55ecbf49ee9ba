#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# transaction (docs/qmp-reference.md, transaction): all or
# nothing.  A transaction of bitmap adds, merges, clears, enables,
# disables, removes and checkpoint-create ending in abort, or failing
# in the middle (duplicate add, busy bitmap, unknown node, duplicate
# checkpoint), leaves everything exactly as before: the full
# query-named-block-nodes, query-checkpoints {size: true} and the
# sha256 of every bitmap; and afterwards writes still mark exactly the
# bitmaps a model says (recording flags restored).  A successful mixed
# transaction gives the model's state.  QEMU's transaction rules:
# empty list, actions see earlier ones, remove takes effect at commit,
# completion-mode=grouped refused for bitmap actions, bad actions
# refused before anything runs.
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e
set -x

requires_built "$PLUGIN" "$FILTER"
requires nbdkit --version
requires qemu-io --version
requires nbdinfo --version
tmpdir

# The same size: merges across the two nodes are allowed (QEMU refuses
# bitmaps of other sizes).
SA=$(( 2 * 1024 * 1024 + 1024 ))
SB=$SA
truncate -s $SA "$tmp/a.img"
truncate -s $SB "$tmp/b.img"
start_nbdkit q --filter="$FILTER" "$PLUGIN" disk=sda:"$tmp/a.img" \
             disk=sdb:"$tmp/b.img" qmp="$tmp/q.qmp" state="$tmp/state"

$PY - "$tmp" "$sock" $SA $SB <<'EOF'
from ckpt_model import *

tmp, nsock, SA, SB = script_args(str, str, int, int)
SIZES = {"sda": SA, "sdb": SB}
m = connect(tmp + "/q.qmp")
N = {n: Node(n, s) for n, s in SIZES.items()}

def A(t, **data):
    return {"type": t, "data": data}

def write(node, *ops):
    qio(uri(nsock, node), *[qio_cmd(*o) for o in ops])
    for op, off, ln in ops:
        N[node].write(off, ln)

def verify(what):
    for n in N.values():
        check_node(m, n, what)

def ckpt_bitmap(node, name):
    """A new checkpoint's bitmap in the model; the previous one stops."""
    for bn, b in N[node].bitmaps:
        if b.busy and b.recording:
            b.recording = False
    N[node].add(name, persistent=True, busy=True)

# The state to protect.
m.command("block-dirty-bitmap-add", {"node": "sda", "name": "a1"})
N["sda"].add("a1")
m.command("block-dirty-bitmap-add", {"node": "sda", "name": "a2",
                                     "granularity": 4096})
N["sda"].add("a2", granularity=4096)
m.command("block-dirty-bitmap-add", {"node": "sda", "name": "a3",
                                     "disabled": True, "persistent": True})
N["sda"].add("a3", recording=False, persistent=True)
m.command("block-dirty-bitmap-add", {"node": "sdb", "name": "b1",
                                     "granularity": 512})
N["sdb"].add("b1", granularity=512)
write("sda", ("write", 0, 4096), ("write", 300000, 70000))
write("sdb", ("zero", 65536 - 1, 2), ("discard", 500000, 4096))
m.command("checkpoint-create", {"name": "k1"})
ckpt_bitmap("sda", "k1")
ckpt_bitmap("sdb", "k1")
write("sda", ("write", SIZES["sda"] - 1, 1))
m.command("block-dirty-bitmap-merge", {"node": "sda", "target": "a3",
                                       "bitmaps": ["a1"]})
N["sda"].get("a3").merge(N["sda"].get("a1"))
verify("initial state")

def refused(actions, desc=None, contains=None, what=""):
    before = snapshot(m, SIZES)
    before["backups"] = m.command("query-backups")
    expect_error(m, "transaction", {"actions": actions}, desc, contains)
    after = snapshot(m, SIZES)
    after["backups"] = m.command("query-backups")
    check(after == before, "%s: a failed transaction changed the state:\n"
          " before %s\n after %s" % (what, before, after))
    # Recording flags really restored: a write marks what the model says.
    write("sda", ("write", 65536 * 5 + 7, 9))
    write("sdb", ("write", 65536 * 3, 65536))
    verify("%s: writes after the failed transaction" % what)

# Every kind of action, then abort.
EVERYTHING = [
    A("block-dirty-bitmap-add", node="sda", name="n1"),
    A("block-dirty-bitmap-add", node="sdb", name="n2", granularity=512,
      disabled=True, persistent=True),
    A("block-dirty-bitmap-merge", node="sdb", target="n2",
      bitmaps=["b1", {"node": "sda", "name": "a1"}]),
    A("block-dirty-bitmap-merge", node="sda", target="a1",
      bitmaps=["a2", "a3"]),
    A("block-dirty-bitmap-clear", node="sda", name="a2"),
    A("block-dirty-bitmap-clear", node="sdb", name="b1"),
    A("block-dirty-bitmap-disable", node="sda", name="a1"),
    A("block-dirty-bitmap-enable", node="sda", name="a3"),
    A("block-dirty-bitmap-remove", node="sdb", name="b1"),
    A("checkpoint-create", name="k2"),
    A("checkpoint-create", name="k3", disks=["sda"]),
    A("block-dirty-bitmap-remove", node="sda", name="n1"),
]

@section("abort at the end rolls everything back")
def _():
    refused(EVERYTHING + [A("abort")],
            "Transaction aborted using Abort action", what="abort at end")

@section("abort first, in the middle")
def _():
    refused([A("abort")] + EVERYTHING,
            "Transaction aborted using Abort action", what="abort first")
    refused(EVERYTHING[:6] + [A("abort")] + EVERYTHING[6:],
            "Transaction aborted using Abort action", what="abort middle")

@section("backup-begin in a transaction is rolled back too")
def _():
    def exports():
        return sorted(nbd_exports(nsock))
    ex = exports()
    bk = A("backup-begin", id="tb", incremental="k1")
    refused(EVERYTHING + [bk, A("abort")],
            "Transaction aborted using Abort action", what="backup + abort")
    refused([bk, A("block-dirty-bitmap-clear", node="sda", name="k1")],
            contains="k1", what="backup then clear of its base")
    check(m.command("query-backups") == [], "no backup after rollback")
    check(exports() == ex, "exports after rollback: %s, expected %s"
          % (exports(), ex))

@section("a failing action in the middle")
def _():
    refused(EVERYTHING[:5] + [A("block-dirty-bitmap-add", node="sda",
                                name="a2")] + EVERYTHING[5:],
            "Bitmap already exists: a2", what="duplicate add")
    refused([A("block-dirty-bitmap-add", node="sda", name="x"),
             A("block-dirty-bitmap-add", node="sda", name="x")],
            "Bitmap already exists: x", what="same add twice")
    busy = ("Bitmap 'k1' is currently in use by another operation and "
            "cannot be used")
    refused(EVERYTHING[:4] + [A("block-dirty-bitmap-clear", node="sda",
                                name="k1")], busy, what="clear busy")
    refused(EVERYTHING[:8] + [A("block-dirty-bitmap-remove", node="sdb",
                                name="k1")] + EVERYTHING[8:], busy,
            what="remove busy")
    # QEMU 7.2 refuses a busy merge source (here a checkpoint's bitmap).
    refused(EVERYTHING[:3] + [A("block-dirty-bitmap-merge", node="sda",
                                target="a1", bitmaps=["a2", "k1"])],
            busy, what="merge from a busy source")
    refused(EVERYTHING[:3] + [A("block-dirty-bitmap-merge", node="sda",
                                target="a1", bitmaps=["nope"])],
            "Dirty bitmap 'nope' not found", what="merge missing source")
    refused(EVERYTHING[:9] + [A("block-dirty-bitmap-add", node="sdz",
                                name="x")],
            "Cannot find device='sdz' nor node-name='sdz'",
            what="unknown node")
    refused(EVERYTHING[:10] + [A("checkpoint-create", name="k2")],
            contains="k2", what="the same checkpoint twice")
    refused(EVERYTHING[:10] + [A("checkpoint-create", name="k1")],
            contains="k1", what="an existing checkpoint")
    # The checkpoint made earlier in the transaction is busy for later
    # actions.
    refused([A("checkpoint-create", name="k9"),
             A("block-dirty-bitmap-remove", node="sda", name="k9")],
            "Bitmap 'k9' is currently in use by another operation and "
            "cannot be used", what="remove a checkpoint made just before")

@section("malformed transactions are refused before anything runs")
def _():
    refused(EVERYTHING + [{"type": "blockdev-mirror", "data": {}}],
            "Parameter 'type' does not accept value 'blockdev-mirror'",
            what="unknown action type")
    refused(EVERYTHING + [A("block-dirty-bitmap-add", node="sda")],
            contains=["name", "missing"], what="missing argument")
    refused(EVERYTHING + [A("block-dirty-bitmap-add", node="sda",
                            name="x", bogus=1)],
            contains=["bogus", "unexpected"], what="unexpected argument")
    refused(EVERYTHING + [3], what="an action that is not an object")
    before = snapshot(m, SIZES)
    for args in ({}, {"actions": {}}, {"actions": "x"}):
        expect_error(m, "transaction", args)
    check(snapshot(m, SIZES) == before, "bad arguments changed the state")

@section("QEMU: an empty transaction succeeds")
def _():
    before = snapshot(m, SIZES)
    check(m.command("transaction", {"actions": []}) == {}, "empty")
    check(snapshot(m, SIZES) == before, "empty transaction changed state")

@section("a successful mixed transaction")
def _():
    r = m.command("transaction", {"actions": EVERYTHING})
    check(r == {}, "transaction returns {}: %r" % r)
    sa, sb = N["sda"], N["sdb"]
    sa.add("n1")
    sb.add("n2", granularity=512, recording=False, persistent=True)
    sb.get("n2").merge(sb.get("b1"))
    sb.get("n2").merge(sa.get("a1"))
    sa.get("a1").merge(sa.get("a2"))
    sa.get("a1").merge(sa.get("a3"))
    sa.get("a2").clear()
    sb.get("b1").clear()
    sa.get("a1").recording = False
    sa.get("a3").recording = True
    sb.remove("b1")
    ckpt_bitmap("sda", "k2")
    ckpt_bitmap("sdb", "k2")
    ckpt_bitmap("sda", "k3")
    sa.remove("n1")
    verify("after the mixed transaction")
    cks = m.command("query-checkpoints")
    check([(c["name"], c.get("parent"), c["current"]) for c in cks] ==
          [("k1", None, False), ("k2", "k1", False), ("k3", "k2", True)],
          "checkpoints: %r" % cks)
    write("sda", ("write", 65536 * 9, 1), ("zero", 0, 512))
    write("sdb", ("discard", 0, 65536 * 2))
    verify("writes after the mixed transaction")

@section("actions see earlier actions")
def _():
    m.command("transaction", {"actions": [
        A("block-dirty-bitmap-add", node="sdb", name="s1", disabled=True),
        A("block-dirty-bitmap-merge", node="sdb", target="s1",
          bitmaps=["n2"]),
        A("block-dirty-bitmap-enable", node="sdb", name="s1"),
        A("block-dirty-bitmap-add", node="sdb", name="s2"),
        A("block-dirty-bitmap-clear", node="sdb", name="s2"),
        A("block-dirty-bitmap-disable", node="sdb", name="s2"),
        A("block-dirty-bitmap-remove", node="sdb", name="s2")]})
    sb = N["sdb"]
    sb.add("s1", recording=False)
    sb.get("s1").merge(sb.get("n2"))
    sb.get("s1").recording = True
    verify("add, merge, enable; add, clear, disable, remove")

@section("QEMU: remove takes effect at commit (remove + add fails)")
def _():
    # Reference section 3: "removing and re-adding the same name in one
    # transaction fails with Bitmap already exists".
    before = snapshot(m, SIZES)
    r = m.cmd("transaction", {"actions": [
        A("block-dirty-bitmap-remove", node="sda", name="a2"),
        A("block-dirty-bitmap-add", node="sda", name="a2")]})
    if "return" in r:
        # Keep the model in step for the sections that follow.
        N["sda"].remove("a2")
        N["sda"].add("a2")
        verify("remove + add of a2 went through")
        fail("remove + add of the same name in one transaction succeeded; "
             "QEMU refuses it with 'Bitmap already exists: a2'")
    check(r["error"]["desc"] == "Bitmap already exists: a2", r)
    check(snapshot(m, SIZES) == before, "refused remove+add changed state")

@section("QEMU: completion-mode=grouped is refused for bitmap actions")
def _():
    before = snapshot(m, SIZES)
    expect_error(m, "transaction", {
        "actions": [A("block-dirty-bitmap-add", node="sda", name="g")],
        "properties": {"completion-mode": "grouped"}},
        "Action 'block-dirty-bitmap-add' does not support Transaction "
        "property completion-mode = grouped")
    check(snapshot(m, SIZES) == before, "refused grouped changed state")
    m.command("transaction", {
        "actions": [A("block-dirty-bitmap-add", node="sda", name="g")],
        "properties": {"completion-mode": "individual"}})
    N["sda"].add("g")
    verify("completion-mode=individual")

finish()
EOF
