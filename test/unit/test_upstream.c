/* test_upstream.c: the gateways: parsing, SRV priority and weight, health, TTLs, DNS answer TTLs. */
#include <arpa/inet.h>
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "upstream.h"

static const struct sa_upstream_cfg cfg = { .down_after = 2, .up_after = 1, .probing = false, .retry_ms = 30000 };

static struct sa_upstream up_of(const char *value)
{
	struct sa_upstream_spec spec;
	struct sa_upstream u;
	char err[256];
	ck_assert_int_eq(sa_upstream_spec_parse(&spec, value, err, sizeof(err)), 0);
	sa_upstream_init(&u, &spec, &cfg);
	return u;
}

static union sa_sockaddr v4(const char *a)
{
	union sa_sockaddr s;
	memset(&s, 0, sizeof(s));
	s.in.sin_family = AF_INET;
	inet_pton(AF_INET, a, &s.in.sin_addr);
	return s;
}

/* a scripted random source: returns the values in turn */
struct script {
	uint32_t v[64];
	unsigned i;
};

static uint32_t scripted(void *arg)
{
	struct script *s = arg;
	return s->v[s->i++ % 64];
}

static uint32_t lcg(void *arg)
{
	uint32_t *x = arg;
	*x = *x * 1664525u + 1013904223u;
	return *x >> 8;
}

START_TEST(a_list_keeps_its_order_and_names_wait_for_dns)
{
	struct sa_upstream u = up_of("udp:127.0.0.2:5070, tcp:gw2.example:5080,tls:[::1]:5061");
	ck_assert_uint_eq(u.n, 3);
	ck_assert(u.t[0].numeric);
	ck_assert_uint_eq(u.t[0].naddr, 1);
	ck_assert_uint_eq(ntohs(u.t[0].addr[0].in.sin_port), 5070);
	ck_assert(!u.t[1].numeric);
	ck_assert_uint_eq(u.t[1].naddr, 0);
	ck_assert_int_eq(u.t[1].proto, SA_PROTO_TCP);
	ck_assert_int_eq(u.t[2].addr[0].sa.sa_family, AF_INET6);
	unsigned idx, order[SA_UPSTREAM_MAX];
	ck_assert_int_eq(sa_upstream_next_question(&u, 0, &idx), SA_UP_ASK_HOST);
	ck_assert_uint_eq(idx, 1);
	ck_assert_int_eq(sa_upstream_next_question(&u, 0, &idx), SA_UP_ASK_NONE);   /* asked already */
	/* until gw2 resolves, only the numeric ones are tried, in the written order */
	ck_assert_uint_eq(sa_upstream_order(&u, 0, lcg, &(uint32_t){ 1 }, order, SA_UPSTREAM_MAX), 2);
	ck_assert_uint_eq(order[0], 0);
	ck_assert_uint_eq(order[1], 2);
	union sa_sockaddr a = v4("10.0.0.7");
	sa_upstream_host_answer(&u, 1, &a, 1, 60, 1000);
	ck_assert_uint_eq(sa_upstream_order(&u, 1000, lcg, &(uint32_t){ 1 }, order, SA_UPSTREAM_MAX), 3);
	ck_assert_uint_eq(order[1], 1);
	ck_assert_uint_eq(ntohs(u.t[1].addr[0].in.sin_port), 5080);
}
END_TEST

