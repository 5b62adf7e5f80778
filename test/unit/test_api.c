/* test_api.c: every REST endpoint and every error of lib/api against a real LMDB store in a temporary directory. */
#define _GNU_SOURCE
#include <ftw.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <check.h>

#include "api.h"
#include "store.h"

#define NOW 1775731200   /* 2026-04-09T10:40:00Z */
#define NOW_TEXT "2026-04-09T10:40:00Z"
#define PRODUCT_USER "pbx-prod-01"
#define PRODUCT_PASSWORD "secure_password_here_123"
#define PRODUCT_BODY "{\"username\": \"" PRODUCT_USER "\", \"password\": \"" PRODUCT_PASSWORD "\"}"

/* fixture: accounts A and B, each with a key and a trunk (each test runs in its own process) */
static char dir[64];
static struct sa_store *st;
static struct sa_api_ctx ctx;
static struct sa_account acc_a, acc_b;
static struct sa_trunk trunk_a, trunk_b;
static char key_a[SA_APIKEY_LEN + 1], key_b[SA_APIKEY_LEN + 1];
static char auth_a[80], auth_b[80];
static struct sa_api_response resp;
static json_t *answer;   /* resp.body parsed; NULL for no body */

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void setup(void)
{
	snprintf(dir, sizeof dir, "%s", "/tmp/test_api.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	ck_assert_int_eq(sa_store_open(&st, dir, SA_STORE_RUNTIME), SA_STORE_OK);
	ck_assert_int_eq(sa_store_init(st, NULL), SA_STORE_OK);
	ck_assert_int_eq(sa_store_account_create(st, "Acme", NOW, &acc_a), SA_STORE_OK);
	ck_assert_int_eq(sa_store_account_create(st, "Other", NOW, &acc_b), SA_STORE_OK);
	ck_assert_int_eq(sa_store_apikey_create(st, acc_a.id, NOW, key_a), SA_STORE_OK);
	ck_assert_int_eq(sa_store_apikey_create(st, acc_b.id, NOW, key_b), SA_STORE_OK);
	ck_assert_int_eq(sa_store_trunk_create(st, acc_a.id, "main", NOW, &trunk_a), SA_STORE_OK);
	ck_assert_int_eq(sa_store_trunk_create(st, acc_b.id, "theirs", NOW, &trunk_b), SA_STORE_OK);
	snprintf(auth_a, sizeof auth_a, "Bearer %s", key_a);
	snprintf(auth_b, sizeof auth_b, "Bearer %s", key_b);
	ctx = (struct sa_api_ctx){ .store = st, .min_password_len = SA_PASSWORD_MIN };
}

static void teardown(void)
{
	json_decref(answer);
	answer = NULL;
	sa_api_response_free(&resp);
	sa_store_close(st);
	nftw(dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
}

/* ---- helpers ---- */

/* Runs one request; the answer's JSON in `answer`; returns the status. */
static int call(const char *method, const char *path, const char *query, const char *authz, const char *body)
{
	struct sa_api_request req = { .method = method, .path = path, .query = query, .authorization = authz,
	                              .body = body, .body_len = body ? strlen(body) : 0, .now = NOW };
	json_error_t err;

	json_decref(answer);
	answer = NULL;
	sa_api_response_free(&resp);
	sa_api_handle(&ctx, &req, &resp);
	if (resp.body != NULL) {
		ck_assert_uint_eq(resp.body_len, strlen(resp.body));
		ck_assert_msg(resp.body[resp.body_len - 1] == '\n', "body ends in a newline");
		answer = json_loads(resp.body, 0, &err);
		ck_assert_msg(answer != NULL, "answer is JSON: %s", resp.body);
	}
	return resp.status;
}

static const char *path_of(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static const char *path_of(const char *fmt, ...)
{
	static char buf[4][256];
	static int n;
	va_list ap;
	char *b = buf[n++ % 4];

	va_start(ap, fmt);
	vsnprintf(b, sizeof buf[0], fmt, ap);
	va_end(ap);
	return b;
}

/* A path template with {a} for account A's id and {t} for its trunk's. */
static const char *expand(const char *tmpl)
{
	static char buf[256];
	size_t o = 0;

	for (const char *p = tmpl; *p != '\0' && o < sizeof buf - SA_ID_MAX; p++) {
		const char *id = strncmp(p, "{a}", 3) == 0 ? acc_a.id : strncmp(p, "{t}", 3) == 0 ? trunk_a.id : NULL;
		if (id != NULL) {
			o += (size_t)snprintf(buf + o, sizeof buf - o, "%s", id);
			p += 2;
		} else {
			buf[o++] = *p;
		}
	}
	buf[o] = '\0';
	return buf;
}

static const char *creds_path(const struct sa_trunk *t, const struct sa_account *a)
{
	return path_of("/v1/account/%s/trunks/%s/credentials", a->id, t->id);
}

static const char *header(const char *name)
{
	for (unsigned i = 0; i < resp.nhdr; i++)
		if (strcmp(resp.hdr[i].name, name) == 0)
			return resp.hdr[i].value;
	return NULL;
}

static const char *str_at(json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));
	ck_assert_msg(s != NULL, "field %s is a string", key);
	return s;
}

/* The error answer: exactly {"error":{"code","message"}}; returns the message. */
static const char *error_is(int status, const char *code)
{
	json_t *e = json_object_get(answer, "error");

	ck_assert_int_eq(resp.status, status);
	ck_assert_ptr_nonnull(e);
	ck_assert_uint_eq(json_object_size(answer), 1);
	ck_assert_uint_eq(json_object_size(e), 2);
	ck_assert_str_eq(str_at(e, "code"), code);
	ck_assert_str_eq(resp.error_code, code);
	return str_at(e, "message");
}

static json_t *data(void)
{
	json_t *d = json_object_get(answer, "data");
	ck_assert_msg(json_is_array(d), "answer has a data array");
	return d;
}

static void create_ok(const char *user, char id[SA_ID_MAX])
{
	char body[256];

	snprintf(body, sizeof body, "{\"username\":\"%s\",\"password\":\"%s\"}", user, PRODUCT_PASSWORD);
	ck_assert_int_eq(call("POST", creds_path(&trunk_a, &acc_a), NULL, auth_a, body), 201);
	snprintf(id, SA_ID_MAX, "%s", str_at(answer, "id"));
}

static size_t credential_count(const struct sa_trunk *t)
{
	const char *auth = t == &trunk_a ? auth_a : auth_b;
	const struct sa_account *a = t == &trunk_a ? &acc_a : &acc_b;

	ck_assert_int_eq(call("GET", creds_path(t, a), NULL, auth, NULL), 200);
	return json_array_size(data());
}

/* ---- authentication ---- */

START_TEST(test_missing_key_is_401_with_bearer_challenge)
{
	call("GET", path_of("/v1/account/%s/trunks", acc_a.id), NULL, NULL, NULL);
	error_is(401, "unauthorized");
	ck_assert_str_eq(header("WWW-Authenticate"), "Bearer realm=\"sipauthd\"");
	ck_assert_str_eq(resp.account_id, "");
}
END_TEST

static const char *const bad_authz[] = {
	"Bearer tvx_sk_live_0000000000000000000000000000000",   /* right shape, unknown */
	"Bearer tvx_sk_live_",
	"Basic dXNlcjpwYXNz",
	"Bearer",
	"Bearer    ",
	"",
	"Bearertvx_sk_live_x",
};

START_TEST(test_invalid_key_is_401_invalid_token)
{
	call("GET", path_of("/v1/account/%s/trunks", acc_a.id), NULL, bad_authz[_i], NULL);
	error_is(401, "unauthorized");
	ck_assert_ptr_nonnull(strstr(header("WWW-Authenticate"), "Bearer realm=\"sipauthd\""));
	ck_assert_ptr_null(strstr(resp.body, "tvx_sk_live"));
}
END_TEST

START_TEST(test_key_scheme_any_case_and_blanks)
{
	char authz[96];

	snprintf(authz, sizeof authz, "  bEaReR \t%s  ", key_a);
	ck_assert_int_eq(call("GET", path_of("/v1/account/%s/trunks", acc_a.id), NULL, authz, NULL), 200);
	ck_assert_str_eq(resp.account_id, acc_a.id);
}
END_TEST

START_TEST(test_auth_comes_before_routing)
{
	/* without a key nothing, not even which paths exist, is told */
	call("GET", "/v1/nothing/here", NULL, NULL, NULL);
	error_is(401, "unauthorized");
	call("PUT", creds_path(&trunk_a, &acc_a), NULL, NULL, NULL);
	error_is(401, "unauthorized");
}
END_TEST

/* ---- trunks ---- */

START_TEST(test_trunks_lists_only_the_accounts_own)
{
	struct sa_trunk second;
	json_t *t;

	ck_assert_int_eq(sa_store_trunk_create(st, acc_a.id, "backup", NOW + 1, &second), SA_STORE_OK);
	ck_assert_int_eq(call("GET", path_of("/v1/account/%s/trunks", acc_a.id), NULL, auth_a, NULL), 200);
	ck_assert_uint_eq(json_array_size(data()), 2);
	t = json_array_get(data(), 0);
	ck_assert_str_eq(str_at(t, "id"), trunk_a.id);
	ck_assert_str_eq(str_at(t, "account_id"), acc_a.id);
	ck_assert_str_eq(str_at(t, "name"), "main");
	ck_assert_str_eq(str_at(t, "created_at"), NOW_TEXT);
	ck_assert_uint_eq(json_object_size(t), 10);   /* 4, and the 6 carrier controls */
	ck_assert(json_is_null(json_object_get(t, "max_concurrent_calls")));
	ck_assert_str_eq(str_at(json_array_get(data(), 1), "id"), second.id);
}
END_TEST

START_TEST(test_trunk_show)
{
	ck_assert_int_eq(call("GET", path_of("/v1/account/%s/trunks/%s", acc_a.id, trunk_a.id), NULL, auth_a, NULL), 200);
	ck_assert_str_eq(str_at(answer, "id"), trunk_a.id);
	ck_assert_str_eq(resp.trunk_id, trunk_a.id);
}
END_TEST

/* PATCH: the controls change, GET shows them, the others keep their values */
START_TEST(test_trunk_patch)
{
	const char *path = path_of("/v1/account/%s/trunks/%s", acc_a.id, trunk_a.id);
	ck_assert_int_eq(call("PATCH", path, NULL, auth_a, "{\"max_concurrent_calls\": 2, \"require_tls\": true,"
	                      " \"digest_algorithms\": [\"MD5\", \"SHA-256\"]}"), 200);
	ck_assert_str_eq(resp.patched_trunk, trunk_a.id);
	ck_assert_int_eq(json_integer_value(json_object_get(answer, "max_concurrent_calls")), 2);
	ck_assert(json_is_true(json_object_get(answer, "require_tls")));
	ck_assert_int_eq(call("PATCH", path, NULL, auth_a, "{\"max_calls_per_second\": 5}"), 200);
	ck_assert_int_eq(call("GET", path, NULL, auth_a, NULL), 200);
	ck_assert_int_eq(json_integer_value(json_object_get(answer, "max_concurrent_calls")), 2);
	ck_assert_int_eq(json_integer_value(json_object_get(answer, "max_calls_per_second")), 5);
	ck_assert_str_eq(json_string_value(json_array_get(json_object_get(answer, "digest_algorithms"), 1)), "SHA-256");
	struct sa_trunk_policy p;
	ck_assert_int_eq(sa_store_trunk_policy_get(st, trunk_a.id, &p), SA_STORE_OK);
	ck_assert_int_eq(p.max_concurrent_calls, 2);
	ck_assert(p.require_tls);
}
END_TEST

/* 422 names the field and the rule (and a "field" member says which); nothing changes */
START_TEST(test_trunk_patch_invalid)
{
	const char *path = path_of("/v1/account/%s/trunks/%s", acc_a.id, trunk_a.id);
	ck_assert_int_eq(call("PATCH", path, NULL, auth_a, "{\"max_concurrent_calls\": -3}"), 422);
	json_t *e = json_object_get(answer, "error");
	ck_assert_str_eq(str_at(e, "code"), "invalid_field");
	ck_assert_str_eq(str_at(e, "field"), "max_concurrent_calls");
	ck_assert_str_eq(str_at(e, "message"),
	                 "max_concurrent_calls must be an integer from 0 to 1000000, or null for no limit");
	ck_assert_int_eq(call("PATCH", path, NULL, auth_a, "{\"allowed_sources\": [\"10.0.0.1/8\"]}"), 422);
	ck_assert_str_eq(str_at(json_object_get(answer, "error"), "field"), "allowed_sources");
	ck_assert_int_eq(call("PATCH", path, NULL, auth_a, "[]"), 422);
	ck_assert_ptr_null(json_object_get(json_object_get(answer, "error"), "field"));
	ck_assert_int_eq(call("PATCH", path, NULL, auth_a, "{\"max_concurrent_calls\": "), 400);
	error_is(400, "invalid_json");
	/* another account's trunk: 404, as for every trunk-scoped request */
	ck_assert_int_eq(call("PATCH", path, NULL, auth_b, "{\"require_tls\": true}"), 404);
	struct sa_trunk_policy p;
	ck_assert_int_eq(sa_store_trunk_policy_get(st, trunk_a.id, &p), SA_STORE_OK);
	ck_assert_int_eq(p.max_concurrent_calls, SA_POLICY_NO_LIMIT);
	ck_assert(!p.require_tls);
	ck_assert_int_eq(p.nsources, 0);
}
END_TEST

/* ---- credentials ---- */

START_TEST(test_create_product_example_201)
{
	ck_assert_int_eq(call("POST", creds_path(&trunk_a, &acc_a), NULL, auth_a, PRODUCT_BODY), 201);
	ck_assert_uint_eq(json_object_size(answer), 4);
	ck_assert_str_eq(str_at(answer, "trunk_id"), trunk_a.id);
	ck_assert_str_eq(str_at(answer, "username"), PRODUCT_USER);
	ck_assert_str_eq(str_at(answer, "created_at"), NOW_TEXT);
	ck_assert_int_eq(strncmp(str_at(answer, "id"), "cred_", 5), 0);
	ck_assert_str_eq(header("Location"), path_of("%s/%s", creds_path(&trunk_a, &acc_a), str_at(answer, "id")));
	ck_assert_str_eq(resp.created_cred, str_at(answer, "id"));
	ck_assert_str_eq(resp.created_user, PRODUCT_USER);
	ck_assert_ptr_null(strstr(resp.body, PRODUCT_PASSWORD));
	ck_assert_ptr_null(strstr(resp.body, "password"));
}
END_TEST

START_TEST(test_created_credential_answers_digest)
{
	struct sa_credential c;

	ck_assert_int_eq(call("POST", creds_path(&trunk_a, &acc_a), NULL, auth_a, PRODUCT_BODY), 201);
	ck_assert_int_eq(sa_store_credential_find(st, trunk_a.id, "PBX-PROD-01", &c), SA_STORE_OK);
	ck_assert_str_eq(c.id, str_at(answer, "id"));
}
END_TEST

START_TEST(test_list_in_creation_order_without_secrets)
{
	char id1[SA_ID_MAX], id2[SA_ID_MAX], id3[SA_ID_MAX];

	create_ok("zeta", id1);
	create_ok("alpha", id2);
	create_ok("mid.dle_-1", id3);
	ck_assert_int_eq(call("GET", creds_path(&trunk_a, &acc_a), NULL, auth_a, NULL), 200);
	ck_assert_uint_eq(json_object_size(answer), 2);
	ck_assert(json_is_false(json_object_get(answer, "has_more")));
	ck_assert_uint_eq(json_array_size(data()), 3);
	ck_assert_str_eq(str_at(json_array_get(data(), 0), "id"), id1);
	ck_assert_str_eq(str_at(json_array_get(data(), 1), "id"), id2);
	ck_assert_str_eq(str_at(json_array_get(data(), 2), "username"), "mid.dle_-1");
	ck_assert_uint_eq(json_object_size(json_array_get(data(), 2)), 7);
	ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(data(), 2), "password_version")), 1);
	ck_assert(json_is_null(json_object_get(json_array_get(data(), 2), "rotated_at")));
	ck_assert(json_is_null(json_object_get(json_array_get(data(), 2), "previous_password_expires_at")));
	ck_assert_ptr_null(strstr(resp.body, PRODUCT_PASSWORD));
	ck_assert_ptr_null(strstr(resp.body, "ha1"));
}
END_TEST

