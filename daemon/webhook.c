/* webhook.c: webhook deliveries: events queued on the loop, recorded, signed, sent and retried by a thread of their own. */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <event2/event.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "log.h"
#include "server.h"
#include "store.h"
#include "api.h"
#include "webhook.h"

/*
 * Why a thread, and what runs where.
 *
 * A delivery is a DNS lookup, a TCP connect and a TLS handshake
 * to a customer's server, which may be slow or silent for the whole
 * timeout, then a durable store write of the outcome. None of that may
 * touch the SIP loop. The loop only builds the event's data and appends it
 * to a bounded queue under a mutex (emit below): no store access, no I/O.
 * This thread, with a store handle of its own, does the rest: finds the
 * account's webhooks that want the event, records one delivery per webhook
 * in data.mdb before the first attempt (so pending deliveries survive a
 * restart and are listed at once), sends them when due, and records each
 * attempt. data.mdb is written durably and never by the SIP path, so the
 * thread holds no lock that SIP waits for.
 *
 * Non-blocking sockets waited on with poll() rather than the loop's
 * machinery: the loop would need an asynchronous resolver for customers'
 * names and a TLS client on bufferevents for a job whose latency does not
 * matter, and a store write after each attempt would have to go through the
 * store thread anyway. One thread sends one delivery at a time, so each
 * attempt has one deadline, [webhooks] timeout after it starts, that bounds
 * all of it: the DNS lookup (getaddrinfo_a, waited for no longer), the
 * connect, the TLS handshake, writing the request and reading the status
 * line. Socket timeouts would not do: they restart with every byte, and a
 * target that answers a byte every few seconds would hold the thread for
 * hours. So a target that never answers, or answers slowly, costs every
 * other delivery at most [webhooks] timeout per attempt, and its retries
 * back off.
 *
 * The thread never logs (the log's rate limiter is the loop's): it leaves
 * notes that the loop's tick writes.
 *
 * Fleet mode. The webhooks are the database's, mirrored into the store by
 * daemon/cluster.c like the credentials, so this thread finds them as on a
 * single host; each node records and sends the deliveries of the events it
 * makes. Each new delivery and each attempt's outcome is also queued here
 * (its state, not its payload, at most FLEET_QUEUE) for the feed, which
 * writes them to the fleet's list after its heartbeat
 * (sa_webhooks_fleet_take). Delivery ids are then random, so that the ids
 * of different nodes do not meet in that list.
 */

#define TICK_MS       1000
#define DUE_BATCH     32         /* deliveries taken from the store per look */
#define IDLE_WAIT_SEC 60         /* the thread looks at the store at least this often */
#define PRUNE_EVERY   3600       /* finished deliveries older than SA_STORE_WH_KEEP_DAYS, removed hourly */
#define PRUNE_BATCH   1000
#define NOTES_MAX     64
#define NOTE_LEN      320
#define STATUS_LINE   512        /* bytes of the answer read for its status line */
#define FLEET_QUEUE   4096       /* fleet mode: delivery states waiting for the fleet's list; more are counted lost */
#define DNS_ABANDONED_MAX 8      /* lookups past their attempt's deadline that glibc still runs (each holds one of its threads) */
#define DNS_STOP_MS   100        /* a DNS wait looks at the stop this often */

enum outcome { OUT_DELIVERED, OUT_RETRY, OUT_FAILED, OUT_COUNT };
static const char *const outcome_names[OUT_COUNT] = { "delivered", "retry", "failed" };

struct wh_item {
	TAILQ_ENTRY(wh_item) link;
	enum sa_wh_event ev;
	char account[SA_ID_MAX];      /* "": the trunk's */
	char trunk[SA_ID_MAX];
	int64_t at;
	json_t *data;
};
TAILQ_HEAD(wh_queue, wh_item);

struct sa_webhooks {
	/* the loop's */
	struct sa_server *srv;
	bool wanted;                  /* a webhook exists (or existed since the start): events are worth building */
	unsigned stop_kept, stop_lost;   /* events still queued at the stop: made deliveries, or not in time */
	struct sa_wh_agg *agg;        /* auth failures of the current window */
	pthread_mutex_t agg_mu;       /* the SIP workers add to it; the loop takes it (then mu, never the other way) */
	int64_t window_start;
	uint64_t agg_dropped;         /* failures that found no room in a window */
	struct event *tick;
	/* the thread's */
	pthread_t thread;
	bool started;
	struct sa_store *store;
	SSL_CTX *tls;
	unsigned retry_base, timeout;
	struct dns_lookup *abandoned[DNS_ABANDONED_MAX];   /* see dns_resolve */
	unsigned nabandoned;
	/* shared, under mu */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct wh_queue queue;
	unsigned queued, queue_max;
	bool stop;
	int active_fd;                /* the socket of the attempt in progress: shut down to stop at once */
	uint64_t outcomes[OUT_COUNT];
	uint64_t queue_dropped;       /* events dropped, oldest first, because the queue was full */
	char notes[NOTES_MAX][NOTE_LEN];
	unsigned nnotes;
	uint64_t notes_lost;
	struct sa_delivery *fleet;    /* fleet mode: ring of FLEET_QUEUE states for the fleet's list (no payloads) */
	size_t fleet_head, fleet_count;
	uint64_t fleet_dropped;       /* ... that found the ring full, since the last take */
};

__attribute__((format(printf, 2, 3)))
static void note(struct sa_webhooks *wh, const char *fmt, ...)
{
	char line[NOTE_LEN];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&wh->mu);
	if (wh->nnotes < NOTES_MAX)
		memcpy(wh->notes[wh->nnotes++], line, sizeof line);
	else
		wh->notes_lost++;
	pthread_mutex_unlock(&wh->mu);
}

static bool stopping(struct sa_webhooks *wh)
{
	pthread_mutex_lock(&wh->mu);
	bool s = wh->stop;
	pthread_mutex_unlock(&wh->mu);
	return s;
}

static void count_outcome(struct sa_webhooks *wh, enum outcome o)
{
	pthread_mutex_lock(&wh->mu);
	wh->outcomes[o]++;
	pthread_mutex_unlock(&wh->mu);
}

