# fleet_nonce.sh: fleet mode's nonces and failure log on a real PostgreSQL 15, three sipauthd
# nodes on 127.0.0.41-43: the nodes take the nonce key from the database (the first one makes
# it), another node's nonce is answered stale=true with a node's own (and the PBX then
# registers there), `sipauthctl --database nonce-key rotate` keeps the previous key for
# nonce_ttl, secrets never show, and every node's auth failures are listed by any node's API.
. "$top_srcdir/test/lib.sh"
. "$top_srcdir/test/pg_lib.sh"

need curl
fleet_prepare

PW=secure_password_here_123
TTL=15
ctl_db() { "$SIPAUTHCTL" --database "$DB" "$@"; }
ctl_db init --domain sip.tryvox.io >/dev/null
ACC=$(ctl_db account create --name fleet)
TRUNK=$(ctl_db trunk create --account "$ACC" --name nonces)
TRUNK2=$(ctl_db trunk create --account "$ACC" --name failures)
KEY=$(ctl_db apikey create --account "$ACC")
for t in "$TRUNK:pbx" "$TRUNK2:pbx2"; do
	printf '%s\n' "$PW" | ctl_db credential create --trunk "${t%%:*}" --username "${t#*:}" --password-stdin >/dev/null
done
assert_eq "no nonce key before any node started" 0 "$(psql_q 'SELECT count(*) FROM nonce_keys')"

# the nodes connect as a role with exactly the rights README's "Running a fleet" grants
sed -n '/^CREATE ROLE sipauthd_node LOGIN;$/,/^SQL$/p' "$top_srcdir/README.md" | sed '$d' >"$T/grants.sql"
assert_eq "README's grants found" 17 "$(wc -l <"$T/grants.sql")"
psql -X -q "$DB" -v ON_ERROR_STOP=1 -f "$T/grants.sql" >/dev/null || fail "README's grants"
NODE_DB="host=127.0.0.1 port=$PG_PORT user=sipauthd_node dbname=postgres"
GW_PORT=$(free_port 127.0.0.2)

node() { fleet_node "$1" "$2" "nonce_ttl = $TTL"; }
node A 127.0.0.41
node B 127.0.0.42
node C 127.0.0.43
for n in A B C; do
	wait_for grep -q "event=nonce_key_loaded node=$n " "$T/$n.log" ||
		{ cat "$T/$n.log"; fail "node $n loaded no nonce key"; finish; }
done
K1=$(psql_q 'SELECT id FROM nonce_keys WHERE retired_at IS NULL')
assert_eq "the first node made one key; the others took it (no second key)" 1 "$(psql_q 'SELECT count(*) FROM nonce_keys')"
for n in A B C; do
	assert_match "node $n issues with the database's key $K1" "event=nonce_key_loaded node=$n key=$K1 previous=0" "$(cat "$T/$n.log")"
done
assert_eq "the key is no change: not in change_log" 0 "$(psql_q "SELECT count(*) FROM change_log WHERE kind = 'nonce_keys'")"

