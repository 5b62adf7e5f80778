/* test_pgstore.c: the change log's rows (PostgreSQL's to_jsonb of each table's row) as mirror changes. */
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "pgstore.h"

#define HA1_MD5 "0123456789abcdef0123456789abcdef"
#define HA1_256 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

/* rows as the trigger writes them (to_jsonb(NEW) or to_jsonb(OLD)) */
static const char cred_row[] =
	"{\"id\": \"cred_x8mpv2ab4d1kq9zz\", \"ord\": 7, \"ha1_md5\": \"" HA1_MD5 "\", \"trunk_id\": \"trunk_a\", "
	"\"username\": \"pbx-1\", \"created_at\": 1775731200, \"ha1_sha256\": \"" HA1_256 "\", "
	"\"ha1_sha512_256\": \"" HA1_256 "\", \"password_version\": 1, \"rotated_at\": 0, \"previous_until\": 0, "
	"\"prev_ha1_md5\": \"\", \"prev_ha1_sha256\": \"\", \"prev_ha1_sha512_256\": \"\"}";
/* the same after a rotation: the previous password's HA1s, valid until previous_until */
static const char rotated_row[] =
	"{\"id\": \"cred_x8mpv2ab4d1kq9zz\", \"ord\": 7, \"ha1_md5\": \"ffffffffffffffffffffffffffffffff\", "
	"\"trunk_id\": \"trunk_a\", \"username\": \"pbx-1\", \"created_at\": 1775731200, \"ha1_sha256\": \"" HA1_256 "\", "
	"\"ha1_sha512_256\": \"" HA1_256 "\", \"password_version\": 2, \"rotated_at\": 1775731300, "
	"\"previous_until\": 1775734900, \"prev_ha1_md5\": \"" HA1_MD5 "\", \"prev_ha1_sha256\": \"" HA1_256 "\", "
	"\"prev_ha1_sha512_256\": \"" HA1_256 "\"}";

START_TEST(test_credential_row)
{
	struct sa_mirror_change ch;

	ck_assert_int_eq(sa_pg_change_decode("credentials", "insert", cred_row, &ch), SA_STORE_OK);
	ck_assert_int_eq(ch.kind, SA_MIRROR_CREDENTIAL);
	ck_assert_str_eq(ch.cred.id, "cred_x8mpv2ab4d1kq9zz");
	ck_assert_str_eq(ch.cred.trunk_id, "trunk_a");
	ck_assert_str_eq(ch.cred.username, "pbx-1");
	ck_assert_int_eq(ch.cred.created_at, 1775731200);
	ck_assert_str_eq(ch.cred.ha1[SA_ALG_MD5], HA1_MD5);
	ck_assert_str_eq(ch.cred.ha1[SA_ALG_SHA256], HA1_256);
	ck_assert_str_eq(ch.cred.ha1[SA_ALG_SHA512_256], HA1_256);
	ck_assert_uint_eq(ch.cred.password_version, 1);
	ck_assert_str_eq(ch.cred.previous_ha1[SA_ALG_MD5], "");
	ck_assert_int_eq(sa_pg_change_decode("credentials", "update", rotated_row, &ch), SA_STORE_OK);
	ck_assert_int_eq(ch.kind, SA_MIRROR_CREDENTIAL);
	ck_assert_uint_eq(ch.cred.password_version, 2);
	ck_assert_int_eq(ch.cred.rotated_at, 1775731300);
	ck_assert_int_eq(ch.cred.previous_until, 1775734900);
	ck_assert_str_eq(ch.cred.ha1[SA_ALG_MD5], "ffffffffffffffffffffffffffffffff");
	ck_assert_str_eq(ch.cred.previous_ha1[SA_ALG_MD5], HA1_MD5);
	ck_assert_int_eq(sa_pg_change_decode("credentials", "delete", cred_row, &ch), SA_STORE_OK);
	ck_assert_int_eq(ch.kind, SA_MIRROR_CREDENTIAL_GONE);
	ck_assert_str_eq(ch.cred.id, "cred_x8mpv2ab4d1kq9zz");
	ck_assert_str_eq(ch.cred.trunk_id, "trunk_a");
}
END_TEST

