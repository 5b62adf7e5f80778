/* upstream.h: the gateways: targets from the configuration and DNS answers (RFC 3263), priority and weight, health, failover order. */
#ifndef SA_UPSTREAM_H
#define SA_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "route.h"

#define SA_UPSTREAM_MAX 16          /* gateways at once (configured, or from one SRV answer) */
#define SA_UPSTREAM_ADDRS 4         /* addresses kept per gateway name */
#define SA_UPSTREAM_HOST_MAX 254    /* a DNS name, dots included */
#define SA_UPSTREAM_NEG_TTL_MS 5000 /* a name that did not resolve is asked again after this */
#define SA_UPSTREAM_MIN_TTL_S 1     /* an answer is kept at least this long (TTL 0 would ask on every call) */
#define SA_UPSTREAM_MAX_TTL_S 86400

/* [upstream] gateway as written: "sip:NAME[:PORT]" (RFC 3263 from NAPTR down,
 * or from A/AAAA when PORT is given) or a list of proto:HOST:PORT in priority
 * order, HOST a name or a numeric address. Compared with memcmp on reload:
 * built from zeroed memory. */
struct sa_upstream_entry {
	enum sa_proto proto;
	char host[SA_UPSTREAM_HOST_MAX + 1];   /* a name, or a numeric address without brackets */
	uint16_t port;
};

struct sa_upstream_spec {
	bool service;                          /* sip:NAME */
	struct sa_upstream_entry e[SA_UPSTREAM_MAX];   /* service: e[0] is NAME (port 0: not given) */
	unsigned n;
};

/* Parse the value of [upstream] gateway into spec. 0, or -1 with a reason in err. */
int sa_upstream_spec_parse(struct sa_upstream_spec *spec, const char *value, char *err, size_t errlen);

/* Is s a numeric IPv4/IPv6 address, or a name DNS could hold (letters,
 * digits, '-', '_', '.'; labels of 1-63)? */
bool sa_upstream_host_numeric(const char *s);
bool sa_upstream_host_name_ok(const char *s);

/* Health: each gateway is up or down. Failures (a 503, a timeout, a
 * transport error, a failed probe) in a row put it down after down_after; a
 * probe answered (or a call answered when it is tried anyway) in a row
 * up_after times brings it back. Without probes a down gateway is tried
 * again after retry_ms. */
struct sa_upstream_cfg {
	unsigned down_after;
	unsigned up_after;
	bool probing;
	uint64_t retry_ms;
};

enum sa_up_event {
	SA_UP_ANSWERED = 0,         /* any response but 503 */
	SA_UP_503,
	SA_UP_TIMEOUT,              /* no response within the failover time */
	SA_UP_TRANSPORT,            /* could not send, or the connection failed */
	SA_UP_PROBE_OK,
	SA_UP_PROBE_FAIL,
	SA_UP_EVENTS
};

/* One gateway: where, how it stands, what it did. */
struct sa_up_target {
	enum sa_proto proto;
	char host[SA_UPSTREAM_HOST_MAX + 1];
	uint16_t port;
	uint16_t priority, weight;             /* SRV's; a list: position, 0 */
	union sa_sockaddr addr[SA_UPSTREAM_ADDRS];
	socklen_t addrlen[SA_UPSTREAM_ADDRS];
	unsigned naddr;
	bool numeric;                          /* never resolved */
	uint64_t expires_ms;                   /* its addresses are good until then (names) */
	bool resolving;                        /* a question is out for it */
	bool resolve_failed;                   /* the last question got no address */
	bool down;
	unsigned fails, oks;                   /* in a row */
	uint64_t down_since_ms;
	uint64_t held_until_ms;                /* its 503's Retry-After: tried after the others until then */
	uint64_t sent;                         /* INVITEs tried on it */
	uint64_t events[SA_UP_EVENTS];
	uint64_t failovers;                    /* INVITEs moved from it to the next gateway */
	bool probe_out;                        /* an OPTIONS probe waits for its answer */
};

/* An SRV record as the resolver gives it. */
struct sa_up_srv {
	uint16_t priority, weight, port;
	const char *target;
};

/* A NAPTR record (RFC 3403) as the resolver gives it. */
struct sa_up_naptr {
	uint16_t order, preference;
	const char *flags, *service, *replacement;
};

/* The gateways, their addresses, health and counters. */
struct sa_upstream {
	struct sa_upstream_cfg cfg;
	struct sa_upstream_spec spec;
	struct sa_up_target t[SA_UPSTREAM_MAX];
	unsigned n;
	/* sip:NAME: the SRV answer that made t[] */
	uint64_t service_expires_ms;
	bool service_resolving;
	bool service_failed;                   /* the last look-up found nothing */
	bool service_srv;                      /* t[] came from SRV (else from NAME's A/AAAA) */
	bool service_refused;                  /* the SRV answer's only target is "." (RFC 2782): no gateway */
};

/* Build the gateways from spec (numeric hosts get their address at once). */
void sa_upstream_init(struct sa_upstream *u, const struct sa_upstream_spec *spec, const struct sa_upstream_cfg *cfg);

/* ---- resolving: the daemon asks, lib/ says what and keeps the answers ---- */

enum sa_up_ask {
	SA_UP_ASK_NONE = 0,
	SA_UP_ASK_SERVICE,          /* sip:NAME: NAPTR, then SRV, then A/AAAA of NAME */
	SA_UP_ASK_HOST,             /* t[*idx].host: A/AAAA */
};

