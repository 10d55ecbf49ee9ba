#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# Atomicity against concurrent writes (docs/qmp-reference.md, transaction:
# every action at one instant, no guest write lands between them; the same for checkpoint-create over several disks).
#
# Two writer threads (libnbd) write without pause while the monitor
# runs transactions and checkpoint-creates over sda and sdb.  Writer w
# numbers its writes 0, 1, 2, ...: write i goes to disk (sda, sdb)[i %
# 2], chunk BASE_w + i // 2, a chunk no other write touches.  For each
# cut (a transaction or checkpoint-create), each writer has one index
# N_w such that its writes before N_w are in no bitmap the cut started
# and its writes from N_w on are in all of them, on both disks.  The
# bitmaps' sha256 must equal the model's for one N_w per writer within
# the window [writes completed before the command was sent, writes
# started when it returned]; a checkpoint's bitmap, once the next one
# exists, must hold exactly its writer's writes between the two cuts,
# and query-checkpoints' sizes must match.
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e
set -x

requires_built "$PLUGIN" "$FILTER"
requires nbdkit --version
requires $PY -c 'import nbd'
tmpdir

truncate -s 4G "$tmp/a.img" "$tmp/b.img"
start_nbdkit q --filter="$FILTER" "$PLUGIN" disk=sda:"$tmp/a.img" \
             disk=sdb:"$tmp/b.img" qmp="$tmp/q.qmp" state="$tmp/state"

$PY - "$tmp" "$sock" <<'EOF'
import hashlib, threading, time
from testlib import *

tmp, nsock = script_args(str, str)
SIZE = 4 << 30
DISKS = ("sda", "sdb")
BASES = (0, 32768)              # chunk ranges of the two writers
LIMIT = 2 * 32768               # writes per writer before overlapping
m = connect(tmp + "/q.qmp")

BUDGET = 8000                   # writes per writer and round (7 rounds)
DEADLINE = time.time() + 60     # fail, never hang

