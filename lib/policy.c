/* policy.c: a trunk's carrier controls: the PATCH rules, the allow-list, the call-rate bucket. */
#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy.h"

void sa_policy_default(struct sa_trunk_policy *p)
{
	memset(p, 0, sizeof *p);
	p->max_concurrent_calls = SA_POLICY_NO_LIMIT;
	p->max_calls_per_second_milli = SA_POLICY_NO_LIMIT;
}

/* ---- networks ---- */

static bool host_bits_zero(const struct sa_cidr *c)
{
	unsigned bytes = c->family == AF_INET ? 4 : 16;

	for (unsigned bit = c->prefix; bit < bytes * 8; bit++)
		if (c->addr[bit / 8] & (0x80u >> (bit % 8)))
			return false;
	return true;
}

int sa_cidr_parse(const char *text, struct sa_cidr *out)
{
	char addr[INET6_ADDRSTRLEN + 1];
	const char *slash = strchr(text, '/');
	size_t alen = slash ? (size_t)(slash - text) : strlen(text);

	memset(out, 0, sizeof *out);
	if (alen == 0 || alen >= sizeof addr)
		return -1;
	memcpy(addr, text, alen);
	addr[alen] = '\0';
	if (inet_pton(AF_INET, addr, out->addr) == 1)
		out->family = AF_INET;
	else if (inet_pton(AF_INET6, addr, out->addr) == 1)
		out->family = AF_INET6;
	else
		return -1;
	unsigned max = out->family == AF_INET ? 32 : 128;
	out->prefix = (uint8_t)max;
	if (slash) {
		const char *d = slash + 1;
		unsigned v = 0;
		if (*d == '\0' || strlen(d) > 3)
			return -1;
		for (; *d; d++) {
			if (*d < '0' || *d > '9')
				return -1;
			v = v * 10 + (unsigned)(*d - '0');
		}
		if (v > max)
			return -1;
		out->prefix = (uint8_t)v;
	}
	return host_bits_zero(out) ? 0 : -1;
}

void sa_cidr_format(const struct sa_cidr *c, char *out, size_t outlen)
{
	char a[INET6_ADDRSTRLEN];

	if (inet_ntop(c->family, c->addr, a, sizeof a) == NULL)
		snprintf(a, sizeof a, "?");
	snprintf(out, outlen, "%s/%u", a, (unsigned)c->prefix);
}

/* An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is the IPv4 address it maps. */
static int sockaddr_bytes(const struct sockaddr *sa, uint8_t *family, const uint8_t **bytes)
{
	static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	if (sa->sa_family == AF_INET) {
		*family = AF_INET;
		*bytes = (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;
		return 0;
	}
	if (sa->sa_family != AF_INET6)
		return -1;
	const uint8_t *b = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
	if (memcmp(b, mapped, sizeof mapped) == 0) {
		*family = AF_INET;
		*bytes = b + 12;
	} else {
		*family = AF_INET6;
		*bytes = b;
	}
	return 0;
}

bool sa_cidr_contains(const struct sa_cidr *c, const struct sockaddr *sa)
{
	const uint8_t *b;
	uint8_t family;

	if (sockaddr_bytes(sa, &family, &b) < 0 || family != c->family)
		return false;
	unsigned full = c->prefix / 8, rest = c->prefix % 8;
	if (memcmp(b, c->addr, full) != 0)
		return false;
	if (rest == 0)
		return true;
	uint8_t mask = (uint8_t)(0xffu << (8 - rest));
	return (b[full] & mask) == (c->addr[full] & mask);
}

bool sa_policy_source_allowed(const struct sa_trunk_policy *p, const struct sockaddr *sa)
{
	if (p->nsources == 0)
		return true;
	for (uint32_t i = 0; i < p->nsources && i < SA_POLICY_MAX_SOURCES; i++)
		if (sa_cidr_contains(&p->sources[i], sa))
			return true;
	return false;
}

/* ---- the PATCH rules ---- */

struct refusal {
	char *field;
	char *why;
	size_t whylen;
};

static int refuse(struct refusal *r, const char *field, const char *why)
{
	snprintf(r->field, SA_POLICY_FIELD_MAX, "%s", field);
	snprintf(r->why, r->whylen, "%s", why);
	return -1;
}

static int set_channels(struct sa_trunk_policy *p, const json_t *v, struct refusal *r)
{
	static const char rule[] = "must be an integer from 0 to 1000000, or null for no limit";

	if (json_is_null(v)) {
		p->max_concurrent_calls = SA_POLICY_NO_LIMIT;
		return 0;
	}
	if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > SA_POLICY_MAX_CHANNELS)
		return refuse(r, "max_concurrent_calls", rule);
	p->max_concurrent_calls = json_integer_value(v);
	return 0;
}

