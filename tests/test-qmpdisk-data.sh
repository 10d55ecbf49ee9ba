#!/usr/bin/env bash
# The qmpdisk plugin alone, two file disks: every data operation lands
# in the right backing file, and zero/trim make real holes.
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e
set -x

requires_built "$PLUGIN"
requires nbdkit --version
requires nbdinfo --version
requires nbdcopy --version
requires qemu-io --version
requires nbdsh --version
requires $PY -c 'import nbd'
tmpdir

M=$((1024*1024))
# Relative paths: the plugin must make them absolute.
cd "$tmp"
truncate -s 8M a.img
truncate -s 4M b.img
start_nbdkit qd "$PLUGIN" disk=sda:a.img disk=sdb:b.img
cd /

# Both disks are listed with their sizes.
exports > "$tmp/list"
assert_grep '^sda 8388608$' "$tmp/list"
assert_grep '^sdb 4194304$' "$tmp/list"
assert_eq "$(size "$(nbd_uri sda)")" $((8*M)) "size of sda"
assert_eq "$(size "$(nbd_uri sdb)")" $((4*M)) "size of sdb"
assert_eq "$(size "$(nbd_uri '')")" $((8*M)) "size of the default export"

# Patterns at different offsets of the two disks stay apart.
qio "$(nbd_uri sda)" 'write -P 0x55 0 1M'
qio "$(nbd_uri sdb)" 'write -P 0xaa 1M 1M'
qio "$(nbd_uri sda)" 'read -P 0x55 0 1M' 'read -P 0 1M 7M'
qio "$(nbd_uri sdb)" 'read -P 0 0 1M' 'read -P 0xaa 1M 1M' 'read -P 0 2M 2M'
# Default export "" is sda.
qio "$(nbd_uri '')" 'read -P 0x55 0 1M'
nbdsh -u "$(nbd_uri '')" -c '
assert h.get_size() == 8 * 1024 * 1024
assert h.pread(1024 * 1024, 0) == b"\x55" * (1024 * 1024)
assert h.pread(4096, 1024 * 1024) == bytes(4096)'
nbdsh -u "$(nbd_uri sdb)" -c '
assert h.pread(2 * 1024 * 1024, 0) == bytes(1 << 20) + b"\xaa" * (1 << 20)'
# The files hold exactly that.
cmp <(head -c 1M /dev/zero | tr '\0' '\125') <(head -c 1M "$tmp/a.img")
cmp <(head -c 1M /dev/zero | tr '\0' '\252') \
    <(dd if="$tmp/b.img" bs=1M skip=1 count=1 2>/dev/null)

# Whole-disk copies both ways: the export equals the backing file.
head -c 8M /dev/urandom > "$tmp/ref"
nbdcopy "$tmp/ref" "$(nbd_uri sda)"
assert_eq "$(sha "$tmp/a.img")" "$(sha "$tmp/ref")" "a.img after nbdcopy in"
nbdcopy "$(nbd_uri sda)" "$tmp/out"
assert_eq "$(sha "$tmp/out")" "$(sha "$tmp/ref")" "sda read back"
nbdcopy "$(nbd_uri '')" "$tmp/out"
assert_eq "$(sha "$tmp/out")" "$(sha "$tmp/ref")" "default export read back"
nbdcopy "$(nbd_uri sdb)" "$tmp/out"
assert_eq "$(sha "$tmp/out")" "$(sha "$tmp/b.img")" "sdb read back"

# Zero (may unmap) and trim punch holes; zero without unmap reads 0.
alloc_before=$(allocated "$tmp/a.img")
test "$alloc_before" -ge $((8*M)) || fail "a.img not fully allocated"
qio "$(nbd_uri sda)" 'write -z -u 2M 1M' 'discard 4M 1M' 'write -z 6M 64k' \
    'read -P 0 2M 1M' 'read -P 0 6M 64k'
alloc_after=$(allocated "$tmp/a.img")
test "$alloc_after" -le $((alloc_before - 2*M + 65536)) ||
    fail "zero/trim did not free space: $alloc_before -> $alloc_after"
cmp -n $M -i $((2*M)):0 "$tmp/a.img" /dev/zero
cmp -n $((64*1024)) -i $((6*M)):0 "$tmp/a.img" /dev/zero
# Data outside the zeroed ranges is intact.
cmp -n $((2*M)) "$tmp/a.img" "$tmp/ref"
cmp -n $M -i $((3*M)):$((3*M)) "$tmp/a.img" "$tmp/ref"
cmp -i $((7*M)):$((7*M)) "$tmp/a.img" "$tmp/ref"

