#!/bin/sh
# tls.sh: the tls listener against openssl s_client and Python's ssl module: protocol
# versions (1.0/1.1 refused, 1.2/1.3 accepted, min_version = TLSv1.3), silent clients that
# never finish a handshake, certificate reload on SIGHUP, and client certificates (client_ca,
# with TLS 1.2 session resumption). Real SIP clients over TLS
# (sipsak, baresip) are in tls_clients.sh.
. "$top_srcdir/test/lib.sh"
. "$top_srcdir/test/tls_lib.sh"
setup_store || { fail "store setup"; finish; }
make_cert server sipauthd-test-1 || { cat "$T/server.openssl.log"; fail "openssl made no certificate"; finish; }
cp "$T/server.pem" "$T/ca1.pem"
start_tls_sipauthd d1 "SHA-256, MD5" "handshake_timeout = 2
max_handshakes = 4" || { fail "sipauthd did not start with a tls listener"; finish; }
assert_match "the tls listener is up" "event=listening proto=tls addr=127.0.0.1 port=$TLS_PORT" "$(cat "$T/d1.log")"

# sclient NAME ARGS...: openssl s_client against the tls port, certificate and IP verified;
# output in $T/NAME.sc, exit status returned. Its input stays open 0.5 s so that the server
# can answer before s_client closes. The negotiated version is the "New, TLSv1.x, Cipher is"
# line: with TLS 1.3 s_client prints an "SSL-Session: Protocol  :" block only for a session
# ticket, which a server need not send.
sclient() {
	_n=$1; shift
	sleep 0.5 | timeout 10 openssl s_client -connect "127.0.0.1:$TLS_PORT" -CAfile "$T/ca1.pem" -verify_ip 127.0.0.1 \
		-verify_return_error "$@" >"$T/$_n.sc" 2>&1
}
# refused NAME WHAT: the handshake failed on the server's protocol_version alert (70)
refused() {
	_out=$(cat "$T/$1.sc")
	assert_match "$2: the server answers with a protocol_version alert" \
		"ssl3_read_bytes:tlsv1 alert protocol version.*SSL alert number 70" "$_out"
	assert_match "$2: no cipher was agreed" "New, \(NONE\), Cipher is \(NONE\)" "$_out"
}

# --- 1. protocol versions with the default min_version (TLSv1.2)
sclient tls10 -tls1 -cipher 'DEFAULT@SECLEVEL=0'
assert_eq "TLS 1.0 handshake fails (s_client exit status)" 1 $?
refused tls10 "TLS 1.0"
sclient tls11 -tls1_1 -cipher 'DEFAULT@SECLEVEL=0'
assert_eq "TLS 1.1 handshake fails (s_client exit status)" 1 $?
refused tls11 "TLS 1.1"
assert_eq "the daemon logged both refusals" 2 \
	"$(grep -c 'event=tls_close src=127.0.0.1:[0-9]* handshake=incomplete reason="[^"]*unsupported protocol"' "$T/d1.log")"
sclient tls12 -tls1_2
assert_eq "TLS 1.2 handshake succeeds" 0 $?
assert_match "TLS 1.2 is negotiated" "^New, TLSv1.2, Cipher is ECDHE-ECDSA-" "$(cat "$T/tls12.sc")"
assert_match "TLS 1.2 is negotiated (session)" "Protocol  : TLSv1.2$" "$(cat "$T/tls12.sc")"
assert_match "TLS 1.2: the certificate verifies for 127.0.0.1" "Verify return code: 0 \(ok\)" "$(cat "$T/tls12.sc")"
sclient tls13 -tls1_3
assert_eq "TLS 1.3 handshake succeeds" 0 $?
assert_match "TLS 1.3 is negotiated" "^New, TLSv1.3, Cipher is TLS_" "$(cat "$T/tls13.sc")"
assert_match "TLS 1.3: the certificate verifies for 127.0.0.1" "Verify return code: 0 \(ok\)" "$(cat "$T/tls13.sc")"
assert_eq "SIP over TLS: an OPTIONS keep-alive gets 200" "OPTIONS 200 cn=sipauthd-test-1 TLSv1.3" \
	"$(tls_probe "$TLS_PORT" "$T/ca1.pem")"

# --- 2. clients that open TLS connections and never send a byte (max_handshakes = 4,
# handshake_timeout = 2): a fifth TLS connection is closed at once while they hang, UDP
# and TCP are served meanwhile, the daemon drops the silent ones at the timeout, and TLS
# works again. The four come from four addresses: from one address only two would be let in
# (the upper half of the slots is kept for sources with no handshake in progress).
rm -f "$T/stalled" "$T/udp_done"
cat >"$T/stall.py" <<'PY'
import os, socket, ssl, sys, time
port, ca, d = int(sys.argv[1]), sys.argv[2], sys.argv[3]
silent = [socket.create_connection(("127.0.0.1", port), source_address=(f"127.0.0.{3 + i}", 0)) for i in range(4)]
t0 = time.monotonic()
time.sleep(0.3)                       # the daemon accepts all four
ctx = ssl.create_default_context(cafile=ca)
t = time.monotonic()
try:
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5), server_hostname="127.0.0.1")
    print("fifth accepted", s.version(), flush=True)
