#!/bin/sh
# webhooks.sh: webhooks on the real daemon, end to end (issue 15): created with curl (the secret
# shown once, 422s naming the field), each event type set off by the API or by SIP (sipclient,
# a sipp gateway) and received by local receivers (test/webhook_receiver.py) that check the
# Sipauthd-Signature; a receiver that answers 500 twice gets the event on the third attempt
# (retry_base = 1 s: after 1 s, then 2 s); HTTPS targets are verified (a certificate of the
# test's CA, given as [webhooks] ca_file, is accepted; a self-signed one is refused and says
# why); the deliveries endpoint pages; accounts see only their own webhooks and events;
# pending deliveries survive a restart; /metrics counts outcomes; targets that answer a byte a
# second (HTTP, and a TLS handshake) fail at [webhooks] timeout and hold up nobody longer.
. "$top_srcdir/test/lib.sh"
need curl
need openssl
need sipp
setup_store || { fail "store setup"; finish; }
KEY=$("$SIPAUTHCTL" --store "$STORE" apikey create --account "$ACC")
ACC_B=$("$SIPAUTHCTL" --store "$STORE" account create --name other)
KEY_B=$("$SIPAUTHCTL" --store "$STORE" apikey create --account "$ACC_B")
TRUNK_B=$("$SIPAUTHCTL" --store "$STORE" trunk create --account "$ACC_B" --name theirs)

# a CA of the test's, a receiver certificate it signed (127.0.0.1), and a self-signed one
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -keyout "$T/ca.key" \
	-out "$T/ca.pem" -subj "/CN=webhook test CA" >"$T/openssl.log" 2>&1
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/rcv.key" -out "$T/rcv.csr" \
	-subj "/CN=127.0.0.1" >>"$T/openssl.log" 2>&1
printf 'subjectAltName=IP:127.0.0.1\n' >"$T/san.ext"
openssl x509 -req -in "$T/rcv.csr" -CA "$T/ca.pem" -CAkey "$T/ca.key" -CAcreateserial -days 2 \
	-extfile "$T/san.ext" -out "$T/rcv.pem" >>"$T/openssl.log" 2>&1
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -keyout "$T/self.key" \
	-out "$T/self.pem" -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1" >>"$T/openssl.log" 2>&1

receiver R1 --fail-first 2                                   # every event; answers 500 twice first
receiver R2 --cert "$T/rcv.pem" --key "$T/rcv.key"           # https, certificate of the test CA
receiver R3 --cert "$T/self.pem" --key "$T/self.key"         # https, certificate nobody vouches for
receiver RB                                                  # account B's

API_PORT=$(free_port 127.0.0.1)
CONF="[api]
listen = 127.0.0.1:$API_PORT
[registrar]
min_expires = 1
[webhooks]
ca_file = $T/ca.pem
# the receivers listen on loopback, which a webhook reaches only when named here
private_targets = 127.0.0.1/32
retry_base = 1
auth_failed_window = 2"
ABUSE_MAX_FAILURES=3 start_sipauthd "" "$CONF" || { fail "sipauthd did not start"; finish; }
BASE="http://127.0.0.1:$API_PORT"
HOOKS="/v1/account/$ACC/webhooks"
ALL='["auth.failed","source.banned","credential.created","credential.deleted","credential.rotated","registration.created","registration.expired","call.revoked"]'

