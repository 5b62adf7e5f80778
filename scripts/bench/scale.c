/* scale.c: fills a store with many credentials for scripts/bench/scale, through the store's own
 * API (the HA1s, indexes and records are those `sipauthctl credential create` writes).
 *
 *   scale STORE_DIR DOMAIN COUNT USERS_CSV
 *
 * Makes one account and one trunk, then COUNT credentials u0000001 ... with the password
 * pw-<n>-bench-secret, and writes a sipp injection file (USERS_CSV: SEQUENTIAL, one
 * "user;[authentication username=user password=secret]" line each: test/sipp/pbx_register_users.xml). Prints the trunk id. Meant for a store on tmpfs: each
 * credential is written durably (one fsync each), as the API writes it.
 *
 *   scale lookups STORE_DIR TRUNK DRAWS_CSV N GAP_US
 *
 * Where a REGISTER's store time goes, in this process with nothing else around: for the first
 * N usernames of DRAWS_CSV (a file as above), what the registrar asks of the store per
 * authenticated REGISTER, each step timed alone: the credential looked up by username
 * (sa_store_credential_find, from the credential index, as the daemon has it), its bindings listed (sa_store_binding_list_for) and one binding
 * written (sa_store_binding_apply_for: a new one the first pass, a refresh the second). GAP_US
 * microseconds of sleep between two REGISTERs (not timed) stand for the idle time between
 * requests that a daemon at a few thousand per second has: after it the caches and the TLB
 * have lost what the last request brought in. Prints, for the second pass: "find LIST write"
 * in microseconds per REGISTER (means).
 *
 *   scale sweep STORE_DIR TRUNK DRAWS_CSV N
 *
 * What schema 6 moves to the sweep: for the first N usernames of DRAWS_CSV, a binding of its own
 * (a contact no other step uses) written to expire in 60 s, then refreshed to expire in 7200 s
 * (the refresh leaves its expiry entry at 60 s); then the sweep 100 s on (as the daemon's store
 * thread runs it, in batches of 1 000) moves the N entries, and the sweep 7200 s on removes
 * every binding of the store. Prints "refresh move remove N removed count": microseconds per
 * refresh, per entry moved and per binding removed, the counts, and microseconds per due entry
 * of the live count taken before the sweep (sipauthd_registrations_active reads each one's record).
 *
 *   scale inbound STORE_DIR TRUNK USERS_CSV N CALLS
 *
 * An inbound call's lookup on a trunk with many registrations: a binding for each of the first N
 * usernames of USERS_CSV (each written after the one before), then the trunk's latest live binding
 * looked up CALLS times (sa_registrar_lookup, as the daemon does for each request from the
 * gateway), and the trunk's bindings walked as the lookup did before schema 7 (10 times at
 * most). Prints "write lookup walk N": microseconds per binding written, per lookup and per walk.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "registrar.h"
#include "store.h"

static void die(const char *what, const char *why)
{
	fprintf(stderr, "scale: %s%s%s\n", what, why && why[0] ? ": " : "", why ? why : "");
	exit(1);
}

static double mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int count_cb(const struct sa_binding *b, void *arg)
{
	(void)b;
	++*(unsigned *)arg;
	return 0;
}

static int lookups(char **argv)
{
	struct sa_store *st;
	char why[256] = "";
	struct sa_store_opts o = { .flags = SA_STORE_RUNTIME };
	if (sa_store_open_with(&st, argv[2], &o, why, sizeof(why)) != 0)
		die("cannot open the store", why);
	if (sa_store_credential_index(st) != 0)   /* as the daemon finds credentials */
		die("cannot index the credentials", NULL);
	const char *trunk = argv[3];
	long n = atol(argv[5]), gap = atol(argv[6]);
	if (n < 1 || n > 1000000 || gap < 0)
		die("N must be 1 to 1000000, GAP_US >= 0", NULL);
	FILE *f = fopen(argv[4], "r");
	if (!f)
		die("cannot read", argv[4]);
	char (*user)[32] = calloc((size_t)n, sizeof *user), line[256];
	long have = 0;
	while (have < n && fgets(line, sizeof(line), f))
		if (sscanf(line, "%31[^;];", user[have]) == 1 && line[0] == 'u')
			have++;
	fclose(f);
	if (have < n)
		die("fewer usernames than N in", argv[4]);
	double t_find = 0, t_list = 0, t_write = 0;
	for (int pass = 0; pass < 2; pass++) {
		t_find = t_list = t_write = 0;
		for (long i = 0; i < n; i++) {
			struct sa_credential c;
			struct sa_binding b = { .source_port = 5099, .cseq = (uint32_t)pass + 1, .password_version = 1 };
			unsigned listed = 0;
			if (gap > 0)
				usleep((useconds_t)gap);
			double t0 = mono_us();
			if (sa_store_credential_find(st, trunk, user[i], &c) != 0)
				die("no credential for", user[i]);
			double t1 = mono_us();
			if (sa_store_binding_list_for(st, &c, count_cb, &listed) != 0)
				die("cannot list the bindings of", user[i]);
			double t2 = mono_us();
			snprintf(b.cred_id, sizeof(b.cred_id), "%s", c.id);
			snprintf(b.trunk_id, sizeof(b.trunk_id), "%s", trunk);
			snprintf(b.contact, sizeof(b.contact), "sip:%s@127.0.0.1:5099", user[i]);
			snprintf(b.source, sizeof(b.source), "127.0.0.1");
			snprintf(b.transport, sizeof(b.transport), "udp");
			snprintf(b.call_id, sizeof(b.call_id), "lookups-%ld", i);
			b.registered_at = b.updated_at = (int64_t)time(NULL);
			b.expires_at = b.updated_at + 3600;
			struct sa_binding_change ch = { .contact = b.contact, .b = &b };
			if (sa_store_binding_apply_for(st, &c, &ch, 1, 0) != 0)
				die("cannot write a binding for", user[i]);
			double t3 = mono_us();
			sa_credential_wipe(&c);
			t_find += t1 - t0, t_list += t2 - t1, t_write += t3 - t2;
		}
	}
	printf("%.2f %.2f %.2f\n", t_find / (double)n, t_list / (double)n, t_write / (double)n);
	free(user);
	sa_store_close(st);
	return 0;
}

