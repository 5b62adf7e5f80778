/* txn.h: RFC 3261 §17 transaction rules the proxy applies: branches, timer outcomes, and what one sender may hold. */
#ifndef SA_TXN_H
#define SA_TXN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sipmsg.h"

#define SA_TXN_T1_MS 500
#define SA_TXN_T2_MS 4000
#define SA_TXN_BRANCH_LEN (7 + 22)     /* "z9hG4bK" + 128 random bits, base64url without padding */

/* A new branch for a request we send: the magic cookie and 128 random bits,
 * so nobody can answer, or cancel, a transaction before seeing it. 0 or -1. */
int sa_txn_branch_new(char out[SA_TXN_BRANCH_LEN + 1]);

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
