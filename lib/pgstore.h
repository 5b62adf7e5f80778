/* pgstore.h: fleet mode's system of record in PostgreSQL: schema, the admin commands, the change log's rows.
 *
 * Built only when configure found libpq (HAVE_LIBPQ). The calls mirror
 * store.h's for what sipauthctl does, with the same errors (enum
 * sa_store_err) and the same rules (lib/store.c's validation, HA1s, ids),
 * so that `sipauthctl --database` and `--store` answer alike. They block:
 * for sipauthctl and the daemon's start-up, never its loop (daemon/cluster.c
 * drives libpq's asynchronous calls with the queries below).
 *
 * Every write goes through a table whose trigger appends the row to
 * change_log under a lock on change_seq taken by the same transaction, so
 * sequences are gap-free and in commit order, and NOTIFYs sipauthd_changes
 * as a wake-up: whoever writes (sipauthctl, the API of any node, an
 * operator's SQL) is seen by every node. See SCHEMA in pgstore.c.
 */
#ifndef SA_PGSTORE_H
#define SA_PGSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "store.h"

#define SA_PG_SCHEMA_VERSION 6
#define SA_PG_CHANNEL "sipauthd_changes"   /* NOTIFY payload: the new sequence */

struct sa_pg;

/* Connects (libpq connection string; unless it says otherwise, a connection
 * attempt gives up after 3 s and a connection whose sent data is not
 * acknowledged for 5 s is dropped: a database away answers EUNAVAIL soon).
 * SA_STORE_EUNAVAIL with the server's or libpq's words in why when it cannot.
 * Errors of every call: EUNAVAIL when the connection is (or went) down before
 * anything was written; EUNKNOWN when it broke after a write was sent. */
int sa_pg_open(struct sa_pg **out, const char *conninfo, char *why, size_t whylen);
/* The same defaults for the feed's asynchronous connection (PQconnectStartParams). */
struct pg_conn *sa_pg_connect_start(const char *conninfo);
/* Still connected? A connection the server closed (stopped, failed over)
 * is seen at once; one idle for a while is asked (SELECT 1) first. Either
 * way a server restarted meanwhile costs a reconnection, not a request. */
bool sa_pg_alive(struct sa_pg *pg, int64_t now, int64_t idle_secs);
void sa_pg_close(struct sa_pg *pg);
/* The last failure in the server's or libpq's words (one line; "" if none). */
const char *sa_pg_detail(const struct sa_pg *pg);
/* "DBNAME on HOST:PORT", for messages: never the connection string, which may hold a password. */
const char *sa_pg_name(const struct sa_pg *pg);

/* Creates the schema and records domain (NULL: SA_DEFAULT_DOMAIN), or
 * upgrades an older schema (domain is then the recorded one). *from: 0 when
 * created, else the version upgraded from. EEXISTS: already at this
 * version; ESCHEMA: a newer one; EINVAL: a bad domain. */
int sa_pg_init(struct sa_pg *pg, const char *domain, int *from);
/* The schema is there and of this version: ENOTINIT, ESCHEMA otherwise. */
int sa_pg_check(struct sa_pg *pg);
int sa_pg_domain(struct sa_pg *pg, char *out, size_t outlen);

int sa_pg_account_create(struct sa_pg *pg, const char *name, int64_t now, struct sa_account *out);
int sa_pg_apikey_create(struct sa_pg *pg, const char *account_id, int64_t now, char *key);
int sa_pg_apikey_list(struct sa_pg *pg, const char *account_id, sa_store_apikey_cb cb, void *arg);
int sa_pg_apikey_revoke(struct sa_pg *pg, const char *account_id, const char *key_id);
int sa_pg_trunk_create(struct sa_pg *pg, const char *account_id, const char *name, int64_t now,
                       struct sa_trunk *out);
