#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# The soak test's load and checks, run by bench/soak.sh against one
# nbdkit (qmpdisk under the checkpoint filter, disks d0..dN-1):
#
#     soak.py QMP-SOCKET NBD-SOCKET PID DIR SECONDS DISKS [NBD_BACKEND]
#
# NBD_BACKEND: the Unix socket of a server of one zeroed disk of
# NB_SIZE bytes for the nbd node (without it there is none).
#
# The run is cut into epochs of at most EPOCH seconds.  In each epoch
# these threads run at once, each with its own connections:
# - a writer per disk (libnbd, batches of aio writes and zeroes on
#   disjoint ranges), keeping a model of what the disk holds;
# - backups: backup-begin with every writer held between two batches
#   (so the models are the frozen contents), full or incremental from
#   the previous backup's checkpoint, some with a checkpoint of their
#   own; two readers per export compare the frozen data with the models
#   taken at backup-begin, an incremental export's block status must
#   cover every chunk that changed since its base, a reader vanishes
#   mid-read; backup-end, sometimes with success=false;
# - churn: checkpoint create/delete, transactions that succeed and
#   transactions that fail (and must change nothing);
# - hot-plug: blockdev-add of a new disk, writes and reads checked
#   against its model, every other time block_resize (grown or shrunk)
#   with a bitmap whose count must be exact, blockdev-del, its file
#   checked;
# - chaos: QMP clients that vanish before, during and after a command,
#   NBD clients that vanish with reads in flight;
# - push: drive-backup of one disk after another to a file, full, then
#   incremental into the same file (mode=existing, a bitmap added at
#   the full one's instant), some cancelled: a job that completes must
#   leave a file equal to the model at the job's start;
# - an nbd node: blockdev-add driver=nbd of a disk that another nbdkit
#   serves (NBD_BACKEND), written and read through our export, a pull
#   backup of it checked while it is written, a reader that vanishes,
#   blockdev-del, and its contents checked on the other server.
# At the end of an epoch every thread stops and closes its connections,
# every disk is read whole and compared with its model, and the
# descriptors, threads and RSS of nbdkit are sampled once they settle.
# The first epoch is the warm-up: its sample is the baseline, and the
# last sample may not exceed it by more than the margins below.

import faulthandler
import os
import random
import socket
import sys
import threading
import time
import traceback

import nbd

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "tests"))
from testlib import QMP, QMPError, uri, nbd_open   # noqa: E402
from incremental_apply import extents              # noqa: E402

KiB = 1024
MiB = 1024 * KiB
CHUNK = 64 * KiB
DISK_SIZE = 8 * MiB
HP_SIZE = 2 * MiB
NB_SIZE = 2 * MiB
EPOCH = 15.0
READ = 256 * KiB
# Warm-up: the epochs of the first WARMUP seconds, or of the first
# half of a shorter run.  Growth allowed from the warm-up's samples to
# the end: the descriptors and threads of an idle nbdkit are exact
# counts (the last warm-up sample's); RSS is compared with the highest
# warm-up sample.  soak.sh fixes malloc's mmap threshold, so that
# buffers of 128 KiB and more go back to the system when freed and RSS
# follows live memory, not the high-water mark of malloc's arenas; 8
# MiB is then above the noise of one epoch and far below a leak of a
# few hundred bytes per round over thousands of rounds.
WARMUP = 60.0
MARGIN_FDS = 0
MARGIN_THREADS = 0
MARGIN_RSS_KIB = int(os.environ.get("SOAK_RSS_MARGIN_KIB", 8 * 1024))
# This script holds a model of each disk and the frozen copies of a
# backup's disks (tens of MiB); more than this is a leak of its own.
MARGIN_CLIENT_RSS_KIB = 512 * 1024

# The buffers of reads whose client vanishes with them in flight: the
# same ones every time, shared by the threads (their contents are never
# looked at).  A new nbd.Buffer per read is never freed by libnbd
# 1.14's Python binding when the handle is closed with the read in
# flight: 800 reads of 1 MiB kept 800 MiB, and a 30-minute soak grew to
# 24 GB and was killed by the OOM killer.
VANISH_BUF = nbd.Buffer(4 * MiB)
VANISH_BUF_1M = nbd.Buffer(MiB)

qsock, sock, pid, workdir, seconds, ndisks = sys.argv[1:7]
pid, seconds, ndisks = int(pid), float(seconds), int(ndisks)
backend = sys.argv[7] if len(sys.argv) > 7 else None

