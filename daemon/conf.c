/* conf.c: the INI reader for sipauthd.conf; every key is known, every value checked. */
#include "conf.h"

#include <arpa/inet.h>
#include <ctype.h>
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
	if (p->line)
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
	if (strcasecmp(buf, "udp") == 0)
		ep->proto = SA_PROTO_UDP;
	else if (strcasecmp(buf, "tcp") == 0)
		ep->proto = SA_PROTO_TCP;
	else if (strcasecmp(buf, "tls") == 0)
		ep->proto = SA_PROTO_TLS;
	else
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

static int add_listen(struct parse *p, const char *item)
{
	struct sa_config *c = p->cfg;
	if (c->nlisten == SA_MAX_LISTEN)
		return perr(p, "too many listen entries (at most %d)", SA_MAX_LISTEN);
	if (sa_endpoint_parse(item, &c->listen[c->nlisten]) < 0)
		return perr(p, "bad listen entry '%s' (want udp|tcp|tls:ADDRESS:PORT)", item);
	c->nlisten++;
	return 0;
}

/* An HTTP address: "127.0.0.1:8080" or "[::1]:8080". */
static int add_http(struct parse *p, const char *item, struct sa_endpoint *eps, unsigned *n)
{
	char buf[128];
	if (*n == SA_MAX_LISTEN)
		return perr(p, "too many HTTP addresses (at most %d)", SA_MAX_LISTEN);
	if (snprintf(buf, sizeof(buf), "tcp:%s", item) >= (int)sizeof(buf) || sa_endpoint_parse(buf, &eps[*n]) < 0)
		return perr(p, "bad HTTP address '%s' (want ADDRESS:PORT, IPv6 as [ADDRESS]:PORT)", item);
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

static int add_trusted(struct parse *p, const char *item)
{
	struct sa_config *c = p->cfg;
	char buf[64];
	if (c->ntrusted == SA_MAX_TRUSTED)
		return perr(p, "too many trusted networks (at most %d)", SA_MAX_TRUSTED);
	/* cut short, "10.0.0.0/000...08" would read as /0: trust everyone */
	if (snprintf(buf, sizeof(buf), "%s", item) >= (int)sizeof(buf))
		return perr(p, "bad trusted network '%s' (want ADDRESS[/PREFIX])", item);
	struct sa_net *n = &c->trusted[c->ntrusted];
	char *slash = strchr(buf, '/');
	if (slash)
		*slash = '\0';
	if (inet_pton(AF_INET, buf, n->addr) == 1) {
		n->family = AF_INET;
		n->prefix = 32;
	} else if (inet_pton(AF_INET6, buf, n->addr) == 1) {
		n->family = AF_INET6;
		n->prefix = 128;
	} else {
		return perr(p, "bad trusted network '%s' (want ADDRESS[/PREFIX])", item);
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
		return perr(p, "'%s' is not a map size from 1M to 1T (bytes, or a number with K, M, G or T)", v);
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
	if (sa_endpoint_parse(v, &p->cfg->gateway) < 0)
		return perr(p, "bad gateway '%s' (want udp|tcp:ADDRESS:PORT)", v);
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

/* One key: dispatch on section and name. */
static int set_key(struct parse *p, const char *sec, const char *k, char *v)
{
	struct sa_config *c = p->cfg;
#define IS(s, n) (strcmp(sec, s) == 0 && strcmp(k, n) == 0)
	if (IS("sip", "listen")) { c->nlisten = 0; return each_item(p, v, add_listen); }
	if (IS("sip", "domain")) return set_domain(p, v);
	if (IS("upstream", "gateway")) return set_gateway(p, v);
	if (IS("upstream", "trusted")) { c->ntrusted = 0; return each_item(p, v, add_trusted); }
	if (IS("auth", "algorithms")) { c->auth.nalgs = 0; return each_item(p, v, add_algorithm); }
	if (IS("auth", "nonce_ttl")) return set_uint(p, v, 5, 3600, &c->nonce_ttl);
	if (IS("store", "path")) return set_str(p, v, c->store_path, sizeof(c->store_path));
	if (IS("store", "map_size")) return set_map_size(p, v, &c->store_map_size);
	if (IS("registrar", "min_expires")) return set_uint(p, v, 1, 86400, &c->reg.min_expires);
	if (IS("registrar", "max_expires")) return set_uint(p, v, 1, 604800, &c->reg.max_expires);
	if (IS("registrar", "default_expires")) return set_uint(p, v, 1, 604800, &c->reg.default_expires);
	if (IS("registrar", "max_contacts")) return set_uint(p, v, 0, 1000, &c->reg.max_contacts);
	if (IS("proxy", "timer_c")) return set_uint(p, v, 181, 3600, &c->timer_c);
	if (IS("proxy", "max_transactions")) return set_uint(p, v, 16, 10000000, &c->max_transactions);
	if (IS("proxy", "max_transactions_per_source"))
		return set_uint(p, v, 0, 10000000, &c->max_transactions_per_source);
	if (IS("proxy", "max_transactions_per_credential"))
		return set_uint(p, v, 0, 10000000, &c->max_transactions_per_credential);
	if (IS("proxy", "max_transaction_memory"))
		return set_uint(p, v, 1, 65536, &c->max_transaction_memory);
	if (IS("proxy", "max_calls")) return set_uint(p, v, 1, 10000000, &c->max_calls);
	if (IS("proxy", "max_call_age")) return set_uint(p, v, 5, 604800, &c->max_call_age);
	if (IS("limits", "tcp_idle_timeout")) return set_uint(p, v, 5, 86400, &c->tcp_idle_timeout);
	if (IS("limits", "max_connections")) return set_uint(p, v, 1, 1000000, &c->max_connections);
	if (IS("log", "level")) return set_log_level(p, v);
	if (IS("abuse", "max_failures")) return set_uint(p, v, 0, 100000, &c->abuse.max_failures);
	if (IS("abuse", "window")) return set_uint(p, v, 1, 86400, &c->abuse.window);
	if (IS("abuse", "ban_time")) return set_uint(p, v, 1, 604800, &c->abuse.ban_time);
	if (IS("tls", "certificate")) return set_str(p, v, c->tls.certificate, sizeof(c->tls.certificate));
	if (IS("tls", "private_key")) return set_str(p, v, c->tls.private_key, sizeof(c->tls.private_key));
	if (IS("tls", "min_version")) return set_tls_version(p, v);
	if (IS("tls", "ciphers")) return set_str(p, v, c->tls.ciphers, sizeof(c->tls.ciphers));
	if (IS("tls", "client_ca")) return set_str(p, v, c->tls.client_ca, sizeof(c->tls.client_ca));
	if (IS("tls", "handshake_timeout")) return set_uint(p, v, 1, 120, &c->tls.handshake_timeout);
	if (IS("tls", "max_handshakes")) return set_uint(p, v, 1, 100000, &c->tls.max_handshakes);
	if (IS("tls", "max_handshakes_per_source"))
		return set_uint(p, v, 1, 100000, &c->tls.max_handshakes_per_source);
	if (IS("upstream", "tls_ca")) return set_str(p, v, c->tls.gateway_ca, sizeof(c->tls.gateway_ca));
	if (IS("upstream", "tls_server_name")) return set_str(p, v, c->tls.gateway_name, sizeof(c->tls.gateway_name));
	if (IS("api", "listen")) { c->napi_listen = 0; return each_item(p, v, add_api_listen); }
	if (IS("api", "metrics_listen")) { c->nmetrics_listen = 0; return each_item(p, v, add_metrics_listen); }
	if (IS("api", "max_body")) return set_uint(p, v, 256, 1048576, &c->api_max_body);
	if (IS("api", "min_password_length"))
		return set_uint(p, v, SA_PASSWORD_MIN, SA_PASSWORD_MAX, &c->api_min_password_len);
#undef IS
	return perr(p, "unknown key '%s' in section [%s]", k, sec);
}

static void set_defaults(struct sa_config *c)
{
	memset(c, 0, sizeof(*c));
	snprintf(c->domain, sizeof(c->domain), "%s", SA_DEFAULT_DOMAIN);
	snprintf(c->store_path, sizeof(c->store_path), "/var/lib/sipauthd");
	c->auth.algs[0] = SA_ALG_SHA256;
	c->auth.algs[1] = SA_ALG_MD5;
	c->auth.nalgs = 2;
	c->nonce_ttl = 30;
	c->reg = (struct sa_reg_cfg){ .min_expires = 60, .max_expires = 3600, .default_expires = 3600,
	                              .max_contacts = 10 };
	c->log_level = SA_LOG_INFO;
	c->tcp_idle_timeout = 300;
	c->max_connections = 4096;
	c->max_transactions = 65536;
	c->max_transactions_per_source = 1000;
	c->max_transactions_per_credential = 1000;
	c->max_transaction_memory = 128;
	c->timer_c = 181;
	c->max_calls = 10000;
	c->abuse = (struct sa_abuse_cfg){ .max_failures = 10, .window = 60, .ban_time = 600 };
	c->tls.min_version = 0x0303;
	snprintf(c->tls.ciphers, sizeof(c->tls.ciphers), "%s", SA_TLS_DEFAULT_CIPHERS);
	c->tls.handshake_timeout = 10;
	c->tls.max_handshakes = 256;
	c->tls.max_handshakes_per_source = 16;
	c->max_call_age = 14400;
	c->api_max_body = SA_HTTP_MAX_BODY;
	c->api_min_password_len = SA_PASSWORD_MIN;
}

/* Rules between keys, checked once the whole file is read. */
static int check_whole(struct parse *p)
{
	struct sa_config *c = p->cfg;
	p->line = 0;
	if (c->nlisten == 0)
		return perr(p, "[sip] listen is required");
	if (c->gateway.port == 0)
		return perr(p, "[upstream] gateway is required");
	for (unsigned i = 0; i < c->nlisten; i++)
		if (c->listen[i].proto == SA_PROTO_TLS && (!c->tls.certificate[0] || !c->tls.private_key[0]))
			return perr(p, "[sip] listen has a tls listener: [tls] certificate and private_key are required");
	if (c->gateway.proto == SA_PROTO_TLS && !c->tls.gateway_name[0])
		return perr(p, "[upstream] gateway over tls needs tls_server_name (the name its certificate must carry)");
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
		const char *known[] = { "sip", "upstream", "auth", "store", "registrar", "proxy", "limits", "log", "api", "tls", "abuse" };
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
