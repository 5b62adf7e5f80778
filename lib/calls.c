/* calls.c: chained hash tables that grow with the load (by Call-ID, by credential) and an age list. */
#include "calls.h"

#include <stdlib.h>
#include <string.h>

#define MIN_BUCKETS 1024

/* One credential with calls: its chain of calls and how many. */
struct sa_calls_cred {
	struct sa_calls_cred *next;    /* same bucket */
	char id[SA_ID_MAX];
	struct sa_call *calls;
	unsigned n;
};

struct sa_calls {
	struct sa_call **by_id;
	size_t id_buckets;
	struct sa_calls_cred **by_cred;
	size_t cred_buckets;
	unsigned ncalls, ncreds;
	TAILQ_HEAD(, sa_call) age;
};

static uint64_t hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ULL;
	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
	return h ^ (h >> 29);
}

struct sa_calls *sa_calls_new(void)
{
	struct sa_calls *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->id_buckets = t->cred_buckets = MIN_BUCKETS;
	t->by_id = calloc(t->id_buckets, sizeof(*t->by_id));
	t->by_cred = calloc(t->cred_buckets, sizeof(*t->by_cred));
	TAILQ_INIT(&t->age);
	if (!t->by_id || !t->by_cred) {
		sa_calls_free(t);
		return NULL;
	}
	return t;
}

struct sa_call *sa_call_new(void)
{
	return calloc(1, sizeof(struct sa_call));
}

void sa_call_free(struct sa_call *c)
{
	if (!c)
		return;
	sa_dialog_free(&c->d);
	free(c);
}

void sa_calls_free(struct sa_calls *t)
{
	if (!t)
		return;
	while (t->by_id && t->by_cred && !TAILQ_EMPTY(&t->age))
		sa_calls_remove(t, TAILQ_FIRST(&t->age));
	free(t->by_id);
	free(t->by_cred);
	free(t);
}

/* Double a chained table's buckets when it holds twice as many entries:
 * chains stay short whatever the load. On allocation failure it stays as is. */
static void grow_ids(struct sa_calls *t)
{
	size_t n = t->id_buckets * 2;
	struct sa_call **b = calloc(n, sizeof(*b));
	if (!b)
		return;
	for (size_t i = 0; i < t->id_buckets; i++)
		for (struct sa_call *c = t->by_id[i], *next; c; c = next) {
			next = c->id_next;
			size_t k = hash_str(c->d.call_id) & (n - 1);
			c->id_next = b[k];
			b[k] = c;
		}
	free(t->by_id);
	t->by_id = b;
	t->id_buckets = n;
}

static void grow_creds(struct sa_calls *t)
{
	size_t n = t->cred_buckets * 2;
	struct sa_calls_cred **b = calloc(n, sizeof(*b));
	if (!b)
		return;
	for (size_t i = 0; i < t->cred_buckets; i++)
		for (struct sa_calls_cred *r = t->by_cred[i], *next; r; r = next) {
			next = r->next;
			size_t k = hash_str(r->id) & (n - 1);
			r->next = b[k];
			b[k] = r;
		}
	free(t->by_cred);
	t->by_cred = b;
	t->cred_buckets = n;
}

static struct sa_calls_cred **cred_slot(const struct sa_calls *t, const char *id)
{
	struct sa_calls_cred **pp = &t->by_cred[hash_str(id) & (t->cred_buckets - 1)];
	while (*pp && strcmp((*pp)->id, id) != 0)
		pp = &(*pp)->next;
	return pp;
}

int sa_calls_add(struct sa_calls *t, struct sa_call *c)
{
	struct sa_calls_cred **pp = cred_slot(t, c->d.cred_id), *r = *pp;
	if (!r) {
		if (!(r = calloc(1, sizeof(*r))))
			return -1;
		memcpy(r->id, c->d.cred_id, sizeof(r->id));
		r->id[sizeof(r->id) - 1] = '\0';
		*pp = r;
		if (++t->ncreds > 2 * t->cred_buckets)
			grow_creds(t);
	}
	c->cred = r;
	c->cred_next = r->calls;
	if (r->calls)
		r->calls->cred_pprev = &c->cred_next;
	c->cred_pprev = &r->calls;
	r->calls = c;
	r->n++;
	size_t k = hash_str(c->d.call_id) & (t->id_buckets - 1);
	c->id_next = t->by_id[k];
	t->by_id[k] = c;
	TAILQ_INSERT_TAIL(&t->age, c, age);
	if (++t->ncalls > 2 * t->id_buckets)
		grow_ids(t);
	return 0;
}

void sa_calls_remove(struct sa_calls *t, struct sa_call *c)
{
	struct sa_call **pp = &t->by_id[hash_str(c->d.call_id) & (t->id_buckets - 1)];
	while (*pp && *pp != c)
		pp = &(*pp)->id_next;
	if (*pp)
		*pp = c->id_next;
	/* O(1): a credential may hold thousands of calls (one trunk's PBX) */
	struct sa_calls_cred *r = c->cred;
	*c->cred_pprev = c->cred_next;
	if (c->cred_next)
		c->cred_next->cred_pprev = c->cred_pprev;
	if (--r->n == 0) {
		struct sa_calls_cred **rp = cred_slot(t, r->id);
		*rp = r->next;
		free(r);
		t->ncreds--;
	}
	TAILQ_REMOVE(&t->age, c, age);
	t->ncalls--;
	sa_call_free(c);
}

unsigned sa_calls_count(const struct sa_calls *t)
{
	return t->ncalls;
}

struct sa_call *sa_calls_find(const struct sa_calls *t, const struct sa_msg *m, int *side)
{
	if (!m->call_id)
		return NULL;
	for (struct sa_call *c = t->by_id[hash_str(m->call_id) & (t->id_buckets - 1)]; c; c = c->id_next)
		if ((*side = sa_dialog_match(&c->d, m)) != 0)
			return c;
	return NULL;
}

struct sa_call *sa_calls_of_credential(const struct sa_calls *t, const char *cred_id)
{
	struct sa_calls_cred *r = *cred_slot(t, cred_id);
	return r ? r->calls : NULL;
}

struct sa_call *sa_calls_next_of_credential(const struct sa_call *c)
{
	return c->cred_next;
}

unsigned sa_calls_credential_count(const struct sa_calls *t, const char *cred_id)
{
	struct sa_calls_cred *r = *cred_slot(t, cred_id);
	return r ? r->n : 0;
}

struct sa_call *sa_calls_oldest(const struct sa_calls *t)
{
	return TAILQ_FIRST(&t->age);
}

struct sa_call *sa_calls_newer(const struct sa_call *c)
{
	return TAILQ_NEXT(c, age);
}

void sa_calls_each_credential(const struct sa_calls *t, void (*fn)(const char *cred_id, void *arg), void *arg)
{
	for (size_t i = 0; i < t->cred_buckets; i++)
		for (struct sa_calls_cred *r = t->by_cred[i]; r; r = r->next)
			fn(r->id, arg);
}
