#!/bin/sh
# tls_upstream.sh: the gateway over TLS (gateway = tls:...): the certificate is verified against
# [upstream] tls_ca and must carry tls_server_name; an authenticated INVITE then reaches the
# gateway over TLS, and with the wrong name nothing is sent. A small Python TLS server stands in
# for the gateway: it shows what arrives over the TLS connection. Then gateway = sip:secure.test
# with a SIPS+D2T NAPTR (dnsmasq): TLS to the SRV target, verified against the URI's domain.
. "$top_srcdir/test/lib.sh"
. "$top_srcdir/test/tls_lib.sh"
setup_store || { fail "store setup"; finish; }

# a CA and a gateway certificate it signed, for the name gw.example.test
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=test CA" \
	-keyout "$T/ca.key" -out "$T/ca.pem" >/dev/null 2>&1
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=gw.example.test" \
	-keyout "$T/gw.key" -out "$T/gw.csr" >/dev/null 2>&1
printf 'subjectAltName=DNS:gw.example.test\n' >"$T/gw.ext"
openssl x509 -req -in "$T/gw.csr" -CA "$T/ca.pem" -CAkey "$T/ca.key" -CAcreateserial -days 2 \
	-extfile "$T/gw.ext" -out "$T/gw.pem" >/dev/null 2>&1 || { fail "could not make certificates"; finish; }

# the gateway stand-in (a background job's stdin is /dev/null: the script must be a file)
cat >"$T/gateway.py" <<'PY'
import socket, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[2], sys.argv[3])
srv = socket.create_server(("127.0.0.2", int(sys.argv[1])))
while True:
    conn, _ = srv.accept()
    try:
        with ctx.wrap_socket(conn, server_side=True) as tls:
            while True:
                data = tls.recv(65536)
                if not data:
                    break
                sys.stdout.write(data.decode(errors="replace"))
    except (OSError, ssl.SSLError) as e:
        print("handshake failed:", e)
PY

# gateway NAME SERVER_NAME: the stand-in on 127.0.0.2 and a daemon sending to it over TLS
gateway() {
	GW_TLS_PORT=$(free_port 127.0.0.2)
	spawn "$T/$1.gw" python3 -u "$T/gateway.py" "$GW_TLS_PORT" "$T/gw.pem" "$T/gw.key"
	GW_PID=$!
	SIP_PORT=$(free_port 127.0.0.1)
	cat >"$T/$1.conf" <<CONF
[sip]
listen = udp:127.0.0.1:$SIP_PORT
[upstream]
gateway = tls:127.0.0.2:$GW_TLS_PORT
tls_ca = $T/ca.pem
tls_server_name = $2
[auth]
algorithms = SHA-256, MD5
[store]
path = $STORE
CONF
	spawn "$T/$1.log" "$SIPAUTHD" --config "$T/$1.conf"
	SIPAUTHD_PID=$!
	wait_for grep -q "event=started" "$T/$1.log" || { cat "$T/$1.log"; return 1; }
	sleep 0.3
}

gateway good gw.example.test || { fail "start"; finish; }
sipc invite --host "$TRUNK_HOST" --user "$SIP_USER" --password "$SIP_PASS" --timeout 2 >"$T/good.json"
assert_eq "the PBX's authenticated INVITE gets 100 Trying from us" "[407, 100]" \
	"$(json_get '[r["status"] for r in resp]' <"$T/good.json")"
wait_for grep -q "^INVITE sip:" "$T/good.gw"
assert_match "the INVITE reached the gateway over the verified TLS connection" "^INVITE sip:100@$TRUNK_HOST SIP/2.0" \
	"$(cat "$T/good.gw")"
assert_match "our Via names TLS" "Via: SIP/2.0/TLS 127.0.0.1:$SIP_PORT;branch=z9hG4bK" "$(cat "$T/good.gw")"
stop "$SIPAUTHD_PID"

gateway wrong not-the-gateway.example.test || { fail "start"; finish; }
sipc invite --host "$TRUNK_HOST" --user "$SIP_USER" --password "$SIP_PASS" --timeout 2 >"$T/wrong.json"
wait_for grep -q "event=tls_close" "$T/wrong.log"
assert_match "a gateway certificate without the configured name is refused" \
	"event=tls_close src=127.0.0.2:$GW_TLS_PORT handshake=incomplete reason=\".*certificate verify failed" "$(cat "$T/wrong.log")"
assert_nomatch "nothing was sent to the wrong gateway" "INVITE" "$(cat "$T/wrong.gw")"
stop "$SIPAUTHD_PID"
stop "$GW_PID"

