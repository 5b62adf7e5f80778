/* sipauthctl.c: the admin tool: initialise the store, manage accounts, API keys, trunks and credentials. */
#include <errno.h>
#include <dirent.h>
#include <getopt.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "api.h"
#include "config.h"
#include "store.h"
#ifdef HAVE_LIBPQ
#include "pgstore.h"
/* --database: the same call on PostgreSQL (lib/pgstore) instead of LMDB */
#define VIA(c, pgcall, stcall) ((c)->pg != NULL ? (pgcall) : (stcall))
#else
#define VIA(c, pgcall, stcall) (stcall)
#endif

#define DEFAULT_STORE "/var/lib/sipauthd"
#define PASSWORD_READ_MAX 256   /* more than SA_PASSWORD_MAX plus "\r\n" */

/* exit statuses, documented in usage() */
enum {
	EXIT_OK = 0,
	EXIT_USAGE = 1,      /* bad usage or input that breaks a rule */
	EXIT_NOTFOUND = 2,   /* unknown account, trunk or credential */
	EXIT_CONFLICT = 3,   /* duplicate username; store already initialised */
	EXIT_NOTINIT = 4,    /* store not initialised or of another schema version */
	EXIT_IO = 5,         /* the store could not be opened, read or written (I/O, permission) */
	EXIT_CORRUPT = 6,    /* data.mdb is empty, truncated or damaged */
	EXIT_FULL = 7,       /* the store's map or the file system is full */
	EXIT_UNKNOWN = 8,    /* --database: the connection broke after a write was sent */
};

/* options, as bits in struct ctl.seen and in the command table */
enum {
	OPT_STORE = 1 << 0, OPT_MINLEN = 1 << 1, OPT_HELP = 1 << 2, OPT_DOMAIN = 1 << 3,
	OPT_NAME = 1 << 4, OPT_ACCOUNT = 1 << 5, OPT_TRUNK = 1 << 6, OPT_USERNAME = 1 << 7,
	OPT_PWSTDIN = 1 << 8, OPT_ID = 1 << 9, OPT_MAPSIZE = 1 << 10,
	OPT_MAXCALLS = 1 << 11, OPT_CPS = 1 << 12, OPT_SOURCES = 1 << 13, OPT_IPAUTH = 1 << 14,
	OPT_TLS = 1 << 15, OPT_ALGS = 1 << 16, OPT_OVERLAP = 1 << 17, OPT_DATABASE = 1 << 18,
	OPT_VERSION = 1 << 19,
};
#define OPT_POLICY (OPT_MAXCALLS | OPT_CPS | OPT_SOURCES | OPT_IPAUTH | OPT_TLS | OPT_ALGS)
#define OPT_GLOBAL (OPT_STORE | OPT_MINLEN | OPT_HELP | OPT_MAPSIZE | OPT_DATABASE | OPT_VERSION)

static const struct option long_opts[] = {
	{ "store", required_argument, NULL, OPT_STORE },
	{ "database", required_argument, NULL, OPT_DATABASE },
	{ "min-password-length", required_argument, NULL, OPT_MINLEN },
	{ "help", no_argument, NULL, OPT_HELP },
	{ "version", no_argument, NULL, OPT_VERSION },
	{ "domain", required_argument, NULL, OPT_DOMAIN },
	{ "name", required_argument, NULL, OPT_NAME },
	{ "account", required_argument, NULL, OPT_ACCOUNT },
	{ "trunk", required_argument, NULL, OPT_TRUNK },
	{ "username", required_argument, NULL, OPT_USERNAME },
	{ "password-stdin", no_argument, NULL, OPT_PWSTDIN },
	{ "id", required_argument, NULL, OPT_ID },
	{ "map-size", required_argument, NULL, OPT_MAPSIZE },
	{ "max-concurrent-calls", required_argument, NULL, OPT_MAXCALLS },
	{ "max-calls-per-second", required_argument, NULL, OPT_CPS },
	{ "allowed-sources", required_argument, NULL, OPT_SOURCES },
	{ "ip-authentication", required_argument, NULL, OPT_IPAUTH },
	{ "require-tls", required_argument, NULL, OPT_TLS },
	{ "digest-algorithms", required_argument, NULL, OPT_ALGS },
	{ "overlap-seconds", required_argument, NULL, OPT_OVERLAP },
	{ NULL, 0, NULL, 0 },
};

struct ctl {
	const char *store_dir;
	const char *database;        /* --database: a libpq connection string (never printed: it may hold a password) */
	unsigned min_len;
	uint64_t map_size;           /* --map-size: grow the map to this; 0: the store's own */
	const char *domain, *name, *account, *trunk, *username, *id;
	json_t *patch;               /* trunk set: the settings given, as the API's PATCH body */
	unsigned overlap;            /* credential rotate: seconds the old password goes on */
	unsigned seen;
	struct sa_store *st;
	struct sa_pg *pg;            /* --database: the connection; then st stays NULL */
};

struct command {
	const char *noun, *verb;     /* verb NULL: a one-word command */
	unsigned required, allowed;  /* beyond the global options */
	bool rdonly;
	int (*run)(struct ctl *c);
	const char *needs;           /* what a missing required option is called */
};

