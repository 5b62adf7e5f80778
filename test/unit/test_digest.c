/* test_digest.c: digest HA1/response/verify against published vectors and hand-made edge cases. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "auth.h"
#include "digest.h"

/*
 * Entity body of the auth-int vector: the data[] string of freeswitch/sofia-sip
 * libsofia-sip-ua/iptsec/test_auth_digest.c (test_digest), LGPL-2.1, copied byte
 * for byte (372 bytes, LF line ends) from corpora/digest-vectors/bodies/sofia-auth-int-presence.xml.
 */
static const char sofia_presence_body[] =
	"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\n"
	"<presence>\n"
	"<presentity uri=\"sip:3000@194.2.188.133\"/>\n"
	"<atom atomid=\"BQpTalFpkMyF9hOlR8olWQ==\">\n"
	"<address uri=\"sip:3000@194.2.188.133\" priority=\" 0\">\n"
	"<status status=\"open\"/>\n"
	"<class class=\"business\"/>\n"
	"<duplex duplex=\"full\"/>\n"
	"<feature feature=\"voicemail\"/>\n"
	"<mobility mobility=\"fixed\"/>\n"
	"<note>\n"
	"</note>\n"
	"</address>\n"
	"</atom>\n"
	"</presence>\n";

struct vector {
	const char *id;
	enum sa_digest_alg alg;
	const char *username, *realm, *password, *method, *uri, *nonce, *nc, *cnonce, *qop;
	const char *body;            /* auth-int entity body, NUL-terminated */
	const char *ha1;             /* expected HA1, NULL when the source gives none */
	const char *response;        /* expected (or, when !verifies, presented) response; NULL: HA1-only */
	bool verifies;               /* the vectors.tsv "verified" column */
};

/* "Jäsøn Doe" in UTF-8 (4A C3A4 73 C3B8 6E 20 44 6F 65) */
#define JASON_DOE "J\xc3\xa4" "s\xc3\xb8" "n Doe"

/*
 * Rows of /work/shared/corpora/digest-vectors/vectors.tsv (see its SOURCE.md).
 * verifies=false rows are published values that do NOT match their inputs; they
 * must be rejected. Userhash rows are checked with the plain username: userhash
 * only changes what is sent as username, HA1 still uses the real one.
 */
