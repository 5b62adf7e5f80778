/* test_metrics.c: the Prometheus text exposition: names, HELP/TYPE, labels, stale nonces apart, sparse statuses. */
#define _GNU_SOURCE
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <check.h>

#include "metrics.h"

static struct sa_metrics m;
static char *text;
static size_t len;

static void setup(void)
{
	memset(&m, 0, sizeof m);
	m.version = "9.8.7";
	m.start_time = 1775731200;
	m.registrations_active = -1;
}

static void teardown(void)
{
	free(text);
	text = NULL;
}

static void render(void)
{
	free(text);
	text = sa_metrics_render(&m, &len);
	ck_assert_ptr_nonnull(text);
	ck_assert_uint_eq(len, strlen(text));
}

/* The whole line (no partial matches: "x 1" must not match "x 10"). */
static bool has_line(const char *line)
{
	size_t n = strlen(line);

	for (const char *p = text; (p = strstr(p, line)) != NULL; p++)
		if ((p == text || p[-1] == '\n') && p[n] == '\n')
			return true;
	return false;
}

#define ck_line(l) ck_assert_msg(has_line(l), "missing line [%s] in:\n%s", l, text)
#define ck_no_line(l) ck_assert_msg(!has_line(l), "unexpected line [%s]", l)

START_TEST(test_every_line_is_valid_exposition)
{
	regex_t sample, comment;
	char *copy, *save = NULL;

	m.sip_requests[2] = 5;
	m.api_requests[201] = 1;
	m.sip_rejected[403] = 2;
	render();
	ck_assert_int_eq(regcomp(&sample, "^sipauthd_[a-z_]+(\\{[a-z_]+=\"[^\"]*\"\\})? -?[0-9]+(\\.[0-9]+)?$", REG_EXTENDED), 0);
	ck_assert_int_eq(regcomp(&comment, "^# (HELP sipauthd_[a-z_]+ .+|TYPE sipauthd_[a-z_]+ (counter|gauge))$",
	                         REG_EXTENDED), 0);
	ck_assert_msg(len > 0 && text[len - 1] == '\n', "ends with a newline");
	copy = strdup(text);
	for (char *l = strtok_r(copy, "\n", &save); l != NULL; l = strtok_r(NULL, "\n", &save))
		ck_assert_msg(regexec(l[0] == '#' ? &comment : &sample, l, 0, NULL, 0) == 0, "bad line [%s]", l);
	free(copy);
	regfree(&sample);
	regfree(&comment);
}
END_TEST

/* Each metric has one HELP and one TYPE, before its samples. */
START_TEST(test_help_and_type_once_each)
{
	const char *names[] = { "sip_requests_total", "sip_requests_by_transport_total", "auth_challenges_total",
		"auth_successes_total", "auth_failures_total", "auth_stale_nonces_total", "registrations_total",
		"calls_active", "api_requests_total", "sip_rejected_total", "build_info" };
	char help[96], type[96];

	render();
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		snprintf(help, sizeof help, "# HELP sipauthd_%s ", names[i]);
		snprintf(type, sizeof type, "# TYPE sipauthd_%s ", names[i]);
		const char *h = strstr(text, help), *t = strstr(text, type);
		ck_assert_msg(h != NULL && t != NULL, "%s has HELP and TYPE", names[i]);
		ck_assert_ptr_null(strstr(h + 1, help));
		ck_assert_ptr_null(strstr(t + 1, type));
		ck_assert_msg(h < t, "HELP before TYPE for %s", names[i]);
	}
}
END_TEST

START_TEST(test_counters_by_method_and_transport)
{
	m.sip_requests[1] = 7;    /* REGISTER */
	m.sip_requests[2] = 3;    /* INVITE */
	m.sip_requests_by_transport[0] = 9;
	m.sip_requests_by_transport[1] = 1;
	render();
	ck_line("# TYPE sipauthd_sip_requests_total counter");
	ck_line("sipauthd_sip_requests_total{method=\"REGISTER\"} 7");
	ck_line("sipauthd_sip_requests_total{method=\"INVITE\"} 3");
	ck_line("sipauthd_sip_requests_total{method=\"PUBLISH\"} 0");
	ck_line("sipauthd_sip_requests_by_transport_total{transport=\"udp\"} 9");
	ck_line("sipauthd_sip_requests_by_transport_total{transport=\"tcp\"} 1");
	ck_line("sipauthd_sip_requests_by_transport_total{transport=\"tls\"} 0");
}
END_TEST

