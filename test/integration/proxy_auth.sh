#!/bin/sh
# proxy_auth.sh: digest authentication and the registrar, end to end, with the project's own
# client (test/sipclient.py) against the real daemon: the SHA-256/MD5 challenge pair and the
# RFC 8760 choice, MD5 only, SHA-512-256, both trunk host forms, identical answers for a wrong
# password / unknown user / unknown trunk, stale nonces, replayed and reused nonce counts, a
# nonce answered with another algorithm, RFC 2069 and auth-int answers, bindings (Expires 0,
# `*`, 423, max_expires, max_contacts, refresh, TCP), and no secret in the log.
. "$top_srcdir/test/lib.sh"
need python3
setup_store || { fail "store setup"; finish; }
start_sipauthd "SHA-256, MD5" || { fail "sipauthd did not start"; finish; }

REALM="trunk-$TRUNK.sip.tryvox.io"
DNS_HOST="trunk-$(printf '%s' "$TRUNK" | tr _ -).sip.tryvox.io"
UPPER_HOST=$(printf '%s' "$TRUNK_HOST" | tr a-z A-Z)
BAD_TRUNK=trunk_doesnotexist0
BAD_HOST="trunk-$BAD_TRUNK.sip.tryvox.io"
AUTH="--host $TRUNK_HOST --user $SIP_USER --password $SIP_PASS"

# q FILE EXPR: a python expression over one client run's JSON lines (see json_get in lib.sh)
q() { json_get "$2" <"$1"; }
log() { cat "$T/sipauthd.log"; }
# reg NAME ARGS...: sipclient register, its JSON lines in $T/NAME.json
reg() { n=$1; shift; sipc register "$@" >"$T/$n.json" 2>"$T/$n.err"; }

# --- REGISTER, SHA-256 chosen from the `SHA-256, MD5` challenge pair
reg sha256 $AUTH --expires 300
f=$T/sha256.json
assert_eq "SHA-256: exchange is 401 then 200" "['REGISTER 401', 'REGISTER 200']" "$(q "$f" 'final["finals"]')"
assert_eq "SHA-256: two WWW-Authenticate headers" 2 "$(q "$f" 'len(resp[0]["headers"]["www-authenticate"])')"
assert_eq "SHA-256: no Proxy-Authenticate in a 401" False "$(q "$f" '"proxy-authenticate" in resp[0]["headers"]')"
assert_eq "SHA-256: challenges in order SHA-256, MD5" "['SHA-256', 'MD5']" "$(q "$f" 'resp[0]["challenge_algorithms"]')"
assert_eq "SHA-256: both challenges qop=\"auth\"" "['auth', 'auth']" "$(q "$f" '[c.get("qop") for c in resp[0]["challenges"]]')"
assert_eq "SHA-256: realm is the literal trunk host" "['$REALM', '$REALM']" "$(q "$f" '[c.get("realm") for c in resp[0]["challenges"]]')"
assert_eq "SHA-256: the two nonces differ (one per algorithm)" True "$(q "$f" 'resp[0]["challenges"][0]["nonce"] != resp[0]["challenges"][1]["nonce"]')"
assert_eq "SHA-256: no stale on a first challenge" "[None, None]" "$(q "$f" '[c.get("stale") for c in resp[0]["challenges"]]')"
assert_eq "SHA-256: the client chose SHA-256" SHA-256 "$(q "$f" 'resp[0]["chosen_algorithm"]')"
assert_match "SHA-256: the answer says algorithm=SHA-256, qop=auth, nc=00000001" \
	'algorithm=SHA-256, cnonce="[0-9a-f]+", qop=auth, nc=00000001$' "$(q "$f" 'sent[1]["authorization"]')"
assert_eq "SHA-256: 200 lists the contact with expires=300" \
	"True" "$(q "$f" 'any(c.endswith(";expires=300") for c in resp[1]["headers"]["contact"])')"
