/* test_shared.c: the modules the SIP workers share keep their counts when two threads use them at once. */
#include <check.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "abuse.h"
#include "connlimit.h"
#include "nonce.h"
#include "pace.h"
#include "policy.h"
#include "txn.h"

#define ROUNDS 20000

/* Runs fn(arg) on two threads at once and waits for both. */
static void twice_at_once(void *(*fn)(void *), void *arg)
{
	pthread_t a, b;
	ck_assert_int_eq(pthread_create(&a, NULL, fn, arg), 0);
	ck_assert_int_eq(pthread_create(&b, NULL, fn, arg), 0);
	pthread_join(a, NULL);
	pthread_join(b, NULL);
}

/* ---- bans: every failure counted once, exactly one starts the ban ---- */

struct abuse_run {
	struct sa_abuse *a;
	struct sa_abuse_cfg cfg;
	unsigned bans;   /* atomically added */
};

static void *abuse_thread(void *arg)
{
	struct abuse_run *r = arg;
	const unsigned char src[4] = { 192, 0, 2, 7 };
	for (int i = 0; i < ROUNDS; i++)
		if (sa_abuse_failure(r->a, &r->cfg, src, sizeof(src), 0, 1000))
			__atomic_add_fetch(&r->bans, 1, __ATOMIC_RELAXED);
	return NULL;
}

START_TEST(two_threads_count_every_failure_of_a_source)
{
	struct abuse_run r = { .a = sa_abuse_new(1024), .cfg = { .max_failures = 2 * ROUNDS, .window = 3600,
	                                                         .ban_time = 60 } };
	twice_at_once(abuse_thread, &r);
	ck_assert_uint_eq(r.bans, 1);   /* the 40 000th failure, whichever thread made it */
	const unsigned char src[4] = { 192, 0, 2, 7 };
	ck_assert(sa_abuse_banned(r.a, &r.cfg, src, sizeof(src), 1001));
	ck_assert_uint_eq(sa_abuse_banned_count(r.a, 1001), 1);
	sa_abuse_free(r.a);
}
END_TEST

/* ---- nonces: a nonce-count is taken once, whichever worker sees it first ---- */

#define NONCES 2000

struct nonce_run {
	struct sa_nonce_ctx *ctx;
	struct sa_nonce_info info[NONCES];
	unsigned ok, replays;
};

