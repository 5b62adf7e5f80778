#!/bin/sh
# storage.sh: the store under stress (issue 10, items 12-16): an empty or truncated data.mdb is refused
# with exit 6 and never read past its end or grown back; a full map refuses new records (sipauthctl
# exit 7, SIP 503, API 507, /healthz 503, one log line, metrics) while refreshes and deletes go on and
# no REGISTER is half stored; data.mdb (credentials) and runtime/ (registrations) fill up apart, and
# a grown map grows both; a full file system (a real loop-mounted ext4) crashes nothing.
. "$top_srcdir/test/lib.sh"

[ -x "$SIPAUTHCTL" ] || skip "$SIPAUTHCTL is not built"
WRITER="$top_builddir/test/durability_writer"
[ -x "$WRITER" ] || skip "$WRITER is not built (make check builds it)"
need python3
need curl

MNT=""
storage_cleanup() {
	for p in $_pids; do kill "$p" 2>/dev/null; done
	for p in $_pids; do wait "$p" 2>/dev/null; done
	_pids=""
	[ -n "$MNT" ] && umount "$MNT" 2>/dev/null
	cleanup
}
trap storage_cleanup EXIT

# ctl ARGS...: sipauthctl with empty stdin; $out, $err, $rc
ctl() {
	out=$("$SIPAUTHCTL" "$@" 2>"$T/stderr" </dev/null)
	rc=$?
	err=$(cat "$T/stderr")
}
ctl_pw() {
	out=$(printf 'secure_password_here_123\n' | "$SIPAUTHCTL" "$@" 2>"$T/stderr")
	rc=$?
	err=$(cat "$T/stderr")
}
size_of() { stat -c %s "$1"; }
# new_store DIR [--map-size SIZE]: init, account, trunk, API key, one credential ($SIP_USER)
new_store() {
	STORE=$1; shift
	"$SIPAUTHCTL" --store "$STORE" "$@" init >/dev/null || return 1
	ACC=$("$SIPAUTHCTL" --store "$STORE" account create --name test) || return 1
	TRUNK=$("$SIPAUTHCTL" --store "$STORE" trunk create --account "$ACC" --name test) || return 1
	KEY=$("$SIPAUTHCTL" --store "$STORE" apikey create --account "$ACC") || return 1
	SIP_USER=pbx-prod-01
	SIP_PASS=secure_password_here_123
	CRED=$(printf '%s\n' "$SIP_PASS" | "$SIPAUTHCTL" --store "$STORE" credential create --trunk "$TRUNK" \
		--username "$SIP_USER" --password-stdin | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])') || return 1
	TRUNK_HOST="trunk-$TRUNK.sip.tryvox.io"
}
# start STORE [EXTRA CONFIG]: the daemon with the API on $API_PORT ($ALGS: its algorithms)
start() {
	STORE=$1
	API_PORT=$(free_port 127.0.0.1)
	BASE="http://127.0.0.1:$API_PORT"
	start_sipauthd "${ALGS:-}" "[api]
listen = 127.0.0.1:$API_PORT
${2:-}"
}
# reg ARGS...: REGISTER as $SIP_USER; prints the final status
reg() {
	sipc register --host "$TRUNK_HOST" --user "$SIP_USER" --password "$SIP_PASS" --timeout 2 "$@" > "$T/reg.out"
	json_get 'final.get("final_status")' < "$T/reg.out"
}
# api METHOD PATH [BODY]: status in $st, body in $body
api() {
	if [ $# -ge 3 ]; then
		st=$(curl -s -o "$T/body" -w '%{http_code}' -X "$1" -H "Authorization: Bearer $KEY" \
			-H 'Content-Type: application/json' --data-binary "$3" "$BASE$2")
	else
		st=$(curl -s -o "$T/body" -w '%{http_code}' -X "$1" -H "Authorization: Bearer $KEY" "$BASE$2")
	fi
	body=$(cat "$T/body")
}
# run_fail STORE [EXTRA [store] LINES]: run the daemon in the foreground; it must refuse to start.
# Its status in $rc, its log in $T/fail.log
run_fail() {
	cat > "$T/fail.conf" <<CONF
[sip]
listen = udp:127.0.0.1:$(free_port 127.0.0.1)
domain = sip.tryvox.io
[upstream]
gateway = udp:127.0.0.2:5060
[store]
path = $1
${2:-}
CONF
	timeout 20 "$SIPAUTHD" --config "$T/fail.conf" > "$T/fail.log" 2>&1
	rc=$?
}
jf() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$T/body" "$1"; }
metric() { curl -s "$BASE/metrics" | sed -n "s/^sipauthd_$1 //p"; }
api_contacts() { api GET "/v1/account/$ACC/trunks/$TRUNK/registrations"; jf 'sorted(r["contact"] for r in d["data"])'; }
C1="sip:pbx-a@127.0.0.1:5070" C2="sip:pbx-b@127.0.0.1:5070" C3="sip:pbx-c@127.0.0.1:5070"

# ---- [store] map_size is checked with the rest of the file ----
printf '[sip]\nlisten = udp:127.0.0.1:5060\n[upstream]\ngateway = udp:127.0.0.2:5060\n[store]\nmap_size = 3X\n' > "$T/bad.conf"
assert_eq "a bad map_size is refused" \
	"sipauthd: $T/bad.conf:6: [store] map_size: '3X' is not a map size from 2M to 1T (bytes, or a number with K, M, G or T)" \
	"$("$SIPAUTHD" --check-config "$T/bad.conf" 2>&1)"
ctl --store "$T/none" --map-size 3X init
assert_eq "a bad --map-size is refused" \
	"1 sipauthctl: --map-size must be a size from 2M to 1T (bytes, or a number with K, M, G or T)" "$rc $err"
ctl --store "$T/none" --map-size 2M credential list --trunk trunk_x
assert_eq "--map-size on a command that only reads" "1 sipauthctl: --map-size applies to commands that write" "$rc $err"

# ---- 14: an empty or truncated data.mdb ----
new_store "$T/trunc" || { fail "store setup"; finish; }
D="$T/trunc/data.mdb"
truncate -s 12288 "$D"
ctl --store "$T/trunc" credential list --trunk "$TRUNK"
assert_eq "truncated: credential list exits 6 (no SIGBUS)" 6 "$rc"
assert_match "truncated: the message names it" \
	"^sipauthctl: store $T/trunc: corrupted: $D is truncated: 12288 bytes, but its pages in use need [0-9]+$" "$err"
ctl_pw --store "$T/trunc" credential create --trunk "$TRUNK" --username another --password-stdin
assert_eq "truncated: credential create exits 6" 6 "$rc"
assert_eq "truncated: a write command did not grow the file back" 12288 "$(size_of "$D")"
run_fail "$T/trunc"
assert_eq "truncated: the daemon refuses to start" 1 "$rc"
assert_match "truncated: the daemon names the cause" \
	"event=store_failed path=$T/trunc cause=corrupted error=\"store corrupted\" reason=\"$D is truncated: 12288 bytes" \
	"$(grep event=store_failed "$T/fail.log")"

truncate -s 0 "$D"
ctl --store "$T/trunc" credential list --trunk "$TRUNK"
assert_eq "empty: credential list exits 6" 6 "$rc"
assert_match "empty: the message names it" "^sipauthctl: store $T/trunc: corrupted: $D is empty \(0 bytes\)" "$err"
ctl --store "$T/trunc" init
assert_eq "empty: init exits 6 rather than making a new store in it" 6 "$rc"
assert_eq "empty: still 0 bytes" 0 "$(size_of "$D")"

# ---- 13: full maps. data.mdb (credentials, written by sipauthctl and the API) and runtime/
# (registrations and the failure log, written by the daemon) fill up apart ----
new_store "$T/small" --map-size 2M || { fail "small store setup"; finish; }
# a second trunk whose registrations will fill runtime/ (made while data.mdb has room)
TRUNK2=$("$SIPAUTHCTL" --store "$T/small" trunk create --account "$ACC" --name filler)
CRED2=$(printf 'another_secret_pw_789\n' | "$SIPAUTHCTL" --store "$T/small" credential create --trunk "$TRUNK2" \
	--username filler-pbx --password-stdin | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
start "$T/small" || { fail "sipauthd did not start"; finish; }
assert_eq "three contacts registered" 200 "$(reg --contact "$C1" --header "Contact: <$C2>" --header "Contact: <$C3>")"
"$WRITER" "$T/small" "$TRUNK" 0 > "$T/writer.out" 2> "$T/writer.err"
assert_match "the writer filled the map" "store map full" "$(cat "$T/writer.err")"
FILLER=$(head -1 "$T/writer.out")
ctl_pw --store "$T/small" credential create --trunk "$TRUNK" --username one-more --password-stdin
assert_eq "full map: credential create exits 7" 7 "$rc"
assert_match "full map: the message says so and what to do" \
	"^sipauthctl: store $T/small: map full: [0-9]+ of 2 MiB used \([0-9]+%\); new records are refused above 90%; deletes still work; grow the map with sipauthctl --map-size SIZE or \[store\] map_size$" "$err"

# data.mdb full: registrations are in runtime/, which has room
assert_eq "data.mdb full: a REGISTER adding a contact is still 200" 200 \
	"$(reg --contact "$C1" --header "Contact: <sip:new-0@127.0.0.1:5070>")"
assert_eq "data.mdb full: and removing it again" 200 "$(reg --contact "sip:new-0@127.0.0.1:5070" --expires 0)"
st=$(curl -s -o "$T/health" -w '%{http_code}' "$BASE/healthz")
assert_eq "data.mdb full: /healthz is 503" 503 "$st"
assert_eq "data.mdb full: /healthz says why" '{"status":"unavailable","reason":"store_map_full"}' "$(cat "$T/health")"
assert_match "data.mdb full: the used ratio metric is at the limit" '^0\.9[0-9]*$' "$(metric store_map_used_ratio)"
assert_eq "full map: the map size metric" 2097152 "$(metric store_map_size_bytes)"
assert_match "data.mdb full: runtime/ is not" '^0\.[0-7][0-9]*$' "$(metric store_runtime_map_used_ratio)"
assert_eq "the runtime map size metric: [store] map_size sizes each file" 2097152 "$(metric store_runtime_map_size_bytes)"
api POST "/v1/account/$ACC/trunks/$TRUNK/credentials" '{"username":"api-new","password":"another_secret_pw_456"}'
assert_eq "full map: API create is 507" 507 "$st"
assert_eq "full map: API error code" insufficient_storage "$(jf 'd["error"]["code"]')"
wait_for grep -q "event=store_map_high file=store" "$T/sipauthd.log" && pass "data.mdb's alarm was logged" \
	|| fail "no store_map_high file=store"

# runtime/ full too: another process fills it with the second trunk's registrations (any process
# may write runtime/ but sipauthctl, which never opens it)
"$WRITER" --bindings "$T/small" "$CRED2" > "$T/bindings.out" 2> "$T/bindings.err"
assert_match "the writer filled runtime/" "binding: store map full" "$(cat "$T/bindings.err")"
NB=$(wc -l < "$T/bindings.out")
[ "$NB" -gt 100 ] && pass "runtime/ took $NB registrations" || fail "runtime/ took only $NB registrations"

assert_match "runtime/ full: its used ratio metric is at the limit" '^0\.9[0-9]*$' "$(metric store_runtime_map_used_ratio)"

# a REGISTER that adds contacts is refused whole: the refresh in it is not kept either
assert_eq "full map: a REGISTER adding two contacts gets 503" 503 \
	"$(reg --contact "$C1" --header "Contact: <sip:new-1@127.0.0.1:5070>" --header "Contact: <sip:new-2@127.0.0.1:5070>")"
assert_eq "full map: the 503 says why and asks to retry later" "Registrar Storage Full ['60']" \
	"$(json_get 'resp[-1].get("reason") + " " + str(resp[-1]["headers"].get("retry-after"))' < "$T/reg.out")"
assert_eq "full map: nothing of that REGISTER was stored" "['$C1', '$C2', '$C3']" "$(api_contacts)"
for i in 1 2 3 4 5; do sipc register --host "$TRUNK_HOST" --user "nobody-$i" --password x --timeout 1 >/dev/null; done
kill -0 "$SIPAUTHD_PID" 2>/dev/null && pass "failure-log writes refused: the daemon runs" || fail "the daemon died"
api GET "/v1/account/$ACC/trunks/$TRUNK/auth-failures?limit=1000"
assert_eq "full map: the failure log took none of them" 0 "$(jf 'len(d["data"])')"
st=$(curl -s -o "$T/health" -w '%{http_code}' "$BASE/healthz")
assert_eq "full map: /healthz is 503" 503 "$st"
assert_eq "full map: /healthz says why" '{"status":"unavailable","reason":"store_map_full"}' "$(cat "$T/health")"
wait_for grep -q "event=store_write_failed" "$T/sipauthd.log"
assert_match "full map: one log line names the cause" \
	'event=store_write_failed cause=map_full error="[0-9]+ of 2 MiB used \([0-9]+%\); new records are refused above 90%" code=-30792 failures=[0-9]+' \
	"$(grep event=store_write_failed "$T/sipauthd.log" | head -1)"
wait_for grep -q "event=store_map_high file=runtime" "$T/sipauthd.log"
assert_match "full map: data.mdb's alarm was logged once" '^1$' "$(grep -c 'event=store_map_high file=store' "$T/sipauthd.log")"
assert_match "full map: runtime/'s alarm was logged once" '^1$' "$(grep -c 'event=store_map_high file=runtime' "$T/sipauthd.log")"
n_lines=$(grep -c event=store_write_failed "$T/sipauthd.log")
[ "$n_lines" -le 3 ] && pass "failures are summed per tick ($n_lines lines)" || fail "$n_lines store_write_failed lines"

# refreshes and removals go on in the headroom
assert_eq "full map: a refresh of the registered contacts is 200" 200 \
	"$(reg --contact "$C1" --header "Contact: <$C2>" --header "Contact: <$C3>")"
assert_eq "full map: removing a contact is 200" 200 "$(reg --contact "$C3" --expires 0)"
assert_eq "full map: the API lists what is left" "['$C1', '$C2']" "$(api_contacts)"
assert_eq "registrations_active agrees with the API and the writer" $((NB + 2)) "$(metric registrations_active)"

# deletes always work, by the API and by sipauthctl, with bindings or without
ctl --store "$T/small" credential delete --trunk "$TRUNK" --id "$CRED"
assert_eq "full map: sipauthctl deletes the credential that has bindings" 0 "$rc"
wait_for sh -c "[ \"\$(curl -s '$BASE/metrics' | sed -n 's/^sipauthd_registrations_active //p')\" = $NB ]" \
	&& pass "its bindings are gone: registrations_active $NB" || fail "registrations_active: $(metric registrations_active)"
assert_eq "full map: the API lists no registration" "[]" "$(api_contacts)"
api DELETE "/v1/account/$ACC/trunks/$TRUNK/credentials/$FILLER"
assert_eq "full map: API delete is 204" 204 "$st"
ctl --store "$T/small" credential delete --trunk "$TRUNK2" --id "$CRED2"
assert_eq "full map: sipauthctl deletes the credential that filled runtime/" 0 "$rc"
assert_eq "its registrations are not listed any more" 0 "$(metric registrations_active)"
wait_for sh -c "curl -s '$BASE/metrics' | grep -Eq '^sipauthd_store_runtime_map_used_ratio 0\.[0-4]'" \
	&& pass "the daemon removed them from runtime/ (sipauthctl cannot)" \
	|| fail "runtime ratio: $(metric store_runtime_map_used_ratio)"
wait_for grep -q "event=store_map_ok file=runtime" "$T/sipauthd.log" && pass "runtime/'s alarm ended" \
	|| fail "no store_map_ok file=runtime"

# growing the map (with the daemon running) makes room; the daemon takes the new size up, for both files
ctl_pw --store "$T/small" --map-size 8M credential create --trunk "$TRUNK" --username after-growth --password-stdin
assert_eq "sipauthctl --map-size 8M grows the map and creates" 0 "$rc"
SIP_USER=after-growth
wait_for sh -c "curl -s '$BASE/metrics' | grep -q '^sipauthd_store_map_size_bytes 8388608$'" \
	&& pass "the daemon follows the grown map" || fail "map size metric: $(metric store_map_size_bytes)"
wait_for sh -c "curl -s '$BASE/metrics' | grep -q '^sipauthd_store_runtime_map_size_bytes 8388608$'" \
	&& pass "runtime/ grows with it" || fail "runtime map size metric: $(metric store_runtime_map_size_bytes)"
assert_eq "runtime/ is reserved at its new size" 8388608 "$(size_of "$T/small/runtime/data.mdb")"
assert_eq "a REGISTER adding a contact after the growth" 200 "$(reg --contact "$C1" --header "Contact: <sip:new-1@127.0.0.1:5070>")"
wait_for sh -c "curl -sf '$BASE/healthz' >/dev/null" && pass "/healthz is ok again" || fail "/healthz: $(curl -s "$BASE/healthz")"
wait_for grep -q "event=store_map_ok file=store" "$T/sipauthd.log" && pass "the alarm's end was logged" || fail "no store_map_ok"
stop "$SIPAUTHD_PID"

# ---- 12: a full file system ----
IMG="$T/fs.img"
MNT="$T/mnt"
mkdir -p "$MNT"
if ! { dd if=/dev/zero of="$IMG" bs=1M count=16 status=none && mkfs.ext4 -q -m 0 "$IMG" &&
       mount -o loop "$IMG" "$MNT"; } 2>"$T/mount.err"; then
	MNT=""
	echo "SKIP: full file system part: cannot mount a loop file system here ($(head -1 "$T/mount.err"))"
	finish
fi
new_store "$MNT/store" --map-size 4M || { fail "store on the small file system"; finish; }
start "$MNT/store" || { fail "sipauthd did not start on the small file system"; finish; }
assert_match "the map is reserved on disk" "event=store_opened .* map_mib=4 .* reserved=yes" "$(cat "$T/sipauthd.log")"
assert_match "runtime/'s map too" "event=store_runtime_opened .* map_mib=4 .* reserved=yes" "$(cat "$T/sipauthd.log")"
dd if=/dev/zero of="$MNT/fill" bs=64k status=none 2>/dev/null
dd if=/dev/zero of="$MNT/fill" bs=1k oflag=append conv=notrunc status=none 2>/dev/null
assert_eq "the file system is full" 0 "$(df --output=avail -B1 "$MNT" | tail -1 | tr -d ' ')"
for i in $(seq 1 50); do sipc register --host "$TRUNK_HOST" --user "unknown-$i" --password x --timeout 1 >/dev/null; done
kill -0 "$SIPAUTHD_PID" 2>/dev/null && pass "full disk: 50 failure-log writes, the daemon runs" || fail "full disk: the daemon died"
api GET "/v1/account/$ACC/trunks/$TRUNK/auth-failures?limit=1000"
assert_eq "full disk: the failure log still takes records (the map is reserved)" 50 "$(jf 'len(d["data"])')"
assert_eq "full disk: a REGISTER is stored" 200 "$(reg --contact "$C1")"
ctl_pw --store "$MNT/store" credential create --trunk "$TRUNK" --username on-full-disk --password-stdin
assert_eq "full disk: sipauthctl credential create works in the reserved map" 0 "$rc"
assert_eq "full disk: /healthz is ok" 200 "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/healthz")"
ctl_pw --store "$MNT/store" --map-size 32M credential create --trunk "$TRUNK" --username bigger --password-stdin
assert_eq "full disk: growing the map exits 7" 7 "$rc"
assert_eq "full disk: and says why" \
	"sipauthctl: store $MNT/store: disk full: cannot reserve the store's map of 32 MiB on disk: No space left on device" "$err"
ctl --store "$MNT/store" credential list --trunk "$TRUNK"
assert_eq "full disk: the store still reads" 0 "$rc"
ctl --store "$MNT/new" init
assert_eq "full disk: a new store exits 7" 7 "$rc"
[ -e "$MNT/new/data.mdb" ] && fail "full disk: a failed init left data.mdb" || pass "full disk: a failed init leaves no data.mdb"
stop "$SIPAUTHD_PID"
run_fail "$MNT/store" "map_size = 32M"
assert_eq "full disk: the daemon refuses a map it cannot reserve" 1 "$rc"
assert_match "full disk: the daemon names the cause" \
	"event=store_failed path=$MNT/store cause=disk_full error=\"disk full\" reason=\"cannot reserve the store's map of 32 MiB on disk: No space left on device\" errno=28" \
	"$(grep event=store_failed "$T/fail.log")"
rm -f "$MNT/fill"
ALGS=MD5 start "$MNT/store" || fail "the daemon starts again once there is space"   # MD5: sipp calls below

# ---- 13: calls across a start on a full file system ----
# A call up at a clean stop is in calls.state. A start that cannot write the calls journal keeps
# calls.state (it was deleted, and a crash before the journal could be written lost every
# call); once the journal has the calls, calls.state goes.
bg_sipp gw13 -m 1 -sf "$SIPP_DIR/gateway_uas.xml" -i 127.0.0.2 -p "$GW_PORT"; gw=$!
sleep 0.3
bg_sipp pbx13 -m 1 -sf "$SIPP_DIR/pbx_call_hold.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.1 -p "$(free_port)" \
	-s 15550000001 -au "$SIP_USER" -ap "$SIP_PASS" -key trunk_host "$TRUNK_HOST"
pbx=$!
wait_for grep -q "event=call_start" "$T/sipauthd.log" || fail "the call did not start"
stop "$SIPAUTHD_PID"
assert_match "the call is saved at the stop" "event=calls_saved count=1" "$(cat "$T/sipauthd.log")"
# restart NAME: the daemon again, on the same configuration (its listeners name the call's ends)
restart() {
	spawn "$T/$1.log" "$SIPAUTHD" --config "$T/sipauthd.conf"
	SIPAUTHD_PID=$!
	wait_for grep -q "event=started" "$T/$1.log"
}
dd if=/dev/zero of="$MNT/fill" bs=64k status=none 2>/dev/null
dd if=/dev/zero of="$MNT/fill" bs=1k oflag=append conv=notrunc status=none 2>/dev/null
restart full || fail "the daemon did not start on the full file system"
assert_match "full disk: the call is restored" "event=calls_restored count=1 refused=0 from=calls.state" \
	"$(cat "$T/full.log")"
assert_match "full disk: the journal cannot be written, so calls.state is kept (and said)" \
	"event=calls_restore_kept from=calls.state" "$(cat "$T/full.log")"
[ -e "$MNT/store/calls.state" ] && pass "full disk: calls.state is still there" || fail "full disk: calls.state was deleted"
kill -9 "$SIPAUTHD_PID"
wait "$SIPAUTHD_PID" 2>/dev/null
rm -f "$MNT/fill"
restart again || fail "the daemon did not start after the crash"
assert_match "after the crash, the call is back (from the calls.state that was kept)" \
	"event=calls_restored count=1 refused=0 from=calls.state" "$(cat "$T/again.log")"
[ ! -e "$MNT/store/calls.state" ] && [ -s "$MNT/store/calls.journal.0" ] \
	&& pass "with room again, calls.state goes once the journal holds the call" \
	|| fail "calls.state and the journal: $(ls "$MNT/store")"
ctl --store "$MNT/store" credential delete --trunk "$TRUNK" --id "$CRED"
wait "$pbx"; assert_eq "the restored call is ended by the revocation: the PBX got its BYE" 0 $?
wait "$gw"; assert_eq "... and the gateway" 0 $?
finish
