#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# The QMP wire over the real socket (docs/qmp-reference.md, "Messages and errors"), for both
# hosts of the monitor: the qmpdisk plugin alone and the checkpoint
# filter over a stock plugin.  Bad input hurts only the client that
# sent it; the server keeps serving QMP and data throughout.
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e
set -x

requires_built "$FILTER"
requires nbdkit --version
requires qemu-io --version
requires $PY -c 'import socket'
tmpdir

cat > "$tmp/proto.py" <<'EOF'
import json, os, re, socket, threading, time
from testlib import *
[path] = script_args(str)
version = os.environ.get("PACKAGE_VERSION")

def raw_client():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    return s

def check_err(reply, cls, desc=None, desc_re=None, id=None):
    assert "error" in reply, reply
    assert reply["error"]["class"] == cls, reply
    if desc is not None:
        assert reply["error"]["desc"] == desc, reply
    if desc_re is not None:
        assert re.search(desc_re, reply["error"]["desc"]), reply
    if id is not None:
        assert reply.get("id") == id, reply
    else:
        assert "id" not in reply, reply

def alive(m):
    """The connection M still answers commands."""
    r = m.cmd("query-version", id="alive")
    assert r.get("id") == "alive" and r["return"]["qemu"]["major"] == 7, r

# ---- greeting, and everything before qmp_capabilities ----
m = connect(path, negotiate=False)
g = m.greeting
assert g["QMP"]["version"]["qemu"] == {"major": 7, "minor": 2, "micro": 0}, g
assert g["QMP"]["capabilities"] == [], g
assert set(g["QMP"]) == {"version", "capabilities"}, g
pkg = g["QMP"]["version"]["package"]
if version:
    assert pkg == "nbdkit-checkpoint " + version, g
else:
    assert re.fullmatch(r"nbdkit-checkpoint \d+\.\d+\.\d+", pkg), g
for name in ("query-version", "query-commands", "quit", "no-such-command",
             "query-named-block-nodes"):
    check_err(m.cmd(name, id=name), "CommandNotFound", id=name)
# qmp_capabilities with arguments it does not take
check_err(m.cmd("qmp_capabilities", {"enable": ["oob"]}), "GenericError")
check_err(m.cmd("qmp_capabilities", {"bogus": 1}), "GenericError",
          "Parameter 'bogus' is unexpected")
r = m.cmd("qmp_capabilities", id=1)
assert r == {"return": {}, "id": 1}, r
# A second negotiation is refused, as in QEMU.
check_err(m.cmd("qmp_capabilities"), "CommandNotFound")
alive(m)

# ---- commands and argument checking ----
r = m.command("query-version")
assert r["qemu"] == {"major": 7, "minor": 2, "micro": 0}, r
assert r["package"] == pkg, r
names = [c["name"] for c in m.command("query-commands")]
for c in ("qmp_capabilities", "query-version", "query-commands", "quit",
          "query-named-block-nodes"):
    assert c in names, names
assert len(names) == len(set(names)), names
check_err(m.cmd("no-such-command"), "CommandNotFound",
          "The command no-such-command has not been found")
check_err(m.cmd("query-version", {"x": 1}), "GenericError",
          "Parameter 'x' is unexpected")
check_err(m.cmd("query-named-block-nodes", {"flat": "yes"}), "GenericError",
          "Invalid parameter type for 'flat', expected: boolean")
if "blockdev-del" in names:
    check_err(m.cmd("blockdev-del"), "GenericError",
              "Parameter 'node-name' is missing")
    check_err(m.cmd("blockdev-del", {"node-name": 5}), "GenericError",
              "Invalid parameter type for 'node-name', expected: string")
    check_err(m.cmd("blockdev-del", {"node-name": "nosuch"}), "GenericError")
    check_err(m.cmd("blockdev-add", {"node-name": "x", "filename": "/x"}),
              "GenericError", "Parameter 'driver' is missing")
    check_err(m.cmd("blockdev-add", {"driver": "file", "node-name": "x",
                                     "filename": "/dev/null", "bogus": 1}),
              "GenericError", "Parameter 'bogus' is unexpected")
    check_err(m.cmd("block_resize", {"node-name": "x", "size": "big"}),
              "GenericError",
              r"Invalid parameter type for 'size', expected: integer")
    check_err(m.cmd("block_resize", {"node-name": "x", "size": -1}),
              "GenericError")
    # Nothing was added by the failures.
    nodes = [n["node-name"] for n in m.command("query-named-block-nodes")]
    assert "x" not in nodes, nodes