/* A name to keep resolved (a Route's host): its index, an existing one
 * if the name is there already. A full list gives up the entry that
 * expires first (none asked at the moment); -1 when all are being asked. */
int sa_upstream_name_add(struct sa_upstream *u, const char *host, uint64_t now_ms);
/* Has host an answer (addresses, or a failure) that is still current? */
bool sa_upstream_name_answered(const struct sa_upstream *u, const char *host, uint64_t now_ms);

/* The next question that is due at now (an answer expired, or never got),
 * marked as asked. Call until SA_UP_ASK_NONE. */
enum sa_up_ask sa_upstream_next_question(struct sa_upstream *u, uint64_t now_ms, unsigned *idx);

/* Addresses for t[idx]'s host (any port: the target's is set), kept ttl_s
 * seconds. n 0: the name did not resolve (asked again after NEG_TTL). */
void sa_upstream_host_answer(struct sa_upstream *u, unsigned idx, const union sa_sockaddr *addrs, unsigned n,
                             uint32_t ttl_s, uint64_t now_ms);

/* NAPTR records for sip:NAME: the SRV names to ask, best first, with their
 * transports (only "SIP+D2U" and "SIP+D2T" with flag "s"). Returns how many. */
unsigned sa_upstream_naptr_pick(const struct sa_up_naptr *recs, unsigned n, char names[][SA_UPSTREAM_HOST_MAX + 1],
                                enum sa_proto *protos, unsigned max);

/* The SRV answer (for proto) for sip:NAME: the gateways become its targets
 * (health and counters kept for those that stay). n 0 with a_fallback: NAME
 * itself on port 5060 (RFC 3263 §4.2). Returns how many targets. */
unsigned sa_upstream_service_answer(struct sa_upstream *u, const struct sa_up_srv *recs, unsigned n,
                                    enum sa_proto proto, uint32_t ttl_s, uint64_t now_ms);
/* The service's look-up failed entirely (nothing at NAPTR, SRV, or A). */
void sa_upstream_service_failed(struct sa_upstream *u, uint64_t now_ms);

/* ---- choosing ---- */

/* The failover order for one INVITE: gateways with an address, up ones
 * first, each group by priority and, within a priority, by RFC 2782's
 * weighted draw (rnd returns a uniform 32-bit value). Returns how many. */
unsigned sa_upstream_order(const struct sa_upstream *u, uint64_t now_ms, uint32_t (*rnd)(void *), void *rarg,
                           unsigned *out, unsigned max);

/* What a gateway did. Returns true when it changed state (up <-> down). */
bool sa_upstream_report(struct sa_upstream *u, unsigned idx, enum sa_up_event ev, uint64_t now_ms);

/* A gateway answered 503 with Retry-After (RFC 3261 §21.5.4): it counts as
 * down (tried after every other) for that many seconds, at most
 * SA_UPSTREAM_HOLD_MAX_S. */
#define SA_UPSTREAM_HOLD_MAX_S 600
void sa_upstream_hold(struct sa_upstream *u, unsigned idx, unsigned seconds, uint64_t now_ms);

/* Does a gateway count as down at now (down, and not yet due for a retry)? */
bool sa_upstream_is_down(const struct sa_upstream *u, unsigned idx, uint64_t now_ms);

/* Is addr one of the gateways' addresses (any port when port_any)? Index or -1. */
/* An address of a gateway failed (silent, unreachable, 503): it goes last
 * among its name's addresses, so that the next call tries the others first
 * (until the name's next answer). */
void sa_upstream_addr_last(struct sa_upstream *u, const struct sockaddr *sa);
int sa_upstream_find_addr(const struct sa_upstream *u, const struct sockaddr *sa, bool port_any);

/* The smallest TTL of the answer records of `type` in a DNS message
 * (RFC 1035 §4.1); -1 when it has none or is malformed. */
long sa_upstream_dns_min_ttl(const unsigned char *msg, size_t len, uint16_t type);

const char *sa_up_event_name(enum sa_up_event ev);

/* "udp:gw1.example:5060": how logs, /metrics and the API name a gateway. */
void sa_upstream_target_name(const struct sa_up_target *t, char *out, size_t len);

/* Per-gateway state and counters in Prometheus text (appended to a
 * malloc'd *buf of *len bytes). 0, or -1 out of memory (*buf stays valid). */
int sa_upstream_metrics(const struct sa_upstream *u, uint64_t now_ms, char **buf, size_t *len);

/* GET /v1/upstream: {"gateways":[...]} as a malloc'd JSON text, or NULL. */
char *sa_upstream_json(const struct sa_upstream *u, uint64_t now_ms);

/* The OPTIONS probe for t[idx] (RFC 3261 §11): Request-URI its host and
 * port, our Via; id (hex, 16+ chars) makes the From tag and Call-ID.
 * Length, or -1 when out is too small. */
long sa_upstream_probe_request(const struct sa_upstream *u, unsigned idx, const char *via, const char *local_host,
                               const char *id, char *out, size_t cap);

/* A probe's answer: 503 (or none, at the next probe) fails it; any other
 * final answer passes: the gateway is there and speaks SIP. */
enum sa_up_event sa_upstream_probe_verdict(int status);

#endif
