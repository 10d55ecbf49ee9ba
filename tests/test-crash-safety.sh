#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# crash-safety= (DESIGN.md "Crash safety", the man page's CRASH SAFETY):
# - process (the default): after kill -9 the persistent bitmaps, a
#   checkpoint's and a disabled one included, are exactly as before the
#   kill (sha256 against a model), not inconsistent, and record again;
#   a transient one is gone;
# - the kill loop (crash_loop.py): writes in flight, nbdkit killed at
#   random instants and restarted on the same state: every checkpoint's
#   changed-since covers every chunk written after it was created; the
#   same with checkpoint-create/-delete running in a loop (then a
#   checkpoint may be inconsistent, never silently missing a write),
#   and in power mode;
# - a host crash (simulated: the journal's boot id rewritten): the
#   bitmaps are inconsistent and the log says why; in power mode they
#   are trusted;
# - a damaged journal: the log names it, it is kept aside, the bitmaps
#   are inconsistent; a torn last record is dropped silently;
# - state written by crash-safety=none (bits files by position) loads
#   under process, and a clean shutdown then leaves stable names only;
# - crash-safety=bogus is refused.
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e
set -x

requires_built "$FILTER"
requires nbdkit --version
requires $PY -c 'import nbd'
tmpdir

S=$(( 4 * 1024 * 1024 ))
truncate -s $S "$tmp/d0.img"
args=(--filter="$FILTER" file "$tmp/d0.img" node-name=d0
      qmp="$tmp/q.qmp" state="$tmp/state")

py ()
{
    $PY "$tmp/cs.py" "$1" "$tmp" "$sock" $S
}

cat > "$tmp/cs.py" <<'EOF'
import json
from ckpt_model import *

step, tmp, nsock, S = script_args(str, str, str, int)
m = connect(tmp + "/q.qmp")

def infos():
    return {b["name"]: b for b in bitmap_infos(m, "d0")}

def models():
    with open(tmp + "/model.json") as f:
        return json.load(f)

if step == "setup":
    for n, g, dis in (("p1", 65536, False), ("p2", 512, False),
                      ("off", 4096, True)):
        m.command("block-dirty-bitmap-add", {"node": "d0", "name": n,
                                             "persistent": True,
                                             "granularity": g,
                                             "disabled": dis})
    m.command("block-dirty-bitmap-add", {"node": "d0", "name": "t1"})
    qio(uri(nsock), "write 0 65536", "write 1000000 512")
    m.command("block-dirty-bitmap-disable", {"node": "d0", "name": "p2"})
    m.command("checkpoint-create", {"name": "k1"})
    qio(uri(nsock), "write %d 1" % (S - 1), "write -z 2097152 4096")
    m.command("block-dirty-bitmap-enable", {"node": "d0", "name": "p2"})
    qio(uri(nsock), "write 3000000 100")
    out = {n: {"sha": sha(m, "d0", n), "info": b}
           for n, b in infos().items() if n != "t1"}
    with open(tmp + "/model.json", "w") as f:
        json.dump(out, f)
    # The model itself: p1 saw every write.
    p1 = Bitmap(S, 65536)
    for o, l in ((0, 65536), (1000000, 512), (S - 1, 1), (2097152, 4096),
                 (3000000, 100)):
        p1.mark(o, l)
    check(out["p1"]["sha"] == p1.sha256(), "p1's sha256 against the model")

elif step == "after-kill":
    i = infos()
    saved = models()
    check(sorted(i) == sorted(saved), "bitmaps after kill -9: %r" % sorted(i))
    for n, s in saved.items():
        check(i[n] == s["info"], "%s after kill -9: %r, expected %r"
              % (n, i[n], s["info"]))
        check(sha(m, "d0", n) == s["sha"], "%s: sha256 after kill -9" % n)
    # They record again.
    qio(uri(nsock), "write 1048576 1")
    i = infos()
    check(i["p1"]["count"] == saved["p1"]["info"]["count"] + 65536,
          "p1 records after the restart: %r" % i["p1"])
    check(i["off"]["count"] == saved["off"]["info"]["count"],
          "the disabled bitmap stays as it was: %r" % i["off"])
    cks = m.command("query-checkpoints", {"size": True})
    check([c["name"] for c in cks] == ["k1"] and
          cks[0]["disks"][0]["size"] == i["k1"]["count"],
          "checkpoint k1 with its size: %r" % cks)