# ---- request objects QEMU refuses ----
def raw(m, data):
    m.send_raw(data)
    return m.recv_reply()
check_err(raw(m, b'{"execute": 42}\n'), "GenericError",
          "QMP input member 'execute' must be a string")
check_err(raw(m, b'{"arguments": {}}\n'), "GenericError",
          "QMP input lacks member 'execute'")
check_err(raw(m, b'{"execute": "query-version", "arguments": []}\n'),
          "GenericError", "QMP input member 'arguments' must be an object")
check_err(raw(m, b'{"execute": "query-version", "foo": 1, "id": 7}\n'),
          "GenericError", "QMP input member 'foo' is unexpected", id=7)
check_err(raw(m, b'[1, 2]\n'), "GenericError",
          "QMP input must be a JSON object")
check_err(raw(m, b'"just a string"\n'), "GenericError")
check_err(raw(m, b'42\n'), "GenericError")
alive(m)

# ---- id echo: any JSON value, on success and on error ----
for id in (0, 17, "abc", "", [1, "x"], {"a": {"b": None}}, None, True, 1.5):
    req = {"execute": "query-version", "id": id}
    r = raw(m, json.dumps(req).encode())
    assert "return" in r and r["id"] == id, (id, r)
    req["execute"] = "nope"
    r = raw(m, json.dumps(req).encode())
    assert r["error"]["class"] == "CommandNotFound" and r["id"] == id, r
r = m.cmd("query-version")
assert "id" not in r, r

# ---- bad JSON, then a valid command on the same connection ----
for bad in (b'{"execute": }', b'{"execute": "query-version",}',
            b'{"execute" "query-version"}', b'{\'execute\': 1}',
            b'{"execute": "query-version", "execute": "quit"}',
            b'{"execute": tru}'):
    r = raw(m, bad + b"\n")
    check_err(r, "GenericError", desc_re=r"^JSON parse error")
    alive(m)
# A stray closing bracket
check_err(raw(m, b"}\n"), "GenericError", desc_re=r"^JSON parse error")
alive(m)

# ---- oversized message (> 1 MiB): error, then the stream goes on ----
big = b'{"execute": "query-version", "arguments": {"x": "' + \
      b"A" * (1024 * 1024 + 100) + b'"}}\n'
r = raw(m, big)
check_err(r, "GenericError", desc_re=r"(?i)(1 MiB|large|long|size)")
alive(m)
# Just under the limit parses (and fails on the argument, not on size).
ok = b'{"execute": "query-version", "arguments": {"x": "' + \
     b"A" * (1024 * 1024 - 200) + b'"}}\n'
check_err(raw(m, ok), "GenericError", "Parameter 'x' is unexpected")
alive(m)

# ---- nesting: 64 levels are fine, 65 are an error ----
def nested(k):
    return (b'{"execute": "query-version", "arguments": {"a": ' +
            b"[" * k + b"]" * k + b"}}\n")
check_err(raw(m, nested(62)), "GenericError", "Parameter 'a' is unexpected")
check_err(raw(m, nested(63)), "GenericError", desc_re=r"(?i)nest|deep|depth")
alive(m)
check_err(raw(m, nested(100000)), "GenericError",
          desc_re=r"(?i)nest|deep|depth")
alive(m)

# ---- pipelining and fragmentation ----
m.send_raw(b'{"execute":"query-version","id":1}{"execute":"nope","id":2}'
           b'\n{"execute":"query-commands","id":3}')
