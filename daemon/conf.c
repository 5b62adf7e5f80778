/* conf.c: the INI reader for sipauthd.conf; every key is known, every value checked. */
#include "conf.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stddef.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"

struct parse {
	struct sa_config *cfg;
	const char *file;
	unsigned line;
	const char *sec, *key;          /* the key being read: its errors name it */
	char *err;
	size_t errlen;
};

static int perr(struct parse *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int perr(struct parse *p, const char *fmt, ...)
{
	char msg[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (p->line && p->key && !strstr(msg, p->key))   /* a value's rule: which key it is about */
		snprintf(p->err, p->errlen, "%s:%u: [%s] %s: %s", p->file, p->line, p->sec, p->key, msg);
	else if (p->line)
		snprintf(p->err, p->errlen, "%s:%u: %s", p->file, p->line, msg);
	else   /* a rule about the file as a whole */
		snprintf(p->err, p->errlen, "%s: %s", p->file, msg);
	return -1;
}

const char *sa_proto_name(enum sa_proto pr)
{
	return pr == SA_PROTO_UDP ? "udp" : pr == SA_PROTO_TCP ? "tcp" : "tls";
}

static int addr_parse(const char *host, uint16_t port, struct sockaddr_storage *ss, socklen_t *len)
{
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
		*len = sizeof(*s4);
		return 0;
	}
	if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(port);
		*len = sizeof(*s6);
		return 0;
	}
	return -1;
}

int sa_endpoint_parse(const char *s, struct sa_endpoint *ep)
{
	char buf[128];
	memset(ep, 0, sizeof(*ep));
	if (snprintf(buf, sizeof(buf), "%s", s) >= (int)sizeof(buf))
		return -1;
	char *colon = strchr(buf, ':');
	if (!colon)
		return -1;
	*colon = '\0';
	if (sa_proto_parse(buf, &ep->proto) < 0)
		return -1;
	char *host = colon + 1, *portp;
	if (*host == '[') {
		char *rb = strchr(host, ']');
		if (!rb || rb[1] != ':')
			return -1;
		*rb = '\0';
		host++;
		portp = rb + 2;
	} else {
		portp = strrchr(host, ':');
		if (!portp)
			return -1;
		*portp++ = '\0';
	}
	char *end;
	long port = strtol(portp, &end, 10);
	if (*end || port < 1 || port > 65535 || strlen(host) >= sizeof(ep->host))
		return -1;
	snprintf(ep->host, sizeof(ep->host), "%s", host);
	ep->port = (uint16_t)port;
	return addr_parse(host, ep->port, &ep->ss, &ep->sslen);
}

