#!/bin/sh
# api_https.sh: [api] listen = https:ADDRESS:PORT on the real daemon: the API, /healthz and /metrics
# answer over TLS checked with curl --cacert, next to a plain listener; TLS 1.1 and plain HTTP on the
# HTTPS port are refused; SIGHUP loads a new certificate for new connections (and keeps the old one
# when the new files, or any other TLS file of the reload, do not load); an https: address without certificate and key is a config error.
. "$top_srcdir/test/lib.sh"
. "$top_srcdir/test/tls_lib.sh"
need curl
setup_store || { fail "store setup"; finish; }
KEY=$("$SIPAUTHCTL" --store "$STORE" apikey create --account "$ACC")
make_cert api1 sipauthd-api-one || { fail "make_cert"; finish; }
make_cert api2 sipauthd-api-two || { fail "make_cert"; finish; }
cp "$T/api1.pem" "$T/api.pem"; cp "$T/api1.key" "$T/api.key"
HTTPS_PORT=$(free_port 127.0.0.1)
HTTP_PORT=$(free_port 127.0.0.1)
start_sipauthd "" "[api]
listen = https:127.0.0.1:$HTTPS_PORT, 127.0.0.1:$HTTP_PORT
certificate = $T/api.pem
private_key = $T/api.key" || { fail "sipauthd did not start"; finish; }
S="https://127.0.0.1:$HTTPS_PORT"
H="Authorization: Bearer $KEY"

assert_eq "the log names the https listener" 1 \
	"$(grep -c "event=http_listening addr=127.0.0.1 port=$HTTPS_PORT scheme=https serves=api" "$T/sipauthd.log")"
st=$(curl -s --cacert "$T/api1.pem" -o "$T/body" -D "$T/hdr" -w '%{http_code} %{ssl_verify_result}' -H "$H" "$S/v1/account/$ACC/trunks")
api_record GET "$S/v1/account/$ACC/trunks" "${st% *}" "$T/body" "$T/hdr"
assert_eq "GET trunks over HTTPS, the certificate verified" "200 0" "$st"
assert_eq "the answer is the trunk list" "$TRUNK" \
	"$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["data"][0]["id"])' "$T/body")"
st=$(curl -s --cacert "$T/api1.pem" -o "$T/body" -D "$T/hdr" -w '%{http_code}' -H "$H" -H 'Content-Type: application/json' \
	-d '{"username":"pbx-tls-01","password":"secure_password_here_123"}' "$S/v1/account/$ACC/trunks/$TRUNK/credentials")
api_record POST "$S/v1/account/$ACC/trunks/$TRUNK/credentials" "$st" "$T/body" "$T/hdr"
assert_eq "POST a credential over HTTPS" 201 "$st"
assert_eq "/healthz over HTTPS" '{"status":"ok"}' "$(curl -s --cacert "$T/api1.pem" "$S/healthz")"
assert_match "/metrics over HTTPS" '^sipauthd_api_requests_total\{status="201"\} 1$' \
	"$(curl -s --cacert "$T/api1.pem" "$S/metrics" | grep '^sipauthd_api_requests_total{status="201"}')"
assert_eq "the plain listener still answers" 200 \
	"$(curl -s -o /dev/null -w '%{http_code}' -H "$H" "http://127.0.0.1:$HTTP_PORT/v1/account/$ACC/trunks")"
assert_eq "TLS 1.2 is accepted" 200 \
	"$(curl -s --cacert "$T/api1.pem" --tlsv1.2 --tls-max 1.2 -o /dev/null -w '%{http_code}' "$S/healthz")"
assert_eq "TLS 1.3 is accepted" 200 \
	"$(curl -s --cacert "$T/api1.pem" --tlsv1.3 -o /dev/null -w '%{http_code}' "$S/healthz")"
# curl here does offer TLS 1.1 (it negotiates it with servers that allow it): the refusal is the server's
curl -sv --cacert "$T/api1.pem" --tlsv1.1 --tls-max 1.1 --ciphers 'DEFAULT@SECLEVEL=0' -o /dev/null "$S/healthz" \
	2> "$T/tls11.err"; rc=$?
