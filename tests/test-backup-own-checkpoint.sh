#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# backup-end success=false deletes only the checkpoint its backup
# created: when that one was deleted and another checkpoint took its
# name, the newcomer stays, with its bitmap and its count; and a
# backup whose own checkpoint is still there deletes it as before.
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e
set -x

requires_built "$FILTER"
requires nbdkit --version
requires qemu-io --version
tmpdir

truncate -s 8M "$tmp/disk.img"
start_nbdkit kit --filter="$FILTER" file "$tmp/disk.img" node-name=d0 \
             qmp="$tmp/q.qmp" state="$tmp/state"
live=$(nbd_uri '' "$sock")
ckpts () {
    qmp_get "$tmp/q.qmp" query-checkpoints '{"size": true}' \
            '[(c["name"], c.get("parent"), c["disks"][0]["size"]) for c in r]'
}

$QMP "$tmp/q.qmp" checkpoint-create '{"name": "base"}' > /dev/null
$QMP "$tmp/q.qmp" backup-begin '{"id": "b1", "checkpoint": {"name": "c2"}}' > /dev/null
$QMP "$tmp/q.qmp" checkpoint-delete '{"name": "c2"}' > /dev/null
qio "$live" 'write -P 1 0 64k'
$QMP "$tmp/q.qmp" checkpoint-create '{"name": "c2"}' > /dev/null     # unrelated
qio "$live" 'write -P 2 1M 64k'
before=$(ckpts)
assert_eq "$before" "[('base', None, 131072), ('c2', 'base', 65536)]" "before the end"
$QMP "$tmp/q.qmp" backup-end '{"id": "b1", "success": false}' > /dev/null
assert_eq "$(ckpts)" "$before" "checkpoints after b1 failed"
r=$(qmp_get "$tmp/q.qmp" query-named-block-nodes '' \
      'sorted((b["name"], b["count"]) for b in r[0]["dirty-bitmaps"])')
assert_eq "$r" "[('base', 65536), ('c2', 65536)]" "bitmaps after b1 failed"

# Its own checkpoint, still there, goes (its changes merge back).
$QMP "$tmp/q.qmp" backup-begin '{"id": "b2", "checkpoint": {"name": "c3"}}' > /dev/null
qio "$live" 'write -P 3 2M 64k'
$QMP "$tmp/q.qmp" backup-end '{"id": "b2", "success": false}' > /dev/null
assert_eq "$(ckpts)" "[('base', None, 196608), ('c2', 'base', 131072)]" \
          "checkpoints after b2 failed"
