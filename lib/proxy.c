/* proxy.c: rewrite requests and responses as a record-routing proxy passes them on. */
#include "proxy.h"

#include <string.h>
#include <stdlib.h>
#include <strings.h>

int sa_proxy_ruri(const struct sa_msg *m, const char **uri, size_t *len)
{
	const char *sp1 = memchr(m->buf, ' ', m->start_line_len);
	if (!sp1)
		return -1;
	const char *end = m->buf + m->start_line_len;
	const char *sp2 = memchr(sp1 + 1, ' ', (size_t)(end - sp1 - 1));
	if (!sp2)
		return -1;
	*uri = sp1 + 1;
	*len = (size_t)(sp2 - sp1 - 1);
	return 0;
}

/* Does the k-th Proxy-Authorization line carry credentials for realm? The
 * view holds one credential per line, in the order of the lines. */
static bool has_realm(const struct sa_msg *m, unsigned k, const char *realm)
{
	for (unsigned i = 0; i < m->ncreds; i++) {
		const struct sa_cred *c = &m->creds[i];
		if (c->proxy && k-- == 0)
			return c->realm && strcasecmp(c->realm, realm) == 0;
	}
	return false;
}

/* Note the line written last, from start (the CRLF just put excluded),
 * with its value voff bytes in. A layout that cannot hold it spoils the
 * write, as a full out does. */
static void note_line(struct sa_buf *b, struct sa_fwd_layout *l, enum sa_hdr_kind kind, size_t start, size_t voff)
{
	if (!l || b->overflow)
		return;
	if (l->nlines == SA_SIP_MAX_HEADERS) {
		b->overflow = true;
		return;
	}
	l->line[l->nlines++] = (struct sa_fwd_line){ .kind = kind, .off = start, .len = b->len - 2 - start,
	                                             .voff = voff };
}

/* Write a header line without its first *drop comma-separated values
 * (nothing when none remain); *drop counts down by the values dropped. */
static void put_rest_values(struct sa_buf *b, struct sa_fwd_layout *l, const char *name, const struct sa_hdr *h,
                            unsigned *drop)
{
	const char *v = h->value;
	size_t vlen = h->vlen;
	while (*drop > 0 && vlen > 0) {
		size_t n = sa_hdr_first_value_len(v, vlen);
		(*drop)--;
		if (n >= vlen)
			return;
		n++;
		while (n < vlen && (v[n] == ' ' || v[n] == '\t'))
			n++;
		v += n;
		vlen -= n;
	}
	size_t start = b->len;
	sa_buf_puts(b, name);
	sa_buf_put(b, v, vlen);
	sa_buf_puts(b, "\r\n");
	note_line(b, l, h->kind, start, strlen(name));
}

static void put_line(struct sa_buf *b, struct sa_fwd_layout *l, const struct sa_hdr *h)
{
	size_t start = b->len;
	sa_buf_put(b, h->line, h->len);
	sa_buf_puts(b, "\r\n");
	note_line(b, l, h->kind, start, (size_t)(h->value - h->line));
}

static void put_start_line(struct sa_buf *b, const struct sa_msg *m, const char *ruri, struct sa_fwd_layout *l)
{
	const char *uri;
	size_t ulen;
	if (!ruri && sa_proxy_ruri(m, &uri, &ulen) == 0) {
		sa_buf_put(b, m->buf, m->start_line_len);
		sa_buf_puts(b, "\r\n");
		if (l) {
			l->ruri = (size_t)(uri - m->buf);
			l->ruri_len = ulen;
		}
		return;
	}
	sa_buf_puts(b, m->method_name);
	sa_buf_puts(b, " ");
	sa_buf_puts(b, ruri ? ruri : "");
	sa_buf_puts(b, " SIP/2.0\r\n");
	if (l) {
		l->ruri = strlen(m->method_name) + 1;
		l->ruri_len = ruri ? strlen(ruri) : 0;
	}
}

