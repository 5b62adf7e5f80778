/* resolve.c: c-ares on the libevent loop: the gateways' names (RFC 3263: NAPTR, SRV, A/AAAA), asked when lib/upstream says they are due. */
#include "config.h"

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <ares.h>

#include "log.h"
#include "server.h"

#define RESOLVE_TICK_MS 500         /* how often expired answers are looked for */
#define RESOLVE_SOCKETS 16
#define SERVICE_NAMES 4

struct sock_ev {
	ares_socket_t fd;
	struct event *ev;
};

struct sa_resolver {
	struct sa_server *srv;
	ares_channel channel;
	struct event *timeout;          /* c-ares' own retransmission and timeout */
	struct event *tick;
	struct sock_ev socks[RESOLVE_SOCKETS];
	uint64_t generation;            /* answers for an older configuration are dropped */
};

/* One question out: what it was for. */
struct question {
	struct sa_resolver *r;
	struct sa_upstream *u;          /* the gateways, or the trusted names */
	enum sa_up_ask kind;
	char name[SA_UPSTREAM_HOST_MAX + 1];
	/* the service's walk: NAPTR, then each SRV name in turn, then NAME's A/AAAA */
	char names[SERVICE_NAMES][SA_UPSTREAM_HOST_MAX + 1];
	enum sa_proto protos[SERVICE_NAMES];
	unsigned nnames, next;
	uint32_t ttl;
	int failed;                     /* an SRV question the DNS did not answer (its c-ares status), 0: none */
};

/* The DNS said there is no such record (an answer), as opposed to saying
 * nothing, or failing (a timeout, SERVFAIL, REFUSED...): only an answer may
 * take the service to NAME's own address (RFC 3263 §4.2). */
static bool dns_says_none(int status)
{
	return status == ARES_SUCCESS || status == ARES_ENODATA || status == ARES_ENOTFOUND;
}

static void timeout_arm(struct sa_resolver *r)
{
	struct timeval max = { .tv_sec = 1 }, tv;
	struct timeval *t = ares_timeout(r->channel, &max, &tv);
	evtimer_add(r->timeout, t);
}

static void sock_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sa_resolver *r = arg;
	ares_process_fd(r->channel, (what & EV_READ) ? fd : ARES_SOCKET_BAD, (what & EV_WRITE) ? fd : ARES_SOCKET_BAD);
	timeout_arm(r);
}

static void timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sa_resolver *r = arg;
	ares_process_fd(r->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	timeout_arm(r);
}

/* c-ares opens, changes and closes its sockets: each gets an event. */
static void sock_state_cb(void *data, ares_socket_t fd, int readable, int writable)
{
	struct sa_resolver *r = data;
	struct sock_ev *slot = NULL, *free_slot = NULL;
	for (int i = 0; i < RESOLVE_SOCKETS; i++) {
		if (r->socks[i].ev && r->socks[i].fd == fd)
			slot = &r->socks[i];
		else if (!r->socks[i].ev && !free_slot)
			free_slot = &r->socks[i];
	}
	if (slot) {
		event_free(slot->ev);
		slot->ev = NULL;
	}
	if (!readable && !writable)
		return;
	if (!slot)
		slot = free_slot;
	if (!slot) {
		log_warn("event=dns_sockets_full fd=%d", (int)fd);
		return;
	}
	short what = EV_PERSIST | (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0);
	slot->fd = fd;
	slot->ev = event_new(r->srv->base, fd, what, sock_cb, r);
	if (slot->ev)
		event_add(slot->ev, NULL);
}

static void ask_due(struct sa_resolver *r);

static struct question *question_new(struct sa_resolver *r, enum sa_up_ask kind, const char *name)
{
	struct question *q = calloc(1, sizeof(*q));
	if (!q)
		return NULL;
	q->r = r;
	q->kind = kind;
	q->ttl = UINT32_MAX;
	snprintf(q->name, sizeof(q->name), "%s", name);
	return q;
}

static uint32_t answer_ttl(const unsigned char *abuf, int alen, uint16_t type)
{
	long t = abuf && alen > 0 ? sa_upstream_dns_min_ttl(abuf, (size_t)alen, type) : -1;
	return t < 0 ? SA_UPSTREAM_MIN_TTL_S : (uint32_t)t;
}

/* ---- A/AAAA ---- */

