/* sipmsg.c: parse SIP once at the edge, index its raw header lines, write simple responses directly. */
#include "sipmsg.h"
#include "siphash.h"

#include <ctype.h>
#include <pthread.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <osipparser2/osip_parser.h>

/* strncasecmp(a, b, n) == 0 in ASCII, inline: the reader compares a short
 * name on every header line and parameter, and libc's call (through the
 * locale) costs more than the compare. Stops where both end, as it does. */
static inline bool ascii_ieq(const char *a, const char *b, size_t n)
{
	size_t i = 0;
	while (i < n && a[i] == b[i] && a[i])   /* as the table spells it, the usual case */
		i++;
	if (i < n && a[i] == b[i])
		return true;   /* both end here */
	for (; i < n; i++) {
		unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
		if (x != y && ((x | 0x20) != (y | 0x20) || (unsigned char)((x | 0x20) - 'a') > 'z' - 'a'))
			return false;
		if (x == '\0')
			return true;
	}
	return true;
}

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
	H("Content-Type", 'c', SA_H_CONTENT_TYPE),
	H("Expires", 0, SA_H_EXPIRES),
	H("User-Agent", 0, SA_H_USER_AGENT),
	H("WWW-Authenticate", 0, SA_H_WWW_AUTHENTICATE),
	H("Proxy-Authenticate", 0, SA_H_PROXY_AUTHENTICATE),
	H("Timestamp", 0, SA_H_TIMESTAMP),
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

/* In enum sa_method order (sipmsg.h); keep the two in step. */
static const char *const method_texts[SA_M_PUBLISH + 1] = {
	"other", "REGISTER", "INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "UPDATE", "PRACK",
	"INFO", "REFER", "NOTIFY", "SUBSCRIBE", "MESSAGE", "PUBLISH",
};

