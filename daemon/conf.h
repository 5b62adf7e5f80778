/* conf.h: sipauthd.conf (INI): parsed and validated as a whole, refused with file:line:reason. */
#ifndef SA_CONFIG_H
#define SA_CONFIG_H

#include <limits.h>
#include <netinet/in.h>
#include <stdint.h>

#include "abuse.h"
#include "auth.h"
#include "policy.h"
#include "registrar.h"
#include "route.h"
#include "upstream.h"

#define SA_WH_PRIVATE_MAX 16          /* [webhooks] private_targets networks */

#define SA_MAX_LISTEN 8
#define SA_WORKERS_MAX 64     /* [sip] workers; our Via branch names its worker in one base64url character */
#define SA_MAX_TRUSTED 32
#define SA_MAX_DNS_SERVERS 3

struct sa_endpoint {
	enum sa_proto proto;
	char host[64];                 /* numeric address as written */
	uint16_t port;
	struct sockaddr_storage ss;
	socklen_t sslen;
};

struct sa_net {
	int family;                    /* 0: a name, resolved like the gateways' */
	unsigned char addr[16];
	unsigned prefix;
	char name[SA_UPSTREAM_HOST_MAX + 1];
};

/* TLS 1.2 suites with forward secrecy and AEAD only (TLS 1.3 suites are OpenSSL's defaults) */
#define SA_TLS_DEFAULT_CIPHERS "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:" \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:" \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

struct sa_tls_config {
	char certificate[PATH_MAX];      /* PEM chain, leaf first */
	char private_key[PATH_MAX];
	int min_version;                 /* TLS1_2_VERSION or TLS1_3_VERSION */
	char ciphers[512];               /* TLS 1.2 cipher list */
	char client_ca[PATH_MAX];        /* verify client certificates against this CA file ("" = don't ask) */
	unsigned handshake_timeout;      /* seconds a handshake may take */
	unsigned max_handshakes;         /* handshakes in progress at once */
	unsigned max_handshakes_per_source;   /* ... of them from one address */
	char gateway_ca[PATH_MAX];       /* CA file for the gateway's certificate ("" = system store) */
	char gateway_name[256];          /* the name the gateway's certificate must carry */
};

