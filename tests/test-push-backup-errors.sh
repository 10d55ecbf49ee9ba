#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# Push backup jobs: on-source-error and on-target-error as QEMU 7.2
# (checked against qemu-storage-daemon by hand): stop pauses the job
# with BLOCK_JOB_ERROR action stop and io-status failed (nospace for
# ENOSPC), job-resume retries the chunk; ignore sends BLOCK_JOB_ERROR
# action ignore and copies the chunk again until it succeeds, so the
# target ends complete; enospc and auto stop on ENOSPC and report
# otherwise.  Errors are switched on and off at run time with the
# error filter's error-file=; the targets are compared bit for bit
# with the disk at the job's start while qemu-io writes the disk.
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e
set -x

requires_built "$PLUGIN" "$FILTER"
requires nbdkit --version
requires qemu-io --version
tmpdir

SIZE=$(( 8 * 1024 * 1024 ))
head -c $SIZE /dev/urandom > "$tmp/sda.img"
head -c $SIZE /dev/urandom > "$tmp/src.img"
mkdir "$tmp/scratch"

start_nbdkit kit --filter="$FILTER" "$PLUGIN" disk=sda:"$tmp/sda.img" \
             qmp="$tmp/q.sock" scratch="$tmp/scratch"
sda=$(nbd_uri sda "$sock")
# A target whose every request fails while $tmp/terr exists.
start_nbdkit tgt --filter=error memory $SIZE error=EIO error-rate=1 \
             error-file="$tmp/terr"
tgt="nbd+unix:///?socket=$sock"
# A source (an nbd node of the plugin) whose reads fail while
# $tmp/serr exists.
start_nbdkit src --filter=error file "$tmp/src.img" error=EIO \
             error-rate=1 error-file="$tmp/serr"
srcsock=$sock

$PY - "$tmp" "$tmp/q.sock" "$sda" "$tgt" "$srcsock" <<'EOF'
import os, shutil, time
from testlib import *
tmp, qsock, sda, tgt, srcsock = script_args(str, str, str, str, str)
SIZE = 8 * MiB
terr, serr = tmp + "/terr", tmp + "/serr"

def on(path):
    open(path, "w").close()

def off(path):
    os.unlink(path)

def errors(m):
    return [e["data"] for e in m.events if e["event"] == "BLOCK_JOB_ERROR"]

def block_job(m, job):
    [b] = [b for b in m.command("query-block-jobs") if b["device"] == job]
    return b

m = connect(qsock)
qio(sda, "write -P 0x5a 0 4k")
# Clean the target.
h = nbd_open(tgt)
h.zero(SIZE, 0)
h.shutdown()

@section("on-target-error=stop: paused, io-status failed, resume retries")
def _():
    shutil.copyfile(tmp + "/sda.img", tmp + "/start1")
    on(terr)
    m.events.clear()
    m.command("drive-backup", {"job-id": "js", "device": "sda",
                               "target": tgt, "sync": "full",
                               "on-target-error": "stop"})
    wait_ev(m, "BLOCK_JOB_ERROR")
    wait_status(m, "js", "paused")
    b = block_job(m, "js")
    check(b["io-status"] == "failed" and b["paused"] is True and
          b["status"] == "paused" and b["busy"] is False,
          "stopped job: %r" % b)
    check(errors(m) == [{"device": "js", "operation": "write",
                         "action": "stop"}], "errors: %r" % errors(m))
    check(job_events(m, "js") == ["created", "running", "BLOCK_JOB_ERROR",
                                  "paused"], "js: %r" % job_events(m, "js"))
    expect_error(m, "job-pause", {"id": "js"}, "Job is already paused")
    # The guest writes while the job stands: the target still gets the
    # disk as it was at the job's start.
    qio(sda, "write -P 0x21 0 1M", "write -P 0x22 5M 64k")
    # Resumed with the target still failing: it stops again.
    m.command("job-resume", {"id": "js"})
    check(block_job(m, "js")["io-status"] == "ok",
          "io-status after resume: %r" % block_job(m, "js"))
    wait_ev(m, "BLOCK_JOB_ERROR", 2)
    wait_status(m, "js", "paused")
    check(block_job(m, "js")["io-status"] == "failed", "second stop")
    off(terr)
    m.command("block-job-resume", {"device": "js"})
    wait_ev(m, "BLOCK_JOB_COMPLETED")
    wait_gone(m, "js")
    check(job_events(m, "js") == ["created", "running", "BLOCK_JOB_ERROR",
                                  "paused", "running", "BLOCK_JOB_ERROR",
                                  "paused", "running", "waiting", "pending",
                                  "BLOCK_JOB_COMPLETED", "concluded", "null"],
          "js: %r" % job_events(m, "js"))
    [c] = [e["data"] for e in m.events if e["event"] == "BLOCK_JOB_COMPLETED"]
    check(c == {"type": "backup", "device": "js", "len": SIZE,
                "offset": SIZE, "speed": 0}, "COMPLETED: %r" % c)
    check(nbd_read(tgt, SIZE) == file_bytes(tmp + "/start1"),
          "the target differs from the disk at the job's start")