# api METHOD PATH [BODY] [KEY]: status in $st, body in $T/body
api() {
	st=$(curl -s -o "$T/body" -D "$T/hdr" -w '%{http_code}' -X "$1" -H "Authorization: Bearer ${4:-$KEY}" \
		${3:+-H 'Content-Type: application/json' --data-binary "$3"} "$BASE$2")
	api_record "$1" "$2" "$st" "$T/body" "$T/hdr"
}
# field EXPR: a python expression over the last answer's JSON (j)
field() { python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$T/body" "$1"; }
# received NAME TYPE [EXPR]: of the requests receiver NAME answered 2xx for event TYPE (with a
# good signature), how many; with EXPR, EXPR over the first one's body (b)
received() {
	python3 -c '
import json, sys
ok = [json.loads(l) for l in open(sys.argv[1])]
ok = [r["body"] for r in ok if r["event"] == sys.argv[2] and r["sig_ok"] and r["answered"] < 300]
print(eval(sys.argv[3], {"b": ok[0]}) if len(sys.argv) > 3 and ok else "" if len(sys.argv) > 3 else len(ok))' \
		"$T/$1.jsonl" "$2" ${3+"$3"}
}
# received_all NAME TYPE EXPR [ARG]: EXPR over the bodies of all of them (bs; ARG as a)
received_all() {
	python3 -c '
import json, sys
ok = [json.loads(l) for l in open(sys.argv[1])]
bs = [r["body"] for r in ok if r["event"] == sys.argv[2] and r["sig_ok"] and r["answered"] < 300]
print(eval(sys.argv[3], {"bs": bs, "a": sys.argv[4]}))' "$T/$1.jsonl" "$2" "$3" "${4:-}"
}
# got NAME TYPE: receiver NAME has TYPE (waits up to 10 s)
got() { [ "$(received "$1" "$2")" -ge 1 ]; }

# ---- validation: 422 naming the field, in the API's error shape ----
# refused BODY WHAT "STATUS CODE FIELD": a POST of BODY is refused so ($T/body keeps the answer)
refused() {
	api POST "$HOOKS" "$1"
	assert_eq "$2" "$3" "$st $(field 'j["error"]["code"] + " " + j["error"].get("field", "-")')"
}
refused '{"events":["auth.failed"]}' "no url" "422 missing_field url"
refused '{"url":"ftp://127.0.0.1/x","events":["auth.failed"]}' "an ftp url" "422 invalid_field url"
assert_eq "... saying why" "url must be an http:// or https:// URL" "$(field 'j["error"]["message"]')"
refused '{"url":"http://127.0.0.1/x"}' "no events" "422 missing_field events"
refused '{"url":"http://127.0.0.1/x","events":[]}' "empty events" "422 invalid_field events"
refused '{"url":"http://127.0.0.1/x","events":["auth.failed","call.ended"]}' "an unknown event" "422 invalid_field events"
assert_eq "... naming the element" "events[1] is not a known event name" "$(field 'j["error"]["message"]')"
refused '{"url":"http://127.0.0.1/x","events":"auth.failed"}' "events not an array" "422 invalid_field events"
refused '{"url":"http://127.0.0.1/x","events":["auth.failed"],"secret":"mine"}' "an unknown field, named" \
	"422 invalid_field secret"
refused '{"url":' "not JSON" "400 invalid_json -"
api GET "$HOOKS"
assert_eq "none of them created anything" "200 0" "$st $(field 'len(j["data"])')"

# ---- creation: the secret once ----
api POST "$HOOKS" "{\"url\":\"http://127.0.0.1:$R1_PORT/hook?r=1\",\"events\":$ALL}"
assert_eq "creating a webhook: 201" 201 "$st"
W1=$(field 'j["id"]')
field 'j["secret"]' >"$T/R1.secret"
assert_match "the answer carries the secret, once" '^whsec_[A-Za-z0-9_-]{43}$' "$(cat "$T/R1.secret")"
assert_eq "... the events as given, in the API's order" "$ALL" "$(field 'json.dumps(j["events"], separators=(",", ":"))')"
assert_eq "... and a Location" "$HOOKS/$W1" "$(sed -n 's/^Location: \(.*\)\r$/\1/p' "$T/hdr")"
api GET "$HOOKS/$W1"
assert_eq "GET of the webhook: 200 without a secret" "200 False" "$st $(field '"secret" in j')"
assert_eq "... with its url" "http://127.0.0.1:$R1_PORT/hook?r=1" "$(field 'j["url"]')"
api GET "$HOOKS"
assert_eq "the list: 200, one webhook, no secret" "200 1 False" "$st $(field 'len(j["data"]), "secret" in j["data"][0], ' | tr -d "(),")"
api POST "$HOOKS" "{\"url\":\"https://127.0.0.1:$R2_PORT/\",\"events\":[\"credential.created\"]}"
W2=$(field 'j["id"]'); field 'j["secret"]' >"$T/R2.secret"
api POST "$HOOKS" "{\"url\":\"https://127.0.0.1:$R3_PORT/\",\"events\":[\"credential.created\"]}"
W3=$(field 'j["id"]'); field 'j["secret"]' >"$T/R3.secret"
api POST "$HOOKS" "{\"url\":\"http://127.0.0.9:$R1_PORT/\",\"events\":[\"credential.created\"]}"
W4=$(field 'j["id"]')   # a loopback address not in private_targets
api POST "/v1/account/$ACC_B/webhooks" "{\"url\":\"http://127.0.0.1:$RB_PORT/b\",\"events\":$ALL}" "$KEY_B"
assert_eq "account B creates its own: 201" 201 "$st"
WB=$(field 'j["id"]'); field 'j["secret"]' >"$T/RB.secret"

# ---- account isolation ----
api GET "/v1/account/$ACC_B/webhooks/$WB"
assert_eq "A's key on B's webhook: 404" 404 "$st"
api GET "$HOOKS/$WB"
assert_eq "B's webhook under A's path: 404" "404 webhook $WB not found" "$st $(field 'j["error"]["message"]')"
api GET "$HOOKS/$WB/deliveries"
assert_eq "... its deliveries: 404" 404 "$st"
api DELETE "$HOOKS/$WB"
assert_eq "... deleting it: 404" 404 "$st"
api GET "$HOOKS" "" "$KEY_B"
assert_eq "B's key on A's list: 404" 404 "$st"
api GET "/v1/account/$ACC_B/webhooks" "" "$KEY_B"
assert_eq "B lists only its own" "1 $WB" "$(field 'len(j["data"]), j["data"][0]["id"]' | tr -d "(),'")"

# ---- credential.created: retried past two 500s; https verified both ways ----
api POST "/v1/account/$ACC/trunks/$TRUNK/credentials" '{"username":"pbx-hook-02","password":"another_password_456"}'
CRED2=$(field 'j["id"]')
wait_for got R1 credential.created
assert_eq "R1 gets credential.created, signed, after two 500s" 1 "$(received R1 credential.created)"
assert_eq "... it took three requests" "500 500 204" "$(python3 -c 'import json,sys; print(" ".join(str(json.loads(l)["answered"]) for l in open(sys.argv[1])))' "$T/R1.jsonl")"
assert_eq "... the body names the credential, its trunk and account" "credential.created $CRED2 $TRUNK pbx-hook-02 $ACC" \
	"$(received R1 credential.created '" ".join([b["type"], b["data"]["credential_id"], b["data"]["trunk_id"], b["data"]["username"], b["account_id"]])')"
assert_eq "... as JSON" "application/json" "$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["content_type"])' "$T/R1.jsonl")"
assert_eq "... at the URL's path and query" "/hook?r=1" "$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["path"])' "$T/R1.jsonl")"
wait_for got R2 credential.created
assert_eq "R2 (https, the test CA via ca_file) gets it" 1 "$(received R2 credential.created)"
sleep 1
assert_eq "R3 (https, self-signed) gets nothing" 0 "$(grep -c . "$T/R3.jsonl")"
api GET "$HOOKS/$W3/deliveries"
assert_eq "R3's delivery: pending, with the verification failure as its error" \
	"200 pending credential.created True True" \
	"$st $(field 'j["data"][0]["status"], j["data"][0]["event"], j["data"][0]["last_error"].startswith("tls: certificate verify failed"), j["data"][0]["attempts"] >= 1' | tr -d "(),'")"
assert_eq "... no status code from it" None "$(field 'j["data"][0]["last_status_code"]')"
api GET "$HOOKS/$W4/deliveries"
assert_eq "a URL naming a loopback address outside private_targets: never connected, and says why" \
	"200 pending True" \
	"$st $(field 'j["data"][0]["status"], j["data"][0]["last_error"].startswith("address not allowed: 127.0.0.9 is loopback or private")' | tr -d "(),'")"
api DELETE "$HOOKS/$W4"
assert_eq "... that webhook deleted: 204" 204 "$st"
api GET "$HOOKS/$W1/deliveries"
assert_eq "R1's delivery: delivered on attempt 3 with 200-range status 204" "200 delivered 3 204 None None" \
	"$st $(field 'j["data"][0]["status"], j["data"][0]["attempts"], j["data"][0]["last_status_code"], j["data"][0]["last_error"], j["data"][0]["next_attempt_at"]' | tr -d "(),'")"
assert_eq "B's receiver got nothing of A's" 0 "$(grep -c . "$T/RB.jsonl")"

# account B's own event reaches B only
api POST "/v1/account/$ACC_B/trunks/$TRUNK_B/credentials" '{"username":"pbx-b-01","password":"another_password_456"}' "$KEY_B"
wait_for got RB credential.created
assert_eq "B's credential.created reaches B's receiver, for account B" "1 $ACC_B" \
	"$(received RB credential.created) $(received RB credential.created 'b["account_id"]')"
sleep 1
assert_eq "... and not A's" 1 "$(received R1 credential.created)"

# ---- SIP: registration.created, registration.expired ----
sipc register --host "$TRUNK_HOST" --user pbx-hook-02 --password another_password_456 --expires 2 >"$T/reg.out"
assert_eq "pbx-hook-02 registers for 2 s" 200 "$(json_get 'final["final_status"]' <"$T/reg.out")"
wait_for got R1 registration.created
assert_eq "registration.created, naming the credential and source" "$CRED2 127.0.0.1 udp" \
	"$(received R1 registration.created '" ".join([b["data"]["credential_id"], b["data"]["source"], b["data"]["transport"]])')"
for _ in 1 2; do wait_for got R1 registration.expired && break; done   # housekeeping: every 5 s
assert_eq "registration.expired once it lapsed" "1 $CRED2" \
	"$(received R1 registration.expired) $(received R1 registration.expired 'b["data"]["credential_id"]')"
assert_eq "... and the sweep (on the store thread) logged it once" 1 \
	"$(grep -c "event=bindings_expired count=1\$" "$T/sipauthd.log")"

# ---- auth.failed (summed per trunk and window) and source.banned ----
for i in 1 2 3; do
	sipc register --local-ip 127.0.0.5 --host "$TRUNK_HOST" --user "$SIP_USER" --password wrong_password_999 >/dev/null
done
wait_for got R1 source.banned
assert_eq "source.banned for 127.0.0.5 after 3 failures" "127.0.0.5 3 $TRUNK" \
	"$(received R1 source.banned '" ".join([b["data"]["source"], str(b["data"]["failures"]), b["data"]["trunk_id"]])')"
# the three may fall into one window or straddle two (auth_failed_window = 2 s): what is
# summed over the trunk's auth.failed events is exact either way
af_sum() { received_all R1 auth.failed 'sum(b["data"]["failures"] for b in bs)'; }
for _ in $(seq 1 100); do [ "$(af_sum)" = 3 ] && break; sleep 0.1; done
AF=$(received R1 auth.failed)
if [ "$AF" -ge 1 ] && [ "$AF" -le 2 ]; then pass "auth.failed: $AF event(s) for the three failures (one per window)"; else fail "auth.failed events: $AF"; fi
assert_eq "auth.failed: every event for the trunk, 3 failures in all" "$TRUNK 3" \
	"$(received_all R1 auth.failed '" ".join(sorted(set(b["data"]["trunk_id"] for b in bs)))') $(af_sum)"
assert_eq "... top sources and usernames, summed" "127.0.0.5:3 $SIP_USER:3" \
	"$(received_all R1 auth.failed '"127.0.0.5:%d %s:%d" % (sum(x["failures"] for b in bs for x in b["data"]["top_sources"] if x["source"] == "127.0.0.5"), a, sum(x["failures"] for b in bs for x in b["data"]["top_usernames"] if x["username"] == a))' "$SIP_USER")"

# ---- credential.rotated (the old password goes on for the overlap: the call below uses it) ----
api POST "/v1/account/$ACC/trunks/$TRUNK/credentials/$CRED2/rotate" '{"password":"rotated_password_789","overlap_seconds":600}'
assert_eq "rotating the credential: 200, version 2" "200 2" "$st $(field 'j["password_version"]')"
wait_for got R1 credential.rotated
assert_eq "credential.rotated names the credential and the new version" "1 $CRED2 $TRUNK 2" \
	"$(received R1 credential.rotated) $(received R1 credential.rotated '" ".join([b["data"]["credential_id"], b["data"]["trunk_id"], str(b["data"]["password_version"])])')"
until_s=$(received R1 credential.rotated 'int(__import__("datetime").datetime.strptime(b["data"]["old_password_valid_until"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=__import__("datetime").timezone.utc).timestamp())')
d=$((until_s - $(date +%s)))
if [ "$d" -ge 590 ] && [ "$d" -le 600 ]; then pass "the old password's end is the overlap away ($d s)"; else fail "old_password_valid_until is $d s away"; fi

# ---- credential.deleted and call.revoked ----
spawn "$T/gw.out" timeout 30 sipp -sf "$SIPP_DIR/gateway_uas.xml" -i 127.0.0.2 -p "$GW_PORT" -m 1 -nostdin
sleep 0.3
spawn "$T/call.out" $SIPCLIENT invite --server "127.0.0.1:$SIP_PORT" --host "$TRUNK_HOST" --user pbx-hook-02 \
	--password another_password_456 --to 15550001111 --hold 10 --timeout 5
wait_for grep -q "event=call_start" "$T/sipauthd.log"
api DELETE "/v1/account/$ACC/trunks/$TRUNK/credentials/$CRED2"
assert_eq "deleting the calling credential: 204" 204 "$st"
wait_for got R1 call.revoked
assert_eq "call.revoked for the answered call" "1 $CRED2 answered" \
	"$(received R1 call.revoked) $(received R1 call.revoked '" ".join([b["data"]["credential_id"], b["data"]["state"]])')"
wait_for got R1 credential.deleted
assert_eq "credential.deleted, with the calls it ended" "$CRED2 1" \
	"$(received R1 credential.deleted '" ".join([b["data"]["credential_id"], str(b["data"]["calls_ended"])])')"

# ---- the deliveries list pages ----
api GET "$HOOKS/$W1/deliveries?limit=2"
assert_eq "deliveries?limit=2: two, more to come" "200 2 True" "$st $(field 'len(j["data"]), j["has_more"]' | tr -d "(),")"
FIRST=$(field 'j["data"][0]["id"]'); SECOND=$(field 'j["data"][1]["id"]')
api GET "$HOOKS/$W1/deliveries?starting_after=$FIRST&limit=1"
assert_eq "starting_after the first: the second" "$SECOND" "$(field 'j["data"][0]["id"]')"
api GET "$HOOKS/$W1/deliveries"
assert_eq "all of R1's deliveries delivered (7 events and the auth.failed ones)" "$((7 + AF)) delivered" \
	"$(field 'len(j["data"]), " ".join(sorted(set(d["status"] for d in j["data"])))' | tr -d "(),'")"
api GET "$HOOKS/$W1/deliveries?starting_after=dlv_nope"
assert_eq "an unknown cursor: 400" 400 "$st"
api GET "$HOOKS?limit=1"
assert_eq "the webhook list pages too" "1 True" "$(field 'len(j["data"]), j["has_more"]' | tr -d "(),")"

# ---- metrics ----
M=$(curl -s "$BASE/metrics")
assert_match "metrics: retries counted" 'sipauthd_webhook_deliveries_total\{outcome="retry"\} [1-9]' "$M"
assert_match "metrics: deliveries counted" 'sipauthd_webhook_deliveries_total\{outcome="delivered"\} (9|[1-9][0-9])' "$M"
assert_match "metrics: nothing dropped" 'sipauthd_webhook_events_dropped_total\{reason="queue_full"\} 0' "$M"

# ---- secrets never logged ----
for f in R1 R2 R3 RB; do
	assert_eq "the $f secret is not in the log" 0 "$(grep -c -F "$(cat "$T/$f.secret")" "$T/sipauthd.log")"
done

# ---- a pending delivery survives a restart ----
stop "$R1_PID"
api POST "/v1/account/$ACC/trunks/$TRUNK/credentials" '{"username":"pbx-hook-03","password":"another_password_456"}'
CRED3=$(field 'j["id"]')
sleep 2   # at least one attempt fails: connection refused
api GET "$HOOKS/$W1/deliveries"
assert_eq "with R1 away, its delivery is pending and says why" "pending True" \
	"$(field 'j["data"][-1]["status"], j["data"][-1]["last_error"].startswith("connect:")' | tr -d "(),'")"
stop "$SIPAUTHD_PID"
: >"$T/R1.jsonl"
spawn "$T/R1b.out" python3 "$top_srcdir/test/webhook_receiver.py" --port "$R1_PORT" --out "$T/R1.jsonl" --secret-file "$T/R1.secret"
wait_for grep -q listening "$T/R1b.out"
ABUSE_MAX_FAILURES=3 start_sipauthd "" "$CONF" || { fail "sipauthd did not restart"; finish; }
BASE="http://127.0.0.1:$API_PORT"
for _ in 1 2 3; do wait_for got R1 credential.created && break; done   # the next retry is at most 8 s away
assert_eq "after the restart the pending delivery arrives" "1 $CRED3" \
	"$(received R1 credential.created) $(received R1 credential.created 'b["data"]["credential_id"]')"

# ---- deletion ----
api DELETE "$HOOKS/$W1"
assert_eq "deleting a webhook: 204" 204 "$st"
api GET "$HOOKS/$W1"
assert_eq "... then it is gone" 404 "$st"
api GET "$HOOKS/$W1/deliveries"
assert_eq "... with its deliveries" 404 "$st"
api GET "$HOOKS"
assert_eq "two webhooks left" 2 "$(field 'len(j["data"])')"

# ---- the queue is bounded: with the thread held by a target that never answers, the oldest go ----
stop "$SIPAUTHD_PID"
HOLE_PORT=$(free_port 127.0.0.1)
spawn "$T/hole.out" python3 -c 'import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(64); print("listening", flush=True)
time.sleep(120)' "$HOLE_PORT"   # connections complete in the backlog; nothing is ever read or answered
HOLE_PID=$!
wait_for grep -q listening "$T/hole.out"
ABUSE_MAX_FAILURES=3 start_sipauthd "" "$CONF
queue_max = 2
timeout = 3" || { fail "sipauthd did not restart"; finish; }
api POST "$HOOKS" "{\"url\":\"http://127.0.0.1:$HOLE_PORT/\",\"events\":[\"credential.created\"]}"
WH=$(field 'j["id"]')
api POST "/v1/account/$ACC/trunks/$TRUNK/credentials" '{"username":"pbx-q-00","password":"another_password_456"}'
sleep 0.5   # the thread is now waiting on the silent target, for up to 3 s
for i in 1 2 3 4 5; do
	api POST "/v1/account/$ACC/trunks/$TRUNK/credentials" "{\"username\":\"pbx-q-0$i\",\"password\":\"another_password_456\"}"
done
assert_match "five events for a queue of two: three dropped, counted" \
	'sipauthd_webhook_events_dropped_total\{reason="queue_full"\} 3' "$(curl -s "$BASE/metrics")"
ndeliveries() { curl -s -H "Authorization: Bearer $KEY" "$BASE$HOOKS/$WH/deliveries" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["data"]))'; }
for _ in $(seq 1 100); do [ "$(ndeliveries)" -ge 3 ] && break; sleep 0.1; done
api GET "$HOOKS/$WH/deliveries"
assert_eq "the first event and the two kept in the queue have deliveries" 3 "$(field 'len(j["data"])')"
assert_eq "... the first timed out" "True" "$(field 'j["data"][0]["last_error"] == "receive: timed out"')"

