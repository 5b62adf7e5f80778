/* test_pace.c: the pacer of our own requests: per destination, oldest first, at the rate, with a burst of a tick's worth. */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pace.h"

struct got {
	intptr_t v[64];
	int n;
};

static void take(void *payload, void *arg)
{
	struct got *g = arg;
	g->v[g->n++] = (intptr_t)payload;
}

START_TEST(one_destination_gets_a_burst_then_the_rate)
{
	struct sa_pacer *p = sa_pacer_new();
	for (intptr_t i = 1; i <= 40; i++)
		ck_assert_ptr_nonnull(sa_pacer_push(p, "pbx", 3, (void *)i));
	struct got g = { .n = 0 };
	/* 1000/s: a burst of 10 at once, oldest first */
	ck_assert_uint_eq(sa_pacer_run(p, 1000, 5000, take, &g), 30);
	ck_assert_int_eq(g.n, 10);
	for (int i = 0; i < 10; i++)
		ck_assert_int_eq(g.v[i], i + 1);
	/* 4 ms later: 4 more */
	ck_assert_uint_eq(sa_pacer_run(p, 1000, 5004, take, &g), 26);
	ck_assert_int_eq(g.n, 14);
	ck_assert_int_eq(g.v[13], 14);
	/* an hour later: still only a burst's worth (the allowance does not pile up) */
	ck_assert_uint_eq(sa_pacer_run(p, 1000, 3605004, take, &g), 16);
	ck_assert_int_eq(g.n, 24);
	sa_pacer_free(p);
}
END_TEST

START_TEST(destinations_are_paced_apart)
{
	struct sa_pacer *p = sa_pacer_new();
	for (intptr_t i = 1; i <= 6; i++) {
		sa_pacer_push(p, "gw", 2, (void *)(100 + i));
		sa_pacer_push(p, "pbx", 3, (void *)(200 + i));
	}
	ck_assert_uint_eq(sa_pacer_destinations(p), 2);
	struct got g = { .n = 0 };
	/* 200/s: a burst of 2 each */
	ck_assert_uint_eq(sa_pacer_run(p, 200, 0, take, &g), 8);
	int gw = 0, pbx = 0;
	for (int i = 0; i < g.n; i++)
		if (g.v[i] > 200)
			pbx++;
		else
			gw++;
	ck_assert_int_eq(gw, 2);
	ck_assert_int_eq(pbx, 2);
	/* 10 ms later 2 more each (the burst caps what 30 ms would allow), 10 ms after
	 * that the last 2 each: all out; forgotten once their allowance is full again */
	ck_assert_uint_eq(sa_pacer_run(p, 200, 30, take, &g), 4);
	ck_assert_uint_eq(sa_pacer_run(p, 200, 40, take, &g), 0);
	ck_assert_int_eq(g.n, 12);
	ck_assert_uint_eq(sa_pacer_destinations(p), 2);   /* allowances spent */
	ck_assert_uint_eq(sa_pacer_run(p, 200, 60, take, &g), 0);
	ck_assert_uint_eq(sa_pacer_destinations(p), 0);
	sa_pacer_free(p);
}
END_TEST

START_TEST(a_cancelled_item_is_never_handed_out)
{
	struct sa_pacer *p = sa_pacer_new();
	struct sa_pace_item *a = sa_pacer_push(p, "x", 1, (void *)1);
	struct sa_pace_item *b = sa_pacer_push(p, "x", 1, (void *)2);
	struct sa_pace_item *c = sa_pacer_push(p, "x", 1, (void *)3);
	ck_assert_ptr_nonnull(a);
	sa_pacer_cancel(p, b);
	sa_pacer_cancel(p, a);
	ck_assert_uint_eq(sa_pacer_queued(p), 1);
	struct got g = { .n = 0 };
	ck_assert_uint_eq(sa_pacer_run(p, 100, 0, take, &g), 0);
	ck_assert_int_eq(g.n, 1);
	ck_assert_int_eq(g.v[0], 3);
	sa_pacer_cancel(p, NULL);
	(void)c;
	sa_pacer_free(p);
}
END_TEST

START_TEST(a_low_rate_still_sends_one_at_a_time_and_bad_keys_are_refused)
{
	struct sa_pacer *p = sa_pacer_new();
	char key[SA_PACE_KEY_MAX + 1];
	memset(key, 'k', sizeof(key));
	ck_assert_ptr_null(sa_pacer_push(p, key, sizeof(key), (void *)1));
	ck_assert_ptr_null(sa_pacer_push(p, key, 0, (void *)1));
	for (intptr_t i = 1; i <= 3; i++)
		sa_pacer_push(p, key, SA_PACE_KEY_MAX, (void *)i);
	struct got g = { .n = 0 };
	ck_assert_uint_eq(sa_pacer_run(p, 10, 0, take, &g), 2);   /* burst 1 */
	ck_assert_uint_eq(sa_pacer_run(p, 10, 50, take, &g), 2);  /* half a token */
	ck_assert_uint_eq(sa_pacer_run(p, 10, 100, take, &g), 1);
	ck_assert_int_eq(g.n, 2);
	sa_pacer_free(p);   /* frees the one still queued */
}
END_TEST

