/* route.h: who may send what, to where: the rules a stranger on another address would try to get around. */
#ifndef SA_ROUTE_H
#define SA_ROUTE_H

#include <stdbool.h>
#include <stdint.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "sipmsg.h"

enum sa_proto { SA_PROTO_UDP = 0, SA_PROTO_TCP, SA_PROTO_TLS };
/* "udp", "tcp" or "tls" in any case (len bytes of name). 0, or -1 for anything else. */
int sa_proto_parse(const char *name, enum sa_proto *out);

/* An IPv4 or IPv6 address with its port, in 28 bytes rather than a
 * sockaddr_storage's 128: every transaction and call keeps two. */
union sa_sockaddr {
	struct sockaddr sa;
	struct sockaddr_in in;
	struct sockaddr_in6 in6;
};

/* A way to or from a peer: the transport, the peer's address and port, and
 * for TCP/TLS the connection (0 for UDP, or when a new one may be opened). */
struct sa_flow {
	enum sa_proto proto;
	uint64_t conn_id;
	union sa_sockaddr ss;
	socklen_t sslen;
	unsigned lidx;                 /* the listener it arrived on / leaves from */
};

/* The same peer: transport, address and port. A TCP or TLS connection is
 * named by its peer's address and port as well, so a flow we opened and the
 * connection its answers come back on compare equal. */
bool sa_route_same_peer(const struct sa_flow *a, const struct sa_flow *b);

/* Where an in-dialog request may go, and why not. */
enum sa_route_verdict {
	SA_ROUTE_FORWARD = 0,         /* to the other end of the call, along its flow */
	SA_ROUTE_NOT_AN_END,          /* 403: it does not come from the end it claims to be */
	SA_ROUTE_OUTSIDE_CALL,        /* 403: a Route past ours names a hop that is not the other end */
};

/* An in-dialog request of a call we set up, as its tags place it. */
struct sa_route_in_dialog {
	const struct sa_flow *from;   /* where it arrived */
	const struct sa_flow *end;    /* the flow of the end its tags say sent it */
	bool end_open;                /* TCP/TLS: that end's connection is still open */
	const struct sa_flow *other;  /* the flow of the other end: the only place it may go */
	bool has_next_route;          /* a Route value follows ours */
	const struct sa_flow *next;   /* that Route as a flow; NULL when it names no numeric address */
};

/* The verdict for an in-dialog request (RFC 3261 §16.12 loose routing,
 * narrowed to the call): only the call's own ends may send in it, each only
 * towards the other, and a remaining Route may only name the other end.
 * An end on TCP/TLS whose connection closed may come back on a new one from
 * the same address (its port changes with the connection). */
enum sa_route_verdict sa_route_in_dialog(const struct sa_route_in_dialog *r);

/* May a response from `from` answer a request we sent along `sent_to`? Only
 * from the peer the request went to: a branch alone is not proof. */
bool sa_route_response_ok(const struct sa_flow *sent_to, const struct sa_flow *from);

/* May a request from `from` match (as retransmission, ACK or CANCEL) a
 * transaction whose request came from `txn_from`? The Via sent-by and branch
 * a stranger can copy; the flow it cannot. */
bool sa_route_same_sender(const struct sa_flow *txn_from, const struct sa_flow *from);

const char *sa_route_verdict_reason(enum sa_route_verdict v);

/* ---- us: which URIs name this proxy ---- */

#define SA_ROUTE_SELF_MAX 8

/* Our listeners (numeric host as configured, port) and [sip] domain. */
struct sa_route_self {
	const char *domain;
	unsigned n;
	struct sa_route_listener {
		const char *host;
		uint16_t port;
	} addr[SA_ROUTE_SELF_MAX];
};

/* A URI naming one of our listeners by address and port (5060 when absent). */
bool sa_route_uri_is_us(const struct sa_route_self *self, const struct sa_uri *u);

/* A URI naming us by name: the domain, or a trunk host trunk-<id>.<domain> (a
 * PBX whose outbound proxy is its trunk host), on a port we listen on. */
bool sa_route_uri_names_us(const struct sa_route_self *self, const struct sa_uri *u);

/* How many leading Route values name us (RFC 3261 §16.4: ours are popped
 * before the request goes on; a Route to anyone else is never ours to take). */
unsigned sa_route_ours(const struct sa_route_self *self, const struct sa_msg *m);

/* How many Route values an initial request (no To tag) leaves without: all
 * of them. sipauthd chooses its next hop (a gateway, a registered PBX, the
 * node holding the registration); a preloaded Route past ours would have
 * that hop, which trusts sipauthd, relay the request wherever the sender
 * named (Kamailio's default configuration removes them too). */
