/* kvindex.c: see kvindex.h. */
#include "kvindex.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "siphash.h"

#define SLOTS_MIN     1024
#define CHUNK_MIN     ((size_t)1 << 20)
#define CHUNK_MAX     ((size_t)64 << 20)
#define HUGE_FROM     ((size_t)4 << 20)     /* mappings this large are offered huge pages */
#define COMPACT_FROM  ((size_t)1 << 20)     /* dead bytes before compaction is worth it */

/* A record: the key's bytes, then the value's, in an arena. */
struct rec {
	uint16_t klen, vlen;
	unsigned char b[];
};

struct slot {
	uint64_t h;
	struct rec *r;          /* NULL: empty */
};

struct chunk {
	struct chunk *next;
	unsigned char *mem;
	size_t size, used;
};

struct sa_kvindex {
	struct sa_siphash_key key;
	struct slot *slots;
	size_t cap, n;          /* cap a power of two, n <= cap * 3 / 4 */
	struct chunk *chunks;   /* the newest first: records are cut from it */
	size_t arena;           /* bytes of every chunk */
	size_t live, dead;      /* bytes of records in use, and of wiped ones */
	size_t compactions;
};

static void *map(size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	if (size >= HUGE_FROM)
		(void)madvise(p, size, MADV_HUGEPAGE);   /* advice: refused where THP is off, and that is fine */
	return p;
}

static size_t rec_size(size_t klen, size_t vlen)
{
	return (sizeof(struct rec) + klen + vlen + 7) & ~(size_t)7;
}

static size_t rec_bytes(const struct rec *r)
{
	return rec_size(r->klen, r->vlen);
}

static void chunks_free(struct chunk *c)
{
	while (c != NULL) {
		struct chunk *next = c->next;
		OPENSSL_cleanse(c->mem, c->used);
		munmap(c->mem, c->size);
		free(c);
		c = next;
	}
}

/* Room for size bytes: from the newest chunk, or a new one as large as
 * the arenas so far (within CHUNK_MIN..CHUNK_MAX). */
static struct rec *rec_alloc(struct sa_kvindex *x, size_t size)
{
	struct chunk *c = x->chunks;

	if (c == NULL || c->size - c->used < size) {
		size_t want = x->arena < CHUNK_MIN ? CHUNK_MIN : x->arena > CHUNK_MAX ? CHUNK_MAX : x->arena;
		if (want < size)
			want = size;
		c = calloc(1, sizeof *c);
		if (c == NULL || (c->mem = map(want)) == NULL) {
			free(c);
			return NULL;
		}
		c->size = want;
		c->next = x->chunks;
		x->chunks = c;
		x->arena += want;
	}
	struct rec *r = (struct rec *)(c->mem + c->used);
	c->used += size;
	return r;
}

static struct slot *slots_new(size_t cap)
{
	return map(cap * sizeof(struct slot));   /* anonymous memory reads as zero: every slot empty */
}

struct sa_kvindex *sa_kvindex_new(void)
{
	unsigned char k[SA_SIPHASH_KEY_LEN];
	struct sa_kvindex *x = calloc(1, sizeof *x);

	if (x == NULL)
		return NULL;
	if (RAND_bytes(k, sizeof k) != 1 || (x->slots = slots_new(SLOTS_MIN)) == NULL) {
		OPENSSL_cleanse(k, sizeof k);
		free(x);
		return NULL;
	}
	sa_siphash_key(&x->key, k);
	OPENSSL_cleanse(k, sizeof k);
	x->cap = SLOTS_MIN;
	return x;
}

void sa_kvindex_free(struct sa_kvindex *x)
{
	if (x == NULL)
		return;
	chunks_free(x->chunks);
	munmap(x->slots, x->cap * sizeof(struct slot));
	OPENSSL_cleanse(x, sizeof *x);
	free(x);
}

static bool rec_is(const struct rec *r, const void *key, size_t klen)
{
	return r->klen == klen && memcmp(r->b, key, klen) == 0;
}

/* The slot holding key, or the empty slot where it would go. */
static struct slot *slot_find(const struct sa_kvindex *x, uint64_t h, const void *key, size_t klen)
{
	size_t mask = x->cap - 1;

	for (size_t i = h & mask;; i = (i + 1) & mask) {
		struct slot *s = &x->slots[i];
		if (s->r == NULL || (s->h == h && rec_is(s->r, key, klen)))
			return s;
	}
}

