/* durability_writer.c: writes to a store from a process of its own, for the integration tests:
 * credentials one by one (durability.sh, storage.sh), bindings until the runtime file is full
 * (storage.sh), a write transaction held by a stopped administrator's process (admin_lock.sh), or
 * the credential change log cut short (credential_index.sh). */
#include <lmdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "store.h"

#define PASSWORD "durability-test-password-0123"

static void usage(void)
{
	fprintf(stderr, "usage: durability_writer STORE_DIR TRUNK_ID COUNT      credentials (COUNT 0: until refused)\n"
	                "       durability_writer --bindings STORE_DIR CRED_ID    bindings until the store refuses one\n"
	                "       durability_writer --hold STORE_DIR                open as sipauthctl does, begin a write\n"
	                "                                                          transaction, print \"holding\", stop\n"
	                "       durability_writer --drop-changes STORE_DIR        drop every entry of the credential\n"
	                "                                                          change log but the newest (as 100 000\n"
	                "                                                          later writes would), print how many\n");
}

/* Prints each id only once its create returned OK: the acknowledgement. */
static int credentials(struct sa_store *st, const char *trunk_id, long count)
{
	struct sa_credential cr;
	char user[SA_USERNAME_MAX + 1], why[160];

	for (long i = 0; count == 0 || i < count; i++) {
		snprintf(user, sizeof user, "dw-%ld-%ld", (long)getpid(), i);
		int rc = sa_store_credential_create(st, trunk_id, user, PASSWORD, strlen(PASSWORD), 0,
		                                    (int64_t)time(NULL), &cr, why, sizeof why);
		if (rc != SA_STORE_OK) {
			fprintf(stderr, "durability_writer: create %s: %s (%s)\n", user, sa_store_strerror(rc), why);
			return 1;
		}
		if (printf("%s\n", cr.id) < 0 || fflush(stdout) != 0)
			return 1;
	}
	return 0;
}

/* Another process writing the runtime file (only sipauthctl must not):
 * bindings of one credential, valid for a day, each contact printed once
 * stored, until a write is refused. */
static int bindings(struct sa_store *st, const char *cred_id)
{
	int64_t now = (int64_t)time(NULL);
	struct sa_binding b;
	int rc;

	for (long i = 0;; i++) {
		memset(&b, 0, sizeof b);
		snprintf(b.cred_id, sizeof b.cred_id, "%s", cred_id);
		snprintf(b.contact, sizeof b.contact, "sip:filler-%ld-%ld@192.0.2.99:5060", (long)getpid(), i);
		snprintf(b.source, sizeof b.source, "192.0.2.99");
		snprintf(b.transport, sizeof b.transport, "udp");
		b.registered_at = b.updated_at = now;
		b.expires_at = now + 86400;
		if ((rc = sa_store_binding_put(st, &b, 0)) != SA_STORE_OK)
			break;
		if (printf("%s\n", b.contact) < 0 || fflush(stdout) != 0)
			return 1;
	}
	fprintf(stderr, "durability_writer: binding: %s\n", sa_store_strerror(rc));
	return 1;
}

/* data.mdb's environment opened directly, as a writer of the store opens it
 * (MDB_WRITEMAP: writers must agree), at the store's own map size: a smaller
 * one would cut data.mdb under the daemon's map. The store is opened and
 * closed first for that size (LMDB opens an environment once per process). */
static int raw_open(const char *dir, MDB_env **env)
{
	struct sa_store_opts o = { .flags = 0, .map_size = 0 };
	struct sa_store_usage u;
	struct sa_store *st;
	char why[256];

	if (sa_store_open_with(&st, dir, &o, why, sizeof why) != SA_STORE_OK) {
		fprintf(stderr, "durability_writer: open %s: %s\n", dir, why);
		return -1;
	}
	int rc = sa_store_usage(st, &u);
	sa_store_close(st);
	if (rc != SA_STORE_OK || mdb_env_create(env) != 0 || mdb_env_set_maxdbs(*env, 64) != 0 ||
	    mdb_env_set_mapsize(*env, (size_t)u.map_size) != 0 || mdb_env_open(*env, dir, MDB_WRITEMAP | MDB_NOTLS, 0600) != 0) {
		fprintf(stderr, "durability_writer: cannot open %s\n", dir);
		return -1;
	}
	return 0;
}

/* An administrator's process stopped inside a write transaction: the main
 * environment's writer lock taken and kept while this process stops itself. */
static int hold(const char *dir)
{
	MDB_env *env;
	MDB_txn *txn;

	if (raw_open(dir, &env) < 0)
		return 1;
	if (mdb_txn_begin(env, NULL, 0, &txn) != 0) {
		fprintf(stderr, "durability_writer: cannot begin a write transaction in %s\n", dir);
		return 1;
	}
	if (printf("holding\n") < 0 || fflush(stdout) != 0)
		return 1;
	raise(SIGSTOP);
	mdb_txn_abort(txn);
	mdb_env_close(env);
	return 0;
}

/* A daemon's credential index behind what the change log keeps, without
 * 100 000 writes: every entry of cred_changes but the newest goes. */
static int drop_changes(const char *dir)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_cursor *cur;
	MDB_val k, v;
	MDB_stat ms;
	long dropped = 0;

	if (raw_open(dir, &env) < 0)
		return 1;
	if (mdb_txn_begin(env, NULL, 0, &txn) != 0) {
		fprintf(stderr, "durability_writer: cannot begin a write transaction in %s\n", dir);
		mdb_env_close(env);
		return 1;
	}
	int rc = mdb_dbi_open(txn, "cred_changes", 0, &dbi);
	if (rc == 0)
		rc = mdb_stat(txn, dbi, &ms);
	if (rc == 0)
		rc = mdb_cursor_open(txn, dbi, &cur);
	for (size_t left = rc == 0 ? ms.ms_entries : 0; rc == 0 && left > 1; left--, dropped++) {
		rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
		if (rc == 0)
			rc = mdb_cursor_del(cur, 0);
	}
	int end = rc == 0 ? mdb_txn_commit(txn) : (mdb_txn_abort(txn), rc);
	mdb_env_close(env);
	if (end != 0) {
		fprintf(stderr, "durability_writer: cred_changes in %s: %s\n", dir, mdb_strerror(end));
		return 1;
	}
	printf("%ld\n", dropped);
	return 0;
}

int main(int argc, char **argv)
{
	struct sa_store_opts o = { .flags = SA_STORE_RUNTIME, .map_size = 0 };
	struct sa_store *st;
	char why[256];
	int rc;

	if (argc == 3 && strcmp(argv[1], "--hold") == 0)
		return hold(argv[2]);
	if (argc == 3 && strcmp(argv[1], "--drop-changes") == 0)
		return drop_changes(argv[2]);
	if (argc == 4 && strcmp(argv[1], "--bindings") == 0) {
		if (sa_store_open_with(&st, argv[2], &o, why, sizeof why) != SA_STORE_OK) {
			fprintf(stderr, "durability_writer: open %s: %s\n", argv[2], why);
			return 1;
		}
		rc = bindings(st, argv[3]);
		sa_store_close(st);
		return rc;
	}
	if (argc != 4 || argv[1][0] == '-') {
		usage();
		return 2;
	}
	rc = sa_store_open(&st, argv[1], 0);
	if (rc != SA_STORE_OK) {
		fprintf(stderr, "durability_writer: open %s: %s\n", argv[1], sa_store_strerror(rc));
		return 1;
	}
	rc = credentials(st, argv[2], strtol(argv[3], NULL, 10));
	sa_store_close(st);
	return rc;
}
