/* test_connlimit.c: one source cannot fill the connection cap, a few cannot take every handshake slot. */
#include <check.h>
#include <stdlib.h>

#include "connlimit.h"

static const struct sa_connlimit_cfg cfg = { .max_connections = 4096, .max_connections_per_source = 64,
                                             .max_handshakes = 256, .max_handshakes_per_source = 16 };

static unsigned char *v4(unsigned i)
{
	static unsigned char a[4];
	a[0] = 10; a[1] = 0; a[2] = (unsigned char)(i >> 8); a[3] = (unsigned char)i;
	return a;
}

START_TEST(one_source_stops_at_its_cap_and_others_still_connect)
{
	struct sa_connlimit *cl = sa_connlimit_new(4096, 42);
	struct sa_connsrc *src, *first = NULL;
	/* the attack from the issue: 4 096 idle connections from one address */
	unsigned ok = 0;
	for (int i = 0; i < 4096; i++) {
		enum sa_conn_verdict v = sa_connlimit_admit(cl, &cfg, v4(3), 4, false, &src);
		if (v == SA_CONN_OK) {
			ok++;
			first = first ? first : src;
		} else {
			ck_assert_int_eq(v, SA_CONN_SOURCE_FULL);
		}
	}
	ck_assert_uint_eq(ok, 64);
	ck_assert_uint_eq(sa_connsrc_connections(first), 64);
	ck_assert_int_eq(sa_connlimit_admit(cl, &cfg, v4(5), 4, false, &src), SA_CONN_OK);
	ck_assert_uint_eq(sa_connlimit_connections(cl), 65);
	ck_assert_uint_eq(sa_connlimit_sources(cl), 2);
	/* one closes: that source may connect once more */
	sa_connlimit_release(cl, first, false);
	ck_assert_int_eq(sa_connlimit_admit(cl, &cfg, v4(3), 4, false, &src), SA_CONN_OK);
	sa_connlimit_free(cl);
}
END_TEST

START_TEST(the_global_cap_still_holds)
{
	struct sa_connlimit_cfg small = cfg;
	small.max_connections = 100;
	struct sa_connlimit *cl = sa_connlimit_new(100, 1);
	struct sa_connsrc *src;
	for (unsigned i = 0; i < 100; i++)
		ck_assert_int_eq(sa_connlimit_admit(cl, &small, v4(i), 4, false, &src), SA_CONN_OK);
	ck_assert_int_eq(sa_connlimit_admit(cl, &small, v4(999), 4, false, &src), SA_CONN_FULL);
	sa_connlimit_outgoing(cl, -1);   /* pretend one of ours closed */
	ck_assert_int_eq(sa_connlimit_admit(cl, &small, v4(999), 4, false, &src), SA_CONN_OK);
	sa_connlimit_free(cl);
}
END_TEST

START_TEST(sixteen_sources_cannot_take_every_handshake_slot)
{
	struct sa_connlimit *cl = sa_connlimit_new(4096, 7);
	struct sa_connsrc *src;
	unsigned held = 0;
	/* the attack from the issue: 16 addresses x 16 half-open handshakes */
	for (unsigned a = 0; a < 16; a++)
		for (unsigned k = 0; k < 16; k++)
			held += sa_connlimit_admit(cl, &cfg, v4(100 + a), 4, true, &src) == SA_CONN_OK;
	ck_assert_uint_le(held, 128 + 16);
	ck_assert_uint_eq(sa_connlimit_handshakes(cl), held);
	/* a PBX from a new address still gets its handshake */
	ck_assert_int_eq(sa_connlimit_admit(cl, &cfg, v4(7), 4, true, &src), SA_CONN_OK);
	/* and once it is done, that source counts a connection but no handshake */
	sa_connlimit_handshake_done(cl, src);
	ck_assert_uint_eq(sa_connsrc_handshakes(src), 0);
	ck_assert_uint_eq(sa_connsrc_connections(src), 1);
	sa_connlimit_free(cl);
}
END_TEST

