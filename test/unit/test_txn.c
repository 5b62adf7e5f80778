#define _GNU_SOURCE
/* test_txn.c: timer outcomes one by one (RFC 3261 §17.1, RFC 4320), random branches, what a transaction keeps of its request, and the per-source budget. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "siphash.h"
#include "txn.h"

#define T1 SA_TXN_T1_MS
#define T2 SA_TXN_T2_MS

START_TEST(branches_are_random_and_carry_the_cookie)
{
	char a[SA_TXN_BRANCH_LEN + 1], b[SA_TXN_BRANCH_LEN + 1];
	ck_assert_int_eq(sa_txn_branch_new(a), 0);
	ck_assert_int_eq(sa_txn_branch_new(b), 0);
	ck_assert_uint_eq(strlen(a), 29);
	ck_assert(strncmp(a, "z9hG4bK", 7) == 0);
	ck_assert_str_ne(a, b);
	/* token characters only (RFC 3261 §25.1) */
	ck_assert_uint_eq(strspn(a + 7, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"), 22);
	/* no two of many share a prefix the way a counter's would */
	char prev[SA_TXN_BRANCH_LEN + 1];
	strcpy(prev, a);
	int same_prefix = 0;
	for (int i = 0; i < 1000; i++) {
		ck_assert_int_eq(sa_txn_branch_new(b), 0);
		same_prefix += memcmp(prev + 7, b + 7, 4) == 0;
		strcpy(prev, b);
	}
	ck_assert_int_le(same_prefix, 2);
}
END_TEST

/* Timer A: INVITE over UDP retransmits at T1, 2T1, 4T1... until Timer B at 64*T1, then 408. */
START_TEST(timer_a_doubles_and_timer_b_answers_408)
{
	unsigned interval = T1, next, act;
	uint64_t t = T1;
	unsigned expect[] = { 2 * T1, 4 * T1, 8 * T1, 16 * T1 };
	for (int i = 0; i < 4; i++) {
		act = sa_txn_client_timer(SA_M_INVITE, false, t, 0, &interval, &next);
		ck_assert_uint_eq(act, SA_TXN_ACT_RETRANSMIT);
		ck_assert_uint_eq(next, expect[i]);
		t += next;
	}
	/* sent at 0, T1, 3T1, 7T1, 15T1, 31T1 and 63T1; the last wait is cut to what is left of 64*T1 */
	ck_assert_uint_eq(t, 31 * T1);
	act = sa_txn_client_timer(SA_M_INVITE, false, t, 0, &interval, &next);
	ck_assert_uint_eq(act, SA_TXN_ACT_RETRANSMIT);
	ck_assert_uint_eq(next, 32 * T1);
	act = sa_txn_client_timer(SA_M_INVITE, false, 63 * T1, 0, &interval, &next);
	ck_assert_uint_eq(act, SA_TXN_ACT_RETRANSMIT);
	ck_assert_uint_eq(next, T1);
	act = sa_txn_client_timer(SA_M_INVITE, false, 64 * T1, 0, &interval, &next);
	ck_assert_uint_eq(act, SA_TXN_ACT_ANSWER_408 | SA_TXN_ACT_COMPLETE);
	ck_assert_uint_eq(next, 0);
}
END_TEST

/* Timer G: a failure to an INVITE goes again at T1, 2T1, 4T1, then every T2,
 * until Timer H (64*T1 after the first send); the last wait is cut to what is left. */
START_TEST(timer_g_doubles_to_t2_until_timer_h)
{
	unsigned interval = T1, next;
	uint64_t t = T1;   /* sent at 0, Timer G first fires at T1 */
	unsigned expect[] = { 2 * T1, 4 * T1, T2, T2, T2, T2, T2, T2, T2 };
	for (size_t i = 0; i < sizeof(expect) / sizeof(expect[0]); i++) {
		next = sa_txn_timer_g(t, &interval);
		ck_assert_uint_eq(next, expect[i]);
		t += next;
	}
	ck_assert_uint_eq(t, 63 * T1);   /* sent again at T1, 3T1, 7T1, 15T1, 23T1, ... 63T1 */
	ck_assert_uint_eq(sa_txn_timer_g(t, &interval), T1);
	ck_assert_uint_eq(sa_txn_timer_g(64 * T1, &interval), 0);
	ck_assert_uint_eq(sa_txn_timer_g(100 * T1, &interval), 0);
}
END_TEST

/* Timer E: non-INVITE doubles up to T2; Timer F ends it WITHOUT a 408 (RFC 4320 §4.1). */
START_TEST(timer_e_caps_at_t2_and_timer_f_sends_no_408)
{
	unsigned interval = T1, next, act;
	uint64_t t = T1;
	unsigned expect[] = { 2 * T1, 4 * T1, T2, T2, T2 };
	for (int i = 0; i < 5; i++) {
		act = sa_txn_client_timer(SA_M_PUBLISH, false, t, 0, &interval, &next);
		ck_assert_uint_eq(act, SA_TXN_ACT_RETRANSMIT);
		ck_assert_uint_eq(next, expect[i]);
		t += next;
	}
	act = sa_txn_client_timer(SA_M_PUBLISH, false, 64 * T1, 0, &interval, &next);
	ck_assert_uint_eq(act, SA_TXN_ACT_COMPLETE);
	ck_assert(!(act & SA_TXN_ACT_ANSWER_408));
	act = sa_txn_client_timer(SA_M_BYE, true, 64 * T1 + 5, 0, &interval, &next);
	ck_assert_uint_eq(act, SA_TXN_ACT_COMPLETE);
}
END_TEST

/* §17.1.2.2: a non-INVITE in Proceeding retransmits every T2. */
START_TEST(non_invite_proceeding_retransmits_at_t2)
{
	unsigned interval = T1, next;
	unsigned act = sa_txn_client_timer(SA_M_MESSAGE, false, T1, 100, &interval, &next);
	ck_assert_uint_eq(act, SA_TXN_ACT_RETRANSMIT);
	ck_assert_uint_eq(next, T2);
	act = sa_txn_client_timer(SA_M_MESSAGE, false, 64 * T1, 183, &interval, &next);
	ck_assert_uint_eq(act, SA_TXN_ACT_COMPLETE);
}
END_TEST

/* An INVITE that rang is left to Timer C: Timer B never cancels a ringing call at 32 s. */
START_TEST(a_ringing_invite_outlives_timer_b)
{
	unsigned interval = T1, next;
	ck_assert_uint_eq(sa_txn_client_timer(SA_M_INVITE, false, 64 * T1, 180, &interval, &next), SA_TXN_ACT_NONE);
	ck_assert_uint_eq(next, 0);
	ck_assert_uint_eq(sa_txn_client_timer(SA_M_INVITE, true, 120000, 183, &interval, &next), SA_TXN_ACT_NONE);
	ck_assert_uint_eq(next, 0);
}
END_TEST

/* Reliable transports: no retransmission, only the timeout. */
START_TEST(reliable_transports_only_wait)
{
	unsigned interval = T1, next;
	ck_assert_uint_eq(sa_txn_client_timer(SA_M_INVITE, true, 1000, 0, &interval, &next), SA_TXN_ACT_NONE);
	ck_assert_uint_eq(next, 64 * T1 - 1000);
	ck_assert_uint_eq(sa_txn_client_timer(SA_M_INVITE, true, 64 * T1, 0, &interval, &next),
	                  SA_TXN_ACT_ANSWER_408 | SA_TXN_ACT_COMPLETE);
}
END_TEST

START_TEST(timer_c_cancels_only_what_rang)
{
	ck_assert_uint_eq(sa_txn_timer_c(180), SA_TXN_ACT_CANCEL | SA_TXN_ACT_ANSWER_408 | SA_TXN_ACT_COMPLETE);
	ck_assert_uint_eq(sa_txn_timer_c(0), SA_TXN_ACT_ANSWER_408 | SA_TXN_ACT_COMPLETE);
}
END_TEST

static const unsigned char SRC_A[4] = { 203, 0, 113, 66 }, SRC_B[4] = { 198, 51, 100, 7 };

/* One flooding source hits its own limit; another source goes on. */
START_TEST(one_source_cannot_take_the_table)
{
	struct sa_txn_budget *b = sa_txn_budget_new(4096);
	struct sa_txn_limits lim = { .per_source = 100, .per_credential = 0 };
	ck_assert_ptr_nonnull(b);
	for (int i = 0; i < 100; i++)
		ck_assert_int_eq(sa_txn_budget_admit(b, &lim, SRC_A, 4, NULL), SA_TXN_ADMIT);
	ck_assert_int_eq(sa_txn_budget_admit(b, &lim, SRC_A, 4, NULL), SA_TXN_SOURCE_FULL);
	ck_assert_int_eq(sa_txn_budget_admit(b, &lim, SRC_B, 4, NULL), SA_TXN_ADMIT);
	ck_assert_uint_eq(sa_txn_budget_count(b, SRC_A, 4, NULL), 100);
	/* answered transactions give their place back */
	sa_txn_budget_release(b, SRC_A, 4, NULL);
	ck_assert_int_eq(sa_txn_budget_admit(b, &lim, SRC_A, 4, NULL), SA_TXN_ADMIT);
	for (int i = 0; i < 100; i++)
		sa_txn_budget_release(b, SRC_A, 4, NULL);
	ck_assert_uint_eq(sa_txn_budget_count(b, SRC_A, 4, NULL), 0);
	ck_assert_uint_eq(sa_txn_budget_count(b, SRC_B, 4, NULL), 1);
	sa_txn_budget_free(b);
}
END_TEST

/* A credential's calls from many addresses share one limit. */
START_TEST(one_credential_cannot_take_the_table_from_many_sources)
{
	struct sa_txn_budget *b = sa_txn_budget_new(4096);
	struct sa_txn_limits lim = { .per_source = 0, .per_credential = 50 };
	unsigned char src[4] = { 10, 0, 0, 0 };
	for (int i = 0; i < 50; i++) {
		src[3] = (unsigned char)i;
		ck_assert_int_eq(sa_txn_budget_admit(b, &lim, src, 4, "cred_abc"), SA_TXN_ADMIT);
	}
	src[3] = 200;
	ck_assert_int_eq(sa_txn_budget_admit(b, &lim, src, 4, "cred_abc"), SA_TXN_CREDENTIAL_FULL);
	ck_assert_int_eq(sa_txn_budget_admit(b, &lim, src, 4, "cred_xyz"), SA_TXN_ADMIT);
	ck_assert_int_eq(sa_txn_budget_admit(b, &lim, src, 4, ""), SA_TXN_ADMIT);
	ck_assert_uint_eq(sa_txn_budget_count(b, NULL, 0, "cred_abc"), 50);
	/* a refused one charged nothing */
	ck_assert_uint_eq(sa_txn_budget_count(b, src, 4, NULL), 2);
	sa_txn_budget_free(b);
}
END_TEST

/* Many sources come and go: slots are reused and counts stay exact. */
START_TEST(counts_survive_churn)
{
	struct sa_txn_budget *b = sa_txn_budget_new(64);
	struct sa_txn_limits lim = { .per_source = 3 };
	unsigned char src[4] = { 10, 1, 0, 0 };
	for (int round = 0; round < 50; round++) {
		for (int i = 0; i < 30; i++) {
			src[2] = (unsigned char)round;
			src[3] = (unsigned char)i;
			ck_assert_int_eq(sa_txn_budget_admit(b, &lim, src, 4, NULL), SA_TXN_ADMIT);
			ck_assert_int_eq(sa_txn_budget_admit(b, &lim, src, 4, NULL), SA_TXN_ADMIT);
		}
		for (int i = 0; i < 30; i++) {
			src[3] = (unsigned char)i;
			ck_assert_uint_eq(sa_txn_budget_count(b, src, 4, NULL), 2);
			sa_txn_budget_release(b, src, 4, NULL);
			sa_txn_budget_release(b, src, 4, NULL);
			ck_assert_uint_eq(sa_txn_budget_count(b, src, 4, NULL), 0);
		}
	}
	sa_txn_budget_free(b);
}
END_TEST

START_TEST(bytes_are_bounded)
{
	struct sa_txn_budget *b = sa_txn_budget_new(64);
	struct sa_txn_limits lim = { .max_bytes = 100000 };
	ck_assert(sa_txn_budget_bytes_ok(b, &lim, 100000));
	sa_txn_budget_bytes(b, 60000);
	ck_assert(!sa_txn_budget_bytes_ok(b, &lim, 60000));
	ck_assert(sa_txn_budget_bytes_ok(b, &lim, 40000));
	sa_txn_budget_bytes(b, -60000);
	ck_assert_uint_eq(sa_txn_budget_bytes_used(b), 0);
	sa_txn_budget_bytes(b, -5);   /* never below zero */
	ck_assert_uint_eq(sa_txn_budget_bytes_used(b), 0);
	sa_txn_budget_free(b);
}
END_TEST


/* ---- states (RFC 3261 §17.1.1, §17.1.2; RFC 6026 §7.2) ---- */

START_TEST(an_invite_calls_then_proceeds_then_is_accepted_or_completed)
{
	enum sa_txn_state s = sa_txn_initial(SA_M_INVITE);
	ck_assert_int_eq(s, SA_TXN_CALLING);
	ck_assert(!sa_txn_finished(s));
	s = sa_txn_on_response(s, SA_M_INVITE, 100);
	ck_assert_int_eq(s, SA_TXN_PROCEEDING);
	ck_assert_int_eq(sa_txn_on_response(s, SA_M_INVITE, 183), SA_TXN_PROCEEDING);
	ck_assert_int_eq(sa_txn_on_response(s, SA_M_INVITE, 200), SA_TXN_ACCEPTED);
	ck_assert_int_eq(sa_txn_on_response(s, SA_M_INVITE, 299), SA_TXN_ACCEPTED);
	ck_assert_int_eq(sa_txn_on_response(s, SA_M_INVITE, 300), SA_TXN_COMPLETED);
	ck_assert_int_eq(sa_txn_on_response(s, SA_M_INVITE, 486), SA_TXN_COMPLETED);
	/* a final straight from Calling */
	ck_assert_int_eq(sa_txn_on_response(SA_TXN_CALLING, SA_M_INVITE, 200), SA_TXN_ACCEPTED);
	ck_assert_int_eq(sa_txn_on_response(SA_TXN_CALLING, SA_M_INVITE, 503), SA_TXN_COMPLETED);
}
END_TEST

START_TEST(other_requests_try_then_complete_on_any_final)
{
	static const enum sa_method methods[] = { SA_M_BYE, SA_M_OPTIONS, SA_M_MESSAGE, SA_M_REGISTER, SA_M_CANCEL };
	for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
		enum sa_txn_state s = sa_txn_initial(methods[i]);
		ck_assert_int_eq(s, SA_TXN_TRYING);
		ck_assert_int_eq(sa_txn_on_response(s, methods[i], 180), SA_TXN_PROCEEDING);
		/* never Accepted: that is an INVITE's 2xx only */
		ck_assert_int_eq(sa_txn_on_response(s, methods[i], 200), SA_TXN_COMPLETED);
		ck_assert_int_eq(sa_txn_on_response(SA_TXN_PROCEEDING, methods[i], 404), SA_TXN_COMPLETED);
	}
}
END_TEST