static int cmd_init(struct ctl *c);
static int cmd_account_create(struct ctl *c);
static int cmd_apikey_create(struct ctl *c);
static int cmd_apikey_list(struct ctl *c);
static int cmd_apikey_revoke(struct ctl *c);
static int cmd_trunk_create(struct ctl *c);
static int cmd_trunk_list(struct ctl *c);
static int cmd_trunk_set(struct ctl *c);
static int cmd_credential_create(struct ctl *c);
static int cmd_credential_list(struct ctl *c);
static int cmd_credential_delete(struct ctl *c);
static int cmd_credential_rotate(struct ctl *c);
static int cmd_nonce_key_rotate(struct ctl *c);

static const struct command commands[] = {
	{ "init", NULL, 0, OPT_DOMAIN, false, cmd_init, "" },
	{ "account", "create", OPT_NAME, OPT_NAME, false, cmd_account_create, "--name NAME" },
	{ "apikey", "create", OPT_ACCOUNT, OPT_ACCOUNT, false, cmd_apikey_create, "--account ACC_ID" },
	{ "apikey", "list", OPT_ACCOUNT, OPT_ACCOUNT, true, cmd_apikey_list, "--account ACC_ID" },
	{ "apikey", "revoke", OPT_ACCOUNT | OPT_ID, OPT_ACCOUNT | OPT_ID, false, cmd_apikey_revoke,
	  "--account ACC_ID --id KEY_ID" },
	{ "trunk", "create", OPT_ACCOUNT, OPT_ACCOUNT | OPT_NAME, false, cmd_trunk_create, "--account ACC_ID" },
	{ "trunk", "list", OPT_ACCOUNT, OPT_ACCOUNT, true, cmd_trunk_list, "--account ACC_ID" },
	{ "trunk", "set", OPT_TRUNK, OPT_TRUNK | OPT_POLICY, false, cmd_trunk_set, "--trunk TRUNK_ID" },
	{ "credential", "create", OPT_TRUNK | OPT_USERNAME | OPT_PWSTDIN,
	  OPT_TRUNK | OPT_USERNAME | OPT_PWSTDIN, false, cmd_credential_create,
	  "--trunk TRUNK_ID --username U --password-stdin" },
	{ "credential", "list", OPT_TRUNK, OPT_TRUNK, true, cmd_credential_list, "--trunk TRUNK_ID" },
	{ "credential", "delete", OPT_TRUNK | OPT_ID, OPT_TRUNK | OPT_ID, false, cmd_credential_delete,
	  "--trunk TRUNK_ID --id CRED_ID" },
	{ "credential", "rotate", OPT_TRUNK | OPT_ID | OPT_PWSTDIN, OPT_TRUNK | OPT_ID | OPT_PWSTDIN | OPT_OVERLAP, false,
	  cmd_credential_rotate, "--trunk TRUNK_ID --id CRED_ID --password-stdin" },
	{ "nonce-key", "rotate", 0, 0, false, cmd_nonce_key_rotate, "" },
};

static void usage(FILE *f)
{
	fprintf(f,
	    "usage: sipauthctl [--store DIR | --database CONNINFO] [--min-password-length N] [--map-size SIZE]\n"
	    "                  COMMAND [OPTIONS]\n"
	    "\n"
	    "  init [--domain DOMAIN]                       record the SIP domain (default " SA_DEFAULT_DOMAIN ")\n"
	    "  account create --name NAME                   prints the acc_ id\n"
	    "  apikey create --account ACC_ID               prints the API key, once\n"
	    "  apikey list --account ACC_ID                 JSON {\"data\":[{\"id\",\"created_at\"}...]}: a key's\n"
	    "                                               id is key_ and the first 16 hex digits of\n"
	    "                                               its SHA-256 (printf %%s KEY | sha256sum)\n"
	    "  apikey revoke --account ACC_ID --id KEY_ID   the key authenticates nothing from now on\n"
	    "  trunk create --account ACC_ID [--name NAME]  prints the trunk_ id\n"
	    "  trunk list --account ACC_ID                  JSON {\"data\":[...]}\n"
	    "  trunk set --trunk TRUNK_ID SETTING...        the trunk's carrier controls (as the API's\n"
	    "                                               PATCH); prints the trunk as JSON. SETTING:\n"
	    "      --max-concurrent-calls N|none            calls at once, inbound and outbound\n"
	    "      --max-calls-per-second R|none            new calls per second (burst: one second)\n"
	    "      --allowed-sources CIDR[,CIDR...]|none    the only source networks (none: any)\n"
	    "      --ip-authentication true|false           allowed sources need no digest\n"
	    "      --require-tls true|false                 refuse UDP and TCP for this trunk\n"
	    "      --digest-algorithms ALG[,ALG...]|default challenge order, e.g. MD5,SHA-256\n"
	    "  credential create --trunk TRUNK_ID --username U --password-stdin\n"
	    "                                               password from stdin (one trailing newline\n"
	    "                                               stripped); prints the credential as JSON\n"
	    "  credential list --trunk TRUNK_ID             JSON {\"data\":[...]}, in creation order\n"
	    "  credential delete --trunk TRUNK_ID --id CRED_ID\n"
	    "  credential rotate --trunk TRUNK_ID --id CRED_ID --password-stdin [--overlap-seconds N]\n"
	    "                                               a new password; the old one goes on for N\n"
	    "                                               seconds (0..86400, default 3600); calls go on\n"
	    "  nonce-key rotate                             --database only: a new nonce key for the fleet;\n"
	    "                                               the previous one is accepted for nonce_ttl\n"
	    "\n"
	    "  --store DIR                 the store directory (default " DEFAULT_STORE ")\n"
	    "  --database CONNINFO         fleet mode: the PostgreSQL database instead (a libpq connection\n"
	    "                              string, e.g. \"host=10.0.0.5 dbname=sipauthd user=sipauthd\");\n"
	    "                              init creates its schema or upgrades it. Needs a build with libpq\n"
	    "  --min-password-length N     minimum password length, %d..%d (default %d)\n"
	    "  --map-size SIZE             commands that write: the store's map grows to SIZE\n"
	    "                              (bytes, or with K, M, G, T; it never shrinks); for init,\n"
	    "                              the new store's map (default 1G). data.mdb takes SIZE on disk\n"
	    "  --help                      this text\n"
	    "  --version                   sipauthctl's version (the same as sipauthd's it came with)\n"
	    "\n"
	    "exit status: 0 ok, 1 bad usage or invalid input (weak password, bad username),\n"
	    "2 unknown account, trunk or credential, 3 duplicate username or store already\n"
	    "initialised, 4 store not initialised or of an incompatible version, 5 store I/O\n"
	    "error or permission denied, 6 store corrupted (data.mdb empty, truncated or\n"
	    "damaged), 7 store full (its map, or the file system). With --database: 4 schema\n"
	    "absent or of another version, 5 connection or database error, 7 database disk full,\n"
	    "8 the connection broke after a change was sent: it may or may not have been made.\n",
	    SA_PASSWORD_MIN, SA_PASSWORD_MAX, SA_PASSWORD_MIN);
}

