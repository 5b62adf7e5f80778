#!/bin/sh
# trunk_controls.sh: a trunk's carrier controls (issue 14) end to end: PATCH and its 422s,
# sipauthctl trunk set, channels (a held call plus a second one, outbound and inbound), the call
# rate (a burst above it), the allow-list from two loopback sources, IP authentication without
# credentials, TLS only (sipsak over TLS and over UDP), the challenge order, and the limits
# surviving a restart.
. "$top_srcdir/test/lib.sh"
. "$top_srcdir/test/tls_lib.sh"
need sipp
need curl
setup_store || { fail "store setup"; finish; }
TRUNK_DNS=$(printf '%s' "$TRUNK_HOST" | tr _ -)
make_cert server sipauthd-test || { fail "openssl made no certificate"; finish; }
API_PORT=$(free_port 127.0.0.1)
BASE="http://127.0.0.1:$API_PORT"
KEY=$("$SIPAUTHCTL" --store "$STORE" apikey create --account "$ACC")
start_tls_sipauthd d "SHA-256, MD5" "" "[api]
listen = 127.0.0.1:$API_PORT" || { fail "sipauthd did not start"; finish; }
LOG=$T/d.log
TPATH="/v1/account/$ACC/trunks/$TRUNK"
# api METHOD PATH [BODY]: status in $st, the answer in $T/body
api() {
	st=$(curl -s -o "$T/body" -D "$T/hdr" -w '%{http_code}' -X "$1" -H "Authorization: Bearer $KEY" \
		-H 'Content-Type: application/json' ${3:+--data-binary "$3"} "$BASE$2")
	api_record "$1" "$2" "$st" "$T/body" "$T/hdr"
}
jf() { python3 -c 'import json,sys; d=json.load(open(sys.argv[2])); print(eval(sys.argv[1]))' "$1" "$T/body"; }
metric() { curl -s "$BASE/metrics" | sed -n "s/^sipauthd_$1 //p"; }
call() {   # NAME [sipclient invite args]: a call from the PBX; its JSON lines in $T/NAME.json
	_n=$1; shift
	sipc invite --host "$TRUNK_HOST" --user "$SIP_USER" --password "$SIP_PASS" --algorithms MD5 --timeout 2 "$@" \
		>"$T/$_n.json"
}
status_of() { json_get 'final.get("final_status")' <"$T/$1.json"; }

# ---- the PATCH validation table: each bad value is a 422 naming the field and the rule
check_422() {   # BODY FIELD MESSAGE
	api PATCH "$TPATH" "$1"
	assert_eq "PATCH $1 is 422" 422 "$st"
	assert_eq "... naming $2 and the rule" "invalid_field|$2|$3" \
		"$(jf 'd["error"]["code"] + "|" + d["error"].get("field", "") + "|" + d["error"]["message"]')"
}
check_422 '{"max_concurrent_calls": -1}' max_concurrent_calls \
	"max_concurrent_calls must be an integer from 0 to 1000000, or null for no limit"
check_422 '{"max_concurrent_calls": "2"}' max_concurrent_calls \
	"max_concurrent_calls must be an integer from 0 to 1000000, or null for no limit"
check_422 '{"max_calls_per_second": 0}' max_calls_per_second \
	"max_calls_per_second must be a number of calls per second from 0.001 to 10000, or null for no limit"
check_422 '{"allowed_sources": ["10.0.0.1/8"]}' allowed_sources \
	'allowed_sources entry 0 is not an IPv4 or IPv6 network with its host bits zero ("203.0.113.0/24", "2001:db8::/32" or an address)'
check_422 '{"allowed_sources": "10.0.0.0/8"}' allowed_sources \
	'allowed_sources must be an array of up to 64 networks such as "203.0.113.0/24"'
check_422 '{"ip_authentication": true}' ip_authentication \
	"ip_authentication needs allowed_sources: without them any address would be trusted"
