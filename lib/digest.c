/* digest.c: SIP/HTTP digest HA1, response and constant-time verification over OpenSSL. */
/* MD5 and SHA-256 through OpenSSL's low-level calls (deprecated in OpenSSL 3
 * but kept and supported, as nonce.c uses them): EVP_DigestInit_ex fetches
 * the algorithm from the provider on every call and costs several times
 * the hashing of a digest's short strings, on the path of every
 * authenticated request. SHA-512/256 has no low-level call: EVP. */
#define OPENSSL_API_COMPAT 0x10100000L
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/md5.h>
#include <openssl/sha.h>

#include "digest.h"

#define DIGEST_RAW_MAX 32	/* bytes of the largest digest (SHA-256, SHA-512/256) */

static const char *const alg_names[SA_ALG_COUNT] = {
	[SA_ALG_MD5] = "MD5",
	[SA_ALG_SHA256] = "SHA-256",
	[SA_ALG_SHA512_256] = "SHA-512-256",
};

/* One hash computation of an algorithm; the EVP context (SHA-512/256
 * only) is made on first use and kept for the next computation. */
struct hasher {
	enum sa_digest_alg alg;
	union {
		MD5_CTX md5;
		SHA256_CTX sha256;
	} u;
	EVP_MD_CTX *evp;
};

static void hasher_open(struct hasher *h, enum sa_digest_alg alg)
{
	h->alg = alg;
	h->evp = NULL;
}

/* Wipes the state (it may have held an HA1) and frees the EVP context. */
static void hasher_close(struct hasher *h)
{
	EVP_MD_CTX_free(h->evp);
	h->evp = NULL;
	OPENSSL_cleanse(&h->u, sizeof(h->u));
}

static int hasher_init(struct hasher *h)
{
	switch (h->alg) {
	case SA_ALG_MD5:
		return MD5_Init(&h->u.md5) == 1 ? 0 : -1;
	case SA_ALG_SHA256:
		return SHA256_Init(&h->u.sha256) == 1 ? 0 : -1;
	case SA_ALG_SHA512_256:
		if (h->evp == NULL && (h->evp = EVP_MD_CTX_new()) == NULL)
			return -1;
		return EVP_DigestInit_ex(h->evp, EVP_sha512_256(), NULL) == 1 ? 0 : -1;
	default:
		return -1;
	}
}

static int hasher_update(struct hasher *h, const void *data, size_t len)
{
	switch (h->alg) {
	case SA_ALG_MD5:
		return MD5_Update(&h->u.md5, data, len) == 1 ? 0 : -1;
	case SA_ALG_SHA256:
		return SHA256_Update(&h->u.sha256, data, len) == 1 ? 0 : -1;
	default:
		return EVP_DigestUpdate(h->evp, data, len) == 1 ? 0 : -1;
	}
}

/* The raw digest into raw (DIGEST_RAW_MAX bytes); its length, or -1. */
static int hasher_final(struct hasher *h, unsigned char raw[DIGEST_RAW_MAX])
{
	unsigned char big[EVP_MAX_MD_SIZE];
	unsigned int len = 0;
	int rc = -1;

	switch (h->alg) {
	case SA_ALG_MD5:
		return MD5_Final(raw, &h->u.md5) == 1 ? MD5_DIGEST_LENGTH : -1;
	case SA_ALG_SHA256:
		return SHA256_Final(raw, &h->u.sha256) == 1 ? SHA256_DIGEST_LENGTH : -1;
	default:
		if (EVP_DigestFinal_ex(h->evp, big, &len) == 1 && len <= DIGEST_RAW_MAX) {
			memcpy(raw, big, len);
			rc = (int)len;
		}
		OPENSSL_cleanse(big, sizeof(big));
		return rc;
	}
}

/* ASCII only: the locale must not change how an algorithm name matches. */
static bool ascii_caseeq(const char *a, const char *b, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char ca = (unsigned char)a[i], cb = (unsigned char)b[i];

		if (ca >= 'A' && ca <= 'Z')
			ca += 'a' - 'A';
		if (cb >= 'A' && cb <= 'Z')
			cb += 'a' - 'A';
		if (ca != cb)
			return false;
	}
	return true;
}

