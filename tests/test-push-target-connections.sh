#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# drive-backup to an NBD target writes over several connections when
# the server allows multi-conn (4, and a fifth that flushes behind the
# copy), and over exactly one when it does not (such a server may
# serve one client at a time): each target equals the disk, and the
# log filter of the target counts the connections.
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e
set -x

requires_built "$PLUGIN" "$FILTER"
requires nbdkit --version
tmpdir

SIZE=$(( 32 * 1024 * 1024 ))
head -c $SIZE /dev/urandom > "$tmp/sda.img"
start_nbdkit kit --filter="$FILTER" "$PLUGIN" disk=sda:"$tmp/sda.img" \
             qmp="$tmp/q.sock"
start_nbdkit multi --filter=log memory $SIZE logfile="$tmp/multi.log"
multi="nbd+unix:///?socket=$sock"
start_nbdkit single --filter=log --filter=multi-conn --filter=limit \
             memory $SIZE logfile="$tmp/single.log" \
             multi-conn-mode=disable limit=1
single="nbd+unix:///?socket=$sock"

$PY - "$tmp" "$multi" "$single" <<'EOF2'
import time
import nbd
from testlib import *
tmp, multi, single = script_args(str, str, str)
m = connect(tmp + "/q.sock")

def push(jid, target):
    m.events.clear()
    m.command("drive-backup", {"job-id": jid, "device": "sda",
                               "sync": "full", "target": target})
    m.sock.settimeout(60)
    while not any(e["event"] == "BLOCK_JOB_COMPLETED" for e in m.events):
        msg = m.recv_message()
        if "event" in msg:
            m.events.append(msg)
    [c] = [e["data"] for e in m.events if e["event"] == "BLOCK_JOB_COMPLETED"]
    check("error" not in c, "%s: %r" % (jid, c))

def connections(log):
    with open(log) as f:
        return {l.split("connection=")[1].split()[0] for l in f
                if "connection=" in l and " Connect " in l}

want = file_bytes(tmp + "/sda.img")
for jid, target, log, n in (("jm", multi, "multi", 5),
                            ("js", single, "single", 1)):
    push(jid, target)
    # The server lets the job's connection go a moment after it closed.
    for _ in range(100):
        try:
            h = nbd_open(target)
            break
        except nbd.Error:
            time.sleep(0.05)
    got = b"".join(h.pread(1 << 20, o) for o in range(0, len(want), 1 << 20))
    h.shutdown()
    check(got == want, "%s: the target differs from the disk" % jid)
    # The reader above was one more connection.
    c = connections(tmp + "/" + log + ".log")
    check(len(c) == n + 1, "%s: %d connections to the target, want %d: %r"
          % (jid, len(c) - 1, n, sorted(c)))
m.close()
EOF2
