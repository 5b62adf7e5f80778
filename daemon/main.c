/* main.c: sipauthd start-up, signals and shutdown; everything else hangs off one sa_server. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "conf.h"
#include "config.h"
#include "sa_limits.h"
#include "log.h"
#include "notify.h"
#include "server.h"
#include "work.h"

#define REPLAY_SLOTS (1u << 18)
#define HOUSEKEEPING_SEC 5
#define FLUSH_MS 1000          /* registrations written without sync reach the disk this often */
#define WORK_QUEUE 256         /* API requests waiting for the store thread, at most */

static void usage(FILE *f)
{
	fprintf(f, "usage: sipauthd --config FILE [--workers N]   run in the foreground\n"
	           "                                  (--workers: instead of [sip] workers)\n"
	           "       sipauthd --check-config FILE validate FILE and exit\n"
	           "       sipauthd --version\n");
}

#define DRAIN_SEC 5           /* transactions in flight get this long to finish at SIGTERM */

/* Stopping: new requests get 503 (sip.c); leave once nothing is in flight or time is up. */
static void drain_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sa_server *srv = arg;
	if (sa_sip_in_flight(srv) > 0 && sa_now_ms() < srv->stop_deadline_ms)
		return;
	log_info("event=drained in_flight=%u", sa_sip_in_flight(srv));
	event_base_loopexit(srv->base, NULL);   /* the other workers stop at teardown */
}

/* Each worker answers new requests 503 from now on, and drains its own. */
static void worker_stopping(struct sa_server *w, void *arg)
{
	w->stopping = 1;
}

static void stop_cb(evutil_socket_t sig, short what, void *arg)
{
	struct sa_server *srv = arg;
	if (srv->stopping) {
		event_base_loopexit(srv->base, NULL);   /* a second signal: now */
		return;
	}
	log_info("event=stopping signal=%d in_flight=%u", (int)sig, sa_sip_in_flight(srv));
	srv->stopping = 1;
	sa_workers_post_each(srv, worker_stopping, NULL);
	sa_notify_stopping();
	srv->stop_deadline_ms = sa_now_ms() + DRAIN_SEC * 1000;
	struct timeval tick = { .tv_sec = 0, .tv_usec = 50000 };
	srv->drain = event_new(srv->base, -1, EV_PERSIST, drain_cb, srv);
	if (!srv->drain || event_add(srv->drain, &tick) < 0)
		event_base_loopexit(srv->base, NULL);
}

/* SIGHUP reaches the other workers: the configuration applied and the TLS
 * contexts in force (main waits while they take them, so nothing moves). */
static void worker_reload(struct sa_server *w, void *arg)
{
	struct sa_server *main = arg;
	if (w == main)
		return;
	w->cfg = main->cfg;
	if (sa_transport_tls_take(w, main) < 0)
		log_err("event=reload_worker_tls_failed worker=%u hint=\"it keeps the previous certificate\"", w->worker);
}

/* A changed key that SIGHUP cannot apply: one line each, never silence. */
static void restart_needed_cb(const char *sec, const char *name, void *arg)
{
	(*(unsigned *)arg)++;
	log_warn("event=reload_needs_restart key=\"[%s] %s\" hint=\"the running value stays until sipauthd restarts\"",
	         sec, name);
}

static void hup_cb(evutil_socket_t sig, short what, void *arg)
{
	struct sa_server *srv = arg;
	struct sa_config next;
	char err[512];
	sa_notify_reloading();
	if (sa_config_load(&next, srv->cfg.path, err, sizeof(err)) < 0) {
		log_err("event=reload_refused error=\"%s\"", err);
		sa_notify_ready();
		sa_notify_status("serving; reload refused: %s", err);
		return;
	}
	/* what can change without new sockets or a new store: the TLS files,
	 * every one of them or none (the API's and SIP's, loaded first) */
	SSL_CTX *api_tls = NULL;
	struct sa_tls_pair sip_tls;
	bool api_bad = sa_http_tls_prepare(srv, &next, &api_tls) < 0;
	bool sip_bad = sa_transport_tls_prepare(srv, &next.tls, &sip_tls) < 0;
	if (api_bad || sip_bad) {
		SSL_CTX_free(api_tls);
		if (!sip_bad)
			sa_transport_tls_drop(&sip_tls);
		log_err("event=reload_refused error=\"%s%s%s did not load; every old one stays\"",
		        api_bad ? "[api] certificate or private_key" : "", api_bad && sip_bad ? ", and " : "",
		        sip_bad ? "[tls] (or [upstream] tls_ca) files" : "");
		sa_notify_ready();
		return;
	}
	sa_http_tls_commit(srv, api_tls);
	sa_transport_tls_commit(srv, &sip_tls);
	unsigned restart = 0;
	unsigned applied = sa_config_reload(&srv->cfg, &next, restart_needed_cb, &restart);
	sa_log_set_level((enum sa_log_level)srv->cfg.log_level);
	sa_log_limit(srv->cfg.log_rate_limit);
	sa_workers_run_each(srv, worker_reload, srv);
	log_info("event=reloaded config=%s applied=%u restart_needed=%u", srv->cfg.path, applied, restart);
	sa_notify_ready();
}

