/* registrar.c: bindings for trunks, applied from one REGISTER at a time. */
#include "registrar.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <osipparser2/osip_parser.h>

static void set_status(struct sa_reg_result *res, int status, const char *reason)
{
	res->status = status;
	res->reason = reason;
}

/* Expires for one contact: its own param, else the header, else the default. */
static long contact_expires(const struct sa_msg *m, osip_contact_t *c, unsigned dflt)
{
	osip_generic_param_t *gp = NULL;
	osip_contact_param_get_byname(c, "expires", &gp);
	const char *v = gp ? gp->gvalue : NULL;
	const struct sa_hdr *h = sa_msg_header(m, SA_H_EXPIRES, 0);
	char tmp[16];
	if (!v && h && h->vlen < sizeof(tmp)) {
		memcpy(tmp, h->value, h->vlen);
		tmp[h->vlen] = '\0';
		v = tmp;
	}
	if (!v)
		return dflt;
	char *ep;
	long e = strtol(v, &ep, 10);
	return (ep == v || e < 0) ? -1 : e;
}

static bool is_wildcard(const struct sa_msg *m)
{
	const struct sa_hdr *h = sa_msg_header(m, SA_H_CONTACT, 0);
	return h && h->vlen == 1 && h->value[0] == '*';
}

struct list_ctx {
	struct sa_buf b;
	int64_t now;
	int count;
};

static int put_contact_cb(const struct sa_binding *bd, void *arg)
{
	struct list_ctx *lc = arg;
	if (bd->expires_at <= lc->now)
		return 0;
	sa_buf_printf(&lc->b, "Contact: <%s>;expires=%lld\r\n", bd->contact,
	              (long long)(bd->expires_at - lc->now));
	lc->count++;
	return 0;
}

static int count_cb(const struct sa_binding *bd, void *arg)
{
	struct list_ctx *lc = arg;
	if (bd->expires_at > lc->now)
		lc->count++;
	return 0;
}

/* Out-of-order check of §10.3 step 7: same Call-ID, CSeq not higher. */
struct find_ctx {
	const char *contact;
	struct sa_binding found;
	bool hit;
};

static int find_cb(const struct sa_binding *bd, void *arg)
{
	struct find_ctx *fc = arg;
	if (strcmp(bd->contact, fc->contact) != 0)
		return 0;
	fc->found = *bd;
	fc->hit = true;
	return 1;
}

static int apply_contact(struct sa_store *st, const struct sa_reg_cfg *cfg, const struct sa_msg *m,
                         const struct sa_credential *cred, const struct sa_peer *peer, int64_t now,
                         const char *uri, long expires, struct sa_reg_result *res)
{
	struct find_ctx fc = { .contact = uri };
	sa_store_binding_list_credential(st, cred->id, find_cb, &fc);
	if (fc.hit && strcmp(fc.found.call_id, m->call_id) == 0 && fc.found.cseq >= m->cseq) {
		set_status(res, 500, "Out of order REGISTER");
		return -1;
	}
	if (expires == 0) {
		if (fc.hit && sa_store_binding_delete(st, cred->id, uri) == 0)
			res->removed++;
		return 0;
	}
	struct sa_binding b;
	memset(&b, 0, sizeof(b));
	snprintf(b.cred_id, sizeof(b.cred_id), "%s", cred->id);
	snprintf(b.trunk_id, sizeof(b.trunk_id), "%s", cred->trunk_id);
	snprintf(b.contact, sizeof(b.contact), "%s", uri);
	snprintf(b.source, sizeof(b.source), "%s", peer->addr);
	b.source_port = peer->port;
	snprintf(b.transport, sizeof(b.transport), "%s", peer->transport);
	const struct sa_hdr *ua = sa_msg_header(m, SA_H_USER_AGENT, 0);
	if (ua)
		snprintf(b.user_agent, sizeof(b.user_agent), "%.*s", (int)ua->vlen, ua->value);
	snprintf(b.call_id, sizeof(b.call_id), "%s", m->call_id);
	b.cseq = (uint32_t)m->cseq;
	b.registered_at = fc.hit ? fc.found.registered_at : now;
	b.updated_at = now;
	b.expires_at = now + (expires > (long)cfg->max_expires ? (long)cfg->max_expires : expires);
	int rc = sa_store_binding_put(st, &b, cfg->max_contacts);
	if (rc == SA_STORE_EFULL) {
		set_status(res, 503, "Too Many Registered Contacts");
		return -1;
	}
	if (rc != 0) {
		set_status(res, 500, NULL);
		return -1;
	}
	if (!fc.hit)
		res->added++;
	return 0;
}