static int sweep(char **argv)
{
	struct sa_store *st;
	char why[256] = "";
	struct sa_store_opts o = { .flags = SA_STORE_RUNTIME };
	if (sa_store_open_with(&st, argv[2], &o, why, sizeof(why)) != 0)
		die("cannot open the store", why);
	long n = atol(argv[5]);
	if (n < 1 || n > 1000000)
		die("N must be 1 to 1000000", NULL);
	FILE *f = fopen(argv[4], "r");
	if (!f)
		die("cannot read", argv[4]);
	char line[256], user[32];
	struct sa_credential *c = calloc((size_t)n, sizeof *c);
	long have = 0;
	while (have < n && fgets(line, sizeof(line), f))
		if (line[0] == 'u' && sscanf(line, "%31[^;];", user) == 1 &&
		    sa_store_credential_find(st, argv[3], user, &c[have]) == 0)
			have++;
	fclose(f);
	if (have < n)
		die("fewer credentials than N in", argv[4]);
	int64_t now = (int64_t)time(NULL);
	double t_refresh = 0;
	for (int pass = 0; pass < 2; pass++)
		for (long i = 0; i < n; i++) {
			struct sa_binding b = { .source_port = 5098, .cseq = (uint32_t)pass + 1, .password_version = 1 };
			snprintf(b.cred_id, sizeof(b.cred_id), "%s", c[i].id);
			snprintf(b.trunk_id, sizeof(b.trunk_id), "%s", argv[3]);
			snprintf(b.contact, sizeof(b.contact), "sip:%s@127.0.0.1:5098", c[i].username);
			snprintf(b.source, sizeof(b.source), "127.0.0.1");
			snprintf(b.transport, sizeof(b.transport), "udp");
			snprintf(b.call_id, sizeof(b.call_id), "sweep-%ld", i);
			b.registered_at = b.updated_at = now;
			b.expires_at = now + (pass == 0 ? 60 : 7200);
			struct sa_binding_change ch = { .contact = b.contact, .b = &b };
			double t0 = mono_us();
			if (sa_store_binding_apply_for(st, &c[i], &ch, 1, 0) != 0)
				die("cannot write a binding for", c[i].username);
			if (pass == 1)
				t_refresh += mono_us() - t0;
		}
	uint64_t live = 0;
	double t0 = mono_us();   /* the live count reads the record of each due entry */
	if (sa_store_binding_count(st, now + 100, &live) != 0 || live < (uint64_t)n)
		die("the count before the sweep is wrong", NULL);
	double t_count = mono_us() - t0;
	t0 = mono_us();
	int removed = sa_store_binding_expire(st, now + 100);   /* due entries, none expired: all moved */
	double t_move = mono_us() - t0;
	if (removed != 0)
		die("the first sweep removed bindings or failed", NULL);
	t0 = mono_us();
	removed = sa_store_binding_expire(st, now + 7201);
	double t_remove = mono_us() - t0;
	if (removed < 0)
		die("the second sweep failed", NULL);
	printf("%.2f %.2f %.2f %ld %d %.2f\n", t_refresh / (double)n, t_move / (double)n,
	       removed > 0 ? t_remove / removed : 0.0, n, removed, t_count / (double)n);
	for (long i = 0; i < n; i++)
		sa_credential_wipe(&c[i]);
	free(c);
	sa_store_close(st);
	return 0;
}

