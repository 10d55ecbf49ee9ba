#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# Dirty bitmaps against a model (docs/qmp-reference.md, block-dirty-bitmap-*): qemu-io
# writes, zeroes and discards at aligned and unaligned offsets, across
# chunk edges and into the last partial chunk of a disk whose size is
# not a multiple of 64 KiB; after every step each bitmap's name, order
# (newest first), granularity, count (dirty chunks x granularity),
# recording, persistent, busy and sha256 equal the model's.  Enable,
# disable, clear, remove and merge (other granularities, sources on
# other nodes) over the file plugin and over qmpdisk; reads and
# read-only connections mark nothing.
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e
set -x

requires_built "$PLUGIN" "$FILTER"
requires nbdkit --version
requires qemu-io --version
requires $PY -c 'import nbd'
tmpdir

# 17 whole chunks of 64 KiB and 1536 bytes.
S=$(( 17 * 65536 + 1536 ))
truncate -s $S "$tmp/d0.img"
start_nbdkit f --filter="$FILTER" file "$tmp/d0.img" node-name=d0 \
             qmp="$tmp/f.qmp" state="$tmp/fstate"
fsock=$sock

# Over qmpdisk: sda and sdb of the same size, sdc bigger.
truncate -s $S "$tmp/a.img" "$tmp/b.img"
truncate -s 2M "$tmp/c.img"
start_nbdkit q --filter="$FILTER" "$PLUGIN" disk=sda:"$tmp/a.img" \
             disk=sdb:"$tmp/b.img" disk=sdc:"$tmp/c.img" \
             qmp="$tmp/q.qmp" state="$tmp/qstate"
qsock=$sock

# nbdkit -r: a read-only server.
truncate -s $S "$tmp/r.img"
start_nbdkit r -r --filter="$FILTER" file "$tmp/r.img" node-name=r0 \
             qmp="$tmp/r.qmp"
rsock=$sock

$PY - "$tmp" "$fsock" "$qsock" "$rsock" $S <<'EOF'
import hashlib
import nbd
from ckpt_model import *

tmp, fsock, qsock, rsock, S = script_args(str, str, str, str, int)

# ---------------- over the file plugin: node d0 ----------------
m = connect(tmp + "/f.qmp")
d0 = Node("d0", S)
U = uri(fsock)

def step(what, *ops):
    """Run OPS [(op, offset, length)] in one qemu-io, then check."""
    if ops:
        qio(U, *[qio_cmd(op, off, ln) for op, off, ln in ops])
        for op, off, ln in ops:
            d0.write(off, ln)
    check_node(m, d0, what)

@section("file: bitmap lifecycle against the model")
def _():
    check(bitmap_infos(m, "d0") == [], "a new node has no bitmaps")
    m.command("block-dirty-bitmap-add", {"node": "d0", "name": "b64"})
    d0.add("b64")
    m.command("block-dirty-bitmap-add", {"node": "d0", "name": "b512",
                                         "granularity": 512})
    d0.add("b512", granularity=512)
    m.command("block-dirty-bitmap-add", {"node": "d0", "name": "b4k",
                                         "granularity": 4096})
    d0.add("b4k", granularity=4096)
    m.command("block-dirty-bitmap-add", {"node": "d0", "name": "b1m",
                                         "granularity": MiB})
    d0.add("b1m", granularity=MiB)
    m.command("block-dirty-bitmap-add", {"node": "d0", "name": "bdis",
                                         "disabled": True})
    d0.add("bdis", recording=False)
    m.command("block-dirty-bitmap-add", {"node": "d0", "name": "bp",
                                         "persistent": True,
                                         "granularity": 65536})
    d0.add("bp", persistent=True)
    # 2^31, the largest granularity, is accepted.
    m.command("block-dirty-bitmap-add", {"node": "d0", "name": "b2g",
                                         "granularity": 1 << 31})
    d0.add("b2g", granularity=1 << 31)
    step("empty bitmaps")
    # The empty 64 KiB bitmap of this disk: 18 bits, one 8-byte word.
    check(sha(m, "d0", "b64") == hashlib.sha256(bytes(8)).hexdigest(),
          "empty sha256")

    step("aligned 64 KiB write", ("write", 0, 65536))
    check(bitmap_infos(m, "d0")[-1]["count"] == 65536, "count after 64k")
    step("unaligned write inside a chunk", ("write", 70000, 10))
    step("1-byte write", ("write", 131073, 1))
    step("write across a chunk edge", ("write", 4 * 65536 - 100, 200))
    step("write across two edges", ("write", 6 * 65536 - 1, 65538))
    step("last partial chunk, 1 byte", ("write", S - 1, 1))
    # b64's count counts the 18th, 1536-byte chunk whole (QEMU 7.2).
    b = {i["name"]: i for i in bitmap_infos(m, "d0")}
    check(b["b64"]["count"] == d0.get("b64").count(clip=False),
          "unclipped count %r" % b["b64"])
    check(b["b64"]["count"] % 65536 == 0,
          "the last chunk counts 64 KiB: %r" % b["b64"])
    step("zero, unaligned", ("zero", 10 * 65536 + 512, 70000))
    step("discard, unaligned", ("discard", 13 * 65536 + 17, 4096 + 17))
    step("zero of the last partial chunk", ("zero", S - 1536, 1536))
    step("several ops in one connection", ("write", 15 * 65536, 512),
         ("discard", 16 * 65536 + 4096, 4096), ("zero", 3 * 65536, 4096))

