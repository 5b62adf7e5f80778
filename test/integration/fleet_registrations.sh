# fleet_registrations.sh: registrations across the nodes of a fleet (issue 12). A PBX registered at
# node B (UDP, TCP, TLS) receives the calls the gateway sends to node A: A relays them to B, which
# sends them down the PBX's own flow; ACK and BYE follow the Record-Route both ways. The API of
# node A lists the fleet's bindings with their owning node. node B killed (-9): within 6 s node A
# no longer relays to it (480, as when no PBX is registered), and a call relayed to it just
# before that gets 480 once B stays silent for 2 s; the PBX registers at A and takes calls there. A stranger's INVITE at node B is refused as on a single host.
. "$top_srcdir/test/lib.sh"
. "$top_srcdir/test/pg_lib.sh"
. "$top_srcdir/test/tls_lib.sh"

fleet_prepare
need sipp

PW=secure_password_here_123
# the nodes connect as a role with only the rights README's "Running a fleet" grants
fleet_db_setup || { fail "the fleet's database"; finish; }
CRED_U=$(cred pbx-udp)
CRED_T=$(cred pbx-tcp)
CRED_S=$(cred pbx-tls)
assert_eq "schema 6 (registrations logged since 3, calls 4, idempotency 5, webhooks 6)" 6 "$(psql_q 'SELECT version FROM schema_version')"
GW_IP=127.0.0.2
GW_PORT=$(free_port $GW_IP)

make_cert server sipauthd-test || { cat "$T/server.openssl.log"; fail "openssl made no certificate"; finish; }
fleet_node A 127.0.0.41
B_TLS_PORT=$(free_port 127.0.0.42)
NODE_LISTEN="tls:127.0.0.42:$B_TLS_PORT" NODE_CONF="[tls]
certificate = $T/server.pem
private_key = $T/server.key" fleet_node B 127.0.0.42
for n in A B; do
	wait_for grep -q "event=cluster_connected" "$T/$n.log" || { cat "$T/$n.log"; fail "node $n did not connect"; finish; }
done
wait_for grep -q "event=cluster_node_seen node=A other=B address=udp:$B_ADDR:$B_PORT" "$T/A.log"
assert_eq "node A knows node B from the heartbeats" 0 $?
wait_for grep -q "event=cluster_node_seen node=B other=A address=udp:$A_ADDR:$A_PORT" "$T/B.log"
assert_eq "node B knows node A" 0 $?

# pbx NAME NODE USER TRANSPORT PORT [ARGS...]: the PBX (127.0.0.1:PORT) registers at NODE (tls: at
# B's TLS port) and takes one inbound call on that flow; its JSON lines in $T/NAME.json, its pid in $!
pbx() {
	_n=$1; _node=$2; _user=$3; _tr=$4; _lp=$5; shift 5
	eval "_addr=\$${_node}_ADDR; _port=\$${_node}_PORT"
	[ "$_tr" = tls ] && _port=$B_TLS_PORT
	spawn "$T/$_n.json" $SIPCLIENT pbx --server "$_addr:$_port" --transport "$_tr" --local-ip 127.0.0.1 \
		--local-port "$_lp" --host "$TRUNK_HOST" --user "$_user" --password "$PW" --algorithms MD5 --expires 120 \
		--timeout 5 --wait 30 "$@"
}
registered() { wait_for grep -q '"event":"registered","status":200' "$T/$1.json"; }
# requests NAME METHOD: how many METHOD requests the PBX received
requests() { grep -c "\"event\":\"request\",\"method\":\"$2\"" "$T/$1.json"; }
# invite_field NAME EXPR: a python expression over the PBX's INVITE event `r`
invite_field() {
	python3 -c '
import json, sys
r = [e for e in map(json.loads, open(sys.argv[1])) if e.get("event") == "request" and e["method"] == "INVITE"][0]
print(eval(sys.argv[2]))' "$T/$1.json" "$2"
}
# gateway NAME SCENARIO NODE: the gateway stand-in calls the trunk at NODE (sipp, exit status)
gateway() {
	eval "_addr=\$${3}_ADDR; _port=\$${3}_PORT"
	run_sipp "$1" -sf "$SIPP_DIR/$2" "$_addr:$_port" -i $GW_IP -p "$GW_PORT" -m 1 -s 15550001111 \
		-key trunk_host "$TRUNK_HOST" -d 300
}
relayed() { curl -s "http://$A_ADDR:$A_API_PORT/metrics" | sed -n 's/^sipauthd_fleet_relayed_total //p'; }

