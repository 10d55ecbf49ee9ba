# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# Common functions of the nbdkit-checkpoint tests, sourced by each
# test-*.sh (bash).  make check exports PLUGIN, FILTER, srcdir,
# abs_srcdir and a PATH that starts with /usr/bin (whose python3 has
# the nbd module that nbdsh needs).

: "${srcdir:=$(dirname "$0")}"
: "${abs_srcdir:=$(cd "$srcdir" && pwd)}"
export PYTHONPATH="$abs_srcdir${PYTHONPATH:+:$PYTHONPATH}"
export PATH="/usr/bin:$PATH"
export PYTHONDONTWRITEBYTECODE=1
PY=/usr/bin/python3
QMP="$PY $abs_srcdir/qmp-client.py"

# Sanitizer builds (configure --enable-sanitizers[=thread]; make check
# exports NC_SANITIZER and NC_SANITIZER_PRELOAD).  Our modules are built
# with the sanitizer but Debian's nbdkit is not, so its runtime must be
# preloaded, into nbdkit alone: "nbdkit" in the tests is
# sanitizer-nbdkit, found first in PATH, which sets LD_PRELOAD and the
# *SAN_OPTIONS for the real nbdkit only (clients get neither).
#
# Known trap: with libasan (or libtsan) preloaded, every program linked
# with gnutls (nbdkit, qemu-io, nbdinfo) hangs at exit in libp11-kit's
# destructor, even "nbdkit file /nonexistent".  Cause: the runtime
# initialises on the first malloc, which is in libp11-kit's constructor
# inside newlocale () with glibc's locale lock held for writing; its
# dlsym ("swift_demangle") + dlerror () then takes the same lock for
# reading (gettext), corrupting it, and freelocale () at exit waits
# forever.  No ASAN_OPTIONS (detect_leaks, fast_unwind_on_malloc,
# handle_segv, symbolize), p11-kit or gnutls variable, glibc tunable or
# nbdkit option avoids it.  The way around: preload with the runtime
# the tiny sanitizer-preload.so, which defines swift_demangle so that
# the lookup succeeds and nothing takes the lock (details there).
#
# Each report goes to a file in NC_SANITIZER_LOGDIR; when the test
# ends (after its nbdkit processes have exited) any report is printed
# into the test's log and fails the test.
NC_TIME_FACTOR=1
if [ -n "${NC_SANITIZER:-}" ] && [ "$NC_SANITIZER" != none ]; then
    NC_SANITIZER_LOGDIR="$(mktemp -d /tmp/nc-san-XXXXXX)"
    NC_REAL_NBDKIT="$(PATH=/usr/bin:$PATH command -v nbdkit)" ||
        { echo "$0: nbdkit not found" >&2; exit 1; }
    mkdir "$NC_SANITIZER_LOGDIR/bin"
    ln -s "$abs_srcdir/sanitizer-nbdkit" "$NC_SANITIZER_LOGDIR/bin/nbdkit"
    export NC_SANITIZER NC_SANITIZER_PRELOAD NC_SANITIZER_LOGDIR NC_REAL_NBDKIT
    # Start-up, shutdown and leak checks are slower: wait longer.
    NC_TIME_FACTOR=4
    export PATH="$NC_SANITIZER_LOGDIR/bin:$PATH"
fi