const char *sa_method_text(enum sa_method m)
{
	return (unsigned)m <= SA_M_PUBLISH ? method_texts[m] : "other";
}

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
	if (p == end || (unsigned)(*p - '0') > 9)
		return -1;
	for (; p < end && (unsigned)(*p - '0') <= 9; p++) {
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

/* hdr_names by the folded first letter of the name (index + 1, 0 ends a
 * bucket), and by compact form: every line goes through hdr_kind, and a
 * name is then compared with the one to five names sharing its letter
 * instead of all of them. Built when the program is loaded, before any
 * thread or lookup, so that no line pays for a check. */
enum { HDR_BUCKET = 6 };
static uint8_t hdr_bucket[26][HDR_BUCKET];
static uint8_t hdr_compact[26];

__attribute__((constructor)) static void hdr_index_build(void)
{
	for (size_t i = 0; i < sizeof(hdr_names) / sizeof(hdr_names[0]); i++) {
		const struct hdr_name *h = &hdr_names[i];
		uint8_t *b = hdr_bucket[((unsigned char)h->name[0] | 0x20) - 'a'];
		unsigned n = 0;
		while (b[n])
			n++;
		if (n + 1 >= HDR_BUCKET)
			abort();   /* a sixth name under one letter: HDR_BUCKET grows with the table */
		b[n] = (uint8_t)(i + 1);
		if (h->compact)
			hdr_compact[h->compact - 'a'] = (uint8_t)(i + 1);
	}
}

static enum sa_hdr_kind hdr_kind(const char *name, size_t len)
{
	if (len == 0)
		return SA_H_OTHER;
	/* every name we know starts with a letter, so "| 0x20" folds only letters */
	unsigned first = ((unsigned char)name[0] | 0x20) - 'a';
	if (first > 'z' - 'a')
		return SA_H_OTHER;
	if (len == 1)
		return hdr_compact[first] ? hdr_names[hdr_compact[first] - 1].kind : SA_H_OTHER;
	for (const uint8_t *b = hdr_bucket[first]; *b; b++) {
		const struct hdr_name *h = &hdr_names[*b - 1];
		if (len == h->len && ascii_ieq(name, h->name, len))
			return h->kind;
	}
	return SA_H_OTHER;
}

/* End of the logical line starting at p (folded continuation lines
 * included): returns the offset of its '\n', or -1 when none. *folded
 * tells whether it went on past a line break. */
static long line_end(const char *buf, size_t len, size_t p, bool *folded)
{
	*folded = false;
	for (const char *nl = memchr(buf + p, '\n', len - p); nl;
	     nl = memchr(nl + 1, '\n', (size_t)(buf + len - nl - 1))) {
		size_t i = (size_t)(nl - buf);
		/* the blank line ending the headers is never folded: the body may
		 * start with a space */
		bool blank = i == p || (i == p + 1 && buf[p] == '\r');
		if (!blank && i + 1 < len && (buf[i + 1] == ' ' || buf[i + 1] == '\t')) {
			*folded = true;
			continue;
		}
		return (long)i;
	}
	return -1;
}

/* Index the start line and header lines; sets the body. -1 on bad framing. */
static int scan_lines(struct sa_msg *m, struct sa_msg_error *err)
{
	const char *b = m->buf;
	size_t len = m->len, p;
	bool folded, bare_cr = false;
	long e = line_end(b, len, 0, &folded);

	if (e < 0)
		goto bad;
	m->start_line_len = (size_t)e - (e > 0 && b[e - 1] == '\r');
	for (p = (size_t)e + 1; p < len;) {
		e = line_end(b, len, p, &folded);
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
		h->folded = folded;
		if (!m->hdr_first[h->kind])
			m->hdr_first[h->kind] = (uint8_t)m->nhdr;
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
	bool folded;
	for (long e = line_end(buf, (size_t)hend, 0, &folded); e >= 0;) {
		size_t p = (size_t)e + 1;
		if ((e = line_end(buf, (size_t)hend, p, &folded)) < 0)
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
	if ((unsigned)kind >= SA_H_KINDS || !m->hdr_first[kind])
		return NULL;
	for (unsigned i = m->hdr_first[kind] - 1u; i < m->nhdr; i++)
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


/* ---- the view's own memory ---- */

struct sa_arena {
	struct sa_arena *next;
	size_t used, cap;
	char data[];
};

/* n bytes owned by the view, 8-aligned; NULL when out of memory. */
static void *arena_alloc(struct sa_msg *m, size_t n)
{
	n = (n + 7) & ~(size_t)7;
	if (m->mem_cap - m->mem_used >= n) {
		void *p = m->mem + m->mem_used;
		m->mem_used += n;
		return p;
	}
	struct sa_arena *a = m->arena;
	if (!a || a->cap - a->used < n) {
		size_t cap = n > 2048 ? n : 2048;
		struct sa_arena *b = malloc(sizeof(*b) + cap);
		if (!b)
			return NULL;
		b->next = a;
		b->used = 0;
		b->cap = cap;
		m->arena = a = b;
	}
	void *p = a->data + a->used;
	a->used += n;
	return p;
}

static void arena_free(struct sa_msg *m)
{
	for (struct sa_arena *a = m->arena, *next; a; a = next) {
		next = a->next;
		free(a);
	}
	m->arena = NULL;
}

/* A NUL-terminated copy of s[0..n), owned by the view. */
static const char *view_str(struct sa_msg *m, const char *s, size_t n)
{
	char *p = arena_alloc(m, n + 1);
	if (!p)
		return NULL;
	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

/* ---- character classes: one table lookup per byte on the hot loops ---- */

enum {
	CC_DIGIT = 1 << 0,
	CC_ALNUM = 1 << 1,
	CC_TOKEN = 1 << 2,    /* token (RFC 3261 §25.1) */
	CC_HOST = 1 << 3,     /* a host name as we read it: alphanum "." "-" "_" */
	CC_SCHEME = 1 << 4,   /* after a scheme's first letter: alphanum "+" "-" "." (RFC 3986 §3.1) */
	CC_URI = 1 << 5,      /* inside a URI: no space, control, quote, backslash or angle bracket */
	CC_LWS = 1 << 6,      /* SP, HTAB, CR, LF */
	CC_PVAL = 1 << 7,     /* a parameter value as we read it: token, ":" "[" "]" (an IPv6 received=) */
	CC_VPLAIN = 1 << 8,   /* opens neither a quoted string nor an angle bracket */
	CC_UPLAIN = 1 << 9,   /* inside a URI and none of ":;?@", the bytes that split one */
};

/* The classes as constant expressions of one byte c; the table below is
 * these evaluated at compile time for every byte. */
#define CC_IS_DIGIT(c) ((c) >= '0' && (c) <= '9')
#define CC_IS_ALNUM(c) (CC_IS_DIGIT(c) || ((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z'))
#define CC_IS_TOKEN(c) (CC_IS_ALNUM(c) || (c) == '-' || (c) == '.' || (c) == '!' || (c) == '%' || (c) == '*' || \
                        (c) == '_' || (c) == '+' || (c) == '`' || (c) == '\'' || (c) == '~')
#define CC_IS_HOST(c) (CC_IS_ALNUM(c) || (c) == '.' || (c) == '-' || (c) == '_')
#define CC_IS_SCHEME(c) (CC_IS_ALNUM(c) || (c) == '+' || (c) == '-' || (c) == '.')
#define CC_IS_URI(c) ((c) > 0x20 && (c) < 0x7f && (c) != '<' && (c) != '>' && (c) != '"' && (c) != '\\')
#define CC_IS_LWS(c) ((c) == ' ' || (c) == '\t' || (c) == '\r' || (c) == '\n')
#define CC_IS_PVAL(c) (CC_IS_TOKEN(c) || (c) == ':' || (c) == '[' || (c) == ']')
#define CC_IS_VPLAIN(c) ((c) != '"' && (c) != '<')
#define CC_IS_UPLAIN(c) (CC_IS_URI(c) && (c) != ':' && (c) != ';' && (c) != '?' && (c) != '@')
#define CC(c) (uint16_t)((CC_IS_DIGIT(c) ? CC_DIGIT : 0) | (CC_IS_ALNUM(c) ? CC_ALNUM : 0) | \
                              (CC_IS_TOKEN(c) ? CC_TOKEN : 0) | (CC_IS_HOST(c) ? CC_HOST : 0) | \
                              (CC_IS_SCHEME(c) ? CC_SCHEME : 0) | (CC_IS_URI(c) ? CC_URI : 0) | \
                              (CC_IS_LWS(c) ? CC_LWS : 0) | (CC_IS_PVAL(c) ? CC_PVAL : 0) | \
                              (CC_IS_VPLAIN(c) ? CC_VPLAIN : 0) | (CC_IS_UPLAIN(c) ? CC_UPLAIN : 0))
#define CC4(c) CC(c), CC((c) + 1), CC((c) + 2), CC((c) + 3)
#define CC16(c) CC4(c), CC4((c) + 4), CC4((c) + 8), CC4((c) + 12)
#define CC64(c) CC16(c), CC16((c) + 16), CC16((c) + 32), CC16((c) + 48)
static const uint16_t char_class[256] = { CC64(0), CC64(64), CC64(128), CC64(192) };

static inline bool cc_is(char c, unsigned cls)
{
	return char_class[(unsigned char)c] & cls;
}

/* The first byte from p on (before e) outside the class, or e. */
static inline const char *cc_span(const char *p, const char *e, unsigned cls)
{
	/* four bytes a turn: one bounds check for four lookups */
	for (; e - p >= 4; p += 4) {
		if (!cc_is(p[0], cls))
			return p;
		if (!cc_is(p[1], cls))
			return p + 1;
		if (!cc_is(p[2], cls))
			return p + 2;
		if (!cc_is(p[3], cls))
			return p + 3;
	}
	while (p < e && cc_is(*p, cls))
		p++;
	return p;
}

static inline bool is_alpha(char c)
{
	return (unsigned)((c | 0x20) - 'a') <= 'z' - 'a';
}

static inline bool is_lws(char c)
{
	return cc_is(c, CC_LWS);
}

static void trim(const char **s, const char **e)
{
	while (*s < *e && is_lws(**s))
		(*s)++;
	while (*e > *s && is_lws((*e)[-1]))
		(*e)--;
}

/* A copy with the surrounding double quotes off (as written otherwise). */
static const char *unquoted(struct sa_msg *m, const char *v)
{
	size_t n = strlen(v);
	if (n >= 2 && v[0] == '"' && v[n - 1] == '"')
		return view_str(m, v + 1, n - 2);
	return view_str(m, v, n);
}

/* An expires value: seconds, capped at 2^32-1 (RFC 3261 §20.19 allows
 * larger ones; the registrar cuts them to its maximum anyway); -1 when
 * absent or valueless, -2 when not a number. Both parsers read the value
 * through this. */
static long expires_value(const char *v)
{
	if (!v)
		return -1;
	const char *e = v + strlen(v);
	trim(&v, &e);
	if (v == e)
		return -2;
	for (const char *p = v; p < e; p++)
		if (!isdigit((unsigned char)*p))
			return -2;
	long long n = parse_decimal(v, e, UINT32_MAX);
	return n < 0 ? (long)UINT32_MAX : (long)n;
}

/* A port as written in a URI or Via: 1..65535, else -1. */
static int port_value(const char *s, size_t n)
{
	if (n == 0 || n > 5)
		return -1;
	for (size_t i = 0; i < n; i++)
		if ((unsigned)(s[i] - '0') > 9)
			return -1;
	long long v = parse_decimal(s, s + n, 65535);
	return v > 0 ? (int)v : -1;
}

static bool is_sip_scheme(const char *s, size_t n)
{
	return (n == 3 && ascii_ieq(s, "sip", 3)) || (n == 4 && ascii_ieq(s, "sips", 4));
}

/* The text of each comma-separated value of every header of a kind, in
 * order (the splitting both parsers share: what a value's text is does not
 * depend on who parsed it): the first max into s/e. Returns the count. */
static unsigned split_values(const struct sa_msg *m, enum sa_hdr_kind kind, const char **s, const char **e,
                             unsigned max)
{
	unsigned n = 0;
	for (unsigned i = m->hdr_first[kind] ? m->hdr_first[kind] - 1u : m->nhdr; i < m->nhdr; i++) {
		const struct sa_hdr *h = &m->hdr[i];
		if (h->kind != kind)
			continue;
		const char *v = h->value, *end = h->value + h->vlen;
		for (;;) {
			size_t l = sa_hdr_first_value_len(v, (size_t)(end - v));
			const char *vs = v, *ve = v + l;
			trim(&vs, &ve);
			if (n < max) {
				s[n] = vs;
				e[n] = ve;
			}
			n++;
			v += l;
			if (v == end)
				break;
			v++;   /* the comma: a value follows it, if only an empty one */
		}
	}
	return n;
}

#define SPLIT_MAX 16   /* values split on the stack; more go to the arena */

/* All n values of a kind, in arrays owned by the view; NULL when out of memory. */
static const char **split_all(struct sa_msg *m, enum sa_hdr_kind kind, unsigned n, const char ***e)
{
	const char **s = arena_alloc(m, 2 * n * sizeof(*s));
	if (!s)
		return NULL;
	*e = s + n;
	split_values(m, kind, s, *e, n);
	return s;
}

/* The fields read from raw lines by both parsers: Call-ID, Max-Forwards,
 * Expires, Content-Type. Their syntax is a single token or number. */
static int fill_line_fields(struct sa_msg *m, struct sa_msg_error *err)
{
	const struct sa_hdr *cid = sa_msg_header(m, SA_H_CALL_ID, 0);
	if (cid && cid->vlen > 0 && cid->vlen <= SA_SIP_MAX_CALL_ID) {   /* else validate_view refuses it */
		memcpy(m->call_id_buf, cid->value, cid->vlen);
		m->call_id_buf[cid->vlen] = '\0';
		m->call_id = m->call_id_buf;
	}
	m->max_forwards = -1;
	m->expires = -1;
	const struct sa_hdr *ex = sa_msg_header(m, SA_H_EXPIRES, 0);
	if (ex) {
		const char *v = view_str(m, ex->value, ex->vlen);
		if (!v)
			return fail(err, 500, "out of memory");
		m->expires = expires_value(v);
	}
	const struct sa_hdr *ct = sa_msg_header(m, SA_H_CONTENT_TYPE, 0);
	if (ct) {
		const char *s = ct->value, *e = ct->value + ct->vlen;
		trim(&s, &e);
		if (!(m->content_type = view_str(m, s, (size_t)(e - s))))
			return fail(err, 500, "out of memory");
	}
	return 0;
}

/* What each parser leaves as text for the shared checks. */
struct draft {
	const char *cseq_num;   /* the CSeq number as written */
	const char *version;    /* requests: the SIP version */
	const char *via_port;   /* top Via's port as written, NULL when absent */
	bool ruri_headers;
	bool nuls;              /* the header section holds quoted NULs */
};

/* The checks of a filled view, the same whichever parser filled it. */
static int validate_view(struct sa_msg *m, const struct draft *d, struct sa_msg_error *err)
{
	if (!m->via_host || !m->from.text || !m->to.text || !sa_msg_header(m, SA_H_CALL_ID, 0) || !d->cseq_num ||
	    !m->cseq_method)
		return fail(err, 400, "missing essential header");
	/* a CSeq must fit 32 bits (RFC 3261 §8.1.1.5); strtoul would saturate */
	long long cseq = parse_decimal(d->cseq_num, d->cseq_num + strlen(d->cseq_num), UINT32_MAX);
	if (cseq < 0)
		return fail(err, 400, "bad CSeq");
	m->cseq = (unsigned long)cseq;
	if (d->via_port && (m->via_port = port_value(d->via_port, strlen(d->via_port))) < 0)
		return fail(err, 400, "bad Via port");
	if (!m->call_id)
		return fail(err, 400, "bad Call-ID");
	m->from_tag = m->from.tag && m->from.tag[0] ? m->from.tag : NULL;
	m->to_tag = m->to.tag && m->to.tag[0] ? m->to.tag : NULL;
	if (!m->request) {
		if (m->status < 100 || m->status > 699)
			return fail(err, 400, "bad status code");
		m->method = sa_method_from_name(m->cseq_method);
		return 0;
	}
	if (!d->version || !ascii_ieq(d->version, "SIP/2.0", sizeof("SIP/2.0")))
		return fail(err, 505, "unsupported SIP version");
	if (!m->branch)
		return fail(err, 400, "missing Via branch");
	m->method = sa_method_from_name(m->method_name);
	if (!m->method_name || strcmp(m->method_name, m->cseq_method) != 0)
		return fail(err, 400, "CSeq method does not match");
	if (!m->ruri.scheme)
		return fail(err, 400, "bad Request-URI");
	m->ruri_scheme = m->ruri.scheme;
	m->ruri_host = m->ruri.host;
	m->ruri_user = m->ruri.user;
	if (!ascii_ieq(m->ruri_scheme, "sip", sizeof("sip")) && !ascii_ieq(m->ruri_scheme, "sips", sizeof("sips")))
		return fail(err, 416, "unsupported URI scheme");
	if (!m->ruri_host || !m->ruri_host[0])
		return fail(err, 400, "bad Request-URI");
	/* headers are not allowed in a Request-URI (RFC 3261 §19.1.1) and
	 * must never turn into real ones on the way on (RFC 4475 §3.1.2.11) */
	if (d->ruri_headers)
		return fail(err, 400, "headers in Request-URI");
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
	if (m->start_line_len >= 4 && ascii_ieq(l, "SIP/", 4))
		return 0;   /* a response */
	const char *sp1 = memchr(l, ' ', m->start_line_len);
	const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(end - sp1 - 1)) : NULL;
	if (!sp2)
		return 0;
	const char *ver = sp2 + 1, *uri = sp1 + 1;
	size_t vlen = (size_t)(end - ver);
	if (vlen > 4 && ascii_ieq(ver, "SIP/", 4) && !memchr(ver, ' ', vlen) &&
	    !(vlen == 7 && ascii_ieq(ver, "SIP/2.0", 7)))
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
	if ((slen == 3 && ascii_ieq(uri, "sip", 3)) || (slen == 4 && ascii_ieq(uri, "sips", 4)))
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
static int osip_parse(struct sa_msg *m, osip_message_t *o, struct sa_msg_error *err)
{
	size_t hlen = (size_t)(m->body - m->buf);
	int nuls = header_nuls(m->buf, hlen);
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
	int rc = b.overflow ? -1 : osip_message_parse(o, copy, b.len);   /* osip keeps copies */
	free(copy);
	return rc == 0 ? 0 : fail(err, 400, "unparseable");
}

int sa_msg_scan(struct sa_msg *m, const char *buf, size_t len, struct sa_msg_error *err)
{
	memset(m, 0, offsetof(struct sa_msg, hdr));
	m->buf = buf;
	m->len = len;
	if (len > SA_SIP_MAX_MSG)
		return fail(err, 513, "message too large");
	return scan_lines(m, err);
}

/* A request we forward gains our Via, up to two Record-Route and a
 * Max-Forwards (lib/proxy.c), and must still fit the index of its lines
 * that the writer notes for its transaction (struct sa_fwd_layout), and
 * the header index of the next hop. */
#define HDRS_ADDED_ON_FORWARD 4

/* ---- raw parameters, for the essentials of a response ---- */

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
		if ((size_t)(end - q) <= nl || !ascii_ieq(q, name, nl))
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


/* ---- the raw parser: the view from the header lines, without libosip2 ----
 *
 * It reads the common forms of every field the view holds, and declines
 * (returns false) on anything else, which libosip2 then judges: a decline
 * is never a verdict. test/unit/test_sipmsg_view.c holds it to giving the
 * view libosip2 gives on every message of the fuzz corpus and RFC 4475. */

static inline bool is_token_char(char c)
{
	return cc_is(c, CC_TOKEN);
}

static inline bool is_digit(char c)
{
	return cc_is(c, CC_DIGIT);
}

/* Characters a URI may hold as we read it: no space, control, quote or
 * angle bracket (those end it, or make it something to decline). */
static bool uri_chars_ok(const char *s, const char *e)
{
	return cc_span(s, e, CC_URI) == e;
}

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = (char)tolower((unsigned char)c);
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* A copy with %HH resolved as libosip2 resolves it; NULL (decline) for an
 * escaped NUL, which a C string cannot hold, and for a '%' that is no escape. */
static const char *unescaped(struct sa_msg *m, const char *s, size_t n)
{
	if (!memchr(s, '%', n))
		return view_str(m, s, n);   /* the usual value: nothing to resolve */
	char *p = arena_alloc(m, n + 1), *o = p;
	if (!p)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		int hi, lo;
		if (s[i] == '%') {
			/* a '%' without two hex digits: libosip2's reading of it is its own */
			if (i + 2 >= n || (hi = hex_digit(s[i + 1])) < 0 || (lo = hex_digit(s[i + 2])) < 0 ||
			    (hi == 0 && lo == 0))
				return NULL;
			*o++ = (char)(hi * 16 + lo);
			i += 2;
		} else {
			*o++ = s[i];
		}
	}
	*o = '\0';
	return p;
}

/* uri-parameters ";name[=value]..." of a SIP URI: the ones the view keeps. */
static bool raw_uri_params(struct sa_msg *m, const char *p, const char *e, struct sa_uri *u)
{
	while (p < e) {
		if (*p != ';')
			return false;
		const char *n = ++p;
		while (p < e && *p != ';')
			p++;
		const char *eq = memchr(n, '=', (size_t)(p - n)), *ne = eq ? eq : p;
		if (ne == n || (eq && eq + 1 == p))
			return false;
		const char *v = eq ? unescaped(m, eq + 1, (size_t)(p - eq - 1)) : NULL;
		if (eq && !v)
			return false;
		size_t nl = (size_t)(ne - n);
		if (memchr(n, '%', nl)) {   /* libosip2 resolves escapes in names too */
			if (!(n = unescaped(m, n, nl)))
				return false;
			nl = strlen(n);
		}
		if (nl == 9 && ascii_ieq(n, "transport", 9) && !u->transport)
			u->transport = v;
		else if (nl == 5 && ascii_ieq(n, "maddr", 5) && !u->maddr)
			u->maddr = v;
		else if (nl == 2 && ascii_ieq(n, "lr", 2))
			u->lr = true;
	}
	return true;
}

/* host [":" port] of a SIP URI or a Via, IPv6 in brackets. */
static bool raw_hostport(struct sa_msg *m, const char *p, const char *e, const char **host, const char **port_text,
                         size_t *port_len)
{
	const char *h = p, *he;
	if (p < e && *p == '[') {
		const char *rb = memchr(p, ']', (size_t)(e - p));
		if (!rb || rb == p + 1)
			return false;
		for (const char *q = p + 1; q < rb; q++)
			if (!isxdigit((unsigned char)*q) && *q != ':' && *q != '.')
				return false;
		h = p + 1;
		he = rb;
		p = rb + 1;
	} else {
		he = p = cc_span(p, e, CC_HOST);
		if (he == h)
			return false;
	}
	*port_text = NULL;
	*port_len = 0;
	if (p < e && *p == ':') {
		*port_text = ++p;
		while (p < e && is_digit(*p))
			p++;
		*port_len = (size_t)(p - *port_text);
	}
	if (p != e)
		return false;
	return (*host = view_str(m, h, (size_t)(he - h))) != NULL;
}

/* One URI as the view holds it; false declines. */
static bool raw_uri(struct sa_msg *m, const char *s, const char *e, struct sa_uri *u)
{
	memset(u, 0, sizeof(*u));
	/* libosip2 refuses a URI of five characters or fewer in From, To and
	 * the like ("sip:p", "tel:1"): it judges those */
	if (e - s < 6 || !is_alpha(*s))
		return false;
	const char *p = cc_span(s, e, CC_SCHEME);
	if (p == e || *p != ':' || p + 1 == e)
		return false;
	size_t sl = (size_t)(p - s);
	if (!is_sip_scheme(s, sl)) {
		/* libosip2 has rules of its own for other schemes ("sipx:" read as
		 * SIP, "tel:1", "p:x" and "ip7:x" refused): the common ones only */
		static const char *const known[] = { "tel", "urn", "mailto", "http", "https", "im", "pres" };
		bool ok = false;
		for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
			ok |= strlen(known[i]) == sl && ascii_ieq(known[i], s, sl);
		return ok && e - p > 2 && uri_chars_ok(p, e) && (u->scheme = view_str(m, s, sl)) &&
		       (u->text = view_str(m, s, (size_t)(e - s)));
	}
	/* One pass over the rest finds what splits it: the first '@' (the end
	 * of userinfo), the first ':' before it (user:password), the first ';'
	 * after it (the end of hostport), and checks every byte is a URI's.
	 * URI headers ("?") are rare, and libosip2's reading of them is its own. */
	const char *rest = p + 1, *at = NULL, *colon = NULL, *semi_any = NULL, *semi_host = NULL;
	for (const char *x = rest;; x++) {
		if ((x = cc_span(x, e, CC_UPLAIN)) == e)
			break;
		switch (*x) {
		case '@':
			at = at ? at : x;
			break;
		case ':':
			colon = colon ? colon : x;
			break;
		case ';':
			semi_any = semi_any ? semi_any : x;
			if (at && !semi_host)
				semi_host = x;
			break;
		default:   /* '?', or no URI character */
			return false;
		}
	}
	/* the scheme as written: the usual spelling needs no copy */
	u->scheme = sl == 3 && memcmp(s, "sip", 3) == 0 ? "sip" : view_str(m, s, sl);
	if (!u->scheme || !(u->text = view_str(m, s, (size_t)(e - s))))
		return false;
	const char *hp = rest;
	if (at) {
		colon = colon && colon < at ? colon : NULL;
		const char *ue = colon ? colon : at;
		if (colon && (colon + 1 == at || colon == rest))
			return false;   /* an empty password or user beside the other: libosip2 judges */
		if (ue > rest && !(u->user = unescaped(m, rest, (size_t)(ue - rest))))
			return false;
		if (colon && !(u->password = unescaped(m, colon + 1, (size_t)(at - colon - 1))))
			return false;
		hp = at + 1;
	}
	const char *semi = at ? semi_host : semi_any, *hpe = semi ? semi : e;
	const char *port_text;
	size_t port_len;
	if (!raw_hostport(m, hp, hpe, &u->host, &port_text, &port_len))
		return false;
	if (port_text && (u->port = port_value(port_text, port_len)) < 0)
		return false;
	return raw_uri_params(m, hpe, e, u);
}

/* A quoted string from p: the offset just past its closing quote, or NULL. */
static const char *skip_quoted(const char *p, const char *e)
{
	for (p++; p < e; p++) {
		if (*p == '\\' && p + 1 < e)
			p++;
		else if (*p == '"')
			return p + 1;
	}
	return NULL;
}

static const char *skip_lws(const char *p, const char *e)
{
	return cc_span(p, e, CC_LWS);
}

/* generic-params ";name[=token|quoted-string]..." after a value; the ones
 * the view keeps, quotes kept. */
static bool raw_header_params(struct sa_msg *m, const char *p, const char *e, struct sa_addr *a)
{
	for (p = skip_lws(p, e); p < e;) {
		if (*p != ';')
			return false;
		const char *n = p = skip_lws(p + 1, e);
		while (p < e && is_token_char(*p))
			p++;
		if (p == n)
			return false;
		size_t nl = (size_t)(p - n);
		const char *v = NULL, *ve = NULL;
		p = skip_lws(p, e);
		if (p < e && *p == '=') {
			v = p = skip_lws(p + 1, e);
			if (p < e && *p == '"') {
				if (!(p = skip_quoted(p, e)))
					return false;
			} else {
				p = cc_span(p, e, CC_PVAL);
			}
			if (p == v)
				return false;
			ve = p;
			p = skip_lws(p, e);
		}
		const char *val = v ? view_str(m, v, (size_t)(ve - v)) : NULL;
		if (v && !val)
			return false;
		if (nl == 3 && ascii_ieq(n, "tag", 3) && !a->tag)
			a->tag = val ? val : "";
		else if (nl == 7 && ascii_ieq(n, "expires", 7) && a->expires == -1)
			a->expires = expires_value(val);
		else if (nl == 1 && tolower((unsigned char)*n) == 'q' && !a->q)
			a->q = val ? val : "";
		else if (nl == 13 && ascii_ieq(n, "+sip.instance", 13) && !a->instance)
			a->instance = val ? val : "";
	}
	return true;
}

/* One From/To/Contact/Route/Record-Route value (trimmed): name-addr or addr-spec. */
static bool raw_addr(struct sa_msg *m, const char *s, const char *e, struct sa_addr *a)
{
	memset(a, 0, sizeof(*a));
	a->expires = -1;
	/* libosip2 refuses some tabs between the parts ("2 TAB <sip:...>"): it judges them all */
	if (s == e || memchr(s, '\t', (size_t)(e - s)) || !(a->text = view_str(m, s, (size_t)(e - s))))
		return false;
	const char *p = s;
	if (*p == '"') {
		if (!(p = skip_quoted(p, e)))
			return false;
		p = skip_lws(p, e);
	} else {
		while (p < e && (is_token_char(*p) || is_lws(*p)))
			p++;
		if (p == e || *p != '<')
			p = s;   /* no display name: an addr-spec, or "<" straight away */
	}
	if (p < e && *p == '<') {
		const char *gt = memchr(p, '>', (size_t)(e - p));
		if (!gt || !raw_uri(m, p + 1, gt, &a->uri))
			return false;
		p = gt + 1;
	} else {
		/* addr-spec: parameters after it belong to the header (RFC 3261 §20) */
		if (p != s)
			return false;
		const char *semi = memchr(s, ';', (size_t)(e - s)), *ue = semi ? semi : e, *us = s;
		trim(&us, &ue);
		if (memchr(s, '?', (size_t)(ue - s)) || memchr(s, ',', (size_t)(ue - s)) || !raw_uri(m, s, ue, &a->uri))
			return false;
		p = semi ? semi : e;
	}
	return raw_header_params(m, p, e, a);
}

/* Every value of an addressing header kind, into a list owned by the view. */
static bool raw_addr_list(struct sa_msg *m, enum sa_hdr_kind kind, struct sa_addr **list, unsigned *count)
{
	const char *sv[SPLIT_MAX], *ev[SPLIT_MAX], **s = sv, **e = ev;
	unsigned n = split_values(m, kind, s, e, SPLIT_MAX);
	*count = 0;
	if (n == 0)
		return true;
	if (n > SPLIT_MAX && !(s = split_all(m, kind, n, &e)))
		return false;
	struct sa_addr *l = arena_alloc(m, n * sizeof(*l));
	if (!l)
		return false;
	for (unsigned i = 0; i < n; i++) {
		if (kind == SA_H_CONTACT && e[i] > s[i] && *s[i] == '*') {
			if (e[i] - s[i] != 1)
				return false;   /* "*<sip:...>": libosip2 refuses it as a bad "*" */
			m->contact_star = true;
			continue;
		}
		if (!raw_addr(m, s[i], e[i], &l[*count]))
			return false;
		(*count)++;
	}
	*list = l;
	return true;
}

/* From or To: exactly one value. */
static bool raw_single_addr(struct sa_msg *m, enum sa_hdr_kind kind, struct sa_addr *a)
{
	const char *s, *e;
	if (split_values(m, kind, &s, &e, 1) != 1)
		return false;
	return raw_addr(m, s, e, a);
}

/* "SIP/2.0/UDP host[:port];params" in its plain form. */
/* word after optional LWS: the position past it, or NULL. */
static const char *expect_word(const char *p, const char *e, const char *word)
{
	size_t n = strlen(word);
	if (!p || (size_t)(e - (p = skip_lws(p, e))) < n || strncmp(p, word, n) != 0)
		return NULL;
	return p + n;
}

static bool raw_via_value(struct sa_msg *m, const char *v, const char *end, bool top, struct draft *d)
{
	/* sent-protocol: "SIP" / "2.0" / transport, LWS allowed around the slashes */
	const char *t = end - v > 8 && memcmp(v, "SIP/2.0/", 8) == 0 ? v + 8 :
	                expect_word(expect_word(expect_word(expect_word(v, end, "SIP"), end, "/"), end, "2.0"), end, "/");
	if (!t)
		return false;
	t = skip_lws(t, end);
	const char *p = t;
	while (p < end && is_alpha(*p))
		p++;
	if (p == t || p == end || !is_lws(*p) || *p == '\t')
		return false;   /* libosip2 refuses a tab straight after the transport: it judges */
	const char *te = p;
	p = skip_lws(p, end);
	const char *h = p;
	while (p < end && *p != ';')
		p++;
	const char *he = p;
	while (he > h && is_lws(he[-1]))
		he--;
	const char *host, *port_text;
	size_t port_len;
	if (!raw_hostport(m, h, he, &host, &port_text, &port_len) || (port_text && port_len == 0))
		return false;
	const char *branch = NULL, *received = NULL;
	bool rport = false;
	while (p < end) {
		const char *n = p = skip_lws(p + 1, end);
		while (p < end && is_token_char(*p))
			p++;
		size_t nl = (size_t)(p - n);
		const char *val = NULL, *ve;
		if (nl == 0)
			return false;
		const char *eq = skip_lws(p, end);
		if (eq < end && *eq == '=') {
			val = p = skip_lws(eq + 1, end);
			p = cc_span(p, end, CC_PVAL);
			if (p == val)
				return false;
		}
		ve = p;
		p = skip_lws(p, end);
		if (p < end && *p != ';')
			return false;
		if (!top)
			continue;
		if (nl == 6 && ascii_ieq(n, "branch", 6) && !branch && val)
			branch = view_str(m, val, (size_t)(ve - val));
		else if (nl == 8 && ascii_ieq(n, "received", 8) && !received && val)
			received = view_str(m, val, (size_t)(ve - val));
		else if (nl == 5 && ascii_ieq(n, "rport", 5))
			rport = true;
	}
	if (!top)
		return true;
	m->via_transport = view_str(m, t, (size_t)(te - t));
	m->via_host = host;
	m->branch = branch;
	m->via_received = received;
	m->via_rport = rport;
	d->via_port = port_text ? view_str(m, port_text, port_len) : NULL;
	return m->via_transport != NULL;
}

static bool raw_vias(struct sa_msg *m, struct draft *d)
{
	m->nvias = 0;
	for (unsigned i = m->hdr_first[SA_H_VIA] ? m->hdr_first[SA_H_VIA] - 1u : m->nhdr; i < m->nhdr; i++) {
		const struct sa_hdr *h = &m->hdr[i];
		const char *v = h->value, *end = h->value + h->vlen;
		while (h->kind == SA_H_VIA && v < end) {
			size_t n = sa_hdr_first_value_len(v, (size_t)(end - v));
			const char *vs = v, *ve = v + n;
			trim(&vs, &ve);
			if (!raw_via_value(m, vs, ve, m->nvias == 0, d))
				return false;
			m->nvias++;
			v += n;
			if (v < end && ++v == end)
				return false;   /* a trailing comma */
		}
	}
	return m->nvias > 0;
}

/* "number method" */
static bool raw_cseq(struct sa_msg *m, struct draft *d)
{
	const struct sa_hdr *h = sa_msg_header(m, SA_H_CSEQ, 0);
	if (!h || sa_msg_header(m, SA_H_CSEQ, 1))
		return false;
	const char *v = h->value, *e = h->value + h->vlen, *p;
	trim(&v, &e);
	for (p = v; p < e && is_digit(*p); p++)
		;
	const char *ne = p;
	if (ne == v || p == e || !is_lws(*p))
		return false;
	p = skip_lws(p, e);
	for (const char *q = p; q < e; q++)
		if (!is_token_char(*q))
			return false;
	d->cseq_num = view_str(m, v, (size_t)(ne - v));
	m->cseq_method = view_str(m, p, (size_t)(e - p));
	return d->cseq_num && m->cseq_method && *m->cseq_method;
}

/* auth-param values: token or quoted-string, quotes removed. */
static const char **cred_field(struct sa_cred *c, const char *n, size_t nl, bool *quoted)
{
#define F(name, field, q) { name, sizeof(name) - 1, offsetof(struct sa_cred, field), q }
	static const struct {
		const char *name;
		size_t len, off;
		bool quoted;   /* a quoted-string in RFC 2617's grammar, else a token */
	} f[] = {
		F("username", username, true), F("realm", realm, true), F("nonce", nonce, true),
		F("uri", uri, true), F("response", response, true), F("algorithm", algorithm, false),
		F("cnonce", cnonce, true), F("opaque", opaque, true), F("qop", qop, false), F("nc", nc, false),
	};
#undef F
	for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++)
		if (f[i].len == nl && ascii_ieq(f[i].name, n, nl)) {
			*quoted = f[i].quoted;
			return (const char **)(void *)((char *)c + f[i].off);
		}
	return NULL;
}

/* "Digest name=value, name="value", ..." */
static bool raw_cred(struct sa_msg *m, const struct sa_hdr *h, struct sa_cred *c)
{
	const char *p = h->value, *e = h->value + h->vlen;
	trim(&p, &e);
	const char *s = p;
	while (p < e && is_token_char(*p))
		p++;
	if (p == s || p == e || !is_lws(*p) || !(c->scheme = view_str(m, s, (size_t)(p - s))))
		return false;
	for (p = skip_lws(p, e); p < e;) {
		const char *n = p;
		while (p < e && is_token_char(*p))
			p++;
		size_t nl = (size_t)(p - n);
		const char *gap = p;
		p = skip_lws(p, e);
		if (nl == 0 || p == e || *p != '=')
			return false;
		/* libosip2 loses the value of a name that a TAB or a fold parts from
		 * its '=' (blanks it skips): it judges those */
		for (const char *q = gap; q < p; q++)
			if (*q != ' ')
				return false;
		const char *v = p = skip_lws(p + 1, e), *ve;
		bool was_quoted = p < e && *p == '"', quoted = false;
		if (was_quoted) {
			if (!(p = skip_quoted(p, e)))
				return false;
			ve = p - 1;
			v++;
		} else {
			while (p < e && is_token_char(*p))
				p++;
			if (p == v)
				return false;
			ve = p;
		}
		/* an unknown name libosip2 may take for a known one it begins
		 * with ("nce" for "nc"), a name given twice, and a value quoted
		 * where the grammar has none or the other way round (libosip2
		 * then loses the value, or the next one): it judges those */
		const char **slot = cred_field(c, n, nl, &quoted);
		if (!slot || *slot || quoted != was_quoted)
			return false;
		for (const char *q = v; q < ve; q++)
			if ((unsigned char)*q < 0x20 || (unsigned char)*q >= 0x7f)
				return false;   /* a fold or a non-ASCII byte inside a value: libosip2 judges */
		if (!(*slot = view_str(m, v, (size_t)(ve - v))))
			return false;
		p = skip_lws(p, e);
		if (p < e && *p != ',')
			return false;
		if (p < e && (p = skip_lws(p + 1, e)) == e)
			return false;
		/* libosip2 loses a last unquoted value of one or two characters
		 * ("nc=zz" ending the line): that one it judges alone */
		if (p == e && ve - v <= 2 && v[-1] != '"')
			return false;
	}
	return true;
}

static bool raw_creds(struct sa_msg *m)
{
	unsigned n = 0;
	for (unsigned i = 0; i < m->nhdr; i++)
		n += m->hdr[i].kind == SA_H_AUTHORIZATION || m->hdr[i].kind == SA_H_PROXY_AUTHORIZATION;
	if (n == 0)
		return true;
	if (!(m->creds = arena_alloc(m, n * sizeof(*m->creds))))
		return false;
	memset(m->creds, 0, n * sizeof(*m->creds));
	for (int pass = 0; pass < 2; pass++)
		for (unsigned i = 0; i < m->nhdr; i++) {
			const struct sa_hdr *h = &m->hdr[i];
			if (h->kind != (pass ? SA_H_PROXY_AUTHORIZATION : SA_H_AUTHORIZATION))
				continue;
			struct sa_cred *c = &m->creds[m->ncreds++];
			c->proxy = pass == 1;
			if (!raw_cred(m, h, c))
				return false;
		}
	return true;
}

static bool raw_start_line(struct sa_msg *m, struct draft *d)
{
	const char *l = m->buf, *end = l + m->start_line_len;
	for (const char *p = l; p < end; p++)
		if ((unsigned char)*p < 0x20 && *p != '\t')
			return false;   /* a control character (a bare CR): libosip2 judges */
	if (m->start_line_len >= 12 && memcmp(l, "SIP/2.0 ", 8) == 0) {
		if (l[11] != ' ' || !isdigit((unsigned char)l[8]) || !isdigit((unsigned char)l[9]) ||
		    !isdigit((unsigned char)l[10]))
			return false;
		m->request = false;
		m->status = (l[8] - '0') * 100 + (l[9] - '0') * 10 + (l[10] - '0');
		return true;
	}
	const char *sp1 = memchr(l, ' ', m->start_line_len);
	const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(end - sp1 - 1)) : NULL;
	if (!sp2 || sp1 == l || end - sp2 - 1 != 7 || memcmp(sp2 + 1, "SIP/2.0", 7) != 0)
		return false;
	for (const char *p = l; p < sp1; p++)
		if (!is_token_char(*p))
			return false;
	m->request = true;
	d->version = "SIP/2.0";
	if (!(m->method_name = view_str(m, l, (size_t)(sp1 - l))) || !raw_uri(m, sp1 + 1, sp2, &m->ruri))
		return false;
	d->ruri_headers = m->ruri.headers;
	return true;
}

