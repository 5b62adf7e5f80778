/* sipmsg.c: parse SIP once at the edge, index its raw header lines, write simple responses directly. */
/* the low-level SHA-256 calls are deprecated in OpenSSL 3 but kept and supported */
#define OPENSSL_API_COMPAT 0x10100000L
#include "sipmsg.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>
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
	H("Require", 0, SA_H_REQUIRE),
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

static void osip_trace_cb(const char *fi, int li, osip_trace_level_t level, const char *chfr, va_list ap)
{
}

void sa_sipmsg_init(void)
{
	parser_init();
	/* libosip2 traces every parse error to stderr unless given a sink; a bad
	 * message gets one log line, written by the caller that decides what to
	 * do with it */
	osip_trace_initialize_func(TRACE_LEVEL0, osip_trace_cb);
	for (int l = TRACE_LEVEL0; l < END_TRACE_LEVEL; l++)
		osip_trace_disable_level((osip_trace_level_t)l);
}

/* An unsigned decimal field (Content-Length, CSeq, Max-Forwards, port):
 * digits up to max, then nothing but whitespace. -1 otherwise, so an
 * overlarge or signed value is never taken for a smaller one. */
static long long parse_decimal(const char *v, const char *end, unsigned long long max)
{
	unsigned long long n = 0;
	const char *p = v;
	if (p == end || !isdigit((unsigned char)*p))
		return -1;
	for (; p < end && isdigit((unsigned char)*p); p++) {
		n = n * 10 + (unsigned long long)(*p - '0');
		if (n > max)
			return -1;
	}
	for (; p < end; p++)
		if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n')
			return -1;
	return (long long)n;
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
	for (const char *nl = memchr(buf + p, '\n', len - p); nl;
	     nl = memchr(nl + 1, '\n', (size_t)(buf + len - nl - 1))) {
		size_t i = (size_t)(nl - buf);
		/* the blank line ending the headers is never folded: the body may
		 * start with a space */
		bool blank = i == p || (i == p + 1 && buf[p] == '\r');
		if (!blank && i + 1 < len && (buf[i + 1] == ' ' || buf[i + 1] == '\t'))
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
	bool bare_cr = false;

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
			if (!bare_cr)
				return 0;
			err->status = 400;
			err->reason = "bare CR in a header";
			return -1;
		}
		/* a CR is only ever part of a line break: a next hop that took a
		 * bare one for the end of a line would see a header we never saw */
		for (const char *cr = memchr(b + p, '\r', l); cr && !bare_cr;
		     cr = memchr(cr + 1, '\r', (size_t)(b + p + l - cr - 1)))
			bare_cr = cr[1] != '\n';
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

/* Where the headers of a stream message end (the offset just past its blank
 * line), 0 when they have not ended yet, -1 when they never will within
 * the limits. The daemon calls sa_sip_frame again on every read while a
 * message trickles in, so the work per call is bounded by the number of
 * lines, not only by the bytes. An empty physical line is always the
 * blank one: line_end never folds it. */
static long headers_end(const char *buf, size_t len)
{
	const char *p = buf, *end = buf + len, *nl;
	for (unsigned lines = 0; (nl = memchr(p, '\n', (size_t)(end - p))) != NULL; p = nl + 1) {
		if (lines > 0 && (nl == p || (nl == p + 1 && *p == '\r')))
			return (long)(nl + 1 - buf);
		if (++lines > SA_SIP_MAX_HEADER_LINES)
			return -1;
	}
	return len > SA_SIP_MAX_MSG ? -1 : 0;
}

long sa_sip_frame(const char *buf, size_t len, size_t *skip)
{
	size_t s = 0;

	while (s < len && (buf[s] == '\r' || buf[s] == '\n'))
		s++;
	*skip = s;
	buf += s;
	len -= s;
	long hend = headers_end(buf, len);
	if (hend <= 0)
		return hend;
	if (hend > SA_SIP_MAX_MSG)
		return -1;
	/* the same lines and folding as scan_lines sees, so that the frame and
	 * the parse never disagree on where the body is */
	long long clen = -1;
	for (long e = line_end(buf, (size_t)hend, 0); e >= 0;) {
		size_t p = (size_t)e + 1;
		if ((e = line_end(buf, (size_t)hend, p)) < 0)
			break;
		size_t l = (size_t)e - p - (e > (long)p && buf[e - 1] == '\r');
		const char *colon = l ? memchr(buf + p, ':', l) : NULL;
		if (!colon)
			continue;
		size_t nlen = (size_t)(colon - (buf + p));
		while (nlen > 0 && (buf[p + nlen - 1] == ' ' || buf[p + nlen - 1] == '\t'))
			nlen--;
		if ((nlen != 1 && nlen != 14) || hdr_kind(buf + p, nlen) != SA_H_CONTENT_LENGTH)
			continue;   /* only "l" and "Content-Length" matter here */
		const char *v = colon + 1, *vend = buf + p + l;
		while (v < vend && (*v == ' ' || *v == '\t'))
			v++;
		/* two lengths are a framing error even when they agree */
		if (clen >= 0 || (clen = parse_decimal(v, vend, SA_SIP_MAX_MSG)) < 0)
			return -1;
	}
	size_t total = (size_t)hend + (size_t)(clen < 0 ? 0 : clen);
	if (clen < 0 || total > SA_SIP_MAX_MSG)
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
	if (sa_msg_header(m, SA_H_CONTENT_LENGTH, 1))
		return fail(err, 400, "multiple Content-Length");
	long long cl = parse_decimal(h->value, h->value + h->vlen, SA_SIP_MAX_MSG);
	if (cl < 0)
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
	if (via->port) {
		long long port = parse_decimal(via->port, via->port + strlen(via->port), 65535);
		if (port <= 0)
			return fail(err, 400, "bad Via port");
		m->via_port = (int)port;
	}
	m->via_transport = via->protocol;
	const struct sa_hdr *cid = sa_msg_header(m, SA_H_CALL_ID, 0);
	if (!cid || cid->vlen == 0 || cid->vlen > SA_SIP_MAX_CALL_ID)
		return fail(err, 400, "bad Call-ID");
	memcpy(m->call_id_buf, cid->value, cid->vlen);
	m->call_id_buf[cid->vlen] = '\0';
	m->call_id = m->call_id_buf;
	/* a CSeq must fit 32 bits (RFC 3261 §8.1.1.5); strtoul would saturate */
	long long cseq = parse_decimal(o->cseq->number, o->cseq->number + strlen(o->cseq->number), UINT32_MAX);
	if (cseq < 0)
		return fail(err, 400, "bad CSeq");
	m->cseq = (unsigned long)cseq;
	m->cseq_method = o->cseq->method;
	m->from_tag = tag_of(o->from);
	m->to_tag = tag_of(o->to);
	if (!m->request) {
		if (o->status_code < 100 || o->status_code > 699)
			return fail(err, 400, "bad status code");
		m->status = o->status_code;
		m->method = sa_method_from_name(m->cseq_method);
		return 0;
	}
	if (!o->sip_version || strcasecmp(o->sip_version, "SIP/2.0") != 0)
		return fail(err, 505, "unsupported SIP version");
	if (!m->branch || !m->via_host)
		return fail(err, 400, "missing Via branch");
	m->method_name = o->sip_method;
	m->method = sa_method_from_name(o->sip_method);
	if (!o->sip_method || strcmp(o->sip_method, m->cseq_method) != 0)
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
	/* headers are not allowed in a Request-URI (RFC 3261 §19.1.1) and
	 * must never turn into real ones on the way on (RFC 4475 §3.1.2.11) */
	if (osip_list_size(&o->req_uri->url_headers) > 0)
		return fail(err, 400, "headers in Request-URI");
	m->max_forwards = -1;
	const struct sa_hdr *mf = sa_msg_header(m, SA_H_MAX_FORWARDS, 0);
	if (mf) {
		long long v = parse_decimal(mf->value, mf->value + mf->vlen, 255);
		if (v < 0)
			return fail(err, 400, "bad Max-Forwards");
		m->max_forwards = (int)v;
	}
	return 0;
}

/* The start line's version and Request-URI scheme, read from the raw bytes:
 * libosip2 refuses some well-formed lines (a scheme with a '.' such as
 * soap.beep, RFC 4475 §3.3.3) that must get 416, not 400, and an unknown
 * version gets 505 (RFC 4475 §3.1.2.16). Anything else is left to osip. */
static int check_start_line(const struct sa_msg *m, struct sa_msg_error *err)
{
	const char *l = m->buf, *end = m->buf + m->start_line_len;
	if (m->start_line_len >= 4 && strncasecmp(l, "SIP/", 4) == 0)
		return 0;   /* a response */
	const char *sp1 = memchr(l, ' ', m->start_line_len);
	const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(end - sp1 - 1)) : NULL;
	if (!sp2)
		return 0;
	const char *ver = sp2 + 1, *uri = sp1 + 1;
	size_t vlen = (size_t)(end - ver);
	if (vlen > 4 && strncasecmp(ver, "SIP/", 4) == 0 && !memchr(ver, ' ', vlen) &&
	    !(vlen == 7 && strncasecmp(ver, "SIP/2.0", 7) == 0))
		return fail(err, 505, "unsupported SIP version");
	/* scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ":" (RFC 3986 §3.1) */
	const char *p = uri;
	if (p == sp2 || !isalpha((unsigned char)*p))
		return 0;
	while (p < sp2 && (isalnum((unsigned char)*p) || *p == '+' || *p == '-' || *p == '.'))
		p++;
	if (p == sp2 || *p != ':')
		return 0;
	size_t slen = (size_t)(p - uri);
	if ((slen == 3 && strncasecmp(uri, "sip", 3) == 0) || (slen == 4 && strncasecmp(uri, "sips", 4) == 0))
		return 0;
	return fail(err, 416, "unsupported URI scheme");
}

