#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# A small QMP client for the tests(python3 standard library only).
#
# As a module:
#     sys.path.insert(0, srcdir); qmp = importlib.import_module("qmp-client")
#     with qmp.QMP(path) as m:          # connects, reads greeting, negotiates
#         m.greeting                     # the greeting dict
#         m.command("query-version")    # the "return" value, or QMPError
#         m.cmd("blockdev-add", {"driver": "file", ...})  # the whole reply
#         m.events                       # events received so far
#
# As a command:
#     qmp-client.py SOCKET COMMAND [JSON-ARGS]
#         prints the "return" as JSON; on an error prints
#         "CLASS: DESC" on stderr and exits 1.
#     qmp-client.py --raw [--no-negotiate] [--replies N] SOCKET DATA
#         sends DATA("-" = stdin) as raw bytes after the greeting(and
#         negotiation unless --no-negotiate), then prints the next N
#         messages(default 1), one JSON object per line.

import json
import os
import socket
import sys
import time

DEFAULT_TIMEOUT = 10


class QMPError(Exception):
    def __init__(self, reply):
        self.reply = reply
        err = reply.get("error", {})
        self.cls = err.get("class")
        self.desc = err.get("desc")
        super().__init__("%s: %s" % (self.cls, self.desc))


class QMPClosed(Exception):
    pass


class QMP:
    def __init__(self, path, negotiate=True, timeout=DEFAULT_TIMEOUT):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""
        self.events = []
        self.greeting = self.recv_message()
        if "QMP" not in self.greeting:
            raise RuntimeError("bad greeting: %r" % self.greeting)
        if negotiate:
            self.command("qmp_capabilities")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.sock:
            self.sock.close()
            self.sock = None

    def send_raw(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def recv_message(self):
        """The next message of any kind(reply, error or event)."""
        while b"\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise QMPClosed("connection closed by the server")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        line = line.strip()
        if not line:
            return self.recv_message()
        return json.loads(line)

    def recv_reply(self):
        """The next reply(return or error); events are kept aside."""
        while True:
            msg = self.recv_message()
            if "event" in msg:
                self.events.append(msg)
            else:
                return msg

    def cmd(self, name, args=None, id=None, **kwargs):
        """Run a command; returns the whole reply dict."""
        req = {"execute": name}
        a = dict(args or {})
        a.update(kwargs)
        if a:
            req["arguments"] = a
        if id is not None:
            req["id"] = id
        self.send_raw(json.dumps(req) + "\n")
        return self.recv_reply()

    def command(self, name, args=None, **kwargs):
        """Run a command; returns its "return" or raises QMPError."""
        reply = self.cmd(name, args, **kwargs)
        if "error" in reply:
            raise QMPError(reply)
        return reply["return"]

    def error(self, name, args=None, **kwargs):
        """Run a command that must fail; returns(class, desc)."""
        reply = self.cmd(name, args, **kwargs)
        if "error" not in reply:
            raise AssertionError("%s %r succeeded: %r" % (name, args, reply))
        return reply["error"]["class"], reply["error"]["desc"]

    def wait_event(self, name, timeout=DEFAULT_TIMEOUT):
        deadline = time.time() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev["event"] == name:
                    return self.events.pop(i)
            if time.time() > deadline:
                raise TimeoutError("no event %s" % name)
            msg = self.recv_message()
            if "event" in msg:
                self.events.append(msg)
            else:
                raise RuntimeError("unexpected reply %r" % msg)


def main(argv):
    raw = False
    negotiate = True
    replies = 1
    args = argv[1:]
    while args and args[0].startswith("--"):
        opt = args.pop(0)
        if opt == "--raw":
            raw = True
        elif opt == "--no-negotiate":
            negotiate = False
        elif opt == "--replies":
            replies = int(args.pop(0))
        else:
            sys.exit("qmp-client.py: unknown option %s" % opt)
    if len(args) < 2 or len(args) > 3:
        sys.exit("usage: qmp-client.py SOCKET COMMAND [JSON-ARGS]\n"
                  "       qmp-client.py --raw [--no-negotiate] "
                  "[--replies N] SOCKET DATA")

    m = QMP(args[0], negotiate=negotiate)
    if raw:
        data = args[1]
        data = sys.stdin.buffer.read() if data == "-" else data.encode()
        m.send_raw(data)
        for _ in range(replies):
            print(json.dumps(m.recv_message()))
        return 0

    cmd_args = json.loads(args[2]) if len(args) == 3 else None
    reply = m.cmd(args[1], cmd_args)
    if "error" in reply:
        print("%s: %s" % (reply["error"]["class"], reply["error"]["desc"]),
               file=sys.stderr)
        return 1
    print(json.dumps(reply["return"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
