#!/bin/sh
# upstream.sh: several gateways (issue 13): failover of an INVITE on 503, on silence and on a
# transport error, before any final answer reaches the PBX; CANCEL follows the live branch; a
# gateway that keeps failing is put down and skipped; OPTIONS probes put a silent gateway down
# and bring it back when it answers; per-gateway counters in /metrics and GET /v1/upstream (admin
# token only). sipp plays the PBX and two gateways
# (127.0.0.2 and 127.0.0.3); which gateway got each call is counted in their message traces.
. "$top_srcdir/test/lib.sh"
need sipp
setup_store || { fail "store setup"; finish; }
PBX_ARGS="-au $SIP_USER -ap $SIP_PASS -key trunk_host $TRUNK_HOST"

# invites NAME: INVITEs a sipp gateway received
invites() { grep -c '^INVITE ' "$T/$1.msg" 2>/dev/null || echo 0; }
pbx_call() {
	name=$1; shift
	run_sipp "$name" -sf "$SIPP_DIR/pbx_call.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.1 -p "$(free_port 127.0.0.1)" \
		-s 15551234567 $PBX_ARGS -d 100 "$@"
}
# daemon GATEWAYS [EXTRA]: (re)start sipauthd with these gateways; G1 (127.0.0.2) and
# G2 (127.0.0.3) are fresh ports each time
daemon() {
	[ -n "${SIPAUTHD_PID:-}" ] && stop "$SIPAUTHD_PID" && cat "$T/sipauthd.log" >>"$T/all.log"
	G1=$(free_port 127.0.0.2)
	G2=$(free_port 127.0.0.3)
	gws=$1
	start_sipauthd "MD5" "[upstream]
gateway = $(eval echo "$gws")
trusted = 127.0.0.2/32, 127.0.0.3/32
failover_timeout_ms = 1000
down_after = 2
${2:-}" || { fail "sipauthd did not start"; finish; }
}

# ---- 1. a 503 from the first gateway: the call completes through the second
daemon 'udp:127.0.0.2:$G1, udp:127.0.0.3:$G2'
bg_sipp gw1_503 -sf "$SIPP_DIR/gateway_503.xml" -i 127.0.0.2 -p "$G1" -m 1
gw1=$!
bg_sipp gw2_ok -sf "$SIPP_DIR/gateway_uas.xml" -i 127.0.0.3 -p "$G2" -m 1
gw2=$!
sleep 0.3
pbx_call call_503 -m 1
assert_eq "the PBX's call completes although the first gateway answered 503" 0 $?
wait "$gw1"; assert_eq "the first gateway got the INVITE and the ACK for its 503" 0 $?
wait "$gw2"; assert_eq "the second gateway got INVITE, ACK and BYE" 0 $?
assert_eq "one INVITE reached each gateway" "1 1" "$(invites gw1_503) $(invites gw2_ok)"
assert_nomatch "no 503 reached the PBX" "SIP/2.0 503" "$(cat "$T/call_503.msg")"
assert_match "the failover is logged with its reason" \
	"event=failover reason=503 from=udp:127.0.0.2:$G1 to=udp:127.0.0.3:$G2" "$(cat "$T/sipauthd.log")"

# ---- 2. CANCEL follows the live branch: 503 from the first, the second rings, the PBX cancels
bg_sipp gw1_503c -sf "$SIPP_DIR/gateway_503.xml" -i 127.0.0.2 -p "$G1" -m 1
gw1=$!
bg_sipp gw2_cancel -sf "$SIPP_DIR/gateway_cancelled.xml" -i 127.0.0.3 -p "$G2" -m 1
gw2=$!
sleep 0.3
run_sipp cancel -sf "$SIPP_DIR/pbx_cancel.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.1 -p "$(free_port 127.0.0.1)" \
	-s 15551234567 $PBX_ARGS -m 1