check_422 '{"require_tls": "yes"}' require_tls "require_tls must be true or false"
check_422 '{"digest_algorithms": ["SHA-1"]}' digest_algorithms \
	'digest_algorithms must be null (the daemon'"'"'s [auth] algorithms) or a list of distinct names from "MD5", "SHA-256" and "SHA-512-256", in challenge order'
check_422 '{"channels": 2}' channels \
	"channels is not a trunk setting (max_concurrent_calls, max_calls_per_second, allowed_sources, ip_authentication, require_tls, digest_algorithms)"
api PATCH "$TPATH" '{"max_concurrent_calls": 2,'
assert_eq "PATCH with broken JSON is 400" "400 invalid_json" "$st $(jf 'd["error"]["code"]')"
api GET "$TPATH"
assert_eq "after the refusals nothing changed (GET shows the defaults)" \
	"None None [] False False None" \
	"$(jf 'd["max_concurrent_calls"], d["max_calls_per_second"], d["allowed_sources"], d["ip_authentication"], d["require_tls"], d["digest_algorithms"]' | tr -d '(),')"

# ---- sipauthctl trunk set: the same rules, the same shape
out=$("$SIPAUTHCTL" --store "$STORE" trunk set --trunk "$TRUNK" --max-concurrent-calls x 2>&1); rc=$?
assert_eq "sipauthctl trunk set refuses a bad value (exit 1, the rule)" \
	"1 sipauthctl: max_concurrent_calls must be an integer from 0 to 1000000, or none for no limit" "$rc $out"
out=$("$SIPAUTHCTL" --store "$STORE" trunk set --trunk trunk_nope --require-tls true 2>&1); rc=$?
assert_eq "sipauthctl trunk set on an unknown trunk exits 2" "2 sipauthctl: unknown trunk trunk_nope" "$rc $out"

# ---- digest_algorithms: the trunk's challenge order (the daemon offers SHA-256 first)
sipc register --host "$TRUNK_HOST" --user "$SIP_USER" --password "$SIP_PASS" >"$T/reg1.json"
assert_eq "by default the first challenge is the daemon's first algorithm" "SHA-256" \
	"$(json_get 'resp[0]["headers"]["www-authenticate"][0].split("algorithm=")[1].split(",")[0]' <"$T/reg1.json")"
api PATCH "$TPATH" '{"digest_algorithms": ["MD5", "SHA-256"]}'
assert_eq "PATCH digest_algorithms is 200" 200 "$st"
sipc register --host "$TRUNK_HOST" --user "$SIP_USER" --password "$SIP_PASS" --algorithms MD5 >"$T/reg2.json"
assert_eq "the trunk's order: MD5 first, then SHA-256" "['MD5', 'SHA-256']" \
	"$(json_get '[h.split("algorithm=")[1].split(",")[0] for h in resp[0]["headers"]["www-authenticate"]]' <"$T/reg2.json")"
assert_eq "a client that answers the first challenge only registers (200)" 200 "$(status_of reg2)"
# an algorithm [auth] algorithms lacks (SHA-256, MD5 here) is never offered: no answer could verify
api PATCH "$TPATH" '{"digest_algorithms": ["SHA-512-256", "MD5"]}'
assert_eq "PATCH with SHA-512-256 first is 200" 200 "$st"
sipc register --host "$TRUNK_HOST" --user "$SIP_USER" --password "$SIP_PASS" --algorithms MD5 >"$T/reg3.json"
assert_eq "... but only MD5 is offered" "['MD5']" \
	"$(json_get '[h.split("algorithm=")[1].split(",")[0] for h in resp[0]["headers"]["www-authenticate"]]' <"$T/reg3.json")"
assert_eq "... and answering it registers (200)" 200 "$(status_of reg3)"
api PATCH "$TPATH" '{"digest_algorithms": ["MD5", "SHA-256"]}'

