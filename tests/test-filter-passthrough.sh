#!/usr/bin/env bash
# The checkpoint filter passes data through unchanged over nbdkit's
# memory and file plugins and over qmpdisk, hosts the monitor (with
# the plugin's commands when over qmpdisk), creates state=, and shuts
# down cleanly on quit and on SIGTERM.
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e
set -x

requires_built "$FILTER"
requires nbdkit --version
requires nbdinfo --version
requires nbdcopy --version
requires qemu-io --version
requires $PY -c 'import nbd'
tmpdir

# A random 4 MiB reference image with a hole in the middle.
head -c 4M /dev/urandom > "$tmp/ref"
dd if=/dev/zero of="$tmp/ref" bs=1M seek=1 count=1 conv=notrunc 2>/dev/null

# ---- over memory: node-name=, state=, quit ----
start_nbdkit mem --filter="$FILTER" memory 4M node-name=mem0 \
             qmp="$tmp/mq.sock" state="$tmp/state"
mempid=$pid memsock=$sock
test -d "$tmp/state" || fail "state= directory not created"
assert_eq "$(stat -c %a "$tmp/mq.sock")" 600 "QMP socket mode"

# Data written through the filter reads back identically.
nbdcopy "$tmp/ref" "$(nbd_uri '' "$memsock")"
nbdcopy "$(nbd_uri '' "$memsock")" "$tmp/out"
assert_eq "$(sha "$tmp/out")" "$(sha "$tmp/ref")" "memory data"
qio "$(nbd_uri '' "$memsock")" 'write -P 0xa5 1M 64k' 'read -P 0xa5 1M 64k' \
    'read -P 0 1088k 960k'
assert_eq "$(exports "$memsock")" '"" 4194304' "exports over memory"

$PY - "$tmp/mq.sock" "$(nbd_uri '' "$memsock")" <<'EOF'
import time
from testlib import *
qsock, live = script_args(str, str)
with connect(qsock) as m:
    nodes = m.command("query-named-block-nodes")
    assert len(nodes) == 1, nodes
    assert nodes[0]["node-name"] == "mem0", nodes
    assert nodes[0]["image"]["virtual-size"] == 4 * 1024 * 1024, nodes
    assert nodes[0]["ro"] is False, nodes
    # flat is accepted and changes nothing
    assert m.command("query-named-block-nodes", {"flat": True}) == nodes
    names = [c["name"] for c in m.command("query-commands")]
    for c in ("qmp_capabilities", "query-version", "query-commands", "quit",
              "query-named-block-nodes"):
        assert c in names, (c, names)
    # Over a stock plugin the disk-management commands do not exist.
    for c in ("blockdev-add", "blockdev-del", "block_resize"):
        assert c not in names, (c, names)
        cls, desc = m.error(c, {"node-name": "x"})
        assert cls == "CommandNotFound", (cls, desc)
        assert desc == "The command %s has not been found" % c, desc
    v = m.command("query-version")
    assert v["qemu"] == {"major": 7, "minor": 2, "micro": 0}, v
    assert v["package"].startswith("nbdkit-checkpoint "), v
    # quit replies, then nbdkit exits, also with an idle QMP client, a
    # client that has not negotiated and an NBD client connected.
    idle, fresh = connect(qsock), connect(qsock, negotiate=False)
    h = nbd_open(live)
    assert h.pread(512, 1024 * 1024) == b"\xa5" * 512
    assert m.command("quit") == {}
    # nbdkit 1.32 waits for NBD clients that have sent a request to go
    # away before it shuts down (even on SIGTERM), so disconnect.
    h.shutdown()
    t0 = time.time()
    for c in (idle, fresh, m):
        try:
            while True:
                msg = c.recv_message()
                assert "event" in msg, msg    # no reply without a request
        except (QMPClosed, ConnectionError):
            pass
    assert time.time() - t0 < 5, "QMP clients not disconnected on quit"
EOF
wait_exit "$mempid"
assert_eq "$exit_status" 0 "exit status after quit"
test ! -e "$tmp/mq.sock" || fail "QMP socket left behind after quit"

# ---- over file: default node name, SIGTERM ----
cp "$tmp/ref" "$tmp/file.img"
start_nbdkit file --filter="$FILTER" file "$tmp/file.img" qmp="$tmp/fq.sock"
filepid=$pid filesock=$sock
nbdcopy "$(nbd_uri '' "$filesock")" "$tmp/out"
assert_eq "$(sha "$tmp/out")" "$(sha "$tmp/ref")" "file data read"
qio "$(nbd_uri '' "$filesock")" 'write -P 0x3c 512k 128k' 'flush'
# What went through the filter is in the file, byte for byte.
cp "$tmp/ref" "$tmp/expect"
$PY -c "
import sys
with open(sys.argv[1], 'r+b') as f:
    f.seek(512 * 1024); f.write(b'\x3c' * 128 * 1024)" "$tmp/expect"
