/* pgstore.c: fleet mode's PostgreSQL store: the schema, sipauthctl's commands through libpq, change log rows. */
#include <errno.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "pgstore.h"

/*
 * Schema 1. Ids, names, HA1s and times are the LMDB store's (text ids made
 * by sa_store_id_make, times in seconds); the mirror takes them as they are.
 * `ord` keeps creation order for listings. change_seq has one row: its row
 * lock, taken by the trigger of the first change of a transaction, orders
 * writers, so change_log has no gaps and a reader that saw sequence N has
 * seen everything before it. at_ms is when the change was written (for the
 * feed's lag). registrations, nodes and nonce_keys are for the fleet's
 * registrations and nonces.
 */
static const char schema_v1[] =
	"CREATE TABLE schema_version (version integer NOT NULL);"
	"CREATE TABLE settings (name text PRIMARY KEY, value text NOT NULL);"
	"CREATE TABLE accounts (id text PRIMARY KEY, name text NOT NULL, created_at bigint NOT NULL);"
	"CREATE TABLE api_keys (hash bytea PRIMARY KEY CHECK (length(hash) = 32),"
	"  account_id text NOT NULL REFERENCES accounts(id), created_at bigint NOT NULL);"
	"CREATE TABLE trunks (id text PRIMARY KEY, account_id text NOT NULL REFERENCES accounts(id),"
	"  name text NOT NULL, created_at bigint NOT NULL, ord bigserial NOT NULL UNIQUE,"
	"  policy jsonb NOT NULL DEFAULT '{}');"
	"CREATE INDEX trunks_by_account ON trunks (account_id, ord);"
	"CREATE TABLE credentials (id text PRIMARY KEY, trunk_id text NOT NULL REFERENCES trunks(id),"
	"  username text NOT NULL, created_at bigint NOT NULL, ord bigserial NOT NULL UNIQUE,"
	"  ha1_md5 text NOT NULL, ha1_sha256 text NOT NULL, ha1_sha512_256 text NOT NULL,"
	/* rotation, as the LMDB store keeps it: the previous password's HA1s ("" before the first) */
	"  password_version bigint NOT NULL DEFAULT 1, rotated_at bigint NOT NULL DEFAULT 0,"
	"  previous_until bigint NOT NULL DEFAULT 0, prev_ha1_md5 text NOT NULL DEFAULT '',"
	"  prev_ha1_sha256 text NOT NULL DEFAULT '', prev_ha1_sha512_256 text NOT NULL DEFAULT '');"
	"CREATE UNIQUE INDEX credentials_username ON credentials (trunk_id, lower(username));"
	"CREATE INDEX credentials_by_trunk ON credentials (trunk_id, ord);"
	"CREATE TABLE change_seq (one boolean PRIMARY KEY DEFAULT true CHECK (one), last bigint NOT NULL);"
	"INSERT INTO change_seq VALUES (true, 0);"
	"CREATE TABLE change_log (seq bigint PRIMARY KEY, kind text NOT NULL, op text NOT NULL,"
	"  payload jsonb NOT NULL, at_ms bigint NOT NULL);"
	"CREATE TABLE nodes (name text PRIMARY KEY, address text NOT NULL, started_at bigint NOT NULL,"
	"  heartbeat_at bigint NOT NULL, applied_seq bigint NOT NULL DEFAULT 0);"
	"CREATE TABLE registrations (credential_id text NOT NULL REFERENCES credentials(id) ON DELETE CASCADE,"
	"  contact text NOT NULL, node text NOT NULL REFERENCES nodes(name), trunk_id text NOT NULL,"
	"  source text NOT NULL, source_port integer NOT NULL, transport text NOT NULL,"
	"  user_agent text NOT NULL DEFAULT '', call_id text NOT NULL, cseq bigint NOT NULL,"
	"  registered_at bigint NOT NULL, updated_at bigint NOT NULL, expires_at bigint NOT NULL,"
	"  PRIMARY KEY (credential_id, contact));"
	"CREATE INDEX registrations_by_node ON registrations (node);"
	"CREATE TABLE nonce_keys (id smallint PRIMARY KEY CHECK (id BETWEEN 1 AND 255),"
	"  secret bytea NOT NULL CHECK (length(secret) = 32), created_at bigint NOT NULL, retired_at bigint);"
	/* SECURITY DEFINER: writers need no right on change_log or change_seq,
	 * so that nobody but this trigger writes the log */
	"CREATE FUNCTION sipauthd_log_change() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER"
	"  SET search_path FROM CURRENT AS $$\n"
	"DECLARE s bigint;\n"
	"BEGIN\n"
	"  UPDATE change_seq SET last = last + 1 RETURNING last INTO s;\n"
	"  INSERT INTO change_log VALUES (s, TG_TABLE_NAME, lower(TG_OP),\n"
	"    CASE WHEN TG_OP = 'DELETE' THEN to_jsonb(OLD) ELSE to_jsonb(NEW) END,\n"
	"    (extract(epoch FROM clock_timestamp()) * 1000)::bigint);\n"
	"  PERFORM pg_notify('" SA_PG_CHANNEL "', s::text);\n"
	"  RETURN NULL;\n"
	"END $$;"
	"CREATE TRIGGER accounts_log AFTER INSERT OR UPDATE OR DELETE ON accounts"
	"  FOR EACH ROW EXECUTE FUNCTION sipauthd_log_change();"
	"CREATE TRIGGER api_keys_log AFTER INSERT OR UPDATE OR DELETE ON api_keys"
	"  FOR EACH ROW EXECUTE FUNCTION sipauthd_log_change();"
	"CREATE TRIGGER trunks_log AFTER INSERT OR UPDATE OR DELETE ON trunks"
	"  FOR EACH ROW EXECUTE FUNCTION sipauthd_log_change();"
	"CREATE TRIGGER credentials_log AFTER INSERT OR UPDATE OR DELETE ON credentials"
	"  FOR EACH ROW EXECUTE FUNCTION sipauthd_log_change();";

/*
 * Schema 2: the fleet's auth-failure log (each node's records, with its
 * name; bounded per node and trunk as the local log is, by the pushing node).
 * nonce_keys has no trigger: its secrets stay out of change_log, and nodes
 * read the keys with their heartbeat.
 */
static const char schema_v2[] =
	"CREATE TABLE auth_failures (id bigserial PRIMARY KEY, node text NOT NULL, trunk_id text NOT NULL,"
	"  at bigint NOT NULL, source text NOT NULL, source_port integer NOT NULL, transport text NOT NULL,"
	"  username text NOT NULL, reason text NOT NULL, method text NOT NULL,"
	"  password_version bigint NOT NULL DEFAULT 0);"
	"CREATE INDEX auth_failures_by_trunk ON auth_failures (trunk_id, id);"
	"CREATE INDEX auth_failures_by_node ON auth_failures (node, trunk_id, id);";

/*
 * Schema 3: registrations shared by the fleet. The owner (the node holding
 * the PBX's flow) writes its bindings; a binding's arrival, removal or move
 * (another owner, source or transport) is a change like any other, so that
 * every node learns where to relay a call from the feed, never from a query
 * on the call's path. A refresh that changes nothing but times is not
 * logged: it would wake every node for nothing. nodes.heartbeat_ms is the
 * beat to the millisecond, by the database's clock.
 */
static const char schema_v3[] =
	"ALTER TABLE registrations ADD COLUMN password_version bigint NOT NULL DEFAULT 1;"
	"ALTER TABLE nodes ADD COLUMN heartbeat_ms bigint NOT NULL DEFAULT 0;"
	"CREATE INDEX registrations_by_trunk ON registrations (trunk_id);"
	"CREATE TRIGGER registrations_log AFTER INSERT OR DELETE ON registrations"
	"  FOR EACH ROW EXECUTE FUNCTION sipauthd_log_change();"
	"CREATE TRIGGER registrations_moved_log AFTER UPDATE ON registrations FOR EACH ROW"
	"  WHEN (OLD.node IS DISTINCT FROM NEW.node OR OLD.source IS DISTINCT FROM NEW.source"
	"    OR OLD.source_port IS DISTINCT FROM NEW.source_port OR OLD.transport IS DISTINCT FROM NEW.transport"
	"    OR OLD.registered_at IS DISTINCT FROM NEW.registered_at)"
	"  EXECUTE FUNCTION sipauthd_log_change();";

/*
 * Schema 4: the calls in progress of the fleet, for the API's calls list.
 * Each node writes its own rows alone (after its heartbeat, the difference
 * from what it wrote last; after each connect it replaces them all), so no
 * change log and no trigger: nothing on the call's path reads this table.
 * A trunk's calls can share a Call-ID (the two legs of a call between two
 * trunks), hence the trunk in the key.
 */
static const char schema_v4[] =
	"CREATE TABLE calls (node text NOT NULL, trunk_id text NOT NULL, call_id text NOT NULL,"
	"  credential_id text NOT NULL DEFAULT '', inbound boolean NOT NULL, confirmed boolean NOT NULL,"
	"  started_at bigint NOT NULL, PRIMARY KEY (node, trunk_id, call_id));"
	"CREATE INDEX calls_by_trunk ON calls (trunk_id, call_id);";

/*
 * Schema 5: Idempotency-Key answers shared by the fleet, so that a retry at
 * any node gets the first answer. Keyed as the LMDB store keys them (the
 * account, the SHA-256 of the key); fingerprint is the SHA-256 of the
 * method, path and body. status 0 is a claim: the request is being run by
 * the node that inserted it (claim: its random token); the answer replaces
 * it. No trigger: these rows are no node's configuration.
 */
static const char schema_v5[] =
	"CREATE TABLE idempotency (account_id text NOT NULL, key_hash bytea NOT NULL CHECK (length(key_hash) = 32),"
	"  fingerprint bytea NOT NULL CHECK (length(fingerprint) = 32), claim text NOT NULL,"
	"  status integer NOT NULL DEFAULT 0, location text NOT NULL DEFAULT '', body text,"
	"  created_at bigint NOT NULL, PRIMARY KEY (account_id, key_hash));"
	"CREATE INDEX idempotency_by_age ON idempotency (created_at);";

/*
 * Schema 6: webhooks shared by the fleet. A webhook is configuration, as a
 * credential is: logged, so that every node mirrors it, with its secret
 * (a node signs with it; the node role reads it as it reads the HA1s).
 * events is the bit mask the store keeps (1 << enum sa_wh_event). The
 * deliveries stay each node's to send; each node writes their state to
 * webhook_deliveries after its heartbeat, for every node's API to list: not
 * logged, nothing on a node's path reads them. ord: the order they reached
 * the database. status: 0 pending, 1 delivered, 2 failed (enum
 * sa_delivery_status).
 */
static const char schema_v6[] =
	/* the checks keep out rows that every node's mirror would refuse (and stall on) */
	"CREATE TABLE webhooks (id text PRIMARY KEY CHECK (length(id) < 48),"
	"  account_id text NOT NULL REFERENCES accounts(id), url text NOT NULL CHECK (length(url) < 1024),"
	"  events integer NOT NULL CHECK (events > 0), secret text NOT NULL CHECK (length(secret) < 64),"
	"  created_at bigint NOT NULL);"
	"CREATE INDEX webhooks_by_account ON webhooks (account_id, id COLLATE \"C\");"
	"CREATE TRIGGER webhooks_log AFTER INSERT OR UPDATE OR DELETE ON webhooks"
	"  FOR EACH ROW EXECUTE FUNCTION sipauthd_log_change();"
	"CREATE TABLE webhook_deliveries (node text NOT NULL, id text NOT NULL, webhook_id text NOT NULL,"
	"  event text NOT NULL, status smallint NOT NULL, attempts integer NOT NULL,"
	"  last_status_code integer NOT NULL DEFAULT 0, last_error text NOT NULL DEFAULT '',"
	"  next_attempt_at bigint NOT NULL DEFAULT 0, created_at bigint NOT NULL, ord bigserial NOT NULL UNIQUE,"
	"  PRIMARY KEY (node, id));"
	"CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook_id, ord);"
	"CREATE INDEX webhook_deliveries_by_age ON webhook_deliveries (node, created_at);";
