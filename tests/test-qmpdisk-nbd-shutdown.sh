#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# nbd nodes and shutdown (issue 8 item 6).  nbdkit waits for every NBD
# connection to end before it cleans up, and an nbd node is an NBD
# connection held by the plugin: a node served from this same nbdkit
# kept quit and SIGTERM from ever finishing.  Such a node is refused
# (Unix socket and TCP); two servers with nodes on each other (which
# no check can refuse) both exit, with their state saved, once each is
# told to stop, by quit or by SIGTERM.  The waits are failure guards,
# not speed checks.
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e
set -x

requires_built "$PLUGIN" "$FILTER"
requires nbdkit --version
requires $PY -c 'import nbd'
tmpdir

# ---- a node looping back to this server is refused ----
cat > "$tmp/loop.py" <<'EOF'
import sys, importlib
qmp = importlib.import_module("qmp-client")
qsock, server = sys.argv[1], eval(sys.argv[2])
with qmp.QMP(qsock) as m:
    before = m.command("query-named-block-nodes")
    for export in ("sda", ""):
        cls, desc = m.error("blockdev-add",
                            {"driver": "nbd", "node-name": "loop",
                             "server": server, "export": export})
        assert cls == "GenericError", (cls, desc)
        assert "this nbdkit's own NBD server" in desc, desc
        where = server.get("path", server.get("port"))
        assert where in desc, (where, desc)
    assert m.command("query-named-block-nodes") == before
print("loopback refused:", server)
EOF

truncate -s 16M "$tmp/a.img"
start_nbdkit loopu --filter="$FILTER" "$PLUGIN" disk=sda:"$tmp/a.img" \
             qmp="$tmp/loopu.qmp" state="$tmp/loopu.state"
$PY "$tmp/loop.py" "$tmp/loopu.qmp" \
    "{'type': 'unix', 'path': '$sock'}"
$QMP "$tmp/loopu.qmp" quit
wait_exit "$pid" 60
assert_eq "$exit_status" 0 "exit status after quit (unix loop refused)"

port=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')
start_nbdkit loopt -i 127.0.0.1 -p "$port" "$PLUGIN" \
             disk=sda:"$tmp/a.img" qmp="$tmp/loopt.qmp"
$PY "$tmp/loop.py" "$tmp/loopt.qmp" \
    "{'type': 'inet', 'host': '127.0.0.1', 'port': '$port'}"
kill -TERM "$pid"
wait_exit "$pid" 60
assert_eq "$exit_status" 0 "exit status after SIGTERM (TCP loop refused)"

# ---- two servers with nodes on each other ----
# A: the filter over qmpdisk with a persistent bitmap on sda; B: the
# plugin alone.  A's node remb is B's sdb, B's node rema is A's sda.
cat > "$tmp/cross.py" <<'EOF'
import sys, importlib
import nbd
qmp = importlib.import_module("qmp-client")
aq, asock, bq, bsock, first = sys.argv[1:6]
first = first == "1"
K64 = 65536
a = qmp.QMP(aq)
b = qmp.QMP(bq)
if first:
    a.command("block-dirty-bitmap-add",
              {"node": "sda", "name": "b0", "persistent": True})
a.command("blockdev-add", {"driver": "nbd", "node-name": "remb",
                           "server": {"type": "unix", "path": bsock},
                           "export": "sdb"})
b.command("blockdev-add", {"driver": "nbd", "node-name": "rema",
                           "server": {"type": "unix", "path": asock},
                           "export": "sda"})
assert [n["node-name"] for n in a.command("query-named-block-nodes")] == \
    ["sda", "remb"]
assert [n["node-name"] for n in b.command("query-named-block-nodes")] == \
    ["sdb", "rema"]

# Data goes both ways, and a write through B into A is recorded.
off = (1 if first else 3) << 20
h = nbd.NBD()
h.connect_uri("nbd+unix:///rema?socket=" + bsock)
h.pwrite(b"\x5a" * K64, off)
h.flush()
h.shutdown()
h = nbd.NBD()
h.connect_uri("nbd+unix:///remb?socket=" + asock)
h.pwrite(b"\xa5" * K64, off)
h.flush()
h.shutdown()
for n in a.command("query-named-block-nodes"):
    if n["node-name"] == "sda":
        count = n["dirty-bitmaps"][0]["count"]
assert count == (1 if first else 2) * K64, count
a.close()
b.close()
EOF

check_files ()
{
    $PY - "$tmp" <<'EOF'
import sys
tmp = sys.argv[1]
K64 = 65536
for img, byte in (("a.img", 0x5a), ("b.img", 0xa5)):
    with open("%s/%s" % (tmp, img), "rb") as f:
        for off in (1 << 20, 3 << 20):
            f.seek(off)
            assert f.read(K64) == bytes([byte]) * K64, (img, off)
EOF
}

# nbdkit leaves its socket behind.
start_a ()
{
    rm -f "$tmp/a.sock"
    start_nbdkit a --filter="$FILTER" "$PLUGIN" disk=sda:"$tmp/a.img" \
                 qmp="$tmp/a.qmp" state="$tmp/a.state"
    apid=$pid asock=$sock
}
start_b ()
{
    rm -f "$tmp/b.sock"
    start_nbdkit b "$PLUGIN" disk=sdb:"$tmp/b.img" qmp="$tmp/b.qmp"
    bpid=$pid bsock=$sock
}

truncate -s 16M "$tmp/a.img" "$tmp/b.img"

# Round 1: quit A, then SIGTERM B.
start_a
start_b
$PY "$tmp/cross.py" "$tmp/a.qmp" "$asock" "$tmp/b.qmp" "$bsock" 1
$QMP "$tmp/a.qmp" quit
kill -TERM "$bpid"
wait_exit "$apid" 60
assert_eq "$exit_status" 0 "A's exit status after quit"
wait_exit "$bpid" 60
assert_eq "$exit_status" 0 "B's exit status after SIGTERM"

# Round 2: A's state was saved (the bitmap is back, consistent, with
# its count); now SIGTERM A, then quit B.
start_a
assert_eq "$(qmp_get "$tmp/a.qmp" query-named-block-nodes '' \
    '[(b["name"], b["count"], b.get("inconsistent", False))
      for n in r if n["node-name"] == "sda" for b in n["dirty-bitmaps"]]')" \
    "[('b0', 65536, False)]" "A's bitmap after a clean quit"
start_b
$PY "$tmp/cross.py" "$tmp/a.qmp" "$asock" "$tmp/b.qmp" "$bsock" 0
kill -TERM "$apid"
$QMP "$tmp/b.qmp" quit
wait_exit "$apid" 60
assert_eq "$exit_status" 0 "A's exit status after SIGTERM"
wait_exit "$bpid" 60
assert_eq "$exit_status" 0 "B's exit status after quit"
check_files

# And again A's state was saved on SIGTERM.
start_a
assert_eq "$(qmp_get "$tmp/a.qmp" query-named-block-nodes '' \
    '[(b["name"], b["count"], b.get("inconsistent", False))
      for n in r if n["node-name"] == "sda" for b in n["dirty-bitmaps"]]')" \
    "[('b0', 131072, False)]" "A's bitmap after SIGTERM"
kill_nbdkit "$apid"
