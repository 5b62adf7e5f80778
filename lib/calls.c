/* calls.c: chained hash tables that grow with the load (by Call-ID, by credential) and an age list. */
#include "calls.h"

#include <jansson.h>

#include <stdlib.h>
#include <string.h>

#define MIN_BUCKETS 1024

/* One credential with calls: its chain of calls and how many. */
struct sa_calls_cred {
	struct sa_calls_cred *next;    /* same bucket */
	char id[SA_ID_MAX];
	struct sa_call *calls;
	unsigned n;
};

struct sa_calls {
	struct sa_call **by_id;
	size_t id_buckets;
	struct sa_calls_cred **by_cred;
	size_t cred_buckets;
	unsigned ncalls, ncreds;
	TAILQ_HEAD(, sa_call) age;
};

struct sa_calls *sa_calls_new(void)
{
	struct sa_calls *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->id_buckets = t->cred_buckets = MIN_BUCKETS;
	t->by_id = calloc(t->id_buckets, sizeof(*t->by_id));
	t->by_cred = calloc(t->cred_buckets, sizeof(*t->by_cred));
	TAILQ_INIT(&t->age);
	if (!t->by_id || !t->by_cred) {
		sa_calls_free(t);
		return NULL;
	}
	return t;
}

struct sa_call *sa_call_new(void)
{
	return calloc(1, sizeof(struct sa_call));
}

void sa_call_free(struct sa_call *c)
{
	if (!c)
		return;
	sa_dialog_free(&c->d);
	free(c);
}

void sa_calls_free(struct sa_calls *t)
{
	if (!t)
		return;
	while (t->by_id && t->by_cred && !TAILQ_EMPTY(&t->age))
		sa_calls_remove(t, TAILQ_FIRST(&t->age));
	free(t->by_id);
	free(t->by_cred);
	free(t);
}

/* Double a chained table's buckets when it holds more entries than buckets
 * (calls) or twice as many (credentials): chains stay short whatever the
 * load. On allocation failure it stays as is. */
static void grow_ids(struct sa_calls *t)
{
	size_t n = t->id_buckets * 2;
	struct sa_call **b = calloc(n, sizeof(*b));
	if (!b)
		return;
	for (size_t i = 0; i < t->id_buckets; i++)
		for (struct sa_call *c = t->by_id[i], *next; c; c = next) {
			next = c->id_next;
			size_t k = c->id_hash & (n - 1);
			c->id_next = b[k];
			b[k] = c;
		}
	free(t->by_id);
	t->by_id = b;
	t->id_buckets = n;
}

static void grow_creds(struct sa_calls *t)
{
	size_t n = t->cred_buckets * 2;
	struct sa_calls_cred **b = calloc(n, sizeof(*b));
	if (!b)
		return;
	for (size_t i = 0; i < t->cred_buckets; i++)
		for (struct sa_calls_cred *r = t->by_cred[i], *next; r; r = next) {
			next = r->next;
			size_t k = sa_str_hash(r->id) & (n - 1);
			r->next = b[k];
			b[k] = r;
		}
	free(t->by_cred);
	t->by_cred = b;
	t->cred_buckets = n;
}

static struct sa_calls_cred **cred_slot(const struct sa_calls *t, const char *id)
{
	struct sa_calls_cred **pp = &t->by_cred[sa_str_hash(id) & (t->cred_buckets - 1)];
	while (*pp && strcmp((*pp)->id, id) != 0)
		pp = &(*pp)->next;
	return pp;
}

int sa_calls_add(struct sa_calls *t, struct sa_call *c)
{
	struct sa_calls_cred **pp = cred_slot(t, c->d.cred_id), *r = *pp;
	if (!r) {
		if (!(r = calloc(1, sizeof(*r))))
			return -1;
		memcpy(r->id, c->d.cred_id, sizeof(r->id));
		r->id[sizeof(r->id) - 1] = '\0';
		*pp = r;
		if (++t->ncreds > 2 * t->cred_buckets)
			grow_creds(t);
	}
	c->cred = r;
	c->cred_next = r->calls;
	if (r->calls)
		r->calls->cred_pprev = &c->cred_next;
	c->cred_pprev = &r->calls;
	r->calls = c;
	r->n++;
	c->id_hash = sa_str_hash(c->d.call_id);
	size_t k = c->id_hash & (t->id_buckets - 1);
	c->id_next = t->by_id[k];
	t->by_id[k] = c;
	TAILQ_INSERT_TAIL(&t->age, c, age);
	if (++t->ncalls > t->id_buckets)
		grow_ids(t);
	return 0;
}

