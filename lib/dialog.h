/* dialog.h: an established call as the proxy in its middle knows it, and the BYE that ends it from either side. */
#ifndef SA_DIALOG_H
#define SA_DIALOG_H

#include <stdbool.h>
#include <stdint.h>

#include "sipmsg.h"
#include "store.h"

/* One end of the call. The strings live in the dialog's one allocation. */
struct sa_dialog_side {
	const char *target;            /* its Contact URI: where in-dialog requests to it go */
	const char *route;             /* Route values from us to it ("" when we are the last hop) */
	const char *name;              /* its From/To value with its tag, as it names itself */
	unsigned long cseq;            /* highest CSeq it has sent in this dialog */
};

/* What the dialog keeps as text, in this order (for building and saving). */
enum sa_dialog_text {
	SA_DT_CALL_ID, SA_DT_CALLER_TAG, SA_DT_CALLEE_TAG,
	SA_DT_CALLER_TARGET, SA_DT_CALLER_ROUTE, SA_DT_CALLER_NAME,
	SA_DT_CALLEE_TARGET, SA_DT_CALLEE_ROUTE, SA_DT_CALLEE_NAME,
	SA_DT_COUNT
};

struct sa_dialog {
	const char *call_id;
	const char *caller_tag;
	const char *callee_tag;
	struct sa_dialog_side caller, callee;
	char cred_id[SA_ID_MAX];       /* the credential that set the call up (inbound: of the binding) */
	char trunk_id[SA_ID_MAX];
	bool inbound;                  /* gateway -> PBX */
	int64_t started_at;
	char *text;                    /* owns every string above, one allocation sized to fit */
};

/* Fill d's strings from texts[SA_DT_COUNT] (NULL counts as ""), in one
 * allocation. 0, or -1 when out of memory or a text is too long. */
int sa_dialog_set_text(struct sa_dialog *d, const char *const texts[SA_DT_COUNT]);
/* The string d keeps for one enum sa_dialog_text. */
const char *sa_dialog_text(const struct sa_dialog *d, enum sa_dialog_text which);
/* Release the strings. */
void sa_dialog_free(struct sa_dialog *d);

/* Is this Record-Route URI one of ours? */
typedef bool (*sa_dialog_is_us_fn)(const struct sa_uri *uri, void *arg);

/* Fill d from the INVITE's Contact value as we forwarded it (contact,
 * contact_len; NULL when it had none) and the 2xx that answered it
 * (parsed). 0, or -1 when either lacks what a dialog needs; release with
 * sa_dialog_free either way. */
int sa_dialog_from_2xx(struct sa_dialog *d, const char *contact, size_t contact_len, const struct sa_msg *ok,
                       sa_dialog_is_us_fn is_us, void *arg);

/* Does in-dialog request m belong to d, and from which side? 1 caller, 2 callee, 0 no. */
int sa_dialog_match(const struct sa_dialog *d, const struct sa_msg *m);

/* A BYE to one side (to_caller) as if the other side sent it: the side's
 * target as Request-URI, its Route set, From/To swapped accordingly, CSeq
 * one above the other side's highest. via is our Via value; reason a
 * Reason header value (RFC 3326) or NULL. Length or -1. */
long sa_dialog_bye(const struct sa_dialog *d, bool to_caller, const char *via, const char *reason,
                   char *out, size_t cap);

/* The ACK for the 2xx that made d (RFC 3261 §13.2.2.4), sent by us as the
 * caller: to the callee's target along its Route set, the INVITE's CSeq
 * number. via is our Via value with a new branch. Length or -1. */
long sa_dialog_ack(const struct sa_dialog *d, const char *via, char *out, size_t cap);

#endif
