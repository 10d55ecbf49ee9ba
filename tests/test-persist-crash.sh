#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# Persistence when things go wrong (DESIGN.md
# "Bad input and failures"):
# - after kill -9 the persistent bitmaps (checkpoints' included) load
#   as QEMU's in-use ones: inconsistent=true, recording=false, count 0;
#   clear, enable, disable and merge (target or source) fail with
#   "Bitmap 'X' is inconsistent and cannot be used"; remove works;
#   transient bitmaps are gone; writes do not touch them; they stay
#   inconsistent across a later clean shutdown; new bitmaps work;
# - a disk whose size differs from the saved one: nbdkit refuses to
#   start and says both sizes; back on the same disk, all is as it was
#   (the disk is a symbolic link pointed at other files meanwhile: a
#   truncate of the disk itself changes its change time, which makes
#   its bitmaps inconsistent, see test-persist-identity.sh);
# - a flipped byte in state/bitmap.d0.0: only that bitmap (the oldest
#   persistent one) is inconsistent, the others keep their sha256;
# - a flipped byte in the bitmap file of a middle checkpoint k2 of
#   k1 <- k2 <- k3: k3's size stays exact, k1's and k2's are unknown;
#   deleting k2 must not make "changed since k1" forget k2's changes
#   (DESIGN.md: a bitmap may hold extra bits after a crash, never miss
#   one): k1's size is then unknown or covers them, and an incremental
#   backup from k1 either is refused or reports them as changed;
# - over qmpdisk: quit, restart without the hot-added disk, then
#   blockdev-add of the same node name finds its bitmaps and its share
#   of the checkpoint again (a file of another size is refused).
# Under crash-safety=none (state saved at clean shutdown only, bits
# files named by position); test-crash-safety.sh covers the default.
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e
set -x

requires_built "$PLUGIN" "$FILTER"
requires nbdkit --version
requires qemu-io --version
tmpdir

S=$(( 2 * 1024 * 1024 + 512 ))
truncate -s $S "$tmp/d0.img"
ln -s d0.img "$tmp/disk"
args=(--filter="$FILTER" file "$tmp/disk" node-name=d0
      qmp="$tmp/q.qmp" state="$tmp/state" crash-safety=none)

py ()
{
    $PY "$tmp/crash.py" "$1" "$tmp" "$sock" $S
}

cat > "$tmp/crash.py" <<'EOF'
import json
from ckpt_model import *

step, tmp, nsock, S = script_args(str, str, str, int)
m = connect(tmp + "/q.qmp")
E = expect_error

def infos():
    return {b["name"]: b for b in bitmap_infos(m, "d0")}

def shas():
    return {n: sha(m, "d0", n) for n in infos()}

def save(what):
    with open("%s/%s.json" % (tmp, what), "w") as f:
        json.dump({"infos": infos(), "shas": shas()}, f)

def load(what):
    with open("%s/%s.json" % (tmp, what)) as f:
        return json.load(f)

def incons(name):
    return "Bitmap '%s' is inconsistent and cannot be used" % name

if step == "crash-setup":
    for n, g in (("p1", 65536), ("p2", 512)):
        m.command("block-dirty-bitmap-add", {"node": "d0", "name": n,
                                             "persistent": True,
                                             "granularity": g})
    m.command("block-dirty-bitmap-add", {"node": "d0", "name": "t1"})
    qio(uri(nsock), "write 0 65536", "write 1000000 512")
    m.command("checkpoint-create", {"name": "k1"})
    qio(uri(nsock), "write %d 1" % (S - 1))
    check(all(b["count"] > 0 for b in infos().values()), "%r" % infos())