static char *trim(char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	char *e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

/* Split a comma list in place; calls fn for each trimmed non-empty item. */
static int each_item(struct parse *p, char *v, int (*fn)(struct parse *, const char *))
{
	int n = 0;
	for (char *save = NULL, *tok = strtok_r(v, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *t = trim(tok);
		if (!*t)
			continue;
		if (fn(p, t) < 0)
			return -1;
		n++;
	}
	return n == 0 ? perr(p, "empty list") : 0;
}

/* The port of a listen address, and whether it is the wildcard (0.0.0.0, ::). */
static uint16_t ep_port(const struct sa_endpoint *e, bool *any)
{
	if (e->ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&e->ss;
		*any = IN6_IS_ADDR_UNSPECIFIED(&s6->sin6_addr);
		return ntohs(s6->sin6_port);
	}
	const struct sockaddr_in *s4 = (const struct sockaddr_in *)&e->ss;
	*any = s4->sin_addr.s_addr == htonl(INADDR_ANY);
	return ntohs(s4->sin_port);
}

/* A TCP and a TLS listener on one port would be one socket's port twice:
 * with several workers (SO_REUSEPORT) both bind, and the kernel deals each
 * connection to either, so some TLS handshakes reach the TCP listener. */
static bool streams_collide(const struct sa_endpoint *a, const struct sa_endpoint *b)
{
	bool any_a, any_b;
	if (a->proto == SA_PROTO_UDP || b->proto == SA_PROTO_UDP || a->proto == b->proto ||
	    ep_port(a, &any_a) != ep_port(b, &any_b))
		return false;
	return any_a || any_b ||
	       (a->sslen == b->sslen && memcmp(&a->ss, &b->ss, a->sslen) == 0);
}

static int add_listen(struct parse *p, const char *item)
{
	struct sa_config *c = p->cfg;
	if (c->nlisten == SA_MAX_LISTEN)
		return perr(p, "too many listen entries (at most %d)", SA_MAX_LISTEN);
	if (sa_endpoint_parse(item, &c->listen[c->nlisten]) < 0)
		return perr(p, "bad listen entry '%s' (want udp|tcp|tls:ADDRESS:PORT)", item);
	const struct sa_endpoint *e = &c->listen[c->nlisten];
	for (unsigned i = 0; i < c->nlisten; i++)   /* bound twice, it would share its own port */
		if (c->listen[i].proto == e->proto && c->listen[i].sslen == e->sslen &&
		    memcmp(&c->listen[i].ss, &e->ss, e->sslen) == 0)
			return perr(p, "listen entry '%s' given twice", item);
		else if (streams_collide(&c->listen[i], e))
			return perr(p, "listen entry '%s' takes the port of a %s listener: tcp and tls need ports of their own",
			            item, sa_proto_name(c->listen[i].proto));
	c->nlisten++;
	return 0;
}

/* A DNS server: "127.0.0.53:53" or "[::1]:53". */
static int add_dns_server(struct parse *p, const char *item)
{
	struct sa_config *c = p->cfg;
	char buf[128];
	if (c->ndns_servers == SA_MAX_DNS_SERVERS)
		return perr(p, "too many DNS servers (at most %d)", SA_MAX_DNS_SERVERS);
	if (snprintf(buf, sizeof(buf), "udp:%s", item) >= (int)sizeof(buf) ||
	    sa_endpoint_parse(buf, &c->dns_servers[c->ndns_servers]) < 0)
		return perr(p, "bad DNS server '%s' (want ADDRESS:PORT, IPv6 as [ADDRESS]:PORT)", item);
	c->ndns_servers++;
	return 0;
}

/* An HTTP address: "127.0.0.1:8080" or "[::1]:8080", "http:" before it
 * allowed; "https:127.0.0.1:8443" serves HTTPS (the endpoint's proto is
 * then SA_PROTO_TLS). */
static int add_http(struct parse *p, const char *item, struct sa_endpoint *eps, unsigned *n)
{
	const char *proto = "tcp";
	char buf[128];
	if (*n == SA_MAX_LISTEN)
		return perr(p, "too many HTTP addresses (at most %d)", SA_MAX_LISTEN);
	if (strncasecmp(item, "https:", 6) == 0) {
		proto = "tls";
		item += 6;
	} else if (strncasecmp(item, "http:", 5) == 0) {
		item += 5;
	}
	if (snprintf(buf, sizeof(buf), "%s:%s", proto, item) >= (int)sizeof(buf) || sa_endpoint_parse(buf, &eps[*n]) < 0)
		return perr(p, "bad HTTP address '%s' (want [http:|https:]ADDRESS:PORT, IPv6 as [ADDRESS]:PORT)", item);
	(*n)++;
	return 0;
}

static int add_api_listen(struct parse *p, const char *item)
{
	return add_http(p, item, p->cfg->api_listen, &p->cfg->napi_listen);
}

static int add_metrics_listen(struct parse *p, const char *item)
{
	return add_http(p, item, p->cfg->metrics_listen, &p->cfg->nmetrics_listen);
}

/* [webhooks] private_targets: a loopback or private network webhook URLs may reach. */
static int add_webhook_private(struct parse *p, const char *item)
{
	struct sa_config *c = p->cfg;
	if (c->nwebhooks_private == SA_WH_PRIVATE_MAX)
		return perr(p, "too many private_targets networks (at most %d)", SA_WH_PRIVATE_MAX);
	if (sa_cidr_parse(item, &c->webhooks_private[c->nwebhooks_private]) != 0)
		return perr(p, "bad private_targets network '%s' (want ADDRESS[/PREFIX])", item);
	c->nwebhooks_private++;
	return 0;
}

static int add_trusted(struct parse *p, const char *item)
{
	struct sa_config *c = p->cfg;
	char buf[SA_UPSTREAM_HOST_MAX + 8];
	if (c->ntrusted == SA_MAX_TRUSTED)
		return perr(p, "too many trusted networks (at most %d)", SA_MAX_TRUSTED);
	/* cut short, "10.0.0.0/000...08" would read as /0: trust everyone */
	if (snprintf(buf, sizeof(buf), "%s", item) >= (int)sizeof(buf))
		return perr(p, "bad trusted network '%s' (want ADDRESS[/PREFIX])", item);
	struct sa_net *n = &c->trusted[c->ntrusted];
	memset(n, 0, sizeof(*n));   /* a key set twice: nothing of the first value stays */
	char *slash = strchr(buf, '/');
	if (slash)
		*slash = '\0';
	if (inet_pton(AF_INET, buf, n->addr) == 1) {
		n->family = AF_INET;
		n->prefix = 32;
	} else if (inet_pton(AF_INET6, buf, n->addr) == 1) {
		n->family = AF_INET6;
		n->prefix = 128;
	} else if (!slash && sa_upstream_host_name_ok(buf) && strchr(buf, '.')) {
		snprintf(n->name, sizeof(n->name), "%.*s", SA_UPSTREAM_HOST_MAX, buf);   /* every address it resolves to */
		c->ntrusted++;
		return 0;
	} else {
		return perr(p, "bad trusted network '%s' (want ADDRESS[/PREFIX] or a host name)", item);
	}
	if (slash) {
		char *end;
		long pre = strtol(slash + 1, &end, 10);
		if (*end || pre < 0 || pre > (long)n->prefix)
			return perr(p, "bad prefix length in '%s'", item);
		n->prefix = (unsigned)pre;
	}
	c->ntrusted++;
	return 0;
}

static int add_algorithm(struct parse *p, const char *item)
{
	struct sa_auth_cfg *a = &p->cfg->auth;
	enum sa_digest_alg alg;
	bool sess;
	if (sa_digest_alg_parse(item, strlen(item), &alg, &sess) < 0 || sess)
		return perr(p, "unknown algorithm '%s' (want SHA-512-256, SHA-256, MD5)", item);
	for (unsigned i = 0; i < a->nalgs; i++)
		if (a->algs[i] == alg)
			return perr(p, "algorithm '%s' listed twice", item);
	a->algs[a->nalgs++] = alg;
	return 0;
}

static int set_uint(struct parse *p, const char *v, unsigned lo, unsigned hi, unsigned *out)
{
	char *end;
	errno = 0;
	unsigned long n = strtoul(v, &end, 10);
	if (errno || end == v || *end || n < lo || n > hi || v[0] == '-')
		return perr(p, "'%s' is not a number from %u to %u", v, lo, hi);
	*out = (unsigned)n;
	return 0;
}

static int set_map_size(struct parse *p, const char *v, uint64_t *out)
{
	if (sa_store_size_parse(v, out) != SA_STORE_OK)
		return perr(p, "'%s' is not a map size from 2M to 1T (bytes, or a number with K, M, G or T)", v);
	return 0;
}

static int set_str(struct parse *p, const char *v, char *out, size_t outlen)
{
	if (!*v || strlen(v) >= outlen)
		return perr(p, "value empty or too long");
	memcpy(out, v, strlen(v) + 1);
	return 0;
}

static int set_domain(struct parse *p, const char *v)
{
	for (const char *s = v; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '.' && *s != '-')
			return perr(p, "bad domain '%s'", v);
	return set_str(p, v, p->cfg->domain, sizeof(p->cfg->domain));
}

static int set_gateway(struct parse *p, const char *v)
{
	char why[512];
	if (sa_upstream_spec_parse(&p->cfg->gateway, v, why, sizeof(why)) < 0)
		return perr(p, "%s", why);
	return 0;
}


static int set_tls_version(struct parse *p, const char *v)
{
	if (strcmp(v, "TLSv1.2") == 0)
		p->cfg->tls.min_version = 0x0303;
	else if (strcmp(v, "TLSv1.3") == 0)
		p->cfg->tls.min_version = 0x0304;
	else
		return perr(p, "min_version '%s' is not allowed (want TLSv1.2 or TLSv1.3)", v);
	return 0;
}

static int set_log_level(struct parse *p, const char *v)
{
	int l = sa_log_level_parse(v);
	if (l < 0)
		return perr(p, "unknown log level '%s' (want error, warning, info, debug)", v);
	p->cfg->log_level = l;
	return 0;
}

static int set_domain_key(struct parse *p, char *v)
{
	return set_domain(p, v);
}

static int set_gateway_key(struct parse *p, char *v)
{
	return set_gateway(p, v);
}

static int set_tls_version_key(struct parse *p, char *v)
{
	return set_tls_version(p, v);
}

static int set_log_level_key(struct parse *p, char *v)
{
	return set_log_level(p, v);
}

static int set_map_size_key(struct parse *p, char *v)
{
	return set_map_size(p, v, &p->cfg->store_map_size);
}

/* [store] credential_index: on or off. */
static int set_credential_index_key(struct parse *p, char *v)
{
	if (strcmp(v, "on") != 0 && strcmp(v, "off") != 0)
		return perr(p, "credential_index must be on or off, not '%s'", v);
	p->cfg->store_credential_index = strcmp(v, "on") == 0;
	return 0;
}

/* [sip] workers: a number of event loops, or auto (one per online core, decided at start). */
static int set_workers_key(struct parse *p, char *v)
{
	if (strcmp(v, "auto") == 0) {
		p->cfg->workers = 0;
		return 0;
	}
	char *end;
	errno = 0;
	unsigned long n = strtoul(v, &end, 10);
	if (!isdigit((unsigned char)v[0]) || *end || errno || n < 1 || n > SA_WORKERS_MAX)
		return perr(p, "[sip] workers must be auto or 1 to %d", SA_WORKERS_MAX);
	p->cfg->workers = (unsigned)n;
	return 0;
}

/* A node's name: 1..63 of [A-Za-z0-9._-], as it appears in logs and the nodes table. */
static int set_node_key(struct parse *p, char *v)
{
	size_t n = strlen(v);
	if (n == 0 || n >= sizeof(p->cfg->cluster_node) || strspn(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	                                                         "0123456789._-") != n)
		return perr(p, "[cluster] node must be 1 to 63 of letters, digits, '.', '_' and '-'");
	memcpy(p->cfg->cluster_node, v, n + 1);
	return 0;
}

/* udp:ADDRESS:PORT, numeric, as [sip] listen writes it. */
static int set_node_address_key(struct parse *p, char *v)
{
	struct sa_endpoint ep;
	if (sa_endpoint_parse(v, &ep) < 0 || ep.proto != SA_PROTO_UDP || strlen(v) >= sizeof(p->cfg->cluster_address))
		return perr(p, "[cluster] address must be udp:ADDRESS:PORT");
	memcpy(p->cfg->cluster_address, v, strlen(v) + 1);
	return 0;
}

/* Every key: where it lives, how it is read, its limits, and whether SIGHUP
 * applies it (the others need a restart: sockets, the store, sized tables). */
enum key_kind { KEY_UINT, KEY_STR, KEY_LIST, KEY_FN };

struct key {
	const char *sec, *name;
	enum key_kind kind;
	size_t off, size;          /* the field it sets */
	size_t count_off;          /* KEY_LIST: its count, reset before the items are read */
	unsigned lo, hi;           /* KEY_UINT */
	int (*item)(struct parse *, const char *);   /* KEY_LIST: one item */
	int (*fn)(struct parse *, char *);           /* KEY_FN: the whole value */
	bool reload;
};

#define FIELD(f) offsetof(struct sa_config, f), sizeof(((struct sa_config *)0)->f)
#define UINT(s, n, f, lo, hi, r) { s, n, KEY_UINT, FIELD(f), 0, lo, hi, NULL, NULL, r }
#define STR(s, n, f, r) { s, n, KEY_STR, FIELD(f), 0, 0, 0, NULL, NULL, r }
#define LIST(s, n, f, cnt, item, r) { s, n, KEY_LIST, FIELD(f), offsetof(struct sa_config, cnt), 0, 0, item, NULL, r }
#define FN(s, n, f, fn, r) { s, n, KEY_FN, FIELD(f), 0, 0, 0, NULL, fn, r }

static const struct key keys[] = {
	LIST("sip", "listen", listen, nlisten, add_listen, false),
	FN("sip", "domain", domain, set_domain_key, false),
	FN("sip", "workers", workers, set_workers_key, false),
	FN("upstream", "gateway", gateway, set_gateway_key, false),
	LIST("upstream", "trusted", trusted, ntrusted, add_trusted, false),
	UINT("upstream", "failover_timeout_ms", failover_timeout_ms, 100, 32000, true),
	UINT("upstream", "probe_interval", probe_interval, 0, 3600, false),
	UINT("upstream", "down_after", down_after, 1, 100, false),
	UINT("upstream", "up_after", up_after, 1, 100, false),
	LIST("dns", "servers", dns_servers, ndns_servers, add_dns_server, false),
	STR("upstream", "tls_ca", tls.gateway_ca, true),
	STR("upstream", "tls_server_name", tls.gateway_name, true),
	LIST("auth", "algorithms", auth.algs, auth.nalgs, add_algorithm, false),
	UINT("auth", "nonce_ttl", nonce_ttl, 5, 3600, false),
	STR("store", "path", store_path, false),
	FN("store", "map_size", store_map_size, set_map_size_key, false),
	FN("store", "credential_index", store_credential_index, set_credential_index_key, false),
	UINT("registrar", "min_expires", reg.min_expires, 1, 86400, true),
	UINT("registrar", "max_expires", reg.max_expires, 1, 604800, true),
	UINT("registrar", "default_expires", reg.default_expires, 1, 604800, true),
	UINT("registrar", "max_contacts", reg.max_contacts, 0, 1000, true),
	UINT("registrar", "failover_timeout_ms", inbound_failover_ms, 0, 32000, true),
	UINT("proxy", "timer_c", timer_c, 181, 3600, true),
	UINT("proxy", "max_transactions", max_transactions, 16, 10000000, false),
	UINT("proxy", "max_transactions_per_source", max_transactions_per_source, 0, 10000000, true),
	UINT("proxy", "max_transactions_per_credential", max_transactions_per_credential, 0, 10000000, true),
	UINT("proxy", "max_transaction_memory", max_transaction_memory, 1, 65536, true),
	UINT("proxy", "max_calls", max_calls, 1, 10000000, true),
	UINT("proxy", "max_call_age", max_call_age, 5, 604800, true),
	UINT("proxy", "bye_rate", bye_rate, 0, 1000000, true),
	UINT("limits", "tcp_idle_timeout", tcp_idle_timeout, 5, 86400, true),
	UINT("limits", "max_connections", max_connections, 1, 1000000, false),
	UINT("limits", "max_connections_per_source", max_connections_per_source, 1, 1000000, true),
	FN("log", "level", log_level, set_log_level_key, true),
	UINT("log", "rate_limit", log_rate_limit, 0, 1000000, true),
	UINT("abuse", "max_failures", abuse.max_failures, 0, 100000, true),
	UINT("abuse", "window", abuse.window, 1, 86400, true),
	UINT("abuse", "ban_time", abuse.ban_time, 1, 604800, true),
	STR("tls", "certificate", tls.certificate, true),
	STR("tls", "private_key", tls.private_key, true),
	FN("tls", "min_version", tls.min_version, set_tls_version_key, true),
	STR("tls", "ciphers", tls.ciphers, true),
	STR("tls", "client_ca", tls.client_ca, true),
	UINT("tls", "handshake_timeout", tls.handshake_timeout, 1, 120, true),
	UINT("tls", "max_handshakes", tls.max_handshakes, 1, 100000, true),
	UINT("tls", "max_handshakes_per_source", tls.max_handshakes_per_source, 1, 100000, true),
	LIST("api", "listen", api_listen, napi_listen, add_api_listen, false),
	LIST("api", "metrics_listen", metrics_listen, nmetrics_listen, add_metrics_listen, false),
	UINT("api", "max_body", api_max_body, 256, 1048576, false),
	UINT("api", "max_connections", api_max_connections, 1, 1000000, false),
	UINT("api", "max_connections_per_source", api_max_connections_per_source, 1, 1000000, true),
	STR("api", "admin_token_file", api_admin_token_file, false),
	UINT("api", "min_password_length", api_min_password_len, SA_PASSWORD_MIN, SA_PASSWORD_MAX, false),
	UINT("api", "rate_limit", api_rate_limit, 0, 1000000, true),
	UINT("api", "rate_burst", api_rate_burst, 1, 1000000, true),
	STR("api", "certificate", api_certificate, true),
	STR("api", "private_key", api_private_key, true),
	STR("cluster", "database", cluster_database, false),
	FN("cluster", "node", cluster_node, set_node_key, false),
	FN("cluster", "address", cluster_address, set_node_address_key, false),
	STR("webhooks", "ca_file", webhooks_ca_file, false),
	LIST("webhooks", "private_targets", webhooks_private, nwebhooks_private, add_webhook_private, false),
	UINT("webhooks", "queue_max", webhooks_queue_max, 1, 1000000, false),
	UINT("webhooks", "retry_base", webhooks_retry_base, 1, 3600, false),
	UINT("webhooks", "timeout", webhooks_timeout, 1, 60, false),
	UINT("webhooks", "auth_failed_window", webhooks_auth_failed_window, 1, 3600, false),
};

static void *field(struct sa_config *c, size_t off)
{
	return (char *)c + off;
}

/* One key: found in the table, read as its kind says. */
static int set_key(struct parse *p, const char *sec, const char *k, char *v)
{
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		const struct key *key = &keys[i];
		if (strcmp(sec, key->sec) != 0 || strcmp(k, key->name) != 0)
			continue;
		p->sec = key->sec;
		p->key = key->name;
		int rc = -1;
		switch (key->kind) {
		case KEY_UINT:
			rc = set_uint(p, v, key->lo, key->hi, field(p->cfg, key->off));
			break;
		case KEY_STR:
			rc = set_str(p, v, field(p->cfg, key->off), key->size);
			break;
		case KEY_LIST:
			*(unsigned *)field(p->cfg, key->count_off) = 0;
			rc = each_item(p, v, key->item);
			break;
		case KEY_FN:
			rc = key->fn(p, v);
			break;
		}
		p->key = NULL;
		return rc;
	}
	return perr(p, "unknown key '%s' in section [%s]", k, sec);
}

/* Does a key's value differ between two configurations? (Both were built
 * from zeroed memory, so padding compares equal.) */
static bool key_differs(const struct key *key, const struct sa_config *a, const struct sa_config *b)
{
	if (memcmp((const char *)a + key->off, (const char *)b + key->off, key->size) != 0)
		return true;
	return key->kind == KEY_LIST &&
	       memcmp((const char *)a + key->count_off, (const char *)b + key->count_off, sizeof(unsigned)) != 0;
}

unsigned sa_config_reload(struct sa_config *cur, const struct sa_config *next,
                          void (*restart_needed)(const char *sec, const char *name, void *arg), void *arg)
{
	unsigned applied = 0;
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		const struct key *key = &keys[i];
		if (!key_differs(key, cur, next))
			continue;
		if (!key->reload) {
			restart_needed(key->sec, key->name, arg);
			continue;
		}
		memcpy((char *)cur + key->off, (const char *)next + key->off, key->size);
		applied++;
	}
	return applied;
}