STRANGER="python3 $top_srcdir/test/stranger.py"
TRUNK_HOST="trunk-$TRUNK.sip.tryvox.io"
# save NODE FILE [USER]: a REGISTER answering NODE's challenge, kept in FILE and not sent
save() {
	eval "_addr=\$${1}_ADDR; _port=\$${1}_PORT"
	$STRANGER auth --server "$_addr:$_port" --local-ip 127.0.0.1 --host "$TRUNK_HOST" --user "${3:-pbx}" --password "$PW" \
		--save "$2" --dont-send --timeout 0.5 >/dev/null
}
# replay NODE FILE [EXPR]: send FILE's REGISTER (new branch) to NODE; prints EXPR over the answer
replay() {
	eval "_addr=\$${1}_ADDR; _port=\$${1}_PORT"
	$STRANGER auth --server "$_addr:$_port" --local-ip 127.0.0.1 --user pbx --password "$PW" --replay "$2" \
		--answer-stale --timeout 0.7 | json_get "${3:-final.get('status'), final.get('stale')}" | tr -d "(),'"
}
# nonce FILE: "key-id instance-hex" of the nonce a saved REGISTER answers (nonce.h's layout)
nonce_of() {
	python3 -c 'import base64,sys; n=sys.argv[1]; r=base64.urlsafe_b64decode(n + "=" * (-len(n) % 4)); print(r[0], r[1], r[11:17].hex())' "$1"
}
nonce() { nonce_of "$(python3 -c 'import re,sys; print(re.search(r"[ ,]nonce=\"([^\"]+)\"", open(sys.argv[1]).read()).group(1))' "$1")"; }
metric() {
	eval "_addr=\$${1}_ADDR; _api=\$${1}_API_PORT"
	curl -s "http://$_addr:$_api/metrics" | awk -v n="$2 " 'index($0, n) == 1 { print $2 }'
}

# ---- another node's nonce ----
save A "$T/a1.sip"
save B "$T/b1.sip"
na=$(nonce "$T/a1.sip"); nb=$(nonce "$T/b1.sip")
assert_eq "node A's nonce: version 2, key $K1" "2 $K1" "${na% *}"
assert_eq "node B's nonce: the same key" "2 $K1" "${nb% *}"
assert_nomatch "... but each names its own node's instance" "^${na##* }$" "${nb##* }"
out=$($STRANGER auth --server "$B_ADDR:$B_PORT" --local-ip 127.0.0.1 --user pbx --password "$PW" --replay "$T/a1.sip" \
	--answer-stale --timeout 2)
assert_eq "node A's nonce answered at node B: 401 with stale=true" "401 True" \
	"$(printf '%s\n' "$out" | json_get 'final.get("status"), final.get("stale")' | tr -d "(),'")"
nbs=$(nonce_of "$(printf '%s\n' "$out" | json_get 'final.get("nonce")')")
assert_eq "... with node B's own nonce (B's instance, the fleet's key)" "2 $K1 ${nb##* }" "$nbs"
assert_eq "... which the PBX answers at node B: 200" 200 \
	"$(printf '%s\n' "$out" | json_get 'final.get("answered_status")')"
assert_match "node B logs why: stale=other_node" \
	"event=auth_failure reason=stale_nonce trunk=$TRUNK username=\"pbx\" method=REGISTER .* stale=other_node" "$(cat "$T/B.log")"
assert_eq "node B counts it by cause" 1 "$(metric B 'sipauthd_auth_stale_nonces_by_cause_total{cause="other_node"}')"
assert_eq "node B: no password verdict on it" 0 "$(metric B 'sipauthd_auth_failures_total{reason="bad_password"}')"
assert_eq "node A still takes its own nonce (its replay state is A's alone): 200" "200 False" "$(replay A "$T/a1.sip")"
assert_eq "... and refuses the same nonce-count again (replay)" "401 False" "$(replay A "$T/a1.sip")"
assert_eq "node C answers node A's nonce stale=true too" "401 True" \
	"$(replay C "$T/a1.sip" 'final.get("status"), final.get("stale")')"

# ---- rotation ----
save A "$T/pre1.sip"
save A "$T/pre2.sip"
t_pre=$(date +%s)
"$SIPAUTHCTL" --store "$T/none" nonce-key rotate >"$T/out" 2>"$T/err"
assert_eq "nonce-key rotate with --store: exit 1, says fleet mode only" \
	"1 sipauthctl: nonce-key rotate applies to fleet mode (--database CONNINFO) only: a single host keeps no nonce key in its store, it makes a new one at each start" \
	"$? $(cat "$T/out" "$T/err")"
