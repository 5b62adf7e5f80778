/* connlimit.c: connection and handshake counts per source in one keyed hash; the admission rules. */
#include "connlimit.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct sa_connsrc {
	struct sa_connsrc *next;        /* hash chain */
	unsigned char key[9];           /* length (4 or 8), then the address or the /64 */
	unsigned conns;
	unsigned handshakes;
};

struct sa_connlimit {
	struct sa_connsrc **bucket;
	size_t nbuckets;                /* a power of two */
	uint64_t seed;
	unsigned conns, handshakes, sources;
	pthread_mutex_t lock;           /* the SIP workers share the limits */
};

#define LOCKED(cl, stmt) do { pthread_mutex_lock(&(cl)->lock); stmt; pthread_mutex_unlock(&(cl)->lock); } while (0)

static const char *const verdict_names[SA_CONN_VERDICT_COUNT] = {
	"ok", "connections", "source_connections", "handshakes", "source_handshakes", "no_memory",
};

const char *sa_conn_verdict_name(enum sa_conn_verdict v)
{
	return (unsigned)v < SA_CONN_VERDICT_COUNT ? verdict_names[v] : "unknown";
}

enum sa_conn_verdict sa_connlimit_handshake_rule(const struct sa_connlimit_cfg *cfg, unsigned total,
                                                 unsigned mine)
{
	if (total >= cfg->max_handshakes)
		return SA_CONN_HANDSHAKES_FULL;
	if (mine >= cfg->max_handshakes_per_source)
		return SA_CONN_SOURCE_HANDSHAKES;
	/* the upper half is kept for sources that have none in progress */
	if (mine > 0 && total >= (cfg->max_handshakes + 1) / 2)
		return SA_CONN_SOURCE_HANDSHAKES;
	return SA_CONN_OK;
}

struct sa_connlimit *sa_connlimit_new(size_t expected, uint64_t seed)
{
	struct sa_connlimit *cl = calloc(1, sizeof(*cl));
	if (!cl)
		return NULL;
	cl->nbuckets = 64;
	while (cl->nbuckets < expected && cl->nbuckets < ((size_t)1 << 24))
		cl->nbuckets <<= 1;
	cl->bucket = calloc(cl->nbuckets, sizeof(*cl->bucket));
	if (!cl->bucket || pthread_mutex_init(&cl->lock, NULL) != 0) {
		free(cl->bucket);
		free(cl);
		return NULL;
	}
	cl->seed = seed;
	return cl;
}

void sa_connlimit_free(struct sa_connlimit *cl)
{
	if (!cl)
		return;
	for (size_t b = 0; b < cl->nbuckets; b++)
		while (cl->bucket[b]) {
			struct sa_connsrc *s = cl->bucket[b];
			cl->bucket[b] = s->next;
			free(s);
		}
	free(cl->bucket);
	pthread_mutex_destroy(&cl->lock);
	free(cl);
}

/* The source key: IPv4 (also when written as ::ffff:a.b.c.d) or an IPv6 /64. */
static void source_key(const void *addr, size_t len, unsigned char key[9])
{
	static const unsigned char mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	const unsigned char *a = addr;
	memset(key, 0, 9);
	if (len == 16 && memcmp(a, mapped, sizeof(mapped)) == 0) {
		a += 12;
		len = 4;
	}
	key[0] = len == 4 ? 4 : 8;
	memcpy(key + 1, a, key[0]);
}

static size_t key_hash(const struct sa_connlimit *cl, const unsigned char key[9])
{
	uint64_t w;
	memcpy(&w, key + 1, 8);
	uint64_t h = (cl->seed ^ key[0]) + w * 0x9e3779b97f4a7c15ull;
	h ^= h >> 31;
	h *= 0xbf58476d1ce4e5b9ull ^ cl->seed;
	h ^= h >> 29;
	return (size_t)h & (cl->nbuckets - 1);
}

static struct sa_connsrc *source_get(struct sa_connlimit *cl, const unsigned char key[9], bool create)
{
	size_t b = key_hash(cl, key);
	for (struct sa_connsrc *s = cl->bucket[b]; s; s = s->next)
		if (memcmp(s->key, key, 9) == 0)
			return s;
	if (!create)
		return NULL;
	struct sa_connsrc *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	memcpy(s->key, key, 9);
	s->next = cl->bucket[b];
	cl->bucket[b] = s;
	cl->sources++;
	return s;
}

