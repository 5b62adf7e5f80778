#!/bin/sh
# abuse.sh: a source that keeps failing is banned (its requests dropped unanswered) for
# ban_time, then served again; the trusted gateway is never banned; SIGHUP changes thresholds.
. "$top_srcdir/test/lib.sh"
setup_store || { fail "store setup"; finish; }
# another customer: its account, trunk and credential
ACC_B=$("$SIPAUTHCTL" --store "$STORE" account create --name other) || { fail "account B"; finish; }
TRUNK_B=$("$SIPAUTHCTL" --store "$STORE" trunk create --account "$ACC_B" --name other) || { fail "trunk B"; finish; }
printf '%s\n' "other_customer_password_9" | "$SIPAUTHCTL" --store "$STORE" credential create --trunk "$TRUNK_B" \
	--username pbx-other-01 --password-stdin >/dev/null || { fail "credential B"; finish; }
API_PORT=$(free_port 127.0.0.1)
ADMIN_TOKEN=adm_$(python3 -c 'import secrets; print(secrets.token_hex(16))')
printf '%s\n' "$ADMIN_TOKEN" >"$T/admin.token"
ABUSE_MAX_FAILURES=3 start_sipauthd "SHA-256, MD5" "[abuse]
window = 60
ban_time = 8
[api]
listen = 127.0.0.1:$API_PORT
admin_token_file = $T/admin.token" || { fail "sipauthd did not start"; finish; }
# admin METHOD PATH [TOKEN]: the status; the body in $T/admin.json (each answer kept for openapi_check)
admin() {
	_c=$(curl -s -o "$T/admin.json" -D "$T/admin.h" -w '%{http_code}' -X "$1" -H "Authorization: Bearer ${3-$ADMIN_TOKEN}" \
		"http://127.0.0.1:$API_PORT$2")
	api_record "$1" "$2" "$_c" "$T/admin.json" "$T/admin.h"
	echo "$_c"
}

reg() { sipc register --host "$TRUNK_HOST" --user "$SIP_USER" --password "$SIP_PASS" --timeout 1 "$@"; }
status_of() { json_get 'final.get("final_status")'; }

# from another address: a source that authenticated is vouched for and never banned (hardening.sh)
assert_eq "a good registration before any failure" 200 "$(reg --local-ip 127.0.0.5 | status_of)"
assert_match "metrics show the registration" "sipauthd_registrations_active 1" \
	"$(curl -s "http://127.0.0.1:$API_PORT/metrics")"
for i in 1 2; do
	assert_eq "wrong password $i: challenged again" 401 "$(reg --wrong-password wrong_password_$i | status_of)"
done
assert_eq "wrong password 3: still a 401 (the ban starts now)" 401 "$(reg --wrong-password wrong_password_3 | status_of)"
assert_match "the ban is logged once with its source" "event=ban src=127.0.0.1 failures=3 window=60 ban_time=8" "$(cat "$T/sipauthd.log")"
reg >"$T/banned.json"
assert_eq "a banned source gets no answer, even with the right password (exit 3 = no answer)" 3 $?
assert_eq "nothing came back to the banned source" 0 "$(json_get 'len(resp)' <"$T/banned.json")"
metrics=$(curl -s "http://127.0.0.1:$API_PORT/metrics")
assert_match "metrics count the ban" "sipauthd_bans_total 1" "$metrics"
assert_match "metrics count the dropped request" "sipauthd_banned_requests_dropped_total [1-9]" "$metrics"
assert_match "metrics show one source banned now" "sipauthd_banned_sources 1" "$metrics"
assert_eq "another source is served meanwhile" 200 \
	"$(sipc options --local-ip 127.0.0.3 --host "$TRUNK_HOST" --timeout 1 | status_of)"
# the operator lists the bans and lifts one (fail2ban-client unban), with the admin token
assert_eq "GET /v1/bans with the admin token: 200" 200 "$(admin GET /v1/bans)"
assert_eq "... lists the source, banned for everything, with its end" "127.0.0.1 all True" \
	"$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))["data"]; print(" ".join("%s %s %s" % (b["source"], b["scope"], b["until"].endswith("Z")) for b in d))' "$T/admin.json")"