static const struct vector vectors[] = {
	/* RFC 2617 §3.5 (IETF, The Internet Society 1999); HA1 also asserted by sofia-sip test_auth_digest.c */
	{ "rfc2617-3.5", SA_ALG_MD5, "Mufasa", "testrealm@host.com", "Circle Of Life", "GET",
	  "/dir/index.html", "dcd98b7102dd2f0e8b11d0f600bfb0c093", "00000001", "0a4f113b", "auth", NULL,
	  "939e7578ed9e3c518a452acee763bce9", "6629fae49393a05397450978507c4ef1", true },
	/* RFC 2069 §2.4 example as printed (quoted in sofia-sip test_auth_digest.c, disabled block): wrong value */
	{ "rfc2069-example", SA_ALG_MD5, "Mufasa", "testrealm@host.com", "CircleOfLife", "GET",
	  "/dir/index.html", "dcd98b7102dd2f0e8b11d0f600bfb0c093", NULL, NULL, NULL, NULL,
	  NULL, "e966c932a9242554e42c8ee200cec7f6", false },
	/* RFC 2069 example inputs, corrected value from the Rust crate digest-access 0.3.1 test (docs.rs src/lib.rs) */
	{ "rfc2069-example-corrected", SA_ALG_MD5, "Mufasa", "testrealm@host.com", "CircleOfLife", "GET",
	  "/dir/index.html", "dcd98b7102dd2f0e8b11d0f600bfb0c093", NULL, NULL, NULL, NULL,
	  NULL, "1949323746fe6a43ef61f9606e7febea", true },
	/* RFC 7616 §3.9.1 (IETF Trust), password per verified erratum 4495; quoted by sipsorcery and others */
	{ "rfc7616-3.9.1-md5", SA_ALG_MD5, "Mufasa", "http-auth@example.org", "Circle of Life", "GET",
	  "/dir/index.html", "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", "00000001",
	  "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", "auth", NULL,
	  NULL, "8ca523f5e9506fed4657c9700eebdbec", true },
	/* RFC 7616 §3.9.1 (IETF Trust), SHA-256 */
	{ "rfc7616-3.9.1-sha-256", SA_ALG_SHA256, "Mufasa", "http-auth@example.org", "Circle of Life", "GET",
	  "/dir/index.html", "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", "00000001",
	  "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", "auth", NULL,
	  NULL, "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1", true },
	/* RFC 7616 §3.9.2 as printed (IETF Trust): made with truncated SHA-512, not SHA-512/256 (erratum 4897) */
	{ "rfc7616-3.9.2-as-printed", SA_ALG_SHA512_256, JASON_DOE, "api@example.org", "Secret, or not?",
	  "GET", "/doe.json", "5TsQWLVdgBdmrQ0XsxbDODV+57QdFR34I9HAbC/RVvkK", "00000001",
	  "NTg6RKcb9boFIAS3KrFK9BGeh+iDa/sm6jUMp2wds69v", "auth", NULL,
	  NULL, "ae66e67d6b427bd3f120414a82e4acff38e8ecd9101d6c861229025f607a79dd", false },
	/* RFC 7616 §3.9.2 corrected by erratum 4897 (rfc-editor.org/errata/rfc7616): real SHA-512/256 */
	{ "rfc7616-3.9.2-erratum4897", SA_ALG_SHA512_256, JASON_DOE, "api@example.org", "Secret, or not?",
	  "GET", "/doe.json", "5TsQWLVdgBdmrQ0XsxbDODV+57QdFR34I9HAbC/RVvkK", "00000001",
	  "NTg6RKcb9boFIAS3KrFK9BGeh+iDa/sm6jUMp2wds69v", "auth", NULL,
	  NULL, "3798d4131c277846293534c3edc11bd8a5e4cdcbff78b05db9d95eeb1cec68a5", true },
	/* sofia-sip test_auth_digest.c test_digest (LGPL-2.1): 9-digit nc hashed as sent */
	{ "sofia-indigo-bye", SA_ALG_MD5, "user1", "nokia-proxy", "secret", "BYE", "sip:nokia@62.254.248.33",
	  "0YXwH29PCT4lEz8+YJipQg==", "000000002",
	  "V2VkIEF1ZyAxNSAxNzozNDowNyBHTVQrMDE6MDAgMjAwMVtCQDI0YmZhYQ==", "auth", NULL,
	  NULL, "dd22a698b1a9510c4237c52e0e2cbfac", true },
	/* sofia-sip test_auth_digest.c test_digest (LGPL-2.1): no qop, username with @ */
	{ "sofia-opera-register", SA_ALG_MD5, "samuel.privat.saturday@opera.ntc.nokia.com",
	  "opera.ntc.nokia.com", "1123456789ABCDEF", "REGISTER", "sip:opera.ntc.nokia.com",
	  "InyiWI+qIdvDKkO2jFK7mg==", NULL, NULL, NULL, NULL,
	  NULL, "4b4edab897dafce8d9af4b37abcdc086", true },
	/* sofia-sip test_auth_digest.c test_digest (LGPL-2.1): no qop, no algorithm */
	{ "sofia-worldcom-register", SA_ALG_MD5, "jari", "WCOM", "pass", "REGISTER", "sip:1234@209.132.126.82",
	  "ce2292f3f748fbe239bda9e852e8b986", NULL, NULL, NULL, NULL,
	  NULL, "ea692d202019d41a75c70df4b2401e2f", true },
	/* sofia-sip test_auth_digest.c test_digest (LGPL-2.1): qop offered, answered without */
	{ "sofia-etri-register", SA_ALG_MD5, "myhuh", "nokia-proxy", "myhuh", "REGISTER", "sip:194.2.188.133",
	  "wB7JBwIb/XhtgfGp1VuPoQ==", NULL, NULL, NULL, NULL,
	  NULL, "32960a62bdc202171ca5a294dc229a6d", true },
	/* sofia-sip test_auth_digest.c test_digest (LGPL-2.1): the value the test asserts */
	{ "sofia-test1-register", SA_ALG_MD5, "test1", "nokia-proxy", "test1", "REGISTER", "sip:10.21.32.63",
	  "GjbLsrozHC6Lx95C57vGlw==", NULL, NULL, NULL, NULL,
	  NULL, "db41913e8964dde69a1519739f35a302", true },
	/* sofia-sip test_auth_digest.c test_digest (LGPL-2.1): response as captured in the header: wrong */
	{ "sofia-test1-register-as-sent", SA_ALG_MD5, "test1", "nokia-proxy", "test1", "REGISTER",
	  "sip:10.21.32.63", "GjbLsrozHC6Lx95C57vGlw==", NULL, NULL, NULL, NULL,
	  NULL, "e86db25d96713482e35378504caaba6b", false },
	/* sofia-sip test_auth_digest.c test_digest (LGPL-2.1): qop=auth-int over the presence body */
	{ "sofia-auth-int-register", SA_ALG_MD5, "test", "nokia-proxy", "test", "REGISTER",
	  "sip:3000@194.2.188.133", "3wWGOvaWn3n+hFv8PK2ABQ==", "00000001", "11RkhFg9EdaIRD36w0EMVA==",
	  "auth-int", sofia_presence_body, NULL, "26e8b9aaacfca2d68770fab1ec04e2c7", true },
	/* sofia-sip test_auth_digest.c test_module_io (LGPL-2.1): htdigest-style HA1 only */
	{ "sofia-ha1-user3-fish", SA_ALG_MD5, "user3", "realm", "fish", "REGISTER", "sip:realm",
	  NULL, NULL, NULL, NULL, NULL, "7df96b4718bd933af4883c8b73c96318", NULL, true },
	{ "sofia-ha1-user3-fisu", SA_ALG_MD5, "user3", "realm", "fisu", "REGISTER", "sip:realm",
	  NULL, NULL, NULL, NULL, NULL, "056595147630692bb29d1855089bc95b", NULL, true },
	/* sipsorcery SIPAuthorisationDigestUnitTest.cs KnownDigestTest (BSD-3-Clause) */
	{ "sipsorcery-known-invite", SA_ALG_MD5, "aaronxten2", "asterisk", "password", "INVITE",
	  "sip:303@bluesipd", "17190028", NULL, NULL, NULL, NULL,
	  NULL, "06b931d79a06b4e9426b7efbbd6c8da2", true },
	/* sipsorcery KnownMD5AndSHA256DigestTest (BSD-3-Clause): SHA-256, no qop */
	{ "sipsorcery-known-invite-sha256", SA_ALG_SHA256, "aaronxten2", "asterisk", "password", "INVITE",
	  "sip:303@bluesipd", "17190028", NULL, NULL, NULL, NULL,
	  NULL, "34c1239616bbf7d3c1147d3933f333852f5c84d1adf8ccde86679598a4abd4aa", true },
	/* sipsorcery KnownDigestTestObscureChars (BSD-3-Clause): punctuation password */
	{ "sipsorcery-obscure-chars", SA_ALG_MD5, "aaronnetgear", "sip.blueface.ie",
	  "!\"$%^&*()_-+=}[{]~#@':;?><,.", "REGISTER", "sip:sip.blueface.ie:5060", "1430352056",
	  NULL, NULL, NULL, NULL, NULL, "500fd998b609a0f24b45edfe190f2a17", true },
	/* sipsorcery KnownDigestTestObscureChars2 (BSD-3-Clause): password ends in a quote */
	{ "sipsorcery-obscure-chars2", SA_ALG_MD5, "aaronxten", "sip.blueface.ie", "_*!$%^()\"", "REGISTER",
	  "sip:sip.blueface.ie", "1263192143", NULL, NULL, NULL, NULL,
	  NULL, "54b08b70ed1976068b9e18d38ea59849", true },
	/* sipsorcery KnownRegisterDigestTest and ...Test2 (BSD-3-Clause) */
	{ "sipsorcery-register-1", SA_ALG_MD5, "aaron", "asterisk", "password", "REGISTER", "sip:blueface",
	  "1c8192c9", NULL, NULL, NULL, NULL, NULL, "08881d1d56c0b21f11d19f4067da7045", true },
	{ "sipsorcery-register-2", SA_ALG_MD5, "aaron", "asterisk", "password", "REGISTER", "sip:blueface",
	  "1c3c7a97", NULL, NULL, NULL, NULL, NULL, "1ef20beed71043225873e4f6712e4922", true },
	/* sipsorcery KnownWWWAuthenticateDigestTest and AuthenticateHeaderToStringTest (BSD-3-Clause) */
	{ "sipsorcery-aol-invite-qop", SA_ALG_MD5, "user@aim.com", "aol.com", "password", "INVITE",
	  "sip:01135312222222@sip.aol.com;transport=udp", "48e757f3b95250379d63fe29f777984a93831b80",
	  "00000001", "e66ea40d700e8ab69509df4893f4a821", "auth", NULL,
	  NULL, "6221ea0348e2d5229dd1f3825d633295", true },
	{ "sipsorcery-aol-invite-qop-2", SA_ALG_MD5, "user@aim.com", "aol.com", "password", "INVITE",
	  "sip:01135312222222@sip.aol.com;transport=udp", "48e7541d4339e27ee7b520a4bf8a8e3c4fffcb90",
	  "00000001", "cf2e005f1801550717cc8c59193aa9f4", "auth", NULL,
	  NULL, "18ad0e62fcc9d7f141a72078c4a0784f", true },
	/* sipsorcery KnownQOPUnitTest (BSD-3-Clause) */
	{ "sipsorcery-onsip-register-qop", SA_ALG_MD5, "user", "jnctn.net", "password", "REGISTER",
	  "sip:user.onsip.com", "4a597e1c0000a1636739088e9151ef2f319af257c8f585f1", "00000001",
	  "d3a1ca6af34e72e2461b794f48d5045d", "auth", NULL, NULL, "7709215c1d58c1912dc59d1e8b5b6248", true },
	/* sipsorcery GenerateDigestTest (BSD-3-Clause) */
	{ "sipsorcery-generate-register", SA_ALG_MD5, "username", "sipsorcery.com", "password", "REGISTER",
	  "sip:sipsorcery.com", "1265068315059e3bbf3052cf13ea5ca22fb71669a7", NULL, NULL, NULL, NULL,
	  NULL, "b1ea9d6b32e8dd0023a3feec14b16177", true },
	/* sipsorcery KnownHA1Digest (BSD-3-Clause): HA1 only */
	{ "sipsorcery-ha1", SA_ALG_MD5, "user", "sipsorcery.cloud", "password", "REGISTER",
	  "sip:sipsorcery.cloud", NULL, NULL, NULL, NULL, NULL, "f5732e14bef238badb2b4cb987d415f6", NULL, true },
	/* mfalkus/sipright test/add-hdr.js, commit 4d4bae4b (MIT): challenge said algorithm=md5 */
	{ "sipright-invite-md5-lowercase-alg", SA_ALG_MD5, "test1", "test.pbx.com", "test2", "INVITE",
	  "sip:1001@test.pbx.com", "1688850200/4f6c94f962fb39b5290b075f8c5deb56", "00000001", "1234", "auth",
	  NULL, NULL, "4f963a1841aa1f8d76409af658ea9bfb", true },
};

