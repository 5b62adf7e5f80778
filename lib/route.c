/* route.c: the routing rules that keep sipauthd from relaying for strangers or taking their answers. */
#include "route.h"

#include "auth.h"

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

static struct sa_route_decision refuse(int status, const char *reason, const char *extra)
{
	return (struct sa_route_decision){ .action = SA_RA_REFUSE, .status = status, .reason = reason, .extra = extra };
}

static struct sa_route_decision act(enum sa_route_action a)
{
	return (struct sa_route_decision){ .action = a };
}

struct sa_route_decision sa_route_request(const struct sa_route_request *r)
{
	if (r->banned && !r->trusted)
		return act(SA_RA_DROP_BANNED);
	if (r->txn_match && r->method != SA_M_CANCEL) {
		/* another sender copied the branch and sent-by: it gets nothing of the transaction */
		if (!r->txn_same_sender)
			return refuse(482, "transaction of another sender", NULL);
		/* a retransmission, or the ACK for a non-2xx we relayed */
		struct sa_route_decision d = act(SA_RA_ABSORB);
		d.resend = r->method != SA_M_ACK && r->txn_answered;
		return d;
	}
	if (r->method == SA_M_ACK && r->own_ack)
		return act(SA_RA_DROP);   /* the ACK for a 401/407/4xx we sent ourselves */
	if (r->stopping && !r->to_tag && r->method != SA_M_ACK && r->method != SA_M_CANCEL)
		return refuse(503, "stopping", "Retry-After: 5\r\n");
	if (r->options_for_us)
		return act(SA_RA_OPTIONS);
	if (r->max_forwards_zero)
		return refuse(483, "Max-Forwards is 0", NULL);
	if (r->requires_extension)
		return act(SA_RA_UNSUPPORTED);
	if (r->method == SA_M_CANCEL)
		return act(SA_RA_CANCEL);
	if (r->to_tag)
		return act(SA_RA_IN_DIALOG);
	if (r->method == SA_M_ACK)
		return act(SA_RA_DROP);   /* out of any dialog or transaction: nothing to do */
	/* a gateway's REGISTER is a customer's like any other: it authenticates */
	if (r->trusted && r->method != SA_M_REGISTER)
		return act(SA_RA_INBOUND);
	return act(SA_RA_AUTHENTICATE);
}

int sa_route_cancel(bool txn_found, bool same_sender)
{
	return txn_found && same_sender ? 0 : 481;
}

static struct sa_route_resp_decision relay_steps(const struct sa_route_response *r)
{
	struct sa_route_resp_decision d = { .action = SA_RR_RELAY };
	bool next_gw = r->failover && r->status == 503;
	if (next_gw)
		d.steps |= SA_RR_TRY_NEXT;
	if (r->status == 100)
		return d;   /* hop by hop: we sent our own */
	d.steps |= SA_RR_FORWARD;
	if (r->status == 503 && r->to_gateway)
		d.steps |= SA_RR_AS_500;
	if (r->status < 200) {
		d.steps |= SA_RR_KEEP | (r->invite ? SA_RR_RESTART_C : 0);
		return d;
	}
	if (r->status >= 300 && r->invite && !next_gw)
		d.steps |= SA_RR_ACK;   /* (TRY_NEXT acknowledged it already) */
	if (r->status < 300 && r->invite && r->owns_call)
		d.steps |= SA_RR_CALL;
	if (r->status < 300 && r->invite)
		d.steps |= SA_RR_FORGET;
	if (r->status >= 300 || !r->invite)
		d.steps |= SA_RR_KEEP;
	d.steps |= SA_RR_COMPLETE;
	return d;
}