/* Fleet mode: a delivery's state, for the fleet's list. */
static void fleet_note(struct sa_webhooks *wh, const struct sa_delivery *d)
{
	if (wh->fleet == NULL)
		return;
	pthread_mutex_lock(&wh->mu);
	if (wh->fleet_count == FLEET_QUEUE) {
		wh->fleet_dropped++;
	} else {
		struct sa_delivery *slot = &wh->fleet[(wh->fleet_head + wh->fleet_count++) % FLEET_QUEUE];
		*slot = *d;
		slot->payload = NULL;
		slot->payload_len = 0;
	}
	pthread_mutex_unlock(&wh->mu);
}

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- sending one attempt (the thread) ---- */

struct attempt_result {
	int status;                   /* the target's HTTP status; 0: none */
	char error[SA_STORE_WH_ERROR_MAX];
};

/* The socket sa_webhooks_stop shuts down to end an attempt at once (and a
 * socket made after the stop was asked for ends at once too). */
static void active_fd_set(struct sa_webhooks *wh, int fd)
{
	pthread_mutex_lock(&wh->mu);
	wh->active_fd = fd;
	if (fd >= 0 && wh->stop)
		shutdown(fd, SHUT_RDWR);
	pthread_mutex_unlock(&wh->mu);
}

/* Waits until fd is ready for events (POLLIN, POLLOUT) or the attempt's
 * deadline has passed; 0 when ready. A socket shut down by sa_webhooks_stop
 * is ready: the call that follows fails at once. */
static int io_wait(int fd, short events, int64_t deadline)
{
	struct pollfd p = { .fd = fd, .events = events };
	int64_t left;

	while ((left = deadline - mono_ms()) > 0) {
		int r = poll(&p, 1, left > INT32_MAX ? INT32_MAX : (int)left);
		if (r > 0)
			return 0;
		if (r < 0 && errno != EINTR)
			return -1;
	}
	return -1;
}

/* Waits for a non-blocking connect; 0 when it is up. */
static int connect_wait(int fd, int64_t deadline, struct attempt_result *res)
{
	int err = 0;
	socklen_t len = sizeof err;

	if (io_wait(fd, POLLOUT, deadline) < 0) {
		snprintf(res->error, sizeof res->error, "connect: timed out");
		return -1;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0) {
		snprintf(res->error, sizeof res->error, "connect: %s", strerror(err ? err : errno));
		return -1;
	}
	return 0;
}

static bool host_is_ip(const char *h)
{
	unsigned char buf[sizeof(struct in6_addr)];

	return inet_pton(AF_INET, h, buf) == 1 || inet_pton(AF_INET6, h, buf) == 1;
}

/*
 * DNS within the deadline. getaddrinfo() waits for the resolver's own
 * timeouts and retries (tens of seconds for a name server that does not
 * answer), so the lookup runs on glibc's getaddrinfo_a thread while this one
 * waits for it no longer than the attempt's deadline. A lookup still running
 * then cannot be cancelled: glibc goes on writing its result into the gaicb,
 * so the lookup is heap-allocated and, past its deadline, kept among the
 * abandoned (at most DNS_ABANDONED_MAX), freed once gai_error says it ended.
 * While that many are still running (a resolver that never answers), an
 * attempt to a name fails at once rather than start one more. An address
 * needs no lookup (getaddrinfo with AI_NUMERICHOST never blocks): targets
 * given by address are never held up by a resolver that others' names
 * made slow.
 */
struct dns_lookup {
	struct gaicb cb;
	struct addrinfo hints;
	char host[sizeof ((struct sa_wh_url *)0)->host];
	char port[8];
};

static void dns_lookup_free(struct dns_lookup *l)
{
	if (l->cb.ar_result != NULL)
		freeaddrinfo(l->cb.ar_result);
	free(l);
}

/* Frees the abandoned lookups that have ended. */
static void dns_reap(struct sa_webhooks *wh)
{
	unsigned kept = 0;

	for (unsigned i = 0; i < wh->nabandoned; i++) {
		if (gai_error(&wh->abandoned[i]->cb) == EAI_INPROGRESS)
			wh->abandoned[kept++] = wh->abandoned[i];
		else
			dns_lookup_free(wh->abandoned[i]);
	}
	wh->nabandoned = kept;
}

/* Waits for l until the deadline (or the stop); its gai_error. */
static int dns_wait(struct sa_webhooks *wh, struct dns_lookup *l, int64_t deadline)
{
	const struct gaicb *list[1] = { &l->cb };
	int64_t left;
	int err;

	while ((err = gai_error(&l->cb)) == EAI_INPROGRESS && (left = deadline - mono_ms()) > 0 && !stopping(wh)) {
		if (left > DNS_STOP_MS)
			left = DNS_STOP_MS;   /* no socket to shut down yet: the stop is looked at this often */
		struct timespec ts = { .tv_sec = left / 1000, .tv_nsec = (left % 1000) * 1000000 };
		(void)gai_suspend(list, 1, &ts);
	}
	return err;
}

/* The URL's address and port as an addrinfo, or NULL with the error. */
static struct addrinfo *numeric_resolve(const struct sa_wh_url *u, struct attempt_result *res)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
	                          .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV };
	struct addrinfo *ai = NULL;
	char port[8];

	snprintf(port, sizeof port, "%u", u->port);
	int err = getaddrinfo(u->host, port, &hints, &ai);
	if (err != 0) {
		snprintf(res->error, sizeof res->error, "dns: %s", gai_strerror(err));
		return NULL;
	}
	return ai;
}

/* The addresses of the URL's host and port, or NULL with the error. */
static struct addrinfo *dns_resolve(struct sa_webhooks *wh, const struct sa_wh_url *u, int64_t deadline,
                                    struct attempt_result *res)
{
	struct dns_lookup *l;
	struct gaicb *list[1];
	struct addrinfo *ai = NULL;
	int err;

