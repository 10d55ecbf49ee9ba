#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# Every source file carries the license header (scripts/license-header
# adds it), and the script itself finds a missing header, adds it in
# the file's comment syntax (below a shebang) and is idempotent.
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e

top="$abs_srcdir/.."
script="$top/scripts/license-header"
[ -x "$script" ] || fail "$script missing"
tmpdir

# The script on files lacking a header.
printf '#!/bin/sh\necho hi\n' > "$tmp/a.sh"
printf '/* A file. */\nint x;\n' > "$tmp/b.c"
printf '=head1 NAME\n\nb - a page\n' > "$tmp/c.pod"
printf '#!/usr/bin/env python3\nprint(1)\n' > "$tmp/d"
chmod +x "$tmp/a.sh"
if $PY "$script" --check "$tmp/a.sh" "$tmp/b.c" "$tmp/c.pod" "$tmp/d" \
       2> "$tmp/check.err"; then
    fail "--check passed on files without a header"
fi
for f in a.sh b.c c.pod d; do assert_grep "$f\$" "$tmp/check.err"; done
$PY "$script" "$tmp/a.sh" "$tmp/b.c" "$tmp/c.pod" "$tmp/d" > /dev/null
assert_eq "$(cat "$tmp/a.sh")" '#!/bin/sh
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
echo hi' "a.sh with its header"
assert_eq "$(cat "$tmp/b.c")" '/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* A file. */
int x;' "b.c with its header"
assert_eq "$(head -n 5 "$tmp/c.pod" | sed 's/^$/(empty)/')" '=for comment
SPDX-License-Identifier: BSD-3-Clause
Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
(empty)
=head1 NAME' "c.pod with its header"
assert_eq "$(sed -n 2p "$tmp/d")" '# SPDX-License-Identifier: BSD-3-Clause' "d"
[ -x "$tmp/a.sh" ] || fail "the script lost a.sh's mode"
sums="$(sha256sum "$tmp"/a.sh "$tmp"/b.c "$tmp"/c.pod "$tmp"/d)"
$PY "$script" "$tmp/a.sh" "$tmp/b.c" "$tmp/c.pod" "$tmp/d" > "$tmp/again.out"
assert_eq "$(sha256sum "$tmp"/a.sh "$tmp"/b.c "$tmp"/c.pod "$tmp"/d)" "$sums" \
          "files after a second run"
assert_eq "$(cat "$tmp/again.out")" "" "output of a second run"
$PY "$script" --check "$tmp/a.sh" "$tmp/b.c" "$tmp/c.pod" "$tmp/d"
if command -v podchecker >/dev/null 2>&1; then
    podchecker "$tmp/c.pod"
fi

# The tree.
[ -f "$top/LICENSE" ] || fail "no LICENSE file"
grep -q 'nbdkit-checkpoint authors' "$top/LICENSE" || fail "LICENSE: no copyright line"
$PY "$script" --check
