/* test_nonce.c: nonce issue/check (expiry, MAC, realm, algorithm, key rotation) and the nc replay table. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "nonce.h"

#define TTL   300
#define NOW   1700000000u
#define REALM "trunk-trunk_4f2a.sip.example.net"

static const unsigned char secret1[SA_NONCE_SECRET_LEN] = { 1, 2, 3, 4, 5, 6, 7, 8 };
static const unsigned char secret2[SA_NONCE_SECRET_LEN] = { 0xa5, 0x5a, 0xff };
static const unsigned char secret3[SA_NONCE_SECRET_LEN] = { 0x33 };

static struct sa_nonce_ctx *ctx_with_key(size_t slots)
{
	struct sa_nonce_ctx *ctx = sa_nonce_ctx_new(TTL, slots);

	ck_assert_ptr_nonnull(ctx);
	ck_assert_int_eq(sa_nonce_key_set(ctx, 1, secret1), 0);
	return ctx;
}

static void issue(struct sa_nonce_ctx *ctx, uint64_t now, char out[SA_NONCE_LEN + 1])
{
	ck_assert_int_eq(sa_nonce_issue(ctx, REALM, SA_ALG_SHA256, now, out), 0);
}

static enum sa_nonce_status check_at(const struct sa_nonce_ctx *ctx, const char *nonce, uint64_t now,
                                     struct sa_nonce_info *info)
{
	return sa_nonce_check(ctx, nonce, strlen(nonce), REALM, SA_ALG_SHA256, now, info);
}

START_TEST(test_issue_then_check_round_trips)
{
	struct sa_nonce_ctx *ctx = ctx_with_key(16);
	char nonce[SA_NONCE_LEN + 1];
	struct sa_nonce_info info = { 0 };

	issue(ctx, NOW, nonce);
	ck_assert_uint_eq(strlen(nonce), SA_NONCE_LEN);
	ck_assert_uint_eq(strspn(nonce, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
	                  SA_NONCE_LEN);
	ck_assert_uint_eq(SA_NONCE_LEN, 44);
	ck_assert_int_eq(check_at(ctx, nonce, NOW, &info), SA_NONCE_OK);
	ck_assert(info.authentic);
	ck_assert(!info.other_instance);
	ck_assert_uint_eq(info.key_id, 1);
	ck_assert_uint_eq(info.issued, NOW);
	ck_assert_int_eq(check_at(ctx, nonce, NOW + TTL, NULL), SA_NONCE_OK);
	sa_nonce_ctx_free(ctx);
}
END_TEST

static int b64url_digit(char c)
{
	const char *alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	const char *p = strchr(alphabet, c);
	return p && c ? (int)(p - alphabet) : -1;
}

static void b64url_decode_test(const char *in, size_t len, unsigned char *raw)
{
	for (size_t i = 0; i < len; i += 4) {
		unsigned v = 0;
		for (int j = 0; j < 4; j++) {
			int d = b64url_digit(in[i + j]);
			ck_assert_int_ge(d, 0);
			v = v << 6 | (unsigned)d;
		}
		raw[i / 4 * 3] = (unsigned char)(v >> 16);
		raw[i / 4 * 3 + 1] = (unsigned char)(v >> 8);
		raw[i / 4 * 3 + 2] = (unsigned char)v;
	}
}

static void b64url_encode_test(const unsigned char *raw, size_t len, char *out)
{
	const char *alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

	for (size_t i = 0; i < len; i += 3, out += 4) {
		unsigned v = (unsigned)raw[i] << 16 | (unsigned)raw[i + 1] << 8 | raw[i + 2];
		for (int j = 0; j < 4; j++)
			out[j] = alphabet[v >> (18 - 6 * j) & 0x3f];
	}
	*out = '\0';
}

/* The layout nonce.h documents, checked against OpenSSL's own HMAC(): bytes
 * 17..32 are HMAC-SHA256(secret, bytes 0..16 || realm) truncated to 16, and
 * bytes 11..16 are the context's instance. */
