/* sip_txn.c: proxied transactions: the table, their timers (lib/txn decides), lingering and freeing. */
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

#define SWEEP_MS 250               /* how often finished transactions past their time are freed */

/* Finished transactions wait in one list per lingering time, each in the
 * order they finished, so that one sweep frees them from the head without a
 * timer of their own. */
/* LINGER_2XX also holds Confirmed transactions over UDP (Timer I, T4, the same 5 s) */
enum linger_class { LINGER_2XX, LINGER_UDP, LINGER_STREAM, LINGER_CLASSES };

_Static_assert(LINGER_CLASSES == SA_LINGER_CLASSES, "server.h sizes txn_done by SA_LINGER_CLASSES");
_Static_assert(SA_TXN_T4_MS == SA_TXN_LINGER_2XX_MS, "Confirmed transactions over UDP linger in LINGER_2XX");

static const unsigned linger_ms[LINGER_CLASSES] = { SA_TXN_LINGER_2XX_MS, SA_TXN_LINGER_UDP_MS,
                                                     SA_TXN_LINGER_STREAM_MS };

bool txn_finished(const struct sa_txn *t)
{
	return sa_txn_finished(t->state);
}

/* A response from the next hop: a provisional moves it to Proceeding; a
 * final one is taken by txn_complete, which makes the transaction finished. */
void txn_heard(struct sa_txn *t, int status)
{
	if (status > t->upstream_status)
		t->upstream_status = status;
	if (status < 200)
		t->state = sa_txn_on_response(t->state, t->method, status);
}

const char *txn_cred(const struct sa_txn *t)
{
	return t->own ? t->own->cred_id : "";
}

const char *txn_trunk(const struct sa_txn *t)
{
	return t->own ? t->own->trunk_id : "";
}

/* ---- trunk channels (lib/policy) ---- */

void channel_release(struct sa_server *srv, const char *trunk_id)
{
	if (trunk_id[0])
		sa_trunk_release(srv->trunks, trunk_id);
}

void channel_hold(struct sa_server *srv, const char *trunk_id)
{
	if (trunk_id[0])
		sa_trunk_hold(srv->trunks, trunk_id);
}

/* A branch for a request we send; with several workers it names ours, so
 * that its answers find this worker whichever socket they reach. */
int branch_new(struct sa_server *srv, char out[SA_TXN_BRANCH_LEN + 1])
{
	return srv->workers ? sa_txn_branch_new_for(out, srv->worker) : sa_txn_branch_new(out);
}

uint64_t sa_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t sa_mono_s(void)
{
	return sa_now_ms() / 1000;
}

int64_t wall_now(void)
{
	return (int64_t)time(NULL);
}

/* ---- transaction table ---- */


struct sa_txn *txn_by_skey(struct sa_server *srv, const char *key)
{
	struct sa_txn_node *n = sa_txn_index_by_skey(srv->txns, key);
	return n ? TXN_OF(n) : NULL;
}

struct sa_txn *txn_by_branch(struct sa_server *srv, const char *branch)
{
	struct sa_txn_node *n = sa_txn_index_by_branch(srv->txns, branch);
	return n ? TXN_OF(n) : NULL;
}

#define EARLY_OF(n) ((struct sa_txn *)((char *)(n) - offsetof(struct sa_txn, early)))

/* An INVITE of a call, until its final answer: listed (revocation, the
 * API's early calls) and found by the requests of its early dialogs. */
void txn_ringing_add(struct sa_txn *t, const struct sa_msg *m)
{
	char key[SA_TXN_KEY_MAX];

	TAILQ_INSERT_TAIL(&t->srv->txn_ringing, t, ringing);
	t->is_ringing = true;
	if (!m->call_id || !m->from_tag || !(t->early_key = strdup(sa_txn_early_key(m->call_id, m->from_tag, key))))
		return;
	t->early.skey = t->early_key;
	t->early.branch = t->branch;   /* unique; never looked up in this index */
	if (sa_txn_index_add(t->srv->txn_early, &t->early) < 0) {
		free(t->early_key);
		t->early_key = NULL;
	}
}