int sa_digest_alg_parse(const char *name, size_t len, enum sa_digest_alg *alg, bool *sess)
{
	static const char suffix[] = "-sess";
	const size_t suffix_len = sizeof(suffix) - 1;

	if (name == NULL)
		return -1;
	for (int i = 0; i < SA_ALG_COUNT; i++) {
		size_t n = strlen(alg_names[i]);

		if (len < n || !ascii_caseeq(name, alg_names[i], n))
			continue;
		if (len == n || (len == n + suffix_len && ascii_caseeq(name + n, suffix, suffix_len))) {
			*alg = (enum sa_digest_alg)i;
			*sess = len != n;
			return 0;
		}
	}
	return -1;
}

const char *sa_digest_alg_name(enum sa_digest_alg alg)
{
	if ((unsigned)alg >= SA_ALG_COUNT)
		return NULL;
	return alg_names[alg];
}

size_t sa_digest_hex_len(enum sa_digest_alg alg)
{
	return alg == SA_ALG_MD5 ? 32 : (unsigned)alg < SA_ALG_COUNT ? 64 : 0;
}

static void hex_encode(const unsigned char *raw, size_t len, char *out)
{
	static const char hex[] = "0123456789abcdef";

	for (size_t i = 0; i < len; i++) {
		out[2 * i] = hex[raw[i] >> 4];
		out[2 * i + 1] = hex[raw[i] & 0x0f];
	}
	out[2 * len] = '\0';
}

/* Finish the digest into lower-case hex; the raw bytes may be an HA1, so wipe them. */
static int final_hex(struct hasher *h, char out[SA_DIGEST_HEX_MAX])
{
	unsigned char raw[DIGEST_RAW_MAX];
	int len = hasher_final(h, raw);

	if (len > 0)
		hex_encode(raw, (size_t)len, out);
	OPENSSL_cleanse(raw, sizeof(raw));
	return len > 0 ? 0 : -1;
}

/* out = H(parts[0] ":" parts[1] ":" ...), fed piecewise so nothing is concatenated or allocated. */
static int hash_joined(struct hasher *h, const char *const *parts, size_t n, char out[SA_DIGEST_HEX_MAX])
{
	if (hasher_init(h) != 0)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (parts[i] == NULL)
			return -1;
		if (i > 0 && hasher_update(h, ":", 1) != 0)
			return -1;
		if (hasher_update(h, parts[i], strlen(parts[i])) != 0)
			return -1;
	}
	return final_hex(h, out);
}

static int hash_bytes(struct hasher *h, const void *data, size_t len, char out[SA_DIGEST_HEX_MAX])
{
	if (hasher_init(h) != 0 || hasher_update(h, data, len) != 0)
		return -1;
	return final_hex(h, out);
}

int sa_digest_ha1(enum sa_digest_alg alg, const char *username, const char *realm,
                  const char *password, char out[SA_DIGEST_HEX_MAX])
{
	const char *parts[] = { username, realm, password };
	struct hasher h;
	int rc;

	if ((unsigned)alg >= SA_ALG_COUNT)
		return -1;
	hasher_open(&h, alg);
	rc = hash_joined(&h, parts, 3, out);
	hasher_close(&h);
	return rc;
}

static bool qop_known(const char *qop)
{
	return qop == NULL || strcmp(qop, "auth") == 0 || strcmp(qop, "auth-int") == 0;
}

/* Reject what the formulas cannot be computed from, so a missing field never hashes as "". */
static bool params_usable(const struct sa_digest_params *p, const char *ha1_hex)
{
	size_t hex_len = sa_digest_hex_len(p->alg);

	if (hex_len == 0 || ha1_hex == NULL || strnlen(ha1_hex, hex_len + 1) != hex_len)
		return false;
	if (p->method == NULL || p->uri == NULL || p->nonce == NULL || !qop_known(p->qop))
		return false;
	if (p->qop != NULL && (p->nc == NULL || p->cnonce == NULL))
		return false;
	if (p->sess && p->cnonce == NULL)
		return false;
	return p->body != NULL || p->body_len == 0;
}

/* HA2 = H(method:uri) or, for auth-int, H(method:uri:H(body)). */
static int digest_ha2(struct hasher *h, const struct sa_digest_params *p, char out[SA_DIGEST_HEX_MAX])
{
	char body_hex[SA_DIGEST_HEX_MAX];
	const char *parts[] = { p->method, p->uri, body_hex };
	bool auth_int = p->qop != NULL && strcmp(p->qop, "auth-int") == 0;

	if (auth_int && hash_bytes(h, p->body != NULL ? p->body : "", p->body_len, body_hex) != 0)
		return -1;
	return hash_joined(h, parts, auth_int ? 3 : 2, out);
}

