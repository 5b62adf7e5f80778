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

/* A source's key in the table: an IPv4 address (4 bytes), or the /64 an
 * IPv6 address is in (8 bytes: one host holds a /64 and could rotate
 * through it, a new address per max_failures guesses). addr is the 4 or 16
 * bytes of the address; the key's length is returned. */
size_t sa_abuse_source(const void *addr, size_t len, unsigned char key[16]);

/* The key of a trunk id for the calls below (never 0; NULL or "": 0, no trunk). */
uint64_t sa_abuse_trunk_key(const char *trunk_id);

/* What a failure earned. */
enum sa_abuse_verdict {
	SA_ABUSE_COUNTED = 0,    /* nothing (yet) */
	SA_ABUSE_BAN,            /* this one starts a ban of the source */
	SA_ABUSE_BAN_OTHERS,     /* a vouched source: it starts a ban from the trunks it is not vouched for */
};

/* Count one authentication failure against trunk (sa_abuse_trunk_key; 0:
 * none or unknown). A source vouched for (below) is never counted nor
 * banned for the trunks it proved itself on (forged UDP failures under a
 * registered PBX's address must not lock it out); its failures against any
 * other trunk count apart, and max_failures of them within the window
 * refuse it those other trunks for ban_time (sa_abuse_refused): a
 * customer's own login does not buy it unlimited guesses at another's. */
enum sa_abuse_verdict sa_abuse_failure(struct sa_abuse *a, const struct sa_abuse_cfg *cfg, const void *addr,
                                       size_t len, uint64_t trunk, uint64_t now);

/* The source authenticated for trunk: it holds a live registration or call
 * on a flow that proved itself, so failures under its address against that
 * trunk (a forged UDP source among them) must not ban it until `until`.
 * Up to four trunks per source (a NAT in front of several customers). */
void sa_abuse_vouch(struct sa_abuse *a, const void *addr, size_t len, uint64_t trunk, uint64_t now,
                    uint64_t until);

/* Is a vouched source refused trunk now (SA_ABUSE_BAN_OTHERS and trunk is
 * not one of its own)? */
bool sa_abuse_refused(const struct sa_abuse *a, const void *addr, size_t len, uint64_t trunk, uint64_t now);

/* Each source banned at now: its address (4 or 16 bytes), until when, and
 * whether only from the trunks it is not vouched for (SA_ABUSE_BAN_OTHERS).
 * cb runs under the table's lock: it must not call back into it. */
typedef void (*sa_abuse_ban_cb)(const unsigned char *addr, size_t len, uint64_t until, bool other_trunks,
                                void *arg);
void sa_abuse_each_ban(const struct sa_abuse *a, uint64_t now, sa_abuse_ban_cb cb, void *arg);

/* Lift the source's ban (either kind) and forget its failures: true when
 * it was banned at now. */
bool sa_abuse_unban(struct sa_abuse *a, const void *addr, size_t len, uint64_t now);

/* How many sources are banned at now (for /metrics). */
unsigned sa_abuse_banned_count(const struct sa_abuse *a, uint64_t now);

#endif
