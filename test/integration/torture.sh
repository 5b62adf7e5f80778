#!/bin/sh
# torture.sh: the RFC 4475 torture messages over UDP (and the stream-specific ones over
# TCP) get the answer an authenticating edge proxy owes them, one log line at most, and
# the daemon answers OPTIONS after every one of them.
. "$top_srcdir/test/lib.sh"
need python3
setup_store || { fail "store setup"; finish; }
LOG_LEVEL=info start_sipauthd || { fail "sipauthd did not start"; finish; }

timeout 50 python3 "$top_srcdir/test/torture.py" --server "127.0.0.1:$SIP_PORT" \
	--messages "$top_srcdir/test/rfc4475/messages" --expectations "$top_srcdir/test/rfc4475/expectations.tsv" \
	--log "$T/sipauthd.log" >"$T/torture.out" 2>&1
rc=$?
cat "$T/torture.out"
assert_eq "every torture message got the expected outcome ($(grep -c '^ok' "$T/torture.out") checks)" 0 "$rc"
kill -0 "$SIPAUTHD_PID" 2>/dev/null
assert_eq "sipauthd is still running" 0 $?
assert_nomatch "no sanitizer report in the daemon's output" "ERROR: (Address|Undefined|Leak)Sanitizer|runtime error" "$(cat "$T/sipauthd.log")"
stop "$SIPAUTHD_PID"
assert_eq "sipauthd exits cleanly on SIGTERM" 0 $?
finish
