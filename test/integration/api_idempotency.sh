#!/bin/sh
# api_idempotency.sh: POST with Idempotency-Key on the real daemon, with curl: a repeat gets the first
# answer (status, body, Location; Idempotent-Replayed: true) and creates nothing; the same key with
# another body is 409 idempotency_key_reused; a first answer that was an error is replayed too; the
# answers survive a restart (they are in the store); keys are per account.
. "$top_srcdir/test/lib.sh"
need curl
setup_store || { fail "store setup"; finish; }
KEY=$("$SIPAUTHCTL" --store "$STORE" apikey create --account "$ACC")
ACC_B=$("$SIPAUTHCTL" --store "$STORE" account create --name other)
KEY_B=$("$SIPAUTHCTL" --store "$STORE" apikey create --account "$ACC_B")
TRUNK_B=$("$SIPAUTHCTL" --store "$STORE" trunk create --account "$ACC_B" --name theirs)
API_PORT=$(free_port 127.0.0.1)
CONF_API="[api]
listen = 127.0.0.1:$API_PORT"
start_sipauthd "" "$CONF_API" || { fail "sipauthd did not start"; finish; }
BASE="http://127.0.0.1:$API_PORT"
CREDS="/v1/account/$ACC/trunks/$TRUNK/credentials"
ONE='{"username":"pbx-idem-01","password":"secure_password_here_123"}'

# post KEY IDEMPOTENCY-KEY PATH BODY: status in $st, body in $T/body, headers in $T/hdr
post() {
	st=$(curl -s -o "$T/body" -D "$T/hdr" -w '%{http_code}' -H "Authorization: Bearer $1" \
		${2:+-H "Idempotency-Key: $2"} -H 'Content-Type: application/json' --data-binary "$4" "$BASE$3")
	api_record POST "$3" "$st" "$T/body" "$T/hdr"
}
hdr() { sed -n "s/^$1: \(.*\)\r$/\1/Ip" "$T/hdr"; }
count() { curl -s -H "Authorization: Bearer $KEY" "$BASE$CREDS?limit=1000" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["data"]))'; }

post "$KEY" order-7f3a "$CREDS" "$ONE"
assert_eq "the first POST creates: 201" 201 "$st"
cp "$T/body" "$T/first"; LOC=$(hdr Location)
assert_eq "the first answer is not a replay" "" "$(hdr Idempotent-Replayed)"
post "$KEY" order-7f3a "$CREDS" "$ONE"
assert_eq "the repeat: 201 again" 201 "$st"
assert_eq "the repeat: the same body, byte for byte" "$(cat "$T/first")" "$(cat "$T/body")"
assert_eq "the repeat: the same Location" "$LOC" "$(hdr Location)"
assert_eq "the repeat says it is one" true "$(hdr Idempotent-Replayed)"
assert_eq "one credential was created, not two (with setup's, 2)" 2 "$(count)"
post "$KEY" order-7f3a "$CREDS" '{"username":"pbx-idem-02","password":"secure_password_here_123"}'
assert_eq "the same key with another body: 409 idempotency_key_reused" "409 idempotency_key_reused" \
	"$st $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["error"]["code"])' "$T/body")"
assert_eq "... and nothing was created" 2 "$(count)"
post "$KEY" weak-1 "$CREDS" '{"username":"pbx-idem-03","password":"short"}'
cp "$T/body" "$T/weak"
post "$KEY" weak-1 "$CREDS" '{"username":"pbx-idem-03","password":"short"}'
assert_eq "a first answer that was 422 is given again" "422 true" "$st $(hdr Idempotent-Replayed)"
assert_eq "... the same body" "$(cat "$T/weak")" "$(cat "$T/body")"
post "$KEY_B" order-7f3a "/v1/account/$ACC_B/trunks/$TRUNK_B/credentials" "$ONE"
assert_eq "another account's same key is its own: 201, not a replay" "201 " "$st $(hdr Idempotent-Replayed)"
post "$KEY" "" "$CREDS" "$ONE"
assert_eq "without the header the same POST runs: 409 duplicate_username" "409 duplicate_username" \
	"$st $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["error"]["code"])' "$T/body")"
post "$KEY" "$(printf 'k%.0s' $(seq 1 256))" "$CREDS" "$ONE"
assert_eq "a key over 255 characters: 400 invalid_parameter" 400 "$st"

# the answers are in the store: a restart keeps them
stop "$SIPAUTHD_PID"
start_sipauthd "" "$CONF_API" || { fail "sipauthd did not restart"; finish; }
post "$KEY" order-7f3a "$CREDS" "$ONE"
assert_eq "after a restart the repeat is still a replay" "201 true" "$st $(hdr Idempotent-Replayed)"
assert_eq "... with the first body" "$(cat "$T/first")" "$(cat "$T/body")"
openapi_check
finish
