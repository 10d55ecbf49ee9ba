# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
"""docs/qmp-reference.md from the command tables, as a running nbdkit
(the checkpoint filter over qmpdisk, so that every component's tables
are loaded) reports them through x-query-qmp-docs.

    python3 qmp_reference.py QMP-SOCKET > docs/qmp-reference.md

test-qmp-reference.sh regenerates it and fails when the checked-in
file differs; `make -C tests qmp-reference` rewrites it."""

import sys

PREAMBLE = """\
# QMP reference

<!-- Generated from the command tables by tests/qmp_reference.py
     (make -C tests qmp-reference); do not edit by hand.
     test-qmp-reference.sh fails when this file and the tables differ. -->

The monitor speaks QEMU 7.2's QMP (qmp= of the qmpdisk plugin or of
the checkpoint filter).  Each command below is documented where its
arguments are declared (common/qmp/builtins.c, plugins/qmpdisk/monitor.c,
filters/checkpoint/qmp/*-commands.c); `query-qmp-schema` answers from
the same tables, in QEMU's SchemaInfo shape.

## Messages and errors

- A command is `{"execute": NAME, "arguments"?: {...}, "id"?: ANY}`;
  the reply is `{"return": ...}` or `{"error": {"class", "desc"}}`,
  with the request's `id`.  Error classes: `GenericError`,
  `CommandNotFound` (an unknown command: "The command NAME has not
  been found"; any command but `qmp_capabilities` before it:
  "Expecting capabilities negotiation with 'qmp_capabilities'").
- Every command's arguments are checked against its table before it
  runs, with QEMU's texts: "Parameter 'NAME' is missing", "Parameter
  'NAME' is unexpected", "Invalid parameter type for 'NAME', expected:
  TYPE" (string, boolean, integer, array, object), "Parameter 'NAME'
  expects uint32_t", "Parameter 'NAME' expects a non-negative value".
  Nested arguments are named by their path, as QEMU does:
  `bitmaps[0].name`, `disks[1].node`, `server.path`, `checkpoint.name`;
  inside a transaction an action's arguments are named `data.NAME`.
- After `quit` every command answers "nbdkit is shutting down".
- Events: none is emitted yet (JOB_STATUS_CHANGE and the block job
  events come with push backup jobs, see TODO).
- `transaction` actions: block-dirty-bitmap-add, -remove, -clear,
  -enable, -disable, -merge, checkpoint-create (redefine included),
  backup-begin, abort.
"""

COMPONENTS = {
    "monitor": "The monitor (every component that hosts it)",
    "qmpdisk": "The qmpdisk plugin",
    "checkpoint": "The checkpoint filter",
}


def para(text):
    """TEXT as one markdown paragraph (the tables' strings are plain
    text; a backslash or a '*' would be markup)."""
    return text.replace("\\", "\\\\").replace("*", "\\*").strip()


def generate(docs):
    out = [PREAMBLE]
    component = None
    order = list(COMPONENTS)
    for d in sorted(docs, key=lambda d: order.index(d["component"])
                    if d["component"] in order else len(order)):
        if d["component"] != component:
            component = d["component"]
            out.append("## %s\n" % COMPONENTS.get(component, component))
        out.append("### `%s`\n" % d["name"])
        if d["shadowed"]:
            out.append("*Not answered when another component's command of "
                       "this name is loaded (the checkpoint filter's, over "
                       "qmpdisk).*\n")
        out.append(para(d["doc"]) + "\n")
        if d["arguments"]:
            out.append("Arguments:\n")
            for a in d["arguments"]:
                out.append("- `%s` (%s%s): %s" % (
                    a["name"], a["type"], ", optional" if a["optional"]
                    else "", para(a["doc"])))
            out.append("")
        else:
            out.append("Arguments: none.\n")
        out.append("Returns: " + para(d["returns"]) + "\n")
        if d["errors"]:
            out.append("Errors: " + para(d["errors"]) + "\n")
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    from testlib import connect
    m = connect(sys.argv[1])
    sys.stdout.write(generate(m.command("x-query-qmp-docs")))
