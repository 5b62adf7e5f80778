/* webhook.c: webhook rules: event names, target URLs, signatures, the retry schedule, auth.failed aggregation. */
#include "webhook.h"
#include "policy.h"

#include <netinet/in.h>
#include <sys/socket.h>

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

static const char *const event_names[SA_WH_EVENT_COUNT] = {
	[SA_WH_AUTH_FAILED] = "auth.failed",
	[SA_WH_SOURCE_BANNED] = "source.banned",
	[SA_WH_CREDENTIAL_CREATED] = "credential.created",
	[SA_WH_CREDENTIAL_DELETED] = "credential.deleted",
	[SA_WH_CREDENTIAL_ROTATED] = "credential.rotated",
	[SA_WH_REGISTRATION_CREATED] = "registration.created",
	[SA_WH_REGISTRATION_EXPIRED] = "registration.expired",
	[SA_WH_CALL_REVOKED] = "call.revoked",
};

const char *sa_wh_event_name(enum sa_wh_event e)
{
	return (unsigned)e < SA_WH_EVENT_COUNT ? event_names[e] : NULL;
}

int sa_wh_event_parse(const char *s)
{
	for (int i = 0; i < SA_WH_EVENT_COUNT; i++)
		if (strcmp(s, event_names[i]) == 0)
			return i;
	return -1;
}

/* ---- URLs ---- */

static int why_set(char *why, size_t whylen, const char *text)
{
	if (why != NULL && whylen > 0)
		snprintf(why, whylen, "%s", text);
	return -1;
}

/* A host name of letters, digits, '-' and '.', or an IPv4 literal. */
static bool host_ok(const char *h, size_t n)
{
	if (n == 0 || n >= sizeof(((struct sa_wh_url *)0)->host))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)h[i]) && h[i] != '-' && h[i] != '.')
			return false;
	return true;
}

static bool ipv6_ok(const char *h, size_t n)
{
	if (n == 0 || n > 45)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isxdigit((unsigned char)h[i]) && h[i] != ':' && h[i] != '.')
			return false;
	return true;
}

/* host[:port] of the authority (between "//" and the path). */
static int authority_parse(const char *a, size_t n, struct sa_wh_url *out, char *why, size_t whylen)
{
	const char *host = a, *colon;
	size_t hlen;

	if (memchr(a, '@', n) != NULL)
		return why_set(why, whylen, "url must not carry user information");
	if (n > 0 && a[0] == '[') {
		const char *close = memchr(a, ']', n);
		if (close == NULL || !ipv6_ok(a + 1, (size_t)(close - a - 1)))
			return why_set(why, whylen, "url has a malformed IPv6 address");
		host = a + 1;
		hlen = (size_t)(close - a - 1);
		colon = close + 1 < a + n ? close + 1 : NULL;
		if (colon != NULL && *colon != ':')
			return why_set(why, whylen, "url has a malformed host");
	} else {
		colon = memchr(a, ':', n);
		hlen = colon ? (size_t)(colon - a) : n;
		if (!host_ok(a, hlen))
			return why_set(why, whylen, "url must name a host");
	}
	memcpy(out->host, host, hlen);
	out->host[hlen] = '\0';
	out->port = out->https ? 443 : 80;
	if (colon == NULL)
		return 0;
	size_t plen = (size_t)(a + n - colon - 1);
	unsigned long port = 0;
	for (size_t i = 0; i < plen; i++) {
		if (!isdigit((unsigned char)colon[1 + i]) || port > 65535)
			return why_set(why, whylen, "url has a malformed port");
		port = port * 10 + (unsigned long)(colon[1 + i] - '0');
	}
	if (plen == 0 || port == 0 || port > 65535)
		return why_set(why, whylen, "url has a malformed port");
	out->port = (uint16_t)port;
	return 0;
}

int sa_wh_url_parse(const char *url, struct sa_wh_url *out, char *why, size_t whylen)
{
	size_t len = strlen(url), skip;

	memset(out, 0, sizeof *out);
	if (len >= SA_WH_URL_MAX)
		return why_set(why, whylen, "url is longer than 1023 bytes");
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)url[i] <= 0x20 || (unsigned char)url[i] >= 0x7f)
			return why_set(why, whylen, "url must not contain blanks, control or non-ASCII bytes");
	if (strncasecmp(url, "https://", 8) == 0) {
		out->https = true;
		skip = 8;
	} else if (strncasecmp(url, "http://", 7) == 0) {
		skip = 7;
	} else {
		return why_set(why, whylen, "url must be an http:// or https:// URL");
	}
	if (strchr(url, '#') != NULL)
		return why_set(why, whylen, "url must not carry a fragment");
	const char *a = url + skip;
	size_t alen = strcspn(a, "/?");
	if (authority_parse(a, alen, out, why, whylen) < 0)
		return -1;
	const char *rest = a + alen;
	snprintf(out->path, sizeof out->path, "%s%s", *rest == '/' ? "" : "/", rest);
	return 0;
}

