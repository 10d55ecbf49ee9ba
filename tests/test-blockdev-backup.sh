#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# blockdev-backup: push backup jobs whose target is a node of the same
# process (blockdev-add driver file and nbd): full and incremental
# while qemu-io writes the source, each target compared bit for bit
# with the disk at the job's start; the target's own bitmap records the
# job's writes; QEMU 7.2's errors (seen on qemu-storage-daemon) for a
# missing, identical, busy or differently sized target; blockdev-del of
# the target refused while the job lives; a grouped transaction of two
# blockdev-backup actions.
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e
set -x

requires_built "$PLUGIN" "$FILTER"
requires nbdkit --version
requires qemu-io --version
tmpdir

SIZE=$(( 8 * 1024 * 1024 ))
head -c $SIZE /dev/urandom > "$tmp/sda.img"
fallocate -p -o $((3 * 1024 * 1024)) -l $((1024 * 1024)) "$tmp/sda.img"
head -c $SIZE /dev/zero | tr '\0' '\356' > "$tmp/t1.img"
cp "$tmp/t1.img" "$tmp/t2.img"
truncate -s $(( SIZE / 2 )) "$tmp/small.img"
mkdir "$tmp/scratch"

start_nbdkit kit --filter="$FILTER" "$PLUGIN" disk=sda:"$tmp/sda.img" \
             qmp="$tmp/q.sock" scratch="$tmp/scratch"
sda=$(nbd_uri sda "$sock")
start_nbdkit mem memory $SIZE
memsock=$sock

$PY - "$tmp" "$tmp/q.sock" "$sda" "$memsock" <<'EOF'
import shutil, time
from testlib import *
tmp, qsock, sda, memsock = script_args(str, str, str, str)
SIZE = 8 * MiB

NORMAL = ["created", "running", "waiting", "pending", "BLOCK_JOB_COMPLETED",
          "concluded", "null"]

m = connect(qsock)
qio(sda, "write -P 0x5a 0 4k")
for n, f in (("t1", "t1.img"), ("t2", "t2.img"), ("small", "small.img")):
    m.command("blockdev-add", {"driver": "file", "node-name": n,
                               "filename": tmp + "/" + f})
m.command("blockdev-add", {"driver": "nbd", "node-name": "mem",
                           "server": {"type": "unix", "path": memsock},
                           "export": ""})

@section("errors")
def _():
    def err(args, desc):
        a = {"job-id": "e", "device": "sda", "target": "t1", "sync": "full"}
        a.update(args)
        expect_error(m, "blockdev-backup", a, desc)
    err({"target": "nosuch"},
        "Cannot find device='nosuch' nor node-name='nosuch'")
    err({"target": "sda"}, "Source and target cannot be the same")
    err({"target": "small"}, "Source and target image have different sizes")
    err({"device": "nosuch"},
        "Cannot find device='nosuch' nor node-name='nosuch'")
    err({"sync": "incremental"},
        "must provide a valid bitmap name for 'incremental' sync mode")
    expect_error(m, "blockdev-backup", {"job-id": "e", "device": "sda",
                 "target": "t1", "sync": "full", "mode": "existing"},
                 contains="mode")
    check(m.command("query-jobs") == [], "a refused job exists")
    check(file_bytes(tmp + "/t1.img") == b"\xee" * SIZE,
          "a refused job wrote its target")

@section("full to a file node while qemu-io writes; target busy")
def _():
    m.command("block-dirty-bitmap-add", {"node": "t1", "name": "tb"})
    shutil.copyfile(tmp + "/sda.img", tmp + "/start1")
    m.events.clear()
    m.command("blockdev-backup", {"job-id": "j1", "device": "sda",
                                  "target": "t1", "sync": "full",
                                  "speed": 2 * MiB})
    qio(sda, "write -P 0x61 1M 512k", "write -z 5M 64k", "discard 6M 1M",
        "write -P 0x62 3M 64k")
    expect_error(m, "blockdev-del", {"node-name": "t1"},
                 "Node 't1' is busy: block device is in use by block job: "
                 "backup")
    expect_error(m, "blockdev-backup", {"job-id": "j2", "device": "sda",
                 "target": "t1", "sync": "full"},
                 "Node 't1' is busy: block device is in use by block job: "
                 "backup")
    m.command("block-job-set-speed", {"device": "j1", "speed": 0})
    wait_ev(m, "BLOCK_JOB_COMPLETED")
    wait_gone(m, "j1")
    check(job_events(m, "j1") == NORMAL, "j1: %r" % job_events(m, "j1"))
    [c] = [e["data"] for e in m.events if e["event"] == "BLOCK_JOB_COMPLETED"]
    check(c == {"type": "backup", "device": "j1", "len": SIZE,
                "offset": SIZE, "speed": 0}, "COMPLETED: %r" % c)
    check(file_bytes(tmp + "/t1.img") == file_bytes(tmp + "/start1"),
          "t1 differs from the disk at the job's start")
    # The job wrote all of t1 (data and zeros), as a guest would.
    [b] = [b for b in bitmap_infos(m, "t1") if b["name"] == "tb"]
    check(b["count"] == SIZE, "t1's bitmap: %r" % b)
    m.command("block-dirty-bitmap-remove", {"node": "t1", "name": "tb"})
    m.command("blockdev-del", {"node-name": "t1"})

