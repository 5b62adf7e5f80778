/* apilimit.c: token buckets per API key hash in a fixed table; time comes in as now_ms. */
#include "apilimit.h"

#include <string.h>

#include <openssl/sha.h>

void sa_apilimit_init(struct sa_apilimit *l)
{
	memset(l, 0, sizeof *l);
}

void sa_apilimit_key(const char *key, size_t len, unsigned char hash[SA_APILIMIT_HASH])
{
	SHA256((const unsigned char *)key, len, hash);
}

static size_t slot_index(const unsigned char hash[SA_APILIMIT_HASH])
{
	uint64_t h = 0;

	for (int i = 0; i < 8; i++)   /* a SHA-256: any 8 bytes are as good as a hash function */
		h = h << 8 | hash[i];
	return (size_t)(h % SA_APILIMIT_KEYS);
}

/* The bucket's tokens at now_ms, refilled at per_second and capped at burst. */
static int64_t refilled(const struct sa_apilimit_slot *s, unsigned per_second, unsigned burst, int64_t now_ms)
{
	int64_t cap = (int64_t)burst * 1000, dt = now_ms - s->last_ms;

	if (dt < 0)
		dt = 0;
	if (dt > cap / per_second + 1)   /* long enough to be full: no overflow below */
		return cap;
	int64_t t = s->tokens_milli + dt * per_second;
	return t > cap ? cap : t;
}

/* The key's slot, or the one it takes over in its probe window: an empty
 * one, else the one with the most tokens, whose key loses least by being
 * forgotten (a refilled bucket, none at all); a key drained by a burst is
 * the last to go. */
static struct sa_apilimit_slot *slot_find(struct sa_apilimit *l, const unsigned char hash[SA_APILIMIT_HASH],
                                          unsigned per_second, unsigned burst, int64_t now_ms)
{
	size_t at = slot_index(hash);
	struct sa_apilimit_slot *take = NULL;
	int64_t most = -1;

	for (size_t i = 0; i < SA_APILIMIT_PROBE; i++) {
		struct sa_apilimit_slot *s = &l->slot[(at + i) % SA_APILIMIT_KEYS];
		if (!s->used) {
			if (most < INT64_MAX) {
				take = s;
				most = INT64_MAX;
			}
			continue;
		}
		if (memcmp(s->hash, hash, SA_APILIMIT_HASH) == 0)
			return s;
		int64_t t = refilled(s, per_second, burst, now_ms);
		if (t > most) {
			take = s;
			most = t;
		}
	}
	memcpy(take->hash, hash, SA_APILIMIT_HASH);
	take->tokens_milli = (int64_t)burst * 1000;
	take->last_ms = now_ms;
	take->used = 1;
	return take;
}

unsigned sa_apilimit_take(struct sa_apilimit *l, const unsigned char hash[SA_APILIMIT_HASH], unsigned per_second,
                          unsigned burst, int64_t now_ms)
{
	if (per_second == 0)
		return 0;
	if (burst == 0)
		burst = 1;
	struct sa_apilimit_slot *s = slot_find(l, hash, per_second, burst, now_ms);
	s->tokens_milli = refilled(s, per_second, burst, now_ms);
	if (now_ms > s->last_ms)
		s->last_ms = now_ms;
	if (s->tokens_milli >= 1000) {
		s->tokens_milli -= 1000;
		return 0;
	}
	l->refused++;
	int64_t wait_ms = (1000 - s->tokens_milli + per_second - 1) / per_second;
	return (unsigned)((wait_ms + 999) / 1000 > 0 ? (wait_ms + 999) / 1000 : 1);
}

unsigned sa_apilimit_keys(const struct sa_apilimit *l)
{
	unsigned n = 0;

	for (size_t i = 0; i < SA_APILIMIT_KEYS; i++)
		n += l->slot[i].used != 0;
	return n;
}
