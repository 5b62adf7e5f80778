/* txn.h: RFC 3261 §17 transaction rules the proxy applies: branches, timer outcomes, and what one sender may hold. */
#ifndef SA_TXN_H
#define SA_TXN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy.h"
#include "sipmsg.h"

#define SA_TXN_T1_MS 500
#define SA_TXN_T2_MS 4000
#define SA_TXN_BRANCH_LEN (7 + 22)     /* "z9hG4bK" + 128 random bits, base64url without padding */

/* A new branch for a request we send: the magic cookie and 128 random bits,
 * so nobody can answer, or cancel, a transaction before seeing it. 0 or -1. */
int sa_txn_branch_new(char out[SA_TXN_BRANCH_LEN + 1]);
/* The same, naming worker (0..63) in its first random character, so that an
 * answer reaching another worker finds the one that sent the request. */
int sa_txn_branch_new_for(char out[SA_TXN_BRANCH_LEN + 1], unsigned worker);
/* The worker a branch of that shape names; -1 when it is not of our shape
 * (the caller checks the index against its number of workers). */
int sa_txn_branch_worker(const char *branch);

/* What to do when a client transaction's timer fires. */
enum {
	SA_TXN_ACT_NONE = 0,
	SA_TXN_ACT_ANSWER_408 = 1 << 0,       /* tell the sender: Request Timeout */
	SA_TXN_ACT_CANCEL = 1 << 1,           /* CANCEL the INVITE upstream (it is ringing) */
	SA_TXN_ACT_COMPLETE = 1 << 2,         /* the transaction is over: linger, then go */
	SA_TXN_ACT_RETRANSMIT = 1 << 3,       /* send the request again, re-arm with the interval */
};

/* Timer A/E (retransmit), B/F (64*T1, no final answer) and the wait after a
 * provisional. elapsed_ms since the request was first sent, upstream_status
 * the highest status seen (0 none), *interval_ms the current A/E interval,
 * updated for the next arm. Returns SA_TXN_ACT_* bits and the delay until the
 * timer should fire again (*next_ms, 0 when it need not).
 * - an INVITE that got a provisional is left to Timer C: never B;
 * - a non-INVITE never gets a locally made 408 (RFC 4320 §4.1): it is left
 *   to end at the sender's own Timer F. */
unsigned sa_txn_client_timer(enum sa_method method, bool reliable, uint64_t elapsed_ms, int upstream_status,
                             unsigned *interval_ms, unsigned *next_ms);

/* Timer C (an INVITE rang for timer_c seconds): CANCEL if it rang, 408 to the caller. */
unsigned sa_txn_timer_c(int upstream_status);

/* The server side's Timer G and H (RFC 3261 §17.2.1): a failure sent back to
 * an INVITE's sender over UDP goes again at T1, doubling up to T2, until its
 * ACK comes or 64*T1 (Timer H) has passed since it was first sent. The sender
 * stopped retransmitting its INVITE at our 100 Trying: a lost failure would
 * leave it waiting. elapsed_ms since the failure was first sent, *interval_ms
 * the last wait (T1 to start), updated. Returns the delay until the next
 * send, 0 when Timer H has fired (nothing more is sent). */
unsigned sa_txn_timer_g(uint64_t elapsed_ms, unsigned *interval_ms);

/* ---- matching a request to its server transaction (RFC 3261 §17.2.3) ---- */

#define SA_TXN_KEY_MAX 320

/* The key of the server transaction m belongs to: top Via branch, sent-by and
 * method, an ACK keyed as the INVITE it acknowledges (a non-2xx's ACK has the
 * INVITE's branch). A CANCEL has its own transaction; sa_txn_cancelled_key
 * is the INVITE it cancels. Keys that do not fit are cut (they then match
 * nothing longer). Returns out. */
char *sa_txn_server_key(const struct sa_msg *m, char out[SA_TXN_KEY_MAX]);
char *sa_txn_cancelled_key(const struct sa_msg *m, char out[SA_TXN_KEY_MAX]);
/* The key under which an INVITE that rings is found by the requests of its
 * early dialogs (PRACK, UPDATE, INFO: RFC 3262, 3311, 6086), which come before
 * any call exists: its Call-ID and the caller's tag. A request from the
 * caller carries that tag in From, one from the callee in To. */
