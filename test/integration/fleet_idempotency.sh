#!/bin/sh
# fleet_idempotency.sh: in fleet mode Idempotency-Key answers are the database's, so a client
# retrying a POST at another node gets the first answer and creates nothing; the same key with
# another body is 409 at any node; the same key while the first request still runs (at another
# node) is 409 idempotency_key_in_progress, and so is a claim whose answer was lost until it is
# 60 s old; the database away is 503 with nothing kept; an expired answer is replaced and expired
# ones are pruned in bounded batches; `init` upgrades a schema 3 database (adding the table).
. "$top_srcdir/test/lib.sh"
. "$top_srcdir/test/pg_lib.sh"

fleet_prepare
need curl
PW=secure_password_here_123
fleet_db_setup || { fail "the fleet database"; finish; }
GW_PORT=$(free_port 127.0.0.2)
node A 127.0.0.21
node B 127.0.0.22
nodes_connected A B

# post NODE IDEMPOTENCY-KEY BODY: POST .../credentials at NODE; status in $st, body in $T/body,
# headers in $T/hdr ($T/body.NODE.N keeps each body)
post() {
	eval "_base=http://\$${1}_ADDR:\$${1}_API_PORT"
	_url="$_base/v1/account/$ACC/trunks/$TRUNK/credentials"
	st=$(curl -s -o "$T/body" -D "$T/hdr" -w '%{http_code}' -H "Authorization: Bearer $KEY" \
		${2:+-H "Idempotency-Key: $2"} -H 'Content-Type: application/json' --data-binary "$3" "$_url")
	api_record POST "$_url" "$st" "$T/body" "$T/hdr"
}
hdr() { sed -n "s/^$1: \(.*\)\r$/\1/Ip" "$T/hdr"; }
code() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["error"]["code"])' "$T/body"; }
count() { psql_q "SELECT count(*) FROM credentials WHERE trunk_id = '$TRUNK'"; }
ONE="{\"username\":\"pbx-idem-01\",\"password\":\"$PW\"}"

post A order-7f3a "$ONE"
assert_eq "at node A the first POST creates: 201, not a replay" "201 " "$st $(hdr Idempotent-Replayed)"
cp "$T/body" "$T/first"; LOC=$(hdr Location)
assert_eq "the answer is kept in the database" "1 201" \
	"$(psql_q "SELECT count(*), max(status) FROM idempotency WHERE account_id = '$ACC'" | tr '|' ' ')"
assert_eq "what is kept holds no password" 0 "$(psql_q "SELECT count(*) FROM idempotency WHERE body LIKE '%$PW%'")"
post B order-7f3a "$ONE"
assert_eq "the retry at node B: 201 again" 201 "$st"
assert_eq "... the same body, byte for byte" "$(cat "$T/first")" "$(cat "$T/body")"
assert_eq "... the same Location" "$LOC" "$(hdr Location)"
assert_eq "... saying it is a replay" true "$(hdr Idempotent-Replayed)"
assert_eq "one credential in the database, not two" 1 "$(count)"
assert_eq "node B's list shows one" "200 ['pbx-idem-01']" "$(api B GET /credentials | python3 -c \
	'import json,sys; st, b = sys.stdin.read().split(" ", 1); print(st, [c["username"] for c in json.loads(b)["data"]])')"
post B order-7f3a "{\"username\":\"pbx-idem-02\",\"password\":\"$PW\"}"
assert_eq "the same key with another body at node B: 409 idempotency_key_reused" "409 idempotency_key_reused" \
	"$st $(code)"
post A order-7f3a "{\"username\":\"pbx-idem-02\",\"password\":\"$PW\"}"
assert_eq "... and at node A alike" "409 idempotency_key_reused" "$st $(code)"
assert_eq "... and nothing was created" 1 "$(count)"
post B weak-1 "{\"username\":\"pbx-idem-03\",\"password\":\"short\"}"
cp "$T/body" "$T/weak"
post A weak-1 "{\"username\":\"pbx-idem-03\",\"password\":\"short\"}"
assert_eq "a first answer that was 422 (at B) is given again at A" "422 true" "$st $(hdr Idempotent-Replayed)"
assert_eq "... the same body" "$(cat "$T/weak")" "$(cat "$T/body")"
post A "" "$ONE"
assert_eq "without the header the same POST runs: 409 duplicate_username" "409 duplicate_username" "$st $(code)"

# figures (printed, not asserted): a POST with a key (claim, change, answer: three statements)
# against one without, and a replay at the other node, each the median of 15
ms() { sort -n | sed -n 8p | awk '{ printf "%.1f", $1 * 1000 }'; }
timed() {
	_k=$1 _at=$2 _u=$3
	curl -s -o /dev/null -w '%{time_total}\n' -H "Authorization: Bearer $KEY" ${_k:+-H "Idempotency-Key: $_k"} \
		-H 'Content-Type: application/json' --data-binary "{\"username\":\"$_u\",\"password\":\"$PW\"}" \
		"http://$(eval echo \$${_at}_ADDR):$(eval echo \$${_at}_API_PORT)/v1/account/$ACC/trunks/$TRUNK/credentials"
}
with=$(for i in $(seq 1 15); do timed "fig-$i" A "fig-k-$i"; done | ms)
without=$(for i in $(seq 1 15); do timed "" A "fig-n-$i"; done | ms)
replay=$(for i in $(seq 1 15); do timed "fig-$i" B "fig-k-$i"; done | ms)
echo "# figures: POST at A with a key ${with} ms, without ${without} ms; the replay at B ${replay} ms (medians of 15)"
assert_eq "the figures' requests made 30 credentials, the replays none" 31 "$(count)"

