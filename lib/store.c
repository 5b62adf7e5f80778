/* store.c: the LMDB store: named databases, records, indexes and ids behind store.h. */
#define _GNU_SOURCE   /* fallocate */
/* SHA-256 through the low-level calls (deprecated in OpenSSL 3 but kept and
 * supported, as lib/nonce.c uses them): SHA256() is EVP_Q_digest there,
 * which fetches the algorithm on every call, four times the work for the
 * contact hash in every binding key (a REGISTER's). */
#define OPENSSL_API_COMPAT 0x10100000L
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "store.h"
#include "kvindex.h"

/*
 * Layout. Two LMDB environments in the store's directory:
 *
 *   main (data.mdb)       what administrators write, durably (fsync per commit):
 *                         sipauthctl, the API, the daemon's nonce secret
 *   runtime (runtime/)    what the SIP path writes, without sync (flushed
 *                         every few seconds): registrations, the failure log
 *
 * They are apart so that an administrator's process holding the main
 * writer lock (stopped, or slow on a large change) never holds up a binding
 * write, and so that a full main map (credentials) and a full runtime map
 * (registrations) are separate conditions. Only a handle opened with
 * SA_STORE_RUNTIME (the daemon, never sipauthctl) opens runtime/.
 *
 * Every key made of several parts joins them with a NUL byte (ids and
 * usernames never contain one); numbers inside keys are 8-byte big-endian so
 * that LMDB's byte order is numeric order.
 *
 * main:
 *   meta               "schema_version" -> decimal text; "domain" -> text;
 *                      "nonce_secret" -> 32 bytes; "generation", "seq",
 *                      "del_seq", "chg_seq", "map_size" -> u64
 *   accounts           acc id -> struct sa_account
 *   apikeys            SHA-256(key) -> struct apikey_rec
 *   trunks             trunk id -> struct trunk_rec
 *   trunks_by_account  acc id \0 seq -> trunk id           (creation order)
 *   credentials        cred id -> its cred_by_user key
 *   cred_by_user       trunk id \0 lower(username) -> a compact credential record (cred_encode)
 *   cred_by_trunk      trunk id \0 seq -> cred id          (creation order)
 *   cred_deleted       del_seq -> cred id                  (tombstones, newest TOMBSTONES_KEEP)
 *   cred_changes       chg_seq -> a cred_by_user key        (every write of it, newest CHANGES_KEEP:
 *                      what the credential indexes follow)
 *   trunk_policy       trunk id -> struct sa_trunk_policy   (absent: the defaults)
 *   idempotency        acc id \0 SHA-256(Idempotency-Key) -> struct idem_rec + body
 *   idem_by_time       created_at \0 <idempotency key> -> ""   (expiry order)
 *   webhooks           wh id -> struct sa_webhook
 *   webhooks_by_account acc id \0 wh id -> ""
 *   deliveries         dlv id -> struct dlv_rec + payload   (ids in creation order)
 *   dlv_by_webhook     wh id \0 dlv id -> ""
 *   dlv_due            next_attempt_at \0 dlv id -> ""     (pending only; sign bit flipped)
 * runtime:
 *   bindings           cred id \0 SHA-256(contact) -> a compact binding record (binding_encode)
 *   bindings_by_trunk  trunk id \0 <binding key> -> ""
 *   bindings_by_expiry indexed_at \0 <binding key> -> ""  (sign bit flipped; at or
 *                      before the binding's expiry: struct brec)
 *   authfail           trunk id \0 seq -> struct sa_authfail
 *   authfail_state     trunk id -> struct authfail_state   (next seq, count)
 *   meta               "map_size" -> u64; "purged" -> u64 (sa_store_purged_get)
 *   trunk_latest       trunk id -> the binding keys of its most recent writes, newest
 *                      first (a length byte and the key each; LATEST_KEEP at most)
 *
 * A binding names its credential, which lives in the other environment: a
 * credential deleted in main (by a process that cannot write runtime/)
 * leaves a tombstone, every binding read skips bindings whose credential is
 * gone, and the daemon removes them (sa_store_deleted_since,
 * sa_store_binding_purge_orphans). Stores made before the split keep the
 * runtime databases in data.mdb; the first SA_STORE_RUNTIME open moves them.
 *
 * A contact URI can be longer than LMDB's 511-byte key limit, hence its hash
 * in binding keys. Records are the fixed structs below; a change to any of
 * them needs a new SA_STORE_SCHEMA_VERSION, and the readers keep reading
 * the layout before it, told apart by size (see "records of older layouts").
 * Schema 2 (rotation) grew the credential, the binding and the failure-log
 * record; schema-1 records are read as version 1 (credentials, bindings)
 * or an unknown version (failures), and rewritten in the new layout when
 * they next change. Schema 3 writes credentials and bindings compact
 * (cred_encode, binding_encode) and reads the struct layouts of 1 and 2.
 * Schema 4 keeps the credential record under its username (what an
 * authentication knows: one B-tree lookup, not two) and the username's key
 * under the id; a record of an older store is read where it is (under the
 * id, which cred_by_user then names) and moves when it next changes.
 * Schema 5 logs every credential write in cred_changes (sa_store_credential_index).
 * Schema 6 lets a binding's bindings_by_expiry entry lag behind its expiry
 * (struct brec). Schema 7 keeps each trunk's most recently written bindings in
 * trunk_latest (an inbound call's lookup); a store without the list is walked.
 * A writable open of an older store
 * records the current version, so that an older sipauthd refuses the store
 * rather than misread its records.
 */
enum { ENV_MAIN, ENV_RT, ENV_COUNT };

enum {
	DB_META, DB_ACCOUNTS, DB_APIKEYS, DB_TRUNKS, DB_TRUNKS_BY_ACCOUNT,
	DB_CREDS, DB_CRED_BY_USER, DB_CRED_BY_TRUNK, DB_CRED_DELETED, DB_TRUNK_POLICY,
	DB_IDEM, DB_IDEM_BY_TIME,
	DB_WEBHOOKS, DB_WH_BY_ACCOUNT, DB_DELIVERIES, DB_DLV_BY_WEBHOOK, DB_DLV_DUE, DB_CRED_CHANGES,
	DB_BINDINGS, DB_BINDINGS_BY_TRUNK, DB_BINDINGS_BY_EXPIRY,
	DB_AUTHFAIL, DB_AUTHFAIL_STATE, DB_RT_META, DB_TRUNK_LATEST, DB_COUNT
};
#define DB_RT_FIRST DB_BINDINGS   /* from here on, the runtime environment's */
#define DB_LEGACY_COUNT (DB_RT_META - DB_RT_FIRST)   /* kept in main before the split */
static const char *const db_names[DB_COUNT] = {
	"meta", "accounts", "apikeys", "trunks", "trunks_by_account",
	"credentials", "cred_by_user", "cred_by_trunk", "cred_deleted", "trunk_policy",
	"idempotency", "idem_by_time",
	"webhooks", "webhooks_by_account", "deliveries", "dlv_by_webhook", "dlv_due", "cred_changes",
	"bindings", "bindings_by_trunk", "bindings_by_expiry",
	"authfail", "authfail_state", "meta", "trunk_latest",
};
#define MAX_DBS 32                 /* per environment: ours and the legacy names */
#define TOMBSTONES_KEEP 100000     /* a daemon away longer than this many deletes purges all */
#define CHANGES_KEEP    100000     /* an index behind by more credential writes is built again */

#define ID_RAND_LEN     16
#define EXPIRE_BATCH    1000   /* bindings removed per transaction: short writer-lock holds */
#define KEY_MAX         256
#define PATH_LEN        4096   /* the store's directory and runtime/ in it */
#define HASH_LEN        SHA256_DIGEST_LENGTH
#define WALK_STOP       1
#define APIKEY_PREFIX   "tvx_sk_live_"