# Block status (SEEK_DATA/SEEK_HOLE) shows the holes.
$PY - "$(nbd_uri sda)" "$(nbd_uri sdb)" <<'EOF'
import nbd
from incremental_apply import extents
from testlib import *
sda, sdb = script_args(str, str)
M = 1 << 20

def extents_of(target):
    h = nbd_open(target, base_allocation=True)
    assert h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    out = extents(h)
    h.shutdown()
    return out

def flags_at(ex, off, length):
    """The union and intersection of flags over [off, off+length)."""
    fl = [f for (o, l, f) in ex if o < off + length and o + l > off]
    all_f = 0xff
    for f in fl:
        all_f &= f
    return all_f

a = extents_of(sda)
print(a)
for (off, length) in ((2 * M, M), (4 * M, M)):
    assert flags_at(a, off, length) & 3 == 3, ("not a hole", off, a)
for (off, length) in ((0, 2 * M), (3 * M, M), (5 * M, M), (7 * M, M)):
    assert flags_at(a, off, length) & 1 == 0, ("not data", off, a)

b = extents_of(sdb)
print(b)
assert flags_at(b, M, M) & 1 == 0, b
assert flags_at(b, 0, M) & 3 == 3, b
assert flags_at(b, 2 * M, 2 * M) & 3 == 3, b
EOF
nbdinfo --map "$(nbd_uri sda)" > "$tmp/map"
assert_grep "^ *$((2*M)) +$M +3 +hole,zero" "$tmp/map"

# Flush and FUA are offered and work; written data is in the file at
# once.  Cache too.  Several connections at once (multi-conn).
$PY - "$(nbd_uri sdb)" "$tmp/b.img" <<'EOF'
import nbd
from testlib import *
uri, path = script_args(str, str)
hs = [nbd_open(uri) for _ in range(3)]
for h in hs:
    assert h.can_flush() and h.can_fua() and h.can_multi_conn(), uri
    assert h.can_zero() and h.can_trim() and not h.is_read_only()
hs[0].pwrite(b"\x11" * 4096, 0, nbd.CMD_FLAG_FUA)
hs[1].pwrite(b"\x22" * 4096, 4096)
hs[1].flush()
hs[2].zero(4096, 8192, nbd.CMD_FLAG_FUA)
if hs[2].can_cache():
    hs[2].cache(65536, 0)
# Each connection sees the others' writes (one backend per disk).
for h in hs:
    assert h.pread(8192, 0) == b"\x11" * 4096 + b"\x22" * 4096
with open(path, "rb") as f:
    assert f.read(12288) == b"\x11" * 4096 + b"\x22" * 4096 + bytes(4096)
# Unaligned I/O
hs[0].pwrite(b"xyz", 100001)
assert hs[1].pread(5, 100000) == b"\0xyz\0"
for h in hs:
    h.shutdown()
EOF

# Unknown export names are refused.
if nbdinfo --size "$(nbd_uri nosuch)" 2>"$tmp/err"; then
    fail "export 'nosuch' was opened"
fi

# With -r nothing can be written and the files do not change.
sum_a=$(sha "$tmp/a.img") sum_b=$(sha "$tmp/b.img")
start_nbdkit ro -r "$PLUGIN" disk=sda:"$tmp/a.img" disk=sdb:"$tmp/b.img"
$PY - "$(nbd_uri sda)" "$(nbd_uri sdb)" <<'EOF'
import nbd
from testlib import *
for uri in script_args(str, str):
    h = nbd_open(uri)
    assert h.is_read_only(), uri
    for op in (lambda: h.pwrite(b"x" * 512, 0),
               lambda: h.zero(512, 0),
               lambda: h.trim(512, 0)):
        try:
            op()
        except nbd.Error:
            pass
        else:
            raise AssertionError("write allowed on a read-only export")
    h.pread(512, 0)
    h.shutdown()
EOF
if qemu-io -f raw "$(nbd_uri sda)" -c 'write -P 1 0 512' >"$tmp/err" 2>&1; then
    fail "qemu-io wrote through -r"
fi
assert_eq "$(sha "$tmp/a.img")" "$sum_a" "a.img changed under -r"
assert_eq "$(sha "$tmp/b.img")" "$sum_b" "b.img changed under -r"
# ... and never opened the files for writing (O_ACCMODE in fdinfo).
n=0
for fd in /proc/$pid/fd/*; do
    case "$(readlink "$fd")" in
        "$tmp/a.img"|"$tmp/b.img")
            flags=$(awk '/^flags:/ { print $2 }' /proc/$pid/fdinfo/${fd##*/})
            assert_eq $(( 0$flags & 3 )) 0 "access mode of $(readlink "$fd")"
            n=$((n+1)) ;;
    esac
done
test $n -ge 2 || fail "the -r server has no open disk files"
