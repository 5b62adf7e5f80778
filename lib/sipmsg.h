/* sipmsg.h: SIP bytes -> one parse -> a validated view; raw-line edits and direct response writing. */
#ifndef SA_SIPMSG_H
#define SA_SIPMSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "sa_limits.h"

/* Header names we act on; everything else is carried through untouched. */
enum sa_hdr_kind {
	SA_H_OTHER = 0,
	SA_H_VIA, SA_H_FROM, SA_H_TO, SA_H_CALL_ID, SA_H_CSEQ, SA_H_MAX_FORWARDS,
	SA_H_CONTACT, SA_H_ROUTE, SA_H_RECORD_ROUTE, SA_H_AUTHORIZATION,
	SA_H_PROXY_AUTHORIZATION, SA_H_PROXY_REQUIRE, SA_H_CONTENT_LENGTH,
	SA_H_EXPIRES, SA_H_USER_AGENT, SA_H_WWW_AUTHENTICATE, SA_H_PROXY_AUTHENTICATE,
	SA_H_REQUIRE, SA_H_CONTENT_TYPE, SA_H_TIMESTAMP,
	SA_H_KINDS   /* how many kinds there are */
};

/* One logical header line (folding included) as it sits in the buffer. */
struct sa_hdr {
	enum sa_hdr_kind kind;
	bool folded;           /* the line goes on after a line break (LWS) */
	const char *line;      /* start of the line (the name) */
	size_t len;            /* up to, not including, CRLF */
	const char *value;     /* after "name:" and whitespace */
	size_t vlen;
};

enum sa_method {
	SA_M_OTHER = 0, SA_M_REGISTER, SA_M_INVITE, SA_M_ACK, SA_M_CANCEL, SA_M_BYE,
	SA_M_OPTIONS, SA_M_UPDATE, SA_M_PRACK, SA_M_INFO, SA_M_REFER, SA_M_NOTIFY,
	SA_M_SUBSCRIBE, SA_M_MESSAGE, SA_M_PUBLISH,
};

/* A method's name as logs and metrics write it ("other" for SA_M_OTHER). */
const char *sa_method_text(enum sa_method m);

/* A SIP or SIPS URI as the view gives it: escapes resolved in the user,
 * password and parameter values, IPv6 host without brackets. Other
 * schemes (tel:, http:, ...) keep only scheme and text. */
struct sa_uri {
	const char *scheme;     /* as written ("sip", "SIPS", "tel") */
	const char *user;       /* NULL when none */
	const char *password;   /* NULL when none */
	const char *host;       /* NULL for a URI of another scheme */
	int port;               /* 1..65535, 0 when absent */
	const char *transport;  /* uri-parameters, NULL when absent */
	const char *maddr;
	bool lr;
	bool headers;           /* "?hname=hvalue" present */
	const char *text;       /* the URI as written */
};

/* One value of From, To, Contact, Route or Record-Route. */
struct sa_addr {
	const char *text;       /* the value as written: display name, <URI>, parameters */
	struct sa_uri uri;
	const char *tag;        /* header parameters, NULL when absent */
	const char *q;
	const char *instance;   /* +sip.instance, quotes kept */
	long expires;           /* -1 when absent, -2 when not a number */
};

/* One Authorization (REGISTER) or Proxy-Authorization value. Parameter
 * values without their surrounding quotes; NULL when absent. */
struct sa_cred {
	bool proxy;             /* Proxy-Authorization */
	const char *scheme;     /* "Digest", as written */
	const char *username, *realm, *nonce, *uri, *response, *algorithm;
	const char *cnonce, *opaque, *qop, *nc;
};

/* Which parser filled the view: our own reader of the raw lines, or
 * libosip2 when that reader finds something it does not know. */
enum sa_msg_path { SA_PATH_NONE = 0, SA_PATH_RAW, SA_PATH_OSIP, SA_PATH_ESSENTIAL };

struct sa_arena;

/* The validated view of one message, complete whichever parser read it.
 * Strings are NUL-terminated, owned by the view (sa_msg_free). */
