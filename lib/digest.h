/* digest.h: SIP/HTTP digest (RFC 2069, RFC 7616, RFC 8760): HA1, response, verification. */
#ifndef SA_DIGEST_H
#define SA_DIGEST_H

#include <stdbool.h>
#include <stddef.h>

enum sa_digest_alg {
	SA_ALG_MD5 = 0,
	SA_ALG_SHA256 = 1,
	SA_ALG_SHA512_256 = 2,
	SA_ALG_COUNT
};

/* lower-case hex of the largest digest (SHA-256, SHA-512/256) plus NUL */
#define SA_DIGEST_HEX_MAX 65

/* What a credentials header says, as the verifier needs it. Strings are
 * NUL-terminated and unquoted. qop is NULL (RFC 2069 form: no nc/cnonce) or
 * "auth" or "auth-int"; body/body_len are used for auth-int only. */
struct sa_digest_params {
	enum sa_digest_alg alg;
	bool sess;               /* the -sess variant: HA1 = H(H(u:r:p):nonce:cnonce) */
	const char *method;
	const char *uri;
	const char *nonce;
	const char *nc;          /* hashed exactly as sent */
	const char *cnonce;
	const char *qop;
	const void *body;
	size_t body_len;
};

/* "MD5", "MD5-sess", "SHA-256", "SHA-256-sess", "SHA-512-256", "SHA-512-256-sess",
 * case-insensitive; len bytes of name. Returns 0 or -1 for an unknown name. */
int sa_digest_alg_parse(const char *name, size_t len, enum sa_digest_alg *alg, bool *sess);
/* canonical name without -sess, e.g. "SHA-256" */
const char *sa_digest_alg_name(enum sa_digest_alg alg);
/* hex length of the algorithm's digest: 32 or 64 */
size_t sa_digest_hex_len(enum sa_digest_alg alg);

/* HA1 = H(username:realm:password) in lower-case hex into out (SA_DIGEST_HEX_MAX). 0 or -1. */
int sa_digest_ha1(enum sa_digest_alg alg, const char *username, const char *realm,
                  const char *password, char out[SA_DIGEST_HEX_MAX]);

/* The expected response for params given the stored (non-sess) HA1 hex.
 * Handles -sess, qop auth/auth-int and the RFC 2069 no-qop form
 * (response = H(HA1:nonce:HA2)); whether a no-qop answer is acceptable is
 * the caller's policy, not this function's. 0 or -1. */
int sa_digest_response(const struct sa_digest_params *p, const char *ha1_hex,
                       char out[SA_DIGEST_HEX_MAX]);

/* true when response (len bytes, hex, either case) equals the expected
 * response; computed and compared in constant time (CRYPTO_memcmp) and the
 * expected value is wiped before returning. */
bool sa_digest_verify(const struct sa_digest_params *p, const char *ha1_hex,
                      const char *response, size_t len);

/* The same for two HA1s at once (a credential's current and previous
 * password), HA2 computed once: *a and *b say which matched. Both are
 * always computed and compared, whatever the first gave. */
void sa_digest_verify_pair(const struct sa_digest_params *p, const char *ha1_a, const char *ha1_b,
                           const char *response, size_t len, bool *a, bool *b);

#endif
