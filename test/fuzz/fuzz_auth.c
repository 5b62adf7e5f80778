/* fuzz_auth.c: libFuzzer harness: digest verification of parsed requests against a real temporary store. */
#define _GNU_SOURCE
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * Inputs are SIP requests in which these placeholders are replaced before
 * parsing, so that seeds can carry answers the fuzzer could never guess:
 *   @REALM@ the trunk's realm        @HOST@ its host, literal form
 *   @DNSHOST@ its host, DNS-safe     @USER@ the credential's username
 *   @NONCE@ @NONCE256@ @NONCE512@    fresh nonces for MD5, SHA-256, SHA-512-256
 *   @OLDNONCE@ an expired SHA-256 nonce
 *   @RESP@  the right response for the credentials for our realm (computed
 *           from the message itself with the stored HA1)
 */
#define NOW 1700000000u
#define DOMAIN "sip.example.com"

static struct {
	struct sa_store *st;
	struct sa_credential cred;
	struct sa_auth_cfg cfg;
	char dir[64];
	char realm[SA_REALM_MAX];
	char host[SA_REALM_MAX];
	char dnshost[SA_REALM_MAX];
} fx;

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void teardown(void)
{
	sa_store_close(fx.st);
	nftw(fx.dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
}

static void setup(void)
{
	struct sa_account acc;
	struct sa_trunk trunk;
	const char *pw = "fuzz_password_123456";

	sa_sipmsg_init();
	snprintf(fx.dir, sizeof(fx.dir), "%s/fuzzauth.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(fx.dir) || sa_store_open(&fx.st, fx.dir, 0) != SA_STORE_OK ||
	    sa_store_init(fx.st, DOMAIN) != SA_STORE_OK ||
	    sa_store_account_create(fx.st, "fuzz", NOW, &acc) != SA_STORE_OK ||
	    sa_store_trunk_create(fx.st, acc.id, "fuzz", NOW, &trunk) != SA_STORE_OK ||
	    sa_store_credential_create(fx.st, trunk.id, "pbx-fuzz-01", pw, strlen(pw), 12, NOW,
	                               &fx.cred, NULL, 0) != SA_STORE_OK) {
		fprintf(stderr, "fuzz_auth: cannot set up a store in %s\n", fx.dir);
		abort();
	}
	atexit(teardown);
	sa_store_realm(trunk.id, DOMAIN, fx.realm, sizeof(fx.realm));
	snprintf(fx.host, sizeof(fx.host), "%s", fx.realm);
	snprintf(fx.dnshost, sizeof(fx.dnshost), "%s", fx.realm);
	char *u = strchr(fx.dnshost + 6, '_');
	if (u)
		*u = '-';
	fx.cfg = (struct sa_auth_cfg){ .algs = { SA_ALG_SHA256, SA_ALG_MD5, SA_ALG_SHA512_256 }, .nalgs = 3 };
}

/* data with every placeholder replaced (n: the nonces), length in *len; malloc'd. */
static char *expand(const uint8_t *data, size_t size, char n[4][SA_NONCE_LEN + 1], const char *resp, size_t *len)
{
	const struct { const char *key, *val; } subst[] = {
		{ "@REALM@", fx.realm }, { "@HOST@", fx.host }, { "@DNSHOST@", fx.dnshost },
		{ "@USER@", fx.cred.username }, { "@NONCE@", n[0] }, { "@NONCE256@", n[1] },
		{ "@NONCE512@", n[2] }, { "@OLDNONCE@", n[3] }, { "@RESP@", resp ? resp : "0" },
	};
	size_t nk = sizeof(subst) / sizeof(subst[0]), vmax = 0, o = 0;
	for (size_t k = 0; k < nk; k++)
		if (strlen(subst[k].val) > vmax)
			vmax = strlen(subst[k].val);
	/* every key is at least 6 bytes long */
	char *out = malloc(size + (size / 6 + 1) * vmax + 1);
	if (!out)
		return NULL;
	for (size_t i = 0; i < size;) {
		size_t k = 0;
		for (; k < nk; k++) {
			size_t kl = strlen(subst[k].key);
			if (data[i] == '@' && size - i >= kl && memcmp(data + i, subst[k].key, kl) == 0)
				break;
		}
		if (k == nk) {
			out[o++] = (char)data[i++];
			continue;
		}
		size_t vl = strlen(subst[k].val);
		memcpy(out + o, subst[k].val, vl);
		o += vl;
		i += strlen(subst[k].key);
	}
	*len = o;
	return out;
}

static void cpy(const char *v, char *out, size_t cap)
{
	size_t n = v ? strlen(v) : 0;
	if (n >= cap)
		n = cap - 1;
	memcpy(out, v ? v : "", n);
	out[n] = '\0';
}

/* The right response for m's credentials for our realm, as a client knowing the password computes it. */
static int right_response(const struct sa_msg *m, char out[SA_DIGEST_HEX_MAX])
{
	for (unsigned i = 0; i < m->ncreds; i++) {
		const struct sa_cred *az = &m->creds[i];
		char realm[SA_REALM_MAX], alg[32], uri[512], nonce[128], nc[32], cnonce[256], qop[32];
		if (az->proxy != (m->method != SA_M_REGISTER))
			continue;
		cpy(az->realm, realm, sizeof(realm));
		if (strcasecmp(realm, fx.realm) != 0)
			continue;
		cpy(az->algorithm ? az->algorithm : "MD5", alg, sizeof(alg));
		cpy(az->uri, uri, sizeof(uri));
		cpy(az->nonce, nonce, sizeof(nonce));
		cpy(az->nc, nc, sizeof(nc));
		cpy(az->cnonce, cnonce, sizeof(cnonce));
		cpy(az->qop, qop, sizeof(qop));
		struct sa_digest_params p = { .method = m->method_name, .uri = uri, .nonce = nonce,
		                              .nc = nc, .cnonce = cnonce, .qop = qop[0] ? qop : NULL };
		if (sa_digest_alg_parse(alg, strlen(alg), &p.alg, &p.sess) < 0)
			return -1;
		return sa_digest_response(&p, fx.cred.ha1[p.alg], out);
	}
	return -1;
}

static void check(struct sa_auth *a, const char *buf, size_t len, bool knows_password)
{
	struct sa_msg m;
	struct sa_msg_error err = { 0 };
	struct sa_auth_result r;
	char trunk[SA_ID_MAX], hdrs[1024];

	if (sa_msg_parse(&m, buf, len, false, &err) == 0 && m.request) {
		bool known = sa_auth_trunk_from_host(m.ruri_host, DOMAIN, trunk, sizeof(trunk)) == 0;
		for (int pass = 0; pass < 2; pass++) {   /* the second time it is a replay */
			sa_auth_check(a, &m, known ? trunk : NULL, fx.realm, NULL, NOW, &r);
			/* nothing but the password opens the door, and only for its own credential */
			if (r.ok && (!knows_password || strcmp(r.cred.id, fx.cred.id) != 0))
				abort();
		}
		sa_auth_check(a, &m, NULL, m.ruri_host ? m.ruri_host : "x", "127.0.0.1", NOW, &r);
		if (r.ok)
			abort();
		sa_auth_challenge(a, fx.realm, NULL, m.method != SA_M_REGISTER, r.stale, NOW, hdrs, sizeof(hdrs));
	}
	sa_msg_free(&m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ready;
	static const unsigned char secret[SA_NONCE_SECRET_LEN] = "fuzz-secret-fuzz-secret-fuzz-se";
	if (!ready) {
		setup();
		ready = 1;
	}
	if (size > SA_SIP_MAX_MSG / 4)
		return 0;
	struct sa_nonce_ctx *nc = sa_nonce_ctx_new(30, 4);
	struct sa_auth a;
	if (!nc || sa_nonce_key_set(nc, 1, secret) != 0 || sa_auth_init(&a, fx.st, nc, &fx.cfg) != 0)
		abort();
	char n[4][SA_NONCE_LEN + 1];
	sa_nonce_issue(nc, fx.realm, SA_ALG_MD5, NOW, n[0]);
	sa_nonce_issue(nc, fx.realm, SA_ALG_SHA256, NOW, n[1]);
	sa_nonce_issue(nc, fx.realm, SA_ALG_SHA512_256, NOW, n[2]);
	sa_nonce_issue(nc, fx.realm, SA_ALG_SHA256, NOW - 3600, n[3]);
	size_t len;
	char *buf = expand(data, size, n, NULL, &len);
	bool wants = memmem(data, size, "@RESP@", 6) != NULL;
	if (buf && wants) {
		/* parse once to learn what the client would hash, then again with the answer */
		struct sa_msg m;
		struct sa_msg_error err = { 0 };
		char resp[SA_DIGEST_HEX_MAX];
		int rc = sa_msg_parse(&m, buf, len, false, &err) == 0 && m.request ? right_response(&m, resp) : -1;
		sa_msg_free(&m);
		free(buf);
		buf = rc == 0 ? expand(data, size, n, resp, &len) : NULL;
	}
	if (buf)
		check(&a, buf, len, wants);
	free(buf);
	sa_nonce_ctx_free(nc);
	return 0;
}
