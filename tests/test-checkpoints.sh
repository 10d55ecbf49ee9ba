#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# Checkpoints (docs/qmp-reference.md, checkpoint-*; DESIGN.md point 2 of the
# filter) against a model that recomputes "bytes changed since K" from
# a write log (64 KiB chunks, the last one clipped): chains of five
# checkpoints over two disks of the qmpdisk plugin with random writes,
# zeroes and discards between them; deletes of the first, a middle and
# the current checkpoint, with children=true, children-only=true and
# metadata-only=true (the bitmap then stays as a plain persistent
# bitmap); checkpoints of one disk only (disks=[sda]).  After every
# step: query-checkpoints {size: true} (every field but the creation
# time, checked apart) and its filters roots / leaves / no-leaves /
# parent / descendants, plus each checkpoint bitmap's flags (busy,
# recording only for the newest of its disk, persistent), count and
# sha256 against the per-disk model of DESIGN.md.
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e
set -x

requires_built "$PLUGIN" "$FILTER"
requires nbdkit --version
requires qemu-io --version
tmpdir

# sda: 2 MiB + 4.5 KiB (a partial last chunk); sdb: 1 MiB.
SA=$(( 2 * 1024 * 1024 + 4608 ))
SB=$(( 1024 * 1024 ))
truncate -s $SA "$tmp/a.img"
truncate -s $SB "$tmp/b.img"
start_nbdkit q --filter="$FILTER" "$PLUGIN" disk=sda:"$tmp/a.img" \
             disk=sdb:"$tmp/b.img" qmp="$tmp/q.qmp" state="$tmp/state"

$PY - "$tmp" "$sock" $SA $SB "${SEED:-20261121}" <<'EOF'
import random, time
from ckpt_model import *

tmp, nsock, SA, SB, seed = script_args(str, str, int, int, str)
SIZES = {"sda": SA, "sdb": SB}
print("seed", seed)
rnd = random.Random(int(seed))
m = connect(tmp + "/q.qmp")
chain = Chain(SIZES)
t0 = int(time.time())

def write(node, ops):
    qio(uri(nsock, node), *[qio_cmd(op, off, ln, rnd.randrange(1, 255))
                            for op, off, ln in ops])
    for op, off, ln in ops:
        chain.write(node, off, ln)

def random_writes(n=3):
    for node in sorted(SIZES):
        ops = []
        for _ in range(n):
            op = rnd.choice(["write", "write", "zero", "discard"])
            ln = rnd.choice([1, 512, 4096, 65536, 70000, 200000])
            off = rnd.randrange(0, SIZES[node] - min(ln, SIZES[node] - 1))
            ln = min(ln, SIZES[node] - off)
            ops.append((op, off, ln))
        write(node, ops)

def create(name, disks=None, description=None):
    args = {"name": name}
    if disks is not None:
        args["disks"] = disks
    if description is not None:
        args["description"] = description
    r = m.command("checkpoint-create", args)
    exp = {"name": name}
    if chain.current is not None:
        exp["parent"] = chain.current
    ct = r.pop("creation-time", None)
    check(isinstance(ct, int) and t0 <= ct <= time.time() + 1,
          "creation-time %r" % ct)
    check(r == exp, "checkpoint-create %r returned %r, expected %r"
          % (args, r, exp))
    chain.create(name, disks, description)

def delete(name, children=False, children_only=False, metadata_only=False):
    args = {"name": name}
    if children:
        args["children"] = True
    if children_only:
        args["children-only"] = True
    if metadata_only:
        args["metadata-only"] = True
    check(m.command("checkpoint-delete", args) == {}, "delete returns {}")
    if children or children_only:
        for c in reversed(chain.descendants(name)):
            chain.delete(c, metadata_only)
    if not children_only:
        chain.delete(name, metadata_only)

def verify(what):
    check_checkpoints(m, chain, what)
    check_checkpoints(m, chain, what, roots=True)
    check_checkpoints(m, chain, what, leaves=True)
    check_checkpoints(m, chain, what, **{"no-leaves": True})
    check_checkpoints(m, chain, what, leaves=True, **{"no-leaves": True})
    for c in chain.order:
        check_checkpoints(m, chain, what, parent=c)
        check_checkpoints(m, chain, what, parent=c, descendants=True)
    # Without size=true there are no sizes.
    for c in m.command("query-checkpoints"):
        for d in c["disks"]:
            check("size" not in d, "size without size=true: %r" % c)
    check_chain_bitmaps(m, chain, what)

