#!/bin/sh
# lifecycle.sh: a second daemon on the same store or ports is refused; SIGTERM drains transactions
# in flight and exits 0; calls survive a clean restart; SIGHUP applies a changed configuration and
# refuses a broken one, keeping the old.
. "$top_srcdir/test/lib.sh"
need sipp
setup_store || { fail "store setup"; finish; }
start_sipauthd "MD5" "[log]
level = info" || { fail "sipauthd did not start"; finish; }
PBX="-au $SIP_USER -ap $SIP_PASS -key trunk_host $TRUNK_HOST"
bg_sipp() {
	name=$1; shift
	spawn "$T/$name.out" timeout 30 sipp "$@" -m 1 -nostdin -trace_err -error_file "$T/$name.err" \
		-trace_msg -message_file "$T/$name.msg"
}
options_status() {
	sipc options --host "$TRUNK_HOST" --timeout 1 | json_get 'final.get("final_status")'
}

# --- one daemon per store, and per port: a second one is refused before it touches anything
REAL=${SA_TEST_SIPAUTHD:-$SIPAUTHD}
timeout 10 "$REAL" --workers 2 --config "$T/sipauthd.conf" >"$T/second.log" 2>&1
assert_eq "a second sipauthd on the same store exits with 1" 1 $?
assert_match "... saying the store is in use" \
	'event=store_in_use path=[^ ]* error="another sipauthd runs on this store"' "$(cat "$T/second.log")"
assert_eq "... before it opens the store (no layout moves, purges or index of its own)" "" \
	"$(grep -o 'event=store_opened\|event=credential_index\|event=bindings_purge[a-z_]*' "$T/second.log")"
# a store path that was never initialised (a typo, or a start before init): refused with the
# command that makes one, and nothing created there (opening it would reserve two 1 GiB maps)
sed "s|^path = .*|path = $T/typo/store|" "$T/sipauthd.conf" >"$T/typo.conf"
timeout 10 "$REAL" --config "$T/typo.conf" >"$T/typo.log" 2>&1
assert_eq "a sipauthd on a store never initialised exits with 1" 1 $?
assert_match "... saying so, with the command to run" \
	"event=store_failed path=$T/typo/store cause=not_initialised error=\"store not initialised\" hint=\"run sipauthctl --store $T/typo/store init" \
	"$(cat "$T/typo.log")"
assert_eq "... and creates nothing there" "no" "$( [ -e "$T/typo" ] && echo yes || echo no)"
# a broken configuration at start is an error line: under systemd (stderr to the journal) at
# priority 3, so that journalctl -p err shows why the service did not start
printf '[sip]\nbogus_key = 1\n' >"$T/broken.conf"
: >"$T/journal.log"
JOURNAL_STREAM=$(stat -c '%d:%i' "$T/journal.log") timeout 10 "$REAL" --config "$T/broken.conf" 2>>"$T/journal.log"
assert_eq "a start with a broken configuration exits 1, with one error line naming file, line and key" \
	"1 <3>level=error event=config_invalid config=$T/broken.conf error=\"$T/broken.conf:2: unknown key 'bogus_key' in section [sip]\"" \
	"$? $(cat "$T/journal.log")"
# a listen entry given twice would bind its own port twice
printf '[sip]\nlisten = udp:127.0.0.1:5060, tcp:127.0.0.1:5060, udp:127.0.0.1:5060\n[upstream]\ngateway = udp:127.0.0.2:5060\n' >"$T/dup.conf"
out=$("$REAL" --check-config "$T/dup.conf" 2>&1); rc=$?
assert_eq "--check-config refuses a listen entry given twice" \
	"1 sipauthd: $T/dup.conf:2: listen entry 'udp:127.0.0.1:5060' given twice" "$rc $out"