START_TEST(a_finished_transaction_stays_where_it_is)
{
	/* retransmitted finals and late provisionals do not move it */
	ck_assert_int_eq(sa_txn_on_response(SA_TXN_ACCEPTED, SA_M_INVITE, 200), SA_TXN_ACCEPTED);
	ck_assert_int_eq(sa_txn_on_response(SA_TXN_ACCEPTED, SA_M_INVITE, 180), SA_TXN_ACCEPTED);
	ck_assert_int_eq(sa_txn_on_response(SA_TXN_ACCEPTED, SA_M_INVITE, 486), SA_TXN_ACCEPTED);
	ck_assert_int_eq(sa_txn_on_response(SA_TXN_COMPLETED, SA_M_INVITE, 200), SA_TXN_COMPLETED);
	ck_assert_int_eq(sa_txn_on_response(SA_TXN_COMPLETED, SA_M_BYE, 100), SA_TXN_COMPLETED);
	ck_assert_int_eq(sa_txn_on_response(SA_TXN_TERMINATED, SA_M_INVITE, 200), SA_TXN_TERMINATED);
	/* and a status outside 100-699 moves nothing */
	ck_assert_int_eq(sa_txn_on_response(SA_TXN_CALLING, SA_M_INVITE, 99), SA_TXN_CALLING);
	ck_assert_int_eq(sa_txn_on_response(SA_TXN_TRYING, SA_M_BYE, 700), SA_TXN_TRYING);
}
END_TEST

