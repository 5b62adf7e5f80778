/* sip_customer.c: a trunk's requests: its controls, digest, the registrar; calls to its PBX. */
#include "config.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <malloc.h>
#include <sys/queue.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "calls.h"
#include "dialog.h"
#include "log.h"
#include "pace.h"
#include "proxy.h"
#include "registrar.h"
#include "route.h"
#include "server.h"
#include "sip_int.h"
#include "txn.h"
#include "worker.h"

/* ---- requests ---- */

/* ---- the fleet (daemon/cluster.c; a single host has none) ---- */

/* A request from another node of the fleet: a call it relays to a PBX registered here. */
static bool from_fleet_node(struct sa_server *srv, const struct sa_flow *from)
{
#ifdef HAVE_LIBPQ
	return srv->cluster != NULL && sa_cluster_is_node(srv->cluster, &from->ss.sa);
#else
	(void)srv;
	(void)from;
	return false;
#endif
}

/* The feed's state is worker 0's loop's: another worker's REGISTER tells it there. */
#ifdef HAVE_LIBPQ
static void binding_changed_at_0(struct sa_server *w, void *arg)
{
	sa_cluster_binding_changed(w->cluster, arg);
	free(arg);
}
#endif

static void fleet_binding_changed(struct sa_server *srv, const char *cred_id)
{
#ifdef HAVE_LIBPQ
	if (srv->cluster == NULL || srv->worker == 0) {
		sa_cluster_binding_changed(srv->cluster, cred_id);
		return;
	}
	char *id = strdup(cred_id);
	if (id != NULL && !sa_workers_post(srv, 0, binding_changed_at_0, id))
		free(id);   /* written with the credential's next REGISTER */
#else
	(void)srv;
	(void)cred_id;
#endif
}

/* How many nodes share a trunk's limits now (0 or 1: this one alone). */
static unsigned fleet_share(const struct sa_server *srv)
{
#ifdef HAVE_LIBPQ
	return sa_cluster_nodes_alive(srv->cluster);
#else
	(void)srv;
	return 0;
#endif
}

/* The trunk's binding at another node, when it should take the call: there
 * is no binding here, or the PBX registered there after it did here (it
 * moved). Its owner's address in *owner. */
static bool fleet_remote_binding(struct sa_server *srv, const char *trunk, const struct sa_binding *local,
                                 struct sa_binding *out, struct sa_flow *owner, char *node, size_t nodelen)
{
#ifdef HAVE_LIBPQ
	struct sa_fleet_owner to;
	if (srv->cluster == NULL || sa_cluster_remote_binding(srv->cluster, trunk, out, &to) < 0)
		return false;
	if (local != NULL && local->updated_at >= out->updated_at)
		return false;
	snprintf(node, nodelen, "%s", to.node);
	return flow_for_text(srv, to.proto, to.host, to.port, owner) == 0;
#else
	(void)srv, (void)trunk, (void)local, (void)out, (void)owner, (void)node, (void)nodelen;
	return false;
#endif
}

bool is_trusted(struct sa_server *srv, const struct sa_flow *from)
{
	return sa_config_trusted(&srv->cfg, &from->ss.sa) || sa_gateways_trusted_name(srv, &from->ss.sa) ||
	       from_fleet_node(srv, from);
}

/* The source address bytes of a flow, for the abuse table. */
const void *flow_addr(const struct sa_flow *fl, size_t *len)
{
	if (fl->ss.sa.sa_family == AF_INET6) {
		*len = 16;
		return &fl->ss.in6.sin6_addr;
	}
	*len = 4;
	return &fl->ss.in.sin_addr;
}

size_t abuse_source(const struct sa_flow *fl, unsigned char key[16])
{
	size_t alen;
	const void *a = flow_addr(fl, &alen);
	return sa_abuse_source(a, alen, key);
}

/* The trunk a request is for: Request-URI host, To host as fallback. */
static int request_trunk(struct sa_server *srv, const struct sa_msg *m, char *trunk, size_t len)
{
	if (sa_auth_trunk_from_host(m->ruri_host, srv->domain, trunk, len) == 0)
		return 0;
	if (m->to.uri.host && sa_auth_trunk_from_host(m->to.uri.host, srv->domain, trunk, len) == 0)
		return 0;
	return -1;
}