char *sa_txn_early_key(const char *call_id, const char *caller_tag, char out[SA_TXN_KEY_MAX]);
/* A few To tags of an INVITE's dialogs, as keyed hashes: up to SA_TXN_TAGS
 * (forks; past that the oldest goes), a tag seen twice counted once. The
 * daemon keeps two such sets per INVITE: the early dialogs that exist (the
 * callee's tags of the provisionals relayed back: a request of an early
 * dialog must name one, a tag no provisional carried is no dialog at all),
 * and the dialogs its 2xx set up (a fork's second 2xx makes a call, the
 * first one again does not). */
#define SA_TXN_TAGS 4
struct sa_txn_tags {
	uint64_t h[SA_TXN_TAGS];
	unsigned n;                  /* tags seen (distinct); the last SA_TXN_TAGS are kept */
};
void sa_txn_tag_add(struct sa_txn_tags *e, const char *tag);
bool sa_txn_tag_has(const struct sa_txn_tags *e, const char *tag);

/* ---- the transaction index: by server key and by our branch ----
 *
 * Intrusive: the daemon's transaction embeds a node; the index points at
 * nodes and never owns them. Both tables are open-addressed (each slot a
 * node's hash and the node) and double when half full, so a lookup stays
 * O(1) at any load (no fixed size that a sustained call rate outgrows), and
 * a lookup that finds nothing, as every new request's does, reads no node. */
struct sa_txn_node {
	const char *skey;         /* the request's server key (sa_txn_server_key), or ours for local ones */
	const char *branch;       /* the branch of our request towards the next hop */
	/* set by the index: removing a node or growing hashes nothing */
	uint64_t skey_hash, branch_hash;
};

struct sa_txn_index;

struct sa_txn_index *sa_txn_index_new(void);
/* Frees the index, not the nodes. */
void sa_txn_index_free(struct sa_txn_index *x);
/* Index n by its skey and branch (both set). 0, or -1 out of memory (n not indexed). */
int sa_txn_index_add(struct sa_txn_index *x, struct sa_txn_node *n);
void sa_txn_index_remove(struct sa_txn_index *x, struct sa_txn_node *n);
/* n's branch changes (a new client transaction for the next gateway): take it
 * out of the branch index under the old branch, change it, put it back. */
void sa_txn_index_branch_out(struct sa_txn_index *x, struct sa_txn_node *n);
void sa_txn_index_branch_in(struct sa_txn_index *x, struct sa_txn_node *n);
struct sa_txn_node *sa_txn_index_by_skey(const struct sa_txn_index *x, const char *skey);
struct sa_txn_node *sa_txn_index_by_branch(const struct sa_txn_index *x, const char *branch);
size_t sa_txn_index_count(const struct sa_txn_index *x);
/* Hand every node to fn, which must not add or remove any (collect, then act). */
void sa_txn_index_each(const struct sa_txn_index *x, void (*fn)(struct sa_txn_node *n, void *arg), void *arg);
/* Unindex every node and hand each to fn (which may free it): shutdown. */
void sa_txn_index_drain(struct sa_txn_index *x, void (*fn)(struct sa_txn_node *n, void *arg), void *arg);

/* ---- what a transaction remembers of the request it sent ----
 *
 * The request as sent (retransmitted as is), and where in those bytes the
 * fields are that the transaction's own messages copy: the CANCEL and the
 * ACK of a non-2xx it sends the next hop (RFC 3261 §9.1, §17.1.1.3), the
 * 408 or 487 it answers the sender itself, the Call-ID it is listed under,
 * the caller's Contact for the dialog a 2xx sets up, and the copy for the
 * next gateway (only our Via and Record-Route change). Offsets, noted by the
 * writer (lib/proxy) line by line from a request parsed and validated once:
 * nothing is scanned again and no field is copied. One allocation. */

/* One header line: len 0 when the request has none. */
struct sa_txn_line {
	uint32_t off;                  /* in bytes */
	uint16_t len;                  /* up to, not including, CRLF */
	uint16_t voff;                 /* where the value starts, from off */
};

