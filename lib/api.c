/* api.c: the credential REST API: authenticate the key, route the path, answer in JSON; no HTTP library here. */
#include "api.h"
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif
#include "webhook.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#ifdef HAVE_LIBPQ
#include "pgstore.h"
/* Fleet mode: trunks, policies, credentials and webhooks are the database's
 * (ctx->pg); so are registrations, failures, calls in progress and webhook
 * deliveries (each with its node), and Idempotency-Key answers. Keys stay
 * the node's. */
#define SOR(ctx, pgcall, stcall) ((ctx)->pg != NULL ? (pgcall) : (stcall))
#define IDEM_CLAIM_LEN SA_PG_IDEM_CLAIM_LEN
#else
#define IDEM_CLAIM_LEN 0
#define SOR(ctx, pgcall, stcall) (stcall)
#endif

/* What a path names. Every resource but the trunk list lives under one trunk. */
enum resource {
	RES_TRUNKS = 0,         /* /v1/account/{a}/trunks */
	RES_TRUNK,              /* .../trunks/{t} */
	RES_CREDENTIALS,        /* .../trunks/{t}/credentials */
	RES_CREDENTIAL,         /* .../trunks/{t}/credentials/{c} */
	RES_ROTATE,             /* .../trunks/{t}/credentials/{c}/rotate */
	RES_REGISTRATIONS,      /* .../trunks/{t}/registrations */
	RES_AUTHFAILS,          /* .../trunks/{t}/auth-failures */
	RES_CALLS,              /* .../trunks/{t}/calls */
	RES_WEBHOOKS,           /* /v1/account/{a}/webhooks */
	RES_WEBHOOK,            /* .../webhooks/{w} */
	RES_DELIVERIES,         /* .../webhooks/{w}/deliveries */
	RES_COUNT
};

/* What a list's query asks for (see "paging" below). */
enum query_kind {
	Q_NONE = 0,             /* no query parameters */
	Q_PAGE,                 /* limit, starting_after */
	Q_PAGE_SINCE,           /* limit, starting_after, since */
};

struct list_query {
	unsigned limit;
	char after[SA_API_CURSOR_MAX];   /* "" when not given */
	int64_t since;
	bool seen_limit, seen_after, seen_since;
};

struct target {
	enum resource res;
	char account[SA_ID_MAX];
	char trunk[SA_ID_MAX];
	char cred[SA_ID_MAX];
	char webhook[SA_ID_MAX];
	struct list_query q;
};

typedef void handler_fn(const struct sa_api_ctx *ctx, const struct sa_api_request *req,
                        const struct target *t, struct sa_api_response *resp);

static handler_fn trunks_list, trunk_show, trunk_patch, credentials_list, credential_create, credential_show,
	credential_delete, credential_rotate, registrations_list, authfails_list, calls_list, webhooks_list,
	webhook_create, webhook_show, webhook_delete, deliveries_list;

/* Per resource: the methods it answers (the Allow header) and who answers them. */
static const struct route {
	const char *allow;
	handler_fn *get, *post, *del, *patch;
	enum query_kind query;   /* of GET; other methods take none */
} routes[RES_COUNT] = {
	[RES_TRUNKS] = { "GET", trunks_list, NULL, NULL, NULL, Q_PAGE },
	[RES_TRUNK] = { "GET, PATCH", trunk_show, NULL, NULL, trunk_patch, Q_NONE },
	[RES_CREDENTIALS] = { "GET, POST", credentials_list, credential_create, NULL, NULL, Q_PAGE },
	[RES_CREDENTIAL] = { "GET, DELETE", credential_show, NULL, credential_delete, NULL, Q_NONE },
	[RES_ROTATE] = { "POST", NULL, credential_rotate, NULL, NULL, Q_NONE },
	[RES_REGISTRATIONS] = { "GET", registrations_list, NULL, NULL, NULL, Q_PAGE },
	[RES_AUTHFAILS] = { "GET", authfails_list, NULL, NULL, NULL, Q_PAGE_SINCE },
	[RES_CALLS] = { "GET", calls_list, NULL, NULL, NULL, Q_PAGE },
	[RES_WEBHOOKS] = { "GET, POST", webhooks_list, webhook_create, NULL, NULL, Q_PAGE },
	[RES_WEBHOOK] = { "GET, DELETE", webhook_show, NULL, webhook_delete, NULL, Q_NONE },
	[RES_DELIVERIES] = { "GET", deliveries_list, NULL, NULL, NULL, Q_PAGE },
};

/* The segment after /trunks/{t}/ for each trunk-scoped collection. */
static const struct {
	const char *name;
	enum resource res;
} trunk_children[] = {
	{ "credentials", RES_CREDENTIALS },
	{ "registrations", RES_REGISTRATIONS },
	{ "auth-failures", RES_AUTHFAILS },
	{ "calls", RES_CALLS },
};

/* ---- responses ---- */

static void header_add(struct sa_api_response *r, const char *name, const char *value)
{
	if (r->nhdr == SA_API_MAX_HEADERS)
		return;
	snprintf(r->hdr[r->nhdr].name, sizeof r->hdr[0].name, "%s", name);
	snprintf(r->hdr[r->nhdr].value, sizeof r->hdr[0].value, "%s", value);
	r->nhdr++;
}

/* The answer when even building an answer failed: a 500 with a fixed body. */
static void respond_internal(struct sa_api_response *r)
{
	static const char body[] = "{\n  \"error\": {\n    \"code\": \"internal\",\n"
	                           "    \"message\": \"internal error\"\n  }\n}\n";

	free(r->body);
	r->status = 500;
	r->error_code = "internal";
	r->body = strdup(body);
	r->body_len = r->body ? strlen(body) : 0;
}

/* Takes j. Pretty-printed like sipauthctl's output, so both read the same. */
static void respond_json(struct sa_api_response *r, int status, json_t *j)
{
	char *s = j ? json_dumps(j, JSON_INDENT(2)) : NULL;
	size_t n = s ? strlen(s) : 0;

	json_decref(j);
	if (s == NULL) {
		respond_internal(r);
		return;
	}
	r->body = realloc(s, n + 2);
	if (r->body == NULL) {
		free(s);
		respond_internal(r);
		return;
	}
	memcpy(r->body + n, "\n", 2);
	r->body_len = n + 1;
	r->status = status;
}

