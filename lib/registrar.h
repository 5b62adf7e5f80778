/* registrar.h: REGISTER for trunks: add, refresh and remove bindings; the 200 OK's contact list. */
#ifndef SA_REGISTRAR_H
#define SA_REGISTRAR_H

#include "sipmsg.h"
#include "store.h"

struct sa_reg_cfg {
	unsigned min_expires;       /* shorter asks get 423 with Min-Expires */
	unsigned max_expires;       /* longer asks are cut to this */
	unsigned default_expires;   /* when the PBX names none */
	unsigned max_contacts;      /* per credential; 0 = unlimited */
};

/* Seconds a PBX is asked to wait (Retry-After) when the store is full. */
#define SA_REG_RETRY_AFTER 60

/* The outcome: a status, and the header lines to send with it. */
struct sa_reg_result {
	int status;
	const char *reason;         /* reason phrase, NULL for the standard one */
	char headers[2048];         /* Contact lines (200), Min-Expires (423) or Retry-After (503) */
	int added, removed;         /* bindings changed, for the counters */
	/* 200: the stream connections (TCP, TLS) the credential's bindings were
	 * or are on, the REGISTER's own first, each with the latest expiry of
	 * the credential's bindings left on it (0: none, such as a PBX that
	 * unregistered or reconnected). A connection stays open while a
	 * registration lives on it; several credentials may share one (an SBC). */
	struct sa_reg_keep {
		char source[64];
		uint16_t port;
		char transport[8];
		int64_t until;
	} keeps[8];
	int nkeeps;
};

/* Apply an authenticated REGISTER from peer for cred to the store (RFC 3261
 * §10.3 steps 6-8) and fill res. Never fails silently: errors are a status.
 * password_version: of the password it answered with, kept in its bindings. */
/* retransmission: the auth layer knows m is the very REGISTER already
 * applied (same branch, Call-ID, nonce and nc): its equal CSeq is then not
 * "out of order" (RFC 3261 §10.3 step 7 leaves retransmissions to the
 * transaction layer, which REGISTER does not go through here). */
void sa_registrar_apply(struct sa_store *st, const struct sa_reg_cfg *cfg, const struct sa_msg *m, bool retransmission,
                        const struct sa_credential *cred, uint32_t password_version, const struct sa_peer *peer,
                        int64_t now, struct sa_reg_result *res);

/* The bindings an inbound call to trunk_id may go to, in the order it tries
 * them: the most recently refreshed live ones that `reachable` (NULL: any)
 * says can be reached now (UDP, or a connection still open), up to max, *n
 * of them; when none can, the most recently refreshed live one alone.
 * 0, or SA_STORE_ENOTFOUND. */
int sa_registrar_lookup(struct sa_store *st, const char *trunk_id, int64_t now, sa_store_binding_pred reachable,
                        void *arg, struct sa_binding *out, int max, int *n);

#endif
