#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# QMP over TCP with TLS (issue 12 item 5), with real TLS clients on
# 127.0.0.1: Python's ssl with x509 client certificates, gnutls-cli
# with a pre-shared key.  A client that cannot authenticate, or speaks
# plain text, gets nothing and the server keeps serving.  A TCP
# monitor without TLS is refused at start-up.
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e
set -x

requires_built "$FILTER" "$PLUGIN"
requires nbdkit --version
requires certtool --version
requires gnutls-cli --version
requires $PY -c 'import ssl'
tmpdir

# ---- test certificates: CA, server, client; and another CA ----
pki="$tmp/pki"
mkdir "$pki" "$tmp/other"
cd "$tmp"
gen ()                          # gen KEYFILE
{
    certtool --generate-privkey --key-type=ecdsa --outfile "$1" 2>/dev/null
}
gen "$pki/ca-key.pem"
printf 'cn = QMP test CA\nca\ncert_signing_key\nexpiration_days = 2\n' > ca.tmpl
certtool --generate-self-signed --load-privkey "$pki/ca-key.pem" \
         --template ca.tmpl --outfile "$pki/ca-cert.pem" 2>/dev/null
gen "$pki/server-key.pem"
printf 'cn = localhost\ndns_name = localhost\nip_address = 127.0.0.1\ntls_www_server\nexpiration_days = 2\n' > server.tmpl
certtool --generate-certificate --load-privkey "$pki/server-key.pem" \
         --load-ca-certificate "$pki/ca-cert.pem" \
         --load-ca-privkey "$pki/ca-key.pem" \
         --template server.tmpl --outfile "$pki/server-cert.pem" 2>/dev/null
printf 'cn = backup appliance\ntls_www_client\nexpiration_days = 2\n' > client.tmpl
gen client-key.pem
certtool --generate-certificate --load-privkey client-key.pem \
         --load-ca-certificate "$pki/ca-cert.pem" \
         --load-ca-privkey "$pki/ca-key.pem" \
         --template client.tmpl --outfile client-cert.pem 2>/dev/null
# The same client name, signed by a CA the server does not trust.
gen other/ca-key.pem
certtool --generate-self-signed --load-privkey other/ca-key.pem \
         --template ca.tmpl --outfile other/ca-cert.pem 2>/dev/null
gen other/client-key.pem
certtool --generate-certificate --load-privkey other/client-key.pem \
         --load-ca-certificate other/ca-cert.pem \
         --load-ca-privkey other/ca-key.pem \
         --template client.tmpl --outfile other/client-cert.pem 2>/dev/null
cd - >/dev/null

free_port ()
{
    $PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

cat > "$tmp/x509.py" <<'EOF2'
import json, socket, ssl, sys
port, pki, tmp = int(sys.argv[1]), sys.argv[2], sys.argv[3]

def connect(cert=None, key=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki + "/ca-cert.pem")
    if cert:
        ctx.load_cert_chain(cert, key)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname="localhost")

def lines(s):
    buf = b""
    while True:
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield json.loads(line)
        d = s.recv(65536)
        if not d:
            return
        buf += d

def good():
    s = connect(tmp + "/client-cert.pem", tmp + "/client-key.pem")
    msgs = lines(s)
    g = next(msgs)
    assert g["QMP"]["version"]["qemu"]["major"] == 7, g
    s.sendall(b'{"execute": "qmp_capabilities"}\n'
              b'{"execute": "query-version", "id": "tls"}\n')
    assert next(msgs) == {"return": {}}
    r = next(msgs)
    assert r["id"] == "tls" and r["return"]["qemu"]["minor"] == 2, r
    # A large reply crosses many TLS records.
    s.sendall(b'{"execute": "query-commands", "id": 2}' * 200)
    for i in range(200):
        r = next(msgs)
        assert r["id"] == 2 and len(r["return"]) > 3, r
    s.close()

def refused(cert=None, key=None):
    """The handshake fails, or the server closes before a greeting."""
    try:
        s = connect(cert, key)
        s.sendall(b'{"execute": "qmp_capabilities"}\n')
        data = s.recv(65536)
    except (ssl.SSLError, ConnectionError, OSError) as e:
        print("refused:", repr(e))
        return
    assert b"QMP" not in data, data
    assert data == b"", data

good()
refused()                                        # no certificate
refused(tmp + "/other/client-cert.pem", tmp + "/other/client-key.pem")
good()

