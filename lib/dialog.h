/* dialog.h: an established call as the proxy in its middle knows it, and the BYE that ends it from either side. */
#ifndef SA_DIALOG_H
#define SA_DIALOG_H

#include <stdbool.h>
#include <stdint.h>

#include "sipmsg.h"
#include "store.h"

/* One end of the call. */
struct sa_dialog_side {
	char target[SA_CONTACT_MAX];   /* its Contact URI: where in-dialog requests to it go */
	char route[1024];              /* Route values from us to it ("" when we are the last hop) */
	char name[512];                /* its From/To value with its tag, as it names itself */
	unsigned long cseq;            /* highest CSeq it has sent in this dialog */
};

struct sa_dialog {
	char call_id[256];
	char caller_tag[128];
	char callee_tag[128];
	struct sa_dialog_side caller, callee;
	char cred_id[SA_ID_MAX];       /* the credential that set the call up (inbound: of the binding) */
	char trunk_id[SA_ID_MAX];
	bool inbound;                  /* gateway -> PBX */
	int64_t started_at;
};

/* Is this Record-Route URI one of ours? */
typedef bool (*sa_dialog_is_us_fn)(osip_uri_t *uri, void *arg);

/* Fill d from the INVITE as we forwarded it (raw-scanned) and the 2xx that
 * answered it (parsed). 0, or -1 when the 2xx lacks what a dialog needs. */
int sa_dialog_from_2xx(struct sa_dialog *d, const struct sa_msg *invite, const struct sa_msg *ok,
                       sa_dialog_is_us_fn is_us, void *arg);

/* Does in-dialog request m belong to d, and from which side? 1 caller, 2 callee, 0 no. */
int sa_dialog_match(const struct sa_dialog *d, const struct sa_msg *m);

/* A BYE to one side (to_caller) as if the other side sent it: the side's
 * target as Request-URI, its Route set, From/To swapped accordingly, CSeq
 * one above the other side's highest. via is our Via value; reason a
 * Reason header value (RFC 3326) or NULL. Length or -1. */
long sa_dialog_bye(const struct sa_dialog *d, bool to_caller, const char *via, const char *reason,
                   char *out, size_t cap);

#endif
