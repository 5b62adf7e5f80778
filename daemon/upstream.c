/* upstream.c: the gateways on the loop: lib/upstream's state with the clock, random draws and log lines. */
#include "config.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/rand.h>

#include "log.h"
#include "server.h"
#include "worker.h"

/* An in-dialog request waiting for its Route's name (sa_gateways_park). */
struct sa_parked {
	char host[SA_UPSTREAM_HOST_MAX + 1];
	struct sa_flow from;
	char *buf;
	size_t len;
	uint64_t at_ms;
};

/* The gateways' state is shared by the SIP workers; the resolver (worker 0)
 * writes addresses, every worker reports what its requests met. Recursive:
 * a locked function may call another (a probe's answer reports). */
static pthread_mutex_t gw_lock = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;

void sa_gateways_lock(void)
{
	pthread_mutex_lock(&gw_lock);
}

void sa_gateways_unlock(void)
{
	pthread_mutex_unlock(&gw_lock);
}

static uint32_t rand_cb(void *arg)
{
	uint32_t r = 0;
	if (RAND_bytes((unsigned char *)&r, sizeof(r)) != 1)
		r = (uint32_t)random();
	return r;
}

static void target_name(const struct sa_up_target *t, char *out, size_t len)
{
	bool v6 = strchr(t->host, ':') != NULL;
	snprintf(out, len, "%s:%s%s%s:%u", sa_proto_name(t->proto), v6 ? "[" : "", t->host, v6 ? "]" : "", t->port);
}

static bool flow_of(struct sa_server *srv, const struct sa_up_target *t, unsigned j, struct sa_flow *fl);

/* Every probe_interval: a probe still unanswered failed; each gateway with
 * an address gets a new one. */
static void probe_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sa_server *srv = arg;
	struct sa_upstream *u = srv->upstream;
	sa_gateways_lock();
	for (unsigned i = 0; i < u->n; i++) {
		struct sa_up_target *t = &u->t[i];
		if (t->naddr == 0)
			continue;
		struct sa_flow to;
		unsigned j = 0;
		while (j < t->naddr && !flow_of(srv, t, j, &to))
			j++;   /* the first address of a family this host reaches */
		if (j == t->naddr)
			continue;
		if (t->probe_out) {
			t->probe_out = false;
			sa_gateways_report(srv, &to, SA_UP_PROBE_FAIL);
		}
		if (sa_sip_probe(srv, i, &to) == 0)
			t->probe_out = true;
		else
			sa_gateways_report(srv, &to, SA_UP_PROBE_FAIL);
	}
	sa_gateways_unlock();
}

int sa_gateways_start(struct sa_server *srv)
{
	const struct sa_config *c = &srv->cfg;
	struct sa_upstream_cfg uc = { .down_after = c->down_after, .up_after = c->up_after,
	                              .probing = c->probe_interval > 0, .retry_ms = SA_GATEWAY_RETRY_MS };
	srv->upstream = calloc(1, sizeof(*srv->upstream));
	if (!srv->upstream)
		return -1;
	sa_upstream_init(srv->upstream, &c->gateway, &uc);
	struct sa_upstream_spec names = { 0 };
	for (unsigned i = 0; i < c->ntrusted; i++)
		if (c->trusted[i].family == 0 && names.n < SA_UPSTREAM_MAX)
			snprintf(names.e[names.n++].host, sizeof(names.e[0].host), "%s", c->trusted[i].name);
	if (names.n) {
		if (!(srv->trusted_names = calloc(1, sizeof(*srv->trusted_names))))
			return -1;
		sa_upstream_init(srv->trusted_names, &names, &uc);
	}
	if (c->probe_interval) {
		struct timeval tv = { .tv_sec = c->probe_interval };
		srv->probe = event_new(srv->base, -1, EV_PERSIST, probe_cb, srv);
		if (!srv->probe || event_add(srv->probe, &tv) < 0)
			return -1;
	}
	return sa_resolver_start(srv);
}

void sa_gateways_stop(struct sa_server *srv)
{
	sa_resolver_stop(srv);
	if (srv->probe)
		event_free(srv->probe);
	srv->probe = NULL;
	free(srv->upstream);
	srv->upstream = NULL;
	free(srv->trusted_names);
	srv->trusted_names = NULL;
	for (unsigned i = 0; i < srv->nparked; i++)
		free(srv->parked[i].buf);
	free(srv->parked);
	srv->parked = NULL;
	srv->nparked = 0;
	free(srv->route_names);
	srv->route_names = NULL;
}

/* The flow to address j of gateway t; false when no socket of ours can
 * reach its family (an IPv6 address on an IPv4-only host). */
static bool flow_of(struct sa_server *srv, const struct sa_up_target *t, unsigned j, struct sa_flow *fl)
{
	int li = sa_transport_listener_to(srv, t->proto, t->addr[j].sa.sa_family);
	if (li < 0)
		return false;
	memset(fl, 0, sizeof(*fl));
	fl->proto = t->proto;
	fl->ss = t->addr[j];
	fl->sslen = t->addrlen[j];
	fl->lidx = (unsigned)li;
	return true;
}