void sa_calls_remove(struct sa_calls *t, struct sa_call *c)
{
	struct sa_call **pp = &t->by_id[c->id_hash & (t->id_buckets - 1)];
	while (*pp && *pp != c)
		pp = &(*pp)->id_next;
	if (*pp)
		*pp = c->id_next;
	/* O(1): a credential may hold thousands of calls (one trunk's PBX) */
	struct sa_calls_cred *r = c->cred;
	*c->cred_pprev = c->cred_next;
	if (c->cred_next)
		c->cred_next->cred_pprev = c->cred_pprev;
	if (--r->n == 0) {
		struct sa_calls_cred **rp = cred_slot(t, r->id);
		*rp = r->next;
		free(r);
		t->ncreds--;
	}
	TAILQ_REMOVE(&t->age, c, age);
	t->ncalls--;
	sa_call_free(c);
}

unsigned sa_calls_count(const struct sa_calls *t)
{
	return __atomic_load_n(&t->ncalls, __ATOMIC_RELAXED);   /* other workers read it (max_calls) */
}

struct sa_call *sa_calls_find(const struct sa_calls *t, const struct sa_msg *m, int *side)
{
	if (!m->call_id)
		return NULL;
	uint64_t h = sa_str_hash(m->call_id);
	for (struct sa_call *c = t->by_id[h & (t->id_buckets - 1)]; c; c = c->id_next)
		if (c->id_hash == h && (*side = sa_dialog_match(&c->d, m)) != 0)
			return c;
	return NULL;
}

struct sa_call *sa_calls_find_caller(const struct sa_calls *t, const char *call_id, const char *caller_tag)
{
	uint64_t h = sa_str_hash(call_id);
	for (struct sa_call *c = t->by_id[h & (t->id_buckets - 1)]; c; c = c->id_next)
		if (c->id_hash == h && strcmp(c->d.call_id, call_id) == 0 && strcmp(c->d.caller_tag, caller_tag) == 0)
			return c;
	return NULL;
}

struct sa_call *sa_calls_find_dialog(const struct sa_calls *t, const char *call_id, const char *caller_tag,
                                     const char *callee_tag)
{
	uint64_t h = sa_str_hash(call_id);
	for (struct sa_call *c = t->by_id[h & (t->id_buckets - 1)]; c; c = c->id_next)
		if (c->id_hash == h && strcmp(c->d.call_id, call_id) == 0 && strcmp(c->d.caller_tag, caller_tag) == 0 &&
		    strcmp(c->d.callee_tag, callee_tag) == 0)
			return c;
	return NULL;
}

struct sa_call *sa_calls_of_credential(const struct sa_calls *t, const char *cred_id)
{
	struct sa_calls_cred *r = *cred_slot(t, cred_id);
	return r ? r->calls : NULL;
}

struct sa_call *sa_calls_next_of_credential(const struct sa_call *c)
{
	return c->cred_next;
}

unsigned sa_calls_credential_count(const struct sa_calls *t, const char *cred_id)
{
	struct sa_calls_cred *r = *cred_slot(t, cred_id);
	return r ? r->n : 0;
}

struct sa_call *sa_calls_oldest(const struct sa_calls *t)
{
	return TAILQ_FIRST(&t->age);
}

struct sa_call *sa_calls_newer(const struct sa_call *c)
{
	return TAILQ_NEXT(c, age);
}

void sa_calls_each_credential(const struct sa_calls *t, void (*fn)(const char *cred_id, void *arg), void *arg)
{
	for (size_t i = 0; i < t->cred_buckets; i++)
		for (struct sa_calls_cred *r = t->by_cred[i]; r; r = r->next)
			fn(r->id, arg);
}

/* ---- calls.state lines ---- */

char *sa_calls_header_line(unsigned count)
{
	json_t *h = json_pack("{s:s, s:i, s:I}", "kind", "sipauthd-calls", "version", SA_CALLS_FILE_VERSION, "calls",
	                      (json_int_t)count);
	char *line = h ? json_dumps(h, JSON_COMPACT) : NULL;
	json_decref(h);
	return line;
}

