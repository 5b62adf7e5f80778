/* cluster.c: fleet mode: PostgreSQL's change log applied to the local store, and the node's heartbeat. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/event.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "api.h"
#include "log.h"
#include "nonce.h"
#include "pgstore.h"
#include "server.h"
#include "work.h"

/*
 * The feed. The SIP path reads the local LMDB store only; with [cluster]
 * that store is a mirror of the database, kept by this feed:
 *
 *   connect -> LISTEN sipauthd_changes (and check the domain) -> look
 *   look:   changes after the last sequence applied, BATCH at a time;
 *           applied on the store thread (daemon/work.c) in one LMDB
 *           transaction with their last sequence, then look again
 *   wake:   a NOTIFY, or the 1 s tick (a safety net for a lost one)
 *   resync: when the log no longer reaches back to the mirror (pruned) or
 *           went backwards (another database), the whole database at once
 *   same history: each look also reads the change last applied, which must
 *           be the one applied (its hash, kept in memory): after a failover
 *           to a standby that missed changes, the new primary numbers new
 *           changes from its own head, and once it is past this mirror's
 *           sequence "the next change" would be another history's. Another
 *           change there is a resync. The hash is not kept across a restart:
 *           a node that starts learns it at its first look.
 *
 * LISTEN comes before the first look so that no change committed between
 * the two goes unnoticed. Everything runs on the loop through libpq's
 * asynchronous calls (PQconnectStart/Poll, PQsendQuery*, PQconsumeInput,
 * PQisBusy) on a non-blocking connection: the loop never waits for the
 * database. A query that gets no answer in QUERY_TIMEOUT_MS, or a broken
 * connection, drops the connection; the tick connects again. Meanwhile SIP
 * goes on from the mirror as it is.
 *
 * Libpq resolves a host name inside PQconnectStart (blocking): [cluster]
 * database should name the server by address (host=10.0.0.5 or hostaddr=).
 */

#define BATCH 1000               /* changes per look (and per LMDB transaction) */
#define TICK_MS 1000             /* the safety-net poll, the heartbeat, reconnection */
#define QUERY_TIMEOUT_MS 5000    /* a connection or query this long without an answer is dropped */
#define FAIL_QUEUE 4096          /* auth failures waiting for the fleet's log; more are counted lost */
#define FAIL_BATCH 500           /* ... pushed per query */
#define FAIL_BATCHES 4           /* ... and queries per tick: 2000 a second, the feed's look waits no longer */
#define FAIL_KEEP 1000           /* per node and trunk in the fleet's log: as the local log keeps */
#define FAIL_PRUNE_MS 60000      /* how often a node trims its records there */
#define CALLS_PUSH_MAX 2000      /* calls started, changed or ended written per tick */
#define DLV_BATCH 500            /* webhook delivery states pushed per query */
#define DLV_BATCHES 4            /* ... and queries per tick */

/* A call as this node wrote it to the fleet's calls table. */
struct call_row {
	char call_id[128];
	char trunk_id[SA_ID_MAX];
	char cred_id[SA_ID_MAX];
	bool inbound, confirmed;
	int64_t started_at;
};

struct call_rows {
	struct call_row *v;
	size_t n, cap;
};

/*
 * After each heartbeat, chained on the same connection (one query at a time):
 *
 *   nonce keys: the database's current key id, and the keys themselves only
 *               when it is not the one this node holds; none at all: this
 *               node makes the first (another node at once: one wins)
 *   failures:   the auth failures queued since, FAIL_BATCH per query and at
 *               most FAIL_BATCHES queries; once a minute the node's records
 *               past FAIL_KEEP per trunk go
 *   deliveries: the states of this node's webhook deliveries queued by the
 *               delivery thread since (new ones, each attempt's outcome),
 *               DLV_BATCH per query and at most DLV_BATCHES queries, as
 *               the failures; its finished ones past SA_STORE_WH_KEEP_DAYS
 *               go on the way
 *   calls:      the difference between the node's calls now and what it
 *               wrote last (CALLS_PUSH_MAX rows per tick); after each
 *               connect, its rows are deleted first and all written again
 *
 * The calls are compared, not queued as starts and ends: nothing is added
 * to the SIP path (not even a queue slot), nothing can be lost (a push
 * that fails makes the next tick write them all again), and the table
 * converges after the database was away without a second mechanism. The
 * comparison walks and sorts the call table once a second on the loop:
 * bounded by [proxy] max_calls (not measured yet at ten thousand calls).
 *
 * The keys come with the heartbeat rather than through the change log so
 * that their secrets never enter change_log (which every node reads and
 * nobody prunes soon), and because a rotation needs no haste: the previous
 * key stays accepted, and a node answers another node's nonce stale anyway.
 */

enum conn_state { CS_DOWN, CS_CONNECTING, CS_UP, CS_REFUSED };
enum step { ST_IDLE, ST_HELLO, ST_CHANGES, ST_SNAPSHOT, ST_HEARTBEAT, ST_APPLYING, ST_NONCE_KEYS, ST_NONCE_FIRST,
             ST_FAIL_PUSH, ST_FAIL_PRUNE, ST_DLV_PUSH, ST_REG_LOAD, ST_REG_PUT, ST_CALLS_WIPE, ST_CALLS_PUSH,
             ST_WH_ADOPT };

static const char *const step_names[] = {
	[ST_IDLE] = "idle", [ST_HELLO] = "hello", [ST_CHANGES] = "changes", [ST_SNAPSHOT] = "snapshot",
	[ST_HEARTBEAT] = "heartbeat", [ST_APPLYING] = "applying", [ST_NONCE_KEYS] = "nonce_keys",
	[ST_NONCE_FIRST] = "nonce_key_first", [ST_FAIL_PUSH] = "failures_push", [ST_FAIL_PRUNE] = "failures_prune",
	[ST_DLV_PUSH] = "deliveries_push",
	[ST_REG_LOAD] = "registrations_load", [ST_REG_PUT] = "registrations_write", [ST_CALLS_WIPE] = "calls_wipe",
	[ST_CALLS_PUSH] = "calls_push", [ST_WH_ADOPT] = "webhooks_adopt",
};

/*
 * Registrations. A binding is owned by the node that holds the PBX's flow
 * and is written by it alone (sa_cluster_binding_changed: the credentials
 * whose bindings changed, written together at the next look). The other
 * nodes learn it from the change log (insert, delete, or a move to another
 * owner: a refresh is not logged) into the remote view (c->rv), in memory
 * on the loop, so an inbound call finds its owner without asking the
 * database. The view is loaded whole at each connection and after a
 * resync (built aside, then swapped in), then kept by the feed's rows
 * newer than the load. Memory rather than the LMDB mirror:
 * another node's binding is worth only what its owner's liveness is, which
 * is known from the heartbeats (in memory too); a restart loads it again,
 * and the store's records stay as they are.
 *
 * An owner is alive while its last beat (nodes.heartbeat_ms, by the
 * database's clock) is at most STALE_MS old. Each heartbeat answer gives
 * every other node's beat and the database's time; between answers the age
 * runs on with our own clock, so a stopped node is skipped STALE_MS after
 * its last beat, not at our next look. A live node beats every second:
 * 3 s to spare for a slow loop or database.
 */
#define STALE_MS 4000
#define NODES_MAX 64
#define REMOTE_BUCKETS 1024     /* at first; doubled whenever there are twice as many bindings */
#define DIRTY_MAX 4096           /* credentials waiting to be written; more are dropped (logged) */
#define PUT_MAX 256              /* credentials per write */

struct fleet_node {
	char name[SA_NODE_MAX];
	char proto[8], host[64], port[8];   /* its address, udp:HOST:PORT */
	int family;
	unsigned char addr[16];
	int64_t age_ms;              /* of its last beat, at the last answer */
	bool listed;                 /* in the last answer */
	bool stale;                  /* at the last answer (logged when it changes) */
};

/* Another node's binding, in two tables: by trunk (an inbound call's lookup
 * walks its trunk's chain) and by identity (credential and contact: the
 * feed's row finds its entry without walking a trunk). Both grow with the
 * bindings: a fixed table made the load of a million registrations walk
 * chains of a thousand for each, under the view's write lock. */
struct remote {
	struct remote *next, **pprev;   /* same trunk bucket; pprev: what points at it */
	struct remote *id_next;         /* same identity bucket */
	uint64_t trunk_hash, id_hash;
	struct sa_binding b;
	char node[SA_NODE_MAX];
};

static const char *const state_names[] = {
	[CS_DOWN] = "down", [CS_CONNECTING] = "connecting", [CS_UP] = "up", [CS_REFUSED] = "refused",
};

/* The two tables: nbuckets each (a power of two), NULL until the first binding. */
struct remote_view {
	struct remote **by_trunk, **by_id;
	size_t nbuckets;
	unsigned nremote;
};

