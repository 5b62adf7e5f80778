/* auth.c: digest verification of one request against the store, in constant work per attempt. */
#include "auth.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

static const char *reason_names[SA_AUTH_REASON_COUNT] = {
	"none", "unknown_user", "bad_password", "stale_nonce", "replay", "malformed", "uri_mismatch", "source_not_allowed",
	"tls_required", "banned",
};

const char *sa_auth_reason_name(enum sa_auth_reason r)
{
	return r < SA_AUTH_REASON_COUNT ? reason_names[r] : "unknown";
}

static const char *const stale_names[SA_STALE_COUNT] = {
	"none", "expired", "unknown_key", "other_node", "table_full", "future",
};

const char *sa_auth_stale_name(enum sa_auth_stale s)
{
	return s < SA_STALE_COUNT ? stale_names[s] : "unknown";
}

int sa_auth_init(struct sa_auth *a, struct sa_store *store, struct sa_nonce_ctx *nonce,
                 const struct sa_auth_cfg *cfg)
{
	unsigned char rnd[16];
	memset(a, 0, sizeof(*a));
	a->store = store;
	a->nonce = nonce;
	a->cfg = *cfg;
	if (RAND_bytes(rnd, sizeof(rnd)) != 1)
		return -1;
	char pw[33];
	for (size_t i = 0; i < sizeof(rnd); i++)
		snprintf(pw + 2 * i, 3, "%02x", rnd[i]);
	int rc = 0;
	for (int alg = 0; alg < SA_ALG_COUNT && rc == 0; alg++)
		rc = sa_digest_ha1((enum sa_digest_alg)alg, "dummy", "dummy", pw, a->dummy_ha1[alg]);
	snprintf(a->no_trunk, sizeof(a->no_trunk), "trunk_%.16s", pw);
	OPENSSL_cleanse(pw, sizeof(pw));
	return rc;
}

int sa_auth_trunk_from_host(const char *host, const char *domain, char *out, size_t outlen)
{
	size_t hl = host ? strlen(host) : 0, dl = strlen(domain);
	if (hl > 0 && host[hl - 1] == '.')
		hl--;   /* an absolute name (RFC 1034 §3.1): the same host */
	if (hl < 6 + 1 + 1 + dl || strncasecmp(host, "trunk-", 6) != 0)
		return -1;
	if (host[hl - dl - 1] != '.' || strncasecmp(host + hl - dl, domain, dl) != 0)
		return -1;
	const char *id = host + 6;
	size_t idl = hl - dl - 1 - 6;
	if (idl + 1 > outlen)
		return -1;
	for (size_t i = 0; i < idl; i++) {
		char c = (char)tolower((unsigned char)id[i]);
		if (!isalnum((unsigned char)c) && c != '_' && c != '-')
			return -1;
		out[i] = c;
	}
	out[idl] = '\0';
	/* DNS-safe form: "trunk-xxx" stands for the id "trunk_xxx" */
	if (strncmp(out, "trunk-", 6) == 0)
		out[5] = '_';
	return 0;
}

/* Copy a parameter value (the view has taken its quotes off); -1 when
 * absent, empty or too long. */
static int copy_param(const char *v, char *out, size_t outlen)
{
	size_t n = v ? strlen(v) : 0;
	if (n == 0 || n >= outlen)
		return -1;
	memcpy(out, v, n + 1);
	return 0;
}

/* The credentials for our realm, if any: Authorization answers a REGISTER,
 * Proxy-Authorization anything else. */
static const struct sa_cred *find_credentials(const struct sa_msg *m, const char *realm)
{
	bool proxy = m->method != SA_M_REGISTER;
	for (unsigned i = 0; i < m->ncreds; i++) {
		const struct sa_cred *c = &m->creds[i];
		if (c->proxy == proxy && c->realm && c->realm[0] && strcasecmp(c->realm, realm) == 0)
			return c;
	}
	return NULL;
}

/* The fields of one Digest answer, unquoted. */
struct answer {
	char username[SA_USERNAME_MAX + 1];
	char nonce[SA_NONCE_LEN + 8];
	char uri[512];
	char response[SA_DIGEST_HEX_MAX + 2];
	char cnonce[256];
	char qop[16];
	char nc[16];
	uint32_t ncv;
	struct sa_digest_params p;
};