elif step == "after-crash":
    i = infos()
    check(sorted(i) == ["k1", "p1", "p2"], "bitmaps after kill -9: %r"
          % sorted(i))
    for n, b in i.items():
        check(b["inconsistent"] is True and b["recording"] is False and
              b["count"] == 0 and b["persistent"] is True,
              "%s after kill -9: %r" % (n, b))
    check(i["k1"]["busy"] is True, "k1 still a checkpoint bitmap")
    check(i["p1"]["granularity"] == 65536 and
          i["p2"]["granularity"] == 512, "granularities kept: %r" % i)
    for c in ("block-dirty-bitmap-clear", "block-dirty-bitmap-enable",
              "block-dirty-bitmap-disable"):
        E(m, c, {"node": "d0", "name": "p1"}, incons("p1"))
    m.command("block-dirty-bitmap-add", {"node": "d0", "name": "new",
                                         "persistent": True})
    E(m, "block-dirty-bitmap-merge", {"node": "d0", "target": "p1",
                                      "bitmaps": ["new"]}, incons("p1"))
    E(m, "block-dirty-bitmap-merge", {"node": "d0", "target": "new",
                                      "bitmaps": ["p2"]}, incons("p2"))
    # sha256 still answers (QEMU's too).
    sha(m, "d0", "p2")
    # Writes mark only the new bitmap.
    qio(uri(nsock), "write 131072 4096", "write -z 0 512")
    i = infos()
    for n in ("k1", "p1", "p2"):
        check(i[n]["count"] == 0 and i[n]["inconsistent"], "%s: %r"
              % (n, i[n]))
    exp = Bitmap(S)
    exp.mark(131072, 4096)
    exp.mark(0, 512)
    check(sha(m, "d0", "new") == exp.sha256() and
          i["new"]["count"] == exp.count(), "new bitmap after the crash")
    # The checkpoint is listed; its size cannot be known.
    cks = m.command("query-checkpoints", {"size": True})
    check([c["name"] for c in cks] == ["k1"], "%r" % cks)
    check("size" not in cks[0]["disks"][0] or
          cks[0]["disks"][0]["size"] >= S, "k1's size after a crash must "
          "not claim fewer changes than there were: %r" % cks)
    print("query-checkpoints after kill -9: %s" % json.dumps(cks))
    # No incremental from it: the error says what to do instead.
    E(m, "backup-begin", {"incremental": "k1"},
      "Bitmap 'k1' of checkpoint 'k1' on 'd0' is inconsistent and cannot "
      "be used: what changed since then is unknown, a full backup is "
      "needed")
    # remove works on an inconsistent bitmap.
    m.command("block-dirty-bitmap-remove", {"node": "d0", "name": "p1"})
    check(sorted(infos()) == ["k1", "new", "p2"], "%r" % sorted(infos()))
    save("after-crash")

elif step == "inconsistent-stays":
    i = infos()
    prev = load("after-crash")
    check(sorted(i) == ["k1", "new", "p2"], "%r" % sorted(i))
    check(i["p2"]["inconsistent"] and i["k1"]["inconsistent"],
          "still inconsistent after a clean restart: %r" % i)
    check(i["new"] == prev["infos"]["new"] and
          sha(m, "d0", "new") == prev["shas"]["new"], "new kept")
    # Deleting the checkpoint with the inconsistent bitmap works.
    m.command("checkpoint-delete", {"name": "k1"})
    m.command("block-dirty-bitmap-remove", {"node": "d0", "name": "p2"})
    check(sorted(infos()) == ["new"], "%r" % sorted(infos()))
    # Three clean persistent bitmaps for the corruption test.
    for n, g in (("c1", 65536), ("c2", 4096), ("c3", 512)):
        m.command("block-dirty-bitmap-add", {"node": "d0", "name": n,
                                             "persistent": True,
                                             "granularity": g})
    qio(uri(nsock), "write 65536 65536", "write %d 100" % (S - 100))
    save("before-resize")

elif step == "same-as-before":
    prev = load("before-resize")
    check(infos() == prev["infos"], "after restart:\n %r\n expected %r"
          % (infos(), prev["infos"]))
    check(shas() == prev["shas"], "sha256 changed")

elif step == "after-corruption":
    # bitmap.d0.0 is the oldest persistent bitmap: "new".
    prev = load("before-resize")
    i = infos()
    check(sorted(i) == sorted(prev["infos"]), "%r" % sorted(i))
    check(i["new"]["inconsistent"] is True and i["new"]["count"] == 0,
          "the corrupted bitmap: %r" % i["new"])
    for n in ("c1", "c2", "c3"):
        check(i[n] == prev["infos"][n], "%s: %r, expected %r"
              % (n, i[n], prev["infos"][n]))
        check(sha(m, "d0", n) == prev["shas"][n], "%s sha256" % n)
    E(m, "block-dirty-bitmap-clear", {"node": "d0", "name": "new"},
      incons("new"))
    m.command("block-dirty-bitmap-remove", {"node": "d0", "name": "new"})
print("step %s: ok" % step)
EOF

# ---- kill -9 ----
start_nbdkit c1 "${args[@]}"
py crash-setup
kill -9 $pid
wait $pid || :
start_nbdkit c2 "${args[@]}"
py after-crash
$QMP "$tmp/q.qmp" quit
wait_exit $pid
assert_eq $exit_status 0 "exit status after quit"
start_nbdkit c3 "${args[@]}"
py inconsistent-stays
$QMP "$tmp/q.qmp" quit
wait_exit $pid

