/* pace.c: a queue per destination, each with a token bucket; destinations exist only while they have a queue. */
#include "pace.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct sa_pace_item {
	struct sa_pace_item *prev, *next;
	struct pace_dest *dest;
	void *payload;
};

struct pace_dest {
	struct pace_dest *next;
	unsigned char key[SA_PACE_KEY_MAX];
	size_t klen;
	double tokens;
	uint64_t last_ms;
	bool fresh;                    /* not run yet: a full bucket */
	struct sa_pace_item *head, *tail;
	size_t count;                  /* queued here */
};

struct sa_pacer {
	struct pace_dest *dests;
	size_t queued, ndests;
	struct sa_pace_shared *shared;   /* the allowances, when several pacers share them */
};

/* A destination's allowance, shared: one per destination whoever queues for it. */
struct shared_bucket {
	struct shared_bucket *next;
	unsigned char key[SA_PACE_KEY_MAX];
	size_t klen;
	double tokens;
	uint64_t last_ms;
};

struct sa_pace_shared {
	pthread_mutex_t mu;
	struct shared_bucket *buckets;
	size_t n;
};

struct sa_pacer *sa_pacer_new(void)
{
	return calloc(1, sizeof(struct sa_pacer));
}

static void dest_free(struct pace_dest *d)
{
	for (struct sa_pace_item *it = d->head, *next; it; it = next) {
		next = it->next;
		free(it);
	}
	free(d);
}

void sa_pacer_free(struct sa_pacer *p)
{
	if (!p)
		return;
	for (struct pace_dest *d = p->dests, *next; d; d = next) {
		next = d->next;
		dest_free(d);
	}
	free(p);
}

/* A few destinations at a time (a credential's PBX and gateways): a list. */
static struct pace_dest *dest_get(struct sa_pacer *p, const void *key, size_t klen)
{
	for (struct pace_dest *d = p->dests; d; d = d->next)
		if (d->klen == klen && memcmp(d->key, key, klen) == 0)
			return d;
	struct pace_dest *d = calloc(1, sizeof(*d));
	if (!d)
		return NULL;
	memcpy(d->key, key, klen);
	d->klen = klen;
	d->fresh = true;
	d->next = p->dests;
	p->dests = d;
	p->ndests++;
	return d;
}

struct sa_pace_item *sa_pacer_push(struct sa_pacer *p, const void *key, size_t klen, void *payload)
{
	if (klen == 0 || klen > SA_PACE_KEY_MAX)
		return NULL;
	struct sa_pace_item *it = calloc(1, sizeof(*it));
	struct pace_dest *d = it ? dest_get(p, key, klen) : NULL;
	if (!d) {
		free(it);
		return NULL;
	}
	it->dest = d;
	it->payload = payload;
	it->prev = d->tail;
	if (d->tail)
		d->tail->next = it;
	else
		d->head = it;
	d->tail = it;
	d->count++;
	p->queued++;
	return it;
}

static void unlink_item(struct sa_pacer *p, struct sa_pace_item *it)
{
	struct pace_dest *d = it->dest;
	if (it->prev)
		it->prev->next = it->next;
	else
		d->head = it->next;
	if (it->next)
		it->next->prev = it->prev;
	else
		d->tail = it->prev;
	d->count--;
	p->queued--;
}

void sa_pacer_cancel(struct sa_pacer *p, struct sa_pace_item *it)
{
	if (!it)
		return;
	unlink_item(p, it);
	free(it);   /* an emptied destination goes at the next run */
}

struct sa_pace_shared *sa_pace_shared_new(void)
{
	struct sa_pace_shared *s = calloc(1, sizeof(*s));
	if (s && pthread_mutex_init(&s->mu, NULL) != 0) {
		free(s);
		return NULL;
	}
	return s;
}

void sa_pace_shared_free(struct sa_pace_shared *s)
{
	if (!s)
		return;
	for (struct shared_bucket *b = s->buckets, *next; b; b = next) {
		next = b->next;
		free(b);
	}
	pthread_mutex_destroy(&s->mu);
	free(s);
}

