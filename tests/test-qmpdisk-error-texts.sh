#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# The exact texts of qmpdisk's control-path errors, wherever they
# surface: a QMP reply's desc (blockdev-add, blockdev-del,
# block_resize), nbdkit's log (disk= on the command line, a disk that
# cannot be opened for writing when a connection needs it), and the
# reasons the checkpoint filter gives through the node hooks
# (common/qmp/peer.h), which must reach the client word for word
# rather than as a generic fallback.
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e
set -x

requires_built "$PLUGIN" "$FILTER"
requires nbdkit --version
requires $PY -c 'import nbd'
tmpdir

truncate -s 1M "$tmp/a.img" "$tmp/b.img" "$tmp/c.img" "$tmp/r.img"
mkdir "$tmp/dir"
long=a234567890123456789012345678901x   # 32 characters, QEMU allows 31

# ---- disk= on the command line: the registry's text after disk=VALUE ----
# cmdline_error TEXT PLUGIN-ARGS...: nbdkit refuses to start and logs
# exactly TEXT as an error.
cmdline_error ()
{
    local want="$1" st=0
    shift
    timeout 20 nbdkit -U - "$PLUGIN" "$@" --run 'exit 0' >"$tmp/out" 2>&1 ||
        st=$?
    cat "$tmp/out"
    test "$st" -ne 0 -a "$st" -ne 124 || fail "nbdkit exit status $st: $*"
    grep -qxF -- "nbdkit: error: $want" "$tmp/out" ||
        fail "no error line '$want'"
}
cmdline_error "disk=1bad:$tmp/a.img: Invalid node-name: '1bad'" \
              disk=1bad:"$tmp/a.img"
cmdline_error "disk=$long:$tmp/a.img: Node name too long: '$long' (at most 31 characters)" \
              disk=$long:"$tmp/a.img"
cmdline_error "disk=sda:$tmp/b.img: Duplicate nodes with node-name='sda'" \
              disk=sda:"$tmp/a.img" disk=sda:"$tmp/b.img"
cmdline_error "disk=sda:$tmp/nope.img: Could not open '$tmp/nope.img': No such file or directory" \
              disk=sda:"$tmp/nope.img"
cmdline_error "disk=sda:$tmp/dir: Could not open '$tmp/dir': not a regular file or a block device" \
              disk=sda:"$tmp/dir"

# ---- qmpdisk alone: QMP replies, and the log of a connection ----
start_nbdkit rw memory 1M
rwsock=$sock
start_nbdkit ro -r memory 1M
rosock=$sock
# sdr comes from the command line: opened for writing only when a
# connection needs it, by which time the file has been replaced.
start_nbdkit alone "$PLUGIN" disk=sda:"$tmp/a.img" disk=sdr:"$tmp/r.img" \
             qmp="$tmp/alone.qmp"
alonesock=$sock alonelog=$log
cp "$tmp/r.img" "$tmp/r.new"
mv "$tmp/r.new" "$tmp/r.img"

cat > "$tmp/alone.py" <<'EOF'
import nbd
from testlib import *
qsock, nsock, rwsock, rosock, tmp, long = script_args(str, str, str, str,
                                                     str, str)
m = QMP(qsock)

def add_error(desc, node, filename, driver="file", **more):
    args = {"driver": driver, "node-name": node, "filename": filename}
    args.update(more)
    expect_error(m, "blockdev-add", args, desc)

def nbd_args(node, sock, export=""):
    return {"driver": "nbd", "node-name": node, "export": export,
            "server": {"type": "unix", "path": sock}}

def nbd_name(sock, export=""):
    return "nbd+unix:///%s?socket=%s" % (export, sock)

@section("blockdev-add: names")
def _():
    add_error("Invalid node-name: '1bad'", "1bad", tmp + "/b.img")
    add_error("Node name too long: '%s' (at most 31 characters)" % long,
              long, tmp + "/b.img")
    add_error("Duplicate nodes with node-name='sda'", "sda", tmp + "/b.img")

@section("blockdev-add: files")
def _():
    add_error("Could not open '%s/nope.img': No such file or directory"
              % tmp, "sdb", tmp + "/nope.img")
    add_error("Could not open '%s/dir': Is a directory" % tmp,
              "sdb", tmp + "/dir")
    add_error("Could not open '%s/dir': not a regular file or a block device"
              % tmp, "sdb", tmp + "/dir", **{"read-only": True})
    add_error("'host_device' driver requires '%s/b.img' to be a block device"
              % tmp, "sdb", tmp + "/b.img", driver="host_device")

@section("blockdev-add: NBD servers")
def _():
    expect_error(m, "blockdev-add", nbd_args("sdb", nsock, "sda"),
                 "Could not open '%s': it is this nbdkit's own NBD server; "
                 "a node cannot be served from itself"
                 % nbd_name(nsock, "sda"))
    expect_error(m, "blockdev-add", nbd_args("sdb", rosock),
                 "Could not open '%s': NBD export is read-only"
                 % nbd_name(rosock))
    d = expect_error(m, "blockdev-add", nbd_args("sdb", tmp + "/none.sock"))
    check(d.startswith("Could not open '%s': " % nbd_name(tmp + "/none.sock"))
          and len(d) > len(nbd_name(tmp + "/none.sock")) + 17, d)
    # The failures added nothing.
    check([n["node-name"] for n in m.command("query-named-block-nodes")]
          == ["sda", "sdr"], "nodes after the failed adds")