static void txn_ringing_remove(struct sa_txn *t)
{
	if (!t->is_ringing)
		return;
	TAILQ_REMOVE(&t->srv->txn_ringing, t, ringing);
	t->is_ringing = false;
	if (t->early_key) {
		sa_txn_index_remove(t->srv->txn_early, &t->early);
		free(t->early_key);
		t->early_key = NULL;
	}
}

struct sa_txn *txn_early_find(struct sa_server *srv, const struct sa_msg *m, int *side)
{
	char key[SA_TXN_KEY_MAX];
	struct sa_txn_node *n;

	if (!m->call_id || !m->from_tag || !m->to_tag)
		return NULL;
	/* the caller's tag finds the INVITE; the callee's must be one of its early dialogs' */
	if ((n = sa_txn_index_by_skey(srv->txn_early, sa_txn_early_key(m->call_id, m->from_tag, key))) &&
	    sa_txn_tag_has(&EARLY_OF(n)->early_tags, m->to_tag)) {
		*side = 1;
		return EARLY_OF(n);
	}
	if ((n = sa_txn_index_by_skey(srv->txn_early, sa_txn_early_key(m->call_id, m->to_tag, key))) &&
	    sa_txn_tag_has(&EARLY_OF(n)->early_tags, m->from_tag)) {
		*side = 2;
		return EARLY_OF(n);
	}
	return NULL;
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
void txn_keep(struct sa_txn *t, char **slot, size_t *lenp, char *buf, size_t n)
{
	sa_txn_budget_bytes(t->srv->txn_budget, (long)n - (long)(*slot ? *lenp : 0));
	free(*slot);
	*slot = buf;
	*lenp = n;
}

/* Keep r as t's request (counted against max_transaction_memory); NULL drops it. */
void txn_keep_req(struct sa_txn *t, struct sa_txn_req *r)
{
	sa_txn_budget_bytes(t->srv->txn_budget, (long)(r ? r->size : 0) - (long)(t->req ? t->req->size : 0));
	sa_txn_req_free(t->req);
	t->req = r;
}

/* The Call-ID a kept request carries, as text for a log line or a listing. */
const char *req_call_id(const struct sa_txn_req *r, char *out, size_t len)
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
	free(fo->bind);
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
	txn_ringing_remove(t);
	txn_discharge(t);
	free(t->own);
	txn_fo_free(t);
	if (t->timer)
		event_free(t->timer);
	if (t->timer_c)
		event_free(t->timer_c);
	if (t->timer_g)
		event_free(t->timer_g);
	txn_keep_req(t, NULL);
	txn_keep(t, &t->resp, &t->resp_len, NULL, 0);
	free(t->ends_call);
	if (t->dir_call_id) {
		sa_calldir_drop(srv, t->dir_call_id);
		free(t->dir_call_id);
	}
	free(t);
}

static void txn_timer_cb(evutil_socket_t fd, short what, void *arg);

void txn_arm(struct sa_txn *t, unsigned ms)
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
struct sa_txn *txn_new(struct sa_server *srv, const struct sa_msg *m, const struct sa_flow *from,
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
	char key[SA_TXN_KEY_MAX], branch[SA_TXN_BRANCH_LEN + 1];
	struct sa_txn *t = NULL;
	if (branch_new(srv, branch) < 0)
		goto fail;
	if (m)
		sa_txn_server_key(m, key);
	else
		snprintf(key, sizeof(key), "local|%s", branch);
	/* the key lives as long as the transaction: one allocation, one free
	 * (some 100 000 live at 2000 calls/s, each malloc and free counts) */
	size_t klen = strlen(key);
	if (!(t = calloc(1, sizeof(*t) + klen + 1)))
		goto fail;
	memcpy(t->branch, branch, sizeof(t->branch));
	t->skey = memcpy((char *)(t + 1), key, klen + 1);
	if (!(t->timer = evtimer_new(srv->base, txn_timer_cb, t))) {
fail:
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
			sa_str_copy(t->own->budget_cred, sizeof(t->own->budget_cred), budget_cred);
		sa_msg_local_tag(m, srv->tag_key, t->local_tag);
		/* its CANCEL and ACK may reach another worker: the directory sends them here */
		if (srv->workers && m->method == SA_M_INVITE && m->call_id && (t->dir_call_id = strdup(m->call_id)))
			sa_calldir_take(srv, t->dir_call_id);
	} else {
		t->local = true;
	}
	t->node.skey = t->skey;
	t->node.branch = t->branch;
	sa_txn_index_add(srv->txns, &t->node);   /* both keys set: refused only out of memory with the index full */
	srv->ntxns++;
	srv->nactive++;
	if (srv->ntxns > srv->ntxns_peak)
		srv->ntxns_peak = srv->ntxns;
	return t;
}

