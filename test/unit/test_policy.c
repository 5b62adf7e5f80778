/* test_policy.c: a trunk's controls: the PATCH rules field by field, the allow-list, the call-rate bucket. */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "policy.h"

static struct sa_trunk_policy pol;
static char field[SA_POLICY_FIELD_MAX], why[256];

static void setup(void)
{
	sa_policy_default(&pol);
	field[0] = why[0] = '\0';
}

/* PATCH with a JSON text; 0 or -1 */
static int patch(const char *text)
{
	json_error_t e;
	json_t *j = json_loads(text, JSON_DECODE_ANY, &e);
	ck_assert_msg(j != NULL, "bad test JSON %s", text);
	int rc = sa_policy_patch(&pol, j, field, why, sizeof why);
	json_decref(j);
	return rc;
}

static char *shown(void)
{
	static char out[1024];
	json_t *o = json_object();
	ck_assert_int_eq(sa_policy_to_json(&pol, o), 0);
	char *s = json_dumps(o, JSON_SORT_KEYS | JSON_COMPACT);
	snprintf(out, sizeof out, "%s", s);
	free(s);
	json_decref(o);
	return out;
}

static struct sockaddr_storage addr(const char *text)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof ss);
	if (strchr(text, ':')) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
		s6->sin6_family = AF_INET6;
		ck_assert_int_eq(inet_pton(AF_INET6, text, &s6->sin6_addr), 1);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
		s4->sin_family = AF_INET;
		ck_assert_int_eq(inet_pton(AF_INET, text, &s4->sin_addr), 1);
	}
	return ss;
}

static bool allowed(const char *text)
{
	struct sockaddr_storage ss = addr(text);
	return sa_policy_source_allowed(&pol, (struct sockaddr *)&ss);
}

START_TEST(defaults_limit_nothing)
{
	ck_assert_str_eq(shown(), "{\"allowed_sources\":[],\"digest_algorithms\":null,\"ip_authentication\":false,"
	                          "\"max_calls_per_second\":null,\"max_concurrent_calls\":null,\"require_tls\":false}");
	ck_assert(allowed("198.51.100.7"));
	struct sa_rate_bucket b = { 0 };
	for (int i = 0; i < 100000; i++)
		ck_assert(sa_policy_rate_take(&pol, &b, 0));
}
END_TEST

START_TEST(every_field_set_and_shown)
{
	ck_assert_int_eq(patch("{\"max_concurrent_calls\": 2, \"max_calls_per_second\": 0.5,"
	                       " \"allowed_sources\": [\"203.0.113.0/24\", \"2001:db8::/32\", \"198.51.100.7\"],"
	                       " \"ip_authentication\": true, \"require_tls\": true,"
	                       " \"digest_algorithms\": [\"md5\", \"SHA-256\"]}"), 0);
	ck_assert_str_eq(shown(), "{\"allowed_sources\":[\"203.0.113.0/24\",\"2001:db8::/32\",\"198.51.100.7/32\"],"
	                          "\"digest_algorithms\":[\"MD5\",\"SHA-256\"],\"ip_authentication\":true,"
	                          "\"max_calls_per_second\":0.5,\"max_concurrent_calls\":2,\"require_tls\":true}");
	/* a later PATCH changes only what it names; null lifts a limit */
	ck_assert_int_eq(patch("{\"max_concurrent_calls\": null, \"max_calls_per_second\": 30}"), 0);
	ck_assert_int_eq(pol.max_concurrent_calls, SA_POLICY_NO_LIMIT);
	ck_assert_int_eq(pol.max_calls_per_second_milli, 30000);
	ck_assert_int_eq(pol.nsources, 3);
	ck_assert(pol.require_tls);
	ck_assert_int_eq(patch("{\"ip_authentication\": false, \"allowed_sources\": []}"), 0);
	ck_assert_int_eq(pol.nsources, 0);
	ck_assert_int_eq(patch("{\"digest_algorithms\": null, \"max_concurrent_calls\": 0}"), 0);
	ck_assert_int_eq(pol.nalgs, 0);
	ck_assert_int_eq(pol.max_concurrent_calls, 0);
}
END_TEST

/* each refusal names the field and the rule, and changes nothing */
static void refused(const char *body, const char *want_field, const char *want_why_start)
{
	struct sa_trunk_policy before = pol;
	ck_assert_int_eq(patch(body), -1);
	ck_assert_str_eq(field, want_field);
	ck_assert_msg(strncmp(why, want_why_start, strlen(want_why_start)) == 0, "%s: why \"%s\"", body, why);
	ck_assert_int_eq(memcmp(&before, &pol, sizeof pol), 0);
}

