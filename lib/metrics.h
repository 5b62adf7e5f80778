/* metrics.h: a snapshot of sipauthd's counters and gauges, rendered in the Prometheus text format. */
#ifndef SA_METRICS_H
#define SA_METRICS_H

#include <stddef.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth.h"
#include "connlimit.h"
#include "policy.h"

#define SA_METRICS_METHODS    16    /* by enum sa_method (lib/sipmsg.h) */
#define SA_METRICS_TRANSPORTS 3     /* udp, tcp, tls */
#define SA_METRICS_STATUSES   700   /* HTTP and SIP status codes */

/* Plain numbers the daemon copies in; lib reads no clock and no globals. */
#define SA_METRICS_WORKERS 64   /* [sip] workers at most */

struct sa_metrics {
	const char *version;
	int64_t start_time;                              /* seconds since the epoch */
	uint64_t sip_requests[SA_METRICS_METHODS];
	uint64_t sip_requests_by_transport[SA_METRICS_TRANSPORTS];
	uint64_t challenges;
	uint64_t auth_ok;
	uint64_t auth_fail[SA_AUTH_REASON_COUNT];        /* [SA_AUTH_STALE_NONCE] is rendered apart */
	uint64_t auth_stale[SA_STALE_COUNT];             /* the stale ones by cause ([SA_STALE_NONE] unused) */
	uint64_t auth_by_address;                        /* let through by a trunk's ip_authentication */
	uint64_t trunk_refused[SA_POLICY_VERDICT_COUNT]; /* by a trunk's controls, by verdict */
	uint64_t registrations;                          /* REGISTERs that added or removed bindings */
	int64_t registrations_active;                    /* gauge; < 0: unknown, not rendered */
	uint64_t sip_rejected[SA_METRICS_STATUSES];      /* our own SIP error answers by status */
	uint64_t sip_forwarded;
	uint64_t sip_retransmissions_absorbed;
	uint64_t sip_failures_retransmitted;             /* Timer G: failures to INVITEs sent again */
	uint64_t calls_active;                           /* gauge */
	uint64_t calls_started, calls_revoked, calls_reaped;
	uint64_t credential_rotations;                   /* passwords rotated over the API */
	uint64_t bans;                                   /* sources banned for repeated failures */
	uint64_t banned_dropped;                         /* requests from banned sources, unanswered */
	uint64_t banned_active;                          /* gauge: sources banned now */
	uint64_t api_requests[SA_METRICS_STATUSES];      /* HTTP answers by status */
	uint64_t transactions;                           /* gauge: transactions kept now */
	uint64_t transaction_bytes;                      /* gauge: bytes of messages they keep */
	uint64_t transactions_refused;                   /* 503: a source, credential or memory budget full */
	uint64_t transactions_evicted;                   /* finished ones dropped early to make room */
	uint64_t responses_refused;                      /* answers from a peer the request was not sent to */
	uint64_t failover_late_answers;                  /* answers from a gateway failover had left */
	uint64_t inbound_failovers;                      /* inbound INVITEs moved on to another registration */
	uint64_t byes_answered, byes_timed_out;          /* our BYEs (calls ended from the middle) */
	uint64_t bye_retransmissions;
	uint64_t byes_pending;                           /* ours not answered yet */
	uint64_t byes_queued;                            /* ... of which waiting for their turn (bye_rate) */
	uint64_t relay_refused;                          /* in-dialog requests not from the call's ends */
	uint64_t call_byes_refused;                      /* an end's BYE the other end refused: the call goes on */
	uint64_t fleet_relayed;                          /* inbound requests relayed to the owner node */
	uint64_t workers;                                /* gauge: SIP workers (event loops) running */
	uint64_t worker_handoffs;                        /* messages handed to the worker that owns them */
	uint64_t worker_sends;                           /* bytes sent through another worker's TCP/TLS connection */
	uint64_t worker_requests[SA_METRICS_WORKERS];    /* SIP requests each worker read, by worker (< workers) */
	/* the store; map_size 0: unknown, not rendered */
	uint64_t store_map_size;                         /* gauge: bytes */
	uint64_t store_used;                             /* gauge: bytes in pages holding data */
	uint64_t store_write_failures;                   /* writes that failed or were refused */
	uint64_t store_runtime_map_size;                 /* gauge: bytes of runtime/'s map; 0: not rendered */
	uint64_t store_runtime_used;                     /* gauge: bytes in its pages holding data */
	/* the credential index ([store] credential_index): rendered when configured */
	bool credential_index;
	uint64_t credential_index_credentials;           /* gauge: 0 once dropped */
	uint64_t credential_index_bytes;                 /* gauge: memory mapped for it */
	uint64_t credential_index_rebuilds;              /* built again after falling behind the change log */
	uint64_t credential_index_dropped;               /* given up (no memory): credentials read from data.mdb */
	/* connections and what the limits turned away */
	uint64_t tcp_connections;                        /* gauge: SIP TCP/TLS connections open */
	uint64_t tls_handshakes;                         /* gauge: TLS handshakes in progress */
	uint64_t tcp_refused[SA_CONN_VERDICT_COUNT];     /* accepted and closed at once, by limit */
	uint64_t tcp_idle_closed;                        /* closed at tcp_idle_timeout */
	uint64_t next_hop_unreachable;                   /* requests answered at once: their next hop could not be reached */
	uint64_t tcp_reads_paused;                       /* reading stopped: SA_CONN_WQ_PAUSE of output unread */
	uint64_t tcp_write_queue_closed;                 /* closed: SA_CONN_WQ_MAX of output unread */
	uint64_t accept_paused;                          /* accept() failed (no descriptor): listener rested */
	uint64_t http_connections;                       /* gauge: API and metrics connections open */
	uint64_t http_refused;                           /* closed at once over [api] max_connections */
	uint64_t api_rate_limited;                       /* /v1 requests answered 429 over [api] rate_limit */
	uint64_t api_rate_limit_keys;                    /* API key hashes with a bucket */
	uint64_t log_suppressed;                         /* log lines over the per-site budget */
	/* the store thread (daemon/work.c) */
	uint64_t work_queued;                            /* gauge: API requests waiting or running */
	uint64_t work_jobs;                              /* jobs run */
	uint64_t work_refused;                           /* refused: the queue was full (503) */
	uint64_t work_busy_us;                           /* time the thread spent working */
};

