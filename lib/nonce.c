/* nonce.c: stateless digest nonces (HMAC-SHA256, base64url) and the bounded nonce-count replay table. */
/* HMAC-SHA256 is computed from SHA-256 states precomputed per key and copied
 * per nonce: a struct copy instead of OpenSSL 3's MAC context dup, which costs
 * five times as much on the path every scanner's request takes. The
 * low-level SHA-256 calls are deprecated in OpenSSL 3 but kept and supported. */
#define OPENSSL_API_COMPAT 0x10100000L

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "nonce.h"

#define NONCE_VERSION     2
#define NONCE_V1          1
#define NONCE_V1_RAW_LEN  27
#define NONCE_INSTANCE_AT 11
#define NONCE_MACED_LEN   17	/* bytes 0..16 of the layout in nonce.h */
#define NONCE_MAC_LEN     16
#define NONCE_FUTURE_SKEW 5	/* seconds a nonce may appear to come from the future */
#define REPLAY_WINDOW     128	/* slots probed per key: bounds the cost of sa_nonce_use */

struct nonce_key {
	bool live;
	uint8_t id;
	SHA256_CTX inner, outer;	/* after K ^ ipad and K ^ opad: HMAC's two keyed starts */
};

struct replay_entry {
	bool used;
	uint8_t key_id;
	uint32_t issued;
	uint32_t counter;
	uint32_t nc_max;
	uint32_t tag;            /* sa_nonce_use_tagged: which request used nc_max (0: none) */
	uint64_t expires;
};

struct sa_nonce_ctx {
	unsigned ttl;
	uint32_t counter;
	uint64_t hash_seed;
	unsigned char instance[SA_NONCE_INSTANCE_LEN];
	struct nonce_key keys[SA_NONCE_KEYS];	/* [0] current, then older ones */
	size_t slots;
	struct replay_entry *table;
	pthread_mutex_t lock;   /* the SIP workers share one context: keys, counter and replay table */
};

static const char b64url[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* len must be a multiple of 3 (the nonce's 27 bytes are), so there is never padding. */
static void b64url_encode(const unsigned char *in, size_t len, char *out)
{
	for (size_t i = 0; i + 2 < len; i += 3, out += 4) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];

		out[0] = b64url[v >> 18 & 0x3f];
		out[1] = b64url[v >> 12 & 0x3f];
		out[2] = b64url[v >> 6 & 0x3f];
		out[3] = b64url[v & 0x3f];
	}
	*out = '\0';
}

static int b64url_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

/* Decode len characters (a multiple of 4) into out; -1 on any character outside the alphabet. */
static int b64url_decode(const char *in, size_t len, unsigned char *out)
{
	for (size_t i = 0; i + 3 < len; i += 4, out += 3) {
		uint32_t v = 0;

		for (size_t j = 0; j < 4; j++) {
			int d = b64url_value((unsigned char)in[i + j]);

			if (d < 0)
				return -1;
			v = v << 6 | (uint32_t)d;
		}
		out[0] = (unsigned char)(v >> 16);
		out[1] = (unsigned char)(v >> 8);
		out[2] = (unsigned char)v;
	}
	return 0;
}

static void put_be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static uint32_t get_be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

struct sa_nonce_ctx *sa_nonce_ctx_new(unsigned ttl, size_t replay_slots)
{
	struct sa_nonce_ctx *ctx = calloc(1, sizeof(*ctx));

	if (ctx == NULL)
		return NULL;
	if (pthread_mutex_init(&ctx->lock, NULL) != 0) {
		free(ctx);
		return NULL;
	}
	ctx->ttl = ttl;
	ctx->slots = replay_slots;
	if (replay_slots > 0 && (ctx->table = calloc(replay_slots, sizeof(*ctx->table))) == NULL)
		goto fail;
	/* a random start keeps nonces from two processes (or restarts) from colliding */
	if (RAND_bytes((unsigned char *)&ctx->counter, sizeof(ctx->counter)) != 1 ||
	    RAND_bytes((unsigned char *)&ctx->hash_seed, sizeof(ctx->hash_seed)) != 1 ||
	    RAND_bytes(ctx->instance, sizeof(ctx->instance)) != 1)
		goto fail;
	return ctx;
fail:
	sa_nonce_ctx_free(ctx);
	return NULL;
}

static void key_clear(struct nonce_key *key)
{
	OPENSSL_cleanse(key, sizeof(*key));	/* the keyed states stand for the secret */
}