#define N_VECTORS ((int)(sizeof(vectors) / sizeof(vectors[0])))

static struct sa_digest_params vector_params(const struct vector *v)
{
	return (struct sa_digest_params){
		.alg = v->alg, .method = v->method, .uri = v->uri, .nonce = v->nonce, .nc = v->nc,
		.cnonce = v->cnonce, .qop = v->qop, .body = v->body,
		.body_len = v->body != NULL ? strlen(v->body) : 0,
	};
}

static void vector_ha1(const struct vector *v, char ha1[SA_DIGEST_HEX_MAX])
{
	ck_assert_int_eq(sa_digest_ha1(v->alg, v->username, v->realm, v->password, ha1), 0);
	ck_assert_uint_eq(strlen(ha1), sa_digest_hex_len(v->alg));
	if (v->ha1 != NULL)
		ck_assert_str_eq(ha1, v->ha1);
}

START_TEST(test_vector_ha1_matches_published)
{
	const struct vector *v = &vectors[_i];
	char ha1[SA_DIGEST_HEX_MAX];

	vector_ha1(v, ha1);
}
END_TEST

START_TEST(test_vector_response_verifies_exactly_when_published_value_is_right)
{
	const struct vector *v = &vectors[_i];
	struct sa_digest_params p = vector_params(v);
	char ha1[SA_DIGEST_HEX_MAX], out[SA_DIGEST_HEX_MAX];

	if (v->response == NULL)
		return;
	vector_ha1(v, ha1);
	ck_assert_msg(sa_digest_verify(&p, ha1, v->response, strlen(v->response)) == v->verifies,
	              "vector %s", v->id);
	ck_assert_int_eq(sa_digest_response(&p, ha1, out), 0);
	if (v->verifies)
		ck_assert_str_eq(out, v->response);
	else
		ck_assert_str_ne(out, v->response);
}
END_TEST