START_TEST(invalid_values_name_the_field_and_rule)
{
	refused("[1]", "", "the body must be a JSON object");
	refused("{\"max_concurrent_calls\": -1}", "max_concurrent_calls", "must be an integer from 0 to 1000000");
	refused("{\"max_concurrent_calls\": 1000001}", "max_concurrent_calls", "must be an integer");
	refused("{\"max_concurrent_calls\": 2.5}", "max_concurrent_calls", "must be an integer");
	refused("{\"max_concurrent_calls\": \"2\"}", "max_concurrent_calls", "must be an integer");
	refused("{\"max_concurrent_calls\": true}", "max_concurrent_calls", "must be an integer");
	refused("{\"max_calls_per_second\": 0}", "max_calls_per_second", "must be a number of calls per second");
	refused("{\"max_calls_per_second\": 10001}", "max_calls_per_second", "must be a number");
	refused("{\"max_calls_per_second\": \"5\"}", "max_calls_per_second", "must be a number");
	refused("{\"allowed_sources\": \"10.0.0.0/8\"}", "allowed_sources", "must be an array");
	refused("{\"allowed_sources\": [\"10.0.0.1/8\"]}", "allowed_sources", "entry 0 is not an IPv4 or IPv6 network");
	refused("{\"allowed_sources\": [\"10.0.0.0/33\"]}", "allowed_sources", "entry 0 is not");
	refused("{\"allowed_sources\": [\"10.0.0.0/8\", \"host.example\"]}", "allowed_sources", "entry 1 is not");
	refused("{\"allowed_sources\": [\"10.0.0.0/8\", 7]}", "allowed_sources", "entry 1 is not");
	refused("{\"allowed_sources\": [\"10.0.0.0/8\", \"10.0.0.0/8\"]}", "allowed_sources", "entry 1 repeats");
	refused("{\"ip_authentication\": \"yes\"}", "ip_authentication", "must be true or false");
	refused("{\"ip_authentication\": true}", "ip_authentication", "needs allowed_sources");
	refused("{\"require_tls\": 1}", "require_tls", "must be true or false");
	refused("{\"digest_algorithms\": []}", "digest_algorithms", "must be null");
	refused("{\"digest_algorithms\": [\"MD5\", \"MD5\"]}", "digest_algorithms", "must be null");
	refused("{\"digest_algorithms\": [\"MD5-sess\"]}", "digest_algorithms", "must be null");
	refused("{\"digest_algorithms\": [\"SHA-1\"]}", "digest_algorithms", "must be null");
	refused("{\"max_channels\": 2}", "max_channels", "is not a trunk setting");
	/* one bad field refuses the whole PATCH */
	refused("{\"require_tls\": true, \"max_concurrent_calls\": -5}", "max_concurrent_calls", "must be");
	ck_assert(!pol.require_tls);
}
END_TEST

START_TEST(allow_list_by_network)
{
	ck_assert_int_eq(patch("{\"allowed_sources\": [\"203.0.113.0/24\", \"2001:db8::/32\", \"198.51.100.7\","
	                       " \"192.0.2.128/25\"]}"), 0);
	ck_assert(allowed("203.0.113.1"));
	ck_assert(allowed("203.0.113.255"));
	ck_assert(!allowed("203.0.114.1"));
	ck_assert(allowed("198.51.100.7"));
	ck_assert(!allowed("198.51.100.8"));
	ck_assert(allowed("192.0.2.200"));
	ck_assert(!allowed("192.0.2.127"));
	ck_assert(allowed("2001:db8:1::5"));
	ck_assert(!allowed("2001:db9::5"));
	ck_assert(allowed("::ffff:203.0.113.9"));   /* an IPv4 peer on a dual-stack socket */
	ck_assert(!allowed("::ffff:10.0.0.1"));
}
END_TEST

START_TEST(cidr_text_round_trip)
{
	struct sa_cidr c;
	char out[64];
	ck_assert_int_eq(sa_cidr_parse("0.0.0.0/0", &c), 0);
	sa_cidr_format(&c, out, sizeof out);
	ck_assert_str_eq(out, "0.0.0.0/0");
	ck_assert_int_eq(sa_cidr_parse("::/0", &c), 0);
	ck_assert_int_eq(sa_cidr_parse("10.0.0.0/", &c), -1);
	ck_assert_int_eq(sa_cidr_parse("/8", &c), -1);
	ck_assert_int_eq(sa_cidr_parse("10.0.0.0/8x", &c), -1);
	ck_assert_int_eq(sa_cidr_parse("10.0.0.0/0008", &c), -1);
}
END_TEST

