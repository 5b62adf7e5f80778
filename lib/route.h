/* route.h: who may send what, to where: the rules a stranger on another address would try to get around. */
#ifndef SA_ROUTE_H
#define SA_ROUTE_H

#include <stdbool.h>
#include <stdint.h>
#include <netinet/in.h>
#include <sys/socket.h>

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

#endif
