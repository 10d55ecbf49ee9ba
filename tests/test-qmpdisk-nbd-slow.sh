#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# A slow NBD server behind blockdev-add (issue 8 item 7): one that
# accepts and never speaks used to hold the monitor for every client
# for as long as the kernel kept the connection.  Now connecting and
# the handshake are bounded by connect-timeout (default 10 s), and the
# monitor serves other clients meanwhile; the node name is checked
# again when the slow open ends.  For the plugin alone and under the
# checkpoint filter.  Timings are only ordered ("answered before the
# blockdev-add returned"), never compared with a speed.
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e
set -x

requires_built "$PLUGIN" "$FILTER"
requires nbdkit --version
requires $PY -c 'import nbd'
tmpdir

cat > "$tmp/slow.py" <<'EOF'
import os, socket, sys, threading, time, importlib
qmp = importlib.import_module("qmp-client")
qsock, tmp, timeout, realsock = sys.argv[1], sys.argv[2], int(sys.argv[3]), \
    sys.argv[4]
guard = timeout + 60            # failure guard only

# A server that accepts and never speaks; "relay" mode forwards to a
# real NBD server once released.
class Listener:
    def __init__(self, path, relay=None):
        self.path = path
        self.relay = relay
        self.accepted = threading.Event()
        self.release = threading.Event()
        self.conns = []
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.bind(path)
        self.s.listen(8)
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        while True:
            c, _ = self.s.accept()
            self.conns.append(c)
            self.accepted.set()
            if self.relay:
                threading.Thread(target=self.forward, args=(c,),
                                 daemon=True).start()

    def forward(self, c):
        self.release.wait()
        r = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        r.connect(self.relay)
        def pump(a, b):
            try:
                while True:
                    d = a.recv(65536)
                    if not d:
                        break
                    b.sendall(d)
            except OSError:
                pass
            for x in (a, b):
                try:
                    x.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        threading.Thread(target=pump, args=(r, c), daemon=True).start()
        pump(c, r)

def in_background(sock, name, args):
    """Run one command on its own client; returns (thread, result)."""
    res = {}
    def run():
        with qmp.QMP(sock, timeout=guard) as m:
            res["reply"] = m.cmd(name, args)
            res["done"] = time.monotonic()
    t = threading.Thread(target=run)
    t.start()
    return t, res

def nodes(m):
    return [n["node-name"] for n in m.command("query-named-block-nodes")]

m = qmp.QMP(qsock, timeout=guard)
before = nodes(m)

# ---- a server that never speaks: other clients are served, and the
# add fails with the timeout, naming the server ----
silent = Listener(tmp + "/silent.sock")
t, res = in_background(qsock, "blockdev-add",
                       {"driver": "nbd", "node-name": "slow",
                        "server": {"type": "unix",
                                   "path": tmp + "/silent.sock"}})
assert silent.accepted.wait(guard), "blockdev-add never connected"
with qmp.QMP(qsock, timeout=guard) as m2:
    v = m2.command("query-version")
    answered = time.monotonic()
    assert v["qemu"]["major"] == 7, v
    # Commands that need the monitor's state too.
    assert "slow" not in nodes(m2)
    assert "done" not in res, "blockdev-add returned before query-version"
t.join(guard)
assert not t.is_alive()
assert answered < res["done"]
reply = res["reply"]
assert "error" in reply, reply
desc = reply["error"]["desc"]
assert reply["error"]["class"] == "GenericError", reply
assert tmp + "/silent.sock" in desc, desc
assert "within %d s" % timeout in desc and "connect-timeout" in desc, desc
assert nodes(m) == before, nodes(m)

# ---- the name is checked again after a slow open: a relay to a real
# NBD server, released only after another client took the name ----
if realsock:
    relay = Listener(tmp + "/relay.sock", relay=realsock)
    t, res = in_background(qsock, "blockdev-add",
                           {"driver": "nbd", "node-name": "dup",
                            "server": {"type": "unix",
                                       "path": tmp + "/relay.sock"}})
    assert relay.accepted.wait(guard)
    open(tmp + "/dup.img", "wb").truncate(1 << 20)
    m.command("blockdev-add", {"driver": "file", "node-name": "dup",
                               "filename": tmp + "/dup.img"})
    assert "done" not in res
    relay.release.set()
    t.join(guard)
    assert not t.is_alive()
    reply = res["reply"]
    assert "error" in reply and "dup" in reply["error"]["desc"], reply
    n = {x["node-name"]: x for x in m.command("query-named-block-nodes")}
    assert n["dup"]["drv"] == "file", n["dup"]
    assert nodes(m) == before + ["dup"], nodes(m)
    # After the relay is released a good server gives a node at once.
    m.command("blockdev-add", {"driver": "nbd", "node-name": "fast",
                               "server": {"type": "unix",
                                          "path": tmp + "/relay.sock"}})
    assert nodes(m) == before + ["dup", "fast"], nodes(m)
m.close()
print("slow OK")
EOF

start_nbdkit real memory 16M
realsock=$sock

truncate -s 1M "$tmp/a.img"
start_nbdkit p "$PLUGIN" disk=sda:"$tmp/a.img" qmp="$tmp/p.qmp" \
             connect-timeout=3
mkdir "$tmp/p"
$PY "$tmp/slow.py" "$tmp/p.qmp" "$tmp/p" 3 "$realsock"
kill -0 "$pid" || fail "nbdkit p died"
kill_nbdkit "$pid"

start_nbdkit f --filter="$FILTER" "$PLUGIN" disk=sda:"$tmp/a.img" \
             qmp="$tmp/f.qmp" state="$tmp/fstate" connect-timeout=2
mkdir "$tmp/f"
$PY "$tmp/slow.py" "$tmp/f.qmp" "$tmp/f" 2 "$realsock"
kill -0 "$pid" || fail "nbdkit f died"
kill_nbdkit "$pid"

# The default is 10 s.
start_nbdkit d "$PLUGIN" disk=sda:"$tmp/a.img" qmp="$tmp/d.qmp"
mkdir "$tmp/d"
$PY "$tmp/slow.py" "$tmp/d.qmp" "$tmp/d" 10 ""
kill_nbdkit "$pid"

# Bad values are refused at start-up.
for v in 0 -1 x 86401; do
    if nbdkit -f -U - "$PLUGIN" disk=sda:"$tmp/a.img" connect-timeout=$v \
              --run true 2>"$tmp/err"; then
        fail "connect-timeout=$v accepted"
    fi
    assert_grep "connect-timeout" "$tmp/err"
done
