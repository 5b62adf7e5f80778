#!/bin/sh
# fleet_workers.sh: fleet mode on every core. Two nodes, each with two SIP workers whatever
# SA_TEST_WORKERS says. The feed (registrations and failures to the database, the other nodes'
# bindings from it) runs on worker 0's loop; what reaches worker 1 must get there too:
# - PBXs registering at node A from many source ports (the kernel spreads them over both
#   workers): every binding is in the database, owned by A, and node B learns every one;
# - wrong answers at node A from many ports: every failure is in the fleet's failure log;
# - the gateway calling node B from many ports, for a PBX registered at A: whichever of B's
#   workers takes the INVITE relays it to A, and the PBX answers every call.
. "$top_srcdir/test/lib.sh"
. "$top_srcdir/test/pg_lib.sh"

fleet_prepare
need sipp

PW=secure_password_here_123
fleet_db_setup || { fail "the fleet's database"; finish; }
GW_IP=127.0.0.2
GW_PORT=$(free_port $GW_IP)

# two workers for both nodes, in either pass of scripts/test
REAL=${SA_TEST_SIPAUTHD:-$SIPAUTHD}
cat >"$T/two-workers" <<SH
#!/bin/sh
exec "$REAL" --workers 2 "\$@"
SH
chmod +x "$T/two-workers"
SIPAUTHD=$T/two-workers
fleet_node A 127.0.0.41
fleet_node B 127.0.0.42
for n in A B; do
	wait_for grep -q "event=cluster_connected" "$T/$n.log" || { cat "$T/$n.log"; fail "node $n did not connect"; finish; }
	assert_eq "node $n runs two SIP workers in fleet mode" 1 "$(grep -c "event=workers_started workers=2" "$T/$n.log")"
done
assert_nomatch "no worker limit is logged" "workers_limited" "$(cat "$T/A.log" "$T/B.log")"
wait_for grep -q "event=cluster_node_seen node=B other=A" "$T/B.log"
assert_eq "node B knows node A" 0 $?

# worker_requests NODE WORKER: SIP requests that worker has taken
worker_requests() {
	eval "_api=http://\$${1}_ADDR:\$${1}_API_PORT"
	curl -s "$_api/metrics" | sed -n "s/^sipauthd_sip_worker_requests_total{worker=\"$2\"} //p"
}

# ---- registrations: 24 PBXs, each from its own port (sipp -t un) ----
N=24
printf 'SEQUENTIAL\n' >"$T/users.csv"
printf 'SEQUENTIAL\n' >"$T/wrong.csv"
for i in $(seq -w 1 $N); do
	cred "u$i" >>"$T/creds" || fail "credential u$i"
	printf 'u%s;[authentication username=u%s password=%s]\n' "$i" "$i" "$PW" >>"$T/users.csv"
	[ "$i" -le 12 ] && printf 'u%s;[authentication username=u%s password=not-the-password-%s]\n' "$i" "$i" "$i" >>"$T/wrong.csv"
done
run_sipp reg -sf "$SIPP_DIR/pbx_register_users.xml" "$A_ADDR:$A_PORT" -t un -max_socket 64 -i 127.0.0.1 -inf "$T/users.csv" \
	-key trunk_host "$TRUNK_HOST" -key expires 300 -m $N -r 50 -l 4
assert_eq "sipp: all $N PBXs registered at node A" 0 $?
w0=$(worker_requests A 0) w1=$(worker_requests A 1)
assert_match "both of node A's workers took REGISTERs ($w0 and $w1)" "^[1-9][0-9]* [1-9][0-9]*$" "$w0 $w1"
owned() { [ "$(psql_q "SELECT count(*) FROM registrations WHERE node = 'A' AND trunk_id = '$TRUNK'")" = "$1" ]; }
wait_for owned $N
assert_eq "the database has all $N bindings, owned by node A" "$N" \
	"$(psql_q "SELECT count(DISTINCT credential_id) FROM registrations WHERE node = 'A' AND trunk_id = '$TRUNK'")"
