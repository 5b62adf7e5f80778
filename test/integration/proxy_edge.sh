#!/bin/sh
# proxy_edge.sh: validation at the edge (RFC 3261 §16.3, §18.3) against the real daemon:
# 407 for INVITE, OPTIONS to the proxy without auth, Max-Forwards 0, Proxy-Require/Require,
# URI schemes, missing headers, ACK and CANCEL never challenged nor answered wrongly, garbage,
# the largest datagram, oversize and badly framed TCP streams; the daemon keeps answering.
. "$top_srcdir/test/lib.sh"
need python3
setup_store || { fail "store setup"; finish; }
start_sipauthd "SHA-256, MD5" "$(printf '[limits]\ntcp_idle_timeout = 5')" || { fail "sipauthd did not start"; finish; }

H=$TRUNK_HOST
REALM="trunk-$TRUNK.sip.tryvox.io"
q() { json_get "$2" <"$1"; }
log() { cat "$T/sipauthd.log"; }
# run NAME SUBCOMMAND ARGS...: sipclient, JSON lines in $T/NAME.json, exit status in $T/NAME.rc
run() { n=$1; shift; sipc "$@" >"$T/$n.json" 2>"$T/$n.err"; echo $? >"$T/$n.rc"; }
# raw NAME [--transport tcp]: send stdin verbatim (LF -> CRLF), collect what comes back
raw() { n=$1; shift; sipc raw --crlf --timeout 1 "$@" >"$T/$n.json" 2>"$T/$n.err"; echo $? >"$T/$n.rc"; }
# alive WHAT: the daemon still answers OPTIONS over UDP and over a new TCP connection
alive() {
	run alive_udp options --host "$H" --timeout 1
	run alive_tcp options --host "$H" --timeout 1 --transport tcp
	assert_eq "$1: the daemon still answers OPTIONS (UDP, TCP)" "200 200" \
		"$(q "$T/alive_udp.json" 'final["final_status"]') $(q "$T/alive_tcp.json" 'final["final_status"]')"
	kill -0 "$SIPAUTHD_PID" 2>/dev/null || fail "$1: sipauthd is gone"
}

# --- INVITE: 407 with Proxy-Authenticate, never 401
run invite invite --host "$H" --user "$SIP_USER"
f=$T/invite.json
assert_eq "INVITE unauthenticated: 407 Proxy Authentication Required" "407 Proxy Authentication Required" \
	"$(q "$f" 'str(resp[0]["status"]) + " " + resp[0]["reason"]')"
assert_eq "INVITE: Proxy-Authenticate SHA-256 then MD5, realm literal, qop auth" \
	"[('SHA-256', '$REALM', 'auth'), ('MD5', '$REALM', 'auth')]" \
	"$(q "$f" '[(c.get("algorithm"), c.get("realm"), c.get("qop")) for c in resp[0]["challenges"]]')"
assert_eq "INVITE: no WWW-Authenticate" False "$(q "$f" '"www-authenticate" in resp[0]["headers"]')"
run options_user options --host "$H" --uri "sip:15551234567@$H"
assert_eq "OPTIONS to a user at the trunk (to be forwarded): 407" 407 "$(q "$T/options_user.json" 'final["final_status"]')"

# --- OPTIONS for the proxy itself: 200 without auth, even with Max-Forwards 0
run options options --host "$H"
assert_eq "OPTIONS without a user part: 200 without a challenge" "['OPTIONS 200']" "$(q "$T/options.json" 'final["finals"]')"
assert_eq "... with Allow, Accept, Accept-Encoding, Accept-Language and Supported (RFC 3261 §11.2)" \
	"True ['application/sdp'] ['identity'] ['en'] ['']" \
	"$(q "$T/options.json" '" ".join(str(x) for x in ["INVITE" in resp[0]["headers"]["allow"][0], resp[0]["headers"]["accept"], resp[0]["headers"]["accept-encoding"], resp[0]["headers"]["accept-language"], resp[0]["headers"]["supported"]])')"
run options_mf0 options --host "$H" --max-forwards 0
assert_eq "OPTIONS without a user part, Max-Forwards 0: 200" "['OPTIONS 200']" "$(q "$T/options_mf0.json" 'final["finals"]')"

# --- Max-Forwards 0 on a request to forward: 483, before any challenge
run invite_mf0 invite --host "$H" --user "$SIP_USER" --max-forwards 0
assert_eq "INVITE Max-Forwards 0: 483 Too Many Hops" "483 Too Many Hops" "$(q "$T/invite_mf0.json" 'str(resp[0]["status"]) + " " + resp[0]["reason"]')"
assert_match "INVITE Max-Forwards 0: logged" 'event=reject status=483 reason="Max-Forwards is 0" method=INVITE' "$(log)"