START_TEST(a_timeout_completes_what_was_in_progress)
{
	ck_assert_int_eq(sa_txn_on_timeout(SA_TXN_CALLING), SA_TXN_COMPLETED);
	ck_assert_int_eq(sa_txn_on_timeout(SA_TXN_TRYING), SA_TXN_COMPLETED);
	ck_assert_int_eq(sa_txn_on_timeout(SA_TXN_PROCEEDING), SA_TXN_COMPLETED);
	ck_assert_int_eq(sa_txn_on_timeout(SA_TXN_ACCEPTED), SA_TXN_ACCEPTED);
	ck_assert(sa_txn_finished(SA_TXN_COMPLETED) && sa_txn_finished(SA_TXN_ACCEPTED) &&
	          sa_txn_finished(SA_TXN_CONFIRMED) && sa_txn_finished(SA_TXN_TERMINATED));
	ck_assert(!sa_txn_finished(SA_TXN_PROCEEDING));
}
END_TEST

/* §17.2.1: the ACK for a failure we answered moves Completed to Confirmed, and nothing else. */
START_TEST(an_ack_confirms_a_completed_transaction_only)
{
	ck_assert_int_eq(sa_txn_on_ack(SA_TXN_COMPLETED), SA_TXN_CONFIRMED);
	ck_assert_int_eq(sa_txn_on_ack(SA_TXN_CONFIRMED), SA_TXN_CONFIRMED);   /* a retransmitted ACK */
	const enum sa_txn_state others[] = { SA_TXN_CALLING, SA_TXN_TRYING, SA_TXN_PROCEEDING, SA_TXN_ACCEPTED,
	                                     SA_TXN_TERMINATED };
	for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++)
		ck_assert_int_eq(sa_txn_on_ack(others[i]), others[i]);
	/* a response never moves it again */
	ck_assert_int_eq(sa_txn_on_response(SA_TXN_CONFIRMED, SA_M_INVITE, 200), SA_TXN_CONFIRMED);
	ck_assert_int_eq(sa_txn_on_timeout(SA_TXN_CONFIRMED), SA_TXN_CONFIRMED);
}
END_TEST

/* The lingering table, one entry at a time. */
START_TEST(lingering_times)
{
	ck_assert_uint_eq(sa_txn_linger_ms(SA_TXN_ACCEPTED, true), 5000);     /* the call table relays 2xx retransmissions */
	ck_assert_uint_eq(sa_txn_linger_ms(SA_TXN_ACCEPTED, false), 5000);
	ck_assert_uint_eq(sa_txn_linger_ms(SA_TXN_COMPLETED, true), 64 * T1); /* Timer J/D: the sender's Timer F */
	ck_assert_uint_eq(sa_txn_linger_ms(SA_TXN_COMPLETED, false), 2000);   /* reliable: nothing is retransmitted */
	ck_assert_uint_eq(sa_txn_linger_ms(SA_TXN_CONFIRMED, true), 5000);   /* Timer I: T4 */
	ck_assert_uint_eq(sa_txn_linger_ms(SA_TXN_CONFIRMED, false), 2000);
	ck_assert_uint_eq(sa_txn_linger_ms(SA_TXN_TERMINATED, true), 0);
	ck_assert_str_eq(sa_txn_state_name(SA_TXN_ACCEPTED), "accepted");
	ck_assert_str_eq(sa_txn_state_name(SA_TXN_CONFIRMED), "confirmed");
	ck_assert_str_eq(sa_txn_state_name(SA_TXN_TERMINATED), "terminated");
	ck_assert_str_eq(sa_txn_state_name(SA_TXN_STATE_COUNT), "unknown");
}
END_TEST

/* SipHash-2-4, the reference implementation's vectors: key 00..0f, message 00..(n-1). */
START_TEST(siphash_reference_vectors)
{
	static const struct { size_t n; uint64_t h; } v[] = {
		{ 0, 0x726fdb47dd0e0e31ULL }, { 1, 0x74f839c593dc67fdULL },
		{ 15, 0xa129ca6149be45e5ULL }, { 63, 0x958a324ceb064572ULL },
	};
	unsigned char key[SA_SIPHASH_KEY_LEN], msg[64];
	for (int i = 0; i < SA_SIPHASH_KEY_LEN; i++)
		key[i] = (unsigned char)i;
	for (int i = 0; i < 64; i++)
		msg[i] = (unsigned char)i;
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		struct sa_siphash s;
		sa_siphash_init(&s, key);
		sa_siphash_update(&s, msg, v[i].n);
		ck_assert_uint_eq(sa_siphash_final(&s), v[i].h);
		/* the same message fed a byte, then the rest in pieces of three */
		sa_siphash_init(&s, key);
		for (size_t at = 0; at < v[i].n; at += at == 0 ? 1 : 3)
			sa_siphash_update(&s, msg + at, at == 0 ? 1 : (v[i].n - at < 3 ? v[i].n - at : 3));
		ck_assert_uint_eq(sa_siphash_final(&s), v[i].h);
		/* whole, through the hot path's one-shot */
		struct sa_siphash_key k;
		sa_siphash_key(&k, key);
		ck_assert_uint_eq(sa_siphash24(&k, msg, v[i].n), v[i].h);
	}
	/* every length up to 64: the one-shot agrees with the streaming form */
	for (size_t n = 0; n <= 64 && n <= sizeof(msg); n++) {
		struct sa_siphash s;
		struct sa_siphash_key k;
		sa_siphash_init(&s, key);
		sa_siphash_update(&s, msg, n);
		sa_siphash_key(&k, key);
		ck_assert_uint_eq(sa_siphash24(&k, msg, n), sa_siphash_final(&s));
	}
}
END_TEST

/* The To tag of our own answers: SipHash-2-4 keyed with the key's first 16
 * bytes over "Call-ID|From tag|CSeq number", in hex (values from a Python
 * transcription of the reference implementation). */
START_TEST(our_answers_to_tag)
{
	static const struct { const char *call_id, *from_tag; unsigned long cseq; const char *tag; } v[] = {
		{ "a84b4c76e66710@pc33.atlanta.com", "1928301774", 314159, "d3abb817e902e373" },
		{ "x@y", "t", 0, "84750c0e5a873ca2" },
		{ "x@y", "t", 4294967295ul, "725cff0bb89e7e5e" },
	};
	unsigned char key[SA_TAG_KEY_LEN];
	for (int i = 0; i < SA_TAG_KEY_LEN; i++)
		key[i] = (unsigned char)i;
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		struct sa_msg m;
		memset(&m, 0, sizeof(m));
		m.call_id = v[i].call_id;
		m.from_tag = v[i].from_tag;
		m.cseq = v[i].cseq;
		char out[17];
		memset(out, 'x', sizeof(out));
		sa_msg_local_tag(&m, key, out);
		ck_assert_str_eq(out, v[i].tag);
	}
}
END_TEST

static struct sa_msg keyed(enum sa_method method, const char *name, const char *branch, const char *host, int port)
{
	struct sa_msg m;
	memset(&m, 0, sizeof(m));
	m.method = method;
	m.method_name = name;
	m.branch = branch;
	m.via_host = host;
	m.via_port = port;
	return m;
}

