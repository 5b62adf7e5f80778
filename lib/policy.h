/* policy.h: a trunk's carrier controls: channels, call rate, source addresses, TLS only, algorithms. */
#ifndef SA_POLICY_H
#define SA_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <jansson.h>

#include "digest.h"

#define SA_POLICY_MAX_SOURCES      64
#define SA_POLICY_MAX_CHANNELS     1000000
#define SA_POLICY_MAX_RATE         10000     /* new calls per second */
#define SA_POLICY_NO_LIMIT         (-1)

/* An IPv4 or IPv6 network: family, address (IPv4 in the first 4 bytes), prefix length. */
struct sa_cidr {
	uint8_t family;                /* AF_INET or AF_INET6 */
	uint8_t prefix;
	uint8_t addr[16];
};

/* A trunk's controls. A fixed record: the store keeps it as it is. The
 * defaults (sa_policy_default) limit nothing. */
struct sa_trunk_policy {
	int64_t max_concurrent_calls;        /* SA_POLICY_NO_LIMIT, or 0..SA_POLICY_MAX_CHANNELS */
	int64_t max_calls_per_second_milli;  /* SA_POLICY_NO_LIMIT, or calls per 1000 s: 0.5/s is 500 */
	uint32_t nsources;                   /* 0: any source */
	struct sa_cidr sources[SA_POLICY_MAX_SOURCES];
	bool ip_authentication;              /* sources in the list need no digest */
	bool require_tls;
	uint8_t nalgs;                       /* 0: the daemon's [auth] algorithms */
	uint8_t algs[SA_ALG_COUNT];          /* enum sa_digest_alg, in challenge order */
};

void sa_policy_default(struct sa_trunk_policy *p);

/* Applies a PATCH body (a JSON object with any of the fields) to p. On a
 * refusal p is unchanged and field (SA_POLICY_FIELD_MAX) names the field,
 * why the rule it breaks ("must be an integer from 0 to 1000000 or null").
 * 0 or -1. */
#define SA_POLICY_FIELD_MAX 32
int sa_policy_patch(struct sa_trunk_policy *p, const json_t *patch, char *field, char *why, size_t whylen);

/* The fields as GET shows them (null where nothing is limited). Adds them to obj. 0 or -1. */
int sa_policy_to_json(const struct sa_trunk_policy *p, json_t *obj);

/* "10.0.0.0/8", "2001:db8::/32", or an address alone (the whole prefix).
 * Host bits must be zero. 0 or -1. */
int sa_cidr_parse(const char *text, struct sa_cidr *out);
/* Into out (INET6_ADDRSTRLEN + 4), as sa_cidr_parse reads it. */
void sa_cidr_format(const struct sa_cidr *c, char *out, size_t outlen);
bool sa_cidr_contains(const struct sa_cidr *c, const struct sockaddr *sa);

/* May a request from sa reach this trunk at all? (an empty list: yes) */
bool sa_policy_source_allowed(const struct sa_trunk_policy *p, const struct sockaddr *sa);

/* A token bucket for new calls: refilled at the trunk's rate, holding at
 * most one second of calls (at least one call). */
struct sa_rate_bucket {
	int64_t tokens_milli;          /* calls x 1000 */
	int64_t last_ms;
	bool primed;
};
/* Takes one call's token at now_ms; false when the rate is exceeded. A
 * policy without a rate always allows. */
bool sa_policy_rate_take(const struct sa_trunk_policy *p, struct sa_rate_bucket *b, int64_t now_ms);

#endif
