/* store.h: the LMDB store: accounts, API keys, trunks, credentials, bindings, auth failures.
 *
 * Two files in the store's directory: data.mdb (accounts, keys, trunks,
 * credentials: written durably by sipauthctl and the API) and runtime/
 * (registrations and the failure log: written by the daemon's SIP path
 * without sync, flushed by sa_store_flush). An administrator's write on
 * data.mdb never holds up a binding write. Only a handle opened with
 * SA_STORE_RUNTIME has runtime/; on others the binding and failure-log
 * calls return SA_STORE_EINVAL. */
#ifndef SA_STORE_H
#define SA_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "digest.h"
#include "policy.h"
#include "sa_limits.h"

/* 2: credentials keep a password version and the previous password's HA1s
 * (rotation). 3: credentials and bindings are written compact. 4: a
 * credential's record is kept under its username. 5: every write of a
 * credential is logged (cred_changes), which the credential indexes follow:
 * a sipauthctl of schema 4 would write without it, so it must refuse the
 * store. 6: a binding's expiry entry may lag behind its expiry, and its
 * record says where the entry is (a schema-5 reader would take the record
 * for damage and look for the entry in the wrong place). 7: each trunk's
 * most recently written bindings are listed (trunk_latest), which only a
 * reader of schema 7 keeps true. An older store is
 * read as it is (every credential of schema 1 at version 1) and marked with
 * this version by the first writable open. */
#define SA_STORE_SCHEMA_VERSION 7
#define SA_DEFAULT_DOMAIN "sip.tryvox.io"

/* Errors are values: every function returns 0 on success or one of these. */
enum sa_store_err {
	SA_STORE_OK = 0,
	SA_STORE_ENOTFOUND = -1,   /* no such account/trunk/credential/key */
	SA_STORE_EEXISTS = -2,     /* duplicate (trunk, username), or init on an initialised store */
	SA_STORE_EINVAL = -3,      /* input breaks a rule (see sa_store_strerror and the why text) */
	SA_STORE_ENOTINIT = -4,    /* store not initialised (run sipauthctl init) */
	SA_STORE_ESCHEMA = -5,     /* store written by an incompatible schema version */
	SA_STORE_EIO = -6,         /* LMDB or system error */
	SA_STORE_EFULL = -7,       /* a configured limit reached (e.g. contacts per credential) */
	SA_STORE_EMAPFULL = -8,    /* the map is (nearly) full: new records refused, deletes still run */
	SA_STORE_ENOSPC = -9,      /* the file system is full (or over quota) */
	SA_STORE_ECORRUPT = -10,   /* data.mdb is empty, truncated or damaged */
	SA_STORE_EACCES = -11,     /* the store's files may not be opened (permission) */
	/* fleet mode's database (lib/pgstore) only: */
	SA_STORE_EUNAVAIL = -12,   /* the database cannot be reached (nothing was written) */
	SA_STORE_EUNKNOWN = -13,   /* the connection broke after a write was sent: it may or may not be done */
};
const char *sa_store_strerror(int err);
/* A short token for logs and metrics: "map_full", "disk_full", "corrupted",
 * "version_mismatch", "permission", "io" (or "ok", "not_found"...). */
const char *sa_store_cause(int err);

struct sa_store;

#define SA_STORE_RDONLY 0x1
/* Open runtime/ too (the daemon; never sipauthctl, so that an administrator's
 * process never takes the runtime writer lock). A writable open creates it,
 * and moves the bindings and failure log of a store made before the split
 * out of data.mdb into it. A read-only open of a store without runtime/
 * opens without it. */
#define SA_STORE_RUNTIME 0x2
/* Open (creating the directory's data files if needed) the store in dir.
 * Does not require init; most calls then return SA_STORE_ENOTINIT.
 * Same as sa_store_open_with with map_size 0 and no reason text. */
int sa_store_open(struct sa_store **out, const char *dir, unsigned flags);

#define SA_STORE_DEFAULT_MAP_SIZE ((uint64_t)1 << 30)
/* 2 MiB: its headroom (SA_STORE_HEADROOM_PERCENT) holds what a delete needs (a
 * credential's delete copies some 25 pages: its record, its indexes, the
 * tombstone, the change log), which a 1 MiB map's 25 pages did not. */
#define SA_STORE_MIN_MAP_SIZE     ((uint64_t)2 << 20)
#define SA_STORE_MAX_MAP_SIZE     ((uint64_t)1 << 40)
/* New records (bindings, credentials, accounts, keys, trunks, failure-log
 * records) are refused with SA_STORE_EMAPFULL once this share of their
 * file's map holds data; the rest is headroom that deletes and expiry always
 * have. data.mdb and runtime/ fill up separately. */
