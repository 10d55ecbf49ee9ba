#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# Every error path of the dirty bitmap commands (docs/qmp-reference.md,
# block-dirty-bitmap-*), with QEMU's exact error texts where
# the reference gives them, and the proof that a refused command
# changed nothing (every bitmap's info and sha256 before = after):
# unknown node, duplicate/empty/too long name, bad granularity
# (including 2^32: the uint32 error), persistent without state=, busy
# checkpoint bitmaps, missing bitmaps, merge with an empty list (an
# error, not a crash), a merge whose second source is missing, and a
# merge from a node of another size (QEMU refuses it).
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e
set -x

requires_built "$PLUGIN" "$FILTER"
requires nbdkit --version
requires qemu-io --version
tmpdir

S=$(( 17 * 65536 + 1536 ))
truncate -s $S "$tmp/d0.img"
start_nbdkit f --filter="$FILTER" file "$tmp/d0.img" node-name=d0 \
             qmp="$tmp/f.qmp" state="$tmp/fstate"
fsock=$sock
# No state=: persistent bitmaps are refused.
start_nbdkit m --filter="$FILTER" memory 1M node-name=m0 qmp="$tmp/m.qmp"
# qmpdisk: sda and sdb of one size, sdc of another.
truncate -s $S "$tmp/a.img" "$tmp/b.img"
truncate -s 2M "$tmp/c.img"
start_nbdkit q --filter="$FILTER" "$PLUGIN" disk=sda:"$tmp/a.img" \
             disk=sdb:"$tmp/b.img" disk=sdc:"$tmp/c.img" \
             qmp="$tmp/q.qmp" state="$tmp/qstate"
qsock=$sock

$PY - "$tmp" "$fsock" "$qsock" $S <<'EOF'
from ckpt_model import *

tmp, fsock, qsock, S = script_args(str, str, str, int)
m = connect(tmp + "/f.qmp")

# Some state to protect: plain bitmaps with bits, a checkpoint.
m.command("block-dirty-bitmap-add", {"node": "d0", "name": "a"})
m.command("block-dirty-bitmap-add", {"node": "d0", "name": "g512",
                                     "granularity": 512})
m.command("block-dirty-bitmap-add", {"node": "d0", "name": "off",
                                     "disabled": True})
qio(uri(fsock), "write 0 4096", "write 300000 70000", "write %d 1" % (S - 1))
m.command("checkpoint-create", {"name": "K"})
qio(uri(fsock), "write 500000 1000")
before = snapshot(m, ["d0"])

def unchanged(what):
    after = snapshot(m, ["d0"])
    check(after == before, "%s changed the state:\n before %s\n after %s"
          % (what, before, after))

E = expect_error
ALL = ["block-dirty-bitmap-remove", "block-dirty-bitmap-clear",
       "block-dirty-bitmap-enable", "block-dirty-bitmap-disable",
       "x-debug-block-dirty-bitmap-sha256"]

@section("unknown node")
def _():
    # QEMU 7.2: add says "Cannot find device...", the others "Node ...".
    E(m, "block-dirty-bitmap-add", {"node": "nope", "name": "x"},
      "Cannot find device='nope' nor node-name='nope'")
    nf = "Node 'nope' not found"
    for c in ALL:
        E(m, c, {"node": "nope", "name": "a"}, nf)
    E(m, "block-dirty-bitmap-merge", {"node": "nope", "target": "a",
                                      "bitmaps": ["a"]}, nf)
    E(m, "block-dirty-bitmap-merge",
      {"node": "d0", "target": "a", "bitmaps": [{"node": "nope",
                                                 "name": "a"}]}, nf)
    unchanged("unknown node")

@section("names: duplicate, empty, too long")
def _():
    E(m, "block-dirty-bitmap-add", {"node": "d0", "name": "a"},
      "Bitmap already exists: a")
    E(m, "block-dirty-bitmap-add", {"node": "d0", "name": "a",
                                    "granularity": 512, "disabled": True},
      "Bitmap already exists: a")
    # The checkpoint's bitmap holds the name K too.
    E(m, "block-dirty-bitmap-add", {"node": "d0", "name": "K"},
      "Bitmap already exists: K")
    E(m, "block-dirty-bitmap-add", {"node": "d0", "name": ""},
      "Bitmap name cannot be empty")
    long = "n" * 1024
    E(m, "block-dirty-bitmap-add", {"node": "d0", "name": long},
      "Bitmap name too long: " + long)
    unchanged("bad names")
    ok = "o" * 1023
    m.command("block-dirty-bitmap-add", {"node": "d0", "name": ok})
    check(bitmap_infos(m, "d0")[0]["name"] == ok, "1023-byte name")
    m.command("block-dirty-bitmap-remove", {"node": "d0", "name": ok})
    unchanged("add and remove of a 1023-byte name")