_Static_assert(SA_ID_MAX == 48 && SA_STORE_WH_URL_MAX == 1024 && SA_STORE_WH_SECRET_MAX == 64,
               "schema 6's checks say the same");

/* Upgrades: upgrades[v] takes schema v to v + 1. */
static const char *const upgrades[SA_PG_SCHEMA_VERSION] = { NULL, schema_v2, schema_v3, schema_v4, schema_v5,
                                                            schema_v6 };

#define SA_PG_NONCE_KEY_KEEP_TEXT "3600"   /* SA_PG_NONCE_KEY_KEEP in SQL */

/* init and upgrades hold this advisory lock: two at once would both see no schema */
#define INIT_LOCK "SELECT pg_advisory_xact_lock(7316020512)"

const char sa_pg_changes_sql[] =
	"SELECT 0::bigint AS seq, 'head' AS kind, '' AS op, last::text AS payload, 0::bigint AS at_ms FROM change_seq"
	" UNION ALL (SELECT seq, kind, op, payload::text, at_ms FROM change_log WHERE seq > $1::bigint"
	" ORDER BY seq LIMIT $2::bigint) ORDER BY seq";

const char sa_pg_snapshot_sql[] =
	"SELECT seq, kind, op, payload, at_ms FROM ("
	" SELECT 0 AS g, 0::bigint AS o, last AS seq, 'head' AS kind, '' AS op, last::text AS payload, 0::bigint AS at_ms"
	"  FROM change_seq"
	" UNION ALL SELECT 1, 0, 0, 'accounts', 'insert', to_jsonb(a)::text, 0 FROM accounts a"
	" UNION ALL SELECT 2, 0, 0, 'api_keys', 'insert', to_jsonb(k)::text, 0 FROM api_keys k"
	" UNION ALL SELECT 3, t.ord, 0, 'trunks', 'insert', to_jsonb(t)::text, 0 FROM trunks t"
	" UNION ALL SELECT 4, c.ord, 0, 'credentials', 'insert', to_jsonb(c)::text, 0 FROM credentials c"
	" UNION ALL SELECT 5, 0, 0, 'webhooks', 'insert', to_jsonb(w)::text, 0 FROM webhooks w"
	") s ORDER BY g, o";

const char sa_pg_nonce_keys_sql[] =
	"WITH cur AS (SELECT coalesce((SELECT id FROM nonce_keys WHERE retired_at IS NULL"
	"  ORDER BY created_at DESC, id DESC LIMIT 1), 0) AS id)"
	" SELECT id::integer, '' AS secret, false AS retired, 0 AS g, 0::bigint AS o FROM cur"
	" UNION ALL (SELECT k.id::integer, encode(k.secret, 'hex'), true, 1, k.retired_at FROM nonce_keys k, cur"
	"  WHERE cur.id <> $1::integer AND k.retired_at >= extract(epoch FROM now())::bigint - $2::bigint"
	"  ORDER BY k.retired_at DESC LIMIT 1)"
	" UNION ALL SELECT k.id::integer, encode(k.secret, 'hex'), false, 2, 0 FROM nonce_keys k, cur"
	"  WHERE cur.id <> $1::integer AND k.id = cur.id"
	" ORDER BY g, o";

const char sa_pg_nonce_key_first_sql[] =
	"INSERT INTO nonce_keys (id, secret, created_at)"
	" SELECT coalesce((SELECT min(i) FROM generate_series(1, 255) i WHERE i NOT IN (SELECT id FROM nonce_keys)), 1),"
	"  decode($1, 'hex'), extract(epoch FROM now())::bigint"
	" WHERE NOT EXISTS (SELECT 1 FROM nonce_keys WHERE retired_at IS NULL)"
	" ON CONFLICT (id) DO NOTHING";

const char sa_pg_authfail_push_sql[] =
	"INSERT INTO auth_failures (node, trunk_id, at, source, source_port, transport, username, reason, method,"
	" password_version) SELECT $1, r.trunk_id, r.at, r.source, r.source_port, r.transport, r.username, r.reason,"
	" r.method, r.password_version FROM jsonb_to_recordset($2::jsonb) AS r(at bigint, trunk_id text, source text,"
	" source_port integer, transport text, username text, reason text, method text, password_version bigint)";

const char sa_pg_authfail_prune_sql[] =
	"DELETE FROM auth_failures a USING (SELECT id, row_number() OVER (PARTITION BY trunk_id ORDER BY id DESC) AS n"
	" FROM auth_failures WHERE node = $1) o WHERE a.id = o.id AND o.n > $2::bigint";

/* The heartbeat also answers the other nodes seen within a minute, as
 * [[name, address, heartbeat_ms], ...], and the database's time in ms:
 * whose bindings to relay to, and whose requests to trust
 * (daemon/cluster.c). heartbeat_ms (schema 3) is the same beat to the
 * millisecond, by the database's clock, so that a node judges another's
 * silence to well under a second; heartbeat_at stays in whole seconds. */
#define DB_NOW_MS "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
/* It also answers the beat it wrote and the one the row had before it
 * (the statement sees the table as it was): a row that another process
 * wrote since this node's last beat is another node's with the same name. */
const char sa_pg_heartbeat_sql[] =
	"WITH prev AS (SELECT heartbeat_ms, address FROM nodes WHERE name = $1),"
	" beat AS (INSERT INTO nodes (name, address, started_at, heartbeat_at, applied_seq, heartbeat_ms)"
	" VALUES ($1, $2, extract(epoch FROM now())::bigint, extract(epoch FROM now())::bigint, $3::bigint, " DB_NOW_MS ")"
	" ON CONFLICT (name) DO UPDATE SET address = EXCLUDED.address, heartbeat_at = EXCLUDED.heartbeat_at,"
	" applied_seq = EXCLUDED.applied_seq, heartbeat_ms = EXCLUDED.heartbeat_ms RETURNING heartbeat_ms)"
	/* the nodes alive: this one, and the others that beat within 6 s (the
	 * statement sees the table as it was before its own insert) */
	" SELECT 1 + (SELECT count(*) FROM nodes WHERE name <> $1"
	"   AND heartbeat_at >= extract(epoch FROM now())::bigint - 6),"
	" (SELECT coalesce(json_agg(json_build_array(name, address, heartbeat_ms)), '[]') FROM nodes"
	"   WHERE name <> $1 AND heartbeat_at >= extract(epoch FROM now())::bigint - 60)::text,"
	" " DB_NOW_MS ", beat.heartbeat_ms, coalesce((SELECT heartbeat_ms FROM prev), 0),"
	" coalesce((SELECT address FROM prev), '') FROM beat";

/* The fleet's calls list. The node's calls that ended ($2, a JSON array of
 * {trunk_id, call_id}) go, those that started or changed ($3, rows without
 * the node) are written; on the way, the rows of nodes silent for a minute
 * go (a node that stopped for good: its calls are not listed anyway once it
 * is 4 s silent). The three parts touch different rows. */
const char sa_pg_calls_push_sql[] =
	"WITH gone AS (DELETE FROM calls c USING json_to_recordset($2::json) AS d(trunk_id text, call_id text)"
	"   WHERE c.node = $1 AND c.trunk_id = d.trunk_id AND c.call_id = d.call_id),"
	" swept AS (DELETE FROM calls c WHERE c.node <> $1 AND NOT EXISTS (SELECT 1 FROM nodes n"
	"   WHERE n.name = c.node AND n.heartbeat_ms >= " DB_NOW_MS " - 60000))"
	" INSERT INTO calls AS c (node, trunk_id, call_id, credential_id, inbound, confirmed, started_at)"
	" SELECT $1, r.trunk_id, r.call_id, coalesce(r.credential_id, ''), r.inbound, r.confirmed, r.started_at"
	"  FROM json_to_recordset($3::json) AS r(trunk_id text, call_id text, credential_id text, inbound boolean,"
	"  confirmed boolean, started_at bigint)"
	" ON CONFLICT (node, trunk_id, call_id) DO UPDATE SET credential_id = EXCLUDED.credential_id,"
	"  inbound = EXCLUDED.inbound, confirmed = EXCLUDED.confirmed, started_at = EXCLUDED.started_at";

const char sa_pg_calls_wipe_sql[] = "DELETE FROM calls WHERE node = $1";

/* The owner's bindings of some credentials, as they are now. $1 the node,
 * $2 its bindings of those credentials (a JSON array of registrations
 * rows), $3 the credentials' ids (a JSON array): a binding of one of them
 * owned here and not in $2 is gone. A binding another node took after this
 * one's last REGISTER stays the other node's. Bindings expired a minute ago
 * (those of a node that stopped) are removed on the way; none of the three
 * parts touches a row another one does. */
const char sa_pg_registrations_put_sql[] =
	"WITH b AS (SELECT * FROM json_populate_recordset(NULL::registrations, $2::json)),"
	" gone AS (DELETE FROM registrations r USING json_array_elements_text($3::json) AS c(id)"
	"   WHERE r.credential_id = c.id AND r.node = $1"
	"   AND NOT EXISTS (SELECT 1 FROM b WHERE b.credential_id = r.credential_id AND b.contact = r.contact)),"
	" old AS (DELETE FROM registrations r WHERE r.expires_at < extract(epoch FROM now())::bigint - 60"
	"   AND NOT EXISTS (SELECT 1 FROM b WHERE b.credential_id = r.credential_id AND b.contact = r.contact))"
	" INSERT INTO registrations AS r SELECT * FROM b"
	"  WHERE EXISTS (SELECT 1 FROM credentials c WHERE c.id = b.credential_id)"
	" ON CONFLICT (credential_id, contact) DO UPDATE SET node = EXCLUDED.node, trunk_id = EXCLUDED.trunk_id,"
	"  source = EXCLUDED.source, source_port = EXCLUDED.source_port, transport = EXCLUDED.transport,"
	"  user_agent = EXCLUDED.user_agent, call_id = EXCLUDED.call_id, cseq = EXCLUDED.cseq,"
	"  registered_at = EXCLUDED.registered_at, updated_at = EXCLUDED.updated_at,"
	"  expires_at = EXCLUDED.expires_at, password_version = EXCLUDED.password_version"
	"  WHERE r.node = EXCLUDED.node OR r.updated_at <= EXCLUDED.updated_at";

/* Every other node's bindings, after a head row (the sequence they are as
 * of, payload NULL), in the changes' five columns. */
const char sa_pg_registrations_load_sql[] =
	"SELECT seq, kind, op, payload, at_ms FROM ("
	" SELECT 0 AS g, last AS seq, 'head' AS kind, '' AS op, last::text AS payload, 0::bigint AS at_ms FROM change_seq"
	" UNION ALL SELECT 1, 0, 'registrations', 'insert', to_jsonb(r)::text, r.updated_at FROM registrations r"
	"  WHERE r.node <> $1"
	") s ORDER BY g, at_ms";   /* oldest first: each goes in at the head of its trunk's chain */

struct sa_pg {
	PGconn *conn;
	int64_t used_at;             /* when sa_pg_alive last found it working */
	char detail[256];
	char name[192];
	char domain[SA_DOMAIN_MAX + 1];   /* once sa_pg_check has read it */
};

/* ---- connection and errors ---- */

/* The first line of a libpq or server message. */
static void detail_set(struct sa_pg *pg, const char *msg)
{
	snprintf(pg->detail, sizeof pg->detail, "%s", msg != NULL ? msg : "");
	pg->detail[strcspn(pg->detail, "\n")] = '\0';
}