/*
 * Why failure records wait. A failure for a trunk the store knows is
 * recorded (a store write: some 11 000 instructions), one for an unknown
 * trunk is not. Written at once, after the 401, that work sat between the
 * answer and whatever the thread did next: a client sharing the CPU got an
 * unknown trunk's 401 sooner (2 us, |z| 18 in scripts/bench/timing.py), and
 * a request queued behind a failure waited longer for a known trunk, which
 * is what that timing must not tell (issue 10). So the records wait here
 * and are written together FAILQ_DELAY_MS later, unconnected to any one
 * request (under a guessing flood, one timer for many). A full queue is
 * written at once; shutdown writes what waits.
 */
#define FAILQ_DELAY_MS 5
#define FAILQ_MAX 256

struct sa_failq {
	struct event *timer;
	unsigned n;
	struct sa_authfail f[FAILQ_MAX];
};

/* A batch of failures for the fleet's log, from another worker to worker 0 (whose loop has the feed). */
struct fleet_fails {
	unsigned n;
	struct sa_authfail f[];
};

#ifdef HAVE_LIBPQ
static void fleet_fails_at_0(struct sa_server *w, void *arg)
{
	struct fleet_fails *b = arg;

	for (unsigned i = 0; i < b->n; i++)
		sa_cluster_authfail(w->cluster, &b->f[i]);
	free(b);
}
#endif

/* Into this node's failure log and, in a fleet, the queue for the fleet's
 * (for a trunk the store knows): from worker 0 at once, from another worker
 * into *batch (room for max), which the caller posts to worker 0. */
static void authfail_write(struct sa_server *srv, const struct sa_authfail *f, struct fleet_fails **batch, unsigned max)
{
	int rc = sa_store_authfail_add(srv->store, f, 1000);
#ifdef HAVE_LIBPQ
	if (rc == SA_STORE_ENOTFOUND || srv->cluster == NULL)
		return;
	if (srv->worker == 0) {
		sa_cluster_authfail(srv->cluster, f);
		return;
	}
	if (*batch == NULL && (*batch = calloc(1, sizeof(**batch) + max * sizeof(*f))) == NULL)
		return;   /* out of memory: this node's own log has it */
	(*batch)->f[(*batch)->n++] = *f;
#else
	(void)rc, (void)batch, (void)max;
#endif
}

static void fleet_fails_post(struct sa_server *srv, struct fleet_fails *batch)
{
#ifdef HAVE_LIBPQ
	if (batch != NULL && !sa_workers_post(srv, 0, fleet_fails_at_0, batch))
		free(batch);
#else
	(void)srv, (void)batch;
#endif
}

static void failq_flush(struct sa_server *srv)
{
	struct sa_failq *q = srv->failq;
	struct fleet_fails *batch = NULL;

	for (unsigned i = 0; i < q->n; i++)
		authfail_write(srv, &q->f[i], &batch, q->n);
	fleet_fails_post(srv, batch);
	q->n = 0;
	evtimer_del(q->timer);
}

static void failq_cb(evutil_socket_t fd, short what, void *arg)
{
	failq_flush(arg);
}

static void authfail_record(struct sa_server *srv, const struct sa_authfail *f)
{
	struct sa_failq *q = srv->failq;

	if (q == NULL) {
		struct fleet_fails *batch = NULL;
		authfail_write(srv, f, &batch, 1);
		fleet_fails_post(srv, batch);
		return;
	}
	q->f[q->n++] = *f;
	if (q->n == FAILQ_MAX) {
		failq_flush(srv);
	} else if (!evtimer_pending(q->timer, NULL)) {
		struct timeval tv = { .tv_sec = 0, .tv_usec = FAILQ_DELAY_MS * 1000 };
		evtimer_add(q->timer, &tv);
	}
}

