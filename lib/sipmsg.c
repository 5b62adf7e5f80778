/* sipmsg.c: parse SIP once at the edge, index its raw header lines, write simple responses directly. */
#include "sipmsg.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <osipparser2/osip_parser.h>

struct hdr_name {
	const char *name;
	size_t len;
	char compact;
	enum sa_hdr_kind kind;
};

#define H(n, c, k) { n, sizeof(n) - 1, c, k }
static const struct hdr_name hdr_names[] = {
	H("Via", 'v', SA_H_VIA),
	H("From", 'f', SA_H_FROM),
	H("To", 't', SA_H_TO),
	H("Call-ID", 'i', SA_H_CALL_ID),
	H("CSeq", 0, SA_H_CSEQ),
	H("Max-Forwards", 0, SA_H_MAX_FORWARDS),
	H("Contact", 'm', SA_H_CONTACT),
	H("Route", 0, SA_H_ROUTE),
	H("Record-Route", 0, SA_H_RECORD_ROUTE),
	H("Authorization", 0, SA_H_AUTHORIZATION),
	H("Proxy-Authorization", 0, SA_H_PROXY_AUTHORIZATION),
	H("Proxy-Require", 0, SA_H_PROXY_REQUIRE),
	H("Content-Length", 'l', SA_H_CONTENT_LENGTH),
	H("Expires", 0, SA_H_EXPIRES),
	H("User-Agent", 0, SA_H_USER_AGENT),
	H("WWW-Authenticate", 0, SA_H_WWW_AUTHENTICATE),
	H("Proxy-Authenticate", 0, SA_H_PROXY_AUTHENTICATE),
};
#undef H

static const struct {
	const char *name;
	enum sa_method m;
} method_names[] = {
	{ "REGISTER", SA_M_REGISTER }, { "INVITE", SA_M_INVITE }, { "ACK", SA_M_ACK },
	{ "CANCEL", SA_M_CANCEL }, { "BYE", SA_M_BYE }, { "OPTIONS", SA_M_OPTIONS },
	{ "UPDATE", SA_M_UPDATE }, { "PRACK", SA_M_PRACK }, { "INFO", SA_M_INFO },
	{ "REFER", SA_M_REFER }, { "NOTIFY", SA_M_NOTIFY }, { "SUBSCRIBE", SA_M_SUBSCRIBE },
	{ "MESSAGE", SA_M_MESSAGE }, { "PUBLISH", SA_M_PUBLISH },
};

void sa_sipmsg_init(void)
{
	parser_init();
}

enum sa_method sa_method_from_name(const char *name)
{
	for (size_t i = 0; name && i < sizeof(method_names) / sizeof(method_names[0]); i++)
		if (strcmp(name, method_names[i].name) == 0)
			return method_names[i].m;
	return SA_M_OTHER;
}

static enum sa_hdr_kind hdr_kind(const char *name, size_t len)
{
	for (size_t i = 0; i < sizeof(hdr_names) / sizeof(hdr_names[0]); i++) {
		const struct hdr_name *h = &hdr_names[i];
		if (len == 1 && h->compact && tolower((unsigned char)name[0]) == h->compact)
			return h->kind;
		if (len == h->len && strncasecmp(name, h->name, len) == 0)
			return h->kind;
	}
	return SA_H_OTHER;
}

/* End of the logical line starting at p (folded continuation lines
 * included): returns the offset of its '\n', or -1 when none. */
static long line_end(const char *buf, size_t len, size_t p)
{
	for (size_t i = p; i < len; i++) {
		if (buf[i] != '\n')
			continue;
		if (i + 1 < len && (buf[i + 1] == ' ' || buf[i + 1] == '\t'))
			continue;
		return (long)i;
	}
	return -1;
}

/* Index the start line and header lines; sets the body. -1 on bad framing. */
static int scan_lines(struct sa_msg *m, struct sa_msg_error *err)
{
	const char *b = m->buf;
	size_t len = m->len, p;
	long e = line_end(b, len, 0);

	if (e < 0)
		goto bad;
	m->start_line_len = (size_t)e - (e > 0 && b[e - 1] == '\r');
	for (p = (size_t)e + 1; p < len;) {
		e = line_end(b, len, p);
		if (e < 0)
			goto bad;
		size_t l = (size_t)e - p - (e > (long)p && b[e - 1] == '\r');
		if (l == 0) {
			m->body = b + e + 1;
			m->body_len = len - (size_t)e - 1;
			return 0;
		}
		if (m->nhdr == SA_SIP_MAX_HEADERS) {
			err->status = 400;
			err->reason = "too many headers";
			return -1;
		}
		const char *colon = memchr(b + p, ':', l);
		if (!colon)
			goto bad;
		size_t nlen = (size_t)(colon - (b + p));
		while (nlen > 0 && (b[p + nlen - 1] == ' ' || b[p + nlen - 1] == '\t'))
			nlen--;
		struct sa_hdr *h = &m->hdr[m->nhdr++];
		h->kind = hdr_kind(b + p, nlen);
		h->line = b + p;
		h->len = l;
		h->value = colon + 1;
		while (h->value < b + p + l && (*h->value == ' ' || *h->value == '\t'))
			h->value++;
		h->vlen = (size_t)(b + p + l - h->value);
		p = (size_t)e + 1;
	}
bad:
	err->status = 400;
	err->reason = "bad framing";
	return -1;
}