# a tcp and a tls listener on one port: with several workers both would bind (SO_REUSEPORT) and
# the kernel would deal TLS handshakes to the TCP listener; the wildcard address takes them all
printf '[sip]\nlisten = udp:127.0.0.1:5070, tcp:127.0.0.1:5070, tls:0.0.0.0:5070\n[upstream]\ngateway = udp:127.0.0.2:5060\n' >"$T/dup2.conf"
out=$("$REAL" --check-config "$T/dup2.conf" 2>&1); rc=$?
assert_eq "--check-config refuses tcp and tls listeners on one port" \
	"1 sipauthd: $T/dup2.conf:2: listen entry 'tls:0.0.0.0:5070' takes the port of a tcp listener: tcp and tls need ports of their own" "$rc $out"
# --check-config loads what a start or reload would (systemctl reload runs it first): a TLS
# certificate that is not there, an admin token file that is not there
printf '[sip]\nlisten = tls:127.0.0.1:5061\n[upstream]\ngateway = udp:127.0.0.2:5060\n[tls]\ncertificate = %s\nprivate_key = %s\n' \
	"$T/none/cert.pem" "$T/none/key.pem" >"$T/nocert.conf"
out=$("$REAL" --check-config "$T/nocert.conf" 2>&1)
assert_eq "--check-config refuses a certificate that does not load (exit 1), naming it" \
	"1 1 sipauthd: $T/nocert.conf: a file it names does not load (above)" \
	"$? $(printf '%s\n' "$out" | grep -c "event=tls_config_failed what=certificate file=\"$T/none/cert.pem\"") $(printf '%s\n' "$out" | tail -1)"
printf '[sip]\nlisten = udp:127.0.0.1:5060\n[upstream]\ngateway = udp:127.0.0.2:5060\n[api]\nlisten = 127.0.0.1:8080\nadmin_token_file = %s\n' \
	"$T/none/token" >"$T/notoken.conf"
"$REAL" --check-config "$T/notoken.conf" >"$T/notoken.out" 2>&1
assert_eq "... and an admin token file that is not there" \
	"1 1" "$? $(grep -c "event=admin_token_unreadable path=$T/none/token" "$T/notoken.out")"
# what loads but an operator should hear of: a certificate that ends within two weeks or has
# ended (checked 3 days later with faketime), ciphers at security level 0, a token others can read
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -keyout "$T/short.key" \
	-out "$T/short.pem" -subj "/CN=short" >/dev/null 2>&1
printf 'an-operator-token-of-some-length\n' >"$T/token"
chmod 644 "$T/token"
printf '[sip]\nlisten = tls:127.0.0.1:5061\n[upstream]\ngateway = udp:127.0.0.2:5060\n[tls]\ncertificate = %s\nprivate_key = %s\nciphers = ECDHE+AESGCM:@SECLEVEL=0\n[api]\nlisten = 127.0.0.1:8080\nadmin_token_file = %s\n' \
	"$T/short.pem" "$T/short.key" "$T/token" >"$T/warn.conf"
"$REAL" --check-config "$T/warn.conf" >"$T/warn.out" 2>&1
assert_eq "--check-config passes a certificate ending within two days, and says so" \
	"0 1" "$? $(grep -cE "level=warning event=tls_certificate_expiring file=\"$T/short.pem\" days_left=[12]$" "$T/warn.out")"
assert_eq "... ciphers at security level 0 are said" 1 \
	"$(grep -c 'level=warning event=tls_weak_ciphers ciphers="ECDHE+AESGCM:@SECLEVEL=0"' "$T/warn.out")"
assert_eq "... and an admin token others can read" 1 \
	"$(grep -c "level=warning event=admin_token_readable path=$T/token mode=0644" "$T/warn.out")"
if command -v faketime >/dev/null 2>&1; then
	ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0" faketime -f +3d \
		"$REAL" --check-config "$T/warn.conf" >"$T/expired.out" 2>&1
	assert_eq "... three days later the certificate has ended: said, with the days" 1 \
		"$(grep -cE "level=warning event=tls_certificate_expired file=\"$T/short.pem\" days_ago=[01] hint=" "$T/expired.out")"
else
	echo "faketime is not installed: the expired certificate check is skipped"
