/* test_route.c: the routing rules played as a stranger: in-dialog requests, responses and matches from other flows. */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy.h"
#include "route.h"

static struct sa_flow flow(enum sa_proto proto, const char *addr, unsigned port, uint64_t conn)
{
	struct sa_flow f;
	memset(&f, 0, sizeof(f));
	f.proto = proto;
	f.conn_id = conn;
	if (strchr(addr, ':')) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&f.ss;
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		inet_pton(AF_INET6, addr, &s6->sin6_addr);
		f.sslen = sizeof(*s6);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&f.ss;
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)port);
		inet_pton(AF_INET, addr, &s4->sin_addr);
		f.sslen = sizeof(*s4);
	}
	return f;
}

/* a call: the PBX on UDP 198.51.100.7:5060, the gateway on UDP 192.0.2.10:5060 */
static struct sa_flow pbx, gw;

static void setup(void)
{
	pbx = flow(SA_PROTO_UDP, "198.51.100.7", 5060, 0);
	gw = flow(SA_PROTO_UDP, "192.0.2.10", 5060, 0);
}

static enum sa_route_verdict in_dialog(const struct sa_flow *from, const struct sa_flow *end, bool end_open,
                                       const struct sa_flow *other, bool has_next, const struct sa_flow *next)
{
	struct sa_route_in_dialog r = { .from = from, .end = end, .end_open = end_open, .other = other,
	                                .has_next_route = has_next, .next = next };
	return sa_route_in_dialog(&r);
}

START_TEST(an_end_of_the_call_is_forwarded_to_the_other)
{
	ck_assert_int_eq(in_dialog(&pbx, &pbx, true, &gw, false, NULL), SA_ROUTE_FORWARD);
	ck_assert_int_eq(in_dialog(&gw, &gw, true, &pbx, false, NULL), SA_ROUTE_FORWARD);
}
END_TEST

START_TEST(a_stranger_with_the_tags_is_refused)
{
	struct sa_flow stranger = flow(SA_PROTO_UDP, "203.0.113.66", 5060, 0);
	ck_assert_int_eq(in_dialog(&stranger, &pbx, true, &gw, false, NULL), SA_ROUTE_NOT_AN_END);
	ck_assert_int_eq(in_dialog(&stranger, &gw, true, &pbx, false, NULL), SA_ROUTE_NOT_AN_END);
}
END_TEST

START_TEST(same_address_other_udp_port_is_a_stranger)
{
	/* a neighbour behind the PBX's NAT shares its address, not its port */
	struct sa_flow neighbour = flow(SA_PROTO_UDP, "198.51.100.7", 5062, 0);
	ck_assert_int_eq(in_dialog(&neighbour, &pbx, true, &gw, false, NULL), SA_ROUTE_NOT_AN_END);
	/* ... even when the call's UDP end is "closed" (UDP never is) */
	ck_assert_int_eq(in_dialog(&neighbour, &pbx, false, &gw, false, NULL), SA_ROUTE_NOT_AN_END);
}
END_TEST

START_TEST(same_address_other_transport_is_a_stranger)
{
	struct sa_flow tcp = flow(SA_PROTO_TCP, "198.51.100.7", 5060, 9);
	ck_assert_int_eq(in_dialog(&tcp, &pbx, true, &gw, false, NULL), SA_ROUTE_NOT_AN_END);
}
END_TEST

START_TEST(a_tcp_end_comes_back_on_a_new_connection_only_once_the_old_one_closed)
{
	struct sa_flow tcp_end = flow(SA_PROTO_TLS, "198.51.100.7", 40001, 3);
	struct sa_flow again = flow(SA_PROTO_TLS, "198.51.100.7", 40777, 8);
	struct sa_flow elsewhere = flow(SA_PROTO_TLS, "203.0.113.66", 40777, 9);
	ck_assert_int_eq(in_dialog(&again, &tcp_end, true, &gw, false, NULL), SA_ROUTE_NOT_AN_END);
	ck_assert_int_eq(in_dialog(&again, &tcp_end, false, &gw, false, NULL), SA_ROUTE_FORWARD);
	ck_assert_int_eq(in_dialog(&elsewhere, &tcp_end, false, &gw, false, NULL), SA_ROUTE_NOT_AN_END);
}
END_TEST

START_TEST(a_route_past_us_may_only_name_the_other_end)
{
	struct sa_flow outside = flow(SA_PROTO_UDP, "203.0.113.99", 5060, 0);
	struct sa_flow outside_tcp = flow(SA_PROTO_TCP, "203.0.113.99", 80, 0);
	struct sa_flow gw_other_port = flow(SA_PROTO_UDP, "192.0.2.10", 5070, 0);
	struct sa_flow gw_tcp = flow(SA_PROTO_TCP, "192.0.2.10", 5060, 0);
	struct sa_flow gw_again = gw;
	ck_assert_int_eq(in_dialog(&pbx, &pbx, true, &gw, true, &gw_again), SA_ROUTE_FORWARD);
	ck_assert_int_eq(in_dialog(&pbx, &pbx, true, &gw, true, &outside), SA_ROUTE_OUTSIDE_CALL);
	ck_assert_int_eq(in_dialog(&pbx, &pbx, true, &gw, true, &outside_tcp), SA_ROUTE_OUTSIDE_CALL);
	ck_assert_int_eq(in_dialog(&pbx, &pbx, true, &gw, true, &gw_other_port), SA_ROUTE_OUTSIDE_CALL);
	ck_assert_int_eq(in_dialog(&pbx, &pbx, true, &gw, true, &gw_tcp), SA_ROUTE_OUTSIDE_CALL);
	/* a Route that names no numeric address (a host name) cannot be checked: refused */
	ck_assert_int_eq(in_dialog(&pbx, &pbx, true, &gw, true, NULL), SA_ROUTE_OUTSIDE_CALL);
	/* and the gateway cannot route the PBX's way elsewhere either */
	ck_assert_int_eq(in_dialog(&gw, &gw, true, &pbx, true, &outside), SA_ROUTE_OUTSIDE_CALL);
}
END_TEST