START_TEST(test_trunk_row_with_policy)
{
	struct sa_mirror_change ch;
	const char *row = "{\"id\": \"trunk_a\", \"ord\": 1, \"name\": \"main\", \"policy\": {\"require_tls\": true, "
	                  "\"allowed_sources\": [\"10.0.0.0/8\"], \"digest_algorithms\": [\"MD5\"], "
	                  "\"ip_authentication\": false, \"max_calls_per_second\": 0.5, \"max_concurrent_calls\": 5}, "
	                  "\"account_id\": \"acc_a\", \"created_at\": 1775731200}";

	ck_assert_int_eq(sa_pg_change_decode("trunks", "update", row, &ch), SA_STORE_OK);
	ck_assert_int_eq(ch.kind, SA_MIRROR_TRUNK);
	ck_assert_str_eq(ch.trunk.id, "trunk_a");
	ck_assert_str_eq(ch.trunk.account_id, "acc_a");
	ck_assert_str_eq(ch.trunk.name, "main");
	ck_assert_int_eq(ch.policy.max_concurrent_calls, 5);
	ck_assert_int_eq(ch.policy.max_calls_per_second_milli, 500);
	ck_assert_uint_eq(ch.policy.nsources, 1);
	ck_assert(ch.policy.require_tls);
	ck_assert_uint_eq(ch.policy.nalgs, 1);
	ck_assert_int_eq(ch.policy.algs[0], SA_ALG_MD5);
}
END_TEST

START_TEST(test_account_and_key_rows)
{
	struct sa_mirror_change ch;
	char key[200] = "{\"hash\": \"\\\\x";

	ck_assert_int_eq(sa_pg_change_decode("accounts", "insert",
	                                     "{\"id\": \"acc_a\", \"name\": \"Acme\", \"created_at\": 5}", &ch), SA_STORE_OK);
	ck_assert_int_eq(ch.kind, SA_MIRROR_ACCOUNT);
	ck_assert_str_eq(ch.account.name, "Acme");
	for (int i = 0; i < 32; i++)
		strcat(key, i == 0 ? "ff" : "01");
	strcat(key, "\", \"account_id\": \"acc_a\", \"created_at\": 6}");
	ck_assert_int_eq(sa_pg_change_decode("api_keys", "insert", key, &ch), SA_STORE_OK);
	ck_assert_int_eq(ch.kind, SA_MIRROR_APIKEY);
	ck_assert_uint_eq(ch.apikey.hash[0], 0xff);
	ck_assert_uint_eq(ch.apikey.hash[31], 0x01);
	ck_assert_str_eq(ch.apikey.account_id, "acc_a");
	ck_assert_int_eq(sa_pg_change_decode("api_keys", "delete", key, &ch), SA_STORE_OK);
	ck_assert_int_eq(ch.kind, SA_MIRROR_APIKEY_GONE);
	/* what the mirror does not keep is skipped, not refused */
	ck_assert_int_eq(sa_pg_change_decode("accounts", "delete", "{}", &ch), SA_STORE_OK);
	ck_assert_int_eq(ch.kind, SA_MIRROR_NONE);
	ck_assert_int_eq(sa_pg_change_decode("nodes", "insert", "not json", &ch), SA_STORE_OK);
	ck_assert_int_eq(ch.kind, SA_MIRROR_NONE);
}
END_TEST

/* A webhooks row: the mirror takes it with its secret (the node signs with
 * it); a delete needs only the id and the account. */
START_TEST(test_webhook_rows)
{
	static const char row[] = "{\"id\": \"wh_0123456789abcdef\", \"url\": \"https://h.example/x?a=1\", "
	                          "\"events\": 36, \"secret\": \"whsec_abc\", \"account_id\": \"acc_a\", "
	                          "\"created_at\": 1775731200}";
	struct sa_mirror_change ch;

	ck_assert_int_eq(sa_pg_change_decode("webhooks", "insert", row, &ch), SA_STORE_OK);
	ck_assert_int_eq(ch.kind, SA_MIRROR_WEBHOOK);
	ck_assert_str_eq(ch.webhook.id, "wh_0123456789abcdef");
	ck_assert_str_eq(ch.webhook.account_id, "acc_a");
	ck_assert_str_eq(ch.webhook.url, "https://h.example/x?a=1");
	ck_assert_uint_eq(ch.webhook.events, 36);
	ck_assert_str_eq(ch.webhook.secret, "whsec_abc");
	ck_assert_int_eq(ch.webhook.created_at, 1775731200);
	ck_assert_int_eq(sa_pg_change_decode("webhooks", "delete", "{\"id\": \"wh_b\", \"account_id\": \"acc_a\"}", &ch),
	                 SA_STORE_OK);
	ck_assert_int_eq(ch.kind, SA_MIRROR_WEBHOOK_GONE);
	ck_assert_str_eq(ch.webhook.id, "wh_b");
	ck_assert_str_eq(ch.webhook.account_id, "acc_a");
	/* the fleet's deliveries are no change of the mirror's */
	ck_assert_int_eq(sa_pg_change_decode("webhook_deliveries", "insert", "{}", &ch), SA_STORE_OK);
	ck_assert_int_eq(ch.kind, SA_MIRROR_NONE);
}
END_TEST