/* One line when a map crosses the alarm level either way. */
static void map_watch(const char *file, const struct sa_store_usage *u, bool *was_high, const char *hint)
{
	bool high = u->percent >= SA_STORE_ALARM_PERCENT;
	if (high && !*was_high)
		log_warn("event=store_map_high file=%s used_mib=%llu map_mib=%llu percent=%u refused_above=%d hint=\"%s\"",
		         file, (unsigned long long)(u->used >> 20), (unsigned long long)(u->map_size >> 20), u->percent,
		         SA_STORE_HEADROOM_PERCENT, hint);
	else if (!high && *was_high)
		log_info("event=store_map_ok file=%s used_mib=%llu map_mib=%llu percent=%u", file,
		         (unsigned long long)(u->used >> 20), (unsigned long long)(u->map_size >> 20), u->percent);
	*was_high = high;
}

/* One line when store writes failed since the last look (the SIP path does
 * not log them: a flood of failing REGISTERs is one line per tick), and the
 * map alarms of both files: data.mdb (credentials) and runtime/
 * (registrations, the failure log). */
static void store_watch(struct sa_server *srv)
{
	struct sa_store_watch *w = &srv->store_watch;
	struct sa_store_usage u;
	struct sa_store_fault f;

	sa_store_fault(srv->store, &f);
	if (f.failures != w->failures_logged) {
		log_err("event=store_write_failed cause=%s error=\"%s\" code=%d failures=%llu path=%s",
		        sa_store_cause(f.err), f.detail, f.code, (unsigned long long)(f.failures - w->failures_logged),
		        srv->cfg.store_path);
		w->failures_logged = f.failures;
	}
	if (sa_store_usage(srv->store, &u) == SA_STORE_OK)
		map_watch("store", &u, &w->map_high, "raise [store] map_size, or delete credentials");
	if (sa_store_runtime_usage(srv->store, &u) == SA_STORE_OK)
		map_watch("runtime", &u, &w->runtime_map_high,
		          "raise [store] map_size or sipauthctl --map-size: registrations and the failure log fill it");
}

struct sweep {
	struct sa_server *srv;
	bool failed;
};

static int tombstone_cb(const char *cred_id, void *arg)
{
	struct sweep *sw = arg;
	sw->failed = sa_store_binding_delete_all(sw->srv->store, cred_id) != SA_STORE_OK;
	return sw->failed;
}

static int count_cb(const char *cred_id, void *arg)
{
	(*(uint64_t *)arg)++;
	return 0;
}

/* The tombstones are followed up to pos, here and in runtime/ for the next start. */
static void purged_at(struct sa_server *srv, uint64_t pos)
{
	srv->store_watch.tombstone = pos;
	int rc = sa_store_purged_set(srv->store, pos);
	if (rc != SA_STORE_OK)
		log_err("event=store_write_failed what=purged cause=%s error=\"%s\"", sa_store_cause(rc),
		        sa_store_strerror(rc));
}

/* Bindings of credentials deleted since the last look (by the API or by
 * sipauthctl, which cannot write runtime/: readers skip them meanwhile).
 * Follows the tombstones, a few per tick, instead of walking the bindings;
 * only when tombstones were dropped before they were read (the daemon was
 * stopped across more deletes than the store keeps) does it look at all. */
