/* http.c: sipauthd's HTTP side on the SIP loop (evhttp): /v1 to lib/api, /dashboard, /healthz, /metrics. */
#include "config.h"

#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <arpa/inet.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <strings.h>
#include <openssl/ssl.h>
#include <openssl/rand.h>

#include "abuse.h"
#include "api.h"
#include "connlimit.h"
#include "apilimit.h"
#include "log.h"
#include "metrics.h"
#include "server.h"
#include "work.h"

#define JSON_TYPE "application/json"
#define ACCEPT_BACKOFF_MS 250     /* out of descriptors: a listener rests this long */
#define BIG_ANSWER (4u << 20)     /* after an API answer this large, the heap is trimmed */

/* daemon/dashboard.c, generated from daemon/dashboard.html at build time */
extern const unsigned char sa_dashboard_html[];
extern const size_t sa_dashboard_html_len;
/* daemon/openapi.c, generated from daemon/openapi.json */
extern const unsigned char sa_openapi_json[];
extern const size_t sa_openapi_json_len;

#define HTTP_CONN_BUCKETS 1024

struct http_conn;

struct sa_http {
	struct sa_server *srv;
	struct evhttp *api;             /* [api] listen: everything */
	struct evhttp *metrics;         /* [api] metrics_listen: /metrics and /healthz only; or NULL */
	struct evhttp *api_tls;         /* the same over HTTPS (https: addresses; evhttp makes each */
	struct evhttp *metrics_tls;     /* connection's bufferevent per server, not per listener) */
	bool metrics_apart;             /* metrics_listen is set: /metrics is not on listen */
	SSL_CTX *tls;                   /* [api] certificate and private_key; swapped on SIGHUP */
	struct sa_api_ctx ctx;
	struct sa_apilimit *rate;       /* [api] rate_limit: a bucket per key hash */
	uint64_t answers[SA_METRICS_STATUSES];   /* by status, for /metrics */
	uint64_t next_id;               /* request ids for the log */
	int64_t started_at;
	char csp[256];                  /* the dashboard's policy, with its script's hash */
	/* [api] max_connections over both servers, and max_connections_per_source:
	 * counted from the bufferevent evhttp asks us for to the connection's
	 * close callback */
	unsigned nconns;
	uint64_t conns_refused;
	struct sa_connlimit *limit;
	struct http_conn *conn_map[HTTP_CONN_BUCKETS];   /* by evhttp connection */
	bool admin_token;               /* [api] admin_token_file was read */
	unsigned char admin_digest[32]; /* its token's SHA-256: the token itself is not kept */
	struct bufferevent **adopt;     /* accepted, evhttp's connection not yet known */
	unsigned nadopt, adopt_cap;
	struct event *adopt_ev;
};

/* One counted connection: its source's share, and the time it has to send
 * its next whole request. */
struct http_conn {
	struct sa_http *h;
	struct evhttp_connection *evcon;
	struct sa_connsrc *src;
	struct event *deadline;          /* armed while no request of it is being answered */
	unsigned busy;                   /* requests of it being answered */
	char peer[64];
	struct http_conn *next;          /* in h->conn_map */
};

/* One request while it is answered. */
struct exchange {
	struct sa_http *h;
	struct evhttp_request *req;
	const char *method;
	const char *path;
	uint64_t id;
};

static const char *method_name(enum evhttp_cmd_type t)
{
	switch (t) {
	case EVHTTP_REQ_GET: return "GET";
	case EVHTTP_REQ_POST: return "POST";
	case EVHTTP_REQ_HEAD: return "HEAD";
	case EVHTTP_REQ_PUT: return "PUT";
	case EVHTTP_REQ_DELETE: return "DELETE";
	case EVHTTP_REQ_OPTIONS: return "OPTIONS";
	case EVHTTP_REQ_TRACE: return "TRACE";
	case EVHTTP_REQ_CONNECT: return "CONNECT";
	case EVHTTP_REQ_PATCH: return "PATCH";
	default: return "OTHER";
	}
}

/* A path as it may appear in a log line: printable, no quotes, bounded. */
static void log_safe(const char *in, char *out, size_t outlen)
{
	size_t i;

	for (i = 0; in[i] != '\0' && i + 1 < outlen; i++)
		out[i] = (in[i] > 0x20 && in[i] < 0x7f && in[i] != '"' && in[i] != '\\') ? in[i] : '?';
	out[i] = '\0';
}

static void add_header(struct evhttp_request *req, const char *name, const char *value)
{
	evhttp_add_header(evhttp_request_get_output_headers(req), name, value);
}

/* Send status and body (copied unless it is static). Counts the answer. */
static void send_answer(struct exchange *x, int status, const char *type, const void *body, size_t len,
                        int is_static)
{
	struct evbuffer *buf = evbuffer_new();

	if (type != NULL)
		add_header(x->req, "Content-Type", type);
	add_header(x->req, "X-Content-Type-Options", "nosniff");
	add_header(x->req, "Cache-Control", "no-store");
	if (evhttp_request_get_command(x->req) == EVHTTP_REQ_HEAD) {
		/* libevent sends no body for HEAD, and then no length: the GET's (RFC 9110 §9.3.2) */
		char n[24];
		snprintf(n, sizeof n, "%zu", len);
		add_header(x->req, "Content-Length", n);
	}
	if (buf != NULL && len > 0) {
		if (is_static)
			evbuffer_add_reference(buf, body, len, NULL, NULL);
		else
			evbuffer_add(buf, body, len);
	}
	if (status >= 0 && status < SA_METRICS_STATUSES)
		x->h->answers[status]++;
	evhttp_send_reply(x->req, status, NULL, buf);
	if (buf != NULL)
		evbuffer_free(buf);
}

/* One log line per HTTP error, where the answer is decided: never a body, key or password. */
static void log_error(struct exchange *x, int status, const char *code, const char *account)
{
	char path[160], *addr = NULL;
	ev_uint16_t port = 0;

	struct evhttp_connection *evcon = evhttp_request_get_connection(x->req);
	if (evcon != NULL)   /* NULL: the client left while the store thread worked */
		evhttp_connection_get_peer(evcon, &addr, &port);
	log_safe(x->path, path, sizeof(path));
	sa_log(status >= 500 ? SA_LOG_ERR : SA_LOG_INFO,
	       "event=api_error req=%llu method=%s path=\"%s\" status=%d code=%s account=%s src=%s:%u",
	       (unsigned long long)x->id, x->method, path, status, code ? code : "-",
	       account && *account ? account : "-", addr ? addr : "-", (unsigned)port);
}

static void send_api_response(struct exchange *x, const struct sa_api_response *r)
{
	for (unsigned i = 0; i < r->nhdr; i++)
		add_header(x->req, r->hdr[i].name, r->hdr[i].value);
	if (r->status >= 400)
		log_error(x, r->status, r->error_code, r->account_id);
	send_answer(x, r->status, r->body ? JSON_TYPE : NULL, r->body, r->body ? r->body_len : 0, 0);
}