/* SQLSTATE classes as store errors. */
static int err_of_state(const char *state)
{
	static const struct { const char *state; int err; } map[] = {
		{ "23505", SA_STORE_EEXISTS },     /* unique_violation */
		{ "23503", SA_STORE_ENOTFOUND },   /* foreign_key_violation: the account or trunk named */
		{ "42P01", SA_STORE_ENOTINIT },    /* undefined_table: no schema */
		{ "53100", SA_STORE_ENOSPC },      /* disk_full */
		{ "42501", SA_STORE_EACCES },      /* insufficient_privilege */
		{ "22P02", SA_STORE_EINVAL },      /* invalid_text_representation */
	};
	for (size_t i = 0; state != NULL && i < sizeof map / sizeof map[0]; i++)
		if (strcmp(state, map[i].state) == 0)
			return map[i].err;
	return SA_STORE_EIO;
}

/* Statements that change something: when the connection breaks under one,
 * nobody knows whether it was done. */
static bool is_write(const char *sql)
{
	static const char *const verbs[] = { "INSERT", "UPDATE", "DELETE", "COMMIT" };

	for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++)
		if (strncmp(sql, verbs[i], strlen(verbs[i])) == 0)
			return true;
	return false;
}

/* Runs sql with text parameters (without any, sql may be several
 * statements: the schema). OK with the result in *res (the caller clears
 * it), or the error (detail set, nothing to clear). */
static int exec(struct sa_pg *pg, const char *sql, int n, const char *const *params, PGresult **res)
{
	if (PQstatus(pg->conn) != CONNECTION_OK) {
		detail_set(pg, PQerrorMessage(pg->conn));
		return SA_STORE_EUNAVAIL;
	}
	PGresult *r = n == 0 ? PQexec(pg->conn, sql) : PQexecParams(pg->conn, sql, n, NULL, params, NULL, NULL, 0);
	ExecStatusType s = PQresultStatus(r);

	if (s == PGRES_TUPLES_OK || s == PGRES_COMMAND_OK) {
		*res = r;
		return SA_STORE_OK;
	}
	detail_set(pg, r != NULL ? PQresultErrorMessage(r) : PQerrorMessage(pg->conn));
	int err = r != NULL ? err_of_state(PQresultErrorField(r, PG_DIAG_SQLSTATE)) : SA_STORE_EIO;
	if (PQstatus(pg->conn) != CONNECTION_OK)
		err = is_write(sql) ? SA_STORE_EUNKNOWN : SA_STORE_EUNAVAIL;
	PQclear(r);
	return err;
}

/* As exec, for statements whose rows nobody reads; *affected: rows changed (may be NULL). */
static int run(struct sa_pg *pg, const char *sql, int n, const char *const *params, long *affected)
{
	PGresult *r;
	int rc = exec(pg, sql, n, params, &r);

	if (rc == SA_STORE_OK && affected != NULL)
		*affected = strtol(PQcmdTuples(r), NULL, 10);
	if (rc == SA_STORE_OK)
		PQclear(r);
	return rc;
}

/* Our defaults first, the administrator's connection string (dbname,
 * expanded) last: libpq keeps the last value of a key, so the string
 * overrides any of them. */
#define CONN_DEFAULTS(conninfo) \
	const char *const keys[] = { "connect_timeout", "tcp_user_timeout", "keepalives_idle", \
	                             "keepalives_interval", "keepalives_count", "dbname", NULL }; \
	const char *const vals[] = { "3", "5000", "5", "2", "2", conninfo, NULL }

struct pg_conn *sa_pg_connect_start(const char *conninfo)
{
	CONN_DEFAULTS(conninfo);

	return PQconnectStartParams(keys, vals, 1);
}

int sa_pg_open(struct sa_pg **out, const char *conninfo, char *why, size_t whylen)
{
	CONN_DEFAULTS(conninfo);
	struct sa_pg *pg = calloc(1, sizeof *pg);

	*out = NULL;
	if (pg == NULL)
		return SA_STORE_EIO;
	pg->conn = PQconnectdbParams(keys, vals, 1);
	if (PQstatus(pg->conn) != CONNECTION_OK) {
		detail_set(pg, PQerrorMessage(pg->conn));
		snprintf(why, whylen, "%s", pg->detail);
		sa_pg_close(pg);
		return SA_STORE_EUNAVAIL;
	}
	snprintf(pg->name, sizeof pg->name, "%s on %s:%s", PQdb(pg->conn), PQhost(pg->conn), PQport(pg->conn));
	/* the schema's notices (CREATE ... IF NOT EXISTS and the like) are no news */
	run(pg, "SET client_min_messages = warning", 0, NULL, NULL);
	*out = pg;
	return SA_STORE_OK;
}

bool sa_pg_alive(struct sa_pg *pg, int64_t now, int64_t idle_secs)
{
	PGresult *r;

	if (PQstatus(pg->conn) != CONNECTION_OK)
		return false;
	/* Between requests the server sends nothing, unless it is going away
	 * (stopped, failed over: an error, then the socket closed): anything to
	 * read means the connection is asked too, so the first job after a
	 * failover reconnects instead of failing */
	struct pollfd p = { .fd = PQsocket(pg->conn), .events = POLLIN };
	bool news = poll(&p, 1, 0) != 0;
	if (now - pg->used_at < idle_secs && !news)
		return true;
	if (exec(pg, "SELECT 1", 0, NULL, &r) != SA_STORE_OK)
		return false;
	PQclear(r);
	pg->used_at = now;
	return true;
}

void sa_pg_close(struct sa_pg *pg)
{
	if (pg == NULL)
		return;
	PQfinish(pg->conn);
	free(pg);
}

const char *sa_pg_detail(const struct sa_pg *pg)
{
	return pg != NULL ? pg->detail : "";
}

const char *sa_pg_name(const struct sa_pg *pg)
{
	return pg != NULL ? pg->name : "";
}

/* ---- schema ---- */

/* The recorded version: 0 when there is no schema. */
static int schema_version(struct sa_pg *pg, int *version)
{
	PGresult *r;
	/* asked first, so that a missing table fails no transaction it is in */
	int rc = exec(pg, "SELECT 1 WHERE to_regclass('schema_version') IS NOT NULL", 0, NULL, &r);
	bool present = rc == SA_STORE_OK && PQntuples(r) == 1;

	*version = 0;
	if (rc == SA_STORE_OK)
		PQclear(r);
	if (rc != SA_STORE_OK || !present)
		return rc;
	rc = exec(pg, "SELECT version FROM schema_version", 0, NULL, &r);
	if (rc != SA_STORE_OK)
		return rc;
	if (PQntuples(r) == 1)
		*version = atoi(PQgetvalue(r, 0, 0));
	PQclear(r);
	return SA_STORE_OK;
}

static int schema_upgrade(struct sa_pg *pg, int from)
{
	int rc = SA_STORE_OK;

	for (int v = from; v < SA_PG_SCHEMA_VERSION && rc == SA_STORE_OK; v++)
		if (upgrades[v] != NULL)
			rc = run(pg, upgrades[v], 0, NULL, NULL);
	return rc;
}

static int schema_create(struct sa_pg *pg, const char *domain)
{
	const char *params[] = { domain };
	int rc = run(pg, schema_v1, 0, NULL, NULL);

	if (rc == SA_STORE_OK)
		rc = schema_upgrade(pg, 1);
	if (rc == SA_STORE_OK)
		rc = run(pg, "INSERT INTO settings VALUES ('domain', $1)", 1, params, NULL);
	return rc;
}

/* Inside init's transaction: create, upgrade, or say why neither. */
static int init_txn(struct sa_pg *pg, const char *domain, int *from)
{
	char ver[16];
	const char *params[] = { ver };
	int rc = run(pg, INIT_LOCK, 0, NULL, NULL);

	if (rc == SA_STORE_OK)
		rc = schema_version(pg, from);
	if (rc != SA_STORE_OK)
		return rc;
	if (*from == SA_PG_SCHEMA_VERSION)
		return SA_STORE_EEXISTS;
	if (*from > SA_PG_SCHEMA_VERSION)
		return SA_STORE_ESCHEMA;
	rc = *from == 0 ? schema_create(pg, domain) : schema_upgrade(pg, *from);
	snprintf(ver, sizeof ver, "%d", SA_PG_SCHEMA_VERSION);
	if (rc == SA_STORE_OK)
		rc = run(pg, "DELETE FROM schema_version", 0, NULL, NULL);
	if (rc == SA_STORE_OK)
		rc = run(pg, "INSERT INTO schema_version VALUES ($1::integer)", 1, params, NULL);
	return rc;
}

int sa_pg_init(struct sa_pg *pg, const char *domain, int *from)
{
	char dom[SA_DOMAIN_MAX + 1];

	if (sa_store_domain_normalise(domain != NULL ? domain : SA_DEFAULT_DOMAIN, dom) != SA_STORE_OK)
		return SA_STORE_EINVAL;
	int rc = run(pg, "BEGIN", 0, NULL, NULL);
	if (rc != SA_STORE_OK)
		return rc;
	rc = init_txn(pg, dom, from);
	int end = run(pg, rc == SA_STORE_OK ? "COMMIT" : "ROLLBACK", 0, NULL, NULL);
	return rc != SA_STORE_OK ? rc : end;
}

int sa_pg_check(struct sa_pg *pg)
{
	PGresult *r;
	int version, rc = schema_version(pg, &version);

	if (rc == SA_STORE_OK && version == 0)
		rc = SA_STORE_ENOTINIT;
	else if (rc == SA_STORE_OK && version != SA_PG_SCHEMA_VERSION)
		rc = SA_STORE_ESCHEMA;
	if (rc == SA_STORE_OK)
		rc = exec(pg, "SELECT value FROM settings WHERE name = 'domain'", 0, NULL, &r);
	if (rc != SA_STORE_OK)
		return rc;
	if (PQntuples(r) != 1 || strlen(PQgetvalue(r, 0, 0)) > SA_DOMAIN_MAX)
		rc = SA_STORE_EIO;
	else
		snprintf(pg->domain, sizeof pg->domain, "%s", PQgetvalue(r, 0, 0));
	PQclear(r);
	return rc;
}

int sa_pg_domain(struct sa_pg *pg, char *out, size_t outlen)
{
	int rc = pg->domain[0] != '\0' ? SA_STORE_OK : sa_pg_check(pg);

	if (rc == SA_STORE_OK && (size_t)snprintf(out, outlen, "%s", pg->domain) >= outlen)
		rc = SA_STORE_EINVAL;
	return rc;
}

/* ---- accounts, keys, trunks ---- */

static void i64_text(int64_t v, char out[24])
{
	snprintf(out, 24, "%lld", (long long)v);
}

int sa_pg_account_create(struct sa_pg *pg, const char *name, int64_t now, struct sa_account *out)
{
	struct sa_account a = { .created_at = now };
	char at[24];
	const char *params[] = { a.id, name, at };

	if (name == NULL || name[0] == '\0' || !sa_store_name_ok(name))
		return SA_STORE_EINVAL;
	int rc = sa_store_id_make("acc_", a.id);
	snprintf(a.name, sizeof a.name, "%s", name);
	i64_text(now, at);
	if (rc == SA_STORE_OK)
		rc = run(pg, "INSERT INTO accounts (id, name, created_at) VALUES ($1, $2, $3::bigint)", 3, params, NULL);
	if (rc == SA_STORE_OK && out != NULL)
		*out = a;
	return rc;
}

static void hex(const unsigned char *p, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[p[i] >> 4];
		out[2 * i + 1] = digits[p[i] & 15];
	}
	out[2 * n] = '\0';
}