START_TEST(test_layout_and_mac_match_the_documentation)
{
	struct sa_nonce_ctx *ctx = ctx_with_key(16);
	char nonce[SA_NONCE_LEN + 1];
	unsigned char raw[SA_NONCE_RAW_LEN], msg[17 + sizeof(REALM)], mac[32], instance[SA_NONCE_INSTANCE_LEN];
	unsigned int maclen = 0;

	issue(ctx, NOW, nonce);
	b64url_decode_test(nonce, SA_NONCE_LEN, raw);
	ck_assert_uint_eq(raw[0], 2);                 /* version */
	ck_assert_uint_eq(raw[1], 1);                 /* key id */
	ck_assert_uint_eq(raw[2], SA_ALG_SHA256);
	ck_assert_uint_eq((unsigned)raw[3] << 24 | (unsigned)raw[4] << 16 | (unsigned)raw[5] << 8 | raw[6], NOW);
	sa_nonce_instance(ctx, instance);
	ck_assert_mem_eq(raw + 11, instance, SA_NONCE_INSTANCE_LEN);
	memcpy(msg, raw, 17);
	memcpy(msg + 17, REALM, strlen(REALM));
	HMAC(EVP_sha256(), secret1, sizeof(secret1), msg, 17 + strlen(REALM), mac, &maclen);
	ck_assert_uint_eq(maclen, 32);
	ck_assert_mem_eq(raw + 17, mac, 16);
	sa_nonce_ctx_free(ctx);
}
END_TEST

/* A version 1 nonce (before the upgrade: 27 bytes, MAC over bytes 0..10),
 * even one MACed with a key this context holds, is stale and not ours: the
 * process that issued it, and its replay table, are gone. */
START_TEST(test_version1_nonce_is_stale_not_authentic)
{
	struct sa_nonce_ctx *ctx = ctx_with_key(16);
	unsigned char raw[27] = { 1, 1, SA_ALG_SHA256 }, msg[11 + sizeof(REALM)], mac[32];
	char nonce[SA_NONCE_V1_LEN + 1];
	unsigned int maclen = 0;
	struct sa_nonce_info info = { 0 };

	raw[3] = (unsigned char)(NOW >> 24), raw[4] = (unsigned char)(NOW >> 16);
	raw[5] = (unsigned char)(NOW >> 8), raw[6] = (unsigned char)NOW;
	raw[10] = 7;
	memcpy(msg, raw, 11);
	memcpy(msg + 11, REALM, strlen(REALM));
	HMAC(EVP_sha256(), secret1, sizeof(secret1), msg, 11 + strlen(REALM), mac, &maclen);
	memcpy(raw + 11, mac, 16);
	b64url_encode_test(raw, sizeof(raw), nonce);
	ck_assert_uint_eq(strlen(nonce), 36);
	ck_assert_int_eq(check_at(ctx, nonce, NOW, &info), SA_NONCE_STALE);
	ck_assert(!info.authentic);
	ck_assert(!info.other_instance);
	ck_assert_uint_eq(info.key_id, 1);
	ck_assert_uint_eq(info.issued, NOW);
	ck_assert_uint_eq(info.counter, 7);
	/* for another algorithm it is garbage, as a version 2 nonce would be */
	ck_assert_int_eq(sa_nonce_check(ctx, nonce, strlen(nonce), REALM, SA_ALG_MD5, NOW, NULL), SA_NONCE_INVALID);
	sa_nonce_ctx_free(ctx);
}
END_TEST

START_TEST(test_every_algorithm_round_trips)
{
	struct sa_nonce_ctx *ctx = ctx_with_key(16);
	char nonce[SA_NONCE_LEN + 1];

	for (int alg = 0; alg < SA_ALG_COUNT; alg++) {
		ck_assert_int_eq(sa_nonce_issue(ctx, REALM, (enum sa_digest_alg)alg, NOW, nonce), 0);
		ck_assert_int_eq(sa_nonce_check(ctx, nonce, SA_NONCE_LEN, REALM, (enum sa_digest_alg)alg,
		                                NOW, NULL), SA_NONCE_OK);
	}
	ck_assert_int_eq(sa_nonce_issue(ctx, REALM, SA_ALG_COUNT, NOW, nonce), -1);
	sa_nonce_ctx_free(ctx);
}
END_TEST

START_TEST(test_expired_nonce_is_stale_with_info)
{
	struct sa_nonce_ctx *ctx = ctx_with_key(16);
	char nonce[SA_NONCE_LEN + 1];
	struct sa_nonce_info info = { 0 };

	issue(ctx, NOW, nonce);
	ck_assert_int_eq(check_at(ctx, nonce, NOW + TTL + 1, &info), SA_NONCE_STALE);
	ck_assert_uint_eq(info.issued, NOW);
	ck_assert_uint_eq(info.key_id, 1);
	ck_assert(info.authentic);   /* ours, only old */
	sa_nonce_ctx_free(ctx);
}
END_TEST

