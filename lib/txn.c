/* txn.c: client transaction timer outcomes, random branches, what a transaction remembers of its request, and the per-source/per-credential transaction budget. */
#include "txn.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Branches take their randomness from a pool of each thread's, filled by
 * one RAND_bytes per 32 branches: a RAND_bytes costs a DRBG generate (a
 * cipher set up per call) and a getpid() system call (OpenSSL's fork
 * check), more than the rest of setting a transaction up. The daemon
 * never forks once it runs; bytes handed out are wiped from the pool. */
#define BRANCH_RANDOM 16
#define BRANCH_POOL (32 * BRANCH_RANDOM)

static _Thread_local struct {
	unsigned char bytes[BRANCH_POOL];
	size_t left;
} branch_pool;

static int branch_random(unsigned char out[BRANCH_RANDOM])
{
	if (branch_pool.left < BRANCH_RANDOM) {
		if (RAND_bytes(branch_pool.bytes, sizeof(branch_pool.bytes)) != 1)
			return -1;
		branch_pool.left = sizeof(branch_pool.bytes);
	}
	branch_pool.left -= BRANCH_RANDOM;
	memcpy(out, branch_pool.bytes + branch_pool.left, BRANCH_RANDOM);
	OPENSSL_cleanse(branch_pool.bytes + branch_pool.left, BRANCH_RANDOM);
	return 0;
}

int sa_txn_branch_new(char out[SA_TXN_BRANCH_LEN + 1])
{
	unsigned char r[BRANCH_RANDOM + 1];   /* 128 bits used, one byte of slack for the 6-bit groups */
	if (branch_random(r) < 0)
		return -1;
	r[BRANCH_RANDOM] = 0;
	memcpy(out, "z9hG4bK", 7);
	for (int i = 0; i < 22; i++) {
		int bit = i * 6, byte = bit / 8, shift = bit % 8;
		unsigned v = ((unsigned)r[byte] << 8 | r[byte + 1]) >> (10 - shift);
		out[7 + i] = b64url[v & 63];
	}
	out[SA_TXN_BRANCH_LEN] = '\0';
	return 0;
}

int sa_txn_branch_new_for(char out[SA_TXN_BRANCH_LEN + 1], unsigned worker)
{
	if (worker >= 64 || sa_txn_branch_new(out) < 0)
		return -1;
	out[7] = b64url[worker];   /* 122 random bits stay */
	return 0;
}

int sa_txn_branch_worker(const char *branch)
{
	if (!branch || strlen(branch) != SA_TXN_BRANCH_LEN || memcmp(branch, "z9hG4bK", 7) != 0)
		return -1;
	const char *p = memchr(b64url, branch[7], 64);
	return p ? (int)(p - b64url) : -1;
}

unsigned sa_txn_client_timer(enum sa_method method, bool reliable, uint64_t elapsed_ms, int upstream_status,
                             unsigned *interval_ms, unsigned *next_ms)
{
	const uint64_t timeout = 64 * SA_TXN_T1_MS;   /* Timer B and F */
	bool invite = method == SA_M_INVITE;

	*next_ms = 0;
	if (invite && upstream_status >= 100)
		return SA_TXN_ACT_NONE;   /* Proceeding: the INVITE may ring until Timer C */
	if (elapsed_ms >= timeout)
		return invite ? SA_TXN_ACT_ANSWER_408 | SA_TXN_ACT_COMPLETE : SA_TXN_ACT_COMPLETE;
	unsigned left = (unsigned)(timeout - elapsed_ms);
	if (reliable) {
		*next_ms = left;
		return SA_TXN_ACT_NONE;
	}
	if (!invite && upstream_status >= 100)
		*interval_ms = SA_TXN_T2_MS;   /* §17.1.2.2: Proceeding retransmits every T2 */
	else if (invite)
		*interval_ms *= 2;             /* Timer A doubles without bound */
	else
		*interval_ms = *interval_ms * 2 > SA_TXN_T2_MS ? SA_TXN_T2_MS : *interval_ms * 2;
	*next_ms = *interval_ms < left ? *interval_ms : left;
	return SA_TXN_ACT_RETRANSMIT;
}

unsigned sa_txn_timer_c(int upstream_status)
{
	unsigned act = SA_TXN_ACT_ANSWER_408 | SA_TXN_ACT_COMPLETE;
	return upstream_status >= 100 ? act | SA_TXN_ACT_CANCEL : act;
}

