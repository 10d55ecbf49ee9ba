#!/usr/bin/env bash
# Disks added, removed and resized at run time over QMP, served over
# NBD by node name: qmpdisk alone, then under the checkpoint filter.
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e
set -x

requires_built "$PLUGIN" "$FILTER"
requires nbdkit --version
requires nbdinfo --version
requires $PY -c 'import nbd'
tmpdir

cat > "$tmp/hotplug.py" <<'EOF'
import os
import nbd
from testlib import *
qsock, nsock, remsock, tmp, port, qsock2 = script_args(str, str, str, str,
                                                       str, str)
M = 1 << 20

# An NBD connection to NODE (this test's connect(), not testlib's QMP
# one: the monitor is m below).
def connect(node, s=nsock):
    return nbd_open(uri(s, node))

def exports():
    return nbd_exports(nsock)

def cannot_open(node):
    try:
        connect(node).shutdown()
    except nbd.Error:
        return True
    return False

def err(m, name, args, *words):
    cls, desc = m.error(name, args)
    assert cls == "GenericError", (name, args, cls, desc)
    for w in words:
        assert w.lower() in desc.lower(), (name, args, desc, w)
    return desc

m = QMP(qsock)

def nodes():
    return {n["node-name"]: n for n in m.command("query-named-block-nodes")}

assert list(nodes()) == ["sda"], nodes()

# ---- blockdev-add file ----
data = os.urandom(2 * M)
with open(tmp + "/c.img", "wb") as f:
    f.write(data)
assert m.command("blockdev-add", {"driver": "file", "node-name": "sdc",
                                  "filename": tmp + "/c.img"}) == {}
n = nodes()
assert list(n) == ["sda", "sdc"], n
assert n["sdc"]["drv"] == "file" and n["sdc"]["file"] == tmp + "/c.img", n
assert n["sdc"]["ro"] is False and n["sdc"]["image"]["virtual-size"] == 2 * M
assert exports().get("sdc") == 2 * M, exports()
h = connect("sdc")
assert h.get_size() == 2 * M and not h.is_read_only()
assert h.pread(2 * M, 0) == data
h.pwrite(b"\xc3" * 65536, M, nbd.CMD_FLAG_FUA)
with open(tmp + "/c.img", "rb") as f:
    f.seek(M)
    assert f.read(65536) == b"\xc3" * 65536
h.shutdown()

# read-only
open(tmp + "/r.img", "wb").write(b"\x01" * M)
m.command("blockdev-add", {"driver": "file", "node-name": "sdr",
                           "filename": tmp + "/r.img", "read-only": True})
assert nodes()["sdr"]["ro"] is True, nodes()
h = connect("sdr")
assert h.is_read_only() and h.pread(512, 0) == b"\x01" * 512
try:
    h.pwrite(b"x" * 512, 0)
    raise AssertionError("wrote to a read-only node")
except nbd.Error:
    pass
h.shutdown()
assert open(tmp + "/r.img", "rb").read() == b"\x01" * M

# ---- blockdev-add errors: nothing is added ----
before = nodes()
err(m, "blockdev-add", {"driver": "file", "node-name": "sda",
                        "filename": tmp + "/c.img"}, "sda")
err(m, "blockdev-add", {"driver": "file", "node-name": "sdx",
                        "filename": tmp + "/nope.img"}, "nope.img")
err(m, "blockdev-add", {"driver": "qcow2", "node-name": "sdx",
                        "filename": tmp + "/c.img"}, "driver", "qcow2")
err(m, "blockdev-add", {"driver": "file", "node-name": "1x",
                        "filename": tmp + "/c.img"}, "1x")
err(m, "blockdev-add", {"driver": "file", "node-name": "sdx"},
    "Parameter 'filename' is missing")
err(m, "blockdev-add", {"driver": "host_device", "node-name": "sdx",
                        "filename": tmp + "/c.img"}, "c.img")
err(m, "blockdev-add", {"driver": "nbd", "node-name": "sdx"}, "server")
err(m, "blockdev-add", {"driver": "nbd", "node-name": "sdx",
                        "server": {"type": "unix",
                                   "path": tmp + "/nope.sock"}})
err(m, "blockdev-add", {"driver": "nbd", "node-name": "sdx",
                        "server": {"type": "bogus"}})
err(m, "blockdev-add", {"driver": "file", "node-name": "sdx",
                        "filename": tmp})
assert nodes() == before, nodes()
assert "sdx" not in exports() and cannot_open("sdx")

