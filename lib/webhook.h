/* webhook.h: webhook rules: event names, target URLs, signatures, the retry schedule, auth.failed aggregation. */
#ifndef SA_WEBHOOK_H
#define SA_WEBHOOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sa_limits.h"

/* The events a webhook may subscribe to; a webhook keeps them as a bit mask. */
enum sa_wh_event {
	SA_WH_AUTH_FAILED = 0,        /* per trunk per aggregation window: count, top sources and usernames */
	SA_WH_SOURCE_BANNED,
	SA_WH_CREDENTIAL_CREATED,
	SA_WH_CREDENTIAL_DELETED,
	SA_WH_CREDENTIAL_ROTATED,
	SA_WH_REGISTRATION_CREATED,
	SA_WH_REGISTRATION_EXPIRED,
	SA_WH_CALL_REVOKED,
	SA_WH_EVENT_COUNT
};
#define SA_WH_EVENT_NAME_MAX 32

/* "auth.failed" ...; NULL for a value out of range. */
const char *sa_wh_event_name(enum sa_wh_event e);
/* The event named s, or -1. */
int sa_wh_event_parse(const char *s);

/* A target URL: http:// or https://, a host (name, IPv4 or [IPv6]), an
 * optional port, a path with an optional query (default "/"). No user
 * information, no fragment, no blanks or control bytes, at most
 * SA_WH_URL_MAX - 1 bytes. */
#define SA_WH_URL_MAX 1024
struct sa_wh_url {
	bool https;
	char host[256];               /* without the brackets of an IPv6 literal */
	uint16_t port;                /* 80 or 443 when the URL names none */
	char path[SA_WH_URL_MAX];     /* path and query, starting with '/' */
};
/* 0, or -1 with a reason for the client in why. */
int sa_wh_url_parse(const char *url, struct sa_wh_url *out, char *why, size_t whylen);

/*
 * Signatures. Each delivery carries
 *     Sipauthd-Signature: t=<unix seconds>,v1=<hex>
 * where hex is the lower-case hex of HMAC-SHA256, keyed with the webhook's
 * secret (the whole "whsec_..." string as ASCII bytes), over the bytes
 * "<t>.<body>": the decimal timestamp, one '.', then the request body
 * exactly as sent. A receiver recomputes it, compares in constant time and
 * refuses a t too far from its clock (replays).
 */
#define SA_WH_SECRET_PREFIX "whsec_"
#define SA_WH_SECRET_MAX    64        /* "whsec_" + 43 base64url characters (32 random bytes) + NUL */
#define SA_WH_SIG_HEX       64
#define SA_WH_SIG_HEADER_MAX (2 + 20 + 4 + SA_WH_SIG_HEX + 1)
/* The header's value into out (SA_WH_SIG_HEADER_MAX). 0 or -1. */
int sa_wh_sign(const char *secret, int64_t t, const char *body, size_t len, char *out, size_t outlen);

/*
 * Retries. Attempt n (1 = the first) failed: the next one is
 * base * 2^(n-1) seconds later, at most SA_WH_RETRY_MAX_DELAY; no attempt is
 * made later than SA_WH_RETRY_FOR seconds after the delivery was created.
 * With the default base of 30 s: 30 s, 1, 2, 4, 8, 16, 32 min, then hourly;
 * 30 attempts over the day.
 */
#define SA_WH_RETRY_BASE_DEFAULT 30
#define SA_WH_RETRY_MAX_DELAY    3600
#define SA_WH_RETRY_FOR          86400
/* When to try again after failed attempt number attempts (>= 1), or -1
 * when the delivery has run out of time and is failed for good. */
int64_t sa_wh_retry_at(unsigned base, unsigned attempts, int64_t created_at, int64_t now);

/*
 * auth.failed aggregation: the SIP path adds each failure of a known trunk;
 * once per window the daemon takes every trunk's summary and sends one
 * event per trunk. Bounded: at most SA_WH_AGG_TRUNKS trunks per window
 * (failures of others are counted in dropped), and per trunk the
 * SA_WH_AGG_TRACK most frequent sources and usernames, kept with the
 * Space-Saving rule (a new name takes the place of the least counted one
 * and inherits its count), which finds every name above 1/TRACK of the
 * failures; counts of names that took a place may be overstated by what
 * they inherited.
 */
#define SA_WH_AGG_TRUNKS 256
#define SA_WH_AGG_TRACK  16
#define SA_WH_AGG_TOP    5            /* reported in the event */

struct sa_wh_agg_name {
	char name[SA_USERNAME_MAX + 1];   /* a source address (no port) or a username as tried */
	uint64_t count;
};
struct sa_wh_agg_trunk {
	char trunk_id[SA_ID_MAX];
	uint64_t count;
	int64_t first_at, last_at;
	struct sa_wh_agg_name sources[SA_WH_AGG_TRACK];
	struct sa_wh_agg_name usernames[SA_WH_AGG_TRACK];
	unsigned nsources, nusernames;
};
struct sa_wh_agg;

struct sa_wh_agg *sa_wh_agg_new(void);
void sa_wh_agg_free(struct sa_wh_agg *a);
/* One failure. false when it was not counted (table full: see dropped). */
bool sa_wh_agg_add(struct sa_wh_agg *a, const char *trunk_id, const char *source, const char *username, int64_t now);
/* cb for each trunk with failures since the last take, its names sorted by
 * count (most first); then the window starts again empty. Returns and
 * resets the failures that found no room. */
typedef void (*sa_wh_agg_cb)(const struct sa_wh_agg_trunk *t, void *arg);
uint64_t sa_wh_agg_take(struct sa_wh_agg *a, sa_wh_agg_cb cb, void *arg);

/* May a delivery go to this address? Public unicast addresses yes; loopback,
 * private (RFC 1918, fc00::/7), link-local, shared (100.64.0.0/10),
 * unspecified, multicast and reserved ones only when one of the n networks
 * in allowed holds it ([webhooks] private_targets): a customer's URL must
 * not reach the edge host's own services or the carrier's inside network.
 * IPv4-mapped IPv6 addresses are judged as the IPv4 address. */
struct sockaddr;
struct sa_cidr;
bool sa_wh_address_allowed(const struct sockaddr *sa, const struct sa_cidr *allowed, unsigned n);

#endif
