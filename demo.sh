#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# nbdkit-checkpoint demo: a full and an incremental pull backup of a
# disk served by nbdkit, driven over QMP.
#
#   ./demo.sh                       # from a tree built in place
#   BUILDDIR=/path/to/build ./demo.sh   # from a separate build tree
#
# It creates a demo disk in a temporary directory, serves it with
# nbdkit (the qmpdisk plugin under the checkpoint filter), writes to
# it as a guest would, takes a full backup with a checkpoint into a
# qcow2 (qemu-img convert), writes more, takes an incremental backup
# from that checkpoint into a qcow2 overlay backed by the full one
# (qemu-img convert -B), and also applies only the changed extents onto
# a raw copy of the full backup with libnbd; checks both (qemu-img
# check, qemu-img compare, cmp) against the disk as it was at each
# backup's instant; then restores the full backup into the live disk
# through its export and shows that the next incremental records the
# restore (docs/backup-chains.md).  Prints "demo OK" and exits 0 on
# success; exits non-zero on any failure or mismatch.
#
# Needs nbdkit, nbdinfo, qemu-img and python3 with libnbd's nbd module.

set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
builddir="${BUILDDIR:-$here}"
plugin="$builddir/plugins/qmpdisk/.libs/nbdkit-qmpdisk-plugin.so"
filter="$builddir/filters/checkpoint/.libs/nbdkit-checkpoint-filter.so"
qmpclient="$here/tests/qmp-client.py"
apply="$here/tests/incremental_apply.py"
# libnbd's Python module is installed for the system's python3.
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
export PYTHONDONTWRITEBYTECODE=1

die () { echo "demo: FAILED: $*" >&2; exit 1; }
say () { printf '\n==> %s\n' "$*"; }
info () { printf '    %s\n' "$*"; }

for f in "$plugin" "$filter"; do
    [ -f "$f" ] || die "$f not found: build first (make), or set BUILDDIR"
done
for f in "$qmpclient" "$apply"; do
    [ -f "$f" ] || die "$f not found"
done
for t in nbdkit nbdinfo qemu-img cmp; do
    command -v $t >/dev/null || die "$t is not installed"
done
$PY -c 'import nbd' 2>/dev/null || die "python3 module nbd (libnbd) missing"

# A short directory: Unix socket paths are limited to 107 bytes.
work="$(mktemp -d /tmp/nbdkit-checkpoint-demo.XXXXXX)"
pid=
cleanup ()
{
    local status=$?
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || :
        wait "$pid" 2>/dev/null || :
    fi
    if [ $status -ne 0 ] && [ -s "$work/nbdkit.log" ]; then
        echo "--- nbdkit log:" >&2
        tail -n 20 "$work/nbdkit.log" >&2
    fi
    rm -rf "$work"
}
trap cleanup EXIT

sock="$work/nbd.sock"
qsock="$work/qmp.sock"
uri () { echo "nbd+unix:///$1?socket=$sock"; }
qmp () { $PY "$qmpclient" "$qsock" "$@"; }
# guest CODE: run Python statements with h, a libnbd handle on the
# live disk vda (a guest writing to its disk).
guest ()
{
    $PY -c "
import nbd, random, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
rnd = random.Random(sys.argv[2])
$1
h.flush()
h.shutdown()" "$(uri vda)" "$2"
}
mib () { awk -v b="$1" 'BEGIN { printf "%.2f MiB", b / 1048576 }'; }

SIZE=$((64 * 1024 * 1024))

say "A 64 MiB demo disk in $work, served by nbdkit with the checkpoint filter over qmpdisk"
truncate -s $SIZE "$work/vda.img"
nbdkit -f --exit-with-parent -U "$sock" --filter="$filter" "$plugin" \
       disk=vda:"$work/vda.img" qmp="$qsock" state="$work/state" \
       2>"$work/nbdkit.log" &
pid=$!
# Ready when the monitor answers (the sockets exist a little before
# the disks are opened, and nbdkit may still fail then).
version=
for (( i = 0; i < 200; ++i )); do
    kill -0 "$pid" 2>/dev/null || die "nbdkit exited at start-up"
    if [ -S "$qsock" ] && [ -S "$sock" ] &&
       version="$(qmp query-version 2>/dev/null)"; then
        break
    fi
    sleep 0.05
done
[ -n "$version" ] || die "nbdkit did not start"
sleep 0.1
kill -0 "$pid" 2>/dev/null || die "nbdkit exited at start-up"
exports="$(nbdinfo --list --json "nbd+unix://?socket=$sock" |
    $PY -c 'import json, sys; print(", ".join(e["export-name"] for e in json.load(sys.stdin)["exports"]))')"
info "exports: $exports"
info "QMP: $version"

say "The guest writes 24 MiB of data"
guest '
for i in range(24):
    h.pwrite(rnd.randbytes(1 << 20), (i * 5 % 64) << 20)' 1

say "Full backup with checkpoint 'monday'"
# The freeze instant: no writer runs, so the image file is the disk.
cp "$work/vda.img" "$work/at-full.img"
info "backup-begin: $(qmp backup-begin \
    '{"id": "full", "checkpoint": {"name": "monday", "description": "full backup"}}')"
# The guest goes on writing; the export stays frozen.
guest 'h.pwrite(b"\x55" * (4 << 20), 0)' 2
qemu-img convert -f raw -O qcow2 "$(uri vda@full)" "$work/full.qcow2"
qmp backup-end '{"id": "full"}' > /dev/null
qemu-img check -q "$work/full.qcow2" || die "qemu-img check full.qcow2 failed"
qemu-img compare -q -f raw -F qcow2 "$work/at-full.img" "$work/full.qcow2" ||
    die "the full backup differs from the disk at its instant"