__attribute__((format(printf, 2, 3)))
static int die(int status, const char *fmt, ...)
{
	va_list ap;

	fputs("sipauthctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return status;
}

/* What the store said about its last failure, when it is about err. */
static const char *fault_detail(struct ctl *c, int err)
{
	static struct sa_store_fault f;

	if (c->st == NULL)
		return "";
	sa_store_fault(c->st, &f);
	return f.err == err ? f.detail : "";
}

/* A folder with files in it: a store's parent, say, or the wrong folder. */
static bool dir_has_files(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *e;
	bool any = false;

	while (d && !any && (e = readdir(d)) != NULL)
		any = strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
	if (d)
		closedir(d);
	return any;
}

/* The message and exit status for store errors every command shares: each
 * names its cause, and the LMDB or system error behind it (detail). */
static int store_fail_why(struct ctl *c, int err, const char *detail)
{
	const char *sep = detail[0] != '\0' ? ": " : "";

	switch (err) {
	case SA_STORE_ENOTINIT:
		if (dir_has_files(c->store_dir))   /* init there would make a second, empty store */
			return die(EXIT_NOTINIT, "%s holds files but no store (no data.mdb): is --store the folder "
			           "that holds data.mdb? (sipauthctl --store DIR init makes a new, empty one)", c->store_dir);
		return die(EXIT_NOTINIT, "store not initialised: run sipauthctl --store %s init", c->store_dir);
	case SA_STORE_ESCHEMA:
		return die(EXIT_NOTINIT, "store %s was written by an incompatible version (schema %d expected)%s%s",
		           c->store_dir, SA_STORE_SCHEMA_VERSION, sep, detail);
	case SA_STORE_EINVAL:
		return die(EXIT_USAGE, "invalid input");
	case SA_STORE_EMAPFULL:
		return die(EXIT_FULL, "store %s: map full%s%s; deletes still work; grow the map with "
		           "sipauthctl --map-size SIZE or [store] map_size", c->store_dir, sep, detail);
	case SA_STORE_ENOSPC:
		return die(EXIT_FULL, "store %s: disk full%s%s", c->store_dir, sep, detail);
	case SA_STORE_ECORRUPT:
		return die(EXIT_CORRUPT, "store %s: corrupted%s%s", c->store_dir, sep, detail);
	case SA_STORE_EACCES:
		return die(EXIT_IO, "store %s: permission denied%s%s (run as the store's owner, e.g. sudo -u sipauthd)",
		           c->store_dir, sep, detail);
	default:
		return die(EXIT_IO, "store %s: I/O error%s%s", c->store_dir, sep, detail);
	}
}

#ifdef HAVE_LIBPQ
/* The same causes and exit statuses as store_fail_why, for the database. */
static int database_fail(struct ctl *c, int err)
{
	const char *name = sa_pg_name(c->pg), *detail = sa_pg_detail(c->pg);

	switch (err) {
	case SA_STORE_ENOTINIT:
		return die(EXIT_NOTINIT, "database %s not initialised: run sipauthctl --database CONNINFO init", name);
	case SA_STORE_ESCHEMA:
		return die(EXIT_NOTINIT, "database %s has another schema version (%d expected): init upgrades an "
		           "older one; a newer one needs a newer sipauthctl", name, SA_PG_SCHEMA_VERSION);
	case SA_STORE_EINVAL:
		return die(EXIT_USAGE, "invalid input");
	case SA_STORE_ENOSPC:
		return die(EXIT_FULL, "database %s: disk full: %s", name, detail);
	case SA_STORE_EUNAVAIL:
		return die(EXIT_IO, "database %s went away: %s", name, detail);
	case SA_STORE_EUNKNOWN:
		return die(EXIT_UNKNOWN, "database %s went away after the change was sent: it may or may not have been "
		           "made; look (list) before trying again", name);
	case SA_STORE_EACCES:
		return die(EXIT_IO, "database %s: permission denied: %s (grant the role sipauthd's tables: see README)",
		           name, detail);
	default:
		return die(EXIT_IO, "database %s: %s", name, detail[0] ? detail : "error");
	}
}
#endif

static int store_fail(struct ctl *c, int err)
{
	return VIA(c, database_fail(c, err), store_fail_why(c, err, fault_detail(c, err)));
}

static int64_t now(void)
{
	return (int64_t)time(NULL);
}

static int print_json(json_t *j)
{
	int rc = EXIT_OK;

	if (j == NULL || json_dumpf(j, stdout, JSON_INDENT(2)) != 0 || fputc('\n', stdout) == EOF)
		rc = die(EXIT_IO, "cannot write JSON output");
	json_decref(j);
	return rc;
}

/* Adds value to arr; false when value could not be made (e.g. invalid UTF-8). */
static bool append(json_t *arr, json_t *value)
{
	return value != NULL && json_array_append_new(arr, value) == 0;
}

/* ---- commands ---- */

#ifdef HAVE_LIBPQ
/* Creates the schema, or upgrades an older one; the domain is recorded once. */
static int cmd_init_database(struct ctl *c)
{
	char domain[SA_DOMAIN_MAX + 1];
	int from = 0, err = sa_pg_init(c->pg, c->domain, &from);

	if (err == SA_STORE_EINVAL)
		return die(EXIT_USAGE, "invalid domain %s: use a DNS name like " SA_DEFAULT_DOMAIN, c->domain);
	if (err == SA_STORE_EEXISTS) {
		if (sa_pg_domain(c->pg, domain, sizeof domain) != SA_STORE_OK)
			snprintf(domain, sizeof domain, "unknown");
		return die(EXIT_CONFLICT, "database %s is already initialised (domain %s)", sa_pg_name(c->pg), domain);
	}
	if (err == SA_STORE_OK)
		err = sa_pg_domain(c->pg, domain, sizeof domain);
	if (err != SA_STORE_OK)
		return store_fail(c, err);
	if (from == 0)
		printf("initialised database %s for domain %s\n", sa_pg_name(c->pg), domain);
	else
		printf("upgraded database %s from schema %d to %d (domain %s)\n", sa_pg_name(c->pg), from,
		       SA_PG_SCHEMA_VERSION, domain);
	return EXIT_OK;
}
#endif

static int cmd_init(struct ctl *c)
{
	char domain[SA_DOMAIN_MAX + 1];
#ifdef HAVE_LIBPQ
	if (c->pg != NULL)
		return cmd_init_database(c);
#endif
	int err = sa_store_init(c->st, c->domain);

	if (err == SA_STORE_EINVAL)
		return die(EXIT_USAGE, "invalid domain %s: use a DNS name like " SA_DEFAULT_DOMAIN, c->domain);
	if (err == SA_STORE_EEXISTS) {
		if (sa_store_domain(c->st, domain, sizeof domain) != SA_STORE_OK)
			snprintf(domain, sizeof domain, "unknown");
		return die(EXIT_CONFLICT, "store %s is already initialised (domain %s)", c->store_dir, domain);
	}
	if (err != SA_STORE_OK)
		return store_fail(c, err);
	if (sa_store_domain(c->st, domain, sizeof domain) != SA_STORE_OK)
		return store_fail(c, SA_STORE_EIO);
	printf("initialised %s for domain %s\n", c->store_dir, domain);
	return EXIT_OK;
}

static int cmd_account_create(struct ctl *c)
{
	struct sa_account a;
	int err = VIA(c, sa_pg_account_create(c->pg, c->name, now(), &a), sa_store_account_create(c->st, c->name, now(), &a));

	if (err == SA_STORE_EINVAL)
		return die(EXIT_USAGE, "invalid account name: use 1 to %d characters of UTF-8 text without control characters",
		           SA_NAME_MAX);
	if (err != SA_STORE_OK)
		return store_fail(c, err);
	printf("%s\n", a.id);
	return EXIT_OK;
}

static int cmd_apikey_create(struct ctl *c)
{
	char key[SA_APIKEY_LEN + 1];
	int err = VIA(c, sa_pg_apikey_create(c->pg, c->account, now(), key),
	              sa_store_apikey_create(c->st, c->account, now(), key));

	if (err == SA_STORE_ENOTFOUND)
		return die(EXIT_NOTFOUND, "unknown account %s", c->account);
	if (err != SA_STORE_OK)
		return store_fail(c, err);
	printf("%s\n", key);
	OPENSSL_cleanse(key, sizeof key);
	return EXIT_OK;
}

static int apikey_json_cb(const struct sa_apikey_info *k, void *arg)
{
	return append(arg, json_pack("{s:s,s:o}", "id", k->id, "created_at", sa_api_rfc3339(k->created_at))) ? 0 : -1;
}

static int cmd_apikey_list(struct ctl *c)
{
	json_t *data = json_array();
	int err = VIA(c, sa_pg_apikey_list(c->pg, c->account, apikey_json_cb, data),
	              sa_store_apikey_list(c->st, c->account, apikey_json_cb, data));

	if (err != SA_STORE_OK) {
		json_decref(data);
		if (err == SA_STORE_ENOTFOUND)
			return die(EXIT_NOTFOUND, "unknown account %s", c->account);
		return store_fail(c, err);
	}
	return print_json(json_pack("{s:o}", "data", data));
}

static int cmd_apikey_revoke(struct ctl *c)
{
	int err = VIA(c, sa_pg_apikey_revoke(c->pg, c->account, c->id), sa_store_apikey_revoke(c->st, c->account, c->id));

	if (err == SA_STORE_ENOTFOUND)
		return die(EXIT_NOTFOUND, "unknown account %s or key %s of it", c->account, c->id);
	return err == SA_STORE_OK ? EXIT_OK : store_fail(c, err);
}

static int cmd_trunk_create(struct ctl *c)
{
	struct sa_trunk t;
	int err = VIA(c, sa_pg_trunk_create(c->pg, c->account, c->name, now(), &t),
	              sa_store_trunk_create(c->st, c->account, c->name, now(), &t));

	if (err == SA_STORE_ENOTFOUND)
		return die(EXIT_NOTFOUND, "unknown account %s", c->account);
	if (err == SA_STORE_EINVAL)
		return die(EXIT_USAGE, "invalid trunk name: use at most %d characters of UTF-8 text without control characters",
		           SA_NAME_MAX);
	if (err != SA_STORE_OK)
		return store_fail(c, err);
	printf("%s\n", t.id);
	return EXIT_OK;
}

struct trunk_json {
	json_t *data;
	struct ctl *c;
};

static int trunk_json_cb(const struct sa_trunk *t, void *arg)
{
	struct trunk_json *tj = arg;
	struct sa_trunk_policy p;
	struct ctl *c = tj->c;

	if (VIA(c, sa_pg_trunk_policy_get(c->pg, t->id, &p), sa_store_trunk_policy_get(c->st, t->id, &p)) != SA_STORE_OK)
		return -1;
	return append(tj->data, sa_api_trunk_json(t, &p)) ? 0 : -1;
}

static int cmd_trunk_list(struct ctl *c)
{
	json_t *data = json_array();
	struct trunk_json tj = { data, c };
	int err = VIA(c, sa_pg_trunk_list(c->pg, c->account, trunk_json_cb, &tj),
	              sa_store_trunk_list(c->st, c->account, trunk_json_cb, &tj));

	if (err != SA_STORE_OK) {
		json_decref(data);
		if (err == SA_STORE_ENOTFOUND)
			return die(EXIT_NOTFOUND, "unknown account %s", c->account);
		return store_fail(c, err);
	}
	return print_json(json_pack("{s:o}", "data", data));
}

/* The same rules as PATCH .../trunks/{id}: lib/policy.c decides. */
static int cmd_trunk_set(struct ctl *c)
{
	char field[SA_POLICY_FIELD_MAX], why[200];
	struct sa_trunk_policy p;
	struct sa_trunk t;

	if ((c->seen & OPT_POLICY) == 0)
		return die(EXIT_USAGE, "trunk set needs at least one setting (see sipauthctl --help)");
	int err = VIA(c, sa_pg_trunk_get(c->pg, c->trunk, &t), sa_store_trunk_get(c->st, c->trunk, &t));
	if (err == SA_STORE_OK)
		err = VIA(c, sa_pg_trunk_policy_get(c->pg, c->trunk, &p), sa_store_trunk_policy_get(c->st, c->trunk, &p));
	if (err == SA_STORE_ENOTFOUND)
		return die(EXIT_NOTFOUND, "unknown trunk %s", c->trunk);
	if (err != SA_STORE_OK)
		return store_fail(c, err);
	if (sa_policy_patch(&p, c->patch, field, why, sizeof why) < 0) {
		char *null = strstr(why, ", or null for");   /* the API's word; on this command line it is none */
		if (null)
			memcpy(null, ", or none", 9);
		return die(EXIT_USAGE, "%s %s", field, why);
	}
	err = VIA(c, sa_pg_trunk_policy_set(c->pg, c->trunk, &p), sa_store_trunk_policy_set(c->st, c->trunk, &p));
	if (err == SA_STORE_ENOTFOUND)
		return die(EXIT_NOTFOUND, "unknown trunk %s", c->trunk);
	if (err != SA_STORE_OK)
		return store_fail(c, err);
	return print_json(sa_api_trunk_json(&t, &p));
}

/* A setting's text as the JSON value PATCH would carry: "none" (or
 * "default") is null, numbers and true/false are themselves, a list is an
 * array of its comma-separated items. Anything else stays a string, which
 * the policy then refuses with its rule. */
static json_t *setting_json(const char *arg, bool list)
{
	if (strcmp(arg, "none") == 0 || strcmp(arg, "default") == 0)
		return list ? json_array() : json_null();
	if (list) {
		json_t *a = json_array();
		char *copy = strdup(arg), *save = NULL;
		for (char *tok = copy ? strtok_r(copy, ",", &save) : NULL; tok; tok = strtok_r(NULL, ",", &save))
			json_array_append_new(a, json_string(tok));
		free(copy);
		return a;
	}
	json_error_t e;
	json_t *v = json_loads(arg, JSON_DECODE_ANY, &e);
	if (v != NULL && (json_is_number(v) || json_is_boolean(v)))
		return v;
	json_decref(v);
	return json_string(arg);
}

static int patch_set(struct ctl *c, const char *field, json_t *v)
{
	if (c->patch == NULL)
		c->patch = json_object();
	if (c->patch == NULL || v == NULL || json_object_set_new(c->patch, field, v) != 0)
		return die(EXIT_IO, "out of memory");
	return EXIT_OK;
}

/* Reads the whole of stdin and strips one trailing "\n" or "\r\n". */
static int password_read(char *buf, size_t cap, size_t *len)
{
	size_t n = 0;

	while (n < cap) {
		ssize_t r = read(STDIN_FILENO, buf + n, cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return die(EXIT_IO, "cannot read the password from stdin: %s", strerror(errno));
		if (r == 0)
			break;
		n += (size_t)r;
	}
	if (n == cap)
		return die(EXIT_USAGE, "weak password: password must be at most %d characters", SA_PASSWORD_MAX);
	if (n > 0 && buf[n - 1] == '\n' && --n > 0 && buf[n - 1] == '\r')
		n--;
	*len = n;
	return EXIT_OK;
}

static int credential_create_fail(struct ctl *c, int err, const char *why)
{
	switch (err) {
	case SA_STORE_EINVAL:
		if (strncmp(why, "password", 8) == 0)
			return die(EXIT_USAGE, "weak password: %s", why);
		return die(EXIT_USAGE, "invalid username: %s", why);
	case SA_STORE_ENOTFOUND:
		return die(EXIT_NOTFOUND, "unknown trunk %s", c->trunk);
	case SA_STORE_EEXISTS:
		return die(EXIT_CONFLICT, "duplicate username %s on trunk %s", c->username, c->trunk);
	default:
		return store_fail(c, err);
	}
}

static int cmd_credential_create(struct ctl *c)
{
	char pw[PASSWORD_READ_MAX], why[160] = "";
	struct sa_credential cr;
	size_t len = 0;
	int rc = password_read(pw, sizeof pw, &len);

	if (rc == EXIT_OK) {
		int err = VIA(c, sa_pg_credential_create(c->pg, c->trunk, c->username, pw, len, c->min_len, now(), &cr,
		                                         why, sizeof why),
		              sa_store_credential_create(c->st, c->trunk, c->username, pw, len, c->min_len, now(), &cr,
		                                         why, sizeof why));
		rc = err == SA_STORE_OK ? print_json(sa_api_credential_created_json(&cr)) : credential_create_fail(c, err, why);
		OPENSSL_cleanse(&cr, sizeof cr);
	}
	OPENSSL_cleanse(pw, sizeof pw);
	return rc;
}

static int credential_rotate_fail(struct ctl *c, int err, const char *why)
{
	switch (err) {
	case SA_STORE_EINVAL:
		return die(EXIT_USAGE, "%s", why);
	case SA_STORE_ENOTFOUND:
		return die(EXIT_NOTFOUND, "unknown credential %s on trunk %s", c->id, c->trunk);
	default:
		return store_fail(c, err);
	}
}

/* As the API's rotate: the same rules, the same JSON. */
static int cmd_credential_rotate(struct ctl *c)
{
	char pw[PASSWORD_READ_MAX], why[160] = "";
	struct sa_credential cr;
	size_t len = 0;
	int rc = password_read(pw, sizeof pw, &len);

	if (rc == EXIT_OK) {
		int err = VIA(c, sa_pg_credential_rotate(c->pg, c->trunk, c->id, pw, len, c->min_len, c->overlap, now(), &cr,
		                                         why, sizeof why),
		              sa_store_credential_rotate(c->st, c->trunk, c->id, pw, len, c->min_len, c->overlap, now(), &cr,
		                                         why, sizeof why));
		rc = err == SA_STORE_OK ? print_json(sa_api_credential_json(&cr)) : credential_rotate_fail(c, err, why);
		OPENSSL_cleanse(&cr, sizeof cr);
	}
	OPENSSL_cleanse(pw, sizeof pw);
	return rc;
}

static int credential_json_cb(const struct sa_credential *cr, void *arg)
{
	return append(arg, sa_api_credential_json(cr)) ? 0 : -1;
}

static int cmd_credential_list(struct ctl *c)
{
	json_t *data = json_array();
	int err = VIA(c, sa_pg_credential_list(c->pg, c->trunk, credential_json_cb, data),
	              sa_store_credential_list(c->st, c->trunk, credential_json_cb, data));

	if (err != SA_STORE_OK) {
		json_decref(data);
		if (err == SA_STORE_ENOTFOUND)
			return die(EXIT_NOTFOUND, "unknown trunk %s", c->trunk);
		return store_fail(c, err);
	}
	return print_json(json_pack("{s:o}", "data", data));
}

static int cmd_credential_delete(struct ctl *c)
{
	struct sa_trunk t;
	int err = VIA(c, sa_pg_trunk_get(c->pg, c->trunk, &t), sa_store_trunk_get(c->st, c->trunk, &t));

	if (err == SA_STORE_ENOTFOUND)
		return die(EXIT_NOTFOUND, "unknown trunk %s", c->trunk);
	if (err == SA_STORE_OK)
		err = VIA(c, sa_pg_credential_delete(c->pg, c->trunk, c->id), sa_store_credential_delete(c->st, c->trunk, c->id));
	if (err == SA_STORE_ENOTFOUND)
		return die(EXIT_NOTFOUND, "unknown credential %s on trunk %s", c->id, c->trunk);
	return err == SA_STORE_OK ? EXIT_OK : store_fail(c, err);
}

/* ---- argument handling ---- */

static int parse_min_len(struct ctl *c, const char *arg)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(arg, &end, 10);
	if (errno != 0 || end == arg || *end != '\0' || v < SA_PASSWORD_MIN || v > SA_PASSWORD_MAX)
		return die(EXIT_USAGE, "--min-password-length must be a number from %d to %d",
		           SA_PASSWORD_MIN, SA_PASSWORD_MAX);
	c->min_len = (unsigned)v;
	return EXIT_OK;
}

static int parse_overlap(struct ctl *c, const char *arg)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(arg, &end, 10);
	if (errno != 0 || end == arg || *end != '\0' || arg[0] == '-' || v > SA_ROTATE_OVERLAP_MAX)
		return die(EXIT_USAGE, "--overlap-seconds must be a number from 0 to %d", SA_ROTATE_OVERLAP_MAX);
	c->overlap = (unsigned)v;
	return EXIT_OK;
}

