#!/bin/sh
# api.sh: the REST API, /healthz and /metrics of the real daemon, driven with curl: every endpoint and
# error, one account's key against another's trunk, passwords in no answer and no log line, and auth
# failures caused over SIP showing up in auth-failures and /metrics.
. "$top_srcdir/test/lib.sh"
need curl
setup_store || { fail "store setup"; finish; }
KEY=$("$SIPAUTHCTL" --store "$STORE" apikey create --account "$ACC")
ACC_B=$("$SIPAUTHCTL" --store "$STORE" account create --name other)
KEY_B=$("$SIPAUTHCTL" --store "$STORE" apikey create --account "$ACC_B")
TRUNK_B=$("$SIPAUTHCTL" --store "$STORE" trunk create --account "$ACC_B" --name theirs)
API_PORT=$(free_port 127.0.0.1)
MAX_BODY=2048
start_sipauthd "" "[api]
listen = 127.0.0.1:$API_PORT
max_body = $MAX_BODY" || { fail "sipauthd did not start"; finish; }
BASE="http://127.0.0.1:$API_PORT"
A="/v1/account/$ACC"
CREDS="$A/trunks/$TRUNK/credentials"
PASS2=another_secret_pw_456
WRONG=wrong_password_999x

# req METHOD PATH KEY [BODY]: the status in $st, the body in $T/body and $body, headers in $T/hdr;
# every answer is kept in $T/answers to look for secrets at the end
req() {
	_auth="Authorization: Bearer $3"
	[ -n "$3" ] || _auth="X-No-Auth: 1"
	if [ $# -ge 4 ]; then
		printf '%s' "$4" > "$T/req"
		st=$(curl -s -o "$T/body" -D "$T/hdr" -w '%{http_code}' -X "$1" -H "$_auth" \
			-H 'Content-Type: application/json' --data-binary @"$T/req" "$BASE$2")
	else
		st=$(curl -s -o "$T/body" -D "$T/hdr" -w '%{http_code}' -X "$1" -H "$_auth" "$BASE$2")
	fi
	body=$(cat "$T/body")
	cat "$T/hdr" "$T/body" >> "$T/answers"
	api_record "$1" "$2" "$st" "$T/body" "$T/hdr"
}
# jf EXPR: a python expression over d, the last answer's JSON
jf() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$T/body" "$1"; }
hdr() { sed -n "s/^$1: \(.*\)\r$/\1/Ip" "$T/hdr"; }
err_code() { jf 'd["error"]["code"] if set(d) == {"error"} and set(d["error"]) == {"code", "message"} else "bad shape"'; }
metric() { curl -s "$METRICS_URL" | sed -n "s/^$1 //p"; }
METRICS_URL="$BASE/metrics"

# --- health and discovery
assert_eq "GET /healthz is 200" 200 "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/healthz")"
assert_eq "/healthz says ok" '{"status":"ok"}' "$(curl -s "$BASE/healthz")"
assert_eq "HEAD /healthz is 200" 200 "$(curl -s -o /dev/null -w '%{http_code}' -I "$BASE/healthz")"
req GET "$A/trunks" "$KEY"
assert_eq "GET trunks is 200" 200 "$st"
assert_eq "trunks lists the account's trunk only" "['$TRUNK']" "$(jf '[t["id"] for t in d["data"]]')"
# a page is sipauthctl's whole list plus has_more: the same items, byte for byte
same_as_page() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); l=json.loads(sys.argv[2])
print("same" if d == dict(l, has_more=False) else "differs")' "$T/body" "$1"; }
assert_eq "trunks has the sipauthctl shape" same "$(same_as_page "$("$SIPAUTHCTL" --store "$STORE" trunk list --account "$ACC")")"
assert_eq "trunks is data and has_more" "['data', 'has_more']" "$(jf 'sorted(d)')"

# --- create, list, show
req POST "$CREDS" "$KEY" "{\"username\": \"pbx-prod-02\", \"password\": \"$PASS2\"}"
assert_eq "POST credentials is 201" 201 "$st"
CRED2=$(jf 'd["id"]')
assert_eq "the answer has exactly id, trunk_id, username, created_at" \
	"['created_at', 'id', 'trunk_id', 'username']" "$(jf 'sorted(d)')"