qemu-img convert -f qcow2 -O raw "$work/full.qcow2" "$work/full.img"
info "qemu-img convert read the export vda@full into full.qcow2: qemu-img check passes,"
info "qemu-img compare finds it equal to the disk at the backup's instant"

say "The guest writes more: small writes, a zeroed and a discarded range"
guest '
for i in range(40):
    n = rnd.choice((512, 4096, 65536, 300000))
    h.pwrite(rnd.randbytes(n), rnd.randrange(0, (64 << 20) - n))
h.zero(1 << 20, 40 << 20)
h.trim(2 << 20, 10 << 20)' 3
changed="$(qmp query-checkpoints '{"size": true}' |
    $PY -c 'import json, sys
print([c for c in json.load(sys.stdin) if c["name"] == "monday"][0]["disks"][0]["size"])')"
info "query-checkpoints: $changed bytes ($(mib "$changed")) changed since 'monday'"

say "Incremental backup from 'monday', with checkpoint 'tuesday'"
cp "$work/vda.img" "$work/at-inc.img"
info "backup-begin: $(qmp backup-begin \
    '{"id": "inc", "incremental": "monday", "checkpoint": {"name": "tuesday"}}')"
guest 'h.pwrite(b"\xaa" * (8 << 20), 20 << 20)' 4
nbdinfo --map --json "$(uri vda@inc)" > "$work/map.json"
$PY - "$work/map.json" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
changed = [e for e in m if e["type"] != 1]        # 1 = hole: unchanged
print("    nbdinfo --map: %d changed extents, %d bytes; the rest is 'hole' "
      "(unchanged since the checkpoint)"
      % (len(changed), sum(e["length"] for e in changed)))
for e in changed[:5]:
    print("      %12d %10d  %s" % (e["offset"], e["length"], e["description"]))
if len(changed) > 5:
    print("      ...")
EOF
qemu-img convert -f raw -O qcow2 -B "$work/full.qcow2" -F qcow2 \
         "$(uri vda@inc)" "$work/inc.qcow2"
info "qemu-img convert -B full.qcow2 read it into the overlay inc.qcow2:" \
     "$(qemu-img info --output=json "$work/inc.qcow2" |
        $PY -c 'import json, sys; print(json.load(sys.stdin)["actual-size"] // 1024)') KiB on disk"
cp "$work/full.img" "$work/restored.img"
stats="$($PY "$apply" --json "$(uri vda@inc)" "$work/restored.img")"
read -r nread nzero nskip < <(echo "$stats" | $PY -c '
import json, sys
s = json.load(sys.stdin)
print(s["read"], s["zeroed"], s["skipped"])')
qmp backup-end '{"id": "inc"}' > /dev/null
info "read $nread bytes ($(mib "$nread")) from the export, wrote $nzero bytes of zeros, skipped $nskip bytes"
[ "$((nread + nzero))" -eq "$changed" ] ||
    die "applied $((nread + nzero)) bytes, but $changed bytes changed"
[ "$nread" -lt "$SIZE" ] || die "the incremental backup read the whole disk"
cmp -s "$work/at-inc.img" "$work/restored.img" ||
    die "full + incremental differs from the disk at the incremental's instant"
info "full.img + the changed extents = the disk at the incremental backup's instant"
qemu-img check -q "$work/inc.qcow2" || die "qemu-img check inc.qcow2 failed"
qemu-img compare -q -f raw -F qcow2 "$work/at-inc.img" "$work/inc.qcow2" ||
    die "full.qcow2 <- inc.qcow2 differs from the disk at the incremental's instant"
info "the chain full.qcow2 <- inc.qcow2 passes qemu-img check and equals it too"

say "Restore 'monday' (full.qcow2) into the live disk, guest stopped"
qemu-img convert -n -f qcow2 -O raw "$work/full.qcow2" "$(uri vda)"
cmp -s "$work/at-full.img" "$work/vda.img" || die "the restored disk differs"
info "qemu-img convert -n wrote it through the export vda: the disk is monday's again"
qmp backup-begin '{"id": "after", "incremental": "tuesday"}' > /dev/null
qemu-img convert -f raw -O qcow2 -B "$work/inc.qcow2" -F qcow2 \
         "$(uri vda@after)" "$work/after.qcow2"
qmp backup-end '{"id": "after"}' > /dev/null
qemu-img compare -q -f raw -F qcow2 "$work/at-full.img" "$work/after.qcow2" ||
    die "the incremental after the restore does not give the restored disk"
info "the restore was recorded: an incremental from 'tuesday' over inc.qcow2 gives it"

say "Checkpoints now"
qmp query-checkpoints | $PY -c '
import json, sys
for c in json.load(sys.stdin):
    print("    %-8s parent=%-8s current=%s" % (c["name"], c.get("parent", "-"),
                                             c["current"]))'

say "Quit nbdkit over QMP"
qmp quit > /dev/null
status=0
wait "$pid" || status=$?
pid=
[ $status -eq 0 ] || die "nbdkit exited with status $status"

printf '\ndemo OK: %s disk; incremental backup: %s changed, %s read, %s zeroed\n' \
       "$(mib $SIZE)" "$(mib "$changed")" "$(mib "$nread")" "$(mib "$nzero")"