/* libosip2 reads header text as C strings, so a NUL there would cut it
 * short. The only place one is legal is a quoted-pair inside a quoted
 * string (RFC 3261 §25.1, RFC 4475 §3.1.1.2). Returns 0 when the header
 * section has no NUL, 1 when every NUL is such a quoted-pair (osip must
 * then parse a copy), -1 otherwise. */
static int header_nuls(const char *h, size_t len)
{
	if (!memchr(h, '\0', len))
		return 0;
	bool quoted = false;
	for (size_t i = 0; i < len; i++) {
		char c = h[i];
		if (c == '\0')
			return -1;
		if (quoted && c == '\\' && i + 1 < len)
			i++;                /* the escaped octet, NUL included */
		else if (c == '"')
			quoted = !quoted;
		else if (c == '\n' && !(i + 1 < len && (h[i + 1] == ' ' || h[i + 1] == '\t')))
			quoted = false;     /* a quoted string ends with its line */
	}
	return 1;
}

/* Headers whose parsed form we read (everything else is used as raw lines
 * or carried through untouched, as a proxy should). */
static bool osip_wanted(enum sa_hdr_kind k)
{
	switch (k) {
	case SA_H_VIA: case SA_H_FROM: case SA_H_TO: case SA_H_CALL_ID: case SA_H_CSEQ:
	case SA_H_CONTACT: case SA_H_ROUTE: case SA_H_RECORD_ROUTE:
	case SA_H_AUTHORIZATION: case SA_H_PROXY_AUTHORIZATION:
		return true;
	default:
		return false;
	}
}

