#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# Push backup benchmark: a full push backup of one disk (DISK bytes,
# half data in 64 MiB runs, the rest holes) in one run, against the
# other ways of copying the same point in time:
#
#   push-file    drive-backup sync=full to a new raw file
#   push-nbd     drive-backup to an nbdkit file server (Unix socket)
#   nbdcopy-file nbdcopy of a pull backup export (backup-begin) of the
#                same disk to a new raw file
#   nbdcopy-nbd  the same to the nbdkit file server
#   qsd-file     qemu-storage-daemon 7.2 blockdev-backup sync=full to a
#                file node on a new sparse raw file
#   qsd-nbd      the same to an nbd node on the nbdkit file server
#   push-load    push-file while bench-write-like 4 KiB random writes
#                (one libnbd connection, QD 1, for the job's length)
#                run on the disk: the guest's write rate is reported
#                against the same writes with no job
#
# Each copy is timed from the command to its end (BLOCK_JOB_COMPLETED,
# nbdcopy's exit), its target removed afterwards; caches are dropped
# before each copy when run as root (else "as it happens").  The push
# job fsyncs its target before it completes; nbdcopy is run with
# --flush so that it does the same; qemu's backup does not flush.
#
#   bench/bench-push.sh BUILDDIR
#
# Knobs: DISK=4G, RUNS=3, WORKDIR (a local disk file system), KEEP=1,
# ROWS (a comma-separated list of the rows to run, e.g.
# ROWS=push-nbd,nbdcopy-nbd,qsd-nbd; the guest load row is push-load).
# Needs nbdkit (file plugin), nbdcopy, python3 with libnbd's nbd
# module, and qemu-storage-daemon for the qsd rows (skipped if absent).
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 BUILDDIR" >&2
    exit 2
fi
BUILD=$(cd "$1" && pwd)
SRC=$(cd "$(dirname "$0")" && pwd)
FILTER=$BUILD/filters/checkpoint/.libs/nbdkit-checkpoint-filter.so
[ -f "$FILTER" ] || { echo "$0: $FILTER not built" >&2; exit 1; }
WORK=${WORKDIR:-$(mktemp -d "${TMPDIR:-/var/tmp}/nbdkit-bench-push.XXXXXX")}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)

exec /usr/bin/python3 - "$FILTER" "$WORK" "${DISK:-4G}" "${RUNS:-3}" "${KEEP:-0}" \
     "${WORKDIR:+given}" "${ROWS:-}" <<'EOF'
import json, os, random, shutil, socket, subprocess, sys, time
import nbd

FILTER, WORK, DISK, RUNS, KEEP, GIVEN, ROWS = sys.argv[1:]
ROWS = ROWS.split(",") if ROWS else None
RUNS, KEEP = int(RUNS), KEEP == "1"
MiB = 1 << 20
units = {"K": 10, "M": 20, "G": 30}
SIZE = int(DISK[:-1]) << units[DISK[-1].upper()] if DISK[-1].isalpha() \
    else int(DISK)
RUN = 64 * MiB
procs = {}                      # name -> Popen: only these are stopped

class QMP:
    def __init__(self, path):
        for _ in range(200):
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(path)
                break
            except OSError:
                s.close()
                time.sleep(0.05)
        else:
            sys.exit("cannot connect to %s" % path)
        self.s = s
        self.f = s.makefile("rw")
        self.events = []
        self.f.readline()
        self.cmd("qmp_capabilities")
    def msg(self):
        return json.loads(self.f.readline())
    def cmd(self, name, args=None):
        self.f.write(json.dumps({"execute": name, "arguments": args or {}})
                     + "\n")
        self.f.flush()
        while True:
            m = self.msg()
            if "event" in m:
                self.events.append(m)
            elif "error" in m:
                sys.exit("%s: %s" % (name, m["error"]))
            else:
                return m["return"]
    def wait(self, name):
        while True:
            for e in self.events:
                if e["event"] == name:
                    self.events.remove(e)
                    return e
            m = self.msg()
            if "event" in m:
                self.events.append(m)

def wait_path(p):
    for _ in range(400):
        if os.path.exists(p):
            return
        time.sleep(0.05)
    sys.exit("%s did not appear" % p)

def start(name, argv, sock):
    for p in (sock, WORK + "/%s.sock" % name, WORK + "/%s.qmp" % name):
        if os.path.exists(p):
            os.unlink(p)
    procs[name] = subprocess.Popen(argv, stderr=open(WORK + "/%s.log" % name,
                                                     "a"))
    wait_path(sock)

def stop(name):
    p = procs.pop(name, None)
    if p:
        p.terminate()
        p.wait(30)

def drop_caches():
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3")
        return True
    except OSError:
        return False