void sa_pacer_share(struct sa_pacer *p, struct sa_pace_shared *s)
{
	p->shared = s;
}

size_t sa_pace_shared_destinations(struct sa_pace_shared *s)
{
	pthread_mutex_lock(&s->mu);
	size_t n = s->n;
	pthread_mutex_unlock(&s->mu);
	return n;
}

/* A bucket refilled to now (a new one is full); false when it is full. */
static bool refill(double *tokens, uint64_t *last_ms, unsigned rate, double burst, uint64_t now_ms)
{
	if (now_ms > *last_ms) {   /* never back: two workers' clocks are read a moment apart */
		*tokens += (double)(now_ms - *last_ms) * rate / 1000.0;
		if (*tokens > burst)
			*tokens = burst;
		*last_ms = now_ms;
	}
	return *tokens < burst;
}

/* Up to `want` sends to the destination key, from the shared allowance.
 * Buckets that are full again go (a new one starts full: the same). */
static size_t shared_take(struct sa_pace_shared *s, const unsigned char *key, size_t klen, size_t want,
                          unsigned rate, double burst, uint64_t now_ms)
{
	size_t got = 0;
	bool found = false;
	pthread_mutex_lock(&s->mu);
	for (struct shared_bucket **pp = &s->buckets; *pp;) {
		struct shared_bucket *b = *pp;
		bool ours = b->klen == klen && memcmp(b->key, key, klen) == 0;
		bool partial = refill(&b->tokens, &b->last_ms, rate, burst, now_ms);
		if (ours) {
			found = true;
			got = b->tokens < (double)want ? (size_t)b->tokens : want;
			b->tokens -= (double)got;
			partial = b->tokens < burst;
		}
		if (!partial) {
			*pp = b->next;
			s->n--;
			free(b);
			continue;
		}
		pp = &b->next;
	}
	struct shared_bucket *b;
	if (!found && want > 0 && (b = calloc(1, sizeof(*b)))) {
		memcpy(b->key, key, klen);
		b->klen = klen;
		got = burst < (double)want ? (size_t)burst : want;
		b->tokens = burst - (double)got;
		b->last_ms = now_ms;
		b->next = s->buckets;
		s->buckets = b;
		s->n++;
	}
	pthread_mutex_unlock(&s->mu);
	return got;
}

/* How many of d's queue may go now, from its own allowance or the shared one. */
static size_t allowance(struct sa_pacer *p, struct pace_dest *d, size_t queued, unsigned rate, double burst,
                        uint64_t now_ms)
{
	if (p->shared)
		return queued ? shared_take(p->shared, d->key, d->klen, queued, rate, burst, now_ms) : 0;
	if (d->fresh) {
		d->tokens = burst;
		d->fresh = false;
		d->last_ms = now_ms;
	} else {
		refill(&d->tokens, &d->last_ms, rate, burst, now_ms);
	}
	size_t n = d->tokens < (double)queued ? (size_t)d->tokens : queued;
	d->tokens -= (double)n;
	return n;
}

size_t sa_pacer_run(struct sa_pacer *p, unsigned rate, uint64_t now_ms, void (*cb)(void *payload, void *arg),
                    void *arg)
{
	double burst = rate / 100.0 < 1.0 ? 1.0 : rate / 100.0;
	for (struct pace_dest **pp = &p->dests; *pp;) {
		struct pace_dest *d = *pp;
		for (size_t n = allowance(p, d, d->count, rate, burst, now_ms); n > 0 && d->head; n--) {
			struct sa_pace_item *it = d->head;
			void *payload = it->payload;
			unlink_item(p, it);
			free(it);
			cb(payload, arg);
		}
		if (!d->head && (p->shared || d->tokens >= burst)) {
			/* nothing queued and the bucket full again: forget it (a new
			 * queue starts with a full bucket, which is then the same) */
			*pp = d->next;
			p->ndests--;
			free(d);
			continue;
		}
		pp = &d->next;
	}
	return p->queued;
}

size_t sa_pacer_queued(const struct sa_pacer *p)
{
	return p->queued;
}

size_t sa_pacer_destinations(const struct sa_pacer *p)
{
	return p->ndests;
}