int sip_customer_init(struct sa_server *srv)
{
	struct sa_failq *q = calloc(1, sizeof(*q));

	if (q == NULL || (q->timer = evtimer_new(srv->base, failq_cb, srv)) == NULL) {
		free(q);
		return -1;
	}
	srv->failq = q;
	return 0;
}

void sip_customer_shutdown(struct sa_server *srv)
{
	struct sa_failq *q = srv->failq;

	if (q == NULL)
		return;
	failq_flush(srv);
	event_free(q->timer);
	free(q);
	srv->failq = NULL;
}

static void log_auth_failure(struct sa_server *srv, const struct sa_msg *m, const struct sa_flow *from,
                             const char *trunk, const struct sa_auth_result *r)
{
	char addr[64];
	uint16_t port;
	sa_flow_peer(from, addr, sizeof(addr), &port);
	srv->metrics.auth_fail[r->reason]++;
	srv->metrics.auth_stale[r->stale_cause]++;
	log_info("event=auth_failure reason=%s trunk=%s username=\"%s\" method=%s src=%s:%u proto=%s call_id=\"%s\"%s%s",
	         sa_auth_reason_name(r->reason), trunk ? trunk : "-", LOGQ(r->username), m->method_name, addr, port,
	         sa_proto_name(from->proto), LOGQ(m->call_id), r->stale_cause ? " stale=" : "",
	         r->stale_cause ? sa_auth_stale_name(r->stale_cause) : "");
	struct sa_authfail f = { .at = wall_now(), .source_port = port };
	snprintf(f.trunk_id, sizeof(f.trunk_id), "%s", trunk ? trunk : "");
	snprintf(f.source, sizeof(f.source), "%s", addr);
	snprintf(f.transport, sizeof(f.transport), "%s", sa_proto_name(from->proto));
	snprintf(f.username, sizeof(f.username), "%s", r->username);
	snprintf(f.reason, sizeof(f.reason), "%s", sa_auth_reason_name(r->reason));
	snprintf(f.method, sizeof(f.method), "%s", m->method_name);
	f.password_version = r->password_version;
	if (trunk) {
		authfail_record(srv, &f);
		sa_webhooks_auth_failed(srv, trunk, addr, r->username);
	}
	unsigned char a[16];
	size_t alen = abuse_source(from, a);
	enum sa_abuse_verdict v = sa_auth_failure_counts(r, from->proto == SA_PROTO_UDP)
	                        ? sa_abuse_failure(srv->abuse, &srv->cfg.abuse, a, alen, sa_abuse_trunk_key(trunk),
	                                           sa_mono_s())
	                        : SA_ABUSE_COUNTED;
	if (v == SA_ABUSE_BAN_OTHERS) {
		/* it proved itself for its own trunks, which it keeps; no more guesses at others' */
		srv->metrics.bans++;
		log_warn("event=ban src=%s scope=other_trunks failures=%u window=%u ban_time=%u trunk=%s hint=\"it "
		         "authenticated for another trunk, which it keeps\"", addr, srv->cfg.abuse.max_failures,
		         srv->cfg.abuse.window, srv->cfg.abuse.ban_time, trunk ? trunk : "-");
	}
	if (v == SA_ABUSE_BAN) {
		srv->metrics.bans++;
		srv->metrics.auth_fail[SA_AUTH_BANNED]++;
		log_warn("event=ban src=%s failures=%u window=%u ban_time=%u trunk=%s", addr, srv->cfg.abuse.max_failures,
		         srv->cfg.abuse.window, srv->cfg.abuse.ban_time, trunk ? trunk : "-");
		snprintf(f.reason, sizeof(f.reason), "%s", sa_auth_reason_name(SA_AUTH_BANNED));
		if (trunk) {   /* a ban is told to the account of the trunk whose failure set it off */
			authfail_record(srv, &f);
			sa_webhooks_source_banned(srv, trunk, addr, srv->cfg.abuse.max_failures, srv->cfg.abuse.ban_time);
		}
	}
}

/* Who a request proved to be. */
struct authed {
	struct sa_credential cred;     /* HA1s wiped */
	bool retransmission;           /* the very REGISTER already accepted, sent again */
	uint32_t password_version;     /* the password it answered with (rotation) */
};