/* An answer the HTTP layer gives itself, in the API's error shape. */
static void send_error(struct exchange *x, int status, const char *code, const char *message, const char *allow)
{
	struct sa_api_response r = { 0 };

	sa_api_error(&r, status, code, message);
	if (allow != NULL)
		add_header(x->req, "Allow", allow);
	send_api_response(x, &r);
	sa_api_response_free(&r);
}

/* ---- /v1 ---- */

/* What the API changed that the rest of the daemon must act on, and the audit lines. */
static void api_effects(struct exchange *x, const struct sa_api_response *r)
{
	if (r->created_cred[0] != '\0') {
		log_audit("event=credential_created cred=%s trunk=%s username=\"%s\" account=%s via=api",
		         r->created_cred, r->trunk_id, r->created_user, r->account_id);
		sa_webhooks_credential_created(x->h->srv, r->account_id, r->trunk_id, r->created_cred, r->created_user);
	}
	if (r->deleted_cred[0] != '\0') {
		/* the same path as a delete by sipauthctl: the store's generation moved */
		int ended = sa_sip_revocation_check(x->h->srv);
		log_audit("event=credential_deleted cred=%s trunk=%s account=%s via=api calls_ended=%d",
		         r->deleted_cred, r->trunk_id, r->account_id, ended);
		sa_webhooks_credential_deleted(x->h->srv, r->account_id, r->trunk_id, r->deleted_cred, ended);
	}
	if (r->created_webhook[0] != '\0') {
		log_audit("event=webhook_created webhook=%s account=%s via=api", r->created_webhook, r->account_id);
		sa_webhooks_created(x->h->srv);
	}
	if (r->rotated_cred[0] != '\0') {
		/* no revocation: nothing was deleted, and the calls it set up go on */
		x->h->srv->metrics.credential_rotations++;
		log_audit("event=credential_rotated cred=%s trunk=%s account=%s via=api password_version=%u overlap=%u",
		         r->rotated_cred, r->trunk_id, r->account_id, r->rotated_version, r->rotated_overlap);
		sa_webhooks_credential_rotated(x->h->srv, r->account_id, r->trunk_id, r->rotated_cred, r->rotated_version,
		                               (int64_t)time(NULL) + (int64_t)r->rotated_overlap);
	}
}

static void api_too_large(struct exchange *x)
{
	char msg[96];

	snprintf(msg, sizeof(msg), "request body is larger than %u bytes", x->h->srv->cfg.api_max_body);
	send_error(x, 413, "body_too_large", msg, NULL);
}

/* A /v1 request on its way through the store thread (work.c). The text
 * holds copies of the path, query, key and body; the key and body are wiped
 * on the thread as soon as the answer is made. */
struct api_job {
	struct exchange x;
	struct sa_work *w;          /* the thread it runs on */
	bool fleet;                 /* [cluster]: the thread's database connection answers it */
	struct sa_api_ctx ctx;
	struct sa_api_request ar;
	struct sa_api_response resp;
	char *secret;               /* the key and body, within text */
	size_t secret_len;
	char text[];
};

static void api_job_run(struct sa_store *st, void *arg)
{
	struct api_job *j = arg;

	j->ctx.store = st;
	j->ctx.pg = j->fleet ? sa_work_database(j->w) : NULL;
	if (j->fleet && j->ctx.pg == NULL)
		sa_api_store_error(&j->resp, SA_STORE_EUNAVAIL);
	else
		sa_api_handle(&j->ctx, &j->ar, &j->resp);
	OPENSSL_cleanse(j->secret, j->secret_len);
}

/* glibc keeps a thread's freed memory in that thread's arena for good */
static void heap_trim_run(struct sa_store *st, void *arg)
{
	malloc_trim(0);
}

static void api_job_done(void *arg, bool cancelled)
{
	struct api_job *j = arg;
	struct sa_work *w = j->x.h->srv->work;
	bool big = j->resp.body_len > BIG_ANSWER;

	if (!cancelled) {
		api_effects(&j->x, &j->resp);
		send_api_response(&j->x, &j->resp);
	}
	sa_api_response_free(&j->resp);
	free(j);
	if (big && !cancelled)   /* a list of 100 000 credentials is ~40 MB: give it back, on the thread */
		sa_work_submit(w, heap_trim_run, NULL, NULL);
}

/* Copies s (n bytes, or up to its NUL when n is SIZE_MAX) to *at; NULL stays NULL. */
static const char *job_text(char **at, const char *s, size_t n)
{
	if (s == NULL)
		return NULL;
	if (n == SIZE_MAX)
		n = strlen(s);
	char *d = *at;
	memcpy(d, s, n);
	d[n] = '\0';
	*at += n + 1;
	return d;
}

static const char *idempotency_key(struct exchange *x)
{
	return evhttp_find_header(evhttp_request_get_input_headers(x->req), "Idempotency-Key");
}

/* The request as a job for the store thread; NULL when out of memory. */
static struct api_job *api_job_new(struct exchange *x, const char *query, const char *authz,
                                   const unsigned char *body, size_t len)
{
	const char *idem = idempotency_key(x);
	size_t n = strlen(x->path) + 1 + (query ? strlen(query) + 1 : 0) + (authz ? strlen(authz) + 1 : 0) + len + 1 +
	           (idem ? strlen(idem) + 1 : 0);
	struct api_job *j = calloc(1, sizeof(*j) + n);

	if (j == NULL)
		return NULL;
	char *at = j->text;
	j->x = *x;
	j->x.path = job_text(&at, x->path, SIZE_MAX);
	j->ctx = x->h->ctx;
	j->ctx.calls_each = NULL;   /* the call table is the loop's: see sa_api_reads_calls */
	j->ar = (struct sa_api_request){ .method = x->method, .path = j->x.path,
	                                 .query = job_text(&at, query, SIZE_MAX), .body_len = len,
	                                 .idempotency_key = job_text(&at, idem, SIZE_MAX), .now = (int64_t)time(NULL) };
	j->secret = at;
	j->ar.authorization = job_text(&at, authz, SIZE_MAX);
	j->ar.body = job_text(&at, (const char *)body, len);
	j->secret_len = (size_t)(at - j->secret);
	return j;
}

/* Answers on the loop: requests that read the call table, which is the
 * loop's (a key check and a trunk read: microseconds), and all of them when
 * there is no store thread. */
static void api_serve_here(struct exchange *x, const char *query, const char *authz,
                           const unsigned char *body, size_t len)
{
	struct sa_api_response r;
	struct sa_api_request ar = { .method = x->method, .path = x->path, .query = query,
	                             .authorization = authz, .body = (const char *)body, .body_len = len,
	                             .idempotency_key = idempotency_key(x), .now = (int64_t)time(NULL) };

	sa_api_handle(&x->h->ctx, &ar, &r);
	api_effects(x, &r);
	send_api_response(x, &r);
	sa_api_response_free(&r);
}

static int is_get(const struct exchange *x);

/* Everything else goes to the store thread (work.c says why). A full queue
 * is a 503 the client can retry, never a wait on the loop. */