START_TEST(test_stale_nonces_apart_from_failures)
{
	m.challenges = 40;
	m.auth_ok = 30;
	m.auth_fail[SA_AUTH_UNKNOWN_USER] = 4;
	m.auth_fail[SA_AUTH_BAD_PASSWORD] = 3;
	m.auth_fail[SA_AUTH_STALE_NONCE] = 11;
	m.auth_fail[SA_AUTH_REPLAY] = 2;
	m.auth_fail[SA_AUTH_MALFORMED] = 1;
	m.auth_fail[SA_AUTH_BANNED] = 6;
	m.auth_stale[SA_STALE_EXPIRED] = 5;
	m.auth_stale[SA_STALE_UNKNOWN_KEY] = 2;
	m.auth_stale[SA_STALE_OTHER_NODE] = 4;
	render();
	ck_line("sipauthd_auth_challenges_total 40");
	ck_line("sipauthd_auth_successes_total 30");
	ck_line("# TYPE sipauthd_auth_failures_total counter");
	ck_line("sipauthd_auth_failures_total{reason=\"unknown_user\"} 4");
	ck_line("sipauthd_auth_failures_total{reason=\"bad_password\"} 3");
	ck_line("sipauthd_auth_failures_total{reason=\"replay\"} 2");
	ck_line("sipauthd_auth_failures_total{reason=\"malformed\"} 1");
	ck_line("sipauthd_auth_failures_total{reason=\"banned\"} 6");
	ck_line("sipauthd_auth_stale_nonces_total 11");
	ck_line("# TYPE sipauthd_auth_stale_nonces_by_cause_total counter");
	ck_line("sipauthd_auth_stale_nonces_by_cause_total{cause=\"expired\"} 5");
	ck_line("sipauthd_auth_stale_nonces_by_cause_total{cause=\"unknown_key\"} 2");
	ck_line("sipauthd_auth_stale_nonces_by_cause_total{cause=\"other_node\"} 4");
	ck_line("sipauthd_auth_stale_nonces_by_cause_total{cause=\"table_full\"} 0");
	ck_line("sipauthd_auth_stale_nonces_by_cause_total{cause=\"future\"} 0");
	ck_assert_ptr_null(strstr(text, "cause=\"none\""));
	ck_assert_ptr_null(strstr(text, "reason=\"stale_nonce\""));
	ck_assert_ptr_null(strstr(text, "reason=\"none\""));
}
END_TEST

START_TEST(test_failure_reasons_present_at_zero)
{
	render();
	ck_line("sipauthd_auth_failures_total{reason=\"unknown_user\"} 0");
	ck_line("sipauthd_auth_failures_total{reason=\"banned\"} 0");
	ck_line("sipauthd_auth_stale_nonces_total 0");
}
END_TEST

START_TEST(test_statuses_are_sparse)
{
	m.api_requests[200] = 12;
	m.api_requests[401] = 3;
	m.sip_rejected[483] = 1;
	render();
	ck_line("# TYPE sipauthd_api_requests_total counter");
	ck_line("sipauthd_api_requests_total{status=\"200\"} 12");
	ck_line("sipauthd_api_requests_total{status=\"401\"} 3");
	ck_line("sipauthd_sip_rejected_total{status=\"483\"} 1");
	ck_assert_ptr_null(strstr(text, "status=\"404\""));
	ck_assert_ptr_null(strstr(text, "status=\"0\""));
}
END_TEST

START_TEST(test_gauges_and_calls)
{
	m.calls_active = 4;
	m.calls_started = 10;
	m.calls_revoked = 2;
	m.credential_rotations = 3;
	m.registrations = 8;
	render();
	ck_line("# TYPE sipauthd_calls_active gauge");
	ck_line("sipauthd_calls_active 4");
	ck_line("sipauthd_calls_started_total 10");
	ck_line("sipauthd_calls_revoked_total 2");
	ck_line("sipauthd_credential_rotations_total 3");
	ck_line("sipauthd_registrations_total 8");
	ck_assert_ptr_null(strstr(text, "registrations_active"));   /* unknown: not rendered */
	m.registrations_active = 5;
	render();
	ck_line("# TYPE sipauthd_registrations_active gauge");
	ck_line("sipauthd_registrations_active 5");
}
END_TEST

