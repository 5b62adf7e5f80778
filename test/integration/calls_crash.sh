#!/bin/sh
# calls_crash.sh: calls outlive a crash. Each worker journals the calls it sets up and ends
# (calls.journal.N in the store's folder); after kill -9 the next start takes them from there:
# the PBX's BYE reaches the gateway (not 481), a credential deleted after the restart ends its
# call with BYEs whose CSeq clears what the call may have sent since its line was written, a call
# that ended before the crash stays ended, a journal of another version or cut mid-line loses
# only what it cannot read, a call whose From is not UTF-8 is left out, not the whole calls.state;
# journals that cannot be written cost one log line each and no call, and a rewrite's calls.journal.N.tmp
# that a crash left behind is removed at the next start. A PBX on TCP whose connection went with
# a restart is reached where its Contact says it listens, on the address it connected from: the
# gateway's calls to it, and the BYEs of its calls.
. "$top_srcdir/test/lib.sh"
need sipp
setup_store || { fail "store setup"; finish; }
start_sipauthd "MD5" || { fail "sipauthd did not start"; finish; }
PBX="-au $SIP_USER -ap $SIP_PASS -key trunk_host $TRUNK_HOST"
crash() {
	kill -9 "$SIPAUTHD_PID"
	wait "$SIPAUTHD_PID" 2>/dev/null
}
restart() {   # LOG: the daemon again on the same configuration and store
	spawn "$T/$1" "$SIPAUTHD" --config "$T/sipauthd.conf"
	SIPAUTHD_PID=$!
	wait_for grep -q "event=started" "$T/$1" || { cat "$T/$1"; fail "sipauthd did not start again"; }
}

# ---- a call up, the daemon killed: the PBX's BYE after the restart reaches the gateway ----
bg_sipp gw1 -sf "$SIPP_DIR/gateway_uas.xml" -i 127.0.0.2 -p "$GW_PORT" -m 1; gw=$!
sleep 0.3
bg_sipp call1 -sf "$SIPP_DIR/pbx_call.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.1 -p "$(free_port)" -s 15550000001 $PBX -d 4000 -m 1
call=$!
wait_for grep -q "event=call_start" "$T/sipauthd.log" || fail "the call did not start"
journaled() { cat "$STORE"/calls.journal.* 2>/dev/null | grep -c "\"cred_id\":\"$CRED\""; }
journal_has() { [ "$(journaled)" = "$1" ]; }
wait_for journal_has 1   # written within 10 ms
assert_eq "the call is in a journal as it starts" 1 "$(journaled)"
assert_eq "each journal starts with its kind and version" '{"kind":"sipauthd-calls-journal","version":2}' \
	"$(head -qn1 "$STORE"/calls.journal.* | sort -u)"
crash
assert_eq "kill -9 leaves no calls.state" no "$([ -e "$STORE/calls.state" ] && echo yes || echo no)"
restart sipauthd2.log
assert_match "the call is restored from the journal" "event=calls_restored count=1 refused=0 from=journal" \
	"$(cat "$T/sipauthd2.log")"
wait "$call"; assert_eq "the PBX's BYE after the crash is answered (200, not 481)" 0 $?
wait "$gw"; assert_eq "the gateway got the BYE through the restarted daemon" 0 $?
assert_nomatch "no 481 for the BYE" "SIP/2.0 481" "$(cat "$T/call1.msg")"

# ---- a call ended before the crash stays ended; one up is revoked after the restart ----
bg_sipp gw2 -sf "$SIPP_DIR/gateway_uas.xml" -i 127.0.0.2 -p "$GW_PORT" -m 1; gw=$!
sleep 0.3
bg_sipp call2 -sf "$SIPP_DIR/pbx_call.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.1 -p "$(free_port)" -s 15550000002 $PBX -d 30000 -m 1
call=$!
wait_for grep -q "event=call_start" "$T/sipauthd2.log" || fail "the second call did not start"
wait_for journal_has 2
assert_eq "the journal has the ended call's line, its end, and the new call" "2 1" \
	"$(journaled) $(cat "$STORE"/calls.journal.* | grep -c '"end":')"
CID2=$(sed -n 's/^Call-ID: *//p' "$T/call2.msg" | head -1 | tr -d '\r')
LINE2=$(grep -h "\"call_id\":\"$CID2\"" "$STORE"/calls.journal.*)
crash
restart sipauthd3.log
assert_match "only the call still up is restored" "event=calls_restored count=1 refused=0 from=journal" \
	"$(cat "$T/sipauthd3.log")"
"$SIPAUTHCTL" --store "$STORE" credential delete --trunk "$TRUNK" --id "$CRED"
wait "$gw"; assert_eq "the credential deleted after the restart: the gateway got a BYE" 0 $?
wait_for grep -q "event=credential_revoked cred=$CRED calls_ended=1" "$T/sipauthd3.log"
assert_eq "the restored call was ended by the revocation" 0 $?
cseq_of() { sed -n "/^$1 /,/^\$/p" "$T/gw2.msg" | sed -n "s/^CSeq: *\([0-9]*\) $1.*/\1/p" | head -1; }
invite_cseq=$(cseq_of INVITE)
assert_eq "the BYE's CSeq is the INVITE's ($invite_cseq) + 1000 + 1: above what the caller may have sent since" \
	$((invite_cseq + 1001)) "$(cseq_of BYE)"