rs = [m.recv_reply() for _ in range(3)]
assert [r.get("id") for r in rs] == [1, 2, 3], rs
assert "return" in rs[0] and "error" in rs[1] and "return" in rs[2], rs
msg = b'{"execute": "query-version", "id": "frag"}'
for i in range(len(msg)):
    m.send_raw(msg[i:i + 1])
    time.sleep(0.001)
r = m.recv_reply()
assert r["id"] == "frag" and "return" in r, r

# ---- invalid UTF-8: an error (or a disconnect of this client only) ----
u = connect(path)
try:
    r = raw(u, b'{"execute": "query-\xff\xfe", "id": 1}\n')
    assert "error" in r, r
    alive(u)
    r = raw(u, b'{"execute": "query-version", "id": "\xc3\x28"}\n')
    assert "error" in r, r
    alive(u)
except (QMPClosed, ConnectionError):
    pass
u.close()
alive(m)

# ---- several clients at once ----
a, b = connect(path), connect(path)
c = connect(path, negotiate=False)
a.send_raw(b'{"execute": "query-version", "id": "a1"}')
b.send_raw(b'{"execute": "query-commands", "id": "b1"}')
ra, rb = a.recv_reply(), b.recv_reply()
assert ra["id"] == "a1" and "qemu" in ra["return"], ra
assert rb["id"] == "b1" and isinstance(rb["return"], list), rb
check_err(c.cmd("query-version"), "CommandNotFound")   # not negotiated
c.command("qmp_capabilities")
alive(c)
# Clients run in parallel: a hammering thread does not starve others.
errors = []
def hammer(cl, n):
    try:
        for i in range(n):
            r = cl.cmd("query-version", id=i)
            assert r["id"] == i, r
    except Exception as e:
        errors.append(e)
ts = [threading.Thread(target=hammer, args=(x, 300)) for x in (a, b, c)]
for t in ts:
    t.start()
for t in ts:
    t.join(30)
assert not errors, errors

# ---- clients that misbehave and vanish ----
# Mid-message, mid-oversized-message, before reading the greeting.
s = raw_client(); s.sendall(b'{"execute": "query-ver'); s.close()
s = raw_client(); s.sendall(b'{"x": "' + b"B" * 300000); s.close()
s = raw_client(); s.close()
s = raw_client(); s.sendall(b"[" * 5000); s.close()
s = raw_client(); s.recv(10); s.shutdown(socket.SHUT_WR)
# A client that sends lots and never reads stalls only itself.
slow = raw_client()
slow.settimeout(0.5)
slow.sendall(b'{"execute": "qmp_capabilities"}')
try:
    for i in range(2000):
        slow.sendall(b'{"execute": "query-commands"}')
except (socket.timeout, BlockingIOError, ConnectionError):
    pass
t0 = time.time()
alive(a); alive(b)
assert time.time() - t0 < 2, "a client that does not read slows others"
slow.close()
s.close()
# Many short connections
for i in range(50):
    x = connect(path)
    x.close()
for x in (a, b, c, m):
    alive(x)
    x.close()
print("protocol OK")
EOF

# check_monitor QMPSOCK NBD-URI: the wire checks, then data still flows
# and the process is alive.
check_monitor ()
{
    assert_eq "$(stat -c %a "$1")" 600 "QMP socket mode"
    assert_eq "$(stat -c %U "$1")" "$(id -un)" "QMP socket owner"
    $PY "$tmp/proto.py" "$1"
    kill -0 "$pid" || fail "nbdkit died"
    qio "$2" 'write -P 0x5a 0 64k' 'read -P 0x5a 0 64k'
    assert_eq "$($QMP "$1" query-version | $PY -c 'import json,sys;
print(json.load(sys.stdin)["qemu"]["minor"])')" 2 "CLI query-version"
}

# ---- the filter hosts the monitor (over memory) ----
start_nbdkit fm --filter="$FILTER" memory 1M qmp="$tmp/f.sock"
check_monitor "$tmp/f.sock" "$(nbd_uri '')"
fmpid=$pid

