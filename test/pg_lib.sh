# test/pg_lib.sh: a real PostgreSQL 15 for the fleet tests (sourced after test/lib.sh).
# pg_start makes a cluster in $T/pg owned by the postgres user (initdb refuses root), on a free
# loopback port, and sets $DB (a libpq connection string); the EXIT trap stops it (pg_ctl, by the
# pid file) before lib.sh removes $T. Without postgresql-15 the test is skipped, visibly.

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_DIR=

# as_pg PROGRAM ARGS...: a PostgreSQL program as the postgres user
as_pg() {
	_p=$1; shift
	if [ "$(id -un)" = postgres ]; then "$PG_BIN/$_p" "$@"; else runuser -u postgres -- "$PG_BIN/$_p" "$@"; fi
}

# pg_stop [DATADIR]: stops the primary (or the cluster in DATADIR), by its pid file
pg_stop() {
	_d=${1:-$PG_DIR/data}
	[ -n "$PG_DIR" ] && [ -f "$_d/postmaster.pid" ] || return 0
	as_pg pg_ctl -D "$_d" -m fast -w -t 20 stop >>"$PG_DIR/ctl.log" 2>&1
}

# pg_restart: start the stopped cluster again on the same port
pg_restart() {
	as_pg pg_ctl -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 30 \
		-o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off" start >>"$PG_DIR/ctl.log" 2>&1
}

pg_start() {
	[ -x "$PG_BIN/initdb" ] || skip "postgresql-15 is not installed (Debian: apt-get install postgresql-15)"
	id postgres >/dev/null 2>&1 || skip "there is no postgres user to run PostgreSQL as"
	[ "$(id -u)" -eq 0 ] || [ "$(id -un)" = postgres ] || skip "PostgreSQL is started as the postgres user: run as root"
	chmod 711 "$T"
	PG_DIR=$T/pg
	mkdir -p "$PG_DIR" && chown postgres "$PG_DIR"
	PG_PORT=$(free_port 127.0.0.1)
	trap 'pg_stop; pg_stop "$PG_DIR/standby"; cleanup' EXIT
	as_pg initdb -D "$PG_DIR/data" -A trust -U postgres --no-sync >"$PG_DIR/initdb.log" 2>&1 ||
		{ cat "$PG_DIR/initdb.log"; return 1; }
	pg_restart || { cat "$PG_DIR/ctl.log" "$PG_DIR/server.log"; return 1; }
	PG_PID=$(head -n 1 "$PG_DIR/data/postmaster.pid")
	DB="host=127.0.0.1 port=$PG_PORT user=postgres dbname=postgres connect_timeout=3"
}

# psql_q SQL: one value from the database
psql_q() {
	psql -X -qtA "$DB" -c "$1"
}

# pg_standby_start: a streaming standby of the primary (pg_basebackup -R) in $PG_DIR/standby on
# another free loopback port, $PG_SB_PORT; returns once it streams. The EXIT trap stops it too.
pg_standby_start() {
	PG_SB_PORT=$(free_port 127.0.0.1)
	as_pg pg_basebackup -h 127.0.0.1 -p "$PG_PORT" -U postgres -D "$PG_DIR/standby" -R -X stream -c fast --no-sync \
		>>"$PG_DIR/ctl.log" 2>&1 || { cat "$PG_DIR/ctl.log"; return 1; }
	as_pg pg_ctl -D "$PG_DIR/standby" -l "$PG_DIR/standby.log" -w -t 30 \
		-o "-p $PG_SB_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off" start >>"$PG_DIR/ctl.log" 2>&1 ||
		{ cat "$PG_DIR/ctl.log" "$PG_DIR/standby.log"; return 1; }
	wait_for sh -c "[ \"\$(psql -X -qtA 'host=127.0.0.1 port=$PG_PORT user=postgres dbname=postgres' \
		-c \"SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'\")\" = 1 ]"
}