/* Doubles the slots; -1 (the old ones kept) without memory. */
static int grow(struct sa_kvindex *x)
{
	size_t cap = x->cap * 2, mask = cap - 1;
	struct slot *slots = slots_new(cap);

	if (slots == NULL)
		return -1;
	for (size_t i = 0; i < x->cap; i++) {
		if (x->slots[i].r == NULL)
			continue;
		size_t j = x->slots[i].h & mask;
		while (slots[j].r != NULL)
			j = (j + 1) & mask;
		slots[j] = x->slots[i];
	}
	munmap(x->slots, x->cap * sizeof(struct slot));
	x->slots = slots;
	x->cap = cap;
	return 0;
}

/* Copies the live records into one fresh arena and drops the old ones
 * (wiped). Without memory for it, the old arenas stay until next time. */
static void compact(struct sa_kvindex *x)
{
	struct chunk *c = calloc(1, sizeof *c);
	size_t size = x->live > 0 ? x->live : 8;

	if (c == NULL || (c->mem = map(size)) == NULL) {
		free(c);
		return;
	}
	c->size = size;
	for (size_t i = 0; i < x->cap; i++) {
		struct rec *r = x->slots[i].r;
		if (r == NULL)
			continue;
		struct rec *copy = (struct rec *)(c->mem + c->used);
		memcpy(copy, r, rec_bytes(r));
		c->used += rec_bytes(r);
		x->slots[i].r = copy;
	}
	chunks_free(x->chunks);
	x->chunks = c;
	x->arena = c->size;
	x->dead = 0;
	x->compactions++;
}

/* A record that leaves the table: wiped now, its room counted as dead. */
static void rec_drop(struct sa_kvindex *x, struct rec *r)
{
	size_t n = rec_bytes(r);

	OPENSSL_cleanse(r, n);
	x->live -= n;
	x->dead += n;
}

static void maybe_compact(struct sa_kvindex *x)
{
	if (x->dead > COMPACT_FROM && x->dead > x->live)
		compact(x);
}

int sa_kvindex_put(struct sa_kvindex *x, const void *key, size_t klen, const void *val, size_t vlen)
{
	if (klen > SA_KVINDEX_KEY_MAX || vlen > SA_KVINDEX_VALUE_MAX)
		return -1;
	if ((x->n + 1) * 4 > x->cap * 3 && grow(x) < 0)
		return -1;
	size_t size = rec_size(klen, vlen);
	struct rec *r = rec_alloc(x, size);
	if (r == NULL)
		return -1;
	r->klen = (uint16_t)klen;
	r->vlen = (uint16_t)vlen;
	memcpy(r->b, key, klen);
	memcpy(r->b + klen, val, vlen);
	x->live += size;

	uint64_t h = sa_siphash24(&x->key, key, klen);
	struct slot *s = slot_find(x, h, key, klen);
	if (s->r != NULL)
		rec_drop(x, s->r);
	else
		x->n++;
	s->h = h;
	s->r = r;
	maybe_compact(x);
	return 0;
}

bool sa_kvindex_del(struct sa_kvindex *x, const void *key, size_t klen)
{
	if (klen > SA_KVINDEX_KEY_MAX)
		return false;
	size_t mask = x->cap - 1;
	struct slot *s = slot_find(x, sa_siphash24(&x->key, key, klen), key, klen);
	if (s->r == NULL)
		return false;
	rec_drop(x, s->r);
	x->n--;
	/* backward shift: every later record of the run that may move up to
	 * the hole does, so that no lookup meets an empty slot before its key */
	size_t i = (size_t)(s - x->slots);
	for (size_t j = (i + 1) & mask; x->slots[j].r != NULL; j = (j + 1) & mask) {
		size_t home = x->slots[j].h & mask;
		bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
		if (stays)
			continue;
		x->slots[i] = x->slots[j];
		i = j;
	}
	x->slots[i].r = NULL;
	x->slots[i].h = 0;
	maybe_compact(x);
	return true;
}

long sa_kvindex_get(const struct sa_kvindex *x, const void *key, size_t klen, void *out, size_t cap)
{
	if (klen > SA_KVINDEX_KEY_MAX)
		return -1;
	const struct slot *s = slot_find(x, sa_siphash24(&x->key, key, klen), key, klen);
	if (s->r == NULL || s->r->vlen > cap)
		return -1;
	memcpy(out, s->r->b + s->r->klen, s->r->vlen);
	return s->r->vlen;
}

void sa_kvindex_stats(const struct sa_kvindex *x, struct sa_kvindex_stats *out)
{
	out->records = x->n;
	out->bytes = x->cap * sizeof(struct slot) + x->arena;
	out->live = x->live;
	out->compactions = x->compactions;
}