static int set_option(struct ctl *c, int opt, const char *arg)
{
	c->seen |= (unsigned)opt;
	switch (opt) {
	case OPT_STORE: c->store_dir = arg; return EXIT_OK;
	case OPT_DATABASE: c->database = arg; return EXIT_OK;
	case OPT_MINLEN: return parse_min_len(c, arg);
	case OPT_HELP: return EXIT_OK;
	case OPT_VERSION: return EXIT_OK;
	case OPT_DOMAIN: c->domain = arg; return EXIT_OK;
	case OPT_NAME: c->name = arg; return EXIT_OK;
	case OPT_ACCOUNT: c->account = arg; return EXIT_OK;
	case OPT_TRUNK: c->trunk = arg; return EXIT_OK;
	case OPT_USERNAME: c->username = arg; return EXIT_OK;
	case OPT_PWSTDIN: return EXIT_OK;
	case OPT_ID: c->id = arg; return EXIT_OK;
	case OPT_OVERLAP: return parse_overlap(c, arg);
	case OPT_MAXCALLS: return patch_set(c, "max_concurrent_calls", setting_json(arg, false));
	case OPT_CPS: return patch_set(c, "max_calls_per_second", setting_json(arg, false));
	case OPT_SOURCES: return patch_set(c, "allowed_sources", setting_json(arg, true));
	case OPT_IPAUTH: return patch_set(c, "ip_authentication", setting_json(arg, false));
	case OPT_TLS: return patch_set(c, "require_tls", setting_json(arg, false));
	case OPT_ALGS:
		return patch_set(c, "digest_algorithms",
		                 strcmp(arg, "default") == 0 || strcmp(arg, "none") == 0 ? json_null() : setting_json(arg, true));
	case OPT_MAPSIZE:
		if (sa_store_size_parse(arg, &c->map_size) != SA_STORE_OK)
			return die(EXIT_USAGE, "--map-size must be a size from 2M to 1T (bytes, or a number with K, M, G or T)");
		return EXIT_OK;
	default: return die(EXIT_USAGE, "unknown option (see sipauthctl --help)");
	}
}