fi
# another store, the same ports: the workers' SO_REUSEPORT must not let it take part of the traffic
"$SIPAUTHCTL" --store "$T/other" init --domain sip.tryvox.io >/dev/null
echo "calls of an earlier run" >"$T/other/calls.state"
sed "s|^path = .*|path = $T/other|" "$T/sipauthd.conf" >"$T/other.conf"
timeout 10 "$REAL" --workers 2 --config "$T/other.conf" >"$T/other.log" 2>&1
assert_eq "a second sipauthd on another store but the same ports exits with 1" 1 $?
assert_match "... naming the address in use" \
	"event=listen_failed listen=udp:127.0.0.1:$SIP_PORT error=\"Address already in use\"" "$(cat "$T/other.log")"
assert_eq "... and leaves that store's saved calls as they were" "calls of an earlier run" "$(cat "$T/other/calls.state")"
assert_eq "the first one still answers" 200 "$(options_status)"

# --- SIGHUP: a changed log level applies; a broken file is refused and the old one stays
sed -i 's/^level = info/level = debug/' "$T/sipauthd.conf"
kill -HUP "$SIPAUTHD_PID"
wait_for grep -q "event=reloaded" "$T/sipauthd.log"
assert_match "SIGHUP reloads the configuration" "event=reloaded" "$(cat "$T/sipauthd.log")"
sipc options --transport tcp --host "$TRUNK_HOST" >/dev/null
wait_for grep -q "level=debug" "$T/sipauthd.log"
assert_match "the new log level is in force" "level=debug" "$(cat "$T/sipauthd.log")"
cp "$T/sipauthd.conf" "$T/good.conf"
echo "bogus_key = 1" >> "$T/sipauthd.conf"
kill -HUP "$SIPAUTHD_PID"
wait_for grep -q "event=reload_refused" "$T/sipauthd.log"
assert_match "a broken configuration is refused with file and line" "event=reload_refused error=\".*sipauthd.conf:[0-9]+: unknown key 'bogus_key'" "$(cat "$T/sipauthd.log")"
assert_eq "the daemon goes on answering after a refused reload" 200 "$(options_status)"
cp "$T/good.conf" "$T/sipauthd.conf"

# --- SIGTERM during an established call: exit 0, the call is saved and restored
bg_sipp gw -sf "$SIPP_DIR/gateway_uas.xml" -i 127.0.0.2 -p "$GW_PORT"; gw=$!
sleep 0.3
bg_sipp call -sf "$SIPP_DIR/pbx_call.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.1 -p "$(free_port)" -s 15550000001 $PBX -d 3000
call=$!
wait_for grep -q "event=call_start" "$T/sipauthd.log" || fail "call did not start"
kill -TERM "$SIPAUTHD_PID"
wait "$SIPAUTHD_PID"
assert_eq "SIGTERM with a call up: exit status 0" 0 $?
assert_match "the call is saved at stop" "event=calls_saved count=1" "$(cat "$T/sipauthd.log")"
assert_eq "calls.state starts with its kind and version" '{"kind":"sipauthd-calls","version":2,"calls":1}' \
	"$(head -1 "$STORE/calls.state")"
assert_eq "... readable by its owner only, whatever the umask (Call-IDs, tags, contacts)" 600 \
	"$(stat -c %a "$STORE/calls.state")"
assert_eq "the call is one JSON line: its credential, and its listeners named by address" \
	"$CRED udp:127.0.0.1:$SIP_PORT udp:127.0.0.1:$SIP_PORT" \
	"$(sed -n 2p "$STORE/calls.state" | python3 -c 'import json,sys; c=json.load(sys.stdin); print(c["cred_id"], c["caller"]["flow"]["listener"], c["callee"]["flow"]["listener"])')"
cp "$STORE/calls.state" "$T/calls.state.saved"
spawn "$T/sipauthd2.log" "$SIPAUTHD" --config "$T/sipauthd.conf"
SIPAUTHD_PID=$!
wait_for grep -q "event=started" "$T/sipauthd2.log"
assert_match "the call is restored at start" "event=calls_restored count=1" "$(cat "$T/sipauthd2.log")"
wait "$call"; assert_eq "the PBX's BYE after the restart is answered" 0 $?
wait "$gw"; assert_eq "the gateway got the BYE through the restarted daemon" 0 $?

