#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# Push backups with a bitmap (sync incremental, bitmap, full), the
# same steps on qemu-storage-daemon 7.2 (blockdev-backup to a file
# node) and on the checkpoint filter over the file plugin (drive-backup
# to a file): for each bitmap-mode (on-success, always, never) after
# success and after cancel, the bitmap's sha256 and count and busy
# flag must be equal on both, and the targets equal byte for byte
# after success.  Each job runs at speed 1 byte/s, so that both copy
# only their first chunk (the first dirty run, under 1 MiB) before
# the writes made during the job; then it is sped up, or cancelled.
# A target that fails (/dev/full) leaves the bitmap as it was before
# the job, in every mode (nothing was copied, nothing written since).
# With auto-finalize false, both stop in pending with BLOCK_JOB_PENDING
# and apply bitmap-mode at job-finalize (or cancel in pending), with
# the same events (QEMU's drain blips left out) and bitmaps.
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

S=$(( 4 * 1024 * 1024 ))
truncate -s $S "$tmp/q.img" "$tmp/o.img"

start_qsd "$tmp/q.img"

start_nbdkit o --filter="$FILTER" file "$tmp/o.img" node-name=d0 \
             qmp="$tmp/o.qmp"
osock=$sock

$PY - "$tmp" "$osock" $S <<'EOF2'
import time
import testlib
from testlib import *

tmp, osock, S = script_args(str, str, int)
q = connect(tmp + "/qsd.qmp")
o = connect(tmp + "/o.qmp")
Q_URI = uri(tmp + "/qsd.sock", "d0")
O_URI = uri(osock)
n = 0

def both_io(*cmds):
    qio(Q_URI, *cmds)
    qio(O_URI, *cmds)

def wait_progress(m, job):
    t = time.monotonic()
    while True:
        js = [j for j in m.command("query-jobs") if j["id"] == job]
        if js and js[0]["current-progress"] > 0:
            return js[0]
        check(time.monotonic() - t < 30, "job %s made no progress" % job)
        time.sleep(0.02)

def state(m, name):
    [b] = [b for b in bitmap_infos(m, "d0") if b.get("name") == name]
    return (sha(m, "d0", name), b["count"], b["busy"])

# Several dirty runs, each under 1 MiB; the first is 128 KiB.
A = ["write -P 0x11 0 128k", "write -P 0x22 1M 64k",
     "write -P 0x33 %d 8k" % (2 * MiB + 4096), "write -P 0x44 3M 512k"]
# During the job: inside, across and outside the dirty runs.
B = ["write -P 0x55 64k 4k", "write -P 0x66 %d 128k" % (1 * MiB + 32768),
     "write -P 0x77 %d 4k" % (S - 4096)]

def run(sync, mode, end):
    global n
    n += 1
    name, job = "b%d" % n, "j%d" % n
    title = "sync=%s bitmap-mode=%s %s" % (sync, mode, end)
    print("---", title, flush=True)
    for m in (q, o):
        m.command("block-dirty-bitmap-add", {"node": "d0", "name": name,
                                             "granularity": 65536})
    both_io(*A)
    check(state(q, name) == state(o, name), "%s: before the job" % title)
    tq, to = "%s/tq%d.raw" % (tmp, n), "%s/to%d.raw" % (tmp, n)
    with open(tq, "wb") as f:
        f.truncate(S)
    q.command("blockdev-add", {"driver": "file", "node-name": "t%d" % n,
                               "filename": tq})
    args = {"job-id": job, "device": "d0", "sync": sync, "bitmap": name,
            "speed": 1}
    if mode:
        args["bitmap-mode"] = mode
    q.command("blockdev-backup", dict(args, target="t%d" % n))
    o.command("drive-backup", dict(args, target=to))
    for m in (q, o):
        wait_progress(m, job)
    check(state(q, name)[2] is True and state(o, name)[2] is True,
          "%s: bitmap not busy during the job" % title)
    both_io(*B)
    for m in (q, o):
        if end == "success":
            m.command("block-job-set-speed", {"device": job, "speed": 0})
            wait_ev(m, "BLOCK_JOB_COMPLETED")
        else:
            m.command("job-cancel", {"id": job})
            wait_ev(m, "BLOCK_JOB_CANCELLED")
        wait_gone(m, job)
        m.events.clear()
    sq, so = state(q, name), state(o, name)
    check(sq == so, "%s: bitmap after the job: qemu %r, ours %r"
          % (title, sq, so))
    if end == "success":
        check(file_bytes(tq) == file_bytes(to),
              "%s: the targets differ" % title)
    q.command("blockdev-del", {"node-name": "t%d" % n})
    for m in (q, o):
        m.command("block-dirty-bitmap-remove", {"node": "d0", "name": name})

