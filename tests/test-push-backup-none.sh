#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# sync none (QEMU's old fleecing): the job copies nothing by itself;
# before a guest write or zero changes a 64 KiB cluster for
# the first time, its old data goes to the target; the job runs until
# cancelled (BLOCK_JOB_CANCELLED, offset = the bytes saved).  The same
# steps run on qemu-storage-daemon 7.2 (blockdev-backup sync none to a
# file node) and here (drive-backup to a file, blockdev-backup to a
# file node): progress, events (QEMU's drain blips left out) and the
# targets must be equal, and equal to the old data of the written
# clusters (zeros elsewhere), bit for bit.
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e
set -x

requires_built "$PLUGIN" "$FILTER"
requires nbdkit --version
requires qemu-io --version
command -v qemu-storage-daemon >/dev/null ||
    skip "qemu-storage-daemon is not installed (Debian: qemu-system-common)"
requires qemu-storage-daemon --version
tmpdir

SIZE=$(( 8 * 1024 * 1024 ))
head -c $SIZE /dev/urandom > "$tmp/q.img"
cp "$tmp/q.img" "$tmp/o.img"
truncate -s $SIZE "$tmp/tq.raw" "$tmp/tn.raw"
mkdir "$tmp/scratch"

start_qsd "$tmp/q.img"
start_nbdkit o --filter="$FILTER" "$PLUGIN" disk=d0:"$tmp/o.img" \
             qmp="$tmp/o.qmp" scratch="$tmp/scratch"
osock=$sock

$PY - "$tmp" "$osock" <<'EOF'
import shutil, time
import testlib
from testlib import *
tmp, osock = script_args(str, str)
SIZE = 8 * MiB
C = 64 * KiB
q = connect(tmp + "/qsd.qmp")
o = connect(tmp + "/o.qmp")
Q_URI = uri(tmp + "/qsd.sock", "d0")
O_URI = uri(osock, "d0")
start = file_bytes(tmp + "/o.img")
check(start == file_bytes(tmp + "/q.img"), "the two disks differ")

def job_events(m, job):
    out = testlib.job_events(m, job)
    # QEMU's drain blip at the job's start (paused, running); the user
    # pause comes later.
    if m is q and out[2:4] == ["paused", "running"]:
        del out[2:4]
    return out

def progress(m, job):
    [j] = [j for j in m.command("query-jobs") if j["id"] == job]
    [b] = [b for b in m.command("query-block-jobs") if b["device"] == job]
    check(j["current-progress"] == b["offset"] and
          j["total-progress"] == b["len"] == SIZE,
          "query-jobs %r and query-block-jobs %r" % (j, b))
    return j["current-progress"]

def expected(clusters):
    out = bytearray(SIZE)
    for c in clusters:
        out[c * C:(c + 1) * C] = start[c * C:(c + 1) * C]
    return bytes(out)