static int parse_answer(const struct sa_msg *m, const struct sa_cred *az, const struct sa_auth_cfg *cfg,
                        struct answer *an)
{
	if (!az->scheme || strcasecmp(az->scheme, "Digest") != 0)
		return -1;
	if (copy_param(az->nonce, an->nonce, sizeof(an->nonce)) < 0 ||
	    copy_param(az->uri, an->uri, sizeof(an->uri)) < 0 ||
	    copy_param(az->response, an->response, sizeof(an->response)) < 0)
		return -1;
	char alg[24] = "MD5";
	if (az->algorithm && copy_param(az->algorithm, alg, sizeof(alg)) < 0)
		return -1;
	if (sa_digest_alg_parse(alg, strlen(alg), &an->p.alg, &an->p.sess) < 0 || an->p.sess)
		return -1;
	bool offered = false;
	for (unsigned i = 0; i < cfg->nalgs; i++)
		offered |= cfg->algs[i] == an->p.alg;
	if (!offered)
		return -1;
	an->ncv = 1;
	if (az->qop) {
		char *ep;
		if (copy_param(az->qop, an->qop, sizeof(an->qop)) < 0 || strcmp(an->qop, "auth") != 0 ||
		    copy_param(az->cnonce, an->cnonce, sizeof(an->cnonce)) < 0 ||
		    copy_param(az->nc, an->nc, sizeof(an->nc)) < 0)
			return -1;
		unsigned long v = strtoul(an->nc, &ep, 16);
		if (*ep || v == 0 || v > UINT32_MAX)
			return -1;
		an->ncv = (uint32_t)v;
		an->p.qop = an->qop;
		an->p.nc = an->nc;
		an->p.cnonce = an->cnonce;
	} else if (an->p.alg != SA_ALG_MD5) {
		return -1;   /* RFC 2069 answers exist for MD5 only */
	}
	an->p.method = m->method_name;
	an->p.uri = an->uri;
	an->p.nonce = an->nonce;
	return 0;
}

static bool same_str(const char *a, const char *b, bool nocase)
{
	if (!a || !b)
		return !a && !b;
	return nocase ? strcasecmp(a, b) == 0 : strcmp(a, b) == 0;
}

static int uri_port(const struct sa_uri *u)
{
	if (u->port)
		return u->port;
	return u->scheme && strcasecmp(u->scheme, "sips") == 0 ? 5061 : 5060;
}

/* RFC 3261 §22.4, RFC 7616 §3.4.6: the digest uri is the Request-URI, so an
 * answer cannot be carried over to another request. Accepted: the same text;
 * the same URI by RFC 3261 §19.1.4 for what routes a request (scheme, user,
 * host, port), since a client may escape or order parameters its own way;
 * or, as clients with an outbound proxy do (sipp among them), a URI naming
 * this proxy's own address with the Request-URI's user or none. */
static bool uri_is_request_uri(const struct sa_auth *a, const struct sa_msg *m, const char *uri)
{
	const char *start = memchr(m->buf, ' ', m->start_line_len);
	if (start) {
		const char *end = memchr(start + 1, ' ', m->start_line_len - (size_t)(start + 1 - m->buf));
		size_t n = end ? (size_t)(end - start - 1) : 0;
		if (n && strlen(uri) == n && memcmp(uri, start + 1, n) == 0)
			return true;
	}
	const struct sa_uri *ruri = &m->ruri;
	struct sa_uri u;
	_Alignas(8) char buf[1024];
	if (!ruri->scheme || sa_uri_parse(uri, strlen(uri), &u, buf, sizeof(buf)) < 0 ||
	    !same_str(u.scheme, ruri->scheme, true))
		return false;
	bool same_user = same_str(u.user, ruri->user, false);
	return (same_user && same_str(u.host, ruri->host, true) && uri_port(&u) == uri_port(ruri)) ||
	       ((same_user || !u.user) && a->uri_is_local && a->uri_is_local(&u, a->uri_is_local_arg));
}

/* A REGISTER retransmitted over UDP carries the very branch and Call-ID of
 * the one whose nonce count was used: tag it, so it is answered again rather
 * than refused as a replay. Only REGISTER: it is idempotent (the same
 * bindings), where a second INVITE would be a second call. 0: no tag. */