void sa_api_error(struct sa_api_response *r, int status, const char *code, const char *message)
{
	free(r->body);
	r->body = NULL;
	r->error_code = code;
	respond_json(r, status, json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", message));
}

__attribute__((format(printf, 4, 5)))
static void errorf(struct sa_api_response *r, int status, const char *code, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	sa_api_error(r, status, code, msg);
}

/* A 422 that names the field that broke a rule ("" or NULL: none). */
__attribute__((format(printf, 4, 5)))
static void field_errorf(struct sa_api_response *r, const char *code, const char *field, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	free(r->body);
	r->body = NULL;
	r->error_code = code;
	respond_json(r, 422, json_pack("{s:{s:s,s:s,s:s*}}", "error", "code", code, "message", msg, "field",
	                               field != NULL && field[0] != '\0' ? field : NULL));
}

/* The request's body as JSON (any value), or NULL having answered 400.
 * jansson's error text quotes the input near the fault, which may be a
 * password: the answer says where, not what. */
static json_t *body_parse(const struct sa_api_request *req, struct sa_api_response *r)
{
	json_error_t jerr;
	json_t *body = json_loadb(req->body ? req->body : "", req->body_len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY,
	                          &jerr);

	if (body == NULL)
		errorf(r, 400, "invalid_json", "request body is not valid JSON (line %d, column %d)", jerr.line,
		       jerr.column);
	return body;
}

/* A full store (map or disk) is 507 (RFC 4918 §11.5): the request was fine
 * and may succeed once space is made; deletes still work. Anything else the
 * store says is ours to fix: 500, naming the cause. */
void sa_api_store_error(struct sa_api_response *r, int err)
{
	if (err == SA_STORE_EUNAVAIL)
		errorf(r, 503, "database_unavailable", "the database is unavailable: nothing was changed; retry later "
		       "(SIP goes on from this node's copy)");
	else if (err == SA_STORE_EUNKNOWN)
		errorf(r, 503, "outcome_unknown", "the database went away after the change was sent: it may or may not "
		       "have been made; look (GET) before trying again");
	else if (err == SA_STORE_EMAPFULL || err == SA_STORE_ENOSPC)
		errorf(r, 507, "insufficient_storage", "store error: %s: new records are refused until space is made",
		       sa_store_strerror(err));
	else
		errorf(r, 500, "internal", "store error: %s", sa_store_strerror(err));
}

void sa_api_response_free(struct sa_api_response *r)
{
	free(r->body);
	r->body = NULL;
	r->body_len = 0;
}

/* ---- JSON values ---- */

json_t *sa_api_rfc3339(int64_t t)
{
	char buf[32];
	time_t tt = (time_t)t;
	struct tm tm;

	if (gmtime_r(&tt, &tm) == NULL || strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		return json_null();
	return json_string(buf);
}

/* Text that came from the network (a username tried, a User-Agent) may be
 * any bytes: shown as-is when it is UTF-8, else with '?' for each odd byte. */
json_t *sa_api_net_string(const char *s)
{
	char buf[SA_CONTACT_MAX];
	size_t i;
	json_t *j = json_string(s);

	if (j != NULL)
		return j;
	for (i = 0; s[i] != '\0' && i < sizeof buf - 1; i++)
		buf[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
	buf[i] = '\0';
	return json_string(buf);
}

/* Adds o to arr; false when o could not be made. */
static bool append(json_t *arr, json_t *o)
{
	return o != NULL && json_array_append_new(arr, o) == 0;
}

/* Collections are answered as {"data":[...],"has_more":bool}, a page of at
 * most limit items; a listing callback that fails sets failed and stops
 * the walk. */
struct listing {
	json_t *data;
	unsigned limit;
	bool has_more;
	bool failed;
};

static struct listing listing_new(const struct target *t)
{
	return (struct listing){ .data = json_array(), .limit = t->q.limit };
}

/* Whether the page is full: the walk stops at the first item past it,
 * which only says that there is more. */
static bool page_full(struct listing *l)
{
	if (json_array_size(l->data) < l->limit)
		return false;
	l->has_more = true;
	return true;
}

/* Adds o to the page; non-zero stops the walk (full or failed). */
static int page_add(struct listing *l, json_t *o)
{
	if (page_full(l)) {
		json_decref(o);
		return 1;
	}
	l->failed = !append(l->data, o);
	return l->failed;
}

static void respond_listing(struct sa_api_response *r, struct listing *l, int err)
{
	if (err != SA_STORE_OK) {
		json_decref(l->data);
		if (err == SA_STORE_ENOTFOUND)   /* gone since it was checked */
			sa_api_error(r, 404, "not_found", "trunk not found");
		else
			sa_api_store_error(r, err);
		return;
	}
	if (l->failed) {
		json_decref(l->data);
		respond_internal(r);
		return;
	}
	respond_json(r, 200, json_pack("{s:o,s:b}", "data", l->data, "has_more", l->has_more));
}

/* starting_after names nothing this list can start after. */
static void cursor_unknown(struct sa_api_response *r, struct listing *l, const char *what)
{
	json_decref(l->data);
	l->data = NULL;
	errorf(r, 400, "invalid_parameter", "starting_after must be the id of %s", what);
}

/* The answer to a store walk that started after the cursor: EINVAL is a
 * cursor that is not the id of `what`. */
static void respond_walk(struct sa_api_response *r, struct listing *l, int err, const char *what)
{
	if (err == SA_STORE_EINVAL)
		cursor_unknown(r, l, what);
	else
		respond_listing(r, l, err);
}

/* ---- trunks ---- */

/* The same shape in the API and in `sipauthctl trunk list`: the trunk and
 * its carrier controls (p NULL: the defaults). */
json_t *sa_api_trunk_json(const struct sa_trunk *t, const struct sa_trunk_policy *p)
{
	struct sa_trunk_policy def;
	json_t *o = json_pack("{s:s,s:s,s:s,s:o}", "id", t->id, "account_id", t->account_id, "name", t->name,
	                      "created_at", sa_api_rfc3339(t->created_at));

	if (p == NULL) {
		sa_policy_default(&def);
		p = &def;
	}
	if (o != NULL && sa_policy_to_json(p, o) < 0) {
		json_decref(o);
		return NULL;
	}
	return o;
}

/* An account has few trunks: the page is cut from the whole walk. */
struct trunk_listing {
	struct listing l;
	const struct sa_api_ctx *ctx;
	const char *after;      /* skipping up to this trunk; NULL once passed */
};

static int trunk_cb(const struct sa_trunk *t, void *arg)
{
	struct trunk_listing *tl = arg;
	struct sa_trunk_policy p;

	if (tl->after != NULL) {
		if (strcmp(t->id, tl->after) == 0)
			tl->after = NULL;
		return 0;
	}
	if (page_full(&tl->l))
		return 1;
	int err = SOR(tl->ctx, sa_pg_trunk_policy_get(tl->ctx->pg, t->id, &p), sa_store_trunk_policy_get(tl->ctx->store, t->id, &p));
	tl->l.failed = err != SA_STORE_OK || !append(tl->l.data, sa_api_trunk_json(t, &p));
	return tl->l.failed;
}

static void trunks_list(const struct sa_api_ctx *ctx, const struct sa_api_request *req,
                        const struct target *t, struct sa_api_response *r)
{
	struct trunk_listing tl = { .l = listing_new(t), .ctx = ctx,
	                            .after = t->q.after[0] ? t->q.after : NULL };
	int err = SOR(ctx, sa_pg_trunk_list(ctx->pg, t->account, trunk_cb, &tl),
	              sa_store_trunk_list(ctx->store, t->account, trunk_cb, &tl));

	if (err == SA_STORE_OK && tl.after != NULL)
		cursor_unknown(r, &tl.l, "a trunk of this account");
	else
		respond_listing(r, &tl.l, err);
}

static void trunk_respond(const struct sa_api_ctx *ctx, const struct target *t, struct sa_api_response *r)
{
	struct sa_trunk tr;
	struct sa_trunk_policy p;
	int err = SOR(ctx, sa_pg_trunk_get(ctx->pg, t->trunk, &tr), sa_store_trunk_get(ctx->store, t->trunk, &tr));

	if (err == SA_STORE_OK)
		err = SOR(ctx, sa_pg_trunk_policy_get(ctx->pg, t->trunk, &p), sa_store_trunk_policy_get(ctx->store, t->trunk, &p));
	if (err != SA_STORE_OK)
		sa_api_store_error(r, err);
	else
		respond_json(r, 200, sa_api_trunk_json(&tr, &p));
}

static void trunk_show(const struct sa_api_ctx *ctx, const struct sa_api_request *req,
                       const struct target *t, struct sa_api_response *r)
{
	trunk_respond(ctx, t, r);
}

/* PATCH: any of the carrier controls; the others keep their values. A bad
 * value is a 422 naming the field and its rule, and changes nothing. */
static void trunk_patch(const struct sa_api_ctx *ctx, const struct sa_api_request *req,
                        const struct target *t, struct sa_api_response *r)
{
	char field[SA_POLICY_FIELD_MAX], why[200];
	struct sa_trunk_policy p;
	json_t *body = body_parse(req, r);

	if (body == NULL)
		return;
	int err = SOR(ctx, sa_pg_trunk_policy_get(ctx->pg, t->trunk, &p), sa_store_trunk_policy_get(ctx->store, t->trunk, &p));
	if (err != SA_STORE_OK) {
		sa_api_store_error(r, err);
	} else if (sa_policy_patch(&p, body, field, why, sizeof why) < 0) {
		field_errorf(r, "invalid_field", field, "%s%s%s", field, field[0] ? " " : "", why);
	} else if ((err = SOR(ctx, sa_pg_trunk_policy_set(ctx->pg, t->trunk, &p),
	                      sa_store_trunk_policy_set(ctx->store, t->trunk, &p))) != SA_STORE_OK) {
		sa_api_store_error(r, err);
	} else {
		snprintf(r->patched_trunk, sizeof r->patched_trunk, "%s", t->trunk);
		trunk_respond(ctx, t, r);
	}
	json_decref(body);
}

/* ---- credentials ---- */

/* A time, or null for 0 (never). */
static json_t *rfc3339_or_null(int64_t t)
{
	return t != 0 ? sa_api_rfc3339(t) : json_null();
}

/* The product page's answer to a create: never the password, never an HA1. */
json_t *sa_api_credential_created_json(const struct sa_credential *c)
{
	return json_pack("{s:s,s:s,s:s,s:o}", "id", c->id, "trunk_id", c->trunk_id, "username", c->username,
	                 "created_at", sa_api_rfc3339(c->created_at));
}

/* The credential as GET, the list, rotate and sipauthctl show it: the
 * create answer, and which password is current (password_version), when it
 * was rotated and until when the one before it authenticates or did (both
 * null: never rotated). */
json_t *sa_api_credential_json(const struct sa_credential *c)
{
	json_t *o = sa_api_credential_created_json(c);
	bool prev = sa_credential_has_previous(c);

	if (o != NULL && json_object_update_new(o, json_pack("{s:I,s:o,s:o}", "password_version",
	                                                      (json_int_t)c->password_version, "rotated_at",
	                                                      rfc3339_or_null(c->rotated_at),
	                                                      "previous_password_expires_at",
	                                                      prev ? sa_api_rfc3339(c->previous_until) : json_null())) < 0) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static int credential_cb(const struct sa_credential *c, void *arg)
{
	struct listing *l = arg;

	if (page_full(l))
		return 1;
	l->failed = !append(l->data, sa_api_credential_json(c));
	return l->failed;
}

/* A trunk may hold 100 000 credentials: the store starts the walk after
 * the cursor and it stops one past the page. */
static void credentials_list(const struct sa_api_ctx *ctx, const struct sa_api_request *req,
                             const struct target *t, struct sa_api_response *r)
{
	struct listing l = listing_new(t);
	respond_walk(r, &l, SOR(ctx, sa_pg_credential_list_after(ctx->pg, t->trunk, t->q.after, credential_cb, &l),
	                        sa_store_credential_list_after(ctx->store, t->trunk, t->q.after, credential_cb, &l)),
	             "a credential of this trunk");
}

/* A credential of this trunk, or the same 404 whether it is unknown or another trunk's. */
static int credential_of_trunk(const struct sa_api_ctx *ctx, const struct target *t,
                               struct sa_credential *c, struct sa_api_response *r)
{
	int err = SOR(ctx, sa_pg_credential_get(ctx->pg, t->cred, c), sa_store_credential_get(ctx->store, t->cred, c));

	if (err == SA_STORE_OK && strcmp(c->trunk_id, t->trunk) != 0)
		err = SA_STORE_ENOTFOUND;
	if (err == SA_STORE_ENOTFOUND)
		errorf(r, 404, "not_found", "credential %s not found on trunk %s", t->cred, t->trunk);
	else if (err != SA_STORE_OK)
		sa_api_store_error(r, err);
	sa_credential_wipe(c);
	return err;
}

static void credential_show(const struct sa_api_ctx *ctx, const struct sa_api_request *req,
                            const struct target *t, struct sa_api_response *r)
{
	struct sa_credential c;

	if (credential_of_trunk(ctx, t, &c, r) == SA_STORE_OK)
		respond_json(r, 200, sa_api_credential_json(&c));
}

static void credential_delete(const struct sa_api_ctx *ctx, const struct sa_api_request *req,
                              const struct target *t, struct sa_api_response *r)
{
	int err = SOR(ctx, sa_pg_credential_delete(ctx->pg, t->trunk, t->cred),
	              sa_store_credential_delete(ctx->store, t->trunk, t->cred));

	if (err == SA_STORE_ENOTFOUND) {
		errorf(r, 404, "not_found", "credential %s not found on trunk %s", t->cred, t->trunk);
		return;
	}
	if (err != SA_STORE_OK) {
		sa_api_store_error(r, err);
		return;
	}
	r->status = 204;
	snprintf(r->deleted_cred, sizeof r->deleted_cred, "%s", t->cred);
}

/* The POST body's two fields: wrong types are a 400, absent ones a 422. */
struct cred_input {
	const char *username;
	const char *password;
	size_t password_len;
};

static int field_string(json_t *body, const char *name, json_t **out, struct sa_api_response *r)
{
	*out = json_object_get(body, name);
	if (*out != NULL && !json_is_string(*out)) {
		errorf(r, 400, "invalid_field", "%s must be a string", name);
		return -1;
	}
	return 0;
}

static int cred_input_read(json_t *body, struct cred_input *in, struct sa_api_response *r)
{
	json_t *u, *p;

	if (!json_is_object(body)) {
		sa_api_error(r, 400, "invalid_json", "request body must be a JSON object");
		return -1;
	}
	if (field_string(body, "username", &u, r) < 0 || field_string(body, "password", &p, r) < 0)
		return -1;
	if (u == NULL || p == NULL) {
		errorf(r, 422, "missing_field", "%s is required", u == NULL ? "username" : "password");
		return -1;
	}
	in->username = json_string_value(u);
	in->password = json_string_value(p);
	in->password_len = json_string_length(p);
	return 0;
}

static void credential_create_fail(struct sa_api_response *r, int err, const char *user, const char *why)
{
	switch (err) {
	case SA_STORE_EINVAL:
		if (strncmp(why, "password", 8) == 0)
			sa_api_error(r, 422, "weak_password", why);
		else
			sa_api_error(r, 422, "invalid_username", why);
		break;
	case SA_STORE_EEXISTS:
		errorf(r, 409, "duplicate_username",
		       "username %s is already used on this trunk (usernames are unique ignoring case)", user);
		break;
	case SA_STORE_ENOTFOUND:
		sa_api_error(r, 404, "not_found", "trunk not found");
		break;
	default:
		sa_api_store_error(r, err);
	}
}

static void credential_created(struct sa_api_response *r, const struct target *t, struct sa_credential *c)
{
	char loc[sizeof r->hdr[0].value];

	snprintf(loc, sizeof loc, "/v1/account/%s/trunks/%s/credentials/%s", t->account, t->trunk, c->id);
	header_add(r, "Location", loc);
	snprintf(r->created_cred, sizeof r->created_cred, "%s", c->id);
	snprintf(r->created_user, sizeof r->created_user, "%s", c->username);
	sa_credential_wipe(c);
	respond_json(r, 201, sa_api_credential_created_json(c));
}

/* The password lives in the parsed body only; it is wiped before the body is freed. */
static void body_free(json_t *body)
{
	json_t *p = json_is_object(body) ? json_object_get(body, "password") : NULL;

	if (json_is_string(p))
		OPENSSL_cleanse((char *)json_string_value(p), json_string_length(p));
	json_decref(body);
}

static void credential_create(const struct sa_api_ctx *ctx, const struct sa_api_request *req,
                              const struct target *t, struct sa_api_response *r)
{
	char why[160] = "";
	struct sa_credential c;
	struct cred_input in;
	json_t *body = body_parse(req, r);

	if (body == NULL)
		return;
	if (cred_input_read(body, &in, r) == 0) {
		int err = SOR(ctx, sa_pg_credential_create(ctx->pg, t->trunk, in.username, in.password, in.password_len,
		                                           ctx->min_password_len, req->now, &c, why, sizeof why),
		              sa_store_credential_create(ctx->store, t->trunk, in.username, in.password, in.password_len,
		                                         ctx->min_password_len, req->now, &c, why, sizeof why));
		if (err == SA_STORE_OK)
			credential_created(r, t, &c);
		else
			credential_create_fail(r, err, in.username, why);
	}
	body_free(body);
}

/* ---- rotation ---- */

/* The rotate body: password (required) and overlap_seconds (0..max,
 * default SA_ROTATE_OVERLAP_DEFAULT); anything else is refused, so that a
 * misspelt overlap is not silently the default. Every bad field is a 422
 * naming it. */
struct rotate_input {
	const char *password;
	size_t password_len;
	unsigned overlap;
};

static int rotate_field(const char *key, json_t *v, struct rotate_input *in, struct sa_api_response *r)
{
	if (strcmp(key, "password") == 0) {
		if (!json_is_string(v)) {
			field_errorf(r, "invalid_field", key, "password must be a string");
			return -1;
		}
		in->password = json_string_value(v);
		in->password_len = json_string_length(v);
		return 0;
	}
	if (strcmp(key, "overlap_seconds") == 0) {
		json_int_t n = json_is_integer(v) ? json_integer_value(v) : -1;
		if (n < 0 || n > SA_ROTATE_OVERLAP_MAX) {
			field_errorf(r, "invalid_field", key, "overlap_seconds must be an integer from 0 to %d",
			             SA_ROTATE_OVERLAP_MAX);
			return -1;
		}
		in->overlap = (unsigned)n;
		return 0;
	}
	field_errorf(r, "invalid_field", key, "%s is not a rotation field (password, overlap_seconds)", key);
	return -1;
}

static int rotate_input_read(json_t *body, struct rotate_input *in, struct sa_api_response *r)
{
	const char *key;
	json_t *v;

	if (!json_is_object(body)) {
		sa_api_error(r, 400, "invalid_json", "request body must be a JSON object");
		return -1;
	}
	in->password = NULL;
	in->overlap = SA_ROTATE_OVERLAP_DEFAULT;
	json_object_foreach(body, key, v) {
		if (rotate_field(key, v, in, r) < 0)
			return -1;
	}
	if (in->password == NULL) {
		field_errorf(r, "missing_field", "password", "password is required");
		return -1;
	}
	return 0;
}

static void credential_rotate_fail(struct sa_api_response *r, const struct target *t, int err, const char *why)
{
	if (err == SA_STORE_EINVAL)
		field_errorf(r, "weak_password", "password", "%s", why);
	else if (err == SA_STORE_ENOTFOUND)
		errorf(r, 404, "not_found", "credential %s not found on trunk %s", t->cred, t->trunk);
	else
		sa_api_store_error(r, err);
}

/* POST .../credentials/{c}/rotate: a new password, the old one going on for
 * the overlap. The calls it set up go on (nothing is deleted). */
static void credential_rotate(const struct sa_api_ctx *ctx, const struct sa_api_request *req,
                              const struct target *t, struct sa_api_response *r)
{
	char why[160] = "";
	struct sa_credential c;
	struct rotate_input in;
	json_t *body = body_parse(req, r);

	if (body == NULL)
		return;
	if (rotate_input_read(body, &in, r) == 0) {
		int err = SOR(ctx, sa_pg_credential_rotate(ctx->pg, t->trunk, t->cred, in.password, in.password_len,
		                                           ctx->min_password_len, in.overlap, req->now, &c, why, sizeof why),
		              sa_store_credential_rotate(ctx->store, t->trunk, t->cred, in.password, in.password_len,
		                                         ctx->min_password_len, in.overlap, req->now, &c, why, sizeof why));
		if (err == SA_STORE_OK) {
			sa_credential_wipe(&c);
			snprintf(r->rotated_cred, sizeof r->rotated_cred, "%s", c.id);
			r->rotated_version = c.password_version;
			r->rotated_overlap = in.overlap;
			respond_json(r, 200, sa_api_credential_json(&c));
		} else {
			credential_rotate_fail(r, t, err, why);
		}
	}
	body_free(body);
}

/* ---- registrations ---- */

static int hexval(char c);

/* A registration's id is "reg_", the hex of its credential id and the hex
 * of its contact's SHA-256: the binding's identity (one per credential and
 * contact) and its place in the store's order of a trunk's bindings
 * (credential id, then the contact's hash). A page can then start after a
 * binding that has expired or been removed since. Clients treat it as opaque. */
#define REG_PREFIX "reg_"
#define REG_HASH_HEX (2 * SHA256_DIGEST_LENGTH)

struct reg_pos {
	char cred[SA_ID_MAX];
	unsigned char hash[SHA256_DIGEST_LENGTH];
};

static void hex_put(const unsigned char *in, size_t n, char *out)
{
	static const char digit[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digit[in[i] >> 4];
		out[2 * i + 1] = digit[in[i] & 15];
	}
	out[2 * n] = '\0';
}

/* n bytes from 2n hex digits (lower case only: ids are written so). */
static int hex_get(const char *in, size_t n, unsigned char *out)
{
	for (size_t i = 0; i < n; i++) {
		int hi = hexval(in[2 * i]), lo = hexval(in[2 * i + 1]);
		if (hi < 0 || lo < 0 || isupper((unsigned char)in[2 * i]) || isupper((unsigned char)in[2 * i + 1]))
			return -1;
		out[i] = (unsigned char)(hi * 16 + lo);
	}
	return 0;
}

static void reg_id(const struct sa_binding *b, char out[SA_API_CURSOR_MAX])
{
	unsigned char h[SHA256_DIGEST_LENGTH];
	size_t n = strnlen(b->cred_id, SA_ID_MAX - 1);

	SHA256((const unsigned char *)b->contact, strnlen(b->contact, sizeof b->contact), h);
	memcpy(out, REG_PREFIX, 4);
	hex_put((const unsigned char *)b->cred_id, n, out + 4);
	hex_put(h, sizeof h, out + 4 + 2 * n);
}

static int reg_id_parse(const char *id, struct reg_pos *pos)
{
	size_t len = strlen(id), n;

	if (strncmp(id, REG_PREFIX, 4) != 0 || len <= 4 + REG_HASH_HEX || (len - 4 - REG_HASH_HEX) % 2 != 0)
		return -1;
	n = (len - 4 - REG_HASH_HEX) / 2;
	if (n >= SA_ID_MAX || hex_get(id + 4, n, (unsigned char *)pos->cred) < 0 ||
	    hex_get(id + 4 + 2 * n, sizeof pos->hash, pos->hash) < 0 || memchr(pos->cred, '\0', n) != NULL)
		return -1;
	pos->cred[n] = '\0';
	return 0;
}

/* Whether b comes after pos in the store's order. */
static bool reg_after(const struct sa_binding *b, const struct reg_pos *pos)
{
	unsigned char h[SHA256_DIGEST_LENGTH];
	int c = strcmp(b->cred_id, pos->cred);

	if (c != 0)
		return c > 0;
	SHA256((const unsigned char *)b->contact, strnlen(b->contact, sizeof b->contact), h);
	return memcmp(h, pos->hash, sizeof h) > 0;
}

/* A page of bindings is gathered first so that usernames can be looked up afterwards. */
struct bindings {
	struct sa_binding *b;
	size_t n, cap;
	bool failed, has_more;
	unsigned limit;
	const struct reg_pos *after;   /* NULL: from the first */
	int64_t now;
	char (*node)[64];              /* fleet mode: each binding's owner */
};

static int binding_cb(const struct sa_binding *b, void *arg)
{
	struct bindings *bs = arg;

	if (b->expires_at <= bs->now)   /* expired, not yet swept by housekeeping */
		return 0;
	if (bs->after != NULL && !reg_after(b, bs->after))
		return 0;
	if (bs->n == bs->limit) {
		bs->has_more = true;
		return 1;
	}
	if (bs->n == bs->cap) {
		size_t cap = bs->cap ? bs->cap * 2 : 16;
		struct sa_binding *nb = realloc(bs->b, cap * sizeof *nb);
		if (nb == NULL) {
			bs->failed = true;
			return 1;
		}
		bs->b = nb;
		bs->cap = cap;
	}
	bs->b[bs->n++] = *b;
	return 0;
}

#ifdef HAVE_LIBPQ
/* Fleet mode: the database's bindings, each with the node that holds its flow. */
static int fleet_binding_cb(const struct sa_binding *b, const char *node, void *arg)
{
	struct bindings *bs = arg;
	size_t n = bs->n, cap = bs->cap;
	int stop = binding_cb(b, bs);

	if (bs->n == n)
		return stop;
	if (bs->cap != cap || bs->node == NULL) {
		char (*nn)[64] = realloc(bs->node, bs->cap * sizeof *nn);
		if (nn == NULL) {
			bs->failed = true;
			return 1;
		}
		bs->node = nn;
	}
	snprintf(bs->node[n], sizeof bs->node[n], "%s", node);
	return stop;
}
#endif

static json_t *binding_json(const struct sa_api_ctx *ctx, const struct sa_binding *b, const char *node)
{
	struct sa_credential c;
	char id[SA_API_CURSOR_MAX];
	json_t *user, *o;

	if (sa_store_credential_get(ctx->store, b->cred_id, &c) == SA_STORE_OK) {
		sa_credential_wipe(&c);
		user = json_string(c.username);
	} else {
		user = json_null();   /* deleted between the two reads */
	}
	reg_id(b, id);
	o = json_pack("{s:s,s:s,s:o,s:o,s:o,s:i,s:s,s:o,s:o,s:o,s:o,s:I}", "id", id,
	              "credential_id", b->cred_id, "username", user,
	              "contact", sa_api_net_string(b->contact), "source_address", sa_api_net_string(b->source),
	              "source_port", (json_int_t)b->source_port, "transport", b->transport,
	              "user_agent", sa_api_net_string(b->user_agent),
	              "registered_at", sa_api_rfc3339(b->registered_at), "updated_at", sa_api_rfc3339(b->updated_at),
	              "expires_at", sa_api_rfc3339(b->expires_at), "password_version", (json_int_t)b->password_version);
	if (o != NULL && node != NULL && json_object_set_new(o, "node", json_string(node)) < 0) {
		json_decref(o);
		o = NULL;
	}
	return o;
}

static void registrations_list(const struct sa_api_ctx *ctx, const struct sa_api_request *req,
                               const struct target *t, struct sa_api_response *r)
{
	struct reg_pos pos;
	struct bindings bs = { .now = req->now, .limit = t->q.limit, .after = t->q.after[0] ? &pos : NULL };
	struct listing l = listing_new(t);

	if (bs.after != NULL && reg_id_parse(t->q.after, &pos) < 0) {
		cursor_unknown(r, &l, "a registration (reg_...)");
		return;
	}
	/* fleet mode: every node's bindings, from the database */
	int err = SOR(ctx, sa_pg_registration_list_trunk(ctx->pg, t->trunk, req->now, fleet_binding_cb, &bs),
	              sa_store_binding_list_trunk(ctx->store, t->trunk, binding_cb, &bs));
	l.has_more = bs.has_more;

	for (size_t i = 0; err == SA_STORE_OK && !bs.failed && !l.failed && i < bs.n; i++)
		l.failed = !append(l.data, binding_json(ctx, &bs.b[i], bs.node != NULL ? bs.node[i] : NULL));
	l.failed = l.failed || bs.failed;
	free(bs.b);
	free(bs.node);
	respond_listing(r, &l, err);
}

/* ---- calls ---- */

static void call_cb(const struct sa_api_call *c, void *arg)
{
	struct listing *l = arg;
	if (l->failed)
		return;
	/* a trunk that authenticates by address sets calls up with no credential;
	 * the id is the Call-ID again, so that every list's items have an id */
	json_t *o = json_pack("{s:o,s:o,s:o,s:s,s:s,s:o}", "id", sa_api_net_string(c->call_id),
	                      "call_id", sa_api_net_string(c->call_id),
	                      "credential_id", c->cred_id && c->cred_id[0] ? json_string(c->cred_id) : json_null(),
	                      "direction", c->inbound ? "inbound" : "outbound",
	                      "state", c->confirmed ? "confirmed" : "early", "started_at", sa_api_rfc3339(c->started_at));
	l->failed = !append(l->data, o);
}

static const char *item_id(json_t *const *o)
{
	return json_string_value(json_object_get(*o, "id"));
}

static int call_cmp(const void *a, const void *b)
{
	return strcmp(item_id(a), item_id(b));
}

#ifdef HAVE_LIBPQ
/* Fleet mode: a call of the fleet's calls table, with the node that holds it. */
static int fleet_call_cb(const struct sa_pg_call *pc, void *arg)
{
	struct listing *l = arg;
	struct sa_api_call c = { .call_id = pc->call_id, .cred_id = pc->cred_id, .inbound = pc->inbound,
	                         .confirmed = pc->confirmed, .started_at = pc->started_at };
	size_t n = json_array_size(l->data);

	call_cb(&c, l);
	if (!l->failed && json_object_set_new(json_array_get(l->data, n), "node", json_string(pc->node)) < 0)
		l->failed = true;
	return l->failed ? 1 : 0;
}
#endif

/* The call table is in memory and bounded ([proxy] max_calls): the calls
 * are ordered by Call-ID, which a page can start after even when that call
 * has ended since. */
static int calls_page(const struct target *t, json_t *all, struct listing *l)
{
	size_t n = json_array_size(all);
	json_t **v = malloc((n ? n : 1) * sizeof *v);

	if (v == NULL)
		return -1;
	for (size_t i = 0; i < n; i++)
		v[i] = json_array_get(all, i);
	qsort(v, n, sizeof *v, call_cmp);
	for (size_t i = 0; i < n && !l->failed; i++) {
		if (t->q.after[0] != '\0' && strcmp(item_id(&v[i]), t->q.after) <= 0)
			continue;
		/* the calls of a forked INVITE share their Call-ID, the cursor: a page
		 * takes all of them or none (the next page starts after that id) */
		size_t size = json_array_size(l->data);
		json_t *last = size > 0 ? json_array_get(l->data, size - 1) : NULL;
		if (last && strcmp(item_id(&v[i]), item_id(&last)) == 0)
			l->failed = !append(l->data, json_incref(v[i]));
		else if (page_add(l, json_incref(v[i])) != 0)
			break;
	}
	free(v);
	return l->failed ? -1 : 0;
}

/* The calls, and how many channels they take against the trunk's limits:
 * every call listed (ringing or answered, either direction) holds one. */
static void calls_list(const struct sa_api_ctx *ctx, const struct sa_api_request *req,
                       const struct target *t, struct sa_api_response *r)
{
	struct listing all = { .data = json_array() }, l = listing_new(t);
	struct sa_trunk_policy p;
	int err = sa_store_trunk_policy_get(ctx->store, t->trunk, &p);

#ifdef HAVE_LIBPQ
	/* fleet mode: every node's calls, from the database (each with its node);
	 * the policy is the mirror's, as the SIP path enforces it */
	if (ctx->pg != NULL && err == SA_STORE_OK && all.data != NULL)
		err = sa_pg_calls_list_trunk(ctx->pg, t->trunk, fleet_call_cb, &all);
#endif
	if (ctx->calls_each && err == SA_STORE_OK && all.data != NULL)
		ctx->calls_each(ctx->calls_owner, t->trunk, call_cb, &all);
	if (err != SA_STORE_OK || all.failed || all.data == NULL || l.data == NULL ||
	    calls_page(t, all.data, &l) < 0) {
		json_decref(l.data);
		respond_listing(r, &all, err);
		return;
	}
	json_t *usage = json_object(), *limits = json_object();
	int rc = usage && limits ? 0 : -1;
	if (rc == 0 && sa_policy_to_json(&p, limits) == 0) {
		rc |= json_object_set_new(usage, "concurrent_calls", json_integer((json_int_t)json_array_size(all.data)));
		rc |= json_object_set(usage, "max_concurrent_calls", json_object_get(limits, "max_concurrent_calls"));
		rc |= json_object_set(usage, "max_calls_per_second", json_object_get(limits, "max_calls_per_second"));
	} else {
		rc = -1;
	}
	json_decref(limits);
	json_decref(all.data);
	if (rc != 0) {
		json_decref(usage);
		json_decref(l.data);
		respond_internal(r);
		return;
	}
	respond_json(r, 200, json_pack("{s:o,s:b,s:o}", "data", l.data, "has_more", l.has_more, "usage", usage));
}

/* ---- auth failures ---- */

/* A failure's id is "fail_" and its sequence number in the trunk's log, in
 * 16 hex digits: newer failures have larger ones, and the number stays a
 * valid place to start after when the record has been trimmed from the log. */
#define FAIL_PREFIX "fail_"

static int fail_id_parse(const char *id, uint64_t *seq)
{
	unsigned char b[8];

	if (strncmp(id, FAIL_PREFIX, 5) != 0 || strlen(id) != 5 + 16 || hex_get(id + 5, 8, b) < 0)
		return -1;
	*seq = 0;
	for (int i = 0; i < 8; i++)
		*seq = *seq << 8 | b[i];
	return 0;
}

/* One failure as the API shows it; node: the fleet node that saw it (NULL on a single host: no field). */
static int authfail_append(struct listing *l, const struct sa_authfail *f, uint64_t seq, const char *node)
{
	unsigned char b[8];
	char id[5 + 16 + 1] = FAIL_PREFIX;

	if (page_full(l))
		return 1;
	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)(seq >> (56 - 8 * i));
	hex_put(b, sizeof b, id + 5);
	json_t *o = json_pack("{s:s,s:o,s:o,s:i,s:s,s:o,s:s,s:o,s:o}", "id", id,
	                      "time", sa_api_rfc3339(f->at), "source_address", sa_api_net_string(f->source),
	                      "source_port", (json_int_t)f->source_port, "transport", f->transport,
	                      "username", sa_api_net_string(f->username), "reason", f->reason,
	                      "method", sa_api_net_string(f->method), "password_version",
	                      f->password_version > 0 ? json_integer((json_int_t)f->password_version) : json_null());
	if (o != NULL && node != NULL && json_object_set_new(o, "node", sa_api_net_string(node)) != 0) {
		json_decref(o);
		o = NULL;
	}
	l->failed = !append(l->data, o);
	return l->failed;
}

static int authfail_cb(const struct sa_authfail *f, uint64_t seq, void *arg)
{
	return authfail_append(arg, f, seq, NULL);
}

#ifdef HAVE_LIBPQ
static int authfail_pg_cb(const struct sa_authfail *f, uint64_t id, const char *node, void *arg)
{
	return authfail_append(arg, f, id, node);
}
#endif

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = (char)tolower((unsigned char)c);
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Percent-decodes s[0..n) into out. '+' stays '+' (this is not a form), so
 * an RFC 3339 offset may be written as is. -1 on bad escapes or overflow. */
static int pct_decode(const char *s, size_t n, char *out, size_t outlen)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (c == '%') {
			if (i + 2 >= n)
				return -1;
			int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
			if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
				return -1;
			c = (char)(hi * 16 + lo);
			i += 2;
		}
		if (o + 1 >= outlen)
			return -1;
		out[o++] = c;
	}
	out[o] = '\0';
	return 0;
}

static int limit_parse(const char *v, unsigned *out)
{
	char *end;
	unsigned long n;

	errno = 0;
	n = strtoul(v, &end, 10);
	if (!isdigit((unsigned char)v[0]) || *end != '\0' || errno != 0 || n < 1 || n > SA_API_PAGE_LIMIT_MAX)
		return -1;
	*out = (unsigned)n;
	return 0;
}

/* A name from the query, for a message: printable ASCII, the rest '?', cut
 * at SHOWN_NAME_MAX ("..." after it). */
#define SHOWN_NAME_MAX 40
static void shown_name(const char *name, char *out, size_t outlen)
{
	size_t i = 0;

	if (name[0] == '\0') {
		snprintf(out, outlen, "%s", "(a parameter without a name)");
		return;
	}
	for (; name[i] != '\0' && i < SHOWN_NAME_MAX && i + 1 < outlen; i++)
		out[i] = name[i] > 0x20 && name[i] < 0x7f ? name[i] : '?';
	out[i] = '\0';
	if (name[i] != '\0' && i + 4 <= outlen)
		memcpy(out + i, "...", 4);
}

/* One name=value pair of a list's query; the message names the parameter. */
static int list_param(struct list_query *q, enum query_kind kind, const char *name, const char *value,
                      struct sa_api_response *r)
{
	if (strcmp(name, "since") == 0 && kind == Q_PAGE_SINCE && !q->seen_since) {
		q->seen_since = true;
		if (sa_api_parse_time(value, &q->since) == 0)
			return 0;
		sa_api_error(r, 400, "invalid_parameter",
		             "since must be an RFC 3339 time (2026-04-09T10:35:00Z) or epoch seconds");
		return -1;
	}
	if (strcmp(name, "limit") == 0 && !q->seen_limit) {
		q->seen_limit = true;
		if (limit_parse(value, &q->limit) == 0)
			return 0;
		errorf(r, 400, "invalid_parameter", "limit must be a number from 1 to %d", SA_API_PAGE_LIMIT_MAX);
		return -1;
	}
	if (strcmp(name, "starting_after") == 0 && !q->seen_after) {
		q->seen_after = true;
		if (value[0] != '\0') {
			snprintf(q->after, sizeof q->after, "%s", value);
			return 0;
		}
		sa_api_error(r, 400, "invalid_parameter", "starting_after must be the id of an item of this list");
		return -1;
	}
	if (strcmp(name, "limit") == 0 || strcmp(name, "starting_after") == 0 ||
	    (strcmp(name, "since") == 0 && kind == Q_PAGE_SINCE)) {
		errorf(r, 400, "invalid_parameter", "%s given twice", name);
		return -1;
	}
	char shown[SHOWN_NAME_MAX + 32];
	shown_name(name, shown, sizeof shown);
	if (kind == Q_PAGE_SINCE)
		errorf(r, 400, "invalid_parameter",
		       "%s: unknown query parameter (auth-failures takes since, limit and starting_after)", shown);
	else
		errorf(r, 400, "invalid_parameter", "%s: unknown query parameter (a list takes limit and starting_after)",
		       shown);
	return -1;
}

static int list_query_parse(const char *query, enum query_kind kind, struct list_query *q,
                            struct sa_api_response *r)
{
	char name[64], value[SA_API_CURSOR_MAX];
	const char *p = query ? query : "";

	*q = (struct list_query){ .since = INT64_MIN, .limit = SA_API_PAGE_LIMIT_DEFAULT };
	while (*p != '\0') {
		size_t len = strcspn(p, "&");
		const char *eq = memchr(p, '=', len);
		size_t nlen = eq ? (size_t)(eq - p) : len;
		if (len > 0) {
			if (pct_decode(p, nlen, name, sizeof name) < 0) {
				sa_api_error(r, 400, "invalid_parameter", "malformed query string");
				return -1;
			}
			if (pct_decode(eq ? eq + 1 : p + len, eq ? len - nlen - 1 : 0, value, sizeof value) < 0) {
				errorf(r, 400, "invalid_parameter", "%s: malformed or too long value",
				       strcmp(name, "limit") == 0 || strcmp(name, "since") == 0 ||
				       strcmp(name, "starting_after") == 0 ? name : "query string");
				return -1;
			}
			if (list_param(q, kind, name, value, r) < 0)
				return -1;
		}
		p += len + (p[len] == '&');
	}
	return 0;
}

/* Newest first; the store is asked for one record past the page, which
 * only says that there is more. */
static void authfails_list(const struct sa_api_ctx *ctx, const struct sa_api_request *req,
                           const struct target *t, struct sa_api_response *r)
{
	struct listing l = listing_new(t);
	uint64_t before = UINT64_MAX;

	if (t->q.after[0] != '\0' && fail_id_parse(t->q.after, &before) < 0) {
		cursor_unknown(r, &l, "an auth failure (fail_...)");
		return;
	}
	/* in a fleet, every node's failures, from the database (each with its node) */
	respond_listing(r, &l, SOR(ctx, sa_pg_authfail_page(ctx->pg, t->trunk, t->q.since, before, t->q.limit + 1,
	                                                    authfail_pg_cb, &l),
	                           sa_store_authfail_page(ctx->store, t->trunk, t->q.since, before, t->q.limit + 1,
	                                                  authfail_cb, &l)));
}

/* ---- webhooks ---- */

static json_t *webhook_events_json(uint32_t events)
{
	json_t *a = json_array();

	for (int e = 0; e < SA_WH_EVENT_COUNT && a != NULL; e++)
		if ((events & (1u << e)) && !append(a, json_string(sa_wh_event_name((enum sa_wh_event)e)))) {
			json_decref(a);
			return NULL;
		}
	return a;
}

/* The webhook as listed: never its secret. */
static json_t *webhook_json(const struct sa_webhook *w)
{
	return json_pack("{s:s,s:s,s:s,s:o,s:o}", "id", w->id, "account_id", w->account_id, "url", w->url, "events",
	                 webhook_events_json(w->events), "created_at", sa_api_rfc3339(w->created_at));
}

static int webhook_cb(const struct sa_webhook *w, void *arg)
{
	return page_add(arg, webhook_json(w));
}

static void webhooks_list(const struct sa_api_ctx *ctx, const struct sa_api_request *req,
                          const struct target *t, struct sa_api_response *r)
{
	struct listing l = listing_new(t);
	/* in a fleet, the database's (every node's mirror follows it) */
	respond_walk(r, &l, SOR(ctx, sa_pg_webhook_list_after(ctx->pg, t->account, t->q.after, webhook_cb, &l),
	                        sa_store_webhook_list_after(ctx->store, t->account, t->q.after, webhook_cb, &l)),
	             "a webhook of this account");
}

static void webhook_show(const struct sa_api_ctx *ctx, const struct sa_api_request *req,
                         const struct target *t, struct sa_api_response *r)
{
	struct sa_webhook w;
	int err = SOR(ctx, sa_pg_webhook_get(ctx->pg, t->webhook, &w), sa_store_webhook_get(ctx->store, t->webhook, &w));

	if (err == SA_STORE_OK)
		respond_json(r, 200, webhook_json(&w));
	else if (err == SA_STORE_ENOTFOUND)   /* deleted since it was checked */
		errorf(r, 404, "not_found", "webhook %s not found", t->webhook);
	else
		sa_api_store_error(r, err);
	OPENSSL_cleanse(w.secret, sizeof w.secret);
}

static void webhook_delete(const struct sa_api_ctx *ctx, const struct sa_api_request *req,
                           const struct target *t, struct sa_api_response *r)
{
	/* in a fleet, every node drops its copy (and its deliveries) as it applies the delete */
	int err = SOR(ctx, sa_pg_webhook_delete(ctx->pg, t->account, t->webhook),
	              sa_store_webhook_delete(ctx->store, t->account, t->webhook));

	if (err == SA_STORE_OK)
		r->status = 204;
	else if (err == SA_STORE_ENOTFOUND)
		errorf(r, 404, "not_found", "webhook %s not found", t->webhook);
	else
		sa_api_store_error(r, err);
}

/* A 422 naming the field, in the shape of the trunk PATCH's. */
__attribute__((format(printf, 4, 5)))
static int field_refuse(struct sa_api_response *r, const char *code, const char *field, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	r->error_code = code;
	respond_json(r, 422, json_pack("{s:{s:s,s:s,s:s}}", "error", "code", code, "message", msg, "field", field));
	return -1;
}

static int webhook_events_read(json_t *v, uint32_t *events, struct sa_api_response *r)
{
	size_t i;
	json_t *e;

	*events = 0;
	if (!json_is_array(v) || json_array_size(v) == 0)
		return field_refuse(r, "invalid_field", "events",
		                    "events must be a non-empty array of event names (auth.failed, source.banned, "
		                    "credential.created, credential.deleted, credential.rotated, registration.created, "
		                    "registration.expired, call.revoked)");
	json_array_foreach(v, i, e) {
		int ev = json_is_string(e) ? sa_wh_event_parse(json_string_value(e)) : -1;
		if (ev < 0)
			return field_refuse(r, "invalid_field", "events", "events[%zu] is not a known event name", i);
		*events |= 1u << ev;
	}
	return 0;
}

/* {"url": "...", "events": [...]}: anything missing, wrong or unknown is a 422 naming the field. */
static int webhook_input_read(json_t *body, const char **url, uint32_t *events, struct sa_api_response *r)
{
	struct sa_wh_url u;
	char why[160];
	const char *key;
	json_t *v;

	if (!json_is_object(body)) {
		sa_api_error(r, 400, "invalid_json", "request body must be a JSON object");
		return -1;
	}
	json_object_foreach(body, key, v)
		if (strcmp(key, "url") != 0 && strcmp(key, "events") != 0)
			return field_refuse(r, "invalid_field", key, "%s is not a webhook field (url, events)", key);
	json_t *jurl = json_object_get(body, "url"), *jev = json_object_get(body, "events");
	if (jurl == NULL || jev == NULL)
		return field_refuse(r, "missing_field", jurl ? "events" : "url", "%s is required",
		                    jurl ? "events" : "url");
	if (!json_is_string(jurl))
		return field_refuse(r, "invalid_field", "url", "url must be a string");
	if (sa_wh_url_parse(json_string_value(jurl), &u, why, sizeof why) < 0)
		return field_refuse(r, "invalid_field", "url", "%s", why);
	*url = json_string_value(jurl);
	return webhook_events_read(jev, events, r);
}

/* An account's webhooks, at most SA_API_WEBHOOKS_MAX: each event is sent to each. */
static int webhook_count_cb(const struct sa_webhook *w, void *arg)
{
	(*(unsigned *)arg)++;
	return 0;
}

/* The answer to a creation is the only one that carries the secret. */
static void webhook_created(struct sa_api_response *r, const struct target *t, struct sa_webhook *w)
{
	char loc[sizeof r->hdr[0].value];
	json_t *o = webhook_json(w);

	snprintf(loc, sizeof loc, "/v1/account/%s/webhooks/%s", t->account, w->id);
	header_add(r, "Location", loc);
	snprintf(r->created_webhook, sizeof r->created_webhook, "%s", w->id);
	if (o != NULL && json_object_set_new(o, "secret", json_string(w->secret)) < 0) {
		json_decref(o);
		o = NULL;
	}
	respond_json(r, 201, o);
}

/* A new webhook unless the account has SA_API_WEBHOOKS_MAX (EFULL). In a
 * fleet, the database counts and inserts under a lock per account. */
static int webhook_make(const struct sa_api_ctx *ctx, const struct target *t, const char *url, uint32_t events,
                        int64_t now, struct sa_webhook *w)
{
	unsigned n = 0;
	int err;

	memset(w, 0, sizeof *w);
#ifdef HAVE_LIBPQ
	if (ctx->pg != NULL)
		return sa_pg_webhook_create(ctx->pg, t->account, url, events, SA_API_WEBHOOKS_MAX, now, w);
#endif
	err = sa_store_webhook_list_after(ctx->store, t->account, NULL, webhook_count_cb, &n);
	if (err == SA_STORE_OK && n >= SA_API_WEBHOOKS_MAX)
		return SA_STORE_EFULL;
	return err == SA_STORE_OK ? sa_store_webhook_create(ctx->store, t->account, url, events, now, w) : err;
}

static void webhook_create(const struct sa_api_ctx *ctx, const struct sa_api_request *req,
                           const struct target *t, struct sa_api_response *r)
{
	struct sa_webhook w;
	const char *url = NULL;   /* set by webhook_input_read; gcc -O2 without sanitizers cannot tell */
	uint32_t events = 0;
	json_error_t jerr;
	json_t *body = json_loadb(req->body ? req->body : "", req->body_len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY,
	                          &jerr);

	if (body == NULL) {
		errorf(r, 400, "invalid_json", "request body is not valid JSON (line %d, column %d)", jerr.line,
		       jerr.column);
		return;
	}
	if (webhook_input_read(body, &url, &events, r) == 0) {
		int err = webhook_make(ctx, t, url, events, req->now, &w);
		if (err == SA_STORE_EFULL)
			errorf(r, 409, "limit_reached", "an account may have at most %d webhooks", SA_API_WEBHOOKS_MAX);
		else if (err == SA_STORE_OK)
			webhook_created(r, t, &w);
		else
			sa_api_store_error(r, err);
		OPENSSL_cleanse(w.secret, sizeof w.secret);
	}
	json_decref(body);
}

static const char *delivery_status_name(int32_t s)
{
	return s == SA_DLV_PENDING ? "pending" : s == SA_DLV_DELIVERED ? "delivered" : "failed";
}

static json_t *delivery_json(const struct sa_delivery *d)
{
	return json_pack("{s:s,s:s,s:s,s:s,s:i,s:o,s:o,s:o,s:o}", "id", d->id, "webhook_id", d->webhook_id, "event",
	                 d->event, "status", delivery_status_name(d->status), "attempts", (json_int_t)d->attempts,
	                 "last_status_code", d->last_status_code ? json_integer(d->last_status_code) : json_null(),
	                 "last_error", d->last_error[0] ? json_string(d->last_error) : json_null(),
	                 "next_attempt_at", d->status == SA_DLV_PENDING ? sa_api_rfc3339(d->next_attempt_at) : json_null(),
	                 "created_at", sa_api_rfc3339(d->created_at));
}

static int delivery_cb(const struct sa_delivery *d, void *arg)
{
	return page_add(arg, delivery_json(d));
}

#ifdef HAVE_LIBPQ
/* Fleet mode: a delivery of any node, with the node that sends it. */
static int fleet_delivery_cb(const struct sa_delivery *d, const char *node, void *arg)
{
	json_t *o = delivery_json(d);

	if (o != NULL && json_object_set_new(o, "node", sa_api_net_string(node)) != 0) {
		json_decref(o);
		o = NULL;
	}
	return page_add(arg, o);
}
#endif

static void deliveries_list(const struct sa_api_ctx *ctx, const struct sa_api_request *req,
                            const struct target *t, struct sa_api_response *r)
{
	struct listing l = listing_new(t);
	/* in a fleet, every node's deliveries, from the database (one past the page says there is more) */
	respond_walk(r, &l, SOR(ctx, sa_pg_delivery_list_after(ctx->pg, t->webhook, t->q.after, t->q.limit + 1,
	                                                       fleet_delivery_cb, &l),
	                        sa_store_delivery_list_after(ctx->store, t->webhook, t->q.after, delivery_cb, &l)),
	             "a delivery of this webhook");
}

/* ---- time ---- */

static int digits(const char **p, int n, int *out)
{
	int v = 0;

	for (int i = 0; i < n; i++, (*p)++) {
		if (!isdigit((unsigned char)**p))
			return -1;
		v = v * 10 + (**p - '0');
	}
	*out = v;
	return 0;
}

static int expect(const char **p, const char *one_of)
{
	if (**p == '\0' || strchr(one_of, **p) == NULL)
		return -1;
	(*p)++;
	return 0;
}

/* The zone suffix: "Z" or "+HH:MM" / "-HH:MM", as seconds east of UTC. */
static int zone_parse(const char *p, int *offset)
{
	int sign, hh, mm;

	if ((*p == 'Z' || *p == 'z') && p[1] == '\0') {
		*offset = 0;
		return 0;
	}
	if (*p != '+' && *p != '-')
		return -1;
	sign = *p++ == '-' ? -1 : 1;
	if (digits(&p, 2, &hh) < 0 || expect(&p, ":") < 0 || digits(&p, 2, &mm) < 0 || *p != '\0' ||
	    hh > 23 || mm > 59)
		return -1;
	*offset = sign * (hh * 3600 + mm * 60);
	return 0;
}

static int rfc3339_parse(const char *p, int64_t *out)
{
	struct tm tm = { 0 }, back;
	int y, mo, d, h, mi, s, offset;

	if (digits(&p, 4, &y) < 0 || expect(&p, "-") < 0 || digits(&p, 2, &mo) < 0 || expect(&p, "-") < 0 ||
	    digits(&p, 2, &d) < 0 || expect(&p, "Tt ") < 0 || digits(&p, 2, &h) < 0 || expect(&p, ":") < 0 ||
	    digits(&p, 2, &mi) < 0 || expect(&p, ":") < 0 || digits(&p, 2, &s) < 0)
		return -1;
	if (*p == '.')
		for (p++; isdigit((unsigned char)*p); p++)
			;
	if (zone_parse(p, &offset) < 0 || mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || s > 60)
		return -1;
	tm = (struct tm){ .tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h, .tm_min = mi,
	                  .tm_sec = s > 59 ? 59 : s };
	time_t t = timegm(&tm);
	/* timegm normalises Feb 30 to Mar 2: a day that moved did not exist */
	if (t == (time_t)-1 || gmtime_r(&t, &back) == NULL || back.tm_mday != d)
		return -1;
	*out = (int64_t)t - offset;
	return 0;
}

int sa_api_parse_time(const char *s, int64_t *out)
{
	size_t n = strspn(s, "0123456789");

	if (n > 0 && s[n] == '\0') {
		if (n > 12)   /* beyond year 33000: a mistake, not a time */
			return -1;
		*out = strtoll(s, NULL, 10);
		return 0;
	}
	return rfc3339_parse(s, out);
}

/* ---- authentication and routing ---- */

/* "Bearer <token>", scheme in any case; the token without surrounding blanks. */
int sa_api_bearer_token(const char *h, const char **tok, size_t *len)
{
	if (h == NULL)
		return -1;
	h += strspn(h, " \t");
	if (strncasecmp(h, "Bearer", 6) != 0 || (h[6] != ' ' && h[6] != '\t'))
		return -1;
	h += 6 + strspn(h + 6, " \t");
	size_t n = strlen(h);
	while (n > 0 && (h[n - 1] == ' ' || h[n - 1] == '\t'))
		n--;
	*tok = h;
	*len = n;
	return n > 0 ? 0 : -1;
}

/* The key's account into resp->account_id; else a 401 (or 500) answer. */
static int authenticate(const struct sa_api_ctx *ctx, const struct sa_api_request *req, struct sa_api_response *r)
{
	const char *tok;
	size_t len;

	if (sa_api_bearer_token(req->authorization, &tok, &len) < 0) {
		header_add(r, "WWW-Authenticate", "Bearer realm=\"sipauthd\"");
		sa_api_error(r, 401, "unauthorized", "missing API key: send Authorization: Bearer <key>");
		return -1;
	}
	int err = sa_store_apikey_account(ctx->store, tok, len, r->account_id);
	if (err == SA_STORE_OK)
		return 0;
	r->account_id[0] = '\0';
	if (err != SA_STORE_ENOTFOUND) {
		sa_api_store_error(r, err);
		return -1;
	}
	header_add(r, "WWW-Authenticate", "Bearer realm=\"sipauthd\", error=\"invalid_token\"");
	sa_api_error(r, 401, "unauthorized", "invalid API key");
	return -1;
}

/* Copies the next path segment if it could be an id (the store's ids are
 * [a-z0-9_]; anything else, or too long, names nothing). */
static int segment_id(const char **p, char out[SA_ID_MAX])
{
	size_t n = strcspn(*p, "/");

	if (n == 0 || n >= SA_ID_MAX)
		return -1;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)(*p)[i]) && (*p)[i] != '_' && (*p)[i] != '-')
			return -1;
	memcpy(out, *p, n);
	out[n] = '\0';
	*p += n;
	return 0;
}

