#!/bin/sh
# api_paging.sh: every list of the real daemon pages with limit and starting_after: 2 500 credentials
# created over the API and read back with curl, 1000 and the default 100 at a time, each exactly once
# and in creation order; registrations made over SIP and auth failures caused over SIP page by their
# ids; bad paging parameters are 400 invalid_parameter naming the parameter.
. "$top_srcdir/test/lib.sh"
need curl
setup_store || { fail "store setup"; finish; }
KEY=$("$SIPAUTHCTL" --store "$STORE" apikey create --account "$ACC")
TRUNK2=$("$SIPAUTHCTL" --store "$STORE" trunk create --account "$ACC" --name second)
API_PORT=$(free_port 127.0.0.1)
# the 2 500 creations go as fast as they can: no rate limit here (api_ratelimit.sh tests it)
start_sipauthd "" "[api]
listen = 127.0.0.1:$API_PORT
rate_limit = 0" || { fail "sipauthd did not start"; finish; }
H="Authorization: Bearer $KEY"
B="http://127.0.0.1:$API_PORT/v1/account/$ACC"
N=2500

# create N credentials over the API (one keep-alive connection; each write is durable)
python3 - "$API_PORT" "$B/trunks/$TRUNK/credentials" "$KEY" "$N" "$T/api-answers.jsonl" > "$T/create.out" <<'PY'
import http.client, json, sys
port, url, key, n = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
record = open(sys.argv[5], "a")   # every answer, for the OpenAPI check
path = url[url.index("/v1/"):]
c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
codes = {}
for i in range(n):
    body = json.dumps({"username": "pbx-%05d" % i, "password": "secure_password_here_123"})
    c.request("POST", path, body, {"Authorization": "Bearer " + key, "Content-Type": "application/json"})
    r = c.getresponse(); text = r.read().decode()
    record.write(json.dumps({"method": "POST", "path": path, "status": r.status, "body": text,
                             "content_type": r.getheader("Content-Type", "")}) + "\n")
    codes[r.status] = codes.get(r.status, 0) + 1
print(json.dumps(codes, sort_keys=True))
PY
assert_eq "$N credentials created over the API" "{\"201\": $N}" "$(cat "$T/create.out")"

# walk LIST LIMIT: every page with curl into $T/walk (ids, one a line); page sizes and has_more in $T/pages
walk() {
	: > "$T/walk"; : > "$T/pages"
	_after=""
	while :; do
		_q="limit=$2"
		[ -n "$_after" ] && _q="$_q&starting_after=$_after"
		_st=$(curl -s -o "$T/page" -D "$T/hdr" -w '%{http_code}' -H "$H" "$1?$_q")
		api_record GET "$1?$_q" "$_st" "$T/page" "$T/hdr"
		[ "$_st" = 200 ] || { echo "status $_st" >> "$T/pages"; break; }
		python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))
print("\n".join(x["id"] for x in d["data"]))' "$T/page" | sed '/^$/d' >> "$T/walk"
		_more=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(len(d["data"]), d["has_more"])' "$T/page")
		echo "$_more" >> "$T/pages"
		case $_more in *True) ;; *) break ;; esac
		_after=$(tail -n 1 "$T/walk")
		[ "$(wc -l < "$T/pages")" -lt 100 ] || break
	done
}

"$SIPAUTHCTL" --store "$STORE" credential list --trunk "$TRUNK" |
	python3 -c 'import json,sys; print("\n".join(c["id"] for c in json.load(sys.stdin)["data"]))' > "$T/all"
assert_eq "the store holds N+1 credentials" "$((N + 1))" "$(wc -l < "$T/all")"
walk "$B/trunks/$TRUNK/credentials" 1000
assert_eq "limit=1000: pages of 1000, 1000, 501; has_more until the last" \
	"1000 True,1000 True,501 False" "$(paste -sd, "$T/pages")"
