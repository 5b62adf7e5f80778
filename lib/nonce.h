/* nonce.h: stateless digest nonces (issue, check) and the bounded nonce-count replay table. */
#ifndef SA_NONCE_H
#define SA_NONCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "digest.h"

/*
 * Byte layout of a nonce before encoding (33 bytes, sent as 44 characters of
 * unpadded base64url, RFC 4648 §5):
 *
 *   offset size  field
 *   0      1     version, currently 2
 *   1      1     key id: which of the live secrets made the MAC
 *   2      1     algorithm (enum sa_digest_alg) the nonce was issued for
 *   3      4     issue time, seconds since the epoch, big-endian (uint32)
 *   7      4     counter, per process, big-endian: makes every nonce unique
 *   11     6     instance: random, made by sa_nonce_ctx_new (each node, each start)
 *   17     16    HMAC-SHA256(secret[key id], bytes 0..16 || realm), truncated
 *
 * The realm is MACed but not carried: a nonce issued for one trunk does not
 * verify for another. Nothing else is stored per issued nonce; a nonce only
 * takes table space once it has been answered correctly (sa_nonce_use).
 *
 * The instance names the replay table that knows the nonce: the one of the
 * context that issued it. A fleet's nodes share their keys (from the
 * database), so a node can tell another node's nonce (MAC good, instance not
 * its own) from a forgery; it answers it stale=true with a nonce of its own
 * and never accepts it, since its replay table has never seen that nonce's
 * nonce-counts. A restarted node is another instance too: its table is empty.
 *
 * Version 1 (27 bytes, 36 characters: no instance, MAC over bytes 0..10) was
 * issued before the upgrade to version 2, by a process that has since
 * stopped: it is answered SA_NONCE_STALE, never accepted.
 */
#define SA_NONCE_RAW_LEN   33
#define SA_NONCE_LEN       44                   /* encoded */
#define SA_NONCE_V1_LEN    36                   /* encoded version 1 */
#define SA_NONCE_INSTANCE_LEN 6
#define SA_NONCE_SECRET_LEN 32
#define SA_NONCE_KEYS      3                    /* live keys: current, previous, the one before */

enum sa_nonce_status {
	SA_NONCE_OK = 0,
	SA_NONCE_STALE,      /* MAC good but expired, made with a retired key, by another instance, or version 1 */
	SA_NONCE_INVALID,    /* garbage, bad MAC, wrong realm, wrong algorithm */
	SA_NONCE_REPLAY,     /* from sa_nonce_use: nc already seen or not increasing */
	SA_NONCE_RETRANSMISSION,   /* from sa_nonce_use_tagged: the very request that used this nc, again */
};

/* What a good nonce carried, for sa_nonce_use. */
struct sa_nonce_info {
	uint8_t key_id;
	uint32_t issued;
	uint32_t counter;
	bool authentic;      /* a live key's MAC verified and the instance is ours: we issued it (for this realm), expired or not */
	bool other_instance; /* a live key's MAC verified, but another instance (node, or an earlier start) issued it */
	bool future;         /* a live key's MAC verified, issued for a time still to come (the wall clock was put back) */
};

struct sa_nonce_ctx;

/* ttl: seconds a nonce stays valid; replay_slots: size of the replay table
 * (bounded; expired entries are forgotten). NULL on allocation failure. */
struct sa_nonce_ctx *sa_nonce_ctx_new(unsigned ttl, size_t replay_slots);
void sa_nonce_ctx_free(struct sa_nonce_ctx *ctx);

/* This context's instance (random, made by sa_nonce_ctx_new), for logs and tests. */
void sa_nonce_instance(const struct sa_nonce_ctx *ctx, unsigned char out[SA_NONCE_INSTANCE_LEN]);

/* The id new nonces are issued with; 0 when no key is set. */
uint8_t sa_nonce_key_current(const struct sa_nonce_ctx *ctx);

/* Install secret under key_id and make it the key new nonces are issued
 * with. The keys installed before it stay live for checking, the oldest
 * going when SA_NONCE_KEYS are held, so rotation never invalidates nonces
 * already issued (they come back stale at worst). A fleet node installs the
 * database's previous and current key over the key it made at its start:
 * three slots keep that one too, so the nonces it issued in its first
 * second stay good. An id may be installed again with another secret (a
 * start-up key that drew the database key's id): both stay live, and a
 * nonce under that id is checked against each. The current key installed
 * again (same id, same secret) changes nothing. 0 or -1. */
int sa_nonce_key_set(struct sa_nonce_ctx *ctx, uint8_t key_id,
                     const unsigned char secret[SA_NONCE_SECRET_LEN]);

/* Write a new NUL-terminated nonce for realm/alg into out (SA_NONCE_LEN + 1).
 * Allocates nothing. 0, or -1 when no key is set. */
int sa_nonce_issue(struct sa_nonce_ctx *ctx, const char *realm, enum sa_digest_alg alg,
                   uint64_t now, char out[SA_NONCE_LEN + 1]);

/* Check a nonce as received (len bytes, unquoted) for realm/alg at now.
 * On SA_NONCE_OK and SA_NONCE_STALE, info (if not NULL) is filled. Stateless. */
enum sa_nonce_status sa_nonce_check(const struct sa_nonce_ctx *ctx, const char *nonce,
                                    size_t len, const char *realm, enum sa_digest_alg alg,
                                    uint64_t now, struct sa_nonce_info *info);

/* Record that a verified answer used nonce info with nonce-count nc
 * (nc 1 when the client sent none). SA_NONCE_OK when nc is higher than any
 * seen for this nonce, SA_NONCE_REPLAY otherwise. Entries are forgotten once
 * their nonce has expired. When the table is full of live entries the answer
 * is SA_NONCE_STALE (the caller challenges again, which is always safe); a
 * live entry is never evicted, since that would let a replay through. */
enum sa_nonce_status sa_nonce_use(struct sa_nonce_ctx *ctx, const struct sa_nonce_info *info,
                                  uint32_t nc, uint64_t now);

/* The same, remembering tag (non-zero: a hash of the request's branch and
 * Call-ID) with the highest nc: the same nc again with the same tag is
 * SA_NONCE_RETRANSMISSION, a UDP retransmission of a request already
 * accepted, which an idempotent request (REGISTER) may be answered again. */
enum sa_nonce_status sa_nonce_use_tagged(struct sa_nonce_ctx *ctx, const struct sa_nonce_info *info,
                                         uint32_t nc, uint32_t tag, uint64_t now);

#endif