static int segment_is(const char **p, const char *word)
{
	size_t n = strlen(word);

	if (strncmp(*p, word, n) != 0 || ((*p)[n] != '/' && (*p)[n] != '\0'))
		return -1;
	*p += n;
	return 0;
}

/* After /trunks/{t}: nothing, or a collection, or credentials/{c}, or credentials/{c}/rotate. */
static int target_trunk_child(const char *p, struct target *t)
{
	if (*p == '\0') {
		t->res = RES_TRUNK;
		return 0;
	}
	p++;
	for (size_t i = 0; i < sizeof trunk_children / sizeof trunk_children[0]; i++) {
		if (segment_is(&p, trunk_children[i].name) < 0)
			continue;
		t->res = trunk_children[i].res;
		if (*p == '\0')
			return 0;
		if (t->res != RES_CREDENTIALS || *++p == '\0' || segment_id(&p, t->cred) < 0)
			return -1;
		t->res = RES_CREDENTIAL;
		if (*p == '\0')
			return 0;
		p++;
		if (segment_is(&p, "rotate") < 0 || *p != '\0')
			return -1;
		t->res = RES_ROTATE;
		return 0;
	}
	return -1;
}

/* After /webhooks: nothing, {w}, or {w}/deliveries. */
static int target_webhook(const char *p, struct target *t)
{
	t->res = RES_WEBHOOKS;
	if (*p == '\0')
		return 0;
	if (*p++ != '/' || segment_id(&p, t->webhook) < 0)
		return -1;
	t->res = RES_WEBHOOK;
	if (*p == '\0')
		return 0;
	p++;
	if (segment_is(&p, "deliveries") < 0 || *p != '\0')
		return -1;
	t->res = RES_DELIVERIES;
	return 0;
}

