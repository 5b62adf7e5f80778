/* test_calls.c: the call table: lookup by Call-ID and tags from either side, by credential, by age, growth. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "calls.h"

static struct sa_call *make_call(const char *call_id, const char *ftag, const char *ttag, const char *cred,
                                 int64_t started)
{
	struct sa_call *c = sa_call_new();
	const char *t[SA_DT_COUNT] = { call_id, ftag, ttag, "sip:pbx@198.51.100.7", "", "<sip:pbx@x>;tag=a",
	                               "sip:gw@192.0.2.10", "<sip:gw@192.0.2.10;lr>", "<sip:100@x>;tag=b" };
	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(sa_dialog_set_text(&c->d, t), 0);
	snprintf(c->d.cred_id, sizeof(c->d.cred_id), "%s", cred);
	snprintf(c->d.trunk_id, sizeof(c->d.trunk_id), "trunk_t1");
	c->d.started_at = started;
	return c;
}

/* An in-dialog message as the raw path fills it. */
static struct sa_msg msg(const char *call_id, const char *from_tag, const char *to_tag)
{
	struct sa_msg m;
	memset(&m, 0, sizeof(m));
	m.call_id = call_id;
	m.from_tag = from_tag;
	m.to_tag = to_tag;
	return m;
}

START_TEST(found_from_either_side_and_not_with_other_tags)
{
	struct sa_calls *t = sa_calls_new();
	ck_assert_int_eq(sa_calls_add(t, make_call("abc@h", "caller1", "callee1", "cred_a", 100)), 0);
	int side = 0;
	struct sa_msg m = msg("abc@h", "caller1", "callee1");
	ck_assert_ptr_nonnull(sa_calls_find(t, &m, &side));
	ck_assert_int_eq(side, 1);
	m = msg("abc@h", "callee1", "caller1");
	ck_assert_ptr_nonnull(sa_calls_find(t, &m, &side));
	ck_assert_int_eq(side, 2);
	/* a stranger guessing a tag, another Call-ID, or no To tag: nothing */
	m = msg("abc@h", "caller1", "guess");
	ck_assert_ptr_null(sa_calls_find(t, &m, &side));
	m = msg("abd@h", "caller1", "callee1");
	ck_assert_ptr_null(sa_calls_find(t, &m, &side));
	m = msg("abc@h", "caller1", NULL);
	ck_assert_ptr_null(sa_calls_find(t, &m, &side));
	sa_calls_free(t);
}
END_TEST

START_TEST(calls_by_credential_and_by_age)
{
	struct sa_calls *t = sa_calls_new();
	char id[32];
	for (int i = 0; i < 30; i++) {
		snprintf(id, sizeof(id), "call-%d", i);
		ck_assert_int_eq(sa_calls_add(t, make_call(id, "f", "t", i % 3 == 0 ? "cred_a" : "cred_b", 100 + i)), 0);
	}
	ck_assert_uint_eq(sa_calls_count(t), 30);
	ck_assert_uint_eq(sa_calls_credential_count(t, "cred_a"), 10);
	ck_assert_uint_eq(sa_calls_credential_count(t, "cred_b"), 20);
	ck_assert_uint_eq(sa_calls_credential_count(t, "cred_zz"), 0);
	int n = 0;
	for (struct sa_call *c = sa_calls_of_credential(t, "cred_a"); c; c = sa_calls_next_of_credential(c)) {
		ck_assert_str_eq(c->d.cred_id, "cred_a");
		n++;
	}
	ck_assert_int_eq(n, 10);
	/* revocation: end every call of one credential, the others stay */
	struct sa_call *c;
	while ((c = sa_calls_of_credential(t, "cred_a")))
		sa_calls_remove(t, c);
	ck_assert_uint_eq(sa_calls_count(t), 20);
	ck_assert_ptr_null(sa_calls_of_credential(t, "cred_a"));
	/* oldest first, in the order they started */
	int64_t last = 0;
	n = 0;
	for (c = sa_calls_oldest(t); c; c = sa_calls_newer(c), n++) {
		ck_assert_int_gt(c->d.started_at, last);
		last = c->d.started_at;
	}
	ck_assert_int_eq(n, 20);
	ck_assert_int_eq(sa_calls_oldest(t)->d.started_at, 101);
	sa_calls_free(t);
}
END_TEST

