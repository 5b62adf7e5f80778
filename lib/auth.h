/* auth.h: the verdict for one request: challenge it, or accept it with the credential that answered. */
#ifndef SA_AUTH_H
#define SA_AUTH_H

#include <stdint.h>

#include "digest.h"
#include "nonce.h"
#include "sipmsg.h"
#include "store.h"

enum sa_auth_reason {
	SA_AUTH_NONE = 0,         /* no credentials for our realm yet: the normal first challenge */
	SA_AUTH_UNKNOWN_USER,
	SA_AUTH_BAD_PASSWORD,
	SA_AUTH_STALE_NONCE,      /* right password, expired nonce: challenge with stale=true */
	SA_AUTH_REPLAY,
	SA_AUTH_MALFORMED,
	SA_AUTH_URI_MISMATCH,     /* right password, but the digest uri is not this request's Request-URI */
	SA_AUTH_SOURCE_NOT_ALLOWED,  /* the trunk's allowed_sources do not hold the sender: 403, no challenge */
	SA_AUTH_TLS_REQUIRED,     /* the trunk takes TLS only: 403, no challenge */
	SA_AUTH_BANNED,
	SA_AUTH_REASON_COUNT
};

/* Why a nonce was stale (logged as stale=...; counted apart for other_node). */
enum sa_auth_stale {
	SA_STALE_NONE = 0,
	SA_STALE_EXPIRED,         /* ours, past nonce_ttl */
	SA_STALE_UNKNOWN_KEY,     /* a key we do not hold (retired, another run's, a version 1 nonce) */
	SA_STALE_OTHER_NODE,      /* a fleet key's, but another node's (or this node's before a restart) */
	SA_STALE_TABLE_FULL,      /* ours and fresh, but the replay table had no room */
	SA_STALE_FUTURE,          /* ours, issued for a time still to come: the wall clock was put back since */
	SA_STALE_COUNT
};

struct sa_auth_cfg {
	enum sa_digest_alg algs[SA_ALG_COUNT];   /* offered, in this order */
	unsigned nalgs;
};

struct sa_auth {
	struct sa_store *store;
	struct sa_nonce_ctx *nonce;
	struct sa_auth_cfg cfg;
	/* per algorithm, of a random password: spent on unknown users, and in
	 * place of a previous password a credential does not have, so that
	 * every answer costs the same two digests */
	char dummy_ha1[SA_ALG_COUNT][SA_DIGEST_HEX_MAX];
	char no_trunk[SA_ID_MAX];            /* a trunk id that exists nowhere: an unknown trunk's users are looked up under it */
	/* Does a URI name this proxy (one of its listening addresses)? NULL: never. */
	bool (*uri_is_local)(const struct sa_uri *uri, void *arg);
	void *uri_is_local_arg;
};

struct sa_auth_result {
	bool ok;                             /* accepted: cred is filled */
	enum sa_auth_reason reason;          /* why not (SA_AUTH_NONE: no credentials offered) */
	bool stale;                          /* challenge with stale=true */
	enum sa_auth_stale stale_cause;      /* why, when reason is SA_AUTH_STALE_NONCE */
	bool nonce_ours;                     /* it answered a nonce we issued to this source (fresh or expired): the source receives */
	bool retransmission;                 /* ok: the very REGISTER already accepted, sent again */
	char username[SA_USERNAME_MAX + 1];  /* as tried, truncated; "" when none */
	/* which of the credential's passwords answered (its password_version,
	 * or the one before during a rotation's overlap); for a wrong answer,
	 * the previous password's version when it was that one after its
	 * overlap; 0 when not known (no credential, or no password matched) */
	uint32_t password_version;
	struct sa_credential cred;
};

/* Set up with a random dummy HA1. 0 or -1. */
int sa_auth_init(struct sa_auth *a, struct sa_store *store, struct sa_nonce_ctx *nonce,
                 const struct sa_auth_cfg *cfg);

/* The trunk id a host names: "trunk-<id>.<domain>", id literal
 * ("trunk_4x5y6z") or DNS-safe ("trunk-4x5y6z"), any case, absolute
 * (a trailing dot) or not: the same trunk whichever way. Writes the
 * literal id into out; 0, or -1 when host is not a trunk host of domain. */
int sa_auth_trunk_from_host(const char *host, const char *domain, char *out, size_t outlen);

/* Verify m's credentials for realm (trunk_id NULL: unknown trunk, which
 * must look exactly like a wrong password). The answer is checked against
 * the current password and the previous one (rotation) every time, so
 * that the work does not tell which matched, or whether either did. REGISTER answers with
 * Authorization, everything else with Proxy-Authorization. source: the
 * sender's numeric address, or NULL; nonces are bound to the address they
 * were issued to (as Kamailio's auth_checks source-IP flag does), so a
 * sender forging another's address cannot answer a challenge it never saw. */
void sa_auth_check(struct sa_auth *a, const struct sa_msg *m, const char *trunk_id,
                   const char *realm, const char *source, uint64_t now, struct sa_auth_result *r);

/* The challenge header lines (WWW- or Proxy-Authenticate), one per offered
 * algorithm, strongest first, each with a fresh nonce and qop="auth".
 * Length, or -1 when out is too small. */
long sa_auth_challenge(struct sa_auth *a, const char *realm, const char *source, bool proxy, bool stale,
                       uint64_t now, char *out, size_t cap);
/* What a challenge offers for order (a trunk's digest_algorithms): those of
 * its algorithms that a's configuration has ([auth] algorithms: the only
 * ones an answer is verified with), in order's order; when that leaves none
 * (or order is NULL), a's own list. */
void sa_auth_offer(const struct sa_auth *a, const struct sa_auth_cfg *order, struct sa_auth_cfg *out);
/* The same in another order (a trunk's digest_algorithms, through
 * sa_auth_offer); order NULL: a's. */
long sa_auth_challenge_in(struct sa_auth *a, const struct sa_auth_cfg *order, const char *realm, const char *source,
                          bool proxy, bool stale, uint64_t now, char *out, size_t cap);

const char *sa_auth_reason_name(enum sa_auth_reason r);

/* Does a failure count toward banning its source (lib/abuse)? Only guessing
 * does: not a stale nonce, nor a trunk's rules refusing the source or its
 * transport (configuration). And a UDP source address can be forged: its
 * failures count only once it answered a nonce issued to that address, which
 * it can only have read there (nonces are bound to their source). */
bool sa_auth_failure_counts(const struct sa_auth_result *r, bool udp);
const char *sa_auth_stale_name(enum sa_auth_stale s);
/* The username m's credentials for realm name, as tried (truncated); "" when none. */
void sa_auth_username(const struct sa_msg *m, const char *realm, char *out, size_t outlen);

#endif
