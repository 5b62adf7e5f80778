/* api.h: the credential REST API as plain functions: a request's parts in, status, JSON body and headers out. */
#ifndef SA_API_H
#define SA_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "sa_limits.h"
#include "store.h"

/* Every list pages: ?limit=1..MAX (default DEFAULT)&starting_after=<id>. */
#define SA_API_PAGE_LIMIT_DEFAULT     100
#define SA_API_PAGE_LIMIT_MAX         1000
#define SA_API_AUTHFAIL_LIMIT_DEFAULT SA_API_PAGE_LIMIT_DEFAULT
#define SA_API_AUTHFAIL_LIMIT_MAX     SA_API_PAGE_LIMIT_MAX
/* starting_after, percent-decoded: a call's Call-ID is the longest id */
#define SA_API_CURSOR_MAX             (SA_SIP_MAX_CALL_ID + 1)
#define SA_API_MAX_HEADERS            4
#define SA_API_IDEM_KEY_MAX           255   /* Idempotency-Key: 1..255 printable ASCII */
#define SA_API_WEBHOOKS_MAX           16    /* per account: each event goes to each of them */

/* One active call, as GET .../calls lists it. */
struct sa_api_call {
	const char *call_id;
	const char *cred_id;
	bool inbound;                  /* gateway -> PBX */
	bool confirmed;                /* false: still ringing */
	int64_t started_at;
};
typedef void (*sa_api_call_cb)(const struct sa_api_call *c, void *arg);

/* What a handler needs; the daemon builds one at start-up. */
struct sa_pg;
struct sa_api_ctx {
	struct sa_store *store;
	/* fleet mode (lib/pgstore): trunks, their policies, credentials,
	 * webhooks and Idempotency-Key answers are read and written here
	 * instead of store (registrations, failures, calls and webhook
	 * deliveries are read here too, each with its node; keys stay the
	 * node's); NULL: a single host */
	struct sa_pg *pg;
	unsigned min_password_len;     /* [api] min_password_length, SA_PASSWORD_MIN or more */
	/* the daemon's call table: cb for each active call of trunk_id (NULL: no calls known) */
	void (*calls_each)(void *owner, const char *trunk_id, sa_api_call_cb cb, void *arg);
	void *calls_owner;
};

/* One request, as the HTTP layer read it. Nothing here is evhttp's. */
struct sa_api_request {
	const char *method;            /* "GET", "POST", ... */
	const char *path;              /* raw (not percent-decoded), without the query */
	const char *query;             /* raw, without '?'; NULL or "" when none */
	const char *authorization;     /* the Authorization header value, NULL when absent */
	const char *idempotency_key;   /* the Idempotency-Key header value, NULL when absent */
	const char *body;              /* not NUL-terminated; may be NULL when body_len is 0 */
	size_t body_len;
	int64_t now;                   /* wall clock, seconds since the epoch */
};

struct sa_api_header {
	char name[32];
	char value[SA_ID_MAX * 3 + 64];  /* fits a Location of /v1/account/../trunks/../credentials/.. */
};

struct sa_api_response {
	int status;
	char *body;                    /* JSON text (malloc'd, ends in "\n"); NULL for 204 */
	size_t body_len;
	struct sa_api_header hdr[SA_API_MAX_HEADERS];
	unsigned nhdr;
	/* for the caller's one log line and its side effects: never a secret */
	const char *error_code;        /* static string, NULL on success */
	char account_id[SA_ID_MAX];    /* the key's account once authenticated, else "" */
	char created_cred[SA_ID_MAX];  /* POST .../credentials succeeded: its id */
	char created_user[SA_USERNAME_MAX + 1];
	char deleted_cred[SA_ID_MAX];  /* DELETE succeeded: end its calls */
	char rotated_cred[SA_ID_MAX];  /* POST .../rotate succeeded (its calls go on) */
	uint32_t rotated_version;      /* ... to this password version */
	unsigned rotated_overlap;      /* ... the previous password going on for this many seconds */
	char patched_trunk[SA_ID_MAX]; /* PATCH of a trunk's controls succeeded */
	char created_webhook[SA_ID_MAX];  /* POST .../webhooks succeeded: events may now have a subscriber */
	char trunk_id[SA_ID_MAX];      /* the trunk the request was about, when found */
};

/* Answer one request under /v1/. Never fails: an allocation or store failure
 * is a 500 answer. Free with sa_api_response_free. */
void sa_api_handle(const struct sa_api_ctx *ctx, const struct sa_api_request *req, struct sa_api_response *resp);

/* Whether answering path reads the daemon's call table (GET .../calls),
 * which lives on the SIP loop: such requests are answered there, every
 * other one may be answered by any thread with a store handle of its own. */
bool sa_api_reads_calls(const char *path);

/* A JSON error answer {"error":{"code","message"}} (used by the HTTP layer
 * for answers it gives itself: 413, 404 outside /v1, 405 on /metrics). */
void sa_api_error(struct sa_api_response *resp, int status, const char *code, const char *message);
/* The answer for a store (or database) error: 507 when full, 503 when the
 * database is away (database_unavailable) or lost a write's answer
 * (outcome_unknown), 500 otherwise. */
void sa_api_store_error(struct sa_api_response *resp, int err);

void sa_api_response_free(struct sa_api_response *resp);

/* The JSON shapes shared with sipauthctl, so both print exactly the same. */
json_t *sa_api_trunk_json(const struct sa_trunk *t, const struct sa_trunk_policy *p);
/* As GET and the list show it (with password_version), and as a create answers (the product page's four fields). */
json_t *sa_api_credential_json(const struct sa_credential *c);
json_t *sa_api_credential_created_json(const struct sa_credential *c);

/* A time as RFC 3339 UTC ("2026-04-09T10:35:00Z"; null if it cannot be
 * written), and text from the network as a JSON string ('?' for each byte
 * when it is not UTF-8): the API's forms, shared with the webhook events. */
json_t *sa_api_rfc3339(int64_t t);
json_t *sa_api_net_string(const char *s);

/* The token of an Authorization "Bearer <token>" value (scheme in any
 * case, blanks around it dropped): 0, or -1 when h is NULL or not that. */
int sa_api_bearer_token(const char *h, const char **tok, size_t *len);

/* "since" as RFC 3339 ("2026-04-09T10:35:00Z", "...T12:35:00+02:00",
 * fractions ignored) or as epoch seconds ("1775731200"). 0 or -1. */
int sa_api_parse_time(const char *s, int64_t *out);

#endif