assert_eq "$(sha "$tmp/file.img")" "$(sha "$tmp/expect")" "file after write"
r="$(qmp_get "$tmp/fq.sock" query-named-block-nodes '' \
      '"%s %d" % (r[0]["node-name"], r[0]["image"]["virtual-size"])')"
assert_eq "$r" "disk $((4*1024*1024))" "node over file"
# An idle QMP client does not hold up SIGTERM; it sees EOF.
$PY -c '
from testlib import *
[qsock] = script_args(str)
m = connect(qsock)
print("connected", flush=True)
try:
    while True:
        m.recv_message()
except QMPClosed:
    print("eof")' "$tmp/fq.sock" > "$tmp/idle.out" &
idlepid=$!
cleanup_fn kill_nbdkit "$idlepid"
for (( i = 0; i < 100; ++i )); do
    grep -q connected "$tmp/idle.out" && break
    sleep 0.05
done
kill -TERM "$filepid"
wait_exit "$filepid"
wait "$idlepid"
assert_eq "$(cat "$tmp/idle.out")" "connected
eof" "idle QMP client at SIGTERM"
assert_eq "$exit_status" 0 "exit status after SIGTERM"
test ! -e "$tmp/fq.sock" || fail "QMP socket left behind after SIGTERM"
assert_eq "$(sha "$tmp/file.img")" "$(sha "$tmp/expect")" "file after exit"

# ---- over qmpdisk, two disks ----
requires_built "$PLUGIN"
cp "$tmp/ref" "$tmp/a.img"
truncate -s 2M "$tmp/b.img"
start_nbdkit qd --filter="$FILTER" "$PLUGIN" disk=sda:"$tmp/a.img" \
             disk=sdb:"$tmp/b.img" qmp="$tmp/qq.sock" state="$tmp/qstate"
qdpid=$pid
test -d "$tmp/qstate" || fail "state= directory not created over qmpdisk"
exports > "$tmp/list"
assert_grep '^sda 4194304$' "$tmp/list"
assert_grep '^sdb 2097152$' "$tmp/list"
nbdcopy "$(nbd_uri sda)" "$tmp/out"
assert_eq "$(sha "$tmp/out")" "$(sha "$tmp/ref")" "sda read through filter"
nbdcopy "$(nbd_uri '')" "$tmp/out"
assert_eq "$(sha "$tmp/out")" "$(sha "$tmp/ref")" "default export is sda"
head -c 2M /dev/urandom > "$tmp/ref2"
nbdcopy "$tmp/ref2" "$(nbd_uri sdb)"
assert_eq "$(sha "$tmp/b.img")" "$(sha "$tmp/ref2")" "sdb written through filter"
assert_eq "$(sha "$tmp/a.img")" "$(sha "$tmp/ref")" "sda untouched"

$PY - "$tmp/qq.sock" "$tmp" <<'EOF'
from testlib import *
qsock, tmp = script_args(str, str)
with connect(qsock) as m:
    nodes = m.command("query-named-block-nodes")
    got = [(n["node-name"], n["drv"], n["file"], n["image"]["virtual-size"])
           for n in nodes]
    assert got == [("sda", "file", tmp + "/a.img", 4 << 20),
                   ("sdb", "file", tmp + "/b.img", 2 << 20)], got
    names = [c["name"] for c in m.command("query-commands")]
    # The filter serves the plugin's commands too.
    for c in ("blockdev-add", "blockdev-del", "block_resize",
              "query-named-block-nodes"):
        assert c in names, (c, names)
    assert len(names) == len(set(names)), names
    open(tmp + "/c.img", "wb").truncate(1 << 20)
    m.command("blockdev-add", {"driver": "file", "node-name": "sdc",
                               "filename": tmp + "/c.img"})
    nodes = m.command("query-named-block-nodes")
    assert [n["node-name"] for n in nodes] == ["sda", "sdb", "sdc"], nodes
EOF
# A node added at run time is served through the filter.
qio "$(nbd_uri sdc)" 'write -P 0x77 0 64k'
qio "$(nbd_uri sdc)" 'read -P 0x77 0 64k' 'read -P 0 64k 960k'
cmp -n 65536 "$tmp/c.img" <(head -c 64k /dev/zero | tr '\0' '\167')
kill -TERM "$qdpid"
wait_exit "$qdpid"
assert_eq "$exit_status" 0 "exit status over qmpdisk after SIGTERM"
test ! -e "$tmp/qq.sock" || fail "QMP socket left behind (qmpdisk)"
