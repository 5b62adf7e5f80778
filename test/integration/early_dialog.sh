#!/bin/sh
# early_dialog.sh: requests inside an early dialog, through the real daemon (test/early_dialog.py
# plays the PBX on 127.0.0.1 and the gateway on 127.0.0.2): a reliable 183 with early media
# (RFC 3262), the PBX's PRACK and the gateway's UPDATE (RFC 3311) along the route set, then the
# 200 and ACK, the gateway's re-INVITE putting the call on hold, the BYE. Carrier interconnects
# send their early media this way. A PRACK for an early dialog no provisional started gets 481, a
# stranger's copy of the PRACK 403, and the PRACK once the call has ended 481. Then an inbound call: the PBX's reliable 183, the gateway's PRACK.
. "$top_srcdir/test/lib.sh"
need python3
setup_store || { fail "store setup"; finish; }
start_sipauthd "MD5" || { fail "sipauthd did not start"; finish; }

python3 "$top_srcdir/test/early_dialog.py" --server "127.0.0.1:$SIP_PORT" --gateway "127.0.0.2:$GW_PORT" \
	--host "$TRUNK_HOST" --user "$SIP_USER" --password "$SIP_PASS" >"$T/early.json" 2>"$T/early.err"
assert_eq "the call with PRACK and UPDATE in its early dialog completes" 0 $?
grep -q '"event":"timeout"' "$T/early.json" && cat "$T/early.json" "$T/early.err" >&2
# side START: the line of what that side received, whose start line begins with START
got() { grep "\"side\":\"$1\",\"start\":\"$2" "$T/early.json" | head -1; }
assert_match "the PBX gets the 183 with Require: 100rel and RSeq" '"require":\["100rel"\].*"rseq":\["1"\]' \
	"$(got pbx 'SIP/2.0 183')"
assert_match "the 183 carries our Record-Route" "\"record-route\":\[\"<sip:127.0.0.1:$SIP_PORT;lr>\"\]" \
	"$(got pbx 'SIP/2.0 183')"
prack=$(got gateway 'PRACK')
assert_match "the PRACK reaches the gateway's contact" "\"start\":\"PRACK sip:gw@127.0.0.2:$GW_PORT SIP/2.0\"" "$prack"
assert_match "... with its RAck unchanged" '"rack":\["1 2 INVITE"\]' "$prack"
assert_match "... with our Via on top of the PBX's" "\"via\":\[\"SIP/2.0/UDP 127.0.0.1:$SIP_PORT;branch=z9hG4bK[^\"]*\",\"SIP/2.0/UDP 127.0.0.1:[0-9]+;branch=" "$prack"
assert_nomatch "... without our Route" '"route":' "$prack"
assert_match "a PRACK naming an early dialog no provisional started gets 481" \
	'"start":"SIP/2.0 481 Call/Transaction Does Not Exist".*"cseq":\["9 PRACK"\]' \
	"$(grep '"side":"pbx"' "$T/early.json" | grep '"9 PRACK"')"
assert_match "... logged" 'event=reject status=481 reason="no such call" method=PRACK' "$(cat "$T/sipauthd.log")"
assert_match "a stranger's copy of the PRACK is refused" '"start":"SIP/2.0 403 Forbidden"' "$(got stranger 'SIP/2.0')"
assert_match "... and the refusal logged with its reason" \
	'event=reject status=403 reason="in-dialog request not from an end of the call" method=PRACK src=127.0.0.3:' \
	"$(cat "$T/sipauthd.log")"
assert_eq "... and the gateway gets only the PBX's" 1 "$(grep -c '"side":"gateway","start":"PRACK' "$T/early.json")"
assert_match "the PBX gets the 200 for its PRACK" '"start":"SIP/2.0 200 OK".*"cseq":\["3 PRACK"\]' \
	"$(grep '"side":"pbx"' "$T/early.json" | grep '"3 PRACK"')"
update=$(got pbx 'UPDATE')
assert_match "the gateway's UPDATE reaches the PBX's contact" '"start":"UPDATE sip:pbx@127.0.0.1:[0-9]+ SIP/2.0"' "$update"
assert_nomatch "... without our Route" '"route":' "$update"
assert_match "the gateway gets the 200 for its UPDATE" '"cseq":\["1 UPDATE"\]' "$(got gateway 'SIP/2.0 200')"
assert_match "the gateway's re-INVITE (hold) reaches the PBX's contact" \
	'"start":"INVITE sip:pbx@127.0.0.1:[0-9]+ SIP/2.0".*"cseq":\["2 INVITE"\]' "$(got pbx 'INVITE')"
