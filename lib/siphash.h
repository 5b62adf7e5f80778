/* siphash.h: SipHash-2-4 (Aumasson and Bernstein, 2012), a keyed 64-bit PRF for short inputs. */
#ifndef SA_SIPHASH_H
#define SA_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

#define SA_SIPHASH_KEY_LEN 16

/* One message fed in pieces; the state holds the key's words: wipe it after use. */
struct sa_siphash {
	uint64_t v0, v1, v2, v3;
	uint64_t tail;    /* the bytes of an unfinished 8-byte word, little-endian */
	uint64_t len;     /* bytes fed so far */
};

void sa_siphash_init(struct sa_siphash *s, const unsigned char key[SA_SIPHASH_KEY_LEN]);
void sa_siphash_update(struct sa_siphash *s, const void *data, size_t n);
uint64_t sa_siphash_final(struct sa_siphash *s);

/* One message whole, for the hot path: the key read once into its two
 * words (sa_siphash_key), the rounds inline. The same function. */
struct sa_siphash_key {
	uint64_t k0, k1;
};
void sa_siphash_key(struct sa_siphash_key *k, const unsigned char key[SA_SIPHASH_KEY_LEN]);
uint64_t sa_siphash24(const struct sa_siphash_key *k, const void *data, size_t n);

#endif
