#!/usr/bin/python3
# Read a backup export the way a backup application does, through
# libnbd's block status (base:allocation) and pread, and apply it onto
# a local image.
#
#     incremental_apply.py [--json] [--full] URI TARGET
#
# For an incremental export (DESIGN.md, "Dirty data without
# qemu:dirty-bitmap"): extents without HOLE are read and written at the
# same offset of TARGET; HOLE|ZERO extents are written as zeros;
# HOLE-only extents ("not in this layer") are skipped, so TARGET must
# already hold the previous backup.  With --full the export is a full
# backup: HOLE-only extents are an error (a full backup export reports
# the disk's true allocation, in which every hole reads as zeros), and
# TARGET is made exactly the export's size.
#
# TARGET is extended (never shrunk) to the export's size.  Prints one
# line of statistics, or with --json a JSON object:
#     {"size", "read", "zeroed", "skipped", "extents": [[offset, length,
#      flags], ...]}
# where "read" is the number of bytes read from the export.
#
# As a module: apply(uri, target, full=False) returns the same dict;
# extents(h) lists an open handle's base:allocation extents.

import argparse
import json
import os
import sys

import nbd

# Requests stay well below the 32 MiB that nbdkit accepts.
MAX_REQUEST = 8 * 1024 * 1024
ZEROS = bytes(MAX_REQUEST)


def extents(h):
    """Every base:allocation extent of the export, in order, as
    [offset, length, flags], clipped to the export size, adjacent
    extents of the same flags merged."""
    size = h.get_size()
    out = []
    pos = 0
    while pos < size:
        got = []

        def cb(metacontext, offset, entries, err):
            if metacontext != nbd.CONTEXT_BASE_ALLOCATION:
                return 0
            p = offset
            for i in range(0, len(entries), 2):
                got.append((p, entries[i], entries[i + 1]))
                p += entries[i]
            return 0

        h.block_status(min(size - pos, 1 << 30), pos, cb)
        if not got:
            raise RuntimeError("block status at %d returned no extent" % pos)
        for off, length, flags in got:
            if off != pos:
                raise RuntimeError("block status: extent at %d, expected %d"
                                   % (off, pos))
            if length == 0:
                raise RuntimeError("block status: empty extent at %d" % off)
            length = min(length, size - off)
            if out and out[-1][2] == flags and out[-1][0] + out[-1][1] == off:
                out[-1][1] += length
            else:
                out.append([off, length, flags])
            pos = off + length
            if pos >= size:
                break
    return out


def apply(uri, target, full=False):
    h = nbd.NBD()
    h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    h.connect_uri(uri)
    try:
        if not h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION):
            raise RuntimeError("%s: no base:allocation" % uri)
        size = h.get_size()
        ext = extents(h)
        stats = {"size": size, "read": 0, "zeroed": 0, "skipped": 0,
                 "extents": ext}
        fd = os.open(target, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if full:
                os.ftruncate(fd, size)
            elif os.fstat(fd).st_size < size:
                os.ftruncate(fd, size)
            for off, length, flags in ext:
                hole = flags & nbd.STATE_HOLE
                zero = flags & nbd.STATE_ZERO
                if hole and not zero:
                    if full:
                        raise RuntimeError("full export reports HOLE without "
                                           "ZERO at [%d, +%d)" % (off, length))
                    stats["skipped"] += length
                    continue
                p = off
                while p < off + length:
                    n = min(MAX_REQUEST, off + length - p)
                    if zero:
                        buf = ZEROS[:n]
                        stats["zeroed"] += n
                    else:
                        buf = h.pread(n, p)
                        stats["read"] += n
                    if os.pwrite(fd, buf, p) != n:
                        raise RuntimeError("short write to %s" % target)
                    p += n
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        h.shutdown()
    return stats


def main(argv):
    ap = argparse.ArgumentParser(prog="incremental_apply.py")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--full", action="store_true")
    ap.add_argument("uri")
    ap.add_argument("target")
    a = ap.parse_args(argv[1:])
    stats = apply(a.uri, a.target, full=a.full)
    if a.json:
        print(json.dumps(stats))
    else:
        print("size %d: read %d, zeroed %d, skipped %d bytes in %d extents"
              % (stats["size"], stats["read"], stats["zeroed"],
                 stats["skipped"], len(stats["extents"])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