assert_eq "the PBX cancels the call ringing on the second gateway: 200 and 487" 0 $?
wait "$gw2"; assert_eq "the second gateway got the CANCEL and the ACK for its 487" 0 $?
wait "$gw1"
assert_match "the CANCEL went to the second gateway" "^CANCEL sip:" "$(cat "$T/gw2_cancel.msg")"
assert_nomatch "no CANCEL went to the first" "^CANCEL" "$(cat "$T/gw1_503c.msg")"

# ---- 2b. a gateway whose stack says 100 Trying before each 503: the 100 is not an answer for its
# health (it says only that the INVITE arrived), so down_after (2) of them put it down
daemon 'udp:127.0.0.2:$G1, udp:127.0.0.3:$G2'
bg_sipp gw1_t503 -sf "$SIPP_DIR/gateway_trying_503.xml" -i 127.0.0.2 -p "$G1" -m 2
gw1=$!
bg_sipp gw2_t503 -sf "$SIPP_DIR/gateway_uas.xml" -i 127.0.0.3 -p "$G2" -m 3
gw2=$!
sleep 0.3
pbx_call call_t503a -m 1
assert_eq "a call completes past the first gateway's 100 and 503" 0 $?
pbx_call call_t503b -m 1
assert_eq "... and a second" 0 $?
wait "$gw1"; assert_eq "the first gateway got both INVITEs, and ACKs for its 503s" 0 $?
assert_match "after two 503s, each after a 100, the first gateway is down" \
	"event=gateway_down gateway=udp:127.0.0.2:$G1 reason=503 failures=2" "$(cat "$T/sipauthd.log")"
pbx_call call_t503c -m 1
assert_eq "a third call completes" 0 $?
wait "$gw2"; assert_eq "the second gateway took all three" 0 $?
assert_eq "the third went straight to the second gateway (the first got two INVITEs in all)" 2 "$(invites gw1_t503)"

# ---- 2c. a 503 with Retry-After: 20 (RFC 3261 §21.5.4): the gateway is tried after the others
# for 20 s, so the next call goes straight to the second (one 503 is below down_after)
daemon 'udp:127.0.0.2:$G1, udp:127.0.0.3:$G2'
bg_sipp gw1_ra -sf "$SIPP_DIR/gateway_503_retry.xml" -i 127.0.0.2 -p "$G1" -m 1
gw1=$!
bg_sipp gw2_ra -sf "$SIPP_DIR/gateway_uas.xml" -i 127.0.0.3 -p "$G2" -m 2
gw2=$!
sleep 0.3
pbx_call call_ra1 -m 1
assert_eq "a call completes past the first gateway's 503 with Retry-After" 0 $?
assert_match "the gateway is held for its Retry-After" \
	"event=gateway_held gateway=udp:127.0.0.2:$G1 retry_after=20" "$(cat "$T/sipauthd.log")"
pbx_call call_ra2 -m 1
assert_eq "the next call completes" 0 $?
wait "$gw2"; assert_eq "the second gateway took both" 0 $?
wait "$gw1"
assert_eq "the second call went straight past the held gateway: one failover logged in all (the first call's)" 1 \
	"$(grep -c 'event=failover ' "$T/sipauthd.log")"

# ---- 3. the first gateway gone (nothing listens there): the second answers within a few seconds;
# after down_after silent calls the first is down and calls go straight to the second
daemon 'udp:127.0.0.2:$G1, udp:127.0.0.3:$G2'
bg_sipp gw2_gone -sf "$SIPP_DIR/gateway_uas.xml" -i 127.0.0.3 -p "$G2" -m 3
gw2=$!
sleep 0.3
t0=$(date +%s%N)
pbx_call call_gone -m 1
rc=$?
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
assert_eq "a call completes with the first gateway gone" 0 $rc
if [ "$ms" -lt 3000 ]; then pass "it took $ms ms (failover_timeout_ms 1000, under 3 s)"; else fail "it took $ms ms"; fi
assert_match "the failover is logged as a timeout" \
	"event=failover reason=timeout from=udp:127.0.0.2:$G1 to=udp:127.0.0.3:$G2" "$(cat "$T/sipauthd.log")"