kill "$call" 2>/dev/null

# ---- journals it cannot read: a line cut by the crash is dropped, another version is refused ----
crash
rm -f "$STORE"/calls.journal.*
{
	echo '{"kind":"sipauthd-calls-journal","version":2}'
	echo "$LINE2"
	printf '%s' "$(echo "$LINE2" | cut -c1-60)"   # the crash came in the middle of the next line
} >"$STORE/calls.journal.0"
restart sipauthd4.log
assert_match "the whole line is restored, the cut one refused" "event=calls_restored count=1 refused=1 from=journal" \
	"$(cat "$T/sipauthd4.log")"
wait_for grep -q "event=credential_revoked cred=$CRED calls_ended=1" "$T/sipauthd4.log"
assert_eq "a call restored for a credential deleted while the daemon was down is ended at once" 0 $?
crash
rm -f "$STORE"/calls.journal.*
printf '{"kind":"sipauthd-calls-journal","version":3}\n' >"$STORE/calls.journal.0"
restart sipauthd5.log
assert_match "a journal of another version is refused with one log line" \
	"event=calls_not_restored path=$STORE/calls.journal.0 reason=\"not a version 2 calls journal\"" \
	"$(cat "$T/sipauthd5.log")"
assert_eq "nothing was restored" 0 "$(grep -c 'event=calls_restored' "$T/sipauthd5.log")"

# ---- a call whose From is not UTF-8 (a Latin-1 display name) has no line; the stop saves the rest ----
printf '%s\n' "$SIP_PASS" | "$SIPAUTHCTL" --store "$STORE" credential create --trunk "$TRUNK" --username latin \
	--password-stdin >/dev/null || fail "a second credential"
bg_sipp gw3 -sf "$SIPP_DIR/gateway_uas.xml" -i 127.0.0.2 -p "$GW_PORT" -m 1; gw=$!
sleep 0.3
spawn "$T/latin.json" $SIPCLIENT invite --server "127.0.0.1:$SIP_PORT" --host "$TRUNK_HOST" --user latin \
	--password "$SIP_PASS" --algorithms MD5 --display-name 'Caf\xe9' --hold 20
latin=$!
wait_for grep -q "event=call_start" "$T/sipauthd5.log" || fail "the Latin-1 call did not start"
assert_eq "the call with a Latin-1 name is up, not journaled" 0 "$(cat "$STORE"/calls.journal.* | grep -c '"cred_id"')"
kill -TERM "$SIPAUTHD_PID"
wait "$SIPAUTHD_PID"
assert_eq "a stop with it: exit status 0" 0 $?
assert_match "the stop says it could not save that call" 'event=calls_unsaved count=1 reason="not UTF-8"' \
	"$(cat "$T/sipauthd5.log")"
assert_match "... and saves the others (none)" "event=calls_saved count=0" "$(cat "$T/sipauthd5.log")"
assert_eq "a clean stop then leaves calls.state and no journal" "yes 0" \
	"$([ -e "$STORE/calls.state" ] && echo yes || echo no) $(ls "$STORE" | grep -c '^calls.journal')"

# ---- a journal it cannot write: one log line, and calls go on; a rewrite's file a crash left goes ----
kill "$gw" "$latin" 2>/dev/null   # the Latin-1 call's ends: the gateway's port is wanted again
wait "$gw" "$latin" 2>/dev/null
echo '{"kind":"sipauthd-calls-journal","version":2}' >"$STORE/calls.journal.7.tmp"
for w in 0 1 2 3; do   # each worker's journal is written there first: a folder cannot be
	mkdir "$STORE/calls.journal.$w.tmp"
done
restart sipauthd6.log
assert_eq "a rewrite's file a crash left behind is removed at start" no \
	"$([ -e "$STORE/calls.journal.7.tmp" ] && echo yes || echo no)"
workers=$(sed -n 's/.*event=workers_started workers=\([0-9]*\).*/\1/p' "$T/sipauthd6.log")
workers=${workers:-1}   # one worker logs no workers_started
assert_eq "no worker's journal can be written ($workers workers): one log line each, that says why" "$workers" \
	"$(grep -c "event=calls_journal_failed path=$STORE/calls.journal.[0-9] error=\"Is a directory\"" "$T/sipauthd6.log")"
bg_sipp gw4 -sf "$SIPP_DIR/gateway_uas.xml" -i 127.0.0.2 -p "$GW_PORT" -m 1; gw=$!
sleep 0.3
bg_sipp call4 -sf "$SIPP_DIR/pbx_call.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.1 -p "$(free_port)" -s 15550000004 \
	-au latin -ap "$SIP_PASS" -key trunk_host "$TRUNK_HOST" -d 500 -m 1   # the first credential is deleted
