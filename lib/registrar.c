/* registrar.c: bindings for trunks, applied from one REGISTER at a time. */
#include "registrar.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <strings.h>

static void set_status(struct sa_reg_result *res, int status, const char *reason)
{
	res->status = status;
	res->reason = reason;
}

/* Expires for one contact: its own param, else the header, else the
 * default. A value that is not a number counts as 3600 (RFC 3261 §20.19:
 * "malformed values SHOULD be treated as equivalent to 3600"; Kamailio's
 * registrar does so), cut to max_expires like any other. */
static long contact_expires(const struct sa_msg *m, const struct sa_addr *c, unsigned dflt)
{
	long e = c->expires != -1 ? c->expires : m->expires;
	if (e == -1)
		return dflt;
	return e < 0 ? 3600 : e;
}

static bool is_wildcard(const struct sa_msg *m)
{
	return m->contact_star;
}

#define MAX_ASKED 32   /* contacts in one REGISTER; more is a 400 */

/* The credential's bindings, read once per REGISTER and kept up to date in
 * memory as the request is applied, so the 200 needs no second walk. */
struct bindings {
	struct sa_binding *b;
	int n, cap;
	int64_t now;
};

static int collect_cb(const struct sa_binding *bd, void *arg)
{
	struct bindings *bl = arg;
	if (bd->expires_at <= bl->now)
		return 0;
	if (bl->n == bl->cap) {
		int cap = bl->cap ? 2 * bl->cap : 8;
		struct sa_binding *nb = realloc(bl->b, (size_t)cap * sizeof(*nb));
		if (!nb)
			return 1;
		bl->b = nb;
		bl->cap = cap;
	}
	bl->b[bl->n++] = *bd;
	return 0;
}

static struct sa_binding *bindings_find(struct bindings *bl, const char *uri)
{
	for (int i = 0; i < bl->n; i++)
		if (strcmp(bl->b[i].contact, uri) == 0)
			return &bl->b[i];
	return NULL;
}

/* What the REGISTER asks for: each contact's URI and expiry. */
struct asked {
	const char *uri[MAX_ASKED];   /* the view's strings */
	long expires[MAX_ASKED];
	int n;
};

/* Every contact well-formed and none too brief; nothing is written yet. */
static int read_contacts(const struct sa_reg_cfg *cfg, const struct sa_msg *m, struct asked *a,
                         struct sa_reg_result *res)
{
	unsigned n = m->ncontacts;
	if (n > MAX_ASKED) {
		set_status(res, 400, "Too many Contacts");
		return -1;
	}
	for (unsigned i = 0; i < n; i++) {
		const struct sa_addr *c = &m->contacts[i];
		long e = contact_expires(m, c, cfg->default_expires);
		const char *uri = c->uri.text;
		if (!uri || e < 0) {
			set_status(res, 400, "Bad Contact");
			return -1;
		}
		a->uri[a->n] = uri;
		a->expires[a->n++] = e;
		if (strlen(uri) >= SA_CONTACT_MAX) {
			set_status(res, 400, "Contact too long");
			return -1;
		}
		if (e > 0 && e < (long)cfg->min_expires) {
			set_status(res, 423, NULL);
			snprintf(res->headers, sizeof(res->headers), "Min-Expires: %u\r\n", cfg->min_expires);
			return -1;
		}
	}
	return 0;
}

/* All or nothing (§10.3): out-of-order refreshes and the contact limit are
 * checked for every contact before the first write. */
static int check_request(const struct sa_reg_cfg *cfg, const struct sa_msg *m, bool retransmission,
                         struct bindings *bl, const struct asked *a, struct sa_reg_result *res)
{
	int count = bl->n;
	for (int i = 0; i < a->n; i++) {
		const struct sa_binding *old = bindings_find(bl, a->uri[i]);
		if (old && strcmp(old->call_id, m->call_id) == 0 &&
		    (old->cseq > m->cseq || (old->cseq == m->cseq && !retransmission))) {
			set_status(res, 500, "Out of order REGISTER");
			return -1;
		}
		count += (!old && a->expires[i] > 0) - (old && a->expires[i] == 0);
	}
	if (cfg->max_contacts && count > (int)cfg->max_contacts) {
		set_status(res, 503, "Too Many Registered Contacts");
		return -1;
	}
	return 0;
}

/* strlcpy: copy what fits, always terminated (snprintf("%s") costs ten times as much here). */
static void copy_str(char *dst, size_t size, const char *src, size_t len)
{
	if (len >= size)
		len = size - 1;
	memcpy(dst, src, len);
	dst[len] = '\0';
}

