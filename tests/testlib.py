# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# What the tests' Python has in common: the QMP client, connecting to
# the monitor and to NBD exports, qemu-io, the queries most tests make,
# and running a test as sections.  functions.sh puts this directory on
# PYTHONPATH, and a script run from here has it on sys.path, so a
# test's Python starts with
#
#     from testlib import *
#
# (ckpt_model.py adds the bitmap and checkpoint models on top of it;
# incremental_apply.extents() lists an export's block status).
# Python 3 standard library only, plus libnbd's nbd module for the NBD
# helpers, imported when first used: tests without an NBD client do
# not need it.

import importlib
import json
import os
import subprocess
import sys
import time

_here = os.path.dirname(os.path.abspath(__file__))
if _here not in sys.path:
    sys.path.insert(0, _here)
qmp = importlib.import_module("qmp-client")
QMP, QMPError, QMPClosed = qmp.QMP, qmp.QMPError, qmp.QMPClosed

KiB = 1024
MiB = 1024 * KiB
CHUNK = 64 * KiB                # the default bitmap granularity


def fail(msg):
    raise AssertionError(msg)


def check(cond, msg):
    if not cond:
        fail(msg)


def script_args(*types):
    """The script's arguments, one for each of TYPES and converted by
    it (str, int, ...); exits if the shell passed another number."""
    args = sys.argv[1:]
    if len(args) != len(types):
        sys.exit("%s: %d arguments %r, expected %d"
                 % (sys.argv[0], len(args), args, len(types)))
    return [t(a) for t, a in zip(types, args)]


def file_bytes(path):
    """The contents of PATH (also a converter for script_args)."""
    with open(path, "rb") as f:
        return f.read()


# ---------------------------------------------------------------------
# The monitor (the product's, or qemu-storage-daemon's)

def connect(path, negotiate=True):
    """A QMP connection to PATH, negotiated unless NEGOTIATE is false;
    usable in a with statement."""
    return QMP(path, negotiate=negotiate)


def retry_cmd(m, name, args=None, tries=100, delay=0.05):
    """Run NAME until it succeeds, at most TRIES times DELAY seconds
    apart (the server sees an NBD client's disconnect a moment after
    the client); the last reply."""
    for _ in range(tries):
        r = m.cmd(name, args)
        if "return" in r:
            break
        time.sleep(delay)
    return r


def node_info(m, node):
    for n in m.command("query-named-block-nodes"):
        if n["node-name"] == node:
            return n
    fail("node %s not in query-named-block-nodes" % node)


def bitmap_infos(m, node):
    """[bitmap-info] of NODE, in the server's order."""
    return node_info(m, node).get("dirty-bitmaps", [])


def sha(m, node, name):
    return m.command("x-debug-block-dirty-bitmap-sha256",
                     {"node": node, "name": name})["sha256"]


def expect_error(m, cmd, args, desc=None, contains=None, cls="GenericError"):
    c, d = m.error(cmd, args)
    check(c == cls, "%s %r: class %s, expected %s (%s)" % (cmd, args, c,
                                                             cls, d))
    if desc is not None:
        check(d == desc, "%s %r: error %r, expected %r" % (cmd, args, d,
                                                             desc))
    if contains is not None:
        for w in ([contains] if isinstance(contains, str) else contains):
            check(w.lower() in d.lower(), "%s %r: error %r does not "
                  "mention %r" % (cmd, args, d, w))
    return d


def snapshot(m, nodes):
    """Everything observable about bitmaps and checkpoints: for
    comparing before/after a failed transaction."""
    out = {"nodes": m.command("query-named-block-nodes"),
           "checkpoints": m.command("query-checkpoints", {"size": True}),
           "sha": {}}
    for n in nodes:
        for b in bitmap_infos(m, n):
            out["sha"]["%s/%s" % (n, b["name"])] = sha(m, n, b["name"])
    return out


# ---------------------------------------------------------------------
# Data path

def uri(sock, export=""):
    return "nbd+unix:///%s?socket=%s" % (export, sock)


def nbd_open(target, base_allocation=False):
    """A libnbd handle connected to the URI TARGET, with the
    base:allocation meta context when BASE_ALLOCATION."""
    import nbd
    h = nbd.NBD()
    if base_allocation:
        h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    h.connect_uri(target)
    return h


def nbd_exports(sock):
    """{export name: size} as nbdinfo --list shows the server on SOCK."""
    out = subprocess.check_output(
        ["nbdinfo", "--list", "--json", "nbd+unix://?socket=" + sock])
    return {e["export-name"]: e["export-size"]
            for e in json.loads(out)["exports"]}