long sa_sip_frame(const char *buf, size_t len, size_t *skip)
{
	size_t s = 0;

	while (s < len && (buf[s] == '\r' || buf[s] == '\n'))
		s++;
	*skip = s;
	buf += s;
	len -= s;
	const char *end = NULL;
	for (size_t i = 0; i + 3 < len; i++)
		if (buf[i] == '\r' && buf[i + 1] == '\n' && buf[i + 2] == '\r' && buf[i + 3] == '\n') {
			end = buf + i + 4;
			break;
		}
	if (!end)
		return len > SA_SIP_MAX_MSG ? -1 : 0;
	long clen = -1;
	for (const char *p = buf; p < end;) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		if (!nl)
			break;
		const char *colon = memchr(p, ':', (size_t)(nl - p));
		if (colon) {
			size_t nlen = (size_t)(colon - p);
			while (nlen > 0 && (p[nlen - 1] == ' ' || p[nlen - 1] == '\t'))
				nlen--;
			if (hdr_kind(p, nlen) == SA_H_CONTENT_LENGTH) {
				char *ep;
				clen = strtol(colon + 1, &ep, 10);
				if (ep == colon + 1 || clen < 0)
					return -1;
			}
		}
		p = nl + 1;
	}
	if (clen < 0)
		return -1;
	size_t total = (size_t)(end - buf) + (size_t)clen;
	if (total > SA_SIP_MAX_MSG)
		return -1;
	return total <= len ? (long)total : 0;
}

const struct sa_hdr *sa_msg_header(const struct sa_msg *m, enum sa_hdr_kind kind, unsigned n)
{
	for (unsigned i = 0; i < m->nhdr; i++)
		if (m->hdr[i].kind == kind && n-- == 0)
			return &m->hdr[i];
	return NULL;
}

static int fail(struct sa_msg_error *err, int status, const char *reason)
{
	err->status = status;
	err->reason = reason;
	return -1;
}

/* Body length from Content-Length; on a datagram it may be absent (the rest
 * of the datagram) and extra bytes are ignored (RFC 3261 §18.3). */
static int check_body(struct sa_msg *m, bool stream, struct sa_msg_error *err)
{
	const struct sa_hdr *h = sa_msg_header(m, SA_H_CONTENT_LENGTH, 0);
	if (!h)
		return stream ? fail(err, 400, "missing Content-Length") : 0;
	char *ep;
	long cl = strtol(h->value, &ep, 10);
	if (ep == h->value || cl < 0)
		return fail(err, 400, "bad Content-Length");
	if ((size_t)cl > m->body_len)
		return fail(err, 400, "Content-Length larger than the message");
	m->body_len = (size_t)cl;
	return 0;
}

static const char *via_param(osip_via_t *via, const char *name, bool *present)
{
	osip_generic_param_t *gp = NULL;
	osip_via_param_get_byname(via, (char *)name, &gp);
	if (present)
		*present = gp != NULL;
	return gp ? gp->gvalue : NULL;
}

static const char *tag_of(osip_from_t *f)
{
	osip_generic_param_t *gp = NULL;
	if (f)
		osip_from_param_get_byname(f, "tag", &gp);
	return gp && gp->gvalue && gp->gvalue[0] ? gp->gvalue : NULL;
}