int sa_pg_apikey_create(struct sa_pg *pg, const char *account_id, int64_t now, char *key)
{
	unsigned char hash[SA_APIKEY_HASH_LEN];
	char hashtext[3 + 2 * SA_APIKEY_HASH_LEN], at[24];
	const char *params[] = { hashtext, account_id, at };
	int rc = sa_store_apikey_make(key, hash);

	memcpy(hashtext, "\\x", 2);
	hex(hash, sizeof hash, hashtext + 2);
	i64_text(now, at);
	if (rc == SA_STORE_OK)
		rc = run(pg, "INSERT INTO api_keys (hash, account_id, created_at) VALUES ($1::bytea, $2, $3::bigint)", 3,
		         params, NULL);
	if (rc != SA_STORE_OK)
		OPENSSL_cleanse(key, SA_APIKEY_LEN + 1);
	return rc;
}

static int policy_text(const struct sa_trunk_policy *p, char **out)
{
	json_t *o = json_object();

	*out = o != NULL && sa_policy_to_json(p, o) == 0 ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	return *out != NULL ? SA_STORE_OK : SA_STORE_EIO;
}

int sa_pg_trunk_create(struct sa_pg *pg, const char *account_id, const char *name, int64_t now,
                       struct sa_trunk *out)
{
	struct sa_trunk_policy p;
	struct sa_trunk t = { .created_at = now };
	char at[24], *policy = NULL;
	const char *params[] = { t.id, account_id, name, at, NULL };

	if (name == NULL)
		params[2] = name = "";
	if (!sa_store_name_ok(name))
		return SA_STORE_EINVAL;
	sa_policy_default(&p);
	int rc = sa_store_id_make("trunk_", t.id);
	if (rc == SA_STORE_OK)
		rc = policy_text(&p, &policy);
	params[4] = policy;
	snprintf(t.account_id, sizeof t.account_id, "%s", account_id);
	snprintf(t.name, sizeof t.name, "%s", name);
	i64_text(now, at);
	if (rc == SA_STORE_OK)
		rc = run(pg, "INSERT INTO trunks (id, account_id, name, created_at, policy)"
		             " VALUES ($1, $2, $3, $4::bigint, $5::jsonb)", 5, params, NULL);
	free(policy);
	if (rc == SA_STORE_OK && out != NULL)
		*out = t;
	return rc;
}

/* Copies a column into a fixed field; EIO when it does not fit (not ours). */
static int col_copy(const PGresult *r, int row, int col, char *out, size_t outlen)
{
	const char *v = PQgetvalue(r, row, col);

	return (size_t)snprintf(out, outlen, "%s", v) < outlen ? SA_STORE_OK : SA_STORE_EIO;
}

/* Trunks and credentials both read as three text columns and a time. */
struct row_text {
	char *out;
	size_t len;
};

static int row_read(const PGresult *r, int row, const struct row_text text[3], int64_t *created_at)
{
	int rc = SA_STORE_OK;

	for (int col = 0; col < 3 && rc == SA_STORE_OK; col++)
		rc = col_copy(r, row, col, text[col].out, text[col].len);
	*created_at = strtoll(PQgetvalue(r, row, 3), NULL, 10);
	return rc;
}

static int trunk_row(const PGresult *r, int row, struct sa_trunk *t)
{
	const struct row_text text[3] = { { t->id, sizeof t->id }, { t->account_id, sizeof t->account_id },
	                                  { t->name, sizeof t->name } };

	return row_read(r, row, text, &t->created_at);
}

#define TRUNK_COLS "id, account_id, name, created_at"

int sa_pg_trunk_get(struct sa_pg *pg, const char *trunk_id, struct sa_trunk *out)
{
	const char *params[] = { trunk_id };
	PGresult *r;
	int rc = exec(pg, "SELECT " TRUNK_COLS " FROM trunks WHERE id = $1", 1, params, &r);

	if (rc != SA_STORE_OK)
		return rc;
	rc = PQntuples(r) == 1 ? trunk_row(r, 0, out) : SA_STORE_ENOTFOUND;
	PQclear(r);
	return rc;
}

/* A trunk's policy as the database keeps it: the GET form, read as a PATCH onto the defaults. */
static int policy_parse(const char *text, struct sa_trunk_policy *out)
{
	char field[SA_POLICY_FIELD_MAX], why[160];
	json_error_t e;
	json_t *j = json_loads(text, 0, &e);
	int rc = json_is_object(j) ? SA_STORE_OK : SA_STORE_EINVAL;

	sa_policy_default(out);
	if (rc == SA_STORE_OK && sa_policy_patch(out, j, field, why, sizeof why) < 0)
		rc = SA_STORE_EINVAL;
	json_decref(j);
	return rc;
}

int sa_pg_trunk_policy_get(struct sa_pg *pg, const char *trunk_id, struct sa_trunk_policy *out)
{
	const char *params[] = { trunk_id };
	PGresult *r;
	int rc = exec(pg, "SELECT policy::text FROM trunks WHERE id = $1", 1, params, &r);

	sa_policy_default(out);
	if (rc != SA_STORE_OK)
		return rc;
	rc = PQntuples(r) == 1 ? policy_parse(PQgetvalue(r, 0, 0), out) : SA_STORE_ENOTFOUND;
	PQclear(r);
	return rc == SA_STORE_EINVAL ? SA_STORE_EIO : rc;
}

int sa_pg_trunk_policy_set(struct sa_pg *pg, const char *trunk_id, const struct sa_trunk_policy *p)
{
	char *policy = NULL;
	const char *params[] = { trunk_id, NULL };
	long n = 0;
	int rc = policy_text(p, &policy);

	params[1] = policy;
	if (rc == SA_STORE_OK)
		rc = run(pg, "UPDATE trunks SET policy = $2::jsonb WHERE id = $1", 2, params, &n);
	free(policy);
	return rc == SA_STORE_OK && n == 0 ? SA_STORE_ENOTFOUND : rc;
}

static bool account_exists(struct sa_pg *pg, const char *account_id, int *rc)
{
	const char *params[] = { account_id };
	PGresult *r;
	bool found = false;

	*rc = exec(pg, "SELECT 1 FROM accounts WHERE id = $1", 1, params, &r);
	if (*rc == SA_STORE_OK) {
		found = PQntuples(r) == 1;
		PQclear(r);
	}
	return found;
}

int sa_pg_apikey_list(struct sa_pg *pg, const char *account_id, sa_store_apikey_cb cb, void *arg)
{
	const char *params[] = { account_id };
	PGresult *r = NULL;
	int rc;

	if (!account_exists(pg, account_id, &rc))
		return rc != SA_STORE_OK ? rc : SA_STORE_ENOTFOUND;
	rc = exec(pg, "SELECT 'key_' || substr(encode(hash, 'hex'), 1, 16), created_at FROM api_keys"
	              " WHERE account_id = $1 ORDER BY created_at, hash", 1, params, &r);
	for (int i = 0; rc == SA_STORE_OK && i < PQntuples(r); i++) {
		struct sa_apikey_info k = { .created_at = strtoll(PQgetvalue(r, i, 1), NULL, 10) };
		snprintf(k.id, sizeof k.id, "%s", PQgetvalue(r, i, 0));
		if (cb(&k, arg) != 0)
			break;
	}
	PQclear(r);
	return rc;
}

int sa_pg_apikey_revoke(struct sa_pg *pg, const char *account_id, const char *key_id)
{
	const char *params[] = { account_id, key_id };
	long n = 0;
	int rc;

	if (!account_exists(pg, account_id, &rc))
		return rc != SA_STORE_OK ? rc : SA_STORE_ENOTFOUND;
	rc = run(pg, "DELETE FROM api_keys WHERE account_id = $1 AND 'key_' || substr(encode(hash, 'hex'), 1, 16) = $2",
	         2, params, &n);
	return rc == SA_STORE_OK && n == 0 ? SA_STORE_ENOTFOUND : rc;
}

int sa_pg_trunk_list(struct sa_pg *pg, const char *account_id, sa_store_trunk_cb cb, void *arg)
{
	const char *params[] = { account_id };
	struct sa_trunk t;
	PGresult *r = NULL;
	int rc;

	if (!account_exists(pg, account_id, &rc))
		return rc != SA_STORE_OK ? rc : SA_STORE_ENOTFOUND;
	rc = exec(pg, "SELECT " TRUNK_COLS " FROM trunks WHERE account_id = $1 ORDER BY ord", 1, params, &r);
	for (int i = 0; rc == SA_STORE_OK && i < PQntuples(r); i++) {
		memset(&t, 0, sizeof t);
		rc = trunk_row(r, i, &t);
		if (rc == SA_STORE_OK && cb(&t, arg) != 0)
			break;
	}
	PQclear(r);
	return rc;
}

/* ---- credentials ---- */

static int cred_insert(struct sa_pg *pg, const struct sa_credential *c, char *why, size_t whylen)
{
	char at[24];
	const char *params[] = { c->id, c->trunk_id, c->username, at, c->ha1[SA_ALG_MD5], c->ha1[SA_ALG_SHA256],
	                         c->ha1[SA_ALG_SHA512_256] };
	int rc;

	i64_text(c->created_at, at);
	rc = run(pg, "INSERT INTO credentials (id, trunk_id, username, created_at, ha1_md5, ha1_sha256, ha1_sha512_256)"
	             " VALUES ($1, $2, $3, $4::bigint, $5, $6, $7)", 7, params, NULL);
	if (rc == SA_STORE_EEXISTS)
		snprintf(why, whylen, "username already exists on this trunk");
	else if (rc == SA_STORE_ENOTFOUND)
		snprintf(why, whylen, "unknown trunk");
	return rc;
}

int sa_pg_credential_create(struct sa_pg *pg, const char *trunk_id, const char *username, const char *password,
                            size_t password_len, unsigned min_len, int64_t now, struct sa_credential *out,
                            char *why, size_t whylen)
{
	char realm[SA_REALM_MAX], domain[SA_DOMAIN_MAX + 1], dummy[8];
	struct sa_credential c;
	int rc = sa_credential_validate(username, password, password_len, min_len, why, whylen);

	if (why == NULL) {
		why = dummy;
		whylen = sizeof dummy;
	}
	if (rc != SA_STORE_OK)
		return rc;
	memset(&c, 0, sizeof c);
	c.created_at = now;
	c.password_version = 1;
	snprintf(c.username, sizeof c.username, "%s", username);
	if (trunk_id == NULL || (size_t)snprintf(c.trunk_id, sizeof c.trunk_id, "%s", trunk_id) >= sizeof c.trunk_id) {
		snprintf(why, whylen, "unknown trunk");
		return SA_STORE_ENOTFOUND;
	}
	rc = sa_pg_domain(pg, domain, sizeof domain);
	if (rc == SA_STORE_OK)
		rc = sa_store_realm(trunk_id, domain, realm, sizeof realm);
	if (rc == SA_STORE_OK)
		rc = sa_store_id_make("cred_", c.id);
	if (rc == SA_STORE_OK)
		rc = sa_credential_ha1(&c, realm, password, password_len);
	if (rc == SA_STORE_OK)
		rc = cred_insert(pg, &c, why, whylen);
	if (rc == SA_STORE_OK && out != NULL)
		*out = c;
	OPENSSL_cleanse(&c, sizeof c);
	return rc;
}

/* CRED_COLS: the record without its HA1s, which stay in the database. */
static int cred_row(const PGresult *r, int row, struct sa_credential *c)
{
	const struct row_text text[3] = { { c->id, sizeof c->id }, { c->trunk_id, sizeof c->trunk_id },
	                                  { c->username, sizeof c->username } };

	c->password_version = (uint32_t)strtoul(PQgetvalue(r, row, 4), NULL, 10);
	c->rotated_at = strtoll(PQgetvalue(r, row, 5), NULL, 10);
	c->previous_until = strtoll(PQgetvalue(r, row, 6), NULL, 10);
	return row_read(r, row, text, &c->created_at);
}

#define CRED_COLS "id, trunk_id, username, created_at, password_version, rotated_at, previous_until"
#define CRED_CHUNK "1000"   /* rows per query: a walk that stops early reads little more than it shows */