static void host_cb(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
	struct question *q = arg;
	struct sa_resolver *r = q->r;
	if (status == ARES_EDESTRUCTION || status == ARES_ECANCELLED)
		goto out;
	union sa_sockaddr addrs[SA_UPSTREAM_ADDRS];
	unsigned n = 0;
	uint32_t ttl = UINT32_MAX;
	for (struct ares_addrinfo_node *nd = res ? res->nodes : NULL; nd && n < SA_UPSTREAM_ADDRS; nd = nd->ai_next) {
		if ((nd->ai_family != AF_INET && nd->ai_family != AF_INET6) || nd->ai_addrlen > sizeof(addrs[0]))
			continue;
		memset(&addrs[n], 0, sizeof(addrs[n]));
		memcpy(&addrs[n], nd->ai_addr, nd->ai_addrlen);
		if (nd->ai_ttl >= 0 && (uint32_t)nd->ai_ttl < ttl)
			ttl = (uint32_t)nd->ai_ttl;
		n++;
	}
	struct sa_upstream *u = q->u;
	uint64_t now = sa_now_ms();
	if (n == 0)
		log_warn("event=dns_failed name=%s type=A/AAAA reason=\"%s\" retry_ms=%u", q->name,
		         status == ARES_SUCCESS ? "no address" : ares_strerror(status), SA_UPSTREAM_NEG_TTL_MS);
	sa_gateways_lock();   /* the SIP workers read these addresses */
	for (unsigned i = 0; i < u->n; i++)
		if (u->t[i].resolving && strcasecmp(u->t[i].host, q->name) == 0) {
			bool had = u->t[i].naddr > 0;
			char before[64] = "", after[64] = "";
			uint16_t port;
			if (had)
				sa_flow_peer(&(struct sa_flow){ .ss = u->t[i].addr[0] }, before, sizeof(before), &port);
			sa_upstream_host_answer(u, i, addrs, n, ttl == UINT32_MAX ? 0 : ttl, now);
			if (n)
				sa_flow_peer(&(struct sa_flow){ .ss = u->t[i].addr[0] }, after, sizeof(after), &port);
			if (n && strcmp(before, after) != 0)
				log_info("event=%s name=%s address=%s port=%u ttl=%u",
				         u == r->srv->upstream       ? "gateway_address"
				         : u == r->srv->route_names ? "route_address"   /* an in-dialog Route's: trusted for nothing */
				                                    : "trusted_address",
				         q->name, after,
				         u->t[i].port, ttl == UINT32_MAX ? 0 : ttl);
		}
	sa_gateways_unlock();
	if (u == r->srv->route_names)
		sa_gateways_unpark(r->srv, q->name, false);
	ask_due(r);
out:
	if (res)
		ares_freeaddrinfo(res);
	free(q);
}

static void ask_host(struct sa_resolver *r, struct sa_upstream *u, const char *name)
{
	struct question *q = question_new(r, SA_UP_ASK_HOST, name);
	struct ares_addrinfo_hints hints = { .ai_family = AF_UNSPEC };
	if (!q)
		return;
	q->u = u;
	ares_getaddrinfo(r->channel, name, NULL, &hints, host_cb, q);
}

/* ---- the service: NAPTR, SRV ---- */

static void service_srv_next(struct question *q);

static int text_cmp(const void *a, const void *b)
{
	return strcmp(a, b);
}

/* The gateways' targets in a line, sorted (a server may give the same
 * records in another order each time), to tell an answer that changed them. */
static void targets_text(const struct sa_upstream *u, char *out, size_t len)
{
	char items[SA_UPSTREAM_MAX][SA_UPSTREAM_HOST_MAX + 40];
	size_t at = 0;
	for (unsigned i = 0; i < u->n; i++)
		snprintf(items[i], sizeof(items[i]), "%s:%s:%u/%u/%u", sa_proto_name(u->t[i].proto), u->t[i].host,
		         u->t[i].port, u->t[i].priority, u->t[i].weight);
	qsort(items, u->n, sizeof(items[0]), text_cmp);
	out[0] = '\0';
	for (unsigned i = 0; i < u->n && at < len; i++) {
		int w = snprintf(out + at, len - at, "%s%s", i ? "," : "", items[i]);
		at += w > 0 ? (size_t)w : 0;
	}
}

static void service_done(struct question *q, const struct sa_up_srv *recs, unsigned n, enum sa_proto proto,
                         uint32_t ttl)
{
	struct sa_upstream *u = q->r->srv->upstream;
	char before[512], after[512];
	sa_gateways_lock();
	targets_text(u, before, sizeof(before));
	unsigned k = sa_upstream_service_answer(u, recs, n, proto, ttl, sa_now_ms());
	targets_text(u, after, sizeof(after));
	sa_gateways_unlock();
	/* said when the targets change, not at each refresh of the same answer */
	if (strcmp(before, after) != 0)
		log_info("event=gateway_srv name=%s targets=%u ttl=%u gateways=\"%s\"", q->name, k, ttl, after);
	ask_due(q->r);
	free(q);
}