@section("full + incremental to an nbd node, as transactions")
def _():
    h = nbd_open(uri(memsock))
    h.pwrite(b"\xdd" * SIZE, 0)
    h.shutdown()
    shutil.copyfile(tmp + "/sda.img", tmp + "/start2")
    m.events.clear()
    m.command("transaction", {"actions": [
        {"type": "block-dirty-bitmap-add",
         "data": {"node": "sda", "name": "inc"}},
        {"type": "blockdev-backup",
         "data": {"job-id": "jf", "device": "sda", "target": "mem",
                  "sync": "full", "speed": 2 * MiB}}]})
    qio(sda, "write -P 0x71 2M 300k", "write -P 0x72 7M 4k")
    m.command("block-job-set-speed", {"device": "jf", "speed": 0})
    wait_ev(m, "BLOCK_JOB_COMPLETED")
    wait_gone(m, "jf")
    check(job_events(m, "jf") == NORMAL, "jf: %r" % job_events(m, "jf"))
    check(nbd_read(uri(memsock), SIZE) == file_bytes(tmp + "/start2"),
          "mem differs from the disk at the full job's start")
    shutil.copyfile(tmp + "/sda.img", tmp + "/start3")
    [b] = [b for b in bitmap_infos(m, "sda") if b["name"] == "inc"]
    m.events.clear()
    m.command("blockdev-backup", {"job-id": "ji", "device": "sda",
                                  "target": "mem", "sync": "incremental",
                                  "bitmap": "inc", "speed": 256 * KiB})
    [j] = m.command("query-jobs")
    check(j["total-progress"] == b["count"] > 0, "incremental: %r %r"
          % (j, b))
    qio(sda, "write -P 0x73 2M 64k", "write -P 0x74 4M 64k")
    m.command("block-job-set-speed", {"device": "ji", "speed": 0})
    wait_ev(m, "BLOCK_JOB_COMPLETED")
    wait_gone(m, "ji")
    check(nbd_read(uri(memsock), SIZE) == file_bytes(tmp + "/start3"),
          "full + incremental on mem differs from the disk")
    m.command("block-dirty-bitmap-remove", {"node": "sda", "name": "inc"})

@section("grouped: two blockdev-backup actions")
def _():
    shutil.copyfile(tmp + "/sda.img", tmp + "/start4")
    m.events.clear()
    m.command("transaction", {
        "properties": {"completion-mode": "grouped"},
        "actions": [{"type": "blockdev-backup",
                     "data": {"job-id": "g1", "device": "sda",
                              "target": "t2", "sync": "full"}},
                    {"type": "blockdev-backup",
                     "data": {"job-id": "g2", "device": "sda",
                              "target": "mem", "sync": "full",
                              "speed": 4 * MiB}}]})
    qio(sda, "write -P 0x81 0 1M")
    wait_ev(m, "BLOCK_JOB_COMPLETED", 2)
    wait_gone(m, "g1")
    wait_gone(m, "g2")
    for j in ("g1", "g2"):
        check(job_events(m, j) == NORMAL, "%s: %r" % (j, job_events(m, j)))
    check(file_bytes(tmp + "/t2.img") == file_bytes(tmp + "/start4"),
          "t2 differs from the disk at the start")
    check(nbd_read(uri(memsock), SIZE) == file_bytes(tmp + "/start4"),
          "mem differs from the disk at the start")
    for n in ("t2", "mem", "small"):
        m.command("blockdev-del", {"node-name": n})

m.close()
finish()
EOF