/* The gateways in the order to try, each with every address its name has
 * that can be reached from here (RFC 3263 §4.4: the next address before
 * the next gateway), at most max in all. */
static unsigned gw_order(struct sa_server *srv, struct sa_flow *flows, unsigned max)
{
	unsigned idx[SA_UPSTREAM_MAX], k = 0;
	unsigned n = sa_upstream_order(srv->upstream, sa_now_ms(), rand_cb, NULL, idx, SA_UPSTREAM_MAX);
	for (unsigned i = 0; i < n && k < max; i++) {
		const struct sa_up_target *t = &srv->upstream->t[idx[i]];
		for (unsigned j = 0; j < t->naddr && k < max; j++)
			k += flow_of(srv, t, j, &flows[k]);
	}
	return k;
}

unsigned sa_gateways_order(struct sa_server *srv, struct sa_flow *flows, unsigned max)
{
	sa_gateways_lock();
	unsigned r = gw_order(srv, flows, max);
	sa_gateways_unlock();
	return r;
}

/* Why no gateway has an address, for the one log line a 503 gets. */
static const char *gw_none_reason(struct sa_server *srv)
{
	const struct sa_upstream *u = srv->upstream;
	if (u->spec.service && u->service_refused)
		return "the gateway name's SRV says SIP is not offered there";
	if (u->spec.service && u->service_failed)
		return "gateway name does not resolve";
	for (unsigned i = 0; i < u->n; i++)
		if (u->t[i].resolve_failed)
			return "gateway name does not resolve";
	return "gateway name not resolved yet";
}

const char *sa_gateways_none_reason(struct sa_server *srv)
{
	sa_gateways_lock();
	const char *r = gw_none_reason(srv);
	sa_gateways_unlock();
	return r;
}

static int target_of(struct sa_server *srv, const struct sa_flow *fl)
{
	return sa_upstream_find_addr(srv->upstream, &fl->ss.sa, false);
}

static void gw_sent(struct sa_server *srv, const struct sa_flow *to)
{
	int i = target_of(srv, to);
	if (i >= 0)
		srv->upstream->t[i].sent++;
}

void sa_gateways_sent(struct sa_server *srv, const struct sa_flow *to)
{
	sa_gateways_lock();
	gw_sent(srv, to);
	sa_gateways_unlock();
}

static void gw_failover(struct sa_server *srv, const struct sa_flow *from)
{
	int i = target_of(srv, from);
	if (i >= 0)
		srv->upstream->t[i].failovers++;
}

void sa_gateways_failover(struct sa_server *srv, const struct sa_flow *from)
{
	sa_gateways_lock();
	gw_failover(srv, from);
	sa_gateways_unlock();
}

static void gw_report(struct sa_server *srv, const struct sa_flow *to, enum sa_up_event ev)
{
	int i = target_of(srv, to);
	if (i < 0)
		return;
	struct sa_up_target *t = &srv->upstream->t[i];
	if (ev == SA_UP_503 || ev == SA_UP_TIMEOUT || ev == SA_UP_TRANSPORT)
		sa_upstream_addr_last(srv->upstream, &to->ss.sa);
	if (!sa_upstream_report(srv->upstream, (unsigned)i, ev, sa_now_ms()))
		return;
	char name[SA_UPSTREAM_HOST_MAX + 32];
	target_name(t, name, sizeof(name));
	if (t->down)
		log_warn("event=gateway_down gateway=%s reason=%s failures=%u", name, sa_up_event_name(ev), t->fails);
	else
		log_info("event=gateway_up gateway=%s reason=%s", name, sa_up_event_name(ev));
}

void sa_gateways_hold(struct sa_server *srv, const struct sa_flow *to, unsigned seconds)
{
	sa_gateways_lock();
	int i = target_of(srv, to);
	if (i >= 0) {
		char name[SA_UPSTREAM_HOST_MAX + 32];
		sa_upstream_hold(srv->upstream, (unsigned)i, seconds, sa_now_ms());
		target_name(&srv->upstream->t[i], name, sizeof(name));
		log_info("event=gateway_held gateway=%s retry_after=%u hint=\"tried after the other gateways until then\"",
		         name, seconds < SA_UPSTREAM_HOLD_MAX_S ? seconds : SA_UPSTREAM_HOLD_MAX_S);
	}
	sa_gateways_unlock();
}

void sa_gateways_report(struct sa_server *srv, const struct sa_flow *to, enum sa_up_event ev)
{
	sa_gateways_lock();
	gw_report(srv, to, ev);
	sa_gateways_unlock();
}

static int gw_metrics(struct sa_server *srv, char **buf, size_t *len)
{
	return sa_upstream_metrics(srv->upstream, sa_now_ms(), buf, len);
}

int sa_gateways_metrics(struct sa_server *srv, char **buf, size_t *len)
{
	sa_gateways_lock();
	int r = gw_metrics(srv, buf, len);
	sa_gateways_unlock();
	return r;
}