date=$(q "$f" 'resp[1]["headers"]["date"][0]')
assert_match "SHA-256: the 200 carries its Date (RFC 3261 §10.3)" \
	'^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} [A-Z][a-z]{2} [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT$' "$date"
assert_eq "... within 60 s of this host's clock" True "$(python3 -c 'import email.utils, sys, time
print(abs(email.utils.parsedate_to_datetime(sys.argv[1]).timestamp() - time.time()) < 60)' "$date")"
assert_match "SHA-256: the binding is logged" "event=register cred=$CRED trunk=$TRUNK src=127.0.0.1:[0-9]+ proto=udp added=1 removed=0" "$(log)"

# --- MD5 only
reg md5 $AUTH --algorithms MD5 --expires 300
f=$T/md5.json
assert_eq "MD5: exchange is 401 then 200" "['REGISTER 401', 'REGISTER 200']" "$(q "$f" 'final["finals"]')"
assert_eq "MD5: the client answered the second (MD5) challenge" MD5 "$(q "$f" 'resp[0]["chosen_algorithm"]')"
assert_match "MD5: the answer says algorithm=MD5" 'response="[0-9a-f]{32}", algorithm=MD5,' "$(q "$f" 'sent[1]["authorization"]')"

# --- both host forms, and upper case: the realm stays the literal trunk-<trunk_id>.<domain>
for form in dns upper; do
	h=$DNS_HOST; [ $form = upper ] && h=$UPPER_HOST
	reg "host_$form" --host "$h" --user "$SIP_USER" --password "$SIP_PASS" --expires 300
	f=$T/host_$form.json
	assert_eq "host $h: exchange is 401 then 200" "['REGISTER 401', 'REGISTER 200']" "$(q "$f" 'final["finals"]')"
	assert_eq "host $h: realm is the literal $REALM" "['$REALM', '$REALM']" "$(q "$f" '[c.get("realm") for c in resp[0]["challenges"]]')"
done

# --- wrong password, unknown username, unknown trunk: the same answer
# (From/To keep the same user; the digest username differs with --auth-user)
reg id_badpw $AUTH --wrong-password wrong_password_123 --trace
reg id_nouser --host "$TRUNK_HOST" --user "$SIP_USER" --auth-user no-such-user-77 --password "$SIP_PASS" --trace
reg id_notrunk --host "$BAD_HOST" --user "$SIP_USER" --password "$SIP_PASS" --trace
for n in badpw nouser notrunk; do
	assert_eq "identical answers ($n): challenged, answered, challenged again" \
		"['REGISTER 401', 'REGISTER 401']" "$(q "$T/id_$n.json" 'final["finals"]')"
done
assert_eq "unknown trunk: realm is the literal host asked for" "['$BAD_HOST', '$BAD_HOST']" \
	"$(q "$T/id_notrunk.json" '[c.get("realm") for c in resp[-1]["challenges"]]')"
