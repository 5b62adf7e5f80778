#!/usr/bin/env bash
# scripts/bench/fleet_revoke.sh: revocation across a fleet (issue 12): three sipauthd nodes
# (127.0.0.41-43, each with its own store) on a local PostgreSQL 15, the gateway stand-in (sipp) on
# 127.0.0.40. Each repetition: a new credential with one call held through each node (a sipp PBX
# per node on 127.0.0.1), then DELETE through one node's API (A, B, C in turn); the time from
# just before the DELETE request to the last of the three BYEs the PBXs received (sipp's
# -trace_msg timestamps). Prints every repetition, then p50/p99/max (nearest rank: over 50
# repetitions p99 is the 50th value, the max).
#
#   sudo scripts/bench/fleet_revoke.sh [-n REPS] [--build DIR] [--save] [--keep]
#     -n REPS      repetitions (50)
#     --build DIR  the build to measure (daemon/sipauthd, daemon/sipauthctl under DIR; default: this
#                  work tree's, which may be a sanitizer build: say which in the results)
#     --save       append the lines to scripts/bench/results/<date>-fleet-revoke.txt
#     --keep       keep the work directory (logs, sipp traces)
# Runs as root (PostgreSQL is started as the postgres user). Uses test/lib.sh and test/pg_lib.sh,
# the helpers of test/integration/fleet_nodes.sh, which checks the same with exact assertions.
set -uo pipefail
cd "$(dirname "$0")/../.."
REPS=50 BUILD=$PWD SAVE=0
while [ $# -gt 0 ]; do
	case $1 in
	-n) REPS=$2; shift ;;
	--build) BUILD=$(cd "$2" && pwd); shift ;;
	--save) SAVE=1 ;;
	--keep) export KEEP_TEST_DIR=1 ;;
	*) echo "unknown option $1" >&2; exit 2 ;;
	esac
	shift
done
top_srcdir=$PWD top_builddir=$BUILD
. test/lib.sh
. test/pg_lib.sh
skip() { echo "fleet_revoke.sh: $*" >&2; exit 1; }   # a benchmark that cannot run says so and fails
pg_start || { echo "PostgreSQL did not start" >&2; exit 1; }
PW=secure_password_here_123
NODES="A B C"
fleet_db_setup || { echo "the fleet database" >&2; exit 1; }
GW_ADDR=127.0.0.40
GW_PORT=$(free_port $GW_ADDR)
node A 127.0.0.41
node B 127.0.0.42
node C 127.0.0.43
for n in $NODES; do
	wait_for grep -q "event=cluster_connected" "$T/$n.log" || { cat "$T/$n.log"; exit 1; }
done
metric() {
	eval "_m=http://\$${1}_ADDR:\$${1}_API_PORT/metrics"
	curl -s "$_m" | sed -n "s/^sipauthd_$2 //p"
}
converged() { [ "$(metric "$1" cluster_applied_seq)" = "$(psql_q 'SELECT last FROM change_seq')" ]; }

# rep I VIA: one repetition; prints "I VIA MS" (the last BYE after the DELETE) or "I VIA failed: WHY"
rep() {
	local i=$1 via=$2 out cr t0 n p ok=0
	out=$(api "$via" POST /credentials "{\"username\":\"rv-$i\",\"password\":\"$PW\"}")
	cr=$(printf '%s' "${out#* }" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])') || { echo "$i $via failed: create"; return; }
	for n in $NODES; do wait_for converged "$n"; done
	calls_through "rv-$i" "rv-$i" $NODES
	for n in $NODES; do wait_for grep -q "event=call_start.*cred=$cr" "$T/$n.log"; done
	t0=$(date +%s.%N)
	api "$via" DELETE "/credentials/$cr" >/dev/null
	for p in $PBX_SIPPS; do wait "$p" && ok=$((ok + 1)); done
	wait "$GW_SIPP" || ok=-1
	[ "$ok" = 3 ] || { echo "$i $via failed: $ok of 3 PBXs got their BYE (gateway: $([ $ok -ge 0 ] && echo ok || echo not))"; return; }
	python3 -c '
import sys
t0, byes = float(sys.argv[3]), [float(b) for b in sys.argv[4:] if b != "none"]
print(sys.argv[1], sys.argv[2], "%.1f" % ((max(byes) - t0) * 1000) if len(byes) == 3 else "failed: a BYE missing in a trace")' \
		"$i" "$via" "$t0" $(for n in $NODES; do bye_at "$T/rv-$i-$n.msg"; done)
}

# the build measured: configure's options and the compiler flags
build="configure '$("$BUILD/config.status" --config 2>/dev/null)', CFLAGS $(sed -n 's/^CFLAGS = //p' "$BUILD/Makefile" 2>/dev/null)"
{
	echo "# $(date -u +%Y-%m-%dT%H:%MZ) scripts/bench/fleet_revoke.sh -n $REPS ($(nproc) cores, $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1); $(git rev-parse --short HEAD); $build; PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'); load $(cut -d" " -f1-3 /proc/loadavg))"
	echo "# repetition, DELETE through node, ms from the DELETE request to the last of the three PBXs' BYEs"
	vias=($NODES)
	for i in $(seq 1 "$REPS"); do rep "$i" "${vias[$(( (i - 1) % 3 ))]}"; done | tee "$T/reps.txt"
	python3 - "$T/reps.txt" <<'PY'
import math, sys
rows = [l.split() for l in open(sys.argv[1])]
v = sorted(float(r[2]) for r in rows if len(r) == 3)
failed = len(rows) - len(v)
rank = lambda q: v[max(0, math.ceil(q * len(v)) - 1)]
if v:
    print("revocation across 3 nodes, last BYE at the PBXs after the DELETE: p50 %.1f ms, p99 %.1f ms, max %.1f ms over %d repetitions; %d failed"
          % (rank(0.50), rank(0.99), v[-1], len(v), failed))
else:
    print("no repetition succeeded; %d failed" % failed)
PY
} | tee "$T/out.txt"
if [ "$SAVE" = 1 ]; then
	cat "$T/out.txt" >>"scripts/bench/results/$(date -u +%Y-%m-%d)-fleet-revoke.txt"
fi
for n in $NODES; do eval "stop \$${n}_PID"; done
grep -q "failed" "$T/reps.txt" && exit 1
exit 0