#define COPY(dst, src) copy_str((dst), sizeof(dst), (src), strlen(src))

/* Who registers: the credential, the password version it answered with, from where. */
struct reg_who {
	const struct sa_credential *cred;
	uint32_t password_version;
	const struct sa_peer *peer;
};

static void binding_fill(struct sa_binding *b, const struct sa_reg_cfg *cfg, const struct sa_msg *m,
                         const struct reg_who *who, int64_t now, const char *uri, long expires,
                         const struct sa_binding *old)
{
	const struct sa_credential *cred = who->cred;
	const struct sa_peer *peer = who->peer;

	memset(b, 0, sizeof(*b));
	COPY(b->cred_id, cred->id);
	COPY(b->trunk_id, cred->trunk_id);
	COPY(b->contact, uri);
	COPY(b->source, peer->addr);
	b->source_port = peer->port;
	COPY(b->transport, peer->transport);
	const struct sa_hdr *ua = sa_msg_header(m, SA_H_USER_AGENT, 0);
	if (ua)
		copy_str(b->user_agent, sizeof(b->user_agent), ua->value, ua->vlen);
	COPY(b->call_id, m->call_id);
	b->cseq = (uint32_t)m->cseq;
	b->registered_at = old ? old->registered_at : now;
	b->updated_at = now;
	b->expires_at = now + (expires > (long)cfg->max_expires ? (long)cfg->max_expires : expires);
	b->password_version = who->password_version;
}

/* A store that cannot take the write: full (map or disk) is temporary for
 * the PBX (503, retry later); anything else is our fault (500). */
static void store_failed(struct sa_reg_result *res, int err)
{
	if (err == SA_STORE_EFULL) {
		set_status(res, 503, "Too Many Registered Contacts");
	} else if (err == SA_STORE_EMAPFULL || err == SA_STORE_ENOSPC) {
		set_status(res, 503, "Registrar Storage Full");
		snprintf(res->headers, sizeof(res->headers), "Retry-After: %d\r\n", SA_REG_RETRY_AFTER);
	} else {
		set_status(res, 500, NULL);
	}
}

/* A binding refreshed from another stream connection than the one it was
 * registered over: that one is no longer the PBX's flow. */
static bool keep_is(const struct sa_reg_keep *k, const char *source, uint16_t port, const char *transport)
{
	return k->port == port && strcmp(k->source, source) == 0 && strcmp(k->transport, transport) == 0;
}

/* A stream connection the credential's bindings may have been on (before
 * this REGISTER) or are on now. */
static void keep_note(struct sa_reg_result *res, const char *source, uint16_t port, const char *transport)
{
	if (strcmp(transport, "udp") == 0 || res->nkeeps >= (int)(sizeof(res->keeps) / sizeof(res->keeps[0])))
		return;
	for (int k = 0; k < res->nkeeps; k++)
		if (keep_is(&res->keeps[k], source, port, transport))
			return;
	struct sa_reg_keep *kp = &res->keeps[res->nkeeps++];
	snprintf(kp->source, sizeof(kp->source), "%s", source);
	kp->port = port;
	snprintf(kp->transport, sizeof(kp->transport), "%s", transport);
	kp->until = 0;
}

/* Each noted connection's latest expiry among the bindings left (bl after
 * the change: a removed one expires now). */
static void keeps_settle(struct sa_reg_result *res, const struct bindings *bl)
{
	for (int k = 0; k < res->nkeeps; k++)
		for (int i = 0; i < bl->n; i++)
			if (bl->b[i].expires_at > bl->now && bl->b[i].expires_at > res->keeps[k].until &&
			    keep_is(&res->keeps[k], bl->b[i].source, bl->b[i].source_port, bl->b[i].transport))
				res->keeps[k].until = bl->b[i].expires_at;
}

/* Every contact's change written in one store transaction (all or nothing,
 * §10.3), then the in-memory list updated to match. */
static int apply_contacts(struct sa_store *st, const struct sa_reg_cfg *cfg, const struct sa_msg *m,
                          const struct reg_who *who, int64_t now, const struct asked *a, struct bindings *bl,
                          struct sa_reg_result *res)
{
	struct sa_binding nb[MAX_ASKED];
	struct sa_binding_change ch[MAX_ASKED];
	struct sa_binding *old[MAX_ASKED];
	int n = 0;