unsigned sa_txn_timer_g(uint64_t elapsed_ms, unsigned *interval_ms)
{
	const uint64_t timer_h = 64 * SA_TXN_T1_MS;
	if (elapsed_ms >= timer_h)
		return 0;
	*interval_ms = *interval_ms * 2 > SA_TXN_T2_MS ? SA_TXN_T2_MS : *interval_ms * 2;
	unsigned left = (unsigned)(timer_h - elapsed_ms);
	return *interval_ms < left ? *interval_ms : left;
}

/* ---- server transaction keys ---- */

/* Appends s (n bytes) at *at, leaving room for the NUL; false when cut. */
static bool key_put(char *out, size_t *at, const char *s, size_t n)
{
	size_t room = SA_TXN_KEY_MAX - 1 - *at;
	bool fits = n <= room;
	memcpy(out + *at, s, fits ? n : room);
	*at += fits ? n : room;
	return fits;
}

static char *key_make(const struct sa_msg *m, const char *method, char out[SA_TXN_KEY_MAX])
{
	char port[12];
	size_t at = 0, p = sizeof(port);
	unsigned v = m->via_port > 0 ? (unsigned)m->via_port : 0;
	do
		port[--p] = (char)('0' + v % 10);
	while ((v /= 10) && p > 0);
	const char *branch = m->branch ? m->branch : "(null)", *host = m->via_host ? m->via_host : "(null)";
	(void)(key_put(out, &at, branch, strlen(branch)) && key_put(out, &at, "|", 1) &&
	       key_put(out, &at, host, strlen(host)) && key_put(out, &at, ":", 1) &&
	       key_put(out, &at, port + p, sizeof(port) - p) && key_put(out, &at, "|", 1) &&
	       key_put(out, &at, method, strlen(method)));
	out[at] = '\0';
	return out;
}

char *sa_txn_server_key(const struct sa_msg *m, char out[SA_TXN_KEY_MAX])
{
	return key_make(m, m->method == SA_M_ACK ? "INVITE" : m->method_name ? m->method_name : "", out);
}

char *sa_txn_cancelled_key(const struct sa_msg *m, char out[SA_TXN_KEY_MAX])
{
	return key_make(m, "INVITE", out);
}

char *sa_txn_early_key(const char *call_id, const char *caller_tag, char out[SA_TXN_KEY_MAX])
{
	size_t at = 0;
	(void)(key_put(out, &at, call_id, strlen(call_id)) && key_put(out, &at, " ", 1) &&
	       key_put(out, &at, caller_tag, strlen(caller_tag)));
	out[at] = '\0';
	return out;
}

void sa_txn_tag_add(struct sa_txn_tags *e, const char *tag)
{
	if (sa_txn_tag_has(e, tag))
		return;
	e->h[e->n++ % SA_TXN_TAGS] = sa_str_hash(tag);
}

bool sa_txn_tag_has(const struct sa_txn_tags *e, const char *tag)
{
	uint64_t h = sa_str_hash(tag);
	for (unsigned i = 0; i < e->n && i < SA_TXN_TAGS; i++)
		if (e->h[i] == h)
			return true;
	return false;
}

/* ---- what a transaction remembers of its request ---- */

/* What forwarding may add to a request: our Via, two Record-Route values,
 * received and rport on the previous top Via, a Max-Forwards. */
#define FWD_ROOM 2048

/* The lines follow the bytes, aligned for their type. */
static size_t lines_at(size_t len)
{
	return (len + _Alignof(struct sa_txn_line) - 1) & ~(_Alignof(struct sa_txn_line) - 1);
}

/* The one allocation: the fields, the bytes, the lines. */
static size_t req_size(size_t len, size_t nlines)
{
	return sizeof(struct sa_txn_req) + lines_at(len) + nlines * sizeof(struct sa_txn_line);
}

/* Point bytes and lines into r's one allocation (after it moved). */
static void req_place(struct sa_txn_req *r)
{
	r->bytes = (const char *)(r + 1);
	r->lines = (struct sa_txn_line *)((char *)(r + 1) + lines_at(r->len));
}

static int line_of(const struct sa_fwd_line *w, struct sa_txn_line *out)
{
	if (w->off > UINT32_MAX || w->len > UINT16_MAX || w->voff > w->len)
		return -1;
	*out = (struct sa_txn_line){ .off = (uint32_t)w->off, .len = (uint16_t)w->len, .voff = (uint16_t)w->voff };
	return 0;
}