/* RFC 3261 §17.2.3: branch, sent-by and method; the ACK of a non-2xx is the INVITE's. */
START_TEST(server_transaction_keys)
{
	char a[SA_TXN_KEY_MAX], b[SA_TXN_KEY_MAX];
	struct sa_msg inv = keyed(SA_M_INVITE, "INVITE", "z9hG4bK776asdhds", "pc33.atlanta.com", 5060);
	ck_assert_str_eq(sa_txn_server_key(&inv, a), "z9hG4bK776asdhds|pc33.atlanta.com:5060|INVITE");
	struct sa_msg ack = keyed(SA_M_ACK, "ACK", "z9hG4bK776asdhds", "pc33.atlanta.com", 5060);
	ck_assert_str_eq(sa_txn_server_key(&ack, b), a);
	/* a CANCEL is a transaction of its own, and names the INVITE it cancels */
	struct sa_msg cancel = keyed(SA_M_CANCEL, "CANCEL", "z9hG4bK776asdhds", "pc33.atlanta.com", 5060);
	ck_assert_str_eq(sa_txn_server_key(&cancel, b), "z9hG4bK776asdhds|pc33.atlanta.com:5060|CANCEL");
	ck_assert_str_eq(sa_txn_cancelled_key(&cancel, b), a);
	/* another sent-by or port is another transaction */
	struct sa_msg other = keyed(SA_M_INVITE, "INVITE", "z9hG4bK776asdhds", "pc33.atlanta.com", 5062);
	ck_assert_str_ne(sa_txn_server_key(&other, b), a);
	other = keyed(SA_M_INVITE, "INVITE", "z9hG4bK776asdhds", "pc34.atlanta.com", 5060);
	ck_assert_str_ne(sa_txn_server_key(&other, b), a);
	struct sa_msg noport = keyed(SA_M_BYE, "BYE", "z9hG4bKx", "192.0.2.1", 0);
	ck_assert_str_eq(sa_txn_server_key(&noport, b), "z9hG4bKx|192.0.2.1:0|BYE");
	/* a branch too long for the key is cut, never overflows */
	char longbranch[400];
	memset(longbranch, 'b', sizeof(longbranch) - 1);
	longbranch[sizeof(longbranch) - 1] = '\0';
	struct sa_msg huge = keyed(SA_M_INVITE, "INVITE", longbranch, "h", 1);
	ck_assert_uint_eq(strlen(sa_txn_server_key(&huge, b)), SA_TXN_KEY_MAX - 1);
}
END_TEST

/* The early dialogs' key: the INVITE's Call-ID and From tag; the callee's
 * requests name the same tag in To, so both sides find it. */
START_TEST(early_dialog_keys)
{
	char a[SA_TXN_KEY_MAX], b[SA_TXN_KEY_MAX];
	ck_assert_str_eq(sa_txn_early_key("a84b4c76e66710@pc33.atlanta.com", "1928301774", a),
	                 "a84b4c76e66710@pc33.atlanta.com 1928301774");
	ck_assert_str_ne(sa_txn_early_key("a84b4c76e66710@pc33.atlanta.com", "314159", b), a);
	ck_assert_str_ne(sa_txn_early_key("other@pc33.atlanta.com", "1928301774", b), a);
	char longid[400];
	memset(longid, 'c', sizeof(longid) - 1);
	longid[sizeof(longid) - 1] = '\0';
	ck_assert_uint_eq(strlen(sa_txn_early_key(longid, "t", b)), SA_TXN_KEY_MAX - 1);
}
END_TEST

/* Only the callee's tags the provisionals carried are early dialogs; a fifth
 * fork's tag takes the oldest one's place, and a tag seen twice counts once. */
START_TEST(early_dialogs_are_the_tags_of_the_provisionals)
{
	struct sa_txn_tags e = { 0 };
	ck_assert(!sa_txn_tag_has(&e, "as6151ad25"));
	sa_txn_tag_add(&e, "as6151ad25");
	sa_txn_tag_add(&e, "as6151ad25");   /* the 180, then the 183 of the same dialog */
	ck_assert_uint_eq(e.n, 1);
	ck_assert(sa_txn_tag_has(&e, "as6151ad25"));
	ck_assert(!sa_txn_tag_has(&e, "as6151ad26"));
	ck_assert(!sa_txn_tag_has(&e, ""));
	sa_txn_tag_add(&e, "fork2");
	sa_txn_tag_add(&e, "fork3");
	sa_txn_tag_add(&e, "fork4");
	ck_assert(sa_txn_tag_has(&e, "as6151ad25") && sa_txn_tag_has(&e, "fork4"));
	sa_txn_tag_add(&e, "fork5");
	ck_assert_uint_eq(e.n, 5);
	ck_assert(!sa_txn_tag_has(&e, "as6151ad25"));
	ck_assert(sa_txn_tag_has(&e, "fork2") && sa_txn_tag_has(&e, "fork3") &&
	          sa_txn_tag_has(&e, "fork4") && sa_txn_tag_has(&e, "fork5"));
}
END_TEST

/* ---- the index ---- */

struct entry {
	struct sa_txn_node node;
	char skey[32], branch[32];
	int drained;
};

static void drained_cb(struct sa_txn_node *n, void *arg)
{
	((struct entry *)n)->drained++;
	(*(int *)arg)++;
}

/* Keys with one home slot in a fresh index (1024 slots), the last one, so
 * that their run wraps to the first slots: each found by its own key, the
 * one not indexed found by none, and a removal from the middle, the end or
 * the start of the run leaves the others found. */
START_TEST(keys_that_share_a_slot_are_told_apart_and_removed_alone)
{
	enum { K = 4, MASK = 1023 };
	char key[K][40];
	struct sa_txn_node node[K - 1];
	struct sa_txn_index *x = sa_txn_index_new();
	ck_assert_ptr_nonnull(x);
	int found = 0;
	for (unsigned i = 0; found < K && i < 1000000; i++) {
		char k[40];
		snprintf(k, sizeof(k), "z9hG4bKc%u|h:5060|INVITE", i);
		if ((sa_str_hash(k) & MASK) == MASK)
			memcpy(key[found++], k, sizeof(k));
	}
	ck_assert_int_eq(found, K);
	/* skey and branch the same string: both tables hold the three in one run */
	for (int i = 0; i < K - 1; i++) {
		node[i] = (struct sa_txn_node){ .skey = key[i], .branch = key[i] };
		ck_assert_int_eq(sa_txn_index_add(x, &node[i]), 0);
	}
	for (int i = 0; i < K - 1; i++) {
		ck_assert_ptr_eq(sa_txn_index_by_skey(x, key[i]), &node[i]);
		ck_assert_ptr_eq(sa_txn_index_by_branch(x, key[i]), &node[i]);
	}
	ck_assert_ptr_null(sa_txn_index_by_skey(x, key[K - 1]));
	ck_assert_ptr_null(sa_txn_index_by_branch(x, key[K - 1]));
	sa_txn_index_remove(x, &node[1]);   /* the middle of the run, in slot 0 */
	ck_assert_ptr_eq(sa_txn_index_by_skey(x, key[0]), &node[0]);
	ck_assert_ptr_eq(sa_txn_index_by_branch(x, key[2]), &node[2]);
	ck_assert_ptr_eq(sa_txn_index_by_skey(x, key[2]), &node[2]);
	ck_assert_ptr_null(sa_txn_index_by_skey(x, key[1]));
	ck_assert_ptr_null(sa_txn_index_by_branch(x, key[1]));
	sa_txn_index_remove(x, &node[0]);   /* the start: node[2] moves back to it */
	ck_assert_ptr_eq(sa_txn_index_by_skey(x, key[2]), &node[2]);
	ck_assert_ptr_eq(sa_txn_index_by_branch(x, key[2]), &node[2]);
	ck_assert_ptr_null(sa_txn_index_by_skey(x, key[0]));
	ck_assert_ptr_null(sa_txn_index_by_branch(x, key[0]));
	ck_assert_int_eq(sa_txn_index_add(x, &node[1]), 0);   /* back in, behind node[2] */
	ck_assert_ptr_eq(sa_txn_index_by_skey(x, key[1]), &node[1]);
	sa_txn_index_remove(x, &node[1]);   /* the end */
	ck_assert_ptr_eq(sa_txn_index_by_skey(x, key[2]), &node[2]);
	sa_txn_index_remove(x, &node[2]);
	ck_assert_uint_eq(sa_txn_index_count(x), 0);
	for (int i = 0; i < K; i++)
		ck_assert_ptr_null(sa_txn_index_by_skey(x, key[i]));
	sa_txn_index_free(x);
}
END_TEST

