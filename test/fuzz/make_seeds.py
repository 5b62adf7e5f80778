#!/usr/bin/env python3
"""make_seeds.py: (re)generate the seed corpora in test/fuzz/corpus/ from the RFC 4475
messages (test/rfc4475/messages), the project's own sipp scenarios (test/sipp/*.xml),
the sample configuration (conf/sipauthd.conf), the configurations the integration
tests write, and the hand-written messages, configurations, API requests and calls-file lines below.
Files named crash-* or found-* in a corpus are
inputs the fuzzers found; this script never touches them.

  python3 test/fuzz/make_seeds.py            # from the top of the source tree
"""

import os
import re
import sys

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(TOP, "test", "fuzz", "corpus")
HOST = "trunk-trunk_seed01.sip.tryvox.io"

# ---------------------------------------------------------------- sipp scenarios


def sipp_messages(path, host, auth):
    """The <send> messages of a sipp scenario with its keywords filled in."""
    xml = open(path, encoding="iso-8859-1").read()
    out = []
    for i, block in enumerate(re.findall(r"<send[^>]*>\s*<!\[CDATA\[(.*?)\]\]>", xml, re.S)):
        lines = [l.strip() for l in block.strip("\n").splitlines()]
        while lines and not lines[0]:
            lines.pop(0)
        while lines and not lines[-1]:
            lines.pop()
        text = "\r\n".join(lines)
        n = f"{os.path.basename(path)[:-4]}{i}"
        kw = {
            "service": "15551234567", "trunk_host": host, "transport": "UDP",
            "local_ip": "192.0.2.10", "local_port": "5070", "branch": f"z9hG4bK-seed-{n}",
            "pid": "4242", "call_number": "1", "call_id": f"seed-{n}@192.0.2.10",
            "local_ip_type": "4", "media_ip": "192.0.2.10", "media_ip_type": "4",
            "media_port": "6000", "expires": "300", "peer_tag_param": ";tag=peer1",
            "authentication": auth(text.split(" ", 1)[0]),
            "last_Via:": "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKproxy1;rport=5060,"
                         " SIP/2.0/UDP 192.0.2.10:5070;received=192.0.2.10;branch=z9hG4bKpbx1;rport=5070",
            "last_From:": f"From: <sip:pbx@{host}>;tag=4242call1",
            "last_To:": f"To: <sip:15551234567@{host}>",
            "last_Call-ID:": f"Call-ID: seed-{n}@192.0.2.10",
            "last_CSeq:": "CSeq: 2 INVITE",
            "last_Record-Route:": "Record-Route: <sip:127.0.0.1:5060;lr>",
            "routes": "Route: <sip:127.0.0.1:5060;lr>",
            "next_url": "sip:gw@192.0.2.20:5080;transport=udp",
            "$invite_via": "SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKinv1",
            "$pbx_via": "SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKpbx1",
        }
        text = re.sub(r"\[([^\]\[]+)\]", lambda m: kw.get(m.group(1), m.group(0)), text)
        head, _, body = text.partition("\r\n\r\n")
        body = body + "\r\n" if body else ""
        head = head.replace("[len]", str(len(body.encode())))
        head = "\r\n".join(l for l in head.split("\r\n") if l)   # an empty [authentication]
        out.append((n, (head + "\r\n\r\n" + body).encode()))
    return out


def fixed_auth(method):
    name = "Authorization" if method == "REGISTER" else "Proxy-Authorization"
    return (f'{name}: Digest username="pbx-prod-01", realm="{HOST}", '
            f'nonce="AQEBZWVlZWVlZWVlZWVlZWVlZWVlZWVlZWVl", uri="sip:{HOST}", '
            f'response="0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", '
            f'algorithm=SHA-256, cnonce="abc", qop=auth, nc=00000001')


def placeholder_auth(method):
    name = "Authorization" if method == "REGISTER" else "Proxy-Authorization"
    return (f'{name}: Digest username="@USER@", realm="@REALM@", nonce="@NONCE256@", '
            f'uri="sip:@HOST@", response="@RESP@", algorithm=SHA-256, cnonce="c0ffee", '
            f'qop=auth, nc=00000001')


# ---------------------------------------------------------------- hand-written


def msg(start, headers, body=b"", cl=True):
    h = list(headers)
    if cl:
        h.append(f"Content-Length: {len(body)}")
    return (start + "\r\n" + "\r\n".join(h) + "\r\n\r\n").encode() + body


def base(method, ruri, extra=(), tag="", via="SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK-own1;rport"):
    return [f"Via: {via}", "Max-Forwards: 70", f"From: <sip:pbx@{HOST}>;tag=own1",
            f"To: <{ruri}>{tag}", "Call-ID: own-1@192.0.2.10", f"CSeq: 1 {method}", *extra]