static void set_defaults(struct sa_config *c)
{
	memset(c, 0, sizeof(*c));
	snprintf(c->domain, sizeof(c->domain), "%s", SA_DEFAULT_DOMAIN);
	snprintf(c->store_path, sizeof(c->store_path), "/var/lib/sipauthd");
	c->store_credential_index = true;
	c->auth.algs[0] = SA_ALG_SHA256;
	c->auth.algs[1] = SA_ALG_MD5;
	c->auth.nalgs = 2;
	c->nonce_ttl = 30;
	c->reg = (struct sa_reg_cfg){ .min_expires = 60, .max_expires = 3600, .default_expires = 3600,
	                              .max_contacts = 10 };
	c->log_level = SA_LOG_INFO;
	c->log_rate_limit = 20;
	c->tcp_idle_timeout = 300;
	c->max_connections = 4096;
	c->max_connections_per_source = 64;
	c->max_transactions = 65536;
	c->max_transactions_per_source = 1000;
	c->max_transactions_per_credential = 1000;
	c->max_transaction_memory = 128;
	c->timer_c = 181;
	c->failover_timeout_ms = 2000;
	c->inbound_failover_ms = 2000;
	c->down_after = 3;
	c->up_after = 1;
	c->max_calls = 10000;
	c->abuse = (struct sa_abuse_cfg){ .max_failures = 10, .window = 60, .ban_time = 600 };
	c->tls.min_version = 0x0303;
	snprintf(c->tls.ciphers, sizeof(c->tls.ciphers), "%s", SA_TLS_DEFAULT_CIPHERS);
	c->tls.handshake_timeout = 10;
	c->tls.max_handshakes = 256;
	c->tls.max_handshakes_per_source = 16;
	c->max_call_age = 14400;
	c->bye_rate = 2500;
	c->api_max_body = SA_HTTP_MAX_BODY;
	c->api_max_connections = SA_HTTP_MAX_CONNECTIONS;
	c->api_max_connections_per_source = SA_HTTP_MAX_CONNECTIONS_PER_SOURCE;
	c->api_min_password_len = SA_PASSWORD_MIN;
	c->api_rate_limit = SA_HTTP_RATE_LIMIT;
	c->api_rate_burst = SA_HTTP_RATE_BURST;
	c->webhooks_queue_max = 10000;
	c->webhooks_retry_base = 30;
	c->webhooks_timeout = 10;
	c->webhooks_auth_failed_window = 60;
}

