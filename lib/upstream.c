/* upstream.c: the gateways: which to try, in which order, and how each stands. No sockets, no clock: answers and `now` come in. */
#include "upstream.h"
#include "metrics.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

bool sa_upstream_host_numeric(const char *s)
{
	unsigned char buf[16];
	return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

bool sa_upstream_host_name_ok(const char *s)
{
	size_t len = strlen(s), label = 0;
	if (len == 0 || len > SA_UPSTREAM_HOST_MAX)
		return false;
	for (const char *p = s; *p; p++) {
		if (*p == '.') {
			if (label == 0)
				return false;
			label = 0;
			continue;
		}
		if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_')
			return false;
		if (++label > 63)
			return false;
	}
	return true;
}

static int err_out(char *err, size_t errlen, const char *what, const char *item)
{
	snprintf(err, errlen, "%s '%s'", what, item);
	return -1;
}

static char *trim(char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	char *e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

/* "HOST:PORT" or "[V6]:PORT" (port optional when may_omit): host and port out. */
static int host_port(char *s, bool may_omit, char **host, long *port)
{
	char *portp = NULL;
	if (*s == '[') {
		char *rb = strchr(s, ']');
		if (!rb || (rb[1] && rb[1] != ':'))
			return -1;
		*rb = '\0';
		*host = s + 1;
		portp = rb[1] == ':' ? rb + 2 : NULL;
		unsigned char a6[16];
		if (inet_pton(AF_INET6, *host, a6) != 1)
			return -1;
	} else {
		*host = s;
		portp = strrchr(s, ':');
		if (portp)
			*portp++ = '\0';
	}
	if (!portp) {
		*port = 0;
		return may_omit ? 0 : -1;
	}
	char *end;
	*port = strtol(portp, &end, 10);
	return *end || *port < 1 || *port > 65535 ? -1 : 0;
}

static bool host_ok(const char *h)
{
	return strlen(h) <= SA_UPSTREAM_HOST_MAX && (sa_upstream_host_numeric(h) || sa_upstream_host_name_ok(h));
}

static int parse_service(struct sa_upstream_spec *spec, char *rest, const char *value, char *err, size_t errlen)
{
	char *host;
	long port;
	if (host_port(trim(rest), true, &host, &port) < 0 || !host_ok(host))
		return err_out(err, errlen, "bad gateway (want sip:NAME[:PORT])", value);
	spec->service = true;
	spec->n = 1;
	spec->e[0].proto = SA_PROTO_UDP;
	snprintf(spec->e[0].host, sizeof(spec->e[0].host), "%s", host);
	spec->e[0].port = (uint16_t)port;
	return 0;
}

static int parse_entry(struct sa_upstream_entry *e, char *item)
{
	char *colon = strchr(item, ':'), *host;
	long port;
	if (!colon)
		return -1;
	*colon = '\0';
	if (sa_proto_parse(item, &e->proto) < 0)
		return -1;
	if (host_port(colon + 1, false, &host, &port) < 0 || !host_ok(host))
		return -1;
	snprintf(e->host, sizeof(e->host), "%s", host);
	e->port = (uint16_t)port;
	return 0;
}

int sa_upstream_spec_parse(struct sa_upstream_spec *spec, const char *value, char *err, size_t errlen)
{
	char buf[4096];
	memset(spec, 0, sizeof(*spec));
	if (snprintf(buf, sizeof(buf), "%s", value) >= (int)sizeof(buf))
		return err_out(err, errlen, "gateway value too long", "...");
	char *v = trim(buf);
	if (strncasecmp(v, "sips:", 5) == 0)
		return err_out(err, errlen, "sips: is not supported (use tls:HOST:PORT)", value);
	if (strncasecmp(v, "sip:", 4) == 0)
		return parse_service(spec, v + 4, value, err, errlen);
	for (char *save = NULL, *tok = strtok_r(v, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *item = trim(tok), copy[SA_UPSTREAM_HOST_MAX + 32];
		if (!*item)
			continue;
		snprintf(copy, sizeof(copy), "%s", item);
		if (spec->n == SA_UPSTREAM_MAX)
			return err_out(err, errlen, "too many gateways (at most 16) at", copy);
		if (parse_entry(&spec->e[spec->n], item) < 0)
			return err_out(err, errlen, "bad gateway (want sip:NAME or udp|tcp|tls:HOST:PORT, ...)", copy);
		spec->n++;
	}
	if (spec->n == 0)
		return err_out(err, errlen, "empty gateway", value);
	return 0;
}

/* ---- targets ---- */

static void set_addr(union sa_sockaddr *out, socklen_t *len, const union sa_sockaddr *in, uint16_t port)
{
	memset(out, 0, sizeof(*out));
	if (in->sa.sa_family == AF_INET6) {
		out->in6 = in->in6;
		out->in6.sin6_port = htons(port);
		*len = sizeof(out->in6);
	} else {
		out->in = in->in;
		out->in.sin_port = htons(port);
		*len = sizeof(out->in);
	}
}

static void target_numeric(struct sa_up_target *t)
{
	union sa_sockaddr a;
	memset(&a, 0, sizeof(a));
	if (inet_pton(AF_INET, t->host, &a.in.sin_addr) == 1)
		a.sa.sa_family = AF_INET;
	else if (inet_pton(AF_INET6, t->host, &a.in6.sin6_addr) == 1)
		a.sa.sa_family = AF_INET6;
	else
		return;
	t->numeric = true;
	set_addr(&t->addr[0], &t->addrlen[0], &a, t->port);
	t->naddr = 1;
}

static void target_set(struct sa_up_target *t, enum sa_proto proto, const char *host, uint16_t port,
                       uint16_t priority, uint16_t weight)
{
	memset(t, 0, sizeof(*t));
	t->proto = proto;
	snprintf(t->host, sizeof(t->host), "%s", host);
	t->port = port;
	t->priority = priority;
	t->weight = weight;
	target_numeric(t);
}

void sa_upstream_init(struct sa_upstream *u, const struct sa_upstream_spec *spec, const struct sa_upstream_cfg *cfg)
{
	memset(u, 0, sizeof(*u));
	u->cfg = *cfg;
	u->spec = *spec;
	if (spec->service) {
		const struct sa_upstream_entry *e = &spec->e[0];
		/* a numeric host, or a port given: no NAPTR or SRV (RFC 3263 §4.2) */
		if (sa_upstream_host_numeric(e->host) || e->port) {
			target_set(&u->t[0], SA_PROTO_UDP, e->host, e->port ? e->port : 5060, 0, 0);
			u->n = 1;
			u->service_expires_ms = UINT64_MAX;
		}
		return;
	}
	for (unsigned i = 0; i < spec->n; i++)
		target_set(&u->t[i], spec->e[i].proto, spec->e[i].host, spec->e[i].port, (uint16_t)i, 0);
	u->n = spec->n;
	u->service_expires_ms = UINT64_MAX;
}

static int name_find(const struct sa_upstream *u, const char *host)
{
	for (unsigned i = 0; i < u->n; i++)
		if (strcasecmp(u->t[i].host, host) == 0)
			return (int)i;
	return -1;
}

int sa_upstream_name_add(struct sa_upstream *u, const char *host, uint64_t now_ms)
{
	int i = name_find(u, host);
	if (i >= 0 || !sa_upstream_host_name_ok(host))
		return i;
	unsigned k = u->n;
	if (k == SA_UPSTREAM_MAX) {
		int best = -1;
		for (unsigned j = 0; j < u->n; j++)
			if (!u->t[j].resolving && (best < 0 || u->t[j].expires_ms < u->t[best].expires_ms))
				best = (int)j;
		if (best < 0)
			return -1;
		k = (unsigned)best;
	} else {
		u->n++;
	}
	target_set(&u->t[k], SA_PROTO_UDP, host, 0, 0, 0);
	(void)now_ms;   /* expires_ms 0: due at once */
	return (int)k;
}

bool sa_upstream_name_answered(const struct sa_upstream *u, const char *host, uint64_t now_ms)
{
	int i = name_find(u, host);
	return i >= 0 && !u->t[i].resolving && u->t[i].expires_ms > now_ms;
}

enum sa_up_ask sa_upstream_next_question(struct sa_upstream *u, uint64_t now_ms, unsigned *idx)
{
	if (u->spec.service && !u->service_resolving && now_ms >= u->service_expires_ms) {
		u->service_resolving = true;
		return SA_UP_ASK_SERVICE;
	}
	for (unsigned i = 0; i < u->n; i++) {
		struct sa_up_target *t = &u->t[i];
		if (t->numeric || t->resolving || now_ms < t->expires_ms)
			continue;
		t->resolving = true;
		*idx = i;
		return SA_UP_ASK_HOST;
	}
	return SA_UP_ASK_NONE;
}

static uint64_t ttl_ms(uint32_t ttl_s)
{
	if (ttl_s < SA_UPSTREAM_MIN_TTL_S)
		ttl_s = SA_UPSTREAM_MIN_TTL_S;
	if (ttl_s > SA_UPSTREAM_MAX_TTL_S)
		ttl_s = SA_UPSTREAM_MAX_TTL_S;
	return (uint64_t)ttl_s * 1000;
}

void sa_upstream_host_answer(struct sa_upstream *u, unsigned idx, const union sa_sockaddr *addrs, unsigned n,
                             uint32_t ttl_s, uint64_t now_ms)
{
	if (idx >= u->n)
		return;
	struct sa_up_target *t = &u->t[idx];
	t->resolving = false;
	if (n == 0) {
		/* keep what it had (a DNS outage should not take a gateway away):
		 * a name never resolved has nothing, and its calls get 503 */
		t->resolve_failed = true;
		t->expires_ms = now_ms + SA_UPSTREAM_NEG_TTL_MS;
		return;
	}
	t->resolve_failed = false;
	t->naddr = 0;
	for (unsigned i = 0; i < n && t->naddr < SA_UPSTREAM_ADDRS; i++) {
		if (addrs[i].sa.sa_family != AF_INET && addrs[i].sa.sa_family != AF_INET6)
			continue;
		set_addr(&t->addr[t->naddr], &t->addrlen[t->naddr], &addrs[i], t->port);
		t->naddr++;
	}
	t->expires_ms = now_ms + ttl_ms(ttl_s);
}

/* RFC 3263 §4.1: NAPTR records for SIP over UDP and TCP, and over TLS (a
 * client resolving a SIP URI SHOULD keep SIPS ones when it speaks TLS), flag
 * "s", by order then preference. */
static int naptr_cmp(const void *a, const void *b)
{
	const struct sa_up_naptr *x = *(const struct sa_up_naptr *const *)a, *y = *(const struct sa_up_naptr *const *)b;
	if (x->order != y->order)
		return x->order < y->order ? -1 : 1;
	return x->preference < y->preference ? -1 : x->preference > y->preference;
}

unsigned sa_upstream_naptr_pick(const struct sa_up_naptr *recs, unsigned n, char names[][SA_UPSTREAM_HOST_MAX + 1],
                                enum sa_proto *protos, unsigned max)
{
	const struct sa_up_naptr *p[SA_UPSTREAM_MAX];
	unsigned k = 0, out = 0;
	for (unsigned i = 0; i < n && k < SA_UPSTREAM_MAX; i++)
		if (recs[i].flags && strcasecmp(recs[i].flags, "s") == 0 && recs[i].service && recs[i].replacement &&
		    (strcasecmp(recs[i].service, "SIP+D2U") == 0 || strcasecmp(recs[i].service, "SIP+D2T") == 0 ||
		     strcasecmp(recs[i].service, "SIPS+D2T") == 0) &&
		    sa_upstream_host_name_ok(recs[i].replacement))
			p[k++] = &recs[i];
	qsort(p, k, sizeof(p[0]), naptr_cmp);
	for (unsigned i = 0; i < k && out < max; i++) {
		snprintf(names[out], SA_UPSTREAM_HOST_MAX + 1, "%s", p[i]->replacement);
		protos[out++] = strcasecmp(p[i]->service, "SIP+D2U") == 0 ? SA_PROTO_UDP
		                : strcasecmp(p[i]->service, "SIP+D2T") == 0 ? SA_PROTO_TCP : SA_PROTO_TLS;
	}
	return out;
}

/* The old target for the same proto/host/port, to carry health and counters over. */
static const struct sa_up_target *target_like(const struct sa_up_target *old, unsigned n, enum sa_proto proto,
                                              const char *host, uint16_t port)
{
	for (unsigned i = 0; i < n; i++)
		if (old[i].proto == proto && old[i].port == port && strcasecmp(old[i].host, host) == 0)
			return &old[i];
	return NULL;
}

static void target_carry(struct sa_up_target *t, const struct sa_up_target *was)
{
	uint16_t prio = t->priority, weight = t->weight;
	*t = *was;
	t->priority = prio;
	t->weight = weight;
}

unsigned sa_upstream_service_answer(struct sa_upstream *u, const struct sa_up_srv *recs, unsigned n,
                                    enum sa_proto proto, uint32_t ttl_s, uint64_t now_ms)
{
	struct sa_up_target *old = malloc(sizeof(u->t));
	unsigned nold = u->n, k = 0;
	if (!old) {
		u->service_resolving = false;
		u->service_expires_ms = now_ms + SA_UPSTREAM_NEG_TTL_MS;
		return u->n;
	}
	memcpy(old, u->t, sizeof(u->t));
	unsigned dots = 0;
	for (unsigned i = 0; i < n && k < SA_UPSTREAM_MAX; i++) {
		/* "." is RFC 2782's "not offered here" */
		if (recs[i].target && (strcmp(recs[i].target, ".") == 0 || recs[i].target[0] == '\0'))
			dots++;
		if (!recs[i].target || !sa_upstream_host_name_ok(recs[i].target) || recs[i].port == 0)
			continue;
		target_set(&u->t[k], proto, recs[i].target, recs[i].port, recs[i].priority, recs[i].weight);
		const struct sa_up_target *was = target_like(old, nold, proto, recs[i].target, recs[i].port);
		if (was)
			target_carry(&u->t[k], was);
		k++;
	}
	u->service_srv = k > 0;
	u->service_refused = n > 0 && dots == n;
	if (u->service_refused) {
		/* the domain says SIP is decidedly not offered: no gateway at all,
		 * not NAME's own address (which is for a domain without SRV) */
		k = 0;
	} else if (k == 0) {
		/* no SRV: NAME itself, port 5060, UDP (RFC 3263 §4.2) */
		const char *name = u->spec.e[0].host;
		target_set(&u->t[0], SA_PROTO_UDP, name, 5060, 0, 0);
		const struct sa_up_target *was = target_like(old, nold, SA_PROTO_UDP, name, 5060);
		if (was)
			target_carry(&u->t[0], was);
		k = 1;
	}
	for (unsigned i = k; i < SA_UPSTREAM_MAX; i++)
		memset(&u->t[i], 0, sizeof(u->t[i]));
	u->n = k;
	u->service_resolving = false;
	u->service_failed = false;
	u->service_expires_ms = now_ms + ttl_ms(ttl_s);
	free(old);
	return k;
}

void sa_upstream_service_failed(struct sa_upstream *u, uint64_t now_ms)
{
	u->service_resolving = false;
	u->service_failed = true;
	u->service_expires_ms = now_ms + SA_UPSTREAM_NEG_TTL_MS;
}

/* ---- choosing ---- */

void sa_upstream_hold(struct sa_upstream *u, unsigned idx, unsigned seconds, uint64_t now_ms)
{
	if (idx >= u->n || seconds == 0)
		return;
	if (seconds > SA_UPSTREAM_HOLD_MAX_S)
		seconds = SA_UPSTREAM_HOLD_MAX_S;
	u->t[idx].held_until_ms = now_ms + (uint64_t)seconds * 1000;
}

bool sa_upstream_is_down(const struct sa_upstream *u, unsigned idx, uint64_t now_ms)
{
	const struct sa_up_target *t = &u->t[idx];
	if (now_ms < t->held_until_ms)
		return true;
	if (!t->down)
		return false;
	/* without probes nothing else would ever try it again */
	return u->cfg.probing || now_ms < t->down_since_ms + u->cfg.retry_ms;
}

/* RFC 2782: within one priority, draw by weight; zero weights first, so that
 * they are picked only when the draw lands on zero. */
static unsigned draw_weighted(const struct sa_upstream *u, unsigned *c, unsigned n, uint32_t (*rnd)(void *),
                              void *rarg, unsigned *out)
{
	unsigned k = 0;
	while (n > 0) {
		/* zero weights to the front, order otherwise kept */
		for (unsigned i = 1; i < n; i++)
			for (unsigned j = i; j > 0 && u->t[c[j]].weight == 0 && u->t[c[j - 1]].weight != 0; j--) {
				unsigned tmp = c[j];
				c[j] = c[j - 1];
				c[j - 1] = tmp;
			}
		uint32_t sum = 0;
		for (unsigned i = 0; i < n; i++)
			sum += u->t[c[i]].weight;
		uint32_t r = sum ? rnd(rarg) % (sum + 1) : 0, run = 0;
		unsigned pick = n - 1;
		for (unsigned i = 0; i < n; i++) {
			run += u->t[c[i]].weight;
			if (run >= r) {
				pick = i;
				break;
			}
		}
		out[k++] = c[pick];
		memmove(&c[pick], &c[pick + 1], (n - pick - 1) * sizeof(c[0]));
		n--;
	}
	return k;
}

/* Candidates by priority, then each priority drawn by weight. */
static unsigned order_group(const struct sa_upstream *u, unsigned *c, unsigned n, uint32_t (*rnd)(void *),
                            void *rarg, unsigned *out)
{
	/* insertion sort by priority, stable: a list keeps its order */
	for (unsigned i = 1; i < n; i++)
		for (unsigned j = i; j > 0 && u->t[c[j]].priority < u->t[c[j - 1]].priority; j--) {
			unsigned tmp = c[j];
			c[j] = c[j - 1];
			c[j - 1] = tmp;
		}
	unsigned k = 0;
	for (unsigned i = 0; i < n;) {
		unsigned j = i;
		while (j < n && u->t[c[j]].priority == u->t[c[i]].priority)
			j++;
		k += draw_weighted(u, &c[i], j - i, rnd, rarg, &out[k]);
		i = j;
	}
	return k;
}

unsigned sa_upstream_order(const struct sa_upstream *u, uint64_t now_ms, uint32_t (*rnd)(void *), void *rarg,
                           unsigned *out, unsigned max)
{
	unsigned up[SA_UPSTREAM_MAX], down[SA_UPSTREAM_MAX], nup = 0, ndown = 0, res[2 * SA_UPSTREAM_MAX];
	for (unsigned i = 0; i < u->n; i++) {
		if (u->t[i].naddr == 0)
			continue;
		if (sa_upstream_is_down(u, i, now_ms))
			down[ndown++] = i;
		else
			up[nup++] = i;
	}
	/* down gateways last: tried only when every one that is up failed */
	unsigned k = order_group(u, up, nup, rnd, rarg, res);
	k += order_group(u, down, ndown, rnd, rarg, &res[k]);
	if (k > max)
		k = max;
	memcpy(out, res, k * sizeof(out[0]));
	return k;
}

bool sa_upstream_report(struct sa_upstream *u, unsigned idx, enum sa_up_event ev, uint64_t now_ms)
{
	if (idx >= u->n || ev >= SA_UP_EVENTS)
		return false;
	struct sa_up_target *t = &u->t[idx];
	t->events[ev]++;
	if (ev == SA_UP_ANSWERED || ev == SA_UP_PROBE_OK) {
		t->fails = 0;
		t->oks++;
		if (t->down && t->oks >= u->cfg.up_after) {
			t->down = false;
			return true;
		}
		return false;
	}
	t->oks = 0;
	t->fails++;
	if (t->down) {
		t->down_since_ms = now_ms;   /* a retry that failed: wait again */
		return false;
	}
	if (t->fails >= u->cfg.down_after) {
		t->down = true;
		t->down_since_ms = now_ms;
		return true;
	}
	return false;
}

static bool addr_eq(const union sa_sockaddr *a, const struct sockaddr *b, bool port_any)
{
	if (a->sa.sa_family != b->sa_family)
		return false;
	if (b->sa_family == AF_INET) {
		const struct sockaddr_in *x = (const struct sockaddr_in *)b;
		return a->in.sin_addr.s_addr == x->sin_addr.s_addr && (port_any || a->in.sin_port == x->sin_port);
	}
	const struct sockaddr_in6 *y = (const struct sockaddr_in6 *)b;
	return memcmp(&a->in6.sin6_addr, &y->sin6_addr, 16) == 0 && (port_any || a->in6.sin6_port == y->sin6_port);
}

void sa_upstream_addr_last(struct sa_upstream *u, const struct sockaddr *sa)
{
	for (unsigned i = 0; i < u->n; i++) {
		struct sa_up_target *t = &u->t[i];
		for (unsigned j = 0; j + 1 < t->naddr; j++) {
			if (!addr_eq(&t->addr[j], sa, false))
				continue;
			union sa_sockaddr a = t->addr[j];
			socklen_t l = t->addrlen[j];
			memmove(&t->addr[j], &t->addr[j + 1], (t->naddr - j - 1) * sizeof(t->addr[0]));
			memmove(&t->addrlen[j], &t->addrlen[j + 1], (t->naddr - j - 1) * sizeof(t->addrlen[0]));
			t->addr[t->naddr - 1] = a;
			t->addrlen[t->naddr - 1] = l;
			return;
		}
	}
}

int sa_upstream_find_addr(const struct sa_upstream *u, const struct sockaddr *sa, bool port_any)
{
	for (unsigned i = 0; i < u->n; i++)
		for (unsigned j = 0; j < u->t[i].naddr; j++)
			if (addr_eq(&u->t[i].addr[j], sa, port_any))
				return (int)i;
	return -1;
}

/* ---- DNS answers: the TTL ---- */

/* Past a (possibly compressed) name at off; the new offset or 0 when malformed. */
static size_t skip_name(const unsigned char *m, size_t len, size_t off)
{
	for (unsigned hops = 0; off < len && hops < 128; hops++) {
		unsigned l = m[off];
		if (l == 0)
			return off + 1;
		if ((l & 0xc0) == 0xc0)
			return off + 2 <= len ? off + 2 : 0;
		if (l & 0xc0)
			return 0;
		off += l + 1;
	}
	return 0;
}

long sa_upstream_dns_min_ttl(const unsigned char *m, size_t len, uint16_t type)
{
	if (len < 12)
		return -1;
	unsigned qd = (unsigned)(m[4] << 8 | m[5]), an = (unsigned)(m[6] << 8 | m[7]);
	size_t off = 12;
	for (unsigned i = 0; i < qd; i++) {
		if (!(off = skip_name(m, len, off)) || off + 4 > len)
			return -1;
		off += 4;
	}
	long best = -1;
	for (unsigned i = 0; i < an; i++) {
		if (!(off = skip_name(m, len, off)) || off + 10 > len)
			return -1;
		uint16_t rtype = (uint16_t)(m[off] << 8 | m[off + 1]);
		uint32_t ttl = (uint32_t)m[off + 4] << 24 | (uint32_t)m[off + 5] << 16 | (uint32_t)m[off + 6] << 8 | m[off + 7];
		size_t rdlen = (size_t)(m[off + 8] << 8 | m[off + 9]);
		off += 10;
		if (off + rdlen > len)
			return -1;
		off += rdlen;
		if (rtype == type && (best < 0 || (long)ttl < best))
			best = (long)(ttl & 0x7fffffff);
	}
	return best;
}

void sa_upstream_target_name(const struct sa_up_target *t, char *out, size_t len)
{
	bool v6 = strchr(t->host, ':') != NULL;
	const char *proto = t->proto == SA_PROTO_UDP ? "udp" : t->proto == SA_PROTO_TCP ? "tcp" : "tls";
	snprintf(out, len, "%s:%s%s%s:%u", proto, v6 ? "[" : "", t->host, v6 ? "]" : "", t->port);
}

int sa_upstream_metrics(const struct sa_upstream *u, uint64_t now_ms, char **buf, size_t *len)
{
	static const char *ev_label[SA_UP_EVENTS] = { "answered", "503", "timeout", "transport_error", "probe_ok",
	                                              "probe_failed" };
	int rc = 0;
	rc |= sa_metrics_appendf(buf, len, "# HELP sipauthd_gateway_up Whether a gateway is up (1) or down (0).\n"
	                        "# TYPE sipauthd_gateway_up gauge\n");
	for (unsigned i = 0; i < u->n; i++) {
		char g[SA_UPSTREAM_HOST_MAX + 32];
		sa_upstream_target_name(&u->t[i], g, sizeof(g));
		rc |= sa_metrics_appendf(buf, len, "sipauthd_gateway_up{gateway=\"%s\"} %d\n", g, !sa_upstream_is_down(u, i, now_ms));
	}
	rc |= sa_metrics_appendf(buf, len, "# HELP sipauthd_gateway_addresses Addresses a gateway's name resolved to (numeric: 1).\n"
	                        "# TYPE sipauthd_gateway_addresses gauge\n");
	for (unsigned i = 0; i < u->n; i++) {
		char g[SA_UPSTREAM_HOST_MAX + 32];
		sa_upstream_target_name(&u->t[i], g, sizeof(g));
		rc |= sa_metrics_appendf(buf, len, "sipauthd_gateway_addresses{gateway=\"%s\"} %u\n", g, u->t[i].naddr);
	}
	rc |= sa_metrics_appendf(buf, len, "# HELP sipauthd_gateway_invites_total INVITEs sent to a gateway (first tries and failovers).\n"
	                        "# TYPE sipauthd_gateway_invites_total counter\n");
	for (unsigned i = 0; i < u->n; i++) {
		char g[SA_UPSTREAM_HOST_MAX + 32];
		sa_upstream_target_name(&u->t[i], g, sizeof(g));
		rc |= sa_metrics_appendf(buf, len, "sipauthd_gateway_invites_total{gateway=\"%s\"} %llu\n", g,
		              (unsigned long long)u->t[i].sent);
	}
	rc |= sa_metrics_appendf(buf, len, "# HELP sipauthd_gateway_failovers_total INVITEs moved from a gateway to the next.\n"
	                        "# TYPE sipauthd_gateway_failovers_total counter\n");
	for (unsigned i = 0; i < u->n; i++) {
		char g[SA_UPSTREAM_HOST_MAX + 32];
		sa_upstream_target_name(&u->t[i], g, sizeof(g));
		rc |= sa_metrics_appendf(buf, len, "sipauthd_gateway_failovers_total{gateway=\"%s\"} %llu\n", g,
		              (unsigned long long)u->t[i].failovers);
	}
	rc |= sa_metrics_appendf(buf, len, "# HELP sipauthd_gateway_events_total What a gateway did: answered, 503, timeout, "
	                        "transport_error, probe_ok, probe_failed.\n"
	                        "# TYPE sipauthd_gateway_events_total counter\n");
	for (unsigned i = 0; i < u->n; i++) {
		char g[SA_UPSTREAM_HOST_MAX + 32];
		sa_upstream_target_name(&u->t[i], g, sizeof(g));
		for (int e = 0; e < SA_UP_EVENTS; e++)
			rc |= sa_metrics_appendf(buf, len, "sipauthd_gateway_events_total{gateway=\"%s\",event=\"%s\"} %llu\n", g,
			              ev_label[e], (unsigned long long)u->t[i].events[e]);
	}
	return rc ? -1 : 0;
}

static json_t *target_json(const struct sa_upstream *u, unsigned i, uint64_t now_ms)
{
	const struct sa_up_target *t = &u->t[i];
	char g[SA_UPSTREAM_HOST_MAX + 32];
	sa_upstream_target_name(t, g, sizeof(g));
	json_t *addrs = json_array();
	for (unsigned k = 0; addrs && k < t->naddr; k++) {
		char a[INET6_ADDRSTRLEN] = "";
		if (t->addr[k].sa.sa_family == AF_INET6)
			inet_ntop(AF_INET6, &t->addr[k].in6.sin6_addr, a, sizeof(a));
		else
			inet_ntop(AF_INET, &t->addr[k].in.sin_addr, a, sizeof(a));
		json_array_append_new(addrs, json_string(a));
	}
	json_int_t ttl_left = t->numeric ? -1 : t->expires_ms > now_ms ? (json_int_t)((t->expires_ms - now_ms) / 1000) : 0;
	return json_pack("{s:s, s:s, s:s, s:i, s:i, s:i, s:o, s:I, s:b, s:s, s:i, s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}}",
	                 "gateway", g, "transport", t->proto == SA_PROTO_UDP ? "udp" : t->proto == SA_PROTO_TCP ? "tcp" : "tls",
	                 "host", t->host, "port", t->port, "priority", t->priority, "weight", t->weight,
	                 "addresses", addrs ? addrs : json_array(), "ttl_left", ttl_left,
	                 "resolve_failed", t->resolve_failed,
	                 "state", sa_upstream_is_down(u, i, now_ms) ? "down" : "up", "failures_in_a_row", t->fails,
	                 "counters", "invites", (json_int_t)t->sent, "failovers", (json_int_t)t->failovers,
	                 "answered", (json_int_t)t->events[SA_UP_ANSWERED], "503", (json_int_t)t->events[SA_UP_503],
	                 "timeouts", (json_int_t)t->events[SA_UP_TIMEOUT],
	                 "transport_errors", (json_int_t)t->events[SA_UP_TRANSPORT],
	                 "probes_ok", (json_int_t)t->events[SA_UP_PROBE_OK],
	                 "probes_failed", (json_int_t)t->events[SA_UP_PROBE_FAIL]);
}

char *sa_upstream_json(const struct sa_upstream *u, uint64_t now_ms)
{
	json_t *list = json_array(), *root = NULL;
	char *text = NULL;
	for (unsigned i = 0; list && i < u->n; i++) {
		json_t *g = target_json(u, i, now_ms);
		if (!g || json_array_append_new(list, g) < 0)
			goto out;
	}
	root = json_pack("{s:o, s:o}", "service", u->spec.service ? json_string(u->spec.e[0].host) : json_null(),
	                 "gateways", list);
	list = NULL;
	if (root)
		text = json_dumps(root, JSON_COMPACT);
out:
	json_decref(list);
	json_decref(root);
	return text;
}

long sa_upstream_probe_request(const struct sa_upstream *u, unsigned idx, const char *via, const char *local_host,
                               const char *id, char *out, size_t cap)
{
	if (idx >= u->n)
		return -1;
	const struct sa_up_target *t = &u->t[idx];
	bool v6 = strchr(t->host, ':') != NULL;
	char uri[SA_UPSTREAM_HOST_MAX + 40];
	snprintf(uri, sizeof(uri), "sip:%s%s%s:%u%s", v6 ? "[" : "", t->host, v6 ? "]" : "", t->port,
	         t->proto == SA_PROTO_TCP ? ";transport=tcp" : t->proto == SA_PROTO_TLS ? ";transport=tls" : "");
	int n = snprintf(out, cap,
	                 "OPTIONS %s SIP/2.0\r\n"
	                 "Via: %s\r\n"
	                 "Max-Forwards: 70\r\n"
	                 "From: <sip:sipauthd@%s>;tag=%.16s\r\n"
	                 "To: <%s>\r\n"
	                 "Call-ID: %s@sipauthd\r\n"
	                 "CSeq: 1 OPTIONS\r\n"
	                 "Accept: application/sdp\r\n"
	                 "Content-Length: 0\r\n\r\n",
	                 uri, via, local_host, id, uri, id);
	return n < 0 || (size_t)n >= cap ? -1 : n;
}

enum sa_up_event sa_upstream_probe_verdict(int status)
{
	return status == 503 ? SA_UP_PROBE_FAIL : SA_UP_PROBE_OK;
}

const char *sa_up_event_name(enum sa_up_event ev)
{
	static const char *names[SA_UP_EVENTS] = { "answered", "503", "timeout", "transport_error", "probe_ok",
	                                           "probe_failed" };
	return ev < SA_UP_EVENTS ? names[ev] : "?";
}
