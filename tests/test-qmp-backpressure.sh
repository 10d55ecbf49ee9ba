#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# Clients that send and never read (issue 8 item 8): the monitor stops
# reading a client whose replies wait, so nothing is dropped and memory
# stays bounded; the number of clients is bounded (qmp-max-clients).
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e
set -x

requires_built "$FILTER"
requires nbdkit --version
tmpdir
# Under AddressSanitizer, freed memory waits in a quarantine (256 MiB by
# default) that counts in RSS: keep it small, so that RSS still shows
# what the monitor holds.
export ASAN_OPTIONS="quarantine_size_mb=8${ASAN_OPTIONS:+:$ASAN_OPTIONS}"

cat > "$tmp/stall.py" <<'EOF2'
import importlib, json, os, select, socket, sys, threading, time
qmp = importlib.import_module("qmp-client")
path, pid = sys.argv[1], int(sys.argv[2])
NCLIENTS = 64
PER_CLIENT = 20 * 1024 * 1024      # bytes of query-version each sends
RSS_BOUND = 64 * 1024               # KiB: nbdkit's VmRSS stays below this
# ... times 4 under a sanitizer, whose shadow memory and quarantine
# are counted in RSS too (unbounded, 60 such clients took 992 MB).
if os.environ.get("NC_SANITIZER", "none") not in ("", "none"):
    RSS_BOUND *= 4

def rss():
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

class Stalled:
    """A client that negotiates, then sends query-version with ids 0,
    1, ... and reads nothing."""
    def __init__(self):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)
        self.s.setblocking(False)
        self.pending = b'{"execute": "qmp_capabilities"}\n'
        self.next_id = 0
        self.sent = 0
    def refill(self):
        while len(self.pending) < 65536 and self.sent < PER_CLIENT:
            cmd = b'{"execute":"query-version","id":%d}\n' % self.next_id
            self.next_id += 1
            self.sent += len(cmd)
            self.pending += cmd
    def push(self):
        """Send what the socket takes now; False when blocked or done."""
        self.refill()
        if not self.pending:
            return False
        try:
            n = self.s.send(self.pending)
        except BlockingIOError:
            return False
        self.pending = self.pending[n:]
        return True

rss0 = rss()
clients = [Stalled() for _ in range(NCLIENTS)]
peak = rss0
# Push until every client is blocked for a while (or done).
idle_since = time.time()
while time.time() - idle_since < 1.5:
    _, w, _ = select.select([], [c.s for c in clients], [], 0.2)
    progress = False
    for c in clients:
        if c.s in w and c.push():
            progress = True
    if progress:
        idle_since = time.time()
    peak = max(peak, rss())
    assert peak < RSS_BOUND, "nbdkit RSS %d KiB with stalled clients" % peak
total = sum(c.sent for c in clients)
print("start RSS %d KiB, peak %d KiB, %d bytes sent by %d stalled clients"
      % (rss0, peak, total, NCLIENTS))
# Not one of them got through its 20 MiB: they are held back.
assert all(c.sent < PER_CLIENT for c in clients), [c.sent for c in clients]

# A 65th client is refused with a reason (the limit is 64).
extra = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
extra.settimeout(10)
extra.connect(path)
data = b""
while True:
    d = extra.recv(4096)
    if not d:
        break
    data += d
extra.close()
msgs = [json.loads(l) for l in data.split(b"\n") if l.strip()]
assert len(msgs) == 1, msgs
err = msgs[0]["error"]
assert err["class"] == "GenericError", err
assert err["desc"] == "Too many QMP clients: at most 64 (qmp-max-clients)", err

# Closing one stalled client makes room for a fresh one, which is
# answered at once although 63 others still wait.
clients.pop().s.close()
# The slot is freed when that client's thread has seen it go: until
# then a new client may still be refused (a RuntimeError here).
for attempt in range(100):
    try:
        fresh = qmp.QMP(path)
        break
    except (qmp.QMPClosed, ConnectionError, RuntimeError):
        time.sleep(0.05)
else:
    raise AssertionError("no room after a client left")
r = fresh.cmd("query-version", id="fresh")
assert r["id"] == "fresh" and r["return"]["qemu"]["major"] == 7, r
fresh.close()
peak = max(peak, rss())