static void api_hand_over(struct exchange *x, struct sa_work *w, const char *query, const char *authz,
                          const unsigned char *body, size_t len)
{
	struct api_job *j = api_job_new(x, query, authz, body, len);

	if (j != NULL) {
		j->w = w;
		j->fleet = x->h->srv->cfg.cluster_database[0] != '\0';
	}
	if (j != NULL && sa_work_submit(w, api_job_run, api_job_done, j) == 0)
		return;
	const char *why = j ? "the API has too many requests in progress; retry" : "out of memory; retry";
	if (j != NULL) {
		OPENSSL_cleanse(j->secret, j->secret_len);
		free(j);
	}
	add_header(x->req, "Retry-After", "1");
	send_error(x, 503, "busy", why, NULL);
}

/* A request over its key's budget gets 429 here, on the loop, before any
 * work is queued for the store thread: the key is known only there, so the
 * bucket is the hash of the key as presented, valid or not. 0: go on. */
static int api_rate_check(struct exchange *x, const char *authz)
{
	const struct sa_config *c = &x->h->srv->cfg;
	unsigned char hash[SA_APILIMIT_HASH];
	char retry[16], msg[160];
	const char *tok;
	size_t len;

	if (c->api_rate_limit == 0 || sa_api_bearer_token(authz, &tok, &len) < 0)
		return 0;
	sa_apilimit_key(tok, len, hash);
	unsigned wait = sa_apilimit_take(x->h->rate, hash, c->api_rate_limit, c->api_rate_burst, (int64_t)sa_now_ms());
	if (wait == 0)
		return 0;
	snprintf(retry, sizeof(retry), "%u", wait);
	snprintf(msg, sizeof(msg), "too many requests with this API key: at most %u a second, bursts of %u; retry in %u s",
	         c->api_rate_limit, c->api_rate_burst, wait);
	add_header(x->req, "Retry-After", retry);
	send_error(x, 429, "rate_limited", msg, NULL);
	return -1;
}

/* Fleet mode with the feed's connection down: the database is away, and a
 * request would only wait for the store thread's attempt to fail. */
static bool database_away(struct exchange *x)
{
#ifdef HAVE_LIBPQ
	struct sa_metrics_fleet s;

	if (x->h->srv->cluster == NULL)
		return false;
	sa_cluster_stats(x->h->srv->cluster, &s);
	return !s.up;
#else
	return false;
#endif
}

static void api_database_away(struct exchange *x)
{
	struct sa_api_response r = { 0 };

	sa_api_store_error(&r, SA_STORE_EUNAVAIL);
	add_header(x->req, "Retry-After", "1");
	send_api_response(x, &r);
	sa_api_response_free(&r);
}

/* The body (it may hold a password) and the key are wiped as soon as they
 * are read or copied. */
static void api_serve(struct exchange *x, const char *query)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(x->req);
	const char *authz = evhttp_find_header(evhttp_request_get_input_headers(x->req), "Authorization");
	size_t len = evbuffer_get_length(in);
	unsigned char *body = len > 0 ? evbuffer_pullup(in, -1) : NULL;
	/* reads and writes on threads of their own: a write waiting for an
	 * administrator's lock holds up no GET, a big GET no write */
	struct sa_work *w = is_get(x) ? x->h->srv->work_read : x->h->srv->work;

	if (api_rate_check(x, authz) < 0)
		goto out;
	if (len > x->h->srv->cfg.api_max_body)
		api_too_large(x);
	else if (w == NULL || (sa_api_reads_calls(x->path) && x->h->srv->cfg.cluster_database[0] == '\0'))
		api_serve_here(x, query, authz, body, len);   /* fleet mode: the calls are the database's */
	else if (database_away(x))
		api_database_away(x);
	else
		api_hand_over(x, w, query, authz, body, len);
out:
	if (body != NULL)
		OPENSSL_cleanse(body, len);
	if (authz != NULL)
		OPENSSL_cleanse((char *)authz, strlen(authz));
}

/* ---- /healthz, /metrics, /dashboard ---- */

/* Healthy while the store answers, takes writes (the last one did not fail)
 * and has room for new records in both files, and the daemon is not stopping. The body
 * says which, for whoever looks. */
static const char *health_problem(struct sa_server *srv)
{
	struct sa_store_usage u;
	struct sa_store_fault f;
	uint64_t gen;

	if (srv->stopping)
		return "stopping";
	if (sa_store_generation(srv->store, &gen) != SA_STORE_OK)
		return "store_unreadable";
	sa_store_fault(srv->store, &f);
	if (f.failing)
		return f.err == SA_STORE_EMAPFULL ? "store_map_full" : f.err == SA_STORE_ENOSPC ? "store_disk_full"
		                                                                                : "store_write_failed";
	if (sa_store_usage(srv->store, &u) != SA_STORE_OK)
		return "store_unreadable";
	if (u.percent >= SA_STORE_HEADROOM_PERCENT)
		return "store_map_full";
	if (sa_store_runtime_usage(srv->store, &u) != SA_STORE_OK)
		return "store_unreadable";
	if (u.percent >= SA_STORE_HEADROOM_PERCENT)
		return "store_map_full";   /* runtime/: no room for new registrations */
	return NULL;
}

static void healthz_serve(struct exchange *x)
{
	static const char ok[] = "{\"status\":\"ok\"}\n";
	const char *problem = health_problem(x->h->srv);
	char down[128];

	if (problem != NULL) {
		int n = snprintf(down, sizeof(down), "{\"status\":\"unavailable\",\"reason\":\"%s\"}\n", problem);
		if (strcmp(problem, "stopping") != 0)   /* a drain is expected: each load balancer poll is no error */
			log_error(x, 503, problem, NULL);
		send_answer(x, 503, JSON_TYPE, down, (size_t)n, 0);
		return;
	}
	send_answer(x, 200, JSON_TYPE, ok, sizeof(ok) - 1, 1);
}

