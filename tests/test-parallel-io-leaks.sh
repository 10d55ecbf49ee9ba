#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# test-parallel-io built with AddressSanitizer (issue 8 item 11): the
# parallel I/O check passes with LeakSanitizer on, i.e. the program
# frees everything it allocates, and its checks of the data still
# hold.  Against qmpdisk alone (test-parallel-io.sh covers the modes).
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e
set -x

prog="${abs_builddir:-.}/test-parallel-io-asan"
requires_built "$PLUGIN" "$prog"
requires nbdkit --version
tmpdir

head -c 16M /dev/urandom > "$tmp/a.img"
head -c 8M /dev/urandom > "$tmp/b.img"
start_nbdkit plain "$PLUGIN" disk=sda:"$tmp/a.img" disk=sdb:"$tmp/b.img"
# exitcode: a leak report alone must fail the run.
ASAN_OPTIONS=detect_leaks=1:exitcode=23 \
    "$prog" "$(nbd_uri sda)" "$tmp/a.img" "$(nbd_uri sdb)" "$tmp/b.img" \
    > "$tmp/out" 2> "$tmp/err" || {
        cat "$tmp/out" "$tmp/err" >&2
        fail "test-parallel-io under AddressSanitizer failed"
    }
cat "$tmp/out"
if grep -q "Sanitizer" "$tmp/err"; then
    cat "$tmp/err" >&2
    fail "sanitizer report"
fi
assert_grep "a.img: [0-9]+ of 16777216 bytes checked" "$tmp/out"
assert_grep "b.img: [0-9]+ of 8388608 bytes checked" "$tmp/out"
kill -0 "$pid" || fail "nbdkit died"
kill_nbdkit "$pid"