assert_match "... its 200 reaches the gateway" '"start":"SIP/2.0 200 OK".*"cseq":\["2 INVITE"\]' \
	"$(grep '"side":"gateway"' "$T/early.json" | grep '"2 INVITE"' | grep '"start":"SIP/2.0 200')"
assert_match "... and the gateway's ACK the PBX" '"start":"ACK sip:pbx@127.0.0.1:[0-9]+ SIP/2.0".*"cseq":\["2 ACK"\]' \
	"$(got pbx 'ACK')"
assert_match "the BYE reaches the gateway" '"cseq":\["4 BYE"\]' "$(got gateway 'BYE')"
assert_match "a PRACK after the call gets 481" '"start":"SIP/2.0 481 Call/Transaction Does Not Exist".*"cseq":\["5 PRACK"\]' \
	"$(grep '"side":"pbx"' "$T/early.json" | grep '"5 PRACK"')"

# --- inbound: the gateway calls the registered PBX, which answers with a reliable 183
python3 "$top_srcdir/test/early_dialog.py" --inbound --server "127.0.0.1:$SIP_PORT" --gateway "127.0.0.2:$GW_PORT" \
	--host "$TRUNK_HOST" --user "$SIP_USER" --password "$SIP_PASS" >"$T/inbound.json" 2>"$T/inbound.err"
assert_eq "an inbound call with a reliable 183 from the PBX and the gateway's PRACK completes" 0 $?
grep -q '"event":"timeout"' "$T/inbound.json" && cat "$T/inbound.json" "$T/inbound.err" >&2
inprack=$(grep '"side":"pbx","start":"PRACK' "$T/inbound.json" | head -1)
assert_match "the gateway's PRACK reaches the contact of the PBX's 183" '"start":"PRACK sip:pbx@127.0.0.1:[0-9]+ SIP/2.0"' "$inprack"
assert_match "... with its RAck unchanged" '"rack":\["1 1 INVITE"\]' "$inprack"
assert_match "the gateway gets the 200 for its PRACK" '"start":"SIP/2.0 200 OK".*"cseq":\["2 PRACK"\]' \
	"$(grep '"side":"gateway"' "$T/inbound.json" | grep '"2 PRACK"')"

# --- TCP: the PBX's connection closes after the reliable 183; the PRACK comes on a new one
python3 "$top_srcdir/test/early_dialog.py" --tcp-reconnect --server "127.0.0.1:$SIP_PORT" --gateway "127.0.0.2:$GW_PORT" \
	--host "$TRUNK_HOST" --user "$SIP_USER" --password "$SIP_PASS" >"$T/tcp.json" 2>"$T/tcp.err"
assert_eq "a TCP call whose PRACK comes on a new connection completes" 0 $?
grep -q '"event":"timeout"' "$T/tcp.json" && cat "$T/tcp.json" "$T/tcp.err" >&2
old=$(python3 -c 'import json,sys
print(next(json.loads(l)["old"] for l in open(sys.argv[1]) if "reconnect" in l))' "$T/tcp.json" 2>/dev/null)
# conn START: the connection (local port) on which the PBX got the first message starting with START
conn() { grep "\"side\":\"pbx\"" "$T/tcp.json" | grep "$1" | head -1 | sed 's/.*"conn":\([0-9]*\).*/\1/'; }
assert_eq "the 183 came on the first connection" "$old" "$(conn '"SIP/2.0 183')"
new200=$(grep '"side":"pbx"' "$T/tcp.json" | grep '"2 INVITE"' | grep '"start":"SIP/2.0 200')
assert_match "the INVITE's 200 came on the new connection" "\"conn\":$(conn '"3 PRACK"')," "$new200"
assert_nomatch "... not on the first" "\"conn\":$old," "$new200"
assert_match "... and the PBX's BYE on it reached the gateway" '"start":"BYE sip:gw@127.0.0.2' \
	"$(grep '"side":"gateway","start":"BYE' "$T/tcp.json")"
finish
