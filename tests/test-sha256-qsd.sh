#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# The same scenario on qemu-storage-daemon 7.2 and on the checkpoint
# filter over the file plugin (docs/qmp-reference.md, x-debug-block-dirty-bitmap-sha256
# and query-named-block-nodes: the same operations on the same disk
# give the same hash in qemu-storage-daemon 7.2 and here, and the same
# count, granularity, recording, persistent and busy): identical
# qemu-io writes (aligned, unaligned, across chunk edges, into the last
# partial chunk, write-zeroes, discard) and identical bitmap commands
# (add with granularities 512/4096/65536/1M, disable, enable, merge,
# clear, remove); after every step the bitmap lists (order included),
# every field (count included) and every sha256 must be equal on both.  The disk is
# 17 x 64 KiB + 1536 bytes: a multiple of 512 (so QEMU sees the same
# size) but not of 4 KiB, 64 KiB or 1 MiB.
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e
set -x

requires_built "$FILTER"
requires nbdkit --version
requires qemu-io --version
command -v qemu-storage-daemon >/dev/null ||
    skip "qemu-storage-daemon is not installed (Debian: qemu-system-common)"
requires qemu-storage-daemon --version
tmpdir

S=$(( 17 * 65536 + 1536 ))
truncate -s $S "$tmp/q.img" "$tmp/o.img"

start_qsd "$tmp/q.img"

start_nbdkit o --filter="$FILTER" file "$tmp/o.img" node-name=d0 \
             qmp="$tmp/o.qmp"
osock=$sock

$PY - "$tmp" "$osock" $S <<'EOF'
import hashlib
from ckpt_model import *

tmp, osock, S = script_args(str, str, int)
# QEMU's monitor serves one client at a time: one connection each.
q = connect(tmp + "/qsd.qmp")
o = connect(tmp + "/o.qmp")
Q_URI = uri(tmp + "/qsd.sock", "d0")
O_URI = uri(osock)
partial_counted = set()    # bitmaps whose last, partial chunk was dirty
steps = 0

def both(cmd, args):
    rq = q.cmd(cmd, args)
    ro = o.cmd(cmd, args)
    check(("error" in rq) == ("error" in ro),
          "%s %r: qemu %r, ours %r" % (cmd, args, rq, ro))
    return rq, ro

model = Node("d0", S)     # also checked: QEMU really marked each op

def io(op, offset, length):
    c = qio_cmd(op, offset, length, pattern=0x30 + steps)
    qio(Q_URI, c)
    qio(O_URI, c)
    model.write(offset, length)

def mboth(cmd, args):
    """A command that must succeed on both, applied to the model."""
    rq, ro = both(cmd, args)
    check("return" in rq and "return" in ro, "%s %r: %r %r"
          % (cmd, args, rq, ro))
    if cmd == "block-dirty-bitmap-add":
        model.add(args["name"], granularity=args.get("granularity", CHUNK),
                  recording=not args.get("disabled", False))
    elif cmd == "block-dirty-bitmap-remove":
        model.remove(args["name"])
    elif cmd == "block-dirty-bitmap-clear":
        model.get(args["name"]).clear()
    elif cmd.endswith("-enable") or cmd.endswith("-disable"):
        model.get(args["name"]).recording = cmd.endswith("-enable")
    elif cmd == "block-dirty-bitmap-merge":
        for b in args["bitmaps"]:
            model.get(args["target"]).merge(
                model.get(b if isinstance(b, str) else b["name"]))

def compare(what):
    global steps
    steps += 1
    lq = bitmap_infos(q, "d0")
    lo = bitmap_infos(o, "d0")
    check([b["name"] for b in lq] == [b["name"] for b in lo],
          "%s: bitmap lists differ: qemu %s, ours %s"
          % (what, [b["name"] for b in lq], [b["name"] for b in lo]))
    for bq, bo in zip(lq, lo):
        for f in ("granularity", "recording", "persistent", "busy"):
            check(bq[f] == bo[f], "%s: %s.%s: qemu %r, ours %r"
                  % (what, bq["name"], f, bq[f], bo[f]))
        # QEMU omits inconsistent when false.
        check(bq.get("inconsistent", False) == bo.get("inconsistent", False),
              "%s: %s inconsistent differs" % (what, bq["name"]))
        hq, ho = sha(q, "d0", bq["name"]), sha(o, "d0", bo["name"])
        check(hq == ho, "%s: %s sha256: qemu %s, ours %s"
              % (what, bq["name"], hq, ho))
        hm = model.get(bq["name"]).sha256()
        check(hq == hm, "%s: %s sha256: qemu and ours %s, model %s"
              % (what, bq["name"], hq, hm))
        check(bq["count"] == model.get(bq["name"]).count(clip=False),
              "%s: %s: qemu's count is not granules x granularity"
              % (what, bq["name"]))
        # The last, partial chunk counts whole on both (QEMU 7.2).
        check(bo["count"] == bq["count"],
              "%s: %s (granularity %d): qemu count %d, ours %d"
              % (what, bq["name"], bq["granularity"], bq["count"],
                 bo["count"]))
        if bq["count"] != model.get(bq["name"]).count(clip=True):
            partial_counted.add(bq["name"])

