/* work.c: the store thread: durable writes and large reads, off the SIP loop. */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/queue.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "log.h"
#ifdef HAVE_LIBPQ
#include "pgstore.h"
#endif
#include "server.h"
#include "store.h"
#include "work.h"

#define DB_RETRY_MS 1000      /* a database that did not answer is not asked again sooner */
#define DB_IDLE_CHECK_S 5     /* a connection idle this long is checked before a job uses it */

/*
 * Why a thread. The SIP loop answers every request from memory and from
 * LMDB reads that take microseconds. Three kinds of store work do not: an
 * API write waits for fsync (milliseconds, more on a busy disk), an API GET
 * of a trunk with 100 000 credentials reads and renders them (hundreds of
 * milliseconds), and a flush of the registrations written without sync is
 * an msync of every dirty page. Measured on the loop, each held up every
 * REGISTER and INVITE behind it. Here they run one at a time on a thread of
 * their own with a store handle of its own (sa_store_dup); the loop hands a
 * job over and learns of its end through an eventfd, so nothing on the loop
 * ever waits for the thread. The daemon runs two: one for API writes (and
 * the flush), one for reads, so that a write waiting for an administrator's
 * writer lock holds up no GET. Not a pool: writes are serialised by LMDB's
 * writer lock anyway, and an operator's burst of big GETs then delays other
 * reads, never SIP.
 */

struct job {
	TAILQ_ENTRY(job) link;
	sa_work_fn fn;
	sa_work_done_fn done;
	void *arg;
};
TAILQ_HEAD(job_list, job);

struct sa_work {
	pthread_t thread;
	bool started;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct job_list todo;       /* under mu */
	struct job_list done;       /* under mu */
	bool stop;                  /* under mu */
	unsigned queued;            /* todo + running, under mu */
	unsigned max_queued;
	int efd;                    /* rung by the thread when done is not empty */
	struct event *done_ev;      /* on the loop */
	struct sa_store *store;     /* the thread's own handle */
	unsigned flush_ms;          /* period of the registrations' flush; 0: none */
	const char *conninfo;       /* fleet mode: the database; NULL: none */
	struct sa_pg *db;           /* the thread's connection to it, when made */
	uint64_t db_tried_us;       /* the last failed attempt */
	/* counters, read by the loop under mu */
	uint64_t jobs_run;
	uint64_t jobs_refused;
	uint64_t busy_us;           /* time spent running jobs and flushes */
};

static uint64_t mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void ring(struct sa_work *w)
{
	uint64_t one = 1;

	while (write(w->efd, &one, sizeof one) < 0 && errno == EINTR)
		;
}