/* Fill the view from osip's structures; anything essential missing is a 400. */
static int fill_view(struct sa_msg *m, struct sa_msg_error *err)
{
	osip_message_t *o = m->osip;
	osip_via_t *via = osip_list_get(&o->vias, 0);

	m->request = MSG_IS_REQUEST(o);
	if (!via || !o->from || !o->to || !o->call_id || !o->cseq || !o->cseq->method || !o->cseq->number)
		return fail(err, 400, "missing essential header");
	m->branch = via_param(via, "branch", NULL);
	via_param(via, "rport", &m->via_rport);
	m->via_host = via->host;
	m->via_port = via->port ? atoi(via->port) : 0;
	m->via_transport = via->protocol;
	m->call_id = o->call_id->number;
	char *ep;
	m->cseq = strtoul(o->cseq->number, &ep, 10);
	if (*ep || ep == o->cseq->number)
		return fail(err, 400, "bad CSeq");
	m->cseq_method = o->cseq->method;
	m->from_tag = tag_of(o->from);
	m->to_tag = tag_of(o->to);
	if (!m->request) {
		m->status = o->status_code;
		m->method = sa_method_from_name(m->cseq_method);
		return 0;
	}
	if (!m->branch || !m->via_host)
		return fail(err, 400, "missing Via branch");
	m->method_name = o->sip_method;
	m->method = sa_method_from_name(o->sip_method);
	if (strcmp(o->sip_method, m->cseq_method) != 0)
		return fail(err, 400, "CSeq method does not match");
	if (!o->req_uri || !o->req_uri->scheme)
		return fail(err, 400, "bad Request-URI");
	m->ruri_scheme = o->req_uri->scheme;
	m->ruri_host = o->req_uri->host;
	m->ruri_user = o->req_uri->username;
	if (strcasecmp(m->ruri_scheme, "sip") != 0 && strcasecmp(m->ruri_scheme, "sips") != 0)
		return fail(err, 416, "unsupported URI scheme");
	if (!m->ruri_host || !m->ruri_host[0])
		return fail(err, 400, "bad Request-URI");
	m->max_forwards = -1;
	const struct sa_hdr *mf = sa_msg_header(m, SA_H_MAX_FORWARDS, 0);
	if (mf) {
		long v = strtol(mf->value, &ep, 10);
		if (ep == mf->value || v < 0 || v > 255)
			return fail(err, 400, "bad Max-Forwards");
		m->max_forwards = (int)v;
	}
	return 0;
}

int sa_msg_scan(struct sa_msg *m, const char *buf, size_t len, struct sa_msg_error *err)
{
	memset(m, 0, sizeof(*m));
	m->buf = buf;
	m->len = len;
	if (len > SA_SIP_MAX_MSG)
		return fail(err, 513, "message too large");
	return scan_lines(m, err);
}

int sa_msg_parse(struct sa_msg *m, const char *buf, size_t len, bool stream, struct sa_msg_error *err)
{
	if (sa_msg_scan(m, buf, len, err) < 0)
		return -1;
	if (check_body(m, stream, err) < 0)
		return -1;
	if (osip_message_init(&m->osip) != 0)
		return fail(err, 500, "out of memory");
	/* osip reads the body by Content-Length; give it exactly the message */
	if (osip_message_parse(m->osip, buf, (size_t)(m->body - buf) + m->body_len) != 0)
		return fail(err, 400, "unparseable");
	return fill_view(m, err);
}

void sa_msg_free(struct sa_msg *m)
{
	if (m->osip)
		osip_message_free(m->osip);
	m->osip = NULL;
}

void sa_buf_put(struct sa_buf *b, const void *s, size_t n)
{
	if (b->overflow || n > b->cap - b->len) {
		b->overflow = true;
		return;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
}

void sa_buf_puts(struct sa_buf *b, const char *s)
{
	sa_buf_put(b, s, strlen(s));
}

void sa_buf_printf(struct sa_buf *b, const char *fmt, ...)
{
	va_list ap;
	if (b->overflow)
		return;
	va_start(ap, fmt);
	int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= b->cap - b->len)
		b->overflow = true;
	else
		b->len += (size_t)n;
}

size_t sa_hdr_first_value_len(const char *v, size_t vlen)
{
	bool quoted = false;
	int angle = 0;
	for (size_t i = 0; i < vlen; i++) {
		char c = v[i];
		if (quoted) {
			if (c == '\\' && i + 1 < vlen)
				i++;
			else if (c == '"')
				quoted = false;
		} else if (c == '"') {
			quoted = true;
		} else if (c == '<') {
			angle++;
		} else if (c == '>' && angle > 0) {
			angle--;
		} else if (c == ',' && angle == 0) {
			return i;
		}
	}
	return vlen;
}

/* Copy a Via value, dropping any received/rport params we are about to set. */
static void put_via_params_filtered(struct sa_buf *b, const char *v, size_t n)
{
	size_t i = 0;
	while (i < n) {
		size_t j = i + 1;
		while (j < n && v[j] != ';')
			j++;
		const char *seg = v + i;
		size_t slen = j - i;
		bool drop = i > 0 && (
			(slen >= 9 && strncasecmp(seg, ";received", 9) == 0 && (slen == 9 || seg[9] == '=')) ||
			(slen >= 6 && strncasecmp(seg, ";rport", 6) == 0 && (slen == 6 || seg[6] == '=')));
		if (!drop)
			sa_buf_put(b, seg, slen);
		i = j;
	}
}