START_TEST(test_list_empty_trunk)
{
	ck_assert_int_eq(call("GET", creds_path(&trunk_a, &acc_a), NULL, auth_a, NULL), 200);
	ck_assert_uint_eq(json_array_size(data()), 0);
}
END_TEST

START_TEST(test_show_one_credential)
{
	char id[SA_ID_MAX];

	create_ok(PRODUCT_USER, id);
	ck_assert_int_eq(call("GET", path_of("%s/%s", creds_path(&trunk_a, &acc_a), id), NULL, auth_a, NULL), 200);
	ck_assert_str_eq(str_at(answer, "id"), id);
	ck_assert_str_eq(str_at(answer, "username"), PRODUCT_USER);
}
END_TEST

START_TEST(test_delete_204_then_404)
{
	char id[SA_ID_MAX];
	struct sa_credential c;
	const char *p;

	create_ok(PRODUCT_USER, id);
	p = path_of("%s/%s", creds_path(&trunk_a, &acc_a), id);
	ck_assert_int_eq(call("DELETE", p, NULL, auth_a, NULL), 204);
	ck_assert_ptr_null(resp.body);
	ck_assert_str_eq(resp.deleted_cred, id);
	ck_assert_int_eq(sa_store_credential_get(st, id, &c), SA_STORE_ENOTFOUND);
	call("DELETE", p, NULL, auth_a, NULL);
	error_is(404, "not_found");
	ck_assert_str_eq(resp.deleted_cred, "");
	call("GET", p, NULL, auth_a, NULL);
	error_is(404, "not_found");
}
END_TEST

START_TEST(test_delete_removes_registrations)
{
	char id[SA_ID_MAX];
	struct sa_binding b = { .source_port = 5060, .registered_at = NOW, .updated_at = NOW, .expires_at = NOW + 600 };

	create_ok(PRODUCT_USER, id);
	snprintf(b.cred_id, sizeof b.cred_id, "%s", id);
	snprintf(b.trunk_id, sizeof b.trunk_id, "%s", trunk_a.id);
	snprintf(b.contact, sizeof b.contact, "sip:pbx@192.0.2.1:5060");
	snprintf(b.source, sizeof b.source, "192.0.2.1");
	snprintf(b.transport, sizeof b.transport, "udp");
	ck_assert_int_eq(sa_store_binding_put(st, &b, 0), SA_STORE_OK);
	ck_assert_int_eq(call("DELETE", path_of("%s/%s", creds_path(&trunk_a, &acc_a), id), NULL, auth_a, NULL), 204);
	ck_assert_int_eq(call("GET", path_of("/v1/account/%s/trunks/%s/registrations", acc_a.id, trunk_a.id), NULL,
	                      auth_a, NULL), 200);
	ck_assert_uint_eq(json_array_size(data()), 0);
}
END_TEST

/* ---- 404: another account's things look exactly like unknown ones ---- */

/* The answer with every occurrence of one id replaced by another. */
static char *body_with(const char *from, const char *to)
{
	static char out[1024];
	const char *s = resp.body, *hit;
	size_t o = 0;

	while ((hit = strstr(s, from)) != NULL) {
		o += (size_t)snprintf(out + o, sizeof out - o, "%.*s%s", (int)(hit - s), s, to);
		s = hit + strlen(from);
	}
	snprintf(out + o, sizeof out - o, "%s", s);
	return out;
}

START_TEST(test_other_accounts_trunk_is_404_like_unknown)
{
	const char *unknown = "trunk_0000000000000000";
	char other[1024];

	/* account A's key, account A's path, account B's trunk */
	call("GET", creds_path(&trunk_b, &acc_a), NULL, auth_a, NULL);
	error_is(404, "not_found");
	snprintf(other, sizeof other, "%s", body_with(trunk_b.id, "X"));
	call("GET", path_of("/v1/account/%s/trunks/%s/credentials", acc_a.id, unknown), NULL, auth_a, NULL);
	error_is(404, "not_found");
	ck_assert_str_eq(body_with(unknown, "X"), other);
	/* nothing was created on it either */
	call("POST", creds_path(&trunk_b, &acc_a), NULL, auth_a, PRODUCT_BODY);
	error_is(404, "not_found");
	ck_assert_uint_eq(credential_count(&trunk_b), 0);
}
END_TEST

START_TEST(test_other_accounts_path_is_404)
{
	/* account A's key on account B's own path */
	call("GET", creds_path(&trunk_b, &acc_b), NULL, auth_a, NULL);
	error_is(404, "not_found");
	call("GET", path_of("/v1/account/%s/trunks", acc_b.id), NULL, auth_a, NULL);
	error_is(404, "not_found");
	call("GET", path_of("/v1/account/%s/trunks", "acc_0000000000000000"), NULL, auth_a, NULL);
	error_is(404, "not_found");
	ck_assert_str_eq(resp.account_id, acc_a.id);
}
END_TEST

