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

/* Write a header line without its first *drop comma-separated values
 * (nothing when none remain); *drop counts down by the values dropped. */
static void put_rest_values(struct sa_buf *b, const char *name, const struct sa_hdr *h, unsigned *drop)
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
	sa_buf_puts(b, name);
	sa_buf_put(b, v, vlen);
	sa_buf_puts(b, "\r\n");
}

static void put_line(struct sa_buf *b, const struct sa_hdr *h)
{
	sa_buf_put(b, h->line, h->len);
	sa_buf_puts(b, "\r\n");
}

static void put_start_line(struct sa_buf *b, const struct sa_msg *m, const char *ruri)
{
	const char *uri;
	size_t ulen;
	if (!ruri && sa_proxy_ruri(m, &uri, &ulen) == 0) {
		sa_buf_put(b, m->buf, m->start_line_len);
		sa_buf_puts(b, "\r\n");
		return;
	}
	sa_buf_printf(b, "%s %s SIP/2.0\r\n", m->method_name, ruri ? ruri : "");
}

long sa_proxy_request(const struct sa_msg *m, const struct sa_fwd *f, char *out, size_t cap)
{
	struct sa_buf b = { .p = out, .cap = cap };
	bool via_done = false, mf_done = false;
	unsigned pop = f->pop_route, nproxy_auth = 0;

	put_start_line(&b, m, f->ruri);
	sa_buf_printf(&b, "Via: %s\r\n", f->via);
	for (unsigned i = 0; i < 2; i++)
		if (f->rr[i])
			sa_buf_printf(&b, "Record-Route: %s\r\n", f->rr[i]);
	for (unsigned i = 0; i < m->nhdr; i++) {
		const struct sa_hdr *h = &m->hdr[i];
		switch (h->kind) {
		case SA_H_VIA:
			if (via_done) {
				put_line(&b, h);
				break;
			}
			sa_buf_puts(&b, "Via: ");
			sa_msg_put_top_via(&b, m, f->peer);
			size_t n = sa_hdr_first_value_len(h->value, h->vlen);
			sa_buf_put(&b, h->value + n, h->vlen - n);
			sa_buf_puts(&b, "\r\n");
			via_done = true;
			break;
		case SA_H_MAX_FORWARDS:
			if (!mf_done)
				sa_buf_printf(&b, "Max-Forwards: %d\r\n", m->max_forwards > 0 ? m->max_forwards - 1 : 0);
			mf_done = true;
			break;
		case SA_H_ROUTE:
			if (pop == 0)
				put_line(&b, h);
			else
				put_rest_values(&b, "Route: ", h, &pop);
			break;
		case SA_H_PROXY_AUTHORIZATION:
			if (!f->strip_realm || !has_realm(m, nproxy_auth, f->strip_realm))
				put_line(&b, h);
			nproxy_auth++;
			break;
		default:
			put_line(&b, h);
		}
	}
	if (!mf_done)
		sa_buf_puts(&b, "Max-Forwards: 70\r\n");
	sa_buf_puts(&b, "\r\n");
	sa_buf_put(&b, m->body, m->body_len);
	return b.overflow ? -1 : (long)b.len;
}

long sa_proxy_response(const struct sa_msg *m, char *out, size_t cap)
{
	struct sa_buf b = { .p = out, .cap = cap };
	bool popped = false;

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
			put_rest_values(&b, "Via: ", h, &one);
			popped = true;
		} else {
			put_line(&b, h);
		}
	}
	sa_buf_puts(&b, "\r\n");
	sa_buf_put(&b, m->body, m->body_len);
	return b.overflow ? -1 : (long)b.len;
}

/* ACK and CANCEL share everything but the method and To (§17.1.1.3, §9.1). */
static long hop_request(const struct sa_msg *fwd, const char *method, const struct sa_hdr *to,
                        char *out, size_t cap)
{
	struct sa_buf b = { .p = out, .cap = cap };
	const char *uri;
	size_t ulen;
	const struct sa_hdr *via = sa_msg_header(fwd, SA_H_VIA, 0);
	const struct sa_hdr *from = sa_msg_header(fwd, SA_H_FROM, 0);
	const struct sa_hdr *cid = sa_msg_header(fwd, SA_H_CALL_ID, 0);
	const struct sa_hdr *cseq = sa_msg_header(fwd, SA_H_CSEQ, 0);

	if (sa_proxy_ruri(fwd, &uri, &ulen) < 0 || !via || !from || !cid || !cseq || !to)
		return -1;
	sa_buf_printf(&b, "%s %.*s SIP/2.0\r\n", method, (int)ulen, uri);
	sa_buf_puts(&b, "Via: ");
	sa_buf_put(&b, via->value, sa_hdr_first_value_len(via->value, via->vlen));
	sa_buf_puts(&b, "\r\nMax-Forwards: 70\r\n");
	put_line(&b, from);
	put_line(&b, to);
	put_line(&b, cid);
	sa_buf_printf(&b, "CSeq: %lu %s\r\n", strtoul(cseq->value, NULL, 10), method);
	for (unsigned i = 0; i < fwd->nhdr; i++)
		if (fwd->hdr[i].kind == SA_H_ROUTE)
			put_line(&b, &fwd->hdr[i]);
	sa_buf_puts(&b, "Content-Length: 0\r\n\r\n");
	return b.overflow ? -1 : (long)b.len;
}

long sa_proxy_ack(const struct sa_msg *fwd, const struct sa_msg *resp, char *out, size_t cap)
{
	return hop_request(fwd, "ACK", sa_msg_header(resp, SA_H_TO, 0), out, cap);
}

long sa_proxy_cancel(const struct sa_msg *fwd, char *out, size_t cap)
{
	return hop_request(fwd, "CANCEL", sa_msg_header(fwd, SA_H_TO, 0), out, cap);
}