/* The daemon pushes one BYE and runs the pacer at once, thousands of times in
 * the same millisecond: that must be paced like one big push. */
START_TEST(pushing_and_running_one_at_a_time_is_paced_too)
{
	struct sa_pacer *p = sa_pacer_new();
	struct got g = { .n = 0 };
	for (intptr_t i = 1; i <= 30; i++) {
		sa_pacer_push(p, "pbx", 3, (void *)i);
		sa_pacer_run(p, 1000, 7000, take, &g);
	}
	ck_assert_int_eq(g.n, 10);   /* the burst, not 30 */
	ck_assert_uint_eq(sa_pacer_queued(p), 20);
	ck_assert_uint_eq(sa_pacer_run(p, 1000, 7020, take, &g), 10);
	ck_assert_uint_eq(sa_pacer_run(p, 1000, 7040, take, &g), 0);
	ck_assert_int_eq(g.n, 30);
	ck_assert_uint_eq(sa_pacer_destinations(p), 1);   /* its allowance is spent */
	ck_assert_uint_eq(sa_pacer_run(p, 1000, 7060, take, &g), 0);
	ck_assert_uint_eq(sa_pacer_destinations(p), 0);   /* full again: forgotten */
	sa_pacer_free(p);
}
END_TEST

/* Two workers' pacers sending to the same gateway share its allowance: the
 * rate holds for the process, not for each of them. */
START_TEST(pacers_sharing_allowances_keep_the_rate_together)
{
	struct sa_pace_shared *sh = sa_pace_shared_new();
	struct sa_pacer *a = sa_pacer_new(), *b = sa_pacer_new();
	sa_pacer_share(a, sh);
	sa_pacer_share(b, sh);
	for (intptr_t i = 1; i <= 30; i++) {
		sa_pacer_push(a, "gw", 2, (void *)i);
		sa_pacer_push(b, "gw", 2, (void *)(100 + i));
	}
	sa_pacer_push(b, "pbx", 3, (void *)999);   /* another destination keeps its own allowance */
	struct got ga = { .n = 0 }, gb = { .n = 0 };
	/* 1000/s: one burst of 10 for the gateway, whoever asks first */
	sa_pacer_run(a, 1000, 5000, take, &ga);
	sa_pacer_run(b, 1000, 5000, take, &gb);
	ck_assert_int_eq(ga.n, 10);
	ck_assert_int_eq(gb.n, 1);                 /* the PBX's only: the gateway's burst is spent */
	ck_assert_int_eq(gb.v[0], 999);
	ck_assert_uint_eq(sa_pace_shared_destinations(sh), 2);
	/* 10 ms later: 10 more between them */
	sa_pacer_run(b, 1000, 5010, take, &gb);
	sa_pacer_run(a, 1000, 5010, take, &ga);
	ck_assert_int_eq(ga.n + gb.n, 21);
	ck_assert_int_eq(gb.n, 11);                /* b asked first this time */
	/* a second later: a burst's worth, not a second's */
	sa_pacer_run(a, 1000, 6010, take, &ga);
	sa_pacer_run(b, 1000, 6010, take, &gb);
	ck_assert_int_eq(ga.n + gb.n, 31);
	/* with nothing queued and the allowances full again, nothing is kept */
	while (sa_pacer_queued(a) + sa_pacer_queued(b) > 0) {
		static uint64_t t = 7000;
		t += 100;
		sa_pacer_run(a, 1000, t, take, &ga);
		sa_pacer_run(b, 1000, t, take, &gb);
		ck_assert_int_lt(ga.n + gb.n, 64);
	}
	ck_assert_int_eq(ga.n + gb.n, 61);
	ck_assert_uint_eq(sa_pacer_destinations(a) + sa_pacer_destinations(b), 0);
	/* a minute later, a new burst for the gateway is a full one; the PBX's
	 * allowance, full again, is forgotten on the way */
	gb.n = 0;
	for (intptr_t i = 1; i <= 15; i++)
		sa_pacer_push(b, "gw", 2, (void *)i);
	ck_assert_uint_eq(sa_pacer_run(b, 1000, 60000, take, &gb), 5);
	ck_assert_int_eq(gb.n, 10);
	ck_assert_uint_eq(sa_pace_shared_destinations(sh), 1);
	sa_pacer_free(a);
	sa_pacer_free(b);
	sa_pace_shared_free(sh);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("pace");
	TCase *tc = tcase_create("pace");
	tcase_add_test(tc, one_destination_gets_a_burst_then_the_rate);
	tcase_add_test(tc, destinations_are_paced_apart);
	tcase_add_test(tc, a_cancelled_item_is_never_handed_out);
	tcase_add_test(tc, a_low_rate_still_sends_one_at_a_time_and_bad_keys_are_refused);
	tcase_add_test(tc, pushing_and_running_one_at_a_time_is_paced_too);
	tcase_add_test(tc, pacers_sharing_allowances_keep_the_rate_together);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
