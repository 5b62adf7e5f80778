# fleet_calls.sh: the calls list in fleet mode (issue 12): two sipauthd nodes (127.0.0.91-92, each
# with its own store) on a real PostgreSQL 15, the gateway stand-in (sipp) on 127.0.0.90, PBXs
# (sipp) on 127.0.0.1. GET .../calls at either node lists the calls of both, each with the node that
# holds it; the calls' end empties both lists; a node killed with -9 has its call dropped from the
# other node's list once its heartbeat is older than the liveness limit (4 s); a call set up while
# the database is away is listed once it is back; init upgrades a schema 3 database.
. "$top_srcdir/test/lib.sh"
. "$top_srcdir/test/pg_lib.sh"

fleet_prepare
need curl
need sipp

PW=secure_password_here_123
fleet_db_setup || { fail "the fleet database"; finish; }
# a schema 3 database (as before this version) is upgraded by init: calls added, nothing else touched
psql_q "DROP TABLE calls, idempotency, webhooks, webhook_deliveries; UPDATE schema_version SET version = 3" >/dev/null
n0=$(psql_q "SELECT count(*) FROM credentials")
ctl_db init --domain sip.tryvox.io >"$T/upgrade.out" 2>&1
assert_eq "init on schema 3: exit 0" 0 $?
assert_eq "... the schema is 6, with the calls table" "6 t" \
	"$(psql_q "SELECT version FROM schema_version") $(psql_q "SELECT to_regclass('calls') IS NOT NULL")"
assert_eq "... the accounts, trunks and keys are as they were" "$n0 1 1" \
	"$(psql_q "SELECT count(*) FROM credentials") $(psql_q "SELECT count(*) FROM trunks") $(psql_q "SELECT count(*) FROM api_keys")"
# README: the grants again after the upgrade (the role is there already)
sed -n '/^CREATE ROLE sipauthd_node LOGIN;$/,/^SQL$/p' "$top_srcdir/README.md" | sed '1d;$d' >"$T/grants.sql"
psql -X -q "$DB" -v ON_ERROR_STOP=1 -f "$T/grants.sql" >/dev/null
assert_eq "README's grants run again after the upgrade" 0 $?
GW_ADDR=127.0.0.90
GW_PORT=$(free_port $GW_ADDR)
# a row node A left behind in an earlier life: its first connect replaces its rows
psql_q "INSERT INTO calls VALUES ('A', '$TRUNK', 'stale-call', '', false, true, 1)" >/dev/null
node A 127.0.0.91
node B 127.0.0.92
for n in A B; do
	wait_for grep -q "event=cluster_connected" "$T/$n.log" || { cat "$T/$n.log"; fail "node $n did not connect"; finish; }
done
pass "two nodes connected"

