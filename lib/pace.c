/* pace.c: a queue per destination, each with a token bucket; destinations exist only while they have a queue. */
#include "pace.h"

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
};

struct sa_pacer {
	struct pace_dest *dests;
	size_t queued, ndests;
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
	p->queued--;
}

void sa_pacer_cancel(struct sa_pacer *p, struct sa_pace_item *it)
{
	if (!it)
		return;
	unlink_item(p, it);
	free(it);   /* an emptied destination goes at the next run */
}

size_t sa_pacer_run(struct sa_pacer *p, unsigned rate, uint64_t now_ms, void (*cb)(void *payload, void *arg),
                    void *arg)
{
	double burst = rate / 100.0 < 1.0 ? 1.0 : rate / 100.0;
	for (struct pace_dest **pp = &p->dests; *pp;) {
		struct pace_dest *d = *pp;
		if (d->fresh) {
			d->tokens = burst;
			d->fresh = false;
		} else if (now_ms > d->last_ms) {
			d->tokens += (double)(now_ms - d->last_ms) * rate / 1000.0;
			if (d->tokens > burst)
				d->tokens = burst;
		}
		d->last_ms = now_ms;
		while (d->head && d->tokens >= 1.0) {
			struct sa_pace_item *it = d->head;
			void *payload = it->payload;
			unlink_item(p, it);
			free(it);
			d->tokens -= 1.0;
			cb(payload, arg);
		}
		if (!d->head && d->tokens >= burst) {
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