/* The position (ord) just before the walk starts: the trunk's start, or
 * after_id's place, which must be a credential of the trunk (EINVAL). */
static int cred_start(struct sa_pg *pg, const char *trunk_id, const char *after_id, char ord[24])
{
	const char *params[] = { after_id, trunk_id };
	PGresult *r;
	int rc;

	snprintf(ord, 24, "0");
	if (after_id == NULL || after_id[0] == '\0')
		return SA_STORE_OK;
	rc = exec(pg, "SELECT ord FROM credentials WHERE id = $1 AND trunk_id = $2", 2, params, &r);
	if (rc != SA_STORE_OK)
		return rc;
	rc = PQntuples(r) == 1 ? SA_STORE_OK : SA_STORE_EINVAL;
	if (rc == SA_STORE_OK)
		snprintf(ord, 24, "%s", PQgetvalue(r, 0, 0));
	PQclear(r);
	return rc;
}

/* One chunk after ord: each row to cb. *more: a full chunk, and cb wants more. */
static int cred_chunk(struct sa_pg *pg, const char *trunk_id, char ord[24], sa_store_credential_cb cb, void *arg,
                      bool *more)
{
	const char *params[] = { trunk_id, ord };
	struct sa_credential c;
	PGresult *r;
	/* the HA1s stay in the database: a listing shows none */
	int rc = exec(pg, "SELECT " CRED_COLS ", ord FROM credentials WHERE trunk_id = $1 AND ord > $2::bigint"
	                  " ORDER BY ord LIMIT " CRED_CHUNK, 2, params, &r);
	const int ord_col = 7;
	bool got = rc == SA_STORE_OK;
	int n = got ? PQntuples(r) : 0;

	*more = n == atoi(CRED_CHUNK);
	for (int i = 0; rc == SA_STORE_OK && i < n; i++) {
		memset(&c, 0, sizeof c);
		rc = cred_row(r, i, &c);
		snprintf(ord, 24, "%s", PQgetvalue(r, i, ord_col));
		if (rc == SA_STORE_OK && cb(&c, arg) != 0) {
			*more = false;
			break;
		}
	}
	if (got)
		PQclear(r);
	return rc;
}

int sa_pg_credential_list_after(struct sa_pg *pg, const char *trunk_id, const char *after_id,
                                sa_store_credential_cb cb, void *arg)
{
	char ord[24];
	struct sa_trunk t;
	bool more = true;
	int rc = sa_pg_trunk_get(pg, trunk_id, &t);

	if (rc == SA_STORE_OK)
		rc = cred_start(pg, trunk_id, after_id, ord);
	while (rc == SA_STORE_OK && more)
		rc = cred_chunk(pg, trunk_id, ord, cb, arg, &more);
	return rc;
}

int sa_pg_credential_list(struct sa_pg *pg, const char *trunk_id, sa_store_credential_cb cb, void *arg)
{
	return sa_pg_credential_list_after(pg, trunk_id, NULL, cb, arg);
}

int sa_pg_credential_get(struct sa_pg *pg, const char *cred_id, struct sa_credential *out)
{
	const char *params[] = { cred_id };
	PGresult *r;
	int rc = exec(pg, "SELECT " CRED_COLS " FROM credentials WHERE id = $1", 1, params, &r);

	if (rc != SA_STORE_OK)
		return rc;
	memset(out, 0, sizeof *out);
	rc = PQntuples(r) == 1 ? cred_row(r, 0, out) : SA_STORE_ENOTFOUND;
	PQclear(r);
	return rc;
}

/* The HA1s of a credential (current, then previous), locked for the rotation's transaction. */
static int cred_lock(struct sa_pg *pg, const char *trunk_id, const char *cred_id, struct sa_credential *c)
{
	const char *params[] = { cred_id, trunk_id };
	PGresult *r;
	int rc = exec(pg, "SELECT " CRED_COLS ", ha1_md5, ha1_sha256, ha1_sha512_256 FROM credentials"
	                  " WHERE id = $1 AND trunk_id = $2 FOR UPDATE", 2, params, &r);

	if (rc != SA_STORE_OK)
		return rc;
	memset(c, 0, sizeof *c);
	rc = PQntuples(r) == 1 ? cred_row(r, 0, c) : SA_STORE_ENOTFOUND;
	for (int alg = 0; alg < SA_ALG_COUNT && rc == SA_STORE_OK; alg++)
		rc = col_copy(r, 0, 7 + alg, c->ha1[alg], sizeof c->ha1[alg]);
	PQclear(r);
	return rc;
}

static int cred_rotated_write(struct sa_pg *pg, const struct sa_credential *c)
{
	char version[24], rotated[24], until[24];
	const char *params[] = { c->id, c->ha1[SA_ALG_MD5], c->ha1[SA_ALG_SHA256], c->ha1[SA_ALG_SHA512_256],
	                         c->previous_ha1[SA_ALG_MD5], c->previous_ha1[SA_ALG_SHA256],
	                         c->previous_ha1[SA_ALG_SHA512_256], version, rotated, until };

	i64_text(c->password_version, version);
	i64_text(c->rotated_at, rotated);
	i64_text(c->previous_until, until);
	return run(pg, "UPDATE credentials SET ha1_md5 = $2, ha1_sha256 = $3, ha1_sha512_256 = $4, prev_ha1_md5 = $5,"
	               " prev_ha1_sha256 = $6, prev_ha1_sha512_256 = $7, password_version = $8::bigint,"
	               " rotated_at = $9::bigint, previous_until = $10::bigint WHERE id = $1", 10, params, NULL);
}

/* Inside the rotation's transaction: the same rules as the LMDB store's. */
static int rotate_txn(struct sa_pg *pg, const char *trunk_id, const char *cred_id, const char *password, size_t len,
                      unsigned min_len, unsigned overlap, int64_t now, struct sa_credential *c, char *why,
                      size_t whylen)
{
	char realm[SA_REALM_MAX], domain[SA_DOMAIN_MAX + 1];
	int rc = cred_lock(pg, trunk_id, cred_id, c);

	if (rc == SA_STORE_ENOTFOUND)
		snprintf(why, whylen, "unknown credential");
	if (rc == SA_STORE_OK)
		rc = sa_credential_validate(c->username, password, len, min_len, why, whylen);
	if (rc == SA_STORE_OK)
		rc = sa_pg_domain(pg, domain, sizeof domain);
	if (rc == SA_STORE_OK)
		rc = sa_store_realm(trunk_id, domain, realm, sizeof realm);
	if (rc == SA_STORE_OK)
		rc = sa_credential_rotate_apply(c, realm, password, len, overlap, now, why, whylen);
	if (rc == SA_STORE_OK)
		rc = cred_rotated_write(pg, c);
	return rc;
}

int sa_pg_credential_rotate(struct sa_pg *pg, const char *trunk_id, const char *cred_id, const char *password,
                            size_t password_len, unsigned min_len, unsigned overlap, int64_t now,
                            struct sa_credential *out, char *why, size_t whylen)
{
	struct sa_credential c;
	char dummy[8];

	if (why == NULL) {
		why = dummy;
		whylen = sizeof dummy;
	}
	if (overlap > SA_ROTATE_OVERLAP_MAX)
		return SA_STORE_EINVAL;
	int rc = run(pg, "BEGIN", 0, NULL, NULL);
	if (rc != SA_STORE_OK)
		return rc;
	rc = rotate_txn(pg, trunk_id, cred_id, password, password_len, min_len, overlap, now, &c, why, whylen);
	int end = run(pg, rc == SA_STORE_OK ? "COMMIT" : "ROLLBACK", 0, NULL, NULL);
	if (rc == SA_STORE_OK)
		rc = end;
	if (rc == SA_STORE_OK && out != NULL)
		*out = c;
	sa_credential_wipe(&c);
	return rc;
}

int sa_pg_credential_delete(struct sa_pg *pg, const char *trunk_id, const char *cred_id)
{
	const char *params[] = { cred_id, trunk_id };
	long n = 0;
	int rc = run(pg, "DELETE FROM credentials WHERE id = $1 AND trunk_id = $2", 2, params, &n);

	return rc == SA_STORE_OK && n == 0 ? SA_STORE_ENOTFOUND : rc;
}

/* ---- change log rows ---- */

static int json_text(const json_t *o, const char *field, char *out, size_t outlen)
{
	const char *s = json_string_value(json_object_get(o, field));

	if (s == NULL || (size_t)snprintf(out, outlen, "%s", s) >= outlen)
		return SA_STORE_EINVAL;
	return SA_STORE_OK;
}

static int json_i64(const json_t *o, const char *field, int64_t *out)
{
	const json_t *v = json_object_get(o, field);

	if (!json_is_integer(v))
		return SA_STORE_EINVAL;
	*out = (int64_t)json_integer_value(v);
	return SA_STORE_OK;
}

static int unhex(const char *s, unsigned char *out, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned v;
		if (sscanf(s + 2 * i, "%2x", &v) != 1)
			return SA_STORE_EINVAL;
		out[i] = (unsigned char)v;
	}
	return s[2 * n] == '\0' ? SA_STORE_OK : SA_STORE_EINVAL;
}

static int decode_account(const json_t *o, struct sa_mirror_change *ch)
{
	int rc = json_text(o, "id", ch->account.id, sizeof ch->account.id);

	if (rc == SA_STORE_OK)
		rc = json_text(o, "name", ch->account.name, sizeof ch->account.name);
	if (rc == SA_STORE_OK)
		rc = json_i64(o, "created_at", &ch->account.created_at);
	return rc;
}

/* bytea in JSON is "\x" and hex */
static int decode_apikey(const json_t *o, struct sa_mirror_change *ch)
{
	const char *h = json_string_value(json_object_get(o, "hash"));
	int rc = h != NULL && strncmp(h, "\\x", 2) == 0 ? unhex(h + 2, ch->apikey.hash, SA_APIKEY_HASH_LEN)
	                                                 : SA_STORE_EINVAL;

	if (rc == SA_STORE_OK)
		rc = json_text(o, "account_id", ch->apikey.account_id, sizeof ch->apikey.account_id);
	if (rc == SA_STORE_OK)
		rc = json_i64(o, "created_at", &ch->apikey.created_at);
	return rc;
}

static int decode_trunk(const json_t *o, struct sa_mirror_change *ch)
{
	char field[SA_POLICY_FIELD_MAX], why[160];
	const json_t *policy = json_object_get(o, "policy");
	int rc = json_text(o, "id", ch->trunk.id, sizeof ch->trunk.id);

	if (rc == SA_STORE_OK)
		rc = json_text(o, "account_id", ch->trunk.account_id, sizeof ch->trunk.account_id);
	if (rc == SA_STORE_OK)
		rc = json_text(o, "name", ch->trunk.name, sizeof ch->trunk.name);
	if (rc == SA_STORE_OK)
		rc = json_i64(o, "created_at", &ch->trunk.created_at);
	sa_policy_default(&ch->policy);
	if (rc == SA_STORE_OK && (!json_is_object(policy) || sa_policy_patch(&ch->policy, policy, field, why, sizeof why) < 0))
		rc = SA_STORE_EINVAL;
	return rc;
}

