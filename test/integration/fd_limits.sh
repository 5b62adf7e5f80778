#!/bin/sh
# fd_limits.sh: file descriptors (issue 10, item 7). A configuration whose connection limits do
# not fit under the hard RLIMIT_NOFILE is refused at start with one line naming the keys; a
# soft limit below what the configuration needs is raised; 300 idle API connections meet
# [api] max_connections (the rest closed at once), one address meets max_connections_per_source,
# a request trickled byte by byte is cut off 30 s after the accept; and when descriptors run out anyway (the
# limit lowered under the running daemon), accept() failures make the listeners rest instead
# of spinning: CPU stays low, and the daemon answers again once the flood is gone.
. "$top_srcdir/test/lib.sh"
need prlimit
need curl
setup_store || { fail "store setup"; finish; }

# --- 1. hard limit 256, default limits (4 096 SIP + 256 HTTP connections): refused
API_PORT=$(free_port 127.0.0.1)
# what the configuration needs: 4 096 + 256 + 2 SIP listeners + 1 API listener + 64 spare, and
# for each SIP worker past the first its own 2 listeners, inbox and loop (4)
workers=${SA_TEST_WORKERS:-$(nproc)}
need=$((4419 + (workers - 1) * 4))
start_sipauthd "" "[api]
listen = 127.0.0.1:$API_PORT" || { fail "sipauthd did not start"; finish; }
stop "$SIPAUTHD_PID"
cp "$T/sipauthd.conf" "$T/default.conf"
timeout 10 prlimit --nofile=256:256 "$SIPAUTHD" --config "$T/default.conf" >"$T/refused.log" 2>&1
assert_eq "hard limit 256 with max_connections 4096: refused to start (exit status 1)" 1 $?
assert_match "one error line names the keys and the numbers" \
	"level=error event=fd_limit_too_low need=$need soft=256 hard=256 max_connections=4096 api_max_connections=256 hint=\"lower \\[limits\\] max_connections or \\[api\\] max_connections" \
	"$(cat "$T/refused.log")"
assert_eq "nothing was started" 0 "$(grep -c 'event=listening\|event=started' "$T/refused.log")"

# --- 2. soft 256, hard 8192: the soft limit is raised to what the configuration needs
spawn "$T/raised.log" prlimit --nofile=256:8192 "$SIPAUTHD" --config "$T/default.conf"
pid=$!
wait_for grep -q "event=started" "$T/raised.log" || fail "sipauthd did not start with soft 256 / hard 8192"
assert_match "the soft limit was raised" "event=fd_limit_raised from=256 to=$need" "$(cat "$T/raised.log")"
assert_match "the running daemon has the raised soft limit" "^$need 8192$" \
	"$(prlimit --pid "$pid" --nofile --output SOFT,HARD --noheadings | awk '{print $1, $2}')"
stop "$pid"

# --- 3. limits that fit (100 SIP + 50 HTTP): 300 idle API connections, 50 are served
cat >>"$T/sipauthd.conf" <<CONF
max_connections = 50
max_connections_per_source = 8
[limits]
max_connections = 100
CONF
spawn "$T/small.log" prlimit --nofile=512:512 "$SIPAUTHD" --config "$T/sipauthd.conf"
SIPAUTHD_PID=$!
wait_for grep -q "event=started" "$T/small.log" || { cat "$T/small.log"; fail "sipauthd did not start (small limits)"; finish; }

# cpu_ticks: user + system clock ticks of the daemon so far
cpu_ticks() { awk '{print $14 + $15}' "/proc/$SIPAUTHD_PID/stat"; }
# flood.py PORT N [SOURCES]: open N TCP connections (from the addresses of SOURCES, a comma list,
# in turn) and hold them until $T/release; prints how many the daemon closed at once (within
# 1 s) and how many it kept
cat >"$T/flood.py" <<'PY'
import os, select, socket, sys, time
port, n, d = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
sources = sys.argv[4].split(",") if len(sys.argv) > 4 else ["127.0.0.1"]
socks = []
for i in range(n):
    s = socket.socket()
    s.setblocking(False)
    s.bind((sources[i % len(sources)], 0))
    s.connect_ex(("127.0.0.1", port))
    socks.append(s)
    if i % 25 == 24:
        time.sleep(0.05)              # never more than the listen backlog in flight
time.sleep(1.5)
closed = 0
for s in socks:
    r, _, _ = select.select([s], [], [], 0)
    if r:
        try:
            closed += s.recv(1) == b""
        except OSError:
            closed += 1
print(f"closed {closed} kept {n - closed}", flush=True)
open(os.path.join(d, "flooded"), "w").close()
deadline = time.monotonic() + 60
while not os.path.exists(os.path.join(d, "release")) and time.monotonic() < deadline:
    time.sleep(0.1)
PY
# trickle.py PORT: a request sent one byte a second (each byte re-arms an idle timer); prints
# when the daemon closed the connection
cat >"$T/trickle.py" <<'PY'
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), source_address=("127.0.0.4", 0))
s.settimeout(1.0)
t0 = time.monotonic()
req = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 200
for b in req:
    try:
        s.send(bytes([b]))
        if s.recv(1) == b"":
            break
    except socket.timeout:
        pass
    except OSError:
        break
dt = time.monotonic() - t0
print("closed at the request deadline" if 28 <= dt <= 36 else "closed after %.1f s" % dt)
PY
# one address holds [api] max_connections_per_source (8) of them; another is still served
rm -f "$T/flooded" "$T/release"
spawn "$T/api_one.out" python3 "$T/flood.py" "$API_PORT" 20 "$T" 127.0.0.3
fpid=$!
wait_for test -f "$T/flooded" || fail "the one-address API flood did not start"
assert_eq "20 API connections from one address: 8 kept ([api] max_connections_per_source), 12 closed at once" \
	"closed 12 kept 8" "$(cat "$T/api_one.out")"