START_TEST(a_stranger_is_refused_before_its_route_is_looked_at)
{
	struct sa_flow stranger = flow(SA_PROTO_UDP, "203.0.113.66", 5060, 0);
	struct sa_flow outside = flow(SA_PROTO_UDP, "203.0.113.99", 5060, 0);
	ck_assert_int_eq(in_dialog(&stranger, &pbx, true, &gw, true, &outside), SA_ROUTE_NOT_AN_END);
}
END_TEST

START_TEST(responses_only_from_the_peer_the_request_went_to)
{
	struct sa_flow forger = flow(SA_PROTO_UDP, "198.51.100.8", 5060, 0);
	struct sa_flow gw_other_port = flow(SA_PROTO_UDP, "192.0.2.10", 5099, 0);
	struct sa_flow gw_on_tcp = flow(SA_PROTO_TCP, "192.0.2.10", 5060, 4);
	struct sa_flow gw_copy = gw;
	gw_copy.lidx = 3;   /* the listener it arrived on does not matter */
	ck_assert(sa_route_response_ok(&gw, &gw_copy));
	ck_assert(!sa_route_response_ok(&gw, &forger));
	ck_assert(!sa_route_response_ok(&gw, &gw_other_port));
	ck_assert(!sa_route_response_ok(&gw, &gw_on_tcp));
	/* an outgoing TCP connection: the answer comes on it, from the address we connected to */
	struct sa_flow sent = flow(SA_PROTO_TCP, "192.0.2.10", 5060, 0), on_conn = flow(SA_PROTO_TCP, "192.0.2.10", 5060, 17);
	ck_assert(sa_route_response_ok(&sent, &on_conn));
}
END_TEST

START_TEST(ipv6_peers_compare_by_address_and_port)
{
	struct sa_flow a = flow(SA_PROTO_UDP, "2001:db8::1", 5060, 0), b = flow(SA_PROTO_UDP, "2001:db8::1", 5060, 0);
	struct sa_flow c = flow(SA_PROTO_UDP, "2001:db8::2", 5060, 0), d = flow(SA_PROTO_UDP, "2001:db8::1", 5061, 0);
	struct sa_flow v4 = flow(SA_PROTO_UDP, "192.0.2.1", 5060, 0);
	ck_assert(sa_route_same_peer(&a, &b));
	ck_assert(!sa_route_same_peer(&a, &c));
	ck_assert(!sa_route_same_peer(&a, &d));
	ck_assert(!sa_route_same_peer(&a, &v4));
}
END_TEST

START_TEST(only_the_sender_matches_its_transaction)
{
	/* a copied branch and Via sent-by from another flow: no retransmission, ACK or CANCEL */
	struct sa_flow copycat = flow(SA_PROTO_UDP, "203.0.113.66", 5060, 0);
	ck_assert(sa_route_same_sender(&pbx, &pbx));
	ck_assert(!sa_route_same_sender(&pbx, &copycat));
}
END_TEST

START_TEST(every_verdict_has_a_reason)
{
	ck_assert_str_eq(sa_route_verdict_reason(SA_ROUTE_NOT_AN_END), "in-dialog request not from an end of the call");
	ck_assert_str_eq(sa_route_verdict_reason(SA_ROUTE_OUTSIDE_CALL), "Route leads outside the call");
}
END_TEST

/* ---- the request verdict ---- */

static struct sa_route_request req(enum sa_method method)
{
	return (struct sa_route_request){ .method = method };
}

static enum sa_route_action action_of(struct sa_route_request r)
{
	return sa_route_request(&r).action;
}

START_TEST(a_strangers_new_request_must_authenticate_whatever_it_is_for)
{
	/* no request of an untrusted source reaches anything without credentials:
	 * the open relay is shut at the first verdict */
	static const enum sa_method methods[] = { SA_M_INVITE, SA_M_REGISTER, SA_M_OPTIONS, SA_M_MESSAGE,
	                                          SA_M_SUBSCRIBE, SA_M_NOTIFY, SA_M_REFER, SA_M_OTHER };
	for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
		ck_assert_int_eq(action_of(req(methods[i])), SA_RA_AUTHENTICATE);
}
END_TEST

START_TEST(a_gateway_reaches_registrations_but_registers_like_anyone)
{
	struct sa_route_request r = req(SA_M_INVITE);
	r.trusted = true;
	ck_assert_int_eq(action_of(r), SA_RA_INBOUND);
	r.method = SA_M_MESSAGE;
	ck_assert_int_eq(action_of(r), SA_RA_INBOUND);
	r.method = SA_M_REGISTER;
	ck_assert_int_eq(action_of(r), SA_RA_AUTHENTICATE);
}
END_TEST

