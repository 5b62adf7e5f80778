# test/lib.sh: shared helpers for integration tests (sourced, POSIX sh + bash features)
# Each test: . "$top_srcdir/test/lib.sh"; it gets a private work dir ($T), pid
# tracking (every process started with spawn is killed by pid on exit), free
# ports, and assertions that print what differed. Exit 77 = skipped (automake).

set -u
: "${top_builddir:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${top_srcdir:=$top_builddir}"
SIPAUTHCTL="$top_builddir/daemon/sipauthctl"
SIPAUTHD="$top_builddir/daemon/sipauthd"
# SA_TEST_WORKERS=N: every daemon a test starts runs N SIP workers (scripts/test runs the
# suite with 2 and with 1); the wrapper execs the daemon, so its pid is the daemon's.
if [ -n "${SA_TEST_WORKERS:-}" ]; then
	SIPAUTHD="$top_srcdir/test/sipauthd-workers"
	export SA_TEST_SIPAUTHD="$top_builddir/daemon/sipauthd"
fi
SHARED="$top_srcdir/../shared"

T=$(mktemp -d "${TMPDIR:-/tmp}/sipauth-test.XXXXXX")
_pids=""
_failures=0

cleanup() {
	for p in $_pids; do kill "$p" 2>/dev/null; done
	for p in $_pids; do
		for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$p" 2>/dev/null
	done
	if [ "${KEEP_TEST_DIR:-}" = "" ]; then rm -rf "$T"; else echo "kept $T"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# spawn LOGFILE CMD...: start CMD in the background, remember its pid in $!
spawn() {
	_log=$1; shift
	"$@" >"$_log" 2>&1 &
	_pids="$_pids $!"
}

# stop PID: SIGTERM, wait up to 5 s; returns the exit status
stop() {
	kill "$1" 2>/dev/null
	wait "$1" 2>/dev/null
}

skip() { echo "SKIP: $*"; exit 77; }
need() { command -v "$1" >/dev/null 2>&1 || skip "$1 is not installed"; }
need_shared() { [ -d "$SHARED/$1" ] || skip "../shared/$1 is absent (a user's clone has no ../shared)"; }

fail() { echo "FAIL: $*"; _failures=$((_failures + 1)); }
pass() { echo "ok: $*"; }

# assert_eq WHAT EXPECTED ACTUAL
assert_eq() {
	if [ "$2" = "$3" ]; then pass "$1"; else fail "$1: expected [$2] got [$3]"; fi
}
# assert_match WHAT REGEX TEXT
assert_match() {
	if printf '%s' "$3" | grep -Eq -- "$2"; then pass "$1"; else fail "$1: [$3] does not match /$2/"; fi
}
assert_nomatch() {
	if printf '%s' "$3" | grep -Eq -- "$2"; then fail "$1: [$3] matches /$2/"; else pass "$1"; fi
}

# free_port [ADDR] [udp|tcp]: a port free for both UDP and TCP on ADDR
free_port() {
	python3 - "${1:-127.0.0.1}" <<'PY'
import socket, sys, random
addr = sys.argv[1]
for _ in range(200):
    p = random.randint(20000, 60000)
    try:
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            s = socket.socket(socket.AF_INET, kind)
            s.bind((addr, p)); s.close()
    except OSError:
        continue
    print(p); break
PY
}

# wait_for CMD...: retry CMD for up to 10 s
wait_for() {
	for _ in $(seq 1 100); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
	return 1
}

# finish: exit status for automake from the assertions made
finish() {
	if [ "$_failures" -gt 0 ]; then echo "$_failures assertion(s) failed"; exit 1; fi
	exit 0
}

# ---- sipauthd fixtures ----
# setup_store [DOMAIN]: a store in $T/store with account $ACC, trunk $TRUNK,
# credential $CRED (user $SIP_USER, password $SIP_PASS); $TRUNK_HOST is the literal host.
setup_store() {
	STORE=$T/store
	"$SIPAUTHCTL" --store "$STORE" init --domain "${1:-sip.tryvox.io}" >/dev/null || return 1
	ACC=$("$SIPAUTHCTL" --store "$STORE" account create --name test) || return 1
	TRUNK=$("$SIPAUTHCTL" --store "$STORE" trunk create --account "$ACC" --name test) || return 1
	SIP_USER=pbx-prod-01
	SIP_PASS=secure_password_here_123
	CRED=$(printf '%s\n' "$SIP_PASS" | "$SIPAUTHCTL" --store "$STORE" credential create --trunk "$TRUNK" \
		--username "$SIP_USER" --password-stdin | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])') || return 1
	TRUNK_HOST="trunk-$TRUNK.${1:-sip.tryvox.io}"
}

