/* kvindex.h: a table of byte keys to byte values in this process's heap.
 *
 * What lib/store keeps of its credentials for the hot path (see
 * sa_store_credential_index): a lookup reads the key's slot and its record,
 * two or three cache lines, where data.mdb's B-tree descends four pages.
 * Keys are hashed with SipHash under a random key of the table's (usernames
 * are chosen by customers: none can make another's lookups probe long).
 * Open addressing with linear probing, removal by backward shift; records
 * live in arenas of anonymous memory asked for huge pages, so that a
 * lookup after an idle spell does not also miss the TLB. Records that
 * change or go are wiped at once (the store's values hold HA1s) and their
 * room is taken back by compaction once it is most of the arenas.
 * Not thread-safe: the caller locks. */
#ifndef SA_KVINDEX_H
#define SA_KVINDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SA_KVINDEX_KEY_MAX   511     /* LMDB's key limit */
#define SA_KVINDEX_VALUE_MAX 4096

struct sa_kvindex;

/* An empty table; NULL when memory or randomness is short. */
struct sa_kvindex *sa_kvindex_new(void);
/* Wipes every record and frees the table (NULL: nothing). */
void sa_kvindex_free(struct sa_kvindex *x);

/* Adds or replaces the record of key. 0, or -1 (a key or value too long,
 * or no memory: the table is then as it was). */
int sa_kvindex_put(struct sa_kvindex *x, const void *key, size_t klen, const void *val, size_t vlen);
/* Removes the record of key; whether there was one. */
bool sa_kvindex_del(struct sa_kvindex *x, const void *key, size_t klen);
/* Copies the value of key into out (cap bytes): its length, or -1 when
 * there is no such key (or it does not fit, which the store's sizes rule out). */
long sa_kvindex_get(const struct sa_kvindex *x, const void *key, size_t klen, void *out, size_t cap);

struct sa_kvindex_stats {
	size_t records;
	size_t bytes;        /* slots and arenas mapped */
	size_t live;         /* bytes of records in use */
	size_t compactions;
};
void sa_kvindex_stats(const struct sa_kvindex *x, struct sa_kvindex_stats *out);

#endif