# cleanup_fn CMD [ARGS]: run CMD when the script exits for any reason.
declare -a _cleanup_hooks
cleanup_fn ()
{
    _cleanup_hooks[${#_cleanup_hooks[@]}]="$*"
}

_run_cleanup_hooks ()
{
    local status=$? i
    set +e
    trap '' INT QUIT TERM EXIT ERR
    echo "$0: run cleanup hooks: exit code $status"
    # Newest first: stop servers before removing their directory.
    for (( i = ${#_cleanup_hooks[@]} - 1; i >= 0; --i )); do
        ${_cleanup_hooks[i]}
    done
    _check_sanitizer_reports || status=1
    exit $status
}

# Print every sanitizer report of this test's nbdkit processes; fails
# (returns 1) if there was one, except for nbdkit's own leak.
_check_sanitizer_reports ()
{
    local f found=0

    [ -n "${NC_SANITIZER_LOGDIR:-}" ] || return 0
    { set +x; } 2>/dev/null     # the reports, not this function, in the log
    for f in "$NC_SANITIZER_LOGDIR"/report.*; do
        [ -s "$f" ] || continue
        if _nbdkit_own_leaks "$f"; then
            echo "$0: note: nbdkit's own leaks (not failing), $(basename "$f"):"
            cat "$f"
            continue
        fi
        found=1
        echo "$0: FAIL: sanitizer report $(basename "$f"):" >&2
        cat "$f" >&2
    done
    rm -rf "$NC_SANITIZER_LOGDIR"
    return $found
}

# _nbdkit_own_leaks REPORT: is REPORT a leak report whose every direct
# leak was allocated by nbdkit's own code (first frame past the
# runtime's in the nbdkit binary)?  nbdkit 1.32 never closes a
# connection still open when it shuts down (quit or SIGTERM with an
# NBD client connected): its connection and context structures leak,
# and with them, as indirect leaks, the handles our .open made (shown
# with the stock log filter too, which leaks the same way).  Our own
# leaks are direct leaks with a frame of ours on top, and still fail.
_nbdkit_own_leaks ()
{
    awk -v kit="($NC_REAL_NBDKIT+" '
        /ERROR: LeakSanitizer/ { lsan = 1 }
        /ERROR: (AddressSanitizer|ThreadSanitizer)|runtime error/ { other = 1 }
        /^Direct leak/ { direct = 1; top = 1; ndirect++; next }
        /^Indirect leak/ { direct = 0; next }
        direct && top && /^ *#[0-9]+ / {
            if ($0 ~ /__interceptor_|libsanitizer|libasan/) next
            top = 0
            if (index($0, kit) == 0) ours++
        }
        END { exit !(lsan && !other && ndirect > 0 && ours == 0) }' "$1"
}

trap _run_cleanup_hooks INT QUIT TERM EXIT ERR

# skip MSG: exit 77 (skipped), but a skip in CI is a failure: no
# end-to-end test may silently not run there.
skip ()
{
    if [ "$CI" = "true" ]; then
        echo "$0: FAIL (CI=true, cannot skip): $*" >&2
        exit 1
    fi
    echo "$0: test skipped: $*"
    exit 77
}

# requires CMD [ARGS]: skip unless CMD ARGS runs successfully.
requires ()
{
    ( "$@" ) </dev/null >/dev/null 2>&1 || skip "'$*' failed"
}

# requires_built FILE...: the plugin, filter or helper was built.
requires_built ()
{
    local f
    for f in "$@"; do
        [ -n "$f" ] || skip "PLUGIN or FILTER not set: run under make check"
        [ -f "$f" ] || skip "$f not built"
    done
}

fail ()
{
    echo "$0: FAIL: $*" >&2
    exit 1
}

# assert_eq ACTUAL EXPECTED [WHAT]
assert_eq ()
{
    if [ "$1" != "$2" ]; then
        fail "${3:-value}: expected '$2', got '$1'"
    fi
}

# assert_grep PATTERN FILE: FILE contains the extended regexp.
assert_grep ()
{
    grep -qE -- "$1" "$2" || {
        echo "--- $2:" >&2; cat "$2" >&2
        fail "'$1' not found in $2"
    }
}

# tmpdir: a fresh short directory in $tmp (Unix socket paths are
# limited to 107 bytes), removed at exit.
tmpdir ()
{
    tmp="$(mktemp -d /tmp/nc-XXXXXX)"
    cleanup_fn rm -rf "$tmp"
}

sha ()
{
    sha256sum < "$1" | cut -d' ' -f1
}

# allocated FILE: bytes actually allocated on disk.
allocated ()
{
    echo $(( $(stat -c '%b * %B' "$1") ))
}

# start_nbdkit NAME NBDKIT-ARGS...
#
# Runs nbdkit in the foreground in the background (so that wait gives
# its exit status) with -P $tmp/NAME.pid and -U $tmp/NAME.sock (unless
# -p is among the arguments), logging to $tmp/NAME.log, and waits
# until the pidfile and the qmp= socket (if any) exist.  Sets pid
# (also in $tmp/NAME.pid), sock and log; the cleanup kills this
# process only.  Fails if nbdkit exits first.  --exit-with-parent:
# nothing outlives a test killed with SIGKILL.
start_nbdkit ()
{
    local name="$1" qmpsock="" a i
    local -a listen
    shift
    sock="$tmp/$name.sock"
    listen=(-U "$sock")
    for a in "$@"; do
        case "$a" in
            qmp=tcp:*) ;;               # no socket file to wait for
            qmp=*) qmpsock="${a#qmp=}" ;;
            -p|--port|--port=*) listen=(); sock="" ;; # TCP instead
        esac
    done
    log="$tmp/$name.log"
    rm -f "$tmp/$name.pid"
    nbdkit -f --exit-with-parent -P "$tmp/$name.pid" "${listen[@]}" \
           ${NC_VERBOSE:+-v} "$@" 2>"$log" &
    pid=$!
    cleanup_fn kill_nbdkit "$pid" "$log"
    for (( i = 0; i < 200 * NC_TIME_FACTOR; ++i )); do
        if [ -s "$tmp/$name.pid" ] &&
           { [ -z "$qmpsock" ] || [ -S "$qmpsock" ]; }; then
            assert_eq "$(cat "$tmp/$name.pid")" "$pid" "pidfile of $name"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            cat "$log" >&2
            fail "nbdkit $name exited during start-up"
        fi
        sleep 0.05
    done
    cat "$log" >&2
    fail "nbdkit $name did not start in $(( 10 * NC_TIME_FACTOR )) s"
}

# mount_tmpfs DIR SIZE: a new tmpfs of SIZE (mount's size=) on the new
# directory DIR, unmounted by the cleanup; skips the test where mounting
# is not allowed (not root).
mount_tmpfs ()
{
    mkdir "$1"
    if ! mount -t tmpfs -o size="$2" tmpfs "$1" 2>"$tmp/mount.err"; then
        cat "$tmp/mount.err"
        skip "cannot mount a tmpfs (not root, or no mount privilege here)"
    fi
    cleanup_fn umount "$1"
}

# start_qsd IMG: qemu-storage-daemon serving the raw file IMG as node
# d0, exported writable as NBD export d0 on $tmp/qsd.sock, its monitor
# on $tmp/qsd.qmp (one client at a time, as QEMU's).  discard=unmap, or
# QEMU drops discards before they reach the dirty bitmaps.  Sets
# qsdpid; the cleanup stops it.
start_qsd ()
{
    local i
    qemu-storage-daemon \
        --blockdev driver=file,node-name=d0,filename="$1",discard=unmap \
        --nbd-server addr.type=unix,addr.path="$tmp/qsd.sock" \
        --export type=nbd,id=e0,node-name=d0,name=d0,writable=on \
        --chardev socket,id=m0,path="$tmp/qsd.qmp",server=on,wait=off \
        --monitor chardev=m0 > "$tmp/qsd.log" 2>&1 &
    qsdpid=$!
    cleanup_fn kill_nbdkit $qsdpid "$tmp/qsd.log"
    for (( i = 0; i < 200; ++i )); do
        [ -S "$tmp/qsd.qmp" ] && [ -S "$tmp/qsd.sock" ] && return 0
        kill -0 $qsdpid || { cat "$tmp/qsd.log"; fail "qemu-storage-daemon died"; }
        sleep 0.05
    done
    cat "$tmp/qsd.log"
    fail "qemu-storage-daemon did not start in 10 s"
}

# kill_nbdkit PID [LOG]: stop one nbdkit started by start_nbdkit (it
# may have exited already).  When the test is failing, show its log.
kill_nbdkit ()
{
    local p="$1" i
    if kill -0 "$p" 2>/dev/null; then
        kill "$p"
        for (( i = 0; i < 100 * NC_TIME_FACTOR; ++i )); do
            kill -0 "$p" 2>/dev/null || break
            sleep 0.05
        done
        if kill -0 "$p" 2>/dev/null; then
            echo "$0: nbdkit $p did not exit on SIGTERM, killing it" >&2
            kill -9 "$p"
        fi
    fi
    wait "$p" 2>/dev/null
    if [ -n "$2" ] && [ -s "$2" ] && [ "${status:-0}" != 0 ]; then
        echo "--- $2:" >&2; tail -n 50 "$2" >&2
    fi
    return 0
}

# wait_exit PID [SECONDS]: wait for nbdkit to exit by itself and set
# exit_status to its exit status.  Fails if it does not exit in time.
# (Not in $(...): only this shell can wait for its children.)
wait_exit ()
{
    local p="$1" n="$(( ${2:-10} * NC_TIME_FACTOR ))" i
    for (( i = 0; i < n * 20; ++i )); do
        if ! kill -0 "$p" 2>/dev/null; then
            exit_status=0
            wait "$p" || exit_status=$?
            return 0
        fi
        sleep 0.05
    done
    fail "nbdkit $p did not exit within $n s"
}

# nbd_uri NODE [SOCK]
nbd_uri ()
{
    echo "nbd+unix:///$1?socket=${2:-$sock}"
}

# qio URI QEMU-IO-COMMANDS...: run qemu-io -f raw on URI with each
# argument as one -c command; fails if any command fails.
qio ()
{
    local uri="$1" c
    local -a cmds=()
    shift
    for c in "$@"; do cmds+=(-c "$c"); done
    qemu-io -f raw "$uri" "${cmds[@]}" > "$tmp/qio.out" 2>&1 || {
        cat "$tmp/qio.out" >&2
        fail "qemu-io $uri $*"
    }
    if grep -qiE 'failed|error' "$tmp/qio.out"; then
        cat "$tmp/qio.out" >&2
        fail "qemu-io $uri $*"
    fi
}

# qmp_get SOCKET COMMAND [JSON-ARGS] [PYTHON-EXPR]: run a command and
# print PYTHON-EXPR evaluated with r = the return value (default: r as
# JSON).
qmp_get ()
{
    $PY - "$@" <<'PYEOF'
import json, sys, importlib
qmp = importlib.import_module("qmp-client")
sock, name = sys.argv[1], sys.argv[2]
args = json.loads(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3] else None
expr = sys.argv[4] if len(sys.argv) > 4 else "json.dumps(r)"
with qmp.QMP(sock) as m:
    r = m.command(name, args)
print(eval(expr))
PYEOF
}

# exports [SOCK]: "NAME SIZE" per export as nbdinfo --list shows them
# ("" for the empty name), sorted.
exports ()
{
    local json
    json="$(nbdinfo --list --json "nbd+unix://?socket=${1:-$sock}")" ||
        fail "nbdinfo --list failed"
    echo "$json" | $PY -c '
import json, sys
for e in json.load(sys.stdin)["exports"]:
    print("%s %d" % (e["export-name"] or "\"\"", e["export-size"]))' | sort
}

# size URI: the export size as a client sees it.
size ()
{
    nbdinfo --size "$1"
}