struct sa_cluster {
	struct sa_server *srv;
	PGconn *conn;
	enum conn_state state;
	enum step step;
	struct event *io;            /* PQsocket: read while up; read or write while connecting */
	struct event *wr;            /* PQsocket: write, while libpq holds output it could not send */
	struct event *tick;
	struct event *kick;          /* bindings changed: write them from the loop's next turn */
	bool again;                  /* woken while busy: look again once idle */
	bool resync;                 /* the next look takes the whole database */
	bool hello_seen;             /* the hello's domain came */
	bool hello_ok;               /* ... and matched */
	uint64_t applied;            /* last sequence in the mirror */
	uint64_t head;               /* last sequence the database had at the last look */
	uint64_t mark;               /* hash of the change at applied (mark_known: since the last resync or start) */
	bool mark_known;
	bool overlap;                /* the look in flight asked for the change at applied too */
	uint64_t since_ms;           /* when the query in flight was sent, or the connection started */
	PGresult *rows;              /* the rows of the query in flight */
	char address[96];
	uint8_t nonce_key;           /* the database's key id installed (0: none yet) */
	bool nonce_none;             /* the database had no current key */
	struct sa_authfail *fails;   /* ring of FAIL_QUEUE */
	size_t fail_head, fail_count;
	size_t fail_sent;            /* in the push in flight */
	unsigned fail_batches;       /* pushes since the heartbeat */
	bool fail_prune;             /* pushed since the last trim */
	int64_t fail_pruned_ms;
	bool wh_adopted;             /* this store's own webhooks are in the database (once per start) */
	bool wh_adopt_tried;         /* ... asked since the connect (a refusal is not asked again each second) */
	size_t dlv_sent;             /* delivery states in the push in flight */
	unsigned dlv_batches;        /* pushes since the heartbeat */
	struct sa_metrics_fleet stats;
	/* What every SIP worker reads: the other nodes, their bindings, whether
	 * the database is up (node_age). This loop (worker 0's) changes them
	 * under the write lock; the workers read under the read lock. Everything
	 * else here is this loop's alone: the other workers post their changes
	 * to it (daemon/sip_customer.c). */
	pthread_rwlock_t view;
	unsigned share_nodes;        /* nodes alive at the last heartbeat (atomic: read by every worker) */
	/* registrations */
	bool beat_ok;                /* our nodes row is there (registrations refer to it) */
	bool reg_load;               /* the next look loads the other nodes' bindings */
	uint64_t reg_seq;            /* the sequence remote is as of */
	uint64_t view_ms;            /* the last heartbeat answer */
	int64_t beat_written_ms;     /* the beat this node wrote last (0: none known since the connect) */
	int64_t twin_logged_ms;      /* when another node with this name was last logged */
	bool skew_logged;            /* the clock's offset from the database's is logged as too large */
	int64_t beat_sent_wall_ms;   /* this host's clock when the heartbeat in flight went */
	struct fleet_node nodes[NODES_MAX];
	unsigned nnodes;
	struct remote_view rv;
	char (*dirty)[SA_ID_MAX];    /* credentials whose bindings changed here, the first put_count in flight */
	unsigned ndirty;
	unsigned put_count;          /* credentials in the write in flight (kept until it is answered) */
	bool dirty_dropped;          /* logged once until the set empties */
	/* calls */
	bool calls_wiped;            /* since the connect, our rows were deleted: written is what the table has */
	struct call_rows written;    /* sorted by trunk and Call-ID */
	struct call_rows sending;    /* what written becomes when the push in flight is answered */
};

static void look(struct sa_cluster *c);

static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the connection ---- */

static void events_free(struct sa_cluster *c)
{
	if (c->io)
		event_free(c->io);
	if (c->wr)
		event_free(c->wr);
	c->io = c->wr = NULL;
}

/* libpq's messages run over several lines ("...\n\tThis probably means..."): one line of them. */
static const char *one_line(const char *msg, char *out, size_t outlen)
{
	size_t n = 0;

	for (const char *s = msg; *s && n + 1 < outlen; s++)
		if (!(*s == ' ' || *s == '\n' || *s == '\t') || (n > 0 && out[n - 1] != ' '))
			out[n++] = *s == '\n' || *s == '\t' ? ' ' : *s;
	while (n > 0 && out[n - 1] == ' ')
		n--;
	out[n] = '\0';
	return out;
}

static void view_write(struct sa_cluster *c)
{
	pthread_rwlock_wrlock(&c->view);
}

static void view_read(const struct sa_cluster *c)
{
	pthread_rwlock_rdlock((pthread_rwlock_t *)&c->view);
}

static void view_done(const struct sa_cluster *c)
{
	pthread_rwlock_unlock((pthread_rwlock_t *)&c->view);
}

/* The connection's state, which node_age reads on every worker. */
static void set_state(struct sa_cluster *c, enum conn_state to)
{
	view_write(c);
	c->state = to;
	view_done(c);
}

/* Drops the connection (logged once per change of state); the tick tries again. */
static void down(struct sa_cluster *c, const char *msg, enum conn_state to)
{
	char q[256], why[192];

	one_line(msg, why, sizeof(why));
	if (c->state == CS_UP || to == CS_REFUSED)
		log_warn("event=cluster_down node=%s error=\"%s\" applied=%llu", c->srv->cfg.cluster_node,
		         sa_log_quote(why, q, sizeof(q)), (unsigned long long)c->applied);
	else if (c->stats.connect_failures == 0)
		log_warn("event=cluster_connect_failed node=%s error=\"%s\" hint=\"SIP goes on from the local store; "
		         "retrying every second\"", c->srv->cfg.cluster_node, sa_log_quote(why, q, sizeof(q)));
	if (c->state != CS_UP)
		c->stats.connect_failures++;
	if (c->step == ST_FAIL_PUSH)   /* sent, its outcome unknown: counted lost, never sent twice */
		c->stats.failures_lost += c->fail_sent;
	if (c->step == ST_DLV_PUSH)    /* likewise (the delivery's next attempt writes its state again) */
		c->stats.deliveries_lost += c->dlv_sent;
	c->fail_sent = c->dlv_sent = 0;
	c->beat_written_ms = 0;   /* a beat sent and not answered may have been written */
	events_free(c);
	PQclear(c->rows);
	c->rows = NULL;
	PQfinish(c->conn);
	c->conn = NULL;
	set_state(c, to);
	if (c->step != ST_APPLYING)
		c->step = ST_IDLE;
	c->put_count = 0;   /* a write in flight is sent again after the next connect */
	c->calls_wiped = false;   /* the next connect writes the calls again */
}

static void io_cb(evutil_socket_t fd, short what, void *arg);
static void write_cb(evutil_socket_t fd, short what, void *arg);

/* Waits for the socket (it may change while connecting): what, once or for good. */
static int watch(struct sa_cluster *c, short what)
{
	events_free(c);
	int fd = PQsocket(c->conn);
	c->io = fd >= 0 ? event_new(c->srv->base, fd, what, io_cb, c) : NULL;
	return c->io != NULL && event_add(c->io, NULL) == 0 ? 0 : -1;
}

/* libpq could not send everything: the rest when the socket takes it. */
static int flush(struct sa_cluster *c)
{
	int r = PQflush(c->conn);

	if (r == 0 || (r == 1 && c->wr != NULL))
		return r == 0 ? 0 : event_add(c->wr, NULL);
	if (r == 1) {
		c->wr = event_new(c->srv->base, PQsocket(c->conn), EV_WRITE, write_cb, c);
		return c->wr != NULL && event_add(c->wr, NULL) == 0 ? 0 : -1;
	}
	return -1;
}

static void write_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sa_cluster *c = arg;

	if (flush(c) < 0)
		down(c, PQerrorMessage(c->conn), CS_DOWN);
}

static void send_query(struct sa_cluster *c, enum step step, const char *sql, int n, const char *const *params)
{
	int ok = n == 0 ? PQsendQuery(c->conn, sql) : PQsendQueryParams(c->conn, sql, n, NULL, params, NULL, NULL, 0);

	if (!ok || flush(c) < 0) {
		down(c, PQerrorMessage(c->conn), CS_DOWN);
		return;
	}
	c->step = step;
	c->since_ms = sa_now_ms();
}

/* Connected: LISTEN first, then the first look (hello's answer). */
static void up(struct sa_cluster *c)
{
	set_state(c, CS_UP);
	c->stats.connects++;
	c->stats.connect_failures = 0;
	log_info("event=cluster_connected node=%s database=\"%s on %s:%s\" applied=%llu", c->srv->cfg.cluster_node,
	         PQdb(c->conn), PQhost(c->conn), PQport(c->conn), (unsigned long long)c->applied);
	if (watch(c, EV_READ | EV_PERSIST) < 0) {
		down(c, "cannot watch the connection", CS_DOWN);
		return;
	}
	c->hello_seen = c->hello_ok = false;
	c->reg_load = true;
	c->wh_adopt_tried = false;
	send_query(c, ST_HELLO, "LISTEN " SA_PG_CHANNEL "; SELECT value FROM settings WHERE name = 'domain'", 0, NULL);
}

static void connect_step(struct sa_cluster *c)
{
	switch (PQconnectPoll(c->conn)) {
	case PGRES_POLLING_READING:
		if (watch(c, EV_READ) < 0)
			down(c, "cannot watch the connection", CS_DOWN);
		return;
	case PGRES_POLLING_WRITING:
		if (watch(c, EV_WRITE) < 0)
			down(c, "cannot watch the connection", CS_DOWN);
		return;
	case PGRES_POLLING_OK:
		up(c);
		return;
	default:
		down(c, PQerrorMessage(c->conn), CS_DOWN);
		return;
	}
}

static void connect_start(struct sa_cluster *c)
{
	c->conn = sa_pg_connect_start(c->srv->cfg.cluster_database);
	c->since_ms = sa_now_ms();
	if (c->conn == NULL || PQstatus(c->conn) == CONNECTION_BAD || PQsetnonblocking(c->conn, 1) != 0) {
		down(c, c->conn ? PQerrorMessage(c->conn) : "out of memory", CS_DOWN);
		return;
	}
	set_state(c, CS_CONNECTING);
	/* libpq: after PQconnectStart, act as if polling had said "writing" */
	if (watch(c, EV_WRITE) < 0)
		down(c, "cannot watch the connection", CS_DOWN);
}

/* ---- answers ---- */

static void hello_result(struct sa_cluster *c, PGresult *r)
{
	const char *domain = PQntuples(r) == 1 ? PQgetvalue(r, 0, 0) : "";

	c->hello_seen = true;
	c->hello_ok = strcasecmp(domain, c->srv->domain) == 0;
	if (!c->hello_ok)
		log_err("event=cluster_domain_mismatch node=%s database=%s store=%s hint=\"credentials are hashed for "
		        "the database's domain: give this node a store of that domain\"", c->srv->cfg.cluster_node,
		        domain[0] ? domain : "(not initialised)", c->srv->domain);
}

/* ---- the other nodes ---- */

