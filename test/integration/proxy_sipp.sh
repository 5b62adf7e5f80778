#!/bin/sh
# proxy_sipp.sh: sipp as the customer PBX (127.0.0.1) and as the PSTN gateway (127.0.0.2):
# register, calls out and in over UDP and TCP, CANCEL, wrong password.
# sipp 3.6.1 computes MD5 only and answers the first challenge, so the daemon offers MD5 here.
. "$top_srcdir/test/lib.sh"
need sipp
setup_store || { fail "store setup"; finish; }
start_sipauthd "MD5" || { fail "sipauthd did not start"; finish; }

# run_sipp NAME ARGS...: sipp in the foreground, 20 s at most; its exit status
run_sipp() {
	name=$1; shift
	timeout 20 sipp "$@" -m 1 -nostdin -trace_err -error_file "$T/$name.err" \
		-trace_msg -message_file "$T/$name.msg" >"$T/$name.out" 2>&1
}
# bg_sipp NAME ARGS...: sipp in the background (pid in $!)
bg_sipp() {
	name=$1; shift
	spawn "$T/$name.out" timeout 30 sipp "$@" -m 1 -nostdin -trace_err -error_file "$T/$name.err" \
		-trace_msg -message_file "$T/$name.msg"
}
PBX_ARGS="-au $SIP_USER -ap $SIP_PASS -key trunk_host $TRUNK_HOST"

# --- REGISTER with MD5 digest over UDP
PBX_PORT=$(free_port 127.0.0.1)
run_sipp reg_udp -sf "$SIPP_DIR/pbx_register.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.1 -p "$PBX_PORT" \
	-s "$SIP_USER" $PBX_ARGS -key expires 300
assert_eq "sipp registers over UDP with MD5 digest" 0 $?
assert_match "the daemon logged the new binding" "event=register cred=$CRED trunk=$TRUNK src=127.0.0.1:$PBX_PORT proto=udp added=1" "$(cat "$T/sipauthd.log")"
assert_match "the 200 OK lists the contact with its expiry" "Contact: <sip:$SIP_USER@127.0.0.1:$PBX_PORT;transport=UDP>;expires=(300|299)" "$(cat "$T/reg_udp.msg")"

# --- wrong password: challenged again, never accepted
run_sipp reg_bad -sf "$SIPP_DIR/pbx_register_fail.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.1 -p "$(free_port 127.0.0.1)" \
	-s "$SIP_USER" -au "$SIP_USER" -ap wrong_password_123 -key trunk_host "$TRUNK_HOST"
assert_eq "a wrong password gets 401 again" 0 $?
assert_match "the failure is logged with its reason" "event=auth_failure reason=bad_password trunk=$TRUNK username=\"$SIP_USER\" method=REGISTER" "$(cat "$T/sipauthd.log")"

# --- outbound call through to the gateway and back, over UDP then TCP from the PBX
for proto in udp tcp; do
	bg_sipp "gw_$proto" -sf "$SIPP_DIR/gateway_uas.xml" -i 127.0.0.2 -p "$GW_PORT"
	gw=$!
	sleep 0.3
	t=u1; [ "$proto" = tcp ] && t=t1
	# the PBX sends its digest again on the ACK and the BYE (PJSIP-based ones do)
	run_sipp "call_$proto" -sf "$SIPP_DIR/pbx_call_digest_again.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.1 \
		-p "$(free_port 127.0.0.1)" -t "$t" -s 15551234567 $PBX_ARGS -d 300
	assert_eq "PBX ($proto) places an authenticated call, gets 200 and hangs up" 0 $?
	wait "$gw"
	assert_eq "gateway sipp saw INVITE, ACK and BYE for the $proto call" 0 $?
	msg=$(cat "$T/gw_$proto.msg")
	assert_match "forwarded INVITE carries our Record-Route ($proto)" "Record-Route: <sip:127.0.0.1:$SIP_PORT;(transport=tcp;)?lr>" "$msg"
	assert_match "forwarded INVITE has Max-Forwards decremented ($proto)" "Max-Forwards: 69" "$msg"
	assert_eq "the PBX sent its digest on the INVITE, the ACK and the BYE ($proto)" 3 \
		"$(grep -c '^Proxy-Authorization: Digest' "$T/call_$proto.msg")"
	assert_nomatch "our realm's Proxy-Authorization is stripped from each, in the call too ($proto)" \
		"Proxy-Authorization" "$msg"
	assert_match "the PBX's Via carries received and rport ($proto)" "received=127.0.0.1;rport=[0-9]+" "$msg"
done

# --- CANCEL of a ringing call: 200 for the CANCEL, 487 for the INVITE, both sides
bg_sipp gw_cancel -sf "$SIPP_DIR/gateway_cancelled.xml" -i 127.0.0.2 -p "$GW_PORT"
gw=$!
sleep 0.3
run_sipp cancel -sf "$SIPP_DIR/pbx_cancel.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.1 -p "$(free_port 127.0.0.1)" \
	-s 15551234567 $PBX_ARGS
assert_eq "PBX cancels a ringing call and gets 200 + 487" 0 $?
wait "$gw"
assert_eq "gateway got the CANCEL and the ACK for its 487" 0 $?

# --- inbound: the gateway calls the trunk, the call reaches the registered PBX
bg_sipp pbx_uas -sf "$SIPP_DIR/gateway_uas.xml" -i 127.0.0.1 -p "$PBX_PORT"
pbx=$!
sleep 0.3
run_sipp inbound -sf "$SIPP_DIR/gateway_call.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.2 -p "$(free_port 127.0.0.2)" \
	-s "$SIP_USER" -key trunk_host "$TRUNK_HOST" -d 300
assert_eq "gateway's inbound call is answered by the registered PBX" 0 $?
wait "$pbx"
assert_eq "PBX sipp saw the inbound INVITE, ACK and BYE" 0 $?
assert_match "inbound INVITE is sent to the registered contact" "INVITE sip:$SIP_USER@127.0.0.1:$PBX_PORT;transport=UDP SIP/2.0" "$(cat "$T/pbx_uas.msg")"

# --- bindings survive a restart
stop "$SIPAUTHD_PID"
spawn "$T/sipauthd2.log" "$SIPAUTHD" --config "$T/sipauthd.conf"
wait_for grep -q "event=started" "$T/sipauthd2.log"
bg_sipp pbx_uas2 -sf "$SIPP_DIR/gateway_uas.xml" -i 127.0.0.1 -p "$PBX_PORT"
pbx=$!
sleep 0.3
run_sipp inbound2 -sf "$SIPP_DIR/gateway_call.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.2 -p "$(free_port 127.0.0.2)" \
	-s "$SIP_USER" -key trunk_host "$TRUNK_HOST" -d 100
assert_eq "after a restart the registration still routes inbound calls" 0 $?
wait "$pbx"
finish