int sa_pg_trunk_get(struct sa_pg *pg, const char *trunk_id, struct sa_trunk *out);
int sa_pg_trunk_policy_get(struct sa_pg *pg, const char *trunk_id, struct sa_trunk_policy *out);
int sa_pg_trunk_policy_set(struct sa_pg *pg, const char *trunk_id, const struct sa_trunk_policy *p);
int sa_pg_trunk_list(struct sa_pg *pg, const char *account_id, sa_store_trunk_cb cb, void *arg);
int sa_pg_credential_create(struct sa_pg *pg, const char *trunk_id, const char *username, const char *password,
                            size_t password_len, unsigned min_len, int64_t now, struct sa_credential *out,
                            char *why, size_t whylen);
int sa_pg_credential_list(struct sa_pg *pg, const char *trunk_id, sa_store_credential_cb cb, void *arg);
/* As sa_store_credential_list_after (EINVAL: after_id is no credential of the trunk). */
int sa_pg_credential_list_after(struct sa_pg *pg, const char *trunk_id, const char *after_id,
                                sa_store_credential_cb cb, void *arg);
/* As sa_store_credential_get, without the HA1s (they stay in the database). */
int sa_pg_credential_get(struct sa_pg *pg, const char *cred_id, struct sa_credential *out);
int sa_pg_credential_delete(struct sa_pg *pg, const char *trunk_id, const char *cred_id);
/* As sa_store_credential_rotate (the same rules: sa_credential_rotate_apply), in one transaction. */
int sa_pg_credential_rotate(struct sa_pg *pg, const char *trunk_id, const char *cred_id, const char *password,
                            size_t password_len, unsigned min_len, unsigned overlap, int64_t now,
                            struct sa_credential *out, char *why, size_t whylen);

/* ---- nonce keys (secrets: never logged, never in the change log) ----
 * The current key is the newest one not retired; a node also keeps the
 * newest one retired within its nonce_ttl. No key is older than
 * SA_PG_NONCE_KEY_KEEP seconds after its retirement (nonce_ttl's maximum):
 * ids (1..255) of older ones are used again. */
#define SA_PG_NONCE_KEY_KEEP 3600
/* Makes a new current key (id: the next after the current one, wrapping
 * within 1..255, skipping ids still kept) and retires the current one, in
 * one transaction. *id: the new key's, *previous: the retired one's (0: none).
 * EFULL: every id is kept (255 rotations within an hour). */
int sa_pg_nonce_key_rotate(struct sa_pg *pg, int64_t now, unsigned *id, unsigned *previous);
/* $1 the id of the current key the node holds (0: none), $2 its nonce_ttl:
 * a head row (the database's current id, 0 when there is none; "", false),
 * then, only when that id differs from $1, the keys to install in order
 * (id, secret in hex, retired): the newest retired within $2, then the
 * current one. So a node asks every second and secrets cross only on a change. */
extern const char sa_pg_nonce_keys_sql[];
/* $1 a new secret in hex: the first key, when there is no current one (two
 * nodes at once: one of them makes it). */
extern const char sa_pg_nonce_key_first_sql[];

/* ---- the fleet's auth-failure log ----
 * Each node pushes its failures (the records of its local log) with its
 * name; the API of every node lists a trunk's from here, newest first. */
/* $1 node, $2 a JSON array of records {at, trunk_id, source, source_port,
 * transport, username, reason, method, password_version}. */
extern const char sa_pg_authfail_push_sql[];
/* $1 node, $2 keep: the node's records past the newest keep of each trunk go. */
extern const char sa_pg_authfail_prune_sql[];
typedef int (*sa_pg_authfail_cb)(const struct sa_authfail *f, uint64_t id, const char *node, void *arg);
/* As sa_store_authfail_page: a trunk's records of every node, newest first,
 * at >= since, id < before_id (UINT64_MAX: from the newest), at most limit. */
int sa_pg_authfail_page(struct sa_pg *pg, const char *trunk_id, int64_t since, uint64_t before_id, unsigned limit,
                        sa_pg_authfail_cb cb, void *arg);