/* Does line name this kind of file, of this version? */
static bool header_is(const char *line, const char *want)
{
	json_t *h = json_loads(line, 0, NULL);
	const char *kind = NULL;
	int version = 0;
	bool ok = h && json_unpack(h, "{s:s, s:i}", "kind", &kind, "version", &version) == 0 && strcmp(kind, want) == 0 &&
	          version == SA_CALLS_FILE_VERSION;
	json_decref(h);
	return ok;
}

bool sa_calls_header_ok(const char *line)
{
	return header_is(line, "sipauthd-calls");
}

/*
 * Call lines are written by hand, not through a jansson tree: a journal
 * line for every call set up and ended (built as a tree, some forty small
 * allocations each, it cost more than a third of a call's CPU). What
 * jansson would refuse to write, a string that is not UTF-8, makes no line
 * here either; jansson reads them back (sa_call_from_line).
 */
struct jw {
	struct sa_buf b;
	bool bad;                      /* a string that is not UTF-8 */
};

/* The length of the UTF-8 sequence at p (a byte of 0x80 or more), or 0 when it is not one. */
static int utf8_len(const unsigned char *p)
{
	unsigned char ch = *p;
	int n = (ch & 0xe0) == 0xc0 ? 1 : (ch & 0xf0) == 0xe0 ? 2 : (ch & 0xf8) == 0xf0 ? 3 : -1;
	if (n < 0 || (n == 1 && ch < 0xc2) || (n == 3 && ch > 0xf4))
		return 0;
	uint32_t cp = ch & (0x3f >> n);
	for (int i = 1; i <= n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3f);
	}
	if ((n == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)))
		return 0;
	return n + 1;
}

/* s as a JSON string, in one pass: runs of plain bytes copied whole. */
static void jw_str(struct jw *w, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)s, *run = p;
	sa_buf_put(&w->b, "\"", 1);
	for (;;) {
		unsigned char ch = *p;
		if (ch >= 0x20 && ch < 0x80 && ch != '"' && ch != '\\') {
			p++;
			continue;
		}
		if (ch >= 0x80) {
			int n = utf8_len(p);
			if (n == 0) {
				w->bad = true;
				return;
			}
			p += n;
			continue;
		}
		sa_buf_put(&w->b, run, (size_t)(p - run));
		if (ch == '\0')
			break;
		char e[6] = { '\\', (char)ch };
		if (ch < 0x20) {
			memcpy(e + 1, "u00", 3);
			e[4] = hex[ch >> 4];
			e[5] = hex[ch & 15];
		}
		sa_buf_put(&w->b, e, ch < 0x20 ? 6 : 2);
		run = ++p;
	}
	sa_buf_put(&w->b, "\"", 1);
}

/* "key": */
static void jw_key(struct jw *w, const char *key)
{
	sa_buf_puts(&w->b, key);
}

/* "key":"value" (key with its punctuation) */
static void jw_field(struct jw *w, const char *key, const char *v)
{
	jw_key(w, key);
	jw_str(w, v);
}

static void jw_int(struct jw *w, int64_t v)
{
	if (v < 0)
		sa_buf_put(&w->b, "-", 1);
	sa_buf_putu(&w->b, v < 0 ? -(uint64_t)v : (uint64_t)v);
}

static void jw_side(struct jw *w, const struct sa_dialog_side *ds, const struct sa_call_flow_text *f)
{
	jw_field(w, "{\"target\":", ds->target);
	jw_field(w, ",\"route\":", ds->route);
	jw_field(w, ",\"name\":", ds->name);
	jw_key(w, ",\"cseq\":");
	sa_buf_putu(&w->b, ds->cseq);
	jw_field(w, ",\"flow\":{\"transport\":", f->transport);
	jw_field(w, ",\"address\":", f->address);
	jw_key(w, ",\"port\":");
	sa_buf_putu(&w->b, f->port);
	jw_field(w, ",\"listener\":", f->listener);
	jw_key(w, "}}");
}

/* Bytes strs[0..n) take escaped (6 a byte at worst), and `fixed` more. */
static size_t jw_room(const char *const *strs, int n, size_t fixed)
{
	size_t room = fixed;
	for (int i = 0; i < n; i++)
		room += 6 * strlen(strs[i]) + 2;
	return room;
}