SDP = b"v=0\r\no=x 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n"

OWN = {
    "register": msg(f"REGISTER sip:{HOST} SIP/2.0", base("REGISTER", f"sip:pbx@{HOST}",
                    ["Contact: <sip:pbx@192.0.2.10:5070>;expires=300", "Expires: 300"])),
    "invite-sdp": msg(f"INVITE sip:1555@{HOST} SIP/2.0", base("INVITE", f"sip:1555@{HOST}",
                      ["Contact: <sip:pbx@192.0.2.10:5070>", "Content-Type: application/sdp"]), SDP),
    "bye-routes": msg("BYE sip:gw@192.0.2.20:5080 SIP/2.0", base("BYE", f"sip:1555@{HOST}",
                      ["Route: <sip:127.0.0.1:5060;lr>, <sip:127.0.0.1:5060;transport=tcp;lr>",
                       "Route: <sip:192.0.2.99;lr>"], tag=";tag=gw1")),
    "ack-2xx": msg("ACK sip:gw@192.0.2.20:5080 SIP/2.0", base("ACK", f"sip:1555@{HOST}",
                   ["Route: <sip:127.0.0.1:5060;lr>"], tag=";tag=gw1")),
    "cancel": msg(f"CANCEL sip:1555@{HOST} SIP/2.0", base("CANCEL", f"sip:1555@{HOST}")),
    "options-keepalive": msg("OPTIONS sip:127.0.0.1:5060 SIP/2.0", base("OPTIONS", "sip:127.0.0.1:5060")),
    "resp-180-two-vias": msg("SIP/2.0 180 Ringing", [
        "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKabcd1;rport=5060",
        "Via: SIP/2.0/UDP 192.0.2.10:5070;received=192.0.2.10;branch=z9hG4bK-own1;rport=5070",
        f"From: <sip:pbx@{HOST}>;tag=own1", f"To: <sip:1555@{HOST}>;tag=gw1",
        "Call-ID: own-1@192.0.2.10", "CSeq: 1 INVITE", "Record-Route: <sip:127.0.0.1:5060;lr>"]),
    "resp-200-one-via-comma": msg("SIP/2.0 200 OK", [
        "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKabcd1, SIP/2.0/TCP 192.0.2.10:5070;branch=z9hG4bK-own1",
        f"From: <sip:pbx@{HOST}>;tag=own1", f"To: <sip:1555@{HOST}>;tag=gw1",
        "Call-ID: own-1@192.0.2.10", "CSeq: 1 INVITE", "Content-Type: application/sdp"], SDP),
    "resp-407": msg("SIP/2.0 407 Proxy Authentication Required", [
        "Via: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK-own1;received=192.0.2.10;rport=5070",
        f"From: <sip:pbx@{HOST}>;tag=own1", f"To: <sip:1555@{HOST}>;tag=1234",
        "Call-ID: own-1@192.0.2.10", "CSeq: 1 INVITE",
        f'Proxy-Authenticate: Digest realm="{HOST}", nonce="AQEB", algorithm=SHA-256, qop="auth"']),
    "folded-and-compact": (f"INVITE sip:1555@{HOST} SIP/2.0\r\nv: SIP/2.0/UDP 192.0.2.10\r\n ;branch=z9hG4bK-f1\r\n"
                           f"f: <sip:pbx@{HOST}>\r\n\t;tag=f1\r\nt: <sip:1555@{HOST}>\r\ni: fold@x\r\n"
                           "CSeq: 1\r\n INVITE\r\nMax-Forwards: 70\r\nl: 0\r\n\r\n").encode(),
    "lf-only": (f"OPTIONS sip:1555@{HOST} SIP/2.0\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK-lf\n"
                f"From: <sip:pbx@{HOST}>;tag=lf\nTo: <sip:1555@{HOST}>\nCall-ID: lf@x\n"
                "CSeq: 1 OPTIONS\nContent-Length: 0\n\n").encode(),
    "body-starts-with-space": msg(f"MESSAGE sip:1555@{HOST} SIP/2.0", base("MESSAGE", f"sip:1555@{HOST}",
                                  ["Content-Type: text/plain"]), b" leading space\r\nX: not a header\r\n"),
    "max-headers": msg(f"OPTIONS sip:1555@{HOST} SIP/2.0",
                       base("OPTIONS", f"sip:1555@{HOST}", [f"X-H{i}: {i}" for i in range(130)])),
    "many-vias": msg(f"INVITE sip:1555@{HOST} SIP/2.0",
                     [f"Via: SIP/2.0/UDP 192.0.2.{i};branch=z9hG4bK-v{i}" for i in range(40)]
                     + base("INVITE", f"sip:1555@{HOST}")[1:]),
    "ipv6": msg("INVITE sip:1555@[2001:db8::1]:5060 SIP/2.0",
                base("INVITE", "sip:1555@[2001:db8::1]", via="SIP/2.0/TCP [2001:db8::10]:5070;branch=z9hG4bK-v6;rport")),
    "port-overflow": msg(f"OPTIONS sip:1555@{HOST}:99999999999999999999 SIP/2.0",
                         base("OPTIONS", f"sip:1555@{HOST}", via="SIP/2.0/UDP 192.0.2.10:4294967297;branch=z9hG4bK-p")),
    "quoted-nul": msg(f"OPTIONS sip:1555@{HOST} SIP/2.0", base("OPTIONS", f"sip:1555@{HOST}",
                      ['Subject: "a \\\x00 b"'])),
    "bare-nul": msg(f"OPTIONS sip:1555@{HOST} SIP/2.0", base("OPTIONS", f"sip:1555@{HOST}", ["Subject: a \x00 b"])),
    "proxy-require": msg(f"INVITE sip:1555@{HOST} SIP/2.0", base("INVITE", f"sip:1555@{HOST}",
                         ["Proxy-Require: foo, bar", "Require: 100rel"])),
    "tel-uri": msg("INVITE tel:+15551234567 SIP/2.0", base("INVITE", "tel:+15551234567")),
}