# Two stalled clients start reading: each receives the greeting, the
# negotiation and every reply in order while it sends the rest.
def drain(c, result):
    c.s.setblocking(True)
    c.s.settimeout(30)
    buf = b""
    want = None
    got = []
    expect_id = 0
    msgs = 0
    while want is None or expect_id < want:
        if want is None and c.sent >= PER_CLIENT and not c.pending:
            want = c.next_id
        d = c.s.recv(1 << 20)
        assert d, "connection closed after %d replies" % expect_id
        buf += d
        lines = buf.split(b"\n")
        buf = lines.pop()
        for l in lines:
            if not l.strip():
                continue
            m = json.loads(l)
            msgs += 1
            if msgs == 1:
                assert "QMP" in m, m
            elif msgs == 2:
                assert m == {"return": {}}, m
            else:
                assert m["id"] == expect_id, (m, expect_id)
                assert m["return"]["qemu"]["minor"] == 2, m
                expect_id += 1
        if want is None and c.sent >= PER_CLIENT and not c.pending:
            want = c.next_id
    result.append(expect_id)

readers = clients[:2]
results = [[] for _ in readers]
errors = []
def run(c, res):
    try:
        drain(c, res)
    except Exception as e:
        errors.append(repr(e))
ts = [threading.Thread(target=run, args=(c, r)) for c, r in zip(readers, results)]
for t in ts:
    t.start()
# The readers' remaining commands, sent while they read.
while any(c.pending or c.sent < PER_CLIENT for c in readers) and not errors:
    _, w, _ = select.select([], [c.s for c in readers if c.pending or c.sent < PER_CLIENT], [], 1)
    for c in readers:
        if c.s in w:
            c.refill()
            try:
                n = c.s.send(c.pending)
            except (BlockingIOError, socket.timeout):
                continue
            c.pending = c.pending[n:]
    peak = max(peak, rss())
for t in ts:
    t.join(120)
assert not errors, errors
for c, r in zip(readers, results):
    assert r == [c.next_id], (r, c.next_id)
    print("a reader got all %d replies in order" % c.next_id)
assert peak < RSS_BOUND, "nbdkit RSS %d KiB" % peak
print("peak RSS %d KiB (bound %d KiB)" % (peak, RSS_BOUND))
for c in clients:
    c.s.close()
print("backpressure OK")
EOF2

start_nbdkit bp --filter="$FILTER" memory 1M qmp="$tmp/q.sock"
$PY "$tmp/stall.py" "$tmp/q.sock" "$pid"
kill -0 "$pid" || fail "nbdkit died"
$QMP "$tmp/q.sock" query-version > "$tmp/out"
assert_grep '"minor": 2' "$tmp/out"
kill_nbdkit "$pid"

# qmp-max-clients=N: the N+1st client is told why and closed; a
# client that leaves makes room; bad values are refused at start-up.
start_nbdkit mc --filter="$FILTER" memory 1M qmp="$tmp/m.sock" qmp-max-clients=2
$PY - "$tmp/m.sock" <<'EOF2'
import importlib, json, socket, sys, time
qmp = importlib.import_module("qmp-client")
path = sys.argv[1]
a, b = qmp.QMP(path), qmp.QMP(path)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
s.connect(path)
f = s.makefile("rb")
m = json.loads(f.readline())
assert m == {"error": {"class": "GenericError",
             "desc": "Too many QMP clients: at most 2 (qmp-max-clients)"}}, m
assert f.readline() == b"", "the refused client was not closed"
s.close()
assert a.cmd("query-version", id=1)["id"] == 1
a.close()
for attempt in range(100):
    try:
        c = qmp.QMP(path)
        break
    except (qmp.QMPClosed, ConnectionError, RuntimeError):
        time.sleep(0.05)
else:
    raise AssertionError("no room after a client left")
assert c.cmd("query-version", id=2)["id"] == 2
assert b.cmd("query-version", id=3)["id"] == 3
print("max-clients OK")
EOF2
kill_nbdkit "$pid"
for bad in 0 -1 x 100000000; do
    if nbdkit -U - --filter="$FILTER" memory 1M qmp="$tmp/x.sock" \
              qmp-max-clients=$bad --run 'exit 0' 2>"$tmp/err"; then
        fail "qmp-max-clients=$bad accepted"
    fi
    assert_grep "qmp-max-clients" "$tmp/err"
done
