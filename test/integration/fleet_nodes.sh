# fleet_nodes.sh: three sipauthd nodes (127.0.0.41-43, each with its own store) on a real
# PostgreSQL 15 primary with a streaming standby, the gateway stand-in on 127.0.0.40 (issue 12,
# "Tests"): revocation with calls on all three nodes; a node stopped (SIGSTOP) during 100 changes
# catches up, and resyncs when the log was pruned past it; the database stopped and restarted;
# two nodes' APIs writing at once; the primary stopped and the standby promoted.
# fleet.sh covers the rest with two nodes (sipauthctl --database, propagation, the API, limits).
. "$top_srcdir/test/lib.sh"
. "$top_srcdir/test/pg_lib.sh"

fleet_need
need curl
need sipp
pg_start || { fail "PostgreSQL did not start"; finish; }
[ -x "$PG_BIN/pg_basebackup" ] || skip "pg_basebackup is not installed"

PW=secure_password_here_123
NODES="A B C"
fleet_db_setup || { fail "the fleet database"; finish; }
pg_standby_start || { fail "the standby did not start streaming"; finish; }
pass "a streaming standby of the primary on port $PG_SB_PORT"
# every host, the writable one wanted (libpq tries them in order): the standby once promoted
DB="host=127.0.0.1,127.0.0.1 port=$PG_PORT,$PG_SB_PORT user=postgres dbname=fleet connect_timeout=3 target_session_attrs=read-write"
NODE_DB="host=127.0.0.1,127.0.0.1 port=$PG_PORT,$PG_SB_PORT user=sipauthd_node dbname=fleet target_session_attrs=read-write"
GW_ADDR=127.0.0.40
GW_PORT=$(free_port $GW_ADDR)
cred pbx-base >/dev/null
node A 127.0.0.41
node B 127.0.0.42
node C 127.0.0.43
for n in $NODES; do
	wait_for grep -q "event=cluster_connected" "$T/$n.log" || { cat "$T/$n.log"; fail "node $n did not connect"; finish; }
done
pass "three nodes started from an empty store and connected"