/* The rotation's fields: the previous HA1s are "" until the first rotation. */
static int decode_rotation(const json_t *o, struct sa_credential *c)
{
	static const char *const prev_cols[SA_ALG_COUNT] = {
		[SA_ALG_MD5] = "prev_ha1_md5", [SA_ALG_SHA256] = "prev_ha1_sha256",
		[SA_ALG_SHA512_256] = "prev_ha1_sha512_256",
	};
	int64_t version = 0;
	int rc = json_i64(o, "password_version", &version);

	if (rc == SA_STORE_OK && (version < 1 || version > UINT32_MAX))
		rc = SA_STORE_EINVAL;
	c->password_version = (uint32_t)version;
	if (rc == SA_STORE_OK)
		rc = json_i64(o, "rotated_at", &c->rotated_at);
	if (rc == SA_STORE_OK)
		rc = json_i64(o, "previous_until", &c->previous_until);
	for (int alg = 0; alg < SA_ALG_COUNT && rc == SA_STORE_OK; alg++) {
		size_t n;
		rc = json_text(o, prev_cols[alg], c->previous_ha1[alg], sizeof c->previous_ha1[alg]);
		n = strlen(c->previous_ha1[alg]);
		if (rc == SA_STORE_OK && n != 0 && n != sa_digest_hex_len((enum sa_digest_alg)alg))
			rc = SA_STORE_EINVAL;
	}
	return rc;
}

static int decode_credential(const json_t *o, struct sa_mirror_change *ch, bool gone)
{
	static const char *const ha1_cols[SA_ALG_COUNT] = {
		[SA_ALG_MD5] = "ha1_md5", [SA_ALG_SHA256] = "ha1_sha256", [SA_ALG_SHA512_256] = "ha1_sha512_256",
	};
	int rc = json_text(o, "id", ch->cred.id, sizeof ch->cred.id);

	if (rc == SA_STORE_OK)
		rc = json_text(o, "trunk_id", ch->cred.trunk_id, sizeof ch->cred.trunk_id);
	if (gone || rc != SA_STORE_OK)
		return rc;
	rc = json_text(o, "username", ch->cred.username, sizeof ch->cred.username);
	if (rc == SA_STORE_OK)
		rc = json_i64(o, "created_at", &ch->cred.created_at);
	for (int alg = 0; alg < SA_ALG_COUNT && rc == SA_STORE_OK; alg++) {
		rc = json_text(o, ha1_cols[alg], ch->cred.ha1[alg], sizeof ch->cred.ha1[alg]);
		if (rc == SA_STORE_OK && strlen(ch->cred.ha1[alg]) != sa_digest_hex_len((enum sa_digest_alg)alg))
			rc = SA_STORE_EINVAL;
	}
	return rc == SA_STORE_OK ? decode_rotation(o, &ch->cred) : rc;
}

/* A webhooks row; its secret only where the mirror signs with it (never logged from here). */
static int decode_webhook(const json_t *o, struct sa_mirror_change *ch, bool gone)
{
	struct sa_webhook *w = &ch->webhook;
	int64_t events = 0;
	int rc = json_text(o, "id", w->id, sizeof w->id);

	if (rc == SA_STORE_OK)
		rc = json_text(o, "account_id", w->account_id, sizeof w->account_id);
	if (gone || rc != SA_STORE_OK)
		return rc;
	rc = json_text(o, "url", w->url, sizeof w->url);
	if (rc == SA_STORE_OK)
		rc = json_i64(o, "events", &events);
	if (rc == SA_STORE_OK && (events <= 0 || events > UINT32_MAX))
		rc = SA_STORE_EINVAL;
	w->events = (uint32_t)events;
	if (rc == SA_STORE_OK)
		rc = json_text(o, "secret", w->secret, sizeof w->secret);
	if (rc == SA_STORE_OK)
		rc = json_i64(o, "created_at", &w->created_at);
	return rc;
}

/* Which mirror change a (table, op) is; NONE for what the mirror does not keep. */
static enum sa_mirror_kind change_kind(const char *table, const char *op)
{
	bool del = strcmp(op, "delete") == 0;

	if (strcmp(table, "accounts") == 0)
		return del ? SA_MIRROR_NONE : SA_MIRROR_ACCOUNT;
	if (strcmp(table, "api_keys") == 0)
		return del ? SA_MIRROR_APIKEY_GONE : SA_MIRROR_APIKEY;
	if (strcmp(table, "trunks") == 0)
		return del ? SA_MIRROR_NONE : SA_MIRROR_TRUNK;
	if (strcmp(table, "credentials") == 0)
		return del ? SA_MIRROR_CREDENTIAL_GONE : SA_MIRROR_CREDENTIAL;
	if (strcmp(table, "webhooks") == 0)
		return del ? SA_MIRROR_WEBHOOK_GONE : SA_MIRROR_WEBHOOK;
	return SA_MIRROR_NONE;
}

int sa_pg_change_decode(const char *table, const char *op, const char *payload, struct sa_mirror_change *out)
{
	json_error_t e;
	json_t *o;
	int rc = SA_STORE_EINVAL;

	memset(out, 0, sizeof *out);
	out->kind = change_kind(table, op);
	if (out->kind == SA_MIRROR_NONE)
		return SA_STORE_OK;
	o = json_loads(payload, 0, &e);
	if (!json_is_object(o)) {
		json_decref(o);
		return SA_STORE_EINVAL;
	}
	switch (out->kind) {
	case SA_MIRROR_ACCOUNT: rc = decode_account(o, out); break;
	case SA_MIRROR_APIKEY:
	case SA_MIRROR_APIKEY_GONE: rc = decode_apikey(o, out); break;
	case SA_MIRROR_TRUNK: rc = decode_trunk(o, out); break;
	case SA_MIRROR_CREDENTIAL: rc = decode_credential(o, out, false); break;
	case SA_MIRROR_CREDENTIAL_GONE: rc = decode_credential(o, out, true); break;
	case SA_MIRROR_WEBHOOK: rc = decode_webhook(o, out, false); break;
	case SA_MIRROR_WEBHOOK_GONE: rc = decode_webhook(o, out, true); break;
	case SA_MIRROR_NONE: break;
	}
	json_decref(o);
	return rc;
}

/* ---- registrations ---- */

int sa_pg_binding_decode(const char *payload, struct sa_binding *b, char *node, size_t nodelen)
{
	json_error_t e;
	json_t *o = json_loads(payload, 0, &e);
	int64_t port = 0, cseq = 0, version = 1;
	int rc = json_is_object(o) ? SA_STORE_OK : SA_STORE_EINVAL;

	memset(b, 0, sizeof *b);
	if (rc == SA_STORE_OK)
		rc = json_text(o, "credential_id", b->cred_id, sizeof b->cred_id);
	if (rc == SA_STORE_OK)
		rc = json_text(o, "contact", b->contact, sizeof b->contact);
	if (rc == SA_STORE_OK)
		rc = json_text(o, "node", node, nodelen);
	if (rc == SA_STORE_OK)
		rc = json_text(o, "trunk_id", b->trunk_id, sizeof b->trunk_id);
	if (rc == SA_STORE_OK)
		rc = json_text(o, "source", b->source, sizeof b->source);
	if (rc == SA_STORE_OK)
		rc = json_text(o, "transport", b->transport, sizeof b->transport);
	if (rc == SA_STORE_OK)
		rc = json_i64(o, "source_port", &port);
	if (rc == SA_STORE_OK)
		rc = json_i64(o, "registered_at", &b->registered_at);
	if (rc == SA_STORE_OK)
		rc = json_i64(o, "updated_at", &b->updated_at);
	if (rc == SA_STORE_OK)
		rc = json_i64(o, "expires_at", &b->expires_at);
	if (rc == SA_STORE_OK && (port <= 0 || port > 65535))
		rc = SA_STORE_EINVAL;
	/* what the relay does not need may be missing or too long for the struct */
	json_text(o, "user_agent", b->user_agent, sizeof b->user_agent);
	json_text(o, "call_id", b->call_id, sizeof b->call_id);
	json_i64(o, "cseq", &cseq);
	json_i64(o, "password_version", &version);
	b->source_port = (uint16_t)port;
	b->cseq = (uint32_t)cseq;
	b->password_version = (uint32_t)version;
	json_decref(o);
	return rc;
}

json_t *sa_pg_binding_json(const struct sa_binding *b, const char *node)
{
	return json_pack("{s:s,s:s,s:s,s:s,s:s,s:i,s:s,s:s,s:s,s:I,s:I,s:I,s:I,s:I}", "credential_id", b->cred_id,
	                 "contact", b->contact, "node", node, "trunk_id", b->trunk_id, "source", b->source,
	                 "source_port", (int)b->source_port, "transport", b->transport, "user_agent", b->user_agent,
	                 "call_id", b->call_id, "cseq", (json_int_t)b->cseq, "registered_at", (json_int_t)b->registered_at,
	                 "updated_at", (json_int_t)b->updated_at, "expires_at", (json_int_t)b->expires_at,
	                 "password_version", (json_int_t)b->password_version);
}

/* A trunk's live bindings whose owner beat within 4 s (as the relay judges
 * it: a live node beats every second), in the order of the LMDB store's
 * listing: credential id, then the SHA-256 of the contact. */
int sa_pg_registration_list_trunk(struct sa_pg *pg, const char *trunk_id, int64_t now, sa_pg_binding_cb cb, void *arg)
{
	char at[24];
	const char *params[] = { trunk_id, at };
	PGresult *r;

	i64_text(now, at);
	int rc = exec(pg, "SELECT to_jsonb(r)::text FROM registrations r JOIN nodes n ON n.name = r.node"
	                  " WHERE r.trunk_id = $1 AND r.expires_at > $2::bigint"
	                  " AND n.heartbeat_ms >= " DB_NOW_MS " - 4000"
	                  " ORDER BY r.credential_id COLLATE \"C\", sha256(convert_to(r.contact, 'UTF8'))",
	              2, params, &r);
	if (rc != SA_STORE_OK)
		return rc;
	for (int i = 0; i < PQntuples(r) && rc == SA_STORE_OK; i++) {
		struct sa_binding b;
		char node[SA_NODE_MAX];
		if (sa_pg_binding_decode(PQgetvalue(r, i, 0), &b, node, sizeof node) != SA_STORE_OK)
			continue;   /* not one of ours: skipped, as the store skips what it cannot read */
		if (cb(&b, node, arg) != 0)
			break;
	}
	PQclear(r);
	return rc;
}

/* ---- calls ---- */

/* A trunk's calls held by nodes that beat within 4 s (as registrations), by Call-ID. */
int sa_pg_calls_list_trunk(struct sa_pg *pg, const char *trunk_id, sa_pg_call_cb cb, void *arg)
{
	const char *params[] = { trunk_id };
	PGresult *r;
	int rc = exec(pg, "SELECT c.node, c.call_id, c.credential_id, c.inbound, c.confirmed, c.started_at FROM calls c"
	                  " JOIN nodes n ON n.name = c.node WHERE c.trunk_id = $1"
	                  " AND n.heartbeat_ms >= " DB_NOW_MS " - 4000"
	                  " ORDER BY c.call_id COLLATE \"C\", c.node COLLATE \"C\"", 1, params, &r);

	if (rc != SA_STORE_OK)
		return rc;
	for (int i = 0; i < PQntuples(r); i++) {
		struct sa_pg_call c = { .node = PQgetvalue(r, i, 0), .call_id = PQgetvalue(r, i, 1),
		                        .cred_id = PQgetvalue(r, i, 2), .inbound = PQgetvalue(r, i, 3)[0] == 't',
		                        .confirmed = PQgetvalue(r, i, 4)[0] == 't',
		                        .started_at = strtoll(PQgetvalue(r, i, 5), NULL, 10) };
		if (cb(&c, arg) != 0)
			break;
	}
	PQclear(r);
	return SA_STORE_OK;
}

/* ---- nonce keys ---- */

/* The ids kept (current, or retired within SA_PG_NONCE_KEY_KEEP) as a set, and the current one. */
static int nonce_keys_live(struct sa_pg *pg, const char *now, bool live[256], unsigned *current)
{
	PGresult *r;
	const char *params[] = { now };
	int rc = exec(pg, "SELECT id, retired_at IS NULL FROM nonce_keys WHERE retired_at IS NULL"
	                  " OR retired_at > $1::bigint - " SA_PG_NONCE_KEY_KEEP_TEXT " ORDER BY created_at, id",
	              1, params, &r);

	*current = 0;
	if (rc != SA_STORE_OK)
		return rc;
	for (int i = 0; i < PQntuples(r); i++) {
		unsigned id = (unsigned)atoi(PQgetvalue(r, i, 0));
		if (id < 1 || id > 255)
			continue;
		live[id] = true;
		if (strcmp(PQgetvalue(r, i, 1), "t") == 0)
			*current = id;   /* ordered by age: the newest not retired */
	}
	PQclear(r);
	return SA_STORE_OK;
}