static const char alnum_lower[] = "abcdefghijklmnopqrstuvwxyz0123456789";
static const char base62[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/* One LMDB environment as this process holds it. LMDB lets a process open
 * an environment once, and its map may be resized only while no transaction
 * of the process is open on it: every transaction holds lock for reading
 * from begin to end, a map change holds it for writing. */
struct senv {
	MDB_env *env;
	bool reserved;       /* writable map, every page of it allocated on disk */
	uint64_t psize;      /* LMDB page size */
	pthread_rwlock_t lock;
	bool locked;         /* lock initialised */
};

/* The credential index (sa_store_credential_index): cred_by_user as of
 * change-log position pos, verified against main's transaction txnid. */
struct cindex {
	pthread_rwlock_t lock;
	bool locked;            /* lock initialised */
	struct sa_kvindex *kv;  /* NULL: no index, finds descend cred_by_user */
	bool stale;             /* kv NULL, behind what the log keeps: sa_store_credential_index_refresh builds it */
	uint64_t pos;
	uint64_t txnid;         /* the last read transaction seen at pos (0: none) */
	uint64_t rebuilds;
	uint64_t dropped;
};

/* What every handle on one open store shares (sa_store_dup). The
 * environments close with the last handle. */
struct shared {
	struct senv env[ENV_COUNT];   /* env[ENV_RT].env NULL: opened without SA_STORE_RUNTIME */
	MDB_dbi dbi[DB_COUNT];
	bool rdonly;
	bool tombstones;     /* main has cred_deleted (a read-only open of an older store may not) */
	bool policies;       /* main has trunk_policy (likewise) */
	bool idem;           /* main has idempotency (likewise) */
	bool webhooks;       /* main has webhooks and deliveries (likewise) */
	bool dlv_random;     /* fleet mode: delivery ids are random (set before the delivery thread starts) */
	pthread_mutex_t mu;  /* guards refs, fault and swept */
	unsigned refs;
	struct sa_store_fault fault;
	uint64_t swept;      /* tombstones up to here have no bindings left (binding_count) */
	bool changes;        /* main has cred_changes (a read-only open of an older store may not) */
	bool latest;         /* runtime has trunk_latest (likewise) */
	struct cindex idx;
};

/* A handle: used by one thread at a time; its own read transactions and
 * error state. */
struct sa_store {
	struct shared *sh;
	MDB_txn *rtxn[ENV_COUNT];   /* the reused read transactions, reset between uses */
	unsigned held[ENV_COUNT];   /* read locks this handle holds (transactions nest) */
	bool ready;          /* schema_version seen and matching */
	int code;            /* LMDB or errno value of the last failing call in this transaction */
	char detail[128];    /* ... or our own words for it (the headroom rule) */
};

struct apikey_rec {
	char account_id[SA_ID_MAX];
	int64_t created_at;
};
struct trunk_rec {
	uint64_t seq;
	struct sa_trunk t;
};
struct cred_rec {
	uint64_t seq;
	struct sa_credential c;
};

/* ---- records of older layouts, frozen: read, never written ---- */

/* A credential as schema 1 wrote it: no version, no previous password. */
struct cred_rec_v1 {
	uint64_t seq;
	struct {
		char id[SA_ID_MAX];
		char trunk_id[SA_ID_MAX];
		char username[SA_USERNAME_MAX + 1];
		int64_t created_at;
		char ha1[SA_ALG_COUNT][SA_DIGEST_HEX_MAX];
	} c;
};
/* A binding as schema 1 wrote it: struct sa_binding up to expires_at. */
struct binding_v1 {
	char cred_id[SA_ID_MAX];
	char trunk_id[SA_ID_MAX];
	char contact[SA_CONTACT_MAX];
	char source[64];
	uint16_t source_port;
	char transport[8];
	char user_agent[SA_UA_MAX];
	char call_id[128];
	uint32_t cseq;
	int64_t registered_at;
	int64_t updated_at;
	int64_t expires_at;
};
/* A failure as schema 1 wrote it in runtime/: struct sa_authfail up to method. */
struct authfail_v2 {
	int64_t at;
	char trunk_id[SA_ID_MAX];
	char source[64];
	uint16_t source_port;
	char transport[8];
	char username[SA_USERNAME_MAX + 1];
	char reason[24];
	char method[16];
};
/* The readers tell layouts apart by size (val_rec_older): each older one
 * is smaller, and its fields lead the new struct at the same places. */
_Static_assert(sizeof(struct cred_rec_v1) < sizeof(struct cred_rec), "credential layouts share a size");
_Static_assert(sizeof(struct binding_v1) < sizeof(struct sa_binding), "binding layouts share a size");
_Static_assert(sizeof(struct authfail_v2) < sizeof(struct sa_authfail), "failure layouts share a size");
struct authfail_state {
	uint64_t next_seq;
	uint64_t count;
};

/* A key under construction: parts appended, NUL between them. */
struct key {
	unsigned char b[KEY_MAX];
	size_t len;
};

const char *sa_store_strerror(int err)
{
	switch (err) {
	case SA_STORE_OK: return "ok";
	case SA_STORE_ENOTFOUND: return "not found";
	case SA_STORE_EEXISTS: return "already exists";
	case SA_STORE_EINVAL: return "invalid input";
	case SA_STORE_ENOTINIT: return "store not initialised";
	case SA_STORE_ESCHEMA: return "incompatible store schema version";
	case SA_STORE_EIO: return "store I/O error";
	case SA_STORE_EFULL: return "limit reached";
	case SA_STORE_EMAPFULL: return "store map full";
	case SA_STORE_ENOSPC: return "disk full";
	case SA_STORE_ECORRUPT: return "store corrupted";
	case SA_STORE_EACCES: return "permission denied";
	case SA_STORE_EUNAVAIL: return "database unavailable";
	case SA_STORE_EUNKNOWN: return "database did not confirm the write";
	default: return "unknown store error";
	}
}

const char *sa_store_cause(int err)
{
	switch (err) {
	case SA_STORE_OK: return "ok";
	case SA_STORE_ENOTFOUND: return "not_found";
	case SA_STORE_EEXISTS: return "exists";
	case SA_STORE_EINVAL: return "invalid";
	case SA_STORE_ENOTINIT: return "not_initialised";
	case SA_STORE_ESCHEMA: return "version_mismatch";
	case SA_STORE_EFULL: return "limit";
	case SA_STORE_EMAPFULL: return "map_full";
	case SA_STORE_ENOSPC: return "disk_full";
	case SA_STORE_ECORRUPT: return "corrupted";
	case SA_STORE_EACCES: return "permission";
	case SA_STORE_EUNAVAIL: return "database_unavailable";
	case SA_STORE_EUNKNOWN: return "outcome_unknown";
	default: return "io";
	}
}

/* ---- small helpers: keys, values, text ---- */

static void key_put(struct key *k, const void *p, size_t n)
{
	memcpy(k->b + k->len, p, n);
	k->len += n;
}

static void key_str(struct key *k, const char *s)
{
	key_put(k, s, strlen(s));
}

static void key_sep(struct key *k)
{
	k->b[k->len++] = '\0';
}

static void key_u64(struct key *k, uint64_t v)
{
	for (int i = 7; i >= 0; i--)
		k->b[k->len++] = (unsigned char)(v >> (i * 8));
}

static bool key_eq(const struct key *a, const struct key *b)
{
	return a->len == b->len && memcmp(a->b, b->b, a->len) == 0;
}

static MDB_val key_val(const struct key *k)
{
	return (MDB_val){ .mv_size = k->len, .mv_data = (void *)k->b };
}

static MDB_val str_val(const char *s)
{
	return (MDB_val){ .mv_size = strlen(s), .mv_data = (void *)s };
}

static MDB_val mem_val(const void *p, size_t n)
{
	return (MDB_val){ .mv_size = n, .mv_data = (void *)p };
}

/* An id as found in our keys: 1..SA_ID_MAX-1 bytes. Anything else names nothing. */
static bool id_ok(const char *id)
{
	if (id == NULL)
		return false;
	size_t n = strnlen(id, SA_ID_MAX);
	return n > 0 && n < SA_ID_MAX;
}

static char ascii_lower(char c)
{
	return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

/* Copies a value (not NUL-terminated in the store) into a C string. */
static int val_str(const MDB_val *v, char *out, size_t outlen)
{
	if (v->mv_size >= outlen)
		return SA_STORE_EIO;
	memcpy(out, v->mv_data, v->mv_size);
	out[v->mv_size] = '\0';
	return SA_STORE_OK;
}

static int val_rec(const MDB_val *v, void *out, size_t len)
{
	if (v->mv_size != len)
		return SA_STORE_EIO;
	memcpy(out, v->mv_data, len);
	return SA_STORE_OK;
}

/* A record of the current layout (len bytes), or of the older one it grew
 * from (old_len, its fields leading the new struct): copied whole, or the
 * older part over zeros with *older set, for the caller to fill in every
 * field the older layout lacked (its padding may have been copied in). */
static int val_rec_older(const MDB_val *v, void *out, size_t len, size_t old_len, bool *older)
{
	*older = v->mv_size == old_len;
	if (!*older)
		return val_rec(v, out, len);
	memset(out, 0, len);
	memcpy(out, v->mv_data, old_len);
	return SA_STORE_OK;
}

/* ---- compact records: numbers as they are, strings as a 16-bit length and their bytes ---- */

struct enc {
	unsigned char *p;
	size_t len;
	bool bad;   /* decoding: the record ended early, or a string does not fit */
};

static void enc_put(struct enc *e, const void *v, size_t n)
{
	memcpy(e->p + e->len, v, n);
	e->len += n;
}

static void enc_str(struct enc *e, const char *s, size_t size)
{
	uint16_t n = (uint16_t)strnlen(s, size - 1);

	enc_put(e, &n, sizeof n);
	enc_put(e, s, n);
}

static void dec_get(struct enc *d, const unsigned char *end, void *v, size_t n)
{
	if (d->bad || (size_t)(end - (d->p + d->len)) < n) {
		d->bad = true;
		return;
	}
	memcpy(v, d->p + d->len, n);
	d->len += n;
}

/* A string into its field (zeroed by the caller); one that does not fit is bad. */
static void dec_str(struct enc *d, const unsigned char *end, char *out, size_t size)
{
	uint16_t n = 0;

	dec_get(d, end, &n, sizeof n);
	if (n >= size)
		d->bad = true;
	dec_get(d, end, out, n);
}

/* A record's fields for the compact codec: numbers, copied as they are, then
 * strings (NUL-terminated in fields of size[i]). Built over the struct the
 * record is written from or read into. */
#define FIELDS_MAX 10
struct fields {
	void *num[FIELDS_MAX];
	size_t num_len[FIELDS_MAX];
	char *str[FIELDS_MAX];
	size_t str_size[FIELDS_MAX];
	int nnum, nstr;
};

static void field_num(struct fields *f, void *p, size_t len)
{
	f->num[f->nnum] = p;
	f->num_len[f->nnum++] = len;
}

static void field_str(struct fields *f, char *p, size_t size)
{
	f->str[f->nstr] = p;
	f->str_size[f->nstr++] = size;
}

/* tag, then the fields; out has room for all of them; returns the length. */
static size_t compact_encode(unsigned char tag, const struct fields *f, unsigned char *out)
{
	struct enc e = { out, 0, false };

	enc_put(&e, &tag, 1);
	for (int i = 0; i < f->nnum; i++)
		enc_put(&e, f->num[i], f->num_len[i]);
	for (int i = 0; i < f->nstr; i++)
		enc_str(&e, f->str[i], f->str_size[i]);
	return e.len;
}

/* The fields (of a zeroed struct) from v after its tag; *left: the bytes past them. */
static int compact_decode(const MDB_val *v, const struct fields *f, size_t *left)
{
	struct enc d = { (unsigned char *)v->mv_data, 1, false };
	const unsigned char *end = d.p + v->mv_size;

	for (int i = 0; i < f->nnum; i++)
		dec_get(&d, end, f->num[i], f->num_len[i]);
	for (int i = 0; i < f->nstr; i++)
		dec_str(&d, end, f->str[i], f->str_size[i]);
	*left = d.bad ? 0 : (size_t)(end - (d.p + d.len));
	return d.bad ? SA_STORE_EIO : SA_STORE_OK;
}

/* An LMDB return value (LMDB's own codes or an errno) as a store error. */
static int map_err(int rc)
{
	switch (rc) {
	case MDB_SUCCESS: return SA_STORE_OK;
	case MDB_NOTFOUND: return SA_STORE_ENOTFOUND;
	case MDB_KEYEXIST: return SA_STORE_EEXISTS;
	case MDB_MAP_FULL: return SA_STORE_EMAPFULL;
	case ENOSPC: case EDQUOT: return SA_STORE_ENOSPC;
	case MDB_CORRUPTED: case MDB_PAGE_NOTFOUND: case MDB_INVALID: case MDB_BAD_TXN:
		return SA_STORE_ECORRUPT;
	case MDB_VERSION_MISMATCH: return SA_STORE_ESCHEMA;
	case EACCES: case EPERM: case EROFS: return SA_STORE_EACCES;
	default: return SA_STORE_EIO;
	}
}

/* As map_err, remembering a failure's LMDB or errno value for the fault report. */
static int note_err(struct sa_store *st, int rc)
{
	if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND && rc != MDB_KEYEXIST) {
		st->code = rc;
		st->detail[0] = '\0';
	}
	return map_err(rc);
}

/* Errors that say the store itself is in trouble (not the request). */
static bool store_trouble(int err)
{
	return err == SA_STORE_EIO || err == SA_STORE_EMAPFULL || err == SA_STORE_ENOSPC ||
	       err == SA_STORE_ECORRUPT || err == SA_STORE_EACCES;
}

/* Records how a write ended, for sa_store_fault (one report for all handles). */
static void fault_note(struct sa_store *st, int err)
{
	struct sa_store_fault *f = &st->sh->fault;

	pthread_mutex_lock(&st->sh->mu);
	if (!store_trouble(err)) {
		if (err == SA_STORE_OK)
			f->failing = false;
		pthread_mutex_unlock(&st->sh->mu);
		return;
	}
	f->err = err;
	f->failing = true;
	f->code = st->code;
	f->failures++;
	if (st->detail[0] != '\0')
		snprintf(f->detail, sizeof f->detail, "%s", st->detail);
	else if (st->code != 0)
		snprintf(f->detail, sizeof f->detail, "%s", mdb_strerror(st->code));
	else
		snprintf(f->detail, sizeof f->detail, "%s", sa_store_strerror(err));
	pthread_mutex_unlock(&st->sh->mu);
}

void sa_store_fault(const struct sa_store *st, struct sa_store_fault *f)
{
	pthread_mutex_lock(&st->sh->mu);
	*f = st->sh->fault;
	pthread_mutex_unlock(&st->sh->mu);
}

__attribute__((format(printf, 3, 4)))
static void set_why(char *why, size_t whylen, const char *fmt, ...)
{
	va_list ap;

	if (why == NULL || whylen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(why, whylen, fmt, ap);
	va_end(ap);
}

/* Random characters from alphabet with rejection sampling: bytes at or above
 * the largest multiple of radix are dropped, so every character is equally likely. */
static int rand_chars(char *out, size_t n, const char *alphabet, unsigned radix)
{
	unsigned char buf[64];
	unsigned limit = 256 - 256 % radix;
	size_t got = 0;

	while (got < n) {
		if (RAND_bytes(buf, sizeof buf) != 1)
			return SA_STORE_EIO;
		for (size_t i = 0; i < sizeof buf && got < n; i++)
			if (buf[i] < limit)
				out[got++] = alphabet[buf[i] % radix];
	}
	OPENSSL_cleanse(buf, sizeof buf);
	return SA_STORE_OK;
}

/* ---- transactions ---- */

/* The oldest schema this code reads (and upgrades, see the layout comment). */
#define SCHEMA_OLDEST 1

/* The store's schema version; 0 when it records none (not initialised). */
static int schema_read(struct sa_store *st, MDB_txn *txn, int *version)
{
	char text[16];
	MDB_val k = str_val("schema_version"), v;
	int rc = mdb_get(txn, st->sh->dbi[DB_META], &k, &v);

	*version = 0;
	if (rc == MDB_NOTFOUND)
		return SA_STORE_OK;
	if (rc != 0)
		return note_err(st, rc);
	if (val_str(&v, text, sizeof text) != SA_STORE_OK || text[0] == '\0' ||
	    strspn(text, "0123456789") != strlen(text) || text[0] == '0' || strlen(text) > 4)
		return SA_STORE_ESCHEMA;
	*version = atoi(text);
	return SA_STORE_OK;
}

/* Refuses stores that were never initialised or were written by a schema
 * this code does not read. txn is a main-environment transaction. */
static int store_check(struct sa_store *st, MDB_txn *txn)
{
	int version;

	if (st->ready)
		return SA_STORE_OK;
	int rc = schema_read(st, txn, &version);
	if (rc != SA_STORE_OK)
		return rc;
	if (version == 0)
		return SA_STORE_ENOTINIT;
	if (version < SCHEMA_OLDEST || version > SA_STORE_SCHEMA_VERSION)
		return SA_STORE_ESCHEMA;
	st->ready = true;
	return SA_STORE_OK;
}

/* In meta while credential records of a store older than schema 4 are still
 * under their ids (creds_move). */
#define CREDS_TO_MOVE "creds_to_move"

/* A writable open records the current schema over an older one: records
 * are read in either layout, and from here on written in the new one,
 * which an older sipauthd must not read (it refuses the version). */
static int schema_upgrade(struct sa_store *st, MDB_txn *txn)
{
	char ver[16];
	int version;
	int rc = schema_read(st, txn, &version);

	if (rc != SA_STORE_OK || version == 0 || version >= SA_STORE_SCHEMA_VERSION)
		return rc;
	snprintf(ver, sizeof ver, "%d", SA_STORE_SCHEMA_VERSION);
	MDB_val k = str_val("schema_version"), v = str_val(ver);
	rc = note_err(st, mdb_put(txn, st->sh->dbi[DB_META], &k, &v, 0));
	if (rc == SA_STORE_OK && version < 4) {   /* see creds_move */
		MDB_val mk = str_val(CREDS_TO_MOVE), mv = str_val("");
		rc = note_err(st, mdb_put(txn, st->sh->dbi[DB_META], &mk, &mv, 0));
	}
	return rc;
}

static int map_reserve(struct sa_store *st, int e, uint64_t size, char *why, size_t whylen);

/* Takes and drops an environment's lock for a transaction of this handle. */
static void env_hold(struct sa_store *st, int e)
{
	pthread_rwlock_rdlock(&st->sh->env[e].lock);
	st->held[e]++;
}

static void env_release(struct sa_store *st, int e)
{
	st->held[e]--;
	pthread_rwlock_unlock(&st->sh->env[e].lock);
}

static bool holds_any(const struct sa_store *st)
{
	for (int e = 0; e < ENV_COUNT; e++)
		if (st->held[e] > 0)
			return true;
	return false;
}

/* Changes environment e's map (size 0: take the size another process gave
 * it) and reserves the new pages on disk when the map is reserved. LMDB
 * remaps only while no transaction of this process is open on the
 * environment: so this waits for the other handles' transactions, and a
 * handle inside a transaction of its own (a nested call) cannot do it and
 * fails instead (the next call outside will). A map grown by this process
 * is reserved first, so that its new pages never exist without a block. */
static int map_change(struct sa_store *st, int e, uint64_t size)
{
	struct senv *v = &st->sh->env[e];
	MDB_envinfo ei;
	int rc = SA_STORE_OK;

	if (holds_any(st))
		return note_err(st, MDB_MAP_RESIZED);
	pthread_rwlock_wrlock(&v->lock);
	if (size > 0 && v->reserved)
		rc = map_reserve(st, e, size, NULL, 0);
	if (rc == SA_STORE_OK)
		rc = note_err(st, mdb_env_set_mapsize(v->env, (size_t)size));
	if (rc == SA_STORE_OK && size == 0 && v->reserved) {
		mdb_env_info(v->env, &ei);
		rc = map_reserve(st, e, ei.me_mapsize, NULL, 0);
	}
	pthread_rwlock_unlock(&v->lock);
	return rc;
}

/* Another process grew the map past ours (sipauthctl --map-size): take its size. */
static int map_adopt(struct sa_store *st, int e)
{
	return map_change(st, e, 0);
}

/* Begins a transaction on environment e, holding its lock until the
 * transaction ends (txn_commit, txn_abort, or rd_reset for the reused one).
 * A map grown by another process is adopted with the lock not held. */
static int txn_begin(struct sa_store *st, int e, unsigned flags, MDB_txn **txn)
{
	MDB_env *env = st->sh->env[e].env;

	for (int tries = 0;; tries++) {
		env_hold(st, e);
		int rc = mdb_txn_begin(env, NULL, flags, txn);
		if (rc == MDB_SUCCESS)
			return SA_STORE_OK;
		env_release(st, e);
		if (rc != MDB_MAP_RESIZED || tries > 0 || map_adopt(st, e) != SA_STORE_OK)
			return note_err(st, rc);
	}
}

static void txn_abort(struct sa_store *st, int e, MDB_txn *txn)
{
	mdb_txn_abort(txn);
	env_release(st, e);
}

static int txn_commit(struct sa_store *st, int e, MDB_txn *txn)
{
	int rc = note_err(st, mdb_txn_commit(txn));

	env_release(st, e);
	return rc;
}

/* The handle's reused read transaction on e, renewed (and locked) here. */
static int rd_renew(struct sa_store *st, int e, MDB_txn **txn)
{
	MDB_txn **rt = &st->rtxn[e];

	if (*rt != NULL) {
		env_hold(st, e);
		int rc = mdb_txn_renew(*rt);
		if (rc == MDB_SUCCESS) {
			*txn = *rt;
			return SA_STORE_OK;
		}
		mdb_txn_abort(*rt);
		*rt = NULL;
		env_release(st, e);
		if (rc != MDB_MAP_RESIZED)
			return note_err(st, rc);
	}
	int rc = txn_begin(st, e, MDB_RDONLY, rt);
	if (rc != SA_STORE_OK)
		*rt = NULL;
	*txn = *rt;
	return rc;
}

static void rd_reset(struct sa_store *st, int e)
{
	mdb_txn_reset(st->rtxn[e]);
	env_release(st, e);
}

/* The shared read transaction on e (hot path): renewed here, reset by
 * rd_end. The schema is checked in main, for the runtime environment too. */
static int rd_begin(struct sa_store *st, int e, MDB_txn **txn);

static int ready_check(struct sa_store *st)
{
	MDB_txn *txn;
	int rc;

	if (st->ready)
		return SA_STORE_OK;
	if ((rc = rd_renew(st, ENV_MAIN, &txn)) != SA_STORE_OK)
		return rc;
	rc = store_check(st, txn);
	rd_reset(st, ENV_MAIN);
	return rc;
}

static int rd_begin(struct sa_store *st, int e, MDB_txn **txn)
{
	int rc = e == ENV_MAIN ? SA_STORE_OK : ready_check(st);

	if (rc == SA_STORE_OK)
		rc = rd_renew(st, e, txn);
	if (rc != SA_STORE_OK || e != ENV_MAIN)
		return rc;
	rc = store_check(st, *txn);
	if (rc != SA_STORE_OK)
		rd_reset(st, e);
	return rc;
}

static int rd_end(struct sa_store *st, int e, int rc)
{
	rd_reset(st, e);
	return rc;
}

/* A read transaction of its own, for listings whose callbacks may call back
 * into the store (and so use the shared one). */
static int rd_own_begin(struct sa_store *st, int e, MDB_txn **txn)
{
	int rc = e == ENV_MAIN ? SA_STORE_OK : ready_check(st);

	if (rc == SA_STORE_OK)
		rc = txn_begin(st, e, MDB_RDONLY, txn);
	if (rc != SA_STORE_OK || e != ENV_MAIN)
		return rc;
	rc = store_check(st, *txn);
	if (rc != SA_STORE_OK)
		txn_abort(st, e, *txn);
	return rc;
}

static int rd_own_end(struct sa_store *st, int e, MDB_txn *txn, int rc)
{
	txn_abort(st, e, txn);
	return rc;
}

/* A write transaction on e. The main environment syncs every commit (what
 * administrators write is acknowledged only once on disk); the runtime
 * environment is opened with MDB_NOSYNC and synced by sa_store_flush. */
static int wr_begin(struct sa_store *st, int e, MDB_txn **txn, bool check)
{
	st->code = 0;
	st->detail[0] = '\0';
	if (st->sh->rdonly)
		return SA_STORE_EIO;
	int rc = check && e != ENV_MAIN ? ready_check(st) : SA_STORE_OK;
	if (rc == SA_STORE_OK)
		rc = txn_begin(st, e, 0, txn);
	if (rc != SA_STORE_OK) {
		fault_note(st, rc);
		return rc;
	}
	if (check && e == ENV_MAIN)
		rc = store_check(st, *txn);
	if (rc != SA_STORE_OK)
		txn_abort(st, e, *txn);
	return rc;
}

/* Commits when rc is OK, aborts otherwise; returns rc or the commit's error. */
static int wr_end(struct sa_store *st, int e, MDB_txn *txn, int rc)
{
	if (rc == SA_STORE_OK)
		rc = txn_commit(st, e, txn);
	else
		txn_abort(st, e, txn);
	fault_note(st, rc);
	return rc;
}

/* Bindings and the failure log need the runtime environment. */
static bool has_runtime(const struct sa_store *st)
{
	return st->sh->env[ENV_RT].env != NULL;
}

/* ---- generic record access ---- */

static int db_get(struct sa_store *st, MDB_txn *txn, int db, MDB_val k, MDB_val *v)
{
	return note_err(st, mdb_get(txn, st->sh->dbi[db], &k, v));
}

static int db_get_rec(struct sa_store *st, MDB_txn *txn, int db, MDB_val k, void *out, size_t len)
{
	MDB_val v;
	int rc = db_get(st, txn, db, k, &v);
	return rc != SA_STORE_OK ? rc : val_rec(&v, out, len);
}

static int db_put(struct sa_store *st, MDB_txn *txn, int db, MDB_val k, MDB_val v)
{
	return note_err(st, mdb_put(txn, st->sh->dbi[db], &k, &v, 0));
}

static int db_del(struct sa_store *st, MDB_txn *txn, int db, MDB_val k)
{
	return note_err(st, mdb_del(txn, st->sh->dbi[db], &k, NULL));
}

static bool db_has(struct sa_store *st, MDB_txn *txn, int db, MDB_val k)
{
	MDB_val v;
	return mdb_get(txn, st->sh->dbi[db], &k, &v) == 0;
}

/* A u64 under name in a meta database (absent: 0). */
static int rec_get_u64(struct sa_store *st, MDB_txn *txn, int db, const char *name, uint64_t *out)
{
	int rc = db_get_rec(st, txn, db, str_val(name), out, sizeof *out);
	if (rc == SA_STORE_ENOTFOUND) {
		*out = 0;
		rc = SA_STORE_OK;
	}
	return rc;
}

static int meta_get_u64(struct sa_store *st, MDB_txn *txn, const char *name, uint64_t *out)
{
	return rec_get_u64(st, txn, DB_META, name, out);
}

/* Increments a meta counter and returns its new value in out. */
static int meta_bump(struct sa_store *st, MDB_txn *txn, const char *name, uint64_t *out)
{
	uint64_t v;
	int rc = meta_get_u64(st, txn, name, &v);
	if (rc != SA_STORE_OK)
		return rc;
	v++;
	if (out != NULL)
		*out = v;
	return db_put(st, txn, DB_META, str_val(name), mem_val(&v, sizeof v));
}

int sa_store_id_make(const char *prefix, char out[SA_ID_MAX])
{
	size_t plen = strlen(prefix);

	if (plen + ID_RAND_LEN >= SA_ID_MAX)
		return SA_STORE_EINVAL;
	memcpy(out, prefix, plen);
	if (rand_chars(out + plen, ID_RAND_LEN, alnum_lower, 36) != SA_STORE_OK)
		return SA_STORE_EIO;
	out[plen + ID_RAND_LEN] = '\0';
	return SA_STORE_OK;
}

/* A fresh id "<prefix><16 of [a-z0-9]>" not yet used as a key of db. */
static int new_id(struct sa_store *st, MDB_txn *txn, int db, const char *prefix, char out[SA_ID_MAX])
{
	do {
		if (sa_store_id_make(prefix, out) != SA_STORE_OK)
			return SA_STORE_EIO;
	} while (db_has(st, txn, db, str_val(out)));
	return SA_STORE_OK;
}

typedef int (*walk_fn)(struct sa_store *st, MDB_txn *txn, const MDB_val *k, const MDB_val *v, void *arg);

static bool has_prefix(const MDB_val *k, const struct key *prefix)
{
	return k->mv_size >= prefix->len && memcmp(k->mv_data, prefix->b, prefix->len) == 0;
}

/* Positions cur on the first key >= prefix (LMDB refuses an empty range key). */
static int seek_prefix(MDB_cursor *cur, const struct key *prefix, MDB_val *k, MDB_val *v)
{
	*k = key_val(prefix);
	return mdb_cursor_get(cur, k, v, prefix->len > 0 ? MDB_SET_RANGE : MDB_FIRST);
}

/* Calls fn for every key from the first >= from on while it starts with
 * prefix, in key order. fn returns 0 to go on, WALK_STOP to stop, or an error. */
static int walk_range(struct sa_store *st, MDB_txn *txn, int db, const struct key *from,
                      const struct key *prefix, walk_fn fn, void *arg)
{
	MDB_cursor *cur;
	MDB_val k, v;
	int rc = SA_STORE_OK;

	if (mdb_cursor_open(txn, st->sh->dbi[db], &cur) != 0)
		return SA_STORE_EIO;
	int mrc = seek_prefix(cur, from, &k, &v);
	while (mrc == 0 && has_prefix(&k, prefix)) {
		rc = fn(st, txn, &k, &v, arg);
		if (rc != SA_STORE_OK)
			break;
		mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
	}
	mdb_cursor_close(cur);
	if (rc == WALK_STOP)
		return SA_STORE_OK;
	if (rc != SA_STORE_OK)
		return rc;
	return (mrc == 0 || mrc == MDB_NOTFOUND) ? SA_STORE_OK : note_err(st, mrc);
}

/* Every key starting with prefix. */
static int walk_prefix(struct sa_store *st, MDB_txn *txn, int db, const struct key *prefix,
                       walk_fn fn, void *arg)
{
	return walk_range(st, txn, db, prefix, prefix, fn, arg);
}

/* The first key >= from that starts with prefix, copied into out. */
static int first_from(struct sa_store *st, MDB_txn *txn, int db, const struct key *from,
                      const struct key *prefix, struct key *out)
{
	MDB_cursor *cur;
	MDB_val k, v;
	int rc = SA_STORE_ENOTFOUND;

	if (mdb_cursor_open(txn, st->sh->dbi[db], &cur) != 0)
		return SA_STORE_EIO;
	int mrc = seek_prefix(cur, from, &k, &v);
	if (mrc == 0 && has_prefix(&k, prefix) && k.mv_size <= KEY_MAX) {
		out->len = 0;
		key_put(out, k.mv_data, k.mv_size);
		rc = SA_STORE_OK;
	} else if (mrc != 0 && mrc != MDB_NOTFOUND) {
		rc = SA_STORE_EIO;
	}
	mdb_cursor_close(cur);
	return rc;
}

static int first_with_prefix(struct sa_store *st, MDB_txn *txn, int db, const struct key *prefix,
                             struct key *out)
{
	return first_from(st, txn, db, prefix, prefix, out);
}

/* ---- how full the map is ---- */

int sa_store_size_parse(const char *text, uint64_t *bytes)
{
	static const char units[] = "KMGT";
	char *end;
	const char *u;

	if (text == NULL || text[0] < '0' || text[0] > '9')
		return SA_STORE_EINVAL;
	errno = 0;
	unsigned long long n = strtoull(text, &end, 10);
	if (errno != 0)
		return SA_STORE_EINVAL;
	if (*end != '\0') {
		char c = *end >= 'a' && *end <= 'z' ? (char)(*end - 'a' + 'A') : *end;
		if (end[1] != '\0' || c == '\0' || (u = strchr(units, c)) == NULL)
			return SA_STORE_EINVAL;
		for (const char *x = units; x <= u && n <= SA_STORE_MAX_MAP_SIZE; x++)
			n *= 1024;
	}
	if (n < SA_STORE_MIN_MAP_SIZE || n > SA_STORE_MAX_MAP_SIZE)
		return SA_STORE_EINVAL;
	*bytes = n;
	return SA_STORE_OK;
}

/* Pages on LMDB's free list (dbi 0): each record holds a page-number list
 * whose first word is its length. They are reusable, so not "used". */
static int free_pages(struct sa_store *st, MDB_txn *txn, uint64_t *n)
{
	MDB_cursor *cur;
	MDB_val k, v;
	int mrc;

	*n = 0;
	if ((mrc = mdb_cursor_open(txn, 0, &cur)) != 0)
		return note_err(st, mrc);
	while ((mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) == 0) {
		size_t len;
		if (v.mv_size < sizeof len)
			continue;
		memcpy(&len, v.mv_data, sizeof len);
		*n += len;
	}
	mdb_cursor_close(cur);
	return mrc == MDB_NOTFOUND ? SA_STORE_OK : note_err(st, mrc);
}

/* Bytes up to the last page ever written in environment e, and its map's size. */
static void high_water(struct sa_store *st, int e, uint64_t *hw, uint64_t *map)
{
	MDB_envinfo ei;

	mdb_env_info(st->sh->env[e].env, &ei);
	*hw = ((uint64_t)ei.me_last_pgno + 1) * st->sh->env[e].psize;
	*map = ei.me_mapsize;
}

/* Bytes in pages that hold data, as of txn (on e). */
static int used_bytes(struct sa_store *st, int e, MDB_txn *txn, uint64_t *used, uint64_t *map)
{
	uint64_t hw, nfree, psize = st->sh->env[e].psize;

	high_water(st, e, &hw, map);
	int rc = free_pages(st, txn, &nfree);
	*used = hw > nfree * psize ? hw - nfree * psize : 0;
	return rc;
}

/* The headroom rule: a write that adds a record may start only while at
 * most SA_STORE_HEADROOM_PERCENT of its environment's map holds data. The
 * rest is for deletes, expiry and refreshes: copy-on-write needs new pages
 * before old ones are freed, and a store that cannot delete stays full for
 * good. Below the limit by the high-water mark alone, the free list is not
 * read. Called inside a write transaction on e. */
static int room_for_new(struct sa_store *st, int e)
{
	uint64_t hw, map, used;

	high_water(st, e, &hw, &map);
	uint64_t limit = map / 100 * SA_STORE_HEADROOM_PERCENT;
	if (hw <= limit)
		return SA_STORE_OK;
	/* LMDB lets only read transactions walk the free list; one of our own
	 * sees what the write transaction started from */
	MDB_txn *rtxn;
	int rc = txn_begin(st, e, MDB_RDONLY, &rtxn);
	if (rc == SA_STORE_OK)
		rc = rd_own_end(st, e, rtxn, used_bytes(st, e, rtxn, &used, &map));
	if (rc != SA_STORE_OK || used <= limit)
		return rc;
	st->code = MDB_MAP_FULL;
	snprintf(st->detail, sizeof st->detail,
	         "%llu of %llu MiB used (%llu%%); new records are refused above %d%%",
	         (unsigned long long)(used >> 20), (unsigned long long)(map >> 20),
	         (unsigned long long)(used * 100 / map), SA_STORE_HEADROOM_PERCENT);
	return SA_STORE_EMAPFULL;
}

static int map_record(struct sa_store *st, int e, MDB_txn *txn);

/* One environment's usage, and the size another process recorded for it. */
static int usage_of(struct sa_store *st, int e, struct sa_store_usage *u, uint64_t *recorded)
{
	MDB_txn *txn;
	int rc = rd_begin(st, e, &txn);

	memset(u, 0, sizeof *u);
	*recorded = 0;
	if (rc != SA_STORE_OK)
		return rc;
	rc = used_bytes(st, e, txn, &u->used, &u->map_size);
	if (rc == SA_STORE_OK)
		rc = rec_get_u64(st, txn, e == ENV_MAIN ? DB_META : DB_RT_META, "map_size", recorded);
	rd_end(st, e, rc);
	u->percent = u->map_size > 0 ? (unsigned)(u->used * 100 / u->map_size) : 0;
	u->reserved = st->sh->env[e].reserved;
	return rc;
}

/* A map grown by another process (sipauthctl --map-size) is recorded in meta
 * "map_size"; a long-running process takes it up here, between transactions. */
int sa_store_usage(struct sa_store *st, struct sa_store_usage *u)
{
	uint64_t recorded;
	int rc = usage_of(st, ENV_MAIN, u, &recorded);

	if (rc == SA_STORE_OK && recorded > u->map_size && map_adopt(st, ENV_MAIN) == SA_STORE_OK)
		rc = usage_of(st, ENV_MAIN, u, &recorded);
	return rc;
}

/* The runtime map grows to this process's main map, which follows
 * sipauthctl --map-size: so a grown store makes room for registrations
 * too, without a restart (sipauthctl itself never opens runtime/). The new
 * size is committed at once, so that another writer opening the runtime
 * file later does not cut it back to its recorded size. */
static int runtime_follow(struct sa_store *st, uint64_t recorded, uint64_t map)
{
	uint64_t main_map, hw;
	MDB_txn *txn;

	env_hold(st, ENV_MAIN);
	high_water(st, ENV_MAIN, &hw, &main_map);
	env_release(st, ENV_MAIN);
	if (main_map <= map || st->sh->rdonly)
		return recorded > map ? map_adopt(st, ENV_RT) : SA_STORE_OK;
	int rc = map_change(st, ENV_RT, main_map);
	if (rc == SA_STORE_OK && (rc = wr_begin(st, ENV_RT, &txn, false)) == SA_STORE_OK)
		rc = wr_end(st, ENV_RT, txn, map_record(st, ENV_RT, txn));
	return rc;
}

int sa_store_runtime_usage(struct sa_store *st, struct sa_store_usage *u)
{
	uint64_t recorded;

	memset(u, 0, sizeof *u);
	if (!has_runtime(st))
		return SA_STORE_EINVAL;
	int rc = usage_of(st, ENV_RT, u, &recorded);
	if (rc == SA_STORE_OK && runtime_follow(st, recorded, u->map_size) == SA_STORE_OK)
		rc = usage_of(st, ENV_RT, u, &recorded);
	return rc;
}

/* ---- open, init, meta ---- */

/* The map size this process uses for e, into e's meta "map_size". When this
 * process grew the map, the new size is written into the store at once:
 * LMDB records a larger map size only with a commit that changes something,
 * and until it does, a writer that opens the store with the recorded,
 * smaller size would cut data.mdb back under this process's map. */
static int map_record(struct sa_store *st, int e, MDB_txn *txn)
{
	MDB_envinfo ei;

	mdb_env_info(st->sh->env[e].env, &ei);
	uint64_t size = ei.me_mapsize;
	return db_put(st, txn, e == ENV_MAIN ? DB_META : DB_RT_META, str_val("map_size"), mem_val(&size, sizeof size));
}

/* The runtime databases as a store made before the split keeps them in
 * data.mdb; present[i] for DB_RT_FIRST + i. */
struct legacy {
	MDB_dbi dbi[DB_LEGACY_COUNT];
	bool present[DB_LEGACY_COUNT];
};

static void legacy_find(MDB_txn *txn, struct legacy *lg)
{
	for (int i = 0; i < DB_LEGACY_COUNT; i++)
		lg->present[i] = mdb_dbi_open(txn, db_names[DB_RT_FIRST + i], 0, &lg->dbi[i]) == MDB_SUCCESS;
}

/* Creates (or opens) main's databases, and finds legacy ones when lg is
 * given. cred_deleted came with the split: a read-only open of an older
 * store goes without it (no tombstones), a writable one creates it. */
static int open_main_dbs(struct sa_store *st, bool grew, struct legacy *lg)
{
	MDB_txn *txn;
	bool rdonly = st->sh->rdonly;
	int rc = txn_begin(st, ENV_MAIN, rdonly ? MDB_RDONLY : 0, &txn);

	if (rc != SA_STORE_OK)
		return rc;
	for (int i = 0; i < DB_RT_FIRST && rc == SA_STORE_OK; i++) {
		int mrc = mdb_dbi_open(txn, db_names[i], rdonly ? 0 : MDB_CREATE, &st->sh->dbi[i]);
		bool added_later = i == DB_CRED_DELETED || i == DB_TRUNK_POLICY || i == DB_IDEM || i == DB_IDEM_BY_TIME ||
		                   (i >= DB_WEBHOOKS && i <= DB_DLV_DUE) || i == DB_CRED_CHANGES;
		if (added_later && rdonly && mrc == MDB_NOTFOUND)
			continue;
		st->sh->tombstones |= i == DB_CRED_DELETED && mrc == MDB_SUCCESS;
		st->sh->policies |= i == DB_TRUNK_POLICY && mrc == MDB_SUCCESS;
		st->sh->idem |= i == DB_IDEM && mrc == MDB_SUCCESS;
		st->sh->webhooks |= i == DB_WEBHOOKS && mrc == MDB_SUCCESS;
		st->sh->changes |= i == DB_CRED_CHANGES && mrc == MDB_SUCCESS;
		rc = mrc == MDB_NOTFOUND ? SA_STORE_ENOTINIT : note_err(st, mrc);
		/* check the schema before creating anything in a foreign store */
		if (i == DB_META && rc == SA_STORE_OK) {
			rc = store_check(st, txn);
			if (rc == SA_STORE_ENOTINIT)
				rc = SA_STORE_OK;
			if (rc == SA_STORE_OK && !rdonly)
				rc = schema_upgrade(st, txn);
		}
	}
	if (rc == SA_STORE_OK && lg != NULL)
		legacy_find(txn, lg);
	if (rc == SA_STORE_OK && grew)
		rc = map_record(st, ENV_MAIN, txn);
	if (rc == SA_STORE_OK)
		return txn_commit(st, ENV_MAIN, txn);
	txn_abort(st, ENV_MAIN, txn);
	return rc;
}

static int open_rt_dbs(struct sa_store *st, bool grew)
{
	MDB_txn *txn;
	bool rdonly = st->sh->rdonly;
	int rc = txn_begin(st, ENV_RT, rdonly ? MDB_RDONLY : 0, &txn);

	if (rc != SA_STORE_OK)
		return rc;
	for (int i = DB_RT_FIRST; i < DB_COUNT && rc == SA_STORE_OK; i++) {
		int mrc = mdb_dbi_open(txn, db_names[i], rdonly ? 0 : MDB_CREATE, &st->sh->dbi[i]);
		if (i == DB_TRUNK_LATEST && rdonly && mrc == MDB_NOTFOUND)
			continue;   /* schema 7's: lookups walk the trunk */
		st->sh->latest |= i == DB_TRUNK_LATEST && mrc == MDB_SUCCESS;
		rc = mrc == MDB_NOTFOUND ? SA_STORE_ENOTINIT : note_err(st, mrc);
	}
	if (rc == SA_STORE_OK && grew)
		rc = map_record(st, ENV_RT, txn);
	if (rc == SA_STORE_OK)
		return txn_commit(st, ENV_RT, txn);
	txn_abort(st, ENV_RT, txn);
	return rc;
}

/*
 * Why the whole map is allocated on disk. With a writable map (MDB_WRITEMAP)
 * LMDB writes pages through memory, into a data.mdb that it made as large as
 * the map with ftruncate: a sparse file. On a full file system the first
 * store into a page without a block behind it raises SIGBUS, which killed the
 * daemon. The alternatives: without a writable map every commit costs a
 * pwrite per dirty page run and one for the meta page (measured: see the
 * README), and a full disk becomes an ENOSPC from mdb_txn_commit; or keep the
 * writable map and make every page exist on disk before it can be touched.
 * We do the latter: fallocate(2) the whole map at open, so a full file
 * system can no longer fail a write (it fails this open instead, with
 * SA_STORE_ENOSPC, and nothing was written). data.mdb then uses its map size
 * on disk, which is what [store] map_size sizes. On file systems without
 * fallocate (EOPNOTSUPP), every process falls back to plain writes the same
 * way (the same file system gives every writer the same answer, and LMDB
 * wants writers to agree on MDB_WRITEMAP).
 */
static int map_reserve(struct sa_store *st, int e, uint64_t size, char *why, size_t whylen)
{
	int fd, rc;

	if (mdb_env_get_fd(st->sh->env[e].env, &fd) != 0)
		return SA_STORE_EIO;
	do
		rc = fallocate(fd, 0, 0, (off_t)size);
	while (rc != 0 && errno == EINTR);
	if (rc == 0)
		return SA_STORE_OK;
	st->code = errno;
	set_why(why, whylen, "cannot reserve the store's map of %llu MiB on disk: %s",
	        (unsigned long long)(size >> 20), strerror(errno));
	return map_err(errno);
}

/* What a probe learnt from data.mdb before the real open. */
struct probe {
	bool exists;
	uint64_t map_size;     /* as recorded in the store */
};

/*
 * A data.mdb shorter than the pages its meta page says are in use would be
 * read through the map past its end: SIGBUS. A writable-map open would first
 * grow it back with ftruncate and then read zeros as pages. So it is looked
 * at with a read-only, lock-free LMDB handle first: LMDB reads the two meta
 * pages with pread (a file shorter than them is refused there), and the file
 * must then hold every page up to the last one in use. An empty data.mdb is
 * refused too: LMDB would write a fresh store into it.
 */
static int probe_data_file(const char *dir, struct probe *pr, char *why, size_t whylen)
{
	char path[PATH_LEN + 16];
	struct stat sb;
	MDB_env *env;
	MDB_envinfo ei;
	MDB_stat ms;
	int rc;

	snprintf(path, sizeof path, "%s/data.mdb", dir);
	if (stat(path, &sb) != 0) {
		if (errno == ENOENT)
			return SA_STORE_OK;
		set_why(why, whylen, "cannot read %s: %s", path, strerror(errno));
		return map_err(errno);
	}
	pr->exists = true;
	if (sb.st_size == 0) {
		set_why(why, whylen, "%s is empty (0 bytes): not a store; restore it from a backup, "
		        "or remove it to start a new store", path);
		return SA_STORE_ECORRUPT;
	}
	if ((rc = mdb_env_create(&env)) != 0)
		return map_err(rc);
	rc = mdb_env_open(env, dir, MDB_RDONLY | MDB_NOLOCK | MDB_NOTLS, 0600);
	if (rc == 0 && (rc = mdb_env_info(env, &ei)) == 0)
		rc = mdb_env_stat(env, &ms);
	if (rc != 0) {
		set_why(why, whylen, "cannot open %s: %s", path, mdb_strerror(rc));
		mdb_env_close(env);
		return map_err(rc);
	}
	uint64_t need = ((uint64_t)ei.me_last_pgno + 1) * ms.ms_psize;
	pr->map_size = ei.me_mapsize;
	mdb_env_close(env);
	if ((uint64_t)sb.st_size < need) {
		set_why(why, whylen, "%s is truncated: %llu bytes, but its pages in use need %llu", path,
		        (unsigned long long)sb.st_size, (unsigned long long)need);
		return SA_STORE_ECORRUPT;
	}
	return SA_STORE_OK;
}

static uint64_t round_up(uint64_t v, uint64_t unit)
{
	return (v + unit - 1) / unit * unit;
}

/* The map size this open uses: the store's own, grown to the asked size. */
static uint64_t map_size_for(const struct probe *pr, uint64_t asked)
{
	uint64_t size = pr->exists ? pr->map_size : SA_STORE_DEFAULT_MAP_SIZE;
	long page = sysconf(_SC_PAGESIZE);

	if (!pr->exists && asked > 0)
		size = asked;
	else if (asked > size)
		size = asked;
	return round_up(size, page > 0 ? (uint64_t)page : 4096);
}

static int env_open(struct sa_store *st, int e, const char *dir, uint64_t map_size, bool writemap)
{
	MDB_env **env = &st->sh->env[e].env;
	int rc;

	if ((rc = mdb_env_create(env)) != 0)
		return rc;
	if ((rc = mdb_env_set_maxdbs(*env, MAX_DBS)) != 0 ||
	    (rc = mdb_env_set_mapsize(*env, (size_t)map_size)) != 0)
		return rc;
	/* A writable map: a registration refresh written without sync then costs
	 * no system call at all, where pwrite costs six. Every writer must agree
	 * on it (LMDB: do not mix), so every read-write open uses it (unless the
	 * file system cannot reserve it: see map_reserve). The runtime
	 * environment never syncs on commit (sa_store_flush does). */
	unsigned flags = MDB_NOTLS | (st->sh->rdonly ? MDB_RDONLY : writemap ? MDB_WRITEMAP : 0);
	if (e == ENV_RT && !st->sh->rdonly)
		flags |= MDB_NOSYNC;
	return mdb_env_open(*env, dir, flags, 0600);
}

static void env_close(struct shared *sh, int e)
{
	if (sh->env[e].env != NULL)
		mdb_env_close(sh->env[e].env);
	sh->env[e].env = NULL;
}

/* Opens environment e; a writer reserves its map (or, where the file
 * system cannot, opens without the writable map). */
static int open_env(struct sa_store *st, int e, const char *dir, uint64_t map_size, char *why, size_t whylen)
{
	struct senv *v = &st->sh->env[e];
	int dead, rc = env_open(st, e, dir, map_size, true);

	if (rc != 0) {
		st->code = rc;
		set_why(why, whylen, "cannot open the store in %s: %s", dir, mdb_strerror(rc));
		return (rc == ENOENT && st->sh->rdonly) ? SA_STORE_ENOTINIT : map_err(rc);
	}
	if (!st->sh->rdonly) {
		rc = map_reserve(st, e, map_size, why, whylen);
		v->reserved = rc == SA_STORE_OK;
		if (rc != SA_STORE_OK && (st->code == EOPNOTSUPP || st->code == ENOSYS)) {
			env_close(st->sh, e);
			rc = env_open(st, e, dir, map_size, false);
			if (rc != 0) {
				set_why(why, whylen, "cannot open the store in %s: %s", dir, mdb_strerror(rc));
				return map_err(rc);
			}
		} else if (rc != SA_STORE_OK) {
			return rc;
		}
	}
	mdb_reader_check(v->env, &dead);   /* slots left by killed readers */
	MDB_stat ms;
	v->psize = mdb_env_stat(v->env, &ms) == 0 ? ms.ms_psize : 4096;
	return SA_STORE_OK;
}

/* A new store that could not be made leaves no files behind: an empty
 * data.mdb would be refused by every later open. */
static void remove_new_files(const char *dir)
{
	char path[PATH_LEN + 16];

	snprintf(path, sizeof path, "%s/data.mdb", dir);
	unlink(path);
	snprintf(path, sizeof path, "%s/lock.mdb", dir);
	unlink(path);
}

static void shared_free(struct shared *sh)
{
	for (int e = 0; e < ENV_COUNT; e++) {
		env_close(sh, e);
		if (sh->env[e].locked)
			pthread_rwlock_destroy(&sh->env[e].lock);
	}
	sa_kvindex_free(sh->idx.kv);
	if (sh->idx.locked)
		pthread_rwlock_destroy(&sh->idx.lock);
	pthread_mutex_destroy(&sh->mu);
	free(sh);
}

/* The locks of a new shared part. Readers are preferred (glibc's default,
 * asked for by name): a handle's transactions nest (a listing's callback
 * reads again), and a second read lock must not wait behind a map change
 * queued between the two. */
static struct shared *shared_new(bool rdonly)
{
	struct shared *sh = calloc(1, sizeof *sh);
	pthread_rwlockattr_t attr;

	if (sh == NULL)
		return NULL;
	if (pthread_mutex_init(&sh->mu, NULL) != 0) {
		free(sh);
		return NULL;
	}
	sh->rdonly = rdonly;
	sh->refs = 1;
	pthread_rwlockattr_init(&attr);
	pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_READER_NP);
	for (int e = 0; e < ENV_COUNT; e++)
		sh->env[e].locked = pthread_rwlock_init(&sh->env[e].lock, &attr) == 0;
	pthread_rwlockattr_destroy(&attr);
	sh->idx.locked = pthread_rwlock_init(&sh->idx.lock, NULL) == 0;
	for (int e = 0; e < ENV_COUNT; e++) {
		if (!sh->env[e].locked || !sh->idx.locked) {
			shared_free(sh);
			return NULL;
		}
	}
	return sh;
}

static struct sa_store *handle_new(struct shared *sh)
{
	struct sa_store *st = calloc(1, sizeof *st);

	if (st != NULL)
		st->sh = sh;
	return st;
}

/* What an open made, for undoing it when it fails. */
struct opened {
	bool main_new;         /* data.mdb did not exist */
	bool rt_new;           /* runtime/data.mdb did not exist */
	uint64_t size;         /* the main map's size */
	struct legacy lg;
};

static int open_main(struct sa_store *st, const char *dir, uint64_t asked, bool find_legacy,
                     struct opened *op, char *why, size_t whylen)
{
	struct probe pr = { .exists = false };
	int rc;

	if (!st->sh->rdonly && mkdir(dir, 0700) != 0 && errno != EEXIST) {
		set_why(why, whylen, "cannot create %s: %s", dir, strerror(errno));
		return map_err(errno);
	}
	rc = probe_data_file(dir, &pr, why, whylen);
	op->main_new = !pr.exists && rc == SA_STORE_OK;
	if (rc != SA_STORE_OK)
		return rc;
	op->size = map_size_for(&pr, asked);
	rc = open_env(st, ENV_MAIN, dir, op->size, why, whylen);
	if (rc == SA_STORE_OK)
		rc = open_main_dbs(st, pr.exists && op->size > pr.map_size, find_legacy ? &op->lg : NULL);
	return rc;
}

/* runtime/ in the store's directory, mapped at least as large as main. A
 * read-only open of a store whose daemon never ran finds none: then there
 * is no registration to read, and the binding calls say so (EINVAL). */
static int open_runtime(struct sa_store *st, const char *dir, struct opened *op, char *why, size_t whylen)
{
	struct probe pr = { .exists = false };
	char rdir[PATH_LEN];
	int rc;

	snprintf(rdir, sizeof rdir, "%s/runtime", dir);
	if (!st->sh->rdonly && mkdir(rdir, 0700) != 0 && errno != EEXIST) {
		set_why(why, whylen, "cannot create %s: %s", rdir, strerror(errno));
		return map_err(errno);
	}
	rc = probe_data_file(rdir, &pr, why, whylen);
	op->rt_new = !pr.exists && rc == SA_STORE_OK && !st->sh->rdonly;
	if (rc != SA_STORE_OK || (st->sh->rdonly && !pr.exists))
		return rc;
	uint64_t size = map_size_for(&pr, op->size);
	rc = open_env(st, ENV_RT, rdir, size, why, whylen);
	if (rc == SA_STORE_OK)
		rc = open_rt_dbs(st, pr.exists && size > pr.map_size);
	return rc;
}

static int legacy_move(struct sa_store *st, const struct legacy *lg);
static void creds_move(struct sa_store *st);

int sa_store_open_with(struct sa_store **out, const char *dir, const struct sa_store_opts *o,
                       char *why, size_t whylen)
{
	bool rdonly = (o->flags & SA_STORE_RDONLY) != 0, runtime = (o->flags & SA_STORE_RUNTIME) != 0;
	struct shared *sh = shared_new(rdonly);
	struct sa_store *st = sh != NULL ? handle_new(sh) : NULL;
	struct opened op = { .main_new = false };
	char rdir[PATH_LEN];

	*out = NULL;
	set_why(why, whylen, "%s", "");
	if (st == NULL) {
		if (sh != NULL)
			shared_free(sh);
		return SA_STORE_EIO;
	}
	int rc = open_main(st, dir, o->map_size, runtime && !rdonly, &op, why, whylen);
	if (rc == SA_STORE_OK && runtime)
		rc = open_runtime(st, dir, &op, why, whylen);
	if (rc == SA_STORE_OK && runtime && !rdonly)
		rc = legacy_move(st, &op.lg);
	if (rc == SA_STORE_OK && !rdonly)
		creds_move(st);
	if (rc != SA_STORE_OK && why != NULL && why[0] == '\0' && st->code != 0)
		set_why(why, whylen, "%s", mdb_strerror(st->code));
	if (rc != SA_STORE_OK) {
		int code = st->code;
		sa_store_close(st);
		snprintf(rdir, sizeof rdir, "%s/runtime", dir);
		if (op.rt_new && rc != SA_STORE_EACCES)
			remove_new_files(rdir);
		if (op.main_new && !rdonly && rc != SA_STORE_EACCES)
			remove_new_files(dir);
		errno = code > 0 ? code : EIO;
		return rc;
	}
	*out = st;
	return SA_STORE_OK;
}

/* On a system error errno is left set to it, for the caller's message. */
int sa_store_open(struct sa_store **out, const char *dir, unsigned flags)
{
	struct sa_store_opts o = { .flags = flags, .map_size = 0 };

	return sa_store_open_with(out, dir, &o, NULL, 0);
}

int sa_store_dup(struct sa_store *st, struct sa_store **out)
{
	struct sa_store *d = handle_new(st->sh);

	*out = NULL;
	if (d == NULL)
		return SA_STORE_EIO;
	d->ready = st->ready;
	pthread_mutex_lock(&st->sh->mu);
	st->sh->refs++;
	pthread_mutex_unlock(&st->sh->mu);
	*out = d;
	return SA_STORE_OK;
}

void sa_store_close(struct sa_store *st)
{
	if (st == NULL)
		return;
	for (int e = 0; e < ENV_COUNT; e++)
		if (st->rtxn[e] != NULL)
			mdb_txn_abort(st->rtxn[e]);
	pthread_mutex_lock(&st->sh->mu);
	bool last = --st->sh->refs == 0;
	pthread_mutex_unlock(&st->sh->mu);
	if (last)
		shared_free(st->sh);
	free(st);
}

/* Lower-cased DNS name: dot-separated labels of [a-z0-9-], 1..63 each, no
 * label starting or ending with '-'. */
int sa_store_domain_normalise(const char *in, char out[SA_DOMAIN_MAX + 1])
{
	size_t n = strnlen(in, SA_DOMAIN_MAX + 1), label = 0;

	if (n == 0 || n > SA_DOMAIN_MAX)
		return SA_STORE_EINVAL;
	for (size_t i = 0; i <= n; i++) {
		char c = ascii_lower(in[i]);
		if (c == '.' || c == '\0') {
			if (label == 0 || label > 63 || out[i - 1] == '-')
				return SA_STORE_EINVAL;
			label = 0;
		} else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (c == '-' && label > 0)) {
			label++;
		} else {
			return SA_STORE_EINVAL;
		}
		out[i] = c;
	}
	return SA_STORE_OK;
}

