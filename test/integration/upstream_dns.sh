#!/bin/sh
# upstream_dns.sh: named gateways (issue 13) resolved through a real DNS server: dnsmasq on a
# loopback address serving NAPTR, SRV and A records (at the end it goes away: the last SRV
# answer's gateways stay in use). SRV priority order, a 503 and a gateway gone
# behind SRV, weights spreading calls, NAPTR leading to SRV, a name that does not resolve (503 and
# one log line, the loop still serving), a TTL expiry moving calls to the new address, a trusted
# source given by name, a Route naming sipauthd by the trunk host, and a gateway record-routing
# by its name (a gateway's name, and a name nothing else resolves: the request waits for DNS).
# With two workers, record-routing SBCs by name: a BYE handed to its call's worker still waits for DNS.
# sipp plays the PBX and two gateways (127.0.0.2, 127.0.0.3); their message traces say which
# gateway got each call.
. "$top_srcdir/test/lib.sh"
need sipp
DNSMASQ=$(command -v dnsmasq || echo /usr/sbin/dnsmasq)
[ -x "$DNSMASQ" ] || skip "dnsmasq is not installed (Debian dnsmasq-base)"
setup_store || { fail "store setup"; finish; }
PBX_ARGS="-au $SIP_USER -ap $SIP_PASS -key trunk_host $TRUNK_HOST"

SIPP_TIMEOUT=60 SIPP_BG_TIMEOUT=90   # DNS answers and failovers take their time
invites() { grep -c '^INVITE ' "$T/$1.msg" 2>/dev/null || echo 0; }
pbx_call() {
	name=$1; shift
	run_sipp "$name" -sf "$SIPP_DIR/pbx_call.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.1 -p "$(free_port 127.0.0.1)" \
		-s 15551234567 $PBX_ARGS -d 100 "$@"
}

# one port free on both gateway addresses, so that a name can move from one to the other
while :; do
	GP=$(free_port 127.0.0.2)
	python3 -c "import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('127.0.0.3', $GP))" \
		2>/dev/null && break
done
G1=$GP; G2=$GP
DNS_ADDR=127.0.0.35
DNS_PORT=$(free_port $DNS_ADDR)
cat >"$T/hosts" <<HOSTS
127.0.0.2 gw1.test
127.0.0.3 gw2.test
127.0.0.2 moving.test
127.0.0.2 gw-in.test
127.0.0.2 edge.test
127.0.0.5 multi.test
127.0.0.2 multi.test
::1 dual.test
127.0.0.2 dual.test
$(for i in $(seq 1 20); do echo "127.0.0.1 sbc$i.test"; done)
HOSTS
spawn "$T/dnsmasq.log" "$DNSMASQ" --no-daemon --port="$DNS_PORT" --listen-address=$DNS_ADDR --bind-interfaces \
	--no-resolv --no-hosts --conf-file=/dev/null --pid-file="$T/dnsmasq.pid" --user=root --log-queries \
	--log-facility=- --local=/test/ --local-ttl=2 --addn-hosts="$T/hosts" \
	--srv-host=_sip._udp.carrier.test,gw1.test,$G1,10,0 \
	--srv-host=_sip._udp.carrier.test,gw2.test,$G2,20,0 \
	--srv-host=_sip._udp.weighted.test,gw1.test,$G1,10,50 \
	--srv-host=_sip._udp.weighted.test,gw2.test,$G2,10,50 \
	--naptr-record=naptr.test,10,10,s,SIP+D2U,,_sip._udp.pointed.test \
	--srv-host=_sip._udp.pointed.test,gw2.test,$G2,10,0
DNSMASQ_PID=$!
wait_for sh -c "grep -q 'started' '$T/dnsmasq.log'" || { cat "$T/dnsmasq.log"; fail "dnsmasq did not start"; finish; }

# daemon GATEWAY [EXTRA]: (re)start sipauthd with this gateway value and our DNS server
daemon() {
	[ -n "${SIPAUTHD_PID:-}" ] && stop "$SIPAUTHD_PID" && cat "$T/sipauthd.log" >>"$T/all.log"
	start_sipauthd "MD5" "[upstream]
gateway = $1
trusted = 127.0.0.2/32, 127.0.0.3/32
failover_timeout_ms = 1000
[dns]
servers = $DNS_ADDR:$DNS_PORT
${2:-}" || { fail "sipauthd did not start"; finish; }
}