# digest answers for fuzz_auth: the placeholders are filled in by the harness
A = 'Digest username="@USER@", realm="@REALM@", uri="sip:@HOST@"'
AUTH = {
    "reg-sha256": ("REGISTER", f'{A}, nonce="@NONCE256@", response="@RESP@", algorithm=SHA-256, cnonce="c1", qop=auth, nc=00000001'),
    "reg-md5-qop": ("REGISTER", f'{A}, nonce="@NONCE@", response="@RESP@", algorithm=MD5, cnonce="c1", qop=auth, nc=00000001'),
    "reg-md5-rfc2069": ("REGISTER", f'{A}, nonce="@NONCE@", response="@RESP@"'),
    "reg-sha512": ("REGISTER", f'{A}, nonce="@NONCE512@", response="@RESP@", algorithm=SHA-512-256, cnonce="c1", qop=auth, nc=0000000a'),
    "reg-stale": ("REGISTER", f'{A}, nonce="@OLDNONCE@", response="@RESP@", algorithm=SHA-256, cnonce="c1", qop=auth, nc=00000001'),
    "reg-wrong": ("REGISTER", f'{A}, nonce="@NONCE256@", response="{"ab" * 32}", algorithm=SHA-256, cnonce="c1", qop=auth, nc=00000001'),
    "reg-unknown-user": ("REGISTER", 'Digest username="nobody", realm="@REALM@", uri="sip:@HOST@", nonce="@NONCE@", response="@RESP@", algorithm=MD5, cnonce="c", qop=auth, nc=00000001'),
    "reg-sess": ("REGISTER", f'{A}, nonce="@NONCE256@", response="@RESP@", algorithm=SHA-256-sess, cnonce="c1", qop=auth, nc=00000001'),
    "reg-auth-int": ("REGISTER", f'{A}, nonce="@NONCE256@", response="@RESP@", algorithm=SHA-256, cnonce="c1", qop=auth-int, nc=00000001'),
    "reg-nc-bad": ("REGISTER", f'{A}, nonce="@NONCE256@", response="@RESP@", algorithm=SHA-256, cnonce="c1", qop=auth, nc=zz'),
    "reg-nc-zero": ("REGISTER", f'{A}, nonce="@NONCE256@", response="@RESP@", algorithm=SHA-256, cnonce="c1", qop=auth, nc=00000000'),
    "reg-no-nonce": ("REGISTER", f'{A}, response="@RESP@", algorithm=SHA-256'),
    "reg-garbage-nonce": ("REGISTER", f'{A}, nonce="!!!!", response="@RESP@", algorithm=MD5'),
    "reg-long-user": ("REGISTER", f'Digest username="{"u" * 300}", realm="@REALM@", uri="sip:@HOST@", nonce="@NONCE@", response="@RESP@"'),
    "reg-other-realm-first": ("REGISTER", 'Digest username="x", realm="other.example", uri="sip:x", nonce="n", response="r"'),
    "reg-unknown-scheme": ("REGISTER", "NoOneKnowsThisScheme opaque-data=here"),
    "reg-unquoted": ("REGISTER", 'Digest username=@USER@, realm=@REALM@, uri=sip:@HOST@, nonce=@NONCE@, response=@RESP@'),
    "inv-sha256": ("INVITE", f'{A}, nonce="@NONCE256@", response="@RESP@", algorithm=SHA-256, cnonce="c1", qop=auth, nc=00000001'),
    "inv-md5": ("INVITE", f'{A}, nonce="@NONCE@", response="@RESP@", algorithm=MD5, cnonce="c1", qop=auth, nc=00000002'),
    "bye-md5": ("BYE", f'{A}, nonce="@NONCE@", response="@RESP@", algorithm=MD5, cnonce="c1", qop=auth, nc=00000003'),
}