static uint64_t bindings_of_deleted(struct sa_server *srv)
{
	uint64_t *pos = &srv->store_watch.tombstone, last = *pos, seen = 0, removed;
	if (sa_store_deleted_since(srv->store, *pos, count_cb, &seen, &last) != SA_STORE_OK || seen == 0)
		return 0;
	if (last - *pos > seen) {
		int rc = sa_store_binding_purge_orphans(srv->store, &removed);
		log_warn("event=bindings_purged cause=tombstones_dropped removed=%llu result=%s",
		         (unsigned long long)removed, sa_store_cause(rc));
		if (rc == SA_STORE_OK)
			purged_at(srv, last);
		return 0;
	}
	struct sweep sw = { srv, false };
	uint64_t done = *pos, from = *pos;
	if (sa_store_deleted_since(srv->store, *pos, tombstone_cb, &sw, &done) == SA_STORE_OK && !sw.failed)
		purged_at(srv, done);   /* after a failed removal, the same tombstones again next tick */
	return *pos - from;
}

/* A binding expired: its webhook, and in a fleet its row goes (the owner writes it). */
static int binding_expired_cb(const struct sa_binding *b, void *arg)
{
	struct sa_server *srv = arg;

#ifdef HAVE_LIBPQ
	sa_cluster_binding_changed(srv->cluster, b->cred_id);
#endif
	return sa_webhooks_registration_expired(b, srv);
}

struct index_refresh {
	struct sa_server *srv;
	int rc;
	bool rebuilt;
	uint64_t ms;
};

static void index_refresh_job(struct sa_store *st, void *arg)
{
	struct index_refresh *r = arg;
	uint64_t t0 = sa_now_ms();

	r->rc = sa_store_credential_index_refresh(st, &r->rebuilt);
	r->ms = sa_now_ms() - t0;
}

static void index_refresh_done(void *arg, bool cancelled)
{
	struct index_refresh *r = arg;
	struct sa_store_watch *w = &r->srv->store_watch;
	struct sa_store_index_stats s;

	w->index_refreshing = false;
	if (!cancelled) {
		sa_store_credential_index_stats(r->srv->store, &s);
		if (r->rebuilt)
			log_info("event=credential_index_rebuilt cause=behind_change_log credentials=%llu memory_mib=%.1f "
			         "build_ms=%llu", (unsigned long long)s.credentials, (double)s.bytes / (1 << 20),
			         (unsigned long long)r->ms);
		if (s.dropped != w->index_dropped_logged) {   /* by this refresh (its error) or by a request's catch-up */
			log_warn("event=credential_index_failed cause=%s error=\"%s\" hint=\"credentials are read from data.mdb "
			         "until sipauthd restarts\"", r->rc != SA_STORE_OK ? sa_store_cause(r->rc) : "catch_up_failed",
			         r->rc != SA_STORE_OK ? sa_store_strerror(r->rc) : "a request could not apply the logged writes");
			w->index_dropped_logged = s.dropped;
		}
	}
	free(r);
}

/* The credential index kept up off the SIP path: on the store's read
 * thread, the writes logged since (so that a request seldom has any to
 * apply), or a new index when a request found it behind what the log
 * keeps (a bulk of writes with no request between, a fleet's resync): the
 * requests read data.mdb meanwhile, none waits for the build. */
static void index_refresh(struct sa_server *srv)
{
	struct index_refresh *r;

	if (!srv->cfg.store_credential_index || srv->work_read == NULL || srv->store_watch.index_refreshing ||
	    (r = calloc(1, sizeof(*r))) == NULL)
		return;
	r->srv = srv;
	if (sa_work_submit(srv->work_read, index_refresh_job, index_refresh_done, r) < 0) {
		free(r);
		return;
	}
	srv->store_watch.index_refreshing = true;
}

/*
 * The sweep of expired bindings runs on the store thread, not on the SIP
 * loop: with many registrations a tick can have thousands to remove, and
 * the expiry entries of bindings refreshed since to move (store.c, struct
 * brec). The removed bindings come back here, at most EXPIRE_JOB_MAX a job,
 * for their webhooks and the fleet; a job that stopped there is followed
 * by the next at once.
 */
#define EXPIRE_JOB_MAX 4096

struct expire_job {
	struct sa_server *srv;
	int64_t now;
	int rc;                      /* removed (>= 0) or a store error */
	bool more;
	struct sa_binding *gone;     /* what was removed, for binding_expired_cb */
	size_t n, cap;
};