#define SA_STORE_HEADROOM_PERCENT 90
/* The daemon warns from here on (log line), before anything is refused. */
#define SA_STORE_ALARM_PERCENT 80

/* A map size as an administrator writes it: bytes, or a number with K, M, G
 * or T (powers of 1024), from SA_STORE_MIN_MAP_SIZE to SA_STORE_MAX_MAP_SIZE.
 * 0, or SA_STORE_EINVAL. */
int sa_store_size_parse(const char *text, uint64_t *bytes);

struct sa_store_opts {
	unsigned flags;        /* SA_STORE_RDONLY, SA_STORE_RUNTIME */
	uint64_t map_size;     /* bytes; 0: the size the store records (a new store: the default).
	                        * A store's map only grows: a smaller value keeps the recorded one.
	                        * It sizes each file: runtime/ is mapped (and reserved) as large as
	                        * data.mdb, and grows with it while open (sa_store_runtime_usage). */
};
/* As sa_store_open, and on failure a one-line reason in why (may be NULL),
 * naming the cause and the system or LMDB error. An empty or truncated
 * data.mdb is refused (SA_STORE_ECORRUPT), never reinitialised or grown.
 * A writer reserves the whole map on disk (see store.c), so that a full
 * file system later cannot fail a write; SA_STORE_ENOSPC when it cannot. */
int sa_store_open_with(struct sa_store **out, const char *dir, const struct sa_store_opts *o,
                       char *why, size_t whylen);
/* Closes a handle; the store's files close with the last handle (see sa_store_dup). */
void sa_store_close(struct sa_store *st);

/*
 * Threads. A handle is used by one thread at a time. For another thread,
 * sa_store_dup makes a second handle on the same open store (LMDB opens an
 * environment once per process): it has its own cached read transactions
 * and its own error state, and shares the fault report (sa_store_fault).
 * Every function of this header may then run concurrently in two threads,
 * each on its own handle. Each handle is closed with sa_store_close; the
 * environments close with the last one. A map grown by another process is
 * taken up only while no thread of this process is inside a transaction on
 * it (the adopting call waits for the others' to end).
 */
int sa_store_dup(struct sa_store *st, struct sa_store **out);

/* How full a map is. used counts the pages that hold data (pages freed
 * by deletes are reusable and not counted). */
struct sa_store_usage {
	uint64_t map_size;     /* bytes */
	uint64_t used;         /* bytes */
	unsigned percent;      /* used * 100 / map_size */
	bool reserved;         /* the map is reserved on disk (writable map) */
};
/* data.mdb's; takes up a map grown by another process (sipauthctl --map-size). */
int sa_store_usage(struct sa_store *st, struct sa_store_usage *u);
/* runtime/'s; grows its map to data.mdb's when that grew. SA_STORE_EINVAL
 * without SA_STORE_RUNTIME. */
int sa_store_runtime_usage(struct sa_store *st, struct sa_store_usage *u);

/* The last write that failed. failing: the last write failed (no write has
 * succeeded since). failures counts failed writes since open (refusals of
 * the headroom rule included). detail names the LMDB or system error, or
 * the rule ("MDB_MAP_FULL: ...", "No space left on device"). */
struct sa_store_fault {
	int err;               /* of the last failure; 0: none yet */
	bool failing;
	int code;              /* its LMDB or errno value, 0 if none */
	uint64_t failures;
	char detail[128];
};
void sa_store_fault(const struct sa_store *st, struct sa_store_fault *f);

/* Record schema version and SIP domain (NULL -> SA_DEFAULT_DOMAIN); once only. */
int sa_store_init(struct sa_store *st, const char *domain);
/* The domain recorded at init, copied into out (SA_DOMAIN_MAX + 1). */
int sa_store_domain(struct sa_store *st, char *out, size_t outlen);
/* The daemon's nonce secret, created on first call and kept in the store so
 * nonces survive a restart. */
int sa_store_nonce_secret(struct sa_store *st, unsigned char secret[32]);
/* A number that changes whenever credentials, trunks or keys change (the
 * daemon polls it to notice writes by sipauthctl). */
int sa_store_generation(struct sa_store *st, uint64_t *gen);

/* Realm for a trunk: "trunk-<trunk_id>.<domain>" into out (SA_REALM_MAX). */
int sa_store_realm(const char *trunk_id, const char *domain, char *out, size_t outlen);

/* ---- what the PostgreSQL store (lib/pgstore) makes the same way ---- */
/* The domain as init records it (lower case, DNS labels); EINVAL. */
int sa_store_domain_normalise(const char *in, char out[SA_DOMAIN_MAX + 1]);
/* A display name for an account ("" refused) or trunk: UTF-8 without control characters. */
bool sa_store_name_ok(const char *name);
/* A fresh random id "<prefix><16 of [a-z0-9]>" (uniqueness is the caller's). */
int sa_store_id_make(const char *prefix, char out[SA_ID_MAX]);
/* A new API key into key (SA_APIKEY_LEN + 1) and its SHA-256, what is stored. */
#define SA_APIKEY_HASH_LEN 32
int sa_store_apikey_make(char *key, unsigned char hash[SA_APIKEY_HASH_LEN]);