START_TEST(bad_gateway_values_are_refused)
{
	struct sa_upstream_spec spec;
	char err[256];
	const char *bad[] = { "", "udp:", "udp:1.2.3.4", "ftp:1.2.3.4:21", "udp:1.2.3.4:0", "udp:1.2.3.4:70000",
	                      "udp:bad host:5060", "sips:gw.example", "udp:[1.2.3.4]:5060", "udp:a..b:5060",
	                      "sip:", "udp:x:5060, , tcp:\"q\":1" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(sa_upstream_spec_parse(&spec, bad[i], err, sizeof(err)) < 0, "accepted '%s'", bad[i]);
	char many[2048] = "";
	for (int i = 0; i < 17; i++)
		strcat(many, "udp:10.0.0.1:5060,");
	ck_assert_int_lt(sa_upstream_spec_parse(&spec, many, err, sizeof(err)), 0);
	ck_assert_int_eq(sa_upstream_spec_parse(&spec, "sip:gw.carrier.example", err, sizeof(err)), 0);
	ck_assert(spec.service);
	ck_assert_str_eq(spec.e[0].host, "gw.carrier.example");
	ck_assert_uint_eq(spec.e[0].port, 0);
}
END_TEST

START_TEST(sip_name_with_a_port_skips_naptr_and_srv)
{
	struct sa_upstream u = up_of("sip:gw.example:5099");
	unsigned idx;
	ck_assert_uint_eq(u.n, 1);
	ck_assert_int_eq(sa_upstream_next_question(&u, 0, &idx), SA_UP_ASK_HOST);
	u = up_of("sip:127.0.0.9");
	ck_assert(u.t[0].numeric);
	ck_assert_uint_eq(u.t[0].port, 5060);
	ck_assert_int_eq(sa_upstream_next_question(&u, 0, &idx), SA_UP_ASK_NONE);
}
END_TEST

START_TEST(srv_priority_first_then_weight)
{
	struct sa_upstream u = up_of("sip:carrier.example");
	unsigned idx, order[SA_UPSTREAM_MAX];
	ck_assert_int_eq(sa_upstream_next_question(&u, 0, &idx), SA_UP_ASK_SERVICE);
	struct sa_up_srv srv[] = { { 20, 0, 5060, "b.example" }, { 10, 0, 5060, "a.example" }, { 30, 5, 5060, "." } };
	ck_assert_uint_eq(sa_upstream_service_answer(&u, srv, 3, SA_PROTO_UDP, 60, 0), 2);
	union sa_sockaddr a = v4("127.0.0.2"), b = v4("127.0.0.3");
	ck_assert_int_eq(sa_upstream_next_question(&u, 0, &idx), SA_UP_ASK_HOST);
	sa_upstream_host_answer(&u, idx, &b, 1, 60, 0);
	ck_assert_int_eq(sa_upstream_next_question(&u, 0, &idx), SA_UP_ASK_HOST);
	sa_upstream_host_answer(&u, idx, &a, 1, 60, 0);
	ck_assert_int_eq(sa_upstream_order(&u, 0, lcg, &(uint32_t){ 7 }, order, SA_UPSTREAM_MAX), 2);
	ck_assert_str_eq(u.t[order[0]].host, "a.example");
	ck_assert_str_eq(u.t[order[1]].host, "b.example");
	/* the answer expires: SRV asked again, then the hosts */
	ck_assert_int_eq(sa_upstream_next_question(&u, 59999, &idx), SA_UP_ASK_NONE);
	ck_assert_int_eq(sa_upstream_next_question(&u, 60000, &idx), SA_UP_ASK_SERVICE);
}
END_TEST

START_TEST(rfc2782_draw_follows_the_running_sum)
{
	struct sa_upstream u = up_of("sip:carrier.example");
	sa_upstream_next_question(&u, 0, &(unsigned){ 0 });
	struct sa_up_srv srv[] = { { 10, 60, 5060, "a.example" }, { 10, 0, 5060, "z.example" },
	                           { 10, 40, 5060, "b.example" } };
	sa_upstream_service_answer(&u, srv, 3, SA_PROTO_UDP, 60, 0);
	union sa_sockaddr a = v4("127.0.0.2");
	for (unsigned i = 0; i < u.n; i++)
		sa_upstream_host_answer(&u, i, &a, 1, 60, 0);
	unsigned order[SA_UPSTREAM_MAX];
	/* sorted: z(0) a(60) b(40); sum 100: r=0 picks z, r=61 picks b, then a */
	struct script s = { .v = { 0, 61, 0 } };
	sa_upstream_order(&u, 0, scripted, &s, order, SA_UPSTREAM_MAX);
	ck_assert_str_eq(u.t[order[0]].host, "z.example");
	ck_assert_str_eq(u.t[order[1]].host, "b.example");
	ck_assert_str_eq(u.t[order[2]].host, "a.example");
	/* r=1..60 picks a first */
	struct script s2 = { .v = { 60, 0, 0 } };
	sa_upstream_order(&u, 0, scripted, &s2, order, SA_UPSTREAM_MAX);
	ck_assert_str_eq(u.t[order[0]].host, "a.example");
}
END_TEST

START_TEST(weights_spread_load_in_proportion)
{
	struct sa_upstream u = up_of("sip:carrier.example");
	sa_upstream_next_question(&u, 0, &(unsigned){ 0 });
	struct sa_up_srv srv[] = { { 10, 75, 5060, "a.example" }, { 10, 25, 5060, "b.example" } };
	sa_upstream_service_answer(&u, srv, 2, SA_PROTO_UDP, 60, 0);
	union sa_sockaddr a = v4("127.0.0.2");
	sa_upstream_host_answer(&u, 0, &a, 1, 60, 0);
	sa_upstream_host_answer(&u, 1, &a, 1, 60, 0);
	unsigned first_a = 0, order[SA_UPSTREAM_MAX];
	uint32_t seed = 42;
	for (int i = 0; i < 10000; i++) {
		sa_upstream_order(&u, 0, lcg, &seed, order, SA_UPSTREAM_MAX);
		first_a += strcmp(u.t[order[0]].host, "a.example") == 0;
	}
	ck_assert_msg(first_a > 7200 && first_a < 7800, "a first %u of 10000", first_a);
}
END_TEST

START_TEST(health_down_after_failures_up_after_an_answer)
{
	struct sa_upstream u = up_of("udp:127.0.0.2:5060, udp:127.0.0.3:5060");
	unsigned order[SA_UPSTREAM_MAX];
	ck_assert(!sa_upstream_report(&u, 0, SA_UP_TIMEOUT, 1000));
	ck_assert(!sa_upstream_report(&u, 0, SA_UP_ANSWERED, 1100));   /* in a row only */
	ck_assert(!sa_upstream_report(&u, 0, SA_UP_503, 1200));
	ck_assert(sa_upstream_report(&u, 0, SA_UP_TRANSPORT, 1300));   /* second in a row: down */
	ck_assert(sa_upstream_is_down(&u, 0, 1300));
	sa_upstream_order(&u, 1300, lcg, &(uint32_t){ 1 }, order, SA_UPSTREAM_MAX);
	ck_assert_uint_eq(order[0], 1);   /* down ones last, still there */
	ck_assert_uint_eq(order[1], 0);
	/* without probes: tried first again after retry_ms; a failed retry waits again */
	ck_assert(!sa_upstream_is_down(&u, 0, 31300));
	ck_assert(!sa_upstream_report(&u, 0, SA_UP_TIMEOUT, 31300));
	ck_assert(sa_upstream_is_down(&u, 0, 31301));
	ck_assert(sa_upstream_report(&u, 0, SA_UP_ANSWERED, 61400));
	ck_assert(!sa_upstream_is_down(&u, 0, 61400));
	ck_assert_uint_eq(u.t[0].events[SA_UP_TIMEOUT], 2);
	ck_assert_uint_eq(u.t[0].events[SA_UP_503], 1);
}
END_TEST

START_TEST(with_probes_a_down_gateway_waits_for_them)
{
	struct sa_upstream_spec spec;
	struct sa_upstream u;
	char err[64];
	struct sa_upstream_cfg pc = { .down_after = 1, .up_after = 2, .probing = true, .retry_ms = 1000 };
	sa_upstream_spec_parse(&spec, "udp:127.0.0.2:5060", err, sizeof(err));
	sa_upstream_init(&u, &spec, &pc);
	ck_assert(sa_upstream_report(&u, 0, SA_UP_PROBE_FAIL, 0));
	ck_assert(sa_upstream_is_down(&u, 0, 1000000));
	ck_assert(!sa_upstream_report(&u, 0, SA_UP_PROBE_OK, 1));
	ck_assert(sa_upstream_report(&u, 0, SA_UP_PROBE_OK, 2));
	ck_assert(!sa_upstream_is_down(&u, 0, 2));
}
END_TEST

START_TEST(ttl_expiry_asks_again_and_switches)
{
	struct sa_upstream u = up_of("udp:gw.example:5060");
	unsigned idx, order[SA_UPSTREAM_MAX];
	union sa_sockaddr a = v4("127.0.0.2"), b = v4("127.0.0.3");
	ck_assert_int_eq(sa_upstream_next_question(&u, 0, &idx), SA_UP_ASK_HOST);
	sa_upstream_host_answer(&u, 0, &a, 1, 2, 0);
	ck_assert_int_eq(sa_upstream_next_question(&u, 1999, &idx), SA_UP_ASK_NONE);
	ck_assert_int_eq(sa_upstream_next_question(&u, 2000, &idx), SA_UP_ASK_HOST);
	/* while the question is out, the old address serves */
	ck_assert_uint_eq(sa_upstream_order(&u, 2000, lcg, &(uint32_t){ 1 }, order, 4), 1);
	sa_upstream_host_answer(&u, 0, &b, 1, 2, 2010);
	ck_assert_uint_eq(u.t[0].addr[0].in.sin_addr.s_addr, b.in.sin_addr.s_addr);
	/* a failure keeps the last addresses and asks again after the negative TTL */
	ck_assert_int_eq(sa_upstream_next_question(&u, 4010, &idx), SA_UP_ASK_HOST);
	sa_upstream_host_answer(&u, 0, NULL, 0, 0, 4010);
	ck_assert(u.t[0].resolve_failed);
	ck_assert_uint_eq(u.t[0].naddr, 1);
	ck_assert_int_eq(sa_upstream_next_question(&u, 4010 + SA_UPSTREAM_NEG_TTL_MS - 1, &idx), SA_UP_ASK_NONE);
	ck_assert_int_eq(sa_upstream_next_question(&u, 4010 + SA_UPSTREAM_NEG_TTL_MS, &idx), SA_UP_ASK_HOST);
}
END_TEST

START_TEST(a_name_that_never_resolves_gives_no_gateway)
{
	struct sa_upstream u = up_of("udp:nx.example:5060");
	unsigned idx, order[4];
	sa_upstream_next_question(&u, 0, &idx);
	sa_upstream_host_answer(&u, 0, NULL, 0, 0, 0);
	ck_assert_uint_eq(sa_upstream_order(&u, 0, lcg, &(uint32_t){ 1 }, order, 4), 0);
	/* a service whose SRV and A both fail */
	u = up_of("sip:nx.example");
	ck_assert_int_eq(sa_upstream_next_question(&u, 0, &idx), SA_UP_ASK_SERVICE);
	sa_upstream_service_failed(&u, 0);
	ck_assert_uint_eq(sa_upstream_order(&u, 0, lcg, &(uint32_t){ 1 }, order, 4), 0);
	ck_assert_int_eq(sa_upstream_next_question(&u, SA_UPSTREAM_NEG_TTL_MS, &idx), SA_UP_ASK_SERVICE);
}
END_TEST

START_TEST(srv_answer_again_keeps_health_and_counters)
{
	struct sa_upstream u = up_of("sip:carrier.example");
	sa_upstream_next_question(&u, 0, &(unsigned){ 0 });
	struct sa_up_srv srv[] = { { 10, 0, 5060, "a.example" }, { 20, 0, 5060, "b.example" } };
	sa_upstream_service_answer(&u, srv, 2, SA_PROTO_UDP, 1, 0);
	u.t[1].sent = 5;
	u.t[1].down = true;
	struct sa_up_srv again[] = { { 5, 0, 5060, "b.example" } };
	sa_upstream_service_answer(&u, again, 1, SA_PROTO_UDP, 1, 1000);
	ck_assert_uint_eq(u.n, 1);
	ck_assert_uint_eq(u.t[0].sent, 5);
	ck_assert(u.t[0].down);
	ck_assert_uint_eq(u.t[0].priority, 5);
	/* no SRV at all: NAME itself on 5060 */
	sa_upstream_service_answer(&u, NULL, 0, SA_PROTO_UDP, 1, 2000);
	ck_assert_uint_eq(u.n, 1);
	ck_assert_str_eq(u.t[0].host, "carrier.example");
	ck_assert_uint_eq(u.t[0].port, 5060);
}
END_TEST

/* An SRV question that failed (a timeout, SERVFAIL) keeps the last
 * answer's gateways; an SRV answer whose target is "." (RFC 2782: not
 * offered) gives none at all, not NAME's own address. */
START_TEST(srv_failure_keeps_the_gateways_and_dot_gives_none)
{
	struct sa_upstream u = up_of("sip:carrier.example");
	unsigned order[4];
	sa_upstream_next_question(&u, 0, &(unsigned){ 0 });
	struct sa_up_srv srv[] = { { 10, 0, 5060, "a.example" }, { 20, 0, 5060, "b.example" } };
	sa_upstream_service_answer(&u, srv, 2, SA_PROTO_UDP, 1, 0);
	union sa_sockaddr a = v4("192.0.2.1"), b = v4("192.0.2.2");
	sa_upstream_host_answer(&u, 0, &a, 1, 60, 0);
	sa_upstream_host_answer(&u, 1, &b, 1, 60, 0);
	ck_assert_int_eq(sa_upstream_next_question(&u, 1000, &(unsigned){ 0 }), SA_UP_ASK_SERVICE);
	sa_upstream_service_failed(&u, 1000);
	ck_assert_uint_eq(u.n, 2);
	ck_assert_str_eq(u.t[0].host, "a.example");
	ck_assert_uint_eq(sa_upstream_order(&u, 1000, lcg, &(uint32_t){ 1 }, order, 4), 2);
	/* asked again after SA_UPSTREAM_NEG_TTL_MS, not before */
	ck_assert_int_eq(sa_upstream_next_question(&u, 1001, &(unsigned){ 0 }), SA_UP_ASK_NONE);
	ck_assert_int_eq(sa_upstream_next_question(&u, 1000 + SA_UPSTREAM_NEG_TTL_MS, &(unsigned){ 0 }),
	                 SA_UP_ASK_SERVICE);
	struct sa_up_srv dot[] = { { 0, 0, 0, "." } };
	ck_assert_uint_eq(sa_upstream_service_answer(&u, dot, 1, SA_PROTO_UDP, 60, 2000 + SA_UPSTREAM_NEG_TTL_MS), 0);
	ck_assert_uint_eq(u.n, 0);
	ck_assert(u.service_refused);
	ck_assert_uint_eq(sa_upstream_order(&u, 2000 + SA_UPSTREAM_NEG_TTL_MS, lcg, &(uint32_t){ 1 }, order, 4), 0);
}
END_TEST

/* A 503 with Retry-After holds a gateway: ordered after the others until it
 * ends, capped at SA_UPSTREAM_HOLD_MAX_S. */
START_TEST(retry_after_holds_a_gateway_back)
{
	struct sa_upstream u = up_of("udp:192.0.2.1:5060, udp:192.0.2.2:5060");
	unsigned order[4];
	sa_upstream_hold(&u, 0, 20, 1000);
	ck_assert_uint_eq(sa_upstream_order(&u, 1000, lcg, &(uint32_t){ 1 }, order, 4), 2);
	ck_assert_uint_eq(order[0], 1);
	ck_assert_uint_eq(order[1], 0);
	ck_assert_uint_eq(sa_upstream_order(&u, 21000, lcg, &(uint32_t){ 1 }, order, 4), 2);
	ck_assert_uint_eq(order[0], 0);
	sa_upstream_hold(&u, 1, 86400, 0);
	ck_assert(sa_upstream_is_down(&u, 1, SA_UPSTREAM_HOLD_MAX_S * 1000 - 1));
	ck_assert(!sa_upstream_is_down(&u, 1, SA_UPSTREAM_HOLD_MAX_S * 1000));
}
END_TEST

/* A name's address that failed goes last among its addresses. */
START_TEST(a_failed_address_goes_last)
{
	struct sa_upstream u = up_of("udp:gw.example:5060");
	unsigned idx;
	ck_assert_int_eq(sa_upstream_next_question(&u, 0, &idx), SA_UP_ASK_HOST);
	union sa_sockaddr addrs[3] = { v4("192.0.2.1"), v4("192.0.2.2"), v4("192.0.2.3") };
	sa_upstream_host_answer(&u, idx, addrs, 3, 60, 0);
	union sa_sockaddr dead = u.t[0].addr[0];
	sa_upstream_addr_last(&u, &dead.sa);
	char ip[3][INET_ADDRSTRLEN];
	for (int i = 0; i < 3; i++)
		inet_ntop(AF_INET, &u.t[0].addr[i].in.sin_addr, ip[i], sizeof(ip[i]));
	ck_assert_str_eq(ip[0], "192.0.2.2");
	ck_assert_str_eq(ip[1], "192.0.2.3");
	ck_assert_str_eq(ip[2], "192.0.2.1");
	ck_assert_uint_eq(ntohs(u.t[0].addr[2].in.sin_port), 5060);
	ck_assert_int_eq(sa_upstream_find_addr(&u, &dead.sa, false), 0);
	/* the last one failing again: nothing moves */
	sa_upstream_addr_last(&u, &dead.sa);
	inet_ntop(AF_INET, &u.t[0].addr[2].in.sin_addr, ip[2], sizeof(ip[2]));
	ck_assert_str_eq(ip[2], "192.0.2.1");
}
END_TEST

START_TEST(naptr_picks_sip_udp_tcp_and_tls_by_order)
{
	struct sa_up_naptr r[] = {
		{ 20, 10, "s", "SIP+D2T", "_sip._tcp.example" },
		{ 10, 10, "s", "SIP+D2U", "_sip._udp.example" },
		{ 5, 10, "s", "SIPS+D2T", "_sips._tcp.example" },
		{ 1, 1, "u", "SIP+D2U", "bad" },
		{ 2, 1, "s", "SIP+D2S", "_sip._sctp.example" },   /* SCTP: not spoken */
	};
	char names[5][SA_UPSTREAM_HOST_MAX + 1];
	enum sa_proto pr[5];
	ck_assert_uint_eq(sa_upstream_naptr_pick(r, 5, names, pr, 5), 3);
	ck_assert_str_eq(names[0], "_sips._tcp.example");
	ck_assert_int_eq(pr[0], SA_PROTO_TLS);
	ck_assert_str_eq(names[1], "_sip._udp.example");
	ck_assert_int_eq(pr[1], SA_PROTO_UDP);
	ck_assert_str_eq(names[2], "_sip._tcp.example");
	ck_assert_int_eq(pr[2], SA_PROTO_TCP);
}
END_TEST

START_TEST(dns_answer_ttl_is_the_smallest_of_the_type)
{
	/* header, question gw.t A IN, two A answers (ttl 300 and 7, the second by pointer), one CNAME-ish other type */
	static const unsigned char msg[] = {
		0x12, 0x34, 0x81, 0x80, 0, 1, 0, 3, 0, 0, 0, 0,
		2, 'g', 'w', 1, 't', 0, 0, 1, 0, 1,
		0xc0, 12, 0, 1, 0, 1, 0, 0, 0x01, 0x2c, 0, 4, 127, 0, 0, 2,
		0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 7, 0, 4, 127, 0, 0, 3,
		0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 1, 0, 2, 0xc0, 12,
	};
	ck_assert_int_eq(sa_upstream_dns_min_ttl(msg, sizeof(msg), 1), 7);
	ck_assert_int_eq(sa_upstream_dns_min_ttl(msg, sizeof(msg), 33), -1);
	for (size_t cut = 0; cut < sizeof(msg) - 1; cut++)
		ck_assert_int_ge(sa_upstream_dns_min_ttl(msg, cut, 1), -1);   /* truncated: no overrun (ASan) */
	ck_assert_int_eq(sa_upstream_dns_min_ttl(msg, 40, 1), -1);
}
END_TEST

START_TEST(find_addr_by_address_and_port)
{
	struct sa_upstream u = up_of("udp:127.0.0.2:5070, udp:127.0.0.3:5070");
	union sa_sockaddr a = v4("127.0.0.3");
	a.in.sin_port = htons(5070);
	ck_assert_int_eq(sa_upstream_find_addr(&u, &a.sa, false), 1);
	a.in.sin_port = htons(5071);
	ck_assert_int_eq(sa_upstream_find_addr(&u, &a.sa, false), -1);
	ck_assert_int_eq(sa_upstream_find_addr(&u, &a.sa, true), 1);
}
END_TEST

START_TEST(a_probe_is_an_options_to_the_gateway)
{
	struct sa_upstream u = up_of("tcp:gw.example:5080");
	char out[1024];
	long n = sa_upstream_probe_request(&u, 0, "SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bKabc;rport", "127.0.0.1",
	                                   "0123456789abcdef0123", out, sizeof(out));
	ck_assert_int_gt(n, 0);
	ck_assert_int_eq((int)strlen(out), (int)n);
	ck_assert(strncmp(out, "OPTIONS sip:gw.example:5080;transport=tcp SIP/2.0\r\n", 51) == 0);
	ck_assert_ptr_nonnull(strstr(out, "\r\nFrom: <sip:sipauthd@127.0.0.1>;tag=0123456789abcdef\r\n"));
	ck_assert_ptr_nonnull(strstr(out, "\r\nCSeq: 1 OPTIONS\r\n"));
	ck_assert(n > 4 && memcmp(out + n - 4, "\r\n\r\n", 4) == 0);
	ck_assert_int_eq(sa_upstream_probe_request(&u, 0, "v", "h", "0123456789abcdef", out, 40), -1);
	ck_assert_int_eq(sa_upstream_probe_request(&u, 1, "v", "h", "0123456789abcdef", out, sizeof(out)), -1);
	ck_assert_int_eq(sa_upstream_probe_verdict(200), SA_UP_PROBE_OK);
	ck_assert_int_eq(sa_upstream_probe_verdict(405), SA_UP_PROBE_OK);
	ck_assert_int_eq(sa_upstream_probe_verdict(503), SA_UP_PROBE_FAIL);
}
END_TEST

START_TEST(metrics_and_json_name_each_gateway)
{
	struct sa_upstream u = up_of("udp:127.0.0.2:5070, tcp:gw2.example:5080");
	u.t[0].sent = 3;
	sa_upstream_report(&u, 0, SA_UP_503, 0);
	sa_upstream_report(&u, 0, SA_UP_TIMEOUT, 0);   /* down_after 2: down */
	char *buf = NULL;
	size_t len = 0;
	ck_assert_int_eq(sa_upstream_metrics(&u, 0, &buf, &len), 0);
	ck_assert_ptr_nonnull(strstr(buf, "\nsipauthd_gateway_up{gateway=\"udp:127.0.0.2:5070\"} 0\n"));
	ck_assert_ptr_nonnull(strstr(buf, "\nsipauthd_gateway_up{gateway=\"tcp:gw2.example:5080\"} 1\n"));
	ck_assert_ptr_nonnull(strstr(buf, "\nsipauthd_gateway_invites_total{gateway=\"udp:127.0.0.2:5070\"} 3\n"));
	ck_assert_ptr_nonnull(strstr(buf, "sipauthd_gateway_events_total{gateway=\"udp:127.0.0.2:5070\",event=\"503\"} 1\n"));
	ck_assert_ptr_nonnull(strstr(buf, "sipauthd_gateway_addresses{gateway=\"tcp:gw2.example:5080\"} 0\n"));
	ck_assert_uint_eq(strlen(buf), len);
	free(buf);
	char *j = sa_upstream_json(&u, 0);
	ck_assert_ptr_nonnull(j);
	ck_assert_ptr_nonnull(strstr(j, "\"gateway\":\"udp:127.0.0.2:5070\""));
	ck_assert_ptr_nonnull(strstr(j, "\"state\":\"down\""));
	ck_assert_ptr_nonnull(strstr(j, "\"addresses\":[\"127.0.0.2\"]"));
	ck_assert_ptr_nonnull(strstr(j, "\"service\":null"));
	free(j);
}
END_TEST

START_TEST(route_names_are_kept_and_evicted_by_expiry)
{
	struct sa_upstream_spec none = { 0 };
	struct sa_upstream u;
	sa_upstream_init(&u, &none, &cfg);
	ck_assert_int_eq(sa_upstream_name_add(&u, "edge.example", 0), 0);
	ck_assert_int_eq(sa_upstream_name_add(&u, "EDGE.example", 0), 0);   /* the same name */
	ck_assert_int_eq(sa_upstream_name_add(&u, "bad name", 0), -1);
	ck_assert(!sa_upstream_name_answered(&u, "edge.example", 0));
	unsigned idx;
	ck_assert_int_eq(sa_upstream_next_question(&u, 0, &idx), SA_UP_ASK_HOST);
	ck_assert(!sa_upstream_name_answered(&u, "edge.example", 0));   /* still asking */
	sa_upstream_host_answer(&u, idx, NULL, 0, 0, 100);   /* did not resolve */
	ck_assert(sa_upstream_name_answered(&u, "edge.example", 100));
	ck_assert(!sa_upstream_name_answered(&u, "edge.example", 100 + SA_UPSTREAM_NEG_TTL_MS));
	char name[32];
	for (int i = 1; i < SA_UPSTREAM_MAX; i++) {
		snprintf(name, sizeof(name), "n%d.example", i);
		ck_assert_int_eq(sa_upstream_name_add(&u, name, 0), i);
	}
	/* full: the entry that expires first gives way (n1.example, never asked: 0) */
	ck_assert_int_eq(sa_upstream_name_add(&u, "new.example", 0), 1);
	ck_assert_str_eq(u.t[1].host, "new.example");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("upstream");
	TCase *tc = tcase_create("upstream");
	tcase_add_test(tc, a_list_keeps_its_order_and_names_wait_for_dns);
	tcase_add_test(tc, bad_gateway_values_are_refused);
	tcase_add_test(tc, sip_name_with_a_port_skips_naptr_and_srv);
	tcase_add_test(tc, srv_priority_first_then_weight);
	tcase_add_test(tc, rfc2782_draw_follows_the_running_sum);
	tcase_add_test(tc, weights_spread_load_in_proportion);
	tcase_add_test(tc, health_down_after_failures_up_after_an_answer);
	tcase_add_test(tc, with_probes_a_down_gateway_waits_for_them);
	tcase_add_test(tc, ttl_expiry_asks_again_and_switches);
	tcase_add_test(tc, a_name_that_never_resolves_gives_no_gateway);
	tcase_add_test(tc, srv_answer_again_keeps_health_and_counters);
	tcase_add_test(tc, srv_failure_keeps_the_gateways_and_dot_gives_none);
	tcase_add_test(tc, a_failed_address_goes_last);
	tcase_add_test(tc, retry_after_holds_a_gateway_back);
	tcase_add_test(tc, naptr_picks_sip_udp_tcp_and_tls_by_order);
	tcase_add_test(tc, dns_answer_ttl_is_the_smallest_of_the_type);
	tcase_add_test(tc, find_addr_by_address_and_port);
	tcase_add_test(tc, a_probe_is_an_options_to_the_gateway);
	tcase_add_test(tc, metrics_and_json_name_each_gateway);
	tcase_add_test(tc, route_names_are_kept_and_evicted_by_expiry);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
