/* server.h: the daemon's one context: config snapshot, store, nonce keys, sockets, tables. */
#ifndef SA_SERVER_H
#define SA_SERVER_H

#include <stdint.h>
#include <sys/queue.h>

#include <event2/event.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>
#include <openssl/ssl.h>

#include "auth.h"
#include "conf.h"
#include "metrics.h"
#include "connlimit.h"
#include "nonce.h"
#include "route.h"
#include "sipmsg.h"
#include "store.h"
#include "txn.h"
#include "upstream.h"
#include "worker.h"

struct sa_listener {
	struct sa_endpoint ep;
	int fd;                         /* UDP socket */
	struct event *ev;
	struct evconnlistener *lev;     /* TCP */
	struct sa_server *srv;
	unsigned idx;
	struct event *resume;           /* TCP: re-enables accepting after an accept() failure */
};

/* Lingering times of finished transactions (sip_txn.c: 2xx INVITE, UDP, stream). */
#define SA_LINGER_CLASSES 3

struct sa_conn;
struct sa_rx;
struct sa_txn;
struct sa_call;


/* What the log was last told about the store, so that each change is one line. */
struct sa_store_watch {
	uint64_t failures_logged;       /* sa_store_fault's count at the last line */
	bool map_high;                  /* data.mdb above SA_STORE_ALARM_PERCENT at the last look */
	bool runtime_map_high;          /* runtime/ likewise */
	uint64_t tombstone;             /* deleted credentials whose bindings are removed, up to here */
	bool index_refreshing;          /* a credential index refresh is queued on the store read thread */
	bool expiring;                  /* a sweep of expired bindings is queued on the store thread */
	uint64_t index_dropped_logged;  /* the index's drops already logged */
};

struct sa_cluster;

struct sa_workers;

/* One per SIP worker (worker.c): worker 0 is the main thread's and holds the
 * shared modules; the others are copies pointing at them. */