void sa_nonce_ctx_free(struct sa_nonce_ctx *ctx)
{
	if (ctx == NULL)
		return;
	for (int i = 0; i < SA_NONCE_KEYS; i++)
		key_clear(&ctx->keys[i]);
	free(ctx->table);
	pthread_mutex_destroy(&ctx->lock);
	free(ctx);
}

/* Start SHA-256 over the secret XOR pad, padded to one block (RFC 2104). */
static void keyed_start(SHA256_CTX *c, const unsigned char secret[SA_NONCE_SECRET_LEN], unsigned char pad)
{
	unsigned char block[SHA256_CBLOCK];

	memset(block, pad, sizeof(block));
	for (size_t i = 0; i < SA_NONCE_SECRET_LEN; i++)
		block[i] ^= secret[i];
	SHA256_Init(c);
	SHA256_Update(c, block, sizeof(block));
	OPENSSL_cleanse(block, sizeof(block));
}

void sa_nonce_instance(const struct sa_nonce_ctx *ctx, unsigned char out[SA_NONCE_INSTANCE_LEN])
{
	memcpy(out, ctx->instance, SA_NONCE_INSTANCE_LEN);
}

static void ctx_lock(const struct sa_nonce_ctx *ctx)
{
	pthread_mutex_lock(&((struct sa_nonce_ctx *)ctx)->lock);
}

static void ctx_unlock(const struct sa_nonce_ctx *ctx)
{
	pthread_mutex_unlock(&((struct sa_nonce_ctx *)ctx)->lock);
}

uint8_t sa_nonce_key_current(const struct sa_nonce_ctx *ctx)
{
	if (ctx == NULL)
		return 0;
	ctx_lock(ctx);
	uint8_t id = ctx->keys[0].live ? ctx->keys[0].id : 0;
	ctx_unlock(ctx);
	return id;
}

int sa_nonce_key_set(struct sa_nonce_ctx *ctx, uint8_t key_id,
                     const unsigned char secret[SA_NONCE_SECRET_LEN])
{
	if (ctx == NULL || secret == NULL)
		return -1;
	struct nonce_key k = { .live = true, .id = key_id };
	keyed_start(&k.inner, secret, 0x36);
	keyed_start(&k.outer, secret, 0x5c);
	ctx_lock(ctx);
	const struct nonce_key *cur = &ctx->keys[0];
	if (!cur->live || cur->id != key_id || CRYPTO_memcmp(&cur->inner, &k.inner, sizeof(k.inner)) != 0) {
		key_clear(&ctx->keys[SA_NONCE_KEYS - 1]);
		memmove(&ctx->keys[1], &ctx->keys[0], (SA_NONCE_KEYS - 1) * sizeof(ctx->keys[0]));
		ctx->keys[0] = k;
	}
	ctx_unlock(ctx);
	key_clear(&k);
	return 0;
}

/* HMAC-SHA256(secret, raw[0..16] || realm) truncated to NONCE_MAC_LEN. */
static int nonce_mac(const struct nonce_key *key, const unsigned char *raw, const char *realm,
                     unsigned char out[NONCE_MAC_LEN])
{
	unsigned char inner[SHA256_DIGEST_LENGTH], full[SHA256_DIGEST_LENGTH];
	SHA256_CTX c = key->inner;

	SHA256_Update(&c, raw, NONCE_MACED_LEN);
	SHA256_Update(&c, realm, strlen(realm));
	SHA256_Final(inner, &c);
	c = key->outer;
	SHA256_Update(&c, inner, sizeof(inner));
	SHA256_Final(full, &c);
	memcpy(out, full, NONCE_MAC_LEN);
	OPENSSL_cleanse(&c, sizeof(c));
	return 0;
}

int sa_nonce_issue(struct sa_nonce_ctx *ctx, const char *realm, enum sa_digest_alg alg,
                   uint64_t now, char out[SA_NONCE_LEN + 1])
{
	struct nonce_key key;
	unsigned char raw[SA_NONCE_RAW_LEN];

	if (ctx == NULL || realm == NULL || (unsigned)alg >= SA_ALG_COUNT || now > UINT32_MAX)
		return -1;
	/* the key and a counter under the lock; the MAC outside it */
	ctx_lock(ctx);
	key = ctx->keys[0];
	uint32_t counter = ctx->counter++;
	ctx_unlock(ctx);
	int rc = -1;
	if (key.live) {
		raw[0] = NONCE_VERSION;
		raw[1] = key.id;
		raw[2] = (unsigned char)alg;
		put_be32(raw + 3, (uint32_t)now);
		put_be32(raw + 7, counter);
		memcpy(raw + NONCE_INSTANCE_AT, ctx->instance, SA_NONCE_INSTANCE_LEN);
		rc = nonce_mac(&key, raw, realm, raw + NONCE_MACED_LEN);
	}
	key_clear(&key);
	if (rc == 0)
		b64url_encode(raw, sizeof(raw), out);
	return rc;
}