static const struct vector *vector_by_id(const char *id)
{
	for (int i = 0; i < N_VECTORS; i++)
		if (strcmp(vectors[i].id, id) == 0)
			return &vectors[i];
	ck_abort_msg("no vector %s", id);
	return NULL;
}

/* verify_pair says which of two HA1s the answer was made with, for every
 * vector (auth, auth-int, sess, no qop), as sa_digest_verify does for each. */
START_TEST(test_vector_pair_names_the_matching_ha1)
{
	const struct vector *v = &vectors[_i];
	struct sa_digest_params p = vector_params(v);
	char ha1[SA_DIGEST_HEX_MAX], other[SA_DIGEST_HEX_MAX];
	bool a, b;

	if (v->response == NULL)
		return;
	vector_ha1(v, ha1);
	ck_assert_int_eq(sa_digest_ha1(p.alg, "someone", "else", "other_password_123", other), 0);
	sa_digest_verify_pair(&p, ha1, other, v->response, strlen(v->response), &a, &b);
	ck_assert_msg(a == v->verifies && !b, "vector %s: current", v->id);
	sa_digest_verify_pair(&p, other, ha1, v->response, strlen(v->response), &a, &b);
	ck_assert_msg(!a && b == v->verifies, "vector %s: previous", v->id);
	sa_digest_verify_pair(&p, ha1, ha1, v->response, strlen(v->response), &a, &b);
	ck_assert_msg(a == v->verifies && b == v->verifies, "vector %s: both", v->id);
	sa_digest_verify_pair(&p, ha1, "short", v->response, strlen(v->response), &a, &b);
	ck_assert_msg(a == v->verifies && !b, "vector %s: an unusable second HA1", v->id);
	sa_digest_verify_pair(&p, "short", ha1, v->response, strlen(v->response), &a, &b);
	ck_assert_msg(!a && b == v->verifies, "vector %s: an unusable first HA1", v->id);
	sa_digest_verify_pair(&p, ha1, other, v->response, strlen(v->response) - 1, &a, &b);
	ck_assert_msg(!a && !b, "vector %s: a short answer", v->id);
}
END_TEST

