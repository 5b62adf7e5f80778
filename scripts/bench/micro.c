/* micro.c: the per-message CPU of sipauthd's decision code, without sockets or the event loop.
 *
 * Built and run by scripts/bench/run (or by hand: see the "micro" step there), linked against
 * lib/libsipauth.a. Times, per message, with the messages sipp sends in the benchmark:
 *   parse      sa_msg_parse + sa_msg_free of a REGISTER without / with credentials, an INVITE
 *   challenge  parse + sa_auth_check (no credentials) + sa_auth_challenge + sa_msg_response
 *   verify     parse + sa_auth_check of a correct MD5 answer (fresh nonce each, replay table)
 *   registrar  sa_registrar_apply for a refresh of the same contact (the LMDB write) + 200 OK
 *   txn        an INVITE forwarded and kept with its fields (lib/txn), and what the transaction
 *              builds from them: CANCEL, 408, the copy for the next gateway
 * Each figure is the median of several batches of CPU time (CLOCK_PROCESS_CPUTIME_ID).
 *
 *   micro [ITERATIONS]     (default 10000 per batch, at most 18000)
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "digest.h"
#include "nonce.h"
#include "registrar.h"
#include "sipmsg.h"
#include "store.h"
#include "txn.h"

#define DOMAIN "sip.tryvox.io"
#define USER "pbx-prod-01"
#define PASS "secure_password_here_123"
#define BATCHES 7

static const unsigned char tag_key[SA_TAG_KEY_LEN] = { 7 };

static double cpu_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static void die(const char *what)
{
	fprintf(stderr, "micro: %s\n", what);
	exit(1);
}

/* A request as sipp sends it in pbx_register.xml / pbx_call.xml; auth may be "". */
static int make_request(char *out, size_t cap, const char *method, const char *host, int cseq,
                        const char *auth, int n)
{
	bool invite = strcmp(method, "INVITE") == 0;
	const char *sdp = "v=0\r\no=pbx 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
	                  "m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
	return snprintf(out, cap,
	                "%s sip:%s@%s SIP/2.0\r\n"
	                "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-4242-%d-%d;rport\r\n"
	                "From: <sip:%s@%s>;tag=4242reg%d\r\n"
	                "To: <sip:%s@%s>\r\n"
	                "Call-ID: %d-4242@127.0.0.1\r\n"
	                "CSeq: %d %s\r\n"
	                "Contact: <sip:%s@127.0.0.1:5070;transport=UDP>\r\n"
	                "%s"
	                "Max-Forwards: 70\r\n"
	                "User-Agent: sipp-pbx\r\n"
	                "%s"
	                "Content-Length: %zu\r\n\r\n%s",
	                method, invite ? "15551234567" : USER, host, n, cseq, USER, host, n,
	                invite ? "15551234567" : USER, host, n, cseq, method, USER, auth,
	                invite ? "Content-Type: application/sdp\r\n" : "Expires: 300\r\n",
	                invite ? strlen(sdp) : 0, invite ? sdp : "");
}

/* The Authorization / Proxy-Authorization line sipp writes for a fresh nonce. */
static void make_answer(struct sa_nonce_ctx *nc, const char *realm, const char *ha1, const char *method,
                        const char *uri, bool proxy, uint64_t now, char *out, size_t cap)
{
	char nonce[SA_NONCE_LEN + 1], resp[SA_DIGEST_HEX_MAX];
	if (sa_nonce_issue(nc, realm, SA_ALG_MD5, now, nonce) < 0)
		die("nonce issue");
	struct sa_digest_params p = { .alg = SA_ALG_MD5, .method = method, .uri = uri, .nonce = nonce,
	                              .nc = "00000001", .cnonce = "6b8b4567", .qop = "auth" };
	if (sa_digest_response(&p, ha1, resp) < 0)
		die("digest");
	snprintf(out, cap,
	         "%s: Digest username=\"%s\",realm=\"%s\",cnonce=\"6b8b4567\",nc=00000001,qop=auth,"
	         "uri=\"%s\",nonce=\"%s\",response=\"%s\",algorithm=MD5\r\n",
	         proxy ? "Proxy-Authorization" : "Authorization", USER, realm, uri, nonce, resp);
}

struct msgs {
	char **buf;
	int *len;
};

static struct msgs alloc_msgs(int n)
{
	struct msgs m = { calloc((size_t)n, sizeof(char *)), calloc((size_t)n, sizeof(int)) };
	if (!m.buf || !m.len)
		die("out of memory");
	return m;
}

static void report(const char *what, double *per_batch, int iters)
{
	qsort(per_batch, BATCHES, sizeof(double), cmp_double);
	printf("  %-58s %8.2f us\n", what, per_batch[BATCHES / 2] / iters * 1e6);
}