static int target_parse(const char *path, struct target *t)
{
	const char *p = path;

	memset(t, 0, sizeof *t);
	if (strncmp(p, "/v1/account/", 12) != 0)
		return -1;
	p += 12;
	if (segment_id(&p, t->account) < 0 || *p++ != '/')
		return -1;
	if (segment_is(&p, "webhooks") == 0)
		return target_webhook(p, t);
	if (segment_is(&p, "trunks") < 0)
		return -1;
	if (*p == '\0') {
		t->res = RES_TRUNKS;
		return 0;
	}
	if (*p++ != '/' || segment_id(&p, t->trunk) < 0)
		return -1;
	return target_trunk_child(p, t);
}

/* GET and HEAD: a HEAD is answered as its GET (the HTTP layer sends no body). */
static bool method_reads(const char *method)
{
	return strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
}

static handler_fn *route_handler(const struct route *rt, const char *method)
{
	if (method_reads(method))
		return rt->get;
	if (strcmp(method, "POST") == 0)
		return rt->post;
	if (strcmp(method, "DELETE") == 0)
		return rt->del;
	if (strcmp(method, "PATCH") == 0)
		return rt->patch;
	return NULL;
}

/* The trunk must exist and be the key's account's; both misses read the same. */
static int trunk_check(const struct sa_api_ctx *ctx, const struct target *t, struct sa_api_response *r)
{
	struct sa_trunk tr;
	int err = SOR(ctx, sa_pg_trunk_get(ctx->pg, t->trunk, &tr), sa_store_trunk_get(ctx->store, t->trunk, &tr));

	if (err == SA_STORE_OK && strcmp(tr.account_id, t->account) == 0) {
		snprintf(r->trunk_id, sizeof r->trunk_id, "%s", tr.id);
		return 0;
	}
	if (err == SA_STORE_OK || err == SA_STORE_ENOTFOUND)
		errorf(r, 404, "not_found", "trunk %s not found", t->trunk);
	else
		sa_api_store_error(r, err);
	return -1;
}