/* Rules between keys, checked once the whole file is read. */
static int check_whole(struct parse *p)
{
	struct sa_config *c = p->cfg;
	p->line = 0;
	if (c->nlisten == 0)
		return perr(p, "[sip] listen is required");
	if (c->gateway.n == 0)
		return perr(p, "[upstream] gateway is required");
	for (unsigned i = 0; i < c->nlisten; i++)
		if (c->listen[i].proto == SA_PROTO_TLS && (!c->tls.certificate[0] || !c->tls.private_key[0]))
			return perr(p, "[sip] listen has a tls listener: [tls] certificate and private_key are required");
	bool https = false;
	for (unsigned i = 0; i < c->napi_listen; i++)
		https |= c->api_listen[i].proto == SA_PROTO_TLS;
	for (unsigned i = 0; i < c->nmetrics_listen; i++)
		https |= c->metrics_listen[i].proto == SA_PROTO_TLS;
	if (https && (!c->api_certificate[0] || !c->api_private_key[0]))
		return perr(p, "[api] has an https: address: [api] certificate and private_key are required");
	for (unsigned i = 0; i < c->gateway.n; i++)
		if (c->gateway.e[i].proto == SA_PROTO_TLS && !c->tls.gateway_name[0])
			return perr(p, "[upstream] gateway over tls needs tls_server_name (the name its certificate must carry)");
	if (c->cluster_database[0] && !c->cluster_node[0])
		return perr(p, "[cluster] database is set: [cluster] node (this host's unique name) is required");
	if (!c->cluster_database[0] && (c->cluster_node[0] || c->cluster_address[0]))
		return perr(p, "[cluster] needs database (a libpq connection string)");
	if (c->inbound_failover_ms > 0 && c->inbound_failover_ms < 100)
		return perr(p, "[registrar] failover_timeout_ms: 0 (no failover) or 100 to 32000");
	if (c->reg.min_expires > c->reg.max_expires)
		return perr(p, "[registrar] min_expires is above max_expires");
	if (c->reg.default_expires < c->reg.min_expires || c->reg.default_expires > c->reg.max_expires)
		return perr(p, "[registrar] default_expires must lie between min_expires and max_expires");
	return 0;
}