# --- Proxy-Require: foo -> 420 with Unsupported: foo (RFC 3261 §16.3 step 5, before auth)
run preq invite --host "$H" --user "$SIP_USER" --header 'Proxy-Require: foo'
assert_eq "Proxy-Require: foo: 420 Bad Extension" "420 Bad Extension" "$(q "$T/preq.json" 'str(resp[0]["status"]) + " " + resp[0]["reason"]')"
assert_eq "Proxy-Require: foo: Unsupported: foo" "['foo']" "$(q "$T/preq.json" 'resp[0]["headers"].get("unsupported")')"
# the registrar is a UAS: Require it does not support -> 420 before authenticating (§10.3 step 2, §8.2.2.3)
run req_reg register --host "$H" --user "$SIP_USER" --password "$SIP_PASS" --header 'Require: foo'
assert_eq "REGISTER with Require: foo: 420 with Unsupported: foo" "['REGISTER 420'] ['foo']" \
	"$(q "$T/req_reg.json" 'str(final["finals"]) + " " + str(resp[-1]["headers"].get("unsupported"))')"

# --- Request-URI schemes we cannot route: 416
for u in tel:+15551234567 mailto:alice@example.com; do
	run uri invite --user "$SIP_USER" --uri "$u"
	assert_eq "Request-URI $u: 416 Unsupported URI Scheme" "416 Unsupported URI Scheme" "$(q "$T/uri.json" 'str(resp[0]["status"]) + " " + resp[0]["reason"]')"
done

# --- ACK is never answered (RFC 3261 §17: no response to ACK), even when it is bad
raw ack_ood <<EOF
ACK sip:1@$H SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKackood1;rport
Max-Forwards: 70
From: <sip:a@$H>;tag=1
To: <sip:1@$H>
Call-ID: ackood1@test
CSeq: 1 ACK
Content-Length: 0

EOF
assert_eq "ACK outside any transaction: no answer (not challenged)" "3 0" "$(cat "$T/ack_ood.rc") $(q "$T/ack_ood.json" 'final["responses"]')"
raw ack_tel <<EOF
ACK tel:+15551234567 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKacktel1;rport
Max-Forwards: 70
From: <sip:a@$H>;tag=1
To: <tel:+15551234567>;tag=2
Call-ID: acktel1@test
CSeq: 1 ACK
Content-Length: 0

EOF
assert_eq "ACK with a tel: Request-URI: no answer (no 416 to an ACK)" "3 0" "$(cat "$T/ack_tel.rc") $(q "$T/ack_tel.json" 'final["responses"]')"
# CANCEL is never challenged (§22.1): one for no transaction gets 481
raw cancel <<EOF
CANCEL sip:1@$H SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKcancel1;rport
Max-Forwards: 70
From: <sip:a@$H>;tag=1
To: <sip:1@$H>
Call-ID: cancel1@test
CSeq: 1 CANCEL
Content-Length: 0

EOF
assert_eq "CANCEL for no transaction: 481, not 407" 481 "$(q "$T/cancel.json" 'final["final_status"]')"

# --- missing Call-ID: 400 built from the headers it has (§16.3 step 1, §8.2.6)
raw nocallid <<EOF
OPTIONS sip:$H SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKnocid1;rport
Max-Forwards: 70
From: <sip:a@$H>;tag=1
To: <sip:$H>
CSeq: 7 OPTIONS
Content-Length: 0

EOF
assert_eq "missing Call-ID: 400" 400 "$(q "$T/nocallid.json" 'final["final_status"]')"
assert_eq "missing Call-ID: the 400 keeps Via branch, From tag and CSeq" "z9hG4bKnocid1 <sip:a@$H>;tag=1 7 OPTIONS" \
	"$(q "$T/nocallid.json" '__import__("re").search("branch=([^;]+)", resp[0]["headers"]["via"][0]).group(1) + " " + resp[0]["headers"]["from"][0] + " " + resp[0]["headers"]["cseq"][0] if resp else None')"
assert_match "missing Call-ID: logged" 'event=bad_message reason="missing essential header"' "$(log)"
# Content-Length larger than the datagram: 400 (§18.3)
raw shortbody <<EOF
OPTIONS sip:$H SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKshort1;rport
Max-Forwards: 70
From: <sip:a@$H>;tag=1
To: <sip:$H>
Call-ID: short1@test
CSeq: 1 OPTIONS
Content-Length: 100

EOF
assert_eq "UDP Content-Length larger than the datagram: 400" 400 "$(q "$T/shortbody.json" 'final["final_status"]')"