/* Let osip parse the start line and the headers we read, nothing else: it
 * builds a structure for every header and the body it is given, and that is
 * most of the cost of a message. Quoted NULs are made blank in the copy. */
static int osip_parse(struct sa_msg *m, struct sa_msg_error *err)
{
	size_t hlen = (size_t)(m->body - m->buf);
	int nuls = header_nuls(m->buf, hlen);
	if (nuls < 0)
		return fail(err, 400, "NUL byte in a header");
	size_t cap = hlen + 2 * (size_t)m->nhdr + 8;   /* LF-only lines grow to CRLF */
	char *copy = malloc(cap);
	if (!copy)
		return fail(err, 500, "out of memory");
	struct sa_buf b = { .p = copy, .cap = cap };
	sa_buf_put(&b, m->buf, m->start_line_len);
	sa_buf_puts(&b, "\r\n");
	for (unsigned i = 0; i < m->nhdr; i++)
		if (osip_wanted(m->hdr[i].kind)) {
			sa_buf_put(&b, m->hdr[i].line, m->hdr[i].len);
			sa_buf_puts(&b, "\r\n");
		}
	sa_buf_puts(&b, "\r\n");
	if (nuls > 0)   /* only display names and parameter values can hold one: nothing we act on */
		for (size_t i = 0; i < b.len; i++)
			if (copy[i] == '\0')
				copy[i] = ' ';
	int rc = b.overflow ? -1 : osip_message_parse(m->osip, copy, b.len);   /* osip keeps copies */
	free(copy);
	return rc == 0 ? 0 : fail(err, 400, "unparseable");
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

/* A request we forward gains our Via, up to two Record-Route and a
 * Max-Forwards (lib/proxy.c), and must still fit the header index when
 * we scan it again to build its CANCEL, ACK or 408. */
#define HDRS_ADDED_ON_FORWARD 4

/* ---- responses: read from the raw lines, osip only when asked ---- */

/* The value of parameter name (";name=value") in params, into out. */
static bool raw_param(const char *p, const char *end, const char *name, char *out, size_t outlen)
{
	size_t nl = strlen(name);
	for (; p < end; p++) {
		if (*p != ';')
			continue;
		const char *q = p + 1;
		while (q < end && (*q == ' ' || *q == '\t'))
			q++;
		if ((size_t)(end - q) <= nl || strncasecmp(q, name, nl) != 0)
			continue;
		q += nl;
		while (q < end && (*q == ' ' || *q == '\t'))
			q++;
		if (q == end || *q != '=')
			continue;
		q++;
		while (q < end && (*q == ' ' || *q == '\t'))
			q++;
		const char *v = q;
		while (q < end && *q != ';' && *q != ',' && *q != ' ' && *q != '\t' && *q != '\r' && *q != '\n')
			q++;
		if (q == v || (size_t)(q - v) >= outlen)
			return false;
		memcpy(out, v, (size_t)(q - v));
		out[q - v] = '\0';
		return true;
	}
	return false;
}

/* The tag of a From or To value: its parameters start after the name-addr's '>'. */
static bool raw_tag(const struct sa_hdr *h, char *out, size_t outlen)
{
	const char *p = h->value, *end = h->value + h->vlen;
	bool quoted = false;
	const char *params = NULL;
	for (const char *q = p; q < end && !params; q++) {
		if (quoted) {
			if (*q == '\\' && q + 1 < end)
				q++;
			else if (*q == '"')
				quoted = false;
		} else if (*q == '"') {
			quoted = true;
		} else if (*q == '<') {
			const char *gt = memchr(q, '>', (size_t)(end - q));
			params = gt ? gt + 1 : end;
		}
	}
	if (!params) {   /* addr-spec form: parameters belong to the header */
		params = memchr(p, ';', h->vlen);
		if (!params)
			return false;
	}
	return raw_param(params, end, "tag", out, outlen);
}

/* The view of a response from its raw lines: what relaying needs. */
static int fill_response_view(struct sa_msg *m, struct sa_msg_error *err)
{
	const struct sa_hdr *via = sa_msg_header(m, SA_H_VIA, 0), *cseq = sa_msg_header(m, SA_H_CSEQ, 0);
	const struct sa_hdr *from = sa_msg_header(m, SA_H_FROM, 0), *to = sa_msg_header(m, SA_H_TO, 0);
	const struct sa_hdr *cid = sa_msg_header(m, SA_H_CALL_ID, 0);

	m->request = false;
	if (!via || !cseq || !from || !to || !cid)
		return fail(err, 400, "missing essential header");
	if (m->start_line_len < 12 || m->buf[7] != ' ' || m->buf[11] != ' ')
		return fail(err, 400, "bad status line");
	long long st = parse_decimal(m->buf + 8, m->buf + 11, 699);
	if (st < 100)
		return fail(err, 400, "bad status code");
	m->status = (int)st;
	if (cid->vlen == 0 || cid->vlen > SA_SIP_MAX_CALL_ID)
		return fail(err, 400, "bad Call-ID");
	memcpy(m->call_id_buf, cid->value, cid->vlen);
	m->call_id_buf[cid->vlen] = '\0';
	m->call_id = m->call_id_buf;
	const char *sp = memchr(cseq->value, ' ', cseq->vlen);
	long long n = sp ? parse_decimal(cseq->value, sp, UINT32_MAX) : -1;
	size_t ml = sp ? (size_t)(cseq->value + cseq->vlen - sp - 1) : 0;
	if (n < 0 || ml == 0 || ml >= sizeof(m->raw.cseq_method))
		return fail(err, 400, "bad CSeq");
	m->cseq = (unsigned long)n;
	memcpy(m->raw.cseq_method, sp + 1, ml);
	m->raw.cseq_method[ml] = '\0';
	m->cseq_method = m->raw.cseq_method;
	m->method = sa_method_from_name(m->cseq_method);
	size_t vlen = sa_hdr_first_value_len(via->value, via->vlen);
	if (raw_param(via->value, via->value + vlen, "branch", m->raw.branch, sizeof(m->raw.branch)))
		m->branch = m->raw.branch;
	if (raw_tag(from, m->raw.from_tag, sizeof(m->raw.from_tag)))
		m->from_tag = m->raw.from_tag;
	if (raw_tag(to, m->raw.to_tag, sizeof(m->raw.to_tag)))
		m->to_tag = m->raw.to_tag;
	return 0;
}

/* ---- simple requests: the challenge path without osip ---- */

/* "SIP/2.0/UDP host[:port];params" in its plain form; false when anything
 * is unusual, and osip then judges the message. */
static bool raw_via(struct sa_msg *m, const struct sa_hdr *via)
{
	const char *v = via->value, *end = v + sa_hdr_first_value_len(via->value, via->vlen);
	if (end - v < 9 || strncasecmp(v, "SIP/2.0/", 8) != 0)
		return false;
	const char *t = v + 8, *p = t;
	while (p < end && isalpha((unsigned char)*p))
		p++;
	if (p == t || (size_t)(p - t) >= sizeof(m->raw.via_transport) || p == end || *p != ' ')
		return false;
	memcpy(m->raw.via_transport, t, (size_t)(p - t));
	m->raw.via_transport[p - t] = '\0';
	const char *h = ++p;
	while (p < end && (isalnum((unsigned char)*p) || *p == '.' || *p == '-'))
		p++;
	if (p == h || (size_t)(p - h) >= sizeof(m->raw.via_host))
		return false;
	memcpy(m->raw.via_host, h, (size_t)(p - h));
	m->raw.via_host[p - h] = '\0';
	if (p < end && *p == ':') {
		const char *ps = ++p;
		while (p < end && isdigit((unsigned char)*p))
			p++;
		long long port = parse_decimal(ps, p, 65535);
		if (port <= 0)
			return false;
		m->via_port = (int)port;
	}
	if (p < end && *p != ';')
		return false;
	if (!raw_param(p, end, "branch", m->raw.branch, sizeof(m->raw.branch)))
		return false;
	for (const char *q = p; q + 6 <= end; q++)
		if (strncasecmp(q, ";rport", 6) == 0 && (q + 6 == end || q[6] == ';' || q[6] == '='))
			m->via_rport = true;
	m->branch = m->raw.branch;
	m->via_host = m->raw.via_host;
	m->via_transport = m->raw.via_transport;
	return true;
}

static bool raw_request_line(struct sa_msg *m)
{
	const char *l = m->buf, *end = l + m->start_line_len;
	const char *sp1 = memchr(l, ' ', m->start_line_len);
	const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(end - sp1 - 1)) : NULL;
	if (!sp2 || sp1 == l || (size_t)(sp1 - l) >= sizeof(m->raw.method) || end - sp2 - 1 != 7 ||
	    memcmp(sp2 + 1, "SIP/2.0", 7) != 0)
		return false;
	for (const char *p = l; p < sp1; p++)
		if (!isupper((unsigned char)*p))
			return false;
	memcpy(m->raw.method, l, (size_t)(sp1 - l));
	m->raw.method[sp1 - l] = '\0';
	char uri[1024];
	size_t ulen = (size_t)(sp2 - sp1 - 1);
	if (ulen == 0 || ulen >= sizeof(uri))
		return false;
	memcpy(uri, sp1 + 1, ulen);
	uri[ulen] = '\0';
	if (osip_uri_init(&m->raw.ruri) != 0 || osip_uri_parse(m->raw.ruri, uri) != 0 || !m->raw.ruri->scheme ||
	    !m->raw.ruri->host || !m->raw.ruri->host[0] || osip_list_size(&m->raw.ruri->url_headers) > 0 ||
	    (strcasecmp(m->raw.ruri->scheme, "sip") != 0 && strcasecmp(m->raw.ruri->scheme, "sips") != 0))
		return false;
	return true;
}