# ---- channels: a held call plus a second one
spawn "$T/gw.out" timeout 60 sipp -sf "$SIPP_DIR/gateway_uas.xml" -i 127.0.0.2 -p "$GW_PORT" -nostdin -m 20
gw=$!
sleep 0.3
api PATCH "$TPATH" '{"max_concurrent_calls": 1}'
assert_eq "PATCH max_concurrent_calls 1 is 200 and shows it" "200 1" "$st $(jf 'd["max_concurrent_calls"]')"
PBX="-au $SIP_USER -ap $SIP_PASS -key trunk_host $TRUNK_HOST"
spawn "$T/held.out" timeout 30 sipp -sf "$SIPP_DIR/pbx_call.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.1 -p "$(free_port)" \
	-s 5550001 $PBX -d 4000 -m 1 -nostdin
held=$!
wait_for grep -q "event=call_start" "$LOG" || fail "the held call did not start"
api GET "$TPATH/calls"
assert_eq "GET .../calls shows the usage against the limit" "1 1 None" \
	"$(jf 'd["usage"]["concurrent_calls"], d["usage"]["max_concurrent_calls"], d["usage"]["max_calls_per_second"]' | tr -d '(),')"
call second
assert_eq "a second call over the channel limit gets 503" 503 "$(status_of second)"
assert_eq "... with Retry-After and a Reason naming the limit" \
	"['5'] ['SIP;cause=503;text=\"trunk channel limit\"']" \
	"$(json_get 'str(resp[-1]["headers"].get("retry-after")) + " " + str(resp[-1]["headers"].get("reason"))' <"$T/second.json")"
# inbound takes the trunk's channels too: the PBX registers, the gateway calls it
sipc register --host "$TRUNK_HOST" --user "$SIP_USER" --password "$SIP_PASS" --algorithms MD5 \
	--contact "sip:$SIP_USER@127.0.0.1:$(free_port 127.0.0.1)" >/dev/null
$SIPCLIENT invite --server "127.0.0.1:$SIP_PORT" --local-ip 127.0.0.2 --host "$TRUNK_HOST" --to 5550100 \
	--no-auth --timeout 2 >"$T/inbound.json"
assert_eq "an inbound call over the channel limit gets 486 Busy Here, no Retry-After (the customer is busy, not the edge)" \
	"486 None ['SIP;cause=486;text=\"trunk channel limit\"']" \
	"$(json_get 'str(final.get("final_status")) + " " + str(resp[-1]["headers"].get("retry-after")) + " " + str(resp[-1]["headers"].get("reason"))' <"$T/inbound.json")"
assert_match "the refusal is logged as a trunk limit, not overload" \
	"event=trunk_limit reason=channel_limit trunk=$TRUNK username=\"$SIP_USER\" method=INVITE src=127.0.0.1:" "$(cat "$LOG")"
assert_eq "/metrics counts the channel refusals apart" 2 "$(metric 'trunk_refusals_total{reason="channel_limit"}')"
api GET "$TPATH/auth-failures?limit=5"
assert_eq "the failure log has the refusals" "channel_limit channel_limit" "$(jf '" ".join(f["reason"] for f in d["data"][:2])')"
wait "$held"
assert_eq "the held call (sipp) completed normally" 0 $?
call third
assert_eq "once the held call ended, a new call goes through (200)" 200 "$(status_of third)"