static int expire_collect(const struct sa_binding *b, void *arg)
{
	struct expire_job *j = arg;

	if (j->n == j->cap) {
		size_t cap = j->cap ? 2 * j->cap : 64;
		struct sa_binding *g = realloc(j->gone, cap * sizeof(*g));
		if (g == NULL)
			return 0;   /* removed all the same; its webhook is lost, and logged below */
		j->gone = g;
		j->cap = cap;
	}
	j->gone[j->n++] = *b;
	return 0;
}

static void expire_job_run(struct sa_store *st, void *arg)
{
	struct expire_job *j = arg;

	j->rc = sa_store_binding_expire_some(st, j->now, EXPIRE_JOB_MAX, expire_collect, j, &j->more);
}

static void bindings_expire(struct sa_server *srv);

static void expire_job_done(void *arg, bool cancelled)
{
	struct expire_job *j = arg;
	struct sa_server *srv = j->srv;

	srv->store_watch.expiring = false;
	/* a job cancelled by a stop after it ran removed its bindings all the
	 * same: their webhooks still go (the webhook thread stops after this,
	 * making deliveries of what is queued) */
	for (size_t i = 0; i < j->n; i++)
		binding_expired_cb(&j->gone[i], srv);
	if (j->rc > 0)
		log_info("event=bindings_expired count=%d", j->rc);
	if (j->rc >= 0 && (size_t)j->rc > j->n)
		log_warn("event=bindings_expired_unannounced count=%zu cause=out_of_memory", (size_t)j->rc - j->n);
	if (!cancelled && j->more && j->rc >= 0)
		bindings_expire(srv);
	free(j->gone);
	free(j);
}

static void bindings_expire(struct sa_server *srv)
{
	struct expire_job *j;
	int64_t now = (int64_t)time(NULL);

	if (srv->work == NULL) {   /* no store thread: here */
		int n = sa_store_binding_expire_each(srv->store, now, binding_expired_cb, srv);
		if (n > 0)
			log_info("event=bindings_expired count=%d", n);
		return;
	}
	if (srv->store_watch.expiring || (j = calloc(1, sizeof(*j))) == NULL)
		return;
	j->srv = srv;
	j->now = now;
	if (sa_work_submit(srv->work, expire_job_run, expire_job_done, j) < 0) {
		free(j);
		return;   /* the queue is full: the next tick */
	}
	srv->store_watch.expiring = true;
}

/* Periodic work: expire bindings, flush unsynced store writes. */
static void housekeeping_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sa_server *srv = arg;
	bindings_of_deleted(srv);
	bindings_expire(srv);
	sa_sip_housekeeping(srv);
	index_refresh(srv);
	if (srv->work == NULL)   /* else the store thread flushes */
		sa_store_flush(srv->store);
	store_watch(srv);
	sa_log_flush(0);
}

/* The descriptors the configuration may hold open at once must fit under
 * RLIMIT_NOFILE: past it accept() fails and a full server cannot even
 * answer. Raise the soft limit as far as needed (the hard limit allows
 * it), or refuse to start, naming the keys. */
static int fd_budget_check(const struct sa_config *c, unsigned workers)
{
	struct rlimit rl;
	unsigned http = c->napi_listen + c->nmetrics_listen > 0 ? c->api_max_connections : 0;
	/* each worker past the first: its listeners, its inbox's eventfd and its loop's epoll */
	rlim_t need = (rlim_t)c->max_connections + http + c->nlisten + c->napi_listen + c->nmetrics_listen +
	              (rlim_t)(workers - 1) * (c->nlisten + 2) + SA_FD_MARGIN;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
		log_err("event=fd_limit_unknown error=\"%s\"", strerror(errno));
		return -1;
	}
	if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= need)
		return 0;
	if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) {
		log_err("event=fd_limit_too_low need=%llu soft=%llu hard=%llu max_connections=%u api_max_connections=%u "
		        "hint=\"lower [limits] max_connections or [api] max_connections, or raise the limit "
		        "(LimitNOFILE=, ulimit -n)\"", (unsigned long long)need, (unsigned long long)rl.rlim_cur,
		        (unsigned long long)rl.rlim_max, c->max_connections, c->api_max_connections);
		return -1;
	}
	rlim_t was = rl.rlim_cur;
	rl.rlim_cur = need;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
		log_err("event=fd_limit_raise_failed need=%llu error=\"%s\"", (unsigned long long)need, strerror(errno));
		return -1;
	}
	log_info("event=fd_limit_raised from=%llu to=%llu", (unsigned long long)was, (unsigned long long)need);
	return 0;
}