/* Each Route value parsed on its own; false past four or on anything odd. */
static bool raw_routes(struct sa_msg *m)
{
	for (unsigned i = 0; i < m->nhdr; i++) {
		const struct sa_hdr *h = &m->hdr[i];
		const char *v = h->value, *end = h->value + h->vlen;
		while (h->kind == SA_H_ROUTE && v < end) {
			size_t n = sa_hdr_first_value_len(v, (size_t)(end - v));
			char buf[512];
			if (n == 0 || n >= sizeof(buf) || m->raw.nroutes == 4)
				return false;
			memcpy(buf, v, n);
			buf[n] = '\0';
			osip_route_t *r = NULL;
			if (osip_route_init(&r) != 0)
				return false;
			m->raw.routes[m->raw.nroutes++] = r;
			if (osip_route_parse(r, buf) != 0 || !r->url)
				return false;
			v += n;
			while (v < end && (*v == ',' || *v == ' ' || *v == '\t'))
				v++;
		}
	}
	return true;
}

osip_uri_t *sa_msg_route_uri(const struct sa_msg *m, int n)
{
	if (m->osip) {
		osip_route_t *r = osip_list_get(&m->osip->routes, n);
		return r ? r->url : NULL;
	}
	return n >= 0 && n < m->raw.nroutes ? m->raw.routes[n]->url : NULL;
}