static int parse_line(struct parse *p, char *line, char *sec, size_t seclen)
{
	char *s = trim(line);
	if (!*s || *s == '#' || *s == ';')
		return 0;
	if (*s == '[') {
		char *e = strchr(s, ']');
		if (!e || trim(e + 1)[0])
			return perr(p, "bad section header");
		*e = '\0';
		const char *known[] = { "sip", "upstream", "auth", "store", "registrar", "proxy", "limits", "log", "api", "tls", "abuse", "dns",
		                        "webhooks", "cluster" };
		for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
			if (strcmp(s + 1, known[i]) == 0) {
				snprintf(sec, seclen, "%s", s + 1);
				return 0;
			}
		return perr(p, "unknown section [%s]", s + 1);
	}
	char *eq = strchr(s, '=');
	if (!eq)
		return perr(p, "expected key = value");
	if (!*sec)
		return perr(p, "key outside a section");
	*eq = '\0';
	char *v = eq + 1, *hash = strstr(v, " #");
	if (hash)
		*hash = '\0';
	return set_key(p, sec, trim(s), trim(v));
}

/* Longest line, newline not counted. */
#define CONF_LINE_MAX 4096

/* A line is refused rather than cut: a line longer than the limit would be
 * read as two (its value cut short, the rest taken for a line of its own)
 * and a NUL byte would end it early, both silently. */