@section("sync none on qemu-storage-daemon and here")
def _():
    q.command("blockdev-add", {"driver": "file", "node-name": "tq",
                               "filename": tmp + "/tq.raw"})
    q.command("blockdev-backup", {"job-id": "n", "device": "d0",
                                  "target": "tq", "sync": "none"})
    o.command("drive-backup", {"job-id": "n", "device": "d0",
                               "target": tmp + "/to.raw", "sync": "none"})
    o.command("blockdev-add", {"driver": "file", "node-name": "tn",
                               "filename": tmp + "/tn.raw"})
    o.command("blockdev-backup", {"job-id": "nb", "device": "d0",
                                  "target": "tn", "sync": "none"})
    for m, jobs in ((q, ["n"]), (o, ["n", "nb"])):
        for j in jobs:
            check(progress(m, j) == 0, "progress before any write")
            expect_error(m, "job-finalize", {"id": j},
                         "Job '%s' in state 'running' cannot accept command "
                         "verb 'finalize'" % j)
    w1 = ["write -P 0x11 4096 4096", "write -P 0x22 1M 100k",
          "write -P 0x33 8k 4k", "write -z 5M 64k"]
    qio(Q_URI, *w1)
    qio(O_URI, *w1)
    # (No discard: qemu-storage-daemon's backup filter node drops it,
    # without discard=unmap, before it reaches the disk.)
    want = [0, 16, 17, 80]
    pq = progress(q, "n")
    check(pq == len(want) * C, "qemu's progress %d" % pq)
    for j in ("n", "nb"):
        check(progress(o, j) == pq, "%s: progress %d, qemu's %d"
              % (j, progress(o, j), pq))
    # Paused, it still saves what the guest overwrites.
    for m in (q, o):
        m.command("job-pause", {"id": "n"})
        wait_status(m, "n", "paused")
    qio(Q_URI, "write -P 0x44 7M 64k")
    qio(O_URI, "write -P 0x44 7M 64k")
    want.append(112)
    for m in (q, o):
        check(progress(m, "n") == len(want) * C, "progress while paused")
        m.command("job-resume", {"id": "n"})
        m.command("block-job-cancel", {"device": "n"})
        wait_ev(m, "BLOCK_JOB_CANCELLED")
    o.command("job-cancel", {"id": "nb"})
    t = time.monotonic()
    while o.command("query-jobs") or q.command("query-jobs"):
        check(time.monotonic() - t < 30, "jobs did not end")
        time.sleep(0.05)
    # After the job, writes are no longer saved.
    qio(Q_URI, "write -P 0x55 3M 64k")
    qio(O_URI, "write -P 0x55 3M 64k")
    eq, eo = job_events(q, "n"), job_events(o, "n")
    check(eq == eo == ["created", "running", "paused", "running", "aborting",
                       "BLOCK_JOB_CANCELLED", "concluded", "null"],
          "events: qemu %r, ours %r" % (eq, eo))
    check(job_events(o, "nb") == ["created", "running", "aborting",
                                  "BLOCK_JOB_CANCELLED", "concluded",
                                  "null"], "nb: %r" % job_events(o, "nb"))
    [cq] = [e["data"] for e in q.events if e["event"] == "BLOCK_JOB_CANCELLED"]
    [co] = [e["data"] for e in o.events if e["event"] == "BLOCK_JOB_CANCELLED"
            and e["data"]["device"] == "n"]
    check(cq == co == {"type": "backup", "device": "n", "len": SIZE,
                       "offset": len(want) * C, "speed": 0},
          "BLOCK_JOB_CANCELLED: qemu %r, ours %r" % (cq, co))
    q.command("blockdev-del", {"node-name": "tq"})
    o.command("blockdev-del", {"node-name": "tn"})
    tq = file_bytes(tmp + "/tq.raw")
    check(tq == expected(want), "qemu's target is not what this test "
          "expects")
    check(file_bytes(tmp + "/to.raw") == tq,
          "drive-backup's target differs from qemu's")
    check(file_bytes(tmp + "/tn.raw") == tq,
          "blockdev-backup's target differs from qemu's")
    check(file_bytes(tmp + "/o.img") == file_bytes(tmp + "/q.img"),
          "the disks differ after the same writes")

@section("sync none here: a discard saves too; a full target fails it")
def _():
    old = file_bytes(tmp + "/o.img")
    o.events.clear()
    o.command("drive-backup", {"job-id": "nd", "device": "d0",
                               "target": tmp + "/td.raw", "sync": "none"})
    qio(O_URI, "discard 6M 128k")
    check(progress(o, "nd") == 2 * C, "progress after a discard")
    o.command("job-cancel", {"id": "nd"})
    wait_ev(o, "BLOCK_JOB_CANCELLED")
    t = time.monotonic()
    while o.command("query-jobs"):
        check(time.monotonic() - t < 30, "nd did not end")
        time.sleep(0.05)
    td = file_bytes(tmp + "/td.raw")
    check(td[6 * MiB:6 * MiB + 2 * C] == old[6 * MiB:6 * MiB + 2 * C] and
          td[:6 * MiB] == bytes(6 * MiB) and
          td[6 * MiB + 2 * C:] == bytes(SIZE - 6 * MiB - 2 * C),
          "the discard's old data is not in the target")
    # A save that fails: the guest write goes on, the job fails.
    o.events.clear()
    o.command("drive-backup", {"job-id": "nf", "device": "d0",
                               "target": "/dev/full", "mode": "existing",
                               "sync": "none"})
    qio(O_URI, "write -P 0x66 2M 64k")
    wait_ev(o, "BLOCK_JOB_COMPLETED")
    t = time.monotonic()
    while o.command("query-jobs"):
        check(time.monotonic() - t < 30, "nf did not end")
        time.sleep(0.05)
    check(file_bytes(tmp + "/o.img")[2 * MiB:2 * MiB + C] == b"\x66" * C,
          "the guest write did not land")
    check(job_events(o, "nf") == ["created", "running", "aborting",
                                  "BLOCK_JOB_COMPLETED", "concluded",
                                  "null"], "nf: %r" % job_events(o, "nf"))
    [c] = [e["data"] for e in o.events if e["event"] == "BLOCK_JOB_COMPLETED"]
    check(c.get("error") == "No space left on device", "nf: %r" % c)

@section("sync none refuses a bitmap")
def _():
    o.command("block-dirty-bitmap-add", {"node": "d0", "name": "b"})
    expect_error(o, "drive-backup", {"job-id": "x", "device": "d0",
                 "target": tmp + "/x.raw", "sync": "none", "bitmap": "b",
                 "bitmap-mode": "always"},
                 "sync mode 'none' does not produce meaningful bitmap "
                 "outputs")
    o.command("block-dirty-bitmap-remove", {"node": "d0", "name": "b"})

q.close()
o.close()
finish()
EOF