pbx_call call_gone2 -m 1
assert_eq "a second call completes too" 0 $?
assert_match "after two failures in a row the first gateway is down" \
	"event=gateway_down gateway=udp:127.0.0.2:$G1 reason=timeout failures=2" "$(cat "$T/sipauthd.log")"
t0=$(date +%s%N)
pbx_call call_gone3 -m 1
rc=$?
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
assert_eq "a third call completes" 0 $rc
assert_eq "it did not wait for the down gateway: two failovers logged in all" 2 \
	"$(grep -c 'event=failover' "$T/sipauthd.log")"
if [ "$ms" -lt 900 ]; then pass "the third call took $ms ms (no failover wait)"; else fail "the third call took $ms ms"; fi
wait "$gw2"; assert_eq "the second gateway took all three calls" 0 $?

# ---- 3b. the first gateway answers after failover left it (RFC 3261 §9.1, §16.7): a late 200 is
# ACKed and ended with a BYE, a late 180 gets a CANCEL; the PBX's call goes on through the second
STRANGER="python3 $top_srcdir/test/stranger.py"
# late_call NAME STATUS: gateway 1 answers STATUS 1.6 s after the INVITE (failover at 1 s), the
# second answers at once; the PBX's call must complete through the second
late_call() {
	spawn "$T/$1.json" $STRANGER uas --listen "127.0.0.2:$G1" --duration 8 --late 1.6 --late-status "$2" --delay 3
	gw1=$!
	bg_sipp "gw2_$1" -sf "$SIPP_DIR/gateway_uas.xml" -i 127.0.0.3 -p "$G2" -m 1
	gw2=$!
	sleep 0.3
	pbx_call "call_$1" -m 1 -d 3000
	assert_eq "$1: the PBX's call completes through the second gateway" 0 $?
	wait "$gw2"; assert_eq "$1: the second gateway got INVITE, ACK and BYE" 0 $?
	wait "$gw1"
}
count_req() { grep -c "\"event\":\"request\",\"method\":\"$2\"" "$T/$1.json"; }
API_PORT=$(free_port 127.0.0.1)
daemon 'udp:127.0.0.2:$G1, udp:127.0.0.3:$G2' "[api]
listen = 127.0.0.1:$API_PORT"
late_call late200 200
assert_eq "the first gateway's late 200 got one ACK and one BYE" "1 1" \
	"$(count_req late200 ACK) $(count_req late200 BYE)"
assert_match "the BYE says why" \
	'"method":"BYE".*"reason":"SIP;cause=200;text=\\"answered after failover to another gateway\\""' \
	"$(cat "$T/late200.json")"
assert_eq "the PBX saw one 200 to its INVITE (the second gateway's)" 1 \
	"$(grep -A8 '^UDP message received \[' "$T/call_late200.msg" | grep -c '^CSeq: 1 INVITE' )"
assert_match "the late answer is logged with what was done" \
	"event=failover_late_answer status=200 gateway=udp:127.0.0.2:$G1 outcome=ack_bye" "$(cat "$T/sipauthd.log")"
assert_match "/metrics counts it" "sipauthd_sip_failover_late_answers_total 1" \
	"$(curl -s "http://127.0.0.1:$API_PORT/metrics")"

late_call late180 180
assert_eq "the first gateway's late 180 got a CANCEL, its 487 an ACK, and no BYE" "1 1 0" \
	"$(count_req late180 CANCEL) $(count_req late180 ACK) $(count_req late180 BYE)"
assert_nomatch "the CANCELled gateway never sent its 200" '"status":200' "$(cat "$T/late180.json")"
assert_match "the late ringing is logged" \
	"event=failover_late_answer status=180 gateway=udp:127.0.0.2:$G1 outcome=cancel" "$(cat "$T/sipauthd.log")"