START_TEST(test_auth_int_body_is_copied_exactly_and_bound)
{
	const struct vector *v = vector_by_id("sofia-auth-int-register");
	struct sa_digest_params p = vector_params(v);
	char ha1[SA_DIGEST_HEX_MAX], body[sizeof(sofia_presence_body)];

	ck_assert_uint_eq(strlen(sofia_presence_body), 372);
	vector_ha1(v, ha1);
	ck_assert(sa_digest_verify(&p, ha1, v->response, 32));
	/* one changed byte of the body must change the answer */
	memcpy(body, sofia_presence_body, sizeof(body));
	body[100] ^= 1;
	p.body = body;
	ck_assert(!sa_digest_verify(&p, ha1, v->response, 32));
	/* the same answer presented as qop=auth does not verify either */
	p.body = sofia_presence_body;
	p.qop = "auth";
	ck_assert(!sa_digest_verify(&p, ha1, v->response, 32));
}
END_TEST

START_TEST(test_nine_digit_nc_is_hashed_as_sent)
{
	const struct vector *v = vector_by_id("sofia-indigo-bye");
	struct sa_digest_params p = vector_params(v);
	char ha1[SA_DIGEST_HEX_MAX];

	vector_ha1(v, ha1);
	ck_assert(sa_digest_verify(&p, ha1, v->response, 32));
	p.nc = "00000002";
	ck_assert(!sa_digest_verify(&p, ha1, v->response, 32));
}
END_TEST