struct sa_route_resp_decision sa_route_response(const struct sa_route_response *r)
{
	struct sa_route_resp_decision d = { .action = SA_RR_DROP };
	if (r->txn && !r->from_sent_peer) {
		d.action = SA_RR_REFUSE;
		d.reason = "not from the peer the request went to";
		return d;
	}
	if (r->txn && r->abandoned)
		d.action = SA_RR_ABANDONED;
	else if (r->txn && r->local)
		d.action = SA_RR_LOCAL;
	else if (r->cseq_cancel)
		d.action = SA_RR_DROP;   /* answers to our own hop-by-hop CANCELs stop here */
	else if (!r->txn && r->relayable && r->status >= 200 && r->status < 300)
		d.action = SA_RR_NO_TXN;
	else if (!r->txn) {
		d.action = SA_RR_REFUSE;   /* nothing we sent asked for it: dropped, counted, logged */
		d.reason = "no such transaction";
	} else if (!r->relayable)
		d.action = SA_RR_DROP;
	else if (r->completed)
		d.action = SA_RR_FINAL_AGAIN;
	else
		d = relay_steps(r);
	return d;
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

/* The port a URI names: its own, else its transport's (RFC 3261 §19.1.2:
 * 5061 for sips: and transport=tls, 5060 otherwise). */
static long uri_port(const struct sa_uri *u)
{
	if (u->port)
		return u->port;
	bool tls = (u->scheme && strcasecmp(u->scheme, "sips") == 0) || (u->transport && strcasecmp(u->transport, "tls") == 0);
	return tls ? 5061 : 5060;
}

bool sa_route_uri_is_us(const struct sa_route_self *self, const struct sa_uri *u)
{
	if (!u || !u->host)
		return false;
	long port = uri_port(u);
	for (unsigned i = 0; i < self->n; i++)
		if (strcmp(u->host, self->addr[i].host) == 0 && port == self->addr[i].port)
			return true;
	return false;
}

bool sa_route_uri_names_us(const struct sa_route_self *self, const struct sa_uri *u)
{
	char trunk[SA_ID_MAX];
	if (!u || !u->host || !self->domain)
		return false;
	if (strcasecmp(u->host, self->domain) != 0 &&
	    sa_auth_trunk_from_host(u->host, self->domain, trunk, sizeof(trunk)) != 0)
		return false;
	long port = uri_port(u);
	for (unsigned i = 0; i < self->n; i++)
		if (port == self->addr[i].port)
			return true;
	return false;
}

unsigned sa_route_ours(const struct sa_route_self *self, const struct sa_msg *m)
{
	unsigned n = 0;
	while (n < m->nroutes && (sa_route_uri_is_us(self, &m->routes[n].uri) ||
	                          sa_route_uri_names_us(self, &m->routes[n].uri)))
		n++;
	return n;
}

bool sa_route_strict_routed(const struct sa_route_self *self, const struct sa_msg *m)
{
	return m->request && m->to_tag && m->nroutes > 0 && (!m->ruri.user || !m->ruri.user[0]) &&
	       sa_route_uri_is_us(self, &m->ruri);
}

unsigned sa_route_initial_pop(const struct sa_msg *m)
{
	return m->nroutes;
}

bool sa_route_options_for_us(const struct sa_msg *m)
{
	return m->method == SA_M_OPTIONS && (!m->ruri_user || !m->ruri_user[0]) && !m->to_tag;
}

const struct sa_hdr *sa_route_required_extension(const struct sa_msg *m)
{
	const struct sa_hdr *h = sa_msg_header(m, SA_H_PROXY_REQUIRE, 0);
	if (!h && m->method == SA_M_REGISTER)
		h = sa_msg_header(m, SA_H_REQUIRE, 0);
	return h;
}

enum sa_route_late sa_route_late_answer(const struct sa_route_late_answer *a)
{
	if (!a->invite)
		return SA_LATE_NOTHING;
	if (a->finished)
		return a->status >= 300 ? SA_LATE_ACK_AGAIN : a->status >= 200 ? SA_LATE_ACK_2XX_AGAIN : SA_LATE_NOTHING;
	if (a->status < 200)
		return a->cancel_sent ? SA_LATE_NOTHING : SA_LATE_CANCEL;
	return a->status >= 300 ? SA_LATE_ACK : SA_LATE_ACK_BYE;
}

enum sa_route_fo_timer sa_route_failover_timer(bool finished, int upstream_status, bool cancelled)
{
	if (finished || upstream_status > 0)
		return SA_FO_WAIT;
	return cancelled ? SA_FO_END_487 : SA_FO_NEXT;
}
