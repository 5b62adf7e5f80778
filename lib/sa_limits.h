/* sa_limits.h: every size limit sipauthd enforces, in one place, checked as data is read. */
#ifndef SA_LIMITS_H
#define SA_LIMITS_H

#define SA_SIP_MAX_MSG          65535   /* largest SIP message accepted (UDP datagram or TCP frame) */
/* A TCP/TLS connection's queued output: over PAUSE, its messages are no
 * longer read until it drains to half (a peer that sends and never reads
 * is answered no faster than it reads; 64 KiB, so that the 4096
 * connections [limits] allows by default hold little even when all are
 * paused); over MAX (what we send it without its asking: relayed
 * requests), it is closed. */
#define SA_CONN_WQ_PAUSE        (64 * 1024)
#define SA_CONN_WQ_MAX          (4 * 1024 * 1024)
#define SA_CONN_REG_KEEPS       32      /* credentials whose registrations keep one connection open,
                                         * each apart; beyond, the latest of the rest keeps it */
#define SA_SIP_MAX_HEADERS      128     /* header fields per message */
#define SA_SIP_MAX_HEADER_LINES 512     /* TCP: physical lines (folding included) before the blank one */
#define SA_SIP_MAX_CREDENTIALS  1024    /* one Authorization/Proxy-Authorization header value */
#define SA_SIP_MAX_VIA          32      /* Via entries relayed back */
#define SA_SIP_MAX_CALL_ID      255     /* longer Call-IDs are refused with 400 */

#define SA_USERNAME_MAX         64      /* credential username: 1..64 of [A-Za-z0-9._-] */
#define SA_PASSWORD_MIN         12      /* default minimum; configurable upwards only */
#define SA_PASSWORD_MAX         128
#define SA_NAME_MAX             128     /* account and trunk display names */
#define SA_DOMAIN_MAX           190     /* SIP domain recorded at init */
#define SA_ID_MAX               48      /* acc_/trunk_/cred_ ids incl. NUL */
#define SA_REALM_MAX            (6 + SA_ID_MAX + 1 + SA_DOMAIN_MAX + 1)
#define SA_APIKEY_LEN           (12 + 32) /* "tvx_sk_live_" + 32 base62 */

#define SA_HTTP_MAX_BODY        16384   /* default [api] max_body */
#define SA_HTTP_MAX_HEADERS     8192    /* request line and headers of one HTTP request */
#define SA_HTTP_TIMEOUT         30      /* seconds an HTTP connection may sit idle or half-sent */
#define SA_HTTP_BODY_CUTOFF     4       /* bodies past max_body x this: evhttp keeps none and answers 413 */
#define SA_HTTP_MAX_CONNECTIONS 256     /* default [api] max_connections */
#define SA_HTTP_MAX_CONNECTIONS_PER_SOURCE 32   /* default [api] max_connections_per_source */
#define SA_HTTP_RATE_LIMIT      20      /* default [api] rate_limit: /v1 requests per second per API key */
#define SA_HTTP_RATE_BURST      40      /* default [api] rate_burst */

/* Descriptors the daemon needs besides its SIP and HTTP connections and
 * listeners: stdio, the store (data.mdb, lock.mdb), the event loop (epoll,
 * signal and notification pipes), the journal and systemd sockets, and room
 * for what libraries open (certificate files at reload, resolver). */
#define SA_FD_MARGIN            64

#endif
