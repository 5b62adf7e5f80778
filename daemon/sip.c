/* sip.c: one SIP message in: validate, authenticate, register or forward, relay responses. */
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
#include "txn.h"

#define SWEEP_MS 250               /* how often finished transactions past their time are freed */

/* Finished transactions wait in one list per lingering time, each in the
 * order they finished, so that one sweep frees them from the head without a
 * timer of their own. */
enum linger_class { LINGER_2XX, LINGER_UDP, LINGER_STREAM, LINGER_CLASSES };
_Static_assert(LINGER_CLASSES == SA_LINGER_CLASSES, "server.h sizes txn_done by SA_LINGER_CLASSES");
static const unsigned linger_ms[LINGER_CLASSES] = { SA_TXN_LINGER_2XX_MS, SA_TXN_LINGER_UDP_MS,
                                                     SA_TXN_LINGER_STREAM_MS };

/* One proxied transaction: the server side (towards the sender) and the
 * client side (towards the next hop), RFC 3261 §16 and §17. */
struct sa_txn {
	struct sa_txn_node node;       /* in srv->txns (lib/txn): by skey and by branch */
	TAILQ_ENTRY(sa_txn) done;      /* completed ones, oldest first: the first to make room */
	uint64_t done_ms;              /* when it finished; it goes LINGER[linger] later */
	unsigned char linger;          /* which finished list: enum linger_class */
	TAILQ_ENTRY(sa_txn) ringing;   /* an INVITE of a credential's call, not answered finally yet */
	bool is_ringing;
	struct sa_server *srv;
	char *skey;                    /* branch|sent-by|method of the request received (sized to fit) */
	char *dir_call_id;             /* several workers: an INVITE's Call-ID, in the directory while it lives */
	char branch[SA_TXN_BRANCH_LEN + 1];   /* ours towards the next hop: random, unguessable */
	char local_tag[17];            /* the To tag of answers we make ourselves (408, 487) */
	enum sa_method method;
	struct sa_flow from, to;
	struct sa_txn_req *req;        /* the request as we forwarded it, and where its fields are (lib/txn) */
	char *resp;                    /* the last response we sent back */
	size_t resp_len;
	int resp_status;
	int upstream_status;           /* highest status seen from the next hop */
	unsigned interval_ms;
	uint64_t started_ms;
	struct event *timer;           /* retransmit / timeout / linger */
	struct event *timer_c;         /* INVITE: how long it may ring */
	enum sa_txn_state state;       /* the client side's (lib/txn): finished ones linger */
	bool charged;                  /* counted in its source's and credential's budget */
	bool local;                    /* we are the UAC (a BYE we send): absorb its responses */
	bool inbound;                  /* INVITE from the gateway to a registered PBX */
	bool holds_channel;            /* INVITE: holds a channel of its trunk until a call takes it over */
	bool send_failed;              /* the last send of the request failed at once */
	bool probe;                    /* an OPTIONS probe of ours to a gateway */
	bool abandoned;                /* an INVITE's branch to a gateway that failover left for silence */
	bool cancel_sent;              /* abandoned: it rang late and got our CANCEL */
	bool own_bye;                  /* a BYE of ours: counted in byes_pending until answered */
	struct sa_pace_item *paced;    /* a BYE of ours waiting for its turn (lib/pace) */
	struct txn_owner *own;         /* whose it is, while in progress; NULL: nobody's */
	struct txn_failover *fo;       /* an INVITE to the gateways: the ones left to try */
};

/* An INVITE towards the gateways, until its final answer: what it takes to
 * try the next one (a new client transaction, RFC 3263 §4.3) when the live
 * one answers 503, fails to send, or stays silent for failover_timeout_ms. */
struct txn_failover {
	struct event *timer;           /* no answer from the live gateway */
	bool cancelled;                /* the caller sent CANCEL: no new gateway */
	unsigned cur, n;               /* flows[cur] is live */
	struct sa_flow flows[];
};

/* Whose a transaction is: needed only until its final answer (a finished
 * transaction lingers without it). */
struct txn_owner {
	char cred_id[SA_ID_MAX];       /* INVITE: the credential the call belongs to ("" none) */
	char trunk_id[SA_ID_MAX];
	char budget_cred[SA_ID_MAX];   /* the credential it is charged to ("" none) */
};

static bool txn_finished(const struct sa_txn *t)
{
	return sa_txn_finished(t->state);
}

/* A response from the next hop: a provisional moves it to Proceeding; a
 * final one is taken by txn_complete, which makes the transaction finished. */
static void txn_heard(struct sa_txn *t, int status)
{
	if (status > t->upstream_status)
		t->upstream_status = status;
	if (status < 200)
		t->state = sa_txn_on_response(t->state, t->method, status);
}

static const char *txn_cred(const struct sa_txn *t)
{
	return t->own ? t->own->cred_id : "";
}

static const char *txn_trunk(const struct sa_txn *t)
{
	return t->own ? t->own->trunk_id : "";
}

/* Whose call a forwarded INVITE starts. */
struct call_owner {
	const char *cred_id;           /* "" for a trunk that authenticates by address */
	const char *trunk_id;
	bool inbound;
	bool holds_channel;            /* admitted against the trunk's limits: the transaction holds it */
};

/* ---- trunk channels (lib/policy) ---- */

static void channel_release(struct sa_server *srv, const char *trunk_id)
{
	if (trunk_id[0])
		sa_trunk_release(srv->trunks, trunk_id);
}

static void channel_hold(struct sa_server *srv, const char *trunk_id)
{
	if (trunk_id[0])
		sa_trunk_hold(srv->trunks, trunk_id);
}

/* A branch for a request we send; with several workers it names ours, so
 * that its answers find this worker whichever socket they reach. */
static int branch_new(struct sa_server *srv, char out[SA_TXN_BRANCH_LEN + 1])
{
	return srv->workers ? sa_txn_branch_new_for(out, srv->worker) : sa_txn_branch_new(out);
}

uint64_t sa_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int64_t wall_now(void)
{
	return (int64_t)time(NULL);
}

static bool is_trusted(struct sa_server *srv, const struct sa_flow *from);
static const void *flow_addr(const struct sa_flow *fl, size_t *len);

/* ---- transaction table ---- */

#define TXN_OF(n) ((struct sa_txn *)((char *)(n) - offsetof(struct sa_txn, node)))

static struct sa_txn *txn_by_skey(struct sa_server *srv, const char *key)
{
	struct sa_txn_node *n = sa_txn_index_by_skey(srv->txns, key);
	return n ? TXN_OF(n) : NULL;
}

static struct sa_txn *txn_by_branch(struct sa_server *srv, const char *branch)
{
	struct sa_txn_node *n = sa_txn_index_by_branch(srv->txns, branch);
	return n ? TXN_OF(n) : NULL;
}

/* Give back the transaction's place in its source's and credential's budget. */
static void txn_discharge(struct sa_txn *t)
{
	if (!t->charged)
		return;
	size_t alen;
	const void *a = flow_addr(&t->from, &alen);
	sa_txn_budget_release(t->srv->txn_budget, a, alen, t->own ? t->own->budget_cred : NULL);
	t->charged = false;
}

/* Keep a copy of a message in *slot (its bytes counted against max_transaction_memory). */
static void txn_keep(struct sa_txn *t, char **slot, size_t *lenp, char *buf, size_t n)
{
	sa_txn_budget_bytes(t->srv->txn_budget, (long)n - (long)(*slot ? *lenp : 0));
	free(*slot);
	*slot = buf;
	*lenp = n;
}

/* Keep r as t's request (counted against max_transaction_memory); NULL drops it. */
static void txn_keep_req(struct sa_txn *t, struct sa_txn_req *r)
{
	sa_txn_budget_bytes(t->srv->txn_budget, (long)(r ? r->size : 0) - (long)(t->req ? t->req->size : 0));
	sa_txn_req_free(t->req);
	t->req = r;
}

/* The Call-ID a kept request carries, as text for a log line or a listing. */
static const char *req_call_id(const struct sa_txn_req *r, char *out, size_t len)
{
	const char *v;
	size_t n = r ? sa_txn_req_value(r, SA_TXN_F_CALL_ID, &v) : 0;
	snprintf(out, len, "%.*s", (int)n, n ? v : "");
	return out;
}

static void txn_fo_free(struct sa_txn *t)
{
	struct txn_failover *fo = t->fo;
	if (!fo)
		return;
	if (fo->timer)
		event_free(fo->timer);
	free(fo);
	t->fo = NULL;
}

static void txn_free(struct sa_txn *t)
{
	struct sa_server *srv = t->srv;
	sa_txn_index_remove(srv->txns, &t->node);
	srv->ntxns--;
	if (t->paced)
		sa_pacer_cancel(srv->pacer, t->paced);
	if (t->own_bye && !txn_finished(t))
		srv->byes_pending--;
	if (txn_finished(t))
		TAILQ_REMOVE(&srv->txn_done[t->linger], t, done);
	else
		srv->nactive--;
	if (t->is_ringing)
		TAILQ_REMOVE(&srv->txn_ringing, t, ringing);
	txn_discharge(t);
	free(t->own);
	txn_fo_free(t);
	if (t->timer)
		event_free(t->timer);
	if (t->timer_c)
		event_free(t->timer_c);
	txn_keep_req(t, NULL);
	txn_keep(t, &t->resp, &t->resp_len, NULL, 0);
	if (t->dir_call_id) {
		sa_calldir_drop(srv, t->dir_call_id);
		free(t->dir_call_id);
	}
	free(t->skey);
	free(t);
}

static void txn_timer_cb(evutil_socket_t fd, short what, void *arg);

static void txn_timer_c_cb(evutil_socket_t fd, short what, void *arg);
static void txn_complete(struct sa_txn *t);

static void txn_arm(struct sa_txn *t, unsigned ms)
{
	struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };
	evtimer_add(t->timer, &tv);
}

/* The transaction key of a request as RFC 3261 §17.2.3 matches it; ACK
 * matches the INVITE it acknowledges. */
/* Room for one more transaction keeping `bytes`: finished transactions only
 * absorb retransmissions, so the oldest of them go first. */
static bool txn_make_room(struct sa_server *srv, size_t bytes)
{
	struct sa_txn_limits lim = { .max_bytes = (size_t)srv->cfg.max_transaction_memory << 20 };
	while (srv->ntxns >= srv->cfg.max_transactions || !sa_txn_budget_bytes_ok(srv->txn_budget, &lim, bytes)) {
		struct sa_txn *oldest = NULL;
		for (int c = 0; c < LINGER_CLASSES; c++) {
			struct sa_txn *head = TAILQ_FIRST(&srv->txn_done[c]);
			if (head && (!oldest || head->done_ms < oldest->done_ms))
				oldest = head;
		}
		if (!oldest)
			return false;
		srv->metrics.transactions_evicted++;
		txn_free(oldest);
	}
	return true;
}

/* Charge a new transaction from `from` (for cred_id) to their budgets;
 * trusted gateways have no per-source limit. */
static enum sa_txn_admit txn_admit(struct sa_server *srv, const struct sa_flow *from, const char *cred_id,
                                   size_t bytes)
{
	if (!txn_make_room(srv, bytes))
		return srv->ntxns >= srv->cfg.max_transactions ? SA_TXN_SOURCE_FULL : SA_TXN_MEMORY_FULL;
	struct sa_txn_limits lim = { .per_source = is_trusted(srv, from) ? 0 : srv->cfg.max_transactions_per_source,
	                             .per_credential = srv->cfg.max_transactions_per_credential };
	size_t alen;
	const void *a = flow_addr(from, &alen);
	return sa_txn_budget_admit(srv->txn_budget, &lim, a, alen, cred_id);
}

/* A transaction for request m from `from`, charged to budget_cred, keeping
 * about `bytes`; or (m NULL) one of our own. NULL with *why when refused. */