/* ---- accounts and API keys ---- */
struct sa_account {
	char id[SA_ID_MAX];
	char name[SA_NAME_MAX + 1];
	int64_t created_at;
};
int sa_store_account_create(struct sa_store *st, const char *name, int64_t now, struct sa_account *out);
int sa_store_account_get(struct sa_store *st, const char *account_id, struct sa_account *out);

/* Creates "tvx_sk_live_" + 32 base62 chars into key (SA_APIKEY_LEN + 1); only
 * its SHA-256 is stored. The key is returned once and never again. */
int sa_store_apikey_create(struct sa_store *st, const char *account_id, int64_t now, char *key);
/* Finds the account a presented key belongs to (compared by SHA-256). */
int sa_store_apikey_account(struct sa_store *st, const char *key, size_t len, char account_id[SA_ID_MAX]);
/* A key's id: "key_" and the first 16 hex digits of its SHA-256 (what is
 * stored), so that a key can be listed and revoked without being kept;
 * `printf %s KEY | sha256sum | cut -c1-16` names it too. */
#define SA_APIKEY_ID_LEN 20
void sa_store_apikey_id(const unsigned char hash[SA_APIKEY_HASH_LEN], char out[SA_APIKEY_ID_LEN + 1]);
struct sa_apikey_info {
	char id[SA_APIKEY_ID_LEN + 1];
	int64_t created_at;
};
typedef int (*sa_store_apikey_cb)(const struct sa_apikey_info *k, void *arg);
/* The account's keys (cb returns non-zero to stop); ENOTFOUND: no such account. */
int sa_store_apikey_list(struct sa_store *st, const char *account_id, sa_store_apikey_cb cb, void *arg);
/* Revoke the account's key with this id: it authenticates nothing from now
 * on (the API reads the store for every request). ENOTFOUND: no such key. */
int sa_store_apikey_revoke(struct sa_store *st, const char *account_id, const char *key_id);

/* ---- trunks ---- */
struct sa_trunk {
	char id[SA_ID_MAX];
	char account_id[SA_ID_MAX];
	char name[SA_NAME_MAX + 1];
	int64_t created_at;
};
int sa_store_trunk_create(struct sa_store *st, const char *account_id, const char *name,
                          int64_t now, struct sa_trunk *out);
int sa_store_trunk_get(struct sa_store *st, const char *trunk_id, struct sa_trunk *out);
/* The trunk's carrier controls (lib/policy.h): the defaults until set.
 * ENOTFOUND when there is no such trunk. Set is durable. */
int sa_store_trunk_policy_get(struct sa_store *st, const char *trunk_id, struct sa_trunk_policy *out);
int sa_store_trunk_policy_set(struct sa_store *st, const char *trunk_id, const struct sa_trunk_policy *p);
typedef int (*sa_store_trunk_cb)(const struct sa_trunk *t, void *arg);   /* non-zero stops */
int sa_store_trunk_list(struct sa_store *st, const char *account_id, sa_store_trunk_cb cb, void *arg);

/* ---- credentials ---- */
struct sa_credential {
	char id[SA_ID_MAX];
	char trunk_id[SA_ID_MAX];
	char username[SA_USERNAME_MAX + 1];
	int64_t created_at;
	char ha1[SA_ALG_COUNT][SA_DIGEST_HEX_MAX];   /* H(username:realm:password) per algorithm */
	uint32_t password_version;         /* the current password's: 1 at creation, +1 per rotation */
	int64_t rotated_at;                /* the last rotation; 0: never rotated */
	/* The password before the current one (version password_version - 1,
	 * when that is >= 1): it authenticates while now < previous_until. Its
	 * HA1s are kept past that until the next rotation, so that a PBX still
	 * using it is named in the failure log. */
	int64_t previous_until;
	char previous_ha1[SA_ALG_COUNT][SA_DIGEST_HEX_MAX];
};

/* Whether c has a previous password at all (rotated at least once). */
bool sa_credential_has_previous(const struct sa_credential *c);
/* Whether c's previous password still authenticates at now. */
bool sa_credential_previous_live(const struct sa_credential *c, int64_t now);
/* Wipes both HA1 sets of a copy that is done with. */
void sa_credential_wipe(struct sa_credential *c);

/* Username 1..64 of [A-Za-z0-9._-]; password min_len..128 printable ASCII,
 * not containing the username (ignoring case). 0, or SA_STORE_EINVAL with a
 * one-line reason naming the rule in why. */