static int parse_options(struct ctl *c, int argc, char **argv)
{
	int opt, rc = EXIT_OK;

	opterr = 0;
	while (rc == EXIT_OK && (opt = getopt_long(argc, argv, ":h", long_opts, NULL)) != -1) {
		if (opt == 'h')
			opt = OPT_HELP;
		if (opt == ':')
			return die(EXIT_USAGE, "%s needs a value", argv[optind - 1]);
		if (opt == '?')
			return die(EXIT_USAGE, "bad option %s (see sipauthctl --help)", argv[optind - 1]);
		rc = set_option(c, opt, optarg);
	}
	return rc;
}

/* Fleet mode: a new current nonce key; nodes take it with their next
 * heartbeat. Prints ids only, never a secret. */
static int cmd_nonce_key_rotate(struct ctl *c)
{
#ifdef HAVE_LIBPQ
	unsigned id = 0, previous = 0;
	int err = sa_pg_nonce_key_rotate(c->pg, now(), &id, &previous);

	if (err == SA_STORE_EFULL)
		return die(EXIT_CONFLICT, "every nonce key id (1..255) was in use within the last %d s: try again later",
		           SA_PG_NONCE_KEY_KEEP);
	if (err != SA_STORE_OK)
		return store_fail(c, err);
	if (previous != 0)
		printf("nonce key %u is now current (key %u retired: its nonces are accepted for nonce_ttl)\n", id,
		       previous);
	else
		printf("nonce key %u is now current\n", id);
	return EXIT_OK;
#else
	(void)c;
	return die(EXIT_USAGE, "--database: this sipauthctl was built without PostgreSQL support");
#endif
}

