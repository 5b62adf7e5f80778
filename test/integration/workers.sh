#!/bin/sh
# workers.sh: [sip] workers = 2 (issue 11): two event loops share the SIP port (SO_REUSEPORT);
# calls from many sources are carried by both; answers from the one gateway, and its in-dialog
# BYEs, reach the worker that holds the transaction or call; revocation, SIGHUP and a stop with
# calls up cover every worker, and the calls saved by both come back after a restart.
. "$top_srcdir/test/lib.sh"
SIPAUTHD="$top_builddir/daemon/sipauthd"   # two workers whatever SA_TEST_WORKERS says
need sipp
setup_store || { fail "store setup"; finish; }
API_PORT=$(free_port 127.0.0.1)
start_sipauthd "MD5" "[sip]
workers = 2
[proxy]
# slow enough to see: revoked calls on both workers share the gateway's one allowance
bye_rate = 20
[api]
listen = 127.0.0.1:$API_PORT" || { fail "sipauthd did not start"; finish; }
API_KEY=$("$SIPAUTHCTL" --store "$STORE" apikey create --account "$ACC")
API="http://127.0.0.1:$API_PORT/v1/account/$ACC/trunks/$TRUNK"
PBX="-au $SIP_USER -ap $SIP_PASS -key trunk_host $TRUNK_HOST"
metric() { curl -s "http://127.0.0.1:$API_PORT/metrics" | sed -n "s/^sipauthd_$1 //p"; }
calls_active() { metric calls_active; }

assert_match "the log names the workers" "event=workers_started workers=2" "$(cat "$T/sipauthd.log")"
assert_eq "one listening line per address, not per worker" 2 "$(grep -c "event=listening" "$T/sipauthd.log")"
assert_eq "/metrics counts two workers" 2 "$(metric sip_workers)"
assert_eq "the second worker is a thread of its own" "sipauthd-w1" \
	"$(cat /proc/"$SIPAUTHD_PID"/task/*/comm | grep -x 'sipauthd-w1')"

# --- 100 calls, each from a socket of its own (sipp -t un): the kernel spreads the sources over
# both workers. The gateway answers from one address and hangs up itself: its answers and
# BYEs reach one worker, which hands those of the other worker's calls over.
bg_sipp gw -sf "$SIPP_DIR/gateway_uas_bye.xml" -i 127.0.0.2 -p "$GW_PORT" -m 100; gw=$!
sleep 0.3
run_sipp calls -sf "$SIPP_DIR/pbx_call_hold.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.1 -p "$(free_port)" \
	-t un -max_socket 200 -r 25 -m 100 -s 15551234567 $PBX
assert_eq "100 calls from 100 sources: each set up and ended by the gateway's BYE" 0 $?
wait "$gw"
assert_eq "the gateway saw each call answered and its BYE answered" 0 $?
assert_match "sipp counted 100 successful calls" "Successful call.*\| *100" "$(cat "$T/calls.out")"
assert_eq "every call started" 100 "$(metric calls_started_total)"
wait_for sh -c "[ \"\$(curl -s http://127.0.0.1:$API_PORT/metrics | sed -n 's/^sipauthd_calls_active //p')\" = 0 ]"
assert_eq "every call ended, on whichever worker held it" 0 "$(calls_active)"
w0=$(metric 'sip_worker_requests_total{worker="0"}')
w1=$(metric 'sip_worker_requests_total{worker="1"}')
total=$(curl -s "http://127.0.0.1:$API_PORT/metrics" | sed -n 's/^sipauthd_sip_requests_total{method="[A-Z]*"} //p' |
	awk '{ s += $1 } END { print s }')
echo "worker 0: $w0 requests, worker 1: $w1, handoffs: $(metric sip_worker_handoffs_total)"
assert_match "worker 0 carried part of the load" "^[1-9][0-9]*$" "$w0"
assert_match "worker 1 carried part of the load" "^[1-9][0-9]*$" "$w1"
assert_eq "the workers' shares add up to the requests counted" "$total" "$((w0 + w1))"
assert_match "answers and BYEs were handed to the worker that holds them" "^[1-9][0-9]*$" \
	"$(metric sip_worker_handoffs_total)"
