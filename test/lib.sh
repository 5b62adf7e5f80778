# test/lib.sh: shared helpers for integration tests (sourced, POSIX sh + bash features)
# Each test: . "$top_srcdir/test/lib.sh"; it gets a private work dir ($T), pid
# tracking (every process started with spawn is killed by pid on exit), free
# ports, and assertions that print what differed. Exit 77 = skipped (automake).

set -u
: "${top_builddir:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${top_srcdir:=$top_builddir}"
SIPAUTHCTL="$top_builddir/daemon/sipauthctl"
SIPAUTHD="$top_builddir/daemon/sipauthd"
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