START_TEST(the_index_grows_and_finds_every_transaction_by_both_keys)
{
	enum { N = 20000 };
	struct sa_txn_index *x = sa_txn_index_new();
	struct entry *e = calloc(N, sizeof(*e));
	ck_assert_ptr_nonnull(x);
	ck_assert_ptr_nonnull(e);
	for (int i = 0; i < N; i++) {
		snprintf(e[i].skey, sizeof(e[i].skey), "z9hG4bK%d|h:5060|INVITE", i);
		snprintf(e[i].branch, sizeof(e[i].branch), "z9hG4bKours%d", i);
		e[i].node.skey = e[i].skey;
		e[i].node.branch = e[i].branch;
		ck_assert_int_eq(sa_txn_index_add(x, &e[i].node), 0);
	}
	ck_assert_uint_eq(sa_txn_index_count(x), N);
	for (int i = 0; i < N; i += 7) {
		ck_assert_ptr_eq(sa_txn_index_by_skey(x, e[i].skey), &e[i].node);
		ck_assert_ptr_eq(sa_txn_index_by_branch(x, e[i].branch), &e[i].node);
	}
	ck_assert_ptr_null(sa_txn_index_by_skey(x, "z9hG4bKnone|h:5060|INVITE"));
	ck_assert_ptr_null(sa_txn_index_by_branch(x, "z9hG4bKours-1"));
	/* every third goes: the others stay found, the gone ones are not */
	for (int i = 0; i < N; i += 3)
		sa_txn_index_remove(x, &e[i].node);
	sa_txn_index_remove(x, &e[0].node);   /* twice: nothing happens */
	ck_assert_uint_eq(sa_txn_index_count(x), N - (N + 2) / 3);
	for (int i = 0; i < N; i++) {
		struct sa_txn_node *want = i % 3 ? &e[i].node : NULL;
		ck_assert_ptr_eq(sa_txn_index_by_skey(x, e[i].skey), want);
		ck_assert_ptr_eq(sa_txn_index_by_branch(x, e[i].branch), want);
	}
	/* a new branch (failover to the next gateway): found by it, not by the old */
	sa_txn_index_branch_out(x, &e[1].node);
	snprintf(e[1].branch, sizeof(e[1].branch), "z9hG4bKnext");
	sa_txn_index_branch_in(x, &e[1].node);
	ck_assert_ptr_eq(sa_txn_index_by_branch(x, "z9hG4bKnext"), &e[1].node);
	ck_assert_ptr_null(sa_txn_index_by_branch(x, "z9hG4bKours1"));
	ck_assert_ptr_eq(sa_txn_index_by_skey(x, e[1].skey), &e[1].node);
	/* drained: each remaining one handed out once, none left */
	int n = 0;
	sa_txn_index_drain(x, drained_cb, &n);
	ck_assert_int_eq(n, N - (N + 2) / 3);
	for (int i = 0; i < N; i++)
		ck_assert_int_eq(e[i].drained, i % 3 ? 1 : 0);
	ck_assert_uint_eq(sa_txn_index_count(x), 0);
	ck_assert_ptr_null(sa_txn_index_by_skey(x, e[1].skey));
	sa_txn_index_free(x);
	free(e);
}
END_TEST

/* ---- what a transaction remembers of its request ---- */

/* A PBX's INVITE: compact header names, two Vias, a Route to us above the
 * next one, a To without tag. */
#define INVITE_IN \
	"INVITE sip:+15551234@trunk-t1.sip.example.com SIP/2.0\r\n" \
	"Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKpbx1;rport\r\n" \
	"v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKpbx0\r\n" \
	"Max-Forwards: 70\r\n" \
	"Route: <sip:192.0.2.1:5060;lr>, <sip:edge2.example.com;lr>\r\n" \
	"f: \"PBX\" <sip:pbx@10.0.0.5>;tag=a1\r\n" \
	"To: <sip:+15551234@trunk-t1.sip.example.com>\r\n" \
	"i: call-1@10.0.0.5\r\n" \
	"CSeq: 7 INVITE\r\n" \
	"Contact: <sip:pbx@10.0.0.5:5062;transport=udp>\r\n" \
	"Content-Type: application/sdp\r\n" \
	"Content-Length: 4\r\n" \
	"\r\n" \
	"v=0\n"

#define OUR_VIA "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKours;rport"

static const struct sa_peer pbx = { .addr = "10.0.0.5", .port = 5062, .transport = "udp" };

/* Keep INVITE_IN (or text) as forwarded with f; the input's bytes are
 * overwritten and its view freed before the test goes on, so that whatever
 * the transaction still reads is its own. */
static struct sa_txn_req *kept(const char *text, const struct sa_fwd *f, char *fresh, size_t cap, long *n)
{
	struct sa_msg m;
	struct sa_msg_error err;
	size_t len = strlen(text);
	char *buf = malloc(len);
	ck_assert_ptr_nonnull(buf);
	memcpy(buf, text, len);
	ck_assert_int_eq(sa_msg_parse(&m, buf, len, false, &err), 0);
	struct sa_txn_req *r = sa_txn_req_new(&m, f);
	*n = sa_proxy_request(&m, f, fresh, cap);
	sa_msg_free(&m);
	memset(buf, 'x', len);
	free(buf);
	return r;
}

static const struct sa_fwd fwd_to_gw = {
	.via = OUR_VIA, .peer = &pbx, .pop_route = 1,
	.rr = { "<sip:192.0.2.1:5060;lr>", "<sip:198.51.100.1:5060;transport=tcp;lr>" },
};

/* INVITE_IN kept as forwarded to a gateway; fresh (FRESH_MAX) gets the same rewrite made afresh. */
#define FRESH_MAX 4096
static struct sa_txn_req *kept_invite(char *fresh, long *n)
{
	struct sa_txn_req *r = kept(INVITE_IN, &fwd_to_gw, fresh, FRESH_MAX, n);
	ck_assert_ptr_nonnull(r);
	return r;
}

static void assert_same(const char *got, long n, const char *want, long wn)
{
	ck_assert_int_eq(n, wn);
	ck_assert(n >= 0 && memcmp(got, want, (size_t)n) == 0);
}

static void assert_bytes(const char *got, long n, const char *want)
{
	assert_same(got, n, want, (long)strlen(want));
}

START_TEST(a_kept_request_is_what_was_sent_and_knows_its_fields)
{
	char fresh[FRESH_MAX];
	long n;
	struct sa_txn_req *r = kept_invite(fresh, &n);
	assert_same(r->bytes, (long)r->len, fresh, n);
	ck_assert(r->fields);
	ck_assert(!r->to_tag);
	ck_assert_uint_eq(r->cseq, 7);
	ck_assert_uint_eq(r->nvias, 2);
	ck_assert_uint_eq(r->nroutes, 1);
	const char *v;
	size_t len = sa_txn_req_value(r, SA_TXN_F_CALL_ID, &v);
	ck_assert(len == strlen("call-1@10.0.0.5") && memcmp(v, "call-1@10.0.0.5", len) == 0);
	len = sa_txn_req_value(r, SA_TXN_F_CONTACT, &v);
	ck_assert(len == strlen("<sip:pbx@10.0.0.5:5062;transport=udp>") &&
	          memcmp(v, "<sip:pbx@10.0.0.5:5062;transport=udp>", len) == 0);
	len = sa_txn_req_value(r, SA_TXN_F_FROM, &v);
	ck_assert(len == strlen("\"PBX\" <sip:pbx@10.0.0.5>;tag=a1") && memcmp(v, "\"PBX\" <sip:pbx@10.0.0.5>;tag=a1", len) == 0);
	/* one allocation sized to fit: the bytes, then one line entry per Via and Route */
	ck_assert_uint_le(r->size, sizeof(*r) + r->len + 3 + 3 * sizeof(struct sa_txn_line));
	sa_txn_req_free(r);
}
END_TEST

/* Over UDP a message may leave Content-Length out (the body is the rest of
 * the datagram); forwarded or relayed, it gets one, since the next hop may
 * be a stream where it is the only framing (RFC 3261 §18.3). One it has is kept. */
/* The gateway learns which trunk and credential authenticated the request
 * from sipauthd alone: a sender's own X-Sipauthd-* lines are dropped. */