static struct sa_txn *txn_new(struct sa_server *srv, const struct sa_msg *m, const struct sa_flow *from,
                              const char *budget_cred, size_t bytes, const char **why)
{
	*why = "out of memory";
	if (m) {
		enum sa_txn_admit adm = txn_admit(srv, from, budget_cred, bytes);
		if (adm != SA_TXN_ADMIT) {
			*why = adm == SA_TXN_SOURCE_FULL && srv->ntxns >= srv->cfg.max_transactions
			       ? "transaction table full" : sa_txn_admit_reason(adm);
			return NULL;
		}
	} else if (!txn_make_room(srv, bytes)) {
		*why = "transaction table full";
		return NULL;
	}
	char key[SA_TXN_KEY_MAX];
	struct sa_txn *t = calloc(1, sizeof(*t));
	if (m)
		sa_txn_server_key(m, key);
	if (!t || branch_new(srv, t->branch) < 0)
		goto fail;
	if (!m)
		snprintf(key, sizeof(key), "local|%s", t->branch);
	if (!(t->skey = strdup(key)) || !(t->timer = evtimer_new(srv->base, txn_timer_cb, t))) {
fail:
		if (t)
			free(t->skey);
		free(t);
		if (m) {
			size_t alen;
			const void *a = flow_addr(from, &alen);
			sa_txn_budget_release(srv->txn_budget, a, alen, budget_cred);
		}
		return NULL;
	}
	t->srv = srv;
	t->started_ms = sa_now_ms();
	if (m) {
		t->method = m->method;
		t->state = sa_txn_initial(m->method);
		t->from = *from;
		t->charged = true;
		if (budget_cred && budget_cred[0] && (t->own = calloc(1, sizeof(*t->own))))
			snprintf(t->own->budget_cred, sizeof(t->own->budget_cred), "%s", budget_cred);
		sa_msg_local_tag(m, srv->tag_key, t->local_tag);
		/* its CANCEL and ACK may reach another worker: the directory sends them here */
		if (srv->workers && m->method == SA_M_INVITE && m->call_id && (t->dir_call_id = strdup(m->call_id)))
			sa_calldir_take(srv, t->dir_call_id);
	} else {
		t->local = true;
	}
	t->node.skey = t->skey;
	t->node.branch = t->branch;
	sa_txn_index_add(srv->txns, &t->node);   /* both keys are set: it cannot refuse */
	srv->ntxns++;
	srv->nactive++;
	if (srv->ntxns > srv->ntxns_peak)
		srv->ntxns_peak = srv->ntxns;
	return t;
}

/* ---- sending ---- */

static void peer_of(const struct sa_flow *fl, char *addr, size_t alen, struct sa_peer *p)
{
	sa_flow_peer(fl, addr, alen, &p->port);
	p->addr = addr;
	p->transport = sa_proto_name(fl->proto);
}

/* Answer m ourselves; the response is remembered by t (if any) for retransmissions. */
static void reply(struct sa_server *srv, const struct sa_msg *m, const struct sa_flow *from, int status,
                  const char *reason, const char *extra, struct sa_txn *t)
{
	char out[8192], addr[64], tag[17] = "";
	struct sa_peer peer;

	peer_of(from, addr, sizeof(addr), &peer);
	if (status > 100 && !m->to_tag)   /* only then does the answer carry our tag */
		sa_msg_local_tag(m, srv->tag_key, tag);
	long n = sa_msg_response(m, &peer, status, reason, status > 100 ? tag : NULL, extra, out, sizeof(out));
	if (n < 0) {
		log_warn("event=reply_too_large status=%d call_id=\"%s\"", status, LOGQ(m->call_id));
		return;
	}
	if (status >= 300 && status < 700)
		srv->metrics.sip_rejected[status]++;
	sa_transport_send(srv, from, out, (size_t)n);
	if (t && status > t->resp_status) {
		char *copy = malloc((size_t)n);
		if (copy) {
			memcpy(copy, out, (size_t)n);
			txn_keep(t, &t->resp, &t->resp_len, copy, (size_t)n);
			t->resp_status = status;
		}
	}
}

/* Reject straight away, without a transaction (errors at the edge). */
static void reject(struct sa_server *srv, const struct sa_msg *m, const struct sa_flow *from, int status,
                   const char *reason, const char *extra, const char *why)
{
	char addr[64];
	uint16_t port;
	sa_flow_peer(from, addr, sizeof(addr), &port);
	log_info("event=reject status=%d reason=\"%s\" method=%s src=%s:%u proto=%s call_id=\"%s\"",
	         status, why, m->method_name ? m->method_name : "-", addr, port,
	         sa_proto_name(from->proto), LOGQ(m->call_id));
	if (m->method != SA_M_ACK)
		reply(srv, m, from, status, reason, extra, NULL);
}

/* ---- our identity ---- */

static const struct sa_endpoint *local_ep(struct sa_server *srv, unsigned lidx)
{
	return &srv->listeners[lidx < srv->nlisteners ? lidx : 0].ep;
}

static void via_value(struct sa_server *srv, const struct sa_flow *to, const char *branch, char *out, size_t len)
{
	const struct sa_endpoint *ep = local_ep(srv, sa_transport_listener_for(srv, to->proto));
	const char *t = to->proto == SA_PROTO_UDP ? "UDP" : to->proto == SA_PROTO_TCP ? "TCP" : "TLS";
	bool v6 = ep->ss.ss_family == AF_INET6;
	/* every forwarded request: pieces, not snprintf; truncated as snprintf would */
	struct sa_buf b = { .p = out, .cap = len - 1 };
	sa_buf_puts(&b, "SIP/2.0/");
	sa_buf_puts(&b, t);
	sa_buf_puts(&b, v6 ? " [" : " ");
	sa_buf_puts(&b, ep->host);
	sa_buf_puts(&b, v6 ? "]:" : ":");
	sa_buf_putu(&b, ep->port);
	sa_buf_puts(&b, ";branch=");
	sa_buf_puts(&b, branch);
	sa_buf_puts(&b, ";rport");
	if (b.overflow)
		snprintf(out, len, "SIP/2.0/%s %s%s%s:%u;branch=%s;rport", t, v6 ? "[" : "", ep->host, v6 ? "]" : "",
		         ep->port, branch);
	else
		out[b.len] = '\0';
}

static void rr_value(const struct sa_endpoint *ep, char *out, size_t len)
{
	bool v6 = ep->ss.ss_family == AF_INET6;
	const char *tp = ep->proto == SA_PROTO_TCP ? "transport=tcp;" : ep->proto == SA_PROTO_TLS ? "transport=tls;" : "";
	struct sa_buf b = { .p = out, .cap = len - 1 };
	sa_buf_puts(&b, v6 ? "<sip:[" : "<sip:");
	sa_buf_puts(&b, ep->host);
	sa_buf_puts(&b, v6 ? "]:" : ":");
	sa_buf_putu(&b, ep->port);
	sa_buf_puts(&b, ";");
	sa_buf_puts(&b, tp);
	sa_buf_puts(&b, "lr>");
	if (b.overflow)
		snprintf(out, len, "<sip:%s%s%s:%u;%slr>", v6 ? "[" : "", ep->host, v6 ? "]" : "", ep->port, tp);
	else
		out[b.len] = '\0';
}

/* Is this URI one of our listeners (a Route that points at us)? */
static bool uri_is_us(struct sa_server *srv, const struct sa_uri *u)
{
	if (!u || !u->host)
		return false;
	long port = u->port ? u->port : 5060;
	for (unsigned i = 0; i < srv->nlisteners; i++) {
		const struct sa_endpoint *ep = &srv->listeners[i].ep;
		if (strcmp(u->host, ep->host) == 0 && port == ep->port)
			return true;
	}
	return false;
}

/* A Route naming us by name: our SIP domain or a trunk host (a PBX whose
 * outbound proxy is trunk-<id>.<domain>), on a port we listen on. */
static bool route_names_us(struct sa_server *srv, const struct sa_uri *u)
{
	char trunk[SA_ID_MAX];
	if (!u || !u->host || (strcasecmp(u->host, srv->domain) != 0 &&
	                       sa_auth_trunk_from_host(u->host, srv->domain, trunk, sizeof(trunk)) != 0))
		return false;
	long port = u->port ? u->port : 5060;
	for (unsigned i = 0; i < srv->nlisteners; i++)
		if (port == srv->listeners[i].ep.port)
			return true;
	return false;
}

/* How many leading Route values name us. */
static unsigned routes_to_us(struct sa_server *srv, const struct sa_msg *m)
{
	unsigned n = 0;
	while (n < m->nroutes && (uri_is_us(srv, &m->routes[n].uri) || route_names_us(srv, &m->routes[n].uri)))
		n++;
	return n;
}

/* A flow to a URI's host:port;transport (numeric hosts only: no DNS at the edge). */
static void flow_for_endpoint(struct sa_server *srv, const struct sa_endpoint *ep, struct sa_flow *fl);

/* A flow to transport/host/port written as text (a URI's, a binding's). */
static int flow_for_text(struct sa_server *srv, const char *proto, const char *host, const char *port,
                         struct sa_flow *fl)
{
	char spec[160];
	struct sa_endpoint ep;
	bool v6 = strchr(host, ':') != NULL;
	snprintf(spec, sizeof(spec), "%s:%s%s%s:%s", proto, v6 ? "[" : "", host, v6 ? "]" : "", port);
	if (sa_endpoint_parse(spec, &ep) < 0)
		return -1;
	flow_for_endpoint(srv, &ep, fl);
	return 0;
}

/* A URI's host:port;transport as a flow. A name is taken from the names
 * resolved here (gateways, trusted): nothing on this path waits for DNS. */
static int flow_for_uri(struct sa_server *srv, const struct sa_uri *u, struct sa_flow *fl)
{
	char port[8];
	if (!u->host)
		return -1;
	const char *host = u->host;
	char addr[64];
	union sa_sockaddr sa;
	if (!sa_upstream_host_numeric(host) && sa_gateways_name_addr(srv, host, &sa)) {
		uint16_t ignored;
		sa_flow_peer(&(struct sa_flow){ .ss = sa }, addr, sizeof(addr), &ignored);
		host = addr;
	}
	snprintf(port, sizeof(port), "%d", u->port ? u->port : 5060);
	return flow_for_text(srv, u->transport ? u->transport : "udp", host, port, fl);
}

static void flow_for_endpoint(struct sa_server *srv, const struct sa_endpoint *ep, struct sa_flow *fl)
{
	memset(fl, 0, sizeof(*fl));
	fl->proto = ep->proto;
	memcpy(&fl->ss, &ep->ss, ep->sslen < sizeof(fl->ss) ? ep->sslen : sizeof(fl->ss));
	fl->sslen = ep->sslen;
	fl->lidx = sa_transport_listener_for(srv, ep->proto);
}

/* ---- forwarding ---- */

/* Our Via and Record-Route values towards t's next hop (t->to, t->branch). */
struct hop_ours {
	char via[256], rr_in[160], rr_out[160];
	const char *rr[2];
};

static void hop_ours_fill(struct sa_txn *t, bool record_route, struct hop_ours *o)
{
	struct sa_server *srv = t->srv;
	via_value(srv, &t->to, t->branch, o->via, sizeof(o->via));
	o->rr[0] = o->rr[1] = NULL;
	if (!record_route)
		return;
	const struct sa_endpoint *in = local_ep(srv, t->from.lidx), *outep = local_ep(srv, t->to.lidx);
	/* two entries when the call crosses interfaces or transports (RFC 5658) */
	rr_value(outep, o->rr_out, sizeof(o->rr_out));
	rr_value(in, o->rr_in, sizeof(o->rr_in));
	o->rr[0] = o->rr_out;
	o->rr[1] = in == outep ? NULL : o->rr_in;
}

/* Keep r as the request t sends its next hop and send it: the
 * retransmission timer armed. */
static void txn_send_kept(struct sa_txn *t, struct sa_txn_req *r, const char *method)
{
	struct sa_server *srv = t->srv;
	char callid[256];
	txn_keep_req(t, r);
	srv->metrics.sip_forwarded++;
	t->send_failed = sa_transport_send(srv, &t->to, r->bytes, r->len) < 0;
	if (t->send_failed)
		log_warn("event=send_failed method=%s call_id=\"%s\"", method,
		         LOGQ(req_call_id(r, callid, sizeof(callid))));
	t->interval_ms = SA_TXN_T1_MS;
	txn_arm(t, t->to.proto == SA_PROTO_UDP ? SA_TXN_T1_MS : 64 * SA_TXN_T1_MS);
}

