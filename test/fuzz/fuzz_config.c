/* fuzz_config.c: libFuzzer harness: sipauthd.conf parsing (sa_config_load) and what a loaded config promises. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* sa_config_load reads a path, as the daemon does at start and on SIGHUP;
 * each input is written to the same file in a directory made once, so that
 * the parser is driven exactly as in production. */
static struct {
	char dir[64];
	char path[96];
} fx;

static void teardown(void)
{
	unlink(fx.path);
	rmdir(fx.dir);
}

static void setup(void)
{
	snprintf(fx.dir, sizeof(fx.dir), "%s/fuzzconf.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(fx.dir)) {
		fprintf(stderr, "fuzz_config: cannot make a directory from %s\n", fx.dir);
		abort();
	}
	snprintf(fx.path, sizeof(fx.path), "%s/sipauthd.conf", fx.dir);
	atexit(teardown);
}

#define CHECK(cond) do { if (!(cond)) { fprintf(stderr, "fuzz_config: %s:%d: %s\n", __FILE__, __LINE__, #cond); abort(); } } while (0)
#define TERMINATED(a) (memchr((a), '\0', sizeof(a)) != NULL)
#define IN(v, lo, hi) ((v) >= (lo) && (v) <= (hi))

/* What every endpoint the parser accepted must be, and that its text parses back to it. */
static void check_endpoint(const struct sa_endpoint *ep, bool http)
{
	char text[128];
	struct sa_endpoint again;

	CHECK(ep->proto == SA_PROTO_UDP || ep->proto == SA_PROTO_TCP || ep->proto == SA_PROTO_TLS);
	CHECK(!http || ep->proto == SA_PROTO_TCP);
	CHECK(ep->port >= 1 && TERMINATED(ep->host) && ep->host[0]);
	if (ep->ss.ss_family == AF_INET) {
		CHECK(ep->sslen == sizeof(struct sockaddr_in));
		CHECK(ntohs(((const struct sockaddr_in *)&ep->ss)->sin_port) == ep->port);
	} else {
		CHECK(ep->ss.ss_family == AF_INET6 && ep->sslen == sizeof(struct sockaddr_in6));
		CHECK(ntohs(((const struct sockaddr_in6 *)&ep->ss)->sin6_port) == ep->port);
	}
	snprintf(text, sizeof(text), ep->ss.ss_family == AF_INET6 ? "%s:[%s]:%u" : "%s:%s:%u",
	         sa_proto_name(ep->proto), ep->host, ep->port);
	CHECK(sa_endpoint_parse(text, &again) == 0);
	CHECK(again.proto == ep->proto && again.port == ep->port && strcmp(again.host, ep->host) == 0);
	CHECK(again.sslen == ep->sslen && memcmp(&again.ss, &ep->ss, ep->sslen) == 0);
}

/* Each gateway is a host DNS could hold or a numeric address, with a port
 * (sip:NAME may leave it out); tls ones have the name to verify. */
static void check_gateways(const struct sa_config *c)
{
	const struct sa_upstream_spec *g = &c->gateway;
	CHECK(IN(g->n, 1, SA_UPSTREAM_MAX) && (!g->service || g->n == 1));
	for (unsigned i = 0; i < g->n; i++) {
		const struct sa_upstream_entry *e = &g->e[i];
		CHECK(TERMINATED(e->host) && (sa_upstream_host_numeric(e->host) || sa_upstream_host_name_ok(e->host)));
		CHECK(e->port > 0 || g->service);
		CHECK(e->proto != SA_PROTO_TLS || c->tls.gateway_name[0]);
	}
	CHECK(IN(c->failover_timeout_ms, 100, 32000) && IN(c->down_after, 1, 100) && IN(c->up_after, 1, 100));
}

/* A trusted network contains its own address, and an address of the other family never matches it. */
static void check_trusted(const struct sa_config *c, const struct sa_net *n)
{
	struct sockaddr_storage ss = { 0 };

	if (n->family == 0) {   /* a name: resolved at run time */
		CHECK(TERMINATED(n->name) && sa_upstream_host_name_ok(n->name));
		return;
	}
	CHECK(n->family == AF_INET ? n->prefix <= 32 : n->family == AF_INET6 && n->prefix <= 128);
	if (n->family == AF_INET) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
		s4->sin_family = AF_INET;
		memcpy(&s4->sin_addr, n->addr, 4);
	} else {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
		s6->sin6_family = AF_INET6;
		memcpy(&s6->sin6_addr, n->addr, 16);
	}
	CHECK(sa_config_trusted(c, (struct sockaddr *)&ss) == 1);
}