/* Calls of one credential end in any order (the oldest first is the far end
 * of its list): the list stays exact after each removal. */
START_TEST(calls_of_one_credential_end_in_any_order)
{
	struct sa_calls *t = sa_calls_new();
	struct sa_call *calls[1000];
	char id[32];
	for (int i = 0; i < 1000; i++) {
		snprintf(id, sizeof(id), "one-%d", i);
		calls[i] = make_call(id, "f", "t", "cred_pbx", i);
		ck_assert_int_eq(sa_calls_add(t, calls[i]), 0);
	}
	for (int i = 0; i < 1000; i += 2)   /* every other one, oldest first */
		sa_calls_remove(t, calls[i]);
	sa_calls_remove(t, calls[999]);    /* the newest: the head of the list */
	ck_assert_uint_eq(sa_calls_credential_count(t, "cred_pbx"), 499);
	int n = 0;
	for (struct sa_call *c = sa_calls_of_credential(t, "cred_pbx"); c; c = sa_calls_next_of_credential(c)) {
		int i = (int)c->d.started_at;
		ck_assert_int_eq(i % 2, 1);
		ck_assert_int_ne(i, 999);
		n++;
	}
	ck_assert_int_eq(n, 499);
	struct sa_call *c;
	while ((c = sa_calls_oldest(t)))
		sa_calls_remove(t, c);
	ck_assert_uint_eq(sa_calls_count(t), 0);
	ck_assert_ptr_null(sa_calls_of_credential(t, "cred_pbx"));
	sa_calls_free(t);
}
END_TEST

static void count_cb(const char *cred_id, void *arg)
{
	(void)cred_id;
	(*(int *)arg)++;
}

/* Call-IDs in one bucket of a fresh table (1024 buckets): each call found by
 * its own Call-ID and tags, and a removal leaves the other found. */
START_TEST(calls_that_share_a_bucket_are_told_apart)
{
	char id[3][40];
	int found = 0;
	for (unsigned i = 0; found < 3 && i < 1000000; i++) {
		char k[40];
		snprintf(k, sizeof(k), "%u-bucket@198.51.100.7", i);
		if (found && (sa_str_hash(k) & 1023) != (sa_str_hash(id[0]) & 1023))
			continue;
		memcpy(id[found++], k, sizeof(k));
	}
	ck_assert_int_eq(found, 3);
	struct sa_calls *t = sa_calls_new();
	struct sa_call *a = make_call(id[0], "fa", "ta", "cred_a", 100);
	struct sa_call *b = make_call(id[1], "fb", "tb", "cred_a", 101);
	ck_assert_int_eq(sa_calls_add(t, a), 0);
	ck_assert_int_eq(sa_calls_add(t, b), 0);
	int side = 0;
	struct sa_msg m = msg(id[0], "fa", "ta");
	ck_assert_ptr_eq(sa_calls_find(t, &m, &side), a);
	ck_assert_int_eq(side, 1);
	m = msg(id[1], "tb", "fb");
	ck_assert_ptr_eq(sa_calls_find(t, &m, &side), b);
	ck_assert_int_eq(side, 2);
	m = msg(id[2], "fa", "ta");   /* same bucket, same tags, another Call-ID */
	ck_assert_ptr_null(sa_calls_find(t, &m, &side));
	m = msg(id[1], "fa", "ta");   /* b's Call-ID, a's tags */
	ck_assert_ptr_null(sa_calls_find(t, &m, &side));
	sa_calls_remove(t, b);   /* the head of the chain */
	m = msg(id[0], "fa", "ta");
	ck_assert_ptr_eq(sa_calls_find(t, &m, &side), a);
	m = msg(id[1], "fb", "tb");
	ck_assert_ptr_null(sa_calls_find(t, &m, &side));
	ck_assert_uint_eq(sa_calls_count(t), 1);
	sa_calls_free(t);
}
END_TEST