static uint32_t retransmission_tag(const struct sa_msg *m)
{
	if (m->method != SA_M_REGISTER || !m->branch || !m->call_id)
		return 0;
	uint32_t h = 2166136261u;
	for (const char *s = m->branch; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	h = (h ^ '|') * 16777619u;
	for (const char *s = m->call_id; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h ? h : 1;
}

/* What a nonce's MAC covers besides its own bytes: the realm, and the source it was issued to. */
static const char *nonce_scope(const char *realm, const char *source, char *buf, size_t len)
{
	if (!source)
		return realm;
	snprintf(buf, len, "%s|%s", realm, source);
	return buf;
}

/* The answer against the current password and the previous one. Both are
 * always computed (the dummy HA1 of the answer's algorithm standing in for
 * a password that is not there) and the verdict taken from both
 * afterwards: an unknown user, a credential never rotated, one in its
 * overlap and one past it all cost one HA2 and two responses, whether the
 * answer is right or wrong. Sets r->password_version (see auth.h). */
static bool password_check(const struct sa_auth *a, const struct answer *an, bool known, int64_t now,
                           struct sa_auth_result *r)
{
	const struct sa_credential *c = &r->cred;
	bool has_prev = known && sa_credential_has_previous(c);
	const char *cur_ha1 = known ? c->ha1[an->p.alg] : a->dummy_ha1[an->p.alg];
	const char *prev_ha1 = has_prev ? c->previous_ha1[an->p.alg] : a->dummy_ha1[an->p.alg];
	bool cur, prev;

	sa_digest_verify_pair(&an->p, cur_ha1, prev_ha1, an->response, strlen(an->response), &cur, &prev);

	if (known && cur) {
		r->password_version = c->password_version;
		return true;
	}
	if (has_prev && prev) {
		r->password_version = c->password_version - 1;   /* named in the failure log when refused */
		return sa_credential_previous_live(c, now);
	}
	return false;
}

void sa_auth_username(const struct sa_msg *m, const char *realm, char *out, size_t outlen)
{
	const struct sa_cred *az = find_credentials(m, realm);
	char user[256];

	if (outlen > 0)
		out[0] = '\0';
	if (az && copy_param(az->username, user, sizeof(user)) == 0)
		snprintf(out, outlen, "%.*s", SA_USERNAME_MAX, user);
}

void sa_auth_check(struct sa_auth *a, const struct sa_msg *m, const char *trunk_id,
                   const char *realm, const char *source, uint64_t now, struct sa_auth_result *r)
{
	char scope[SA_REALM_MAX + 64];
	struct answer an;
	struct sa_nonce_info info;

	memset(r, 0, sizeof(*r));
	memset(&an, 0, sizeof(an));
	const struct sa_cred *az = find_credentials(m, realm);
	if (!az)
		return;
	char user[256];
	if (copy_param(az->username, user, sizeof(user)) == 0) {
		size_t ul = strnlen(user, SA_USERNAME_MAX);
		memcpy(r->username, user, ul);
		r->username[ul] = '\0';
	}
	if (!r->username[0] || strlen(user) > SA_USERNAME_MAX || parse_answer(m, az, &a->cfg, &an) < 0) {
		r->reason = SA_AUTH_MALFORMED;
		return;
	}
	enum sa_nonce_status ns = sa_nonce_check(a->nonce, an.nonce, strlen(an.nonce),
	                                         nonce_scope(realm, source, scope, sizeof(scope)), an.p.alg, now, &info);
	if (ns == SA_NONCE_INVALID) {
		r->reason = SA_AUTH_MALFORMED;
		return;
	}
	if (ns == SA_NONCE_STALE && !info.authentic) {
		/* a nonce we did not issue (another node's, one from before this
		 * start, or made with a key we do not hold): a new one with
		 * stale=true, and no word on the password, since anyone can make
		 * up a nonce of a key we lack, and a verdict on it would be a
		 * guessing oracle no ban counts (the source is not proven to
		 * receive). Another node's nonce is genuine, but its replay state
		 * is that node's: it is never accepted here, nor put in our table. */
		r->reason = SA_AUTH_STALE_NONCE;
		r->stale = true;
		r->stale_cause = info.future           ? SA_STALE_FUTURE
		                 : info.other_instance ? SA_STALE_OTHER_NODE
		                                       : SA_STALE_UNKNOWN_KEY;
		return;
	}
	/* ours, fresh or expired: issued to this source, which therefore receives */
	r->nonce_ours = true;
	/* one lookup whether the user exists or not (the record lives under
	 * its username), so the time tells nothing; an unknown trunk looks up
	 * the username under no trunk at all */
	bool known = sa_store_credential_find(a->store, trunk_id ? trunk_id : a->no_trunk, r->username, &r->cred) == 0;
	if (!known)
		OPENSSL_cleanse(&r->cred, sizeof(r->cred));
	if (!password_check(a, &an, known, (int64_t)now, r)) {
		r->reason = known ? SA_AUTH_BAD_PASSWORD : SA_AUTH_UNKNOWN_USER;
		goto out;
	}
	if (!uri_is_request_uri(a, m, an.uri)) {
		r->reason = SA_AUTH_URI_MISMATCH;
		goto out;
	}
	if (ns == SA_NONCE_STALE) {
		r->reason = SA_AUTH_STALE_NONCE;
		r->stale = true;
		r->stale_cause = SA_STALE_EXPIRED;
		goto out;
	}
	ns = sa_nonce_use_tagged(a->nonce, &info, an.ncv, retransmission_tag(m), now);
	if (ns == SA_NONCE_RETRANSMISSION) {
		ns = SA_NONCE_OK;   /* a REGISTER sent again as it was: answer it again, it changes nothing */
		r->retransmission = true;
	}
	if (ns != SA_NONCE_OK) {
		r->reason = ns == SA_NONCE_REPLAY ? SA_AUTH_REPLAY : SA_AUTH_STALE_NONCE;
		r->stale = ns != SA_NONCE_REPLAY;
		r->stale_cause = r->stale ? SA_STALE_TABLE_FULL : SA_STALE_NONE;
		goto out;
	}
	r->ok = true;
out:
	if (!r->ok)
		sa_credential_wipe(&r->cred);
}

void sa_auth_offer(const struct sa_auth *a, const struct sa_auth_cfg *order, struct sa_auth_cfg *out)
{
	out->nalgs = 0;
	for (unsigned i = 0; order != NULL && i < order->nalgs && i < SA_ALG_COUNT; i++)
		for (unsigned k = 0; k < a->cfg.nalgs; k++)
			if (a->cfg.algs[k] == order->algs[i]) {
				out->algs[out->nalgs++] = order->algs[i];
				break;
			}
	if (out->nalgs == 0)
		*out = a->cfg;
}

long sa_auth_challenge_in(struct sa_auth *a, const struct sa_auth_cfg *order, const char *realm, const char *source,
                          bool proxy, bool stale, uint64_t now, char *out, size_t cap)
{
	struct sa_buf b = { .p = out, .cap = cap };
	char nonce[SA_NONCE_LEN + 1], scope[SA_REALM_MAX + 64];
	const char *mac_scope = nonce_scope(realm, source, scope, sizeof(scope));

	struct sa_auth_cfg offer;
	sa_auth_offer(a, order, &offer);
	for (unsigned i = 0; i < offer.nalgs; i++) {
		if (sa_nonce_issue(a->nonce, mac_scope, offer.algs[i], now, nonce) < 0)
			return -1;
		/* one per challenge: written piece by piece, no printf */
		sa_buf_puts(&b, proxy ? "Proxy-Authenticate: Digest realm=\"" : "WWW-Authenticate: Digest realm=\"");
		sa_buf_puts(&b, realm);
		sa_buf_puts(&b, "\", nonce=\"");
		sa_buf_puts(&b, nonce);
		sa_buf_puts(&b, "\", algorithm=");
		const char *alg = sa_digest_alg_name(offer.algs[i]);
		sa_buf_puts(&b, alg ? alg : "");
		sa_buf_puts(&b, stale ? ", qop=\"auth\", stale=true\r\n" : ", qop=\"auth\"\r\n");
	}
	sa_buf_put(&b, "", 1);   /* the NUL: the headers are passed on as a string */
	return b.overflow ? -1 : (long)b.len - 1;
}

long sa_auth_challenge(struct sa_auth *a, const char *realm, const char *source, bool proxy, bool stale,
                       uint64_t now, char *out, size_t cap)
{
	return sa_auth_challenge_in(a, NULL, realm, source, proxy, stale, now, out, cap);
}

bool sa_auth_failure_counts(const struct sa_auth_result *r, bool udp)
{
	bool guess = r->reason != SA_AUTH_STALE_NONCE && r->reason != SA_AUTH_SOURCE_NOT_ALLOWED &&
	             r->reason != SA_AUTH_TLS_REQUIRED && r->reason != SA_AUTH_NONE;
	return guess && (!udp || r->nonce_ours);
}