# pg_standby_caught_up: the standby has replayed everything the primary has written so far
pg_standby_caught_up() {
	_lsn=$(psql -X -qtA "host=127.0.0.1 port=$PG_PORT user=postgres dbname=postgres" -c "SELECT pg_current_wal_lsn()")
	wait_for sh -c "[ \"\$(psql -X -qtA 'host=127.0.0.1 port=$PG_SB_PORT user=postgres dbname=postgres' \
		-c \"SELECT pg_last_wal_replay_lsn() >= '$_lsn'\")\" = t ]"
}

# pg_promote: the standby becomes a primary (pg_ctl promote waits until it accepts writes)
pg_promote() {
	as_pg pg_ctl -D "$PG_DIR/standby" -w -t 30 promote >>"$PG_DIR/ctl.log" 2>&1
}

# ---- a fleet on that database ----
# fleet_need: skips (visibly) without sipauthctl, the tools the fleet tests use, or a build with libpq
fleet_need() {
	[ -x "$SIPAUTHCTL" ] || skip "$SIPAUTHCTL is not built"
	need python3
	need psql
	need flock
	"$SIPAUTHCTL" --database "host=127.0.0.1 port=1 connect_timeout=1" init 2>&1 | grep -q "built without PostgreSQL" &&
		skip "sipauthctl was built without libpq: fleet mode is not built in"
}

# fleet_prepare: fleet_need, then pg_start (a failure to start ends the test)
fleet_prepare() {
	fleet_need
	pg_start || { fail "PostgreSQL did not start"; finish; }
}

# fleet_db_setup: database "fleet" initialised for sip.tryvox.io with account $ACC, trunk $TRUNK
# ($TRUNK_HOST), API key $KEY, and role sipauthd_node with only the rights README's "Running a
# fleet" grants; $DB (administrator) and $NODE_DB (the nodes) connect to it
fleet_db_setup() {
	psql_q "CREATE DATABASE fleet" >/dev/null || return 1
	DB="host=127.0.0.1 port=$PG_PORT user=postgres dbname=fleet connect_timeout=3"
	ctl_db init --domain sip.tryvox.io >/dev/null || return 1
	ACC=$(ctl_db account create --name fleet) || return 1
	TRUNK=$(ctl_db trunk create --account "$ACC" --name fleet) || return 1
	TRUNK_HOST="trunk-$TRUNK.sip.tryvox.io"
	KEY=$(ctl_db apikey create --account "$ACC") || return 1
	psql -X -q "$DB" -v ON_ERROR_STOP=1 >/dev/null <<'SQL' || return 1
CREATE ROLE sipauthd_node LOGIN;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO sipauthd_node;
GRANT INSERT, UPDATE ON nodes TO sipauthd_node;
GRANT INSERT, DELETE ON credentials TO sipauthd_node;
GRANT UPDATE (ha1_md5, ha1_sha256, ha1_sha512_256, password_version, rotated_at, previous_until,
  prev_ha1_md5, prev_ha1_sha256, prev_ha1_sha512_256) ON credentials TO sipauthd_node;
GRANT UPDATE (policy) ON trunks TO sipauthd_node;
GRANT USAGE ON SEQUENCE credentials_ord_seq TO sipauthd_node;
GRANT INSERT ON nonce_keys TO sipauthd_node;
GRANT INSERT, DELETE ON auth_failures TO sipauthd_node;
GRANT USAGE ON SEQUENCE auth_failures_id_seq TO sipauthd_node;
GRANT INSERT, UPDATE, DELETE ON registrations TO sipauthd_node;
GRANT INSERT, UPDATE, DELETE ON calls TO sipauthd_node;
GRANT INSERT, UPDATE, DELETE ON idempotency TO sipauthd_node;
GRANT INSERT, DELETE ON webhooks TO sipauthd_node;
GRANT INSERT, UPDATE, DELETE ON webhook_deliveries TO sipauthd_node;
GRANT USAGE ON SEQUENCE webhook_deliveries_ord_seq TO sipauthd_node;
SQL
	NODE_DB="host=127.0.0.1 port=$PG_PORT user=sipauthd_node dbname=fleet"
}
ctl_db() { "$SIPAUTHCTL" --database "$DB" "$@"; }
# cred USER: creates a credential with password $PW through the database, prints its id
cred() {
	printf '%s\n' "$PW" | ctl_db credential create --trunk "$TRUNK" --username "$1" --password-stdin |
		python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'
}