class Writer(threading.Thread):
    def __init__(self, w, first):
        super().__init__()
        self.w = w
        self.h = {}
        for d in DISKS:
            self.h[d] = nbd_open(uri(nsock, d))
        self.started = first    # writes issued
        self.completed = first  # writes acknowledged
        self.limit = first + BUDGET
        self.stop = threading.Event()
        self.error = None
        self.buf = bytes([0x40 + w]) * 4096

    def run(self):
        try:
            while not self.stop.is_set():
                i = self.started
                if i >= self.limit:     # this round's budget is spent
                    time.sleep(0.001)
                    continue
                check(i < LIMIT, "out of chunks")
                self.started += 1
                off = (BASES[self.w] + i // 2) * CHUNK + (i * 512) % 61440
                self.h[DISKS[i % 2]].pwrite(self.buf, off)
                self.completed += 1
        except Exception as e:
            self.error = e

def wait_for(ws, cond, what):
    while not cond():
        for w in ws:
            if w.error is not None or not w.is_alive():
                for x in ws:
                    x.stop.set()
                fail("writer %d stopped (%s) while waiting for %s"
                     % (w.w, w.error, what))
        check(time.time() < DEADLINE, "timed out waiting for %s" % what)
        time.sleep(0.001)

def run_writers(fn, min_writes=150):
    """Run FN while both writers write; returns FN's result, each
    writer's (completed-before, started-after) window, the writers."""
    ws = [Writer(0, offsets[0]), Writer(1, offsets[1])]
    for w in ws:
        w.start()
    wait_for(ws, lambda: all(w.completed - offsets[w.w] >= min_writes
                             for w in ws), "the first writes")
    lo = [w.completed for w in ws]
    r = fn()
    hi = [w.started for w in ws]
    end = [min(w.completed + min_writes, w.limit) for w in ws]
    wait_for(ws, lambda: all(w.completed >= e for w, e in zip(ws, end)),
             "the writes after the command")
    for w in ws:
        w.stop.set()
    for w in ws:
        w.join()
        check(w.error is None, "writer %d: %s" % (w.w, w.error))
        for h in w.h.values():
            h.shutdown()
        offsets[w.w] = w.completed
    return r, list(zip(lo, hi)), ws

offsets = [0, 0]
total = lambda: list(offsets)

class RangeBitmap:
    """A 64 KiB bitmap of the whole disk given as chunk ranges, built
    as one integer (bit i = chunk i; little-endian bytes are QEMU's
    layout), so that thousands of candidates hash quickly."""
    def __init__(self, ranges):
        self.v = 0
        self.n = 0
        for a, b in ranges:
            if b > a:
                self.v |= ((1 << (b - a)) - 1) << a
                self.n += b - a

    def sha256(self):
        return hashlib.sha256(self.v.to_bytes(SIZE // CHUNK // 8,
                                              "little")).hexdigest()

    def count(self):
        return self.n * CHUNK

def chunk_range(w, disk, lo, hi):
    """Writer w's writes [lo, hi) on DISK hit a contiguous chunk range."""
    d = DISKS.index(disk)
    first = lambda i: (i - d + 1) // 2     # writes of parity d below i
    return (BASES[w] + first(lo), BASES[w] + first(hi))

def bitmap_of(disk, ranges):
    """The bitmap of DISK holding, per writer w, its writes
    [ranges[w][0], ranges[w][1])."""
    return RangeBitmap([chunk_range(w, disk, *ranges[w]) for w in (0, 1)])

def solve(name, window, end):
    """The cut (N_0, N_1), each in its window, for which bitmap NAME on
    sda and sdb is writer w's writes [N_w, end_w); fails if there is
    none.  The counts first narrow the candidates (the dirty chunks of
    both disks add up to (end_0 - N_0) + (end_1 - N_1)), then sha256
    decides."""
    got = server_shas(name)
    cnt = {d: [b for b in bitmap_infos(m, d) if b["name"] == name][0]
           ["count"] // CHUNK for d in DISKS}
    k = end[0] + end[1] - cnt["sda"] - cnt["sdb"]
    sols = []
    for n0 in range(window[0][0], window[0][1] + 1):
        n1 = k - n0
        if not window[1][0] <= n1 <= window[1][1]:
            continue
        if all(bitmap_of(d, [(n0, end[0]), (n1, end[1])]).sha256() == got[d]
               for d in DISKS):
            sols.append((n0, n1))
    check(sols, "%s: no single cut per writer explains the bitmaps "
          "(windows %s, ends %s, counts %s): the actions did not run at "
          "one instant" % (name, window, end, cnt))
    print("%s: cut %s (windows %s)" % (name, sols[0], window), flush=True)
    return sols[0]

def server_shas(name):
    return {d: sha(m, d, name) for d in DISKS}

def suffix_matches(name, end):
    got = server_shas(name)
    def f(cut):
        return all(bitmap_of(d, [(cut[w], end[w]) for w in (0, 1)]).sha256()
                   == got[d] for d in DISKS)
    return f

def counts(name):
    return {b["name"]: b["count"] for d in DISKS for b in bitmap_infos(m, d)
            if b["name"] == name}

cuts = {}

@section("transaction adding a bitmap on each disk")
def _():
    acts = [{"type": "block-dirty-bitmap-add",
             "data": {"node": d, "name": "t1"}} for d in DISKS]
    _, win, ws = run_writers(lambda: m.command("transaction",
                                               {"actions": acts}))
    cuts["t1"] = solve("t1", win, total())

@section("checkpoint-create over both disks")
def _():
    _, win, ws = run_writers(lambda: m.command("checkpoint-create",
                                               {"name": "k1"}))
    cuts["k1"] = solve("k1", win, total())
    # t1 still records everything since its own cut.
    check(suffix_matches("t1", total())(cuts["t1"]), "t1 after k1")

@section("transaction: checkpoint-create + add + clear")
def _():
    acts = [{"type": "checkpoint-create", "data": {"name": "k2"}}]
    for d in DISKS:
        acts.append({"type": "block-dirty-bitmap-add",
                     "data": {"node": d, "name": "t2", "granularity": 4096}})
        acts.append({"type": "block-dirty-bitmap-clear",
                     "data": {"node": d, "name": "t1"}})
    _, win, ws = run_writers(lambda: m.command("transaction",
                                               {"actions": acts}))
    end = total()
    cuts["k2"] = solve("k2", win, end)
    # The cleared t1 and the new t2 (other granularity: compared as
    # 64 KiB chunks through a merge) start at the same instant.
    check(suffix_matches("t1", end)(cuts["k2"]), "t1 cleared at k2's cut")
    for d in DISKS:
        m.command("block-dirty-bitmap-add", {"node": d, "name": "t2x",
                                             "disabled": True})
        m.command("block-dirty-bitmap-merge", {"node": d, "target": "t2x",
                                               "bitmaps": ["t2"]})
    check(suffix_matches("t2x", end)(cuts["k2"]), "t2 at k2's cut")
    # k1's bitmap stopped at k2's cut: exactly the writes in between.
    got = server_shas("k1")
    for d in DISKS:
        exp = bitmap_of(d, [(cuts["k1"][w], cuts["k2"][w]) for w in (0, 1)])
        check(got[d] == exp.sha256(), "k1 on %s is not [k1 cut, k2 cut)" % d)

@section("checkpoint-create again; sizes")
def _():
    _, win, ws = run_writers(lambda: m.command("checkpoint-create",
                                               {"name": "k3"}))
    end = total()
    cuts["k3"] = solve("k3", win, end)
    got = server_shas("k2")
    for d in DISKS:
        exp = bitmap_of(d, [(cuts["k2"][w], cuts["k3"][w]) for w in (0, 1)])
        check(got[d] == exp.sha256(), "k2 on %s is not [k2 cut, k3 cut)" % d)
    cks = {c["name"]: c for c in m.command("query-checkpoints",
                                           {"size": True})}
    for k in ("k1", "k2", "k3"):
        for dd in cks[k]["disks"]:
            exp = bitmap_of(dd["node"], [(cuts[k][w], end[w])
                                         for w in (0, 1)]).count()
            check(dd["size"] == exp, "size of %s on %s: %d, expected %d"
                  % (k, dd["node"], dd["size"], exp))

@section("deleting k2 during writes keeps k1 exact")
def _():
    _, win, ws = run_writers(lambda: m.command("checkpoint-delete",
                                               {"name": "k2"}))
    end = total()
    got = server_shas("k1")
    for d in DISKS:
        exp = bitmap_of(d, [(cuts["k1"][w], cuts["k3"][w]) for w in (0, 1)])
        check(got[d] == exp.sha256(), "k1 on %s after deleting k2" % d)
    check(suffix_matches("k3", end)(cuts["k3"]), "k3 after deleting k2")
    m.command("checkpoint-delete", {"name": "k3"})
    # k1 records again: everything since its cut.
    _, win, ws = run_writers(lambda: None, 50)
    check(suffix_matches("k1", total())(cuts["k1"]),
          "k1 records again after deleting k3")

@section("backup-begin with a new checkpoint: one instant for both")
def _():
    r, win, ws = run_writers(lambda: m.command(
        "backup-begin", {"id": "bb", "checkpoint": {"name": "k9"}}))
    cut = solve("k9", win, total())
    exports = {e["node"]: e["export"] for e in r["exports"]}
    hs = {}
    for d in DISKS:
        hs[d] = nbd_open(uri(nsock, exports[d]))
    # In the frozen exports, writer w's write i is there iff i < N_w.
    for w in (0, 1):
        lo, hi = win[w]
        for i in range(max(0, lo - 20), hi + 20):
            off = (BASES[w] + i // 2) * CHUNK + (i * 512) % 61440
            data = hs[DISKS[i % 2]].pread(4096, off)
            there = data == bytes([0x40 + w]) * 4096
            check(there == (i < cut[w]) or (not there and data == bytes(4096)),
                  "write %d of writer %d: garbage in the backup" % (i, w))
            check(there == (i < cut[w]),
                  "writer %d write %d is %s the frozen export but the "
                  "checkpoint k9 was made at write %d: not one instant"
                  % (w, i, "in" if there else "not in", cut[w]))
    for h in hs.values():
        h.shutdown()
    m.command("backup-end", {"id": "bb"})

print("writes per writer:", offsets)
finish()
EOF