/* The counters as the daemon keeps them, and the gauges each part reports of its own tables. */
static void metrics_fill(const struct sa_http *h, struct sa_metrics *m)
{
	sa_workers_metrics(h->srv, m);   /* every worker's counters, summed */
	m->workers = sa_workers_count(h->srv);
	m->version = PACKAGE_VERSION;
	m->start_time = h->started_at;
	struct sa_work *threads[] = { h->srv->work, h->srv->work_read };
	for (size_t i = 0; i < sizeof(threads) / sizeof(threads[0]); i++) {
		struct sa_work_stats ws;
		if (!threads[i])
			continue;
		sa_work_stats(threads[i], &ws);
		m->work_queued += ws.queued;
		m->work_jobs += ws.jobs_run;
		m->work_refused += ws.jobs_refused;
		m->work_busy_us += ws.busy_us;
	}
	uint64_t nb;
	m->registrations_active =
		sa_store_binding_count(h->srv->store, (int64_t)time(NULL), &nb) == SA_STORE_OK ? (int64_t)nb : -1;
	struct sa_store_usage u;
	struct sa_store_fault f;
	if (sa_store_usage(h->srv->store, &u) == SA_STORE_OK) {
		m->store_map_size = u.map_size;
		m->store_used = u.used;
	}
	if (sa_store_runtime_usage(h->srv->store, &u) == SA_STORE_OK) {
		m->store_runtime_map_size = u.map_size;
		m->store_runtime_used = u.used;
	}
	sa_store_fault(h->srv->store, &f);
	m->store_write_failures = f.failures;
	struct sa_store_index_stats ix;
	sa_store_credential_index_stats(h->srv->store, &ix);
	m->credential_index = h->srv->cfg.store_credential_index;
	m->credential_index_credentials = ix.credentials;
	m->credential_index_bytes = ix.bytes;
	m->credential_index_rebuilds = ix.rebuilds;
	m->credential_index_dropped = ix.dropped;
	sa_sip_gauges(h->srv, m);
	sa_transport_gauges(h->srv, m);
	memcpy(m->api_requests, h->answers, sizeof(m->api_requests));
	m->http_connections = h->nconns;
	m->http_refused = h->conns_refused;
	m->api_rate_limited = h->rate->refused;
	m->api_rate_limit_keys = sa_apilimit_keys(h->rate);
	m->log_suppressed = sa_log_suppressed_total();
}

/* Fleet mode: the feed's state and lag. Nothing on a single host. */
static int fleet_metrics(struct sa_server *srv, char **text, size_t *len)
{
#ifdef HAVE_LIBPQ
	struct sa_metrics_fleet f;

	if (srv->cluster == NULL)
		return 0;
	sa_cluster_stats(srv->cluster, &f);
	return sa_metrics_fleet_render(&f, text, len);
#else
	return 0;
#endif
}

/* This process's figures for /metrics, from /proc/self; -1 when /proc is not there. */
static int process_read(struct sa_metrics_process *p)
{
	char buf[1024];
	memset(p, 0, sizeof(*p));
	FILE *f = fopen("/proc/self/stat", "r");
	if (!f)
		return -1;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	const char *rest = strrchr(buf, ')');   /* the command may hold spaces and parentheses */
	unsigned long long utime, stime, starttime, vsize;
	long long rss;
	/* after ")": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
	 * cutime cstime priority nice threads itrealvalue starttime vsize rss */
	if (!rest || sscanf(rest + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d %*d "
	                              "%llu %llu %lld", &utime, &stime, &starttime, &vsize, &rss) != 5)
		return -1;
	double tick = (double)sysconf(_SC_CLK_TCK), page = (double)sysconf(_SC_PAGESIZE);
	p->cpu_seconds = (double)(utime + stime) / tick;
	p->virtual_bytes = vsize;
	p->resident_bytes = rss > 0 ? (uint64_t)((double)rss * page) : 0;
	/* the start: boot time (btime in /proc/stat) plus starttime ticks; where
	 * /proc/stat is hidden (the unit's ProcSubset=pid), now less the time
	 * since the start on the clock starttime counts on */
	unsigned long long btime = 0;
	if ((f = fopen("/proc/stat", "r")) != NULL) {
		while (fgets(buf, sizeof(buf), f))
			if (sscanf(buf, "btime %llu", &btime) == 1)
				break;
		fclose(f);
	}
	struct timespec boot, wall;
	if (btime > 0)
		p->start_time = (double)btime + (double)starttime / tick;
	else if (clock_gettime(CLOCK_BOOTTIME, &boot) == 0 && clock_gettime(CLOCK_REALTIME, &wall) == 0)
		p->start_time = ((double)wall.tv_sec + (double)wall.tv_nsec / 1e9) -
		                ((double)boot.tv_sec + (double)boot.tv_nsec / 1e9 - (double)starttime / tick);
	DIR *d = opendir("/proc/self/fd");
	if (d) {
		struct dirent *e;
		while ((e = readdir(d)) != NULL)
			p->open_fds += e->d_name[0] != '.';
		closedir(d);
		p->open_fds--;   /* the directory's own descriptor */
	}
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
		p->max_fds = rl.rlim_cur;
	return 0;
}

static void metrics_serve(struct exchange *x)
{
	struct sa_metrics m;
	size_t len = 0;
	char *text;

	/* count this answer before rendering, so the scrape sees itself */
	x->h->answers[200]++;
	metrics_fill(x->h, &m);
	x->h->answers[200]--;
	text = sa_metrics_render(&m, &len);
	struct sa_metrics_process proc;
	if (text != NULL && process_read(&proc) == 0 && sa_metrics_process_render(&proc, &text, &len) < 0) {
		free(text);
		text = NULL;
	}
	if (text != NULL && (sa_gateways_metrics(x->h->srv, &text, &len) < 0 ||
	                     sa_webhooks_metrics(x->h->srv, &text, &len) < 0 || fleet_metrics(x->h->srv, &text, &len) < 0)) {
		free(text);
		text = NULL;
	}
	if (text == NULL) {
		send_error(x, 500, "internal", "out of memory", NULL);
		return;
	}
	send_answer(x, 200, SA_METRICS_CONTENT_TYPE, text, len, 0);
	free(text);
}

/* The API's description: public, like the product page it documents. */
static void openapi_serve(struct exchange *x)
{
	send_answer(x, 200, JSON_TYPE, sa_openapi_json, sa_openapi_json_len, 1);
}

static void dashboard_serve(struct exchange *x)
{
	add_header(x->req, "Content-Security-Policy", x->h->csp);
	add_header(x->req, "X-Frame-Options", "DENY");
	add_header(x->req, "Referrer-Policy", "no-referrer");
	send_answer(x, 200, "text/html; charset=utf-8", sa_dashboard_html, sa_dashboard_html_len, 1);
}

/* Nothing outside the page may load, and only the page's own script may run
 * (its SHA-256 goes in the policy): a username tried over SIP is attacker
 * text that the page shows. */