struct sa_server {
	struct event_base *base;
	unsigned worker;                /* this one's index; 0: the main thread's */
	unsigned nworkers;              /* how many run (1: no others) */
	struct sa_workers *workers;     /* worker.c; NULL with one worker */
	bool handed;                    /* reading a message another worker handed over */
	bool waited;                    /* ... which waited for its Route's name on worker 0 */
	bool unparking;                 /* worker 0: reading a request that waited (or needs no wait) */
	bool calls_restored;            /* worker 0: calls.state was read at start, so a stop may write it */
	bool started;                   /* worker.c: set up completely */
	struct sa_config cfg;
	struct sa_store *store;
	struct sa_nonce_ctx *nonce;
	struct sa_auth auth;
	char domain[SA_DOMAIN_MAX + 1];
	struct sa_listener listeners[SA_MAX_LISTEN];
	unsigned nlisteners;
	struct sa_route_self self;      /* our listeners and domain, as lib/route tells a URI naming us */
	uint64_t next_id;
	struct sa_conn **conn_by_id;    /* hash buckets */
	struct sa_conn **conn_by_addr;  /* the same connections by transport and peer address */
	struct sa_rx *rx;               /* datagram receive buffers */
	struct sa_txn_index *txns;      /* lib/txn: transactions by server key and by branch, growing with them */
	struct sa_txn_index *txn_early; /* the ringing INVITEs by their early dialogs' key (sa_txn_early_key) */
	struct sa_failq *failq;         /* sip_customer.c: failure records waiting a moment for the store */
	unsigned ntxns;
	unsigned ntxns_peak;            /* since the heap was last trimmed */
	size_t txn_bytes_peak;          /* bytes the transactions kept at most since then (sampled) */
	TAILQ_HEAD(sa_txn_list, sa_txn) txn_done[SA_LINGER_CLASSES];   /* finished transactions by lingering time, oldest first */
	struct event *txn_sweep;        /* frees them when their time is up */
	struct sa_txn_budget *txn_budget;   /* what each source and credential holds */
	unsigned char tag_key[SA_TAG_KEY_LEN];   /* keys the To tags we make */
	SSL_CTX *tls_server;            /* swapped on SIGHUP; live connections keep theirs */
	SSL_CTX *tls_client;            /* towards the gateway (verified) and PBXs */
	struct sa_connlimit *connlimit; /* TCP/TLS connections and handshakes, overall and per source */
	struct sa_abuse *abuse;         /* failure counts and bans per source */
	struct sa_calls *calls;         /* established calls (lib/calls) */
	struct sa_journal *journal;     /* calls.journal.<worker> (sip_calls.c); NULL: none */
	TAILQ_HEAD(, sa_txn) txn_ringing;   /* INVITEs of credentials' calls not answered finally */
	struct sa_conn_waiter *conn_waiters;   /* requests sent down connections still being opened */
	size_t nconn_waiters, conn_waiters_cap;
	uint64_t store_generation;      /* last seen: a change means sipauthctl wrote */
	struct sa_store_watch store_watch;   /* main.c: what housekeeping last told of the store */
	struct event *revoke_poll;
	struct sa_pacer *pacer;         /* our BYEs, paced per destination (lib/pace) */
	struct sa_pace_shared *pace_shared;   /* the destinations' allowances, shared by the workers' pacers */
	struct event *pace_timer;
	unsigned byes_pending;          /* our BYEs not answered yet (queued or sent) */
	struct event *sig_term, *sig_int, *sig_hup, *housekeeping;
	struct sa_metrics metrics;      /* the counters; gauges are filled in when /metrics is read */
	int stopping;                   /* SIGTERM: draining transactions in flight */
	uint64_t stop_deadline_ms;
	struct event *drain;
	unsigned nactive;               /* transactions not yet answered finally */
	struct sa_http *http;           /* http.c: the [api] servers and their counters */
	struct sa_trunk_table *trunks;  /* sip_customer.c: channels and call-rate buckets per trunk (lib/policy) */
	struct sa_work *work;           /* work.c: the store thread for API writes and flushes */
	struct sa_work *work_read;      /* ... and one for API reads: a write waiting for the lock holds up no GET */
	struct sa_upstream *upstream;   /* upstream.c: the gateways, their addresses and health */
	struct sa_upstream *trusted_names;   /* [upstream] trusted entries that are names; NULL: none */
	struct sa_upstream *route_names;     /* hosts of Routes that named no address we knew */
	struct sa_parked *parked;       /* in-dialog requests waiting for their Route's name */
	unsigned nparked;
	struct sa_resolver *resolver;   /* resolve.c: c-ares on the loop; NULL when no gateway is named */
	struct event *probe;            /* upstream.c: OPTIONS to every gateway each probe_interval */
	struct sa_cluster *cluster;     /* cluster.c: fleet mode's feed; NULL: a single host */
	struct sa_webhooks *webhooks;   /* webhook.c: the event queue and the delivery thread */
};

/* transport.c */
int sa_transport_start(struct sa_server *srv);
void sa_transport_stop(struct sa_server *srv);
/* Load the certificate and key anew (SIGHUP); established connections keep
 * the old ones. 0, or -1 with the old context still in force. */
int sa_transport_tls_reload(struct sa_server *srv, const struct sa_tls_config *tc);
/* The same in two steps, so that a reload applies all of its TLS files or
 * none: the new contexts (0, or -1 logged, nothing made), then put in force
 * (or dropped: sa_transport_tls_drop). */
struct sa_tls_pair {
	SSL_CTX *server, *client;
};
int sa_transport_tls_prepare(struct sa_server *srv, const struct sa_tls_config *tc, struct sa_tls_pair *p);
void sa_transport_tls_commit(struct sa_server *srv, struct sa_tls_pair *p);
void sa_transport_tls_drop(struct sa_tls_pair *p);
/* Worker w takes (a reference to) the contexts `from` uses now. 0 or -1. */
int sa_transport_tls_take(struct sa_server *w, const struct sa_server *from);
/* A TLS server context from tc's certificate, key, version, ciphers and
 * client CA; NULL (logged, naming the file) when one does not load. */
SSL_CTX *sa_transport_tls_server_ctx(const struct sa_tls_config *tc);
/* Send bytes along a flow (opening a TCP connection when needed). 0 or -1. */
/* 0 sent (or queued on a connection, or handed to its worker), 1 queued on a
 * connection still being opened (its outcome: sa_sip_flow_connected or
 * sa_sip_flow_failed with connecting), -1 not sent. */