static char flip_low_bit(char c);

/* A nonce of ours for a time still to come: the wall clock was put back
 * after it was issued. Stale (a fresh nonce, no verdict), never invalid: the
 * client's right answer must not read as a wrong password. */
START_TEST(test_nonce_from_the_future_is_stale)
{
	struct sa_nonce_ctx *ctx = ctx_with_key(16);
	char nonce[SA_NONCE_LEN + 1];
	struct sa_nonce_info info;

	issue(ctx, NOW, nonce);
	ck_assert_int_eq(check_at(ctx, nonce, NOW - 2, NULL), SA_NONCE_OK);
	ck_assert_int_eq(check_at(ctx, nonce, NOW - 3600, &info), SA_NONCE_STALE);
	ck_assert(!info.authentic);   /* no verdict on its answer */
	ck_assert(info.future);
	ck_assert_uint_eq(info.issued, NOW);
	/* a forged one for the future is still invalid */
	nonce[5] = flip_low_bit(nonce[5]);
	ck_assert_int_eq(check_at(ctx, nonce, NOW - 3600, NULL), SA_NONCE_INVALID);
	sa_nonce_ctx_free(ctx);
}
END_TEST

/* c with the low bit of its 6-bit value flipped: one bit of the nonce, at
 * bit 6i+5 for the i-th character. */
static char flip_low_bit(char c)
{
	static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	const char *at = strchr(alphabet, c);
	ck_assert_ptr_nonnull(at);
	return alphabet[(at - alphabet) ^ 1];
}

START_TEST(test_tampered_character_is_refused)
{
	struct sa_nonce_ctx *ctx = ctx_with_key(16);
	char nonce[SA_NONCE_LEN + 1];

	issue(ctx, NOW, nonce);
	for (int i = 0; i < SA_NONCE_LEN; i++) {
		char orig = nonce[i];
		enum sa_nonce_status st;

		nonce[i] = flip_low_bit(orig);
		struct sa_nonce_info info = { 0 };
		st = check_at(ctx, nonce, NOW, &info);
		/* characters 1..3 also carry the key id: an unknown one is stale, not
		 * invalid; so is another instance under a MAC that fails (an earlier
		 * start's nonce, its key id drawn again): the low bit of characters
		 * 14..21 is in bytes 11..16. Neither is authentic; the rest is invalid */
		if (i >= 14 && i <= 21)
			ck_assert_msg(st == SA_NONCE_STALE && !info.authentic && !info.other_instance, "char %d: %d", i, st);
		else if (i >= 4 || i == 0)
			ck_assert_msg(st == SA_NONCE_INVALID, "char %d: %d", i, st);
		else
			ck_assert_msg(st != SA_NONCE_OK && !info.authentic, "char %d", i);
		nonce[i] = orig;
	}
	ck_assert_int_eq(check_at(ctx, nonce, NOW, NULL), SA_NONCE_OK);
	sa_nonce_ctx_free(ctx);
}
END_TEST

START_TEST(test_wrong_realm_is_invalid)
{
	struct sa_nonce_ctx *ctx = ctx_with_key(16);
	char nonce[SA_NONCE_LEN + 1];

	issue(ctx, NOW, nonce);
	ck_assert_int_eq(sa_nonce_check(ctx, nonce, SA_NONCE_LEN, "trunk-trunk_4f2b.sip.example.net",
	                                SA_ALG_SHA256, NOW, NULL), SA_NONCE_INVALID);
	ck_assert_int_eq(sa_nonce_check(ctx, nonce, SA_NONCE_LEN, "", SA_ALG_SHA256, NOW, NULL),
	                 SA_NONCE_INVALID);
	ck_assert_int_eq(sa_nonce_check(ctx, nonce, SA_NONCE_LEN, NULL, SA_ALG_SHA256, NOW, NULL),
	                 SA_NONCE_INVALID);
	sa_nonce_ctx_free(ctx);
}
END_TEST

START_TEST(test_wrong_algorithm_is_invalid)
{
	struct sa_nonce_ctx *ctx = ctx_with_key(16);
	char nonce[SA_NONCE_LEN + 1];

	issue(ctx, NOW, nonce);
	ck_assert_int_eq(sa_nonce_check(ctx, nonce, SA_NONCE_LEN, REALM, SA_ALG_MD5, NOW, NULL),
	                 SA_NONCE_INVALID);
	ck_assert_int_eq(sa_nonce_check(ctx, nonce, SA_NONCE_LEN, REALM, SA_ALG_SHA512_256, NOW, NULL),
	                 SA_NONCE_INVALID);
	sa_nonce_ctx_free(ctx);
}
END_TEST