assert_eq "the answer names the trunk and user" "$TRUNK pbx-prod-02" "$(jf 'd["trunk_id"] + " " + d["username"]')"
assert_match "created_at is RFC 3339 UTC" '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$' "$(jf 'd["created_at"]')"
assert_eq "Location names the new credential" "$CREDS/$CRED2" "$(hdr Location)"
assert_eq "the answer is JSON" "application/json" "$(hdr Content-Type)"
req GET "$CREDS" "$KEY"
assert_eq "GET credentials is 200" 200 "$st"
assert_eq "credentials in creation order" "['$CRED', '$CRED2']" "$(jf '[c["id"] for c in d["data"]]')"
assert_eq "GET credentials is sipauthctl credential list plus has_more" \
	same "$(same_as_page "$("$SIPAUTHCTL" --store "$STORE" credential list --trunk "$TRUNK")")"
req GET "$CREDS/$CRED2" "$KEY"
assert_eq "GET one credential is 200" "200 pbx-prod-02" "$st $(jf 'd["username"]')"

# --- 401
req GET "$CREDS" ""
assert_eq "no key: 401 unauthorized" "401 unauthorized" "$st $(err_code)"
assert_eq "no key: WWW-Authenticate Bearer" 'Bearer realm="sipauthd"' "$(hdr WWW-Authenticate)"
req GET "$CREDS" "tvx_sk_live_00000000000000000000000000000000"
assert_eq "unknown key: 401 unauthorized" "401 unauthorized" "$st $(err_code)"
assert_match "unknown key: WWW-Authenticate Bearer invalid_token" '^Bearer .*error="invalid_token"' "$(hdr WWW-Authenticate)"
st=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Basic $KEY" "$BASE$CREDS")
assert_eq "another scheme: 401" 401 "$st"

# --- 404: another account's trunk looks exactly like an unknown one
req GET "$A/trunks/$TRUNK_B/credentials" "$KEY"
theirs=$(printf '%s' "$body" | sed "s/$TRUNK_B/ID/g")
assert_eq "A's key on B's trunk: 404" "404 not_found" "$st $(err_code)"
req GET "$A/trunks/trunk_0000000000000000/credentials" "$KEY"
assert_eq "unknown trunk: 404" "404 not_found" "$st $(err_code)"
assert_eq "B's trunk and an unknown trunk read the same" "$theirs" "$(printf '%s' "$body" | sed "s/trunk_0000000000000000/ID/g")"
req POST "$A/trunks/$TRUNK_B/credentials" "$KEY" "{\"username\":\"sneaky\",\"password\":\"$PASS2\"}"
assert_eq "A's key cannot create on B's trunk" 404 "$st"
req GET "/v1/account/$ACC_B/trunks/$TRUNK_B/credentials" "$KEY"
assert_eq "A's key on B's account path: 404" "404 not_found" "$st $(err_code)"
req GET "/v1/account/$ACC_B/trunks/$TRUNK_B/credentials" "$KEY_B"
assert_eq "B's key still sees B's trunk, empty" "200 0" "$st $(jf 'len(d["data"])')"
req GET "$A/trunks/$TRUNK_B/auth-failures" "$KEY"
assert_eq "A's key on B's auth failures: 404" 404 "$st"
req DELETE "/v1/account/$ACC_B/trunks/$TRUNK_B/credentials/$CRED" "$KEY_B"
assert_eq "B's key cannot delete A's credential through B's trunk" 404 "$st"
req GET "$CREDS/cred_0000000000000000" "$KEY"
assert_eq "unknown credential: 404" 404 "$st"
req GET "$A/trunks/$TRUNK/nothing" "$KEY"
assert_eq "unknown path: 404 in JSON" "404 not_found" "$st $(err_code)"
req GET "/nothing" ""
assert_eq "unknown path outside /v1: 404 in JSON" "404 not_found" "$st $(err_code)"

