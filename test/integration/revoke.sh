#!/bin/sh
# revoke.sh: deleting a credential ends the calls it set up (issue 5): confirmed calls get a BYE on
# both sides within one second, ringing calls get CANCEL upstream and 487 downstream, calls of
# other credentials go on, and the deleted credential can no longer register; the BYEs of many
# calls are paced per destination (bye_rate).
. "$top_srcdir/test/lib.sh"
need sipp
setup_store || { fail "store setup"; finish; }
API_PORT=$(free_port 127.0.0.1)
start_sipauthd "MD5" "[api]
listen = 127.0.0.1:$API_PORT" || { fail "sipauthd did not start"; finish; }
API_KEY=$("$SIPAUTHCTL" --store "$STORE" apikey create --account "$ACC")
API="http://127.0.0.1:$API_PORT/v1/account/$ACC/trunks/$TRUNK"
USER2=pbx-prod-02
PASS2=another_password_456
CRED2=$(printf '%s\n' "$PASS2" | "$SIPAUTHCTL" --store "$STORE" credential create --trunk "$TRUNK" \
	--username "$USER2" --password-stdin | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')

# first_received FILE START_OF_MESSAGE: epoch seconds when sipp received it, or "none"
first_received() {
	python3 - "$1" "$2" <<'PY'
import re, sys, datetime
text = open(sys.argv[1], errors="replace").read()
for block in re.split(r"\n-{20,} ", text):
    head, _, rest = block.partition("\n")
    if "received" in rest.split("\n", 1)[0] and rest.split("\n\n", 1)[-1].startswith(sys.argv[2]):
        t = datetime.datetime.strptime(head.strip()[:26], "%Y-%m-%d %H:%M:%S.%f")
        print("%.3f" % t.replace(tzinfo=datetime.timezone.utc).timestamp()); break
else:
    print("none")
PY
}
# within_1s T0 T1: T1 is set and within one second after T0
within_1s() { python3 -c "import sys; t0,t1=sys.argv[1:]; sys.exit(0 if t1!='none' and 0<=float(t1)-float(t0)<=1.0 else 1)" "$1" "$2"; }
now() { python3 -c 'import time; print("%.3f" % time.time())'; }
PBX1="-au $SIP_USER -ap $SIP_PASS -key trunk_host $TRUNK_HOST"
PBX2="-au $USER2 -ap $PASS2 -key trunk_host $TRUNK_HOST"

# PBX 1 registers (for the inbound call) from PBX_PORT
PBX_PORT=$(free_port 127.0.0.1)
timeout 20 sipp -sf "$SIPP_DIR/pbx_register.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.1 -p "$PBX_PORT" -m 1 -nostdin \
	-s "$SIP_USER" $PBX1 -key expires 300 >/dev/null 2>&1
assert_eq "PBX 1 registers" 0 $?

# phase 1: calls of credential 1 (outbound over UDP and TCP, inbound), one call of credential 2
bg_sipp gw -sf "$SIPP_DIR/gateway_uas.xml" -i 127.0.0.2 -p "$GW_PORT" -m 3; gw=$!  # one UAS serves the three outbound calls
bg_sipp pbx_uas -m 1 -sf "$SIPP_DIR/gateway_uas.xml" -i 127.0.0.1 -p "$PBX_PORT"; pbx_uas=$!
sleep 0.3
bg_sipp out_udp -m 1 -sf "$SIPP_DIR/pbx_call_hold.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.1 -p "$(free_port)" -s 15550000001 $PBX1
out_udp=$!
bg_sipp out_tcp -m 1 -sf "$SIPP_DIR/pbx_call_hold.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.1 -p "$(free_port)" -t t1 -s 15550000002 $PBX1
out_tcp=$!
bg_sipp inbound -m 1 -sf "$SIPP_DIR/gateway_call_hold.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.2 -p "$(free_port 127.0.0.2)" \
	-s "$SIP_USER" -key trunk_host "$TRUNK_HOST"
inbound=$!
bg_sipp other -m 1 -sf "$SIPP_DIR/pbx_call.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.1 -p "$(free_port)" -s 15550000003 $PBX2 -d 2500
other=$!
for _ in $(seq 1 50); do
	[ "$(grep -c "event=call_start" "$T/sipauthd.log")" -ge 4 ] && break
	sleep 0.1
done
assert_eq "four calls are up (3 of credential 1, 1 of credential 2)" 4 "$(grep -c "event=call_start" "$T/sipauthd.log")"

t0=$(now)
"$SIPAUTHCTL" --store "$STORE" credential delete --trunk "$TRUNK" --id "$CRED"
assert_eq "sipauthctl deletes credential 1 while the daemon runs" 0 $?
wait "$out_udp"; assert_eq "PBX (UDP) got a BYE for its call and answered it" 0 $?
wait "$out_tcp"; assert_eq "PBX (TCP) got a BYE for its call and answered it" 0 $?
wait "$inbound"; assert_eq "gateway got a BYE for its inbound call and answered it" 0 $?
wait "$pbx_uas"; assert_eq "registered PBX got a BYE for the inbound call" 0 $?
wait "$other"; assert_eq "the call of credential 2 went on and ended with its own BYE" 0 $?
wait "$gw"; assert_eq "gateway got a BYE for each of the three outbound calls" 0 $?
for f in out_udp out_tcp inbound pbx_uas; do
	t1=$(first_received "$T/$f.msg" BYE)
	within_1s "$t0" "$t1" && pass "$f: BYE within one second ($t0 -> $t1)" || fail "$f: BYE not within one second ($t0 -> $t1)"
done
assert_eq "gateway received 3 BYEs" 3 "$(grep -c '^BYE sip:' "$T/gw.msg")"
assert_match "the BYEs say why" 'Reason: SIP;cause=403;text="credential revoked"' "$(cat "$T/gw.msg")"
assert_match "the daemon logged the revocation" "event=credential_revoked cred=$CRED calls_ended=3" "$(cat "$T/sipauthd.log")"

# the deleted credential can no longer register
timeout 20 sipp -sf "$SIPP_DIR/pbx_register_fail.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.1 -p "$(free_port)" -m 1 -nostdin \
	-s "$SIP_USER" $PBX1 >/dev/null 2>&1
assert_eq "REGISTER with the deleted credential is refused (401 again)" 0 $?

# phase 2: a ringing call of credential 2 gets CANCEL upstream and 487 downstream
bg_sipp gw_early -m 1 -sf "$SIPP_DIR/gateway_cancelled.xml" -i 127.0.0.2 -p "$GW_PORT"; gw_early=$!
sleep 0.3
bg_sipp early -m 1 -sf "$SIPP_DIR/pbx_call_early.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.1 -p "$(free_port)" -s 15550000004 $PBX2
early=$!
wait_for grep -q "180 Ringing" "$T/early.msg" || fail "early call did not ring"
# the ringing INVITE is listed under the Call-ID its transaction kept of the request
early_cid=$(sed -n 's/^Call-ID: *//p' "$T/early.msg" | head -1 | tr -d '\r')
assert_eq "GET calls lists the ringing call under the PBX's Call-ID, early" "1 ${early_cid:-none} $CRED2 outbound early" \
	"$(curl -s -H "Authorization: Bearer $API_KEY" "$API/calls" | python3 -c 'import json,sys; d=json.load(sys.stdin)["data"]; print(len(d), d[0]["call_id"], d[0]["credential_id"], d[0]["direction"], d[0]["state"])')"
"$SIPAUTHCTL" --store "$STORE" credential delete --trunk "$TRUNK" --id "$CRED2"
wait "$early"; assert_eq "the ringing PBX got 487 and sent its ACK" 0 $?
wait "$gw_early"; assert_eq "the gateway got CANCEL for the ringing call" 0 $?

# phase 3: the API lists the call, DELETE over the API ends it within one second
USER3=pbx-prod-03
PASS3=third_password_789
CRED3=$(curl -s -H "Authorization: Bearer $API_KEY" -H 'Content-Type: application/json' \
	-d "{\"username\":\"$USER3\",\"password\":\"$PASS3\"}" "$API/credentials" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
bg_sipp gw3 -m 1 -sf "$SIPP_DIR/gateway_uas.xml" -i 127.0.0.2 -p "$GW_PORT"; gw3=$!
sleep 0.3
bg_sipp out3 -m 1 -sf "$SIPP_DIR/pbx_call_hold.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.1 -p "$(free_port)" -s 15550000005 \
	-au "$USER3" -ap "$PASS3" -key trunk_host "$TRUNK_HOST"
out3=$!
wait_for grep -q "event=call_start.*cred=$CRED3" "$T/sipauthd.log" || fail "call of credential 3 did not start"
calls=$(curl -s -H "Authorization: Bearer $API_KEY" "$API/calls")
assert_eq "GET calls lists the call with its credential, direction and state" "1 $CRED3 outbound confirmed" \
	"$(printf '%s' "$calls" | python3 -c 'import json,sys; d=json.load(sys.stdin)["data"]; print(len(d), d[0]["credential_id"], d[0]["direction"], d[0]["state"])')"
t0=$(now)
assert_eq "DELETE over the API answers 204" 204 \
	"$(curl -s -o /dev/null -w '%{http_code}' -X DELETE -H "Authorization: Bearer $API_KEY" "$API/credentials/$CRED3")"
wait "$out3"; assert_eq "PBX got the BYE after the API delete" 0 $?
wait "$gw3"; assert_eq "gateway got the BYE after the API delete" 0 $?
t1=$(first_received "$T/out3.msg" BYE)
within_1s "$t0" "$t1" && pass "API delete: BYE within one second ($t0 -> $t1)" || fail "API delete: BYE not within one second ($t0 -> $t1)"
assert_eq "GET calls is empty afterwards" 0 \
	"$(curl -s -H "Authorization: Bearer $API_KEY" "$API/calls" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["data"]))')"
assert_match "metrics count the calls ended by revocation" "sipauthd_calls_revoked_total 5" \
	"$(curl -s "http://127.0.0.1:$API_PORT/metrics")"

# phase 4: the BYEs of a revocation are paced per destination ([proxy] bye_rate, reloaded on
# SIGHUP): at 1 per second, three calls' six BYEs go one to the PBX and one to the gateway at
# once, the other four queued, and the last ones about two seconds later
printf '[proxy]\nbye_rate = 1\n' >>"$T/sipauthd.conf"
kill -HUP "$SIPAUTHD_PID"
wait_for grep -q "event=reloaded" "$T/sipauthd.log" || fail "no reload"
USER4=pbx-prod-04
PASS4=fourth_password_246
CRED4=$(curl -s -H "Authorization: Bearer $API_KEY" -H 'Content-Type: application/json' \
	-d "{\"username\":\"$USER4\",\"password\":\"$PASS4\"}" "$API/credentials" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
bg_sipp gw4 -m 3 -sf "$SIPP_DIR/gateway_uas.xml" -i 127.0.0.2 -p "$GW_PORT"; gw4=$!
sleep 0.3
bg_sipp out4 -m 3 -r 10 -sf "$SIPP_DIR/pbx_call_hold.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.1 -p "$(free_port)" \
	-s 15550000006 -au "$USER4" -ap "$PASS4" -key trunk_host "$TRUNK_HOST"
out4=$!
wait_for sh -c "[ \$(grep -c 'event=call_start.*cred=$CRED4' '$T/sipauthd.log') = 3 ]" || fail "the three calls did not start"
metric() { curl -s "http://127.0.0.1:$API_PORT/metrics" | sed -n "s/^sipauthd_$1 //p"; }
answered0=$(metric 'sip_byes_total{outcome="answered"}')
t0=$(now)
assert_eq "DELETE of the credential with three calls: 204" 204 \
	"$(curl -s -o /dev/null -w '%{http_code}' -X DELETE -H "Authorization: Bearer $API_KEY" "$API/credentials/$CRED4")"
assert_eq "right after it: 4 BYEs wait for their turn" 4 "$(metric sip_byes_queued)"
pending=$(metric sip_byes_pending)   # the two sent at once may be answered by now
if [ "$pending" -ge 4 ] && [ "$pending" -le 6 ]; then pass "$pending of the 6 not answered yet"; else fail "pending: $pending"; fi
wait_for sh -c "curl -s http://127.0.0.1:$API_PORT/metrics | grep -q '^sipauthd_sip_byes_pending 0'"
t1=$(now)
assert_eq "all six answered, none retransmitted or timed out" "6 0 0" \
	"$(( $(metric 'sip_byes_total{outcome="answered"}') - answered0 )) $(metric 'sip_byes_total{outcome="timeout"}') $(metric sip_bye_retransmissions_total)"
python3 -c "import sys; sys.exit(0 if float(sys.argv[2]) - float(sys.argv[1]) >= 1.9 else 1)" "$t0" "$t1" &&
	pass "paced: the last BYE went about two seconds after the first ($t0 -> $t1)" ||
	fail "not paced: every BYE answered within $t0 -> $t1"
wait "$out4"; assert_eq "the PBX got its three BYEs" 0 $?
wait "$gw4"; assert_eq "the gateway got its three BYEs" 0 $?
finish