/* Our Via on top, then the Record-Route values that put us in the dialog. */
static void put_ours(struct sa_buf *b, const char *via, const char *const rr[2], struct sa_fwd_layout *l)
{
	size_t start = b->len;
	if (l)
		l->ours = start;
	/* copied, not printf'd: this runs for every request forwarded */
	sa_buf_puts(b, "Via: ");
	sa_buf_puts(b, via);
	sa_buf_puts(b, "\r\n");
	note_line(b, l, SA_H_VIA, start, 5);
	for (unsigned i = 0; i < 2; i++)
		if (rr[i]) {
			start = b->len;
			sa_buf_puts(b, "Record-Route: ");
			sa_buf_puts(b, rr[i]);
			sa_buf_puts(b, "\r\n");
			note_line(b, l, SA_H_RECORD_ROUTE, start, 14);
		}
	if (l)
		l->ours_end = b->len;
}

long sa_proxy_ours(const char *via, const char *const rr[2], char *out, size_t cap)
{
	struct sa_buf b = { .p = out, .cap = cap };
	put_ours(&b, via, rr, NULL);
	return b.overflow ? -1 : (long)b.len;
}

/* A message without Content-Length (allowed over UDP: the body is the rest of
 * the datagram) gets one: the next hop may be a stream, where it is the only
 * framing (RFC 3261 §18.3, §20.14). */
static void put_content_length(struct sa_buf *b, struct sa_fwd_layout *l, size_t body_len)
{
	size_t start = b->len;
	sa_buf_puts(b, "Content-Length: ");
	sa_buf_putu(b, (unsigned long)body_len);
	sa_buf_puts(b, "\r\n");
	note_line(b, l, SA_H_CONTENT_LENGTH, start, 16);
}

/* One line of what authenticated the request, for the gateway. */
static void put_identity(struct sa_buf *b, struct sa_fwd_layout *l, const char *name, const char *value)
{
	if (!value || !*value)
		return;
	size_t start = b->len;
	sa_buf_puts(b, name);
	sa_buf_puts(b, value);
	sa_buf_puts(b, "\r\n");
	note_line(b, l, SA_H_OTHER, start, strlen(name));
}

long sa_proxy_request(const struct sa_msg *m, const struct sa_fwd *f, char *out, size_t cap)
{
	struct sa_buf b = { .p = out, .cap = cap };
	struct sa_fwd_layout *l = f->layout;
	bool via_done = false, mf_done = false, cl_done = false;
	unsigned pop = f->pop_route, nproxy_auth = 0;

	if (l)
		l->nlines = 0;
	put_start_line(&b, m, f->ruri, l);
	put_ours(&b, f->via, f->rr, l);
	for (unsigned i = 0; i < m->nhdr; i++) {
		const struct sa_hdr *h = &m->hdr[i];
		size_t start = b.len;
		switch (h->kind) {
		case SA_H_VIA:
			if (via_done) {
				put_line(&b, l, h);
				break;
			}
			sa_buf_puts(&b, "Via: ");
			sa_msg_put_top_via(&b, m, f->peer);
			size_t n = sa_hdr_first_value_len(h->value, h->vlen);
			sa_buf_put(&b, h->value + n, h->vlen - n);
			sa_buf_puts(&b, "\r\n");
			note_line(&b, l, SA_H_VIA, start, 5);
			via_done = true;
			break;
		case SA_H_MAX_FORWARDS:
			if (!mf_done) {
				sa_buf_puts(&b, "Max-Forwards: ");
				sa_buf_putu(&b, m->max_forwards > 0 ? (unsigned long)m->max_forwards - 1 : 0);
				sa_buf_puts(&b, "\r\n");
				note_line(&b, l, SA_H_MAX_FORWARDS, start, 14);
			}
			mf_done = true;
			break;
		case SA_H_ROUTE:
			if (pop == 0)
				put_line(&b, l, h);
			else
				put_rest_values(&b, l, "Route: ", h, &pop);
			break;
		case SA_H_PROXY_AUTHORIZATION:
			if (!f->strip_realm || !has_realm(m, nproxy_auth, f->strip_realm))
				put_line(&b, l, h);
			nproxy_auth++;
			break;
		case SA_H_CONTENT_LENGTH:
			cl_done = true;
			put_line(&b, l, h);
			break;
		case SA_H_OTHER:
			if (h->len > 11 && strncasecmp(h->line, "X-Sipauthd-", 11) == 0)
				break;   /* ours alone: a sender's would claim another identity to the gateway */
			put_line(&b, l, h);
			break;
		default:
			put_line(&b, l, h);
		}
	}
	put_identity(&b, l, "X-Sipauthd-Trunk: ", f->trunk_id);
	put_identity(&b, l, "X-Sipauthd-Credential: ", f->cred_id);
	if (!mf_done) {
		size_t start = b.len;
		sa_buf_puts(&b, "Max-Forwards: 70\r\n");
		note_line(&b, l, SA_H_MAX_FORWARDS, start, 14);
	}
	if (!cl_done)
		put_content_length(&b, l, m->body_len);
	sa_buf_puts(&b, "\r\n");
	sa_buf_put(&b, m->body, m->body_len);
	return b.overflow ? -1 : (long)b.len;
}