static int field_of(enum sa_hdr_kind kind)
{
	switch (kind) {
	case SA_H_FROM: return SA_TXN_F_FROM;
	case SA_H_TO: return SA_TXN_F_TO;
	case SA_H_CALL_ID: return SA_TXN_F_CALL_ID;
	case SA_H_CSEQ: return SA_TXN_F_CSEQ;
	case SA_H_CONTACT: return SA_TXN_F_CONTACT;
	default: return -1;
	}
}

/* Pick from what the writer noted the lines the transaction copies: ours,
 * the first of each field, the Vias below ours, then every Route. */
static int req_note(struct sa_txn_req *r, const struct sa_msg *m, const struct sa_fwd_layout *l, size_t len)
{
	memset(r, 0, sizeof(*r));
	r->len = len;
	req_place(r);
	r->fields = true;
	r->to_tag = m->to_tag != NULL;
	r->cseq = m->cseq;
	if (l->ruri_len > UINT32_MAX || l->ours_end > UINT32_MAX || l->nlines == 0 || l->line[0].kind != SA_H_VIA)
		return -1;
	r->ruri = (uint32_t)l->ruri;
	r->ruri_len = (uint32_t)l->ruri_len;
	r->ours = (uint32_t)l->ours;
	r->ours_end = (uint32_t)l->ours_end;
	if (line_of(&l->line[0], &r->via) < 0)
		return -1;
	for (unsigned i = 1; i < l->nlines; i++) {
		const struct sa_fwd_line *w = &l->line[i];
		int f = field_of(w->kind);
		if (w->kind == SA_H_VIA && line_of(w, &r->lines[r->nvias++]) < 0)
			return -1;
		if (f >= 0 && r->field[f].len == 0 && line_of(w, &r->field[f]) < 0)
			return -1;
	}
	for (unsigned i = 1; i < l->nlines; i++)
		if (l->line[i].kind == SA_H_ROUTE && line_of(&l->line[i], &r->lines[r->nvias + r->nroutes++]) < 0)
			return -1;
	r->size = req_size(len, (size_t)r->nvias + r->nroutes);
	return 0;
}

struct sa_txn_req *sa_txn_req_new(const struct sa_msg *m, const struct sa_fwd *f)
{
	struct sa_fwd_layout l;
	struct sa_fwd w = *f;
	size_t cap = m->len + FWD_ROOM;
	/* written in place, the room for lines after it, then cut to size */
	struct sa_txn_req *r = malloc(req_size(cap, SA_SIP_MAX_HEADERS));
	if (!r)
		return NULL;
	w.layout = &l;
	long n = sa_proxy_request(m, &w, (char *)(r + 1), cap);
	if (n < 0 || req_note(r, m, &l, (size_t)n) < 0) {
		free(r);
		return NULL;
	}
	struct sa_txn_req *cut = realloc(r, r->size);
	if (cut)
		r = cut;
	req_place(r);
	return r;
}

static void shift(struct sa_txn_line *l, uint32_t from, long delta)
{
	if (l->len > 0 && l->off >= from)
		l->off = (uint32_t)((long)l->off + delta);
}