wait $!; assert_eq "a call still goes through, set up and ended" 0 $?
wait "$gw"; assert_eq "... and the gateway saw it answered and ended" 0 $?
assert_eq "no further log line for the journals (tried again after many calls, not at each)" "$workers" \
	"$(grep -c "event=calls_journal_failed" "$T/sipauthd6.log")"
kill -TERM "$SIPAUTHD_PID"
wait "$SIPAUTHD_PID"
assert_eq "the daemon stops cleanly: exit status 0" 0 $?
rmdir "$STORE"/calls.journal.?.tmp

# ---- a PBX on TCP, its connection gone with a clean restart: reached where its Contact listens ----
# It calls out from an ephemeral port, its Contact naming the port it listens on (a sipp there)
# a credential for $SIP_USER again ($CRED)
new_cred() {
	CRED=$(printf '%s\n' "$SIP_PASS" | "$SIPAUTHCTL" --store "$STORE" credential create --trunk "$TRUNK" \
		--username "$SIP_USER" --password-stdin | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
}
# tcp_call NAME: the PBX's call over TCP from an ephemeral port, its Contact at $LISTEN ($tcpcall)
tcp_call() {
	spawn "$T/$1.json" $SIPCLIENT invite --server "127.0.0.1:$SIP_PORT" --transport tcp --host "$TRUNK_HOST" \
		--user "$SIP_USER" --password "$SIP_PASS" --algorithms MD5 \
		--contact "sip:$SIP_USER@127.0.0.1:$LISTEN;transport=tcp" --hold 20
	tcpcall=$!
}
new_cred
restart sipauthd7.log
LISTEN=$(free_port 127.0.0.1)
bg_sipp listen7 -sf "$SIPP_DIR/pbx_listens_bye.xml" -t t1 -i 127.0.0.1 -p "$LISTEN" -m 1; listen=$!
bg_sipp gw7 -sf "$SIPP_DIR/gateway_uas.xml" -i 127.0.0.2 -p "$GW_PORT" -m 1; gw=$!
sleep 0.3
tcp_call tcpcall
wait_for grep -q "event=call_start" "$T/sipauthd7.log" || fail "the TCP call did not start"
stop "$SIPAUTHD_PID"
restart sipauthd8.log
assert_match "the TCP call is back after a clean restart" "event=calls_restored count=1 refused=0 from=calls.state" \
	"$(cat "$T/sipauthd8.log")"
"$SIPAUTHCTL" --store "$STORE" credential delete --trunk "$TRUNK" --id "$CRED"
wait "$listen"; assert_eq "revoked: the BYE reached the PBX where its Contact listens (its connection was gone)" 0 $?
wait "$gw"; assert_eq "... and the gateway" 0 $?
kill "$tcpcall" 2>/dev/null
# the gateway hangs up a call whose PBX end's connection went with a restart: the BYE too
bg_sipp listen9 -sf "$SIPP_DIR/pbx_listens_bye.xml" -t t1 -i 127.0.0.1 -p "$LISTEN" -m 1; listen=$!
bg_sipp gw9 -sf "$SIPP_DIR/gateway_uas_bye_later.xml" -i 127.0.0.2 -p "$GW_PORT" -m 1 -d 4000; gw=$!
sleep 0.3
new_cred
tcp_call tcpcall9
wait_for grep -q "event=call_start" "$T/sipauthd8.log" || fail "the second TCP call did not start"
stop "$SIPAUTHD_PID"
restart sipauthd9.log
wait "$gw"; assert_eq "the gateway's BYE after the restart is answered (by the PBX, where its Contact listens)" 0 $?
wait "$listen"; assert_eq "... the PBX got it" 0 $?
assert_match "... and sipauthd says where it sent it" "event=call_end_dialed call_id=\"[^\"]*\" to=tcp:127.0.0.1:$LISTEN" \
	"$(cat "$T/sipauthd9.log")"
kill "$tcpcall" 2>/dev/null
"$SIPAUTHCTL" --store "$STORE" credential delete --trunk "$TRUNK" --id "$CRED"

# the gateway's call to a PBX registered over TCP whose connection closed: to where it listens
new_cred
sipc register --transport tcp --host "$TRUNK_HOST" --user "$SIP_USER" --password "$SIP_PASS" --algorithms MD5 \
	--contact "sip:$SIP_USER@127.0.0.1:$LISTEN;transport=tcp" --expires 300 >"$T/tcpreg.json"
assert_eq "the PBX registers over TCP (its connection closes after), Contact at the port it listens on" 200 \
	"$(json_get 'final.get("final_status")' <"$T/tcpreg.json")"
bg_sipp pbx8 -sf "$SIPP_DIR/gateway_uas.xml" -t t1 -i 127.0.0.1 -p "$LISTEN" -m 1; pbx=$!
sleep 0.3
run_sipp inbound8 -m 1 -sf "$SIPP_DIR/gateway_call.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.2 -p "$(free_port 127.0.0.2)" \
	-s "$SIP_USER" -key trunk_host "$TRUNK_HOST"
assert_eq "the gateway's call reaches the PBX where its Contact listens (it was 480: no open connection)" 0 $?
wait "$pbx"; assert_eq "... the PBX took the call and its BYE" 0 $?
stop "$SIPAUTHD_PID"
finish
