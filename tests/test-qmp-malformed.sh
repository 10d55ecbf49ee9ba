#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# Malformed input is answered the moment it is known to be bad (issue
# 12 item 3): nesting past 64 levels when the 65th bracket arrives, a
# message over 1 MiB when its size passes 1 MiB, without waiting for
# the rest; then the stream resynchronises (at the end of the bad
# value, or at a control character), or, for a bad value that never
# ends, that client alone is disconnected.  Other clients are served
# throughout.
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e
set -x

requires_built "$FILTER"
requires nbdkit --version
tmpdir

cat > "$tmp/bad.py" <<'EOF2'
import importlib, json, socket, sys, threading
qmp = importlib.import_module("qmp-client")
path = sys.argv[1]
DEEP = "JSON parse error, nesting deeper than 64 levels"
LARGE = "JSON parse error, message larger than 1 MiB"

def next_is(m, desc):
    r = m.recv_message()
    assert r == {"error": {"class": "GenericError", "desc": desc}}, r

def alive(m, id):
    r = m.cmd("query-version", id=id)
    assert r["id"] == id and r["return"]["qemu"]["major"] == 7, r

other = qmp.QMP(path)

# `[` 100000 times, then a newline: the error comes after 65 of them.
a = qmp.QMP(path)
a.send_raw(b"[" * 65)
next_is(a, DEEP)                # nothing more sent: it came at once
alive(other, "o1")
a.send_raw(b"[" * (100000 - 65) + b"\n")
# A control character ends the bad value; nothing else was answered
# in between: the next reply is the one to this command.
a.send_raw(b"\x01")
alive(a, "a1")

# The same nested inside a command, and closed: resync at its end.
a.send_raw(b'{"execute": "query-version", "arguments": {"a": ' + b"[" * 70)
next_is(a, DEEP)
a.send_raw(b"]" * 70 + b"}}")
alive(a, "a2")

# Over 1 MiB: the error comes when the size passes 1 MiB.
b = qmp.QMP(path)
b.send_raw(b'{"execute": "query-version", "arguments": {"x": "' +
           b"A" * (1024 * 1024))
next_is(b, LARGE)
alive(other, "o2")
b.send_raw(b"A" * 500000 + b'"}}')
alive(b, "b1")
# A bare string over 1 MiB likewise.
b.send_raw(b'"' + b"B" * (1024 * 1024 + 10))
next_is(b, LARGE)
b.send_raw(b'"')
alive(b, "b2")

# A control character cuts a message short: an error, then resync.
b.send_raw(b'{"execute": "query-version", \x02')
next_is(b, "JSON parse error, control character in a message")
alive(b, "b3")

# A bad value that never ends: after 16 MiB more that client alone is
# told why and disconnected; the others go on.
c = qmp.QMP(path)
c.send_raw(b"[" * 100)
next_is(c, DEEP)
sent = 0
closed = False
try:
    while sent < 32 * 1024 * 1024:
        c.send_raw(b"[" * 65536)
        sent += 65536
except (BrokenPipeError, ConnectionResetError):
    closed = True
next_is(c, "JSON parse error, a bad message went on past 16 MiB: "
           "disconnecting")
try:
    c.recv_message()
    raise AssertionError("still connected")
except (qmp.QMPClosed, ConnectionResetError):
    pass
assert closed or sent >= 16 * 1024 * 1024, sent
alive(other, "o3"); alive(a, "a3"); alive(b, "b4")
print("malformed input OK")
EOF2

start_nbdkit mf --filter="$FILTER" memory 1M qmp="$tmp/q.sock"
$PY "$tmp/bad.py" "$tmp/q.sock"
kill -0 "$pid" || fail "nbdkit died"