# --- 400, 422, 409, 413, 405; nothing half-written
req POST "$CREDS" "$KEY" "{\"username\": \"pbx-x\", \"password\": $PASS2}"
assert_eq "malformed JSON: 400 invalid_json" "400 invalid_json" "$st $(err_code)"
req POST "$CREDS" "$KEY" "{\"username\": 42, \"password\": \"$PASS2\"}"
assert_eq "username of the wrong type: 400 invalid_field" "400 invalid_field" "$st $(err_code)"
req POST "$CREDS" "$KEY" '["pbx-x"]'
assert_eq "not an object: 400" 400 "$st"
req POST "$CREDS" "$KEY" '{"username": "pbx-x"}'
assert_eq "missing password: 422 missing_field" "422 missing_field" "$st $(err_code)"
assert_match "the 422 names the field" "password is required" "$(jf 'd["error"]["message"]')"
req POST "$CREDS" "$KEY" '{"username": "pbx-x", "password": "short_pw"}'
assert_eq "short password: 422 weak_password" "422 weak_password" "$st $(err_code)"
assert_match "the 422 names the rule" "at least 12 characters" "$(jf 'd["error"]["message"]')"
req POST "$CREDS" "$KEY" '{"username": "pbx-x", "password": "my-PBX-X-password-1"}'
assert_match "password containing the username: 422 naming the rule" "422 weak_password .*must not contain the username" \
	"$st $(err_code) $(jf 'd["error"]["message"]')"
req POST "$CREDS" "$KEY" "{\"username\": \"pbx x\", \"password\": \"$PASS2\"}"
assert_eq "bad username: 422 invalid_username" "422 invalid_username" "$st $(err_code)"
req POST "$CREDS" "$KEY" "{\"username\": \"PBX-Prod-01\", \"password\": \"$PASS2\"}"
assert_eq "duplicate username ignoring case: 409" "409 duplicate_username" "$st $(err_code)"
big=$(python3 -c "print('{\"username\":\"pbx-big\",\"password\":\"$PASS2\",\"pad\":\"' + 'x' * $MAX_BODY + '\"}')")
req POST "$CREDS" "$KEY" "$big"
assert_eq "body over max_body: 413 in JSON" "413 body_too_large" "$st $(err_code)"
python3 -c "print('x' * 1000000)" > "$T/huge"
st=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $KEY" --data-binary @"$T/huge" "$BASE$CREDS")
assert_eq "a body far over max_body: 413 (evhttp stops reading)" 413 "$st"
req PUT "$CREDS" "$KEY" '{}'
assert_eq "PUT credentials: 405" "405 method_not_allowed" "$st $(err_code)"
assert_eq "405 says what is allowed" "GET, POST" "$(hdr Allow)"
req POST "$CREDS/$CRED2" "$KEY" '{}'
assert_eq "POST on one credential: 405 with Allow" "405 GET, DELETE" "$st $(hdr Allow)"
req POST "/metrics" ""
assert_eq "POST /metrics: 405 with Allow" "405 GET, HEAD" "$st $(hdr Allow)"
req GET "$CREDS" "$KEY"
assert_eq "no error wrote anything" "['pbx-prod-01', 'pbx-prod-02']" "$(jf '[c["username"] for c in d["data"]]')"
assert_eq "the daemon is still healthy" 200 "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/healthz")"

# --- registrations
sipc register --host "$TRUNK_HOST" --user pbx-prod-02 --password "$PASS2" --expires 300 > "$T/reg.out"
assert_eq "pbx-prod-02 registers over SIP" 200 "$(json_get 'final.get("final_status")' < "$T/reg.out")"
req GET "$A/trunks/$TRUNK/registrations" "$KEY"
assert_eq "GET registrations is 200 with one binding" "200 1" "$st $(jf 'len(d["data"])')"
assert_eq "the binding names its credential, user, source and transport" \
	"$CRED2 pbx-prod-02 127.0.0.1 udp" \
	"$(jf '" ".join(str(d["data"][0][k]) for k in ("credential_id", "username", "source_address", "transport"))')"
assert_eq "the binding has every field" \
	"['contact', 'credential_id', 'expires_at', 'id', 'password_version', 'registered_at', 'source_address', 'source_port', 'transport', 'updated_at', 'user_agent', 'username']" \
	"$(jf 'sorted(d["data"][0])')"
assert_match "the binding shows the contact and user agent" "sip:pbx-prod-02@127.0.0.1:[0-9]+ sipauthd-test-sipclient" \
	"$(jf 'd["data"][0]["contact"] + " " + d["data"][0]["user_agent"]')"

