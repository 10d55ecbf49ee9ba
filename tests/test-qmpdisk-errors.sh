#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# Bad disk= parameters: nbdkit refuses to start and says why.
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e
set -x

requires_built "$PLUGIN"
requires nbdkit --version
tmpdir

truncate -s 1M "$tmp/a.img" "$tmp/b.img"

# expect_fail PATTERN NBDKIT-ARGS...: nbdkit must exit non-zero before
# serving (--run would run and exit 0 otherwise), with an error line
# matching PATTERN (extended regexp, case-insensitive).
expect_fail ()
{
    local pattern="$1" st=0
    shift
    timeout 20 nbdkit -U - "$@" --run 'exit 0' >"$tmp/out" 2>&1 || st=$?
    cat "$tmp/out"
    test "$st" -ne 0 || fail "nbdkit started with: $*"
    test "$st" -ne 124 || fail "nbdkit hung with: $*"
    grep -qiE -- "$pattern" "$tmp/out" || fail "no '$pattern' in the error"
    # An error, not a crash.
    if grep -qiE 'assert|segmentation|core dumped|abort' "$tmp/out"; then
        fail "nbdkit crashed with: $*"
    fi
}

# Missing file
expect_fail "nope\.img.*(No such file|not found|does not exist)" \
            "$PLUGIN" disk=sda:"$tmp/nope.img"
# Missing file after a good disk
expect_fail "nope\.img.*(No such file|not found|does not exist)" \
            "$PLUGIN" disk=sda:"$tmp/a.img" disk=sdb:"$tmp/nope.img"
# A directory is not a disk
expect_fail "$tmp" "$PLUGIN" disk=sda:"$tmp"
# Bad node names: leading digit, bad character, empty, too long
expect_fail "node.?name.*1sda|1sda.*node" "$PLUGIN" disk=1sda:"$tmp/a.img"
expect_fail "node.?name.*'s/a'|s/a.*node" "$PLUGIN" disk=s/a:"$tmp/a.img"
expect_fail "node.?name|NODE" "$PLUGIN" disk=:"$tmp/a.img"
long=a234567890123456789012345678901x # 32 characters, QEMU allows 31
expect_fail "node.?name.*$long|$long.*(long|node)" "$PLUGIN" disk=$long:"$tmp/a.img"
# Duplicate node (also with two different files)
expect_fail "duplicate.*sda" \
            "$PLUGIN" disk=sda:"$tmp/a.img" disk=sda:"$tmp/b.img"
# disk= without ':' and with nothing after it
expect_fail "disk=sda.*NODE:PATH" "$PLUGIN" disk=sda
expect_fail "disk=sda:.*(PATH|missing)" "$PLUGIN" disk=sda:
# No disk at all, and an unknown parameter
expect_fail "no disks|disk=" "$PLUGIN"
expect_fail "unknown parameter.*'?foo" "$PLUGIN" disk=sda:"$tmp/a.img" foo=bar

# The same mistakes through the filter give the same messages.
requires_built "$FILTER"
expect_fail "duplicate.*sda" --filter="$FILTER" \
            "$PLUGIN" disk=sda:"$tmp/a.img" disk=sda:"$tmp/b.img"
expect_fail "nope\.img" --filter="$FILTER" "$PLUGIN" disk=sda:"$tmp/nope.img"
expect_fail "node-name.*1bad" --filter="$FILTER" memory 1M node-name=1bad
expect_fail "state.*a\.img" --filter="$FILTER" memory 1M state="$tmp/a.img"

# The valid 31-character name and names with -._ are accepted.
ok=a23456789012345678901234567890b
# (The second one without "disk=": it is the magic config key.)
nbdkit -U - "$PLUGIN" disk=$ok:"$tmp/a.img" x-y.z_1:"$tmp/b.img" \
       --run 'nbdinfo --list --json "$uri"' > "$tmp/list"
assert_grep "\"export-name\": \"$ok\"" "$tmp/list"
assert_grep '"export-name": "x-y.z_1"' "$tmp/list"
# Nothing was created or changed by the failures.
test ! -e "$tmp/nope.img"
assert_eq "$(stat -c %s "$tmp/a.img")" 1048576 "a.img size"