# ---- the disk changed size while nbdkit was down ----
for newsize in $(( S + 65536 )) $(( S - 512 )); do
    truncate -s $newsize "$tmp/other.img"
    ln -sfn other.img "$tmp/disk"
    rm -f "$tmp/bad.pid" "$tmp/bad.sock"
    r=0
    timeout 20 nbdkit -f -P "$tmp/bad.pid" -U "$tmp/bad.sock" "${args[@]}" \
            > "$tmp/bad.log" 2>&1 || r=$?
    cat "$tmp/bad.log"
    test $r != 0 -a $r != 124 || fail "nbdkit started on a resized disk ($r)"
    assert_grep "$newsize" "$tmp/bad.log"
    assert_grep "$S" "$tmp/bad.log"
done
ln -sfn d0.img "$tmp/disk"
start_nbdkit c4 "${args[@]}"
py same-as-before
kill -TERM $pid
wait_exit $pid

# ---- a flipped byte in the oldest bitmap's file ----
f="$tmp/state/bitmap.d0.0"
test -s "$f" || fail "$f missing"
n=$(stat -c %s "$f")
off=$(( n / 2 ))
b=$(od -An -tu1 -j $off -N1 "$f" | tr -d ' ')
printf "$(printf '\\%03o' $(( b ^ 0x10 )))" |
    dd of="$f" bs=1 seek=$off conv=notrunc 2>/dev/null
start_nbdkit c5 "${args[@]}"
py after-corruption
kill -TERM $pid
wait_exit $pid

# ---- qmpdisk: a hot-added disk finds its bitmaps again ----
SB=$(( 1024 * 1024 + 4096 ))
truncate -s 4M "$tmp/a.img"
truncate -s $SB "$tmp/b.img"
truncate -s $(( SB + 512 )) "$tmp/b2.img"
qargs=(--filter="$FILTER" "$PLUGIN" disk=sda:"$tmp/a.img"
       qmp="$tmp/qd.qmp" state="$tmp/qstate" crash-safety=none)
start_nbdkit h1 "${qargs[@]}"
$PY - "$tmp" "$sock" $SB <<'EOF'
import json
from testlib import *
tmp, nsock, SB = script_args(str, str, str)
m = connect(tmp + "/qd.qmp")
m.command("blockdev-add", {"driver": "file", "node-name": "sdb",
                           "filename": tmp + "/b.img"})
for n in ("sda", "sdb"):
    m.command("block-dirty-bitmap-add", {"node": n, "name": "pb",
                                         "persistent": True,
                                         "granularity": 4096})
qio(uri(nsock, "sdb"), "write 0 4096", "write %d 1" % (int(SB) - 1))
m.command("checkpoint-create", {"name": "hk"})
qio(uri(nsock, "sdb"), "write 65536 100")
qio(uri(nsock, "sda"), "write 0 1")
out = {"infos": {n: bitmap_infos(m, n) for n in ("sda", "sdb")},
       "shas": {"%s/%s" % (n, b): sha(m, n, b) for n in ("sda", "sdb")
                for b in ("pb", "hk")},
       "cks": m.command("query-checkpoints", {"size": True})}
json.dump(out, open(tmp + "/hot.json", "w"))
m.command("quit")
EOF
wait_exit $pid
assert_eq $exit_status 0 "exit status after quit"

start_nbdkit h2 "${qargs[@]}"
$PY - "$tmp" "$sock" $SB <<'EOF'
import json
from testlib import *
tmp, nsock, SB = script_args(str, str, str)
m = connect(tmp + "/qd.qmp")
saved = json.load(open(tmp + "/hot.json"))
check(bitmap_infos(m, "sda") == saved["infos"]["sda"], "sda's bitmaps")
cks = m.command("query-checkpoints")
check([(c["name"], [d["node"] for d in c["disks"]]) for c in cks] ==
      [("hk", ["sda", "sdb"])], "checkpoint hk without sdb present: %r"
      % cks)
# Another file of another size under the same node name is refused.
d = expect_error(m, "blockdev-add", {"driver": "file", "node-name": "sdb",
                                     "filename": tmp + "/b2.img"})
check(SB in d and str(int(SB) + 512) in d,
      "the error names both sizes: %s" % d)
check("sdb" not in [n["node-name"] for n in
                    m.command("query-named-block-nodes")], "sdb refused")
# The right one finds everything again.
m.command("blockdev-add", {"driver": "file", "node-name": "sdb",
                           "filename": tmp + "/b.img"})
check(bitmap_infos(m, "sdb") == saved["infos"]["sdb"],
      "sdb's bitmaps after blockdev-add: %r, expected %r"
      % (bitmap_infos(m, "sdb"), saved["infos"]["sdb"]))