assert_eq "no answer was refused as unknown" 0 "$(metric sip_responses_refused_total)"

# --- SIGHUP reaches both workers: max_expires lowered, REGISTERs from 8 sources are all capped
printf '[registrar]\nmax_expires = 77\ndefault_expires = 60\n' >>"$T/sipauthd.conf"
kill -HUP "$SIPAUTHD_PID"
wait_for grep -q "event=reloaded" "$T/sipauthd.log"
run_sipp reg -sf "$SIPP_DIR/pbx_register.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.1 -p "$(free_port)" -t un -max_socket 200 -m 8 \
	-r 20 -s "$SIP_USER" $PBX -key expires 3600
assert_eq "8 REGISTERs from 8 sources succeed" 0 $?
assert_eq "8 answered 200" 8 "$(grep -c '^SIP/2.0 200 OK' "$T/reg.msg")"
assert_match "the 200s list contacts with the reloaded cap" ';expires=(77|76)' "$(grep -E '^Contact: ' "$T/reg.msg")"
assert_eq "no contact in any 200 kept the old cap (3600), whichever worker answered" "" \
	"$(grep -E '^Contact: .*;expires=' "$T/reg.msg" | tr -d '\r' | grep -Ev ';expires=(77|76)$')"

# --- revocation: 30 calls held from 30 sources; one DELETE ends them all, on both workers
bg_sipp gw_hold -sf "$SIPP_DIR/gateway_uas.xml" -i 127.0.0.2 -p "$GW_PORT" -m 30; gw=$!
sleep 0.3
bg_sipp held -sf "$SIPP_DIR/pbx_call_hold.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.1 -p "$(free_port)" \
	-t un -max_socket 200 -r 30 -m 30 -s 15551234567 $PBX; held=$!
wait_for sh -c "[ \"\$(curl -s http://127.0.0.1:$API_PORT/metrics | sed -n 's/^sipauthd_calls_active //p')\" = 30 ]"
assert_eq "30 calls up" 30 "$(calls_active)"
n=$(curl -s -H "Authorization: Bearer $API_KEY" "$API/calls" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["data"]))')
assert_eq "the calls API lists the calls of both workers" 30 "$n"
code=$(curl -s -o /dev/null -w '%{http_code}' -X DELETE -H "Authorization: Bearer $API_KEY" "$API/credentials/$CRED")
assert_eq "credential deleted" 204 "$code"
wait "$held"
assert_eq "the PBX got a BYE for each of its 30 calls and answered it" 0 $?
wait "$gw"
assert_eq "the gateway got a BYE for each of its 30 calls" 0 $?
assert_eq "30 calls counted revoked" 30 "$(metric calls_revoked_total)"
# bye_rate 20/s is the process's: the gateway's 30 BYEs, from both workers, span at least 29/20 s
# (two workers pacing apart would send them in half that)
spread=$(python3 - "$T/gw_hold.msg" <<'PY'
import re, sys
from datetime import datetime
stamps, stamp = [], None
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r"^-{10,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)", line)
    if m:
        stamp = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f")
    elif line.startswith("BYE ") and stamp:
        stamps.append(stamp)
        stamp = None
print(len(stamps), int((max(stamps) - min(stamps)).total_seconds() * 1000) if stamps else 0)
PY
)
assert_eq "the gateway got 30 BYEs" 30 "${spread% *}"
if [ "${spread#* }" -ge 1200 ]; then pass "paced together at bye_rate: first to last BYE ${spread#* } ms"
else fail "the gateway's BYEs came in ${spread#* } ms: faster than bye_rate 20/s allows"; fi
assert_eq "none left" 0 "$(calls_active)"

