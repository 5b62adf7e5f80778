#!/bin/sh
# api_ratelimit.sh: [api] rate_limit per API key on the real daemon: with 1 a second and bursts of 5,
# a burst of 12 requests gets exactly 5 answers and 7 429s (with Retry-After, in the API's error shape),
# per key (an unknown key is limited too, another key is not affected, no key is not counted), the
# bucket refills at the rate, /metrics counts the 429s, SIGHUP applies a new rate, and no key is logged.
. "$top_srcdir/test/lib.sh"
need curl
setup_store || { fail "store setup"; finish; }
KEY=$("$SIPAUTHCTL" --store "$STORE" apikey create --account "$ACC")
KEY2=$("$SIPAUTHCTL" --store "$STORE" apikey create --account "$ACC")
UNKNOWN=tvx_sk_live_00000000000000000000000000000000
API_PORT=$(free_port 127.0.0.1)
start_sipauthd "" "[api]
listen = 127.0.0.1:$API_PORT
rate_limit = 1
rate_burst = 5" || { fail "sipauthd did not start"; finish; }
BASE="http://127.0.0.1:$API_PORT"
URL="$BASE/v1/account/$ACC/trunks/$TRUNK/credentials"
metric() { curl -s "$BASE/metrics" | sed -n "s/^$1 //p"; }

# burst KEY N: N requests on one connection (one curl: well within a second); the statuses, counted
burst() {
	_h="Authorization: Bearer $1"
	[ -n "$1" ] || _h="X-No-Key: 1"
	_urls=""
	for _ in $(seq 1 "$2"); do _urls="$_urls -o /dev/null ${3:-$URL}"; done
	# shellcheck disable=SC2086
	curl -s -w '%{http_code}\n' -H "$_h" $_urls | sort | uniq -c | awk '{printf "%s%s:%s", s, $2, $1; s=" "}'
}

assert_eq "a burst of 12 with rate 1/s, burst 5: exactly 5 answered, 7 refused" "200:5 429:7" "$(burst "$KEY" 12)"
st=$(curl -s -o "$T/body" -D "$T/hdr" -w '%{http_code}' -H "Authorization: Bearer $KEY" "$URL")
api_record GET "$URL" "$st" "$T/body" "$T/hdr"
assert_eq "the next one is 429" 429 "$st"
assert_eq "429 has Retry-After: 1" 1 "$(sed -n 's/^Retry-After: \(.*\)\r$/\1/Ip' "$T/hdr")"
assert_eq "429 is the API's error shape with code rate_limited" "rate_limited ['code', 'message']" \
	"$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert list(d) == ["error"]; print(d["error"]["code"], sorted(d["error"]))' "$T/body")"
assert_match "the message says the limit" "at most 1 a second, bursts of 5" "$(cat "$T/body")"
sleep 1.1
assert_eq "1.1 s later one more is allowed, no more" "200:1 429:1" "$(burst "$KEY" 2)"
assert_eq "another key has its own bucket" "200:5 429:7" "$(burst "$KEY2" 12)"
assert_eq "an unknown key is limited too: 5 401s, then 429s" "401:5 429:7" "$(burst "$UNKNOWN" 12)"
assert_eq "no key at all is not counted: 12 401s" "401:12" "$(burst "" 12)"
assert_eq "/metrics counts the 429s" 23 "$(metric sipauthd_api_rate_limited_total)"
assert_eq "/metrics: 429 among the answers by status" 23 "$(metric 'sipauthd_api_requests_total{status="429"}')"
assert_eq "/metrics: three keys have buckets" 3 "$(metric sipauthd_api_rate_limit_keys)"
assert_eq "the dashboard and /healthz are never limited" "200:3 200:3" \
	"$(burst "$KEY" 3 "$BASE/healthz") $(burst "$KEY" 3 "$BASE/dashboard")"

# SIGHUP applies a new rate at once
sed -i 's/^rate_limit = 1$/rate_limit = 1000/; s/^rate_burst = 5$/rate_burst = 20/' "$T/sipauthd.conf"
kill -HUP "$SIPAUTHD_PID"
wait_for grep -q "event=reloaded" "$T/sipauthd.log" || fail "no reload"
assert_eq "after SIGHUP (1000/s, bursts of 20) a burst of 12 is answered" "200:12" "$(burst "$KEY2" 12)"
assert_nomatch "no reload_needs_restart for the rate keys" "reload_needs_restart key=\"\[api\] rate" "$(cat "$T/sipauthd.log")"
assert_eq "the rate-limited requests are logged" yes \
	"$(grep -q 'event=api_error .*status=429 code=rate_limited' "$T/sipauthd.log" && echo yes || echo no)"
assert_eq "no key appears in the log" 0 "$(grep -c -e "$KEY" -e "$KEY2" -e "$UNKNOWN" "$T/sipauthd.log")"
openapi_check
finish