# Plain text on the TLS port: nothing useful back; the server goes on.
raw = socket.create_connection(("127.0.0.1", port), timeout=10)
raw.sendall(b'{"execute": "qmp_capabilities"}\n')
data = b""
try:
    while True:
        d = raw.recv(4096)
        if not d:
            break
        data += d
except (ConnectionError, socket.timeout):
    pass
assert b"QMP" not in data and b"return" not in data, data
raw.close()
good()
print("x509 OK")
EOF2

# ---- x509, the filter hosting the monitor ----
port=$(free_port)
start_nbdkit x5 --filter="$FILTER" memory 1M qmp=tcp:127.0.0.1:$port \
             qmp-tls-certificates="$pki"
$PY "$tmp/x509.py" "$port" "$pki" "$tmp"
kill -0 "$pid" || fail "nbdkit died"
kill_nbdkit "$pid"

# ---- PSK with gnutls-cli, the plugin hosting the monitor ----
key=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
wrong=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
printf 'alice:%s\n' "$key" > "$tmp/keys.psk"
chmod 600 "$tmp/keys.psk"
truncate -s 1M "$tmp/a.img"
port=$(free_port)
start_nbdkit ps "$PLUGIN" disk=sda:"$tmp/a.img" qmp=tcp:127.0.0.1:$port \
             qmp-tls-psk="$tmp/keys.psk"
cat > "$tmp/psk.py" <<'EOF2'
import json, subprocess, sys, threading
port, user, key, expect = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
p = subprocess.Popen(
    ["gnutls-cli", "--pskusername=" + user, "--pskkey=" + key,
     "--priority=NORMAL:-KX-ALL:+ECDHE-PSK:+DHE-PSK:+PSK",
     "--port=" + port, "127.0.0.1"],
    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
timer = threading.Timer(20, p.kill)
timer.start()
# A refused client may be gone before it reads its input.
try:
    p.stdin.write(b'{"execute": "qmp_capabilities"}\n'
                  b'{"execute": "query-version", "id": "psk"}\n')
    p.stdin.flush()
except BrokenPipeError:
    pass
got = []
for line in p.stdout:
    line = line.strip()
    if line.startswith(b"{"):
        got.append(json.loads(line))
        if got[-1].get("id") == "psk":
            break
try:
    p.stdin.close()
except BrokenPipeError:
    pass
p.wait()
timer.cancel()
if expect == "ok":
    assert "QMP" in got[0], got
    assert got[1] == {"return": {}}, got
    assert got[2]["return"]["qemu"]["major"] == 7, got
else:
    assert got == [], got
    assert p.returncode != 0, p.returncode
print("PSK", user, expect, "OK")
EOF2
$PY "$tmp/psk.py" "$port" alice "$key" ok
$PY "$tmp/psk.py" "$port" alice "$wrong" refused
$PY "$tmp/psk.py" "$port" bob "$key" refused
$PY "$tmp/psk.py" "$port" alice "$key" ok
kill -0 "$pid" || fail "nbdkit died"
kill_nbdkit "$pid"

# ---- start-up errors ----
port=$(free_port)
bad ()                          # bad PATTERN NBDKIT-ARGS...
{
    local pat="$1"
    shift
    if nbdkit -U - --filter="$FILTER" memory 1M "$@" \
              --run 'exit 0' 2>"$tmp/err"; then
        fail "nbdkit started with $*"
    fi
    assert_grep "$pat" "$tmp/err"
}
bad "needs TLS" qmp=tcp:127.0.0.1:$port
bad "not for a Unix socket" qmp="$tmp/u.sock" qmp-tls-psk="$tmp/keys.psk"
bad "give only one" qmp=tcp:127.0.0.1:$port qmp-tls-psk="$tmp/keys.psk" \
    qmp-tls-certificates="$pki"
bad "other/server-cert.pem" qmp=tcp:127.0.0.1:$port \
    qmp-tls-certificates="$tmp/other"
bad "nonexistent" qmp=tcp:127.0.0.1:$port qmp-tls-psk="$tmp/nonexistent"
bad "expected tcp:ADDRESS:PORT" qmp=tcp:127.0.0.1 qmp-tls-psk="$tmp/keys.psk"
# The plugin alone refuses it too.
if nbdkit -U - "$PLUGIN" disk=sda:"$tmp/a.img" qmp=tcp:127.0.0.1:$port \
          --run 'exit 0' 2>"$tmp/err"; then
    fail "the plugin served QMP on TCP without TLS"
fi
assert_grep "needs TLS" "$tmp/err"