# fleet_node NAME ADDR [AUTH_LINE]: a sipauthd with its own (new) store on ADDR, a node of the
# fleet ($NODE_DB) with the gateway at ${GW_ADDR:-127.0.0.2}:$GW_PORT, AUTH_LINE added to [auth];
# $NODE_LISTEN adds listeners (tls:ADDR:PORT), $NODE_CONF lines at the end (a [tls] section);
# sets ${NAME}_PID, _ADDR, _PORT (SIP, UDP and TCP) and _API_PORT. node NAME ADDR: the same.
node() { fleet_node "$@"; }
fleet_node() {
	_port=$(free_port "$2")
	_api=$(free_port "$2")
	cat >"$T/$1.conf" <<CONF
[sip]
listen = udp:$2:$_port, tcp:$2:$_port${NODE_LISTEN:+, $NODE_LISTEN}
domain = ${NODE_DOMAIN:-sip.tryvox.io}
[upstream]
gateway = udp:${GW_ADDR:-127.0.0.2}:$GW_PORT
trusted = ${GW_ADDR:-127.0.0.2}/32
[auth]
algorithms = MD5
${3:-}
[store]
path = $T/$1-store
[abuse]
max_failures = 0
[log]
level = debug
[api]
listen = $2:$_api
[cluster]
database = $NODE_DB
node = $1
${NODE_CONF:-}
CONF
	spawn "$T/$1.log" "$SIPAUTHD" --config "$T/$1.conf"
	eval "${1}_PID=\$!; ${1}_PORT=\$_port; ${1}_ADDR=$2; ${1}_API_PORT=\$_api"
}

# hold_log_lock: a session holding change_seq's row lock for 4 s (every change waits for it);
# $LOCKER is its pid
hold_log_lock() {
	psql -X -q "$DB" -c "BEGIN; UPDATE change_seq SET last = last; SELECT pg_sleep(4); ROLLBACK;" >/dev/null 2>&1 &
	LOCKER=$!
	wait_for sh -c "[ \"\$(psql -X -qtA \"$DB\" -c \"SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(4)%' AND state = 'active' AND pid <> pg_backend_pid()\")\" = 1 ]"
}
# insert_waiting: waits until an INSERT INTO credentials waits for that lock
insert_waiting() {
	wait_for sh -c "[ \"\$(psql -X -qtA \"$DB\" -c \"SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'INSERT INTO credentials%' AND wait_event_type = 'Lock'\")\" = 1 ]"
}
# end_waiting_insert: ends the backend whose INSERT INTO credentials waits for that lock; prints 1
end_waiting_insert() {
	insert_waiting
	psql_q "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query LIKE 'INSERT INTO credentials%' AND wait_event_type = 'Lock'"
}

# nodes_connected NODE...: waits until each node has connected to the database (a node that does
# not ends the test, its log shown)
nodes_connected() {
	for _n in "$@"; do
		wait_for grep -q "event=cluster_connected" "$T/$_n.log" ||
			{ cat "$T/$_n.log"; fail "node $_n did not connect"; finish; }
	done
}

# nodes_stop NODE...: stops each node by its pid; it must exit 0, with no sanitizer report and
# no password ($PW) in its log
nodes_stop() {
	for _n in "$@"; do
		eval "stop \$${_n}_PID"
		assert_eq "node $_n stops cleanly" 0 $?
		assert_nomatch "node $_n logged no sanitizer report" "ERROR: (Address|Leak|Undefined)Sanitizer|runtime error" "$(cat "$T/$_n.log")"
		assert_nomatch "node $_n never logged a password" "$PW" "$(cat "$T/$_n.log")"
	done
}