for g, name in ((512, "g512"), (4096, "g4k"), (65536, "g64k"),
                (MiB, "g1m"), (1 << 31, "g2g")):
    mboth("block-dirty-bitmap-add", {"node": "d0", "name": name,
                                    "granularity": g})
mboth("block-dirty-bitmap-add", {"node": "d0", "name": "dflt"})
compare("added, empty")

io("write", 0, 65536)
compare("aligned 64k write")
io("write", 1000, 10)
compare("unaligned write")
io("write", 4 * 65536 - 100, 200)
compare("write across a 64k edge")
io("write", 2 * MiB // 2 + 4095, 8192)
compare("write across 4k edges")
io("write", S - 1, 1)
compare("last byte (last partial chunk)")
io("zero", 5 * 65536 + 512, 70000)
compare("write-zeroes, unaligned")
io("discard", 8 * 65536 + 17, 4096 + 17)
compare("discard, unaligned")
io("discard", 12 * 65536, 131072)
compare("discard, aligned")
io("zero", S - 1536, 1536)
compare("write-zeroes of the last partial chunk")

mboth("block-dirty-bitmap-disable", {"node": "d0", "name": "g64k"})
compare("g64k disabled")
io("write", 14 * 65536, 4096)
compare("write while g64k is disabled")
mboth("block-dirty-bitmap-enable", {"node": "d0", "name": "g64k"})
io("write", 15 * 65536 + 512, 512)
compare("g64k enabled again, written")

mboth("block-dirty-bitmap-add", {"node": "d0", "name": "m",
                                "granularity": 4096, "disabled": True})
mboth("block-dirty-bitmap-merge", {"node": "d0", "target": "m",
                                  "bitmaps": ["g512", "g1m"]})
compare("merge 512 B and 1 MiB into a disabled 4 KiB")
mboth("block-dirty-bitmap-merge",
     {"node": "d0", "target": "g512",
      "bitmaps": [{"node": "d0", "name": "g1m"}, "g64k"]})
compare("merge 1 MiB and 64 KiB into 512 B")
mboth("block-dirty-bitmap-clear", {"node": "d0", "name": "g4k"})
compare("g4k cleared")
io("write", 16 * 65536 + 4094, 3)
compare("write after clear")
mboth("block-dirty-bitmap-remove", {"node": "d0", "name": "dflt"})
mboth("block-dirty-bitmap-add", {"node": "d0", "name": "dflt",
                                "granularity": 65536, "disabled": True})
compare("removed and re-added disabled")
mboth("block-dirty-bitmap-merge", {"node": "d0", "target": "dflt",
                                  "bitmaps": ["g512"]})
compare("merge 512 B into 64 KiB")

# Refused on both (same outcome; texts may differ).
both("block-dirty-bitmap-add", {"node": "d0", "name": "g4k"})
both("block-dirty-bitmap-add", {"node": "d0", "name": "x",
                                "granularity": 1 << 32})
both("block-dirty-bitmap-clear", {"node": "d0", "name": "nope"})
compare("after refused commands")

# The hash test vector of the reference: an empty 64 KiB bitmap of
# this disk is one zero word.
mboth("block-dirty-bitmap-add", {"node": "d0", "name": "empty"})
check(sha(o, "d0", "empty") == hashlib.sha256(bytes(8)).hexdigest(),
      "empty sha256")
compare("empty bitmap")

print("%d steps compared" % steps)
# The disk's size is no multiple of these granularities, so the
# comparison above must have met a dirty last chunk for each.
check({"g4k", "g64k", "g1m", "g2g"} <= partial_counted,
      "the last, partial chunk was dirty only in %s" % sorted(partial_counted))
EOF
