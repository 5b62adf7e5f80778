/* test_webhook.c: webhook rules: signatures against an independent HMAC, the retry schedule, URLs, event names, aggregation. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "policy.h"
#include "webhook.h"

/* Vectors from Python's hmac module: hmac.new(b"whsec_test", b"<t>.<body>", sha256). */
START_TEST(test_sign_matches_an_independent_hmac)
{
	char h[SA_WH_SIG_HEADER_MAX];

	ck_assert_int_eq(sa_wh_sign("whsec_test", 1700000000, "{\"a\":1}", 7, h, sizeof h), 0);
	ck_assert_str_eq(h, "t=1700000000,v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789");
	ck_assert_int_eq(sa_wh_sign("whsec_test", 1700000001, "{\"a\":1}", 7, h, sizeof h), 0);
	ck_assert_str_eq(h, "t=1700000001,v1=26284b7c7d415dfc00bef6e3cf4549b9b5bec8ba9f639ab537fbfec18d0d398b");
	ck_assert_int_eq(sa_wh_sign("whsec_test", 1700000000, NULL, 0, h, sizeof h), 0);
	ck_assert_str_eq(h, "t=1700000000,v1=5967f3c560522fa40cf2876ebc3c3a08551dd6959aaade3b413460591895bdcc");
}
END_TEST

START_TEST(test_sign_depends_on_secret_and_body)
{
	char a[SA_WH_SIG_HEADER_MAX], b[SA_WH_SIG_HEADER_MAX], c[SA_WH_SIG_HEADER_MAX];

	ck_assert_int_eq(sa_wh_sign("whsec_test", 1700000000, "{\"a\":1}", 7, a, sizeof a), 0);
	ck_assert_int_eq(sa_wh_sign("whsec_tesu", 1700000000, "{\"a\":1}", 7, b, sizeof b), 0);
	ck_assert_int_eq(sa_wh_sign("whsec_test", 1700000000, "{\"a\":2}", 7, c, sizeof c), 0);
	ck_assert_str_ne(a, b);
	ck_assert_str_ne(a, c);
	ck_assert_int_eq(sa_wh_sign("whsec_test", 1700000000, "{\"a\":1}", 7, a, 20), -1);   /* no room */
}
END_TEST

START_TEST(test_retry_doubles_from_the_base)
{
	const int64_t created = 1000000, now = created;

	ck_assert_int_eq(sa_wh_retry_at(30, 1, created, now), now + 30);
	ck_assert_int_eq(sa_wh_retry_at(30, 2, created, now), now + 60);
	ck_assert_int_eq(sa_wh_retry_at(30, 3, created, now), now + 120);
	ck_assert_int_eq(sa_wh_retry_at(30, 7, created, now), now + 1920);
	ck_assert_int_eq(sa_wh_retry_at(30, 8, created, now), now + 3600);    /* capped at an hour */
	ck_assert_int_eq(sa_wh_retry_at(30, 60, created, now), now + 3600);
	ck_assert_int_eq(sa_wh_retry_at(1, 1, created, now), now + 1);
	ck_assert_int_eq(sa_wh_retry_at(1, 4, created, now), now + 8);
}
END_TEST

START_TEST(test_retry_stops_after_a_day)
{
	const int64_t created = 1000000;

	ck_assert_int_eq(sa_wh_retry_at(30, 20, created, created + 86400 - 3600), created + 86400);   /* the last */
	ck_assert_int_eq(sa_wh_retry_at(30, 21, created, created + 86400 - 3599), -1);
	ck_assert_int_eq(sa_wh_retry_at(1, 1, created, created + 86400), -1);
}
END_TEST

/* The whole default schedule: how many attempts a day holds. */
START_TEST(test_default_schedule_over_a_day)
{
	const int64_t created = 0;
	int64_t now = created;
	unsigned attempts = 1;

	while ((now = sa_wh_retry_at(SA_WH_RETRY_BASE_DEFAULT, attempts, created, now)) >= 0)
		attempts++;
	/* 30 s .. 32 min (7 retries, 3810 s), then hourly to 86400 s: 22 more, and the first attempt */
	ck_assert_uint_eq(attempts, 1 + 7 + 22);
}
END_TEST

START_TEST(test_url_accepts_http_and_https)
{
	struct sa_wh_url u;
	char why[128];

	ck_assert_int_eq(sa_wh_url_parse("https://hooks.example.com/sip?x=1", &u, why, sizeof why), 0);
	ck_assert(u.https);
	ck_assert_str_eq(u.host, "hooks.example.com");
	ck_assert_uint_eq(u.port, 443);
	ck_assert_str_eq(u.path, "/sip?x=1");
	ck_assert_int_eq(sa_wh_url_parse("http://127.0.0.1:8080", &u, why, sizeof why), 0);
	ck_assert(!u.https);
	ck_assert_str_eq(u.host, "127.0.0.1");
	ck_assert_uint_eq(u.port, 8080);
	ck_assert_str_eq(u.path, "/");
	ck_assert_int_eq(sa_wh_url_parse("HTTP://[::1]:9/h", &u, why, sizeof why), 0);
	ck_assert_str_eq(u.host, "::1");
	ck_assert_uint_eq(u.port, 9);
	ck_assert_int_eq(sa_wh_url_parse("http://h?q", &u, why, sizeof why), 0);
	ck_assert_str_eq(u.path, "/?q");
}
END_TEST