struct sa_txn_req *sa_txn_req_retarget(const struct sa_txn_req *r, const char *ruri, const char *via,
                                       const char *const rr[2])
{
	char ours[1024];
	long k = r->fields ? sa_proxy_ours(via, rr, ours, sizeof(ours)) : -1;
	size_t via_len = 5 + strlen(via);   /* "Via: " and the value */
	size_t u0 = r->ruri, u1 = (size_t)r->ruri + r->ruri_len;
	size_t ulen = ruri ? strlen(ruri) : r->ruri_len;
	if (k < 0 || u1 > r->ours || ulen > UINT16_MAX)
		return NULL;
	const char *u = ruri ? ruri : r->bytes + u0;
	long du = (long)ulen - (long)r->ruri_len;
	size_t old = r->ours_end - r->ours, len = r->len - old - r->ruri_len + ulen + (size_t)k;
	size_t nlines = (size_t)r->nvias + r->nroutes;
	struct sa_txn_req *n = malloc(req_size(len, nlines));
	if (!n)
		return NULL;
	*n = *r;
	n->len = len;
	n->size = req_size(len, nlines);
	req_place(n);
	/* the request line up to the Request-URI, the URI, the rest of the line,
	 * ours, then every byte after ours */
	char *p = (char *)(n + 1);
	size_t at = (size_t)((long)r->ours + du);
	memcpy(p, r->bytes, u0);
	memcpy(p + u0, u, ulen);
	memcpy(p + u0 + ulen, r->bytes + u1, r->ours - u1);
	memcpy(p + at, ours, (size_t)k);
	memcpy(p + at + (size_t)k, r->bytes + r->ours_end, r->len - r->ours_end);
	long delta = du + k - (long)old;   /* of every line after ours */
	n->ruri_len = (uint32_t)ulen;
	n->ours = (uint32_t)at;
	n->ours_end = (uint32_t)(at + (size_t)k);
	n->via = (struct sa_txn_line){ .off = (uint32_t)at, .len = (uint16_t)via_len, .voff = 5 };
	for (int f = 0; f < SA_TXN_F_COUNT; f++)
		shift(&n->field[f], r->ours_end, delta);
	memcpy(n->lines, r->lines, nlines * sizeof(n->lines[0]));
	for (size_t i = 0; i < nlines; i++)
		shift(&n->lines[i], r->ours_end, delta);
	return n;
}

struct sa_txn_req *sa_txn_req_next_hop(const struct sa_txn_req *r, const char *via, const char *const rr[2])
{
	return sa_txn_req_retarget(r, NULL, via, rr);
}

struct sa_txn_req *sa_txn_req_raw(const char *buf, size_t len)
{
	struct sa_txn_req *r = malloc(req_size(len, 0));
	if (!r)
		return NULL;
	memset(r, 0, sizeof(*r));
	r->len = len;
	r->size = req_size(len, 0);
	req_place(r);
	memcpy(r + 1, buf, len);
	return r;
}

struct sa_txn_req *sa_txn_req_dup(const struct sa_txn_req *r)
{
	struct sa_txn_req *d = malloc(r->size);
	if (!d)
		return NULL;
	memcpy(d, r, r->size);
	req_place(d);
	return d;
}

void sa_txn_req_free(struct sa_txn_req *r)
{
	free(r);
}

size_t sa_txn_req_value(const struct sa_txn_req *r, enum sa_txn_field f, const char **v)
{
	const struct sa_txn_line *l = &r->field[f];
	*v = l->len ? r->bytes + l->off + l->voff : NULL;
	return l->len ? (size_t)(l->len - l->voff) : 0;
}

static void put_line(struct sa_buf *b, const struct sa_txn_req *r, const struct sa_txn_line *l)
{
	sa_buf_put(b, r->bytes + l->off, l->len);
	sa_buf_puts(b, "\r\n");
}

/* A line under a name of ours: "name: value". */
static void put_value(struct sa_buf *b, const char *name, const struct sa_txn_req *r, const struct sa_txn_line *l)
{
	sa_buf_puts(b, name);
	sa_buf_put(b, r->bytes + l->off + l->voff, (size_t)(l->len - l->voff));
	sa_buf_puts(b, "\r\n");
}

/* ACK and CANCEL share everything but the method and To (§17.1.1.3, §9.1). */
static long hop_request(const struct sa_txn_req *r, const char *method, const char *to, size_t to_len, char *out,
                        size_t cap)
{
	struct sa_buf b = { .p = out, .cap = cap };
	const struct sa_txn_line *f = r->field;
	if (!r->fields || !to || !f[SA_TXN_F_FROM].len || !f[SA_TXN_F_CALL_ID].len || !f[SA_TXN_F_CSEQ].len)
		return -1;
	const char *via = r->bytes + r->via.off + r->via.voff;
	sa_buf_printf(&b, "%s %.*s SIP/2.0\r\n", method, (int)r->ruri_len, r->bytes + r->ruri);
	sa_buf_puts(&b, "Via: ");
	sa_buf_put(&b, via, sa_hdr_first_value_len(via, (size_t)(r->via.len - r->via.voff)));
	sa_buf_puts(&b, "\r\nMax-Forwards: 70\r\n");
	put_line(&b, r, &f[SA_TXN_F_FROM]);
	sa_buf_put(&b, to, to_len);
	sa_buf_puts(&b, "\r\n");
	put_line(&b, r, &f[SA_TXN_F_CALL_ID]);
	sa_buf_printf(&b, "CSeq: %lu %s\r\n", r->cseq, method);
	for (unsigned i = 0; i < r->nroutes; i++)
		put_line(&b, r, &r->lines[r->nvias + i]);
	sa_buf_puts(&b, "Content-Length: 0\r\n\r\n");
	return b.overflow ? -1 : (long)b.len;
}