/* Rewrite m for t's next hop (t->to, t->branch) and send it: our Via,
 * Record-Route when it starts a call; the retransmission timer armed.
 * 0, or -1 when the request does not fit (nothing sent). */
static int txn_send_request(struct sa_txn *t, const struct sa_msg *m, const char *ruri, unsigned pop_routes,
                            const char *strip_realm, bool record_route)
{
	char addr[64];
	struct sa_peer peer;
	struct hop_ours o;

	peer_of(&t->from, addr, sizeof(addr), &peer);
	hop_ours_fill(t, record_route, &o);
	struct sa_fwd f = { .ruri = ruri, .via = o.via, .peer = &peer, .rr = { o.rr[0], o.rr[1] },
	                    .pop_route = pop_routes, .strip_realm = strip_realm };
	struct sa_txn_req *r = sa_txn_req_new(m, &f);
	if (!r)
		return -1;
	txn_send_kept(t, r, m->method_name);
	return 0;
}

/* Forward m statefully to `to`: 100 Trying for INVITE, our Via, Record-Route.
 * The transaction is charged to budget_cred (the credential whose call or
 * request it is; NULL for none). Returns it while it waits for an answer. */
static struct sa_txn *forward(struct sa_server *srv, const struct sa_msg *m, const struct sa_flow *from,
                              const struct sa_flow *to, const char *ruri, unsigned pop_routes,
                              const char *strip_realm, const struct call_owner *owner, const char *budget_cred)
{
	const char *why;
	struct sa_txn *t = txn_new(srv, m, from, budget_cred, m->len + 2048, &why);

	if (!t) {
		srv->metrics.transactions_refused++;
		reject(srv, m, from, 503, "Service Unavailable", "Retry-After: 5\r\n", why);
		return NULL;
	}
	if (m->method == SA_M_INVITE)
		reply(srv, m, from, 100, NULL, NULL, t);
	t->to = *to;
	if (owner && (t->own || (t->own = calloc(1, sizeof(*t->own))))) {
		snprintf(t->own->cred_id, sizeof(t->own->cred_id), "%s", owner->cred_id);
		snprintf(t->own->trunk_id, sizeof(t->own->trunk_id), "%s", owner->trunk_id);
		t->inbound = owner->inbound;
		t->holds_channel = owner->holds_channel;
		if (m->method == SA_M_INVITE) {
			/* listed as an early call, and found here by revocation (a call of a
			 * trunk that authenticates by address has no credential to lose) */
			TAILQ_INSERT_TAIL(&srv->txn_ringing, t, ringing);
			t->is_ringing = true;
		}
	}
	if (txn_send_request(t, m, ruri, pop_routes, strip_realm, owner != NULL) < 0) {
		reply(srv, m, from, 513, NULL, NULL, t);
		t->holds_channel = false;   /* NULL: the caller gives the channel back */
		txn_complete(t);
		return NULL;
	}
	if (m->method == SA_M_INVITE) {
		t->timer_c = evtimer_new(srv->base, txn_timer_c_cb, t);
		struct timeval tc = { .tv_sec = srv->cfg.timer_c };
		if (t->timer_c)
			evtimer_add(t->timer_c, &tc);
	}
	return t;
}

/* Send a request we build ourselves (ACK, CANCEL) along a client flow,
 * from the fields t kept of its request. */
static void send_hop_request(struct sa_server *srv, struct sa_txn *t, const struct sa_msg *resp, bool cancel)
{
	char out[8192];
	if (!t->req)
		return;
	long n = cancel ? sa_txn_cancel(t->req, out, sizeof(out)) : sa_txn_ack(t->req, resp, out, sizeof(out));
	if (n > 0)
		sa_transport_send(srv, &t->to, out, (size_t)n);
}

/* Answer the sender of t's request ourselves (408 on timeout, 487 when we
 * end it), from the fields t kept of its request: the Vias below ours are the sender's. */
static void answer_downstream(struct sa_txn *t, int status)
{
	char out[8192];
	if (t->local || !t->req)
		return;
	long n = sa_txn_answer(t->req, status, t->local_tag, out, sizeof(out));
	if (n > 0)
		sa_transport_send(t->srv, &t->from, out, (size_t)n);
}

/* The list a finished transaction waits in: the one of its lingering time (lib/txn). */
static enum linger_class txn_linger(const struct sa_txn *t)
{
	unsigned ms = sa_txn_linger_ms(t->state, t->from.proto == SA_PROTO_UDP || t->to.proto == SA_PROTO_UDP);
	for (int c = 0; c < LINGER_CLASSES; c++)
		if (linger_ms[c] == ms)
			return (enum linger_class)c;
	return LINGER_UDP;
}

/* The final answer came (upstream_status), or a timer ended it without one. */
static void txn_complete(struct sa_txn *t)
{
	if (txn_finished(t))
		return;
	t->srv->nactive--;
	t->state = t->upstream_status >= 200 ? sa_txn_on_response(t->state, t->method, t->upstream_status)
	                                     : sa_txn_on_timeout(t->state);
	if (t->own_bye) {
		t->srv->byes_pending--;
		if (t->resp_status >= 200)
			t->srv->metrics.byes_answered++;
		else
			t->srv->metrics.byes_timed_out++;
	}
	t->linger = (unsigned char)txn_linger(t);
	t->done_ms = sa_now_ms();
	TAILQ_INSERT_TAIL(&t->srv->txn_done[t->linger], t, done);
	/* what a finished transaction still needs: its answer for retransmitted
	 * requests, and the request only to ACK a late non-2xx to an INVITE */
	if (t->method != SA_M_INVITE || (t->upstream_status >= 200 && t->upstream_status < 300))
		txn_keep_req(t, NULL);
	if (t->is_ringing) {
		TAILQ_REMOVE(&t->srv->txn_ringing, t, ringing);
		t->is_ringing = false;
	}
	txn_discharge(t);
	if (t->holds_channel) {   /* ended without a call: the channel is free again */
		channel_release(t->srv, txn_trunk(t));
		t->holds_channel = false;
	}
	txn_fo_free(t);   /* answered finally: no other gateway now */
	free(t->own);   /* discharged: nobody's any more */
	t->own = NULL;
	if (t->timer_c) {
		event_free(t->timer_c);
		t->timer_c = NULL;
	}
	event_free(t->timer);   /* the sweep frees it when its time is up */
	t->timer = NULL;
}

/* Free the finished transactions whose lingering time is over. */
static void txn_sweep_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sa_server *srv = arg;
	uint64_t now = sa_now_ms();
	for (int c = 0; c < LINGER_CLASSES; c++) {
		struct sa_txn *t;
		while ((t = TAILQ_FIRST(&srv->txn_done[c])) && t->done_ms + linger_ms[c] <= now)
			txn_free(t);
	}
}

/* Carry out what lib/txn decided for a timer. */
static void txn_act(struct sa_txn *t, unsigned act, const char *timer)
{
	if ((act & SA_TXN_ACT_RETRANSMIT) && t->req) {
		sa_transport_send(t->srv, &t->to, t->req->bytes, t->req->len);
		if (t->own_bye)
			t->srv->metrics.bye_retransmissions++;
	}
	if (act & SA_TXN_ACT_COMPLETE)
		log_info("event=timeout timer=%s method=%d upstream_status=%d", timer, t->method, t->upstream_status);
	if ((act & SA_TXN_ACT_CANCEL) && !t->local)
		send_hop_request(t->srv, t, NULL, true);
	if (act & SA_TXN_ACT_ANSWER_408)
		answer_downstream(t, 408);
	if (act & SA_TXN_ACT_COMPLETE)
		txn_complete(t);
}

static void txn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sa_txn *t = arg;
	unsigned next;

	if (t->abandoned) {   /* its time is up: nothing more is expected from that gateway */
		txn_complete(t);
		return;
	}
	unsigned act = sa_txn_client_timer(t->method, t->to.proto != SA_PROTO_UDP, sa_now_ms() - t->started_ms,
	                                   t->upstream_status, &t->interval_ms, &next);
	txn_act(t, act, "B/F");
	if (!txn_finished(t) && next)
		txn_arm(t, next);
}

/* Timer C: an INVITE rang too long: CANCEL it upstream, 408 downstream. */
static void txn_timer_c_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sa_txn *t = arg;
	txn_act(t, sa_txn_timer_c(t->upstream_status), "C");
}

/* ---- failover between gateways ---- */

static void fo_timer_cb(evutil_socket_t fd, short what, void *arg);

static void fo_arm(struct sa_txn *t)
{
	unsigned ms = t->srv->cfg.failover_timeout_ms;
	struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };
	if (t->fo->timer)
		evtimer_add(t->fo->timer, &tv);
}

/* A new branch for the next gateway: answers to the old one no longer match. */
static void txn_rebranch(struct sa_txn *t)
{
	sa_txn_index_branch_out(t->srv->txns, &t->node);
	if (branch_new(t->srv, t->branch) < 0)
		t->branch[SA_TXN_BRANCH_LEN - 1] ^= 1;   /* no randomness left: still a new branch */
	sa_txn_index_branch_in(t->srv->txns, &t->node);
}

/* Failover leaves a gateway that stayed silent, but the INVITE may have
 * reached it and be answered late. Its branch goes on as a transaction of
 * our own (RFC 3261 §16.7, §9.1): a late provisional gets a CANCEL, a late
 * final an ACK, a late 2xx an ACK and a BYE, since the caller's call goes
 * through another gateway now. It lives 64*T1 unless it rings. t takes the
 * new transaction's fresh branch. */
static void fo_abandon(struct sa_txn *t)
{
	const char *why;
	struct sa_txn_req *copy;
	struct sa_txn *a = t->req ? txn_new(t->srv, NULL, NULL, NULL, t->req->size, &why) : NULL;
	if (!a || !(copy = sa_txn_req_dup(t->req))) {
		if (a)
			txn_complete(a);
		txn_rebranch(t);   /* then its late answers are dropped */
		return;
	}
	a->method = SA_M_INVITE;
	a->abandoned = true;
	a->to = t->to;
	a->started_ms = t->started_ms;
	txn_keep_req(a, copy);
	sa_txn_index_branch_out(t->srv->txns, &a->node);
	sa_txn_index_branch_out(t->srv->txns, &t->node);
	char b[sizeof(t->branch)];
	memcpy(b, a->branch, sizeof(b));
	memcpy(a->branch, t->branch, sizeof(b));
	memcpy(t->branch, b, sizeof(b));
	sa_txn_index_branch_in(t->srv->txns, &a->node);
	sa_txn_index_branch_in(t->srv->txns, &t->node);
	txn_arm(a, 64 * SA_TXN_T1_MS);
}

/* The live gateway did `ev` (a 503, a failure to send, silence). Send the
 * INVITE to the next one when there is one and no final answer went back;
 * true when it went. */
static bool fo_next(struct sa_txn *t, enum sa_up_event ev)
{
	struct sa_server *srv = t->srv;
	struct txn_failover *fo = t->fo;
	sa_gateways_report(srv, &t->to, ev);
	if (!fo || fo->cancelled || txn_finished(t) || fo->cur + 1 >= fo->n)
		return false;
	char a[64], b[64];
	uint16_t pa, pb;
	sa_flow_peer(&t->to, a, sizeof(a), &pa);
	sa_flow_peer(&fo->flows[fo->cur + 1], b, sizeof(b), &pb);
	sa_gateways_failover(srv, &t->to);
	if (!t->req)
		return false;
	char callid[256];
	log_info("event=failover reason=%s from=%s:%s:%u to=%s:%s:%u call_id=\"%s\"", sa_up_event_name(ev),
	         sa_proto_name(t->to.proto), a, pa, sa_proto_name(fo->flows[fo->cur + 1].proto), b, pb,
	         LOGQ(req_call_id(t->req, callid, sizeof(callid))));
	fo->cur++;
	if (ev == SA_UP_TIMEOUT)
		fo_abandon(t);
	else
		txn_rebranch(t);
	t->to = fo->flows[fo->cur];
	t->upstream_status = 0;   /* a new client transaction (RFC 3263 §4.3) */
	t->state = sa_txn_initial(t->method);
	t->started_ms = sa_now_ms();
	/* the request as the last gateway got it, with our Via and Record-Route for this one */
	struct hop_ours o;
	hop_ours_fill(t, true, &o);
	struct sa_txn_req *r = sa_txn_req_next_hop(t->req, o.via, o.rr);
	if (!r)
		return false;
	txn_send_kept(t, r, "INVITE");
	sa_gateways_sent(srv, &t->to);
	fo_arm(t);
	if (t->send_failed)
		fo_next(t, SA_UP_TRANSPORT);   /* bounded: each call moves one gateway on */
	return true;
}

