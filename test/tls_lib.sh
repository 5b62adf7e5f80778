# test/tls_lib.sh: TLS helpers for test/integration/tls*.sh (sourced after test/lib.sh)

need openssl
need python3

# make_cert NAME CN: a self-signed EC P-256 certificate $T/NAME.pem with its key $T/NAME.key,
# valid for IP 127.0.0.1, localhost, *.sip.tryvox.io and (after setup_store) the trunk's
# DNS-safe host. Being self-signed, the certificate is its own CA file.
make_cert() {
	_san="IP:127.0.0.1,DNS:localhost,DNS:*.sip.tryvox.io"
	[ -n "${TRUNK_DNS:-}" ] && _san="$_san,DNS:$TRUNK_DNS"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
		-keyout "$T/$1.key" -out "$T/$1.pem" -subj "/CN=$2" -addext "subjectAltName=$_san" \
		>"$T/$1.openssl.log" 2>&1
}

# start_tls_sipauthd NAME ALGORITHMS [TLS_LINES] [OTHER_LINES]: start a daemon whose config is
# $T/NAME.conf and log $T/NAME.log, listening on udp+tcp 127.0.0.1:$SIP_PORT and
# tls 127.0.0.1:$TLS_PORT, with $T/server.pem / $T/server.key, the gateway at
# udp:127.0.0.2:$GW_PORT. TLS_LINES go into [tls]. Sets $SIPAUTHD_PID.
start_tls_sipauthd() {
	SIP_PORT=$(free_port 127.0.0.1)
	TLS_PORT=$(free_port 127.0.0.1)
	GW_PORT=$(free_port 127.0.0.2)
	cat >"$T/$1.conf" <<CONF
[sip]
listen = udp:127.0.0.1:$SIP_PORT, tcp:127.0.0.1:$SIP_PORT, tls:127.0.0.1:$TLS_PORT
domain = sip.tryvox.io
[upstream]
gateway = udp:127.0.0.2:$GW_PORT
trusted = 127.0.0.2/32
[auth]
algorithms = $2
[store]
path = $STORE
[log]
level = debug
${4:-}
[tls]
certificate = $T/server.pem
private_key = $T/server.key
${3:-}
CONF
	spawn "$T/$1.log" "$SIPAUTHD" --config "$T/$1.conf"
	SIPAUTHD_PID=$!
	wait_for grep -q "event=started" "$T/$1.log" || { cat "$T/$1.log"; return 1; }
}

# tls_probe PORT CAFILE [GOFILE...]: a TLS client (Python ssl, certificate and IP checked)
# that sends an OPTIONS keep-alive and prints "OPTIONS <status> cn=<server CN> <version>";
# with GOFILEs it then creates $T/probe.ready and keeps the same connection, sending one more
# OPTIONS each time the next GOFILE appears. Prints "error <what>" and exits 1 on failure.
tls_probe() {
	python3 - "$@" <<'PY'
import os, secrets, socket, ssl, sys, time
port, cafile, gofiles = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
ctx = ssl.create_default_context(cafile=cafile)
try:
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5),
                        server_hostname="127.0.0.1")
except (OSError, ssl.SSLError) as e:
    print("error handshake", type(e).__name__, e); sys.exit(1)
cn = dict(x[0] for x in s.getpeercert()["subject"])["commonName"]
lport = s.getsockname()[1]
buf = b""

def options(cseq):
    global buf
    req = (f"OPTIONS sip:127.0.0.1:{port};transport=tls SIP/2.0\r\n"
           f"Via: SIP/2.0/TLS 127.0.0.1:{lport};branch=z9hG4bK{secrets.token_hex(8)};rport\r\n"
           f"Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag={secrets.token_hex(4)}\r\n"
           f"To: <sip:127.0.0.1>\r\nCall-ID: {secrets.token_hex(8)}@127.0.0.1\r\n"
           f"CSeq: {cseq} OPTIONS\r\nContent-Length: 0\r\n\r\n")
    s.sendall(req.encode())
    while b"\r\n\r\n" not in buf:
        d = s.recv(4096)
        if not d:
            print("error closed before an answer"); sys.exit(1)
        buf += d
    head, buf = buf.split(b"\r\n\r\n", 1)
    print("OPTIONS", head.split(b" ")[1].decode(), f"cn={cn}", s.version(), flush=True)

try:
    options(1)
    if gofiles:
        open(os.path.join(os.path.dirname(gofiles[0]), "probe.ready"), "w").close()
    for i, go in enumerate(gofiles):
        for _ in range(300):
            if os.path.exists(go):
                break
            time.sleep(0.1)
        options(i + 2)
except (OSError, ssl.SSLError) as e:
    print("error", type(e).__name__, e); sys.exit(1)
PY
}

# peer_subject PORT: the subject of the certificate the server presents now
peer_subject() {
	openssl s_client -connect "127.0.0.1:$1" </dev/null 2>/dev/null | openssl x509 -noout -subject 2>/dev/null
}
