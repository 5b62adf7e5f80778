/* pace.h: requests of our own spread over time per destination (the BYEs of a revocation), so that one peer's socket buffer is not flooded by thousands at once. */
#ifndef SA_PACE_H
#define SA_PACE_H

#include <stddef.h>
#include <stdint.h>

#define SA_PACE_KEY_MAX 32          /* a destination's key: address, port and transport bytes */

struct sa_pacer;
struct sa_pace_item;

struct sa_pacer *sa_pacer_new(void);
/* Frees what is still queued (not the payloads). */
void sa_pacer_free(struct sa_pacer *p);

/* Queue payload for the destination named by key (1..SA_PACE_KEY_MAX bytes).
 * The handle stays valid until the payload is handed out or cancelled. NULL
 * when out of memory or the key is too long. */
struct sa_pace_item *sa_pacer_push(struct sa_pacer *p, const void *key, size_t klen, void *payload);
/* Take a queued payload out before its turn (its owner goes away). */
void sa_pacer_cancel(struct sa_pacer *p, struct sa_pace_item *it);

/* Hand out what `rate` per second per destination allows by now_ms, oldest
 * first per destination: cb(payload, arg) each, after the item left the
 * queue. A destination's allowance refills continuously and holds at most
 * burst = rate / 100 (at least 1): a new destination gets that at once, and
 * one whose queue ran empty is kept until its allowance is full again (so
 * pushing and running one at a time is paced too). Returns how many are
 * still queued (run again in about 10 ms when > 0). */
size_t sa_pacer_run(struct sa_pacer *p, unsigned rate, uint64_t now_ms, void (*cb)(void *payload, void *arg),
                    void *arg);

/* Allowances shared by several pacers (one per SIP worker), so that `rate`
 * holds per destination for the process, whichever pacer sends. Locks
 * inside; a destination is forgotten once its allowance is full again. */
struct sa_pace_shared;
struct sa_pace_shared *sa_pace_shared_new(void);
void sa_pace_shared_free(struct sa_pace_shared *s);
/* From now on p takes its destinations' allowances from s (NULL: its own). */
void sa_pacer_share(struct sa_pacer *p, struct sa_pace_shared *s);
/* Destinations s keeps an allowance for (for tests). */
size_t sa_pace_shared_destinations(struct sa_pace_shared *s);

size_t sa_pacer_queued(const struct sa_pacer *p);
/* Destinations known: something queued, or an allowance not full yet (for tests). */
size_t sa_pacer_destinations(const struct sa_pacer *p);

#endif