/* The live gateway said nothing within failover_timeout_ms. */
static void fo_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sa_txn *t = arg;
	if (txn_finished(t) || t->upstream_status > 0)
		return;
	if (t->fo->cancelled) {
		/* nobody answers the CANCEL's INVITE: end it as the caller asked */
		answer_downstream(t, 487);
		txn_complete(t);
		return;
	}
	fo_next(t, SA_UP_TIMEOUT);
}

/* Keep the gateways the INVITE may go to next: flows[1..n). Its request
 * is t's own, rewritten for each (sa_txn_req_next_hop). */
static void fo_attach(struct sa_txn *t, const struct sa_flow *flows, unsigned n)
{
	struct txn_failover *fo = calloc(1, sizeof(*fo) + n * sizeof(fo->flows[0]));
	if (!fo || !(fo->timer = evtimer_new(t->srv->base, fo_timer_cb, t))) {
		free(fo);
		return;   /* no failover for this one: it still goes to the first */
	}
	memcpy(fo->flows, flows, n * sizeof(flows[0]));
	fo->n = n;
	t->fo = fo;
	fo_arm(t);
}

void sa_sip_flow_failed(struct sa_server *srv, const struct sa_flow *fl)
{
	for (struct sa_txn *t = TAILQ_FIRST(&srv->txn_ringing), *next; t; t = next) {
		next = TAILQ_NEXT(t, ringing);
		if (t->fo && !txn_finished(t) && t->upstream_status < 200 && sa_route_same_peer(&t->to, fl))
			fo_next(t, SA_UP_TRANSPORT);
	}
}

/* ---- calls ---- */

static struct sa_call *call_find(struct sa_server *srv, const struct sa_msg *m, int *side)
{
	return sa_calls_find(srv->calls, m, side);
}

/* [proxy] max_calls holds for the process: every worker's calls count. */
static bool calls_full(struct sa_server *srv)
{
	unsigned n = 0;
	for (unsigned i = 0; i < sa_workers_count(srv); i++)
		n += sa_calls_count(sa_worker_at(srv, i)->calls);
	return n >= srv->cfg.max_calls;
}

static void call_remove(struct sa_server *srv, struct sa_call *c)
{
	channel_release(srv, c->d.trunk_id);
	sa_calldir_drop(srv, c->d.call_id);
	sa_calls_remove(srv->calls, c);
}

static bool is_us_cb(const struct sa_uri *u, void *arg)
{
	return uri_is_us(arg, u);
}

/* A 2xx to an INVITE we forwarded for a credential: the call is up. */
static void call_create(struct sa_server *srv, struct sa_txn *t, struct sa_msg *ok)
{
	const char *contact;
	int side;
	if (call_find(srv, ok, &side) || !t->req)
		return;
	size_t clen = sa_txn_req_value(t->req, SA_TXN_F_CONTACT, &contact);
	struct sa_call *c = sa_call_new();
	if (!c)
		return;
	if (sa_dialog_from_2xx(&c->d, contact, clen, ok, is_us_cb, srv) < 0) {
		log_warn("event=call_untracked reason=\"2xx without Contact or tags\" call_id=\"%s\"", LOGQ(ok->call_id));
		sa_call_free(c);
		return;
	}
	snprintf(c->d.cred_id, sizeof(c->d.cred_id), "%s", txn_cred(t));
	snprintf(c->d.trunk_id, sizeof(c->d.trunk_id), "%s", txn_trunk(t));
	c->d.inbound = t->inbound;
	c->d.started_at = wall_now();
	c->caller = t->from;
	c->callee = t->to;
	if (sa_calls_add(srv->calls, c) < 0) {
		log_warn("event=call_untracked reason=\"out of memory\" call_id=\"%s\"", LOGQ(ok->call_id));
		sa_call_free(c);
		return;
	}
	sa_calldir_take(srv, c->d.call_id);   /* its in-dialog requests find this worker */
	if (t->holds_channel)
		t->holds_channel = false;   /* the call holds the INVITE's channel now */
	else
		channel_hold(srv, c->d.trunk_id);
	srv->metrics.calls_started++;
	log_debug("event=call_start call_id=\"%s\" cred=%s trunk=%s direction=%s", LOGQ(c->d.call_id), c->d.cred_id,
	         c->d.trunk_id, c->d.inbound ? "inbound" : "outbound");
}

/* Send a BYE of ours now: its timers run from here. */
static void own_send(struct sa_txn *t)
{
	t->paced = NULL;
	t->started_ms = sa_now_ms();
	sa_transport_send(t->srv, &t->to, t->req->bytes, t->req->len);
	t->interval_ms = SA_TXN_T1_MS;
	txn_arm(t, t->to.proto == SA_PROTO_UDP ? SA_TXN_T1_MS : 64 * SA_TXN_T1_MS);
}

static void pace_send_cb(void *payload, void *arg)
{
	own_send(payload);
}

static void pace_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sa_server *srv = arg;
	if (sa_pacer_run(srv->pacer, srv->cfg.bye_rate, sa_now_ms(), pace_send_cb, NULL) > 0) {
		struct timeval tv = { .tv_sec = 0, .tv_usec = 10000 };
		evtimer_add(srv->pace_timer, &tv);
	}
}

/* A destination's key for pacing: its address, port and transport. */
static size_t pace_key(const struct sa_flow *fl, unsigned char key[SA_PACE_KEY_MAX])
{
	size_t alen;
	const void *a = flow_addr(fl, &alen);
	char addr[64];
	uint16_t port;
	sa_flow_peer(fl, addr, sizeof(addr), &port);
	memcpy(key, a, alen);
	memcpy(key + alen, &port, sizeof(port));
	key[alen + sizeof(port)] = (unsigned char)fl->proto;
	return alen + sizeof(port) + 1;
}

/* Send a request of our own (a BYE) along a flow, with retransmissions.
 * Thousands at once (a revocation) are paced per destination at bye_rate,
 * so that no peer's socket buffer overflows and drops most of them. */
static void send_local(struct sa_server *srv, const struct sa_flow *to, const struct sa_dialog *d, bool to_caller,
                       const char *reason)
{
	char via[256], out[8192];
	struct sa_txn_req *copy;
	const char *why;
	struct sa_txn *t = txn_new(srv, NULL, NULL, NULL, 1024, &why);
	if (!t) {
		log_warn("event=bye_not_sent reason=\"%s\" call_id=\"%s\"", why, LOGQ(d->call_id));
		return;
	}
	t->method = SA_M_BYE;
	t->state = SA_TXN_TRYING;
	t->to = *to;
	via_value(srv, to, t->branch, via, sizeof(via));
	long n = sa_dialog_bye(d, to_caller, via, reason, out, sizeof(out));
	if (n < 0 || !(copy = sa_txn_req_raw(out, (size_t)n))) {
		log_warn("event=bye_not_sent reason=\"%s\" call_id=\"%s\"", n < 0 ? "too long" : "out of memory",
		         LOGQ(d->call_id));
		txn_complete(t);
		return;
	}
	t->own_bye = true;   /* counted until answered, or not by 64*T1 */
	srv->byes_pending++;
	txn_keep_req(t, copy);
	unsigned char key[SA_PACE_KEY_MAX];
	if (srv->cfg.bye_rate == 0 || !(t->paced = sa_pacer_push(srv->pacer, key, pace_key(to, key), t))) {
		own_send(t);
		return;
	}
	if (!evtimer_pending(srv->pace_timer, NULL))
		pace_timer_cb(-1, 0, srv);   /* the first burst goes now */
}

int sa_sip_probe(struct sa_server *srv, unsigned idx, const struct sa_flow *to)
{
	char via[256], out[2048], id[SA_TXN_BRANCH_LEN + 1];
	struct sa_txn_req *copy;
	const char *why;
	struct sa_txn *t = txn_new(srv, NULL, NULL, NULL, 1024, &why);
	if (!t)
		return -1;
	t->method = SA_M_OPTIONS;
	t->state = SA_TXN_TRYING;
	t->probe = true;
	t->to = *to;
	via_value(srv, to, t->branch, via, sizeof(via));
	snprintf(id, sizeof(id), "%s", t->branch + 7);   /* random: the branch's 128 bits */
	const struct sa_endpoint *ep = local_ep(srv, to->lidx);
	long n = sa_upstream_probe_request(srv->upstream, idx, via, ep->host, id, out, sizeof(out));
	if (n < 0 || !(copy = sa_txn_req_raw(out, (size_t)n))) {
		txn_complete(t);
		return -1;
	}
	txn_keep_req(t, copy);
	if (sa_transport_send(srv, to, out, (size_t)n) < 0) {
		txn_complete(t);
		return -1;
	}
	t->interval_ms = SA_TXN_T1_MS;
	txn_arm(t, to->proto == SA_PROTO_UDP ? SA_TXN_T1_MS : 64 * SA_TXN_T1_MS);
	return 0;
}

/* End a call from the middle: BYE to both ends. */
static void call_end(struct sa_server *srv, struct sa_call *c, const char *why, const char *reason)
{
	log_info("event=call_end call_id=\"%s\" cred=%s trunk=%s reason=%s", LOGQ(c->d.call_id), c->d.cred_id,
	         c->d.trunk_id, why);
	send_local(srv, &c->caller, &c->d, true, reason);
	send_local(srv, &c->callee, &c->d, false, reason);
	call_remove(srv, c);
}

/* A ringing INVITE whose credential went away: CANCEL upstream, 487 to the caller. */
static void call_cancel_early(struct sa_server *srv, struct sa_txn *t)
{
	log_info("event=call_cancel call_id_branch=%s cred=%s reason=credential_revoked", t->branch, txn_cred(t));
	if (t->upstream_status >= 100)
		send_hop_request(srv, t, NULL, true);
	answer_downstream(t, 487);
	txn_complete(t);
}

#define REVOKED_REASON "SIP;cause=403;text=\"credential revoked\""

/* A ringing INVITE's Call-ID, as its request carries it ("" when it keeps none). */
static const char *txn_call_id(const struct sa_txn *t, char *out, size_t len)
{
	return req_call_id(t->req, out, len);
}

/* This worker's calls and ringing INVITEs of a credential that is gone: ended. */
static int end_calls_of(struct sa_server *srv, const char *cred_id)
{
	int n = 0;
	struct sa_call *c;
	while ((c = sa_calls_of_credential(srv->calls, cred_id))) {
		sa_webhooks_call_revoked(srv, c->d.call_id, cred_id, c->d.trunk_id, true);
		call_end(srv, c, "credential_revoked", REVOKED_REASON);
		n++;
	}
	for (struct sa_txn *t = TAILQ_FIRST(&srv->txn_ringing), *next; t; t = next) {
		next = TAILQ_NEXT(t, ringing);
		if (strcmp(txn_cred(t), cred_id) == 0) {
			char callid[256];
			sa_webhooks_call_revoked(srv, txn_call_id(t, callid, sizeof(callid)), cred_id, txn_trunk(t), false);
			call_cancel_early(srv, t);
			n++;
		}
	}
	srv->metrics.calls_revoked += (uint64_t)n;
	return n;
}

static bool credential_gone(struct sa_server *srv, const char *cred_id)
{
	struct sa_credential cred;
	if (!cred_id[0])
		return false;   /* a call of a trunk that authenticates by address: no credential to lose */
	int rc = sa_store_credential_get(srv->store, cred_id, &cred);
	sa_credential_wipe(&cred);
	return rc == SA_STORE_ENOTFOUND;
}