int sa_store_init(struct sa_store *st, const char *domain)
{
	char dom[SA_DOMAIN_MAX + 1], ver[16];
	uint64_t zero = 0;
	MDB_txn *txn;

	if (sa_store_domain_normalise(domain != NULL ? domain : SA_DEFAULT_DOMAIN, dom) != SA_STORE_OK)
		return SA_STORE_EINVAL;
	int rc = wr_begin(st, ENV_MAIN, &txn, false);
	if (rc != SA_STORE_OK)
		return rc;
	if (db_has(st, txn, DB_META, str_val("schema_version")))
		return wr_end(st, ENV_MAIN, txn, SA_STORE_EEXISTS);
	snprintf(ver, sizeof ver, "%d", SA_STORE_SCHEMA_VERSION);
	rc = db_put(st, txn, DB_META, str_val("schema_version"), str_val(ver));
	if (rc == SA_STORE_OK)
		rc = db_put(st, txn, DB_META, str_val("domain"), str_val(dom));
	if (rc == SA_STORE_OK)
		rc = db_put(st, txn, DB_META, str_val("seq"), mem_val(&zero, sizeof zero));
	if (rc == SA_STORE_OK)
		rc = meta_bump(st, txn, "generation", NULL);
	return wr_end(st, ENV_MAIN, txn, rc);
}

int sa_store_domain(struct sa_store *st, char *out, size_t outlen)
{
	MDB_txn *txn;
	MDB_val v;
	int rc = rd_begin(st, ENV_MAIN, &txn);

	if (rc != SA_STORE_OK)
		return rc;
	rc = db_get(st, txn, DB_META, str_val("domain"), &v);
	if (rc == SA_STORE_OK)
		rc = v.mv_size < outlen ? val_str(&v, out, outlen) : SA_STORE_EINVAL;
	else if (rc == SA_STORE_ENOTFOUND)
		rc = SA_STORE_EIO;
	return rd_end(st, ENV_MAIN, rc);
}

static int nonce_secret_read(struct sa_store *st, MDB_txn *txn, unsigned char secret[32])
{
	return db_get_rec(st, txn, DB_META, str_val("nonce_secret"), secret, 32);
}

/* Creates the secret unless another process did so first. */
static int nonce_secret_create(struct sa_store *st, unsigned char secret[32])
{
	MDB_txn *txn;
	int rc = wr_begin(st, ENV_MAIN, &txn, true);

	if (rc != SA_STORE_OK)
		return rc;
	rc = nonce_secret_read(st, txn, secret);
	if (rc == SA_STORE_ENOTFOUND) {
		rc = RAND_bytes(secret, 32) == 1 ? SA_STORE_OK : SA_STORE_EIO;
		if (rc == SA_STORE_OK)
			rc = db_put(st, txn, DB_META, str_val("nonce_secret"), mem_val(secret, 32));
	}
	return wr_end(st, ENV_MAIN, txn, rc);
}

int sa_store_nonce_secret(struct sa_store *st, unsigned char secret[32])
{
	MDB_txn *txn;
	int rc = rd_begin(st, ENV_MAIN, &txn);

	if (rc != SA_STORE_OK)
		return rc;
	rc = rd_end(st, ENV_MAIN, nonce_secret_read(st, txn, secret));
	if (rc == SA_STORE_ENOTFOUND)
		rc = nonce_secret_create(st, secret);
	return rc;
}

int sa_store_generation(struct sa_store *st, uint64_t *gen)
{
	MDB_txn *txn;
	int rc = rd_begin(st, ENV_MAIN, &txn);

	if (rc != SA_STORE_OK)
		return rc;
	return rd_end(st, ENV_MAIN, meta_get_u64(st, txn, "generation", gen));
}

int sa_store_realm(const char *trunk_id, const char *domain, char *out, size_t outlen)
{
	if (trunk_id == NULL || domain == NULL || out == NULL)
		return SA_STORE_EINVAL;
	/* twice per authenticated request: pieces copied, snprintf only to
	 * write the truncated text of one that does not fit */
	size_t tl = strlen(trunk_id), dl = strlen(domain);
	if (6 + tl + 1 + dl < outlen) {
		memcpy(out, "trunk-", 6);
		memcpy(out + 6, trunk_id, tl);
		out[6 + tl] = '.';
		memcpy(out + 7 + tl, domain, dl + 1);
		return SA_STORE_OK;
	}
	snprintf(out, outlen, "trunk-%s.%s", trunk_id, domain);
	return SA_STORE_EINVAL;
}

/* ---- accounts and API keys ---- */

/* Display names: 0..SA_NAME_MAX bytes of UTF-8 without control characters. */
static size_t utf8_seq(const unsigned char *s, uint32_t *cp)
{
	size_t n = *s >= 0xf0 ? 4 : *s >= 0xe0 ? 3 : *s >= 0xc0 ? 2 : 1;
	static const uint32_t min[5] = { 0, 0, 0x80, 0x800, 0x10000 };

	if ((*s >= 0x80 && *s < 0xc0) || *s > 0xf4)
		return 0;
	*cp = n == 1 ? *s : (*s & (0x7f >> n));
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		*cp = (*cp << 6) | (s[i] & 0x3f);
	}
	if (*cp < min[n] || *cp > 0x10ffff || (*cp >= 0xd800 && *cp <= 0xdfff))
		return 0;
	return n;
}

bool sa_store_name_ok(const char *name)
{
	const unsigned char *s = (const unsigned char *)name;
	uint32_t cp;

	if (strnlen(name, SA_NAME_MAX + 1) > SA_NAME_MAX)
		return false;
	while (*s != '\0') {
		size_t n = utf8_seq(s, &cp);
		if (n == 0 || cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp < 0xa0))
			return false;
		s += n;
	}
	return true;
}

static int account_get_txn(struct sa_store *st, MDB_txn *txn, const char *id, struct sa_account *out)
{
	if (!id_ok(id))
		return SA_STORE_ENOTFOUND;
	return db_get_rec(st, txn, DB_ACCOUNTS, str_val(id), out, sizeof *out);
}

int sa_store_account_create(struct sa_store *st, const char *name, int64_t now, struct sa_account *out)
{
	struct sa_account a;
	MDB_txn *txn;

	if (name == NULL || name[0] == '\0' || !sa_store_name_ok(name))
		return SA_STORE_EINVAL;
	int rc = wr_begin(st, ENV_MAIN, &txn, true);
	if (rc != SA_STORE_OK)
		return rc;
	memset(&a, 0, sizeof a);
	rc = room_for_new(st, ENV_MAIN);
	if (rc == SA_STORE_OK)
		rc = new_id(st, txn, DB_ACCOUNTS, "acc_", a.id);
	snprintf(a.name, sizeof a.name, "%s", name);
	a.created_at = now;
	if (rc == SA_STORE_OK)
		rc = db_put(st, txn, DB_ACCOUNTS, str_val(a.id), mem_val(&a, sizeof a));
	if (rc == SA_STORE_OK)
		rc = meta_bump(st, txn, "generation", NULL);
	rc = wr_end(st, ENV_MAIN, txn, rc);
	if (rc == SA_STORE_OK && out != NULL)
		*out = a;
	return rc;
}

int sa_store_account_get(struct sa_store *st, const char *account_id, struct sa_account *out)
{
	MDB_txn *txn;
	int rc = rd_begin(st, ENV_MAIN, &txn);

	if (rc != SA_STORE_OK)
		return rc;
	return rd_end(st, ENV_MAIN, account_get_txn(st, txn, account_id, out));
}

static void sha256(const void *p, size_t n, unsigned char out[HASH_LEN])
{
	SHA256_CTX c;

	SHA256_Init(&c);
	SHA256_Update(&c, p, n);
	SHA256_Final(out, &c);
}

int sa_store_apikey_make(char *key, unsigned char hash[SA_APIKEY_HASH_LEN])
{
	size_t plen = strlen(APIKEY_PREFIX);

	memcpy(key, APIKEY_PREFIX, plen);
	if (rand_chars(key + plen, SA_APIKEY_LEN - plen, base62, 62) != SA_STORE_OK)
		return SA_STORE_EIO;
	key[SA_APIKEY_LEN] = '\0';
	sha256(key, SA_APIKEY_LEN, hash);
	return SA_STORE_OK;
}

int sa_store_apikey_create(struct sa_store *st, const char *account_id, int64_t now, char *key)
{
	struct apikey_rec rec;
	struct sa_account a;
	unsigned char hash[HASH_LEN];
	MDB_txn *txn;
	int rc = wr_begin(st, ENV_MAIN, &txn, true);

	if (rc != SA_STORE_OK)
		return rc;
	rc = account_get_txn(st, txn, account_id, &a);
	if (rc == SA_STORE_OK)
		rc = room_for_new(st, ENV_MAIN);
	if (rc == SA_STORE_OK)
		rc = sa_store_apikey_make(key, hash);
	if (rc == SA_STORE_OK) {
		memset(&rec, 0, sizeof rec);
		memcpy(rec.account_id, a.id, sizeof rec.account_id);
		rec.created_at = now;
		rc = db_put(st, txn, DB_APIKEYS, mem_val(hash, sizeof hash), mem_val(&rec, sizeof rec));
	}
	if (rc == SA_STORE_OK)
		rc = meta_bump(st, txn, "generation", NULL);
	rc = wr_end(st, ENV_MAIN, txn, rc);
	if (rc != SA_STORE_OK && key != NULL)
		OPENSSL_cleanse(key, SA_APIKEY_LEN + 1);
	return rc;
}

int sa_store_apikey_account(struct sa_store *st, const char *key, size_t len, char account_id[SA_ID_MAX])
{
	unsigned char hash[HASH_LEN];
	struct apikey_rec rec;
	MDB_txn *txn;

	if (key == NULL || len != SA_APIKEY_LEN)
		return SA_STORE_ENOTFOUND;
	sha256(key, len, hash);
	int rc = rd_begin(st, ENV_MAIN, &txn);
	if (rc != SA_STORE_OK)
		return rc;
	rc = db_get_rec(st, txn, DB_APIKEYS, mem_val(hash, sizeof hash), &rec, sizeof rec);
	if (rc == SA_STORE_OK)
		memcpy(account_id, rec.account_id, SA_ID_MAX);
	return rd_end(st, ENV_MAIN, rc);
}

void sa_store_apikey_id(const unsigned char hash[SA_APIKEY_HASH_LEN], char out[SA_APIKEY_ID_LEN + 1])
{
	static const char digits[] = "0123456789abcdef";
	memcpy(out, "key_", 4);
	for (int i = 0; i < 8; i++) {
		out[4 + 2 * i] = digits[hash[i] >> 4];
		out[5 + 2 * i] = digits[hash[i] & 15];
	}
	out[SA_APIKEY_ID_LEN] = '\0';
}

struct apikey_walk {
	const char *account;
	sa_store_apikey_cb cb;          /* listing */
	void *arg;
	const char *want;               /* revoking: the id looked for */
	unsigned char found[SA_APIKEY_HASH_LEN];
	bool hit;
};

static int apikey_walk_fn(struct sa_store *st, MDB_txn *txn, const MDB_val *k, const MDB_val *v, void *arg)
{
	struct apikey_walk *w = arg;
	struct apikey_rec rec;
	struct sa_apikey_info i;
	(void)st;
	(void)txn;
	if (k->mv_size != SA_APIKEY_HASH_LEN || v->mv_size != sizeof rec)
		return SA_STORE_OK;
	memcpy(&rec, v->mv_data, sizeof rec);
	rec.account_id[SA_ID_MAX - 1] = '\0';
	if (strcmp(rec.account_id, w->account) != 0)
		return SA_STORE_OK;
	sa_store_apikey_id(k->mv_data, i.id);
	i.created_at = rec.created_at;
	if (w->want == NULL)
		return w->cb(&i, w->arg) != 0 ? WALK_STOP : SA_STORE_OK;
	if (strcmp(i.id, w->want) != 0)
		return SA_STORE_OK;
	memcpy(w->found, k->mv_data, SA_APIKEY_HASH_LEN);
	w->hit = true;
	return WALK_STOP;
}

int sa_store_apikey_list(struct sa_store *st, const char *account_id, sa_store_apikey_cb cb, void *arg)
{
	struct key all = { .len = 0 };
	struct sa_account a;
	MDB_txn *txn;
	int rc = rd_own_begin(st, ENV_MAIN, &txn);

	if (rc != SA_STORE_OK)
		return rc;
	rc = account_get_txn(st, txn, account_id, &a);
	if (rc == SA_STORE_OK) {
		struct apikey_walk w = { .account = a.id, .cb = cb, .arg = arg };
		rc = walk_prefix(st, txn, DB_APIKEYS, &all, apikey_walk_fn, &w);
	}
	return rd_own_end(st, ENV_MAIN, txn, rc);
}

int sa_store_apikey_revoke(struct sa_store *st, const char *account_id, const char *key_id)
{
	struct key all = { .len = 0 };
	struct sa_account a = { .id = "" };
	MDB_txn *txn;
	int rc = wr_begin(st, ENV_MAIN, &txn, false);

	if (rc != SA_STORE_OK)
		return rc;
	rc = account_get_txn(st, txn, account_id, &a);
	struct apikey_walk w = { .account = a.id, .want = key_id };
	if (rc == SA_STORE_OK)
		rc = walk_prefix(st, txn, DB_APIKEYS, &all, apikey_walk_fn, &w);
	if (rc == SA_STORE_OK && !w.hit)
		rc = SA_STORE_ENOTFOUND;
	if (rc == SA_STORE_OK)
		rc = db_del(st, txn, DB_APIKEYS, mem_val(w.found, sizeof w.found));
	if (rc == SA_STORE_OK)
		rc = meta_bump(st, txn, "generation", NULL);
	return wr_end(st, ENV_MAIN, txn, rc);
}

/* ---- trunks ---- */

static int trunk_get_txn(struct sa_store *st, MDB_txn *txn, const char *id, struct trunk_rec *out)
{
	if (!id_ok(id))
		return SA_STORE_ENOTFOUND;
	return db_get_rec(st, txn, DB_TRUNKS, str_val(id), out, sizeof *out);
}

static int trunk_put(struct sa_store *st, MDB_txn *txn, struct trunk_rec *r)
{
	struct key k = { .len = 0 };
	int rc = meta_bump(st, txn, "seq", &r->seq);

	key_str(&k, r->t.account_id);
	key_sep(&k);
	key_u64(&k, r->seq);
	if (rc == SA_STORE_OK)
		rc = db_put(st, txn, DB_TRUNKS, str_val(r->t.id), mem_val(r, sizeof *r));
	if (rc == SA_STORE_OK)
		rc = db_put(st, txn, DB_TRUNKS_BY_ACCOUNT, key_val(&k), str_val(r->t.id));
	if (rc == SA_STORE_OK)
		rc = meta_bump(st, txn, "generation", NULL);
	return rc;
}

int sa_store_trunk_create(struct sa_store *st, const char *account_id, const char *name,
                          int64_t now, struct sa_trunk *out)
{
	struct sa_account a;
	struct trunk_rec r;
	MDB_txn *txn;

	if (name == NULL)
		name = "";
	if (!sa_store_name_ok(name))
		return SA_STORE_EINVAL;
	int rc = wr_begin(st, ENV_MAIN, &txn, true);
	if (rc != SA_STORE_OK)
		return rc;
	memset(&r, 0, sizeof r);
	rc = account_get_txn(st, txn, account_id, &a);
	if (rc == SA_STORE_OK)
		rc = room_for_new(st, ENV_MAIN);
	if (rc == SA_STORE_OK)
		rc = new_id(st, txn, DB_TRUNKS, "trunk_", r.t.id);
	if (rc == SA_STORE_OK)
		memcpy(r.t.account_id, a.id, sizeof r.t.account_id);
	snprintf(r.t.name, sizeof r.t.name, "%s", name);
	r.t.created_at = now;
	if (rc == SA_STORE_OK)
		rc = trunk_put(st, txn, &r);
	rc = wr_end(st, ENV_MAIN, txn, rc);
	if (rc == SA_STORE_OK && out != NULL)
		*out = r.t;
	return rc;
}

int sa_store_trunk_get(struct sa_store *st, const char *trunk_id, struct sa_trunk *out)
{
	struct trunk_rec r;
	MDB_txn *txn;
	int rc = rd_begin(st, ENV_MAIN, &txn);

	if (rc != SA_STORE_OK)
		return rc;
	rc = rd_end(st, ENV_MAIN, trunk_get_txn(st, txn, trunk_id, &r));
	if (rc == SA_STORE_OK)
		*out = r.t;
	return rc;
}

int sa_store_trunk_policy_get(struct sa_store *st, const char *trunk_id, struct sa_trunk_policy *out)
{
	struct trunk_rec r;
	MDB_txn *txn;
	int rc = rd_begin(st, ENV_MAIN, &txn);

	sa_policy_default(out);
	if (rc != SA_STORE_OK)
		return rc;
	rc = trunk_get_txn(st, txn, trunk_id, &r);
	if (st->sh->policies && id_ok(trunk_id)) {
		/* an unknown trunk is asked for its policy too: the time a
		 * challenge takes must not tell which trunks exist (issue 10/8) */
		int prc = db_get_rec(st, txn, DB_TRUNK_POLICY, str_val(trunk_id), out, sizeof *out);
		if (rc == SA_STORE_OK && prc != SA_STORE_ENOTFOUND)
			rc = prc;
		if (rc != SA_STORE_OK || prc == SA_STORE_ENOTFOUND)
			sa_policy_default(out);
	}
	return rd_end(st, ENV_MAIN, rc);
}

int sa_store_trunk_policy_set(struct sa_store *st, const char *trunk_id, const struct sa_trunk_policy *p)
{
	struct trunk_rec r;
	MDB_txn *txn;
	int rc = wr_begin(st, ENV_MAIN, &txn, true);

	if (rc != SA_STORE_OK)
		return rc;
	rc = trunk_get_txn(st, txn, trunk_id, &r);
	if (rc == SA_STORE_OK)
		rc = db_put(st, txn, DB_TRUNK_POLICY, str_val(r.t.id), mem_val(p, sizeof *p));
	if (rc == SA_STORE_OK)
		rc = meta_bump(st, txn, "generation", NULL);
	return wr_end(st, ENV_MAIN, txn, rc);
}

struct trunk_walk {
	sa_store_trunk_cb cb;
	void *arg;
};

static int trunk_walk_fn(struct sa_store *st, MDB_txn *txn, const MDB_val *k, const MDB_val *v, void *arg)
{
	struct trunk_walk *w = arg;
	struct trunk_rec r;
	char id[SA_ID_MAX];
	int rc = val_str(v, id, sizeof id);

	if (rc == SA_STORE_OK)
		rc = trunk_get_txn(st, txn, id, &r);
	if (rc != SA_STORE_OK)
		return rc == SA_STORE_ENOTFOUND ? SA_STORE_EIO : rc;
	return w->cb(&r.t, w->arg) != 0 ? WALK_STOP : SA_STORE_OK;
}

int sa_store_trunk_list(struct sa_store *st, const char *account_id, sa_store_trunk_cb cb, void *arg)
{
	struct trunk_walk w = { cb, arg };
	struct key prefix = { .len = 0 };
	struct sa_account a;
	MDB_txn *txn;
	int rc = rd_own_begin(st, ENV_MAIN, &txn);

	if (rc != SA_STORE_OK)
		return rc;
	rc = account_get_txn(st, txn, account_id, &a);
	if (rc == SA_STORE_OK) {
		key_str(&prefix, a.id);
		key_sep(&prefix);
		rc = walk_prefix(st, txn, DB_TRUNKS_BY_ACCOUNT, &prefix, trunk_walk_fn, &w);
	}
	return rd_own_end(st, ENV_MAIN, txn, rc);
}

/* ---- credentials ---- */

static bool username_char_ok(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '_' || c == '-';
}

