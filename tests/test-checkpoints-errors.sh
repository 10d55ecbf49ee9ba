#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# Checkpoint errors (docs/qmp-reference.md, checkpoint-*): unknown checkpoint,
# duplicate name, a name a plain bitmap already holds, unknown disk,
# a disk named twice, bad names and arguments, bad query filters;
# each refused command changes nothing (query-named-block-nodes,
# query-checkpoints with sizes and every bitmap's sha256 before =
# after).  A backup with incremental=K holds K: checkpoint-delete K
# (alone, with children, or as a descendant) fails, and works once
# backup-end has run; K's size stays exact throughout.
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e
set -x

requires_built "$PLUGIN" "$FILTER"
requires nbdkit --version
requires qemu-io --version
tmpdir

SA=$(( 2 * 1024 * 1024 ))
SB=$(( 1024 * 1024 + 512 ))
truncate -s $SA "$tmp/a.img"
truncate -s $SB "$tmp/b.img"
start_nbdkit q --filter="$FILTER" "$PLUGIN" disk=sda:"$tmp/a.img" \
             disk=sdb:"$tmp/b.img" qmp="$tmp/q.qmp" state="$tmp/state"

$PY - "$tmp" "$sock" $SA $SB <<'EOF'
from ckpt_model import *

tmp, nsock, SA, SB = script_args(str, str, int, int)
SIZES = {"sda": SA, "sdb": SB}
m = connect(tmp + "/q.qmp")
chain = Chain(SIZES)
E = expect_error

def write(node, *ops):
    qio(uri(nsock, node), *[qio_cmd(*o) for o in ops])
    for op, off, ln in ops:
        chain.write(node, off, ln)

write("sda", ("write", 0, 65536))
m.command("checkpoint-create", {"name": "c1"})
chain.create("c1")
write("sda", ("write", 65536 * 3, 100))
write("sdb", ("zero", SIZES["sdb"] - 1, 1))
m.command("checkpoint-create", {"name": "c2", "disks": ["sda"]})
chain.create("c2", ["sda"])
write("sda", ("discard", 65536 * 7, 65536))
m.command("block-dirty-bitmap-add", {"node": "sdb", "name": "plain"})
write("sdb", ("write", 4096, 4096))
before = snapshot(m, SIZES)

def unchanged(what):
    after = snapshot(m, SIZES)
    check(after == before, "%s changed the state:\n before %s\n after %s"
          % (what, before, after))
    check_checkpoints(m, chain, what)

@section("checkpoint-create errors")
def _():
    E(m, "checkpoint-create", {"name": "c1"}, contains=["c1", "exists"])
    E(m, "checkpoint-create", {"name": "c2", "disks": ["sdb"]},
      contains="c2")
    # A plain bitmap already has the name on sdb.
    E(m, "checkpoint-create", {"name": "plain"},
      "Bitmap already exists: plain")
    E(m, "checkpoint-create", {"name": "x", "disks": ["nope"]},
      "Cannot find device='nope' nor node-name='nope'")
    E(m, "checkpoint-create", {"name": "x", "disks": ["sda", "nope"]},
      "Cannot find device='nope' nor node-name='nope'")
    E(m, "checkpoint-create", {"name": "x", "disks": ["sda", "sdb", "sda"]},
      contains=["sda", "twice"])
    E(m, "checkpoint-create", {"name": "x", "disks": []})
    E(m, "checkpoint-create", {"name": "x", "disks": [1]})
    E(m, "checkpoint-create", {"name": "x", "disks": "sda"})
    E(m, "checkpoint-create", {"name": ""})
    E(m, "checkpoint-create", {"name": "n" * 1024})
    E(m, "checkpoint-create", {}, "Parameter 'name' is missing")
    E(m, "checkpoint-create", {"name": "x", "bogus": 1},
      "Parameter 'bogus' is unexpected")
    E(m, "checkpoint-create", {"name": "x", "description": 3},
      "Invalid parameter type for 'description', expected: string")
    unchanged("refused checkpoint-create")

@section("checkpoint-delete and query errors")
def _():
    E(m, "checkpoint-delete", {"name": "nope"}, contains="nope")
    E(m, "checkpoint-delete", {"name": "plain"}, contains="plain")
    E(m, "checkpoint-delete", {"name": "c1", "children": True,
                               "children-only": True})
    E(m, "checkpoint-delete", {}, "Parameter 'name' is missing")
    E(m, "checkpoint-delete", {"name": "c1", "force": True},
      "Parameter 'force' is unexpected")
    E(m, "query-checkpoints", {"parent": "nope"}, contains="nope")
    E(m, "query-checkpoints", {"size": "yes"},
      "Invalid parameter type for 'size', expected: boolean")
    E(m, "query-checkpoints", {"bogus": True},
      "Parameter 'bogus' is unexpected")
    unchanged("refused checkpoint-delete/query")

@section("a backup holds its incremental base")
def _():
    global before
    r = m.command("backup-begin", {"id": "bk", "incremental": "c1"})
    check(r["id"] == "bk", r)
    # The base and its bitmaps are busy now; sizes unchanged.
    inuse = snapshot(m, SIZES)
    for what, args in (("c1", {"name": "c1"}),
                       ("c1 with children", {"name": "c1", "children": True}),
                       ("c1 metadata-only", {"name": "c1",
                                             "metadata-only": True})):
        E(m, "checkpoint-delete", args)
        check(snapshot(m, SIZES) == inuse, "refused delete of %s changed "
              "the state" % what)
    check_checkpoints(m, chain, "backup running")
    # Writes during the backup still count for c1 and c2.
    write("sda", ("write", 65536 * 20, 65536))
    write("sdb", ("write", 0, 1))
    check_checkpoints(m, chain, "writes during the backup")
    m.command("backup-end", {"id": "bk"})
    check(m.command("query-backups") == [], "backup gone")
    m.command("checkpoint-delete", {"name": "c1"})
    chain.delete("c1")
    check_checkpoints(m, chain, "c1 deleted after backup-end")
    left = {b["name"] for b in bitmap_infos(m, "sdb")}
    check(left == {"plain"},
          "sdb keeps only its plain bitmap: %r" % left)

@section("a backup on c3 blocks deleting c3 as a descendant of c2")
def _():
    m.command("checkpoint-create", {"name": "c3"})
    chain.create("c3")
    write("sda", ("write", 65536 * 9, 1))
    write("sdb", ("write", 65536 * 2, 1))
    check(chain.order == ["c2", "c3"], chain.order)
    m.command("backup-begin", {"id": "bk2", "incremental": "c3"})
    held = snapshot(m, SIZES)
    E(m, "checkpoint-delete", {"name": "c3"})
    E(m, "checkpoint-delete", {"name": "c2", "children": True})
    E(m, "checkpoint-delete", {"name": "c2", "children-only": True})
    check(snapshot(m, SIZES) == held, "refused deletes changed the state")
    check_checkpoints(m, chain, "c3 held")
    # c2 itself is not held: deleting it keeps c3 exact.
    m.command("checkpoint-delete", {"name": "c2"})
    chain.delete("c2")
    check_checkpoints(m, chain, "c2 deleted during c3's backup")
    m.command("backup-end", {"id": "bk2"})
    write("sda", ("write", 65536 * 11, 1))
    check_checkpoints(m, chain, "after backup-end")
    m.command("checkpoint-delete", {"name": "c3"})
    chain.delete("c3")
    check(m.command("query-checkpoints") == [], "none left")

finish()
EOF