	if (host_is_ip(u->host))
		return numeric_resolve(u, res);
	dns_reap(wh);
	if (wh->nabandoned == DNS_ABANDONED_MAX) {
		snprintf(res->error, sizeof res->error, "dns: %u earlier lookups still unanswered", DNS_ABANDONED_MAX);
		return NULL;
	}
	if ((l = calloc(1, sizeof *l)) == NULL) {
		snprintf(res->error, sizeof res->error, "internal: out of memory");
		return NULL;
	}
	l->hints = (struct addrinfo){ .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV };
	snprintf(l->host, sizeof l->host, "%s", u->host);
	snprintf(l->port, sizeof l->port, "%u", u->port);
	l->cb = (struct gaicb){ .ar_name = l->host, .ar_service = l->port, .ar_request = &l->hints };
	list[0] = &l->cb;
	if ((err = getaddrinfo_a(GAI_NOWAIT, list, 1, NULL)) != 0) {   /* not queued: glibc holds nothing of it */
		snprintf(res->error, sizeof res->error, "dns: %s", gai_strerror(err));
		free(l);
		return NULL;
	}
	err = dns_wait(wh, l, deadline);
	if (err == EAI_INPROGRESS) {
		snprintf(res->error, sizeof res->error, "dns: timed out");
		if (gai_cancel(&l->cb) == EAI_NOTCANCELED)
			wh->abandoned[wh->nabandoned++] = l;   /* room was checked above */
		else
			dns_lookup_free(l);   /* cancelled before it started, or ended meanwhile */
		return NULL;
	}
	if (err != 0)
		snprintf(res->error, sizeof res->error, "dns: %s", gai_strerror(err));
	else
		ai = l->cb.ar_result;
	free(l);
	return ai;
}

/* A connected non-blocking socket to the URL's host and port, or -1 with the error. */
static int connect_to(struct sa_webhooks *wh, const struct sa_wh_url *u, int64_t deadline,
                      struct attempt_result *res)
{
	struct addrinfo *ai = dns_resolve(wh, u, deadline, res);
	int fd = -1;

	for (struct addrinfo *a = ai; a != NULL && fd < 0; a = a->ai_next) {
		if (!sa_wh_address_allowed(a->ai_addr, wh->srv->cfg.webhooks_private, wh->srv->cfg.nwebhooks_private)) {
			char ip[INET6_ADDRSTRLEN] = "?";
			getnameinfo(a->ai_addr, a->ai_addrlen, ip, sizeof ip, NULL, 0, NI_NUMERICHOST);
			snprintf(res->error, sizeof res->error,
			         "address not allowed: %s is loopback or private (not in [webhooks] private_targets)", ip);
			continue;
		}
		fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
		if (fd < 0) {
			snprintf(res->error, sizeof res->error, "socket: %s", strerror(errno));
			continue;
		}
		active_fd_set(wh, fd);
		if (connect(fd, a->ai_addr, a->ai_addrlen) < 0 &&
		    (errno != EINPROGRESS ? (snprintf(res->error, sizeof res->error, "connect: %s", strerror(errno)), 1)
		                          : connect_wait(fd, deadline, res) < 0)) {
			active_fd_set(wh, -1);
			close(fd);
			fd = -1;
		}
	}
	if (ai != NULL)
		freeaddrinfo(ai);
	return fd;
}

/* What an SSL call that returned rc waits for (POLLIN, POLLOUT), or 0 when it failed. */
static short tls_want(SSL *ssl, int rc)
{
	switch (SSL_get_error(ssl, rc)) {
	case SSL_ERROR_WANT_READ:
		return POLLIN;
	case SSL_ERROR_WANT_WRITE:
		return POLLOUT;
	default:
		return 0;
	}
}

/* TLS on fd, the certificate verified against the system's CAs and
 * [webhooks] ca_file, for the URL's host name (or address). */
static SSL *tls_start(struct sa_webhooks *wh, int fd, const struct sa_wh_url *u, int64_t deadline,
                      struct attempt_result *res)
{
	SSL *ssl = SSL_new(wh->tls);
	bool ip = host_is_ip(u->host);
	short want;

	if (ssl == NULL || SSL_set_fd(ssl, fd) != 1 ||
	    (ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), u->host) != 1
	        : (SSL_set_tlsext_host_name(ssl, u->host) != 1 || SSL_set1_host(ssl, u->host) != 1))) {
		snprintf(res->error, sizeof res->error, "tls: out of memory");
		SSL_free(ssl);
		return NULL;
	}
	for (;;) {
		ERR_clear_error();
		errno = 0;
		int rc = SSL_connect(ssl);
		if (rc == 1)
			return ssl;
		if ((want = tls_want(ssl, rc)) == 0)
			break;
		if (io_wait(fd, want, deadline) < 0) {
			snprintf(res->error, sizeof res->error, "tls: handshake timed out");
			SSL_free(ssl);
			return NULL;
		}
	}
	long v = SSL_get_verify_result(ssl);
	unsigned long e = ERR_get_error();
	if (v != X509_V_OK)
		snprintf(res->error, sizeof res->error, "tls: certificate verify failed: %s",
		         X509_verify_cert_error_string(v));
	else if (e != 0)
		snprintf(res->error, sizeof res->error, "tls: handshake failed: %s", ERR_reason_error_string(e));
	else
		snprintf(res->error, sizeof res->error, "tls: handshake failed: %s",
		         errno != 0 ? strerror(errno) : "connection closed");
	SSL_free(ssl);
	return NULL;
}

/*
 * One write or read on the non-blocking socket, plain or TLS: the bytes
 * moved; 0 when the peer closed (reads); -1 with *want (POLLIN, POLLOUT) when
 * it must wait for the socket, or with *want 0 when it failed (io_error says why).
 */
static ssize_t io_write(int fd, SSL *ssl, const char *p, size_t n, short *want)
{
	*want = 0;
	errno = 0;
	if (ssl != NULL) {
		ERR_clear_error();
		int w = SSL_write(ssl, p, n > INT32_MAX ? INT32_MAX : (int)n);
		if (w > 0)
			return w;
		*want = tls_want(ssl, w);
		return -1;
	}
	ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
	if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		*want = POLLOUT;
	return w;
}