static int set_rate(struct sa_trunk_policy *p, const json_t *v, struct refusal *r)
{
	static const char rule[] = "must be a number of calls per second from 0.001 to 10000, or null for no limit";

	if (json_is_null(v)) {
		p->max_calls_per_second_milli = SA_POLICY_NO_LIMIT;
		return 0;
	}
	if (!json_is_number(v))
		return refuse(r, "max_calls_per_second", rule);
	double rate = json_number_value(v);
	if (!(rate >= 0.001 && rate <= SA_POLICY_MAX_RATE))
		return refuse(r, "max_calls_per_second", rule);
	p->max_calls_per_second_milli = llround(rate * 1000.0);
	return 0;
}

static int set_sources(struct sa_trunk_policy *p, const json_t *v, struct refusal *r)
{
	char why[160];
	size_t i;
	json_t *e;

	if (!json_is_array(v) || json_array_size(v) > SA_POLICY_MAX_SOURCES)
		return refuse(r, "allowed_sources", "must be an array of up to 64 networks such as \"203.0.113.0/24\"");
	p->nsources = 0;
	json_array_foreach(v, i, e) {
		struct sa_cidr c;
		const char *text = json_string_value(e);
		if (text == NULL || sa_cidr_parse(text, &c) < 0) {
			snprintf(why, sizeof why, "entry %zu is not an IPv4 or IPv6 network with its host bits zero "
			         "(\"203.0.113.0/24\", \"2001:db8::/32\" or an address)", i);
			return refuse(r, "allowed_sources", why);
		}
		for (uint32_t k = 0; k < p->nsources; k++)
			if (memcmp(&p->sources[k], &c, sizeof c) == 0) {
				snprintf(why, sizeof why, "entry %zu repeats an earlier network", i);
				return refuse(r, "allowed_sources", why);
			}
		p->sources[p->nsources++] = c;
	}
	return 0;
}

static int set_bool(bool *out, const char *field, const json_t *v, struct refusal *r)
{
	if (!json_is_boolean(v))
		return refuse(r, field, "must be true or false");
	*out = json_is_true(v);
	return 0;
}

static int set_algs(struct sa_trunk_policy *p, const json_t *v, struct refusal *r)
{
	static const char rule[] = "must be null (the daemon's [auth] algorithms) or a list of distinct names "
	                           "from \"MD5\", \"SHA-256\" and \"SHA-512-256\", in challenge order";
	size_t i;
	json_t *e;

	if (json_is_null(v)) {
		p->nalgs = 0;
		return 0;
	}
	if (!json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > SA_ALG_COUNT)
		return refuse(r, "digest_algorithms", rule);
	p->nalgs = 0;
	json_array_foreach(v, i, e) {
		const char *name = json_string_value(e);
		enum sa_digest_alg alg;
		bool sess;
		if (name == NULL || sa_digest_alg_parse(name, strlen(name), &alg, &sess) < 0 || sess)
			return refuse(r, "digest_algorithms", rule);
		for (unsigned k = 0; k < p->nalgs; k++)
			if (p->algs[k] == alg)
				return refuse(r, "digest_algorithms", rule);
		p->algs[p->nalgs++] = (uint8_t)alg;
	}
	return 0;
}

int sa_policy_patch(struct sa_trunk_policy *p, const json_t *patch, char *field, char *why, size_t whylen)
{
	struct refusal r = { field, why, whylen };
	struct sa_trunk_policy n = *p;
	const char *key;
	json_t *v;

	field[0] = '\0';
	if (!json_is_object(patch))
		return refuse(&r, "", "the body must be a JSON object of trunk settings");
	json_object_foreach((json_t *)patch, key, v) {
		int rc;
		if (strcmp(key, "max_concurrent_calls") == 0)
			rc = set_channels(&n, v, &r);
		else if (strcmp(key, "max_calls_per_second") == 0)
			rc = set_rate(&n, v, &r);
		else if (strcmp(key, "allowed_sources") == 0)
			rc = set_sources(&n, v, &r);
		else if (strcmp(key, "ip_authentication") == 0)
			rc = set_bool(&n.ip_authentication, key, v, &r);
		else if (strcmp(key, "require_tls") == 0)
			rc = set_bool(&n.require_tls, key, v, &r);
		else if (strcmp(key, "digest_algorithms") == 0)
			rc = set_algs(&n, v, &r);
		else
			rc = refuse(&r, key, "is not a trunk setting (max_concurrent_calls, max_calls_per_second, "
			                     "allowed_sources, ip_authentication, require_tls, digest_algorithms)");
		if (rc < 0)
			return -1;
	}
	if (n.ip_authentication && n.nsources == 0)
		return refuse(&r, "ip_authentication", "needs allowed_sources: without them any address would be trusted");
	*p = n;
	return 0;
}