static int username_validate(const char *username, char *why, size_t whylen)
{
	size_t n;

	if (username == NULL || username[0] == '\0') {
		set_why(why, whylen, "username must not be empty");
		return SA_STORE_EINVAL;
	}
	n = strnlen(username, SA_USERNAME_MAX + 1);
	if (n > SA_USERNAME_MAX) {
		set_why(why, whylen, "username must be at most %d characters", SA_USERNAME_MAX);
		return SA_STORE_EINVAL;
	}
	for (size_t i = 0; i < n; i++) {
		if (!username_char_ok(username[i])) {
			set_why(why, whylen, "username may contain only letters, digits, '.', '_' and '-'");
			return SA_STORE_EINVAL;
		}
	}
	return SA_STORE_OK;
}

/* true when needle (a C string) occurs in hay[0..haylen) ignoring ASCII case */
static bool contains_nocase(const char *hay, size_t haylen, const char *needle)
{
	size_t n = strlen(needle);

	for (size_t i = 0; n > 0 && i + n <= haylen; i++) {
		size_t j = 0;
		while (j < n && ascii_lower(hay[i + j]) == ascii_lower(needle[j]))
			j++;
		if (j == n)
			return true;
	}
	return false;
}

static int password_validate(const char *username, const char *password, size_t len,
                             unsigned min_len, char *why, size_t whylen)
{
	if (password == NULL || len < min_len) {
		set_why(why, whylen, "password must be at least %u characters", min_len);
		return SA_STORE_EINVAL;
	}
	if (len > SA_PASSWORD_MAX) {
		set_why(why, whylen, "password must be at most %d characters", SA_PASSWORD_MAX);
		return SA_STORE_EINVAL;
	}
	for (size_t i = 0; i < len; i++) {
		if (password[i] < 0x20 || password[i] > 0x7e) {
			set_why(why, whylen, "password must contain only printable ASCII characters");
			return SA_STORE_EINVAL;
		}
	}
	if (contains_nocase(password, len, username)) {
		set_why(why, whylen, "password must not contain the username");
		return SA_STORE_EINVAL;
	}
	return SA_STORE_OK;
}

int sa_credential_validate(const char *username, const char *password, size_t password_len,
                           unsigned min_len, char *why, size_t whylen)
{
	if (min_len < SA_PASSWORD_MIN)
		min_len = SA_PASSWORD_MIN;
	if (min_len > SA_PASSWORD_MAX) {
		set_why(why, whylen, "minimum password length must be at most %d", SA_PASSWORD_MAX);
		return SA_STORE_EINVAL;
	}
	int rc = username_validate(username, why, whylen);
	if (rc != SA_STORE_OK)
		return rc;
	return password_validate(username, password, password_len, min_len, why, whylen);
}

/* cred_by_user key: trunk id \0 lower(username) */
static void user_key(struct key *k, const char *trunk_id, const char *username)
{
	k->len = 0;
	key_str(k, trunk_id);
	key_sep(k);
	for (size_t i = 0; username[i] != '\0'; i++)
		k->b[k->len++] = (unsigned char)ascii_lower(username[i]);
}

static void trunk_seq_key(struct key *k, const char *trunk_id, uint64_t seq)
{
	k->len = 0;
	key_str(k, trunk_id);
	key_sep(k);
	key_u64(k, seq);
}

/*
 * Credential records are written compact (schema 3), as bindings are: a tag
 * byte, the numbers, then the strings. The struct holds every HA1 and the
 * previous password's in fields of the longest hex: compact, a credential
 * never rotated takes about 260 bytes instead of 600, and a table of a
 * million half the pages. An authentication reads one credential
 * picked by the caller from all of them: fewer pages are fewer cache and
 * TLB misses, and fewer first touches (page faults) after a start. The
 * struct layouts of schemas 1 and 2 are read by their exact sizes; a
 * compact record that would have one of them gets a padding byte.
 */
#define CRED_TAG 0x01
#define CRED_ENC_MAX (1 + 8 + 8 + 4 + 8 + 8 + (3 + 2 * SA_ALG_COUNT) * 2 + sizeof(struct sa_credential) + 1)

/* The credential's fields in record order. */
static void cred_fields(struct cred_rec *r, struct fields *f)
{
	struct sa_credential *c = &r->c;

	f->nnum = f->nstr = 0;
	field_num(f, &r->seq, sizeof r->seq);
	field_num(f, &c->created_at, sizeof c->created_at);
	field_num(f, &c->password_version, sizeof c->password_version);
	field_num(f, &c->rotated_at, sizeof c->rotated_at);
	field_num(f, &c->previous_until, sizeof c->previous_until);
	field_str(f, c->id, sizeof c->id);
	field_str(f, c->trunk_id, sizeof c->trunk_id);
	field_str(f, c->username, sizeof c->username);
	for (int alg = 0; alg < SA_ALG_COUNT; alg++) {
		field_str(f, c->ha1[alg], sizeof c->ha1[alg]);
		field_str(f, c->previous_ha1[alg], sizeof c->previous_ha1[alg]);
	}
}

static bool cred_fixed_size(size_t n)
{
	return n == sizeof(struct cred_rec) || n == sizeof(struct cred_rec_v1);
}

/* out holds CRED_ENC_MAX bytes (wiped by the caller: HA1s); returns the length. */
static size_t cred_encode(const struct cred_rec *r, unsigned char *out)
{
	struct fields f;

	cred_fields((struct cred_rec *)r, &f);   /* read only */
	size_t n = compact_encode(CRED_TAG, &f, out);
	if (cred_fixed_size(n))
		out[n++] = 0;
	return n;
}

static int cred_decode_compact(const MDB_val *v, struct cred_rec *out)
{
	struct fields f;
	size_t left;

	memset(out, 0, sizeof *out);
	cred_fields(out, &f);
	int rc = compact_decode(v, &f, &left);
	if (rc == SA_STORE_OK && (left > 1 || (left == 1 && !cred_fixed_size(v->mv_size - 1))))
		rc = SA_STORE_EIO;
	return rc;
}

/* Whether v is a credential record (any layout), not a username's key: a
 * key begins with a trunk id's text and is shorter than either struct. */
static bool cred_is_record(const MDB_val *v)
{
	_Static_assert(SA_ID_MAX + 1 + SA_USERNAME_MAX < sizeof(struct cred_rec_v1), "a key is shorter");
	return cred_fixed_size(v->mv_size) || (v->mv_size > 0 && *(const unsigned char *)v->mv_data == CRED_TAG);
}

/* A credential record of any layout; schema 1's is at version 1, never rotated. */
static int cred_decode(const MDB_val *v, struct cred_rec *out)
{
	bool older;

	if (!cred_fixed_size(v->mv_size)) {
		if (v->mv_size > 0 && *(const unsigned char *)v->mv_data == CRED_TAG)
			return cred_decode_compact(v, out);
		return SA_STORE_EIO;
	}
	int rc = val_rec_older(v, out, sizeof *out, sizeof(struct cred_rec_v1), &older);
	if (rc == SA_STORE_OK && older) {
		out->c.password_version = 1;
		out->c.rotated_at = 0;
		out->c.previous_until = 0;
		memset(out->c.previous_ha1, 0, sizeof out->c.previous_ha1);
	}
	return rc;
}

/* A log in db keyed by consecutive positions (the meta counter seq_name
 * the last): appends v under the next one and drops the oldest beyond keep,
 * in the caller's transaction. A reader that finds a first position beyond
 * its own + 1 knows that entries were dropped before it read them. */
static int log_append(struct sa_store *st, MDB_txn *txn, int db, const char *seq_name, size_t keep, MDB_val v)
{
	struct key k = { .len = 0 }, oldest, all = { .len = 0 };
	MDB_stat ms = { .ms_entries = 0 };
	uint64_t seq;
	int rc = meta_bump(st, txn, seq_name, &seq);

	key_u64(&k, seq);
	if (rc == SA_STORE_OK)
		rc = db_put(st, txn, db, key_val(&k), v);
	if (rc == SA_STORE_OK)
		rc = note_err(st, mdb_stat(txn, st->sh->dbi[db], &ms));
	for (size_t n = ms.ms_entries; rc == SA_STORE_OK && n > keep; n--) {
		rc = first_with_prefix(st, txn, db, &all, &oldest);
		if (rc == SA_STORE_OK)
			rc = db_del(st, txn, db, key_val(&oldest));
	}
	return rc;
}

/* Logs that the credential under username key uk changed (written or
 * deleted) in txn, for the credential indexes of every process (see
 * sa_store_credential_index), and drops the oldest entries beyond
 * CHANGES_KEEP. Positions are consecutive from 1 ("chg_seq" in meta the
 * last), so a gap tells an index that it fell behind what is kept. */
static int cred_changed(struct sa_store *st, MDB_txn *txn, const struct key *uk)
{
	return log_append(st, txn, DB_CRED_CHANGES, "chg_seq", CHANGES_KEEP, key_val(uk));
}

/* Writes the record (compact) under its username, and the username's key
 * under its id (schema 4): an authentication, which knows the username,
 * finds the record in one lookup; the API's reads by id take two. */
static int cred_write(struct sa_store *st, MDB_txn *txn, const struct cred_rec *r)
{
	unsigned char enc[CRED_ENC_MAX];
	size_t n = cred_encode(r, enc);
	struct key uk;

	user_key(&uk, r->c.trunk_id, r->c.username);
	int rc = db_put(st, txn, DB_CRED_BY_USER, key_val(&uk), mem_val(enc, n));
	if (rc == SA_STORE_OK)
		rc = db_put(st, txn, DB_CREDS, str_val(r->c.id), key_val(&uk));
	if (rc == SA_STORE_OK)
		rc = cred_changed(st, txn, &uk);

	OPENSSL_cleanse(enc, n);
	return rc;
}

static int cred_get_txn(struct sa_store *st, MDB_txn *txn, MDB_val id, struct cred_rec *out)
{
	MDB_val v, uk;

	if (id.mv_size == 0 || id.mv_size >= SA_ID_MAX)
		return SA_STORE_ENOTFOUND;
	int rc = db_get(st, txn, DB_CREDS, id, &v);
	if (rc != SA_STORE_OK || cred_is_record(&v))
		return rc != SA_STORE_OK ? rc : cred_decode(&v, out);
	uk = v;   /* schema 4: the record is under the username */
	rc = db_get(st, txn, DB_CRED_BY_USER, uk, &v);
	if (rc == SA_STORE_ENOTFOUND)
		rc = SA_STORE_EIO;   /* an id without its record */
	return rc != SA_STORE_OK ? rc : cred_decode(&v, out);
}

/* The credential a cred_by_user value leads to: the record itself (schema
 * 4), or the id of the record (before). */
static int cred_by_user_val(struct sa_store *st, MDB_txn *txn, const MDB_val *v, struct cred_rec *out)
{
	if (cred_is_record(v))
		return cred_decode(v, out);
	int rc = cred_get_txn(st, txn, *v, out);
	return rc == SA_STORE_ENOTFOUND ? SA_STORE_EIO : rc;
}

/* HA1 for every algorithm, from a NUL-terminated copy of the password that is wiped. */
int sa_credential_ha1(struct sa_credential *c, const char *realm, const char *password, size_t len)
{
	char pw[SA_PASSWORD_MAX + 1];
	int rc = SA_STORE_OK;

	memcpy(pw, password, len);
	pw[len] = '\0';
	for (int alg = 0; alg < SA_ALG_COUNT && rc == SA_STORE_OK; alg++)
		if (sa_digest_ha1((enum sa_digest_alg)alg, c->username, realm, pw, c->ha1[alg]) != 0)
			rc = SA_STORE_EIO;
	OPENSSL_cleanse(pw, sizeof pw);
	return rc;
}

static int cred_realm(struct sa_store *st, MDB_txn *txn, const char *trunk_id, char realm[SA_REALM_MAX])
{
	char domain[SA_DOMAIN_MAX + 1];
	MDB_val v;
	int rc = db_get(st, txn, DB_META, str_val("domain"), &v);

	if (rc == SA_STORE_OK)
		rc = val_str(&v, domain, sizeof domain);
	if (rc == SA_STORE_OK)
		rc = sa_store_realm(trunk_id, domain, realm, SA_REALM_MAX);
	return rc == SA_STORE_OK ? rc : SA_STORE_EIO;
}

/* Writes the record and both indexes in the caller's transaction. */
static int cred_put(struct sa_store *st, MDB_txn *txn, struct cred_rec *r)
{
	struct key sk;
	int rc = meta_bump(st, txn, "seq", &r->seq);

	trunk_seq_key(&sk, r->c.trunk_id, r->seq);
	if (rc == SA_STORE_OK)
		rc = cred_write(st, txn, r);
	if (rc == SA_STORE_OK)
		rc = db_put(st, txn, DB_CRED_BY_TRUNK, key_val(&sk), str_val(r->c.id));
	if (rc == SA_STORE_OK)
		rc = meta_bump(st, txn, "generation", NULL);
	return rc;
}

/* Everything credential_create does inside its transaction. */
static int cred_create_txn(struct sa_store *st, MDB_txn *txn, struct cred_rec *r,
                           const char *password, size_t len, char *why, size_t whylen)
{
	struct trunk_rec t;
	char realm[SA_REALM_MAX];
	struct key uk;
	int rc = trunk_get_txn(st, txn, r->c.trunk_id, &t);

	if (rc == SA_STORE_ENOTFOUND)
		set_why(why, whylen, "unknown trunk");
	if (rc != SA_STORE_OK)
		return rc;
	user_key(&uk, r->c.trunk_id, r->c.username);
	if (db_has(st, txn, DB_CRED_BY_USER, key_val(&uk))) {
		set_why(why, whylen, "username already exists on this trunk");
		return SA_STORE_EEXISTS;
	}
	rc = room_for_new(st, ENV_MAIN);
	if (rc == SA_STORE_OK)
		rc = cred_realm(st, txn, r->c.trunk_id, realm);
	if (rc == SA_STORE_OK)
		rc = new_id(st, txn, DB_CREDS, "cred_", r->c.id);
	if (rc == SA_STORE_OK)
		rc = sa_credential_ha1(&r->c, realm, password, len);
	if (rc == SA_STORE_OK)
		rc = cred_put(st, txn, r);
	return rc;
}

int sa_store_credential_create(struct sa_store *st, const char *trunk_id, const char *username,
                               const char *password, size_t password_len, unsigned min_len,
                               int64_t now, struct sa_credential *out, char *why, size_t whylen)
{
	struct cred_rec r;
	MDB_txn *txn;
	int rc = sa_credential_validate(username, password, password_len, min_len, why, whylen);

	if (rc != SA_STORE_OK)
		return rc;
	if (!id_ok(trunk_id)) {
		set_why(why, whylen, "unknown trunk");
		return SA_STORE_ENOTFOUND;
	}
	memset(&r, 0, sizeof r);
	memcpy(r.c.trunk_id, trunk_id, strlen(trunk_id));
	memcpy(r.c.username, username, strlen(username));
	r.c.created_at = now;
	r.c.password_version = 1;
	rc = wr_begin(st, ENV_MAIN, &txn, true);
	if (rc == SA_STORE_OK)
		rc = wr_end(st, ENV_MAIN, txn, cred_create_txn(st, txn, &r, password, password_len, why, whylen));
	if (rc == SA_STORE_OK && out != NULL)
		*out = r.c;
	OPENSSL_cleanse(&r, sizeof r);
	return rc;
}

/* ---- the credential index (store.h) ---- */

/* A copy of a cred_by_user value: a record of any layout, or the key of a
 * record not yet moved under its username (cred_by_user_val reads either). */
union cred_val {
	unsigned char b[SA_KVINDEX_VALUE_MAX];
	uint64_t align;
};
_Static_assert(CRED_ENC_MAX <= SA_KVINDEX_VALUE_MAX && sizeof(struct cred_rec) <= SA_KVINDEX_VALUE_MAX,
               "every credential record fits the index");
_Static_assert(KEY_MAX <= SA_KVINDEX_KEY_MAX, "every username's key fits the index");

#define CINDEX_OFF 1    /* cindex_find: no index, descend cred_by_user */

static int cindex_put_fn(struct sa_store *st, MDB_txn *txn, const MDB_val *k, const MDB_val *v, void *arg)
{
	(void)st;
	(void)txn;
	return sa_kvindex_put(arg, k->mv_data, k->mv_size, v->mv_data, v->mv_size) == 0 ? SA_STORE_OK : SA_STORE_EIO;
}

/* A new index of every credential in txn, and txn's change-log position. */
static int cindex_build(struct sa_store *st, MDB_txn *txn, struct sa_kvindex **out, uint64_t *pos)
{
	struct key all = { .len = 0 };
	struct sa_kvindex *kv = sa_kvindex_new();
	int rc = kv != NULL ? meta_get_u64(st, txn, "chg_seq", pos) : SA_STORE_EIO;

	if (rc == SA_STORE_OK)
		rc = walk_prefix(st, txn, DB_CRED_BY_USER, &all, cindex_put_fn, kv);
	if (rc != SA_STORE_OK) {
		sa_kvindex_free(kv);
		return rc;
	}
	*out = kv;
	return SA_STORE_OK;
}

struct catch_up {
	struct sa_kvindex *kv;
	uint64_t next;       /* the position the next entry must have */
	uint64_t last;       /* the last one to apply */
	bool gap;            /* it had another: the entries before it were dropped */
};

/* One change-log entry: the username's record as txn has it, or none. */
static int cindex_change_fn(struct sa_store *st, MDB_txn *txn, const MDB_val *k, const MDB_val *v, void *arg)
{
	struct catch_up *c = arg;
	uint64_t pos = 0;
	MDB_val rec;

	for (size_t i = 0; i < k->mv_size; i++)
		pos = pos << 8 | ((const unsigned char *)k->mv_data)[i];
	if (k->mv_size != 8 || pos != c->next) {
		c->gap = true;
		return WALK_STOP;
	}
	c->next++;
	int rc = db_get(st, txn, DB_CRED_BY_USER, *v, &rec);
	if (rc == SA_STORE_ENOTFOUND) {
		sa_kvindex_del(c->kv, v->mv_data, v->mv_size);
		rc = SA_STORE_OK;
	} else if (rc == SA_STORE_OK && sa_kvindex_put(c->kv, v->mv_data, v->mv_size, rec.mv_data, rec.mv_size) != 0) {
		rc = SA_STORE_EIO;
	}
	return rc == SA_STORE_OK && pos == c->last ? WALK_STOP : rc;
}

/* The index let go: finds descend cred_by_user. stale: until a refresh
 * builds it again; else for good (counted). Under the write lock. */
static void cindex_let_go(struct cindex *x, bool stale)
{
	sa_kvindex_free(x->kv);
	x->kv = NULL;
	x->stale = stale;
	x->dropped += !stale;
}

/* A table built from main's transaction id up to change-log position pos
 * takes the place of whatever x held. With x's lock held for writing. */
static void cindex_install(struct cindex *x, struct sa_kvindex *kv, uint64_t pos, uint64_t id)
{
	sa_kvindex_free(x->kv);
	x->kv = kv;
	x->stale = false;
	x->pos = pos;
	x->txnid = id;
}

/* The most logged changes a find applies itself: more (a bulk of writes
 * with no request between), and it reads data.mdb while the refresh, off
 * the hot path, applies them. */
#define CATCH_UP_INLINE 256
/* The most the refresh applies per hold of the write lock: finds wait
 * for one batch at most. */
#define CATCH_UP_BATCH  4096

/* Brings the index towards txn (main's transaction id), whose change-log
 * position is pos: the changes logged after the index's, at most max of
 * them (0: all). Whether it is now at pos (or past it: txn is older).
 * Changes are applied with their records as txn has them, so a partial
 * catch-up leaves some keys newer than the index's position: harmless,
 * since no find trusts the index for a transaction it has not been
 * brought up to whole. When the log no longer holds the changes, the
 * index is let go as stale (the refresh builds it again); when keeping it
 * up fails (no memory, a failing read), for good. Under the write lock. */
static bool cindex_catch_up(struct sa_store *st, MDB_txn *txn, uint64_t id, uint64_t pos, uint64_t max)
{
	struct cindex *x = &st->sh->idx;

	if (pos > x->pos) {
		uint64_t to = max > 0 && pos - x->pos > max ? x->pos + max : pos;
		struct key from = { .len = 0 }, all = { .len = 0 };
		struct catch_up c = { .kv = x->kv, .next = x->pos + 1, .last = to };
		key_u64(&from, x->pos + 1);
		int rc = walk_range(st, txn, DB_CRED_CHANGES, &from, &all, cindex_change_fn, &c);
		if (rc != SA_STORE_OK || c.gap || c.next != to + 1) {
			cindex_let_go(x, rc == SA_STORE_OK);
			return false;
		}
		x->pos = to;
		if (to < pos)
			return false;
	}
	if (pos == x->pos)
		x->txnid = id;
	return true;
}

/* The record under uk from the index, brought up to txn first when it is
 * older; CINDEX_OFF without an index. */
static int cindex_find(struct sa_store *st, MDB_txn *txn, const struct key *uk, struct cred_rec *out)
{
	struct cindex *x = &st->sh->idx;
	uint64_t id = mdb_txn_id(txn);
	union cred_val v;
	long n = -1;

	uint64_t pos;

	pthread_rwlock_rdlock(&x->lock);
	if (x->kv != NULL && x->txnid != id) {
		pthread_rwlock_unlock(&x->lock);
		if (meta_get_u64(st, txn, "chg_seq", &pos) != SA_STORE_OK)
			return CINDEX_OFF;
		pthread_rwlock_wrlock(&x->lock);
		if (x->kv != NULL && x->txnid != id &&
		    (pos > x->pos + CATCH_UP_INLINE || !cindex_catch_up(st, txn, id, pos, 0))) {
			pthread_rwlock_unlock(&x->lock);
			return CINDEX_OFF;
		}
	}
	bool on = x->kv != NULL;
	if (on)
		n = sa_kvindex_get(x->kv, uk->b, uk->len, v.b, sizeof v.b);
	pthread_rwlock_unlock(&x->lock);
	if (!on)
		return CINDEX_OFF;
	if (n < 0)
		return SA_STORE_ENOTFOUND;
	MDB_val mv = mem_val(v.b, (size_t)n);
	int rc = cred_by_user_val(st, txn, &mv, out);
	OPENSSL_cleanse(v.b, (size_t)n);
	/* a record not yet moved, named by an index another thread took past txn: ask txn */
	return rc == SA_STORE_OK || rc == SA_STORE_ENOTFOUND ? rc : CINDEX_OFF;
}

/* Where this process maps the file of fd: the mapping of its first byte
 * (/proc/self/maps, matched by device and inode). false when not found. */
static bool map_of(int fd, uintptr_t *start, uintptr_t *end)
{
	struct stat sb;
	char line[512];
	bool found = false;

	if (fstat(fd, &sb) != 0)
		return false;
	FILE *f = fopen("/proc/self/maps", "re");
	if (f == NULL)
		return false;
	while (!found && fgets(line, sizeof line, f) != NULL) {
		unsigned long lo, hi, off, ino;
		unsigned maj, mnr;
		if (sscanf(line, "%lx-%lx %*s %lx %x:%x %lu", &lo, &hi, &off, &maj, &mnr, &ino) == 6 && off == 0 &&
		    ino == (unsigned long)sb.st_ino && makedev(maj, mnr) == sb.st_dev) {
			*start = lo;
			*end = hi;
			found = true;
		}
	}
	fclose(f);
	return found;
}

/* The build's walk mapped every page of e's file that holds data into
 * this process; the index has what finds need, so the process lets them
 * go (they stay in the page cache, and a later read maps a page again).
 * Its RSS is then the index and what requests touch, not the whole file.
 * Called with e's lock held (a transaction open), so that no remap runs. */
static void map_let_go(struct sa_store *st, int e)
{
	MDB_envinfo ei;
	mdb_filehandle_t fd;
	uintptr_t start, end;

	if (mdb_env_info(st->sh->env[e].env, &ei) != 0 || mdb_env_get_fd(st->sh->env[e].env, &fd) != 0 ||
	    !map_of(fd, &start, &end))
		return;
	size_t len = (size_t)(ei.me_last_pgno + 1) * (size_t)st->sh->env[e].psize;
	if (len > end - start)
		len = end - start;
	(void)madvise((void *)start, len, MADV_DONTNEED);   /* advice: without it the pages stay mapped */
}

int sa_store_credential_index(struct sa_store *st)
{
	struct cindex *x = &st->sh->idx;
	struct sa_kvindex *kv;
	uint64_t pos;
	MDB_txn *txn;

	if (!st->sh->changes)
		return SA_STORE_EINVAL;
	int rc = rd_own_begin(st, ENV_MAIN, &txn);
	if (rc != SA_STORE_OK)
		return rc;
	uint64_t id = mdb_txn_id(txn);
	rc = cindex_build(st, txn, &kv, &pos);
	if (rc == SA_STORE_OK)
		map_let_go(st, ENV_MAIN);
	rc = rd_own_end(st, ENV_MAIN, txn, rc);
	if (rc != SA_STORE_OK)
		return rc;
	pthread_rwlock_wrlock(&x->lock);
	cindex_install(x, kv, pos, id);
	pthread_rwlock_unlock(&x->lock);
	return SA_STORE_OK;
}

int sa_store_credential_index_refresh(struct sa_store *st, bool *rebuilt)
{
	struct cindex *x = &st->sh->idx;
	struct sa_kvindex *kv = NULL;
	uint64_t pos = 0;
	MDB_txn *txn;

	*rebuilt = false;
	pthread_rwlock_rdlock(&x->lock);
	bool on = x->kv != NULL, stale = x->stale;
	pthread_rwlock_unlock(&x->lock);
	if (!on && !stale)
		return SA_STORE_OK;
	int rc = rd_begin(st, ENV_MAIN, &txn);
	if (rc != SA_STORE_OK)
		return rc;
	uint64_t id = mdb_txn_id(txn), at;
	if (on)   /* the changes since, a batch per hold of the lock, so that finds have few or none to apply */
		rc = meta_get_u64(st, txn, "chg_seq", &at);
	for (bool done = !on || rc != SA_STORE_OK; !done;) {
		pthread_rwlock_wrlock(&x->lock);
		done = x->kv == NULL || x->txnid == id || cindex_catch_up(st, txn, id, at, CATCH_UP_BATCH) ||
		       x->kv == NULL;
		stale = x->stale;
		pthread_rwlock_unlock(&x->lock);
	}
	if (stale)   /* built without the lock: finds read data.mdb meanwhile, waiting for nothing */
		rc = cindex_build(st, txn, &kv, &pos);
	rd_end(st, ENV_MAIN, rc);
	if (!stale)
		return SA_STORE_OK;
	pthread_rwlock_wrlock(&x->lock);
	if (rc == SA_STORE_OK && x->stale) {   /* let go meanwhile: x->kv is NULL */
		cindex_install(x, kv, pos, id);
		x->rebuilds++;
		*rebuilt = true;
	} else {
		sa_kvindex_free(kv);
		if (rc != SA_STORE_OK && x->stale)
			cindex_let_go(x, false);
	}
	pthread_rwlock_unlock(&x->lock);
	return rc;
}

void sa_store_credential_index_stats(struct sa_store *st, struct sa_store_index_stats *out)
{
	struct cindex *x = &st->sh->idx;
	struct sa_kvindex_stats ks = { 0 };

	pthread_rwlock_rdlock(&x->lock);
	if (x->kv != NULL)
		sa_kvindex_stats(x->kv, &ks);
	*out = (struct sa_store_index_stats){
		.on = x->kv != NULL, .stale = x->stale, .credentials = ks.records, .bytes = ks.bytes,
		.position = x->pos, .rebuilds = x->rebuilds, .dropped = x->dropped,
	};
	pthread_rwlock_unlock(&x->lock);
}

int sa_store_credential_find(struct sa_store *st, const char *trunk_id, const char *username,
                             struct sa_credential *out)
{
	struct cred_rec r;
	struct key uk;
	MDB_txn *txn;
	MDB_val v;

	if (!id_ok(trunk_id) || username == NULL || username[0] == '\0' ||
	    strnlen(username, SA_USERNAME_MAX + 1) > SA_USERNAME_MAX)
		return SA_STORE_ENOTFOUND;
	user_key(&uk, trunk_id, username);
	int rc = rd_begin(st, ENV_MAIN, &txn);
	if (rc != SA_STORE_OK)
		return rc;
	rc = cindex_find(st, txn, &uk, &r);
	if (rc == CINDEX_OFF) {
		rc = db_get(st, txn, DB_CRED_BY_USER, key_val(&uk), &v);
		if (rc == SA_STORE_OK)
			rc = cred_by_user_val(st, txn, &v, &r);
	}
	rd_end(st, ENV_MAIN, rc);
	if (rc == SA_STORE_OK)
		*out = r.c;
	OPENSSL_cleanse(&r, sizeof r);
	return rc;
}