/* The webhook must exist and be the key's account's; both misses read the same. */
static int webhook_check(const struct sa_api_ctx *ctx, const struct target *t, struct sa_api_response *r)
{
	struct sa_webhook w;
	int err = SOR(ctx, sa_pg_webhook_get(ctx->pg, t->webhook, &w), sa_store_webhook_get(ctx->store, t->webhook, &w));

	OPENSSL_cleanse(w.secret, sizeof w.secret);
	if (err == SA_STORE_OK && strcmp(w.account_id, t->account) == 0)
		return 0;
	if (err == SA_STORE_OK || err == SA_STORE_ENOTFOUND)
		errorf(r, 404, "not_found", "webhook %s not found", t->webhook);
	else
		sa_api_store_error(r, err);
	return -1;
}

/* What the path names under the account must be the account's. */
static int owner_check(const struct sa_api_ctx *ctx, const struct target *t, struct sa_api_response *r)
{
	switch (t->res) {
	case RES_TRUNKS:
	case RES_WEBHOOKS:
		return 0;
	case RES_WEBHOOK:
	case RES_DELIVERIES:
		return webhook_check(ctx, t, r);
	default:
		return trunk_check(ctx, t, r);
	}
}

/* ---- idempotency ---- */

/* What a replay must match: the method, the path and the body (the
 * password included, hashed as its HA1s already are). */