assert_eq "limit=1000: every credential once, in creation order" "$(cat "$T/all")" "$(cat "$T/walk")"
walk "$B/trunks/$TRUNK/credentials" 100
assert_eq "limit=100: 26 pages, the last of 1" "26 1 False" "$(wc -l < "$T/pages" | tr -d ' ') $(tail -n 1 "$T/pages")"
assert_eq "limit=100: every credential once, in creation order" "$(cat "$T/all")" "$(cat "$T/walk")"
st=$(curl -s -o "$T/page" -w '%{http_code}' -H "$H" "$B/trunks/$TRUNK/credentials")
assert_eq "no parameters: the first 100 and has_more" "200 100 True" \
	"$st $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(len(d["data"]), d["has_more"])' "$T/page")"
walk "$B/trunks" 1
assert_eq "trunks page one at a time" "$TRUNK $TRUNK2" "$(paste -sd' ' "$T/walk")"
assert_eq "trunks: has_more until the last" "1 True,1 False" "$(paste -sd, "$T/pages")"

# registrations: three PBXs register over SIP, then page one at a time
for u in pbx-00001 pbx-00002 pbx-00003; do
	sipc register --host "$TRUNK_HOST" --user "$u" --password secure_password_here_123 --expires 300 > "$T/reg.out"
	assert_eq "$u registers" 200 "$(json_get 'final.get("final_status")' < "$T/reg.out")"
done
curl -s -H "$H" "$B/trunks/$TRUNK/registrations" |
	python3 -c 'import json,sys; print("\n".join(r["id"] for r in json.load(sys.stdin)["data"]))' > "$T/regs"
assert_eq "three registrations, each with a reg_ id" "3" "$(grep -c '^reg_' "$T/regs")"
walk "$B/trunks/$TRUNK/registrations" 2
assert_eq "registrations page by id: 2 then 1" "2 True,1 False" "$(paste -sd, "$T/pages")"
assert_eq "registrations: the same ones, once each" "$(cat "$T/regs")" "$(cat "$T/walk")"

# auth failures: three wrong passwords over SIP, newest first, one at a time
for i in 1 2 3; do
	sipc register --host "$TRUNK_HOST" --user "pbx-0000$i" --password secure_password_here_123 \
		--wrong-password wrong_password_999x > /dev/null
done
wait_for sh -c "curl -s -H '$H' '$B/trunks/$TRUNK/auth-failures' | grep -c '\"id\": \"fail_' | grep -qx 3"
walk "$B/trunks/$TRUNK/auth-failures" 1
assert_eq "auth-failures page one at a time" "1 True,1 True,1 False" "$(paste -sd, "$T/pages")"
assert_eq "auth-failures newest first by id" "$(sort -r "$T/walk")" "$(cat "$T/walk")"
st=$(curl -s -o "$T/page" -w '%{http_code}' -H "$H" "$B/trunks/$TRUNK/auth-failures?since=0&starting_after=$(head -n 1 "$T/walk")&limit=5")
assert_eq "since with starting_after: the two older" "200 2" "$st $(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["data"]))' "$T/page")"

# calls: none here, but the shape pages too
st=$(curl -s -o "$T/page" -w '%{http_code}' -H "$H" "$B/trunks/$TRUNK/calls?limit=5")
assert_eq "calls: data, has_more and usage" "200 ['data', 'has_more', 'usage'] False" \
	"$st $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(sorted(d), d["has_more"])' "$T/page")"

# bad values: 400 invalid_parameter naming the parameter, on every list
for list in trunks "trunks/$TRUNK/credentials" "trunks/$TRUNK/registrations" "trunks/$TRUNK/auth-failures" "trunks/$TRUNK/calls"; do
	for q in "limit=0|limit" "limit=1001|limit" "limit=x|limit" "starting_after=|starting_after" \
	         "starting_after=nosuch_id|starting_after"; do
		st=$(curl -s -o "$T/page" -D "$T/hdr" -w '%{http_code}' -H "$H" "$B/$list?${q%|*}")
		api_record GET "$B/$list?${q%|*}" "$st" "$T/page" "$T/hdr"
		case $list in */calls) [ "${q%|*}" = starting_after=nosuch_id ] && continue ;; esac
		assert_eq "$list?${q%|*}: 400 invalid_parameter naming ${q#*|}" "400 invalid_parameter ${q#*|}" \
			"$st $(python3 -c 'import json,sys; e=json.load(open(sys.argv[1]))["error"]; print(e["code"], e["message"].split()[0].rstrip(":"))' "$T/page")"
	done
done
openapi_check
finish