int sa_credential_validate(const char *username, const char *password, size_t password_len,
                           unsigned min_len, char *why, size_t whylen);

/* HA1 for every algorithm of c->username with realm, from a password of
 * len bytes (a NUL-terminated copy is made and wiped). 0 or SA_STORE_EIO. */
int sa_credential_ha1(struct sa_credential *c, const char *realm, const char *password, size_t len);

/* Validates, computes HA1 for every algorithm with the trunk's realm, wipes
 * the password copy, stores durably (fsync before returning). Unique per
 * (trunk, lower-case username): SA_STORE_EEXISTS. why may be NULL. */
int sa_store_credential_create(struct sa_store *st, const char *trunk_id, const char *username,
                               const char *password, size_t password_len, unsigned min_len,
                               int64_t now, struct sa_credential *out, char *why, size_t whylen);
/* Hot path: the credential for (trunk, username), case-insensitive. Reuses
 * one read transaction (reset/renew). With the credential index, from it. */
int sa_store_credential_find(struct sa_store *st, const char *trunk_id, const char *username,
                             struct sa_credential *out);

/*
 * The credential index: every credential of data.mdb also in this process's
 * heap (lib/kvindex), shared by the handles of one open store. With a
 * million credentials, data.mdb's tree is four pages deep and a daemon
 * between two REGISTERs loses them from its caches and TLB: a find then
 * costs microseconds, where the index reads two or three lines. Every
 * credential write, by any process, logs its (trunk, username) in data.mdb
 * (cred_changes, the newest CHANGES_KEEP); a find whose read transaction
 * is newer than the index first applies the changes logged since, from that
 * transaction, so that it answers as data.mdb does then (or later, when
 * another thread has caught the index up further); more than a few hundred
 * (a bulk of writes with no request between) it leaves to the refresh
 * below and reads data.mdb meanwhile. An index found behind
 * by more than the log keeps is let go at once (stale: finds descend
 * data.mdb) and built again by sa_store_credential_index_refresh, which a
 * thread off the hot path calls now and then. Every credential costs its
 * record's size and some 40 bytes more of memory (about 370 bytes with
 * three algorithms): what the daemon's start reports.
 *
 * Builds the index (one walk of every credential) for st and its dups.
 * SA_STORE_EINVAL when the store has no change log (a read-only open of
 * an older store); SA_STORE_EIO without memory. Without an index, or when
 * keeping it up fails (no memory: it is dropped, and stats say so), finds
 * descend data.mdb as before.
 */
int sa_store_credential_index(struct sa_store *st);
struct sa_store_index_stats {
	bool on;
	bool stale;              /* behind what the log keeps: finds read data.mdb until the refresh */
	uint64_t credentials;
	uint64_t bytes;          /* mapped for it: slots and records */
	uint64_t position;       /* in the change log */
	uint64_t rebuilds;       /* after falling behind the log */
	uint64_t dropped;        /* given up (no memory) */
};
void sa_store_credential_index_stats(struct sa_store *st, struct sa_store_index_stats *out);
/* Off the hot path (the daemon's store thread, every few seconds): applies
 * the changes logged since, a few thousand per hold of the index's lock, so
 * that finds seldom have any to apply and never wait long, and
 * builds a stale index again from a read transaction of its own, without
 * holding the index's lock (with a million credentials that takes a
 * second, which no find waits for); *rebuilt says it did. Nothing to do
 * without an index. A build that fails drops the index (stats). */
int sa_store_credential_index_refresh(struct sa_store *st, bool *rebuilt);
int sa_store_credential_get(struct sa_store *st, const char *cred_id, struct sa_credential *out);
typedef int (*sa_store_credential_cb)(const struct sa_credential *c, void *arg);
/* In creation order. */
int sa_store_credential_list(struct sa_store *st, const char *trunk_id, sa_store_credential_cb cb, void *arg);
/* The same walk starting after credential after_id of that trunk (NULL or
 * "": from the first), so that a page reads only what it returns: cb
 * returns non-zero to stop. ENOTFOUND: no such trunk; EINVAL: after_id is
 * no credential of the trunk (unknown, another trunk's, or deleted). */
int sa_store_credential_list_after(struct sa_store *st, const char *trunk_id, const char *after_id,
                                   sa_store_credential_cb cb, void *arg);
/* Deletes the credential durably, with a tombstone (see sa_store_deleted_since).
 * Its bindings (in runtime/, which the caller may not have open) are skipped
 * by every binding read from then on and removed by the daemon. ENOTFOUND
 * when the id is not a credential of that trunk. */
int sa_store_credential_delete(struct sa_store *st, const char *trunk_id, const char *cred_id);

