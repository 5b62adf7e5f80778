#!/bin/sh
# fleet_webhooks.sh: in fleet mode webhooks are the database's. On a database upgraded by `init`
# from schema 5 (tables dropped by SQL, then upgraded to 6, README's grants run again), two nodes:
# a webhook created through node A is answered alike by node B (the same JSON, never the secret);
# an event made at node B (a credential created through B's API, a REGISTER at B) reaches the
# receiver signed with the secret A's answer gave; each delivery is listed by both nodes'
# deliveries API with the node that sent it, paged as before; the 16-webhook limit holds across
# the nodes (also with creates racing at both); a delete at B stops every delivery at A and B,
# pending retries included; with the database away the webhook API answers 503 at every node while
# events are still sent from the mirror, and their deliveries are listed once it is back.
. "$top_srcdir/test/lib.sh"
. "$top_srcdir/test/pg_lib.sh"

fleet_prepare
need curl
PW=secure_password_here_123
fleet_db_setup || { fail "the fleet database"; finish; }

# ---- a schema 5 database (as before this version), upgraded by init ----
psql_q "DROP TABLE webhooks, webhook_deliveries; UPDATE schema_version SET version = 5" >/dev/null
n0=$(psql_q "SELECT count(*) FROM change_log")
ctl_db init >"$T/upgrade.out" 2>&1
assert_eq "init on schema 5: exit 0" 0 $?
assert_match "... saying it upgraded from 5 to 6" "upgraded database fleet on 127.0.0.1:[0-9]+ from schema 5 to 6" \
	"$(cat "$T/upgrade.out")"
assert_eq "... the schema is 6, with both tables" "6 webhooks webhook_deliveries" \
	"$(psql_q "SELECT version FROM schema_version") $(psql_q "SELECT to_regclass('webhooks')") $(psql_q "SELECT to_regclass('webhook_deliveries')")"
assert_eq "... the accounts, trunks, keys and change log as they were" "1 1 1 $n0" \
	"$(psql_q "SELECT count(*) FROM accounts") $(psql_q "SELECT count(*) FROM trunks") $(psql_q "SELECT count(*) FROM api_keys") $(psql_q "SELECT count(*) FROM change_log")"
psql -X -q "$DB" -c "INSERT INTO webhooks VALUES ('wh_bad', '$ACC', 'http://h/', 0, 'whsec_x', 1)" >/dev/null 2>&1
assert_eq "... a row the mirrors would refuse (no events) is refused by the schema" "1 0" \
	"$? $(psql_q "SELECT count(*) FROM webhooks")"
sed -n '/^CREATE ROLE sipauthd_node LOGIN;$/,/^SQL$/p' "$top_srcdir/README.md" | sed '1d;$d' >"$T/grants.sql"
psql -X -q "$DB" -v ON_ERROR_STOP=1 -f "$T/grants.sql" >/dev/null
assert_eq "README's grants run again after the upgrade" 0 $?

receiver R                       # answers 204 to a good signature
receiver RF --fail-first 1000    # answers 500: its deliveries stay pending, retried
receiver R0                      # for a webhook of node A's store alone (as made before the upgrade)

GW_PORT=$(free_port 127.0.0.2)
NODE_CONF="[webhooks]
private_targets = 127.0.0.1/32
retry_base = 1"
node A 127.0.0.21
node B 127.0.0.22
nodes_connected A B

