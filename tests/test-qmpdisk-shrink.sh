#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# block_resize while NBD connections are open (issue 8 item 4): an
# open connection keeps the size it saw, so a shrink under it would
# let it write past the new end, growing the file where no bitmap
# records anything.  Shrinking is refused while connections are open
# (the error names the node and the count), growing is allowed, and
# every byte a connection can write stays recorded in a persistent
# bitmap.  Over the checkpoint filter and over the plugin alone.
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e
set -x

requires_built "$PLUGIN" "$FILTER"
requires nbdkit --version
requires $PY -c 'import nbd'
tmpdir

cat > "$tmp/shrink.py" <<'EOF'
import os, sys, time, importlib
import nbd
qmp = importlib.import_module("qmp-client")
qsock, nsock, img, filtered = sys.argv[1], sys.argv[2], sys.argv[3], \
    sys.argv[4] == "1"
M = 1 << 20
K64 = 65536

def connect():
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///sda?socket=" + nsock)
    return h

def file_size():
    return os.path.getsize(img)

def file_read(off, n):
    with open(img, "rb") as f:
        f.seek(off)
        return f.read(n)

m = qmp.QMP(qsock)

def count():
    """Dirty bytes of the persistent bitmap b0 (filter only)."""
    for n in m.command("query-named-block-nodes"):
        if n["node-name"] == "sda":
            bms = n.get("dirty-bitmaps", [])
            assert [b["name"] for b in bms] == ["b0"], bms
            return bms[0]["count"]
    raise AssertionError("no node sda")

def size_of_node():
    for n in m.command("query-named-block-nodes"):
        if n["node-name"] == "sda":
            return n["image"]["virtual-size"]

if filtered:
    m.command("block-dirty-bitmap-add",
              {"node": "sda", "name": "b0", "persistent": True})
    assert count() == 0

a = b"\xa1" * K64
h = connect()
assert h.get_size() == 64 * M
h.pwrite(a, M)

# Shrinking under an open connection is refused, naming the node and
# the count; nothing changes.
cls, desc = m.error("block_resize", {"node-name": "sda", "size": 32 * M})
assert cls == "GenericError", (cls, desc)
assert "'sda'" in desc and "1 open connection" in desc, desc
assert file_size() == 64 * M, file_size()
assert size_of_node() == 64 * M
h2 = connect()
cls, desc = m.error("block_resize", {"node-name": "sda", "size": 32 * M})
assert "'sda'" in desc and "2 open connections" in desc, desc
h2.shutdown()

# The write at 48 MiB that used to grow a shrunk image unrecorded is
# within the disk now, and recorded.
b = b"\xb2" * K64
h.pwrite(b, 48 * M)
assert file_size() == 64 * M, file_size()
assert file_read(48 * M, K64) == b
if filtered:
    assert count() == 2 * K64, count()

# Growing under an open connection is allowed: the old connection
# keeps its size, a new one sees the new size and its writes there
# are recorded.
m.command("block_resize", {"node-name": "sda", "size": 96 * M})
assert file_size() == 96 * M and size_of_node() == 96 * M
assert h.get_size() == 64 * M
h3 = connect()
assert h3.get_size() == 96 * M
c = b"\xc3" * K64
h3.pwrite(c, 80 * M)
assert file_read(80 * M, K64) == c
if filtered:
    assert count() == 3 * K64, count()
h3.shutdown()
h.shutdown()
del h, h2, h3

# With every connection closed the shrink goes through (nbdkit may
# see the disconnects a moment later).
for i in range(200):
    r = m.cmd("block_resize", {"node-name": "sda", "size": 32 * M})
    if "return" in r:
        break
    assert "open connection" in r["error"]["desc"], r
    time.sleep(0.05)
assert r == {"return": {}}, r
assert file_size() == 32 * M and size_of_node() == 32 * M
if filtered:
    assert count() == K64, count()

# A new connection sees 32 MiB; a write at 48 MiB fails and the file
# does not grow.
h = connect()
assert h.get_size() == 32 * M
try:
    h.pwrite(b, 48 * M)
    raise AssertionError("write past the end succeeded")
except nbd.Error:
    pass
assert file_size() == 32 * M, file_size()
assert h.pread(K64, M) == a

# Growing back: the new part reads as zeroes and is clean, and the
# bitmap still has exactly the one chunk written below 32 MiB.
h.shutdown()
m.command("block_resize", {"node-name": "sda", "size": 64 * M})
assert file_size() == 64 * M
assert file_read(48 * M, K64) == bytes(K64)
if filtered:
    assert count() == K64, count()
m.close()
print("shrink OK (filtered=%s)" % filtered)
EOF

truncate -s 64M "$tmp/f.img"
start_nbdkit f --filter="$FILTER" "$PLUGIN" disk=sda:"$tmp/f.img" \
             qmp="$tmp/f.qmp" state="$tmp/fstate"
$PY "$tmp/shrink.py" "$tmp/f.qmp" "$sock" "$tmp/f.img" 1
kill -0 "$pid" || fail "filtered nbdkit died"
kill_nbdkit "$pid"

truncate -s 64M "$tmp/p.img"
start_nbdkit p "$PLUGIN" disk=sda:"$tmp/p.img" qmp="$tmp/p.qmp"
$PY "$tmp/shrink.py" "$tmp/p.qmp" "$sock" "$tmp/p.img" 0
kill -0 "$pid" || fail "plain nbdkit died"
kill_nbdkit "$pid"