@section("granularity")
def _():
    bad = "Granularity must be power of 2 and at least 512"
    for g in (0, 1, 256, 511, 513, 3000, 65535, 65537, 98304,
              (1 << 31) + 1, (1 << 32) - 1):
        E(m, "block-dirty-bitmap-add", {"node": "d0", "name": "g",
                                        "granularity": g}, bad)
    for g in (1 << 32, 1 << 40, -1, -65536):
        E(m, "block-dirty-bitmap-add", {"node": "d0", "name": "g",
                                        "granularity": g},
          "Parameter 'granularity' expects uint32_t")
    for g in ("65536", 65536.0, True, None):
        E(m, "block-dirty-bitmap-add", {"node": "d0", "name": "g",
                                        "granularity": g})
    unchanged("bad granularity")
    for g in (512, 1 << 31):
        m.command("block-dirty-bitmap-add", {"node": "d0", "name": "g",
                                             "granularity": g})
        i = bitmap_infos(m, "d0")[0]
        check(i["name"] == "g" and i["granularity"] == g, "%r" % i)
        m.command("block-dirty-bitmap-remove", {"node": "d0", "name": "g"})
    unchanged("granularity add/remove")

@section("persistent without state=")
def _():
    mm = connect(tmp + "/m.qmp")
    d = E(mm, "block-dirty-bitmap-add", {"node": "m0", "name": "p",
                                         "persistent": True})
    check(d.startswith("Can't store persistent bitmaps to m0"), d)
    check(bitmap_infos(mm, "m0") == [], "nothing added")
    # Transient bitmaps work there, and persistent=false is explicit.
    mm.command("block-dirty-bitmap-add", {"node": "m0", "name": "p",
                                          "persistent": False})
    check([b["persistent"] for b in bitmap_infos(mm, "m0")] == [False], "")

@section("busy: a checkpoint's bitmap")
def _():
    k = {b["name"]: b for b in bitmap_infos(m, "d0")}["K"]
    check(k["busy"] is True and k["recording"] is True, "K: %r" % k)
    busy = ("Bitmap 'K' is currently in use by another operation and "
            "cannot be used")
    for c in ALL[:4]:
        E(m, c, {"node": "d0", "name": "K"}, busy)
    E(m, "block-dirty-bitmap-merge", {"node": "d0", "target": "K",
                                      "bitmaps": ["a"]}, busy)
    unchanged("busy")
    # Reading a busy bitmap is fine (sha256), but QEMU 7.2 refuses it
    # as a merge source, by name or as {node, name}, in any position.
    b = Bitmap(S)
    b.mark(500000, 1000)
    check(sha(m, "d0", "K") == b.sha256(), "K holds only the write "
          "after the checkpoint")
    m.command("block-dirty-bitmap-add", {"node": "d0", "name": "copy",
                                         "disabled": True})
    for srcs in (["K"], [{"node": "d0", "name": "K"}], ["a", "K"]):
        E(m, "block-dirty-bitmap-merge", {"node": "d0", "target": "copy",
                                          "bitmaps": srcs}, busy)
        check(sha(m, "d0", "copy") == Bitmap(S).sha256(),
              "a refused merge left copy empty")
    m.command("block-dirty-bitmap-remove", {"node": "d0", "name": "copy"})
    unchanged("merge from a busy bitmap")

@section("missing bitmap")
def _():
    nf = "Dirty bitmap 'nope' not found"
    for c in ALL:
        E(m, c, {"node": "d0", "name": "nope"}, nf)
    E(m, "block-dirty-bitmap-merge", {"node": "d0", "target": "nope",
                                      "bitmaps": ["a"]}, nf)
    E(m, "block-dirty-bitmap-merge", {"node": "d0", "target": "off",
                                      "bitmaps": ["nope"]}, nf)
    E(m, "block-dirty-bitmap-merge",
      {"node": "d0", "target": "off",
       "bitmaps": [{"node": "d0", "name": "nope"}]}, nf)
    # The first source merged, the second missing: all or nothing.
    E(m, "block-dirty-bitmap-merge", {"node": "d0", "target": "off",
                                      "bitmaps": ["a", "nope"]}, nf)
    E(m, "block-dirty-bitmap-merge",
      {"node": "d0", "target": "off",
       "bitmaps": ["a", "g512", {"node": "d0", "name": "nope"}]}, nf)
    unchanged("missing bitmaps")