/* ---- GET ---- */

int sa_policy_to_json(const struct sa_trunk_policy *p, json_t *obj)
{
	json_t *src = json_array(), *algs = NULL;
	char text[INET6_ADDRSTRLEN + 8];
	int rc = 0;

	for (uint32_t i = 0; src && i < p->nsources && i < SA_POLICY_MAX_SOURCES; i++) {
		sa_cidr_format(&p->sources[i], text, sizeof text);
		rc |= json_array_append_new(src, json_string(text));
	}
	if (p->nalgs > 0) {
		algs = json_array();
		for (unsigned i = 0; algs && i < p->nalgs && i < SA_ALG_COUNT; i++)
			rc |= json_array_append_new(algs, json_string(sa_digest_alg_name(p->algs[i])));
	}
	rc |= json_object_set_new(obj, "max_concurrent_calls", p->max_concurrent_calls == SA_POLICY_NO_LIMIT
	                          ? json_null() : json_integer(p->max_concurrent_calls));
	rc |= json_object_set_new(obj, "max_calls_per_second", p->max_calls_per_second_milli == SA_POLICY_NO_LIMIT
	                          ? json_null()
	                          : p->max_calls_per_second_milli % 1000 == 0
	                          ? json_integer(p->max_calls_per_second_milli / 1000)
	                          : json_real((double)p->max_calls_per_second_milli / 1000.0));
	rc |= json_object_set_new(obj, "allowed_sources", src ? src : json_null());
	rc |= json_object_set_new(obj, "ip_authentication", json_boolean(p->ip_authentication));
	rc |= json_object_set_new(obj, "require_tls", json_boolean(p->require_tls));
	rc |= json_object_set_new(obj, "digest_algorithms", algs ? algs : json_null());
	return rc == 0 && src != NULL && (p->nalgs == 0 || algs != NULL) ? 0 : -1;
}

/* ---- call rate ---- */

bool sa_policy_rate_take(const struct sa_trunk_policy *p, struct sa_rate_bucket *b, int64_t now_ms)
{
	int64_t rate = p->max_calls_per_second_milli;   /* tokens (x1000) per second */

	if (rate == SA_POLICY_NO_LIMIT)
		return true;
	/* burst = one second of calls, and never less than one call */
	int64_t cap = rate < 1000 ? 1000 : rate;
	if (!b->primed) {
		b->tokens_milli = cap;
		b->last_ms = now_ms;
		b->primed = true;
	}
	if (now_ms > b->last_ms) {
		int64_t add = (now_ms - b->last_ms) * rate / 1000;
		if (add > 0) {
			b->tokens_milli = b->tokens_milli + add > cap ? cap : b->tokens_milli + add;
			b->last_ms = now_ms;
		}
	}
	if (b->tokens_milli < 1000)
		return false;
	b->tokens_milli -= 1000;
	return true;
}

/* ---- admission ---- */

const char *sa_policy_verdict_name(enum sa_policy_verdict v)
{
	static const char *const names[SA_POLICY_VERDICT_COUNT] = {
		"admit", "tls_required", "source_not_allowed", "channel_limit", "rate_limit",
	};
	return v < SA_POLICY_VERDICT_COUNT ? names[v] : "unknown";
}

enum sa_policy_verdict sa_policy_check_arrival(const struct sa_trunk_policy *p, bool over_tls,
                                               const struct sockaddr *src)
{
	if (p->require_tls && !over_tls)
		return SA_POLICY_TLS_REQUIRED;
	if (!sa_policy_source_allowed(p, src))
		return SA_POLICY_SOURCE_NOT_ALLOWED;
	return SA_POLICY_ADMIT;
}

bool sa_policy_ip_authenticates(const struct sa_trunk_policy *p, const struct sockaddr *src)
{
	return p->ip_authentication && p->nsources > 0 && sa_policy_source_allowed(p, src);
}

#define TRUNK_BUCKETS 256

struct sa_trunk_table {
	struct sa_trunk_usage *b[TRUNK_BUCKETS];
	pthread_mutex_t lock;   /* sa_trunk_admit/hold/release: the SIP workers share the channels */
};

static unsigned trunk_hash(const char *s)
{
	uint32_t h = 2166136261u;

	while (*s)
		h = (h ^ (unsigned char)*s++) * 16777619u;
	return h % TRUNK_BUCKETS;
}

