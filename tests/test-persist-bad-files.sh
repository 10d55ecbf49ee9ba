#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# Unreadable state files found at start-up (issue 9 item 6): a
# directory in place of node.sda, of sdb's bits file of bitmap p, of
# the checkpoints file, of journal.sda.  Each time the log names the
# file, only what it described is lost (its bitmaps inconsistent or
# gone), the other disk keeps its bitmaps and counts, the bad file is
# set aside as NAME.corrupt, and commands that save the same files
# work again.  Run as root, a file of mode 000 is still readable, so
# that case (the same path: a read that fails with EACCES rather than
# EISDIR) is run only when not root.  Default crash-safety (process).
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e
set -x

requires_built "$PLUGIN" "$FILTER"
requires nbdkit --version
requires qemu-io --version
tmpdir

truncate -s 8M "$tmp/a.img" "$tmp/b.img"
st="$tmp/state"
run () {
    start_nbdkit "kit$1" --filter="$FILTER" "$PLUGIN" disk=sda:"$tmp/a.img" \
                 disk=sdb:"$tmp/b.img" qmp="$tmp/q.qmp" state="$st"
}
quit () {
    $QMP "$tmp/q.qmp" quit > /dev/null
    wait_exit "$pid"
    assert_eq "$exit_status" 0 "nbdkit's exit status"
}
# NODE: "name:count:inconsistent" per bitmap, sorted.
bitmaps () {
    qmp_get "$tmp/q.qmp" query-named-block-nodes '' \
      "' '.join(sorted('%s:%d:%s' % (b['name'], b['count'], b['inconsistent'])
                       for n in r if n['node-name'] == '$1'
                       for b in n.get('dirty-bitmaps', [])))"
}
checkpoints () {
    qmp_get "$tmp/q.qmp" query-checkpoints '' "' '.join(c['name'] for c in r)"
}
# Afresh: checkpoint c1 on both disks and bitmap p on each, 3 chunks
# written on sda, 1 on sdb.
nsetup=0
setup () {
    rm -rf "$st"
    run "setup$(( ++nsetup ))"
    $QMP "$tmp/q.qmp" checkpoint-create '{"name": "c1"}' > /dev/null
    for n in sda sdb; do
        $QMP "$tmp/q.qmp" block-dirty-bitmap-add \
             "{\"node\": \"$n\", \"name\": \"p\", \"persistent\": true}" \
             > /dev/null
    done
    qio "$(nbd_uri sda)" 'write -P 1 0 64k' 'write -P 2 1M 128k'
    qio "$(nbd_uri sdb)" 'write -P 3 2M 64k'
    quit
}
A="c1:196608:False p:196608:False"
B="c1:65536:False p:65536:False"
# The bits file of bitmap NAME of NODE (stable names).
bits () {
    echo "$st/bitmap.$1.$(printf %s "$2" | sha256sum | cut -c1-16)"
}
unreadable () {                 # FILE: make it unreadable
    if [ "$(id -u)" = 0 ]; then
        rm "$1"; mkdir "$1"; touch "$1/x"   # not empty: rename over it fails
    else
        chmod 000 "$1"
    fi
}

# node.sda: sda's bitmap p is gone, its share of c1 a stand-in.
setup
unreadable "$st/node.sda"
run 1
assert_grep "$st/node.sda: .*: the node's saved bitmaps are dropped" "$log"
assert_grep "node.sda is damaged: kept as $st/node.sda.corrupt" "$log"
assert_grep "checkpoint 'c1' covers node 'sda' but its node file could not be read" "$log"
assert_eq "$(bitmaps sda)" "c1:0:True" "sda's bitmaps without node.sda"
assert_eq "$(bitmaps sdb)" "$B" "sdb's bitmaps without node.sda"
$QMP "$tmp/q.qmp" block-dirty-bitmap-add \
     '{"node": "sda", "name": "p", "persistent": true}' > /dev/null
qio "$(nbd_uri sda)" 'write -P 4 3M 64k'
quit
run 2
assert_eq "$(bitmaps sda)" "c1:0:True p:65536:False" "sda's bitmaps saved afresh"
assert_eq "$(bitmaps sdb)" "$B" "sdb's bitmaps after node.sda came back"
quit