/* The MAC-free part of checking: shape, version and algorithm. */
static bool nonce_parse(const char *nonce, size_t len, enum sa_digest_alg alg,
                        unsigned char raw[SA_NONCE_RAW_LEN])
{
	if (nonce == NULL || len != SA_NONCE_LEN || b64url_decode(nonce, len, raw) != 0)
		return false;
	return raw[0] == NONCE_VERSION && raw[2] == (unsigned char)alg;
}

/* A version 1 nonce of the right shape and algorithm: issued before the
 * upgrade by a process (and with a key) that is gone. */
static bool nonce_v1(const char *nonce, size_t len, enum sa_digest_alg alg, struct sa_nonce_info *info)
{
	unsigned char raw[NONCE_V1_RAW_LEN];

	if (nonce == NULL || len != SA_NONCE_V1_LEN || b64url_decode(nonce, len, raw) != 0 ||
	    raw[0] != NONCE_V1 || raw[2] != (unsigned char)alg)
		return false;
	*info = (struct sa_nonce_info){ raw[1], get_be32(raw + 3), get_be32(raw + 7), false, false, false };
	return true;
}

static bool nonce_mac_ok(const struct nonce_key *key, const unsigned char *raw, const char *realm)
{
	unsigned char mac[NONCE_MAC_LEN];

	if (nonce_mac(key, raw, realm, mac) != 0)
		return false;
	return CRYPTO_memcmp(mac, raw + NONCE_MACED_LEN, NONCE_MAC_LEN) == 0;
}

/* Our clocks may differ by a little (a fleet sharing the secret); more is a clock step. */
static bool nonce_from_future(uint32_t issued, uint64_t now)
{
	return issued > NONCE_FUTURE_SKEW && issued - NONCE_FUTURE_SKEW > now;
}

enum sa_nonce_status sa_nonce_check(const struct sa_nonce_ctx *ctx, const char *nonce,
                                    size_t len, const char *realm, enum sa_digest_alg alg,
                                    uint64_t now, struct sa_nonce_info *info)
{
	unsigned char raw[SA_NONCE_RAW_LEN];
	struct nonce_key keys[SA_NONCE_KEYS];
	struct sa_nonce_info parsed;
	enum sa_nonce_status status = SA_NONCE_OK;

	if (ctx == NULL || realm == NULL)
		return SA_NONCE_INVALID;
	if (nonce_v1(nonce, len, alg, &parsed)) {
		/* no key of ours can vouch for it: ask the client to retry */
		if (info != NULL)
			*info = parsed;
		return SA_NONCE_STALE;
	}
	if (!nonce_parse(nonce, len, alg, raw))
		return SA_NONCE_INVALID;
	parsed = (struct sa_nonce_info){ raw[1], get_be32(raw + 3), get_be32(raw + 7), false, false, false };
	/* a retired key cannot vouch for the nonce either way: ask the client to
	 * retry. Each live key under its id is tried (one, or two when an id was
	 * installed again with another secret), the MACs outside the lock. */
	int held = 0;
	ctx_lock(ctx);
	for (int i = 0; i < SA_NONCE_KEYS; i++)
		if (ctx->keys[i].live && ctx->keys[i].id == parsed.key_id)
			keys[held++] = ctx->keys[i];
	ctx_unlock(ctx);
	bool found = held > 0, mac_ok = false;
	for (int i = 0; i < held; i++) {
		mac_ok = mac_ok || nonce_mac_ok(&keys[i], raw, realm);
		key_clear(&keys[i]);
	}
	bool ours = CRYPTO_memcmp(raw + NONCE_INSTANCE_AT, ctx->instance, SA_NONCE_INSTANCE_LEN) == 0;
	if (!found || (!mac_ok && !ours)) {
		/* a key we do not hold; or a key id we hold, a MAC its secret did
		 * not make, and not our instance: an earlier start's nonce whose key
		 * id this start drew again (1 in 255), or a made-up one. Either way
		 * the client retries with a fresh nonce, and no verdict is given */
		status = SA_NONCE_STALE;
	} else if (!mac_ok)
		return SA_NONCE_INVALID;
	else if (nonce_from_future(parsed.issued, now)) {
		/* made with our secret, for a time still to come: our wall clock
		 * was put back since (NTP, a resumed VM), or a node of the fleet
		 * runs ahead. Not a forgery and not a wrong password: the client
		 * retries with a fresh nonce, and no verdict is given */
		status = SA_NONCE_STALE;
		parsed.future = true;
	} else if (!ours) {
		/* genuine, but another node's (or an earlier start's): its
		 * nonce-counts are in a replay table we do not have */
		status = SA_NONCE_STALE;
		parsed.other_instance = true;
	} else if ((parsed.authentic = true) && now > (uint64_t)parsed.issued + ctx->ttl)
		status = SA_NONCE_STALE;
	if (info != NULL)
		*info = parsed;
	return status;
}