def auth_seed(method, value, host="@HOST@", second=None):
    name = "Authorization" if method == "REGISTER" else "Proxy-Authorization"
    extra = [f"{name}: {value}"] + ([f"{name}: {second}"] if second else [])
    if method == "REGISTER":
        extra.append("Contact: <sip:pbx@192.0.2.10:5070>;expires=300")
    lines = [f"Via: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK-auth1;rport", "Max-Forwards: 70",
             "From: <sip:@USER@@@HOST@>;tag=a1", "To: <sip:@USER@@@HOST@>", "Call-ID: auth-1@192.0.2.10",
             f"CSeq: 2 {method}", *extra]
    return msg(f"{method} sip:{host} SIP/2.0", lines)


# ---------------------------------------------------------------- configurations (fuzz_config)

# test/lib.sh start_sipauthd, with the variables the tests fill in
LIB_CONF = """[sip]
listen = udp:127.0.0.1:5060, tcp:127.0.0.1:5060
domain = sip.tryvox.io
[upstream]
gateway = udp:127.0.0.2:5070
trusted = 127.0.0.2/32
[auth]
algorithms = {algs}
nonce_ttl = 30
[store]
path = /tmp/sipauthd-test/store
[abuse]
# bans are tested on their own (abuse.sh); elsewhere many failures are on purpose
max_failures = 0
[log]
# per-call lines (call_start, call_end) are debug lines; tests wait for them
level = debug
{extra}
"""

# the lines each integration test adds (test/integration/*.sh, test/tls_lib.sh)
LIB_EXTRA = {
    "plain": ("SHA-256, MD5", ""),
    "md5": ("MD5", ""),
    "api": ("SHA-256, MD5", "[api]\nlisten = 127.0.0.1:8080\nmax_body = 4096"),
    "api-metrics": ("SHA-256, MD5", "[api]\nlisten = 127.0.0.1:8080\nmetrics_listen = 127.0.0.1:9100"),
    "abuse": ("SHA-256, MD5", "[abuse]\nwindow = 60\nban_time = 3\n[api]\nlisten = 127.0.0.1:8080"),
    "hardening": ("MD5", "[proxy]\nmax_transactions_per_source = 5\nmax_transactions_per_credential = 100\n"
                         "[api]\nlisten = 127.0.0.1:8080"),
    "storage": ("SHA-256, MD5", "[api]\nlisten = 127.0.0.1:8080\n[store]\nmap_size = 2M"),
}

TLS_CONF = """[sip]
listen = udp:127.0.0.1:5060, tcp:127.0.0.1:5060, tls:127.0.0.1:5061
domain = sip.tryvox.io
[upstream]
gateway = udp:127.0.0.2:5070
trusted = 127.0.0.2/32
[auth]
algorithms = SHA-256, MD5
[store]
path = /tmp/sipauthd-test/store
[log]
level = debug
[tls]
certificate = /tmp/sipauthd-test/server.pem
private_key = /tmp/sipauthd-test/server.key
handshake_timeout = 2
min_version = TLSv1.3
"""

TLS_UPSTREAM_CONF = """[sip]
listen = udp:127.0.0.1:5060
[upstream]
gateway = tls:127.0.0.2:5071
tls_ca = /tmp/sipauthd-test/ca.pem
tls_server_name = gw.example.test
[auth]
algorithms = SHA-256, MD5
[store]
path = /tmp/sipauthd-test/store
"""

MIN_CONF = "[sip]\nlisten = udp:127.0.0.1:5060\n[upstream]\ngateway = udp:127.0.0.2:5060\n"