/*
 * No published -sess vector was found; these expected values were computed for this
 * test with python3 hashlib (HA1' = H(HA1:nonce:cnonce)) on the RFC 7616 §3.9.1 inputs.
 */
START_TEST(test_sess_variant_uses_session_ha1)
{
	const struct vector *v = vector_by_id("rfc7616-3.9.1-sha-256");
	struct sa_digest_params p = vector_params(v);
	char ha1[SA_DIGEST_HEX_MAX];
	const char *sha256_sess = "2fd51b3a77ad75bad6afad6003e818d767133c46d9e2749e7f5232ae1ea3efd7";
	const char *md5_sess = "e783283f46242139c486a698fec7211d";

	p.sess = true;
	vector_ha1(v, ha1);
	ck_assert(sa_digest_verify(&p, ha1, sha256_sess, 64));
	ck_assert(!sa_digest_verify(&p, ha1, v->response, 64));
	p.alg = SA_ALG_MD5;
	ck_assert_int_eq(sa_digest_ha1(SA_ALG_MD5, v->username, v->realm, v->password, ha1), 0);
	ck_assert(sa_digest_verify(&p, ha1, md5_sess, 32));
	p.cnonce = NULL;
	p.qop = NULL;
	p.nc = NULL;
	ck_assert(!sa_digest_verify(&p, ha1, md5_sess, 32));
}
END_TEST

START_TEST(test_uppercase_hex_response_verifies)
{
	const struct vector *v = vector_by_id("rfc7616-3.9.1-sha-256");
	struct sa_digest_params p = vector_params(v);
	char ha1[SA_DIGEST_HEX_MAX], upper[SA_DIGEST_HEX_MAX];

	vector_ha1(v, ha1);
	for (size_t i = 0; i <= strlen(v->response); i++)
		upper[i] = (char)(v->response[i] >= 'a' && v->response[i] <= 'f' ? v->response[i] - 32
		                                                              : v->response[i]);
	ck_assert_str_ne(upper, v->response);
	ck_assert(sa_digest_verify(&p, ha1, upper, 64));
}
END_TEST

START_TEST(test_wrong_length_response_fails)
{
	const struct vector *v = vector_by_id("rfc2617-3.5");
	struct sa_digest_params p = vector_params(v);
	char ha1[SA_DIGEST_HEX_MAX], longer[SA_DIGEST_HEX_MAX + 1];

	vector_ha1(v, ha1);
	ck_assert(sa_digest_verify(&p, ha1, v->response, 32));
	ck_assert(!sa_digest_verify(&p, ha1, v->response, 31));
	ck_assert(!sa_digest_verify(&p, ha1, v->response, 0));
	ck_assert(!sa_digest_verify(&p, ha1, "", 0));
	snprintf(longer, sizeof(longer), "%s0", v->response);
	ck_assert(!sa_digest_verify(&p, ha1, longer, 33));
	/* an MD5-length answer to a SHA-256 challenge */
	p.alg = SA_ALG_SHA256;
	ck_assert_int_eq(sa_digest_ha1(SA_ALG_SHA256, v->username, v->realm, v->password, ha1), 0);
	ck_assert(!sa_digest_verify(&p, ha1, v->response, 32));
}
END_TEST