START_TEST(test_other_trunks_credential_is_404)
{
	char body[128];
	struct sa_credential theirs, c;
	char why[64];

	snprintf(body, sizeof body, "%s", PRODUCT_PASSWORD);
	ck_assert_int_eq(sa_store_credential_create(st, trunk_b.id, "their-pbx", body, strlen(body), 0, NOW, &theirs,
	                                            why, sizeof why), SA_STORE_OK);
	call("DELETE", path_of("%s/%s", creds_path(&trunk_a, &acc_a), theirs.id), NULL, auth_a, NULL);
	error_is(404, "not_found");
	call("GET", path_of("%s/%s", creds_path(&trunk_a, &acc_a), theirs.id), NULL, auth_a, NULL);
	error_is(404, "not_found");
	ck_assert_int_eq(sa_store_credential_get(st, theirs.id, &c), SA_STORE_OK);
}
END_TEST

static const char *const bad_paths[] = {
	"/v1/account/{a}/trunkz",
	"/v1/account/{a}/trunks/",
	"/v1/account/{a}/trunks//credentials",
	"/v1/account/{a}/trunks/{t}/credentials/",
	"/v1/account/{a}/trunks/{t}/credential",
	"/v1/account/{a}/trunks/{t}/nothing",
	"/v1/account/{a}/trunks/{t}/registrations/x",
	"/v1/account/{a}/trunks/{t}/auth-failures/x",
	"/v1/account/{a}/trunks/{t}/credentials/a/b",
	"/v1/account/{a}/trunks/{t}/credentials/%2e%2e",
	"/v1/account/{a}/trunks/{t}/credentials/cred_0000000000000000000000000000000000000000000000000000",
	"/v1/account/{a}/trunks/{t}/calls/../credentials",
	"/v1/account/{a}",
	"/v1/account/{a}/trunks/trunk_0000000000000000000000000000000000000000000000000000000",
	"/v2/account/{a}/trunks",
	"/v1/account/{a}/webhooks/",
	"/v1/account/{a}/webhooks/wh_x/nothing",
	"/v1/account/{a}/webhooks/wh_x/deliveries/dlv_1",
	"/v1/account/{a}/webhookz",
};

START_TEST(test_unknown_paths_are_404)
{
	call("GET", expand(bad_paths[_i]), NULL, auth_a, NULL);
	error_is(404, "not_found");
}
END_TEST

/* ---- 405 ---- */

static const struct {
	const char *method, *path, *allow;
} wrong_methods[] = {
	{ "PUT", "/v1/account/{a}/trunks/{t}/credentials", "GET, POST" },
	{ "DELETE", "/v1/account/{a}/trunks/{t}/credentials", "GET, POST" },
	{ "PATCH", "/v1/account/{a}/trunks/{t}/credentials/cred_x", "GET, DELETE" },
	{ "POST", "/v1/account/{a}/trunks/{t}/credentials/cred_x", "GET, DELETE" },
	{ "POST", "/v1/account/{a}/trunks", "GET" },
	{ "DELETE", "/v1/account/{a}/trunks/{t}", "GET, PATCH" },
	{ "POST", "/v1/account/{a}/trunks/{t}/registrations", "GET" },
	{ "DELETE", "/v1/account/{a}/trunks/{t}/auth-failures", "GET" },
	{ "HEAD", "/v1/account/{a}/trunks/{t}/credentials/cred_x/rotate", "POST" },
	{ "GET", "/v1/account/{a}/trunks/{t}/credentials/cred_x/rotate", "POST" },
	{ "DELETE", "/v1/account/{a}/trunks/{t}/credentials/cred_x/rotate", "POST" },
	{ "PUT", "/v1/account/{a}/webhooks", "GET, POST" },
	{ "POST", "/v1/account/{a}/webhooks/wh_x", "GET, DELETE" },
	{ "DELETE", "/v1/account/{a}/webhooks/wh_x/deliveries", "GET" },
};

START_TEST(test_wrong_method_is_405_with_allow)
{
	call(wrong_methods[_i].method, expand(wrong_methods[_i].path), NULL, auth_a, "{}");
	error_is(405, "method_not_allowed");
	ck_assert_str_eq(header("Allow"), wrong_methods[_i].allow);
}
END_TEST

/* ---- 400 and 422 on create, and nothing half-written ---- */

static const struct {
	const char *body;
	int status;
	const char *code;
	const char *message_part;   /* the rule named */
} bad_bodies[] = {
	{ "", 400, "invalid_json", "not valid JSON" },
	{ "{", 400, "invalid_json", "not valid JSON" },
	{ "{\"username\":\"a\",\"password\":secure_password_here_123}", 400, "invalid_json", "line 1" },
	{ "[]", 400, "invalid_json", "JSON object" },
	{ "\"pbx\"", 400, "invalid_json", "JSON object" },
	{ "{\"username\":\"a\",\"username\":\"b\",\"password\":\"secure_password_here_123\"}", 400, "invalid_json", "JSON" },
	{ "{\"username\":\"a\\u0000b\",\"password\":\"secure_password_here_123\"}", 400, "invalid_json", "JSON" },
	{ "{\"username\":5,\"password\":\"secure_password_here_123\"}", 400, "invalid_field", "username must be a string" },
	{ "{\"username\":\"pbx\",\"password\":true}", 400, "invalid_field", "password must be a string" },
	{ "{\"username\":null,\"password\":\"secure_password_here_123\"}", 400, "invalid_field", "username" },
	{ "{\"username\":[\"pbx\"],\"password\":[]}", 400, "invalid_field", "username" },
	{ "{}", 422, "missing_field", "username is required" },
	{ "{\"password\":\"secure_password_here_123\"}", 422, "missing_field", "username is required" },
	{ "{\"username\":\"pbx\"}", 422, "missing_field", "password is required" },
	{ "{\"username\":\"pbx\",\"password\":\"short\"}", 422, "weak_password", "at least 12" },
	{ "{\"username\":\"pbx\",\"password\":\"elevenchars\"}", 422, "weak_password", "at least 12" },
	{ "{\"username\":\"pbx-prod-01\",\"password\":\"my-PBX-PROD-01-pass\"}", 422, "weak_password", "username" },
	{ "{\"username\":\"pbx\",\"password\":\"tab\\tinside_password\"}", 422, "weak_password", "printable ASCII" },
	{ "{\"username\":\"pbx\",\"password\":\"caf\\u00e9_password_long\"}", 422, "weak_password", "printable ASCII" },
	{ "{\"username\":\"pbx\",\"password\":\"x123456789012345678901234567890123456789012345678901234567890"
	  "1234567890123456789012345678901234567890123456789012345678901234567890\"}", 422, "weak_password", "at most 128" },
	{ "{\"username\":\"\",\"password\":\"secure_password_here_123\"}", 422, "invalid_username", "empty" },
	{ "{\"username\":\"pbx prod\",\"password\":\"secure_password_here_123\"}", 422, "invalid_username", "letters" },
	{ "{\"username\":\"pbx@host\",\"password\":\"secure_password_here_123\"}", 422, "invalid_username", "letters" },
	{ "{\"username\":\"a1234567890123456789012345678901234567890123456789012345678901234\","
	  "\"password\":\"secure_password_here_123\"}", 422, "invalid_username", "at most 64" },
};

START_TEST(test_bad_create_bodies)
{
	const char *msg;

	call("POST", creds_path(&trunk_a, &acc_a), NULL, auth_a, bad_bodies[_i].body);
	msg = error_is(bad_bodies[_i].status, bad_bodies[_i].code);
	ck_assert_msg(strstr(msg, bad_bodies[_i].message_part) != NULL, "[%s] names [%s]", msg,
	              bad_bodies[_i].message_part);
	ck_assert_ptr_null(strstr(resp.body, "secure_password_here_123"));
	ck_assert_ptr_null(strstr(resp.body, "PBX-PROD-01-pass"));
	ck_assert_str_eq(resp.created_cred, "");
	ck_assert_uint_eq(credential_count(&trunk_a), 0);
}
END_TEST

START_TEST(test_configured_minimum_length)
{
	ctx.min_password_len = 30;
	call("POST", creds_path(&trunk_a, &acc_a), NULL, auth_a, PRODUCT_BODY);
	ck_assert_ptr_nonnull(strstr(error_is(422, "weak_password"), "at least 30"));
	ctx.min_password_len = 20;
	ck_assert_int_eq(call("POST", creds_path(&trunk_a, &acc_a), NULL, auth_a, PRODUCT_BODY), 201);
}
END_TEST

START_TEST(test_duplicate_username_ignoring_case_409)
{
	char id[SA_ID_MAX];

	create_ok(PRODUCT_USER, id);
	call("POST", creds_path(&trunk_a, &acc_a), NULL, auth_a,
	     "{\"username\":\"PBX-Prod-01\",\"password\":\"another_password_456\"}");
	ck_assert_ptr_nonnull(strstr(error_is(409, "duplicate_username"), "PBX-Prod-01"));
	ck_assert_uint_eq(credential_count(&trunk_a), 1);
	/* the same username on another trunk is fine */
	ck_assert_int_eq(call("POST", creds_path(&trunk_b, &acc_b), NULL, auth_b, PRODUCT_BODY), 201);
}
END_TEST

START_TEST(test_unknown_fields_are_ignored)
{
	ck_assert_int_eq(call("POST", creds_path(&trunk_a, &acc_a), NULL, auth_a,
	                      "{\"username\":\"pbx\",\"password\":\"secure_password_here_123\",\"id\":\"cred_mine\"}"),
	                 201);
	ck_assert_str_ne(str_at(answer, "id"), "cred_mine");
}
END_TEST

/* HEAD is answered as the GET (the HTTP layer sends no body), query rules included */
START_TEST(test_head_answers_as_get)
{
	char id[SA_ID_MAX], *get_body;

	create_ok(PRODUCT_USER, id);
	ck_assert_int_eq(call("GET", creds_path(&trunk_a, &acc_a), "limit=1", auth_a, NULL), 200);
	get_body = strdup(resp.body);
	ck_assert_int_eq(call("HEAD", creds_path(&trunk_a, &acc_a), "limit=1", auth_a, NULL), 200);
	ck_assert_str_eq(resp.body, get_body);
	free(get_body);
	call("HEAD", creds_path(&trunk_a, &acc_a), "limt=1", auth_a, NULL);
	ck_assert_str_eq(error_is(400, "invalid_parameter"),
	                 "limt: unknown query parameter (a list takes limit and starting_after)");
	call("HEAD", path_of("%s/%s", creds_path(&trunk_a, &acc_a), id), NULL, auth_b, NULL);
	ck_assert_int_eq(resp.status, 404);
}
END_TEST