# reg NODE USER [SRC_IP]: REGISTER with $PW at NODE; prints the final status
reg() {
	eval "_addr=\$${1}_ADDR; _port=\$${1}_PORT"
	$SIPCLIENT register --server "$_addr:$_port" --local-ip "${3:-127.0.0.1}" --host "$TRUNK_HOST" --user "$2" \
		--password "$PW" --algorithms MD5 --expires 60 --timeout 2 | json_get 'final.get("final_status")'
}
# reg_until NODE USER STATUS: REGISTER every 20 ms until STATUS (at most 3 s); prints the status
reg_until() {
	for _ in $(seq 1 60); do
		_st=$(reg "$1" "$2")
		[ "$_st" = "$3" ] && break
		sleep 0.02
	done
	echo "$_st"
}

# api NODE METHOD PATH [BODY]: prints "STATUS BODY" (body on one line); keeps the answer for
# openapi_check unless API_UNCHECKED is set (for many requests alike: checking is a python each)
api() {
	eval "_base=http://\$${1}_ADDR:\$${1}_API_PORT"
	_url="$_base/v1/account/$ACC/trunks/$TRUNK$3"
	_f=$(mktemp "$T/api.XXXXXX")   # its own files: writers run at once
	_st=$(curl -s -o "$_f.body" -D "$_f.hdr" -w '%{http_code}' -X "$2" -H "Authorization: Bearer $KEY" \
		${4:+-H 'Content-Type: application/json' --data "$4"} "$_url")
	[ -n "${API_UNCHECKED:-}" ] ||
		{ flock 9; api_record "$2" "$_url" "$_st" "$_f.body" "$_f.hdr"; } 9>"$T/api.lock"   # one line at a time
	echo "$_st $(tr -d '\n' <"$_f.body")"
}

# bye_at FILE: epoch seconds when sipp (-trace_msg) received the BYE, or "none"
bye_at() {
	python3 - "$1" <<'PY'
import re, sys, datetime
text = open(sys.argv[1], errors="replace").read()
for block in re.split(r"\n-{20,} ", text):
    head, _, rest = block.partition("\n")
    if "received" in rest.split("\n", 1)[0] and rest.split("\n\n", 1)[-1].startswith("BYE"):
        t = datetime.datetime.strptime(head.strip()[:26], "%Y-%m-%d %H:%M:%S.%f")
        print("%.3f" % t.replace(tzinfo=datetime.timezone.utc).timestamp()); break
else:
    print("none")
PY
}

# calls_through NAME USER NODE...: one call of USER held through each NODE (a sipp PBX on 127.0.0.1
# per node, $T/NAME-NODE.msg its trace) and the gateway (sipp on $GW_ADDR) answering them all; sets
# $GW_SIPP (the gateway's pid) and $PBX_SIPPS (the PBXs' pids, in NODE order). Each ends at the BYE.
calls_through() {
	_calls=$1 _user=$2; shift 2
	bg_sipp "$_calls-gw" -sf "$SIPP_DIR/gateway_uas.xml" -i "${GW_ADDR:-127.0.0.2}" -p "$GW_PORT" -m $#
	GW_SIPP=$!
	PBX_SIPPS=""
	for _n in "$@"; do
		eval "_addr=\$${_n}_ADDR; _port=\$${_n}_PORT"
		bg_sipp "$_calls-$_n" -sf "$SIPP_DIR/pbx_call_hold.xml" "$_addr:$_port" -i 127.0.0.1 -p "$(free_port)" \
			-m 1 -s "1555$_n" -au "$_user" -ap "$PW" -key trunk_host "$TRUNK_HOST"
		PBX_SIPPS="$PBX_SIPPS $!"
	done
}
