/* abuse.c: a bounded open-addressing table of sources with failure windows and ban expiries. */
#include "abuse.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define PROBE 16   /* slots looked at per source: bounds the cost of every lookup */

struct entry {
	unsigned char addr[16];
	uint8_t len;
	uint32_t failures;
	uint64_t window_start;
	uint64_t banned_until;
	uint64_t last_seen;
	uint64_t vouched_until;
};

/* Shared by the SIP workers: every call holds the lock (short, bounded work). */
struct sa_abuse {
	size_t slots;
	struct entry *e;
	pthread_mutex_t lock;
};

static void lock(const struct sa_abuse *a)
{
	pthread_mutex_lock(&((struct sa_abuse *)a)->lock);
}

static void unlock(const struct sa_abuse *a)
{
	pthread_mutex_unlock(&((struct sa_abuse *)a)->lock);
}

struct sa_abuse *sa_abuse_new(size_t slots)
{
	struct sa_abuse *a = calloc(1, sizeof(*a));
	if (!a)
		return NULL;
	a->slots = slots < PROBE ? PROBE : slots;
	a->e = calloc(a->slots, sizeof(*a->e));
	if (!a->e || pthread_mutex_init(&a->lock, NULL) != 0) {
		free(a->e);
		free(a);
		return NULL;
	}
	return a;
}

void sa_abuse_free(struct sa_abuse *a)
{
	if (!a)
		return;
	pthread_mutex_destroy(&a->lock);
	free(a->e);
	free(a);
}

static size_t slot_of(const struct sa_abuse *a, const void *addr, size_t len)
{
	uint64_t h = 1469598103934665603ULL;
	for (size_t i = 0; i < len; i++)
		h = (h ^ ((const unsigned char *)addr)[i]) * 1099511628211ULL;
	return (size_t)(h % a->slots);
}

static struct entry *find(const struct sa_abuse *a, const void *addr, size_t len)
{
	size_t s = slot_of(a, addr, len);
	for (size_t i = 0; i < PROBE; i++) {
		struct entry *e = &a->e[(s + i) % a->slots];
		if (e->len == len && memcmp(e->addr, addr, len) == 0)
			return e;
	}
	return NULL;
}

/* A slot for a new source: an empty one, else the least recently seen that is not banned. */
static struct entry *claim(struct sa_abuse *a, const void *addr, size_t len, uint64_t now)
{
	size_t s = slot_of(a, addr, len);
	struct entry *victim = NULL;
	for (size_t i = 0; i < PROBE; i++) {
		struct entry *e = &a->e[(s + i) % a->slots];
		if (e->len == 0) {
			victim = e;
			break;
		}
		if (e->banned_until <= now && e->vouched_until <= now && (!victim || e->last_seen < victim->last_seen))
			victim = e;
	}
	if (!victim)
		return NULL;   /* every slot nearby holds a live ban: keep them */
	memset(victim, 0, sizeof(*victim));
	memcpy(victim->addr, addr, len);
	victim->len = (uint8_t)len;
	return victim;
}

bool sa_abuse_banned(const struct sa_abuse *a, const struct sa_abuse_cfg *cfg, const void *addr,
                     size_t len, uint64_t now)
{
	if (cfg->max_failures == 0 || len > 16)
		return false;
	lock(a);
	const struct entry *e = find(a, addr, len);
	bool banned = e && e->banned_until > now && e->vouched_until <= now;
	unlock(a);
	return banned;
}

static bool failure(struct sa_abuse *a, const struct sa_abuse_cfg *cfg, const void *addr, size_t len,
                    uint64_t now)
{
	struct entry *e = find(a, addr, len);
	if (!e && !(e = claim(a, addr, len, now)))
		return false;
	e->last_seen = now;
	if (e->banned_until > now || e->vouched_until > now)
		return false;
	if (now - e->window_start >= cfg->window) {
		e->window_start = now;
		e->failures = 0;
	}
	if (++e->failures < cfg->max_failures)
		return false;
	e->banned_until = now + cfg->ban_time;
	e->failures = 0;
	return true;
}

bool sa_abuse_failure(struct sa_abuse *a, const struct sa_abuse_cfg *cfg, const void *addr, size_t len,
                      uint64_t now)
{
	if (cfg->max_failures == 0 || len > 16)
		return false;
	lock(a);
	bool banned = failure(a, cfg, addr, len, now);
	unlock(a);
	return banned;
}

void sa_abuse_vouch(struct sa_abuse *a, const void *addr, size_t len, uint64_t now, uint64_t until)
{
	if (len > 16)
		return;
	lock(a);
	struct entry *e = find(a, addr, len);
	if (e || (e = claim(a, addr, len, now))) {
		e->last_seen = now;
		e->banned_until = 0;
		e->failures = 0;
		if (until > e->vouched_until)
			e->vouched_until = until;
	}
	unlock(a);
}

unsigned sa_abuse_banned_count(const struct sa_abuse *a, uint64_t now)
{
	unsigned n = 0;
	lock(a);
	for (size_t i = 0; i < a->slots; i++)
		n += a->e[i].len && a->e[i].banned_until > now;
	unlock(a);
	return n;
}
