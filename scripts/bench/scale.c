/* scale.c: fills a store with many credentials for scripts/bench/scale, through the store's own
 * API (the HA1s, indexes and records are those `sipauthctl credential create` writes).
 *
 *   scale STORE_DIR DOMAIN COUNT USERS_CSV
 *
 * Makes one account and one trunk, then COUNT credentials u0000001 ... with the password
 * pw-<n>-bench-secret, and writes a sipp injection file (USERS_CSV: SEQUENTIAL, one
 * "user;[authentication username=user password=secret]" line each: test/sipp/pbx_register_users.xml). Prints the trunk id. Meant for a store on tmpfs: each
 * credential is written durably (one fsync each), as the API writes it.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store.h"

static void die(const char *what, const char *why)
{
	fprintf(stderr, "scale: %s%s%s\n", what, why && why[0] ? ": " : "", why ? why : "");
	exit(1);
}

int main(int argc, char **argv)
{
	if (argc != 5)
		die("usage: scale STORE_DIR DOMAIN COUNT USERS_CSV", NULL);
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
