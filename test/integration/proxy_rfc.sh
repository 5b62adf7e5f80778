#!/bin/sh
# proxy_rfc.sh: RFC 3261 proxy behaviours through the real daemon (test/proxy_rfc.py plays the PBX
# on 127.0.0.1 and the gateway on 127.0.0.2, over UDP): Timer G sends a relayed failure again
# until the caller's ACK; a retransmitted INVITE gets the last provisional; a CANCEL waits for the
# gateway's first provisional; a message without Content-Length gets one on its way; an initial
# request loses the Routes its sender preloaded; a forked second 2xx is a call the PBX can end;
# a strict-routing previous hop is routed as §16.4 says; a PBX whose TCP connection is gone gets
# the gateway's INVITE answered 480 at once (§16.9), and a PBX that reconnects and registers again
# gets the gateway's BYE on its new connection, as does a TCP PBX whose call stays quiet past
# tcp_idle_timeout; a gateway's INVITE moves on to the trunk's older registration when the newer is
# silent or answers 503.
. "$top_srcdir/test/lib.sh"
need python3
need curl
setup_store || { fail "store setup"; finish; }
API_PORT=$(free_port 127.0.0.1)
start_sipauthd "MD5" "[api]
listen = 127.0.0.1:$API_PORT
[limits]
tcp_idle_timeout = 5
[registrar]
failover_timeout_ms = 1000" || { fail "sipauthd did not start"; finish; }
metric() { curl -s "http://127.0.0.1:$API_PORT/metrics" | sed -n "s/^sipauthd_$1 //p"; }

# scenario NAME: runs it; each of its checks is one assertion here
scenario() {
	python3 "$top_srcdir/test/proxy_rfc.py" "$1" --server "127.0.0.1:$SIP_PORT" --gateway "127.0.0.2:$GW_PORT" \
		--host "$TRUNK_HOST" --user "$SIP_USER" --password "$SIP_PASS" >"$T/$1.json" 2>"$T/$1.err"
	assert_eq "scenario $1 ran to its end" "" "$(cat "$T/$1.err")"
	while IFS= read -r line; do
		name=$(printf '%s' "$line" | python3 -c 'import json,sys; print(json.load(sys.stdin)["check"])')
		ok=$(printf '%s' "$line" | python3 -c 'import json,sys; j=json.load(sys.stdin); print(j["ok"])')
		got=$(printf '%s' "$line" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["got"]))')
		assert_eq "$name (got $got)" True "$ok"
	done <"$T/$1.json"
}

scenario timer-g
assert_eq "the metric counts the 486 sent again twice" 2 "$(metric sip_failures_retransmitted_total)"
scenario provisional
scenario cancel-early
scenario cancel-silent
scenario no-length
scenario preloaded
scenario fork
assert_match "the second 2xx made a call of its own" 'event=call_fork call_id="[^"]*" cred=[^ ]* trunk=[^ ]* direction=outbound callee_tag="forkB"' \
	"$(cat "$T/sipauthd.log")"
assert_eq "... and only it (the first one's 2xx again made none)" 1 "$(grep -c 'event=call_fork' "$T/sipauthd.log")"
scenario strict
scenario dead-flow
assert_match "... logged with the flow it could not reach" \
	"event=next_hop_unreachable to=tcp:127.0.0.1:[0-9]+ method=INVITE status=480" "$(cat "$T/sipauthd.log")"
assert_eq "... and counted" 1 "$(metric sip_next_hop_unreachable_total)"
scenario moved-end
assert_match "... the move is logged" "event=call_end_moved call_id=\"gw-[^\"]*\" to=tcp:127.0.0.1:[0-9]+" \
	"$(cat "$T/sipauthd.log")"
scenario quiet-call
scenario inbound-quiet
scenario pbx-503
scenario dead-binding
scenario bye-refused
assert_match "... the refused BYE is logged" \
	'event=call_bye_refused call_id="rfc-[^"]*" cred=[^ ]* trunk=[^ ]* status=420' "$(cat "$T/sipauthd.log")"
assert_eq "... and counted" 1 "$(metric sip_call_byes_refused_total)"
scenario identity
scenario next-binding
assert_match "... the moves are logged" \
	'event=failover reason=timeout from=udp:127.0.0.1:[0-9]+ to=udp:127.0.0.1:[0-9]+ call_id="gw-[^"]*" target=registration' \
	"$(cat "$T/sipauthd.log")"
assert_eq "... and counted" 2 "$(metric sip_inbound_failovers_total)"
assert_eq "every check ran (17 scenarios, 62 checks)" 62 "$(cat "$T"/*.json | grep -c '"check"')"
assert_nomatch "no sanitizer report" "ERROR: (Address|Leak|Undefined)Sanitizer|runtime error" "$(cat "$T/sipauthd.log")"
finish