/* Rotation: the longest overlap, and the one taken when none is asked for. */
#define SA_ROTATE_OVERLAP_MAX     86400
#define SA_ROTATE_OVERLAP_DEFAULT 3600
/* Gives credential cred_id of trunk_id a new password (validated as at
 * create; it must differ from the current one): the current password
 * becomes the previous one, authenticating for overlap seconds more
 * (0..SA_ROTATE_OVERLAP_MAX; 0: not at all), and the one before it stops
 * at once. password_version goes up by one; seq, bindings and calls are
 * untouched. Durable. ENOTFOUND: not a credential of that trunk; EINVAL
 * with why (may be NULL) naming the rule. */
int sa_store_credential_rotate(struct sa_store *st, const char *trunk_id, const char *cred_id,
                               const char *password, size_t password_len, unsigned min_len, unsigned overlap,
                               int64_t now, struct sa_credential *out, char *why, size_t whylen);

/* The rotation itself, for the database's store (lib/pgstore) too: c takes
 * the new password's HA1s (with realm), its current ones become the
 * previous, valid until now + overlap; the version goes up. EINVAL (the
 * same password) or EFULL (the version's limit) with why; c unchanged then. */
int sa_credential_rotate_apply(struct sa_credential *c, const char *realm, const char *password, size_t len,
                               unsigned overlap, int64_t now, char *why, size_t whylen);

/* Credentials deleted after tombstone position after (0: from the first), in
 * order: cb gets each id (non-zero stops); *last is set to the highest
 * position seen (unchanged if none). The newest 100 000 tombstones are kept;
 * positions are consecutive, so a first position beyond after + 1 means some
 * were dropped unseen (then sa_store_binding_purge_orphans). */
typedef int (*sa_store_deleted_cb)(const char *cred_id, void *arg);
int sa_store_deleted_since(struct sa_store *st, uint64_t after, sa_store_deleted_cb cb, void *arg, uint64_t *last);

/* ---- webhooks (their records; the calls are below) ---- */

#define SA_STORE_WH_URL_MAX      1024
#define SA_STORE_WH_SECRET_MAX   64
#define SA_STORE_WH_EVENT_MAX    32
#define SA_STORE_WH_ERROR_MAX    128
#define SA_STORE_WH_KEEP_DAYS    7        /* finished deliveries are listed this long, then pruned */
struct sa_webhook {
	char id[SA_ID_MAX];                   /* "wh_" + 16 of [a-z0-9] */
	char account_id[SA_ID_MAX];
	char url[SA_STORE_WH_URL_MAX];
	uint32_t events;                      /* bit (1 << enum sa_wh_event) per event */
	char secret[SA_STORE_WH_SECRET_MAX];  /* the signing key: shown at creation, then only used */
	int64_t created_at;
};

/* ---- fleet mode: this store as the mirror of the database ----
 * With [cluster], PostgreSQL is the system of record and the daemon applies
 * its change log here (daemon/cluster.c, decoded by lib/pgstore): records
 * arrive with the ids, HA1s and times the database gave them. */
enum sa_mirror_kind {
	SA_MIRROR_NONE,                  /* a change the mirror has no use for (skipped) */
	SA_MIRROR_ACCOUNT,
	SA_MIRROR_APIKEY,
	SA_MIRROR_APIKEY_GONE,
	SA_MIRROR_TRUNK,                 /* the trunk and its policy */
	SA_MIRROR_CREDENTIAL,
	SA_MIRROR_CREDENTIAL_GONE,       /* cred.id, cred.trunk_id */
	SA_MIRROR_WEBHOOK,               /* with its secret: the node signs with it */
	SA_MIRROR_WEBHOOK_GONE,          /* webhook.id, webhook.account_id: its deliveries go too */
};
struct sa_mirror_change {
	enum sa_mirror_kind kind;
	struct sa_account account;
	struct {
		unsigned char hash[SA_APIKEY_HASH_LEN];
		char account_id[SA_ID_MAX];
		int64_t created_at;
	} apikey;
	struct sa_trunk trunk;
	struct sa_trunk_policy policy;
	struct sa_credential cred;
	struct sa_webhook webhook;
};
/* Fills out with the next change: 1, or 0 when there is none left, or a
 * negative store error (the whole apply is then abandoned). */
typedef int (*sa_mirror_next_fn)(void *arg, struct sa_mirror_change *out);
/* In a full resync: does the database still hold this credential or webhook? */
typedef bool (*sa_mirror_keep_fn)(void *arg, const char *id);
/* Applies every change next gives, and records seq as the last sequence
 * applied, in one durable transaction: all of it or none. A record that
 * exists is replaced (a credential of the same id is kept as it is: they
 * never change); a credential that takes a (trunk, username) another id
 * holds removes that one first. keep non-NULL: a full resync, the changes
 * are the whole database, and every credential and webhook for which keep
 * says false is deleted (a webhook with its deliveries). Deletes leave tombstones and move the generation, so revocation
 * and the removal of bindings follow as for any delete. */