# ---- 4. a transport error: the first gateway is TCP and refuses the connection
daemon 'tcp:127.0.0.2:$G1, udp:127.0.0.3:$G2'
bg_sipp gw2_tcp -sf "$SIPP_DIR/gateway_uas.xml" -i 127.0.0.3 -p "$G2" -m 1
gw2=$!
sleep 0.3
t0=$(date +%s%N)
pbx_call call_refused -m 1
rc=$?
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
assert_eq "a call completes when the first gateway refuses the TCP connection" 0 $rc
assert_match "the failover is logged as a transport error" \
	"event=failover reason=transport_error from=tcp:127.0.0.2:$G1 to=udp:127.0.0.3:$G2" "$(cat "$T/sipauthd.log")"
if [ "$ms" -lt 900 ]; then pass "no failover wait on a refused connection ($ms ms)"; else fail "refused connection took $ms ms"; fi
wait "$gw2"; assert_eq "the second gateway took the call" 0 $?
# the only gateway refuses: the PBX gets 503 at once (RFC 3261 §16.9), not 408 at Timer B
daemon 'tcp:127.0.0.2:$G1'
t0=$(date +%s%N)
sipc invite --host "$TRUNK_HOST" --user "$SIP_USER" --password "$SIP_PASS" --timeout 5 >"$T/refused_only.json"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
assert_eq "the last gateway refusing the connection: 503 to the PBX" "[407, 100, 503]" \
	"$(json_get '[r["status"] for r in resp]' <"$T/refused_only.json")"
if [ "$ms" -lt 2000 ]; then pass "... at once ($ms ms)"; else fail "the 503 took $ms ms"; fi
assert_match "... logged" "event=next_hop_unreachable to=tcp:127.0.0.2:$G1 method=INVITE status=503" \
	"$(cat "$T/sipauthd.log")"
# the only gateway takes the connection, reads the INVITE and closes: 503 at once as well
python3 - "$G1" "$T/closer.ready" >"$T/closer.out" 2>&1 <<'PY' &
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.2", int(sys.argv[1]))); s.listen(4); open(sys.argv[2], "w").close()
s.settimeout(10)
c, _ = s.accept(); c.settimeout(5); data = b""
while b"\r\n\r\n" not in data:
    data += c.recv(65535)
print(data.split(b"\r\n", 1)[0].decode()); time.sleep(0.2); c.close(); s.close()
PY
closer=$!
wait_for test -e "$T/closer.ready"
t0=$(date +%s%N)
sipc invite --host "$TRUNK_HOST" --user "$SIP_USER" --password "$SIP_PASS" --timeout 5 >"$T/closed_only.json"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
wait "$closer"
assert_match "the gateway got the INVITE over TCP" "^INVITE sip:" "$(cat "$T/closer.out")"
assert_eq "it closed the connection without an answer: 503 to the PBX" "[407, 100, 503]" \
	"$(json_get '[r["status"] for r in resp]' <"$T/closed_only.json")"
if [ "$ms" -lt 2000 ]; then pass "... at once ($ms ms)"; else fail "the 503 took $ms ms"; fi

# ---- 5. every gateway answers 503: the PBX gets the last 503
daemon 'udp:127.0.0.2:$G1, udp:127.0.0.3:$G2'
bg_sipp gw1_all -sf "$SIPP_DIR/gateway_503.xml" -i 127.0.0.2 -p "$G1" -m 1
gw1=$!
bg_sipp gw2_all -sf "$SIPP_DIR/gateway_503.xml" -i 127.0.0.3 -p "$G2" -m 1
gw2=$!
sleep 0.3
run_sipp all503 -sf "$SIPP_DIR/pbx_call.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.1 -p "$(free_port 127.0.0.1)" \
	-s 15551234567 $PBX_ARGS -m 1
