/* loglimit.h: at most N log lines per second from one place in the code; the rest counted and summarised. */
#ifndef SA_LOGLIMIT_H
#define SA_LOGLIMIT_H

#include <stdbool.h>
#include <stdint.h>

/* A site is a place in the code that logs (the daemon uses the format
 * string's address). Each site gets `per_second` lines in each window of
 * SA_LOGLIMIT_WINDOW_MS; the lines past that are counted, and the count is
 * handed back once, when the site's next window opens (on its next line, or
 * at sa_loglimit_expired). A fixed table: sites past SA_LOGLIMIT_SITES share
 * one overflow slot, so memory and work per line stay constant. */
#define SA_LOGLIMIT_WINDOW_MS 1000
#define SA_LOGLIMIT_SITES     256

struct sa_loglimit_site {
	const void *key;           /* NULL: free */
	uint64_t window_start;     /* ms */
	uint32_t lines;            /* written in this window */
	uint32_t suppressed;       /* dropped in this window */
};

struct sa_loglimit {
	unsigned per_second;       /* 0: no limit */
	uint64_t suppressed_total; /* for /metrics */
	struct sa_loglimit_site site[SA_LOGLIMIT_SITES + 1];   /* the last one is the overflow */
};

void sa_loglimit_init(struct sa_loglimit *ll, unsigned per_second);

/* May a line from key be written at now (ms, any monotonic origin)? When a
 * window with suppressed lines has just ended, *report gets their count
 * (else 0): write the summary before this line. */
bool sa_loglimit_allow(struct sa_loglimit *ll, const void *key, uint64_t now, uint32_t *report);

/* Windows that ended with lines suppressed: for each, calls fn(key, count,
 * arg) once and resets it (the periodic flush and the final one at stop;
 * at_stop reports every count, ended or not). */
void sa_loglimit_expired(struct sa_loglimit *ll, uint64_t now, bool at_stop,
                         void (*fn)(const void *key, uint32_t count, void *arg), void *arg);

#endif