# normalise what must differ (nonce values, tags, branch, ports, Call-ID, the trunk id) and
# compare the raw responses byte for byte
norm() {
	python3 - "$1" "$TRUNK" "$BAD_TRUNK" <<'PY'
import json, re, sys
path, trunk, bad = sys.argv[1:]
ev = [json.loads(l) for l in open(path) if l.startswith("{")]
for e in ev:
    if e.get("event") != "response":
        continue
    t = e["raw"].replace(trunk, "TRUNK").replace(bad, "TRUNK")
    t = re.sub(r'nonce="[^"]*"', 'nonce="N"', t)
    t = re.sub(r";tag=[^;>\s,]+", ";tag=T", t)
    t = re.sub(r"branch=[^;\s,]+", "branch=B", t)
    t = re.sub(r"(127\.0\.0\.1:|rport=)\d+", r"\g<1>P", t)
    t = re.sub(r"Call-ID: \S+", "Call-ID: C", t)
    print(t.replace("\r\n", "|"))
    print("nonce lengths", [len(c["nonce"]) for c in e["challenges"]])
PY
}
norm "$T/id_badpw.json" >"$T/id_badpw.norm"
norm "$T/id_nouser.json" >"$T/id_nouser.norm"
norm "$T/id_notrunk.json" >"$T/id_notrunk.norm"
assert_eq "unknown user answered exactly like a wrong password" "$(cat "$T/id_badpw.norm")" "$(cat "$T/id_nouser.norm")"
assert_eq "unknown trunk answered exactly like a wrong password" "$(cat "$T/id_badpw.norm")" "$(cat "$T/id_notrunk.norm")"
assert_match "wrong password logged as bad_password" "event=auth_failure reason=bad_password trunk=$TRUNK username=\"$SIP_USER\" method=REGISTER" "$(log)"
assert_match "unknown user logged as unknown_user" "event=auth_failure reason=unknown_user trunk=$TRUNK username=\"no-such-user-77\" method=REGISTER" "$(log)"
assert_match "unknown trunk logged as unknown_user" "event=auth_failure reason=unknown_user trunk=$BAD_TRUNK username=\"$SIP_USER\" method=REGISTER" "$(log)"

# --- replay: the same credentials again (same nonce, same nc) are refused
reg replay $AUTH --replay
f=$T/replay.json
assert_eq "replay: 401, 200, then the replayed answer gets 401" "['REGISTER 401', 'REGISTER 200', 'REGISTER 401']" "$(q "$f" 'final["finals"]')"
assert_eq "replay: the replay carried the accepted credentials unchanged" True "$(q "$f" 'sent[2]["authorization"] == sent[1]["authorization"]')"
assert_eq "replay: the refusal is a fresh challenge, not stale" "[None, None]" "$(q "$f" '[c.get("stale") for c in resp[2]["challenges"]]')"
assert_match "replay: logged with reason=replay" "event=auth_failure reason=replay trunk=$TRUNK username=\"$SIP_USER\" method=REGISTER" "$(log)"

# --- legitimate reuse: the same nonce with the next nc is accepted (RFC 7616 §3.4)
reg reuse $AUTH --reuse-nonce
f=$T/reuse.json
assert_eq "nonce reuse with nc+1: 401, 200, 200" "['REGISTER 401', 'REGISTER 200', 'REGISTER 200']" "$(q "$f" 'final["finals"]')"
assert_match "nonce reuse: the second answer has nc=00000002" "nc=00000002$" "$(q "$f" 'sent[2]["authorization"]')"
assert_eq "nonce reuse: same nonce both times" True \
	"$(q "$f" '__import__("re").search("nonce=\"[^\"]+\"", sent[1]["authorization"]).group(0) == __import__("re").search("nonce=\"[^\"]+\"", sent[2]["authorization"]).group(0)')"

# --- a nonce issued for SHA-256 answered with algorithm=MD5 (hashed with MD5)
reg algswap $AUTH --alg-override MD5
f=$T/algswap.json
assert_eq "SHA-256 nonce answered as MD5: refused" "['REGISTER 401', 'REGISTER 401']" "$(q "$f" 'final["finals"]')"
assert_match "SHA-256 nonce answered as MD5: it was the SHA-256 nonce" "$(q "$f" 'resp[0]["challenges"][0]["nonce"]')" "$(q "$f" 'sent[1]["authorization"]')"
assert_match "SHA-256 nonce answered as MD5: logged reason=malformed" "event=auth_failure reason=malformed trunk=$TRUNK username=\"$SIP_USER\" method=REGISTER" "$(log)"