/* The text exposition (version 0.0.4) into a malloc'd, NUL-terminated
 * buffer; its length in *len. NULL when out of memory. */
char *sa_metrics_render(const struct sa_metrics *m, size_t *len);

/* Adds the SIP core's and the transport's counters of one worker to *into
 * (the gauges are computed apart, the API's and store's are worker 0's). */
void sa_metrics_add(struct sa_metrics *into, const struct sa_metrics *w);

#define SA_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Appends a printf-formatted line (at most 511 bytes) to *buf (malloc'd, NUL-terminated). 0 or -1. */
int sa_metrics_appendf(char **buf, size_t *len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Fleet mode's feed (daemon/cluster.c), as /metrics shows it. */
struct sa_metrics_fleet {
	const char *state;               /* "down", "connecting", "up", "refused" (another domain) */
	bool up;                         /* connected to the database */
	uint64_t applied;                /* last change log sequence in the local store */
	uint64_t head;                   /* ... and in the database, at the last look */
	int64_t lag_ms;                  /* the last change applied: from its write to its commit here */
	uint64_t changes_applied;
	uint64_t resyncs;
	uint64_t notifications;
	uint64_t connects;
	uint64_t connect_failures;       /* in a row, since the last connection */
	uint64_t query_failures;
	uint64_t apply_failures;
	uint64_t nodes_alive;            /* this node and the others that beat within 6 s, at the last heartbeat */
	uint64_t name_conflicts;         /* heartbeats that found this node's row written by another process */
	int64_t clock_offset_ms;         /* the database's clock minus this host's, at the last heartbeat */
	uint64_t nonce_key;              /* the fleet's nonce key id this node issues with (0: its own start key) */
	uint64_t nonce_key_loads;        /* key sets taken from the database */
	uint64_t failures_pushed;        /* auth failures written to the fleet's log */
	uint64_t failures_lost;          /* ... dropped: the queue was full, or the database away when sent */
	uint64_t failures_queued;        /* gauge: waiting to be pushed */
	uint64_t calls_pushed;           /* calls started, changed or ended written to the fleet's calls table */
	uint64_t deliveries_pushed;      /* webhook delivery states written to the fleet's list */
	uint64_t deliveries_lost;        /* ... dropped: the queue was full, or the database away when sent */
};
/* Appends the sipauthd_cluster_* families to *buf. 0 or -1. */
int sa_metrics_fleet_render(const struct sa_metrics_fleet *f, char **buf, size_t *len);

/* The process itself, under the names every Prometheus client library uses
 * (process_resident_memory_bytes, ...): what a soak watches (RSS and open
 * descriptors flat). The daemon reads them (/proc/self). */
struct sa_metrics_process {
	double cpu_seconds;              /* user + system */
	uint64_t resident_bytes, virtual_bytes;
	uint64_t open_fds, max_fds;
	double start_time;               /* seconds since the epoch */
};
int sa_metrics_process_render(const struct sa_metrics_process *p, char **buf, size_t *len);

#endif