long sa_txn_cancel(const struct sa_txn_req *r, char *out, size_t cap)
{
	const struct sa_txn_line *to = &r->field[SA_TXN_F_TO];
	return hop_request(r, "CANCEL", to->len ? r->bytes + to->off : NULL, to->len, out, cap);
}

long sa_txn_ack(const struct sa_txn_req *r, const struct sa_msg *resp, char *out, size_t cap)
{
	const struct sa_hdr *to = sa_msg_header(resp, SA_H_TO, 0);
	return hop_request(r, "ACK", to ? to->line : NULL, to ? to->len : 0, out, cap);
}

long sa_txn_answer(const struct sa_txn_req *r, int status, const char *to_tag, char *out, size_t cap)
{
	struct sa_buf b = { .p = out, .cap = cap };
	const struct sa_txn_line *f = r->field;
	if (!r->fields || r->nvias == 0)
		return -1;   /* nobody below us to answer */
	sa_buf_printf(&b, "SIP/2.0 %d %s\r\n", status, sa_status_reason(status));
	for (unsigned i = 0; i < r->nvias; i++)
		put_value(&b, "Via: ", r, &r->lines[i]);
	if (f[SA_TXN_F_FROM].len)
		put_value(&b, "From: ", r, &f[SA_TXN_F_FROM]);
	if (f[SA_TXN_F_TO].len) {
		const struct sa_txn_line *to = &f[SA_TXN_F_TO];
		sa_buf_puts(&b, "To: ");
		sa_buf_put(&b, r->bytes + to->off + to->voff, (size_t)(to->len - to->voff));
		if (!r->to_tag && to_tag && status > 100)
			sa_buf_printf(&b, ";tag=%s", to_tag);
		sa_buf_puts(&b, "\r\n");
	}
	if (f[SA_TXN_F_CALL_ID].len)
		put_value(&b, "Call-ID: ", r, &f[SA_TXN_F_CALL_ID]);
	if (f[SA_TXN_F_CSEQ].len)
		put_value(&b, "CSeq: ", r, &f[SA_TXN_F_CSEQ]);
	sa_buf_puts(&b, "Content-Length: 0\r\n\r\n");
	return b.overflow ? -1 : (long)b.len;
}

/* ---- the index ---- */

#define INDEX_MIN_SLOTS 1024

/* A node and its key's hash, side by side: probes compare hashes in one
 * array and read a node (a cache miss, with some 100 000 transactions
 * lingering at 2000 calls/s) only when the whole hash matches. */
struct index_slot {
	uint64_t hash;
	struct sa_txn_node *n;    /* NULL: empty */
};

struct index_table {
	struct index_slot *s;
	bool branch;              /* keyed by the nodes' branch, else by their skey */
};

struct sa_txn_index {
	struct index_table by_skey, by_branch;
	size_t slots;             /* both tables: a power of two */
	size_t count;
};

static const char *node_key(const struct index_table *t, const struct sa_txn_node *n)
{
	return t->branch ? n->branch : n->skey;
}

struct sa_txn_index *sa_txn_index_new(void)
{
	struct sa_txn_index *x = calloc(1, sizeof(*x));
	if (!x)
		return NULL;
	x->slots = INDEX_MIN_SLOTS;
	x->by_skey.s = calloc(x->slots, sizeof(struct index_slot));
	x->by_branch.s = calloc(x->slots, sizeof(struct index_slot));
	x->by_branch.branch = true;
	if (!x->by_skey.s || !x->by_branch.s) {
		sa_txn_index_free(x);
		return NULL;
	}
	return x;
}

void sa_txn_index_free(struct sa_txn_index *x)
{
	if (!x)
		return;
	free(x->by_skey.s);
	free(x->by_branch.s);
	free(x);
}

static void table_put(struct index_slot *s, size_t mask, uint64_t h, struct sa_txn_node *n)
{
	size_t i = h & mask;
	while (s[i].n)
		i = (i + 1) & mask;
	s[i] = (struct index_slot){ h, n };
}

