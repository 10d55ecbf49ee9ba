#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# The kill -9 loop of crash-safety (test-crash-safety.sh,
# test-crash-power-cut.sh, bench/).
#
#     crash_loop.py FILTER TMP ROUNDS MODE [churn] [powercut] [report] [quit]
#
# Each round starts nbdkit (file plugin, the checkpoint filter, state=
# TMP/state, crash-safety=MODE) on the same disk and state, checks the
# state left by the previous round, then runs a writer (libnbd, many
# aio writes in flight, each logged before it is sent) and kills nbdkit
# with SIGKILL at a random instant.
#
# Every write fills its sectors with a tag (round, sequence number), so
# after the kill the disk itself says which sectors changed, in flight
# or not.  The check: every checkpoint's "changed since" (the block
# status of an incremental backup export from it) covers every chunk
# holding a sector written after that checkpoint was created, and no
# bitmap is inconsistent.  With "churn", checkpoint-create,
# checkpoint-delete and transactions (a checkpoint and a bitmap at one
# instant) run in a loop during the writes: after each kill every
# change is there whole or not at all (a checkpoint whose create was
# answered is there unless a delete of it was sent; a transaction's
# checkpoint and bitmap are both there or both gone), and still no
# bitmap is inconsistent.  Prints how many kills landed with writes in
# flight.
#
# "powercut": nbdkit runs under powercut-shim.so (POWERCUT_SHIM names
# it), and after each kill the state directory is replaced by what a
# power cut would have left of it: only what was fsync'd (powercut.py).
# The disk image keeps every write that reached it (the worst case for
# the bitmaps: a disk whose data survived while the state's did not).
# "quit": each round, once its checkpoint is made, nbdkit is stopped
# cleanly (quit) and started again before the writes: the kill then
# lands on state that a clean shutdown saved durably.
# "report": count what the checks find instead of failing on it (for
# crash-safety=process under a power cut, which promises nothing: it
# relies on the boot id, which a simulated cut does not change).
import os
import random
import signal
import struct
import subprocess
import sys
import threading
import time

import nbd

from testlib import check, connect, nbd_open, uri, bitmap_infos, fail
import powercut

FILTER, TMP, ROUNDS, MODE = sys.argv[1], sys.argv[2], int(sys.argv[3]), \
    sys.argv[4]
OPTS = set(sys.argv[5:])
check(OPTS <= {"churn", "powercut", "report", "quit"},
      "options: %r" % sys.argv[5:])
CHURN = "churn" in OPTS
POWERCUT = "powercut" in OPTS
REPORT = "report" in OPTS
QUIT = "quit" in OPTS
# The disk (TMP/disk.img, made by the caller): CRASH_DISK_MB, 16 MiB
# by default.  A larger one keeps first touches of clean chunks going
# longer into each round, where power mode syncs.
SIZE = int(os.environ.get("CRASH_DISK_MB", "16")) * 1024 * 1024
GRAN = 65536
SECTOR = 512
IMG = TMP + "/disk.img"
STATE = TMP + "/state"
SHADOW = TMP + "/shadow"
QMP = TMP + "/q.qmp"
SOCK = TMP + "/nbd.sock"
TAG = b"NCWR"
check(os.path.getsize(IMG) == SIZE, "%s is not %d bytes" % (IMG, SIZE))
seed = int(os.environ.get("CRASH_SEED", str(int(time.time()))))
rng = random.Random(seed)
print("crash_loop: seed %d, %d rounds, crash-safety=%s%s%s"
      % (seed, ROUNDS, MODE, ", with checkpoint churn" if CHURN else "",
         ", simulated power cuts" if POWERCUT else ""),
      flush=True)


def start():
    for p in (QMP, SOCK):
        if os.path.exists(p):
            os.unlink(p)
    log = open(TMP + "/nbdkit.log", "a")
    env = None
    if POWERCUT:
        os.makedirs(STATE, exist_ok=True)
        env = powercut.environ(os.environ["POWERCUT_SHIM"], STATE, SHADOW)
    p = subprocess.Popen(["nbdkit", "-f", "--exit-with-parent", "-U", SOCK,
                          "--filter=" + FILTER, "file", IMG, "node-name=d0",
                          "qmp=" + QMP, "state=" + STATE,
                          "crash-safety=" + MODE],
                         stderr=log, env=env)
    for _ in range(400):
        if os.path.exists(QMP) and os.path.exists(SOCK):
            return p
        if p.poll() is not None:
            fail("nbdkit exited at start-up: see %s/nbdkit.log" % TMP)
        time.sleep(0.025)
    fail("nbdkit did not start")


