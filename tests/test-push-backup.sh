#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# Push backup jobs (drive-backup to a file, sync full): the target
# equals the disk at the job's start while qemu-io writes the disk;
# holes stay holes; QEMU's job states in QEMU's event order (normal,
# pause/resume, cancel, auto-dismiss=false, a target that fails); the
# verbs' errors; QEMU's validation errors; blockdev-del of the job's
# node refused; speed limits the copy; no thread, descriptor or
# scratch left after the jobs; shutdown with a job running.
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e
set -x

requires_built "$PLUGIN" "$FILTER"
requires nbdkit --version
requires qemu-io --version
tmpdir

SIZE=$(( 8 * 1024 * 1024 + 2560 ))    # a multiple of 512, not of 4096
head -c $SIZE /dev/urandom > "$tmp/sda.img"
fallocate -p -o $((2 * 1024 * 1024)) -l $((2 * 1024 * 1024)) "$tmp/sda.img"
dd if=/dev/zero of="$tmp/sda.img" bs=64k seek=100 count=2 conv=notrunc \
   2>/dev/null
mkdir "$tmp/scratch"

start_nbdkit kit --filter="$FILTER" "$PLUGIN" disk=sda:"$tmp/sda.img" \
             qmp="$tmp/q.sock" scratch="$tmp/scratch"
kitpid=$pid
sda=$(nbd_uri sda "$sock")
# NBD targets: a memory disk, and one whose every request fails.
start_nbdkit tgt memory $(( SIZE + 65536 ))
tgt="nbd+unix:///?socket=$sock"
start_nbdkit bad --filter=error memory $SIZE error=EIO error-rate=1
bad="nbd+unix:///?socket=$sock"

$PY - "$tmp" "$tmp/q.sock" "$sda" "$kitpid" "$tgt" "$bad" <<EOF2
import os, shutil, subprocess, time
from testlib import *
tmp, qsock, sda, kitpid, tgt, bad = script_args(str, str, str, int, str, str)

def threads():
    return proc_threads(kitpid)

def fds():
    return proc_fds(kitpid)

def drain(m):
    """Read what events have arrived."""
    m.command("query-jobs")

m = connect(qsock)
# The disk's read-write descriptor opens with the first write.
qio(sda, "write -P 0x5a 0 4k")
shutil.copyfile(tmp + "/sda.img", tmp + "/ref0")
base_threads, base_fds = settled(threads), settled(fds)

@section("validation errors")
def _():
    m.command("block-dirty-bitmap-add", {"node": "sda", "name": "b0"})
    t = tmp + "/v.raw"
    def err(args, desc):
        a = {"job-id": "v", "device": "sda", "target": t, "sync": "full"}
        a.update(args)
        a = {k: v for k, v in a.items() if v is not None}
        expect_error(m, "drive-backup", a, desc)
    err({"sync": "incremental"},
        "must provide a valid bitmap name for 'incremental' sync mode")
    err({"sync": "bitmap"},
        "must provide a valid bitmap name for 'bitmap' sync mode")
    err({"sync": "incremental", "bitmap": "b0", "bitmap-mode": "always"},
        "Bitmap sync mode must be 'on-success' when using sync mode "
        "'incremental'")
    err({"sync": "bitmap", "bitmap": "b0"},
        "Bitmap sync mode must be given when providing a bitmap")
    err({"bitmap": "b0"},
        "Bitmap sync mode must be given when providing a bitmap")
    err({"bitmap-mode": "always"},
        "Cannot specify bitmap sync mode without a bitmap")
    err({"sync": "none", "bitmap": "b0", "bitmap-mode": "never"},
        "sync mode 'none' does not produce meaningful bitmap outputs")
    err({"sync": "bitmap", "bitmap": "nope", "bitmap-mode": "never"},
        "Bitmap 'nope' could not be found")
    err({"sync": "sideways"}, "Parameter 'sync' does not accept value "
        "'sideways'")
    err({"job-id": None}, "Invalid job ID ''")
    err({"job-id": "0bad"}, "Invalid job ID '0bad'")
    err({"device": "nosuch"}, "Cannot find device='nosuch' nor "
        "node-name='nosuch'")
    err({"speed": -1}, "Invalid parameter 'speed'")
    err({"format": "qcow2"}, "Format 'qcow2' is not supported: drive-backup "
        "writes raw images only; to write qcow2, push to qemu-nbd (an "
        "nbd:// target) instead")
    err({"target": tmp + "/no/such/dir"}, "Could not create '" + tmp +
        "/no/such/dir': No such file or directory")
    err({"mode": "existing", "target": tmp + "/absent"},
        "Could not open '" + tmp + "/absent': No such file or directory")
    # Refused before anything was made: no file, no job, no event.
    check(not os.path.exists(t), "a refused job left its target")
    check(not os.path.exists(tmp + "/v2.raw"), "refused job left a target")
    check(m.command("query-jobs") == [], "a refused job exists")
    check([e for e in m.events if e["event"] == "JOB_STATUS_CHANGE"] == [],
          "a refused job sent events")
    for c in ("job-cancel", "job-pause", "job-resume", "job-finalize",
              "job-dismiss"):
        expect_error(m, c, {"id": "x"}, "Job not found",
                     cls="DeviceNotActive")
    for c in ("block-job-cancel", "block-job-pause", "block-job-resume"):
        expect_error(m, c, {"device": "x"}, "Block job 'x' not found",
                     cls="DeviceNotActive")
    m.command("block-dirty-bitmap-remove", {"node": "sda", "name": "b0"})