stats_lock = threading.Lock()
stats = {"rounds": 0, "verified": 0, "written": 0, "backups": 0,
         "incremental": 0, "checkpoints": 0, "transactions": 0,
         "hotplugs": 0, "qmp-vanished": 0, "nbd-vanished": 0,
         "refused-busy": 0, "pushes": 0, "pushes-verified": 0,
         "pushes-incremental": 0,
         "push-cancelled": 0, "nbd-node-rounds": 0,
         "resizes": 0}
errors = []
stop = threading.Event()


def count(key, n=1):
    with stats_lock:
        stats[key] += n


class Disk:
    def __init__(self, name):
        self.name = name
        self.path = os.path.join(workdir, name + ".img")
        with open(self.path, "rb") as f:
            self.model = bytearray(f.read())
        self.lock = threading.Lock()


disks = [Disk("d%d" % i) for i in range(ndisks)]
names = [d.name for d in disks]


def sample():
    """(fds, threads, RSS KiB) of nbdkit."""
    fds = len(os.listdir("/proc/%d/fd" % pid))
    threads = len(os.listdir("/proc/%d/task" % pid))
    with open("/proc/%d/status" % pid) as f:
        rss = [int(line.split()[1]) for line in f
               if line.startswith("VmRSS:")][0]
    return fds, threads, rss


def own_rss():
    """This script's RSS in KiB (its NBD clients' buffers included)."""
    with open("/proc/self/status") as f:
        return [int(line.split()[1]) for line in f
                if line.startswith("VmRSS:")][0]


def settled():
    """A sample once descriptors and threads stop changing (the server
    sees a client's close a moment after the client)."""
    last = sample()
    for _ in range(100):
        time.sleep(0.1)
        s = sample()
        if s[:2] == last[:2]:
            return s
        last = s
    return last


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def verify(h, ref, what, offset=0, length=None):
    length = len(ref) - offset if length is None else length
    pos = offset
    while pos < offset + length:
        n = min(READ, offset + length - pos)
        got = h.pread(n, pos)
        if got != ref[pos:pos + n]:
            bad = next(i for i in range(n) if got[i] != ref[pos + i])
            raise AssertionError("%s: data differs from the model at byte "
                                 "%d" % (what, pos + bad))
        pos += n
    count("verified", length)


def thread(fn, *args):
    def run():
        try:
            fn(*args)
        except Exception:
            e = "%s: %s" % (fn.__name__, traceback.format_exc())
            errors.append(e)
            print(e, file=sys.stderr, flush=True)
            stop.set()
    t = threading.Thread(target=run, name=fn.__name__)
    t.start()
    return t