wait "$gw1"; assert_eq "the first gateway's 503 was ACKed" 0 $?
wait "$gw2"; assert_eq "the second gateway's 503 was ACKed" 0 $?
assert_eq "the PBX got exactly one 503 (the last gateway's)" 1 \
	"$(grep -A2 '^UDP message received \['  "$T/all503.msg" | grep -c '^SIP/2.0 503')"
assert_match "both gateways were tried, in order" \
	"event=failover reason=503 from=udp:127.0.0.2:$G1 to=udp:127.0.0.3:$G2" "$(cat "$T/sipauthd.log")"

# ---- 6. probes: the first gateway is silent, probes put it down before any call tries it; calls
# go straight to the second; once it answers a probe it is up and takes the next call
daemon 'udp:127.0.0.2:$G1, udp:127.0.0.3:$G2' "probe_interval = 1"
STRANGER="python3 $top_srcdir/test/stranger.py"
spawn "$T/probe_gw2.out" $STRANGER uas --listen "127.0.0.3:$G2" --duration 60
sleep 0.3
wait_for grep -q "event=gateway_down gateway=udp:127.0.0.2:$G1 reason=probe_failed" "$T/sipauthd.log"
assert_match "unanswered probes put the first gateway down" \
	"event=gateway_down gateway=udp:127.0.0.2:$G1 reason=probe_failed failures=2" "$(cat "$T/sipauthd.log")"
assert_match "the second gateway answers its probes" '"method":"OPTIONS"' "$(cat "$T/probe_gw2.out")"
t0=$(date +%s%N)
pbx_call probe_call1 -m 1
rc=$?
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
assert_eq "a call completes while the first gateway is down" 0 $rc
if [ "$ms" -lt 900 ]; then pass "without waiting for the down gateway ($ms ms)"; else fail "took $ms ms"; fi
assert_nomatch "no failover was needed" "event=failover" "$(cat "$T/sipauthd.log")"
spawn "$T/probe_gw1.out" $STRANGER uas --listen "127.0.0.2:$G1" --duration 60
wait_for grep -q "event=gateway_up gateway=udp:127.0.0.2:$G1 reason=probe_ok" "$T/sipauthd.log"
assert_match "a probe answered brings the first gateway back" \
	"event=gateway_up gateway=udp:127.0.0.2:$G1 reason=probe_ok" "$(cat "$T/sipauthd.log")"
pbx_call probe_call2 -m 1
assert_eq "the next call completes" 0 $?
assert_eq "it went to the first gateway again" 1 "$(grep -c '"method":"INVITE"' "$T/probe_gw1.out")"
assert_eq "the second gateway had only the call before" 1 "$(grep -c '"method":"INVITE"' "$T/probe_gw2.out")"

# ---- 7. per-gateway state and counters: /metrics, and GET /v1/upstream for the admin only
API_PORT=$(free_port 127.0.0.1)
daemon 'udp:127.0.0.2:$G1, udp:127.0.0.3:$G2' "[api]
listen = 127.0.0.1:$API_PORT"
code=$(curl -s -o "$T/noadmin.json" -D "$T/noadmin.h" -w '%{http_code}' "http://127.0.0.1:$API_PORT/v1/upstream")
assert_eq "without [api] admin_token_file, GET /v1/upstream is 403" 403 "$code"
api_record GET /v1/upstream "$code" "$T/noadmin.json" "$T/noadmin.h"
assert_match "in the API's error shape" '"code": ?"forbidden"' "$(cat "$T/noadmin.json")"
ADMIN_TOKEN=adm_$(python3 -c 'import secrets; print(secrets.token_hex(16))')
printf '%s\n' "$ADMIN_TOKEN" >"$T/admin.token"
daemon 'udp:127.0.0.2:$G1, udp:127.0.0.3:$G2' "[api]
listen = 127.0.0.1:$API_PORT
admin_token_file = $T/admin.token"
bg_sipp gw1_m -sf "$SIPP_DIR/gateway_503.xml" -i 127.0.0.2 -p "$G1" -m 1
gw1=$!
bg_sipp gw2_m -sf "$SIPP_DIR/gateway_uas.xml" -i 127.0.0.3 -p "$G2" -m 1
gw2=$!
sleep 0.3
pbx_call call_m -m 1
assert_eq "a call fails over from 503" 0 $?
wait "$gw1"; wait "$gw2"
code=$(curl -s -o "$T/nokey.json" -D "$T/nokey.h" -w '%{http_code}' "http://127.0.0.1:$API_PORT/v1/upstream")
assert_eq "no token: 401" 401 "$code"
api_record GET /v1/upstream "$code" "$T/nokey.json" "$T/nokey.h"
code=$(curl -s -o "$T/query.json" -D "$T/query.h" -w '%{http_code}' -H "Authorization: Bearer $ADMIN_TOKEN" \
	"http://127.0.0.1:$API_PORT/v1/upstream?verbose=1")