# converged NODE: the node has applied the database's last change
converged() {
	[ "$(curl -s "http://$(eval echo "\$${1}_ADDR:\$${1}_API_PORT")/metrics" | sed -n 's/^sipauthd_cluster_applied_seq //p')" = \
		"$(psql_q 'SELECT last FROM change_seq')" ]
}
id_of() { printf '%s' "${1#* }" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'; }
# listing NODE [QUERY]: GET .../calls at NODE as "node:call_id:credential_id:direction:state ..." and
# the usage's concurrent_calls after a '|'; "error STATUS" when not 200
listing() {
	api "$1" GET "/calls${2:-}" | python3 -c '
import json, sys
st, _, body = sys.stdin.read().partition(" ")
if st != "200":
    print("error", st); sys.exit()
b = json.loads(body)
print(" ".join("%s:%s:%s:%s:%s" % (c.get("node"), c["call_id"], c["credential_id"], c["direction"], c["state"])
               for c in b["data"]) + "|%d" % b["usage"]["concurrent_calls"])'
}
# listing_is NODE WANT: within 3 s, NODE's listing is WANT; prints the seconds it took, or "never"
listing_is() {
	_t0=$(date +%s.%N)
	for _ in $(seq 1 60); do
		[ "$(API_UNCHECKED=1 listing "$1")" = "$2" ] &&
			{ python3 -c "import sys; print('%.2f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$_t0" "$(date +%s.%N)"; return; }
		sleep 0.05
	done
	echo never
}
# call_id NODE CRED: the Call-ID of CRED's call through NODE (its call_start line)
call_id() { sed -n "s/.*event=call_start call_id=\"\([^\"]*\)\" cred=$2 .*/\1/p" "$T/$1.log" | head -n 1; }

# two_calls USER: a credential USER (through node A's API) with one call held through each of A
# and B; sets $CR (its id) and $want (the calls as listing shows them, by Call-ID)
two_calls() {
	CR=$(id_of "$(api A POST /credentials "{\"username\":\"$1\",\"password\":\"$PW\"}")")
	wait_for converged B || fail "$1 did not reach node B"
	calls_through "$1" "$1" A B
	for n in A B; do
		wait_for grep -q "event=call_start.*cred=$CR" "$T/$n.log" || fail "no call of $1 through node $n"
	done
	want=$(printf '%s\n%s\n' "A:$(call_id A "$CR"):$CR:outbound:confirmed" "B:$(call_id B "$CR"):$CR:outbound:confirmed" |
		LC_ALL=C sort -t: -k2,2 | tr '\n' ' ' | sed 's/ $//')
}

# ---- 1. one call through each node: both nodes list both ----
two_calls calls-1
for n in A B; do
	took=$(listing_is "$n" "$want|2")
	echo "node $n listed both calls $took s after both started"
	assert_match "node $n lists exactly the two calls, each with its node, within 3 s" '^[0-9.]+$' "$took"
done
assert_eq "node A's answer (checked against the OpenAPI document)" "$want|2" "$(listing A)"
assert_eq "node B's answer (checked against the OpenAPI document)" "$want|2" "$(listing B)"
assert_nomatch "node A's row from its earlier life was replaced at its connect" "stale-call" "$(listing B)"
first=${want%% *}
assert_eq "paging: limit=1 gives the first call, has_more true" "true $first" \
	"$(api B GET '/calls?limit=1' | python3 -c '
import json, sys
b = json.loads(sys.stdin.read().partition(" ")[2]); c = b["data"][0]
print(str(b["has_more"]).lower(), "%s:%s:%s:%s:%s" % (c["node"], c["call_id"], c["credential_id"], c["direction"], c["state"]))')"
after=$(echo "$first" | cut -d: -f2)
assert_eq "paging: starting_after the first gives the second" "${want#* }|2" "$(listing A "?starting_after=$after")"

# ---- 2. the calls end: both lists empty ----
assert_match "DELETE the credential through node B: 204" "^204" "$(api B DELETE "/credentials/$CR")"
ended=0
for p in $PBX_SIPPS; do wait "$p" && ended=$((ended + 1)); done
assert_eq "both PBXs got their BYE" 2 "$ended"
wait "$GW_SIPP"
for n in A B; do
	took=$(listing_is "$n" "|0")
	echo "node $n listed no call $took s after the calls ended"
	assert_match "node $n lists no call within 3 s of their end" '^[0-9.]+$' "$took"
done
assert_eq "the calls table holds no row" 0 "$(psql_q 'SELECT count(*) FROM calls')"

# ---- 3. node B killed with -9 during a call: its call leaves A's list ----
two_calls calls-2
CR2=$CR
CA2=$(call_id A "$CR2")
assert_match "node A lists both new calls" '^[0-9.]+$' "$(listing_is A "$want|2")"
kill -9 "$B_PID"
t0=$(date +%s.%N)
gone=never
for _ in $(seq 1 160); do
	[ "$(API_UNCHECKED=1 listing A)" = "A:$CA2:$CR2:outbound:confirmed|1" ] &&
		{ gone=$(python3 -c "import sys; print('%.2f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$t0" "$(date +%s.%N)"); break; }
	sleep 0.05
done
echo "node B's call left node A's list $gone s after node B was killed"
assert_match "node B's call left node A's list, node A's own stayed" '^[0-9.]+$' "$gone"
[ "$gone" != never ] && python3 -c "import sys; sys.exit(0 if 2.5 <= float(sys.argv[1]) <= 6.0 else 1)" "$gone"
assert_eq "... after the liveness limit (4 s after B's last beat, beats each second) and within 6 s ($gone s)" 0 $?
assert_eq "node B's row is still in the table (swept a minute after its last beat)" 1 \
	"$(psql_q "SELECT count(*) FROM calls WHERE node = 'B'")"

assert_match "DELETE the second credential through node A: 204" "^204" "$(api A DELETE "/credentials/$CR2")"
set -- $PBX_SIPPS
wait "$1"
assert_eq "node A's PBX got its BYE" 0 $?
assert_eq "node A lists no call" "|0" "$(listing_is A "|0" >/dev/null; API_UNCHECKED=1 listing A)"
kill "$2" "$GW_SIPP" 2>/dev/null
wait "$2" "$GW_SIPP" 2>/dev/null
# ---- 4. a call set up while the database is away is listed once it is back ----
CR3=$(id_of "$(api A POST /credentials "{\"username\":\"calls-3\",\"password\":\"$PW\"}")")
wait_for converged A || fail "the third credential did not reach node A's mirror"
pg_stop
assert_eq "the database away: GET .../calls answers 503" "error 503" "$(listing A)"
calls_through calls-3 calls-3 A
wait_for grep -q "event=call_start.*cred=$CR3" "$T/A.log" || fail "no call through node A while the database is away"
CA3=$(call_id A "$CR3")
pg_restart || fail "PostgreSQL did not start again"
took=$(listing_is A "A:$CA3:$CR3:outbound:confirmed|1")
echo "node A listed the call made while the database was away $took s after it was back"
assert_match "... node A lists it within 3 s of the database's return" '^[0-9.]+$' "$took"
# the write thread's connection broke with the restart: its first request may answer 503
# database_unavailable ("nothing was changed", Retry-After), as README says; then 204
for _ in $(seq 1 10); do
	out=$(api A DELETE "/credentials/$CR3")
	case $out in "503 "*database_unavailable*) sleep 0.3 ;; *) break ;; esac
done
assert_match "DELETE the third credential through node A: 204" "^204" "$out"
wait $PBX_SIPPS
assert_eq "node A's PBX got its BYE" 0 $?
wait "$GW_SIPP"
assert_eq "node A lists no call again" "|0" "$(listing_is A "|0" >/dev/null; API_UNCHECKED=1 listing A)"
assert_match "sipauthd_cluster_calls_pushed_total counts node A's writes" "^sipauthd_cluster_calls_pushed_total [1-9]" \
	"$(curl -s "http://$A_ADDR:$A_API_PORT/metrics" | grep '^sipauthd_cluster_calls_pushed_total')"
nodes_stop A
openapi_check
finish
