#!/bin/sh
# clock.sh: a step of the wall clock (NTP's at boot, a VM resumed from a snapshot) hangs up no
# call, neither lengthens nor ends a ban, and an answer to a nonce issued before the clock was
# put back is stale (a fresh nonce, retried silently), not malformed. And /metrics' standard
# process_start_time_seconds is right where /proc/stat is hidden (the unit's ProcSubset=pid).
# The daemon runs under libfaketime with only CLOCK_REALTIME moved, from a file this test writes.
. "$top_srcdir/test/lib.sh"
need sipp
FT_LIB=$(ls /usr/lib/*/faketime/libfaketimeMT.so.1 2>/dev/null | head -1)
[ -n "$FT_LIB" ] || skip "libfaketime is not installed (scripts/setup installs faketime)"
setup_store || { fail "store setup"; finish; }
REAL_SIPAUTHD=$SIPAUTHD
echo "+0" >"$T/ft"
cat >"$T/ft-sipauthd" <<EOF
#!/bin/sh
LD_PRELOAD=$FT_LIB FAKETIME_TIMESTAMP_FILE=$T/ft FAKETIME_NO_CACHE=1 FAKETIME_DONT_FAKE_MONOTONIC=1 \\
ASAN_OPTIONS=\${ASAN_OPTIONS:+\$ASAN_OPTIONS:}verify_asan_link_order=0 exec "$SIPAUTHD" "\$@"
EOF
chmod +x "$T/ft-sipauthd"
SIPAUTHD=$T/ft-sipauthd
API_PORT=$(free_port 127.0.0.1)
ADMIN_TOKEN=adm_$(python3 -c 'import secrets; print(secrets.token_hex(16))')
printf '%s\n' "$ADMIN_TOKEN" >"$T/admin.token"
ABUSE_MAX_FAILURES=3 start_sipauthd "MD5" "[abuse]
window = 60
ban_time = 6
[api]
listen = 127.0.0.1:$API_PORT
admin_token_file = $T/admin.token" || { fail "sipauthd did not start"; finish; }
PBX="-au $SIP_USER -ap $SIP_PASS -key trunk_host $TRUNK_HOST"
step() { echo "$1" >"$T/ft"; }
fake_now() { python3 -c 'import time, sys; o = sys.argv[1]; print(int(time.time()) + {"+0": 0, "+1h": 3600, "+5h": 18000}[o])' "$(cat "$T/ft")"; }

# 1. a call up when the clock jumps 5 hours ahead (max_call_age is 4 h): the PBX hangs up
# 9 s later itself; before, sipauthd's reaper sent both ends a BYE within 5 s of the step
bg_sipp gw -m 1 -sf "$SIPP_DIR/gateway_uas.xml" -i 127.0.0.2 -p "$GW_PORT"; gw=$!
sleep 0.3
bg_sipp pbx -m 1 -sf "$SIPP_DIR/pbx_call.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.1 -p "$(free_port)" -s 15550000001 \
	-d 9000 $PBX
pbx=$!
wait_for grep -q "event=call_start" "$T/sipauthd.log" || fail "the call did not start"
step "+5h"
wait "$pbx"; assert_eq "the PBX's call lasted until the PBX hung up (no BYE of sipauthd's after the step)" 0 $?
wait "$gw"; assert_eq "the gateway took the PBX's BYE" 0 $?
assert_nomatch "no call was reaped" "reason=max_call_age" "$(cat "$T/sipauthd.log")"
assert_match "the call ended with its BYE" "event=call_end .* reason=bye" "$(cat "$T/sipauthd.log")"
step "+0"

# 2. a nonce issued at +1h and answered after the clock was put back an hour: stale=true and a
# fresh nonce, which the client answers; not "malformed" (a wrong password to many PBXs)
step "+1h"
sipc register --local-ip 127.0.0.5 --host "$TRUNK_HOST" --user "$SIP_USER" --password "$SIP_PASS" --algorithms MD5 \
	--stale-after 2 >"$T/stale.json" &
client=$!
sleep 1
step "+0"
wait "$client"
assert_eq "the answer to the nonce from the clock's future: a 401 with stale=true, then 200" "401 401 200" \
	"$(json_get '" ".join(str(r["status"]) for r in resp)' <"$T/stale.json")"
assert_match "... the second challenge says stale=true" "stale=true" \
	"$(json_get 'resp[1]["headers"].get("www-authenticate")' <"$T/stale.json")"
assert_match "... logged as a stale nonce from the future" "event=auth_failure reason=stale_nonce .*stale=future" \
	"$(cat "$T/sipauthd.log")"
assert_nomatch "... never as malformed" "reason=malformed" "$(cat "$T/sipauthd.log")"
assert_match "... counted by its cause" 'sipauthd_auth_stale_nonces_by_cause_total\{cause="future"\} 1' \
	"$(curl -s "http://127.0.0.1:$API_PORT/metrics")"

# 3. a source banned for 6 s at +1h, then the clock put back an hour: the ban still ends 6 s
# after it began (it lasted 1 h 6 min before), and the API shows its end on the wall clock
reg() { sipc register --local-ip 127.0.0.7 --host "$TRUNK_HOST" --user "$SIP_USER" --password "$SIP_PASS" --timeout 1 "$@"; }
step "+1h"
for i in 1 2 3; do reg --wrong-password "wrong_password_$i" >/dev/null; done
assert_match "the source is banned" "event=ban src=127.0.0.7 failures=3 window=60 ban_time=6" "$(cat "$T/sipauthd.log")"
banned_at=$(fake_now)
curl -s -H "Authorization: Bearer $ADMIN_TOKEN" "http://127.0.0.1:$API_PORT/v1/bans" >"$T/bans.json"
assert_eq "GET /v1/bans: its end is 6 s after the ban on the (moved) wall clock" "127.0.0.7 ok" \
	"$(python3 -c '
import calendar, json, sys, time
b = json.load(open(sys.argv[1]))["data"]
until = calendar.timegm(time.strptime(b[0]["until"], "%Y-%m-%dT%H:%M:%SZ"))
print(b[0]["source"], "ok" if abs(until - (int(sys.argv[2]) + 6)) <= 2 else "until=%s banned_at=%s" % (until, sys.argv[2]))' \
	"$T/bans.json" "$banned_at")"
step "+0"
reg >"$T/banned.json"
assert_eq "right after the step back the source is still banned (no answer)" 3 $?
sleep 7
assert_eq "7 s later the ban is over: the right password registers" 200 \
	"$(reg | json_get 'final.get("final_status")')"

# 4. process_start_time_seconds with /proc/stat hidden (a proc mounted subset=pid, as the unit's
# ProcSubset=pid does): the start from the boot clock, not 0 (a process started in 1970)
if unshare -m --propagation private sh -c 'mount -t proc -o subset=pid proc /proc && ! test -e /proc/stat' \
	2>"$T/unshare.err"; then
	"$SIPAUTHCTL" --store "$T/store2" init >/dev/null || fail "second store"
	P2=$(free_port 127.0.0.1)
	A2=$(free_port 127.0.0.1)
	cat >"$T/second.conf" <<CONF
[sip]
listen = udp:127.0.0.1:$P2
[upstream]
gateway = udp:127.0.0.2:$GW_PORT
[store]
path = $T/store2
[api]
listen = 127.0.0.1:$A2
CONF
	spawn "$T/second.log" unshare -m --propagation private sh -c \
		'mount -t proc -o subset=pid proc /proc && exec "$0" --config "$1"' "$REAL_SIPAUTHD" "$T/second.conf"
	second=$!
	wait_for grep -q "event=started" "$T/second.log" || fail "the daemon with /proc/stat hidden did not start"
	curl -s "http://127.0.0.1:$A2/metrics" >"$T/second.metrics"
	assert_eq "process_start_time_seconds is within 3 s of sipauthd_start_time_seconds" ok "$(python3 -c '
import re, sys
t = open(sys.argv[1]).read()
p = float(re.search(r"^process_start_time_seconds (\S+)$", t, re.M).group(1))
s = float(re.search(r"^sipauthd_start_time_seconds (\S+)$", t, re.M).group(1))
print("ok" if abs(p - s) <= 3 else "process=%s sipauthd=%s" % (p, s))' "$T/second.metrics")"
	stop "$second"
else
	echo "SKIP part 4: cannot mount a proc with subset=pid here ($(head -1 "$T/unshare.err"))"
fi
finish