/* Challenge or accept. Returns true when the request may go on, who filled. */
static bool authenticate(struct sa_server *srv, const struct sa_msg *m, const struct sa_flow *from,
                         const struct sa_trunk_policy *pol, struct authed *who, char *realm, size_t realm_len)
{
	char trunk[SA_ID_MAX], hdrs[1024];
	struct sa_auth_result r;
	bool known = request_trunk(srv, m, trunk, sizeof(trunk)) == 0;
	bool reg = m->method == SA_M_REGISTER;

	/* a trunk host, known or not, gets its realm: an unknown trunk answers
	 * as a wrong password does. Any other host is never echoed (it may
	 * carry quotes): the realm is then our domain. */
	if (known)
		sa_store_realm(trunk, srv->domain, realm, realm_len);
	else
		snprintf(realm, realm_len, "%s", srv->domain);
	char addr[64];
	uint16_t port;
	uint64_t now = (uint64_t)wall_now();
	sa_flow_peer(from, addr, sizeof(addr), &port);
	unsigned char a[16];
	size_t alen = abuse_source(from, a);
	uint64_t tkey = sa_abuse_trunk_key(known ? trunk : NULL);
	if (sa_abuse_refused(srv->abuse, a, alen, tkey, sa_mono_s())) {
		srv->metrics.banned_dropped++;   /* as a banned source is: no answer */
		return false;
	}
	sa_auth_check(&srv->auth, m, known ? trunk : NULL, realm, addr, now, &r);
	if (r.ok) {
		srv->metrics.auth_ok++;
		if (from->proto != SA_PROTO_UDP)
			sa_transport_proven(srv, from);
		sa_credential_wipe(&r.cred);
		who->cred = r.cred;
		who->retransmission = r.retransmission;
		who->password_version = r.password_version;
		/* it registers or calls from here: forged failures must not ban it
		 * for as long as such a registration may live */
		uint64_t mono = sa_mono_s();
		sa_abuse_vouch(srv->abuse, a, alen, sa_abuse_trunk_key(r.cred.trunk_id), mono,
		               mono + srv->cfg.reg.max_expires);
		return true;
	}
	srv->metrics.challenges++;
	/* a trunk may order the algorithms for gear that reads the first challenge only */
	struct sa_auth_cfg order = { .nalgs = pol ? pol->nalgs : 0 };
	for (unsigned i = 0; i < order.nalgs && i < SA_ALG_COUNT; i++)
		order.algs[i] = (enum sa_digest_alg)pol->algs[i];
	long n = sa_auth_challenge_in(&srv->auth, order.nalgs ? &order : NULL, realm, addr, !reg, r.stale, now, hdrs,
	                              sizeof(hdrs));
	if (n < 0)
		sip_reply(srv, m, from, 500, NULL, NULL, NULL);
	else
		sip_reply(srv, m, from, reg ? 401 : 407, NULL, hdrs, NULL);
	/* after the answer: the failure's bookkeeping (a store write for a
	 * known trunk) must not tell unknown trunk, unknown user and wrong
	 * password apart by the time the answer takes */
	if (r.reason != SA_AUTH_NONE)
		log_auth_failure(srv, m, from, known ? trunk : NULL, &r);
	return false;
}

/* A trunk's policy refuses a new call: 503s that say which limit (and are
 * counted apart from overload), one log line, a failure-log record. */