/* Answer the sender of t's request ourselves (408 on timeout, 487 when we
 * end it), from the fields t kept of its request: the Vias below ours are the sender's. */
void answer_downstream(struct sa_txn *t, int status)
{
	char out[8192], *copy;
	if (t->local || !t->req)
		return;
	long n = sa_txn_answer(t->req, status, t->local_tag, out, sizeof(out));
	if (n <= 0)
		return;
	sa_transport_send(t->srv, &t->from, out, (size_t)n);
	/* kept: the request's retransmissions get it again, and so does Timer G */
	if ((copy = malloc((size_t)n)) != NULL) {
		memcpy(copy, out, (size_t)n);
		txn_keep(t, &t->resp, &t->resp_len, copy, (size_t)n);
		t->resp_status = status;
		txn_failure_sent(t);
	}
}

/* Timer G fired: the failure again, unless Timer H is past (lib/txn). */
static void txn_timer_g_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sa_txn *t = arg;
	unsigned next = sa_txn_timer_g(sa_now_ms() - t->g_started_ms, &t->g_interval_ms);
	if (next == 0 || !t->resp) {
		char callid[256];
		log_info("event=timeout timer=H status=%d call_id=\"%s\" hint=\"the caller never acknowledged the "
		         "failure\"", t->resp_status, LOGQ(req_call_id(t->req, callid, sizeof(callid))));
		event_free(t->timer_g);
		t->timer_g = NULL;
		return;
	}
	sa_transport_send(t->srv, &t->from, t->resp, t->resp_len);
	t->srv->metrics.sip_failures_retransmitted++;
	struct timeval tv = { .tv_sec = next / 1000, .tv_usec = (next % 1000) * 1000 };
	evtimer_add(t->timer_g, &tv);
}

/* A failure (300-699) to an INVITE went back to its sender, kept in t->resp:
 * over UDP, Timer G sends it again until the ACK (RFC 3261 §17.2.1). */
void txn_failure_sent(struct sa_txn *t)
{
	if (t->method != SA_M_INVITE || t->from.proto != SA_PROTO_UDP || t->resp_status < 300 || !t->resp ||
	    t->timer_g || !(t->timer_g = evtimer_new(t->srv->base, txn_timer_g_cb, t)))
		return;
	t->g_started_ms = sa_now_ms();
	t->g_interval_ms = SA_TXN_T1_MS;
	struct timeval tv = { .tv_sec = 0, .tv_usec = SA_TXN_T1_MS * 1000 };
	evtimer_add(t->timer_g, &tv);
}

/* The list a finished transaction waits in: the one of its lingering time (lib/txn). */
static enum linger_class txn_linger(const struct sa_txn *t)
{
	/* an answer of our own has no next hop (t->to is unset) */
	bool any_udp = t->from.proto == SA_PROTO_UDP || (!t->answered_here && t->to.proto == SA_PROTO_UDP);
	unsigned ms = sa_txn_linger_ms(t->state, any_udp);
	for (int c = 0; c < LINGER_CLASSES; c++)
		if (linger_ms[c] == ms)
			return (enum linger_class)c;
	return LINGER_UDP;
}

