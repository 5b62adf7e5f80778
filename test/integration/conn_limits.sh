#!/bin/sh
# conn_limits.sh: a few addresses cannot fill the daemon's global caps (issue 10, item 5).
# One address holding idle TCP connections stops at max_connections_per_source while a PBX
# from another address still registers; a connection that trickles bytes of a message that
# never ends is closed at tcp_idle_timeout, while one sending RFC 5626 CRLFCRLF keep-alives
# gets its pongs and stays; two addresses stalling TLS handshakes cannot take every handshake
# slot from a PBX registering over TLS. 127.0.0.3 and .4 attack, 127.0.0.5 is the good PBX.
. "$top_srcdir/test/lib.sh"
. "$top_srcdir/test/tls_lib.sh"
setup_store || { fail "store setup"; finish; }
SIP_USER2=pbx-prod-02   # a second credential of the trunk: an SBC registers both over one connection
printf '%s\n' "$SIP_PASS" | "$SIPAUTHCTL" --store "$STORE" credential create --trunk "$TRUNK" \
	--username "$SIP_USER2" --password-stdin >/dev/null || { fail "second credential"; finish; }
make_cert server sipauthd-test-1 || { fail "openssl made no certificate"; finish; }
API_PORT=$(free_port 127.0.0.1)
start_tls_sipauthd d "SHA-256, MD5" "max_handshakes = 12
max_handshakes_per_source = 6
handshake_timeout = 20" "[limits]
max_connections = 48
max_connections_per_source = 8
tcp_idle_timeout = 5
[api]
listen = 127.0.0.1:$API_PORT" || { fail "sipauthd did not start"; finish; }
metric() { curl -s "http://127.0.0.1:$API_PORT/metrics" | sed -n "s/^sipauthd_$1 //p"; }

# --- 1. one address opens 60 idle TCP connections (max_connections is 48): it keeps 8, the
# others are closed at once; another address connects, and a PBX registers over TCP
cat >"$T/hold.py" <<'PY'
# hold.py PORT SRC N DIR [ping]: open N connections from SRC at once, count those the daemon
# closes within 0.5 s, hold the others until DIR/release (with "ping": sending CRLFCRLF
# keep-alives every 2 s, which keep a connection alive in the old code and the new)
import os, select, socket, sys, time
port, src, n, d = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
ping = sys.argv[5:] == ["ping"]
socks = [socket.create_connection(("127.0.0.1", port), source_address=(src, 0)) for _ in range(n)]
time.sleep(0.5)
held, refused = [], 0
for s in socks:
    r, _, _ = select.select([s], [], [], 0)
    gone = False
    if r:
        try:
            gone = s.recv(1) == b""
        except OSError:
            gone = True
    if gone:
        refused += 1
        s.close()
    else:
        held.append(s)
print(f"{src}: {len(held)} held, {refused} closed at once", flush=True)
open(os.path.join(d, "held." + src), "w").close()
deadline = time.monotonic() + 60
while not os.path.exists(os.path.join(d, "release")) and time.monotonic() < deadline:
    time.sleep(0.1)
    if ping and int(time.monotonic() * 10) % 20 == 0:
        for s in held:
            try:
                s.sendall(b"\r\n\r\n")
            except OSError:
                pass
PY
rm -f "$T"/held.* "$T/release"
spawn "$T/hold3.out" python3 "$T/hold.py" "$SIP_PORT" 127.0.0.3 60 "$T" ping
hold_pid=$!
for _ in $(seq 1 100); do [ -f "$T/held.127.0.0.3" ] && break; sleep 0.2; done
assert_eq "one address: 8 connections held, 52 closed at once" "127.0.0.3: 8 held, 52 closed at once" \
	"$(cat "$T/hold3.out")"
assert_eq "another address still connects" "127.0.0.4: 1 held, 0 closed at once" \
	"$(timeout 10 python3 - "$SIP_PORT" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), source_address=("127.0.0.4", 0))
s.settimeout(0.5)
try:
    gone = s.recv(1) == b""
except socket.timeout:
    gone = False
print("127.0.0.4: 1 held, 0 closed at once" if not gone else "127.0.0.4: closed")
PY
)"
out=$(sipc register --transport tcp --local-ip 127.0.0.5 --host "$TRUNK_HOST" --user "$SIP_USER" \
	--password "$SIP_PASS" --timeout 3)