static ssize_t io_read(int fd, SSL *ssl, char *p, size_t n, short *want)
{
	*want = 0;
	errno = 0;
	if (ssl != NULL) {
		ERR_clear_error();
		int r = SSL_read(ssl, p, (int)n);
		if (r > 0)
			return r;
		*want = tls_want(ssl, r);
		return *want == 0 && r == 0 ? 0 : -1;
	}
	ssize_t r = recv(fd, p, n, 0);
	if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		*want = POLLIN;
	return r;
}

/* Why an io_write or io_read that wanted nothing failed. */
static const char *io_error(void)
{
	unsigned long e = ERR_get_error();
	const char *why = e != 0 ? ERR_reason_error_string(e) : NULL;

	return why != NULL ? why : errno != 0 ? strerror(errno) : "connection closed";
}

static int send_all(int fd, SSL *ssl, const char *p, size_t n, int64_t deadline, struct attempt_result *res)
{
	short want;

	while (n > 0) {
		ssize_t w = io_write(fd, ssl, p, n, &want);
		if (w > 0) {
			p += w;
			n -= (size_t)w;
		} else if (want == 0) {
			snprintf(res->error, sizeof res->error, "send: %s", io_error());
			return -1;
		} else if (io_wait(fd, want, deadline) < 0) {
			snprintf(res->error, sizeof res->error, "send: timed out");
			return -1;
		}
	}
	return 0;
}

/* Reads until the status line is complete: "HTTP/1.x NNN ...". */
static void status_read(int fd, SSL *ssl, int64_t deadline, struct attempt_result *res)
{
	char buf[STATUS_LINE + 1];
	size_t have = 0;
	int minor, code;
	short want;

	while (have < STATUS_LINE && memchr(buf, '\n', have) == NULL) {
		ssize_t r = io_read(fd, ssl, buf + have, STATUS_LINE - have, &want);
		if (r > 0) {
			have += (size_t)r;
		} else if (r == 0) {
			snprintf(res->error, sizeof res->error, "receive: connection closed before an answer");
			return;
		} else if (want == 0) {
			snprintf(res->error, sizeof res->error, "receive: %s", io_error());
			return;
		} else if (io_wait(fd, want, deadline) < 0) {
			snprintf(res->error, sizeof res->error, "receive: timed out");
			return;
		}
	}
	buf[have] = '\0';
	if (sscanf(buf, "HTTP/1.%d %3d", &minor, &code) != 2 || code < 100 || code > 599) {
		snprintf(res->error, sizeof res->error, "receive: not an HTTP answer");
		return;
	}
	res->status = code;
	if (code < 200 || code > 299)
		snprintf(res->error, sizeof res->error, "HTTP %d", code);
}

/* The request: headers, then the payload exactly as signed. */
static char *request_build(const struct sa_wh_url *u, const struct sa_delivery *d, const char *sig, size_t *len)
{
	char head[2048 + SA_WH_URL_MAX];
	bool v6 = strchr(u->host, ':') != NULL;
	bool default_port = u->port == (u->https ? 443 : 80);
	int n = snprintf(head, sizeof head,
	                 "POST %s HTTP/1.1\r\nHost: %s%s%s%s%.0u\r\nUser-Agent: sipauthd/%s\r\n"
	                 "Content-Type: application/json\r\nContent-Length: %zu\r\nSipauthd-Signature: %s\r\n"
	                 "Sipauthd-Event: %s\r\nSipauthd-Delivery: %s\r\nConnection: close\r\n\r\n",
	                 u->path, v6 ? "[" : "", u->host, v6 ? "]" : "", default_port ? "" : ":",
	                 default_port ? 0u : (unsigned)u->port, PACKAGE_VERSION, d->payload_len, sig, d->event, d->id);
	if (n < 0 || (size_t)n >= sizeof head)
		return NULL;
	char *buf = malloc((size_t)n + d->payload_len);
	if (buf == NULL)
		return NULL;
	memcpy(buf, head, (size_t)n);
	memcpy(buf + n, d->payload, d->payload_len);
	*len = (size_t)n + d->payload_len;
	return buf;
}

/* One attempt: connect, TLS when https, POST, status line. */
static void attempt_send(struct sa_webhooks *wh, const struct sa_wh_url *u, const struct sa_webhook *w,
                         const struct sa_delivery *d, struct attempt_result *res)
{
	char sig[SA_WH_SIG_HEADER_MAX];
	int64_t deadline = mono_ms() + (int64_t)wh->timeout * 1000;
	size_t len = 0;
	char *req = NULL;
	SSL *ssl = NULL;

	if (sa_wh_sign(w->secret, (int64_t)time(NULL), d->payload, d->payload_len, sig, sizeof sig) < 0 ||
	    (req = request_build(u, d, sig, &len)) == NULL) {
		snprintf(res->error, sizeof res->error, "internal: out of memory");
		return;
	}
	int fd = connect_to(wh, u, deadline, res);
	if (fd >= 0 && (!u->https || (ssl = tls_start(wh, fd, u, deadline, res)) != NULL) &&
	    send_all(fd, ssl, req, len, deadline, res) == 0)
		status_read(fd, ssl, deadline, res);
	active_fd_set(wh, -1);
	SSL_free(ssl);
	if (fd >= 0)
		close(fd);
	free(req);
}

/* ---- deliveries (the thread) ---- */

/* Outcome of attempt d->attempts into d; which one for the metrics. */
static enum outcome attempt_judge(struct sa_webhooks *wh, struct sa_delivery *d, const struct attempt_result *res,
                                  int64_t now)
{
	bool ok = res->status >= 200 && res->status <= 299;

	d->last_status_code = res->status;
	snprintf(d->last_error, sizeof d->last_error, "%s", ok ? "" : res->error[0] ? res->error : "no answer");
	if (ok) {
		d->status = SA_DLV_DELIVERED;
		return OUT_DELIVERED;
	}
	int64_t at = sa_wh_retry_at(wh->retry_base, d->attempts, d->created_at, now);
	if (at < 0) {
		d->status = SA_DLV_FAILED;
		return OUT_FAILED;
	}
	d->next_attempt_at = at;
	return OUT_RETRY;
}

