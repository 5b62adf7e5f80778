/* sip.c: one SIP message in: which worker, which way (lib/route), and the answers we make. */
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

/* ---- sending ---- */

void peer_of(const struct sa_flow *fl, char *addr, size_t alen, struct sa_peer *p)
{
	sa_flow_peer(fl, addr, alen, &p->port);
	p->addr = addr;
	p->transport = sa_proto_name(fl->proto);
}

/* Answer m ourselves; the response is remembered by t (if any) for retransmissions. */
void sip_reply(struct sa_server *srv, const struct sa_msg *m, const struct sa_flow *from, int status,
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

static void log_reject(const struct sa_msg *m, const struct sa_flow *from, int status, const char *why)
{
	char addr[64];
	uint16_t port;
	sa_flow_peer(from, addr, sizeof(addr), &port);
	log_info("event=reject status=%d reason=\"%s\" method=%s src=%s:%u proto=%s call_id=\"%s\"",
	         status, why, m->method_name ? m->method_name : "-", addr, port,
	         sa_proto_name(from->proto), LOGQ(m->call_id));
}

/* Reject straight away, without a transaction (errors at the edge). */
void sip_reject(struct sa_server *srv, const struct sa_msg *m, const struct sa_flow *from, int status,
                const char *reason, const char *extra, const char *why)
{
	log_reject(m, from, status, why);
	if (m->method != SA_M_ACK)
		sip_reply(srv, m, from, status, reason, extra, NULL);
}

/* A final answer of our own, kept by a transaction of its own (RFC 3261
 * §17.2.1): a retransmission of m, its answer lost, gets the same answer
 * again instead of going through the checks a second time, where a request
 * whose nonce count was used would be refused as a replay. The transaction
 * is charged to budget_cred while it is made and lingers finished; without
 * room for one the answer goes out statelessly, as before. */
void sip_answer_kept(struct sa_server *srv, const struct sa_msg *m, const struct sa_flow *from, int status,
                     const char *reason, const char *extra, const char *budget_cred)
{
	const char *why;
	struct sa_txn *t = m->method == SA_M_ACK ? NULL : txn_new(srv, m, from, budget_cred, 1024, &why);
	if (m->method != SA_M_ACK)
		sip_reply(srv, m, from, status, reason, extra, t);
	if (t) {
		t->upstream_status = status;
		t->answered_here = true;
		txn_complete(t);
		txn_failure_sent(t);
	}
}

/* sip_reject's log line, the answer kept (sip_answer_kept): for refusals
 * after the request's credentials were accepted. */
void sip_reject_kept(struct sa_server *srv, const struct sa_msg *m, const struct sa_flow *from, int status,
                     const char *reason, const char *extra, const char *why, const char *budget_cred)
{
	log_reject(m, from, status, why);
	sip_answer_kept(srv, m, from, status, reason, extra, budget_cred);
}

/* ---- our identity ---- */

const struct sa_endpoint *local_ep(struct sa_server *srv, unsigned lidx)
{
	return &srv->listeners[lidx < srv->nlisteners ? lidx : 0].ep;
}

void via_value(struct sa_server *srv, const struct sa_flow *to, const char *branch, char *out, size_t len)
{
	/* the listener the message leaves from: its family's (an IPv6 next hop is
	 * reached from an IPv6 listener, whose address our Via must name) */
	unsigned li = to->lidx < srv->nlisteners && srv->listeners[to->lidx].ep.proto == to->proto
		? to->lidx : sa_transport_listener_for(srv, to->proto);
	const struct sa_endpoint *ep = local_ep(srv, li);
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

void rr_value(const struct sa_endpoint *ep, char *out, size_t len)
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




/* A flow to a URI's host:port;transport (numeric hosts only: no DNS at the edge). */
static void flow_for_endpoint(struct sa_server *srv, const struct sa_endpoint *ep, struct sa_flow *fl);

/* A flow to transport/host/port written as text (a URI's, a binding's). */
int flow_for_text(struct sa_server *srv, const char *proto, const char *host, const char *port,
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

static bool same_address(const char *a, const char *b)
{
	unsigned char x[16], y[16];
	int fa = strchr(a, ':') ? AF_INET6 : AF_INET, fb = strchr(b, ':') ? AF_INET6 : AF_INET;
	return fa == fb && inet_pton(fa, a, x) == 1 && inet_pton(fb, b, y) == 1 &&
	       memcmp(x, y, fa == AF_INET ? 4 : 16) == 0;
}

/* A PBX's TCP/TLS flow whose connection is gone (a restart of ours, its
 * NAT's or its own): where its Contact says it listens, when the Contact
 * names the very address it connected from. A Contact naming another
 * address is never dialed (a PBX behind NAT names its private one; and the
 * proxy would connect wherever a sender says). 0 with *fl moved there (a
 * new connection is opened when the request is sent), or -1 as it was. */
int flow_to_contact(struct sa_server *srv, struct sa_flow *fl, const char *contact)
{
	struct sa_uri u;
	char buf[SA_CONTACT_MAX + 64], addr[64], port[12];
	uint16_t from_port;
	if (fl->proto == SA_PROTO_UDP || !contact || sa_transport_flow_open(srv, fl) ||
	    sa_uri_parse(contact, strlen(contact), &u, buf, sizeof(buf)) < 0 || !u.host)
		return -1;
	sa_flow_peer(fl, addr, sizeof(addr), &from_port);
	unsigned listens = u.port > 0 ? (unsigned)u.port : fl->proto == SA_PROTO_TLS ? 5061 : 5060;
	if (!same_address(u.host, addr) || listens == from_port)
		return -1;
	snprintf(port, sizeof(port), "%u", listens);
	return flow_for_text(srv, sa_proto_name(fl->proto), addr, port, fl);
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
	/* a listener of the next hop's family: a datagram to an IPv6 address cannot
	 * leave an IPv4 socket, and Via/Record-Route must name an address it reaches */
	int li = sa_transport_listener_to(srv, ep->proto, ep->ss.ss_family);
	fl->lidx = li >= 0 ? (unsigned)li : sa_transport_listener_for(srv, ep->proto);
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
	if (sa_gateways_park(w0, j->host, &j->from, j->buf, j->len) < 0) {
		w0->unparking = true;   /* no wait: back to its worker, marked as waited */
		sa_sip_input(w0, &j->from, j->buf, j->len);
		w0->unparking = false;
	}
	free(j);
}

/* A request waits for its Route's name: 0, or -1 to go on without it. */
static int park(struct sa_server *srv, const char *host, const struct sa_flow *from, const struct sa_msg *m)
{
	if (srv->worker == 0)
		return sa_gateways_park(srv, host, from, m->buf, m->len);
	if (srv->waited)
		return -1;   /* it came back from worker 0: waited once already */
	struct park_job *j = malloc(sizeof(*j) + m->len);
	if (!j)
		return -1;
	snprintf(j->host, sizeof(j->host), "%s", host);
	j->from = *from;
	j->len = m->len;
	memcpy(j->buf, m->buf, m->len);
	if (!sa_workers_post(srv, 0, park_job_run, j)) {
		free(j);
		return -1;
	}
	return 0;
}

/* Is the TCP/TLS connection of a call's end still open? (UDP: always.) */
static bool flow_open(struct sa_server *srv, const struct sa_flow *fl)
{
	return fl->proto == SA_PROTO_UDP || (fl->conn_id && sa_transport_conn_open(srv, fl->conn_id));
}

struct moved_end {
	struct sa_server *srv;
	struct sa_flow cand;           /* the old end with each binding's port in turn */
	char addr[64];                 /* the old end's address, as bindings keep it */
	const char *transport;
	int64_t now, best_at;
	uint16_t old_port, port;
};

/* A live binding of the same address and transport, from another port,
 * whose connection is open: the latest refreshed wins. */
static int moved_end_cb(const struct sa_binding *b, void *arg)
{
	struct moved_end *me = arg;
	if (b->expires_at <= me->now || b->updated_at < me->best_at || b->source_port == me->old_port ||
	    strcmp(b->transport, me->transport) != 0 || strcmp(b->source, me->addr) != 0)
		return 0;
	if (me->cand.ss.sa.sa_family == AF_INET6)
		me->cand.ss.in6.sin6_port = htons(b->source_port);
	else
		me->cand.ss.in.sin_port = htons(b->source_port);
	if (sa_transport_flow_open(me->srv, &me->cand)) {
		me->best_at = b->updated_at;
		me->port = b->source_port;
	}
	return 0;
}

/* A PBX's end of a call whose connection is gone, and which registered
 * since from another connection of the same address: the in-dialog request
 * goes down that one (its inbound calls do), not to a new connection to the
 * old port (nothing listens there behind a NAT). false: no such one. */
static bool end_moved(struct sa_server *srv, const char *cred_id, struct sa_flow *to)
{
	if (!cred_id[0] || sa_transport_flow_open(srv, to))
		return false;   /* (every in-dialog request asks: nothing more unless the end is gone) */
	struct moved_end me = { .srv = srv, .cand = *to, .transport = sa_proto_name(to->proto), .now = wall_now(),
	                        .best_at = -1 };
	me.cand.conn_id = 0;   /* found by address: here, or through the worker that holds it */
	sa_flow_peer(to, me.addr, sizeof(me.addr), &me.old_port);
	if (sa_store_binding_list_credential(srv->store, cred_id, moved_end_cb, &me) != SA_STORE_OK || me.best_at < 0)
		return false;
	*to = me.cand;
	if (to->ss.sa.sa_family == AF_INET6)
		to->ss.in6.sin6_port = htons(me.port);
	else
		to->ss.in.sin_port = htons(me.port);
	return true;
}

/* In-dialog requests come back through our Record-Route: loose routing,
 * narrowed to the call (lib/route): only from its ends, only to the other.
 * Before the answer, the requests of an early dialog (a PRACK for a reliable
 * 183, an UPDATE of its session: RFC 3262, RFC 3311) are narrowed the same
 * way to the two ends of the INVITE that rings, and to the early dialogs its
 * provisionals started (txn_early_find). */
static void handle_in_dialog(struct sa_server *srv, const struct sa_msg *m, const struct sa_flow *from)
{
	unsigned pop = sa_route_ours(&srv->self, m);
	if (pop == 0 && !m->strict_routed) {   /* (strict routing had ours as its Request-URI) */
		sip_reject(srv, m, from, 403, NULL, NULL, "in-dialog request without our Route");
		return;
	}
	int side = 0;
	struct sa_call *c = call_find(srv, m, &side);
	struct sa_txn *early = !c && m->method != SA_M_ACK ? txn_early_find(srv, m, &side) : NULL;
	if (!c && !early) {
		/* only calls we set up pass without credentials: anything else
		 * would make a forged To tag an open relay */
		if (m->method != SA_M_ACK)
			sip_reject(srv, m, from, 481, NULL, NULL, "no such call");
		return;
	}
	struct sa_flow *end, *other;
	if (c) {
		end = side == 1 ? &c->caller : &c->callee;
		other = side == 1 ? &c->callee : &c->caller;
	} else {
		end = side == 1 ? &early->from : &early->to;
		other = side == 1 ? &early->to : &early->from;
	}
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
			sip_reject(srv, m, from, 403, NULL, NULL, sa_route_verdict_reason(v));
		return;
	}
	struct sa_flow to = *other;
	char cred[SA_ID_MAX], realm[SA_REALM_MAX];
	if (!sa_route_same_peer(end, from))
		*end = *from;   /* the end came back on a new connection: answer it there */
	/* a PBX that sends its last digest again on each request of the call
	 * (PJSIP does): our realm's credentials stop here, as on the INVITE */
	sa_store_realm(early ? txn_trunk(early) : c->d.trunk_id, srv->domain, realm, sizeof(realm));
	if (early) {
		sa_str_copy(cred, sizeof(cred), txn_cred(early));
		struct sa_txn *t = sip_forward(srv, m, from, &to, NULL, pop, realm, NULL, cred);
		if (t && t->send_failed)
			txn_unreachable(t);
		return;
	}
	struct sa_dialog_side *ds = side == 1 ? &c->d.caller : &c->d.callee;
	if (m->method != SA_M_ACK && m->cseq > ds->cseq)
		ds->cseq = m->cseq;
	if (end_moved(srv, c->d.cred_id, &to)) {
		char addr[64];
		uint16_t port;
		sa_flow_peer(&to, addr, sizeof(addr), &port);
		log_info("event=call_end_moved call_id=\"%s\" to=%s:%s:%u hint=\"the PBX registered from a new "
		         "connection\"", LOGQ(c->d.call_id), sa_proto_name(to.proto), addr, port);
		*other = to;   /* and so the rest of the call */
	} else if (flow_to_contact(srv, &to, (side == 1 ? &c->d.callee : &c->d.caller)->target) == 0) {
		char addr[64];
		uint16_t port;
		sa_flow_peer(&to, addr, sizeof(addr), &port);
		log_info("event=call_end_dialed call_id=\"%s\" to=%s:%s:%u hint=\"its connection is gone: the port its "
		         "Contact names\"", LOGQ(c->d.call_id), sa_proto_name(to.proto), addr, port);
		*other = to;
	}
	if (m->method == SA_M_ACK) {
		forward_ack(srv, m, from, &to, pop, realm);
		return;
	}
	sa_str_copy(cred, sizeof(cred), c->d.cred_id);
	struct sa_txn *t = sip_forward(srv, m, from, &to, NULL, pop, realm, NULL, cred);
	if (t && m->method == SA_M_BYE)
		call_bye_sent(t, c);   /* the call ends with the BYE's answer */
	if (t && t->send_failed)
		txn_unreachable(t);
}

static void handle_cancel(struct sa_server *srv, const struct sa_msg *m, const struct sa_flow *from)
{
	char key[SA_TXN_KEY_MAX];
	struct sa_txn *t = txn_by_skey(srv, sa_txn_cancelled_key(m, key));
	/* a branch and a Via can be copied; only the INVITE's sender may cancel it */
	if (sa_route_cancel(t != NULL, t && sa_route_same_sender(&t->from, from)) != 0) {
		sip_reject(srv, m, from, 481, NULL, NULL, "CANCEL for no transaction");
		return;
	}
	sip_reply(srv, m, from, 200, NULL, NULL, NULL);
	if (t->fo)
		t->fo->cancelled = true;   /* it stays on the gateway it is on */
	if (txn_finished(t))
		return;
	/* the 487 comes back from upstream (the live branch); a CANCEL may not go
	 * before the next hop said anything (RFC 3261 §9.1): it waits for that */
	if (t->upstream_status == 0)
		t->cancel_pending = true;
	else
		send_hop_request(srv, t, NULL, true);
}


static void refuse_extension(struct sa_server *srv, const struct sa_msg *m, const struct sa_flow *from,
                             const struct sa_hdr *h)
{
	char extra[600];
	snprintf(extra, sizeof(extra), "Unsupported: %.*s\r\n", (int)(h->vlen > 500 ? 500 : h->vlen), h->value);
	sip_reject(srv, m, from, 420, NULL, extra, "unsupported extension required");
}


/* What lib/route needs to know of a request before it decides its way. A
 * banned source is looked at no further (its verdict needs nothing else):
 * no transaction lookup and no tag hash, so that its flood costs nothing. */
static void request_facts(struct sa_server *srv, const struct sa_msg *m, const struct sa_flow *from,
                          char key[SA_TXN_KEY_MAX], struct sa_txn **tp, struct sa_route_request *r)
{
	unsigned char a[16];
	size_t alen = abuse_source(from, a);
	*r = (struct sa_route_request){ .method = m->method, .to_tag = m->to_tag != NULL,
	                                .trusted = is_trusted(srv, from) };
	r->banned = !r->trusted && sa_abuse_banned(srv->abuse, &srv->cfg.abuse, a, alen, sa_mono_s());
	*tp = NULL;
	if (r->banned)
		return;
	struct sa_txn *t = m->method == SA_M_CANCEL ? NULL : txn_by_skey(srv, sa_txn_server_key(m, key));
	*tp = t;
	r->txn_match = t != NULL;
	r->txn_same_sender = t && sa_route_same_sender(&t->from, from);
	r->txn_answered = t && t->resp;
	r->stopping = srv->stopping;
	r->options_for_us = sa_route_options_for_us(m);
	r->max_forwards_zero = m->max_forwards == 0;
	r->requires_extension = sa_route_required_extension(m) != NULL;
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
	if (facts.trusted && from->proto != SA_PROTO_UDP)
		sa_transport_proven(srv, from);
	struct sa_route_decision d = sa_route_request(&facts);
	switch (d.action) {
	case SA_RA_DROP:
		return;
	case SA_RA_DROP_BANNED:
		srv->metrics.banned_dropped++;
		return;
	case SA_RA_REFUSE:
		sip_reject(srv, m, from, d.status, NULL, d.extra, d.reason);
		return;
	case SA_RA_ABSORB:
		if (m->method != SA_M_ACK)   /* an ACK ends a failure's transaction: it repeats nothing */
			srv->metrics.sip_retransmissions_absorbed++;
		if (d.resend)
			sa_transport_send(srv, from, t->resp, t->resp_len);
		if (m->method == SA_M_ACK)
			txn_confirmed(t);
		return;
	case SA_RA_OPTIONS:
		/* what RFC 3261 §11.2 has an answer to OPTIONS say */
		sip_reply(srv, m, from, 200, NULL,
		          "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, UPDATE, PRACK, INFO, REFER, NOTIFY, MESSAGE\r\n"
		          "Accept: application/sdp\r\nAccept-Encoding: identity\r\nAccept-Language: en\r\nSupported: \r\n",
		          NULL);
		return;
	case SA_RA_UNSUPPORTED:
		refuse_extension(srv, m, from, sa_route_required_extension(m));
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
	unsigned char a[16];
	size_t alen = abuse_source(from, a);
	if (!is_trusted(srv, from) && sa_abuse_banned(srv->abuse, &srv->cfg.abuse, a, alen, sa_mono_s()))
		return -1;
	return sa_calldir_owner(srv, m->call_id);
}

/* The worker a response's top Via branch names, read without parsing it; -1 when unsure. */
static int answer_owner(struct sa_server *srv, const char *buf, size_t len)
{
	size_t blen;
	char branch[SA_TXN_BRANCH_LEN + 1];
	const char *b = sa_msg_peek_response_branch(buf, len, &blen);
	if (!b || blen != SA_TXN_BRANCH_LEN)
		return -1;
	memcpy(branch, b, blen);
	branch[blen] = '\0';
	int w = sa_txn_branch_worker(branch);
	return w >= 0 && (unsigned)w < srv->nworkers ? w : -1;
}

/* The previous hop strict-routes: our Record-Route URI is the Request-URI.
 * RFC 3261 §16.4: the last Route value is the Request-URI, and the request
 * goes on as if it had come so (its Route of ours was the Request-URI). */
static void handle_strict_routed(struct sa_server *srv, const struct sa_msg *m, const struct sa_flow *from)
{
	struct sa_msg r;
	struct sa_msg_error err = { 0 };
	size_t cap = m->len + 64;
	char *buf = malloc(cap);
	long n = buf ? sa_proxy_strict_route(m, buf, cap) : -1;
	if (n < 0 || sa_msg_parse(&r, buf, (size_t)n, from->proto != SA_PROTO_UDP, &err) < 0) {
		if (n >= 0)
			sa_msg_free(&r);
		free(buf);
		sip_reject(srv, m, from, 400, NULL, NULL, "strict-routed request that does not read back");
		return;
	}
	log_debug("event=strict_route call_id=\"%s\"", LOGQ(r.call_id));
	r.strict_routed = true;
	handle_request(srv, &r, from);
	sa_msg_free(&r);
	free(buf);
}

/* A datagram of CR, LF or NUL bytes only: a NAT keep-alive (pjsip, Asterisk
 * and many phones send CRLFCRLF), dropped without a word, as Kamailio drops
 * its "probing packets": logged as a bad message, thousands of PBXs would
 * spend the log budget of that line. */
static bool udp_keepalive(const char *buf, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (buf[i] != '\r' && buf[i] != '\n' && buf[i] != '\0')
			return false;
	return true;
}

void sa_sip_input(struct sa_server *srv, const struct sa_flow *from, const char *buf, size_t len)
{
	struct sa_msg m;
	struct sa_msg_error err = { 0 };

	if (from->proto == SA_PROTO_UDP && udp_keepalive(buf, len))   /* (a message stops at its first byte) */
		return;

	/* another worker's answer goes there unparsed: its owner parses it once */
	int peeked = srv->workers && !srv->handed ? answer_owner(srv, buf, len) : -1;
	if (peeked >= 0 && (unsigned)peeked != srv->worker) {
		sa_workers_hand(srv, (unsigned)peeked, from, buf, len);
		return;
	}

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
			sip_reply(srv, &m, from, err.status, NULL, NULL, NULL);
		sa_msg_free(&m);
		return;
	}
	int owner = srv->workers && !srv->handed ? message_owner(srv, &m, from) : -1;
	if (owner >= 0 && (unsigned)owner != srv->worker)
		sa_workers_hand(srv, (unsigned)owner, from, buf, len);
	else if (m.request && sa_route_strict_routed(&srv->self, &m))
		handle_strict_routed(srv, &m, from);
	else if (m.request)
		handle_request(srv, &m, from);
	else
		handle_response(srv, &m, from);
	sa_msg_free(&m);
}

/* Summed over the workers, read while they run: each figure is a word read
 * at once, and /metrics may be a moment behind one of them. */
#define PEEK(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

void sa_sip_gauges(const struct sa_server *srv, struct sa_metrics *m)
{
	m->banned_active = srv->cfg.abuse.max_failures ? sa_abuse_banned_count(srv->abuse, sa_mono_s()) : 0;
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
	if (first) {
		srv->trunks = sa_trunk_table_new();
		srv->abuse = sa_abuse_new(65536);
		srv->pace_shared = sa_pace_shared_new();   /* bye_rate holds per destination for the process */
		if (!srv->trunks || !srv->abuse || !srv->pace_shared ||
		    RAND_bytes(srv->tag_key, sizeof(srv->tag_key)) != 1)
			return -1;
		if (sa_gateways_start(srv) < 0)
			return -1;
	}
	srv->auth.uri_is_local = is_us_cb;   /* a digest uri naming us stands for the Request-URI */
	srv->auth.uri_is_local_arg = srv;
	return sip_txn_init(srv) < 0 || sip_calls_init(srv) < 0 || sip_customer_init(srv) < 0 ? -1 : 0;
}

void sa_sip_shutdown(struct sa_server *srv)
{
	sip_customer_shutdown(srv);   /* the failure records that wait, while the store is open */
	sip_txn_shutdown(srv);
	sip_calls_shutdown(srv);
	if (srv->worker == 0) {   /* the shared ones */
		sa_trunk_table_free(srv->trunks);
		sa_abuse_free(srv->abuse);
		sa_pace_shared_free(srv->pace_shared);
		OPENSSL_cleanse(srv->tag_key, sizeof(srv->tag_key));
		sa_gateways_stop(srv);
	}
	srv->trunks = NULL;
	srv->abuse = NULL;
	srv->pace_shared = NULL;
}