osip_uri_t *sa_msg_ruri(const struct sa_msg *m)
{
	return m->osip ? m->osip->req_uri : m->raw.ruri;
}

/* A request without credentials is challenged, refused, answered by us or
 * (in a dialog) loose-routed: its raw lines and its Routes say all we need.
 * false when it is anything else or unusual in any way (osip judges it). */
static bool fill_request_raw(struct sa_msg *m)
{
	const struct sa_hdr *via = sa_msg_header(m, SA_H_VIA, 0), *cseq = sa_msg_header(m, SA_H_CSEQ, 0);
	const struct sa_hdr *from = sa_msg_header(m, SA_H_FROM, 0), *to = sa_msg_header(m, SA_H_TO, 0);
	const struct sa_hdr *cid = sa_msg_header(m, SA_H_CALL_ID, 0);
	if (!via || !cseq || !from || !to || !cid || cid->vlen == 0 || cid->vlen > SA_SIP_MAX_CALL_ID ||
	    sa_msg_header(m, SA_H_AUTHORIZATION, 0) || sa_msg_header(m, SA_H_PROXY_AUTHORIZATION, 0) ||
	    sa_msg_header(m, SA_H_FROM, 1) || sa_msg_header(m, SA_H_TO, 1) ||
	    sa_msg_header(m, SA_H_CALL_ID, 1) || sa_msg_header(m, SA_H_CSEQ, 1))
		return false;
	if (!raw_request_line(m) || !raw_via(m, via) || !raw_routes(m))
		return false;
	const char *sp = memchr(cseq->value, ' ', cseq->vlen);
	long long n = sp ? parse_decimal(cseq->value, sp, UINT32_MAX) : -1;
	size_t ml = sp ? (size_t)(cseq->value + cseq->vlen - sp - 1) : 0;
	if (n < 0 || ml != strlen(m->raw.method) || memcmp(sp + 1, m->raw.method, ml) != 0)
		return false;
	const struct sa_hdr *mf = sa_msg_header(m, SA_H_MAX_FORWARDS, 0);
	long long mfv = mf ? parse_decimal(mf->value, mf->value + mf->vlen, 255) : -1;
	if (mf && mfv < 0)
		return false;
	memcpy(m->call_id_buf, cid->value, cid->vlen);
	m->call_id_buf[cid->vlen] = '\0';
	m->call_id = m->call_id_buf;
	m->cseq = (unsigned long)n;
	m->cseq_method = m->method_name = m->raw.method;
	m->method = sa_method_from_name(m->raw.method);
	m->request = true;
	m->max_forwards = (int)mfv;
	m->ruri_scheme = m->raw.ruri->scheme;
	m->ruri_host = m->raw.ruri->host;
	m->ruri_user = m->raw.ruri->username;
	if (raw_tag(from, m->raw.from_tag, sizeof(m->raw.from_tag)))
		m->from_tag = m->raw.from_tag;
	if (raw_tag(to, m->raw.to_tag, sizeof(m->raw.to_tag)))
		m->to_tag = m->raw.to_tag;
	return m->from_tag != NULL;
}