# The CLI: return as JSON; error on stderr with exit 1; --raw.
out="$($QMP "$tmp/f.sock" query-named-block-nodes '{"flat": true}')"
assert_eq "$(echo "$out" | $PY -c 'import json,sys;
print(json.load(sys.stdin)[0]["node-name"])')" disk "CLI return"
if $QMP "$tmp/f.sock" nope 2>"$tmp/err"; then fail "CLI: no error"; fi
assert_grep '^CommandNotFound: The command nope has not been found$' "$tmp/err"
$QMP --raw "$tmp/f.sock" '{"execute": }' > "$tmp/out"
assert_grep '"class": "GenericError"' "$tmp/out"
$QMP --raw --no-negotiate --replies 2 "$tmp/f.sock" \
     '{"execute":"query-version","id":1}{"execute":"qmp_capabilities","id":2}' \
     > "$tmp/out"
assert_eq "$(wc -l < "$tmp/out")" 2 "raw replies"
assert_grep '"class": "CommandNotFound".*"id": 1' "$tmp/out"
assert_grep '"return": \{\}.*"id": 2' "$tmp/out"

# ---- socket path checks ----
# A live monitor's socket is not taken over.
if nbdkit -U - --filter="$FILTER" memory 1M qmp="$tmp/f.sock" \
          --run 'exit 0' 2>"$tmp/err"; then
    fail "a second nbdkit took over a live QMP socket"
fi
assert_grep "f\.sock" "$tmp/err"
$PY "$abs_srcdir/qmp-client.py" "$tmp/f.sock" query-version >/dev/null
# A regular file is refused and left alone.
echo precious > "$tmp/regular"
if nbdkit -U - --filter="$FILTER" memory 1M qmp="$tmp/regular" \
          --run 'exit 0' 2>"$tmp/err"; then
    fail "nbdkit started on a regular file as QMP socket"
fi
assert_grep "regular.*not a socket|not a socket.*regular" "$tmp/err"
assert_eq "$(cat "$tmp/regular")" precious "the regular file"
# A directory too.
mkdir "$tmp/dir"
if nbdkit -U - --filter="$FILTER" memory 1M qmp="$tmp/dir" \
          --run 'exit 0' 2>"$tmp/err"; then
    fail "nbdkit started on a directory as QMP socket"
fi
test -d "$tmp/dir"
# A stale socket (its server died without removing it) is reused.
$PY -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])' \
    "$tmp/stale.sock"
test -S "$tmp/stale.sock"
start_nbdkit st --filter="$FILTER" memory 1M qmp="$tmp/stale.sock"
stpid=$pid
$QMP "$tmp/stale.sock" query-version >/dev/null
assert_eq "$(stat -c %a "$tmp/stale.sock")" 600 "reused socket mode"
kill_nbdkit "$stpid"
test ! -e "$tmp/stale.sock" || fail "QMP socket not removed on exit"
# A socket path too long for sun_path is an error, not truncation.
longdir="$tmp/$(printf 'd%.0s' {1..100})"
mkdir -p "$longdir"
if nbdkit -U - --filter="$FILTER" memory 1M qmp="$longdir/q.sock" \
          --run 'exit 0' 2>"$tmp/err"; then
    fail "nbdkit accepted a QMP path longer than sun_path"
fi
assert_grep "(too long|long)" "$tmp/err"
kill -0 "$fmpid" || fail "the first nbdkit died"
qio "$(nbd_uri '' "$tmp/fm.sock")" 'read -P 0x5a 0 64k'

# ---- the plugin hosts the monitor (qmpdisk alone) ----
requires_built "$PLUGIN"
truncate -s 1M "$tmp/a.img"
start_nbdkit qd "$PLUGIN" disk=sda:"$tmp/a.img" qmp="$tmp/p.sock"
check_monitor "$tmp/p.sock" "$(nbd_uri sda)"
cmp -n 65536 "$tmp/a.img" <(head -c 64k /dev/zero | tr '\0' '\132')
