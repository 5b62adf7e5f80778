/* conf.h: sipauthd.conf (INI): parsed and validated as a whole, refused with file:line:reason. */
#ifndef SA_CONFIG_H
#define SA_CONFIG_H

#include <limits.h>
#include <netinet/in.h>
#include <stdint.h>

#include "auth.h"
#include "registrar.h"

#define SA_MAX_LISTEN 8
#define SA_MAX_TRUSTED 32

enum sa_proto { SA_PROTO_UDP = 0, SA_PROTO_TCP, SA_PROTO_TLS };

struct sa_endpoint {
	enum sa_proto proto;
	char host[64];                 /* numeric address as written */
	uint16_t port;
	struct sockaddr_storage ss;
	socklen_t sslen;
};

struct sa_net {
	int family;
	unsigned char addr[16];
	unsigned prefix;
};

struct sa_config {
	char path[PATH_MAX];
	struct sa_endpoint listen[SA_MAX_LISTEN];
	unsigned nlisten;
	char domain[SA_DOMAIN_MAX + 1];
	struct sa_endpoint gateway;
	struct sa_net trusted[SA_MAX_TRUSTED];
	unsigned ntrusted;
	struct sa_auth_cfg auth;
	unsigned nonce_ttl;
	char store_path[PATH_MAX];
	struct sa_reg_cfg reg;
	int log_level;
	unsigned tcp_idle_timeout;       /* seconds */
	unsigned max_connections;
	unsigned max_transactions;
	unsigned timer_c;                /* seconds an INVITE may ring */
};

/* Parse file into cfg (defaults first). 0, or -1 with one line in err:
 * "FILE:LINE: reason". */
int sa_config_load(struct sa_config *cfg, const char *file, char *err, size_t errlen);

/* Parse "udp:127.0.0.1:5060" (IPv6 as "udp:[::1]:5060"). 0 or -1. */
int sa_endpoint_parse(const char *s, struct sa_endpoint *ep);
const char *sa_proto_name(enum sa_proto p);   /* "udp", "tcp", "tls" */

/* Is the address in one of the trusted networks? */
int sa_config_trusted(const struct sa_config *cfg, const struct sockaddr *sa);

#endif