START_TEST(a_banned_source_gets_nothing_a_trusted_one_is_never_banned)
{
	struct sa_route_request r = req(SA_M_INVITE);
	r.banned = true;
	ck_assert_int_eq(action_of(r), SA_RA_DROP_BANNED);
	/* not even its retransmissions or keep-alives are answered */
	r.txn_match = r.txn_same_sender = r.txn_answered = true;
	ck_assert_int_eq(action_of(r), SA_RA_DROP_BANNED);
	r = req(SA_M_OPTIONS);
	r.banned = r.options_for_us = true;
	ck_assert_int_eq(action_of(r), SA_RA_DROP_BANNED);
	r = req(SA_M_INVITE);
	r.banned = r.trusted = true;
	ck_assert_int_eq(action_of(r), SA_RA_INBOUND);
}
END_TEST

START_TEST(a_copied_branch_from_another_flow_gets_482)
{
	struct sa_route_request r = req(SA_M_INVITE);
	r.txn_match = true;
	r.txn_answered = true;
	struct sa_route_decision d = sa_route_request(&r);
	ck_assert_int_eq(d.action, SA_RA_REFUSE);
	ck_assert_int_eq(d.status, 482);
	ck_assert_str_eq(d.reason, "transaction of another sender");
	/* nor may a copied ACK reach the transaction */
	r.method = SA_M_ACK;
	ck_assert_int_eq(sa_route_request(&r).status, 482);
}
END_TEST

START_TEST(a_retransmission_gets_the_kept_answer_and_an_ack_is_absorbed)
{
	struct sa_route_request r = req(SA_M_INVITE);
	r.txn_match = r.txn_same_sender = true;
	struct sa_route_decision d = sa_route_request(&r);
	ck_assert_int_eq(d.action, SA_RA_ABSORB);
	ck_assert(!d.resend);   /* nothing to send again yet */
	r.txn_answered = true;
	ck_assert(sa_route_request(&r).resend);
	r.method = SA_M_ACK;   /* the ACK for a non-2xx we relayed */
	d = sa_route_request(&r);
	ck_assert_int_eq(d.action, SA_RA_ABSORB);
	ck_assert(!d.resend);
}
END_TEST

START_TEST(a_cancel_is_matched_with_its_invite_by_sender)
{
	struct sa_route_request r = req(SA_M_CANCEL);
	r.txn_match = true;   /* never used for CANCEL: its own transaction is looked up apart */
	ck_assert_int_eq(action_of(r), SA_RA_CANCEL);
	ck_assert_int_eq(sa_route_cancel(true, true), 0);
	ck_assert_int_eq(sa_route_cancel(true, false), 481);   /* copied branch, other flow */
	ck_assert_int_eq(sa_route_cancel(false, false), 481);
	/* a stranger's CANCEL is not even let past a ban */
	r.banned = true;
	ck_assert_int_eq(action_of(r), SA_RA_DROP_BANNED);
}
END_TEST

START_TEST(in_dialog_requests_and_acks)
{
	struct sa_route_request r = req(SA_M_BYE);
	r.to_tag = true;
	ck_assert_int_eq(action_of(r), SA_RA_IN_DIALOG);
	r.method = SA_M_ACK;   /* the ACK of a 2xx: end to end, along the call */
	ck_assert_int_eq(action_of(r), SA_RA_IN_DIALOG);
	r.own_ack = true;      /* the ACK of a 4xx we made: ours */
	ck_assert_int_eq(action_of(r), SA_RA_DROP);
	r = req(SA_M_ACK);     /* no tag, no transaction: nothing to do */
	ck_assert_int_eq(action_of(r), SA_RA_DROP);
	r.trusted = true;      /* not even from a gateway */
	ck_assert_int_eq(action_of(r), SA_RA_DROP);
}
END_TEST

START_TEST(stopping_refuses_new_work_and_lets_calls_end)
{
	struct sa_route_request r = req(SA_M_INVITE);
	r.stopping = true;
	struct sa_route_decision d = sa_route_request(&r);
	ck_assert_int_eq(d.action, SA_RA_REFUSE);
	ck_assert_int_eq(d.status, 503);
	ck_assert_str_eq(d.extra, "Retry-After: 5\r\n");
	r.trusted = true;
	ck_assert_int_eq(sa_route_request(&r).status, 503);
	r = req(SA_M_BYE);
	r.stopping = r.to_tag = true;
	ck_assert_int_eq(action_of(r), SA_RA_IN_DIALOG);
	r = req(SA_M_CANCEL);
	r.stopping = true;
	ck_assert_int_eq(action_of(r), SA_RA_CANCEL);
}
END_TEST