/* ---- signatures ---- */

/* EVP_MAC: HMAC_CTX is deprecated in OpenSSL 3 */
static int hmac_sha256(const char *key, const char *a, size_t alen, const char *b, size_t blen,
                       unsigned char mac[32])
{
	char digest[] = "SHA256";
	OSSL_PARAM params[] = { OSSL_PARAM_construct_utf8_string("digest", digest, 0), OSSL_PARAM_construct_end() };
	EVP_MAC *m = EVP_MAC_fetch(NULL, "HMAC", NULL);
	EVP_MAC_CTX *c = m ? EVP_MAC_CTX_new(m) : NULL;
	size_t n = 0;
	int ok = c != NULL && EVP_MAC_init(c, (const unsigned char *)key, strlen(key), params) == 1 &&
	         EVP_MAC_update(c, (const unsigned char *)a, alen) == 1 &&
	         (blen == 0 || EVP_MAC_update(c, (const unsigned char *)b, blen) == 1) &&
	         EVP_MAC_final(c, mac, &n, 32) == 1 && n == 32;

	EVP_MAC_CTX_free(c);
	EVP_MAC_free(m);
	return ok ? 0 : -1;
}

int sa_wh_sign(const char *secret, int64_t t, const char *body, size_t len, char *out, size_t outlen)
{
	static const char digit[] = "0123456789abcdef";
	unsigned char mac[32];
	unsigned maclen = sizeof mac;
	char ts[24];
	int tn = snprintf(ts, sizeof ts, "%" PRId64 ".", t);
	int ok = hmac_sha256(secret, ts, (size_t)tn, body, len, mac) == 0;

	if (!ok)
		return -1;
	char hex[SA_WH_SIG_HEX + 1];
	for (unsigned i = 0; i < maclen; i++) {
		hex[2 * i] = digit[mac[i] >> 4];
		hex[2 * i + 1] = digit[mac[i] & 15];
	}
	hex[SA_WH_SIG_HEX] = '\0';
	int n = snprintf(out, outlen, "t=%" PRId64 ",v1=%s", t, hex);
	return n > 0 && (size_t)n < outlen ? 0 : -1;
}

/* ---- retries ---- */

int64_t sa_wh_retry_at(unsigned base, unsigned attempts, int64_t created_at, int64_t now)
{
	int64_t delay = base > 0 ? base : 1;

	for (unsigned i = 1; i < attempts && delay < SA_WH_RETRY_MAX_DELAY; i++)
		delay *= 2;
	if (delay > SA_WH_RETRY_MAX_DELAY)
		delay = SA_WH_RETRY_MAX_DELAY;
	int64_t at = now + delay;
	return at > created_at + SA_WH_RETRY_FOR ? -1 : at;
}

/* ---- auth.failed aggregation ---- */

/* Open addressing over twice the trunks it may hold: a probe ends at an
 * empty slot within a few steps, so adding a failure is O(1). */
#define AGG_SLOTS (2 * SA_WH_AGG_TRUNKS)

struct sa_wh_agg {
	struct sa_wh_agg_trunk *slot[AGG_SLOTS];
	unsigned ntrunks;
	uint64_t dropped;
};

struct sa_wh_agg *sa_wh_agg_new(void)
{
	return calloc(1, sizeof(struct sa_wh_agg));
}

static void agg_clear(struct sa_wh_agg *a)
{
	for (unsigned i = 0; i < AGG_SLOTS; i++) {
		free(a->slot[i]);
		a->slot[i] = NULL;
	}
	a->ntrunks = 0;
}

void sa_wh_agg_free(struct sa_wh_agg *a)
{
	if (a == NULL)
		return;
	agg_clear(a);
	free(a);
}

static unsigned agg_hash(const char *s)
{
	uint32_t h = 2166136261u;   /* FNV-1a */

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h % AGG_SLOTS;
}

/* The trunk's entry, made when there is room; NULL otherwise. */
static struct sa_wh_agg_trunk *agg_trunk(struct sa_wh_agg *a, const char *trunk_id)
{
	unsigned i = agg_hash(trunk_id);

	while (a->slot[i] != NULL) {
		if (strcmp(a->slot[i]->trunk_id, trunk_id) == 0)
			return a->slot[i];
		i = (i + 1) % AGG_SLOTS;
	}
	if (a->ntrunks == SA_WH_AGG_TRUNKS || (a->slot[i] = calloc(1, sizeof *a->slot[i])) == NULL)
		return NULL;
	a->ntrunks++;
	snprintf(a->slot[i]->trunk_id, sizeof a->slot[i]->trunk_id, "%s", trunk_id);
	return a->slot[i];
}