START_TEST(test_query_on_resource_without_parameters_400)
{
	char id[SA_ID_MAX];

	create_ok(PRODUCT_USER, id);
	call("GET", path_of("/v1/account/%s/trunks/%s", acc_a.id, trunk_a.id), "limit=5", auth_a, NULL);
	error_is(400, "invalid_parameter");
	call("GET", path_of("%s/%s", creds_path(&trunk_a, &acc_a), id), "limit=5", auth_a, NULL);
	error_is(400, "invalid_parameter");
	call("POST", creds_path(&trunk_a, &acc_a), "limit=5", auth_a, PRODUCT_BODY);
	error_is(400, "invalid_parameter");
	ck_assert_int_eq(call("GET", creds_path(&trunk_a, &acc_a), "", auth_a, NULL), 200);
}
END_TEST

/* ---- registrations ---- */

static void binding_add(const char *cred_id, const char *contact, int64_t expires_at, const char *ua)
{
	struct sa_binding b = { .source_port = 5062, .registered_at = NOW - 100, .updated_at = NOW - 10,
	                        .expires_at = expires_at, .password_version = 2 };

	snprintf(b.cred_id, sizeof b.cred_id, "%s", cred_id);
	snprintf(b.trunk_id, sizeof b.trunk_id, "%s", trunk_a.id);
	snprintf(b.contact, sizeof b.contact, "%s", contact);
	snprintf(b.source, sizeof b.source, "198.51.100.7");
	snprintf(b.transport, sizeof b.transport, "tcp");
	snprintf(b.user_agent, sizeof b.user_agent, "%s", ua);
	ck_assert_int_eq(sa_store_binding_put(st, &b, 0), SA_STORE_OK);
}

START_TEST(test_registrations_current_bindings)
{
	char id[SA_ID_MAX];
	json_t *b;

	create_ok(PRODUCT_USER, id);
	binding_add(id, "sip:pbx@198.51.100.7:5062;transport=tcp", NOW + 300, "Asterisk PBX 20.5");
	binding_add(id, "sip:old@198.51.100.7:5062", NOW, "old");   /* expired, not yet swept */
	binding_add(id, "sip:odd@198.51.100.7:5062", NOW + 60, "bad \xff\xfe utf8");
	ck_assert_int_eq(call("GET", path_of("/v1/account/%s/trunks/%s/registrations", acc_a.id, trunk_a.id), NULL,
	                      auth_a, NULL), 200);
	ck_assert_uint_eq(json_array_size(data()), 2);
	b = json_array_get(data(), 0);
	if (strcmp(str_at(b, "contact"), "sip:odd@198.51.100.7:5062") == 0)
		b = json_array_get(data(), 1);
	ck_assert_str_eq(str_at(b, "credential_id"), id);
	ck_assert_str_eq(str_at(b, "username"), PRODUCT_USER);
	ck_assert_str_eq(str_at(b, "contact"), "sip:pbx@198.51.100.7:5062;transport=tcp");
	ck_assert_str_eq(str_at(b, "source_address"), "198.51.100.7");
	ck_assert_int_eq(json_integer_value(json_object_get(b, "source_port")), 5062);
	ck_assert_str_eq(str_at(b, "transport"), "tcp");
	ck_assert_str_eq(str_at(b, "user_agent"), "Asterisk PBX 20.5");
	ck_assert_str_eq(str_at(b, "registered_at"), "2026-04-09T10:38:20Z");
	ck_assert_str_eq(str_at(b, "updated_at"), "2026-04-09T10:39:50Z");
	ck_assert_str_eq(str_at(b, "expires_at"), "2026-04-09T10:45:00Z");
	ck_assert_int_eq(json_integer_value(json_object_get(b, "password_version")), 2);
	ck_assert_uint_eq(json_object_size(b), 12);
	ck_assert_ptr_nonnull(strstr(resp.body, "bad ?? utf8"));
}
END_TEST

START_TEST(test_registrations_of_other_accounts_trunk_404)
{
	call("GET", path_of("/v1/account/%s/trunks/%s/registrations", acc_a.id, trunk_b.id), NULL, auth_a, NULL);
	error_is(404, "not_found");
}
END_TEST

/* ---- auth failures ---- */

static void fail_add_version(const struct sa_trunk *t, int64_t at, const char *user, const char *reason,
                             int64_t password_version)
{
	struct sa_authfail f = { .at = at, .source_port = 40000, .password_version = password_version };

	snprintf(f.trunk_id, sizeof f.trunk_id, "%s", t->id);
	snprintf(f.source, sizeof f.source, "203.0.113.9");
	snprintf(f.transport, sizeof f.transport, "udp");
	snprintf(f.username, sizeof f.username, "%s", user);
	snprintf(f.reason, sizeof f.reason, "%s", reason);
	snprintf(f.method, sizeof f.method, "REGISTER");
	ck_assert_int_eq(sa_store_authfail_add(st, &f, 1000), SA_STORE_OK);
}

static void fail_add(const struct sa_trunk *t, int64_t at, const char *user, const char *reason)
{
	fail_add_version(t, at, user, reason, 0);
}

static const char *fails_path(void)
{
	return path_of("/v1/account/%s/trunks/%s/auth-failures", acc_a.id, trunk_a.id);
}

START_TEST(test_authfails_newest_first_with_fields)
{
	json_t *f;

	fail_add(&trunk_a, NOW - 30, "admin", "unknown_user");
	fail_add_version(&trunk_a, NOW - 20, PRODUCT_USER, "bad_password", 1);
	fail_add_version(&trunk_a, NOW - 10, PRODUCT_USER, "stale_nonce", 2);
	fail_add(&trunk_b, NOW - 5, "theirs", "bad_password");
	ck_assert_int_eq(call("GET", fails_path(), NULL, auth_a, NULL), 200);
	ck_assert_uint_eq(json_array_size(data()), 3);
	f = json_array_get(data(), 0);
	ck_assert_str_eq(str_at(f, "time"), "2026-04-09T10:39:50Z");
	ck_assert_str_eq(str_at(f, "reason"), "stale_nonce");
	ck_assert_str_eq(str_at(f, "source_address"), "203.0.113.9");
	ck_assert_int_eq(json_integer_value(json_object_get(f, "source_port")), 40000);
	ck_assert_str_eq(str_at(f, "transport"), "udp");
	ck_assert_str_eq(str_at(f, "username"), PRODUCT_USER);
	ck_assert_str_eq(str_at(f, "method"), "REGISTER");
	ck_assert_str_eq(str_at(json_array_get(data(), 1), "reason"), "bad_password");
	ck_assert_str_eq(str_at(json_array_get(data(), 2), "reason"), "unknown_user");
	ck_assert_str_eq(str_at(json_array_get(data(), 2), "username"), "admin");
	/* which password each answered with: 2, the previous (1), not known */
	ck_assert_int_eq(json_integer_value(json_object_get(f, "password_version")), 2);
	ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(data(), 1), "password_version")), 1);
	ck_assert(json_is_null(json_object_get(json_array_get(data(), 2), "password_version")));
	ck_assert_uint_eq(json_object_size(f), 9);
}
END_TEST

START_TEST(test_authfails_limit_default_and_max)
{
	for (int i = 0; i < 1005; i++)
		fail_add(&trunk_a, NOW - 2000 + i, "u", "bad_password");
	ck_assert_int_eq(call("GET", fails_path(), NULL, auth_a, NULL), 200);
	ck_assert_uint_eq(json_array_size(data()), SA_API_AUTHFAIL_LIMIT_DEFAULT);
	ck_assert_int_eq(call("GET", fails_path(), "limit=1000", auth_a, NULL), 200);
	ck_assert_uint_eq(json_array_size(data()), 1000);
	ck_assert_int_eq(call("GET", fails_path(), "limit=2", auth_a, NULL), 200);
	ck_assert_uint_eq(json_array_size(data()), 2);
}
END_TEST

static const struct {
	const char *query;
	size_t count;
} since_queries[] = {
	{ "since=1775731180", 3 },                              /* epoch seconds: NOW - 20 */
	{ "since=2026-04-09T10:39:40Z", 3 },                    /* RFC 3339, UTC */
	{ "since=2026-04-09t10:39:40.999z", 3 },                 /* fraction ignored, any case */
	{ "since=2026-04-09T12:39:40%2B02:00", 3 },             /* offset, escaped */
	{ "since=2026-04-09T12:39:40+02:00", 3 },               /* offset, '+' as is */
	{ "since=2026-04-09T05:39:41-05:00", 2 },
	{ "since=2026-04-09T10:39:40Z&limit=1", 1 },
	{ "limit=4&since=0", 4 },
	{ "since=2030-01-01T00:00:00Z", 0 },
	{ "&since=1775731180&", 3 },
};

START_TEST(test_authfails_since)
{
	for (int i = 40; i > 0; i -= 10)
		fail_add(&trunk_a, NOW - i, "u", "bad_password");
	fail_add(&trunk_a, NOW, "u", "bad_password");
	ck_assert_int_eq(call("GET", fails_path(), since_queries[_i].query, auth_a, NULL), 200);
	ck_assert_uint_eq(json_array_size(data()), since_queries[_i].count);
}
END_TEST

static const char *const bad_queries[] = {
	"limit=0", "limit=1001", "limit=abc", "limit=-1", "limit=", "limit=5x", "limit=+5",
	"since=yesterday", "since=2026-02-30T00:00:00Z", "since=2026-04-09T10:39:40", "since=2026-04-09",
	"since=", "since=2026-04-09T25:00:00Z", "since=1%", "since=%zz", "since=99999999999999",
	"since=2026-04-09T10:39:40+2:00", "offset=5", "limit=5&limit=6", "since=1&since=2", "since", "%00=1",
};

START_TEST(test_authfails_bad_query_400)
{
	call("GET", fails_path(), bad_queries[_i], auth_a, NULL);
	error_is(400, "invalid_parameter");
}
END_TEST

START_TEST(test_authfails_odd_bytes_stay_valid_json)
{
	fail_add(&trunk_a, NOW, "\xc3\x28<script>", "unknown_user");
	ck_assert_int_eq(call("GET", fails_path(), NULL, auth_a, NULL), 200);
	ck_assert_str_eq(str_at(json_array_get(data(), 0), "username"), "?(<script>");
}
END_TEST