START_TEST(rate_bucket_holds_one_second)
{
	ck_assert_int_eq(patch("{\"max_calls_per_second\": 10}"), 0);
	struct sa_rate_bucket b = { 0 };
	int ok = 0;
	for (int i = 0; i < 25; i++)
		ok += sa_policy_rate_take(&pol, &b, 1000);
	ck_assert_int_eq(ok, 10);                          /* the burst: one second's worth */
	ck_assert(!sa_policy_rate_take(&pol, &b, 1050));   /* half a call refilled */
	ck_assert(sa_policy_rate_take(&pol, &b, 1100));    /* one call per 100 ms */
	ck_assert(!sa_policy_rate_take(&pol, &b, 1100));
	ok = 0;
	for (int64_t t = 1100; t < 11100; t += 10)          /* 10 s offered at 100/s */
		ok += sa_policy_rate_take(&pol, &b, t + 10);
	ck_assert_int_ge(ok, 99);
	ck_assert_int_le(ok, 100);
	ok = 0;
	for (int i = 0; i < 30; i++)                       /* a long pause refills one second, no more */
		ok += sa_policy_rate_take(&pol, &b, 100000);
	ck_assert_int_eq(ok, 10);
}
END_TEST

START_TEST(slow_rate_still_allows_one_call)
{
	ck_assert_int_eq(patch("{\"max_calls_per_second\": 0.5}"), 0);
	struct sa_rate_bucket b = { 0 };
	ck_assert(sa_policy_rate_take(&pol, &b, 0));
	ck_assert(!sa_policy_rate_take(&pol, &b, 1000));
	ck_assert(sa_policy_rate_take(&pol, &b, 2000));
}
END_TEST

START_TEST(arrival_tls_then_source)
{
	struct sockaddr_storage in = addr("203.0.113.5"), out = addr("198.51.100.1");
	ck_assert_int_eq(sa_policy_check_arrival(&pol, false, (struct sockaddr *)&out), SA_POLICY_ADMIT);
	ck_assert_int_eq(patch("{\"allowed_sources\": [\"203.0.113.0/24\"], \"require_tls\": true}"), 0);
	ck_assert_int_eq(sa_policy_check_arrival(&pol, true, (struct sockaddr *)&in), SA_POLICY_ADMIT);
	ck_assert_int_eq(sa_policy_check_arrival(&pol, false, (struct sockaddr *)&in), SA_POLICY_TLS_REQUIRED);
	ck_assert_int_eq(sa_policy_check_arrival(&pol, true, (struct sockaddr *)&out), SA_POLICY_SOURCE_NOT_ALLOWED);
	ck_assert_int_eq(sa_policy_check_arrival(&pol, false, (struct sockaddr *)&out), SA_POLICY_TLS_REQUIRED);
	ck_assert(!sa_policy_ip_authenticates(&pol, (struct sockaddr *)&in));
	ck_assert_int_eq(patch("{\"ip_authentication\": true}"), 0);
	ck_assert(sa_policy_ip_authenticates(&pol, (struct sockaddr *)&in));
	ck_assert(!sa_policy_ip_authenticates(&pol, (struct sockaddr *)&out));
	ck_assert_str_eq(sa_policy_verdict_name(SA_POLICY_SOURCE_NOT_ALLOWED), "source_not_allowed");
	ck_assert_str_eq(sa_policy_verdict_name(SA_POLICY_CHANNEL_LIMIT), "channel_limit");
}
END_TEST