# ---- 1. SRV priority: the call goes to the priority-10 gateway
daemon "sip:carrier.test"
wait_for grep -q "event=gateway_address name=gw2.test" "$T/sipauthd.log"
assert_match "the SRV answer names two targets" "event=gateway_srv name=carrier.test targets=2" "$(cat "$T/sipauthd.log")"
bg_sipp srv_gw1 -sf "$SIPP_DIR/gateway_uas.xml" -i 127.0.0.2 -p "$G1" -m 1
gw1=$!
bg_sipp srv_gw2 -sf "$SIPP_DIR/gateway_uas.xml" -i 127.0.0.3 -p "$G2"
gw2=$!
sleep 0.3
pbx_call srv_call -m 1
assert_eq "a call to sip:carrier.test completes" 0 $?
wait "$gw1"; assert_eq "the priority-10 gateway (gw1.test) took it" 0 $?

# ---- 2. a 503 from the first SRV target: the second completes the call
bg_sipp srv_503 -sf "$SIPP_DIR/gateway_503.xml" -i 127.0.0.2 -p "$G1" -m 1
gw1=$!
sleep 0.3
pbx_call srv_call503 -m 1
assert_eq "the call completes after the first SRV target's 503" 0 $?
wait "$gw1"; assert_eq "the first target got its INVITE and ACK" 0 $?
assert_eq "the second target (gw2.test) took its first call" 1 "$(invites srv_gw2)"
assert_match "logged as a failover on 503" "event=failover reason=503 from=udp:127.0.0.2:$G1 to=udp:127.0.0.3:$G2" \
	"$(cat "$T/sipauthd.log")"

# ---- 3. the first SRV target gone: the second answers within a few seconds
t0=$(date +%s%N)
pbx_call srv_gone -m 1
rc=$?
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
assert_eq "the call completes with the first SRV target gone" 0 $rc
if [ "$ms" -lt 3000 ]; then pass "through the second in $ms ms"; else fail "took $ms ms"; fi
assert_eq "the second target took its second call" 2 "$(invites srv_gw2)"
stop "$gw2"

# ---- 4. weights: two targets of equal priority and weight share 30 calls
daemon "sip:weighted.test"
wait_for grep -q "event=gateway_address name=gw2.test" "$T/sipauthd.log"
bg_sipp w_gw1 -sf "$SIPP_DIR/gateway_uas.xml" -i 127.0.0.2 -p "$G1"
gw1=$!
bg_sipp w_gw2 -sf "$SIPP_DIR/gateway_uas.xml" -i 127.0.0.3 -p "$G2"
gw2=$!
sleep 0.3
pbx_call w_calls -m 30 -r 10
assert_eq "30 calls to sip:weighted.test complete" 0 $?
stop "$gw1"; stop "$gw2"
n1=$(invites w_gw1); n2=$(invites w_gw2)
assert_eq "every call reached one of the two" 30 $((n1 + n2))
# with weights 50/50 fewer than 5 of 30 on one side has a probability under 0.0004
if [ "$n1" -ge 5 ] && [ "$n2" -ge 5 ]; then pass "weights spread the calls: $n1 and $n2"; else fail "weights: $n1 and $n2"; fi

# ---- 5. NAPTR: naptr.test points at _sip._udp.pointed.test, whose only target is gw2.test
daemon "sip:naptr.test"
wait_for grep -q "event=gateway_address name=gw2.test" "$T/sipauthd.log"
bg_sipp n_gw2 -sf "$SIPP_DIR/gateway_uas.xml" -i 127.0.0.3 -p "$G2" -m 1
gw2=$!
sleep 0.3
pbx_call n_call -m 1
assert_eq "a call to sip:naptr.test completes" 0 $?
wait "$gw2"; assert_eq "through the NAPTR's SRV target (gw2.test)" 0 $?
assert_match "the NAPTR was asked" "query\[NAPTR\] naptr.test" "$(cat "$T/dnsmasq.log")"

# ---- 6. a name that does not resolve: 503 to the PBX, one clear log line, the loop goes on
daemon "udp:nx.test:5060"
wait_for grep -q "event=dns_failed name=nx.test" "$T/sipauthd.log"
pbx_call nx_call -m 1
assert_match "the PBX gets 503" "SIP/2.0 503 Service Unavailable" "$(cat "$T/nx_call.msg")"
assert_match "the failure is one clear line" \
	"event=dns_failed name=nx.test type=A/AAAA reason=\"Domain name not found\"" "$(cat "$T/sipauthd.log")"
assert_match "the 503 says why" "event=reject status=503 reason=\"gateway name does not resolve\" method=INVITE" \
	"$(cat "$T/sipauthd.log")"