START_TEST(test_url_refusals_say_why)
{
	static const struct {
		const char *url, *why;
	} bad[] = {
		{ "ftp://h/", "url must be an http:// or https:// URL" },
		{ "h/x", "url must be an http:// or https:// URL" },
		{ "http://", "url must name a host" },
		{ "http://a b/", "url must not contain blanks, control or non-ASCII bytes" },
		{ "http://u:p@h/", "url must not carry user information" },
		{ "http://h:0/", "url has a malformed port" },
		{ "http://h:65536/", "url has a malformed port" },
		{ "http://h:/", "url has a malformed port" },
		{ "http://h:8x/", "url has a malformed port" },
		{ "http://[::1/", "url has a malformed IPv6 address" },
		{ "http://[::1]x/", "url has a malformed host" },
		{ "http://h/#f", "url must not carry a fragment" },
		{ "http://h_h/", "url must name a host" },
	};
	struct sa_wh_url u;
	char why[128];

	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		ck_assert_int_eq(sa_wh_url_parse(bad[i].url, &u, why, sizeof why), -1);
		ck_assert_str_eq(why, bad[i].why);
	}
	char longurl[SA_WH_URL_MAX + 8];
	memset(longurl, 'a', sizeof longurl - 1);
	memcpy(longurl, "http://h/", 9);
	longurl[sizeof longurl - 1] = '\0';
	ck_assert_int_eq(sa_wh_url_parse(longurl, &u, why, sizeof why), -1);
	ck_assert_str_eq(why, "url is longer than 1023 bytes");
}
END_TEST

START_TEST(test_event_names_round_trip)
{
	for (int e = 0; e < SA_WH_EVENT_COUNT; e++)
		ck_assert_int_eq(sa_wh_event_parse(sa_wh_event_name((enum sa_wh_event)e)), e);
	ck_assert_int_eq(sa_wh_event_parse("credential.rotated"), SA_WH_CREDENTIAL_ROTATED);
	ck_assert_int_eq(sa_wh_event_parse("auth.failed"), SA_WH_AUTH_FAILED);
	ck_assert_int_eq(sa_wh_event_parse("auth.Failed"), -1);
	ck_assert_int_eq(sa_wh_event_parse(""), -1);
	ck_assert_ptr_null(sa_wh_event_name(SA_WH_EVENT_COUNT));
}
END_TEST

struct seen {
	unsigned n;
	struct sa_wh_agg_trunk t[4];
};

static void seen_cb(const struct sa_wh_agg_trunk *t, void *arg)
{
	struct seen *s = arg;

	if (s->n < 4)
		s->t[s->n] = *t;
	s->n++;
}

START_TEST(test_agg_sums_per_trunk_and_ranks_names)
{
	struct sa_wh_agg *a = sa_wh_agg_new();
	struct seen s = { 0 };

	for (int i = 0; i < 5; i++)
		ck_assert(sa_wh_agg_add(a, "trunk_a", "192.0.2.1", "alice", 100 + i));
	for (int i = 0; i < 3; i++)
		ck_assert(sa_wh_agg_add(a, "trunk_a", "192.0.2.2", "bob", 110));
	ck_assert(sa_wh_agg_add(a, "trunk_b", "192.0.2.9", "carol", 120));
	ck_assert_uint_eq(sa_wh_agg_take(a, seen_cb, &s), 0);
	ck_assert_uint_eq(s.n, 2);
	struct sa_wh_agg_trunk *ta = strcmp(s.t[0].trunk_id, "trunk_a") == 0 ? &s.t[0] : &s.t[1];
	ck_assert_uint_eq(ta->count, 8);
	ck_assert_int_eq(ta->first_at, 100);
	ck_assert_int_eq(ta->last_at, 110);
	ck_assert_uint_eq(ta->nsources, 2);
	ck_assert_str_eq(ta->sources[0].name, "192.0.2.1");
	ck_assert_uint_eq(ta->sources[0].count, 5);
	ck_assert_str_eq(ta->usernames[1].name, "bob");
	ck_assert_uint_eq(ta->usernames[1].count, 3);
	/* the window starts again empty */
	s.n = 0;
	ck_assert_uint_eq(sa_wh_agg_take(a, seen_cb, &s), 0);
	ck_assert_uint_eq(s.n, 0);
	sa_wh_agg_free(a);
}
END_TEST

