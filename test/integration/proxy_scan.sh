#!/bin/sh
# proxy_scan.sh: the daemon against SIPVicious (Debian package sipvicious), the scanner real
# attackers aim at SIP edges: svwar must not tell the real username from made-up ones, and svcrack
# with a dictionary lacking the password finds nothing (with it, it does: the control that shows
# svcrack really talks digest to us). See ../shared/corpora/sipvicious.md. Never pass -R.
. "$top_srcdir/test/lib.sh"
need svwar
need svcrack
setup_store || { fail "store setup"; finish; }
start_sipauthd "SHA-256, MD5" || { fail "sipauthd did not start"; finish; }

# sv SECONDS TOOL ARGS...: one SIPVicious run on loopback, interrupted (it then prints its
# results) after SECONDS, its HOME inside $T
sv() {
	secs=$1 tool=$2; shift 2
	HOME=$T timeout -s INT "$secs" "$tool" -b 127.0.0.1 -x 127.0.0.1 -P "$(free_port 127.0.0.1)" -p "$SIP_PORT" \
		--domain "$TRUNK_HOST" "$@" 127.0.0.1 2>&1
}

# --- svwar: the real username first (svwar compares each answer's status line with the one a
# random user got, and stops at the first answer it cannot classify), then made-up ones
printf '%s\n' "$SIP_USER" 100 1000 admin alice pbx-prod-02 >"$T/users.txt"
sv 8 svwar --force -d "$T/users.txt" >"$T/svwar.out"
assert_match "svwar (REGISTER) probed the real user" "From: \"$SIP_USER\"<sip:$SIP_USER@$TRUNK_HOST>" "$(cat "$T/svwar.out")"
assert_match "svwar (REGISTER) got the same status line as for a random user" "Response: 'SIP/2.0 401 Unauthorized" "$(cat "$T/svwar.out")"
assert_nomatch "svwar (REGISTER) finds no extension" "exists|Extension +\\| +Authentication" "$(cat "$T/svwar.out")"
assert_match "svwar (REGISTER) says it found nothing" "WARNING:root:found nothing" "$(cat "$T/svwar.out")"
sv 8 svwar --force -m INVITE -d "$T/users.txt" >"$T/svwar_invite.out"
assert_match "svwar (INVITE) got 407 for the real user too" "Response: 'SIP/2.0 407 Proxy Authentication Required" "$(cat "$T/svwar_invite.out")"
assert_nomatch "svwar (INVITE) finds no extension" "exists|Extension +\\| +Authentication" "$(cat "$T/svwar_invite.out")"
assert_match "svwar (INVITE) says it found nothing" "WARNING:root:found nothing" "$(cat "$T/svwar_invite.out")"
sv 8 svwar -d "$T/users.txt" >"$T/svwar_check.out"
assert_match "svwar without --force gives up: unknown users are challenged too" \
	"replied with an authentication request for an unknown extension" "$(cat "$T/svwar_check.out")"

# --- svcrack computes MD5 only and answers the first challenge it sees, so aim it at an MD5
# daemon (against `SHA-256, MD5` it cannot even form an answer)
stop "$SIPAUTHD_PID"
cp "$T/sipauthd.log" "$T/sipauthd-1.log"
start_sipauthd "MD5" || { fail "MD5 sipauthd did not start"; finish; }
printf '%s\n' 123456 password secret "$SIP_USER" letmein >"$T/passwords.txt"
sv 3 svcrack -u "$SIP_USER" -d "$T/passwords.txt" >"$T/svcrack.out"
assert_nomatch "svcrack without the password in its dictionary cracks nothing" "The password for|$SIP_PASS" "$(cat "$T/svcrack.out")"
assert_match "svcrack says it found nothing" "WARNING:root:found nothing" "$(cat "$T/svcrack.out")"
assert_eq "each of the 5 guesses was refused and logged as bad_password" 5 \
	"$(grep -c "event=auth_failure reason=bad_password trunk=$TRUNK username=\"$SIP_USER\" method=REGISTER" "$T/sipauthd.log")"
assert_eq "no guess registered anything" 0 "$(grep -c "event=register" "$T/sipauthd.log")"
printf '%s\n' 123456 "$SIP_PASS" >"$T/passwords2.txt"
sv 3 svcrack -u "$SIP_USER" -d "$T/passwords2.txt" >"$T/svcrack_control.out"
assert_match "control: with the password in its dictionary svcrack finds it (it does speak our digest)" \
	"\\| $SIP_USER +\\| $SIP_PASS +\\|" "$(cat "$T/svcrack_control.out")"

cat "$T/sipauthd-1.log" "$T/sipauthd.log" >"$T/all.log"
assert_eq "the daemon never logged the password" 0 "$(grep -cF "$SIP_PASS" "$T/all.log")"
finish