/* The ranges are those set_key in daemon/conf.c enforces (defaults included). */
static void check_loaded(const struct sa_config *c)
{
	CHECK(TERMINATED(c->path) && strcmp(c->path, fx.path) == 0);
	CHECK(IN(c->nlisten, 1, SA_MAX_LISTEN));
	for (unsigned i = 0; i < c->nlisten; i++) {
		check_endpoint(&c->listen[i], false);
		if (c->listen[i].proto == SA_PROTO_TLS)
			CHECK(c->tls.certificate[0] && c->tls.private_key[0]);
	}
	CHECK(TERMINATED(c->domain) && c->domain[0]);
	CHECK(strspn(c->domain, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") == strlen(c->domain));
	check_gateways(c);
	CHECK(c->ntrusted <= SA_MAX_TRUSTED);
	for (unsigned i = 0; i < c->ntrusted; i++)
		check_trusted(c, &c->trusted[i]);
	CHECK(IN(c->auth.nalgs, 1, SA_ALG_COUNT));
	for (unsigned i = 0; i < c->auth.nalgs; i++) {
		CHECK(c->auth.algs[i] < SA_ALG_COUNT);
		for (unsigned j = 0; j < i; j++)
			CHECK(c->auth.algs[i] != c->auth.algs[j]);
	}
	CHECK(IN(c->nonce_ttl, 5, 3600));
	CHECK(TERMINATED(c->store_path) && c->store_path[0]);
	CHECK(c->store_map_size == 0 || IN(c->store_map_size, SA_STORE_MIN_MAP_SIZE, SA_STORE_MAX_MAP_SIZE));
	/* [cluster]: a database needs a node name; a node name or address needs a database */
	CHECK(TERMINATED(c->cluster_database) && TERMINATED(c->cluster_node) && TERMINATED(c->cluster_address));
	CHECK(!c->cluster_database[0] == !c->cluster_node[0] && (c->cluster_database[0] || !c->cluster_address[0]));
	CHECK(strspn(c->cluster_node, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") ==
	      strlen(c->cluster_node));
	CHECK(IN(c->reg.min_expires, 1, 86400) && IN(c->reg.max_expires, 1, 604800));
	CHECK(IN(c->reg.default_expires, c->reg.min_expires, c->reg.max_expires) && c->reg.max_contacts <= 1000);
	CHECK(IN(c->timer_c, 181, 3600) && IN(c->max_transactions, 16, 10000000));
	CHECK(c->max_transactions_per_source <= 10000000 && c->max_transactions_per_credential <= 10000000);
	CHECK(IN(c->max_transaction_memory, 1, 65536) && IN(c->max_calls, 1, 10000000));
	CHECK(IN(c->max_call_age, 5, 604800));
	CHECK(IN(c->tcp_idle_timeout, 5, 86400) && IN(c->max_connections, 1, 1000000));
	CHECK(c->log_level == SA_LOG_ERR || c->log_level == SA_LOG_WARNING || c->log_level == SA_LOG_INFO ||
	      c->log_level == SA_LOG_DEBUG);
	CHECK(c->abuse.max_failures <= 100000 && IN(c->abuse.window, 1, 86400) && IN(c->abuse.ban_time, 1, 604800));
	CHECK(TERMINATED(c->tls.certificate) && TERMINATED(c->tls.private_key) && TERMINATED(c->tls.client_ca));
	CHECK(TERMINATED(c->tls.ciphers) && c->tls.ciphers[0]);
	CHECK(TERMINATED(c->tls.gateway_ca) && TERMINATED(c->tls.gateway_name));
	CHECK(c->tls.min_version == 0x0303 || c->tls.min_version == 0x0304);
	CHECK(IN(c->tls.handshake_timeout, 1, 120) && IN(c->tls.max_handshakes, 1, 100000));
	CHECK(IN(c->tls.max_handshakes_per_source, 1, 100000));
	CHECK(c->napi_listen <= SA_MAX_LISTEN && c->nmetrics_listen <= SA_MAX_LISTEN);
	for (unsigned i = 0; i < c->napi_listen; i++)
		check_endpoint(&c->api_listen[i], true);
	for (unsigned i = 0; i < c->nmetrics_listen; i++)
		check_endpoint(&c->metrics_listen[i], true);
	CHECK(IN(c->api_max_body, 256, 1048576) && IN(c->api_min_password_len, SA_PASSWORD_MIN, SA_PASSWORD_MAX));
	CHECK(TERMINATED(c->api_admin_token_file));
	CHECK(c->ndns_servers <= SA_MAX_DNS_SERVERS && c->probe_interval <= 3600);
	for (unsigned i = 0; i < c->ndns_servers; i++)
		check_endpoint(&c->dns_servers[i], false);
}

/* A refusal is one line naming the file ("FILE:LINE: reason" or "FILE: reason"). */
static void check_refused(const char *err, size_t errlen)
{
	size_t n = strnlen(err, errlen), plen = strlen(fx.path);

	CHECK(n < errlen && n > plen + 2);
	CHECK(strncmp(err, fx.path, plen) == 0 && err[plen] == ':');
	CHECK(strchr(err, '\n') == NULL);
}

/* No byte of the file may be dropped unread: a NUL byte or a line over 4096 bytes is refused. */
static bool readable_whole(const uint8_t *data, size_t size)
{
	size_t len = 0;

	for (size_t i = 0; i < size; i++) {
		if (data[i] == '\0')
			return false;
		len = data[i] == '\n' ? 0 : len + 1;
		if (len > 4096)
			return false;
	}
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ready;
	char err[512];

	if (!ready) {
		setup();
		ready = 1;
	}
	if (size > 65536)   /* a real file is a few KB; long lines are already covered below this */
		return 0;
	FILE *f = fopen(fx.path, "wb");
	if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0) {
		fprintf(stderr, "fuzz_config: cannot write %s\n", fx.path);
		abort();
	}
	/* on the heap at its exact size, so that ASan sees any write past the struct */
	struct sa_config *cfg = malloc(sizeof(*cfg));
	if (!cfg)
		abort();
	memset(err, 'x', sizeof(err));
	if (sa_config_load(cfg, fx.path, err, sizeof(err)) == 0) {
		CHECK(readable_whole(data, size));
		check_loaded(cfg);
	} else
		check_refused(err, sizeof(err));
	free(cfg);
	return 0;
}