void sa_msg_put_top_via(struct sa_buf *b, const struct sa_msg *m, const struct sa_peer *peer)
{
	const struct sa_hdr *h = sa_msg_header(m, SA_H_VIA, 0);
	if (!h)
		return;
	size_t n = sa_hdr_first_value_len(h->value, h->vlen);
	while (n > 0 && (h->value[n - 1] == ' ' || h->value[n - 1] == '\t'))
		n--;
	put_via_params_filtered(b, h->value, n);
	sa_buf_printf(b, ";received=%s", peer->addr);
	if (m->via_rport)
		sa_buf_printf(b, ";rport=%u", peer->port);
}

/* The Via lines of a request as a response must carry them: the first
 * value fixed for the peer, the rest verbatim. */
static void put_vias(struct sa_buf *b, const struct sa_msg *m, const struct sa_peer *peer)
{
	bool first = true;
	for (unsigned i = 0; i < m->nhdr; i++) {
		const struct sa_hdr *h = &m->hdr[i];
		if (h->kind != SA_H_VIA)
			continue;
		sa_buf_puts(b, "Via: ");
		if (first) {
			sa_msg_put_top_via(b, m, peer);
			size_t n = sa_hdr_first_value_len(h->value, h->vlen);
			if (n < h->vlen)
				sa_buf_put(b, h->value + n, h->vlen - n);
			first = false;
		} else {
			sa_buf_put(b, h->value, h->vlen);
		}
		sa_buf_puts(b, "\r\n");
	}
}

static void put_header(struct sa_buf *b, const struct sa_msg *m, enum sa_hdr_kind kind, const char *name)
{
	const struct sa_hdr *h = sa_msg_header(m, kind, 0);
	if (!h)
		return;
	sa_buf_puts(b, name);
	sa_buf_put(b, h->value, h->vlen);
}

long sa_msg_response(const struct sa_msg *m, const struct sa_peer *peer, int status,
                     const char *reason, const char *to_tag, const char *extra,
                     char *out, size_t cap)
{
	struct sa_buf b = { .p = out, .cap = cap };

	sa_buf_printf(&b, "SIP/2.0 %d %s\r\n", status, reason ? reason : sa_status_reason(status));
	put_vias(&b, m, peer);
	put_header(&b, m, SA_H_FROM, "From: ");
	sa_buf_puts(&b, "\r\n");
	put_header(&b, m, SA_H_TO, "To: ");
	if (!m->to_tag && to_tag && status > 100)
		sa_buf_printf(&b, ";tag=%s", to_tag);
	sa_buf_puts(&b, "\r\n");
	put_header(&b, m, SA_H_CALL_ID, "Call-ID: ");
	sa_buf_puts(&b, "\r\n");
	put_header(&b, m, SA_H_CSEQ, "CSeq: ");
	sa_buf_puts(&b, "\r\n");
	if (extra)
		sa_buf_puts(&b, extra);
	sa_buf_puts(&b, "Content-Length: 0\r\n\r\n");
	return b.overflow ? -1 : (long)b.len;
}

void sa_msg_local_tag(const struct sa_msg *m, char out[17])
{
	/* FNV-1a over Call-ID, From tag and CSeq number: stable across
	 * retransmissions and for the ACK of a non-2xx even when a sloppy
	 * client gives that ACK a branch of its own */
	uint64_t h = 1469598103934665603ULL;
	char cseq[24];
	snprintf(cseq, sizeof(cseq), "%lu", m->cseq);
	const char *parts[] = { m->call_id, m->from_tag, cseq };
	for (size_t i = 0; i < 3; i++)
		for (const char *p = parts[i]; p && *p; p++) {
			h ^= (unsigned char)*p;
			h *= 1099511628211ULL;
		}
	snprintf(out, 17, "%016llx", (unsigned long long)h);
}

const char *sa_status_reason(int status)
{
	switch (status) {
	case 100: return "Trying";
	case 200: return "OK";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 407: return "Proxy Authentication Required";
	case 408: return "Request Timeout";
	case 416: return "Unsupported URI Scheme";
	case 420: return "Bad Extension";
	case 423: return "Interval Too Brief";
	case 480: return "Temporarily Unavailable";
	case 481: return "Call/Transaction Does Not Exist";
	case 482: return "Loop Detected";
	case 483: return "Too Many Hops";
	case 487: return "Request Terminated";
	case 488: return "Not Acceptable Here";
	case 500: return "Server Internal Error";
	case 503: return "Service Unavailable";
	case 513: return "Message Too Large";
	default: return "Unknown";
	}
}