#define GONE_MAX 64

/* Credentials of calls or ringing INVITEs that the store no longer has. */
struct gone {
	struct sa_server *srv;
	char id[GONE_MAX][SA_ID_MAX];
	unsigned n;
};

static void gone_check_cb(const char *cred_id, void *arg)
{
	struct gone *g = arg;
	if (g->n < GONE_MAX && credential_gone(g->srv, cred_id))
		snprintf(g->id[g->n++], SA_ID_MAX, "%s", cred_id);
}

/* What one revocation pass ended, per credential, summed over the workers. */
struct revoke_report {
	pthread_mutex_t mu;
	struct revoked { char id[SA_ID_MAX]; int ended; } *cred;
	unsigned n, max;
	bool more;                /* a worker had more than it looks at in one pass */
};

static void report_add(struct revoke_report *r, const char *cred_id, int ended)
{
	pthread_mutex_lock(&r->mu);
	unsigned i = 0;
	while (i < r->n && strcmp(r->cred[i].id, cred_id) != 0)
		i++;
	if (i == r->n && r->n < r->max)
		snprintf(r->cred[r->n++].id, SA_ID_MAX, "%s", cred_id);
	if (i < r->n)
		r->cred[i].ended += ended;
	pthread_mutex_unlock(&r->mu);
}

/* On each worker: the credentials of its calls and ringing INVITEs that the
 * store no longer has, and their calls ended. */
static void revoke_worker(struct sa_server *w, void *arg)
{
	struct revoke_report *r = arg;
	struct gone *g = calloc(1, sizeof(*g));
	if (!g) {
		r->more = true;   /* look again next tick (a bool: any worker may set it) */
		return;
	}
	g->srv = w;
	sa_calls_each_credential(w->calls, gone_check_cb, g);
	for (struct sa_txn *t = TAILQ_FIRST(&w->txn_ringing); t && g->n < GONE_MAX; t = TAILQ_NEXT(t, ringing))
		gone_check_cb(txn_cred(t), g);
	for (unsigned i = 0; i < g->n; i++)
		report_add(r, g->id[i], end_calls_of(w, g->id[i]));   /* a second time for the same id ends nothing */
	if (g->n == GONE_MAX)
		r->more = true;
	free(g);
}

/* The one revocation path: whoever deleted a credential (the API, sipauthctl,
 * another process, the fleet's feed), the store's generation moves; then
 * every worker ends the calls and ringing INVITEs of credentials that no
 * longer exist, and one line per credential says how many ended. Worker 0
 * polls every 250 ms; the API runs it at once after its own delete. */
int sa_sip_revocation_check(struct sa_server *srv)
{
	uint64_t gen;
	int ended = 0;
	if (sa_store_generation(srv->store, &gen) != 0 || gen == srv->store_generation)
		return 0;
	srv->store_generation = gen;
	struct revoke_report r = { .max = GONE_MAX * sa_workers_count(srv) };
	if (!(r.cred = calloc(r.max, sizeof(*r.cred)))) {
		srv->store_generation = 0;   /* look again next tick */
		return 0;
	}
	pthread_mutex_init(&r.mu, NULL);
	sa_workers_run_each(srv, revoke_worker, &r);
	pthread_mutex_destroy(&r.mu);
	for (unsigned i = 0; i < r.n; i++) {
		log_info("event=credential_revoked cred=%s calls_ended=%d", r.cred[i].id, r.cred[i].ended);
		ended += r.cred[i].ended;
	}
	if (r.more)
		srv->store_generation = 0;   /* more to do: look again next tick */
	free(r.cred);
	return ended;
}

static void revoke_poll_cb(evutil_socket_t fd, short what, void *arg)
{
	sa_sip_revocation_check(arg);
}

void sa_sip_housekeeping(struct sa_server *srv)
{
	/* after a burst, give the freed messages back to the system: the heap
	 * would otherwise keep its high-water mark for good */
	size_t bytes = sa_txn_budget_bytes_used(srv->txn_budget);
	if (bytes > srv->txn_bytes_peak)
		srv->txn_bytes_peak = bytes;
	if ((srv->txn_bytes_peak > (4u << 20) && bytes < srv->txn_bytes_peak / 2) ||
	    (srv->ntxns_peak > 1024 && srv->ntxns < srv->ntxns_peak / 2)) {
		malloc_trim(0);
		srv->ntxns_peak = srv->ntxns;
		srv->txn_bytes_peak = bytes;
	}
	/* calls start in order and max_call_age is one value: the oldest come first */
	int64_t oldest = wall_now() - (int64_t)srv->cfg.max_call_age;
	struct sa_call *c;
	while ((c = sa_calls_oldest(srv->calls)) && c->d.started_at <= oldest) {
		srv->metrics.calls_reaped++;
		call_end(srv, c, "max_call_age", "SIP;cause=408;text=\"maximum call duration\"");
	}
}

static void calls_each(struct sa_server *srv, const char *trunk_id, sa_call_cb cb, void *arg)
{
	for (struct sa_call *c = sa_calls_oldest(srv->calls); c; c = sa_calls_newer(c))
		if (!trunk_id || strcmp(c->d.trunk_id, trunk_id) == 0)
			cb(&(struct sa_call_info){ .call_id = c->d.call_id, .cred_id = c->d.cred_id,
			                           .trunk_id = c->d.trunk_id, .inbound = c->d.inbound,
			                           .confirmed = true, .started_at = c->d.started_at }, arg);
	for (struct sa_txn *t = TAILQ_FIRST(&srv->txn_ringing); t; t = TAILQ_NEXT(t, ringing))
		if (!trunk_id || strcmp(txn_trunk(t), trunk_id) == 0) {
			char callid[256];
			cb(&(struct sa_call_info){ .call_id = txn_call_id(t, callid, sizeof(callid)), .cred_id = txn_cred(t), .trunk_id = txn_trunk(t),
			                           .inbound = t->inbound, .confirmed = false,
			                           .started_at = wall_now() - (int64_t)((sa_now_ms() - t->started_ms) / 1000) },
			   arg);
		}
}

struct calls_walk {
	pthread_mutex_t mu;   /* the workers walk at once; the callback sees one call at a time */
	const char *trunk_id;
	sa_call_cb cb;
	void *arg;
};

static void calls_walk_cb(const struct sa_call_info *ci, void *arg)
{
	struct calls_walk *cw = arg;
	pthread_mutex_lock(&cw->mu);
	cw->cb(ci, cw->arg);
	pthread_mutex_unlock(&cw->mu);
}

static void calls_walk_worker(struct sa_server *w, void *arg)
{
	struct calls_walk *cw = arg;
	calls_each(w, cw->trunk_id, calls_walk_cb, cw);
}

void sa_sip_calls_each(struct sa_server *srv, const char *trunk_id, sa_call_cb cb, void *arg)
{
	struct calls_walk cw = { .trunk_id = trunk_id, .cb = cb, .arg = arg };
	pthread_mutex_init(&cw.mu, NULL);
	sa_workers_run_each(srv, calls_walk_worker, &cw);
	pthread_mutex_destroy(&cw.mu);
}

/* ---- responses ---- */

/* A response that nothing we sent asked for, or that came from elsewhere
 * than the request went: dropped, counted, one (rate-limited) log line. */
static void response_refused(struct sa_server *srv, const struct sa_msg *m, const struct sa_flow *from,
                             const char *why)
{
	char addr[64];
	uint16_t port;
	sa_flow_peer(from, addr, sizeof(addr), &port);
	srv->metrics.responses_refused++;
	log_info("event=response_dropped reason=\"%s\" status=%d src=%s:%u proto=%s call_id=\"%s\"", why, m->status,
	         addr, port, sa_proto_name(from->proto), LOGQ(m->call_id));
}

/* A 2xx retransmitted after its transaction ended goes along the call, and
 * only when it comes from the end that sent it. */
static void relay_late_2xx(struct sa_server *srv, const struct sa_msg *m, const struct sa_flow *from,
                           const char *out, size_t n)
{
	int side;
	struct sa_call *c = m->status >= 200 && m->status < 300 ? call_find(srv, m, &side) : NULL;
	if (!c)
		return;
	/* tags as in the dialog's requests from the caller (side 1): the answer travels to the caller */
	const struct sa_flow *sender = side == 1 ? &c->callee : &c->caller;
	if (!sa_route_response_ok(sender, from)) {
		response_refused(srv, m, from, "2xx not from the call's end");
		return;
	}
	sa_transport_send(srv, side == 1 ? &c->caller : &c->callee, out, n);
}

#define LATE_2XX_REASON "SIP;cause=200;text=\"answered after failover to another gateway\""

/* A late 2xx on an abandoned branch: ACK it, then end its dialog with a BYE. */
static void abandoned_2xx(struct sa_server *srv, struct sa_txn *t, struct sa_msg *ok)
{
	struct sa_dialog d = { 0 };
	const char *contact = NULL;
	char via[256], branch[SA_TXN_BRANCH_LEN + 1], out[8192], *copy;
	size_t clen = t->req ? sa_txn_req_value(t->req, SA_TXN_F_CONTACT, &contact) : 0;
	if (sa_dialog_from_2xx(&d, contact, clen, ok, is_us_cb, srv) < 0 || branch_new(srv, branch) < 0) {
		log_warn("event=failover_late_answer status=%d outcome=untracked call_id=\"%s\"", ok->status,
		         LOGQ(ok->call_id));
		sa_dialog_free(&d);
		return;
	}
	via_value(srv, &t->to, branch, via, sizeof(via));
	long n = sa_dialog_ack(&d, via, out, sizeof(out));
	if (n > 0 && (copy = malloc((size_t)n))) {
		memcpy(copy, out, (size_t)n);
		txn_keep(t, &t->resp, &t->resp_len, copy, (size_t)n);   /* again for each 2xx retransmission */
		sa_transport_send(srv, &t->to, out, (size_t)n);
	}
	send_local(srv, &t->to, &d, false, LATE_2XX_REASON);
	sa_dialog_free(&d);
}

/* An answer on a branch that failover left for silence (fo_abandon). */
static void abandoned_answer(struct sa_server *srv, struct sa_txn *t, struct sa_msg *m)
{
	char addr[64];
	uint16_t port;
	if (m->method != SA_M_INVITE)
		return;   /* the answer to our CANCEL */
	if (txn_finished(t)) {   /* a retransmitted final: acknowledge it again */
		if (m->status >= 300)
			send_hop_request(srv, t, m, false);
		else if (m->status >= 200 && t->resp)
			sa_transport_send(srv, &t->to, t->resp, t->resp_len);
		return;
	}
	txn_heard(t, m->status);
	if (m->status < 200 && t->cancel_sent)
		return;
	sa_flow_peer(&t->to, addr, sizeof(addr), &port);
	srv->metrics.failover_late_answers++;
	log_info("event=failover_late_answer status=%d gateway=%s:%s:%u outcome=%s call_id=\"%s\"", m->status,
	         sa_proto_name(t->to.proto), addr, port,
	         m->status < 200 ? "cancel" : m->status < 300 ? "ack_bye" : "ack", LOGQ(m->call_id));
	if (m->status < 200) {
		send_hop_request(srv, t, NULL, true);
		t->cancel_sent = true;
		txn_arm(t, 64 * SA_TXN_T1_MS);   /* for its final answer (487) */
		return;
	}
	if (m->status >= 300)
		send_hop_request(srv, t, m, false);
	else
		abandoned_2xx(srv, t, m);
	txn_complete(t);
}

static bool relay_response(struct sa_server *srv, struct sa_txn *t, struct sa_msg *m, unsigned steps, char *out,
                           size_t n);