START_TEST(channels_held_and_released)
{
	struct sa_trunk_table *tt = sa_trunk_table_new();
	struct sa_trunk_usage *u = sa_trunk_usage(tt, "trunk_a");
	ck_assert_ptr_eq(sa_trunk_usage(tt, "trunk_a"), u);
	ck_assert_ptr_ne(sa_trunk_usage(tt, "trunk_b"), u);
	ck_assert_int_eq(patch("{\"max_concurrent_calls\": 2}"), 0);
	ck_assert_int_eq(sa_policy_admit_call(&pol, u, true, 0), SA_POLICY_ADMIT);
	ck_assert_int_eq(sa_policy_admit_call(&pol, u, false, 0), SA_POLICY_ADMIT);
	ck_assert_int_eq(sa_policy_admit_call(&pol, u, true, 0), SA_POLICY_CHANNEL_LIMIT);
	ck_assert_int_eq(u->channels, 2);
	ck_assert_int_eq(u->refused[SA_POLICY_CHANNEL_LIMIT], 1);
	sa_policy_release(u);
	ck_assert_int_eq(sa_policy_admit_call(&pol, u, true, 0), SA_POLICY_ADMIT);
	sa_policy_hold(u);   /* a restored call counts even above the limit */
	ck_assert_int_eq(u->channels, 3);
	sa_policy_release(u);
	sa_policy_release(u);
	sa_policy_release(u);
	sa_policy_release(u);   /* never below zero */
	ck_assert_int_eq(u->channels, 0);
	sa_trunk_table_free(tt);
}
END_TEST

/* a call refused for channels spends no token; only rate-limited calls take tokens */
START_TEST(rate_only_after_channels)
{
	struct sa_trunk_table *tt = sa_trunk_table_new();
	struct sa_trunk_usage *u = sa_trunk_usage(tt, "trunk_a");
	ck_assert_int_eq(patch("{\"max_concurrent_calls\": 1, \"max_calls_per_second\": 2}"), 0);
	ck_assert_int_eq(sa_policy_admit_call(&pol, u, true, 0), SA_POLICY_ADMIT);
	for (int i = 0; i < 5; i++)
		ck_assert_int_eq(sa_policy_admit_call(&pol, u, true, 0), SA_POLICY_CHANNEL_LIMIT);
	sa_policy_release(u);
	ck_assert_int_eq(sa_policy_admit_call(&pol, u, true, 0), SA_POLICY_ADMIT);   /* the 2nd token */
	sa_policy_release(u);
	ck_assert_int_eq(sa_policy_admit_call(&pol, u, true, 0), SA_POLICY_RATE_LIMIT);
	ck_assert_int_eq(sa_policy_admit_call(&pol, u, false, 0), SA_POLICY_ADMIT);   /* inbound: no rate */
	ck_assert_int_eq(u->refused[SA_POLICY_RATE_LIMIT], 1);
	sa_trunk_table_free(tt);
}
END_TEST

/* Each node of a fleet takes the limit divided by the nodes alive, rounded up. */
START_TEST(a_fleet_shares_the_limits)
{
	struct sa_trunk_policy p;
	sa_policy_default(&p);
	p.max_concurrent_calls = 10;
	p.max_calls_per_second_milli = 5000;
	struct sa_trunk_policy one = p;
	sa_policy_share(&one, 1);
	ck_assert_int_eq(one.max_concurrent_calls, 10);
	sa_policy_share(&one, 0);
	ck_assert_int_eq(one.max_concurrent_calls, 10);
	struct sa_trunk_policy three = p;
	sa_policy_share(&three, 3);
	ck_assert_int_eq(three.max_concurrent_calls, 4);          /* 10/3 rounded up */
	ck_assert_int_eq(three.max_calls_per_second_milli, 1667); /* 5/s over three: 1.667/s each */
	struct sa_trunk_policy many = p;
	sa_policy_share(&many, 64);
	ck_assert_int_eq(many.max_concurrent_calls, 1);           /* never 0 from a limit above 0 */
	struct sa_trunk_policy none;
	sa_policy_default(&none);
	none.max_concurrent_calls = 0;                            /* 0: no call at all, anywhere */
	sa_policy_share(&none, 4);
	ck_assert_int_eq(none.max_concurrent_calls, 0);
	ck_assert_int_eq(none.max_calls_per_second_milli, SA_POLICY_NO_LIMIT);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("policy");
	TCase *tc = tcase_create("policy");
	tcase_add_checked_fixture(tc, setup, NULL);
	tcase_add_test(tc, defaults_limit_nothing);
	tcase_add_test(tc, every_field_set_and_shown);
	tcase_add_test(tc, invalid_values_name_the_field_and_rule);
	tcase_add_test(tc, allow_list_by_network);
	tcase_add_test(tc, cidr_text_round_trip);
	tcase_add_test(tc, rate_bucket_holds_one_second);
	tcase_add_test(tc, slow_rate_still_allows_one_call);
	tcase_add_test(tc, arrival_tls_then_source);
	tcase_add_test(tc, channels_held_and_released);
	tcase_add_test(tc, rate_only_after_channels);
	tcase_add_test(tc, a_fleet_shares_the_limits);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