for k, h in saved["shas"].items():
    n, b = k.split("/")
    check(sha(m, n, b) == h, "sha256 of %s" % k)
check(m.command("query-checkpoints", {"size": True}) == saved["cks"],
      "query-checkpoints with sdb back")
# They record again.
qio(uri(nsock, "sdb"), "write %d 1" % (65536 * 8))
b = {x["name"]: x for x in bitmap_infos(m, "sdb")}
old = {x["name"]: x for x in saved["infos"]["sdb"]}
check(b["pb"]["count"] == old["pb"]["count"] + 4096, "pb records: %r" % b)
check(b["hk"]["count"] == old["hk"]["count"] + 65536, "hk records: %r" % b)
# A node with bitmaps cannot be removed.
expect_error(m, "blockdev-del", {"node-name": "sdb"})
print("qmpdisk hot-add: ok")
EOF

# ---- a corrupted middle checkpoint bitmap ----
truncate -s 1M "$tmp/m.img"
margs=(--filter="$FILTER" file "$tmp/m.img" node-name=d1
       qmp="$tmp/mq.qmp" state="$tmp/mstate" crash-safety=none)
start_nbdkit m1 "${margs[@]}"
$PY - "$tmp" "$sock" <<'EOF'
from testlib import *
tmp, nsock = script_args(str, str)
m = connect(tmp + "/mq.qmp")
m.command("checkpoint-create", {"name": "k1"})
qio(uri(nsock), "write -P 1 0 64k")
m.command("checkpoint-create", {"name": "k2"})
qio(uri(nsock), "write -P 2 128k 64k")
m.command("checkpoint-create", {"name": "k3"})
qio(uri(nsock), "write -P 3 256k 64k")
sizes = [c["disks"][0]["size"] for c in
         m.command("query-checkpoints", {"size": True})]
check(sizes == [3 * 65536, 2 * 65536, 65536], "sizes %r" % sizes)
m.command("quit")
EOF
wait_exit $pid
# The bitmaps are saved oldest first: bitmap.d1.1 is k2's.
f="$tmp/mstate/bitmap.d1.1"
n=$(stat -c %s "$f")
b=$(od -An -tu1 -j $(( n / 2 )) -N1 "$f" | tr -d ' ')
printf "$(printf '\\%03o' $(( b ^ 0x01 )))" |
    dd of="$f" bs=1 seek=$(( n / 2 )) conv=notrunc 2>/dev/null
start_nbdkit m2 "${margs[@]}"
$PY - "$tmp" "$sock" <<'EOF'
from testlib import *
tmp, nsock = script_args(str, str)
m = connect(tmp + "/mq.qmp")
inc = {b["name"]: b["inconsistent"] for b in bitmap_infos(m, "d1")}
check(inc == {"k1": False, "k2": True, "k3": False}, "%r" % inc)

def sizes():
    return {c["name"]: c["disks"][0].get("size")
            for c in m.command("query-checkpoints", {"size": True})}
s = sizes()
check(s["k3"] == 65536, "k3's size stays exact: %r" % s)
check(s["k2"] is None and s["k1"] is None,
      "k1's and k2's sizes cannot be known: %r" % s)
m.command("checkpoint-delete", {"name": "k2"})
s = sizes()
check(s["k3"] == 65536, "%r" % s)
errors = []
# Changed since k1: 0-64k, 128k-192k (k2's, lost with its bitmap) and
# 256k-320k.
if not (s["k1"] is None or s["k1"] >= 3 * 65536):
    errors.append("after deleting the inconsistent k2, k1 claims %r bytes "
                  "changed; the writes made while k2 was current (128k-192k)"
                  " are missing" % s["k1"])
r = m.cmd("backup-begin", {"id": "b", "incremental": "k1"})
if "return" in r:
    h = nbd_open(uri(nsock, r["return"]["exports"][0]["export"]),
                 base_allocation=True)
    ext = []
    h.block_status(1 << 20, 0,
                   lambda ctx, off, e, err: ext.extend(
                       zip(e[0::2], e[1::2])) or 0)
    h.shutdown()
    pos, unchanged = 0, []
    for ln, fl in ext:
        if fl & 3 == 1:
            unchanged.append((pos, pos + ln))
        pos += ln
    for a, b in unchanged:
        if a < 196608 and b > 131072:
            errors.append("the incremental backup from k1 skips 128k-192k "
                          "(written while k2 was current): extents "
                          "reported unchanged: %r" % unchanged)
    m.command("backup-end", {"id": "b"})
m.command("quit")
check(not errors, "\n".join(errors))
EOF
wait_exit $pid