# each refused for one reason (and a few accepted edge cases), on top of the minimal file
CONF_EDGE = {
    "ipv6": "[sip]\nlisten = udp:[::1]:5060, tcp:::1:5061\n[upstream]\ngateway = tcp:[2001:db8::1]:5060\n"
            "trusted = 2001:db8::/32, 10.0.0.0/8, 192.0.2.1\n[api]\nlisten = [::1]:8080, 127.0.0.1:8081\n",
    "crlf-comments": MIN_CONF.replace("\n", "\r\n") + "; a comment\r\n  # another\r\n[auth]\r\n"
                     "nonce_ttl = 60 # trailing comment\r\nalgorithms=SHA-512-256,SHA-256 , MD5\r\n",
    "no-final-newline": MIN_CONF + "[log]\nlevel = warning",
    "all-limits-high": MIN_CONF + "[registrar]\nmin_expires = 86400\nmax_expires = 604800\ndefault_expires = 604800\n"
                       "max_contacts = 1000\n[proxy]\ntimer_c = 3600\nmax_transactions = 10000000\n"
                       "max_transaction_memory = 65536\nmax_calls = 10000000\nmax_call_age = 604800\n"
                       "[limits]\ntcp_idle_timeout = 86400\nmax_connections = 1000000\n[abuse]\nmax_failures = 100000\n"
                       "[api]\nmax_body = 1048576\nmin_password_length = 128\n[store]\nmap_size = 1T\n",
    "bad-unknown-key": MIN_CONF + "[sip]\nbogus_key = 1\n",
    "bad-unknown-section": MIN_CONF + "[nope]\n",
    "bad-section-header": MIN_CONF + "[sip] trailing\n",
    "bad-key-outside-section": "listen = udp:127.0.0.1:5060\n",
    "bad-no-equals": MIN_CONF + "[auth]\nnonce_ttl 30\n",
    "bad-listen": "[sip]\nlisten = sctp:127.0.0.1:5060\n",
    "bad-listen-host": "[sip]\nlisten = udp:localhost:5060\n",
    "bad-listen-port": "[sip]\nlisten = udp:127.0.0.1:65536\n",
    "bad-too-many-listen": "[sip]\nlisten = " + ", ".join(f"udp:127.0.0.1:{5060 + i}" for i in range(9)) + "\n",
    "bad-empty-list": MIN_CONF + "[upstream]\ntrusted = , ,\n",
    "bad-prefix": MIN_CONF + "[upstream]\ntrusted = 10.0.0.0/33\n",
    "bad-prefix-long": MIN_CONF + "[upstream]\ntrusted = 192.0.2.1/" + "0" * 58 + "32\n",
    "bad-algorithm-twice": MIN_CONF + "[auth]\nalgorithms = MD5, md5\n",
    "bad-algorithm-sess": MIN_CONF + "[auth]\nalgorithms = SHA-256-sess\n",
    "bad-number-negative": MIN_CONF + "[auth]\nnonce_ttl = -1\n",
    "bad-number-huge": MIN_CONF + "[proxy]\nmax_calls = 99999999999999999999999\n",
    "bad-number-suffix": MIN_CONF + "[limits]\nmax_connections = 10k\n",
    "bad-map-size": MIN_CONF + "[store]\nmap_size = 2P\n",
    "bad-domain": MIN_CONF + "[sip]\ndomain = sip_tryvox.io\n",
    "bad-log-level": MIN_CONF + "[log]\nlevel = verbose\n",
    "bad-tls-version": MIN_CONF + "[tls]\nmin_version = TLSv1.1\n",
    "bad-tls-no-cert": "[sip]\nlisten = tls:127.0.0.1:5061\n[upstream]\ngateway = udp:127.0.0.2:5060\n",
    "bad-gateway-tls-no-name": "[sip]\nlisten = udp:127.0.0.1:5060\n[upstream]\ngateway = tls:127.0.0.2:5061\n",
    "bad-no-gateway": "[sip]\nlisten = udp:127.0.0.1:5060\n",
    "bad-no-listen": "[upstream]\ngateway = udp:127.0.0.2:5060\n",
    "bad-expires-order": MIN_CONF + "[registrar]\nmin_expires = 600\nmax_expires = 300\n",
    "bad-default-expires": MIN_CONF + "[registrar]\ndefault_expires = 30\n",
    "bad-empty-value": MIN_CONF + "[store]\npath =\n",
    "bad-api-address": MIN_CONF + "[api]\nlisten = udp:127.0.0.1:8080\n",
    "bad-long-line": MIN_CONF + "[tls]\ncertificate = /" + "a" * 4200 + "\n",
    "nul-in-value": MIN_CONF + "[log]\nlevel = info\0garbage\n",
}


# ---------------------------------------------------------------- API requests (fuzz_api)

ACC = "/v1/account/@ACC@"
TR = ACC + "/trunks/@TRUNK@"
CR = TR + "/credentials"
KEY = "Bearer @KEY@"
GOOD = '{"username": "pbx-prod-01", "password": "@PW@"}'


def req(method, path, auth=KEY, body=""):
    return f"{method}\n{path}\n{auth}\n{body}"