struct sa_trunk_table *sa_trunk_table_new(void)
{
	struct sa_trunk_table *t = calloc(1, sizeof(struct sa_trunk_table));
	if (t != NULL && pthread_mutex_init(&t->lock, NULL) != 0) {
		free(t);
		return NULL;
	}
	return t;
}

void sa_trunk_table_free(struct sa_trunk_table *t)
{
	if (t == NULL)
		return;
	for (unsigned i = 0; i < TRUNK_BUCKETS; i++)
		while (t->b[i] != NULL) {
			struct sa_trunk_usage *u = t->b[i];
			t->b[i] = u->next;
			free(u);
		}
	pthread_mutex_destroy(&t->lock);
	free(t);
}

/* Entries are never removed: one per trunk that has had a call on this node. */
struct sa_trunk_usage *sa_trunk_usage(struct sa_trunk_table *t, const char *trunk_id)
{
	if (trunk_id == NULL || strlen(trunk_id) >= sizeof t->b[0]->trunk_id)
		return NULL;
	unsigned h = trunk_hash(trunk_id);
	for (struct sa_trunk_usage *u = t->b[h]; u != NULL; u = u->next)
		if (strcmp(u->trunk_id, trunk_id) == 0)
			return u;
	struct sa_trunk_usage *u = calloc(1, sizeof *u);
	if (u == NULL)
		return NULL;
	snprintf(u->trunk_id, sizeof u->trunk_id, "%s", trunk_id);
	u->next = t->b[h];
	t->b[h] = u;
	return u;
}

void sa_trunk_table_each(struct sa_trunk_table *t, void (*cb)(const struct sa_trunk_usage *u, void *arg), void *arg)
{
	for (unsigned i = 0; i < TRUNK_BUCKETS; i++)
		for (struct sa_trunk_usage *u = t->b[i]; u != NULL; u = u->next)
			cb(u, arg);
}

/* The channel check comes first, so that a call refused for channels does
 * not spend a token of the rate. */
enum sa_policy_verdict sa_policy_admit_call(const struct sa_trunk_policy *p, struct sa_trunk_usage *u,
                                            bool rate_limited, int64_t now_ms)
{
	enum sa_policy_verdict v = SA_POLICY_ADMIT;

	if (p->max_concurrent_calls != SA_POLICY_NO_LIMIT && (int64_t)u->channels >= p->max_concurrent_calls)
		v = SA_POLICY_CHANNEL_LIMIT;
	else if (rate_limited && !sa_policy_rate_take(p, &u->rate, now_ms))
		v = SA_POLICY_RATE_LIMIT;
	if (v != SA_POLICY_ADMIT) {
		u->refused[v]++;
		return v;
	}
	u->channels++;
	return v;
}

void sa_policy_hold(struct sa_trunk_usage *u)
{
	u->channels++;
}

static int64_t share_of(int64_t limit, unsigned nodes)
{
	if (limit == SA_POLICY_NO_LIMIT || limit <= 0)
		return limit;
	return (limit + (int64_t)nodes - 1) / (int64_t)nodes;
}

void sa_policy_share(struct sa_trunk_policy *p, unsigned nodes)
{
	if (nodes <= 1)
		return;
	p->max_concurrent_calls = share_of(p->max_concurrent_calls, nodes);
	p->max_calls_per_second_milli = share_of(p->max_calls_per_second_milli, nodes);
}

void sa_policy_release(struct sa_trunk_usage *u)
{
	if (u->channels > 0)
		u->channels--;
}

int sa_trunk_admit(struct sa_trunk_table *t, const char *trunk_id, const struct sa_trunk_policy *p,
                   bool rate_limited, int64_t now_ms, enum sa_policy_verdict *v)
{
	pthread_mutex_lock(&t->lock);
	struct sa_trunk_usage *u = sa_trunk_usage(t, trunk_id);
	if (u != NULL)
		*v = sa_policy_admit_call(p, u, rate_limited, now_ms);
	pthread_mutex_unlock(&t->lock);
	return u != NULL ? 0 : -1;
}

void sa_trunk_hold(struct sa_trunk_table *t, const char *trunk_id)
{
	pthread_mutex_lock(&t->lock);
	struct sa_trunk_usage *u = sa_trunk_usage(t, trunk_id);
	if (u != NULL)
		sa_policy_hold(u);
	pthread_mutex_unlock(&t->lock);
}

void sa_trunk_release(struct sa_trunk_table *t, const char *trunk_id)
{
	pthread_mutex_lock(&t->lock);
	struct sa_trunk_usage *u = sa_trunk_usage(t, trunk_id);
	if (u != NULL)
		sa_policy_release(u);
	pthread_mutex_unlock(&t->lock);
}