/* Both store files: data.mdb's lines as they always were, runtime/'s beside them. */
START_TEST(test_store_maps_main_and_runtime)
{
	render();
	ck_assert_ptr_null(strstr(text, "sipauthd_store_"));   /* sizes unknown: nothing */
	m.store_map_size = 2097152;
	m.store_used = 1887437;
	m.store_write_failures = 3;
	render();
	ck_line("sipauthd_store_map_size_bytes 2097152");
	ck_line("sipauthd_store_map_used_bytes 1887437");
	ck_line("sipauthd_store_map_used_ratio 0.9000");
	ck_line("sipauthd_store_write_failures_total 3");
	ck_assert_ptr_null(strstr(text, "runtime"));
	m.store_runtime_map_size = 4194304;
	m.store_runtime_used = 1048576;
	render();
	ck_line("# TYPE sipauthd_store_runtime_map_size_bytes gauge");
	ck_line("sipauthd_store_runtime_map_size_bytes 4194304");
	ck_line("# TYPE sipauthd_store_runtime_map_used_ratio gauge");
	ck_line("sipauthd_store_runtime_map_used_ratio 0.2500");
	ck_assert_ptr_null(strstr(text, "credential_index"));   /* off: nothing */
	m.credential_index = true;
	m.credential_index_credentials = 1000000;
	m.credential_index_bytes = 369098752;
	m.credential_index_rebuilds = 1;
	render();
	ck_line("# TYPE sipauthd_credential_index_credentials gauge");
	ck_line("sipauthd_credential_index_credentials 1000000");
	ck_line("sipauthd_credential_index_bytes 369098752");
	ck_line("# TYPE sipauthd_credential_index_rebuilds_total counter");
	ck_line("sipauthd_credential_index_rebuilds_total 1");
	ck_line("sipauthd_credential_index_dropped_total 0");
}
END_TEST

START_TEST(test_build_info_and_start_time)
{
	m.sip_forwarded = 1;
	m.sip_retransmissions_absorbed = 18446744073709551615u;
	render();
	ck_line("sipauthd_build_info{version=\"9.8.7\"} 1");
	ck_line("sipauthd_start_time_seconds 1775731200");
	ck_line("sipauthd_sip_forwarded_total 1");
	ck_line("sipauthd_sip_retransmissions_absorbed_total 18446744073709551615");
}
END_TEST

/* The process family, under the names Prometheus client libraries use. */
START_TEST(test_process_figures)
{
	struct sa_metrics_process p = { .cpu_seconds = 12.345, .resident_bytes = 16777216, .virtual_bytes = 268435456,
	                                .open_fds = 23, .max_fds = 65536, .start_time = 1796166000.5 };
	char *out = NULL;
	size_t n = 0;
	ck_assert_int_eq(sa_metrics_process_render(&p, &out, &n), 0);
	ck_assert_uint_eq(strlen(out), n);
	ck_assert_ptr_nonnull(strstr(out, "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 12.35\n"));
	ck_assert_ptr_nonnull(strstr(out, "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes 16777216\n"));
	ck_assert_ptr_nonnull(strstr(out, "\nprocess_virtual_memory_bytes 268435456\n"));
	ck_assert_ptr_nonnull(strstr(out, "# TYPE process_open_fds gauge\nprocess_open_fds 23\n"));
	ck_assert_ptr_nonnull(strstr(out, "\nprocess_max_fds 65536\n"));
	ck_assert_ptr_nonnull(strstr(out, "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds 1796166000.50\n"));
	free(out);
}
END_TEST

static Suite *metrics_suite(void)
{
	Suite *s = suite_create("metrics");
	TCase *tc = tcase_create("metrics");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_every_line_is_valid_exposition);
	tcase_add_test(tc, test_help_and_type_once_each);
	tcase_add_test(tc, test_counters_by_method_and_transport);
	tcase_add_test(tc, test_stale_nonces_apart_from_failures);
	tcase_add_test(tc, test_failure_reasons_present_at_zero);
	tcase_add_test(tc, test_statuses_are_sparse);
	tcase_add_test(tc, test_gauges_and_calls);
	tcase_add_test(tc, test_build_info_and_start_time);
	tcase_add_test(tc, test_store_maps_main_and_runtime);
	tcase_add_test(tc, test_process_figures);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(metrics_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
