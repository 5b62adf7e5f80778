/* sip_calls.c: calls we set up: made at 2xx, ended by BYEs of ours, revoked, reaped, saved across a restart. */
#include "config.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/uio.h>
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

/* ---- calls ---- */

struct sa_call *call_find(struct sa_server *srv, const struct sa_msg *m, int *side)
{
	return sa_calls_find(srv->calls, m, side);
}

/* [proxy] max_calls holds for the process: every worker's calls count. */
bool calls_full(struct sa_server *srv)
{
	unsigned n = 0;
	for (unsigned i = 0; i < sa_workers_count(srv); i++)
		n += sa_calls_count(sa_worker_at(srv, i)->calls);
	return n >= srv->cfg.max_calls;
}

static void journal_call(struct sa_server *srv, const struct sa_call *c);
static void journal_end(struct sa_server *srv, const struct sa_call *c);
static void journals_remove(struct sa_server *srv);
static void restore_done(struct sa_server *srv, unsigned keep_below);

void call_remove(struct sa_server *srv, struct sa_call *c)
{
	journal_end(srv, c);
	channel_release(srv, c->d.trunk_id);
	sa_calldir_drop(srv, c->d.call_id);
	sa_calls_remove(srv->calls, c);
}

void call_bye_sent(struct sa_txn *t, const struct sa_call *c)
{
	size_t a = strlen(c->d.call_id) + 1, b = strlen(c->d.caller_tag) + 1, n = a + b + strlen(c->d.callee_tag) + 1;
	free(t->ends_call);
	if ((t->ends_call = malloc(n)) == NULL)
		return;
	memcpy(t->ends_call, c->d.call_id, a);
	memcpy(t->ends_call + a, c->d.caller_tag, b);
	memcpy(t->ends_call + a + b, c->d.callee_tag, n - a - b);
}

/* The call ends with its BYE, not before: an end whose BYE the other end
 * refuses (a 420 for a Require it made up, a 500 for a CSeq out of order)
 * still has the call up there, so it still holds its channel, is listed,
 * and a revocation or max_call_age ends it. A 2xx, a 481 (no such call
 * there), a 408 or no answer at all end it here too. */
void call_bye_done(struct sa_server *srv, struct sa_txn *t)
{
	const char *call_id = t->ends_call, *caller = call_id + strlen(call_id) + 1, *callee = caller + strlen(caller) + 1;
	struct sa_call *c = sa_calls_find_dialog(srv->calls, call_id, caller, callee);
	int st = t->upstream_status;
	if (c && st >= 300 && st != 408 && st != 481) {
		srv->metrics.call_byes_refused++;
		log_info("event=call_bye_refused call_id=\"%s\" cred=%s trunk=%s status=%d hint=\"the other end refused "
		         "the BYE: the call goes on there, and here\"", LOGQ(call_id), c->d.cred_id, c->d.trunk_id, st);
	} else if (c) {
		log_debug("event=call_end call_id=\"%s\" cred=%s trunk=%s reason=bye", LOGQ(call_id), c->d.cred_id,
		          c->d.trunk_id);
		call_remove(srv, c);
	}
	free(t->ends_call);
	t->ends_call = NULL;
}

bool is_us_cb(const struct sa_uri *u, void *arg)
{
	return sa_route_uri_is_us(&((struct sa_server *)arg)->self, u);
}

/* A 2xx to an INVITE we forwarded for a credential: the call is up. */
/* c (its dialog filled) into the call table: found by its in-dialog
 * requests, journaled, holding a channel of its trunk (the INVITE's, when
 * *holds says it still holds one). false when it could not be added. */