# hooks NODE METHOD [PATH] [BODY]: the account's webhooks API at NODE; status in $st, body in
# $T/body (one line in $T/body.line)
hooks() {
	eval "_base=http://\$${1}_ADDR:\$${1}_API_PORT"
	_url="$_base/v1/account/$ACC/webhooks${3:-}"
	st=$(curl -s -o "$T/body" -D "$T/hdr" -w '%{http_code}' -X "$2" -H "Authorization: Bearer $KEY" \
		${4:+-H 'Content-Type: application/json' --data-binary "$4"} "$_url")
	api_record "$2" "$_url" "$st" "$T/body" "$T/hdr"
}
field() { python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$T/body" "$1"; }
# received NAME [EXPR]: the requests NAME got (EXPR over their list r: default, how many)
received() {
	python3 -c 'import json,sys; r=[json.loads(l) for l in open(sys.argv[1])]; print(eval(sys.argv[2]))' \
		"$T/$1.jsonl" "${2:-len(r)}"
}
# mirrored: both nodes have applied every change the database has
mirrored() {
	wait_for sh -c "[ \"\$(psql -X -qtA \"$DB\" -c \"SELECT count(*) FROM nodes WHERE applied_seq = (SELECT last FROM change_seq)\")\" = 2 ]"
}
# listed NODE WEBHOOK N: NODE lists N deliveries of WEBHOOK
listed() { hooks "$1" GET "/$2/deliveries"; [ "$(field 'len(j["data"])')" = "$3" ]; }
# cred_at NODE USER: creates credential USER through NODE's API (a credential.created event there)
cred_at() {
	api "$1" POST /credentials "{\"username\":\"$2\",\"password\":\"$PW\"}" | cut -c1-3
}

# ---- created through A, the same at B ----
hooks A POST "" "{\"url\":\"http://127.0.0.1:$R_PORT/hook\",\"events\":[\"credential.created\",\"registration.created\"]}"
assert_eq "a webhook created through node A: 201" 201 "$st"
[ "$st" = 201 ] || { cat "$T/body"; finish; }
W1=$(field 'j["id"]')
field 'j["secret"]' >"$T/R.secret"
assert_match "... its secret in that answer" '^whsec_[A-Za-z0-9_-]{43}$' "$(cat "$T/R.secret")"
assert_eq "... and in the database (it signs at every node)" "1 $(cat "$T/R.secret")" \
	"$(psql_q "SELECT count(*), min(secret) FROM webhooks WHERE id = '$W1'" | tr '|' ' ')"
assert_eq "... logged as a change, as credentials are" 1 \
	"$(psql_q "SELECT count(*) FROM change_log WHERE kind = 'webhooks' AND op = 'insert' AND payload->>'id' = '$W1'")"
hooks A GET; cp "$T/body" "$T/list.A"
hooks B GET; cp "$T/body" "$T/list.B"
assert_eq "node B lists it: 200" 200 "$st"
assert_eq "... the same JSON as node A's list, byte for byte" "$(cat "$T/list.A")" "$(cat "$T/list.B")"
assert_eq "... one webhook, without a secret" "1 False $W1" "$(field 'len(j["data"]), "secret" in j["data"][0], j["data"][0]["id"]' | tr -d "(),'")"
hooks A GET "/$W1"; cp "$T/body" "$T/one.A"
hooks B GET "/$W1"
assert_eq "GET of it at node B: 200, the same JSON as at A" "200 $(cat "$T/one.A")" "$st $(cat "$T/body")"
assert_nomatch "... without the secret" whsec_ "$(cat "$T/body")"

# ---- an event at node B, delivered by B, signed with A's secret ----
mirrored
t0=$(date +%s.%N)
assert_eq "a credential created through node B's API: 201" 201 "$(cred_at B pbx-wh-b1)"
wait_for sh -c "[ \"\$(python3 -c 'import sys; print(sum(1 for _ in open(sys.argv[1])))' \"$T/R.jsonl\")\" -ge 1 ]"
t1=$(received R 'r[0]["at"]')
assert_eq "the receiver got credential.created, signature valid, answered 204" \
	"1 credential.created True 204 pbx-wh-b1 $ACC" \
	"$(received R 'len(r), r[0]["event"], r[0]["sig_ok"], r[0]["answered"], r[0]["body"]["data"]["username"], r[0]["body"]["account_id"]' | tr -d "(),'")"
D1=$(received R 'r[0]["delivery"]')
wait_for listed A "$W1" 1 || fail "node A does not list B's delivery"
t2=$(date +%s.%N)
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%d", (b - a) * 1000 }'; }
echo "# figures: the credential.created made at B reached the receiver $(ms "$t0" "$t1") ms after the POST was sent;" \
	"node A listed its delivery $(ms "$t0" "$t2") ms after it (polled every 0.1 s)"
assert_match "... a delivery id of the fleet's form (random)" '^dlv_[0-9a-f]{16}$' "$D1"
assert_eq "a REGISTER at node B: 200" 200 "$(reg B pbx-wh-b1)"
wait_for sh -c "[ \"\$(python3 -c 'import sys; print(sum(1 for _ in open(sys.argv[1])))' \"$T/R.jsonl\")\" -ge 2 ]"
assert_eq "the receiver got registration.created for it, signature valid" \
	"2 registration.created True pbx-wh-b1 udp" \
	"$(received R 'len(r), r[1]["event"], r[1]["sig_ok"], r[1]["body"]["data"]["username"], r[1]["body"]["data"]["transport"]' | tr -d "(),'")"
D2=$(received R 'r[1]["delivery"]')

# ---- the deliveries, listed by both nodes with node B's name ----
wait_for listed A "$W1" 2 || fail "node A does not list B's two deliveries"
cp "$T/body" "$T/dlv.A"
hooks B GET "/$W1/deliveries"
assert_eq "node B lists the same deliveries as node A (200, the same JSON)" "200 $(cat "$T/dlv.A")" "$st $(cat "$T/body")"
assert_eq "... two, with B's name, delivered at the first attempt, in order" \
	"$D1 B delivered 1 204 credential.created $D2 B delivered 1 204 registration.created False" \
	"$(field '" ".join("%s %s %s %s %s %s" % (d["id"], d["node"], d["status"], d["attempts"], d["last_status_code"], d["event"]) for d in j["data"]), j["has_more"]' | tr -d "(),'\"")"
hooks A GET "/$W1/deliveries?limit=1"
assert_eq "paged: limit=1 gives the first, has_more" "200 $D1 True" "$st $(field 'j["data"][0]["id"], j["has_more"]' | tr -d "(),'")"
hooks B GET "/$W1/deliveries?limit=1&starting_after=$D1"
assert_eq "... starting_after it (at the other node) the second, no more" "200 $D2 False" \
	"$st $(field 'j["data"][0]["id"], j["has_more"]' | tr -d "(),'")"
hooks B GET "/$W1/deliveries?starting_after=dlv_0000000000000000"
assert_eq "... an unknown cursor: 400 invalid_parameter" "400 invalid_parameter" "$st $(field 'j["error"]["code"]')"
assert_eq "an event at node A is sent by A: 201" 201 "$(cred_at A pbx-wh-a1)"
wait_for listed B "$W1" 3 || fail "node B does not list A's delivery"
assert_eq "... listed at B with A's name, third" "pbx-wh-a1 A delivered" \
	"$(received R 'r[2]["body"]["data"]["username"]') $(field 'j["data"][2]["node"], j["data"][2]["status"]' | tr -d "(),'")"
assert_eq "the database holds each node's deliveries" "A|1
B|2" "$(psql_q "SELECT node, count(*) FROM webhook_deliveries GROUP BY node ORDER BY node")"
assert_match "node B counts the states it pushed" "sipauthd_cluster_deliveries_pushed_total [1-9]" \
	"$(curl -s "http://$B_ADDR:$B_API_PORT/metrics")"
assert_match "... and none lost" "sipauthd_cluster_deliveries_lost_total 0" "$(curl -s "http://$B_ADDR:$B_API_PORT/metrics")"

# ---- every validation answer and the limit, the same at each node ----
for body in '{"events":["auth.failed"]}' '{"url":"ftp://127.0.0.1/x","events":["auth.failed"]}' \
	'{"url":"http://127.0.0.1/x","events":["call.ended"]}' '{"url":"http://127.0.0.1/x","events":["auth.failed"],"secret":"s"}'; do
	hooks A POST "" "$body"; a="$st $(cat "$T/body")"
	hooks B POST "" "$body"
	assert_eq "a refused body is refused alike at B ($(field 'j["error"]["field"]'))" "$a" "$st $(cat "$T/body")"
done
assert_match "... those were 422s" '^422 ' "$a"
# up to 12 webhooks, then 8 creates at once, 4 through each node: 4 get in, 4 get 409
for i in $(seq 2 12); do
	hooks "$( [ $((i % 2)) = 0 ] && echo A || echo B)" POST "" "{\"url\":\"http://127.0.0.1:9/n$i\",\"events\":[\"source.banned\"]}"
	[ "$st" = 201 ] || fail "webhook $i: $st"
done
mk() {
	eval "_base=http://\$${1}_ADDR:\$${1}_API_PORT"
	curl -s -o "$T/race.$2" -w '%{http_code}\n' -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
		--data-binary "{\"url\":\"http://127.0.0.1:9/race$2\",\"events\":[\"source.banned\"]}" "$_base/v1/account/$ACC/webhooks"
}
for i in 1 2 3 4; do mk A "a$i" >"$T/race.st.a$i" & mk B "b$i" >"$T/race.st.b$i" & done
wait_for sh -c "[ \$(cat $T/race.st.* | wc -l) = 8 ]"
assert_eq "8 creates racing at both nodes from 12: four 201, four 409" "4 4" \
	"$(grep -c 201 $T/race.st.* | awk -F: '{s+=$2} END {print s}') $(grep -c 409 $T/race.st.* | awk -F: '{s+=$2} END {print s}')"
assert_eq "... the database holds 16" 16 "$(psql_q "SELECT count(*) FROM webhooks WHERE account_id = '$ACC'")"
hooks B POST "" '{"url":"http://127.0.0.1:9/17","events":["source.banned"]}'
assert_eq "the 17th at node B: 409 limit_reached, as on a single host" \
	"409 limit_reached an account may have at most 16 webhooks" "$st $(field 'j["error"]["code"], j["error"]["message"]' | tr -d "(),'")"
hooks A POST "" '{"url":"http://127.0.0.1:9/17","events":["source.banned"]}'
assert_eq "... and at node A" 409 "$st"
hooks A GET "?limit=20"; cp "$T/body" "$T/list16.A"
hooks B GET "?limit=20"
assert_eq "both nodes list the same 16 (the same JSON)" "16 $(cat "$T/list16.A")" "$(field 'len(j["data"])') $(cat "$T/body")"
# make room: the extra ones go (through either node), W1 stays
for w in $(field '" ".join(d["id"] for d in j["data"] if d["id"] != "'"$W1"'")'); do
	hooks A DELETE "/$w"; [ "$st" = 204 ] || fail "delete $w: $st"
done

# ---- a webhook whose receiver fails: pending at B, dropped everywhere by a delete at A ----
hooks B POST "" "{\"url\":\"http://127.0.0.1:$RF_PORT/fail\",\"events\":[\"credential.created\"]}"
WF=$(field 'j["id"]'); field 'j["secret"]' >"$T/RF.secret"
assert_eq "a second webhook, created through B: 201" 201 "$st"
mirrored
assert_eq "an event at node A (a credential through A): 201" 201 "$(cred_at A pbx-wh-a2)"
wait_for sh -c "[ \"\$(python3 -c 'import sys; print(sum(1 for _ in open(sys.argv[1])))' \"$T/RF.jsonl\")\" -ge 2 ]"
pending() { hooks B GET "/$WF/deliveries"; [ "$(field 'j["data"][0]["attempts"] if j["data"] else 0')" -ge 2 ]; }
wait_for pending || fail "the failing delivery is not listed with two attempts"
assert_eq "its delivery: pending at node A, retried, HTTP 500, listed at node B" "A pending HTTP 500 1" \
	"$(field 'j["data"][0]["node"], j["data"][0]["status"], j["data"][0]["last_error"], len(j["data"])' | tr -d "(),'")"
hooks A DELETE "/$W1"
assert_eq "deleting the first webhook at node A: 204" 204 "$st"
hooks B DELETE "/$WF"
assert_eq "deleting the failing one at node B: 204" 204 "$st"
mirrored
hooks A GET "/$WF"
assert_eq "node A no longer knows it: 404" "404 webhook $WF not found" "$st $(field 'j["error"]["message"]')"
hooks B GET "/$W1/deliveries"
assert_eq "... nor B the first one's deliveries: 404" 404 "$st"
assert_eq "the database dropped their deliveries" 0 "$(psql_q "SELECT count(*) FROM webhook_deliveries")"
n_r=$(received R); n_rf=$(received RF)
assert_eq "events at both nodes after the deletes: 201 201" "201 201" "$(cred_at A pbx-wh-a3) $(cred_at B pbx-wh-b3)"
sleep 5   # the failing delivery's next retry would have come within 4 s
assert_eq "... nothing more reached either receiver (no new event, no retry of the pending one)" "$n_r $n_rf" \
	"$(received R) $(received RF)"

# ---- the database away: 503 at every node, events still sent, listed once it is back ----
hooks A POST "" "{\"url\":\"http://127.0.0.1:$R_PORT/again\",\"events\":[\"registration.created\"]}"
W3=$(field 'j["id"]'); field 'j["secret"]' >"$T/R.secret"
mirrored
pg_stop
for n in A B; do
	hooks $n GET
	assert_eq "database away: GET webhooks at $n is 503 database_unavailable" "503 database_unavailable" \
		"$st $(field 'j["error"]["code"]')"
	hooks $n POST "" '{"url":"http://127.0.0.1:9/x","events":["auth.failed"]}'
	assert_eq "... POST at $n" "503 database_unavailable" "$st $(field 'j["error"]["code"]')"
	hooks $n GET "/$W3"
	assert_eq "... GET of one at $n" 503 "$st"
	hooks $n GET "/$W3/deliveries"
	assert_eq "... its deliveries at $n" 503 "$st"
	hooks $n DELETE "/$W3"
	assert_eq "... DELETE at $n" 503 "$st"
done
n_r=$(received R)
assert_eq "a REGISTER at node B meanwhile: 200" 200 "$(reg B pbx-wh-b3)"
wait_for sh -c "[ \"\$(python3 -c 'import sys; print(sum(1 for _ in open(sys.argv[1])))' \"$T/R.jsonl\")\" -gt $n_r ]"
assert_eq "... its registration.created is sent from B's mirror, signed with the new secret" \
	"registration.created True /again" "$(received R 'r[-1]["event"], r[-1]["sig_ok"], r[-1]["path"]' | tr -d "(),'")"
pg_restart || fail "PostgreSQL did not start again"
wait_for listed A "$W3" 1 || fail "the delivery made while the database was away is not listed"
assert_eq "once the database is back, node A lists it: B's, delivered" "B delivered $(received R 'r[-1]["delivery"]')" \
	"$(field 'j["data"][0]["node"], j["data"][0]["status"], j["data"][0]["id"]' | tr -d "(),'")"

# ---- a webhook in node A's store alone (as one made before the upgrade) becomes the fleet's ----
nodes_stop A
mv "$T/A.log" "$T/A-run1.log"
sed '/^\[cluster\]$/,/^node = A$/d' "$T/A.conf" >"$T/A1.conf"   # node A's store, as a single host
spawn "$T/A1.log" "$SIPAUTHD" --config "$T/A1.conf"
A1_PID=$!
wait_for curl -sf -o /dev/null "http://$A_ADDR:$A_API_PORT/healthz" || fail "node A's store as a single host"
hooks A POST "" "{\"url\":\"http://127.0.0.1:$R0_PORT/own\",\"events\":[\"credential.created\"]}"
W0=$(field 'j["id"]'); field 'j["secret"]' >"$T/R0.secret"
assert_eq "a webhook made in node A's store alone: 201, not in the database" "201 0" \
	"$st $(psql_q "SELECT count(*) FROM webhooks WHERE id = '$W0'")"
stop "$A1_PID"
node A 127.0.0.21
nodes_connected A
wait_for grep -q "event=cluster_webhooks_adopted node=A webhooks=1" "$T/A.log" ||
	fail "node A did not copy its own webhook into the database"
assert_eq "... at its next start node A copied it into the database, with its secret" "1 $(cat "$T/R0.secret")" \
	"$(psql_q "SELECT count(*), min(secret) FROM webhooks WHERE id = '$W0'" | tr '|' ' ')"
mirrored
hooks A GET "/$W0"; cp "$T/body" "$T/own.A"
hooks B GET "/$W0"
assert_eq "... node B shows it as node A does" "200 $(cat "$T/own.A")" "$st $(cat "$T/body")"
assert_eq "an event at node B: 201" 201 "$(cred_at B pbx-wh-b4)"
wait_for sh -c "[ -s \"$T/R0.jsonl\" ]"
assert_eq "... sent by B to that webhook, signed with the secret of node A's store" "1 credential.created True pbx-wh-b4" \
	"$(received R0 'len(r), r[0]["event"], r[0]["sig_ok"], r[0]["body"]["data"]["username"]' | tr -d "(),'")"
nodes_stop A
mv "$T/A.log" "$T/A-run2.log"
node A 127.0.0.21
nodes_connected A
mirrored
assert_eq "a restarted node copies nothing (its webhooks are the database's)" "0 1" \
	"$(grep -c "event=cluster_webhooks_adopted" "$T/A.log") $(psql_q "SELECT count(*) FROM webhooks WHERE id = '$W0'")"

for n in A B; do
	assert_nomatch "node $n never logged a webhook secret" "whsec_" "$(cat "$T/$n"*.log)"
done
openapi_check
nodes_stop A B
finish