unsigned sa_route_initial_pop(const struct sa_msg *m);

/* Does the previous hop strict-route (RFC 2543 style): an in-dialog request
 * whose Request-URI is one we put in a Record-Route (our address and port,
 * no user part) and that has Route values? RFC 3261 §16.4: the last Route
 * value becomes the Request-URI (lib/proxy sa_proxy_strict_route). */
bool sa_route_strict_routed(const struct sa_route_self *self, const struct sa_msg *m);

/* OPTIONS without a user part and outside a dialog: a keep-alive for the
 * proxy itself, answered without credentials. */
bool sa_route_options_for_us(const struct sa_msg *m);

/* The extension a request requires that we lack (we support none):
 * Proxy-Require always, Require where we are the UAS (REGISTER); RFC 3261
 * §8.2.2.3, §16.3. NULL when none. */
const struct sa_hdr *sa_route_required_extension(const struct sa_msg *m);

/* ---- requests: which way one goes, before any credential is looked at ---- */

/* What the request path knows of a request when it arrives. */
struct sa_route_request {
	enum sa_method method;
	bool to_tag;              /* in a dialog (or the ACK of a final answer) */
	bool trusted;             /* from a gateway or a trusted network */
	bool banned;              /* the source is banned (lib/abuse) */
	bool txn_match;           /* a server transaction has its branch, sent-by and method */
	bool txn_same_sender;     /* ... and its request came from this very flow */
	bool txn_answered;        /* ... and has an answer to send again */
	bool own_ack;             /* an ACK whose To tag is one we made (for our 4xx) */
	bool stopping;            /* graceful stop: draining what is in flight */
	bool options_for_us;      /* OPTIONS without a user part: a keep-alive for the proxy */
	bool max_forwards_zero;
	bool requires_extension;  /* Proxy-Require, or Require on a REGISTER (we are its UAS) */
};

enum sa_route_action {
	SA_RA_DROP = 0,           /* nothing is sent back */
	SA_RA_DROP_BANNED,        /* a banned source learns nothing, costs nothing */
	SA_RA_REFUSE,             /* answer status with reason (and extra headers) */
	SA_RA_ABSORB,             /* a retransmission: the transaction's answer again, if it has one */
	SA_RA_OPTIONS,            /* 200 with Allow */
	SA_RA_UNSUPPORTED,        /* 420 listing what was required */
	SA_RA_CANCEL,             /* match it with the INVITE it cancels (sa_route_cancel) */
	SA_RA_IN_DIALOG,          /* along a call we set up (sa_route_in_dialog) */
	SA_RA_INBOUND,            /* from a gateway: to the trunk's registration */
	SA_RA_AUTHENTICATE,       /* from a customer: digest or trusted network, then register or upstream */
};

struct sa_route_decision {
	enum sa_route_action action;
	bool resend;              /* SA_RA_ABSORB: send the kept answer again */
	int status;               /* SA_RA_REFUSE */
	const char *reason;       /* SA_RA_REFUSE: the reason phrase's detail for the log */
	const char *extra;        /* SA_RA_REFUSE: headers to add, or NULL */
};

/* The first verdict on a request (RFC 3261 §16.3, §17.2.3). Only a gateway
 * or trusted network reaches a registration without credentials; everything
 * else that is not a retransmission, a keep-alive, a CANCEL or part of a call
 * of ours must authenticate. */
struct sa_route_decision sa_route_request(const struct sa_route_request *r);

/* May this CANCEL cancel the INVITE transaction found by its branch and
 * sent-by? Only the INVITE's own sender may (a branch can be copied):
 * 0, or 481. */
int sa_route_cancel(bool txn_found, bool same_sender);

/* ---- responses: what one does to the transaction it answers ---- */

struct sa_route_response {
	int status;
	bool cseq_cancel;         /* the answer to a CANCEL (ours are hop by hop) */
	bool relayable;           /* it could be rewritten for the next hop (our Via off) */
	bool txn;                 /* a client transaction has its branch */
	bool from_sent_peer;      /* ... and it comes from where that request went */
	bool abandoned;           /* ... a branch failover left for silence */
	bool local;               /* ... a request of our own (BYE, probe): it ends here */
	bool completed;           /* ... has had its final answer */
	bool invite;              /* ... is an INVITE */
	bool owns_call;           /* ... an INVITE of a credential: its 2xx makes a call */
	bool failover;            /* ... may still move on to another gateway */
	bool to_gateway;          /* ... came from a gateway: the answer goes back to one */
};