static int read_line(struct parse *p, const char *line, ssize_t n)
{
	if (memchr(line, '\0', (size_t)n))
		return perr(p, "NUL byte in line");
	if (n - (line[n - 1] == '\n') > CONF_LINE_MAX)
		return perr(p, "line longer than %d bytes", CONF_LINE_MAX);
	return 0;
}

int sa_config_load(struct sa_config *cfg, const char *file, char *err, size_t errlen)
{
	struct parse p = { .cfg = cfg, .file = file, .err = err, .errlen = errlen };
	char *line = NULL, sec[32] = "";
	size_t cap = 0;
	ssize_t n;
	int rc = 0;

	set_defaults(cfg);
	snprintf(cfg->path, sizeof(cfg->path), "%s", file);
	FILE *f = fopen(file, "r");
	if (!f) {
		snprintf(err, errlen, "%s: %s", file, strerror(errno));
		return -1;
	}
	while (rc == 0) {
		errno = 0;
		if ((n = getline(&line, &cap, f)) < 0) {
			/* end of file, or a read or allocation failure that must not pass for one */
			if (errno != 0 || ferror(f))
				rc = perr(&p, "cannot read: %s", strerror(errno ? errno : EIO));
			break;
		}
		p.line++;
		rc = read_line(&p, line, n);
		if (rc == 0)
			rc = parse_line(&p, line, sec, sizeof(sec));
	}
	free(line);
	fclose(f);
	return rc < 0 ? -1 : check_whole(&p);
}

static int net_match(const struct sa_net *n, const unsigned char *a)
{
	unsigned full = n->prefix / 8, rest = n->prefix % 8;
	if (memcmp(n->addr, a, full) != 0)
		return 0;
	return rest == 0 || ((n->addr[full] ^ a[full]) & (0xff << (8 - rest))) == 0;
}

int sa_config_trusted(const struct sa_config *cfg, const struct sockaddr *sa)
{
	const unsigned char *a = sa->sa_family == AF_INET
		? (const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr
		: (const unsigned char *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
	for (unsigned i = 0; i < cfg->ntrusted; i++)
		if (cfg->trusted[i].family == sa->sa_family && net_match(&cfg->trusted[i], a))
			return 1;
	return 0;
}
