/* fuzz_api.c: libFuzzer harness: the REST handlers (sa_api_handle) against a real temporary LMDB store. */
#define _GNU_SOURCE
#include <ftw.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "api.h"
#include "store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * An input is up to MAX_REQUESTS requests separated by a line "%%":
 *
 *   METHOD \n PATH[?QUERY] \n AUTHORIZATION \n BODY
 *
 * A missing line is an empty field; an empty Authorization line is no
 * header; no '?' is no query. Before a request is run these placeholders are
 * replaced, so that seeds reach past authentication and the trunk check:
 *   @KEY@ @ACC@ @TRUNK@ @CRED@       account A's API key, its id, its trunk, that trunk's credential
 *   @KEYB@ @ACCB@ @TRUNKB@ @CREDB@   the same of account B
 *   @PW@   a strong password          @NEW@ the credential the last 201 of this input created
 *   @WH@   the webhook the last 201 of this input created
 * The store is put back after each input (what it created deleted, the
 * fixture's credentials made again if it deleted them) and checked, so
 * every input starts from the same records and the store stays small.
 */
#define NOW 1775731200   /* 2026-04-09T10:40:00Z */
#define DOMAIN "sip.example.com"
#define MAX_REQUESTS 16
#define SEPARATOR "\n%%\n"
#define REOPEN_EVERY 2000   /* runs between checks that the store closes and opens again */

/* Secrets: neither may appear in an answer unless the request itself put it where answers echo. */
#define FIXTURE_PW "Fx7-fixture-secret-Pw0rd"
#define PLACEHOLDER_PW "Zq8-placeholder-secret-Kw4"

struct side {
	struct sa_account acc;
	struct sa_trunk trunk;
	struct sa_credential cred;
	char key[SA_APIKEY_LEN + 1];
};

static struct {
	struct sa_store *st;
	struct sa_api_ctx ctx;
	struct side a, b;
	char dir[64];
	unsigned long runs;
} fx;

#define CHECK(cond) do { if (!(cond)) { fprintf(stderr, "fuzz_api: %s:%d: %s\n", __FILE__, __LINE__, #cond); abort(); } } while (0)

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void store_open(void)
{
	/* as the daemon opens it; room for the change log and the tombstones
	 * at their bounds (CHANGES_KEEP, TOMBSTONES_KEEP: 100 000 each), which
	 * a long run reaches: at 8 MB the store filled after ~48 000 deletes
	 * and the fixture could not be made again */
	struct sa_store_opts o = { .flags = SA_STORE_RUNTIME, .map_size = 64u << 20 };
	char why[256] = "";

	if (sa_store_open_with(&fx.st, fx.dir, &o, why, sizeof(why)) != SA_STORE_OK) {
		fprintf(stderr, "fuzz_api: cannot open the store in %s: %s\n", fx.dir, why);
		abort();
	}
	fx.ctx.store = fx.st;
}

static void teardown(void)
{
	sa_store_close(fx.st);
	nftw(fx.dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
}

/* Registrations to list: one plain, one with bytes that are not UTF-8, one expired. */
static void bindings_add(const struct side *s)
{
	static const struct { const char *contact, *ua; int64_t expires; } bs[] = {
		{ "sip:pbx@192.0.2.10:5070", "FuzzPBX/1.0", NOW + 300 },
		{ "sip:pbx@192.0.2.11:5070;x=\xff\xfe", "bad \xc3\x28 utf8 \x01", NOW + 3600 },
		{ "sip:old@192.0.2.12:5070", "Old/0.1", NOW - 10 },
	};
	for (size_t i = 0; i < sizeof(bs) / sizeof(bs[0]); i++) {
		struct sa_binding b = { .source_port = 5070, .cseq = 1, .registered_at = NOW - 100,
		                        .updated_at = NOW - 50, .expires_at = bs[i].expires };
		snprintf(b.cred_id, sizeof(b.cred_id), "%s", s->cred.id);
		snprintf(b.trunk_id, sizeof(b.trunk_id), "%s", s->trunk.id);
		snprintf(b.contact, sizeof(b.contact), "%s", bs[i].contact);
		snprintf(b.source, sizeof(b.source), "192.0.2.%zu", 10 + i);
		snprintf(b.transport, sizeof(b.transport), "udp");
		snprintf(b.user_agent, sizeof(b.user_agent), "%s", bs[i].ua);
		snprintf(b.call_id, sizeof(b.call_id), "reg-%zu@192.0.2.10", i);
		CHECK(sa_store_binding_put(fx.st, &b, 0) == SA_STORE_OK);
	}
}

/* The side's credential (again, after an input deleted it) with its registrations. */
static void credential_make(struct side *s, const char *user)
{
	CHECK(sa_store_credential_create(fx.st, s->trunk.id, user, FIXTURE_PW, strlen(FIXTURE_PW), SA_PASSWORD_MIN,
	                                 NOW - 1000, &s->cred, NULL, 0) == SA_STORE_OK);
	sa_credential_wipe(&s->cred);
	bindings_add(s);
}

static void authfails_add(const struct side *s)
{
	static const struct { int64_t at; const char *user, *reason; } fs[] = {
		{ NOW - 7200, "pbx-fuzz-01", "bad_password" },
		{ NOW - 60, "admin\xff\x80", "unknown_user" },
		{ NOW - 1, "", "banned" },
	};
	for (size_t i = 0; i < sizeof(fs) / sizeof(fs[0]); i++) {
		struct sa_authfail f = { .at = fs[i].at, .source_port = 40000 };
		snprintf(f.trunk_id, sizeof(f.trunk_id), "%s", s->trunk.id);
		snprintf(f.source, sizeof(f.source), "203.0.113.%zu", i);
		snprintf(f.transport, sizeof(f.transport), "udp");
		snprintf(f.username, sizeof(f.username), "%s", fs[i].user);
		snprintf(f.reason, sizeof(f.reason), "%s", fs[i].reason);
		snprintf(f.method, sizeof(f.method), "REGISTER");
		CHECK(sa_store_authfail_add(fx.st, &f, 1000) == SA_STORE_OK);
	}
}

static void side_make(struct side *s, const char *name, const char *user)
{
	CHECK(sa_store_account_create(fx.st, name, NOW - 5000, &s->acc) == SA_STORE_OK);
	CHECK(sa_store_apikey_create(fx.st, s->acc.id, NOW - 5000, s->key) == SA_STORE_OK);
	CHECK(sa_store_trunk_create(fx.st, s->acc.id, name, NOW - 4000, &s->trunk) == SA_STORE_OK);
	credential_make(s, user);
	authfails_add(s);
}

/* The daemon's call table, as the API sees it: two calls on A's trunk (one id not UTF-8), one on B's. */
static void calls_each(void *owner, const char *trunk_id, sa_api_call_cb cb, void *arg)
{
	if (strcmp(trunk_id, fx.a.trunk.id) == 0) {
		cb(&(struct sa_api_call){ "call-1@192.0.2.10", fx.a.cred.id, false, true, NOW - 30 }, arg);
		cb(&(struct sa_api_call){ "in\xff\xfe-2@192.0.2.20", fx.a.cred.id, true, false, NOW - 2 }, arg);
	} else if (strcmp(trunk_id, fx.b.trunk.id) == 0) {
		cb(&(struct sa_api_call){ "call-b@192.0.2.30", fx.b.cred.id, false, true, NOW - 5 }, arg);
	}
}

static void setup(void)
{
	snprintf(fx.dir, sizeof(fx.dir), "%s/fuzzapi.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(fx.dir)) {
		fprintf(stderr, "fuzz_api: cannot make a directory from %s\n", fx.dir);
		abort();
	}
	store_open();
	atexit(teardown);
	CHECK(sa_store_init(fx.st, DOMAIN) == SA_STORE_OK);
	side_make(&fx.a, "acme", "pbx-fuzz-01");
	side_make(&fx.b, "other", "pbx-other-01");
	fx.ctx = (struct sa_api_ctx){ .store = fx.st, .min_password_len = SA_PASSWORD_MIN, .calls_each = calls_each };
}

/* ---- one input ---- */

struct run {
	char new_cred[SA_ID_MAX];                 /* @NEW@ */
	char new_webhook[SA_ID_MAX];              /* @WH@ */
	struct { char cred[SA_ID_MAX], trunk[SA_ID_MAX]; } created[MAX_REQUESTS];
	unsigned ncreated;
	bool deleted_a, deleted_b;
	bool saw_a, saw_b;                        /* a request named an id of A's (B's) side */
	bool echoed[4];                           /* a request put secret i where answers echo */
};

/* s[0..n) with every placeholder replaced, its length in *len; NUL-terminated, malloc'd. */
static char *expand(const char *s, size_t n, const struct run *r, size_t *len)
{
	const struct { const char *key, *val; } subst[] = {
		{ "@KEY@", fx.a.key }, { "@ACC@", fx.a.acc.id }, { "@TRUNK@", fx.a.trunk.id }, { "@CRED@", fx.a.cred.id },
		{ "@KEYB@", fx.b.key }, { "@ACCB@", fx.b.acc.id }, { "@TRUNKB@", fx.b.trunk.id },
		{ "@CREDB@", fx.b.cred.id }, { "@PW@", PLACEHOLDER_PW }, { "@NEW@", r->new_cred },
		{ "@WH@", r->new_webhook },
	};
	size_t nk = sizeof(subst) / sizeof(subst[0]), o = 0;
	/* the shortest key is 4 bytes, the longest value SA_APIKEY_LEN */
	char *out = malloc(n + (n / 4 + 1) * (SA_APIKEY_LEN + SA_ID_MAX) + 1);

	if (!out)
		return NULL;
	for (size_t i = 0; i < n;) {
		size_t k = nk;
		if (s[i] == '@')
			for (k = 0; k < nk; k++)
				if (n - i >= strlen(subst[k].key) && memcmp(s + i, subst[k].key, strlen(subst[k].key)) == 0)
					break;
		if (k == nk) {
			out[o++] = s[i++];
			continue;
		}
		memcpy(out + o, subst[k].val, strlen(subst[k].val));
		o += strlen(subst[k].val);
		i += strlen(subst[k].key);
	}
	out[o] = '\0';
	*len = o;
	return out;
}

/* Cuts the next line off *p, which ends at end (NULL when there is none); the line is
 * NUL-terminated in place (a NUL inside it ends it early, as for any C string). */
static char *next_line(char **p, char *end)
{
	char *line = *p, *nl;

	if (!line)
		return NULL;
	nl = memchr(line, '\n', (size_t)(end - line));
	if (nl) {
		*nl = '\0';
		*p = nl + 1;
	} else {
		*p = NULL;
	}
	return line;
}

static bool contains(const char *hay, size_t n, const char *needle)
{
	return hay && memmem(hay, n, needle, strlen(needle)) != NULL;
}

static int hexval(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Where an answer may echo request text: the method (405), the path's ids (404, Location),
 * the username (201, 409), for a PATCH of a trunk or a POST of a webhook the name of a field
 * that is not theirs (422 names it), and a webhook's url (shown by every answer about it).
 * As the handler reads them: decoded JSON. */
/* The query as the handler reads its names: percent-decoded ('+' kept). */
static void query_decoded(const char *q, char *out, size_t cap)
{
	size_t o = 0;
	for (size_t i = 0; q && q[i] && o + 1 < cap; i++) {
		int hi, lo;
		if (q[i] == '%' && (hi = hexval(q[i + 1])) >= 0 && (lo = hexval(q[i + 2])) >= 0) {
			out[o++] = (char)(hi * 16 + lo);
			i += 2;
		} else {
			out[o++] = q[i];
		}
	}
	out[o] = '\0';
}

static bool request_echoes(const struct sa_api_request *q, const char *secret)
{
	/* an unknown query parameter's name is named in its 400 */
	char query[4096];
	query_decoded(q->query, query, sizeof(query));
	bool echo = strstr(q->method, secret) || strstr(q->path, secret) || strstr(query, secret);
	json_t *body = q->body_len ? json_loadb(q->body, q->body_len, JSON_DECODE_ANY, NULL) : NULL;
	const char *user = json_string_value(json_object_get(body, "username"));
	const char *key;
	json_t *v;

	echo = echo || (user && strstr(user, secret));
	const char *url = strstr(q->path, "/webhooks") ? json_string_value(json_object_get(body, "url")) : NULL;
	echo = echo || (url && strstr(url, secret));
	if ((strcmp(q->method, "PATCH") == 0 || strstr(q->path, "/webhooks")) && json_is_object(body))
		json_object_foreach(body, key, v)
			echo = echo || strstr(key, secret);
	json_decref(body);
	return echo;
}

/* A username stays in the store for the rest of the input: once echoed, a secret may show up in later lists. */
static void check_no_secret(const struct sa_api_request *q, const struct sa_api_response *a, struct run *r)
{
	const char *secrets[] = { FIXTURE_PW, PLACEHOLDER_PW, fx.a.key, fx.b.key };

	for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++) {
		bool shown = contains(a->body, a->body_len, secrets[i]);
		for (unsigned h = 0; h < a->nhdr; h++)
			shown = shown || strstr(a->hdr[h].value, secrets[i]);
		r->echoed[i] = r->echoed[i] || request_echoes(q, secrets[i]);
		if (shown && !r->echoed[i]) {
			fprintf(stderr, "fuzz_api: a secret (%zu) is in the answer\n", i);
			abort();
		}
	}
}

/* What every answer is, whatever was asked. */
static void check_answer(const struct sa_api_request *q, const struct sa_api_response *a, struct run *r)
{
	CHECK(a->status >= 100 && a->status <= 599);
	CHECK(a->nhdr <= SA_API_MAX_HEADERS);
	for (unsigned h = 0; h < a->nhdr; h++)
		CHECK(memchr(a->hdr[h].name, 0, sizeof(a->hdr[h].name)) && memchr(a->hdr[h].value, 0, sizeof(a->hdr[h].value)));
	CHECK(memchr(a->account_id, 0, SA_ID_MAX) && memchr(a->trunk_id, 0, SA_ID_MAX));
	CHECK(memchr(a->created_cred, 0, SA_ID_MAX) && memchr(a->deleted_cred, 0, SA_ID_MAX));
	CHECK(memchr(a->created_user, 0, sizeof(a->created_user)));
	if (a->status == 204) {
		CHECK(a->body == NULL && a->body_len == 0 && strcmp(q->method, "DELETE") == 0);
		CHECK(a->deleted_cred[0] || strstr(q->path, "/webhooks/"));
	} else {
		json_error_t jerr;
		CHECK(a->body != NULL && a->body_len > 0 && strlen(a->body) == a->body_len && a->body[a->body_len - 1] == '\n');
		json_t *j = json_loadb(a->body, a->body_len, 0, &jerr);
		if (!j) {
			fprintf(stderr, "fuzz_api: answer %d is not JSON (%s): %s\n", a->status, jerr.text, a->body);
			abort();
		}
		const char *code = json_string_value(json_object_get(json_object_get(j, "error"), "code"));
		if (a->status >= 400)
			CHECK(code && a->error_code && strcmp(code, a->error_code) == 0);
		else
			CHECK(!code && !a->error_code);
		json_decref(j);
	}
	if (a->status == 201) {
		const char *id = a->created_cred[0] ? a->created_cred : a->created_webhook;
		CHECK(!a->created_cred[0] != !a->created_webhook[0] && (!a->created_cred[0] || a->created_user[0]));
		CHECK(a->nhdr == 1 && strcmp(a->hdr[0].name, "Location") == 0);
		CHECK(strstr(a->hdr[0].value, id) && strcmp(q->method, "POST") == 0);
	} else {
		CHECK(!a->created_cred[0] && !a->created_webhook[0]);
	}
	if (a->status == 401)
		CHECK(!a->account_id[0] && a->nhdr == 1 && strcmp(a->hdr[0].name, "WWW-Authenticate") == 0);
	if (a->status == 405)
		CHECK(a->nhdr == 1 && strcmp(a->hdr[0].name, "Allow") == 0);
	/* account isolation: only the key's own account and trunk are ever reached, and a
	 * success shows nothing of the other account's (unless this input named it) */
	if (a->account_id[0]) {
		const struct side *own = strcmp(a->account_id, fx.a.acc.id) == 0 ? &fx.a : &fx.b;
		const struct side *other = own == &fx.a ? &fx.b : &fx.a;
		CHECK(strcmp(a->account_id, own->acc.id) == 0);
		CHECK(q->authorization && strstr(q->authorization, own->key));
		CHECK(!a->trunk_id[0] || strcmp(a->trunk_id, own->trunk.id) == 0);
		if (a->status < 300 && !(own == &fx.a ? r->saw_b : r->saw_a)) {
			CHECK(!contains(a->body, a->body_len, other->acc.id) && !contains(a->body, a->body_len, other->trunk.id));
			CHECK(!contains(a->body, a->body_len, other->cred.id));
		}
	} else {
		CHECK(a->status >= 400 && !a->trunk_id[0]);
	}
	check_no_secret(q, a, r);
}

static void note_ids(struct run *r, const char *text, size_t n)
{
	r->saw_a = r->saw_a || contains(text, n, fx.a.acc.id) || contains(text, n, fx.a.trunk.id) ||
	           contains(text, n, fx.a.cred.id);
	r->saw_b = r->saw_b || contains(text, n, fx.b.acc.id) || contains(text, n, fx.b.trunk.id) ||
	           contains(text, n, fx.b.cred.id);
}

/* One request of the input; its effects recorded in r for the clean-up. */
static void run_one(const char *raw, size_t n, struct run *r)
{
	size_t len;
	char *text = expand(raw, n, r, &len);
	if (!text)
		return;
	note_ids(r, text, len);
	char *end = text + len, *p = text;
	char *method = next_line(&p, end), *path = next_line(&p, end), *authz = next_line(&p, end);
	char *query = path ? strchr(path, '?') : NULL;
	if (query)
		*query++ = '\0';
	struct sa_api_request q = { .method = method ? method : "", .path = path ? path : "", .query = query,
	                            .authorization = authz && *authz ? authz : NULL, .body = p,
	                            .body_len = p ? (size_t)(end - p) : 0, .now = NOW };
	struct sa_api_response a;

	sa_api_handle(&fx.ctx, &q, &a);
#ifdef FUZZ_TRACE   /* to see what a seed reaches: -DFUZZ_TRACE */
	fprintf(stderr, "%s %s -> %d %s\n", q.method, q.path, a.status, a.error_code ? a.error_code : "");
#endif
	check_answer(&q, &a, r);
	if (a.created_cred[0] && r->ncreated < MAX_REQUESTS) {
		snprintf(r->created[r->ncreated].cred, SA_ID_MAX, "%s", a.created_cred);
		snprintf(r->created[r->ncreated].trunk, SA_ID_MAX, "%s", a.trunk_id);
		r->ncreated++;
		snprintf(r->new_cred, sizeof(r->new_cred), "%s", a.created_cred);
	}
	if (a.created_webhook[0])
		snprintf(r->new_webhook, sizeof(r->new_webhook), "%s", a.created_webhook);
	r->deleted_a = r->deleted_a || strcmp(a.deleted_cred, fx.a.cred.id) == 0;
	r->deleted_b = r->deleted_b || strcmp(a.deleted_cred, fx.b.cred.id) == 0;
	sa_api_response_free(&a);
	free(text);
}

static int count_cb(const struct sa_credential *c, void *arg)
{
	(*(unsigned *)arg)++;
	return 0;
}

/* The fixture has no webhooks: whatever an input made goes (a few per input at most). */
struct hooks {
	char id[MAX_REQUESTS][SA_ID_MAX];
	unsigned n;
};

static int hook_cb(const struct sa_webhook *w, void *arg)
{
	struct hooks *h = arg;
	if (h->n < MAX_REQUESTS)
		snprintf(h->id[h->n++], SA_ID_MAX, "%s", w->id);
	return 0;
}

static void webhooks_remove(const struct side *s)
{
	struct hooks h = { .n = 0 };

	CHECK(sa_store_webhook_list_after(fx.st, s->acc.id, NULL, hook_cb, &h) == SA_STORE_OK);
	for (unsigned i = 0; i < h.n; i++)
		CHECK(sa_store_webhook_delete(fx.st, s->acc.id, h.id[i]) == SA_STORE_OK);
}

/* Back to the fixture: what the input created goes, what it deleted comes back. */
static void restore(const struct run *r)
{
	unsigned na = 0, nb = 0;

	for (unsigned i = 0; i < r->ncreated; i++) {
		int err = sa_store_credential_delete(fx.st, r->created[i].trunk, r->created[i].cred);
		CHECK(err == SA_STORE_OK || err == SA_STORE_ENOTFOUND);   /* the input may have deleted it itself */
	}
	/* as the daemon's housekeeping does: a deleted credential's bindings stay in runtime/ until removed */
	uint64_t removed;
	CHECK(sa_store_binding_purge_orphans(fx.st, &removed) == SA_STORE_OK);
	webhooks_remove(&fx.a);
	webhooks_remove(&fx.b);
	if (r->deleted_a)
		credential_make(&fx.a, "pbx-fuzz-01");
	if (r->deleted_b)
		credential_make(&fx.b, "pbx-other-01");
	CHECK(sa_store_credential_list(fx.st, fx.a.trunk.id, count_cb, &na) == SA_STORE_OK && na == 1);
	CHECK(sa_store_credential_list(fx.st, fx.b.trunk.id, count_cb, &nb) == SA_STORE_OK && nb == 1);
}

/* The store closes and opens again with everything in it. */
static void reopen_check(void)
{
	char acc[SA_ID_MAX], domain[SA_DOMAIN_MAX + 1];
	struct sa_credential c;

	sa_store_close(fx.st);
	store_open();
	CHECK(sa_store_domain(fx.st, domain, sizeof(domain)) == SA_STORE_OK && strcmp(domain, DOMAIN) == 0);
	CHECK(sa_store_apikey_account(fx.st, fx.a.key, strlen(fx.a.key), acc) == SA_STORE_OK && strcmp(acc, fx.a.acc.id) == 0);
	CHECK(sa_store_apikey_account(fx.st, fx.b.key, strlen(fx.b.key), acc) == SA_STORE_OK && strcmp(acc, fx.b.acc.id) == 0);
	CHECK(sa_store_credential_get(fx.st, fx.a.cred.id, &c) == SA_STORE_OK && strcmp(c.trunk_id, fx.a.trunk.id) == 0);
	CHECK(sa_store_credential_get(fx.st, fx.b.cred.id, &c) == SA_STORE_OK && strcmp(c.trunk_id, fx.b.trunk.id) == 0);
	sa_credential_wipe(&c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ready;
	struct run r = { .new_cred = "cred_none", .new_webhook = "wh_none" };
	const char *s = (const char *)data, *end = s + size;

	if (!ready) {
		setup();
		ready = 1;
	}
	if (size > 4 * SA_HTTP_MAX_BODY)   /* the HTTP layer refuses bodies above max_body */
		return 0;
	for (unsigned i = 0; i < MAX_REQUESTS && s <= end; i++) {
		const char *sep = memmem(s, (size_t)(end - s), SEPARATOR, strlen(SEPARATOR));
		size_t n = sep ? (size_t)(sep - s) : (size_t)(end - s);
		run_one(s, n, &r);
		if (!sep)
			break;
		s = sep + strlen(SEPARATOR);
	}
	restore(&r);
	if (++fx.runs % REOPEN_EVERY == 0)
		reopen_check();
	return 0;
}