/* The final answer came (upstream_status), or a timer ended it without one. */
void txn_complete(struct sa_txn *t)
{
	if (txn_finished(t))
		return;
	t->srv->nactive--;
	t->state = t->upstream_status >= 200 ? sa_txn_on_response(t->state, t->method, t->upstream_status)
	                                     : sa_txn_on_timeout(t->state);
	if (t->ends_call)
		call_bye_done(t->srv, t);
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
	txn_ringing_remove(t);
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

/* The ACK for a failure we answered ourselves (§17.2.1): Confirmed, and
 * from now on lingering Timer I only, not Timer H's 64*T1. (A relayed
 * failure keeps Completed: the gateway may still retransmit it, and each
 * retransmission is ACKed again from here.) */
void txn_confirmed(struct sa_txn *t)
{
	if (t->timer_g) {   /* acknowledged: Timer G stops */
		event_free(t->timer_g);
		t->timer_g = NULL;
	}
	enum sa_txn_state s = sa_txn_on_ack(t->state);
	if (!t->answered_here || !txn_finished(t) || s == t->state)
		return;
	t->state = s;
	TAILQ_REMOVE(&t->srv->txn_done[t->linger], t, done);
	t->linger = (unsigned char)txn_linger(t);
	t->done_ms = sa_now_ms();   /* the newest of its list: the lists stay in order */
	TAILQ_INSERT_TAIL(&t->srv->txn_done[t->linger], t, done);
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
		log_info("event=timeout timer=%s method=%s upstream_status=%d", timer, sa_method_text(t->method), t->upstream_status);
	if ((act & SA_TXN_ACT_CANCEL) && !t->local)
		send_hop_request(t->srv, t, NULL, true);
	if (act & SA_TXN_ACT_ANSWER_408)   /* cancelled while nothing came: terminated, as it asked */
		answer_downstream(t, t->cancel_pending ? 487 : 408);
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
void txn_timer_c_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sa_txn *t = arg;
	txn_act(t, sa_txn_timer_c(t->upstream_status), "C");
}

/* A provisional other than 100 came: Timer C starts again (RFC 3261 §16.7 step 2). */
void txn_timer_c_restart(struct sa_txn *t)
{
	struct timeval tc = { .tv_sec = t->srv->cfg.timer_c };
	if (t->timer_c)
		evtimer_add(t->timer_c, &tc);
}

static void txn_drained(struct sa_txn_node *n, void *arg)
{
	(void)arg;
	txn_free(TXN_OF(n));
}

/* The worker's transaction table, budgets and finished lists, and the sweep. */
int sip_txn_init(struct sa_server *srv)
{
	srv->txns = sa_txn_index_new();
	srv->txn_early = sa_txn_index_new();
	TAILQ_INIT(&srv->txn_ringing);
	/* each transaction in progress holds at most a source and a credential
	 * (per worker: the table's cap is each worker's) */
	srv->txn_budget = sa_txn_budget_new(srv->cfg.max_transactions);
	for (int c = 0; c < LINGER_CLASSES; c++)
		TAILQ_INIT(&srv->txn_done[c]);
	if (!srv->txns || !srv->txn_early || !srv->txn_budget)
		return -1;
	srv->txn_sweep = event_new(srv->base, -1, EV_PERSIST, txn_sweep_cb, srv);
	struct timeval sweep = { .tv_sec = 0, .tv_usec = SWEEP_MS * 1000 };
	return !srv->txn_sweep || event_add(srv->txn_sweep, &sweep) < 0 ? -1 : 0;
}

void sip_txn_shutdown(struct sa_server *srv)
{
	if (srv->txns)
		sa_txn_index_drain(srv->txns, txn_drained, NULL);
	sa_txn_index_free(srv->txns);
	srv->txns = NULL;
	sa_txn_index_free(srv->txn_early);   /* emptied by the frees above */
	srv->txn_early = NULL;
	if (srv->txn_sweep)
		event_free(srv->txn_sweep);
	srv->txn_sweep = NULL;
	sa_txn_budget_free(srv->txn_budget);
	srv->txn_budget = NULL;
	sip_conn_waiters_free(srv);
}