# ---- UDP: the PBX registers at B, the gateway calls node A, the gateway hangs up ----
PBX_UDP_PORT=$(free_port 127.0.0.1)
pbx udp1 B pbx-udp udp "$PBX_UDP_PORT"; p=$!
registered udp1 || fail "the PBX did not register at B over UDP"
wait_for grep -q "event=cluster_registration node=A owner=B cred=$CRED_U trunk=$TRUNK" "$T/A.log"
assert_eq "node A learnt from the feed that B holds pbx-udp's flow" 0 $?
assert_eq "the database has the binding, owned by B, from the PBX's address" "B|127.0.0.1|$PBX_UDP_PORT|udp" \
	"$(psql_q "SELECT node, source, source_port, transport FROM registrations WHERE credential_id = '$CRED_U'")"
gateway gw1 gateway_call.xml A
assert_eq "UDP: the gateway's call at node A is answered by the PBX at B, ACKed and ended by the gateway's BYE" 0 $?
wait "$p"; assert_eq "the PBX took the call and answered the BYE" 0 $?
assert_eq "the PBX received exactly one INVITE, one ACK and one BYE" "1 1 1" \
	"$(requests udp1 INVITE) $(requests udp1 ACK) $(requests udp1 BYE)"
assert_eq "... the INVITE from node B's address, down the PBX's UDP binding" "127.0.0.42:$B_PORT" "$(invite_field udp1 'r["src"]')"
assert_match "... with B's Via on top of A's" "^SIP/2.0/UDP 127.0.0.42:$B_PORT;branch=[^ ]* SIP/2.0/UDP 127.0.0.41:$A_PORT;branch=" \
	"$(invite_field udp1 '" ".join(r["headers"]["via"][:2])')"
assert_match "... and both nodes in its Record-Route (B, then A)" "^<sip:127.0.0.42:$B_PORT;[^>]*lr[^>]*> <sip:127.0.0.41:$A_PORT;[^>]*lr" \
	"$(invite_field udp1 '" ".join(r["headers"]["record-route"])')"
assert_eq "the ACK and the BYE came from B too" "127.0.0.42:$B_PORT 127.0.0.42:$B_PORT" \
	"$(python3 -c 'import json,sys; print(" ".join(e["src"] for e in map(json.loads, open(sys.argv[1])) if e.get("event") == "request" and e["method"] in ("ACK", "BYE")))' "$T/udp1.json")"
assert_match "node A logged the relay to B" "event=relay method=INVITE call_id=\"[^\"]*\" trunk=$TRUNK cred=$CRED_U owner=B" "$(cat "$T/A.log")"
assert_eq "node A's metric: one request relayed" 1 "$(relayed)"

# the same PBX hangs up: its BYE goes B -> A -> gateway along the route set
pbx udp2 B pbx-udp udp "$PBX_UDP_PORT" --hangup 0.3; p=$!
registered udp2 || fail "the PBX did not register at B again"
gateway gw2 gateway_call_hold.xml A
assert_eq "UDP: the PBX's BYE reaches the gateway through B and A, and its 200 comes back" 0 $?
wait "$p"; assert_eq "the PBX's BYE was answered" 0 $?
assert_eq "the PBX's BYE got 200" "BYE 200" "$(json_get '" ".join(f for f in final["finals"] if f.startswith("BYE"))' <"$T/udp2.json")"
assert_eq "one INVITE again" 1 "$(requests udp2 INVITE)"
assert_match "the gateway got the PBX's BYE from node A" "Via: SIP/2.0/UDP 127.0.0.41:$A_PORT;" \
	"$(sed -n '/^BYE /,/^$/p' "$T/gw2.msg")"

