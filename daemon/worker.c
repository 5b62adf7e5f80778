/* worker.c: the SIP workers: one event loop per core, each owning its
 * transactions and calls; what reaches the wrong one is handed over.
 *
 * Worker 0 is the main thread's server: it also runs the API, the store
 * threads' answers, housekeeping, the resolver, the probes and the fleet
 * feed. Workers 1..n-1 are copies of it with their own loop, sockets bound
 * with SO_REUSEPORT (the kernel spreads sources over them), store handle,
 * transactions, calls, paced BYEs and counters; the modules that hold state
 * across sources (bans, nonces and their replay table, connection limits,
 * trunk channels, gateways, webhooks, the log's budget) are shared and lock
 * inside. Ownership travels in what a worker writes: the first random
 * character of our Via branch names the worker (answers), a directory of
 * Call-IDs names the worker holding a call or an INVITE transaction (ACK,
 * CANCEL, in-dialog requests), and a connection id names the worker holding
 * that connection (sends down a PBX's TCP or TLS flow). Each worker has an
 * inbox: a list under a mutex and an eventfd that wakes its loop. */
#include "config.h"

#include <errno.h>
#include <sched.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/crypto.h>

#include "log.h"
#include "server.h"
#include "worker.h"

#define HOUSEKEEPING_SEC 5
#define DIR_MIN_BUCKETS 1024

enum wmsg_kind { WM_INPUT, WM_INPUT_WAITED, WM_SEND, WM_RUN };

struct run_wait {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	unsigned left;
};

struct wmsg {
	struct wmsg *next;
	enum wmsg_kind kind;
	struct sa_flow flow;
	sa_worker_fn fn;
	void *arg;
	bool owned;                     /* arg is malloc'd: freed here if fn never runs (sa_workers_post) */
	struct run_wait *wait;
	size_t len;
	char buf[];
};

struct inbox {
	pthread_mutex_t mu;
	struct wmsg *head, **tail;
	int efd;
	struct event *ev;
};

struct dir_entry {
	struct dir_entry *next;
	unsigned worker, refs;
	char key[];
};

/* A shared map from a key to the worker that holds it, with holders counted. */
struct dir {
	pthread_mutex_t mu;
	struct dir_entry **b;
	size_t nb, count;
};

struct sa_workers {
	unsigned n;
	struct sa_server **w;          /* [0]: the main server */
	struct inbox *inbox;           /* [n] */
	pthread_t *thread;             /* [n]; [0] unused */
	struct event **tick;           /* [n]; housekeeping of workers 1..n-1 */
	bool running;                  /* the threads run their loops */
	struct dir calls;              /* Call-ID -> worker holding the call or INVITE transaction */
	struct dir conns;              /* "proto:address:port" of an accepted connection -> its worker */
};

unsigned sa_workers_wanted(const struct sa_config *c)
{
	if (c->workers)
		return c->workers;
	/* the cores this process may run on (taskset, systemd CPUAffinity=), else the online ones */
	cpu_set_t set;
	long cores = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : sysconf(_SC_NPROCESSORS_ONLN);
	return cores < 1 ? 1 : cores > SA_WORKERS_MAX ? SA_WORKERS_MAX : (unsigned)cores;
}

unsigned sa_workers_count(const struct sa_server *srv)
{
	return srv->workers ? srv->workers->n : 1;
}

struct sa_server *sa_worker_at(const struct sa_server *srv, unsigned i)
{
	return srv->workers ? srv->workers->w[i] : (struct sa_server *)srv;
}

/* ---- the inboxes ---- */