/* One due delivery: sent, and its outcome recorded. -1 when the record could not be written. */
static int delivery_attempt(struct sa_webhooks *wh, const char *id)
{
	struct sa_delivery d = { 0 };
	struct sa_webhook w = { 0 };
	struct sa_wh_url u;
	struct attempt_result res = { 0 };
	int rc = 0;

	if (sa_store_delivery_get(wh->store, id, &d) != SA_STORE_OK || d.status != SA_DLV_PENDING)
		goto out;
	if (sa_store_webhook_get(wh->store, d.webhook_id, &w) != SA_STORE_OK)
		goto out;   /* deleted meanwhile: its deliveries went with it */
	if (sa_wh_url_parse(w.url, &u, res.error, sizeof res.error) == 0)
		attempt_send(wh, &u, &w, &d, &res);
	d.attempts++;
	enum outcome o = attempt_judge(wh, &d, &res, (int64_t)time(NULL));
	int err = sa_store_delivery_update(wh->store, &d);
	if (err != SA_STORE_OK) {
		note(wh, "event=webhook_store_failed delivery=%s cause=%s", id, sa_store_cause(err));
		rc = -1;
		goto out;
	}
	count_outcome(wh, o);
	fleet_note(wh, &d);
	if (o != OUT_DELIVERED)
		note(wh, "event=webhook_attempt_failed delivery=%s webhook=%s event=%s attempt=%u status=%d error=\"%s\" %s",
		     d.id, d.webhook_id, d.event, d.attempts, res.status, d.last_error,
		     o == OUT_FAILED ? "outcome=failed" : "outcome=retry");
out:
	OPENSSL_cleanse(w.secret, sizeof w.secret);
	free(d.payload);
	return rc;
}

/* Every delivery due by now; the time of the next one (INT64_MAX: none). */
static int64_t deliveries_run(struct sa_webhooks *wh)
{
	char ids[DUE_BATCH][SA_ID_MAX];
	unsigned n = 0;
	int64_t next = INT64_MAX, now = (int64_t)time(NULL);

	if (sa_store_delivery_due(wh->store, now, ids, DUE_BATCH, &n, &next) != SA_STORE_OK)
		return now + 1;
	for (unsigned i = 0; i < n; i++) {
		if (stopping(wh))
			return INT64_MAX;
		if (delivery_attempt(wh, ids[i]) < 0)
			return now + 1;   /* the store refused the outcome: look again in a second */
	}
	/* an attempt made now may be due again soon: the next look finds out when */
	return n > 0 ? now : next;
}

/* The webhooks of one account that want ev. */
struct subscribers {
	enum sa_wh_event ev;
	char ids[SA_API_WEBHOOKS_MAX][SA_ID_MAX];
	unsigned n;
};

static int subscriber_cb(const struct sa_webhook *w, void *arg)
{
	struct subscribers *s = arg;

	if ((w->events & (1u << s->ev)) && s->n < SA_API_WEBHOOKS_MAX)
		snprintf(s->ids[s->n++], SA_ID_MAX, "%s", w->id);
	return 0;
}

/* {"id","type","created","account_id","data"}: the body of every delivery of this event. */
static char *payload_make(const struct wh_item *it, const char *account, size_t *len)
{
	unsigned char rnd[12];
	char id[4 + 2 * sizeof rnd + 1];

	if (RAND_bytes(rnd, sizeof rnd) != 1)
		return NULL;
	memcpy(id, "evt_", 4);
	for (size_t i = 0; i < sizeof rnd; i++)
		snprintf(id + 4 + 2 * i, 3, "%02x", rnd[i]);
	json_t *o = json_pack("{s:s,s:s,s:o,s:s,s:O}", "id", id, "type", sa_wh_event_name(it->ev), "created",
	                      sa_api_rfc3339(it->at), "account_id", account, "data", it->data);
	char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;

	json_decref(o);
	*len = s ? strlen(s) : 0;
	return s;
}

/* One event: a delivery for each of its account's webhooks that want it. */
static void event_fan_out(struct sa_webhooks *wh, const struct wh_item *it)
{
	struct subscribers subs = { .ev = it->ev };
	struct sa_trunk t;
	const char *account = it->account;
	size_t len = 0;

	if (account[0] == '\0') {
		if (sa_store_trunk_get(wh->store, it->trunk, &t) != SA_STORE_OK)
			return;   /* deleted meanwhile: nobody to tell */
		account = t.account_id;
	}
	if (sa_store_webhook_list_after(wh->store, account, NULL, subscriber_cb, &subs) != SA_STORE_OK || subs.n == 0)
		return;
	char *payload = payload_make(it, account, &len);
	char ids[SA_API_WEBHOOKS_MAX][SA_ID_MAX];
	int64_t now = (int64_t)time(NULL);
	int err = payload ? sa_store_delivery_add(wh->store, (const char (*)[SA_ID_MAX])subs.ids, subs.n,
	                                          sa_wh_event_name(it->ev), payload, len, now, ids)
	                  : SA_STORE_EIO;
	if (err != SA_STORE_OK)
		note(wh, "event=webhook_store_failed type=%s account=%s webhooks=%u cause=%s", sa_wh_event_name(it->ev),
		     account, subs.n, sa_store_cause(err));
	for (unsigned i = 0; err == SA_STORE_OK && wh->fleet != NULL && i < subs.n; i++) {
		struct sa_delivery d = { .status = SA_DLV_PENDING, .next_attempt_at = now, .created_at = now };
		snprintf(d.id, sizeof d.id, "%s", ids[i]);
		snprintf(d.webhook_id, sizeof d.webhook_id, "%s", subs.ids[i]);
		snprintf(d.event, sizeof d.event, "%s", sa_wh_event_name(it->ev));
		fleet_note(wh, &d);
	}
	free(payload);
}

static void item_free(struct wh_item *it)
{
	json_decref(it->data);
	free(it);
}