except (OSError, ssl.SSLError):
    print("fifth refused", "at once" if time.monotonic() - t < 1.0 else "slowly", flush=True)
open(os.path.join(d, "stalled"), "w").close()
first = True
for c in silent:
    c.settimeout(6)
    try:
        data = c.recv(1)
        what = "closed by the daemon" if data == b"" else "got data"
    except ConnectionResetError:
        what = "closed by the daemon"
    except socket.timeout:
        what = "still open"
    if first:
        print("UDP answered during the stall:", os.path.exists(os.path.join(d, "udp_done")), flush=True)
        first = False
    dt = time.monotonic() - t0
    print("silent", what, "at the handshake timeout" if 1.5 <= dt <= 4.0 else "after %.1f s" % dt, flush=True)
PY
spawn "$T/stall.out" python3 "$T/stall.py" "$TLS_PORT" "$T/ca1.pem" "$T"
stall_pid=$!
wait_for test -f "$T/stalled" || fail "the silent-client script did not start"
st_udp=$(sipc options | json_get 'final.get("final_status")')
: >"$T/udp_done"   # before the TCP one: each Python start takes a while on a loaded machine
st_tcp=$(sipc options --transport tcp | json_get 'final.get("final_status")')
wait "$stall_pid"
assert_eq "UDP OPTIONS is answered while TLS handshakes are stalled" 200 "$st_udp"
assert_eq "TCP OPTIONS is answered while TLS handshakes are stalled" 200 "$st_tcp"
assert_eq "handshake limit: a fifth TLS connection is closed at once; the four silent ones are dropped at handshake_timeout" \
"fifth refused at once
UDP answered during the stall: True
silent closed by the daemon at the handshake timeout
silent closed by the daemon at the handshake timeout
silent closed by the daemon at the handshake timeout
silent closed by the daemon at the handshake timeout" "$(cat "$T/stall.out")"
assert_eq "the refusal is logged with the counts" 1 \
	"$(grep -c 'event=tcp_refused proto=tls reason=handshakes src=127.0.0.1 connections=4 handshakes=4' "$T/d1.log")"
assert_eq "the four timeouts are logged" 4 \
	"$(grep -c 'event=tls_close src=127.0.0.[3-6]:[0-9]* handshake=incomplete reason="timeout"' "$T/d1.log")"
assert_eq "after the timeout a new TLS client is served" "OPTIONS 200 cn=sipauthd-test-1 TLSv1.3" \
	"$(tls_probe "$TLS_PORT" "$T/ca1.pem")"

# a client that sends its ClientHello one byte every 0.5 s is as stuck as a silent one: the
# handshake timeout is a deadline from accept, not an idle timer that each byte re-arms
# (else max_handshakes such clients hold every handshake slot for as long as they like)
python3 - "$TLS_PORT" >"$T/trickle.out" <<'PY'
import socket, ssl, sys, time
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
obj = ctx.wrap_bio(inc, out, server_hostname="127.0.0.1")
try:
    obj.do_handshake()