# --- garbage: no answer, and the daemon goes on. The bytes are pseudo-random but fixed, with no
# CR, LF or ':' (no header line, so no Content-Length), and end in CRLF CRLF: one complete frame.
python3 -c 'import random, sys; r = random.Random(3261)
sys.stdout.buffer.write(bytes(b for b in (r.randrange(256) for _ in range(900)) if b not in b"\r\n:")[:600] + b"\r\n\r\n")' >"$T/garbage.bin"
sipc raw --timeout 1 "$T/garbage.bin" >"$T/garbage.json" 2>&1
assert_eq "garbage over UDP: no answer" 0 "$(q "$T/garbage.json" 'final["responses"]')"
printf 'INVITE sip:x SIP/2.0\r\n\r\n' | sipc raw --timeout 1 >"$T/bare.json" 2>&1
assert_eq "a bare start line over UDP: no answer (nothing to answer with)" 0 "$(q "$T/bare.json" 'final["responses"]')"
sipc raw --timeout 1 --transport tcp "$T/garbage.bin" >"$T/garbage_tcp.json" 2>&1
assert_eq "garbage over TCP: connection closed, no answer" "closed 0" \
	"$(q "$T/garbage_tcp.json" '("closed" if any(e.get("event") == "closed" for e in ev) else "open") + " " + str(final["responses"])')"
alive "after garbage"

# --- the largest datagram IPv4 carries (65507 bytes; 70 KB cannot be one UDP datagram) and
# --- 70 KB over TCP (above the 65535-byte limit): answered, or dropped / closed
python3 - "$SIP_PORT" "$H" >"$T/big.out" 2>&1 <<'PY'
import socket, sys
port, h = int(sys.argv[1]), sys.argv[2]
def opt(tag, pad):
    head = (f"OPTIONS sip:{h} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK{tag};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:a@{h}>;tag=1\r\nTo: <sip:{h}>\r\nCall-ID: {tag}@test\r\n"
            f"CSeq: 1 OPTIONS\r\nX-Padding: ")
    tail = "\r\nContent-Length: 0\r\n\r\n"
    return (head + "a" * (pad - len(head) - len(tail)) + tail).encode()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(2)
u.sendto(opt("bigudp", 65507), ("127.0.0.1", port))
try:
    print("udp65507", u.recv(65535).split(b" ", 2)[1].decode())
except socket.timeout:
    print("udp65507 none")
t = socket.create_connection(("127.0.0.1", port))
t.settimeout(3)
got = b""
try:
    t.sendall(opt("bigtcp", 70 * 1024))
except OSError:
    pass
try:
    while True:
        c = t.recv(65536)
        if not c:
            break
        got += c
except ConnectionResetError:
    pass
except socket.timeout:
    got += b" TIMEOUT"
print("tcp70k", (got.split(b" ", 2)[1].decode() + " " if got.startswith(b"SIP/2.0 ") else "") + ("open" if b"TIMEOUT" in got else "closed"))
PY
assert_eq "a 65507-byte OPTIONS datagram is answered 200" "udp65507 200" "$(grep udp65507 "$T/big.out")"
assert_match "a 70 KB message over TCP: closed, with at most a 513" "^tcp70k (513 )?closed$" "$(grep tcp70k "$T/big.out")"
assert_match "the 70 KB TCP message was refused by the framing" "event=tcp_close reason=bad_framing" "$(log)"
alive "after the oversize messages"

# --- TCP framing: pipelined and split messages on one connection; a connection with a bad
# --- Content-Length is closed while another one stays served; a stalled one is closed when idle
python3 - "$SIP_PORT" "$H" >"$T/tcp.out" 2>&1 <<'PY'
import socket, sys, time
port, h = int(sys.argv[1]), sys.argv[2]
n = 0
def opt(cl="0"):
    global n
    n += 1
    return (f"OPTIONS sip:{h} SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bKtcp{n};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:a@{h}>;tag=1\r\nTo: <sip:{h}>\r\nCall-ID: tcp{n}@test\r\n"
            f"CSeq: {n} OPTIONS\r\nContent-Length: {cl}\r\n\r\n").encode()
def conn():
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(2)
    return s, [b""]
def read(c, count=1):
    s, buf = c
    out = []
    try:
        while len(out) < count:
            i = buf[0].find(b"\r\n\r\n")
            if i >= 0:
                out.append(buf[0][:i].split(b" ", 2)[1].decode())
                buf[0] = buf[0][i + 4:]
                continue
            chunk = s.recv(65536)
            if not chunk:
                out.append("closed")
                break
            buf[0] += chunk
    except socket.timeout:
        out.append("timeout")
    return " ".join(out)
t0 = time.monotonic()
stalled = conn()   # a complete head promising 100 bytes of body, then silence
stalled[0].sendall(opt("100") + b"0123456789")
a = conn()
a[0].sendall(opt())
print("A first", read(a))
a[0].sendall(opt() + opt())
print("A pipelined", read(a, 2))
m = opt()
a[0].sendall(m[:40]); time.sleep(0.2); a[0].sendall(m[40:])
print("A split", read(a))
for cl in ("abc", "-5", "99999999"):
    b = conn()
    b[0].sendall(opt(cl))
    print(f"B cl={cl}", read(b))