def sector_tags():
    """{sector: (round, seq)} of every tagged sector of the disk."""
    out = {}
    with open(IMG, "rb") as f:
        data = f.read()
    pos = data.find(TAG)
    while pos != -1:
        if pos % SECTOR == 0:
            r, s = struct.unpack_from("<II", data, pos + 4)
            out[pos // SECTOR] = (r, s)
        pos = data.find(TAG, pos + 1)
    return out


def unchanged_chunks(m, name):
    """Chunks that an incremental backup from checkpoint NAME reports
    unchanged, or None if it is refused (inconsistent)."""
    r = m.cmd("backup-begin", {"id": "v", "incremental": name})
    if "return" not in r:
        desc = r["error"]["desc"]
        check("inconsistent" in desc or "full" in desc,
              "an incremental from %s refused for another reason: %s"
              % (name, desc))
        return None
    exp = r["return"]["exports"][0]["export"]
    h = nbd_open(uri(SOCK, exp), base_allocation=True)
    ext = []
    off = 0
    while off < SIZE:
        got = []
        h.block_status(SIZE - off, off,
                       lambda ctx, o, e, err: got.extend(
                           zip(e[0::2], e[1::2])) or 0)
        for ln, fl in got:
            ext.append((off, ln, fl))
            off += ln
    h.shutdown()
    m.command("backup-end", {"id": "v"})
    clean = set()
    for o, ln, fl in ext:
        if fl & 3 == 1:             # HOLE without ZERO: unchanged
            clean.update(range((o + GRAN - 1) // GRAN, (o + ln) // GRAN))
    return clean


def problem(cond, msg, kind):
    """check(), or with "report" count (by KIND) and show the first few."""
    if cond:
        return True
    if not REPORT:
        fail(msg)
    stats["problems"] += 1
    stats["kinds"][kind] = stats["kinds"].get(kind, 0) + 1
    if stats["problems"] <= 5:
        print("crash_loop: found: " + msg, flush=True)
    return False


# checkpoints: name -> sequence number of the first write sent after it
# was created (writes before may legitimately be missing from it).
checkpoints = {}
deleting = set()        # checkpoint-delete sent (answered or not)
paired = {}             # checkpoint -> bitmap made in its transaction
seq = 0
stats = {"rounds": 0, "in_flight": 0, "writes": 0, "checked": 0,
         "inconsistent": 0, "leftover": 0, "problems": 0, "cut": 0,
         "dropped": {}, "kinds": {}}


def verify(m, rnd):
    tags = sector_tags()
    infos = {b["name"]: b for b in bitmap_infos(m, "d0")}
    listed = [c["name"] for c in m.command("query-checkpoints")]
    for name in listed:
        check(name in infos, "checkpoint %s has no bitmap: %r"
              % (name, sorted(infos)))
    for name, b in infos.items():
        if name in listed:
            continue
        # Only a transaction's bitmap, with its checkpoint.
        owner = [c for c, t in paired.items() if t == name]
        problem(owner and not b["inconsistent"], "round %d: bitmap %s is "
                "not a checkpoint's: %r (checkpoints %r)"
                % (rnd, name, b, listed), "left-over bitmap")
        problem(not owner or owner[0] in listed or owner[0] in deleting,
                "round %d: bitmap %s is there without its checkpoint: a "
                "transaction cut in half" % (rnd, name), "half a change")
        stats["leftover"] += 1
        m.command("block-dirty-bitmap-remove", {"node": "d0", "name": name})
    for c, t in paired.items():
        problem(c not in listed or t in infos or c in deleting,
                "round %d: checkpoint %s is there without bitmap %s: a "
                "transaction cut in half" % (rnd, c, t), "half a change")
    paired.clear()
    for name, first in sorted(checkpoints.items()):
        if name not in listed:
            problem(name in deleting, "round %d: checkpoint %s is gone, "
                    "though its creation was answered and its deletion "
                    "never asked (crash-safety=%s, seed %d)"
                    % (rnd, name, MODE, seed), "checkpoint lost")
            continue
        b = infos[name]
        problem(not b["inconsistent"], "round %d: checkpoint %s is "
                "inconsistent after a kill -9 under crash-safety=%s: %r"
                % (rnd, name, MODE, b), "inconsistent (detected)")
        clean = unchanged_chunks(m, name)
        if clean is None:
            problem(False, "round %d: incremental from %s refused"
                    % (rnd, name), "inconsistent (detected)")
            stats["inconsistent"] += 1
            continue
        missing = sorted({s * SECTOR // GRAN for s, (r, q) in tags.items()
                          if q >= first} & clean)
        if problem(not missing, "round %d: checkpoint %s misses written "
                   "chunks %r (crash-safety=%s, seed %d)"
                   % (rnd, name, missing[:20], MODE, seed),
                   "missed writes (silent)"):
            stats["checked"] += 1
    for name in set(checkpoints) - set(listed):
        del checkpoints[name]


def writer(h, state):
    """Many aio writes in flight until the connection dies."""
    global seq
    inflight = {}

    def done(cookie_seq, err):
        if err.value == 0:
            inflight.pop(cookie_seq, None)
        return 1

    try:
        while not state["stop"]:
            while len(inflight) < 32 and not state["stop"]:
                nsec = rng.choice((1, 8, 8, 64, 128))
                off = rng.randrange(SIZE // SECTOR - nsec) * SECTOR
                s = seq
                seq += 1
                buf = (TAG + struct.pack("<II", state["round"], s)
                       + b"\0" * (SECTOR - 12)) * nsec
                inflight[s] = (off, len(buf))     # logged before sending
                stats["writes"] += 1
                h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(buf)), off,
                             completion=lambda err, s=s: done(s, err))
            h.poll(1)
    except nbd.Error:
        pass
    state["inflight"] = len(inflight)


def churn_loop(m, state):
    """checkpoint-create, -delete and transactions while the writes
    run."""
    i = 0
    try:
        while not state["stop"]:
            name = "r%dc%d" % (state["round"], i)
            i += 1
            if i % 2:
                r = m.cmd("checkpoint-create", {"name": name})
            else:
                paired[name] = "t" + name
                r = m.cmd("transaction", {"actions": [
                    {"type": "checkpoint-create", "data": {"name": name}},
                    {"type": "block-dirty-bitmap-add",
                     "data": {"node": "d0", "name": "t" + name,
                              "persistent": True}}]})
            if "return" not in r:
                break
            # Writes numbered from here on were sent after it existed.
            checkpoints[name] = seq
            listed = [c["name"] for c in m.command("query-checkpoints")]
            if len(listed) > 3:
                deleting.add(listed[1])
                r = m.cmd("checkpoint-delete", {"name": listed[1]})
                if "return" not in r:
                    break
            time.sleep(rng.uniform(0, 0.02))
    except Exception:
        pass


for rnd in range(1, ROUNDS + 1):
    p = start()
    m = connect(QMP)
    verify(m, rnd)
    # A fresh checkpoint per round, the oldest ones deleted.
    name = "k%d" % rnd
    m.command("checkpoint-create", {"name": name})
    checkpoints[name] = seq
    listed = [c["name"] for c in m.command("query-checkpoints")]
    for old in listed[:-3]:
        deleting.add(old)
        m.command("checkpoint-delete", {"name": old})
    if QUIT:
        m.command("quit")
        p.wait()
        check(p.returncode == 0, "nbdkit's exit status after quit: %d"
              % p.returncode)
        p = start()
        m = connect(QMP)
    h = nbd.NBD()
    h.connect_uri(uri(SOCK))
    state = {"stop": False, "round": rnd, "inflight": 0}
    t = threading.Thread(target=writer, args=(h, state))
    t.start()
    c = None
    if CHURN:
        m2 = connect(QMP)
        c = threading.Thread(target=churn_loop, args=(m2, state))
        c.start()
    time.sleep(rng.uniform(0.05, 0.4))
    p.send_signal(signal.SIGKILL)
    p.wait()
    if POWERCUT:
        dropped = powercut.cut(STATE, SHADOW)
        stats["cut"] += bool(dropped)
        for name, why in dropped.items():
            kind = ("temporary" if name.startswith(".")
                    else name.split(".")[0]) + " " + why
            stats["dropped"][kind] = stats["dropped"].get(kind, 0) + 1
    state["stop"] = True
    t.join()
    if c:
        c.join()
    del h
    stats["rounds"] += 1
    if state["inflight"] > 0:
        stats["in_flight"] += 1

p = start()
m = connect(QMP)
verify(m, ROUNDS + 1)
m.command("quit")
p.wait()
check(p.returncode == 0, "nbdkit's exit status after quit: %d"
      % p.returncode)
print("crash_loop: %(rounds)d kills, %(in_flight)d with writes in flight, "
      "%(writes)d writes, %(checked)d checkpoint checks passed, "
      "%(leftover)d transactions' bitmaps checked and removed" % stats,
      flush=True)
if POWERCUT:
    print("crash_loop: %d of %d power cuts dropped something: %s"
          % (stats["cut"], stats["rounds"],
             ", ".join("%s %d" % kv for kv in sorted(stats["dropped"].items()))
             or "nothing"), flush=True)
if REPORT:
    print("crash_loop: %d problems found (reported, not failed): %s"
          % (stats["problems"],
             ", ".join("%s %d" % kv for kv in sorted(stats["kinds"].items()))
             or "none"), flush=True)
check(stats["in_flight"] > 0 or ROUNDS < 3,
      "no kill landed with writes in flight")