	for (int i = 0; i < a->n; i++) {
		old[i] = bindings_find(bl, a->uri[i]);
		if (a->expires[i] == 0 && !old[i])
			continue;   /* removing what is not there changes nothing */
		if (a->expires[i] > 0)
			binding_fill(&nb[i], cfg, m, who, now, a->uri[i], a->expires[i], old[i]);
		ch[n++] = (struct sa_binding_change){ .contact = a->uri[i], .b = a->expires[i] > 0 ? &nb[i] : NULL };
	}
	int rc = n > 0 ? sa_store_binding_apply_for(st, who->cred, ch, (size_t)n, 0) : SA_STORE_OK;
	if (rc != SA_STORE_OK) {   /* the limit was checked for the whole request */
		store_failed(res, rc);
		return -1;
	}
	for (int i = 0; i < a->n; i++) {   /* found again: collect_cb may move the list */
		struct sa_binding *o = bindings_find(bl, a->uri[i]);
		if (a->expires[i] == 0) {
			if (o && o->expires_at > now) {
				res->removed++;
				o->expires_at = now;   /* gone from the 200's list */
			}
		} else if (o) {
			nb[i].registered_at = o->registered_at;
			*o = nb[i];
		} else {
			res->added++;
			collect_cb(&nb[i], bl);
		}
	}
	return 0;
}

static int apply_wildcard(struct sa_store *st, const struct sa_msg *m, const struct sa_credential *cred,
                          struct bindings *bl, struct sa_reg_result *res)
{
	if (m->ncontacts > 0 || sa_msg_header(m, SA_H_CONTACT, 1) || m->expires != 0) {
		set_status(res, 400, "Wildcard needs Expires: 0");
		return -1;
	}
	int rc = sa_store_binding_delete_all(st, cred->id);
	if (rc != SA_STORE_OK) {
		store_failed(res, rc);
		return -1;
	}
	res->removed = bl->n;
	bl->n = 0;
	return 0;
}

/* The 200's Contacts, each with its expires, and its Date (RFC 3261 §10.3
 * step 8: phones set their clocks from it). */
static void list_contacts(const struct bindings *bl, struct sa_reg_result *res)
{
	struct sa_buf b = { .p = res->headers, .cap = sizeof(res->headers) - 1 };
	static const char days[7][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
	static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
	                                    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	time_t now = (time_t)bl->now;
	struct tm tm;
	if (gmtime_r(&now, &tm))
		sa_buf_printf(&b, "Date: %s, %02d %s %04d %02d:%02d:%02d GMT\r\n", days[tm.tm_wday], tm.tm_mday,
		              months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
	size_t dated = b.len;
	for (int i = 0; i < bl->n; i++)
		if (bl->b[i].expires_at > bl->now)
			sa_buf_printf(&b, "Contact: <%s>;expires=%lld\r\n", bl->b[i].contact,
			              (long long)(bl->b[i].expires_at - bl->now));
	if (b.overflow)
		b.len = dated;   /* a huge list is not worth a broken 200: send none */
	res->headers[b.len] = '\0';
}

void sa_registrar_apply(struct sa_store *st, const struct sa_reg_cfg *cfg, const struct sa_msg *m, bool retransmission,
                        const struct sa_credential *cred, uint32_t password_version, const struct sa_peer *peer,
                        int64_t now, struct sa_reg_result *res)
{
	struct reg_who who = { cred, password_version, peer };
	struct bindings bl = { .now = now };
	struct asked a = { .n = 0 };

	memset(res, 0, sizeof(*res));
	set_status(res, 200, NULL);
	if (sa_store_binding_list_for(st, cred, collect_cb, &bl) != 0) {
		set_status(res, 500, NULL);
		goto out;
	}
	keep_note(res, peer->addr, peer->port, peer->transport);
	for (int i = 0; i < bl.n; i++)
		keep_note(res, bl.b[i].source, bl.b[i].source_port, bl.b[i].transport);
	if (is_wildcard(m)) {
		if (apply_wildcard(st, m, cred, &bl, res) < 0)
			goto fail;
	} else {
		if (read_contacts(cfg, m, &a, res) < 0 || check_request(cfg, m, retransmission, &bl, &a, res) < 0 ||
		    apply_contacts(st, cfg, m, &who, now, &a, &bl, res) < 0)
			goto fail;
	}
	keeps_settle(res, &bl);
	list_contacts(&bl, res);
	goto out;
fail:
	res->nkeeps = 0;   /* nothing changed */
out:
	free(bl.b);
}

int sa_registrar_lookup(struct sa_store *st, const char *trunk_id, int64_t now, sa_store_binding_pred reachable,
                        void *arg, struct sa_binding *out, int max, int *n)
{
	return sa_store_bindings_latest(st, trunk_id, now, reachable, arg, out, max, n);
}