/* First pass: every contact well-formed and none too brief (nothing written yet). */
static int check_contacts(const struct sa_reg_cfg *cfg, const struct sa_msg *m, struct sa_reg_result *res)
{
	for (int i = 0; i < osip_list_size(&m->osip->contacts); i++) {
		osip_contact_t *c = osip_list_get(&m->osip->contacts, i);
		long e = contact_expires(m, c, cfg->default_expires);
		if (!c->url || e < 0) {
			set_status(res, 400, "Bad Contact");
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

struct count_ctx {
	const struct sa_msg *m;
	unsigned dflt;
	int64_t now;
	int live, added, removed;
};

/* Is uri among the request's contacts, and with what expiry? -2 when absent. */
static long asked_expiry(const struct sa_msg *m, const char *uri, unsigned dflt)
{
	for (int i = 0; i < osip_list_size(&m->osip->contacts); i++) {
		osip_contact_t *c = osip_list_get(&m->osip->contacts, i);
		char *s = NULL;
		if (!c->url || osip_uri_to_str(c->url, &s) != 0)
			continue;
		bool same = strcmp(s, uri) == 0;
		osip_free(s);
		if (same)
			return contact_expires(m, c, dflt);
	}
	return -2;
}

static int count_existing_cb(const struct sa_binding *bd, void *arg)
{
	struct count_ctx *cc = arg;
	if (bd->expires_at <= cc->now)
		return 0;
	cc->live++;
	if (asked_expiry(cc->m, bd->contact, cc->dflt) == 0)
		cc->removed++;
	return 0;
}

/* All or nothing: would the request leave more than max_contacts bound? */
static int check_limit(struct sa_store *st, const struct sa_reg_cfg *cfg, const struct sa_msg *m,
                       const struct sa_credential *cred, int64_t now, struct sa_reg_result *res)
{
	if (cfg->max_contacts == 0)
		return 0;
	struct count_ctx cc = { .m = m, .dflt = cfg->default_expires, .now = now };
	sa_store_binding_list_credential(st, cred->id, count_existing_cb, &cc);
	for (int i = 0; i < osip_list_size(&m->osip->contacts); i++) {
		osip_contact_t *c = osip_list_get(&m->osip->contacts, i);
		char *s = NULL;
		if (contact_expires(m, c, cfg->default_expires) == 0 || osip_uri_to_str(c->url, &s) != 0)
			continue;
		struct find_ctx fc = { .contact = s };
		sa_store_binding_list_credential(st, cred->id, find_cb, &fc);
		if (!fc.hit || fc.found.expires_at <= now)
			cc.added++;
		osip_free(s);
	}
	if (cc.live + cc.added - cc.removed > (int)cfg->max_contacts) {
		set_status(res, 503, "Too Many Registered Contacts");
		return -1;
	}
	return 0;
}

static int apply_wildcard(struct sa_store *st, const struct sa_msg *m, const struct sa_credential *cred,
                          struct sa_reg_result *res)
{
	const struct sa_hdr *h = sa_msg_header(m, SA_H_EXPIRES, 0);
	if (sa_msg_header(m, SA_H_CONTACT, 1) || !h || strtol(h->value, NULL, 10) != 0 || h->value[0] != '0') {
		set_status(res, 400, "Wildcard needs Expires: 0");
		return -1;
	}
	struct list_ctx lc = { .now = 0 };
	sa_store_binding_list_credential(st, cred->id, count_cb, &lc);
	if (sa_store_binding_delete_all(st, cred->id) != 0) {
		set_status(res, 500, NULL);
		return -1;
	}
	res->removed = lc.count;
	return 0;
}

void sa_registrar_apply(struct sa_store *st, const struct sa_reg_cfg *cfg, const struct sa_msg *m,
                        const struct sa_credential *cred, const struct sa_peer *peer, int64_t now,
                        struct sa_reg_result *res)
{
	memset(res, 0, sizeof(*res));
	set_status(res, 200, NULL);
	if (is_wildcard(m)) {
		if (apply_wildcard(st, m, cred, res) < 0)
			return;
	} else {
		if (check_contacts(cfg, m, res) < 0 || check_limit(st, cfg, m, cred, now, res) < 0)
			return;
		for (int i = 0; i < osip_list_size(&m->osip->contacts); i++) {
			osip_contact_t *c = osip_list_get(&m->osip->contacts, i);
			char *uri = NULL;
			if (osip_uri_to_str(c->url, &uri) != 0) {
				set_status(res, 500, NULL);
				return;
			}
			int rc = apply_contact(st, cfg, m, cred, peer, now, uri,
			                       contact_expires(m, c, cfg->default_expires), res);
			osip_free(uri);
			if (rc < 0)
				return;
		}
	}
	struct list_ctx lc = { .b = { .p = res->headers, .cap = sizeof(res->headers) - 1 }, .now = now };
	sa_store_binding_list_credential(st, cred->id, put_contact_cb, &lc);
	if (lc.b.overflow)
		lc.b.len = 0;   /* a huge list is not worth a broken 200: send none */
	res->headers[lc.b.len] = '\0';
}

struct latest_ctx {
	int64_t now;
	struct sa_binding *out;
	bool hit;
};

static int latest_cb(const struct sa_binding *bd, void *arg)
{
	struct latest_ctx *lc = arg;
	if (bd->expires_at <= lc->now)
		return 0;
	if (!lc->hit || bd->updated_at >= lc->out->updated_at) {
		*lc->out = *bd;
		lc->hit = true;
	}
	return 0;
}

int sa_registrar_lookup(struct sa_store *st, const char *trunk_id, int64_t now, struct sa_binding *out)
{
	struct latest_ctx lc = { .now = now, .out = out };
	int rc = sa_store_binding_list_trunk(st, trunk_id, latest_cb, &lc);
	if (rc != 0)
		return rc;
	return lc.hit ? 0 : SA_STORE_ENOTFOUND;
}