/* ---- the fleet's calls in progress (schema 4) ----
 * Each node writes its own calls (daemon/cluster.c, after its heartbeat);
 * the API of every node lists a trunk's from here, each with its node. */
/* $1 node, $2 its calls that ended (JSON array of {trunk_id, call_id}),
 * $3 its calls that started or changed (JSON array of {trunk_id, call_id,
 * credential_id, inbound, confirmed, started_at}). */
extern const char sa_pg_calls_push_sql[];
/* $1 node: its rows go (after a connect, before it writes them all again). */
extern const char sa_pg_calls_wipe_sql[];
struct sa_pg_call {
	const char *node, *call_id, *cred_id;   /* cred_id "": none (a trunk by address) */
	bool inbound, confirmed;
	int64_t started_at;
};
typedef int (*sa_pg_call_cb)(const struct sa_pg_call *c, void *arg);
/* A trunk's calls held by live nodes (a beat within 4 s), ordered by Call-ID. */
int sa_pg_calls_list_trunk(struct sa_pg *pg, const char *trunk_id, sa_pg_call_cb cb, void *arg);
/* ---- Idempotency-Key answers, shared by the fleet ----
 * The LMDB store's records (struct sa_idem, SA_STORE_IDEM_TTL), with a
 * claim first: the node that runs a request inserts the key as "in
 * progress" (status 0) in its own statement, so that the same key at
 * another node meanwhile waits on that insert and then sees the claim;
 * the answer then replaces the claim. Ages are by the database's clock.
 * A claim older than SA_PG_IDEM_CLAIM_STALE (its node died or lost the
 * database mid-request) is taken over. */
#define SA_PG_IDEM_CLAIM_STALE 60
#define SA_PG_IDEM_CLAIM_LEN   32   /* hex of 16 random bytes */
/* ENOTFOUND: the key is claimed for this request (claim: the token to keep
 * or release it with); OK: a record is there, in *out (status 0: another
 * request holds the claim; body malloc'd, free() it); or the error. */
int sa_pg_idem_claim(struct sa_pg *pg, const char *account_id, const unsigned char hash[SA_IDEM_HASH],
                     const unsigned char fingerprint[SA_IDEM_HASH], struct sa_idem *out,
                     char claim[SA_PG_IDEM_CLAIM_LEN + 1]);
/* Replaces the claim with the answer in (ENOTFOUND: the claim was taken
 * over meanwhile), then removes a few expired records. */
int sa_pg_idem_keep(struct sa_pg *pg, const char *account_id, const unsigned char hash[SA_IDEM_HASH],
                    const char *claim, const struct sa_idem *in);
/* Gives the claim up (the answer is not to be kept: a retry runs again). */
int sa_pg_idem_release(struct sa_pg *pg, const char *account_id, const unsigned char hash[SA_IDEM_HASH],
                       const char *claim);

/* ---- webhooks, shared by the fleet (schema 6) ----
 * A webhook is configuration, like a credential: written here, logged, and
 * mirrored into every node's store with its secret (as the HA1s: the node
 * role reads both), so that each node signs and sends the events it makes.
 * The calls mirror the store's (sa_store_webhook_*), with the same errors. */
/* A new webhook (fresh id and secret into out) unless the account has max
 * already (EFULL): counted and inserted under a lock per account, so two
 * nodes at once cannot pass the limit together. */
int sa_pg_webhook_create(struct sa_pg *pg, const char *account_id, const char *url, uint32_t events, unsigned max,
                         int64_t now, struct sa_webhook *out);
/* Without its secret (out->secret ""): only the mirror's copy signs. */
int sa_pg_webhook_get(struct sa_pg *pg, const char *webhook_id, struct sa_webhook *out);
/* The webhook (ENOTFOUND unless it is account_id's) and the fleet's records of its deliveries. */
int sa_pg_webhook_delete(struct sa_pg *pg, const char *account_id, const char *webhook_id);
/* An account's webhooks in id order from after after_id, without secrets;
 * EINVAL when after_id is not one of the account's. */