assert_eq "a PBX from a third address registers over TCP (401, then 200)" "['REGISTER 401', 'REGISTER 200']" \
	"$(printf '%s\n' "$out" | json_get 'final.get("finals")')"
assert_match "the refusal is logged with its reason and source" \
	"event=tcp_refused proto=tcp reason=source_connections src=127.0.0.3 connections=8 handshakes=0" "$(cat "$T/d.log")"
assert_eq "/metrics counts the 52 refusals by reason" 52 "$(metric 'tcp_refused_total{reason="source_connections"}')"
assert_eq "/metrics: nothing was refused for the global cap" 0 "$(metric 'tcp_refused_total{reason="connections"}')"
: >"$T/release"
wait "$hold_pid"
wait_for sh -c "[ \"\$(curl -s http://127.0.0.1:$API_PORT/metrics | sed -n 's/^sipauthd_tcp_connections //p')\" = 0 ]"
assert_eq "when they close, the connections are counted down to 0" 0 "$(metric tcp_connections)"

# --- 2. tcp_idle_timeout (5 s) counts complete messages, not bytes: a client trickling an
# OPTIONS one byte a second is closed after 5 s; one that authenticated (registered and
# unregistered: nothing else keeps it) and sends CRLFCRLF every 2 s gets a CRLF pong each time
# and is still open after 9 s; a stranger doing the same is closed 5 s after it connected (its
# pings keep nothing open: a few addresses could fill max_connections so)
idle0=$(metric tcp_idle_closed_total)
python3 - "$SIP_PORT" "$TRUNK_HOST" "$SIP_USER" "$SIP_PASS" "$top_srcdir/test" >"$T/idle.out" 2>&1 <<'PY'
import secrets, socket, sys, threading, time
port, h, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
sys.path.insert(0, sys.argv[5])
import sipclient as sc

def register(s, expires, cseq, buf=b""):
    ip, lport = s.getsockname()
    def once(n, auth=None):
        s.sendall(("\r\n".join([f"REGISTER sip:{h} SIP/2.0", f"Via: SIP/2.0/TCP {ip}:{lport};branch=z9hG4bK{secrets.token_hex(8)}",
                                "Max-Forwards: 70", f"From: <sip:{user}@{h}>;tag=pk", f"To: <sip:{user}@{h}>",
                                f"Call-ID: ping-{lport}", f"CSeq: {n} REGISTER", f"Contact: <sip:ping@{ip}:{lport};transport=tcp>",
                                f"Expires: {expires}"] + ([f"Authorization: {auth}"] if auth else []) +
                               ["Content-Length: 0"]) + "\r\n\r\n").encode())
        nonlocal buf
        while not (fr := sc.split_frame(buf)):
            buf += s.recv(65535)
        data, buf = fr
        return sc.parse_message(data)
    r = once(cseq)
    ch = [c for c in map(sc.parse_challenge, r.headers["www-authenticate"]) if c.params.get("algorithm") == "MD5"][0]
    return once(cseq + 1, sc.digest_credentials(ch, "MD5", "MD5", user, password, "REGISTER", f"sip:{h}",
                                                sc.choose_qop(ch), "00000001", secrets.token_hex(8), b"")).status