except ssl.SSLWantReadError:
    pass
hello = out.read()                    # a real ClientHello, about 500 bytes
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.settimeout(0.5)
t0 = time.monotonic()
for b in hello:
    try:
        s.send(bytes([b]))
        if s.recv(16) == b"":
            break
    except socket.timeout:
        pass
    except OSError:
        break
    if time.monotonic() - t0 > 6:
        print("trickling client still connected after 6 s"); sys.exit()
dt = time.monotonic() - t0
print("trickling client closed", "at the handshake timeout" if dt <= 3.5 else "after %.1f s" % dt)
PY
assert_eq "a ClientHello trickled byte by byte is cut off at handshake_timeout (2 s)" \
	"trickling client closed at the handshake timeout" "$(cat "$T/trickle.out")"

# --- 3. SIGHUP reloads the certificate; established connections carry on
make_cert server2 sipauthd-test-2 || fail "openssl made no second certificate"
cp "$T/server2.pem" "$T/ca2.pem"
rm -f "$T/probe.ready" "$T/go1" "$T/go2"
spawn "$T/probe.out" tls_probe "$TLS_PORT" "$T/ca1.pem" "$T/go1" "$T/go2"
probe_pid=$!
wait_for test -f "$T/probe.ready" || fail "the long-lived TLS client did not connect"
cp "$T/server2.key" "$T/server.key.new" && mv "$T/server.key.new" "$T/server.key"
cp "$T/server2.pem" "$T/server.pem.new" && mv "$T/server.pem.new" "$T/server.pem"
kill -HUP "$SIPAUTHD_PID"
wait_for grep -q "event=reloaded" "$T/d1.log" || fail "no event=reloaded after SIGHUP"
assert_eq "after SIGHUP new connections get the new certificate" "subject=CN = sipauthd-test-2" "$(peer_subject "$TLS_PORT")"
assert_eq "a client trusting only the new certificate is served" "OPTIONS 200 cn=sipauthd-test-2 TLSv1.3" \
	"$(tls_probe "$TLS_PORT" "$T/ca2.pem")"
: >"$T/go1"
wait_for sh -c "[ \$(wc -l <'$T/probe.out') -ge 2 ]"

# a broken certificate file is refused and the valid one stays
printf 'not a certificate\n' >"$T/server.pem"
kill -HUP "$SIPAUTHD_PID"
wait_for grep -q "event=reload_refused" "$T/d1.log" || fail "no event=reload_refused for a broken certificate"
assert_match "the broken certificate is named in the log" "event=tls_config_failed what=certificate file=\"$T/server.pem\"" "$(cat "$T/d1.log")"
assert_eq "after a refused reload new connections still get the valid certificate" "subject=CN = sipauthd-test-2" \
	"$(peer_subject "$TLS_PORT")"
assert_eq "after a refused reload TLS clients are still served" "OPTIONS 200 cn=sipauthd-test-2 TLSv1.3" \
	"$(tls_probe "$TLS_PORT" "$T/ca2.pem")"
: >"$T/go2"
wait "$probe_pid"
assert_eq "the connection opened before both reloads keeps working (OPTIONS 200 each time)" \
"OPTIONS 200 cn=sipauthd-test-1 TLSv1.3
OPTIONS 200 cn=sipauthd-test-1 TLSv1.3
OPTIONS 200 cn=sipauthd-test-1 TLSv1.3" "$(cat "$T/probe.out")"
kill -0 "$SIPAUTHD_PID" 2>/dev/null
assert_eq "the daemon is still running" 0 $?
stop "$SIPAUTHD_PID"

