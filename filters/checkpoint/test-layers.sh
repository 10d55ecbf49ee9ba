#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# The layering rule of checkpoint.h holds for the filter's sources, and
# the checker does catch an upward include, a circle and a core file
# that calls into nbdkit (on a copy of the tree with each one added).
set -euo pipefail
src=${srcdir:-.}
python3 "$src/check-layers.py" "$src"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
must_fail () {
  rm -rf "$tmp/tree"
  mkdir "$tmp/tree"
  cp -r "$src"/core "$src"/engines "$src"/features "$src"/qmp \
    "$src"/*.[ch] "$tmp/tree/"
  eval "$1"
  if python3 "$src/check-layers.py" "$tmp/tree" > "$tmp/out"; then
    echo "FAIL: the checker accepted: $2"; exit 1
  fi
  grep -q "$3" "$tmp/out" || { echo "FAIL: no '$3' for: $2"; cat "$tmp/out"; exit 1; }
  echo "refused as it should: $2"
}
must_fail 'echo "#include \"features/pull-backup.h\"" >> "$tmp/tree/core/node.c"' \
  "core including a feature" "uses layer features"
must_fail 'echo "#include \"engines/persist.h\"" >> "$tmp/tree/engines/cbw.c"; \
           echo "#include \"engines/cbw.h\"" >> "$tmp/tree/engines/persist.c"' \
  "a circle inside the engines" "circle: "
must_fail 'echo "#include <nbdkit-filter.h>" >> "$tmp/tree/core/txn.c"' \
  "core calling nbdkit" "must not use nbdkit"
must_fail 'echo "#include \"node.h\"" >> "$tmp/tree/qmp/node-commands.c"' \
  "a filter header without its directory" "with their directory"
must_fail 'echo "#include \"checkpoint.h\"" >> "$tmp/tree/features/pull-backup.c"' \
  "a feature using the glue" "uses layer glue"
