# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# The other half of powercut-shim.c: after the process that ran with the
# shim is dead, replace the directory it modelled with what a power cut
# would have left of it (the shadow's durable image).
#
#     env = powercut.environ(shim, state, shadow)   # for the process
#     dropped = powercut.cut(state, shadow)         # after its SIGKILL
#
# The shim makes SHADOW at its first start on it (all of STATE durable
# then) and a later start goes on with it; cut() removes it.
# cut() returns what the cut took away from the directory as the killed
# process left it in the page cache: {name: why}, why being "lost" (the
# entry was not durable), "rolled back" (the file's content differs from
# the real one), "resurrected" (a removal was not durable) or "emptied".

import os
import shutil


def environ(shim, state, shadow, base=None):
    """The environment to run a process under the shim with."""
    env = dict(os.environ if base is None else base)
    pre = env.get("LD_PRELOAD", "")
    env["LD_PRELOAD"] = (pre + " " + shim).strip()
    env["POWERCUT_DIR"] = state
    env["POWERCUT_SHADOW"] = shadow
    return env


def durable_entries(shadow):
    """[(name, type, id, mode)] of the durable directory."""
    out = []
    with open(os.path.join(shadow, "dir")) as f:
        for line in f:
            hexname, typ, fid, mode = line.split()
            out.append((bytes.fromhex(hexname).decode("utf-8",
                                                      "surrogateescape"),
                        typ, fid, int(mode, 8)))
    return out


def _content(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except (FileNotFoundError, IsADirectoryError):
        return None


def cut(state, shadow):
    entries = durable_entries(shadow)
    new = state + ".cut"
    if os.path.exists(new):
        shutil.rmtree(new)
    os.mkdir(new, 0o700)
    dropped = {}
    kept = set()
    for name, typ, fid, mode in entries:
        kept.add(name)
        dst = os.path.join(new, name)
        real = _content(os.path.join(state, name))
        if typ == "d":
            os.mkdir(dst, mode)
            continue
        data = _content(os.path.join(shadow, "data", fid))
        if data is None:
            data = b""              # never synced: an empty file
            if real:
                dropped[name] = "emptied"
        if real is None and not os.path.isdir(os.path.join(state, name)):
            dropped.setdefault(name, "resurrected")
        elif real is not None and real != data:
            dropped.setdefault(name, "rolled back")
        with open(dst, "wb") as f:
            f.write(data)
        os.chmod(dst, mode)
    for name in os.listdir(state):
        if name not in kept:
            dropped[name] = "lost"
    # Emptied and refilled rather than replaced: it may be a mount point.
    for name in os.listdir(state):
        path = os.path.join(state, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    for name in os.listdir(new):
        shutil.move(os.path.join(new, name), os.path.join(state, name))
    os.rmdir(new)
    shutil.rmtree(shadow)
    return dropped