# --- RFC 2069 (no qop) with MD5: accepted; qop=auth-int when only auth is offered: refused
reg noqop $AUTH --algorithms MD5 --qop-none
f=$T/noqop.json
assert_eq "RFC 2069 MD5 answer (no qop): 200" "['REGISTER 401', 'REGISTER 200']" "$(q "$f" 'final["finals"]')"
assert_nomatch "RFC 2069 answer carries no qop, nc or cnonce" "qop=|nc=|cnonce=" "$(q "$f" 'sent[1]["authorization"]')"
n_malformed=$(grep -c "reason=malformed" "$T/sipauthd.log")
reg authint $AUTH --qop auth-int
f=$T/authint.json
assert_eq "qop=auth-int answer to a qop=\"auth\" offer: refused with 401" "['REGISTER 401', 'REGISTER 401']" "$(q "$f" 'final["finals"]')"
assert_match "qop=auth-int answer sent as such" "qop=auth-int, nc=00000001$" "$(q "$f" 'sent[1]["authorization"]')"
assert_eq "qop=auth-int refusal logged as malformed" $((n_malformed + 1)) "$(grep -c "reason=malformed" "$T/sipauthd.log")"

# --- INVITE is challenged with 407 Proxy-Authenticate (no answer given: no gateway needed)
sipc invite --host "$TRUNK_HOST" --user "$SIP_USER" >"$T/invite.json" 2>&1
f=$T/invite.json
assert_eq "INVITE: 407" 407 "$(q "$f" 'final["final_status"]')"
assert_eq "INVITE: two Proxy-Authenticate, SHA-256 then MD5" "['SHA-256', 'MD5']" "$(q "$f" 'resp[0]["challenge_algorithms"]')"
assert_eq "INVITE: no WWW-Authenticate in a 407" False "$(q "$f" '"www-authenticate" in resp[0]["headers"]')"
assert_eq "INVITE: realm and qop" "[('$REALM', 'auth'), ('$REALM', 'auth')]" "$(q "$f" '[(c.get("realm"), c.get("qop")) for c in resp[0]["challenges"]]')"
assert_eq "INVITE: the ACK for the 407 was sent" ACK "$(q "$f" 'sent[-1]["method"]')"

# --- registrar: Expires 0 removes one binding; refresh keeps one; TCP binding
P1=$(free_port 127.0.0.1)
C1="<sip:$SIP_USER@127.0.0.1:$P1>"
reg refresh1 $AUTH --local-port "$P1" --expires 300
reg refresh2 $AUTH --local-port "$P1" --expires 600
assert_eq "refresh: both REGISTERs 200" "200 200" "$(q "$T/refresh1.json" 'final["final_status"]') $(q "$T/refresh2.json" 'final["final_status"]')"
assert_eq "refresh: the contact is listed once, with the new expiry" "['$C1;expires=600']" \
	"$(q "$T/refresh2.json" '[c for c in resp[-1]["headers"]["contact"] if c.startswith("'"$C1"'")]')"
assert_eq "refresh: one binding added for that source, none for the refresh" 1 "$(grep -c "event=register .* src=127.0.0.1:$P1 proto=udp added=1" "$T/sipauthd.log")"
reg unreg $AUTH --local-port "$P1" --expires 0
f=$T/unreg.json
assert_eq "Expires: 0: 200" 200 "$(q "$f" 'final["final_status"]')"
assert_eq "Expires: 0: the 200 no longer lists the contact" "[]" \
	"$(q "$f" '[c for c in resp[-1]["headers"].get("contact", []) if c.startswith("'"$C1"'")]')"
assert_match "Expires: 0: the removal is logged" "event=register cred=$CRED trunk=$TRUNK src=127.0.0.1:$P1 proto=udp added=0 removed=1" "$(log)"

# Expires below min_expires (60): 423 with Min-Expires
reg brief $AUTH --expires 30
f=$T/brief.json
assert_eq "Expires: 30: 423" 423 "$(q "$f" 'final["final_status"]')"
assert_eq "Expires: 30: Min-Expires: 60" "['60']" "$(q "$f" 'resp[-1]["headers"].get("min-expires")')"