static bool call_start(struct sa_server *srv, struct sa_call *c, bool *holds, const char *how)
{
	if (sa_calls_add(srv->calls, c) < 0) {
		log_warn("event=call_untracked reason=\"out of memory\" call_id=\"%s\"", LOGQ(c->d.call_id));
		sa_call_free(c);
		return false;
	}
	sa_calldir_take(srv, c->d.call_id);   /* its in-dialog requests find this worker */
	journal_call(srv, c);
	if (holds && *holds)
		*holds = false;   /* the call holds the INVITE's channel now */
	else
		channel_hold(srv, c->d.trunk_id);
	srv->metrics.calls_started++;
	/* a quiet call over TCP/TLS keeps its connections: the other end's BYE
	 * must find them (tcp_idle_timeout would close them mid-call) */
	sa_transport_keep(srv, &c->caller, SA_KEEP_CALL, NULL, (uint64_t)srv->cfg.max_call_age * 1000);
	sa_transport_keep(srv, &c->callee, SA_KEEP_CALL, NULL, (uint64_t)srv->cfg.max_call_age * 1000);
	log_debug("event=%s call_id=\"%s\" cred=%s trunk=%s direction=%s callee_tag=\"%s\"", how, LOGQ(c->d.call_id),
	          c->d.cred_id, c->d.trunk_id, c->d.inbound ? "inbound" : "outbound", LOGQ(c->d.callee_tag));
	return true;
}

void call_create(struct sa_server *srv, struct sa_txn *t, struct sa_msg *ok)
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
	sa_str_copy(c->d.cred_id, sizeof(c->d.cred_id), txn_cred(t));
	sa_str_copy(c->d.trunk_id, sizeof(c->d.trunk_id), txn_trunk(t));
	c->d.inbound = t->inbound;
	c->d.started_at = wall_now();
	c->started_ms = (int64_t)sa_now_ms();
	c->caller = t->from;
	c->callee = t->to;
	call_start(srv, c, &t->holds_channel, "call_start");
}

/* Another 2xx to the INVITE, with another To tag: the next hop forked and
 * two of its branches answered. Every 2xx goes to the caller (RFC 3261
 * §16.7 step 5), which ACKs each and ends with a BYE those it does not
 * want: each is a call of the first one's credential and ends, so that its
 * ACK and BYE pass (its transaction has let go of what call_create reads). */
