/* test_auth.c: the verdict on a digest answer through a credential's rotation, against a real store. */
#define _GNU_SOURCE
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "auth.h"

#define NOW 1775731200   /* 2026-04-09T10:40:00Z */
#define DOMAIN "sip.tryvox.io"
#define USER "pbx-prod-01"
#define PASS1 "secure_password_here_123"
#define PASS2 "rotated_password_456"
#define PASS3 "third_password_789"

static char dir[64];
static struct sa_store *st;
static struct sa_nonce_ctx *nc;
static struct sa_auth auth;
static struct sa_trunk trunk;
static struct sa_credential cred;
static char realm[SA_REALM_MAX];

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void setup(void)
{
	struct sa_account acc;
	unsigned char secret[SA_NONCE_SECRET_LEN];
	struct sa_auth_cfg cfg = { .algs = { SA_ALG_SHA256, SA_ALG_MD5 }, .nalgs = 2 };

	sa_sipmsg_init();
	snprintf(dir, sizeof dir, "%s", "/tmp/test_auth.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	ck_assert_int_eq(sa_store_open(&st, dir, 0), SA_STORE_OK);
	ck_assert_int_eq(sa_store_init(st, DOMAIN), SA_STORE_OK);
	ck_assert_int_eq(sa_store_account_create(st, "Acme", NOW, &acc), SA_STORE_OK);
	ck_assert_int_eq(sa_store_trunk_create(st, acc.id, "main", NOW, &trunk), SA_STORE_OK);
	ck_assert_int_eq(sa_store_credential_create(st, trunk.id, USER, PASS1, strlen(PASS1), 12, NOW, &cred, NULL, 0),
	                 SA_STORE_OK);
	ck_assert_int_eq(sa_store_realm(trunk.id, DOMAIN, realm, sizeof realm), SA_STORE_OK);
	ck_assert_ptr_nonnull(nc = sa_nonce_ctx_new(30, 1024));
	ck_assert_int_eq(sa_store_nonce_secret(st, secret), SA_STORE_OK);
	ck_assert_int_eq(sa_nonce_key_set(nc, 1, secret), 0);
	ck_assert_int_eq(sa_auth_init(&auth, st, nc, &cfg), 0);
}

static void teardown(void)
{
	sa_nonce_ctx_free(nc);
	sa_store_close(st);
	nftw(dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
}

/* A REGISTER answering a fresh SHA-256 challenge at now with password as user. */
static int make_register(const char *user, const char *password, uint64_t now, char *out, size_t cap)
{
	static int n;
	char nonce[SA_NONCE_LEN + 1], ha1[SA_DIGEST_HEX_MAX], resp[SA_DIGEST_HEX_MAX], uri[SA_REALM_MAX + 8];

	snprintf(uri, sizeof uri, "sip:%s", realm);
	ck_assert_int_eq(sa_nonce_issue(nc, realm, SA_ALG_SHA256, now, nonce), 0);
	ck_assert_int_eq(sa_digest_ha1(SA_ALG_SHA256, user, realm, password, ha1), 0);
	struct sa_digest_params p = { .alg = SA_ALG_SHA256, .method = "REGISTER", .uri = uri, .nonce = nonce,
	                              .nc = "00000001", .cnonce = "6b8b4567", .qop = "auth" };
	ck_assert_int_eq(sa_digest_response(&p, ha1, resp), 0);
	n++;
	return snprintf(out, cap,
	                "REGISTER %s SIP/2.0\r\n"
	                "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-rot-%d;rport\r\n"
	                "From: <sip:%s@%s>;tag=rot%d\r\n"
	                "To: <sip:%s@%s>\r\n"
	                "Call-ID: rot-%d@127.0.0.1\r\n"
	                "CSeq: 2 REGISTER\r\n"
	                "Contact: <sip:%s@127.0.0.1:5070>\r\n"
	                "Authorization: Digest username=\"%s\",realm=\"%s\",cnonce=\"6b8b4567\",nc=00000001,"
	                "qop=auth,uri=\"%s\",nonce=\"%s\",response=\"%s\",algorithm=SHA-256\r\n"
	                "Max-Forwards: 70\r\n"
	                "Expires: 300\r\n"
	                "Content-Length: 0\r\n\r\n",
	                uri, n, user, realm, n, user, realm, n, user, user, realm, uri, nonce, resp);
}

/* The verdict on an answer made with password at now. */
static struct sa_auth_result check_as(const char *user, const char *password, uint64_t now)
{
	char buf[4096];
	struct sa_msg m;
	struct sa_msg_error err = { 0 };
	struct sa_auth_result r;
	int len = make_register(user, password, now, buf, sizeof buf);

	ck_assert_int_eq(sa_msg_parse(&m, buf, (size_t)len, false, &err), 0);
	sa_auth_check(&auth, &m, trunk.id, realm, NULL, now, &r);
	sa_msg_free(&m);
	return r;
}

static struct sa_auth_result check(const char *password, uint64_t now)
{
	return check_as(USER, password, now);
}

static void rotate(const char *password, unsigned overlap, int64_t now)
{
	ck_assert_int_eq(sa_store_credential_rotate(st, trunk.id, cred.id, password, strlen(password), 12, overlap, now,
	                                            NULL, NULL, 0), SA_STORE_OK);
}

/* ok, its reason and the version named, in one assertion each */
#define VERDICT(r, ok_, reason_, version_) do { \
		struct sa_auth_result r_ = (r); \
		ck_assert_int_eq(r_.ok, (ok_)); \
		ck_assert_int_eq(r_.reason, (reason_)); \
		ck_assert_uint_eq(r_.password_version, (version_)); \
	} while (0)

/* Every spelling of a trunk host names its trunk: a Request-URI naming trunk
 * B as an absolute name must not pass as "no trunk" and leave the choice to To. */
START_TEST(test_every_spelling_of_a_trunk_host_names_it)
{
	static const char *const same[] = { "trunk-trunk_ab12.sip.example.com", "trunk-trunk-ab12.sip.example.com",
	                                     "TRUNK-TRUNK_AB12.SIP.EXAMPLE.COM", "trunk-trunk_ab12.sip.example.com." };
	char out[SA_ID_MAX];
	for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++) {
		ck_assert_int_eq(sa_auth_trunk_from_host(same[i], "sip.example.com", out, sizeof(out)), 0);
		ck_assert_str_eq(out, "trunk_ab12");
	}
	static const char *const other[] = { "trunk-trunk_ab12.sip.example.com..", "trunk-trunk_ab12.sip.example.co",
	                                      "trunk-.sip.example.com", "trunk-trunk_ab12.xsip.example.com", ".", "" };
	for (size_t i = 0; i < sizeof(other) / sizeof(other[0]); i++)
		ck_assert_int_eq(sa_auth_trunk_from_host(other[i], "sip.example.com", out, sizeof(out)), -1);
}
END_TEST