static int dashboard_csp(struct sa_http *h)
{
	const char *page = (const char *)sa_dashboard_html, *end = page + sa_dashboard_html_len;
	const char *s = memmem(page, sa_dashboard_html_len, "<script>", 8), *e;
	unsigned char md[32];
	unsigned int mdlen = 0;
	char b64[48];

	if (s == NULL || (e = memmem(s + 8, (size_t)(end - s - 8), "</script>", 9)) == NULL)
		return -1;
	if (EVP_Digest(s + 8, (size_t)(e - s - 8), md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != sizeof(md))
		return -1;
	EVP_EncodeBlock((unsigned char *)b64, md, sizeof(md));
	snprintf(h->csp, sizeof(h->csp),
	         "default-src 'none'; script-src 'sha256-%s'; style-src 'unsafe-inline'; connect-src 'self'; "
	         "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'", b64);
	return 0;
}

/* ---- /v1/upstream: the admin's view of the gateways ---- */

static int is_get(const struct exchange *x);

/* The token in [api] admin_token_file (first line), kept as its SHA-256. */
static int admin_token_load(struct sa_http *h, const char *path)
{
	char tok[512] = "";
	FILE *f = fopen(path, "r");
	if (f == NULL) {
		log_err("event=admin_token_unreadable path=%s reason=\"%s\"", path, strerror(errno));
		return -1;
	}
	struct stat st;
	if (fstat(fileno(f), &st) == 0 && (st.st_mode & 077))
		log_warn("event=admin_token_readable path=%s mode=%04o hint=\"whoever can read it is the operator: "
		         "chmod 600 it\"", path, (unsigned)(st.st_mode & 07777));
	bool ok = fgets(tok, sizeof(tok), f) != NULL;
	fclose(f);
	size_t n = strcspn(tok, "\r\n");
	tok[n] = '\0';
	if (!ok || n < 16) {
		OPENSSL_cleanse(tok, sizeof(tok));
		log_err("event=admin_token_unreadable path=%s reason=\"the first line must hold a token of 16 characters or more\"",
		        path);
		return -1;
	}
	ok = SHA256((const unsigned char *)tok, n, h->admin_digest) != NULL;
	OPENSSL_cleanse(tok, sizeof(tok));
	h->admin_token = ok;
	return ok ? 0 : -1;
}

/* Bearer the admin token? Compared as digests, in constant time. */
static int admin_ok(struct exchange *x)
{
	const char *authz = evhttp_find_header(evhttp_request_get_input_headers(x->req), "Authorization");
	unsigned char md[32];
	if (authz == NULL || strncasecmp(authz, "Bearer ", 7) != 0)
		return 0;
	const char *tok = authz + 7;
	int ok = SHA256((const unsigned char *)tok, strlen(tok), md) != NULL &&
	         CRYPTO_memcmp(md, x->h->admin_digest, sizeof(md)) == 0;
	OPENSSL_cleanse((char *)tok, strlen(tok));
	return ok;
}

/* The admin's resources: an admin token configured and presented. 1 when it was. */
static int admin_checked(struct exchange *x)
{
	if (!x->h->admin_token) {
		send_error(x, 403, "forbidden", "no admin token is configured ([api] admin_token_file)", NULL);
		return 0;
	}
	if (!admin_ok(x)) {
		add_header(x->req, "WWW-Authenticate", "Bearer realm=\"sipauthd admin\"");
		send_error(x, 401, "unauthorized", "missing or wrong admin token", NULL);
		return 0;
	}
	return 1;
}

static void upstream_serve(struct exchange *x)
{
	if (!is_get(x)) {
		send_error(x, 405, "method_not_allowed", "only GET and HEAD are allowed here", "GET, HEAD");
		return;
	}
	if (!admin_checked(x))
		return;
	char *body = sa_gateways_json(x->h->srv);
	if (body == NULL) {
		send_error(x, 500, "internal", "out of memory", NULL);
		return;
	}
	send_answer(x, 200, JSON_TYPE, body, strlen(body), 0);
	free(body);
}

/* ---- /v1/bans: the sources [abuse] banned, and lifting a ban (fail2ban-client unban) ---- */

/* A source as the abuse table keys it: an IPv4 address, or an IPv6 /64. */
static bool ban_source_text(const unsigned char *key, size_t len, char *text, size_t size)
{
	unsigned char a[16] = { 0 };
	memcpy(a, key, len < sizeof(a) ? len : sizeof(a));
	if (!inet_ntop(len == 4 ? AF_INET : AF_INET6, a, text, (socklen_t)size))
		return false;
	if (len == 8 && strlen(text) + 4 < size)
		strcat(text, "/64");
	return true;
}

struct ban_list {
	json_t *data;
	int64_t wall_minus_mono;   /* bans count on the monotonic clock; the API shows the wall clock's */
};

static void ban_json_cb(const unsigned char *addr, size_t len, uint64_t until, bool other_trunks, void *arg)
{
	struct ban_list *bl = arg;
	char text[INET6_ADDRSTRLEN + 4];
	if (!ban_source_text(addr, len, text, sizeof(text)))
		return;
	json_array_append_new(bl->data, json_pack("{s:s,s:o,s:s}", "source", text, "until",
	                                          sa_api_rfc3339((int64_t)until + bl->wall_minus_mono), "scope",
	                                          other_trunks ? "other_trunks" : "all"));
}

static void bans_serve(struct exchange *x)
{
	const char *addr = x->path[sizeof("/v1/bans") - 1] == '/' ? x->path + sizeof("/v1/bans") : NULL;
	uint64_t now = sa_mono_s();
	if (addr == NULL) {
		if (!is_get(x)) {
			send_error(x, 405, "method_not_allowed", "only GET and HEAD are allowed here", "GET, HEAD");
			return;
		}
		if (!admin_checked(x))
			return;
		struct ban_list bl = { json_array(), (int64_t)time(NULL) - (int64_t)now };
		if (x->h->srv->cfg.abuse.max_failures)
			sa_abuse_each_ban(x->h->srv->abuse, now, ban_json_cb, &bl);
		json_t *doc = json_pack("{s:o}", "data", bl.data);
		char *body = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
		json_decref(doc);
		if (body == NULL) {
			send_error(x, 500, "internal", "out of memory", NULL);
			return;
		}
		send_answer(x, 200, JSON_TYPE, body, strlen(body), 0);
		free(body);
		return;
	}
	if (strcmp(x->method, "DELETE") != 0) {
		send_error(x, 405, "method_not_allowed", "only DELETE is allowed here", "DELETE");
		return;
	}
	if (!admin_checked(x))
		return;
	unsigned char a[16], key[16];
	char given[INET6_ADDRSTRLEN + 4];
	snprintf(given, sizeof(given), "%s", addr);
	char *slash = strchr(given, '/');
	if (slash && strcmp(slash, "/64") == 0 && strchr(given, ':'))
		*slash = '\0';   /* an IPv6 source is its /64, however it is written */
	size_t len = inet_pton(AF_INET, given, a) == 1 ? 4 : inet_pton(AF_INET6, given, a) == 1 ? 16 : 0;
	if (len == 0) {
		send_error(x, 400, "invalid_parameter", "not an IPv4 or IPv6 address (or IPv6 /64)", NULL);
		return;
	}
	len = sa_abuse_source(a, len, key);
	if (!sa_abuse_unban(x->h->srv->abuse, key, len, now)) {
		send_error(x, 404, "not_found", "this source is not banned", NULL);
		return;
	}
	char text[INET6_ADDRSTRLEN + 4];
	ban_source_text(key, len, text, sizeof(text));
	log_audit("event=unban src=%s by=api req=%llu", text, (unsigned long long)x->id);
	send_answer(x, 204, NULL, NULL, 0, 0);
}

/* ---- dispatch ---- */

static int is_get(const struct exchange *x)
{
	return strcmp(x->method, "GET") == 0 || strcmp(x->method, "HEAD") == 0;
}

static void http_conn_busy(struct sa_http *h, struct evhttp_request *req);

static void exchange_init(struct exchange *x, struct sa_http *h, struct evhttp_request *req, const char **query)
{
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);

	http_conn_busy(h, req);
	x->h = h;
	x->req = req;
	x->id = ++h->next_id;
	x->method = method_name(evhttp_request_get_command(req));
	x->path = uri && evhttp_uri_get_path(uri) ? evhttp_uri_get_path(uri) : "";
	*query = uri ? evhttp_uri_get_query(uri) : NULL;
}