static void trunk_limit_refuse(struct sa_server *srv, const struct sa_msg *m, const struct sa_flow *from,
                               const char *trunk, const char *username, uint32_t password_version,
                               enum sa_policy_verdict v, bool from_customer)
{
	char addr[64];
	uint16_t port;
	sa_flow_peer(from, addr, sizeof(addr), &port);
	srv->metrics.trunk_refused[v]++;
	if (v == SA_POLICY_CHANNEL_LIMIT && !from_customer)
		/* the gateway's call to a trunk whose channels are all taken: the
		 * customer is busy, not the edge (a 503, with Retry-After, would have
		 * the carrier hold back every trunk's calls here) */
		sip_answer_kept(srv, m, from, 486, NULL, "Reason: SIP;cause=486;text=\"trunk channel limit\"\r\n", NULL);
	else if (v == SA_POLICY_CHANNEL_LIMIT)
		sip_answer_kept(srv, m, from, 503, NULL, "Retry-After: 5\r\nReason: SIP;cause=503;text=\"trunk channel limit\"\r\n",
		                NULL);
	else
		sip_answer_kept(srv, m, from, 503, NULL,
		                "Retry-After: 1\r\nReason: SIP;cause=503;text=\"trunk call rate limit\"\r\n", NULL);
	log_info("event=trunk_limit reason=%s trunk=%s username=\"%s\" method=%s src=%s:%u proto=%s call_id=\"%s\"",
	         sa_policy_verdict_name(v), trunk, LOGQ(username), m->method_name, addr, port, sa_proto_name(from->proto),
	         LOGQ(m->call_id));
	struct sa_authfail f = { .at = wall_now(), .source_port = port };
	snprintf(f.trunk_id, sizeof(f.trunk_id), "%s", trunk);
	snprintf(f.source, sizeof(f.source), "%s", addr);
	snprintf(f.transport, sizeof(f.transport), "%s", sa_proto_name(from->proto));
	snprintf(f.username, sizeof(f.username), "%s", username);
	snprintf(f.reason, sizeof(f.reason), "%s", sa_policy_verdict_name(v));
	snprintf(f.method, sizeof(f.method), "%s", m->method_name);
	f.password_version = password_version;
	authfail_record(srv, &f);
}

/* A new call for a trunk: within its channels (and, from the customer, its
 * call rate)? On admission the caller's INVITE holds a channel. */
static bool trunk_admit(struct sa_server *srv, const struct sa_msg *m, const struct sa_flow *from,
                        const char *trunk, const struct sa_trunk_policy *pol, const char *username,
                        uint32_t password_version, bool from_customer)
{
	struct sa_trunk_policy share;   /* in a fleet: this node's share of the trunk's limits */
	unsigned nodes = fleet_share(srv);
	if (nodes > 1) {
		share = *pol;
		sa_policy_share(&share, nodes);
		pol = &share;
	}
	enum sa_policy_verdict v;
	if (sa_trunk_admit(srv->trunks, trunk, pol, from_customer, (int64_t)sa_now_ms(), &v) < 0) {
		sip_reject(srv, m, from, 503, NULL, "Retry-After: 5\r\n", "out of memory");
		return false;
	}
	if (v == SA_POLICY_ADMIT)
		return true;
	trunk_limit_refuse(srv, m, from, trunk, username, password_version, v, from_customer);
	return false;
}

/* Before any challenge: the trunk's transport and source rules. A refusal
 * is a 403 that says why, logged and recorded as an authentication failure. */
static bool trunk_arrival_ok(struct sa_server *srv, const struct sa_msg *m, const struct sa_flow *from,
                             const char *trunk, const struct sa_trunk_policy *pol)
{
	enum sa_policy_verdict v = sa_policy_check_arrival(pol, from->proto == SA_PROTO_TLS, &from->ss.sa);
	if (v == SA_POLICY_ADMIT)
		return true;
	srv->metrics.trunk_refused[v]++;
	sip_reply(srv, m, from, 403, v == SA_POLICY_TLS_REQUIRED ? "TLS Required" : "Source Not Allowed", NULL, NULL);
	struct sa_auth_result r = { .reason = v == SA_POLICY_TLS_REQUIRED ? SA_AUTH_TLS_REQUIRED
	                                                                  : SA_AUTH_SOURCE_NOT_ALLOWED };
	char realm[SA_REALM_MAX];
	sa_store_realm(trunk, srv->domain, realm, sizeof(realm));
	sa_auth_username(m, realm, r.username, sizeof(r.username));
	log_auth_failure(srv, m, from, trunk, &r);
	return false;
}

/* The connection a PBX registers over is its flow (inbound calls come down
 * it): kept open while the registration lives, let go when it ends there;
 * one it registered over before, and has left, is let go (a PBX behind a
 * NAT that rebinds must not fill its address's connection slots). */
