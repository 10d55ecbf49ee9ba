#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
#
# A guest that keeps writing to its disk while backups are taken, and
# records what the disk held at each backup's instant.
#
#     chain_guest.py [--seed N] [--pause MS] URI QMP-SOCKET START-IMAGE DIR
#
# It writes (random data, any alignment, mostly small, sometimes at the
# very end of the disk), write-zeroes and trims through libnbd on the
# live export URI, one request at a time, keeping a model of the disk
# that starts as START-IMAGE (it must be the only writer).  The test
# drives it with files in DIR:
#
#   DIR/begin.N   (written by the test) JSON arguments of a backup-begin.
#                 Between two of its requests the guest sends that
#                 backup-begin over QMP-SOCKET, so that the backup's
#                 instant falls exactly there; it saves its model, the
#                 disk at that instant, to DIR/ref.N.img and then the
#                 reply to DIR/begun.N.  N counts from 0.
#   DIR/stop      (written by the test) flush, save the model to
#                 DIR/final.img, then write DIR/done and exit.
#   DIR/ops       (written by the guest) requests done so far.
#
# So a backup is compared with the recorded writes, not with another
# read of the same server.  The guest sleeps --pause milliseconds
# between requests (default 2) so that most of the disk stays unchanged
# between two backups.

import argparse
import importlib
import json
import os
import random
import sys
import time

import nbd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
qmp_client = importlib.import_module("qmp-client")


def put(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def save(path, model):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(model)
    os.rename(tmp, path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--pause", type=float, default=2)
    ap.add_argument("uri")
    ap.add_argument("qmp")
    ap.add_argument("start")
    ap.add_argument("dir")
    a = ap.parse_args()

    rnd = random.Random(a.seed)
    with open(a.start, "rb") as f:
        model = bytearray(f.read())
    h = nbd.NBD()
    h.connect_uri(a.uri)
    size = h.get_size()
    if size != len(model):
        sys.exit("chain_guest: export size %d, start image %d"
                 % (size, len(model)))
    mon = qmp_client.QMP(a.qmp)

    n = 0
    backups = 0
    put(os.path.join(a.dir, "ops"), "0\n")
    while not os.path.exists(os.path.join(a.dir, "stop")):
        begin = os.path.join(a.dir, "begin.%d" % backups)
        if os.path.exists(begin):
            with open(begin) as f:
                args = json.load(f)
            r = mon.command("backup-begin", args)
            save(os.path.join(a.dir, "ref.%d.img" % backups), model)
            put(os.path.join(a.dir, "begun.%d" % backups), json.dumps(r))
            backups += 1
        if rnd.random() < 0.9:
            length = rnd.randint(1, 8192)
        else:
            length = rnd.randint(1, 256 * 1024)
        length = min(length, size)
        if rnd.random() < 0.05:
            offset = size - length
        else:
            offset = rnd.randint(0, size - length)
        r = rnd.random()
        if r < 0.7:
            buf = rnd.randbytes(length)
            h.pwrite(buf, offset)
            model[offset:offset + length] = buf
        elif r < 0.85:
            flags = nbd.CMD_FLAG_NO_HOLE if rnd.random() < 0.5 else 0
            h.zero(length, offset, flags)
            model[offset:offset + length] = bytes(length)
        else:
            # NBD does not promise what a trimmed range reads as.
            h.trim(length, offset)
            model[offset:offset + length] = h.pread(length, offset)
        n += 1
        put(os.path.join(a.dir, "ops"), "%d\n" % n)
        time.sleep(a.pause / 1000)
    h.flush()
    h.shutdown()
    mon.close()
    save(os.path.join(a.dir, "final.img"), model)
    put(os.path.join(a.dir, "done"), "%d\n" % n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