int sa_store_mirror_apply(struct sa_store *st, sa_mirror_next_fn next, sa_mirror_keep_fn keep, void *arg,
                          uint64_t seq);
/* The last sequence applied (0: none yet). */
int sa_store_mirror_seq(struct sa_store *st, uint64_t *seq);

/* ---- registrations (bindings): in runtime/, SA_STORE_EINVAL without SA_STORE_RUNTIME ---- */
#define SA_CONTACT_MAX 512
#define SA_UA_MAX 128
struct sa_binding {
	char cred_id[SA_ID_MAX];
	char trunk_id[SA_ID_MAX];
	char contact[SA_CONTACT_MAX];      /* the Contact URI as registered */
	char source[64];                   /* source address, no port */
	uint16_t source_port;
	char transport[8];                 /* "udp", "tcp", "tls" */
	char user_agent[SA_UA_MAX];
	char call_id[128];
	uint32_t cseq;
	int64_t registered_at;             /* first registration of this contact */
	int64_t updated_at;                /* last refresh */
	int64_t expires_at;
	uint32_t password_version;         /* of the password the REGISTER answered with (1 in older stores) */
};
/* Add or refresh (same cred_id + contact). Written without fsync; see
 * sa_store_flush. max_contacts per credential (0 = unlimited): EFULL. */
int sa_store_binding_put(struct sa_store *st, const struct sa_binding *b, unsigned max_contacts);
int sa_store_binding_delete(struct sa_store *st, const char *cred_id, const char *contact);
int sa_store_binding_delete_all(struct sa_store *st, const char *cred_id);
typedef int (*sa_store_binding_cb)(const struct sa_binding *b, void *arg);
int sa_store_binding_list_credential(struct sa_store *st, const char *cred_id, sa_store_binding_cb cb, void *arg);
int sa_store_binding_list_trunk(struct sa_store *st, const char *trunk_id, sa_store_binding_cb cb, void *arg);
/* The trunk's live binding (expires after now, its credential not deleted)
 * written most recently, which is the one with the latest updated_at, of
 * those accept(b, arg) takes (NULL: all; it is called inside a read
 * transaction and must not call into the store): from the few the trunk's
 * list names (schema 7), walking the trunk's bindings only when none of
 * those is live and accepted. When none is accepted, the latest live one.
 * SA_STORE_ENOTFOUND when it has none. */
typedef bool (*sa_store_binding_pred)(const struct sa_binding *b, void *arg);
int sa_store_binding_latest(struct sa_store *st, const char *trunk_id, int64_t now, sa_store_binding_pred accept,
                            void *arg, struct sa_binding *out);
/* The same, and after it the trunk's other live accepted bindings its list
 * names, most recently written first: up to max in out, *n of them (the
 * walk, when no listed one is live and accepted, gives one). */
int sa_store_bindings_latest(struct sa_store *st, const char *trunk_id, int64_t now, sa_store_binding_pred accept,
                             void *arg, struct sa_binding *out, int max, int *n);
/* The bindings of a credential the caller has just read from this store
 * (the registrar, after authenticating with it): listed without looking
 * the credential up again, in the handle's shared read transaction, so cb
 * must not call into the store. */
int sa_store_binding_list_for(struct sa_store *st, const struct sa_credential *c, sa_store_binding_cb cb,
                              void *arg);
/* Removes bindings with expires_at <= now; returns how many (>= 0) or an error. */
int sa_store_binding_expire(struct sa_store *st, int64_t now);
/* The same, calling cb with each binding as it is removed (inside the
 * removing transaction: cb must not call into the store; its return value
 * is ignored). */
int sa_store_binding_expire_each(struct sa_store *st, int64_t now, sa_store_binding_cb cb, void *arg);
/* The same, stopping once max or more are removed (a transaction's batch,
 * EXPIRE_BATCH, is finished first); *more when some may be left. */
int sa_store_binding_expire_some(struct sa_store *st, int64_t now, int max, sa_store_binding_cb cb, void *arg,
                                 bool *more);
/* Removes the bindings of credentials that no longer exist, a batch per
 * transaction; how many in *removed. Looks at every credential that has
 * bindings: for the daemon's start, not its loop (there, the tombstones). */
int sa_store_binding_purge_orphans(struct sa_store *st, uint64_t *removed);
/* The tombstone position up to which the bindings of deleted credentials are
 * removed, kept in runtime/ (without sync, like the bindings) so that a
 * restart follows the tombstones from there instead of purging, which looks
 * at the credential of every binding (with 100 000 bindings, most of a
 * large data.mdb paged in before the first request). get: ENOTFOUND when
 * none is recorded, or when main's tombstones never reached it (data.mdb
 * replaced or restored from an older copy): then purge. */