START_TEST(the_identity_lines_are_ours_alone)
{
	static const char req[] = "INVITE sip:+15551234@gw.example.com SIP/2.0\r\n"
	                          "Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKpbx\r\n"
	                          "From: <sip:pbx@10.0.0.5>;tag=a1\r\n"
	                          "To: <sip:+15551234@gw.example.com>\r\n"
	                          "Call-ID: call-1@10.0.0.5\r\n"
	                          "CSeq: 7 INVITE\r\n"
	                          "x-sipauthd-trunk: trunk_victim\r\n"
	                          "X-Sipauthd-Credential: cred_victim\r\n"
	                          "X-Other: kept\r\n"
	                          "Content-Length: 0\r\n"
	                          "\r\n";
	struct sa_msg m;
	struct sa_msg_error err;
	char out[FRESH_MAX];
	struct sa_fwd f = { .via = OUR_VIA, .peer = &pbx, .trunk_id = "trunk_mine", .cred_id = "cred_mine" };

	ck_assert_int_eq(sa_msg_parse(&m, req, strlen(req), false, &err), 0);
	long n = sa_proxy_request(&m, &f, out, sizeof(out));
	ck_assert_int_gt(n, 0);
	out[n] = '\0';
	ck_assert_ptr_null(strcasestr(out, "victim"));
	ck_assert_ptr_nonnull(strstr(out, "X-Other: kept\r\n"));
	ck_assert_ptr_nonnull(strstr(out, "\r\nX-Sipauthd-Trunk: trunk_mine\r\nX-Sipauthd-Credential: cred_mine\r\n"));
	/* none given (a request from the gateway, in-dialog requests): none added, a sender's still dropped */
	f.trunk_id = f.cred_id = NULL;
	n = sa_proxy_request(&m, &f, out, sizeof(out));
	ck_assert_int_gt(n, 0);
	out[n] = '\0';
	ck_assert_ptr_null(strcasestr(out, "X-Sipauthd"));
	sa_msg_free(&m);
}
END_TEST

START_TEST(a_message_without_content_length_gets_one_on_its_way)
{
	static const char req[] = "INVITE sip:+15551234@pbx.example.com SIP/2.0\r\n"
	                          "Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKgw1\r\n"
	                          "From: <sip:gw@10.0.0.9>;tag=g1\r\n"
	                          "To: <sip:+15551234@pbx.example.com>\r\n"
	                          "Call-ID: cl-1@10.0.0.9\r\n"
	                          "CSeq: 1 INVITE\r\n"
	                          "Content-Type: application/sdp\r\n"
	                          "\r\n"
	                          "v=0\r\n";
	static const char resp[] = "SIP/2.0 183 Session Progress\r\n"
	                           "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKours\r\n"
	                           "Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKpbx\r\n"
	                           "From: <sip:pbx@10.0.0.5>;tag=a1\r\n"
	                           "To: <sip:+15551234@gw.example.com>;tag=b2\r\n"
	                           "Call-ID: call-1@10.0.0.5\r\n"
	                           "CSeq: 7 INVITE\r\n"
	                           "Content-Type: application/sdp\r\n"
	                           "\r\n"
	                           "v=0\r\n";
	struct sa_msg m;
	struct sa_msg_error err;
	char out[FRESH_MAX];
	struct sa_fwd f = { .via = OUR_VIA, .peer = &pbx };

	ck_assert_int_eq(sa_msg_parse(&m, req, strlen(req), false, &err), 0);
	long n = sa_proxy_request(&m, &f, out, sizeof(out));
	ck_assert_int_gt(n, 0);
	out[n] = '\0';
	ck_assert_ptr_nonnull(strstr(out, "Content-Type: application/sdp\r\nMax-Forwards: 70\r\nContent-Length: 5\r\n\r\nv=0\r\n"));
	sa_msg_free(&m);

	ck_assert_int_eq(sa_msg_parse(&m, resp, strlen(resp), false, &err), 0);
	n = sa_proxy_response(&m, out, sizeof(out));
	ck_assert_int_gt(n, 0);
	out[n] = '\0';
	ck_assert_str_eq(out, "SIP/2.0 183 Session Progress\r\n"
	                      "Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKpbx\r\n"
	                      "From: <sip:pbx@10.0.0.5>;tag=a1\r\n"
	                      "To: <sip:+15551234@gw.example.com>;tag=b2\r\n"
	                      "Call-ID: call-1@10.0.0.5\r\n"
	                      "CSeq: 7 INVITE\r\n"
	                      "Content-Type: application/sdp\r\n"
	                      "Content-Length: 5\r\n"
	                      "\r\n"
	                      "v=0\r\n");
	sa_msg_free(&m);

	/* one it has stays as it was: a single Content-Length */
	long k;
	struct sa_txn_req *r = kept(INVITE_IN, &fwd_to_gw, out, sizeof(out), &k);
	out[k] = '\0';
	char *cl = strstr(out, "Content-Length: 4\r\n");
	ck_assert_ptr_nonnull(cl);
	ck_assert_ptr_null(strstr(cl + 1, "Content-Length"));
	sa_txn_req_free(r);
}
END_TEST

/* The CANCEL or ACK of INVITE_IN as forwarded: its Request-URI, our Via,
 * From and Call-ID as sent (compact names kept), the Route left after ours;
 * they differ in the method and the To line. */
#define HOP_REQUEST(method, to_line) \
	method " sip:+15551234@trunk-t1.sip.example.com SIP/2.0\r\n" \
	"Via: " OUR_VIA "\r\n" \
	"Max-Forwards: 70\r\n" \
	"f: \"PBX\" <sip:pbx@10.0.0.5>;tag=a1\r\n" \
	to_line "\r\n" \
	"i: call-1@10.0.0.5\r\n" \
	"CSeq: 7 " method "\r\n" \
	"Route: <sip:edge2.example.com;lr>\r\n" \
	"Content-Length: 0\r\n\r\n"

/* The gateway gets a PBX's 503 as 500 (lib/route SA_RR_AS_500): the
 * relayed answer's start line is replaced, the rest as it was. */
START_TEST(a_status_line_is_replaced_and_the_rest_kept)
{
	static const char resp[] = "SIP/2.0 503 X\r\n"
	                           "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKours\r\n"
	                           "Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKpbx\r\n"
	                           "From: <sip:pbx@10.0.0.5>;tag=a1\r\n"
	                           "To: <sip:+15551234@gw.example.com>;tag=b2\r\n"
	                           "Call-ID: call-1@10.0.0.5\r\n"
	                           "CSeq: 7 INVITE\r\n"
	                           "Retry-After: 30\r\n"
	                           "\r\n";
	static const char want[] = "SIP/2.0 500 Server Internal Error\r\n"
	                           "Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKpbx\r\n"
	                           "From: <sip:pbx@10.0.0.5>;tag=a1\r\n"
	                           "To: <sip:+15551234@gw.example.com>;tag=b2\r\n"
	                           "Call-ID: call-1@10.0.0.5\r\n"
	                           "CSeq: 7 INVITE\r\n"
	                           "Retry-After: 30\r\n"
	                           "Content-Length: 0\r\n"
	                           "\r\n";
	struct sa_msg m;
	struct sa_msg_error err;
	char out[FRESH_MAX];

	ck_assert_int_eq(sa_msg_parse(&m, resp, strlen(resp), false, &err), 0);
	long n = sa_proxy_response(&m, out, sizeof(out));
	ck_assert_int_gt(n, 0);
	long k = sa_proxy_status_line(out, (size_t)n, sizeof(out), "SIP/2.0 500 Server Internal Error");
	ck_assert_int_eq(k, (long)strlen(want));
	out[k] = '\0';
	ck_assert_str_eq(out, want);
	/* no room: -1, and out as it was */
	ck_assert_int_eq(sa_proxy_status_line(out, (size_t)k, (size_t)k + 1, "SIP/2.0 500 Server Internal Error!!"), -1);
	ck_assert_str_eq(out, want);
	sa_msg_free(&m);
}
END_TEST