START_TEST(test_authfails_of_other_accounts_trunk_404)
{
	fail_add(&trunk_b, NOW, "u", "bad_password");
	call("GET", path_of("/v1/account/%s/trunks/%s/auth-failures", acc_a.id, trunk_b.id), NULL, auth_a, NULL);
	error_is(404, "not_found");
	ck_assert_ptr_null(strstr(resp.body, "bad_password"));
}
END_TEST

/* ---- paging ---- */

/* The ids of the page just answered, joined by spaces; has_more in *more. */
static const char *page_ids(bool *more)
{
	static char buf[32768];
	size_t o = 0, i;
	json_t *it;

	buf[0] = '\0';
	json_array_foreach(data(), i, it)
		if (o < sizeof buf)
			o += (size_t)snprintf(buf + o, sizeof buf - o, "%s%s", o ? " " : "", str_at(it, "id"));
	ck_assert(json_is_boolean(json_object_get(answer, "has_more")));
	*more = json_is_true(json_object_get(answer, "has_more"));
	return buf;
}

/* Every item of path, read limit at a time; each page must be 200. */
static const char *walk_pages(const char *path, unsigned limit, unsigned *pages)
{
	static char all[8192];
	char q[512], last[SA_API_CURSOR_MAX] = "";
	bool more = true;
	size_t o = 0;

	all[0] = '\0';
	*pages = 0;
	while (more) {
		if (last[0])
			snprintf(q, sizeof q, "limit=%u&starting_after=%s", limit, last);
		else
			snprintf(q, sizeof q, "limit=%u", limit);
		ck_assert_int_eq(call("GET", path, q, auth_a, NULL), 200);
		const char *ids = page_ids(&more);
		ck_assert_uint_le(json_array_size(data()), limit);
		if (more)
			ck_assert_uint_eq(json_array_size(data()), limit);
		if (json_array_size(data()) > 0)
			snprintf(last, sizeof last, "%s", str_at(json_array_get(data(), json_array_size(data()) - 1), "id"));
		if (o < sizeof all)
			o += (size_t)snprintf(all + o, sizeof all - o, "%s%s", o && ids[0] ? " " : "", ids);
		(*pages)++;
		ck_assert_uint_lt(*pages, 100);
	}
	return all;
}

START_TEST(test_credentials_pages_in_creation_order)
{
	char id[5][SA_ID_MAX], expect[512];
	const char *users[5] = { "pbx-e", "pbx-d", "pbx-c", "pbx-b", "pbx-a" };
	unsigned pages;
	bool more;

	for (int i = 0; i < 5; i++)
		create_ok(users[i], id[i]);
	snprintf(expect, sizeof expect, "%s %s %s %s %s", id[0], id[1], id[2], id[3], id[4]);
	ck_assert_str_eq(walk_pages(creds_path(&trunk_a, &acc_a), 2, &pages), expect);
	ck_assert_uint_eq(pages, 3);
	ck_assert_str_eq(walk_pages(creds_path(&trunk_a, &acc_a), 5, &pages), expect);
	ck_assert_uint_eq(pages, 1);
	ck_assert_int_eq(call("GET", creds_path(&trunk_a, &acc_a), path_of("starting_after=%s", id[4]), auth_a, NULL),
	                 200);
	ck_assert_str_eq(page_ids(&more), "");
	ck_assert(!more);
	ck_assert_int_eq(call("GET", creds_path(&trunk_a, &acc_a), path_of("starting_after=%s&limit=1", id[1]), auth_a,
	                      NULL), 200);
	ck_assert_str_eq(page_ids(&more), id[2]);
	ck_assert(more);
}
END_TEST

START_TEST(test_credentials_cursor_must_be_the_trunks)
{
	char id[SA_ID_MAX], theirs[SA_ID_MAX];
	struct sa_credential c;

	create_ok(PRODUCT_USER, id);
	ck_assert_int_eq(sa_store_credential_create(st, trunk_b.id, "x", PRODUCT_PASSWORD, strlen(PRODUCT_PASSWORD),
	                                            SA_PASSWORD_MIN, NOW, &c, NULL, 0), SA_STORE_OK);
	snprintf(theirs, sizeof theirs, "%s", c.id);
	call("GET", creds_path(&trunk_a, &acc_a), path_of("starting_after=%s", theirs), auth_a, NULL);
	ck_assert_str_eq(error_is(400, "invalid_parameter"), "starting_after must be the id of a credential of this trunk");
	call("GET", creds_path(&trunk_a, &acc_a), "starting_after=cred_nosuchthing00", auth_a, NULL);
	error_is(400, "invalid_parameter");
	ck_assert_int_eq(call("DELETE", path_of("%s/%s", creds_path(&trunk_a, &acc_a), id), NULL, auth_a, NULL), 204);
	call("GET", creds_path(&trunk_a, &acc_a), path_of("starting_after=%s", id), auth_a, NULL);
	error_is(400, "invalid_parameter");
}
END_TEST

START_TEST(test_trunks_pages)
{
	struct sa_trunk t2, t3;
	char expect[256];
	unsigned pages;

	ck_assert_int_eq(sa_store_trunk_create(st, acc_a.id, "two", NOW, &t2), SA_STORE_OK);
	ck_assert_int_eq(sa_store_trunk_create(st, acc_a.id, "three", NOW, &t3), SA_STORE_OK);
	snprintf(expect, sizeof expect, "%s %s %s", trunk_a.id, t2.id, t3.id);
	ck_assert_str_eq(walk_pages(path_of("/v1/account/%s/trunks", acc_a.id), 1, &pages), expect);
	ck_assert_uint_eq(pages, 3);
	call("GET", path_of("/v1/account/%s/trunks", acc_a.id), path_of("starting_after=%s", trunk_b.id), auth_a, NULL);
	ck_assert_str_eq(error_is(400, "invalid_parameter"), "starting_after must be the id of a trunk of this account");
}
END_TEST

START_TEST(test_registrations_page_by_binding_identity)
{
	char c1[SA_ID_MAX], c2[SA_ID_MAX], first[SA_API_CURSOR_MAX], all[1024];
	const char *path = path_of("/v1/account/%s/trunks/%s/registrations", acc_a.id, trunk_a.id);
	unsigned pages;
	bool more;

	create_ok("one", c1);
	create_ok("two", c2);
	binding_add(c1, "sip:a@198.51.100.7", NOW + 300, "ua");
	binding_add(c1, "sip:b@198.51.100.7", NOW + 300, "ua");
	binding_add(c2, "sip:c@198.51.100.7", NOW + 300, "ua");
	binding_add(c2, "sip:gone@198.51.100.7", NOW, "ua");   /* expired: never listed */
	ck_assert_int_eq(call("GET", path, NULL, auth_a, NULL), 200);
	snprintf(all, sizeof all, "%s", page_ids(&more));
	ck_assert(!more);
	ck_assert_uint_eq(json_array_size(data()), 3);
	ck_assert_ptr_eq(strstr(all, "reg_"), all);
	ck_assert_str_eq(walk_pages(path, 1, &pages), all);
	ck_assert_uint_eq(pages, 3);
	ck_assert_str_eq(walk_pages(path, 2, &pages), all);
	ck_assert_uint_eq(pages, 2);
	/* a page may start after a binding that is gone since */
	ck_assert_int_eq(call("GET", path, "limit=1", auth_a, NULL), 200);
	snprintf(first, sizeof first, "%s", str_at(json_array_get(data(), 0), "id"));
	ck_assert_int_eq(sa_store_binding_delete(st, str_at(json_array_get(data(), 0), "credential_id"),
	                                         str_at(json_array_get(data(), 0), "contact")), SA_STORE_OK);
	ck_assert_int_eq(call("GET", path, path_of("starting_after=%s", first), auth_a, NULL), 200);
	ck_assert_str_eq(page_ids(&more), strchr(all, ' ') + 1);
	ck_assert(!more);
}
END_TEST

static const char *const bad_cursors[] = {
	"reg_", "reg_zz", "cred_x", "reg_00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
	"reg_6372Ed5f00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
	"reg_0063112233445566778899aabbccddeeff00112233445566778899aabbccddeeff00112233",
};

START_TEST(test_registrations_bad_cursor_400)
{
	call("GET", path_of("/v1/account/%s/trunks/%s/registrations", acc_a.id, trunk_a.id),
	     path_of("starting_after=%s", bad_cursors[_i]), auth_a, NULL);
	ck_assert_str_eq(error_is(400, "invalid_parameter"), "starting_after must be the id of a registration (reg_...)");
}
END_TEST

static int fake_calls_n;

static void fake_calls(void *owner, const char *trunk_id, sa_api_call_cb cb, void *arg)
{
	/* the last two: a forked INVITE's two calls, one Call-ID */
	static const char *const ids[] = { "zz@pbx", "aa@pbx", "mm@pbx", "bb@pbx", "ff@pbx", "ff@pbx" };

	for (int i = 0; i < fake_calls_n; i++)
		cb(&(struct sa_api_call){ .call_id = ids[i], .cred_id = "", .confirmed = true, .started_at = NOW }, arg);
}

START_TEST(test_calls_page_by_call_id)
{
	const char *path = path_of("/v1/account/%s/trunks/%s/calls", acc_a.id, trunk_a.id);
	unsigned pages;
	bool more;

	ctx.calls_each = fake_calls;
	fake_calls_n = 4;
	ck_assert_str_eq(walk_pages(path, 3, &pages), "aa@pbx bb@pbx mm@pbx zz@pbx");
	ck_assert_uint_eq(pages, 2);
	ck_assert_int_eq(call("GET", path, "limit=1&starting_after=cc%40pbx", auth_a, NULL), 200);
	ck_assert_str_eq(page_ids(&more), "mm@pbx");
	ck_assert(more);
	ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(answer, "usage"), "concurrent_calls")), 4);
	ck_assert_str_eq(str_at(json_array_get(data(), 0), "call_id"), "mm@pbx");
	/* a page never ends between a forked INVITE's calls: the cursor is their Call-ID */
	fake_calls_n = 6;
	ck_assert_int_eq(call("GET", path, "limit=3", auth_a, NULL), 200);
	ck_assert_str_eq(page_ids(&more), "aa@pbx bb@pbx ff@pbx ff@pbx");   /* past the limit by the fork */
	ck_assert(more);
	ck_assert_int_eq(call("GET", path, "limit=3&starting_after=ff%40pbx", auth_a, NULL), 200);
	ck_assert_str_eq(page_ids(&more), "mm@pbx zz@pbx");
	ck_assert(!more);
	ck_assert_int_eq(call("GET", path, "limit=1&starting_after=bb%40pbx", auth_a, NULL), 200);
	ck_assert_str_eq(page_ids(&more), "ff@pbx ff@pbx");
	ck_assert(more);
	fake_calls_n = 0;
	ck_assert_int_eq(call("GET", path, NULL, auth_a, NULL), 200);
	ck_assert_str_eq(page_ids(&more), "");
	ck_assert(!more);
}
END_TEST