assert_eq "without the admin token: 401" 401 "$(admin GET /v1/bans "tvx_sk_live_notanadmin")"
assert_eq "DELETE /v1/bans/ADDRESS of a source not banned: 404" 404 "$(admin DELETE /v1/bans/127.0.0.99)"
assert_eq "... of no address: 400" 400 "$(admin DELETE /v1/bans/not-an-address)"
assert_eq "DELETE /v1/bans/127.0.0.1: 204" 204 "$(admin DELETE /v1/bans/127.0.0.1)"
assert_match "... logged" "event=unban src=127.0.0.1 by=api" "$(cat "$T/sipauthd.log")"
assert_eq "the source is served again at once" 200 "$(reg | status_of)"
assert_match "metrics show no source banned" "sipauthd_banned_sources 0" "$(curl -s "http://127.0.0.1:$API_PORT/metrics")"
assert_eq "GET /v1/bans lists none" '{"data":[]}' "$( [ "$(admin GET /v1/bans)" = 200 ] && cat "$T/admin.json")"
# a ban ends by itself after ban_time (another address: 127.0.0.1 has just authenticated, and is
# vouched for its trunk)
for i in 1 2 3; do reg --local-ip 127.0.0.12 --wrong-password wrong_again_$i >/dev/null; done
assert_eq "another source banned after three failures (no answer)" 3 "$(reg --local-ip 127.0.0.12 >/dev/null; echo $?)"
sleep 8.2
assert_eq "after ban_time the source is served again" 200 "$(reg --local-ip 127.0.0.12 | status_of)"

# the trusted gateway address is never banned, however often it fails
for i in 1 2 3 4; do
	sipc register --local-ip 127.0.0.2 --host "$TRUNK_HOST" --user "$SIP_USER" --password x --wrong-password bad_one_$i \
		--timeout 1 >/dev/null
done
assert_eq "the trusted gateway is still answered" 200 \
	"$(sipc options --local-ip 127.0.0.2 --host "$TRUNK_HOST" --timeout 1 | status_of)"

# a nonce anyone can make up (the challenge's shape under a key sipauthd never uses, or under
# the key id it holds with another instance and a MAC it did not make, as an earlier start's
# nonce whose key id was drawn again) gets stale=true whatever the password: no guessing
# oracle, although over UDP such answers count toward no ban (the source never proved it receives)
STRANGER="python3 $top_srcdir/test/stranger.py"
for made_up in --made-up-nonce --made-up-nonce-live-key; do
	for pw in wrong_guess_1 "$SIP_PASS"; do
		$STRANGER auth --server "127.0.0.1:$SIP_PORT" --local-ip 127.0.0.7 --host "$TRUNK_HOST" --user "$SIP_USER" \
			--password "$pw" --count 4 "$made_up" --timeout 1 >"$T/madeup.json"
		assert_eq "$made_up, password $( [ "$pw" = "$SIP_PASS" ] && echo right || echo wrong ): 401 stale=true, 4 times" \
			"401 True 401 True 401 True 401 True" \
			"$(python3 -c 'import json,sys; print(" ".join("%s %s" % (e["status"], e["stale"]) for e in map(json.loads, open(sys.argv[1])) if e["event"] == "response"))' "$T/madeup.json")"
	done
done
assert_nomatch "... and no ban for them" "event=ban src=127.0.0.7" "$(cat "$T/sipauthd.log")"
assert_eq "the source is answered normally after" 200 "$(reg --local-ip 127.0.0.7 | status_of)"

# a trunk host spelled as an absolute name (a trailing dot) names its trunk: customer A's
# credential with a Request-URI naming trunk B so, and its own trunk in To, is refused (it was
# authenticated against A, from To, and went to the gateway naming B); A's own such host is A
assert_eq "A's credential, Request-URI trunk B's host with a trailing dot: 401 (B's realm)" \
	"401 trunk-$TRUNK_B.sip.tryvox.io" \
	"$(reg --local-ip 127.0.0.10 --uri "sip:trunk-$TRUNK_B.sip.tryvox.io." |
		json_get '"%s %s" % (final.get("final_status"), __import__("re").search(r"realm=\"([^\"]+)\"", resp[-1]["headers"]["www-authenticate"][0]).group(1))')"
