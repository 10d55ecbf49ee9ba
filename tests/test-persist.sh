#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# Persistence across clean shutdowns (docs/qmp-reference.md, quit: state saved;
# DESIGN.md point 5): persistent bitmaps and checkpoints survive quit
# and SIGTERM with the same order, flags, counts and sha256 (transient
# bitmaps vanish), query-checkpoints answers the same (creation times,
# descriptions, parents, current, sizes), recording goes on where it
# stopped (writes after the restart mark what the model says), and
# "changed since K" stays exact across several restarts.
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e
set -x

requires_built "$FILTER"
requires nbdkit --version
requires qemu-io --version
tmpdir

S=$(( 3 * 1024 * 1024 + 2560 ))
truncate -s $S "$tmp/d0.img"
args=(--filter="$FILTER" file "$tmp/d0.img" node-name=d0
      qmp="$tmp/q.qmp" state="$tmp/state")

# py STEP: run one step of the scenario below, its model kept in
# $tmp/model.pickle between the steps.
py ()
{
    $PY "$tmp/persist.py" "$1" "$tmp" "$sock" $S
}

cat > "$tmp/persist.py" <<'EOF'
import pickle
from ckpt_model import *

step, tmp, nsock, S = script_args(str, str, str, int)
PICKLE = tmp + "/model.pickle"
if step == "setup":
    d0 = Node("d0", S)
    chain = Chain({"d0": S})
    saved = None
else:
    with open(PICKLE, "rb") as f:
        d0, chain, saved = pickle.load(f)
m = connect(tmp + "/q.qmp")

def write(*ops):
    qio(uri(nsock), *[qio_cmd(*o) for o in ops])
    for op, off, ln in ops:
        d0.write(off, ln)
        chain.write("d0", off, ln)

def ckpt(name, description=None):
    args = {"name": name}
    if description:
        args["description"] = description
    m.command("checkpoint-create", args)
    chain.create(name, description=description)
    d0.add(name, persistent=True, busy=True)

def sync():
    """The checkpoints' bitmaps of the node model from the chain's."""
    for (c, _), b in chain.segments.items():
        d0.get(c).bits = set(b.bits)
        d0.get(c).recording = b.recording

def verify(what):
    sync()
    check_node(m, d0, what)
    check_checkpoints(m, chain, what)

def observed():
    return {"bitmaps": bitmap_infos(m, "d0"),
            "sha": {b["name"]: sha(m, "d0", b["name"])
                    for b in bitmap_infos(m, "d0")},
            "checkpoints": m.command("query-checkpoints", {"size": True})}

if step == "setup":
    m.command("block-dirty-bitmap-add", {"node": "d0", "name": "p1",
                                         "persistent": True})
    d0.add("p1", persistent=True)
    m.command("block-dirty-bitmap-add", {"node": "d0", "name": "p2",
                                         "persistent": True,
                                         "granularity": 512})
    d0.add("p2", persistent=True, granularity=512)
    m.command("block-dirty-bitmap-add", {"node": "d0", "name": "t1"})
    d0.add("t1")
    # Odd names survive too: 1023 bytes, slashes, dots, UTF-8, spaces.
    for odd in ("L" * 1023, "../x/y z", "\u00fc\u2603 \u65e5"):
        m.command("block-dirty-bitmap-add", {"node": "d0", "name": odd,
                                             "persistent": True,
                                             "granularity": 1 << 20})
        d0.add(odd, persistent=True, granularity=1 << 20)
    write(("write", 0, 65536), ("write", 100000, 10), ("zero", S - 100, 100))
    ckpt("k1", "first")
    write(("write", 65536 * 10 + 1, 70000), ("discard", 65536 * 20, 4096))
    m.command("block-dirty-bitmap-add", {"node": "d0", "name": "p3",
                                         "persistent": True,
                                         "granularity": 4096,
                                         "disabled": True})
    d0.add("p3", persistent=True, granularity=4096, recording=False)
    m.command("block-dirty-bitmap-merge", {"node": "d0", "target": "p3",
                                           "bitmaps": ["p1"]})
    d0.get("p3").merge(d0.get("p1"))
    m.command("block-dirty-bitmap-disable", {"node": "d0", "name": "p2"})
    d0.get("p2").recording = False
    ckpt("k2", "second \u2603\nline two")
    write(("write", S - 1, 1), ("write", 65536 * 30, 65536 * 3))
    m.command("block-dirty-bitmap-add", {"node": "d0", "name": "t2",
                                         "granularity": 1 << 20})
    d0.add("t2", granularity=1 << 20)
    write(("write", 4096, 1))
    verify("before the first shutdown")
elif step == "after-restart":
    # Transient bitmaps are gone, the rest is as it was.
    for t in ("t1", "t2"):
        if d0.has(t):
            d0.remove(t)
    now = observed()
    exp_bitmaps = [b for b in saved["bitmaps"] if b["name"] in
                   {n for n, _ in d0.bitmaps}]
    check(now["bitmaps"] == exp_bitmaps, "bitmaps after restart:\n %s\n"
          " expected %s" % (now["bitmaps"], exp_bitmaps))
    for n, h in now["sha"].items():
        check(h == saved["sha"][n], "sha256 of %s changed" % n)
    check(now["checkpoints"] == saved["checkpoints"],
          "query-checkpoints after restart:\n %s\n expected %s"
          % (now["checkpoints"], saved["checkpoints"]))
    verify("after restart")
    # Recording goes on: k2 (current) and p1 record, p2/p3/k1 do not.
    write(("write", 65536 * 40, 65536), ("zero", 700, 1))
    verify("writes after restart")
    ckpt("n%d" % len(chain.log))
    write(("write", 65536 * 41 + 5, 5))
    verify("a new checkpoint after restart")
elif step == "delete-after-restart":
    m.command("checkpoint-delete", {"name": "k2"})
    chain.delete("k2")
    d0.remove("k2")
    verify("k2 deleted after restarts: k1 holds its changes")
    write(("write", 65536 * 45, 1))
    verify("writes after deleting k2")

saved = observed()
with open(PICKLE, "wb") as f:
    pickle.dump((d0, chain, saved), f)
print("step %s: ok" % step)
EOF

start_nbdkit p1 "${args[@]}"
py setup

# quit: a clean shutdown through QMP.
$QMP "$tmp/q.qmp" quit
wait_exit $pid
assert_eq $exit_status 0 "exit status after quit"
test -s "$tmp/state/checkpoints" || fail "no checkpoints file"
ls -l "$tmp/state"

start_nbdkit p2 "${args[@]}"
py after-restart

# SIGTERM: also clean.
kill -TERM $pid
wait_exit $pid
assert_eq $exit_status 0 "exit status after SIGTERM"

start_nbdkit p3 "${args[@]}"
py after-restart
$QMP "$tmp/q.qmp" quit
wait_exit $pid

start_nbdkit p4 "${args[@]}"
py after-restart
py delete-after-restart
kill -TERM $pid
wait_exit $pid

start_nbdkit p5 "${args[@]}"
py after-restart