for mode in ("on-success", "always", "never"):
    for end in ("success", "cancel"):
        run("bitmap", mode, end)
run("incremental", None, "success")
run("incremental", None, "cancel")
run("full", "on-success", "success")
run("full", "always", "success")
run("full", "on-success", "cancel")
run("incremental", "on-success", "success")

def job_events(m, job):
    """The job's events, QEMU's drain blips (paused, running with no
    user pause) left out."""
    out = testlib.job_events(m, job)
    while "paused" in out:
        i = out.index("paused")
        check(out[i + 1] == "running", "a pause that is no blip: %r" % out)
        del out[i:i + 2]
    return out

# auto-finalize=false, auto-dismiss=false: the job waits in pending
# (BLOCK_JOB_PENDING); the bitmap stays busy and goes on recording
# until job-finalize applies bitmap-mode (or job-cancel there cancels
# the job); then job-dismiss.
def run_manual(sync, mode, end):
    global n
    n += 1
    name, job = "m%d" % n, "jm%d" % n
    title = "manual sync=%s bitmap-mode=%s %s" % (sync, mode, end)
    print("---", title, flush=True)
    for m in (q, o):
        m.command("block-dirty-bitmap-add", {"node": "d0", "name": name,
                                             "granularity": 65536})
        m.events.clear()
    both_io(*A)
    tq, to = "%s/tq%d.raw" % (tmp, n), "%s/to%d.raw" % (tmp, n)
    with open(tq, "wb") as f:
        f.truncate(S)
    q.command("blockdev-add", {"driver": "file", "node-name": "t%d" % n,
                               "filename": tq})
    args = {"job-id": job, "device": "d0", "sync": sync, "bitmap": name,
            "bitmap-mode": mode, "auto-finalize": False,
            "auto-dismiss": False}
    q.command("blockdev-backup", dict(args, target="t%d" % n))
    o.command("drive-backup", dict(args, target=to))
    for m in (q, o):
        wait_ev(m, "BLOCK_JOB_PENDING")
        j = wait_status(m, job, "pending")
        check(j["current-progress"] == j["total-progress"],
              "%s: pending before done: %r" % (title, j))
        expect_error(m, "job-dismiss", {"id": job},
                     "Job '%s' in state 'pending' cannot accept command "
                     "verb 'dismiss'" % job)
        expect_error(m, "job-pause", {"id": job},
                     "Job '%s' in state 'pending' cannot accept command "
                     "verb 'pause'" % job)
    [pq] = [e["data"] for e in q.events if e["event"] == "BLOCK_JOB_PENDING"]
    [po] = [e["data"] for e in o.events if e["event"] == "BLOCK_JOB_PENDING"]
    check(pq == po == {"type": "backup", "id": job},
          "%s: BLOCK_JOB_PENDING: qemu %r, ours %r" % (title, pq, po))
    # Busy on both (QEMU lists the frozen bits then, we the bitmap
    # recording the writes since the job's start: TODO).
    sq, so = state(q, name), state(o, name)
    check(sq[2] is True and so[2] is True,
          "%s: bitmap while pending: qemu %r, ours %r" % (title, sq, so))
    # Written while pending: recorded by the bitmap on both.
    both_io(*B)
    for m in (q, o):
        if end == "success":
            m.command("job-finalize", {"id": job})
        else:
            m.command("job-cancel", {"id": job})
        wait_status(m, job, "concluded")
        m.command("job-dismiss", {"id": job})
    sq, so = state(q, name), state(o, name)
    check(sq == so, "%s: bitmap after the job: qemu %r, ours %r"
          % (title, sq, so))
    eq, eo = job_events(q, job), job_events(o, job)
    check(eq == eo, "%s: events: qemu %r, ours %r" % (title, eq, eo))
    want = (["created", "running", "waiting", "pending", "BLOCK_JOB_PENDING"]
            + (["BLOCK_JOB_COMPLETED"] if end == "success" else
               ["aborting", "BLOCK_JOB_CANCELLED"]) + ["concluded", "null"])
    check(eo == want, "%s: events %r" % (title, eo))
    check(file_bytes(tq) == file_bytes(to), "%s: the targets differ" % title)
    q.command("blockdev-del", {"node-name": "t%d" % n})
    for m in (q, o):
        m.command("block-dirty-bitmap-remove", {"node": "d0", "name": name})
        m.events.clear()