static void *nonce_thread(void *arg)
{
	struct nonce_run *r = arg;
	for (int i = 0; i < NONCES; i++) {
		enum sa_nonce_status st = sa_nonce_use(r->ctx, &r->info[i], 1, 100);
		if (st == SA_NONCE_OK)
			__atomic_add_fetch(&r->ok, 1, __ATOMIC_RELAXED);
		else if (st == SA_NONCE_REPLAY)
			__atomic_add_fetch(&r->replays, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

START_TEST(a_nonce_count_is_accepted_once_across_threads)
{
	static struct nonce_run r;
	unsigned char secret[SA_NONCE_SECRET_LEN];
	memset(secret, 7, sizeof(secret));
	r.ctx = sa_nonce_ctx_new(300, 1u << 16);
	r.ok = r.replays = 0;
	ck_assert_int_eq(sa_nonce_key_set(r.ctx, 1, secret), 0);
	for (int i = 0; i < NONCES; i++) {
		char n[SA_NONCE_LEN + 1];
		ck_assert_int_eq(sa_nonce_issue(r.ctx, "realm", SA_ALG_MD5, 100, n), 0);
		ck_assert_int_eq(sa_nonce_check(r.ctx, n, strlen(n), "realm", SA_ALG_MD5, 100, &r.info[i]), SA_NONCE_OK);
	}
	twice_at_once(nonce_thread, &r);
	ck_assert_uint_eq(r.ok, NONCES);        /* each nonce once */
	ck_assert_uint_eq(r.replays, NONCES);   /* and refused to the other thread */
	sa_nonce_ctx_free(r.ctx);
}
END_TEST

struct issue_run {
	struct sa_nonce_ctx *ctx;
	char (*out)[SA_NONCE_LEN + 1];
	unsigned next;
};

static void *issue_thread(void *arg)
{
	struct issue_run *r = arg;
	for (int i = 0; i < ROUNDS; i++) {
		unsigned slot = __atomic_fetch_add(&r->next, 1, __ATOMIC_RELAXED);
		ck_assert_int_eq(sa_nonce_issue(r->ctx, "realm", SA_ALG_SHA256, 100, r->out[slot]), 0);
	}
	return NULL;
}

static int cmp_nonce(const void *a, const void *b)
{
	return strcmp(a, b);
}

START_TEST(nonces_issued_by_two_threads_are_all_different)
{
	unsigned char secret[SA_NONCE_SECRET_LEN];
	memset(secret, 9, sizeof(secret));
	struct issue_run r = { .ctx = sa_nonce_ctx_new(300, 0), .out = calloc(2 * ROUNDS, SA_NONCE_LEN + 1) };
	ck_assert_int_eq(sa_nonce_key_set(r.ctx, 2, secret), 0);
	twice_at_once(issue_thread, &r);
	qsort(r.out, 2 * ROUNDS, SA_NONCE_LEN + 1, cmp_nonce);
	for (int i = 1; i < 2 * ROUNDS; i++)
		ck_assert_str_ne(r.out[i - 1], r.out[i]);
	free(r.out);
	sa_nonce_ctx_free(r.ctx);
}
END_TEST

/* ---- connections: admitted and released from two threads, nothing left over ---- */

struct conn_run {
	struct sa_connlimit *cl;
	struct sa_connlimit_cfg cfg;
};

static void *conn_thread(void *arg)
{
	struct conn_run *r = arg;
	const unsigned char src[4] = { 198, 51, 100, 1 };
	for (int i = 0; i < ROUNDS; i++) {
		struct sa_connsrc *s;
		ck_assert_int_eq(sa_connlimit_admit(r->cl, &r->cfg, src, sizeof(src), true, &s), SA_CONN_OK);
		sa_connlimit_handshake_done(r->cl, s);
		sa_connlimit_release(r->cl, s, false);
	}
	return NULL;
}

START_TEST(connections_from_two_threads_leave_nothing_counted)
{
	struct conn_run r = { .cl = sa_connlimit_new(64, 5), .cfg = { .max_connections = 4, .max_connections_per_source = 4,
	                                                              .max_handshakes = 4, .max_handshakes_per_source = 4 } };
	twice_at_once(conn_thread, &r);
	ck_assert_uint_eq(sa_connlimit_connections(r.cl), 0);
	ck_assert_uint_eq(sa_connlimit_handshakes(r.cl), 0);
	ck_assert_uint_eq(sa_connlimit_sources(r.cl), 0);
	sa_connlimit_free(r.cl);
}
END_TEST

/* ---- trunk channels: two workers admitting calls never go past the limit ---- */

struct trunk_run {
	struct sa_trunk_table *t;
	struct sa_trunk_policy pol;
	unsigned admitted, refused;
};

static void *trunk_thread(void *arg)
{
	struct trunk_run *r = arg;
	for (int i = 0; i < 1000; i++) {
		enum sa_policy_verdict v;
		ck_assert_int_eq(sa_trunk_admit(r->t, "trunk_a", &r->pol, false, 0, &v), 0);
		__atomic_add_fetch(v == SA_POLICY_ADMIT ? &r->admitted : &r->refused, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

START_TEST(trunk_channels_hold_across_threads)
{
	struct trunk_run r = { .t = sa_trunk_table_new() };
	sa_policy_default(&r.pol);
	r.pol.max_concurrent_calls = 1500;
	twice_at_once(trunk_thread, &r);
	ck_assert_uint_eq(r.admitted, 1500);
	ck_assert_uint_eq(r.refused, 500);
	ck_assert_uint_eq(sa_trunk_usage(r.t, "trunk_a")->channels, 1500);
	for (int i = 0; i < 1500; i++)
		sa_trunk_release(r.t, "trunk_a");
	ck_assert_uint_eq(sa_trunk_usage(r.t, "trunk_a")->channels, 0);
	sa_trunk_table_free(r.t);
}
END_TEST

/* ---- our branch names the worker that sent the request ---- */

/* Two workers pacing BYEs to one gateway: the shared allowance grants no
 * more between them than the rate allows (a burst, then 1000/s). */
struct pace_run {
	struct sa_pace_shared *sh;
	long sent;   /* summed by both threads under __atomic */
};

static void pace_count(void *payload, void *arg)
{
	(void)payload;
	__atomic_add_fetch(&((struct pace_run *)arg)->sent, 1, __ATOMIC_RELAXED);
}

static void *pace_thread(void *arg)
{
	struct pace_run *r = arg;
	struct sa_pacer *p = sa_pacer_new();
	sa_pacer_share(p, r->sh);
	for (intptr_t i = 0; i < 3000; i++)
		sa_pacer_push(p, "gw", 2, (void *)i);
	for (uint64_t t = 0; t < 1000; t++)   /* one second, a run every millisecond */
		sa_pacer_run(p, 1000, t, pace_count, r);
	sa_pacer_free(p);
	return NULL;
}

START_TEST(two_pacers_keep_one_rate_per_destination)
{
	struct pace_run r = { .sh = sa_pace_shared_new() };
	twice_at_once(pace_thread, &r);
	/* the first burst (10) and 999 ms at 1000/s: never the 2 x 1009 two pacers of their own would send */
	ck_assert_int_le(r.sent, 1009);
	ck_assert_int_ge(r.sent, 500);
	sa_pace_shared_free(r.sh);
}
END_TEST

START_TEST(a_branch_names_its_worker)
{
	char b[SA_TXN_BRANCH_LEN + 1];
	for (unsigned w = 0; w < 64; w++) {
		ck_assert_int_eq(sa_txn_branch_new_for(b, w), 0);
		ck_assert_uint_eq(strlen(b), SA_TXN_BRANCH_LEN);
		ck_assert_int_eq(strncmp(b, "z9hG4bK", 7), 0);
		ck_assert_int_eq(sa_txn_branch_worker(b), (int)w);
	}
	ck_assert_int_eq(sa_txn_branch_new_for(b, 64), -1);
	ck_assert_int_eq(sa_txn_branch_worker("z9hG4bK-3391-11-2"), -1);   /* another's shape */
	ck_assert_int_eq(sa_txn_branch_worker("z9hG4bK!AAAAAAAAAAAAAAAAAAAAA"), -1);
	ck_assert_int_eq(sa_txn_branch_worker(NULL), -1);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("shared");
	TCase *tc = tcase_create("shared");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, two_threads_count_every_failure_of_a_source);
	tcase_add_test(tc, a_nonce_count_is_accepted_once_across_threads);
	tcase_add_test(tc, nonces_issued_by_two_threads_are_all_different);
	tcase_add_test(tc, connections_from_two_threads_leave_nothing_counted);
	tcase_add_test(tc, trunk_channels_hold_across_threads);
	tcase_add_test(tc, a_branch_names_its_worker);
	tcase_add_test(tc, two_pacers_keep_one_rate_per_destination);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