/* The pages outside /v1: GET or HEAD only. 1 when served. */
static int page_serve(struct exchange *x, int metrics_here, int dashboard_here)
{
	void (*serve)(struct exchange *) = NULL;

	if (strcmp(x->path, "/healthz") == 0)
		serve = healthz_serve;
	else if (strcmp(x->path, "/metrics") == 0 && metrics_here)
		serve = metrics_serve;
	else if (strcmp(x->path, "/dashboard") == 0 && dashboard_here)
		serve = dashboard_serve;
	else if (strcmp(x->path, "/v1/openapi.json") == 0 && dashboard_here)
		serve = openapi_serve;
	if (serve == NULL)
		return 0;
	if (!is_get(x))
		send_error(x, 405, "method_not_allowed", "only GET and HEAD are allowed here", "GET, HEAD");
	else
		serve(x);
	return 1;
}

static void api_cb(struct evhttp_request *req, void *arg)
{
	struct exchange x;
	const char *query;

	exchange_init(&x, arg, req, &query);
	if (strcmp(x.path, "/") == 0 && is_get(&x)) {
		add_header(req, "Location", "/dashboard");
		send_answer(&x, 302, NULL, NULL, 0, 1);
	} else if ((strcmp(x.path, "/v1/upstream") == 0 || strcmp(x.path, "/v1/openapi.json") == 0) && query &&
	           query[0] != '\0') {
		send_error(&x, 400, "invalid_parameter", "this resource takes no query parameters", NULL);
	} else if (strncmp(x.path, "/v1/bans", 8) == 0 && (x.path[8] == '\0' || x.path[8] == '/') && query &&
	           query[0] != '\0') {
		send_error(&x, 400, "invalid_parameter", "this resource takes no query parameters", NULL);
	} else if (strcmp(x.path, "/v1/upstream") == 0) {
		upstream_serve(&x);   /* admin, not an account's: before the API's routes */
	} else if (strncmp(x.path, "/v1/bans", 8) == 0 && (x.path[8] == '\0' || (x.path[8] == '/' && x.path[9]))) {
		bans_serve(&x);   /* admin too */
	} else if (page_serve(&x, !x.h->metrics_apart, 1)) {
		/* answered: /healthz, /metrics, /dashboard, /v1/openapi.json */
	} else if (strncmp(x.path, "/v1/", 4) == 0) {
		api_serve(&x, query);
	} else {
		send_error(&x, 404, "not_found", "no such resource", NULL);
	}
}

static void metrics_cb(struct evhttp_request *req, void *arg)
{
	struct exchange x;
	const char *query;

	exchange_init(&x, arg, req, &query);
	if (!page_serve(&x, 1, 0))
		send_error(&x, 404, "not_found", "no such resource (this address serves /metrics and /healthz)", NULL);
}

/* ---- connection caps ---- */

/* libevent 2.1 has no evhttp_set_max_connections (2.2 does) and no hook
 * when evhttp accepts, but it asks evhttp_set_bevcb's callback for each new
 * connection's bufferevent, before the connection exists. The bufferevent is
 * kept (a reference, so that it stays valid whatever evhttp does meanwhile)
 * and, once the accept callback is over, its connection is found: evhttp
 * makes the connection the bufferevent's callback argument (checked below
 * with evhttp_connection_get_bufferevent). Then the connection is counted,
 * with a close callback to uncount it, or closed at once over a cap.
 *
 * evhttp's own timeout is an idle timer that each byte re-arms: a client
 * sending a request a byte every few seconds held its connection for as
 * long as it liked, and 256 such took every slot, /healthz's too. So a
 * connection has SA_HTTP_TIMEOUT from its accept, and from each answer, to
 * send its next whole request; and one source (an IPv4 address, an IPv6
 * /64) holds at most [api] max_connections_per_source of them. */
static size_t conn_bucket(const struct evhttp_connection *evcon)
{
	uintptr_t v = (uintptr_t)evcon;
	return (size_t)((v >> 4) ^ (v >> 14)) & (HTTP_CONN_BUCKETS - 1);
}

static struct http_conn *http_conn_find(struct sa_http *h, const struct evhttp_connection *evcon)
{
	struct http_conn *c = h->conn_map[conn_bucket(evcon)];
	while (c && c->evcon != evcon)
		c = c->next;
	return c;
}

static void http_deadline_arm(struct http_conn *c)
{
	struct timeval tv = { .tv_sec = SA_HTTP_TIMEOUT };
	evtimer_add(c->deadline, &tv);
}

static void http_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct http_conn *c = arg;
	if (c->busy)
		return;
	log_info("event=http_closed reason=request_deadline src=%s timeout=%d", c->peer, SA_HTTP_TIMEOUT);
	evhttp_connection_free(c->evcon);   /* its close callback frees c */
}

/* A request of the connection answered: its next one has SA_HTTP_TIMEOUT. */
static void http_request_done_cb(struct evhttp_request *req, void *arg)
{
	struct http_conn *c = arg;
	if (c->busy && --c->busy == 0)
		http_deadline_arm(c);
}

/* A whole request arrived: no deadline while it is answered (an answer may
 * wait for the store thread). */
static void http_conn_busy(struct sa_http *h, struct evhttp_request *req)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	struct http_conn *c = evcon ? http_conn_find(h, evcon) : NULL;
	if (c == NULL)
		return;
	c->busy++;
	evtimer_del(c->deadline);
	evhttp_request_set_on_complete_cb(req, http_request_done_cb, c);
}