START_TEST(test_never_rotated_answers_version_1)
{
	VERDICT(check(PASS1, NOW), true, SA_AUTH_NONE, 1);
	VERDICT(check(PASS2, NOW), false, SA_AUTH_BAD_PASSWORD, 0);
	VERDICT(check_as("nobody", PASS1, NOW), false, SA_AUTH_UNKNOWN_USER, 0);
}
END_TEST

/* Both passwords while the overlap lasts, each named by its version;
 * after it, the old one is a wrong password that the failure log can name. */
START_TEST(test_overlap_takes_both_then_only_the_new)
{
	struct sa_auth_result r;

	rotate(PASS2, 60, NOW);
	r = check(PASS1, NOW + 59);
	VERDICT(r, true, SA_AUTH_NONE, 1);
	ck_assert_str_eq(r.cred.id, cred.id);
	ck_assert_uint_eq(r.cred.password_version, 2);   /* the credential is at 2; the answer used 1 */
	VERDICT(check(PASS2, NOW + 59), true, SA_AUTH_NONE, 2);
	VERDICT(check(PASS3, NOW + 59), false, SA_AUTH_BAD_PASSWORD, 0);
	r = check(PASS1, NOW + 60);
	VERDICT(r, false, SA_AUTH_BAD_PASSWORD, 1);
	ck_assert_str_eq(r.cred.ha1[SA_ALG_SHA256], "");            /* a refused answer keeps no HA1 */
	ck_assert_str_eq(r.cred.previous_ha1[SA_ALG_SHA256], "");
	VERDICT(check(PASS2, NOW + 60), true, SA_AUTH_NONE, 2);
}
END_TEST