enum sa_route_resp_action {
	SA_RR_DROP = 0,           /* nothing more to do */
	SA_RR_REFUSE,             /* from another peer than the request went to: dropped, counted, logged */
	SA_RR_ABANDONED,          /* for the branch failover left (fo_abandon's rules) */
	SA_RR_LOCAL,              /* ends our own request's transaction */
	SA_RR_NO_TXN,             /* a 2xx after its transaction: along the call, from its end only */
	SA_RR_FINAL_AGAIN,        /* a retransmitted final: ACK a non-2xx again, relay a 2xx end to end */
	SA_RR_RELAY,              /* the steps below */
};

/* SA_RR_RELAY steps, in the order the daemon takes them. */
enum {
	SA_RR_TRY_NEXT = 1 << 0,   /* a 503 with gateways left: ACK it, move on; stop if that worked */
	SA_RR_FORWARD = 1 << 1,    /* to the request's sender (a 100 is hop by hop: never) */
	SA_RR_ACK = 1 << 2,        /* ACK a non-2xx final to an INVITE on its branch (RFC 3261 §17.1.1.3) */
	SA_RR_CALL = 1 << 3,       /* a 2xx to a credential's INVITE: the call is set up */
	SA_RR_KEEP = 1 << 4,       /* keep the answer for retransmissions of the request: a final,
	                            * or the last provisional (RFC 3261 §17.2.1, §17.2.2) */
	SA_RR_COMPLETE = 1 << 5,   /* the transaction has its final answer */
	SA_RR_FORGET = 1 << 6,     /* a 2xx to an INVITE: Accepted (RFC 6026 §8.5), the INVITE's
	                            * retransmissions are absorbed with nothing sent: drop what was kept */
	SA_RR_RESTART_C = 1 << 7,  /* a provisional other than 100 to an INVITE: Timer C starts again (§16.7 step 2) */
	SA_RR_AS_500 = 1 << 8,     /* a PBX's 503 goes to the gateway as 500 (§16.7 step 6): one
	                            * customer's overload is not the edge's, and a gateway that
	                            * takes a 503 for it stops sending every trunk's calls here.
	                            * The last gateway's 503 goes to the PBX as it is: every
	                            * gateway of the carrier said it, so the next request would
	                            * get it too, and the PBX may try another carrier. */
};

struct sa_route_resp_decision {
	enum sa_route_resp_action action;
	unsigned steps;            /* SA_RR_RELAY */
	const char *reason;        /* SA_RR_REFUSE */
};

/* What a response does (RFC 3261 §16.7, §17.1; RFC 6026: a 2xx to an INVITE
 * is relayed end to end and its retransmissions too, and is not kept). */
struct sa_route_resp_decision sa_route_response(const struct sa_route_response *r);

/* ---- failover: a gateway left for silence, and its late answers ---- */

/* Failover left a gateway that stayed silent, but the INVITE may have
 * reached it. Its branch goes on as a request of ours (RFC 3261 §16.7,
 * §9.1): what an answer on it gets. */
enum sa_route_late {
	SA_LATE_NOTHING = 0,      /* the answer to our CANCEL, or a provisional after it */
	SA_LATE_ACK_AGAIN,        /* a retransmitted non-2xx final: ACK it again */
	SA_LATE_ACK_2XX_AGAIN,    /* a retransmitted 2xx: our ACK for it again */
	SA_LATE_CANCEL,           /* it rings: CANCEL it, and wait 64*T1 for the 487 */
	SA_LATE_ACK,              /* a non-2xx final: ACK it; the branch is done */
	SA_LATE_ACK_BYE,          /* a 2xx: ACK it and end that dialog with a BYE; the branch is done */
};

struct sa_route_late_answer {
	int status;
	bool invite;              /* the answer is to the INVITE (not to our CANCEL) */
	bool finished;            /* the branch had its final answer already */
	bool cancel_sent;         /* it rang before and got our CANCEL */
};

enum sa_route_late sa_route_late_answer(const struct sa_route_late_answer *a);

/* The live gateway's failover time passed. */
enum sa_route_fo_timer {
	SA_FO_WAIT = 0,           /* it answered (or the INVITE ended): nothing to do */
	SA_FO_END_487,            /* the caller cancelled and nobody answers: 487 to it, the INVITE ends */
	SA_FO_NEXT,               /* on to the next gateway (when one is left) */
};

enum sa_route_fo_timer sa_route_failover_timer(bool finished, int upstream_status, bool cancelled);

#endif