/* An SRV question failed (not answered "none"): the gateways
 * stay as they were (the last answer's targets and addresses; none for a
 * name never resolved), asked again in SA_UPSTREAM_NEG_TTL_MS. */
static void service_failed(struct question *q)
{
	log_warn("event=dns_failed name=%s type=SRV reason=\"%s\" retry_ms=%u hint=\"the gateways of the last "
	         "answer stay in use\"", q->name, ares_strerror(q->failed), SA_UPSTREAM_NEG_TTL_MS);
	sa_gateways_lock();
	sa_upstream_service_failed(q->r->srv->upstream, sa_now_ms());
	sa_gateways_unlock();
	ask_due(q->r);
	free(q);
}

static void srv_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct question *q = arg;
	if (status == ARES_EDESTRUCTION || status == ARES_ECANCELLED) {
		free(q);
		return;
	}
	struct ares_srv_reply *reply = NULL;
	if (status == ARES_SUCCESS && ares_parse_srv_reply(abuf, alen, &reply) == ARES_SUCCESS && reply) {
		struct sa_up_srv recs[SA_UPSTREAM_MAX];
		unsigned n = 0;
		for (struct ares_srv_reply *s = reply; s && n < SA_UPSTREAM_MAX; s = s->next)
			recs[n++] = (struct sa_up_srv){ .priority = s->priority, .weight = s->weight, .port = s->port,
			                                .target = s->host };
		uint32_t ttl = answer_ttl(abuf, alen, ns_t_srv);
		service_done(q, recs, n, q->protos[q->next - 1], ttl < q->ttl ? ttl : q->ttl);
		ares_free_data(reply);
		return;
	}
	if (!dns_says_none(status))
		q->failed = status;
	service_srv_next(q);
}

/* The next SRV name; none left: NAME itself on 5060 (RFC 3263 §4.2) when
 * the DNS said there are none, the last answer kept when it failed. */
static void service_srv_next(struct question *q)
{
	if (q->next < q->nnames) {
		q->next++;
		ares_query(q->r->channel, q->names[q->next - 1], ns_c_in, ns_t_srv, srv_cb, q);
		return;
	}
	if (q->failed) {
		service_failed(q);
		return;
	}
	service_done(q, NULL, 0, SA_PROTO_UDP, q->ttl == UINT32_MAX ? 60 : q->ttl);
}

static void naptr_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct question *q = arg;
	if (status == ARES_EDESTRUCTION || status == ARES_ECANCELLED) {
		free(q);
		return;
	}
	struct ares_naptr_reply *reply = NULL;
	if (status == ARES_SUCCESS && ares_parse_naptr_reply(abuf, alen, &reply) == ARES_SUCCESS && reply) {
		struct sa_up_naptr recs[SA_UPSTREAM_MAX];
		unsigned n = 0;
		for (struct ares_naptr_reply *p = reply; p && n < SA_UPSTREAM_MAX; p = p->next)
			recs[n++] = (struct sa_up_naptr){ .order = p->order, .preference = p->preference,
			                                  .flags = (const char *)p->flags, .service = (const char *)p->service,
			                                  .replacement = p->replacement };
		q->nnames = sa_upstream_naptr_pick(recs, n, q->names, q->protos, SERVICE_NAMES);
		if (q->nnames)
			q->ttl = answer_ttl(abuf, alen, ns_t_naptr);
		ares_free_data(reply);
	}
	/* a NAPTR question that fails is as none: NAPTR is optional, and some
	 * resolvers and firewalls drop it; the SRV questions decide */
	if (q->nnames == 0) {
		/* no NAPTR: SRV for each transport we speak (RFC 3263 §4.1) */
		/* (a name too long for the prefix has no SRV name: straight to A/AAAA) */
		if (strlen(q->name) + 10 <= SA_UPSTREAM_HOST_MAX) {
			snprintf(q->names[0], sizeof(q->names[0]), "_sip._udp.%.*s", SA_UPSTREAM_HOST_MAX - 10, q->name);
			snprintf(q->names[1], sizeof(q->names[1]), "_sip._tcp.%.*s", SA_UPSTREAM_HOST_MAX - 10, q->name);
			q->protos[0] = SA_PROTO_UDP;
			q->protos[1] = SA_PROTO_TCP;
			q->nnames = 2;
		}
	}
	service_srv_next(q);
}

static void ask_service(struct sa_resolver *r)
{
	struct question *q = question_new(r, SA_UP_ASK_SERVICE, r->srv->upstream->spec.e[0].host);
	if (!q) {   /* (out of memory: as a failure) */
		sa_gateways_lock();
		sa_upstream_service_failed(r->srv->upstream, sa_now_ms());
		sa_gateways_unlock();
		return;
	}
	ares_query(r->channel, q->name, ns_c_in, ns_t_naptr, naptr_cb, q);
}