START_TEST(test_wrong_password_fails)
{
	const struct vector *v = vector_by_id("rfc7616-3.9.1-md5");
	struct sa_digest_params p = vector_params(v);
	char ha1[SA_DIGEST_HEX_MAX];

	/* RFC 7616 as first printed ("Circle Of Life") before erratum 4495 */
	ck_assert_int_eq(sa_digest_ha1(v->alg, v->username, v->realm, "Circle Of Life", ha1), 0);
	ck_assert(!sa_digest_verify(&p, ha1, v->response, 32));
}
END_TEST

START_TEST(test_unusable_params_are_refused)
{
	const struct vector *v = vector_by_id("rfc2617-3.5");
	struct sa_digest_params p = vector_params(v);
	char ha1[SA_DIGEST_HEX_MAX], out[SA_DIGEST_HEX_MAX];

	vector_ha1(v, ha1);
	p.qop = "auth-conf";
	ck_assert_int_eq(sa_digest_response(&p, ha1, out), -1);
	ck_assert(!sa_digest_verify(&p, ha1, v->response, 32));
	p = vector_params(v);
	p.cnonce = NULL;
	ck_assert_int_eq(sa_digest_response(&p, ha1, out), -1);
	p = vector_params(v);
	ck_assert_int_eq(sa_digest_response(&p, "939e7578", out), -1);
	ck_assert_int_eq(sa_digest_response(&p, NULL, out), -1);
	p.alg = SA_ALG_COUNT;
	ck_assert_int_eq(sa_digest_response(&p, ha1, out), -1);
	ck_assert(!sa_digest_verify(&p, ha1, v->response, 32));
	ck_assert_int_eq(sa_digest_ha1(SA_ALG_COUNT, "u", "r", "p", out), -1);
}
END_TEST

struct alg_name_case {
	const char *name;
	int rc;
	enum sa_digest_alg alg;
	bool sess;
};

static const struct alg_name_case alg_names[] = {
	{ "MD5", 0, SA_ALG_MD5, false },
	{ "md5", 0, SA_ALG_MD5, false },
	{ "MD5-sess", 0, SA_ALG_MD5, true },
	{ "md5-SESS", 0, SA_ALG_MD5, true },
	{ "SHA-256", 0, SA_ALG_SHA256, false },
	{ "sha-256-sess", 0, SA_ALG_SHA256, true },
	{ "SHA-512-256", 0, SA_ALG_SHA512_256, false },
	{ "Sha-512-256-Sess", 0, SA_ALG_SHA512_256, true },
	{ "", -1, 0, false },
	{ "MD", -1, 0, false },
	{ "MD5-", -1, 0, false },
	{ "MD5-ses", -1, 0, false },
	{ "MD5-sessx", -1, 0, false },
	{ "SHA256", -1, 0, false },
	{ "SHA-512", -1, 0, false },
	{ "SHA-512/256", -1, 0, false },
	{ "AKAv1-MD5", -1, 0, false },
};

START_TEST(test_alg_parse_table)
{
	const struct alg_name_case *c = &alg_names[_i];
	enum sa_digest_alg alg = SA_ALG_COUNT;
	bool sess = !c->sess;

	ck_assert_msg(sa_digest_alg_parse(c->name, strlen(c->name), &alg, &sess) == c->rc, "%s", c->name);
	if (c->rc == 0) {
		ck_assert_int_eq(alg, c->alg);
		ck_assert(sess == c->sess);
	}
}
END_TEST

