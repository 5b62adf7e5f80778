/* sip_int.h: what the SIP core's files (daemon/sip*.c) share: the transaction and its owner. */
#ifndef SA_SIP_INT_H
#define SA_SIP_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include "calls.h"
#include "dialog.h"
#include "route.h"
#include "server.h"
#include "txn.h"

/* One proxied transaction: the server side (towards the sender) and the
 * client side (towards the next hop), RFC 3261 §16 and §17. */
struct sa_txn {
	struct sa_txn_node node;       /* in srv->txns (lib/txn): by skey and by branch */
	TAILQ_ENTRY(sa_txn) done;      /* completed ones, oldest first: the first to make room */
	uint64_t done_ms;              /* when it finished; it goes LINGER[linger] later */
	unsigned char linger;          /* which finished list: enum linger_class */
	TAILQ_ENTRY(sa_txn) ringing;   /* an INVITE of a credential's call, not answered finally yet */
	bool is_ringing;
	struct sa_txn_node early;      /* ringing: in srv->txn_early by its early dialogs' key */
	char *early_key;               /* that key (lib/txn sa_txn_early_key), while indexed */
	struct sa_txn_tags early_tags;   /* ringing: the callee's tags of its early dialogs */
	struct sa_txn_tags answered;     /* INVITE: the To tags of the 2xx it relayed (forks) */
	struct sa_server *srv;
	char *skey;                    /* branch|sent-by|method of the request received (just past the struct) */
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
	struct event *timer_g;         /* INVITE: its failure sent again over UDP until the ACK (Timer G, H) */
	uint64_t g_started_ms;         /* ... since when */
	unsigned g_interval_ms;
	enum sa_txn_state state;       /* the client side's (lib/txn): finished ones linger */
	bool charged;                  /* counted in its source's and credential's budget */
	bool local;                    /* we are the UAC (a BYE we send): absorb its responses */
	bool inbound;                  /* INVITE from the gateway to a registered PBX */
	bool holds_channel;            /* INVITE: holds a channel of its trunk until a call takes it over */
	bool send_failed;              /* the last send of the request failed at once */
	bool probe;                    /* an OPTIONS probe of ours to a gateway */
	bool answered_here;            /* its final answer is our own (sip_answer_kept): no hop behind us */
	bool abandoned;                /* an INVITE's branch to a gateway that failover left for silence */
	bool cancel_sent;              /* abandoned: it rang late and got our CANCEL */
	bool cancel_pending;           /* cancelled by its sender before the next hop said anything: the
	                                * CANCEL goes with the first provisional (RFC 3261 §9.1) */
	bool own_bye;                  /* a BYE of ours: counted in byes_pending until answered */
	char *ends_call;               /* a BYE from an end of a call: the call's Call-ID, caller tag and
	                                * callee tag (NUL after each). The call ends when the BYE is
	                                * done, unless the other end refused it (call_bye_done) */
	struct sa_pace_item *paced;    /* a BYE of ours waiting for its turn (lib/pace) */
	struct txn_owner *own;         /* whose it is, while in progress; NULL: nobody's */
	struct txn_failover *fo;       /* an INVITE to the gateways: the ones left to try */
};

/* An INVITE towards the gateways, or from them to a trunk's registrations,
 * until its final answer: what it takes to try the next one (a new client
 * transaction, RFC 3263 §4.3) when the live one answers 503, fails to
 * send, or stays silent for failover_timeout_ms. */
struct txn_failover {
	struct event *timer;           /* no answer from the live next hop */
	bool cancelled;                /* the caller sent CANCEL: no new next hop */
	unsigned cur, n;               /* flows[cur] is live */
	struct fo_binding *bind;       /* inbound: the registration of each flow; NULL: gateways */
	bool silence_ends;             /* the last one silent: 480 now (a relay to another node) */
	struct sa_flow flows[];
};

/* A registration an inbound INVITE may move on to: its Contact becomes the
 * Request-URI, and its credential the call's owner. */