# ---- TCP: the INVITE goes down the PBX's own connection to B ----
pbx tcp1 B pbx-tcp tcp "$(free_port 127.0.0.1)"; p=$!
registered tcp1 || fail "the PBX did not register at B over TCP"
wait_for grep -q "event=cluster_registration node=A owner=B cred=$CRED_T trunk=$TRUNK" "$T/A.log"
assert_eq "node A learnt that B holds pbx-tcp's connection" 0 $?
gateway gw3 gateway_call.xml A
assert_eq "TCP: the gateway's call at node A completes with the PBX registered over TCP at B" 0 $?
wait "$p"; assert_eq "the PBX took the call on its connection and answered the BYE" 0 $?
assert_eq "the PBX received one INVITE, one ACK and one BYE on its connection" "1 1 1" \
	"$(requests tcp1 INVITE) $(requests tcp1 ACK) $(requests tcp1 BYE)"
assert_match "... sent by B over TCP (B's Via on top, then A's over UDP)" \
	"^SIP/2.0/TCP 127.0.0.42:$B_PORT;branch=[^ ]* SIP/2.0/UDP 127.0.0.41:$A_PORT;branch=" \
	"$(invite_field tcp1 '" ".join(r["headers"]["via"][:2])')"
assert_eq "node A's metric: three INVITEs relayed" 3 "$(relayed)"

