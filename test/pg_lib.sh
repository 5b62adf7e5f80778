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

pg_stop() {
	[ -n "$PG_DIR" ] && [ -f "$PG_DIR/data/postmaster.pid" ] || return 0
	as_pg pg_ctl -D "$PG_DIR/data" -m fast -w -t 20 stop >>"$PG_DIR/ctl.log" 2>&1
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
	trap 'pg_stop; cleanup' EXIT
	as_pg initdb -D "$PG_DIR/data" -A trust -U postgres --no-sync >"$PG_DIR/initdb.log" 2>&1 ||
		{ cat "$PG_DIR/initdb.log"; return 1; }
	pg_restart || { cat "$PG_DIR/ctl.log" "$PG_DIR/server.log"; return 1; }
	PG_PID=$(head -n 1 "$PG_DIR/data/postmaster.pid")
	DB="host=127.0.0.1 port=$PG_PORT user=postgres dbname=postgres connect_timeout=3"
}

# fleet_prepare: skips unless sipauthctl is built with libpq and python3 and psql are there;
# then pg_start (a failure to start ends the test)
fleet_prepare() {
	[ -x "$SIPAUTHCTL" ] || skip "$SIPAUTHCTL is not built"
	need python3
	need psql
	"$SIPAUTHCTL" --database "host=127.0.0.1 port=1 connect_timeout=1" init 2>&1 | grep -q "built without PostgreSQL" &&
		skip "sipauthctl was built without libpq: fleet mode is not built in"
	pg_start || { fail "PostgreSQL did not start"; finish; }
}

# psql_q SQL: one value from the database
psql_q() {
	psql -X -qtA "$DB" -c "$1"
}

# fleet_node NAME ADDR [AUTH_LINE]: a sipauthd node of the fleet ([cluster] node NAME, database
# $NODE_DB) with its own new store in $T/NAME-store, SIP (udp and tcp) and API on free ports of
# ADDR, gateway 127.0.0.2:$GW_PORT, MD5, domain ${NODE_DOMAIN:-sip.tryvox.io}, AUTH_LINE added
# to [auth]; log $T/NAME.log; sets NAME_PID, NAME_PORT, NAME_ADDR, NAME_API_PORT
fleet_node() {
	_port=$(free_port "$2")
	_api=$(free_port "$2")
	cat >"$T/$1.conf" <<CONF
[sip]
listen = udp:$2:$_port, tcp:$2:$_port
domain = ${NODE_DOMAIN:-sip.tryvox.io}
[upstream]
gateway = udp:127.0.0.2:$GW_PORT
trusted = 127.0.0.2/32
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
CONF
	spawn "$T/$1.log" "$SIPAUTHD" --config "$T/$1.conf"
	eval "${1}_PID=\$!; ${1}_PORT=\$_port; ${1}_ADDR=$2; ${1}_API_PORT=\$_api"
}