def qio(target, *cmds, readonly=False):
    """qemu-io -f raw on an NBD URI, each argument one -c command."""
    argv = ["qemu-io", "-f", "raw"]
    if readonly:
        argv.append("-r")
    argv.append(target)
    for c in cmds:
        argv += ["-c", c]
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       universal_newlines=True)
    low = p.stdout.lower()
    if p.returncode != 0 or "error" in low or "failed" in low:
        fail("qemu-io %s %s: rc %d\n%s" % (target, cmds, p.returncode,
                                           p.stdout))
    return p.stdout


def qio_cmd(op, offset, length, pattern=0x55):
    """A qemu-io command for OP in write/zero/discard."""
    if op == "write":
        return "write -P 0x%02x %d %d" % (pattern, offset, length)
    if op == "zero":
        return "write -z %d %d" % (offset, length)
    if op == "discard":
        return "discard %d %d" % (offset, length)
    fail("bad op %s" % op)


# ---------------------------------------------------------------------
# Running a test as sections: a failing section is reported and the
# others still run; the script then exits 1.

_failures = []


def proc_threads(pid):
    """The number of threads of process PID."""
    return len(os.listdir("/proc/%d/task" % pid))


def proc_fds(pid):
    """What PID's descriptors point to, sorted; one closing meanwhile
    is left out."""
    out = []
    for f in os.listdir("/proc/%d/fd" % pid):
        try:
            out.append(os.readlink("/proc/%d/fd/%s" % (pid, f)))
        except FileNotFoundError:
            pass
    return sorted(out)


def settled(sample, timeout=10):
    """SAMPLE() once it has stopped changing (three samples 0.1 s
    apart agree, at most TIMEOUT s): nbdkit's threads and descriptors
    of a connection go a moment after its client, so a count taken
    right after a client closed may still hold them."""
    last, same = sample(), 0
    t = time.monotonic()
    while same < 2 and time.monotonic() - t < timeout:
        time.sleep(0.1)
        now = sample()
        same = same + 1 if now == last else 0
        last = now
    return last


def check_comes_back(sample, want, what, timeout=10):
    """Fail unless SAMPLE() is WANT again within TIMEOUT s: a resource
    left behind stays, one still closing goes."""
    t = time.monotonic()
    while sample() != want:
        if time.monotonic() - t >= timeout:
            fail("%s: %r before, %r after" % (what, want, sample()))
        time.sleep(0.05)


def nbd_read(uri, n):
    """The first N bytes of the export at URI, read by MiB."""
    h = nbd_open(uri)
    data = b"".join(h.pread(min(MiB, n - o), o) for o in range(0, n, MiB))
    h.shutdown()
    return data


def job_events(m, job):
    """JOB's events so far on monitor M, as short strings, in order:
    JOB_STATUS_CHANGE as its status, block-job events by name."""
    out = []
    for ev in m.events:
        d = ev.get("data", {})
        if ev["event"] == "JOB_STATUS_CHANGE" and d["id"] == job:
            out.append(d["status"])
        elif ev["event"].startswith("BLOCK_JOB_") and (
                d.get("device") == job or d.get("id") == job):
            out.append(ev["event"])
    return out


def wait_ev(m, name, count=1, timeout=60):
    """Until COUNT events NAME have arrived (kept in m.events, in
    order)."""
    m.sock.settimeout(timeout)
    while sum(e["event"] == name for e in m.events) < count:
        msg = m.recv_message()
        if "event" in msg:
            m.events.append(msg)


def wait_status(m, job, status, timeout=30):
    """JOB's query-jobs entry once it is in STATUS."""
    t = time.monotonic()
    while True:
        js = [j for j in m.command("query-jobs") if j["id"] == job]
        if js and js[0]["status"] == status:
            return js[0]
        check(time.monotonic() - t < timeout,
              "job %s never %s: %r" % (job, status, js))
        time.sleep(0.02)


def wait_gone(m, job, timeout=60):
    """Until JOB is no longer listed by query-jobs."""
    t = time.monotonic()
    while any(j["id"] == job for j in m.command("query-jobs")):
        check(time.monotonic() - t < timeout, "job %s did not end" % job)
        time.sleep(0.05)


def section(title):
    """Decorator: run the function now as one section of the test."""
    def run(fn):
        print("--- %s" % title, flush=True)
        try:
            fn()
        except Exception as e:
            _failures.append((title, e))
            print("FAILED: %s: %s" % (title, e), file=sys.stderr, flush=True)
        return fn
    return run


def finish():
    if _failures:
        print("\n%d section(s) failed:" % len(_failures), file=sys.stderr)
        for t, e in _failures:
            print("  %s: %s" % (t, str(e).splitlines()[0][:300]),
                  file=sys.stderr)
        sys.exit(1)
    print("all sections passed")