/* "udp:HOST:PORT" (HOST may be [v6]) into the node's parts; false when it is not one. */
static bool node_address_parse(struct fleet_node *n, const char *address)
{
	const char *colon = strchr(address, ':'), *host, *end;
	size_t hlen;

	if (colon == NULL || (size_t)(colon - address) >= sizeof(n->proto))
		return false;
	snprintf(n->proto, sizeof(n->proto), "%.*s", (int)(colon - address), address);
	host = colon + 1;
	if (*host == '[') {
		end = strchr(++host, ']');
		if (end == NULL || end[1] != ':')
			return false;
		hlen = (size_t)(end - host);
		end++;
	} else {
		end = strrchr(host, ':');
		if (end == NULL)
			return false;
		hlen = (size_t)(end - host);
	}
	if (hlen == 0 || hlen >= sizeof(n->host) || strlen(end + 1) == 0 || strlen(end + 1) >= sizeof(n->port))
		return false;
	snprintf(n->host, sizeof(n->host), "%.*s", (int)hlen, host);
	snprintf(n->port, sizeof(n->port), "%s", end + 1);
	n->family = strchr(n->host, ':') ? AF_INET6 : AF_INET;
	return inet_pton(n->family, n->host, n->addr) == 1;
}

static struct fleet_node *node_find(struct sa_cluster *c, const char *name)
{
	for (unsigned i = 0; i < c->nnodes; i++)
		if (strcmp(c->nodes[i].name, name) == 0)
			return &c->nodes[i];
	return NULL;
}

/* How old its last beat is now (while the database is away, the view
 * stays as it was at the last answer: nobody is judged on our silence). */
static int64_t node_age(const struct sa_cluster *c, const struct fleet_node *n)
{
	uint64_t ref = c->state == CS_UP ? sa_now_ms() : c->view_ms;

	return n->age_ms + (int64_t)(ref - c->view_ms);
}

static bool node_alive(const struct sa_cluster *c, const struct fleet_node *n)
{
	return n->listed && node_age(c, n) <= STALE_MS;
}

/* One node of the heartbeat's answer: [name, address, heartbeat_ms]. */
static void node_seen(struct sa_cluster *c, json_t *row, int64_t db_now)
{
	const char *name = json_string_value(json_array_get(row, 0));
	const char *address = json_string_value(json_array_get(row, 1));
	int64_t beat = json_integer_value(json_array_get(row, 2));
	struct fleet_node *n = name ? node_find(c, name) : NULL;

	if (name == NULL || address == NULL || strlen(name) >= SA_NODE_MAX)
		return;
	if (n == NULL && c->nnodes < NODES_MAX) {
		n = &c->nodes[c->nnodes++];
		memset(n, 0, sizeof(*n));
		snprintf(n->name, sizeof(n->name), "%s", name);
		n->stale = true;   /* until this answer says otherwise */
		log_info("event=cluster_node_seen node=%s other=%s address=%s", c->srv->cfg.cluster_node, name, address);
	}
	if (n == NULL)
		return;
	if (!node_address_parse(n, address))
		n->host[0] = '\0';
	n->age_ms = db_now - beat;
	n->listed = true;
}

/* The heartbeat's own row. Another process wrote it since this node's
 * last beat: another sipauthd has this [cluster] node name (a cloned host,
 * a copied file), and the two take each other's bindings, calls and
 * address; said as an error, once a minute while it goes on. And this
 * node's clock against the database's (by which the nodes' times are
 * compared: expiries of registrations, who registered last): more than
 * SKEW_MAX_MS off is said once, and again when it is back. */
#define SKEW_MAX_MS 2000
static void beat_own(struct sa_cluster *c, int64_t written, int64_t prev, const char *prev_address,
                     int64_t db_now, int64_t sent_wall_ms)
{
	const char *me = c->srv->cfg.cluster_node;
	if (c->beat_written_ms != 0 && prev != c->beat_written_ms) {
		c->stats.name_conflicts++;
		if (c->twin_logged_ms == 0 || db_now - c->twin_logged_ms >= 60000) {
			c->twin_logged_ms = db_now;
			log_err("event=cluster_node_name_taken node=%s other_address=%s hint=\"another sipauthd beats with this "
			        "[cluster] node name: each node needs a name of its own\"", me,
			        prev_address[0] ? prev_address : "-");
		}
	}
	c->beat_written_ms = written;
	/* the database's clock at the middle of the round trip */
	int64_t offset = db_now - (sent_wall_ms + wall_ms()) / 2;
	c->stats.clock_offset_ms = offset;
	bool off = offset > SKEW_MAX_MS || offset < -SKEW_MAX_MS;
	if (off != c->skew_logged) {
		c->skew_logged = off;
		if (off)
			log_err("event=cluster_clock_skew node=%s offset_ms=%lld hint=\"this host's clock is off the database's: "
			        "registrations are written with this clock and expired by the other nodes' (run NTP)\"", me,
			        (long long)offset);
		else
			log_info("event=cluster_clock_skew node=%s offset_ms=%lld state=ok", me, (long long)offset);
	}
}

/* The heartbeat's list of the other nodes (those that beat within a minute). */
static void nodes_seen(struct sa_cluster *c, const char *list, int64_t db_now)
{
	json_error_t e;
	json_t *a = json_loads(list, 0, &e), *row;
	uint64_t now_ms = sa_now_ms();
	size_t i;

	if (!json_is_array(a)) {
		json_decref(a);
		return;
	}
	view_write(c);
	for (unsigned k = 0; k < c->nnodes; k++)
		c->nodes[k].listed = false;
	c->view_ms = now_ms;
	json_array_foreach(a, i, row)
		node_seen(c, row, db_now);
	view_done(c);
	json_decref(a);
	c->beat_ok = true;
	for (unsigned k = 0; k < c->nnodes; k++) {
		struct fleet_node *n = &c->nodes[k];
		bool stale = !node_alive(c, n);
		if (stale && !n->stale)
			log_warn("event=cluster_node_stale node=%s other=%s silent_ms=%lld hint=\"its registrations are "
			         "skipped until it beats again\"", c->srv->cfg.cluster_node, n->name, (long long)node_age(c, n));
		else if (!stale && n->stale)
			log_info("event=cluster_node_alive node=%s other=%s", c->srv->cfg.cluster_node, n->name);
		n->stale = stale;
	}
}

/* Trusted: the nodes that beat within the minute (a host gone longer, whose
 * address may be someone else's now, is not). */