int sa_transport_send(struct sa_server *srv, const struct sa_flow *fl, const char *buf, size_t len);
/* fl's connection (here or on its worker) is kept open for_ms from now,
 * whatever tcp_idle_timeout says: for the registrations of cred_id on it
 * (its latest REGISTER sets it; 0 ends it: a PBX that unregistered, or
 * moved to another connection; each credential's apart, the latest wins)
 * or for a call set up over it (the longest wins; cred_id NULL). */
enum sa_keep { SA_KEEP_REGISTRATION, SA_KEEP_CALL };
/* A request on fl's connection authenticated (or came from a trusted
 * address): from now on its messages and pings keep it open; before, it
 * closes tcp_idle_timeout after it opened. */
void sa_transport_proven(struct sa_server *srv, const struct sa_flow *fl);
void sa_transport_keep(struct sa_server *srv, const struct sa_flow *fl, enum sa_keep what, const char *cred_id,
                       uint64_t for_ms);
/* The listener to leave from towards proto (its address goes in Via/Record-Route). */
/* The listener a next hop of this address family is reached from: for UDP
 * one of that family (-1: none, the address cannot be sent to); a stream
 * opens a socket of its own. */
int sa_transport_listener_to(struct sa_server *srv, enum sa_proto proto, int family);
unsigned sa_transport_listener_for(struct sa_server *srv, enum sa_proto proto);
void sa_flow_peer(const struct sa_flow *fl, char *addr, size_t alen, uint16_t *port);
/* Is the TCP/TLS connection with this id still open? */
bool sa_transport_conn_open(struct sa_server *srv, uint64_t conn_id);
/* Is there a connection for fl: its own (by id), or one to its peer (by
 * address: here, or one the peer opened to another worker)? UDP: true. */
bool sa_transport_flow_open(struct sa_server *srv, const struct sa_flow *fl);
/* For /metrics: the gauges of the connections (counters are srv->metrics). */
void sa_transport_gauges(const struct sa_server *srv, struct sa_metrics *m);

/* Several workers: the gateways' state is shared; the resolver and the
 * workers hold this lock while they read or write it. */
void sa_gateways_lock(void);
void sa_gateways_unlock(void);

/* sip.c and its parts (sip_txn.c, sip_relay.c, sip_calls.c, sip_customer.c): one message in */
void sa_sip_input(struct sa_server *srv, const struct sa_flow *from, const char *buf, size_t len);
int sa_sip_init(struct sa_server *srv);
/* The calls worker 0 restored at start, into the workers' Call-ID directory. */
void sa_sip_calls_directory(struct sa_server *srv);
/* The one revocation path: when the store's generation moved (a delete by
 * the API, sipauthctl or anyone), end the calls and ringing INVITEs of
 * credentials that are gone, on every worker (each ends its own; one log
 * line per credential with the total). Worker 0's poll runs it every 250 ms;
 * the API runs it at once after its own delete. Main thread only. Returns
 * the calls ended. */
int sa_sip_revocation_check(struct sa_server *srv);
/* Periodic: end calls older than max_call_age. */
void sa_sip_housekeeping(struct sa_server *srv);

/* For the API: each active call of a trunk. */
struct sa_call_info {
	const char *call_id;
	const char *cred_id;
	const char *trunk_id;
	bool inbound;
	bool confirmed;          /* false: still ringing */
	int64_t started_at;
};
typedef void (*sa_call_cb)(const struct sa_call_info *ci, void *arg);
void sa_sip_calls_each(struct sa_server *srv, const char *trunk_id, sa_call_cb cb, void *arg);
void sa_sip_shutdown(struct sa_server *srv);
/* Transactions still waiting for a final answer (graceful stop waits for them). */
unsigned sa_sip_in_flight(const struct sa_server *srv);
/* For /metrics: the gauges of the SIP core's tables (calls, transactions, bans, our BYEs). */
void sa_sip_gauges(const struct sa_server *srv, struct sa_metrics *m);
/* Write the calls in progress next to the store (clean stop); read back at start. */
int sa_sip_calls_save(struct sa_server *srv);
/* Worker 0, once its listeners are up (a saved end names its listener by
 * address): the calls saved at the last clean stop, back in its table. */
void sa_sip_calls_restore(struct sa_server *srv);

uint64_t sa_now_ms(void);
/* Seconds on the monotonic clock: what bans and vouching count in (a step of
 * the wall clock neither lengthens nor ends a ban). */
uint64_t sa_mono_s(void);