# ---- gateway = sip:secure.test whose NAPTR offers SIPS+D2T (RFC 3263 §4.1): TLS to the SRV
# target, the certificate checked against the URI's domain (RFC 5922 §4), no tls_server_name
DNSMASQ=$(command -v dnsmasq || echo /usr/sbin/dnsmasq)
if [ ! -x "$DNSMASQ" ]; then
	echo "SKIP (part): dnsmasq is not installed (Debian dnsmasq-base): SIPS+D2T not tried"
	finish
fi
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=secure.test" \
	-keyout "$T/sec.key" -out "$T/sec.csr" >/dev/null 2>&1
printf 'subjectAltName=DNS:secure.test\n' >"$T/sec.ext"
openssl x509 -req -in "$T/sec.csr" -CA "$T/ca.pem" -CAkey "$T/ca.key" -CAcreateserial -days 2 \
	-extfile "$T/sec.ext" -out "$T/sec.pem" >/dev/null 2>&1 || { fail "could not make certificates"; finish; }
DNS_ADDR=127.0.0.35
DNS_PORT=$(free_port $DNS_ADDR)
# secure_gw NAME CERT KEY: the stand-in with this certificate, and a daemon with gateway = sip:secure.test
secure_gw() {
	GW_TLS_PORT=$(free_port 127.0.0.2)
	printf '127.0.0.2 gw.secure.test\n' >"$T/hosts"
	spawn "$T/$1.dns" "$DNSMASQ" --no-daemon --port="$DNS_PORT" --listen-address=$DNS_ADDR --bind-interfaces \
		--no-resolv --no-hosts --conf-file=/dev/null --pid-file="$T/dnsmasq.pid" --user=root --log-queries \
		--log-facility=- --local=/test/ --addn-hosts="$T/hosts" \
		--naptr-record=secure.test,10,10,s,SIPS+D2T,,_sips._tcp.secure.test \
		--srv-host=_sips._tcp.secure.test,gw.secure.test,$GW_TLS_PORT,10,0
	DNS_PID=$!
	wait_for sh -c "grep -q 'started' '$T/$1.dns'" || { fail "dnsmasq did not start"; finish; }
	spawn "$T/$1.gw" python3 -u "$T/gateway.py" "$GW_TLS_PORT" "$2" "$3"
	GW_PID=$!
	SIP_PORT=$(free_port 127.0.0.1)
	cat >"$T/$1.conf" <<CONF
[sip]
listen = udp:127.0.0.1:$SIP_PORT
[upstream]
gateway = sip:secure.test
tls_ca = $T/ca.pem
[dns]
servers = $DNS_ADDR:$DNS_PORT
[auth]
algorithms = SHA-256, MD5
[store]
path = $STORE
CONF
	spawn "$T/$1.log" "$SIPAUTHD" --config "$T/$1.conf"
	SIPAUTHD_PID=$!
	wait_for grep -q "event=started" "$T/$1.log" || { cat "$T/$1.log"; fail "start"; finish; }
	wait_for grep -q "event=gateway_address name=gw.secure.test" "$T/$1.log" || fail "$1: the SRV target was not resolved"
}
secure_gw naptr "$T/sec.pem" "$T/sec.key"
sipc invite --host "$TRUNK_HOST" --user "$SIP_USER" --password "$SIP_PASS" --timeout 2 >"$T/naptr.json"
wait_for grep -q "^INVITE sip:" "$T/naptr.gw"
assert_match "the INVITE reached the SIPS+D2T target over TLS" "^INVITE sip:100@$TRUNK_HOST SIP/2.0" "$(cat "$T/naptr.gw")"
assert_match "our Via names TLS" "Via: SIP/2.0/TLS 127.0.0.1:$SIP_PORT;branch=z9hG4bK" "$(cat "$T/naptr.gw")"
assert_match "the NAPTR and the _sips SRV were asked" "query\[SRV\] _sips._tcp.secure.test" "$(cat "$T/naptr.dns")"
stop "$SIPAUTHD_PID"; stop "$GW_PID"; stop "$DNS_PID"

secure_gw target "$T/gw.pem" "$T/gw.key"   # a certificate for another name: refused
sipc invite --host "$TRUNK_HOST" --user "$SIP_USER" --password "$SIP_PASS" --timeout 2 >"$T/target.json"
wait_for grep -q "event=tls_close" "$T/target.log"
assert_match "a certificate without the URI's domain is refused" \
	"event=tls_close src=127.0.0.2:$GW_TLS_PORT handshake=incomplete reason=\".*certificate verify failed" \
	"$(cat "$T/target.log")"
assert_nomatch "nothing was sent to it" "INVITE" "$(cat "$T/target.gw")"
stop "$SIPAUTHD_PID"; stop "$GW_PID"; stop "$DNS_PID"
finish