START_TEST(keepalives_max_forwards_and_extensions)
{
	struct sa_route_request r = req(SA_M_OPTIONS);
	r.options_for_us = true;
	ck_assert_int_eq(action_of(r), SA_RA_OPTIONS);
	r = req(SA_M_INVITE);
	r.max_forwards_zero = true;
	struct sa_route_decision d = sa_route_request(&r);
	ck_assert_int_eq(d.action, SA_RA_REFUSE);
	ck_assert_int_eq(d.status, 483);
	/* a loop is refused before anything else is looked at, in a dialog too */
	r.to_tag = true;
	ck_assert_int_eq(sa_route_request(&r).status, 483);
	r = req(SA_M_INVITE);
	r.requires_extension = true;
	ck_assert_int_eq(action_of(r), SA_RA_UNSUPPORTED);
	r.trusted = true;
	ck_assert_int_eq(action_of(r), SA_RA_UNSUPPORTED);
}
END_TEST

/* ---- the response verdict ---- */

/* An answer to an INVITE we relayed to the gateway, from the gateway. */
static struct sa_route_response invite_answer(int status)
{
	return (struct sa_route_response){ .status = status, .relayable = true, .txn = true, .from_sent_peer = true,
	                                   .invite = true, .owns_call = true };
}

START_TEST(an_answer_from_anyone_but_the_peer_is_refused)
{
	for (int status = 100; status < 700; status += 83) {
		struct sa_route_response r = invite_answer(status);
		r.from_sent_peer = false;
		struct sa_route_resp_decision d = sa_route_response(&r);
		ck_assert_int_eq(d.action, SA_RR_REFUSE);
		ck_assert_str_eq(d.reason, "not from the peer the request went to");
		r.local = true;   /* our own BYE's answer too */
		ck_assert_int_eq(sa_route_response(&r).action, SA_RR_REFUSE);
	}
}
END_TEST

START_TEST(provisionals_go_back_but_100_is_hop_by_hop)
{
	struct sa_route_response r = invite_answer(100);
	struct sa_route_resp_decision d = sa_route_response(&r);
	ck_assert_int_eq(d.action, SA_RR_RELAY);
	ck_assert_uint_eq(d.steps, 0);
	/* the last provisional is what a retransmitted INVITE gets again (§17.2.1), and
	 * it starts Timer C again (§16.7 step 2); a non-INVITE's is kept too (§17.2.2) */
	r.status = 180;
	ck_assert_uint_eq(sa_route_response(&r).steps, SA_RR_FORWARD | SA_RR_KEEP | SA_RR_RESTART_C);
	r.status = 183;
	ck_assert_uint_eq(sa_route_response(&r).steps, SA_RR_FORWARD | SA_RR_KEEP | SA_RR_RESTART_C);
	r.invite = false;
	ck_assert_uint_eq(sa_route_response(&r).steps, SA_RR_FORWARD | SA_RR_KEEP);
}
END_TEST

START_TEST(a_2xx_to_an_invite_sets_up_the_call_and_is_not_kept)
{
	struct sa_route_response r = invite_answer(200);
	/* Accepted (RFC 6026): the INVITE's retransmissions get nothing, not the provisional kept */
	ck_assert_uint_eq(sa_route_response(&r).steps, SA_RR_FORWARD | SA_RR_CALL | SA_RR_FORGET | SA_RR_COMPLETE);
	r.owns_call = false;   /* an inbound call, or a trunk trusting the network: no credential */
	ck_assert_uint_eq(sa_route_response(&r).steps, SA_RR_FORWARD | SA_RR_FORGET | SA_RR_COMPLETE);
}
END_TEST

START_TEST(a_failure_to_an_invite_is_acked_and_kept)
{
	struct sa_route_response r = invite_answer(486);
	ck_assert_uint_eq(sa_route_response(&r).steps, SA_RR_FORWARD | SA_RR_ACK | SA_RR_KEEP | SA_RR_COMPLETE);
}
END_TEST

START_TEST(a_503_with_gateways_left_tries_the_next_and_is_acked_once)
{
	struct sa_route_response r = invite_answer(503);
	r.failover = true;
	unsigned steps = sa_route_response(&r).steps;
	ck_assert_uint_eq(steps, SA_RR_TRY_NEXT | SA_RR_FORWARD | SA_RR_KEEP | SA_RR_COMPLETE);
	ck_assert(!(steps & SA_RR_ACK));   /* TRY_NEXT acknowledged it */
	r.status = 486;   /* any other failure is the caller's answer */
	ck_assert_uint_eq(sa_route_response(&r).steps, SA_RR_FORWARD | SA_RR_ACK | SA_RR_KEEP | SA_RR_COMPLETE);
}
END_TEST

/* RFC 3261 §16.7 step 6: a PBX's 503 reaches the gateway as 500; the last
 * gateway's 503 reaches the PBX as it is (every gateway said it). */
START_TEST(a_pbx_503_goes_to_the_gateway_as_500)
{
	struct sa_route_response r = invite_answer(503);
	r.owns_call = false;
	r.to_gateway = true;
	ck_assert_uint_eq(sa_route_response(&r).steps,
	                  SA_RR_FORWARD | SA_RR_AS_500 | SA_RR_ACK | SA_RR_KEEP | SA_RR_COMPLETE);
	r.invite = false;   /* a 503 to a MESSAGE or OPTIONS from the gateway too */
	ck_assert_uint_eq(sa_route_response(&r).steps, SA_RR_FORWARD | SA_RR_AS_500 | SA_RR_KEEP | SA_RR_COMPLETE);
	r.status = 480;   /* any other answer as it came */
	ck_assert_uint_eq(sa_route_response(&r).steps, SA_RR_FORWARD | SA_RR_KEEP | SA_RR_COMPLETE);
	r = invite_answer(503);   /* towards the PBX: the last gateway's 503 as it came */
	ck_assert_uint_eq(sa_route_response(&r).steps, SA_RR_FORWARD | SA_RR_ACK | SA_RR_KEEP | SA_RR_COMPLETE);
}
END_TEST