int sa_store_credential_get(struct sa_store *st, const char *cred_id, struct sa_credential *out)
{
	struct cred_rec r;
	MDB_txn *txn;

	if (!id_ok(cred_id))
		return SA_STORE_ENOTFOUND;
	int rc = rd_begin(st, ENV_MAIN, &txn);
	if (rc != SA_STORE_OK)
		return rc;
	rc = rd_end(st, ENV_MAIN, cred_get_txn(st, txn, str_val(cred_id), &r));
	if (rc == SA_STORE_OK)
		*out = r.c;
	OPENSSL_cleanse(&r, sizeof r);
	return rc;
}

/*
 * A store older than schema 4 keeps each credential's record under its id.
 * The writable open that marks it 4 notes CREDS_TO_MOVE; this open and the
 * next ones move the records under their usernames, MOVE_BATCH per
 * transaction (a million would overflow one), until none is left. Records
 * not yet moved read as they are: a move that stops (a full map, a crash)
 * loses nothing and goes on at the next writable open.
 */
#define MOVE_BATCH 4096

/* Moves up to MOVE_BATCH records whose ids sort after *after (none: from
 * the first); *after becomes the last id looked at, *left whether any
 * remain after it. */
static int creds_move_batch(struct sa_store *st, char after[SA_ID_MAX], bool *left)
{
	char (*ids)[SA_ID_MAX] = malloc(MOVE_BATCH * sizeof *ids);
	MDB_cursor *cur = NULL;
	MDB_txn *txn;
	MDB_val k = str_val(after), v;
	size_t n = 0;
	int rc = ids != NULL ? wr_begin(st, ENV_MAIN, &txn, false) : SA_STORE_EIO;

	if (rc != SA_STORE_OK) {
		free(ids);
		return rc;
	}
	rc = note_err(st, mdb_cursor_open(txn, st->sh->dbi[DB_CREDS], &cur));
	int mrc = rc != SA_STORE_OK ? MDB_NOTFOUND : mdb_cursor_get(cur, &k, &v, after[0] ? MDB_SET_RANGE : MDB_FIRST);
	if (mrc == 0 && after[0] && k.mv_size == strlen(after) && memcmp(k.mv_data, after, k.mv_size) == 0)
		mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
	for (; mrc == 0 && n < MOVE_BATCH; mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT))
		if (val_str(&k, ids[n], SA_ID_MAX) == SA_STORE_OK)
			n++;
	if (mrc != 0 && mrc != MDB_NOTFOUND && rc == SA_STORE_OK)
		rc = note_err(st, mrc);
	*left = mrc == 0;
	if (cur != NULL)
		mdb_cursor_close(cur);
	for (size_t i = 0; i < n && rc == SA_STORE_OK; i++) {
		struct cred_rec r;
		rc = db_get(st, txn, DB_CREDS, str_val(ids[i]), &v);
		if (rc == SA_STORE_OK && cred_is_record(&v)) {
			rc = cred_decode(&v, &r);
			if (rc == SA_STORE_OK)
				rc = cred_write(st, txn, &r);
			OPENSSL_cleanse(&r, sizeof r);
		}
	}
	if (n > 0)
		memcpy(after, ids[n - 1], SA_ID_MAX);
	free(ids);
	return wr_end(st, ENV_MAIN, txn, rc);
}

static void creds_move(struct sa_store *st)
{
	char after[SA_ID_MAX] = "";
	bool left = true;
	MDB_txn *txn;
	/* a read transaction of its own, ended here: the open leaves no reader
	 * slot taken behind it */
	int rc = rd_own_begin(st, ENV_MAIN, &txn);

	if (rc != SA_STORE_OK)
		return;
	bool pending = db_has(st, txn, DB_META, str_val(CREDS_TO_MOVE));
	rd_own_end(st, ENV_MAIN, txn, SA_STORE_OK);
	while (pending && left && rc == SA_STORE_OK)
		rc = creds_move_batch(st, after, &left);
	if (pending && rc == SA_STORE_OK && wr_begin(st, ENV_MAIN, &txn, false) == SA_STORE_OK)
		wr_end(st, ENV_MAIN, txn, db_del(st, txn, DB_META, str_val(CREDS_TO_MOVE)));
}

struct cred_walk {
	sa_store_credential_cb cb;
	void *arg;
};

static int cred_walk_fn(struct sa_store *st, MDB_txn *txn, const MDB_val *k, const MDB_val *v, void *arg)
{
	struct cred_walk *w = arg;
	struct cred_rec r;
	int rc = cred_get_txn(st, txn, *v, &r);

	if (rc == SA_STORE_OK)
		rc = w->cb(&r.c, w->arg) != 0 ? WALK_STOP : SA_STORE_OK;
	else if (rc == SA_STORE_ENOTFOUND)
		rc = SA_STORE_EIO;   /* an index entry without its record */
	OPENSSL_cleanse(&r, sizeof r);
	return rc;
}

int sa_store_credential_list(struct sa_store *st, const char *trunk_id, sa_store_credential_cb cb, void *arg)
{
	struct cred_walk w = { cb, arg };
	struct trunk_rec t;
	struct key prefix = { .len = 0 };
	MDB_txn *txn;
	int rc = rd_own_begin(st, ENV_MAIN, &txn);

	if (rc != SA_STORE_OK)
		return rc;
	rc = trunk_get_txn(st, txn, trunk_id, &t);
	if (rc == SA_STORE_OK) {
		key_str(&prefix, t.t.id);
		key_sep(&prefix);
		rc = walk_prefix(st, txn, DB_CRED_BY_TRUNK, &prefix, cred_walk_fn, &w);
	}
	return rd_own_end(st, ENV_MAIN, txn, rc);
}

/* The index key just past the credential after_id, which must be the trunk's. */
static int cred_after_key(struct sa_store *st, MDB_txn *txn, const char *trunk_id, const char *after_id,
                          struct key *start)
{
	struct cred_rec r;
	int rc = id_ok(after_id) ? cred_get_txn(st, txn, str_val(after_id), &r) : SA_STORE_ENOTFOUND;

	if (rc == SA_STORE_OK && strcmp(r.c.trunk_id, trunk_id) != 0)
		rc = SA_STORE_ENOTFOUND;
	if (rc == SA_STORE_OK)
		trunk_seq_key(start, trunk_id, r.seq + 1);
	OPENSSL_cleanse(&r, sizeof r);
	return rc == SA_STORE_ENOTFOUND ? SA_STORE_EINVAL : rc;
}

int sa_store_credential_list_after(struct sa_store *st, const char *trunk_id, const char *after_id,
                                   sa_store_credential_cb cb, void *arg)
{
	struct cred_walk w = { cb, arg };
	struct trunk_rec t;
	struct key prefix = { .len = 0 }, start;
	MDB_txn *txn;
	int rc = rd_own_begin(st, ENV_MAIN, &txn);

	if (rc != SA_STORE_OK)
		return rc;
	rc = trunk_get_txn(st, txn, trunk_id, &t);
	if (rc == SA_STORE_OK) {
		key_str(&prefix, t.t.id);
		key_sep(&prefix);
		start = prefix;
		if (after_id != NULL && after_id[0] != '\0')
			rc = cred_after_key(st, txn, t.t.id, after_id, &start);
	}
	if (rc == SA_STORE_OK)
		rc = walk_range(st, txn, DB_CRED_BY_TRUNK, &start, &prefix, cred_walk_fn, &w);
	return rd_own_end(st, ENV_MAIN, txn, rc);
}

/* ---- tombstones: credentials deleted, for the bindings in the runtime environment ---- */

/* tombstone key: del_seq (contiguous: a gap after a reader's position means
 * tombstones were dropped before it read them) */
static void tombstone_key(struct key *k, uint64_t seq)
{
	k->len = 0;
	key_u64(k, seq);
}

/* Adds the tombstone of cred_id and drops the oldest beyond TOMBSTONES_KEEP,
 * in the delete's own transaction. */
static int tombstone_add(struct sa_store *st, MDB_txn *txn, const char *cred_id)
{
	return log_append(st, txn, DB_CRED_DELETED, "del_seq", TOMBSTONES_KEEP, str_val(cred_id));
}

static int cred_delete_txn(struct sa_store *st, MDB_txn *txn, const char *trunk_id, const char *cred_id)
{
	struct cred_rec r;
	struct key uk, sk;
	int rc = cred_get_txn(st, txn, str_val(cred_id), &r);

	if (rc != SA_STORE_OK)
		return rc;
	if (strcmp(r.c.trunk_id, trunk_id) != 0)
		rc = SA_STORE_ENOTFOUND;
	user_key(&uk, r.c.trunk_id, r.c.username);
	trunk_seq_key(&sk, r.c.trunk_id, r.seq);
	OPENSSL_cleanse(&r, sizeof r);
	if (rc == SA_STORE_OK)
		rc = db_del(st, txn, DB_CREDS, str_val(cred_id));
	if (rc == SA_STORE_OK)
		rc = db_del(st, txn, DB_CRED_BY_USER, key_val(&uk));
	if (rc == SA_STORE_OK)
		rc = cred_changed(st, txn, &uk);
	if (rc == SA_STORE_OK)
		rc = db_del(st, txn, DB_CRED_BY_TRUNK, key_val(&sk));
	if (rc == SA_STORE_OK)
		rc = tombstone_add(st, txn, cred_id);
	if (rc == SA_STORE_OK)
		rc = meta_bump(st, txn, "generation", NULL);
	return rc;
}

/* The bindings stay in the runtime environment, which this process may not
 * have open: every binding read skips them from this commit on, and the
 * daemon removes them from the tombstone. */
int sa_store_credential_delete(struct sa_store *st, const char *trunk_id, const char *cred_id)
{
	MDB_txn *txn;

	if (!id_ok(trunk_id) || !id_ok(cred_id))
		return SA_STORE_ENOTFOUND;
	int rc = wr_begin(st, ENV_MAIN, &txn, true);
	if (rc != SA_STORE_OK)
		return rc;
	return wr_end(st, ENV_MAIN, txn, cred_delete_txn(st, txn, trunk_id, cred_id));
}

/* ---- rotation ---- */

bool sa_credential_has_previous(const struct sa_credential *c)
{
	return c->password_version > 1;
}

bool sa_credential_previous_live(const struct sa_credential *c, int64_t now)
{
	return sa_credential_has_previous(c) && now < c->previous_until;
}

void sa_credential_wipe(struct sa_credential *c)
{
	OPENSSL_cleanse(c->ha1, sizeof c->ha1);
	OPENSSL_cleanse(c->previous_ha1, sizeof c->previous_ha1);
}

/* The new password's HA1s become current; the current ones previous (the
 * one before them is dropped, at once). Refuses the current password
 * again: a rotation that changes nothing would only cut the overlap. */
int sa_credential_rotate_apply(struct sa_credential *c, const char *realm, const char *password, size_t len,
                               unsigned overlap, int64_t now, char *why, size_t whylen)
{
	struct sa_credential next = *c;
	int rc = sa_credential_ha1(&next, realm, password, len);

	if (rc == SA_STORE_OK && CRYPTO_memcmp(next.ha1, c->ha1, sizeof next.ha1) == 0) {
		set_why(why, whylen, "password must differ from the current password");
		rc = SA_STORE_EINVAL;
	}
	if (rc == SA_STORE_OK && c->password_version == UINT32_MAX) {
		set_why(why, whylen, "password version at its limit");
		rc = SA_STORE_EFULL;
	}
	if (rc == SA_STORE_OK) {
		memcpy(next.previous_ha1, c->ha1, sizeof next.previous_ha1);
		next.previous_until = now + (int64_t)overlap;
		next.password_version = c->password_version + 1;
		next.rotated_at = now;
		*c = next;
	}
	sa_credential_wipe(&next);
	return rc;
}

static int cred_rotate_rec(struct sa_store *st, MDB_txn *txn, struct cred_rec *r, const char *password,
                           size_t len, unsigned overlap, int64_t now, char *why, size_t whylen)
{
	char realm[SA_REALM_MAX];
	int rc = cred_realm(st, txn, r->c.trunk_id, realm);

	if (rc == SA_STORE_OK)
		rc = sa_credential_rotate_apply(&r->c, realm, password, len, overlap, now, why, whylen);
	return rc;
}

/* Everything a rotation does inside its transaction: the record is
 * rewritten in place (same seq, same indexes); the generation moves so
 * that the daemon looks, and finds nothing deleted. */
static int cred_rotate_txn(struct sa_store *st, MDB_txn *txn, const char *trunk_id, const char *cred_id,
                           const char *password, size_t len, unsigned min_len, unsigned overlap, int64_t now,
                           struct cred_rec *r, char *why, size_t whylen)
{
	int rc = cred_get_txn(st, txn, str_val(cred_id), r);

	if (rc == SA_STORE_OK && strcmp(r->c.trunk_id, trunk_id) != 0)
		rc = SA_STORE_ENOTFOUND;
	if (rc == SA_STORE_ENOTFOUND)
		set_why(why, whylen, "unknown credential");
	if (rc == SA_STORE_OK)
		rc = password_validate(r->c.username, password, len, min_len, why, whylen);
	if (rc == SA_STORE_OK)
		rc = cred_rotate_rec(st, txn, r, password, len, overlap, now, why, whylen);
	if (rc == SA_STORE_OK)
		rc = cred_write(st, txn, r);
	if (rc == SA_STORE_OK)
		rc = meta_bump(st, txn, "generation", NULL);
	return rc;
}

int sa_store_credential_rotate(struct sa_store *st, const char *trunk_id, const char *cred_id,
                               const char *password, size_t password_len, unsigned min_len, unsigned overlap,
                               int64_t now, struct sa_credential *out, char *why, size_t whylen)
{
	struct cred_rec r;
	MDB_txn *txn;

	set_why(why, whylen, "%s", "");
	if (!id_ok(trunk_id) || !id_ok(cred_id)) {
		set_why(why, whylen, "unknown credential");
		return SA_STORE_ENOTFOUND;
	}
	if (overlap > SA_ROTATE_OVERLAP_MAX) {
		set_why(why, whylen, "overlap must be 0 to %d seconds", SA_ROTATE_OVERLAP_MAX);
		return SA_STORE_EINVAL;
	}
	if (min_len > SA_PASSWORD_MAX) {
		set_why(why, whylen, "minimum password length must be at most %d", SA_PASSWORD_MAX);
		return SA_STORE_EINVAL;
	}
	memset(&r, 0, sizeof r);
	int rc = wr_begin(st, ENV_MAIN, &txn, true);
	if (rc == SA_STORE_OK)
		rc = wr_end(st, ENV_MAIN, txn, cred_rotate_txn(st, txn, trunk_id, cred_id, password, password_len,
		                                               min_len, overlap, now, &r, why, whylen));
	if (rc == SA_STORE_OK && out != NULL)
		*out = r.c;
	OPENSSL_cleanse(&r, sizeof r);
	return rc;
}

struct deleted_walk {
	sa_store_deleted_cb cb;
	void *arg;
	uint64_t *last;
};

static int deleted_walk_fn(struct sa_store *st, MDB_txn *txn, const MDB_val *k, const MDB_val *v, void *arg)
{
	struct deleted_walk *w = arg;
	char id[SA_ID_MAX];
	uint64_t seq = 0;

	if (k->mv_size != 8 || val_str(v, id, sizeof id) != SA_STORE_OK)
		return SA_STORE_EIO;
	for (int i = 0; i < 8; i++)
		seq = seq << 8 | ((const unsigned char *)k->mv_data)[i];
	*w->last = seq;
	return w->cb(id, w->arg) != 0 ? WALK_STOP : SA_STORE_OK;
}

int sa_store_deleted_since(struct sa_store *st, uint64_t after, sa_store_deleted_cb cb, void *arg, uint64_t *last)
{
	struct deleted_walk w = { cb, arg, last };
	struct key from, all = { .len = 0 };
	MDB_txn *txn;

	if (!st->sh->tombstones || after == UINT64_MAX)
		return SA_STORE_OK;
	tombstone_key(&from, after + 1);
	int rc = rd_own_begin(st, ENV_MAIN, &txn);
	if (rc != SA_STORE_OK)
		return rc;
	return rd_own_end(st, ENV_MAIN, txn, walk_range(st, txn, DB_CRED_DELETED, &from, &all, deleted_walk_fn, &w));
}

/* ---- fleet mode: the mirror of the database ---- */

static int mirror_apikey(struct sa_store *st, MDB_txn *txn, const struct sa_mirror_change *ch)
{
	struct apikey_rec rec;

	memset(&rec, 0, sizeof rec);
	if (!id_ok(ch->apikey.account_id))
		return SA_STORE_EINVAL;
	memcpy(rec.account_id, ch->apikey.account_id, sizeof rec.account_id);
	rec.created_at = ch->apikey.created_at;
	return db_put(st, txn, DB_APIKEYS, mem_val(ch->apikey.hash, SA_APIKEY_HASH_LEN), mem_val(&rec, sizeof rec));
}

/* A trunk new to the mirror takes its place in its account's order; a
 * known one keeps it. */
static int mirror_trunk(struct sa_store *st, MDB_txn *txn, const struct sa_trunk *t, const struct sa_trunk_policy *p)
{
	struct trunk_rec r;
	int rc = id_ok(t->id) && id_ok(t->account_id) ? trunk_get_txn(st, txn, t->id, &r) : SA_STORE_EINVAL;

	if (rc == SA_STORE_ENOTFOUND) {
		memset(&r, 0, sizeof r);
		r.t = *t;
		rc = trunk_put(st, txn, &r);
	} else if (rc == SA_STORE_OK) {
		r.t = *t;
		rc = db_put(st, txn, DB_TRUNKS, str_val(r.t.id), mem_val(&r, sizeof r));
	}
	if (rc == SA_STORE_OK)
		rc = db_put(st, txn, DB_TRUNK_POLICY, str_val(t->id), mem_val(p, sizeof *p));
	return rc;
}

/* A known id is rewritten in place (a rotation: same seq, same indexes;
 * its trunk and username never change). A (trunk, username) held by
 * another id means that one was deleted in the database. */
static int mirror_credential(struct sa_store *st, MDB_txn *txn, const struct sa_credential *c)
{
	char other[SA_ID_MAX];
	struct cred_rec r;
	struct key uk;
	MDB_val v;

	if (!id_ok(c->id) || !id_ok(c->trunk_id) || username_validate(c->username, NULL, 0) != SA_STORE_OK)
		return SA_STORE_EINVAL;
	int rc = cred_get_txn(st, txn, str_val(c->id), &r);
	if (rc == SA_STORE_OK && (strcmp(r.c.trunk_id, c->trunk_id) != 0 || strcmp(r.c.username, c->username) != 0))
		rc = SA_STORE_EINVAL;
	if (rc == SA_STORE_OK) {
		r.c = *c;
		rc = cred_write(st, txn, &r);
	}
	OPENSSL_cleanse(&r, sizeof r);
	if (rc != SA_STORE_ENOTFOUND)
		return rc;
	user_key(&uk, c->trunk_id, c->username);
	rc = db_get(st, txn, DB_CRED_BY_USER, key_val(&uk), &v);
	if (rc == SA_STORE_OK)
		rc = cred_by_user_val(st, txn, &v, &r);
	if (rc == SA_STORE_OK)
		memcpy(other, r.c.id, sizeof other);
	OPENSSL_cleanse(&r, sizeof r);
	if (rc == SA_STORE_OK)
		rc = cred_delete_txn(st, txn, c->trunk_id, other);
	else if (rc == SA_STORE_ENOTFOUND)
		rc = SA_STORE_OK;
	memset(&r, 0, sizeof r);
	r.c = *c;
	if (rc == SA_STORE_OK)
		rc = cred_put(st, txn, &r);
	OPENSSL_cleanse(&r, sizeof r);
	return rc;
}

static int not_found_ok(int rc)
{
	return rc == SA_STORE_ENOTFOUND ? SA_STORE_OK : rc;
}

static int webhook_put(struct sa_store *st, MDB_txn *txn, const struct sa_webhook *w);
static int webhook_delete_txn(struct sa_store *st, MDB_txn *txn, const char *account_id, const char *webhook_id);

/* Each webhook record of the store, whole (its secret too), to cb. */
struct wh_each {
	sa_store_webhook_cb cb;
	void *arg;
};

static int wh_each_fn(struct sa_store *st, MDB_txn *txn, const MDB_val *k, const MDB_val *v, void *arg)
{
	struct wh_each *we = arg;
	struct sa_webhook w;
	int rc = val_rec(v, &w, sizeof w);

	if (rc == SA_STORE_OK) {
		w.id[sizeof w.id - 1] = w.account_id[sizeof w.account_id - 1] = '\0';
		w.url[sizeof w.url - 1] = w.secret[sizeof w.secret - 1] = '\0';
		rc = we->cb(&w, we->arg) ? WALK_STOP : SA_STORE_OK;
	}
	OPENSSL_cleanse(&w, sizeof w);
	return rc;
}


/* A webhook as the database has it (they never change: a known id is written again as it is). */
static int mirror_webhook(struct sa_store *st, MDB_txn *txn, const struct sa_webhook *w)
{
	if (!st->sh->webhooks)
		return SA_STORE_EIO;
	if (!id_ok(w->id) || !id_ok(w->account_id))
		return SA_STORE_EINVAL;
	return webhook_put(st, txn, w);
}

static int mirror_one(struct sa_store *st, MDB_txn *txn, const struct sa_mirror_change *ch)
{
	switch (ch->kind) {
	case SA_MIRROR_NONE:
		return SA_STORE_OK;
	case SA_MIRROR_ACCOUNT:
		if (!id_ok(ch->account.id))
			return SA_STORE_EINVAL;
		return db_put(st, txn, DB_ACCOUNTS, str_val(ch->account.id), mem_val(&ch->account, sizeof ch->account));
	case SA_MIRROR_APIKEY:
		return mirror_apikey(st, txn, ch);
	case SA_MIRROR_APIKEY_GONE:
		return not_found_ok(db_del(st, txn, DB_APIKEYS, mem_val(ch->apikey.hash, SA_APIKEY_HASH_LEN)));
	case SA_MIRROR_TRUNK:
		return mirror_trunk(st, txn, &ch->trunk, &ch->policy);
	case SA_MIRROR_CREDENTIAL:
		return mirror_credential(st, txn, &ch->cred);
	case SA_MIRROR_CREDENTIAL_GONE:
		if (!id_ok(ch->cred.id))
			return SA_STORE_EINVAL;
		return not_found_ok(cred_delete_txn(st, txn, ch->cred.trunk_id, ch->cred.id));
	case SA_MIRROR_WEBHOOK:
		return mirror_webhook(st, txn, &ch->webhook);
	case SA_MIRROR_WEBHOOK_GONE:
		if (!st->sh->webhooks)
			return SA_STORE_OK;
		return not_found_ok(webhook_delete_txn(st, txn, ch->webhook.account_id, ch->webhook.id));
	}
	return SA_STORE_EINVAL;
}

/* The credentials and webhooks a full resync drops: collected first,
 * deleted after the walk (a delete under the walk's cursor would move it). */
struct mirror_sweep {
	sa_mirror_keep_fn keep;
	void *arg;
	struct gone { char id[SA_ID_MAX]; char owner[SA_ID_MAX]; } *gone;   /* owner: the trunk, or the account */
	size_t n, cap;
	int rc;                      /* a webhook's sweep_add failed */
};

static int sweep_add(struct mirror_sweep *sw, const char *id, const char *owner)
{
	if (sw->n == sw->cap) {
		size_t cap = sw->cap ? sw->cap * 2 : 64;
		void *g = realloc(sw->gone, cap * sizeof *sw->gone);
		if (g == NULL)
			return SA_STORE_EIO;
		sw->gone = g;
		sw->cap = cap;
	}
	memcpy(sw->gone[sw->n].id, id, SA_ID_MAX);
	memcpy(sw->gone[sw->n++].owner, owner, SA_ID_MAX);
	return SA_STORE_OK;
}

static int sweep_fn(struct sa_store *st, MDB_txn *txn, const MDB_val *k, const MDB_val *v, void *arg)
{
	struct mirror_sweep *sw = arg;
	struct cred_rec r;
	int rc = cred_get_txn(st, txn, *k, &r);

	if (rc == SA_STORE_OK && !sw->keep(sw->arg, r.c.id))
		rc = sweep_add(sw, r.c.id, r.c.trunk_id);
	OPENSSL_cleanse(&r, sizeof r);
	return rc;
}

static int sweep_webhook_cb(const struct sa_webhook *w, void *arg)
{
	struct mirror_sweep *sw = arg;

	if (!sw->keep(sw->arg, w->id))
		sw->rc = sweep_add(sw, w->id, w->account_id);
	return sw->rc != SA_STORE_OK;
}

static int mirror_sweep(struct sa_store *st, MDB_txn *txn, sa_mirror_keep_fn keep, void *arg)
{
	struct mirror_sweep sw = { .keep = keep, .arg = arg };
	struct wh_each we = { sweep_webhook_cb, &sw };
	struct key all = { .len = 0 };
	int rc = walk_prefix(st, txn, DB_CREDS, &all, sweep_fn, &sw);

	for (size_t i = 0; i < sw.n && rc == SA_STORE_OK; i++)
		rc = not_found_ok(cred_delete_txn(st, txn, sw.gone[i].owner, sw.gone[i].id));
	sw.n = 0;
	if (rc == SA_STORE_OK && st->sh->webhooks)
		rc = walk_prefix(st, txn, DB_WEBHOOKS, &all, wh_each_fn, &we);
	if (rc == SA_STORE_OK)
		rc = sw.rc;
	for (size_t i = 0; i < sw.n && rc == SA_STORE_OK; i++)
		rc = not_found_ok(webhook_delete_txn(st, txn, sw.gone[i].owner, sw.gone[i].id));
	free(sw.gone);
	return rc;
}

int sa_store_mirror_apply(struct sa_store *st, sa_mirror_next_fn next, sa_mirror_keep_fn keep, void *arg,
                          uint64_t seq)
{
	struct sa_mirror_change *ch = malloc(sizeof *ch);
	MDB_txn *txn;
	int rc = ch != NULL ? wr_begin(st, ENV_MAIN, &txn, true) : SA_STORE_EIO;

	if (rc != SA_STORE_OK) {
		free(ch);
		return rc;
	}
	if (keep != NULL)
		rc = mirror_sweep(st, txn, keep, arg);
	for (int more = 1; rc == SA_STORE_OK && more > 0;) {
		more = next(arg, ch);
		if (more < 0)
			rc = more;
		else if (more > 0)
			rc = mirror_one(st, txn, ch);
	}
	if (rc == SA_STORE_OK)
		rc = db_put(st, txn, DB_META, str_val("mirror_seq"), mem_val(&seq, sizeof seq));
	if (rc == SA_STORE_OK)
		rc = meta_bump(st, txn, "generation", NULL);
	OPENSSL_cleanse(ch, sizeof *ch);
	free(ch);
	return wr_end(st, ENV_MAIN, txn, rc);
}

int sa_store_mirror_seq(struct sa_store *st, uint64_t *seq)
{
	MDB_txn *txn;
	int rc = rd_begin(st, ENV_MAIN, &txn);

	if (rc != SA_STORE_OK)
		return rc;
	return rd_end(st, ENV_MAIN, meta_get_u64(st, txn, "mirror_seq", seq));
}

/* ---- bindings ---- */

/* bindings key: cred id \0 SHA-256(contact) */
static void binding_key(struct key *k, const char *cred_id, const char *contact)
{
	unsigned char h[HASH_LEN];

	sha256(contact, strlen(contact), h);
	k->len = 0;
	key_str(k, cred_id);
	key_sep(k);
	key_put(k, h, sizeof h);
}

/* The first key after every "cred_id \0 ..." binding key: the next
 * credential's bindings start there. */
static void binding_key_after(struct key *k, const char *cred_id)
{
	k->len = 0;
	key_str(k, cred_id);
	k->b[k->len++] = 1;
}

static void binding_trunk_key(struct key *k, const char *trunk_id, const struct key *bkey)
{
	k->len = 0;
	key_str(k, trunk_id);
	key_sep(k);
	key_put(k, bkey->b, bkey->len);
}

/* Signed time as an unsigned number with the same order. */
static void binding_expiry_key(struct key *k, int64_t expires_at, const struct key *bkey)
{
	k->len = 0;
	key_u64(k, (uint64_t)expires_at ^ ((uint64_t)1 << 63));
	key_sep(k);
	key_put(k, bkey->b, bkey->len);
}

static MDB_val empty_val(void)
{
	return mem_val("", 1);
}

