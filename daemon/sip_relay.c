/* sip_relay.c: requests out to the next hop, failover between gateways, responses back. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
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

static void conn_waiter_add(struct sa_server *srv, const struct sa_flow *fl, const char *skey);

/* Keep r as the request t sends its next hop and send it: the
 * retransmission timer armed. */
static void txn_send_kept(struct sa_txn *t, struct sa_txn_req *r, const char *method)
{
	struct sa_server *srv = t->srv;
	char callid[256];
	txn_keep_req(t, r);
	srv->metrics.sip_forwarded++;
	int sent = sa_transport_send(srv, &t->to, r->bytes, r->len), err = errno;
	/* a datagram the socket cannot take now is as one lost: sent again at
	 * T1, not taken for a next hop that cannot be reached */
	t->send_failed = sent < 0 && !(t->to.proto == SA_PROTO_UDP &&
	                               (err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS || err == EINTR));
	if (sent == 1)
		conn_waiter_add(srv, &t->to, t->skey);
	if (sent < 0)
		log_warn("event=send_failed method=%s call_id=\"%s\" error=\"%s\"", method,
		         LOGQ(req_call_id(r, callid, sizeof(callid))), strerror(err));
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
	if (strip_realm && t->own && !t->inbound) {   /* a customer's request to the gateways: who it is */
		f.trunk_id = t->own->trunk_id;
		f.cred_id = t->own->cred_id;
	}
	struct sa_txn_req *r = sa_txn_req_new(m, &f);
	if (!r)
		return -1;
	txn_send_kept(t, r, m->method_name);
	return 0;
}

/* Forward m statefully to `to`: 100 Trying for INVITE, our Via, Record-Route.
 * The transaction is charged to budget_cred (the credential whose call or
 * request it is; NULL for none). Returns it while it waits for an answer. */