START_TEST(a_final_to_another_request_is_kept_and_not_acked)
{
	struct sa_route_response r = invite_answer(200);
	r.invite = false;
	r.owns_call = false;
	ck_assert_uint_eq(sa_route_response(&r).steps, SA_RR_FORWARD | SA_RR_KEEP | SA_RR_COMPLETE);
	r.status = 404;
	ck_assert_uint_eq(sa_route_response(&r).steps, SA_RR_FORWARD | SA_RR_KEEP | SA_RR_COMPLETE);
}
END_TEST

START_TEST(answers_after_the_final_and_without_a_transaction)
{
	struct sa_route_response r = invite_answer(200);
	r.completed = true;
	ck_assert_int_eq(sa_route_response(&r).action, SA_RR_FINAL_AGAIN);
	/* RFC 6026: a 2xx after its transaction ended travels along the call */
	r = (struct sa_route_response){ .status = 200, .relayable = true };
	ck_assert_int_eq(sa_route_response(&r).action, SA_RR_NO_TXN);
	r.status = 486;   /* a failure nobody asked for: refused (dropped, counted, logged) */
	struct sa_route_resp_decision d = sa_route_response(&r);
	ck_assert_int_eq(d.action, SA_RR_REFUSE);
	ck_assert_str_eq(d.reason, "no such transaction");
	r.status = 180;
	ck_assert_int_eq(sa_route_response(&r).action, SA_RR_REFUSE);
	r = (struct sa_route_response){ .status = 200 };   /* one Via, ours: for us, and nothing asked */
	ck_assert_int_eq(sa_route_response(&r).action, SA_RR_REFUSE);
	r.cseq_cancel = true;   /* the answer to a CANCEL of ours whose INVITE is gone */
	ck_assert_int_eq(sa_route_response(&r).action, SA_RR_DROP);
}
END_TEST

START_TEST(our_own_requests_and_cancels_end_here)
{
	struct sa_route_response r = invite_answer(200);
	r.local = true;
	ck_assert_int_eq(sa_route_response(&r).action, SA_RR_LOCAL);
	r = invite_answer(200);
	r.abandoned = true;
	ck_assert_int_eq(sa_route_response(&r).action, SA_RR_ABANDONED);
	r = invite_answer(200);
	r.cseq_cancel = true;   /* the 200 to our hop-by-hop CANCEL */
	ck_assert_int_eq(sa_route_response(&r).action, SA_RR_DROP);
	r = invite_answer(200);
	r.relayable = false;    /* only our Via, or none */
	ck_assert_int_eq(sa_route_response(&r).action, SA_RR_DROP);
}
END_TEST

/* ---- us: which URIs name the proxy ---- */

/* our listeners: UDP/TCP 192.0.2.1:5060 and TLS 192.0.2.1:5061, domain sip.example.net */
static const struct sa_route_self self = {
	.domain = "sip.example.net", .n = 2, .addr = { { "192.0.2.1", 5060 }, { "192.0.2.1", 5061 } },
};

static struct sa_msg msg;

/* A request with these Route values (and extra headers) parsed for the test. */
static void parse(const char *method, const char *ruri, const char *routes, const char *extra)
{
	static char buf[2048];
	snprintf(buf, sizeof(buf),
	         "%s %s SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-1\r\nMax-Forwards: 70\r\n"
	         "From: <sip:pbx@trunk-acme.sip.example.net>;tag=a\r\nTo: <sip:+15551234567@trunk-acme.sip.example.net>\r\n"
	         "Call-ID: c1@198.51.100.7\r\nCSeq: 1 %s\r\n%s%s\r\n\r\n",
	         method, ruri, method, routes, extra);
	/* the blank line above ends the headers; Content-Length absent on UDP */
	char *end = strstr(buf, "\r\n\r\n");
	end[4] = '\0';
	struct sa_msg_error err;
	ck_assert_int_eq(sa_msg_parse(&msg, buf, strlen(buf), false, &err), 0);
}

static struct sa_uri uri(const char *host, int port)
{
	return (struct sa_uri){ .scheme = "sip", .host = host, .port = port };
}

START_TEST(a_uri_is_us_by_listener_address_and_port)
{
	struct sa_uri a = uri("192.0.2.1", 0), b = uri("192.0.2.1", 5061), c = uri("192.0.2.1", 5062),
	              d = uri("192.0.2.2", 5060), e = uri(NULL, 0);
	ck_assert(sa_route_uri_is_us(&self, &a));    /* no port: 5060 */
	ck_assert(sa_route_uri_is_us(&self, &b));
	ck_assert(!sa_route_uri_is_us(&self, &c));   /* a port we do not listen on */
	ck_assert(!sa_route_uri_is_us(&self, &d));   /* another host */
	ck_assert(!sa_route_uri_is_us(&self, &e));   /* tel: and the like */
	ck_assert(!sa_route_uri_is_us(&self, NULL));
}
END_TEST