# start_sipauthd [ALGORITHMS] [EXTRA_CONFIG_LINES]: write $T/sipauthd.conf and start the
# daemon on 127.0.0.1:$SIP_PORT (UDP and TCP) with the gateway at 127.0.0.2:$GW_PORT.
start_sipauthd() {
	SIP_PORT=$(free_port 127.0.0.1)
	GW_PORT=$(free_port 127.0.0.2)
	cat >"$T/sipauthd.conf" <<CONF
[sip]
listen = udp:127.0.0.1:$SIP_PORT, tcp:127.0.0.1:$SIP_PORT
domain = sip.tryvox.io
[upstream]
gateway = udp:127.0.0.2:$GW_PORT
trusted = 127.0.0.2/32
[auth]
algorithms = ${1:-SHA-256, MD5}
nonce_ttl = ${NONCE_TTL:-30}
[store]
path = $STORE
[abuse]
# bans are tested on their own (abuse.sh); elsewhere many failures are on purpose
max_failures = ${ABUSE_MAX_FAILURES:-0}
[log]
# per-call lines (call_start, call_end) are debug lines; tests wait for them
level = ${LOG_LEVEL:-debug}
${2:-}
CONF
	spawn "$T/sipauthd.log" "$SIPAUTHD" --config "$T/sipauthd.conf"
	SIPAUTHD_PID=$!
	wait_for grep -q "event=started" "$T/sipauthd.log" || { cat "$T/sipauthd.log"; return 1; }
}

SIPCLIENT="python3 $top_srcdir/test/sipclient.py"
SIPP_DIR="$top_srcdir/test/sipp"

# run_sipp NAME ARGS...: sipp in the foreground (at most $SIPP_TIMEOUT s, 30), its errors in
# $T/NAME.err, its messages in $T/NAME.msg, its output in $T/NAME.out; sipp's exit status
run_sipp() {
	_name=$1; shift
	timeout "${SIPP_TIMEOUT:-30}" sipp "$@" -nostdin -trace_err -error_file "$T/$_name.err" \
		-trace_msg -message_file "$T/$_name.msg" >"$T/$_name.out" 2>&1
}
# bg_sipp NAME ARGS...: the same in the background (at most $SIPP_BG_TIMEOUT s, 40); $! is its pid
bg_sipp() {
	_name=$1; shift
	spawn "$T/$_name.out" timeout "${SIPP_BG_TIMEOUT:-40}" sipp "$@" -nostdin -trace_err -error_file "$T/$_name.err" \
		-trace_msg -message_file "$T/$_name.msg"
}
# sipp_stat CSV: "successful failed" calls so far, from the file sipp's -trace_stat -stf CSV wrote
sipp_stat() {
	python3 -c 'import sys; sys.path.insert(0, sys.argv[2]); import benchlib; print(*benchlib.sippstat(sys.argv[1])[:2])' \
		"$1" "$top_srcdir/scripts/bench"
}

# sipc ARGS...: run the test client against the daemon; JSON lines on stdout
sipc() {
	sub=$1; shift
	$SIPCLIENT "$sub" --server "127.0.0.1:$SIP_PORT" "$@"
}

# json_get FIELD-EXPR: read the client's JSON lines on stdin, print a python expression over
# `final` (the done event), `resp` (list of response events) and `sent` (list of sent events)
json_get() {
	python3 -c '
import json, sys
ev = [json.loads(l) for l in sys.stdin if l.strip().startswith("{")]
final = next((e for e in ev if e.get("event") == "done"), {})
resp = [e for e in ev if e.get("event") == "response"]
sent = [e for e in ev if e.get("event") == "sent"]
print(eval(sys.argv[1]))' "$1"
}

# ---- webhooks ----
# receiver NAME [ARGS...]: test/webhook_receiver.py on a free port ($NAME_PORT, $NAME_PID), one
# JSON line per request in $T/NAME.jsonl, its secret read from $T/NAME.secret (written once the
# webhook exists); ARGS: --fail-first N, --cert/--key for HTTPS
receiver() {
	_n=$1; shift
	_p=$(free_port 127.0.0.1)
	eval "${_n}_PORT=$_p"
	: >"$T/$_n.jsonl"
	spawn "$T/$_n.out" python3 "$top_srcdir/test/webhook_receiver.py" --port "$_p" --out "$T/$_n.jsonl" \
		--secret-file "$T/$_n.secret" "$@"
	eval "${_n}_PID=$!"
	wait_for grep -q listening "$T/$_n.out" || fail "receiver $_n did not start"
}

# ---- the API's answers, checked against its OpenAPI document (daemon/openapi.json) ----
# api_record METHOD PATH STATUS BODYFILE [HEADERFILE]: keep one answer in $T/api-answers.jsonl
api_record() {
	python3 - "$@" >> "$T/api-answers.jsonl" <<'PY'
import json, re, sys
method, path, status, bodyfile = sys.argv[1:5]
ctype = ""
if len(sys.argv) > 5:
    for l in open(sys.argv[5], errors="replace"):
        m = re.match(r"(?i)content-type:\s*(.*?)\s*$", l)
        if m: ctype = m.group(1)
body = open(bodyfile, errors="replace").read() if bodyfile != "-" else ""
print(json.dumps({"method": method, "path": re.sub(r"^https?://[^/]+", "", path), "status": int(status),
                  "body": body, "content_type": ctype}))
PY
}
# openapi_check: every answer kept so far validates against the document (one assertion)
openapi_check() {
	_out=$(python3 "$top_srcdir/test/openapi_check.py" "$top_srcdir/daemon/openapi.json" "$T/api-answers.jsonl" 2>&1)
	case $? in
	0) pass "$(printf '%s' "$_out" | tail -n 1)" ;;
	77) echo "$_out" ;;
	*) fail "answers against the OpenAPI document: $_out" ;;
	esac
}