# name: the requests of one input (fuzz_api.c documents the format and the placeholders)
API = {
    "trunks-list": [req("GET", ACC + "/trunks")],
    "trunk-show": [req("GET", TR)],
    "credentials-list": [req("GET", CR)],
    "credential-show": [req("GET", CR + "/@CRED@")],
    "credential-create": [req("POST", CR, body=GOOD)],
    "credential-create-show-delete": [req("POST", CR, body=GOOD), req("GET", CR), req("GET", CR + "/@NEW@"),
                                      req("DELETE", CR + "/@NEW@"), req("GET", CR + "/@NEW@")],
    "credential-delete-fixture": [req("DELETE", CR + "/@CRED@"), req("GET", TR + "/registrations"),
                                  req("POST", CR, body='{"username": "pbx-fuzz-01", "password": "@PW@"}')],
    "credential-duplicate": [req("POST", CR, body='{"username": "PBX-FUZZ-01", "password": "@PW@"}')],
    "credential-weak-short": [req("POST", CR, body='{"username": "pbx-prod-02", "password": "short"}')],
    "credential-weak-contains-user": [req("POST", CR, body='{"username": "pbx", "password": "my-PBX-password-1"}')],
    "credential-weak-unprintable": [req("POST", CR, body='{"username": "pbx-2", "password": "tab\\there-password\\u00e9"}')],
    "credential-weak-long": [req("POST", CR, body='{"username": "pbx-3", "password": "' + "p" * 129 + '"}')],
    "credential-bad-username": [req("POST", CR, body='{"username": "bad user!", "password": "@PW@"}'),
                                req("POST", CR, body='{"username": "' + "u" * 65 + '", "password": "@PW@"}'),
                                req("POST", CR, body='{"username": "", "password": "@PW@"}')],
    "credential-missing-fields": [req("POST", CR, body='{"username": "pbx-4"}'), req("POST", CR, body='{"password": "@PW@"}'),
                                  req("POST", CR, body="{}")],
    "credential-wrong-types": [req("POST", CR, body='{"username": 1, "password": true}'), req("POST", CR, body="[]"),
                               req("POST", CR, body='"@PW@"'), req("POST", CR, body="null")],
    "credential-bad-json": [req("POST", CR, body='{"username": "x", "password": '),
                            req("POST", CR, body='{"username": "a\\u0000b", "password": "@PW@"}'),
                            req("POST", CR, body='{"username": "x", "username": "y", "password": "@PW@"}'),
                            req("POST", CR, body="[" * 300), req("POST", CR)],
    "credential-other-trunk": [req("GET", CR + "/@CREDB@"), req("DELETE", CR + "/@CREDB@"),
                               req("POST", ACC + "/trunks/@TRUNKB@/credentials", body=GOOD)],
    "credential-unknown": [req("GET", CR + "/cred_doesnotexist"), req("DELETE", CR + "/cred_doesnotexist")],
    "registrations": [req("GET", TR + "/registrations")],
    "calls": [req("GET", TR + "/calls"), req("GET", TR + "/calls?x=1")],
    "auth-failures": [req("GET", TR + "/auth-failures?since=2026-04-09T00:00:00Z&limit=50")],
    "auth-failures-forms": [req("GET", TR + "/auth-failures"), req("GET", TR + "/auth-failures?since=1775731000"),
                            req("GET", TR + "/auth-failures?since=2026-04-09T12:35:00.123%2B02:00&limit=1"),
                            req("GET", TR + "/auth-failures?limit=1000&since=2026-04-09t10:00:00-01:30"),
                            req("GET", TR + "/auth-failures?")],
    "auth-failures-bad": [req("GET", TR + "/auth-failures?since=2026-02-30T00:00:00Z"),
                          req("GET", TR + "/auth-failures?limit=0"), req("GET", TR + "/auth-failures?limit=1001"),
                          req("GET", TR + "/auth-failures?limit=1&limit=2"), req("GET", TR + "/auth-failures?page=2"),
                          req("GET", TR + "/auth-failures?since=%zz"), req("GET", TR + "/auth-failures?since=%00"),
                          req("GET", TR + "/auth-failures?since=9999999999999"), req("GET", TR + "/auth-failures?since=&&")],
    "method-not-allowed": [req("PUT", ACC + "/trunks"), req("POST", TR), req("DELETE", CR), req("PATCH", CR + "/@CRED@"),
                           req("HEAD", TR + "/calls")],
    "no-key": [req("GET", ACC + "/trunks", auth="")],
    "bad-keys": [req("GET", ACC + "/trunks", auth="Basic dXNlcjpwYXNz"), req("GET", ACC + "/trunks", auth="Bearer"),
                 req("GET", ACC + "/trunks", auth="Bearer    "),
                 req("GET", ACC + "/trunks", auth="Bearer tvx_sk_live_0000000000000000000000000000000"),
                 req("GET", ACC + "/trunks", auth="Bearertvx_sk_live_x"),
                 req("GET", ACC + "/trunks", auth=" \tbearer\t@KEY@  ")],
    "other-account": [req("GET", ACC + "/trunks", auth="Bearer @KEYB@"), req("GET", CR, auth="Bearer @KEYB@"),
                      req("GET", "/v1/account/@ACCB@/trunks/@TRUNK@/credentials", auth="Bearer @KEYB@"),
                      req("GET", "/v1/account/@ACCB@/trunks/@TRUNKB@/credentials", auth="Bearer @KEYB@")],
    "webhooks": [req("POST", ACC + "/webhooks", body='{"url": "https://hooks.example.com/x?y=1", "events": ["auth.failed", "call.revoked"]}'),
                 req("GET", ACC + "/webhooks"), req("GET", ACC + "/webhooks/@WH@"),
                 req("GET", ACC + "/webhooks/@WH@/deliveries?limit=5"), req("DELETE", ACC + "/webhooks/@WH@"),
                 req("GET", ACC + "/webhooks/@WH@")],
    "webhooks-bad": [req("POST", ACC + "/webhooks", body='{"url": "ftp://h/", "events": ["auth.failed"]}'),
                     req("POST", ACC + "/webhooks", body='{"url": "http://[::1]:99999/", "events": []}'),
                     req("POST", ACC + "/webhooks", body='{"url": "http://h/", "events": ["x"], "extra": 1}'),
                     req("POST", ACC + "/webhooks", body='{"events": ["auth.failed"]}'),
                     req("GET", ACC + "/webhooks?starting_after=wh_none"), req("PUT", ACC + "/webhooks/wh_x"),
                     req("GET", "/v1/account/@ACCB@/webhooks", auth="Bearer @KEY@")],
    "paths": [req("GET", "/v1/"), req("GET", ACC), req("GET", ACC + "/trunks/"), req("GET", ACC + "//trunks"),
              req("GET", CR + "/@CRED@/extra"), req("GET", CR + "/"), req("GET", TR + "/nothing"),
              req("GET", ACC + "/trunks/trunk.bad"), req("GET", ACC + "/trunks/" + "t" * 48),
              req("GET", "/v1/account/" + "a" * 47 + "/trunks"), req("GET", "")],
}