t0=$(date +%s.%N)
ctl_db nonce-key rotate >"$T/rot.out" 2>"$T/rot.err"
rc=$?
K2=$(psql_q 'SELECT id FROM nonce_keys WHERE retired_at IS NULL')
assert_eq "rotate: exit 0, one line naming the new key and the retired one" \
	"0 nonce key $K2 is now current (key $K1 retired: its nonces are accepted for nonce_ttl)|" \
	"$rc $(cat "$T/rot.out")|$(cat "$T/rot.err")"
assert_eq "the new key's id is the next one" "$((K1 % 255 + 1))" "$K2"
assert_eq "the previous key is retired, kept" "1 1" \
	"$(psql_q "SELECT count(*) FILTER (WHERE retired_at IS NOT NULL AND id = $K1), count(*) FILTER (WHERE retired_at IS NULL) FROM nonce_keys" | tr '|' ' ')"
for n in A B C; do
	wait_for grep -q "event=nonce_key_loaded node=$n key=$K2 previous=$K1" "$T/$n.log" ||
		fail "node $n did not take key $K2 within 10 s"
done
pass "every node took key $K2 (with its heartbeat)"
echo "rotation to the new key at all three nodes: $(python3 -c "import sys; print('%.2f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$t0" "$(date +%s.%N)") s (polled every 0.1 s)"
assert_eq "a nonce of key $K1 issued before the rotation is accepted at its node after it" "200 False" "$(replay A "$T/pre1.sip")"
save A "$T/post.sip"
assert_eq "a new nonce uses key $K2" "2 $K2" "$(nonce "$T/post.sip" | cut -d' ' -f1-2)"
assert_eq "... and registers" "200 False" "$(replay A "$T/post.sip")"
wait_s=$((t_pre + TTL + 1 - $(date +%s)))
[ "$wait_s" -gt 0 ] && sleep "$wait_s"
assert_eq "after nonce_ttl, key $K1's nonce gets stale=true" "401 True" \
	"$(replay A "$T/pre2.sip" 'final.get("status"), final.get("stale")')"
assert_match "... logged stale=expired" "reason=stale_nonce trunk=$TRUNK .* stale=expired" "$(cat "$T/A.log")"
ctl_db nonce-key rotate >"$T/rot2.out"
K3=$(psql_q 'SELECT id FROM nonce_keys WHERE retired_at IS NULL')
wait_for grep -q "event=nonce_key_loaded node=A key=$K3 previous=$K2" "$T/A.log" || fail "node A did not take key $K3"
assert_eq "a second rotation: key $K3, $K2 retired" "nonce key $K3 is now current (key $K2 retired: its nonces are accepted for nonce_ttl)" \
	"$(cat "$T/rot2.out")"
# a node holds three keys (the one before the previous, at first its own start-up key): key
# $K1 is still checked, and its nonce is expired
n_expired=$(grep -c "stale=expired" "$T/A.log")
assert_eq "after a second rotation key $K1's nonce is still stale=true" "401 True" \
	"$(replay A "$T/pre2.sip" 'final.get("status"), final.get("stale")')"
assert_eq "... logged stale=expired (key $K1 is the third key held)" "$((n_expired + 1))" "$(grep -c "stale=expired" "$T/A.log")"
ctl_db nonce-key rotate >"$T/rot3.out"
K4=$(psql_q 'SELECT id FROM nonce_keys WHERE retired_at IS NULL')
wait_for grep -q "event=nonce_key_loaded node=A key=$K4 previous=$K3" "$T/A.log" || fail "node A did not take key $K4"
assert_eq "after a third rotation key $K1's nonce names a key no node holds: stale=true" "401 True" \
	"$(replay A "$T/pre2.sip" 'final.get("status"), final.get("stale")')"
assert_match "... logged stale=unknown_key" "stale=unknown_key" "$(cat "$T/A.log")"

# secrets: never in a log, in sipauthctl's output or in the change log
leaks=0
for s in $(psql_q "SELECT encode(secret, 'hex') FROM nonce_keys"); do
	cat "$T"/A.log "$T"/B.log "$T"/C.log "$T"/rot*.out "$T"/rot*.err | grep -qi "$s" && leaks=$((leaks + 1))
	[ "$(psql_q "SELECT count(*) FROM change_log WHERE payload::text ILIKE '%$s%'")" = 0 ] || leaks=$((leaks + 1))
	cat "$PG_DIR/server.log" | grep -qi "$s" && leaks=$((leaks + 1))
done
assert_eq "no nonce key secret in the nodes' logs, sipauthctl's output, change_log or the server log" 0 "$leaks"

# ---- every node's failures, listed by any node ----
TRUNK2_HOST="trunk-$TRUNK2.sip.tryvox.io"
# wrong NODE USER: a REGISTER with a wrong password at NODE; its final status
wrong() {
	eval "_addr=\$${1}_ADDR; _port=\$${1}_PORT"
	$SIPCLIENT register --server "$_addr:$_port" --local-ip 127.0.0.1 --host "$TRUNK2_HOST" --user "$2" \
		--password "$PW" --wrong-password wrong_password_0000 --algorithms MD5 --expires 60 --timeout 2 |
		json_get 'final.get("final_status")'
}
SIPCLIENT="python3 $top_srcdir/test/sipclient.py"
# fleet_count N: wait until the fleet's log holds N failures of trunk 2
fleet_count() {
	wait_for sh -c "[ \"\$(psql -X -qtA \"$DB\" -c \"SELECT count(*) FROM auth_failures WHERE trunk_id = '$TRUNK2'\")\" = $1 ]"
}
st=""
for _ in 1 2 3; do st="$st$(wrong A pbx2)"; done
# the list is newest first in the order failures reach the database (each node pushes after its
# heartbeat, every second): node B's come after node A's are in
fleet_count 3 || fail "node A's 3 failures did not reach the database within 10 s"
t0=$(date +%s.%N)
for _ in 1 2; do st="$st$(wrong B nobody)"; done
t1=$(date +%s.%N)
assert_eq "3 wrong passwords at node A, 2 unknown users at node B: 401 each" 401401401401401 "$st"
# api NODE PATH: "STATUS BODY"; the answer kept for openapi_check
api() {
	eval "_base=http://\$${1}_ADDR:\$${1}_API_PORT"
	_url="$_base/v1/account/$ACC/trunks/$TRUNK2$2"
	_st=$(curl -s -o "$T/api.body" -D "$T/api.hdr" -w '%{http_code}' -H "Authorization: Bearer $KEY" "$_url")
	api_record GET "$_url" "$_st" "$T/api.body" "$T/api.hdr"
	echo "$_st $(tr -d '\n' <"$T/api.body")"
}
# summary: "count node:reason:username ..." of an auth-failures answer, newest first
summary() {
	python3 -c 'import json,sys; d=json.loads(sys.stdin.read().split(" ",1)[1]); print(len(d["data"]), " ".join("%s:%s:%s" % (f.get("node"), f["reason"], f["username"]) for f in d["data"]), d["has_more"])'
}
fleet_count 5 || fail "the 5 failures did not reach the database within 10 s"
echo "node B's failures in the fleet's log $(python3 -c "import sys; print('%.2f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$t1" "$(date +%s.%N)") s after its last one (heartbeat every 1 s; polled every 0.1 s)"
out=$(api C /auth-failures)
assert_match "node C's API: 200" "^200 " "$out"
assert_eq "node C lists the failures of nodes A and B, newest first, with their node" \
	"5 B:unknown_user:nobody B:unknown_user:nobody A:bad_password:pbx2 A:bad_password:pbx2 A:bad_password:pbx2 False" \
	"$(printf '%s' "$out" | summary)"
assert_eq "node C saw none of them itself" 0 "$(psql_q "SELECT count(*) FROM auth_failures WHERE node = 'C' AND trunk_id = '$TRUNK2'")"
assert_eq "node A's API lists the same" "$(printf '%s' "$out" | summary)" "$(api A /auth-failures | summary)"
p1=$(api C "/auth-failures?limit=2")
assert_eq "a page of 2" "2 B:unknown_user:nobody B:unknown_user:nobody True" "$(printf '%s' "$p1" | summary)"
last=$(printf '%s' "$p1" | python3 -c 'import json,sys; print(json.loads(sys.stdin.read().split(" ",1)[1])["data"][-1]["id"])')
assert_eq "the next page after it" "3 A:bad_password:pbx2 A:bad_password:pbx2 A:bad_password:pbx2 False" \
	"$(api C "/auth-failures?starting_after=$last" | summary)"
assert_eq "since a time to come: none" "0  False" "$(api C "/auth-failures?since=2100-01-01T00:00:00Z" | summary)"
assert_match "a cursor of another shape: 400" "^400 " "$(api C "/auth-failures?starting_after=cred_x")"
m=$(metric A sipauthd_cluster_auth_failures_pushed_total)
assert_eq "node A counted what it pushed (every failure it saw, both trunks)" \
	"$(psql_q "SELECT count(*) FROM auth_failures WHERE node = 'A'")" "$m"
assert_eq "... and lost none" 0 "$(metric A sipauthd_cluster_auth_failures_lost_total)"
assert_eq "node A's own log keeps its 3 (as before)" 3 \
	"$(grep -c "event=auth_failure reason=bad_password trunk=$TRUNK2" "$T/A.log")"

# the database away: a node keeps its failures queued (bounded) and pushes them when it returns
pg_stop
for n in A C; do
	wait_for grep -q "event=cluster_down node=$n" "$T/$n.log" || fail "node $n did not see the database go"
done
assert_eq "the database away: a wrong password at node A still gets 401" 401 "$(wrong A pbx2)"
assert_eq "... and waits in the queue" 1 "$(metric A sipauthd_cluster_auth_failures_queued)"
assert_match "node C's API: 503 while the database is away" "^503 " "$(api C /auth-failures)"
pg_restart || fail "PostgreSQL did not start again"
fleet_count 6 || fail "the queued failure did not reach the database after it came back"
for _ in $(seq 1 50); do [ "$(api C /auth-failures | summary | cut -d' ' -f1)" = 6 ] && break; sleep 0.2; done
assert_eq "node C lists it once the database is back" "6 A:bad_password:pbx2" "$(api C /auth-failures | summary | cut -d' ' -f1-2)"
assert_eq "nothing lost" 0 "$(metric A sipauthd_cluster_auth_failures_lost_total)"

# (a query in flight when the database was stopped above ends with the server's shutdown: not a refusal)
assert_eq "no query of a node was refused (the README grants suffice)" "" \
	"$(grep -h "event=cluster_query_failed" "$T/A.log" "$T/B.log" "$T/C.log" |
		grep -v 'error="terminating connection due to administrator command"')"

# a restart: the keys outlive it (they are the database's), the replay table does not, so a
# nonce node A issued before its restart is answered stale=true after it, never accepted
save A "$T/before-restart.sip"
stop "$A_PID"
spawn "$T/A2.log" "$SIPAUTHD" --config "$T/A.conf"
A_PID=$!
wait_for grep -q "event=nonce_key_loaded node=A key=$K4 " "$T/A2.log" || fail "node A did not load key $K4 after its restart"
assert_eq "node A's nonce from before its restart, answered after it: 401 stale=true" "401 True" \
	"$(replay A "$T/before-restart.sip" 'final.get("status"), final.get("stale")')"
assert_match "... as another instance's (stale=other_node)" "reason=stale_nonce trunk=$TRUNK .* stale=other_node" "$(cat "$T/A2.log")"
openapi_check
for n in A B C; do eval "stop \$${n}_PID"; done
finish
