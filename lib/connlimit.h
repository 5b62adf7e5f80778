/* connlimit.h: who may open another SIP TCP/TLS connection or start another TLS handshake. */
#ifndef SA_CONNLIMIT_H
#define SA_CONNLIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A source is an address: an IPv4 address, or an IPv6 /64 (one host or
 * one customer's network is given a /64, so counting whole IPv6 addresses
 * would give a single host 2^64 sources). */
struct sa_connlimit_cfg {
	unsigned max_connections;             /* every accepted and opened connection */
	unsigned max_connections_per_source;  /* accepted from one source */
	unsigned max_handshakes;              /* TLS handshakes in progress */
	unsigned max_handshakes_per_source;
};

enum sa_conn_verdict {
	SA_CONN_OK = 0,
	SA_CONN_FULL,                 /* max_connections reached */
	SA_CONN_SOURCE_FULL,          /* the source holds max_connections_per_source */
	SA_CONN_HANDSHAKES_FULL,      /* max_handshakes in progress */
	SA_CONN_SOURCE_HANDSHAKES,    /* the source's share of handshakes is used */
	SA_CONN_NO_MEMORY,
	SA_CONN_VERDICT_COUNT
};

/* "connections", "source_connections", ... for logs and /metrics. */
const char *sa_conn_verdict_name(enum sa_conn_verdict v);

/* The handshake rule, pure. Half of the handshake slots are open to any
 * source up to max_handshakes_per_source; the other half only to sources
 * with no handshake in progress. A PBX needs one handshake at a time, so
 * while fewer than max_handshakes/2 distinct addresses are stalling
 * handshakes, a new source always finds a slot: a few addresses can no
 * longer take them all (16 x 16 took all 256 before). */
enum sa_conn_verdict sa_connlimit_handshake_rule(const struct sa_connlimit_cfg *cfg, unsigned total,
                                                 unsigned mine);

struct sa_connlimit;
struct sa_connsrc;            /* one source's counts; lives while it holds anything */

/* A table for up to about `expected` sources; `seed` keys its hash (random
 * per process, so that addresses cannot be chosen to collide). */
struct sa_connlimit *sa_connlimit_new(size_t expected, uint64_t seed);
void sa_connlimit_free(struct sa_connlimit *cl);

/* An accepted connection from addr (4 or 16 bytes), a TLS one when tls:
 * checks cfg against the totals and the source's counts, and on SA_CONN_OK
 * counts it (and its handshake) and sets *src for the calls below. */
enum sa_conn_verdict sa_connlimit_admit(struct sa_connlimit *cl, const struct sa_connlimit_cfg *cfg,
                                        const void *addr, size_t len, bool tls, struct sa_connsrc **src);
/* Connections opened by us: they count toward max_connections only. */
void sa_connlimit_outgoing(struct sa_connlimit *cl, int delta);
/* Handshakes of outgoing TLS connections count toward max_handshakes only. */
void sa_connlimit_outgoing_handshake(struct sa_connlimit *cl, int delta);
/* The handshake of an admitted connection ended (done or not). */
void sa_connlimit_handshake_done(struct sa_connlimit *cl, struct sa_connsrc *src);
/* An admitted connection closed; its handshake too if it was in progress. */
void sa_connlimit_release(struct sa_connlimit *cl, struct sa_connsrc *src, bool handshaking);

unsigned sa_connlimit_connections(const struct sa_connlimit *cl);
unsigned sa_connlimit_handshakes(const struct sa_connlimit *cl);
unsigned sa_connlimit_sources(const struct sa_connlimit *cl);
/* The source's counts (for logs and tests). */
unsigned sa_connsrc_connections(const struct sa_connsrc *src);
unsigned sa_connsrc_handshakes(const struct sa_connsrc *src);

#endif