/* Without a port, a sips: URI or one with transport=tls names 5061 (RFC 3261 §19.1.2). */
START_TEST(a_uri_without_port_names_its_transports_default)
{
	struct sa_uri sips = uri("192.0.2.1", 0), tls = uri("192.0.2.1", 0), plain = uri("192.0.2.1", 0);
	sips.scheme = "SIPS";
	tls.transport = "TLS";
	struct sa_route_self tls_only = { .domain = "sip.example.net", .n = 1, .addr = { { "192.0.2.1", 5061 } } };
	ck_assert(sa_route_uri_is_us(&tls_only, &sips));
	ck_assert(sa_route_uri_is_us(&tls_only, &tls));
	ck_assert(!sa_route_uri_is_us(&tls_only, &plain));
	struct sa_uri byname = uri("trunk-acme.sip.example.net", 0);
	ck_assert(!sa_route_uri_names_us(&tls_only, &byname));
	byname.scheme = "sips";
	ck_assert(sa_route_uri_names_us(&tls_only, &byname));
}
END_TEST

START_TEST(a_uri_names_us_by_domain_or_trunk_host_on_our_ports)
{
	struct sa_uri dom = uri("SIP.Example.NET", 0), trunk = uri("trunk-acme.sip.example.net", 5061),
	              otherport = uri("trunk-acme.sip.example.net", 5070), foreign = uri("sip.example.org", 5060),
	              suffix = uri("evil-sip.example.net", 5060), bare = uri("trunk-.sip.example.net", 5060);
	ck_assert(sa_route_uri_names_us(&self, &dom));        /* case does not matter in a host name */
	ck_assert(sa_route_uri_names_us(&self, &trunk));
	ck_assert(!sa_route_uri_names_us(&self, &otherport));
	ck_assert(!sa_route_uri_names_us(&self, &foreign));
	ck_assert(!sa_route_uri_names_us(&self, &suffix));    /* not trunk-<id>.<domain>, not the domain */
	ck_assert(!sa_route_uri_names_us(&self, &bare));      /* no trunk id */
	struct sa_route_self nodomain = self;
	nodomain.domain = NULL;
	ck_assert(!sa_route_uri_names_us(&nodomain, &dom));
}
END_TEST

START_TEST(only_leading_routes_that_name_us_are_ours)
{
	parse("INVITE", "sip:+15551234567@192.0.2.10", "", "");
	ck_assert_uint_eq(sa_route_ours(&self, &msg), 0);
	sa_msg_free(&msg);
	parse("BYE", "sip:gw@192.0.2.10", "Route: <sip:192.0.2.1;lr>, <sip:192.0.2.1:5061;transport=tls;lr>\r\n", "");
	ck_assert_uint_eq(sa_route_ours(&self, &msg), 2);
	sa_msg_free(&msg);
	parse("BYE", "sip:gw@192.0.2.10",
	      "Route: <sip:trunk-acme.sip.example.net;lr>\r\nRoute: <sip:203.0.113.66;lr>, <sip:192.0.2.1;lr>\r\n", "");
	ck_assert_uint_eq(sa_route_ours(&self, &msg), 1);   /* ours, then a stranger's: it stops there */
	sa_msg_free(&msg);
	parse("BYE", "sip:gw@192.0.2.10", "Route: <sip:203.0.113.66;lr>, <sip:192.0.2.1;lr>\r\n", "");
	ck_assert_uint_eq(sa_route_ours(&self, &msg), 0);   /* a Route to someone else first: none is ours */
	sa_msg_free(&msg);
}
END_TEST

/* An initial request leaves without any Route: ours, and a preloaded one past it. */
START_TEST(an_initial_request_leaves_without_its_preloaded_routes)
{
	parse("INVITE", "sip:+15551234567@trunk-acme.sip.example.net",
	      "Route: <sip:trunk-acme.sip.example.net;lr>\r\nRoute: <sip:203.0.113.66;lr>, <sip:10.9.9.9;lr>\r\n", "");
	ck_assert_uint_eq(sa_route_ours(&self, &msg), 1);
	ck_assert_uint_eq(sa_route_initial_pop(&msg), 3);
	sa_msg_free(&msg);
	parse("INVITE", "sip:+15551234567@trunk-acme.sip.example.net", "", "");
	ck_assert_uint_eq(sa_route_initial_pop(&msg), 0);
	sa_msg_free(&msg);
}
END_TEST

/* RFC 3261 §16.4: an in-dialog request whose Request-URI is our Record-Route
 * URI comes from a strict router; it goes on with the last Route value as
 * its Request-URI, that value gone (the others, and the rest, as they came). */