long sa_proxy_response(const struct sa_msg *m, char *out, size_t cap)
{
	struct sa_buf b = { .p = out, .cap = cap };
	bool popped = false, cl_done = false;

	if (!sa_msg_header(m, SA_H_VIA, 1)) {
		const struct sa_hdr *v = sa_msg_header(m, SA_H_VIA, 0);
		if (!v || sa_hdr_first_value_len(v->value, v->vlen) >= v->vlen)
			return -1;
	}
	sa_buf_put(&b, m->buf, m->start_line_len);
	sa_buf_puts(&b, "\r\n");
	for (unsigned i = 0; i < m->nhdr; i++) {
		const struct sa_hdr *h = &m->hdr[i];
		if (h->kind == SA_H_VIA && !popped) {
			unsigned one = 1;
			put_rest_values(&b, NULL, "Via: ", h, &one);
			popped = true;
		} else {
			cl_done |= h->kind == SA_H_CONTENT_LENGTH;
			put_line(&b, NULL, h);
		}
	}
	if (!cl_done)
		put_content_length(&b, NULL, m->body_len);
	sa_buf_puts(&b, "\r\n");
	sa_buf_put(&b, m->body, m->body_len);
	return b.overflow ? -1 : (long)b.len;
}

long sa_proxy_status_line(char *out, size_t n, size_t cap, const char *line)
{
	const char *eol = memchr(out, '\n', n);
	if (!eol)
		return -1;
	size_t old = (size_t)(eol - out) + 1, len = strlen(line) + 2;
	if (n - old + len > cap)
		return -1;
	memmove(out + len, out + old, n - old);
	memcpy(out, line, len - 2);
	memcpy(out + len - 2, "\r\n", 2);
	return (long)(n - old + len);
}

long sa_proxy_strict_route(const struct sa_msg *m, char *out, size_t cap)
{
	struct sa_buf b = { .p = out, .cap = cap };
	const struct sa_hdr *last = NULL;

	for (unsigned i = 0; i < m->nhdr; i++)
		if (m->hdr[i].kind == SA_H_ROUTE)
			last = &m->hdr[i];
	if (!m->request || !last || m->nroutes == 0)
		return -1;
	sa_buf_puts(&b, m->method_name);
	sa_buf_puts(&b, " ");
	sa_buf_puts(&b, m->routes[m->nroutes - 1].uri.text);
	sa_buf_puts(&b, " SIP/2.0\r\n");
	for (unsigned i = 0; i < m->nhdr; i++) {
		const struct sa_hdr *h = &m->hdr[i];
		if (h != last) {
			put_line(&b, NULL, h);
			continue;
		}
		/* the values before the last one, if any: the line without its last */
		size_t keep = 0, at = 0;
		while (at < h->vlen) {
			size_t n = sa_hdr_first_value_len(h->value + at, h->vlen - at);
			if (at + n >= h->vlen)
				break;
			keep = at + n;
			at += n + 1;
			while (at < h->vlen && (h->value[at] == ' ' || h->value[at] == '\t'))
				at++;
		}
		if (keep > 0) {
			sa_buf_puts(&b, "Route: ");
			sa_buf_put(&b, h->value, keep);
			sa_buf_puts(&b, "\r\n");
		}
	}
	sa_buf_puts(&b, "\r\n");
	sa_buf_put(&b, m->body, m->body_len);
	return b.overflow ? -1 : (long)b.len;
}
