/* proxy.h: what a forwarded request or relayed response looks like (RFC 3261 §16.6, §16.7). */
#ifndef SA_PROXY_H
#define SA_PROXY_H

#include "sipmsg.h"

/* How to rewrite a request on its way on. */
struct sa_fwd {
	const char *ruri;            /* new Request-URI, NULL keeps the received one */
	const char *via;             /* our Via value, e.g. "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK..." */
	const struct sa_peer *peer;  /* where the request came from: fixes the previous top Via */
	const char *rr[2];           /* Record-Route values to insert, in order (NULL = none) */
	unsigned pop_route;          /* how many leading Route values to remove (they are us) */
	const char *strip_realm;     /* drop Proxy-Authorization lines for this realm (§22.3) */
};

/* Write m rewritten per f into out: start line, our Via on top, the previous
 * top Via with received/rport, Max-Forwards decremented (or 70 added),
 * Record-Route inserted above any others, our Route and credentials gone,
 * everything else and the body verbatim. Length, or -1 if out is too small. */
long sa_proxy_request(const struct sa_msg *m, const struct sa_fwd *f, char *out, size_t cap);

/* Write response m without its top Via value (ours). -1 if out is too small
 * or there is no second Via to send it to. */
long sa_proxy_response(const struct sa_msg *m, char *out, size_t cap);

/* The ACK a client transaction sends for a non-2xx final response (§17.1.1.3)
 * and the CANCEL for a pending INVITE (§9.1), both built from the request we
 * forwarded (raw-scanned) and, for ACK, the response's To. */
long sa_proxy_ack(const struct sa_msg *fwd, const struct sa_msg *resp, char *out, size_t cap);
long sa_proxy_cancel(const struct sa_msg *fwd, char *out, size_t cap);

/* The Request-URI of a raw-scanned request (from its start line). */
int sa_proxy_ruri(const struct sa_msg *m, const char **uri, size_t *len);

#endif