/* Start again from the raw lines, as if the fast path had not been tried. */
static void raw_free(struct sa_msg *m)
{
	if (m->raw.ruri)
		osip_uri_free(m->raw.ruri);
	for (int i = 0; i < m->raw.nroutes; i++)
		osip_route_free(m->raw.routes[i]);
	m->raw.ruri = NULL;
	m->raw.nroutes = 0;
}

static void reset_raw_view(struct sa_msg *m)
{
	raw_free(m);
	memset(&m->raw, 0, sizeof(m->raw));
	m->branch = m->via_host = m->via_transport = m->from_tag = m->to_tag = NULL;
	m->via_port = 0;
	m->via_rport = false;
}

int sa_msg_full(struct sa_msg *m, struct sa_msg_error *err)
{
	if (m->osip)
		return 0;
	if (osip_message_init(&m->osip) != 0)
		return fail(err, 500, "out of memory");
	return osip_parse(m, err);
}

int sa_msg_parse(struct sa_msg *m, const char *buf, size_t len, bool stream, struct sa_msg_error *err)
{
	if (sa_msg_scan(m, buf, len, err) < 0)
		return -1;
	if (m->nhdr > SA_SIP_MAX_HEADERS - HDRS_ADDED_ON_FORWARD)
		return fail(err, 400, "too many headers");
	if (check_body(m, stream, err) < 0 || check_start_line(m, err) < 0)
		return -1;
	if (m->start_line_len > 8 && memcmp(buf, "SIP/2.0 ", 8) == 0)
		return fill_response_view(m, err);
	if (fill_request_raw(m))
		return 0;
	reset_raw_view(m);
	if (osip_message_init(&m->osip) != 0)
		return fail(err, 500, "out of memory");
	if (osip_parse(m, err) < 0)
		return -1;
	return fill_view(m, err);
}

