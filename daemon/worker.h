/* worker.h: the SIP workers: one event loop per core, each owning its transactions and calls. */
#ifndef SA_WORKER_H
#define SA_WORKER_H

#include <stdbool.h>
#include <stddef.h>

#include "conf.h"

struct sa_server;
struct sa_flow;
struct sa_metrics;

/* How many workers the configuration asks for: [sip] workers, or (auto) one
 * per core the process may run on. */
unsigned sa_workers_wanted(const struct sa_config *c);

/* Workers 1..n-1 beside the running main server (worker 0, whose shared
 * modules they use): each gets its own loop, sockets (SO_REUSEPORT), store
 * handle, transactions and calls, and runs in a thread of its own. n 1: none.
 * 0, or -1 (logged). */
int sa_workers_start(struct sa_server *main, unsigned n);
/* Stops the other workers' loops and joins their threads; their tables stay
 * for sa_sip_calls_save. Then sa_workers_free. Main thread only. */
void sa_workers_join(struct sa_server *main);
void sa_workers_free(struct sa_server *main);

/* The workers: count (1 when there are none besides main) and each one. */
unsigned sa_workers_count(const struct sa_server *srv);
struct sa_server *sa_worker_at(const struct sa_server *srv, unsigned i);

/* A message another worker owns: it goes there, and is read again there. */
void sa_workers_hand(struct sa_server *srv, unsigned to, const struct sa_flow *from, const char *buf, size_t len);
/* Bytes to send on a connection worker `to` holds. */
void sa_workers_send(struct sa_server *srv, unsigned to, const struct sa_flow *fl, const char *buf, size_t len);
/* Runs fn on every worker, each on its own thread, and returns when all have
 * run (worker 0 runs it here). From the main thread only. */
typedef void (*sa_worker_fn)(struct sa_server *w, void *arg);
void sa_workers_run_each(struct sa_server *main, sa_worker_fn fn, void *arg);
/* fn(worker `to`, arg) on that worker's loop, later (the caller must have
 * workers). arg is malloc'd and fn frees it; one posted while the loops stop,
 * never run, is freed with the inbox. false (logged) when it could not be
 * queued: arg is still the caller's. */
bool sa_workers_post(struct sa_server *srv, unsigned to, sa_worker_fn fn, void *arg);
/* The same without waiting; arg must outlive the calls. */
void sa_workers_post_each(struct sa_server *main, sa_worker_fn fn, void *arg);

/* Which worker has the calls and INVITE transactions of a Call-ID: the
 * in-dialog requests, ACKs and CANCELs that reach another worker go there.
 * take/drop count the holders; owner is -1 when none holds it. */
void sa_calldir_take(struct sa_server *srv, const char *call_id);
void sa_calldir_drop(struct sa_server *srv, const char *call_id);
int sa_calldir_owner(struct sa_server *srv, const char *call_id);

/* Which worker holds the TCP/TLS connection we accepted from this peer
 * (transport, address, port): an inbound call to a PBX registered over it
 * is sent down it by that worker. add/remove as connections come and go. */
void sa_conndir_add(struct sa_server *srv, const struct sa_flow *fl);
void sa_conndir_remove(struct sa_server *srv, const struct sa_flow *fl);
int sa_conndir_owner(struct sa_server *srv, const struct sa_flow *fl);

/* The counters of every worker, summed into *m (main's copied first). */
void sa_workers_metrics(const struct sa_server *main, struct sa_metrics *m);

#endif