# that 503 comes after the credentials were accepted: a transaction keeps it, so the INVITE sent
# again (its 503 lost) gets it again, not a new challenge for a nonce count used twice
sipc invite --host "$TRUNK_HOST" --user "$SIP_USER" --password "$SIP_PASS" --algorithms MD5 --timeout 2 \
	--lose-final >"$T/nx_lost.json"
assert_eq "the INVITE sent again after that 503 was lost gets the 503 again" "407 503 503" \
	"$(json_get '" ".join(str(r["status"]) for r in resp)' <"$T/nx_lost.json")"
run_sipp nx_reg -sf "$SIPP_DIR/pbx_register.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.1 -p "$(free_port 127.0.0.1)" \
	-s "$SIP_USER" $PBX_ARGS -key expires 300 -m 1
assert_eq "the daemon still registers the PBX meanwhile" 0 $?

# ---- 7. TTL: moving.test (TTL 2 s) moves from 127.0.0.2 to 127.0.0.3; calls follow
daemon "udp:moving.test:$GP"
wait_for grep -q "event=gateway_address name=moving.test address=127.0.0.2" "$T/sipauthd.log"
bg_sipp m_gw1 -sf "$SIPP_DIR/gateway_uas.xml" -i 127.0.0.2 -p "$G1" -m 1
gw1=$!
bg_sipp m_gw2 -sf "$SIPP_DIR/gateway_uas.xml" -i 127.0.0.3 -p "$G2" -m 1
gw2=$!
sleep 0.3
pbx_call m_call1 -m 1
assert_eq "the first call completes" 0 $?
wait "$gw1"; assert_eq "at the old address" 0 $?
sed -i 's/^127.0.0.2 moving.test/127.0.0.3 moving.test/' "$T/hosts"
kill -HUP "$DNSMASQ_PID"
wait_for grep -q "event=gateway_address name=moving.test address=127.0.0.3" "$T/sipauthd.log"
assert_match "after the TTL the new address is taken" "event=gateway_address name=moving.test address=127.0.0.3 port=$GP ttl=2" \
	"$(cat "$T/sipauthd.log")"
pbx_call m_call2 -m 1
assert_eq "the next call completes" 0 $?
wait "$gw2"; assert_eq "at the new address" 0 $?

# ---- 8. trusted by name: gw-in.test (127.0.0.2) calls the trunk unchallenged, 127.0.0.4 does not;
# a PBX whose outbound proxy is the trunk host sends Route: <sip:TRUNK_HOST:PORT;lr>: that is us
daemon "udp:127.0.0.3:$G2" "[upstream]
trusted = gw-in.test"
wait_for grep -q "event=trusted_address name=gw-in.test address=127.0.0.2" "$T/sipauthd.log"
assert_match "the trusted name is resolved" "event=trusted_address name=gw-in.test address=127.0.0.2 port=0 ttl=2" \
	"$(cat "$T/sipauthd.log")"
PBX_PORT=$(free_port 127.0.0.1)
run_sipp t_reg -sf "$SIPP_DIR/pbx_register.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.1 -p "$PBX_PORT" \
	-s "$SIP_USER" $PBX_ARGS -key expires 300 -m 1
assert_eq "the PBX registers" 0 $?
bg_sipp t_pbx -sf "$SIPP_DIR/gateway_uas.xml" -i 127.0.0.1 -p "$PBX_PORT" -m 1
pbx=$!
sleep 0.3
run_sipp t_in -sf "$SIPP_DIR/gateway_call.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.2 -p "$(free_port 127.0.0.2)" \
	-s "$SIP_USER" -key trunk_host "$TRUNK_HOST" -d 100 -m 1
assert_eq "an inbound call from gw-in.test's address reaches the PBX unchallenged" 0 $?
wait "$pbx"; assert_eq "the PBX took it" 0 $?
run_sipp t_stranger -sf "$SIPP_DIR/gateway_call.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.4 -p "$(free_port 127.0.0.4)" \
	-s "$SIP_USER" -key trunk_host "$TRUNK_HOST" -d 100 -m 1
assert_match "the same call from 127.0.0.4 is challenged" "SIP/2.0 407 " "$(cat "$T/t_stranger.msg")"
bg_sipp r_gw2 -sf "$SIPP_DIR/gateway_uas.xml" -i 127.0.0.3 -p "$G2" -m 1
gw2=$!
sleep 0.3
run_sipp r_call -sf "$SIPP_DIR/pbx_call_route.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.1 -p "$(free_port 127.0.0.1)" \
	-s 15551234567 $PBX_ARGS -d 100 -m 1