static char *gw_json(struct sa_server *srv)
{
	return sa_upstream_json(srv->upstream, sa_now_ms());
}

char *sa_gateways_json(struct sa_server *srv)
{
	sa_gateways_lock();
	char *r = gw_json(srv);
	sa_gateways_unlock();
	return r;
}

static void gw_probe_answer(struct sa_server *srv, const struct sa_flow *from, int status)
{
	int i = target_of(srv, from);
	if (i < 0 || !srv->upstream->t[i].probe_out)
		return;
	srv->upstream->t[i].probe_out = false;
	sa_gateways_report(srv, from, sa_upstream_probe_verdict(status));
}

void sa_gateways_probe_answer(struct sa_server *srv, const struct sa_flow *from, int status)
{
	sa_gateways_lock();
	gw_probe_answer(srv, from, status);
	sa_gateways_unlock();
}

static int gw_park(struct sa_server *srv, const char *host, const struct sa_flow *from, const char *buf,
                   size_t len);

int sa_gateways_park(struct sa_server *srv, const char *host, const struct sa_flow *from, const char *buf,
                     size_t len)
{
	sa_gateways_lock();
	int rc = gw_park(srv, host, from, buf, len);
	sa_gateways_unlock();
	/* stored first: an answer from /etc/hosts comes back before this returns */
	if (rc == 0 && sa_resolver_ensure(srv) < 0) {
		free(srv->parked[--srv->nparked].buf);   /* no resolver: it goes on, without the name */
		return -1;
	}
	return rc;
}

static int gw_park(struct sa_server *srv, const char *host, const struct sa_flow *from, const char *buf,
                   size_t len)
{
	uint64_t now = sa_now_ms();
	if (!srv->route_names && !(srv->route_names = calloc(1, sizeof(*srv->route_names))))
		return -1;
	if (!srv->parked && !(srv->parked = calloc(SA_PARKED_MAX, sizeof(*srv->parked))))
		return -1;
	/* answered a moment ago (it did not resolve, or not to this end): no second wait */
	if (srv->nparked == SA_PARKED_MAX || sa_upstream_name_answered(srv->route_names, host, now) ||
	    sa_upstream_name_add(srv->route_names, host, now) < 0)
		return -1;
	struct sa_parked *p = &srv->parked[srv->nparked];
	if (!(p->buf = malloc(len)))
		return -1;
	memcpy(p->buf, buf, len);
	p->len = len;
	p->from = *from;
	p->at_ms = now;
	snprintf(p->host, sizeof(p->host), "%s", host);
	srv->nparked++;
	log_debug("event=route_name_asked name=%s parked=%u", host, srv->nparked);
	return 0;
}

void sa_gateways_unpark(struct sa_server *srv, const char *host, bool all_due)
{
	uint64_t now = sa_now_ms();
	for (unsigned i = 0; i < srv->nparked;) {
		struct sa_parked p = srv->parked[i];
		if (host ? strcasecmp(p.host, host) != 0 : !(all_due || p.at_ms + SA_PARKED_MS <= now)) {
			i++;
			continue;
		}
		srv->parked[i] = srv->parked[--srv->nparked];   /* out first: the request may park again */
		srv->unparking = true;   /* handed on to its call's worker, it does not wait again */
		sa_sip_input(srv, &p.from, p.buf, p.len);
		srv->unparking = false;
		free(p.buf);
	}
}

static bool gw_trusted_name(struct sa_server *srv, const struct sockaddr *sa)
{
	return srv->trusted_names && sa_upstream_find_addr(srv->trusted_names, sa, true) >= 0;
}

bool sa_gateways_trusted_name(struct sa_server *srv, const struct sockaddr *sa)
{
	sa_gateways_lock();
	bool r = gw_trusted_name(srv, sa);
	sa_gateways_unlock();
	return r;
}

static bool gw_name_addr(struct sa_server *srv, const char *name, union sa_sockaddr *out)
{
	/* Route names are asked and kept by worker 0 (it has the resolver) */
	const struct sa_upstream *lists[] = { srv->upstream, srv->trusted_names, sa_worker_at(srv, 0)->route_names };
	for (unsigned l = 0; l < 3; l++)
		for (unsigned i = 0; lists[l] && i < lists[l]->n; i++)
			if (lists[l]->t[i].naddr && strcasecmp(lists[l]->t[i].host, name) == 0) {
				*out = lists[l]->t[i].addr[0];
				return true;
			}
	return false;
}

bool sa_gateways_name_addr(struct sa_server *srv, const char *name, union sa_sockaddr *out)
{
	sa_gateways_lock();
	bool r = gw_name_addr(srv, name, out);
	sa_gateways_unlock();
	return r;
}

static bool gw_has_addr(struct sa_server *srv, const struct sockaddr *sa)
{
	return srv->upstream && sa_upstream_find_addr(srv->upstream, sa, false) >= 0;
}

bool sa_gateways_has_addr(struct sa_server *srv, const struct sockaddr *sa)
{
	sa_gateways_lock();
	bool r = gw_has_addr(srv, sa);
	sa_gateways_unlock();
	return r;
}
