#!/bin/sh
# openapi.sh: GET /v1/openapi.json serves daemon/openapi.json, an OpenAPI 3.1 document, without an API
# key; it documents exactly the methods each /v1 path answers (each path's 405 Allow header lists the
# document's methods); and an answer of every documented operation, errors included, validates
# against the document's schemas (test/openapi_check.py, python3-jsonschema).
. "$top_srcdir/test/lib.sh"
need curl
setup_store || { fail "store setup"; finish; }
KEY=$("$SIPAUTHCTL" --store "$STORE" apikey create --account "$ACC")
API_PORT=$(free_port 127.0.0.1)
start_sipauthd "" "[api]
listen = 127.0.0.1:$API_PORT" || { fail "sipauthd did not start"; finish; }
BASE="http://127.0.0.1:$API_PORT"
DOC="$top_srcdir/daemon/openapi.json"

# r METHOD PATH [BODY] [KEY]: one request, kept for the check at the end; status in $st
r() {
	_k=${4-$KEY}
	st=$(curl -s -o "$T/body" -D "$T/hdr" -w '%{http_code}' -X "$1" ${_k:+-H "Authorization: Bearer $_k"} \
		${3:+-H 'Content-Type: application/json' --data-binary "$3"} "$BASE$2")
	api_record "$1" "$2" "$st" "$T/body" "$T/hdr"
}

r GET /v1/openapi.json "" ""
assert_eq "GET /v1/openapi.json without a key is 200 JSON" "200 application/json" \
	"$st $(sed -n 's/^Content-Type: \(.*\)\r$/\1/Ip' "$T/hdr")"
assert_eq "it is daemon/openapi.json, byte for byte" "$(cat "$DOC")" "$(cat "$T/body")"
assert_eq "it is OpenAPI 3.1" 3.1.0 "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["openapi"])' "$T/body")"
r GET /v1/openapi.json "" "tvx_sk_live_00000000000000000000000000000000"
assert_eq "a wrong key does not matter for the document" 200 "$st"
r POST /v1/openapi.json "{}" ""
assert_eq "POST /v1/openapi.json is 405" 405 "$st"

# every /v1 path: the methods the daemon allows are the document's
python3 - "$DOC" "$ACC" "$TRUNK" "$CRED" > "$T/paths" <<'PY'
import json, sys
doc, acc, trunk, cred = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3], sys.argv[4]
for tmpl, item in doc["paths"].items():
    if not tmpl.startswith("/v1/account/"):
        continue
    path = tmpl.replace("{account_id}", acc).replace("{trunk_id}", trunk).replace("{credential_id}", cred) \
        .replace("{webhook_id}", "wh_none")   # the method is checked before the webhook
    print(path, ", ".join(sorted(m.upper() for m in item if m in ("get", "post", "patch", "delete", "put"))))
PY
assert_eq "the document has the 11 /v1/account paths" 11 "$(wc -l < "$T/paths")"
while read -r path methods; do
	r PUT "$path"
	assert_eq "PUT $path: 405, Allow lists the document's methods" "405 $methods" \
		"$st $(sed -n 's/^Allow: \(.*\)\r$/\1/Ip' "$T/hdr" | tr -d ' ' | tr ',' '\n' | sort | paste -sd, | sed 's/,/, /g')"
done < "$T/paths"

# an answer of every operation and of the errors, all kept for the check
A="/v1/account/$ACC/trunks"
r GET "$A"; r GET "$A/$TRUNK"
r PATCH "$A/$TRUNK" '{"max_concurrent_calls": 5, "max_calls_per_second": 1.5, "digest_algorithms": ["MD5"]}'
assert_eq "PATCH is 200" 200 "$st"
r PATCH "$A/$TRUNK" '{"max_concurrent_calls": "x"}'
assert_eq "a bad PATCH is 422 with field" "422 max_concurrent_calls" \
	"$st $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["error"]["field"])' "$T/body")"