START_TEST(test_authfails_page_newest_first)
{
	unsigned pages;
	bool more;
	char first[64];

	for (int i = 0; i < 5; i++)
		fail_add(&trunk_a, NOW - 50 + i * 10, "u", "bad_password");
	const char *all = walk_pages(fails_path(), 2, &pages);
	ck_assert_uint_eq(pages, 3);
	ck_assert_str_eq(all, "fail_0000000000000004 fail_0000000000000003 fail_0000000000000002 "
	                      "fail_0000000000000001 fail_0000000000000000");
	ck_assert_int_eq(call("GET", fails_path(), "limit=1", auth_a, NULL), 200);
	snprintf(first, sizeof first, "%s", page_ids(&more));
	ck_assert_str_eq(str_at(json_array_get(data(), 0), "time"), "2026-04-09T10:39:50Z");
	/* since and starting_after together */
	ck_assert_int_eq(call("GET", fails_path(), "since=1775731170&starting_after=fail_0000000000000004", auth_a,
	                      NULL), 200);
	ck_assert_str_eq(page_ids(&more), "fail_0000000000000003 fail_0000000000000002");
	ck_assert(!more);
	/* a cursor stays valid when the log has been trimmed past it */
	for (int i = 0; i < 3; i++) {
		struct sa_authfail f = { .at = NOW, .source_port = 1 };
		snprintf(f.trunk_id, sizeof f.trunk_id, "%s", trunk_a.id);
		ck_assert_int_eq(sa_store_authfail_add(st, &f, 2), SA_STORE_OK);
	}
	ck_assert_int_eq(call("GET", fails_path(), "starting_after=fail_0000000000000007", auth_a, NULL), 200);
	ck_assert_str_eq(page_ids(&more), "fail_0000000000000006");
	ck_assert_int_eq(call("GET", fails_path(), "starting_after=fail_0000000000000002", auth_a, NULL), 200);
	ck_assert_str_eq(page_ids(&more), "");
}
END_TEST

static const char *const list_paths[] = {
	"/v1/account/{a}/trunks", "/v1/account/{a}/trunks/{t}/credentials", "/v1/account/{a}/trunks/{t}/registrations",
	"/v1/account/{a}/trunks/{t}/auth-failures", "/v1/account/{a}/trunks/{t}/calls",
};
static const struct {
	const char *query, *message;
} bad_page_queries[] = {
	{ "limit=0", "limit must be a number from 1 to 1000" },
	{ "limit=1001", "limit must be a number from 1 to 1000" },
	{ "limit=ten", "limit must be a number from 1 to 1000" },
	{ "limit=", "limit must be a number from 1 to 1000" },
	{ "starting_after=", "starting_after must be the id of an item of this list" },
	{ "starting_after=a&starting_after=b", "starting_after given twice" },
	{ "limit=1&limit=2", "limit given twice" },
	{ "starting_after=%zz", "starting_after: malformed or too long value" },
};

START_TEST(test_lists_refuse_bad_paging_400)
{
	for (size_t i = 0; i < sizeof list_paths / sizeof list_paths[0]; i++) {
		call("GET", expand(list_paths[i]), bad_page_queries[_i].query, auth_a, NULL);
		ck_assert_str_eq(error_is(400, "invalid_parameter"), bad_page_queries[_i].message);
	}
}
END_TEST

START_TEST(test_lists_default_limit_100_max_1000)
{
	char id[SA_ID_MAX], name[16];
	bool more;

	for (int i = 0; i < 1001; i++) {
		snprintf(name, sizeof name, "u%04d", i);
		ck_assert_int_eq(sa_store_credential_create(st, trunk_a.id, name, PRODUCT_PASSWORD,
		                                            strlen(PRODUCT_PASSWORD), SA_PASSWORD_MIN, NOW, NULL, NULL, 0),
		                 SA_STORE_OK);
	}
	ck_assert_int_eq(call("GET", creds_path(&trunk_a, &acc_a), NULL, auth_a, NULL), 200);
	page_ids(&more);
	ck_assert_uint_eq(json_array_size(data()), 100);
	ck_assert(more);
	ck_assert_int_eq(call("GET", creds_path(&trunk_a, &acc_a), "limit=1000", auth_a, NULL), 200);
	page_ids(&more);
	ck_assert_uint_eq(json_array_size(data()), 1000);
	ck_assert(more);
	snprintf(id, sizeof id, "%s", str_at(json_array_get(data(), 999), "id"));
	ck_assert_int_eq(call("GET", creds_path(&trunk_a, &acc_a), path_of("limit=1000&starting_after=%s", id), auth_a,
	                      NULL), 200);
	page_ids(&more);
	ck_assert_uint_eq(json_array_size(data()), 1);
	ck_assert_str_eq(str_at(json_array_get(data(), 0), "username"), "u1000");
	ck_assert(!more);
}
END_TEST

/* ---- rotation ---- */

#define NEW_PASSWORD "another_secret_456789"

static const char *rotate_path(const char *cred_id)
{
	return path_of("/v1/account/%s/trunks/%s/credentials/%s/rotate", acc_a.id, trunk_a.id, cred_id);
}

/* The 422 of a bad field: {"error":{"code","message","field"}}. */
static void field_error_is(const char *code, const char *field)
{
	json_t *e = json_object_get(answer, "error");

	ck_assert_int_eq(resp.status, 422);
	ck_assert_uint_eq(json_object_size(e), 3);
	ck_assert_str_eq(str_at(e, "code"), code);
	ck_assert_str_eq(str_at(e, "field"), field);
	ck_assert_str_eq(resp.error_code, code);
}

START_TEST(test_rotate_answers_the_credential_at_version_2)
{
	char id[SA_ID_MAX];
	struct sa_credential c;

	create_ok(PRODUCT_USER, id);
	ck_assert_int_eq(call("POST", rotate_path(id), NULL, auth_a, "{\"password\": \"" NEW_PASSWORD "\"}"), 200);
	ck_assert_str_eq(str_at(answer, "id"), id);
	ck_assert_int_eq(json_integer_value(json_object_get(answer, "password_version")), 2);
	ck_assert_str_eq(str_at(answer, "rotated_at"), NOW_TEXT);
	ck_assert_str_eq(str_at(answer, "previous_password_expires_at"), "2026-04-09T11:40:00Z");   /* default 3600 */
	ck_assert_uint_eq(json_object_size(answer), 7);
	ck_assert_ptr_null(strstr(resp.body, NEW_PASSWORD));
	ck_assert_ptr_null(strstr(resp.body, "ha1"));
	ck_assert_str_eq(resp.rotated_cred, id);
	ck_assert_uint_eq(resp.rotated_version, 2);
	ck_assert_uint_eq(resp.rotated_overlap, 3600);
	ck_assert_str_eq(resp.deleted_cred, "");   /* nothing for revocation to act on */
	ck_assert_int_eq(sa_store_credential_get(st, id, &c), SA_STORE_OK);
	ck_assert_uint_eq(c.password_version, 2);
	ck_assert_int_eq(c.previous_until, NOW + 3600);
	/* GET says the same */
	ck_assert_int_eq(call("GET", path_of("%s/%s", creds_path(&trunk_a, &acc_a), id), NULL, auth_a, NULL), 200);
	ck_assert_int_eq(json_integer_value(json_object_get(answer, "password_version")), 2);
	ck_assert_str_eq(str_at(answer, "previous_password_expires_at"), "2026-04-09T11:40:00Z");
}
END_TEST

START_TEST(test_rotate_overlap_bounds)
{
	char id[SA_ID_MAX];

	create_ok(PRODUCT_USER, id);
	ck_assert_int_eq(call("POST", rotate_path(id), NULL, auth_a,
	                      "{\"password\": \"" NEW_PASSWORD "\", \"overlap_seconds\": 0}"), 200);
	ck_assert_str_eq(str_at(answer, "previous_password_expires_at"), NOW_TEXT);
	ck_assert_int_eq(call("POST", rotate_path(id), NULL, auth_a,
	                      "{\"password\": \"" PRODUCT_PASSWORD "\", \"overlap_seconds\": 86400}"), 200);
	ck_assert_int_eq(json_integer_value(json_object_get(answer, "password_version")), 3);
	ck_assert_str_eq(str_at(answer, "previous_password_expires_at"), "2026-04-10T10:40:00Z");
}
END_TEST

static const struct {
	const char *body, *code, *field;
} bad_rotations[] = {
	{ "{\"overlap_seconds\": 60}", "missing_field", "password" },
	{ "{}", "missing_field", "password" },
	{ "{\"password\": 12345678901234}", "invalid_field", "password" },
	{ "{\"password\": \"" NEW_PASSWORD "\", \"overlap_seconds\": -1}", "invalid_field", "overlap_seconds" },
	{ "{\"password\": \"" NEW_PASSWORD "\", \"overlap_seconds\": 86401}", "invalid_field", "overlap_seconds" },
	{ "{\"password\": \"" NEW_PASSWORD "\", \"overlap_seconds\": 1.5}", "invalid_field", "overlap_seconds" },
	{ "{\"password\": \"" NEW_PASSWORD "\", \"overlap_seconds\": \"60\"}", "invalid_field", "overlap_seconds" },
	{ "{\"password\": \"" NEW_PASSWORD "\", \"overlap_seconds\": null}", "invalid_field", "overlap_seconds" },
	{ "{\"password\": \"" NEW_PASSWORD "\", \"overlap\": 60}", "invalid_field", "overlap" },
	{ "{\"password\": \"short\"}", "weak_password", "password" },
	{ "{\"password\": \"x-pbx-prod-01-x-long\"}", "weak_password", "password" },   /* holds the username */
	{ "{\"password\": \"" PRODUCT_PASSWORD "\"}", "weak_password", "password" },     /* the current one */
};

/* Every bad body is a 422 naming the field, and changes nothing. */
START_TEST(test_rotate_bad_bodies_422)
{
	char id[SA_ID_MAX];
	struct sa_credential c;

	create_ok(PRODUCT_USER, id);
	call("POST", rotate_path(id), NULL, auth_a, bad_rotations[_i].body);
	field_error_is(bad_rotations[_i].code, bad_rotations[_i].field);
	ck_assert_str_eq(resp.rotated_cred, "");
	ck_assert_int_eq(sa_store_credential_get(st, id, &c), SA_STORE_OK);
	ck_assert_uint_eq(c.password_version, 1);
}
END_TEST