int sa_pg_webhook_list_after(struct sa_pg *pg, const char *account_id, const char *after_id,
                             sa_store_webhook_cb cb, void *arg);
/* $1 a node's webhooks (a JSON array of webhooks rows, secrets included),
 * $2 the last sequence it applied: those the database never had are copied
 * in (the node's own, made before the upgrade to schema 6), unless their
 * account is gone, the change log names them (made or deleted through the
 * database: the node has yet to apply that), or the log no longer reaches
 * back to the node (its resync decides). */
extern const char sa_pg_webhooks_adopt_sql[];
/* Each node writes the state of its deliveries ($1 node, $2 a JSON array of
 * {id, webhook_id, event, status, attempts, last_status_code, last_error,
 * next_attempt_at, created_at}, a delivery's later state after its earlier
 * one); rows of a webhook deleted meanwhile are not written, and the node's
 * finished ones older than SA_STORE_WH_KEEP_DAYS go. */
extern const char sa_pg_deliveries_push_sql[];
typedef int (*sa_pg_delivery_cb)(const struct sa_delivery *d, const char *node, void *arg);   /* non-zero stops */
/* A webhook's deliveries of every node in the order they reached the
 * database, from after after_id (EINVAL: not one of this webhook's), at most
 * limit, each with the node that sends it. */
int sa_pg_delivery_list_after(struct sa_pg *pg, const char *webhook_id, const char *after_id, unsigned limit,
                              sa_pg_delivery_cb cb, void *arg);

/* ---- the change feed (daemon/cluster.c sends these asynchronously) ----
 * Both answer rows of (seq, kind, op, payload, at_ms), the first one the
 * head: kind "head", payload the last sequence written (change_seq), so
 * that a reader sees whether the log still reaches back to it. */
/* $1: the last sequence applied, $2: at most this many changes, in order. */
extern const char sa_pg_changes_sql[];
/* The whole database as changes (one snapshot), for a full resync. */
extern const char sa_pg_snapshot_sql[];
/* $1 node, $2 address, $3 last sequence applied: the node's heartbeat. */
extern const char sa_pg_heartbeat_sql[];
/* $1 node, $2 its bindings of some credentials (JSON array of registrations
 * rows, sa_pg_binding_json), $3 those credentials' ids (JSON array). */
extern const char sa_pg_registrations_put_sql[];
/* $1 node: a head row, then every other node's binding, as changes' rows. */
extern const char sa_pg_registrations_load_sql[];
/* A change log row (table name, "insert"/"update"/"delete", the row as
 * JSON) as a mirror change. SA_STORE_EINVAL when it does not decode. */
int sa_pg_change_decode(const char *table, const char *op, const char *payload, struct sa_mirror_change *out);


/* ---- registrations: each owned by the node that holds the PBX's flow ---- */
#define SA_NODE_MAX 64
/* A registrations row (to_jsonb) as a binding and its owner. EINVAL when it does not decode. */
int sa_pg_binding_decode(const char *payload, struct sa_binding *b, char *node, size_t nodelen);
/* A binding as a registrations row for sa_pg_registrations_put_sql (NULL: a
 * string that is not UTF-8). */
json_t *sa_pg_binding_json(const struct sa_binding *b, const char *node);
typedef int (*sa_pg_binding_cb)(const struct sa_binding *b, const char *node, void *arg);
/* A trunk's live bindings in the fleet whose owner is alive, in the order
 * of sa_store_binding_list_trunk; cb returns non-zero to stop. */
int sa_pg_registration_list_trunk(struct sa_pg *pg, const char *trunk_id, int64_t now, sa_pg_binding_cb cb, void *arg);

#endif