/* Waits until the queue has events, the next delivery is due, a minute passed, or stop. */
static void thread_wait(struct sa_webhooks *wh, int64_t next_due)
{
	int64_t now = (int64_t)time(NULL);
	int64_t until = next_due < now + IDLE_WAIT_SEC ? next_due : now + IDLE_WAIT_SEC;

	if (until <= now)
		return;
	struct timespec ts = { .tv_sec = (time_t)until };
	pthread_cond_timedwait(&wh->cv, &wh->mu, &ts);
}

static void prune(struct sa_webhooks *wh)
{
	unsigned removed;
	int64_t before = (int64_t)time(NULL) - SA_STORE_WH_KEEP_DAYS * 86400;

	do
		removed = 0;
	while (sa_store_delivery_prune(wh->store, before, PRUNE_BATCH, &removed) == SA_STORE_OK &&
	       removed == PRUNE_BATCH && !stopping(wh));
}

#define STOP_DRAIN_MS 5000   /* the most a stop spends making deliveries of queued events */

static void *thread_main(void *arg)
{
	struct sa_webhooks *wh = arg;
	int64_t next_prune = 0;

	pthread_mutex_lock(&wh->mu);
	while (!wh->stop) {
		struct wh_queue todo = TAILQ_HEAD_INITIALIZER(todo);
		TAILQ_CONCAT(&todo, &wh->queue, link);
		wh->queued = 0;
		pthread_mutex_unlock(&wh->mu);
		struct wh_item *it;
		while ((it = TAILQ_FIRST(&todo)) != NULL) {
			TAILQ_REMOVE(&todo, it, link);
			event_fan_out(wh, it);
			item_free(it);
		}
		int64_t next_due = deliveries_run(wh);
		if ((int64_t)time(NULL) >= next_prune) {
			prune(wh);
			next_prune = (int64_t)time(NULL) + PRUNE_EVERY;
		}
		pthread_mutex_lock(&wh->mu);
		if (!wh->stop && TAILQ_EMPTY(&wh->queue))
			thread_wait(wh, next_due);
	}
	/* Stopping: the events still queued (behind a slow target's attempt, or
	 * set off by the stop itself) become deliveries, sent after the next
	 * start, for as long as STOP_DRAIN_MS allows; the rest are counted. */
	struct wh_queue todo = TAILQ_HEAD_INITIALIZER(todo);
	TAILQ_CONCAT(&todo, &wh->queue, link);
	wh->queued = 0;
	pthread_mutex_unlock(&wh->mu);
	int64_t until = mono_ms() + STOP_DRAIN_MS;
	struct wh_item *it;
	while ((it = TAILQ_FIRST(&todo)) != NULL) {
		TAILQ_REMOVE(&todo, it, link);
		if (mono_ms() < until) {
			event_fan_out(wh, it);
			wh->stop_kept++;
		} else {
			wh->stop_lost++;
		}
		item_free(it);
	}
	return NULL;
}

/* ---- the loop's side ---- */

/* Queues an event (takes data). The oldest event makes room when the queue is full. */
static void emit(struct sa_server *srv, enum sa_wh_event ev, const char *account, const char *trunk, json_t *data)
{
	struct sa_webhooks *wh = srv->webhooks;
	struct wh_item *it = data ? calloc(1, sizeof *it) : NULL, *old = NULL;

	if (it == NULL) {
		json_decref(data);
		return;
	}
	*it = (struct wh_item){ .ev = ev, .at = (int64_t)time(NULL), .data = data };
	snprintf(it->account, sizeof it->account, "%s", account ? account : "");
	snprintf(it->trunk, sizeof it->trunk, "%s", trunk ? trunk : "");
	pthread_mutex_lock(&wh->mu);
	if (wh->queued >= wh->queue_max && (old = TAILQ_FIRST(&wh->queue)) != NULL) {
		TAILQ_REMOVE(&wh->queue, old, link);
		wh->queued--;
		wh->queue_dropped++;
	}
	TAILQ_INSERT_TAIL(&wh->queue, it, link);
	wh->queued++;
	pthread_cond_signal(&wh->cv);
	pthread_mutex_unlock(&wh->mu);
	if (old != NULL)
		item_free(old);
}

/* Events are built only when some webhook may want them: scanners' failures cost nothing otherwise. */
static bool wanted(struct sa_server *srv)
{
	return srv->webhooks != NULL && srv->webhooks->wanted;
}

void sa_webhooks_created(struct sa_server *srv)
{
	if (srv->webhooks != NULL)
		srv->webhooks->wanted = true;
}

unsigned sa_webhooks_fleet_take(struct sa_server *srv, struct sa_delivery *out, unsigned max, uint64_t *dropped)
{
	struct sa_webhooks *wh = srv->webhooks;
	unsigned n = 0;

	*dropped = 0;
	if (wh == NULL || wh->fleet == NULL)
		return 0;
	pthread_mutex_lock(&wh->mu);
	for (; n < max && wh->fleet_count > 0; n++, wh->fleet_count--) {
		out[n] = wh->fleet[wh->fleet_head];
		wh->fleet_head = (wh->fleet_head + 1) % FLEET_QUEUE;
	}
	*dropped = wh->fleet_dropped;
	wh->fleet_dropped = 0;
	pthread_mutex_unlock(&wh->mu);
	return n;
}

void sa_webhooks_auth_failed(struct sa_server *srv, const char *trunk, const char *source, const char *username)
{
	struct sa_webhooks *wh = srv->webhooks;

	if (wanted(srv))   /* no room: counted by the aggregator, taken at the window's end */
	{
		pthread_mutex_lock(&wh->agg_mu);
		(void)sa_wh_agg_add(wh->agg, trunk, source, username, (int64_t)time(NULL));
		pthread_mutex_unlock(&wh->agg_mu);
	}
}

void sa_webhooks_source_banned(struct sa_server *srv, const char *trunk, const char *source, unsigned failures,
                               unsigned ban_seconds)
{
	if (wanted(srv))
		emit(srv, SA_WH_SOURCE_BANNED, NULL, trunk,
		     json_pack("{s:s,s:s,s:i,s:i,s:o}", "trunk_id", trunk, "source", source, "failures", (json_int_t)failures,
		               "ban_seconds", (json_int_t)ban_seconds, "banned_until",
		               sa_api_rfc3339((int64_t)time(NULL) + ban_seconds)));
}