/* Past SA_WH_AGG_TRACK names, a heavy hitter is still found and ranked first. */
START_TEST(test_agg_finds_the_heavy_source_among_many)
{
	struct sa_wh_agg *a = sa_wh_agg_new();
	struct seen s = { 0 };
	char src[32];

	for (int i = 0; i < 1000; i++) {
		snprintf(src, sizeof src, "198.51.100.%d", i % 200);
		ck_assert(sa_wh_agg_add(a, "t", src, "u", 1));
		if (i % 4 == 0)
			ck_assert(sa_wh_agg_add(a, "t", "203.0.113.7", "u", 1));
	}
	sa_wh_agg_take(a, seen_cb, &s);
	ck_assert_uint_eq(s.n, 1);
	ck_assert_uint_eq(s.t[0].count, 1250);
	ck_assert_uint_eq(s.t[0].nsources, SA_WH_AGG_TRACK);
	ck_assert_str_eq(s.t[0].sources[0].name, "203.0.113.7");
	ck_assert_uint_ge(s.t[0].sources[0].count, 250);
	sa_wh_agg_free(a);
}
END_TEST

START_TEST(test_agg_is_bounded_in_trunks)
{
	struct sa_wh_agg *a = sa_wh_agg_new();
	struct seen s = { 0 };
	char trunk[32];

	for (int i = 0; i < SA_WH_AGG_TRUNKS + 10; i++) {
		snprintf(trunk, sizeof trunk, "trunk_%d", i);
		ck_assert(sa_wh_agg_add(a, trunk, "x", "y", 1) == (i < SA_WH_AGG_TRUNKS));
	}
	ck_assert(sa_wh_agg_add(a, "trunk_0", "x", "y", 1));   /* a trunk already in counts on */
	ck_assert_uint_eq(sa_wh_agg_take(a, seen_cb, &s), 10);
	ck_assert_uint_eq(s.n, SA_WH_AGG_TRUNKS);
	sa_wh_agg_free(a);
}
END_TEST

static bool allowed(const char *ip, const struct sa_cidr *nets, unsigned n)
{
	struct sockaddr_in6 s6 = { .sin6_family = AF_INET6 };
	struct sockaddr_in s4 = { .sin_family = AF_INET };
	if (inet_pton(AF_INET, ip, &s4.sin_addr) == 1)
		return sa_wh_address_allowed((struct sockaddr *)&s4, nets, n);
	ck_assert_int_eq(inet_pton(AF_INET6, ip, &s6.sin6_addr), 1);
	return sa_wh_address_allowed((struct sockaddr *)&s6, nets, n);
}

/* A customer's URL reaches public addresses only, unless the operator names a network. */
START_TEST(test_private_targets_need_the_operators_word)
{
	static const char *refused[] = {
		"127.0.0.1", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1", "169.254.169.254", "100.64.0.1",
		"0.0.0.0", "224.0.0.1", "::1", "::", "fd00::1", "fe80::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
		"198.18.0.1", "192.0.2.1", "198.51.100.1", "203.0.113.7", "192.88.99.1", "2001:db8::1",
		/* IPv6 forms that carry a private IPv4 address: compatible, NAT64, 6to4 */
		"::127.0.0.1", "::10.0.0.1", "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "2002:7f00:1::1",
		"2002:c0a8:101::1", "2001::1", "2001:0:4136:e378::1", "64:ff9b:1::1", "100::1",
	};
	static const char *public_ips[] = { "93.184.216.34", "8.8.8.8", "172.32.0.1", "100.128.0.1", "2606:4700::1111",
	                                    "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1", "2001:4860::8888" };
	for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
		ck_assert_msg(!allowed(refused[i], NULL, 0), "%s allowed", refused[i]);
	for (size_t i = 0; i < sizeof public_ips / sizeof public_ips[0]; i++)
		ck_assert_msg(allowed(public_ips[i], NULL, 0), "%s refused", public_ips[i]);
	struct sa_cidr nets[2];
	ck_assert_int_eq(sa_cidr_parse("127.0.0.1/32", &nets[0]), 0);
	ck_assert_int_eq(sa_cidr_parse("10.0.0.0/8", &nets[1]), 0);
	ck_assert(allowed("127.0.0.1", nets, 2));
	ck_assert(!allowed("127.0.0.9", nets, 2));
	ck_assert(allowed("10.200.0.1", nets, 2));
	ck_assert(!allowed("192.168.1.1", nets, 2));
}
END_TEST

static Suite *webhook_suite(void)
{
	Suite *s = suite_create("webhook");
	TCase *tc = tcase_create("webhook");

	tcase_add_test(tc, test_sign_matches_an_independent_hmac);
	tcase_add_test(tc, test_sign_depends_on_secret_and_body);
	tcase_add_test(tc, test_retry_doubles_from_the_base);
	tcase_add_test(tc, test_retry_stops_after_a_day);
	tcase_add_test(tc, test_default_schedule_over_a_day);
	tcase_add_test(tc, test_url_accepts_http_and_https);
	tcase_add_test(tc, test_url_refusals_say_why);
	tcase_add_test(tc, test_event_names_round_trip);
	tcase_add_test(tc, test_agg_sums_per_trunk_and_ranks_names);
	tcase_add_test(tc, test_agg_finds_the_heavy_source_among_many);
	tcase_add_test(tc, test_agg_is_bounded_in_trunks);
	tcase_add_test(tc, test_private_targets_need_the_operators_word);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(webhook_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