START_TEST(cancel_and_ack_copy_the_request_as_sent)
{
	char fresh[FRESH_MAX], out[2048];
	long n;
	struct sa_txn_req *r = kept_invite(fresh, &n);
	assert_bytes(out, sa_txn_cancel(r, out, sizeof(out)),
	             HOP_REQUEST("CANCEL", "To: <sip:+15551234@trunk-t1.sip.example.com>"));
	static const char busy[] =
		"SIP/2.0 486 Busy Here\r\n"
		"Via: " OUR_VIA "\r\n"
		"Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKpbx1;received=10.0.0.5;rport=5062\r\n"
		"From: \"PBX\" <sip:pbx@10.0.0.5>;tag=a1\r\n"
		"t: <sip:+15551234@trunk-t1.sip.example.com>;tag=gw9\r\n"
		"Call-ID: call-1@10.0.0.5\r\n"
		"CSeq: 7 INVITE\r\n"
		"Content-Length: 0\r\n\r\n";
	struct sa_msg resp;
	struct sa_msg_error err;
	ck_assert_int_eq(sa_msg_parse(&resp, busy, strlen(busy), false, &err), 0);
	/* the ACK takes the answer's To, with the tag the gateway gave */
	assert_bytes(out, sa_txn_ack(r, &resp, out, sizeof(out)),
	             HOP_REQUEST("ACK", "t: <sip:+15551234@trunk-t1.sip.example.com>;tag=gw9"));
	sa_msg_free(&resp);
	/* too small a buffer: nothing half-written is handed out */
	ck_assert_int_eq(sa_txn_cancel(r, out, 64), -1);
	sa_txn_req_free(r);
}
END_TEST

/* Our own answer's top Via: received and rport set for the peer, the
 * sender's own dropped even with blanks around ';' and '=' (SWS, RFC 3261
 * §25.1), and rport filled for a request whose parse stopped before its Via
 * (a tel: Request-URI, answered 416: RFC 3581 §4). */
START_TEST(our_answer_sets_received_and_rport_once)
{
	static const struct sa_peer from = { .addr = "10.0.0.9", .port = 40059, .transport = "udp" };
	static const char spaced[] = "OPTIONS sip:trunk-t1.sip.example.com SIP/2.0\r\n"
	                             "Via: SIP/2.0/UDP 10.0.0.5:5062 ; branch=z9hG4bKsp1 ; rport ; received = 1.2.3.4\r\n"
	                             "From: <sip:pbx@10.0.0.5>;tag=a1\r\n"
	                             "To: <sip:trunk-t1.sip.example.com>\r\n"
	                             "Call-ID: sp-1@10.0.0.5\r\n"
	                             "CSeq: 1 OPTIONS\r\n"
	                             "Content-Length: 0\r\n\r\n";
	static const char tel[] = "INVITE tel:+15551234 SIP/2.0\r\n"
	                          "Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKtel1;rport\r\n"
	                          "From: <sip:pbx@10.0.0.5>;tag=a1\r\n"
	                          "To: <tel:+15551234>\r\n"
	                          "Call-ID: tel-1@10.0.0.5\r\n"
	                          "CSeq: 1 INVITE\r\n"
	                          "Content-Length: 0\r\n\r\n";
	struct sa_msg m;
	struct sa_msg_error err = { 0 };
	char out[2048];

	ck_assert_int_eq(sa_msg_parse(&m, spaced, strlen(spaced), false, &err), 0);
	long n = sa_msg_response(&m, &from, 200, NULL, "t1", NULL, out, sizeof(out) - 1);
	ck_assert_int_gt(n, 0);
	out[n] = '\0';
	ck_assert_ptr_nonnull(strstr(out, "\r\nVia: SIP/2.0/UDP 10.0.0.5:5062 ; branch=z9hG4bKsp1 ;received=10.0.0.9;rport=40059\r\n"));
	sa_msg_free(&m);

	ck_assert_int_lt(sa_msg_parse(&m, tel, strlen(tel), false, &err), 0);
	ck_assert_int_eq(err.status, 416);
	n = sa_msg_response(&m, &from, 416, NULL, "t1", NULL, out, sizeof(out) - 1);
	ck_assert_int_gt(n, 0);
	out[n] = '\0';
	ck_assert_ptr_nonnull(strstr(out, "\r\nVia: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKtel1;received=10.0.0.9;rport=40059\r\n"));
	sa_msg_free(&m);
}
END_TEST

START_TEST(our_answer_goes_to_the_vias_below_ours)
{
	char fresh[FRESH_MAX], out[2048];
	long n;
	struct sa_txn_req *r = kept_invite(fresh, &n);
	assert_bytes(out, sa_txn_answer(r, 408, "0123456789abcdef", out, sizeof(out)),
	             "SIP/2.0 408 Request Timeout\r\n"
	             "Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKpbx1;received=10.0.0.5;rport=5062\r\n"
	             "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKpbx0\r\n"
	             "From: \"PBX\" <sip:pbx@10.0.0.5>;tag=a1\r\n"
	             "To: <sip:+15551234@trunk-t1.sip.example.com>;tag=0123456789abcdef\r\n"
	             "Call-ID: call-1@10.0.0.5\r\n"
	             "CSeq: 7 INVITE\r\n"
	             "Content-Length: 0\r\n\r\n");
	sa_txn_req_free(r);
}
END_TEST

/* A To that has a tag keeps its own, however it is spaced (RFC 4475 wsinv):
 * our answer never carries two. */
START_TEST(our_answer_keeps_a_tag_the_to_has)
{
	static const char reinvite[] =
		"INVITE sip:pbx@10.0.0.5:5062 SIP/2.0\r\n"
		"Via: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKgw1\r\n"
		"From: <sip:+15559876@198.51.100.7>;tag=gw1\r\n"
		"To: <sip:pbx@10.0.0.5> ;  tag  = p5\r\n"
		"Call-ID: re-2@198.51.100.7\r\n"
		"CSeq: 2 INVITE\r\n"
		"Contact: <sip:gw@198.51.100.7>\r\n"
		"Contact: <sip:gw-other@198.51.100.8>\r\n"
		"Content-Length: 0\r\n\r\n";
	char fresh[FRESH_MAX], out[2048];
	long n;
	struct sa_fwd f = { .via = OUR_VIA, .peer = &pbx };
	struct sa_txn_req *r = kept(reinvite, &f, fresh, sizeof(fresh), &n);
	ck_assert_ptr_nonnull(r);
	ck_assert(r->to_tag);
	ck_assert_uint_eq(r->nroutes, 0);
	/* the first of a kind is the one a dialog goes by */
	const char *v;
	size_t len = sa_txn_req_value(r, SA_TXN_F_CONTACT, &v);
	ck_assert(len == strlen("<sip:gw@198.51.100.7>") && memcmp(v, "<sip:gw@198.51.100.7>", len) == 0);
	assert_bytes(out, sa_txn_answer(r, 487, "0123456789abcdef", out, sizeof(out)),
	             "SIP/2.0 487 Request Terminated\r\n"
	             "Via: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKgw1;received=10.0.0.5\r\n"
	             "From: <sip:+15559876@198.51.100.7>;tag=gw1\r\n"
	             "To: <sip:pbx@10.0.0.5> ;  tag  = p5\r\n"
	             "Call-ID: re-2@198.51.100.7\r\n"
	             "CSeq: 2 INVITE\r\n"
	             "Content-Length: 0\r\n\r\n");
	sa_txn_req_free(r);
}
END_TEST

/* Failover: the next gateway gets the request the last one got, our Via
 * and Record-Route written anew; byte for byte what forwarding there
 * would write, and what the transaction builds from it follows. */
START_TEST(the_next_gateway_gets_the_same_request_with_our_new_via)
{
	char fresh[FRESH_MAX], out[2048];
	long n;
	struct sa_txn_req *r = kept_invite(fresh, &n);
	struct sa_fwd next = fwd_to_gw;
	next.via = "SIP/2.0/TCP [2001:db8::1]:5061;branch=z9hG4bKnext;rport";
	next.rr[1] = NULL;
	struct sa_txn_req *r2 = kept(INVITE_IN, &next, fresh, sizeof(fresh), &n);
	struct sa_txn_req *hop = sa_txn_req_next_hop(r, next.via, next.rr);
	ck_assert_ptr_nonnull(r2);
	ck_assert_ptr_nonnull(hop);
	assert_same(hop->bytes, (long)hop->len, fresh, n);
	/* every field found again where it went: the same as a fresh keep's */
	ck_assert_uint_eq(hop->size, r2->size);
	ck_assert(memcmp(hop->field, r2->field, sizeof(hop->field)) == 0);
	ck_assert(memcmp(&hop->via, &r2->via, sizeof(hop->via)) == 0);
	ck_assert(memcmp(hop->lines, r2->lines, (hop->nvias + hop->nroutes) * sizeof(hop->lines[0])) == 0);
	char want[2048];
	long k = sa_txn_cancel(hop, out, sizeof(out) - 1);
	assert_same(out, k, want, sa_txn_cancel(r2, want, sizeof(want)));
	out[k] = '\0';
	ck_assert(strstr(out, "\r\nVia: SIP/2.0/TCP [2001:db8::1]:5061;branch=z9hG4bKnext;rport\r\n") != NULL);
	/* and back to two Record-Route values: the offsets move the other way */
	struct sa_txn_req *back = sa_txn_req_next_hop(hop, fwd_to_gw.via, fwd_to_gw.rr);
	ck_assert_ptr_nonnull(back);
	assert_same(back->bytes, (long)back->len, r->bytes, (long)r->len);
	ck_assert(memcmp(back->field, r->field, sizeof(r->field)) == 0);
	sa_txn_req_free(back);
	sa_txn_req_free(hop);
	sa_txn_req_free(r2);
	sa_txn_req_free(r);
}
END_TEST