# the same key while the first request still runs at another node: its change waits for the
# change log's lock, held here for 4 s
hold_log_lock
TWO="{\"username\":\"pbx-idem-04\",\"password\":\"$PW\"}"
curl -s -o "$T/slow.body" -w '%{http_code}' -H "Authorization: Bearer $KEY" -H "Idempotency-Key: slow-1" \
	-H 'Content-Type: application/json' --data-binary "$TWO" \
	"http://$A_ADDR:$A_API_PORT/v1/account/$ACC/trunks/$TRUNK/credentials" >"$T/slow.st" &
SLOW=$!
insert_waiting
post B slow-1 "$TWO"
assert_eq "the same key at B while A runs it: 409 idempotency_key_in_progress" "409 idempotency_key_in_progress" \
	"$st $(code)"
wait "$SLOW"
assert_eq "node A's request then completes: 201" 201 "$(cat "$T/slow.st")"
wait "$LOCKER"
post B slow-1 "$TWO"
assert_eq "the retry at B then gets A's answer" "201 true" "$st $(hdr Idempotent-Replayed)"
assert_eq "... the same body" "$(cat "$T/slow.body")" "$(cat "$T/body")"
assert_eq "two credentials more now" 32 "$(count)"

# a claim whose answer was lost (node A's connection ended while its change waited for the log's
# lock: 503 outcome_unknown) holds the key until it is 60 s old, then a retry runs again
hold_log_lock
LOST="{\"username\":\"pbx-idem-lost\",\"password\":\"$PW\"}"
post A lost-1 "$LOST" >/dev/null &
POSTER=$!
assert_eq "node A's waiting change is ended" 1 "$(end_waiting_insert)"
wait "$POSTER"
st=$(sed -n '1s/^HTTP[^ ]* \([0-9]*\).*/\1/p' "$T/hdr")   # post ran in a subshell
assert_eq "node A answered 503 outcome_unknown" "503 outcome_unknown" "$st $(code)"
wait "$LOCKER"
assert_eq "the claim stays (its release went with the connection)" "1 0" \
	"$(psql_q "SELECT count(*), max(status) FROM idempotency WHERE key_hash = sha256('lost-1')" | tr '|' ' ')"
post B lost-1 "$LOST"
assert_eq "a retry at B meanwhile: 409 idempotency_key_in_progress" "409 idempotency_key_in_progress" "$st $(code)"
psql_q "UPDATE idempotency SET created_at = created_at - 61 WHERE key_hash = sha256('lost-1')" >/dev/null
post B lost-1 "$LOST"
assert_eq "once the claim is 60 s old the retry at B runs (the change was not made): 201" "201 " \
	"$st $(hdr Idempotent-Replayed)"
assert_eq "... and its answer replaced the claim" 201 \
	"$(psql_q "SELECT status FROM idempotency WHERE key_hash = sha256('lost-1')")"

# an answer older than 24 hours is replaced by the next request with that key
psql_q "UPDATE idempotency SET created_at = created_at - 86400 WHERE account_id = '$ACC'" >/dev/null
post B order-7f3a "{\"username\":\"pbx-idem-05\",\"password\":\"$PW\"}"
assert_eq "an expired key with another body runs: 201, not a replay" "201 " "$st $(hdr Idempotent-Replayed)"
assert_eq "... and that write pruned 16 of the 18 other expired answers (a bounded batch)" "3 2" \
	"$(psql_q "SELECT count(*), count(*) FILTER (WHERE created_at < $(date +%s) - 3600) FROM idempotency" | tr '|' ' ')"

# the database away: 503, nothing run, nothing kept
pg_stop
wait_for grep -q "event=cluster_down" "$T/B.log"
THREE="{\"username\":\"pbx-idem-06\",\"password\":\"$PW\"}"
post B away-1 "$THREE"
assert_eq "database away: a POST with a key is 503 database_unavailable" "503 database_unavailable" "$st $(code)"
pg_restart || { fail "PostgreSQL restarted"; finish; }
assert_eq "nothing was created" 34 "$(count)"
assert_eq "nothing was kept for that key" 0 "$(psql_q "SELECT count(*) FROM idempotency WHERE key_hash = sha256('away-1')")"
wait_for sh -c "[ \"\$(grep -c event=cluster_connected '$T/A.log')\" = 2 ]"
for _ in 1 2 3 4 5; do   # the store thread's connection broke with the server: the first use finds out
	post A away-1 "$THREE"
	[ "$st" = 503 ] || break
	sleep 0.5
done
assert_eq "the retry (the database back) runs: 201, not a replay" "201 " "$st $(hdr Idempotent-Replayed)"
assert_eq "... and its answer's write pruned the last expired one" "2 0" \
	"$(psql_q "SELECT count(*), count(*) FILTER (WHERE created_at < $(date +%s) - 3600) FROM idempotency" | tr '|' ' ')"

# `init` upgrades a schema 3 database: the table is added
psql_q "DROP TABLE calls, idempotency, webhooks, webhook_deliveries; UPDATE schema_version SET version = 3" >/dev/null
ctl_db init >"$T/init.out" 2>&1
assert_eq "init upgrades schema 3: exit status 0" 0 $?
assert_eq "... to schema 6" 6 "$(psql_q 'SELECT version FROM schema_version')"
assert_eq "... with the idempotency table" idempotency "$(psql_q "SELECT to_regclass('idempotency')")"

openapi_check
nodes_stop A B
finish