struct fo_binding {
	char cred_id[SA_ID_MAX];
	char contact[SA_CONTACT_MAX];
};

/* At most this many registrations of a trunk an inbound INVITE tries in turn. */
#define SA_INBOUND_TARGETS 4

/* Whose a transaction is: needed only until its final answer (a finished
 * transaction lingers without it). */
struct txn_owner {
	char cred_id[SA_ID_MAX];       /* INVITE: the credential the call belongs to ("" none) */
	char trunk_id[SA_ID_MAX];
	char budget_cred[SA_ID_MAX];   /* the credential it is charged to ("" none) */
};

/* Whose call a forwarded INVITE starts. */
struct call_owner {
	const char *cred_id;           /* "" for a trunk that authenticates by address */
	const char *trunk_id;
	bool inbound;
	bool holds_channel;            /* admitted against the trunk's limits: the transaction holds it */
};

/* sip_txn.c: the table and the timers */
bool txn_finished(const struct sa_txn *t);
void txn_heard(struct sa_txn *t, int status);
const char *txn_cred(const struct sa_txn *t);
const char *txn_trunk(const struct sa_txn *t);
void channel_release(struct sa_server *srv, const char *trunk_id);
void channel_hold(struct sa_server *srv, const char *trunk_id);
int branch_new(struct sa_server *srv, char out[SA_TXN_BRANCH_LEN + 1]);
int64_t wall_now(void);
struct sa_txn *txn_by_skey(struct sa_server *srv, const char *key);
void txn_ringing_add(struct sa_txn *t, const struct sa_msg *m);
/* The INVITE that rings whose early dialog m is a request of: side 1 when m
 * comes from its caller (the caller's tag in From), 2 from its callee (in To). */
struct sa_txn *txn_early_find(struct sa_server *srv, const struct sa_msg *m, int *side);
struct sa_txn *txn_by_branch(struct sa_server *srv, const char *branch);
void txn_keep(struct sa_txn *t, char **slot, size_t *lenp, char *buf, size_t n);
void txn_keep_req(struct sa_txn *t, struct sa_txn_req *r);
const char *req_call_id(const struct sa_txn_req *r, char *out, size_t len);
void txn_arm(struct sa_txn *t, unsigned ms);
struct sa_txn *txn_new(struct sa_server *srv, const struct sa_msg *m, const struct sa_flow *from,
                       const char *budget_cred, size_t bytes, const char **why);
void answer_downstream(struct sa_txn *t, int status);
void txn_complete(struct sa_txn *t);
void txn_confirmed(struct sa_txn *t);
void txn_failure_sent(struct sa_txn *t);
void txn_timer_c_restart(struct sa_txn *t);
void txn_timer_c_cb(evutil_socket_t fd, short what, void *arg);

/* sip_relay.c: out to the next hop and back */
#define TXN_OF(n) ((struct sa_txn *)((char *)(n) - offsetof(struct sa_txn, node)))

/* sip_relay.c: t's next hop could not be reached (RFC 3261 §16.9): the next
 * gateway, or the sender's final answer now. */
void txn_unreachable(struct sa_txn *t);
/* sip_relay.c: at shutdown, the requests noted as waiting on connections being opened. */
void sip_conn_waiters_free(struct sa_server *srv);
struct sa_txn *sip_forward(struct sa_server *srv, const struct sa_msg *m, const struct sa_flow *from,
                           const struct sa_flow *to, const char *ruri, unsigned pop_routes,
                           const char *strip_realm, const struct call_owner *owner, const char *budget_cred);
void send_hop_request(struct sa_server *srv, struct sa_txn *t, const struct sa_msg *resp, bool cancel);
/* A response on its way back along the transaction it answers (lib/route decides). */
void handle_response(struct sa_server *srv, struct sa_msg *m, const struct sa_flow *from);
void forward_ack(struct sa_server *srv, const struct sa_msg *m, const struct sa_flow *from,
                 const struct sa_flow *to, unsigned pop, const char *strip_realm);