static int idem_fingerprint(const struct sa_api_request *req, unsigned char out[SA_IDEM_HASH])
{
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	int ok = c != NULL && EVP_DigestInit_ex(c, EVP_sha256(), NULL) == 1 &&
	         EVP_DigestUpdate(c, req->method, strlen(req->method) + 1) == 1 &&
	         EVP_DigestUpdate(c, req->path, strlen(req->path) + 1) == 1 &&
	         (req->body_len == 0 || EVP_DigestUpdate(c, req->body, req->body_len) == 1) &&
	         EVP_DigestFinal_ex(c, out, NULL) == 1;

	EVP_MD_CTX_free(c);
	return ok ? 0 : -1;
}

static bool idem_key_ok(const char *k)
{
	size_t n = strlen(k);

	if (n == 0 || n > SA_API_IDEM_KEY_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (k[i] < 0x20 || k[i] > 0x7e)
			return false;
	return true;
}

static void idem_replay(struct sa_api_response *r, struct sa_idem *kept)
{
	r->status = kept->status;
	r->body = kept->body;   /* taken over */
	r->body_len = kept->body_len;
	kept->body = NULL;
	if (r->status >= 400)   /* for the log line; the body says the same */
		r->error_code = "replayed_error";
	if (kept->location[0] != '\0') {
		char loc[sizeof r->hdr[0].value];
		memcpy(loc, kept->location, sizeof loc - 1);
		loc[sizeof loc - 1] = '\0';
		header_add(r, "Location", loc);
	}
	header_add(r, "Idempotent-Replayed", "true");
}

/* Whether an answer is kept: not when the failure was ours or passing
 * (5xx, a full store, 429): the retry should then run again. */
static bool idem_keeps(const struct sa_api_response *r)
{
	return r->status < 500 && r->status != 429;
}

/* A record found for the key: 409 when it is another request's (or still
 * being run), else its answer again. */
static void idem_found(struct sa_api_response *r, const unsigned char fp[SA_IDEM_HASH], struct sa_idem *kept)
{
	if (CRYPTO_memcmp(kept->fingerprint, fp, SA_IDEM_HASH) != 0)
		sa_api_error(r, 409, "idempotency_key_reused",
		             "this Idempotency-Key was used within the last 24 hours for another request");
	else if (kept->status == 0)
		sa_api_error(r, 409, "idempotency_key_in_progress",
		             "a request with this Idempotency-Key is being run (at this or another node); retry shortly");
	else
		idem_replay(r, kept);
}

/* The record kept for the key (OK), or ENOTFOUND: run the request.
 *
 * Fleet mode: the key is claimed in the database first, in a statement of
 * its own, so that the same key at any node meanwhile gets 409
 * idempotency_key_in_progress instead of running the change twice; the
 * answer then replaces the claim (idem_keep). A database away before the
 * claim is 503 with nothing run. A claim whose answer cannot be written
 * (the database went away after the change) stays until it is stale
 * (SA_PG_IDEM_CLAIM_STALE): a retry meanwhile is 409 in progress, then runs
 * again, which the change's own checks (a duplicate username) answer. */
static int idem_lookup(const struct sa_api_ctx *ctx, const struct sa_api_request *req, const char *account_id,
                       const unsigned char key[SA_IDEM_HASH], const unsigned char fp[SA_IDEM_HASH],
                       struct sa_idem *kept, char *claim)
{
#ifdef HAVE_LIBPQ
	if (ctx->pg != NULL)
		return sa_pg_idem_claim(ctx->pg, account_id, key, fp, kept, claim);
#endif
	return sa_store_idem_get(ctx->store, account_id, key, req->now, kept);
}

/* Keeps the first answer when it is to be kept (in fleet mode replacing
 * the claim, else giving the claim up). A failure to keep it changes
 * nothing in this answer; a retry is then simply run again. */
static void idem_keep(const struct sa_api_ctx *ctx, const struct sa_api_request *req,
                      const unsigned char key[SA_IDEM_HASH], const unsigned char fp[SA_IDEM_HASH],
                      const char *claim, const struct sa_api_response *r)
{
	struct sa_idem in = { .created_at = req->now, .status = r->status, .body = r->body,
	                      .body_len = r->body ? r->body_len : 0 };

	memcpy(in.fingerprint, fp, SA_IDEM_HASH);
	for (unsigned i = 0; i < r->nhdr; i++)
		if (strcmp(r->hdr[i].name, "Location") == 0)
			snprintf(in.location, sizeof in.location, "%s", r->hdr[i].value);
#ifdef HAVE_LIBPQ
	if (ctx->pg != NULL) {
		if (!idem_keeps(r) || sa_pg_idem_keep(ctx->pg, r->account_id, key, claim, &in) != SA_STORE_OK)
			(void)sa_pg_idem_release(ctx->pg, r->account_id, key, claim);
		return;
	}
#endif
	if (idem_keeps(r))
		(void)sa_store_idem_put(ctx->store, r->account_id, key, &in, req->now);
}

/* A POST with an Idempotency-Key: the first answer within a day is given
 * again (same status, body and Location) and nothing runs; the same key
 * with another request is 409. Keys are per account. */
static void idem_serve(const struct sa_api_ctx *ctx, const struct sa_api_request *req, const struct target *t,
                       handler_fn *fn, struct sa_api_response *r)
{
	unsigned char key[SA_IDEM_HASH], fp[SA_IDEM_HASH];
	char claim[IDEM_CLAIM_LEN + 1] = "";
	struct sa_idem kept = { 0 };

	if (!idem_key_ok(req->idempotency_key)) {
		errorf(r, 400, "invalid_parameter", "Idempotency-Key must be 1 to %d printable ASCII characters",
		       SA_API_IDEM_KEY_MAX);
		return;
	}
	SHA256((const unsigned char *)req->idempotency_key, strlen(req->idempotency_key), key);
	if (idem_fingerprint(req, fp) < 0) {
		respond_internal(r);
		return;
	}
	int err = idem_lookup(ctx, req, r->account_id, key, fp, &kept, claim);
	if (err == SA_STORE_OK)
		idem_found(r, fp, &kept);
	else if (err != SA_STORE_ENOTFOUND)
		sa_api_store_error(r, err);
	free(kept.body);
	if (err != SA_STORE_ENOTFOUND)
		return;
	fn(ctx, req, t, r);
	idem_keep(ctx, req, key, fp, claim, r);
}

bool sa_api_reads_calls(const char *path)
{
	struct target t;

	return target_parse(path, &t) == 0 && t.res == RES_CALLS;
}

void sa_api_handle(const struct sa_api_ctx *ctx, const struct sa_api_request *req, struct sa_api_response *r)
{
	struct target t;
	handler_fn *fn;

	memset(r, 0, sizeof *r);
	if (authenticate(ctx, req, r) < 0)
		return;
	if (target_parse(req->path, &t) < 0) {
		sa_api_error(r, 404, "not_found", "no such resource");
		return;
	}
	if (strcmp(t.account, r->account_id) != 0) {
		errorf(r, 404, "not_found", "account %s not found", t.account);
		return;
	}
	fn = route_handler(&routes[t.res], req->method);
	if (fn == NULL) {
		header_add(r, "Allow", routes[t.res].allow);
		errorf(r, 405, "method_not_allowed", "%s is not allowed here (allowed: %s)", req->method,
		       routes[t.res].allow);
		return;
	}
	enum query_kind kind = method_reads(req->method) ? routes[t.res].query : Q_NONE;
	if (kind == Q_NONE && req->query != NULL && req->query[0] != '\0') {
		sa_api_error(r, 400, "invalid_parameter", "this resource takes no query parameters");
		return;
	}
	if (kind != Q_NONE && list_query_parse(req->query, kind, &t.q, r) < 0)
		return;
	if (owner_check(ctx, &t, r) < 0)
		return;
	if (req->idempotency_key != NULL && strcmp(req->method, "POST") == 0)
		idem_serve(ctx, req, &t, fn, r);
	else
		fn(ctx, req, &t, r);
}