bool sa_cluster_is_node(const struct sa_cluster *c, const struct sockaddr *sa)
{
	const void *a = sa->sa_family == AF_INET6 ? (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr
	                                           : (const void *)&((const struct sockaddr_in *)sa)->sin_addr;
	size_t len = sa->sa_family == AF_INET6 ? 16 : 4;
	bool found = false;

	if (c == NULL)
		return false;
	view_read(c);
	for (unsigned i = 0; !found && i < c->nnodes; i++)
		found = c->nodes[i].listed && c->nodes[i].host[0] && c->nodes[i].family == sa->sa_family &&
		        memcmp(c->nodes[i].addr, a, len) == 0;
	view_done(c);
	return found;
}

/* ---- the other nodes' bindings ---- */

static uint64_t id_hash_of(const struct sa_binding *b)
{
	uint64_t c = sa_str_hash(b->contact);
	return sa_str_hash(b->cred_id) ^ (c << 1 | c >> 63);
}

/* A trunk chain is kept newest first (updated_at): an inbound request takes
 * the first live binding of its trunk without looking further. The feed
 * brings the newest, and the load comes oldest first: both go in at the
 * head; a row out of order walks to its place. */
static void link_at(struct remote **at, struct remote *r)
{
	r->next = *at;
	if (*at)
		(*at)->pprev = &r->next;
	r->pprev = at;
	*at = r;
}

static void trunk_link(struct remote_view *v, struct remote *r)
{
	struct remote **at = &v->by_trunk[r->trunk_hash & (v->nbuckets - 1)];
	while (*at && (*at)->b.updated_at > r->b.updated_at)
		at = &(*at)->next;
	link_at(at, r);
}

static void trunk_unlink(struct remote *r)
{
	*r->pprev = r->next;
	if (r->next)
		r->next->pprev = r->pprev;
}

static void id_link(struct remote_view *v, struct remote *r)
{
	struct remote **head = &v->by_id[r->id_hash & (v->nbuckets - 1)];
	r->id_next = *head;
	*head = r;
}

static void id_unlink(struct remote_view *v, struct remote *r)
{
	struct remote **p = &v->by_id[r->id_hash & (v->nbuckets - 1)];
	while (*p != r)
		p = &(*p)->id_next;
	*p = r->id_next;
}

/* Both tables at n buckets, every entry placed again by the hashes it keeps;
 * on allocation failure they stay as they are (longer chains, still right). */
static void remote_resize(struct remote_view *v, size_t n)
{
	struct remote **bt = calloc(n, sizeof(*bt)), **bi = calloc(n, sizeof(*bi));
	struct remote ***tail = calloc(n, sizeof(*tail));
	if (!bt || !bi || !tail) {
		free(bt);
		free(bi);
		free(tail);
		return;
	}
	struct remote **old = v->by_trunk;
	size_t oldn = v->nbuckets;
	free(v->by_id);
	v->by_trunk = bt;
	v->by_id = bi;
	v->nbuckets = n;
	for (size_t i = 0; i < n; i++)
		tail[i] = &bt[i];
	/* each old chain splits in order: appended at its new chain's tail */
	for (size_t i = 0; i < oldn; i++)
		for (struct remote *r = old[i], *next; r; r = next) {
			next = r->next;
			size_t k = r->trunk_hash & (n - 1);
			link_at(tail[k], r);
			tail[k] = &r->next;
			id_link(v, r);
		}
	free(tail);
	free(old);
}

static struct remote *remote_find(const struct remote_view *v, const struct sa_binding *b, uint64_t h)
{
	if (v->nbuckets == 0)
		return NULL;
	for (struct remote *r = v->by_id[h & (v->nbuckets - 1)]; r; r = r->id_next)
		if (r->id_hash == h && strcmp(r->b.cred_id, b->cred_id) == 0 && strcmp(r->b.contact, b->contact) == 0)
			return r;
	return NULL;
}

static void remote_clear(struct remote_view *v)
{
	for (size_t i = 0; i < v->nbuckets; i++)
		for (struct remote *r = v->by_trunk[i], *next; r; r = next) {
			next = r->next;
			free(r);
		}
	free(v->by_trunk);
	free(v->by_id);
	v->by_trunk = v->by_id = NULL;
	v->nbuckets = 0;
	v->nremote = 0;
}

/* One registrations row of the log (or of the load): the binding is
 * another node's now, or nobody's (deleted, or ours). */
static void remote_apply(struct sa_cluster *c, struct remote_view *v, const char *op, const char *payload)
{
	struct sa_binding b;
	char node[SA_NODE_MAX];

	if (sa_pg_binding_decode(payload, &b, node, sizeof(node)) != SA_STORE_OK) {
		log_warn("event=cluster_registration_unreadable node=%s", c->srv->cfg.cluster_node);
		return;
	}
	uint64_t h = id_hash_of(&b);
	struct remote *r = remote_find(v, &b, h);
	if (strcmp(op, "delete") == 0 || strcmp(node, c->srv->cfg.cluster_node) == 0) {
		if (r) {
			trunk_unlink(r);
			id_unlink(v, r);
			free(r);
			v->nremote--;
		}
		return;
	}
	if (r == NULL) {
		if (v->nbuckets == 0 || v->nremote >= 2 * v->nbuckets)
			remote_resize(v, v->nbuckets ? 2 * v->nbuckets : REMOTE_BUCKETS);
		if (v->nbuckets == 0 || (r = calloc(1, sizeof(*r))) == NULL)
			return;
		r->id_hash = h;
		id_link(v, r);
		v->nremote++;
	} else {
		trunk_unlink(r);   /* its trunk may have changed */
	}
	r->b = b;
	r->trunk_hash = sa_str_hash(b.trunk_id);
	trunk_link(v, r);
	snprintf(r->node, sizeof(r->node), "%s", node);
	log_debug("event=cluster_registration node=%s owner=%s cred=%s trunk=%s", c->srv->cfg.cluster_node, node,
	          b.cred_id, b.trunk_id);
}

static void remote_load(struct sa_cluster *c, PGresult *r)
{
	int n = PQntuples(r);

	if (n == 0 || strcmp(PQgetvalue(r, 0, 1), "head") != 0)
		return;
	/* built aside (this thread alone writes the view), then swapped in: the
	 * SIP workers' reads wait for the swap, not for the rows' decoding */
	struct remote_view fresh = { 0 }, old;
	for (int i = 1; i < n; i++)
		remote_apply(c, &fresh, "insert", PQgetvalue(r, i, 3));
	view_write(c);
	old = c->rv;
	c->rv = fresh;
	c->reg_seq = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
	view_done(c);
	remote_clear(&old);
	c->reg_load = false;
	log_info("event=cluster_registrations_loaded node=%s seq=%llu remote=%u", c->srv->cfg.cluster_node,
	         (unsigned long long)c->reg_seq, c->rv.nremote);
}

/* The feed's registrations rows newer than the load, before the batch is applied. */
static void remote_feed(struct sa_cluster *c, PGresult *r, int first_row)
{
	view_write(c);
	for (int i = first_row; i < PQntuples(r); i++) {
		uint64_t seq = strtoull(PQgetvalue(r, i, 0), NULL, 10);
		if (seq > c->reg_seq && strcmp(PQgetvalue(r, i, 1), "registrations") == 0) {
			remote_apply(c, &c->rv, PQgetvalue(r, i, 2), PQgetvalue(r, i, 3));
			c->reg_seq = seq;
		}
	}
	view_done(c);
}

int sa_cluster_remote_binding(struct sa_cluster *c, const char *trunk_id, struct sa_binding *out,
                              struct sa_fleet_owner *to)
{
	const struct remote *best = NULL;
	const struct fleet_node *owner = NULL;

	if (c == NULL)
		return -1;
	uint64_t th = sa_str_hash(trunk_id);
	view_read(c);
	for (const struct remote *r = c->rv.nbuckets ? c->rv.by_trunk[th & (c->rv.nbuckets - 1)] : NULL; r; r = r->next) {
		if (r->trunk_hash != th || strcmp(r->b.trunk_id, trunk_id) != 0)
			continue;
		const struct fleet_node *n = node_find(c, r->node);
		if (n == NULL || !n->host[0] || !node_alive(c, n))
			continue;
		best = r;      /* the chain is newest first */
		owner = n;
		break;
	}
	if (best != NULL) {
		*out = best->b;
		snprintf(to->proto, sizeof(to->proto), "%s", owner->proto);
		snprintf(to->host, sizeof(to->host), "%s", owner->host);
		snprintf(to->port, sizeof(to->port), "%s", owner->port);
		snprintf(to->node, sizeof(to->node), "%s", owner->name);
	}
	view_done(c);
	return best != NULL ? 0 : -1;
}

/* ---- this node's bindings, to the database ---- */

void sa_cluster_binding_changed(struct sa_cluster *c, const char *cred_id)
{
	if (c == NULL)
		return;
	/* one in the write in flight is written again: that write has its bindings as they were */
	for (unsigned i = c->put_count; i < c->ndirty; i++)
		if (strcmp(c->dirty[i], cred_id) == 0)
			return;
	if (c->ndirty == DIRTY_MAX) {
		if (!c->dirty_dropped)
			log_warn("event=cluster_registrations_behind node=%s hint=\"more than %d credentials wait to be "
			         "written; the rest are written at their next REGISTER\"", c->srv->cfg.cluster_node, DIRTY_MAX);
		c->dirty_dropped = true;
		return;
	}
	snprintf(c->dirty[c->ndirty++], SA_ID_MAX, "%s", cred_id);
	/* written from the loop's next turn: the caller may be inside a store
	 * transaction (expiry), and what more changes meanwhile goes along */
	if (c->kick != NULL)
		event_active(c->kick, 0, 0);
}

static void kick_cb(evutil_socket_t fd, short what, void *arg)
{
	look(arg);
}

struct put {
	json_t *rows;
	int64_t now;
	const char *node;
};

static int put_binding_cb(const struct sa_binding *b, void *arg)
{
	struct put *p = arg;
	json_t *row = b->expires_at > p->now ? sa_pg_binding_json(b, p->node) : NULL;

	if (row != NULL)
		json_array_append_new(p->rows, row);
	return 0;
}

/* The first n credentials are written (or their write failed in the
 * database: tried again at their next REGISTER, not in a loop). */
static void dirty_done(struct sa_cluster *c, unsigned n)
{
	memmove(c->dirty, c->dirty + n, (c->ndirty - n) * sizeof(*c->dirty));
	c->ndirty -= n;
	c->put_count = 0;
	if (c->ndirty == 0)
		c->dirty_dropped = false;
}

/* Up to PUT_MAX credentials' bindings as they are in the store now, in one
 * statement. They stay in the set until it is answered: a connection lost
 * meanwhile sends them again after the next connect. */
static void registrations_put(struct sa_cluster *c)
{
	struct put p = { .rows = json_array(), .now = (int64_t)time(NULL), .node = c->srv->cfg.cluster_node };
	json_t *ids = json_array();
	unsigned n = c->ndirty < PUT_MAX ? c->ndirty : PUT_MAX;
	char *rows_text = NULL, *ids_text = NULL;

	for (unsigned i = 0; p.rows && ids && i < n; i++) {
		json_array_append_new(ids, json_string(c->dirty[i]));
		sa_store_binding_list_credential(c->srv->store, c->dirty[i], put_binding_cb, &p);
	}
	if (p.rows && ids) {
		rows_text = json_dumps(p.rows, JSON_COMPACT);
		ids_text = json_dumps(ids, JSON_COMPACT);
	}
	if (rows_text && ids_text) {
		const char *params[] = { c->srv->cfg.cluster_node, rows_text, ids_text };
		c->put_count = n;
		log_debug("event=cluster_registrations_write node=%s credentials=%u bindings=%zu", c->srv->cfg.cluster_node,
		          n, json_array_size(p.rows));
		send_query(c, ST_REG_PUT, sa_pg_registrations_put_sql, 3, params);
	} else {
		dirty_done(c, n);   /* out of memory: they wait for their next REGISTER */
	}
	free(rows_text);
	free(ids_text);
	json_decref(p.rows);
	json_decref(ids);
}

/* One result of the query in flight. */
/* The heartbeat's answer: how many nodes share the trunks' limits now. */
static void nodes_alive(struct sa_cluster *c, const char *v)
{
	char *end;
	unsigned long n = strtoul(v, &end, 10);
	if (*end != '\0' || n == 0 || n > 10000)
		return;
	if (n != sa_cluster_nodes_alive(c))
		log_info("event=cluster_nodes node=%s alive=%lu", c->srv->cfg.cluster_node, n);
	__atomic_store_n(&c->share_nodes, (unsigned)n, __ATOMIC_RELAXED);
	c->stats.nodes_alive = n;
}

/* ---- nonce keys ---- */

static int hex_nibble(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	return -1;
}

static int unhex_secret(const char *hex, unsigned char out[SA_NONCE_SECRET_LEN])
{
	if (strlen(hex) != 2 * SA_NONCE_SECRET_LEN)
		return -1;
	for (size_t i = 0; i < SA_NONCE_SECRET_LEN; i++) {
		int hi = hex_nibble(hex[2 * i]), lo = hex_nibble(hex[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return -1;
		out[i] = (unsigned char)(hi << 4 | lo);
	}
	return 0;
}

/* The keys' answer: row 0 the database's current id; then, when it changed,
 * the previous and the current key to install in that order. The secrets
 * are wiped from the answer once installed, and never logged. */
static void nonce_keys_result(struct sa_cluster *c, PGresult *r)
{
	int n = PQntuples(r);
	unsigned current = n > 0 ? (unsigned)atoi(PQgetvalue(r, 0, 0)) : 0;
	unsigned char secret[SA_NONCE_SECRET_LEN];
	unsigned installed = 0, previous = 0;

	c->nonce_none = n > 0 && current == 0;
	for (int i = 1; i < n; i++) {
		char *hex = PQgetvalue(r, i, 1);
		unsigned id = (unsigned)atoi(PQgetvalue(r, i, 0));
		if (id >= 1 && id <= 255 && unhex_secret(hex, secret) == 0 &&
		    sa_nonce_key_set(c->srv->nonce, (uint8_t)id, secret) == 0) {
			previous = installed;
			installed = id;
		}
		OPENSSL_cleanse(hex, strlen(hex));
	}
	OPENSSL_cleanse(secret, sizeof(secret));
	if (installed == 0 || installed != current)
		return;
	c->nonce_key = (uint8_t)installed;
	c->stats.nonce_key = installed;
	c->stats.nonce_key_loads++;
	log_info("event=nonce_key_loaded node=%s key=%u previous=%u", c->srv->cfg.cluster_node, installed, previous);
}

static void nonce_keys_ask(struct sa_cluster *c)
{
	char held[8], ttl[16];
	const char *params[] = { held, ttl };

	snprintf(held, sizeof(held), "%u", c->nonce_key);
	snprintf(ttl, sizeof(ttl), "%u", c->srv->cfg.nonce_ttl);
	send_query(c, ST_NONCE_KEYS, sa_pg_nonce_keys_sql, 2, params);
}

/* The database has no current key: this node offers one (its next look reads whichever won). */
static void nonce_key_first(struct sa_cluster *c)
{
	unsigned char secret[SA_NONCE_SECRET_LEN];
	char hex[2 * SA_NONCE_SECRET_LEN + 1];
	const char *params[] = { hex };
	static const char digits[] = "0123456789abcdef";

	c->nonce_none = false;
	if (RAND_bytes(secret, sizeof(secret)) != 1)
		return;
	for (size_t i = 0; i < sizeof(secret); i++) {
		hex[2 * i] = digits[secret[i] >> 4];
		hex[2 * i + 1] = digits[secret[i] & 15];
	}
	hex[sizeof(hex) - 1] = '\0';
	log_info("event=nonce_key_create node=%s reason=\"the database has no nonce key\"", c->srv->cfg.cluster_node);
	send_query(c, ST_NONCE_FIRST, sa_pg_nonce_key_first_sql, 1, params);
	OPENSSL_cleanse(secret, sizeof(secret));
	OPENSSL_cleanse(hex, sizeof(hex));   /* libpq has copied it into its output buffer */
}

/* ---- the fleet's auth-failure log ---- */

void sa_cluster_authfail(struct sa_cluster *c, const struct sa_authfail *f)
{
	if (c == NULL || c->fails == NULL)
		return;
	if (c->fail_count == FAIL_QUEUE) {
		if (c->stats.failures_lost++ % 1000 == 0)
			log_warn("event=cluster_failures_lost node=%s lost=%llu reason=\"the queue for the fleet's failure "
			         "log is full (the database is away or slow); this node's own log has them\"",
			         c->srv->cfg.cluster_node, (unsigned long long)c->stats.failures_lost);
		return;
	}
	c->fails[(c->fail_head + c->fail_count++) % FAIL_QUEUE] = *f;
}

static json_t *authfail_json(const struct sa_authfail *f)
{
	return json_pack("{s:I,s:s,s:o,s:i,s:s,s:o,s:s,s:o,s:I}", "at", (json_int_t)f->at, "trunk_id", f->trunk_id,
	                 "source", sa_api_net_string(f->source), "source_port", (int)f->source_port,
	                 "transport", f->transport, "username", sa_api_net_string(f->username), "reason", f->reason,
	                 "method", sa_api_net_string(f->method), "password_version", (json_int_t)f->password_version);
}

/* Up to FAIL_BATCH queued failures in one INSERT; they leave the queue now
 * (a push whose answer never comes is counted lost, not sent again). */
static bool failures_push(struct sa_cluster *c)
{
	json_t *arr = json_array();
	size_t n = c->fail_count < FAIL_BATCH ? c->fail_count : FAIL_BATCH;

	for (size_t i = 0; arr != NULL && i < n; i++) {
		json_t *o = authfail_json(&c->fails[(c->fail_head + i) % FAIL_QUEUE]);
		if (o == NULL || json_array_append_new(arr, o) != 0)
			c->stats.failures_lost++;
	}
	c->fail_head = (c->fail_head + n) % FAIL_QUEUE;
	c->fail_count -= n;
	char *text = arr != NULL ? json_dumps(arr, JSON_COMPACT) : NULL;
	size_t sent = arr != NULL ? json_array_size(arr) : 0;
	json_decref(arr);
	if (text == NULL) {
		c->stats.failures_lost += n;
		return false;
	}
	const char *params[] = { c->srv->cfg.cluster_node, text };
	c->fail_sent = sent;
	send_query(c, ST_FAIL_PUSH, sa_pg_authfail_push_sql, 2, params);
	if (c->step != ST_FAIL_PUSH)   /* not sent: the connection is down */
		c->stats.failures_lost += sent;
	free(text);
	return true;
}

static void failures_prune(struct sa_cluster *c)
{
	char keep[16];
	const char *params[] = { c->srv->cfg.cluster_node, keep };

	snprintf(keep, sizeof(keep), "%d", FAIL_KEEP);
	c->fail_prune = false;
	c->fail_pruned_ms = sa_now_ms();
	send_query(c, ST_FAIL_PRUNE, sa_pg_authfail_prune_sql, 2, params);
}

/* ---- the fleet's webhook deliveries ---- */

static json_t *delivery_json(const struct sa_delivery *d)
{
	return json_pack("{s:s,s:s,s:s,s:i,s:I,s:i,s:o,s:I,s:I}", "id", d->id, "webhook_id", d->webhook_id, "event",
	                 d->event, "status", (int)d->status, "attempts", (json_int_t)d->attempts, "last_status_code",
	                 (int)d->last_status_code, "last_error", sa_api_net_string(d->last_error), "next_attempt_at",
	                 (json_int_t)d->next_attempt_at, "created_at", (json_int_t)d->created_at);
}

/* Delivery states that will not reach the fleet's list (the queue was
 * full, or their statement's outcome is unknown): counted, and said at the
 * first and then once per 1000. */
static void deliveries_lost(struct sa_cluster *c, uint64_t n)
{
	uint64_t before = c->stats.deliveries_lost;

	c->stats.deliveries_lost += n;
	if (n > 0 && (before == 0 || before / 1000 != c->stats.deliveries_lost / 1000))
		log_warn("event=cluster_deliveries_lost node=%s lost=%llu reason=\"states of this node's webhook "
		         "deliveries did not reach the fleet's list (its queue was full, or the database went away); "
		         "this node still sends the deliveries\"", c->srv->cfg.cluster_node,
		         (unsigned long long)c->stats.deliveries_lost);
}

/* Up to DLV_BATCH queued states in one statement; false: none queued. They
 * leave the queue now (a push whose answer never comes is counted lost). */
static bool deliveries_push(struct sa_cluster *c)
{
	struct sa_delivery *d = malloc(DLV_BATCH * sizeof(*d));
	uint64_t dropped = 0;
	unsigned n = d != NULL ? sa_webhooks_fleet_take(c->srv, d, DLV_BATCH, &dropped) : 0;
	json_t *arr = n > 0 ? json_array() : NULL;
	char *text = NULL;

	deliveries_lost(c, dropped);
	for (unsigned i = 0; arr != NULL && i < n; i++)
		if (json_array_append_new(arr, delivery_json(&d[i])) != 0)
			c->stats.deliveries_lost++;
	free(d);
	if (arr != NULL)
		text = json_dumps(arr, JSON_COMPACT);
	size_t sent = arr != NULL ? json_array_size(arr) : 0;
	json_decref(arr);
	if (text == NULL) {
		deliveries_lost(c, n);
		return false;
	}
	const char *params[] = { c->srv->cfg.cluster_node, text };
	c->dlv_sent = sent;
	send_query(c, ST_DLV_PUSH, sa_pg_deliveries_push_sql, 2, params);
	if (c->step != ST_DLV_PUSH)   /* not sent: the connection is down */
		deliveries_lost(c, sent);
	free(text);
	return true;
}

/*
 * Webhooks made before the database had them (schema 5 and older) live in
 * this node's store only: the API, which reads the database, would not
 * list them, nor could it delete them. At its first connection after a
 * start, the node offers its store's webhooks to the database, which keeps
 * those it never had (sa_pg_webhooks_adopt_sql); they come back through the
 * change log, like any webhook, to every node. Once per start: after that,
 * every webhook of the store came from the database.
 */
static int adopt_cb(const struct sa_webhook *w, void *arg)
{
	json_t *row = json_pack("{s:s,s:s,s:o,s:I,s:s,s:I}", "id", w->id, "account_id", w->account_id, "url",
	                        sa_api_net_string(w->url), "events", (json_int_t)w->events, "secret", w->secret,
	                        "created_at", (json_int_t)w->created_at);

	return row == NULL || json_array_append_new(arg, row) != 0;
}

/* False: nothing to offer (no webhook in the store), or it could not be read. */
static bool webhooks_adopt(struct sa_cluster *c)
{
	json_t *rows = json_array();
	char applied[24], *text = NULL;

	c->wh_adopt_tried = true;
	if (rows != NULL && sa_store_webhook_each(c->srv->store, adopt_cb, rows) == SA_STORE_OK &&
	    json_array_size(rows) > 0)
		text = json_dumps(rows, JSON_COMPACT);
	if (rows != NULL && json_array_size(rows) == 0)
		c->wh_adopted = true;
	json_decref(rows);   /* the secrets: freed as the change log's rows are */
	if (text == NULL)
		return false;
	const char *params[] = { text, applied };
	snprintf(applied, sizeof(applied), "%llu", (unsigned long long)c->applied);
	send_query(c, ST_WH_ADOPT, sa_pg_webhooks_adopt_sql, 2, params);
	OPENSSL_cleanse(text, strlen(text));
	free(text);
	return true;
}

/* ---- the fleet's calls list ---- */

static int call_row_cmp(const void *x, const void *y)
{
	const struct call_row *a = x, *b = y;
	int d = strcmp(a->trunk_id, b->trunk_id);
	return d != 0 ? d : strcmp(a->call_id, b->call_id);
}

static bool call_row_same(const struct call_row *a, const struct call_row *b)
{
	/* a ringing call's start is estimated anew at each walk: not a change */
	return a->inbound == b->inbound && a->confirmed == b->confirmed && strcmp(a->cred_id, b->cred_id) == 0;
}

static int rows_add(struct call_rows *rs, const struct call_row *r)
{
	if (rs->n == rs->cap) {
		size_t cap = rs->cap ? 2 * rs->cap : 256;
		struct call_row *v = realloc(rs->v, cap * sizeof(*v));
		if (v == NULL)
			return -1;
		rs->v = v;
		rs->cap = cap;
	}
	rs->v[rs->n++] = *r;
	return 0;
}

struct calls_walk {
	struct call_rows now;
	bool failed;
};

static void call_walk_cb(const struct sa_call_info *ci, void *arg)
{
	struct calls_walk *w = arg;
	struct call_row r = { .inbound = ci->inbound, .confirmed = ci->confirmed, .started_at = ci->started_at };

	/* a call relayed to its owner (no trunk here) is the owner's to list; a
	 * Call-ID or id too long for the row is not listed rather than cut */
	if (ci->trunk_id == NULL || ci->trunk_id[0] == '\0' ||
	    (size_t)snprintf(r.call_id, sizeof(r.call_id), "%s", ci->call_id) >= sizeof(r.call_id) ||
	    (size_t)snprintf(r.trunk_id, sizeof(r.trunk_id), "%s", ci->trunk_id) >= sizeof(r.trunk_id) ||
	    (size_t)snprintf(r.cred_id, sizeof(r.cred_id), "%s", ci->cred_id ? ci->cred_id : "") >= sizeof(r.cred_id))
		return;
	w->failed |= rows_add(&w->now, &r) < 0;
}

static json_t *call_row_json(const struct call_row *r)
{
	return json_pack("{s:s,s:s,s:s,s:b,s:b,s:I}", "trunk_id", r->trunk_id, "call_id", r->call_id, "credential_id",
	                 r->cred_id, "inbound", r->inbound, "confirmed", r->confirmed, "started_at",
	                 (json_int_t)r->started_at);
}

/* Merges what was written with the calls now (both sorted) into c->sending,
 * collecting what to delete and to write, at most CALLS_PUSH_MAX: past that,
 * sending keeps what was written, for the next tick. */
static int calls_diff(struct sa_cluster *c, const struct call_rows *now, json_t *gone, json_t *put)
{
	const struct call_rows *old = &c->written;
	size_t i = 0, j = 0, budget = CALLS_PUSH_MAX;
	int rc = 0;

	c->sending.n = 0;
	while (rc == 0 && (i < old->n || j < now->n)) {
		int d = i == old->n ? 1 : j == now->n ? -1 : call_row_cmp(&old->v[i], &now->v[j]);
		if (d == 0 && call_row_same(&old->v[i], &now->v[j])) {
			rc = rows_add(&c->sending, &old->v[i]);
		} else if (budget == 0) {
			if (d <= 0)
				rc = rows_add(&c->sending, &old->v[i]);
		} else if (d < 0) {
			budget--;
			rc = json_array_append_new(gone, json_pack("{s:s,s:s}", "trunk_id", old->v[i].trunk_id, "call_id",
			                                           old->v[i].call_id));
		} else {
			budget--;
			rc = json_array_append_new(put, call_row_json(&now->v[j]));
			if (rc == 0)
				rc = rows_add(&c->sending, &now->v[j]);
		}
		i += d <= 0;
		j += d >= 0;
	}
	return rc;
}

/* The calls now, sorted, one row per trunk and Call-ID. */
static int calls_now(struct sa_cluster *c, struct calls_walk *w)
{
	sa_sip_calls_each(c->srv, NULL, call_walk_cb, w);
	if (w->failed)
		return -1;
	if (w->now.n == 0)
		return 0;
	qsort(w->now.v, w->now.n, sizeof(*w->now.v), call_row_cmp);
	size_t k = 0;
	for (size_t i = 0; i < w->now.n; i++)
		if (k == 0 || call_row_cmp(&w->now.v[k - 1], &w->now.v[i]) != 0)
			w->now.v[k++] = w->now.v[i];
		else if (w->now.v[i].confirmed)   /* a call answered and a transaction still ringing: the call */
			w->now.v[k - 1] = w->now.v[i];
	w->now.n = k;
	return 0;
}

/* What changed since the last push, in one statement; false: nothing to send. */
static bool calls_push(struct sa_cluster *c)
{
	struct calls_walk w = { .failed = false };
	json_t *gone = json_array(), *put = json_array();
	char *gone_text = NULL, *put_text = NULL;
	bool sent = false;

	if (gone != NULL && put != NULL && calls_now(c, &w) == 0 && calls_diff(c, &w.now, gone, put) == 0 &&
	    json_array_size(gone) + json_array_size(put) > 0) {
		gone_text = json_dumps(gone, JSON_COMPACT);
		put_text = json_dumps(put, JSON_COMPACT);
	}
	if (gone_text != NULL && put_text != NULL) {
		const char *params[] = { c->srv->cfg.cluster_node, gone_text, put_text };
		log_debug("event=cluster_calls_push node=%s ended=%zu written=%zu", c->srv->cfg.cluster_node,
		          json_array_size(gone), json_array_size(put));
		c->stats.calls_pushed += json_array_size(gone) + json_array_size(put);
		send_query(c, ST_CALLS_PUSH, sa_pg_calls_push_sql, 3, params);
		sent = c->step == ST_CALLS_PUSH;
	}
	free(gone_text);
	free(put_text);
	json_decref(gone);
	json_decref(put);
	free(w.now.v);
	return sent;
}

/* After a connect: this node's rows go, then all its calls are written. */
static void calls_wipe(struct sa_cluster *c)
{
	const char *params[] = { c->srv->cfg.cluster_node };

	send_query(c, ST_CALLS_WIPE, sa_pg_calls_wipe_sql, 1, params);
}

static void calls_result(struct sa_cluster *c)
{
	struct call_rows t = c->written;

	if (c->step == ST_CALLS_WIPE) {
		c->written.n = 0;
		c->calls_wiped = true;
		return;
	}
	c->written = c->sending;   /* the push is in the table */
	c->sending = t;
}

/* After the heartbeat, what else the tick has to say; false: nothing. */
static bool after_heartbeat(struct sa_cluster *c, enum step done)
{
	switch (done) {
	case ST_HEARTBEAT:
		c->fail_batches = c->dlv_batches = 0;
		nonce_keys_ask(c);
		return true;
	case ST_NONCE_KEYS:
		if (c->nonce_none) {
			nonce_key_first(c);
			return true;
		}
		/* fall through */
	case ST_NONCE_FIRST:
	case ST_FAIL_PUSH:
		if (c->fail_count > 0 && c->fail_batches++ < FAIL_BATCHES)
			return failures_push(c);
		if (c->fail_prune && sa_now_ms() - c->fail_pruned_ms >= FAIL_PRUNE_MS) {
			failures_prune(c);
			return true;
		}
		/* fall through */
	case ST_FAIL_PRUNE:
	case ST_DLV_PUSH:
		if (c->dlv_batches++ < DLV_BATCHES && deliveries_push(c))
			return true;
		if (!c->calls_wiped) {
			calls_wipe(c);
			return true;
		}
		return calls_push(c);
	case ST_CALLS_WIPE:
		return c->calls_wiped && calls_push(c);   /* a wipe refused: again at the next tick */
	default:
		return false;
	}
}

static void result(struct sa_cluster *c, PGresult *r)
{
	ExecStatusType s = PQresultStatus(r);

	if (s == PGRES_TUPLES_OK && c->step == ST_NONCE_KEYS)
		nonce_keys_result(c, r);
	else if (s == PGRES_COMMAND_OK && (c->step == ST_CALLS_WIPE || c->step == ST_CALLS_PUSH))
		calls_result(c);
	else if (s == PGRES_COMMAND_OK && c->step == ST_FAIL_PUSH) {
		c->stats.failures_pushed += c->fail_sent;
		c->fail_sent = 0;
		c->fail_prune = true;
	} else if (s == PGRES_COMMAND_OK && c->step == ST_WH_ADOPT) {
		c->wh_adopted = true;
		if (strcmp(PQcmdTuples(r), "0") != 0)
			log_info("event=cluster_webhooks_adopted node=%s webhooks=%s hint=\"this store's own webhooks, made "
			         "before the database kept them, are the fleet's now\"", c->srv->cfg.cluster_node,
			         PQcmdTuples(r));
	} else if (s == PGRES_COMMAND_OK && c->step == ST_DLV_PUSH) {
		c->stats.deliveries_pushed += c->dlv_sent;
		c->dlv_sent = 0;
	} else if (s == PGRES_TUPLES_OK && c->step == ST_HELLO)
		hello_result(c, r);
	else if (s == PGRES_TUPLES_OK && c->step == ST_HEARTBEAT && PQntuples(r) == 1 && PQnfields(r) == 6) {
		int64_t db_now = strtoll(PQgetvalue(r, 0, 2), NULL, 10);   /* ms */
		nodes_alive(c, PQgetvalue(r, 0, 0));
		nodes_seen(c, PQgetvalue(r, 0, 1), db_now);
		beat_own(c, strtoll(PQgetvalue(r, 0, 3), NULL, 10), strtoll(PQgetvalue(r, 0, 4), NULL, 10),
		         PQgetvalue(r, 0, 5), db_now, c->beat_sent_wall_ms);
	} else if (s == PGRES_TUPLES_OK && c->step == ST_REG_LOAD && PQnfields(r) == 5)
		remote_load(c, r);
	else if (s == PGRES_TUPLES_OK && PQnfields(r) == 5 && c->rows == NULL) {
		c->rows = r;
		return;
	} else if (s != PGRES_TUPLES_OK && s != PGRES_COMMAND_OK) {
		char q[256], line[192];
		/* the primary message only: a DETAIL may quote the failing row, a secret among them */
		const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
		c->stats.query_failures++;
		if (c->step == ST_FAIL_PUSH) {
			c->stats.failures_lost += c->fail_sent;
			c->fail_sent = 0;
		}
		if (c->step == ST_DLV_PUSH) {
			deliveries_lost(c, c->dlv_sent);
			c->dlv_sent = 0;
		}
		if (c->step == ST_CALLS_PUSH)
			c->calls_wiped = false;   /* what the table has is unknown: all again at the next tick */
		log_err("event=cluster_query_failed node=%s step=%s error=\"%s\"", c->srv->cfg.cluster_node,
		        step_names[c->step], sa_log_quote(one_line(msg ? msg : "error", line, sizeof(line)), q, sizeof(q)));
	}
	PQclear(r);
}

/* A change's identity (FNV-1a over its sequence, kind, operation, payload and time). */
static uint64_t change_mark(const PGresult *r, int row)
{
	uint64_t h = 14695981039346656037ULL;

	for (int col = 0; col < 5; col++) {
		for (const char *p = PQgetvalue(r, row, col); *p; p++)
			h = (h ^ (unsigned char)*p) * 1099511628211ULL;
		h = (h ^ 0x1f) * 1099511628211ULL;   /* a separator: "ab","c" is not "a","bc" */
	}
	return h;
}

/* ---- applying changes (on the store thread) ---- */

struct apply {
	struct sa_cluster *c;
	PGresult *rows;
	int next_row;                /* 1: row 0 is the head; 2: row 1 is the change already applied */
	int first_row;               /* next_row's start */
	bool full;
	uint64_t seq;                /* recorded with the changes */
	char **keep;                 /* full: the credential ids the database holds, sorted */
	size_t nkeep;
	int rc;
	int bad_row;                 /* a row that did not decode, or -1 */
	int64_t lag_ms;              /* from the last change's write to its commit here */
};

static int apply_next(void *arg, struct sa_mirror_change *out)
{
	struct apply *a = arg;

	if (a->next_row >= PQntuples(a->rows))
		return 0;
	int row = a->next_row++;
	int rc = sa_pg_change_decode(PQgetvalue(a->rows, row, 1), PQgetvalue(a->rows, row, 2),
	                             PQgetvalue(a->rows, row, 3), out);
	if (rc != SA_STORE_OK) {
		a->bad_row = row;
		return rc;
	}
	return 1;
}

static int id_cmp(const void *x, const void *y)
{
	return strcmp(*(char *const *)x, *(char *const *)y);
}

static bool apply_keep(void *arg, const char *cred_id)
{
	struct apply *a = arg;

	return bsearch(&cred_id, a->keep, a->nkeep, sizeof(*a->keep), id_cmp) != NULL;
}

/* The ids of the snapshot's credentials and webhooks (each row's "id";
 * their prefixes differ), sorted for apply_keep. */
static int keep_collect(struct apply *a)
{
	int n = PQntuples(a->rows);

	a->keep = calloc((size_t)n + 1, sizeof(*a->keep));
	if (a->keep == NULL)
		return SA_STORE_EIO;
	for (int i = 1; i < n; i++) {
		const char *kind = PQgetvalue(a->rows, i, 1);
		if (strcmp(kind, "credentials") != 0 && strcmp(kind, "webhooks") != 0)
			continue;
		json_error_t e;
		json_t *o = json_loads(PQgetvalue(a->rows, i, 3), 0, &e);
		const char *id = json_string_value(json_object_get(o, "id"));
		char *copy = id != NULL ? strdup(id) : NULL;
		json_decref(o);
		if (copy == NULL) {
			a->bad_row = i;
			return SA_STORE_EINVAL;
		}
		a->keep[a->nkeep++] = copy;
	}
	qsort(a->keep, a->nkeep, sizeof(*a->keep), id_cmp);
	return SA_STORE_OK;
}

static void apply_fn(struct sa_store *st, void *arg)
{
	struct apply *a = arg;
	int n = PQntuples(a->rows);

	a->rc = a->full ? keep_collect(a) : SA_STORE_OK;
	if (a->rc == SA_STORE_OK)
		a->rc = sa_store_mirror_apply(st, apply_next, a->full ? apply_keep : NULL, a, a->seq);
	if (a->rc == SA_STORE_OK && !a->full && n > 1)
		a->lag_ms = wall_ms() - strtoll(PQgetvalue(a->rows, n - 1, 4), NULL, 10);
}

/* Whether the changes applied hold a webhook (one that now exists). */
static bool has_webhook(const PGresult *r, int first_row)
{
	for (int i = first_row; i < PQntuples(r); i++)
		if (strcmp(PQgetvalue(r, i, 1), "webhooks") == 0 && strcmp(PQgetvalue(r, i, 2), "delete") != 0)
			return true;
	return false;
}

static void apply_free(struct apply *a)
{
	for (size_t i = 0; i < a->nkeep; i++)
		free(a->keep[i]);
	free(a->keep);
	PQclear(a->rows);
	free(a);
}

static void apply_done(void *arg, bool cancelled)
{
	struct apply *a = arg;
	struct sa_cluster *c = a->c;
	int n = PQntuples(a->rows);
	uint64_t changes = (uint64_t)(n - a->first_row);

	if (cancelled) {
		apply_free(a);
		return;
	}
	c->step = ST_IDLE;
	if (a->rc == SA_STORE_OK) {
		log_debug("event=cluster_applied node=%s from=%llu to=%llu changes=%llu lag_ms=%lld",
		          c->srv->cfg.cluster_node, (unsigned long long)c->applied, (unsigned long long)a->seq,
		          (unsigned long long)changes, (long long)a->lag_ms);
		if (a->full)
			log_info("event=cluster_resynced node=%s seq=%llu records=%llu credentials=%zu",
			         c->srv->cfg.cluster_node, (unsigned long long)a->seq, (unsigned long long)changes, a->nkeep);
		c->applied = a->seq;
		c->mark_known = !a->full && n > a->first_row;   /* a snapshot has no change at its head */
		if (c->mark_known)
			c->mark = change_mark(a->rows, n - 1);
		c->stats.changes_applied += a->full ? 0 : changes;
		c->stats.resyncs += a->full;
		if (!a->full)
			c->stats.lag_ms = a->lag_ms;
		c->again |= n - 1 >= BATCH;   /* the look was full: more wait */
		sa_sip_revocation_check(c->srv);   /* a delete ends its calls now, not at the next poll */
		if (has_webhook(a->rows, a->first_row))
			sa_webhooks_created(c->srv);   /* its events are worth building here too */
	} else {
		c->stats.apply_failures++;
		log_err("event=cluster_apply_failed node=%s cause=%s seq=%s hint=\"the same changes are tried again "
		        "each second\"", c->srv->cfg.cluster_node, sa_store_cause(a->rc),
		        a->bad_row >= 0 ? PQgetvalue(a->rows, a->bad_row, 0) : "-");
	}
	apply_free(a);
	if (c->again)
		look(c);
}

static void apply_start(struct sa_cluster *c, bool full, int first_row, uint64_t seq)
{
	struct apply *a = calloc(1, sizeof(*a));

	if (a == NULL) {
		PQclear(c->rows);
		c->rows = NULL;
		return;
	}
	*a = (struct apply){ .c = c, .rows = c->rows, .next_row = first_row, .first_row = first_row, .full = full,
	                     .seq = seq, .bad_row = -1 };
	c->rows = NULL;
	c->step = ST_APPLYING;
	if (sa_work_submit(c->srv->work, apply_fn, apply_done, a) < 0) {
		c->step = ST_IDLE;   /* the store thread is full: the tick comes back */
		apply_free(a);
	}
}

/* With overlap, row 1 should be the change this mirror applied last: 2 when it is (the new
 * changes start at row 2; its hash is learnt when not known), 0 when it is another change (another
 * history), 1 when it is gone (pruned: the gap checks alone decide, as before). */
static int overlap_check(struct sa_cluster *c, const PGresult *r, int n)
{
	if (n < 2 || strtoull(PQgetvalue(r, 1, 0), NULL, 10) != c->applied)
		return 1;
	uint64_t mark = change_mark(r, 1);
	if (c->mark_known && mark != c->mark)
		return 0;
	c->mark = mark;
	c->mark_known = true;
	return 2;
}

static void resync_start(struct sa_cluster *c, const char *reason)
{
	log_warn("event=cluster_resync node=%s applied=%llu head=%llu reason=\"%s\"", c->srv->cfg.cluster_node,
	         (unsigned long long)c->applied, (unsigned long long)c->head, reason);
	c->resync = true;
	c->again = true;
}

/* What the changes' answer calls for: nothing, an apply, or a resync. */
static void changes_done(struct sa_cluster *c, bool full)
{
	PGresult *r = c->rows;
	int n = r != NULL ? PQntuples(r) : 0;

	if (n == 0 || strcmp(PQgetvalue(r, 0, 1), "head") != 0) {
		PQclear(r);
		c->rows = NULL;
		return;
	}
	c->head = strtoull(PQgetvalue(r, 0, 3), NULL, 10);
	c->stats.head = c->head;
	int first_row = !full && c->overlap && c->head >= c->applied ? overlap_check(c, r, n) : 1;
	if (first_row == 0) {
		PQclear(r);
		c->rows = NULL;
		resync_start(c, "the change log holds another change at this mirror's sequence (a failover to a "
		                "standby that missed changes?)");
		return;
	}
	uint64_t first = n > first_row ? strtoull(PQgetvalue(r, first_row, 0), NULL, 10) : 0;
	bool gap = !full && ((n == first_row && c->head != c->applied) || (n > first_row && first != c->applied + 1));
	if (full || (n > first_row && !gap)) {
		if (full)
			c->reg_load = true;   /* the log no longer reaches back: load the bindings again too */
		else
			remote_feed(c, r, first_row);
		apply_start(c, full, first_row, full ? c->head : strtoull(PQgetvalue(r, n - 1, 0), NULL, 10));
		return;
	}
	PQclear(r);
	c->rows = NULL;
	if (gap)
		resync_start(c, c->head < c->applied ? "the database is behind this mirror"
		                                     : "the change log was pruned past this mirror");
}

/* The query in flight has given every result. */
static void query_done(struct sa_cluster *c)
{
	enum step step = c->step;

	c->step = ST_IDLE;
	switch (step) {
	case ST_HELLO:
		if (!c->hello_seen) {   /* refused (logged): a schema not made yet, a right missing */
			down(c, "the database did not answer LISTEN and the domain", CS_DOWN);
			return;
		}
		if (!c->hello_ok) {
			down(c, "the database's domain is not this store's", CS_REFUSED);
			return;
		}
		c->again = true;
		break;
	case ST_REG_PUT:
		dirty_done(c, c->put_count);
		c->again = true;
		break;
	case ST_REG_LOAD:
	case ST_WH_ADOPT:
		c->again = true;   /* what waited behind it */
		break;
	case ST_CHANGES:
	case ST_SNAPSHOT:
		if (step == ST_SNAPSHOT && c->rows != NULL)
			c->resync = false;
		changes_done(c, step == ST_SNAPSHOT);
		break;
	default:
		if (after_heartbeat(c, step))
			return;
		break;
	}
	if (c->step == ST_IDLE && c->again)
		look(c);
}

/* Each NOTIFY libpq has read: a change to look for. */
static void notifications(struct sa_cluster *c)
{
	for (PGnotify *n; (n = PQnotifies(c->conn)) != NULL; PQfreemem(n)) {
		c->stats.notifications++;
		c->again = true;
	}
}

static void io_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sa_cluster *c = arg;

	if (c->state == CS_CONNECTING) {
		connect_step(c);
		return;
	}
	if (!PQconsumeInput(c->conn)) {
		down(c, PQerrorMessage(c->conn), CS_DOWN);
		return;
	}
	notifications(c);
	while (c->step != ST_IDLE && c->step != ST_APPLYING && !PQisBusy(c->conn)) {
		PGresult *r = PQgetResult(c->conn);
		if (r == NULL) {
			/* reading the results may have read a NOTIFY behind them: no
			 * socket event comes for it */
			notifications(c);
			query_done(c);
			return;
		}
		result(c, r);
	}
	if (c->step == ST_IDLE && c->again)
		look(c);
}

/* ---- looking for changes ---- */

static void look(struct sa_cluster *c)
{
	char after[24], batch[24];
	const char *params[] = { after, batch };

	if (c->state != CS_UP || c->step != ST_IDLE) {
		c->again = c->again || c->state == CS_UP;
		return;
	}
	c->again = false;
	if (!c->wh_adopted && !c->wh_adopt_tried && webhooks_adopt(c))
		return;
	if (c->reg_load) {
		const char *node[] = { c->srv->cfg.cluster_node };
		send_query(c, ST_REG_LOAD, sa_pg_registrations_load_sql, 1, node);
		return;
	}
	if (c->ndirty > 0 && c->beat_ok) {
		registrations_put(c);
		if (c->step != ST_IDLE)
			return;
	}
	if (c->resync) {
		send_query(c, ST_SNAPSHOT, sa_pg_snapshot_sql, 0, NULL);
		return;
	}
	/* from the change applied last (checked in changes_done), or from the start */
	c->overlap = c->applied > 0;
	snprintf(after, sizeof(after), "%llu", (unsigned long long)(c->applied - c->overlap));
	snprintf(batch, sizeof(batch), "%d", BATCH);
	send_query(c, ST_CHANGES, sa_pg_changes_sql, 2, params);
}

static void heartbeat(struct sa_cluster *c)
{
	char applied[24];
	const char *params[] = { c->srv->cfg.cluster_node, c->address, applied };

	snprintf(applied, sizeof(applied), "%llu", (unsigned long long)c->applied);
	c->beat_sent_wall_ms = wall_ms();
	send_query(c, ST_HEARTBEAT, sa_pg_heartbeat_sql, 3, params);
}

/* Each second: connect when down, drop what hangs, beat, and look (the safety net). */
static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sa_cluster *c = arg;
	bool waiting = c->state == CS_CONNECTING || (c->state == CS_UP && c->step != ST_IDLE && c->step != ST_APPLYING);

	if (waiting && sa_now_ms() - c->since_ms > QUERY_TIMEOUT_MS) {
		down(c, c->state == CS_CONNECTING ? "no connection within 5 s" : "no answer within 5 s", CS_DOWN);
		return;
	}
	if (c->state == CS_DOWN) {
		connect_start(c);
		return;
	}
	if (c->state != CS_UP)
		return;
	c->again = true;
	if (c->step == ST_IDLE)
		heartbeat(c);
}

/* ---- the daemon's side ---- */

/* The address other nodes reach this one at: [cluster] address, or the first udp listen. */
static void address_pick(struct sa_cluster *c)
{
	const struct sa_config *cfg = &c->srv->cfg;

	snprintf(c->address, sizeof(c->address), "%s", cfg->cluster_address);
	for (unsigned i = 0; !c->address[0] && i < cfg->nlisten; i++)
		if (cfg->listen[i].proto == SA_PROTO_UDP)
			snprintf(c->address, sizeof(c->address), strchr(cfg->listen[i].host, ':') ? "udp:[%s]:%u" : "udp:%s:%u",
			         cfg->listen[i].host, cfg->listen[i].port);
}

int sa_cluster_mirror_init(struct sa_server *srv)
{
	char why[256] = "", domain[SA_DOMAIN_MAX + 1];
	struct sa_pg *pg = NULL;
	int rc = sa_pg_open(&pg, srv->cfg.cluster_database, why, sizeof(why));

	if (rc == SA_STORE_OK)
		rc = sa_pg_check(pg);
	if (rc == SA_STORE_OK)
		rc = sa_pg_domain(pg, domain, sizeof(domain));
	if (rc == SA_STORE_OK)
		rc = sa_store_init(srv->store, domain);
	if (rc != SA_STORE_OK)
		log_err("event=cluster_mirror_init_failed node=%s cause=%s error=\"%s\" hint=\"a new node's store is made "
		        "from the database: it must be reachable and initialised (sipauthctl --database CONNINFO init)\"",
		        srv->cfg.cluster_node, sa_store_cause(rc), why[0] ? why : sa_pg_detail(pg));
	else
		log_info("event=cluster_mirror_created node=%s path=%s domain=%s", srv->cfg.cluster_node,
		         srv->cfg.store_path, domain);
	sa_pg_close(pg);
	return rc == SA_STORE_OK ? 0 : -1;
}

int sa_cluster_start(struct sa_server *srv)
{
	struct sa_cluster *c = calloc(1, sizeof(*c));
	struct timeval tick = { .tv_sec = TICK_MS / 1000, .tv_usec = (TICK_MS % 1000) * 1000 };

	if (c == NULL || sa_store_mirror_seq(srv->store, &c->applied) != SA_STORE_OK) {
		free(c);
		log_err("event=cluster_start_failed node=%s", srv->cfg.cluster_node);
		return -1;
	}
	c->srv = srv;
	c->dirty = calloc(DIRTY_MAX, sizeof(*c->dirty));
	if (c->dirty == NULL || pthread_rwlock_init(&c->view, NULL) != 0) {
		free(c->dirty);
		free(c);
		return -1;
	}
	c->fails = calloc(FAIL_QUEUE, sizeof(*c->fails));
	c->fail_pruned_ms = sa_now_ms() - FAIL_PRUNE_MS;
	address_pick(c);
	c->tick = event_new(srv->base, -1, EV_PERSIST, tick_cb, c);
	c->kick = event_new(srv->base, -1, 0, kick_cb, c);
	if (c->tick == NULL || c->kick == NULL || event_add(c->tick, &tick) < 0) {
		sa_cluster_stop(c);
		return -1;
	}
	srv->cluster = c;
	log_info("event=cluster_started node=%s address=%s applied=%llu", srv->cfg.cluster_node, c->address,
	         (unsigned long long)c->applied);
	connect_start(c);
	return 0;
}

/* After sa_work_stop: no apply job can come back to c. */
void sa_cluster_stop(struct sa_cluster *c)
{
	if (c == NULL)
		return;
	events_free(c);
	if (c->tick)
		event_free(c->tick);
	if (c->kick)
		event_free(c->kick);
	PQclear(c->rows);
	PQfinish(c->conn);
	remote_clear(&c->rv);
	free(c->dirty);
	free(c->fails);
	free(c->written.v);
	free(c->sending.v);
	pthread_rwlock_destroy(&c->view);
	free(c);
}

unsigned sa_cluster_nodes_alive(const struct sa_cluster *c)
{
	return c != NULL ? __atomic_load_n(&c->share_nodes, __ATOMIC_RELAXED) : 0;
}

void sa_cluster_stats(const struct sa_cluster *c, struct sa_metrics_fleet *s)
{
	*s = c->stats;
	s->applied = c->applied;
	s->state = state_names[c->state];
	s->up = c->state == CS_UP;
	s->failures_queued = c->fail_count;
}