size_t sa_call_line_room(const struct sa_call *c, const struct sa_call_flow_text ends[2])
{
	const char *strs[] = { c->d.call_id, c->d.caller_tag, c->d.callee_tag, c->d.cred_id, c->d.trunk_id,
	                       c->d.caller.target, c->d.caller.route, c->d.caller.name, c->d.callee.target,
	                       c->d.callee.route, c->d.callee.name, ends[0].transport, ends[0].address,
	                       ends[0].listener, ends[1].transport, ends[1].address, ends[1].listener };
	return jw_room(strs, (int)(sizeof(strs) / sizeof(strs[0])), 512);
}

size_t sa_call_end_line_room(const struct sa_call *c)
{
	const char *strs[] = { c->d.call_id, c->d.caller_tag, c->d.callee_tag };
	return jw_room(strs, 3, 64);
}

/* {"FIRST":CALL_ID,"caller_tag":..,"callee_tag":.. : how both kinds of line begin. */
static void jw_ids(struct jw *w, const char *first, const struct sa_call *c)
{
	jw_field(w, first, c->d.call_id);
	jw_field(w, ",\"caller_tag\":", c->d.caller_tag);
	jw_field(w, ",\"callee_tag\":", c->d.callee_tag);
}

/* The line closed into *b, unless a string was not UTF-8 or b had not the room. */
static bool jw_done(struct jw *w, struct sa_buf *b)
{
	jw_key(w, "}");
	if (w->bad || w->b.overflow)
		return false;
	*b = w->b;
	return true;
}

bool sa_call_line_put(const struct sa_call *c, const struct sa_call_flow_text ends[2], struct sa_buf *b)
{
	struct jw w = { .b = *b };
	jw_ids(&w, "{\"call_id\":", c);
	jw_field(&w, ",\"cred_id\":", c->d.cred_id);
	jw_field(&w, ",\"trunk_id\":", c->d.trunk_id);
	jw_key(&w, c->d.inbound ? ",\"inbound\":true" : ",\"inbound\":false");
	jw_key(&w, ",\"started_at\":");
	jw_int(&w, c->d.started_at);
	jw_key(&w, ",\"caller\":");
	jw_side(&w, &c->d.caller, &ends[0]);
	jw_key(&w, ",\"callee\":");
	jw_side(&w, &c->d.callee, &ends[1]);
	return jw_done(&w, b);
}

bool sa_call_end_line_put(const struct sa_call *c, struct sa_buf *b)
{
	struct jw w = { .b = *b };
	jw_ids(&w, "{\"end\":", c);
	return jw_done(&w, b);
}

/* A malloc'd line of `room` bytes at most: the call's (ends given) or its end line. */
static char *line_of(const struct sa_call *c, const struct sa_call_flow_text *ends, size_t room)
{
	struct sa_buf b = { .p = malloc(room + 1), .cap = room };
	if (!b.p || !(ends ? sa_call_line_put(c, ends, &b) : sa_call_end_line_put(c, &b))) {
		free(b.p);
		return NULL;
	}
	b.p[b.len] = '\0';
	return b.p;
}

char *sa_call_line(const struct sa_call *c, const struct sa_call_flow_text ends[2])
{
	return line_of(c, ends, sa_call_line_room(c, ends));
}

char *sa_call_end_line(const struct sa_call *c)
{
	return line_of(c, NULL, sa_call_end_line_room(c));
}

static int copy_text(const char *v, char *out, size_t outlen)
{
	size_t n = strlen(v);
	if (n >= outlen)
		return -1;
	memcpy(out, v, n + 1);
	return 0;
}

static int flow_from_json(json_t *j, struct sa_call_flow_text *f)
{
	const char *transport, *address, *listener;
	int port;
	if (json_unpack(j, "{s:s, s:s, s:i, s:s}", "transport", &transport, "address", &address, "port", &port,
	                "listener", &listener) < 0 || port < 1 || port > 65535 ||
	    copy_text(transport, f->transport, sizeof(f->transport)) < 0 ||
	    copy_text(address, f->address, sizeof(f->address)) < 0 ||
	    copy_text(listener, f->listener, sizeof(f->listener)) < 0)
		return -1;
	f->port = (unsigned)port;
	return 0;
}