/* Each stream connection the credential's bindings were or are on stays
 * open while a binding of it lives there (sa_transport_keep, per credential:
 * an SBC may register several over one connection). */
static void register_keep(struct sa_server *srv, const struct sa_flow *from, const struct sa_peer *peer,
                          const char *cred_id, const struct sa_reg_result *res)
{
	int64_t now = 0;
	for (int i = 0; i < res->nkeeps; i++) {
		const struct sa_reg_keep *k = &res->keeps[i];
		struct sa_flow fl = { .proto = strcmp(k->transport, "tls") == 0 ? SA_PROTO_TLS : SA_PROTO_TCP };
		if (k->port == peer->port && strcmp(k->source, peer->addr) == 0 && strcmp(k->transport, peer->transport) == 0)
			fl = *from;   /* its own connection, by id */
		else if (inet_pton(AF_INET, k->source, &fl.ss.in.sin_addr) == 1) {
			fl.ss.in.sin_family = AF_INET;
			fl.ss.in.sin_port = htons(k->port);
			fl.sslen = sizeof(fl.ss.in);
		} else if (inet_pton(AF_INET6, k->source, &fl.ss.in6.sin6_addr) == 1) {
			fl.ss.in6.sin6_family = AF_INET6;
			fl.ss.in6.sin6_port = htons(k->port);
			fl.sslen = sizeof(fl.ss.in6);
		} else {
			continue;
		}
		if (now == 0)
			now = wall_now();
		sa_transport_keep(srv, &fl, SA_KEEP_REGISTRATION, cred_id,
		                  k->until > now ? (uint64_t)(k->until - now) * 1000 : 0);
	}
}

static void handle_register(struct sa_server *srv, const struct sa_msg *m, const struct sa_flow *from,
                            const struct authed *who)
{
	const struct sa_credential *cred = &who->cred;
	struct sa_reg_result res;
	char addr[64], to_trunk[SA_ID_MAX];
	struct sa_peer peer;

	/* the address of record (To) is the credential's trunk's, or no trunk's
	 * (RFC 3261 §10.3 step 4: the credential may not register another one) */
	if (m->to.uri.host && sa_auth_trunk_from_host(m->to.uri.host, srv->domain, to_trunk, sizeof(to_trunk)) == 0 &&
	    strcmp(to_trunk, cred->trunk_id) != 0) {
		sip_reject(srv, m, from, 403, NULL, NULL, "To names another trunk");
		return;
	}
	peer_of(from, addr, sizeof(addr), &peer);
	sa_registrar_apply(srv->store, &srv->cfg.reg, m, who->retransmission, cred, who->password_version, &peer,
	                   wall_now(), &res);
	if (res.status == 200)
		fleet_binding_changed(srv, cred->id);   /* the fleet learns who holds the PBX's flow */
	if (res.status == 200 && (res.added || res.removed)) {
		srv->metrics.registrations++;
		log_info("event=register cred=%s trunk=%s src=%s:%u proto=%s added=%d removed=%d",
		         cred->id, cred->trunk_id, addr, peer.port, peer.transport, res.added, res.removed);
		if (res.added > 0)
			sa_webhooks_registration_created(srv, cred, addr, peer.port, peer.transport, res.added);
	}
	if (res.status == 200 && res.nkeeps > 0)
		register_keep(srv, from, &peer, cred->id, &res);
	sip_reply(srv, m, from, res.status, res.reason, res.headers, NULL);
}

/* Inbound for a PBX whose flow another node holds: to that node, which
 * sends it down the flow (RFC 3327's pattern: our Via and Record-Route keep
 * the answers and the dialog on this path). The owner counts the call
 * against the trunk's channels and lists it; here it is only passed on.
 * false: no other node should take it. */