assert_eq "a call with Route: <sip:TRUNK_HOST:PORT;lr> completes" 0 $?
wait "$gw2"; assert_eq "the gateway took it" 0 $?
assert_nomatch "the Route naming us by the trunk host is removed" "^Route: <sip:$TRUNK_HOST" "$(cat "$T/r_gw2.msg")"
# ---- 9. a gateway that record-routes itself by its name (gw1.test, an SRV target): the PBX's
# ACK and BYE carry Route: <sip:gw1.test:PORT;lr> past ours, read with gw1.test's address
daemon "sip:carrier.test"
wait_for grep -q "event=gateway_address name=gw1.test" "$T/sipauthd.log"
bg_sipp rr_gw1 -sf "$SIPP_DIR/gateway_uas_rr.xml" -i 127.0.0.2 -p "$G1" -m 1 -key rr_host gw1.test
gw1=$!
sleep 0.3
pbx_call rr_call -m 1
assert_eq "a call whose gateway record-routes by name completes" 0 $?
wait "$gw1"; assert_eq "the gateway got the ACK and the BYE through the named Route" 0 $?
assert_match "the PBX's BYE named the gateway in its Route" "^Route: .*<sip:gw1.test:$G1;lr>" \
	"$(grep -A12 '^BYE ' "$T/rr_call.msg")"
assert_nomatch "nothing was refused as leading outside the call" "Route leads outside the call" \
	"$(cat "$T/sipauthd.log")"
# ---- 10. the gateway record-routes by a name nothing here resolves (edge.test; the gateway itself
# is numeric, so no resolver runs): the PBX's ACK and BYE wait while edge.test is asked, then pass
daemon "udp:127.0.0.2:$G1"
assert_nomatch "numeric gateways only: no resolver at first" "event=dns_started" "$(cat "$T/sipauthd.log")"
bg_sipp edge_gw1 -sf "$SIPP_DIR/gateway_uas_rr.xml" -i 127.0.0.2 -p "$G1" -m 1 -key rr_host edge.test
gw1=$!
sleep 0.3
pbx_call edge_call -m 1
assert_eq "a call whose gateway record-routes by an unknown name completes" 0 $?
wait "$gw1"; assert_eq "the gateway got the ACK and the BYE once edge.test resolved" 0 $?
assert_match "the Route's name was asked" "event=route_name_asked name=edge.test" "$(cat "$T/sipauthd.log")"
assert_match "its address is logged as a Route's, not as a trusted name's" "event=route_address name=edge.test" \
	"$(cat "$T/sipauthd.log")"
assert_nomatch "... never as trusted_address" "event=trusted_address name=edge.test" "$(cat "$T/sipauthd.log")"
assert_match "the resolver started for it" "event=dns_started servers=$DNS_ADDR:$DNS_PORT" "$(cat "$T/sipauthd.log")"
assert_match "dnsmasq was asked for edge.test" "query\[A\] edge.test" "$(cat "$T/dnsmasq.log")"
assert_nomatch "nothing was refused as leading outside the call" "Route leads outside the call" \
	"$(cat "$T/sipauthd.log")"

# ---- 11. two workers; each PBX's SBC record-routes by a name only DNS knows (sbc1.test ..
# sbc20.test, one per call, so that every BYE finds its name unasked): the gateway's BYEs carry
# Route: <sipauthd>, <sip:sbcN.test:PORT;lr>. The calls come from 20 sockets (spread over both
# workers by the kernel), the gateway's BYEs all from one (reaching one worker): those handed to
# their call's worker still wait there for the name, then reach the PBX.
SIPAUTHD_SAVED=$SIPAUTHD
SIPAUTHD="$top_builddir/daemon/sipauthd"   # two workers whatever SA_TEST_WORKERS says
daemon "udp:127.0.0.2:$G1" "[sip]
workers = 2"
SIPAUTHD=$SIPAUTHD_SAVED
assert_match "two workers" "event=workers_started workers=2" "$(cat "$T/sipauthd.log")"
{ echo SEQUENTIAL; for i in $(seq 1 20); do echo "sbc$i.test;"; done; } >"$T/sbc.csv"
bg_sipp sbc_gw -sf "$SIPP_DIR/gateway_uas_bye.xml" -i 127.0.0.2 -p "$G1" -m 20
gw1=$!
sleep 0.3
run_sipp sbc_calls -sf "$SIPP_DIR/pbx_call_hold_rr.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.1 -p "$(free_port 127.0.0.1)" \
	-t un -max_socket 100 -r 10 -m 20 -s 15551234567 $PBX_ARGS -inf "$T/sbc.csv"