# --- SIGTERM with a transaction in flight: new requests get 503, the INVITE still completes
bg_sipp slow -sf "$SIPP_DIR/gateway_slow.xml" -i 127.0.0.2 -p "$GW_PORT"
bg_sipp call2 -sf "$SIPP_DIR/pbx_call.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.1 -p "$(free_port)" -s 15550000002 $PBX -d 100
wait_for grep -q "180 Ringing" "$T/call2.msg" || fail "second call did not ring"
kill -TERM "$SIPAUTHD_PID"
sleep 0.2
assert_eq "while draining, a new request gets 503" 503 "$(options_status)"
wait "$SIPAUTHD_PID"
assert_eq "after draining: exit status 0" 0 $?
assert_match "the PBX got the 200 that arrived while draining" "SIP/2.0 200 OK" "$(cat "$T/call2.msg")"
assert_match "the daemon waited for the transaction" "event=drained in_flight=0" "$(cat "$T/sipauthd2.log")"

# --- calls.state of another version (the first one was raw struct bytes) is refused, never misread
printf 'SAC1\001\002\003garbage' >"$STORE/calls.state"
spawn "$T/sipauthd3.log" "$SIPAUTHD" --config "$T/sipauthd.conf"
SIPAUTHD_PID=$!
wait_for grep -q "event=started" "$T/sipauthd3.log" || fail "sipauthd did not start over an old calls.state"
assert_match "an old calls.state is refused with one log line" \
	"event=calls_not_restored path=$STORE/calls.state reason=\"not a version 2 calls file\"" "$(cat "$T/sipauthd3.log")"
assert_eq "nothing was read from it" 0 "$(grep -c 'event=calls_restored' "$T/sipauthd3.log")"
kill "$SIPAUTHD_PID"; wait "$SIPAUTHD_PID" 2>/dev/null
sed 's/"version":2/"version":3/' "$T/calls.state.saved" >"$STORE/calls.state"
spawn "$T/sipauthd4.log" "$SIPAUTHD" --config "$T/sipauthd.conf"
SIPAUTHD_PID=$!
wait_for grep -q "event=started" "$T/sipauthd4.log"
assert_match "a calls.state of a later version is refused too" "event=calls_not_restored" "$(cat "$T/sipauthd4.log")"
kill "$SIPAUTHD_PID"; wait "$SIPAUTHD_PID" 2>/dev/null

# --- a restored call keeps the listener it used: a PBX on TCP stays on the TCP listener
# (the saved call, its caller moved to TCP: restored, then saved again at the next stop)
sed -n 1p "$T/calls.state.saved" >"$STORE/calls.state"
sed -n 2p "$T/calls.state.saved" | python3 -c '
import json, sys
c = json.load(sys.stdin)
c["caller"]["flow"]["transport"] = "tcp"
c["caller"]["flow"]["listener"] = "tcp:127.0.0.1:'"$SIP_PORT"'"
print(json.dumps(c, separators=(",", ":")))' >>"$STORE/calls.state"
spawn "$T/sipauthd5.log" "$SIPAUTHD" --config "$T/sipauthd.conf"
SIPAUTHD_PID=$!
wait_for grep -q "event=started" "$T/sipauthd5.log"
assert_match "the call on two listeners is restored" "event=calls_restored count=1" "$(cat "$T/sipauthd5.log")"
kill -TERM "$SIPAUTHD_PID"; wait "$SIPAUTHD_PID" 2>/dev/null
assert_eq "saved again, each end names the listener it used" \
	"tcp tcp:127.0.0.1:$SIP_PORT udp udp:127.0.0.1:$SIP_PORT" \
	"$(sed -n 2p "$STORE/calls.state" | python3 -c 'import json,sys; c=json.load(sys.stdin); f=(c["caller"]["flow"], c["callee"]["flow"]); print(f[0]["transport"], f[0]["listener"], f[1]["transport"], f[1]["listener"])')"
finish
