#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# Build fuzz-journal and fuzz-persist inputs from state files copied by
# seed-state.sh (FILES/TAG.NAME), into OUT/fuzz-journal and
# OUT/fuzz-persist (see the comments at the top of those targets).
import hashlib
import os
import struct
import sys

files, out = sys.argv[1:]
HEADER = 64                     # common/state's header


def payload(data):
    return data[HEADER:]


def record(sel, data):
    return bytes([sel]) + struct.pack("<H", len(data)) + data


def write(target, name, data):
    with open(os.path.join(out, target, name), "wb") as f:
        f.write(data)


tags = sorted({f.split(".", 1)[0] for f in os.listdir(files)})
for tag in tags:
    mine = {f.split(".", 1)[1]: open(os.path.join(files, f), "rb").read()
            for f in os.listdir(files) if f.startswith(tag + ".")}
    recs = b""
    for name, data in sorted(mine.items()):
        if name == "checkpoints":
            recs += record(0, payload(data))
        elif name == "node.d0":
            recs += record(1, payload(data))
        elif name == "journal.d0":
            recs += record(2, data)
            write("fuzz-journal", tag, b"\0" + data)
            write("fuzz-journal", tag + "-fix", b"\2" + data)
        elif name.startswith("bitmap.d0."):
            suffix = name[len("bitmap.d0."):]
            if len(suffix) == 16:   # a stable name: find which bitmap
                continue
            recs += record(3, bytes([int(suffix)]) + payload(data))
    # Stable bits files: the names are in the node file; try those
    # the seed script makes.
    for bm in ("p1", "g4k", "off", "c1", "c2"):
        h = hashlib.sha256(bm.encode()).hexdigest()[:16]
        data = mine.get("bitmap.d0." + h)
        if data is not None:
            recs += record(4, bytes([len(bm)]) + bm.encode() + payload(data))
    write("fuzz-persist", tag, b"\0" + recs)
    write("fuzz-persist", tag + "-fixed-size", b"\1" + recs)

# Journal round trips: names, then (offset, length) records.
write("fuzz-journal", "round-trip",
      b"\1" + bytes([2, 2]) + b"p1" + bytes([3]) + b"g4k" +
      struct.pack("<QQQQ", 0, 65536, 1 << 20, 4096))
write("fuzz-journal", "round-trip-power",
      b"\3" + bytes([1, 1]) + b"x" + struct.pack("<QQ", 512, 512))
