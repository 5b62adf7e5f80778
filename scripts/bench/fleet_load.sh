#!/usr/bin/env bash
# scripts/bench/fleet_load.sh: how long a fleet node takes to load the other nodes' registrations
# when it connects (daemon/cluster.c remote_load, under the lock every SIP worker reads the fleet's
# view with). A local PostgreSQL 15 with N registrations of one credential on one trunk, owned by a
# node "Z" that beats: a node A starts, connects and loads them; the time is that between its
# event=cluster_connected and event=cluster_registrations_loaded lines (their timestamps, ms).
# Then the gateway sends node A INVITEs for that trunk (scripts/bench/fleet_inbound.py): A relays
# each to Z, whose address this script answers 486 at; A's CPU per INVITE and INVITE->486 times.
#
#   sudo scripts/bench/fleet_load.sh [-n N[,N...]] [--build DIR] [--keep]
#     -n N,...     registrations to load, one run each (1000,10000,30000)
#     --build DIR  the build to measure (daemon/sipauthd, daemon/sipauthctl under DIR; default: this
#                  work tree's, which may be a sanitizer build: say which in the results)
#     --invites K  INVITEs of the inbound step per run (300)
#     --keep       keep the work directory
# Prints "N ms" and the inbound line per run. Runs as root (PostgreSQL is started as the postgres user). Uses
# test/lib.sh and test/pg_lib.sh, as test/integration/fleet_registrations.sh does.
set -uo pipefail
cd "$(dirname "$0")/../.."
COUNTS=1000,10000,30000 BUILD=$PWD INVITES=300
while [ $# -gt 0 ]; do
	case $1 in
	-n) COUNTS=$2; shift ;;
	--build) BUILD=$(cd "$2" && pwd); shift ;;
	--invites) INVITES=$2; shift ;;
	--keep) export KEEP_TEST_DIR=1 ;;
	*) echo "unknown option $1" >&2; exit 2 ;;
	esac
	shift
done
top_srcdir=$PWD top_builddir=$BUILD
. test/lib.sh
. test/pg_lib.sh
skip() { echo "fleet_load.sh: $*" >&2; exit 1; }   # a benchmark that cannot run says so and fails
pg_start || { echo "PostgreSQL did not start" >&2; exit 1; }
PW=secure_password_here_123
fleet_db_setup || { echo "the fleet database" >&2; exit 1; }
GW_PORT=$(free_port 127.0.0.2)
Z_PORT=$(free_port 127.0.0.99)
CRED=$(cred load-test) || { echo "no credential" >&2; exit 1; }
# ms SINCE-LINE UNTIL-LINE FILE: milliseconds between the first lines matching each (ISO timestamps)
ms() {
	python3 - "$@" <<'PY'
import re, sys
from datetime import datetime
a = b = None
for line in open(sys.argv[3]):
    if a is None and sys.argv[1] in line: a = line.split()[0]
    if b is None and sys.argv[2] in line: b = line.split()[0]
t = lambda s: datetime.strptime(s.rstrip("Z"), "%Y-%m-%dT%H:%M:%S.%f")
print(round((t(b) - t(a)).total_seconds() * 1000) if a and b else "missing")
PY
}
for n in ${COUNTS//,/ }; do
	now=$(date +%s)
	psql -X -q "$DB" -v ON_ERROR_STOP=1 >/dev/null <<SQL || { echo "the registrations" >&2; exit 1; }
DELETE FROM registrations;
INSERT INTO nodes (name, address, started_at, heartbeat_at, heartbeat_ms)
  VALUES ('Z', 'udp:127.0.0.99:$Z_PORT', $now, $now, $now::bigint * 1000)
  ON CONFLICT (name) DO NOTHING;
INSERT INTO registrations (credential_id, contact, node, trunk_id, source, source_port, transport, call_id, cseq,
  registered_at, updated_at, expires_at)
SELECT '$CRED', 'sip:pbx-' || i || '@192.0.2.1:5060', 'Z', '$TRUNK', '192.0.2.1', 5060, 'udp', 'load-' || i, 1,
  $now, $now + i, $now + 3600 FROM generate_series(1, $n) AS i;
SQL
	node A 127.0.0.41
	for _ in $(seq 1 1200); do grep -q "event=cluster_registrations_loaded" "$T/A.log" && break; sleep 0.1; done
	grep -q "event=cluster_registrations_loaded" "$T/A.log" ||
		{ echo "$n: node A did not load the registrations in 120 s" >&2; tail -5 "$T/A.log" >&2; stop "$A_PID"; exit 1; }
	echo "$n $(ms event=cluster_connected event=cluster_registrations_loaded "$T/A.log") ms ($(grep -o 'remote=[0-9]*' "$T/A.log" | head -1))"
	# Z beats (every 0.5 s) while the gateway calls the trunk through A
	(while :; do psql -X -q "$DB" -c "UPDATE nodes SET heartbeat_at = extract(epoch FROM now())::bigint,
		heartbeat_ms = (extract(epoch FROM now()) * 1000)::bigint WHERE name = 'Z'" >/dev/null 2>&1; sleep 0.5; done) &
	beat=$!
	wait_for grep -q "event=cluster_node_alive node=A other=Z" "$T/A.log" ||
		{ echo "$n: node A never found node Z alive" >&2; stop "$A_PID"; exit 1; }
	python3 scripts/bench/fleet_inbound.py "$A_PID" "127.0.0.41:$A_PORT" "127.0.0.2:$GW_PORT" "127.0.0.99:$Z_PORT" \
		"$TRUNK_HOST" "$INVITES"
	kill "$beat"; wait "$beat" 2>/dev/null
	stop "$A_PID"
	rm -rf "$T/A-store"
	mv "$T/A.log" "$T/A-$n.log"
done
