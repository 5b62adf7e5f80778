/* test_apilimit.c: per-key token buckets: exact allowances, refill, Retry-After, independence and the bounded table. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "apilimit.h"

static struct sa_apilimit *l;

static void setup(void)
{
	l = malloc(sizeof *l);
	ck_assert_ptr_nonnull(l);
	sa_apilimit_init(l);
}

static void teardown(void)
{
	free(l);
}

static const unsigned char *key(const char *k)
{
	static unsigned char h[SA_APILIMIT_HASH];

	sa_apilimit_key(k, strlen(k), h);
	return h;
}

/* How many of n requests at now_ms are allowed. */
static unsigned allowed(const char *k, unsigned n, unsigned rate, unsigned burst, int64_t now_ms)
{
	unsigned ok = 0;

	for (unsigned i = 0; i < n; i++)
		ok += sa_apilimit_take(l, key(k), rate, burst, now_ms) == 0;
	return ok;
}

START_TEST(test_burst_then_refused)
{
	ck_assert_uint_eq(allowed("a", 60, 20, 40, 1000), 40);
	ck_assert_uint_eq(l->refused, 20);
	ck_assert_uint_eq(sa_apilimit_take(l, key("a"), 20, 40, 1000), 1);   /* Retry-After: 1 */
}
END_TEST

START_TEST(test_refill_at_the_rate)
{
	ck_assert_uint_eq(allowed("a", 10, 1, 5, 0), 5);
	ck_assert_uint_eq(allowed("a", 5, 1, 5, 999), 0);
	ck_assert_uint_eq(allowed("a", 5, 1, 5, 1000), 1);
	ck_assert_uint_eq(allowed("a", 5, 1, 5, 3000), 2);
	ck_assert_uint_eq(allowed("a", 10, 20, 40, 3050), 1);   /* 50 ms at 20/s: one */
	ck_assert_uint_eq(allowed("a", 100, 1, 5, 100000), 5);  /* long idle: the burst, no more */
}
END_TEST

START_TEST(test_retry_after_whole_seconds)
{
	ck_assert_uint_eq(sa_apilimit_take(l, key("a"), 1, 1, 0), 0);
	ck_assert_uint_eq(sa_apilimit_take(l, key("a"), 1, 1, 0), 1);
	ck_assert_uint_eq(sa_apilimit_take(l, key("a"), 1, 1, 500), 1);   /* 0.5 s to go: 1 */
	ck_assert_uint_eq(sa_apilimit_take(l, key("b"), 1000, 1, 0), 0);
	ck_assert_uint_eq(sa_apilimit_take(l, key("b"), 1000, 1, 0), 1);   /* 1 ms to go: still 1 */
}
END_TEST

START_TEST(test_keys_are_independent)
{
	ck_assert_uint_eq(allowed("a", 10, 1, 3, 0), 3);
	ck_assert_uint_eq(allowed("b", 10, 1, 3, 0), 3);
	ck_assert_uint_eq(allowed("a", 1, 1, 3, 0), 0);
	ck_assert_uint_eq(sa_apilimit_keys(l), 2);
}
END_TEST

START_TEST(test_zero_rate_is_no_limit)
{
	ck_assert_uint_eq(allowed("a", 1000, 0, 40, 0), 1000);
	ck_assert_uint_eq(l->refused, 0);
	ck_assert_uint_eq(sa_apilimit_keys(l), 0);
}
END_TEST

START_TEST(test_table_is_bounded)
{
	char k[32];

	for (int i = 0; i < 100000; i++) {
		snprintf(k, sizeof k, "tvx_sk_live_made_up_%d", i);
		ck_assert_uint_eq(sa_apilimit_take(l, key(k), 20, 40, i), 0);   /* a new key: a full bucket */
	}
	ck_assert_uint_le(sa_apilimit_keys(l), SA_APILIMIT_KEYS);
	ck_assert_uint_ge(sa_apilimit_keys(l), SA_APILIMIT_KEYS * 9 / 10);
}
END_TEST

START_TEST(test_drained_key_outlives_a_flood_of_keys)
{
	char k[32];

	/* a key drained by a burst, then 20 000 made-up keys within a second,
	 * one request each: they hold more tokens than it, so they go first */
	ck_assert_uint_eq(allowed("busy", 50, 20, 40, 0), 40);
	for (int i = 0; i < 20000; i++) {
		snprintf(k, sizeof k, "scan_%d", i);
		ck_assert_uint_eq(sa_apilimit_take(l, key(k), 20, 40, i / 20), 0);
	}
	ck_assert_uint_eq(allowed("busy", 40, 20, 40, 1000), 20);   /* one second refilled 20, no more */
}
END_TEST

static Suite *apilimit_suite(void)
{
	Suite *s = suite_create("apilimit");
	TCase *tc = tcase_create("apilimit");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_burst_then_refused);
	tcase_add_test(tc, test_refill_at_the_rate);
	tcase_add_test(tc, test_retry_after_whole_seconds);
	tcase_add_test(tc, test_keys_are_independent);
	tcase_add_test(tc, test_zero_rate_is_no_limit);
	tcase_add_test(tc, test_table_is_bounded);
	tcase_add_test(tc, test_drained_key_outlives_a_flood_of_keys);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(apilimit_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
