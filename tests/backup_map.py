#!/usr/bin/python3
# Check the block status of an incremental backup export against the
# chunks that are expected to have changed since its base checkpoint,
# as three clients see it: nbdinfo --map --json, qemu-img map
# --output=json and libnbd's block status.
#
#     backup_map.py URI GRANULARITY "CHUNK ..." ["ZERO-CHUNK ..."]
#
# CHUNK numbers are chunk indexes (offset / GRANULARITY).  Asserts that
# the extents which are not HOLE-only are exactly the union of those
# chunks (the last one clipped to the export size), that everything
# else is HOLE without ZERO ("not in this layer", DESIGN.md), and that
# every ZERO-CHUNK (a changed chunk that now reads as zeros and is not
# allocated) is HOLE|ZERO.  Exits 1 with a message on any mismatch,
# printing the maps.

import json
import subprocess
import sys

import nbd

from incremental_apply import extents
from testlib import nbd_open

HOLE, ZERO = 1, 2


def merge(ranges):
    out = []
    for s, e in sorted(ranges):
        if s >= e:
            continue
        if out and out[-1][1] >= s:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return out


def fail(msg, *dumps):
    for d in dumps:
        print(json.dumps(d), file=sys.stderr)
    print("backup_map.py: FAIL: %s" % msg, file=sys.stderr)
    sys.exit(1)


def main(argv):
    if len(argv) not in (4, 5):
        sys.exit(__doc__)
    uri, gran = argv[1], int(argv[2])
    chunks = [int(x) for x in argv[3].split()]
    zero_chunks = [int(x) for x in argv[4].split()] if len(argv) == 5 else []
    size = int(subprocess.check_output(["nbdinfo", "--size", uri]))
    expect = merge([c * gran, min((c + 1) * gran, size)] for c in chunks)

    # nbdinfo
    nmap = json.loads(subprocess.check_output(["nbdinfo", "--map", "--json",
                                               uri]))
    pos = 0
    for e in nmap:
        if e["offset"] != pos:
            fail("nbdinfo map not contiguous at %d" % pos, nmap)
        pos += e["length"]
    if pos != size:
        fail("nbdinfo map covers %d of %d bytes" % (pos, size), nmap)
    got = merge([e["offset"], e["offset"] + e["length"]] for e in nmap
                if (e["type"] & (HOLE | ZERO)) != HOLE)
    if got != expect:
        fail("nbdinfo: changed extents %r, expected %r" % (got, expect), nmap)
    for e in nmap:
        if (e["type"] & (HOLE | ZERO)) == HOLE:
            continue
        if e["type"] not in (0, HOLE | ZERO):
            fail("nbdinfo: unexpected type %d in a changed chunk" % e["type"],
                 nmap)
    for c in zero_chunks:
        s, t = c * gran, min((c + 1) * gran, size)
        for e in nmap:
            if e["offset"] < t and e["offset"] + e["length"] > s and \
               e["type"] != HOLE | ZERO:
                fail("nbdinfo: chunk %d should be hole,zero: %r" % (c, e),
                     nmap)

    # qemu-img map: HOLE-only is "present": false (and not zero).
    qmap = json.loads(subprocess.check_output(
        ["qemu-img", "map", "-f", "raw", "--output=json", uri]))
    got = merge([e["start"], e["start"] + e["length"]] for e in qmap
                if e["present"])
    if got != expect:
        fail("qemu-img map: present extents %r, expected %r" % (got, expect),
             qmap)
    for e in qmap:
        if not e["present"] and (e["zero"] or e["data"]):
            fail("qemu-img map: absent extent with zero or data: %r" % e,
                 qmap)
    for c in zero_chunks:
        s, t = c * gran, min((c + 1) * gran, size)
        for e in qmap:
            if e["start"] < t and e["start"] + e["length"] > s and \
               not (e["zero"] and not e["data"]):
                fail("qemu-img map: chunk %d should read as zero, "
                     "unallocated: %r" % (c, e), qmap)

    # libnbd
    h = nbd_open(uri, base_allocation=True)
    lmap = extents(h)
    h.shutdown()
    got = merge([o, o + n] for o, n, f in lmap
                if (f & (nbd.STATE_HOLE | nbd.STATE_ZERO)) != nbd.STATE_HOLE)
    if got != expect:
        fail("libnbd: changed extents %r, expected %r" % (got, expect), lmap)

    changed = sum(t - s for s, t in expect)
    print("%s: %d changed bytes in %d extents, as expected"
          % (uri, changed, len(expect)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