@section("file: disable, enable, clear, merge, remove")
def _():
    m.command("block-dirty-bitmap-disable", {"node": "d0", "name": "b64"})
    d0.get("b64").recording = False
    step("b64 disabled")
    step("write while b64 is disabled", ("write", 9 * 65536, 1))
    # disable twice / enable twice: silent success, nothing changes.
    m.command("block-dirty-bitmap-disable", {"node": "d0", "name": "b64"})
    step("disable again")
    m.command("block-dirty-bitmap-enable", {"node": "d0", "name": "b64"})
    m.command("block-dirty-bitmap-enable", {"node": "d0", "name": "b64"})
    d0.get("b64").recording = True
    step("write after enable", ("write", 11 * 65536 + 3, 5))

    m.command("block-dirty-bitmap-clear", {"node": "d0", "name": "b512"})
    d0.get("b512").clear()
    step("b512 cleared")
    step("write after clear", ("write", 2 * 65536 + 1000, 24))

    # merge into b1m (1 MiB) from 512 B and 4 KiB bitmaps.
    m.command("block-dirty-bitmap-merge",
              {"node": "d0", "target": "b1m",
               "bitmaps": ["b512", {"node": "d0", "name": "b4k"}]})
    d0.get("b1m").merge(d0.get("b512"))
    d0.get("b1m").merge(d0.get("b4k"))
    step("merge 512 B + 4 KiB into 1 MiB")

    # merge a coarse bitmap into a fine one: every fine chunk it covers.
    m.command("block-dirty-bitmap-merge", {"node": "d0", "target": "b512",
                                           "bitmaps": ["b1m"]})
    d0.get("b512").merge(d0.get("b1m"))
    step("merge 1 MiB into 512 B")

    # merge into a disabled bitmap: it gets the bits, still not recording.
    m.command("block-dirty-bitmap-merge", {"node": "d0", "target": "bdis",
                                           "bitmaps": ["b64", "b4k"]})
    d0.get("bdis").merge(d0.get("b64"))
    d0.get("bdis").merge(d0.get("b4k"))
    step("merge into a disabled bitmap", ("write", 12 * 65536, 7))
    # merge a bitmap into itself: no change.
    m.command("block-dirty-bitmap-merge", {"node": "d0", "target": "b64",
                                           "bitmaps": ["b64"]})
    step("merge into itself")

    m.command("block-dirty-bitmap-remove", {"node": "d0", "name": "b4k"})
    d0.remove("b4k")
    step("b4k removed", ("write", 5 * 65536, 100))
    # A removed name can be added again, empty.
    m.command("block-dirty-bitmap-add", {"node": "d0", "name": "b4k",
                                         "granularity": 4096})
    d0.add("b4k", granularity=4096)
    step("b4k added again", ("zero", 7 * 65536, 65536))