int sa_store_purged_get(struct sa_store *st, uint64_t *pos);
int sa_store_purged_set(struct sa_store *st, uint64_t pos);
/* One change of a REGISTER: b adds or refreshes the binding b->contact of
 * cred_id; b NULL removes contact (absent: nothing to do). */
struct sa_binding_change {
	const char *contact;
	const struct sa_binding *b;
};
/* Applies every change in one transaction: all of them, or none (the error).
 * A change that adds a binding is refused above runtime/'s headroom
 * (EMAPFULL); refreshes and removals are not. max_contacts: as
 * sa_store_binding_put, for the credential's bindings after the whole
 * request. The credential is read from data.mdb first: a writer holding
 * data.mdb's lock is not waited for. */
int sa_store_binding_apply(struct sa_store *st, const char *cred_id, const struct sa_binding_change *ch,
                           size_t n, unsigned max_contacts);
/* The same for a credential the caller has just read from this store (the
 * registrar, after authenticating with it): not read again. A credential
 * deleted in between leaves bindings that readers skip and the tombstone
 * removes, as with any write that races a delete. */
int sa_store_binding_apply_for(struct sa_store *st, const struct sa_credential *c,
                               const struct sa_binding_change *ch, size_t n, unsigned max_contacts);
/* How many live bindings (expires_at > now) the store holds: what the API
 * lists. The listings and the count skip bindings of deleted credentials. */
int sa_store_binding_count(struct sa_store *st, int64_t now, uint64_t *n);
/* Flush writes made without fsync (runtime/: bindings, failure log) to disk. */
int sa_store_flush(struct sa_store *st);

/* ---- auth-failure log: bounded per trunk, in runtime/ (SA_STORE_EINVAL without it) ---- */
struct sa_authfail {
	int64_t at;
	char trunk_id[SA_ID_MAX];
	char source[64];
	uint16_t source_port;
	char transport[8];
	char username[SA_USERNAME_MAX + 1];  /* as tried, truncated */
	char reason[24];   /* unknown_user bad_password stale_nonce replay malformed uri_mismatch
	                      source_not_allowed tls_required channel_limit rate_limit banned */
	char method[16];
	/* the version of the credential's password the request answered with
	 * (a wrong one: the previous password after its overlap, when it was
	 * that); 0 when not known. 64 bits keep the record's size apart from
	 * the layout before it (a 32-bit field would fit in its padding). */
	int64_t password_version;
};
/* Appends; keeps at most keep records per trunk (oldest dropped). No fsync.
 * ENOTFOUND for a trunk that does not exist. */
int sa_store_authfail_add(struct sa_store *st, const struct sa_authfail *f, unsigned keep);
typedef int (*sa_store_authfail_cb)(const struct sa_authfail *f, void *arg);
/* Newest first, at most limit, only at >= since. */
int sa_store_authfail_list(struct sa_store *st, const char *trunk_id, int64_t since, unsigned limit,
                           sa_store_authfail_cb cb, void *arg);
/* As sa_store_authfail_list, only records older than before_seq (UINT64_MAX:
 * from the newest), each with its sequence number: its place in the trunk's
 * log, which only grows, so it stays a valid position after the record has
 * been trimmed. */
typedef int (*sa_store_authfail_seq_cb)(const struct sa_authfail *f, uint64_t seq, void *arg);
int sa_store_authfail_page(struct sa_store *st, const char *trunk_id, int64_t since, uint64_t before_seq,
                           unsigned limit, sa_store_authfail_seq_cb cb, void *arg);

/* ---- idempotency: the first answer to a POST with an Idempotency-Key ---- */
#define SA_STORE_IDEM_TTL    (24 * 3600)   /* seconds an answer is replayed */
#define SA_IDEM_HASH         32
#define SA_IDEM_LOCATION_MAX 256
#define SA_IDEM_BODY_MAX     65536
struct sa_idem {
	int64_t created_at;
	unsigned char fingerprint[SA_IDEM_HASH];   /* of the request: a replay must match it */
	int status;
	char location[SA_IDEM_LOCATION_MAX];       /* the answer's Location, "" when none */
	char *body;                                /* sa_store_idem_get: malloc'd, NUL-terminated; free() it */
	size_t body_len;
};
/* The answer kept for (account, hash of the key), unless it is
 * SA_STORE_IDEM_TTL old at now: ENOTFOUND. */
int sa_store_idem_get(struct sa_store *st, const char *account_id, const unsigned char hash[SA_IDEM_HASH],
                      int64_t now, struct sa_idem *out);