static const struct command *find_command(int argc, char **argv, int *used)
{
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
		const struct command *cmd = &commands[i];
		if (strcmp(argv[0], cmd->noun) != 0)
			continue;
		if (cmd->verb == NULL) {
			*used = 1;
			return cmd;
		}
		if (argc > 1 && strcmp(argv[1], cmd->verb) == 0) {
			*used = 2;
			return cmd;
		}
	}
	return NULL;
}

static const char *option_name(unsigned bit)
{
	for (const struct option *o = long_opts; o->name != NULL; o++)
		if ((unsigned)o->val == bit)
			return o->name;
	return "?";
}

/* Options given that the command does not take, and required ones missing. */
static int check_options(const struct ctl *c, const struct command *cmd)
{
	unsigned extra = c->seen & ~(cmd->allowed | OPT_GLOBAL);

	for (unsigned bit = 1; extra != 0; bit <<= 1)
		if (extra & bit)
			return die(EXIT_USAGE, "--%s does not apply to %s%s%s", option_name(bit), cmd->noun,
			           cmd->verb ? " " : "", cmd->verb ? cmd->verb : "");
	if ((c->seen & cmd->required) != cmd->required)
		return die(EXIT_USAGE, "%s %s needs %s", cmd->noun, cmd->verb, cmd->needs);
	return EXIT_OK;
}

