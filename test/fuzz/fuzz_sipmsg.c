/* fuzz_sipmsg.c: libFuzzer harness: parse one message, answer it, and rewrite it as the proxy would. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy.h"
#include "sipmsg.h"
#include "txn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct sa_peer peer = { .addr = "192.0.2.7", .port = 5062, .transport = "udp" };

/* A bare CR in the input may be echoed back to its sender in our 400. */
static bool input_bare_cr;

/* Whatever we write must frame as a message again: a next hop scans it. */
static void must_scan(const char *out, long n)
{
	struct sa_msg m;
	struct sa_msg_error err;
	if (n > 0 && sa_msg_scan(&m, out, (size_t)n, &err) < 0 &&
	    !(input_bare_cr && strcmp(err.reason, "bare CR in a header") == 0))
		abort();
}

/* refused: the answer may echo up to a full index of Vias, one header more
 * than we would take in; it only goes back to the sender */
static void answer(const struct sa_msg *m, int status, bool refused)
{
	char out[8192], tag[17];
	struct sa_msg r;
	struct sa_msg_error err;
	static const unsigned char key[SA_TAG_KEY_LEN] = { 1 };
	sa_msg_local_tag(m, key, tag);
	long n = sa_msg_response(m, &peer, status, NULL, tag,
	                         "Proxy-Authenticate: Digest realm=\"r\", nonce=\"n\"\r\n", out, sizeof(out));
	if (refused && n > 0 && sa_msg_scan(&r, out, (size_t)n, &err) < 0 &&
	    strcmp(err.reason, "too many headers") == 0)
		return;
	must_scan(out, n);
}

/* Forward as sipauthd does (our Via and Record-Route, a Route popped,
 * credentials for our realm dropped) and keep it as a transaction does;
 * then build the CANCEL, the ACK and our own answer from what it kept, and
 * the copy for another gateway, which must be what forwarding there writes. */
static void forward(const struct sa_msg *m, const char *ruri)
{
	struct sa_fwd f = {
		.ruri = ruri,
		.via = "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKfuzz1;rport",
		.peer = &peer,
		.rr = { "<sip:192.0.2.1:5060;lr>", "<sip:192.0.2.1:5060;transport=tcp;lr>" },
		.pop_route = 1,
		.strip_realm = "trunk-trunk_x.sip.example.com",
	};
	struct sa_txn_req *r = sa_txn_req_new(m, &f);
	if (!r)
		return;
	must_scan(r->bytes, (long)r->len);
	char hop[8192];
	must_scan(hop, sa_txn_cancel(r, hop, sizeof(hop)));
	must_scan(hop, sa_txn_ack(r, m, hop, sizeof(hop)));
	must_scan(hop, sa_txn_answer(r, 408, "0123456789abcdef", hop, sizeof(hop)));
	f.via = "SIP/2.0/TCP [2001:db8::1]:5061;branch=z9hG4bKfuzz2;rport";
	f.rr[1] = NULL;
	struct sa_txn_req *next = sa_txn_req_next_hop(r, f.via, f.rr);
	size_t cap = m->len + 2048;
	char *out = malloc(cap);
	long n = out ? sa_proxy_request(m, &f, out, cap) : -1;
	if (next && n >= 0 && (next->len != (size_t)n || memcmp(next->bytes, out, (size_t)n) != 0))
		abort();
	free(out);
	sa_txn_req_free(next);
	sa_txn_req_free(r);
}

/* A request with Routes as a strict router's would go on (RFC 3261 §16.4):
 * it must frame again, and read back with one Route value fewer. */
static void strict_route(const struct sa_msg *m)
{
	size_t cap = m->len + 64;
	char *out = malloc(cap);
	long n = out && m->nroutes ? sa_proxy_strict_route(m, out, cap) : -1;
	struct sa_msg r;
	struct sa_msg_error err;
	if (n >= 0 && sa_msg_parse(&r, out, (size_t)n, false, &err) == 0) {
		if (r.nroutes + 1 != m->nroutes)
			abort();
		sa_msg_free(&r);
	} else if (n >= 0) {
		sa_msg_free(&r);
	}
	must_scan(out, n);
	free(out);
}

static void relay(const struct sa_msg *m)
{
	char *out = malloc(m->len ? m->len : 1);
	if (!out)
		return;
	must_scan(out, sa_proxy_response(m, out, m->len));
	free(out);
}

/* The raw parser, where it reads a message at all, must give libosip2's
 * verdict and view (test/unit/test_sipmsg_view.c does it on the corpus). */
static void same_view(const char *buf, size_t size, bool stream)
{
	struct sa_msg r, o;
	struct sa_msg_error er = { 0 }, eo = { 0 };
	int rr = sa_msg_parse_path(&r, buf, size, stream, SA_PATH_RAW, &er);
	int ro = sa_msg_parse_path(&o, buf, size, stream, SA_PATH_OSIP, &eo);
	bool declined = rr < 0 && er.status == 0;
	if (!declined && (rr != ro || (rr < 0 && er.status != eo.status) || (rr == 0 && sa_msg_view_diff(&r, &o))))
		abort();
	sa_msg_free(&r);
	sa_msg_free(&o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ready;
	if (!ready) {
		sa_sipmsg_init();
		ready = 1;
	}
	if (size > SA_SIP_MAX_MSG)
		return 0;
	/* an exact-size copy, so that any read past the end is caught */
	char *buf = malloc(size ? size : 1);
	if (!buf)
		return 0;
	memcpy(buf, data, size);
	input_bare_cr = false;
	for (size_t i = 0; i < size; i++)
		input_bare_cr |= buf[i] == '\r' && (i + 1 == size || buf[i + 1] != '\n');
	for (int stream = 0; stream < 2; stream++) {
		struct sa_msg m;
		struct sa_msg_error err = { 0 };
		same_view(buf, size, stream);
		if (sa_msg_parse(&m, buf, size, stream, &err) < 0) {
			if (m.nhdr > 0 && err.status)
				answer(&m, err.status, true);
		} else if (m.request) {
			answer(&m, 407, false);
			forward(&m, NULL);
			forward(&m, "sip:pbx@192.0.2.9:5070;transport=udp");
			strict_route(&m);
		} else {
			relay(&m);
		}
		sa_msg_free(&m);
	}
	free(buf);
	return 0;
}