/* splitmix64 finaliser over the entry key; the seed keeps slot placement unpredictable. */
static size_t replay_hash(const struct sa_nonce_ctx *ctx, const struct sa_nonce_info *info)
{
	uint64_t x = ctx->hash_seed ^ ((uint64_t)info->issued << 32 | info->counter);

	x ^= (uint64_t)info->key_id << 56;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return (size_t)(x % ctx->slots);
}

static bool replay_live(const struct replay_entry *e, uint64_t now)
{
	return e->used && now <= e->expires;
}

static bool replay_match(const struct replay_entry *e, const struct sa_nonce_info *info)
{
	return e->key_id == info->key_id && e->issued == info->issued && e->counter == info->counter;
}

/*
 * A nonce's entry only ever lives in the REPLAY_WINDOW slots from its hash, so a
 * lookup is bounded and can never miss a live entry; expired entries in the window
 * are free for reuse. Entries go into the first free slot, so every slot before a
 * live entry was in use when it was placed and a never-used slot ends the search.
 * Windows start to fill up when about three quarters of a large table is live:
 * size replay_slots with that headroom.
 */
static struct replay_entry *replay_slot(struct sa_nonce_ctx *ctx, const struct sa_nonce_info *info,
                                        uint64_t now, bool *found)
{
	size_t start = replay_hash(ctx, info);
	size_t window = ctx->slots < REPLAY_WINDOW ? ctx->slots : REPLAY_WINDOW;
	struct replay_entry *free_slot = NULL;

	*found = false;
	for (size_t i = 0; i < window; i++) {
		struct replay_entry *e = &ctx->table[(start + i) % ctx->slots];

		if (!replay_live(e, now)) {
			if (free_slot == NULL)
				free_slot = e;
			if (!e->used)
				break;
			continue;
		}
		if (replay_match(e, info)) {
			*found = true;
			return e;
		}
	}
	return free_slot;
}

static enum sa_nonce_status replay_take(struct sa_nonce_ctx *ctx, const struct sa_nonce_info *info, uint32_t nc,
                                        uint32_t tag, uint64_t now)
{
	struct replay_entry *e;
	bool found;

	if ((e = replay_slot(ctx, info, now, &found)) == NULL)
		return SA_NONCE_STALE;
	if (found && nc == e->nc_max && tag != 0 && tag == e->tag)
		return SA_NONCE_RETRANSMISSION;
	if (found && nc <= e->nc_max)
		return SA_NONCE_REPLAY;
	if (!found && nc == 0)
		return SA_NONCE_REPLAY;
	*e = (struct replay_entry){ .used = true, .key_id = info->key_id, .issued = info->issued,
	                            .counter = info->counter, .nc_max = nc, .tag = tag,
	                            .expires = (uint64_t)info->issued + ctx->ttl };
	return SA_NONCE_OK;
}

enum sa_nonce_status sa_nonce_use_tagged(struct sa_nonce_ctx *ctx, const struct sa_nonce_info *info,
                                         uint32_t nc, uint32_t tag, uint64_t now)
{
	if (ctx == NULL || info == NULL)
		return SA_NONCE_INVALID;
	/* past its lifetime the entry could be forgotten, so no answer can be trusted */
	if (now > (uint64_t)info->issued + ctx->ttl || ctx->slots == 0)
		return SA_NONCE_STALE;
	ctx_lock(ctx);
	enum sa_nonce_status st = replay_take(ctx, info, nc, tag, now);
	ctx_unlock(ctx);
	return st;
}

enum sa_nonce_status sa_nonce_use(struct sa_nonce_ctx *ctx, const struct sa_nonce_info *info,
                                  uint32_t nc, uint64_t now)
{
	return sa_nonce_use_tagged(ctx, info, nc, 0, now);
}
