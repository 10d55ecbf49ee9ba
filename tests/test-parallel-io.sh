#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# Many connections and requests in flight at once on two qmpdisk
# disks, alone and under the checkpoint filter: the backing files end
# up exactly as a model of the requests says (see test-parallel-io.c).
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e
set -x

requires_built "$PLUGIN" "$FILTER" "${abs_builddir:-.}/test-parallel-io"
requires nbdkit --version
tmpdir

for mode in plain filtered; do
    head -c 16M /dev/urandom > "$tmp/a.img"
    head -c 8M /dev/urandom > "$tmp/b.img"
    filter=()
    [ $mode = plain ] || filter=(--filter="$FILTER")
    start_nbdkit $mode "${filter[@]}" "$PLUGIN" \
                 disk=sda:"$tmp/a.img" disk=sdb:"$tmp/b.img"
    "${abs_builddir:-.}/test-parallel-io" \
        "$(nbd_uri sda)" "$tmp/a.img" "$(nbd_uri sdb)" "$tmp/b.img"
    kill -0 "$pid" || fail "nbdkit died"
    kill_nbdkit "$pid"
done