assert_eq "A's own trunk host with a trailing dot: 200" 200 \
	"$(reg --local-ip 127.0.0.10 --host "$TRUNK_HOST." | status_of)"

# a REGISTER that authenticates for trunk A may not name trunk B's address of record in To
# (RFC 3261 §10.3 step 4): 403, logged
assert_eq "A's credential, Request-URI trunk A, To trunk B: 403" 403 \
	"$(reg --local-ip 127.0.0.10 --host "trunk-$TRUNK_B.sip.tryvox.io" --uri "sip:$TRUNK_HOST" | status_of)"
assert_match "... logged with its reason" 'event=reject status=403 reason="To names another trunk" method=REGISTER' \
	"$(cat "$T/sipauthd.log")"

# a source that authenticated for its own trunk is not banned for failures against that trunk
# (forged UDP under its address), but its guesses at another customer's trunk still count:
# max_failures of them refuse it that trunk (no answer, even to the right password) and keep
# its own working
assert_eq "customer A registers from 127.0.0.8" 200 "$(reg --local-ip 127.0.0.8 | status_of)"
regb() { sipc register --local-ip 127.0.0.8 --host "trunk-$TRUNK_B.sip.tryvox.io" --user pbx-other-01 --timeout 1 "$@"; }
for i in 1 2 3; do
	assert_eq "A's address guesses at trunk B's password ($i): 401" 401 \
		"$(regb --password other_customer_password_9 --wrong-password guess_$i | status_of)"
done
assert_match "the third starts a ban from other trunks, logged" \
	"event=ban src=127.0.0.8 scope=other_trunks failures=3 window=60 ban_time=8 trunk=$TRUNK_B" \
	"$(cat "$T/sipauthd.log")"
regb --password other_customer_password_9 >"$T/other.json"
assert_eq "trunk B gets no answer to A's address now, even with the right password" \
	"3 0" "$? $(json_get 'len(resp)' <"$T/other.json")"
assert_eq "... while A's own registration from that address goes on" 200 "$(reg --local-ip 127.0.0.8 | status_of)"
assert_eq "... and trunk B's own PBX elsewhere too" 200 \
	"$(sipc register --local-ip 127.0.0.9 --host "trunk-$TRUNK_B.sip.tryvox.io" --user pbx-other-01 \
		--password other_customer_password_9 --timeout 1 | status_of)"
assert_eq "GET /v1/bans lists A's address, refused the other trunks" "127.0.0.8 other_trunks" \
	"$( [ "$(admin GET /v1/bans)" = 200 ] && python3 -c 'import json,sys; print(" ".join("%s %s" % (b["source"], b["scope"]) for b in json.load(open(sys.argv[1]))["data"]))' "$T/admin.json")"
sleep 8.2
assert_eq "after ban_time, trunk B answers A's address again (the right password: 200)" 200 \
	"$(regb --password other_customer_password_9 | status_of)"

# SIGHUP: max_failures = 0 turns banning off without a restart
sed -i 's/^max_failures = 3/max_failures = 0/; s/^nonce_ttl = .*/nonce_ttl = 45/' "$T/sipauthd.conf"
kill -HUP "$SIPAUTHD_PID"
wait_for grep -q "event=reloaded" "$T/sipauthd.log"
# a changed key that only a restart applies is named, never silently ignored
assert_match "SIGHUP names the changed key it cannot apply" \
	'event=reload_needs_restart key="\[auth\] nonce_ttl"' "$(cat "$T/sipauthd.log")"
assert_match "... and counts what it applied" "event=reloaded config=$T/sipauthd.conf applied=1 restart_needed=1" \
	"$(cat "$T/sipauthd.log")"
for i in 1 2 3 4 5; do reg --wrong-password wrong_again_$i >/dev/null; done
assert_eq "with banning off after reload, failures never ban" 200 "$(reg | status_of)"
openapi_check
finish