/* A second rotation keeps current and previous only; overlap 0 keeps one. */
START_TEST(test_rotating_again_drops_the_oldest_at_once)
{
	rotate(PASS2, 3600, NOW);
	rotate(PASS3, 3600, NOW + 10);
	VERDICT(check(PASS1, NOW + 11), false, SA_AUTH_BAD_PASSWORD, 0);
	VERDICT(check(PASS2, NOW + 11), true, SA_AUTH_NONE, 2);
	VERDICT(check(PASS3, NOW + 11), true, SA_AUTH_NONE, 3);
	rotate(PASS1, 0, NOW + 20);
	VERDICT(check(PASS3, NOW + 20), false, SA_AUTH_BAD_PASSWORD, 3);
	VERDICT(check(PASS2, NOW + 20), false, SA_AUTH_BAD_PASSWORD, 0);
	VERDICT(check(PASS1, NOW + 20), true, SA_AUTH_NONE, 4);
}
END_TEST

/* A right answer to an expired nonce is stale, and says which password it was. */
START_TEST(test_stale_nonce_names_the_version)
{
	char buf[4096];
	struct sa_msg m;
	struct sa_msg_error err = { 0 };
	struct sa_auth_result r;

	rotate(PASS2, 3600, NOW);
	int len = make_register(USER, PASS1, NOW, buf, sizeof buf);
	ck_assert_int_eq(sa_msg_parse(&m, buf, (size_t)len, false, &err), 0);
	sa_auth_check(&auth, &m, trunk.id, realm, NULL, NOW + 100, &r);
	sa_msg_free(&m);
	VERDICT(r, false, SA_AUTH_STALE_NONCE, 1);
	ck_assert(r.stale);
	ck_assert_int_eq(r.stale_cause, SA_STALE_EXPIRED);
}
END_TEST

/* The verdict on an answer made at issued_at and checked at now. */
static struct sa_auth_result check_later(const char *password, uint64_t issued_at, uint64_t now)
{
	char buf[4096];
	struct sa_msg m;
	struct sa_msg_error err = { 0 };
	struct sa_auth_result r;
	int len = make_register(USER, password, issued_at, buf, sizeof buf);

	ck_assert_int_eq(sa_msg_parse(&m, buf, (size_t)len, false, &err), 0);
	sa_auth_check(&auth, &m, trunk.id, realm, NULL, now, &r);
	sa_msg_free(&m);
	return r;
}

/* An expired nonce of ours was issued to this source: a wrong password on it
 * is a failure that counts (the source receives), as on a fresh one. */
START_TEST(test_expired_nonce_of_ours_still_judges_the_password)
{
	struct sa_auth_result r = check_later("not-the-password-1", NOW, NOW + 100);
	ck_assert_int_eq(r.reason, SA_AUTH_BAD_PASSWORD);
	ck_assert(r.nonce_ours);
	ck_assert(!r.stale);
}
END_TEST

/* A nonce no live key vouches for (another node's, or from before a start)
 * could be made up by anyone: stale=true whatever the password, so it is no
 * guessing oracle (the source is not proven, so no ban would count it). */