elif step == "inconsistent":
    i = infos()
    check(sorted(i) == ["k1", "off", "p1", "p2"], "%r" % sorted(i))
    for n, b in i.items():
        check(b["inconsistent"] is True, "%s: %r" % (n, b))
    m.command("block-dirty-bitmap-remove", {"node": "d0", "name": "off"})

elif step == "trusted":
    i = infos()
    check(sorted(i) == ["k1", "p1", "p2"], "%r" % sorted(i))
    for n, b in i.items():
        check(b["inconsistent"] is False and b["count"] > 0, "%s: %r"
              % (n, b))

elif step == "positional":
    m.command("block-dirty-bitmap-add", {"node": "d0", "name": "q1",
                                         "persistent": True})
    m.command("block-dirty-bitmap-add", {"node": "d0", "name": "q2",
                                         "persistent": True,
                                         "granularity": 4096})
    qio(uri(nsock), "write 65536 1", "write 2000000 5000")
    with open(tmp + "/model.json", "w") as f:
        json.dump({n: {"sha": sha(m, "d0", n), "info": b}
                   for n, b in infos().items()}, f)

elif step == "same":
    saved = models()
    i = infos()
    check(sorted(i) == sorted(saved), "%r" % sorted(i))
    for n, s in saved.items():
        check(i[n] == s["info"] and sha(m, "d0", n) == s["sha"],
              "%s: %r, expected %r" % (n, i[n], s["info"]))
print("step %s: ok" % step)
EOF

# Rewrite the boot id in DIR/journal.d0 (fixing its header checksum):
# what a reboot of the host looks like to the next start.
cat > "$tmp/reboot.py" <<'EOF'
import hashlib, struct, sys
path = sys.argv[1]
data = bytearray(open(path, "rb").read())
assert data[:8] == b"NCJRNL\0\1", "journal magic"
blen, = struct.unpack_from("<I", data, 8)
hdr = 12 + blen
assert hashlib.sha256(data[:hdr]).digest() == data[hdr:hdr + 32]
# Body: u32 version, u32 length + boot id, ...
idlen, = struct.unpack_from("<I", data, 16)
old = data[20:20 + idlen]
new = bytes(ord("0") if c != ord("-") else c for c in old)
assert new != old
data[20:20 + idlen] = new
data[hdr:hdr + 32] = hashlib.sha256(data[:hdr]).digest()
open(path, "wb").write(data)
print("boot id %s -> %s" % (old.decode(), new.decode()))
EOF

# ---- process: kill -9, exact bits, recording again ----
start_nbdkit c1 "${args[@]}"
py setup
test -s "$tmp/state/journal.d0" || fail "no journal while running"
kill -9 $pid
wait $pid || :
start_nbdkit c2 "${args[@]}"
py after-kill
kill -9 $pid
wait $pid || :

# ---- a host crash: another boot id in the journal ----
cp -a "$tmp/state" "$tmp/state.saved"
$PY "$tmp/reboot.py" "$tmp/state/journal.d0"
start_nbdkit c3 "${args[@]}"
assert_grep "node 'd0' was in use when the host went down" "$log"
py inconsistent
$QMP "$tmp/q.qmp" quit
wait_exit $pid
assert_eq $exit_status 0 "exit status after quit"
test ! -e "$tmp/state/journal.d0" || fail "journal left after a clean quit"

# ---- power mode: a journal from another boot is trusted ----
rm -rf "$tmp/state"
start_nbdkit p1 "${args[@]}" crash-safety=power
$QMP "$tmp/q.qmp" block-dirty-bitmap-add \
     '{"node": "d0", "name": "p1", "persistent": true}' > /dev/null
$QMP "$tmp/q.qmp" block-dirty-bitmap-add \
     '{"node": "d0", "name": "p2", "persistent": true, "granularity": 512}' \
     > /dev/null