static struct sa_txn_node *table_find(const struct index_table *t, size_t mask, uint64_t h, const char *key)
{
	for (size_t i = h & mask; t->s[i].n; i = (i + 1) & mask)
		if (t->s[i].hash == h && strcmp(node_key(t, t->s[i].n), key) == 0)
			return t->s[i].n;
	return NULL;
}

/* Takes n out; false when it is not in. Linear probing's deletion: later
 * entries of the run move back over the hole unless their home lies
 * cyclically in (hole, entry]. */
static bool table_remove(struct index_table *t, size_t mask, uint64_t h, const struct sa_txn_node *n)
{
	size_t i = h & mask;
	while (t->s[i].n && t->s[i].n != n)
		i = (i + 1) & mask;
	if (!t->s[i].n)
		return false;
	for (size_t j = i;;) {
		j = (j + 1) & mask;
		if (!t->s[j].n)
			break;
		size_t home = t->s[j].hash & mask;
		if (i <= j ? (home <= i || home > j) : (home <= i && home > j)) {
			t->s[i] = t->s[j];
			i = j;
		}
	}
	t->s[i] = (struct index_slot){ 0, NULL };
	return true;
}

/* Twice the slots, every entry placed again by the hash it keeps (no node
 * read); on allocation failure the index stays as it is (fuller, still right). */
static void grow(struct sa_txn_index *x)
{
	size_t n = x->slots * 2;
	struct index_slot *s = calloc(n, sizeof(*s)), *b = calloc(n, sizeof(*b));
	if (!s || !b) {
		free(s);
		free(b);
		return;
	}
	for (size_t i = 0; i < x->slots; i++) {
		if (x->by_skey.s[i].n)
			table_put(s, n - 1, x->by_skey.s[i].hash, x->by_skey.s[i].n);
		if (x->by_branch.s[i].n)
			table_put(b, n - 1, x->by_branch.s[i].hash, x->by_branch.s[i].n);
	}
	free(x->by_skey.s);
	free(x->by_branch.s);
	x->by_skey.s = s;
	x->by_branch.s = b;
	x->slots = n;
}

int sa_txn_index_add(struct sa_txn_index *x, struct sa_txn_node *n)
{
	if (!n->skey || !n->branch)
		return -1;
	/* at most half full: a miss ends at the first empty slot, a few away */
	if (2 * (x->count + 1) > x->slots)
		grow(x);
	if (x->count + 1 >= x->slots)
		return -1;   /* could not grow and full but for the slot that ends every probe */
	n->skey_hash = sa_str_hash(n->skey);
	n->branch_hash = sa_str_hash(n->branch);
	table_put(x->by_skey.s, x->slots - 1, n->skey_hash, n);
	table_put(x->by_branch.s, x->slots - 1, n->branch_hash, n);
	x->count++;
	return 0;
}

void sa_txn_index_remove(struct sa_txn_index *x, struct sa_txn_node *n)
{
	if (!table_remove(&x->by_skey, x->slots - 1, n->skey_hash, n))
		return;   /* not indexed */
	table_remove(&x->by_branch, x->slots - 1, n->branch_hash, n);
	x->count--;
}

void sa_txn_index_branch_out(struct sa_txn_index *x, struct sa_txn_node *n)
{
	table_remove(&x->by_branch, x->slots - 1, n->branch_hash, n);
}

void sa_txn_index_branch_in(struct sa_txn_index *x, struct sa_txn_node *n)
{
	n->branch_hash = sa_str_hash(n->branch);
	table_put(x->by_branch.s, x->slots - 1, n->branch_hash, n);
}

struct sa_txn_node *sa_txn_index_by_skey(const struct sa_txn_index *x, const char *skey)
{
	return table_find(&x->by_skey, x->slots - 1, sa_str_hash(skey), skey);
}

struct sa_txn_node *sa_txn_index_by_branch(const struct sa_txn_index *x, const char *branch)
{
	return table_find(&x->by_branch, x->slots - 1, sa_str_hash(branch), branch);
}

size_t sa_txn_index_count(const struct sa_txn_index *x)
{
	return x->count;
}

void sa_txn_index_each(const struct sa_txn_index *x, void (*fn)(struct sa_txn_node *n, void *arg), void *arg)
{
	for (size_t i = 0; i < x->slots; i++)
		if (x->by_skey.s[i].n)
			fn(x->by_skey.s[i].n, arg);
}