/* rows that are not what the schema writes are refused, whole */
static const char *const bad_rows[][2] = {
	{ "credentials", "not json" },
	{ "credentials", "[1, 2]" },
	{ "credentials", "{\"id\": \"cred_a\", \"trunk_id\": \"trunk_a\", \"username\": \"u\", \"created_at\": 1}" },
	{ "credentials", "{\"id\": \"cred_a\", \"trunk_id\": \"trunk_a\", \"username\": \"u\", \"created_at\": 1, "
	                 "\"ha1_md5\": \"abc\", \"ha1_sha256\": \"" HA1_256 "\", \"ha1_sha512_256\": \"" HA1_256 "\"}" },
	{ "credentials", "{\"id\": \"cred_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\", \"trunk_id\": \"t\"}" },
	{ "credentials", "{\"id\": \"cred_a\", \"trunk_id\": \"trunk_a\", \"username\": \"u\", \"created_at\": 1, "
	                 "\"ha1_md5\": \"" HA1_MD5 "\", \"ha1_sha256\": \"" HA1_256 "\", \"ha1_sha512_256\": \"" HA1_256 "\", "
	                 "\"password_version\": 0, \"rotated_at\": 0, \"previous_until\": 0, \"prev_ha1_md5\": \"\", "
	                 "\"prev_ha1_sha256\": \"\", \"prev_ha1_sha512_256\": \"\"}" },
	{ "credentials", "{\"id\": \"cred_a\", \"trunk_id\": \"trunk_a\", \"username\": \"u\", \"created_at\": 1, "
	                 "\"ha1_md5\": \"" HA1_MD5 "\", \"ha1_sha256\": \"" HA1_256 "\", \"ha1_sha512_256\": \"" HA1_256 "\", "
	                 "\"password_version\": 2, \"rotated_at\": 5, \"previous_until\": 9, \"prev_ha1_md5\": \"abc\", "
	                 "\"prev_ha1_sha256\": \"\", \"prev_ha1_sha512_256\": \"\"}" },
	{ "accounts", "{\"id\": \"acc_a\", \"name\": \"Acme\", \"created_at\": \"yesterday\"}" },
	{ "webhooks", "{\"id\": \"wh_a\", \"account_id\": \"acc_a\", \"url\": \"http://h/\", \"events\": 0, "
	              "\"secret\": \"whsec_a\", \"created_at\": 1}" },
	{ "webhooks", "{\"id\": \"wh_a\", \"account_id\": \"acc_a\", \"url\": \"http://h/\", \"events\": 1, "
	              "\"created_at\": 1}" },
	{ "api_keys", "{\"hash\": \"\\\\xzz\", \"account_id\": \"acc_a\", \"created_at\": 6}" },
	{ "trunks", "{\"id\": \"trunk_a\", \"name\": \"m\", \"account_id\": \"acc_a\", \"created_at\": 1, "
	            "\"policy\": {\"max_concurrent_calls\": -3}}" },
	{ "trunks", "{\"id\": \"trunk_a\", \"name\": \"m\", \"account_id\": \"acc_a\", \"created_at\": 1}" },
};

START_TEST(test_bad_rows_refused)
{
	struct sa_mirror_change ch;

	ck_assert_int_eq(sa_pg_change_decode(bad_rows[_i][0], "insert", bad_rows[_i][1], &ch), SA_STORE_EINVAL);
}
END_TEST

/* A registrations row: what the owner writes (sa_pg_binding_json) is what
 * the other nodes read back from the log, owner included; the mirror keeps
 * none of it. */
