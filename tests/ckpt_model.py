# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# Models for the bitmap, checkpoint, transaction and persistence tests
# (test-bitmaps*.sh, test-checkpoints*.sh, test-transaction*.sh,
# test-persist*.sh, test-sha256-qsd.sh), and the checks of what the
# product reports against them.
#
# Bitmap: a dirty bitmap as QEMU 7.2 defines it (one bit per chunk of
# GRANULARITY bytes, sha256 of the bits packed LSB first into 64-bit
# little-endian words), with the byte count of docs/qmp-reference.md
# (query-named-block-nodes).
# Chain: libvirt-style checkpoints over a write log: "bytes changed
# since K" recomputed from the log, independent of how the product
# stores it.
#
# Built on testlib.py: "from ckpt_model import *" gives its helpers
# too.  Python 3 standard library only.

import hashlib
import json

from testlib import *


# ---------------------------------------------------------------------
# Bitmap model

class Bitmap:
    def __init__(self, size, granularity=CHUNK, recording=True,
                 persistent=False, busy=False):
        self.size = size
        self.granularity = granularity
        self.recording = recording
        self.persistent = persistent
        self.busy = busy
        self.inconsistent = False
        self.bits = set()

    @property
    def nbits(self):
        return (self.size + self.granularity - 1) // self.granularity

    def chunks(self, offset, length):
        """The chunk indexes that [offset, offset+length) touches."""
        if length <= 0:
            return range(0)
        first = offset // self.granularity
        last = min(offset + length - 1, self.size - 1) // self.granularity
        return range(first, last + 1)

    def mark(self, offset, length, force=False):
        if self.recording or force:
            self.bits.update(self.chunks(offset, length))

    def clear(self):
        self.bits = set()

    def merge(self, other):
        """self |= other, granularities may differ (QEMU's rule: every
        chunk of self that a dirty chunk of other overlaps)."""
        if other.granularity == self.granularity:
            self.bits |= {b for b in other.bits if b < self.nbits}
            return
        for b in other.bits:
            start = b * other.granularity
            end = min(start + other.granularity, other.size)
            self.mark(start, end - start, force=True)

    def chunk_bytes(self, i):
        return min(self.granularity, self.size - i * self.granularity)

    def count(self, clip=True):
        """Dirty bytes; CLIP: the last chunk counts only up to the disk
        size (a checkpoint's size); else granules x granularity
        (bitmap-info's count, as qemu-storage-daemon 7.2 reports it)."""
        if clip:
            return sum(self.chunk_bytes(i) for i in self.bits)
        return len(self.bits) * self.granularity

    def raw(self):
        words = (self.nbits + 63) // 64
        data = bytearray(words * 8)
        for i in self.bits:
            data[i // 8] |= 1 << (i % 8)
        return bytes(data)

    def sha256(self):
        return hashlib.sha256(self.raw()).hexdigest()

    def extents(self):
        """Dirty byte ranges [(start, end)], merged, clipped to size."""
        out = []
        for i in sorted(self.bits):
            s = i * self.granularity
            e = min(s + self.granularity, self.size)
            if out and out[-1][1] == s:
                out[-1] = (out[-1][0], e)
            else:
                out.append((s, e))
        return out

    def copy(self):
        b = Bitmap(self.size, self.granularity, self.recording,
                   self.persistent, self.busy)
        b.inconsistent = self.inconsistent
        b.bits = set(self.bits)
        return b

    def info(self, name, clip=False):
        """The bitmap-info object the product must report."""
        return {"name": name, "granularity": self.granularity,
                "count": 0 if self.inconsistent else self.count(clip),
                "recording": self.recording and not self.inconsistent,
                "persistent": self.persistent, "busy": self.busy,
                "inconsistent": self.inconsistent}


class Node:
    """The bitmaps of one node, newest first as QEMU lists them."""

    def __init__(self, name, size):
        self.name = name
        self.size = size
        self.bitmaps = []       # [(name, Bitmap)], newest first

    def get(self, name):
        for n, b in self.bitmaps:
            if n == name:
                return b
        fail("model: no bitmap %s on %s" % (name, self.name))

    def has(self, name):
        return any(n == name for n, _ in self.bitmaps)

    def add(self, name, **kw):
        check(not self.has(name), "model: duplicate %s" % name)
        b = Bitmap(self.size, **kw)
        self.bitmaps.insert(0, (name, b))
        return b

    def remove(self, name):
        self.bitmaps = [(n, b) for n, b in self.bitmaps if n != name]

    def write(self, offset, length):
        for _, b in self.bitmaps:
            b.mark(offset, length)


# ---------------------------------------------------------------------
# The product's bitmaps against the model

FIELDS = ("name", "granularity", "count", "recording", "persistent", "busy")


def check_node(m, model, what="", clip=False, order=True, fields=FIELDS,
               inconsistent=True):
    """Every bitmap of MODEL's node as the product reports it: the same
    names (in the same order when ORDER), fields and sha256."""
    got = bitmap_infos(m, model.name)
    exp = [b.info(n, clip) for n, b in model.bitmaps]
    gn = [g["name"] for g in got]
    en = [e["name"] for e in exp]
    if order:
        check(gn == en, "%s: bitmaps of %s: got %s, expected %s"
              % (what, model.name, gn, en))
    else:
        check(sorted(gn) == sorted(en), "%s: bitmaps of %s: got %s, "
              "expected %s" % (what, model.name, gn, en))
    byname = {g["name"]: g for g in got}
    for e in exp:
        g = byname[e["name"]]
        flds = list(fields) + (["inconsistent"] if inconsistent else [])
        for f in flds:
            check(g.get(f) == e[f], "%s: %s/%s field %s: got %r, expected "
                  "%r (full: %r)" % (what, model.name, e["name"], f,
                                     g.get(f), e[f], g))
        b = model.get(e["name"])
        h = sha(m, model.name, e["name"])
        check(h == b.sha256(), "%s: %s/%s sha256 %s, expected %s (dirty "
              "chunks %s)" % (what, model.name, e["name"], h, b.sha256(),
                              sorted(b.bits)))


# ---------------------------------------------------------------------
# Checkpoint chain model over a write log

class Chain:
    """Checkpoints as libvirt sees them, plus the write log.

    log: [("w", node, offset, length) | ("c", name)]; "changed since K
    on disk D" = the chunks of D written after K was created (64 KiB
    chunks, the last one clipped).  Deleting a checkpoint changes
    nothing for the others.  Each checkpoint's own bitmap ("segment")
    is modelled too, as DESIGN.md keeps it: the changes from K to the
    next checkpoint on that disk; deleting K merges its segment into
    the previous one on the disk.
    """

    def __init__(self, sizes, persistent=True):
        self.sizes = dict(sizes)        # node -> size
        self.persistent = persistent
        self.log = []
        self.order = []                 # live checkpoint names, oldest first
        self.info = {}                  # name -> {parent, disks, description}
        self.current = None
        self.segments = {}              # (name, node) -> Bitmap
        self.plain = {}                 # (name, node) -> Bitmap left by
                                        # metadata-only deletes

    def write(self, node, offset, length):
        self.log.append(("w", node, offset, length))
        for (name, n), b in list(self.segments.items()):
            if n == node:
                b.mark(offset, length)
        for (name, n), b in self.plain.items():
            if n == node:
                b.mark(offset, length)

    def on_disk(self, node):
        return [c for c in self.order if node in self.info[c]["disks"]]

    def create(self, name, disks=None, description=None, pending=False):
        """PENDING: made by backup-begin, until backup-end (kept)."""
        disks = list(disks) if disks is not None else sorted(self.sizes)
        self.log.append(("c", name))
        self.info[name] = {"parent": self.current, "disks": disks,
                           "description": description, "pending": pending}
        for d in disks:
            prev = self.on_disk(d)
            if prev:
                self.segments[(prev[-1], d)].recording = False
            self.segments[(name, d)] = Bitmap(self.sizes[d], CHUNK, True,
                                              self.persistent, busy=True)
        self.order.append(name)
        self.current = name

    def delete(self, name, metadata_only=False):
        info = self.info[name]
        for d in info["disks"]:
            chain = self.on_disk(d)
            i = chain.index(name)
            seg = self.segments.pop((name, d))
            if i > 0:
                prev = self.segments[(chain[i - 1], d)]
                prev.merge(seg)
                if seg.recording:
                    prev.recording = True
            if metadata_only:
                seg.busy = False
                self.plain[(name, d)] = seg
        for c in self.order:
            if self.info[c]["parent"] == name:
                self.info[c]["parent"] = info["parent"]
        if self.current == name:
            self.current = info["parent"]
        self.order.remove(name)
        del self.info[name]

    def kept(self, name):
        """Its backup ended with success."""
        self.info[name]["pending"] = False

    def descendants(self, name):
        out, frontier = [], [name]
        while frontier:
            p = frontier.pop()
            for c in self.order:
                if self.info[c]["parent"] == p:
                    out.append(c)
                    frontier.append(c)
        return [c for c in self.order if c in out]

    def children(self, name):
        return [c for c in self.order if self.info[c]["parent"] == name]

    def changed_since(self, name, node):
        """Bitmap of the chunks of NODE written since NAME was made,
        from the log alone."""
        b = Bitmap(self.sizes[node])
        seen = False
        for e in self.log:
            if e[0] == "c" and e[1] == name:
                seen = True
            elif seen and e[0] == "w" and e[1] == node:
                b.mark(e[2], e[3])
        check(seen, "model: %s never created" % name)
        return b

    def expected(self, size=True):
        """query-checkpoints as it must answer (size: with sizes)."""
        out = []
        for c in self.order:
            i = self.info[c]
            e = {"name": c, "children": self.children(c),
                 "current": c == self.current, "pending": i["pending"],
                 "disks": []}
            if i["parent"] is not None:
                e["parent"] = i["parent"]
            if i["description"] is not None:
                e["description"] = i["description"]
            for d in i["disks"]:
                dd = {"node": d, "bitmap": c}
                if size:
                    dd["size"] = self.changed_since(c, d).count()
                e["disks"].append(dd)
            out.append(e)
        return out


def strip_time(cks):
    out = []
    for c in cks:
        c = dict(c)
        check(isinstance(c.pop("creation-time", None), int),
              "creation-time missing or not an integer in %r" % c)
        out.append(c)
    return out


def check_checkpoints(m, chain, what="", **filters):
    """query-checkpoints (with FILTERS and size=True) against CHAIN."""
    args = dict(filters)
    args["size"] = True
    got = strip_time(m.command("query-checkpoints", args))
    exp = chain.expected()
    # Apply the filters to the expected list.
    if filters.get("roots"):
        exp = [e for e in exp if "parent" not in e]
    if "parent" in filters:
        p = filters["parent"]
        keep = (chain.descendants(p) if filters.get("descendants")
                else chain.children(p))
        exp = [e for e in exp if e["name"] in keep]
    lv, nl = filters.get("leaves"), filters.get("no-leaves")
    if lv and not nl:
        exp = [e for e in exp if not e["children"]]
    if nl and not lv:
        exp = [e for e in exp if e["children"]]
    if got != exp:
        fail("%s: query-checkpoints %r\n got: %s\n expected: %s"
             % (what, filters, json.dumps(got), json.dumps(exp)))
    return got


def check_chain_bitmaps(m, chain, what=""):
    """Each checkpoint's bitmap (and each plain bitmap left by a
    metadata-only delete) on each disk: flags, count and sha256 as the
    per-disk segment model says."""
    want = {}
    for (c, d), b in chain.segments.items():
        want[(c, d)] = b
    for (c, d), b in chain.plain.items():
        want[(c, d)] = b
    for node in chain.sizes:
        got = {g["name"]: g for g in bitmap_infos(m, node)}
        names = sorted(c for (c, d) in want if d == node)
        check(sorted(got) == names, "%s: bitmaps on %s: %s, expected %s"
              % (what, node, sorted(got), names))
        for c in names:
            b = want[(c, node)]
            e = b.info(c)
            for f in FIELDS:
                check(got[c][f] == e[f], "%s: %s/%s %s = %r, expected %r"
                      % (what, node, c, f, got[c][f], e[f]))
            h = sha(m, node, c)
            check(h == b.sha256(), "%s: %s/%s sha256 mismatch (expected "
                  "chunks %s)" % (what, node, c, sorted(b.bits)))
