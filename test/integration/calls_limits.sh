#!/bin/sh
# calls_limits.sh: the call table is bounded (503 when full, not growth without limit), calls
# whose BYE never comes are ended at max_call_age with a BYE to both sides, and an inbound call
# to a PBX registered over TCP is tracked and ended on revocation like the others.
. "$top_srcdir/test/lib.sh"
need sipp
setup_store || { fail "store setup"; finish; }
start_sipauthd "MD5" "[proxy]
max_calls = 1
max_call_age = 5" || { fail "sipauthd did not start"; finish; }
PBX="-au $SIP_USER -ap $SIP_PASS -key trunk_host $TRUNK_HOST"

# one call fills the table; a second INVITE gets 503 with Retry-After
bg_sipp gw -m 1 -sf "$SIPP_DIR/gateway_uas.xml" -i 127.0.0.2 -p "$GW_PORT"; gw=$!
sleep 0.3
bg_sipp held -m 1 -sf "$SIPP_DIR/pbx_call_hold.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.1 -p "$(free_port)" -s 15550000001 $PBX
held=$!
wait_for grep -q "event=call_start" "$T/sipauthd.log" || fail "first call did not start"
sipc invite --host "$TRUNK_HOST" --user "$SIP_USER" --password "$SIP_PASS" --algorithms MD5 --timeout 2 \
	--lose-final >"$T/second.json"
assert_eq "with the call table full, a new authenticated INVITE gets 503" 503 \
	"$(json_get 'final.get("final_status")' <"$T/second.json")"
assert_eq "... and the same 503 again when it is sent again, its 503 lost (kept, not a new challenge)" \
	"407 503 503" "$(json_get '" ".join(str(r["status"]) for r in resp)' <"$T/second.json")"
assert_eq "the 503 says when to retry" "['30']" "$(json_get 'resp[-1]["headers"].get("retry-after")' <"$T/second.json")"

# nobody hangs up: at max_call_age (5 s, checked every 5 s) both sides get a BYE
wait "$held"; assert_eq "the PBX got a BYE when the call reached max_call_age" 0 $?
wait "$gw"; assert_eq "the gateway got a BYE when the call reached max_call_age" 0 $?
assert_match "the reaping is logged" "event=call_end .* reason=max_call_age" "$(cat "$T/sipauthd.log")"
assert_match "the BYE says why" 'Reason: SIP;cause=408;text="maximum call duration"' "$(cat "$T/gw.msg")"

# inbound over TCP: the PBX registers over TCP, takes a call, and the call ends on revocation
PBX_PORT=$(free_port 127.0.0.1)
timeout 20 sipp -sf "$SIPP_DIR/pbx_register.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.1 -p "$PBX_PORT" -t t1 -m 1 -nostdin \
	-s "$SIP_USER" $PBX -key expires 300 >/dev/null 2>&1
assert_eq "PBX registers over TCP" 0 $?
assert_match "the binding is a TCP one" "event=register .* proto=tcp added=1" "$(cat "$T/sipauthd.log")"
bg_sipp pbx_tcp -m 1 -sf "$SIPP_DIR/gateway_uas.xml" -i 127.0.0.1 -p "$PBX_PORT" -t t1; pbx=$!
sleep 0.3
bg_sipp inbound -m 1 -sf "$SIPP_DIR/gateway_call_hold.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.2 -p "$(free_port 127.0.0.2)" \
	-s "$SIP_USER" -key trunk_host "$TRUNK_HOST"
inbound=$!
for _ in $(seq 1 50); do [ "$(grep -c 'event=call_start' "$T/sipauthd.log")" -ge 2 ] && break; sleep 0.1; done
assert_match "the inbound call to the TCP-registered PBX is tracked" "event=call_start .* direction=inbound" \
	"$(cat "$T/sipauthd.log")"
"$SIPAUTHCTL" --store "$STORE" credential delete --trunk "$TRUNK" --id "$CRED"
wait "$pbx"; assert_eq "the PBX (TCP) got the BYE for the inbound call" 0 $?
wait "$inbound"; assert_eq "the gateway got the BYE for the inbound call" 0 $?
assert_match "the PBX side of the call was TCP" "TCP message received" "$(cat "$T/pbx_tcp.msg")"
finish