static void post(struct sa_workers *wk, unsigned to, struct wmsg *msg)
{
	struct inbox *ib = &wk->inbox[to];
	msg->next = NULL;
	pthread_mutex_lock(&ib->mu);
	bool was_empty = ib->head == NULL;
	*ib->tail = msg;
	ib->tail = &msg->next;
	pthread_mutex_unlock(&ib->mu);
	if (was_empty) {
		uint64_t one = 1;
		if (write(ib->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
			log_err("event=worker_wake_failed worker=%u error=\"%s\"", to, strerror(errno));
	}
}

static struct wmsg *msg_new(enum wmsg_kind kind, const struct sa_flow *fl, const char *buf, size_t len)
{
	struct wmsg *m = malloc(sizeof(*m) + len);
	if (!m)
		return NULL;
	memset(m, 0, sizeof(*m));
	m->kind = kind;
	if (fl)
		m->flow = *fl;
	m->len = len;
	if (len)
		memcpy(m->buf, buf, len);
	return m;
}

static void run_done(struct run_wait *wait)
{
	pthread_mutex_lock(&wait->mu);
	if (--wait->left == 0)
		pthread_cond_signal(&wait->cv);
	pthread_mutex_unlock(&wait->mu);
}

static void inbox_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sa_server *w = arg;
	struct inbox *ib = &w->workers->inbox[w->worker];
	uint64_t n;
	if (read(fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		log_err("event=worker_inbox_failed worker=%u error=\"%s\"", w->worker, strerror(errno));
	pthread_mutex_lock(&ib->mu);
	struct wmsg *m = ib->head;
	ib->head = NULL;
	ib->tail = &ib->head;
	pthread_mutex_unlock(&ib->mu);
	while (m) {
		struct wmsg *next = m->next;
		switch (m->kind) {
		case WM_INPUT:
		case WM_INPUT_WAITED:
			w->handed = true;   /* read here whatever the directory says now: no second hop */
			w->waited = m->kind == WM_INPUT_WAITED;   /* and a request that waited for DNS waits no more */
			sa_sip_input(w, &m->flow, m->buf, m->len);
			w->handed = w->waited = false;
			break;
		case WM_SEND:
			sa_transport_send(w, &m->flow, m->buf, m->len);
			break;
		case WM_RUN:
			m->fn(w, m->arg);
			if (m->wait)
				run_done(m->wait);
			break;
		}
		free(m);
		m = next;
	}
}

/* One message into worker `to`'s inbox; false (logged) when out of memory. */
static bool send_to(struct sa_workers *wk, unsigned to, enum wmsg_kind kind, const struct sa_flow *fl, const char *buf,
                    size_t len, sa_worker_fn fn, void *arg, struct run_wait *wait, bool owned)
{
	struct wmsg *m = msg_new(kind, fl, buf, len);
	if (!m) {
		log_err("event=worker_post_failed to=%u kind=%d error=\"out of memory\"", to, (int)kind);
		return false;
	}
	m->fn = fn;
	m->arg = arg;
	m->wait = wait;
	m->owned = owned;
	post(wk, to, m);
	return true;
}

void sa_workers_hand(struct sa_server *srv, unsigned to, const struct sa_flow *from, const char *buf, size_t len)
{
	if (send_to(srv->workers, to, srv->unparking ? WM_INPUT_WAITED : WM_INPUT, from, buf, len, NULL, NULL, NULL, false))
		srv->metrics.worker_handoffs++;
}

void sa_workers_send(struct sa_server *srv, unsigned to, const struct sa_flow *fl, const char *buf, size_t len)
{
	if (send_to(srv->workers, to, WM_SEND, fl, buf, len, NULL, NULL, NULL, false))
		srv->metrics.worker_sends++;
}

bool sa_workers_post(struct sa_server *srv, unsigned to, sa_worker_fn fn, void *arg)
{
	return send_to(srv->workers, to, WM_RUN, NULL, NULL, 0, fn, arg, NULL, true);
}

void sa_workers_post_each(struct sa_server *main, sa_worker_fn fn, void *arg)
{
	struct sa_workers *wk = main->workers;
	for (unsigned i = 1; wk && wk->running && i < wk->n; i++)
		send_to(wk, i, WM_RUN, NULL, NULL, 0, fn, arg, NULL, false);
}

void sa_workers_run_each(struct sa_server *main, sa_worker_fn fn, void *arg)
{
	struct sa_workers *wk = main->workers;
	if (!wk || !wk->running) {   /* one worker, or the others' threads are joined: their tables are ours */
		for (unsigned i = 0; i < sa_workers_count(main); i++)
			fn(sa_worker_at(main, i), arg);
		return;
	}
	struct run_wait wait = { .left = 1 };
	pthread_mutex_init(&wait.mu, NULL);
	pthread_cond_init(&wait.cv, NULL);
	for (unsigned i = 1; i < wk->n; i++) {
		pthread_mutex_lock(&wait.mu);
		wait.left++;
		pthread_mutex_unlock(&wait.mu);
		if (!send_to(wk, i, WM_RUN, NULL, NULL, 0, fn, arg, &wait, false))
			run_done(&wait);   /* that worker is left out (logged) */
	}
	fn(main, arg);
	run_done(&wait);
	pthread_mutex_lock(&wait.mu);
	while (wait.left > 0)
		pthread_cond_wait(&wait.cv, &wait.mu);
	pthread_mutex_unlock(&wait.mu);
	pthread_mutex_destroy(&wait.mu);
	pthread_cond_destroy(&wait.cv);
}

/* ---- the directories: Call-IDs and accepted connections ---- */

static int dir_init(struct dir *d)
{
	pthread_mutex_init(&d->mu, NULL);
	d->nb = DIR_MIN_BUCKETS;
	d->b = calloc(d->nb, sizeof(*d->b));
	return d->b ? 0 : -1;
}

static void dir_free(struct dir *d)
{
	for (size_t i = 0; d->b && i < d->nb; i++)
		while (d->b[i]) {
			struct dir_entry *e = d->b[i];
			d->b[i] = e->next;
			free(e);
		}
	free(d->b);
	pthread_mutex_destroy(&d->mu);
}

static size_t dir_hash(const char *s)
{
	uint64_t h = 1469598103934665603ULL;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return (size_t)h;
}

/* Twice as many buckets when there are twice as many entries: lookups stay O(1). */
static void dir_grow(struct dir *d)
{
	size_t nb = d->nb * 2;
	struct dir_entry **b = calloc(nb, sizeof(*b));
	if (!b)
		return;   /* longer chains, still correct */
	for (size_t i = 0; i < d->nb; i++)
		while (d->b[i]) {
			struct dir_entry *e = d->b[i];
			d->b[i] = e->next;
			size_t h = dir_hash(e->key) & (nb - 1);
			e->next = b[h];
			b[h] = e;
		}
	free(d->b);
	d->b = b;
	d->nb = nb;
}

static struct dir_entry **dir_slot(struct dir *d, const char *key)
{
	struct dir_entry **p = &d->b[dir_hash(key) & (d->nb - 1)];
	while (*p && strcmp((*p)->key, key) != 0)
		p = &(*p)->next;
	return p;
}

static void dir_take(struct dir *d, const char *key, unsigned worker)
{
	pthread_mutex_lock(&d->mu);
	struct dir_entry **p = dir_slot(d, key);
	if (*p) {
		(*p)->refs++;
		(*p)->worker = worker;   /* the newest holder answers for it */
	} else {
		size_t len = strlen(key);
		struct dir_entry *e = malloc(sizeof(*e) + len + 1);
		if (e) {
			e->next = NULL;
			e->worker = worker;
			e->refs = 1;
			memcpy(e->key, key, len + 1);
			*p = e;
			if (++d->count > 2 * d->nb)
				dir_grow(d);
		}
	}
	pthread_mutex_unlock(&d->mu);
}

static void dir_drop(struct dir *d, const char *key)
{
	pthread_mutex_lock(&d->mu);
	struct dir_entry **p = dir_slot(d, key), *e = *p;
	if (e && --e->refs == 0) {
		*p = e->next;
		d->count--;
		free(e);
	}
	pthread_mutex_unlock(&d->mu);
}

static int dir_owner(struct dir *d, const char *key)
{
	pthread_mutex_lock(&d->mu);
	struct dir_entry *e = *dir_slot(d, key);
	int owner = e ? (int)e->worker : -1;
	pthread_mutex_unlock(&d->mu);
	return owner;
}

void sa_calldir_take(struct sa_server *srv, const char *call_id)
{
	if (srv->workers && call_id && call_id[0])
		dir_take(&srv->workers->calls, call_id, srv->worker);
}

void sa_calldir_drop(struct sa_server *srv, const char *call_id)
{
	if (srv->workers && call_id && call_id[0])
		dir_drop(&srv->workers->calls, call_id);
}

int sa_calldir_owner(struct sa_server *srv, const char *call_id)
{
	return srv->workers && call_id ? dir_owner(&srv->workers->calls, call_id) : -1;
}

/* An accepted connection's key: its transport and its peer's address and port. */
static void conn_key(const struct sa_flow *fl, char *out, size_t len)
{
	char addr[64];
	uint16_t port;
	sa_flow_peer(fl, addr, sizeof(addr), &port);
	snprintf(out, len, "%s:%s:%u", sa_proto_name(fl->proto), addr, port);
}

void sa_conndir_add(struct sa_server *srv, const struct sa_flow *fl)
{
	char key[96];
	if (!srv->workers)
		return;
	conn_key(fl, key, sizeof(key));
	dir_take(&srv->workers->conns, key, srv->worker);
}

void sa_conndir_remove(struct sa_server *srv, const struct sa_flow *fl)
{
	char key[96];
	if (!srv->workers)
		return;
	conn_key(fl, key, sizeof(key));
	dir_drop(&srv->workers->conns, key);
}

int sa_conndir_owner(struct sa_server *srv, const struct sa_flow *fl)
{
	char key[96];
	if (!srv->workers)
		return -1;
	conn_key(fl, key, sizeof(key));
	return dir_owner(&srv->workers->conns, key);
}

/* ---- counters ---- */

static uint64_t requests_of(const struct sa_metrics *w)
{
	uint64_t n = 0;
	for (size_t i = 0; i < sizeof(w->sip_requests) / sizeof(w->sip_requests[0]); i++)
		n += w->sip_requests[i];
	return n;
}

void sa_workers_metrics(const struct sa_server *main, struct sa_metrics *m)
{
	*m = main->metrics;
	m->worker_requests[0] = requests_of(&main->metrics);
	for (unsigned i = 1; i < sa_workers_count(main) && i < SA_METRICS_WORKERS; i++) {
		const struct sa_metrics *w = &sa_worker_at(main, i)->metrics;
		sa_metrics_add(m, w);
		m->worker_requests[i] = requests_of(w);
	}
}

/* ---- the workers' lives ---- */

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
	sa_sip_housekeeping(arg);
}

static void *worker_main(void *arg)
{
	struct sa_server *w = arg;
	char name[16];
	snprintf(name, sizeof(name), "sipauthd-w%u", w->worker);
	pthread_setname_np(pthread_self(), name);
	event_base_dispatch(w->base);
	return NULL;
}

static int inbox_open(struct sa_workers *wk, unsigned i)
{
	struct inbox *ib = &wk->inbox[i];
	pthread_mutex_init(&ib->mu, NULL);
	ib->tail = &ib->head;
	ib->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (ib->efd < 0)
		return -1;
	ib->ev = event_new(wk->w[i]->base, ib->efd, EV_READ | EV_PERSIST, inbox_cb, wk->w[i]);
	return ib->ev && event_add(ib->ev, NULL) == 0 ? 0 : -1;
}

/* Worker i: main's configuration and shared modules, everything else its own. */
static struct sa_server *worker_new(struct sa_server *main, unsigned i)
{
	struct sa_server *w = calloc(1, sizeof(*w));
	if (!w)
		return NULL;
	w->cfg = main->cfg;
	memcpy(w->domain, main->domain, sizeof(w->domain));
	w->worker = i;
	w->workers = main->workers;
	w->nworkers = main->nworkers;
	w->nonce = main->nonce;
	w->abuse = main->abuse;
	w->connlimit = main->connlimit;
	w->trunks = main->trunks;
	w->pace_shared = main->pace_shared;
	w->upstream = main->upstream;
	w->trusted_names = main->trusted_names;
	w->webhooks = main->webhooks;
	w->cluster = main->cluster;
	memcpy(w->tag_key, main->tag_key, sizeof(w->tag_key));
	w->metrics.version = main->metrics.version;
	w->metrics.start_time = main->metrics.start_time;
	if (!(w->base = event_base_new()) || sa_store_dup(main->store, &w->store) != SA_STORE_OK ||
	    sa_auth_init(&w->auth, w->store, w->nonce, &w->cfg.auth) != 0 || sa_sip_init(w) < 0 ||
	    sa_transport_start(w) < 0) {
		log_err("event=worker_start_failed worker=%u", i);
		return w;   /* freed with the others */
	}
	w->started = true;
	return w;
}

static void worker_free(struct sa_server *w)
{
	if (!w)
		return;
	sa_sip_shutdown(w);
	sa_transport_stop(w);
	if (w->store)
		sa_store_close(w->store);
	if (w->base)
		event_base_free(w->base);
	OPENSSL_cleanse(w->tag_key, sizeof(w->tag_key));
	free(w);
}

int sa_workers_start(struct sa_server *main, unsigned n)
{
	if (n <= 1)
		return 0;
	struct sa_workers *wk = calloc(1, sizeof(*wk));
	if (!wk)
		return -1;
	main->workers = wk;
	wk->n = n;
	if (dir_init(&wk->calls) < 0 || dir_init(&wk->conns) < 0 || !(wk->w = calloc(n, sizeof(*wk->w))) ||
	    !(wk->inbox = calloc(n, sizeof(*wk->inbox))) || !(wk->thread = calloc(n, sizeof(*wk->thread))) ||
	    !(wk->tick = calloc(n, sizeof(*wk->tick))))
		return -1;
	wk->w[0] = main;
	for (unsigned i = 0; i < n; i++)
		wk->inbox[i].efd = -1;
	for (unsigned i = 1; i < n; i++)
		if (!(wk->w[i] = worker_new(main, i)) || !wk->w[i]->started)
			return -1;
	struct timeval hk = { .tv_sec = HOUSEKEEPING_SEC };
	for (unsigned i = 0; i < n; i++) {
		if (inbox_open(wk, i) < 0)
			return -1;
		if (i > 0 && (!(wk->tick[i] = event_new(wk->w[i]->base, -1, EV_PERSIST, tick_cb, wk->w[i])) ||
		              event_add(wk->tick[i], &hk) < 0))
			return -1;
	}
	/* the calls restored at start are worker 0's: the directory says so */
	sa_sip_calls_directory(main);
	for (unsigned i = 1; i < n; i++)
		if (pthread_create(&wk->thread[i], NULL, worker_main, wk->w[i]) != 0) {
			log_err("event=worker_start_failed worker=%u error=\"%s\"", i, strerror(errno));
			wk->n = i;   /* the ones that run are stopped and joined as at a stop */
			wk->running = true;
			sa_workers_join(main);
			wk->n = n;
			return -1;
		}
	wk->running = true;
	log_info("event=workers_started workers=%u", n);
	return 0;
}

static void loop_exit(struct sa_server *w, void *arg)
{
	event_base_loopexit(w->base, NULL);
}

void sa_workers_join(struct sa_server *main)
{
	struct sa_workers *wk = main->workers;
	if (!wk || !wk->running)
		return;
	sa_workers_post_each(main, loop_exit, NULL);
	for (unsigned i = 1; i < wk->n; i++)
		pthread_join(wk->thread[i], NULL);
	wk->running = false;
}

void sa_workers_free(struct sa_server *main)
{
	struct sa_workers *wk = main->workers;
	if (!wk)
		return;
	sa_workers_join(main);
	for (unsigned i = 0; i < wk->n; i++) {
		struct inbox *ib = wk->inbox ? &wk->inbox[i] : NULL;
		if (wk->tick && wk->tick[i])
			event_free(wk->tick[i]);
		if (ib && ib->ev)
			event_free(ib->ev);
		if (ib && ib->efd >= 0)
			close(ib->efd);
		for (struct wmsg *m = ib ? ib->head : NULL, *next; m; m = next) {
			next = m->next;
			if (m->owned)
				free(m->arg);   /* posted while the loops were stopping: never run */
			free(m);
		}
	}
	for (unsigned i = 1; wk->w && i < wk->n; i++)
		worker_free(wk->w[i]);
	dir_free(&wk->calls);
	dir_free(&wk->conns);
	free(wk->w);
	free(wk->inbox);
	free(wk->thread);
	free(wk->tick);
	free(wk);
	main->workers = NULL;
}
