/* work.h: the store thread: durable writes and large reads, off the SIP loop (see work.c). */
#ifndef SA_WORK_H
#define SA_WORK_H

#include <stdbool.h>
#include <stdint.h>

struct event_base;
struct sa_pg;
struct sa_store;
struct sa_work;

/* Runs on the store thread with the thread's own store handle. */
typedef void (*sa_work_fn)(struct sa_store *st, void *arg);
/* Then on the loop. cancelled: the daemon is stopping (the job may not
 * have run); free what arg holds, answer nothing. */
typedef void (*sa_work_done_fn)(void *arg, bool cancelled);

/* Starts the thread with a handle of its own on st (sa_store_dup). Every
 * flush_ms (0: never) it flushes the writes made without sync. At most
 * max_queued jobs wait or run at once. NULL on failure. */
struct sa_work *sa_work_start(struct event_base *base, struct sa_store *st, unsigned flush_ms, unsigned max_queued);
void sa_work_stop(struct sa_work *w);

/* Queues fn; done follows on the loop. -1 (nothing queued) when the queue is full. */
int sa_work_submit(struct sa_work *w, sa_work_fn fn, sa_work_done_fn done, void *arg);

/* Fleet mode: the thread keeps a connection of its own to this database
 * (conninfo must outlive w). Set before the first job. */
void sa_work_database_set(struct sa_work *w, const char *conninfo);
/* In a job, on the thread: its connection, made on first use and again once
 * it broke (at most one attempt a second); NULL when the database cannot be
 * reached now. Without a database set, or a build without libpq: NULL. */
struct sa_pg *sa_work_database(struct sa_work *w);

struct sa_work_stats {
	unsigned queued;          /* waiting or running now */
	uint64_t jobs_run;
	uint64_t jobs_refused;    /* queue full */
	uint64_t busy_us;         /* time the thread spent working */
};
void sa_work_stats(struct sa_work *w, struct sa_work_stats *s);

#endif