for mode in ("on-success", "always", "never"):
    for end in ("success", "cancel"):
        run_manual("bitmap", mode, end)
run_manual("full", "on-success", "success")

# Refused alike.
for m in (q, o):
    m.command("block-dirty-bitmap-add", {"node": "d0", "name": "x"})
with open(tmp + "/tx.raw", "wb") as f:
    f.truncate(S)
q.command("blockdev-add", {"driver": "file", "node-name": "tx",
                           "filename": tmp + "/tx.raw"})
for args, desc in (
        ({"sync": "full", "bitmap-mode": "never"},
         "Bitmap sync mode 'never' has no meaningful effect when combined "
         "with sync mode 'full'"),
        ({"sync": "incremental", "bitmap-mode": "never"},
         "Bitmap sync mode must be 'on-success' when using sync mode "
         "'incremental'"),
        ({"sync": "bitmap"},
         "Bitmap sync mode must be given when providing a bitmap"),
        ({"sync": "none", "bitmap-mode": "always"},
         "sync mode 'none' does not produce meaningful bitmap outputs")):
    a = dict(args, **{"job-id": "x1", "device": "d0", "bitmap": "x"})
    expect_error(q, "blockdev-backup", dict(a, target="tx"), desc)
    expect_error(o, "drive-backup", dict(a, target=tmp + "/x.raw"), desc)
for m in (q, o):
    m.command("block-dirty-bitmap-remove", {"node": "d0", "name": "x"})

# A failing target: nothing copied, nothing written: the bitmap as it
# was before the job, in every mode (ours only: the same as QEMU's
# bitmap after A).
for mode in ("on-success", "always", "never"):
    n += 1
    name, job = "f%d" % n, "jf%d" % n
    for m in (q, o):
        m.command("block-dirty-bitmap-add", {"node": "d0", "name": name,
                                             "granularity": 65536})
    both_io(*A)
    before = state(o, name)
    check(before == state(q, name), "failure %s: before" % mode)
    o.command("drive-backup", {"job-id": job, "device": "d0",
                               "sync": "bitmap", "bitmap": name,
                               "bitmap-mode": mode, "target": "/dev/full",
                               "mode": "existing"})
    wait_ev(o, "BLOCK_JOB_COMPLETED")
    wait_gone(o, job)
    [c] = [e["data"] for e in o.events if e["event"] == "BLOCK_JOB_COMPLETED"]
    check(c.get("error") == "No space left on device", "failure: %r" % c)
    o.events.clear()
    after = state(o, name)
    check(after == before, "failure %s: bitmap %r, before the job %r"
          % (mode, after, before))
    for m in (q, o):
        m.command("block-dirty-bitmap-remove", {"node": "d0", "name": name})
print("all cases equal")
EOF2
