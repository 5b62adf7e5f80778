/* test_abuse.c: failure windows, bans and their expiry, a full table keeping its bans. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "abuse.h"

static const unsigned char A[4] = { 192, 0, 2, 1 }, B[4] = { 192, 0, 2, 2 };
static const struct sa_abuse_cfg cfg = { .max_failures = 3, .window = 60, .ban_time = 600 };

START_TEST(third_failure_in_window_bans)
{
	struct sa_abuse *a = sa_abuse_new(1024);
	ck_assert_ptr_nonnull(a);
	ck_assert(!sa_abuse_failure(a, &cfg, A, 4, 0, 1000));
	ck_assert(!sa_abuse_failure(a, &cfg, A, 4, 0, 1001));
	ck_assert(!sa_abuse_banned(a, &cfg, A, 4, 1001));
	ck_assert(sa_abuse_failure(a, &cfg, A, 4, 0, 1002));
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
	ck_assert(!sa_abuse_failure(a, &cfg, A, 4, 0, 1000));
	ck_assert(!sa_abuse_failure(a, &cfg, A, 4, 0, 1030));
	ck_assert(!sa_abuse_failure(a, &cfg, A, 4, 0, 1061));   /* new window starts here */
	ck_assert(!sa_abuse_failure(a, &cfg, A, 4, 0, 1062));
	ck_assert(!sa_abuse_banned(a, &cfg, A, 4, 1062));
	ck_assert(sa_abuse_failure(a, &cfg, A, 4, 0, 1063));
	sa_abuse_free(a);
}
END_TEST

START_TEST(zero_max_failures_disables_banning)
{
	struct sa_abuse_cfg off = cfg;
	off.max_failures = 0;
	struct sa_abuse *a = sa_abuse_new(1024);
	for (int i = 0; i < 100; i++)
		ck_assert(!sa_abuse_failure(a, &off, A, 4, 0, 1000));
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
			sa_abuse_failure(a, &cfg, addr, 4, 0, 1000);
	}
	ck_assert_uint_eq(sa_abuse_banned_count(a, 1000), 16);
	/* a newcomer finds no room: counted nowhere, and no ban is lost */
	ck_assert(!sa_abuse_failure(a, &cfg, B, 4, 0, 1000));
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
		sa_abuse_failure(a, &cfg, v6, 16, 0, 1000);
	ck_assert(sa_abuse_banned(a, &cfg, v6, 16, 1000));
	ck_assert(!sa_abuse_banned(a, &cfg, v6, 4, 1000));
	sa_abuse_free(a);
}
END_TEST

/* A source that authenticated for a trunk is not banned by failures under
 * its address against that trunk (forged UDP among them) while it is
 * vouched for; then it is again. Its failures against other trunks count
 * apart, and refuse it those trunks, never its own. */
static const uint64_t T1 = 0x1001, T2 = 0x2001, T3 = 0x3001;

START_TEST(a_vouched_source_is_never_banned_for_its_trunk)
{
	struct sa_abuse *a = sa_abuse_new(1024);
	sa_abuse_vouch(a, A, 4, T1, 1000, 4600);
	for (int i = 0; i < 10; i++)
		ck_assert_int_eq(sa_abuse_failure(a, &cfg, A, 4, T1, 1001 + (uint64_t)i), SA_ABUSE_COUNTED);
	ck_assert(!sa_abuse_banned(a, &cfg, A, 4, 1011));
	ck_assert_uint_eq(sa_abuse_banned_count(a, 1011), 0);
	/* B, never vouched for, is banned as before */
	for (int i = 0; i < 3; i++)
		sa_abuse_failure(a, &cfg, B, 4, T1, 1001);
	ck_assert(sa_abuse_banned(a, &cfg, B, 4, 1002));
	/* after the vouching ends, failures count again */
	ck_assert_int_eq(sa_abuse_failure(a, &cfg, A, 4, T1, 4601), SA_ABUSE_COUNTED);
	ck_assert_int_eq(sa_abuse_failure(a, &cfg, A, 4, T1, 4602), SA_ABUSE_COUNTED);
	ck_assert_int_eq(sa_abuse_failure(a, &cfg, A, 4, T1, 4603), SA_ABUSE_BAN);
	ck_assert(sa_abuse_banned(a, &cfg, A, 4, 4603));
	/* authenticating again lifts a ban (it could only happen from a flow that answers) */
	sa_abuse_vouch(a, A, 4, T1, 4604, 8200);
	ck_assert(!sa_abuse_banned(a, &cfg, A, 4, 4604));
	sa_abuse_free(a);
}
END_TEST

