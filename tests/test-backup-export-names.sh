#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# Backup export names never reach the live disk, and are unique:
# - over a single-export plugin, a custom export name ("snapshot")
#   serves the frozen view while the backup lives; after backup-end it
#   is refused (not opened on the live disk, so nothing is read from it
#   or written to it), and so is a name that never was; "" and the node
#   name still open the live disk;
# - one backup-begin may not give two disks the same export name, nor a
#   name that a node or another backup has; nothing is left behind;
# - backup-begin with an empty disks list is refused.
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e
set -x

requires_built "$PLUGIN" "$FILTER"
requires nbdkit --version
requires nbdinfo --version
requires qemu-io --version
requires $PY -c 'import nbd'
tmpdir

# ---- a single-export plugin ----
start_nbdkit mem --filter="$FILTER" memory 64M node-name=vda qmp="$tmp/m.qmp"
msock=$sock
qio "$(nbd_uri '' "$msock")" 'write -P 7 0 1M'
$QMP "$tmp/m.qmp" backup-begin \
     '{"id": "b", "disks": [{"node": "vda", "export": "snapshot"}]}' > "$tmp/out"
assert_grep '"export": "snapshot"' "$tmp/out"
snap=$(nbd_uri snapshot "$msock")
qio "$(nbd_uri vda "$msock")" 'write -P 8 0 64k'        # after the freeze
qemu-io -r -f raw "$snap" -c 'read -P 7 0 1M' > "$tmp/r" 2>&1 ||
    { cat "$tmp/r"; fail "the export does not show the frozen data"; }
$QMP "$tmp/m.qmp" backup-end '{"id": "b"}' > /dev/null

for name in snapshot never-was vda@b; do
    if nbdinfo --size "$(nbd_uri "$name" "$msock")" > "$tmp/r" 2>&1; then
        fail "export '$name' opened after backup-end: $(cat "$tmp/r")"
    fi
    if qemu-io -f raw "$(nbd_uri "$name" "$msock")" -c 'write -P 9 0 4k' \
       > "$tmp/r" 2>&1 && ! grep -qiE 'failed|error' "$tmp/r"; then
        fail "a write through '$name' succeeded"
    fi
done
grep -q "no such export 'snapshot'" "$log" || fail "no log line for 'snapshot'"
# Nothing was written through them: the live disk is as we left it.
qio "$(nbd_uri '' "$msock")" 'read -P 8 0 64k' 'read -P 7 64k 960k'
assert_eq "$(size "$(nbd_uri vda "$msock")")" $((64 << 20)) "vda opens the disk"

# ---- unique names, over qmpdisk with two disks ----
truncate -s 8M "$tmp/a.img" "$tmp/b.img"
start_nbdkit kit --filter="$FILTER" "$PLUGIN" disk=sda:"$tmp/a.img" \
             disk=sdb:"$tmp/b.img" qmp="$tmp/q.qmp"
$PY - "$tmp/q.qmp" "$sock" <<'PYEOF'
import sys
from testlib import *
qsock, nsock = script_args(str, str)
with connect(qsock) as m:
    def refused(args, text):
        cls, desc = m.error("backup-begin", args)
        assert cls == "GenericError" and text in desc, (args, cls, desc)
        ids = [b["id"] for b in m.command("query-backups")]
        assert "x" not in ids, (args, ids)
    refused({"id": "x", "disks": [{"node": "sda", "export": "X"},
                                  {"node": "sdb", "export": "X"}]},
            "Export 'X' already exists")
    refused({"id": "x", "disks": [{"node": "sda", "export": "sdb"}]},
            "Export 'sdb' already exists")
    refused({"id": "x", "disks": []}, "at least one disk")
    m.command("backup-begin", {"id": "y", "disks": [{"node": "sda",
                                                     "export": "Y"}]})
    refused({"id": "x", "disks": [{"node": "sdb", "export": "Y"}]},
            "Export 'Y' already exists")
    m.command("backup-end", {"id": "y"})
    assert m.command("query-backups") == []
    names = sorted(e for e in nbd_exports(nsock))
    assert names == ["sda", "sdb"], names
PYEOF