disk = WORK + "/disk.img"
if not (os.path.exists(disk) and os.path.getsize(disk) == SIZE):
    with open(disk, "wb") as f:
        f.truncate(SIZE)
        rnd = random.Random(1)
        block = os.urandom(MiB)
        for off in range(0, SIZE, 2 * RUN):
            f.seek(off)
            for i in range(RUN // MiB):
                f.write(block[i * 4096:] + block[:i * 4096])
    os.sync()

def target_server(path):
    with open(path, "wb") as f:
        f.truncate(SIZE)
    start("tgt", ["nbdkit", "-f", "-U", WORK + "/tgt.sock", "file", path],
          WORK + "/tgt.sock")
    return "nbd+unix:///?socket=" + WORK + "/tgt.sock"

def source():
    start("src", ["nbdkit", "-f", "-U", WORK + "/src.sock",
                  "--filter=" + FILTER, "file", disk, "node-name=d0",
                  "qmp=" + WORK + "/src.qmp", "scratch=" + WORK],
          WORK + "/src.qmp")
    return QMP(WORK + "/src.qmp")

def push(m, target, n):
    t0 = time.monotonic()
    m.cmd("drive-backup", {"job-id": "j%d" % n, "device": "d0",
                           "sync": "full", "target": target})
    e = m.wait("BLOCK_JOB_COMPLETED")
    t = time.monotonic() - t0
    if "error" in e["data"]:
        sys.exit("push: %s" % e["data"])
    return t

def pull_nbdcopy(m, target, n):
    t0 = time.monotonic()
    m.cmd("backup-begin", {"id": "b%d" % n})
    subprocess.check_call(["nbdcopy", "--flush",
                           "nbd+unix:///d0@b%d?socket=%s/src.sock"
                           % (n, WORK), target])
    m.cmd("backup-end", {"id": "b%d" % n})
    return time.monotonic() - t0

def qsd(target_kind, n):
    qmp = WORK + "/qsd.qmp"
    if os.path.exists(qmp):
        os.unlink(qmp)
    start("qsd", ["qemu-storage-daemon", "--blockdev",
                  "driver=file,node-name=d0,filename=%s,cache.direct=off"
                  % disk, "--chardev",
                  "socket,id=m0,path=%s,server=on,wait=off" % qmp,
                  "--monitor", "chardev=m0"], qmp)
    q = QMP(qmp)
    if target_kind == "file":
        path = WORK + "/t-qsd.raw"
        with open(path, "wb") as f:
            f.truncate(SIZE)
        q.cmd("blockdev-add", {"driver": "file", "node-name": "t",
                               "filename": path})
    else:
        target_server(WORK + "/t-qsdnbd.raw")
        q.cmd("blockdev-add", {"driver": "nbd", "node-name": "t",
                               "server": {"type": "unix",
                                          "path": WORK + "/tgt.sock"}})
    t0 = time.monotonic()
    q.cmd("blockdev-backup", {"job-id": "q%d" % n, "device": "d0",
                              "target": "t", "sync": "full"})
    q.wait("BLOCK_JOB_COMPLETED")
    t = time.monotonic() - t0
    q.cmd("quit")
    procs.pop("qsd").wait(30)
    stop("tgt")
    return t

def guest_writes(uri, seconds):
    """4 KiB random writes for SECONDS: writes per second."""
    h = nbd.NBD()
    h.connect_uri(uri)
    rnd = random.Random(7)
    buf = b"\x5a" * 4096
    n, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < seconds:
        h.pwrite(buf, rnd.randrange(SIZE // 4096) * 4096)
        n += 1
    h.shutdown()
    return n / (time.monotonic() - t0)

results = {}
have_qsd = shutil.which("qemu-storage-daemon") is not None
cold = True
try:
    for r in range(RUNS):
        rows = [("push-file", None), ("push-nbd", None),
                ("nbdcopy-file", None), ("nbdcopy-nbd", None)]
        if have_qsd:
            rows += [("qsd-file", None), ("qsd-nbd", None)]
        if ROWS:
            rows = [row for row in rows if row[0] in ROWS]
        rows = rows[r % len(rows):] + rows[:r % len(rows)] if rows else []
        for name, _ in rows:
            cold = drop_caches() and cold
            n = r * 10 + len(results.get(name, []))
            if name.startswith("qsd"):
                t = qsd(name[4:], n)
            else:
                m = source()
                if name.endswith("file"):
                    target = WORK + "/t-%s.raw" % name
                else:
                    target = target_server(WORK + "/t-%s.raw" % name)
                t = (push if name.startswith("push") else pull_nbdcopy)(
                    m, target, n)
                stop("tgt")
                stop("src")
            results.setdefault(name, []).append(t)
            for f in os.listdir(WORK):
                if f.startswith("t-"):
                    os.unlink(os.path.join(WORK, f))
            print("run %d %-12s %6.2f s  %7.1f MiB/s (of the disk)"
                  % (r, name, t, SIZE / MiB / t), flush=True)
    # The guest's cost: writes/s without a job, then during one.
    base = None
    if not ROWS or "push-load" in ROWS:
        m = source()
        uri = "nbd+unix:///?socket=%s/src.sock" % WORK
        base = guest_writes(uri, 5)
        m.cmd("drive-backup", {"job-id": "jl", "device": "d0",
                               "sync": "full",
                               "target": WORK + "/t-load.raw"})
        during = guest_writes(uri, 5)
        m.wait("BLOCK_JOB_COMPLETED")
        stop("src")
        os.unlink(WORK + "/t-load.raw")
finally:
    for name in list(procs):
        stop(name)
    if not KEEP and os.path.exists(disk):
        os.unlink(disk)
    if not KEEP and not GIVEN:
        shutil.rmtree(WORK, ignore_errors=True)

print("\nfull push backup of %s (50%% data), %d run(s), caches %s"
      % (DISK, RUNS, "dropped" if cold else "not dropped (not root)"))
print("%-12s %8s %10s %8s" % ("", "median s", "MiB/s", "vs nbdcopy"))
med = {k: sorted(v)[len(v) // 2] for k, v in results.items()}
for k in sorted(med):
    ref = med.get("nbdcopy-" + k.split("-")[1])
    print("%-12s %8.2f %10.1f %8s" % (k, med[k], SIZE / MiB / med[k],
                                      "%.2f" % (ref / med[k]) if ref
                                      else "-"))
if base:
    print("guest 4 KiB random writes: %.0f/s without a job, %.0f/s during "
          "a push job (%.2f)" % (base, during, during / base))
EOF