/* The first line of each kind the transaction copies. */
enum sa_txn_field { SA_TXN_F_FROM, SA_TXN_F_TO, SA_TXN_F_CALL_ID, SA_TXN_F_CSEQ, SA_TXN_F_CONTACT, SA_TXN_F_COUNT };

struct sa_txn_req {
	const char *bytes;             /* the request as sent */
	size_t len;
	size_t size;                   /* the whole allocation, for the memory budget */
	bool fields;                   /* false: a request of our own (BYE, probe), kept as bytes only */
	bool to_tag;                   /* its To has a tag: answers we make add none */
	unsigned long cseq;            /* the CSeq number */
	uint32_t ruri, ruri_len;       /* the Request-URI */
	uint32_t ours, ours_end;       /* our Via and Record-Route lines, CRLFs included */
	struct sa_txn_line via;        /* ours, on top */
	struct sa_txn_line field[SA_TXN_F_COUNT];
	uint16_t nvias, nroutes;       /* in lines: the Via lines below ours, then the Route lines, in order */
	struct sa_txn_line *lines;
};

/* Write m rewritten per f (sa_proxy_request; f->layout is not used) and
 * keep it with its fields. NULL when it does not fit or memory runs out. */
struct sa_txn_req *sa_txn_req_new(const struct sa_msg *m, const struct sa_fwd *f);
/* The same request for another next hop: our Via value and the
 * Record-Route values (rr[i] NULL: none) replaced, every other byte as it
 * was. NULL when r has no fields or memory runs out. */
struct sa_txn_req *sa_txn_req_next_hop(const struct sa_txn_req *r, const char *via, const char *const rr[2]);
/* The same with another Request-URI (NULL: the same): an inbound INVITE
 * moved on to another registration of its trunk. */
struct sa_txn_req *sa_txn_req_retarget(const struct sa_txn_req *r, const char *ruri, const char *via,
                                       const char *const rr[2]);
/* A request of our own, kept as bytes only. */
struct sa_txn_req *sa_txn_req_raw(const char *buf, size_t len);
struct sa_txn_req *sa_txn_req_dup(const struct sa_txn_req *r);
void sa_txn_req_free(struct sa_txn_req *r);
/* The value of a field (*v NULL and 0 when absent). */
size_t sa_txn_req_value(const struct sa_txn_req *r, enum sa_txn_field f, const char **v);

/* The CANCEL of a pending INVITE, and the ACK of a non-2xx answer resp
 * (whose To it copies): Request-URI, our Via, From, Call-ID, CSeq number
 * and Route of the request. Length, or -1 when a field is missing or out is
 * too small. */
long sa_txn_cancel(const struct sa_txn_req *r, char *out, size_t cap);
long sa_txn_ack(const struct sa_txn_req *r, const struct sa_msg *resp, char *out, size_t cap);
/* The answer we make ourselves to the request's sender (408 when the next
 * hop is silent, 487 when we end it): its Vias (below ours), From, To with
 * to_tag added when it has no tag, Call-ID and CSeq. Length or -1. */
long sa_txn_answer(const struct sa_txn_req *r, int status, const char *to_tag, char *out, size_t cap);

/* ---- the client side's states (RFC 3261 §17.1, RFC 6026 §7.2) ---- */

enum sa_txn_state {
	SA_TXN_CALLING = 0,       /* an INVITE sent, nothing heard: Timers A and B */
	SA_TXN_TRYING,            /* another request sent, nothing heard: Timers E and F */
	SA_TXN_PROCEEDING,        /* a provisional came: an INVITE waits for Timer C, others retransmit at T2 */
	SA_TXN_COMPLETED,         /* a final answer (for an INVITE: a failure, ACKed by us): retransmissions absorbed */
	SA_TXN_ACCEPTED,          /* RFC 6026: a 2xx to an INVITE: its retransmissions go on to the caller */
	SA_TXN_CONFIRMED,         /* a failure we answered an INVITE with ourselves, and its ACK came
	                           * (§17.2.1): only ACK retransmissions are left to absorb (Timer I) */
	SA_TXN_TERMINATED,        /* gone */
	SA_TXN_STATE_COUNT,
};