static void http_conn_closed_cb(struct evhttp_connection *evcon, void *arg)
{
	struct http_conn *c = arg;
	struct sa_http *h = c->h;
	h->nconns--;
	sa_connlimit_release(h->limit, c->src, false);
	for (struct http_conn **pp = &h->conn_map[conn_bucket(evcon)]; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	event_free(c->deadline);
	free(c);
}

/* The peer's address bytes (4, or 16) and its text (sa_flow_peer's, as
 * the SIP side logs it); 0 when unknown. */
static size_t peer_of_bev(struct bufferevent *bev, unsigned char addr[16], char *text, size_t len)
{
	struct sa_flow fl = { .sslen = sizeof(fl.ss) };
	char ip[INET6_ADDRSTRLEN];
	uint16_t port;
	snprintf(text, len, "-");
	if (getpeername(bufferevent_getfd(bev), &fl.ss.sa, &fl.sslen) < 0 ||
	    (fl.ss.sa.sa_family != AF_INET && fl.ss.sa.sa_family != AF_INET6))
		return 0;
	sa_flow_peer(&fl, ip, sizeof(ip), &port);
	snprintf(text, len, "%s:%u", ip, port);
	if (fl.ss.sa.sa_family == AF_INET6) {
		memcpy(addr, &fl.ss.in6.sin6_addr, 16);
		return 16;
	}
	memcpy(addr, &fl.ss.in.sin_addr, 4);
	return 4;
}

static void http_conn_adopt(struct sa_http *h, struct bufferevent *bev)
{
	bufferevent_data_cb readcb = NULL;
	void *cbarg = NULL;
	bufferevent_getcb(bev, &readcb, NULL, NULL, &cbarg);
	struct evhttp_connection *evcon = cbarg;
	if (readcb == NULL || evcon == NULL || evhttp_connection_get_bufferevent(evcon) != bev)
		return;   /* evhttp gave up on it already */
	const struct sa_config *cfg = &h->srv->cfg;
	struct sa_connlimit_cfg lim = { .max_connections = cfg->api_max_connections,
	                                .max_connections_per_source = cfg->api_max_connections_per_source,
	                                .max_handshakes = UINT32_MAX, .max_handshakes_per_source = UINT32_MAX };
	unsigned char addr[16];
	char peer[64];
	size_t alen = peer_of_bev(bev, addr, peer, sizeof(peer));
	struct sa_connsrc *src = NULL;
	struct http_conn *c = NULL;
	enum sa_conn_verdict v = SA_CONN_NO_MEMORY;
	if (alen > 0 && (c = calloc(1, sizeof(*c))) && (c->deadline = evtimer_new(h->srv->base, http_deadline_cb, c)))
		v = sa_connlimit_admit(h->limit, &lim, addr, alen, false, &src);
	if (v != SA_CONN_OK) {
		h->conns_refused++;
		log_warn("event=http_refused reason=%s src=%s connections=%u", v == SA_CONN_SOURCE_FULL
		         ? "max_connections_per_source" : v == SA_CONN_FULL ? "max_connections" : alen ? "no_memory" : "no_peer", peer,
		         h->nconns);
		if (c && c->deadline)
			event_free(c->deadline);
		free(c);
		evhttp_connection_free(evcon);
		return;
	}
	h->nconns++;
	c->h = h;
	c->evcon = evcon;
	c->src = src;
	snprintf(c->peer, sizeof(c->peer), "%s", peer);
	size_t b = conn_bucket(evcon);
	c->next = h->conn_map[b];
	h->conn_map[b] = c;
	evhttp_connection_set_closecb(evcon, http_conn_closed_cb, c);
	http_deadline_arm(c);
}

static void http_adopt_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sa_http *h = arg;
	for (unsigned i = 0; i < h->nadopt; i++) {
		http_conn_adopt(h, h->adopt[i]);
		bufferevent_decref(h->adopt[i]);
	}
	h->nadopt = 0;
}

/* The bufferevent of a new connection: plain, or (tls) TLS with the
 * current context; the connection keeps that context across a reload. */
static struct bufferevent *http_bev_new(struct sa_http *h, struct event_base *base, bool tls)
{
	struct bufferevent *bev = NULL;

	if (tls) {
		/* out of memory here, evhttp makes a plain bufferevent of its own: a
		 * TLS client's hello then reads as a bad request and is closed */
		SSL *ssl = SSL_new(h->tls);
		if (ssl == NULL)
			return NULL;
		bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
		if (bev == NULL) {
			SSL_free(ssl);
			return NULL;
		}
		/* a client that closes without close_notify is not an error worth a log line */
		bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	} else {
		bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	}
	if (bev == NULL)
		return NULL;
	if (h->nadopt == h->adopt_cap) {
		unsigned cap = h->adopt_cap ? 2 * h->adopt_cap : 64;
		struct bufferevent **a = realloc(h->adopt, cap * sizeof(*a));
		if (a == NULL)
			return bev;   /* uncounted, but served */
		h->adopt = a;
		h->adopt_cap = cap;
	}
	bufferevent_incref(bev);
	h->adopt[h->nadopt++] = bev;
	event_active(h->adopt_ev, EV_TIMEOUT, 1);
	return bev;
}

static struct bufferevent *http_bev_cb(struct event_base *base, void *arg)
{
	return http_bev_new(arg, base, false);
}

static struct bufferevent *https_bev_cb(struct event_base *base, void *arg)
{
	return http_bev_new(arg, base, true);
}

/* accept() failed (most often: out of descriptors). The socket stays
 * readable, so retrying at once would spin: the listener rests instead. The
 * callback gets evhttp's argument, not ours, hence the listener as the
 * timer's argument; the loop never runs again after sa_http_stop frees it. */
static void http_accept_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	evconnlistener_enable(arg);
}

static void http_accept_error_cb(struct evconnlistener *lev, void *arg)
{
	int err = errno;
	struct timeval tv = { .tv_sec = 0, .tv_usec = ACCEPT_BACKOFF_MS * 1000 };
	evconnlistener_disable(lev);
	event_base_once(evconnlistener_get_base(lev), -1, EV_TIMEOUT, http_accept_resume_cb, lev, &tv);
	log_warn("event=accept_paused proto=http error=\"%s\" retry_ms=%u", strerror(err), ACCEPT_BACKOFF_MS);
}

static int http_bind(struct sa_http *h, struct evhttp *http, const struct sa_endpoint *ep)
{
	struct evconnlistener *lev = evconnlistener_new_bind(h->srv->base, NULL, NULL,
		LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_REUSEABLE, 128,
		(const struct sockaddr *)&ep->ss, (int)ep->sslen);
	if (lev == NULL)
		return -1;
	evconnlistener_set_error_cb(lev, http_accept_error_cb);
	if (evhttp_bind_listener(http, lev) == NULL) {
		evconnlistener_free(lev);
		return -1;
	}
	return 0;
}

/* ---- start and stop ---- */

/* One evhttp for the addresses of eps that are (tls) or are not HTTPS;
 * 0 with *out NULL when there are none, -1 on failure. */
static int server_new(struct sa_http *h, const struct sa_endpoint *eps, unsigned n,
                      void (*cb)(struct evhttp_request *, void *), bool tls, struct evhttp **out)
{
	unsigned mine = 0;
	struct evhttp *http;

	*out = NULL;
	for (unsigned i = 0; i < n; i++)
		mine += (eps[i].proto == SA_PROTO_TLS) == tls;
	if (mine == 0)
		return 0;
	if ((http = evhttp_new(h->srv->base)) == NULL)
		return -1;
	/* bodies up to the cutoff are read and answered 413 in JSON; past it
	 * evhttp stores no more and answers 413 itself, after draining the rest
	 * (lingering close) so that a client still sending sees the 413 rather
	 * than a reset; the idle timeout bounds how long that may take */
	evhttp_set_max_body_size(http, (ev_ssize_t)h->srv->cfg.api_max_body * SA_HTTP_BODY_CUTOFF);
	evhttp_set_flags(http, EVHTTP_SERVER_LINGERING_CLOSE);
	evhttp_set_max_headers_size(http, SA_HTTP_MAX_HEADERS);
	evhttp_set_timeout(http, SA_HTTP_TIMEOUT);
	/* every method reaches us, so that a wrong one gets a JSON 405 with Allow */
	evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT |
	                                 EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
	                                 EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
	evhttp_set_gencb(http, cb, h);
	evhttp_set_bevcb(http, tls ? https_bev_cb : http_bev_cb, h);
	for (unsigned i = 0; i < n; i++) {
		if ((eps[i].proto == SA_PROTO_TLS) != tls)
			continue;
		if (http_bind(h, http, &eps[i]) < 0) {
			log_err("event=http_bind_failed addr=%s port=%u error=\"%s\"", eps[i].host, eps[i].port,
			        strerror(errno));
			evhttp_free(http);
			return -1;
		}
		log_info("event=http_listening addr=%s port=%u scheme=%s serves=%s", eps[i].host, eps[i].port,
		         tls ? "https" : "http", cb == api_cb ? "api" : "metrics");
	}
	*out = http;
	return 0;
}

