/* test_route.c: the routing rules played as a stranger: in-dialog requests, responses and matches from other flows. */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

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
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