/* libevent's own warnings (accept() failures among them) go through our log
 * and its line budget instead of straight to stderr. */
static void libevent_log_cb(int severity, const char *msg)
{
	char q[192];
	sa_log(severity >= EVENT_LOG_ERR ? SA_LOG_ERR : severity == EVENT_LOG_WARN ? SA_LOG_WARNING
	       : severity == EVENT_LOG_MSG ? SA_LOG_INFO : SA_LOG_DEBUG,
	       "event=libevent msg=\"%s\"", sa_log_quote(msg, q, sizeof(q)));
}

/* Before serving: the bindings of every credential deleted while the daemon
 * was away (sipauthctl cannot remove them). From the tombstones, when
 * runtime/ says how far the last run followed them; else (the first start,
 * or tombstones dropped unseen) by looking at each credential that has
 * bindings, which pages in a record per binding. From here on the loop
 * follows the tombstones (bindings_of_deleted). The position is taken first,
 * so that a delete during the purge is followed later. A failure is logged
 * and the daemon goes on: readers skip such bindings anyway. */
static void orphans_start(struct sa_server *srv)
{
	uint64_t removed = 0, seen = 0, pos;
	if (sa_store_purged_get(srv->store, &pos) == SA_STORE_OK) {
		/* where the last run stopped following them: the deletes since
		 * (or, if tombstones were dropped unseen, the purge, which logs) */
		srv->store_watch.tombstone = pos;
		uint64_t n = bindings_of_deleted(srv);
		if (n > 0)
			log_info("event=bindings_purged cause=credentials_deleted credentials=%llu since=%llu",
			         (unsigned long long)n, (unsigned long long)pos);
		return;
	}
	int rc = sa_store_deleted_since(srv->store, 0, count_cb, &seen, &pos);
	if (rc == SA_STORE_OK)
		rc = sa_store_binding_purge_orphans(srv->store, &removed);
	if (rc != SA_STORE_OK)
		log_err("event=bindings_purge_failed cause=%s error=\"%s\"", sa_store_cause(rc), sa_store_strerror(rc));
	else if (removed > 0)
		log_info("event=bindings_purged cause=credentials_deleted removed=%llu", (unsigned long long)removed);
	if (rc == SA_STORE_OK)
		purged_at(srv, pos);
	else
		srv->store_watch.tombstone = pos;
}

/* Fleet mode needs libpq; a build without it says so instead of running as a single host. */
static int cluster_mirror_init(struct sa_server *srv)
{
#ifdef HAVE_LIBPQ
	return sa_cluster_mirror_init(srv);
#else
	log_err("event=cluster_not_built hint=\"[cluster] needs a sipauthd built with libpq (Debian: libpq-dev)\"");
	return -1;
#endif
}

static int cluster_start(struct sa_server *srv)
{
	if (!srv->cfg.cluster_database[0])
		return 0;
#ifdef HAVE_LIBPQ
	return sa_cluster_start(srv);
#else
	return cluster_mirror_init(srv);
#endif
}

/* Every credential in the heap (sa_store_credential_index), before the
 * first request. Without it (no memory), finds descend data.mdb: slower
 * with many credentials, as right. */
static void index_credentials(struct sa_server *srv)
{
	struct sa_store_index_stats s;
	uint64_t t0 = sa_now_ms();
	int rc = sa_store_credential_index(srv->store);

	if (rc != SA_STORE_OK) {
		log_warn("event=credential_index_failed cause=%s error=\"%s\" hint=\"credentials are read from data.mdb\"",
		         sa_store_cause(rc), sa_store_strerror(rc));
		return;
	}
	sa_store_credential_index_stats(srv->store, &s);
	log_info("event=credential_index credentials=%llu memory_mib=%.1f build_ms=%llu",
	         (unsigned long long)s.credentials, (double)s.bytes / (1 << 20),
	         (unsigned long long)(sa_now_ms() - t0));
}