msg = (f"OPTIONS sip:{h} SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.3:5999;branch=z9hG4bKdrip1;rport\r\n"
       f"Max-Forwards: 70\r\nFrom: <sip:a@{h}>;tag=1\r\nTo: <sip:{h}>\r\nCall-ID: drip1@test\r\n"
       f"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()
out = {}
def dribble():
    s = socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.3", 0))
    t0 = time.monotonic()
    for b in msg:
        try:
            s.send(bytes([b]))
        except OSError:
            break
        s.settimeout(1.0)
        try:
            if s.recv(100) == b"":
                break
        except socket.timeout:
            pass
        except ConnectionResetError:
            break
        if time.monotonic() - t0 > 12:
            break
    dt = time.monotonic() - t0
    out["drip"] = "closed after %d s" % round(dt) if dt <= 12 else "still open after 12 s"
def keepalive(name, proven):
    s = socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.4", 0))
    t0 = time.monotonic()
    if proven:
        out[name + "-register"] = f"{register(s, 60, 1)} {register(s, 0, 3)}"
    s.settimeout(1.5)
    pongs = 0
    while time.monotonic() - t0 < 9:
        try:
            s.sendall(b"\r\n\r\n")
            d = s.recv(100)
        except socket.timeout:
            d = None
        except OSError:
            d = b""
        if d == b"":
            out[name] = "closed after %d s" % round(time.monotonic() - t0)
            return
        pongs += d == b"\r\n"
        time.sleep(2)
    out[name] = f"open after 9 s, pongs={pongs}"
ts = [threading.Thread(target=dribble), threading.Thread(target=keepalive, args=("ping", True)),
      threading.Thread(target=keepalive, args=("stranger", False))]
[t.start() for t in ts]
[t.join() for t in ts]
print("drip", out["drip"])
print("registered", out.get("ping-register"))
print("ping", out["ping"])
print("stranger", out["stranger"])
PY
assert_match "a message trickled one byte a second is cut off at tcp_idle_timeout (5 s)" \
	"^drip closed after [56] s$" "$(grep drip "$T/idle.out")"
assert_eq "the pinging client registers and unregisters on its connection" "registered 200 200" \
	"$(grep registered "$T/idle.out")"
assert_match "CRLFCRLF keep-alives every 2 s keep its connection open, each answered by a CRLF pong" \
	"^ping open after 9 s, pongs=[45]$" "$(grep '^ping' "$T/idle.out")"
assert_match "a stranger's keep-alives keep nothing open: closed at tcp_idle_timeout after it connected" \
	"^stranger closed after [56] s$" "$(grep stranger "$T/idle.out")"
assert_eq "/metrics counts the idle closes (two more)" $((idle0 + 2)) "$(metric tcp_idle_closed_total)"

# --- 3. two addresses open 8 silent connections each to the TLS port (max_handshakes 12,
# 6 per source): 127.0.0.3 gets 6 slots, 127.0.0.4 only 1 (past half of the slots, a source
# with a handshake in progress gets no other), and a PBX registers over TLS meanwhile. Before,
# 6 + 6 took all 12 slots and the PBX was refused.
rm -f "$T"/held.* "$T/release"
spawn "$T/hs3.out" python3 "$T/hold.py" "$TLS_PORT" 127.0.0.3 8 "$T"
hs3=$!
for _ in $(seq 1 100); do [ -f "$T/held.127.0.0.3" ] && break; sleep 0.2; done
spawn "$T/hs4.out" python3 "$T/hold.py" "$TLS_PORT" 127.0.0.4 8 "$T"
hs4=$!
for _ in $(seq 1 100); do [ -f "$T/held.127.0.0.4" ] && break; sleep 0.2; done
assert_eq "first address: 6 handshakes held (its per-source cap), 2 closed at once" \
	"127.0.0.3: 6 held, 2 closed at once" "$(cat "$T/hs3.out")"
assert_eq "second address: 1 handshake held, 7 closed at once" "127.0.0.4: 1 held, 7 closed at once" \
	"$(cat "$T/hs4.out")"
assert_eq "/metrics: 7 handshakes in progress" 7 "$(metric tls_handshakes)"
out=$(python3 "$top_srcdir/test/sipclient.py" register --server "127.0.0.1:$TLS_PORT" --transport tls \
	--local-ip 127.0.0.5 --host "$TRUNK_HOST" --user "$SIP_USER" --password "$SIP_PASS" --timeout 3)
assert_eq "a PBX from a third address registers over TLS while they stall (401, then 200)" \
	"['REGISTER 401', 'REGISTER 200']" "$(printf '%s\n' "$out" | json_get 'final.get("finals")')"
assert_eq "/metrics counts the 9 refusals by reason" 9 "$(metric 'tcp_refused_total{reason="source_handshakes"}')"
: >"$T/release"
wait "$hs3" "$hs4"

# --- 2b. RFC 5626 pings sent together with a message, or two at once: a pong for each
out=$(timeout 10 python3 - "$SIP_PORT" "$TRUNK_HOST" <<'PY'
import socket, sys, time
port, host = int(sys.argv[1]), sys.argv[2]
s = socket.socket(); s.bind(("127.0.0.7", 0)); s.connect(("127.0.0.1", port)); s.settimeout(2)
ip, sport = s.getsockname()
def read_for(secs):
    out, end = b"", time.time() + secs
    while time.time() < end:
        try:
            d = s.recv(65535)
        except socket.timeout:
            break
        if not d:
            break
        out += d
    return out
s.sendall(b"\r\n\r\n\r\n\r\n")
two = read_for(0.7)
opt = (f"OPTIONS sip:{host} SIP/2.0\r\nVia: SIP/2.0/TCP {ip}:{sport};branch=z9hG4bK-glued1\r\nMax-Forwards: 70\r\n"
       f"From: <sip:g@{host}>;tag=g1\r\nTo: <sip:{host}>\r\nCall-ID: glued-1\r\nCSeq: 1 OPTIONS\r\n"
       "Content-Length: 0\r\n\r\n").encode()
s.sendall(b"\r\n\r\n" + opt)
glued = read_for(0.7)
print(repr(two), glued.startswith(b"\r\nSIP/2.0 200 "))
PY
)
assert_eq "two pings in one segment get two pongs; a ping glued to an OPTIONS gets its pong, then the 200" \
	"b'\\r\\n\\r\\n' True" "$out"

# --- 3b. registrations keep connections past tcp_idle_timeout (5 s): K registers and stays
# silent (kept); U registers and unregisters (let go); A registers, then B registers the same
# Contact from a new connection, as a PBX behind a NAT that rebinds (A let go, B kept); an SBC
# registers two credentials over S and unregisters one (S kept for the other); W registers and
# a REGISTER with Contact: * from X removes it (W let go)
out=$(timeout 30 python3 - "$SIP_PORT" "$TRUNK_HOST" "$SIP_USER" "$SIP_PASS" "$top_srcdir/test" "$SIP_USER2" <<'PY'
import secrets, socket, sys, time
port, host, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
sys.path.insert(0, sys.argv[5])
user2 = sys.argv[6]
import sipclient as sc

class Conn:
    def __init__(self):
        self.s = socket.socket(); self.s.bind(("127.0.0.7", 0)); self.s.connect(("127.0.0.1", port))
        self.ip, self.port = self.s.getsockname()
        self.buf, self.cseq, self.cid = b"", 0, f"keep-{secrets.token_hex(4)}"

    def ask(self, lines):
        try:
            self.s.sendall(("\r\n".join(lines + ["Content-Length: 0"]) + "\r\n\r\n").encode())
            self.s.settimeout(3)
            while True:
                fr = sc.split_frame(self.buf)
                if fr:
                    data, self.buf = fr
                    return sc.parse_message(data)
                d = self.s.recv(65535)
                if not d:
                    return None
                self.buf += d
        except OSError:
            return None

    def register(self, contact, expires, who=user):
        cid = self.cid if who == user else self.cid + "-2"
        def once(auth=None):
            self.cseq += 1
            return self.ask([f"REGISTER sip:{host} SIP/2.0",
                             f"Via: SIP/2.0/TCP {self.ip}:{self.port};branch=z9hG4bK{secrets.token_hex(8)}",
                             "Max-Forwards: 70", f"From: <sip:{who}@{host}>;tag=kp", f"To: <sip:{who}@{host}>",
                             f"Call-ID: {cid}", f"CSeq: {self.cseq} REGISTER",
                             "Contact: *" if contact == "*" else f"Contact: <{contact}>",
                             f"Expires: {expires}"] + ([f"Authorization: {auth}"] if auth else []))
        r = once()
        ch = [c for c in map(sc.parse_challenge, r.headers["www-authenticate"]) if c.params.get("algorithm") == "MD5"][0]
        return once(sc.digest_credentials(ch, "MD5", "MD5", who, password, "REGISTER", f"sip:{host}",
                                          sc.choose_qop(ch), "00000001", secrets.token_hex(8), b"")).status

    def options(self):
        r = self.ask([f"OPTIONS sip:{host} SIP/2.0", f"Via: SIP/2.0/TCP {self.ip}:{self.port};branch=z9hG4bK{secrets.token_hex(8)}",
                      "Max-Forwards: 70", f"From: <sip:{user}@{host}>;tag=kp2", f"To: <sip:{host}>",
                      f"Call-ID: keep-o-{secrets.token_hex(4)}", "CSeq: 1 OPTIONS"])
        return "open" if r and r.status == 200 else "closed"

k, u, a = Conn(), Conn(), Conn()
got = [k.register(f"sip:pbx-k@127.0.0.7:{k.port};transport=tcp", 120),
       u.register(f"sip:pbx-u@127.0.0.7:{u.port};transport=tcp", 120),
       u.register(f"sip:pbx-u@127.0.0.7:{u.port};transport=tcp", 0),
       a.register("sip:pbx-moved@127.0.0.7;transport=tcp", 120)]
b = Conn()
b.cid = a.cid
b.cseq = a.cseq
got.append(b.register("sip:pbx-moved@127.0.0.7;transport=tcp", 120))
sbc, w, x = Conn(), Conn(), Conn()
got += [sbc.register(f"sip:sbc-1@127.0.0.7:{sbc.port};transport=tcp", 120),
        sbc.register(f"sip:sbc-2@127.0.0.7:{sbc.port};transport=tcp", 120, user2),
        sbc.register(f"sip:sbc-2@127.0.0.7:{sbc.port};transport=tcp", 0, user2),
        w.register(f"sip:pbx-w@127.0.0.7:{w.port};transport=tcp", 120, user2),
        x.register("*", 0, user2)]
print("registers", *got)
time.sleep(7.5)
print("after 7.5 s silent: K", k.options(), "U", u.options(), "A", a.options(), "B", b.options(),
      "S", sbc.options(), "W", w.options())
PY
)
assert_eq "registrations keep their connections, unregistering or moving lets them go" \
	"registers 200 200 200 200 200 200 200 200 200 200
after 7.5 s silent: K open U closed A closed B open S open W closed" "$out"

# --- 4. a client that pipelines OPTIONS over TCP and reads nothing: its answers are not queued
# without end (before: RSS grew by ~100 MB a second); reading it stops until it reads, another
# client is answered meanwhile, and once it reads it gets every answer
rss_kb() { sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$SIPAUTHD_PID/status"; }
RSS0=$(rss_kb)
python3 - "$SIP_PORT" "$TRUNK_HOST" "$T/noread" <<'PY' >"$T/noread.out" 2>&1 &
import socket, sys, time
port, host, flag = int(sys.argv[1]), sys.argv[2], sys.argv[3]
s = socket.socket(); s.bind(("127.0.0.6", 0)); s.connect(("127.0.0.1", port))
ip, sport = s.getsockname()
def opt(i):
    return (f"OPTIONS sip:{host} SIP/2.0\r\nVia: SIP/2.0/TCP {ip}:{sport};branch=z9hG4bK-nr{i:08d}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:nr@{host}>;tag=nr{i}\r\nTo: <sip:{host}>\r\n"
            f"Call-ID: nr-{i}@{ip}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()
sent, t0 = 0, time.time()
s.settimeout(1.0)
try:
    while time.time() - t0 < 3:   # until the socket blocks: the daemon reads no more
        s.sendall(b"".join(opt(sent + k) for k in range(500)))
        sent += 500
except socket.timeout:
    pass   # a partial batch: its complete messages are counted from the answers below
open(flag, "w").write(f"{sent}\n")
time.sleep(1.5)   # the shell samples RSS and asks as another client meanwhile
buf, got, end = b"", 0, time.time() + 30
s.settimeout(1.0)
while time.time() < end:
    try:
        d = s.recv(1 << 20)
    except socket.timeout:
        if got >= sent: break
        continue
    if not d: break
    buf += d
    got += d.count(b"SIP/2.0 200 ")
    buf = buf[-64:]
print(f"sent>={sent} answered={got}")
PY
noread=$!
wait_for test -s "$T/noread"
RSS1=$(rss_kb)
assert_eq "an OPTIONS from another client is answered meanwhile" 200 \
	"$(sipc options --host "$TRUNK_HOST" --timeout 2 | json_get 'final.get("final_status")')"
wait "$noread"
assert_eq "the daemon's RSS grew by less than 32 MB while the client read nothing" 1 \
	"$(( RSS1 - RSS0 < 32768 ))"
assert_match "reading it was paused, and logged" "event=tcp_paused src=127.0.0.6:[0-9]+ queued=" "$(cat "$T/d.log")"
assert_eq "... and counted" 1 "$(metric tcp_reads_paused_total | awk '{print ($1 >= 1)}')"
assert_eq "once it read, every OPTIONS it sent was answered" 1 \
	"$(sed -n 's/^sent>=\([0-9]*\) answered=\([0-9]*\)$/\1 \2/p' "$T/noread.out" | awk '{print ($2 >= $1 && $1 > 0)}')"

kill -0 "$SIPAUTHD_PID" 2>/dev/null
assert_eq "the daemon is still running" 0 $?
stop "$SIPAUTHD_PID"
finish