# ---- blockdev-del: refused while connected ----
h = connect("sdc")
h2 = connect("sdc")
desc = err(m, "blockdev-del", {"node-name": "sdc"})
assert "sdc" in nodes()
# The connections still work after the refusal.
assert h.pread(65536, M) == b"\xc3" * 65536
h.shutdown()
desc = err(m, "blockdev-del", {"node-name": "sdc"})
h2.pwrite(b"\x3c" * 512, 0)
h2.shutdown()
del h, h2
# The server may see the disconnects a moment later.
r = retry_cmd(m, "blockdev-del", {"node-name": "sdc"})
assert r == {"return": {}}, r
assert "sdc" not in nodes() and "sdc" not in exports()
assert cannot_open("sdc")
err(m, "blockdev-del", {"node-name": "sdc"}, "sdc")
err(m, "blockdev-del", {"node-name": ""})
# The file is left alone, with the data written before.
with open(tmp + "/c.img", "rb") as f:
    c = f.read()
assert len(c) == 2 * M and c[:512] == b"\x3c" * 512
assert c[M:M + 65536] == b"\xc3" * 65536
# The name is free again.
m.command("blockdev-add", {"driver": "file", "node-name": "sdc",
                           "filename": tmp + "/c.img"})
assert connect("sdc").pread(512, 0) == b"\x3c" * 512

# ---- block_resize ----
m.command("block_resize", {"node-name": "sdc", "size": 4 * M})
assert os.path.getsize(tmp + "/c.img") == 4 * M
assert nodes()["sdc"]["image"]["virtual-size"] == 4 * M
assert exports()["sdc"] == 4 * M
h = connect("sdc")
assert h.get_size() == 4 * M
assert h.pread(M, 3 * M) == bytes(M)
h.pwrite(b"\x99" * 4096, 4 * M - 4096)
assert h.pread(512, 0) == b"\x3c" * 512
h.shutdown()
with open(tmp + "/c.img", "rb") as f:
    f.seek(4 * M - 4096)
    assert f.read() == b"\x99" * 4096
# A disk from the command line grows too.
m.command("block_resize", {"node-name": "sda", "size": 3 * M})
assert os.path.getsize(tmp + "/a.img") == 3 * M
assert connect("sda").get_size() == 3 * M
# Errors: unknown node, read-only node; the size stays.
err(m, "block_resize", {"node-name": "nosuch", "size": M}, "nosuch")
err(m, "block_resize", {"node-name": "sdr", "size": 2 * M})
assert os.path.getsize(tmp + "/r.img") == M
assert nodes()["sdr"]["image"]["virtual-size"] == M

# ---- blockdev-add nbd: a disk served by another NBD server ----
m.command("blockdev-add", {"driver": "nbd", "node-name": "rem",
                           "server": {"type": "unix", "path": remsock},
                           "export": ""})
n = nodes()["rem"]
assert n["drv"] == "nbd" and n["image"]["virtual-size"] == 16 * M, n
assert exports()["rem"] == 16 * M
h = connect("rem")
pattern = os.urandom(M)
h.pwrite(pattern, 5 * M, nbd.CMD_FLAG_FUA)
h.flush()
direct = connect("", remsock)
assert direct.pread(M, 5 * M) == pattern     # landed on the other server
direct.pwrite(b"\x42" * 4096, 0)
assert h.pread(4096, 0) == b"\x42" * 4096    # and the other way round
h.zero(M, 5 * M)
assert direct.pread(M, 5 * M) == bytes(M)
h.shutdown()
direct.shutdown()
err(m, "block_resize", {"node-name": "rem", "size": 32 * M})
assert nodes()["rem"]["image"]["virtual-size"] == 16 * M
r = retry_cmd(m, "blockdev-del", {"node-name": "rem"})
assert r == {"return": {}}, r

# inet: nbdkit's pattern plugin on a TCP port, the port as a string
# (QEMU's SocketAddress has it so).
m.command("blockdev-add", {"driver": "nbd", "node-name": "tcp",
                           "server": {"type": "inet", "host": "127.0.0.1",
                                      "port": port},
                           "read-only": True})
assert nodes()["tcp"]["ro"] is True
h = connect("tcp")
assert h.is_read_only() and h.get_size() == 16 * M
for off in (0, 8, 4096, 15 * M):
    assert h.pread(8, off) == off.to_bytes(8, "big"), off
h.shutdown()
# Nested arguments are checked as QEMU does: a port that is not a
# string, and an unknown member, are errors naming them (not silently
# ignored, which would connect to the default port 10809).
err(m, "blockdev-add", {"driver": "nbd", "node-name": "tcp2",
                        "server": {"type": "inet", "host": "127.0.0.1",
                                   "port": int(port)}}, "port")
err(m, "blockdev-add", {"driver": "nbd", "node-name": "tcp2",
                        "server": {"type": "inet", "host": "127.0.0.1",
                                   "port": port, "bogus": 1}}, "bogus")