START_TEST(the_table_grows_and_lookups_stay_exact)
{
	struct sa_calls *t = sa_calls_new();
	char id[48], cred[48];
	for (int i = 0; i < 20000; i++) {
		snprintf(id, sizeof(id), "%08x@grow", i * 2654435761u);
		snprintf(cred, sizeof(cred), "cred_%d", i % 5000);
		ck_assert_int_eq(sa_calls_add(t, make_call(id, "f", "t", cred, i)), 0);
	}
	int side;
	for (int i = 0; i < 20000; i += 97) {
		snprintf(id, sizeof(id), "%08x@grow", i * 2654435761u);
		struct sa_msg m = msg(id, "t", "f");
		struct sa_call *c = sa_calls_find(t, &m, &side);
		ck_assert_ptr_nonnull(c);
		ck_assert_str_eq(c->d.call_id, id);
		ck_assert_int_eq(side, 2);
	}
	ck_assert_uint_eq(sa_calls_credential_count(t, "cred_4999"), 4);
	int ncreds = 0;
	sa_calls_each_credential(t, count_cb, &ncreds);
	ck_assert_int_eq(ncreds, 5000);
	sa_calls_free(t);
}
END_TEST

START_TEST(dialog_text_is_one_allocation_and_refuses_the_oversized)
{
	struct sa_dialog d;
	memset(&d, 0, sizeof(d));
	char big[2000];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	const char *t[SA_DT_COUNT] = { "id", "a", "b", big, "", "", "", "", "" };
	ck_assert_int_eq(sa_dialog_set_text(&d, t), -1);
	t[SA_DT_CALLER_TARGET] = "sip:pbx@h";
	ck_assert_int_eq(sa_dialog_set_text(&d, t), 0);
	ck_assert_str_eq(sa_dialog_text(&d, SA_DT_CALLER_TARGET), "sip:pbx@h");
	ck_assert_str_eq(d.callee.route, "");
	ck_assert_str_eq(d.call_id, "id");
	sa_dialog_free(&d);
	ck_assert_ptr_null(d.text);
}
END_TEST

/* The ACK for a late 2xx and the BYE after it: to the callee's target along
 * its Route set, as the caller; the ACK with the INVITE's CSeq, the BYE one above. */
START_TEST(ack_and_bye_to_the_callee)
{
	struct sa_call *c = make_call("late@h", "ftag", "ttag", "cred_a", 1);
	c->d.caller.cseq = 7;
	char out[1024];
	long n = sa_dialog_ack(&c->d, "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKack", out, sizeof(out));
	ck_assert_int_gt(n, 0);
	out[n] = '\0';
	ck_assert_str_eq(out, "ACK sip:gw@192.0.2.10 SIP/2.0\r\n"
	                      "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKack\r\n"
	                      "Max-Forwards: 70\r\n"
	                      "Route: <sip:gw@192.0.2.10;lr>\r\n"
	                      "From: <sip:pbx@x>;tag=a\r\n"
	                      "To: <sip:100@x>;tag=b\r\n"
	                      "Call-ID: late@h\r\n"
	                      "CSeq: 7 ACK\r\n"
	                      "Content-Length: 0\r\n\r\n");
	n = sa_dialog_bye(&c->d, false, "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKbye", "SIP;cause=200;text=\"x\"",
	                  out, sizeof(out));
	ck_assert_int_gt(n, 0);
	out[n] = '\0';
	ck_assert_ptr_nonnull(strstr(out, "BYE sip:gw@192.0.2.10 SIP/2.0\r\n"));
	ck_assert_ptr_nonnull(strstr(out, "\r\nCSeq: 8 BYE\r\n"));
	ck_assert_ptr_nonnull(strstr(out, "\r\nReason: SIP;cause=200;text=\"x\"\r\n"));
	ck_assert_int_eq(sa_dialog_ack(&c->d, "v", out, 40), -1);   /* does not fit: refused, not cut */
	sa_call_free(c);
}
END_TEST

/* ---- calls.state lines ---- */

static const struct sa_call_flow_text PBX_END = { "udp", "198.51.100.7", 5060, "udp:192.0.2.1:5060" };
static const struct sa_call_flow_text GW_END = { "tcp", "2001:db8::10", 5070, "tcp:[2001:db8::1]:5060" };