@section("file: reads and read-only connections mark nothing")
def _():
    qio(U, "read 0 %d" % S, "read 1000 10")
    qio(U, "read 0 %d" % S, readonly=True)
    h = nbd_open(U, base_allocation=True)
    h.pread(65536, 0)
    h.cache(65536, 65536) if h.can_cache() else None
    h.flush() if h.can_flush() else None
    h.block_status(S, 0, lambda *a: 0)
    h.shutdown()
    step("after reads, flush, cache, block status")

@section("read-only server: refused writes mark nothing")
def _():
    r = connect(tmp + "/r.qmp")
    r.command("block-dirty-bitmap-add", {"node": "r0", "name": "x"})
    h = nbd.NBD()
    h.set_strict_mode(0)
    h.connect_uri(uri(rsock))
    check(h.is_read_only(), "nbdkit -r export is read-only")
    for fn in (lambda: h.pwrite(b"x" * 512, 0),
               lambda: h.zero(4096, 65536),
               lambda: h.trim(4096, 131072)):
        try:
            fn()
            fail("a write to a read-only export succeeded")
        except nbd.Error:
            pass
    h.shutdown()
    i = bitmap_infos(r, "r0")
    check(len(i) == 1 and i[0]["count"] == 0, "read-only marked: %r" % i)
    check(sha(r, "r0", "x") == Bitmap(S).sha256(), "read-only sha256")

# ---------------- over qmpdisk: sda, sdb (same size), sdc ----------------
q = connect(tmp + "/q.qmp")
nodes = {"sda": Node("sda", S), "sdb": Node("sdb", S),
         "sdc": Node("sdc", 2 * MiB)}

def qstep(what, node=None, *ops):
    if ops:
        qio(uri(qsock, node), *[qio_cmd(op, off, ln) for op, off, ln in ops])
        for op, off, ln in ops:
            nodes[node].write(off, ln)
    for n in nodes.values():
        check_node(q, n, what)

@section("qmpdisk: bitmaps per node, merges across nodes")
def _():
    for n, g in (("sda", 65536), ("sdb", 4096), ("sdc", 65536)):
        q.command("block-dirty-bitmap-add", {"node": n, "name": "m",
                                             "granularity": g})
        nodes[n].add("m", granularity=g)
    # The same name on another node is another bitmap.
    q.command("block-dirty-bitmap-add", {"node": "sdb", "name": "t",
                                         "disabled": True,
                                         "granularity": 512})
    nodes["sdb"].add("t", granularity=512, recording=False)
    qstep("added")
    qstep("write sda", "sda", ("write", 0, 4096), ("write", S - 10, 10))
    qstep("write sdb", "sdb", ("write", 3 * 65536 + 4095, 2),
          ("zero", 8 * 65536, 512), ("discard", 12 * 65536, 65536))
    qstep("write sdc", "sdc", ("write", 2 * MiB - 1, 1))
    # Writes to one disk mark only that disk's bitmaps: checked above.
    q.command("block-dirty-bitmap-merge",
              {"node": "sdb", "target": "t",
               "bitmaps": [{"node": "sda", "name": "m"}, "m"]})
    nodes["sdb"].get("t").merge(nodes["sda"].get("m"))
    nodes["sdb"].get("t").merge(nodes["sdb"].get("m"))
    qstep("merge sda/m (64k) and sdb/m (4k) into sdb/t (512)")
    q.command("block-dirty-bitmap-merge",
              {"node": "sda", "target": "m",
               "bitmaps": [{"node": "sdb", "name": "t"}]})
    nodes["sda"].get("m").merge(nodes["sdb"].get("t"))
    qstep("merge back into sda/m")
    q.command("block-dirty-bitmap-clear", {"node": "sdb", "name": "m"})
    nodes["sdb"].get("m").clear()
    q.command("block-dirty-bitmap-remove", {"node": "sdc", "name": "m"})
    nodes["sdc"].remove("m")
    qstep("clear sdb/m, remove sdc/m", "sdc", ("write", 0, 1))
    check("dirty-bitmaps" not in node_info(q, "sdc") or
          node_info(q, "sdc")["dirty-bitmaps"] == [],
          "sdc lists no bitmaps")

finish()
EOF