START_TEST(test_alg_parse_reads_only_len_bytes)
{
	enum sa_digest_alg alg;
	bool sess;

	ck_assert_int_eq(sa_digest_alg_parse("MD5,qop=auth", 3, &alg, &sess), 0);
	ck_assert_int_eq(alg, SA_ALG_MD5);
	ck_assert(!sess);
	ck_assert_int_eq(sa_digest_alg_parse("SHA-256-sess\"", 12, &alg, &sess), 0);
	ck_assert_int_eq(alg, SA_ALG_SHA256);
	ck_assert(sess);
	ck_assert_int_eq(sa_digest_alg_parse("SHA-256", 6, &alg, &sess), -1);
}
END_TEST

/* An unknown user's answer is checked against a decoy HA1 so that it costs
 * what a wrong password costs: the decoy must be usable with the answer's
 * algorithm (one of the wrong length is refused before any hashing, which
 * made unknown users 6 us faster than wrong passwords: issue 10, item 8). */
START_TEST(test_unknown_user_decoy_is_hashed_like_a_real_ha1)
{
	struct sa_auth a;
	struct sa_auth_cfg cfg = { .nalgs = 0 };
	ck_assert_int_eq(sa_auth_init(&a, NULL, NULL, &cfg), 0);
	for (int alg = 0; alg < SA_ALG_COUNT; alg++) {
		struct sa_digest_params p = { .alg = (enum sa_digest_alg)alg,
		                              .nonce = "n", .method = "REGISTER", .uri = "sip:x", .qop = "auth",
		                              .nc = "00000001", .cnonce = "c" };
		char out[SA_DIGEST_HEX_MAX];
		ck_assert_uint_eq(strlen(a.dummy_ha1[alg]), sa_digest_hex_len((enum sa_digest_alg)alg));
		ck_assert_int_eq(sa_digest_response(&p, a.dummy_ha1[alg], out), 0);
	}
}
END_TEST

START_TEST(test_alg_names_and_lengths)
{
	ck_assert_str_eq(sa_digest_alg_name(SA_ALG_MD5), "MD5");
	ck_assert_str_eq(sa_digest_alg_name(SA_ALG_SHA256), "SHA-256");
	ck_assert_str_eq(sa_digest_alg_name(SA_ALG_SHA512_256), "SHA-512-256");
	ck_assert_ptr_null(sa_digest_alg_name(SA_ALG_COUNT));
	ck_assert_uint_eq(sa_digest_hex_len(SA_ALG_MD5), 32);
	ck_assert_uint_eq(sa_digest_hex_len(SA_ALG_SHA256), 64);
	ck_assert_uint_eq(sa_digest_hex_len(SA_ALG_SHA512_256), 64);
	ck_assert_uint_eq(sa_digest_hex_len(SA_ALG_COUNT), 0);
}
END_TEST

static Suite *digest_suite(void)
{
	Suite *s = suite_create("digest");
	TCase *tc = tcase_create("vectors");
	TCase *edge = tcase_create("edges");

	tcase_add_loop_test(tc, test_vector_ha1_matches_published, 0, N_VECTORS);
	tcase_add_loop_test(tc, test_vector_response_verifies_exactly_when_published_value_is_right, 0,
	                    N_VECTORS);
	tcase_add_loop_test(tc, test_vector_pair_names_the_matching_ha1, 0, N_VECTORS);
	tcase_add_test(tc, test_auth_int_body_is_copied_exactly_and_bound);
	tcase_add_test(tc, test_nine_digit_nc_is_hashed_as_sent);
	tcase_add_test(tc, test_sess_variant_uses_session_ha1);
	suite_add_tcase(s, tc);
	tcase_add_test(edge, test_uppercase_hex_response_verifies);
	tcase_add_test(edge, test_wrong_length_response_fails);
	tcase_add_test(edge, test_wrong_password_fails);
	tcase_add_test(edge, test_unusable_params_are_refused);
	tcase_add_loop_test(edge, test_alg_parse_table, 0, (int)(sizeof(alg_names) / sizeof(alg_names[0])));
	tcase_add_test(edge, test_alg_parse_reads_only_len_bytes);
	tcase_add_test(edge, test_alg_names_and_lengths);
	tcase_add_test(edge, test_unknown_user_decoy_is_hashed_like_a_real_ha1);
	suite_add_tcase(s, edge);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(digest_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed != 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