struct sa_config {
	char path[PATH_MAX];
	struct sa_endpoint listen[SA_MAX_LISTEN];
	unsigned nlisten;
	char domain[SA_DOMAIN_MAX + 1];
	struct sa_upstream_spec gateway;   /* [upstream] gateway: sip:NAME, or a list in priority order */
	unsigned failover_timeout_ms;    /* an INVITE no gateway answered within this goes to the next */
	unsigned inbound_failover_ms;    /* [registrar] failover_timeout_ms: an inbound INVITE no PBX
	                                  * answered within this goes to the trunk's next registration; 0: none */
	unsigned probe_interval;         /* seconds between OPTIONS probes per gateway; 0: none */
	unsigned down_after;             /* failures in a row that put a gateway down */
	unsigned up_after;               /* probes answered in a row that bring it back */
	struct sa_endpoint dns_servers[SA_MAX_DNS_SERVERS];   /* [dns] servers; none: /etc/resolv.conf */
	unsigned ndns_servers;
	struct sa_net trusted[SA_MAX_TRUSTED];
	unsigned ntrusted;
	struct sa_auth_cfg auth;
	unsigned nonce_ttl;
	char store_path[PATH_MAX];
	uint64_t store_map_size;         /* bytes; 0: the size the store records */
	bool store_credential_index;     /* every credential in memory for the hot path (sa_store_credential_index) */
	struct sa_reg_cfg reg;
	int log_level;
	unsigned log_rate_limit;         /* lines per second from one place in the code; 0: no limit */
	unsigned tcp_idle_timeout;       /* seconds */
	unsigned max_connections;        /* SIP TCP/TLS connections, accepted and opened */
	unsigned max_connections_per_source;   /* accepted from one address (IPv6: one /64) */
	unsigned max_transactions;
	unsigned max_transactions_per_source;      /* in progress from one untrusted address; 0: no limit */
	unsigned max_transactions_per_credential;  /* in progress for one credential's calls; 0: no limit */
	unsigned max_transaction_memory;           /* MiB of messages all transactions may keep */
	unsigned timer_c;                /* seconds an INVITE may ring */
	unsigned max_calls;              /* dialogs tracked at once; more get 503 */
	unsigned workers;                /* [sip] workers: SIP event loops; 0: auto (one per core it may run on) */
	unsigned max_call_age;           /* seconds: calls whose BYE never came are ended */
	unsigned bye_rate;               /* BYEs of ours per second per destination; 0: all at once */
	struct sa_tls_config tls;
	struct sa_abuse_cfg abuse;       /* [abuse]: bans for sources that keep failing */
	/* [api]: HTTP for the REST API, dashboard, /healthz and /metrics; no listen, no HTTP */
	struct sa_endpoint api_listen[SA_MAX_LISTEN];
	unsigned napi_listen;
	struct sa_endpoint metrics_listen[SA_MAX_LISTEN];   /* when set, /metrics is served only here */
	unsigned nmetrics_listen;
	unsigned api_max_body;           /* bytes of request body; more get 413 */
	unsigned api_max_connections;    /* HTTP connections open at once (API and metrics); more are closed */
	unsigned api_max_connections_per_source;   /* ... from one address (IPv6: one /64) */
	unsigned api_min_password_len;   /* for credentials created over the API */
	char api_admin_token_file[PATH_MAX];   /* holds the token for the admin API (GET /v1/upstream); "": none */
	unsigned api_rate_limit;         /* /v1 requests per second per API key; 0: no limit */
	unsigned api_rate_burst;         /* ... in a bucket of this many */
	char api_certificate[PATH_MAX];  /* for https: listeners (PEM chain, leaf first) */
	char api_private_key[PATH_MAX];
	/* [cluster]: fleet mode; database "": a single host (LMDB only) */
	char cluster_database[1024];     /* a libpq connection string */
	char cluster_node[64];           /* this node's name, unique in the fleet */
	char cluster_address[96];        /* how other nodes reach it: udp:ADDRESS:PORT (default: the first udp listen) */
	/* [webhooks]: deliveries of account events (daemon/webhook.c) */
	char webhooks_ca_file[PATH_MAX]; /* CAs trusted for https targets besides the system's; "": none */
	struct sa_cidr webhooks_private[SA_WH_PRIVATE_MAX];   /* loopback/private networks targets may reach */
	unsigned nwebhooks_private;
	unsigned webhooks_queue_max;     /* events waiting for the delivery thread; the oldest go first */
	unsigned webhooks_retry_base;    /* seconds before the first retry; doubled each time, at most an hour */
	unsigned webhooks_timeout;       /* seconds for one attempt: connect, TLS, request, status line */
	unsigned webhooks_auth_failed_window;   /* seconds of auth failures summed in one auth.failed event */
};

/* Parse file into cfg (defaults first). 0, or -1 with one line in err:
 * "FILE:LINE: reason". */
int sa_config_load(struct sa_config *cfg, const char *file, char *err, size_t errlen);

/* SIGHUP: copy into cur every reloadable key whose value next changes, and
 * call restart_needed for each changed key that only a restart applies.
 * Returns how many keys were applied. */
unsigned sa_config_reload(struct sa_config *cur, const struct sa_config *next,
                          void (*restart_needed)(const char *sec, const char *name, void *arg), void *arg);

/* Parse "udp:127.0.0.1:5060" (IPv6 as "udp:[::1]:5060"). 0 or -1. */
int sa_endpoint_parse(const char *s, struct sa_endpoint *ep);
const char *sa_proto_name(enum sa_proto p);   /* "udp", "tcp", "tls" */

/* Is the address in one of the trusted networks? */
int sa_config_trusted(const struct sa_config *cfg, const struct sockaddr *sa);

#endif