a[0].sendall(opt())
print("A after", read(a))
stalled[0].settimeout(max(0.1, 9 - (time.monotonic() - t0)))
try:
    gone = stalled[0].recv(100) == b""
except socket.timeout:
    gone = False
print("stalled", "closed" if gone else "open", "after", round(time.monotonic() - t0))
PY
assert_eq "TCP: first OPTIONS on connection A" "A first 200" "$(grep 'A first' "$T/tcp.out")"
assert_eq "TCP: two pipelined OPTIONS in one segment, two answers" "A pipelined 200 200" "$(grep 'A pipelined' "$T/tcp.out")"
assert_eq "TCP: one OPTIONS split over two segments" "A split 200" "$(grep 'A split' "$T/tcp.out")"
for cl in abc -5 99999999; do
	assert_eq "TCP: Content-Length $cl closes that connection" "B cl=$cl closed" "$(grep "B cl=$cl" "$T/tcp.out")"
done
assert_eq "TCP: connection A is still served after B was closed" "A after 200" "$(grep 'A after' "$T/tcp.out")"
assert_match "TCP: a connection stalled mid-body is closed at tcp_idle_timeout (5 s)" "^stalled closed after [56]$" "$(grep stalled "$T/tcp.out")"
alive "after the TCP framing errors"

# --- UDP NAT keep-alives (CRLFCRLF, CRLF, NULs): dropped without a log line, nothing answered
python3 - "$SIP_PORT" <<'PY' >"$T/udp_keepalive.out"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.6", 0)); s.settimeout(0.7)
for d in (b"\r\n\r\n", b"\r\n", b"\0\0\0\0", b"\r\n\r\n"):
    s.sendto(d, ("127.0.0.1", int(sys.argv[1])))
try:
    print("answered", s.recv(65535)[:20])
except socket.timeout:
    print("nothing")
PY
assert_eq "UDP keep-alives get no answer" nothing "$(cat "$T/udp_keepalive.out")"
alive "after the UDP keep-alives"
assert_nomatch "... and no log line" "src=127.0.0.6:" "$(log)"
# --- bytes from the network that are not UTF-8 reach the log as '?', valid UTF-8 whole: journald
# keeps a line that is not UTF-8 as a blob (journalctl shows "[N B blob data]")
printf 'BYE sip:x@%s SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.7:5999;branch=z9hG4bK-utf8-1\r\nFrom: <sip:a@%s>;tag=a\r\nTo: <sip:x@%s>;tag=nosuch\r\nCall-ID: utf8-\303\251-\377\351\r\nCSeq: 1 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n' \
	"$TRUNK_HOST" "$TRUNK_HOST" "$TRUNK_HOST" >"$T/utf8.sip"
sipc raw --local-ip 127.0.0.7 --timeout 1 "$T/utf8.sip" >"$T/utf8.json" 2>&1
assert_eq "a BYE of no call (no Route of ours) with a Call-ID that is not UTF-8: 403" 403 "$(json_get 'final.get("final_status")' <"$T/utf8.json")"
assert_eq "its log line is UTF-8: the valid character kept, each stray byte a '?'" 'call_id="utf8-é-??"' \
	"$(grep -a 'src=127.0.0.7:' "$T/sipauthd.log" | python3 -c 'import re, sys
line = sys.stdin.buffer.read().decode("utf-8", "replace")
print(re.search(r"call_id=\"[^\"]*\"", line).group(0) if "\ufffd" not in line else "not UTF-8: " + line)')"
# --- a response that answers nothing sent (no transaction, no call): dropped, logged and counted
printf 'SIP/2.0 486 Busy Here\r\nVia: SIP/2.0/UDP 127.0.0.1:%s;branch=z9hG4bKnothingsentwiththis01\r\nFrom: <sip:a@%s>;tag=a\r\nTo: <sip:x@%s>;tag=b\r\nCall-ID: stray-response-1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n' \
	"$SIP_PORT" "$TRUNK_HOST" "$TRUNK_HOST" >"$T/stray.sip"
sipc raw --local-ip 127.0.0.8 --timeout 0.5 "$T/stray.sip" >"$T/stray.json" 2>&1
wait_for grep -q 'event=response_dropped reason="no such transaction" status=486 src=127.0.0.8:' "$T/sipauthd.log" \
	&& pass "a stray response is logged as dropped" || fail "no response_dropped line for the stray 486"
assert_eq "... once" 1 "$(grep -c 'event=response_dropped reason="no such transaction"' "$T/sipauthd.log")"
finish