assert_eq "a query parameter: 400 (the resource takes none)" 400 "$code"
api_record GET /v1/upstream "$code" "$T/query.json" "$T/query.h"
assert_match "with WWW-Authenticate: Bearer" "WWW-Authenticate: Bearer" "$(cat "$T/nokey.h")"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer ${ADMIN_TOKEN}x" "http://127.0.0.1:$API_PORT/v1/upstream")
assert_eq "a wrong token: 401" 401 "$code"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer tvx_sk_live_notanadmin" "http://127.0.0.1:$API_PORT/v1/upstream")
assert_eq "an account's API key is no admin token: 401" 401 "$code"
code=$(curl -s -o "$T/up.json" -D "$T/up.h" -w '%{http_code}' -H "Authorization: Bearer $ADMIN_TOKEN" \
	"http://127.0.0.1:$API_PORT/v1/upstream")
assert_eq "the admin token: 200" 200 "$code"
api_record GET /v1/upstream "$code" "$T/up.json" "$T/up.h"
openapi_check
up() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$T/up.json" "$1"; }
assert_eq "two gateways, in order" "udp:127.0.0.2:$G1 udp:127.0.0.3:$G2" "$(up '" ".join(g["gateway"] for g in d["gateways"])')"
assert_eq "the first: 1 INVITE, 1 503, 1 failover, up" "1 1 1 up" \
	"$(up '" ".join(str(x) for x in (d["gateways"][0]["counters"]["invites"], d["gateways"][0]["counters"]["503"], d["gateways"][0]["counters"]["failovers"], d["gateways"][0]["state"]))')"
assert_eq "the second: 1 INVITE answered" "1 1" \
	"$(up '" ".join(str(x) for x in (d["gateways"][1]["counters"]["invites"], d["gateways"][1]["counters"]["answered"]))')"
assert_nomatch "the token is never logged" "$ADMIN_TOKEN" "$(cat "$T/sipauthd.log")"
m=$(curl -s "http://127.0.0.1:$API_PORT/metrics")
assert_match "/metrics: the first gateway's 503" \
	"sipauthd_gateway_events_total\{gateway=\"udp:127.0.0.2:$G1\",event=\"503\"\} 1" "$m"
assert_match "/metrics: its failover" "sipauthd_gateway_failovers_total\{gateway=\"udp:127.0.0.2:$G1\"\} 1" "$m"
assert_match "/metrics: the second's INVITE" "sipauthd_gateway_invites_total\{gateway=\"udp:127.0.0.3:$G2\"\} 1" "$m"
assert_match "/metrics: both up" "sipauthd_gateway_up\{gateway=\"udp:127.0.0.3:$G2\"\} 1" "$m"
stop "$SIPAUTHD_PID"
cat "$T/sipauthd.log" >>"$T/all.log"
assert_nomatch "no sanitizer report from any of the daemons" "Sanitizer|runtime error" "$(cat "$T/all.log")"
assert_eq "every daemon stopped cleanly" "$(grep -c 'event=started' "$T/all.log")" "$(grep -c 'event=stopped' "$T/all.log")"
finish
