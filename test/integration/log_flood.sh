#!/bin/sh
# log_flood.sh: lines a remote peer triggers are held to [log] rate_limit per second per place
# in the code, and what was dropped is counted in event=log_suppressed lines (issue 10, item 6:
# one address made the daemon write ~24 000 warning lines/s with refused TLS handshakes).
# 2 000 failed TLS handshakes and 2 000 garbage datagrams from 127.0.0.3 with rate_limit = 10:
# the lines written plus the counts suppressed add up to exactly 2 000 each, and the lines
# written stay within the budget for the seconds the flood lasted.
. "$top_srcdir/test/lib.sh"
. "$top_srcdir/test/tls_lib.sh"
setup_store || { fail "store setup"; finish; }
make_cert server sipauthd-test-1 || { fail "openssl made no certificate"; finish; }
API_PORT=$(free_port 127.0.0.1)
start_tls_sipauthd d "SHA-256, MD5" "" "rate_limit = 10
[api]
listen = 127.0.0.1:$API_PORT" || { fail "sipauthd did not start"; finish; }
assert_eq "start-up lines are all there (never limited)" 1 "$(grep -c 'event=http_listening' "$T/d.log")"

# the audit trail is never limited: 30 credentials created over the API within a second or so
# (rate_limit = 10 would keep 10 of their lines) each have their event=credential_created line
KEY=$("$SIPAUTHCTL" --store "$STORE" apikey create --account "$ACC") || fail "API key"
python3 - "$API_PORT" "$KEY" "$ACC" "$TRUNK" <<'PY' >"$T/creates.out"
import http.client, json, sys
port, key, acc, trunk = sys.argv[1:5]
c = http.client.HTTPConnection("127.0.0.1", int(port), timeout=5)
codes = []
for i in range(30):
    c.request("POST", f"/v1/account/{acc}/trunks/{trunk}/credentials",
              json.dumps({"username": f"audit-{i:02d}", "password": "audit_password_long_1"}),
              {"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    r = c.getresponse(); r.read(); codes.append(r.status)
print(" ".join(sorted(set(map(str, codes)))), len(codes))
PY
assert_eq "30 credentials created over the API" "201 30" "$(cat "$T/creates.out")"
wait_for sh -c "[ \$(grep -c 'event=credential_created .*via=api' '$T/d.log') -ge 30 ]"
assert_eq "each has its audit line (none suppressed)" 30 "$(grep -c 'event=credential_created .*via=api' "$T/d.log")"

# flood.py KIND N: N failed TLS handshakes (plain text to the TLS port, one connection each)
# or N garbage datagrams; prints the seconds it took, rounded up
cat >"$T/flood.py" <<'PY'
import math, socket, sys, time
kind, n, sip_port, tls_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
t0 = time.monotonic()
if kind == "tls":
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", tls_port), source_address=("127.0.0.3", 0))
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        s.settimeout(5)
        try:
            while s.recv(4096):
                pass
        except OSError:
            pass
        s.close()
else:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.3", 0))
    for i in range(n):
        u.sendto(b"NOT SIP AT ALL %d\r\n\r\n" % i, ("127.0.0.1", sip_port))
        if i % 100 == 99:
            time.sleep(0.01)          # stay well inside the socket buffer
print(math.ceil(time.monotonic() - t0))
PY
tls_secs=$(python3 "$T/flood.py" tls 2000 "$SIP_PORT" "$TLS_PORT")
udp_secs=$(python3 "$T/flood.py" udp 2000 "$SIP_PORT" "$TLS_PORT")
sleep 1.2                                 # let the last datagrams be read and the window close
supp_metric=$(curl -s "http://127.0.0.1:$API_PORT/metrics" | sed -n 's/^sipauthd_log_lines_suppressed_total //p')
stop "$SIPAUTHD_PID"                      # the last counts are written at stop

# lines of one site, and the sum of the counts suppressed for it
tls_lines=$(grep -c 'event=tls_close src=127.0.0.3:[0-9]* handshake=incomplete' "$T/d.log")
tls_supp=$(grep 'event=log_suppressed' "$T/d.log" | grep 'site="event=tls_close src=%s:%u handshake=%s' |
	sed 's/.* count=\([0-9]*\) .*/\1/' | awk '{s += $1} END {print s + 0}')
udp_lines=$(grep -c 'event=bad_message .*src=127.0.0.3:' "$T/d.log")
udp_supp=$(grep 'event=log_suppressed' "$T/d.log" | grep 'site="event=bad_message ' |
	sed 's/.* count=\([0-9]*\) .*/\1/' | awk '{s += $1} END {print s + 0}')
echo "tls: ${tls_secs}s, $tls_lines lines, $tls_supp suppressed; udp: ${udp_secs}s, $udp_lines lines, $udp_supp suppressed"

assert_eq "2 000 failed TLS handshakes: lines written + counted as suppressed = 2000" 2000 $((tls_lines + tls_supp))
[ "$tls_lines" -ge 10 ] && [ "$tls_lines" -le $((10 * (tls_secs + 1))) ]
assert_eq "failed TLS handshakes: at most 10 lines per second of flood ($tls_lines in ${tls_secs} s)" 0 $?
assert_eq "2 000 garbage datagrams: lines written + counted as suppressed = 2000" 2000 $((udp_lines + udp_supp))
[ "$udp_lines" -ge 10 ] && [ "$udp_lines" -le $((10 * (udp_secs + 2))) ]
assert_eq "garbage datagrams: at most 10 lines per second of flood ($udp_lines in ${udp_secs} s)" 0 $?
assert_match "the summary names the place and the window" \
	'level=warning event=log_suppressed count=[0-9]+ window_ms=1000 site="event=tls_close src=%s:%u handshake=%s reason=\?%s\?"' \
	"$(cat "$T/d.log")"
[ "${supp_metric:-0}" -ge $((tls_supp + udp_supp)) ]
assert_eq "/metrics counts the suppressed lines (${supp_metric:-none})" 0 $?
assert_eq "the stop is logged after the summaries" "event=stopped" "$(tail -n 1 "$T/d.log" | sed 's/.*\(event=stopped\).*/\1/')"
finish