START_TEST(a_call_line_round_trips)
{
	struct sa_call *c = make_call("abc@pbx", "caller-tag", "callee-tag", "cred_x", 1796000000);
	c->d.inbound = true;
	c->d.caller.cseq = 7;
	c->d.callee.cseq = 4294967296ul;
	struct sa_call_flow_text ends[2] = { PBX_END, GW_END }, back[2];
	char *line = sa_call_line(c, ends);
	ck_assert_ptr_nonnull(line);
	ck_assert_ptr_null(strchr(line, '\n'));   /* one line */
	struct sa_call *r = sa_call_from_line(line, back);
	ck_assert_ptr_nonnull(r);
	ck_assert_str_eq(r->d.call_id, "abc@pbx");
	ck_assert_str_eq(r->d.caller_tag, c->d.caller_tag);
	ck_assert_str_eq(r->d.callee_tag, c->d.callee_tag);
	ck_assert_str_eq(r->d.caller.target, c->d.caller.target);
	ck_assert_str_eq(r->d.caller.route, c->d.caller.route);
	ck_assert_str_eq(r->d.callee.name, c->d.callee.name);
	ck_assert_str_eq(r->d.cred_id, "cred_x");
	ck_assert_str_eq(r->d.trunk_id, "trunk_t1");
	ck_assert(r->d.inbound);
	ck_assert_int_eq(r->d.started_at, 1796000000);
	ck_assert_uint_eq(r->d.caller.cseq, 7);
	ck_assert_uint_eq(r->d.callee.cseq, 4294967296ul);
	ck_assert_str_eq(back[0].transport, "udp");
	ck_assert_str_eq(back[0].address, "198.51.100.7");
	ck_assert_uint_eq(back[0].port, 5060);
	ck_assert_str_eq(back[0].listener, "udp:192.0.2.1:5060");
	ck_assert_str_eq(back[1].address, "2001:db8::10");
	ck_assert_str_eq(back[1].listener, "tcp:[2001:db8::1]:5060");
	free(line);
	sa_call_free(c);
	sa_call_free(r);
}
END_TEST

START_TEST(a_call_line_escapes_and_refuses_what_is_not_utf8)
{
	struct sa_call_flow_text ends[2] = { PBX_END, GW_END }, back[2];
	const char *name = "\"Caf\xc3\xa9 \\\\ \x01\t\" <sip:pbx@x>;tag=a";   /* quote, UTF-8, backslash, controls */
	const char *t[SA_DT_COUNT] = { "id\"1@h", "f\\t", "t", "sip:pbx@198.51.100.7", "", name,
	                               "sip:gw@192.0.2.10", "<sip:gw@192.0.2.10;lr>", "<sip:100@x>;tag=b" };
	struct sa_call *c = sa_call_new();
	ck_assert_int_eq(sa_dialog_set_text(&c->d, t), 0);
	snprintf(c->d.cred_id, sizeof(c->d.cred_id), "cred_x");
	c->d.started_at = -5;
	char *line = sa_call_line(c, ends);
	ck_assert_ptr_nonnull(line);
	ck_assert_ptr_nonnull(strstr(line, "\"call_id\":\"id\\\"1@h\",\"caller_tag\":\"f\\\\t\""));
	ck_assert_ptr_nonnull(strstr(line, "\\u0001\\u0009"));
	struct sa_call *r = sa_call_from_line(line, back);
	ck_assert_ptr_nonnull(r);
	ck_assert_str_eq(r->d.call_id, "id\"1@h");
	ck_assert_str_eq(r->d.caller_tag, "f\\t");
	ck_assert_str_eq(r->d.caller.name, name);
	ck_assert_int_eq(r->d.started_at, -5);
	char *end = sa_call_end_line(c);
	ck_assert_str_eq(end, "{\"end\":\"id\\\"1@h\",\"caller_tag\":\"f\\\\t\",\"callee_tag\":\"t\"}");
	free(end);
	free(line);
	sa_call_free(r);
	sa_call_free(c);
	/* a Latin-1 byte, a lone continuation, an overlong form, a surrogate: no line (jansson would refuse it) */
	const char *bad[] = { "Caf\xe9", "\x80", "\xc0\xaf", "\xed\xa0\x80", "\xf5\x80\x80\x80" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *tb[SA_DT_COUNT] = { "id@h", "f", "t", "sip:pbx@h", "", bad[i], "sip:gw@h", "", "<sip:100@x>" };
		c = sa_call_new();
		ck_assert_int_eq(sa_dialog_set_text(&c->d, tb), 0);
		ck_assert_ptr_null(sa_call_line(c, ends));
		sa_call_free(c);
	}
}
END_TEST