static bool https_wanted(const struct sa_config *c)
{
	for (unsigned i = 0; i < c->napi_listen; i++)
		if (c->api_listen[i].proto == SA_PROTO_TLS)
			return true;
	for (unsigned i = 0; i < c->nmetrics_listen; i++)
		if (c->metrics_listen[i].proto == SA_PROTO_TLS)
			return true;
	return false;
}

/* The HTTPS context from next's [api] certificate and key, with [tls]'s
 * ciphers and minimum version (TLS 1.2 at least) and no client
 * certificates. NULL when a file does not load (logged, naming it). */
static SSL_CTX *https_ctx(const struct sa_config *next)
{
	struct sa_tls_config tc = next->tls;

	snprintf(tc.certificate, sizeof(tc.certificate), "%s", next->api_certificate);
	snprintf(tc.private_key, sizeof(tc.private_key), "%s", next->api_private_key);
	tc.client_ca[0] = '\0';
	if (tc.min_version < TLS1_2_VERSION)
		tc.min_version = TLS1_2_VERSION;
	return sa_transport_tls_server_ctx(&tc);
}

int sa_http_check(const struct sa_config *c)
{
	struct sa_http h = { .srv = NULL };
	int rc = 0;
	if (c->api_admin_token_file[0] && admin_token_load(&h, c->api_admin_token_file) < 0)
		rc = -1;
	OPENSSL_cleanse(h.admin_digest, sizeof(h.admin_digest));
	if (https_wanted(c)) {
		SSL_CTX *ctx = https_ctx(c);
		rc = ctx ? rc : -1;
		SSL_CTX_free(ctx);
	}
	return rc;
}

int sa_http_tls_prepare(struct sa_server *srv, const struct sa_config *next, SSL_CTX **ctx)
{
	struct sa_http *h = srv->http;

	*ctx = NULL;
	if (h == NULL || h->tls == NULL)
		return 0;   /* no HTTPS: https: addresses are a restart's business */
	*ctx = https_ctx(next);
	return *ctx ? 0 : -1;
}

void sa_http_tls_commit(struct sa_server *srv, SSL_CTX *ctx)
{
	struct sa_http *h = srv->http;
	if (h == NULL || ctx == NULL)
		return;
	SSL_CTX_free(h->tls);   /* connections hold their own reference */
	h->tls = ctx;
}

/* GET .../calls: the call table of sip_calls.c, in the API's terms. */
struct calls_adapter {
	sa_api_call_cb cb;
	void *arg;
};

static void call_info_cb(const struct sa_call_info *ci, void *arg)
{
	struct calls_adapter *ad = arg;
	struct sa_api_call c = { .call_id = ci->call_id, .cred_id = ci->cred_id, .inbound = ci->inbound,
	                         .confirmed = ci->confirmed, .started_at = ci->started_at };
	ad->cb(&c, ad->arg);
}

static void calls_each(void *owner, const char *trunk_id, sa_api_call_cb cb, void *arg)
{
	struct calls_adapter ad = { .cb = cb, .arg = arg };
	sa_sip_calls_each(owner, trunk_id, call_info_cb, &ad);
}

int sa_http_start(struct sa_server *srv)
{
	const struct sa_config *c = &srv->cfg;
	struct sa_http *h;

	if (c->napi_listen == 0 && c->nmetrics_listen == 0)
		return 0;
	h = calloc(1, sizeof(*h));
	if (h == NULL)
		return -1;
	srv->http = h;
	h->srv = srv;
	h->started_at = (int64_t)time(NULL);
	h->ctx = (struct sa_api_ctx){ .store = srv->store, .min_password_len = c->api_min_password_len,
	                              .calls_each = calls_each, .calls_owner = srv };
	if ((h->adopt_ev = event_new(srv->base, -1, 0, http_adopt_cb, h)) == NULL)
		return -1;
	uint64_t seed;
	RAND_bytes((unsigned char *)&seed, sizeof(seed));
	if ((h->limit = sa_connlimit_new(c->api_max_connections < 4096 ? c->api_max_connections : 4096, seed)) == NULL)
		return -1;
	if ((h->rate = malloc(sizeof(*h->rate))) == NULL)
		return -1;
	sa_apilimit_init(h->rate);
	if (dashboard_csp(h) < 0) {
		log_err("event=http_failed error=\"the dashboard page has no <script> element\"");
		return -1;
	}
	if (c->api_admin_token_file[0] && admin_token_load(h, c->api_admin_token_file) < 0)
		return -1;
	h->metrics_apart = c->nmetrics_listen > 0;
	if (https_wanted(c) && (h->tls = https_ctx(c)) == NULL)
		return -1;
	if (server_new(h, c->api_listen, c->napi_listen, api_cb, false, &h->api) < 0 ||
	    server_new(h, c->api_listen, c->napi_listen, api_cb, true, &h->api_tls) < 0 ||
	    server_new(h, c->metrics_listen, c->nmetrics_listen, metrics_cb, false, &h->metrics) < 0 ||
	    server_new(h, c->metrics_listen, c->nmetrics_listen, metrics_cb, true, &h->metrics_tls) < 0)
		return -1;
	return 0;
}

void sa_http_stop(struct sa_server *srv)
{
	struct sa_http *h = srv->http;

	if (h == NULL)
		return;
	if (h->api != NULL)
		evhttp_free(h->api);
	if (h->metrics != NULL)
		evhttp_free(h->metrics);
	if (h->api_tls != NULL)
		evhttp_free(h->api_tls);
	if (h->metrics_tls != NULL)
		evhttp_free(h->metrics_tls);
	SSL_CTX_free(h->tls);
	/* accepted in the last loop pass and not yet adopted */
	for (unsigned i = 0; i < h->nadopt; i++)
		bufferevent_decref(h->adopt[i]);
	free(h->adopt);
	if (h->adopt_ev != NULL)
		event_free(h->adopt_ev);
	free(h->rate);
	if (h->limit != NULL)
		sa_connlimit_free(h->limit);
	free(h);
	srv->http = NULL;
}