assert_eq "... while another address is served" '{"status":"ok"}' "$(curl -s -m 2 "http://127.0.0.1:$API_PORT/healthz")"
assert_match "... the refusals are logged with their reason" \
	"event=http_refused reason=max_connections_per_source src=127.0.0.3:[0-9]+ connections=" "$(cat "$T/small.log")"
: >"$T/release"
wait "$fpid"
rm -f "$T/flooded" "$T/release"
spawn "$T/api_flood.out" python3 "$T/flood.py" "$API_PORT" 300 "$T" \
	127.0.0.10,127.0.0.11,127.0.0.12,127.0.0.13,127.0.0.14,127.0.0.15,127.0.0.16,127.0.0.17,127.0.0.18,127.0.0.19
fpid=$!
wait_for test -f "$T/flooded" || fail "the API flood did not start"
assert_eq "300 API connections from ten addresses: 50 kept ([api] max_connections), 250 closed at once" \
	"closed 250 kept 50" "$(cat "$T/api_flood.out")"
m=$(curl -s -m 2 "http://127.0.0.1:$API_PORT/metrics")
assert_eq "while at the cap, another HTTP client is closed at once" "" "$m"
: >"$T/release"
wait "$fpid"
wait_for sh -c "curl -s -m 2 http://127.0.0.1:$API_PORT/metrics | grep -q '^sipauthd_http_connections 1$'"
m=$(curl -s -m 2 "http://127.0.0.1:$API_PORT/metrics")
assert_eq "/metrics counts the 263 refused (12, 250, and the client at the cap)" 263 \
	"$(printf '%s\n' "$m" | sed -n 's/^sipauthd_http_refused_total //p')"
assert_eq "/metrics: once they are gone only the scrape itself is open" 1 \
	"$(printf '%s\n' "$m" | sed -n 's/^sipauthd_http_connections //p')"
python3 "$T/trickle.py" "$API_PORT" >"$T/trickle.out" 2>&1
assert_eq "a request trickled a byte a second is cut off SA_HTTP_TIMEOUT (30 s) after the accept" \
	"closed at the request deadline" "$(cat "$T/trickle.out")"
assert_match "... and logged" "event=http_closed reason=request_deadline src=127.0.0.4:[0-9]+ timeout=30" \
	"$(cat "$T/small.log")"

# --- 4. descriptors run out anyway: the limit is lowered to 40 under the running daemon,
# then 300 connections to the SIP TCP port and 300 to the API. accept() fails with EMFILE:
# the listeners rest 250 ms at a time instead of spinning
prlimit --pid "$SIPAUTHD_PID" --nofile=40:512
rm -f "$T/flooded" "$T/release"
spawn "$T/sip_flood.out" python3 "$T/flood.py" "$SIP_PORT" 300 "$T"
fpid=$!
wait_for test -f "$T/flooded" || fail "the SIP flood did not start"
rm -f "$T/flooded"
spawn "$T/api_flood2.out" python3 "$T/flood.py" "$API_PORT" 300 "$T"
fpid2=$!
wait_for test -f "$T/flooded" || fail "the second API flood did not start"
t0=$(cpu_ticks)
sleep 3
t1=$(cpu_ticks)
echo "daemon CPU over 3 s with descriptors exhausted: $((t1 - t0)) ticks ($(getconf CLK_TCK)/s)"
[ $((t1 - t0)) -le 30 ]
assert_eq "out of descriptors: the daemon used at most 10% CPU over 3 s ($((t1 - t0)) ticks), no spin" 0 $?
paused=$(grep -c 'event=accept_paused proto=tcp .*error="Too many open files" retry_ms=250' "$T/small.log")
# each SIP worker has a listener of its own on the port, and each rests (and says so)
workers=$(sed -n 's/.*event=workers_started workers=\([0-9]*\).*/\1/p' "$T/small.log")
[ "$paused" -ge 1 ] && [ "$paused" -le $((40 * ${workers:-1})) ]
assert_eq "the SIP listener's pauses are logged, within the log budget ($paused lines)" 0 $?
assert_match "the API listener's pauses are logged" 'event=accept_paused proto=http error="Too many open files"' \
	"$(cat "$T/small.log")"
assert_eq "no accept() error line straight from libevent" 0 "$(grep -c 'Error from accept' "$T/small.log")"
: >"$T/release"
wait "$fpid" "$fpid2"
prlimit --pid "$SIPAUTHD_PID" --nofile=512:512
wait_for sh -c "curl -s -m 2 http://127.0.0.1:$API_PORT/healthz | grep -q ok"
assert_eq "after the flood /healthz answers" '{"status":"ok"}' "$(curl -s -m 2 "http://127.0.0.1:$API_PORT/healthz")"
assert_eq "after the flood SIP over TCP is answered (OPTIONS 200)" 200 \
	"$(sipc options --transport tcp | json_get 'final.get("final_status")')"
m=$(curl -s -m 2 "http://127.0.0.1:$API_PORT/metrics")
[ "$(printf '%s\n' "$m" | sed -n 's/^sipauthd_accept_paused_total //p')" -ge 1 ]
assert_eq "/metrics counts the SIP listener's pauses" 0 $?
kill -0 "$SIPAUTHD_PID" 2>/dev/null
assert_eq "the daemon is still running" 0 $?
stop "$SIPAUTHD_PID"
finish