/* A folded line of blanks only inside a header: libosip2 refuses some of
 * those ("From: x CRLF SP CRLF SP ;tag=1"), so it judges them all. */
static bool blank_fold(const struct sa_hdr *h)
{
	if (!h->folded)
		return false;
	const char *p = h->line, *end = h->line + h->len;
	while ((p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
		const char *q = ++p;
		while (q < end && (*q == ' ' || *q == '\t'))
			q++;
		if (q == end || *q == '\r' || *q == '\n')
			return true;
	}
	return false;
}

/* callid = word [ "@" word ] (RFC 3261 §25.1): libosip2 refuses "@x",
 * "x@" and a second '@', so those it judges. The value itself is read
 * from the line by both parsers (fill_line_fields). */
static bool raw_call_id(const struct sa_msg *m)
{
	const struct sa_hdr *h = sa_msg_header(m, SA_H_CALL_ID, 0);
	if (!h)
		return true;   /* validate_view refuses it */
	const char *v = h->value, *e = h->value + h->vlen, *at = memchr(v, '@', h->vlen);
	for (const char *p = v; p < e; p++)
		if ((unsigned char)*p <= 0x20)
			return false;
	return !at || (at > v && at + 1 < e && !memchr(at + 1, '@', (size_t)(e - at - 1)));
}

/* The whole view from the raw lines; false declines. */
static bool fill_raw(struct sa_msg *m, struct draft *d)
{
	/* a quoted NUL (header_nuls said so) in a line we read: libosip2 reads
	 * a blanked copy of it */
	if (d->nuls && memchr(m->buf, '\0', m->start_line_len))
		return false;
	for (unsigned i = 0; d->nuls && i < m->nhdr; i++)
		if (osip_wanted(m->hdr[i].kind) && memchr(m->hdr[i].line, '\0', m->hdr[i].len))
			return false;
	for (unsigned i = 0; i < m->nhdr; i++)
		if (osip_wanted(m->hdr[i].kind) && blank_fold(&m->hdr[i]))
			return false;
	return raw_start_line(m, d) && raw_call_id(m) && raw_vias(m, d) && raw_cseq(m, d) &&
	       raw_single_addr(m, SA_H_FROM, &m->from) && raw_single_addr(m, SA_H_TO, &m->to) &&
	       !sa_msg_header(m, SA_H_CALL_ID, 1) &&
	       raw_addr_list(m, SA_H_CONTACT, &m->contacts, &m->ncontacts) &&
	       raw_addr_list(m, SA_H_ROUTE, &m->routes, &m->nroutes) &&
	       raw_addr_list(m, SA_H_RECORD_ROUTE, &m->record_routes, &m->nrecord_routes) && raw_creds(m);
}

/* ---- the libosip2 parser: the same view from osip's structures ---- */

static const char *osip_copy(struct sa_msg *m, const char *s, bool *oom)
{
	if (!s)
		return NULL;
	const char *c = view_str(m, s, strlen(s));
	*oom |= !c;
	return c;
}

/* The first generic parameter of a name, any case, NULL when absent;
 * *present tells a valueless one from an absent one. */
static const char *osip_param(const osip_list_t *l, const char *name, bool *present)
{
	for (int i = 0; i < osip_list_size(l); i++) {
		const osip_generic_param_t *gp = osip_list_get(l, i);
		if (gp && gp->gname && strcasecmp(gp->gname, name) == 0) {
			if (present)
				*present = true;
			return gp->gvalue;
		}
	}
	if (present)
		*present = false;
	return NULL;
}

/* An osip URI into the view's form; text is the URI as written. -1 when
 * its port is not one. */
static int osip_uri_view(struct sa_msg *m, const osip_uri_t *o, const char *text, size_t tlen, struct sa_uri *u)
{
	bool oom = false, present;
	memset(u, 0, sizeof(*u));
	if (!o || !o->scheme)
		return -1;
	u->scheme = osip_copy(m, o->scheme, &oom);
	u->text = view_str(m, text, tlen);
	if (!u->text || oom)
		return -1;
	if (!is_sip_scheme(o->scheme, strlen(o->scheme)))
		return 0;
	u->user = o->username && o->username[0] ? osip_copy(m, o->username, &oom) : NULL;
	u->password = osip_copy(m, o->password, &oom);
	u->host = osip_copy(m, o->host, &oom);
	if (o->port && (u->port = port_value(o->port, strlen(o->port))) < 0)
		return -1;
	u->transport = osip_copy(m, osip_param(&o->url_params, "transport", NULL), &oom);
	u->maddr = osip_copy(m, osip_param(&o->url_params, "maddr", NULL), &oom);
	osip_param(&o->url_params, "lr", &present);
	u->lr = present;
	u->headers = osip_list_size(&o->url_headers) > 0;
	return oom || !u->host ? -1 : 0;
}

/* The URI's text inside a value as written: between <>, else up to ';'. */
static void uri_text(const char *s, const char *e, const char **us, const char **ue)
{
	const char *p = s;
	if (*p == '"')
		p = skip_quoted(p, e);
	const char *lt = p ? memchr(p, '<', (size_t)(e - p)) : NULL;
	const char *gt = lt ? memchr(lt, '>', (size_t)(e - lt)) : NULL;
	if (gt) {
		*us = lt + 1;
		*ue = gt;
		return;
	}
	const char *semi = memchr(s, ';', (size_t)(e - s));
	*us = s;
	*ue = semi ? semi : e;
	trim(us, ue);
}

/* One From/To/Contact/Route/Record-Route value (osip_from_t and its
 * likes share the layout: displayname, url, gen_params). */
static int osip_addr_view(struct sa_msg *m, const osip_from_t *o, const char *s, const char *e, struct sa_addr *a)
{
	bool oom = false, present;
	const char *us, *ue;
	memset(a, 0, sizeof(*a));
	a->expires = -1;
	if (!o || !(a->text = view_str(m, s, (size_t)(e - s))))
		return -1;
	uri_text(s, e, &us, &ue);
	if (osip_uri_view(m, o->url, us, (size_t)(ue - us), &a->uri) < 0)
		return -1;
	const char *v = osip_param(&o->gen_params, "tag", &present);
	if (present)
		a->tag = v ? osip_copy(m, v, &oom) : "";
	v = osip_param(&o->gen_params, "expires", &present);
	if (present)
		a->expires = expires_value(v);
	v = osip_param(&o->gen_params, "q", &present);
	if (present)
		a->q = v ? osip_copy(m, v, &oom) : "";
	v = osip_param(&o->gen_params, "+sip.instance", &present);
	if (present)
		a->instance = v ? osip_copy(m, v, &oom) : "";
	return oom ? -1 : 0;
}

static int osip_single_addr(struct sa_msg *m, enum sa_hdr_kind kind, const osip_from_t *o, struct sa_addr *a)
{
	const char *s, *e;
	if (!o)
		return 0;   /* missing: validate_view says so */
	if (split_values(m, kind, &s, &e, 1) != 1)
		return -1;
	return osip_addr_view(m, o, s, e, a);
}

/* A list header: osip's values paired with the texts split from the lines. */
static int osip_addr_list(struct sa_msg *m, enum sa_hdr_kind kind, const osip_list_t *ol, struct sa_addr **list,
                          unsigned *count)
{
	const char *sv[SPLIT_MAX], *ev[SPLIT_MAX], **s = sv, **e = ev;
	unsigned n = split_values(m, kind, s, e, SPLIT_MAX);
	*count = 0;
	if ((int)n != osip_list_size(ol))
		return -1;
	if (n == 0)
		return 0;
	if (n > SPLIT_MAX && !(s = split_all(m, kind, n, &e)))
		return -1;
	struct sa_addr *l = arena_alloc(m, n * sizeof(*l));
	if (!l)
		return -1;
	for (unsigned i = 0; i < n; i++) {
		const osip_from_t *o = osip_list_get(ol, (int)i);
		if (kind == SA_H_CONTACT && o && !o->url && o->displayname && strcmp(o->displayname, "*") == 0) {
			m->contact_star = true;
			continue;
		}
		if (osip_addr_view(m, o, s[i], e[i], &l[*count]) < 0)
			return -1;
		(*count)++;
	}
	*list = l;
	return 0;
}

static int osip_creds(struct sa_msg *m, const osip_message_t *o)
{
	const osip_list_t *lists[2] = { &o->authorizations, &o->proxy_authorizations };
	unsigned n = (unsigned)(osip_list_size(lists[0]) + osip_list_size(lists[1]));
	bool oom = false;
	/* one credential per line, as the raw parser reads them and lib/proxy
	 * strips them: a line libosip2 dropped would shift the others */
	unsigned lines[2] = { 0, 0 };
	for (unsigned i = 0; i < m->nhdr; i++) {
		lines[0] += m->hdr[i].kind == SA_H_AUTHORIZATION;
		lines[1] += m->hdr[i].kind == SA_H_PROXY_AUTHORIZATION;
	}
	if (lines[0] != (unsigned)osip_list_size(lists[0]) || lines[1] != (unsigned)osip_list_size(lists[1]))
		return -1;
	if (n == 0)
		return 0;
	if (!(m->creds = arena_alloc(m, n * sizeof(*m->creds))))
		return -1;
	memset(m->creds, 0, n * sizeof(*m->creds));
	for (int pass = 0; pass < 2; pass++)
		for (int i = 0; i < osip_list_size(lists[pass]); i++) {
			const osip_authorization_t *az = osip_list_get(lists[pass], i);
			struct sa_cred *c = &m->creds[m->ncreds++];
			c->proxy = pass == 1;
			if (!az)
				return -1;
			c->scheme = osip_copy(m, az->auth_type, &oom);
			const char *const from[] = { az->username, az->realm, az->nonce, az->uri, az->response,
			                             az->algorithm, az->cnonce, az->opaque, az->message_qop,
			                             az->nonce_count };
			const char **to[] = { &c->username, &c->realm, &c->nonce, &c->uri, &c->response,
			                      &c->algorithm, &c->cnonce, &c->opaque, &c->qop, &c->nc };
			for (size_t k = 0; k < sizeof(to) / sizeof(to[0]); k++)
				if (from[k] && !(*to[k] = unquoted(m, from[k])))
					oom = true;
		}
	return oom ? -1 : 0;
}

static int osip_top_via(struct sa_msg *m, const osip_message_t *o, struct draft *d)
{
	bool oom = false;
	osip_via_t *via = osip_list_get(&o->vias, 0);
	m->nvias = (unsigned)osip_list_size(&o->vias);
	if (!via)
		return 0;   /* validate_view refuses it */
	m->via_transport = osip_copy(m, via->protocol, &oom);
	m->via_host = osip_copy(m, via->host, &oom);
	d->via_port = osip_copy(m, via->port, &oom);
	m->branch = osip_copy(m, osip_param(&via->via_params, "branch", NULL), &oom);
	m->via_received = osip_copy(m, osip_param(&via->via_params, "received", NULL), &oom);
	osip_param(&via->via_params, "rport", &m->via_rport);
	return oom ? -1 : 0;
}

/* The start line: the Request-URI's text is what stands between its spaces. */
static int osip_start_line(struct sa_msg *m, const osip_message_t *o, struct draft *d)
{
	bool oom = false;
	m->request = MSG_IS_REQUEST(o);
	if (!m->request) {
		m->status = o->status_code;
		return 0;
	}
	d->version = osip_copy(m, o->sip_version, &oom);
	m->method_name = osip_copy(m, o->sip_method, &oom);
	const char *sp1 = memchr(m->buf, ' ', m->start_line_len), *sp2 = m->buf + m->start_line_len;
	while (sp2 > m->buf && sp2[-1] != ' ')
		sp2--;
	if (oom || !sp1 || sp2 <= sp1 + 1 || !o->req_uri)
		return -1;
	if (osip_uri_view(m, o->req_uri, sp1 + 1, (size_t)(sp2 - 1 - (sp1 + 1)), &m->ruri) < 0)
		return -1;
	d->ruri_headers = m->ruri.headers;
	return 0;
}

static int fill_osip(struct sa_msg *m, struct draft *d, struct sa_msg_error *err)
{
	osip_message_t *o = NULL;
	if (osip_message_init(&o) != 0)
		return fail(err, 500, "out of memory");
	int rc = osip_parse(m, o, err);
	if (rc == 0) {
		rc = -1;
		if (osip_start_line(m, o, d) == 0 && osip_top_via(m, o, d) == 0 &&
		    osip_single_addr(m, SA_H_FROM, o->from, &m->from) == 0 &&
		    osip_single_addr(m, SA_H_TO, o->to, &m->to) == 0 &&
		    osip_addr_list(m, SA_H_CONTACT, &o->contacts, &m->contacts, &m->ncontacts) == 0 &&
		    osip_addr_list(m, SA_H_ROUTE, &o->routes, &m->routes, &m->nroutes) == 0 &&
		    osip_addr_list(m, SA_H_RECORD_ROUTE, &o->record_routes, &m->record_routes, &m->nrecord_routes) == 0 &&
		    osip_creds(m, o) == 0)
			rc = 0;
		if (o->cseq) {
			bool oom = false;
			d->cseq_num = osip_copy(m, o->cseq->number, &oom);
			m->cseq_method = osip_copy(m, o->cseq->method, &oom);
			rc = oom ? -1 : rc;
		}
		if (rc < 0)
			fail(err, 400, "unparseable");
	}
	osip_message_free(o);
	return rc;
}

/* ---- a response neither parser reads: relayed on its essentials ---- */

/* Status, Call-ID, CSeq, top Via branch and tags from the raw lines: what
 * relaying needs (the view is marked partial; its lists stay empty). */
static int fill_response_essentials(struct sa_msg *m, struct sa_msg_error *err)
{
	const struct sa_hdr *via = sa_msg_header(m, SA_H_VIA, 0), *cseq = sa_msg_header(m, SA_H_CSEQ, 0);
	const struct sa_hdr *from = sa_msg_header(m, SA_H_FROM, 0), *to = sa_msg_header(m, SA_H_TO, 0);
	const struct sa_hdr *cid = sa_msg_header(m, SA_H_CALL_ID, 0);
	enum { TOKEN_MAX = 128 };
	char *branch = arena_alloc(m, TOKEN_MAX), *from_tag = arena_alloc(m, TOKEN_MAX);
	char *to_tag = arena_alloc(m, TOKEN_MAX);

	m->request = false;
	m->partial = true;
	m->path = SA_PATH_ESSENTIAL;
	if (!branch || !from_tag || !to_tag)
		return fail(err, 500, "out of memory");
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
	if (n < 0 || ml == 0 || ml >= TOKEN_MAX)
		return fail(err, 400, "bad CSeq");
	m->cseq = (unsigned long)n;
	if (!(m->cseq_method = view_str(m, sp + 1, ml)))
		return fail(err, 500, "out of memory");
	m->method = sa_method_from_name(m->cseq_method);
	m->max_forwards = m->expires = -1;
	size_t vlen = sa_hdr_first_value_len(via->value, via->vlen);
	if (raw_param(via->value, via->value + vlen, "branch", branch, TOKEN_MAX))
		m->branch = branch;
	if (raw_tag(from, from_tag, TOKEN_MAX))
		m->from_tag = m->from.tag = from_tag;
	if (raw_tag(to, to_tag, TOKEN_MAX))
		m->to_tag = m->to.tag = to_tag;
	return 0;
}

/* ---- the view ---- */

/* Back to an empty view over the same lines (the arena is kept). */
static void reset_view(struct sa_msg *m)
{
	memset(&m->path, 0, offsetof(struct sa_msg, arena) - offsetof(struct sa_msg, path));
	m->mem_used = 0;
}

static int finish_view(struct sa_msg *m, const struct draft *d, struct sa_msg_error *err)
{
	if (fill_line_fields(m, err) < 0)
		return -1;
	return validate_view(m, d, err);
}

static int parse_view(struct sa_msg *m, enum sa_msg_path path, bool nuls, struct sa_msg_error *err)
{
	struct draft d = { .nuls = nuls };
	m->mem = m->inline_mem;   /* enough for the common message; more goes to the arena */
	m->mem_cap = sizeof(m->inline_mem);
	if (path != SA_PATH_OSIP) {
		if (fill_raw(m, &d)) {
			m->path = SA_PATH_RAW;
			return finish_view(m, &d, err);
		}
		if (path == SA_PATH_RAW)
			return fail(err, 0, "declined by the raw parser");
		reset_view(m);
		memset(&d, 0, sizeof(d));
		d.nuls = nuls;
	}
	m->path = SA_PATH_OSIP;
	if (fill_osip(m, &d, err) < 0)
		return -1;
	return finish_view(m, &d, err);
}

int sa_msg_parse_path(struct sa_msg *m, const char *buf, size_t len, bool stream, enum sa_msg_path path,
                      struct sa_msg_error *err)
{
	if (sa_msg_scan(m, buf, len, err) < 0)
		return -1;
	if (m->nhdr > SA_SIP_MAX_HEADERS - HDRS_ADDED_ON_FORWARD)
		return fail(err, 400, "too many headers");
	if (check_body(m, stream, err) < 0 || check_start_line(m, err) < 0)
		return -1;
	/* libosip2 reads header text as C strings: a NUL outside a quoted
	 * string is refused before either parser looks */
	int nuls = header_nuls(m->buf, (size_t)(m->body - m->buf));
	if (nuls < 0)
		return fail(err, 400, "NUL byte in a header");
	int rc = parse_view(m, path, nuls > 0, err);
	if (rc < 0 && path == SA_PATH_NONE && err->status != 500 && m->start_line_len > 8 &&
	    memcmp(buf, "SIP/2.0 ", 8) == 0) {
		/* a response is relayed as long as it can be matched, as before
		 * this view was complete: a 2xx with a Contact nobody can read
		 * still ends a transaction (it just sets no call up) */
		reset_view(m);
		return fill_response_essentials(m, err);
	}
	return rc;
}

int sa_msg_parse(struct sa_msg *m, const char *buf, size_t len, bool stream, struct sa_msg_error *err)
{
	return sa_msg_parse_path(m, buf, len, stream, SA_PATH_NONE, err);
}

void sa_msg_free(struct sa_msg *m)
{
	arena_free(m);
}

int sa_uri_parse(const char *s, size_t n, struct sa_uri *u, char *buf, size_t cap)
{
	/* the raw parser's URI reader over a view whose only memory is buf */
	struct sa_msg *m = malloc(sizeof(*m));   /* its index and inline memory stay unused */
	if (!m || ((uintptr_t)buf & 7)) {
		free(m);
		return -1;
	}
	memset(m, 0, offsetof(struct sa_msg, hdr));
	m->mem = buf;
	m->mem_cap = cap;
	const char *e = s + n;
	trim(&s, &e);
	bool ok = raw_uri(m, s, e, u) && !m->arena;   /* in buf, or not at all */
	arena_free(m);
	free(m);
	return ok ? 0 : -1;
}

/* ---- comparing two views (tests and fuzzers hold the parsers to each other) ---- */

static bool same_text(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

#define STR(f) do { if (!same_text(a->f, b->f)) return #f; } while (0)
#define NUM(f) do { if (a->f != b->f) return #f; } while (0)

static const char *uri_diff(const struct sa_uri *a, const struct sa_uri *b)
{
	STR(scheme); STR(user); STR(password); STR(host); NUM(port);
	STR(transport); STR(maddr); NUM(lr); NUM(headers); STR(text);
	return NULL;
}

static const char *addr_diff(const struct sa_addr *a, const struct sa_addr *b)
{
	static __thread char what[32];
	STR(text); STR(tag); STR(q); STR(instance); NUM(expires);
	const char *d = uri_diff(&a->uri, &b->uri);
	return d ? (snprintf(what, sizeof(what), "uri.%s", d), what) : NULL;
}

static const char *cred_diff(const struct sa_cred *a, const struct sa_cred *b)
{
	NUM(proxy); STR(scheme); STR(username); STR(realm); STR(nonce); STR(uri); STR(response);
	STR(algorithm); STR(cnonce); STR(opaque); STR(qop); STR(nc);
	return NULL;
}

const char *sa_msg_view_diff(const struct sa_msg *a, const struct sa_msg *b)
{
	static __thread char what[64];
	const char *d;
	NUM(partial); NUM(request); NUM(method); STR(method_name); NUM(status);
	STR(ruri_scheme); STR(ruri_host); STR(ruri_user);
	if (a->request && (d = uri_diff(&a->ruri, &b->ruri)))
		return snprintf(what, sizeof(what), "ruri.%s", d), what;
	STR(call_id); NUM(cseq); STR(cseq_method); STR(from_tag); STR(to_tag);
	if ((d = addr_diff(&a->from, &b->from)))
		return snprintf(what, sizeof(what), "from.%s", d), what;
	if ((d = addr_diff(&a->to, &b->to)))
		return snprintf(what, sizeof(what), "to.%s", d), what;
	STR(branch); STR(via_host); NUM(via_port); STR(via_transport); NUM(via_rport); STR(via_received);
	NUM(nvias); NUM(max_forwards); NUM(expires); STR(content_type);
	NUM(body_len); NUM(contact_star);
	NUM(ncontacts); NUM(nroutes); NUM(nrecord_routes); NUM(ncreds);
	for (unsigned i = 0; i < a->ncontacts; i++)
		if ((d = addr_diff(&a->contacts[i], &b->contacts[i])))
			return snprintf(what, sizeof(what), "contacts[%u].%s", i, d), what;
	for (unsigned i = 0; i < a->nroutes; i++)
		if ((d = addr_diff(&a->routes[i], &b->routes[i])))
			return snprintf(what, sizeof(what), "routes[%u].%s", i, d), what;
	for (unsigned i = 0; i < a->nrecord_routes; i++)
		if ((d = addr_diff(&a->record_routes[i], &b->record_routes[i])))
			return snprintf(what, sizeof(what), "record_routes[%u].%s", i, d), what;
	for (unsigned i = 0; i < a->ncreds; i++)
		if ((d = cred_diff(&a->creds[i], &b->creds[i])))
			return snprintf(what, sizeof(what), "creds[%u].%s", i, d), what;
	return NULL;
}

#undef STR
#undef NUM

/* Eight bytes a step (FNV-1a took one: some 60 dependent multiplies per
 * key), then murmur3's finaliser so that the low bits the mask keeps depend
 * on every byte. Unkeyed, as FNV was: the branch index holds our own random
 * branches; server keys and Call-IDs are the sender's. */
/* Keyed (SipHash-2-4 under a key drawn once per process): what it hashes
 * comes from the network (branches, Call-IDs), and with an unkeyed hash a
 * sender could choose keys that pile into one run of the open-addressed
 * tables, making every lookup there a walk (hash flooding). */
static struct sa_siphash_key str_hash_key;
static pthread_once_t str_hash_once = PTHREAD_ONCE_INIT;

/* A failing RAND_bytes leaves the key zero: the daemon cannot get that far
 * (its nonce secret and branch randomness come from RAND_bytes at start). */
static void str_hash_key_draw(void)
{
	unsigned char key[SA_SIPHASH_KEY_LEN] = { 0 };

	if (RAND_bytes(key, sizeof(key)) != 1)
		memset(key, 0, sizeof(key));
	sa_siphash_key(&str_hash_key, key);
	OPENSSL_cleanse(key, sizeof(key));
}

uint64_t sa_str_hash(const char *s)
{
	pthread_once(&str_hash_once, str_hash_key_draw);
	return sa_siphash24(&str_hash_key, s, strlen(s));
}

void sa_str_copy(char *dst, size_t size, const char *src)
{
	if (size == 0)
		return;
	size_t n = strnlen(src, size - 1);
	memcpy(dst, src, n);
	dst[n] = '\0';
}

void sa_buf_putu(struct sa_buf *b, unsigned long v)
{
	char d[24];
	size_t n = sizeof(d);
	do
		d[--n] = (char)('0' + v % 10);
	while ((v /= 10) != 0);
	sa_buf_put(b, d + n, sizeof(d) - n);
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
	const char *comma = memchr(v, ',', vlen);
	if (!comma)
		return vlen;   /* the common case, found at memchr's speed */
	/* the bytes before the first comma decide nothing when none of them
	 * opens a quote or an angle bracket: that comma ends the value (a
	 * Via header of several values, as a response carries them) */
	if (cc_span(v, comma, CC_VPLAIN) == comma)
		return (size_t)(comma - v);
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

/* Is the parameter segment ";name[=value]" (seg[0] the ';', blanks allowed
 * around the ';' and the '=': SEMI and EQUAL are SWS-padded, RFC 3261 §25.1)
 * the parameter `name`? */
static bool via_param_is(const char *seg, size_t slen, const char *name)
{
	size_t k = 1, nlen = strlen(name);
	while (k < slen && (seg[k] == ' ' || seg[k] == '\t'))
		k++;
	if (slen - k < nlen || !ascii_ieq(seg + k, name, nlen))
		return false;
	for (k += nlen; k < slen && (seg[k] == ' ' || seg[k] == '\t'); k++)
		;
	return k == slen || seg[k] == '=';
}

/* Copy a Via value, dropping any received/rport params we are about to set;
 * true when it had rport (read here too: a message whose parse stopped
 * before its Via, answered 400 or 416, has no via_rport). */
static bool put_via_params_filtered(struct sa_buf *b, const char *v, size_t n)
{
	size_t i = 0;
	bool rport = false;
	while (i < n) {
		size_t j = i + 1;
		while (j < n && v[j] != ';')
			j++;
		const char *seg = v + i;
		size_t slen = j - i;
		bool is_rport = i > 0 && via_param_is(seg, slen, "rport");
		rport |= is_rport;
		if (!is_rport && !(i > 0 && via_param_is(seg, slen, "received")))
			sa_buf_put(b, seg, slen);
		i = j;
	}
	return rport;
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
	bool rport = put_via_params_filtered(b, h->value, n);
	sa_buf_puts(b, ";received=");
	sa_buf_puts(b, peer->addr);
	if (rport || m->via_rport) {
		sa_buf_puts(b, ";rport=");
		sa_buf_putu(b, peer->port);
	}
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

	sa_buf_puts(&b, "SIP/2.0 ");
	sa_buf_putu(&b, (unsigned long)status);
	sa_buf_puts(&b, " ");
	sa_buf_puts(&b, reason ? reason : sa_status_reason(status));
	sa_buf_puts(&b, "\r\n");
	put_vias(&b, m, peer);
	put_header(&b, m, SA_H_FROM, "From: ");
	const struct sa_hdr *to = sa_msg_header(m, SA_H_TO, 0);
	if (to) {
		sa_buf_puts(&b, "To: ");
		sa_buf_put(&b, to->value, to->vlen);
		if (!m->to_tag && to_tag && status > 100) {
			sa_buf_puts(&b, ";tag=");
			sa_buf_puts(&b, to_tag);
		}
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
	/* SipHash-2-4 (a keyed 64-bit PRF) over Call-ID, From tag and CSeq
	 * number, keyed with the first 128 bits of the key: unguessable
	 * (RFC 3261 §19.3), yet the same for retransmissions and for the ACK
	 * of a non-2xx even when a sloppy client gives that ACK a branch of
	 * its own. Every transaction and every answer of ours makes one: a
	 * tenth of SHA-256's cost, and no snprintf. */
	static const char hex[] = "0123456789abcdef";
	char cseq[24];
	struct sa_siphash c;
	int n = (int)sizeof(cseq);
	unsigned long v = m->cseq;
	do
		cseq[--n] = (char)('0' + v % 10);
	while ((v /= 10) && n > 1);
	cseq[--n] = '|';
	sa_siphash_init(&c, key);
	if (m->call_id)
		sa_siphash_update(&c, m->call_id, strlen(m->call_id));
	sa_siphash_update(&c, "|", 1);
	if (m->from_tag)
		sa_siphash_update(&c, m->from_tag, strlen(m->from_tag));
	sa_siphash_update(&c, cseq + n, sizeof(cseq) - (size_t)n);
	uint64_t h = sa_siphash_final(&c);
	for (int i = 15; i >= 0; i--, h >>= 4)
		out[i] = hex[h & 15];
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

/* A header line named `name` (long form) or `compact`, any case: the value after its colon. */
static const char *peek_header(const char *line, const char *end, const char *name, char compact)
{
	size_t n = strlen(name);
	const char *p = line;
	if ((size_t)(end - p) > n && ascii_ieq(p, name, n))
		p += n;
	else if (end - p > 1 && tolower((unsigned char)*p) == compact)
		p++;
	else
		return NULL;
	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	return p < end && *p == ':' ? p + 1 : NULL;
}

const char *sa_msg_peek_response_branch(const char *buf, size_t len, size_t *blen)
{
	const char *end = buf + len, *line;
	if (len < 12 || memcmp(buf, "SIP/2.0 ", 8) != 0)
		return NULL;
	for (line = buf;;) {
		const char *eol = memchr(line, '\n', (size_t)(end - line));
		if (!eol)
			return NULL;
		line = eol + 1;
		if (line >= end || *line == '\r' || *line == '\n')
			return NULL;   /* the headers end without a Via */
		eol = memchr(line, '\n', (size_t)(end - line));
		const char *lend = eol ? eol : end, *v = peek_header(line, lend, "via", 'v');
		if (!v)
			continue;
		/* the first value only: up to a comma outside quotes (a quote: leave it to the parser) */
		const char *stop = v;
		while (stop < lend && *stop != ',' && *stop != '"')
			stop++;
		if (stop < lend && *stop == '"')
			return NULL;
		for (const char *p = v; p + 8 <= stop; p++) {
			if (*p != ';' || !ascii_ieq(p + 1, "branch=", 7))
				continue;
			const char *b = p + 8, *q = b;
			while (q < stop && *q != ';' && *q != ' ' && *q != '\t' && *q != '\r')
				q++;
			if (q == b)
				return NULL;
			*blen = (size_t)(q - b);
			return b;
		}
		return NULL;
	}
}