# Expires above max_expires (3600): capped
P2=$(free_port 127.0.0.1)
reg capped $AUTH --local-port "$P2" --expires 999999
assert_eq "Expires: 999999: capped to 3600 in the 200" "['<sip:$SIP_USER@127.0.0.1:$P2>;expires=3600']" \
	"$(q "$T/capped.json" '[c for c in resp[-1]["headers"]["contact"] if c.startswith("<sip:'"$SIP_USER@127.0.0.1:$P2"'>")]')"

# over TCP: the binding's transport is tcp
P3=$(free_port 127.0.0.1)
reg tcp $AUTH --transport tcp --local-port "$P3" --expires 300
f=$T/tcp.json
assert_eq "TCP REGISTER: 401 then 200" "['REGISTER 401', 'REGISTER 200']" "$(q "$f" 'final["finals"]')"
assert_eq "TCP REGISTER: 200 lists the tcp contact" "['<sip:$SIP_USER@127.0.0.1:$P3;transport=tcp>;expires=300']" \
	"$(q "$f" '[c for c in resp[-1]["headers"]["contact"] if "127.0.0.1:'"$P3"'" in c]')"
assert_match "TCP REGISTER: binding logged with proto=tcp" "event=register cred=$CRED trunk=$TRUNK src=127.0.0.1:$P3 proto=tcp added=1" "$(log)"

# Contact: * with Expires: 0 removes every binding of the credential
reg star $AUTH --contact '*' --expires 0
f=$T/star.json
assert_eq "Contact: *: 200" 200 "$(q "$f" 'final["final_status"]')"
assert_eq "Contact: *: the 200 lists no contact" "[]" "$(q "$f" 'resp[-1]["headers"].get("contact", [])')"
assert_match "Contact: *: the removal is logged" "event=register cred=$CRED trunk=$TRUNK src=127.0.0.1:[0-9]+ proto=udp added=0 removed=[1-9]" "$(log)"
reg star_bad $AUTH --contact '*' --expires 300
assert_eq "Contact: * with Expires: 300: 400" 400 "$(q "$T/star_bad.json" 'final["final_status"]')"

cp "$T/sipauthd.log" "$T/sipauthd-1.log"
stop "$SIPAUTHD_PID"

# --- second instance: SHA-512-256 offered first, a 5 s nonce TTL, at most 2 contacts
NONCE_TTL=5 start_sipauthd "SHA-512-256, SHA-256, MD5" "$(printf '[registrar]\nmax_contacts = 2')" ||
	{ fail "second sipauthd did not start"; finish; }
reg sha512 $AUTH --algorithms SHA-512-256,SHA-256,MD5 --expires 300
f=$T/sha512.json
assert_eq "SHA-512-256: challenges in order SHA-512-256, SHA-256, MD5" "['SHA-512-256', 'SHA-256', 'MD5']" "$(q "$f" 'resp[0]["challenge_algorithms"]')"
assert_eq "SHA-512-256: chosen and accepted" "SHA-512-256 ['REGISTER 401', 'REGISTER 200']" "$(q "$f" 'resp[0]["chosen_algorithm"] + " " + str(final["finals"])')"
assert_match "SHA-512-256: the answer is a 64-hex response" 'response="[0-9a-f]{64}", algorithm=SHA-512-256,' "$(q "$f" 'sent[1]["authorization"]')"
reg sha512_c256 $AUTH --expires 300
assert_eq "SHA-256-only client against SHA-512-256 first: answers the SHA-256 challenge, 200" "SHA-256 200" \
	"$(q "$T/sha512_c256.json" 'resp[0]["chosen_algorithm"] + " " + str(final["final_status"])')"