# --- auth failures caused over SIP: in auth-failures and /metrics
fails_before=$(metric 'sipauthd_auth_failures_total{reason="bad_password"}')
sipc register --host "$TRUNK_HOST" --user "$SIP_USER" --password "$SIP_PASS" --wrong-password "$WRONG" > "$T/bad.out"
assert_eq "a wrong password is refused over SIP" 401 "$(json_get 'final.get("final_status")' < "$T/bad.out")"
sipc register --host "$TRUNK_HOST" --user intruder-7 --password "$WRONG" > /dev/null
req GET "$A/trunks/$TRUNK/auth-failures" "$KEY"
assert_eq "GET auth-failures is 200 with both failures" "200 2" "$st $(jf 'len(d["data"])')"
assert_eq "newest first: the unknown user, then the bad password" "intruder-7:unknown_user $SIP_USER:bad_password" \
	"$(jf '" ".join(f["username"] + ":" + f["reason"] for f in d["data"])')"
assert_eq "a failure says where it came from and how" "127.0.0.1 udp REGISTER" \
	"$(jf '" ".join(str(d["data"][1][k]) for k in ("source_address", "transport", "method"))')"
assert_match "a failure has its time and source port" '^[0-9-]+T[0-9:]+Z [0-9]+$' "$(jf 'd["data"][1]["time"] + " " + str(d["data"][1]["source_port"])')"
req GET "$A/trunks/$TRUNK/auth-failures?limit=1" "$KEY"
assert_eq "limit=1 gives the newest only" "intruder-7" "$(jf '",".join(f["username"] for f in d["data"])')"
req GET "$A/trunks/$TRUNK/auth-failures?since=2099-01-01T00:00:00Z" "$KEY"
assert_eq "since in the future gives none" "200 0" "$st $(jf 'len(d["data"])')"
req GET "$A/trunks/$TRUNK/auth-failures?since=$(($(date +%s) - 600))&limit=1000" "$KEY"
assert_eq "since as epoch seconds" "200 2" "$st $(jf 'len(d["data"])')"
req GET "$A/trunks/$TRUNK/auth-failures?limit=1001" "$KEY"
assert_eq "limit over 1000: 400" "400 invalid_parameter" "$st $(err_code)"
req GET "$A/trunks/$TRUNK/auth-failures?since=yesterday" "$KEY"
assert_eq "since unreadable: 400" "400 invalid_parameter" "$st $(err_code)"
assert_eq "the bad password is counted in /metrics" "$((fails_before + 1))" "$(metric 'sipauthd_auth_failures_total{reason="bad_password"}')"
assert_eq "the unknown user is counted in /metrics" 1 "$(metric 'sipauthd_auth_failures_total{reason="unknown_user"}')"
m=$(curl -s -D "$T/mhdr" "$METRICS_URL")
assert_match "/metrics is Prometheus text" "text/plain; version=0.0.4" "$(cat "$T/mhdr")"
assert_match "challenges are counted" "sipauthd_auth_challenges_total [1-9]" "$m"
assert_match "successes are counted" "sipauthd_auth_successes_total [1-9]" "$m"
assert_match "stale nonces have their own metric" "sipauthd_auth_stale_nonces_total 0" "$m"
assert_match "REGISTERs are counted by method" 'sipauthd_sip_requests_total\{method="REGISTER"\} [1-9]' "$m"
assert_match "requests are counted by transport" 'sipauthd_sip_requests_by_transport_total\{transport="udp"\} [1-9]' "$m"
assert_match "registrations are counted" "sipauthd_registrations_total [1-9]" "$m"
assert_match "active calls are a gauge" "# TYPE sipauthd_calls_active gauge" "$m"
assert_match "API answers are counted by status" 'sipauthd_api_requests_total\{status="401"\} 3' "$m"
assert_match "API 201s are counted" 'sipauthd_api_requests_total\{status="201"\} 1' "$m"

# --- delete: 204, its registration goes at once, then 404
req DELETE "$CREDS/$CRED2" "$KEY"
assert_eq "DELETE credential is 204 with no body" "204 " "$st $body"
req GET "$A/trunks/$TRUNK/registrations" "$KEY"
assert_eq "its registration is gone at once" "200 0" "$st $(jf 'len(d["data"])')"
req DELETE "$CREDS/$CRED2" "$KEY"
assert_eq "DELETE again: 404" "404 not_found" "$st $(err_code)"
req GET "$CREDS" "$KEY"
assert_eq "the list no longer has it" "['$CRED']" "$(jf '[c["id"] for c in d["data"]]')"
sipc register --host "$TRUNK_HOST" --user pbx-prod-02 --password "$PASS2" > "$T/reg2.out"
assert_eq "the deleted credential can no longer register" 401 "$(json_get 'final.get("final_status")' < "$T/reg2.out")"