struct walk_latest {
	int64_t now;
	struct sa_binding latest;
};

static int walk_latest_cb(const struct sa_binding *b, void *arg)
{
	struct walk_latest *wl = arg;
	if (b->expires_at > wl->now && b->updated_at >= wl->latest.updated_at)
		wl->latest = *b;
	return 0;
}

static int inbound(char **argv)
{
	struct sa_store *st;
	char why[256] = "";
	struct sa_store_opts o = { .flags = SA_STORE_RUNTIME };
	if (sa_store_open_with(&st, argv[2], &o, why, sizeof(why)) != 0)
		die("cannot open the store", why);
	long n = atol(argv[5]), calls = atol(argv[6]);
	if (n < 1 || n > 1000000 || calls < 1)
		die("N must be 1 to 1000000, CALLS at least 1", NULL);
	FILE *f = fopen(argv[4], "r");
	if (!f)
		die("cannot read", argv[4]);
	char line[256], user[32];
	int64_t now = (int64_t)time(NULL);
	long have = 0;
	double t_write = 0;
	while (have < n && fgets(line, sizeof(line), f)) {
		struct sa_credential c;
		if (line[0] != 'u' || sscanf(line, "%31[^;];", user) != 1 ||
		    sa_store_credential_find(st, argv[3], user, &c) != 0)
			continue;
		struct sa_binding b = { .source_port = 5097, .cseq = 1, .password_version = 1 };
		snprintf(b.cred_id, sizeof(b.cred_id), "%s", c.id);
		snprintf(b.trunk_id, sizeof(b.trunk_id), "%s", argv[3]);
		snprintf(b.contact, sizeof(b.contact), "sip:%s@127.0.0.1:5097", c.username);
		snprintf(b.source, sizeof(b.source), "127.0.0.1");
		snprintf(b.transport, sizeof(b.transport), "udp");
		snprintf(b.call_id, sizeof(b.call_id), "inbound-%ld", have);
		b.registered_at = b.updated_at = now - n + have;   /* the last one written is the latest */
		b.expires_at = now + 3600;
		struct sa_binding_change ch = { .contact = b.contact, .b = &b };
		double t0 = mono_us();
		if (sa_store_binding_apply_for(st, &c, &ch, 1, 0) != 0)
			die("cannot write a binding for", c.username);
		t_write += mono_us() - t0;
		sa_credential_wipe(&c);
		have++;
	}
	fclose(f);
	if (have < n)
		die("fewer credentials than N in", argv[4]);
	struct sa_binding latest;
	int got;
	double t0 = mono_us();
	for (long i = 0; i < calls; i++)
		if (sa_registrar_lookup(st, argv[3], now, NULL, NULL, &latest, 1, &got) != 0)
			die("the trunk has no live binding", NULL);
	double t_lookup = (mono_us() - t0) / (double)calls;
	char want[64];
	snprintf(want, sizeof(want), "inbound-%ld", n - 1);
	if (strcmp(latest.call_id, want) != 0)
		die("the lookup did not find the latest binding", latest.call_id);
	/* what the lookup did before schema 7: every binding of the trunk read */
	long walks = calls < 10 ? calls : 10;
	struct walk_latest wl = { .now = now };
	t0 = mono_us();
	for (long i = 0; i < walks; i++)
		if (sa_store_binding_list_trunk(st, argv[3], walk_latest_cb, &wl) != 0)
			die("cannot walk the trunk's bindings", NULL);
	double t_walk = (mono_us() - t0) / (double)walks;
	if (strcmp(wl.latest.call_id, want) != 0)
		die("the walk did not find the latest binding", wl.latest.call_id);
	printf("%.2f %.2f %.2f %ld\n", t_write / (double)n, t_lookup, t_walk, n);
	sa_store_close(st);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 7 && strcmp(argv[1], "lookups") == 0)
		return lookups(argv);
	if (argc == 6 && strcmp(argv[1], "sweep") == 0)
		return sweep(argv);
	if (argc == 7 && strcmp(argv[1], "inbound") == 0)
		return inbound(argv);
	if (argc != 5)
		die("usage: scale STORE_DIR DOMAIN COUNT USERS_CSV | scale lookups STORE_DIR TRUNK DRAWS_CSV N GAP_US | "
		    "scale sweep STORE_DIR TRUNK DRAWS_CSV N", NULL);
	long count = atol(argv[3]);
	if (count < 1 || count > 10000000)
		die("COUNT must be 1 to 10000000", NULL);
	struct sa_store *st;
	/* room for the credentials (about 1 KB each with their indexes) and some */
	struct sa_store_opts o = { .flags = SA_STORE_RUNTIME, .map_size = ((uint64_t)count * 2048 + (256u << 20)) };
	char why[256] = "";
	if (sa_store_open_with(&st, argv[1], &o, why, sizeof(why)) != 0)
		die("cannot open the store", why);
	int64_t now = (int64_t)time(NULL);
	struct sa_account acc;
	struct sa_trunk tr;
	if (sa_store_init(st, argv[2]) != 0 || sa_store_account_create(st, "scale", now, &acc) != 0 ||
	    sa_store_trunk_create(st, acc.id, "scale", now, &tr) != 0)
		die("cannot make the account and trunk", NULL);
	FILE *csv = fopen(argv[4], "w");
	if (!csv)
		die("cannot write", argv[4]);
	fprintf(csv, "SEQUENTIAL\n");
	for (long i = 1; i <= count; i++) {
		char user[32], pass[64];
		struct sa_credential c;
		snprintf(user, sizeof(user), "u%07ld", i);
		snprintf(pass, sizeof(pass), "pw-%ld-bench-secret", i);
		if (sa_store_credential_create(st, tr.id, user, pass, strlen(pass), 8, now, &c, why, sizeof(why)) != 0)
			die("cannot create a credential", why);
		fprintf(csv, "%s;[authentication username=%s password=%s]\n", user, user, pass);
		if (i % 100000 == 0)
			fprintf(stderr, "scale: %ld credentials\n", i);
	}
	if (fclose(csv) != 0)
		die("cannot write", argv[4]);
	sa_store_close(st);
	printf("%s\n", tr.id);
	return 0;
}