assert_eq "TLS 1.1 is refused: curl fails (35)" 35 "$rc"
assert_match "TLS 1.1 is refused by the server: a protocol version alert" "alert protocol version" "$(cat "$T/tls11.err")"
st=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HTTPS_PORT/healthz")
assert_eq "plain HTTP on the HTTPS port gets no answer" 000 "$st"
curl -s --cacert "$T/api2.pem" -o /dev/null "$S/healthz"; rc=$?
assert_eq "a client that trusts another certificate refuses it (curl 60)" 60 "$rc"
assert_eq "the daemon is still serving" 200 \
	"$(curl -s --cacert "$T/api1.pem" -o /dev/null -w '%{http_code}' "$S/healthz")"

# SIGHUP: new files are taken for new connections
cp "$T/api2.pem" "$T/api.pem"; cp "$T/api2.key" "$T/api.key"
kill -HUP "$SIPAUTHD_PID"
wait_for grep -q "event=reloaded" "$T/sipauthd.log" || fail "no reload"
assert_eq "after SIGHUP the new certificate is served" "200 sipauthd-api-two" \
	"$(curl -s --cacert "$T/api2.pem" -o /dev/null -w '%{http_code} ' "$S/healthz")$(echo | openssl s_client -connect "127.0.0.1:$HTTPS_PORT" 2>/dev/null | openssl x509 -noout -subject -nameopt multiline 2>/dev/null | sed -n 's/^ *commonName *= *//p')"
# a key that does not load: the reload is refused and the certificate stays
echo "not a key" > "$T/api.key"
kill -HUP "$SIPAUTHD_PID"
wait_for grep -q "reload_refused error=\"\[api\] certificate or private_key did not load" "$T/sipauthd.log" ||
	fail "the broken key was not refused"
assert_eq "a broken key on SIGHUP: the old certificate stays" 200 \
	"$(curl -s --cacert "$T/api2.pem" -o /dev/null -w '%{http_code}' "$S/healthz")"
assert_eq "no key appears in the log" 0 "$(grep -c "$KEY" "$T/sipauthd.log")"
# a reload takes every TLS file or none: a new [api] certificate that loads beside an [upstream]
# tls_ca that does not is refused as a whole, the API keeps the certificate it had
cp "$T/api1.pem" "$T/api.pem"; cp "$T/api1.key" "$T/api.key"
echo "not a CA" >"$T/broken-ca.pem"
printf '[upstream]\ntls_ca = %s\n' "$T/broken-ca.pem" >>"$T/sipauthd.conf"
kill -HUP "$SIPAUTHD_PID"
wait_for grep -q 'reload_refused error="\[tls\] (or \[upstream\] tls_ca) files did not load; every old one stays"' \
	"$T/sipauthd.log" || fail "the broken tls_ca was not refused"
assert_eq "a reload refused for the SIP side keeps the API's certificate too" "200 sipauthd-api-two" \
	"$(curl -s --cacert "$T/api2.pem" -o /dev/null -w '%{http_code} ' "$S/healthz")$(echo | openssl s_client -connect "127.0.0.1:$HTTPS_PORT" 2>/dev/null | openssl x509 -noout -subject -nameopt multiline 2>/dev/null | sed -n 's/^ *commonName *= *//p')"

# an https: address without certificate and key is refused at start
cat > "$T/bad.conf" <<CONF
[sip]
listen = udp:127.0.0.1:$(free_port 127.0.0.1)
[upstream]
gateway = udp:127.0.0.2:5060
[store]
path = $STORE
[api]
listen = https:127.0.0.1:$(free_port 127.0.0.1)
CONF
out=$("$SIPAUTHD" --check-config "$T/bad.conf" 2>&1); rc=$?
assert_eq "--check-config refuses https: without certificate" \
	"1 sipauthd: $T/bad.conf: [api] has an https: address: [api] certificate and private_key are required" "$rc $out"
openapi_check
finish
