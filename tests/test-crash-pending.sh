#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# A checkpoint made by backup-begin is pending until its backup ends
# with success (issue 9 item 3):
# - query-checkpoints says "pending": true while the backup runs, false
#   after backup-end;
# - nbdkit killed (-9) with the backup running: at the next start the
#   checkpoint is deleted, the log says so, and "changed since" its
#   parent still covers every write made after the parent (the pending
#   one's changes merged into it), checked over an incremental export;
# - a kept one (backup-end success) survives a kill -9, not pending;
# - a clean shutdown with the backup running: deleted at the next start
#   too; an incremental from it is never possible.
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e
set -x

requires_built "$FILTER"
requires nbdkit --version
requires qemu-io --version
tmpdir

S=$(( 4 * 1024 * 1024 ))
truncate -s $S "$tmp/d0.img"
args=(--filter="$FILTER" file "$tmp/d0.img" node-name=d0
      qmp="$tmp/q.qmp" state="$tmp/state" scratch="$tmp")

py ()
{
    $PY - "$1" "$tmp" "$sock" <<'EOF'
import sys
from testlib import *
step, tmp, nsock = script_args(str, str, str)
m = connect(tmp + "/q.qmp")

def ckpts():
    return {c["name"]: c for c in m.command("query-checkpoints")}

def changed(base):
    """Offsets of the 64 KiB chunks an incremental from BASE reports
    changed."""
    r = m.command("backup-begin", {"id": "v", "incremental": base})
    h = nbd_open(uri(nsock, r["exports"][0]["export"]),
                 base_allocation=True)
    ext = []
    h.block_status(4 << 20, 0, lambda ctx, off, e, err:
                   ext.extend(zip(e[0::2], e[1::2])) or 0)
    h.shutdown()
    m.command("backup-end", {"id": "v"})
    out, pos = set(), 0
    for ln, fl in ext:
        if fl & 3 != 1:
            out.update(c * 65536 for c in range(pos // 65536,
                                                (pos + ln - 1) // 65536 + 1))
        pos += ln
    return out

if step == "begin":
    m.command("checkpoint-create", {"name": "c0"})
    qio(uri(nsock), "write -P 1 64k 64k")
    m.command("backup-begin", {"id": "b1", "checkpoint": {"name": "c1"}})
    c = ckpts()
    check(c["c1"]["pending"] is True and c["c0"]["pending"] is False,
          "while b1 runs: %r" % c)
    qio(uri(nsock), "write -P 2 1M 64k")
    # Killed (-9) by the shell now.
elif step == "after-kill":
    c = ckpts()
    check(sorted(c) == ["c0"] and c["c0"]["current"],
          "c1 of the backup that never ended is still there: %r" % c)
    got = changed("c0")
    check({65536, 1048576} <= got,
          "changed since c0 misses the pending one's writes: %r"
          % sorted(got))
    check(sorted(b["name"] for b in bitmap_infos(m, "d0")) == ["c0"] and
          not bitmap_infos(m, "d0")[0]["inconsistent"],
          "bitmaps: %r" % bitmap_infos(m, "d0"))
    # Kept this time.
    m.command("backup-begin", {"id": "b2", "checkpoint": {"name": "c2"}})
    qio(uri(nsock), "write -P 3 2M 64k")
    m.command("backup-end", {"id": "b2"})
    check(ckpts()["c2"]["pending"] is False, "after backup-end: %r" % ckpts())
    qio(uri(nsock), "write -P 4 3M 64k")
elif step == "kept":
    c = ckpts()
    check(sorted(c) == ["c0", "c2"] and c["c2"]["pending"] is False,
          "after the second kill: %r" % c)
    check(changed("c2") == {2 * 1048576, 3 * 1048576}, "changed since c2: %r"
          % sorted(changed("c2")))
    # A backup still running at a clean shutdown.
    m.command("backup-begin", {"id": "b3", "checkpoint": {"name": "c3"}})
    r = m.cmd("backup-begin", {"id": "b4", "incremental": "c3"})
    check("return" in r, "an incremental from the pending c3 of a running "
          "backup is refused: %r" % r)
    m.command("backup-end", {"id": "b4"})
    qio(uri(nsock), "write -P 5 0 4k")
    m.command("quit")
elif step == "after-quit":
    c = ckpts()
    check(sorted(c) == ["c0", "c2"], "c3 survived a shutdown during its "
          "backup: %r" % c)
    check(changed("c2") == {0, 2 * 1048576, 3 * 1048576},
          "changed since c2: %r"
          % sorted(changed("c2")))
    m.command("quit")
EOF
}

start_nbdkit kit "${args[@]}"
py begin
kill -9 $pid
wait_exit $pid || :
# The monitor answers only once start-up is over, so the log is
# checked after the first step.
start_nbdkit kit2 "${args[@]}"
py after-kill
assert_grep "checkpoint 'c1' was created by a backup that never ended" \
            "$tmp/kit2.log"
kill -9 $pid
wait_exit $pid || :
start_nbdkit kit3 "${args[@]}"
py kept
! grep -q "never ended" "$tmp/kit3.log" || fail "c2 was pending"
wait_exit $pid
start_nbdkit kit4 "${args[@]}"
py after-quit
assert_grep "checkpoint 'c3' was created by a backup that never ended" \
            "$tmp/kit4.log"
wait_exit $pid