# --- 16 PBXs registered over TCP, each on a connection of its own (the kernel spreads the
# accepts over both workers' listeners); the gateway calls each trunk: the INVITE, the ACK
# and the BYE go down each PBX's own connection, through the worker that holds it
pw=tcp_pbx_password_123
for i in $(seq 1 16); do
	tr=$("$SIPAUTHCTL" --store "$STORE" trunk create --account "$ACC" --name "tcp$i")
	printf '%s\n' "$pw" | "$SIPAUTHCTL" --store "$STORE" credential create --trunk "$tr" --username "pbx$i" \
		--password-stdin >/dev/null
	spawn "$T/tcp$i.json" $SIPCLIENT pbx --server "127.0.0.1:$SIP_PORT" --transport tcp --local-ip 127.0.0.1 \
		--host "trunk-$tr.sip.tryvox.io" --user "pbx$i" --password "$pw" --algorithms MD5 --expires 120 \
		--timeout 60 --wait 60
	echo "$tr" >"$T/tcp$i.trunk"
done
for i in $(seq 1 16); do
	wait_for grep -q '"event":"registered","status":200' "$T/tcp$i.json" || fail "PBX $i did not register over TCP"
done
sends0=$(metric sip_worker_sends_total)
ok=0
for i in $(seq 1 16); do
	run_sipp "in$i" -sf "$SIPP_DIR/gateway_call.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.2 -p "$(free_port 127.0.0.2)" \
		-m 1 -s "pbx$i" -key trunk_host "trunk-$(cat "$T/tcp$i.trunk").sip.tryvox.io" -d 100 && ok=$((ok + 1))
done
assert_eq "the gateway's 16 calls were answered by the 16 PBXs over TCP, ACKed and ended" 16 "$ok"
got=0
for i in $(seq 1 16); do
	[ "$(grep -c '"event":"request","method":"\(INVITE\|ACK\|BYE\)"' "$T/tcp$i.json")" = 3 ] && got=$((got + 1))
done
assert_eq "each PBX got its INVITE, ACK and BYE on its own connection" 16 "$got"
sends=$(($(metric sip_worker_sends_total) - sends0))
echo "sends through the other worker's connection: $sends"
assert_match "some went through the worker that holds the PBX's connection" "^[1-9][0-9]*$" "$sends"

# --- a stop with calls up on both workers: every call is saved, and restored after the restart
CRED=$(printf '%s\n' "$SIP_PASS" | "$SIPAUTHCTL" --store "$STORE" credential create --trunk "$TRUNK" \
	--username "$SIP_USER" --password-stdin | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
bg_sipp gw_saved -sf "$SIPP_DIR/gateway_uas.xml" -i 127.0.0.2 -p "$GW_PORT" -m 20; gw=$!
sleep 0.3
SIPP_BG_TIMEOUT=60 bg_sipp saved -sf "$SIPP_DIR/pbx_call_hold.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.1 \
	-p "$(free_port)" -t un -max_socket 200 -r 20 -m 20 -s 15551234567 $PBX; saved=$!
wait_for sh -c "[ \"\$(curl -s http://127.0.0.1:$API_PORT/metrics | sed -n 's/^sipauthd_calls_active //p')\" = 20 ]"
assert_eq "20 calls up before the stop" 20 "$(calls_active)"
stop "$SIPAUTHD_PID"
assert_match "both workers' calls were saved" "event=calls_saved count=20" "$(cat "$T/sipauthd.log")"
spawn "$T/sipauthd2.log" "$SIPAUTHD" --config "$T/sipauthd.conf"
SIPAUTHD_PID=$!
wait_for grep -q "event=started" "$T/sipauthd2.log"
assert_match "and restored at start" "event=calls_restored count=20 refused=0" "$(cat "$T/sipauthd2.log")"
assert_eq "20 calls up after the restart" 20 "$(calls_active)"
code=$(curl -s -o /dev/null -w '%{http_code}' -X DELETE -H "Authorization: Bearer $API_KEY" "$API/credentials/$CRED")
assert_eq "their credential deleted" 204 "$code"
wait "$saved"
assert_eq "the restored calls end with a BYE to the PBX" 0 $?
wait "$gw"
assert_eq "... and to the gateway" 0 $?
assert_eq "20 restored calls counted revoked" 20 "$(metric calls_revoked_total)"
finish