# ---- events still queued when the daemon stops become deliveries, sent after the next start ----
api POST "/v1/account/$ACC/trunks/$TRUNK/credentials" '{"username":"pbx-s-00","password":"another_password_456"}'
sleep 0.5   # an attempt holds the thread on the silent target for up to 3 s: the next two wait in the queue
            # (a queue of two: pbx-s-00's event is one of them, or was made a delivery before)
for i in 1 2; do
	api POST "/v1/account/$ACC/trunks/$TRUNK/credentials" "{\"username\":\"pbx-s-0$i\",\"password\":\"another_password_456\"}"
done
before=$(ndeliveries)
stop "$SIPAUTHD_PID"
assert_match "the stop made deliveries of the two queued events, and said so" \
	"event=webhook_events_at_stop kept=2 dropped=0" "$(cat "$T/sipauthd.log")"
ABUSE_MAX_FAILURES=3 start_sipauthd "" "$CONF
queue_max = 2
timeout = 3" || { fail "sipauthd did not restart"; finish; }
api GET "$HOOKS/$WH/deliveries?limit=100"
assert_eq "after the restart the webhook has the two kept at the stop besides the $before before it" \
	"$((before + 2)) credential.created" \
	"$(field 'len(j["data"]), " ".join(sorted(set(d["event"] for d in j["data"])))' | tr -d "(),'")"