/* A source that holds nothing any more leaves the table: its size follows
 * the connections, not every address ever seen. */
static void source_put(struct sa_connlimit *cl, struct sa_connsrc *src)
{
	if (src->conns > 0 || src->handshakes > 0)
		return;
	struct sa_connsrc **pp = &cl->bucket[key_hash(cl, src->key)];
	while (*pp && *pp != src)
		pp = &(*pp)->next;
	if (*pp)
		*pp = src->next;
	cl->sources--;
	free(src);
}

static enum sa_conn_verdict admit(struct sa_connlimit *cl, const struct sa_connlimit_cfg *cfg, const void *addr,
                                  size_t len, bool tls, struct sa_connsrc **src)
{
	unsigned char key[9];
	*src = NULL;
	if (cl->conns >= cfg->max_connections)
		return SA_CONN_FULL;
	source_key(addr, len, key);
	struct sa_connsrc *s = source_get(cl, key, false);
	unsigned mine = s ? s->conns : 0, mine_hs = s ? s->handshakes : 0;
	if (mine >= cfg->max_connections_per_source)
		return SA_CONN_SOURCE_FULL;
	if (tls) {
		enum sa_conn_verdict v = sa_connlimit_handshake_rule(cfg, cl->handshakes, mine_hs);
		if (v != SA_CONN_OK)
			return v;
	}
	if (!s && !(s = source_get(cl, key, true)))
		return SA_CONN_NO_MEMORY;
	s->conns++;
	cl->conns++;
	if (tls) {
		s->handshakes++;
		cl->handshakes++;
	}
	*src = s;
	return SA_CONN_OK;
}

enum sa_conn_verdict sa_connlimit_admit(struct sa_connlimit *cl, const struct sa_connlimit_cfg *cfg,
                                        const void *addr, size_t len, bool tls, struct sa_connsrc **src)
{
	enum sa_conn_verdict v;
	LOCKED(cl, v = admit(cl, cfg, addr, len, tls, src));
	return v;
}

void sa_connlimit_outgoing(struct sa_connlimit *cl, int delta)
{
	LOCKED(cl, cl->conns = (unsigned)((int)cl->conns + delta));
}

void sa_connlimit_outgoing_handshake(struct sa_connlimit *cl, int delta)
{
	LOCKED(cl, cl->handshakes = (unsigned)((int)cl->handshakes + delta));
}

static void handshake_done(struct sa_connlimit *cl, struct sa_connsrc *src)
{
	if (src->handshakes == 0)
		return;
	src->handshakes--;
	cl->handshakes--;
}

void sa_connlimit_handshake_done(struct sa_connlimit *cl, struct sa_connsrc *src)
{
	LOCKED(cl, handshake_done(cl, src));
}

static void release(struct sa_connlimit *cl, struct sa_connsrc *src, bool handshaking)
{
	if (handshaking)
		handshake_done(cl, src);
	if (src->conns > 0) {
		src->conns--;
		cl->conns--;
	}
	source_put(cl, src);
}

void sa_connlimit_release(struct sa_connlimit *cl, struct sa_connsrc *src, bool handshaking)
{
	LOCKED(cl, release(cl, src, handshaking));
}

/* The gauges: read without the lock (a word each; /metrics may be one change behind). */
unsigned sa_connlimit_connections(const struct sa_connlimit *cl)
{
	return __atomic_load_n(&cl->conns, __ATOMIC_RELAXED);
}

unsigned sa_connlimit_handshakes(const struct sa_connlimit *cl)
{
	return __atomic_load_n(&cl->handshakes, __ATOMIC_RELAXED);
}

unsigned sa_connlimit_sources(const struct sa_connlimit *cl)
{
	return __atomic_load_n(&cl->sources, __ATOMIC_RELAXED);
}

unsigned sa_connsrc_connections(const struct sa_connsrc *src)
{
	return src->conns;
}

unsigned sa_connsrc_handshakes(const struct sa_connsrc *src)
{
	return src->handshakes;
}