static unsigned nonce_key_next(const bool live[256], unsigned current)
{
	for (unsigned step = 1; step <= 255; step++) {
		unsigned id = (current + step - 1) % 255 + 1;
		if (!live[id])
			return id;
	}
	return 0;
}

static int nonce_rotate_txn(struct sa_pg *pg, int64_t now, unsigned *id, unsigned *previous)
{
	unsigned char secret[32];
	char at[24], idtext[8], secrethex[2 * sizeof secret + 1];
	const char *params[] = { idtext, secrethex, at };
	bool live[256] = { false };
	/* serialises rotations, and a node's first key, against each other */
	int rc = run(pg, "LOCK TABLE nonce_keys IN SHARE ROW EXCLUSIVE MODE", 0, NULL, NULL);

	i64_text(now, at);
	if (rc == SA_STORE_OK)
		rc = nonce_keys_live(pg, at, live, previous);
	if (rc != SA_STORE_OK)
		return rc;
	if ((*id = nonce_key_next(live, *previous)) == 0)
		return SA_STORE_EFULL;
	if (RAND_bytes(secret, sizeof secret) != 1)
		return SA_STORE_EIO;
	hex(secret, sizeof secret, secrethex);
	OPENSSL_cleanse(secret, sizeof secret);
	snprintf(idtext, sizeof idtext, "%u", *id);
	rc = run(pg, "DELETE FROM nonce_keys WHERE id = $1::smallint OR retired_at <= $2::bigint - "
	             SA_PG_NONCE_KEY_KEEP_TEXT, 2, (const char *const[]){ idtext, at }, NULL);
	if (rc == SA_STORE_OK)
		rc = run(pg, "UPDATE nonce_keys SET retired_at = $1::bigint WHERE retired_at IS NULL", 1,
		         (const char *const[]){ at }, NULL);
	if (rc == SA_STORE_OK)
		rc = run(pg, "INSERT INTO nonce_keys (id, secret, created_at) VALUES ($1::smallint, decode($2, 'hex'),"
		             " $3::bigint)", 3, params, NULL);
	OPENSSL_cleanse(secrethex, sizeof secrethex);
	return rc;
}

int sa_pg_nonce_key_rotate(struct sa_pg *pg, int64_t now, unsigned *id, unsigned *previous)
{
	int rc = run(pg, "BEGIN", 0, NULL, NULL);

	if (rc != SA_STORE_OK)
		return rc;
	rc = nonce_rotate_txn(pg, now, id, previous);
	int end = run(pg, rc == SA_STORE_OK ? "COMMIT" : "ROLLBACK", 0, NULL, NULL);
	return rc != SA_STORE_OK ? rc : end;
}

/* ---- the fleet's auth-failure log ---- */

static void authfail_row(const PGresult *r, int row, struct sa_authfail *f)
{
	memset(f, 0, sizeof *f);
	f->at = strtoll(PQgetvalue(r, row, 2), NULL, 10);
	col_copy(r, row, 3, f->trunk_id, sizeof f->trunk_id);
	col_copy(r, row, 4, f->source, sizeof f->source);
	f->source_port = (uint16_t)atoi(PQgetvalue(r, row, 5));
	col_copy(r, row, 6, f->transport, sizeof f->transport);
	/* a username as tried is truncated like the local log's, never refused */
	snprintf(f->username, sizeof f->username, "%s", PQgetvalue(r, row, 7));
	col_copy(r, row, 8, f->reason, sizeof f->reason);
	col_copy(r, row, 9, f->method, sizeof f->method);
	f->password_version = strtoll(PQgetvalue(r, row, 10), NULL, 10);
}

int sa_pg_authfail_page(struct sa_pg *pg, const char *trunk_id, int64_t since, uint64_t before_id, unsigned limit,
                        sa_pg_authfail_cb cb, void *arg)
{
	char since_text[24], before[24], lim[16];
	const char *params[] = { trunk_id, since_text, before, lim };
	PGresult *r;

	i64_text(since, since_text);
	snprintf(before, sizeof before, "%lld", before_id > INT64_MAX ? (long long)INT64_MAX : (long long)before_id);
	snprintf(lim, sizeof lim, "%u", limit);
	int rc = exec(pg, "SELECT id, node, at, trunk_id, source, source_port, transport, username, reason, method,"
	                  " password_version FROM auth_failures WHERE trunk_id = $1 AND at >= $2::bigint"
	                  " AND id < $3::bigint ORDER BY id DESC LIMIT $4::bigint", 4, params, &r);
	if (rc != SA_STORE_OK)
		return rc;
	for (int i = 0; i < PQntuples(r); i++) {
		struct sa_authfail f;
		authfail_row(r, i, &f);
		if (cb(&f, strtoull(PQgetvalue(r, i, 0), NULL, 10), PQgetvalue(r, i, 1), arg) != 0)
			break;
	}
	PQclear(r);
	return SA_STORE_OK;
}

/* ---- Idempotency-Key answers ---- */

#define IDEM_TTL_TEXT   "86400"   /* SA_STORE_IDEM_TTL in SQL */
#define SA_PG_WH_KEEP_TEXT "604800"   /* SA_STORE_WH_KEEP_DAYS in seconds, in SQL */
#define IDEM_STALE_TEXT "60"      /* SA_PG_IDEM_CLAIM_STALE in SQL */
#define IDEM_PRUNE_TEXT "16"      /* expired records a keep removes at most */
/* the database's clock: every node ages the records alike */
#define DB_NOW "extract(epoch FROM now())::bigint"

_Static_assert(SA_STORE_IDEM_TTL == 86400 && SA_PG_IDEM_CLAIM_STALE == 60 && SA_STORE_WH_KEEP_DAYS * 86400 == 604800,
               "the SQL texts above say the same");

/* Inserts the claim, or takes over an expired record or a stale claim; a
 * live record stays and the insert returns no row. An insert racing another
 * node's waits for it (the primary key), then sees its row. */
static const char idem_claim_sql[] =
	"INSERT INTO idempotency (account_id, key_hash, fingerprint, claim, created_at)"
	" VALUES ($1, decode($2, 'hex'), decode($3, 'hex'), $4, " DB_NOW ")"
	" ON CONFLICT (account_id, key_hash) DO UPDATE SET fingerprint = EXCLUDED.fingerprint,"
	"  claim = EXCLUDED.claim, status = 0, location = '', body = NULL, created_at = EXCLUDED.created_at"
	" WHERE idempotency.created_at <= EXCLUDED.created_at - " IDEM_TTL_TEXT
	"  OR (idempotency.status = 0 AND idempotency.created_at <= EXCLUDED.created_at - " IDEM_STALE_TEXT ")"
	" RETURNING 1";

static const char idem_get_sql[] =
	"SELECT encode(fingerprint, 'hex'), status, location, body, created_at FROM idempotency"
	" WHERE account_id = $1 AND key_hash = decode($2, 'hex')";

/* The live record (OK, *out filled) or ENOTFOUND. */
static int idem_get(struct sa_pg *pg, const char *const params[2], struct sa_idem *out)
{
	PGresult *r;
	int rc = exec(pg, idem_get_sql, 2, params, &r);

	if (rc != SA_STORE_OK)
		return rc;
	if (PQntuples(r) != 1) {
		PQclear(r);
		return SA_STORE_ENOTFOUND;
	}
	rc = unhex(PQgetvalue(r, 0, 0), out->fingerprint, SA_IDEM_HASH) == SA_STORE_OK ? SA_STORE_OK : SA_STORE_EIO;
	out->status = atoi(PQgetvalue(r, 0, 1));
	snprintf(out->location, sizeof out->location, "%s", PQgetvalue(r, 0, 2));
	out->created_at = strtoll(PQgetvalue(r, 0, 4), NULL, 10);
	out->body = NULL;
	out->body_len = 0;
	if (rc == SA_STORE_OK && !PQgetisnull(r, 0, 3)) {
		out->body_len = (size_t)PQgetlength(r, 0, 3);
		out->body = strdup(PQgetvalue(r, 0, 3));
		rc = out->body != NULL ? SA_STORE_OK : SA_STORE_EIO;
	}
	PQclear(r);
	return rc;
}

int sa_pg_idem_claim(struct sa_pg *pg, const char *account_id, const unsigned char hash[SA_IDEM_HASH],
                     const unsigned char fingerprint[SA_IDEM_HASH], struct sa_idem *out,
                     char claim[SA_PG_IDEM_CLAIM_LEN + 1])
{
	unsigned char token[SA_PG_IDEM_CLAIM_LEN / 2];
	char hashhex[2 * SA_IDEM_HASH + 1], fphex[2 * SA_IDEM_HASH + 1];
	const char *params[] = { account_id, hashhex, fphex, claim };

	if (RAND_bytes(token, sizeof token) != 1)
		return SA_STORE_EIO;
	hex(token, sizeof token, claim);
	hex(hash, SA_IDEM_HASH, hashhex);
	hex(fingerprint, SA_IDEM_HASH, fphex);
	/* twice: the record seen by the insert may be released before it is read */
	for (int attempt = 0; attempt < 2; attempt++) {
		PGresult *r;
		int rc = exec(pg, idem_claim_sql, 4, params, &r);
		if (rc != SA_STORE_OK)
			return rc == SA_STORE_EUNKNOWN ? SA_STORE_EUNAVAIL : rc;   /* nothing but the claim was sent */
		bool claimed = PQntuples(r) == 1;
		PQclear(r);
		if (claimed)
			return SA_STORE_ENOTFOUND;
		rc = idem_get(pg, params, out);
		if (rc != SA_STORE_ENOTFOUND)
			return rc;
	}
	*out = (struct sa_idem){ .status = 0 };   /* still churning: as if in progress */
	memcpy(out->fingerprint, fingerprint, SA_IDEM_HASH);
	return SA_STORE_OK;
}

int sa_pg_idem_keep(struct sa_pg *pg, const char *account_id, const unsigned char hash[SA_IDEM_HASH],
                    const char *claim, const struct sa_idem *in)
{
	char hashhex[2 * SA_IDEM_HASH + 1], status[16];
	char *body = strndup(in->body != NULL ? in->body : "", in->body_len);
	const char *params[] = { account_id, hashhex, claim, status, in->location, in->body != NULL ? body : NULL };
	long n = 0;

	if (body == NULL)
		return SA_STORE_EIO;
	hex(hash, SA_IDEM_HASH, hashhex);
	snprintf(status, sizeof status, "%d", in->status);
	int rc = run(pg, "UPDATE idempotency SET status = $4::integer, location = $5, body = $6"
	                 " WHERE account_id = $1 AND key_hash = decode($2, 'hex') AND claim = $3", 6, params, &n);
	free(body);
	if (rc == SA_STORE_OK && n == 0)
		return SA_STORE_ENOTFOUND;
	if (rc == SA_STORE_OK)   /* bounded: a burst of expiries is spread over the next keeps */
		rc = run(pg, "DELETE FROM idempotency WHERE (account_id, key_hash) IN (SELECT account_id, key_hash"
		             " FROM idempotency WHERE created_at <= " DB_NOW " - " IDEM_TTL_TEXT
		             " ORDER BY created_at LIMIT " IDEM_PRUNE_TEXT ")", 0, NULL, NULL);
	return rc;
}