# ---- one deadline per attempt: targets that answer a byte a second (an HTTP status line that
# never ends; a TLS record that never completes) are cut off [webhooks] timeout after the attempt
# began, whatever trickles in (a socket timeout would restart with each byte), and a delivery
# made meanwhile for another webhook goes out right after, not when the slow target is done ----
stop "$SIPAUTHD_PID"
stop "$HOLE_PID"
DRIP_ADDR=127.0.4.1
DRIP_PORT=$(free_port $DRIP_ADDR)
TLS_DRIP_PORT=$(free_port $DRIP_ADDR)
spawn "$T/drip.out" python3 -c '
import socket, sys, threading, time
def drip(c, port, data):
    print("accepted", port, time.time(), flush=True)
    try:
        for i in range(len(data)):   # one byte a second, whatever the client sends
            c.send(data[i:i + 1]); time.sleep(1)
    except OSError:
        pass
    c.close()
def serve(s, data):
    while True:
        c, _ = s.accept()
        threading.Thread(target=drip, args=(c, s.getsockname()[1], data), daemon=True).start()
http = b"HTTP/1.1 200 OK" + b" " * 100000           # the status line never ends
tls = bytes([22, 3, 3, 0x40, 0]) + bytes(16384)     # a 16 KB handshake record, never complete
socks = []
for port in sys.argv[2:4]:
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], int(port))); s.listen(16); socks.append(s)
threading.Thread(target=serve, args=(socks[1], tls), daemon=True).start()
print("listening", flush=True)
serve(socks[0], http)' "$DRIP_ADDR" "$DRIP_PORT" "$TLS_DRIP_PORT"
wait_for grep -q listening "$T/drip.out" || fail "the dripping target did not start"
receiver RG
SLOW_TIMEOUT=2   # s: twice the targets' pace, so that the end of an attempt is not a byte's wait
ABUSE_MAX_FAILURES=3 start_sipauthd "" "[api]
listen = 127.0.0.1:$API_PORT
[webhooks]
ca_file = $T/ca.pem
private_targets = 127.0.0.1/32, $DRIP_ADDR/32
timeout = $SLOW_TIMEOUT" || { fail "sipauthd did not restart"; finish; }
for w in "$W2" "$W3" "$WH"; do api DELETE "$HOOKS/$w"; done   # nothing else for the thread to do
api GET "$HOOKS"
assert_eq "the earlier webhooks deleted" "200 0" "$st $(field 'len(j["data"])')"
api POST "$HOOKS" "{\"url\":\"http://$DRIP_ADDR:$DRIP_PORT/\",\"events\":[\"credential.created\"]}"
WD=$(field 'j["id"]')
# by name when the system has one for 127.0.0.1: the lookup on glibc's thread is then waited for too
RG_HOST=localhost
getent ahostsv4 localhost | grep -q '^127\.0\.0\.1 ' || RG_HOST=127.0.0.1
api POST "$HOOKS" "{\"url\":\"http://$RG_HOST:$RG_PORT/\",\"events\":[\"credential.deleted\"]}"
field 'j["secret"]' >"$T/RG.secret"
# accepted PORT: when the dripping target accepted its first connection on PORT
accepted() { sed -n "s/^accepted $1 //p" "$T/drip.out" | head -n 1; }
# first_attempt WEBHOOK: "attempts status last_error last_status_code" of its first delivery, once
# one attempt was made (waits up to 15 s)
first_attempt() {
	for _ in $(seq 1 150); do
		curl -s -o "$T/body" -H "Authorization: Bearer $KEY" "$BASE$HOOKS/$1/deliveries"
		[ "$(field 'j["data"][0]["attempts"] if j["data"] else 0')" -ge 1 ] && break
		sleep 0.1
	done
	field '"%s %s %s %s" % (j["data"][0]["attempts"], j["data"][0]["status"], j["data"][0]["last_error"], j["data"][0]["last_status_code"]) if j["data"] else "no delivery"'
}
# got_after NAME TYPE SINCE: seconds from SINCE until receiver NAME had TYPE (waits up to 15 s)
got_after() {
	for _ in $(seq 1 150); do got "$1" "$2" && break; sleep 0.1; done
	python3 -c '
import json, sys
at = [json.loads(l)["at"] for l in open(sys.argv[1]) if json.loads(l)["event"] == sys.argv[2]]
print("%.1f" % (at[0] - float(sys.argv[3] or 0)) if at else "never")' "$T/$1.jsonl" "$2" "$3"
}
# within WHAT SECONDS LOW HIGH: SECONDS is within [LOW, HIGH]
within() {
	if python3 -c 'import sys; sys.exit(not float(sys.argv[2]) <= float(sys.argv[1]) <= float(sys.argv[3]))' "$2" "$3" "$4" 2>/dev/null; then
		pass "$1 ($2 s)"
	else
		fail "$1: $2 s, not within $3..$4 s"
	fi
}