/* upstream.c: the gateways (lib/upstream) on the loop */
#define SA_GATEWAY_RETRY_MS 30000   /* without probes, a gateway that went down is tried again after this */
int sa_gateways_start(struct sa_server *srv);
void sa_gateways_stop(struct sa_server *srv);
/* The failover order for one INVITE, as flows. 0: no gateway has an address. */
unsigned sa_gateways_order(struct sa_server *srv, struct sa_flow *flows, unsigned max);
const char *sa_gateways_none_reason(struct sa_server *srv);
void sa_gateways_sent(struct sa_server *srv, const struct sa_flow *to);
void sa_gateways_failover(struct sa_server *srv, const struct sa_flow *from);
/* What the gateway at `to` did (health; logs a line when it goes down or up). */
/* A gateway's 503 said Retry-After: seconds: tried after the others until then. */
void sa_gateways_hold(struct sa_server *srv, const struct sa_flow *to, unsigned seconds);
void sa_gateways_report(struct sa_server *srv, const struct sa_flow *to, enum sa_up_event ev);
bool sa_gateways_has_addr(struct sa_server *srv, const struct sockaddr *sa);
/* Is the address one a trusted name resolved to? */
bool sa_gateways_trusted_name(struct sa_server *srv, const struct sockaddr *sa);
/* The address a gateway or trusted name resolved to (port not set), for a
 * Route naming it. false: no such name is resolved here. */
bool sa_gateways_name_addr(struct sa_server *srv, const char *name, union sa_sockaddr *out);
/* An in-dialog request whose next Route names `host`, not resolved yet:
 * kept (at most SA_PARKED_MAX, for SA_PARKED_MS at most) while DNS is asked,
 * then fed to sa_sip_input again. 0 when kept; -1: go on without it (the
 * name was just answered, or no room). */
#define SA_PARKED_MAX 64
#define SA_PARKED_MS 3000
int sa_gateways_park(struct sa_server *srv, const char *host, const struct sa_flow *from, const char *buf,
                     size_t len);
/* resolve.c: an answer for a Route name came, or time passed: requests waiting on it go on. */
void sa_gateways_unpark(struct sa_server *srv, const char *host, bool all_due);
/* Start the resolver if it is not running (a Route name needs it). 0 or -1. */
int sa_resolver_ensure(struct sa_server *srv);
/* For /metrics (appended to *buf) and GET /v1/upstream (malloc'd JSON). */
int sa_gateways_metrics(struct sa_server *srv, char **buf, size_t *len);
char *sa_gateways_json(struct sa_server *srv);
/* A probe's final answer from the gateway at `from`. */
void sa_gateways_probe_answer(struct sa_server *srv, const struct sa_flow *from, int status);
/* resolve.c: the gateways' names asked as their answers expire (nothing when all are numeric) */
int sa_resolver_start(struct sa_server *srv);
void sa_resolver_stop(struct sa_server *srv);
/* sip_relay.c: a connection we opened failed or closed: requests waiting on it move on. */
void sa_sip_flow_failed(struct sa_server *srv, const struct sa_flow *fl, bool connecting);
/* sip_relay.c: a connection we opened is up: the requests waiting on it wait for answers now. */
void sa_sip_flow_connected(struct sa_server *srv, const struct sa_flow *fl);
/* Send gateway idx an OPTIONS probe (a transaction of our own). 0 or -1. */
int sa_sip_probe(struct sa_server *srv, unsigned idx, const struct sa_flow *to);

/* cluster.c (built with libpq): fleet mode. A new node's store is made from
 * the database before serving (blocking, at start-up only): 0 or -1, logged. */
int sa_cluster_mirror_init(struct sa_server *srv);
/* The feed on the loop; applies on srv->work. Stop it after sa_work_stop. */
int sa_cluster_start(struct sa_server *srv);
void sa_cluster_stop(struct sa_cluster *c);
void sa_cluster_stats(const struct sa_cluster *c, struct sa_metrics_fleet *s);
/* Registrations across the fleet (c NULL: a single host, nothing). The
 * credential's bindings changed here: written to the database soon,
 * coalesced. On worker 0's loop only (the others post it there). */