static int open_store(struct sa_server *srv)
{
	unsigned char secret[SA_NONCE_SECRET_LEN];
	struct sa_store_opts o = { .flags = SA_STORE_RUNTIME, .map_size = srv->cfg.store_map_size };
	char why[256] = "", path[PATH_MAX + 16];
	struct stat sb;
	/* opening would create (and reserve the map of) a store that is not
	 * there: a mistyped path, or a start before init. A fleet node makes
	 * its own from the database. */
	snprintf(path, sizeof(path), "%s/data.mdb", srv->cfg.store_path);
	if (!srv->cfg.cluster_database[0] && stat(path, &sb) != 0 && errno == ENOENT) {
		log_err("event=store_failed path=%s cause=not_initialised error=\"store not initialised\" "
		        "hint=\"run sipauthctl --store %s init (or fix [store] path)\"", srv->cfg.store_path,
		        srv->cfg.store_path);
		return -1;
	}
	int rc = sa_store_open_with(&srv->store, srv->cfg.store_path, &o, why, sizeof(why));
	int sys = rc != 0 ? errno : 0;
	if (rc == 0)
		rc = sa_store_domain(srv->store, srv->domain, sizeof(srv->domain));
	if (rc == SA_STORE_ENOTINIT && srv->cfg.cluster_database[0]) {   /* a new node: its mirror from the database */
		if (cluster_mirror_init(srv) < 0)
			return -1;
		rc = sa_store_domain(srv->store, srv->domain, sizeof(srv->domain));
	}
	if (rc != 0) {
		log_err("event=store_failed path=%s cause=%s error=\"%s\" reason=\"%s\" errno=%d", srv->cfg.store_path,
		        sa_store_cause(rc), sa_store_strerror(rc), why, sys);
		return -1;
	}
	struct sa_store_usage u;
	if (sa_store_usage(srv->store, &u) == 0)
		log_info("event=store_opened path=%s map_mib=%llu used_mib=%llu percent=%u reserved=%s",
		         srv->cfg.store_path, (unsigned long long)(u.map_size >> 20), (unsigned long long)(u.used >> 20),
		         u.percent, u.reserved ? "yes" : "no");
	if (sa_store_runtime_usage(srv->store, &u) == 0)
		log_info("event=store_runtime_opened path=%s/runtime map_mib=%llu used_mib=%llu percent=%u reserved=%s",
		         srv->cfg.store_path, (unsigned long long)(u.map_size >> 20), (unsigned long long)(u.used >> 20),
		         u.percent, u.reserved ? "yes" : "no");
	if (strcasecmp(srv->domain, srv->cfg.domain) != 0) {
		log_err("event=domain_mismatch config=%s store=%s hint=\"credentials are hashed for the store's domain\"",
		        srv->cfg.domain, srv->domain);
		return -1;
	}
	if (srv->cfg.store_credential_index)
		index_credentials(srv);
	orphans_start(srv);
	/* A fresh nonce key each start: the nonce-count replay table lives in
	 * memory, so a nonce from before the start must not verify after it. A
	 * nonce of the previous run names a key id we no longer hold, or (1 in
	 * 255) the id drawn again with another secret; with its instance
	 * (lib/nonce.h) another one, it is answered stale=true either way, with
	 * no verdict on the password. In a fleet this key
	 * serves until the first heartbeat brings the database's keys, which
	 * outlive a restart: there the instance keeps old nonces out. It stays
	 * live behind the database's two (lib/nonce keeps three), so the nonces
	 * it made in the first second are still taken. */
	unsigned char key_id = 0;
	srv->nonce = sa_nonce_ctx_new(srv->cfg.nonce_ttl, REPLAY_SLOTS);
	while (key_id == 0)
		if (RAND_bytes(&key_id, 1) != 1)
			break;
	if (!srv->nonce || key_id == 0 || RAND_bytes(secret, sizeof(secret)) != 1 ||
	    sa_nonce_key_set(srv->nonce, key_id, secret) != 0) {
		OPENSSL_cleanse(secret, sizeof(secret));
		log_err("event=nonce_setup_failed");
		return -1;
	}
	OPENSSL_cleanse(secret, sizeof(secret));
	return sa_auth_init(&srv->auth, srv->store, srv->nonce, &srv->cfg.auth);
}

static int add_signal(struct sa_server *srv, struct event **ev, int sig, event_callback_fn cb)
{
	*ev = evsignal_new(srv->base, sig, cb, srv);
	return *ev && event_add(*ev, NULL) == 0 ? 0 : -1;
}

