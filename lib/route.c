/* route.c: the routing rules that keep sipauthd from relaying for strangers or taking their answers. */
#include "route.h"

#include <netinet/in.h>
#include <string.h>
#include <strings.h>

static bool same_address(const union sa_sockaddr *a, const union sa_sockaddr *b, bool port)
{
	if (a->sa.sa_family != b->sa.sa_family)
		return false;
	if (a->sa.sa_family == AF_INET)
		return a->in.sin_addr.s_addr == b->in.sin_addr.s_addr && (!port || a->in.sin_port == b->in.sin_port);
	if (a->sa.sa_family == AF_INET6)
		return memcmp(&a->in6.sin6_addr, &b->in6.sin6_addr, 16) == 0 && (!port || a->in6.sin6_port == b->in6.sin6_port);
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

int sa_proto_parse(const char *name, enum sa_proto *out)
{
	static const char *const names[] = { "udp", "tcp", "tls" };

	for (int i = 0; i < 3; i++)
		if (strcasecmp(name, names[i]) == 0) {
			*out = (enum sa_proto)i;
			return 0;
		}
	return -1;
}