START_TEST(test_nonce_of_a_retired_key_says_nothing_of_the_password)
{
	unsigned char s2[SA_NONCE_SECRET_LEN] = { 2 }, s3[SA_NONCE_SECRET_LEN] = { 3 };
	char buf[4096], good[4096];
	struct sa_msg m;
	struct sa_msg_error err = { 0 };
	struct sa_auth_result r;
	int lw = make_register(USER, "not-the-password-1", NOW, buf, sizeof buf);
	int lg = make_register(USER, PASS1, NOW, good, sizeof good);

	ck_assert_int_eq(sa_nonce_key_set(nc, 2, s2), 0);
	ck_assert_int_eq(sa_nonce_key_set(nc, 3, s3), 0);
	ck_assert_int_eq(sa_nonce_key_set(nc, 4, s2), 0);   /* key 1 is retired */
	for (int i = 0; i < 2; i++) {
		ck_assert_int_eq(sa_msg_parse(&m, i ? good : buf, (size_t)(i ? lg : lw), false, &err), 0);
		sa_auth_check(&auth, &m, trunk.id, realm, NULL, NOW + 1, &r);
		sa_msg_free(&m);
		ck_assert(!r.ok);
		ck_assert_int_eq(r.reason, SA_AUTH_STALE_NONCE);
		ck_assert(r.stale);
		ck_assert_int_eq(r.stale_cause, SA_STALE_UNKNOWN_KEY);
		ck_assert(!r.nonce_ours);
	}
}
END_TEST

/* Another fleet node's nonce (the same key, another instance): stale=true
 * with cause other_node, right or wrong password alike (no verdict, no
 * replay entry here); the node that issued it accepts it. */
START_TEST(test_nonce_of_another_node_is_stale_other_node)
{
	unsigned char secret[SA_NONCE_SECRET_LEN];
	struct sa_nonce_ctx *mine = nc, *other = sa_nonce_ctx_new(30, 1024);
	struct sa_auth other_auth;
	struct sa_auth_cfg cfg = { .algs = { SA_ALG_SHA256, SA_ALG_MD5 }, .nalgs = 2 };
	char buf[4096];
	struct sa_msg m;
	struct sa_msg_error err = { 0 };
	struct sa_auth_result r;

	ck_assert_ptr_nonnull(other);
	ck_assert_int_eq(sa_store_nonce_secret(st, secret), SA_STORE_OK);
	ck_assert_int_eq(sa_nonce_key_set(other, 1, secret), 0);
	ck_assert_int_eq(sa_auth_init(&other_auth, st, other, &cfg), 0);
	nc = other;   /* make_register issues with the other node's context */
	for (int i = 0; i < 2; i++) {
		int len = make_register(USER, i ? PASS1 : "not-the-password-1", NOW, buf, sizeof buf);
		ck_assert_int_eq(sa_msg_parse(&m, buf, (size_t)len, false, &err), 0);
		sa_auth_check(&auth, &m, trunk.id, realm, NULL, NOW, &r);   /* at this node */
		VERDICT(r, false, SA_AUTH_STALE_NONCE, 0);
		ck_assert(r.stale);
		ck_assert_int_eq(r.stale_cause, SA_STALE_OTHER_NODE);
		ck_assert(!r.nonce_ours);
		sa_auth_check(&other_auth, &m, trunk.id, realm, NULL, NOW, &r);   /* at the node that issued it */
		ck_assert_int_eq(r.ok, i == 1);
		ck_assert_int_eq(r.reason, i ? SA_AUTH_NONE : SA_AUTH_BAD_PASSWORD);
		sa_credential_wipe(&r.cred);
		sa_msg_free(&m);
	}
	nc = mine;
	sa_nonce_ctx_free(other);
}
END_TEST

/* What counts toward a ban: guessing, from a source that is proven (a stream,
 * or a UDP source that answered a nonce issued to its address). */