START_TEST(handshake_rule_halves)
{
	/* below half, a source may hold up to its per-source cap */
	ck_assert_int_eq(sa_connlimit_handshake_rule(&cfg, 100, 15), SA_CONN_OK);
	ck_assert_int_eq(sa_connlimit_handshake_rule(&cfg, 100, 16), SA_CONN_SOURCE_HANDSHAKES);
	/* above half, only a source with none in progress */
	ck_assert_int_eq(sa_connlimit_handshake_rule(&cfg, 128, 1), SA_CONN_SOURCE_HANDSHAKES);
	ck_assert_int_eq(sa_connlimit_handshake_rule(&cfg, 255, 0), SA_CONN_OK);
	ck_assert_int_eq(sa_connlimit_handshake_rule(&cfg, 256, 0), SA_CONN_HANDSHAKES_FULL);
}
END_TEST

START_TEST(ipv6_counts_per_slash_64_and_mapped_ipv4_as_ipv4)
{
	struct sa_connlimit_cfg two = cfg;
	two.max_connections_per_source = 2;
	struct sa_connlimit *cl = sa_connlimit_new(64, 3);
	struct sa_connsrc *src;
	unsigned char a[16] = { 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1 };
	a[15] = 1;
	ck_assert_int_eq(sa_connlimit_admit(cl, &two, a, 16, false, &src), SA_CONN_OK);
	a[15] = 2;   /* another address in the same /64 */
	ck_assert_int_eq(sa_connlimit_admit(cl, &two, a, 16, false, &src), SA_CONN_OK);
	a[15] = 3;
	ck_assert_int_eq(sa_connlimit_admit(cl, &two, a, 16, false, &src), SA_CONN_SOURCE_FULL);
	a[7] = 2;    /* the next /64 is another source */
	ck_assert_int_eq(sa_connlimit_admit(cl, &two, a, 16, false, &src), SA_CONN_OK);
	unsigned char m[16] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 9 };
	ck_assert_int_eq(sa_connlimit_admit(cl, &two, v4(9), 4, false, &src), SA_CONN_OK);
	ck_assert_int_eq(sa_connlimit_admit(cl, &two, m, 16, false, &src), SA_CONN_OK);
	ck_assert_int_eq(sa_connlimit_admit(cl, &two, v4(9), 4, false, &src), SA_CONN_SOURCE_FULL);
	sa_connlimit_free(cl);
}
END_TEST

START_TEST(sources_leave_the_table_when_they_hold_nothing)
{
	struct sa_connlimit *cl = sa_connlimit_new(64, 5);
	struct sa_connsrc *src[1000];
	for (unsigned i = 0; i < 1000; i++)
		ck_assert_int_eq(sa_connlimit_admit(cl, &cfg, v4(i), 4, i < 200, &src[i]), SA_CONN_OK);
	ck_assert_uint_eq(sa_connlimit_sources(cl), 1000);
	for (unsigned i = 0; i < 1000; i++)
		sa_connlimit_release(cl, src[i], i < 200);
	ck_assert_uint_eq(sa_connlimit_sources(cl), 0);
	ck_assert_uint_eq(sa_connlimit_connections(cl), 0);
	ck_assert_uint_eq(sa_connlimit_handshakes(cl), 0);
	sa_connlimit_free(cl);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("connlimit");
	TCase *tc = tcase_create("connlimit");
	tcase_add_test(tc, one_source_stops_at_its_cap_and_others_still_connect);
	tcase_add_test(tc, the_global_cap_still_holds);
	tcase_add_test(tc, sixteen_sources_cannot_take_every_handshake_slot);
	tcase_add_test(tc, handshake_rule_halves);
	tcase_add_test(tc, ipv6_counts_per_slash_64_and_mapped_ipv4_as_ipv4);
	tcase_add_test(tc, sources_leave_the_table_when_they_hold_nothing);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
