/* route.c: the routing rules that keep sipauthd from relaying for strangers or taking their answers. */
#include "route.h"

#include <netinet/in.h>
#include <string.h>

static bool same_address(const struct sockaddr_storage *a, const struct sockaddr_storage *b, bool port)
{
	if (a->ss_family != b->ss_family)
		return false;
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
		return x->sin_addr.s_addr == y->sin_addr.s_addr && (!port || x->sin_port == y->sin_port);
	}
	if (a->ss_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
		return memcmp(&x->sin6_addr, &y->sin6_addr, 16) == 0 && (!port || x->sin6_port == y->sin6_port);
	}
	return false;
}

bool sa_route_same_peer(const struct sa_flow *a, const struct sa_flow *b)
{
	return a->proto == b->proto && same_address(&a->ss, &b->ss, true);
}

/* Is `from` the end it claims to be? A stream end whose connection is gone
 * comes back from a new port of the same address. */
static bool is_the_end(const struct sa_route_in_dialog *r)
{
	if (sa_route_same_peer(r->end, r->from))
		return true;
	return r->end->proto != SA_PROTO_UDP && r->end->proto == r->from->proto && !r->end_open &&
	       same_address(&r->end->ss, &r->from->ss, false);
}

enum sa_route_verdict sa_route_in_dialog(const struct sa_route_in_dialog *r)
{
	if (!is_the_end(r))
		return SA_ROUTE_NOT_AN_END;
	if (r->has_next_route && (!r->next || !sa_route_same_peer(r->next, r->other)))
		return SA_ROUTE_OUTSIDE_CALL;
	return SA_ROUTE_FORWARD;
}

bool sa_route_response_ok(const struct sa_flow *sent_to, const struct sa_flow *from)
{
	return sa_route_same_peer(sent_to, from);
}

bool sa_route_same_sender(const struct sa_flow *txn_from, const struct sa_flow *from)
{
	return sa_route_same_peer(txn_from, from);
}

const char *sa_route_verdict_reason(enum sa_route_verdict v)
{
	switch (v) {
	case SA_ROUTE_FORWARD:
		return "forward";
	case SA_ROUTE_NOT_AN_END:
		return "in-dialog request not from an end of the call";
	case SA_ROUTE_OUTSIDE_CALL:
		return "Route leads outside the call";
	}
	return "unknown";
}