static int side_from_json(json_t *j, const char **target, const char **route, const char **name,
                          unsigned long *cseq, struct sa_call_flow_text *f)
{
	json_int_t cs;
	json_t *flow;
	if (json_unpack(j, "{s:s, s:s, s:s, s:I, s:o}", "target", target, "route", route, "name", name, "cseq", &cs,
	                "flow", &flow) < 0 || cs < 0 || flow_from_json(flow, f) < 0)
		return -1;
	*cseq = (unsigned long)cs;
	return 0;
}

struct sa_call *sa_call_from_line(const char *line, struct sa_call_flow_text ends[2])
{
	const char *t[SA_DT_COUNT], *cred, *trunk;
	int inbound;
	json_int_t started;
	json_t *caller, *callee;
	unsigned long csa, csb;
	struct sa_call *c = NULL;
	json_t *j = json_loads(line, 0, NULL);
	if (!j || json_unpack(j, "{s:s, s:s, s:s, s:s, s:s, s:b, s:I, s:o, s:o}", "call_id", &t[SA_DT_CALL_ID],
	                      "caller_tag", &t[SA_DT_CALLER_TAG], "callee_tag", &t[SA_DT_CALLEE_TAG], "cred_id", &cred,
	                      "trunk_id", &trunk, "inbound", &inbound, "started_at", &started, "caller", &caller,
	                      "callee", &callee) < 0 ||
	    side_from_json(caller, &t[SA_DT_CALLER_TARGET], &t[SA_DT_CALLER_ROUTE], &t[SA_DT_CALLER_NAME], &csa,
	                   &ends[0]) < 0 ||
	    side_from_json(callee, &t[SA_DT_CALLEE_TARGET], &t[SA_DT_CALLEE_ROUTE], &t[SA_DT_CALLEE_NAME], &csb,
	                   &ends[1]) < 0 ||
	    strlen(cred) >= SA_ID_MAX || strlen(trunk) >= SA_ID_MAX || strlen(t[SA_DT_CALL_ID]) > SA_SIP_MAX_CALL_ID)
		goto out;
	if (!(c = sa_call_new()) || sa_dialog_set_text(&c->d, t) < 0) {
		sa_call_free(c);
		c = NULL;
		goto out;
	}
	memcpy(c->d.cred_id, cred, strlen(cred) + 1);
	memcpy(c->d.trunk_id, trunk, strlen(trunk) + 1);
	c->d.inbound = inbound;
	c->d.started_at = started;
	c->d.caller.cseq = csa;
	c->d.callee.cseq = csb;
out:
	json_decref(j);   /* after the dialog took its copies of the strings */
	return c;
}

/* ---- the journal ---- */

#define JOURNAL_KIND "sipauthd-calls-journal"

char *sa_calls_journal_header(void)
{
	json_t *j = json_pack("{s:s, s:i}", "kind", JOURNAL_KIND, "version", SA_CALLS_FILE_VERSION);
	char *line = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	return line;
}

bool sa_calls_journal_header_ok(const char *line)
{
	return header_is(line, JOURNAL_KIND);
}

int sa_calls_journal_apply(struct sa_calls *t, const char *line, struct sa_call **added,
                           struct sa_call_flow_text ends[2])
{
	*added = NULL;
	json_t *j = json_loads(line, 0, NULL);
	const char *call_id, *caller_tag, *callee_tag;
	if (j && json_unpack(j, "{s:s, s:s, s:s}", "end", &call_id, "caller_tag", &caller_tag, "callee_tag",
	                     &callee_tag) == 0) {
		struct sa_call *c = sa_calls_find_dialog(t, call_id, caller_tag, callee_tag);
		if (c)
			sa_calls_remove(t, c);
		json_decref(j);
		return 0;
	}
	json_decref(j);
	struct sa_call *c = sa_call_from_line(line, ends);
	if (!c)
		return -1;
	struct sa_call *old = sa_calls_find_dialog(t, c->d.call_id, c->d.caller_tag, c->d.callee_tag);
	if (old)
		sa_calls_remove(t, old);   /* written again (a rewrite cut short): the later line holds */
	if (sa_calls_add(t, c) < 0) {
		sa_call_free(c);
		return -1;
	}
	*added = c;
	return 0;
}