START_TEST(test_rotate_unknown_or_foreign_credential_404)
{
	char id[SA_ID_MAX];
	struct sa_credential theirs;
	const char *body = "{\"password\": \"" NEW_PASSWORD "\"}";

	create_ok(PRODUCT_USER, id);
	ck_assert_int_eq(sa_store_credential_create(st, trunk_b.id, "theirs", PRODUCT_PASSWORD, strlen(PRODUCT_PASSWORD),
	                                            0, NOW, &theirs, NULL, 0), SA_STORE_OK);
	call("POST", rotate_path("cred_nothere"), NULL, auth_a, body);
	error_is(404, "not_found");
	call("POST", rotate_path(theirs.id), NULL, auth_a, body);   /* another trunk's, named under ours */
	error_is(404, "not_found");
	call("POST", path_of("/v1/account/%s/trunks/%s/credentials/%s/rotate", acc_b.id, trunk_b.id, theirs.id), NULL,
	     auth_a, body);   /* another account's */
	error_is(404, "not_found");
	call("POST", path_of("%s/%s/rotated", creds_path(&trunk_a, &acc_a), id), NULL, auth_a, body);
	error_is(404, "not_found");
	call("POST", path_of("%s/%s/rotate/x", creds_path(&trunk_a, &acc_a), id), NULL, auth_a, body);
	error_is(404, "not_found");
	call("POST", rotate_path(id), NULL, auth_a, "{\"password\": ");
	error_is(400, "invalid_json");
	call("POST", rotate_path(id), NULL, auth_a, "[]");
	error_is(400, "invalid_json");
	call("POST", rotate_path(id), "overlap_seconds=5", auth_a, body);
	error_is(400, "invalid_parameter");
	ck_assert_int_eq(sa_store_credential_get(st, theirs.id, &theirs), SA_STORE_OK);
	ck_assert_uint_eq(theirs.password_version, 1);
}
END_TEST

/* ---- idempotency ---- */

static int post_idem_to(const char *path, const char *key, const char *body, int64_t now)
{
	struct sa_api_request req = { .method = "POST", .path = path, .authorization = auth_a,
	                              .idempotency_key = key, .body = body, .body_len = strlen(body), .now = now };
	json_error_t err;

	json_decref(answer);
	answer = NULL;
	sa_api_response_free(&resp);
	sa_api_handle(&ctx, &req, &resp);
	if (resp.body != NULL)
		ck_assert_ptr_nonnull(answer = json_loads(resp.body, 0, &err));
	return resp.status;
}

static int post_idem(const char *key, const char *body, int64_t now)
{
	return post_idem_to(creds_path(&trunk_a, &acc_a), key, body, now);
}

static size_t creds_in_store(void)
{
	ck_assert_int_eq(call("GET", creds_path(&trunk_a, &acc_a), "limit=1000", auth_a, NULL), 200);
	return json_array_size(data());
}

START_TEST(test_idempotent_post_replays_the_first_answer)
{
	char first[512], loc[256];

	ck_assert_int_eq(post_idem("order-1", PRODUCT_BODY, NOW), 201);
	snprintf(first, sizeof first, "%s", resp.body);
	snprintf(loc, sizeof loc, "%s", header("Location"));
	ck_assert_ptr_null(header("Idempotent-Replayed"));
	ck_assert_str_eq(resp.created_cred, str_at(answer, "id"));
	ck_assert_int_eq(post_idem("order-1", PRODUCT_BODY, NOW + 86399), 201);
	ck_assert_str_eq(resp.body, first);
	ck_assert_str_eq(header("Location"), loc);
	ck_assert_str_eq(header("Idempotent-Replayed"), "true");
	ck_assert_str_eq(resp.created_cred, "");   /* nothing was created: no side effects */
	ck_assert_uint_eq(creds_in_store(), 1);
}
END_TEST

START_TEST(test_idempotency_key_with_another_body_409)
{
	ck_assert_int_eq(post_idem("order-1", PRODUCT_BODY, NOW), 201);
	ck_assert_int_eq(post_idem("order-1", "{\"username\":\"other\",\"password\":\"secure_password_here_123\"}", NOW + 5),
	                 409);
	error_is(409, "idempotency_key_reused");
	ck_assert_uint_eq(creds_in_store(), 1);
}
END_TEST

START_TEST(test_idempotency_replays_errors_and_expires)
{
	const char *weak = "{\"username\":\"pbx-x\",\"password\":\"short\"}";

	ck_assert_int_eq(post_idem("k", weak, NOW), 422);
	ck_assert_int_eq(post_idem("k", weak, NOW + 10), 422);
	ck_assert_str_eq(header("Idempotent-Replayed"), "true");
	ck_assert_int_eq(post_idem("k2", PRODUCT_BODY, NOW), 201);
	/* a day later the key is free again: the request runs (and finds the username taken) */
	ck_assert_int_eq(post_idem("k2", PRODUCT_BODY, NOW + 86400), 409);
	error_is(409, "duplicate_username");
	ck_assert_ptr_null(header("Idempotent-Replayed"));
}
END_TEST

/* A rotation retried with its key is not a second rotation; another
 * password under the same key is a 409 and rotates nothing either. */
START_TEST(test_idempotent_rotate_rotates_once)
{
	char id[SA_ID_MAX], first[1024];
	struct sa_credential c;

	create_ok(PRODUCT_USER, id);
	ck_assert_int_eq(post_idem_to(rotate_path(id), "rot-1", "{\"password\": \"" NEW_PASSWORD "\"}", NOW), 200);
	snprintf(first, sizeof first, "%s", resp.body);
	ck_assert_int_eq(post_idem_to(rotate_path(id), "rot-1", "{\"password\": \"" NEW_PASSWORD "\"}", NOW + 60), 200);
	ck_assert_str_eq(resp.body, first);
	ck_assert_str_eq(header("Idempotent-Replayed"), "true");
	ck_assert_str_eq(resp.rotated_cred, "");   /* nothing ran: no counter, no log line */
	ck_assert_int_eq(post_idem_to(rotate_path(id), "rot-1", "{\"password\": \"third_password_7890\"}", NOW + 61),
	                 409);
	error_is(409, "idempotency_key_reused");
	ck_assert_int_eq(sa_store_credential_get(st, id, &c), SA_STORE_OK);
	ck_assert_uint_eq(c.password_version, 2);
}
END_TEST

START_TEST(test_idempotency_keys_are_per_account)
{
	ck_assert_int_eq(post_idem("shared", PRODUCT_BODY, NOW), 201);
	struct sa_api_request req = { .method = "POST", .path = creds_path(&trunk_b, &acc_b), .authorization = auth_b,
	                              .idempotency_key = "shared", .body = "{\"username\":\"b\",\"password\":\"secure_password_here_123\"}",
	                              .now = NOW };
	req.body_len = strlen(req.body);
	sa_api_response_free(&resp);
	sa_api_handle(&ctx, &req, &resp);
	ck_assert_int_eq(resp.status, 201);
	ck_assert_ptr_null(header("Idempotent-Replayed"));
}
END_TEST

static const char *const bad_idem_keys[] = { "", "tab\there", "\x7f", "caf\xc3\xa9" };

START_TEST(test_bad_idempotency_key_400)
{
	char longkey[300];

	if (_i == 4) {
		memset(longkey, 'k', 256);
		longkey[256] = '\0';
	}
	post_idem(_i == 4 ? longkey : bad_idem_keys[_i], PRODUCT_BODY, NOW);
	ck_assert_str_eq(error_is(400, "invalid_parameter"), "Idempotency-Key must be 1 to 255 printable ASCII characters");
	ck_assert_uint_eq(creds_in_store(), 0);
}
END_TEST

/* ---- time parsing ---- */

START_TEST(test_parse_time)
{
	int64_t t = 0;

	ck_assert_int_eq(sa_api_parse_time("1775731200", &t), 0);
	ck_assert_int_eq(t, NOW);
	ck_assert_int_eq(sa_api_parse_time("0", &t), 0);
	ck_assert_int_eq(t, 0);
	ck_assert_int_eq(sa_api_parse_time(NOW_TEXT, &t), 0);
	ck_assert_int_eq(t, NOW);
	ck_assert_int_eq(sa_api_parse_time("2026-04-09T10:40:00.123456Z", &t), 0);
	ck_assert_int_eq(t, NOW);
	ck_assert_int_eq(sa_api_parse_time("2026-04-09 06:10:00-04:30", &t), 0);
	ck_assert_int_eq(t, NOW);
	ck_assert_int_eq(sa_api_parse_time("2024-02-29T00:00:00Z", &t), 0);
	ck_assert_int_eq(sa_api_parse_time("2016-12-31T23:59:60Z", &t), 0);   /* leap second: taken as :59 */
	ck_assert_int_eq(t, 1483228799);
	ck_assert_int_eq(sa_api_parse_time("2025-02-29T00:00:00Z", &t), -1);
	ck_assert_int_eq(sa_api_parse_time("2026-13-01T00:00:00Z", &t), -1);
	ck_assert_int_eq(sa_api_parse_time("2026-04-09T10:40:00Zjunk", &t), -1);
	ck_assert_int_eq(sa_api_parse_time("-5", &t), -1);
	ck_assert_int_eq(sa_api_parse_time("", &t), -1);
}
END_TEST

START_TEST(test_error_helper_shape)
{
	struct sa_api_response r = { 0 };

	sa_api_error(&r, 413, "body_too_large", "request body is larger than 16384 bytes");
	ck_assert_int_eq(r.status, 413);
	ck_assert_str_eq(r.body, "{\n  \"error\": {\n    \"code\": \"body_too_large\",\n"
	                         "    \"message\": \"request body is larger than 16384 bytes\"\n  }\n}\n");
	sa_api_response_free(&r);
}
END_TEST

/* ---- webhooks ---- */

#define HOOK_BODY "{\"url\":\"https://hooks.example.com/x\",\"events\":[\"call.revoked\",\"auth.failed\"]}"

