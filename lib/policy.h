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

/* ---- admission ---- */

enum sa_policy_verdict {
	SA_POLICY_ADMIT = 0,
	SA_POLICY_TLS_REQUIRED,        /* 403 before any challenge */
	SA_POLICY_SOURCE_NOT_ALLOWED,  /* 403 before any challenge */
	SA_POLICY_CHANNEL_LIMIT,       /* 503 with Retry-After and a Reason */
	SA_POLICY_RATE_LIMIT,          /* 503 with Retry-After: 1 */
	SA_POLICY_VERDICT_COUNT
};
/* "admit", "tls_required", "source_not_allowed", "channel_limit", "rate_limit" */
const char *sa_policy_verdict_name(enum sa_policy_verdict v);

/* Before authentication: may a request for the trunk arrive this way at all?
 * TLS first (an allowed address on UDP is still refused), then the source. */
enum sa_policy_verdict sa_policy_check_arrival(const struct sa_trunk_policy *p, bool over_tls,
                                               const struct sockaddr *src);
/* Does the trunk take this source without a digest? (ip_authentication,
 * and the source in allowed_sources.) */
bool sa_policy_ip_authenticates(const struct sa_trunk_policy *p, const struct sockaddr *src);

/* What the daemon counts per trunk, on one node: channels held by calls up
 * or ringing, in either direction, and the call-rate bucket. */
struct sa_trunk_usage {
	char trunk_id[64];
	unsigned channels;
	struct sa_rate_bucket rate;
	uint64_t refused[SA_POLICY_VERDICT_COUNT];
	struct sa_trunk_usage *next;
};
struct sa_trunk_table;
struct sa_trunk_table *sa_trunk_table_new(void);
void sa_trunk_table_free(struct sa_trunk_table *t);
/* The trunk's usage, made on first use; NULL when out of memory or the id is too long. */
struct sa_trunk_usage *sa_trunk_usage(struct sa_trunk_table *t, const char *trunk_id);
/* Each trunk's usage, for metrics. */
void sa_trunk_table_each(struct sa_trunk_table *t, void (*cb)(const struct sa_trunk_usage *u, void *arg), void *arg);

/* A new call (out-of-dialog INVITE) for the trunk: within max_concurrent_calls
 * and, when rate_limited (calls from the customer), max_calls_per_second? On
 * SA_POLICY_ADMIT it holds a channel until sa_policy_release. A refusal is
 * counted in u->refused. */
enum sa_policy_verdict sa_policy_admit_call(const struct sa_trunk_policy *p, struct sa_trunk_usage *u,
                                            bool rate_limited, int64_t now_ms);
/* A call that exists whatever the limits say (restored at start, or set up
 * before a limit was lowered) holds a channel too. */
void sa_policy_hold(struct sa_trunk_usage *u);
/* A fleet of `nodes` live nodes enforces a trunk's limits without talking:
 * each takes its share, the limit divided by the nodes and rounded up (a
 * limit above 0 leaves each node at least 1). Calls spread evenly by DNS
 * stay within the limit; a node that gets more than its share refuses
 * early, and rounding up lets the fleet as a whole go over by at most
 * nodes - 1 channels (or calls per second). nodes 0 or 1: unchanged. */
void sa_policy_share(struct sa_trunk_policy *p, unsigned nodes);
void sa_policy_release(struct sa_trunk_usage *u);

/* The same on a table several threads share (the SIP workers): each takes
 * the table's lock. sa_trunk_admit: -1 out of memory (nothing held), else 0
 * with the verdict in *v. */
int sa_trunk_admit(struct sa_trunk_table *t, const char *trunk_id, const struct sa_trunk_policy *p,
                   bool rate_limited, int64_t now_ms, enum sa_policy_verdict *v);
void sa_trunk_hold(struct sa_trunk_table *t, const char *trunk_id);
void sa_trunk_release(struct sa_trunk_table *t, const char *trunk_id);

#endif
