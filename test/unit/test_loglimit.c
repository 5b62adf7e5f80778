/* test_loglimit.c: a flooding call site is cut to its budget and summarised; other sites are untouched. */
#include <check.h>
#include <stdlib.h>

#include "loglimit.h"

static const char SITE_A[] = "event=tls_close src=%s", SITE_B[] = "event=drop reason=%s";

struct seen {
	const void *key[8];
	uint32_t count[8];
	int n;
};

static void record(const void *key, uint32_t count, void *arg)
{
	struct seen *s = arg;
	s->key[s->n] = key;
	s->count[s->n++] = count;
}

START_TEST(a_flood_from_one_site_is_cut_to_the_budget)
{
	static struct sa_loglimit ll;
	uint32_t report;
	int written = 0;
	sa_loglimit_init(&ll, 10);
	/* 24 000 lines in one second, the rate the issue measured */
	for (int i = 0; i < 24000; i++)
		written += sa_loglimit_allow(&ll, SITE_A, 5000 + (uint64_t)i / 24, &report);
	ck_assert_int_eq(written, 10);
	ck_assert_uint_eq(ll.suppressed_total, 23990);
	/* the next window's first line carries the count of the last one */
	ck_assert(sa_loglimit_allow(&ll, SITE_A, 6000, &report));
	ck_assert_uint_eq(report, 23990);
	ck_assert(sa_loglimit_allow(&ll, SITE_A, 6001, &report));
	ck_assert_uint_eq(report, 0);
}
END_TEST

START_TEST(another_site_keeps_its_own_budget)
{
	static struct sa_loglimit ll;
	uint32_t report;
	sa_loglimit_init(&ll, 3);
	for (int i = 0; i < 100; i++)
		sa_loglimit_allow(&ll, SITE_A, 1000, &report);
	for (int i = 0; i < 3; i++)
		ck_assert(sa_loglimit_allow(&ll, SITE_B, 1000, &report));
	ck_assert(!sa_loglimit_allow(&ll, SITE_B, 1000, &report));
}
END_TEST

START_TEST(ended_windows_are_reported_once_by_the_flush)
{
	static struct sa_loglimit ll;
	struct seen s = { 0 };
	uint32_t report;
	sa_loglimit_init(&ll, 2);
	for (int i = 0; i < 7; i++)
		sa_loglimit_allow(&ll, SITE_A, 1000, &report);
	sa_loglimit_expired(&ll, 1500, false, record, &s);
	ck_assert_int_eq(s.n, 0);                           /* its window is still open */
	sa_loglimit_expired(&ll, 2000, false, record, &s);
	ck_assert_int_eq(s.n, 1);
	ck_assert_ptr_eq(s.key[0], SITE_A);
	ck_assert_uint_eq(s.count[0], 5);
	sa_loglimit_expired(&ll, 9000, false, record, &s);
	ck_assert_int_eq(s.n, 1);                           /* not twice */
	ck_assert(sa_loglimit_allow(&ll, SITE_A, 9001, &report));
	ck_assert_uint_eq(report, 0);
	/* at stop even an open window is reported */
	for (int i = 0; i < 5; i++)
		sa_loglimit_allow(&ll, SITE_B, 9100, &report);
	sa_loglimit_expired(&ll, 9101, true, record, &s);
	ck_assert_int_eq(s.n, 2);
	ck_assert_uint_eq(s.count[1], 3);
}
END_TEST

START_TEST(zero_means_no_limit)
{
	static struct sa_loglimit ll;
	uint32_t report;
	sa_loglimit_init(&ll, 0);
	for (int i = 0; i < 1000; i++)
		ck_assert(sa_loglimit_allow(&ll, SITE_A, 1000, &report));
	ck_assert_uint_eq(ll.suppressed_total, 0);
}
END_TEST

START_TEST(more_sites_than_slots_are_still_limited)
{
	static struct sa_loglimit ll;
	static char sites[2 * SA_LOGLIMIT_SITES];
	uint32_t report;
	unsigned written = 0;
	sa_loglimit_init(&ll, 1);
	for (int round = 0; round < 10; round++)
		for (unsigned i = 0; i < sizeof(sites); i++)
			written += sa_loglimit_allow(&ll, &sites[i], 1000, &report);
	/* every site gets at most its line; the ones past the table share one budget */
	ck_assert_uint_le(written, sizeof(sites));
	ck_assert_uint_ge(written, SA_LOGLIMIT_SITES / 2);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("loglimit");
	TCase *tc = tcase_create("loglimit");
	tcase_add_test(tc, a_flood_from_one_site_is_cut_to_the_budget);
	tcase_add_test(tc, another_site_keeps_its_own_budget);
	tcase_add_test(tc, ended_windows_are_reported_once_by_the_flush);
	tcase_add_test(tc, zero_means_no_limit);
	tcase_add_test(tc, more_sites_than_slots_are_still_limited);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
