#!/bin/sh
# rotation.sh: POST .../credentials/{id}/rotate without downtime (issue 15), with two sipp PBXs: during
# the overlap the old and the new password both REGISTER and place calls, the registrations list says
# which one each used (password_version 1 and 2), a call set up with the old password survives the
# rotation (no revocation; its own BYE ends it) and a restart of the daemon keeps both passwords.
# Rotating again keeps only current and previous: the oldest password stops at once; after a short
# overlap the previous one is refused as any wrong password is (401 again) and the failure log names
# its version. Bad bodies are 422 naming the field; Idempotency-Key replays a rotation rather than
# rotating twice; /metrics counts rotations; every answer validates against the OpenAPI document.
. "$top_srcdir/test/lib.sh"
need sipp
need curl
setup_store || { fail "store setup"; finish; }
KEY=$("$SIPAUTHCTL" --store "$STORE" apikey create --account "$ACC")
API_PORT=$(free_port 127.0.0.1)
CONF_API="[api]
listen = 127.0.0.1:$API_PORT"
start_sipauthd MD5 "$CONF_API" || { fail "sipauthd did not start"; finish; }
BASE="http://127.0.0.1:$API_PORT"
CREDS="/v1/account/$ACC/trunks/$TRUNK/credentials"
ROTATE="$CREDS/$CRED/rotate"
PASS1=$SIP_PASS
PASS2=rotated_password_456
PASS3=third_password_789
PASS4=fourth_password_012

# api METHOD PATH [BODY] [IDEMPOTENCY-KEY]: status in $st, body in $T/body, headers in $T/hdr
api() {
	st=$(curl -s -o "$T/body" -D "$T/hdr" -w '%{http_code}' -X "$1" -H "Authorization: Bearer $KEY" \
		${4:+-H "Idempotency-Key: $4"} ${3:+-H 'Content-Type: application/json' --data-binary "$3"} "$BASE$2")
	api_record "$1" "$2" "$st" "$T/body" "$T/hdr"
}
jf() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$T/body" "$1"; }
hdr() { sed -n "s/^$1: \(.*\)\r$/\1/Ip" "$T/hdr"; }
# sipp_run NAME SCENARIO PORT PASSWORD [ARGS...]: one sipp run as PBX user $SIP_USER; exit status
sipp_run() {
	_name=$1 _sf=$2 _port=$3 _pw=$4; shift 4
	timeout 20 sipp -sf "$SIPP_DIR/$_sf" "127.0.0.1:$SIP_PORT" -i 127.0.0.1 -p "$_port" -m 1 -nostdin \
		-au "$SIP_USER" -ap "$_pw" -key trunk_host "$TRUNK_HOST" -key expires 300 "$@" \
		-trace_err -error_file "$T/$_name.err" -trace_msg -message_file "$T/$_name.msg" >/dev/null 2>&1
}
register() { sipp_run "$1" pbx_register.xml "$2" "$3" -s "$SIP_USER"; }
register_refused() { sipp_run "$1" pbx_register_fail.xml "$2" "$3" -s "$SIP_USER"; }
# versions: "A:v B:v", the password_version of PBX A's and PBX B's registrations ("-": none)
versions() {
	api GET "/v1/account/$ACC/trunks/$TRUNK/registrations"
	jf '" ".join("%s:%s" % (n, next((r["password_version"] for r in d["data"] if r["contact"].split(";")[0].endswith(":" + p)), "-")) for n, p in (("A", "'"$PORT_A"'"), ("B", "'"$PORT_B"'")))'
}
calls_started() { grep -c "event=call_start" "$T/sipauthd.log"; }
PORT_A=$(free_port 127.0.0.1)   # PBX A: stays on the password it had
PORT_B=$(free_port 127.0.0.1)   # PBX B: takes the new one

# --- before: one password, version 1
api GET "$CREDS/$CRED"
assert_eq "a new credential is at password_version 1, never rotated" "1 None None" \
	"$(jf 'd["password_version"], d["rotated_at"], d["previous_password_expires_at"]' | tr -d '(),')"
register reg_a0 "$PORT_A" "$PASS1"
assert_eq "PBX A registers with the first password" 0 $?

# a call set up with the first password, still up while the password is rotated
spawn "$T/gw_held.out" timeout 30 sipp -sf "$SIPP_DIR/gateway_uas.xml" -i 127.0.0.2 -p "$GW_PORT" -m 1 -nostdin
gw_held=$!
sleep 0.3
spawn "$T/held.out" timeout 30 sipp -sf "$SIPP_DIR/pbx_call.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.1 \
	-p "$(free_port 127.0.0.1)" -m 1 -nostdin -s 15550000001 -au "$SIP_USER" -ap "$PASS1" \
	-key trunk_host "$TRUNK_HOST" -d 4000 -trace_msg -message_file "$T/held.msg"
held=$!
wait_for sh -c "[ \$(grep -c event=call_start '$T/sipauthd.log') -ge 1 ]" || fail "the first call did not start"