void sa_txn_index_drain(struct sa_txn_index *x, void (*fn)(struct sa_txn_node *n, void *arg), void *arg)
{
	/* slots before i are empty: a removal only pulls later entries into i */
	for (size_t i = 0; i < x->slots; i++) {
		struct sa_txn_node *n;
		while ((n = x->by_skey.s[i].n)) {
			sa_txn_index_remove(x, n);
			fn(n, arg);
		}
	}
}

/* ---- states ---- */

enum sa_txn_state sa_txn_initial(enum sa_method method)
{
	return method == SA_M_INVITE ? SA_TXN_CALLING : SA_TXN_TRYING;
}

bool sa_txn_finished(enum sa_txn_state s)
{
	return s == SA_TXN_COMPLETED || s == SA_TXN_ACCEPTED || s == SA_TXN_CONFIRMED || s == SA_TXN_TERMINATED;
}

enum sa_txn_state sa_txn_on_ack(enum sa_txn_state s)
{
	return s == SA_TXN_COMPLETED ? SA_TXN_CONFIRMED : s;
}

enum sa_txn_state sa_txn_on_response(enum sa_txn_state s, enum sa_method method, int status)
{
	if (sa_txn_finished(s) || status < 100 || status > 699)
		return s;
	if (status < 200)
		return SA_TXN_PROCEEDING;
	if (method == SA_M_INVITE && status < 300)
		return SA_TXN_ACCEPTED;
	return SA_TXN_COMPLETED;
}

enum sa_txn_state sa_txn_on_timeout(enum sa_txn_state s)
{
	return sa_txn_finished(s) ? s : SA_TXN_COMPLETED;
}

unsigned sa_txn_linger_ms(enum sa_txn_state s, bool any_udp)
{
	if (s == SA_TXN_ACCEPTED)
		return SA_TXN_LINGER_2XX_MS;
	if (s == SA_TXN_TERMINATED)
		return 0;
	if (s == SA_TXN_CONFIRMED)
		return any_udp ? SA_TXN_T4_MS : SA_TXN_LINGER_STREAM_MS;
	return any_udp ? SA_TXN_LINGER_UDP_MS : SA_TXN_LINGER_STREAM_MS;
}

const char *sa_txn_state_name(enum sa_txn_state s)
{
	static const char *const names[SA_TXN_STATE_COUNT] = { "calling", "trying", "proceeding", "completed",
	                                                        "accepted", "confirmed", "terminated" };
	return s < SA_TXN_STATE_COUNT ? names[s] : "unknown";
}

/* ---- budget ---- */

/* One counted key: a 64-bit keyed fingerprint of "s" + address bytes or
 * "c" + credential id (0 = empty slot). The seed is random per table, so
 * nobody can aim two keys at one slot or fingerprint. */
struct slot {
	uint64_t fp;
	uint32_t count;
};

struct sa_txn_budget {
	size_t mask;
	struct slot *s;
	uint64_t seed;
	size_t used;     /* slots taken */
	size_t bytes;
};

struct sa_txn_budget *sa_txn_budget_new(size_t slots)
{
	struct sa_txn_budget *b = calloc(1, sizeof(*b));
	size_t n = 64;
	while (n < slots * 2)
		n *= 2;
	if (!b || !(b->s = calloc(n, sizeof(*b->s))) || RAND_bytes((unsigned char *)&b->seed, sizeof(b->seed)) != 1) {
		sa_txn_budget_free(b);
		return NULL;
	}
	b->mask = n - 1;
	return b;
}

void sa_txn_budget_free(struct sa_txn_budget *b)
{
	if (!b)
		return;
	free(b->s);
	free(b);
}

static uint64_t fingerprint(const struct sa_txn_budget *b, char kind, const void *key, size_t len)
{
	uint64_t h = (1469598103934665603ULL ^ b->seed) * 1099511628211ULL;
	h = (h ^ (unsigned char)kind) * 1099511628211ULL;
	for (size_t i = 0; i < len; i++)
		h = (h ^ ((const unsigned char *)key)[i]) * 1099511628211ULL;
	h ^= h >> 31;   /* splitmix64's finaliser spreads FNV's low bits */
	h *= 0x7fb5d329728ea185ULL;
	h ^= h >> 27;
	h *= 0x81dadef4bc2dd44dULL;
	h ^= h >> 33;
	return h ? h : 1;
}