# metric NODE NAME: the value of sipauthd_NAME in NODE's /metrics
metric() {
	eval "_m=http://\$${1}_ADDR:\$${1}_API_PORT/metrics"
	curl -s "$_m" | sed -n "s/^sipauthd_$2 //p"
}
head_seq() { psql_q 'SELECT last FROM change_seq'; }
# converged NODE: the node has applied the database's last change
converged() { [ "$(metric "$1" cluster_applied_seq)" = "$(head_seq)" ]; }
all_converged() { for _n in $NODES; do wait_for converged "$_n" || return 1; done; }
# mirror_ids NODE: the credential ids in NODE's own store (read beside the daemon), sorted
mirror_ids() {
	"$SIPAUTHCTL" --store "$T/$1-store" credential list --trunk "$TRUNK" |
		python3 -c 'import json,sys; print(" ".join(sorted(c["id"] for c in json.load(sys.stdin)["data"])))'
}
db_ids() { psql_q "SELECT id FROM credentials WHERE trunk_id = '$TRUNK'" | LC_ALL=C sort | tr '\n' ' ' | sed 's/ $//'; }
# mirrors_match WHAT: every node's store holds exactly the database's credentials
mirrors_match() {
	_want=$(db_ids)
	for _n in $NODES; do
		assert_eq "$1: node $_n's mirror holds exactly the database's $(echo "$_want" | wc -w) credentials" \
			"$_want" "$(mirror_ids "$_n" | tr ' ' '\n' | LC_ALL=C sort | tr '\n' ' ' | sed 's/ $//')"
	done
}
# id_of "STATUS BODY": the id in an API answer's body
id_of() { printf '%s' "${1#* }" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'; }
# created_ids FILE...: the ids of the 201 answers (api's lines) in FILEs, in order
created_ids() {
	cat "$@" | python3 -c '
import json, sys
for l in sys.stdin:
    if l.startswith("201 "): print(json.loads(l[4:])["id"])'
}
# log_since T0 NODE REGEX: seconds from T0 (date +%s.%N) to the last line of NODE's log matching
# REGEX, by the line's own time (not by when this test looked), 3 decimals; "none" without one
log_since() {
	python3 - "$@" "$T/$2.log" <<'PY'
import datetime, re, sys
t0, rx, log = float(sys.argv[1]), re.compile(sys.argv[3]), sys.argv[4]
at = [l.split(" ", 1)[0] for l in open(log, errors="replace") if rx.search(l)]
if not at:
    print("none")
else:
    t = datetime.datetime.strptime(at[-1], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
    print("%.3f" % (t.timestamp() - t0))
PY
}

# cont_converge NODE HEAD: SIGCONT to NODE, then waits (10 s at most) until it has applied HEAD;
# prints the seconds from the signal to the apply that reached HEAD (its log line)
cont_converge() {
	_t0=$(date +%s.%N)
	eval "kill -CONT \$${1}_PID"
	for _ in $(seq 1 500); do converged "$1" && break; sleep 0.02; done
	log_since "$_t0" "$1" "event=cluster_applied node=$1 from=[0-9]+ to=$2 "
}
# reconnected NODE CONNECTS_BEFORE: the node made a new connection
reconnected() { [ "$(metric "$1" cluster_connects_total)" -gt "$2" ] && [ "$(metric "$1" cluster_connected)" = 1 ]; }
# connects NODE...: each node's connections so far (sipauthd_cluster_connects_total)
connects() { for _n in "$@"; do metric "$_n" cluster_connects_total; done | tr '\n' ' '; }
# reconnect_times WHY "NODE..." BEFORE...: asserts that each NODE reconnects (within about 5 s)
# after WHY and sets rc_NODE to the seconds from the call to the node's cluster_connected line
reconnect_times() {
	_why=$1 _nodes=$2; shift 2
	_t0=$(date +%s.%N)
	for _n in $_nodes; do
		for _ in $(seq 1 250); do reconnected "$_n" "$1" && break; sleep 0.02; done
		reconnected "$_n" "$1"
		assert_eq "node $_n reconnected after $_why" 0 $?
		eval "rc_$_n=\$(log_since \$_t0 \$_n 'event=cluster_connected node=$_n ')"
		shift
	done
}

all_converged || fail "the nodes did not apply the first changes"
assert_eq "a credential made before the nodes started registers at A, B and C" "200 200 200" \
	"$(reg A pbx-base) $(reg B pbx-base) $(reg C pbx-base)"

# ---- 1. revocation with a call through each of the three nodes ----
# Each time: a credential with one call held through each node (sipp PBX on 127.0.0.1, sipp gateway
# on 127.0.0.40); DELETE through one node's API ends all three (BYE to the PBX and to the gateway)
# and REGISTER with it is then refused at every node. scripts/bench/fleet_revoke.sh measures it
# 50 times; here three times, the DELETE through each node once.
i=0
for via in A B C; do
	i=$((i + 1))
	out=$(api "$via" POST /credentials "{\"username\":\"rv-$i\",\"password\":\"$PW\"}")
	CR=$(id_of "$out")
	all_converged || fail "rv-$i did not reach every node"
	calls_through "rv-$i" "rv-$i" $NODES
	for n in $NODES; do
		wait_for grep -q "event=call_start.*cred=$CR" "$T/$n.log"
	done
	assert_eq "rv-$i: one call up through each node" "1 1 1" \
		"$(for n in $NODES; do grep -c "event=call_start.*cred=$CR" "$T/$n.log"; done | tr '\n' ' ' | sed 's/ $//')"
	t0=$(date +%s.%N)
	assert_match "rv-$i: DELETE through node $via's API: 204" "^204" "$(api "$via" DELETE "/credentials/$CR")"
	ended=0
	for p in $PBX_SIPPS; do wait "$p" && ended=$((ended + 1)); done
	assert_eq "rv-$i: the three PBXs got their BYE and answered it" 3 "$ended"
	wait "$GW_SIPP"
	assert_eq "rv-$i: the gateway got a BYE for each of the three calls" 0 $?
	last=0
	for n in $NODES; do
		assert_eq "rv-$i: node $n ended its one call" 1 "$(grep -c "event=credential_revoked cred=$CR calls_ended=1" "$T/$n.log")"
		b=$(bye_at "$T/rv-$i-$n.msg")
		[ "$b" = none ] && { fail "rv-$i: no BYE in the PBX's trace at node $n"; continue; }
		last=$(python3 -c "import sys; print(max(float(sys.argv[1]), float(sys.argv[2])))" "$last" "$b")
	done
	d=$(python3 -c "import sys; print('%.3f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$t0" "$last")
	echo "rv-$i: the last PBX's BYE $d s after the DELETE at node $via"
	# the 1 s figure is the benchmark's; here only a bound a loaded CI machine keeps
	python3 -c "import sys; sys.exit(0 if 0 <= float(sys.argv[1]) <= 3.0 else 1)" "$d"
	assert_eq "rv-$i: every BYE within 3 s of the DELETE ($d s)" 0 $?
	assert_eq "rv-$i: REGISTER with it is refused at A, B and C" "401 401 401" "$(reg A "rv-$i") $(reg B "rv-$i") $(reg C "rv-$i")"
done

# ---- 2. a node stopped during 100 changes ----
all_converged || fail "the nodes did not converge before node C was stopped"
h0=$(head_seq)
r0=$(metric C cluster_resyncs_total)
kill -STOP "$C_PID"
# 70 creates (40 through node A's API, 30 through sipauthctl --database, at once), then 30
# deletes (15 through node B's API, 15 through sipauthctl --database, at once)
# many requests alike: their answers are not each checked against the OpenAPI document
export API_UNCHECKED=1
( for i in $(seq 1 40); do api A POST /credentials "{\"username\":\"s-$i\",\"password\":\"$PW\"}"; done ) >"$T/s.out" &
sa=$!
( for i in $(seq 1 30); do
	printf '%s\n' "$PW" | ctl_db credential create --trunk "$TRUNK" --username "t-$i" --password-stdin | tr -d '\n'; echo
done ) >"$T/t.out" &
ta=$!
wait "$sa" "$ta"
assert_eq "40 credentials created through node A's API" 40 "$(grep -c '^201 ' "$T/s.out")"
python3 -c 'import json,sys; [print(json.loads(l)["id"]) for l in sys.stdin if l.strip()]' <"$T/t.out" >"$T/t.ids"
assert_eq "30 credentials created through sipauthctl --database" 30 "$(grep -c '^cred_' "$T/t.ids")"
created_ids "$T/s.out" >"$T/s.ids"
( head -n 15 "$T/s.ids" | while read -r id; do api B DELETE "/credentials/$id"; done ) >"$T/sd.out" &
sa=$!
( head -n 15 "$T/t.ids" | while read -r id; do ctl_db credential delete --trunk "$TRUNK" --id "$id" && echo deleted; done ) >"$T/td.out" &
ta=$!
wait "$sa" "$ta"
assert_eq "15 deleted through node B's API" 15 "$(grep -c '^204' "$T/sd.out")"
assert_eq "15 deleted through sipauthctl --database" 15 "$(grep -c '^deleted' "$T/td.out")"
unset API_UNCHECKED
head=$(head_seq)
assert_eq "100 changes in the log while node C was stopped" 100 \
	"$(psql_q "SELECT count(*) FROM change_log WHERE seq > $h0 AND seq <= $head AND kind <> 'registrations'")"
conv=$(cont_converge C "$head")
echo "node C converged ${conv} s after SIGCONT (100 changes behind)"
assert_eq "node C after SIGCONT: cluster_applied_seq is the head" "$head" "$(metric C cluster_applied_seq)"
assert_eq "node C caught up from the log, without a resync" "$r0 0" \
	"$(metric C cluster_resyncs_total) $(grep -c "event=cluster_resync" "$T/C.log")"
all_converged || fail "A and B did not converge"
mirrors_match "after 100 changes past a stopped node"
assert_eq "at node C: created ones register (API, sipauthctl), deleted ones are refused" "200 200 401 401" \
	"$(reg C s-40) $(reg C t-30) $(reg C s-1) $(reg C t-1)"

# ... and again with the log pruned past it while it is stopped: a full resync
kill -STOP "$C_PID"
( export API_UNCHECKED=1
  for i in $(seq 1 10); do api B POST /credentials "{\"username\":\"p-$i\",\"password\":\"$PW\"}"; done ) >"$T/p.out"
( export API_UNCHECKED=1
  sed -n 16,20p "$T/s.ids" | while read -r id; do api A DELETE "/credentials/$id"; done ) >"$T/pd.out"
assert_eq "10 created through node B's API, 5 deleted through node A's" "10 5" \
	"$(grep -c '^201 ' "$T/p.out") $(grep -c '^204' "$T/pd.out")"
for n in A B; do wait_for converged "$n" || fail "node $n did not apply the 15 changes"; done
head=$(head_seq)
pruned=$(psql_q "WITH d AS (DELETE FROM change_log WHERE seq < $head RETURNING 1) SELECT count(*) FROM d")
assert_eq "the log pruned to its head (every other change gone)" "$((head - 1))" "$pruned"
conv2=$(cont_converge C "$head")
echo "node C resynced and converged ${conv2} s after SIGCONT"
assert_eq "node C after the prune: cluster_applied_seq is the head" "$head" "$(metric C cluster_applied_seq)"
assert_eq "node C did one full resync (/metrics)" $((r0 + 1)) "$(metric C cluster_resyncs_total)"
assert_match "node C logged why" "event=cluster_resync node=C .*reason=\"the change log was pruned past this mirror\"" "$(cat "$T/C.log")"
assert_eq "node C logged the resync done, at the head" 1 "$(grep -c "event=cluster_resynced node=C seq=$head " "$T/C.log")"
assert_eq "nodes A and B did not resync" "0 0" "$(metric A cluster_resyncs_total) $(metric B cluster_resyncs_total)"
mirrors_match "after a resync"
assert_eq "at node C: created ones register, deleted ones are refused" "200 200 401 401" \
	"$(reg C p-10) $(reg C s-40) $(reg C s-16) $(reg C t-1)"

# ---- 3. the database stopped and restarted ----
# downs NODE: how many times NODE has lost its connection
downs() { grep -c "event=cluster_down node=$1 " "$T/$1.log"; }
# all_down "NODE..." BEFORE...: each NODE has lost its connection once more than BEFORE
all_down() {
	_nodes=$1; shift
	for _n in $_nodes; do
		wait_for sh -c "[ \$(grep -c 'event=cluster_down node=$_n ' '$T/$_n.log') -gt $1 ]" || return 1
		shift
	done
}
d0=$(for n in $NODES; do downs "$n"; done)
pg_stop
all_down "$NODES" $d0 || fail "the nodes did not notice the database went away"
assert_eq "database stopped: REGISTER from the mirror at A, B and C" "200 200 200" \
	"$(reg A s-39) $(reg B t-29) $(reg C p-9)"
assert_eq "database stopped: a deleted credential is still refused at A, B and C" "401 401 401" \
	"$(reg A s-2) $(reg B t-2) $(reg C rv-1)"
for n in $NODES; do
	assert_match "database stopped: node $n's API answers 503 database_unavailable" \
		'^503 .*"code": *"database_unavailable"' "$(api "$n" GET /credentials?limit=1)"
done
assert_match "database stopped: a POST too" '^503 .*"code": *"database_unavailable"' \
	"$(api B POST /credentials "{\"username\":\"x-1\",\"password\":\"$PW\"}")"
assert_eq "database stopped: /metrics at A, B and C says disconnected" "0 0 0" \
	"$(metric A cluster_connected) $(metric B cluster_connected) $(metric C cluster_connected)"
c0=$(connects $NODES)
pg_restart || fail "PostgreSQL restarted"
reconnect_times "the restart" "$NODES" $c0
echo "reconnected after the database's restart (s, counted from pg_ctl start's return): A $rc_A, B $rc_B, C $rc_C"
cred after-restart >/dev/null
assert_eq "a credential created after the restart registers at A, B and C" "200 200 200" \
	"$(reg_until A after-restart 200) $(reg_until B after-restart 200) $(reg_until C after-restart 200)"
for n in $NODES; do
	assert_match "node $n's API answers from the database again" "^200 " "$(api "$n" GET /credentials?limit=1)"
done

# ---- 4. two nodes' APIs writing at once ----
# node A and node B each create 20 usernames of their own and 20 that the other creates too
# (dup-N at A, DUP-N at B: the same username ignoring case), in two loops at once
export API_UNCHECKED=1
for n in A B; do
	(
		for i in $(seq 1 20); do
			api "$n" POST /credentials "{\"username\":\"own-$n-$i\",\"password\":\"$PW\"}" >"$T/own-$n-$i"
			u=dup-$i; [ "$n" = B ] && u=DUP-$i
			api "$n" POST /credentials "{\"username\":\"$u\",\"password\":\"$PW\"}" >"$T/dup-$n-$i"
		done
	) &
	eval "w$n=\$!"
done
wait "$wA" "$wB"
unset API_UNCHECKED
assert_eq "40 usernames of their own: 40 created" 40 "$(cat "$T"/own-* | grep -c '^201 ')"
pairs=$(for i in $(seq 1 20); do cut -c1-3 "$T/dup-A-$i" "$T/dup-B-$i" | sort | tr '\n' ' '; echo; done | sort | uniq -c | sed 's/^ *//')
assert_eq "the same username at both nodes: one 201 and one 409, twenty times" "20 201 409 " "$pairs"
assert_eq "... each 409 says duplicate_username" 20 "$(cat "$T"/dup-* | grep -c '^409 .*"code": *"duplicate_username"')"
created=$(created_ids "$T"/own-* "$T"/dup-* | LC_ALL=C sort | tr '\n' ' ' | sed 's/ $//')
listed=$(api C GET "/credentials?limit=1000" | python3 -c '
import json, sys
ids = [c["id"] for c in json.loads(sys.stdin.read().split(" ", 1)[1])["data"] if c["username"].lower().startswith(("own-", "dup-"))]
print(" ".join(sorted(ids)) if len(ids) == len(set(ids)) else "twice: " + " ".join(ids))')
assert_eq "every 201 is in node C's list exactly once, and nothing else" "$created" "$listed"
assert_eq "60 created in all" 60 "$(echo "$created" | wc -w)"
assert_eq "usernames unique per trunk (ignoring case) in the database" 0 \
	"$(psql_q "SELECT count(*) - count(DISTINCT lower(username)) FROM credentials WHERE trunk_id = '$TRUNK'")"
all_converged || fail "the nodes did not converge after the writers"
mirrors_match "after two writers at once"

# ---- 5. the primary stopped, the standby promoted ----
# The standby has every change, then stops streaming (primary_conninfo emptied) and misses 5 that
# the nodes apply. Node C is stopped (SIGSTOP) across the failover until the promoted standby has
# numbered 10 changes of its own, past C's sequence: C's "next change" would be another history's.
# Nodes A and B come back while the new primary is still behind them.
pg_standby_caught_up
assert_eq "the standby has replayed every change (it streams again since the restart)" 0 $?
SB="host=127.0.0.1 port=$PG_SB_PORT user=postgres dbname=postgres"
psql -X -qtA "$SB" -c "ALTER SYSTEM SET primary_conninfo = ''" -c "SELECT pg_reload_conf()" >/dev/null
wait_for sh -c "[ \"\$(psql -X -qtA '$SB' -c 'SELECT count(*) FROM pg_stat_wal_receiver')\" = 0 ]"
assert_eq "the standby stopped streaming" 0 $?
h_sb=$(head_seq)
# the last change other than a registration's (the nodes write bindings as PBXs register, at
# the new primary too: those are changes of their own)
cred_head() { psql_q "SELECT coalesce(max(seq), 0) FROM change_log WHERE kind <> 'registrations'"; }
h_sb_c=$(cred_head)
for i in 1 2 3 4 5; do cred "lost-$i" >/dev/null; done
all_converged || fail "the nodes did not apply the 5 changes the standby misses"
assert_eq "lost-5 registers at A, B and C before the failover" "200 200 200" "$(reg A lost-5) $(reg B lost-5) $(reg C lost-5)"
all_converged || fail "the nodes did not apply the bindings of lost-5"
c_seq=$(metric C cluster_applied_seq)
kill -STOP "$C_PID"
c0=$(connects A B)
d0=$(for n in A B; do downs "$n"; done)
pg_stop
all_down "A B" $d0 || fail "nodes A and B did not notice the primary went away"
assert_match "the primary away, the standby read-only: node A's API answers 503 database_unavailable" \
	'^503 .*"code": *"database_unavailable"' "$(api A GET /credentials?limit=1)"
assert_eq "the primary away: REGISTER from the mirror at A and B" "200 200" "$(reg A own-A-1) $(reg B own-B-1)"
pg_promote || { cat "$PG_DIR/ctl.log"; fail "the standby was promoted"; }
reconnect_times "the promotion" "A B" $c0
echo "reconnected after the promotion (s, counted from pg_ctl promote's return): A $rc_A, B $rc_B"
assert_eq "the promoted standby misses exactly the 5 changes" "$h_sb_c 0" \
	"$(cred_head) $(psql_q "SELECT count(*) FROM credentials WHERE username LIKE 'lost-%'")"
for n in A B; do
	assert_match "node $n connected to the promoted standby" \
		"event=cluster_connected node=$n database=\"fleet on 127.0.0.1:$PG_SB_PORT\"" "$(cat "$T/$n.log")"
	wait_for converged "$n"
	assert_eq "node $n resynced: the database is behind it" 1 \
		"$(grep -Ec "event=cluster_resync node=$n applied=[0-9]+ head=[0-9]+ reason=\"the database is behind this mirror\"" "$T/$n.log")"
done
out=$(api B POST /credentials "{\"username\":\"promoted-1\",\"password\":\"$PW\"}")
assert_match "an API write at node B after the promotion: 201" "^201 " "$out"
assert_eq "... in the promoted database" promoted-1 \
	"$(psql -X -qtA "host=127.0.0.1 port=$PG_SB_PORT user=postgres dbname=fleet" -c "SELECT username FROM credentials WHERE id = '$(id_of "$out")'")"
for i in $(seq 2 10); do cred "promoted-$i" >/dev/null; done
head=$(head_seq)
assert_eq "the new primary numbered 10 changes, past node C's sequence" "10 yes" \
	"$(psql_q "SELECT count(*) FROM change_log WHERE seq > $h_sb AND kind = 'credentials'") $([ "$head" -gt "$c_seq" ] && echo yes)"
conv3=$(cont_converge C "$head")
echo "node C, stopped across the failover, converged ${conv3} s after SIGCONT"
assert_eq "node C resynced: another change at its sequence" 1 \
	"$(grep -Ec "event=cluster_resync node=C applied=$c_seq head=[0-9]+ reason=\"the change log holds another change at this mirror's sequence" "$T/C.log")"
assert_eq "resyncs: one each for the promotion (C's first was the prune)" "1 1 2" \
	"$(metric A cluster_resyncs_total) $(metric B cluster_resyncs_total) $(metric C cluster_resyncs_total)"
all_converged || fail "the nodes did not converge on the promoted database"
mirrors_match "after the promotion"
assert_eq "the changes the standby missed are refused at A, B and C" "401 401 401" \
	"$(reg A lost-1) $(reg B lost-3) $(reg C lost-5)"
assert_eq "the new primary's changes register at A, B and C" "200 200 200" \
	"$(reg A promoted-1) $(reg B promoted-5) $(reg C promoted-1)"
assert_match "a delete at node C after the promotion: 204" "^204" "$(api C DELETE "/credentials/$(id_of "$out")")"
assert_eq "... refused at A, B and C" "401 401 401" \
	"$(reg_until A promoted-1 401) $(reg_until B promoted-1 401) $(reg_until C promoted-1 401)"

openapi_check
nodes_stop $NODES

finish