# ---- the registrations API of either node lists the fleet's bindings with their owner ----
api() {
	eval "_base=http://\$${1}_ADDR:\$${1}_API_PORT"
	_url="$_base/v1/account/$ACC/trunks/$TRUNK$2"
	_f=$(mktemp "$T/api.XXXXXX")
	_st=$(curl -s -o "$_f.body" -D "$_f.hdr" -w '%{http_code}' -H "Authorization: Bearer $KEY" "$_url")
	api_record GET "$_url" "$_st" "$_f.body" "$_f.hdr"
	echo "$_st $(tr -d '\n' <"$_f.body")"
}
# regs NODE [QUERY]: "username:node:transport" of each binding listed, sorted
regs() {
	api "$1" "/registrations${2:-}" | python3 -c '
import json, sys
st, body = sys.stdin.read().split(" ", 1)
print(st, " ".join(sorted("%s:%s:%s" % (b["username"], b["node"], b["transport"]) for b in json.loads(body)["data"])))'
}
assert_eq "node A lists both bindings, owned by node B" "200 pbx-tcp:B:tcp pbx-udp:B:udp" "$(regs A)"
assert_eq "node B lists the same" "200 pbx-tcp:B:tcp pbx-udp:B:udp" "$(regs B)"
page=$(api A "/registrations?limit=1" | python3 -c '
import json, sys
j = json.loads(sys.stdin.read().split(" ", 1)[1]); print(len(j["data"]), j["has_more"], j["data"][0]["id"])')
assert_match "a page of one, more to come" "^1 True reg_" "$page"
assert_eq "the next page has the other one, and no more" "200 1 False" \
	"$(api A "/registrations?limit=1&starting_after=${page##* }" | python3 -c '
import json, sys
st, body = sys.stdin.read().split(" ", 1); j = json.loads(body); print(st, len(j["data"]), j["has_more"])')"

# ---- TLS: the same down the PBX's TLS connection to B ----
pbx tls1 B pbx-tls tls "$(free_port 127.0.0.1)"; p=$!
registered tls1 || fail "the PBX did not register at B over TLS"
wait_for grep -q "event=cluster_registration node=A owner=B cred=$CRED_S trunk=$TRUNK" "$T/A.log"
assert_eq "node A learnt that B holds pbx-tls's connection" 0 $?
gateway gw5 gateway_call.xml A
assert_eq "TLS: the gateway's call at node A completes with the PBX registered over TLS at B" 0 $?
wait "$p"; assert_eq "the PBX took the call on its TLS connection and answered the BYE" 0 $?
assert_eq "the PBX received one INVITE, one ACK and one BYE on its connection" "1 1 1" \
	"$(requests tls1 INVITE) $(requests tls1 ACK) $(requests tls1 BYE)"
assert_match "... sent by B over TLS (B's Via on top, then A's over UDP)" \
	"^SIP/2.0/TLS 127.0.0.42:$B_TLS_PORT;branch=[^ ]* SIP/2.0/UDP 127.0.0.41:$A_PORT;branch=" \
	"$(invite_field tls1 '" ".join(r["headers"]["via"][:2])')"
assert_eq "node A's metric: four INVITEs relayed" 4 "$(relayed)"
assert_eq "node A lists the TLS binding too, owned by node B" "200 pbx-tcp:B:tcp pbx-tls:B:tls pbx-udp:B:udp" "$(regs A)"

# ---- node A restarted: it loads the other nodes' bindings when it connects, and relays again ----
stop "$A_PID"
assert_eq "node A stops cleanly" 0 $?
mv "$T/A.log" "$T/A1.log"
fleet_node A 127.0.0.41
wait_for grep -q "event=cluster_registrations_loaded node=A seq=[0-9]* remote=3$" "$T/A.log"
assert_eq "node A, restarted, loaded B's three bindings from the database" 0 $?
wait_for grep -q "event=cluster_node_seen node=A other=B" "$T/A.log"
pbx udpr B pbx-udp udp "$PBX_UDP_PORT"; p=$!
registered udpr || fail "the PBX did not register at B"
gateway gw6 gateway_call.xml A
assert_eq "the restarted node A relays the gateway's call to the PBX at B" 0 $?
wait "$p"; assert_eq "the PBX took it" 0 $?
assert_eq "one INVITE, from B" "1 127.0.0.42:$B_PORT" "$(requests udpr INVITE) $(invite_field udpr 'r["src"]')"

# ---- a stranger (not a node, not the gateway) at node B: refused as on a single host ----
pbx udp3 B pbx-udp udp "$PBX_UDP_PORT" --wait 2; p=$!
registered udp3 || fail "the PBX did not register at B"
st=$($SIPCLIENT invite --server "$B_ADDR:$B_PORT" --local-ip 127.0.0.3 --host "$TRUNK_HOST" --to 15550001111 \
	--no-auth --timeout 2 | json_get 'final.get("final_status")')
assert_eq "a stranger's INVITE for the trunk at B is challenged (407), as on a single host" 407 "$st"
st=$($SIPCLIENT invite --server "$A_ADDR:$A_PORT" --local-ip 127.0.0.3 --host "$TRUNK_HOST" --to 15550001111 \
	--no-auth --timeout 2 | json_get 'final.get("final_status")')
assert_eq "... and at A (nothing is relayed for it)" 407 "$st"
wait "$p"
assert_eq "the PBX received no INVITE from the strangers (it waited 2 s for one)" "3 0" "$? $(requests udp3 INVITE)"

# ---- node B killed: within 6 s node A no longer relays to it; the PBX registers at A ----
# the PBX is registered at B (udp3 above); each probe is a gateway INVITE at A: a relay to the
# dead B gets no final answer within 0.3 s, a node that knows B stale answers 480 at once
# a poller of node A's API (every 50 ms): when the dead node's bindings leave the listing
python3 - "http://$A_ADDR:$A_API_PORT/v1/account/$ACC/trunks/$TRUNK/registrations" "$KEY" >"$T/api_gone.txt" <<'PY' &
import json, sys, time, urllib.request
req = urllib.request.Request(sys.argv[1], headers={"Authorization": "Bearer " + sys.argv[2]})
end = time.time() + 15
while time.time() < end:
    data = json.load(urllib.request.urlopen(req, timeout=2))["data"]
    if not any(b["node"] == "B" for b in data):
        print("%.3f" % time.time()); break
    time.sleep(0.05)
else:
    print("none")
PY
poller=$!
sleep 0.2
t0=$(date +%s.%N)
kill -9 "$B_PID"
wait "$B_PID" 2>/dev/null
# a call relayed to B before A knows it dead: B (a sipauthd) would have said 100 Trying at once;
# nothing within [registrar] failover_timeout_ms (2 s), and A answers 480, not 408 at Timer B
( s=$(date +%s.%N)
  f=$($SIPCLIENT invite --server "$A_ADDR:$A_PORT" --local-ip $GW_IP --host "$TRUNK_HOST" --to 15550001112 \
	--no-auth --timeout 8 | json_get 'final.get("final_status")')
  python3 -c "import sys; print(sys.argv[1], '%.1f' % (float(sys.argv[3]) - float(sys.argv[2])))" "$f" "$s" "$(date +%s.%N)"
) >"$T/relay_silent.txt" &
silent_probe=$!
st=""
for _ in $(seq 1 60); do
	st=$($SIPCLIENT invite --server "$A_ADDR:$A_PORT" --local-ip $GW_IP --host "$TRUNK_HOST" --to 15550001111 \
		--no-auth --timeout 0.3 | json_get 'final.get("final_status")')
	[ "$st" = 480 ] && break
	sleep 0.05
done
t1=$(date +%s.%N)
took=$(python3 -c "import sys; print('%.2f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$t0" "$t1")
echo "node B killed: the gateway's probe got node A's 480 after $took s (probes every ~0.4 s)"
# the first 480 in node A's log, to the millisecond
first480=$(grep 'event=reject status=480 reason="trunk not registered"' "$T/A.log" | head -n 1 | cut -d' ' -f1)
took=$(python3 -c "
import datetime, sys
t = datetime.datetime.strptime(sys.argv[2], '%Y-%m-%dT%H:%M:%S.%fZ').replace(tzinfo=datetime.timezone.utc).timestamp()
print('%.2f' % (t - float(sys.argv[1])))" "$t0" "$first480")
echo "node B killed: node A stopped relaying to it after $took s (its first 480, as with no PBX registered)"
assert_eq "after B's kill node A answers the gateway 480 (no live owner), as when no PBX is registered" 480 "$st"
wait "$silent_probe"
read -r st took <"$T/relay_silent.txt"
echo "node B killed: a call relayed to it just after got node A's $st after $took s"
python3 -c "import sys; sys.exit(0 if sys.argv[1] == '480' and 1.8 <= float(sys.argv[2]) <= 3.5 else 1)" "$st" "$took"
assert_eq "a call relayed to B just after its kill gets 480 from A when B says nothing for 2 s ($st after $took s)" 0 $?
assert_match "... logged as a silent next hop" \
	"event=next_hop_unreachable to=udp:127.0.0.42:[0-9]+ method=INVITE status=480 reason=silent call_id=" "$(cat "$T/A.log")"
python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) <= 6.0 else 1)" "$took"
assert_eq "... within 6 s of the kill ($took s)" 0 $?
wait_for grep -q "event=cluster_node_stale node=A other=B silent_ms=" "$T/A.log"
assert_eq "node A logged B stale at its next heartbeat" 0 $?
wait "$poller"
took=$(python3 -c "import sys; print('none' if sys.argv[2] == 'none' else '%.2f' % (float(sys.argv[2]) - float(sys.argv[1])))" \
	"$t0" "$(cat "$T/api_gone.txt")")
echo "node B killed: its bindings left node A's API listing after $took s"
assert_eq "node A's API lists no binding of the dead node" "200 " "$(regs A)"
python3 -c "import sys; sys.exit(0 if sys.argv[1] != 'none' and float(sys.argv[1]) <= 6.0 else 1)" "$took"
assert_eq "... within 6 s of the kill ($took s)" 0 $?
pbx udp4 A pbx-udp udp "$PBX_UDP_PORT"; p=$!
registered udp4 || fail "the PBX did not register at A"
wait_for sh -c "[ \"\$(psql -X -qtA \"$DB\" -c \"SELECT node FROM registrations WHERE credential_id = '$CRED_U'\")\" = A ]"
assert_eq "the PBX's binding is node A's in the database now" A \
	"$(psql_q "SELECT node FROM registrations WHERE credential_id = '$CRED_U'")"
gateway gw4 gateway_call.xml A
assert_eq "the gateway's call at A reaches the PBX registered at A" 0 $?
wait "$p"; assert_eq "the PBX took it" 0 $?
assert_eq "one INVITE, from node A itself" "1 127.0.0.41:$A_PORT" "$(requests udp4 INVITE) $(invite_field udp4 'r["src"]')"
assert_eq "node A's API lists the binding with node A" "200 pbx-udp:A:udp" "$(regs A)"

openapi_check
stop "$A_PID"
assert_eq "node A stops cleanly" 0 $?
for n in A1 A B; do
	assert_nomatch "node $n logged no sanitizer report" "ERROR: (Address|Leak|Undefined)Sanitizer|runtime error" "$(cat "$T/$n.log")"
	assert_nomatch "node $n never logged a password" "$PW" "$(cat "$T/$n.log")"
	assert_nomatch "node $n: no query failed" "event=cluster_query_failed" "$(cat "$T/$n.log")"
done
finish