api POST "/v1/account/$ACC/trunks/$TRUNK/credentials" '{"username":"pbx-slow-01","password":"another_password_456"}'
CRED_SLOW=$(field 'j["id"]')
wait_for grep -q "^accepted $DRIP_PORT " "$T/drip.out" || fail "the thread never reached the dripping HTTP target"
api DELETE "/v1/account/$ACC/trunks/$TRUNK/credentials/$CRED_SLOW"   # credential.deleted: the good receiver's
within "a delivery made while the thread is on the dripping HTTP target arrives once timeout has passed" \
	"$(got_after RG credential.deleted "$(accepted "$DRIP_PORT")")" "$((SLOW_TIMEOUT - 1)).5" "$((SLOW_TIMEOUT + 3)).5"
assert_eq "... the dripping target's attempt failed, timed out" "1 pending receive: timed out None" \
	"$(first_attempt "$WD")"

api DELETE "$HOOKS/$WD"
api POST "$HOOKS" "{\"url\":\"https://$DRIP_ADDR:$TLS_DRIP_PORT/\",\"events\":[\"credential.created\"]}"
WT=$(field 'j["id"]')
api POST "/v1/account/$ACC/trunks/$TRUNK/credentials" '{"username":"pbx-slow-02","password":"another_password_456"}'
CRED_SLOW=$(field 'j["id"]')
wait_for grep -q "^accepted $TLS_DRIP_PORT " "$T/drip.out" || fail "the thread never reached the dripping TLS target"
: >"$T/RG.jsonl"
api DELETE "/v1/account/$ACC/trunks/$TRUNK/credentials/$CRED_SLOW"
within "a delivery made during a dripping TLS handshake arrives once timeout has passed" \
	"$(got_after RG credential.deleted "$(accepted "$TLS_DRIP_PORT")")" "$((SLOW_TIMEOUT - 1)).5" "$((SLOW_TIMEOUT + 3)).5"
assert_eq "... that handshake failed, timed out" "1 pending tls: handshake timed out None" "$(first_attempt "$WT")"
openapi_check
finish