learnt() { [ "$(grep -c "event=cluster_registration node=B owner=A" "$T/B.log")" -ge "$1" ]; }
wait_for learnt $N
assert_eq "node B learnt every one from the feed" "$N" \
	"$(grep -o "event=cluster_registration node=B owner=A cred=[a-z0-9_]*" "$T/B.log" | sort -u | wc -l)"

# ---- failures: 12 wrong answers, each from its own port ----
f0=$(worker_requests A 0) f1=$(worker_requests A 1)
run_sipp wrong -sf "$SIPP_DIR/pbx_register_users.xml" "$A_ADDR:$A_PORT" -t un -max_socket 64 -i 127.0.0.1 -inf "$T/wrong.csv" \
	-key trunk_host "$TRUNK_HOST" -key expires 300 -m 12 -r 50 -l 4 -trace_stat -stf "$T/wrong.stat.csv" -fd 1
assert_eq "sipp: the 12 wrong answers were refused" "0 12" "$(sipp_stat "$T/wrong.stat.csv")"
f0=$(($(worker_requests A 0) - f0)) f1=$(($(worker_requests A 1) - f1))
assert_match "both of node A's workers took wrong answers ($f0 and $f1 requests)" "^[1-9][0-9]* [1-9][0-9]*$" "$f0 $f1"
failed() { [ "$(psql_q "SELECT count(*) FROM auth_failures WHERE node = 'A' AND trunk_id = '$TRUNK'")" = "$1" ]; }
wait_for failed 12
assert_eq "the fleet's failure log has all 12, from node A" 12 \
	"$(psql_q "SELECT count(DISTINCT username) FROM auth_failures WHERE node = 'A' AND trunk_id = '$TRUNK'")"

# ---- relays: the gateway calls node B from a new port each time, the PBX is registered at A ----
cred pbx >/dev/null || fail "credential pbx"
CALLS=16
spawn "$T/pbx.json" $SIPCLIENT pbx --server "$A_ADDR:$A_PORT" --transport udp --local-ip 127.0.0.1 \
	--local-port "$(free_port 127.0.0.1)" --host "$TRUNK_HOST" --user pbx --password "$PW" --algorithms MD5 \
	--expires 120 --timeout 5 --wait 30 --calls $CALLS
PBX=$!
wait_for grep -q '"event":"registered","status":200' "$T/pbx.json" || fail "the PBX did not register at A"
wait_for grep -q "event=cluster_registration node=B owner=A cred=$(psql_q "SELECT id FROM credentials WHERE username = 'pbx'")" "$T/B.log"
assert_eq "node B learnt the PBX's binding at A" 0 $?
seen0=0 seen1=0 answered=0 made=0
while [ $made -lt $CALLS ]; do
	b0=$(worker_requests B 0) b1=$(worker_requests B 1)
	run_sipp "gw$made" -sf "$SIPP_DIR/gateway_call.xml" "$B_ADDR:$B_PORT" -i $GW_IP -p "$(free_port $GW_IP)" -m 1 \
		-s 15550001111 -key trunk_host "$TRUNK_HOST" -d 100 && answered=$((answered + 1))
	made=$((made + 1))
	[ "$(worker_requests B 0)" != "$b0" ] && seen0=$((seen0 + 1))
	[ "$(worker_requests B 1)" != "$b1" ] && seen1=$((seen1 + 1))
	[ $seen0 -gt 0 ] && [ $seen1 -gt 0 ] && [ $made -ge 4 ] && break
done
assert_match "both of node B's workers took the gateway's INVITEs ($seen0 and $seen1 of $made calls)" \
	"^[1-9][0-9]* [1-9][0-9]*$" "$seen0 $seen1"
assert_eq "every call the gateway made at B was relayed to A and answered by the PBX" "$made" "$answered"
assert_eq "node B's metric: every INVITE relayed" "$made" \
	"$(curl -s "http://$B_ADDR:$B_API_PORT/metrics" | sed -n 's/^sipauthd_fleet_relayed_total //p')"
kill "$PBX" 2>/dev/null
finish