def drop_all():
    """Start the next scenario afresh: no checkpoint, no bitmap."""
    for c in list(chain.order):
        if c in chain.order:
            delete(c, children=True)
    for (c, d) in list(chain.plain):
        m.command("block-dirty-bitmap-remove", {"node": d, "name": c})
        del chain.plain[(c, d)]
    verify("all dropped")
    check(m.command("query-checkpoints") == [], "no checkpoints left")

def build(prefix, n=5):
    names = ["%s%d" % (prefix, i) for i in range(1, n + 1)]
    for i, c in enumerate(names):
        random_writes()
        create(c, description="checkpoint %d" % i if i % 2 else None)
        verify("after creating %s" % c)
        random_writes(2)
        verify("after writes following %s" % c)
    return names

@section("a chain of five, then deleting the first (root)")
def _():
    verify("no checkpoints")
    a = build("a")
    check([c["name"] for c in m.command("query-checkpoints",
                                        {"roots": True})] == ["a1"], "root")
    delete("a1")
    verify("a1 deleted")
    check(chain.info["a2"]["parent"] is None, "model: a2 is a root")
    random_writes()
    verify("writes after deleting a1")
    drop_all()

@section("deleting a middle checkpoint")
def _():
    build("b")
    delete("b3")
    verify("b3 deleted")
    random_writes()
    verify("writes after deleting b3")
    delete("b2")
    verify("b2 deleted too")
    random_writes()
    create("b6")
    random_writes()
    verify("b6 after deletes")
    drop_all()

@section("deleting the current checkpoint")
def _():
    build("c")
    delete("c5")
    verify("c5 deleted: c4 is current and records again")
    random_writes()
    verify("writes after deleting c5")
    create("c6")
    verify("c6: parent c4")
    random_writes()
    delete("c6")
    delete("c4")
    verify("c6 and c4 deleted")
    random_writes()
    verify("writes after that")
    drop_all()

@section("children=true")
def _():
    build("d")
    delete("d2", children=True)
    verify("d2 and its descendants deleted")
    check(chain.order == ["d1"] and chain.current == "d1", "model")
    random_writes()
    verify("writes after")
    create("d7")
    random_writes()
    verify("d7 on d1")
    drop_all()

@section("children-only=true")
def _():
    build("e")
    delete("e2", children_only=True)
    verify("e3..e5 deleted, e2 kept")
    check(chain.order == ["e1", "e2"] and chain.current == "e2", "model")
    random_writes()
    verify("writes after")
    # children-only of a leaf: nothing to do.
    delete("e2", children_only=True)
    verify("children-only of a leaf")
    drop_all()

@section("metadata-only: middle, current, with children")
def _():
    build("f")
    delete("f3", metadata_only=True)
    verify("f3 forgotten, its bitmap kept")
    for node in SIZES:
        b = {i["name"]: i for i in bitmap_infos(m, node)}["f3"]
        check(b["busy"] is False and b["persistent"] is True and
              b["recording"] is False, "plain f3 on %s: %r" % (node, b))
    random_writes()
    verify("writes after f3 forgotten")
    # A plain bitmap again: the low-level commands work on it.
    m.command("block-dirty-bitmap-clear", {"node": "sda", "name": "f3"})
    chain.plain[("f3", "sda")].clear()
    verify("plain f3 cleared")
    delete("f5", metadata_only=True)
    verify("f5 (current) forgotten: f4 records, plain f5 records too")
    random_writes()
    verify("writes after f5 forgotten")
    delete("f1", children=True, metadata_only=True)
    verify("f1 and descendants forgotten")
    check(m.command("query-checkpoints") == [], "none left")
    random_writes()
    verify("writes with only plain bitmaps")
    drop_all()

@section("checkpoints of one disk only")
def _():
    random_writes()
    create("g1")
    random_writes()
    create("g2", disks=["sda"])
    verify("g2 on sda only")
    random_writes()
    verify("writes: sdb's g1 still records")
    create("g3", disks=["sdb"])
    random_writes()
    verify("g3 on sdb only")
    create("g4")
    random_writes()
    verify("g4 on both")
    delete("g3")
    verify("g3 deleted: sdb's g1 holds its changes")
    random_writes()
    delete("g4")
    verify("g4 deleted: g2 records on sda, g1 on sdb")
    random_writes()
    verify("writes after")
    create("g5", disks=["sdb", "sda"])
    random_writes()
    verify("g5 with disks in another order")
    delete("g1", children_only=True)
    verify("children of g1 deleted")
    drop_all()

finish()
EOF