struct sa_txn *sip_forward(struct sa_server *srv, const struct sa_msg *m, const struct sa_flow *from,
                           const struct sa_flow *to, const char *ruri, unsigned pop_routes,
                           const char *strip_realm, const struct call_owner *owner, const char *budget_cred)
{
	const char *why;
	struct sa_txn *t = txn_new(srv, m, from, budget_cred, m->len + 2048, &why);

	if (!t) {
		srv->metrics.transactions_refused++;
		sip_reject(srv, m, from, 503, "Service Unavailable", "Retry-After: 5\r\n", why);
		return NULL;
	}
	if (m->method == SA_M_INVITE) {
		/* its Timestamp copied into the 100 (RFC 3261 §8.2.6.1) */
		const struct sa_hdr *ts = sa_msg_header(m, SA_H_TIMESTAMP, 0);
		char extra[160];
		if (ts && ts->vlen < sizeof(extra) - 16)
			snprintf(extra, sizeof(extra), "Timestamp: %.*s\r\n", (int)ts->vlen, ts->value);
		sip_reply(srv, m, from, 100, NULL, ts && ts->vlen < sizeof(extra) - 16 ? extra : NULL, t);
	}
	t->to = *to;
	if (owner && (t->own || (t->own = calloc(1, sizeof(*t->own))))) {
		sa_str_copy(t->own->cred_id, sizeof(t->own->cred_id), owner->cred_id);
		sa_str_copy(t->own->trunk_id, sizeof(t->own->trunk_id), owner->trunk_id);
		t->inbound = owner->inbound;
		t->holds_channel = owner->holds_channel;
		if (m->method == SA_M_INVITE) {
			/* listed as an early call, and found here by revocation (a call of a
			 * trunk that authenticates by address has no credential to lose) */
			txn_ringing_add(t, m);
		}
	}
	if (txn_send_request(t, m, ruri, pop_routes, strip_realm, owner != NULL) < 0) {
		sip_reply(srv, m, from, 513, NULL, NULL, t);
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
void send_hop_request(struct sa_server *srv, struct sa_txn *t, const struct sa_msg *resp, bool cancel)
{
	char out[8192];
	if (!t->req)
		return;
	long n = cancel ? sa_txn_cancel(t->req, out, sizeof(out)) : sa_txn_ack(t->req, resp, out, sizeof(out));
	if (n > 0)
		sa_transport_send(srv, &t->to, out, (size_t)n);
}

/* ---- failover between gateways ---- */

static void fo_timer_cb(evutil_socket_t fd, short what, void *arg);

static void fo_arm(struct sa_txn *t)
{
	unsigned ms = t->fo->bind ? t->srv->cfg.inbound_failover_ms : t->srv->cfg.failover_timeout_ms;
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

/* The live next hop did `ev` (a 503, a failure to send, silence). Send the
 * INVITE to the next one when there is one and no final answer went back;
 * true when it went. A gateway's health hears of it; an inbound INVITE's
 * next registration takes the Request-URI and the call. */
static bool fo_next(struct sa_txn *t, enum sa_up_event ev)
{
	struct sa_server *srv = t->srv;
	struct txn_failover *fo = t->fo;
	if (!fo || !fo->bind)
		sa_gateways_report(srv, &t->to, ev);
	if (!fo || fo->cancelled || txn_finished(t) || fo->cur + 1 >= fo->n)
		return false;
	char a[64], b[64];
	uint16_t pa, pb;
	sa_flow_peer(&t->to, a, sizeof(a), &pa);
	sa_flow_peer(&fo->flows[fo->cur + 1], b, sizeof(b), &pb);
	if (!fo->bind)
		sa_gateways_failover(srv, &t->to);
	if (!t->req)
		return false;
	char callid[256];
	log_info("event=failover reason=%s from=%s:%s:%u to=%s:%s:%u call_id=\"%s\" target=%s", sa_up_event_name(ev),
	         sa_proto_name(t->to.proto), a, pa, sa_proto_name(fo->flows[fo->cur + 1].proto), b, pb,
	         LOGQ(req_call_id(t->req, callid, sizeof(callid))), fo->bind ? "registration" : "gateway");
	fo->cur++;
	if (ev == SA_UP_TIMEOUT)
		fo_abandon(t);
	else
		txn_rebranch(t);
	t->to = fo->flows[fo->cur];
	t->upstream_status = 0;   /* a new client transaction (RFC 3263 §4.3) */
	memset(&t->early_tags, 0, sizeof(t->early_tags));   /* the last gateway's early dialogs end with it */
	t->state = sa_txn_initial(t->method);
	t->started_ms = sa_now_ms();
	/* the request as the last one got it, with our Via and Record-Route for
	 * this one (and its Contact as the Request-URI, for a registration) */
	struct hop_ours o;
	hop_ours_fill(t, true, &o);
	const struct fo_binding *nb = fo->bind ? &fo->bind[fo->cur] : NULL;
	struct sa_txn_req *r = sa_txn_req_retarget(t->req, nb ? nb->contact : NULL, o.via, o.rr);
	if (!r)
		return false;
	if (nb) {
		srv->metrics.inbound_failovers++;
		if (t->own)   /* the call is the credential's that registered there */
			sa_str_copy(t->own->cred_id, sizeof(t->own->cred_id), nb->cred_id);
	}
	txn_send_kept(t, r, "INVITE");
	if (!nb)
		sa_gateways_sent(srv, &t->to);
	fo_arm(t);
	if (t->send_failed)
		txn_unreachable(t);   /* bounded: each call moves one gateway on */
	return true;
}

/* The live gateway said nothing within failover_timeout_ms. */
static void fo_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sa_txn *t = arg;
	switch (sa_route_failover_timer(txn_finished(t), t->upstream_status, t->fo->cancelled)) {
	case SA_FO_WAIT:
		break;
	case SA_FO_END_487:
		/* cancelled while the gateway said nothing: its CANCEL still waits for a
		 * first answer (RFC 3261 §9.1), on the branch left behind, which CANCELs
		 * a late provisional and ends a late 2xx (fo_abandon's rules) */
		fo_abandon(t);
		answer_downstream(t, 487);
		txn_complete(t);
		break;
	case SA_FO_NEXT:
		if (!fo_next(t, SA_UP_TIMEOUT) && t->fo->silence_ends && !txn_finished(t) && t->upstream_status == 0) {
			char addr[64], callid[256];
			uint16_t port;
			sa_flow_peer(&t->to, addr, sizeof(addr), &port);
			t->srv->metrics.next_hop_unreachable++;
			log_info("event=next_hop_unreachable to=%s:%s:%u method=%s status=480 reason=silent call_id=\"%s\"",
			         sa_proto_name(t->to.proto), addr, port, sa_method_text(t->method),
			         t->req ? LOGQ(req_call_id(t->req, callid, sizeof(callid))) : "");
			fo_abandon(t);   /* a late answer still gets its CANCEL, or ACK and BYE */
			answer_downstream(t, 480);
			txn_complete(t);
		}
		break;
	}
}

/* Keep the gateways (or registrations, bind) the INVITE may go to next:
 * flows[1..n). Its request is t's own, rewritten for each
 * (sa_txn_req_retarget). */
static void fo_attach_to(struct sa_txn *t, const struct sa_flow *flows, const struct fo_binding *bind, unsigned n)
{
	struct txn_failover *fo = calloc(1, sizeof(*fo) + n * sizeof(fo->flows[0]));
	if (fo && bind && (fo->bind = malloc(n * sizeof(*bind))))
		memcpy(fo->bind, bind, n * sizeof(*bind));
	if (!fo || (bind && !fo->bind) || !(fo->timer = evtimer_new(t->srv->base, fo_timer_cb, t))) {
		if (fo)
			free(fo->bind);
		free(fo);
		return;   /* no failover for this one: it still goes to the first */
	}
	memcpy(fo->flows, flows, n * sizeof(flows[0]));
	fo->n = n;
	t->fo = fo;
	fo_arm(t);
}

static void fo_attach(struct sa_txn *t, const struct sa_flow *flows, unsigned n)
{
	fo_attach_to(t, flows, NULL, n);
}

void fo_attach_bindings(struct sa_txn *t, const struct sa_flow *flows, const struct fo_binding *bind, unsigned n)
{
	if (n > 1 && t->srv->cfg.inbound_failover_ms > 0 && t->method == SA_M_INVITE)
		fo_attach_to(t, flows, bind, n);
}

/* The other node is sipauthd, which answers an INVITE 100 Trying at once:
 * nothing at all from it within failover_timeout_ms, and it is gone (killed
 * before its heartbeat went stale, about 4 s). The gateway gets 480 then,
 * and can route the call elsewhere, not 408 after Timer B (32 s). */
void fo_attach_relay(struct sa_txn *t, const char *cred_id)
{
	struct fo_binding b;
	if (t->srv->cfg.inbound_failover_ms == 0 || t->method != SA_M_INVITE)
		return;
	sa_str_copy(b.cred_id, sizeof(b.cred_id), cred_id);
	b.contact[0] = '\0';
	fo_attach_to(t, &t->to, &b, 1);
	if (t->fo)
		t->fo->silence_ends = true;
}

/* The next hop of t could not be reached: a send that failed at once, or
 * the connection opened for it that failed before it answered anything.
 * RFC 3261 §16.9: as if it had answered 503, so the sender has its final
 * answer now, not at Timer B or F (32 s later): 480 when the next hop is a
 * PBX (as when it has no registration), 503 when it is a gateway (as its
 * own 503 is relayed). An INVITE to the gateways first tries the next. */
void txn_unreachable(struct sa_txn *t)
{
	struct sa_server *srv = t->srv;
	if (t->fo && t->upstream_status < 200 && fo_next(t, SA_UP_TRANSPORT))
		return;
	if (t->local || t->probe || t->abandoned || txn_finished(t) || t->upstream_status != 0)
		return;
	int status = t->cancel_pending ? 487 : is_trusted(srv, &t->from) ? 480 : 503;
	char addr[64], callid[256];
	uint16_t port;
	sa_flow_peer(&t->to, addr, sizeof(addr), &port);
	srv->metrics.next_hop_unreachable++;
	log_info("event=next_hop_unreachable to=%s:%s:%u method=%s status=%d call_id=\"%s\"",
	         sa_proto_name(t->to.proto), addr, port, sa_method_text(t->method), status,
	         t->req ? LOGQ(req_call_id(t->req, callid, sizeof(callid))) : "");
	answer_downstream(t, status);
	txn_complete(t);
}

/* A request sent down a connection still being opened: if the connection
 * fails, its transaction is the one to tell (found by key: acting on one
 * may make room in the table, and so free a finished one). Dropped once
 * the connection is up; bounded, beyond which Timer B or F tells. */
struct sa_conn_waiter {
	struct sa_flow fl;
	char *skey;
};

#define CONN_WAITERS_MAX 65536

static void conn_waiter_add(struct sa_server *srv, const struct sa_flow *fl, const char *skey)
{
	if (srv->nconn_waiters == srv->conn_waiters_cap) {
		size_t cap = srv->conn_waiters_cap ? srv->conn_waiters_cap * 2 : 16;
		struct sa_conn_waiter *w;
		if (cap > CONN_WAITERS_MAX || !(w = realloc(srv->conn_waiters, cap * sizeof(*w))))
			return;
		srv->conn_waiters = w;
		srv->conn_waiters_cap = cap;
	}
	struct sa_conn_waiter *w = &srv->conn_waiters[srv->nconn_waiters];
	if ((w->skey = strdup(skey)) == NULL)
		return;
	w->fl = *fl;
	srv->nconn_waiters++;
}

/* The waiters on fl, taken out (the caller frees each skey and the array). */
static char **conn_waiters_take(struct sa_server *srv, const struct sa_flow *fl, size_t *n)
{
	char **keys = NULL;
	size_t k = 0, j = 0;
	for (size_t i = 0; i < srv->nconn_waiters; i++) {
		struct sa_conn_waiter *w = &srv->conn_waiters[i];
		if (!sa_route_same_peer(&w->fl, fl)) {
			srv->conn_waiters[j++] = *w;
			continue;
		}
		char **grown = realloc(keys, (k + 1) * sizeof(*keys));
		if (!grown) {
			free(w->skey);
			continue;
		}
		keys = grown;
		keys[k++] = w->skey;
	}
	srv->nconn_waiters = j;
	*n = k;
	return keys;
}

void sip_conn_waiters_free(struct sa_server *srv)
{
	for (size_t i = 0; i < srv->nconn_waiters; i++)
		free(srv->conn_waiters[i].skey);
	free(srv->conn_waiters);
	srv->conn_waiters = NULL;
	srv->nconn_waiters = srv->conn_waiters_cap = 0;
}

void sa_sip_flow_connected(struct sa_server *srv, const struct sa_flow *fl)
{
	size_t n;
	char **keys = conn_waiters_take(srv, fl, &n);
	for (size_t i = 0; i < n; i++)
		free(keys[i]);
	free(keys);
}

/* Every transaction still waiting on fl, by key: a connection of ours that
 * was up and broke (rare: once per connection, not per request). */
struct flow_waiters {
	const struct sa_flow *fl;
	char **keys;
	size_t n, cap;
};

static void flow_waiter_cb(struct sa_txn_node *n, void *arg)
{
	struct flow_waiters *w = arg;
	struct sa_txn *t = TXN_OF(n);
	if (txn_finished(t) || t->local || t->upstream_status >= 200 || !sa_route_same_peer(&t->to, w->fl))
		return;
	if (w->n == w->cap) {
		size_t cap = w->cap ? w->cap * 2 : 16;
		char **k = realloc(w->keys, cap * sizeof(*k));
		if (!k)
			return;
		w->keys = k;
		w->cap = cap;
	}
	if ((w->keys[w->n] = strdup(t->skey)) != NULL)
		w->n++;
}

/* A connection we opened failed: while being opened, the requests sent
 * down it; once up, any request still waiting on its peer. */
void sa_sip_flow_failed(struct sa_server *srv, const struct sa_flow *fl, bool connecting)
{
	struct flow_waiters w = { .fl = fl };
	if (connecting)
		w.keys = conn_waiters_take(srv, fl, &w.n);
	else
		sa_txn_index_each(srv->txns, flow_waiter_cb, &w);
	for (size_t i = 0; i < w.n; i++) {
		struct sa_txn *t = txn_by_skey(srv, w.keys[i]);
		if (t && !txn_finished(t) && sa_route_same_peer(&t->to, fl))
			txn_unreachable(t);
		free(w.keys[i]);
	}
	free(w.keys);
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
	if (!c) {
		response_refused(srv, m, from, "no such transaction");
		return;
	}
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
	static const char *const outcome[] = { [SA_LATE_CANCEL] = "cancel", [SA_LATE_ACK] = "ack",
	                                       [SA_LATE_ACK_BYE] = "ack_bye" };
	char addr[64];
	uint16_t port;
	struct sa_route_late_answer a = { .status = m->status, .invite = m->method == SA_M_INVITE,
	                                  .finished = txn_finished(t), .cancel_sent = t->cancel_sent };
	enum sa_route_late v = sa_route_late_answer(&a);
	if (a.invite && !a.finished)
		txn_heard(t, m->status);
	switch (v) {
	case SA_LATE_NOTHING:
		return;
	case SA_LATE_ACK_AGAIN:
		send_hop_request(srv, t, m, false);
		return;
	case SA_LATE_ACK_2XX_AGAIN:
		if (t->resp)
			sa_transport_send(srv, &t->to, t->resp, t->resp_len);
		return;
	case SA_LATE_CANCEL:
	case SA_LATE_ACK:
	case SA_LATE_ACK_BYE:
		break;
	}
	sa_flow_peer(&t->to, addr, sizeof(addr), &port);
	srv->metrics.failover_late_answers++;
	log_info("event=failover_late_answer status=%d gateway=%s:%s:%u outcome=%s call_id=\"%s\"", m->status,
	         sa_proto_name(t->to.proto), addr, port, outcome[v], LOGQ(m->call_id));
	if (v == SA_LATE_CANCEL) {
		send_hop_request(srv, t, NULL, true);
		t->cancel_sent = true;
		txn_arm(t, 64 * SA_TXN_T1_MS);   /* for its final answer (487) */
		return;
	}
	if (v == SA_LATE_ACK)
		send_hop_request(srv, t, m, false);
	else
		abandoned_2xx(srv, t, m);
	txn_complete(t);
}

static bool relay_response(struct sa_server *srv, struct sa_txn *t, struct sa_msg *m, unsigned steps, char *out,
                           size_t n);

/* A response on its way back along the transaction it answers (lib/route decides). */
void handle_response(struct sa_server *srv, struct sa_msg *m, const struct sa_flow *from)
{
	size_t cap = m->len + 64;   /* (room for a 500's status line) */
	char *out = malloc(cap);
	long n = out ? sa_proxy_response(m, out, cap) : -1;
	struct sa_txn *t = m->branch ? txn_by_branch(srv, m->branch) : NULL;
	struct sa_route_response facts = {
		.status = m->status, .cseq_cancel = m->method == SA_M_CANCEL, .relayable = n >= 0, .txn = t != NULL,
		.from_sent_peer = t && sa_route_response_ok(&t->to, from), .abandoned = t && t->abandoned,
		.local = t && t->local, .completed = t && txn_finished(t), .invite = t && t->method == SA_M_INVITE,
		.owns_call = t && t->own, .failover = t && t->fo,
		.to_gateway = t && m->status == 503 && is_trusted(srv, &t->from),   /* (only a 503 asks) */
	};
	struct sa_route_resp_decision d = sa_route_response(&facts);
	if (d.action == SA_RR_RELAY && (d.steps & SA_RR_AS_500)) {
		long k = sa_proxy_status_line(out, (size_t)n, cap, "SIP/2.0 500 Server Internal Error");
		n = k > 0 ? k : n;
	}
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
		else if (m->status >= 200 && m->status < 300) {
			/* another branch's 2xx makes a call; one whose dialog it answered
			 * already is only relayed (that call may have ended since) */
			if (t->method == SA_M_INVITE && m->to_tag && !sa_txn_tag_has(&t->answered, m->to_tag)) {
				sa_txn_tag_add(&t->answered, m->to_tag);
				call_fork(srv, t, m);
			}
			sa_transport_send(srv, &t->from, out, (size_t)n);
		}
		break;
	case SA_RR_RELAY:
		if (relay_response(srv, t, m, d.steps, out, (size_t)n))
			out = NULL;
		break;
	}
	free(out);
}

/* A 503's Retry-After in seconds (RFC 3261 §20.33: delta-seconds, then
 * perhaps a comment and parameters); 0 when it has none. */
static unsigned retry_after_of(const struct sa_msg *m)
{
	for (unsigned i = 0; i < m->nhdr; i++) {
		const struct sa_hdr *h = &m->hdr[i];
		if (h->kind != SA_H_OTHER || h->len < 12 || strncasecmp(h->line, "Retry-After", 11) != 0 ||
		    (h->line[11] != ':' && h->line[11] != ' ' && h->line[11] != '\t'))
			continue;
		unsigned long v = 0;
		size_t k = 0;
		while (k < h->vlen && k < 9 && h->value[k] >= '0' && h->value[k] <= '9')
			v = v * 10 + (unsigned long)(h->value[k++] - '0');
		return k > 0 ? (unsigned)v : 0;
	}
	return 0;
}

/* The steps of SA_RR_RELAY. true when the transaction kept `out`. */
static bool relay_response(struct sa_server *srv, struct sa_txn *t, struct sa_msg *m, unsigned steps, char *out,
                           size_t n)
{
	/* a gateway's health hears its first answer past 100 Trying: a 100 says
	 * only that the INVITE arrived, and a gateway that sends one before
	 * each 503 was never put down (its 100 made up for its 503) */
	if (t->fo && !t->fo->bind && t->upstream_status <= 100 && m->status > 100 && m->status != 503)
		sa_gateways_report(srv, &t->to, SA_UP_ANSWERED);
	unsigned hold;
	if (m->status == 503 && t->fo && !t->fo->bind && (hold = retry_after_of(m)) > 0)
		sa_gateways_hold(srv, &t->to, hold);
	if (steps & SA_RR_TRY_NEXT) {
		send_hop_request(srv, t, m, false);   /* ACK it on its own branch first */
		t->upstream_status = m->status;
		if (fo_next(t, SA_UP_503))
			return false;
	}
	txn_heard(t, m->status);
	if (t->cancel_pending) {   /* the CANCEL its sender sent before anything came (RFC 3261 §9.1) */
		t->cancel_pending = false;
		if (m->status < 200)
			send_hop_request(srv, t, NULL, true);
	}
	if ((steps & SA_RR_FORWARD) && t->early_key && m->status > 100 && m->status < 200 && m->to_tag)
		sa_txn_tag_add(&t->early_tags, m->to_tag);   /* an early dialog now exists */
	if (steps & SA_RR_RESTART_C)
		txn_timer_c_restart(t);
	if (steps & SA_RR_FORWARD)
		sa_transport_send(srv, &t->from, out, n);
	if (steps & SA_RR_ACK)
		send_hop_request(srv, t, m, false);
	if (m->status >= 200 && m->status < 300 && t->method == SA_M_INVITE && m->to_tag)
		sa_txn_tag_add(&t->answered, m->to_tag);   /* its dialog: a fork's would be another */
	if (steps & SA_RR_CALL)
		call_create(srv, t, m);
	bool kept = false;
	if (steps & SA_RR_FORGET)
		txn_keep(t, &t->resp, &t->resp_len, NULL, 0);
	if (steps & SA_RR_KEEP) {
		txn_keep(t, &t->resp, &t->resp_len, out, n);
		t->resp_status = m->status;
		kept = true;
		if (m->status >= 300)
			txn_failure_sent(t);
	}
	if (steps & SA_RR_COMPLETE)
		txn_complete(t);
	return kept;
}

/* Pass an ACK for a 2xx on without a transaction: it is end to end. */
void forward_ack(struct sa_server *srv, const struct sa_msg *m, const struct sa_flow *from,
                 const struct sa_flow *to, unsigned pop, const char *strip_realm)
{
	char via[256], br[SA_TXN_BRANCH_LEN + 1], addr[64];
	struct sa_peer peer;
	if (branch_new(srv, br) < 0)
		return;
	via_value(srv, to, br, via, sizeof(via));
	peer_of(from, addr, sizeof(addr), &peer);
	struct sa_fwd f = { .via = via, .peer = &peer, .pop_route = pop, .strip_realm = strip_realm };
	size_t cap = m->len + 1024;
	char *out = malloc(cap);
	long n = out ? sa_proxy_request(m, &f, out, cap) : -1;
	if (n > 0)
		sa_transport_send(srv, to, out, (size_t)n);
	free(out);
}

/* Out to the gateways: the first in the failover order; an INVITE keeps
 * the rest to move on to. No gateway with an address: 503. false when no
 * transaction was made (the sender has its answer). */
bool forward_upstream(struct sa_server *srv, const struct sa_msg *m, const struct sa_flow *from,
                      const char *realm, const struct call_owner *own)
{
	struct sa_flow flows[SA_UPSTREAM_MAX];
	unsigned n = sa_gateways_order(srv, flows, SA_UPSTREAM_MAX), pop = sa_route_initial_pop(m);
	if (n == 0) {
		sip_reject_kept(srv, m, from, 503, NULL, "Retry-After: 5\r\n", sa_gateways_none_reason(srv), own->cred_id);
		return false;
	}
	struct sa_txn *t = sip_forward(srv, m, from, &flows[0], NULL, pop, realm, own, own->cred_id);
	if (!t || m->method != SA_M_INVITE)
		return t != NULL;
	sa_gateways_sent(srv, &flows[0]);
	fo_attach(t, flows, n);
	if (t->send_failed)
		txn_unreachable(t);
	return true;
}