START_TEST(a_strict_routed_request_takes_its_last_route_as_request_uri)
{
	static const char bye[] = "BYE sip:192.0.2.1:5060;lr SIP/2.0\r\n"
	                          "Via: SIP/2.0/UDP 198.51.100.9:5060;branch=z9hG4bK-s1\r\n"
	                          "Max-Forwards: 70\r\n"
	                          "From: <sip:+15551234567@trunk-acme.sip.example.net>;tag=gw1\r\n"
	                          "To: <sip:pbx@trunk-acme.sip.example.net>;tag=a\r\n"
	                          "Call-ID: c1@198.51.100.7\r\n"
	                          "CSeq: 2 BYE\r\n"
	                          "Route: <sip:edge2.example.net;lr>, <sip:pbx@198.51.100.7:5062;transport=udp>\r\n"
	                          "Content-Length: 0\r\n\r\n";
	struct sa_msg_error err;
	char out[2048];
	ck_assert_int_eq(sa_msg_parse(&msg, bye, strlen(bye), false, &err), 0);
	ck_assert(sa_route_strict_routed(&self, &msg));
	long n = sa_proxy_strict_route(&msg, out, sizeof(out) - 1);
	ck_assert_int_gt(n, 0);
	out[n] = '\0';
	ck_assert_str_eq(out, "BYE sip:pbx@198.51.100.7:5062;transport=udp SIP/2.0\r\n"
	                      "Via: SIP/2.0/UDP 198.51.100.9:5060;branch=z9hG4bK-s1\r\n"
	                      "Max-Forwards: 70\r\n"
	                      "From: <sip:+15551234567@trunk-acme.sip.example.net>;tag=gw1\r\n"
	                      "To: <sip:pbx@trunk-acme.sip.example.net>;tag=a\r\n"
	                      "Call-ID: c1@198.51.100.7\r\n"
	                      "CSeq: 2 BYE\r\n"
	                      "Route: <sip:edge2.example.net;lr>\r\n"
	                      "Content-Length: 0\r\n\r\n");
	ck_assert_int_eq(sa_proxy_strict_route(&msg, out, 64), -1);   /* too small: nothing half-written */
	sa_msg_free(&msg);
	/* not strict routing: a user part (a PBX's own address), another port, no Route, no To tag */
	parse("BYE", "sip:pbx@192.0.2.1:5060", "Route: <sip:198.51.100.7>\r\n", "");
	ck_assert(!sa_route_strict_routed(&self, &msg));   /* (nor has it a To tag) */
	sa_msg_free(&msg);
	static const char *const not_strict[] = {
		"BYE sip:pbx@192.0.2.1:5060 SIP/2.0\r\n", "BYE sip:192.0.2.1:5070;lr SIP/2.0\r\n",
	};
	for (size_t i = 0; i < 2; i++) {
		char b[1024];
		snprintf(b, sizeof(b), "%s%s", not_strict[i], strchr(bye, '\n') + 1);
		ck_assert_int_eq(sa_msg_parse(&msg, b, strlen(b), false, &err), 0);
		ck_assert(!sa_route_strict_routed(&self, &msg));
		sa_msg_free(&msg);
	}
}
END_TEST

START_TEST(an_options_keepalive_is_for_us_only_without_user_and_tag)
{
	parse("OPTIONS", "sip:trunk-acme.sip.example.net", "", "");
	ck_assert(sa_route_options_for_us(&msg));
	sa_msg_free(&msg);
	parse("OPTIONS", "sip:+15551234567@trunk-acme.sip.example.net", "", "");
	ck_assert(!sa_route_options_for_us(&msg));   /* for a number: through the gateways, with credentials */
	sa_msg_free(&msg);
	parse("INVITE", "sip:trunk-acme.sip.example.net", "", "");
	ck_assert(!sa_route_options_for_us(&msg));
	sa_msg_free(&msg);
}
END_TEST

START_TEST(proxy_require_always_and_require_on_register_are_refused)
{
	parse("INVITE", "sip:+15551234567@trunk-acme.sip.example.net", "", "Require: 100rel\r\n");
	ck_assert_ptr_null(sa_route_required_extension(&msg));   /* the UAS answers Require of an INVITE */
	sa_msg_free(&msg);
	parse("INVITE", "sip:+15551234567@trunk-acme.sip.example.net", "", "Proxy-Require: foo\r\n");
	const struct sa_hdr *h = sa_route_required_extension(&msg);
	ck_assert_ptr_nonnull(h);
	ck_assert_int_eq((int)h->vlen, 3);
	ck_assert(memcmp(h->value, "foo", 3) == 0);
	sa_msg_free(&msg);
	parse("REGISTER", "sip:trunk-acme.sip.example.net", "", "Require: gruu\r\n");
	h = sa_route_required_extension(&msg);
	ck_assert_ptr_nonnull(h);
	ck_assert(memcmp(h->value, "gruu", 4) == 0);
	sa_msg_free(&msg);
	parse("REGISTER", "sip:trunk-acme.sip.example.net", "", "");
	ck_assert_ptr_null(sa_route_required_extension(&msg));
	sa_msg_free(&msg);
}
END_TEST

/* ---- failover's late answers ---- */

static enum sa_route_late late(int status, bool invite, bool finished, bool cancel_sent)
{
	struct sa_route_late_answer a = { .status = status, .invite = invite, .finished = finished,
	                                  .cancel_sent = cancel_sent };
	return sa_route_late_answer(&a);
}

