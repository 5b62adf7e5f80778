/* calls.h: the call table: calls by Call-ID and tags, by credential and by age; what revocation and reaping act on. */
#ifndef SA_CALLS_H
#define SA_CALLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include "dialog.h"
#include "route.h"

/* An established call: the dialog and the flows of both ends. The table
 * owns it from sa_calls_add until sa_calls_remove. */
struct sa_call {
	struct sa_dialog d;
	struct sa_flow caller, callee;
	/* when it was set up on the monotonic clock (ms): max_call_age counts
	 * from it, so that a step of the wall clock (NTP, a resumed VM) ends no
	 * call; d.started_at is the wall clock's, for the API and the files */
	int64_t started_ms;
	/* the table's links */
	struct sa_call *id_next;       /* same Call-ID bucket */
	uint64_t id_hash;              /* of d.call_id: chain steps compare it before the Call-ID */
	struct sa_call *cred_next;     /* same credential */
	struct sa_call **cred_pprev;   /* what points at this one in that list: removal without a walk */
	struct sa_calls_cred *cred;
	TAILQ_ENTRY(sa_call) age;      /* oldest first: calls start in order, max_call_age is one value */
};

struct sa_calls;

/* An empty table; its index grows with the calls it holds. NULL on failure. */
struct sa_calls *sa_calls_new(void);
/* Frees the table and every call in it. */
void sa_calls_free(struct sa_calls *t);

/* A zeroed call to fill (dialog, flows) before sa_calls_add; sa_call_free
 * releases one that was never added. */
struct sa_call *sa_call_new(void);
void sa_call_free(struct sa_call *c);

/* Take c into the table (indexed by Call-ID, credential and age). 0, or -1
 * out of memory (c is then still the caller's). */
int sa_calls_add(struct sa_calls *t, struct sa_call *c);
/* Unlink and free c. */
void sa_calls_remove(struct sa_calls *t, struct sa_call *c);
unsigned sa_calls_count(const struct sa_calls *t);

/* The call an in-dialog message belongs to, and from which side (1 caller,
 * 2 callee); NULL when none. */
struct sa_call *sa_calls_find(const struct sa_calls *t, const struct sa_msg *m, int *side);

/* The calls of one credential: the first (after NULL) and each next. */
struct sa_call *sa_calls_of_credential(const struct sa_calls *t, const char *cred_id);
struct sa_call *sa_calls_next_of_credential(const struct sa_call *c);
/* How many calls a credential has now. */
unsigned sa_calls_credential_count(const struct sa_calls *t, const char *cred_id);

/* Every call, oldest first. */
struct sa_call *sa_calls_oldest(const struct sa_calls *t);
struct sa_call *sa_calls_newer(const struct sa_call *c);

/* The credentials that have calls: call fn once for each (the id stays valid
 * only during the call; fn must not change the table). */
void sa_calls_each_credential(const struct sa_calls *t, void (*fn)(const char *cred_id, void *arg), void *arg);

/* ---- calls.state: what survives a restart, as JSON lines (jansson) ----
 *
 * A header line {"kind":"sipauthd-calls","version":N,"calls":COUNT}, then one
 * line per call. A file of another version is refused whole, never guessed at.
 * The flows of the ends are text here (listeners named by address); the
 * daemon turns them into flows and back. */
#define SA_CALLS_FILE_VERSION 2

struct sa_call_flow_text {
	char transport[4];          /* udp, tcp, tls */
	char address[64];           /* numeric */
	unsigned port;
	char listener[96];          /* the listener it used: TRANSPORT:ADDRESS:PORT ([v6]) */
};

/* The header line (malloc'd, no newline); NULL out of memory. */
char *sa_calls_header_line(unsigned count);
/* Is line the header of a calls file of this version? */
bool sa_calls_header_ok(const char *line);
/* One call as a line (malloc'd, no newline); NULL out of memory or when a
 * string of the call is not UTF-8 (JSON cannot carry it). */
char *sa_call_line(const struct sa_call *c, const struct sa_call_flow_text ends[2]);
/* A call back from its line: its dialog filled, its flows in ends[0] (the
 * caller's) and ends[1] for the daemon to turn into flows. NULL when the line
 * is not a whole call (missing or mistyped fields, values too long). */
struct sa_call *sa_call_from_line(const char *line, struct sa_call_flow_text ends[2]);

/* ---- calls.journal.N: what survives a crash ----
 *
 * Each worker appends to its own journal a header line
 * {"kind":"sipauthd-calls-journal","version":N}, then a call line (as
 * above) for each call set up and an end line
 * {"end":CALL_ID,"caller_tag":..,"callee_tag":..} for each call ended;
 * the daemon rewrites it from its calls when it grows. Replayed in order,
 * the lines leave the calls that were up. */
char *sa_calls_journal_header(void);
bool sa_calls_journal_header_ok(const char *line);
/* The end line of c (malloc'd, no newline); NULL out of memory. */
char *sa_call_end_line(const struct sa_call *c);
/* The same lines written into b without an allocation: the room each may
 * take (b must have it), then the writer (false, b unchanged: a string of
 * the call is not UTF-8, which JSON cannot carry, or b has not the room). */
size_t sa_call_line_room(const struct sa_call *c, const struct sa_call_flow_text ends[2]);
bool sa_call_line_put(const struct sa_call *c, const struct sa_call_flow_text ends[2], struct sa_buf *b);
size_t sa_call_end_line_room(const struct sa_call *c);
bool sa_call_end_line_put(const struct sa_call *c, struct sa_buf *b);
/* One journal line applied to t: a call line adds its call (its flows in
 * ends, for the daemon to turn into flows: *added is the call, still the
 * table's), an end line removes its call if t has it. 0, or -1 for a line
 * that is neither (or a call t cannot take: out of memory). */
int sa_calls_journal_apply(struct sa_calls *t, const char *line, struct sa_call **added,
                           struct sa_call_flow_text ends[2]);

/* A call of this Call-ID set up by this caller tag, whatever its callee's
 * (the first of an INVITE's forked dialogs); NULL when none. */
struct sa_call *sa_calls_find_caller(const struct sa_calls *t, const char *call_id, const char *caller_tag);

/* The call of exactly this Call-ID and these tags; NULL when none. */
struct sa_call *sa_calls_find_dialog(const struct sa_calls *t, const char *call_id, const char *caller_tag,
                                     const char *callee_tag);

#endif
