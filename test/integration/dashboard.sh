#!/bin/sh
# dashboard.sh: /dashboard in a real browser (Debian's chromium, headless): after auth failures caused
# over SIP, the page shows the usernames tried, the source address and the counts, the credentials and
# registrations, shows attacker text as text, fetches nothing from outside, and refreshes itself.
. "$top_srcdir/test/lib.sh"
need curl
CHROMIUM=$(command -v chromium || command -v chromium-browser || true)
[ -n "$CHROMIUM" ] || skip "chromium is not installed (scripts/setup installs it; Debian package chromium)"
setup_store || { fail "store setup"; finish; }
KEY=$("$SIPAUTHCTL" --store "$STORE" apikey create --account "$ACC")
API_PORT=$(free_port 127.0.0.1)
start_sipauthd "" "[api]
listen = 127.0.0.1:$API_PORT" || { fail "sipauthd did not start"; finish; }
BASE="http://127.0.0.1:$API_PORT"
XSS='<img src=x onerror=document.title=1>'

# browse URL BUDGET_MS: the DOM after the page ran for BUDGET_MS of virtual time, in $T/dom.html
browse() {
	timeout 90 "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage \
		--disable-background-networking --disable-component-update --disable-sync --no-first-run \
		--disable-default-apps --disable-extensions --user-data-dir="$(mktemp -d "$T/chrome.XXXXXX")" \
		--virtual-time-budget="$2" --dump-dom "$1" > "$T/dom.html" 2> "$T/chrome.err"
}
dom() { cat "$T/dom.html"; }
api_200s() { curl -s "$BASE/metrics" | sed -n 's/^sipauthd_api_requests_total{status="200"} //p'; }

# --- the page itself
curl -s -D "$T/page.hdr" -o "$T/page.html" "$BASE/dashboard"
assert_match "GET /dashboard is an HTML page" "^HTTP/1.1 200.*Content-Type: text/html" "$(tr -d '\r' < "$T/page.hdr" | tr '\n' ' ')"
assert_match "the page may run only its own script and talk only to its origin" \
	"Content-Security-Policy: default-src 'none'; script-src 'sha256-[A-Za-z0-9+/=]+'.*connect-src 'self'" "$(cat "$T/page.hdr")"
assert_nomatch "the page loads nothing from elsewhere" '(src|href|action)=["'"'"']?(https?:)?//' "$(cat "$T/page.html")"
assert_nomatch "the page names no external URL but the SVG namespace" 'https?://[^w]|https?://w[^w]' "$(cat "$T/page.html")"

# --- failures over SIP: three wrong passwords, two unknown users, one tried username that is markup
for i in 1 2 3; do
	sipc register --host "$TRUNK_HOST" --user "$SIP_USER" --password "$SIP_PASS" --wrong-password wrong_password_999x >/dev/null
done
for i in 1 2; do sipc register --host "$TRUNK_HOST" --user intruder-9 --password wrong_password_999x >/dev/null; done
sipc register --host "$TRUNK_HOST" --user x --auth-user "$XSS" --password wrong_password_999x >/dev/null
sipc register --host "$TRUNK_HOST" --user "$SIP_USER" --password "$SIP_PASS" --expires 600 > "$T/reg.out"
assert_eq "the PBX registers" 200 "$(json_get 'final.get("final_status")' < "$T/reg.out")"

# --- the page after signing in through the URL fragment
before=$(api_200s)
browse "$BASE/dashboard#key=$KEY&account=$ACC" 12000
assert_eq "chromium rendered the page" 0 $?
after=$(api_200s)
d=$(dom)
assert_match "a section for the trunk" "<section class=\"trunk\" id=\"trunk-$TRUNK\" data-failures=\"6\">" "$d"
assert_match "top usernames: the one tried three times, with its count" \
	"<table class=\"top-users\">.*<td class=\"key\">$SIP_USER</td><td class=\"count\">3</td>" "$d"
assert_match "top usernames: the unknown user, with its count" \
	"<td class=\"key\">intruder-9</td><td class=\"count\">2</td>" "$d"
assert_match "top sources: the address the failures came from, with the count" \
	"<table class=\"top-sources\">.*<td class=\"key\">127.0.0.1</td><td class=\"count\">6</td>" "$d"
assert_match "the chart counts the failures of the last hour" 'class="failure-chart" data-total="6"' "$d"
assert_match "the chart draws bars" '<rect [^>]*fill="#c4321f"' "$d"
assert_match "latest failures list the reason" '<td class="username">intruder-9</td><td class="reason">unknown_user</td>' "$d"
assert_match "the credentials are listed" "<tr data-id=\"$CRED\"><td class=\"username\">$SIP_USER</td>" "$d"
assert_match "the registration is listed" "<table class=\"registrations\">.*<td class=\"username\">$SIP_USER</td><td class=\"contact\">sip:$SIP_USER@127.0.0.1:" "$d"
assert_match "active calls are shown (n/a until the API has calls)" '<div class="big calls-active">(n/a|[0-9]+)</div>' "$d"
assert_match "a username tried that is markup is shown as text" '<td class="key">&lt;img src=x onerror=document.title=1&gt;</td>' "$d"
assert_nomatch "and never becomes an element" '<img' "$d"
assert_match "the page title is untouched" '<title>sipauthd dashboard</title>' "$d"
assert_nomatch "the API key is not in the page" "$KEY" "$d"
assert_match "the page says when it last refreshed" '<span id="status" class="status">updated ' "$d"
# one refresh is 5 answers of 200 or more: trunks, credentials, registrations, auth-failures, (calls)
assert_match "the page refreshed itself (12 s at one refresh per 5 s: at least 2 rounds)" '^([89]|[1-9][0-9]+)$' \
	"$((after - before))"

# --- a wrong key: the page says so and asks again
browse "$BASE/dashboard#key=tvx_sk_live_00000000000000000000000000000000&account=$ACC" 3000
d=$(dom)
assert_match "a refused key is reported" '<span id="status" class="status error">The API key was refused.</span>' "$d"
assert_match "and the sign-in form is shown" '<form id="login">' "$d"

# --- no key at all: the sign-in form
browse "$BASE/dashboard" 2000
assert_match "without a key the page asks for one" '<form id="login">' "$(dom)"
assert_nomatch "and shows no trunk" '<section class="trunk"' "$(dom)"
finish