r POST "$A/$TRUNK/credentials" '{"username":"pbx-doc-01","password":"secure_password_here_123"}'
NEW=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$T/body")
r POST "$A/$TRUNK/credentials" '{"username":"PBX-doc-01","password":"secure_password_here_123"}'
assert_eq "duplicate is 409" 409 "$st"
r POST "$A/$TRUNK/credentials" '{"username":"pbx-doc-02","password":"short"}'; r POST "$A/$TRUNK/credentials" '{"username":1}'
r POST "$A/$TRUNK/credentials" 'not json'; r POST "$A/$TRUNK/credentials" '{"username":"x"}'
r GET "$A/$TRUNK/credentials"; r GET "$A/$TRUNK/credentials/$NEW"; r GET "$A/$TRUNK/credentials?limit=1"
r GET "$A/$TRUNK/credentials?limit=0"; r GET "$A/$TRUNK/credentials?starting_after=cred_gone"
r POST "$A/$TRUNK/credentials/$NEW/rotate" '{"password":"rotated_password_456","overlap_seconds":60}'
assert_eq "rotate is 200" 200 "$st"
r POST "$A/$TRUNK/credentials/$NEW/rotate" '{"password":"rotated_password_789","overlap_seconds":-1}'
r POST "$A/$TRUNK/credentials/$NEW/rotate" '{"overlap_seconds":60}'; r POST "$A/$TRUNK/credentials/cred_gone/rotate" '{}'
r GET "$A/$TRUNK/credentials/$NEW"
sipc register --host "$TRUNK_HOST" --user "$SIP_USER" --password "$SIP_PASS" --expires 300 > /dev/null
sipc register --host "$TRUNK_HOST" --user "$SIP_USER" --password "$SIP_PASS" --wrong-password wrong_password_999x > /dev/null
r GET "$A/$TRUNK/registrations"
assert_eq "registrations has one" 1 "$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["data"]))' "$T/body")"
wait_for sh -c "curl -s -H 'Authorization: Bearer $KEY' '$BASE$A/$TRUNK/auth-failures' | grep -q bad_password"
r GET "$A/$TRUNK/auth-failures"; r GET "$A/$TRUNK/auth-failures?since=yesterday"
r GET "$A/$TRUNK/calls"; r DELETE "$A/$TRUNK/credentials/$NEW"; r DELETE "$A/$TRUNK/credentials/$NEW"
r GET "$A/trunk_nosuchtrunk"; r GET "$A" "" ""; r GET "$A" "" "tvx_sk_live_00000000000000000000000000000000"
r GET "/v1/account/acc_other/trunks"; r GET /healthz "" ""; r GET /metrics "" ""; r GET /dashboard "" ""
r POST /healthz "{}" ""
r GET "/v1/openapi.json?x=1" "" ""
assert_eq "the document takes no query parameters: 400" 400 "$st"
r GET "$A/$TRUNK/credentials?lmit=5"
assert_eq "an unknown parameter is 400, named first in the message" \
	"400 lmit: unknown query parameter (a list takes limit and starting_after)" \
	"$st $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["error"]["message"])' "$T/body")"
# HEAD is GET without the body, on the API's resources as on the pages
curl -s -I -o "$T/head.h" -H "Authorization: Bearer $KEY" "$BASE$A/$TRUNK/credentials"
curl -s -o /dev/null -D "$T/get.h" -H "Authorization: Bearer $KEY" "$BASE$A/$TRUNK/credentials"
assert_eq "HEAD of a list: 200, the GET's Content-Type and Content-Length" \
	"$(grep -i '^HTTP/\|^Content-Type:\|^Content-Length:' "$T/get.h")" \
	"$(grep -i '^HTTP/\|^Content-Type:\|^Content-Length:' "$T/head.h")"
assert_match "... which is 200" '^HTTP/1.1 200' "$(cat "$T/head.h")"
head -c 20000 /dev/zero | tr '\0' a > "$T/big"
st=$(curl -s -o "$T/body" -D "$T/hdr" -w '%{http_code}' -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
	--data-binary @"$T/big" "$BASE$A/$TRUNK/credentials")
api_record POST "$A/$TRUNK/credentials" "$st" "$T/body" "$T/hdr"
assert_eq "a body over max_body is 413" 413 "$st"
assert_eq "every status above was seen" "200 201 204 400 401 404 405 409 413 422" \
	"$(python3 -c 'import json,sys; print(" ".join(sorted({str(json.loads(l)["status"]) for l in open(sys.argv[1])})))' "$T/api-answers.jsonl")"
openapi_check
finish