/* Keeps an answer durably (replacing an expired one under the same key) and
 * removes a few that expired by now. EMAPFULL above the headroom. */
int sa_store_idem_put(struct sa_store *st, const char *account_id, const unsigned char hash[SA_IDEM_HASH],
                      const struct sa_idem *in, int64_t now);

/* ---- webhooks: an account's subscriptions, and each event's deliveries ---- */
/* Stores durably a new webhook with a fresh id and secret (out). The URL
 * and events are the caller's to validate. EMAPFULL above the headroom. */
int sa_store_webhook_create(struct sa_store *st, const char *account_id, const char *url, uint32_t events,
                            int64_t now, struct sa_webhook *out);
int sa_store_webhook_get(struct sa_store *st, const char *webhook_id, struct sa_webhook *out);
/* Removes the webhook (ENOTFOUND unless it is account_id's) and its deliveries. */
int sa_store_webhook_delete(struct sa_store *st, const char *account_id, const char *webhook_id);
typedef int (*sa_store_webhook_cb)(const struct sa_webhook *w, void *arg);   /* non-zero stops */
/* An account's webhooks in id order, from after after_id ("" or NULL: the
 * first); EINVAL when after_id is not one of the account's. */
int sa_store_webhook_list_after(struct sa_store *st, const char *account_id, const char *after_id,
                                sa_store_webhook_cb cb, void *arg);
/* Every webhook of every account, with its secret (fleet mode: a node's own,
 * made before its database had webhooks, are copied there). */
int sa_store_webhook_each(struct sa_store *st, sa_store_webhook_cb cb, void *arg);
/* "whsec_" and 32 random bytes as 43 base64url characters (the database's
 * webhooks get theirs here too). */
int sa_store_webhook_secret_make(char out[SA_STORE_WH_SECRET_MAX]);
/* How many webhooks there are, all accounts together. */
int sa_store_webhook_count(struct sa_store *st, uint64_t *n);

enum sa_delivery_status { SA_DLV_PENDING = 0, SA_DLV_DELIVERED, SA_DLV_FAILED };
struct sa_delivery {
	char id[SA_ID_MAX];                   /* "dlv_" + 16 hex digits: creation order */
	char webhook_id[SA_ID_MAX];
	char event[SA_STORE_WH_EVENT_MAX];
	int32_t status;                       /* enum sa_delivery_status */
	uint32_t attempts;
	int32_t last_status_code;             /* the target's HTTP status; 0: none yet or no answer */
	char last_error[SA_STORE_WH_ERROR_MAX];   /* "" when none */
	int64_t next_attempt_at;              /* pending only; else 0 */
	int64_t created_at;
	char *payload;                        /* the body sent each time (malloc'd by the reads that say so) */
	size_t payload_len;
};
/* Adds pending deliveries of one event (payload, payload_len) to each of
 * n webhooks, due at once, in one durable transaction; their ids into
 * ids[i] (may be NULL). */
int sa_store_delivery_add(struct sa_store *st, const char (*webhook_ids)[SA_ID_MAX], unsigned n, const char *event,
                          const char *payload, size_t payload_len, int64_t now, char (*ids)[SA_ID_MAX]);
/* Fleet mode: from now on, new deliveries get random ids ("dlv_" and 16
 * hex digits of 8 random bytes) rather than this store's sequence, so that
 * the ids of every node's deliveries differ in the fleet's list. */
void sa_store_delivery_ids_random(struct sa_store *st);
/* A delivery with its payload (free out->payload). */
int sa_store_delivery_get(struct sa_store *st, const char *delivery_id, struct sa_delivery *out);
/* Records an attempt's outcome: status, attempts, last_status_code,
 * last_error and next_attempt_at as in d (payload not touched); a pending
 * delivery stays due at next_attempt_at, another one leaves the due list. */
int sa_store_delivery_update(struct sa_store *st, const struct sa_delivery *d);
/* Up to max ids of pending deliveries due by now, soonest first; their
 * count in *n, and the soonest later due time in *next (INT64_MAX: none). */
int sa_store_delivery_due(struct sa_store *st, int64_t now, char (*ids)[SA_ID_MAX], unsigned max, unsigned *n,
                          int64_t *next);
typedef int (*sa_store_delivery_cb)(const struct sa_delivery *d, void *arg);   /* no payload; non-zero stops */
/* A webhook's deliveries in creation order, from after after_id; EINVAL when
 * after_id is not one of this webhook's. */
int sa_store_delivery_list_after(struct sa_store *st, const char *webhook_id, const char *after_id,
                                 sa_store_delivery_cb cb, void *arg);
/* Removes up to max finished deliveries created before `before`; how many in *removed. */
int sa_store_delivery_prune(struct sa_store *st, int64_t before, unsigned max, unsigned *removed);

#endif