static bool relay_to_owner(struct sa_server *srv, const struct sa_msg *m, const struct sa_flow *from,
                           const char *trunk, const struct sa_binding *local)
{
	struct sa_binding rb;
	struct sa_flow owner;
	char node[64];

	if (!fleet_remote_binding(srv, trunk, local, &rb, &owner, node, sizeof(node)))
		return false;
	if (m->method == SA_M_INVITE && calls_full(srv)) {
		sip_reject(srv, m, from, 503, NULL, "Retry-After: 30\r\n", "call table full");
		return true;
	}
	log_info("event=relay method=%s call_id=\"%s\" trunk=%s cred=%s owner=%s", m->method_name, LOGQ(m->call_id),
	         trunk, rb.cred_id, node);
	struct call_owner own = { .cred_id = rb.cred_id, .trunk_id = "", .inbound = true };
	struct sa_txn *t = sip_forward(srv, m, from, &owner, NULL, sa_route_initial_pop(m), NULL, &own, rb.cred_id);
	if (t)
		fo_attach_relay(t, rb.cred_id);
	if (t && t->send_failed)
		txn_unreachable(t);
	srv->metrics.fleet_relayed++;
	return true;
}

/* For the inbound lookup: a binding over UDP, or one whose TCP/TLS
 * connection is open (a PBX that reconnected or went leaves one whose
 * connection is gone; nothing could reach it down that flow). */
static bool binding_reachable(const struct sa_binding *b, void *arg)
{
	struct sa_server *srv = arg;
	char port[8];
	struct sa_flow fl;
	if (strcmp(b->transport, "udp") == 0)
		return true;
	snprintf(port, sizeof(port), "%u", b->source_port);
	return flow_for_text(srv, b->transport, b->source, port, &fl) == 0 &&
	       (sa_transport_flow_open(srv, &fl) || flow_to_contact(srv, &fl, b->contact) == 0);
}

/* An inbound INVITE's other registrations to move on to (after bs[0]):
 * those whose address is good. */
static void inbound_failover(struct sa_server *srv, struct sa_txn *t, const struct sa_flow *to0,
                             const struct sa_binding *bs, int nb)
{
	struct sa_flow flows[SA_INBOUND_TARGETS];
	struct fo_binding bind[SA_INBOUND_TARGETS];
	unsigned n = 0;
	char port[8];
	for (int i = 0; i < nb && n < SA_INBOUND_TARGETS; i++) {
		snprintf(port, sizeof(port), "%u", bs[i].source_port);
		if (i == 0)
			flows[n] = *to0;
		else if (flow_for_text(srv, bs[i].transport, bs[i].source, port, &flows[n]) < 0)
			continue;
		else
			flow_to_contact(srv, &flows[n], bs[i].contact);   /* its connection gone: where it listens */
		sa_str_copy(bind[n].cred_id, sizeof(bind[n].cred_id), bs[i].cred_id);
		sa_str_copy(bind[n].contact, sizeof(bind[n].contact), bs[i].contact);
		n++;
	}
	fo_attach_bindings(t, flows, bind, n);
}

/* Inbound: the gateway calls a trunk: to its most recent registration that
 * can be reached; an INVITE moves on to the next ones (SA_INBOUND_TARGETS
 * in all) when it answers 503, cannot be reached or stays silent. */