# --- the log: one line per API error, audit lines, never a secret
log=$(cat "$T/sipauthd.log")
assert_match "an API error is logged once, with its status and code" \
	"event=api_error req=[0-9]+ method=POST path=\"$CREDS\" status=409 code=duplicate_username account=$ACC src=127.0.0.1:" "$log"
# every 4xx answer through req, plus the Basic-scheme 401 (the 1 MB body is cut off by evhttp, unlogged)
assert_eq "one log line per API error" "$(($(grep -c '^HTTP/1.1 4' "$T/answers") + 1))" "$(grep -c 'event=api_error' "$T/sipauthd.log")"
assert_match "creating is logged" "event=credential_created cred=$CRED2 trunk=$TRUNK username=\"pbx-prod-02\" account=$ACC via=api" "$log"
assert_match "deleting is logged with the calls it ended" "event=credential_deleted cred=$CRED2 trunk=$TRUNK account=$ACC via=api calls_ended=0" "$log"
for secret in "$SIP_PASS" "$PASS2" "$WRONG" "$KEY" "$KEY_B" my-PBX-X-password-1 short_pw; do
	assert_nomatch "no answer contains a secret (${secret%"${secret#???}"}...)" "$secret" "$(cat "$T/answers")"
	assert_nomatch "the log contains no secret (${secret%"${secret#???}"}...)" "$secret" "$log"
done

m=$(curl -s "$BASE/metrics")
assert_eq "/metrics has the process family a soak watches (RSS over 1 MB, a few open fds, under the limit)" "1 1 1" \
	"$(printf '%s\n' "$m" | awk '/^process_resident_memory_bytes /{r=$2} /^process_open_fds /{o=$2} /^process_max_fds /{x=$2}
		END{print (r > 1048576), (o >= 5), (x > o)}')"

# --- a leaked key is revoked with sipauthctl while the daemon runs: its next request is 401
req GET "/v1/account/$ACC_B/trunks" "$KEY_B"
assert_eq "account B's key works" 200 "$st"
KID="key_$(printf %s "$KEY_B" | sha256sum | cut -c1-16)"
assert_eq "sipauthctl apikey list names it by its id (key_ and its SHA-256's first 16 hex digits)" "$KID" \
	"$("$SIPAUTHCTL" --store "$STORE" apikey list --account "$ACC_B" | python3 -c 'import json,sys; print(" ".join(k["id"] for k in json.load(sys.stdin)["data"]))')"
"$SIPAUTHCTL" --store "$STORE" apikey revoke --account "$ACC_B" --id "$KID"
assert_eq "sipauthctl apikey revoke: exit 0" 0 $?
req GET "/v1/account/$ACC_B/trunks" "$KEY_B"
assert_eq "... the key's next request is 401, at once" 401 "$st"
req GET "$A/trunks" "$KEY"
assert_eq "... another account's key goes on" 200 "$st"
assert_eq "revoking it again: unknown (exit 2)" 2 \
	"$("$SIPAUTHCTL" --store "$STORE" apikey revoke --account "$ACC_B" --id "$KID" 2>/dev/null; echo $?)"

# --- /metrics on its own address: moved off the API address
stop "$SIPAUTHD_PID"
API_PORT=$(free_port 127.0.0.1)
MET_PORT=$(free_port 127.0.0.1)
start_sipauthd "" "[api]
listen = 127.0.0.1:$API_PORT
metrics_listen = 127.0.0.1:$MET_PORT" || { fail "sipauthd did not restart"; finish; }
assert_eq "with metrics_listen, /metrics is served there" 200 "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$MET_PORT/metrics")"
assert_eq "and not on the API address" 404 "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$API_PORT/metrics")"
assert_eq "/healthz answers on the metrics address too" 200 "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$MET_PORT/healthz")"
assert_eq "the API is not on the metrics address" 404 \
	"$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $KEY" "http://127.0.0.1:$MET_PORT$CREDS")"
assert_eq "the API still answers after a restart" 200 \
	"$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $KEY" "http://127.0.0.1:$API_PORT$CREDS")"
stop "$SIPAUTHD_PID"
assert_eq "sipauthd stops cleanly with HTTP running" 0 $?
openapi_check
finish