static const struct {
	const char *body;
	int status;
	const char *code, *field;
} webhook_refusals[] = {
	{ "{\"events\":[\"auth.failed\"]}", 422, "missing_field", "url" },
	{ "{\"url\":\"https://h/\"}", 422, "missing_field", "events" },
	{ "{\"url\":5,\"events\":[\"auth.failed\"]}", 422, "invalid_field", "url" },
	{ "{\"url\":\"gopher://h/\",\"events\":[\"auth.failed\"]}", 422, "invalid_field", "url" },
	{ "{\"url\":\"https://u@h/\",\"events\":[\"auth.failed\"]}", 422, "invalid_field", "url" },
	{ "{\"url\":\"https://h/\",\"events\":[]}", 422, "invalid_field", "events" },
	{ "{\"url\":\"https://h/\",\"events\":[\"auth.failed\",7]}", 422, "invalid_field", "events" },
	{ "{\"url\":\"https://h/\",\"events\":{\"auth.failed\":true}}", 422, "invalid_field", "events" },
	{ "{\"url\":\"https://h/\",\"events\":[\"auth.failed\"],\"active\":true}", 422, "invalid_field", "active" },
	{ "[]", 400, "invalid_json", NULL },
	{ "{\"url\":", 400, "invalid_json", NULL },
};

START_TEST(test_webhook_refusals_name_the_field)
{
	const char *path = path_of("/v1/account/%s/webhooks", acc_a.id);
	json_t *e;

	call("POST", path, NULL, auth_a, webhook_refusals[_i].body);
	ck_assert_int_eq(resp.status, webhook_refusals[_i].status);
	e = json_object_get(answer, "error");
	ck_assert_str_eq(str_at(e, "code"), webhook_refusals[_i].code);
	if (webhook_refusals[_i].field != NULL)
		ck_assert_str_eq(str_at(e, "field"), webhook_refusals[_i].field);
	else
		ck_assert_ptr_null(json_object_get(e, "field"));
	ck_assert_int_eq(call("GET", path, NULL, auth_a, NULL), 200);
	ck_assert_uint_eq(json_array_size(data()), 0);   /* nothing created */
}
END_TEST

START_TEST(test_webhook_secret_only_in_the_creation_answer)
{
	char path[128], id[SA_ID_MAX], secret[SA_STORE_WH_SECRET_MAX];

	snprintf(path, sizeof path, "/v1/account/%s/webhooks", acc_a.id);   /* path_of's buffers rotate */

	ck_assert_int_eq(call("POST", path, NULL, auth_a, HOOK_BODY), 201);
	snprintf(id, sizeof id, "%s", str_at(answer, "id"));
	snprintf(secret, sizeof secret, "%s", str_at(answer, "secret"));
	ck_assert_uint_eq(strlen(secret), 6 + 43);
	ck_assert_str_eq(resp.created_webhook, id);
	ck_assert_str_eq(header("Location"), path_of("%s/%s", path, id));
	/* the events in the API's order, whatever the request's */
	ck_assert_str_eq(json_string_value(json_array_get(json_object_get(answer, "events"), 0)), "auth.failed");
	ck_assert_str_eq(json_string_value(json_array_get(json_object_get(answer, "events"), 1)), "call.revoked");
	ck_assert_int_eq(call("GET", path_of("%s/%s", path, id), NULL, auth_a, NULL), 200);
	ck_assert_ptr_null(json_object_get(answer, "secret"));
	ck_assert_ptr_null(strstr(resp.body, secret));
	ck_assert_int_eq(call("GET", path, NULL, auth_a, NULL), 200);
	ck_assert_uint_eq(json_array_size(data()), 1);
	ck_assert_ptr_null(strstr(resp.body, secret));
	ck_assert_int_eq(call("GET", path_of("%s/%s/deliveries", path, id), NULL, auth_a, NULL), 200);
	ck_assert_uint_eq(json_array_size(data()), 0);
	ck_assert_int_eq(call("DELETE", path_of("%s/%s", path, id), NULL, auth_a, NULL), 204);
	ck_assert_int_eq(call("GET", path_of("%s/%s", path, id), NULL, auth_a, NULL), 404);
}
END_TEST

START_TEST(test_webhooks_are_the_accounts_own)
{
	char mine[128], theirs[192], id[SA_ID_MAX];

	snprintf(mine, sizeof mine, "/v1/account/%s/webhooks", acc_a.id);
	ck_assert_int_eq(call("POST", mine, NULL, auth_a, HOOK_BODY), 201);
	snprintf(id, sizeof id, "%s", str_at(answer, "id"));
	snprintf(theirs, sizeof theirs, "/v1/account/%s/webhooks/%s", acc_b.id, id);
	call("GET", theirs, NULL, auth_b, NULL);
	error_is(404, "not_found");
	call("GET", path_of("%s/deliveries", theirs), NULL, auth_b, NULL);
	error_is(404, "not_found");
	call("DELETE", theirs, NULL, auth_b, NULL);
	error_is(404, "not_found");
	call("GET", mine, NULL, auth_b, NULL);
	error_is(404, "not_found");
	ck_assert_int_eq(call("GET", path_of("/v1/account/%s/webhooks", acc_b.id), NULL, auth_b, NULL), 200);
	ck_assert_uint_eq(json_array_size(data()), 0);
	ck_assert_int_eq(call("GET", path_of("%s/%s", mine, id), NULL, auth_a, NULL), 200);   /* still there */
}
END_TEST

START_TEST(test_webhooks_per_account_are_bounded)
{
	const char *path = path_of("/v1/account/%s/webhooks", acc_a.id);

	for (int i = 0; i < SA_API_WEBHOOKS_MAX; i++)
		ck_assert_int_eq(call("POST", path, NULL, auth_a, HOOK_BODY), 201);
	call("POST", path, NULL, auth_a, HOOK_BODY);
	error_is(409, "limit_reached");
	ck_assert_int_eq(call("POST", path_of("/v1/account/%s/webhooks", acc_b.id), NULL, auth_b, HOOK_BODY), 201);
}
END_TEST

static Suite *api_suite(void)
{
	Suite *s = suite_create("api");
	TCase *tc = tcase_create("api");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_missing_key_is_401_with_bearer_challenge);
	tcase_add_loop_test(tc, test_invalid_key_is_401_invalid_token, 0, (int)(sizeof bad_authz / sizeof bad_authz[0]));
	tcase_add_test(tc, test_key_scheme_any_case_and_blanks);
	tcase_add_test(tc, test_auth_comes_before_routing);
	tcase_add_test(tc, test_trunks_lists_only_the_accounts_own);
	tcase_add_test(tc, test_trunk_show);
	tcase_add_test(tc, test_trunk_patch);
	tcase_add_test(tc, test_trunk_patch_invalid);
	tcase_add_test(tc, test_create_product_example_201);
	tcase_add_test(tc, test_created_credential_answers_digest);
	tcase_add_test(tc, test_list_in_creation_order_without_secrets);
	tcase_add_test(tc, test_list_empty_trunk);
	tcase_add_test(tc, test_show_one_credential);
	tcase_add_test(tc, test_delete_204_then_404);
	tcase_add_test(tc, test_delete_removes_registrations);
	tcase_add_test(tc, test_other_accounts_trunk_is_404_like_unknown);
	tcase_add_test(tc, test_other_accounts_path_is_404);
	tcase_add_test(tc, test_other_trunks_credential_is_404);
	tcase_add_loop_test(tc, test_unknown_paths_are_404, 0, (int)(sizeof bad_paths / sizeof bad_paths[0]));
	tcase_add_loop_test(tc, test_wrong_method_is_405_with_allow, 0,
	                    (int)(sizeof wrong_methods / sizeof wrong_methods[0]));
	tcase_add_loop_test(tc, test_bad_create_bodies, 0, (int)(sizeof bad_bodies / sizeof bad_bodies[0]));
	tcase_add_test(tc, test_configured_minimum_length);
	tcase_add_test(tc, test_duplicate_username_ignoring_case_409);
	tcase_add_test(tc, test_unknown_fields_are_ignored);
	tcase_add_test(tc, test_head_answers_as_get);
	tcase_add_test(tc, test_query_on_resource_without_parameters_400);
	tcase_add_test(tc, test_credentials_pages_in_creation_order);
	tcase_add_test(tc, test_credentials_cursor_must_be_the_trunks);
	tcase_add_test(tc, test_trunks_pages);
	tcase_add_test(tc, test_registrations_page_by_binding_identity);
	tcase_add_loop_test(tc, test_registrations_bad_cursor_400, 0, (int)(sizeof bad_cursors / sizeof bad_cursors[0]));
	tcase_add_test(tc, test_calls_page_by_call_id);
	tcase_add_test(tc, test_authfails_page_newest_first);
	tcase_add_loop_test(tc, test_lists_refuse_bad_paging_400, 0,
	                    (int)(sizeof bad_page_queries / sizeof bad_page_queries[0]));
	tcase_add_test(tc, test_lists_default_limit_100_max_1000);
	tcase_add_test(tc, test_registrations_current_bindings);
	tcase_add_test(tc, test_registrations_of_other_accounts_trunk_404);
	tcase_add_test(tc, test_authfails_newest_first_with_fields);
	tcase_add_test(tc, test_authfails_limit_default_and_max);
	tcase_add_loop_test(tc, test_authfails_since, 0, (int)(sizeof since_queries / sizeof since_queries[0]));
	tcase_add_loop_test(tc, test_authfails_bad_query_400, 0, (int)(sizeof bad_queries / sizeof bad_queries[0]));
	tcase_add_test(tc, test_authfails_odd_bytes_stay_valid_json);
	tcase_add_test(tc, test_authfails_of_other_accounts_trunk_404);
	tcase_add_test(tc, test_rotate_answers_the_credential_at_version_2);
	tcase_add_test(tc, test_rotate_overlap_bounds);
	tcase_add_loop_test(tc, test_rotate_bad_bodies_422, 0, (int)(sizeof bad_rotations / sizeof bad_rotations[0]));
	tcase_add_test(tc, test_rotate_unknown_or_foreign_credential_404);
	tcase_add_test(tc, test_idempotent_post_replays_the_first_answer);
	tcase_add_test(tc, test_idempotency_key_with_another_body_409);
	tcase_add_test(tc, test_idempotency_replays_errors_and_expires);
	tcase_add_test(tc, test_idempotency_keys_are_per_account);
	tcase_add_test(tc, test_idempotent_rotate_rotates_once);
	tcase_add_loop_test(tc, test_webhook_refusals_name_the_field, 0,
	                    (int)(sizeof webhook_refusals / sizeof webhook_refusals[0]));
	tcase_add_test(tc, test_webhook_secret_only_in_the_creation_answer);
	tcase_add_test(tc, test_webhooks_are_the_accounts_own);
	tcase_add_test(tc, test_webhooks_per_account_are_bounded);
	tcase_add_loop_test(tc, test_bad_idempotency_key_400, 0, 5);
	tcase_add_test(tc, test_parse_time);
	tcase_add_test(tc, test_error_helper_shape);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(api_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