@section("merge: empty list and bad sources")
def _():
    E(m, "block-dirty-bitmap-merge", {"node": "d0", "target": "off",
                                      "bitmaps": []})
    check(m.command("query-version")["qemu"]["major"] == 7, "alive")
    E(m, "block-dirty-bitmap-merge", {"node": "d0", "target": "off",
                                      "bitmaps": [3]})
    # Nested paths as QEMU writes them.
    E(m, "block-dirty-bitmap-merge", {"node": "d0", "target": "off",
                                      "bitmaps": [{"node": "d0"}]},
      "Parameter 'bitmaps[0].name' is missing")
    E(m, "block-dirty-bitmap-merge",
      {"node": "d0", "target": "off",
       "bitmaps": ["a", {"node": "d0", "name": 1}]},
      "Invalid parameter type for 'bitmaps[1].name', expected: string")
    E(m, "block-dirty-bitmap-merge",
      {"node": "d0", "target": "off",
       "bitmaps": ["a", {"node": "d0", "name": "a", "x": 1}]},
      "Parameter 'bitmaps[1].x' is unexpected")
    E(m, "block-dirty-bitmap-merge", {"node": "d0", "target": "off",
                                      "bitmaps": "a"})
    E(m, "block-dirty-bitmap-merge", {"node": "d0", "target": "off"},
      "Parameter 'bitmaps' is missing")
    unchanged("bad merges")

@section("arguments")
def _():
    E(m, "block-dirty-bitmap-add", {"node": "d0"},
      "Parameter 'name' is missing")
    E(m, "block-dirty-bitmap-add", {"name": "x"},
      "Parameter 'node' is missing")
    E(m, "block-dirty-bitmap-add", {"node": "d0", "name": "x", "foo": 1},
      "Parameter 'foo' is unexpected")
    E(m, "block-dirty-bitmap-clear", {"node": "d0", "name": "a",
                                      "granularity": 512},
      "Parameter 'granularity' is unexpected")
    E(m, "block-dirty-bitmap-add", {"node": "d0", "name": 5},
      "Invalid parameter type for 'name', expected: string")
    E(m, "block-dirty-bitmap-add", {"node": "d0", "name": "x",
                                    "persistent": "yes"},
      "Invalid parameter type for 'persistent', expected: boolean")
    unchanged("bad arguments")

@section("qmpdisk: merge from a node of another size (QEMU refuses)")
def _():
    q = connect(tmp + "/q.qmp")
    for n in ("sda", "sdb", "sdc"):
        q.command("block-dirty-bitmap-add", {"node": n, "name": "m"})
    qio(uri(qsock, "sdc"), "write 0 1M")
    qio(uri(qsock, "sdb"), "write 65536 1")
    # Same size on another node: fine.
    q.command("block-dirty-bitmap-merge", {"node": "sda", "target": "m",
                                           "bitmaps": [{"node": "sdb",
                                                        "name": "m"}]})
    exp = Bitmap(S)
    exp.mark(65536, 1)
    check(sha(q, "sda", "m") == exp.sha256(), "sdb merged into sda")
    before = sha(q, "sda", "m")
    # QEMU 7.2: "Bitmaps are of different sizes (destination size is
    # N, source size is M) and can't be merged" (older QEMU: "Bitmaps
    # are incompatible and can't be merged").
    d = E(q, "block-dirty-bitmap-merge",
          {"node": "sda", "target": "m",
           "bitmaps": [{"node": "sdc", "name": "m"}]})
    check("can't be merged" in d, d)
    # Also when it is not the first source.
    E(q, "block-dirty-bitmap-merge",
      {"node": "sda", "target": "m",
       "bitmaps": ["m", {"node": "sdb", "name": "m"},
                   {"node": "sdc", "name": "m"}]})
    check(sha(q, "sda", "m") == before, "refused merge changed sda/m")

finish()
EOF