# stale nonce: answered after the 5 s TTL -> 401 stale=true, answered again -> 200
reg stale_clear $AUTH --contact '*' --expires 0   # room under max_contacts for its binding
reg stale $AUTH --stale-after 6 --timeout 3
f=$T/stale.json
assert_eq "stale: 401, 401 (stale), 200" "['REGISTER 401', 'REGISTER 401', 'REGISTER 200']" "$(q "$f" 'final["finals"]')"
assert_eq "stale: every challenge of the second 401 says stale=true" "['true', 'true', 'true']" "$(q "$f" '[c.get("stale") for c in resp[1]["challenges"]]')"
assert_eq "stale: the first 401 is not stale" "[None, None, None]" "$(q "$f" '[c.get("stale") for c in resp[0]["challenges"]]')"
assert_match "stale: logged with reason=stale_nonce" "event=auth_failure reason=stale_nonce trunk=$TRUNK username=\"$SIP_USER\" method=REGISTER" "$(log)"

# max_contacts = 2: a third contact is refused with 503, and a refused REGISTER changes nothing
reg mc_clear $AUTH --contact '*' --expires 0
for i in 1 2 3; do reg "mc$i" $AUTH --contact "sip:$SIP_USER@127.0.0.1:1000$i" --expires 300; done
assert_eq "max_contacts 2: two contacts 200, the third 503" "200 200 503" \
	"$(q "$T/mc1.json" 'final["final_status"]') $(q "$T/mc2.json" 'final["final_status"]') $(q "$T/mc3.json" 'final["final_status"]')"
assert_match "max_contacts 2: the second 200 lists both" \
	"^\\['<sip:$SIP_USER@127.0.0.1:10001>;expires=(300|299)', '<sip:$SIP_USER@127.0.0.1:10002>;expires=300'\\]$" \
	"$(q "$T/mc2.json" 'sorted(resp[-1]["headers"]["contact"])')"
reg mc_clear2 $AUTH --contact '*' --expires 0
reg mc_multi $AUTH --contact "<sip:$SIP_USER@127.0.0.1:10004>, <sip:$SIP_USER@127.0.0.1:10005>, <sip:$SIP_USER@127.0.0.1:10006>" --expires 300
assert_eq "max_contacts 2: one REGISTER with three contacts: 503" 503 "$(q "$T/mc_multi.json" 'final["final_status"]')"
reg mc_probe $AUTH --contact "sip:probe@127.0.0.1:9" --expires 0
assert_eq "a refused REGISTER binds none of its contacts (RFC 3261 §10.3 step 7: all or nothing)" "[]" \
	"$(q "$T/mc_probe.json" 'resp[-1]["headers"].get("contact", [])')"

# a malformed Expires counts as 3600 (RFC 3261 §20.19; Kamailio too), not a 400
reg exp_bad $AUTH --contact "<sip:$SIP_USER@127.0.0.1:10007>" --header "Expires: abc"
assert_eq "Expires: abc: 200, the contact bound for 3600 s" "200 ['<sip:$SIP_USER@127.0.0.1:10007>;expires=3600']" \
	"$(q "$T/exp_bad.json" '"%s %s" % (final["final_status"], resp[-1]["headers"].get("contact", []))')"
reg exp_bad_clear $AUTH --contact '*' --expires 0

# --- no secret in the log: not the password, not a response value
cat "$T/sipauthd-1.log" "$T/sipauthd.log" >"$T/all.log"
assert_eq "the log never contains the password" 0 "$(grep -cF "$SIP_PASS" "$T/all.log")"
assert_eq "the log never contains the wrong passwords either" 0 "$(grep -cF wrong_password_123 "$T/all.log")"
assert_eq "the log never contains response=" 0 "$(grep -c "response=" "$T/all.log")"
responses=$(cat "$T"/*.json | python3 -c '
import json, re, sys
for l in sys.stdin:
    if l.startswith("{"):
        e = json.loads(l)
        for k in ("authorization", "proxy-authorization"):
            m = re.search(r"response=\"([0-9a-f]+)\"", e.get(k, ""))
            if m: print(m.group(1))' | sort -u)
assert_match "digest responses were collected from the client runs" "[0-9a-f]{32}" "$responses"
leaked=0
for r in $responses; do grep -qF "$r" "$T/all.log" && leaked=$((leaked + 1)); done
assert_eq "no digest response value appears in the log" 0 "$leaked"
finish
