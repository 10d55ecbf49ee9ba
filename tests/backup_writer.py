#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# A guest for the backup tests: many random writes, zeroes and trims
# through libnbd on a live disk export, keeping a model of the disk.
#
#     backup_writer.py [--seed N] [--ops N] [--stop FILE] [--status FILE]
#                      [--max-seconds S] [--hash-log FILE]
#                      URI START-IMAGE MODEL-OUT
#
# START-IMAGE holds the disk's contents when the writer starts (it must
# be the only writer).  The writer runs until FILE given with --stop
# exists (checked before each request), or --ops requests are done, or
# --max-seconds have passed; then it flushes and writes its model of the
# disk to MODEL-OUT, which must then equal the disk.  --status FILE is
# rewritten with the number of requests done so far, so a test can see
# that the writer was running during some other operation.
#
# --hash-log FILE: after each request, append a line "K START END SHA"
# (K requests done, START and END of request K in time.monotonic(),
# SHA the sha256 of the disk after it), after a first line "0 - - SHA"
# for the start image.  A test that knows when something happened
# (also by time.monotonic(), the same clock in every process) learns
# which states of the disk it may have seen.
#
# Requests: writes (1 byte to 256 KiB, any alignment, sometimes FUA,
# some at the very end of the disk), write-zeroes (with and without
# NO_HOLE) and trims (the range is read back afterwards: NBD does not
# promise what a trimmed range reads as).

import argparse
import hashlib
import os
import random
import sys
import time

import nbd


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--ops", type=int, default=0)
    ap.add_argument("--stop")
    ap.add_argument("--status")
    ap.add_argument("--max-seconds", type=float, default=60)
    ap.add_argument("--hash-log")
    ap.add_argument("uri")
    ap.add_argument("start")
    ap.add_argument("model_out")
    a = ap.parse_args()

    rnd = random.Random(a.seed)
    with open(a.start, "rb") as f:
        model = bytearray(f.read())
    h = nbd.NBD()
    h.connect_uri(a.uri)
    size = h.get_size()
    if size != len(model):
        sys.exit("backup_writer: export size %d, start image %d"
                 % (size, len(model)))
    can_fua = h.can_fua()
    can_zero = h.can_zero()
    can_trim = h.can_trim()

    def status(n):
        if a.status:
            tmp = a.status + ".tmp"
            with open(tmp, "w") as f:
                f.write("%d\n" % n)
            os.rename(tmp, a.status)

    hlog = open(a.hash_log, "w", buffering=1) if a.hash_log else None
    if hlog:
        hlog.write("0 - - %s\n" % hashlib.sha256(model).hexdigest())

    t0 = time.time()
    n = 0
    status(0)
    while True:
        if a.stop and os.path.exists(a.stop):
            break
        if a.ops and n >= a.ops:
            break
        if time.time() - t0 > a.max_seconds:
            break
        r = rnd.random()
        if rnd.random() < 0.6:
            length = rnd.randint(1, 8192)
        else:
            length = rnd.randint(1, 256 * 1024)
        length = min(length, size)
        if rnd.random() < 0.05:
            offset = size - length          # the last bytes of the disk
        else:
            offset = rnd.randint(0, size - length)
        start = time.monotonic()
        if r < 0.7 or not (can_zero or can_trim):
            buf = rnd.randbytes(length)
            flags = nbd.CMD_FLAG_FUA if can_fua and rnd.random() < 0.1 else 0
            h.pwrite(buf, offset, flags)
            model[offset:offset + length] = buf
        elif r < 0.85 and can_zero:
            flags = nbd.CMD_FLAG_NO_HOLE if rnd.random() < 0.5 else 0
            h.zero(length, offset, flags)
            model[offset:offset + length] = bytes(length)
        elif can_trim:
            h.trim(length, offset)
            model[offset:offset + length] = h.pread(length, offset)
        end = time.monotonic()
        n += 1
        if hlog:
            hlog.write("%d %.6f %.6f %s\n" % (n, start, end,
                                              hashlib.sha256(model).hexdigest()))
        if n % 16 == 0:
            status(n)
    h.flush()
    h.shutdown()
    status(n)
    with open(a.model_out, "wb") as f:
        f.write(model)
    print(n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