/*
 * trunk_latest: each trunk's most recently written bindings (a registration
 * or a refresh), newest first, LATEST_KEEP at most. A write puts its binding
 * first and a removal takes it off; nothing else adds one. So every binding
 * on the list was written after every binding of the trunk that is not, and
 * the first live one is the trunk's latest: an inbound call reads a few
 * records instead of every binding of the trunk (100 000 bindings on a trunk
 * took 76 ms a call to walk). A trunk without a list (bindings written before
 * schema 7, or moved from a store made before the split), or whose listed
 * bindings have all lapsed or lost their credential, is walked. Bindings are
 * written at the time of their REGISTER, so the most recently written is the
 * one with the latest updated_at, which is what the walk looks for.
 */
#define LATEST_KEEP 8

struct latest {
	struct key k[LATEST_KEEP];
	int n;
};

static int latest_get(struct sa_store *st, MDB_txn *txn, const char *trunk_id, struct latest *l)
{
	MDB_val v;

	l->n = 0;
	if (!st->sh->latest)
		return SA_STORE_ENOTFOUND;
	int rc = db_get(st, txn, DB_TRUNK_LATEST, str_val(trunk_id), &v);
	if (rc != SA_STORE_OK)
		return rc;
	const unsigned char *p = v.mv_data, *end = p + v.mv_size;
	while (p < end && l->n < LATEST_KEEP) {
		size_t len = *p++;
		if (len == 0 || len > (size_t)(end - p) || len > KEY_MAX)
			return SA_STORE_EIO;
		l->k[l->n].len = 0;
		key_put(&l->k[l->n++], p, len);
		p += len;
	}
	return SA_STORE_OK;
}

static int latest_put(struct sa_store *st, MDB_txn *txn, const char *trunk_id, const struct latest *l)
{
	unsigned char buf[LATEST_KEEP * (KEY_MAX + 1)];
	size_t len = 0;

	if (l->n == 0) {
		int rc = db_del(st, txn, DB_TRUNK_LATEST, str_val(trunk_id));
		return rc == SA_STORE_ENOTFOUND ? SA_STORE_OK : rc;
	}
	for (int i = 0; i < l->n; i++) {
		buf[len++] = (unsigned char)l->k[i].len;
		memcpy(buf + len, l->k[i].b, l->k[i].len);
		len += l->k[i].len;
	}
	return db_put(st, txn, DB_TRUNK_LATEST, str_val(trunk_id), mem_val(buf, len));
}

/* bkey was just written: first on its trunk's list (no write when it is already). */
static int latest_touch(struct sa_store *st, MDB_txn *txn, const char *trunk_id, const struct key *bkey)
{
	struct latest l;
	int rc = latest_get(st, txn, trunk_id, &l);

	if (rc != SA_STORE_OK && rc != SA_STORE_ENOTFOUND)
		return rc;
	if (!st->sh->latest || bkey->len > 255 || (l.n > 0 && key_eq(&l.k[0], bkey)))
		return SA_STORE_OK;
	struct latest nl = { .n = 1 };
	nl.k[0] = *bkey;
	for (int i = 0; i < l.n && nl.n < LATEST_KEEP; i++)
		if (!key_eq(&l.k[i], bkey))
			nl.k[nl.n++] = l.k[i];
	return latest_put(st, txn, trunk_id, &nl);
}

/* bkey was removed from trunk_id: off its list. */
static int latest_forget(struct sa_store *st, MDB_txn *txn, const char *trunk_id, const struct key *bkey)
{
	struct latest l;
	int rc = latest_get(st, txn, trunk_id, &l), j = 0;

	if (rc != SA_STORE_OK)
		return rc == SA_STORE_ENOTFOUND ? SA_STORE_OK : rc;
	for (int i = 0; i < l.n; i++)
		if (!key_eq(&l.k[i], bkey))
			l.k[j++] = l.k[i];
	if (j == l.n)
		return SA_STORE_OK;
	l.n = j;
	return latest_put(st, txn, trunk_id, &l);
}

/*
 * A binding record: the binding, and the time under which it is in
 * bindings_by_expiry. That entry may lag behind the binding's expiry, never
 * lead it (indexed_at <= b.expires_at): a refresh that only pushes the
 * expiry on rewrites the binding's record and leaves the entry where it is,
 * so that it writes one tree, not two (the entry's delete lands on a page at
 * random in a tree of every binding: with 40 000 bindings it was half of a
 * refresh's cost after an idle gap). The sweep that comes to an entry whose
 * binding has been refreshed since moves the entry to the binding's expiry
 * (binding_reindex): once per registration interval, in batches, instead of
 * at every refresh. Records of schema 5 and older carry no indexed_at: their
 * entry is at their expiry.
 */
struct brec {
	struct sa_binding b;
	int64_t indexed_at;
};

static int binding_index_put(struct sa_store *st, MDB_txn *txn, const struct brec *r, const struct key *bkey)
{
	struct key tk, ek;

	binding_trunk_key(&tk, r->b.trunk_id, bkey);
	binding_expiry_key(&ek, r->indexed_at, bkey);
	int rc = db_put(st, txn, DB_BINDINGS_BY_TRUNK, key_val(&tk), empty_val());
	if (rc == SA_STORE_OK)
		rc = db_put(st, txn, DB_BINDINGS_BY_EXPIRY, key_val(&ek), empty_val());
	return rc;
}

static int binding_index_del(struct sa_store *st, MDB_txn *txn, const struct brec *r, const struct key *bkey)
{
	struct key tk, ek;

	binding_trunk_key(&tk, r->b.trunk_id, bkey);
	binding_expiry_key(&ek, r->indexed_at, bkey);
	int rc = db_del(st, txn, DB_BINDINGS_BY_TRUNK, key_val(&tk));
	if (rc == SA_STORE_OK)
		rc = db_del(st, txn, DB_BINDINGS_BY_EXPIRY, key_val(&ek));
	if (rc == SA_STORE_OK)
		rc = latest_forget(st, txn, r->b.trunk_id, bkey);
	return rc == SA_STORE_ENOTFOUND ? SA_STORE_EIO : rc;
}

/* The expiry entry of a binding moved from old to r->indexed_at. */
static int binding_expiry_move(struct sa_store *st, MDB_txn *txn, int64_t old, const struct brec *r,
                               const struct key *bkey)
{
	struct key ok, nk;

	if (old == r->indexed_at)
		return SA_STORE_OK;
	binding_expiry_key(&ok, old, bkey);
	binding_expiry_key(&nk, r->indexed_at, bkey);
	int rc = db_del(st, txn, DB_BINDINGS_BY_EXPIRY, key_val(&ok));
	if (rc == SA_STORE_OK)
		rc = db_put(st, txn, DB_BINDINGS_BY_EXPIRY, key_val(&nk), empty_val());
	return rc == SA_STORE_ENOTFOUND ? SA_STORE_EIO : rc;
}

/* A refresh: the trunk's entry stays unless the trunk changed; the expiry's
 * stays where it is if the binding now expires later (see struct brec),
 * and moves to the new expiry if sooner. Sets r->indexed_at. */
static int binding_index_move(struct sa_store *st, MDB_txn *txn, const struct brec *old, struct brec *r,
                              const struct key *bkey)
{
	struct key ok, nk;
	int rc = SA_STORE_OK;

	binding_trunk_key(&ok, old->b.trunk_id, bkey);
	binding_trunk_key(&nk, r->b.trunk_id, bkey);
	if (!key_eq(&ok, &nk)) {
		rc = db_del(st, txn, DB_BINDINGS_BY_TRUNK, key_val(&ok));
		if (rc == SA_STORE_OK)
			rc = db_put(st, txn, DB_BINDINGS_BY_TRUNK, key_val(&nk), empty_val());
		if (rc == SA_STORE_OK)
			rc = latest_forget(st, txn, old->b.trunk_id, bkey);
	}
	r->indexed_at = r->b.expires_at >= old->indexed_at ? old->indexed_at : r->b.expires_at;
	if (rc == SA_STORE_OK)
		rc = binding_expiry_move(st, txn, old->indexed_at, r, bkey);
	return rc == SA_STORE_ENOTFOUND ? SA_STORE_EIO : rc;
}

/*
 * Binding records are written compact (schema 3): a tag byte, the numbers,
 * then each string as a 16-bit length and its bytes. struct sa_binding is
 * mostly empty room (a 512-byte contact field holding some 40): compact, a
 * binding takes about 200 bytes instead of 1 000, so that a new
 * registration splits a page in five rather than every other one (each
 * split a fresh page written, and faulted in), and runtime/ with 100 000
 * bindings is a fifth of the size. The struct layouts of schemas 1 and 2 are still read (told apart
 * by size): they begin with the credential id's text, never with the tag.
 */
#define BINDING_TAG 0x01
#define BINDING_TAG_INDEXED 0x02   /* schema 6: indexed_at follows the numbers (struct brec) */
#define BINDING_ENC_MAX (1 + 2 + 4 + 4 * 8 + 4 + 7 * 2 + sizeof(struct sa_binding))

/* The binding's fields in record order. */
static void binding_fields(struct sa_binding *b, struct fields *f)
{
	f->nnum = f->nstr = 0;
	field_num(f, &b->source_port, sizeof b->source_port);
	field_num(f, &b->cseq, sizeof b->cseq);
	field_num(f, &b->registered_at, sizeof b->registered_at);
	field_num(f, &b->updated_at, sizeof b->updated_at);
	field_num(f, &b->expires_at, sizeof b->expires_at);
	field_num(f, &b->password_version, sizeof b->password_version);
	field_str(f, b->cred_id, sizeof b->cred_id);
	field_str(f, b->trunk_id, sizeof b->trunk_id);
	field_str(f, b->contact, sizeof b->contact);
	field_str(f, b->source, sizeof b->source);
	field_str(f, b->transport, sizeof b->transport);
	field_str(f, b->user_agent, sizeof b->user_agent);
	field_str(f, b->call_id, sizeof b->call_id);
}

/* The record's fields: the binding's, then (schema 6) indexed_at. */
static void brec_fields(struct brec *r, bool indexed, struct fields *f)
{
	binding_fields(&r->b, f);
	if (indexed)
		field_num(f, &r->indexed_at, sizeof r->indexed_at);
}

/* out holds BINDING_ENC_MAX bytes; returns the record's length. */
static size_t binding_encode(const struct brec *r, unsigned char *out)
{
	struct fields f;

	brec_fields((struct brec *)r, true, &f);   /* read only */
	return compact_encode(BINDING_TAG_INDEXED, &f, out);
}

static int binding_decode_compact(const MDB_val *v, struct brec *r, bool indexed)
{
	struct fields f;
	size_t left;

	memset(r, 0, sizeof *r);
	brec_fields(r, indexed, &f);
	int rc = compact_decode(v, &f, &left);
	if (!indexed)
		r->indexed_at = r->b.expires_at;
	if (rc == SA_STORE_OK && (left != 0 || r->indexed_at > r->b.expires_at))
		rc = SA_STORE_EIO;
	return rc;
}

/* A binding record of any layout; schema 1's were all made with version 1. */
static int binding_decode(const MDB_val *v, struct brec *r)
{
	bool older;
	unsigned char tag = v->mv_size > 0 ? *(const unsigned char *)v->mv_data : 0;

	if (tag == BINDING_TAG || tag == BINDING_TAG_INDEXED)
		return binding_decode_compact(v, r, tag == BINDING_TAG_INDEXED);
	int rc = val_rec_older(v, &r->b, sizeof r->b, sizeof(struct binding_v1), &older);
	if (rc == SA_STORE_OK && older)
		r->b.password_version = 1;
	r->indexed_at = r->b.expires_at;
	return rc;
}

static int binding_get(struct sa_store *st, MDB_txn *txn, const struct key *bkey, struct brec *r)
{
	MDB_val v;
	int rc = db_get(st, txn, DB_BINDINGS, key_val(bkey), &v);

	return rc != SA_STORE_OK ? rc : binding_decode(&v, r);
}

/* Removes one binding (by its key) and its index entries. */
static int binding_remove(struct sa_store *st, MDB_txn *txn, const struct key *bkey)
{
	struct brec r;
	int rc = binding_get(st, txn, bkey, &r);

	if (rc == SA_STORE_OK)
		rc = db_del(st, txn, DB_BINDINGS, key_val(bkey));
	if (rc == SA_STORE_OK)
		rc = binding_index_del(st, txn, &r, bkey);
	return rc;
}

/* The sweep came to a binding refreshed since its expiry entry was written:
 * the entry moves to its expiry (struct brec). */
static int binding_reindex(struct sa_store *st, MDB_txn *txn, struct brec *r, const struct key *bkey)
{
	unsigned char enc[BINDING_ENC_MAX];
	int64_t old = r->indexed_at;

	r->indexed_at = r->b.expires_at;
	int rc = db_put(st, txn, DB_BINDINGS, key_val(bkey), mem_val(enc, binding_encode(r, enc)));
	return rc == SA_STORE_OK ? binding_expiry_move(st, txn, old, r, bkey) : rc;
}

/* Removes every binding of cred_id; how many in *n (may be NULL). */
static int bindings_remove_cred(struct sa_store *st, MDB_txn *txn, const char *cred_id, unsigned *n)
{
	struct key prefix = { .len = 0 }, bkey;
	unsigned done = 0;
	int rc;

	key_str(&prefix, cred_id);
	key_sep(&prefix);
	while ((rc = first_with_prefix(st, txn, DB_BINDINGS, &prefix, &bkey)) == SA_STORE_OK) {
		if ((rc = binding_remove(st, txn, &bkey)) != SA_STORE_OK)
			return rc;
		done++;
	}
	if (n != NULL)
		*n = done;
	return rc == SA_STORE_ENOTFOUND ? SA_STORE_OK : rc;
}

static int count_fn(struct sa_store *st, MDB_txn *txn, const MDB_val *k, const MDB_val *v, void *arg)
{
	(*(unsigned *)arg)++;
	return SA_STORE_OK;
}

static int bindings_count(struct sa_store *st, MDB_txn *txn, const char *cred_id, unsigned *n)
{
	struct key prefix = { .len = 0 };

	key_str(&prefix, cred_id);
	key_sep(&prefix);
	*n = 0;
	return walk_prefix(st, txn, DB_BINDINGS, &prefix, count_fn, n);
}

/* Whether cred_id still exists, in a main-environment transaction begun
 * after the runtime one that holds its bindings: a binding is written only
 * for a credential that existed, so one missing here was deleted. A read
 * error counts as existing: a failing read must not hide registrations. */
static bool cred_live(struct sa_store *st, MDB_txn *mtxn, const char *cred_id)
{
	MDB_val k = str_val(cred_id), v;

	return mdb_get(mtxn, st->sh->dbi[DB_CREDS], &k, &v) != MDB_NOTFOUND;
}

/* A copy of the caller's binding with every string terminated. */
static void binding_copy(struct sa_binding *dst, const struct sa_binding *src, const char *trunk_id)
{
	*dst = *src;
	memcpy(dst->trunk_id, trunk_id, SA_ID_MAX);
	dst->cred_id[sizeof dst->cred_id - 1] = '\0';
	dst->contact[sizeof dst->contact - 1] = '\0';
	dst->source[sizeof dst->source - 1] = '\0';
	dst->transport[sizeof dst->transport - 1] = '\0';
	dst->user_agent[sizeof dst->user_agent - 1] = '\0';
	dst->call_id[sizeof dst->call_id - 1] = '\0';
}

/* The credential's bindings while one request's changes are applied. */
struct apply_state {
	unsigned count;        /* how many it has, as changed so far */
	bool added;            /* a new binding was added (the headroom rule was checked) */
};

/* Replaces an existing binding (keeping registered_at) or adds one. */
static int change_put(struct sa_store *st, MDB_txn *txn, const struct sa_credential *c, const struct sa_binding *b,
                      struct apply_state *as)
{
	struct brec rec, old;
	unsigned char enc[BINDING_ENC_MAX];
	struct key bkey;

	binding_copy(&rec.b, b, c->trunk_id);
	memcpy(rec.b.cred_id, c->id, SA_ID_MAX);
	rec.indexed_at = rec.b.expires_at;
	binding_key(&bkey, rec.b.cred_id, rec.b.contact);
	int rc = binding_get(st, txn, &bkey, &old);
	if (rc == SA_STORE_OK) {
		rec.b.registered_at = old.b.registered_at;
		rc = binding_index_move(st, txn, &old, &rec, &bkey);
		if (rc == SA_STORE_OK)
			rc = db_put(st, txn, DB_BINDINGS, key_val(&bkey), mem_val(enc, binding_encode(&rec, enc)));
		return rc == SA_STORE_OK ? latest_touch(st, txn, rec.b.trunk_id, &bkey) : rc;
	}
	if (rc == SA_STORE_ENOTFOUND) {
		rc = as->added ? SA_STORE_OK : room_for_new(st, ENV_RT);
		as->added = true;
		as->count++;
	}
	if (rc == SA_STORE_OK)
		rc = db_put(st, txn, DB_BINDINGS, key_val(&bkey), mem_val(enc, binding_encode(&rec, enc)));
	if (rc == SA_STORE_OK)
		rc = binding_index_put(st, txn, &rec, &bkey);
	return rc == SA_STORE_OK ? latest_touch(st, txn, rec.b.trunk_id, &bkey) : rc;
}

static int change_remove(struct sa_store *st, MDB_txn *txn, const char *cred_id, const char *contact,
                         struct apply_state *as)
{
	struct key bkey;

	binding_key(&bkey, cred_id, contact);
	int rc = binding_remove(st, txn, &bkey);
	if (rc == SA_STORE_OK)
		as->count--;
	return rc == SA_STORE_ENOTFOUND ? SA_STORE_OK : rc;
}

/* Everything a REGISTER changes, in one runtime transaction. */
static int apply_txn(struct sa_store *st, MDB_txn *txn, const struct sa_credential *c,
                     const struct sa_binding_change *ch, size_t n, unsigned max_contacts)
{
	struct apply_state as = { 0, false };
	int rc = max_contacts > 0 ? bindings_count(st, txn, c->id, &as.count) : SA_STORE_OK;

	for (size_t i = 0; i < n && rc == SA_STORE_OK; i++)
		rc = ch[i].b != NULL ? change_put(st, txn, c, ch[i].b, &as)
		                     : change_remove(st, txn, c->id, ch[i].contact, &as);
	if (rc == SA_STORE_OK && as.added && max_contacts > 0 && as.count > max_contacts)
		rc = SA_STORE_EFULL;
	return rc;
}

static bool contact_ok(const char *contact)
{
	return contact != NULL && contact[0] != '\0' && strnlen(contact, SA_CONTACT_MAX) < SA_CONTACT_MAX;
}

/* The credential a binding write is for, from main's shared read transaction. */
static int cred_lookup(struct sa_store *st, const char *cred_id, struct cred_rec *c)
{
	MDB_txn *txn;
	int rc = rd_begin(st, ENV_MAIN, &txn);

	if (rc != SA_STORE_OK)
		return rc;
	return rd_end(st, ENV_MAIN, cred_get_txn(st, txn, str_val(cred_id), c));
}

/* The credential is read from main first, then the changes are written in
 * one runtime transaction: main's writer lock (an administrator) is never
 * waited for. A credential deleted between the two leaves bindings that
 * readers skip and the daemon removes from the tombstone. */
static bool changes_ok(const struct sa_binding_change *ch, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!contact_ok(ch[i].b != NULL ? ch[i].b->contact : ch[i].contact))
			return false;
	return true;
}

int sa_store_binding_apply(struct sa_store *st, const char *cred_id, const struct sa_binding_change *ch,
                           size_t n, unsigned max_contacts)
{
	struct cred_rec c;

	if (!has_runtime(st) || !id_ok(cred_id) || !changes_ok(ch, n))
		return SA_STORE_EINVAL;
	int rc = cred_lookup(st, cred_id, &c);
	if (rc == SA_STORE_OK)
		rc = sa_store_binding_apply_for(st, &c.c, ch, n, max_contacts);
	OPENSSL_cleanse(&c, sizeof c);
	return rc;
}

int sa_store_binding_apply_for(struct sa_store *st, const struct sa_credential *c,
                               const struct sa_binding_change *ch, size_t n, unsigned max_contacts)
{
	MDB_txn *txn;

	if (!has_runtime(st) || !id_ok(c->id) || !id_ok(c->trunk_id) || !changes_ok(ch, n))
		return SA_STORE_EINVAL;
	int rc = wr_begin(st, ENV_RT, &txn, true);
	if (rc == SA_STORE_OK)
		rc = wr_end(st, ENV_RT, txn, apply_txn(st, txn, c, ch, n, max_contacts));
	return rc;
}

int sa_store_binding_put(struct sa_store *st, const struct sa_binding *b, unsigned max_contacts)
{
	if (b == NULL || strnlen(b->cred_id, SA_ID_MAX) >= SA_ID_MAX)
		return SA_STORE_EINVAL;
	struct sa_binding_change ch = { .contact = b->contact, .b = b };
	return sa_store_binding_apply(st, b->cred_id, &ch, 1, max_contacts);
}

int sa_store_binding_delete(struct sa_store *st, const char *cred_id, const char *contact)
{
	struct key bkey;
	MDB_txn *txn;

	if (!has_runtime(st))
		return SA_STORE_EINVAL;
	if (!id_ok(cred_id) || contact == NULL || strnlen(contact, SA_CONTACT_MAX) >= SA_CONTACT_MAX)
		return SA_STORE_ENOTFOUND;
	binding_key(&bkey, cred_id, contact);
	int rc = wr_begin(st, ENV_RT, &txn, true);
	if (rc != SA_STORE_OK)
		return rc;
	return wr_end(st, ENV_RT, txn, binding_remove(st, txn, &bkey));
}

int sa_store_binding_delete_all(struct sa_store *st, const char *cred_id)
{
	MDB_txn *txn;

	if (!has_runtime(st))
		return SA_STORE_EINVAL;
	if (!id_ok(cred_id))
		return SA_STORE_OK;
	int rc = wr_begin(st, ENV_RT, &txn, true);
	if (rc != SA_STORE_OK)
		return rc;
	return wr_end(st, ENV_RT, txn, bindings_remove_cred(st, txn, cred_id, NULL));
}

struct binding_walk {
	sa_store_binding_cb cb;
	void *arg;
	size_t skip;           /* bytes of index key before the binding key */
	MDB_txn *mtxn;         /* main, for cred_live */
	char cred[SA_ID_MAX];  /* the credential last looked up (bindings come grouped by it) */
	bool live;
};

static int binding_walk_fn(struct sa_store *st, MDB_txn *txn, const MDB_val *k, const MDB_val *v, void *arg)
{
	struct binding_walk *w = arg;
	struct brec r;
	struct sa_binding *bp = &r.b;
	int rc;

	if (w->skip == 0) {
		rc = binding_decode(v, &r);
	} else {
		MDB_val bk = mem_val((const char *)k->mv_data + w->skip, k->mv_size - w->skip);
		MDB_val bv;
		rc = db_get(st, txn, DB_BINDINGS, bk, &bv);
		if (rc == SA_STORE_OK)
			rc = binding_decode(&bv, &r);
	}
	if (rc != SA_STORE_OK)
		return rc == SA_STORE_ENOTFOUND ? SA_STORE_EIO : rc;
	bp->cred_id[sizeof bp->cred_id - 1] = '\0';
	if (strcmp(bp->cred_id, w->cred) != 0) {
		memcpy(w->cred, bp->cred_id, sizeof w->cred);
		/* without main's transaction (sa_store_binding_list_for) only the
		 * caller's credential is listed: a record naming another is skipped */
		w->live = w->mtxn != NULL && cred_live(st, w->mtxn, bp->cred_id);
	}
	if (!w->live)
		return SA_STORE_OK;
	return w->cb(bp, w->arg) != 0 ? WALK_STOP : SA_STORE_OK;
}

/* Own read transactions (the callback may call into the store): runtime
 * first, then main, so that a credential missing from main was deleted. */
static int binding_list(struct sa_store *st, int db, const char *id, sa_store_binding_cb cb, void *arg)
{
	struct key prefix = { .len = 0 };
	MDB_txn *txn;

	if (!has_runtime(st))
		return SA_STORE_EINVAL;
	if (!id_ok(id))
		return SA_STORE_OK;
	key_str(&prefix, id);
	key_sep(&prefix);
	struct binding_walk w = { cb, arg, db == DB_BINDINGS ? 0 : prefix.len, NULL, "", false };
	int rc = rd_own_begin(st, ENV_RT, &txn);
	if (rc != SA_STORE_OK)
		return rc;
	rc = rd_own_begin(st, ENV_MAIN, &w.mtxn);
	if (rc == SA_STORE_OK)
		rc = rd_own_end(st, ENV_MAIN, w.mtxn, walk_prefix(st, txn, db, &prefix, binding_walk_fn, &w));
	return rd_own_end(st, ENV_RT, txn, rc);
}

int sa_store_binding_list_credential(struct sa_store *st, const char *cred_id, sa_store_binding_cb cb, void *arg)
{
	return binding_list(st, DB_BINDINGS, cred_id, cb, arg);
}

/* The caller read c from main moments ago: main is not read again. */
int sa_store_binding_list_for(struct sa_store *st, const struct sa_credential *c, sa_store_binding_cb cb, void *arg)
{
	struct key prefix = { .len = 0 };
	MDB_txn *txn;

	if (!has_runtime(st))
		return SA_STORE_EINVAL;
	if (!id_ok(c->id))
		return SA_STORE_OK;
	key_str(&prefix, c->id);
	key_sep(&prefix);
	struct binding_walk w = { cb, arg, 0, NULL, "", true };
	memcpy(w.cred, c->id, sizeof w.cred);
	w.cred[sizeof w.cred - 1] = '\0';
	int rc = rd_begin(st, ENV_RT, &txn);   /* the shared one: cb does not call into the store */
	if (rc != SA_STORE_OK)
		return rc;
	return rd_end(st, ENV_RT, walk_prefix(st, txn, DB_BINDINGS, &prefix, binding_walk_fn, &w));
}

int sa_store_binding_list_trunk(struct sa_store *st, const char *trunk_id, sa_store_binding_cb cb, void *arg)
{
	return binding_list(st, DB_BINDINGS_BY_TRUNK, trunk_id, cb, arg);
}

struct latest_walk {
	int64_t now;
	sa_store_binding_pred accept;
	void *arg;
	struct sa_binding *out;        /* the latest one accepted */
	struct sa_binding any;         /* the latest live one */
	bool hit, hit_any;
};

static int latest_walk_cb(const struct sa_binding *b, void *arg)
{
	struct latest_walk *lw = arg;
	if (b->expires_at <= lw->now)
		return 0;
	if (!lw->hit_any || b->updated_at >= lw->any.updated_at) {
		lw->any = *b;
		lw->hit_any = true;
	}
	if ((!lw->hit || b->updated_at >= lw->out->updated_at) && (!lw->accept || lw->accept(b, lw->arg))) {
		*lw->out = *b;
		lw->hit = true;
	}
	return 0;
}

/* The trunk's list first (trunk_latest): up to max live accepted ones, in
 * its order; its every binding when no listed one is live and accepted
 * (then one: the latest accepted, else the latest live one). */
static int binding_latest(struct sa_store *st, MDB_txn *txn, MDB_txn *mtxn, const char *trunk_id, int64_t now,
                          sa_store_binding_pred accept, void *arg, struct sa_binding *out, int max, int *n)
{
	struct latest l;
	struct brec r;
	int rc = latest_get(st, txn, trunk_id, &l);

	*n = 0;
	if (rc != SA_STORE_OK && rc != SA_STORE_ENOTFOUND)
		return rc;
	for (int i = 0; i < l.n && *n < max; i++) {
		rc = binding_get(st, txn, &l.k[i], &r);
		if (rc == SA_STORE_ENOTFOUND)
			continue;   /* a removal takes its entry off: not expected; the walk decides */
		if (rc != SA_STORE_OK)
			return rc;
		r.b.cred_id[sizeof r.b.cred_id - 1] = '\0';
		if (r.b.expires_at > now && cred_live(st, mtxn, r.b.cred_id) && (!accept || accept(&r.b, arg)))
			out[(*n)++] = r.b;
	}
	if (*n > 0)
		return SA_STORE_OK;
	struct key prefix = { .len = 0 };
	key_str(&prefix, trunk_id);
	key_sep(&prefix);
	struct latest_walk lw = { .now = now, .accept = accept, .arg = arg, .out = out };
	struct binding_walk w = { latest_walk_cb, &lw, prefix.len, mtxn, "", false };
	rc = walk_prefix(st, txn, DB_BINDINGS_BY_TRUNK, &prefix, binding_walk_fn, &w);
	if (rc == SA_STORE_OK && !lw.hit && lw.hit_any)
		*out = lw.any;
	if (rc == SA_STORE_OK && (lw.hit || lw.hit_any))
		*n = 1;
	return rc != SA_STORE_OK ? rc : *n > 0 ? SA_STORE_OK : SA_STORE_ENOTFOUND;
}