void sa_cluster_binding_changed(struct sa_cluster *c, const char *cred_id);
/* Is sa the address of a node of the fleet (from the nodes table)? Any worker. */
bool sa_cluster_is_node(const struct sa_cluster *c, const struct sockaddr *sa);
/* How many nodes were alive at the last heartbeat (0: none heard yet); they
 * share each trunk's limits. Any worker. */
unsigned sa_cluster_nodes_alive(const struct sa_cluster *c);
/* The trunk's newest binding owned by another node that is alive, and that
 * node's address: 0, or -1 when there is none. Memory only: no database. Any worker. */
struct sa_fleet_owner {
	char node[64];
	char proto[8], host[64], port[8];
};
int sa_cluster_remote_binding(struct sa_cluster *c, const char *trunk_id, struct sa_binding *out,
                              struct sa_fleet_owner *to);
/* Queues an auth failure for the fleet's log (pushed with the next
 * heartbeat; the queue is bounded, overflow counted). Never blocks. On
 * worker 0's loop only (the others post theirs there). */
void sa_cluster_authfail(struct sa_cluster *c, const struct sa_authfail *f);

/* http.c: the REST API, /dashboard, /healthz and /metrics on [api] listen
 * (and /metrics alone on [api] metrics_listen). No listen: nothing. 0 or -1. */
int sa_http_start(struct sa_server *srv);
void sa_http_stop(struct sa_server *srv);
/* SIGHUP: HTTPS takes next's [api] certificate and key for new connections,
 * in two steps: *ctx the new context (NULL when there is no HTTPS), 0; or
 * -1 (logged) when they do not load. Then put in force, or freed. */
int sa_http_tls_prepare(struct sa_server *srv, const struct sa_config *next, SSL_CTX **ctx);
void sa_http_tls_commit(struct sa_server *srv, SSL_CTX *ctx);
/* --check-config: the files c names that the API loads at a start (the
 * admin token, the HTTPS certificate and key) load. 0, or -1 (logged). */
int sa_http_check(const struct sa_config *c);

/* webhook.c: account events to the account's webhooks. Start after the
 * store is open; stop before it closes. The emitters run on the loop and
 * only queue (nothing when no webhook exists): the delivery thread finds
 * the subscribers, records, signs, sends and retries. Each names the trunk;
 * the account is the trunk's unless given. */
int sa_webhooks_start(struct sa_server *srv);
void sa_webhooks_stop(struct sa_server *srv);
/* A webhook was created (the API, or the fleet's feed): events are worth building from now on. */
void sa_webhooks_created(struct sa_server *srv);
/* Fleet mode (the feed, on the loop): up to max delivery states queued for
 * the fleet's list, oldest first; *dropped: states that found the queue full since. */
unsigned sa_webhooks_fleet_take(struct sa_server *srv, struct sa_delivery *out, unsigned max, uint64_t *dropped);
/* Summed per trunk over [webhooks] auth_failed_window: one auth.failed per trunk and window. */
void sa_webhooks_auth_failed(struct sa_server *srv, const char *trunk, const char *source, const char *username);
void sa_webhooks_source_banned(struct sa_server *srv, const char *trunk, const char *source, unsigned failures,
                               unsigned ban_seconds);
void sa_webhooks_credential_created(struct sa_server *srv, const char *account, const char *trunk,
                                    const char *cred, const char *username);
void sa_webhooks_credential_deleted(struct sa_server *srv, const char *account, const char *trunk,
                                    const char *cred, int calls_ended);
/* A rotation through the API (POST .../credentials/{id}/rotate): the new
 * version, and until when the old password still authenticates. */
void sa_webhooks_credential_rotated(struct sa_server *srv, const char *account, const char *trunk,
                                    const char *cred, unsigned password_version, int64_t old_valid_until);
void sa_webhooks_registration_created(struct sa_server *srv, const struct sa_credential *cred, const char *source,
                                      uint16_t port, const char *transport, int added);
/* An sa_store_binding_cb for sa_store_binding_expire_each (arg: the server). */
int sa_webhooks_registration_expired(const struct sa_binding *b, void *arg);
/* A call (answered) or INVITE (ringing) ended because its credential was deleted. */
void sa_webhooks_call_revoked(struct sa_server *srv, const char *call_id, const char *cred, const char *trunk,
                              bool answered);
/* For /metrics: appended to *buf. 0 or -1. */
int sa_webhooks_metrics(struct sa_server *srv, char **buf, size_t *len);

#endif