/* The response from HA1 and a computed HA2. */
static int digest_final(struct hasher *h, const struct sa_digest_params *p, const char *ha1_hex, const char *ha2,
                        char out[SA_DIGEST_HEX_MAX])
{
	char ha1[SA_DIGEST_HEX_MAX];
	const char *sess_parts[] = { ha1_hex, p->nonce, p->cnonce };
	const char *qop_parts[] = { ha1, p->nonce, p->nc, p->cnonce, p->qop, ha2 };
	const char *rfc2069_parts[] = { ha1, p->nonce, ha2 };
	int rc = -1;

	if (p->sess) {
		if (hash_joined(h, sess_parts, 3, ha1) != 0)
			goto out;
	} else {
		memcpy(ha1, ha1_hex, sa_digest_hex_len(p->alg) + 1);
	}
	if (p->qop != NULL)
		rc = hash_joined(h, qop_parts, 6, out);
	else
		rc = hash_joined(h, rfc2069_parts, 3, out);
out:
	OPENSSL_cleanse(ha1, sizeof(ha1));
	return rc;
}

static int digest_compute(struct hasher *h, const struct sa_digest_params *p, const char *ha1_hex,
                          char out[SA_DIGEST_HEX_MAX])
{
	char ha2[SA_DIGEST_HEX_MAX];

	if (digest_ha2(h, p, ha2) != 0)
		return -1;
	return digest_final(h, p, ha1_hex, ha2, out);
}

int sa_digest_response(const struct sa_digest_params *p, const char *ha1_hex,
                       char out[SA_DIGEST_HEX_MAX])
{
	struct hasher h;
	int rc;

	if (p == NULL || !params_usable(p, ha1_hex))
		return -1;
	/* one hasher for all three hashes */
	hasher_open(&h, p->alg);
	rc = digest_compute(&h, p, ha1_hex, out);
	hasher_close(&h);
	return rc;
}

/* Lower-case exactly want bytes of the presented value; a short one is padded so the
 * work and the compare below do not depend on how long the attacker's string was. */
static void presented_lower(const char *response, size_t len, size_t want, char *out)
{
	for (size_t i = 0; i < want; i++) {
		unsigned char c = i < len ? (unsigned char)response[i] : 0;

		out[i] = (char)(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
	}
}

bool sa_digest_verify(const struct sa_digest_params *p, const char *ha1_hex,
                      const char *response, size_t len)
{
	char expected[SA_DIGEST_HEX_MAX], got[SA_DIGEST_HEX_MAX];
	size_t want;
	bool ok;

	if (p == NULL || response == NULL || (want = sa_digest_hex_len(p->alg)) == 0)
		return false;
	ok = sa_digest_response(p, ha1_hex, expected) == 0;
	if (!ok)
		memset(expected, 0, sizeof(expected));
	presented_lower(response, len, want, got);
	ok = (CRYPTO_memcmp(expected, got, want) == 0) & ok & (len == want);
	OPENSSL_cleanse(expected, sizeof(expected));
	return ok;
}

/* The expected response for one HA1 (HA2 given), wiped after the constant-time compare. */
static bool verify_one(struct hasher *h, const struct sa_digest_params *p, const char *ha1_hex, const char *ha2,
                       bool ha2_ok, const char *got, size_t len, size_t want)
{
	char expected[SA_DIGEST_HEX_MAX];
	bool ok = ha2_ok && params_usable(p, ha1_hex) && digest_final(h, p, ha1_hex, ha2, expected) == 0;

	if (!ok)
		memset(expected, 0, sizeof(expected));
	ok = (CRYPTO_memcmp(expected, got, want) == 0) & ok & (len == want);
	OPENSSL_cleanse(expected, sizeof(expected));
	return ok;
}

void sa_digest_verify_pair(const struct sa_digest_params *p, const char *ha1_a, const char *ha1_b,
                           const char *response, size_t len, bool *a, bool *b)
{
	char ha2[SA_DIGEST_HEX_MAX], got[SA_DIGEST_HEX_MAX];
	size_t want;
	struct hasher h;

	*a = *b = false;
	if (p == NULL || response == NULL || (want = sa_digest_hex_len(p->alg)) == 0)
		return;
	hasher_open(&h, p->alg);
	bool ha2_ok = (params_usable(p, ha1_a) || params_usable(p, ha1_b)) && digest_ha2(&h, p, ha2) == 0;
	presented_lower(response, len, want, got);
	*a = verify_one(&h, p, ha1_a, ha2, ha2_ok, got, len, want);
	*b = verify_one(&h, p, ha1_b, ha2, ha2_ok, got, len, want);
	hasher_close(&h);
}
