#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# The filter's layering rule (checkpoint.h), checked over the #include
# lines of every source file below DIR:
#  - a filter header is included with its directory ("core/node.h"),
#    and only from its own layer or a higher one;
#  - core/ includes no nbdkit header and none of the monitor's server
#    side (no nbdkit calls, no QMP registration);
#  - the modules (a .c with its .h) include each other without a
#    circle, inside a layer too.
# Prints one line per violation and exits 1 if there is any.
import os
import re
import sys

LAYERS = {"core": 1, "engines": 2, "features": 3, "qmp": 4, "": 5}
CORE_FORBIDDEN = {"nbdkit-filter.h", "nbdkit-plugin.h", "server.h", "peer.h"}
INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]')


def layer_of(rel):
    d = os.path.dirname(rel)
    return d if d in LAYERS else None


def module(rel):
    return os.path.splitext(rel)[0]


def main(top):
    files = []
    for d in LAYERS:
        base = os.path.join(top, d)
        for name in sorted(os.listdir(base)):
            if name.endswith((".c", ".h")) and not name.startswith("test-"):
                files.append(os.path.join(d, name) if d else name)
    known = set(files)
    by_basename = {}
    for f in files:
        by_basename.setdefault(os.path.basename(f), []).append(f)
    errors, edges, count = [], {}, 0
    for f in files:
        mine = layer_of(f)
        for lineno, line in enumerate(open(os.path.join(top, f)), 1):
            m = INCLUDE.match(line)
            if not m:
                continue
            inc, count = m.group(1), count + 1
            where = "%s:%d: %s" % (f, lineno, inc)
            if mine == "core" and inc in CORE_FORBIDDEN:
                errors.append("%s: core/ must not use nbdkit or the "
                              "monitor's server" % where)
            target = inc if inc in known else None
            if target is None and inc in by_basename:
                if all(layer_of(t) == "" for t in by_basename[inc]):
                    target = by_basename[inc][0]
                else:
                    errors.append("%s: include filter headers with their "
                                  "directory" % where)
                    continue
            if target is None:
                continue                # common/ or the system
            if LAYERS[layer_of(target)] > LAYERS[mine]:
                errors.append("%s: layer %s (%d) uses layer %s (%d) above "
                              "it" % (where, mine or "glue", LAYERS[mine],
                                      layer_of(target) or "glue",
                                      LAYERS[layer_of(target)]))
            if module(target) != module(f):
                edges.setdefault(module(f), set()).add(module(target))
    errors += cycles(edges)
    for e in errors:
        print(e)
    print("%d files, %d includes, %d module edges: %s" %
          (len(files), count, sum(len(v) for v in edges.values()),
           "%d violations" % len(errors) if errors else "layering holds"))
    return 1 if errors else 0


def cycles(edges):
    """One message per circle found by depth-first search."""
    found, state = [], {}

    def visit(m, path):
        state[m] = 1
        for n in sorted(edges.get(m, ())):
            if state.get(n) == 1:
                circle = path[path.index(n):] + [n]
                found.append("circle: " + " -> ".join(circle))
            elif n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    return found


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else
                  os.path.dirname(os.path.abspath(__file__))))