/* A response on its way back along the transaction it answers (lib/route decides). */
static void handle_response(struct sa_server *srv, struct sa_msg *m, const struct sa_flow *from)
{
	size_t cap = m->len;
	char *out = malloc(cap);
	long n = out ? sa_proxy_response(m, out, cap) : -1;
	struct sa_txn *t = m->branch ? txn_by_branch(srv, m->branch) : NULL;
	struct sa_route_response facts = {
		.status = m->status, .cseq_cancel = m->method == SA_M_CANCEL, .relayable = n >= 0, .txn = t != NULL,
		.from_sent_peer = t && sa_route_response_ok(&t->to, from), .abandoned = t && t->abandoned,
		.local = t && t->local, .completed = t && txn_finished(t), .invite = t && t->method == SA_M_INVITE,
		.owns_call = t && t->own, .failover = t && t->fo,
	};
	struct sa_route_resp_decision d = sa_route_response(&facts);
	switch (d.action) {
	case SA_RR_DROP:
		break;
	case SA_RR_REFUSE:
		response_refused(srv, m, from, d.reason);
		break;
	case SA_RR_ABANDONED:
		abandoned_answer(srv, t, m);
		break;
	case SA_RR_LOCAL:
		/* the answer to a BYE or probe of our own: it ends here */
		if (m->status >= 200 && !txn_finished(t) && t->probe)
			sa_gateways_probe_answer(srv, &t->to, m->status);
		if (m->status >= 200 && !txn_finished(t)) {
			t->resp_status = m->status;
			txn_complete(t);
		}
		break;
	case SA_RR_NO_TXN:
		relay_late_2xx(srv, m, from, out, (size_t)n);
		break;
	case SA_RR_FINAL_AGAIN:
		/* a retransmitted final: ACK non-2xx again, relay 2xx end to end */
		if (m->status >= 300 && t->method == SA_M_INVITE)
			send_hop_request(srv, t, m, false);
		else if (m->status >= 200 && m->status < 300)
			sa_transport_send(srv, &t->from, out, (size_t)n);
		break;
	case SA_RR_RELAY:
		if (relay_response(srv, t, m, d.steps, out, (size_t)n))
			out = NULL;
		break;
	}
	free(out);
}

/* The steps of SA_RR_RELAY. true when the transaction kept `out`. */
static bool relay_response(struct sa_server *srv, struct sa_txn *t, struct sa_msg *m, unsigned steps, char *out,
                           size_t n)
{
	if (t->fo && t->upstream_status == 0 && m->status != 503)
		sa_gateways_report(srv, &t->to, SA_UP_ANSWERED);
	if (steps & SA_RR_TRY_NEXT) {
		send_hop_request(srv, t, m, false);   /* ACK it on its own branch first */
		t->upstream_status = m->status;
		if (fo_next(t, SA_UP_503))
			return false;
	}
	txn_heard(t, m->status);
	if (steps & SA_RR_FORWARD)
		sa_transport_send(srv, &t->from, out, n);
	if (steps & SA_RR_ACK)
		send_hop_request(srv, t, m, false);
	if (steps & SA_RR_CALL)
		call_create(srv, t, m);
	bool kept = false;
	if (steps & SA_RR_KEEP) {
		txn_keep(t, &t->resp, &t->resp_len, out, n);
		t->resp_status = m->status;
		kept = true;
	}
	if (steps & SA_RR_COMPLETE)
		txn_complete(t);
	return kept;
}

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