@section("on-target-error=ignore: the chunk is retried until it lands")
def _():
    h = nbd_open(tgt)
    h.zero(SIZE, 0)
    h.shutdown()
    shutil.copyfile(tmp + "/sda.img", tmp + "/start2")
    on(terr)
    m.events.clear()
    m.command("drive-backup", {"job-id": "ji", "device": "sda",
                               "target": tgt, "sync": "full",
                               "on-target-error": "ignore"})
    wait_ev(m, "BLOCK_JOB_ERROR", 3)
    qio(sda, "write -P 0x31 2M 1M")
    [j] = m.command("query-jobs")
    check(j["status"] == "running" and "error" not in j,
          "ignoring job: %r" % j)
    check(block_job(m, "ji")["io-status"] == "ok", "io-status with ignore")
    off(terr)
    wait_ev(m, "BLOCK_JOB_COMPLETED")
    wait_gone(m, "ji")
    ev = job_events(m, "ji")
    n = ev.count("BLOCK_JOB_ERROR")
    check(n >= 3 and ev == ["created", "running"] + ["BLOCK_JOB_ERROR"] * n +
          ["waiting", "pending", "BLOCK_JOB_COMPLETED", "concluded", "null"],
          "ji: %r" % ev)
    check(all(e == {"device": "ji", "operation": "write", "action": "ignore"}
              for e in errors(m)), "errors: %r" % errors(m))
    [c] = [e["data"] for e in m.events if e["event"] == "BLOCK_JOB_COMPLETED"]
    check("error" not in c and c["offset"] == SIZE, "COMPLETED: %r" % c)
    check(nbd_read(tgt, SIZE) == file_bytes(tmp + "/start2"),
          "the target misses chunks after ignore")

@section("enospc and auto: EIO is reported")
def _():
    for pol in ("enospc", "auto"):
        on(terr)
        m.events.clear()
        jid = "je" + pol
        m.command("drive-backup", {"job-id": jid, "device": "sda",
                                   "target": tgt, "sync": "full",
                                   "on-target-error": pol})
        wait_ev(m, "BLOCK_JOB_COMPLETED")
        wait_gone(m, jid)
        off(terr)
        check(job_events(m, jid) == ["created", "running", "BLOCK_JOB_ERROR",
                                     "aborting", "BLOCK_JOB_COMPLETED",
                                     "concluded", "null"],
              "%s: %r" % (jid, job_events(m, jid)))
        check(errors(m) == [{"device": jid, "operation": "write",
                             "action": "report"}], "errors: %r" % errors(m))
        [c] = [e["data"] for e in m.events
               if e["event"] == "BLOCK_JOB_COMPLETED"]
        check(c["error"] == "Input/output error", "%s: %r" % (jid, c))

