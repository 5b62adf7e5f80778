/* apilimit.h: request budgets per API key: a token bucket per key hash, in a bounded table. */
#ifndef SA_APILIMIT_H
#define SA_APILIMIT_H

#include <stddef.h>
#include <stdint.h>

/*
 * A bucket is found by the SHA-256 of the key as presented (sa_apilimit_key),
 * so that a key is limited before anyone knows whether it is valid, and the
 * key itself is never kept. The table holds SA_APILIMIT_KEYS buckets; a key
 * lives in one of SA_APILIMIT_PROBE slots from its hash. A new key takes an
 * empty slot there, else the one with the most tokens (a refilled bucket
 * allows as much as a forgotten one): memory and work per request stay
 * constant whatever number of keys a client makes up, a forgotten key only
 * starts again with a full bucket, and a key drained by a burst is the last
 * one forgotten.
 */
#define SA_APILIMIT_KEYS  4096
#define SA_APILIMIT_PROBE 8
#define SA_APILIMIT_HASH  32

struct sa_apilimit_slot {
	unsigned char hash[SA_APILIMIT_HASH];
	int64_t tokens_milli;      /* requests x 1000 */
	int64_t last_ms;
	int used;
};

struct sa_apilimit {
	uint64_t refused;          /* for /metrics */
	struct sa_apilimit_slot slot[SA_APILIMIT_KEYS];
};

void sa_apilimit_init(struct sa_apilimit *l);

/* The bucket's name for a presented key (the key is not kept). */
void sa_apilimit_key(const char *key, size_t len, unsigned char hash[SA_APILIMIT_HASH]);

/* One request with key hash at now_ms, against per_second requests a second
 * and a bucket of burst. 0: allowed. Else refused (counted): the whole
 * seconds until one request would be allowed, at least 1, for Retry-After.
 * per_second 0: no limit. */
unsigned sa_apilimit_take(struct sa_apilimit *l, const unsigned char hash[SA_APILIMIT_HASH], unsigned per_second,
                          unsigned burst, int64_t now_ms);

/* How many keys have a bucket (for /metrics). */
unsigned sa_apilimit_keys(const struct sa_apilimit *l);

#endif