# sdb's bits of p: only that bitmap is inconsistent; removed and added
# again (its bits file saved under the same name), it works.
setup
f="$(bits sdb p)"
test -f "$f" || fail "$f missing"
unreadable "$f"
run 3
assert_grep "bitmap 'p' of node 'sdb' \\($f\\): .*: it is inconsistent from now on" "$log"
assert_grep "${f#$st/} is damaged: kept as $f.corrupt" "$log"
assert_eq "$(bitmaps sdb)" "c1:65536:False p:0:True" "sdb's bitmaps without p's bits"
assert_eq "$(bitmaps sda)" "$A" "sda's bitmaps without sdb's p bits"
$QMP "$tmp/q.qmp" block-dirty-bitmap-remove '{"node": "sdb", "name": "p"}' > /dev/null
$QMP "$tmp/q.qmp" block-dirty-bitmap-add \
     '{"node": "sdb", "name": "p", "persistent": true}' > /dev/null
qio "$(nbd_uri sdb)" 'write -P 5 4M 64k'
quit
run 4
assert_eq "$(bitmaps sdb)" "c1:131072:False p:65536:False" "sdb's bitmaps with p made again"
quit

# checkpoints: the checkpoints are lost, so their bitmaps are
# inconsistent; the plain bitmaps keep their bits; a new checkpoint
# is saved.
setup
unreadable "$st/checkpoints"
run 5
assert_grep "$st/checkpoints: .*: checkpoints are lost" "$log"
assert_grep "checkpoints is damaged: kept as $st/checkpoints.corrupt" "$log"
assert_eq "$(checkpoints)" "" "checkpoints without their file"
assert_eq "$(bitmaps sda)" "c1:0:True p:196608:False" "sda's bitmaps without checkpoints"
assert_eq "$(bitmaps sdb)" "c1:0:True p:65536:False" "sdb's bitmaps without checkpoints"
$QMP "$tmp/q.qmp" block-dirty-bitmap-remove '{"node": "sda", "name": "c1"}' > /dev/null
$QMP "$tmp/q.qmp" block-dirty-bitmap-remove '{"node": "sdb", "name": "c1"}' > /dev/null
$QMP "$tmp/q.qmp" checkpoint-create '{"name": "c2"}' > /dev/null
quit
run 6
assert_eq "$(checkpoints)" "c2" "checkpoints saved afresh"
assert_eq "$(bitmaps sda)" "c2:0:False p:196608:False" "sda's bitmaps with c2"
quit

# journal.sda, left by a clean shutdown (no journal should be there):
# set aside, sda's new journal starts, and a kill -9 loses nothing.
setup
mkdir "$st/journal.sda"; touch "$st/journal.sda/x"
run 7
assert_grep "$st/journal.sda is not a regular file: it cannot be the journal of node 'sda'" "$log"
assert_grep "journal.sda is damaged: kept as $st/journal.sda.corrupt" "$log"
assert_eq "$(bitmaps sda)" "$A" "sda's bitmaps with a directory as journal"
test -f "$st/journal.sda" || fail "sda has no journal"
qio "$(nbd_uri sda)" 'write -P 6 5M 64k'
kill -9 "$pid"
wait "$pid" || :
run 7b
assert_eq "$(bitmaps sda)" "c1:262144:False p:262144:False" \
          "sda's bitmaps from the new journal after kill -9"
kill -9 "$pid"
wait "$pid" || :
# And the same after a crash: the journal is damaged, the bitmaps of
# sda only are inconsistent.
rm -rf "$st/journal.sda.corrupt"
rm "$st/journal.sda"; mkdir "$st/journal.sda"; touch "$st/journal.sda/x"
run 8
assert_grep "journal.sda is damaged \\(Is a directory\\): the persistent bitmaps of node 'sda' are inconsistent" "$log"
assert_eq "$(bitmaps sda)" "c1:0:True p:0:True" "sda's bitmaps with a directory as journal after a crash"
assert_eq "$(bitmaps sdb)" "$B" "sdb's bitmaps with sda's journal lost"
quit