START_TEST(a_gateway_left_for_silence_that_answers_late_is_cancelled_acked_or_hung_up)
{
	ck_assert_int_eq(late(180, true, false, false), SA_LATE_CANCEL);    /* it rings: CANCEL */
	ck_assert_int_eq(late(183, true, false, true), SA_LATE_NOTHING);    /* rings again: once is enough */
	ck_assert_int_eq(late(487, true, false, true), SA_LATE_ACK);        /* the CANCEL's 487: ACK */
	ck_assert_int_eq(late(503, true, false, false), SA_LATE_ACK);
	ck_assert_int_eq(late(200, true, false, false), SA_LATE_ACK_BYE);   /* the caller talks elsewhere: ACK, BYE */
	ck_assert_int_eq(late(200, true, false, true), SA_LATE_ACK_BYE);    /* answered despite our CANCEL */
	ck_assert_int_eq(late(486, true, true, false), SA_LATE_ACK_AGAIN);  /* retransmitted finals */
	ck_assert_int_eq(late(200, true, true, false), SA_LATE_ACK_2XX_AGAIN);
	ck_assert_int_eq(late(180, true, true, false), SA_LATE_NOTHING);
	ck_assert_int_eq(late(200, false, false, true), SA_LATE_NOTHING);   /* the 200 to our CANCEL */
}
END_TEST

START_TEST(failover_time_moves_on_only_while_nobody_answered)
{
	ck_assert_int_eq(sa_route_failover_timer(false, 0, false), SA_FO_NEXT);
	ck_assert_int_eq(sa_route_failover_timer(false, 0, true), SA_FO_END_487);   /* cancelled: never a new gateway */
	ck_assert_int_eq(sa_route_failover_timer(false, 100, false), SA_FO_WAIT);   /* a 100 Trying is an answer */
	ck_assert_int_eq(sa_route_failover_timer(false, 180, true), SA_FO_WAIT);
	ck_assert_int_eq(sa_route_failover_timer(true, 0, false), SA_FO_WAIT);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("route");
	TCase *tc = tcase_create("route");
	tcase_add_checked_fixture(tc, setup, NULL);
	tcase_add_test(tc, an_end_of_the_call_is_forwarded_to_the_other);
	tcase_add_test(tc, a_stranger_with_the_tags_is_refused);
	tcase_add_test(tc, same_address_other_udp_port_is_a_stranger);
	tcase_add_test(tc, same_address_other_transport_is_a_stranger);
	tcase_add_test(tc, a_tcp_end_comes_back_on_a_new_connection_only_once_the_old_one_closed);
	tcase_add_test(tc, a_route_past_us_may_only_name_the_other_end);
	tcase_add_test(tc, a_stranger_is_refused_before_its_route_is_looked_at);
	tcase_add_test(tc, responses_only_from_the_peer_the_request_went_to);
	tcase_add_test(tc, ipv6_peers_compare_by_address_and_port);
	tcase_add_test(tc, only_the_sender_matches_its_transaction);
	tcase_add_test(tc, every_verdict_has_a_reason);
	tcase_add_test(tc, a_strangers_new_request_must_authenticate_whatever_it_is_for);
	tcase_add_test(tc, a_gateway_reaches_registrations_but_registers_like_anyone);
	tcase_add_test(tc, a_banned_source_gets_nothing_a_trusted_one_is_never_banned);
	tcase_add_test(tc, a_copied_branch_from_another_flow_gets_482);
	tcase_add_test(tc, a_retransmission_gets_the_kept_answer_and_an_ack_is_absorbed);
	tcase_add_test(tc, a_cancel_is_matched_with_its_invite_by_sender);
	tcase_add_test(tc, in_dialog_requests_and_acks);
	tcase_add_test(tc, stopping_refuses_new_work_and_lets_calls_end);
	tcase_add_test(tc, keepalives_max_forwards_and_extensions);
	tcase_add_test(tc, an_answer_from_anyone_but_the_peer_is_refused);
	tcase_add_test(tc, provisionals_go_back_but_100_is_hop_by_hop);
	tcase_add_test(tc, a_2xx_to_an_invite_sets_up_the_call_and_is_not_kept);
	tcase_add_test(tc, a_failure_to_an_invite_is_acked_and_kept);
	tcase_add_test(tc, a_503_with_gateways_left_tries_the_next_and_is_acked_once);
	tcase_add_test(tc, a_pbx_503_goes_to_the_gateway_as_500);
	tcase_add_test(tc, a_final_to_another_request_is_kept_and_not_acked);
	tcase_add_test(tc, answers_after_the_final_and_without_a_transaction);
	tcase_add_test(tc, our_own_requests_and_cancels_end_here);
	tcase_add_test(tc, a_uri_is_us_by_listener_address_and_port);
	tcase_add_test(tc, a_uri_names_us_by_domain_or_trunk_host_on_our_ports);
	tcase_add_test(tc, only_leading_routes_that_name_us_are_ours);
	tcase_add_test(tc, a_uri_without_port_names_its_transports_default);
	tcase_add_test(tc, an_initial_request_leaves_without_its_preloaded_routes);
	tcase_add_test(tc, a_strict_routed_request_takes_its_last_route_as_request_uri);
	tcase_add_test(tc, an_options_keepalive_is_for_us_only_without_user_and_tag);
	tcase_add_test(tc, proxy_require_always_and_require_on_register_are_refused);
	tcase_add_test(tc, a_gateway_left_for_silence_that_answers_late_is_cancelled_acked_or_hung_up);
	tcase_add_test(tc, failover_time_moves_on_only_while_nobody_answered);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