def writer(d, end):
    h = nbd_open(uri(sock, d.name))
    rnd = random.Random()
    while time.time() < end and not stop.is_set():
        # Disjoint ranges in flight at once: their order does not
        # matter, so the model is exact after the batch.
        slots = rnd.sample(range(DISK_SIZE // CHUNK), 4)
        with d.lock:
            cmds, done = [], []
            for s in slots:
                off = s * CHUNK + rnd.randrange(0, CHUNK // 512) * 512
                n = rnd.randrange(1, (s + 1) * CHUNK - off + 1)
                if rnd.random() < 0.15:
                    cmds.append(h.aio_zero(n, off))
                    data = bytes(n)
                else:
                    data = os.urandom(n)
                    cmds.append(h.aio_pwrite(data, off))
                done.append((off, data))
            while h.aio_in_flight() > 0:
                h.poll(-1)
            for c in cmds:      # retires it; raises if it failed
                check(h.aio_command_completed(c), "write not completed")
            for off, data in done:
                d.model[off:off + len(data)] = data
                count("written", len(data))
        time.sleep(0.002)
    h.flush()
    h.shutdown()


def changed_chunks(old, new):
    return {i for i in range(0, len(new), CHUNK)
            if old[i:i + CHUNK] != new[i:i + CHUNK]}


def backups(end):
    m = QMP(qsock)
    base = None                 # (checkpoint, {node: contents}) or None
    n = 0
    while time.time() < end and not stop.is_set():
        n += 1
        bid = "s%d" % n
        args = {"id": bid, "disks": [{"node": x} for x in names]}
        incremental = base is not None and n % 3 != 0
        if incremental:
            args["incremental"] = base[0]
        own = "bk%d" % n if n % 2 == 0 or base is None else None
        if own:
            args["checkpoint"] = {"name": own}
        for d in disks:
            d.lock.acquire()
        try:
            r = m.command("backup-begin", args)
            frozen = {d.name: bytes(d.model) for d in disks}
        finally:
            for d in disks:
                d.lock.release()
        count("backups")
        exports = {e["node"]: e["export"] for e in r["exports"]}
        check(sorted(exports) == sorted(names), "exports %r" % exports)
        readers = []
        for node, export in exports.items():
            if incremental:
                count("incremental")
                readers.append(thread(read_incremental, export, frozen[node],
                                      base[1][node]))
            else:
                for half in (0, 1):
                    readers.append(thread(read_half, export, frozen[node],
                                          half))
        # A reader that vanishes with a read in flight.
        h = nbd_open(uri(sock, exports[names[0]]))
        h.aio_pread(VANISH_BUF, 0)
        del h
        count("nbd-vanished")
        for t in readers:
            t.join()
        success = n % 5 != 0
        m.command("backup-end", {"id": bid, "success": success})
        if own and success:
            old, base = base, (own, frozen)
            if old:
                delete_checkpoint(m, old[0])
        count("rounds")
    if base:
        delete_checkpoint(m, base[0])
    m.close()


def read_incremental(export, ref, old):
    """An incremental export serves only what changed since its base
    (elsewhere a read fails once the guest has written there): its
    block status must cover every chunk that differs from the base's
    contents, and what it covers must be the frozen data."""
    h = nbd_open(uri(sock, export), base_allocation=True)
    covered = set()
    for off, length, flags in extents(h):
        if flags == nbd.STATE_HOLE:     # not in this layer
            continue
        covered.update(range(off - off % CHUNK, off + length, CHUNK))
        verify(h, ref, export, off, length)
    need = changed_chunks(old, ref)
    check(need <= covered, "%s: changed chunks %r not in the incremental's "
          "extents" % (export, sorted(need - covered)[:8]))
    h.shutdown()


def read_half(export, ref, half):
    h = nbd_open(uri(sock, export))
    mid = len(ref) // 2
    verify(h, ref, export, half * mid, mid if half == 0 else len(ref) - mid)
    h.shutdown()


def delete_checkpoint(m, name):
    """Delete NAME; a bitmap busy with a running backup refuses it, so
    try again for a while."""
    for _ in range(200):
        r = m.cmd("checkpoint-delete", {"name": name})
        if "return" in r:
            return
        check("in use" in r["error"]["desc"] or "busy" in r["error"]["desc"],
              "checkpoint-delete %s: %r" % (name, r))
        count("refused-busy")
        time.sleep(0.05)
    raise AssertionError("checkpoint %s stayed busy" % name)


def bitmaps(m, node):
    for info in m.command("query-named-block-nodes"):
        if info["node-name"] == node:
            return sorted(b["name"] for b in info.get("dirty-bitmaps", []))
    raise AssertionError("no node %s" % node)


def churn(end):
    m = QMP(qsock)
    mine = []
    n = 0
    while time.time() < end and not stop.is_set():
        n += 1
        name = "ch%d" % n
        m.command("checkpoint-create", {"name": name, "disks": names})
        mine.append(name)
        count("checkpoints")
        if len(mine) > 4:
            delete_checkpoint(m, mine.pop(0))
        # A transaction that works, and one that fails on its last
        # action and must leave nothing of the first.
        t = "t%d" % n
        m.command("transaction", {"actions": [
            {"type": "block-dirty-bitmap-add",
             "data": {"node": x, "name": t}} for x in names]})
        r = m.cmd("transaction", {"actions": [
            {"type": "block-dirty-bitmap-add",
             "data": {"node": names[-1], "name": t + "x"}},
            {"type": "block-dirty-bitmap-clear",
             "data": {"node": names[0], "name": t}},
            {"type": "block-dirty-bitmap-add",
             "data": {"node": names[0], "name": t}}]})
        check("error" in r, "a transaction with a duplicate name worked")
        # (Other threads add and remove bitmaps meanwhile: look only
        # at this transaction's.)
        check(t + "x" not in bitmaps(m, names[-1]), "a failed transaction "
              "left its bitmap %s on %s" % (t + "x", names[-1]))
        check(t in bitmaps(m, names[0]), "a failed transaction removed %s"
              % t)
        m.command("transaction", {"actions": [
            {"type": "block-dirty-bitmap-remove",
             "data": {"node": x, "name": t}} for x in names]})
        count("transactions", 3)
        time.sleep(0.05)
    for name in mine:
        delete_checkpoint(m, name)
    m.close()


def hotplug(end):
    m = QMP(qsock)
    rnd = random.Random()
    path = os.path.join(workdir, "hp.img")
    n = 0
    while time.time() < end and not stop.is_set():
        n += 1
        node = "hp%d" % (n % 3)
        model = bytearray(os.urandom(HP_SIZE))
        with open(path, "wb") as f:
            f.write(model)
        m.command("blockdev-add", {"node-name": node, "driver": "file",
                                   "filename": path})
        h = nbd_open(uri(sock, node))
        for _ in range(16):
            off = rnd.randrange(0, HP_SIZE - 65536)
            data = os.urandom(rnd.randrange(1, 65536))
            h.pwrite(data, off)
            model[off:off + len(data)] = data
        verify(h, model, node)
        h.flush()
        h.shutdown()
        del h
        if n % 2:
            model = resize(m, rnd, node, model)
        for _ in range(200):
            r = m.cmd("blockdev-del", {"node-name": node})
            if "return" in r:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("blockdev-del %s: %r" % (node, r))
        with open(path, "rb") as f:
            check(f.read() == model, "%s: file differs from its model" % node)
        count("verified", len(model))
        count("hotplugs")
        time.sleep(0.1)
    m.close()


def resize(m, rnd, node, model):
    """block_resize NODE (grown or shrunk, not always to a chunk edge)
    with a bitmap on it: the data up to the new size stays, the new
    part reads as zeros, and the bitmap's count is exactly the chunks
    written before and after that are still inside the disk.  Returns
    the new model."""
    m.command("block-dirty-bitmap-add", {"node": node, "name": "rs"})
    h = nbd_open(uri(sock, node))
    dirty = set()

    def scribble():
        size = len(model)
        for _ in range(4):
            off = rnd.randrange(0, size - 4096)
            data = os.urandom(rnd.randrange(1, 4096))
            h.pwrite(data, off)
            model[off:off + len(data)] = data
            dirty.update(range(off // CHUNK, (off + len(data) - 1) // CHUNK
                               + 1))
    scribble()
    h.shutdown()
    del h
    size = HP_SIZE + rnd.choice((-1, 1)) * rnd.randrange(1, 16) * 4096 * 3
    # Shrinking waits for the server to see our close.
    for _ in range(200):
        r = m.cmd("block_resize", {"node-name": node, "size": size})
        if "return" in r:
            break
        check("open connection" in r["error"]["desc"],
              "block_resize %s: %r" % (node, r))
        time.sleep(0.05)
    else:
        raise AssertionError("block_resize %s: %r" % (node, r))
    if size < len(model):
        del model[size:]
    else:
        model += bytes(size - len(model))
    dirty = {c for c in dirty if c * CHUNK < size}
    h = nbd_open(uri(sock, node))
    check(h.get_size() == size, "%s: size %d after block_resize to %d"
          % (node, h.get_size(), size))
    verify(h, model, node)
    scribble()
    verify(h, model, node)
    h.flush()
    h.shutdown()
    del h
    [b] = [b for b in m.command("query-named-block-nodes")
           if b["node-name"] == node][0].get("dirty-bitmaps", [])
    check(b["name"] == "rs" and b["count"] == len(dirty) * CHUNK,
          "%s: bitmap count %d after block_resize to %d, want %d"
          % (node, b["count"], size, len(dirty) * CHUNK))
    m.command("block-dirty-bitmap-remove", {"node": node, "name": "rs"})
    count("resizes")
    return model


def chaos(end):
    rnd = random.Random()
    while time.time() < end and not stop.is_set():
        # A QMP client gone before, during or after a command.
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(qsock)
        s.recv(4096)                            # the greeting
        k = rnd.randrange(4)
        if k > 0:
            s.sendall(b'{"execute": "qmp_capabilities"}\n')
        if k == 2:
            s.sendall(b'{"execute": "query-named-block-nodes", "argu')
        if k == 3:
            s.sendall(b'{"execute": "query-checkpoints", '
                      b'"arguments": {"size": true}}\n'
                      b'{"execute": "query-backups"}\n')
        s.close()
        count("qmp-vanished")
        # An NBD client gone with reads in flight (soak.sh says why
        # nbdkit runs with one thread per connection for this).
        h = nbd_open(uri(sock, rnd.choice(names)))
        for i in range(rnd.randrange(1, 5)):
            h.aio_pread(VANISH_BUF_1M, i * MiB)
        del h
        count("nbd-vanished")
        time.sleep(0.02)


def job_end(m, job):
    """Wait until JOB is gone (auto-dismissed); its last event."""
    for _ in range(1200):
        if not any(j["id"] == job for j in m.command("query-jobs")):
            break
        time.sleep(0.05)
    else:
        raise AssertionError("job %s did not end" % job)
    def of_job(e):
        d = e.get("data", {})
        return d.get("device", d.get("id")) == job
    ends = [e for e in m.events if of_job(e) and e["event"] in
            ("BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED")]
    m.events[:] = [e for e in m.events if not of_job(e)]
    check(len(ends) == 1, "job %s ended with events %r" % (job, ends))
    return ends[0]


def push(end):
    """drive-backup of each disk in turn into push-NODE.raw: full (with
    a bitmap added at the same instant), then incremental into the same
    file; every fourth job slowed down and cancelled."""
    m = QMP(qsock)
    chain = {}                  # node: its bitmap, the file up to date
    n = 0
    while time.time() < end and not stop.is_set():
        n += 1
        d = disks[n % len(disks)]
        job, bm = "push%d" % n, "push-" + d.name
        target = os.path.join(workdir, "push-%s.raw" % d.name)
        args = {"job-id": job, "device": d.name, "target": target,
                "sync": "full"}
        if d.name in chain:
            args.update(sync="incremental", bitmap=bm, mode="existing")
        cancel = n % 4 == 0
        if cancel:
            args["speed"] = MiB
        with d.lock:            # the writer is between two batches
            if d.name not in chain:
                m.command("block-dirty-bitmap-add", {"node": d.name,
                                                     "name": bm})
            m.command("drive-backup", args)
            frozen = bytes(d.model)
        count("pushes")
        if cancel:
            r = m.cmd("block-job-cancel", {"device": job})
            check("return" in r or "not found" in r["error"]["desc"] or
                  "not active" in r["error"]["desc"],
                  "block-job-cancel %s: %r" % (job, r))
        ev = job_end(m, job)
        if ev["event"] == "BLOCK_JOB_CANCELLED":
            check(cancel, "job %s cancelled: %r" % (job, ev))
            count("push-cancelled")
            # A cancelled incremental left its bitmap as it was (its
            # chunks are copied again next time); a cancelled full one
            # leaves no chain.
            if d.name not in chain:
                m.command("block-dirty-bitmap-remove", {"node": d.name,
                                                        "name": bm})
            continue
        check("error" not in ev["data"], "job %s failed: %r" % (job, ev))
        with open(target, "rb") as f:
            got = f.read()
        if got != frozen:
            bad = next((i for i in range(min(len(got), len(frozen)))
                        if got[i] != frozen[i]), min(len(got), len(frozen)))
            raise AssertionError("%s (%s, %s): target differs from the "
                                 "model at the job's start at byte %d (%d "
                                 "bytes, want %d)" % (job, args["sync"],
                                                      d.name, bad, len(got),
                                                      len(frozen)))
        count("verified", len(frozen))
        count("pushes-verified")
        if d.name in chain:
            count("pushes-incremental")
        chain[d.name] = bm
        time.sleep(0.05)
    for node, bm in chain.items():
        m.command("block-dirty-bitmap-remove", {"node": node, "name": bm})
    m.close()


nb_model = bytearray(NB_SIZE)   # what the backend's disk holds


def nbd_node(end):
    """blockdev-add driver=nbd of the backend's disk, I/O through our
    export and a pull backup of it, blockdev-del, then its contents
    read straight from the backend."""
    m = QMP(qsock)
    rnd = random.Random()
    n = 0
    while time.time() < end and not stop.is_set():
        n += 1
        m.command("blockdev-add", {"node-name": "nb", "driver": "nbd",
                                   "server": {"type": "unix",
                                              "path": backend},
                                   "export": ""})
        h = nbd_open(uri(sock, "nb"))
        verify(h, nb_model, "nb")

        def scribble(k):
            for _ in range(k):
                off = rnd.randrange(0, NB_SIZE - 65536)
                data = os.urandom(rnd.randrange(1, 65536))
                h.pwrite(data, off)
                nb_model[off:off + len(data)] = data
                count("written", len(data))
        scribble(8)
        r = m.command("backup-begin", {"id": "nbk%d" % n,
                                       "disks": [{"node": "nb"}]})
        frozen = bytes(nb_model)
        scribble(8)             # copied before written, for the backup
        export = r["exports"][0]["export"]
        b = nbd_open(uri(sock, export))
        if n % 2:
            b.aio_pread(VANISH_BUF_1M, 0)      # vanishes with it
            del b
            count("nbd-vanished")
            b = nbd_open(uri(sock, export))
        verify(b, frozen, export)
        b.shutdown()
        del b
        m.command("backup-end", {"id": "nbk%d" % n})
        verify(h, nb_model, "nb")
        h.flush()
        h.shutdown()
        del h
        for _ in range(200):
            r = m.cmd("blockdev-del", {"node-name": "nb"})
            if "return" in r:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("blockdev-del nb: %r" % r)
        direct = nbd_open(uri(backend))
        verify(direct, nb_model, "the nbd node's backend")
        direct.shutdown()
        count("nbd-node-rounds")
        time.sleep(0.1)
    m.close()


def check_disks():
    for d in disks:
        h = nbd_open(uri(sock, d.name))
        verify(h, d.model, d.name)
        h.shutdown()
        with open(d.path, "rb") as f:
            check(f.read() == d.model, "%s: file differs from its model"
                  % d.name)
        count("verified", len(d.model))


def state_is_clean():
    with QMP(qsock) as m:
        check(m.command("query-backups") == [], "backups left")
        check(m.command("query-jobs") == [], "jobs left")
        left = [c["name"] for c in m.command("query-checkpoints")]
        check(left == [], "checkpoints left: %r" % left)
        for node in names:
            check(bitmaps(m, node) == [], "bitmaps left on %s: %r"
                  % (node, bitmaps(m, node)))


def fmt(s):
    return "fds %d threads %d rss %d KiB" % s


# A hang shows where every thread is, before soak.sh's timeout.
faulthandler.dump_traceback_later(seconds + 60, exit=True)
start = sample()
client_rss0 = own_rss()
print("start: %s (soak.py rss %d KiB)" % (fmt(start), client_rss0),
      flush=True)
t0 = time.time()
deadline = t0 + seconds
epoch = 0
warmup_end = t0 + min(WARMUP, seconds / 2)
baseline = None
peak_rss = 0
while not stop.is_set():
    epoch += 1
    end = min(deadline, time.time() + EPOCH)
    ts = [thread(writer, d, end) for d in disks]
    ts += [thread(backups, end), thread(churn, end), thread(hotplug, end),
           thread(chaos, end), thread(push, end)]
    if backend:
        ts.append(thread(nbd_node, end))
    for t in ts:
        t.join()
    if stop.is_set():
        break
    check_disks()
    state_is_clean()
    s = settled()
    print("epoch %d at %.0f s: %s, %d rounds, %d bytes verified "
          "(soak.py rss %d KiB)"
          % (epoch, time.time() - t0, fmt(s), stats["rounds"],
             stats["verified"], own_rss()), flush=True)
    # The client's own leak would end the run by the OOM killer.
    check(own_rss() < client_rss0 + MARGIN_CLIENT_RSS_KIB,
          "soak.py itself grew from %d to %d KiB" % (client_rss0, own_rss()))
    if baseline is None or time.time() <= warmup_end + 1:
        baseline = s
        peak_rss = max(peak_rss, s[2])
        print("  (warm-up)", flush=True)
    if time.time() >= deadline - 1:
        break

if errors:
    for e in errors:
        print(e, file=sys.stderr)
    sys.exit("soak: FAIL")
print("baseline (after warm-up): %s, highest warm-up rss %d KiB"
      % (fmt(baseline), peak_rss))
print("end: %s" % fmt(s))
print(" ".join("%s=%d" % kv for kv in sorted(stats.items())))
print("rounds %d, bytes verified %d (%.1f GiB), %.0f s" %
      (stats["rounds"], stats["verified"], stats["verified"] / 2**30,
       time.time() - t0))
grown = []
if s[0] > baseline[0] + MARGIN_FDS:
    grown.append("descriptors %d -> %d" % (baseline[0], s[0]))
if s[1] > baseline[1] + MARGIN_THREADS:
    grown.append("threads %d -> %d" % (baseline[1], s[1]))
if s[2] > peak_rss + MARGIN_RSS_KIB:
    grown.append("RSS %d -> %d KiB (margin %d)" % (peak_rss, s[2],
                                                   MARGIN_RSS_KIB))
if s is baseline:
    grown.append("no epoch after the warm-up: nothing to compare "
                 "(run at least %d s)" % (2 * EPOCH + 10))
if grown:
    sys.exit("soak: FAIL: " + "; ".join(grown))
print("soak: PASS")
