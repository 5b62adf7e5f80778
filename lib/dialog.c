/* dialog.c: what a record-routing proxy must remember of a call to end it from the middle (RFC 3261 §12). */
#include "dialog.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <osipparser2/osip_parser.h>

/* The URI inside a Contact value: between <>, else up to the first ';'. */
static int contact_uri(const char *v, size_t len, char *out, size_t outlen)
{
	const char *lt = memchr(v, '<', len), *s = v, *e = v + len;
	if (lt) {
		const char *gt = memchr(lt, '>', (size_t)(v + len - lt));
		if (!gt)
			return -1;
		s = lt + 1;
		e = gt;
	} else {
		const char *semi = memchr(v, ';', len);
		if (semi)
			e = semi;
	}
	while (s < e && *s == ' ')
		s++;
	if (e <= s || (size_t)(e - s) >= outlen)
		return -1;
	memcpy(out, s, (size_t)(e - s));
	out[e - s] = '\0';
	return 0;
}

static int copy_value(const struct sa_hdr *h, char *out, size_t outlen)
{
	if (!h || h->vlen >= outlen)
		return -1;
	memcpy(out, h->value, h->vlen);
	out[h->vlen] = '\0';
	return 0;
}

static void route_append(char *route, size_t len, osip_record_route_t *rr)
{
	char *s = NULL;
	if (osip_record_route_to_str(rr, &s) != 0 || !s)
		return;
	size_t used = strlen(route);
	snprintf(route + used, len - used, "%s%s", used ? ", " : "", s);
	osip_free(s);
}

/* The 2xx's Record-Route, as the callee built it: entries above ours lead
 * to the callee (nearest first, so reversed), entries below lead to the caller. */
static void split_routes(struct sa_dialog *d, const struct sa_msg *ok, sa_dialog_is_us_fn is_us, void *arg)
{
	const osip_list_t *rrs = &ok->osip->record_routes;
	int n = osip_list_size(rrs), first = -1, last = -1;
	for (int i = 0; i < n; i++) {
		osip_record_route_t *rr = osip_list_get(rrs, i);
		if (rr && is_us(rr->url, arg)) {
			if (first < 0)
				first = i;
			last = i;
		}
	}
	if (first < 0)
		return;
	for (int i = first - 1; i >= 0; i--)
		route_append(d->callee.route, sizeof(d->callee.route), osip_list_get(rrs, i));
	for (int i = last + 1; i < n; i++)
		route_append(d->caller.route, sizeof(d->caller.route), osip_list_get(rrs, i));
}

int sa_dialog_from_2xx(struct sa_dialog *d, const struct sa_msg *invite, const struct sa_msg *ok,
                       sa_dialog_is_us_fn is_us, void *arg)
{
	const struct sa_hdr *ic = sa_msg_header(invite, SA_H_CONTACT, 0);
	const struct sa_hdr *oc = sa_msg_header(ok, SA_H_CONTACT, 0);

	memset(d, 0, sizeof(*d));
	if (!ok->call_id || !ok->from_tag || !ok->to_tag || !ic || !oc)
		return -1;
	if (snprintf(d->call_id, sizeof(d->call_id), "%s", ok->call_id) >= (int)sizeof(d->call_id) ||
	    snprintf(d->caller_tag, sizeof(d->caller_tag), "%s", ok->from_tag) >= (int)sizeof(d->caller_tag) ||
	    snprintf(d->callee_tag, sizeof(d->callee_tag), "%s", ok->to_tag) >= (int)sizeof(d->callee_tag))
		return -1;
	if (contact_uri(ic->value, ic->vlen, d->caller.target, sizeof(d->caller.target)) < 0 ||
	    contact_uri(oc->value, oc->vlen, d->callee.target, sizeof(d->callee.target)) < 0 ||
	    copy_value(sa_msg_header(ok, SA_H_FROM, 0), d->caller.name, sizeof(d->caller.name)) < 0 ||
	    copy_value(sa_msg_header(ok, SA_H_TO, 0), d->callee.name, sizeof(d->callee.name)) < 0)
		return -1;
	d->caller.cseq = ok->cseq;
	split_routes(d, ok, is_us, arg);
	return 0;
}

int sa_dialog_match(const struct sa_dialog *d, const struct sa_msg *m)
{
	if (!m->call_id || !m->from_tag || !m->to_tag || strcmp(m->call_id, d->call_id) != 0)
		return 0;
	if (strcmp(m->from_tag, d->caller_tag) == 0 && strcmp(m->to_tag, d->callee_tag) == 0)
		return 1;
	if (strcmp(m->from_tag, d->callee_tag) == 0 && strcmp(m->to_tag, d->caller_tag) == 0)
		return 2;
	return 0;
}

long sa_dialog_bye(const struct sa_dialog *d, bool to_caller, const char *via, const char *reason,
                   char *out, size_t cap)
{
	const struct sa_dialog_side *to = to_caller ? &d->caller : &d->callee;
	const struct sa_dialog_side *from = to_caller ? &d->callee : &d->caller;
	struct sa_buf b = { .p = out, .cap = cap };

	sa_buf_printf(&b, "BYE %s SIP/2.0\r\n", to->target);
	sa_buf_printf(&b, "Via: %s\r\n", via);
	sa_buf_puts(&b, "Max-Forwards: 70\r\n");
	if (to->route[0])
		sa_buf_printf(&b, "Route: %s\r\n", to->route);
	sa_buf_printf(&b, "From: %s\r\n", from->name);
	sa_buf_printf(&b, "To: %s\r\n", to->name);
	sa_buf_printf(&b, "Call-ID: %s\r\n", d->call_id);
	sa_buf_printf(&b, "CSeq: %lu BYE\r\n", from->cseq + 1);
	if (reason)
		sa_buf_printf(&b, "Reason: %s\r\n", reason);
	sa_buf_puts(&b, "Content-Length: 0\r\n\r\n");
	return b.overflow ? -1 : (long)b.len;
}