void sa_webhooks_credential_created(struct sa_server *srv, const char *account, const char *trunk,
                                    const char *cred, const char *username)
{
	if (wanted(srv))
		emit(srv, SA_WH_CREDENTIAL_CREATED, account, trunk,
		     json_pack("{s:s,s:s,s:s}", "credential_id", cred, "trunk_id", trunk, "username", username));
}

void sa_webhooks_credential_deleted(struct sa_server *srv, const char *account, const char *trunk,
                                    const char *cred, int calls_ended)
{
	if (wanted(srv))
		emit(srv, SA_WH_CREDENTIAL_DELETED, account, trunk,
		     json_pack("{s:s,s:s,s:i}", "credential_id", cred, "trunk_id", trunk, "calls_ended",
		               (json_int_t)calls_ended));
}

void sa_webhooks_credential_rotated(struct sa_server *srv, const char *account, const char *trunk,
                                    const char *cred, unsigned password_version, int64_t old_valid_until)
{
	if (wanted(srv))
		emit(srv, SA_WH_CREDENTIAL_ROTATED, account, trunk,
		     json_pack("{s:s,s:s,s:i,s:o}", "credential_id", cred, "trunk_id", trunk, "password_version",
		               (json_int_t)password_version, "old_password_valid_until", sa_api_rfc3339(old_valid_until)));
}

void sa_webhooks_registration_created(struct sa_server *srv, const struct sa_credential *cred, const char *source,
                                      uint16_t port, const char *transport, int added)
{
	if (wanted(srv))
		emit(srv, SA_WH_REGISTRATION_CREATED, NULL, cred->trunk_id,
		     json_pack("{s:s,s:s,s:s,s:s,s:i,s:s,s:i}", "credential_id", cred->id, "trunk_id", cred->trunk_id,
		               "username", cred->username, "source", source, "source_port", (json_int_t)port, "transport",
		               transport, "contacts_added", (json_int_t)added));
}

/* A store callback (sa_store_binding_expire_each): queueing only. */
int sa_webhooks_registration_expired(const struct sa_binding *b, void *arg)
{
	struct sa_server *srv = arg;

	if (wanted(srv))
		emit(srv, SA_WH_REGISTRATION_EXPIRED, NULL, b->trunk_id,
		     json_pack("{s:s,s:s,s:o,s:s,s:i,s:s,s:o,s:o}", "credential_id", b->cred_id, "trunk_id", b->trunk_id,
		               "contact", sa_api_net_string(b->contact), "source", b->source, "source_port",
		               (json_int_t)b->source_port, "transport", b->transport, "registered_at",
		               sa_api_rfc3339(b->registered_at), "expired_at", sa_api_rfc3339(b->expires_at)));
	return 0;
}

void sa_webhooks_call_revoked(struct sa_server *srv, const char *call_id, const char *cred, const char *trunk,
                              bool answered)
{
	if (wanted(srv))
		emit(srv, SA_WH_CALL_REVOKED, NULL, trunk,
		     json_pack("{s:o,s:s,s:s,s:s}", "call_id", sa_api_net_string(call_id), "credential_id", cred, "trunk_id", trunk,
		               "state", answered ? "answered" : "ringing"));
}

static json_t *names_json(const struct sa_wh_agg_name *names, unsigned n, const char *key)
{
	json_t *a = json_array();

	for (unsigned i = 0; i < n && i < SA_WH_AGG_TOP && a != NULL; i++)
		json_array_append_new(a, json_pack("{s:o,s:i}", key, sa_api_net_string(names[i].name), "failures",
		                                   (json_int_t)names[i].count));
	return a;
}

struct window {
	struct sa_server *srv;
	int64_t start, end;
};

static void window_trunk_cb(const struct sa_wh_agg_trunk *t, void *arg)
{
	struct window *w = arg;

	emit(w->srv, SA_WH_AUTH_FAILED, NULL, t->trunk_id,
	     json_pack("{s:s,s:o,s:o,s:i,s:o,s:o}", "trunk_id", t->trunk_id, "window_start", sa_api_rfc3339(w->start),
	               "window_end", sa_api_rfc3339(w->end), "failures", (json_int_t)t->count, "top_sources",
	               names_json(t->sources, t->nsources, "source"), "top_usernames",
	               names_json(t->usernames, t->nusernames, "username")));
}

/* Each second: the thread's notes into the log; at a window's end, one auth.failed per trunk. */
static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sa_server *srv = arg;
	struct sa_webhooks *wh = srv->webhooks;
	char notes[NOTES_MAX][NOTE_LEN];
	unsigned n;
	uint64_t lost;
	int64_t now = (int64_t)time(NULL);

	if (now - wh->window_start >= (int64_t)srv->cfg.webhooks_auth_failed_window) {
		struct window w = { srv, wh->window_start, now };
		pthread_mutex_lock(&wh->agg_mu);
		wh->agg_dropped += sa_wh_agg_take(wh->agg, window_trunk_cb, &w);
		pthread_mutex_unlock(&wh->agg_mu);
		wh->window_start = now;
	}
	pthread_mutex_lock(&wh->mu);
	n = wh->nnotes;
	memcpy(notes, wh->notes, n * sizeof notes[0]);
	lost = wh->notes_lost;
	wh->nnotes = 0;
	wh->notes_lost = 0;
	pthread_mutex_unlock(&wh->mu);
	for (unsigned i = 0; i < n; i++)
		log_info("%s", notes[i]);
	if (lost > 0)
		log_warn("event=webhook_notes_lost count=%llu", (unsigned long long)lost);
}

/* The client context: TLS 1.2 or later, the peer verified against the
 * system's CAs and ca_file. NULL (logged) when ca_file does not load. */