@section("blockdev-del and block_resize")
def _():
    expect_error(m, "blockdev-del", {"node-name": "nope"},
                 "Failed to find node with node-name='nope'")
    h = nbd_open(uri(nsock, "sda"))
    expect_error(m, "blockdev-del", {"node-name": "sda"},
                 "Node 'sda' is busy: 1 open connection")
    expect_error(m, "block_resize", {"node-name": "sda", "size": 512 * KiB},
                 "Cannot shrink node 'sda' while it has 1 open connection "
                 "(growing is allowed)")
    h.shutdown()
    assert m.command("blockdev-add", {"driver": "file", "node-name": "ro",
                                      "filename": tmp + "/c.img",
                                      "read-only": True}) == {}
    expect_error(m, "block_resize", {"node-name": "ro", "size": 2 * MiB},
                 "Block node is read-only")
    assert m.command("blockdev-add", nbd_args("rem", rwsock)) == {}
    expect_error(m, "block_resize", {"node-name": "rem", "size": 2 * MiB},
                 "Cannot resize NBD nodes")

@section("a connection to a disk whose file was replaced")
def _():
    try:
        nbd_open(uri(nsock, "sdr")).shutdown()
    except nbd.Error:
        return
    fail("a writable connection to sdr opened")

finish()
EOF
$PY "$tmp/alone.py" "$tmp/alone.qmp" "$alonesock" "$rwsock" "$rosock" \
    "$tmp" "$long"
grep -qF ": error: sdr: Could not open '$tmp/r.img' for writing: it was replaced since the disk was added" \
     "$alonelog" || {
    cat "$alonelog"
    fail "no error line for sdr in the log"
}
kill_nbdkit "$pid" "$log"

# ---- under the checkpoint filter: the node hooks' reasons ----
start_nbdkit kit --filter="$FILTER" "$PLUGIN" disk=sda:"$tmp/a.img" \
             qmp="$tmp/kit.qmp" state="$tmp/state"
kitpid=$pid

cat > "$tmp/hooks.py" <<'EOF'
from testlib import *
qsock, tmp, phase = script_args(str, str, str)
m = QMP(qsock)

def add(node, filename):
    assert m.command("blockdev-add", {"driver": "file", "node-name": node,
                                      "filename": filename}) == {}

def nodes():
    return [n["node-name"] for n in m.command("query-named-block-nodes")]

if phase == "first":
    @section("may_remove and may_resize")
    def _():
        add("sdb", tmp + "/b.img")
        assert m.command("block-dirty-bitmap-add",
                         {"node": "sdb", "name": "b1"}) == {}
        expect_error(m, "blockdev-del", {"node-name": "sdb"},
                     "Node 'sdb' has dirty bitmaps: end or remove them first")
        assert m.command("block-dirty-bitmap-remove",
                         {"node": "sdb", "name": "b1"}) == {}
        m.command("backup-begin", {"id": "x", "disks": [{"node": "sdb"}]})
        expect_error(m, "blockdev-del", {"node-name": "sdb"},
                     "Node 'sdb' has active backups: end or remove them "
                     "first")
        expect_error(m, "block_resize", {"node-name": "sdb",
                                         "size": 2 * MiB},
                     "Cannot resize 'sdb' during a backup")
        assert m.command("backup-end", {"id": "x"}) == {}
        assert m.command("blockdev-del", {"node-name": "sdb"}) == {}
        check(nodes() == ["sda"], "nodes after blockdev-del")

    @section("a persistent bitmap for sdc, saved at shutdown")
    def _():
        add("sdc", tmp + "/c.img")
        assert m.command("block-dirty-bitmap-add",
                         {"node": "sdc", "name": "p1",
                          "persistent": True}) == {}
else:
    @section("added: saved state for another size refuses the disk")
    def _():
        expect_error(m, "blockdev-add",
                     {"driver": "file", "node-name": "sdc",
                      "filename": tmp + "/c.img"},
                     "Disk 'sdc' is 2097152 bytes but its saved bitmaps are "
                     "for 1048576 bytes: refusing to track it wrongly "
                     "(move %s/state/node.sdc away to start afresh)" % tmp)
        check(nodes() == ["sda"], "nodes after the refused add")

finish()
EOF
$PY "$tmp/hooks.py" "$tmp/kit.qmp" "$tmp" first
kill_nbdkit "$kitpid" "$log"
truncate -s 2M "$tmp/c.img"
start_nbdkit kit2 --filter="$FILTER" "$PLUGIN" disk=sda:"$tmp/a.img" \
             qmp="$tmp/kit2.qmp" state="$tmp/state"
$PY "$tmp/hooks.py" "$tmp/kit2.qmp" "$tmp" second
kill_nbdkit "$pid" "$log"