# --- rotate: version 2, the first password going on for an hour
api POST "$ROTATE" "{\"password\": \"$PASS2\"}"
assert_eq "rotate answers 200 with the credential at version 2" "200 $CRED 2" "$st $(jf 'd["id"]') $(jf 'd["password_version"]')"
assert_eq "the answer has the credential's fields and no secret" \
	"['created_at', 'id', 'password_version', 'previous_password_expires_at', 'rotated_at', 'trunk_id', 'username']" \
	"$(jf 'sorted(d)')"
assert_eq "the answer never holds a password" 0 "$(grep -c -e "$PASS1" -e "$PASS2" "$T/body")"
assert_eq "the default overlap is 3600 s" 3600 \
	"$(jf 'int(__import__("calendar").timegm(__import__("time").strptime(d["previous_password_expires_at"], "%Y-%m-%dT%H:%M:%SZ")) - __import__("calendar").timegm(__import__("time").strptime(d["rotated_at"], "%Y-%m-%dT%H:%M:%SZ")))')"
api GET "$CREDS/$CRED"
assert_eq "GET shows password_version 2" 2 "$(jf 'd["password_version"]')"
api GET "$CREDS"
assert_eq "the list shows password_version 2" 2 "$(jf '[c["password_version"] for c in d["data"] if c["id"] == "'"$CRED"'"][0]')"
api GET "/v1/account/$ACC/trunks/$TRUNK/calls"
assert_eq "the call of the first password is still listed after the rotation" 1 "$(jf 'len(d["data"])')"
wait "$held"; assert_eq "the call of the first password went on and ended with its own BYE (200)" 0 $?
wait "$gw_held"; assert_eq "the gateway got that BYE from the PBX" 0 $?
assert_eq "no BYE came from sipauthd: nothing was revoked" 0 "$(grep -c 'credential revoked' "$T/held.msg")"
assert_eq "the daemon logged no revocation" 0 "$(grep -c event=credential_revoked "$T/sipauthd.log")"
assert_match "the daemon logged the rotation" "event=credential_rotated cred=$CRED trunk=$TRUNK account=$ACC via=api password_version=2 overlap=3600" \
	"$(cat "$T/sipauthd.log")"

# --- during the overlap: PBX A on the first password, PBX B on the second, both register and call
register reg_a1 "$PORT_A" "$PASS1"
assert_eq "during the overlap PBX A registers with the first password" 0 $?
register reg_b1 "$PORT_B" "$PASS2"
assert_eq "during the overlap PBX B registers with the second password" 0 $?
assert_eq "the registrations say which password each PBX used" "A:1 B:2" "$(versions)"
spawn "$T/gw2.out" timeout 30 sipp -sf "$SIPP_DIR/gateway_uas.xml" -i 127.0.0.2 -p "$GW_PORT" -m 2 -nostdin
gw2=$!
sleep 0.3
before=$(calls_started)
sipp_run call_a pbx_call.xml "$(free_port 127.0.0.1)" "$PASS1" -s 15550000002
assert_eq "during the overlap PBX A places a call with the first password" 0 $?
sipp_run call_b pbx_call.xml "$(free_port 127.0.0.1)" "$PASS2" -s 15550000003
assert_eq "during the overlap PBX B places a call with the second password" 0 $?
wait "$gw2"; assert_eq "the gateway answered both calls" 0 $?
assert_eq "two more calls were set up" $((before + 2)) "$(calls_started)"

# --- a restart during the overlap keeps both passwords
cp "$T/sipauthd.log" "$T/sipauthd-1.log"
stop "$SIPAUTHD_PID"
start_sipauthd MD5 "$CONF_API" || { fail "sipauthd did not start again"; finish; }
register reg_a2 "$PORT_A" "$PASS1"
assert_eq "after a restart the first password still registers (overlap)" 0 $?
register reg_b2 "$PORT_B" "$PASS2"
assert_eq "after a restart the second password registers" 0 $?
assert_eq "the registrations still say 1 and 2" "A:1 B:2" "$(versions)"