START_TEST(the_header_names_kind_and_version)
{
	char *h = sa_calls_header_line(3);
	ck_assert_ptr_nonnull(h);
	ck_assert_str_eq(h, "{\"kind\":\"sipauthd-calls\",\"version\":2,\"calls\":3}");
	ck_assert(sa_calls_header_ok(h));
	free(h);
	/* another version, another kind, or the raw struct bytes of version 1: refused */
	ck_assert(!sa_calls_header_ok("{\"kind\":\"sipauthd-calls\",\"version\":3,\"calls\":3}"));
	ck_assert(!sa_calls_header_ok("{\"kind\":\"sipauthd-calls\",\"version\":1}"));
	ck_assert(!sa_calls_header_ok("{\"kind\":\"other\",\"version\":2}"));
	ck_assert(!sa_calls_header_ok("{\"version\":2}"));
	ck_assert(!sa_calls_header_ok("\x01\x02SACL"));
	ck_assert(!sa_calls_header_ok(""));
}
END_TEST

/* Replays lines into t: how many it refused. */
static int replay(struct sa_calls *t, const char *const *lines, int n)
{
	int refused = 0;
	for (int i = 0; i < n; i++) {
		struct sa_call *added;
		struct sa_call_flow_text ends[2];
		if (sa_calls_journal_apply(t, lines[i], &added, ends) < 0)
			refused++;
	}
	return refused;
}

START_TEST(a_journal_replayed_leaves_the_calls_still_up)
{
	struct sa_call *a = make_call("a@pbx", "fa", "ta", "cred_a", 10), *b = make_call("b@pbx", "fb", "tb", "cred_b", 11),
	               *b2 = make_call("b@pbx", "fb", "other", "cred_b", 12);   /* same Call-ID, another dialog */
	struct sa_call_flow_text ends[2] = { PBX_END, GW_END };
	char *la = sa_call_line(a, ends), *lb = sa_call_line(b, ends), *lb2 = sa_call_line(b2, ends);
	char *ea = sa_call_end_line(a), *eb = sa_call_end_line(b);
	ck_assert_ptr_nonnull(ea);
	ck_assert_str_eq(ea, "{\"end\":\"a@pbx\",\"caller_tag\":\"fa\",\"callee_tag\":\"ta\"}");

	struct sa_calls *t = sa_calls_new();
	const char *const lines[] = { la, lb, lb2, ea, eb };
	ck_assert_int_eq(replay(t, lines, 5), 0);
	ck_assert_uint_eq(sa_calls_count(t), 1);   /* a and b ended; b2 (only its To tag differs) is up */
	struct sa_call *up = sa_calls_oldest(t);
	ck_assert_str_eq(up->d.callee_tag, "other");
	ck_assert_ptr_eq(sa_calls_find_dialog(t, "b@pbx", "fb", "other"), up);
	ck_assert_ptr_null(sa_calls_find_dialog(t, "b@pbx", "fb", "tb"));
	ck_assert_ptr_null(sa_calls_find_dialog(t, "b@pbx", "tb", "fb"));   /* tags are not swapped here */
	ck_assert_ptr_eq(sa_calls_find_caller(t, "b@pbx", "fb"), up);      /* any callee tag: a fork's first */
	ck_assert_ptr_null(sa_calls_find_caller(t, "b@pbx", "other"));
	ck_assert_ptr_null(sa_calls_find_caller(t, "a@pbx", "fa"));         /* ended */

	/* an end for a call it never had, the same call twice (a rewrite cut short), damage */
	const char *const more[] = { eb, lb2, "{\"end\":\"x\"}", "{\"end\":\"x\",\"caller_tag\":1,\"callee_tag\":\"t\"}",
	                             "not json", "" };
	ck_assert_int_eq(replay(t, more, 6), 4);
	ck_assert_uint_eq(sa_calls_count(t), 1);
	ck_assert_ptr_eq(sa_calls_oldest(t), sa_calls_find_dialog(t, "b@pbx", "fb", "other"));
	ck_assert_uint_eq(sa_calls_credential_count(t, "cred_b"), 1);
	sa_calls_free(t);
	free(la), free(lb), free(lb2), free(ea), free(eb);
	sa_call_free(a), sa_call_free(b), sa_call_free(b2);
}
END_TEST