/* --database: connect, and for commands other than init, the schema must be there. */
static int open_database(struct ctl *c, const struct command *cmd)
{
	if (c->seen & OPT_STORE)
		return die(EXIT_USAGE, "--store and --database exclude each other");
	if (c->seen & OPT_MAPSIZE)
		return die(EXIT_USAGE, "--map-size applies to --store");
#ifdef HAVE_LIBPQ
	char why[256] = "";
	int err = sa_pg_open(&c->pg, c->database, why, sizeof why);
	if (err != SA_STORE_OK)
		return die(EXIT_IO, "cannot connect to the database: %s", why);
	if (cmd->run != cmd_init && (err = sa_pg_check(c->pg)) != SA_STORE_OK)
		return store_fail(c, err);
	return EXIT_OK;
#else
	return die(EXIT_USAGE, "--database: this sipauthctl was built without PostgreSQL support "
	           "(configure found no libpq; Debian: libpq-dev)");
#endif
}

/* A store other than by init must exist: opening would create an empty one. */
static int open_store(struct ctl *c, const struct command *cmd)
{
	if (c->seen & OPT_DATABASE)
		return open_database(c, cmd);
	struct sa_store_opts o = { .flags = cmd->rdonly ? SA_STORE_RDONLY : 0, .map_size = c->map_size };
	char path[4096], why[512] = "";
	struct stat sb;

	if (cmd->rdonly && c->map_size != 0)
		return die(EXIT_USAGE, "--map-size applies to commands that write");
	if (cmd->run != cmd_init) {
		snprintf(path, sizeof path, "%s/data.mdb", c->store_dir);
		if (stat(path, &sb) != 0 && errno == ENOENT)
			return store_fail(c, SA_STORE_ENOTINIT);
	}
	int err = sa_store_open_with(&c->st, c->store_dir, &o, why, sizeof why);
	if (err == SA_STORE_OK || err == SA_STORE_ENOTINIT)
		return err == SA_STORE_OK ? EXIT_OK : store_fail(c, err);
	if (err == SA_STORE_EIO)
		return die(EXIT_IO, "cannot open store %s: %s", c->store_dir, why[0] ? why : strerror(errno));
	return store_fail_why(c, err, why);
}