void call_fork(struct sa_server *srv, struct sa_txn *t, struct sa_msg *ok)
{
	int side;
	struct sa_call *first;
	char contact[SA_CONTACT_MAX + 3];
	if (!ok->call_id || !ok->from_tag || !ok->to_tag || call_find(srv, ok, &side) ||
	    !(first = sa_calls_find_caller(srv->calls, ok->call_id, ok->from_tag)))
		return;
	snprintf(contact, sizeof(contact), "<%s>", first->d.caller.target);
	struct sa_call *c = sa_call_new();
	if (!c)
		return;
	if (sa_dialog_from_2xx(&c->d, contact, strlen(contact), ok, is_us_cb, srv) < 0) {
		log_warn("event=call_untracked reason=\"forked 2xx without Contact\" call_id=\"%s\"", LOGQ(ok->call_id));
		sa_call_free(c);
		return;
	}
	sa_str_copy(c->d.cred_id, sizeof(c->d.cred_id), first->d.cred_id);
	sa_str_copy(c->d.trunk_id, sizeof(c->d.trunk_id), first->d.trunk_id);
	c->d.inbound = first->d.inbound;
	c->d.started_at = wall_now();
	c->started_ms = (int64_t)sa_now_ms();
	c->caller = first->caller;
	c->callee = t->to;
	call_start(srv, c, NULL, "call_fork");
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
void send_local(struct sa_server *srv, const struct sa_flow *to, const struct sa_dialog *d, bool to_caller,
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
void call_end(struct sa_server *srv, struct sa_call *c, const char *why, const char *reason)
{
	log_info("event=call_end call_id=\"%s\" cred=%s trunk=%s reason=%s", LOGQ(c->d.call_id), c->d.cred_id,
	         c->d.trunk_id, why);
	/* an end on TCP/TLS whose connection is gone (a restart since): where its Contact says it listens */
	struct sa_flow caller = c->caller, callee = c->callee;
	flow_to_contact(srv, &caller, c->d.caller.target);
	flow_to_contact(srv, &callee, c->d.callee.target);
	send_local(srv, &caller, &c->d, true, reason);
	send_local(srv, &callee, &c->d, false, reason);
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
	/* calls start in order and max_call_age is one value: the oldest come
	 * first. Counted on the monotonic clock: a wall clock put forward by a
	 * day (NTP at boot, a VM resumed) hangs up no call */
	int64_t oldest = (int64_t)sa_now_ms() - (int64_t)srv->cfg.max_call_age * 1000;
	struct sa_call *c;
	while ((c = sa_calls_oldest(srv->calls)) && c->started_ms <= oldest) {
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
	sa_str_copy(ft->transport, sizeof(ft->transport), sa_proto_name(fl->proto));
	const struct sa_endpoint *ep = local_ep(srv, fl->lidx);
	bool v6 = strchr(ep->host, ':') != NULL;
	struct sa_buf b = { .p = ft->listener, .cap = sizeof(ft->listener) - 1 };   /* (every call journals two) */
	sa_buf_puts(&b, sa_proto_name(ep->proto));
	sa_buf_puts(&b, v6 ? ":[" : ":");
	sa_buf_puts(&b, ep->host);
	sa_buf_puts(&b, v6 ? "]:" : ":");
	sa_buf_putu(&b, ep->port);
	ft->listener[b.overflow ? 0 : b.len] = '\0';
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
	if (!srv->calls || !srv->calls_restored)
		return 0;   /* never started (a port in use, say): nothing to save, and the file is not ours to overwrite */
	unsigned total = 0, count = 0;
	for (unsigned i = 0; i < sa_workers_count(srv); i++)
		total += sa_calls_count(sa_worker_at(srv, i)->calls);
	/* every worker's calls (their threads are joined); all come back to worker 0. A call
	 * whose strings are not UTF-8 has no line (JSON cannot carry it): the others are saved */
	char **lines = calloc(total ? total : 1, sizeof(*lines));
	if (!lines)
		return -1;
	for (unsigned i = 0; i < sa_workers_count(srv); i++) {
		struct sa_server *w = sa_worker_at(srv, i);
		for (struct sa_call *c = w->calls ? sa_calls_oldest(w->calls) : NULL; c; c = sa_calls_newer(c)) {
			struct sa_call_flow_text ends[2];
			flow_text(srv, &c->caller, &ends[0]);
			flow_text(srv, &c->callee, &ends[1]);
			if ((lines[count] = sa_call_line(c, ends)) != NULL)
				count++;
		}
	}
	calls_path(srv, path, sizeof(path));
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	/* 0600 whatever the umask, as the journals and the store are: Call-IDs, tags, contacts */
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
	if (fd >= 0 && !f)
		close(fd);
	bool ok = f && write_line(f, sa_calls_header_line(count));
	for (unsigned i = 0; i < count; i++) {
		if (ok)
			ok = write_line(f, lines[i]);   /* frees it */
		else
			free(lines[i]);
	}
	free(lines);
	ok = f && fclose(f) == 0 && ok;
	if (!ok || rename(tmp, path) < 0) {
		unlink(tmp);
		return -1;
	}
	if (count < total)
		log_warn("event=calls_unsaved count=%u reason=\"not UTF-8\"", total - count);
	log_info("event=calls_saved count=%u", count);
	journals_remove(srv);   /* calls.state has every call now */
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

/* calls.state, written at a clean stop: its calls into srv's table. false
 * when there is none (or it is refused). */
static bool restore_state(struct sa_server *srv, unsigned *bad)
{
	char path[PATH_MAX + 16];
	calls_path(srv, path, sizeof(path));
	FILE *f = fopen(path, "r");
	if (!f)
		return false;
	char *line = NULL;
	size_t cap = 0;
	if (getline(&line, &cap, f) < 0 || !sa_calls_header_ok(line)) {
		/* another version (or no header): never guess at its layout */
		log_warn("event=calls_not_restored path=%s reason=\"not a version %d calls file\"", path,
		         SA_CALLS_FILE_VERSION);
		free(line);
		fclose(f);
		return false;
	}
	while (getline(&line, &cap, f) > 0 && sa_calls_count(srv->calls) < srv->cfg.max_calls) {
		struct sa_call *c = call_from_line(srv, line);
		if (!c || sa_calls_add(srv->calls, c) < 0) {
			sa_call_free(c);
			(*bad)++;
		}
	}
	free(line);
	fclose(f);
	return true;
}

/*
 * Calls outlive a crash too. Each worker journals (calls.journal.<worker>
 * beside calls.state) a line for every call it sets up and every call that
 * ends. The lines wait at most JOURNAL_FLUSH_MS in the worker's buffer,
 * then go with one write(2) to the file, opened O_APPEND: when the process
 * dies, the kernel has every line written (a crash of the host may lose
 * the last ones), and what it loses is the calls of the last 10 ms. Line by
 * line (a write to ext4 each) the journal cost 8 us of a call's 80; one
 * write per 10 ms (some 40 lines at 2000 calls/s), about 3 us. It is written anew from the
 * worker's calls when it holds JOURNAL_SLACK lines more than twice its
 * calls. A clean stop writes calls.state and removes the journals; a start
 * reads calls.state, or else the journals, whatever the number of workers
 * that wrote them. A call back from a journal may have seen in-dialog
 * requests since its line was written: the CSeq of the BYEs we would send
 * for it starts JOURNAL_CSEQ_GAP above what the line holds.
 */
#define JOURNAL_SLACK 50000
#define JOURNAL_CSEQ_GAP 1000
#define JOURNAL_FLUSH_MS 10
#define JOURNAL_BUF_MAX (64 * 1024)   /* written at once when the buffer holds this much */

struct sa_journal {
	int fd;                        /* O_APPEND; -1: none (yet, or it could not be written) */
	unsigned lines;                /* in the file and the buffer */
	char *buf;                     /* lines not written yet */
	size_t len, cap;
	struct event *timer;           /* writes them JOURNAL_FLUSH_MS after the first */
	/* worker 0 could not write the calls it restored: the files they came
	 * from stay until it can (calls.state too when from_state) */
	bool restore_kept, from_state;
};

static void journal_path(struct sa_server *srv, unsigned worker, char *out, size_t len)
{
	snprintf(out, len, "%s/calls.journal.%u", srv->cfg.store_path, worker);
}

/* calls.journal.N, or with tmp the calls.journal.N.tmp a rewrite writes
 * before renaming it (one a crash left behind holds nothing to restore). */
static bool is_journal_name(const char *name, bool tmp)
{
	const char *p = name + strlen("calls.journal.");
	if (strncmp(name, "calls.journal.", strlen("calls.journal.")) != 0 || *p < '0' || *p > '9')
		return false;
	while (*p >= '0' && *p <= '9')
		p++;
	return strcmp(p, tmp ? ".tmp" : "") == 0;
}

/* fn(srv, path) for every calls.journal.N (with tmp: calls.journal.N.tmp) in the store's folder. */
static void journals_each(struct sa_server *srv, bool tmp, void (*fn)(struct sa_server *, const char *, void *),
                          void *arg)
{
	DIR *d = opendir(srv->cfg.store_path);
	if (!d)
		return;
	struct dirent *e;
	char path[PATH_MAX + 300];
	while ((e = readdir(d)) != NULL)
		if (is_journal_name(e->d_name, tmp)) {
			snprintf(path, sizeof(path), "%s/%s", srv->cfg.store_path, e->d_name);
			fn(srv, path, arg);
		}
	closedir(d);
}

static void journal_unlink(struct sa_server *srv, const char *path, void *arg)
{
	(void)srv, (void)arg;
	unlink(path);
}

static void journals_remove(struct sa_server *srv)
{
	journals_each(srv, false, journal_unlink, NULL);
	journals_each(srv, true, journal_unlink, NULL);
}

/* calls.journal.N for N at or above *(unsigned *)arg: no worker of this run writes it */
static void journal_unlink_above(struct sa_server *srv, const char *path, void *arg)
{
	(void)srv;
	if (strtoul(strrchr(path, '.') + 1, NULL, 10) >= *(const unsigned *)arg)
		unlink(path);
}

struct journal_replay {
	unsigned bad, files;
};

static void journal_replay(struct sa_server *srv, const char *path, void *arg)
{
	struct journal_replay *jr = arg;
	FILE *f = fopen(path, "r");
	if (!f)
		return;
	char *line = NULL;
	size_t cap = 0;
	if (getline(&line, &cap, f) < 0 || !sa_calls_journal_header_ok(line)) {
		log_warn("event=calls_not_restored path=%s reason=\"not a version %d calls journal\"", path,
		         SA_CALLS_FILE_VERSION);
	} else {
		jr->files++;
		ssize_t n;
		while ((n = getline(&line, &cap, f)) > 0) {
			struct sa_call *c;
			struct sa_call_flow_text ends[2];
			if (line[n - 1] != '\n') {   /* the last line, cut by the crash: nothing */
				jr->bad++;
				break;
			}
			if (sa_calls_journal_apply(srv->calls, line, &c, ends) < 0) {
				jr->bad++;
			} else if (c && (flow_from_text(srv, &ends[0], &c->caller) < 0 ||
			                 flow_from_text(srv, &ends[1], &c->callee) < 0)) {
				sa_calls_remove(srv->calls, c);
				jr->bad++;
			} else if (c) {
				c->d.caller.cseq += JOURNAL_CSEQ_GAP;
				c->d.callee.cseq += JOURNAL_CSEQ_GAP;
			}
		}
	}
	free(line);
	fclose(f);
}

static bool write_all(int fd, const char *p, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		p += n;
		len -= (size_t)n;
	}
	return true;
}

/* Room for n bytes and a newline more in the buffer. */
static bool journal_room(struct sa_journal *j, size_t n)
{
	if (j->len + n + 1 <= j->cap)
		return true;
	size_t cap = j->cap ? j->cap : 4096;
	while (cap < j->len + n + 1)
		cap *= 2;
	char *b = realloc(j->buf, cap);
	if (!b)
		return false;
	j->buf = b;
	j->cap = cap;
	return true;
}

/* One line into the buffer, written in place by sa_call_line_put or
 * sa_call_end_line_put (c's end line when ends is NULL). false: out of
 * memory; a call whose strings are not UTF-8 makes no line (nor would it
 * in calls.state). */
static bool journal_line(struct sa_server *srv, const struct sa_call *c, const struct sa_call_flow_text *ends)
{
	struct sa_journal *j = srv->journal;
	size_t room = ends ? sa_call_line_room(c, ends) : sa_call_end_line_room(c);
	if (!journal_room(j, room))
		return false;
	struct sa_buf b = { .p = j->buf + j->len, .cap = room };
	if (ends ? !sa_call_line_put(c, ends, &b) : !sa_call_end_line_put(c, &b))
		return true;
	j->buf[j->len + b.len] = '\n';
	j->len += b.len + 1;
	j->lines++;
	return true;
}

static bool journal_call_line(struct sa_server *srv, const struct sa_call *c)
{
	struct sa_call_flow_text ends[2];
	flow_text(srv, &c->caller, &ends[0]);
	flow_text(srv, &c->callee, &ends[1]);
	return journal_line(srv, c, ends);
}

/* The journal written anew from this worker's calls (a file beside it,
 * renamed over it); what the buffer held is in the calls. */
static void journal_rewrite(struct sa_server *srv)
{
	struct sa_journal *j = srv->journal;
	char path[PATH_MAX + 32], tmp[PATH_MAX + 48];
	journal_path(srv, srv->worker, path, sizeof(path));
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	j->len = j->lines = 0;
	evtimer_del(j->timer);
	char *header = sa_calls_journal_header();
	bool ok = header && journal_room(j, strlen(header));
	if (ok) {
		memcpy(j->buf, header, strlen(header));
		j->buf[strlen(header)] = '\n';
		j->len = strlen(header) + 1;
	}
	free(header);
	for (struct sa_call *c = sa_calls_oldest(srv->calls); ok && c; c = sa_calls_newer(c))
		ok = journal_call_line(srv, c);
	int fd = ok ? open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600) : -1;
	ok = fd >= 0 && write_all(fd, j->buf, j->len) && rename(tmp, path) == 0;
	j->len = 0;
	if (!ok) {
		log_warn("event=calls_journal_failed path=%s error=\"%s\" hint=\"the calls of this worker do not outlive a "
		         "crash until its journal can be written again\"", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		unlink(tmp);
		if (j->fd >= 0)
			close(j->fd);
		j->fd = -1;   /* tried again later (journal_down) */
		j->lines = 0;
		return;
	}
	if (j->fd >= 0)
		close(j->fd);
	j->fd = fd;
	if (j->restore_kept) {
		log_info("event=calls_journal_written path=%s calls=%u hint=\"the restored calls are in it: the files they "
		         "came from go\"", path, sa_calls_count(srv->calls));
		restore_done(srv, srv->nworkers);
	}
}

static void journal_flush(struct sa_server *srv)
{
	struct sa_journal *j = srv->journal;
	if (j->len == 0)
		return;
	if (j->fd < 0 || !write_all(j->fd, j->buf, j->len)) {
		if (j->fd >= 0)
			log_warn("event=calls_journal_failed worker=%u error=\"%s\" hint=\"the journal is written anew from "
			         "the calls\"", srv->worker, strerror(errno));
		journal_rewrite(srv);
		return;
	}
	j->len = 0;
}

static void journal_flush_cb(evutil_socket_t fd, short what, void *arg)
{
	journal_flush(arg);
}

/* After a line went into the buffer (or did not: ok false, out of memory). */
static void journal_added(struct sa_server *srv, bool ok)
{
	struct sa_journal *j = srv->journal;
	if (!ok || j->lines > 2 * sa_calls_count(srv->calls) + JOURNAL_SLACK) {
		journal_rewrite(srv);   /* out of memory, the calls are the journal; or it has grown */
	} else if (j->len >= JOURNAL_BUF_MAX) {
		journal_flush(srv);
	} else if (!evtimer_pending(j->timer, NULL)) {
		struct timeval tv = { .tv_sec = 0, .tv_usec = JOURNAL_FLUSH_MS * 1000 };
		evtimer_add(j->timer, &tv);
	}
}

/* Without a file (it could not be written): tried again after JOURNAL_SLACK calls set up or ended. */
static bool journal_down(struct sa_server *srv)
{
	struct sa_journal *j = srv->journal;
	if (!j)
		return true;
	if (j->fd >= 0)
		return false;
	if (++j->lines > JOURNAL_SLACK)
		journal_rewrite(srv);
	return true;
}

static void journal_call(struct sa_server *srv, const struct sa_call *c)
{
	if (!journal_down(srv))
		journal_added(srv, journal_call_line(srv, c));
}

static void journal_end(struct sa_server *srv, const struct sa_call *c)
{
	if (!journal_down(srv))
		journal_added(srv, journal_line(srv, c, NULL));
}

static int journal_new(struct sa_server *srv)
{
	struct sa_journal *j = calloc(1, sizeof(*j));
	if (!j || !(j->timer = evtimer_new(srv->base, journal_flush_cb, srv))) {
		free(j);
		return -1;
	}
	j->fd = -1;
	srv->journal = j;
	return 0;
}

static void journal_free(struct sa_server *srv)
{
	struct sa_journal *j = srv->journal;
	if (!j)
		return;
	if (j->fd >= 0) {
		write_all(j->fd, j->buf, j->len);   /* a stop that saved calls.state has removed the file */
		close(j->fd);
	}
	event_free(j->timer);
	free(j->buf);
	free(j);
	srv->journal = NULL;
}

/* The restored calls are in worker 0's journal: the files they came from
 * go (calls.state, and the journals no worker of this run writes: at start
 * every one but worker 0's, later those above the workers' count). A
 * calls.state another version wrote was never read and stays for what can
 * read it. */
static void restore_done(struct sa_server *srv, unsigned keep_below)
{
	char path[PATH_MAX + 16];
	journals_each(srv, false, journal_unlink_above, &keep_below);
	if (srv->journal->from_state) {
		calls_path(srv, path, sizeof(path));
		unlink(path);
	}
	srv->journal->restore_kept = srv->journal->from_state = false;
}

/* At start, before any worker runs: the calls of calls.state (a clean stop),
 * or else of the journals (a crash), into worker 0; then worker 0's journal
 * holds them and the other journals go. */
void sa_sip_calls_restore(struct sa_server *srv)
{
	unsigned bad = 0;
	const char *from = "calls.state";
	bool from_state = restore_state(srv, &bad);
	if (!from_state) {
		struct journal_replay jr = { 0, 0 };
		journals_each(srv, false, journal_replay, &jr);
		bad = jr.bad;
		from = jr.files > 0 ? "journal" : NULL;
	}
	while (sa_calls_count(srv->calls) > srv->cfg.max_calls) {   /* the journals may hold more */
		sa_calls_remove(srv->calls, sa_calls_oldest(srv->calls));
		bad++;
	}
	int64_t wall = wall_now(), mono = (int64_t)sa_now_ms();
	for (struct sa_call *c = sa_calls_oldest(srv->calls); c; c = sa_calls_newer(c)) {
		channel_hold(srv, c->d.trunk_id);   /* whatever the limit is now */
		/* its age as the files tell it (none when it looks to start in the future) */
		c->started_ms = mono - (c->d.started_at < wall ? (wall - c->d.started_at) * 1000 : 0);
	}
	if (sa_calls_count(srv->calls) > 0)
		srv->store_generation = 0;   /* the first poll ends the calls of credentials deleted meanwhile */
	/* worker 0's journal gets every restored call (the others start after
	 * this, each with its own); only then do the files they came from go:
	 * on a full disk they stay, and a crash before the journal can be
	 * written restores from them again */
	journals_each(srv, true, journal_unlink, NULL);
	srv->journal->from_state = from_state;
	journal_rewrite(srv);
	srv->calls_restored = true;
	if (from)
		log_info("event=calls_restored count=%u refused=%u from=%s", sa_calls_count(srv->calls), bad, from);
	if (srv->journal->fd >= 0) {
		restore_done(srv, 1);
	} else if (from) {
		srv->journal->restore_kept = true;
		log_warn("event=calls_restore_kept from=%s hint=\"the restored calls stay in the files they came from until "
		         "this worker's journal can be written\"", from);
	}
}

void sa_sip_calls_directory(struct sa_server *srv)
{
	for (struct sa_call *c = sa_calls_oldest(srv->calls); c; c = sa_calls_newer(c))
		sa_calldir_take(srv, c->d.call_id);
}

/* The worker's call table and BYE pacer; worker 0 also polls the store's
 * generation for revocation. */
int sip_calls_init(struct sa_server *srv)
{
	if (!(srv->calls = sa_calls_new()) || journal_new(srv) < 0)
		return -1;
	if (srv->worker != 0)
		journal_rewrite(srv);   /* worker 0's is written by sa_sip_calls_restore */
	if (srv->worker == 0) {
		sa_store_generation(srv->store, &srv->store_generation);
		srv->revoke_poll = event_new(srv->base, -1, EV_PERSIST, revoke_poll_cb, srv);
		struct timeval poll = { .tv_sec = 0, .tv_usec = 250000 };
		if (!srv->revoke_poll || event_add(srv->revoke_poll, &poll) < 0)
			return -1;
	}
	if (!(srv->pacer = sa_pacer_new()) || !(srv->pace_timer = evtimer_new(srv->base, pace_timer_cb, srv)))
		return -1;
	sa_pacer_share(srv->pacer, srv->pace_shared);
	return 0;
}

/* After the transactions (sip_txn_shutdown): their BYEs leave the pacer first. */
void sip_calls_shutdown(struct sa_server *srv)
{
	if (srv->pace_timer)
		event_free(srv->pace_timer);
	srv->pace_timer = NULL;
	sa_pacer_free(srv->pacer);
	srv->pacer = NULL;
	sa_calls_free(srv->calls);
	srv->calls = NULL;
	journal_free(srv);
	if (srv->revoke_poll)
		event_free(srv->revoke_poll);
	srv->revoke_poll = NULL;
}
