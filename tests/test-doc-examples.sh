#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
#
# The libnbd examples of docs/reading-incremental-exports.md, as the
# page shows them (the page's code blocks are the files), run against
# a real incremental export: the C one (built by make check in docs/)
# and the Python one each turn a copy of the full backup into the disk
# at the incremental's instant, although the guest writes on.  And what
# the page says a client keeping only "data" extents misses: it leaves
# the old bytes exactly where the guest zeroed or discarded.
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e
set -x

doc="$abs_srcdir/../docs/reading-incremental-exports.md"
cex="$abs_builddir/../docs/examples/apply-incremental"
pyex="$abs_srcdir/../docs/examples/apply-incremental.py"
requires_built "$PLUGIN" "$FILTER" "$cex"
requires nbdkit --version
requires nbdcopy --version
requires qemu-io --version
requires $PY -c 'import nbd'
tmpdir

# The page shows the examples verbatim.
$PY - "$doc" "$abs_srcdir/../docs/examples/apply-incremental.c" \
    "$pyex" <<'EOF'
import re, sys
doc = open(sys.argv[1]).read()
for path, lang in ((sys.argv[2], "c"), (sys.argv[3], "python")):
    name = "docs/examples/" + path.rsplit("/", 1)[1]
    m = re.search(r"<!-- %s -->\n```%s\n(.*?)```\n" % (re.escape(name), lang),
                  doc, re.S)
    assert m, "%s: no ```%s block after <!-- %s -->" % (sys.argv[1], lang, name)
    assert m.group(1) == open(path).read(), "the page's copy of %s differs" % name
EOF

K=1024
SIZE=$((4 * K * K + 20 * K))
head -c $SIZE /dev/urandom > "$tmp/disk.img"
fallocate -p -o $((2 * K * K)) -l $((K * K)) "$tmp/disk.img"
start_nbdkit kit --filter="$FILTER" "$PLUGIN" disk=vda:"$tmp/disk.img" \
             qmp="$tmp/q.sock" state="$tmp/state"
live=$(nbd_uri vda)

# Full backup; both examples also make a full backup into an empty file.
cp "$tmp/disk.img" "$tmp/freeze0"
$QMP "$tmp/q.sock" backup-begin '{"id": "full", "checkpoint": {"name": "c1"}}' > /dev/null
qio "$live" 'write -P 0x11 0 1M'
"$cex" "$(nbd_uri vda@full)" "$tmp/full-c.img" > "$tmp/c.out"
$PY "$pyex" "$(nbd_uri vda@full)" "$tmp/full-py.img" > "$tmp/py.out"
$QMP "$tmp/q.sock" backup-end '{"id": "full"}' > /dev/null
cmp "$tmp/freeze0" "$tmp/full-c.img" || fail "C example: full backup differs"
cmp "$tmp/freeze0" "$tmp/full-py.img" || fail "Python example: full backup differs"
assert_grep ' skipped 0$' "$tmp/c.out"
assert_eq "$(cat "$tmp/py.out")" "$(cat "$tmp/c.out")" "the examples' counts, full"

# Changes since c1: data, write-zeroes over data, a discard of data.
qio "$live" 'write -P 0x22 64k 3' 'write -z -u 1M 128k' 'discard 3M 64k' \
    'write -P 0x33 4M 4k' 'flush'
cp "$tmp/disk.img" "$tmp/freeze1"
$QMP "$tmp/q.sock" backup-begin '{"id": "inc", "incremental": "c1"}' > /dev/null
inc=$(nbd_uri vda@inc)
# The guest writes on, to changed and to unchanged chunks.
qio "$live" 'write -P 0x44 64k 64k' 'write -P 0x55 1600k 8k' 'flush'
for ex in c py; do
    cp "$tmp/full-c.img" "$tmp/restore-$ex.img"
done
"$cex" "$inc" "$tmp/restore-c.img" > "$tmp/c.out"
$PY "$pyex" "$inc" "$tmp/restore-py.img" > "$tmp/py.out"
cmp "$tmp/freeze1" "$tmp/restore-c.img" || fail "C example: full + inc differs"
cmp "$tmp/freeze1" "$tmp/restore-py.img" || fail "Python example: full + inc differs"
# Changed: chunks 0-15 (written during the full backup, so after c1),
# 16, 17, 48 and 64 (the partial last one, 20 KiB).  Data: 0-15 and 64;
# 16 and 17 (write-zeroes) and 48 (discarded, on a sparse file) read
# as zeros.
assert_eq "$(cat "$tmp/c.out")" \
    "read $((K * K + 20 * K)) zeroed $((3 * 64 * K)) skipped $((SIZE - K * K - 3 * 64 * K - 20 * K))" \
    "the C example's counts"
assert_eq "$(cat "$tmp/py.out")" "$(cat "$tmp/c.out")" "the examples' counts, inc"

# A client that keeps only the data extents.
$PY - "$inc" "$tmp/full-c.img" "$tmp/freeze1" <<'EOF'
import sys
import nbd
h = nbd.NBD()
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.connect_uri(sys.argv[1])
size = h.get_size()
ext = []
while sum(length for length, flags in ext) < size:
    h.block_status(size - sum(length for length, flags in ext),
                   sum(length for length, flags in ext),
                   lambda ctx, off, e, err: ext.extend(zip(e[0::2], e[1::2])) or 0)
img = bytearray(open(sys.argv[2], "rb").read())
want = open(sys.argv[3], "rb").read()
pos, zero = 0, []
for length, flags in ext:
    if not flags & nbd.STATE_HOLE:
        img[pos:pos + length] = h.pread(length, pos)
    elif flags & nbd.STATE_ZERO:
        zero.append((pos, pos + length))
    pos += length
h.shutdown()
wrong = [i for i in range(size) if img[i] != want[i]]
assert wrong, "a data-only client got the disk right"
assert all(any(a <= i < b for a, b in zero) for i in wrong), \
    "a data-only client differs outside the HOLE|ZERO extents"
# ...and it misses all of the zeroed and discarded chunks here.
assert {i // 65536 for i in wrong} == {16, 17, 48}, sorted({i // 65536 for i in wrong})
EOF
$QMP "$tmp/q.sock" backup-end '{"id": "inc"}' > /dev/null
