/* test_abuse.c: failure windows, bans and their expiry, a full table keeping its bans. */
#include <check.h>
#include <stdlib.h>

#include "abuse.h"

static const unsigned char A[4] = { 192, 0, 2, 1 }, B[4] = { 192, 0, 2, 2 };
static const struct sa_abuse_cfg cfg = { .max_failures = 3, .window = 60, .ban_time = 600 };

START_TEST(third_failure_in_window_bans)
{
	struct sa_abuse *a = sa_abuse_new(1024);
	ck_assert_ptr_nonnull(a);
	ck_assert(!sa_abuse_failure(a, &cfg, A, 4, 1000));
	ck_assert(!sa_abuse_failure(a, &cfg, A, 4, 1001));
	ck_assert(!sa_abuse_banned(a, &cfg, A, 4, 1001));
	ck_assert(sa_abuse_failure(a, &cfg, A, 4, 1002));
	ck_assert(sa_abuse_banned(a, &cfg, A, 4, 1002));
	ck_assert(!sa_abuse_banned(a, &cfg, B, 4, 1002));
	ck_assert_uint_eq(sa_abuse_banned_count(a, 1002), 1);
	ck_assert(sa_abuse_banned(a, &cfg, A, 4, 1601));
	ck_assert(!sa_abuse_banned(a, &cfg, A, 4, 1602));
	ck_assert_uint_eq(sa_abuse_banned_count(a, 1602), 0);
	sa_abuse_free(a);
}
END_TEST

START_TEST(failures_outside_the_window_do_not_add_up)
{
	struct sa_abuse *a = sa_abuse_new(1024);
	ck_assert(!sa_abuse_failure(a, &cfg, A, 4, 1000));
	ck_assert(!sa_abuse_failure(a, &cfg, A, 4, 1030));
	ck_assert(!sa_abuse_failure(a, &cfg, A, 4, 1061));   /* new window starts here */
	ck_assert(!sa_abuse_failure(a, &cfg, A, 4, 1062));
	ck_assert(!sa_abuse_banned(a, &cfg, A, 4, 1062));
	ck_assert(sa_abuse_failure(a, &cfg, A, 4, 1063));
	sa_abuse_free(a);
}
END_TEST

START_TEST(zero_max_failures_disables_banning)
{
	struct sa_abuse_cfg off = cfg;
	off.max_failures = 0;
	struct sa_abuse *a = sa_abuse_new(1024);
	for (int i = 0; i < 100; i++)
		ck_assert(!sa_abuse_failure(a, &off, A, 4, 1000));
	ck_assert(!sa_abuse_banned(a, &off, A, 4, 1000));
	sa_abuse_free(a);
}
END_TEST

START_TEST(a_full_table_keeps_its_bans)
{
	struct sa_abuse *a = sa_abuse_new(16);
	unsigned char addr[4] = { 10, 0, 0, 0 };
	for (int i = 0; i < 16; i++) {
		addr[3] = (unsigned char)i;
		for (int k = 0; k < 3; k++)
			sa_abuse_failure(a, &cfg, addr, 4, 1000);
	}
	ck_assert_uint_eq(sa_abuse_banned_count(a, 1000), 16);
	/* a newcomer finds no room: counted nowhere, and no ban is lost */
	ck_assert(!sa_abuse_failure(a, &cfg, B, 4, 1000));
	ck_assert_uint_eq(sa_abuse_banned_count(a, 1000), 16);
	for (int i = 0; i < 16; i++) {
		addr[3] = (unsigned char)i;
		ck_assert(sa_abuse_banned(a, &cfg, addr, 4, 1000));
	}
	sa_abuse_free(a);
}
END_TEST

START_TEST(ipv6_sources_are_kept_apart_from_ipv4)
{
	unsigned char v6[16] = { 0x20, 0x01, 0x0d, 0xb8 };
	struct sa_abuse *a = sa_abuse_new(1024);
	for (int k = 0; k < 3; k++)
		sa_abuse_failure(a, &cfg, v6, 16, 1000);
	ck_assert(sa_abuse_banned(a, &cfg, v6, 16, 1000));
	ck_assert(!sa_abuse_banned(a, &cfg, v6, 4, 1000));
	sa_abuse_free(a);
}
END_TEST

/* A source that authenticated is not banned by failures under its address
 * (forged UDP among them) while it is vouched for; then it is again. */
START_TEST(a_vouched_source_is_never_banned)
{
	struct sa_abuse *a = sa_abuse_new(1024);
	sa_abuse_vouch(a, A, 4, 1000, 4600);
	for (int i = 0; i < 10; i++)
		ck_assert(!sa_abuse_failure(a, &cfg, A, 4, 1001 + (uint64_t)i));
	ck_assert(!sa_abuse_banned(a, &cfg, A, 4, 1011));
	ck_assert_uint_eq(sa_abuse_banned_count(a, 1011), 0);
	/* B, never vouched for, is banned as before */
	for (int i = 0; i < 3; i++)
		sa_abuse_failure(a, &cfg, B, 4, 1001);
	ck_assert(sa_abuse_banned(a, &cfg, B, 4, 1002));
	/* after the vouching ends, failures count again */
	ck_assert(!sa_abuse_failure(a, &cfg, A, 4, 4601));
	ck_assert(!sa_abuse_failure(a, &cfg, A, 4, 4602));
	ck_assert(sa_abuse_failure(a, &cfg, A, 4, 4603));
	ck_assert(sa_abuse_banned(a, &cfg, A, 4, 4603));
	/* authenticating again lifts a ban (it could only happen from a flow that answers) */
	sa_abuse_vouch(a, A, 4, 4604, 8200);
	ck_assert(!sa_abuse_banned(a, &cfg, A, 4, 4604));
	sa_abuse_free(a);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("abuse");
	TCase *tc = tcase_create("abuse");
	tcase_add_test(tc, third_failure_in_window_bans);
	tcase_add_test(tc, failures_outside_the_window_do_not_add_up);
	tcase_add_test(tc, zero_max_failures_disables_banning);
	tcase_add_test(tc, a_full_table_keeps_its_bans);
	tcase_add_test(tc, ipv6_sources_are_kept_apart_from_ipv4);
	tcase_add_test(tc, a_vouched_source_is_never_banned);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
