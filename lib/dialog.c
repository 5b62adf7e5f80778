/* dialog.c: what a record-routing proxy must remember of a call to end it from the middle (RFC 3261 §12). */
#include "dialog.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static void route_append(char *route, size_t len, const struct sa_addr *rr)
{
	size_t used = strlen(route);
	snprintf(route + used, len - used, "%s%s", used ? ", " : "", rr->text);
}

/* The 2xx's Record-Route, as the callee built it: entries above ours lead
 * to the callee (nearest first, so reversed), entries below lead to the caller. */
static void split_routes(const struct sa_msg *ok, sa_dialog_is_us_fn is_us, void *arg, char *caller_route,
                         char *callee_route, size_t len)
{
	int n = (int)ok->nrecord_routes, first = -1, last = -1;
	for (int i = 0; i < n; i++) {
		if (is_us(&ok->record_routes[i].uri, arg)) {
			if (first < 0)
				first = i;
			last = i;
		}
	}
	if (first < 0)
		return;
	for (int i = first - 1; i >= 0; i--)
		route_append(callee_route, len, &ok->record_routes[i]);
	for (int i = last + 1; i < n; i++)
		route_append(caller_route, len, &ok->record_routes[i]);
}

#define DIALOG_TEXT_MAX 1024   /* one string: longer Contacts, names or Route sets are refused */

int sa_dialog_set_text(struct sa_dialog *d, const char *const texts[SA_DT_COUNT])
{
	size_t len[SA_DT_COUNT], total = 0;
	for (int i = 0; i < SA_DT_COUNT; i++) {
		len[i] = texts[i] ? strlen(texts[i]) : 0;
		if (len[i] > DIALOG_TEXT_MAX)
			return -1;
		total += len[i] + 1;
	}
	char *p = malloc(total);
	if (!p)
		return -1;
	free(d->text);
	d->text = p;
	const char **slot[SA_DT_COUNT] = {
		&d->call_id, &d->caller_tag, &d->callee_tag,
		&d->caller.target, &d->caller.route, &d->caller.name,
		&d->callee.target, &d->callee.route, &d->callee.name,
	};
	for (int i = 0; i < SA_DT_COUNT; i++) {
		memcpy(p, texts[i] ? texts[i] : "", len[i]);
		p[len[i]] = '\0';
		*slot[i] = p;
		p += len[i] + 1;
	}
	return 0;
}

const char *sa_dialog_text(const struct sa_dialog *d, enum sa_dialog_text which)
{
	const char *v[SA_DT_COUNT] = {
		d->call_id, d->caller_tag, d->callee_tag,
		d->caller.target, d->caller.route, d->caller.name,
		d->callee.target, d->callee.route, d->callee.name,
	};
	return (unsigned)which < SA_DT_COUNT && v[which] ? v[which] : "";
}

void sa_dialog_free(struct sa_dialog *d)
{
	free(d->text);
	d->text = NULL;
}

/* The texts of a dialog while it is being built from the 2xx. */
struct dialog_draft {
	char caller_target[SA_CONTACT_MAX], callee_target[SA_CONTACT_MAX];
	char caller_route[DIALOG_TEXT_MAX + 1], callee_route[DIALOG_TEXT_MAX + 1];
	char caller_name[DIALOG_TEXT_MAX + 1], callee_name[DIALOG_TEXT_MAX + 1];
};

int sa_dialog_from_2xx(struct sa_dialog *d, const char *contact, size_t contact_len, const struct sa_msg *ok,
                       sa_dialog_is_us_fn is_us, void *arg)
{
	/* not calloc: zeroing the whole draft (several KB) cost more than the
	 * rest of setting a call up; each text starts empty */
	struct dialog_draft *dr = malloc(sizeof(*dr));

	memset(d, 0, sizeof(*d));
	int rc = -1;
	if (dr)
		dr->caller_target[0] = dr->callee_target[0] = dr->caller_route[0] = dr->callee_route[0] =
			dr->caller_name[0] = dr->callee_name[0] = '\0';
	/* a 2xx read on its essentials only (partial) has no Contact to go by */
	if (!dr || ok->partial || !ok->call_id || !ok->from_tag || !ok->to_tag || !contact || ok->ncontacts == 0 ||
	    strlen(ok->contacts[0].uri.text) >= sizeof(dr->callee_target))
		goto out;
	sa_str_copy(dr->callee_target, sizeof(dr->callee_target), ok->contacts[0].uri.text);
	if (contact_uri(contact, contact_len, dr->caller_target, sizeof(dr->caller_target)) < 0 ||
	    copy_value(sa_msg_header(ok, SA_H_FROM, 0), dr->caller_name, sizeof(dr->caller_name)) < 0 ||
	    copy_value(sa_msg_header(ok, SA_H_TO, 0), dr->callee_name, sizeof(dr->callee_name)) < 0)
		goto out;
	split_routes(ok, is_us, arg, dr->caller_route, dr->callee_route, sizeof(dr->caller_route));
	const char *texts[SA_DT_COUNT] = {
		ok->call_id, ok->from_tag, ok->to_tag,
		dr->caller_target, dr->caller_route, dr->caller_name,
		dr->callee_target, dr->callee_route, dr->callee_name,
	};
	if (strlen(ok->call_id) > SA_SIP_MAX_CALL_ID || sa_dialog_set_text(d, texts) < 0)
		goto out;
	d->caller.cseq = ok->cseq;
	rc = 0;
out:
	free(dr);
	return rc;
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

/* A request to one side (to_caller) as if the other side sent it. */
static long dialog_request(const struct sa_dialog *d, bool to_caller, const char *method, unsigned long cseq,
                           const char *via, const char *reason, char *out, size_t cap)
{
	const struct sa_dialog_side *to = to_caller ? &d->caller : &d->callee;
	const struct sa_dialog_side *from = to_caller ? &d->callee : &d->caller;
	struct sa_buf b = { .p = out, .cap = cap };

	sa_buf_printf(&b, "%s %s SIP/2.0\r\n", method, to->target);
	sa_buf_printf(&b, "Via: %s\r\n", via);
	sa_buf_puts(&b, "Max-Forwards: 70\r\n");
	if (to->route[0])
		sa_buf_printf(&b, "Route: %s\r\n", to->route);
	sa_buf_printf(&b, "From: %s\r\n", from->name);
	sa_buf_printf(&b, "To: %s\r\n", to->name);
	sa_buf_printf(&b, "Call-ID: %s\r\n", d->call_id);
	sa_buf_printf(&b, "CSeq: %lu %s\r\n", cseq, method);
	if (reason)
		sa_buf_printf(&b, "Reason: %s\r\n", reason);
	sa_buf_puts(&b, "Content-Length: 0\r\n\r\n");
	return b.overflow ? -1 : (long)b.len;
}

long sa_dialog_bye(const struct sa_dialog *d, bool to_caller, const char *via, const char *reason,
                   char *out, size_t cap)
{
	const struct sa_dialog_side *from = to_caller ? &d->callee : &d->caller;
	return dialog_request(d, to_caller, "BYE", from->cseq + 1, via, reason, out, cap);
}

long sa_dialog_ack(const struct sa_dialog *d, const char *via, char *out, size_t cap)
{
	return dialog_request(d, false, "ACK", d->caller.cseq, via, NULL, out, cap);
}