static void fleet_binding_changed(struct sa_server *srv, const char *cred_id)
{
#ifdef HAVE_LIBPQ
	sa_cluster_binding_changed(srv->cluster, cred_id);
#else
	(void)srv;
	(void)cred_id;
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

static bool is_trusted(struct sa_server *srv, const struct sa_flow *from)
{
	return sa_config_trusted(&srv->cfg, &from->ss.sa) || sa_gateways_trusted_name(srv, &from->ss.sa) ||
	       from_fleet_node(srv, from);
}

/* The source address bytes of a flow, for the abuse table. */
static const void *flow_addr(const struct sa_flow *fl, size_t *len)
{
	if (fl->ss.sa.sa_family == AF_INET6) {
		*len = 16;
		return &fl->ss.in6.sin6_addr;
	}
	*len = 4;
	return &fl->ss.in.sin_addr;
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

/* Into this node's failure log and, in a fleet, the queue for the fleet's (for a trunk the store knows). */
static void authfail_record(struct sa_server *srv, const struct sa_authfail *f)
{
	int rc = sa_store_authfail_add(srv->store, f, 1000);
#ifdef HAVE_LIBPQ
	if (rc != SA_STORE_ENOTFOUND)
		sa_cluster_authfail(srv->cluster, f);
#else
	(void)rc;
#endif
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
	size_t alen;
	const void *a = flow_addr(from, &alen);
	/* a UDP source address can be forged: its failures count toward a ban
	 * only once it answered a nonce issued to that address, which it can
	 * only have read there (nonces are bound to their source) */
	bool proven = from->proto != SA_PROTO_UDP || r->nonce_ours;
	/* a trunk's policy refusing a source or transport is configuration, not guessing */
	bool guess = r->reason != SA_AUTH_STALE_NONCE && r->reason != SA_AUTH_SOURCE_NOT_ALLOWED &&
	             r->reason != SA_AUTH_TLS_REQUIRED;
	if (guess && proven &&
	    sa_abuse_failure(srv->abuse, &srv->cfg.abuse, a, alen, (uint64_t)wall_now())) {
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
	sa_auth_check(&srv->auth, m, known ? trunk : NULL, realm, addr, now, &r);
	if (r.ok) {
		srv->metrics.auth_ok++;
		sa_credential_wipe(&r.cred);
		who->cred = r.cred;
		who->retransmission = r.retransmission;
		who->password_version = r.password_version;
		/* it registers or calls from here: forged failures must not ban it
		 * for as long as such a registration may live */
		size_t alen;
		const void *a = flow_addr(from, &alen);
		sa_abuse_vouch(srv->abuse, a, alen, now, now + srv->cfg.reg.max_expires);
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
		reply(srv, m, from, 500, NULL, NULL, NULL);
	else
		reply(srv, m, from, reg ? 401 : 407, NULL, hdrs, NULL);
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
                               enum sa_policy_verdict v)
{
	char addr[64];
	uint16_t port;
	sa_flow_peer(from, addr, sizeof(addr), &port);
	srv->metrics.trunk_refused[v]++;
	if (v == SA_POLICY_CHANNEL_LIMIT)
		reply(srv, m, from, 503, NULL, "Retry-After: 5\r\nReason: SIP;cause=503;text=\"trunk channel limit\"\r\n", NULL);
	else
		reply(srv, m, from, 503, NULL, "Retry-After: 1\r\nReason: SIP;cause=503;text=\"trunk call rate limit\"\r\n",
		      NULL);
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
	if (srv->fleet_nodes > 1) {
		share = *pol;
		sa_policy_share(&share, srv->fleet_nodes);
		pol = &share;
	}
	enum sa_policy_verdict v;
	if (sa_trunk_admit(srv->trunks, trunk, pol, from_customer, (int64_t)sa_now_ms(), &v) < 0) {
		reject(srv, m, from, 503, NULL, "Retry-After: 5\r\n", "out of memory");
		return false;
	}
	if (v == SA_POLICY_ADMIT)
		return true;
	trunk_limit_refuse(srv, m, from, trunk, username, password_version, v);
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
	reply(srv, m, from, 403, v == SA_POLICY_TLS_REQUIRED ? "TLS Required" : "Source Not Allowed", NULL, NULL);
	struct sa_auth_result r = { .reason = v == SA_POLICY_TLS_REQUIRED ? SA_AUTH_TLS_REQUIRED
	                                                                  : SA_AUTH_SOURCE_NOT_ALLOWED };
	char realm[SA_REALM_MAX];
	sa_store_realm(trunk, srv->domain, realm, sizeof(realm));
	sa_auth_username(m, realm, r.username, sizeof(r.username));
	log_auth_failure(srv, m, from, trunk, &r);
	return false;
}

static void handle_register(struct sa_server *srv, const struct sa_msg *m, const struct sa_flow *from,
                            const struct authed *who)
{
	const struct sa_credential *cred = &who->cred;
	struct sa_reg_result res;
	char addr[64];
	struct sa_peer peer;

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
	reply(srv, m, from, res.status, res.reason, res.headers, NULL);
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
		reject(srv, m, from, 503, NULL, "Retry-After: 30\r\n", "call table full");
		return true;
	}
	log_info("event=relay method=%s call_id=\"%s\" trunk=%s cred=%s owner=%s", m->method_name, LOGQ(m->call_id),
	         trunk, rb.cred_id, node);
	struct call_owner own = { .cred_id = rb.cred_id, .trunk_id = "", .inbound = true };
	forward(srv, m, from, &owner, NULL, routes_to_us(srv, m), NULL, &own, rb.cred_id);
	srv->metrics.fleet_relayed++;
	return true;
}

/* Inbound: the gateway calls a trunk: to its most recent registration. */
static void handle_inbound(struct sa_server *srv, const struct sa_msg *m, const struct sa_flow *from)
{
	char trunk[SA_ID_MAX];
	struct sa_binding b;
	struct sa_flow to;

	if (request_trunk(srv, m, trunk, sizeof(trunk)) < 0) {
		reject(srv, m, from, 404, NULL, NULL, "not a trunk host");
		return;
	}
	bool local = sa_registrar_lookup(srv->store, trunk, wall_now(), &b) == 0;
	/* a call another node relays is for a PBX registered here, or for none:
	 * never relayed on (two nodes could pass it back and forth) */
	if (!from_fleet_node(srv, from) && relay_to_owner(srv, m, from, trunk, local ? &b : NULL))
		return;
	if (!local) {
		reject(srv, m, from, 480, NULL, NULL, "trunk not registered");
		return;
	}
	char port[8];
	snprintf(port, sizeof(port), "%u", b.source_port);
	if (flow_for_text(srv, b.transport, b.source, port, &to) < 0) {
		reject(srv, m, from, 500, NULL, NULL, "bad binding address");
		return;
	}
	if (m->method == SA_M_INVITE && calls_full(srv)) {
		reject(srv, m, from, 503, NULL, "Retry-After: 30\r\n", "call table full");
		return;
	}
	/* inbound calls take the trunk's channels too (the rate limits the customer's calls only) */
	struct sa_trunk_policy pol;
	bool held = false;
	if (m->method == SA_M_INVITE && sa_store_trunk_policy_get(srv->store, b.trunk_id, &pol) == SA_STORE_OK) {
		if (!trunk_admit(srv, m, from, b.trunk_id, &pol, "", 0, false))
			return;
		held = true;
	}
	struct call_owner own = { .cred_id = b.cred_id, .trunk_id = b.trunk_id, .inbound = true, .holds_channel = held };
	if (!forward(srv, m, from, &to, b.contact, routes_to_us(srv, m), NULL, &own, b.cred_id) && held)
		channel_release(srv, b.trunk_id);
}

struct park_job {
	char host[SA_UPSTREAM_HOST_MAX + 1];
	struct sa_flow from;
	size_t len;
	char buf[];
};

/* On worker 0, which has the resolver: the request waits there; when the
 * name is answered (or not), worker 0 reads it again and hands it back. */
static void park_job_run(struct sa_server *w0, void *arg)
{
	struct park_job *j = arg;
	if (sa_gateways_park(w0, j->host, &j->from, j->buf, j->len) < 0)
		sa_sip_input(w0, &j->from, j->buf, j->len);   /* no wait: back to its worker, as it is */
	free(j);
}

/* A request waits for its Route's name: 0, or -1 to go on without it. */
static int park(struct sa_server *srv, const char *host, const struct sa_flow *from, const struct sa_msg *m)
{
	if (srv->worker == 0)
		return sa_gateways_park(srv, host, from, m->buf, m->len);
	if (srv->handed)
		return -1;   /* it came back from worker 0: waited once already */
	struct park_job *j = malloc(sizeof(*j) + m->len);
	if (!j)
		return -1;
	snprintf(j->host, sizeof(j->host), "%s", host);
	j->from = *from;
	j->len = m->len;
	memcpy(j->buf, m->buf, m->len);
	sa_workers_post(srv, 0, park_job_run, j);
	return 0;
}

/* Is the TCP/TLS connection of a call's end still open? (UDP: always.) */
static bool flow_open(struct sa_server *srv, const struct sa_flow *fl)
{
	return fl->proto == SA_PROTO_UDP || (fl->conn_id && sa_transport_conn_open(srv, fl->conn_id));
}

/* Pass an ACK for a 2xx on without a transaction: it is end to end. */
static void forward_ack(struct sa_server *srv, const struct sa_msg *m, const struct sa_flow *from,
                        const struct sa_flow *to, unsigned pop)
{
	char via[256], br[SA_TXN_BRANCH_LEN + 1], addr[64];
	struct sa_peer peer;
	if (branch_new(srv, br) < 0)
		return;
	via_value(srv, to, br, via, sizeof(via));
	peer_of(from, addr, sizeof(addr), &peer);
	struct sa_fwd f = { .via = via, .peer = &peer, .pop_route = pop };
	size_t cap = m->len + 1024;
	char *out = malloc(cap);
	long n = out ? sa_proxy_request(m, &f, out, cap) : -1;
	if (n > 0)
		sa_transport_send(srv, to, out, (size_t)n);
	free(out);
}

/* In-dialog requests come back through our Record-Route: loose routing,
 * narrowed to the call (lib/route): only from its ends, only to the other. */
static void handle_in_dialog(struct sa_server *srv, const struct sa_msg *m, const struct sa_flow *from)
{
	unsigned pop = routes_to_us(srv, m);
	if (pop == 0) {
		reject(srv, m, from, 403, NULL, NULL, "in-dialog request without our Route");
		return;
	}
	int side = 0;
	struct sa_call *c = call_find(srv, m, &side);
	if (!c) {
		/* only calls we set up pass without credentials: anything else
		 * would make a forged To tag an open relay */
		if (m->method != SA_M_ACK)
			reject(srv, m, from, 481, NULL, NULL, "no such call");
		return;
	}
	struct sa_flow *end = side == 1 ? &c->caller : &c->callee, *other = side == 1 ? &c->callee : &c->caller;
	struct sa_flow next;
	const struct sa_uri *nu = pop < m->nroutes ? &m->routes[pop].uri : NULL;
	/* a Route past ours naming a host we have no address for: from the call's
	 * own end, the request waits while DNS is asked (nothing here blocks) */
	if (nu && nu->host && !sa_upstream_host_numeric(nu->host) && flow_for_uri(srv, nu, &next) < 0 &&
	    sa_route_same_peer(end, from) && park(srv, nu->host, from, m) == 0)
		return;
	struct sa_route_in_dialog r = { .from = from, .end = end, .end_open = flow_open(srv, end), .other = other,
	                                .has_next_route = nu != NULL,
	                                .next = nu && flow_for_uri(srv, nu, &next) == 0 ? &next : NULL };
	enum sa_route_verdict v = sa_route_in_dialog(&r);
	if (v != SA_ROUTE_FORWARD) {
		srv->metrics.relay_refused++;
		if (m->method == SA_M_ACK)
			log_info("event=ack_dropped reason=\"%s\" call_id=\"%s\"", sa_route_verdict_reason(v), LOGQ(m->call_id));
		else
			reject(srv, m, from, 403, NULL, NULL, sa_route_verdict_reason(v));
		return;
	}
	if (!sa_route_same_peer(end, from))
		*end = *from;   /* the end came back on a new connection: answer it there */
	struct sa_dialog_side *ds = side == 1 ? &c->d.caller : &c->d.callee;
	if (m->method != SA_M_ACK && m->cseq > ds->cseq)
		ds->cseq = m->cseq;
	struct sa_flow to = *other;
	if (m->method == SA_M_ACK) {
		forward_ack(srv, m, from, &to, pop);
		return;
	}
	char cred[SA_ID_MAX];
	snprintf(cred, sizeof(cred), "%s", c->d.cred_id);
	if (m->method == SA_M_BYE) {
		log_debug("event=call_end call_id=\"%s\" cred=%s trunk=%s reason=bye", LOGQ(c->d.call_id), c->d.cred_id,
		         c->d.trunk_id);
		call_remove(srv, c);
	}
	forward(srv, m, from, &to, NULL, pop, NULL, NULL, cred);
}

/* Out to the gateways: the first in the failover order; an INVITE keeps
 * the rest to move on to. No gateway with an address: 503. false when no
 * transaction was made (the sender has its answer). */
static bool forward_upstream(struct sa_server *srv, const struct sa_msg *m, const struct sa_flow *from,
                             const char *realm, const struct call_owner *own)
{
	struct sa_flow flows[SA_UPSTREAM_MAX];
	unsigned n = sa_gateways_order(srv, flows, SA_UPSTREAM_MAX), pop = routes_to_us(srv, m);
	if (n == 0) {
		reject(srv, m, from, 503, NULL, "Retry-After: 5\r\n", sa_gateways_none_reason(srv));
		return false;
	}
	struct sa_txn *t = forward(srv, m, from, &flows[0], NULL, pop, realm, own, own->cred_id);
	if (!t || m->method != SA_M_INVITE)
		return t != NULL;
	sa_gateways_sent(srv, &flows[0]);
	fo_attach(t, flows, n);
	if (t->send_failed)
		fo_next(t, SA_UP_TRANSPORT);
	return true;
}

static void handle_cancel(struct sa_server *srv, const struct sa_msg *m, const struct sa_flow *from)
{
	char key[SA_TXN_KEY_MAX];
	struct sa_txn *t = txn_by_skey(srv, sa_txn_cancelled_key(m, key));
	/* a branch and a Via can be copied; only the INVITE's sender may cancel it */
	if (sa_route_cancel(t != NULL, t && sa_route_same_sender(&t->from, from)) != 0) {
		reject(srv, m, from, 481, NULL, NULL, "CANCEL for no transaction");
		return;
	}
	reply(srv, m, from, 200, NULL, NULL, NULL);
	if (t->fo)
		t->fo->cancelled = true;   /* it stays on the gateway it is on */
	if (!txn_finished(t))
		send_hop_request(srv, t, NULL, true);   /* the 487 comes back from upstream (the live branch) */
}

/* We support no extensions: Proxy-Require always, and Require where we are
 * the UAS (REGISTER), get 420 listing what was asked (RFC 3261 §8.2.2.3, §16.3). */
static const struct sa_hdr *required_extension(const struct sa_msg *m)
{
	const struct sa_hdr *h = sa_msg_header(m, SA_H_PROXY_REQUIRE, 0);
	if (!h && m->method == SA_M_REGISTER)
		h = sa_msg_header(m, SA_H_REQUIRE, 0);
	return h;
}

static void refuse_extension(struct sa_server *srv, const struct sa_msg *m, const struct sa_flow *from,
                             const struct sa_hdr *h)
{
	char extra[600];
	snprintf(extra, sizeof(extra), "Unsupported: %.*s\r\n", (int)(h->vlen > 500 ? 500 : h->vlen), h->value);
	reject(srv, m, from, 420, NULL, extra, "unsupported extension required");
}

/* OPTIONS for the proxy itself (no user part): a keep-alive, answered without auth. */
static bool options_for_us(const struct sa_msg *m)
{
	return m->method == SA_M_OPTIONS && (!m->ruri_user || !m->ruri_user[0]) && !m->to_tag;
}

static void handle_customer(struct sa_server *srv, struct sa_msg *m, const struct sa_flow *from);

/* What lib/route needs to know of a request before it decides its way. A
 * banned source is looked at no further (its verdict needs nothing else):
 * no transaction lookup and no tag hash, so that its flood costs nothing. */
static void request_facts(struct sa_server *srv, const struct sa_msg *m, const struct sa_flow *from,
                          char key[SA_TXN_KEY_MAX], struct sa_txn **tp, struct sa_route_request *r)
{
	size_t alen;
	const void *a = flow_addr(from, &alen);
	*r = (struct sa_route_request){ .method = m->method, .to_tag = m->to_tag != NULL,
	                                .trusted = is_trusted(srv, from) };
	r->banned = !r->trusted && sa_abuse_banned(srv->abuse, &srv->cfg.abuse, a, alen, (uint64_t)wall_now());
	*tp = NULL;
	if (r->banned)
		return;
	struct sa_txn *t = m->method == SA_M_CANCEL ? NULL : txn_by_skey(srv, sa_txn_server_key(m, key));
	*tp = t;
	r->txn_match = t != NULL;
	r->txn_same_sender = t && sa_route_same_sender(&t->from, from);
	r->txn_answered = t && t->resp;
	r->stopping = srv->stopping;
	r->options_for_us = options_for_us(m);
	r->max_forwards_zero = m->max_forwards == 0;
	r->requires_extension = required_extension(m) != NULL;
	if (!t && m->method == SA_M_ACK && m->to_tag) {   /* (a matched ACK is absorbed first) */
		char tag[17];
		sa_msg_local_tag(m, srv->tag_key, tag);
		r->own_ack = strcmp(m->to_tag, tag) == 0;
	}
}

static void handle_request(struct sa_server *srv, struct sa_msg *m, const struct sa_flow *from)
{
	char key[SA_TXN_KEY_MAX];

	srv->metrics.sip_requests[m->method < 16 ? m->method : 0]++;
	srv->metrics.sip_requests_by_transport[from->proto]++;
	struct sa_txn *t;
	struct sa_route_request facts;
	request_facts(srv, m, from, key, &t, &facts);
	struct sa_route_decision d = sa_route_request(&facts);
	switch (d.action) {
	case SA_RA_DROP:
		return;
	case SA_RA_DROP_BANNED:
		srv->metrics.banned_dropped++;
		return;
	case SA_RA_REFUSE:
		reject(srv, m, from, d.status, NULL, d.extra, d.reason);
		return;
	case SA_RA_ABSORB:
		srv->metrics.sip_retransmissions_absorbed++;
		if (d.resend)
			sa_transport_send(srv, from, t->resp, t->resp_len);
		return;
	case SA_RA_OPTIONS:
		reply(srv, m, from, 200, NULL, "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, UPDATE, PRACK, INFO, REFER, NOTIFY, MESSAGE\r\n", NULL);
		return;
	case SA_RA_UNSUPPORTED:
		refuse_extension(srv, m, from, required_extension(m));
		return;
	case SA_RA_CANCEL:
		handle_cancel(srv, m, from);
		return;
	case SA_RA_IN_DIALOG:
		handle_in_dialog(srv, m, from);
		return;
	case SA_RA_INBOUND:
		handle_inbound(srv, m, from);
		return;
	case SA_RA_AUTHENTICATE:
		handle_customer(srv, m, from);
		return;
	}
}

/* A request from a customer's PBX: its trunk's controls, then digest (or the
 * trunk's trusted network), then the registrar or the gateways. */
static void handle_customer(struct sa_server *srv, struct sa_msg *m, const struct sa_flow *from)
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
	} else if (!authenticate(srv, m, from, policy ? &pol : NULL, &who, realm, sizeof(realm))) {
		return;
	}
	if (m->method == SA_M_REGISTER) {
		handle_register(srv, m, from, &who);
	} else {
		bool invite = m->method == SA_M_INVITE;
		struct call_owner own = { .cred_id = cred->id, .trunk_id = cred->trunk_id, .holds_channel = invite };
		if (invite && calls_full(srv))
			reject(srv, m, from, 503, NULL, "Retry-After: 30\r\n", "call table full");
		else if (invite && !trunk_admit(srv, m, from, cred->trunk_id, &pol, cred->username, who.password_version,
		                                true))
			;   /* refused with a 503 that names the limit */
		else if (!forward_upstream(srv, m, from, realm, &own) && invite)
			channel_release(srv, cred->trunk_id);
	}
	OPENSSL_cleanse(&who, sizeof(who));
}

/* With several workers: the one that holds what m belongs to, or -1 (this
 * one will do: a new request, or nothing of ours). An answer names the
 * worker in our branch; an ACK, a CANCEL or an in-dialog request is found
 * by its Call-ID. A new INVITE, a REGISTER or any request without a To tag
 * stays where the kernel put it. */
static int message_owner(struct sa_server *srv, const struct sa_msg *m, const struct sa_flow *from)
{
	if (!m->request) {
		int w = sa_txn_branch_worker(m->branch);
		return w >= 0 && (unsigned)w < srv->nworkers ? w : -1;
	}
	if (m->method != SA_M_ACK && m->method != SA_M_CANCEL && !(m->to_tag && m->to_tag[0]))
		return -1;
	/* a banned source is dropped here at the cost of its ban lookup: no directory, no hand-over */
	size_t alen;
	const void *a = flow_addr(from, &alen);
	if (!is_trusted(srv, from) && sa_abuse_banned(srv->abuse, &srv->cfg.abuse, a, alen, (uint64_t)wall_now()))
		return -1;
	return sa_calldir_owner(srv, m->call_id);
}

void sa_sip_input(struct sa_server *srv, const struct sa_flow *from, const char *buf, size_t len)
{
	struct sa_msg m;
	struct sa_msg_error err = { 0 };

	if (sa_msg_parse(&m, buf, len, from->proto != SA_PROTO_UDP, &err) < 0) {
		char addr[64];
		uint16_t port;
		sa_flow_peer(from, addr, sizeof(addr), &port);
		/* a request with a Via can be answered from the headers it has
		 * (RFC 3261 §8.2.6); never a response, never an ACK */
		bool answerable = m.nhdr > 0 && len > 8 && memcmp(buf, "SIP/2.0 ", 8) != 0 &&
		                  memcmp(buf, "ACK ", 4) != 0 && sa_msg_header(&m, SA_H_VIA, 0) &&
		                  sa_msg_header(&m, SA_H_CSEQ, 0) && sa_msg_header(&m, SA_H_FROM, 0) &&
		                  sa_msg_header(&m, SA_H_TO, 0);
		log_info("event=bad_message reason=\"%s\" status=%d src=%s:%u proto=%s", err.reason,
		         answerable ? err.status : 0, addr, port, sa_proto_name(from->proto));
		if (answerable && err.status)
			reply(srv, &m, from, err.status, NULL, NULL, NULL);
		sa_msg_free(&m);
		return;
	}
	int owner = srv->workers && !srv->handed ? message_owner(srv, &m, from) : -1;
	if (owner >= 0 && (unsigned)owner != srv->worker)
		sa_workers_hand(srv, (unsigned)owner, from, buf, len);
	else if (m.request)
		handle_request(srv, &m, from);
	else
		handle_response(srv, &m, from);
	sa_msg_free(&m);
}

/* Calls outlive a restart: written at a clean stop, read at start, so
 * in-dialog requests and revocation keep working across it. The file is JSON
 * lines: a header naming its version, then one call per line, listeners by
 * their address (their order may change with the configuration). */

static void calls_path(struct sa_server *srv, char *out, size_t len)
{
	snprintf(out, len, "%s/calls.state", srv->cfg.store_path);
}

/* An end's flow as calls.state writes it: the listener named by its address. */
static void flow_text(struct sa_server *srv, const struct sa_flow *fl, struct sa_call_flow_text *ft)
{
	uint16_t port;
	sa_flow_peer(fl, ft->address, sizeof(ft->address), &port);
	ft->port = port;
	snprintf(ft->transport, sizeof(ft->transport), "%s", sa_proto_name(fl->proto));
	const struct sa_endpoint *ep = local_ep(srv, fl->lidx);
	bool v6 = strchr(ep->host, ':') != NULL;
	snprintf(ft->listener, sizeof(ft->listener), "%s:%s%s%s:%u", sa_proto_name(ep->proto), v6 ? "[" : "", ep->host,
	         v6 ? "]" : "", ep->port);
}

/* A saved flow back: the listener by its address (or any of the transport). */
static int flow_from_text(struct sa_server *srv, const struct sa_call_flow_text *ft, struct sa_flow *fl)
{
	char portstr[8];
	snprintf(portstr, sizeof(portstr), "%u", ft->port);
	if (flow_for_text(srv, ft->transport, ft->address, portstr, fl) < 0)
		return -1;
	struct sa_endpoint ep;
	if (sa_endpoint_parse(ft->listener, &ep) == 0)
		for (unsigned i = 0; i < srv->nlisteners; i++)
			if (srv->listeners[i].ep.proto == ep.proto && srv->listeners[i].ep.port == ep.port &&
			    strcmp(srv->listeners[i].ep.host, ep.host) == 0)
				fl->lidx = i;
	return 0;   /* connections do not survive a restart: conn_id stays 0 */
}

static bool write_line(FILE *f, char *line)
{
	bool ok = line && fprintf(f, "%s\n", line) > 0;
	free(line);
	return ok;
}

int sa_sip_calls_save(struct sa_server *srv)
{
	char path[PATH_MAX + 16], tmp[PATH_MAX + 32];
	if (!srv->calls)
		return 0;   /* never started: nothing to save, and nothing to overwrite */
	unsigned count = 0;
	for (unsigned i = 0; i < sa_workers_count(srv); i++)
		count += sa_calls_count(sa_worker_at(srv, i)->calls);
	calls_path(srv, path, sizeof(path));
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	FILE *f = fopen(tmp, "w");
	if (!f)
		return -1;
	/* every worker's calls (their threads are joined); all come back to worker 0 */
	bool ok = write_line(f, sa_calls_header_line(count));
	for (unsigned i = 0; i < sa_workers_count(srv); i++) {
		struct sa_server *w = sa_worker_at(srv, i);
		for (struct sa_call *c = w->calls ? sa_calls_oldest(w->calls) : NULL; ok && c; c = sa_calls_newer(c)) {
			struct sa_call_flow_text ends[2];
			flow_text(srv, &c->caller, &ends[0]);
			flow_text(srv, &c->callee, &ends[1]);
			ok = write_line(f, sa_call_line(c, ends));
		}
	}
	ok = fclose(f) == 0 && ok;
	if (!ok || rename(tmp, path) < 0) {
		unlink(tmp);
		return -1;
	}
	log_info("event=calls_saved count=%u", count);
	return 0;
}

static struct sa_call *call_from_line(struct sa_server *srv, const char *line)
{
	struct sa_call_flow_text ends[2];
	struct sa_call *c = sa_call_from_line(line, ends);
	if (c && (flow_from_text(srv, &ends[0], &c->caller) < 0 || flow_from_text(srv, &ends[1], &c->callee) < 0)) {
		sa_call_free(c);
		return NULL;
	}
	return c;
}

static void calls_load(struct sa_server *srv)
{
	char path[PATH_MAX + 16];
	calls_path(srv, path, sizeof(path));
	FILE *f = fopen(path, "r");
	if (!f)
		return;
	char *line = NULL;
	size_t cap = 0;
	unsigned bad = 0;
	if (getline(&line, &cap, f) < 0 || !sa_calls_header_ok(line)) {
		/* another version (or no header): never guess at its layout */
		log_warn("event=calls_not_restored path=%s reason=\"not a version %d calls file\"", path,
		         SA_CALLS_FILE_VERSION);
		free(line);
		fclose(f);
		return;
	}
	while (getline(&line, &cap, f) > 0 && sa_calls_count(srv->calls) < srv->cfg.max_calls) {
		struct sa_call *c = call_from_line(srv, line);
		if (!c || sa_calls_add(srv->calls, c) < 0) {
			sa_call_free(c);
			bad++;
		} else {
			channel_hold(srv, c->d.trunk_id);   /* whatever the limit is now */
		}
	}
	free(line);
	fclose(f);
	unlink(path);
	log_info("event=calls_restored count=%u refused=%u", sa_calls_count(srv->calls), bad);
}

/* Summed over the workers, read while they run: each figure is a word read
 * at once, and /metrics may be a moment behind one of them. */
#define PEEK(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

void sa_sip_gauges(const struct sa_server *srv, struct sa_metrics *m)
{
	m->banned_active = sa_abuse_banned_count(srv->abuse, (uint64_t)wall_now());
	m->calls_active = m->transactions = m->transaction_bytes = m->byes_pending = m->byes_queued = 0;
	for (unsigned i = 0; i < sa_workers_count(srv); i++) {
		const struct sa_server *w = sa_worker_at(srv, i);
		m->calls_active += sa_calls_count(w->calls);
		m->transactions += PEEK(w->ntxns);
		m->transaction_bytes += sa_txn_budget_bytes_used(w->txn_budget);
		m->byes_pending += PEEK(w->byes_pending);
		m->byes_queued += w->pacer ? sa_pacer_queued(w->pacer) : 0;
	}
}

unsigned sa_sip_in_flight(const struct sa_server *srv)
{
	unsigned n = 0;
	for (unsigned i = 0; i < sa_workers_count(srv); i++)
		n += PEEK(sa_worker_at(srv, i)->nactive);
	return n;
}

/* Worker 0 makes what the workers share (trunk channels, bans, the
 * gateways, the tag key) and restores the saved calls; the others (copies
 * made by worker.c) keep those and make their own tables. */
int sa_sip_init(struct sa_server *srv)
{
	bool first = srv->worker == 0;
	srv->txns = sa_txn_index_new();
	srv->calls = sa_calls_new();
	TAILQ_INIT(&srv->txn_ringing);
	if (first) {
		srv->trunks = sa_trunk_table_new();
		srv->abuse = sa_abuse_new(65536);
		if (RAND_bytes(srv->tag_key, sizeof(srv->tag_key)) != 1)
			return -1;
	}
	/* each transaction in progress holds at most a source and a credential
	 * (per worker: the table's cap is each worker's) */
	srv->txn_budget = sa_txn_budget_new(srv->cfg.max_transactions);
	for (int c = 0; c < LINGER_CLASSES; c++)
		TAILQ_INIT(&srv->txn_done[c]);
	if (!srv->txns || !srv->calls || !srv->trunks || !srv->abuse || !srv->txn_budget)
		return -1;
	if (first && sa_gateways_start(srv) < 0)
		return -1;
	srv->auth.uri_is_local = is_us_cb;   /* a digest uri naming us stands for the Request-URI */
	srv->auth.uri_is_local_arg = srv;
	if (first) {
		sa_store_generation(srv->store, &srv->store_generation);
		calls_load(srv);
		srv->revoke_poll = event_new(srv->base, -1, EV_PERSIST, revoke_poll_cb, srv);
		struct timeval poll = { .tv_sec = 0, .tv_usec = 250000 };
		if (!srv->revoke_poll || event_add(srv->revoke_poll, &poll) < 0)
			return -1;
	}
	if (!(srv->pacer = sa_pacer_new()) || !(srv->pace_timer = evtimer_new(srv->base, pace_timer_cb, srv)))
		return -1;
	srv->txn_sweep = event_new(srv->base, -1, EV_PERSIST, txn_sweep_cb, srv);
	struct timeval sweep = { .tv_sec = 0, .tv_usec = SWEEP_MS * 1000 };
	if (!srv->txn_sweep || event_add(srv->txn_sweep, &sweep) < 0)
		return -1;
	return 0;
}

void sa_sip_calls_directory(struct sa_server *srv)
{
	for (struct sa_call *c = sa_calls_oldest(srv->calls); c; c = sa_calls_newer(c))
		sa_calldir_take(srv, c->d.call_id);
}

static void txn_drained(struct sa_txn_node *n, void *arg)
{
	(void)arg;
	txn_free(TXN_OF(n));
}

void sa_sip_shutdown(struct sa_server *srv)
{
	if (srv->txns)
		sa_txn_index_drain(srv->txns, txn_drained, NULL);
	sa_txn_index_free(srv->txns);
	srv->txns = NULL;
	if (srv->pace_timer)
		event_free(srv->pace_timer);
	srv->pace_timer = NULL;
	sa_pacer_free(srv->pacer);
	srv->pacer = NULL;
	if (srv->txn_sweep)
		event_free(srv->txn_sweep);
	srv->txn_sweep = NULL;
	sa_calls_free(srv->calls);
	srv->calls = NULL;
	sa_txn_budget_free(srv->txn_budget);
	srv->txn_budget = NULL;
	if (srv->worker == 0) {   /* the shared ones */
		sa_trunk_table_free(srv->trunks);
		sa_abuse_free(srv->abuse);
		OPENSSL_cleanse(srv->tag_key, sizeof(srv->tag_key));
		sa_gateways_stop(srv);
	}
	srv->trunks = NULL;
	srv->abuse = NULL;
	if (srv->revoke_poll)
		event_free(srv->revoke_poll);
	srv->revoke_poll = NULL;
}