int sa_store_bindings_latest(struct sa_store *st, const char *trunk_id, int64_t now, sa_store_binding_pred accept,
                             void *arg, struct sa_binding *out, int max, int *n)
{
	MDB_txn *txn, *mtxn;

	*n = 0;
	if (!has_runtime(st) || max < 1)
		return SA_STORE_EINVAL;
	if (!id_ok(trunk_id))
		return SA_STORE_ENOTFOUND;
	int rc = rd_own_begin(st, ENV_RT, &txn);
	if (rc != SA_STORE_OK)
		return rc;
	rc = rd_own_begin(st, ENV_MAIN, &mtxn);
	if (rc == SA_STORE_OK)
		rc = rd_own_end(st, ENV_MAIN, mtxn,
		                binding_latest(st, txn, mtxn, trunk_id, now, accept, arg, out, max, n));
	return rd_own_end(st, ENV_RT, txn, rc);
}

int sa_store_binding_latest(struct sa_store *st, const char *trunk_id, int64_t now, sa_store_binding_pred accept,
                            void *arg, struct sa_binding *out)
{
	int n;
	return sa_store_bindings_latest(st, trunk_id, now, accept, arg, out, 1, &n);
}

/* The binding key of the earliest-expiring binding if it expires at or before now. */
static int binding_next_expired(struct sa_store *st, MDB_txn *txn, int64_t now, struct key *bkey)
{
	struct key empty = { .len = 0 }, ek, limit;
	int rc = first_with_prefix(st, txn, DB_BINDINGS_BY_EXPIRY, &empty, &ek);

	if (rc != SA_STORE_OK)
		return rc;
	limit.len = 0;
	key_u64(&limit, (uint64_t)now ^ ((uint64_t)1 << 63));
	if (ek.len < 9 || memcmp(ek.b, limit.b, 8) > 0)
		return SA_STORE_ENOTFOUND;
	bkey->len = 0;
	key_put(bkey, ek.b + 9, ek.len - 9);
	return SA_STORE_OK;
}

/* Removes up to EXPIRE_BATCH expired bindings in one transaction, and
 * moves the expiry entries it meets of bindings refreshed since (as many
 * again at most); *more when it stopped at a limit. */
static int expire_batch(struct sa_store *st, int64_t now, int *n, bool *more, sa_store_binding_cb cb, void *arg)
{
	struct brec r;
	struct key bkey;
	MDB_txn *txn;
	int rc = wr_begin(st, ENV_RT, &txn, true), done = 0, moved = 0;

	*more = false;
	if (rc != SA_STORE_OK)
		return rc;
	while ((rc = binding_next_expired(st, txn, now, &bkey)) == SA_STORE_OK) {
		if (done == EXPIRE_BATCH || moved == EXPIRE_BATCH) {
			*more = true;
			break;
		}
		rc = binding_get(st, txn, &bkey, &r);
		if (rc == SA_STORE_OK && r.b.expires_at > now) {
			if ((rc = binding_reindex(st, txn, &r, &bkey)) != SA_STORE_OK)
				break;
			moved++;
			continue;
		}
		if (rc == SA_STORE_OK && cb != NULL)
			cb(&r.b, arg);
		if ((rc = binding_remove(st, txn, &bkey)) != SA_STORE_OK)
			break;
		done++;
	}
	if (rc == SA_STORE_ENOTFOUND)
		rc = SA_STORE_OK;
	rc = wr_end(st, ENV_RT, txn, rc);
	if (rc == SA_STORE_OK)
		*n += done;
	return rc;
}

/* In batches, so that the writer lock is never held for long and each
 * transaction needs little of the headroom. */
int sa_store_binding_expire_some(struct sa_store *st, int64_t now, int max, sa_store_binding_cb cb, void *arg,
                                 bool *more)
{
	int n = 0, rc = SA_STORE_OK;

	*more = true;
	if (!has_runtime(st))
		return SA_STORE_EINVAL;
	while (*more && n < max && rc == SA_STORE_OK)
		rc = expire_batch(st, now, &n, more, cb, arg);
	if (rc != SA_STORE_OK)
		*more = false;
	return rc == SA_STORE_OK ? n : rc;
}

int sa_store_binding_expire_each(struct sa_store *st, int64_t now, sa_store_binding_cb cb, void *arg)
{
	bool more;

	return sa_store_binding_expire_some(st, now, INT_MAX, cb, arg, &more);
}

int sa_store_binding_expire(struct sa_store *st, int64_t now)
{
	return sa_store_binding_expire_each(st, now, NULL, NULL);
}

/* Removes the bindings of deleted credentials from *from on, up to about
 * EXPIRE_BATCH of them in one runtime transaction (a credential's are
 * removed together); *from moves past what was looked at, *more when it
 * stopped at the limit. */
static int purge_batch(struct sa_store *st, struct key *from, uint64_t *removed, bool *more)
{
	struct key all = { .len = 0 }, bkey;
	MDB_txn *txn, *mtxn;
	char cred[SA_ID_MAX];
	unsigned done = 0, n;
	int rc = wr_begin(st, ENV_RT, &txn, true);

	*more = false;
	if (rc != SA_STORE_OK)
		return rc;
	if ((rc = rd_own_begin(st, ENV_MAIN, &mtxn)) != SA_STORE_OK)
		return wr_end(st, ENV_RT, txn, rc);
	while (done < EXPIRE_BATCH && (rc = first_from(st, txn, DB_BINDINGS, from, &all, &bkey)) == SA_STORE_OK) {
		size_t idlen = strnlen((const char *)bkey.b, bkey.len);
		if (idlen == 0 || idlen >= SA_ID_MAX || idlen == bkey.len) {
			rc = SA_STORE_EIO;   /* not a binding key */
			break;
		}
		memcpy(cred, bkey.b, idlen);
		cred[idlen] = '\0';
		binding_key_after(from, cred);
		if (cred_live(st, mtxn, cred))
			continue;
		if ((rc = bindings_remove_cred(st, txn, cred, &n)) != SA_STORE_OK)
			break;
		done += n;
	}
	*more = rc == SA_STORE_OK;
	if (rc == SA_STORE_ENOTFOUND)
		rc = SA_STORE_OK;
	rd_own_end(st, ENV_MAIN, mtxn, SA_STORE_OK);
	rc = wr_end(st, ENV_RT, txn, rc);
	if (rc == SA_STORE_OK)
		*removed += done;
	return rc;
}

/* Walks the credentials that have bindings, not every binding: a seek
 * per credential. */
int sa_store_binding_purge_orphans(struct sa_store *st, uint64_t *removed)
{
	struct key from = { .len = 0 };
	bool more = true;
	int rc = SA_STORE_OK;

	*removed = 0;
	if (!has_runtime(st))
		return SA_STORE_EINVAL;
	while (more && rc == SA_STORE_OK)
		rc = purge_batch(st, &from, removed, &more);
	return rc;
}

/* The tombstone counter is the position of the newest one ever written. */
int sa_store_purged_get(struct sa_store *st, uint64_t *pos)
{
	MDB_txn *txn;
	uint64_t rec = 0, del_seq = 0;
	MDB_val v;

	*pos = 0;
	if (!has_runtime(st))
		return SA_STORE_EINVAL;
	int rc = rd_begin(st, ENV_RT, &txn);
	if (rc != SA_STORE_OK)
		return rc;
	rc = db_get(st, txn, DB_RT_META, str_val("purged"), &v);
	if (rc == SA_STORE_OK)
		rc = val_rec(&v, &rec, sizeof rec);
	rd_end(st, ENV_RT, rc);
	if (rc != SA_STORE_OK)
		return rc;
	if ((rc = rd_begin(st, ENV_MAIN, &txn)) != SA_STORE_OK)
		return rc;
	rc = rd_end(st, ENV_MAIN, meta_get_u64(st, txn, "del_seq", &del_seq));
	if (rc == SA_STORE_OK && rec > del_seq)
		rc = SA_STORE_ENOTFOUND;
	if (rc == SA_STORE_OK)
		*pos = rec;
	return rc;
}

int sa_store_purged_set(struct sa_store *st, uint64_t pos)
{
	MDB_txn *txn;

	if (!has_runtime(st))
		return SA_STORE_EINVAL;
	int rc = wr_begin(st, ENV_RT, &txn, true);
	if (rc != SA_STORE_OK)
		return rc;
	return wr_end(st, ENV_RT, txn, db_put(st, txn, DB_RT_META, str_val("purged"), mem_val(&pos, sizeof pos)));
}

struct expired_count {
	struct key limit;      /* now, as the expiry index writes it */
	int64_t now;
	uint64_t n;
};

/* An entry due by now whose binding was refreshed since (struct brec) is
 * not expired: its record says so. */
static int expired_fn(struct sa_store *st, MDB_txn *txn, const MDB_val *k, const MDB_val *v, void *arg)
{
	struct expired_count *ec = arg;
	struct key bkey = { .len = 0 };
	struct brec r;

	if (k->mv_size < 9 || k->mv_size - 9 > KEY_MAX || memcmp(k->mv_data, ec->limit.b, 8) > 0)
		return WALK_STOP;
	key_put(&bkey, (const char *)k->mv_data + 9, k->mv_size - 9);
	if (binding_get(st, txn, &bkey, &r) != SA_STORE_OK || r.b.expires_at <= ec->now)
		ec->n++;
	return SA_STORE_OK;
}

/* The live bindings of deleted credentials that are not removed yet: found
 * from the tombstones after the last position known clean, since every
 * binding of a deleted credential was written before its tombstone. */
struct orphan_count {
	MDB_txn *rtxn;         /* runtime, where the bindings are */
	int64_t now;
	uint64_t live;         /* orphans not expired (expired ones are counted as expired) */
	uint64_t total;        /* of the tombstone in hand */
	uint64_t clean;        /* tombstones up to here have no binding left */
	bool dirty;            /* one with bindings left was seen: clean stops moving */
};

static int orphan_binding_fn(struct sa_store *st, MDB_txn *txn, const MDB_val *k, const MDB_val *v, void *arg)
{
	struct orphan_count *oc = arg;
	struct brec r;

	if (binding_decode(v, &r) != SA_STORE_OK)
		return SA_STORE_EIO;
	oc->total++;
	oc->live += r.b.expires_at > oc->now;
	return SA_STORE_OK;
}

static int orphan_tombstone_fn(struct sa_store *st, MDB_txn *txn, const MDB_val *k, const MDB_val *v, void *arg)
{
	struct orphan_count *oc = arg;
	struct key prefix = { .len = 0 };
	char id[SA_ID_MAX];
	uint64_t seq = 0;

	if (k->mv_size != 8 || val_str(v, id, sizeof id) != SA_STORE_OK)
		return SA_STORE_EIO;
	for (int i = 0; i < 8; i++)
		seq = seq << 8 | ((const unsigned char *)k->mv_data)[i];
	oc->total = 0;
	key_str(&prefix, id);
	key_sep(&prefix);
	int rc = cred_live(st, txn, id) ? SA_STORE_OK
	                                 : walk_prefix(st, oc->rtxn, DB_BINDINGS, &prefix, orphan_binding_fn, oc);
	oc->dirty |= oc->total > 0;
	if (!oc->dirty)
		oc->clean = seq;
	return rc;
}

static int orphans_count(struct sa_store *st, MDB_txn *rtxn, MDB_txn *mtxn, int64_t now, uint64_t *n)
{
	struct orphan_count oc = { .rtxn = rtxn, .now = now };
	struct key from, all = { .len = 0 };

	*n = 0;
	if (!st->sh->tombstones)
		return SA_STORE_OK;
	pthread_mutex_lock(&st->sh->mu);
	oc.clean = st->sh->swept;
	pthread_mutex_unlock(&st->sh->mu);
	tombstone_key(&from, oc.clean + 1);
	int rc = walk_range(st, mtxn, DB_CRED_DELETED, &from, &all, orphan_tombstone_fn, &oc);
	if (rc != SA_STORE_OK)
		return rc;
	pthread_mutex_lock(&st->sh->mu);
	if (oc.clean > st->sh->swept)
		st->sh->swept = oc.clean;
	pthread_mutex_unlock(&st->sh->mu);
	*n = oc.live;
	return SA_STORE_OK;
}

/* Live bindings: all of them less those expired and not yet swept, found
 * from the start of the expiry index (few: housekeeping sweeps them), and
 * less those of deleted credentials not yet purged (few: see orphans_count). */
int sa_store_binding_count(struct sa_store *st, int64_t now, uint64_t *n)
{
	struct expired_count ec = { .limit = { .len = 0 }, .now = now, .n = 0 };
	struct key empty = { .len = 0 };
	MDB_txn *txn, *mtxn;
	uint64_t orphans = 0;
	MDB_stat ms;

	*n = 0;
	if (!has_runtime(st))
		return SA_STORE_EINVAL;
	int rc = rd_begin(st, ENV_RT, &txn);
	if (rc != SA_STORE_OK)
		return rc;
	key_u64(&ec.limit, (uint64_t)now ^ ((uint64_t)1 << 63));
	rc = note_err(st, mdb_stat(txn, st->sh->dbi[DB_BINDINGS], &ms));
	if (rc == SA_STORE_OK)
		rc = walk_prefix(st, txn, DB_BINDINGS_BY_EXPIRY, &empty, expired_fn, &ec);
	if (rc == SA_STORE_OK && (rc = rd_begin(st, ENV_MAIN, &mtxn)) == SA_STORE_OK)
		rc = rd_end(st, ENV_MAIN, orphans_count(st, txn, mtxn, now, &orphans));
	if (rc == SA_STORE_OK)
		*n = ms.ms_entries >= ec.n + orphans ? ms.ms_entries - ec.n - orphans : 0;
	return rd_end(st, ENV_RT, rc);
}

int sa_store_flush(struct sa_store *st)
{
	if (st->sh->rdonly || !has_runtime(st))
		return SA_STORE_OK;
	st->code = 0;
	st->detail[0] = '\0';
	int rc = note_err(st, mdb_env_sync(st->sh->env[ENV_RT].env, 1));
	fault_note(st, rc);
	return rc;
}

/* ---- the move from a store made before the split ---- */

/* A legacy binding, unless runtime has it already (a move interrupted
 * after its runtime commit runs again), with its index entries rebuilt. */
static int legacy_binding_fn(struct sa_store *st, MDB_txn *txn, const MDB_val *k, const MDB_val *v, void *arg)
{
	MDB_txn *rt = arg;
	struct brec r;
	struct key bkey = { .len = 0 };

	if (k->mv_size > KEY_MAX || binding_decode(v, &r) != SA_STORE_OK)
		return SA_STORE_EIO;
	key_put(&bkey, k->mv_data, k->mv_size);
	if (db_has(st, rt, DB_BINDINGS, *k))
		return SA_STORE_OK;
	int rc = db_put(st, rt, DB_BINDINGS, *k, *v);
	return rc == SA_STORE_OK ? binding_index_put(st, rt, &r, &bkey) : rc;
}

/* The failure log's records and per-trunk state, unless already there. */
struct legacy_copy {
	MDB_txn *rt;
	int db;
};

/* A failure-log record as schema 1 wrote it in main (reason 16 bytes). */
struct authfail_v1 {
	int64_t at;
	char trunk_id[SA_ID_MAX];
	char source[64];
	uint16_t source_port;
	char transport[8];
	char username[SA_USERNAME_MAX + 1];
	char reason[16];
	char method[16];
};

static int legacy_copy_fn(struct sa_store *st, MDB_txn *txn, const MDB_val *k, const MDB_val *v, void *arg)
{
	struct legacy_copy *lc = arg;
	MDB_val kk = *k, vv = *v;
	struct sa_authfail now;
	struct authfail_v1 old;

	if (lc->db == DB_AUTHFAIL && v->mv_size == sizeof old) {
		memcpy(&old, v->mv_data, sizeof old);
		memset(&now, 0, sizeof now);
		now.at = old.at;
		now.source_port = old.source_port;
		memcpy(now.trunk_id, old.trunk_id, sizeof now.trunk_id);
		memcpy(now.source, old.source, sizeof now.source);
		memcpy(now.transport, old.transport, sizeof now.transport);
		memcpy(now.username, old.username, sizeof now.username);
		memcpy(now.reason, old.reason, sizeof old.reason);
		memcpy(now.method, old.method, sizeof now.method);
		vv = mem_val(&now, sizeof now);
	}
	int mrc = mdb_put(lc->rt, st->sh->dbi[lc->db], &kk, &vv, MDB_NOOVERWRITE);

	return mrc == MDB_KEYEXIST ? SA_STORE_OK : note_err(st, mrc);
}

/* Walks a legacy database (its handle is not in dbi[]: a cursor of its own). */
static int legacy_walk(struct sa_store *st, MDB_txn *mtxn, MDB_dbi dbi, walk_fn fn, void *arg)
{
	MDB_cursor *cur;
	MDB_val k, v;
	int rc = SA_STORE_OK, mrc;

	if ((mrc = mdb_cursor_open(mtxn, dbi, &cur)) != 0)
		return note_err(st, mrc);
	while (rc == SA_STORE_OK && (mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) == 0)
		rc = fn(st, mtxn, &k, &v, arg);
	mdb_cursor_close(cur);
	if (rc != SA_STORE_OK)
		return rc;
	return mrc == MDB_NOTFOUND ? SA_STORE_OK : note_err(st, mrc);
}

/* Copies into the runtime environment, in one transaction. The indexes are
 * rebuilt from the bindings rather than copied. */
static int legacy_copy(struct sa_store *st, const struct legacy *lg)
{
	MDB_txn *rt, *mtxn;
	int rc = wr_begin(st, ENV_RT, &rt, false);

	if (rc != SA_STORE_OK)
		return rc;
	if ((rc = txn_begin(st, ENV_MAIN, MDB_RDONLY, &mtxn)) != SA_STORE_OK)
		return wr_end(st, ENV_RT, rt, rc);
	if (lg->present[DB_BINDINGS - DB_RT_FIRST])
		rc = legacy_walk(st, mtxn, lg->dbi[DB_BINDINGS - DB_RT_FIRST], legacy_binding_fn, rt);
	for (int db = DB_AUTHFAIL; db <= DB_AUTHFAIL_STATE && rc == SA_STORE_OK; db++) {
		struct legacy_copy lc = { rt, db };
		if (lg->present[db - DB_RT_FIRST])
			rc = legacy_walk(st, mtxn, lg->dbi[db - DB_RT_FIRST], legacy_copy_fn, &lc);
	}
	txn_abort(st, ENV_MAIN, mtxn);
	return wr_end(st, ENV_RT, rt, rc);
}

/* Then drops them from main, in one durable transaction. */
static int legacy_drop(struct sa_store *st, const struct legacy *lg)
{
	MDB_txn *txn;
	int rc = wr_begin(st, ENV_MAIN, &txn, false);

	if (rc != SA_STORE_OK)
		return rc;
	for (int i = 0; i < DB_LEGACY_COUNT && rc == SA_STORE_OK; i++)
		if (lg->present[i])
			rc = note_err(st, mdb_drop(txn, lg->dbi[i], 1));
	return wr_end(st, ENV_MAIN, txn, rc);
}

/* A store made before the split keeps bindings and the failure log in
 * data.mdb. The first open that has runtime/ moves them there: runtime
 * committed first, then main's copies dropped, so that an open interrupted
 * between the two only copies again (skipping what is there). */
static int legacy_move(struct sa_store *st, const struct legacy *lg)
{
	bool any = false;

	for (int i = 0; i < DB_LEGACY_COUNT; i++)
		any |= lg->present[i];
	if (!any)
		return SA_STORE_OK;
	int rc = legacy_copy(st, lg);
	return rc == SA_STORE_OK ? legacy_drop(st, lg) : rc;
}

/* ---- auth-failure log ---- */

static void authfail_copy(struct sa_authfail *dst, const struct sa_authfail *src)
{
	*dst = *src;
	dst->trunk_id[sizeof dst->trunk_id - 1] = '\0';
	dst->source[sizeof dst->source - 1] = '\0';
	dst->transport[sizeof dst->transport - 1] = '\0';
	dst->username[sizeof dst->username - 1] = '\0';
	dst->reason[sizeof dst->reason - 1] = '\0';
	dst->method[sizeof dst->method - 1] = '\0';
}

/* Drops the oldest records of the trunk until at most keep remain. */
static int authfail_trim(struct sa_store *st, MDB_txn *txn, const char *trunk_id,
                         struct authfail_state *s, unsigned keep)
{
	struct key prefix = { .len = 0 }, oldest;
	int rc = SA_STORE_OK;

	key_str(&prefix, trunk_id);
	key_sep(&prefix);
	while (rc == SA_STORE_OK && s->count > keep) {
		rc = first_with_prefix(st, txn, DB_AUTHFAIL, &prefix, &oldest);
		if (rc == SA_STORE_OK)
			rc = db_del(st, txn, DB_AUTHFAIL, key_val(&oldest));
		s->count--;
	}
	return rc == SA_STORE_ENOTFOUND ? SA_STORE_OK : rc;
}

/* In the runtime transaction; the trunk was found in main. */
static int authfail_add_txn(struct sa_store *st, MDB_txn *txn, const struct sa_authfail *f, unsigned keep)
{
	struct authfail_state s = { 0, 0 };
	struct key k;
	int rc = room_for_new(st, ENV_RT);

	if (rc != SA_STORE_OK)
		return rc;
	rc = db_get_rec(st, txn, DB_AUTHFAIL_STATE, str_val(f->trunk_id), &s, sizeof s);
	if (rc != SA_STORE_OK && rc != SA_STORE_ENOTFOUND)
		return rc;
	trunk_seq_key(&k, f->trunk_id, s.next_seq++);
	s.count++;
	rc = db_put(st, txn, DB_AUTHFAIL, key_val(&k), mem_val(f, sizeof *f));
	if (rc == SA_STORE_OK)
		rc = authfail_trim(st, txn, f->trunk_id, &s, keep);
	if (rc == SA_STORE_OK)
		rc = db_put(st, txn, DB_AUTHFAIL_STATE, str_val(f->trunk_id), mem_val(&s, sizeof s));
	return rc;
}

/* Records go only to trunks that exist (scanners name any): looked up in
 * main's shared read transaction, then written in runtime. */
int sa_store_authfail_add(struct sa_store *st, const struct sa_authfail *f, unsigned keep)
{
	struct sa_authfail rec;
	struct trunk_rec t;
	MDB_txn *txn;

	if (!has_runtime(st))
		return SA_STORE_EINVAL;
	if (f == NULL || !id_ok(f->trunk_id))
		return SA_STORE_ENOTFOUND;
	if (keep == 0)
		return SA_STORE_OK;
	authfail_copy(&rec, f);
	int rc = rd_begin(st, ENV_MAIN, &txn);
	if (rc != SA_STORE_OK)
		return rc;
	if ((rc = rd_end(st, ENV_MAIN, trunk_get_txn(st, txn, rec.trunk_id, &t))) != SA_STORE_OK)
		return rc;
	memcpy(rec.trunk_id, t.t.id, sizeof rec.trunk_id);
	if ((rc = wr_begin(st, ENV_RT, &txn, true)) != SA_STORE_OK)
		return rc;
	return wr_end(st, ENV_RT, txn, authfail_add_txn(st, txn, &rec, keep));
}

/* A failure record of either layout; schema 1's say no password version. */
static int authfail_decode(const MDB_val *v, struct sa_authfail *f)
{
	bool older;
	int rc = val_rec_older(v, f, sizeof *f, sizeof(struct authfail_v2), &older);

	if (rc == SA_STORE_OK && older)
		f->password_version = 0;
	return rc;
}

/* Older than before_seq, newest first; the sequence is the key's last 8 bytes. */
static int authfail_walk_seq(MDB_cursor *cur, const struct key *prefix, int64_t since, uint64_t before_seq,
                             unsigned limit, sa_store_authfail_seq_cb cb, void *arg)
{
	struct key from = *prefix;
	struct sa_authfail f;
	MDB_val k, v;
	unsigned n = 0;

	key_u64(&from, before_seq);
	k = key_val(&from);
	int mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
	mrc = mdb_cursor_get(cur, &k, &v, mrc == 0 ? MDB_PREV : MDB_LAST);
	while (mrc == 0 && has_prefix(&k, prefix) && (limit == 0 || n < limit)) {
		uint64_t seq = 0;
		if (k.mv_size != prefix->len + 8 || authfail_decode(&v, &f) != SA_STORE_OK)
			return SA_STORE_EIO;
		for (size_t i = 0; i < 8; i++)
			seq = seq << 8 | ((const unsigned char *)k.mv_data)[prefix->len + i];
		if (f.at >= since) {
			n++;
			if (cb(&f, seq, arg) != 0)
				return SA_STORE_OK;
		}
		mrc = mdb_cursor_get(cur, &k, &v, MDB_PREV);
	}
	return (mrc == 0 || mrc == MDB_NOTFOUND) ? SA_STORE_OK : SA_STORE_EIO;
}

int sa_store_authfail_page(struct sa_store *st, const char *trunk_id, int64_t since, uint64_t before_seq,
                           unsigned limit, sa_store_authfail_seq_cb cb, void *arg)
{
	struct key prefix = { .len = 0 };
	MDB_cursor *cur;
	MDB_txn *txn;

	if (!has_runtime(st))
		return SA_STORE_EINVAL;
	if (!id_ok(trunk_id))
		return SA_STORE_OK;
	key_str(&prefix, trunk_id);
	key_sep(&prefix);
	int rc = rd_own_begin(st, ENV_RT, &txn);
	if (rc != SA_STORE_OK)
		return rc;
	if (mdb_cursor_open(txn, st->sh->dbi[DB_AUTHFAIL], &cur) != 0)
		return rd_own_end(st, ENV_RT, txn, SA_STORE_EIO);
	rc = authfail_walk_seq(cur, &prefix, since, before_seq, limit, cb, arg);
	mdb_cursor_close(cur);
	return rd_own_end(st, ENV_RT, txn, rc);
}

/* ---- idempotency: a POST's first answer, kept SA_STORE_IDEM_TTL seconds ---- */

struct idem_rec {          /* followed by body_len bytes */
	int64_t created_at;
	unsigned char fingerprint[SA_IDEM_HASH];
	int32_t status;
	uint32_t body_len;
	char location[SA_IDEM_LOCATION_MAX];
};

#define IDEM_PRUNE 32      /* expired answers removed per write: the table stays bounded by a day's POSTs */

static void idem_key(struct key *k, const char *account_id, const unsigned char hash[SA_IDEM_HASH])
{
	k->len = 0;
	key_str(k, account_id);
	key_sep(k);
	key_put(k, hash, SA_IDEM_HASH);
}

static void idem_time_key(struct key *k, int64_t created_at, const struct key *ik)
{
	k->len = 0;
	key_u64(k, (uint64_t)created_at ^ (UINT64_C(1) << 63));
	key_sep(k);
	key_put(k, ik->b, ik->len);
}

int sa_store_idem_get(struct sa_store *st, const char *account_id, const unsigned char hash[SA_IDEM_HASH],
                      int64_t now, struct sa_idem *out)
{
	struct idem_rec r;
	struct key k;
	MDB_txn *txn;
	MDB_val v;

	if (!id_ok(account_id) || !st->sh->idem)
		return SA_STORE_ENOTFOUND;
	idem_key(&k, account_id, hash);
	int rc = rd_begin(st, ENV_MAIN, &txn);
	if (rc != SA_STORE_OK)
		return rc;
	rc = db_get(st, txn, DB_IDEM, key_val(&k), &v);
	if (rc == SA_STORE_OK && v.mv_size < sizeof r)
		rc = SA_STORE_EIO;
	if (rc == SA_STORE_OK) {
		memcpy(&r, v.mv_data, sizeof r);
		if (v.mv_size != sizeof r + r.body_len)
			rc = SA_STORE_EIO;
		else if (r.created_at + SA_STORE_IDEM_TTL <= now)
			rc = SA_STORE_ENOTFOUND;   /* expired, not yet pruned */
		else if ((out->body = malloc(r.body_len + 1)) == NULL)
			rc = SA_STORE_EIO;
	}
	if (rc == SA_STORE_OK) {
		memcpy(out->body, (const char *)v.mv_data + sizeof r, r.body_len);
		out->body[r.body_len] = '\0';
		out->body_len = r.body_len;
		out->created_at = r.created_at;
		memcpy(out->fingerprint, r.fingerprint, SA_IDEM_HASH);
		out->status = r.status;
		memcpy(out->location, r.location, sizeof out->location);
		out->location[sizeof out->location - 1] = '\0';
	}
	return rd_end(st, ENV_MAIN, rc);
}