int sa_pg_idem_release(struct sa_pg *pg, const char *account_id, const unsigned char hash[SA_IDEM_HASH],
                       const char *claim)
{
	char hashhex[2 * SA_IDEM_HASH + 1];
	const char *params[] = { account_id, hashhex, claim };

	hex(hash, SA_IDEM_HASH, hashhex);
	return run(pg, "DELETE FROM idempotency WHERE account_id = $1 AND key_hash = decode($2, 'hex') AND claim = $3"
	               " AND status = 0", 3, params, NULL);
}

/* ---- webhooks ---- */

#define WEBHOOK_COLS "id, account_id, url, events, created_at"

/* WEBHOOK_COLS: the record without its secret. */
static int webhook_row(const PGresult *r, int row, struct sa_webhook *w)
{
	int rc = col_copy(r, row, 0, w->id, sizeof w->id);

	memset(w->secret, 0, sizeof w->secret);
	if (rc == SA_STORE_OK)
		rc = col_copy(r, row, 1, w->account_id, sizeof w->account_id);
	if (rc == SA_STORE_OK)
		rc = col_copy(r, row, 2, w->url, sizeof w->url);
	w->events = (uint32_t)strtoul(PQgetvalue(r, row, 3), NULL, 10);
	w->created_at = strtoll(PQgetvalue(r, row, 4), NULL, 10);
	return rc;
}

/* Inside the creation's transaction: the account's webhooks are counted
 * under a lock of its own (held to the commit), so that two nodes creating
 * at once see each other's; the lock needs no right on any table. */
static int webhook_create_txn(struct sa_pg *pg, const struct sa_webhook *w, unsigned max)
{
	char events[16], at[24];
	const char *lock[] = { w->account_id };
	const char *params[] = { w->id, w->account_id, w->url, events, w->secret, at };
	PGresult *r;
	int rc = run(pg, "SELECT pg_advisory_xact_lock(731602051, hashtext($1))", 1, lock, NULL);

	if (rc == SA_STORE_OK)
		rc = exec(pg, "SELECT count(*) FROM webhooks WHERE account_id = $1", 1, lock, &r);
	if (rc != SA_STORE_OK)
		return rc;
	long n = strtol(PQgetvalue(r, 0, 0), NULL, 10);
	PQclear(r);
	if (n >= (long)max)
		return SA_STORE_EFULL;
	snprintf(events, sizeof events, "%u", w->events);
	i64_text(w->created_at, at);
	return run(pg, "INSERT INTO webhooks (id, account_id, url, events, secret, created_at)"
	               " VALUES ($1, $2, $3, $4::integer, $5, $6::bigint)", 6, params, NULL);
}

int sa_pg_webhook_create(struct sa_pg *pg, const char *account_id, const char *url, uint32_t events, unsigned max,
                         int64_t now, struct sa_webhook *out)
{
	memset(out, 0, sizeof *out);
	if (strlen(url) >= sizeof out->url || (size_t)snprintf(out->account_id, sizeof out->account_id, "%s",
	                                                       account_id) >= sizeof out->account_id)
		return SA_STORE_EINVAL;
	snprintf(out->url, sizeof out->url, "%s", url);
	out->events = events;
	out->created_at = now;
	int rc = sa_store_id_make("wh_", out->id);
	if (rc == SA_STORE_OK)
		rc = sa_store_webhook_secret_make(out->secret);
	if (rc == SA_STORE_OK)
		rc = run(pg, "BEGIN", 0, NULL, NULL);
	if (rc != SA_STORE_OK) {
		OPENSSL_cleanse(out->secret, sizeof out->secret);
		return rc;
	}
	rc = webhook_create_txn(pg, out, max);
	int end = run(pg, rc == SA_STORE_OK ? "COMMIT" : "ROLLBACK", 0, NULL, NULL);
	if (rc == SA_STORE_OK)
		rc = end;
	if (rc != SA_STORE_OK)
		OPENSSL_cleanse(out->secret, sizeof out->secret);
	return rc;
}

int sa_pg_webhook_get(struct sa_pg *pg, const char *webhook_id, struct sa_webhook *out)
{
	const char *params[] = { webhook_id };
	PGresult *r;
	int rc = exec(pg, "SELECT " WEBHOOK_COLS " FROM webhooks WHERE id = $1", 1, params, &r);

	memset(out, 0, sizeof *out);
	if (rc != SA_STORE_OK)
		return rc;
	rc = PQntuples(r) == 1 ? webhook_row(r, 0, out) : SA_STORE_ENOTFOUND;
	PQclear(r);
	return rc;
}

/* The webhook, then the fleet's records of its deliveries, in one transaction. */
int sa_pg_webhook_delete(struct sa_pg *pg, const char *account_id, const char *webhook_id)
{
	const char *params[] = { webhook_id, account_id };
	long n = 0;
	int rc = run(pg, "BEGIN", 0, NULL, NULL);

	if (rc != SA_STORE_OK)
		return rc;
	rc = run(pg, "DELETE FROM webhooks WHERE id = $1 AND account_id = $2", 2, params, &n);
	if (rc == SA_STORE_OK && n == 0)
		rc = SA_STORE_ENOTFOUND;
	if (rc == SA_STORE_OK)
		rc = run(pg, "DELETE FROM webhook_deliveries WHERE webhook_id = $1", 1, params, NULL);
	int end = run(pg, rc == SA_STORE_OK ? "COMMIT" : "ROLLBACK", 0, NULL, NULL);
	return rc != SA_STORE_OK ? rc : end;
}

/* In the store's order: the ids' bytes (an account has at most a few). */
int sa_pg_webhook_list_after(struct sa_pg *pg, const char *account_id, const char *after_id,
                             sa_store_webhook_cb cb, void *arg)
{
	const char *after = after_id != NULL ? after_id : "";
	const char *params[] = { account_id, after };
	PGresult *r;
	int rc = exec(pg, "SELECT " WEBHOOK_COLS " FROM webhooks WHERE account_id = $1"
	                  " AND id COLLATE \"C\" > $2 ORDER BY id COLLATE \"C\"", 2, params, &r);

	if (rc != SA_STORE_OK)
		return rc;
	if (after[0] != '\0') {   /* the cursor must be one of the account's, even with nothing after it */
		PGresult *k;
		rc = exec(pg, "SELECT 1 FROM webhooks WHERE account_id = $1 AND id = $2", 2, params, &k);
		if (rc == SA_STORE_OK) {
			rc = PQntuples(k) == 1 ? SA_STORE_OK : SA_STORE_EINVAL;
			PQclear(k);
		}
	}
	for (int i = 0; rc == SA_STORE_OK && i < PQntuples(r); i++) {
		struct sa_webhook w;
		rc = webhook_row(r, i, &w);
		if (rc == SA_STORE_OK && cb(&w, arg) != 0)
			break;
	}
	PQclear(r);
	return rc;
}

/* ---- the fleet's deliveries ---- */

const char sa_pg_webhooks_adopt_sql[] =
	"INSERT INTO webhooks (id, account_id, url, events, secret, created_at)"
	" SELECT r.id, r.account_id, r.url, r.events, r.secret, r.created_at"
	"  FROM json_populate_recordset(NULL::webhooks, $1::json) r"
	"  WHERE EXISTS (SELECT 1 FROM accounts a WHERE a.id = r.account_id)"
	"  AND r.id NOT IN (SELECT payload->>'id' FROM change_log WHERE kind = 'webhooks')"
	"  AND ($2::bigint >= (SELECT last FROM change_seq) OR EXISTS (SELECT 1 FROM change_log WHERE seq = $2::bigint + 1))"
	" ON CONFLICT (id) DO NOTHING";

/* A delivery pushed twice in one batch: its last state (ON CONFLICT may
 * touch a row once per statement). */
const char sa_pg_deliveries_push_sql[] =
	"WITH r AS (SELECT DISTINCT ON (p.id) p.* FROM jsonb_array_elements($2::jsonb) WITH ORDINALITY AS e(v, n),"
	"   jsonb_populate_record(NULL::webhook_deliveries, e.v) AS p ORDER BY p.id, e.n DESC),"
	" old AS (DELETE FROM webhook_deliveries d WHERE d.node = $1 AND d.status <> 0"
	"   AND d.created_at < " DB_NOW " - " SA_PG_WH_KEEP_TEXT ")"
	" INSERT INTO webhook_deliveries AS d (node, id, webhook_id, event, status, attempts, last_status_code,"
	"  last_error, next_attempt_at, created_at)"
	" SELECT $1, r.id, r.webhook_id, r.event, r.status, r.attempts, r.last_status_code, r.last_error,"
	"  r.next_attempt_at, r.created_at FROM r WHERE EXISTS (SELECT 1 FROM webhooks w WHERE w.id = r.webhook_id)"
	" ON CONFLICT (node, id) DO UPDATE SET status = EXCLUDED.status, attempts = EXCLUDED.attempts,"
	"  last_status_code = EXCLUDED.last_status_code, last_error = EXCLUDED.last_error,"
	"  next_attempt_at = EXCLUDED.next_attempt_at";

static void delivery_row(const PGresult *r, int row, struct sa_delivery *d)
{
	memset(d, 0, sizeof *d);
	col_copy(r, row, 1, d->id, sizeof d->id);
	col_copy(r, row, 2, d->webhook_id, sizeof d->webhook_id);
	col_copy(r, row, 3, d->event, sizeof d->event);
	d->status = (int32_t)atoi(PQgetvalue(r, row, 4));
	d->attempts = (uint32_t)strtoul(PQgetvalue(r, row, 5), NULL, 10);
	d->last_status_code = (int32_t)atoi(PQgetvalue(r, row, 6));
	snprintf(d->last_error, sizeof d->last_error, "%s", PQgetvalue(r, row, 7));
	d->next_attempt_at = strtoll(PQgetvalue(r, row, 8), NULL, 10);
	d->created_at = strtoll(PQgetvalue(r, row, 9), NULL, 10);
}

/* The position (ord) the page starts after: 0, or after_id's (EINVAL when it is not this webhook's). */
static int delivery_start(struct sa_pg *pg, const char *webhook_id, const char *after_id, char ord[24])
{
	const char *params[] = { webhook_id, after_id };
	PGresult *r;

	snprintf(ord, 24, "0");
	if (after_id == NULL || after_id[0] == '\0')
		return SA_STORE_OK;
	int rc = exec(pg, "SELECT min(ord) FROM webhook_deliveries WHERE webhook_id = $1 AND id = $2", 2, params, &r);
	if (rc != SA_STORE_OK)
		return rc;
	rc = PQntuples(r) == 1 && !PQgetisnull(r, 0, 0) ? SA_STORE_OK : SA_STORE_EINVAL;
	if (rc == SA_STORE_OK)
		snprintf(ord, 24, "%s", PQgetvalue(r, 0, 0));
	PQclear(r);
	return rc;
}

int sa_pg_delivery_list_after(struct sa_pg *pg, const char *webhook_id, const char *after_id, unsigned limit,
                              sa_pg_delivery_cb cb, void *arg)
{
	char ord[24], lim[16];
	const char *params[] = { webhook_id, ord, lim };
	PGresult *r;
	int rc = delivery_start(pg, webhook_id, after_id, ord);

	snprintf(lim, sizeof lim, "%u", limit);
	if (rc == SA_STORE_OK)
		rc = exec(pg, "SELECT node, id, webhook_id, event, status, attempts, last_status_code, last_error,"
		              " next_attempt_at, created_at FROM webhook_deliveries WHERE webhook_id = $1"
		              " AND ord > $2::bigint ORDER BY ord LIMIT $3::bigint", 3, params, &r);
	if (rc != SA_STORE_OK)
		return rc;
	for (int i = 0; i < PQntuples(r); i++) {
		struct sa_delivery d;
		delivery_row(r, i, &d);
		if (cb(&d, PQgetvalue(r, i, 0), arg) != 0)
			break;
	}
	PQclear(r);
	return SA_STORE_OK;
}