@section("enospc and auto on a full device: stop with io-status nospace")
def _():
    for pol in ("enospc", "auto"):
        m.events.clear()
        jid = "jf" + pol
        m.command("drive-backup", {"job-id": jid, "device": "sda",
                                   "target": "/dev/full", "mode": "existing",
                                   "sync": "full", "on-target-error": pol})
        wait_ev(m, "BLOCK_JOB_ERROR")
        wait_status(m, jid, "paused")
        b = block_job(m, jid)
        check(b["io-status"] == "nospace" and b["paused"] is True,
              "%s: %r" % (jid, b))
        m.command("job-resume", {"id": jid})
        wait_ev(m, "BLOCK_JOB_ERROR", 2)
        wait_status(m, jid, "paused")
        m.command("job-cancel", {"id": jid})
        wait_ev(m, "BLOCK_JOB_CANCELLED")
        wait_gone(m, jid)
        check(job_events(m, jid) == ["created", "running", "BLOCK_JOB_ERROR",
                                     "paused", "running", "BLOCK_JOB_ERROR",
                                     "paused", "running", "aborting",
                                     "BLOCK_JOB_CANCELLED", "concluded",
                                     "null"],
              "%s: %r" % (jid, job_events(m, jid)))
        check(errors(m) == [{"device": jid, "operation": "write",
                             "action": "stop"}] * 2, "errors: %r" % errors(m))
        [j] = [e["data"] for e in m.events
               if e["event"] == "BLOCK_JOB_CANCELLED"]
        check(j["offset"] < j["len"] == SIZE, "CANCELLED: %r" % j)

@section("on-source-error=stop and ignore: a source whose reads fail")
def _():
    m.command("blockdev-add", {"driver": "nbd", "node-name": "src",
                               "server": {"type": "unix", "path": srcsock},
                               "export": ""})
    for pol, action in (("stop", "stop"), ("ignore", "ignore"),
                        ("report", "report")):
        h = nbd_open(tgt)
        h.zero(SIZE, 0)
        h.shutdown()
        on(serr)
        m.events.clear()
        jid = "jr" + pol
        m.command("drive-backup", {"job-id": jid, "device": "src",
                                   "target": tgt, "sync": "full",
                                   "on-source-error": pol,
                                   "on-target-error": "report"})
        wait_ev(m, "BLOCK_JOB_ERROR")
        if pol == "stop":
            wait_status(m, jid, "paused")
            check(block_job(m, jid)["io-status"] == "failed", "source stop")
        if pol != "report":
            off(serr)
        if pol == "stop":
            m.command("job-resume", {"id": jid})
        wait_ev(m, "BLOCK_JOB_COMPLETED")
        wait_gone(m, jid)
        if pol == "report":
            off(serr)
        errs = errors(m)
        check(errs and all(e == {"device": jid, "operation": "read",
                                 "action": action} for e in errs),
              "%s: errors %r" % (jid, errs))
        [c] = [e["data"] for e in m.events
               if e["event"] == "BLOCK_JOB_COMPLETED"]
        if pol == "report":
            check(c["error"] == "Input/output error", "%s: %r" % (jid, c))
        else:
            check("error" not in c, "%s: %r" % (jid, c))
            check(nbd_read(tgt, SIZE) == file_bytes(tmp + "/src.img"),
                  "%s: the target differs from the source" % jid)
    m.command("blockdev-del", {"node-name": "src"})

@section("bad policies")
def _():
    expect_error(m, "drive-backup", {"job-id": "x", "device": "sda",
                 "target": tgt, "sync": "full", "on-target-error": "later"},
                 "Parameter 'on-target-error' does not accept value 'later'")
    expect_error(m, "drive-backup", {"job-id": "x", "device": "sda",
                 "target": tgt, "sync": "full", "on-source-error": 1},
                 "Invalid parameter type for 'on-source-error', expected: "
                 "string")
    check(m.command("query-jobs") == [], "a refused job exists")

m.close()
finish()
EOF
