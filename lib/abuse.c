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
	uint64_t vtrunk[4];             /* the trunks it authenticated for (keys), while vouched_until */
	uint8_t vnext;                  /* the slot the next new one takes */
	uint32_t other_failures;        /* vouched: failures against any other trunk, in their window */
	uint64_t other_window_start;
	uint64_t other_banned_until;    /* ... refused every other trunk until then */
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

size_t sa_abuse_source(const void *addr, size_t len, unsigned char key[16])
{
	size_t n = len == 16 ? 8 : len > 16 ? 16 : len;
	memset(key, 0, 16);
	memcpy(key, addr, n);
	return n;
}

uint64_t sa_abuse_trunk_key(const char *trunk_id)
{
	if (!trunk_id || !*trunk_id)
		return 0;
	uint64_t h = 1469598103934665603ULL;
	for (; *trunk_id; trunk_id++)
		h = (h ^ (unsigned char)*trunk_id) * 1099511628211ULL;
	return h | 1;
}

static bool vouched_for(const struct entry *e, uint64_t trunk)
{
	for (size_t i = 0; trunk && i < sizeof(e->vtrunk) / sizeof(e->vtrunk[0]); i++)
		if (e->vtrunk[i] == trunk)
			return true;
	return false;
}

/* Count a failure in a window of cfg->window seconds; true at max_failures. */
static bool count_in(uint32_t *failures, uint64_t *window_start, const struct sa_abuse_cfg *cfg, uint64_t now)
{
	if (now - *window_start >= cfg->window) {
		*window_start = now;
		*failures = 0;
	}
	if (++*failures < cfg->max_failures)
		return false;
	*failures = 0;
	return true;
}

static enum sa_abuse_verdict failure(struct sa_abuse *a, const struct sa_abuse_cfg *cfg, const void *addr,
                                     size_t len, uint64_t trunk, uint64_t now)
{
	struct entry *e = find(a, addr, len);
	if (!e && !(e = claim(a, addr, len, now)))
		return SA_ABUSE_COUNTED;
	e->last_seen = now;
	if (e->banned_until > now)
		return SA_ABUSE_COUNTED;
	if (e->vouched_until > now) {
		if (vouched_for(e, trunk) || e->other_banned_until > now)
			return SA_ABUSE_COUNTED;
		if (!count_in(&e->other_failures, &e->other_window_start, cfg, now))
			return SA_ABUSE_COUNTED;
		e->other_banned_until = now + cfg->ban_time;
		return SA_ABUSE_BAN_OTHERS;
	}
	if (!count_in(&e->failures, &e->window_start, cfg, now))
		return SA_ABUSE_COUNTED;
	e->banned_until = now + cfg->ban_time;
	return SA_ABUSE_BAN;
}

enum sa_abuse_verdict sa_abuse_failure(struct sa_abuse *a, const struct sa_abuse_cfg *cfg, const void *addr,
                                       size_t len, uint64_t trunk, uint64_t now)
{
	if (cfg->max_failures == 0 || len > 16)
		return SA_ABUSE_COUNTED;
	lock(a);
	enum sa_abuse_verdict v = failure(a, cfg, addr, len, trunk, now);
	unlock(a);
	return v;
}

void sa_abuse_vouch(struct sa_abuse *a, const void *addr, size_t len, uint64_t trunk, uint64_t now,
                    uint64_t until)
{
	if (len > 16)
		return;
	lock(a);
	struct entry *e = find(a, addr, len);
	if (e || (e = claim(a, addr, len, now))) {
		e->last_seen = now;
		e->banned_until = 0;
		e->failures = 0;
		if (e->vouched_until <= now) {   /* a new vouching: none of the old trunks, no old lockout */
			memset(e->vtrunk, 0, sizeof(e->vtrunk));
			e->other_failures = 0;
			e->other_banned_until = 0;
		}
		if (trunk && !vouched_for(e, trunk)) {
			e->vtrunk[e->vnext] = trunk;
			e->vnext = (uint8_t)((e->vnext + 1) % (sizeof(e->vtrunk) / sizeof(e->vtrunk[0])));
		}
		if (until > e->vouched_until)
			e->vouched_until = until;
	}
	unlock(a);
}

bool sa_abuse_refused(const struct sa_abuse *a, const void *addr, size_t len, uint64_t trunk, uint64_t now)
{
	if (len > 16)
		return false;
	lock(a);
	const struct entry *e = find(a, addr, len);
	bool refused = e && e->vouched_until > now && e->other_banned_until > now && !vouched_for(e, trunk);
	unlock(a);
	return refused;
}

void sa_abuse_each_ban(const struct sa_abuse *a, uint64_t now, sa_abuse_ban_cb cb, void *arg)
{
	lock(a);
	for (size_t i = 0; i < a->slots; i++) {
		const struct entry *e = &a->e[i];
		if (e->len && e->banned_until > now)
			cb(e->addr, e->len, e->banned_until, false, arg);
		else if (e->len && e->vouched_until > now && e->other_banned_until > now)
			cb(e->addr, e->len, e->other_banned_until, true, arg);
	}
	unlock(a);
}

bool sa_abuse_unban(struct sa_abuse *a, const void *addr, size_t len, uint64_t now)
{
	if (len > 16)
		return false;
	lock(a);
	struct entry *e = find(a, addr, len);
	bool was = e && (e->banned_until > now || (e->vouched_until > now && e->other_banned_until > now));
	if (e) {
		e->banned_until = 0;
		e->other_banned_until = 0;
		e->failures = 0;
		e->other_failures = 0;
	}
	unlock(a);
	return was;
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
