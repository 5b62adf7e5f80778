/* durability_writer.c: creates credentials one by one, printing each id only once its create returned OK. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "store.h"

#define PASSWORD "durability-test-password-0123"

static int write_loop(struct sa_store *st, const char *trunk_id, long count)
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
		/* the acknowledgement: only now may the id be reported */
		if (printf("%s\n", cr.id) < 0 || fflush(stdout) != 0)
			return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct sa_store *st;
	int rc;

	if (argc != 4) {
		fprintf(stderr, "usage: durability_writer STORE_DIR TRUNK_ID COUNT (0 = until killed)\n");
		return 2;
	}
	rc = sa_store_open(&st, argv[1], 0);
	if (rc != SA_STORE_OK) {
		fprintf(stderr, "durability_writer: open %s: %s\n", argv[1], sa_store_strerror(rc));
		return 1;
	}
	rc = write_loop(st, argv[2], strtol(argv[3], NULL, 10));
	sa_store_close(st);
	return rc;
}