void handle_inbound(struct sa_server *srv, const struct sa_msg *m, const struct sa_flow *from)
{
	char trunk[SA_ID_MAX];
	struct sa_binding bs[SA_INBOUND_TARGETS];
	struct sa_flow to;
	int nb = 0;

	if (request_trunk(srv, m, trunk, sizeof(trunk)) < 0) {
		sip_reject(srv, m, from, 404, NULL, NULL, "not a trunk host");
		return;
	}
	bool invite = m->method == SA_M_INVITE && srv->cfg.inbound_failover_ms > 0;
	bool local = sa_registrar_lookup(srv->store, trunk, wall_now(), binding_reachable, srv, bs,
	                                 invite ? SA_INBOUND_TARGETS : 1, &nb) == 0;
	const struct sa_binding *b = &bs[0];
	/* a call another node relays is for a PBX registered here, or for none:
	 * never relayed on (two nodes could pass it back and forth) */
	if (!from_fleet_node(srv, from) && relay_to_owner(srv, m, from, trunk, local ? b : NULL))
		return;
	if (!local) {
		sip_reject(srv, m, from, 480, NULL, NULL, "trunk not registered");
		return;
	}
	char port[8];
	snprintf(port, sizeof(port), "%u", b->source_port);
	if (flow_for_text(srv, b->transport, b->source, port, &to) < 0) {
		sip_reject(srv, m, from, 500, NULL, NULL, "bad binding address");
		return;
	}
	flow_to_contact(srv, &to, b->contact);   /* a TCP/TLS PBX whose connection is gone: where it listens */
	if (m->method == SA_M_INVITE && calls_full(srv)) {
		sip_reject(srv, m, from, 503, NULL, "Retry-After: 30\r\n", "call table full");
		return;
	}
	/* inbound calls take the trunk's channels too (the rate limits the customer's calls only) */
	struct sa_trunk_policy pol;
	bool held = false;
	if (m->method == SA_M_INVITE && sa_store_trunk_policy_get(srv->store, b->trunk_id, &pol) == SA_STORE_OK) {
		if (!trunk_admit(srv, m, from, b->trunk_id, &pol, "", 0, false))
			return;
		held = true;
	}
	struct call_owner own = { .cred_id = b->cred_id, .trunk_id = b->trunk_id, .inbound = true, .holds_channel = held };
	struct sa_txn *t = sip_forward(srv, m, from, &to, b->contact, sa_route_initial_pop(m), NULL, &own, b->cred_id);
	if (t && nb > 1)
		inbound_failover(srv, t, &to, bs, nb);
	if (!t && held)
		channel_release(srv, b->trunk_id);
	else if (t && t->send_failed)
		txn_unreachable(t);   /* its channel goes back with it (or it tries the next) */
}

/* A request from a customer's PBX: its trunk's controls, then digest (or the
 * trunk's trusted network), then the registrar or the gateways. */
void handle_customer(struct sa_server *srv, struct sa_msg *m, const struct sa_flow *from)
{
	struct authed who = { .password_version = 0 };
	const struct sa_credential *cred = &who.cred;
	char realm[SA_REALM_MAX];
	char trunk[SA_ID_MAX];
	/* the trunk's controls (lib/policy): an unknown trunk has none, and is
	 * refused by authentication as a wrong password is */
	struct sa_trunk_policy pol;
	sa_policy_default(&pol);
	bool trunk_host = request_trunk(srv, m, trunk, sizeof(trunk)) == 0;
	bool policy = trunk_host && sa_store_trunk_policy_get(srv->store, trunk, &pol) == SA_STORE_OK;
	/* an unknown trunk's default policy is checked too (it admits): the
	 * same work, so the time does not tell which trunks exist */
	if (trunk_host && !trunk_arrival_ok(srv, m, from, trunk, &pol))
		return;
	if (policy && m->method != SA_M_REGISTER && sa_policy_ip_authenticates(&pol, &from->ss.sa)) {
		/* the trunk trusts this network: no digest, and no credential owns the call */
		memset(&who, 0, sizeof(who));
		snprintf(who.cred.trunk_id, sizeof(who.cred.trunk_id), "%s", trunk);
		sa_store_realm(trunk, srv->domain, realm, sizeof(realm));
		srv->metrics.auth_by_address++;
		if (from->proto != SA_PROTO_UDP)
			sa_transport_proven(srv, from);
	} else if (!authenticate(srv, m, from, policy ? &pol : NULL, &who, realm, sizeof(realm))) {
		return;
	}
	if (m->method == SA_M_REGISTER) {
		handle_register(srv, m, from, &who);
	} else {
		bool invite = m->method == SA_M_INVITE;
		struct call_owner own = { .cred_id = cred->id, .trunk_id = cred->trunk_id, .holds_channel = invite };
		if (invite && calls_full(srv))
			sip_reject_kept(srv, m, from, 503, NULL, "Retry-After: 30\r\n", "call table full", cred->id);
		else if (invite && !trunk_admit(srv, m, from, cred->trunk_id, &pol, cred->username, who.password_version,
		                                true))
			;   /* refused with a 503 that names the limit */
		else if (!forward_upstream(srv, m, from, realm, &own) && invite)
			channel_release(srv, cred->trunk_id);
	}
	OPENSSL_cleanse(&who, sizeof(who));
}
