#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# The QMP reference and the schema come from the command tables: with
# the checkpoint filter over qmpdisk (every component's tables loaded),
# x-query-qmp-docs documents every command query-commands lists, every
# argument and every command has its doc, query-qmp-schema has each
# command with exactly the table's arguments (QEMU's SchemaInfo shape),
# the argument checks follow the schema (a missing required member or
# an unexpected one is refused, with QEMU's texts), and
# docs/qmp-reference.md is what tests/qmp_reference.py generates from
# the tables now (make -C tests qmp-reference rewrites it).
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e
set -x

requires_built "$PLUGIN" "$FILTER"
requires nbdkit --version
tmpdir

truncate -s 1M "$tmp/a.img"
start_nbdkit q --filter="$FILTER" "$PLUGIN" disk=sda:"$tmp/a.img" \
             qmp="$tmp/q.qmp" state="$tmp/state"

$PY - "$tmp" "$abs_srcdir/../docs/qmp-reference.md" <<'EOF'
import difflib, os
from testlib import *
from qmp_reference import generate

tmp, ref = script_args(str, str)
m = connect(tmp + "/q.qmp")
docs = m.command("x-query-qmp-docs")
schema = m.command("query-qmp-schema")
names = sorted(c["name"] for c in m.command("query-commands"))

answering = {d["name"]: d for d in docs if not d["shadowed"]}
check(sorted(answering) == names,
      "documented %s, query-commands %s" % (sorted(answering), names))
check(len(answering) == len([d for d in docs if not d["shadowed"]]),
      "a command documented twice as answering")
for d in docs:
    for f in ("doc", "returns"):
        check(d[f].strip(), "%s/%s has no %s" % (d["component"], d["name"],
                                                 f))
    for a in d["arguments"]:
        check(a["doc"].strip(), "%s: argument %s has no doc"
              % (d["name"], a["name"]))

# QEMU's SchemaInfo shape, from the same tables.
by = {e["name"]: e for e in schema}
check(len(by) == len(schema), "schema names are unique")
for e in schema:
    check(e["meta-type"] in ("builtin", "object", "command", "array",
                             "enum"), "meta-type %r" % e)
for t, j in (("str", "string"), ("int", "int"), ("bool", "boolean"),
             ("any", "value")):
    check(by[t] == {"name": t, "meta-type": "builtin", "json-type": j},
          "builtin %r" % by.get(t))
commands = [e for e in schema if e["meta-type"] == "command"]
check(sorted(e["name"] for e in commands) == names,
      "schema commands %s" % sorted(e["name"] for e in commands))
for c in commands:
    d = answering[c["name"]]
    check(c["ret-type"] == "any", "%r" % c)
    obj = by[c["arg-type"]]
    check(obj["meta-type"] == "object", "%s: arg-type %r" % (c["name"], obj))
    exp = []
    for a in d["arguments"]:
        mem = {"name": a["name"], "type": a["type"]}
        if a["optional"]:
            mem["default"] = None
        exp.append(mem)
    check(obj["members"] == exp, "%s: schema members %r, tables %r"
          % (c["name"], obj["members"], exp))
    for mem in obj["members"]:
        check(mem["type"] in by, "%s: type %s is in the schema"
              % (c["name"], mem["type"]))
check(by["[any]"] == {"name": "[any]", "meta-type": "array",
                      "element-type": "any"}, "%r" % by["[any]"])
check([e["name"] for e in schema if e["meta-type"] == "object"
       and e["name"] not in [c["arg-type"] for c in commands]] == [],
      "every object is a command's arguments")

# The checks follow the schema: nothing runs, every command refuses.
for c in commands:
    if c["name"] == "qmp_capabilities":
        continue
    req = [mem["name"] for mem in by[c["arg-type"]]["members"]
           if "default" not in mem]
    cls, desc = m.error(c["name"], {"zz-unknown": 1})
    exp = ("Parameter '%s' is missing" % req[0] if req
           else "Parameter 'zz-unknown' is unexpected")
    check((cls, desc) == ("GenericError", exp), "%s: %s %s, expected %s"
          % (c["name"], cls, desc, exp))
check(m.command("query-version")["qemu"]["major"] == 7, "still running")

got = generate(docs)
if os.environ.get("QMP_REFERENCE_UPDATE") == "1":
    with open(ref, "w") as f:           # make -C tests qmp-reference
        f.write(got)
try:
    old = open(ref).read()
except FileNotFoundError:
    old = ""
if got != old:
    sys.stdout.writelines(difflib.unified_diff(
        old.splitlines(True), got.splitlines(True), ref, "the tables"))
    fail("docs/qmp-reference.md differs from the command tables: "
         "run make -C tests qmp-reference")
print("%d commands, %d schema entries" % (len(docs), len(schema)))
EOF
