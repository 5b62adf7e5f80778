#!/bin/sh
# ipv6.sh: a PBX on IPv6 behind sipauthd listening on both families, the gateway on IPv4. The
# gateway's calls reach the PBX over UDP and TCP from the IPv6 listener (a datagram to ::1 went
# out of the IPv4 socket and failed; over TCP the Via and Record-Route named the IPv4
# listener, which the PBX cannot reach), and the PBX's BYE along that Record-Route ends the call.
. "$top_srcdir/test/lib.sh"
need sipp
python3 -c 'import socket; socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).bind(("::1", 0))' 2>/dev/null \
	|| skip "no IPv6 loopback (::1) here"
setup_store || { fail "store setup"; finish; }
# a port free on 127.0.0.1 and on ::1
for _ in 1 2 3 4 5 6 7 8 9 10; do
	SIP_PORT=$(free_port 127.0.0.1)
	python3 -c 'import socket, sys
for k in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
    socket.socket(socket.AF_INET6, k).bind(("::1", int(sys.argv[1])))' "$SIP_PORT" 2>/dev/null && break
done
GW_PORT=$(free_port 127.0.0.2)
cat >"$T/sipauthd.conf" <<CONF
[sip]
listen = udp:127.0.0.1:$SIP_PORT, tcp:127.0.0.1:$SIP_PORT, udp:[::1]:$SIP_PORT, tcp:[::1]:$SIP_PORT
domain = sip.tryvox.io
[upstream]
gateway = udp:127.0.0.2:$GW_PORT
trusted = 127.0.0.2/32
[auth]
algorithms = MD5
[store]
path = $STORE
[log]
level = debug
CONF
spawn "$T/sipauthd.log" "$SIPAUTHD" --config "$T/sipauthd.conf"
wait_for grep -q "event=started" "$T/sipauthd.log" || { fail "sipauthd did not start"; finish; }

n=0
for proto in udp tcp; do
	n=$((n + 1))
	# the PBX registers from ::1 and takes one call, then hangs up itself along the Record-Route
	$SIPCLIENT pbx --server "[::1]:$SIP_PORT" --transport "$proto" --local-ip ::1 --host "$TRUNK_HOST" \
		--user "$SIP_USER" --password "$SIP_PASS" --expires 300 --calls 1 --wait 10 --hangup 1 \
		>"$T/pbx_$proto.json" &
	pbx=$!
	_pids="$_pids $pbx"
	wait_for grep -q '"event":"registered","status":200' "$T/pbx_$proto.json" || fail "the PBX ($proto) did not register"
	run_sipp "gw_$proto" -m 1 -sf "$SIPP_DIR/gateway_call_hold.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.2 \
		-p "$(free_port 127.0.0.2)" -s "$SIP_USER" -key trunk_host "$TRUNK_HOST"
	assert_eq "the gateway's call reaches the IPv6 PBX ($proto), which hangs up: the gateway gets its BYE" 0 $?
	wait "$pbx"
	invite=$(grep '"method":"INVITE"' "$T/pbx_$proto.json")
	assert_match "the INVITE's top Via names our IPv6 listener ($proto)" \
		"\"via\":\[\"SIP/2.0/$(echo "$proto" | tr a-z A-Z) \[::1\]:$SIP_PORT;" "$invite"
	assert_match "its Record-Route names the IPv6 listener for the PBX's side ($proto)" \
		"\"record-route\":\[\"<sip:\[::1\]:$SIP_PORT;(transport=tcp;)?lr>\"" "$invite"
	assert_eq "the call ended with the PBX's BYE ($proto)" "$n" "$(grep -c 'event=call_end .* reason=bye' "$T/sipauthd.log")"
	# the next round's PBX is the trunk's latest registration
	sleep 0.2
done
assert_nomatch "no send failed" "event=send_failed" "$(cat "$T/sipauthd.log")"
finish