@section("full backup while qemu-io writes, with pause and resume")
def _():
    shutil.copyfile(tmp + "/sda.img", tmp + "/start1")
    m.events.clear()
    m.command("drive-backup", {"job-id": "j1", "device": "sda",
                               "target": tmp + "/t1.raw", "sync": "full",
                               "speed": 2 * MiB})
    # Written while the job runs, all over the disk (holes, zeros, data).
    for off in range(0, 8 * MiB, MiB // 2):
        qio(sda, "write -P 0x%02x %d 64k" % (0x10 + off // MiB, off + 4096))
    qio(sda, "write -z 0 128k", "discard 6M 256k",
        "write -P 0x77 %d 2560" % (8 * MiB))
    [j] = m.command("query-jobs")
    check(j["id"] == "j1" and j["type"] == "backup" and
          j["status"] == "running" and j["total-progress"] == $SIZE and
          0 < j["current-progress"] < j["total-progress"] and "error" not in j,
          "query-jobs while running: %r" % j)
    [b] = m.command("query-block-jobs")
    check(b["device"] == "j1" and b["type"] == "backup" and
          b["speed"] == 2 * MiB and b["io-status"] == "ok" and
          b["ready"] is False and b["paused"] is False and
          b["status"] == "running" and b["len"] == $SIZE and
          b["auto-finalize"] is True and b["auto-dismiss"] is True,
          "query-block-jobs: %r" % b)
    cls, desc = m.error("blockdev-del", {"node-name": "sda"})
    check(desc == "Node 'sda' is busy: block device is in use by block job: "
          "backup", "blockdev-del during the job: %s" % desc)
    expect_error(m, "job-finalize", {"id": "j1"},
                 "Job 'j1' in state 'running' cannot accept command verb "
                 "'finalize'")
    expect_error(m, "job-dismiss", {"id": "j1"},
                 "Job 'j1' in state 'running' cannot accept command verb "
                 "'dismiss'")
    expect_error(m, "job-resume", {"id": "j1"},
                 "Can't resume a job that was not paused")
    expect_error(m, "job-complete", {"id": "j1"},
                 "Job 'j1' in state 'running' cannot accept command verb "
                 "'complete'")
    m.command("job-pause", {"id": "j1"})
    expect_error(m, "job-pause", {"id": "j1"}, "Job is already paused")
    t = time.monotonic()
    while m.command("query-jobs")[0]["status"] != "paused":
        check(time.monotonic() - t < 10, "job j1 never paused")
        time.sleep(0.02)
    p1 = m.command("query-jobs")[0]["current-progress"]
    [b] = m.command("query-block-jobs")
    check(b["paused"] is True and b["busy"] is False, "paused: %r" % b)
    time.sleep(0.5)
    p2 = m.command("query-jobs")[0]["current-progress"]
    check(p1 == p2, "progress moved while paused: %d -> %d" % (p1, p2))
    qio(sda, "write -P 0x99 7M 64k")
    m.command("block-job-resume", {"device": "j1"})
    m.command("block-job-set-speed", {"device": "j1", "speed": 0})
    wait_ev(m, "BLOCK_JOB_COMPLETED")
    wait_gone(m, "j1")
    ev = job_events(m, "j1")
    check(ev == ["created", "running", "paused", "running", "waiting",
                 "pending", "BLOCK_JOB_COMPLETED", "concluded", "null"],
          "events of j1: %r" % ev)
    [c] = [e["data"] for e in m.events if e["event"] == "BLOCK_JOB_COMPLETED"]
    check(c == {"type": "backup", "device": "j1", "len": $SIZE, "offset": $SIZE,
                "speed": 0}, "BLOCK_JOB_COMPLETED: %r" % c)
    check(file_bytes(tmp + "/t1.raw") == file_bytes(tmp + "/start1"),
          "t1.raw differs from the disk at the job's start")
    check(file_bytes(tmp + "/sda.img") != file_bytes(tmp + "/start1"),
          "the writes did not land")
    # Sparse: the 2 MiB hole and the zeros are not written.
    used = os.stat(tmp + "/t1.raw").st_blocks * 512
    check(used <= $SIZE - 2 * MiB - 128 * KiB + 64 * KiB,
          "target not sparse: %d bytes allocated" % used)

@section("speed limits the copy")
def _():
    m.events.clear()
    m.command("drive-backup", {"job-id": "js", "device": "sda",
                               "target": tmp + "/ts.raw", "sync": "full",
                               "speed": 1 * MiB})
    time.sleep(1.5)
    [j] = m.command("query-jobs")
    # The first 1 MiB chunk goes at once, then 1 MiB/s.
    check(j["current-progress"] < j["total-progress"],
          "a 1 MiB/s job of 8 MiB was done in 1.5 s: %r" % j)
    m.command("block-job-set-speed", {"device": "js", "speed": 0})
    expect_error(m, "block-job-set-speed", {"device": "js", "speed": -5},
                 "Invalid parameter 'speed'")
    wait_ev(m, "BLOCK_JOB_COMPLETED")
    wait_gone(m, "js")

@section("cancel, and auto-dismiss=false")
def _():
    m.events.clear()
    m.command("drive-backup", {"job-id": "jc", "device": "sda",
                               "target": tmp + "/tc.raw", "sync": "full",
                               "speed": 64 * KiB})
    m.command("job-cancel", {"id": "jc"})
    wait_ev(m, "BLOCK_JOB_CANCELLED")
    wait_gone(m, "jc")
    ev = job_events(m, "jc")
    check(ev == ["created", "running", "aborting", "BLOCK_JOB_CANCELLED",
                 "concluded", "null"], "events of jc: %r" % ev)
    m.events.clear()
    m.command("drive-backup", {"job-id": "jd", "device": "sda",
                               "target": tmp + "/td.raw", "sync": "full",
                               "auto-dismiss": False})
    wait_ev(m, "BLOCK_JOB_COMPLETED")
    t = time.monotonic()
    while m.command("query-jobs")[0]["status"] != "concluded":
        check(time.monotonic() - t < 10, "jd not concluded")
        time.sleep(0.02)
    [j] = m.command("query-jobs")
    check(j["current-progress"] == j["total-progress"] == $SIZE and
          "error" not in j, "concluded jd: %r" % j)
    expect_error(m, "job-cancel", {"id": "jd"},
                 "Job 'jd' in state 'concluded' cannot accept command verb "
                 "'cancel'")
    # Its node is free once it has concluded.
    m.command("job-dismiss", {"id": "jd"})
    drain(m)
    check(job_events(m, "jd") == ["created", "running", "waiting", "pending",
                                  "BLOCK_JOB_COMPLETED", "concluded", "null"],
          "events of jd: %r" % job_events(m, "jd"))
    check(m.command("query-jobs") == [], "jd still listed")
    check(file_bytes(tmp + "/td.raw") == file_bytes(tmp + "/sda.img"),
          "td.raw differs from the disk")

@section("mode existing: an old target's data and holes are replaced")
def _():
    with open(tmp + "/te.raw", "wb") as f:
        f.write(b"\xff" * ($SIZE + 4096))
    shutil.copyfile(tmp + "/sda.img", tmp + "/start2")
    m.events.clear()
    m.command("drive-backup", {"job-id": "je", "device": "sda",
                               "target": tmp + "/te.raw", "sync": "full",
                               "mode": "existing", "format": "raw"})
    wait_ev(m, "BLOCK_JOB_COMPLETED")
    wait_gone(m, "je")
    got = file_bytes(tmp + "/te.raw")
    want = file_bytes(tmp + "/start2")
    check(got[:len(want)] == want, "te.raw differs from the disk")

@section("a target that fails: report")
def _():
    m.events.clear()
    m.command("drive-backup", {"job-id": "jf", "device": "sda",
                               "target": "/dev/full", "sync": "full",
                               "mode": "existing"})
    wait_ev(m, "BLOCK_JOB_COMPLETED")
    wait_gone(m, "jf")
    ev = job_events(m, "jf")
    check(ev == ["created", "running", "BLOCK_JOB_ERROR", "aborting",
                 "BLOCK_JOB_COMPLETED", "concluded", "null"],
          "events of jf: %r" % ev)
    [e] = [e["data"] for e in m.events if e["event"] == "BLOCK_JOB_ERROR"]
    check(e == {"device": "jf", "operation": "write", "action": "report"},
          "BLOCK_JOB_ERROR: %r" % e)
    [c] = [e["data"] for e in m.events if e["event"] == "BLOCK_JOB_COMPLETED"]
    check(c["error"] == "No space left on device" and c["len"] == $SIZE,
          "BLOCK_JOB_COMPLETED of jf: %r" % c)

@section("a chain: full + 2 incrementals, restored and compared")
def _():
    # The bitmap starts at the very instant of the full copy.
    shutil.copyfile(tmp + "/sda.img", tmp + "/c0")
    m.events.clear()
    m.command("transaction", {"actions": [
        {"type": "block-dirty-bitmap-add",
         "data": {"node": "sda", "name": "inc"}},
        {"type": "drive-backup",
         "data": {"job-id": "jfull", "device": "sda", "sync": "full",
                  "target": tmp + "/full.raw", "speed": 1 * MiB}}]})
    qio(sda, "write -P 0x61 1M 200k", "write -z 5M 64k",
        "discard 7M 128k")
    wait_ev(m, "BLOCK_JOB_COMPLETED")
    wait_gone(m, "jfull")
    check(file_bytes(tmp + "/full.raw") == file_bytes(tmp + "/c0"),
          "full.raw differs from the disk at its start")
    restored = tmp + "/full.raw"
    for k in (1, 2):
        shutil.copyfile(tmp + "/sda.img", tmp + "/c%d" % k)
        [b] = [b for b in bitmap_infos(m, "sda") if b["name"] == "inc"]
        inc = tmp + "/inc%d.raw" % k
        shutil.copyfile(restored, inc)
        m.events.clear()
        m.command("drive-backup", {"job-id": "ji%d" % k, "device": "sda",
                                   "sync": "incremental", "bitmap": "inc",
                                   "target": inc, "mode": "existing",
                                   "speed": 256 * KiB})
        [j] = m.command("query-jobs")
        check(j["total-progress"] == b["count"],
              "incremental %d: total-progress %d, bitmap count %d"
              % (k, j["total-progress"], b["count"]))
        qio(sda, "write -P 0x%02x %d 300k" % (0x70 + k, k * MiB + 8192),
            "write -z %d 4k" % (3 * MiB))
        wait_ev(m, "BLOCK_JOB_COMPLETED")
        wait_gone(m, "ji%d" % k)
        check(file_bytes(inc) == file_bytes(tmp + "/c%d" % k),
              "full + incremental %d differs from the disk" % k)
        restored = inc
    m.command("block-dirty-bitmap-remove", {"node": "sda", "name": "inc"})

@section("NBD target: full and incremental while qemu-io writes")
def _():
    shutil.copyfile(tmp + "/sda.img", tmp + "/n0")
    # Old data on the target, which the backup must replace (zeros too).
    h = nbd_open(tgt)
    h.pwrite(b"\xee" * $SIZE, 0)
    h.shutdown()
    m.events.clear()
    m.command("transaction", {"actions": [
        {"type": "block-dirty-bitmap-add",
         "data": {"node": "sda", "name": "nb"}},
        {"type": "drive-backup",
         "data": {"job-id": "jn", "device": "sda", "sync": "full",
                  "target": tgt, "speed": 2 * MiB}}]})
    qio(sda, "write -P 0x3c 2M 512k", "write -z 0 64k", "discard 5M 1M")
    wait_ev(m, "BLOCK_JOB_COMPLETED")
    wait_gone(m, "jn")
    check(job_events(m, "jn")[-3:] == ["BLOCK_JOB_COMPLETED", "concluded",
                                       "null"], "jn: %r" % job_events(m, "jn"))
    check(nbd_read(tgt, $SIZE) == file_bytes(tmp + "/n0"),
          "the NBD target differs from the disk at the job's start")
    shutil.copyfile(tmp + "/sda.img", tmp + "/n1")
    m.events.clear()
    m.command("drive-backup", {"job-id": "jn2", "device": "sda",
                               "sync": "incremental", "bitmap": "nb",
                               "target": tgt, "speed": 512 * KiB})
    qio(sda, "write -P 0x4d 2M 64k", "write -P 0x4e 6M 64k")
    wait_ev(m, "BLOCK_JOB_COMPLETED")
    wait_gone(m, "jn2")
    check(nbd_read(tgt, $SIZE) == file_bytes(tmp + "/n1"),
          "full + incremental over NBD differs from the disk")
    m.command("block-dirty-bitmap-remove", {"node": "sda", "name": "nb"})

@section("NBD target errors")
def _():
    expect_error(m, "drive-backup", {"job-id": "jx", "device": "sda",
                 "sync": "full", "target": "nbd+unix:///?socket=" + tmp +
                 "/nosuch.sock"}, contains="Could not open 'nbd+unix:///"
                 "?socket=" + tmp + "/nosuch.sock': ")
    check(m.command("query-jobs") == [], "a job after a refused target")
    m.events.clear()
    m.command("drive-backup", {"job-id": "jb", "device": "sda",
                               "sync": "full", "target": bad})
    wait_ev(m, "BLOCK_JOB_COMPLETED")
    wait_gone(m, "jb")
    ev = job_events(m, "jb")
    check(ev == ["created", "running", "BLOCK_JOB_ERROR", "aborting",
                 "BLOCK_JOB_COMPLETED", "concluded", "null"],
          "events of jb: %r" % ev)
    [c] = [e["data"] for e in m.events if e["event"] == "BLOCK_JOB_COMPLETED"]
    check(c["error"] == "Input/output error", "jb: %r" % c)

@section("grouped transactions")
def _():
    def grouped(*jobs):
        m.command("transaction", {"properties": {"completion-mode": "grouped"},
                                  "actions": [{"type": "drive-backup",
                                               "data": j} for j in jobs]})
    def job(jid, target, **kw):
        d = {"job-id": jid, "device": "sda", "sync": "full",
             "target": target}
        d.update(kw)
        return d
    expect_error(m, "transaction", {
        "properties": {"completion-mode": "grouped"},
        "actions": [{"type": "drive-backup", "data": job("g0", tmp + "/g0")},
                    {"type": "block-dirty-bitmap-add",
                     "data": {"node": "sda", "name": "g"}}]},
        "Action 'block-dirty-bitmap-add' does not support Transaction "
        "property completion-mode = grouped")
    # Refused before anything was made.
    check(m.command("query-jobs") == [] and not os.path.exists(tmp + "/g0"),
          "a refused grouped transaction left something")
    # One fails: the other is cancelled.
    m.events.clear()
    grouped(job("ga", tmp + "/ga.raw", speed=MiB),
            job("gb", "/dev/full", mode="existing"))
    wait_ev(m, "BLOCK_JOB_CANCELLED")
    wait_gone(m, "ga")
    wait_gone(m, "gb")
    check(job_events(m, "gb") == ["created", "running", "BLOCK_JOB_ERROR",
                                  "aborting", "BLOCK_JOB_COMPLETED",
                                  "concluded", "null"],
          "gb: %r" % job_events(m, "gb"))
    check(job_events(m, "ga") == ["created", "running", "aborting",
                                  "BLOCK_JOB_CANCELLED", "concluded", "null"],
          "ga: %r" % job_events(m, "ga"))
    # A cancel of one cancels both.
    m.events.clear()
    grouped(job("gc", tmp + "/gc.raw", speed=MiB),
            job("gd", tmp + "/gd.raw", speed=MiB))
    m.command("job-cancel", {"id": "gd"})
    wait_gone(m, "gc")
    wait_gone(m, "gd")
    check([e["data"]["device"] for e in m.events
           if e["event"] == "BLOCK_JOB_CANCELLED"] in (["gc", "gd"],
                                                        ["gd", "gc"]),
          "grouped cancel: %r" % [e["event"] for e in m.events])
    # A member waiting for the other is cancelled with it.
    m.events.clear()
    grouped(job("gw", tmp + "/gw.raw"), job("gx", tmp + "/gx.raw",
                                             speed=256 * KiB))
    t = time.monotonic()
    while m.command("query-jobs")[0]["status"] != "waiting":
        check(time.monotonic() - t < 30, "gw never waiting")
        time.sleep(0.02)
    m.command("job-cancel", {"id": "gx"})
    wait_gone(m, "gw")
    wait_gone(m, "gx")
    check(job_events(m, "gw") == ["created", "running", "waiting",
                                  "aborting", "BLOCK_JOB_CANCELLED",
                                  "concluded", "null"],
          "gw: %r" % job_events(m, "gw"))
    check(job_events(m, "gx") == ["created", "running", "aborting",
                                  "BLOCK_JOB_CANCELLED", "concluded", "null"],
          "gx: %r" % job_events(m, "gx"))
    # Both succeed: both complete, each target the disk at the start;
    # the fast one waits for the slow one.
    shutil.copyfile(tmp + "/sda.img", tmp + "/g1")
    m.events.clear()
    grouped(job("ge", tmp + "/ge.raw"), job("gf", tmp + "/gf.raw",
                                             speed=4 * MiB))
    qio(sda, "write -P 0x2b 1M 1M")
    t = time.monotonic()
    while m.command("query-jobs")[0]["status"] != "waiting":
        check(time.monotonic() - t < 30, "ge never waiting")
        time.sleep(0.02)
    check([j["status"] for j in m.command("query-jobs")] ==
          ["waiting", "running"], "ge did not wait for gf")
    expect_error(m, "job-pause", {"id": "ge"},
                 "Job 'ge' in state 'waiting' cannot accept command verb "
                 "'pause'")
    wait_gone(m, "ge")
    wait_gone(m, "gf")
    for j in ("ge", "gf"):
        check(job_events(m, j) == ["created", "running", "waiting",
                                   "pending", "BLOCK_JOB_COMPLETED",
                                   "concluded", "null"],
              "%s: %r" % (j, job_events(m, j)))
    check(sorted(e["data"]["device"] for e in m.events
                 if e["event"] == "BLOCK_JOB_COMPLETED") == ["ge", "gf"],
          "grouped success: %r" % [e["event"] for e in m.events])
    for f in ("ge.raw", "gf.raw"):
        check(file_bytes(tmp + "/" + f) == file_bytes(tmp + "/g1"),
              "%s differs from the disk at the start" % f)

@section("nothing leaks")
def _():
    check_comes_back(threads, base_threads, "threads")
    check_comes_back(fds, base_fds, "descriptors")
    check(os.listdir(tmp + "/scratch") == [], "scratch files left")
    m.command("blockdev-del", {"node-name": "sda"})
    m.command("blockdev-add", {"driver": "file", "node-name": "sda",
                               "filename": tmp + "/sda.img"})

# A job running at shutdown is cancelled.
m.command("drive-backup", {"job-id": "jq", "device": "sda",
                           "target": tmp + "/tq.raw", "sync": "full",
                           "speed": 64 * KiB})
m.close()
finish()
EOF2

# Shutdown with jq running: the job is cancelled, nbdkit exits cleanly.
kill -TERM $kitpid
wait_exit $kitpid 20
assert_eq "$exit_status" 0 "nbdkit's exit status with a job running"
! grep -i "assert\|segfault\|abort" "$tmp/kit.log" || fail "shutdown"