START_TEST(test_only_proven_guessing_counts_toward_a_ban)
{
	for (int reason = 0; reason < SA_AUTH_REASON_COUNT; reason++) {
		bool guess = reason != SA_AUTH_NONE && reason != SA_AUTH_STALE_NONCE &&
		             reason != SA_AUTH_SOURCE_NOT_ALLOWED && reason != SA_AUTH_TLS_REQUIRED;
		for (int ours = 0; ours < 2; ours++) {
			struct sa_auth_result r = { .reason = (enum sa_auth_reason)reason, .nonce_ours = ours };
			ck_assert_msg(sa_auth_failure_counts(&r, false) == guess, "stream, reason %d", reason);
			ck_assert_msg(sa_auth_failure_counts(&r, true) == (guess && ours), "udp, reason %d ours %d", reason,
			              ours);
		}
	}
	/* the cases a forger would try, by name */
	struct sa_auth_result forged = { .reason = SA_AUTH_BAD_PASSWORD, .nonce_ours = false };
	ck_assert(!sa_auth_failure_counts(&forged, true));
	struct sa_auth_result proven = { .reason = SA_AUTH_BAD_PASSWORD, .nonce_ours = true };
	ck_assert(sa_auth_failure_counts(&proven, true));
	struct sa_auth_result unknown = { .reason = SA_AUTH_UNKNOWN_USER };
	ck_assert(sa_auth_failure_counts(&unknown, false));
	struct sa_auth_result policy = { .reason = SA_AUTH_SOURCE_NOT_ALLOWED };
	ck_assert(!sa_auth_failure_counts(&policy, false));
}
END_TEST

/* A trunk's digest_algorithms offers only what [auth] algorithms verifies
 * (here SHA-256, MD5), in the trunk's order; nothing left: the daemon's. */
START_TEST(test_a_trunk_offers_only_what_the_daemon_verifies)
{
	struct sa_auth_cfg out;
	struct sa_auth_cfg both = { .algs = { SA_ALG_MD5, SA_ALG_SHA256 }, .nalgs = 2 };
	sa_auth_offer(&auth, &both, &out);
	ck_assert_uint_eq(out.nalgs, 2);
	ck_assert_int_eq(out.algs[0], SA_ALG_MD5);
	ck_assert_int_eq(out.algs[1], SA_ALG_SHA256);

	struct sa_auth_cfg other_first = { .algs = { SA_ALG_SHA512_256, SA_ALG_MD5 }, .nalgs = 2 };
	sa_auth_offer(&auth, &other_first, &out);
	ck_assert_uint_eq(out.nalgs, 1);
	ck_assert_int_eq(out.algs[0], SA_ALG_MD5);

	struct sa_auth_cfg other_only = { .algs = { SA_ALG_SHA512_256 }, .nalgs = 1 };
	sa_auth_offer(&auth, &other_only, &out);
	ck_assert_uint_eq(out.nalgs, 2);
	ck_assert_int_eq(out.algs[0], SA_ALG_SHA256);
	ck_assert_int_eq(out.algs[1], SA_ALG_MD5);
	sa_auth_offer(&auth, NULL, &out);
	ck_assert_uint_eq(out.nalgs, 2);
	ck_assert_int_eq(out.algs[0], SA_ALG_SHA256);

	char hdrs[2048];
	ck_assert_int_gt(sa_auth_challenge_in(&auth, &other_first, realm, NULL, false, false, NOW, hdrs, sizeof hdrs), 0);
	ck_assert_ptr_null(strstr(hdrs, "SHA-512-256"));
	ck_assert_ptr_nonnull(strstr(hdrs, "algorithm=MD5"));
	ck_assert_ptr_null(strstr(strstr(hdrs, "\r\n") + 2, "WWW-Authenticate"));   /* one challenge */
}
END_TEST

static Suite *auth_suite(void)
{
	Suite *s = suite_create("auth");
	TCase *tc = tcase_create("rotation");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_never_rotated_answers_version_1);
	tcase_add_test(tc, test_every_spelling_of_a_trunk_host_names_it);
	tcase_add_test(tc, test_overlap_takes_both_then_only_the_new);
	tcase_add_test(tc, test_rotating_again_drops_the_oldest_at_once);
	tcase_add_test(tc, test_stale_nonce_names_the_version);
	tcase_add_test(tc, test_expired_nonce_of_ours_still_judges_the_password);
	tcase_add_test(tc, test_nonce_of_a_retired_key_says_nothing_of_the_password);
	tcase_add_test(tc, test_nonce_of_another_node_is_stale_other_node);
	tcase_add_test(tc, test_a_trunk_offers_only_what_the_daemon_verifies);
	suite_add_tcase(s, tc);
	TCase *bans = tcase_create("bans");
	tcase_add_test(bans, test_only_proven_guessing_counts_toward_a_ban);
	suite_add_tcase(s, bans);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(auth_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