bool forward_upstream(struct sa_server *srv, const struct sa_msg *m, const struct sa_flow *from,
                      const char *realm, const struct call_owner *own);
/* An inbound INVITE just forwarded (t) to the first of n registrations:
 * keep the others to move on to (flows[i] reaches bind[i]). */
void fo_attach_bindings(struct sa_txn *t, const struct sa_flow *flows, const struct fo_binding *bind, unsigned n);
/* An inbound INVITE just relayed (t) to the node that holds the PBX's
 * registration: answered 480 when that node says nothing at all. */
void fo_attach_relay(struct sa_txn *t, const char *cred_id);

/* sip_calls.c: calls and our own BYEs */
struct sa_call *call_find(struct sa_server *srv, const struct sa_msg *m, int *side);
bool calls_full(struct sa_server *srv);
/* A BYE from an end of call c went on as t: the call ends with its answer. */
void call_bye_sent(struct sa_txn *t, const struct sa_call *c);
/* t, such a BYE, is done (answered finally, timed out, unreachable). */
void call_bye_done(struct sa_server *srv, struct sa_txn *t);
void call_remove(struct sa_server *srv, struct sa_call *c);
bool is_us_cb(const struct sa_uri *u, void *arg);
void call_create(struct sa_server *srv, struct sa_txn *t, struct sa_msg *ok);
void call_fork(struct sa_server *srv, struct sa_txn *t, struct sa_msg *ok);
void send_local(struct sa_server *srv, const struct sa_flow *to, const struct sa_dialog *d, bool to_caller,
                const char *reason);
void call_end(struct sa_server *srv, struct sa_call *c, const char *why, const char *reason);

/* sip_customer.c: a trunk's requests */
bool is_trusted(struct sa_server *srv, const struct sa_flow *from);
/* The source's key in the abuse table (lib/abuse sa_abuse_source: an IPv6 /64). */
size_t abuse_source(const struct sa_flow *fl, unsigned char key[16]);
const void *flow_addr(const struct sa_flow *fl, size_t *len);
void handle_inbound(struct sa_server *srv, const struct sa_msg *m, const struct sa_flow *from);
void handle_customer(struct sa_server *srv, struct sa_msg *m, const struct sa_flow *from);

/* sip.c: answers of our own, our addresses */
void peer_of(const struct sa_flow *fl, char *addr, size_t alen, struct sa_peer *p);
void sip_reply(struct sa_server *srv, const struct sa_msg *m, const struct sa_flow *from, int status,
               const char *reason, const char *extra, struct sa_txn *t);
void sip_reject(struct sa_server *srv, const struct sa_msg *m, const struct sa_flow *from, int status,
                const char *reason, const char *extra, const char *why);
void sip_answer_kept(struct sa_server *srv, const struct sa_msg *m, const struct sa_flow *from, int status,
                     const char *reason, const char *extra, const char *budget_cred);
void sip_reject_kept(struct sa_server *srv, const struct sa_msg *m, const struct sa_flow *from, int status,
                     const char *reason, const char *extra, const char *why, const char *budget_cred);
const struct sa_endpoint *local_ep(struct sa_server *srv, unsigned lidx);
void via_value(struct sa_server *srv, const struct sa_flow *to, const char *branch, char *out, size_t len);
void rr_value(const struct sa_endpoint *ep, char *out, size_t len);
int flow_for_text(struct sa_server *srv, const char *proto, const char *host, const char *port,
                  struct sa_flow *fl);
/* A PBX's TCP/TLS flow whose connection is gone: to the port its Contact names on the same address. */
int flow_to_contact(struct sa_server *srv, struct sa_flow *fl, const char *contact);

/* each file's part of sa_sip_init and sa_sip_shutdown */
int sip_txn_init(struct sa_server *srv);
void sip_txn_shutdown(struct sa_server *srv);
int sip_calls_init(struct sa_server *srv);
void sip_calls_shutdown(struct sa_server *srv);
int sip_customer_init(struct sa_server *srv);
void sip_customer_shutdown(struct sa_server *srv);

#endif