/* One daemon per store, for the life of the process: a second one (on other
 * ports, say) would restore and rewrite the same calls, sweep the same
 * registrations, and hand out nonces the first does not know. Taken before
 * the store is opened when it exists (opening moves old layouts, purges the
 * bindings of deleted credentials and builds the credential index: none of
 * that for a daemon that is about to be refused); a store that does not
 * exist yet (a fleet node's first start makes its mirror) is locked once
 * opened. */
static int store_lock(const struct sa_server *srv, bool *locked)
{
	char path[PATH_MAX + 32];
	struct stat sb;

	if (*locked)
		return 0;
	snprintf(path, sizeof(path), "%s/data.mdb", srv->cfg.store_path);
	if (stat(path, &sb) != 0)
		return 0;   /* nothing to protect yet: after open_store */
	snprintf(path, sizeof(path), "%s/runtime", srv->cfg.store_path);
	if (mkdir(path, 0700) != 0 && errno != EEXIST)
		return 0;   /* open_store says why */
	snprintf(path, sizeof(path), "%s/runtime/sipauthd.lock", srv->cfg.store_path);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) == 0) {
		*locked = true;
		return 0;   /* kept open: the lock goes with the process */
	}
	int err = errno;
	if (fd >= 0 && err == EWOULDBLOCK)
		log_err("event=store_in_use path=%s error=\"another sipauthd runs on this store\"", srv->cfg.store_path);
	else
		log_err("event=store_lock_failed path=%s error=\"%s: %s\" hint=\"the user sipauthd runs as must be able to "
		        "write the store's runtime/ folder\"", srv->cfg.store_path, fd >= 0 ? "cannot lock" : "cannot create "
		        "runtime/sipauthd.lock", strerror(err));
	if (fd >= 0)
		close(fd);
	return -1;
}

static int start(struct sa_server *srv)
{
	signal(SIGPIPE, SIG_IGN);
	sa_sipmsg_init();
	event_set_log_callback(libevent_log_cb);
	if (fd_budget_check(&srv->cfg, srv->nworkers) < 0)
		return -1;
	srv->base = event_base_new();
	bool locked = false;
	if (!srv->base || store_lock(srv, &locked) < 0 || open_store(srv) < 0 || store_lock(srv, &locked) < 0)
		return -1;
	if (!locked) {
		log_err("event=store_lock_failed path=%s/runtime/sipauthd.lock", srv->cfg.store_path);
		return -1;
	}
	if ((srv->work = sa_work_start(srv->base, srv->store, FLUSH_MS, WORK_QUEUE)) == NULL ||
	    (srv->work_read = sa_work_start(srv->base, srv->store, 0, WORK_QUEUE)) == NULL) {
		log_err("event=store_thread_failed error=\"%s\"", strerror(errno));
		return -1;
	}
	if (srv->cfg.cluster_database[0]) {   /* fleet mode: the API's records are the database's */
		sa_work_database_set(srv->work, srv->cfg.cluster_database);
		sa_work_database_set(srv->work_read, srv->cfg.cluster_database);
	}
	if (sa_webhooks_start(srv) < 0) {
		log_err("event=webhooks_failed error=\"cannot start the delivery thread\"");
		return -1;
	}
	if (sa_sip_init(srv) < 0 || sa_transport_start(srv) < 0)
		return -1;
	sa_sip_calls_restore(srv);
	/* the feed before the workers: they share it (reading the other nodes and
	 * their bindings, posting their registrations and failures to this loop) */
	if (cluster_start(srv) < 0 || sa_workers_start(srv, srv->nworkers) < 0 || sa_http_start(srv) < 0)
		return -1;
	if (add_signal(srv, &srv->sig_term, SIGTERM, stop_cb) < 0 || add_signal(srv, &srv->sig_int, SIGINT, stop_cb) < 0 ||
	    add_signal(srv, &srv->sig_hup, SIGHUP, hup_cb) < 0)
		return -1;
	srv->housekeeping = event_new(srv->base, -1, EV_PERSIST, housekeeping_cb, srv);
	struct timeval hk = { .tv_sec = HOUSEKEEPING_SEC };
	return srv->housekeeping && event_add(srv->housekeeping, &hk) == 0 ? 0 : -1;
}