/* Ask every question that is due. */
static void ask_due(struct sa_resolver *r)
{
	unsigned idx;
	enum sa_up_ask k;
	struct sa_upstream *lists[] = { r->srv->upstream, r->srv->trusted_names, r->srv->route_names };
	sa_gateways_lock();
	for (unsigned l = 0; l < 3; l++)
		while (lists[l] && (k = sa_upstream_next_question(lists[l], sa_now_ms(), &idx)) != SA_UP_ASK_NONE) {
			if (k == SA_UP_ASK_SERVICE)
				ask_service(r);
			else
				ask_host(r, lists[l], lists[l]->t[idx].host);
		}
	sa_gateways_unlock();
	timeout_arm(r);
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sa_resolver *r = arg;
	sa_gateways_unpark(r->srv, NULL, false);   /* waited SA_PARKED_MS: go on without the answer */
	ask_due(r);
}

/* "a:p,[v6]:p" for c-ares from [dns] servers. */
static int servers_csv(const struct sa_config *c, char *out, size_t len)
{
	size_t off = 0;
	out[0] = '\0';
	for (unsigned i = 0; i < c->ndns_servers; i++) {
		const struct sa_endpoint *e = &c->dns_servers[i];
		bool v6 = strchr(e->host, ':') != NULL;
		int n = snprintf(out + off, len - off, "%s%s%s%s:%u", i ? "," : "", v6 ? "[" : "", e->host, v6 ? "]" : "",
		                 e->port);
		if (n < 0 || (size_t)n >= len - off)
			return -1;
		off += (size_t)n;
	}
	return 0;
}

static bool needs_dns(const struct sa_upstream *u)
{
	if (u->spec.service && u->service_expires_ms != UINT64_MAX)
		return true;
	for (unsigned i = 0; i < u->n; i++)
		if (!u->t[i].numeric)
			return true;
	return false;
}

int sa_resolver_ensure(struct sa_server *srv)
{
	if (srv->resolver) {
		ask_due(srv->resolver);
		return 0;
	}
	if (sa_resolver_start(srv) < 0) {
		sa_resolver_stop(srv);   /* half made: gone, so that the next try starts afresh */
		return -1;
	}
	return 0;
}

int sa_resolver_start(struct sa_server *srv)
{
	if (!needs_dns(srv->upstream) && !srv->trusted_names && !srv->route_names)
		return 0;   /* numeric gateways only: no resolver at all */
	struct sa_resolver *r = calloc(1, sizeof(*r));
	char csv[512];
	if (!r)
		return -1;
	r->srv = srv;
	srv->resolver = r;
	struct ares_options opts = { .sock_state_cb = sock_state_cb, .sock_state_cb_data = r, .timeout = 1000,
	                             .tries = 2 };
	int rc = ares_library_init(ARES_LIB_INIT_ALL);
	if (rc == ARES_SUCCESS)
		rc = ares_init_options(&r->channel, &opts, ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES);
	if (rc != ARES_SUCCESS) {
		log_err("event=dns_init_failed reason=\"%s\"", ares_strerror(rc));
		return -1;
	}
	if (srv->cfg.ndns_servers && (servers_csv(&srv->cfg, csv, sizeof(csv)) < 0 ||
	                              (rc = ares_set_servers_ports_csv(r->channel, csv)) != ARES_SUCCESS)) {
		log_err("event=dns_init_failed reason=\"[dns] servers: %s\"", ares_strerror(rc));
		return -1;
	}
	r->timeout = evtimer_new(srv->base, timeout_cb, r);
	r->tick = event_new(srv->base, -1, EV_PERSIST, tick_cb, r);
	struct timeval tv = { .tv_sec = 0, .tv_usec = RESOLVE_TICK_MS * 1000 };
	if (!r->timeout || !r->tick || event_add(r->tick, &tv) < 0)
		return -1;
	log_info("event=dns_started servers=%s", srv->cfg.ndns_servers ? csv : "/etc/resolv.conf");
	ask_due(r);
	return 0;
}

void sa_resolver_stop(struct sa_server *srv)
{
	struct sa_resolver *r = srv->resolver;
	if (!r)
		return;
	if (r->channel)
		ares_destroy(r->channel);   /* outstanding questions end with ARES_EDESTRUCTION */
	for (int i = 0; i < RESOLVE_SOCKETS; i++)
		if (r->socks[i].ev)
			event_free(r->socks[i].ev);
	if (r->timeout)
		event_free(r->timeout);
	if (r->tick)
		event_free(r->tick);
	if (r->channel)
		ares_library_cleanup();
	free(r);
	srv->resolver = NULL;
}