assert_eq "20 calls through record-routing SBCs, each hung up by the gateway, all complete" 0 $?
wait "$gw1"; assert_eq "every one of the gateway's BYEs was answered by the PBX" 0 $?
assert_eq "the PBXs got 20 BYEs, each with its SBC's Route left for it" 20 \
	"$(grep -A12 '^BYE ' "$T/sbc_calls.msg" | grep -c '^Route: <sip:sbc[0-9]*.test:[0-9]*;lr>')"
assert_eq "each BYE waited for its SBC's name" 20 "$(grep -c 'event=route_name_asked name=sbc[0-9]*.test' "$T/sipauthd.log")"
assert_nomatch "no BYE was refused as leading outside the call" "Route leads outside the call" \
	"$(cat "$T/sipauthd.log")"

# ---- 11b. a gateway name with several addresses (RFC 3263 §4.4): one where nothing listens
# (127.0.0.5) and the gateway's; and a name with an IPv6 address beside the IPv4 one, which this
# IPv4-only daemon cannot send to. Each call reaches the gateway, whichever address the resolver
# gives first (the gateway probe saw only the first ever tried: 408 after 32 s, or 503 at once for ::1).
daemon "udp:multi.test:$G1"
wait_for grep -q "event=gateway_address name=multi.test" "$T/sipauthd.log"
bg_sipp multi_gw1 -sf "$SIPP_DIR/gateway_uas.xml" -i 127.0.0.2 -p "$G1" -m 2
gw1=$!
sleep 0.3
pbx_call multi_call1 -m 1
assert_eq "a call to a name whose other address is silent completes" 0 $?
pbx_call multi_call2 -m 1
assert_eq "... and a second" 0 $?
wait "$gw1"; assert_eq "both reached the gateway's address" 0 $?
daemon "udp:dual.test:$G1"
wait_for grep -q "event=gateway_address name=dual.test" "$T/sipauthd.log"
bg_sipp dual_gw1 -sf "$SIPP_DIR/gateway_uas.xml" -i 127.0.0.2 -p "$G1" -m 1
gw1=$!
sleep 0.3
pbx_call dual_call -m 1
assert_eq "a call to a name with an IPv6 and an IPv4 address completes on this IPv4-only daemon" 0 $?
wait "$gw1"; assert_eq "... through the IPv4 address" 0 $?
assert_nomatch "nothing was sent to the IPv6 address" "event=send_failed" "$(cat "$T/sipauthd.log")"

# ---- 12. the DNS server goes away while the SRV answer (TTL 2 s) runs out: the SRV question
# fails, which is not "no SRV records" (RFC 3263 §4.2's fall back to carrier.test:5060, which has
# no address): the last answer's gateways stay, and calls go on through them. The same answer
# asked again is not logged again.
daemon "sip:carrier.test"
wait_for grep -q "event=gateway_address name=gw1.test" "$T/sipauthd.log"
bg_sipp out_gw1 -sf "$SIPP_DIR/gateway_uas.xml" -i 127.0.0.2 -p "$G1" -m 2
gw1=$!
sleep 3   # the answer asked again at least once (TTL 2 s)
stop "$DNSMASQ_PID"
pbx_call out_call1 -m 1
assert_eq "a call completes as the DNS server goes" 0 $?
wait_for grep -q "event=dns_failed name=carrier.test type=SRV" "$T/sipauthd.log" ||
	wait_for grep -q "event=dns_failed name=carrier.test type=SRV" "$T/sipauthd.log"
assert_match "the failed SRV question is one line saying the gateways stay" \
	'event=dns_failed name=carrier.test type=SRV reason="[^"]*" retry_ms=5000 hint="the gateways of the last answer stay in use"' \
	"$(cat "$T/sipauthd.log")"
pbx_call out_call2 -m 1
assert_eq "a call after the SRV question failed completes" 0 $?
wait "$gw1"; assert_eq "both went to the SRV answer's first gateway (gw1.test)" 0 $?
assert_nomatch "no call was refused for a name that does not resolve" "gateway name does not resolve" \
	"$(cat "$T/sipauthd.log")"
assert_eq "the SRV answer is logged once, not at each refresh" 1 \
	"$(grep -c 'event=gateway_srv name=carrier.test' "$T/sipauthd.log")"

stop "$SIPAUTHD_PID"
cat "$T/sipauthd.log" >>"$T/all.log"
assert_nomatch "no sanitizer report from any of the daemons" "Sanitizer|runtime error" "$(cat "$T/all.log")"
assert_eq "every daemon stopped cleanly" "$(grep -c 'event=started' "$T/all.log")" "$(grep -c 'event=stopped' "$T/all.log")"
finish