# --- bad rotations: 422 naming the field, nothing changed
for case in '{"overlap_seconds": 60}|missing_field|password' \
	'{"password": "'"$PASS3"'", "overlap_seconds": -1}|invalid_field|overlap_seconds' \
	'{"password": "'"$PASS3"'", "overlap_seconds": 86401}|invalid_field|overlap_seconds' \
	'{"password": "'"$PASS3"'", "overlap_seconds": "60"}|invalid_field|overlap_seconds' \
	'{"password": "'"$PASS3"'", "overlap_seconds": 2.5}|invalid_field|overlap_seconds' \
	'{"password": "'"$PASS3"'", "overlap": 60}|invalid_field|overlap' \
	'{"password": 12345678901234}|invalid_field|password' \
	'{"password": "short"}|weak_password|password' \
	'{"password": "'"$PASS2"'"}|weak_password|password'; do
	body=${case%%|*}; rest=${case#*|}
	api POST "$ROTATE" "$body"
	assert_eq "rotate $body: 422 $rest" "422 $rest" "$st $(jf 'd["error"]["code"] + "|" + d["error"]["field"]')"
done
api POST "$ROTATE" '{"password": '
assert_eq "rotate with broken JSON: 400 invalid_json" "400 invalid_json" "$st $(jf 'd["error"]["code"]')"
api POST "$CREDS/cred_nothere/rotate" "{\"password\": \"$PASS3\"}"
assert_eq "rotate of an unknown credential: 404" 404 "$st"
api GET "$ROTATE"
assert_eq "GET on rotate: 405, Allow: POST" "405 POST" "$st $(hdr Allow)"
api GET "$CREDS/$CRED"
assert_eq "after the refused rotations the credential is still at version 2" 2 "$(jf 'd["password_version"]')"

# --- rotating again during the overlap: only current and previous; a 3-second overlap
api POST "$ROTATE" "{\"password\": \"$PASS3\", \"overlap_seconds\": 3}"
assert_eq "a second rotation: 200, version 3" "200 3" "$st $(jf 'd["password_version"]')"
END2=$(jf 'd["previous_password_expires_at"]')
register_refused old_a "$PORT_A" "$PASS1"
assert_eq "the first password stops at once (401 again, as a wrong password)" 0 $?
register reg_b3 "$PORT_B" "$PASS2"
assert_eq "the second password registers within its 3-second overlap" 0 $?
python3 -c 'import calendar,sys,time; t=calendar.timegm(time.strptime(sys.argv[1], "%Y-%m-%dT%H:%M:%SZ")); time.sleep(max(0, t - time.time()) + 0.2)' "$END2"
register_refused old_b "$PORT_B" "$PASS2"
assert_eq "after the overlap the second password is refused (401 again)" 0 $?
register reg_b4 "$PORT_B" "$PASS3"
assert_eq "the third password registers" 0 $?
api GET "/v1/account/$ACC/trunks/$TRUNK/auth-failures" 
assert_eq "the failure log: the second password after its overlap, named as version 2" \
	"bad_password $SIP_USER REGISTER 2" \
	"$(jf '" ".join(str(d["data"][0][k]) for k in ("reason", "username", "method", "password_version"))')"
assert_eq "the failure log: the first password, neither current nor previous, has no version" \
	"bad_password None" "$(jf '" ".join(str(d["data"][1][k]) for k in ("reason", "password_version"))')"
assert_eq "PBX B's registration now says version 3 (PBX A's stays 1 until it expires)" "A:1 B:3" "$(versions)"

# --- Idempotency-Key: a retried rotation is replayed, not run twice
api POST "$ROTATE" "{\"password\": \"$PASS4\", \"overlap_seconds\": 0}" rotate-4
assert_eq "a rotation with a key: 200, version 4" "200 4" "$st $(jf 'd["password_version"]')"
cp "$T/body" "$T/first"
api POST "$ROTATE" "{\"password\": \"$PASS4\", \"overlap_seconds\": 0}" rotate-4
assert_eq "its repeat is a replay of the first answer" "200 true" "$st $(hdr Idempotent-Replayed)"
assert_eq "... byte for byte" "$(cat "$T/first")" "$(cat "$T/body")"
api POST "$ROTATE" "{\"password\": \"$PASS1\", \"overlap_seconds\": 0}" rotate-4
assert_eq "the same key with another password: 409" "409 idempotency_key_reused" "$st $(jf 'd["error"]["code"]')"
api GET "$CREDS/$CRED"
assert_eq "the credential was rotated once: version 4" 4 "$(jf 'd["password_version"]')"
register_refused old_b3 "$PORT_B" "$PASS3"
assert_eq "overlap 0: the third password stops at once" 0 $?
register reg_b5 "$PORT_B" "$PASS4"
assert_eq "the fourth password registers" 0 $?
assert_match "/metrics counts the rotations of this run (the replay not)" "sipauthd_credential_rotations_total 2" \
	"$(curl -s "$BASE/metrics")"

# --- delete still ends every call, whichever password set it up
spawn "$T/gw_del.out" timeout 30 sipp -sf "$SIPP_DIR/gateway_uas.xml" -i 127.0.0.2 -p "$GW_PORT" -m 1 -nostdin
gw_del=$!
sleep 0.3
spawn "$T/del.out" timeout 30 sipp -sf "$SIPP_DIR/pbx_call_hold.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.1 \
	-p "$(free_port 127.0.0.1)" -m 1 -nostdin -s 15550000004 -au "$SIP_USER" -ap "$PASS4" -key trunk_host "$TRUNK_HOST"
del=$!
wait_for grep -q "event=call_start" "$T/sipauthd.log" || fail "the call before the delete did not start"
api DELETE "$CREDS/$CRED"
assert_eq "DELETE of the rotated credential: 204" 204 "$st"
wait "$del"; assert_eq "the PBX got sipauthd's BYE for its call" 0 $?
wait "$gw_del"; assert_eq "the gateway got sipauthd's BYE" 0 $?
assert_match "the delete revoked the call" "event=credential_revoked cred=$CRED calls_ended=1" "$(cat "$T/sipauthd.log")"

openapi_check
assert_eq "no log line holds a password" 0 \
	"$(cat "$T/sipauthd-1.log" "$T/sipauthd.log" | grep -c -e "$PASS1" -e "$PASS2" -e "$PASS3" -e "$PASS4")"
finish