/* Removes the answer under ik (if any) with its expiry entry. */
static int idem_remove(struct sa_store *st, MDB_txn *txn, const struct key *ik)
{
	struct idem_rec r;
	struct key tk;
	MDB_val v;
	int rc = db_get(st, txn, DB_IDEM, key_val(ik), &v);

	if (rc == SA_STORE_ENOTFOUND)
		return SA_STORE_OK;
	if (rc != SA_STORE_OK || v.mv_size < sizeof r)
		return rc != SA_STORE_OK ? rc : SA_STORE_EIO;
	memcpy(&r, v.mv_data, sizeof r);
	idem_time_key(&tk, r.created_at, ik);
	rc = db_del(st, txn, DB_IDEM_BY_TIME, key_val(&tk));
	if (rc == SA_STORE_OK || rc == SA_STORE_ENOTFOUND)
		rc = db_del(st, txn, DB_IDEM, key_val(ik));
	return rc == SA_STORE_ENOTFOUND ? SA_STORE_OK : rc;
}

/* Removes up to IDEM_PRUNE answers that expired by now, oldest first. */
static int idem_prune(struct sa_store *st, MDB_txn *txn, int64_t now)
{
	struct key empty = { .len = 0 }, first, ik;
	int rc = SA_STORE_OK;

	for (int n = 0; n < IDEM_PRUNE && rc == SA_STORE_OK; n++) {
		rc = first_with_prefix(st, txn, DB_IDEM_BY_TIME, &empty, &first);
		if (rc != SA_STORE_OK || first.len < 9)
			break;
		uint64_t t = 0;
		for (int i = 0; i < 8; i++)
			t = t << 8 | first.b[i];
		if ((int64_t)(t ^ (UINT64_C(1) << 63)) + SA_STORE_IDEM_TTL > now)
			break;
		ik.len = 0;
		key_put(&ik, first.b + 9, first.len - 9);
		rc = db_del(st, txn, DB_IDEM_BY_TIME, key_val(&first));
		if (rc == SA_STORE_OK)
			rc = db_del(st, txn, DB_IDEM, key_val(&ik));
		if (rc == SA_STORE_ENOTFOUND)
			rc = SA_STORE_OK;
	}
	return rc == SA_STORE_ENOTFOUND ? SA_STORE_OK : rc;
}

static int idem_put_txn(struct sa_store *st, MDB_txn *txn, const struct key *ik, const struct sa_idem *in,
                        int64_t now)
{
	struct idem_rec r;
	struct key tk;
	int rc = room_for_new(st, ENV_MAIN);

	if (rc == SA_STORE_OK)
		rc = idem_prune(st, txn, now);
	if (rc == SA_STORE_OK)
		rc = idem_remove(st, txn, ik);
	if (rc != SA_STORE_OK)
		return rc;
	memset(&r, 0, sizeof r);
	r.created_at = in->created_at;
	memcpy(r.fingerprint, in->fingerprint, SA_IDEM_HASH);
	r.status = in->status;
	r.body_len = (uint32_t)in->body_len;
	snprintf(r.location, sizeof r.location, "%s", in->location);
	unsigned char *buf = malloc(sizeof r + in->body_len);
	if (buf == NULL)
		return SA_STORE_EIO;
	memcpy(buf, &r, sizeof r);
	memcpy(buf + sizeof r, in->body, in->body_len);
	idem_time_key(&tk, in->created_at, ik);
	rc = db_put(st, txn, DB_IDEM, key_val(ik), mem_val(buf, sizeof r + in->body_len));
	free(buf);
	if (rc == SA_STORE_OK)
		rc = db_put(st, txn, DB_IDEM_BY_TIME, key_val(&tk), mem_val("", 0));
	return rc;
}

int sa_store_idem_put(struct sa_store *st, const char *account_id, const unsigned char hash[SA_IDEM_HASH],
                      const struct sa_idem *in, int64_t now)
{
	struct key ik;
	MDB_txn *txn;

	if (!id_ok(account_id) || in->body_len > SA_IDEM_BODY_MAX || (in->body_len > 0 && in->body == NULL))
		return SA_STORE_EINVAL;
	if (!st->sh->idem)
		return SA_STORE_EIO;
	idem_key(&ik, account_id, hash);
	int rc = wr_begin(st, ENV_MAIN, &txn, true);
	if (rc != SA_STORE_OK)
		return rc;
	return wr_end(st, ENV_MAIN, txn, idem_put_txn(st, txn, &ik, in, now));
}

/* The whole log of a trunk, newest first: a page that starts at the end. */
struct authfail_all {
	sa_store_authfail_cb cb;
	void *arg;
};

static int authfail_all_fn(const struct sa_authfail *f, uint64_t seq, void *arg)
{
	struct authfail_all *all = arg;
	return all->cb(f, all->arg);
}

int sa_store_authfail_list(struct sa_store *st, const char *trunk_id, int64_t since, unsigned limit,
                           sa_store_authfail_cb cb, void *arg)
{
	struct authfail_all all = { cb, arg };
	return sa_store_authfail_page(st, trunk_id, since, UINT64_MAX, limit, authfail_all_fn, &all);
}

/* ---- webhooks and their deliveries ---- */

static int webhook_get_txn(struct sa_store *st, MDB_txn *txn, const char *id, struct sa_webhook *out)
{
	if (!id_ok(id) || !st->sh->webhooks)
		return SA_STORE_ENOTFOUND;
	int rc = db_get_rec(st, txn, DB_WEBHOOKS, str_val(id), out, sizeof *out);
	if (rc == SA_STORE_OK)
		out->secret[sizeof out->secret - 1] = out->url[sizeof out->url - 1] = '\0';
	return rc;
}

static void wh_account_key(struct key *k, const char *account_id, const char *webhook_id)
{
	k->len = 0;
	key_str(k, account_id);
	key_sep(k);
	key_str(k, webhook_id);
}

int sa_store_webhook_secret_make(char out[SA_STORE_WH_SECRET_MAX])
{
	unsigned char raw[32];
	static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t o = 6;

	if (RAND_bytes(raw, sizeof raw) != 1)
		return SA_STORE_EIO;
	memcpy(out, "whsec_", 6);
	for (size_t bit = 0; bit < sizeof raw * 8; bit += 6) {
		unsigned v = 0;
		for (size_t b = bit; b < bit + 6; b++)
			v = v << 1 | (b < sizeof raw * 8 ? (raw[b / 8] >> (7 - b % 8)) & 1u : 0u);
		out[o++] = b64url[v];
	}
	out[o] = '\0';
	OPENSSL_cleanse(raw, sizeof raw);
	return SA_STORE_OK;
}

/* The record and its place in the account's index. */
static int webhook_put(struct sa_store *st, MDB_txn *txn, const struct sa_webhook *w)
{
	struct key k;
	int rc = db_put(st, txn, DB_WEBHOOKS, str_val(w->id), mem_val(w, sizeof *w));

	wh_account_key(&k, w->account_id, w->id);
	if (rc == SA_STORE_OK)
		rc = db_put(st, txn, DB_WH_BY_ACCOUNT, key_val(&k), mem_val("", 0));
	return rc;
}

int sa_store_webhook_create(struct sa_store *st, const char *account_id, const char *url, uint32_t events,
                            int64_t now, struct sa_webhook *out)
{
	struct sa_account acc;
	MDB_txn *txn;

	if (!id_ok(account_id) || strlen(url) >= sizeof out->url)
		return SA_STORE_EINVAL;
	if (!st->sh->webhooks)
		return SA_STORE_EIO;
	int rc = wr_begin(st, ENV_MAIN, &txn, true);
	if (rc != SA_STORE_OK)
		return rc;
	rc = room_for_new(st, ENV_MAIN);
	if (rc == SA_STORE_OK)
		rc = db_get_rec(st, txn, DB_ACCOUNTS, str_val(account_id), &acc, sizeof acc);
	memset(out, 0, sizeof *out);
	if (rc == SA_STORE_OK)
		rc = new_id(st, txn, DB_WEBHOOKS, "wh_", out->id);
	if (rc == SA_STORE_OK)
		rc = sa_store_webhook_secret_make(out->secret);
	if (rc == SA_STORE_OK) {
		snprintf(out->account_id, sizeof out->account_id, "%s", account_id);
		snprintf(out->url, sizeof out->url, "%s", url);
		out->events = events;
		out->created_at = now;
		rc = webhook_put(st, txn, out);
	}
	return wr_end(st, ENV_MAIN, txn, rc);
}

int sa_store_webhook_get(struct sa_store *st, const char *webhook_id, struct sa_webhook *out)
{
	MDB_txn *txn;
	int rc = rd_begin(st, ENV_MAIN, &txn);

	if (rc != SA_STORE_OK)
		return rc;
	return rd_end(st, ENV_MAIN, webhook_get_txn(st, txn, webhook_id, out));
}

struct dlv_rec {           /* followed by payload_len bytes */
	char webhook_id[SA_ID_MAX];
	char event[SA_STORE_WH_EVENT_MAX];
	int32_t status;
	uint32_t attempts;
	int32_t last_status_code;
	uint32_t payload_len;
	char last_error[SA_STORE_WH_ERROR_MAX];
	int64_t next_attempt_at;
	int64_t created_at;
};

static void dlv_due_key(struct key *k, int64_t at, const char *dlv_id)
{
	k->len = 0;
	key_u64(k, (uint64_t)at ^ (UINT64_C(1) << 63));
	key_sep(k);
	key_str(k, dlv_id);
}

static void dlv_webhook_key(struct key *k, const char *webhook_id, const char *dlv_id)
{
	k->len = 0;
	key_str(k, webhook_id);
	key_sep(k);
	key_str(k, dlv_id);
}

static int dlv_rec_get(struct sa_store *st, MDB_txn *txn, const char *id, struct dlv_rec *r, MDB_val *v)
{
	if (!id_ok(id) || !st->sh->webhooks)
		return SA_STORE_ENOTFOUND;
	int rc = db_get(st, txn, DB_DELIVERIES, str_val(id), v);
	if (rc == SA_STORE_OK && v->mv_size < sizeof *r)
		rc = SA_STORE_EIO;
	if (rc == SA_STORE_OK) {
		memcpy(r, v->mv_data, sizeof *r);
		if (v->mv_size != sizeof *r + r->payload_len)
			rc = SA_STORE_EIO;
		r->last_error[sizeof r->last_error - 1] = r->event[sizeof r->event - 1] = '\0';
	}
	return rc;
}

/* Removes one delivery with its index entries. */
static int dlv_remove(struct sa_store *st, MDB_txn *txn, const char *id)
{
	struct dlv_rec r;
	struct key k;
	MDB_val v;
	int rc = dlv_rec_get(st, txn, id, &r, &v);

	if (rc != SA_STORE_OK)
		return rc == SA_STORE_ENOTFOUND ? SA_STORE_OK : rc;
	if (r.status == SA_DLV_PENDING) {
		dlv_due_key(&k, r.next_attempt_at, id);
		rc = db_del(st, txn, DB_DLV_DUE, key_val(&k));
	}
	dlv_webhook_key(&k, r.webhook_id, id);
	if (rc == SA_STORE_OK || rc == SA_STORE_ENOTFOUND)
		rc = db_del(st, txn, DB_DLV_BY_WEBHOOK, key_val(&k));
	if (rc == SA_STORE_OK || rc == SA_STORE_ENOTFOUND)
		rc = db_del(st, txn, DB_DELIVERIES, str_val(id));
	return rc == SA_STORE_ENOTFOUND ? SA_STORE_OK : rc;
}

/* The id after "<owner id>\0" in a key of an owner's index (webhooks_by_account, dlv_by_webhook). */
static int id_of_index_key(const MDB_val *k, size_t prefix_len, char id[SA_ID_MAX])
{
	size_t n = k->mv_size - prefix_len;

	if (n == 0 || n >= SA_ID_MAX)
		return SA_STORE_EIO;
	memcpy(id, (const char *)k->mv_data + prefix_len, n);
	id[n] = '\0';
	return SA_STORE_OK;
}

/* The webhook (ENOTFOUND unless it is account_id's), its deliveries first. */
static int webhook_delete_txn(struct sa_store *st, MDB_txn *txn, const char *account_id, const char *webhook_id)
{
	struct sa_webhook w;
	struct key k, prefix = { .len = 0 }, first;
	char id[SA_ID_MAX];
	int rc = webhook_get_txn(st, txn, webhook_id, &w);

	OPENSSL_cleanse(w.secret, sizeof w.secret);
	if (rc == SA_STORE_OK && strcmp(w.account_id, account_id) != 0)
		rc = SA_STORE_ENOTFOUND;
	if (rc == SA_STORE_OK) {
		key_str(&prefix, webhook_id);
		key_sep(&prefix);
	}
	/* a delivery at a time, from the first: the walk's cursor must not see its own deletes */
	while (rc == SA_STORE_OK && first_with_prefix(st, txn, DB_DLV_BY_WEBHOOK, &prefix, &first) == SA_STORE_OK) {
		MDB_val fk = key_val(&first);
		rc = id_of_index_key(&fk, prefix.len, id);
		if (rc == SA_STORE_OK)
			rc = dlv_remove(st, txn, id);
		if (rc == SA_STORE_OK)   /* an index entry whose delivery is gone */
			(void)db_del(st, txn, DB_DLV_BY_WEBHOOK, key_val(&first));
	}
	wh_account_key(&k, account_id, webhook_id);
	if (rc == SA_STORE_OK)
		rc = db_del(st, txn, DB_WH_BY_ACCOUNT, key_val(&k));
	if (rc == SA_STORE_OK)
		rc = db_del(st, txn, DB_WEBHOOKS, str_val(webhook_id));
	return rc;
}

int sa_store_webhook_delete(struct sa_store *st, const char *account_id, const char *webhook_id)
{
	MDB_txn *txn;
	int rc = wr_begin(st, ENV_MAIN, &txn, true);

	if (rc != SA_STORE_OK)
		return rc;
	return wr_end(st, ENV_MAIN, txn, webhook_delete_txn(st, txn, account_id, webhook_id));
}

struct wh_walk {
	sa_store_webhook_cb cb;
	void *arg;
	size_t prefix_len;
};

static int wh_walk_fn(struct sa_store *st, MDB_txn *txn, const MDB_val *k, const MDB_val *v, void *arg)
{
	struct wh_walk *ww = arg;
	struct sa_webhook w;
	char id[SA_ID_MAX];
	int rc = id_of_index_key(k, ww->prefix_len, id);

	if (rc == SA_STORE_OK)
		rc = webhook_get_txn(st, txn, id, &w);
	if (rc == SA_STORE_ENOTFOUND)
		return SA_STORE_OK;
	if (rc != SA_STORE_OK)
		return rc;
	rc = ww->cb(&w, ww->arg) ? WALK_STOP : SA_STORE_OK;
	OPENSSL_cleanse(w.secret, sizeof w.secret);
	return rc;
}

/* Where a page after `after` starts in an index of "<owner>\0<id>" keys:
 * just past that key, which must exist. */
static int index_after(struct sa_store *st, MDB_txn *txn, int db, const struct key *prefix, const char *after,
                       struct key *start)
{
	*start = *prefix;
	if (after == NULL || after[0] == '\0')
		return SA_STORE_OK;
	if (strlen(after) >= SA_ID_MAX)
		return SA_STORE_EINVAL;
	key_str(start, after);
	if (!db_has(st, txn, db, key_val(start)))
		return SA_STORE_EINVAL;
	key_sep(start);   /* the smallest key past it: ids never hold a NUL */
	return SA_STORE_OK;
}

/* A page of an "<owner>\0<id>" index (webhooks of an account, deliveries
 * of a webhook), from after `after`, each entry to fn. */
static int index_walk_after(struct sa_store *st, int db, const char *owner, const char *after, walk_fn fn,
                            void *arg)
{
	struct key prefix = { .len = 0 }, start;
	MDB_txn *txn;

	if (!id_ok(owner) || !st->sh->webhooks)
		return after && after[0] ? SA_STORE_EINVAL : SA_STORE_OK;
	key_str(&prefix, owner);
	key_sep(&prefix);
	int rc = rd_own_begin(st, ENV_MAIN, &txn);
	if (rc != SA_STORE_OK)
		return rc;
	rc = index_after(st, txn, db, &prefix, after, &start);
	if (rc == SA_STORE_OK)
		rc = walk_range(st, txn, db, &start, &prefix, fn, arg);
	return rd_own_end(st, ENV_MAIN, txn, rc);
}

int sa_store_webhook_list_after(struct sa_store *st, const char *account_id, const char *after_id,
                                sa_store_webhook_cb cb, void *arg)
{
	struct wh_walk ww = { cb, arg, account_id ? strlen(account_id) + 1 : 0 };

	return index_walk_after(st, DB_WH_BY_ACCOUNT, account_id, after_id, wh_walk_fn, &ww);
}

int sa_store_webhook_each(struct sa_store *st, sa_store_webhook_cb cb, void *arg)
{
	struct wh_each we = { cb, arg };
	struct key all = { .len = 0 };
	MDB_txn *txn;

	if (!st->sh->webhooks)
		return SA_STORE_OK;
	int rc = rd_own_begin(st, ENV_MAIN, &txn);
	if (rc != SA_STORE_OK)
		return rc;
	return rd_own_end(st, ENV_MAIN, txn, walk_prefix(st, txn, DB_WEBHOOKS, &all, wh_each_fn, &we));
}

int sa_store_webhook_count(struct sa_store *st, uint64_t *n)
{
	MDB_stat ms;
	MDB_txn *txn;

	*n = 0;
	if (!st->sh->webhooks)
		return SA_STORE_OK;
	int rc = rd_begin(st, ENV_MAIN, &txn);
	if (rc != SA_STORE_OK)
		return rc;
	rc = note_err(st, mdb_stat(txn, st->sh->dbi[DB_WEBHOOKS], &ms));
	if (rc == SA_STORE_OK)
		*n = ms.ms_entries;
	return rd_end(st, ENV_MAIN, rc);
}

void sa_store_delivery_ids_random(struct sa_store *st)
{
	st->sh->dlv_random = true;
}

/* The next id of this store's sequence, or (fleet mode) a random one not taken here. */
static int dlv_id_make(struct sa_store *st, MDB_txn *txn, char id[SA_ID_MAX])
{
	uint64_t seq;
	unsigned char rnd[8];
	int rc = SA_STORE_OK;

	do {
		if (!st->sh->dlv_random)
			rc = meta_bump(st, txn, "dlv_seq", &seq);
		else if (RAND_bytes(rnd, sizeof rnd) != 1)
			rc = SA_STORE_EIO;
		else
			for (size_t i = seq = 0; i < sizeof rnd; i++)
				seq = seq << 8 | rnd[i];
		if (rc == SA_STORE_OK)
			snprintf(id, SA_ID_MAX, "dlv_%016llx", (unsigned long long)seq);
	} while (rc == SA_STORE_OK && st->sh->dlv_random && db_has(st, txn, DB_DELIVERIES, str_val(id)));
	return rc;
}

/* One pending delivery, due at now. */
static int dlv_add_one(struct sa_store *st, MDB_txn *txn, const char *webhook_id, const char *event,
                       const unsigned char *buf, size_t len, int64_t now, char id[SA_ID_MAX])
{
	struct key k;
	int rc = dlv_id_make(st, txn, id);

	if (rc != SA_STORE_OK)
		return rc;
	struct dlv_rec *r = (struct dlv_rec *)(void *)buf;
	snprintf(r->webhook_id, sizeof r->webhook_id, "%s", webhook_id);
	rc = db_put(st, txn, DB_DELIVERIES, str_val(id), mem_val(buf, len));
	dlv_webhook_key(&k, webhook_id, id);
	if (rc == SA_STORE_OK)
		rc = db_put(st, txn, DB_DLV_BY_WEBHOOK, key_val(&k), mem_val("", 0));
	dlv_due_key(&k, now, id);
	if (rc == SA_STORE_OK)
		rc = db_put(st, txn, DB_DLV_DUE, key_val(&k), mem_val("", 0));
	return rc;
}

int sa_store_delivery_add(struct sa_store *st, const char (*webhook_ids)[SA_ID_MAX], unsigned n, const char *event,
                          const char *payload, size_t payload_len, int64_t now, char (*ids)[SA_ID_MAX])
{
	struct dlv_rec r = { .status = SA_DLV_PENDING, .next_attempt_at = now, .created_at = now,
	                     .payload_len = (uint32_t)payload_len };
	char id[SA_ID_MAX];
	MDB_txn *txn;

	if (!st->sh->webhooks)
		return SA_STORE_EIO;
	if (payload_len > UINT32_MAX / 2 || strlen(event) >= sizeof r.event)
		return SA_STORE_EINVAL;
	snprintf(r.event, sizeof r.event, "%s", event);
	unsigned char *buf = malloc(sizeof r + payload_len);
	if (buf == NULL)
		return SA_STORE_EIO;
	memcpy(buf, &r, sizeof r);
	memcpy(buf + sizeof r, payload, payload_len);
	int rc = wr_begin(st, ENV_MAIN, &txn, true);
	if (rc != SA_STORE_OK) {
		free(buf);
		return rc;
	}
	rc = room_for_new(st, ENV_MAIN);
	for (unsigned i = 0; i < n && rc == SA_STORE_OK; i++) {
		rc = dlv_add_one(st, txn, webhook_ids[i], event, buf, sizeof r + payload_len, now, id);
		if (rc == SA_STORE_OK && ids != NULL)
			memcpy(ids[i], id, SA_ID_MAX);
	}
	free(buf);
	return wr_end(st, ENV_MAIN, txn, rc);
}

static void dlv_from_rec(const struct dlv_rec *r, const char *id, struct sa_delivery *d)
{
	memset(d, 0, sizeof *d);
	snprintf(d->id, sizeof d->id, "%s", id);
	snprintf(d->webhook_id, sizeof d->webhook_id, "%.*s", SA_ID_MAX - 1, r->webhook_id);
	snprintf(d->event, sizeof d->event, "%s", r->event);
	d->status = r->status;
	d->attempts = r->attempts;
	d->last_status_code = r->last_status_code;
	snprintf(d->last_error, sizeof d->last_error, "%s", r->last_error);
	d->next_attempt_at = r->next_attempt_at;
	d->created_at = r->created_at;
	d->payload_len = r->payload_len;
}

int sa_store_delivery_get(struct sa_store *st, const char *delivery_id, struct sa_delivery *out)
{
	struct dlv_rec r;
	MDB_txn *txn;
	MDB_val v;
	int rc = rd_begin(st, ENV_MAIN, &txn);

	if (rc != SA_STORE_OK)
		return rc;
	rc = dlv_rec_get(st, txn, delivery_id, &r, &v);
	if (rc == SA_STORE_OK) {
		dlv_from_rec(&r, delivery_id, out);
		if ((out->payload = malloc(r.payload_len + 1)) == NULL) {
			rc = SA_STORE_EIO;
		} else {
			memcpy(out->payload, (const char *)v.mv_data + sizeof r, r.payload_len);
			out->payload[r.payload_len] = '\0';
		}
	}
	return rd_end(st, ENV_MAIN, rc);
}

static int dlv_update_txn(struct sa_store *st, MDB_txn *txn, const struct sa_delivery *d)
{
	struct dlv_rec r;
	struct key k;
	MDB_val v;
	int rc = dlv_rec_get(st, txn, d->id, &r, &v);

	if (rc != SA_STORE_OK)
		return rc;
	unsigned char *buf = malloc(v.mv_size);
	if (buf == NULL)
		return SA_STORE_EIO;
	memcpy(buf, v.mv_data, v.mv_size);
	if (r.status == SA_DLV_PENDING) {
		dlv_due_key(&k, r.next_attempt_at, d->id);
		rc = db_del(st, txn, DB_DLV_DUE, key_val(&k));
		rc = rc == SA_STORE_ENOTFOUND ? SA_STORE_OK : rc;
	}
	r.status = d->status;
	r.attempts = d->attempts;
	r.last_status_code = d->last_status_code;
	snprintf(r.last_error, sizeof r.last_error, "%s", d->last_error);
	r.next_attempt_at = d->status == SA_DLV_PENDING ? d->next_attempt_at : 0;
	memcpy(buf, &r, sizeof r);
	if (rc == SA_STORE_OK)
		rc = db_put(st, txn, DB_DELIVERIES, str_val(d->id), mem_val(buf, v.mv_size));
	free(buf);
	if (rc == SA_STORE_OK && r.status == SA_DLV_PENDING) {
		dlv_due_key(&k, r.next_attempt_at, d->id);
		rc = db_put(st, txn, DB_DLV_DUE, key_val(&k), mem_val("", 0));
	}
	return rc;
}

int sa_store_delivery_update(struct sa_store *st, const struct sa_delivery *d)
{
	MDB_txn *txn;
	int rc = wr_begin(st, ENV_MAIN, &txn, true);

	if (rc != SA_STORE_OK)
		return rc;
	return wr_end(st, ENV_MAIN, txn, dlv_update_txn(st, txn, d));
}

struct due_walk {
	int64_t now;
	char (*ids)[SA_ID_MAX];
	unsigned max, n;
	int64_t next;
};

static int due_walk_fn(struct sa_store *st, MDB_txn *txn, const MDB_val *k, const MDB_val *v, void *arg)
{
	struct due_walk *dw = arg;
	const unsigned char *b = k->mv_data;
	uint64_t t = 0;

	if (k->mv_size < 10 || k->mv_size - 9 >= SA_ID_MAX)
		return SA_STORE_OK;
	for (int i = 0; i < 8; i++)
		t = t << 8 | b[i];
	int64_t at = (int64_t)(t ^ (UINT64_C(1) << 63));
	if (at > dw->now || dw->n == dw->max) {
		dw->next = at > dw->now ? at : dw->now;
		return WALK_STOP;
	}
	memcpy(dw->ids[dw->n], b + 9, k->mv_size - 9);
	dw->ids[dw->n++][k->mv_size - 9] = '\0';
	return SA_STORE_OK;
}

int sa_store_delivery_due(struct sa_store *st, int64_t now, char (*ids)[SA_ID_MAX], unsigned max, unsigned *n,
                          int64_t *next)
{
	struct due_walk dw = { .now = now, .ids = ids, .max = max, .next = INT64_MAX };
	struct key all = { .len = 0 };
	MDB_txn *txn;

	*n = 0;
	*next = INT64_MAX;
	if (!st->sh->webhooks)
		return SA_STORE_OK;
	int rc = rd_own_begin(st, ENV_MAIN, &txn);
	if (rc != SA_STORE_OK)
		return rc;
	rc = walk_prefix(st, txn, DB_DLV_DUE, &all, due_walk_fn, &dw);
	*n = dw.n;
	*next = dw.next;
	return rd_own_end(st, ENV_MAIN, txn, rc);
}

struct dlv_walk {
	sa_store_delivery_cb cb;
	void *arg;
	size_t prefix_len;
};

static int dlv_walk_fn(struct sa_store *st, MDB_txn *txn, const MDB_val *k, const MDB_val *v, void *arg)
{
	struct dlv_walk *dw = arg;
	struct sa_delivery d;
	struct dlv_rec r;
	MDB_val rv;
	char id[SA_ID_MAX];
	int rc = id_of_index_key(k, dw->prefix_len, id);

	if (rc == SA_STORE_OK)
		rc = dlv_rec_get(st, txn, id, &r, &rv);
	if (rc == SA_STORE_ENOTFOUND)
		return SA_STORE_OK;
	if (rc != SA_STORE_OK)
		return rc;
	dlv_from_rec(&r, id, &d);
	return dw->cb(&d, dw->arg) ? WALK_STOP : SA_STORE_OK;
}

int sa_store_delivery_list_after(struct sa_store *st, const char *webhook_id, const char *after_id,
                                 sa_store_delivery_cb cb, void *arg)
{
	struct dlv_walk dw = { cb, arg, webhook_id ? strlen(webhook_id) + 1 : 0 };

	return index_walk_after(st, DB_DLV_BY_WEBHOOK, webhook_id, after_id, dlv_walk_fn, &dw);
}

/* The deliveries table is in creation order (ids are a sequence): the
 * oldest come first, and the walk stops at the first one too young. A
 * pending delivery among the old ones stops it too (it is still running). */
int sa_store_delivery_prune(struct sa_store *st, int64_t before, unsigned max, unsigned *removed)
{
	struct key all = { .len = 0 }, first;
	struct dlv_rec r;
	char id[SA_ID_MAX];
	MDB_txn *txn;
	MDB_val v;

	*removed = 0;
	if (!st->sh->webhooks)
		return SA_STORE_OK;
	int rc = wr_begin(st, ENV_MAIN, &txn, true);
	if (rc != SA_STORE_OK)
		return rc;
	while (rc == SA_STORE_OK && *removed < max &&
	       first_with_prefix(st, txn, DB_DELIVERIES, &all, &first) == SA_STORE_OK) {
		if (first.len >= SA_ID_MAX)
			break;
		memcpy(id, first.b, first.len);
		id[first.len] = '\0';
		rc = dlv_rec_get(st, txn, id, &r, &v);
		if (rc != SA_STORE_OK || r.created_at >= before || r.status == SA_DLV_PENDING)
			break;
		rc = dlv_remove(st, txn, id);
		(*removed)++;
	}
	return wr_end(st, ENV_MAIN, txn, rc);
}