static int run(struct ctl *c, int argc, char **argv)
{
	const struct command *cmd;
	int used = 0;

	if (argc == 0) {
		usage(stderr);
		return EXIT_USAGE;
	}
	cmd = find_command(argc, argv, &used);
	if (cmd == NULL)
		return die(EXIT_USAGE, "unknown command '%s%s%s' (see sipauthctl --help)", argv[0],
		           argc > 1 ? " " : "", argc > 1 ? argv[1] : "");
	if (argc > used)
		return die(EXIT_USAGE, "unexpected argument '%s'", argv[used]);
	int rc = check_options(c, cmd);
	if (rc == EXIT_OK && cmd->run == cmd_nonce_key_rotate && !(c->seen & OPT_DATABASE))
		rc = die(EXIT_USAGE, "nonce-key rotate applies to fleet mode (--database CONNINFO) only: a single "
		         "host keeps no nonce key in its store, it makes a new one at each start");
	if (rc == EXIT_OK)
		rc = open_store(c, cmd);
	if (rc == EXIT_OK)
		rc = cmd->run(c);
	sa_store_close(c->st);
#ifdef HAVE_LIBPQ
	sa_pg_close(c->pg);
#endif
	return rc;
}

int main(int argc, char **argv)
{
	struct ctl c = { .store_dir = DEFAULT_STORE, .min_len = SA_PASSWORD_MIN, .overlap = SA_ROTATE_OVERLAP_DEFAULT };
	int rc = parse_options(&c, argc, argv);

	if (rc != EXIT_OK) {
		json_decref(c.patch);
		return rc;
	}
	if (c.seen & OPT_HELP) {
		usage(stdout);
		return EXIT_OK;
	}
	if (c.seen & OPT_VERSION) {   /* upgrade sipauthd and sipauthctl together: this tells which is which */
		printf("sipauthctl %s\n", PACKAGE_VERSION);
		return EXIT_OK;
	}
	rc = run(&c, argc - optind, argv + optind);
	json_decref(c.patch);
	if (fflush(stdout) != 0 && rc == EXIT_OK)
		rc = die(EXIT_IO, "cannot write output");
	return rc;
}