# calls.journal.N and calls.state lines (lib/calls.c): a call line as sipauthd writes it, its end
# line, the two headers, and lines that must be refused or read exactly
def call_line(call_id="abc@pbx", ftag="caller-tag", ttag="callee-tag", inbound=False, started=1796000000,
              name='\\"Caf\u00e9\\" <sip:pbx@x>;tag=a', cseq=(7, 4294967296),
              caller_flow=("udp", "198.51.100.7", 5060, "udp:192.0.2.1:5060"),
              callee_flow=("tcp", "2001:db8::10", 5070, "tcp:[2001:db8::1]:5060")):
    def flow(f):
        return '{"transport":"%s","address":"%s","port":%d,"listener":"%s"}' % f
    return ('{"call_id":"%s","caller_tag":"%s","callee_tag":"%s","cred_id":"cred_x","trunk_id":"trunk_t1",'
            '"inbound":%s,"started_at":%d,"caller":{"target":"sip:pbx@198.51.100.7","route":"<sip:198.51.100.1;lr>",'
            '"name":"%s","cseq":%d,"flow":%s},"callee":{"target":"sip:gw@192.0.2.10","route":"<sip:gw@192.0.2.10;lr>",'
            '"name":"<sip:100@x>;tag=b","cseq":%d,"flow":%s}}'
            % (call_id, ftag, ttag, "true" if inbound else "false", started, name, cseq[0], flow(caller_flow),
               cseq[1], flow(callee_flow)))


def end_line(call_id="abc@pbx", ftag="caller-tag", ttag="callee-tag"):
    return '{"end":"%s","caller_tag":"%s","callee_tag":"%s"}' % (call_id, ftag, ttag)