static void teardown(struct sa_server *srv)
{
	sa_workers_join(srv);   /* their calls are saved with worker 0's */
	if (sa_sip_calls_save(srv) < 0)
		log_err("event=calls_save_failed path=%s", srv->cfg.store_path);
	sa_workers_free(srv);   /* before what they share (limits, trunks, bans, gateways) */
	sa_transport_stop(srv);
	sa_work_stop(srv->work);   /* before the HTTP side: its jobs hold HTTP requests */
	sa_work_stop(srv->work_read);
	srv->work = srv->work_read = NULL;
#ifdef HAVE_LIBPQ
	sa_cluster_stop(srv->cluster);   /* after the store thread: no apply job comes back */
	srv->cluster = NULL;
#endif
	sa_http_stop(srv);
	sa_sip_shutdown(srv);
	sa_webhooks_stop(srv);   /* after the loop's last events; before the store closes */
	struct event *evs[] = { srv->sig_term, srv->sig_int, srv->sig_hup, srv->housekeeping, srv->drain };
	for (size_t i = 0; i < sizeof(evs) / sizeof(evs[0]); i++)
		if (evs[i])
			event_free(evs[i]);
	if (srv->store) {
		sa_store_flush(srv->store);
		sa_store_close(srv->store);
	}
	sa_nonce_ctx_free(srv->nonce);
	if (srv->base)
		event_base_free(srv->base);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check-config", required_argument, NULL, 'C' },
		{ "version", no_argument, NULL, 'V' },
		{ "workers", required_argument, NULL, 'w' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *config = NULL;
	bool check_only = false;
	unsigned workers = 0;   /* 0: as the configuration says */
	int o;

	while ((o = getopt_long(argc, argv, "c:C:Vhw:", opts, NULL)) != -1) {
		switch (o) {
		case 'c': config = optarg; break;
		case 'C': config = optarg; check_only = true; break;
		case 'V': printf("sipauthd %s\n", PACKAGE_VERSION); return 0;
		case 'w': {
			char *end;
			unsigned long n = strtoul(optarg, &end, 10);
			if (*end || n < 1 || n > SA_WORKERS_MAX) {
				fprintf(stderr, "sipauthd: --workers must be 1 to %d\n", SA_WORKERS_MAX);
				return 2;
			}
			workers = (unsigned)n;
			break;
		}
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (!config || optind != argc) {
		usage(stderr);
		return 2;
	}
	sa_log_init();
	static struct sa_server srv;
	char err[512];
	if (sa_config_load(&srv.cfg, config, err, sizeof(err)) < 0) {
		if (check_only)
			fprintf(stderr, "sipauthd: %s\n", err);
		else   /* a start: a log line at its level (under systemd, <3>: journalctl -p err shows why) */
			log_err("event=config_invalid config=%s error=\"%s\"", config, LOGQ(err));
		return 1;
	}
	if (check_only) {
		/* what a start or a reload would load besides the file: the TLS
		 * certificates, keys and CAs, the admin token (each failure is
		 * logged, naming the file) */
		struct sa_server *tmp = calloc(1, sizeof(*tmp));
		bool loads = tmp != NULL;
		if (tmp) {
			tmp->cfg = srv.cfg;
			loads = sa_transport_tls_reload(tmp, &srv.cfg.tls) == 0;
			SSL_CTX_free(tmp->tls_server);
			SSL_CTX_free(tmp->tls_client);
			free(tmp);
		}
		loads = sa_http_check(&srv.cfg) == 0 && loads;
		if (!loads) {
			fprintf(stderr, "sipauthd: %s: a file it names does not load (above)\n", config);
			return 1;
		}
		printf("sipauthd: %s: configuration ok\n", config);
		return 0;
	}
	sa_log_set_level((enum sa_log_level)srv.cfg.log_level);
	srv.nworkers = workers ? workers : sa_workers_wanted(&srv.cfg);
	int rc = start(&srv);
	if (rc == 0) {
		log_info("event=started version=%s domain=%s", PACKAGE_VERSION, srv.domain);
		sa_log_limit(srv.cfg.log_rate_limit);   /* from here on, peers can trigger lines */
		sa_notify_ready();
		if (sa_notify_watchdog_start(srv.base) < 0)
			log_warn("event=watchdog_failed error=\"cannot schedule keep-alives\"");
		event_base_dispatch(srv.base);
	}
	teardown(&srv);
	sa_log_flush(1);
	log_info("event=stopped");
	return rc == 0 ? 0 : 1;
}