# --- 4. min_version = TLSv1.3: TLS 1.2 is refused too; TLSv1.1 is not a valid setting
make_cert server sipauthd-test-1 && cp "$T/server.pem" "$T/ca1.pem"
start_tls_sipauthd d2 "SHA-256, MD5" "min_version = TLSv1.3" || { fail "sipauthd did not start with min_version = TLSv1.3"; finish; }
sclient d2tls12 -tls1_2
assert_eq "min_version TLSv1.3: a TLS 1.2 handshake fails" 1 $?
refused d2tls12 "min_version TLSv1.3, TLS 1.2"
sclient d2tls13 -tls1_3
assert_eq "min_version TLSv1.3: a TLS 1.3 handshake succeeds" 0 $?
assert_match "min_version TLSv1.3: TLS 1.3 is negotiated" "^New, TLSv1.3, Cipher is TLS_" "$(cat "$T/d2tls13.sc")"
stop "$SIPAUTHD_PID"
sed 's/^min_version = .*/min_version = TLSv1.1/' "$T/d2.conf" >"$T/d3.conf"
timeout 10 "$SIPAUTHD" --config "$T/d3.conf" >"$T/d3.log" 2>&1
rc=$?
assert_eq "min_version = TLSv1.1 is a configuration error (exit status)" 1 "$rc"
assert_match "the error names the setting" "min_version 'TLSv1.1' is not allowed" "$(cat "$T/d3.log")"

# --- 5. max_handshakes_per_source = 2: a third silent client from one address is refused at
# once, while a client from another address is served
make_cert server sipauthd-test-1 && cp "$T/server.pem" "$T/ca1.pem"
start_tls_sipauthd d4 "SHA-256, MD5" "handshake_timeout = 5
max_handshakes_per_source = 2" || { fail "sipauthd did not start (per-source limit)"; finish; }
cat >"$T/persource.py" <<'PY'
import socket, ssl, sys, time
port, ca = int(sys.argv[1]), sys.argv[2]
silent = [socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.3", 0)) for _ in range(2)]
time.sleep(0.3)
ctx = ssl.create_default_context(cafile=ca)
try:
    ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=3, source_address=("127.0.0.3", 0)),
                    server_hostname="127.0.0.1")
    print("third from the same address accepted")
except (OSError, ssl.SSLError):
    print("third from the same address refused")
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=3), server_hostname="127.0.0.1")
print("another address", s.version())
PY
assert_eq "per-source handshake limit: the same address is refused, another is served" \
"third from the same address refused
another address TLSv1.3" "$(python3 "$T/persource.py" "$TLS_PORT" "$T/ca1.pem" 2>&1)"
stop "$SIPAUTHD_PID"

# --- 6. client_ca (mutual TLS): a client without a certificate is refused, one with a
# certificate of that CA is served; the certificate request names the CA; a TLS 1.2 session is
# resumed (a PBX that caches sessions reconnects without a full handshake)
make_cert client pbx-client-ca || fail "openssl made no client certificate"
start_tls_sipauthd d5 "SHA-256, MD5" "client_ca = $T/client.pem" || { fail "sipauthd did not start (client_ca)"; finish; }
sclient d5nocert -tls1_2
assert_eq "client_ca: a client without a certificate is refused" 1 $?
sclient d5cert -tls1_2 -cert "$T/client.pem" -key "$T/client.key" -sess_out "$T/d5.sess"
assert_eq "client_ca: a client with a certificate of the CA is served" 0 $?
assert_match "client_ca: the certificate request names the CA" \
	"Acceptable client certificate CA names
CN = pbx-client-ca" "$(cat "$T/d5cert.sc")"
sclient d5resume -tls1_2 -cert "$T/client.pem" -key "$T/client.key" -sess_in "$T/d5.sess"
assert_eq "client_ca: the TLS 1.2 session is resumed" 0 $?
assert_match "client_ca: ... as a resumption, not a new session" "^Reused, TLSv1.2, Cipher is ECDHE-" \
	"$(cat "$T/d5resume.sc")"
assert_nomatch "client_ca: no session id context error" "session id context uninitialized" "$(cat "$T/d5.log")"
stop "$SIPAUTHD_PID"
finish