int main(int argc, char **argv)
{
	int iters = argc > 1 ? atoi(argv[1]) : 10000;   /* x7 batches x2 kinds must fit the replay table */
	if (iters < 100)
		iters = 100;
	char dir[] = "/tmp/sipauthd-micro.XXXXXX";
	if (!mkdtemp(dir))
		die("mkdtemp");

	struct sa_store *st;
	struct sa_account acc;
	struct sa_trunk tr;
	struct sa_credential cred;
	char why[128];
	int64_t now = (int64_t)time(NULL);
	if (sa_store_open(&st, dir, SA_STORE_RUNTIME) != 0 || sa_store_init(st, DOMAIN) != 0 ||
	    sa_store_account_create(st, "micro", now, &acc) != 0 ||
	    sa_store_trunk_create(st, acc.id, "micro", now, &tr) != 0 ||
	    sa_store_credential_create(st, tr.id, USER, PASS, strlen(PASS), 8, now, &cred, why, sizeof(why)) != 0)
		die("store set-up");

	unsigned char secret[SA_NONCE_SECRET_LEN];
	struct sa_nonce_ctx *nc = sa_nonce_ctx_new(30, 1u << 18);
	if (!nc || sa_store_nonce_secret(st, secret) != 0 || sa_nonce_key_set(nc, 1, secret) != 0)
		die("nonce set-up");
	struct sa_auth auth;
	struct sa_auth_cfg acfg = { .algs = { SA_ALG_MD5 }, .nalgs = 1 };
	if (sa_auth_init(&auth, st, nc, &acfg) != 0)
		die("auth set-up");
	sa_sipmsg_init();

	char realm[SA_REALM_MAX], host[SA_REALM_MAX], uri[300];
	sa_store_realm(tr.id, DOMAIN, realm, sizeof(realm));
	snprintf(host, sizeof(host), "%s", realm);
	for (char *p = host + 6; *p && *p != '.'; p++)   /* DNS-safe form, as the benchmark sends */
		if (*p == '_')
			*p = '-';
	char ha1[SA_DIGEST_HEX_MAX];
	snprintf(ha1, sizeof(ha1), "%s", cred.ha1[SA_ALG_MD5]);

	/* the messages: plain ones are reused, answered ones carry a nonce each */
	static char reg1[4096], inv1[4096];
	int reg1_len = make_request(reg1, sizeof(reg1), "REGISTER", host, 1, "", 1);
	int inv1_len = make_request(inv1, sizeof(inv1), "INVITE", host, 1, "", 1);
	int total = iters * BATCHES;
	struct msgs reg2 = alloc_msgs(total), inv2 = alloc_msgs(total);
	for (int i = 0; i < total; i++) {
		char line[1024];
		reg2.buf[i] = malloc(4096);
		inv2.buf[i] = malloc(4096);
		snprintf(uri, sizeof(uri), "sip:%s@%s", USER, host);
		make_answer(nc, realm, ha1, "REGISTER", uri, false, (uint64_t)now, line, sizeof(line));
		reg2.len[i] = make_request(reg2.buf[i], 4096, "REGISTER", host, 2, line, i);
		snprintf(uri, sizeof(uri), "sip:15551234567@%s", host);
		make_answer(nc, realm, ha1, "INVITE", uri, true, (uint64_t)now, line, sizeof(line));
		inv2.len[i] = make_request(inv2.buf[i], 4096, "INVITE", host, 2, line, i);
	}

	struct sa_msg m;
	struct sa_msg_error err;
	struct sa_auth_result r;
	struct sa_peer peer = { .addr = "127.0.0.1", .port = 5070, .transport = "udp" };
	struct sa_reg_cfg rcfg = { .min_expires = 60, .max_expires = 3600, .default_expires = 3600, .max_contacts = 10 };
	char out[8192], hdrs[1024], tag[17];
	double t[BATCHES];
	volatile long sink = 0;

	printf("micro: %d messages per batch, median of %d batches, CPU time per message\n", iters, BATCHES);

#define BENCH(label, body)                                   \
	for (int b = 0; b < BATCHES; b++) {                      \
		double t0 = cpu_now();                               \
		for (int i = b * iters; i < (b + 1) * iters; i++) { \
			body;                                            \
		}                                                    \
		t[b] = cpu_now() - t0;                               \
	}                                                        \
	report(label, t, iters)

	BENCH("parse+free REGISTER, no credentials", {
		if (sa_msg_parse(&m, reg1, (size_t)reg1_len, false, &err) < 0)
			die("parse reg1");
		sink += m.nhdr;
		sa_msg_free(&m);
	});
	BENCH("parse+free REGISTER with Authorization", {
		if (sa_msg_parse(&m, reg2.buf[i], (size_t)reg2.len[i], false, &err) < 0)
			die("parse reg2");
		sink += m.nhdr;
		sa_msg_free(&m);
	});
	BENCH("parse+free INVITE with Proxy-Authorization and SDP", {
		if (sa_msg_parse(&m, inv2.buf[i], (size_t)inv2.len[i], false, &err) < 0)
			die("parse inv2");
		sink += m.nhdr;
		sa_msg_free(&m);
	});
	BENCH("challenge: parse + check + sa_auth_challenge + 401 written", {
		if (sa_msg_parse(&m, reg1, (size_t)reg1_len, false, &err) < 0)
			die("parse reg1");
		sa_auth_check(&auth, &m, tr.id, realm, NULL, (uint64_t)now, &r);
		long n = sa_auth_challenge(&auth, realm, "127.0.0.1", false, false, (uint64_t)now, hdrs, sizeof(hdrs));
		sa_msg_local_tag(&m, tag_key, tag);
		n = sa_msg_response(&m, &peer, 401, NULL, tag, hdrs, out, sizeof(out));
		sink += n;
		sa_msg_free(&m);
	});
	BENCH("  of which sa_auth_challenge alone (nonce HMAC + header)", {
		sink += sa_auth_challenge(&auth, realm, "127.0.0.1", false, false, (uint64_t)now, hdrs, sizeof(hdrs));
	});
	BENCH("verify: parse + sa_auth_check of a good MD5 REGISTER answer", {
		if (sa_msg_parse(&m, reg2.buf[i], (size_t)reg2.len[i], false, &err) < 0)
			die("parse reg2");
		sa_auth_check(&auth, &m, tr.id, realm, NULL, (uint64_t)now, &r);
		if (!r.ok)
			die("REGISTER answer refused");
		sa_msg_free(&m);
	});
	/* a fresh parse of the same messages for the registrar (their nonces are used up) */
	BENCH("registrar: parse + sa_registrar_apply (refresh: LMDB write)", {
		if (sa_msg_parse(&m, reg2.buf[i], (size_t)reg2.len[i], false, &err) < 0)
			die("parse reg2");
		struct sa_reg_result res;
		memset(&res, 0, sizeof(res));
		sa_registrar_apply(st, &rcfg, &m, false, &cred, 1, &peer, now, &res);
		if (res.status != 200)
			die("registrar refused the refresh");
		sa_msg_free(&m);
	});
	BENCH("  minus its parse (parse+free REGISTER again, for reference)", {
		if (sa_msg_parse(&m, reg2.buf[i], (size_t)reg2.len[i], false, &err) < 0)
			die("parse reg2");
		sa_msg_free(&m);
	});
	BENCH("challenge INVITE: parse + check + 407 written", {
		if (sa_msg_parse(&m, inv1, (size_t)inv1_len, false, &err) < 0)
			die("parse inv1");
		sa_auth_check(&auth, &m, tr.id, realm, NULL, (uint64_t)now, &r);
		long n = sa_auth_challenge(&auth, realm, "127.0.0.1", true, false, (uint64_t)now, hdrs, sizeof(hdrs));
		sa_msg_local_tag(&m, tag_key, tag);
		n = sa_msg_response(&m, &peer, 407, NULL, tag, hdrs, out, sizeof(out));
		sink += n;
		sa_msg_free(&m);
	});
	BENCH("verify INVITE: parse + sa_auth_check of a good answer", {
		if (sa_msg_parse(&m, inv2.buf[i], (size_t)inv2.len[i], false, &err) < 0)
			die("parse inv2");
		sa_auth_check(&auth, &m, tr.id, realm, NULL, (uint64_t)now, &r);
		if (!r.ok)
			die("INVITE answer refused");
		sa_msg_free(&m);
	});

	/* the INVITE as a transaction keeps it once forwarded: nothing of it is parsed again */
	struct sa_msg fm;
	if (sa_msg_parse(&fm, inv2.buf[0], (size_t)inv2.len[0], false, &err) < 0)
		die("parse inv2");
	struct sa_fwd fwd = { .via = "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKAbCdEfGhIjKlMnOpQrStUv;rport",
	                      .peer = &peer, .rr = { "<sip:127.0.0.1:5060;lr>", NULL }, .strip_realm = realm };
	BENCH("txn: forward INVITE, keep it with its fields, free (lib/txn)", {
		struct sa_txn_req *k = sa_txn_req_new(&fm, &fwd);
		if (!k)
			die("sa_txn_req_new");
		sink += (long)k->len;
		sa_txn_req_free(k);
	});
	struct sa_txn_req *kept = sa_txn_req_new(&fm, &fwd);
	if (!kept)
		die("sa_txn_req_new");
	BENCH("  CANCEL from the kept fields", { sink += sa_txn_cancel(kept, out, sizeof(out)); });
	BENCH("  408 to the caller from the kept fields", {
		sink += sa_txn_answer(kept, 408, "0123456789abcdef", out, sizeof(out));
	});
	BENCH("  failover: the copy for the next gateway", {
		struct sa_txn_req *next = sa_txn_req_next_hop(kept, fwd.via, fwd.rr);
		if (!next)
			die("sa_txn_req_next_hop");
		sink += (long)next->len;
		sa_txn_req_free(next);
	});
	sa_txn_req_free(kept);
	sa_msg_free(&fm);

	(void)sink;
	sa_nonce_ctx_free(nc);
	sa_store_close(st);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "micro: could not remove %s\n", dir);
	return 0;
}