void sa_msg_free(struct sa_msg *m)
{
	raw_free(m);
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
	/* a folded value may end in CRLF SP: drop the line break with the
	 * blanks, or the parameters we add would start a line of their own */
	while (n > 0 && strchr(" \t\r\n", h->value[n - 1]))
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

/* Copy one header line; nothing at all when the request lacked it. */
static void put_header(struct sa_buf *b, const struct sa_msg *m, enum sa_hdr_kind kind, const char *name)
{
	const struct sa_hdr *h = sa_msg_header(m, kind, 0);
	if (!h)
		return;
	sa_buf_puts(b, name);
	sa_buf_put(b, h->value, h->vlen);
	sa_buf_puts(b, "\r\n");
}

long sa_msg_response(const struct sa_msg *m, const struct sa_peer *peer, int status,
                     const char *reason, const char *to_tag, const char *extra,
                     char *out, size_t cap)
{
	struct sa_buf b = { .p = out, .cap = cap };

	sa_buf_printf(&b, "SIP/2.0 %d %s\r\n", status, reason ? reason : sa_status_reason(status));
	put_vias(&b, m, peer);
	put_header(&b, m, SA_H_FROM, "From: ");
	const struct sa_hdr *to = sa_msg_header(m, SA_H_TO, 0);
	if (to) {
		sa_buf_puts(&b, "To: ");
		sa_buf_put(&b, to->value, to->vlen);
		if (!m->to_tag && to_tag && status > 100)
			sa_buf_printf(&b, ";tag=%s", to_tag);
		sa_buf_puts(&b, "\r\n");
	}
	put_header(&b, m, SA_H_CALL_ID, "Call-ID: ");
	put_header(&b, m, SA_H_CSEQ, "CSeq: ");
	if (extra)
		sa_buf_puts(&b, extra);
	sa_buf_puts(&b, "Content-Length: 0\r\n\r\n");
	return b.overflow ? -1 : (long)b.len;
}

void sa_msg_local_tag(const struct sa_msg *m, const unsigned char key[SA_TAG_KEY_LEN], char out[17])
{
	/* 64 bits of SHA-256 over a secret and Call-ID, From tag and CSeq
	 * number: unguessable (RFC 3261 §19.3), yet the same for
	 * retransmissions and for the ACK of a non-2xx even when a sloppy
	 * client gives that ACK a branch of its own */
	static const char hex[] = "0123456789abcdef";
	unsigned char md[SHA256_DIGEST_LENGTH];
	char cseq[24];
	SHA256_CTX c;
	/* every transaction and every answer of ours makes one: no snprintf */
	int n = (int)sizeof(cseq);
	unsigned long v = m->cseq;
	do
		cseq[--n] = (char)('0' + v % 10);
	while ((v /= 10) && n > 1);
	cseq[--n] = '|';
	SHA256_Init(&c);
	SHA256_Update(&c, key, SA_TAG_KEY_LEN);
	if (m->call_id)
		SHA256_Update(&c, m->call_id, strlen(m->call_id));
	SHA256_Update(&c, "|", 1);
	if (m->from_tag)
		SHA256_Update(&c, m->from_tag, strlen(m->from_tag));
	SHA256_Update(&c, cseq + n, sizeof(cseq) - (size_t)n);
	SHA256_Final(md, &c);
	for (int i = 0; i < 8; i++) {
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 15];
	}
	out[16] = '\0';
	OPENSSL_cleanse(&c, sizeof(c));
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
	case 505: return "Version Not Supported";
	case 513: return "Message Too Large";
	default: return "Unknown";
	}
}