/* The state a client transaction starts in, for its method. */
enum sa_txn_state sa_txn_initial(enum sa_method method);

/* The state after a response with `status` (100-699) arrives. A final answer
 * never moves a finished transaction again (a retransmitted final leaves it
 * where it is); a provisional never moves one past Proceeding. */
enum sa_txn_state sa_txn_on_response(enum sa_txn_state s, enum sa_method method, int status);

/* The state after Timer B, F or C ended the transaction with no final answer
 * (we answered 408 ourselves, or nothing: RFC 4320). */
enum sa_txn_state sa_txn_on_timeout(enum sa_txn_state s);

/* The state after the ACK for a failure we answered an INVITE with
 * ourselves (no hop behind us still retransmitting its final): Completed
 * becomes Confirmed; any other state stays. */
enum sa_txn_state sa_txn_on_ack(enum sa_txn_state s);

/* Has it had its final answer (or timed out): Completed, Accepted, Confirmed or Terminated. */
bool sa_txn_finished(enum sa_txn_state s);

/* How long a finished transaction lingers (ms) before it is freed: what it
 * still has to absorb or relay. Accepted: LINGER_2XX_MS: the call table relays
 * the 2xx retransmissions and the ACK, the transaction only absorbs INVITE
 * retransmissions, which stop at our 100 Trying (as Kamailio's tm frees them
 * after its wait timer). Otherwise Timer J/D over UDP (64*T1: the sender
 * may retransmit its request until its own Timer F), a short time over a
 * reliable transport (nothing is retransmitted; what is in flight arrives).
 * Confirmed: Timer I, T4 over UDP (what is in flight arrives). */
#define SA_TXN_T4_MS 5000
#define SA_TXN_LINGER_2XX_MS 5000
#define SA_TXN_LINGER_UDP_MS (64 * SA_TXN_T1_MS)
#define SA_TXN_LINGER_STREAM_MS 2000
unsigned sa_txn_linger_ms(enum sa_txn_state s, bool any_udp);

const char *sa_txn_state_name(enum sa_txn_state s);

/* ---- the budget: what one source and one credential may hold ---- */

struct sa_txn_limits {
	unsigned per_source;      /* transactions in progress per source address; 0: no limit */
	unsigned per_credential;  /* in progress per credential; 0: no limit */
	size_t max_bytes;         /* bytes of messages kept by all transactions together */
};

enum sa_txn_admit {
	SA_TXN_ADMIT = 0,
	SA_TXN_SOURCE_FULL,       /* this source has per_source transactions in progress */
	SA_TXN_CREDENTIAL_FULL,
	SA_TXN_MEMORY_FULL,       /* max_bytes reached even after dropping finished transactions */
};

struct sa_txn_budget;

/* slots: most distinct sources plus credentials counted at once (a source
 * takes a slot only while it has transactions in progress). NULL on failure. */
struct sa_txn_budget *sa_txn_budget_new(size_t slots);
void sa_txn_budget_free(struct sa_txn_budget *b);

/* Charge one transaction in progress to source (4 or 16 address bytes) and
 * cred_id ("" or NULL for none); bytes it keeps are charged separately. */
enum sa_txn_admit sa_txn_budget_admit(struct sa_txn_budget *b, const struct sa_txn_limits *lim,
                                      const void *src, size_t srclen, const char *cred_id);
/* The transaction got its final answer (or ended): give back its place. */
void sa_txn_budget_release(struct sa_txn_budget *b, const void *src, size_t srclen, const char *cred_id);
/* Bytes kept by transactions (their requests and responses): add on keep,
 * subtract on free; ok when `more` still fits under lim->max_bytes. */
void sa_txn_budget_bytes(struct sa_txn_budget *b, long delta);
bool sa_txn_budget_bytes_ok(const struct sa_txn_budget *b, const struct sa_txn_limits *lim, size_t more);
size_t sa_txn_budget_bytes_used(const struct sa_txn_budget *b);
/* In progress now for a source, or a credential (for tests and /metrics). */
unsigned sa_txn_budget_count(const struct sa_txn_budget *b, const void *src, size_t srclen, const char *cred_id);

const char *sa_txn_admit_reason(enum sa_txn_admit a);

#endif