START_TEST(test_registration_row_round_trip)
{
	struct sa_binding b = { .source_port = 5062, .cseq = 7, .registered_at = 1775731200, .updated_at = 1775731260,
	                        .expires_at = 1775731320, .password_version = 2 }, got;
	struct sa_mirror_change ch;
	char node[SA_NODE_MAX];

	strcpy(b.cred_id, "cred_x8mpv2ab4d1kq9zz");
	strcpy(b.trunk_id, "trunk_a");
	strcpy(b.contact, "sip:pbx-1@198.51.100.7:5062;transport=tcp");
	strcpy(b.source, "198.51.100.7");
	strcpy(b.transport, "tcp");
	strcpy(b.user_agent, "Asterisk PBX 20.1");
	strcpy(b.call_id, "abc@198.51.100.7");
	json_t *row = sa_pg_binding_json(&b, "edge-fra-2");
	ck_assert_ptr_nonnull(row);
	char *text = json_dumps(row, JSON_COMPACT);
	json_decref(row);
	ck_assert_int_eq(sa_pg_binding_decode(text, &got, node, sizeof node), SA_STORE_OK);
	ck_assert_int_eq(sa_pg_change_decode("registrations", "insert", text, &ch), SA_STORE_OK);
	ck_assert_int_eq(ch.kind, SA_MIRROR_NONE);
	free(text);
	ck_assert_str_eq(node, "edge-fra-2");
	ck_assert_str_eq(got.cred_id, b.cred_id);
	ck_assert_str_eq(got.trunk_id, b.trunk_id);
	ck_assert_str_eq(got.contact, b.contact);
	ck_assert_str_eq(got.source, b.source);
	ck_assert_uint_eq(got.source_port, 5062);
	ck_assert_str_eq(got.transport, "tcp");
	ck_assert_str_eq(got.user_agent, b.user_agent);
	ck_assert_str_eq(got.call_id, b.call_id);
	ck_assert_uint_eq(got.cseq, 7);
	ck_assert_int_eq(got.registered_at, 1775731200);
	ck_assert_int_eq(got.updated_at, 1775731260);
	ck_assert_int_eq(got.expires_at, 1775731320);
	ck_assert_uint_eq(got.password_version, 2);
}
END_TEST

/* a row the relay could not use: refused, never half read */
static const char *const bad_registration_rows[] = {
	"not json",
	"{\"credential_id\": \"c\", \"contact\": \"sip:a@b\", \"trunk_id\": \"t\", \"source\": \"192.0.2.1\","
	" \"source_port\": 5060, \"transport\": \"udp\", \"registered_at\": 1, \"updated_at\": 1, \"expires_at\": 2}",
	"{\"credential_id\": \"c\", \"contact\": \"sip:a@b\", \"node\": \"A\", \"trunk_id\": \"t\", \"source\": \"192.0.2.1\","
	" \"source_port\": 70000, \"transport\": \"udp\", \"registered_at\": 1, \"updated_at\": 1, \"expires_at\": 2}",
	"{\"credential_id\": \"c\", \"contact\": \"sip:a@b\", \"node\": \"A\", \"trunk_id\": \"t\", \"source\": \"192.0.2.1\","
	" \"source_port\": 5060, \"transport\": \"udp\", \"registered_at\": 1, \"updated_at\": \"1\", \"expires_at\": 2}",
};

START_TEST(test_bad_registration_rows)
{
	struct sa_binding b;
	char node[SA_NODE_MAX];

	ck_assert_int_eq(sa_pg_binding_decode(bad_registration_rows[_i], &b, node, sizeof node), SA_STORE_EINVAL);
}
END_TEST

static Suite *pgstore_suite(void)
{
	Suite *s = suite_create("pgstore");
	TCase *tc = tcase_create("decode");

	tcase_add_test(tc, test_credential_row);
	tcase_add_test(tc, test_trunk_row_with_policy);
	tcase_add_test(tc, test_account_and_key_rows);
	tcase_add_test(tc, test_webhook_rows);
	tcase_add_loop_test(tc, test_bad_rows_refused, 0, (int)(sizeof bad_rows / sizeof bad_rows[0]));
	tcase_add_test(tc, test_registration_row_round_trip);
	tcase_add_loop_test(tc, test_bad_registration_rows, 0,
	                    (int)(sizeof bad_registration_rows / sizeof bad_registration_rows[0]));
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(pgstore_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
