/* test_store.c: the LMDB store against a real environment in a fresh temporary directory. */
#define _GNU_SOURCE
#include <ctype.h>
#include <ftw.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <check.h>
#include <stddef.h>
#include <openssl/sha.h>

#include "store.h"

#define NOW 1775731200   /* 2026-04-09T10:40:00Z */
#define PRODUCT_USER "pbx-prod-01"
#define PRODUCT_PASSWORD "secure_password_here_123"

/* fixture state: one store per test (each test runs in its own process) */
static char dir[64];
static struct sa_store *st;
static struct sa_account acc;
static struct sa_trunk trunk;

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

/* The daemon's kind of handle: with runtime/ (bindings, the failure log). */
static void open_store(void)
{
	ck_assert_int_eq(sa_store_open(&st, dir, SA_STORE_RUNTIME), SA_STORE_OK);
}

static void reopen_store(void)
{
	sa_store_close(st);
	open_store();
}

static void setup_empty(void)
{
	snprintf(dir, sizeof dir, "%s", "/tmp/test_store.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	open_store();
}

static void setup(void)
{
	setup_empty();
	ck_assert_int_eq(sa_store_init(st, NULL), SA_STORE_OK);
	ck_assert_int_eq(sa_store_account_create(st, "Acme", NOW, &acc), SA_STORE_OK);
	ck_assert_int_eq(sa_store_trunk_create(st, acc.id, "main", NOW, &trunk), SA_STORE_OK);
}

static void teardown(void)
{
	sa_store_close(st);
	st = NULL;
	nftw(dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
}

static void create_cred(const char *trunk_id, const char *user, struct sa_credential *out)
{
	char why[128] = "";
	int rc = sa_store_credential_create(st, trunk_id, user, PRODUCT_PASSWORD, strlen(PRODUCT_PASSWORD),
	                                    0, NOW, out, why, sizeof why);
	ck_assert_msg(rc == SA_STORE_OK, "create %s: %d %s", user, rc, why);
}

static bool id_looks_like(const char *id, const char *prefix)
{
	size_t p = strlen(prefix);

	if (strncmp(id, prefix, p) != 0 || strlen(id) != p + 16)
		return false;
	return strspn(id + p, "abcdefghijklmnopqrstuvwxyz0123456789") == 16;
}

/* ---- collectors for the list callbacks ---- */

struct names {
	char v[16][SA_CONTACT_MAX];
	int n;
	int stop_after;   /* 0: never stop */
};

static int collect(struct names *c, const char *s)
{
	if (c->n < 16)
		snprintf(c->v[c->n], sizeof c->v[0], "%s", s);
	c->n++;
	return c->stop_after != 0 && c->n >= c->stop_after;
}

static int cred_cb(const struct sa_credential *cr, void *arg) { return collect(arg, cr->username); }
static int trunk_cb(const struct sa_trunk *t, void *arg) { return collect(arg, t->id); }
static int binding_cb(const struct sa_binding *b, void *arg) { return collect(arg, b->contact); }
static int authfail_cb(const struct sa_authfail *f, void *arg) { return collect(arg, f->username); }
/* Keep the (one) record seen. */
static int version_binding_cb(const struct sa_binding *b, void *arg) { *(struct sa_binding *)arg = *b; return 0; }
static int version_fail_cb(const struct sa_authfail *f, void *arg) { *(struct sa_authfail *)arg = *f; return 0; }

/* ---- open, init, schema ---- */

START_TEST(test_uninitialised_store_answers_enotinit)
{
	struct sa_credential cr;
	struct sa_account a;
	uint64_t gen;

	ck_assert_int_eq(sa_store_account_create(st, "x", NOW, &a), SA_STORE_ENOTINIT);
	ck_assert_int_eq(sa_store_credential_find(st, "trunk_x", "u", &cr), SA_STORE_ENOTINIT);
	ck_assert_int_eq(sa_store_generation(st, &gen), SA_STORE_ENOTINIT);
}
END_TEST

START_TEST(test_rdonly_open_of_missing_store_is_enotinit)
{
	struct sa_store *ro = NULL;
	char missing[96];

	snprintf(missing, sizeof missing, "%s/nothing", dir);
	ck_assert_int_eq(sa_store_open(&ro, missing, SA_STORE_RDONLY), SA_STORE_ENOTINIT);
	ck_assert_ptr_null(ro);
}
END_TEST

START_TEST(test_init_records_domain_once)
{
	char domain[SA_DOMAIN_MAX + 1];

	ck_assert_int_eq(sa_store_init(st, "Sip.Example.COM"), SA_STORE_OK);
	ck_assert_int_eq(sa_store_domain(st, domain, sizeof domain), SA_STORE_OK);
	ck_assert_str_eq(domain, "sip.example.com");
	ck_assert_int_eq(sa_store_init(st, NULL), SA_STORE_EEXISTS);
	reopen_store();
	ck_assert_int_eq(sa_store_domain(st, domain, sizeof domain), SA_STORE_OK);
	ck_assert_str_eq(domain, "sip.example.com");
}
END_TEST

START_TEST(test_init_default_domain)
{
	char domain[SA_DOMAIN_MAX + 1];

	ck_assert_int_eq(sa_store_init(st, NULL), SA_STORE_OK);
	ck_assert_int_eq(sa_store_domain(st, domain, sizeof domain), SA_STORE_OK);
	ck_assert_str_eq(domain, SA_DEFAULT_DOMAIN);
}
END_TEST

START_TEST(test_init_refuses_bad_domains)
{
	static const char *bad[] = { "", "a..b", ".a.b", "a.b.", "-a.com", "a-.com", "a_b.com", "a b.com", "a/b" };
	char longd[300];

	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		ck_assert_msg(sa_store_init(st, bad[i]) == SA_STORE_EINVAL, "domain '%s' accepted", bad[i]);
	memset(longd, 'a', sizeof longd - 1);
	longd[sizeof longd - 1] = '\0';
	ck_assert_int_eq(sa_store_init(st, longd), SA_STORE_EINVAL);
	ck_assert_int_eq(sa_store_init(st, "x"), SA_STORE_OK);
}
END_TEST

/* Rewrites meta schema_version behind the store's back. */
static void set_schema_version(const char *version)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val k = { strlen("schema_version"), (void *)"schema_version" };
	MDB_val v = { strlen(version), (void *)version };

	ck_assert_int_eq(mdb_env_create(&env), 0);
	ck_assert_int_eq(mdb_env_set_maxdbs(env, 32), 0);
	ck_assert_int_eq(mdb_env_open(env, dir, 0, 0600), 0);
	ck_assert_int_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
	ck_assert_int_eq(mdb_dbi_open(txn, "meta", 0, &dbi), 0);
	ck_assert_int_eq(mdb_put(txn, dbi, &k, &v, 0), 0);
	ck_assert_int_eq(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
}

START_TEST(test_schema_mismatch_refused)
{
	struct sa_store *other = NULL;

	ck_assert_int_eq(sa_store_init(st, NULL), SA_STORE_OK);
	sa_store_close(st);
	st = NULL;
	set_schema_version("99");
	ck_assert_int_eq(sa_store_open(&other, dir, 0), SA_STORE_ESCHEMA);
	ck_assert_int_eq(sa_store_open(&other, dir, SA_STORE_RDONLY), SA_STORE_ESCHEMA);
	ck_assert_ptr_null(other);
	set_schema_version("1");
	open_store();
}
END_TEST

START_TEST(test_realm_is_literal_trunk_id)
{
	char realm[SA_REALM_MAX], tiny[8];

	ck_assert_int_eq(sa_store_realm("trunk_4x5y6z", "sip.tryvox.io", realm, sizeof realm), SA_STORE_OK);
	ck_assert_str_eq(realm, "trunk-trunk_4x5y6z.sip.tryvox.io");
	ck_assert_int_eq(sa_store_realm("trunk_4x5y6z", "sip.tryvox.io", tiny, sizeof tiny), SA_STORE_EINVAL);
}
END_TEST

START_TEST(test_nonce_secret_created_once_and_kept)
{
	unsigned char a[32], b[32], zero[32] = { 0 };

	ck_assert_int_eq(sa_store_nonce_secret(st, a), SA_STORE_OK);
	ck_assert_mem_ne(a, zero, sizeof a);
	reopen_store();
	ck_assert_int_eq(sa_store_nonce_secret(st, b), SA_STORE_OK);
	ck_assert_mem_eq(a, b, sizeof a);
}
END_TEST

/* ---- accounts, keys, trunks ---- */

START_TEST(test_account_create_and_get)
{
	struct sa_account a, got;

	ck_assert(id_looks_like(acc.id, "acc_"));
	ck_assert_int_eq(sa_store_account_get(st, acc.id, &got), SA_STORE_OK);
	ck_assert_str_eq(got.name, "Acme");
	ck_assert_int_eq(got.created_at, NOW);
	ck_assert_int_eq(sa_store_account_get(st, "acc_0000000000000000", &got), SA_STORE_ENOTFOUND);
	ck_assert_int_eq(sa_store_account_create(st, "Müller GmbH", NOW, &a), SA_STORE_OK);
	ck_assert_str_ne(a.id, acc.id);
}
END_TEST

START_TEST(test_account_name_rules)
{
	struct sa_account a;
	char longname[SA_NAME_MAX + 2];

	ck_assert_int_eq(sa_store_account_create(st, "", NOW, &a), SA_STORE_EINVAL);
	ck_assert_int_eq(sa_store_account_create(st, "tab\there", NOW, &a), SA_STORE_EINVAL);
	ck_assert_int_eq(sa_store_account_create(st, "bad \xc3\x28", NOW, &a), SA_STORE_EINVAL);
	ck_assert_int_eq(sa_store_account_create(st, "overlong \xc0\xaf", NOW, &a), SA_STORE_EINVAL);
	memset(longname, 'n', sizeof longname - 1);
	longname[sizeof longname - 1] = '\0';
	ck_assert_int_eq(sa_store_account_create(st, longname, NOW, &a), SA_STORE_EINVAL);
	longname[SA_NAME_MAX] = '\0';
	ck_assert_int_eq(sa_store_account_create(st, longname, NOW, &a), SA_STORE_OK);
}
END_TEST

START_TEST(test_apikey_create_and_lookup)
{
	char key[SA_APIKEY_LEN + 1], key2[SA_APIKEY_LEN + 1], found[SA_ID_MAX];

	ck_assert_int_eq(sa_store_apikey_create(st, acc.id, NOW, key), SA_STORE_OK);
	ck_assert_uint_eq(strlen(key), SA_APIKEY_LEN);
	ck_assert_int_eq(strncmp(key, "tvx_sk_live_", 12), 0);
	ck_assert_uint_eq(strspn(key + 12, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"), 32);
	ck_assert_int_eq(sa_store_apikey_account(st, key, strlen(key), found), SA_STORE_OK);
	ck_assert_str_eq(found, acc.id);
	ck_assert_int_eq(sa_store_apikey_create(st, acc.id, NOW, key2), SA_STORE_OK);
	ck_assert_str_ne(key, key2);
	ck_assert_int_eq(sa_store_apikey_account(st, key2, strlen(key2), found), SA_STORE_OK);
	ck_assert_str_eq(found, acc.id);
}
END_TEST

START_TEST(test_apikey_unknown_and_malformed)
{
	char key[SA_APIKEY_LEN + 1], found[SA_ID_MAX];

	ck_assert_int_eq(sa_store_apikey_create(st, "acc_nope", NOW, key), SA_STORE_ENOTFOUND);
	ck_assert_int_eq(sa_store_apikey_create(st, acc.id, NOW, key), SA_STORE_OK);
	key[SA_APIKEY_LEN - 1] ^= 1;
	ck_assert_int_eq(sa_store_apikey_account(st, key, strlen(key), found), SA_STORE_ENOTFOUND);
	ck_assert_int_eq(sa_store_apikey_account(st, key, 10, found), SA_STORE_ENOTFOUND);
	ck_assert_int_eq(sa_store_apikey_account(st, "", 0, found), SA_STORE_ENOTFOUND);
}
END_TEST

static int collect_key_ids(const struct sa_apikey_info *k, void *arg)
{
	char *out = arg;
	strcat(out, k->id);
	strcat(out, " ");
	return 0;
}

/* A leaked key is revoked by its id (its SHA-256's first 16 hex digits): it
 * authenticates nothing after, the account's other keys go on, and another
 * account cannot revoke it. */
START_TEST(test_apikey_listed_and_revoked_by_id)
{
	char key[SA_APIKEY_LEN + 1], key2[SA_APIKEY_LEN + 1], found[SA_ID_MAX], id[SA_APIKEY_ID_LEN + 1];
	char listed[256] = "";
	unsigned char hash[SA_APIKEY_HASH_LEN];
	struct sa_account other;

	ck_assert_int_eq(sa_store_apikey_create(st, acc.id, NOW, key), SA_STORE_OK);
	ck_assert_int_eq(sa_store_apikey_create(st, acc.id, NOW, key2), SA_STORE_OK);
	ck_assert_int_eq(sa_store_account_create(st, "other", NOW, &other), SA_STORE_OK);
	SHA256((const unsigned char *)key, strlen(key), hash);
	sa_store_apikey_id(hash, id);
	ck_assert_uint_eq(strlen(id), SA_APIKEY_ID_LEN);
	ck_assert_int_eq(strncmp(id, "key_", 4), 0);
	ck_assert_int_eq(sa_store_apikey_list(st, acc.id, collect_key_ids, listed), SA_STORE_OK);
	ck_assert_ptr_nonnull(strstr(listed, id));
	ck_assert_uint_eq(strlen(listed), 2 * (SA_APIKEY_ID_LEN + 1));
	ck_assert_ptr_null(strstr(listed, "tvx_sk_live_"));
	ck_assert_int_eq(sa_store_apikey_revoke(st, other.id, id), SA_STORE_ENOTFOUND);   /* not its key */
	ck_assert_int_eq(sa_store_apikey_revoke(st, acc.id, id), SA_STORE_OK);
	ck_assert_int_eq(sa_store_apikey_account(st, key, strlen(key), found), SA_STORE_ENOTFOUND);
	ck_assert_int_eq(sa_store_apikey_account(st, key2, strlen(key2), found), SA_STORE_OK);
	ck_assert_int_eq(sa_store_apikey_revoke(st, acc.id, id), SA_STORE_ENOTFOUND);
	ck_assert_int_eq(sa_store_apikey_revoke(st, "acc_nope", id), SA_STORE_ENOTFOUND);
	listed[0] = '\0';
	ck_assert_int_eq(sa_store_apikey_list(st, acc.id, collect_key_ids, listed), SA_STORE_OK);
	ck_assert_uint_eq(strlen(listed), SA_APIKEY_ID_LEN + 1);
	ck_assert_int_eq(sa_store_apikey_list(st, "acc_nope", collect_key_ids, listed), SA_STORE_ENOTFOUND);
}
END_TEST

START_TEST(test_trunk_create_get_list_in_order)
{
	struct sa_trunk t2, t3, got, other;
	struct sa_account acc2;
	struct names n = { .n = 0 };

	ck_assert(id_looks_like(trunk.id, "trunk_"));
	ck_assert_int_eq(sa_store_trunk_create(st, acc.id, NULL, NOW + 1, &t2), SA_STORE_OK);
	ck_assert_int_eq(sa_store_trunk_create(st, acc.id, "third", NOW + 2, &t3), SA_STORE_OK);
	ck_assert_int_eq(sa_store_account_create(st, "Other", NOW, &acc2), SA_STORE_OK);
	ck_assert_int_eq(sa_store_trunk_create(st, acc2.id, "theirs", NOW, &other), SA_STORE_OK);
	ck_assert_int_eq(sa_store_trunk_get(st, t2.id, &got), SA_STORE_OK);
	ck_assert_str_eq(got.name, "");
	ck_assert_str_eq(got.account_id, acc.id);
	ck_assert_int_eq(sa_store_trunk_list(st, acc.id, trunk_cb, &n), SA_STORE_OK);
	ck_assert_int_eq(n.n, 3);
	ck_assert_str_eq(n.v[0], trunk.id);
	ck_assert_str_eq(n.v[1], t2.id);
	ck_assert_str_eq(n.v[2], t3.id);
}
END_TEST

START_TEST(test_trunk_unknown_account)
{
	struct sa_trunk t;
	struct names n = { .n = 0 };

	ck_assert_int_eq(sa_store_trunk_create(st, "acc_nope", NULL, NOW, &t), SA_STORE_ENOTFOUND);
	ck_assert_int_eq(sa_store_trunk_list(st, "acc_nope", trunk_cb, &n), SA_STORE_ENOTFOUND);
	ck_assert_int_eq(sa_store_trunk_get(st, "trunk_nope", &t), SA_STORE_ENOTFOUND);
	ck_assert_int_eq(sa_store_trunk_get(st, "", &t), SA_STORE_ENOTFOUND);
}
END_TEST

/* ---- credentials ---- */

START_TEST(test_credential_product_example_and_ha1)
{
	struct sa_credential cr;
	char realm[SA_REALM_MAX], ha1[SA_DIGEST_HEX_MAX];

	create_cred(trunk.id, PRODUCT_USER, &cr);
	ck_assert(id_looks_like(cr.id, "cred_"));
	ck_assert_str_eq(cr.trunk_id, trunk.id);
	ck_assert_str_eq(cr.username, PRODUCT_USER);
	ck_assert_int_eq(cr.created_at, NOW);
	ck_assert_int_eq(sa_store_realm(trunk.id, SA_DEFAULT_DOMAIN, realm, sizeof realm), SA_STORE_OK);
	for (int alg = 0; alg < SA_ALG_COUNT; alg++) {
		ck_assert_int_eq(sa_digest_ha1((enum sa_digest_alg)alg, PRODUCT_USER, realm, PRODUCT_PASSWORD, ha1), 0);
		ck_assert_str_eq(cr.ha1[alg], ha1);
	}
}
END_TEST

START_TEST(test_credential_ha1_uses_store_domain)
{
	struct sa_credential cr, found;
	char realm[SA_REALM_MAX], ha1[SA_DIGEST_HEX_MAX];
	struct sa_account a;
	struct sa_trunk t;

	teardown();
	setup_empty();
	ck_assert_int_eq(sa_store_init(st, "voice.example.net"), SA_STORE_OK);
	ck_assert_int_eq(sa_store_account_create(st, "A", NOW, &a), SA_STORE_OK);
	ck_assert_int_eq(sa_store_trunk_create(st, a.id, NULL, NOW, &t), SA_STORE_OK);
	create_cred(t.id, PRODUCT_USER, &cr);
	ck_assert_int_eq(sa_store_credential_find(st, t.id, PRODUCT_USER, &found), SA_STORE_OK);
	ck_assert_int_eq(sa_store_realm(t.id, "voice.example.net", realm, sizeof realm), SA_STORE_OK);
	ck_assert_int_eq(sa_digest_ha1(SA_ALG_SHA256, PRODUCT_USER, realm, PRODUCT_PASSWORD, ha1), 0);
	ck_assert_str_eq(found.ha1[SA_ALG_SHA256], ha1);
}
END_TEST

START_TEST(test_credential_duplicate_username_ignoring_case)
{
	struct sa_credential cr;
	struct sa_trunk t2;
	char why[128] = "";

	create_cred(trunk.id, PRODUCT_USER, &cr);
	ck_assert_int_eq(sa_store_credential_create(st, trunk.id, "PBX-Prod-01", "another_password_456", 20, 0,
	                                            NOW, &cr, why, sizeof why), SA_STORE_EEXISTS);
	ck_assert_str_eq(why, "username already exists on this trunk");
	ck_assert_int_eq(sa_store_trunk_create(st, acc.id, NULL, NOW, &t2), SA_STORE_OK);
	create_cred(t2.id, PRODUCT_USER, &cr);
}
END_TEST

START_TEST(test_credential_unknown_trunk)
{
	struct sa_credential cr;
	char why[128] = "";

	ck_assert_int_eq(sa_store_credential_create(st, "trunk_nope", PRODUCT_USER, PRODUCT_PASSWORD,
	                                            strlen(PRODUCT_PASSWORD), 0, NOW, &cr, why, sizeof why),
	                 SA_STORE_ENOTFOUND);
	ck_assert_str_eq(why, "unknown trunk");
}
END_TEST

static const struct {
	const char *username, *password;
	unsigned min_len;
	const char *why;   /* NULL: valid */
} rules[] = {
	{ "pbx-prod-01", "secure_password_here_123", 0, NULL },
	{ "A.b_c-9", "0123456789ab", 12, NULL },
	{ "", "secure_password_here_123", 0, "username must not be empty" },
	{ "pbx prod", "secure_password_here_123", 0, "username may contain only letters, digits, '.', '_' and '-'" },
	{ "pbx@prod", "secure_password_here_123", 0, "username may contain only letters, digits, '.', '_' and '-'" },
	{ "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "secure_password_here_123", 0,
	  "username must be at most 64 characters" },
	{ "pbx", "short", 0, "password must be at least 12 characters" },
	{ "pbx", "elevenchars", 0, "password must be at least 12 characters" },
	{ "pbx", "elevenchars", 4, "password must be at least 12 characters" },
	{ "pbx", "fifteen_chars_x", 16, "password must be at least 16 characters" },
	{ "pbx", "tab\there_password", 0, "password must contain only printable ASCII characters" },
	{ "pbx", "caf\xc3\xa9_password_x", 0, "password must contain only printable ASCII characters" },
	{ "pbx-prod-01", "my-PBX-PROD-01-password", 0, "password must not contain the username" },
};

START_TEST(test_credential_validation_rules)
{
	const char *pw = rules[_i].password;
	char why[128] = "";
	int rc = sa_credential_validate(rules[_i].username, pw, strlen(pw), rules[_i].min_len, why, sizeof why);

	if (rules[_i].why == NULL) {
		ck_assert_msg(rc == SA_STORE_OK, "rule %d refused: %s", _i, why);
	} else {
		ck_assert_int_eq(rc, SA_STORE_EINVAL);
		ck_assert_str_eq(why, rules[_i].why);
	}
}
END_TEST

START_TEST(test_password_length_limits)
{
	char pw[SA_PASSWORD_MAX + 2], why[128] = "";

	memset(pw, 'x', sizeof pw);
	ck_assert_int_eq(sa_credential_validate("u1", pw, SA_PASSWORD_MAX, 0, why, sizeof why), SA_STORE_OK);
	ck_assert_int_eq(sa_credential_validate("u1", pw, SA_PASSWORD_MAX + 1, 0, why, sizeof why), SA_STORE_EINVAL);
	ck_assert_str_eq(why, "password must be at most 128 characters");
	pw[5] = '\0';   /* an embedded NUL is not printable */
	ck_assert_int_eq(sa_credential_validate("u1", pw, 20, 0, why, sizeof why), SA_STORE_EINVAL);
	ck_assert_str_eq(why, "password must contain only printable ASCII characters");
	ck_assert_int_eq(sa_credential_validate("u1", NULL, 0, 0, NULL, 0), SA_STORE_EINVAL);
}
END_TEST

START_TEST(test_credential_create_reports_validation)
{
	struct sa_credential cr;
	struct names n = { .n = 0 };
	char why[128] = "";

	ck_assert_int_eq(sa_store_credential_create(st, trunk.id, PRODUCT_USER, "short", 5, 0, NOW, &cr,
	                                            why, sizeof why), SA_STORE_EINVAL);
	ck_assert_str_eq(why, "password must be at least 12 characters");
	ck_assert_int_eq(sa_store_credential_list(st, trunk.id, cred_cb, &n), SA_STORE_OK);
	ck_assert_int_eq(n.n, 0);
}
END_TEST

START_TEST(test_credential_find_get_case_insensitive)
{
	struct sa_credential cr, found;

	create_cred(trunk.id, PRODUCT_USER, &cr);
	ck_assert_int_eq(sa_store_credential_find(st, trunk.id, "PBX-PROD-01", &found), SA_STORE_OK);
	ck_assert_str_eq(found.id, cr.id);
	ck_assert_str_eq(found.username, PRODUCT_USER);
	ck_assert_str_eq(found.ha1[SA_ALG_MD5], cr.ha1[SA_ALG_MD5]);
	ck_assert_int_eq(sa_store_credential_get(st, cr.id, &found), SA_STORE_OK);
	ck_assert_str_eq(found.username, PRODUCT_USER);
	ck_assert_int_eq(sa_store_credential_find(st, trunk.id, "pbx-prod-02", &found), SA_STORE_ENOTFOUND);
	ck_assert_int_eq(sa_store_credential_find(st, "trunk_other", PRODUCT_USER, &found), SA_STORE_ENOTFOUND);
	ck_assert_int_eq(sa_store_credential_find(st, trunk.id, "", &found), SA_STORE_ENOTFOUND);
	ck_assert_int_eq(sa_store_credential_get(st, "cred_nope", &found), SA_STORE_ENOTFOUND);
	/* the shared read transaction is reusable after a miss */
	ck_assert_int_eq(sa_store_credential_find(st, trunk.id, PRODUCT_USER, &found), SA_STORE_OK);
}
END_TEST

START_TEST(test_credential_list_creation_order)
{
	static const char *users[] = { "zulu", "alpha", "mike", "Bravo", "yankee" };
	struct sa_credential cr;
	struct names n = { .n = 0 }, first = { .n = 0, .stop_after = 2 };

	for (int i = 0; i < 5; i++)
		create_cred(trunk.id, users[i], &cr);
	ck_assert_int_eq(sa_store_credential_list(st, trunk.id, cred_cb, &n), SA_STORE_OK);
	ck_assert_int_eq(n.n, 5);
	for (int i = 0; i < 5; i++)
		ck_assert_str_eq(n.v[i], users[i]);
	ck_assert_int_eq(sa_store_credential_list(st, trunk.id, cred_cb, &first), SA_STORE_OK);
	ck_assert_int_eq(first.n, 2);
	ck_assert_int_eq(sa_store_credential_list(st, "trunk_nope", cred_cb, &n), SA_STORE_ENOTFOUND);
}
END_TEST

static struct sa_binding binding(const char *cred_id, const char *contact, int64_t at, int64_t expires)
{
	struct sa_binding b;

	memset(&b, 0, sizeof b);
	snprintf(b.cred_id, sizeof b.cred_id, "%s", cred_id);
	snprintf(b.contact, sizeof b.contact, "%s", contact);
	snprintf(b.source, sizeof b.source, "192.0.2.10");
	b.source_port = 5060;
	snprintf(b.transport, sizeof b.transport, "udp");
	snprintf(b.call_id, sizeof b.call_id, "call-1");
	b.cseq = 1;
	b.registered_at = at;
	b.updated_at = at;
	b.expires_at = expires;
	return b;
}

START_TEST(test_credential_delete_removes_it_and_bindings)
{
	struct sa_credential cr, keep, found;
	struct sa_trunk t2;
	struct names n = { .n = 0 };
	struct sa_binding b = { .cred_id = "" };

	create_cred(trunk.id, PRODUCT_USER, &cr);
	create_cred(trunk.id, "other", &keep);
	b = binding(cr.id, "sip:a@192.0.2.10", NOW, NOW + 3600);
	ck_assert_int_eq(sa_store_binding_put(st, &b, 0), SA_STORE_OK);
	ck_assert_int_eq(sa_store_trunk_create(st, acc.id, NULL, NOW, &t2), SA_STORE_OK);
	ck_assert_int_eq(sa_store_credential_delete(st, t2.id, cr.id), SA_STORE_ENOTFOUND);
	ck_assert_int_eq(sa_store_credential_delete(st, trunk.id, cr.id), SA_STORE_OK);
	ck_assert_int_eq(sa_store_credential_delete(st, trunk.id, cr.id), SA_STORE_ENOTFOUND);
	ck_assert_int_eq(sa_store_credential_find(st, trunk.id, PRODUCT_USER, &found), SA_STORE_ENOTFOUND);
	ck_assert_int_eq(sa_store_credential_get(st, cr.id, &found), SA_STORE_ENOTFOUND);
	ck_assert_int_eq(sa_store_binding_list_credential(st, cr.id, binding_cb, &n), SA_STORE_OK);
	ck_assert_int_eq(sa_store_binding_list_trunk(st, trunk.id, binding_cb, &n), SA_STORE_OK);
	ck_assert_int_eq(n.n, 0);
	ck_assert_int_eq(sa_store_credential_list(st, trunk.id, cred_cb, &n), SA_STORE_OK);
	ck_assert_int_eq(n.n, 1);
	ck_assert_str_eq(n.v[0], "other");
	create_cred(trunk.id, PRODUCT_USER, &cr);   /* the username is free again */
}
END_TEST

/* ---- bindings ---- */

START_TEST(test_binding_put_refresh_list)
{
	struct sa_credential cr;
	struct sa_binding b;
	struct names n = { .n = 0 };

	create_cred(trunk.id, PRODUCT_USER, &cr);
	b = binding(cr.id, "sip:pbx@192.0.2.10:5060", NOW, NOW + 60);
	ck_assert_int_eq(sa_store_binding_put(st, &b, 0), SA_STORE_OK);
	b = binding(cr.id, "sip:pbx@192.0.2.10:5060", NOW + 30, NOW + 90);
	b.cseq = 2;
	ck_assert_int_eq(sa_store_binding_put(st, &b, 0), SA_STORE_OK);
	ck_assert_int_eq(sa_store_binding_list_credential(st, cr.id, binding_cb, &n), SA_STORE_OK);
	ck_assert_int_eq(n.n, 1);
	uint64_t count = 99;
	ck_assert_int_eq(sa_store_binding_count(st, NOW, &count), SA_STORE_OK);
	ck_assert_uint_eq(count, 1);
	/* the refresh moved the expiry: nothing expires at the first one */
	ck_assert_int_eq(sa_store_binding_expire(st, NOW + 60), 0);
	ck_assert_int_eq(sa_store_binding_expire(st, NOW + 90), 1);
	ck_assert_int_eq(sa_store_binding_count(st, NOW, &count), SA_STORE_OK);
	ck_assert_uint_eq(count, 0);
	n.n = 0;
	ck_assert_int_eq(sa_store_binding_list_trunk(st, trunk.id, binding_cb, &n), SA_STORE_OK);
	ck_assert_int_eq(n.n, 0);
}
END_TEST

static int binding_check_cb(const struct sa_binding *b, void *arg)
{
	*(struct sa_binding *)arg = *b;
	return 0;
}

/* The registrar's path: the credential it authenticated with is not read
 * again; refreshes move only the index entries whose key changed. */
START_TEST(test_binding_apply_for_and_list_for)
{
	struct sa_credential cr, bad;
	struct sa_binding b, got;
	struct names n = { .n = 0 };

	create_cred(trunk.id, PRODUCT_USER, &cr);
	b = binding(cr.id, "sip:pbx@192.0.2.10", NOW, NOW + 60);
	struct sa_binding_change ch = { .contact = b.contact, .b = &b };
	ck_assert_int_eq(sa_store_binding_apply_for(st, &cr, &ch, 1, 0), SA_STORE_OK);
	b.updated_at = NOW + 10;   /* a refresh with the same expiry: no index moves */
	ck_assert_int_eq(sa_store_binding_apply_for(st, &cr, &ch, 1, 0), SA_STORE_OK);
	b.updated_at = NOW + 20;
	b.expires_at = NOW + 80;
	ck_assert_int_eq(sa_store_binding_apply_for(st, &cr, &ch, 1, 0), SA_STORE_OK);
	ck_assert_int_eq(sa_store_binding_list_for(st, &cr, binding_check_cb, &got), SA_STORE_OK);
	ck_assert_int_eq(got.registered_at, NOW);
	ck_assert_int_eq(got.updated_at, NOW + 20);
	ck_assert_int_eq(got.expires_at, NOW + 80);
	ck_assert_int_eq(sa_store_binding_list_trunk(st, trunk.id, binding_cb, &n), SA_STORE_OK);
	ck_assert_int_eq(n.n, 1);   /* one trunk index entry after three writes */
	ck_assert_int_eq(sa_store_binding_expire(st, NOW + 60), 0);
	ck_assert_int_eq(sa_store_binding_expire(st, NOW + 80), 1);
	n.n = 0;
	ck_assert_int_eq(sa_store_binding_list_for(st, &cr, binding_cb, &n), SA_STORE_OK);
	ck_assert_int_eq(n.n, 0);
	ck_assert_int_eq(sa_store_binding_list_trunk(st, trunk.id, binding_cb, &n), SA_STORE_OK);
	ck_assert_int_eq(n.n, 0);
	bad = cr;
	bad.id[0] = '\0';
	ck_assert_int_eq(sa_store_binding_apply_for(st, &bad, &ch, 1, 0), SA_STORE_EINVAL);
	ch.contact = "";
	b.contact[0] = '\0';
	ck_assert_int_eq(sa_store_binding_apply_for(st, &cr, &ch, 1, 0), SA_STORE_EINVAL);
}
END_TEST

START_TEST(test_binding_refresh_keeps_registered_at)
{
	struct sa_credential cr;
	struct sa_binding b, got;

	create_cred(trunk.id, PRODUCT_USER, &cr);
	b = binding(cr.id, "sip:pbx@192.0.2.10", NOW, NOW + 60);
	ck_assert_int_eq(sa_store_binding_put(st, &b, 0), SA_STORE_OK);
	b = binding(cr.id, "sip:pbx@192.0.2.10", NOW + 30, NOW + 90);
	b.registered_at = NOW + 30;
	b.cseq = 7;
	ck_assert_int_eq(sa_store_binding_put(st, &b, 0), SA_STORE_OK);
	ck_assert_int_eq(sa_store_binding_list_trunk(st, trunk.id, binding_check_cb, &got), SA_STORE_OK);
	ck_assert_int_eq(got.registered_at, NOW);
	ck_assert_int_eq(got.updated_at, NOW + 30);
	ck_assert_int_eq(got.expires_at, NOW + 90);
	ck_assert_uint_eq(got.cseq, 7);
	ck_assert_str_eq(got.trunk_id, trunk.id);
	ck_assert_str_eq(got.source, "192.0.2.10");
}
END_TEST

START_TEST(test_binding_max_contacts)
{
	struct sa_credential cr;
	struct sa_binding b;

	create_cred(trunk.id, PRODUCT_USER, &cr);
	b = binding(cr.id, "sip:one@192.0.2.10", NOW, NOW + 60);
	ck_assert_int_eq(sa_store_binding_put(st, &b, 2), SA_STORE_OK);
	b = binding(cr.id, "sip:two@192.0.2.10", NOW, NOW + 60);
	ck_assert_int_eq(sa_store_binding_put(st, &b, 2), SA_STORE_OK);
	b = binding(cr.id, "sip:three@192.0.2.10", NOW, NOW + 60);
	ck_assert_int_eq(sa_store_binding_put(st, &b, 2), SA_STORE_EFULL);
	b = binding(cr.id, "sip:two@192.0.2.10", NOW + 10, NOW + 70);
	ck_assert_int_eq(sa_store_binding_put(st, &b, 2), SA_STORE_OK);   /* refresh at the limit */
	b = binding(cr.id, "sip:three@192.0.2.10", NOW, NOW + 60);
	ck_assert_int_eq(sa_store_binding_put(st, &b, 0), SA_STORE_OK);   /* 0: unlimited */
}
END_TEST

START_TEST(test_binding_lists_delete_expire)
{
	struct sa_credential c1, c2;
	struct sa_binding b;
	struct names n = { .n = 0 };
	char longc[SA_CONTACT_MAX];

	create_cred(trunk.id, "one", &c1);
	create_cred(trunk.id, "two", &c2);
	memset(longc, 'c', sizeof longc - 1);
	memcpy(longc, "sip:", 4);
	longc[sizeof longc - 1] = '\0';
	b = binding(c1.id, longc, NOW, NOW + 10);
	ck_assert_int_eq(sa_store_binding_put(st, &b, 0), SA_STORE_OK);   /* longer than an LMDB key */
	b = binding(c1.id, "sip:b@192.0.2.11", NOW, NOW + 20);
	ck_assert_int_eq(sa_store_binding_put(st, &b, 0), SA_STORE_OK);
	b = binding(c2.id, "sip:c@192.0.2.12", NOW, NOW + 30);
	ck_assert_int_eq(sa_store_binding_put(st, &b, 0), SA_STORE_OK);
	ck_assert_int_eq(sa_store_binding_list_credential(st, c1.id, binding_cb, &n), SA_STORE_OK);
	ck_assert_int_eq(n.n, 2);
	n.n = 0;
	ck_assert_int_eq(sa_store_binding_list_trunk(st, trunk.id, binding_cb, &n), SA_STORE_OK);
	ck_assert_int_eq(n.n, 3);
	ck_assert_int_eq(sa_store_binding_delete(st, c1.id, "sip:b@192.0.2.11"), SA_STORE_OK);
	ck_assert_int_eq(sa_store_binding_delete(st, c1.id, "sip:b@192.0.2.11"), SA_STORE_ENOTFOUND);
	ck_assert_int_eq(sa_store_binding_expire(st, NOW + 9), 0);
	ck_assert_int_eq(sa_store_binding_expire(st, NOW + 10), 1);
	ck_assert_int_eq(sa_store_binding_delete_all(st, c2.id), SA_STORE_OK);
	n.n = 0;
	ck_assert_int_eq(sa_store_binding_list_trunk(st, trunk.id, binding_cb, &n), SA_STORE_OK);
	ck_assert_int_eq(n.n, 0);
	ck_assert_int_eq(sa_store_binding_expire(st, NOW + 1000), 0);
}
END_TEST

START_TEST(test_binding_needs_existing_credential)
{
	struct sa_binding b = binding("cred_nope", "sip:x@192.0.2.1", NOW, NOW + 60);

	ck_assert_int_eq(sa_store_binding_put(st, &b, 0), SA_STORE_ENOTFOUND);
	b.contact[0] = '\0';
	ck_assert_int_eq(sa_store_binding_put(st, &b, 0), SA_STORE_EINVAL);
	ck_assert_int_eq(sa_store_flush(st), SA_STORE_OK);
}
END_TEST

/* ---- auth failures ---- */

static struct sa_authfail failure(const char *trunk_id, int64_t at, const char *user)
{
	struct sa_authfail f;

	memset(&f, 0, sizeof f);
	f.at = at;
	snprintf(f.trunk_id, sizeof f.trunk_id, "%s", trunk_id);
	snprintf(f.source, sizeof f.source, "198.51.100.7");
	f.source_port = 5062;
	snprintf(f.transport, sizeof f.transport, "udp");
	snprintf(f.username, sizeof f.username, "%s", user);
	snprintf(f.reason, sizeof f.reason, "bad_password");
	snprintf(f.method, sizeof f.method, "REGISTER");
	return f;
}

START_TEST(test_authfail_bounded_newest_first)
{
	struct names n = { .n = 0 };
	struct sa_trunk t2;
	char user[16];

	ck_assert_int_eq(sa_store_trunk_create(st, acc.id, NULL, NOW, &t2), SA_STORE_OK);
	for (int i = 0; i < 10; i++) {
		snprintf(user, sizeof user, "u%d", i);
		struct sa_authfail f = failure(trunk.id, NOW + i, user);
		ck_assert_int_eq(sa_store_authfail_add(st, &f, 5), SA_STORE_OK);
	}
	struct sa_authfail f = failure(t2.id, NOW, "elsewhere");
	ck_assert_int_eq(sa_store_authfail_add(st, &f, 5), SA_STORE_OK);
	ck_assert_int_eq(sa_store_authfail_list(st, trunk.id, 0, 0, authfail_cb, &n), SA_STORE_OK);
	ck_assert_int_eq(n.n, 5);
	for (int i = 0; i < 5; i++) {
		snprintf(user, sizeof user, "u%d", 9 - i);
		ck_assert_str_eq(n.v[i], user);
	}
	n.n = 0;
	ck_assert_int_eq(sa_store_authfail_list(st, trunk.id, NOW + 8, 0, authfail_cb, &n), SA_STORE_OK);
	ck_assert_int_eq(n.n, 2);
	n.n = 0;
	ck_assert_int_eq(sa_store_authfail_list(st, trunk.id, 0, 3, authfail_cb, &n), SA_STORE_OK);
	ck_assert_int_eq(n.n, 3);
	ck_assert_str_eq(n.v[2], "u7");
	n.n = 0;
	ck_assert_int_eq(sa_store_authfail_list(st, t2.id, 0, 0, authfail_cb, &n), SA_STORE_OK);
	ck_assert_int_eq(n.n, 1);
	ck_assert_str_eq(n.v[0], "elsewhere");
}
END_TEST

START_TEST(test_authfail_unknown_trunk_not_stored)
{
	struct sa_authfail f = failure("trunk_scanner", NOW, "admin");
	struct names n = { .n = 0 };

	ck_assert_int_eq(sa_store_authfail_add(st, &f, 5), SA_STORE_ENOTFOUND);
	ck_assert_int_eq(sa_store_authfail_list(st, "trunk_scanner", 0, 0, authfail_cb, &n), SA_STORE_OK);
	ck_assert_int_eq(n.n, 0);
}
END_TEST

/* ---- generation, persistence, secrecy ---- */

START_TEST(test_generation_changes_on_config_writes_only)
{
	uint64_t g0, g1, g2, g3, g4;
	struct sa_credential cr;
	struct sa_binding b;
	char key[SA_APIKEY_LEN + 1];

	ck_assert_int_eq(sa_store_generation(st, &g0), SA_STORE_OK);
	create_cred(trunk.id, PRODUCT_USER, &cr);
	ck_assert_int_eq(sa_store_generation(st, &g1), SA_STORE_OK);
	ck_assert_uint_gt(g1, g0);
	b = binding(cr.id, "sip:x@192.0.2.1", NOW, NOW + 60);
	ck_assert_int_eq(sa_store_binding_put(st, &b, 0), SA_STORE_OK);
	struct sa_authfail f = failure(trunk.id, NOW, "x");
	ck_assert_int_eq(sa_store_authfail_add(st, &f, 5), SA_STORE_OK);
	ck_assert_int_eq(sa_store_generation(st, &g2), SA_STORE_OK);
	ck_assert_uint_eq(g2, g1);
	ck_assert_int_eq(sa_store_apikey_create(st, acc.id, NOW, key), SA_STORE_OK);
	ck_assert_int_eq(sa_store_generation(st, &g3), SA_STORE_OK);
	ck_assert_uint_gt(g3, g2);
	ck_assert_int_eq(sa_store_credential_delete(st, trunk.id, cr.id), SA_STORE_OK);
	ck_assert_int_eq(sa_store_generation(st, &g4), SA_STORE_OK);
	ck_assert_uint_gt(g4, g3);
}
END_TEST

START_TEST(test_reopen_keeps_everything)
{
	struct sa_credential cr, found;
	struct sa_binding b;
	struct names n = { .n = 0 };
	char key[SA_APIKEY_LEN + 1], owner[SA_ID_MAX];
	struct sa_trunk t;

	create_cred(trunk.id, PRODUCT_USER, &cr);
	ck_assert_int_eq(sa_store_apikey_create(st, acc.id, NOW, key), SA_STORE_OK);
	b = binding(cr.id, "sip:x@192.0.2.1", NOW, NOW + 60);
	ck_assert_int_eq(sa_store_binding_put(st, &b, 0), SA_STORE_OK);
	reopen_store();
	ck_assert_int_eq(sa_store_credential_find(st, trunk.id, PRODUCT_USER, &found), SA_STORE_OK);
	ck_assert_str_eq(found.id, cr.id);
	ck_assert_int_eq(sa_store_apikey_account(st, key, strlen(key), owner), SA_STORE_OK);
	ck_assert_int_eq(sa_store_trunk_get(st, trunk.id, &t), SA_STORE_OK);
	ck_assert_int_eq(sa_store_binding_list_credential(st, cr.id, binding_cb, &n), SA_STORE_OK);
	ck_assert_int_eq(n.n, 1);
}
END_TEST

START_TEST(test_rdonly_reads_but_does_not_write)
{
	struct sa_credential cr, found;
	struct sa_store *ro;
	struct sa_account a;

	create_cred(trunk.id, PRODUCT_USER, &cr);
	sa_store_close(st);
	st = NULL;
	ck_assert_int_eq(sa_store_open(&ro, dir, SA_STORE_RDONLY), SA_STORE_OK);
	ck_assert_int_eq(sa_store_credential_find(ro, trunk.id, PRODUCT_USER, &found), SA_STORE_OK);
	ck_assert_int_ne(sa_store_account_create(ro, "x", NOW, &a), SA_STORE_OK);
	sa_store_close(ro);
	open_store();
}
END_TEST

/* The shared read transaction sees what another process committed since. */
START_TEST(test_find_sees_writes_by_another_process)
{
	struct sa_credential cr;
	pid_t pid;
	int status;

	ck_assert_int_eq(sa_store_credential_find(st, trunk.id, PRODUCT_USER, &cr), SA_STORE_ENOTFOUND);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct sa_store *other;
		char why[64];
		int rc = sa_store_open(&other, dir, 0);
		if (rc == SA_STORE_OK)
			rc = sa_store_credential_create(other, trunk.id, PRODUCT_USER, PRODUCT_PASSWORD,
			                                strlen(PRODUCT_PASSWORD), 0, NOW, &cr, why, sizeof why);
		_exit(rc == SA_STORE_OK ? 0 : 1);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	ck_assert_int_eq(sa_store_credential_find(st, trunk.id, PRODUCT_USER, &cr), SA_STORE_OK);
}
END_TEST

/* ---- a second handle for another thread ---- */

#define DUP_ROUNDS 200

/* What the second thread does with its own handle while the first writes. */
struct dup_work {
	struct sa_store *h;
	const char *cred_id;
	const char *trunk_id;
	int failures;          /* calls that did not return what they should */
	char first[160];       /* the first of them */
};

static void dup_fail(struct dup_work *w, const char *what, int rc)
{
	if (w->failures++ == 0)
		snprintf(w->first, sizeof w->first, "%s: %d", what, rc);
}

static int dup_names_cb(const struct sa_credential *c, void *arg) { return 0; }

static void *dup_thread(void *arg)
{
	struct dup_work *w = arg;
	struct sa_credential cr;
	struct sa_store_usage u;
	char contact[64];
	uint64_t gen;
	int rc;

	for (int i = 0; i < DUP_ROUNDS; i++) {
		snprintf(contact, sizeof contact, "sip:thread-%d@192.0.2.30", i);
		struct sa_binding b = binding(w->cred_id, contact, NOW, NOW + 3600);
		struct sa_authfail f = failure(w->trunk_id, NOW + i, "t2");
		if ((rc = sa_store_binding_put(w->h, &b, 0)) != SA_STORE_OK)
			dup_fail(w, "binding_put", rc);
		if ((rc = sa_store_credential_find(w->h, w->trunk_id, PRODUCT_USER, &cr)) != SA_STORE_OK)
			dup_fail(w, "credential_find", rc);
		if ((rc = sa_store_authfail_add(w->h, &f, 1000)) != SA_STORE_OK)
			dup_fail(w, "authfail_add", rc);
		if ((rc = sa_store_usage(w->h, &u)) != SA_STORE_OK)
			dup_fail(w, "usage", rc);
		if ((rc = sa_store_generation(w->h, &gen)) != SA_STORE_OK)
			dup_fail(w, "generation", rc);
		if ((rc = sa_store_credential_list(w->h, w->trunk_id, dup_names_cb, NULL)) != SA_STORE_OK)
			dup_fail(w, "credential_list", rc);
	}
	return NULL;
}

/* Two threads, two handles on one open store, at the same time: every call
 * of each succeeds, each sees the other's writes, and the store stays open
 * until the last handle is closed. */
START_TEST(test_dup_handle_works_from_a_second_thread)
{
	struct sa_credential owner, cr;
	struct sa_store *h2 = NULL;
	struct sa_store_fault f1, f2;
	char user[32], contact[64];
	pthread_t t;
	uint64_t n;

	create_cred(trunk.id, PRODUCT_USER, &owner);
	ck_assert_int_eq(sa_store_dup(st, &h2), SA_STORE_OK);
	ck_assert_ptr_nonnull(h2);
	struct dup_work w = { .h = h2, .cred_id = owner.id, .trunk_id = trunk.id };
	ck_assert_int_eq(pthread_create(&t, NULL, dup_thread, &w), 0);
	for (int i = 0; i < 20; i++) {
		snprintf(user, sizeof user, "main-%d", i);
		create_cred(trunk.id, user, &cr);   /* durable writes, while the other thread writes nosync */
		snprintf(contact, sizeof contact, "sip:main-%d@192.0.2.31", i);
		struct sa_binding b = binding(cr.id, contact, NOW, NOW + 3600);
		ck_assert_int_eq(sa_store_binding_put(st, &b, 0), SA_STORE_OK);
		ck_assert_int_eq(sa_store_credential_find(st, trunk.id, user, &cr), SA_STORE_OK);
	}
	ck_assert_int_eq(pthread_join(t, NULL), 0);
	ck_assert_msg(w.failures == 0, "%d calls failed in the second thread, first %s", w.failures, w.first);

	/* each handle sees everything, and the fault report is one */
	ck_assert_int_eq(sa_store_binding_count(st, NOW, &n), SA_STORE_OK);
	ck_assert_uint_eq(n, DUP_ROUNDS + 20);
	ck_assert_int_eq(sa_store_credential_find(h2, trunk.id, "main-19", &cr), SA_STORE_OK);
	struct sa_authfail af = failure("trunk_scanner", NOW, "x");
	ck_assert_int_eq(sa_store_authfail_add(h2, &af, 5), SA_STORE_ENOTFOUND);
	sa_store_fault(st, &f1);
	sa_store_fault(h2, &f2);
	ck_assert_uint_eq(f1.failures, 0);
	ck_assert(memcmp(&f1, &f2, sizeof f1) == 0);

	/* the first handle closed, the second still reads and writes */
	sa_store_close(st);
	st = h2;
	ck_assert_int_eq(sa_store_credential_find(st, trunk.id, PRODUCT_USER, &cr), SA_STORE_OK);
	struct sa_binding b = binding(owner.id, "sip:after@192.0.2.32", NOW, NOW + 60);
	ck_assert_int_eq(sa_store_binding_put(st, &b, 0), SA_STORE_OK);
}
END_TEST

/* Reads the whole file in chunks that overlap by len - 1 bytes, so a match
 * across a chunk boundary is found too (the writable map makes the file large). */
static bool file_contains(const char *path, const void *needle, size_t len)
{
	FILE *f = fopen(path, "rb");
	static char buf[1 << 20];
	size_t have = 0, n;
	bool found = false;

	ck_assert_ptr_nonnull(f);
	ck_assert_uint_lt(len, sizeof buf / 2);
	while (!found && (n = fread(buf + have, 1, sizeof buf - have, f)) > 0) {
		have += n;
		found = memmem(buf, have, needle, len) != NULL;
		size_t tail = have < len - 1 ? have : len - 1;
		memmove(buf, buf + have - tail, tail);
		have = tail;
	}
	ck_assert(found || feof(f));
	fclose(f);
	return found;
}

START_TEST(test_password_and_key_never_in_files)
{
	static const char *pw = "Unmistakable-Secret-Pass-77";
	struct sa_credential cr;
	char key[SA_APIKEY_LEN + 1], path[128], why[64];

	ck_assert_int_eq(sa_store_credential_create(st, trunk.id, "secret-holder", pw, strlen(pw), 0, NOW, &cr,
	                                            why, sizeof why), SA_STORE_OK);
	ck_assert_int_eq(sa_store_apikey_create(st, acc.id, NOW, key), SA_STORE_OK);
	sa_store_close(st);
	st = NULL;
	snprintf(path, sizeof path, "%s/data.mdb", dir);
	ck_assert(file_contains(path, "secret-holder", strlen("secret-holder")));   /* the check can see */
	ck_assert(file_contains(path, cr.ha1[SA_ALG_SHA256], 64));
	ck_assert(!file_contains(path, pw, strlen(pw)));
	ck_assert(!file_contains(path, key, strlen(key)));
	ck_assert(!file_contains(path, key + 12, 32));
	snprintf(path, sizeof path, "%s/lock.mdb", dir);
	ck_assert(!file_contains(path, pw, strlen(pw)));
	open_store();
}
END_TEST


/* ---- two files: runtime/ apart from data.mdb ---- */

/* In a child process, as sipauthctl would: open without runtime/, run fn. */
static void as_sipauthctl(int (*fn)(struct sa_store *, void *), void *arg)
{
	pid_t pid = fork();
	int status;

	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct sa_store *admin;
		int rc = sa_store_open(&admin, dir, 0);
		if (rc == SA_STORE_OK)
			rc = fn(admin, arg);
		sa_store_close(admin);
		_exit(rc == SA_STORE_OK ? 0 : 1);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static int delete_cred_fn(struct sa_store *admin, void *arg)
{
	return sa_store_credential_delete(admin, trunk.id, arg);
}

struct deleted {
	char id[8][SA_ID_MAX];
	int n;
	int stop_after;
};

static int deleted_cb(const char *cred_id, void *arg)
{
	struct deleted *d = arg;

	if (d->n < 8)
		snprintf(d->id[d->n], SA_ID_MAX, "%s", cred_id);
	d->n++;
	return d->stop_after != 0 && d->n >= d->stop_after;
}

START_TEST(test_tombstones_name_deleted_credentials_in_order)
{
	struct sa_credential c[3];
	struct deleted d = { .n = 0 };
	uint64_t last = 77;

	ck_assert_int_eq(sa_store_deleted_since(st, 0, deleted_cb, &d, &last), SA_STORE_OK);
	ck_assert_int_eq(d.n, 0);
	ck_assert_uint_eq(last, 77);   /* none: unchanged */
	create_cred(trunk.id, "one", &c[0]);
	create_cred(trunk.id, "two", &c[1]);
	create_cred(trunk.id, "three", &c[2]);
	ck_assert_int_eq(sa_store_credential_delete(st, trunk.id, c[1].id), SA_STORE_OK);
	ck_assert_int_eq(sa_store_credential_delete(st, trunk.id, c[0].id), SA_STORE_OK);
	ck_assert_int_eq(sa_store_credential_delete(st, trunk.id, "cred_nope"), SA_STORE_ENOTFOUND);   /* no tombstone */
	ck_assert_int_eq(sa_store_deleted_since(st, 0, deleted_cb, &d, &last), SA_STORE_OK);
	ck_assert_int_eq(d.n, 2);
	ck_assert_str_eq(d.id[0], c[1].id);
	ck_assert_str_eq(d.id[1], c[0].id);
	ck_assert_uint_eq(last, 2);
	d.n = 0;
	ck_assert_int_eq(sa_store_deleted_since(st, 1, deleted_cb, &d, &last), SA_STORE_OK);
	ck_assert_int_eq(d.n, 1);
	ck_assert_str_eq(d.id[0], c[0].id);
	d = (struct deleted){ .n = 0, .stop_after = 1 };
	last = 0;
	ck_assert_int_eq(sa_store_deleted_since(st, 0, deleted_cb, &d, &last), SA_STORE_OK);
	ck_assert_int_eq(d.n, 1);
	ck_assert_uint_eq(last, 1);   /* the callback stopped at the first */
	/* a delete by a process without runtime/ leaves one too, and the reader sees it */
	as_sipauthctl(delete_cred_fn, c[2].id);
	d.n = 0;
	d.stop_after = 0;
	ck_assert_int_eq(sa_store_deleted_since(st, 2, deleted_cb, &d, &last), SA_STORE_OK);
	ck_assert_int_eq(d.n, 1);
	ck_assert_str_eq(d.id[0], c[2].id);
	ck_assert_uint_eq(last, 3);
}
END_TEST

/* Writes raw records into main behind the store's back (the store closed:
 * LMDB opens an environment once per process). */
static MDB_env *raw_open(const char *path)
{
	MDB_env *env;
	struct stat sb;

	ck_assert_int_eq(stat(path, &sb), 0);
	ck_assert_int_eq(mdb_env_create(&env), 0);
	ck_assert_int_eq(mdb_env_set_maxdbs(env, 32), 0);
	ck_assert_int_eq(mdb_env_open(env, path, MDB_WRITEMAP, 0600), 0);
	return env;
}

static void raw_put(MDB_txn *txn, const char *db, const void *k, size_t klen, const void *v, size_t vlen)
{
	MDB_dbi dbi;
	MDB_val kk = { klen, (void *)k }, vv = { vlen, (void *)v };

	ck_assert_int_eq(mdb_dbi_open(txn, db, MDB_CREATE, &dbi), 0);
	ck_assert_int_eq(mdb_put(txn, dbi, &kk, &vv, 0), 0);
}

static size_t be64(unsigned char *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--)
		*p++ = (unsigned char)(v >> (i * 8));
	return 8;
}

/* The newest 100 000 tombstones are kept: positions stay consecutive, so a
 * reader that was behind sees the gap. */
/* Behind the store's back (closed, then opened again): positions 1 to
 * 100 000 of the log db, each holding value, and its meta counter seq_name
 * at 100 000. */
static void raw_fill_log(const char *db, const char *seq_name, const void *value, size_t len)
{
	unsigned char k[8];
	uint64_t seq = 100000;
	MDB_txn *txn;

	sa_store_close(st);
	st = NULL;
	MDB_env *env = raw_open(dir);
	ck_assert_int_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
	for (uint64_t i = 1; i <= seq; i++)
		raw_put(txn, db, k, be64(k, i), value, len);
	raw_put(txn, "meta", seq_name, strlen(seq_name), &seq, sizeof seq);
	ck_assert_int_eq(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
	open_store();
}

START_TEST(test_tombstones_keep_the_newest_100000)
{
	struct sa_credential cr;
	struct deleted d = { .n = 0, .stop_after = 1 };
	uint64_t last = 0;

	create_cred(trunk.id, "one", &cr);
	raw_fill_log("cred_deleted", "del_seq", "cred_gone", 9);
	ck_assert_int_eq(sa_store_credential_delete(st, trunk.id, cr.id), SA_STORE_OK);
	ck_assert_int_eq(sa_store_deleted_since(st, 0, deleted_cb, &d, &last), SA_STORE_OK);
	ck_assert_uint_eq(last, 2);   /* the oldest one was dropped: a reader at 0 sees the gap */
	d = (struct deleted){ .n = 0 };
	ck_assert_int_eq(sa_store_deleted_since(st, 100000, deleted_cb, &d, &last), SA_STORE_OK);
	ck_assert_int_eq(d.n, 1);
	ck_assert_str_eq(d.id[0], cr.id);
	ck_assert_uint_eq(last, 100001);
	d = (struct deleted){ .n = 0 };
	ck_assert_int_eq(sa_store_deleted_since(st, 0, deleted_cb, &d, &last), SA_STORE_OK);
	ck_assert_int_eq(d.n, 100000);
}
END_TEST

/* ---- the credential index ---- */

static void index_stats(struct sa_store_index_stats *s)
{
	sa_store_credential_index_stats(st, s);
}

/* In a child process with a handle of its own, as sipauthctl writes:
 * creates `create` (if any), rotates the credential rotate_id (if any) and
 * deletes delete_id (if any). */
static void other_process_writes(const char *create, const char *rotate_id, const char *delete_id)
{
	int status;
	pid_t pid = fork();

	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct sa_store *other;
		struct sa_credential cr;
		char why[128];
		int rc = sa_store_open(&other, dir, 0);
		if (rc == SA_STORE_OK && create != NULL)
			rc = sa_store_credential_create(other, trunk.id, create, PRODUCT_PASSWORD,
			                                strlen(PRODUCT_PASSWORD), 0, NOW, &cr, why, sizeof why);
		if (rc == SA_STORE_OK && rotate_id != NULL)
			rc = sa_store_credential_rotate(other, trunk.id, rotate_id, "another_password_456", 20, 0, 60,
			                                NOW, &cr, why, sizeof why);
		if (rc == SA_STORE_OK && delete_id != NULL)
			rc = sa_store_credential_delete(other, trunk.id, delete_id);
		_exit(rc == SA_STORE_OK ? 0 : 1);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

START_TEST(test_credential_index_answers_as_the_tree)
{
	struct sa_credential a, b, found;
	struct sa_trunk other;
	struct sa_store_index_stats s;

	create_cred(trunk.id, PRODUCT_USER, &a);
	ck_assert_int_eq(sa_store_trunk_create(st, acc.id, "second", NOW, &other), SA_STORE_OK);
	create_cred(other.id, PRODUCT_USER, &b);   /* the same username on another trunk */
	index_stats(&s);
	ck_assert(!s.on);
	ck_assert_int_eq(sa_store_credential_index(st), SA_STORE_OK);
	index_stats(&s);
	ck_assert(s.on);
	ck_assert_uint_eq(s.credentials, 2);
	ck_assert_uint_eq(s.position, 2);
	ck_assert_uint_eq(s.rebuilds, 0);

	ck_assert_int_eq(sa_store_credential_find(st, trunk.id, "PBX-Prod-01", &found), SA_STORE_OK);
	ck_assert(memcmp(&found, &a, sizeof found) == 0);
	ck_assert_int_eq(sa_store_credential_find(st, other.id, PRODUCT_USER, &found), SA_STORE_OK);
	ck_assert(memcmp(&found, &b, sizeof found) == 0);
	ck_assert_int_eq(sa_store_credential_find(st, trunk.id, "pbx-prod-02", &found), SA_STORE_ENOTFOUND);
	ck_assert_int_eq(sa_store_credential_find(st, "trunk_nosuchtrunk0000", PRODUCT_USER, &found),
	                 SA_STORE_ENOTFOUND);

	/* this handle's own writes: the index follows them */
	ck_assert_int_eq(sa_store_credential_delete(st, other.id, b.id), SA_STORE_OK);
	ck_assert_int_eq(sa_store_credential_find(st, other.id, PRODUCT_USER, &found), SA_STORE_ENOTFOUND);
	create_cred(other.id, PRODUCT_USER, &b);
	ck_assert_int_eq(sa_store_credential_find(st, other.id, PRODUCT_USER, &found), SA_STORE_OK);
	ck_assert_str_eq(found.id, b.id);
	index_stats(&s);
	ck_assert_uint_eq(s.credentials, 2);
	ck_assert_uint_eq(s.position, 4);
}
END_TEST

START_TEST(test_credential_index_follows_another_process)
{
	struct sa_credential a, gone, found;
	struct sa_store_index_stats s;

	create_cred(trunk.id, PRODUCT_USER, &a);
	create_cred(trunk.id, "gone", &gone);
	ck_assert_int_eq(sa_store_credential_index(st), SA_STORE_OK);
	ck_assert_int_eq(sa_store_credential_find(st, trunk.id, "gone", &found), SA_STORE_OK);

	other_process_writes("new-one", a.id, gone.id);
	ck_assert_int_eq(sa_store_credential_find(st, trunk.id, "new-one", &found), SA_STORE_OK);
	ck_assert_int_eq(sa_store_credential_find(st, trunk.id, "gone", &found), SA_STORE_ENOTFOUND);
	ck_assert_int_eq(sa_store_credential_find(st, trunk.id, PRODUCT_USER, &found), SA_STORE_OK);
	ck_assert_uint_eq(found.password_version, 2);
	ck_assert_str_eq(found.previous_ha1[SA_ALG_MD5], a.ha1[SA_ALG_MD5]);
	ck_assert_str_ne(found.ha1[SA_ALG_MD5], a.ha1[SA_ALG_MD5]);
	index_stats(&s);
	ck_assert(s.on);
	ck_assert_uint_eq(s.credentials, 2);
	ck_assert_uint_eq(s.position, 5);
	ck_assert_uint_eq(s.rebuilds, 0);
}
END_TEST

/* Entries of the change log dropped before the index read them (a daemon
 * behind by more than the log keeps): the find that sees it lets the index
 * go and answers from data.mdb; the refresh builds it again. */
START_TEST(test_credential_index_rebuilt_past_the_log)
{
	struct sa_credential a, found;
	struct sa_store_index_stats s;
	unsigned char k[8];
	int status;

	create_cred(trunk.id, PRODUCT_USER, &a);
	ck_assert_int_eq(sa_store_credential_index(st), SA_STORE_OK);
	other_process_writes("second", NULL, a.id);   /* positions 2 and 3 */
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {   /* position 2 goes, as trimming would drop it */
		MDB_env *env = raw_open(dir);
		MDB_txn *txn;
		MDB_dbi dbi;
		MDB_val kk = { be64(k, 2), k };
		int rc = mdb_txn_begin(env, NULL, 0, &txn);
		if (rc == 0)
			rc = mdb_dbi_open(txn, "cred_changes", 0, &dbi);
		if (rc == 0)
			rc = mdb_del(txn, dbi, &kk, NULL);
		if (rc == 0)
			rc = mdb_txn_commit(txn);
		mdb_env_close(env);
		_exit(rc == 0 ? 0 : 1);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);

	ck_assert_int_eq(sa_store_credential_find(st, trunk.id, "second", &found), SA_STORE_OK);
	ck_assert_int_eq(sa_store_credential_find(st, trunk.id, PRODUCT_USER, &found), SA_STORE_ENOTFOUND);
	index_stats(&s);
	ck_assert(!s.on && s.stale);
	ck_assert_uint_eq(s.rebuilds, 0);
	ck_assert_uint_eq(s.dropped, 0);
	ck_assert_uint_eq(s.credentials, 0);   /* its memory is given back at once */

	bool rebuilt = false;
	ck_assert_int_eq(sa_store_credential_index_refresh(st, &rebuilt), SA_STORE_OK);
	ck_assert(rebuilt);
	index_stats(&s);
	ck_assert(s.on && !s.stale);
	ck_assert_uint_eq(s.rebuilds, 1);
	ck_assert_uint_eq(s.credentials, 1);
	ck_assert_uint_eq(s.position, 3);
	ck_assert_int_eq(sa_store_credential_find(st, trunk.id, "second", &found), SA_STORE_OK);
	ck_assert_str_eq(found.username, "second");
	ck_assert_int_eq(sa_store_credential_find(st, trunk.id, PRODUCT_USER, &found), SA_STORE_ENOTFOUND);
	ck_assert_int_eq(sa_store_credential_index_refresh(st, &rebuilt), SA_STORE_OK);
	ck_assert(!rebuilt);   /* nothing more to do */
}

/* More writes since the index's position than a find applies itself (a
 * bulk with no request between): finds answer from data.mdb, the index is
 * left to the refresh, which applies them without a rebuild. */
START_TEST(test_credential_index_bulk_is_left_to_the_refresh)
{
	struct sa_credential a, found;
	struct sa_store_index_stats s;
	bool rebuilt = true;
	int status;

	create_cred(trunk.id, PRODUCT_USER, &a);
	ck_assert_int_eq(sa_store_credential_index(st), SA_STORE_OK);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {   /* 300 creates and a delete, by another process */
		struct sa_store *other;
		struct sa_credential cr;
		char user[32], why[128];
		int rc = sa_store_open(&other, dir, 0);
		for (int i = 0; i < 300 && rc == SA_STORE_OK; i++) {
			snprintf(user, sizeof user, "bulk-%03d", i);
			rc = sa_store_credential_create(other, trunk.id, user, PRODUCT_PASSWORD, strlen(PRODUCT_PASSWORD), 0,
			                                NOW, &cr, why, sizeof why);
		}
		if (rc == SA_STORE_OK)
			rc = sa_store_credential_delete(other, trunk.id, a.id);
		_exit(rc == SA_STORE_OK ? 0 : 1);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);

	ck_assert_int_eq(sa_store_credential_find(st, trunk.id, "bulk-299", &found), SA_STORE_OK);
	ck_assert_int_eq(sa_store_credential_find(st, trunk.id, PRODUCT_USER, &found), SA_STORE_ENOTFOUND);
	index_stats(&s);
	ck_assert(s.on);
	ck_assert_uint_eq(s.position, 1);   /* untouched: those answers came from data.mdb */
	ck_assert_uint_eq(s.credentials, 1);
	ck_assert_int_eq(sa_store_credential_index_refresh(st, &rebuilt), SA_STORE_OK);
	ck_assert(!rebuilt);
	index_stats(&s);
	ck_assert(s.on);
	ck_assert_uint_eq(s.position, 302);
	ck_assert_uint_eq(s.credentials, 300);
	ck_assert_uint_eq(s.rebuilds, 0);
	ck_assert_int_eq(sa_store_credential_find(st, trunk.id, "bulk-000", &found), SA_STORE_OK);
	ck_assert_int_eq(sa_store_credential_find(st, trunk.id, PRODUCT_USER, &found), SA_STORE_ENOTFOUND);
}
END_TEST

/* The index shared by three threads at once, as the daemon's workers and
 * its store thread share it: one writes (creates and deletes), one finds,
 * one refreshes. Every find of a credential that exists all along
 * succeeds, and at the end the index is where the log is. */
struct index_race {
	struct sa_store *h;
	const char *trunk_id;
	atomic_bool stop;
	int failures;
	char first[160];
};

static void *index_finder(void *arg)
{
	struct index_race *r = arg;
	struct sa_credential cr;
	char user[32];

	for (int i = 0; !atomic_load(&r->stop); i++) {
		int rc = sa_store_credential_find(r->h, r->trunk_id, PRODUCT_USER, &cr);
		if (rc != SA_STORE_OK && r->failures++ == 0)
			snprintf(r->first, sizeof r->first, "find %s: %d", PRODUCT_USER, rc);
		snprintf(user, sizeof user, "race-%d", i % 40);
		rc = sa_store_credential_find(r->h, r->trunk_id, user, &cr);
		if (rc != SA_STORE_OK && rc != SA_STORE_ENOTFOUND && r->failures++ == 0)
			snprintf(r->first, sizeof r->first, "find %s: %d", user, rc);
	}
	return NULL;
}

static void *index_refresher(void *arg)
{
	struct index_race *r = arg;
	bool rebuilt;

	while (!atomic_load(&r->stop)) {
		int rc = sa_store_credential_index_refresh(r->h, &rebuilt);
		if ((rc != SA_STORE_OK || rebuilt) && r->failures++ == 0)
			snprintf(r->first, sizeof r->first, "refresh: %d, rebuilt %d", rc, rebuilt);
	}
	return NULL;
}

START_TEST(test_credential_index_shared_by_threads)
{
	struct sa_credential a, cr[40], found;
	struct sa_store_index_stats s;
	struct sa_store *h2, *h3;
	pthread_t finder, refresher;
	char user[32];

	create_cred(trunk.id, PRODUCT_USER, &a);
	ck_assert_int_eq(sa_store_credential_index(st), SA_STORE_OK);
	ck_assert_int_eq(sa_store_dup(st, &h2), SA_STORE_OK);
	ck_assert_int_eq(sa_store_dup(st, &h3), SA_STORE_OK);
	struct index_race fr = { .h = h2, .trunk_id = trunk.id }, rr = { .h = h3, .trunk_id = trunk.id };
	ck_assert_int_eq(pthread_create(&finder, NULL, index_finder, &fr), 0);
	ck_assert_int_eq(pthread_create(&refresher, NULL, index_refresher, &rr), 0);
	for (int round = 0; round < 2; round++)
		for (int i = 0; i < 40; i++) {
			snprintf(user, sizeof user, "race-%d", i);
			if (round == 0)
				create_cred(trunk.id, user, &cr[i]);
			else if (i % 2 == 0)
				ck_assert_int_eq(sa_store_credential_delete(st, trunk.id, cr[i].id), SA_STORE_OK);
		}
	atomic_store(&fr.stop, true);
	atomic_store(&rr.stop, true);
	ck_assert_int_eq(pthread_join(finder, NULL), 0);
	ck_assert_int_eq(pthread_join(refresher, NULL), 0);
	ck_assert_msg(fr.failures == 0, "%d finds failed, first %s", fr.failures, fr.first);
	ck_assert_msg(rr.failures == 0, "%d refreshes failed, first %s", rr.failures, rr.first);

	for (int i = 0; i < 40; i++) {
		snprintf(user, sizeof user, "race-%d", i);
		ck_assert_int_eq(sa_store_credential_find(st, trunk.id, user, &found),
		                 i % 2 == 0 ? SA_STORE_ENOTFOUND : SA_STORE_OK);
	}
	index_stats(&s);
	ck_assert(s.on);
	ck_assert_uint_eq(s.position, 61);   /* 1 + 40 creates + 20 deletes */
	ck_assert_uint_eq(s.credentials, 21);
	ck_assert_uint_eq(s.rebuilds + s.dropped, 0);
	sa_store_close(h2);
	sa_store_close(h3);
}
END_TEST

/* The refresh applies what another process wrote without any find. */
START_TEST(test_credential_index_refresh_catches_up)
{
	struct sa_credential a, found;
	struct sa_store_index_stats s;
	bool rebuilt = true;

	ck_assert_int_eq(sa_store_credential_index_refresh(st, &rebuilt), SA_STORE_OK);   /* no index: nothing */
	ck_assert(!rebuilt);
	create_cred(trunk.id, PRODUCT_USER, &a);
	ck_assert_int_eq(sa_store_credential_index(st), SA_STORE_OK);
	other_process_writes("second", NULL, a.id);
	index_stats(&s);
	ck_assert_uint_eq(s.position, 1);
	ck_assert_int_eq(sa_store_credential_index_refresh(st, &rebuilt), SA_STORE_OK);
	ck_assert(!rebuilt);
	index_stats(&s);
	ck_assert(s.on);
	ck_assert_uint_eq(s.position, 3);
	ck_assert_uint_eq(s.credentials, 1);
	ck_assert_int_eq(sa_store_credential_find(st, trunk.id, "second", &found), SA_STORE_OK);
	ck_assert_int_eq(sa_store_credential_find(st, trunk.id, PRODUCT_USER, &found), SA_STORE_ENOTFOUND);
}
END_TEST

/* Resident kB of this process's mapping of path (/proc/self/smaps); -1: not mapped. */
static long mapped_rss_kb(const char *path)
{
	char line[1024];
	long kb = -1;
	bool in = false;
	FILE *f = fopen("/proc/self/smaps", "r");

	ck_assert_ptr_nonnull(f);
	while (fgets(line, sizeof line, f) != NULL) {
		size_t n = strlen(line);
		if (strchr(line, '-') == line + strspn(line, "0123456789abcdef") && n > 0) {   /* a mapping's first line */
			line[n - 1] = '\0';
			in = n > strlen(path) && strcmp(line + n - 1 - strlen(path), path) == 0;
			continue;
		}
		long v;
		if (in && sscanf(line, "Rss: %ld kB", &v) == 1)
			kb = kb < 0 ? v : kb + v;
	}
	fclose(f);
	return kb;
}

/* The build reads every credential's page; then the process lets them go:
 * its RSS is the index, not data.mdb. Finds still answer (from the index). */
START_TEST(test_credential_index_leaves_data_mdb_unmapped)
{
	struct sa_credential cr, found;
	char user[32], path[128];

	for (int i = 0; i < 300; i++) {
		snprintf(user, sizeof user, "pbx-%03d", i);
		create_cred(trunk.id, user, &cr);
	}
	snprintf(path, sizeof path, "%s/data.mdb", dir);
	ck_assert_int_eq(sa_store_credential_find(st, trunk.id, "pbx-000", &found), SA_STORE_OK);
	long before = mapped_rss_kb(path);
	ck_assert_int_ge(before, 100);   /* 300 credentials' pages, touched by their writes */
	ck_assert_int_eq(sa_store_credential_index(st), SA_STORE_OK);
	long after = mapped_rss_kb(path);
	ck_assert_msg(after >= 0 && after <= 16, "data.mdb still has %ld kB mapped (%ld before)", after, before);
	ck_assert_int_eq(sa_store_credential_find(st, trunk.id, "pbx-299", &found), SA_STORE_OK);
	ck_assert_str_eq(found.username, "pbx-299");
}
END_TEST

START_TEST(test_change_log_keeps_the_newest_100000)
{
	struct sa_credential cr;
	unsigned char k[8];
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_stat ms;
	MDB_val kk = { 8, k }, v;

	raw_fill_log("cred_changes", "chg_seq", "trunk_x\0someone", 15);
	create_cred(trunk.id, PRODUCT_USER, &cr);   /* 100001 */
	sa_store_close(st);
	st = NULL;

	MDB_env *env = raw_open(dir);
	ck_assert_int_eq(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
	ck_assert_int_eq(mdb_dbi_open(txn, "cred_changes", 0, &dbi), 0);
	ck_assert_int_eq(mdb_stat(txn, dbi, &ms), 0);
	ck_assert_uint_eq(ms.ms_entries, 100000);
	be64(k, 1);
	ck_assert_int_eq(mdb_get(txn, dbi, &kk, &v), MDB_NOTFOUND);   /* the oldest dropped */
	be64(k, 100001);
	ck_assert_int_eq(mdb_get(txn, dbi, &kk, &v), 0);
	char want[64];
	int n = snprintf(want, sizeof want, "%s%c%s", trunk.id, '\0', PRODUCT_USER);
	ck_assert_uint_eq(v.mv_size, (size_t)n);
	ck_assert(memcmp(v.mv_data, want, (size_t)n) == 0);
	mdb_txn_abort(txn);
	mdb_env_close(env);
	open_store();
}
END_TEST

/* A credential deleted by a process without runtime/ (sipauthctl): its
 * bindings vanish for every reader at once, and the purge removes them. */
START_TEST(test_deleted_credentials_bindings_are_skipped_then_purged)
{
	struct sa_credential gone, kept;
	struct names n = { .n = 0 };
	struct sa_store_usage u0, u1;
	uint64_t count, removed = 99;
	char contact[64];

	create_cred(trunk.id, "gone", &gone);
	create_cred(trunk.id, "kept", &kept);
	for (int i = 0; i < 40; i++) {
		snprintf(contact, sizeof contact, "sip:gone-%d@192.0.2.10", i);
		struct sa_binding b = binding(gone.id, contact, NOW, i == 0 ? NOW - 1 : NOW + 3600);
		ck_assert_int_eq(sa_store_binding_put(st, &b, 0), SA_STORE_OK);
	}
	struct sa_binding b = binding(kept.id, "sip:kept@192.0.2.11", NOW, NOW + 3600);
	ck_assert_int_eq(sa_store_binding_put(st, &b, 0), SA_STORE_OK);
	ck_assert_int_eq(sa_store_binding_count(st, NOW, &count), SA_STORE_OK);
	ck_assert_uint_eq(count, 40);   /* one of gone's has expired */

	as_sipauthctl(delete_cred_fn, gone.id);
	ck_assert_int_eq(sa_store_binding_list_trunk(st, trunk.id, binding_cb, &n), SA_STORE_OK);
	ck_assert_int_eq(n.n, 1);
	ck_assert_str_eq(n.v[0], "sip:kept@192.0.2.11");
	n.n = 0;
	ck_assert_int_eq(sa_store_binding_list_credential(st, gone.id, binding_cb, &n), SA_STORE_OK);
	ck_assert_int_eq(n.n, 0);
	ck_assert_int_eq(sa_store_binding_count(st, NOW, &count), SA_STORE_OK);
	ck_assert_uint_eq(count, 1);
	ck_assert_int_eq(sa_store_binding_count(st, NOW - 10, &count), SA_STORE_OK);
	ck_assert_uint_eq(count, 1);   /* the expired one is not subtracted twice */

	/* they still take room until purged */
	ck_assert_int_eq(sa_store_runtime_usage(st, &u0), SA_STORE_OK);
	ck_assert_int_eq(sa_store_binding_purge_orphans(st, &removed), SA_STORE_OK);
	ck_assert_uint_eq(removed, 40);
	ck_assert_int_eq(sa_store_runtime_usage(st, &u1), SA_STORE_OK);
	ck_assert_uint_lt(u1.used, u0.used);
	ck_assert_int_eq(sa_store_binding_purge_orphans(st, &removed), SA_STORE_OK);
	ck_assert_uint_eq(removed, 0);
	ck_assert_int_eq(sa_store_binding_count(st, NOW, &count), SA_STORE_OK);
	ck_assert_uint_eq(count, 1);
	ck_assert_int_eq(sa_store_binding_expire(st, NOW + 7200), 1);   /* the indexes went with them */
}
END_TEST

/* The daemon's way: the tombstones, and delete_all for each. */
START_TEST(test_tombstones_lead_to_the_bindings)
{
	struct sa_credential c1, c2;
	struct deleted d = { .n = 0 };
	uint64_t pos = 0, count;

	create_cred(trunk.id, "one", &c1);
	create_cred(trunk.id, "two", &c2);
	struct sa_binding b = binding(c1.id, "sip:one@192.0.2.10", NOW, NOW + 3600);
	ck_assert_int_eq(sa_store_binding_put(st, &b, 0), SA_STORE_OK);
	b = binding(c2.id, "sip:two@192.0.2.10", NOW, NOW + 3600);
	ck_assert_int_eq(sa_store_binding_put(st, &b, 0), SA_STORE_OK);
	ck_assert_int_eq(sa_store_credential_delete(st, trunk.id, c1.id), SA_STORE_OK);
	ck_assert_int_eq(sa_store_deleted_since(st, pos, deleted_cb, &d, &pos), SA_STORE_OK);
	ck_assert_int_eq(d.n, 1);
	ck_assert_int_eq(sa_store_binding_delete_all(st, d.id[0]), SA_STORE_OK);
	uint64_t removed = 9;
	ck_assert_int_eq(sa_store_binding_purge_orphans(st, &removed), SA_STORE_OK);
	ck_assert_uint_eq(removed, 0);   /* nothing left for the purge */
	ck_assert_int_eq(sa_store_binding_count(st, NOW, &count), SA_STORE_OK);
	ck_assert_uint_eq(count, 1);
}
END_TEST

/* How far the daemon followed the tombstones survives a restart (runtime/),
 * and is not believed past main's own last tombstone. */
START_TEST(test_purged_position_is_kept_in_runtime)
{
	struct sa_credential c1, c2;
	uint64_t pos = 9;

	ck_assert_int_eq(sa_store_purged_get(st, &pos), SA_STORE_ENOTFOUND);   /* never recorded */
	ck_assert_uint_eq(pos, 0);
	create_cred(trunk.id, "one", &c1);
	create_cred(trunk.id, "two", &c2);
	ck_assert_int_eq(sa_store_credential_delete(st, trunk.id, c1.id), SA_STORE_OK);
	ck_assert_int_eq(sa_store_credential_delete(st, trunk.id, c2.id), SA_STORE_OK);
	ck_assert_int_eq(sa_store_purged_set(st, 1), SA_STORE_OK);
	ck_assert_int_eq(sa_store_purged_get(st, &pos), SA_STORE_OK);
	ck_assert_uint_eq(pos, 1);
	ck_assert_int_eq(sa_store_purged_set(st, 2), SA_STORE_OK);
	sa_store_close(st);
	st = NULL;
	open_store();
	pos = 9;
	ck_assert_int_eq(sa_store_purged_get(st, &pos), SA_STORE_OK);
	ck_assert_uint_eq(pos, 2);
	/* data.mdb older than runtime/ (restored from a copy): purge again */
	ck_assert_int_eq(sa_store_purged_set(st, 3), SA_STORE_OK);
	ck_assert_int_eq(sa_store_purged_get(st, &pos), SA_STORE_ENOTFOUND);
	ck_assert_uint_eq(pos, 0);
}
END_TEST

/* A store written before tombstones existed, opened read-only (sipauthctl's
 * list commands): no cred_deleted, read as none; a writable open makes it. */
START_TEST(test_store_without_tombstones_reads_as_none)
{
	struct sa_credential cr;
	struct deleted d = { .n = 0 };
	struct sa_store *ro;
	uint64_t last = 5;
	MDB_txn *txn;
	MDB_dbi dbi;

	create_cred(trunk.id, PRODUCT_USER, &cr);
	sa_store_close(st);
	st = NULL;
	MDB_env *env = raw_open(dir);
	ck_assert_int_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
	ck_assert_int_eq(mdb_dbi_open(txn, "cred_deleted", 0, &dbi), 0);
	ck_assert_int_eq(mdb_drop(txn, dbi, 1), 0);
	ck_assert_int_eq(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
	ck_assert_int_eq(sa_store_open(&ro, dir, SA_STORE_RDONLY), SA_STORE_OK);
	ck_assert_int_eq(sa_store_deleted_since(ro, 0, deleted_cb, &d, &last), SA_STORE_OK);
	ck_assert_int_eq(d.n, 0);
	ck_assert_uint_eq(last, 5);
	ck_assert_int_eq(sa_store_credential_find(ro, trunk.id, PRODUCT_USER, &cr), SA_STORE_OK);
	sa_store_close(ro);
	open_store();
	ck_assert_int_eq(sa_store_credential_delete(st, trunk.id, cr.id), SA_STORE_OK);
	ck_assert_int_eq(sa_store_deleted_since(st, 0, deleted_cb, &d, &last), SA_STORE_OK);
	ck_assert_int_eq(d.n, 1);
	ck_assert_str_eq(d.id[0], cr.id);
}
END_TEST

/* sipauthctl's open never has runtime/: the binding and failure-log calls
 * say so, and a new store gets no runtime/ from it. */
START_TEST(test_open_without_runtime_refuses_binding_calls)
{
	struct sa_credential cr;
	struct sa_store_usage u;
	struct names n = { .n = 0 };
	struct stat sb;
	char path[96];
	uint64_t count, removed;

	create_cred(trunk.id, PRODUCT_USER, &cr);
	sa_store_close(st);
	ck_assert_int_eq(sa_store_open(&st, dir, 0), SA_STORE_OK);
	struct sa_binding b = binding(cr.id, "sip:x@192.0.2.1", NOW, NOW + 60);
	struct sa_binding_change ch = { b.contact, &b };
	struct sa_authfail f = failure(trunk.id, NOW, "x");
	ck_assert_int_eq(sa_store_binding_put(st, &b, 0), SA_STORE_EINVAL);
	ck_assert_int_eq(sa_store_binding_apply(st, cr.id, &ch, 1, 0), SA_STORE_EINVAL);
	ck_assert_int_eq(sa_store_binding_delete(st, cr.id, b.contact), SA_STORE_EINVAL);
	ck_assert_int_eq(sa_store_binding_delete_all(st, cr.id), SA_STORE_EINVAL);
	ck_assert_int_eq(sa_store_binding_list_credential(st, cr.id, binding_cb, &n), SA_STORE_EINVAL);
	ck_assert_int_eq(sa_store_binding_list_trunk(st, trunk.id, binding_cb, &n), SA_STORE_EINVAL);
	ck_assert_int_eq(sa_store_binding_count(st, NOW, &count), SA_STORE_EINVAL);
	ck_assert_int_eq(sa_store_binding_expire(st, NOW), SA_STORE_EINVAL);
	ck_assert_int_eq(sa_store_binding_purge_orphans(st, &removed), SA_STORE_EINVAL);
	ck_assert_int_eq(sa_store_purged_get(st, &removed), SA_STORE_EINVAL);
	ck_assert_int_eq(sa_store_purged_set(st, 1), SA_STORE_EINVAL);
	ck_assert_int_eq(sa_store_authfail_add(st, &f, 5), SA_STORE_EINVAL);
	ck_assert_int_eq(sa_store_authfail_list(st, trunk.id, 0, 0, authfail_cb, &n), SA_STORE_EINVAL);
	ck_assert_int_eq(sa_store_runtime_usage(st, &u), SA_STORE_EINVAL);
	ck_assert_int_eq(sa_store_flush(st), SA_STORE_OK);
	ck_assert_int_eq(sa_store_credential_find(st, trunk.id, PRODUCT_USER, &cr), SA_STORE_OK);
	sa_store_close(st);
	st = NULL;

	/* a new store made without runtime/ has none */
	snprintf(path, sizeof path, "%s/new", dir);
	ck_assert_int_eq(sa_store_open(&st, path, 0), SA_STORE_OK);
	ck_assert_int_eq(sa_store_init(st, NULL), SA_STORE_OK);
	sa_store_close(st);
	snprintf(path, sizeof path, "%s/new/runtime", dir);
	ck_assert_int_eq(stat(path, &sb), -1);
	open_store();
}
END_TEST

/* A write transaction held on data.mdb by another process (an
 * administrator's, stopped): bindings and failure-log records go in at once. */
START_TEST(test_main_writer_does_not_block_binding_writes)
{
	struct sa_credential cr;
	struct sa_store_usage u;
	struct timespec t0, t1;
	int ready[2], status;
	char c;

	create_cred(trunk.id, PRODUCT_USER, &cr);
	ck_assert_int_eq(sa_store_usage(st, &u), SA_STORE_OK);
	ck_assert_int_eq(pipe(ready), 0);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		MDB_env *env;
		MDB_txn *txn;
		if (mdb_env_create(&env) != 0 || mdb_env_set_maxdbs(env, 32) != 0 ||
		    mdb_env_set_mapsize(env, (size_t)u.map_size) != 0 ||
		    mdb_env_open(env, dir, MDB_WRITEMAP | MDB_NOTLS, 0600) != 0 || mdb_txn_begin(env, NULL, 0, &txn) != 0)
			_exit(1);
		if (write(ready[1], "x", 1) != 1)
			_exit(1);
		sleep(2);
		mdb_txn_abort(txn);
		mdb_env_close(env);
		_exit(0);
	}
	close(ready[1]);
	ck_assert_int_eq(read(ready[0], &c, 1), 1);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	struct sa_binding b = binding(cr.id, "sip:new@192.0.2.10", NOW, NOW + 3600);
	struct sa_binding_change ch = { b.contact, &b };
	ck_assert_int_eq(sa_store_binding_apply(st, cr.id, &ch, 1, 0), SA_STORE_OK);
	struct sa_authfail f = failure(trunk.id, NOW, "x");
	ck_assert_int_eq(sa_store_authfail_add(st, &f, 5), SA_STORE_OK);
	ck_assert_int_eq(sa_store_credential_find(st, trunk.id, PRODUCT_USER, &cr), SA_STORE_OK);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double took = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	ck_assert_msg(took < 1.0, "binding writes waited %.2f s behind data.mdb's writer", took);
	/* the lock was held: a credential write waits for it */
	struct sa_account a;
	ck_assert_int_eq(sa_store_account_create(st, "waits", NOW, &a), SA_STORE_OK);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	took = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	ck_assert_msg(took >= 1.0, "the account was created after %.2f s: the other writer held nothing", took);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	close(ready[0]);
}
END_TEST


/* ---- rotation ---- */

#define NEW_PASSWORD "another_secret_456789"
#define THIRD_PASSWORD "third_secret_098765"

static void ha1s_of(const char *password, char out[SA_ALG_COUNT][SA_DIGEST_HEX_MAX])
{
	char realm[SA_REALM_MAX];

	ck_assert_int_eq(sa_store_realm(trunk.id, SA_DEFAULT_DOMAIN, realm, sizeof realm), SA_STORE_OK);
	for (int alg = 0; alg < SA_ALG_COUNT; alg++)
		ck_assert_int_eq(sa_digest_ha1((enum sa_digest_alg)alg, PRODUCT_USER, realm, password, out[alg]), 0);
}

static int rotate(const char *cred_id, const char *password, unsigned overlap, int64_t now, struct sa_credential *out,
                  char *why, size_t whylen)
{
	return sa_store_credential_rotate(st, trunk.id, cred_id, password, strlen(password), 0, overlap, now, out, why,
	                                  whylen);
}

/* The new password's HA1s are current, the old ones previous until the
 * overlap ends; the record keeps its place, and nothing is deleted. */
START_TEST(test_rotate_keeps_the_old_password_for_the_overlap)
{
	struct sa_credential cr, rot, found;
	struct names n = { .n = 0 };
	char old[SA_ALG_COUNT][SA_DIGEST_HEX_MAX], new[SA_ALG_COUNT][SA_DIGEST_HEX_MAX];
	uint64_t g0, g1, last = 0;

	create_cred(trunk.id, PRODUCT_USER, &cr);
	create_cred(trunk.id, "second", &found);
	ck_assert_uint_eq(cr.password_version, 1);
	ck_assert(!sa_credential_has_previous(&cr));
	ck_assert_int_eq(sa_store_generation(st, &g0), SA_STORE_OK);
	ck_assert_int_eq(rotate(cr.id, NEW_PASSWORD, 600, NOW + 10, &rot, NULL, 0), SA_STORE_OK);
	ha1s_of(PRODUCT_PASSWORD, old);
	ha1s_of(NEW_PASSWORD, new);
	ck_assert_int_eq(sa_store_credential_find(st, trunk.id, PRODUCT_USER, &found), SA_STORE_OK);
	for (int alg = 0; alg < SA_ALG_COUNT; alg++) {
		ck_assert_str_eq(found.ha1[alg], new[alg]);
		ck_assert_str_eq(found.previous_ha1[alg], old[alg]);
		ck_assert_str_eq(rot.ha1[alg], new[alg]);
	}
	ck_assert_str_eq(found.id, cr.id);
	ck_assert_uint_eq(found.password_version, 2);
	ck_assert_int_eq(found.rotated_at, NOW + 10);
	ck_assert_int_eq(found.previous_until, NOW + 610);
	ck_assert_int_eq(found.created_at, NOW);
	ck_assert(sa_credential_previous_live(&found, NOW + 609));
	ck_assert(!sa_credential_previous_live(&found, NOW + 610));
	/* still first in creation order, and no tombstone: revocation finds nothing */
	ck_assert_int_eq(sa_store_credential_list(st, trunk.id, cred_cb, &n), SA_STORE_OK);
	ck_assert_int_eq(n.n, 2);
	ck_assert_str_eq(n.v[0], PRODUCT_USER);
	ck_assert_int_eq(sa_store_deleted_since(st, 0, NULL, NULL, &last), SA_STORE_OK);
	ck_assert_uint_eq(last, 0);
	ck_assert_int_eq(sa_store_generation(st, &g1), SA_STORE_OK);
	ck_assert_uint_gt(g1, g0);   /* the daemon looks, and finds nothing gone */
	sa_credential_wipe(&found);
	for (int alg = 0; alg < SA_ALG_COUNT; alg++)
		ck_assert_str_eq(found.previous_ha1[alg], "");
}
END_TEST

/* A second rotation within the overlap keeps only current and previous:
 * the first password stops at once. Overlap 0 ends the previous at once. */
START_TEST(test_rotate_again_drops_the_oldest_password)
{
	struct sa_credential cr, found;
	char second[SA_ALG_COUNT][SA_DIGEST_HEX_MAX], third[SA_ALG_COUNT][SA_DIGEST_HEX_MAX];

	create_cred(trunk.id, PRODUCT_USER, &cr);
	ck_assert_int_eq(rotate(cr.id, NEW_PASSWORD, 3600, NOW, NULL, NULL, 0), SA_STORE_OK);
	ck_assert_int_eq(rotate(cr.id, THIRD_PASSWORD, 3600, NOW + 5, NULL, NULL, 0), SA_STORE_OK);
	ha1s_of(NEW_PASSWORD, second);
	ha1s_of(THIRD_PASSWORD, third);
	ck_assert_int_eq(sa_store_credential_get(st, cr.id, &found), SA_STORE_OK);
	ck_assert_uint_eq(found.password_version, 3);
	ck_assert_str_eq(found.ha1[SA_ALG_SHA256], third[SA_ALG_SHA256]);
	ck_assert_str_eq(found.previous_ha1[SA_ALG_SHA256], second[SA_ALG_SHA256]);
	ck_assert_int_eq(found.previous_until, NOW + 3605);
	/* back to the first password is allowed (it is not the current one), with no overlap */
	ck_assert_int_eq(rotate(cr.id, PRODUCT_PASSWORD, 0, NOW + 6, &found, NULL, 0), SA_STORE_OK);
	ck_assert_uint_eq(found.password_version, 4);
	ck_assert_int_eq(found.previous_until, NOW + 6);
	ck_assert(!sa_credential_previous_live(&found, NOW + 6));
	ck_assert_str_eq(found.previous_ha1[SA_ALG_SHA256], third[SA_ALG_SHA256]);
}
END_TEST

START_TEST(test_rotate_refuses_bad_input_and_changes_nothing)
{
	struct sa_credential cr, other, found;
	char why[160];

	create_cred(trunk.id, PRODUCT_USER, &cr);
	ck_assert_int_eq(rotate(cr.id, PRODUCT_PASSWORD, 60, NOW, NULL, why, sizeof why), SA_STORE_EINVAL);
	ck_assert_str_eq(why, "password must differ from the current password");
	ck_assert_int_eq(rotate(cr.id, "bad\001password", 60, NOW, NULL, why, sizeof why), SA_STORE_EINVAL);
	ck_assert_int_eq(sa_store_credential_rotate(st, trunk.id, cr.id, "short_but_ok_1", 14, 20, 60, NOW, NULL, why,
	                                            sizeof why), SA_STORE_EINVAL);
	ck_assert_str_eq(why, "password must be at least 20 characters");
	ck_assert_int_eq(rotate(cr.id, "xx-PBX-PROD-01-xx", 60, NOW, NULL, why, sizeof why), SA_STORE_EINVAL);
	ck_assert_str_eq(why, "password must not contain the username");
	ck_assert_int_eq(rotate(cr.id, NEW_PASSWORD, SA_ROTATE_OVERLAP_MAX + 1, NOW, NULL, why, sizeof why),
	                 SA_STORE_EINVAL);
	ck_assert_str_eq(why, "overlap must be 0 to 86400 seconds");
	ck_assert_int_eq(rotate("cred_none", NEW_PASSWORD, 60, NOW, NULL, why, sizeof why), SA_STORE_ENOTFOUND);
	ck_assert_int_eq(rotate("", NEW_PASSWORD, 60, NOW, NULL, NULL, 0), SA_STORE_ENOTFOUND);
	/* another trunk's credential, named under this trunk */
	struct sa_trunk t2;
	ck_assert_int_eq(sa_store_trunk_create(st, acc.id, "second", NOW, &t2), SA_STORE_OK);
	create_cred(t2.id, PRODUCT_USER, &other);
	ck_assert_int_eq(rotate(other.id, NEW_PASSWORD, 60, NOW, NULL, NULL, 0), SA_STORE_ENOTFOUND);
	ck_assert_int_eq(sa_store_credential_get(st, cr.id, &found), SA_STORE_OK);
	ck_assert_uint_eq(found.password_version, 1);
	ck_assert_int_eq(sa_store_credential_get(st, other.id, &found), SA_STORE_OK);
	ck_assert_uint_eq(found.password_version, 1);
}
END_TEST

/* The password is never stored, the new one no more than the first. */
START_TEST(test_rotated_password_never_in_files)
{
	struct sa_credential cr;
	char path[96];

	create_cred(trunk.id, PRODUCT_USER, &cr);
	ck_assert_int_eq(rotate(cr.id, NEW_PASSWORD, 60, NOW, NULL, NULL, 0), SA_STORE_OK);
	sa_store_close(st);
	st = NULL;
	snprintf(path, sizeof path, "%s/data.mdb", dir);
	ck_assert(!file_contains(path, NEW_PASSWORD, strlen(NEW_PASSWORD)));
	ck_assert(!file_contains(path, PRODUCT_PASSWORD, strlen(PRODUCT_PASSWORD)));
	open_store();
}
END_TEST

/* A credential with one binding and one failure, each of these password versions. */
static void records_of_versions(const char *contact, uint32_t bv, int64_t fv, struct sa_credential *cr,
                                struct sa_binding *b, struct sa_authfail *f)
{
	create_cred(trunk.id, PRODUCT_USER, cr);
	*b = binding(cr->id, contact, NOW, NOW + 60);
	b->password_version = bv;
	ck_assert_int_eq(sa_store_binding_put(st, b, 0), SA_STORE_OK);
	*f = failure(trunk.id, NOW, "x");
	f->password_version = fv;
	ck_assert_int_eq(sa_store_authfail_add(st, f, 5), SA_STORE_OK);
}

/* Bindings and failures keep the password version they were made with. */
START_TEST(test_binding_and_failure_keep_password_version)
{
	struct sa_credential cr;
	struct sa_binding b;
	struct sa_authfail f;

	records_of_versions("sip:v2@192.0.2.1", 2, 7, &cr, &b, &f);
	reopen_store();
	ck_assert_int_eq(sa_store_binding_list_credential(st, cr.id, version_binding_cb, &b), SA_STORE_OK);
	ck_assert_uint_eq(b.password_version, 2);
	ck_assert_int_eq(sa_store_authfail_list(st, trunk.id, 0, 0, version_fail_cb, &f), SA_STORE_OK);
	ck_assert_int_eq(f.password_version, 7);
}
END_TEST

/* ---- a schema-1 store: records before rotation ---- */

/* What schema 1 wrote: struct cred_rec without version and previous password. */
struct cred_rec_s1 {
	uint64_t seq;
	struct {
		char id[SA_ID_MAX];
		char trunk_id[SA_ID_MAX];
		char username[SA_USERNAME_MAX + 1];
		int64_t created_at;
		char ha1[SA_ALG_COUNT][SA_DIGEST_HEX_MAX];
	} c;
};

/* Cuts every record of db (at most 8) to its first keep bytes: the
 * schema-1 layout, whose fields lead the new one. */
static void raw_shrink(const char *path, const char *db, size_t keep)
{
	MDB_env *env = raw_open(path);
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_cursor *cur;
	MDB_val k, v;
	unsigned char keys[8][256], vals[8][1024];
	size_t klen[8], n = 0;

	ck_assert_int_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
	ck_assert_int_eq(mdb_dbi_open(txn, db, 0, &dbi), 0);
	ck_assert_int_eq(mdb_cursor_open(txn, dbi, &cur), 0);
	while (n < 8 && mdb_cursor_get(cur, &k, &v, MDB_NEXT) == 0) {
		ck_assert_uint_gt(v.mv_size, keep);
		memcpy(keys[n], k.mv_data, k.mv_size);
		klen[n] = k.mv_size;
		memcpy(vals[n], v.mv_data, keep);
		n++;
	}
	mdb_cursor_close(cur);
	ck_assert_uint_gt(n, 0);
	for (size_t i = 0; i < n; i++)
		raw_put(txn, db, keys[i], klen[i], vals[i], keep);
	ck_assert_int_eq(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
}

/* The key of cred_by_user: trunk id, NUL, the username in lower case. */
static size_t raw_user_key(const struct sa_credential *cr, unsigned char *k)
{
	size_t n = strlen(cr->trunk_id) + 1;

	memcpy(k, cr->trunk_id, n);
	for (size_t i = 0; cr->username[i] != '\0'; i++)
		k[n++] = (unsigned char)tolower((unsigned char)cr->username[i]);
	return n;
}

/* cred_id's record, wherever its schema keeps it: under the id (before 4),
 * or under the username whose key the id leads to (4). */
static void raw_cred_get(MDB_txn *txn, const char *cred_id, MDB_val *v)
{
	MDB_dbi dbi, by_user;
	MDB_val k = { strlen(cred_id), (void *)cred_id };

	ck_assert_int_eq(mdb_dbi_open(txn, "credentials", 0, &dbi), 0);
	ck_assert_int_eq(mdb_get(txn, dbi, &k, v), 0);
	if (*(unsigned char *)v->mv_data == 1 || v->mv_size > 200)
		return;
	k = *v;
	ck_assert_int_eq(mdb_dbi_open(txn, "cred_by_user", 0, &by_user), 0);
	ck_assert_int_eq(mdb_get(txn, by_user, &k, v), 0);
}

/* cr written as a schema before 4 did: the record (len bytes of rec) under
 * the id, the id under the username. */
static void raw_cred_old(MDB_txn *txn, const struct sa_credential *cr, const void *rec, size_t len)
{
	unsigned char uk[256];

	raw_put(txn, "credentials", cr->id, strlen(cr->id), rec, len);
	raw_put(txn, "cred_by_user", uk, raw_user_key(cr, uk), cr->id, strlen(cr->id));
}

/* Overwrites cr's record with the struct layout of schema 1, its seq taken
 * from the compact record (after the tag byte). */
static void raw_cred_s1(const struct sa_credential *cr)
{
	struct cred_rec_s1 r;
	MDB_env *env = raw_open(dir);
	MDB_txn *txn;
	MDB_val v;

	memset(&r, 0, sizeof r);
	ck_assert_int_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
	raw_cred_get(txn, cr->id, &v);
	ck_assert_uint_lt(v.mv_size, sizeof r);
	ck_assert_uint_eq(*(unsigned char *)v.mv_data, 1);
	memcpy(&r.seq, (unsigned char *)v.mv_data + 1, sizeof r.seq);
	ck_assert_uint_gt(r.seq, 0);
	memcpy(r.c.id, cr->id, sizeof r.c.id);
	memcpy(r.c.trunk_id, cr->trunk_id, sizeof r.c.trunk_id);
	memcpy(r.c.username, cr->username, sizeof r.c.username);
	r.c.created_at = cr->created_at;
	memcpy(r.c.ha1, cr->ha1, sizeof r.c.ha1);
	raw_cred_old(txn, cr, &r, sizeof r);
	ck_assert_int_eq(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
}

/* Overwrites b's record in runtime/ (path) with the struct layout of an
 * older schema: its first len bytes (schema 1: up to password_version; 2: all). */
static void raw_binding(const char *path, const struct sa_binding *b, size_t len)
{
	unsigned char k[256], h[SHA256_DIGEST_LENGTH];
	struct sa_binding rec = *b;
	size_t n = strlen(b->cred_id) + 1;
	MDB_env *env = raw_open(path);
	MDB_txn *txn;

	snprintf(rec.trunk_id, sizeof rec.trunk_id, "%s", trunk.id);
	SHA256((const unsigned char *)b->contact, strlen(b->contact), h);
	memcpy(k, b->cred_id, n);
	memcpy(k + n, h, sizeof h);
	ck_assert_int_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
	raw_put(txn, "bindings", k, n + sizeof h, &rec, len);
	ck_assert_int_eq(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
}

/* The size and first byte of the only binding record in runtime/. */
static size_t raw_binding_size(const char *path, unsigned char *first)
{
	MDB_env *env = raw_open(path);
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_cursor *cur;
	MDB_val k, v;

	ck_assert_int_eq(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
	ck_assert_int_eq(mdb_dbi_open(txn, "bindings", 0, &dbi), 0);
	ck_assert_int_eq(mdb_cursor_open(txn, dbi, &cur), 0);
	ck_assert_int_eq(mdb_cursor_get(cur, &k, &v, MDB_FIRST), 0);
	size_t size = v.mv_size;
	*first = *(unsigned char *)v.mv_data;
	ck_assert_int_eq(mdb_cursor_get(cur, &k, &v, MDB_NEXT), MDB_NOTFOUND);
	mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	mdb_env_close(env);
	return size;
}

/* The times of runtime's bindings_by_expiry entries, in order; how many. */
static int raw_expiry_times(const char *path, int64_t *at, int max)
{
	MDB_env *env = raw_open(path);
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_cursor *cur;
	MDB_val k, v;
	int n = 0;

	ck_assert_int_eq(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
	ck_assert_int_eq(mdb_dbi_open(txn, "bindings_by_expiry", 0, &dbi), 0);
	ck_assert_int_eq(mdb_cursor_open(txn, dbi, &cur), 0);
	for (int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		uint64_t u = 0;
		ck_assert_uint_ge(k.mv_size, 9);
		for (int i = 0; i < 8; i++)
			u = u << 8 | ((const unsigned char *)k.mv_data)[i];
		if (n < max)
			at[n] = (int64_t)(u ^ ((uint64_t)1 << 63));
		n++;
	}
	mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	mdb_env_close(env);
	return n;
}

static int expired_seen_cb(const struct sa_binding *b, void *arg)
{
	(void)b;
	++*(int *)arg;
	return 0;
}

/* sa_store_binding_expire_some stops at max (a whole batch first) and says
 * whether some are left. */
START_TEST(test_binding_expire_some_stops_at_max)
{
	struct sa_credential cr;
	struct sa_binding b;
	char contact[64];
	bool more = false;
	int seen = 0;

	create_cred(trunk.id, PRODUCT_USER, &cr);
	for (int i = 0; i < 2500; i++) {
		snprintf(contact, sizeof contact, "sip:pbx%d@192.0.2.10:5060", i);
		b = binding(cr.id, contact, NOW, NOW + 60 + i % 7);
		ck_assert_int_eq(sa_store_binding_put(st, &b, 0), SA_STORE_OK);
	}
	ck_assert_int_eq(sa_store_binding_expire_some(st, NOW + 100, 1000, expired_seen_cb, &seen, &more), 1000);
	ck_assert(more);
	ck_assert_int_eq(sa_store_binding_expire_some(st, NOW + 100, 1, expired_seen_cb, &seen, &more), 1000);
	ck_assert(more);
	ck_assert_int_eq(sa_store_binding_expire_some(st, NOW + 100, 1000, expired_seen_cb, &seen, &more), 500);
	ck_assert(!more);
	ck_assert_int_eq(seen, 2500);
	ck_assert_int_eq(sa_store_binding_expire_some(st, NOW + 100, 1000, expired_seen_cb, &seen, &more), 0);
	ck_assert(!more);
}
END_TEST

/* The same with the store closed meanwhile (one open of an environment per process). */
static int expiry_times(const char *path, int64_t *at, int max)
{
	sa_store_close(st);
	st = NULL;
	int n = raw_expiry_times(path, at, max);
	open_store();
	return n;
}

/* How many binding keys trunk_id's trunk_latest list holds (-1: it has
 * none), read raw with the store closed; drop deletes the list. */
static int latest_len(const char *path, const char *trunk_id, bool drop)
{
	sa_store_close(st);
	st = NULL;
	MDB_env *env = raw_open(path);
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val k = { strlen(trunk_id), (void *)trunk_id }, v;
	int n = -1;

	ck_assert_int_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
	ck_assert_int_eq(mdb_dbi_open(txn, "trunk_latest", 0, &dbi), 0);
	if (mdb_get(txn, dbi, &k, &v) == 0) {
		const unsigned char *p = v.mv_data, *end = p + v.mv_size;
		for (n = 0; p < end; n++)
			p += 1 + *p;
		ck_assert(p == end);
		if (drop)
			ck_assert_int_eq(mdb_del(txn, dbi, &k, NULL), 0);
	}
	ck_assert_int_eq(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
	open_store();
	return n;
}

/* The contact of the trunk's latest live binding at now ("none", "error"). */
static const char *latest_contact(int64_t now)
{
	static struct sa_binding got;
	int rc = sa_store_binding_latest(st, trunk.id, now, NULL, NULL, &got);

	return rc == SA_STORE_OK ? got.contact : rc == SA_STORE_ENOTFOUND ? "none" : "error";
}

static void put_at(const struct sa_credential *cr, const char *contact, int64_t at, int64_t expires)
{
	struct sa_binding b = binding(cr->id, contact, at, expires);
	ck_assert_int_eq(sa_store_binding_put(st, &b, 0), SA_STORE_OK);
}

/* An inbound call's lookup: the trunk's most recently written live binding,
 * from its list of the latest writes (schema 7), or by walking the trunk
 * when none of those is live or it has no list. */
START_TEST(test_binding_latest_from_the_trunks_list)
{
	struct sa_credential a, b, c;
	char rdir[96], contact[64];

	snprintf(rdir, sizeof rdir, "%s/runtime", dir);
	create_cred(trunk.id, "pbx-a", &a);
	create_cred(trunk.id, "pbx-b", &b);
	create_cred(trunk.id, "pbx-c", &c);
	ck_assert_str_eq(latest_contact(NOW), "none");
	ck_assert_int_eq(latest_len(rdir, trunk.id, false), -1);
	put_at(&a, "sip:a@192.0.2.1", NOW, NOW + 3600);
	put_at(&b, "sip:b@192.0.2.2", NOW + 1, NOW + 3600);
	put_at(&c, "sip:c@192.0.2.3", NOW + 2, NOW + 3600);
	ck_assert_str_eq(latest_contact(NOW + 10), "sip:c@192.0.2.3");
	ck_assert_int_eq(latest_len(rdir, trunk.id, false), 3);
	/* a refresh puts its binding first */
	put_at(&a, "sip:a@192.0.2.1", NOW + 5, NOW + 3600);
	ck_assert_str_eq(latest_contact(NOW + 10), "sip:a@192.0.2.1");
	ck_assert_int_eq(latest_len(rdir, trunk.id, false), 3);
	/* it unregisters: the one written before it is the latest again */
	ck_assert_int_eq(sa_store_binding_delete(st, a.id, "sip:a@192.0.2.1"), SA_STORE_OK);
	ck_assert_str_eq(latest_contact(NOW + 10), "sip:c@192.0.2.3");
	ck_assert_int_eq(latest_len(rdir, trunk.id, false), 2);
	/* a latest binding that lapsed (and was not swept yet) is passed over */
	put_at(&b, "sip:b@192.0.2.2", NOW + 6, NOW + 20);
	ck_assert_str_eq(latest_contact(NOW + 10), "sip:b@192.0.2.2");
	ck_assert_str_eq(latest_contact(NOW + 30), "sip:c@192.0.2.3");
	/* ten contacts more: the list keeps the newest eight */
	for (int i = 0; i < 10; i++) {
		snprintf(contact, sizeof contact, "sip:c%d@192.0.2.3", i);
		put_at(&c, contact, NOW + 10 + i, NOW + 3600);
	}
	ck_assert_int_eq(latest_len(rdir, trunk.id, false), 8);
	ck_assert_str_eq(latest_contact(NOW + 30), "sip:c9@192.0.2.3");
	/* each of those eight removed in turn, newest first: the next is the latest */
	for (int i = 9; i >= 2; i--) {
		snprintf(contact, sizeof contact, "sip:c%d@192.0.2.3", i);
		ck_assert_int_eq(sa_store_binding_delete(st, c.id, contact), SA_STORE_OK);
		snprintf(contact, sizeof contact, "sip:c%d@192.0.2.3", i - 1);
		ck_assert_str_eq(latest_contact(NOW + 30), contact);
	}
	/* the list is empty: the walk found c1, by its updated_at */
	ck_assert_int_eq(latest_len(rdir, trunk.id, false), -1);
	/* a trunk without a list (a store before schema 7) is walked */
	put_at(&b, "sip:b@192.0.2.2", NOW + 40, NOW + 3600);
	ck_assert_int_eq(latest_len(rdir, trunk.id, true), 1);
	ck_assert_int_eq(latest_len(rdir, trunk.id, false), -1);
	ck_assert_str_eq(latest_contact(NOW + 50), "sip:b@192.0.2.2");
	ck_assert_str_eq(latest_contact(NOW + 7200), "none");
	/* a deleted credential's binding is passed over until its removal
	 * takes it off the list */
	ck_assert_int_eq(sa_store_credential_delete(st, trunk.id, b.id), SA_STORE_OK);
	put_at(&a, "sip:a@192.0.2.1", NOW + 60, NOW + 3600);
	ck_assert_str_eq(latest_contact(NOW + 70), "sip:a@192.0.2.1");
	ck_assert_int_eq(sa_store_credential_delete(st, trunk.id, a.id), SA_STORE_OK);
	ck_assert_int_eq(latest_len(rdir, trunk.id, false), 1);
	ck_assert_str_eq(latest_contact(NOW + 70), "sip:c1@192.0.2.3");
	uint64_t removed = 0;
	ck_assert_int_eq(sa_store_binding_purge_orphans(st, &removed), SA_STORE_OK);
	ck_assert_uint_eq(removed, 2);
	ck_assert_int_eq(latest_len(rdir, trunk.id, false), -1);
	ck_assert_str_eq(latest_contact(NOW + 70), "sip:c1@192.0.2.3");
	ck_assert_str_eq(latest_contact(NOW + 7200), "none");
}
END_TEST

/* accept for the lookup: a binding whose contact is not named in arg ("|a|b|") */
static bool not_named(const struct sa_binding *b, void *arg)
{
	char key[SA_CONTACT_MAX + 2];
	snprintf(key, sizeof key, "|%s|", b->contact);
	return strstr(arg, key) == NULL;
}

/* An inbound call's lookup passes over a binding it cannot reach now (its
 * connection gone): the latest it can, from the list or by the walk; the
 * latest live one when it can reach none. */
START_TEST(test_binding_latest_takes_one_it_can_reach)
{
	struct sa_credential a, b;
	char contact[64], dead[1024] = "|sip:b@192.0.2.2|";
	struct sa_binding got;

	create_cred(trunk.id, "pbx-a", &a);
	create_cred(trunk.id, "pbx-b", &b);
	put_at(&a, "sip:a@192.0.2.1", NOW, NOW + 3600);
	put_at(&b, "sip:b@192.0.2.2", NOW + 1, NOW + 3600);
	ck_assert_int_eq(sa_store_binding_latest(st, trunk.id, NOW + 10, not_named, "|sip:b@192.0.2.2|", &got),
	                 SA_STORE_OK);
	ck_assert_str_eq(got.contact, "sip:a@192.0.2.1");
	ck_assert_int_eq(sa_store_binding_latest(st, trunk.id, NOW + 10, not_named, "|none|", &got), SA_STORE_OK);
	ck_assert_str_eq(got.contact, "sip:b@192.0.2.2");
	/* ten newer ones it cannot reach: a is past the trunk's list of eight, the walk finds it */
	for (int i = 0; i < 10; i++) {
		snprintf(contact, sizeof contact, "sip:b%d@192.0.2.2", i);
		put_at(&b, contact, NOW + 2 + i, NOW + 3600);
		snprintf(dead + strlen(dead), sizeof dead - strlen(dead), "%s|", contact);
	}
	ck_assert_int_eq(sa_store_binding_latest(st, trunk.id, NOW + 20, not_named, dead, &got), SA_STORE_OK);
	ck_assert_str_eq(got.contact, "sip:a@192.0.2.1");
	/* a lapsed one it could reach is not taken: none left to reach, the latest live one */
	put_at(&a, "sip:a@192.0.2.1", NOW + 12, NOW + 30);
	ck_assert_int_eq(sa_store_binding_latest(st, trunk.id, NOW + 40, not_named, dead, &got), SA_STORE_OK);
	ck_assert_str_eq(got.contact, "sip:b9@192.0.2.2");
	ck_assert_int_eq(sa_store_binding_latest(st, trunk.id, NOW + 7200, not_named, dead, &got), SA_STORE_ENOTFOUND);
}
END_TEST

/* An inbound INVITE's registrations to try in turn: the trunk's live ones
 * it can reach, most recently written first, up to max; those it cannot
 * reach, lapsed or of a deleted credential left out. */
START_TEST(test_bindings_latest_in_turn)
{
	struct sa_credential a, b;
	struct sa_binding got[4];
	int n = -1;

	create_cred(trunk.id, "pbx-a", &a);
	create_cred(trunk.id, "pbx-b", &b);
	put_at(&a, "sip:a1@192.0.2.1", NOW, NOW + 3600);
	put_at(&b, "sip:b1@192.0.2.2", NOW + 1, NOW + 3600);
	put_at(&a, "sip:a2@192.0.2.1", NOW + 2, NOW + 30);
	put_at(&b, "sip:b2@192.0.2.2", NOW + 3, NOW + 3600);
	ck_assert_int_eq(sa_store_bindings_latest(st, trunk.id, NOW + 10, NULL, NULL, got, 4, &n), SA_STORE_OK);
	ck_assert_int_eq(n, 4);
	ck_assert_str_eq(got[0].contact, "sip:b2@192.0.2.2");
	ck_assert_str_eq(got[1].contact, "sip:a2@192.0.2.1");
	ck_assert_str_eq(got[2].contact, "sip:b1@192.0.2.2");
	ck_assert_str_eq(got[3].contact, "sip:a1@192.0.2.1");
	ck_assert_int_eq(sa_store_bindings_latest(st, trunk.id, NOW + 10, NULL, NULL, got, 2, &n), SA_STORE_OK);
	ck_assert_int_eq(n, 2);
	ck_assert_str_eq(got[1].contact, "sip:a2@192.0.2.1");
	/* a2 lapsed, b2 cannot be reached */
	ck_assert_int_eq(sa_store_bindings_latest(st, trunk.id, NOW + 40, not_named, "|sip:b2@192.0.2.2|", got, 4, &n),
	                 SA_STORE_OK);
	ck_assert_int_eq(n, 2);
	ck_assert_str_eq(got[0].contact, "sip:b1@192.0.2.2");
	ck_assert_str_eq(got[1].contact, "sip:a1@192.0.2.1");
	/* b's credential deleted: a's alone */
	ck_assert_int_eq(sa_store_credential_delete(st, trunk.id, b.id), SA_STORE_OK);
	ck_assert_int_eq(sa_store_bindings_latest(st, trunk.id, NOW + 40, NULL, NULL, got, 4, &n), SA_STORE_OK);
	ck_assert_int_eq(n, 1);
	ck_assert_str_eq(got[0].contact, "sip:a1@192.0.2.1");
	ck_assert_int_eq(sa_store_bindings_latest(st, trunk.id, NOW + 7200, NULL, NULL, got, 4, &n), SA_STORE_ENOTFOUND);
	ck_assert_int_eq(n, 0);
}
END_TEST

/* Rewrites the only binding record of runtime/ as schema 5 wrote it: tag 1,
 * without indexed_at (8 bytes after the tag and the other numbers: 2 + 4 +
 * 3 * 8 + 4). */
static void raw_binding_to_schema5(const char *path)
{
	enum { INDEXED_AT = 1 + 2 + 4 + 3 * 8 + 4 };
	unsigned char key[256], val[2048];
	MDB_env *env = raw_open(path);
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_cursor *cur;
	MDB_val k, v;

	ck_assert_int_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
	ck_assert_int_eq(mdb_dbi_open(txn, "bindings", 0, &dbi), 0);
	ck_assert_int_eq(mdb_cursor_open(txn, dbi, &cur), 0);
	ck_assert_int_eq(mdb_cursor_get(cur, &k, &v, MDB_FIRST), 0);
	ck_assert_uint_le(k.mv_size, sizeof key);
	ck_assert_uint_le(v.mv_size, sizeof val);
	ck_assert_uint_gt(v.mv_size, INDEXED_AT + 8);
	ck_assert_uint_eq(*(unsigned char *)v.mv_data, 2);
	memcpy(key, k.mv_data, k.mv_size);
	memcpy(val, v.mv_data, INDEXED_AT);
	memcpy(val + INDEXED_AT, (unsigned char *)v.mv_data + INDEXED_AT + 8, v.mv_size - INDEXED_AT - 8);
	val[0] = 1;
	mdb_cursor_close(cur);
	raw_put(txn, "bindings", key, k.mv_size, val, v.mv_size - 8);
	ck_assert_int_eq(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
}

/* A schema-5 record (no indexed_at) reads as before, its entry at its
 * expiry; its refresh writes schema 6's record and leaves that entry. */
START_TEST(test_binding_schema5_record_reads)
{
	struct sa_credential cr;
	struct sa_binding b, got;
	char rdir[96];
	unsigned char first;
	int64_t at[2];

	snprintf(rdir, sizeof rdir, "%s/runtime", dir);
	create_cred(trunk.id, PRODUCT_USER, &cr);
	b = binding(cr.id, "sip:pbx@192.0.2.7:5060", NOW, NOW + 60);
	snprintf(b.user_agent, sizeof b.user_agent, "Asterisk PBX 18.0.0");
	b.password_version = 3;
	ck_assert_int_eq(sa_store_binding_put(st, &b, 0), SA_STORE_OK);
	sa_store_close(st);
	st = NULL;
	raw_binding_to_schema5(rdir);
	ck_assert_uint_gt(raw_binding_size(rdir, &first), 0);
	ck_assert_uint_eq(first, 1);
	open_store();
	ck_assert_int_eq(sa_store_binding_list_credential(st, cr.id, version_binding_cb, &got), SA_STORE_OK);
	ck_assert_str_eq(got.user_agent, "Asterisk PBX 18.0.0");
	ck_assert_uint_eq(got.password_version, 3);
	ck_assert_int_eq(got.expires_at, NOW + 60);
	b.expires_at = NOW + 90;
	ck_assert_int_eq(sa_store_binding_put(st, &b, 0), SA_STORE_OK);
	ck_assert_int_eq(expiry_times(rdir, at, 2), 1);
	ck_assert_int_eq(at[0], NOW + 60);
	sa_store_close(st);
	st = NULL;
	ck_assert_uint_gt(raw_binding_size(rdir, &first), 0);
	ck_assert_uint_eq(first, 2);
	open_store();
	ck_assert_int_eq(sa_store_binding_expire(st, NOW + 70), 0);
	ck_assert_int_eq(sa_store_binding_expire(st, NOW + 90), 1);
}
END_TEST


/* Schema 6: a refresh that pushes the expiry on leaves the expiry entry
 * where it was; counts and sweeps read the record, and the sweep moves the
 * entry of a binding refreshed since instead of removing it. A refresh to
 * a sooner expiry moves the entry at once. */
START_TEST(test_binding_expiry_entry_lags_refreshes)
{
	enum { MANY = 2500 };   /* more than a sweep's batch (EXPIRE_BATCH) */
	struct sa_credential cr;
	struct sa_binding b;
	char rdir[96], contact[64];
	int64_t at[4];
	uint64_t count;
	int seen = 0;

	snprintf(rdir, sizeof rdir, "%s/runtime", dir);
	create_cred(trunk.id, PRODUCT_USER, &cr);
	b = binding(cr.id, "sip:pbx@192.0.2.10:5060", NOW, NOW + 60);
	ck_assert_int_eq(sa_store_binding_put(st, &b, 0), SA_STORE_OK);
	b.updated_at = NOW + 30;
	b.expires_at = NOW + 90;
	ck_assert_int_eq(sa_store_binding_put(st, &b, 0), SA_STORE_OK);
	ck_assert_int_eq(expiry_times(rdir, at, 4), 1);
	ck_assert_int_eq(at[0], NOW + 60);   /* the refresh did not write the expiry index */
	ck_assert_int_eq(sa_store_binding_count(st, NOW + 70, &count), SA_STORE_OK);
	ck_assert_uint_eq(count, 1);         /* due by its entry, alive by its record */
	ck_assert_int_eq(sa_store_binding_expire_each(st, NOW + 70, expired_seen_cb, &seen), 0);
	ck_assert_int_eq(seen, 0);
	ck_assert_int_eq(expiry_times(rdir, at, 4), 1);
	ck_assert_int_eq(at[0], NOW + 90);   /* the sweep moved it */
	b.expires_at = NOW + 75;              /* sooner: the entry follows at once */
	ck_assert_int_eq(sa_store_binding_put(st, &b, 0), SA_STORE_OK);
	ck_assert_int_eq(expiry_times(rdir, at, 4), 1);
	ck_assert_int_eq(at[0], NOW + 75);
	ck_assert_int_eq(sa_store_binding_count(st, NOW + 75, &count), SA_STORE_OK);
	ck_assert_uint_eq(count, 0);
	ck_assert_int_eq(sa_store_binding_expire_each(st, NOW + 75, expired_seen_cb, &seen), 1);
	ck_assert_int_eq(seen, 1);
	ck_assert_int_eq(expiry_times(rdir, at, 4), 0);

	/* many refreshed bindings: the sweep moves them all, batch after batch,
	 * and removes the one that did expire among them */
	for (int pass = 0; pass < 2; pass++)
		for (int i = 0; i < MANY; i++) {
			snprintf(contact, sizeof contact, "sip:pbx%d@192.0.2.10:5060", i);
			b = binding(cr.id, contact, NOW, NOW + (pass == 0 ? 60 : 3600));
			if (pass == 1 && i == MANY / 2)
				b.expires_at = NOW + 61;   /* pushed on, but not past the sweep */
			ck_assert_int_eq(sa_store_binding_put(st, &b, 0), SA_STORE_OK);
		}
	ck_assert_int_eq(expiry_times(rdir, at, 1), MANY);
	ck_assert_int_eq(at[0], NOW + 60);
	ck_assert_int_eq(sa_store_binding_count(st, NOW + 100, &count), SA_STORE_OK);
	ck_assert_uint_eq(count, MANY - 1);
	seen = 0;
	ck_assert_int_eq(sa_store_binding_expire_each(st, NOW + 100, expired_seen_cb, &seen), 1);
	ck_assert_int_eq(seen, 1);
	ck_assert_int_eq(expiry_times(rdir, at, 1), MANY - 1);
	ck_assert_int_eq(at[0], NOW + 3600);
	ck_assert_int_eq(sa_store_binding_count(st, NOW + 100, &count), SA_STORE_OK);
	ck_assert_uint_eq(count, MANY - 1);
	ck_assert_int_eq(sa_store_binding_delete_all(st, cr.id), SA_STORE_OK);   /* entries found by the record */
	ck_assert_int_eq(expiry_times(rdir, at, 1), 0);
}
END_TEST

/* Schema 3 writes bindings compact, every field kept; a schema-2 record
 * (the whole struct) reads as it is and is written compact when refreshed. */
START_TEST(test_bindings_are_written_compact)
{
	struct sa_credential cr;
	struct sa_binding b, got;
	char rdir[96], ua[SA_UA_MAX], contact[SA_CONTACT_MAX];
	unsigned char first;

	snprintf(rdir, sizeof rdir, "%s/runtime", dir);
	create_cred(trunk.id, PRODUCT_USER, &cr);
	memset(contact, 'c', sizeof contact - 1);   /* the longest strings fit */
	memcpy(contact, "sip:", 4);
	contact[sizeof contact - 1] = '\0';
	memset(ua, 'u', sizeof ua - 1);
	ua[sizeof ua - 1] = '\0';
	b = binding(cr.id, contact, NOW, NOW + 60);
	snprintf(b.user_agent, sizeof b.user_agent, "%s", ua);
	b.password_version = 7;
	b.cseq = 0xfffffffe;
	b.source_port = 65535;
	ck_assert_int_eq(sa_store_binding_put(st, &b, 0), SA_STORE_OK);
	ck_assert_int_eq(sa_store_binding_list_credential(st, cr.id, version_binding_cb, &got), SA_STORE_OK);
	ck_assert_str_eq(got.contact, contact);
	ck_assert_str_eq(got.user_agent, ua);
	ck_assert_str_eq(got.trunk_id, trunk.id);
	ck_assert_uint_eq(got.password_version, 7);
	ck_assert_uint_eq(got.cseq, 0xfffffffe);
	ck_assert_uint_eq(got.source_port, 65535);
	ck_assert_int_eq(got.expires_at, NOW + 60);
	ck_assert_int_eq(sa_store_binding_delete(st, cr.id, contact), SA_STORE_OK);

	b = binding(cr.id, "sip:pbx@192.0.2.7:5060;transport=udp", NOW, NOW + 60);
	snprintf(b.user_agent, sizeof b.user_agent, "Asterisk PBX 18.0.0");
	b.password_version = 2;
	ck_assert_int_eq(sa_store_binding_put(st, &b, 0), SA_STORE_OK);
	sa_store_close(st);
	st = NULL;
	ck_assert_uint_lt(raw_binding_size(rdir, &first), 200);
	ck_assert_uint_eq(first, 2);   /* schema 6's tag: the record says where its expiry entry is */
	raw_binding(rdir, &b, sizeof b);   /* as schema 2 wrote it */
	ck_assert_uint_eq(raw_binding_size(rdir, &first), sizeof b);
	open_store();
	ck_assert_int_eq(sa_store_binding_list_credential(st, cr.id, version_binding_cb, &got), SA_STORE_OK);
	ck_assert_str_eq(got.contact, b.contact);
	ck_assert_str_eq(got.user_agent, "Asterisk PBX 18.0.0");
	ck_assert_uint_eq(got.password_version, 2);
	ck_assert_int_eq(got.registered_at, NOW);
	b.updated_at = NOW + 30;
	b.expires_at = NOW + 90;
	ck_assert_int_eq(sa_store_binding_put(st, &b, 0), SA_STORE_OK);   /* the refresh writes it compact */
	ck_assert_int_eq(sa_store_binding_expire(st, NOW + 60), 0);      /* its old entry is found where it was */
	sa_store_close(st);
	st = NULL;
	ck_assert_uint_lt(raw_binding_size(rdir, &first), 200);
	ck_assert_uint_eq(first, 2);
	open_store();
	memset(&got, 0, sizeof got);   /* the expiry callback gets the record decoded */
	ck_assert_int_eq(sa_store_binding_expire_each(st, NOW + 90, version_binding_cb, &got), 1);
	ck_assert_str_eq(got.contact, b.contact);
	ck_assert_int_eq(got.expires_at, NOW + 90);
}
END_TEST

/* The size of cred_id's record in data.mdb; *first its first byte. */
static size_t raw_cred_size(const char *cred_id, unsigned char *first)
{
	MDB_env *env = raw_open(dir);
	MDB_txn *txn;
	MDB_val v;

	ck_assert_int_eq(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
	raw_cred_get(txn, cred_id, &v);
	size_t size = v.mv_size;
	*first = *(unsigned char *)v.mv_data;
	mdb_txn_abort(txn);
	mdb_env_close(env);
	return size;
}

/* struct cred_rec as schema 2 wrote it */
struct cred_rec_s2 {
	uint64_t seq;
	struct sa_credential c;
};

/* Schema 3 writes credentials compact, every field kept; a schema-2 record
 * (the whole struct) reads as it is and is written compact when it changes. */
START_TEST(test_credentials_are_written_compact)
{
	struct sa_credential cr, found, rot;
	char old[SA_ALG_COUNT][SA_DIGEST_HEX_MAX];
	unsigned char first;

	create_cred(trunk.id, PRODUCT_USER, &cr);
	sa_store_close(st);
	st = NULL;
	size_t fresh = raw_cred_size(cr.id, &first);
	ck_assert_uint_lt(fresh, 300);
	ck_assert_uint_eq(first, 1);
	open_store();
	ck_assert_int_eq(sa_store_credential_find(st, trunk.id, PRODUCT_USER, &found), SA_STORE_OK);
	ck_assert_mem_eq(&found, &cr, sizeof found);   /* every field, the HA1s and the zeros after them */
	ck_assert_int_eq(rotate(cr.id, NEW_PASSWORD, 600, NOW + 10, &rot, NULL, 0), SA_STORE_OK);
	ck_assert_int_eq(sa_store_credential_get(st, cr.id, &found), SA_STORE_OK);
	ck_assert_mem_eq(&found, &rot, sizeof found);
	ha1s_of(PRODUCT_PASSWORD, old);
	ck_assert_str_eq(found.previous_ha1[SA_ALG_SHA512_256], old[SA_ALG_SHA512_256]);
	ck_assert_int_eq(found.previous_until, NOW + 610);
	sa_store_close(st);
	st = NULL;
	ck_assert_uint_gt(raw_cred_size(cr.id, &first), fresh);   /* the previous HA1s */
	ck_assert_uint_lt(raw_cred_size(cr.id, &first), 500);

	/* as schema 2 wrote it: read, then rewritten compact by the next change */
	MDB_env *env = raw_open(dir);
	MDB_txn *txn;
	struct cred_rec_s2 r = { .seq = 0 };
	MDB_val v;
	ck_assert_int_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
	raw_cred_get(txn, cr.id, &v);
	memcpy(&r.seq, (unsigned char *)v.mv_data + 1, sizeof r.seq);
	r.c = rot;
	raw_cred_old(txn, &cr, &r, sizeof r);
	ck_assert_int_eq(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
	ck_assert_uint_eq(raw_cred_size(cr.id, &first), sizeof r);
	open_store();
	ck_assert_int_eq(sa_store_credential_find(st, trunk.id, PRODUCT_USER, &found), SA_STORE_OK);
	ck_assert_mem_eq(&found, &rot, sizeof found);
	ck_assert_int_eq(rotate(cr.id, PRODUCT_PASSWORD, 0, NOW + 20, &rot, NULL, 0), SA_STORE_OK);
	ck_assert_int_eq(sa_store_credential_get(st, cr.id, &found), SA_STORE_OK);
	ck_assert_uint_eq(found.password_version, 3);
	sa_store_close(st);
	st = NULL;
	ck_assert_uint_lt(raw_cred_size(cr.id, &first), 500);
	ck_assert_uint_eq(first, 1);
	open_store();
	ck_assert_int_eq(sa_store_credential_delete(st, trunk.id, cr.id), SA_STORE_OK);   /* its indexes found by seq */
	ck_assert_int_eq(sa_store_credential_find(st, trunk.id, PRODUCT_USER, &found), SA_STORE_ENOTFOUND);
}
END_TEST

static void schema_is(const char *want)
{
	MDB_env *env = raw_open(dir);
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val k = { strlen("schema_version"), (void *)"schema_version" }, v;

	ck_assert_int_eq(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
	ck_assert_int_eq(mdb_dbi_open(txn, "meta", 0, &dbi), 0);
	ck_assert_int_eq(mdb_get(txn, dbi, &k, &v), 0);
	ck_assert_uint_eq(v.mv_size, strlen(want));
	ck_assert_int_eq(memcmp(v.mv_data, want, v.mv_size), 0);
	mdb_txn_abort(txn);
	mdb_env_close(env);
}

/* What data.mdb holds for cred_id: under the id, the username's key (or,
 * before schema 4, the record); copied to out (outlen bytes at most). */
static size_t raw_cred_under_id(const char *cred_id, unsigned char *out, size_t outlen)
{
	MDB_env *env = raw_open(dir);
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val k = { strlen(cred_id), (void *)cred_id }, v;

	ck_assert_int_eq(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
	ck_assert_int_eq(mdb_dbi_open(txn, "credentials", 0, &dbi), 0);
	ck_assert_int_eq(mdb_get(txn, dbi, &k, &v), 0);
	ck_assert_uint_le(v.mv_size, outlen);
	memcpy(out, v.mv_data, v.mv_size);
	mdb_txn_abort(txn);
	mdb_env_close(env);
	return v.mv_size;
}

/* Writes name = value in main's meta. */
static void raw_put_meta(const char *name, const char *value)
{
	MDB_env *env = raw_open(dir);
	MDB_txn *txn;

	ck_assert_int_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
	raw_put(txn, "meta", name, strlen(name), value, strlen(value));
	ck_assert_int_eq(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
}

/* Puts cr back in the layout before schema 4 (the record under the id, the
 * id under the username); returns the record's length. */
static size_t raw_cred_to_old_layout(const struct sa_credential *cr)
{
	unsigned char rec[512];
	MDB_env *env = raw_open(dir);
	MDB_txn *txn;
	MDB_val v;

	ck_assert_int_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
	raw_cred_get(txn, cr->id, &v);
	ck_assert_uint_eq(*(unsigned char *)v.mv_data, 1);
	ck_assert_uint_le(v.mv_size, sizeof rec);
	size_t len = v.mv_size;
	memcpy(rec, v.mv_data, len);
	raw_cred_old(txn, cr, rec, len);
	ck_assert_int_eq(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
	return len;
}

/* Whether meta holds name. */
static bool raw_meta_has(const char *name)
{
	MDB_env *env = raw_open(dir);
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val k = { strlen(name), (void *)name }, v;

	ck_assert_int_eq(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
	ck_assert_int_eq(mdb_dbi_open(txn, "meta", 0, &dbi), 0);
	bool has = mdb_get(txn, dbi, &k, &v) == 0;
	mdb_txn_abort(txn);
	mdb_env_close(env);
	return has;
}

/* Schema 4 keeps the record under the username (one lookup for an
 * authentication) and the username's key under the id. A store of schema 3
 * (the record under the id, the id under the username) reads as it is; the
 * writable open that marks it 4 moves every record, and a move that was cut
 * short goes on at the next writable open. */
START_TEST(test_credential_record_under_username)
{
	struct sa_credential cr, cr2, found, rot;
	unsigned char under[512], uk[256], uk2[256];
	struct names n = { .n = 0 };
	struct sa_store *ro;

	create_cred(trunk.id, "Alice", &cr);
	create_cred(trunk.id, "bob", &cr2);
	sa_store_close(st);
	st = NULL;
	size_t uklen = raw_user_key(&cr, uk), uklen2 = raw_user_key(&cr2, uk2);
	ck_assert_uint_eq(raw_cred_under_id(cr.id, under, sizeof under), uklen);
	ck_assert_mem_eq(under, uk, uklen);

	/* a schema 3 store */
	size_t reclen = raw_cred_to_old_layout(&cr), reclen2 = raw_cred_to_old_layout(&cr2);
	set_schema_version("3");
	ck_assert_uint_eq(raw_cred_under_id(cr.id, under, sizeof under), reclen);
	ck_assert_int_eq(sa_store_open(&ro, dir, SA_STORE_RDONLY), SA_STORE_OK);
	ck_assert_int_eq(sa_store_credential_find(ro, trunk.id, "ALICE", &found), SA_STORE_OK);
	ck_assert_mem_eq(&found, &cr, sizeof found);
	ck_assert_int_eq(sa_store_credential_get(ro, cr.id, &found), SA_STORE_OK);
	ck_assert_mem_eq(&found, &cr, sizeof found);
	ck_assert_int_eq(sa_store_credential_find(ro, trunk.id, "bob", &found), SA_STORE_OK);
	ck_assert_mem_eq(&found, &cr2, sizeof found);
	sa_store_close(ro);
	schema_is("3");
	ck_assert_uint_eq(raw_cred_under_id(cr2.id, under, sizeof under), reclen2);

	/* the writable open marks the current version and moves both */
	open_store();
	sa_store_close(st);
	st = NULL;
	schema_is("7");
	ck_assert(!raw_meta_has("creds_to_move"));
	ck_assert_uint_eq(raw_cred_under_id(cr.id, under, sizeof under), uklen);
	ck_assert_mem_eq(under, uk, uklen);
	ck_assert_uint_eq(raw_cred_under_id(cr2.id, under, sizeof under), uklen2);
	ck_assert_mem_eq(under, uk2, uklen2);

	/* a move cut short: one record still under its id, the note still there */
	raw_cred_to_old_layout(&cr2);
	raw_put_meta("creds_to_move", "");
	ck_assert_uint_eq(raw_cred_under_id(cr2.id, under, sizeof under), reclen2);
	open_store();
	ck_assert(!raw_meta_has("creds_to_move"));
	ck_assert_uint_eq(raw_cred_under_id(cr2.id, under, sizeof under), uklen2);
	ck_assert_int_eq(sa_store_credential_list(st, trunk.id, cred_cb, &n), SA_STORE_OK);
	ck_assert_int_eq(n.n, 2);
	ck_assert_int_eq(rotate(cr.id, NEW_PASSWORD, 60, NOW, &rot, NULL, 0), SA_STORE_OK);
	ck_assert_int_eq(sa_store_credential_find(st, trunk.id, "alice", &found), SA_STORE_OK);
	ck_assert_mem_eq(&found, &rot, sizeof found);
	ck_assert_int_eq(sa_store_credential_get(st, cr.id, &found), SA_STORE_OK);
	ck_assert_mem_eq(&found, &rot, sizeof found);
	ck_assert_int_eq(sa_store_credential_delete(st, trunk.id, cr.id), SA_STORE_OK);
	ck_assert_int_eq(sa_store_credential_find(st, trunk.id, "alice", &found), SA_STORE_ENOTFOUND);
	ck_assert_int_eq(sa_store_credential_get(st, cr.id, &found), SA_STORE_ENOTFOUND);
	ck_assert_int_eq(sa_store_credential_get(st, cr2.id, &found), SA_STORE_OK);
	ck_assert_mem_eq(&found, &cr2, sizeof found);
}
END_TEST

/* A schema-1 store reads as it is: every credential and binding at version
 * 1, failures without one. A read-only open leaves it at 1; the first
 * writable open marks it 2; a rotation writes the new layout. */
START_TEST(test_schema_1_store_reads_and_upgrades)
{
	struct sa_credential cr, found;
	struct sa_binding b;
	struct sa_authfail f;
	struct sa_store *ro;
	char rdir[96], old[SA_ALG_COUNT][SA_DIGEST_HEX_MAX];

	records_of_versions("sip:old@192.0.2.1", 9, 9, &cr, &b, &f);
	sa_store_close(st);
	st = NULL;
	snprintf(rdir, sizeof rdir, "%s/runtime", dir);
	raw_cred_s1(&cr);
	raw_binding(rdir, &b, offsetof(struct sa_binding, password_version));
	raw_shrink(rdir, "authfail", offsetof(struct sa_authfail, password_version));
	set_schema_version("1");

	ck_assert_int_eq(sa_store_open(&ro, dir, SA_STORE_RDONLY), SA_STORE_OK);
	ck_assert_int_eq(sa_store_credential_get(ro, cr.id, &found), SA_STORE_OK);
	ck_assert_uint_eq(found.password_version, 1);
	ck_assert(!sa_credential_has_previous(&found));
	ck_assert_int_eq(found.rotated_at, 0);
	ck_assert_str_eq(found.ha1[SA_ALG_SHA512_256], cr.ha1[SA_ALG_SHA512_256]);
	sa_store_close(ro);
	schema_is("1");

	open_store();
	schema_is("7");
	ck_assert_int_eq(sa_store_credential_find(st, trunk.id, PRODUCT_USER, &found), SA_STORE_OK);
	ck_assert_uint_eq(found.password_version, 1);
	ck_assert_str_eq(found.previous_ha1[SA_ALG_MD5], "");
	ck_assert_int_eq(sa_store_binding_list_credential(st, cr.id, version_binding_cb, &b), SA_STORE_OK);
	ck_assert_uint_eq(b.password_version, 1);
	ck_assert_str_eq(b.contact, "sip:old@192.0.2.1");
	ck_assert_int_eq(sa_store_authfail_list(st, trunk.id, 0, 0, version_fail_cb, &f), SA_STORE_OK);
	ck_assert_int_eq(f.password_version, 0);
	ck_assert_str_eq(f.username, "x");
	ck_assert_int_eq(sa_store_binding_expire(st, NOW + 60), 1);   /* an old record is removed as well */
	ck_assert_int_eq(rotate(cr.id, NEW_PASSWORD, 60, NOW, NULL, NULL, 0), SA_STORE_OK);
	ha1s_of(PRODUCT_PASSWORD, old);
	ck_assert_int_eq(sa_store_credential_get(st, cr.id, &found), SA_STORE_OK);
	ck_assert_uint_eq(found.password_version, 2);
	ck_assert_str_eq(found.previous_ha1[SA_ALG_SHA256], old[SA_ALG_SHA256]);
	/* the store is 7 now: a schema this code does not know is still refused */
	sa_store_close(st);
	st = NULL;
	set_schema_version("8");
	ck_assert_int_eq(sa_store_open(&ro, dir, SA_STORE_RDONLY), SA_STORE_ESCHEMA);
	set_schema_version("7");
	open_store();
}
END_TEST

/* ---- a store made before the split ---- */

/* struct authfail_state, as store.c keeps it */
struct legacy_state {
	uint64_t next_seq;
	uint64_t count;
};

/* Writes what the single-environment layout kept in data.mdb: a binding
 * with its two index entries, and the failure log with its state. */
static void legacy_records(const struct sa_credential *cr)
{
	unsigned char k[256], h[SHA256_DIGEST_LENGTH];
	struct sa_binding b = binding(cr->id, "sip:legacy@192.0.2.50", NOW, NOW + 600);
	struct sa_authfail f = failure(trunk.id, NOW, "old-failure");
	struct legacy_state s = { 1, 1 };
	size_t n, bk;
	MDB_txn *txn;

	snprintf(b.trunk_id, sizeof b.trunk_id, "%s", trunk.id);
	MDB_env *env = raw_open(dir);
	ck_assert_int_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
	SHA256((const unsigned char *)b.contact, strlen(b.contact), h);
	bk = strlen(cr->id) + 1;
	memcpy(k, cr->id, bk);
	memcpy(k + bk, h, sizeof h);
	bk += sizeof h;
	raw_put(txn, "bindings", k, bk, &b, sizeof b);
	n = strlen(trunk.id) + 1;
	memmove(k + n, k, bk);
	memcpy(k, trunk.id, n);
	raw_put(txn, "bindings_by_trunk", k, n + bk, "", 1);
	memmove(k, k + n, bk);
	memmove(k + 9, k, bk);
	be64(k, (uint64_t)(NOW + 600) ^ ((uint64_t)1 << 63));
	k[8] = '\0';
	raw_put(txn, "bindings_by_expiry", k, 9 + bk, "", 1);
	n = strlen(trunk.id) + 1;
	memcpy(k, trunk.id, n);
	n += be64(k + n, 0);
	raw_put(txn, "authfail", k, n, &f, sizeof f);
	raw_put(txn, "authfail_state", trunk.id, strlen(trunk.id), &s, sizeof s);
	ck_assert_int_eq(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
}

static bool legacy_in_main(void)
{
	MDB_env *env = raw_open(dir);
	MDB_txn *txn;
	MDB_dbi dbi;
	bool any = false;

	ck_assert_int_eq(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
	for (const char **db = (const char *[]){ "bindings", "bindings_by_trunk", "bindings_by_expiry", "authfail",
	                                         "authfail_state", NULL }; *db != NULL; db++)
		any |= mdb_dbi_open(txn, *db, 0, &dbi) == 0;
	mdb_txn_abort(txn);
	mdb_env_close(env);
	return any;
}

/* The daemon's first open moves the bindings and the failure log out of
 * data.mdb; a second move (as after an interruption between its two
 * commits) adds nothing twice. */
START_TEST(test_open_moves_a_legacy_store)
{
	struct sa_credential cr;
	struct names n = { .n = 0 };
	uint64_t count;

	create_cred(trunk.id, PRODUCT_USER, &cr);
	sa_store_close(st);
	st = NULL;
	for (int round = 0; round < 2; round++) {
		legacy_records(&cr);
		ck_assert(legacy_in_main());
		/* sipauthctl's open leaves them where they are */
		ck_assert_int_eq(sa_store_open(&st, dir, 0), SA_STORE_OK);
		sa_store_close(st);
		ck_assert(legacy_in_main());
		open_store();
		sa_store_close(st);
		st = NULL;
		ck_assert(!legacy_in_main());
	}
	open_store();
	ck_assert_int_eq(sa_store_binding_list_credential(st, cr.id, binding_cb, &n), SA_STORE_OK);
	ck_assert_int_eq(n.n, 1);
	ck_assert_str_eq(n.v[0], "sip:legacy@192.0.2.50");
	n.n = 0;
	ck_assert_int_eq(sa_store_binding_list_trunk(st, trunk.id, binding_cb, &n), SA_STORE_OK);
	ck_assert_int_eq(n.n, 1);   /* the trunk index was rebuilt */
	ck_assert_int_eq(sa_store_binding_count(st, NOW, &count), SA_STORE_OK);
	ck_assert_uint_eq(count, 1);
	n.n = 0;
	struct sa_authfail f = failure(trunk.id, NOW + 1, "new-failure");
	ck_assert_int_eq(sa_store_authfail_add(st, &f, 5), SA_STORE_OK);
	ck_assert_int_eq(sa_store_authfail_list(st, trunk.id, 0, 0, authfail_cb, &n), SA_STORE_OK);
	ck_assert_int_eq(n.n, 2);   /* the log continues after the moved record */
	ck_assert_str_eq(n.v[0], "new-failure");
	ck_assert_str_eq(n.v[1], "old-failure");
	ck_assert_int_eq(sa_store_binding_expire(st, NOW + 600), 1);   /* the expiry index was rebuilt */
}
END_TEST

/* ---- storage under stress: open checks, reserved map, headroom, errors ---- */

#define SMALL_MAP ((uint64_t)2 << 20)

static char data_path[96];

static void setup_small(void)
{
	struct sa_store_opts o = { .flags = SA_STORE_RUNTIME, .map_size = SMALL_MAP };

	snprintf(dir, sizeof dir, "%s", "/tmp/test_store.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(data_path, sizeof data_path, "%s/data.mdb", dir);
	ck_assert_int_eq(sa_store_open_with(&st, dir, &o, NULL, 0), SA_STORE_OK);
	ck_assert_int_eq(sa_store_init(st, NULL), SA_STORE_OK);
	ck_assert_int_eq(sa_store_account_create(st, "Acme", NOW, &acc), SA_STORE_OK);
	ck_assert_int_eq(sa_store_trunk_create(st, acc.id, "main", NOW, &trunk), SA_STORE_OK);
}

static off_t file_size(const char *path)
{
	struct stat sb;

	ck_assert_int_eq(stat(path, &sb), 0);
	return sb.st_size;
}

/* Adds bindings of one credential until the store refuses one; how many went in. */
static int fill_with_bindings(const char *cred_id)
{
	char contact[64];
	int n = 0, rc;

	do {
		snprintf(contact, sizeof contact, "sip:fill-%d@192.0.2.10", n);
		struct sa_binding b = binding(cred_id, contact, NOW, NOW + 3600);
		rc = sa_store_binding_put(st, &b, 0);
		n += rc == SA_STORE_OK;
	} while (rc == SA_STORE_OK && n < 100000);
	ck_assert_int_eq(rc, SA_STORE_EMAPFULL);
	return n;
}

START_TEST(test_open_refuses_empty_data_file_and_leaves_it)
{
	char why[256] = "";
	struct sa_store_opts o = { .flags = 0, .map_size = 0 };
	struct sa_store *other = NULL;

	sa_store_close(st);
	st = NULL;
	snprintf(data_path, sizeof data_path, "%s/data.mdb", dir);
	ck_assert_int_eq(truncate(data_path, 0), 0);
	ck_assert_int_eq(sa_store_open_with(&other, dir, &o, why, sizeof why), SA_STORE_ECORRUPT);
	ck_assert_ptr_null(other);
	ck_assert_msg(strstr(why, "is empty (0 bytes)") != NULL, "why: %s", why);
	o.flags = SA_STORE_RDONLY;
	ck_assert_int_eq(sa_store_open_with(&other, dir, &o, why, sizeof why), SA_STORE_ECORRUPT);
	ck_assert_int_eq(file_size(data_path), 0);   /* not made into a fresh store */
}
END_TEST

START_TEST(test_open_refuses_truncated_data_file_without_growing_it)
{
	char why[256] = "";
	struct sa_store_opts o = { .flags = SA_STORE_RDONLY, .map_size = 0 };
	struct sa_store *other = NULL;
	struct sa_credential cr;

	create_cred(trunk.id, PRODUCT_USER, &cr);
	sa_store_close(st);
	st = NULL;
	ck_assert_int_eq(truncate(data_path, 3 * 4096), 0);
	ck_assert_int_eq(sa_store_open_with(&other, dir, &o, why, sizeof why), SA_STORE_ECORRUPT);
	ck_assert_msg(strstr(why, "is truncated: 12288 bytes, but its pages in use need ") != NULL, "why: %s", why);
	o.flags = 0;
	ck_assert_int_eq(sa_store_open_with(&other, dir, &o, why, sizeof why), SA_STORE_ECORRUPT);
	ck_assert_ptr_null(other);
	ck_assert_int_eq(file_size(data_path), 3 * 4096);   /* a writer did not grow it back */
}
END_TEST

START_TEST(test_writer_reserves_whole_map_on_disk)
{
	struct sa_store_usage u;
	struct stat sb;

	ck_assert_int_eq(sa_store_usage(st, &u), SA_STORE_OK);
	ck_assert(u.reserved);
	ck_assert_uint_eq(u.map_size, SMALL_MAP);
	ck_assert_int_eq(stat(data_path, &sb), 0);
	ck_assert_int_eq(sb.st_size, (off_t)SMALL_MAP);
	ck_assert_msg((uint64_t)sb.st_blocks * 512 >= SMALL_MAP, "only %lld bytes allocated",
	              (long long)sb.st_blocks * 512);
}
END_TEST

START_TEST(test_map_size_grows_and_never_shrinks)
{
	struct sa_store_opts o = { .flags = 0, .map_size = 4 * SMALL_MAP };
	struct sa_store_usage u;

	sa_store_close(st);
	ck_assert_int_eq(sa_store_open_with(&st, dir, &o, NULL, 0), SA_STORE_OK);
	sa_store_close(st);
	o.map_size = 0;   /* the store's own, as recorded by the last open */
	ck_assert_int_eq(sa_store_open_with(&st, dir, &o, NULL, 0), SA_STORE_OK);
	ck_assert_int_eq(sa_store_usage(st, &u), SA_STORE_OK);
	ck_assert_uint_eq(u.map_size, 4 * SMALL_MAP);
	sa_store_close(st);
	o.map_size = 2 * SMALL_MAP;
	ck_assert_int_eq(sa_store_open_with(&st, dir, &o, NULL, 0), SA_STORE_OK);
	ck_assert_int_eq(sa_store_usage(st, &u), SA_STORE_OK);
	ck_assert_uint_eq(u.map_size, 4 * SMALL_MAP);
	ck_assert_int_eq(file_size(data_path), (off_t)(4 * SMALL_MAP));
}
END_TEST

/* Adds credentials until the store refuses one; how many went in. */
static int fill_with_credentials(void)
{
	struct sa_credential cr;
	char user[32], why[160];
	int n = 0, rc;

	do {
		snprintf(user, sizeof user, "fill-%d", n);
		rc = sa_store_credential_create(st, trunk.id, user, PRODUCT_PASSWORD, strlen(PRODUCT_PASSWORD), 0, NOW,
		                                &cr, why, sizeof why);
		n += rc == SA_STORE_OK;
	} while (rc == SA_STORE_OK && n < 10000);
	ck_assert_int_eq(rc, SA_STORE_EMAPFULL);
	return n;
}

/* runtime/ full of bindings: new bindings and failure-log records are
 * refused, refreshes, expiry and deletes are not, and data.mdb still takes
 * credentials. */
START_TEST(test_headroom_refuses_new_records_but_not_deletes)
{
	struct sa_credential c1, c2, c3;
	struct sa_store_usage u;
	struct sa_store_fault f;
	struct sa_authfail af = { .at = NOW };
	uint64_t n;

	create_cred(trunk.id, "pbx-a", &c1);
	create_cred(trunk.id, "pbx-b", &c2);
	int added = fill_with_bindings(c1.id);
	ck_assert_int_gt(added, 50);
	ck_assert_int_eq(sa_store_runtime_usage(st, &u), SA_STORE_OK);
	ck_assert_uint_ge(u.percent, SA_STORE_HEADROOM_PERCENT);
	ck_assert_uint_lt(u.percent, 100);
	ck_assert_int_eq(sa_store_usage(st, &u), SA_STORE_OK);
	ck_assert_uint_lt(u.percent, 50);   /* the other file */
	sa_store_fault(st, &f);
	ck_assert_int_eq(f.err, SA_STORE_EMAPFULL);
	ck_assert(f.failing);
	ck_assert_uint_eq(f.failures, 1);
	ck_assert_msg(strstr(f.detail, "new records are refused above 90%") != NULL, "detail: %s", f.detail);

	/* every kind of new runtime record is refused... */
	snprintf(af.trunk_id, sizeof af.trunk_id, "%s", trunk.id);
	snprintf(af.username, sizeof af.username, "nobody");
	ck_assert_int_eq(sa_store_authfail_add(st, &af, 1000), SA_STORE_EMAPFULL);
	struct sa_binding b = binding(c2.id, "sip:new@192.0.2.20", NOW, NOW + 3600);
	ck_assert_int_eq(sa_store_binding_put(st, &b, 0), SA_STORE_EMAPFULL);
	/* ...while credentials, in data.mdb, still go in */
	create_cred(trunk.id, "pbx-c", &c3);

	/* a refresh, expiry and deletes are not refused */
	b = binding(c1.id, "sip:fill-0@192.0.2.10", NOW + 10, NOW + 10);
	b.cseq = 2;
	ck_assert_int_eq(sa_store_binding_put(st, &b, 0), SA_STORE_OK);
	sa_store_fault(st, &f);
	ck_assert(!f.failing);
	ck_assert_int_eq(sa_store_binding_expire(st, NOW + 10), 1);
	ck_assert_int_eq(sa_store_credential_delete(st, trunk.id, c1.id), SA_STORE_OK);
	ck_assert_int_eq(sa_store_binding_count(st, NOW, &n), SA_STORE_OK);
	ck_assert_uint_eq(n, 0);   /* its bindings are skipped at once... */
	uint64_t removed = 0;
	ck_assert_int_eq(sa_store_binding_purge_orphans(st, &removed), SA_STORE_OK);
	ck_assert_uint_eq(removed, (uint64_t)added - 1);   /* ...and removed by the purge */

	/* and the room they made is used again */
	ck_assert_int_eq(sa_store_runtime_usage(st, &u), SA_STORE_OK);
	ck_assert_uint_lt(u.percent, 50);
	b = binding(c2.id, "sip:new@192.0.2.20", NOW, NOW + 3600);
	ck_assert_int_eq(sa_store_binding_put(st, &b, 0), SA_STORE_OK);
	ck_assert_int_ge(fill_with_bindings(c2.id), added * 9 / 10);   /* freed pages are used again */
}
END_TEST

/* data.mdb full of credentials: new accounts, keys, trunks and credentials
 * are refused, deletes are not, and runtime/ still takes bindings. */
START_TEST(test_main_full_refuses_credentials_but_not_bindings)
{
	struct sa_credential c1, c2;
	struct sa_store_usage u;
	char key[SA_APIKEY_LEN + 1], why[160];
	struct sa_trunk t2;

	create_cred(trunk.id, "pbx-a", &c1);
	ck_assert_int_gt(fill_with_credentials(), 50);
	ck_assert_int_eq(sa_store_usage(st, &u), SA_STORE_OK);
	ck_assert_uint_ge(u.percent, SA_STORE_HEADROOM_PERCENT);
	ck_assert_int_eq(sa_store_credential_create(st, trunk.id, "pbx-b", PRODUCT_PASSWORD, strlen(PRODUCT_PASSWORD),
	                                            0, NOW, &c2, why, sizeof why), SA_STORE_EMAPFULL);
	ck_assert_int_eq(sa_store_account_create(st, "Other", NOW, &acc), SA_STORE_EMAPFULL);
	ck_assert_int_eq(sa_store_apikey_create(st, acc.id, NOW, key), SA_STORE_EMAPFULL);
	ck_assert_int_eq(sa_store_trunk_create(st, acc.id, "x", NOW, &t2), SA_STORE_EMAPFULL);
	struct sa_binding b = binding(c1.id, "sip:new@192.0.2.20", NOW, NOW + 3600);
	ck_assert_int_eq(sa_store_binding_put(st, &b, 0), SA_STORE_OK);
	struct sa_authfail af = failure(trunk.id, NOW, "nobody");
	ck_assert_int_eq(sa_store_authfail_add(st, &af, 1000), SA_STORE_OK);
	ck_assert_int_eq(sa_store_credential_delete(st, trunk.id, c1.id), SA_STORE_OK);
}
END_TEST

/* Another process grows the map and writes past the end of ours. */
static void grow_in_child(const char *cred_id, uint64_t map_size, uint64_t past)
{
	pid_t pid = fork();
	int status;

	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct sa_store_opts o = { .flags = SA_STORE_RUNTIME, .map_size = map_size };
		struct sa_store_usage u = { .used = 0 };
		struct sa_store *other;
		char contact[64];
		int rc = sa_store_open_with(&other, dir, &o, NULL, 0);
		for (int i = 0; rc == SA_STORE_OK && u.used <= past; i++) {
			snprintf(contact, sizeof contact, "sip:grown-%d@192.0.2.40", i);
			struct sa_binding b = binding(cred_id, contact, NOW, NOW + 3600);
			rc = sa_store_binding_put(other, &b, 0);
			if (rc == SA_STORE_OK)
				rc = sa_store_runtime_usage(other, &u);
		}
		_exit(rc == SA_STORE_OK ? 0 : 1);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* Both threads meet the grown map at once: one takes it up while the other
 * waits outside its transaction, and neither call fails. */
START_TEST(test_dup_threads_take_up_a_map_grown_by_another_process)
{
	struct sa_credential c1, cr;
	struct sa_store_usage u;
	struct sa_store *h2 = NULL;
	char contact[64];
	pthread_t t;

	create_cred(trunk.id, PRODUCT_USER, &c1);
	ck_assert_int_eq(sa_store_credential_find(st, trunk.id, PRODUCT_USER, &cr), SA_STORE_OK);
	ck_assert_int_eq(sa_store_dup(st, &h2), SA_STORE_OK);
	ck_assert_int_eq(sa_store_credential_find(h2, trunk.id, PRODUCT_USER, &cr), SA_STORE_OK);
	grow_in_child(c1.id, 4 * SMALL_MAP, SMALL_MAP + SMALL_MAP / 2);
	struct dup_work w = { .h = h2, .cred_id = c1.id, .trunk_id = trunk.id };
	ck_assert_int_eq(pthread_create(&t, NULL, dup_thread, &w), 0);
	for (int i = 0; i < DUP_ROUNDS; i++) {
		snprintf(contact, sizeof contact, "sip:main-%d@192.0.2.31", i);
		struct sa_binding b = binding(c1.id, contact, NOW, NOW + 3600);
		ck_assert_int_eq(sa_store_binding_put(st, &b, 0), SA_STORE_OK);
		ck_assert_int_eq(sa_store_credential_find(st, trunk.id, PRODUCT_USER, &cr), SA_STORE_OK);
	}
	ck_assert_int_eq(pthread_join(t, NULL), 0);
	ck_assert_msg(w.failures == 0, "%d calls failed in the second thread, first %s", w.failures, w.first);
	ck_assert_int_eq(sa_store_runtime_usage(st, &u), SA_STORE_OK);
	ck_assert_uint_eq(u.map_size, 4 * SMALL_MAP);
	ck_assert_uint_gt(u.used, SMALL_MAP);
	ck_assert_int_eq(sa_store_runtime_usage(h2, &u), SA_STORE_OK);
	ck_assert_uint_eq(u.map_size, 4 * SMALL_MAP);
	ck_assert_int_eq(sa_store_usage(h2, &u), SA_STORE_OK);
	ck_assert_uint_eq(u.map_size, 4 * SMALL_MAP);   /* data.mdb, recorded grown by the other process */
	sa_store_close(h2);
}
END_TEST

/* runtime/ is mapped and reserved like data.mdb. */
START_TEST(test_runtime_file_is_reserved_like_main)
{
	struct sa_store_usage u;
	char path[128];
	struct stat sb;

	ck_assert_int_eq(sa_store_runtime_usage(st, &u), SA_STORE_OK);
	ck_assert(u.reserved);
	ck_assert_uint_eq(u.map_size, SMALL_MAP);
	snprintf(path, sizeof path, "%s/runtime/data.mdb", dir);
	ck_assert_int_eq(stat(path, &sb), 0);
	ck_assert_int_eq(sb.st_size, (off_t)SMALL_MAP);
	ck_assert_msg((uint64_t)sb.st_blocks * 512 >= SMALL_MAP, "only %lld bytes allocated",
	              (long long)sb.st_blocks * 512);
	snprintf(path, sizeof path, "%s/runtime", dir);
	ck_assert_int_eq(stat(path, &sb), 0);
	ck_assert_int_eq(sb.st_mode & 0777, 0700);
}
END_TEST

/* sipauthctl --map-size grows data.mdb only (it never opens runtime/); the
 * daemon's runtime map follows, reserved on disk, and stays grown. */
START_TEST(test_runtime_map_follows_main_growth)
{
	struct sa_store_opts o = { .flags = 0, .map_size = 4 * SMALL_MAP };
	struct sa_store_usage u;
	char path[128];
	struct stat sb;
	int status;

	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct sa_store *admin;
		int rc = sa_store_open_with(&admin, dir, &o, NULL, 0);
		sa_store_close(admin);
		_exit(rc == SA_STORE_OK ? 0 : 1);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	snprintf(path, sizeof path, "%s/runtime/data.mdb", dir);
	ck_assert_int_eq(file_size(path), (off_t)SMALL_MAP);   /* the other process left runtime/ alone */
	ck_assert_int_eq(sa_store_usage(st, &u), SA_STORE_OK);
	ck_assert_uint_eq(u.map_size, 4 * SMALL_MAP);
	ck_assert_int_eq(sa_store_runtime_usage(st, &u), SA_STORE_OK);
	ck_assert_uint_eq(u.map_size, 4 * SMALL_MAP);
	ck_assert_int_eq(stat(path, &sb), 0);
	ck_assert_int_eq(sb.st_size, (off_t)(4 * SMALL_MAP));
	ck_assert((uint64_t)sb.st_blocks * 512 >= 4 * SMALL_MAP);
	sa_store_close(st);
	o.flags = SA_STORE_RUNTIME;
	o.map_size = 0;
	ck_assert_int_eq(sa_store_open_with(&st, dir, &o, NULL, 0), SA_STORE_OK);
	ck_assert_int_eq(sa_store_runtime_usage(st, &u), SA_STORE_OK);
	ck_assert_uint_eq(u.map_size, 4 * SMALL_MAP);
}
END_TEST

/* A truncated runtime/data.mdb is refused like data.mdb, by the daemon's
 * open only: sipauthctl does not read it. */
START_TEST(test_open_refuses_truncated_runtime_file)
{
	struct sa_store_opts o = { .flags = SA_STORE_RUNTIME, .map_size = 0 };
	struct sa_store *other = NULL;
	struct sa_credential cr;
	char path[128], why[256] = "";

	create_cred(trunk.id, PRODUCT_USER, &cr);
	for (int i = 0; i < 50; i++) {
		char contact[64];
		snprintf(contact, sizeof contact, "sip:t-%d@192.0.2.10", i);
		struct sa_binding b = binding(cr.id, contact, NOW, NOW + 3600);
		ck_assert_int_eq(sa_store_binding_put(st, &b, 0), SA_STORE_OK);
	}
	sa_store_close(st);
	st = NULL;
	snprintf(path, sizeof path, "%s/runtime/data.mdb", dir);
	ck_assert_int_eq(truncate(path, 3 * 4096), 0);
	ck_assert_int_eq(sa_store_open_with(&other, dir, &o, why, sizeof why), SA_STORE_ECORRUPT);
	ck_assert_ptr_null(other);
	ck_assert_msg(strstr(why, "runtime/data.mdb is truncated: 12288 bytes") != NULL, "why: %s", why);
	ck_assert_int_eq(file_size(path), 3 * 4096);
	o.flags = 0;
	ck_assert_int_eq(sa_store_open_with(&st, dir, &o, why, sizeof why), SA_STORE_OK);
	ck_assert_int_eq(sa_store_credential_find(st, trunk.id, PRODUCT_USER, &cr), SA_STORE_OK);
}
END_TEST

static int count_cb(const struct sa_binding *b, void *arg)
{
	(*(int *)arg)++;
	return 0;
}

START_TEST(test_binding_apply_is_all_or_nothing)
{
	struct sa_credential c1, c2;
	struct sa_binding b[3];
	int n = 0;

	create_cred(trunk.id, "pbx-a", &c1);
	create_cred(trunk.id, "pbx-b", &c2);
	b[0] = binding(c1.id, "sip:one@192.0.2.10", NOW, NOW + 3600);
	ck_assert_int_eq(sa_store_binding_put(st, &b[0], 0), SA_STORE_OK);

	/* over the contact limit once all changes are made: none is kept */
	b[0].cseq = 7;
	b[1] = binding(c1.id, "sip:two@192.0.2.10", NOW, NOW + 3600);
	b[2] = binding(c1.id, "sip:three@192.0.2.10", NOW, NOW + 3600);
	struct sa_binding_change ch[3] = { { b[0].contact, &b[0] }, { b[1].contact, &b[1] }, { b[2].contact, &b[2] } };
	ck_assert_int_eq(sa_store_binding_apply(st, c1.id, ch, 3, 2), SA_STORE_EFULL);
	ck_assert_int_eq(sa_store_binding_list_credential(st, c1.id, count_cb, &n), SA_STORE_OK);
	ck_assert_int_eq(n, 1);

	/* a full map: the refresh that came first in the request is not kept either */
	fill_with_bindings(c2.id);
	ck_assert_int_eq(sa_store_binding_apply(st, c1.id, ch, 3, 0), SA_STORE_EMAPFULL);
	struct names got = { .n = 0 };
	ck_assert_int_eq(sa_store_binding_list_credential(st, c1.id, binding_cb, &got), SA_STORE_OK);
	ck_assert_int_eq(got.n, 1);
	ck_assert_str_eq(got.v[0], "sip:one@192.0.2.10");

	/* removals and refreshes alone go through */
	struct sa_binding_change rm[2] = { { "sip:one@192.0.2.10", NULL }, { "sip:never@192.0.2.10", NULL } };
	ck_assert_int_eq(sa_store_binding_apply(st, c1.id, rm, 2, 0), SA_STORE_OK);
	n = 0;
	ck_assert_int_eq(sa_store_binding_list_credential(st, c1.id, count_cb, &n), SA_STORE_OK);
	ck_assert_int_eq(n, 0);
}
END_TEST

START_TEST(test_binding_count_is_live_bindings)
{
	struct sa_credential cr;
	uint64_t n = 99;

	create_cred(trunk.id, PRODUCT_USER, &cr);
	struct sa_binding b = binding(cr.id, "sip:a@192.0.2.10", NOW - 60, NOW);
	ck_assert_int_eq(sa_store_binding_put(st, &b, 0), SA_STORE_OK);
	b = binding(cr.id, "sip:b@192.0.2.10", NOW, NOW + 60);
	ck_assert_int_eq(sa_store_binding_put(st, &b, 0), SA_STORE_OK);
	/* the first has expired and is not swept yet: the API lists one */
	ck_assert_int_eq(sa_store_binding_count(st, NOW, &n), SA_STORE_OK);
	ck_assert_uint_eq(n, 1);
	ck_assert_int_eq(sa_store_binding_count(st, NOW - 1, &n), SA_STORE_OK);
	ck_assert_uint_eq(n, 2);
}
END_TEST

START_TEST(test_errors_name_their_cause)
{
	static const struct { int err; const char *text, *cause; } names[] = {
		{ SA_STORE_EMAPFULL, "store map full", "map_full" },
		{ SA_STORE_ENOSPC, "disk full", "disk_full" },
		{ SA_STORE_ECORRUPT, "store corrupted", "corrupted" },
		{ SA_STORE_EACCES, "permission denied", "permission" },
		{ SA_STORE_ESCHEMA, "incompatible store schema version", "version_mismatch" },
		{ SA_STORE_EIO, "store I/O error", "io" },
	};
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		ck_assert_str_eq(sa_store_strerror(names[i].err), names[i].text);
		ck_assert_str_eq(sa_store_cause(names[i].err), names[i].cause);
	}
}
END_TEST

START_TEST(test_map_size_parse)
{
	static const struct { const char *text; int rc; uint64_t bytes; } sizes[] = {
		{ "2097152", SA_STORE_OK, 2097152 }, { "2M", SA_STORE_OK, 2097152 }, { "64m", SA_STORE_OK, 64 << 20 },
		{ "1048576", SA_STORE_EINVAL, 0 }, { "1M", SA_STORE_EINVAL, 0 },
		{ "2G", SA_STORE_OK, (uint64_t)2 << 30 }, { "1T", SA_STORE_OK, (uint64_t)1 << 40 },
		{ "2048K", SA_STORE_OK, 2097152 }, { "2047K", SA_STORE_EINVAL, 0 }, { "2T", SA_STORE_EINVAL, 0 },
		{ "", SA_STORE_EINVAL, 0 }, { "G", SA_STORE_EINVAL, 0 }, { "-1G", SA_STORE_EINVAL, 0 },
		{ "1GB", SA_STORE_EINVAL, 0 }, { "1 G", SA_STORE_EINVAL, 0 }, { "1X", SA_STORE_EINVAL, 0 },
		{ "99999999999999999999", SA_STORE_EINVAL, 0 }, { "18014398509481984K", SA_STORE_EINVAL, 0 },
	};
	for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		uint64_t got = 0;
		ck_assert_msg(sa_store_size_parse(sizes[i].text, &got) == sizes[i].rc, "%s", sizes[i].text);
		if (sizes[i].rc == SA_STORE_OK)
			ck_assert_msg(got == sizes[i].bytes, "%s: %llu", sizes[i].text, (unsigned long long)got);
	}
}
END_TEST

START_TEST(test_open_names_permission_and_garbage)
{
	char why[256] = "";
	struct sa_store_opts o = { .flags = SA_STORE_RDONLY, .map_size = 0 };
	struct sa_store *other = NULL;
	FILE *f;

	sa_store_close(st);
	st = NULL;
	snprintf(data_path, sizeof data_path, "%s/data.mdb", dir);
	ck_assert_ptr_nonnull(f = fopen(data_path, "w"));
	for (int i = 0; i < 4 * 4096; i++)
		fputc('x', f);
	fclose(f);
	ck_assert_int_eq(sa_store_open_with(&other, dir, &o, why, sizeof why), SA_STORE_ECORRUPT);
	ck_assert_msg(strstr(why, "MDB_INVALID") != NULL, "why: %s", why);
	if (geteuid() == 0)
		return;   /* root opens anything */
	ck_assert_int_eq(chmod(data_path, 0), 0);
	ck_assert_int_eq(sa_store_open_with(&other, dir, &o, why, sizeof why), SA_STORE_EACCES);
	ck_assert_msg(strstr(why, "Permission denied") != NULL, "why: %s", why);
}
END_TEST

START_TEST(test_idempotent_answers_expire_and_are_pruned)
{
	unsigned char k1[SA_IDEM_HASH] = { 1 }, k2[SA_IDEM_HASH] = { 2 };
	struct sa_idem in = { .created_at = NOW, .status = 201, .location = "/v1/x", .body = "{}\n", .body_len = 3 };
	struct sa_idem out;

	in.fingerprint[0] = 7;
	ck_assert_int_eq(sa_store_idem_put(st, acc.id, k1, &in, NOW), SA_STORE_OK);
	ck_assert_int_eq(sa_store_idem_get(st, acc.id, k1, NOW + SA_STORE_IDEM_TTL - 1, &out), SA_STORE_OK);
	ck_assert_int_eq(out.status, 201);
	ck_assert_str_eq(out.body, "{}\n");
	ck_assert_str_eq(out.location, "/v1/x");
	ck_assert_int_eq(out.fingerprint[0], 7);
	free(out.body);
	ck_assert_int_eq(sa_store_idem_get(st, "acc_other", k1, NOW, &out), SA_STORE_ENOTFOUND);
	ck_assert_int_eq(sa_store_idem_get(st, acc.id, k1, NOW + SA_STORE_IDEM_TTL, &out), SA_STORE_ENOTFOUND);
	/* the next write a day later removes it for good */
	in.created_at = NOW + SA_STORE_IDEM_TTL;
	ck_assert_int_eq(sa_store_idem_put(st, acc.id, k2, &in, NOW + SA_STORE_IDEM_TTL), SA_STORE_OK);
	ck_assert_int_eq(sa_store_idem_get(st, acc.id, k1, NOW, &out), SA_STORE_ENOTFOUND);
	ck_assert_int_eq(sa_store_idem_get(st, acc.id, k2, NOW + SA_STORE_IDEM_TTL, &out), SA_STORE_OK);
	free(out.body);
}
END_TEST


/* ---- fleet mode: the mirror ---- */

/* A list of changes handed out one by one, as the feed does. */
struct changes {
	const struct sa_mirror_change *ch;
	size_t n, next;
	int fail_at;                 /* >= 0: the next call at this index fails */
	const char *const *keep;     /* a full resync: the credential ids kept */
};

static int changes_next(void *arg, struct sa_mirror_change *out)
{
	struct changes *c = arg;

	if ((int)c->next == c->fail_at)
		return SA_STORE_EINVAL;
	if (c->next == c->n)
		return 0;
	*out = c->ch[c->next++];
	return 1;
}

static bool changes_keep(void *arg, const char *cred_id)
{
	struct changes *c = arg;

	for (const char *const *k = c->keep; *k != NULL; k++)
		if (strcmp(*k, cred_id) == 0)
			return true;
	return false;
}

static struct sa_mirror_change mirror_cred(const char *id, const char *trunk_id, const char *user)
{
	struct sa_mirror_change ch = { .kind = SA_MIRROR_CREDENTIAL };

	snprintf(ch.cred.id, sizeof ch.cred.id, "%s", id);
	snprintf(ch.cred.trunk_id, sizeof ch.cred.trunk_id, "%s", trunk_id);
	snprintf(ch.cred.username, sizeof ch.cred.username, "%s", user);
	ch.cred.created_at = NOW;
	for (int alg = 0; alg < SA_ALG_COUNT; alg++)
		memset(ch.cred.ha1[alg], 'a' + alg, sa_digest_hex_len((enum sa_digest_alg)alg));
	return ch;
}

static int apply_list(const struct sa_mirror_change *ch, size_t n, uint64_t seq, const char *const *keep)
{
	struct changes c = { .ch = ch, .n = n, .fail_at = -1, .keep = keep };

	return sa_store_mirror_apply(st, changes_next, keep ? changes_keep : NULL, &c, seq);
}

START_TEST(test_mirror_applies_records_as_the_database_gave_them)
{
	struct sa_mirror_change ch[4] = { { .kind = SA_MIRROR_ACCOUNT }, { .kind = SA_MIRROR_APIKEY },
	                                  { .kind = SA_MIRROR_TRUNK } };
	const char *key = "tvx_sk_live_0123456789abcdefghijABCDEFGHIJ01";
	char found[SA_ID_MAX];
	struct sa_credential c;
	struct sa_trunk_policy p;
	struct sa_trunk t;
	uint64_t seq = 99, gen0, gen1;

	snprintf(ch[0].account.id, SA_ID_MAX, "acc_0000000000000db1");
	snprintf(ch[0].account.name, sizeof ch[0].account.name, "fleet");
	SHA256((const unsigned char *)key, strlen(key), ch[1].apikey.hash);
	snprintf(ch[1].apikey.account_id, SA_ID_MAX, "acc_0000000000000db1");
	snprintf(ch[2].trunk.id, SA_ID_MAX, "trunk_000000000000db1");
	snprintf(ch[2].trunk.account_id, SA_ID_MAX, "acc_0000000000000db1");
	sa_policy_default(&ch[2].policy);
	ch[2].policy.max_concurrent_calls = 7;
	ch[3] = mirror_cred("cred_000000000000db1", "trunk_000000000000db1", "Pbx-1");
	ck_assert_int_eq(sa_store_mirror_seq(st, &seq), SA_STORE_OK);
	ck_assert_uint_eq(seq, 0);
	ck_assert_int_eq(sa_store_generation(st, &gen0), SA_STORE_OK);
	ck_assert_int_eq(apply_list(ch, 4, 42, NULL), SA_STORE_OK);
	ck_assert_int_eq(sa_store_mirror_seq(st, &seq), SA_STORE_OK);
	ck_assert_uint_eq(seq, 42);
	ck_assert_int_eq(sa_store_generation(st, &gen1), SA_STORE_OK);
	ck_assert_uint_ne(gen0, gen1);
	ck_assert_int_eq(sa_store_apikey_account(st, key, strlen(key), found), SA_STORE_OK);
	ck_assert_str_eq(found, "acc_0000000000000db1");
	ck_assert_int_eq(sa_store_trunk_get(st, "trunk_000000000000db1", &t), SA_STORE_OK);
	ck_assert_int_eq(sa_store_trunk_policy_get(st, t.id, &p), SA_STORE_OK);
	ck_assert_int_eq(p.max_concurrent_calls, 7);
	ck_assert_int_eq(sa_store_credential_find(st, t.id, "pbx-1", &c), SA_STORE_OK);
	ck_assert_str_eq(c.id, "cred_000000000000db1");
	ck_assert_str_eq(c.ha1[SA_ALG_MD5], "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
	/* the same changes again (a replay after a crash between apply and ack) change nothing */
	ck_assert_int_eq(apply_list(ch, 4, 42, NULL), SA_STORE_OK);
	ck_assert_int_eq(sa_store_credential_find(st, t.id, "PBX-1", &c), SA_STORE_OK);
	ck_assert_str_eq(c.id, "cred_000000000000db1");
	/* a rotation in the database: the record is rewritten, the previous HA1s kept */
	memcpy(ch[3].cred.previous_ha1, ch[3].cred.ha1, sizeof ch[3].cred.ha1);
	memset(ch[3].cred.ha1[SA_ALG_MD5], 'f', 32);
	ch[3].cred.password_version = 2;
	ch[3].cred.previous_until = NOW + 60;
	ck_assert_int_eq(apply_list(&ch[3], 1, 43, NULL), SA_STORE_OK);
	ck_assert_int_eq(sa_store_credential_find(st, t.id, "pbx-1", &c), SA_STORE_OK);
	ck_assert_uint_eq(c.password_version, 2);
	ck_assert_str_eq(c.ha1[SA_ALG_MD5], "ffffffffffffffffffffffffffffffff");
	ck_assert_str_eq(c.previous_ha1[SA_ALG_MD5], "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
	ck_assert(sa_credential_previous_live(&c, NOW + 59));
}
END_TEST

START_TEST(test_mirror_deletes_leave_tombstones)
{
	struct sa_mirror_change ch[3];
	struct sa_credential c;
	struct deleted d = { .n = 0 };
	uint64_t last = 0;

	ch[0] = mirror_cred("cred_00000000000000a1", trunk.id, "pbx-a");
	ch[1] = mirror_cred("cred_00000000000000b1", trunk.id, "pbx-b");
	ck_assert_int_eq(apply_list(ch, 2, 2, NULL), SA_STORE_OK);
	/* deleted in the database, and its username taken by a new credential */
	ch[0] = (struct sa_mirror_change){ .kind = SA_MIRROR_CREDENTIAL_GONE };
	snprintf(ch[0].cred.id, SA_ID_MAX, "cred_00000000000000a1");
	snprintf(ch[0].cred.trunk_id, SA_ID_MAX, "%s", trunk.id);
	ch[1] = mirror_cred("cred_00000000000000b2", trunk.id, "PBX-B");
	ck_assert_int_eq(apply_list(ch, 2, 4, NULL), SA_STORE_OK);
	ck_assert_int_eq(sa_store_credential_get(st, "cred_00000000000000a1", &c), SA_STORE_ENOTFOUND);
	ck_assert_int_eq(sa_store_credential_get(st, "cred_00000000000000b1", &c), SA_STORE_ENOTFOUND);
	ck_assert_int_eq(sa_store_credential_find(st, trunk.id, "pbx-b", &c), SA_STORE_OK);
	ck_assert_str_eq(c.id, "cred_00000000000000b2");
	ck_assert_int_eq(sa_store_deleted_since(st, 0, deleted_cb, &d, &last), SA_STORE_OK);
	ck_assert_int_eq(d.n, 2);
	ck_assert_str_eq(d.id[0], "cred_00000000000000a1");
	ck_assert_str_eq(d.id[1], "cred_00000000000000b1");
	/* a delete the mirror never saw the record of is no error */
	ck_assert_int_eq(apply_list(ch, 1, 5, NULL), SA_STORE_OK);
}
END_TEST

START_TEST(test_mirror_full_resync_drops_what_the_database_lost)
{
	struct sa_mirror_change ch[3];
	const char *const keep[] = { "cred_00000000000000k1", "cred_00000000000000n1", NULL };
	struct sa_credential c;
	uint64_t seq;

	ch[0] = mirror_cred("cred_00000000000000k1", trunk.id, "keep");
	ch[1] = mirror_cred("cred_00000000000000g1", trunk.id, "gone");
	ck_assert_int_eq(apply_list(ch, 2, 10, NULL), SA_STORE_OK);
	ch[1] = mirror_cred("cred_00000000000000n1", trunk.id, "new");
	ck_assert_int_eq(apply_list(ch, 2, 500, keep), SA_STORE_OK);
	ck_assert_int_eq(sa_store_credential_get(st, "cred_00000000000000k1", &c), SA_STORE_OK);
	ck_assert_int_eq(sa_store_credential_get(st, "cred_00000000000000n1", &c), SA_STORE_OK);
	ck_assert_int_eq(sa_store_credential_get(st, "cred_00000000000000g1", &c), SA_STORE_ENOTFOUND);
	/* the store's own credential (made before this store was a mirror) is dropped too */
	ck_assert_int_eq(sa_store_credential_find(st, trunk.id, PRODUCT_USER, &c), SA_STORE_ENOTFOUND);
	ck_assert_int_eq(sa_store_mirror_seq(st, &seq), SA_STORE_OK);
	ck_assert_uint_eq(seq, 500);
}
END_TEST

START_TEST(test_mirror_apply_is_all_or_nothing)
{
	struct sa_mirror_change ch[2];
	struct changes bad = { .ch = ch, .n = 2, .fail_at = 1 };
	struct sa_credential c;
	uint64_t seq;

	ch[0] = mirror_cred("cred_00000000000000x1", trunk.id, "first");
	ch[1] = mirror_cred("cred_00000000000000x2", trunk.id, "second");
	ck_assert_int_eq(sa_store_mirror_apply(st, changes_next, NULL, &bad, 7), SA_STORE_EINVAL);
	ck_assert_int_eq(sa_store_credential_get(st, "cred_00000000000000x1", &c), SA_STORE_ENOTFOUND);
	ck_assert_int_eq(sa_store_mirror_seq(st, &seq), SA_STORE_OK);
	ck_assert_uint_eq(seq, 0);
	/* a record that breaks the store's rules is refused the same way */
	snprintf(ch[1].cred.username, sizeof ch[1].cred.username, "bad user");
	ck_assert_int_eq(apply_list(ch, 2, 8, NULL), SA_STORE_EINVAL);
	ck_assert_int_eq(sa_store_credential_get(st, "cred_00000000000000x1", &c), SA_STORE_ENOTFOUND);
}
END_TEST

static int webhook_cb(const struct sa_webhook *w, void *arg) { return collect(arg, w->id); }
static int delivery_cb(const struct sa_delivery *d, void *arg) { return collect(arg, d->id); }

static struct sa_mirror_change mirror_webhook(const char *id, const char *account_id)
{
	struct sa_mirror_change ch = { .kind = SA_MIRROR_WEBHOOK };

	snprintf(ch.webhook.id, sizeof ch.webhook.id, "%s", id);
	snprintf(ch.webhook.account_id, sizeof ch.webhook.account_id, "%s", account_id);
	snprintf(ch.webhook.url, sizeof ch.webhook.url, "https://h/%s", id);
	snprintf(ch.webhook.secret, sizeof ch.webhook.secret, "whsec_%s", id);
	ch.webhook.events = 4;
	ch.webhook.created_at = NOW;
	return ch;
}

/* Fleet mode: webhooks arrive from the database with their secret; a delete
 * drops their deliveries; a full resync drops those the database lost. */
START_TEST(test_mirror_webhooks)
{
	struct sa_mirror_change ch[2];
	const char *const keep[] = { "wh_00000000000000k1", NULL };
	char wh[1][SA_ID_MAX] = { "wh_00000000000000g1" }, ids[1][SA_ID_MAX];
	struct sa_webhook w;
	struct sa_delivery d;
	struct names n = { .n = 0 };

	ch[0] = mirror_webhook("wh_00000000000000k1", acc.id);
	ch[1] = mirror_webhook("wh_00000000000000g1", acc.id);
	ck_assert_int_eq(apply_list(ch, 2, 3, NULL), SA_STORE_OK);
	ck_assert_int_eq(sa_store_webhook_get(st, "wh_00000000000000k1", &w), SA_STORE_OK);
	ck_assert_str_eq(w.secret, "whsec_wh_00000000000000k1");
	ck_assert_int_eq(sa_store_webhook_list_after(st, acc.id, NULL, webhook_cb, &n), SA_STORE_OK);
	ck_assert_int_eq(n.n, 2);
	/* applied again (a replay): still two, once each */
	ck_assert_int_eq(apply_list(ch, 2, 3, NULL), SA_STORE_OK);
	n.n = 0;
	ck_assert_int_eq(sa_store_webhook_list_after(st, acc.id, NULL, webhook_cb, &n), SA_STORE_OK);
	ck_assert_int_eq(n.n, 2);
	/* a delete takes its pending deliveries along */
	ck_assert_int_eq(sa_store_delivery_add(st, (const char (*)[SA_ID_MAX])wh, 1, "auth.failed", "{}", 2, NOW, ids),
	                 SA_STORE_OK);
	ch[1].kind = SA_MIRROR_WEBHOOK_GONE;
	ck_assert_int_eq(apply_list(&ch[1], 1, 4, NULL), SA_STORE_OK);
	ck_assert_int_eq(sa_store_webhook_get(st, "wh_00000000000000g1", &w), SA_STORE_ENOTFOUND);
	ck_assert_int_eq(sa_store_delivery_get(st, ids[0], &d), SA_STORE_ENOTFOUND);
	ck_assert_int_eq(apply_list(&ch[1], 1, 5, NULL), SA_STORE_OK);   /* gone already: no error */
	/* a full resync keeps what the database holds, drops the store's own */
	ck_assert_int_eq(sa_store_webhook_create(st, acc.id, "https://h/own", 1, NOW, &w), SA_STORE_OK);
	ck_assert_int_eq(apply_list(ch, 1, 9, keep), SA_STORE_OK);
	ck_assert_int_eq(sa_store_webhook_get(st, w.id, &w), SA_STORE_ENOTFOUND);
	ck_assert_int_eq(sa_store_webhook_get(st, "wh_00000000000000k1", &w), SA_STORE_OK);
}
END_TEST

/* Fleet mode: delivery ids are random, not the store's sequence. */
START_TEST(test_delivery_ids_random)
{
	struct sa_webhook w;
	char wh[1][SA_ID_MAX], ids[3][SA_ID_MAX];

	ck_assert_int_eq(sa_store_webhook_create(st, acc.id, "https://h/a", 1, NOW, &w), SA_STORE_OK);
	memcpy(wh[0], w.id, SA_ID_MAX);
	ck_assert_int_eq(sa_store_delivery_add(st, (const char (*)[SA_ID_MAX])wh, 1, "auth.failed", "{}", 2, NOW, ids),
	                 SA_STORE_OK);
	ck_assert_str_eq(ids[0], "dlv_0000000000000001");
	sa_store_delivery_ids_random(st);
	ck_assert_int_eq(sa_store_delivery_add(st, (const char (*)[SA_ID_MAX])wh, 1, "auth.failed", "{}", 2, NOW, ids + 1),
	                 SA_STORE_OK);
	ck_assert_int_eq(sa_store_delivery_add(st, (const char (*)[SA_ID_MAX])wh, 1, "auth.failed", "{}", 2, NOW, ids + 2),
	                 SA_STORE_OK);
	ck_assert_uint_eq(strlen(ids[1]), 20);
	ck_assert_int_eq(strncmp(ids[1], "dlv_", 4), 0);
	ck_assert_str_ne(ids[1], "dlv_0000000000000002");
	ck_assert_str_ne(ids[1], ids[2]);
}
END_TEST

START_TEST(test_webhooks_per_account_with_a_secret_each)
{
	struct sa_webhook a, b, got;
	struct sa_account other;
	struct names n = { .n = 0 };
	uint64_t count;

	ck_assert_int_eq(sa_store_webhook_create(st, acc.id, "https://h/a", 5, NOW, &a), SA_STORE_OK);
	ck_assert_int_eq(sa_store_webhook_create(st, acc.id, "https://h/b", 1, NOW, &b), SA_STORE_OK);
	ck_assert(id_looks_like(a.id, "wh_"));
	ck_assert_str_ne(a.secret, b.secret);
	ck_assert_uint_eq(strlen(a.secret), 6 + 43);
	ck_assert_int_eq(strncmp(a.secret, "whsec_", 6), 0);
	ck_assert_int_eq(sa_store_webhook_get(st, a.id, &got), SA_STORE_OK);
	ck_assert_str_eq(got.secret, a.secret);
	ck_assert_str_eq(got.url, "https://h/a");
	ck_assert_uint_eq(got.events, 5);
	ck_assert_int_eq(sa_store_webhook_create(st, "acc_nobody", "https://h/c", 1, NOW, &got), SA_STORE_ENOTFOUND);
	ck_assert_int_eq(sa_store_account_create(st, "other", NOW, &other), SA_STORE_OK);
	ck_assert_int_eq(sa_store_webhook_list_after(st, other.id, NULL, webhook_cb, &n), SA_STORE_OK);
	ck_assert_int_eq(n.n, 0);
	ck_assert_int_eq(sa_store_webhook_list_after(st, acc.id, NULL, webhook_cb, &n), SA_STORE_OK);
	ck_assert_int_eq(n.n, 2);
	ck_assert_str_lt(n.v[0], n.v[1]);   /* id order */
	const char *first = strcmp(a.id, b.id) < 0 ? a.id : b.id, *second = first == a.id ? b.id : a.id;
	n.n = 0;
	ck_assert_int_eq(sa_store_webhook_list_after(st, acc.id, first, webhook_cb, &n), SA_STORE_OK);
	ck_assert_int_eq(n.n, 1);
	ck_assert_str_eq(n.v[0], second);
	ck_assert_int_eq(sa_store_webhook_list_after(st, acc.id, "wh_gone", webhook_cb, &n), SA_STORE_EINVAL);
	ck_assert_int_eq(sa_store_webhook_list_after(st, other.id, a.id, webhook_cb, &n), SA_STORE_EINVAL);
	ck_assert_int_eq(sa_store_webhook_delete(st, other.id, a.id), SA_STORE_ENOTFOUND);   /* not its own */
	ck_assert_int_eq(sa_store_webhook_count(st, &count), SA_STORE_OK);
	ck_assert_uint_eq(count, 2);
	ck_assert_int_eq(sa_store_webhook_delete(st, acc.id, a.id), SA_STORE_OK);
	ck_assert_int_eq(sa_store_webhook_get(st, a.id, &got), SA_STORE_ENOTFOUND);
	ck_assert_int_eq(sa_store_webhook_count(st, &count), SA_STORE_OK);
	ck_assert_uint_eq(count, 1);
}
END_TEST

START_TEST(test_deliveries_due_updated_listed_and_removed)
{
	struct sa_webhook a, b;
	char ids[2][SA_ID_MAX], due[4][SA_ID_MAX];
	struct sa_delivery d;
	struct names n = { .n = 0 };
	unsigned nd, removed;
	int64_t next;

	ck_assert_int_eq(sa_store_webhook_create(st, acc.id, "https://h/a", 1, NOW, &a), SA_STORE_OK);
	ck_assert_int_eq(sa_store_webhook_create(st, acc.id, "https://h/b", 1, NOW, &b), SA_STORE_OK);
	char wh[2][SA_ID_MAX];
	snprintf(wh[0], SA_ID_MAX, "%s", a.id);
	snprintf(wh[1], SA_ID_MAX, "%s", b.id);
	ck_assert_int_eq(sa_store_delivery_add(st, (const char (*)[SA_ID_MAX])wh, 2, "auth.failed", "{\"x\":1}", 7, NOW,
	                                       ids), SA_STORE_OK);
	ck_assert_str_eq(ids[0], "dlv_0000000000000001");
	ck_assert_str_eq(ids[1], "dlv_0000000000000002");
	ck_assert_int_eq(sa_store_delivery_due(st, NOW, due, 4, &nd, &next), SA_STORE_OK);
	ck_assert_uint_eq(nd, 2);
	ck_assert_int_eq(next, INT64_MAX);
	ck_assert_int_eq(sa_store_delivery_get(st, ids[0], &d), SA_STORE_OK);
	ck_assert_str_eq(d.payload, "{\"x\":1}");
	ck_assert_str_eq(d.webhook_id, a.id);
	ck_assert_str_eq(d.event, "auth.failed");
	ck_assert_int_eq(d.status, SA_DLV_PENDING);
	free(d.payload);
	/* one delivered, one to try again in 10 s */
	d.status = SA_DLV_DELIVERED;
	d.attempts = 1;
	d.last_status_code = 204;
	ck_assert_int_eq(sa_store_delivery_update(st, &d), SA_STORE_OK);
	ck_assert_int_eq(sa_store_delivery_get(st, ids[1], &d), SA_STORE_OK);
	free(d.payload);
	d.attempts = 1;
	d.last_status_code = 500;
	snprintf(d.last_error, sizeof d.last_error, "HTTP 500");
	d.next_attempt_at = NOW + 10;
	ck_assert_int_eq(sa_store_delivery_update(st, &d), SA_STORE_OK);
	ck_assert_int_eq(sa_store_delivery_due(st, NOW, due, 4, &nd, &next), SA_STORE_OK);
	ck_assert_uint_eq(nd, 0);
	ck_assert_int_eq(next, NOW + 10);
	ck_assert_int_eq(sa_store_delivery_due(st, NOW + 10, due, 4, &nd, &next), SA_STORE_OK);
	ck_assert_uint_eq(nd, 1);
	ck_assert_str_eq(due[0], ids[1]);
	ck_assert_int_eq(sa_store_delivery_get(st, ids[0], &d), SA_STORE_OK);
	ck_assert_int_eq(d.status, SA_DLV_DELIVERED);
	ck_assert_int_eq(d.last_status_code, 204);
	free(d.payload);
	ck_assert_int_eq(sa_store_delivery_list_after(st, a.id, NULL, delivery_cb, &n), SA_STORE_OK);
	ck_assert_int_eq(n.n, 1);
	ck_assert_str_eq(n.v[0], ids[0]);
	ck_assert_int_eq(sa_store_delivery_list_after(st, a.id, ids[1], delivery_cb, &n), SA_STORE_EINVAL);
	/* the finished one is pruned once old enough; the pending one stays */
	ck_assert_int_eq(sa_store_delivery_prune(st, NOW, 10, &removed), SA_STORE_OK);
	ck_assert_uint_eq(removed, 0);
	ck_assert_int_eq(sa_store_delivery_prune(st, NOW + 1, 10, &removed), SA_STORE_OK);
	ck_assert_uint_eq(removed, 1);
	ck_assert_int_eq(sa_store_delivery_get(st, ids[0], &d), SA_STORE_ENOTFOUND);
	/* deleting a webhook takes its deliveries, pending ones included, off the due list */
	ck_assert_int_eq(sa_store_webhook_delete(st, acc.id, b.id), SA_STORE_OK);
	ck_assert_int_eq(sa_store_delivery_get(st, ids[1], &d), SA_STORE_ENOTFOUND);
	ck_assert_int_eq(sa_store_delivery_due(st, NOW + 100, due, 4, &nd, &next), SA_STORE_OK);
	ck_assert_uint_eq(nd, 0);
}
END_TEST

/* A store made before webhooks: read-only it has none; a writable open adds them. */
START_TEST(test_store_without_webhooks_reads_as_none)
{
	static const char *const dbs[] = { "webhooks", "webhooks_by_account", "deliveries", "dlv_by_webhook",
	                                   "dlv_due" };
	struct names n = { .n = 0 };
	struct sa_webhook w;
	struct sa_store *ro;
	uint64_t count = 9;
	MDB_txn *txn;
	MDB_dbi dbi;

	sa_store_close(st);
	st = NULL;
	MDB_env *env = raw_open(dir);
	ck_assert_int_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
	for (size_t i = 0; i < sizeof dbs / sizeof dbs[0]; i++) {
		ck_assert_int_eq(mdb_dbi_open(txn, dbs[i], 0, &dbi), 0);
		ck_assert_int_eq(mdb_drop(txn, dbi, 1), 0);
	}
	ck_assert_int_eq(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
	ck_assert_int_eq(sa_store_open(&ro, dir, SA_STORE_RDONLY), SA_STORE_OK);
	ck_assert_int_eq(sa_store_webhook_count(ro, &count), SA_STORE_OK);
	ck_assert_uint_eq(count, 0);
	ck_assert_int_eq(sa_store_webhook_list_after(ro, acc.id, NULL, webhook_cb, &n), SA_STORE_OK);
	ck_assert_int_eq(n.n, 0);
	ck_assert_int_eq(sa_store_webhook_get(ro, "wh_x", &w), SA_STORE_ENOTFOUND);
	sa_store_close(ro);
	open_store();
	ck_assert_int_eq(sa_store_webhook_create(st, acc.id, "https://h/a", 1, NOW, &w), SA_STORE_OK);
	ck_assert_int_eq(sa_store_webhook_count(st, &count), SA_STORE_OK);
	ck_assert_uint_eq(count, 1);
}
END_TEST

static Suite *store_suite(void)
{
	Suite *s = suite_create("store");
	TCase *empty = tcase_create("uninitialised");
	TCase *tc = tcase_create("initialised");

	tcase_add_checked_fixture(empty, setup_empty, teardown);
	tcase_add_test(empty, test_uninitialised_store_answers_enotinit);
	tcase_add_test(empty, test_rdonly_open_of_missing_store_is_enotinit);
	tcase_add_test(empty, test_init_records_domain_once);
	tcase_add_test(empty, test_init_default_domain);
	tcase_add_test(empty, test_init_refuses_bad_domains);
	tcase_add_test(empty, test_schema_mismatch_refused);
	tcase_add_test(empty, test_realm_is_literal_trunk_id);
	tcase_add_test(empty, test_errors_name_their_cause);
	tcase_add_test(empty, test_map_size_parse);
	tcase_add_test(empty, test_open_names_permission_and_garbage);
	suite_add_tcase(s, empty);

	TCase *small = tcase_create("small_map");
	tcase_add_checked_fixture(small, setup_small, teardown);
	tcase_set_timeout(small, 60);
	tcase_add_test(small, test_open_refuses_empty_data_file_and_leaves_it);
	tcase_add_test(small, test_open_refuses_truncated_data_file_without_growing_it);
	tcase_add_test(small, test_writer_reserves_whole_map_on_disk);
	tcase_add_test(small, test_map_size_grows_and_never_shrinks);
	tcase_add_test(small, test_headroom_refuses_new_records_but_not_deletes);
	tcase_add_test(small, test_main_full_refuses_credentials_but_not_bindings);
	tcase_add_test(small, test_runtime_file_is_reserved_like_main);
	tcase_add_test(small, test_runtime_map_follows_main_growth);
	tcase_add_test(small, test_open_refuses_truncated_runtime_file);
	tcase_add_test(small, test_binding_apply_is_all_or_nothing);
	tcase_add_test(small, test_binding_count_is_live_bindings);
	tcase_add_test(small, test_dup_threads_take_up_a_map_grown_by_another_process);
	suite_add_tcase(s, small);

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_nonce_secret_created_once_and_kept);
	tcase_add_test(tc, test_account_create_and_get);
	tcase_add_test(tc, test_account_name_rules);
	tcase_add_test(tc, test_apikey_create_and_lookup);
	tcase_add_test(tc, test_apikey_unknown_and_malformed);
	tcase_add_test(tc, test_apikey_listed_and_revoked_by_id);
	tcase_add_test(tc, test_trunk_create_get_list_in_order);
	tcase_add_test(tc, test_trunk_unknown_account);
	tcase_add_test(tc, test_credential_product_example_and_ha1);
	tcase_add_test(tc, test_credential_ha1_uses_store_domain);
	tcase_add_test(tc, test_credential_duplicate_username_ignoring_case);
	tcase_add_test(tc, test_credential_unknown_trunk);
	tcase_add_loop_test(tc, test_credential_validation_rules, 0, (int)(sizeof rules / sizeof rules[0]));
	tcase_add_test(tc, test_password_length_limits);
	tcase_add_test(tc, test_credential_create_reports_validation);
	tcase_add_test(tc, test_credential_find_get_case_insensitive);
	tcase_add_test(tc, test_credential_list_creation_order);
	tcase_add_test(tc, test_credential_delete_removes_it_and_bindings);
	tcase_add_test(tc, test_binding_put_refresh_list);
	tcase_add_test(tc, test_binding_refresh_keeps_registered_at);
	tcase_add_test(tc, test_binding_apply_for_and_list_for);
	tcase_add_test(tc, test_binding_max_contacts);
	tcase_add_test(tc, test_binding_lists_delete_expire);
	tcase_add_test(tc, test_binding_needs_existing_credential);
	tcase_add_test(tc, test_authfail_bounded_newest_first);
	tcase_add_test(tc, test_authfail_unknown_trunk_not_stored);
	tcase_add_test(tc, test_generation_changes_on_config_writes_only);
	tcase_add_test(tc, test_rotate_keeps_the_old_password_for_the_overlap);
	tcase_add_test(tc, test_rotate_again_drops_the_oldest_password);
	tcase_add_test(tc, test_rotate_refuses_bad_input_and_changes_nothing);
	tcase_add_test(tc, test_rotated_password_never_in_files);
	tcase_add_test(tc, test_binding_and_failure_keep_password_version);
	tcase_add_test(tc, test_schema_1_store_reads_and_upgrades);
	tcase_add_test(tc, test_reopen_keeps_everything);
	tcase_add_test(tc, test_rdonly_reads_but_does_not_write);
	tcase_add_test(tc, test_find_sees_writes_by_another_process);
	tcase_add_test(tc, test_password_and_key_never_in_files);
	tcase_add_test(tc, test_dup_handle_works_from_a_second_thread);
	tcase_add_test(tc, test_tombstones_name_deleted_credentials_in_order);
	tcase_add_test(tc, test_tombstones_keep_the_newest_100000);
	tcase_add_test(tc, test_credential_index_answers_as_the_tree);
	tcase_add_test(tc, test_credential_index_follows_another_process);
	tcase_add_test(tc, test_credential_index_rebuilt_past_the_log);
	tcase_add_test(tc, test_credential_index_refresh_catches_up);
	tcase_add_test(tc, test_credential_index_bulk_is_left_to_the_refresh);
	tcase_add_test(tc, test_credential_index_shared_by_threads);
	tcase_add_test(tc, test_change_log_keeps_the_newest_100000);
	tcase_add_test(tc, test_credential_index_leaves_data_mdb_unmapped);
	tcase_add_test(tc, test_store_without_tombstones_reads_as_none);
	tcase_add_test(tc, test_deleted_credentials_bindings_are_skipped_then_purged);
	tcase_add_test(tc, test_tombstones_lead_to_the_bindings);
	tcase_add_test(tc, test_purged_position_is_kept_in_runtime);
	tcase_add_test(tc, test_bindings_are_written_compact);
	tcase_add_test(tc, test_binding_expiry_entry_lags_refreshes);
	tcase_add_test(tc, test_binding_schema5_record_reads);
	tcase_add_test(tc, test_binding_latest_from_the_trunks_list);
	tcase_add_test(tc, test_binding_latest_takes_one_it_can_reach);
	tcase_add_test(tc, test_bindings_latest_in_turn);
	tcase_add_test(tc, test_binding_expire_some_stops_at_max);
	tcase_add_test(tc, test_credentials_are_written_compact);
	tcase_add_test(tc, test_credential_record_under_username);
	tcase_add_test(tc, test_open_without_runtime_refuses_binding_calls);
	tcase_add_test(tc, test_main_writer_does_not_block_binding_writes);
	tcase_add_test(tc, test_open_moves_a_legacy_store);
	tcase_add_test(tc, test_idempotent_answers_expire_and_are_pruned);
	tcase_add_test(tc, test_mirror_applies_records_as_the_database_gave_them);
	tcase_add_test(tc, test_mirror_deletes_leave_tombstones);
	tcase_add_test(tc, test_mirror_full_resync_drops_what_the_database_lost);
	tcase_add_test(tc, test_mirror_apply_is_all_or_nothing);
	tcase_add_test(tc, test_webhooks_per_account_with_a_secret_each);
	tcase_add_test(tc, test_mirror_webhooks);
	tcase_add_test(tc, test_delivery_ids_random);
	tcase_add_test(tc, test_deliveries_due_updated_listed_and_removed);
	tcase_add_test(tc, test_store_without_webhooks_reads_as_none);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(store_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