/* Space-Saving: counted if tracked, else added, else replaces the least counted. */
static void agg_name(struct sa_wh_agg_name *names, unsigned *n, const char *name)
{
	unsigned least = 0;

	for (unsigned i = 0; i < *n; i++) {
		if (strcmp(names[i].name, name) == 0) {
			names[i].count++;
			return;
		}
		if (names[i].count < names[least].count)
			least = i;
	}
	if (*n < SA_WH_AGG_TRACK)
		least = (*n)++;
	snprintf(names[least].name, sizeof names[least].name, "%s", name);
	names[least].count++;
}

bool sa_wh_agg_add(struct sa_wh_agg *a, const char *trunk_id, const char *source, const char *username, int64_t now)
{
	struct sa_wh_agg_trunk *t = agg_trunk(a, trunk_id);

	if (t == NULL) {
		a->dropped++;
		return false;
	}
	if (t->count++ == 0)
		t->first_at = now;
	t->last_at = now;
	agg_name(t->sources, &t->nsources, source);
	agg_name(t->usernames, &t->nusernames, username);
	return true;
}

static int name_cmp(const void *x, const void *y)
{
	const struct sa_wh_agg_name *a = x, *b = y;

	if (a->count != b->count)
		return a->count > b->count ? -1 : 1;
	return strcmp(a->name, b->name);
}

uint64_t sa_wh_agg_take(struct sa_wh_agg *a, sa_wh_agg_cb cb, void *arg)
{
	uint64_t dropped = a->dropped;

	for (unsigned i = 0; i < AGG_SLOTS; i++) {
		struct sa_wh_agg_trunk *t = a->slot[i];
		if (t == NULL)
			continue;
		qsort(t->sources, t->nsources, sizeof t->sources[0], name_cmp);
		qsort(t->usernames, t->nusernames, sizeof t->usernames[0], name_cmp);
		cb(t, arg);
	}
	agg_clear(a);
	a->dropped = 0;
	return dropped;
}

/* 4 address bytes: not a public unicast address? (RFC 6890: this host,
 * private, shared, loopback, link-local, the documentation networks,
 * benchmarking, multicast and above) */
static bool v4_special(const uint8_t a[4])
{
	return a[0] == 0 || a[0] == 10 || a[0] == 127 || (a[0] == 100 && (a[1] & 0xc0) == 64) ||
	       (a[0] == 169 && a[1] == 254) || (a[0] == 172 && (a[1] & 0xf0) == 16) || (a[0] == 192 && a[1] == 168) ||
	       (a[0] == 192 && a[1] == 0 && (a[2] == 0 || a[2] == 2)) || (a[0] == 192 && a[1] == 88 && a[2] == 99) ||
	       (a[0] == 198 && (a[1] & 0xfe) == 18) || (a[0] == 198 && a[1] == 51 && a[2] == 100) ||
	       (a[0] == 203 && a[1] == 0 && a[2] == 113) || a[0] >= 224;
}

/* 16 address bytes: not a public unicast address? An IPv6 address that
 * carries an IPv4 one (mapped, compatible, NAT64 64:ff9b::/96, 6to4
 * 2002::/16) is what that IPv4 address is: a NAT64 or 6to4 relay takes it
 * there. Teredo, the local-use NAT64 prefix, discard-only, documentation,
 * unique-local, link-local and multicast are special themselves. */
static bool v6_special(const uint8_t a[16])
{
	static const uint8_t zero[12], mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff },
	                                nat64[12] = { 0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0 };
	if (memcmp(a, zero, 12) == 0 || memcmp(a, mapped, 12) == 0 || memcmp(a, nat64, 12) == 0)
		return v4_special(a + 12);                     /* (:: and ::1 are 0.0.0.0 and 0.0.0.1) */
	if (a[0] == 0x20 && a[1] == 0x02)
		return v4_special(a + 2);
	return (a[0] == 0x20 && a[1] == 0x01 && a[2] == 0 && a[3] == 0) ||                    /* Teredo */
	       (a[0] == 0x20 && a[1] == 0x01 && a[2] == 0x0d && a[3] == 0xb8) ||              /* documentation */
	       (a[0] == 0 && a[1] == 0x64 && a[2] == 0xff && a[3] == 0x9b && a[4] == 0 && a[5] == 1) ||
	       (a[0] == 1 && a[1] == 0 && memcmp(a + 2, zero, 6) == 0) ||                       /* 100::/64 */
	       (a[0] & 0xfe) == 0xfc || (a[0] == 0xfe && (a[1] & 0xc0) == 0x80) || a[0] == 0xff;
}

bool sa_wh_address_allowed(const struct sockaddr *sa, const struct sa_cidr *allowed, unsigned n)
{
	bool special;
	if (sa->sa_family == AF_INET) {
		special = v4_special((const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr);
	} else if (sa->sa_family == AF_INET6) {
		special = v6_special(((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr);
	} else {
		return false;
	}
	if (!special)
		return true;
	for (unsigned i = 0; i < n; i++)
		if (sa_cidr_contains(&allowed[i], sa))
			return true;
	return false;
}