assert "tcp2" not in nodes()

# qcow2 through qemu-nbd: the image gets the data.
m.command("blockdev-add", {"driver": "nbd", "node-name": "qc",
                           "server": {"type": "unix", "path": qsock2}})
h = connect("qc")
assert h.get_size() == 8 * M
h.pwrite(b"\x7e" * 65536, 2 * M)
h.flush()
h.shutdown()
r = retry_cmd(m, "blockdev-del", {"node-name": "qc"})
assert r == {"return": {}}, r

# ---- query-named-block-nodes reflects it all ----
n = nodes()
assert list(n) == ["sda", "sdr", "sdc", "tcp"], list(n)
assert n["tcp"]["drv"] == "nbd" and n["sdc"]["drv"] == "file", n
assert {k: v["image"]["virtual-size"] for k, v in n.items()} == \
    {"sda": 3 * M, "sdr": M, "sdc": 4 * M, "tcp": 16 * M}, n
assert set(exports()) >= {"sda", "sdr", "sdc", "tcp"}, exports()
for k in ("sdr", "sdc", "tcp"):
    r = retry_cmd(m, "blockdev-del", {"node-name": k})
    assert r == {"return": {}}, (k, r)
assert list(nodes()) == ["sda"], nodes()
m.close()
print("hotplug OK")
EOF

# Other NBD servers for blockdev-add driver=nbd: nbdkit memory on a
# Unix socket, nbdkit pattern on TCP, qemu-nbd serving a qcow2 image.
start_nbdkit rem memory 16M
remsock=$sock
port=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')
start_nbdkit tcp -i 127.0.0.1 -p "$port" pattern 16M

requires qemu-nbd --version
requires qemu-img --version
qemu-img create -q -f qcow2 "$tmp/q.qcow2" 8M
qemu-nbd --fork --pid-file="$tmp/qemu-nbd.pid" -t -e 4 -f qcow2 \
         -k "$tmp/qn.sock" "$tmp/q.qcow2"
cleanup_fn kill_qemu_nbd
kill_qemu_nbd ()
{
    local p
    p=$(cat "$tmp/qemu-nbd.pid" 2>/dev/null) || return 0
    kill "$p" 2>/dev/null
    for (( i = 0; i < 100; ++i )); do
        kill -0 "$p" 2>/dev/null || break
        sleep 0.05
    done
    rm -f "$tmp/qemu-nbd.pid"
}

# run_hotplug NAME [--filter=...]: the checks above against a fresh
# qmpdisk with one disk sda.
run_hotplug ()
{
    local name="$1"
    shift
    rm -f "$tmp"/*.img
    truncate -s 1M "$tmp/a.img"
    start_nbdkit "$name" "$@" "$PLUGIN" disk=sda:"$tmp/a.img" \
                 qmp="$tmp/$name.q"
    $PY "$tmp/hotplug.py" "$tmp/$name.q" "$sock" "$remsock" "$tmp" \
        "$port" "$tmp/qn.sock"
    kill -0 "$pid" || fail "nbdkit $name died"
    kill_nbdkit "$pid"
}

run_hotplug plain
run_hotplug filtered --filter="$FILTER"

# What went through qmpdisk into qemu-nbd is in the qcow2 image.
kill_qemu_nbd
qemu-io -f qcow2 -r "$tmp/q.qcow2" -c 'read -P 0x7e 2M 64k' -c 'read -P 0 0 2M' \
    > "$tmp/out"
if grep -qi 'fail' "$tmp/out"; then cat "$tmp/out"; fail "qcow2 content"; fi

# Under nbdkit -r the monitor must not make the command-line disks
# writable: block_resize is refused, and the file is never opened for
# writing (access mode in /proc/PID/fdinfo).
truncate -s 1M "$tmp/a.img"
start_nbdkit ro -r "$PLUGIN" disk=sda:"$tmp/a.img" qmp="$tmp/ro.q"
if $QMP "$tmp/ro.q" block_resize '{"node-name": "sda", "size": 2097152}' \
        2>"$tmp/err"; then
    fail "block_resize allowed under nbdkit -r"
fi
assert_grep "GenericError" "$tmp/err"
assert_eq "$(stat -c %s "$tmp/a.img")" 1048576 "a.img size under -r"
assert_eq "$(nbdinfo --size "$(nbd_uri sda)")" 1048576 "sda size under -r"
for fd in /proc/$pid/fd/*; do
    if [ "$(readlink "$fd")" = "$tmp/a.img" ]; then
        flags=$(awk '/^flags:/ { print $2 }' /proc/$pid/fdinfo/${fd##*/})
        assert_eq $(( 0$flags & 3 )) 0 "access mode of a.img under -r"
    fi
done