/* An inbound INVITE moved on to another registration: the Request-URI is
 * that one's Contact (longer, then shorter), our Via new; byte for byte
 * what forwarding there would write, every field where a fresh keep has
 * it, and the CANCEL and ACK built from it name the new Request-URI. */
START_TEST(the_next_registration_gets_its_contact_as_request_uri)
{
	static const char *const uris[] = { "sip:pbx-standby@203.0.113.77:5080;transport=udp;line=abcdef", "sip:p@h" };
	char fresh[FRESH_MAX], out[2048], want[2048];
	long n;
	struct sa_txn_req *r = kept_invite(fresh, &n);
	for (size_t i = 0; i < sizeof(uris) / sizeof(uris[0]); i++) {
		struct sa_fwd next = fwd_to_gw;
		next.ruri = uris[i];
		next.via = "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKpbx2;rport";
		struct sa_txn_req *r2 = kept(INVITE_IN, &next, fresh, sizeof(fresh), &n);
		struct sa_txn_req *hop = sa_txn_req_retarget(r, uris[i], next.via, next.rr);
		ck_assert_ptr_nonnull(r2);
		ck_assert_ptr_nonnull(hop);
		assert_same(hop->bytes, (long)hop->len, fresh, n);
		ck_assert_uint_eq(hop->size, r2->size);
		ck_assert_uint_eq(hop->ruri, r2->ruri);
		ck_assert_uint_eq(hop->ruri_len, strlen(uris[i]));
		ck_assert_uint_eq(hop->ours, r2->ours);
		ck_assert_uint_eq(hop->ours_end, r2->ours_end);
		ck_assert(memcmp(hop->field, r2->field, sizeof(hop->field)) == 0);
		ck_assert(memcmp(&hop->via, &r2->via, sizeof(hop->via)) == 0);
		ck_assert(memcmp(hop->lines, r2->lines, (hop->nvias + hop->nroutes) * sizeof(hop->lines[0])) == 0);
		long k = sa_txn_cancel(hop, out, sizeof(out) - 1);
		assert_same(out, k, want, sa_txn_cancel(r2, want, sizeof(want)));
		out[k] = '\0';
		snprintf(want, sizeof(want), "CANCEL %s SIP/2.0\r\n", uris[i]);
		ck_assert(strncmp(out, want, strlen(want)) == 0);
		sa_txn_req_free(hop);
		sa_txn_req_free(r2);
	}
	sa_txn_req_free(r);
}
END_TEST

/* A BYE or probe of our own is kept as bytes: nothing is built from it. */
START_TEST(our_own_requests_keep_bytes_only)
{
	static const char bye[] = "BYE sip:pbx@10.0.0.5 SIP/2.0\r\nContent-Length: 0\r\n\r\n";
	char out[1024];
	const char *v = "";
	struct sa_txn_req *r = sa_txn_req_raw(bye, strlen(bye));
	ck_assert_ptr_nonnull(r);
	assert_bytes(r->bytes, (long)r->len, bye);
	ck_assert(!r->fields);
	ck_assert_int_eq(sa_txn_cancel(r, out, sizeof(out)), -1);
	ck_assert_int_eq(sa_txn_answer(r, 408, NULL, out, sizeof(out)), -1);
	ck_assert_uint_eq(sa_txn_req_value(r, SA_TXN_F_CALL_ID, &v), 0);
	ck_assert_ptr_null(v);
	ck_assert_ptr_null(sa_txn_req_next_hop(r, OUR_VIA, (const char *[2]){ NULL, NULL }));
	struct sa_txn_req *d = sa_txn_req_dup(r);
	sa_txn_req_free(r);
	ck_assert_ptr_nonnull(d);
	assert_bytes(d->bytes, (long)d->len, bye);
	sa_txn_req_free(d);
}
END_TEST

/* A copy (the branch failover leaves behind) stands on its own. */
START_TEST(a_copy_outlives_its_original)
{
	char fresh[FRESH_MAX], a[2048], b[2048];
	long n;
	struct sa_txn_req *r = kept_invite(fresh, &n);
	long la = sa_txn_cancel(r, a, sizeof(a));
	struct sa_txn_req *d = sa_txn_req_dup(r);
	sa_txn_req_free(r);
	ck_assert_ptr_nonnull(d);
	ck_assert(la > 0);
	assert_same(b, sa_txn_cancel(d, b, sizeof(b)), a, la);
	assert_same(d->bytes, (long)d->len, fresh, n);
	sa_txn_req_free(d);
}
END_TEST

int main(void)
{
	sa_sipmsg_init();
	Suite *s = suite_create("txn");
	TCase *tc = tcase_create("txn");
	tcase_add_test(tc, an_invite_calls_then_proceeds_then_is_accepted_or_completed);
	tcase_add_test(tc, other_requests_try_then_complete_on_any_final);
	tcase_add_test(tc, a_finished_transaction_stays_where_it_is);
	tcase_add_test(tc, a_timeout_completes_what_was_in_progress);
	tcase_add_test(tc, an_ack_confirms_a_completed_transaction_only);
	tcase_add_test(tc, lingering_times);
	tcase_add_test(tc, siphash_reference_vectors);
	tcase_add_test(tc, our_answers_to_tag);
	tcase_add_test(tc, server_transaction_keys);
	tcase_add_test(tc, early_dialog_keys);
	tcase_add_test(tc, early_dialogs_are_the_tags_of_the_provisionals);
	tcase_add_test(tc, the_index_grows_and_finds_every_transaction_by_both_keys);
	tcase_add_test(tc, keys_that_share_a_slot_are_told_apart_and_removed_alone);
	tcase_add_test(tc, branches_are_random_and_carry_the_cookie);
	tcase_add_test(tc, timer_a_doubles_and_timer_b_answers_408);
	tcase_add_test(tc, timer_g_doubles_to_t2_until_timer_h);
	tcase_add_test(tc, timer_e_caps_at_t2_and_timer_f_sends_no_408);
	tcase_add_test(tc, non_invite_proceeding_retransmits_at_t2);
	tcase_add_test(tc, a_ringing_invite_outlives_timer_b);
	tcase_add_test(tc, reliable_transports_only_wait);
	tcase_add_test(tc, timer_c_cancels_only_what_rang);
	tcase_add_test(tc, one_source_cannot_take_the_table);
	tcase_add_test(tc, one_credential_cannot_take_the_table_from_many_sources);
	tcase_add_test(tc, counts_survive_churn);
	tcase_add_test(tc, bytes_are_bounded);
	tcase_add_test(tc, a_kept_request_is_what_was_sent_and_knows_its_fields);
	tcase_add_test(tc, a_message_without_content_length_gets_one_on_its_way);
	tcase_add_test(tc, the_identity_lines_are_ours_alone);
	tcase_add_test(tc, a_status_line_is_replaced_and_the_rest_kept);
	tcase_add_test(tc, our_answer_sets_received_and_rport_once);
	tcase_add_test(tc, cancel_and_ack_copy_the_request_as_sent);
	tcase_add_test(tc, our_answer_goes_to_the_vias_below_ours);
	tcase_add_test(tc, our_answer_keeps_a_tag_the_to_has);
	tcase_add_test(tc, the_next_gateway_gets_the_same_request_with_our_new_via);
	tcase_add_test(tc, the_next_registration_gets_its_contact_as_request_uri);
	tcase_add_test(tc, our_own_requests_keep_bytes_only);
	tcase_add_test(tc, a_copy_outlives_its_original);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