static SSL_CTX *client_ctx(const char *ca_file)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	if (ctx == NULL)
		return NULL;
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (SSL_CTX_set_default_verify_paths(ctx) != 1)
		log_warn("event=webhook_ca_missing what=\"the system's CA store\"");
	if (ca_file[0] != '\0' && SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
		log_err("event=webhook_ca_unreadable path=%s error=\"%s\"", ca_file,
		        ERR_reason_error_string(ERR_get_error()));
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

int sa_webhooks_start(struct sa_server *srv)
{
	const struct sa_config *c = &srv->cfg;
	struct sa_webhooks *wh = calloc(1, sizeof *wh);
	uint64_t count = 0;

	if (wh == NULL)
		return -1;
	srv->webhooks = wh;
	wh->srv = srv;
	wh->queue_max = c->webhooks_queue_max;
	wh->retry_base = c->webhooks_retry_base;
	wh->timeout = c->webhooks_timeout;
	wh->active_fd = -1;
	wh->window_start = (int64_t)time(NULL);
	TAILQ_INIT(&wh->queue);
	pthread_mutex_init(&wh->mu, NULL);
	pthread_mutex_init(&wh->agg_mu, NULL);
	pthread_cond_init(&wh->cv, NULL);
	(void)sa_store_webhook_count(srv->store, &count);
	wh->wanted = count > 0;
	struct timeval tv = { .tv_sec = TICK_MS / 1000, .tv_usec = (TICK_MS % 1000) * 1000 };
	if (c->cluster_node[0] != '\0') {
		if ((wh->fleet = calloc(FLEET_QUEUE, sizeof *wh->fleet)) == NULL)
			return -1;
		sa_store_delivery_ids_random(srv->store);   /* shared by the thread's handle, made below */
	}
	if ((wh->agg = sa_wh_agg_new()) == NULL || (wh->tls = client_ctx(c->webhooks_ca_file)) == NULL ||
	    sa_store_dup(srv->store, &wh->store) != SA_STORE_OK ||
	    (wh->tick = event_new(srv->base, -1, EV_PERSIST, tick_cb, srv)) == NULL || event_add(wh->tick, &tv) != 0 ||
	    pthread_create(&wh->thread, NULL, thread_main, wh) != 0)
		return -1;
	wh->started = true;
	return 0;
}

/* Stops the thread (an attempt in progress is cut short: its socket is shut
 * down). Deliveries recorded in the store stay pending for the next start;
 * events still queued in memory are lost. */
void sa_webhooks_stop(struct sa_server *srv)
{
	struct sa_webhooks *wh = srv->webhooks;

	if (wh == NULL)
		return;
	if (wh->started) {
		pthread_mutex_lock(&wh->mu);
		wh->stop = true;
		if (wh->active_fd >= 0)
			shutdown(wh->active_fd, SHUT_RDWR);
		pthread_cond_signal(&wh->cv);
		pthread_mutex_unlock(&wh->mu);
		pthread_join(wh->thread, NULL);
	}
	/* Lookups glibc still runs are left to it (the process is ending): their
	 * memory is written when they end. */
	dns_reap(wh);
	if (wh->stop_kept + wh->stop_lost > 0)
		log_info("event=webhook_events_at_stop kept=%u dropped=%u", wh->stop_kept, wh->stop_lost);
	struct wh_item *it;
	while ((it = TAILQ_FIRST(&wh->queue)) != NULL) {
		TAILQ_REMOVE(&wh->queue, it, link);
		item_free(it);
	}
	if (wh->tick != NULL)
		event_free(wh->tick);
	if (wh->store != NULL)
		sa_store_close(wh->store);
	SSL_CTX_free(wh->tls);
	sa_wh_agg_free(wh->agg);
	free(wh->fleet);
	pthread_cond_destroy(&wh->cv);
	pthread_mutex_destroy(&wh->mu);
	free(wh);
	srv->webhooks = NULL;
}

int sa_webhooks_metrics(struct sa_server *srv, char **buf, size_t *len)
{
	struct sa_webhooks *wh = srv->webhooks;
	uint64_t o[OUT_COUNT] = { 0 }, dropped = 0;
	unsigned queued = 0;
	char text[2048];

	if (wh != NULL) {
		pthread_mutex_lock(&wh->mu);
		memcpy(o, wh->outcomes, sizeof o);
		dropped = wh->queue_dropped;
		queued = wh->queued;
		pthread_mutex_unlock(&wh->mu);
	}
	int n = snprintf(text, sizeof text,
	                 "# HELP sipauthd_webhook_deliveries_total Webhook delivery attempts by outcome "
	                 "(retry: failed, tried again later; failed: failed for good).\n"
	                 "# TYPE sipauthd_webhook_deliveries_total counter\n"
	                 "sipauthd_webhook_deliveries_total{outcome=\"%s\"} %llu\n"
	                 "sipauthd_webhook_deliveries_total{outcome=\"%s\"} %llu\n"
	                 "sipauthd_webhook_deliveries_total{outcome=\"%s\"} %llu\n"
	                 "# HELP sipauthd_webhook_events_dropped_total Events not delivered because a bound was reached.\n"
	                 "# TYPE sipauthd_webhook_events_dropped_total counter\n"
	                 "sipauthd_webhook_events_dropped_total{reason=\"queue_full\"} %llu\n"
	                 "sipauthd_webhook_events_dropped_total{reason=\"auth_failed_trunks\"} %llu\n"
	                 "# HELP sipauthd_webhook_queue Events waiting for the delivery thread.\n"
	                 "# TYPE sipauthd_webhook_queue gauge\n"
	                 "sipauthd_webhook_queue %u\n",
	                 outcome_names[OUT_DELIVERED], (unsigned long long)o[OUT_DELIVERED], outcome_names[OUT_RETRY],
	                 (unsigned long long)o[OUT_RETRY], outcome_names[OUT_FAILED], (unsigned long long)o[OUT_FAILED],
	                 (unsigned long long)dropped, (unsigned long long)(wh ? wh->agg_dropped : 0), queued);
	if (n < 0 || (size_t)n >= sizeof text)
		return -1;
	char *p = realloc(*buf, *len + (size_t)n + 1);
	if (p == NULL)
		return -1;
	memcpy(p + *len, text, (size_t)n + 1);
	*buf = p;
	*len += (size_t)n;
	return 0;
}