START_TEST(test_garbage_is_invalid)
{
	struct sa_nonce_ctx *ctx = ctx_with_key(16);
	char nonce[SA_NONCE_LEN + 1], longer[2 * SA_NONCE_LEN + 1];
	char *huge = malloc(4096);

	ck_assert_ptr_nonnull(huge);
	memset(huge, 'A', 4096);
	issue(ctx, NOW, nonce);
	ck_assert_int_eq(sa_nonce_check(ctx, "", 0, REALM, SA_ALG_SHA256, NOW, NULL), SA_NONCE_INVALID);
	ck_assert_int_eq(sa_nonce_check(ctx, NULL, 0, REALM, SA_ALG_SHA256, NOW, NULL), SA_NONCE_INVALID);
	ck_assert_int_eq(sa_nonce_check(ctx, nonce, SA_NONCE_LEN - 1, REALM, SA_ALG_SHA256, NOW, NULL),
	                 SA_NONCE_INVALID);
	ck_assert_int_eq(sa_nonce_check(ctx, huge, 4096, REALM, SA_ALG_SHA256, NOW, NULL),
	                 SA_NONCE_INVALID);
	snprintf(longer, sizeof(longer), "%sA", nonce);
	ck_assert_int_eq(check_at(ctx, longer, NOW, NULL), SA_NONCE_INVALID);
	snprintf(longer, sizeof(longer), "%s%s", nonce, nonce);
	ck_assert_int_eq(check_at(ctx, longer, NOW, NULL), SA_NONCE_INVALID);
	/* characters from the other base64 alphabet, padding, quotes and non-ASCII */
	const char *bad_chars = "+/=\"\\ \x80\xff";
	for (const char *c = bad_chars; *c != '\0'; c++) {
		char copy[SA_NONCE_LEN + 1];

		memcpy(copy, nonce, sizeof(copy));
		copy[17] = *c;
		ck_assert_int_eq(check_at(ctx, copy, NOW, NULL), SA_NONCE_INVALID);
	}
	ck_assert_int_eq(check_at(ctx, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", NOW, NULL), SA_NONCE_INVALID);
	ck_assert_int_eq(check_at(ctx, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", NOW, NULL), SA_NONCE_INVALID);
	free(huge);
	sa_nonce_ctx_free(ctx);
}
END_TEST

START_TEST(test_no_key_no_nonce)
{
	struct sa_nonce_ctx *ctx = sa_nonce_ctx_new(TTL, 16);
	char nonce[SA_NONCE_LEN + 1];

	ck_assert_ptr_nonnull(ctx);
	ck_assert_int_eq(sa_nonce_issue(ctx, REALM, SA_ALG_MD5, NOW, nonce), -1);
	sa_nonce_ctx_free(ctx);
}
END_TEST

START_TEST(test_key_rotation_keeps_the_last_three_keys)
{
	struct sa_nonce_ctx *ctx = ctx_with_key(16);
	char n1[SA_NONCE_LEN + 1], n2[SA_NONCE_LEN + 1];
	struct sa_nonce_info info;

	issue(ctx, NOW, n1);
	ck_assert_int_eq(sa_nonce_key_set(ctx, 2, secret2), 0);
	ck_assert_int_eq(check_at(ctx, n1, NOW + 1, NULL), SA_NONCE_OK);
	issue(ctx, NOW + 1, n2);
	ck_assert_int_eq(check_at(ctx, n2, NOW + 1, &info), SA_NONCE_OK);
	ck_assert_uint_eq(info.key_id, 2);
	ck_assert_int_eq(sa_nonce_key_set(ctx, 3, secret3), 0);
	ck_assert_int_eq(check_at(ctx, n1, NOW + 2, NULL), SA_NONCE_OK);   /* key 1 is the third */
	ck_assert_int_eq(sa_nonce_key_set(ctx, 3, secret3), 0);            /* the current again: no change */
	ck_assert_int_eq(check_at(ctx, n1, NOW + 2, NULL), SA_NONCE_OK);
	ck_assert_int_eq(sa_nonce_key_set(ctx, 4, secret1), 0);
	ck_assert_int_eq(check_at(ctx, n1, NOW + 2, &info), SA_NONCE_STALE);
	ck_assert_uint_eq(info.key_id, 1);
	ck_assert(!info.authentic);   /* no live key vouches for it */
	ck_assert_int_eq(check_at(ctx, n2, NOW + 2, NULL), SA_NONCE_OK);
	sa_nonce_ctx_free(ctx);
}
END_TEST

/* A fleet node issues nonces with a key of its own until its first
 * heartbeat installs the database's previous and current key. Its nonces
 * stay good after that, also when its key drew the id of one of the
 * database's (1 in 255 each): both secrets are live under that id. */
START_TEST(test_start_up_key_outlives_the_database_keys_arriving)
{
	for (int collide = 0; collide < 2; collide++) {
		struct sa_nonce_ctx *ctx = sa_nonce_ctx_new(TTL, 16);
		char n[SA_NONCE_LEN + 1], d[SA_NONCE_LEN + 1];
		struct sa_nonce_info info;

		ck_assert_int_eq(sa_nonce_key_set(ctx, 7, secret1), 0);   /* the start-up key */
		issue(ctx, NOW, n);
		ck_assert_int_eq(sa_nonce_key_set(ctx, collide ? 7 : 6, secret2), 0);   /* the database's previous */
		ck_assert_int_eq(sa_nonce_key_set(ctx, 8, secret3), 0);                 /* ... and current */
		ck_assert_uint_eq(sa_nonce_key_current(ctx), 8);
		ck_assert_int_eq(check_at(ctx, n, NOW + 1, &info), SA_NONCE_OK);
		ck_assert(info.authentic);
		ck_assert_uint_eq(info.key_id, 7);
		/* a nonce under the id with neither secret's MAC is still a forgery */
		memcpy(d, n, sizeof(d));
		d[30] = d[30] == 'A' ? 'B' : 'A';
		ck_assert_int_eq(check_at(ctx, d, NOW + 1, NULL), SA_NONCE_INVALID);
		/* the next rotation retires the start-up key */
		ck_assert_int_eq(sa_nonce_key_set(ctx, 9, secret1), 0);
		ck_assert_int_eq(check_at(ctx, n, NOW + 2, &info), collide ? SA_NONCE_INVALID : SA_NONCE_STALE);
		sa_nonce_ctx_free(ctx);
	}
}
END_TEST

/* A restart that draws the previous run's key id again, with another
 * secret: the old run's nonce fails the MAC, and its instance is not ours.
 * It is stale (a fresh nonce, stale=true, no verdict on the password), as a
 * nonce of a key id we do not hold is, not a malformed answer: 1 restart in
 * 255 would otherwise tell every PBX answering an old nonce that its
 * password is wrong. */
START_TEST(test_other_secret_same_key_id_is_stale)
{
	struct sa_nonce_ctx *a = ctx_with_key(16);
	struct sa_nonce_ctx *b = sa_nonce_ctx_new(TTL, 16);
	char nonce[SA_NONCE_LEN + 1];
	struct sa_nonce_info info = { 0 };

	ck_assert_ptr_nonnull(b);
	ck_assert_int_eq(sa_nonce_key_set(b, 1, secret2), 0);
	issue(a, NOW, nonce);
	ck_assert_int_eq(check_at(b, nonce, NOW, &info), SA_NONCE_STALE);
	ck_assert(!info.authentic);
	ck_assert(!info.other_instance);
	ck_assert_uint_eq(info.key_id, 1);
	sa_nonce_ctx_free(a);
	sa_nonce_ctx_free(b);
}
END_TEST

/* A fleet's nodes share the keys: another node's nonce verifies (it is no
 * forgery) but is stale, marked as another instance's and not ours, fresh
 * or expired; its own node still accepts it. A restart is a new instance. */
START_TEST(test_another_instance_with_same_secret_is_stale)
{
	struct sa_nonce_ctx *a = ctx_with_key(16);
	struct sa_nonce_ctx *b = ctx_with_key(16);
	char nonce[SA_NONCE_LEN + 1];
	struct sa_nonce_info info = { 0 };
	unsigned char ia[SA_NONCE_INSTANCE_LEN], ib[SA_NONCE_INSTANCE_LEN];

	sa_nonce_instance(a, ia);
	sa_nonce_instance(b, ib);
	ck_assert(memcmp(ia, ib, sizeof(ia)) != 0);
	issue(a, NOW, nonce);
	ck_assert_int_eq(check_at(b, nonce, NOW, &info), SA_NONCE_STALE);
	ck_assert(info.other_instance);
	ck_assert(!info.authentic);
	ck_assert_uint_eq(info.key_id, 1);
	ck_assert_int_eq(check_at(b, nonce, NOW + TTL + 1, &info), SA_NONCE_STALE);
	ck_assert(info.other_instance);
	ck_assert_int_eq(check_at(a, nonce, NOW, &info), SA_NONCE_OK);
	ck_assert(!info.other_instance);
	/* the id installed again with another secret keeps the first one live:
	 * still known to be another node's, and still good where it was issued */
	ck_assert_int_eq(sa_nonce_key_set(b, 1, secret2), 0);
	ck_assert_int_eq(check_at(b, nonce, NOW, &info), SA_NONCE_STALE);
	ck_assert(info.other_instance);
	ck_assert(!info.authentic);
	ck_assert_int_eq(sa_nonce_key_set(a, 1, secret2), 0);
	ck_assert_int_eq(check_at(a, nonce, NOW, NULL), SA_NONCE_OK);
	/* once no secret that made it is held: a key id we hold, a MAC that
	 * fails; another instance's is stale, our own a forgery */
	ck_assert_int_eq(sa_nonce_key_set(a, 1, secret3), 0);
	ck_assert_int_eq(sa_nonce_key_set(a, 1, secret2), 0);
	ck_assert_int_eq(check_at(a, nonce, NOW, NULL), SA_NONCE_INVALID);
	ck_assert_int_eq(sa_nonce_key_set(b, 1, secret3), 0);
	ck_assert_int_eq(sa_nonce_key_set(b, 1, secret2), 0);
	ck_assert_int_eq(check_at(b, nonce, NOW, &info), SA_NONCE_STALE);
	ck_assert(!info.other_instance);
	sa_nonce_ctx_free(a);
	sa_nonce_ctx_free(b);
}
END_TEST

START_TEST(test_current_key_id)
{
	struct sa_nonce_ctx *ctx = sa_nonce_ctx_new(TTL, 16);

	ck_assert_uint_eq(sa_nonce_key_current(ctx), 0);
	ck_assert_int_eq(sa_nonce_key_set(ctx, 9, secret1), 0);
	ck_assert_uint_eq(sa_nonce_key_current(ctx), 9);
	ck_assert_int_eq(sa_nonce_key_set(ctx, 10, secret2), 0);
	ck_assert_uint_eq(sa_nonce_key_current(ctx), 10);
	ck_assert_uint_eq(sa_nonce_key_current(NULL), 0);
	sa_nonce_ctx_free(ctx);
}
END_TEST

static int cmp_nonce(const void *a, const void *b)
{
	return memcmp(a, b, SA_NONCE_LEN + 1);
}

START_TEST(test_consecutive_nonces_are_unique)
{
	enum { N = 2000 };
	struct sa_nonce_ctx *ctx = ctx_with_key(16);
	char (*nonces)[SA_NONCE_LEN + 1] = calloc(N, sizeof(*nonces));

	ck_assert_ptr_nonnull(nonces);
	for (int i = 0; i < N; i++)
		issue(ctx, NOW, nonces[i]);
	qsort(nonces, N, sizeof(*nonces), cmp_nonce);
	for (int i = 1; i < N; i++)
		ck_assert_str_ne(nonces[i - 1], nonces[i]);
	free(nonces);
	sa_nonce_ctx_free(ctx);
}
END_TEST

static struct sa_nonce_info issue_checked(struct sa_nonce_ctx *ctx, uint64_t now)
{
	char nonce[SA_NONCE_LEN + 1];
	struct sa_nonce_info info;

	issue(ctx, now, nonce);
	ck_assert_int_eq(check_at(ctx, nonce, now, &info), SA_NONCE_OK);
	return info;
}

/* The very request that used an nc, sent again (same tag): a retransmission;
 * anything else with that nc, or an untagged one: a replay. */
START_TEST(test_tagged_retransmission_is_told_from_a_replay)
{
	struct sa_nonce_ctx *ctx = ctx_with_key(16);
	struct sa_nonce_info info = issue_checked(ctx, NOW);

	ck_assert_int_eq(sa_nonce_use_tagged(ctx, &info, 1, 0xabcd, NOW), SA_NONCE_OK);
	ck_assert_int_eq(sa_nonce_use_tagged(ctx, &info, 1, 0xabcd, NOW), SA_NONCE_RETRANSMISSION);
	ck_assert_int_eq(sa_nonce_use_tagged(ctx, &info, 1, 0xabce, NOW), SA_NONCE_REPLAY);
	ck_assert_int_eq(sa_nonce_use_tagged(ctx, &info, 1, 0, NOW), SA_NONCE_REPLAY);
	ck_assert_int_eq(sa_nonce_use(ctx, &info, 1, NOW), SA_NONCE_REPLAY);
	ck_assert_int_eq(sa_nonce_use_tagged(ctx, &info, 2, 0x1111, NOW), SA_NONCE_OK);
	/* the earlier request's nc is now below the highest: never again */
	ck_assert_int_eq(sa_nonce_use_tagged(ctx, &info, 1, 0xabcd, NOW), SA_NONCE_REPLAY);
	ck_assert_int_eq(sa_nonce_use_tagged(ctx, &info, 2, 0x1111, NOW), SA_NONCE_RETRANSMISSION);
	sa_nonce_ctx_free(ctx);
}
END_TEST

START_TEST(test_replayed_nc_is_refused)
{
	struct sa_nonce_ctx *ctx = ctx_with_key(16);
	struct sa_nonce_info info = issue_checked(ctx, NOW);

	ck_assert_int_eq(sa_nonce_use(ctx, &info, 1, NOW), SA_NONCE_OK);
	ck_assert_int_eq(sa_nonce_use(ctx, &info, 1, NOW), SA_NONCE_REPLAY);
	ck_assert_int_eq(sa_nonce_use(ctx, &info, 2, NOW + 1), SA_NONCE_OK);
	ck_assert_int_eq(sa_nonce_use(ctx, &info, 5, NOW + 2), SA_NONCE_OK);
	ck_assert_int_eq(sa_nonce_use(ctx, &info, 4, NOW + 3), SA_NONCE_REPLAY);
	ck_assert_int_eq(sa_nonce_use(ctx, &info, 5, NOW + 3), SA_NONCE_REPLAY);
	ck_assert_int_eq(sa_nonce_use(ctx, &info, 6, NOW + 3), SA_NONCE_OK);
	sa_nonce_ctx_free(ctx);
}
END_TEST

START_TEST(test_nc_is_tracked_per_nonce)
{
	struct sa_nonce_ctx *ctx = ctx_with_key(16);
	struct sa_nonce_info a = issue_checked(ctx, NOW), b = issue_checked(ctx, NOW);

	ck_assert_int_eq(sa_nonce_use(ctx, &a, 1, NOW), SA_NONCE_OK);
	ck_assert_int_eq(sa_nonce_use(ctx, &b, 1, NOW), SA_NONCE_OK);
	ck_assert_int_eq(sa_nonce_use(ctx, &a, 1, NOW), SA_NONCE_REPLAY);
	ck_assert_int_eq(sa_nonce_use(ctx, &b, 2, NOW), SA_NONCE_OK);
	sa_nonce_ctx_free(ctx);
}
END_TEST

START_TEST(test_use_after_expiry_is_stale)
{
	struct sa_nonce_ctx *ctx = ctx_with_key(16);
	struct sa_nonce_info info = issue_checked(ctx, NOW);

	ck_assert_int_eq(sa_nonce_use(ctx, &info, 1, NOW + TTL + 1), SA_NONCE_STALE);
	sa_nonce_ctx_free(ctx);
}
END_TEST

START_TEST(test_full_table_is_stale_until_entries_expire)
{
	enum { SLOTS = 4 };
	struct sa_nonce_ctx *ctx = ctx_with_key(SLOTS);
	struct sa_nonce_info held[SLOTS], extra;

	for (int i = 0; i < SLOTS; i++) {
		held[i] = issue_checked(ctx, NOW);
		ck_assert_int_eq(sa_nonce_use(ctx, &held[i], 1, NOW), SA_NONCE_OK);
	}
	extra = issue_checked(ctx, NOW + 10);
	ck_assert_int_eq(sa_nonce_use(ctx, &extra, 1, NOW + 10), SA_NONCE_STALE);
	/* no live entry was evicted to make room */
	for (int i = 0; i < SLOTS; i++)
		ck_assert_int_eq(sa_nonce_use(ctx, &held[i], 1, NOW + 10), SA_NONCE_REPLAY);
	/* once the held nonces expire their slots are reused */
	ck_assert_int_eq(sa_nonce_use(ctx, &extra, 1, NOW + TTL + 1), SA_NONCE_OK);
	ck_assert_int_eq(sa_nonce_use(ctx, &extra, 1, NOW + TTL + 1), SA_NONCE_REPLAY);
	for (int i = 0; i < SLOTS - 1; i++) {
		struct sa_nonce_info fresh = issue_checked(ctx, NOW + TTL + 1);

		ck_assert_int_eq(sa_nonce_use(ctx, &fresh, 1, NOW + TTL + 1), SA_NONCE_OK);
	}
	sa_nonce_ctx_free(ctx);
}
END_TEST

/* An expired entry may sit in front of a live one in its probe window; it must not hide it. */
START_TEST(test_expired_entries_do_not_hide_live_ones)
{
	enum { SLOTS = 8, ROUNDS = 32 };

	/* placement depends on each context's random hash seed, so try many */
	for (int round = 0; round < ROUNDS; round++) {
		struct sa_nonce_ctx *ctx = ctx_with_key(SLOTS);
		struct sa_nonce_info infos[SLOTS];

		for (int i = 0; i < SLOTS; i++) {
			uint64_t at = i % 2 == 0 ? NOW : NOW + 100;

			infos[i] = issue_checked(ctx, at);
			ck_assert_int_eq(sa_nonce_use(ctx, &infos[i], 1, at), SA_NONCE_OK);
		}
		for (int i = 1; i < SLOTS; i += 2)
			ck_assert_int_eq(sa_nonce_use(ctx, &infos[i], 1, NOW + TTL + 1), SA_NONCE_REPLAY);
		sa_nonce_ctx_free(ctx);
	}
}
END_TEST

START_TEST(test_large_table_holds_many_live_entries)
{
	enum { SLOTS = 4096, USED = SLOTS / 2 };
	struct sa_nonce_ctx *ctx = ctx_with_key(SLOTS);
	struct sa_nonce_info *infos = calloc(USED, sizeof(*infos));

	ck_assert_ptr_nonnull(infos);
	for (int i = 0; i < USED; i++) {
		infos[i] = issue_checked(ctx, NOW);
		ck_assert_int_eq(sa_nonce_use(ctx, &infos[i], 1, NOW), SA_NONCE_OK);
	}
	for (int i = 0; i < USED; i++)
		ck_assert_int_eq(sa_nonce_use(ctx, &infos[i], 1, NOW), SA_NONCE_REPLAY);
	free(infos);
	sa_nonce_ctx_free(ctx);
}
END_TEST

static Suite *nonce_suite(void)
{
	Suite *s = suite_create("nonce");
	TCase *check = tcase_create("check");
	TCase *replay = tcase_create("replay");

	tcase_add_test(check, test_issue_then_check_round_trips);
	tcase_add_test(check, test_layout_and_mac_match_the_documentation);
	tcase_add_test(check, test_every_algorithm_round_trips);
	tcase_add_test(check, test_expired_nonce_is_stale_with_info);
	tcase_add_test(check, test_nonce_from_the_future_is_stale);
	tcase_add_test(check, test_tampered_character_is_refused);
	tcase_add_test(check, test_wrong_realm_is_invalid);
	tcase_add_test(check, test_wrong_algorithm_is_invalid);
	tcase_add_test(check, test_garbage_is_invalid);
	tcase_add_test(check, test_no_key_no_nonce);
	tcase_add_test(check, test_key_rotation_keeps_the_last_three_keys);
	tcase_add_test(check, test_start_up_key_outlives_the_database_keys_arriving);
	tcase_add_test(check, test_other_secret_same_key_id_is_stale);
	tcase_add_test(check, test_another_instance_with_same_secret_is_stale);
	tcase_add_test(check, test_version1_nonce_is_stale_not_authentic);
	tcase_add_test(check, test_current_key_id);
	tcase_add_test(check, test_consecutive_nonces_are_unique);
	suite_add_tcase(s, check);
	tcase_add_test(replay, test_replayed_nc_is_refused);
	tcase_add_test(replay, test_nc_is_tracked_per_nonce);
	tcase_add_test(replay, test_tagged_retransmission_is_told_from_a_replay);
	tcase_add_test(replay, test_use_after_expiry_is_stale);
	tcase_add_test(replay, test_full_table_is_stale_until_entries_expire);
	tcase_add_test(replay, test_expired_entries_do_not_hide_live_ones);
	tcase_add_test(replay, test_large_table_holds_many_live_entries);
	suite_add_tcase(s, replay);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(nonce_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed != 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