START_TEST(the_journal_header_names_its_own_kind)
{
	char *h = sa_calls_journal_header();
	ck_assert_ptr_nonnull(h);
	ck_assert_str_eq(h, "{\"kind\":\"sipauthd-calls-journal\",\"version\":2}");
	ck_assert(sa_calls_journal_header_ok(h));
	ck_assert(!sa_calls_header_ok(h));   /* neither file is taken for the other */
	char *state = sa_calls_header_line(0);
	ck_assert(!sa_calls_journal_header_ok(state));
	ck_assert(!sa_calls_journal_header_ok("{\"kind\":\"sipauthd-calls-journal\",\"version\":3}"));
	ck_assert(!sa_calls_journal_header_ok(""));
	free(h);
	free(state);
}
END_TEST

START_TEST(a_damaged_line_is_no_call)
{
	struct sa_call *c = make_call("abc@pbx", "f", "t", "cred_x", 5);
	struct sa_call_flow_text ends[2] = { PBX_END, GW_END }, back[2];
	char *line = sa_call_line(c, ends);
	ck_assert_ptr_nonnull(line);
	/* cut anywhere: never a call */
	size_t n = strlen(line);
	for (size_t cut = 0; cut < n; cut += 7) {
		char *part = strndup(line, cut);
		ck_assert_ptr_null(sa_call_from_line(part, back));
		free(part);
	}
	/* a field of the wrong type, a port out of range, an over-long credential id */
	ck_assert_ptr_null(sa_call_from_line("{\"call_id\":1}", back));
	char *bad = strdup(line), *p = strstr(bad, "\"port\":5060");
	ck_assert_ptr_nonnull(p);
	memcpy(p, "\"port\":0000", 11);
	ck_assert_ptr_null(sa_call_from_line(bad, back));
	free(bad);
	snprintf(c->d.cred_id, sizeof(c->d.cred_id), "%0*d", (int)sizeof(c->d.cred_id) - 1, 7);
	char *longer = sa_call_line(c, ends);
	char *q = strstr(longer, "\"cred_id\":\"");
	ck_assert_ptr_nonnull(q);
	size_t at = (size_t)(q - longer) + 11;
	char *grown = malloc(strlen(longer) + 2);
	memcpy(grown, longer, at);
	grown[at] = '9';
	strcpy(grown + at + 1, longer + at);
	ck_assert_ptr_null(sa_call_from_line(grown, back));
	struct sa_call *fits = sa_call_from_line(longer, back);   /* the longest id that fits */
	ck_assert_ptr_nonnull(fits);
	sa_call_free(fits);
	free(grown);
	free(longer);
	free(line);
	sa_call_free(c);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("calls");
	TCase *tc = tcase_create("calls");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, found_from_either_side_and_not_with_other_tags);
	tcase_add_test(tc, calls_by_credential_and_by_age);
	tcase_add_test(tc, calls_of_one_credential_end_in_any_order);
	tcase_add_test(tc, a_call_line_round_trips);
	tcase_add_test(tc, a_call_line_escapes_and_refuses_what_is_not_utf8);
	tcase_add_test(tc, the_header_names_kind_and_version);
	tcase_add_test(tc, a_damaged_line_is_no_call);
	tcase_add_test(tc, a_journal_replayed_leaves_the_calls_still_up);
	tcase_add_test(tc, the_journal_header_names_its_own_kind);
	tcase_add_test(tc, the_table_grows_and_lookups_stay_exact);
	tcase_add_test(tc, calls_that_share_a_bucket_are_told_apart);
	tcase_add_test(tc, dialog_text_is_one_allocation_and_refuses_the_oversized);
	tcase_add_test(tc, ack_and_bye_to_the_callee);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
