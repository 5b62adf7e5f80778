/* abuse.h: per-source failure counting and bans (what fail2ban does next to other proxies). */
#ifndef SA_ABUSE_H
#define SA_ABUSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sa_abuse_cfg {
	unsigned max_failures;   /* failures within window that earn a ban; 0 disables banning */
	unsigned window;         /* seconds */
	unsigned ban_time;       /* seconds */
};

struct sa_abuse;

/* A table of at most slots sources; the oldest quiet entries make room. */
struct sa_abuse *sa_abuse_new(size_t slots);
void sa_abuse_free(struct sa_abuse *a);

/* Is the source (addr: 4 or 16 bytes) banned at now? */
bool sa_abuse_banned(const struct sa_abuse *a, const struct sa_abuse_cfg *cfg, const void *addr,
                     size_t len, uint64_t now);

/* Count one authentication failure; true when this one starts a ban. A
 * source vouched for (below) is never counted nor banned. */
bool sa_abuse_failure(struct sa_abuse *a, const struct sa_abuse_cfg *cfg, const void *addr, size_t len,
                      uint64_t now);

/* The source authenticated: it holds a live registration or call on a flow
 * that proved itself, so failures under its address (a forged UDP source
 * among them) must not ban it until `until`. */
void sa_abuse_vouch(struct sa_abuse *a, const void *addr, size_t len, uint64_t now, uint64_t until);

/* How many sources are banned at now (for /metrics). */
unsigned sa_abuse_banned_count(const struct sa_abuse *a, uint64_t now);

#endif