$QMP "$tmp/q.qmp" checkpoint-create '{"name": "k1"}' > /dev/null
qio "$(nbd_uri d0)" 'write 0 1' 'write 1M 64k'
kill -9 $pid
wait $pid || :
$PY "$tmp/reboot.py" "$tmp/state/journal.d0"
start_nbdkit p2 "${args[@]}" crash-safety=power
py trusted
kill -9 $pid
wait $pid || :

# ---- a damaged journal ----
rm -rf "$tmp/state"
mv "$tmp/state.saved" "$tmp/state"
j="$tmp/state/journal.d0"
printf 'XX' | dd of="$j" bs=1 seek=30 conv=notrunc 2>/dev/null
start_nbdkit c4 "${args[@]}"
assert_grep "$j is damaged \(header checksum mismatch\)" "$log"
assert_grep "bitmaps of node 'd0' are inconsistent" "$log"
assert_grep "kept as $j.corrupt" "$log"
test -s "$j.corrupt" || fail "damaged journal not kept"
py inconsistent
$QMP "$tmp/q.qmp" quit
wait_exit $pid

# ---- a torn last record, and a damaged one ----
rm -rf "$tmp/state"
start_nbdkit c5 "${args[@]}"
py setup
kill -9 $pid
wait $pid || :
cp -a "$tmp/state" "$tmp/state.saved"
printf 'torn' >> "$tmp/state/journal.d0"
start_nbdkit c6 "${args[@]}"
py after-kill
kill -9 $pid
wait $pid || :
rm -rf "$tmp/state"
mv "$tmp/state.saved" "$tmp/state"
f="$tmp/state/journal.d0"
off=$(( $(stat -c %s "$f") - 20 ))      # in the last record
b=$(od -An -tu1 -j $off -N1 "$f" | tr -d ' ')
printf "$(printf '\\%03o' $(( b ^ 0x40 )))" |
    dd of="$f" bs=1 seek=$off conv=notrunc 2>/dev/null
start_nbdkit c7 "${args[@]}"
assert_grep "journal.d0 is damaged \(a damaged record\)" "$log"
py inconsistent
$QMP "$tmp/q.qmp" quit
wait_exit $pid

# ---- state of crash-safety=none loads under process ----
rm -rf "$tmp/state"
start_nbdkit n1 "${args[@]}" crash-safety=none
py positional
$QMP "$tmp/q.qmp" quit
wait_exit $pid
test -s "$tmp/state/bitmap.d0.0" -a -s "$tmp/state/bitmap.d0.1" ||
    fail "crash-safety=none: no positional bits files"
test ! -e "$tmp/state/journal.d0" || fail "crash-safety=none wrote a journal"
start_nbdkit n2 "${args[@]}"
py same
kill -9 $pid
wait $pid || :
start_nbdkit n3 "${args[@]}"
py same
$QMP "$tmp/q.qmp" quit
wait_exit $pid
ls "$tmp/state"
test ! -e "$tmp/state/bitmap.d0.0" -a ! -e "$tmp/state/bitmap.d0.1" ||
    fail "positional bits files left after a clean quit"
assert_eq "$(ls "$tmp/state" | grep -c '^bitmap\.d0\.[0-9a-f]\{16\}$')" 2 \
          "stable bits files"

# ---- a bad value ----
r=0
nbdkit -f -U "$tmp/bad.sock" "${args[@]}" crash-safety=bogus \
       > "$tmp/bad.log" 2>&1 || r=$?
test $r != 0 || fail "crash-safety=bogus accepted"
assert_grep "crash-safety=bogus: expected process, power or none" \
            "$tmp/bad.log"

# ---- the kill loops ----
for run in "12 process" "8 process churn" "6 power"; do
    rm -rf "$tmp/loop"
    mkdir "$tmp/loop"
    truncate -s 16M "$tmp/loop/disk.img"
    $PY "$abs_srcdir/crash_loop.py" "$FILTER" "$tmp/loop" $run ||
        { tail -n 30 "$tmp/loop/nbdkit.log"; fail "kill loop $run"; }
done