struct sa_msg {
	const char *buf;            /* the raw bytes, not owned */
	size_t len;
	const char *body;
	size_t body_len;
	enum sa_msg_path path;
	/* a response whose full parse failed: relayed on its essentials
	 * (status, top Via branch, tags, Call-ID, CSeq); lists left empty */
	bool partial;
	/* set by the daemon: rewritten from a strict-routed request (its
	 * Request-URI was our Record-Route, RFC 3261 §16.4) */
	bool strict_routed;
	bool request;
	enum sa_method method;      /* requests: the method; responses: the CSeq method */
	const char *method_name;    /* as received */
	int status;                 /* responses */
	struct sa_uri ruri;         /* requests */
	const char *ruri_scheme;    /* shorthands of ruri */
	const char *ruri_host;
	const char *ruri_user;
	const char *call_id;        /* the whole Call-ID, word@host (in call_id_buf) */
	unsigned long cseq;
	const char *cseq_method;
	struct sa_addr from, to;
	const char *from_tag;       /* from.tag, to.tag: NULL when absent */
	const char *to_tag;
	const char *branch;         /* top Via branch, NULL when absent */
	const char *via_host;       /* top Via sent-by */
	int via_port;               /* 0 when absent */
	const char *via_transport;  /* "UDP", "TCP", "TLS" */
	bool via_rport;             /* rport present in top Via */
	const char *via_received;   /* NULL when absent */
	unsigned nvias;             /* Via values in all */
	int max_forwards;           /* -1 when absent */
	long expires;               /* the Expires header: -1 when absent, -2 when not a number */
	const char *content_type;   /* NULL when absent */
	struct sa_addr *contacts;   /* in order; a "*" Contact is contact_star instead */
	unsigned ncontacts;
	bool contact_star;
	struct sa_addr *routes;
	unsigned nroutes;
	struct sa_addr *record_routes;
	unsigned nrecord_routes;
	struct sa_cred *creds;      /* Authorization values, then Proxy-Authorization values */
	unsigned ncreds;
	struct sa_arena *arena;     /* what does not fit mem */
	char *mem;                  /* the view's strings and lists: inline_mem, mostly */
	size_t mem_used, mem_cap;
	size_t start_line_len;      /* the first line, without CRLF */
	unsigned nhdr;
	uint8_t hdr_first[SA_H_KINDS];   /* index + 1 of each kind's first line, 0 when none */
	struct sa_hdr hdr[SA_SIP_MAX_HEADERS];   /* entries past nhdr are not cleared */
	char call_id_buf[SA_SIP_MAX_CALL_ID + 1];   /* nor is this: call_id says when it holds one */
	_Alignas(8) char inline_mem[2048];       /* nor is this */
};

/* Why a message was refused at the edge: the SIP status to answer with
 * (0 = not even answerable: drop) and a short reason for the one log line. */
struct sa_msg_error {
	int status;
	const char *reason;
};

/* Call once per process before any parsing (libosip2's tables). */
void sa_sipmsg_init(void);

/* TCP framing: length of the first complete message in buf, 0 when more
 * bytes are needed, -1 when the stream is unusable (no Content-Length
 * on a stream, a message over SA_SIP_MAX_MSG, garbage). Leading CRLF
 * keep-alives are reported in *skip and are not part of the length. */
long sa_sip_frame(const char *buf, size_t len, size_t *skip);

/* Parse and validate buf into the complete view. 0 on success, -1 with
 * err filled otherwise; in both cases release with sa_msg_free. After a
 * failure the raw header index may still be good enough for
 * sa_msg_response (m->nhdr > 0). stream: the message came on TCP/TLS, so
 * Content-Length is required. */
int sa_msg_parse(struct sa_msg *m, const char *buf, size_t len, bool stream, struct sa_msg_error *err);
/* The same with one parser only (tests compare the two): SA_PATH_RAW fails
 * with err->status 0 where the raw reader declines; SA_PATH_OSIP always
 * uses libosip2. */
int sa_msg_parse_path(struct sa_msg *m, const char *buf, size_t len, bool stream, enum sa_msg_path path,
                      struct sa_msg_error *err);
void sa_msg_free(struct sa_msg *m);
/* The first field in which two views differ ("contacts[1].uri.host"), NULL
 * when none does: for tests and fuzzers. */