# ---- the call rate: a burst above it (0.1/s: one call, then 503 for ten seconds)
api PATCH "$TPATH" '{"max_concurrent_calls": null, "max_calls_per_second": 0.1}'
assert_eq "PATCH max_calls_per_second 0.1 is 200" "200 0.1" "$st $(jf 'd["max_calls_per_second"]')"
# sipp places four calls at 20/s: one goes through, three fail on the 503
(cd "$T" && timeout 30 sipp -sf "$SIPP_DIR/pbx_call.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.1 -p "$(free_port)" \
	-s 5550001 $PBX -d 100 -m 4 -r 20 -nostdin -trace_stat -stf "$T/burst.csv" -fd 1 >"$T/burst.out" 2>&1)
assert_eq "sipp: of a burst of four calls at 20/s, one completes and three fail" "1 3" \
	"$(sipp_stat "$T/burst.csv")"
for i in 1 2; do call "burst$i"; done
assert_eq "within the same ten seconds the project's client gets 503 too" "503 503" \
	"$(for i in 1 2; do status_of "burst$i"; done | tr '\n' ' ' | sed 's/ $//')"
assert_eq "the rate 503 says retry in a second and why" \
	"['1'] ['SIP;cause=503;text=\"trunk call rate limit\"']" \
	"$(json_get 'str(resp[-1]["headers"].get("retry-after")) + " " + str(resp[-1]["headers"].get("reason"))' <"$T/burst2.json")"
assert_eq "/metrics counts the rate refusals" 5 "$(metric 'trunk_refusals_total{reason="rate_limit"}')"
# the 503 to an authenticated INVITE is kept by a transaction: the INVITE sent again unchanged
# (its 503 lost) gets the same 503, not a 403 for a nonce count used twice
worker_counts() {   # each SIP worker's requests so far, "W:N ..."
	curl -s "$BASE/metrics" | sed -n 's/^sipauthd_sip_worker_requests_total{worker="\([0-9]*\)"} \([0-9]*\)$/\1:\2/p' | tr '\n' ' '
}
busy_worker() {   # BEFORE AFTER: the worker(s) whose count rose
	python3 -c 'import sys; b, a = (dict(x.split(":") for x in v.split()) for v in sys.argv[1:3]); print(*[w for w in a if a[w] != b.get(w)])' "$1" "$2"
}
w0=$(worker_counts)
absorbed0=$(metric sip_retransmissions_absorbed_total)
call lost --lose-final --trace
w_lost=$(busy_worker "$w0" "$(worker_counts)")
assert_eq "an INVITE retransmitted after its rate 503 was lost gets that 503 again (not 403 as a replay)" \
	"407 503 True 503 None same-tag" \
	"$(json_get '" ".join(str(x) for x in [resp[0]["status"], resp[1]["status"], resp[1].get("lost"), resp[2]["status"], resp[2].get("lost"), "same-tag" if resp[1]["headers"]["to"] == resp[2]["headers"]["to"] else "other-tag"])' <"$T/lost.json")"
assert_eq "... absorbed as a retransmission, counted once as a refusal" 6 "$(metric 'trunk_refusals_total{reason="rate_limit"}')"
assert_eq "... one retransmission absorbed (the ACK of the 503 is not one)" 1 \
	"$(($(metric sip_retransmissions_absorbed_total) - absorbed0))"
# the kept 503 is for its sender only: the very bytes from another address never get it. At the
# worker that holds the transaction: 482; at another one (the kernel spreads sources over
# workers, and a new INVITE stays where it lands): a fresh challenge, the nonce count being used
json_get '[e["raw"] for e in sent if e["method"] == "INVITE"][-1]' <"$T/lost.json" >"$T/lost-invite.sip"
w1=$(worker_counts)
$SIPCLIENT raw --server "127.0.0.1:$SIP_PORT" --local-ip 127.0.0.3 --timeout 2 "$T/lost-invite.sip" >"$T/copied.json"
w_copy=$(busy_worker "$w1" "$(worker_counts)")
[ "$w_copy" = "$w_lost" ] && expect=482 || expect=407
assert_eq "the answered INVITE copied from another address (worker $w_copy; the transaction's: $w_lost): $expect" \
	"[$expect]" "$(json_get '[r["status"] for r in resp]' <"$T/copied.json")"
api PATCH "$TPATH" '{"max_calls_per_second": null}'

# ---- allowed_sources from two loopback sources: 403 before any challenge elsewhere
api PATCH "$TPATH" '{"allowed_sources": ["127.0.0.1"]}'
assert_eq "PATCH allowed_sources is 200" "200 ['127.0.0.1/32']" "$st $(jf 'd["allowed_sources"]')"
sipc register --host "$TRUNK_HOST" --user "$SIP_USER" --password "$SIP_PASS" --algorithms MD5 >"$T/allowed.json"
assert_eq "a REGISTER from the allowed address is 200" 200 "$(status_of allowed)"
sipc register --local-ip 127.0.0.3 --host "$TRUNK_HOST" --user "$SIP_USER" --password "$SIP_PASS" --algorithms MD5 \
	>"$T/elsewhere.json"
assert_eq "from 127.0.0.3: 403 Source Not Allowed, the only answer (no challenge)" "[(403, 'Source Not Allowed')]" \
	"$(json_get '[(r["status"], r["reason"]) for r in resp]' <"$T/elsewhere.json")"
api GET "$TPATH/auth-failures?limit=1"
assert_eq "logged as a failure with reason source_not_allowed" "source_not_allowed 127.0.0.3 REGISTER" \
	"$(jf 'd["data"][0]["reason"] + " " + d["data"][0]["source_address"] + " " + d["data"][0]["method"]')"
assert_eq "/metrics: auth failures by reason source_not_allowed" 1 \
	"$(metric 'auth_failures_total{reason="source_not_allowed"}')"

# ---- ip_authentication: calls from the allowed network need no digest and no credential
api PATCH "$TPATH" '{"ip_authentication": true}'
assert_eq "PATCH ip_authentication is 200" "200 True" "$st $(jf 'd["ip_authentication"]')"
sipc invite --host "$TRUNK_HOST" --user someone --no-auth --timeout 2 --hold 3 >"$T/ipauth.json" &
ipauth=$!
sleep 1
api GET "$TPATH/calls"
assert_eq "the call without credentials is up, owned by no credential" "1 None" \
	"$(jf 'len(d["data"]), d["data"][0]["credential_id"] if d["data"] else "-"' | tr -d '(),')"
api DELETE "$TPATH/credentials/$CRED"
assert_eq "deleting the trunk's credential" 204 "$st"
sleep 0.5
api GET "$TPATH/calls"
assert_eq "... does not end the call authenticated by address" 1 "$(jf 'len(d["data"])')"
wait "$ipauth"
assert_eq "the call without credentials went through (200)" 200 "$(status_of ipauth)"
assert_eq "/metrics counts requests let through by address" 1 "$(metric auth_by_address_total | head -1 | cut -c1)"
sipc invite --local-ip 127.0.0.3 --host "$TRUNK_HOST" --user someone --no-auth --timeout 2 >"$T/ipauth3.json"
assert_eq "from outside the network it is still 403" 403 "$(status_of ipauth3)"
api PATCH "$TPATH" '{"ip_authentication": false, "allowed_sources": []}'
SIP_PASS=another_secure_password_456
CRED=$(printf '%s\n' "$SIP_PASS" | "$SIPAUTHCTL" --store "$STORE" credential create --trunk "$TRUNK" \
	--username "$SIP_USER" --password-stdin | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')

# ---- require_tls: sipsak over TLS registers, over UDP it is told TLS is required
out=$("$SIPAUTHCTL" --store "$STORE" trunk set --trunk "$TRUNK" --require-tls true); rc=$?
assert_eq "sipauthctl trunk set --require-tls true" "0 True" "$rc $(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["require_tls"])')"
printf '127.0.0.1 localhost %s\n127.0.0.1 %s\n' "$(uname -n)" "$TRUNK_DNS" >"$T/hosts"
printf 'nameserver 127.0.0.1\n' >"$T/resolv.conf"
sipsak_reg() {   # NAME TRANSPORT PORT: exit status; readable output in $T/NAME.txt
	env GNUTLS_SYSTEM_PRIORITY_FILE="$T/gnutls-tls12.conf" timeout 20 unshare -m sh -c \
		'mount --bind "$1" /etc/hosts && mount --bind "$2" /etc/resolv.conf && shift 2 && exec "$@"' \
		sh "$T/hosts" "$T/resolv.conf" \
		sipsak -U -C "sip:$SIP_USER@127.0.0.1:$(free_port 127.0.0.1)" -s "sip:$SIP_USER@$TRUNK_DNS" -r "$3" \
		--transport="$2" --tls-ca-cert "$T/server.pem" -u "$SIP_USER" -a "$SIP_PASS" -x 300 -i -vvv \
		>"$T/$1.out" 2>&1
	_rc=$?
	tr -cd '\11\12\15\40-\176' <"$T/$1.out" >"$T/$1.txt"
	return $_rc
}
printf '[overrides]\ndisabled-version = tls1.3\n' >"$T/gnutls-tls12.conf"
if ! command -v sipsak >/dev/null 2>&1 || ! unshare -m true 2>/dev/null; then
	echo "SKIP (require_tls with sipsak): sipsak missing or no mount namespace"
else
	sipsak_reg tls tls "$TLS_PORT"
	assert_eq "sipsak over TLS registers (exit 0)" 0 $?
	sipsak_reg udp udp "$SIP_PORT"
	assert_match "sipsak over UDP is answered 403 TLS Required" "SIP/2.0 403 TLS Required" "$(cat "$T/udp.txt")"
fi
sipc register --transport tcp --host "$TRUNK_HOST" --user "$SIP_USER" --password "$SIP_PASS" --algorithms MD5 \
	>"$T/tcp.json"
assert_eq "over TCP too: 403 TLS Required, no challenge" "[(403, 'TLS Required')]" \
	"$(json_get '[(r["status"], r["reason"]) for r in resp]' <"$T/tcp.json")"

# ---- the limits survive a restart
api PATCH "$TPATH" '{"require_tls": false, "max_concurrent_calls": 0}'
stop "$SIPAUTHD_PID"
start_tls_sipauthd d "SHA-256, MD5" "" "[api]
listen = 127.0.0.1:$API_PORT" || { fail "sipauthd did not start again"; finish; }
api GET "$TPATH"
assert_eq "after a restart GET shows the limits" "0 ['MD5', 'SHA-256']" \
	"$(jf 'd["max_concurrent_calls"], d["digest_algorithms"]' | sed 's/^(//; s/)$//; s/, \[/ [/')"
call after_restart
assert_eq "after a restart the channel limit (0) still refuses calls" 503 "$(status_of after_restart)"
# the 503's transaction got its ACK (the client sends one): Confirmed, it lingers Timer I (T4,
# 5 s), not Timer H (32 s); over TCP the stream's 2 s
ms() { echo $(($(date +%s%N) / 1000000)); }
freed_after() {   # ms from $1 until no transaction is left (at most 10 s)
	wait_for sh -c "[ \"\$(curl -s $BASE/metrics | sed -n 's/^sipauthd_sip_transactions //p')\" = 0 ]"
	echo $(($(ms) - $1))
}
assert_eq "the 503 is kept by a transaction" 1 "$(metric sip_transactions)"
t=$(freed_after "$(ms)")
assert_eq "... freed 5-8 s after its ACK (Confirmed: Timer I), not 32 s" 1 \
	"$([ "$t" -ge 4500 ] && [ "$t" -le 8500 ] && echo 1 || echo "after $t ms")"
call after_restart_tcp --transport tcp
assert_eq "over TCP the same 503, kept" "503 1" "$(status_of after_restart_tcp) $(metric sip_transactions)"
t=$(freed_after "$(ms)")
assert_eq "... freed within 4.2 s of its ACK (a stream's lingering, nothing is retransmitted)" 1 \
	"$([ "$t" -le 4200 ] && echo 1 || echo "after $t ms")"
stop "$SIPAUTHD_PID"
kill "$gw" 2>/dev/null
openapi_check
finish
