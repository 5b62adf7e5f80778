/* test_kvindex.c: the in-heap table against a plain model of it, through
 * growth, removal by backward shift and compaction. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "kvindex.h"

#define MODEL_KEYS 5000

/* The model: key i is "k<i>", present[i] with value "v<i>.<gen[i]>" padded to len[i]. */
struct model {
	bool present[MODEL_KEYS];
	unsigned gen[MODEL_KEYS];
	size_t len[MODEL_KEYS];
};

static size_t key_of(unsigned i, char *k)
{
	return (size_t)sprintf(k, "k%u", i);
}

static size_t value_of(const struct model *m, unsigned i, char *v)
{
	int n = sprintf(v, "v%u.%u.", i, m->gen[i]);
	memset(v + n, 'x', m->len[i] - (size_t)n);
	return m->len[i];
}

static void check_all(const struct sa_kvindex *x, const struct model *m)
{
	char k[32], want[SA_KVINDEX_VALUE_MAX], got[SA_KVINDEX_VALUE_MAX];
	size_t records = 0;

	for (unsigned i = 0; i < MODEL_KEYS; i++) {
		size_t kl = key_of(i, k);
		long n = sa_kvindex_get(x, k, kl, got, sizeof got);
		if (!m->present[i]) {
			ck_assert_msg(n == -1, "k%u should be absent", i);
			continue;
		}
		records++;
		size_t wl = value_of(m, i, want);
		ck_assert_msg(n == (long)wl, "k%u: length %ld, want %zu", i, n, wl);
		ck_assert_msg(memcmp(got, want, wl) == 0, "k%u: another value", i);
	}
	struct sa_kvindex_stats s;
	sa_kvindex_stats(x, &s);
	ck_assert_uint_eq(s.records, records);
}

START_TEST(test_random_operations_match_the_model)
{
	struct model *m = calloc(1, sizeof *m);
	struct sa_kvindex *x = sa_kvindex_new();
	char k[32], v[SA_KVINDEX_VALUE_MAX];

	ck_assert_ptr_nonnull(m);
	ck_assert_ptr_nonnull(x);
	srandom(7);
	for (int round = 0; round < 200000; round++) {
		unsigned i = (unsigned)random() % MODEL_KEYS;
		size_t kl = key_of(i, k);
		if (random() % 3 == 0) {
			ck_assert(sa_kvindex_del(x, k, kl) == m->present[i]);
			m->present[i] = false;
		} else {
			m->gen[i]++;
			m->len[i] = 24 + (size_t)random() % 400;
			size_t vl = value_of(m, i, v);
			ck_assert_int_eq(sa_kvindex_put(x, k, kl, v, vl), 0);
			m->present[i] = true;
		}
		if (round % 20000 == 0)
			check_all(x, m);
	}
	check_all(x, m);
	struct sa_kvindex_stats s;
	sa_kvindex_stats(x, &s);
	ck_assert_uint_gt(s.compactions, 0);   /* replaced records were most of the arenas more than once */
	sa_kvindex_free(x);
	free(m);
}
END_TEST

/* Keys whose home slots collide run on past each other; removing any of
 * them leaves every other one found (the backward shift). */
START_TEST(test_removal_keeps_every_other_key_found)
{
	struct model *m = calloc(1, sizeof *m);
	struct sa_kvindex *x = sa_kvindex_new();
	char k[32], v[SA_KVINDEX_VALUE_MAX];

	for (unsigned i = 0; i < 700; i++) {   /* 700 of 1024 slots: long runs */
		m->gen[i] = 1;
		m->len[i] = 40;
		m->present[i] = true;
		ck_assert_int_eq(sa_kvindex_put(x, k, key_of(i, k), v, value_of(m, i, v)), 0);
	}
	check_all(x, m);
	for (unsigned i = 0; i < 700; i += 3) {
		ck_assert(sa_kvindex_del(x, k, key_of(i, k)));
		ck_assert(!sa_kvindex_del(x, k, key_of(i, k)));
		m->present[i] = false;
		check_all(x, m);
	}
	sa_kvindex_free(x);
	free(m);
}
END_TEST

START_TEST(test_limits_and_empty_table)
{
	struct sa_kvindex *x = sa_kvindex_new();
	static char big[SA_KVINDEX_VALUE_MAX + 1];
	char out[8];
	struct sa_kvindex_stats s;

	ck_assert_int_eq(sa_kvindex_get(x, "a", 1, out, sizeof out), -1);
	ck_assert(!sa_kvindex_del(x, "a", 1));
	ck_assert_int_eq(sa_kvindex_put(x, "a", 1, big, sizeof big), -1);            /* value too long */
	ck_assert_int_eq(sa_kvindex_put(x, big, SA_KVINDEX_KEY_MAX + 1, "v", 1), -1);  /* key too long */
	ck_assert_int_eq(sa_kvindex_put(x, "a", 1, "0123456789", 10), 0);
	ck_assert_int_eq(sa_kvindex_get(x, "a", 1, out, sizeof out), -1);   /* does not fit out */
	ck_assert_int_eq(sa_kvindex_put(x, "", 0, "empty", 5), 0);          /* the empty key is a key */
	ck_assert_int_eq(sa_kvindex_get(x, "", 0, out, sizeof out), 5);
	ck_assert(memcmp(out, "empty", 5) == 0);
	sa_kvindex_stats(x, &s);
	ck_assert_uint_eq(s.records, 2);
	ck_assert_uint_gt(s.bytes, s.live);
	sa_kvindex_free(x);
	sa_kvindex_free(NULL);
}
END_TEST

/* Two tables hold the same keys apart: removing them all from one leaves
 * the other whole. */
START_TEST(test_tables_are_independent)
{
	struct sa_kvindex *a = sa_kvindex_new(), *b = sa_kvindex_new();
	char k[32], v[8] = "v";
	/* the same 600 keys in both: found in each, whatever the slot order */
	for (unsigned i = 0; i < 600; i++) {
		size_t kl = key_of(i, k);
		ck_assert_int_eq(sa_kvindex_put(a, k, kl, v, 1), 0);
		ck_assert_int_eq(sa_kvindex_put(b, k, kl, v, 1), 0);
	}
	for (unsigned i = 0; i < 600; i++) {
		size_t kl = key_of(i, k);
		ck_assert_int_eq(sa_kvindex_get(a, k, kl, v, sizeof v), 1);
		ck_assert_int_eq(sa_kvindex_get(b, k, kl, v, sizeof v), 1);
	}
	for (unsigned i = 0; i < 600; i++) {
		size_t kl = key_of(i, k);
		ck_assert(sa_kvindex_del(a, k, kl));
	}
	for (unsigned i = 0; i < 600; i++) {
		size_t kl = key_of(i, k);
		ck_assert_int_eq(sa_kvindex_get(a, k, kl, v, sizeof v), -1);
		ck_assert_int_eq(sa_kvindex_get(b, k, kl, v, sizeof v), 1);
	}
	sa_kvindex_free(a);
	sa_kvindex_free(b);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("kvindex");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_random_operations_match_the_model);
	tcase_add_test(tc, test_removal_keeps_every_other_key_found);
	tcase_add_test(tc, test_limits_and_empty_table);
	tcase_add_test(tc, test_tables_are_independent);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