static struct slot *lookup(const struct sa_txn_budget *b, uint64_t fp, bool *found)
{
	for (size_t i = fp & b->mask;; i = (i + 1) & b->mask) {
		if (b->s[i].fp == fp || b->s[i].fp == 0) {
			*found = b->s[i].fp == fp;
			return &b->s[i];
		}
	}
}

/* Linear probing's deletion: pull later entries of the run back over the hole. */
static void remove_slot(struct sa_txn_budget *b, struct slot *hole)
{
	size_t i = (size_t)(hole - b->s), j = i;
	for (;;) {
		j = (j + 1) & b->mask;
		if (b->s[j].fp == 0)
			break;
		size_t home = b->s[j].fp & b->mask;
		/* move j into i unless its home lies cyclically in (i, j] */
		if (i <= j ? (home <= i || home > j) : (home <= i && home > j)) {
			b->s[i] = b->s[j];
			i = j;
		}
	}
	b->s[i] = (struct slot){ 0 };
	b->used--;
}

static unsigned count_of(const struct sa_txn_budget *b, uint64_t fp)
{
	bool found;
	struct slot *s = lookup(b, fp, &found);
	return found ? s->count : 0;
}

static void charge(struct sa_txn_budget *b, uint64_t fp)
{
	bool found;
	struct slot *s = lookup(b, fp, &found);
	if (!found) {
		s->fp = fp;
		s->count = 0;
		b->used++;
	}
	s->count++;
}

static void discharge(struct sa_txn_budget *b, uint64_t fp)
{
	bool found;
	struct slot *s = lookup(b, fp, &found);
	if (found && --s->count == 0)
		remove_slot(b, s);
}

static bool has_cred(const char *cred_id)
{
	return cred_id && cred_id[0];
}

enum sa_txn_admit sa_txn_budget_admit(struct sa_txn_budget *b, const struct sa_txn_limits *lim,
                                      const void *src, size_t srclen, const char *cred_id)
{
	uint64_t fs = fingerprint(b, 's', src, srclen);
	uint64_t fc = has_cred(cred_id) ? fingerprint(b, 'c', cred_id, strlen(cred_id)) : 0;
	if (lim->per_source && count_of(b, fs) >= lim->per_source)
		return SA_TXN_SOURCE_FULL;
	if (fc && lim->per_credential && count_of(b, fc) >= lim->per_credential)
		return SA_TXN_CREDENTIAL_FULL;
	/* keep the table at most half full so that probes stay short; the
	 * caller sizes it for twice its transactions, so this is a safety net */
	if (b->used + 2 > (b->mask + 1) / 2)
		return SA_TXN_SOURCE_FULL;
	charge(b, fs);
	if (fc)
		charge(b, fc);
	return SA_TXN_ADMIT;
}

void sa_txn_budget_release(struct sa_txn_budget *b, const void *src, size_t srclen, const char *cred_id)
{
	discharge(b, fingerprint(b, 's', src, srclen));
	if (has_cred(cred_id))
		discharge(b, fingerprint(b, 'c', cred_id, strlen(cred_id)));
}

unsigned sa_txn_budget_count(const struct sa_txn_budget *b, const void *src, size_t srclen, const char *cred_id)
{
	return src ? count_of(b, fingerprint(b, 's', src, srclen))
	           : has_cred(cred_id) ? count_of(b, fingerprint(b, 'c', cred_id, strlen(cred_id))) : 0;
}

void sa_txn_budget_bytes(struct sa_txn_budget *b, long delta)
{
	if (delta < 0 && (size_t)-delta > b->bytes)
		b->bytes = 0;
	else
		b->bytes = (size_t)((long)b->bytes + delta);
}

bool sa_txn_budget_bytes_ok(const struct sa_txn_budget *b, const struct sa_txn_limits *lim, size_t more)
{
	return !lim->max_bytes || b->bytes + more <= lim->max_bytes;
}

size_t sa_txn_budget_bytes_used(const struct sa_txn_budget *b)
{
	return b->bytes;
}

const char *sa_txn_admit_reason(enum sa_txn_admit a)
{
	switch (a) {
	case SA_TXN_ADMIT:
		return "admitted";
	case SA_TXN_SOURCE_FULL:
		return "too many transactions from this source";
	case SA_TXN_CREDENTIAL_FULL:
		return "too many transactions for this credential";
	case SA_TXN_MEMORY_FULL:
		return "transaction memory full";
	}
	return "unknown";
}
