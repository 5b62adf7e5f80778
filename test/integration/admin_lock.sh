#!/bin/sh
# admin_lock.sh: an administrator's process stopped inside a write transaction on the store (issue 10,
# item 16) does not hold up SIP: a REGISTER adding a contact, challenges and a failed attempt are
# answered within a second and stored, because registrations and the failure log live in the daemon's
# runtime file (store/runtime/), never behind the administrator's writer lock on data.mdb; an API
# create waiting for that lock waits on the store thread, not on the loop.
. "$top_srcdir/test/lib.sh"

[ -x "$SIPAUTHCTL" ] || skip "$SIPAUTHCTL is not built"
WRITER="$top_builddir/test/durability_writer"
[ -x "$WRITER" ] || skip "$WRITER is not built (make check builds it)"
need python3
need curl

setup_store || { fail "store setup"; finish; }
KEY=$("$SIPAUTHCTL" --store "$STORE" apikey create --account "$ACC") || { fail "apikey"; finish; }
API_PORT=$(free_port 127.0.0.1)
BASE="http://127.0.0.1:$API_PORT/v1/account/$ACC/trunks/$TRUNK"
start_sipauthd "" "[api]
listen = 127.0.0.1:$API_PORT" || { fail "sipauthd did not start"; finish; }

# timed OUT ARGS...: sipc with a 1 s timeout into $T/OUT.json; the final status in $status,
# the milliseconds it took in $ms
timed() {
	out=$1; shift
	t0=$(date +%s%N)
	sipc "$@" --timeout 1 > "$T/$out.json"
	ms=$(( ($(date +%s%N) - t0) / 1000000 ))
	status=$(json_get 'final.get("final_status")' < "$T/$out.json")
}
within_1s() { [ "$ms" -lt 1000 ] && pass "$1 within 1 s (${ms} ms)" || fail "$1 took ${ms} ms"; }
# api_list PATH EXPR: a python expression over the listing's "data", or "no answer"
api_list() {
	curl -s --max-time 3 -H "Authorization: Bearer $KEY" "$BASE/$1" > "$T/api.json"
	python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))["data"]; print(eval(sys.argv[2]))' \
		"$T/api.json" "$2" 2>/dev/null || echo "no answer"
}

C_OLD="sip:pbx-old@127.0.0.1:5070" C_NEW="sip:pbx-new@127.0.0.1:5070"
timed before register --host "$TRUNK_HOST" --user "$SIP_USER" --password "$SIP_PASS" --contact "$C_OLD"
assert_eq "a REGISTER before the administrator's transaction" 200 "$status"

# the administrator's process: opened like sipauthctl, inside a write transaction, stopped
"$WRITER" --hold "$STORE" > "$T/hold.out" 2> "$T/hold.err" &
HOLD_PID=$!
_pids="$_pids $HOLD_PID"
wait_for grep -qx holding "$T/hold.out" || { fail "the holder did not start: $(cat "$T/hold.err")"; finish; }
wait_for sh -c "ps -o stat= -p $HOLD_PID | grep -q T" && pass "the holder is stopped inside its transaction" \
	|| fail "the holder is not stopped: $(ps -o stat= -p "$HOLD_PID")"
printf '%s\n' another_secure_password_1 | timeout 2 "$SIPAUTHCTL" --store "$STORE" credential create \
	--trunk "$TRUNK" --username blocked-user --password-stdin > /dev/null 2>&1
assert_eq "the writer lock is really held: sipauthctl credential create waits (killed after 2 s)" 124 "$?"

# an API create waits for the writer lock on the store thread: it must not hold up SIP or the loop
curl -s -o "$T/create.json" -w '%{http_code}' --max-time 30 -H "Authorization: Bearer $KEY" \
	-H 'Content-Type: application/json' -d '{"username":"api-during-hold","password":"another_secure_password_2"}' \
	"$BASE/credentials" > "$T/create.status" &
CREATE_PID=$!
sleep 0.3
health=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$API_PORT/healthz")
assert_eq "with an API create waiting for the lock, /healthz (on the loop) still answers at once" 200 "$health"
timed new register --host "$TRUNK_HOST" --user "$SIP_USER" --password "$SIP_PASS" --contact "$C_NEW"
assert_eq "REGISTER adding a contact: challenged, then 200" "['REGISTER 401', 'REGISTER 200']" \
	"$(json_get 'final.get("finals")' < "$T/new.json")"
within_1s "the REGISTER adding a contact was answered"
timed challenge options --host "$TRUNK_HOST" --uri "sip:15551234567@$TRUNK_HOST"
assert_eq "an OPTIONS to a user, without credentials, is challenged" 407 "$status"
within_1s "the OPTIONS challenge was answered"
timed keepalive options --host "$TRUNK_HOST"
assert_eq "a keep-alive OPTIONS is answered" 200 "$status"
within_1s "the keep-alive OPTIONS was answered"
timed regchallenge register --host "$TRUNK_HOST" --user "$SIP_USER" --no-auth
assert_eq "a REGISTER without credentials is challenged" 401 "$status"
within_1s "the REGISTER challenge was answered"
timed badpw register --host "$TRUNK_HOST" --user "$SIP_USER" --password "$SIP_PASS" --wrong-password wrong_password_987
assert_eq "a wrong password is challenged again" "['REGISTER 401', 'REGISTER 401']" \
	"$(json_get 'final.get("finals")' < "$T/badpw.json")"
within_1s "the wrong password was answered"

# what the daemon stored meanwhile, read back over the API while the holder is still stopped
assert_eq "the API lists both bindings" "['$C_NEW', '$C_OLD']" \
	"$(api_list registrations 'sorted(r["contact"] for r in d)')"
assert_eq "the failure log has the wrong password" "['bad_password']" \
	"$(api_list auth-failures '[f["reason"] for f in d]')"
kill -0 "$HOLD_PID" 2>/dev/null && pass "the holder still holds its transaction" || fail "the holder went away"

kill -0 "$CREATE_PID" 2>/dev/null && pass "the API create is still waiting for the administrator" \
	|| fail "the API create ended while the lock was held: $(cat "$T/create.status")"

kill -9 "$HOLD_PID"
wait "$HOLD_PID" 2>/dev/null
wait "$CREATE_PID"
assert_eq "once the holder is gone, the waiting API create completes (201)" 201 "$(cat "$T/create.status")"
assert_eq "... with the credential" api-during-hold \
	"$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["username"])' "$T/create.json")"
printf '%s\n' another_secure_password_1 | timeout 5 "$SIPAUTHCTL" --store "$STORE" credential create \
	--trunk "$TRUNK" --username after-holder --password-stdin > /dev/null
assert_eq "once the holder is gone, sipauthctl writes again" 0 "$?"
finish