/* The thread: a job when there is one, a flush when it is time. */
static void *work_main(void *arg)
{
	struct sa_work *w = arg;
	uint64_t next_flush = mono_us() + (uint64_t)w->flush_ms * 1000u;

	pthread_mutex_lock(&w->mu);
	while (!w->stop) {
		struct job *j = TAILQ_FIRST(&w->todo);
		if (j == NULL && w->flush_ms > 0 && mono_us() < next_flush) {
			struct timespec until;
			uint64_t wait_us = next_flush - mono_us();
			clock_gettime(CLOCK_REALTIME, &until);
			until.tv_sec += (time_t)(wait_us / 1000000u);
			until.tv_nsec += (long)(wait_us % 1000000u) * 1000;
			if (until.tv_nsec >= 1000000000L) {
				until.tv_sec++;
				until.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&w->cv, &w->mu, &until);
			continue;
		}
		if (j == NULL && w->flush_ms == 0) {
			pthread_cond_wait(&w->cv, &w->mu);
			continue;
		}
		if (j != NULL)
			TAILQ_REMOVE(&w->todo, j, link);
		pthread_mutex_unlock(&w->mu);
		uint64_t t0 = mono_us();
		if (j != NULL) {
			j->fn(w->store, j->arg);
		} else {
			sa_store_flush(w->store);
			next_flush = mono_us() + (uint64_t)w->flush_ms * 1000u;
		}
		uint64_t took = mono_us() - t0;
		pthread_mutex_lock(&w->mu);
		w->busy_us += took;
		if (j != NULL) {
			w->jobs_run++;
			TAILQ_INSERT_TAIL(&w->done, j, link);
			ring(w);
		}
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

/* On the loop: each finished job's done callback, in the order they ran. */
static void done_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sa_work *w = arg;
	struct job_list done;
	uint64_t n;

	while (read(w->efd, &n, sizeof n) < 0 && errno == EINTR)
		;
	TAILQ_INIT(&done);
	pthread_mutex_lock(&w->mu);
	TAILQ_CONCAT(&done, &w->done, link);
	pthread_mutex_unlock(&w->mu);
	struct job *j;
	while ((j = TAILQ_FIRST(&done)) != NULL) {
		TAILQ_REMOVE(&done, j, link);
		pthread_mutex_lock(&w->mu);
		w->queued--;
		pthread_mutex_unlock(&w->mu);
		if (j->done)
			j->done(j->arg, false);
		free(j);
	}
}

int sa_work_submit(struct sa_work *w, sa_work_fn fn, sa_work_done_fn done, void *arg)
{
	struct job *j = malloc(sizeof *j);

	if (j == NULL)
		return -1;
	*j = (struct job){ .fn = fn, .done = done, .arg = arg };
	pthread_mutex_lock(&w->mu);
	if (w->queued >= w->max_queued) {
		w->jobs_refused++;
		pthread_mutex_unlock(&w->mu);
		free(j);
		return -1;
	}
	w->queued++;
	TAILQ_INSERT_TAIL(&w->todo, j, link);
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
	return 0;
}

void sa_work_database_set(struct sa_work *w, const char *conninfo)
{
	w->conninfo = conninfo;
}

#ifdef HAVE_LIBPQ
struct sa_pg *sa_work_database(struct sa_work *w)
{
	char why[256];

	if (w->conninfo == NULL)
		return NULL;
	if (w->db != NULL && sa_pg_alive(w->db, (int64_t)time(NULL), DB_IDLE_CHECK_S))
		return w->db;
	sa_pg_close(w->db);
	w->db = NULL;
	if (w->db_tried_us != 0 && mono_us() - w->db_tried_us < DB_RETRY_MS * 1000u)
		return NULL;
	if (sa_pg_open(&w->db, w->conninfo, why, sizeof(why)) != SA_STORE_OK) {
		w->db_tried_us = mono_us();
		return NULL;
	}
	w->db_tried_us = 0;
	return w->db;
}
#else
struct sa_pg *sa_work_database(struct sa_work *w)
{
	return NULL;
}
#endif

void sa_work_stats(struct sa_work *w, struct sa_work_stats *s)
{
	pthread_mutex_lock(&w->mu);
	*s = (struct sa_work_stats){ .queued = w->queued, .jobs_run = w->jobs_run,
	                             .jobs_refused = w->jobs_refused, .busy_us = w->busy_us };
	pthread_mutex_unlock(&w->mu);
}

struct sa_work *sa_work_start(struct event_base *base, struct sa_store *st, unsigned flush_ms, unsigned max_queued)
{
	struct sa_work *w = calloc(1, sizeof *w);

	if (w == NULL)
		return NULL;
	TAILQ_INIT(&w->todo);
	TAILQ_INIT(&w->done);
	w->flush_ms = flush_ms;
	w->max_queued = max_queued;
	w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	if (w->efd < 0 || sa_store_dup(st, &w->store) != SA_STORE_OK ||
	    (w->done_ev = event_new(base, w->efd, EV_READ | EV_PERSIST, done_cb, w)) == NULL ||
	    event_add(w->done_ev, NULL) != 0 || pthread_create(&w->thread, NULL, work_main, w) != 0) {
		sa_work_stop(w);
		return NULL;
	}
	w->started = true;
	return w;
}

/* Waits for the job running now. Every job whose done callback has not run
 * gets it now with cancelled set: the loop is going away, so it may only
 * free what it holds (an HTTP exchange is not answered). */
void sa_work_stop(struct sa_work *w)
{
	if (w == NULL)
		return;
	if (w->started) {
		pthread_mutex_lock(&w->mu);
		w->stop = true;
		pthread_cond_signal(&w->cv);
		pthread_mutex_unlock(&w->mu);
		pthread_join(w->thread, NULL);
	}
	struct job *j;
	TAILQ_CONCAT(&w->done, &w->todo, link);
	while ((j = TAILQ_FIRST(&w->done)) != NULL) {
		TAILQ_REMOVE(&w->done, j, link);
		if (j->done)
			j->done(j->arg, true);
		free(j);
	}
	if (w->done_ev)
		event_free(w->done_ev);
	if (w->efd >= 0)
		close(w->efd);
	if (w->store)
		sa_store_close(w->store);
#ifdef HAVE_LIBPQ
	sa_pg_close(w->db);
#endif
	pthread_cond_destroy(&w->cv);
	pthread_mutex_destroy(&w->mu);
	free(w);
}
