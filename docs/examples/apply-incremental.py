#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
#
# apply-incremental.py: read an incremental backup export of
# nbdkit-checkpoint with libnbd and apply it onto the previous backup,
# a raw image file, which then holds the disk at the backup's instant.
#
#     apply-incremental.py URI TARGET
#
# base:allocation of an incremental export:
#   HOLE, no ZERO  unchanged since the checkpoint: keep TARGET's bytes
#   HOLE|ZERO      changed, now reads as zeros: write zeros
#   neither        changed: read it and write it

import os
import sys

import nbd

MAX_REQUEST = 4 * 1024 * 1024
MAX_STATUS = 1024 * 1024 * 1024

uri, target = sys.argv[1], sys.argv[2]
h = nbd.NBD()
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.connect_uri(uri)
if not h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION):
    sys.exit("%s: the server offers no base:allocation" % uri)
size = h.get_size()

fd = os.open(target, os.O_WRONLY | os.O_CREAT, 0o644)
if os.fstat(fd).st_size < size:
    os.ftruncate(fd, size)

stats = {"read": 0, "zeroed": 0, "skipped": 0}
pos = 0
while pos < size:
    extents = []

    def cb(metacontext, offset, entries, err):
        if metacontext == nbd.CONTEXT_BASE_ALLOCATION:
            extents.extend(zip(entries[0::2], entries[1::2]))
        return 0

    # The server may describe less than asked, or more: go on from the
    # end of the last extent it returned.
    h.block_status(min(size - pos, MAX_STATUS), pos, cb)
    if not extents:
        sys.exit("block status at %d: no extent" % pos)
    for length, flags in extents:
        if length == 0:
            sys.exit("empty extent at %d" % pos)
        end = min(pos + length, size)
        if flags & nbd.STATE_HOLE and not flags & nbd.STATE_ZERO:
            stats["skipped"] += end - pos   # unchanged: in the previous backup
            pos = end
            continue
        while pos < end:
            n = min(end - pos, MAX_REQUEST)
            if flags & nbd.STATE_ZERO:
                data = bytes(n)
                stats["zeroed"] += n
            else:
                data = h.pread(n, pos)
                stats["read"] += n
            view = memoryview(data)
            while view:
                w = os.pwrite(fd, view, pos)
                view = view[w:]
                pos += w
        if pos >= size:
            break

os.fsync(fd)
os.close(fd)
h.shutdown()
print("read %(read)d zeroed %(zeroed)d skipped %(skipped)d" % stats)