START_TEST(a_vouched_source_guessing_at_other_trunks_is_refused_them)
{
	struct sa_abuse *a = sa_abuse_new(1024);
	sa_abuse_vouch(a, A, 4, T1, 1000, 4600);
	sa_abuse_vouch(a, A, 4, T3, 1000, 4600);   /* two customers behind one NAT */
	ck_assert_int_eq(sa_abuse_failure(a, &cfg, A, 4, T2, 1001), SA_ABUSE_COUNTED);
	ck_assert_int_eq(sa_abuse_failure(a, &cfg, A, 4, 0, 1002), SA_ABUSE_COUNTED);   /* an unknown trunk counts too */
	ck_assert(!sa_abuse_refused(a, A, 4, T2, 1002));
	ck_assert_int_eq(sa_abuse_failure(a, &cfg, A, 4, T2, 1003), SA_ABUSE_BAN_OTHERS);
	ck_assert(sa_abuse_refused(a, A, 4, T2, 1004));
	ck_assert(sa_abuse_refused(a, A, 4, 0, 1004));
	ck_assert(!sa_abuse_refused(a, A, 4, T1, 1004));   /* its own trunks go on */
	ck_assert(!sa_abuse_refused(a, A, 4, T3, 1004));
	ck_assert(!sa_abuse_banned(a, &cfg, A, 4, 1004));
	ck_assert(!sa_abuse_refused(a, B, 4, T2, 1004));
	/* for ban_time */
	ck_assert(sa_abuse_refused(a, A, 4, T2, 1602));
	ck_assert(!sa_abuse_refused(a, A, 4, T2, 1603));
	/* failures in another window do not add up */
	ck_assert_int_eq(sa_abuse_failure(a, &cfg, A, 4, T2, 1700), SA_ABUSE_COUNTED);
	ck_assert_int_eq(sa_abuse_failure(a, &cfg, A, 4, T2, 1701), SA_ABUSE_COUNTED);
	ck_assert_int_eq(sa_abuse_failure(a, &cfg, A, 4, T2, 1800), SA_ABUSE_COUNTED);
	ck_assert(!sa_abuse_refused(a, A, 4, T2, 1800));
	sa_abuse_free(a);
}
END_TEST

/* An IPv6 source is its /64: a host rotating through its /64 is one source. */
START_TEST(an_ipv6_source_is_its_slash_64)
{
	struct sa_abuse *a = sa_abuse_new(1024);
	unsigned char v6[16] = { 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1 }, k[16], k4[16];
	ck_assert_uint_eq(sa_abuse_source(A, 4, k4), 4);
	ck_assert_int_eq(memcmp(k4, A, 4), 0);
	for (int i = 0; i < 3; i++) {
		v6[15] = (unsigned char)(i + 1);   /* another address in the same /64 each time */
		size_t n = sa_abuse_source(v6, 16, k);
		ck_assert_uint_eq(n, 8);
		sa_abuse_failure(a, &cfg, k, n, 0, 1000);
	}
	v6[15] = 99;
	ck_assert(sa_abuse_banned(a, &cfg, k, sa_abuse_source(v6, 16, k), 1001));
	v6[7] = 2;   /* the next /64: another source */
	ck_assert(!sa_abuse_banned(a, &cfg, k, sa_abuse_source(v6, 16, k), 1001));
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
	tcase_add_test(tc, an_ipv6_source_is_its_slash_64);
	tcase_add_test(tc, a_vouched_source_is_never_banned_for_its_trunk);
	tcase_add_test(tc, a_vouched_source_guessing_at_other_trunks_is_refused_them);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
