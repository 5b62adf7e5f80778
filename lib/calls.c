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

bool sa_calls_header_ok(const char *line)
{
	json_t *h = json_loads(line, 0, NULL);
	const char *kind = NULL;
	int version = 0;
	bool ok = h && json_unpack(h, "{s:s, s:i}", "kind", &kind, "version", &version) == 0 &&
	          strcmp(kind, "sipauthd-calls") == 0 && version == SA_CALLS_FILE_VERSION;
	json_decref(h);
	return ok;
}

static json_t *flow_json(const struct sa_call_flow_text *f)
{
	return json_pack("{s:s, s:s, s:i, s:s}", "transport", f->transport, "address", f->address, "port", (int)f->port,
	                 "listener", f->listener);
}

static json_t *side_json(const struct sa_dialog_side *ds, const struct sa_call_flow_text *f)
{
	return json_pack("{s:s, s:s, s:s, s:I, s:o}", "target", ds->target, "route", ds->route, "name", ds->name,
	                 "cseq", (json_int_t)ds->cseq, "flow", flow_json(f));
}

char *sa_call_line(const struct sa_call *c, const struct sa_call_flow_text ends[2])
{
	json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:b, s:I, s:o, s:o}", "call_id", c->d.call_id, "caller_tag",
	                      c->d.caller_tag, "callee_tag", c->d.callee_tag, "cred_id", c->d.cred_id, "trunk_id",
	                      c->d.trunk_id, "inbound", c->d.inbound, "started_at", (json_int_t)c->d.started_at, "caller",
	                      side_json(&c->d.caller, &ends[0]), "callee", side_json(&c->d.callee, &ends[1]));
	char *line = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	return line;
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