CALLS = {
    "journal": ['{"kind":"sipauthd-calls-journal","version":2}', call_line(), call_line("b@pbx", "fb", "tb", True),
                end_line(), call_line("c@pbx", "fc", "tc"), ""],
    "state": ['{"kind":"sipauthd-calls","version":2,"calls":2}', call_line(), call_line("b@pbx", "fb", "tb"), ""],
    "rewritten": [call_line(), call_line(cseq=(8, 5)), end_line(), end_line()],
    "cut": [call_line(), call_line("d@pbx")[:97]],
    "escapes": [call_line('id\\"1@h', "f\\\\t", "t\\u0001", name="\\u00e9\\ud83d\\ude00 \\t\\/"),
                end_line('id\\"1@h', "f\\\\t", "t\\u0001")],
    "mistyped": [call_line().replace('"cseq":7', '"cseq":"7"'), call_line().replace('"port":5060', '"port":70000'),
                 call_line().replace('"inbound":false', '"inbound":0'), call_line().replace('"udp"', '"sctp"', 1),
                 '{"end":"x"}', '{"end":"x","caller_tag":1,"callee_tag":"t"}', "[]", "null", '{"call_id":null}'],
    "long": [call_line("x" * 255), call_line("y" * 256), call_line("z@pbx", name="n" * 1024),  # at the limits and past
             call_line("w@pbx", name="n" * 1025)],
    "ipv6-many": [call_line("c%d@pbx" % i, "f%d" % i, "t%d" % i, caller_flow=("tls", "2001:db8::%x" % i, 5061,
                                                                              "tls:[2001:db8::1]:5061"))
                  for i in range(40)],
}


def write(corpus, name, data):
    d = os.path.join(OUT, corpus)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    rfc_dir = os.path.join(TOP, "test", "rfc4475", "messages")
    rfc = {f[:-4]: open(os.path.join(rfc_dir, f), "rb").read() for f in sorted(os.listdir(rfc_dir)) if f.endswith(".dat")}
    sipp_dir = os.path.join(TOP, "test", "sipp")
    sipp = []
    for f in sorted(os.listdir(sipp_dir)):
        if f.endswith(".xml"):
            sipp += sipp_messages(os.path.join(sipp_dir, f), HOST, fixed_auth)
    for name, data in rfc.items():
        write("sipmsg", f"rfc4475-{name}", data)
        write("frame", f"rfc4475-{name}", data)
    for name, data in sipp:
        write("sipmsg", f"sipp-{name}", data)
    for name, data in OWN.items():
        write("sipmsg", f"own-{name}", data)
        write("frame", f"own-{name}", data)
    # streams: several messages back to back, keep-alives, a trailing partial message
    write("frame", "stream-pipelined", rfc["zeromf"] + rfc["bext01"] + OWN["invite-sdp"])
    write("frame", "stream-keepalives", b"\r\n\r\n\r\n" + OWN["register"] + b"\r\n\r\n" + OWN["cancel"])
    write("frame", "stream-partial", OWN["invite-sdp"] + OWN["register"][:40])
    write("frame", "stream-sipp-call", b"".join(d for n, d in sipp if n.startswith("pbx_call")))
    write("frame", "stream-two-lengths", OWN["cancel"].replace(b"Content-Length: 0", b"Content-Length: 0\r\nl: 0"))
    write("frame", "stream-huge-length", OWN["cancel"].replace(b"Content-Length: 0", b"Content-Length: 99999999999999999999"))
    for name, (method, value) in AUTH.items():
        write("auth", name, auth_seed(method, value))
    write("auth", "reg-dns-host", auth_seed("REGISTER", AUTH["reg-sha256"][1], host="@DNSHOST@"))
    write("auth", "reg-two-credentials", auth_seed("REGISTER", AUTH["reg-other-realm-first"][1],
                                                   second=AUTH["reg-md5-qop"][1]))
    write("auth", "inv-unknown-trunk", auth_seed("INVITE", AUTH["inv-sha256"][1], host="trunk-trunk_nope.sip.example.com"))
    for name, data in sipp:
        if name.startswith(("pbx_register", "pbx_call")):
            d2 = sipp_messages(os.path.join(sipp_dir, name.rstrip("0123456789") + ".xml"), "@HOST@", placeholder_auth)
            write("auth", f"sipp-{name}", dict(d2)[name])
    write("auth", "rfc4475-regaut01", rfc["regaut01"])
    write("config", "conf-sample", open(os.path.join(TOP, "conf", "sipauthd.conf"), "rb").read())
    for name, (algs, extra) in LIB_EXTRA.items():
        write("config", f"test-{name}", LIB_CONF.format(algs=algs, extra=extra).encode())
    write("config", "test-tls", TLS_CONF.encode())
    write("config", "test-tls-upstream", TLS_UPSTREAM_CONF.encode())
    write("config", "minimal", MIN_CONF.encode())
    for name, text in CONF_EDGE.items():
        write("config", name, text.encode())
    for name, reqs in API.items():
        write("api", name, "\n%%\n".join(reqs).encode())
    for name, lines in CALLS.items():
        write("calls", name, "\n".join(lines).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
