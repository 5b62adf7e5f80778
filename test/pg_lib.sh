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

# psql_q SQL: one value from the database
psql_q() {
	psql -X -qtA "$DB" -c "$1"
}

# fleet_role: in $DB, the node role with the rights README's "Running a fleet" grants; NODE_DB is
# then the nodes' connection string (as that role)
fleet_role() {
	psql -X -q "$DB" -v ON_ERROR_STOP=1 >/dev/null <<'SQL' || return 1
CREATE ROLE sipauthd_node LOGIN;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO sipauthd_node;
GRANT INSERT, UPDATE ON nodes TO sipauthd_node;
GRANT INSERT, DELETE ON credentials TO sipauthd_node;
GRANT UPDATE (ha1_md5, ha1_sha256, ha1_sha512_256, password_version, rotated_at, previous_until,
  prev_ha1_md5, prev_ha1_sha256, prev_ha1_sha512_256) ON credentials TO sipauthd_node;
GRANT UPDATE (policy) ON trunks TO sipauthd_node;
GRANT USAGE ON SEQUENCE credentials_ord_seq TO sipauthd_node;
GRANT INSERT, UPDATE, DELETE ON registrations TO sipauthd_node;
SQL
	NODE_DB="host=127.0.0.1 port=$PG_PORT user=sipauthd_node dbname=$(psql_q 'SELECT current_database()')"
}

# fleet_node NAME ADDR: a sipauthd node of the fleet ($NODE_DB) with its own new store, SIP on
# udp and tcp ADDR:${NAME}_PORT, its API on ADDR:${NAME}_API_PORT, the gateway stand-in
# 127.0.0.2:$GW_PORT trusted, domain ${NODE_DOMAIN:-sip.tryvox.io}; its pid in ${NAME}_PID, its
# address in ${NAME}_ADDR, its log in $T/NAME.log. $NODE_LISTEN adds listeners (tls:ADDR:PORT),
# $NODE_CONF lines at the end of its configuration (a [tls] section).
fleet_node() {
	_port=$(free_port "$2")
	_api=$(free_port "$2")
	cat >"$T/$1.conf" <<CONF
[sip]
listen = udp:$2:$_port, tcp:$2:$_port${NODE_LISTEN:+, $NODE_LISTEN}
domain = ${NODE_DOMAIN:-sip.tryvox.io}
[upstream]
gateway = udp:127.0.0.2:$GW_PORT
trusted = 127.0.0.2/32
[auth]
algorithms = MD5
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

# fleet_needs: skips the test unless sipauthctl is built with libpq, python3 and psql are there
fleet_needs() {
	[ -x "$SIPAUTHCTL" ] || skip "$SIPAUTHCTL is not built"
	need python3
	need psql
	"$SIPAUTHCTL" --database "host=127.0.0.1 port=1 connect_timeout=1" init 2>&1 | grep -q "built without PostgreSQL" &&
		skip "sipauthctl was built without libpq: fleet mode is not built in"
	return 0
}

# fleet_db NAME: a new database NAME, initialised for sip.tryvox.io, with an account $ACC and its
# trunk $TRUNK ($TRUNK_HOST); $DB is then its connection string (as postgres)
fleet_db() {
	psql_q "CREATE DATABASE $1" >/dev/null
	DB="host=127.0.0.1 port=$PG_PORT user=postgres dbname=$1 connect_timeout=3"
	ctl_db init --domain sip.tryvox.io >/dev/null
	ACC=$(ctl_db account create --name fleet)
	TRUNK=$(ctl_db trunk create --account "$ACC" --name fleet)
	TRUNK_HOST="trunk-$TRUNK.sip.tryvox.io"
}
ctl_db() { "$SIPAUTHCTL" --database "$DB" "$@"; }
# cred USER: creates a credential of $TRUNK with password $PW through the database, prints its id
cred() {
	printf '%s\n' "$PW" | ctl_db credential create --trunk "$TRUNK" --username "$1" --password-stdin |
		python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'
}
