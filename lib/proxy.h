/* proxy.h: what a forwarded request or relayed response looks like (RFC 3261 §16.6, §16.7). */
#ifndef SA_PROXY_H
#define SA_PROXY_H

#include "sipmsg.h"

/* One header line of a request we wrote: offsets into what we wrote. */
struct sa_fwd_line {
	enum sa_hdr_kind kind;
	size_t off, len;             /* the line, up to, not including, CRLF */
	size_t voff;                 /* where its value starts, counted from off */
};

/* Where sa_proxy_request put each part of the request it wrote, noted as it
 * writes them: what a transaction copies later into messages of its own
 * (lib/txn) is found there without scanning the bytes again. */
struct sa_fwd_layout {
	size_t ruri, ruri_len;       /* the Request-URI */
	size_t ours, ours_end;       /* our Via and Record-Route lines, CRLFs included */
	unsigned nlines;
	struct sa_fwd_line line[SA_SIP_MAX_HEADERS];   /* every header line, ours included, in order */
};

/* How to rewrite a request on its way on. */
struct sa_fwd {
	const char *ruri;            /* new Request-URI, NULL keeps the received one */
	const char *via;             /* our Via value, e.g. "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK..." */
	const struct sa_peer *peer;  /* where the request came from: fixes the previous top Via */
	const char *rr[2];           /* Record-Route values to insert, in order (NULL = none) */
	unsigned pop_route;          /* how many leading Route values to remove (they are us) */
	const char *strip_realm;     /* drop Proxy-Authorization lines for this realm (§22.3) */
	const char *trunk_id;        /* what authenticated the request, for the gateway: X-Sipauthd-Trunk */
	const char *cred_id;         /* and X-Sipauthd-Credential (NULL or "": none) */
	struct sa_fwd_layout *layout;   /* where to note what went where; NULL: nowhere */
};

/* Write m rewritten per f into out: start line, our Via on top, the previous
 * top Via with received/rport, Max-Forwards decremented (or 70 added),
 * Record-Route inserted above any others, our Route and credentials gone,
 * any X-Sipauthd-* header gone (only sipauthd writes those: f's trunk and
 * credential, when given, as X-Sipauthd-Trunk and X-Sipauthd-Credential),
 * everything else and the body verbatim. Length, or -1 if out (or
 * f->layout) is too small. */
long sa_proxy_request(const struct sa_msg *m, const struct sa_fwd *f, char *out, size_t cap);

/* Our Via and Record-Route lines (rr[i] NULL: none) as sa_proxy_request
 * writes them above the request's own: for the copy of a forwarded request
 * that goes to another next hop (lib/txn). Length, or -1 if out is too small. */
long sa_proxy_ours(const char *via, const char *const rr[2], char *out, size_t cap);

/* Write response m without its top Via value (ours). -1 if out is too small
 * or there is no second Via to send it to. */
long sa_proxy_response(const struct sa_msg *m, char *out, size_t cap);

/* Replace the start line of the n bytes of a message in out (cap bytes)
 * with `line` (no CRLF). New length, or -1 if it does not fit. */
long sa_proxy_status_line(char *out, size_t n, size_t cap, const char *line);

/* Request m as RFC 3261 §16.4 has a proxy go on when the previous hop
 * strict-routes (our Record-Route URI is its Request-URI: lib/route
 * sa_route_strict_routed): the last Route value's URI is the Request-URI
 * and that value is gone; everything else as it came. -1 if out is too
 * small or m has no Route. */
long sa_proxy_strict_route(const struct sa_msg *m, char *out, size_t cap);

/* The Request-URI of a raw-scanned request (from its start line). */
int sa_proxy_ruri(const struct sa_msg *m, const char **uri, size_t *len);

#endif