const char *sa_msg_view_diff(const struct sa_msg *a, const struct sa_msg *b);
/* Only index the raw lines (no view): for messages we wrote ourselves.
 * Allocates nothing. */
int sa_msg_scan(struct sa_msg *m, const char *buf, size_t len, struct sa_msg_error *err);
/* A response's top Via branch, read without parsing it: for a worker to find
 * whose transaction an answer is before anyone parses it. Only the plain
 * form is read (the first Via header, ";branch=" with no spaces, up to ';',
 * ',', a space or the line's end); NULL for anything else, and the full
 * parse decides then. Not a validation: the owner parses the message. */
const char *sa_msg_peek_response_branch(const char *buf, size_t len, size_t *blen);
/* Length of the first comma-separated value of a header value, honouring
 * quoted strings and <...>. */
size_t sa_hdr_first_value_len(const char *v, size_t vlen);

/* Parse one URI (a digest uri, a stored contact) as the view does. The
 * strings live in buf (cap bytes); 0, or -1 when it is not a URI or does
 * not fit. */
int sa_uri_parse(const char *s, size_t n, struct sa_uri *u, char *buf, size_t cap);

/* The n-th header of a kind, or NULL. */
const struct sa_hdr *sa_msg_header(const struct sa_msg *m, enum sa_hdr_kind kind, unsigned n);
/* The method from its name. */
enum sa_method sa_method_from_name(const char *name);

/* A growing output buffer bounded by its capacity: writes past it set
 * overflow and are dropped, so callers check once at the end. */
struct sa_buf {
	char *p;
	size_t len, cap;
	bool overflow;
};
/* Inline: every message written goes through these some 15 times, mostly
 * with literals, whose length and copy the compiler then resolves. */
static inline void sa_buf_put(struct sa_buf *b, const void *s, size_t n)
{
	if (b->overflow || n > b->cap - b->len) {
		b->overflow = true;
		return;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
}
static inline void sa_buf_puts(struct sa_buf *b, const char *s)
{
	sa_buf_put(b, s, strlen(s));
}
/* v in decimal: what the hot writers use instead of sa_buf_printf's "%u" */
void sa_buf_putu(struct sa_buf *b, unsigned long v);
void sa_buf_printf(struct sa_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The hash of the tables keyed by what senders choose (transactions by key
 * and by branch, calls by Call-ID): keyed per process (SipHash-2-4), so no
 * sender can pick keys that collide; its low bits pick the slot; tests build
 * colliding keys with it. */
uint64_t sa_str_hash(const char *s);
/* snprintf(dst, size, "%s", src) without the format machinery (a tenth of
 * its cost): what fits of src, always terminated when size > 0. */
void sa_str_copy(char *dst, size_t size, const char *src);

/* Where a request came from, as responses must reflect it (RFC 3581). */
struct sa_peer {
	const char *addr;    /* numeric address */
	uint16_t port;
	const char *transport;  /* "udp" "tcp" "tls" */
};

/* Write the top Via value of m with received= and rport= filled in for
 * peer (RFC 3261 §18.2.1, RFC 3581 §4). */
void sa_msg_put_top_via(struct sa_buf *b, const struct sa_msg *m, const struct sa_peer *peer);

/* Write a complete response to request m: status line, Via (top one fixed
 * for peer), From, To (to_tag added when the request had none and tag is
 * not NULL), Call-ID, CSeq, then extra (CRLF-terminated header lines, may
 * be NULL), Content-Length: 0. Returns the length, or -1 when out is too small. */
long sa_msg_response(const struct sa_msg *m, const struct sa_peer *peer, int status,
                     const char *reason, const char *to_tag, const char *extra,
                     char *out, size_t cap);

/* The To tag for the responses we originate to m, keyed by a per-process
 * secret: the same for retransmissions, different for different
 * transactions, and unguessable without the key. */
#define SA_TAG_KEY_LEN 32
void sa_msg_local_tag(const struct sa_msg *m, const unsigned char key[SA_TAG_KEY_LEN], char out[17]);

/* The reason phrase for a status we send. */
const char *sa_status_reason(int status);

#endif
