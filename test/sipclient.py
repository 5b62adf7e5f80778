#!/usr/bin/env python3
"""sipclient.py: a small SIP test client for sipauthd's integration tests.

It does what sipp 3.6.1 cannot: SHA-256 and SHA-512-256 digest (RFC 7616,
RFC 8760), the RFC 8760 choice among several challenges, and deliberately wrong
answers (stale, replayed or reused nonces, wrong algorithm, malformed headers).
Python 3.11 standard library only.

Subcommands (`sipclient.py SUBCOMMAND -h` lists every flag):
  register  REGISTER, answering a 401/407 challenge
  options   OPTIONS, answering a challenge when --password is given
  invite    INVITE with SDP -> ACK -> [--hold S] -> BYE along the Record-Route set
  pbx       REGISTER, then take --calls inbound INVITEs on the same flow (UDP socket or
            TCP/TLS connection): 180, 200 with SDP, the ACK, then the caller's BYE or
            (--hangup S) our own BYE along the INVITE's Record-Route
  raw       send a file (or stdin) verbatim and print what comes back
  selftest  check the digest code against published vectors

Output: one compact JSON object per line on stdout (no spaces: grep '"status":200').
  {"event":"sent",...}      each request sent
  {"event":"response",...}  each response: status, reason, method, cseq, src, headers
                            (names lower-cased, compact forms expanded, name -> list;
                            Via/Route/Record-Route/Contact split at commas), body;
                            401/407 add challenges, challenge_algorithms and
                            chosen_algorithm (null = this client did not answer it)
  {"event":"request",...}   a request received (BYE/OPTIONS/... are answered 200)
  {"event":"stray_response"}, {"event":"unparsed"}, {"event":"timeout"}, ...
  {"event":"done","final_status":N,"finals":["REGISTER 401","REGISTER 200"]} last;
                            final_status is the final status of the last request sent.
Exit status: 0 the exchange completed (whatever the status codes); 1 local error
  (socket, digest not computable); 2 usage error; 3 no answer within --timeout
  (or the TCP peer closed the connection without answering).
Not a full UA: no UDP retransmission (tests run on loopback), and the next hop is
always --server (route URIs are not resolved). The ACK for a 2xx carries the
INVITE's credentials unchanged (RFC 3261 §13.2.2.4), so a proxy must not verify
it. --linger keeps the socket answering after the exchange (sipp over TCP counts
a call failed if the connection closes during its timewait).
"""

import argparse
import hashlib
import json
import os
import re
import secrets
import socket
import ssl
import sys
import time
from dataclasses import dataclass

USER_AGENT = "sipauthd-test-sipclient"

# ---------------------------------------------------------------- digest

# RFC 7616 §6.1 / RFC 8760 §2 algorithm names -> hashlib names.
HASHLIB_NAMES = {"MD5": "md5", "SHA-256": "sha256", "SHA-512-256": "sha512_256"}


class DigestError(Exception):
    """An algorithm this client (or this Python's OpenSSL) cannot compute."""


def base_algorithm(algorithm):
    """'sha-256-sess' -> 'SHA-256': the hash behind an algorithm name."""
    name = algorithm.upper()
    return name[:-5] if name.endswith("-SESS") else name


def hash_hex(algorithm, data):
    """Hex digest of bytes with the hash named by a digest algorithm name."""
    name = HASHLIB_NAMES.get(base_algorithm(algorithm))
    if name is None:
        raise DigestError(f"unknown digest algorithm {algorithm!r}")
    try:
        return hashlib.new(name, data).hexdigest()
    except ValueError:
        # sha512_256 comes only from OpenSSL (>= 1.1.1); hashlib has no fallback,
        # and a home-made SHA-512/256 would be a second thing to test.
        raise DigestError(f"{base_algorithm(algorithm)} is not available in this "
                          f"Python (hashlib {name!r} missing from its OpenSSL)") from None


def algorithm_available(algorithm):
    try:
        hash_hex(algorithm, b"")
        return True
    except DigestError:
        return False


def digest_response(algorithm, username, realm, password, method, uri, nonce,
                    qop=None, nc=None, cnonce=None, body=b""):
    """Return (HA1, response) per RFC 7616 §3.4.1-3.4.3 (RFC 2617 for MD5).

    qop None gives the RFC 2069 form H(HA1:nonce:HA2); nc is hashed as given."""
    def h(text):
        return hash_hex(algorithm, text.encode("utf-8"))
    ha1 = h(f"{username}:{realm}:{password}")
    if algorithm.upper().endswith("-SESS"):
        ha1 = h(f"{ha1}:{nonce}:{cnonce}")
    a2 = f"{method}:{uri}"
    if qop == "auth-int":
        a2 += ":" + hash_hex(algorithm, body)
    if qop:
        return ha1, h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{h(a2)}")
    return ha1, h(f"{ha1}:{nonce}:{h(a2)}")

# ---------------------------------------------------------------- challenges

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BARE_VALUE = re.compile(r"[^,\s]*")


@dataclass
class Challenge:
    scheme: str          # lower-cased, e.g. "digest"
    params: dict         # lower-cased names -> unquoted values

    @property
    def algorithm(self):
        # RFC 7616 §3.3: no algorithm parameter means MD5
        return self.params.get("algorithm", "MD5").upper()

    @property
    def stale(self):
        return self.params.get("stale", "").lower() == "true"


def _skip_ws(text, i):
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def _read_quoted(text, i):
    """Read a quoted-string starting at text[i] == '"'; returns (value, next index).
    Backslash escapes one character (RFC 3261 quoted-pair); unterminated runs to the end."""
    out, i = [], i + 1
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
        elif c == '"':
            return "".join(out), i + 1
        else:
            out.append(c)
            i += 1
    return "".join(out), i


def parse_auth_params(text):
    """'realm="a, b", NONCE=x' -> {"realm": "a, b", "nonce": "x"} (first occurrence wins)."""
    params, i = {}, 0
    while i < len(text):
        if text[i] in " \t\r\n,":
            i += 1
            continue
        m = _TOKEN.match(text, i)
        if not m:  # garbage: skip to the next comma rather than drop the whole header
            nxt = text.find(",", i)
            i = len(text) if nxt < 0 else nxt + 1
            continue
        name, i = m.group(0).lower(), _skip_ws(text, m.end())
        if i >= len(text) or text[i] != "=":
            params.setdefault(name, "")
            continue
        i = _skip_ws(text, i + 1)
        if i < len(text) and text[i] == '"':
            value, i = _read_quoted(text, i)
        else:
            m = _BARE_VALUE.match(text, i)
            value, i = m.group(0), m.end()
        params.setdefault(name, value)
    return params


def parse_challenge(value):
    """One WWW-/Proxy-Authenticate header value -> Challenge."""
    m = re.match(r"\s*(\S+)\s*(.*)", value, re.S)
    if not m:
        return Challenge("", {})
    return Challenge(m.group(1).lower(), parse_auth_params(m.group(2)))


def choose_challenge(challenges, supported):
    """RFC 8760 §2.4 / RFC 7616 §3.7: the first digest challenge, in the server's
    order, whose algorithm the client supports. The client's own order among its
    supported algorithms does not matter: the server's preference wins."""
    wanted = {a.upper() for a in supported}
    for ch in challenges:
        if ch.scheme == "digest" and ch.algorithm in wanted:
            return ch
    return None


def choose_qop(ch, forced=None, none=False):
    """qop to answer with: forced if given (even if not offered, for negative
    tests), else auth, else auth-int, else None (RFC 2069 style)."""
    if none:
        return None
    if forced:
        return forced
    offered = [q.strip().lower() for q in ch.params.get("qop", "").split(",")]
    for qop in ("auth", "auth-int"):
        if qop in offered:
            return qop
    return None


def quote(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def digest_credentials(ch, alg_token, hash_alg, username, password, method, uri,
                       qop, nc, cnonce, body):
    """Authorization / Proxy-Authorization value answering ch (RFC 7616 §3.4)."""
    realm, nonce = ch.params.get("realm", ""), ch.params.get("nonce", "")
    _, response = digest_response(hash_alg, username, realm, password, method, uri,
                                  nonce, qop, nc, cnonce, body)
    parts = [f"username={quote(username)}", f"realm={quote(realm)}",
             f"nonce={quote(nonce)}", f"uri={quote(uri)}",
             f"response={quote(response)}", f"algorithm={alg_token}"]
    if qop or hash_alg.upper().endswith("-SESS"):  # -sess needs cnonce even without qop
        parts.append(f"cnonce={quote(cnonce)}")
    if qop:
        parts += [f"qop={qop}", f"nc={nc}"]
    if "opaque" in ch.params:
        parts.append(f"opaque={quote(ch.params['opaque'])}")
    return "Digest " + ", ".join(parts)

# ---------------------------------------------------------------- SIP messages

# RFC 3261 §7.3.3 and later RFCs' compact header forms.
COMPACT = {"i": "call-id", "m": "contact", "e": "content-encoding", "l": "content-length",
           "c": "content-type", "f": "from", "s": "subject", "k": "supported", "t": "to",
           "v": "via", "o": "event", "u": "allow-events", "r": "refer-to",
           "b": "referred-by", "x": "session-expires", "a": "accept-contact",
           "j": "reject-contact", "d": "request-disposition", "y": "identity",
           "n": "identity-info"}
# Comma lists whose order and count matter to tests and routing; others
# (notably *-Authenticate, whose values contain commas) stay one value per line.
LIST_HEADERS = {"via", "route", "record-route", "contact"}
_CL_RE = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*(\d+)", re.I | re.M)


def split_list(value):
    """Split a header value at commas outside quotes and <...> (RFC 3261 §7.3.1)."""
    out, cur, quoted, angle, escaped = [], [], False, False, False
    for c in value:
        if escaped:
            escaped = False
        elif quoted and c == "\\":
            escaped = True
        elif c == '"':
            quoted = not quoted
        elif not quoted and c in "<>":
            angle = c == "<"
        elif c == "," and not quoted and not angle:
            out.append("".join(cur).strip())
            cur = []
            continue
        cur.append(c)
    out.append("".join(cur).strip())
    return [v for v in out if v]


@dataclass
class Message:
    """A parsed SIP message: status == 0 for requests."""
    start: str
    headers: dict
    body: bytes
    raw: bytes
    method: str = ""
    uri: str = ""
    status: int = 0
    reason: str = ""
    src: tuple = ()

    def first(self, name):
        values = self.headers.get(name)
        return values[0] if values else None

    def cseq(self):
        num, _, method = (self.first("cseq") or "").strip().partition(" ")
        return (int(num) if num.isdigit() else None), method.strip().upper()

    def branch(self):
        m = re.search(r";\s*branch=([^;,\s]+)", self.first("via") or "", re.I)
        return m.group(1) if m else None


def _unfold(lines):
    """Join continuation lines (leading whitespace) to the header before them."""
    out = []
    for line in lines:
        if line[:1] in (" ", "\t") and out:
            out[-1] += " " + line.strip()
        elif line:
            out.append(line)
    return out


def _parse_headers(lines):
    headers = {}
    for line in _unfold(lines):
        name, colon, value = line.partition(":")
        if not colon:
            continue
        name = name.strip().lower()
        name, value = COMPACT.get(name, name), value.strip()
        values = split_list(value) if name in LIST_HEADERS and value != "*" else [value]
        headers.setdefault(name, []).extend(values)
    return headers


def parse_message(data):
    """bytes -> Message; ValueError when the start line is not SIP."""
    data = data.lstrip(b"\r\n")  # CRLF keep-alives (RFC 5626 §3.5.1)
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, _, body = data.partition(b"\n\n")
    lines = head.decode("utf-8", "replace").replace("\r\n", "\n").split("\n")
    headers = _parse_headers(lines[1:])
    length = headers.get("content-length", [""])[0]
    if length.isdigit():
        body = body[:int(length)]
    msg = Message(lines[0].strip(), headers, body, data)
    parts = msg.start.split(" ", 2)
    if msg.start.startswith("SIP/2.0 ") and len(parts) >= 2 and parts[1].isdigit():
        msg.status, msg.reason = int(parts[1]), (parts[2] if len(parts) > 2 else "")
    elif len(parts) == 3 and parts[2] == "SIP/2.0":
        msg.method, msg.uri = parts[0], parts[1]
    else:
        raise ValueError(f"not a SIP start line: {msg.start[:80]!r}")
    return msg


def split_frame(buf):
    """TCP framing (RFC 3261 §18.3): head up to the blank line, then Content-Length
    bytes of body. Returns (message bytes, rest) or None while more is needed."""
    buf = buf.lstrip(b"\r\n")
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    m = _CL_RE.search(buf[:end])
    total = end + 4 + (int(m.group(1)) if m else 0)
    if len(buf) < total:
        return None
    return buf[:total], buf[total:]


def uri_of(name_addr):
    """'"x" <sip:a@b;lr>;p=1' -> 'sip:a@b;lr'; 'sip:a@b;p=1' -> 'sip:a@b'."""
    m = re.search(r"<([^>]*)>", name_addr or "")
    if m:
        return m.group(1)
    return (name_addr or "").split(";")[0].strip()


def contact_value(contact):
    """A Contact header value: '*' (remove all bindings) and name-addr forms as
    given, a bare URI in angle brackets (its parameters stay in the URI)."""
    if contact == "*" or contact.lstrip().startswith(("<", '"')):
        return contact
    return f"<{contact}>"


@dataclass
class Request:
    """An outgoing request; Via (with our branch) and Content-Length are added on encode."""
    method: str
    uri: str
    headers: list        # [(name, value)] in order
    body: bytes
    cseq: int
    branch: str
    via: str = ""

    def header(self, name):
        return next((v for n, v in self.headers if n.lower() == name.lower()), None)

    def encode(self):
        lines = [f"{self.method} {self.uri} SIP/2.0", f"Via: {self.via}"]
        lines += [f"{n}: {v}" for n, v in self.headers]
        lines.append(f"Content-Length: {len(self.body)}")
        # surrogateescape: a --display-name may hold bytes that are not UTF-8
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + self.body

# ---------------------------------------------------------------- transports


class NoAnswer(Exception):
    """Nothing arrived within --timeout, or the TCP peer closed the connection."""

    def __init__(self, why, waiting_for):
        super().__init__(why)
        self.why, self.waiting_for = why, waiting_for


class PeerClosed(Exception):
    pass


def family_of(ip):
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def hostport(ip, port):
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def resolve(server, kind, family):
    host, port = server
    return socket.getaddrinfo(host, port, family, kind)[0][4]


class UdpTransport:
    """One socket bound to --local-ip:--local-port; replies may come from any address."""
    name = "UDP"

    def __init__(self, args):
        fam = family_of(args.local_ip)
        self.server = resolve(args.server, socket.SOCK_DGRAM, fam)
        self.sock = socket.socket(fam, socket.SOCK_DGRAM)
        self.sock.bind((args.local_ip, args.local_port))
        self.local = self.sock.getsockname()[:2]

    def send(self, data, addr=None):
        self.sock.sendto(data, addr or self.server)

    def recv(self, deadline):
        """(bytes, source address) of the next datagram, or None at the deadline."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data, addr = self.sock.recvfrom(65535)
            except socket.timeout:
                return None
            except ConnectionRefusedError:  # ICMP error from an earlier send: keep waiting
                continue
            return data, addr[:2]

    def close(self):
        self.sock.close()


class TcpTransport:
    """One connection to --server; everything, our responses included, goes on it."""
    name = "TCP"

    def __init__(self, args):
        fam = family_of(args.local_ip)
        self.server = resolve(args.server, socket.SOCK_STREAM, fam)
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((args.local_ip, args.local_port))
        self.sock.settimeout(args.timeout)
        self.sock.connect(self.server)
        self.local = self.sock.getsockname()[:2]
        self.buf = b""

    def send(self, data, addr=None):
        self.sock.sendall(data)

    def recv(self, deadline):
        """(bytes, server address) of the next framed message, or None at the deadline."""
        while True:
            frame = split_frame(self.buf)
            if frame:
                msg, self.buf = frame
                return msg, self.server[:2]
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return None
            if not chunk:
                raise PeerClosed()
            self.buf += chunk

    def close(self):
        self.sock.close()


class TlsTransport(TcpTransport):
    """TCP with TLS on top; the server's certificate is not checked (tls.sh does that)."""
    name = "TLS"

    def __init__(self, args):
        super().__init__(args)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        self.sock = ctx.wrap_socket(self.sock, server_hostname=args.server[0])


def open_transport(args):
    kinds = {"tcp": TcpTransport, "tls": TlsTransport}
    return kinds.get(args.transport, UdpTransport)(args)

# ---------------------------------------------------------------- output


def emit(event, **fields):
    print(json.dumps({"event": event, **fields}, separators=(",", ":")), flush=True)


def text_of(data):
    return data.decode("utf-8", "replace")


def challenges_of(resp):
    name = "www-authenticate" if resp.status == 401 else "proxy-authenticate"
    return [parse_challenge(v) for v in resp.headers.get(name, [])]


def response_fields(resp, trace):
    """The JSON fields describing one received response."""
    num, method = resp.cseq()
    ev = {"status": resp.status, "reason": resp.reason, "method": method, "cseq": num,
          "src": hostport(*resp.src) if resp.src else None, "headers": resp.headers}
    if resp.body:
        ev["body"] = text_of(resp.body)
    if resp.status in (401, 407):
        chs = challenges_of(resp)
        ev["challenges"] = [{"scheme": c.scheme, **c.params} for c in chs]
        ev["challenge_algorithms"] = [c.algorithm for c in chs if c.scheme == "digest"]
    if trace:
        ev["raw"] = text_of(resp.raw)
    return ev

# ---------------------------------------------------------------- the user agent


@dataclass
class Dialog:
    """What RFC 3261 §12.1.2 keeps on the UAC side after a 2xx to INVITE."""
    remote_to: str        # To of the 2xx, with the remote tag
    remote_target: str    # Contact URI of the 2xx
    route_set: list       # Record-Route of the 2xx, reversed


class Client:
    """One UA: a transport, one Call-ID and From tag, the CSeq counter, the
    nonce counts, and the final statuses seen."""

    def __init__(self, args):
        self.args, self.t = args, open_transport(args)
        ip, port = self.t.local
        self.local = hostport(ip, port)
        self.call_id = f"{secrets.token_hex(8)}@{ip}"
        self.from_tag = secrets.token_hex(5)
        self.cseq = 0
        self.aor = f"sip:{args.user}@{args.host}"
        tcp = f";transport={args.transport}" if args.transport in ("tcp", "tls") else ""
        self.contact = args.contact or f"sip:{args.user}@{self.local}{tcp}"
        self.nc = {}             # nonce -> last nc sent (RFC 7616 §3.4: counts per nonce)
        self.finals = []         # [(method, status)]
        self.acks = {}           # INVITE branch -> ACK, re-sent if its final is retransmitted
        self.remote_bye = False
        self.slept = False
        self.last_auth = None    # (header, value) last sent, for --replay
        self.last_challenge = None  # (status, Challenge) last answered, for --reuse-nonce
        self.answering = not args.no_auth and (args.password is not None
                                               or args.raw_auth_header is not None)

    def close(self):
        self.t.close()

    # -- building and sending

    def make(self, method, uri, headers, body=b"", cseq=None, branch=None):
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        branch = branch or "z9hG4bK" + secrets.token_hex(8)
        req = Request(method, uri, headers, body, cseq, branch)
        req.via = f"SIP/2.0/{self.t.name} {self.local};rport;branch={branch}"
        req.headers.insert(0, ("Max-Forwards", str(self.args.max_forwards)))
        return req

    def request(self, method, uri, to, extra=(), body=b"", content_type=None):
        """A new out-of-dialog request in this client's Call-ID, CSeq + 1."""
        name = f'"{self.args.display_name}" ' if self.args.display_name else ""
        headers = [("From", f"{name}<{self.aor}>;tag={self.from_tag}"), ("To", to),
                   ("Call-ID", self.call_id), ("CSeq", f"{self.cseq + 1} {method}"),
                   ("Contact", contact_value(self.contact)), *extra, *self.args.header,
                   ("User-Agent", USER_AGENT)]
        if body:
            headers.append(("Content-Type", content_type))
        return self.make(method, uri, headers, body)

    def send(self, req):
        self.t.send(req.encode())
        ev = {"method": req.method, "cseq": req.cseq, "uri": req.uri,
              "branch": req.branch, "transport": self.t.name,
              "dest": hostport(*self.t.server[:2])}
        for name in ("Authorization", "Proxy-Authorization"):
            if req.header(name) is not None:
                ev[name.lower()] = req.header(name)
        if self.args.trace:
            ev["raw"] = text_of(req.encode())
        emit("sent", **ev)

    # -- receiving

    def dispatch(self, data, src):
        """Parse one message; answer requests here; return responses to the caller."""
        try:
            msg = parse_message(data)
        except ValueError as e:
            emit("unparsed", error=str(e), raw=text_of(data))
            return None
        msg.src = src
        if msg.status:
            return msg
        self.answer_request(msg, src)
        return None

    def receive(self, deadline, waiting_for):
        """Next response, or NoAnswer at the deadline (requests are answered here)."""
        while True:
            msg = next_message(self, deadline, waiting_for)
            if msg.status:
                return msg
            self.answer_request(msg, msg.src)

    def transact(self, req):
        """Send req and return its final response; provisional ones are reported
        and restart the timer, responses to other transactions are reported as stray."""
        self.send(req)
        deadline = time.monotonic() + self.args.timeout
        while True:
            resp = self.receive(deadline, req.method)
            if resp.branch() != req.branch or resp.cseq()[1] != req.method:
                self.stray(resp)
            elif resp.status >= 200:
                self.finals.append((req.method, resp.status))
                return resp
            else:
                self.report(resp)
                deadline = time.monotonic() + self.args.timeout

    def stray(self, resp):
        emit("stray_response", **response_fields(resp, self.args.trace))
        ack = self.acks.get(resp.branch())
        if ack and resp.cseq()[1] == "INVITE":  # a retransmitted final: ACK it again
            self.send(ack)

    def listen(self, seconds):
        """Answer whatever arrives for `seconds`, or until the peer sends BYE."""
        deadline = time.monotonic() + seconds
        while not self.remote_bye:
            try:
                got = self.t.recv(deadline)
            except PeerClosed:
                raise NoAnswer("closed", "hold") from None
            if got is None:
                return
            resp = self.dispatch(*got)
            if resp:
                self.stray(resp)

    def answer_request(self, req, src):
        """A UA must answer requests sent to it: 200 to the usual in-dialog ones."""
        emit("request", method=req.method, uri=req.uri, src=hostport(*src),
             headers=req.headers)
        if req.method == "ACK":
            return
        ok = req.method in ("BYE", "OPTIONS", "NOTIFY", "INFO", "UPDATE", "MESSAGE")
        status, reason = (200, "OK") if ok else (501, "Not Implemented")
        if req.method == "BYE" and req.first("call-id") == self.call_id:
            self.remote_bye = True
        to = req.first("to") or ""
        if not re.search(r";\s*tag=", to, re.I):
            to += f";tag={self.from_tag}"
        lines = [f"SIP/2.0 {status} {reason}"] + [f"Via: {v}" for v in req.headers.get("via", [])]
        lines += [f"From: {req.first('from')}", f"To: {to}", f"Call-ID: {req.first('call-id')}",
                  f"CSeq: {req.first('cseq')}", f"User-Agent: {USER_AGENT}", "Content-Length: 0"]
        self.t.send(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape"), src)
        emit("sent_response", status=status, method=req.method)

    def report(self, resp, **extra):
        emit("response", **response_fields(resp, self.args.trace), **extra)

    # -- authentication

    def challenge_to_answer(self, resp, answered):
        """The challenge to answer in resp, or None. One answer, plus one more when
        the server says our nonce went stale; a fresh challenge after an answer
        means the answer was refused, so stop there."""
        if resp.status not in (401, 407) or not self.answering:
            return None
        chs = challenges_of(resp)
        if self.args.raw_auth_header is not None:
            return chs[0] if chs and answered == 0 else None
        ch = choose_challenge(chs, self.args.algorithms)
        if ch is None or answered >= 2 or (answered == 1 and not ch.stale):
            return None
        return ch

    def next_nc(self, nonce):
        self.nc[nonce] = self.nc.get(nonce, 0) + 1
        return f"{self.nc[nonce]:08x}"

    def credentials(self, status, ch, req):
        """(header name, value) answering ch for a request like req; the flags
        --wrong-password, --alg-override, --qop*, --raw-auth-header apply here."""
        a = self.args
        name = "Authorization" if status == 401 else "Proxy-Authorization"
        if a.raw_auth_header is not None:
            value = a.raw_auth_header
        else:
            alg_token = a.alg_override or ch.params.get("algorithm", "MD5")
            # --alg-override hashes with the named algorithm (when it is one) but
            # keeps the chosen challenge's nonce and realm.
            known = a.alg_override and algorithm_available(a.alg_override)
            hash_alg = a.alg_override if known else ch.algorithm
            qop = choose_qop(ch, a.qop, a.qop_none)
            nc = self.next_nc(ch.params.get("nonce", "")) if qop else None
            value = digest_credentials(ch, alg_token, hash_alg, a.auth_user or a.user,
                                       a.wrong_password or a.password, req.method,
                                       req.uri, qop, nc, secrets.token_hex(8), req.body)
        self.last_auth, self.last_challenge = (name, value), (status, ch)
        return name, value

    def run_with_auth(self, build):
        """Send build(auth headers) and answer challenges (see challenge_to_answer).
        Returns (last request, its final response)."""
        auth = []
        if self.args.no_auth and self.args.raw_auth_header is not None:
            auth = [("Authorization", self.args.raw_auth_header)]
        answered = 0
        while True:
            req = build(auth)
            resp = self.transact(req)
            if self.args.lose_final and answered and resp.status >= 300 and resp.status not in (401, 407):
                # --lose-final: the final answer to the answered request taken as lost, so not
                # ACKed; the request goes again byte for byte, as a UDP retransmission would
                self.report(resp, lost=True)
                resp = self.transact(req)
            ch = self.challenge_to_answer(resp, answered)
            extra = {}
            if resp.status in (401, 407) and self.answering:
                extra["chosen_algorithm"] = ch.algorithm if ch else None
            self.report(resp, **extra)
            if req.method == "INVITE" and resp.status >= 300:
                self.ack_non2xx(req, resp)
            if ch is None:
                return req, resp
            self.sleep_before_answer()
            auth = [self.credentials(resp.status, ch, req)]
            answered += 1

    def sleep_before_answer(self):
        """--stale-after: let the nonce expire before the first answer."""
        if self.args.stale_after and not self.slept:
            self.slept = True
            emit("sleep", seconds=self.args.stale_after)
            time.sleep(self.args.stale_after)

    def once(self, req):
        """Send req, report its final response (no challenge answered)."""
        resp = self.transact(req)
        self.report(resp)
        return resp

    # -- INVITE dialogs

    def ack_non2xx(self, invite, resp):
        """RFC 3261 §17.1.1.3: same branch, Request-URI, From, Call-ID and Route as
        the INVITE; To from the response."""
        routes = [("Route", v) for n, v in invite.headers if n == "Route"]
        headers = [("From", invite.header("From")), ("To", resp.first("to")),
                   ("Call-ID", self.call_id), ("CSeq", f"{invite.cseq} ACK"), *routes]
        ack = self.make("ACK", invite.uri, headers, cseq=invite.cseq, branch=invite.branch)
        self.send(ack)
        self.acks[invite.branch] = ack

    def in_dialog(self, method, dialog, extra=(), cseq=None):
        """RFC 3261 §12.2.1.1: a request inside the dialog, loose or strict routed."""
        uri, routes = dialog.remote_target, dialog.route_set
        if routes and ";lr" not in uri_of(routes[0]).lower():
            # strict router (RFC 2543): its URI becomes the Request-URI
            uri, routes = uri_of(routes[0]), routes[1:] + [f"<{dialog.remote_target}>"]
        number = cseq if cseq is not None else self.cseq + 1
        headers = [("From", f"<{self.aor}>;tag={self.from_tag}"), ("To", dialog.remote_to),
                   ("Call-ID", self.call_id), ("CSeq", f"{number} {method}"),
                   *[("Route", r) for r in routes], *extra, ("User-Agent", USER_AGENT)]
        return self.make(method, uri, headers, cseq=cseq)

    def ack_2xx(self, invite, resp):
        """RFC 3261 §13.2.2.4: a new transaction along the route set, CSeq of the
        INVITE, and the INVITE's credentials. Returns the dialog."""
        dialog = Dialog(resp.first("to"), uri_of(resp.first("contact")) or invite.uri,
                        list(reversed(resp.headers.get("record-route", []))))
        creds = [(n, v) for n, v in invite.headers
                 if n in ("Authorization", "Proxy-Authorization")]
        ack = self.in_dialog("ACK", dialog, creds, cseq=invite.cseq)
        self.send(ack)
        self.acks[invite.branch] = ack
        return dialog

    def done(self):
        final = self.finals[-1][1] if self.finals else None
        emit("done", final_status=final, finals=[f"{m} {s}" for m, s in self.finals])

# ---------------------------------------------------------------- commands


def run_client(args, script):
    """Run script(client); map what went wrong to the exit status."""
    try:
        client = Client(args)
    except OSError as e:
        emit("error", error=f"{args.transport} to {args.server[0]}:{args.server[1]}: {e}")
        emit("done", final_status=None, finals=[])
        return 1
    code = 0
    try:
        script(client)
        linger(client, args.linger)
    except NoAnswer as e:
        emit(e.why, waiting_for=e.waiting_for, seconds=args.timeout)
        code = 3
    except (OSError, DigestError) as e:
        emit("error", error=str(e))
        code = 1
    finally:
        client.close()
    client.done()
    return code


def linger(c, seconds):
    """--linger: keep the socket open and answering after the exchange, so a peer
    can retransmit a 2xx (re-ACKed) or finish its own timers (sipp over TCP
    counts a call failed when the connection closes during its timewait)."""
    if seconds <= 0:
        return
    try:
        c.listen(seconds)
    except NoAnswer:  # the TCP peer closed: nothing more to wait for
        pass


def followups(c, build, req, resp):
    """--replay and --reuse-nonce, after a 2xx to an authenticated request."""
    a = c.args
    if not (a.replay or a.reuse_nonce):
        return
    if resp.status // 100 != 2 or c.last_auth is None:
        emit("skipped", what="replay/reuse-nonce", why="no authenticated 2xx")
        return
    if a.replay:  # same header: same nonce, same nc
        c.once(build([c.last_auth]))
    if a.reuse_nonce:  # same nonce, next nc
        c.once(build([c.credentials(*c.last_challenge, req)]))


def cmd_register(args):
    def script(c):
        expires = [("Expires", str(args.expires))] if args.expires is not None else []
        uri = args.uri or f"sip:{args.host}"

        def build(auth):
            return c.request("REGISTER", uri, f"<{c.aor}>", [*expires, *auth])
        req, resp = c.run_with_auth(build)
        followups(c, build, req, resp)
    return run_client(args, script)


def cmd_options(args):
    def script(c):
        uri = args.uri or f"sip:{args.host}"

        def build(auth):
            return c.request("OPTIONS", uri, f"<{uri}>",
                             [("Accept", "application/sdp"), *auth])
        req, resp = c.run_with_auth(build)
        followups(c, build, req, resp)
    return run_client(args, script)


def make_sdp(ip):
    kind = "IP6" if ":" in ip else "IP4"
    version = str(int(time.time()))
    return (f"v=0\r\no=sipclient {version} {version} IN {kind} {ip}\r\ns=sipclient\r\n"
            f"c=IN {kind} {ip}\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0 8 101\r\n"
            "a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
            "a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n").encode()


def cmd_invite(args):
    def script(c):
        uri = args.uri or f"sip:{args.to}@{args.host}"
        sdp = make_sdp(c.t.local[0])

        def build(auth):
            return c.request("INVITE", uri, f"<{uri_of(uri)}>",
                             [("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS"), *auth],
                             sdp, "application/sdp")
        invite, resp = c.run_with_auth(build)
        if resp.status // 100 != 2:
            return
        dialog = c.ack_2xx(invite, resp)
        if args.hold:
            emit("hold", seconds=args.hold)
        c.listen(args.hold)
        if not c.remote_bye and not args.no_bye:
            c.run_with_auth(lambda auth: c.in_dialog("BYE", dialog, auth))
    return run_client(args, script)


def respond(c, req, src, status, reason, to_tag, extra=(), body=b""):
    """A response to req along its Via, To with our tag."""
    to = req.first("to") or ""
    if not re.search(r";\s*tag=", to, re.I):
        to += f";tag={to_tag}"
    lines = [f"SIP/2.0 {status} {reason}"] + [f"Via: {v}" for v in req.headers.get("via", [])]
    lines += [f"From: {req.first('from')}", f"To: {to}", f"Call-ID: {req.first('call-id')}",
              f"CSeq: {req.first('cseq')}", *[f"{n}: {v}" for n, v in extra],
              f"User-Agent: {USER_AGENT}", f"Content-Length: {len(body)}"]
    c.t.send(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body, src)
    emit("sent_response", status=status, method=req.cseq()[1])
    return to


def next_message(c, deadline, waiting_for):
    """The next message (request or response) and its source; NoAnswer at the deadline."""
    while True:
        try:
            got = c.t.recv(deadline)
        except PeerClosed:
            raise NoAnswer("closed", waiting_for) from None
        if got is None:
            raise NoAnswer("timeout", waiting_for)
        msg = parse_received(got)
        if msg:
            return msg


def parse_received(item):
    """(bytes, source) as a Message with its src; None (reported) when it is not SIP."""
    try:
        msg = parse_message(item[0])
    except ValueError as e:
        emit("unparsed", error=str(e), raw=text_of(item[0]))
        return None
    msg.src = item[1]
    return msg


class InboundCall:
    """The PBX's side of one inbound call (RFC 3261 §12.1.1: the route set is the
    INVITE's Record-Route in order, the remote target its Contact)."""

    def __init__(self, c, invite):
        self.c, self.invite, self.src = c, invite, invite.src
        self.call_id = invite.first("call-id")
        self.tag = secrets.token_hex(5)
        self.to = None
        self.ok = None

    def answer(self):
        inv, c = self.invite, self.c
        rr = [("Record-Route", v) for v in inv.headers.get("record-route", [])]
        respond(c, inv, self.src, 180, "Ringing", self.tag, rr)
        extra = [*rr, ("Contact", contact_value(c.contact)), ("Content-Type", "application/sdp")]
        self.ok = (extra, make_sdp(c.t.local[0]))
        self.to = respond(c, inv, self.src, 200, "OK", self.tag, *self.ok)

    def wait(self, method, deadline):
        """Until a request of this call with method arrives (answering a BYE; the 200
        again for a retransmitted INVITE); other requests are answered as usual."""
        while True:
            msg = next_message(self.c, deadline, method)
            if msg.status:
                self.c.stray(msg)
                continue
            emit("request", method=msg.method, uri=msg.uri, src=hostport(*msg.src), headers=msg.headers)
            mine = msg.first("call-id") == self.call_id
            if mine and msg.method == "INVITE":
                respond(self.c, msg, msg.src, 200, "OK", self.tag, *self.ok)
            elif mine and msg.method == "BYE":
                respond(self.c, msg, msg.src, 200, "OK", self.tag)
            elif msg.method != "ACK" and not mine:
                respond(self.c, msg, msg.src, 481, "Call/Transaction Does Not Exist", self.tag)
            if mine and msg.method == method:
                return msg

    def hang_up(self, timeout):
        """Our BYE: to the INVITE's Contact, along its Record-Route, to the hop it came from."""
        inv, c = self.invite, self.c
        routes = [("Route", v) for v in inv.headers.get("record-route", [])]
        c.cseq += 1
        headers = [("From", self.to), ("To", inv.first("from")), ("Call-ID", self.call_id),
                   ("CSeq", f"{c.cseq} BYE"), *routes, ("User-Agent", USER_AGENT)]
        bye = c.make("BYE", uri_of(inv.first("contact")), headers, cseq=c.cseq)
        c.t.send(bye.encode(), self.src)
        emit("sent", method="BYE", cseq=bye.cseq, uri=bye.uri, transport=c.t.name, dest=hostport(*self.src))
        deadline = time.monotonic() + timeout
        while True:
            msg = next_message(c, deadline, "BYE")
            if msg.status and msg.branch() == bye.branch:
                c.finals.append(("BYE", msg.status))
                c.report(msg)
                if msg.status >= 200:
                    return
            elif not msg.status:
                c.answer_request(msg, msg.src)


def cmd_pbx(args):
    def script(c):
        expires = [("Expires", str(args.expires))] if args.expires is not None else []

        def build(auth):
            return c.request("REGISTER", f"sip:{args.host}", f"<{c.aor}>", [*expires, *auth])
        _, resp = c.run_with_auth(build)
        emit("registered", status=resp.status, local=c.local)
        if resp.status != 200:
            return
        for _ in range(args.calls):
            deadline = time.monotonic() + args.wait
            while True:
                msg = next_message(c, deadline, "INVITE")
                if msg.status:
                    c.stray(msg)
                    continue
                emit("request", method=msg.method, uri=msg.uri, src=hostport(*msg.src), headers=msg.headers)
                if msg.method == "INVITE":
                    break
                c.answer_request(msg, msg.src)
            call = InboundCall(c, msg)
            call.answer()
            call.wait("ACK", time.monotonic() + args.timeout)
            if args.hangup is not None:
                c.listen(args.hangup)
                call.hang_up(args.timeout)
            else:
                call.wait("BYE", time.monotonic() + args.wait)
            c.finals.append(("INVITE", 200))
    return run_client(args, script)


def read_input(path, crlf):
    data = sys.stdin.buffer.read() if path == "-" else open(path, "rb").read()
    # shell heredocs give LF; --crlf makes them SIP line ends without hand-editing
    return re.sub(rb"\r?\n", b"\r\n", data) if crlf else data


def cmd_raw(args):
    data = read_input(args.file, args.crlf)
    try:
        t = open_transport(args)
    except OSError as e:
        emit("error", error=f"{args.transport} to {args.server[0]}:{args.server[1]}: {e}")
        return 1
    t.send(data)
    emit("sent", method=data.split(b" ", 1)[0].decode("latin-1").strip(), bytes=len(data),
         transport=t.name, dest=hostport(*t.server[:2]), local=hostport(*t.local))
    got, final = raw_collect(t, args)
    t.close()
    if not got:
        emit("timeout", waiting_for="raw", seconds=args.timeout)
    emit("done", final_status=final, responses=got)
    return 0 if got else 3


def raw_collect(t, args):
    """Print what comes back until --responses finals, the timeout or TCP close."""
    got, finals, final = 0, 0, None
    deadline = time.monotonic() + args.timeout
    try:
        while finals < args.responses:
            item = t.recv(deadline)
            if item is None:
                break
            got += 1
            msg = parse_received(item)
            if msg is None:
                continue
            if not msg.status:
                emit("request", method=msg.method, uri=msg.uri, headers=msg.headers,
                     raw=text_of(msg.raw))
                continue
            emit("response", **response_fields(msg, True))
            if msg.status >= 200:
                finals, final = finals + 1, msg.status
            deadline = time.monotonic() + args.timeout
    except PeerClosed:
        emit("closed")
    return got, final

# ---------------------------------------------------------------- self-test

# Published digest vectors, copied from ../shared/corpora/digest-vectors/vectors.tsv
# (id column named; every expected value there is marked verified=yes).
SELFTEST_VECTORS = [
    # RFC 2617 §3.5 (password "Circle Of Life", capital O). HA1 also asserted by
    # sofia-sip libsofia-sip-ua/iptsec/test_auth_digest.c.
    dict(id="rfc2617-3.5", algorithm="MD5", username="Mufasa", realm="testrealm@host.com",
         password="Circle Of Life", method="GET", uri="/dir/index.html",
         nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", nc="00000001", cnonce="0a4f113b",
         qop="auth", ha1="939e7578ed9e3c518a452acee763bce9",
         response="6629fae49393a05397450978507c4ef1"),
    # RFC 7616 §3.9.1, MD5 (password "Circle of Life" per verified erratum 4495)
    dict(id="rfc7616-3.9.1-md5", algorithm="MD5", username="Mufasa",
         realm="http-auth@example.org", password="Circle of Life", method="GET",
         uri="/dir/index.html", nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
         nc="00000001", cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", qop="auth",
         response="8ca523f5e9506fed4657c9700eebdbec"),
    # RFC 7616 §3.9.1, SHA-256
    dict(id="rfc7616-3.9.1-sha-256", algorithm="SHA-256", username="Mufasa",
         realm="http-auth@example.org", password="Circle of Life", method="GET",
         uri="/dir/index.html", nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
         nc="00000001", cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", qop="auth",
         response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    # RFC 7616 §3.9.2 as corrected by erratum 4897 (true FIPS 180-4 SHA-512/256; the
    # RFC's printed values are truncated SHA-512). userhash is not exercised here.
    dict(id="rfc7616-3.9.2-erratum4897", algorithm="SHA-512-256",
         username="J\u00e4s\u00f8n Doe", realm="api@example.org",
         password="Secret, or not?", method="GET", uri="/doe.json",
         nonce="5TsQWLVdgBdmrQ0XsxbDODV+57QdFR34I9HAbC/RVvkK", nc="00000001",
         cnonce="NTg6RKcb9boFIAS3KrFK9BGeh+iDa/sm6jUMp2wds69v", qop="auth",
         response="3798d4131c277846293534c3edc11bd8a5e4cdcbff78b05db9d95eeb1cec68a5"),
    # RFC 2069 example inputs, corrected value (RFC 2069's printed e966c932... is
    # wrong); from the digest-access 0.3.1 crate test. Exercises the no-qop form.
    dict(id="rfc2069-example-corrected", algorithm="MD5", username="Mufasa",
         realm="testrealm@host.com", password="CircleOfLife", method="GET",
         uri="/dir/index.html", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
         response="1949323746fe6a43ef61f9606e7febea"),
    # sipsorcery test/unit/core/SIP/SIPAuthorisationDigestUnitTest.cs
    # (KnownMD5AndSHA256DigestTest): SIP SHA-256 without qop.
    dict(id="sipsorcery-known-invite-sha256", algorithm="SHA-256", username="aaronxten2",
         realm="asterisk", password="password", method="INVITE", uri="sip:303@bluesipd",
         nonce="17190028",
         response="34c1239616bbf7d3c1147d3933f333852f5c84d1adf8ccde86679598a4abd4aa"),
    # sofia-sip libsofia-sip-ua/iptsec/test_auth_digest.c (test_digest), qop=auth-int;
    # body is that test's data[] string (372 bytes, LF), kept in ../shared only.
    dict(id="sofia-auth-int-register", algorithm="MD5", username="test",
         realm="nokia-proxy", password="test", method="REGISTER",
         uri="sip:3000@194.2.188.133", nonce="3wWGOvaWn3n+hFv8PK2ABQ==", nc="00000001",
         cnonce="11RkhFg9EdaIRD36w0EMVA==", qop="auth-int",
         body_file="bodies/sofia-auth-int-presence.xml",
         response="26e8b9aaacfca2d68770fab1ec04e2c7"),
]


def vector_body(name):
    """A vector's body from ../shared (absent in a user's clone: None)."""
    here = os.path.dirname(os.path.abspath(__file__))
    roots = [os.environ.get("SHARED", ""), os.path.join(here, "..", "..", "shared")]
    for root in roots:
        path = os.path.join(root, "corpora", "digest-vectors", name)
        if root and os.path.isfile(path):
            with open(path, "rb") as f:
                return f.read()
    return None


def check_vector(v):
    """(ok, detail) for one vector; ok None means skipped."""
    body = b""
    if v.get("body_file"):
        body = vector_body(v["body_file"])
        if body is None:
            return None, "body file not found under ../shared"
    try:
        ha1, resp = digest_response(v["algorithm"], v["username"], v["realm"],
                                    v["password"], v["method"], v["uri"], v["nonce"],
                                    v.get("qop"), v.get("nc"), v.get("cnonce"), body)
    except DigestError as e:
        return False, str(e)
    if resp != v["response"] or ha1 != v.get("ha1", ha1):
        return False, f"got response {resp} ha1 {ha1}"
    return True, ""


def parser_checks():
    """Challenge parsing, the RFC 8760 choice rule, message parsing and TCP framing."""
    ch = parse_challenge('Digest REALM="a, \\"b\\"",nonce="x,y" , algorithm=sha-256,'
                         ' qop="auth,auth-int", Stale=TRUE')
    www = [parse_challenge(f'Digest realm="r", nonce="n{i}", algorithm={a}')
           for i, a in enumerate(("SHA-512-256", "SHA-256", "MD5"))]
    no_alg = parse_challenge('Digest realm="r", nonce="n"')
    msg = parse_message(b"SIP/2.0 401 Unauthorized\r\nv: SIP/2.0/UDP a;branch=z9hG4bK1,"
                        b" SIP/2.0/UDP b\r\nWWW-Authenticate: Digest realm=\"x, y\",\r\n"
                        b" nonce=\"n\"\r\nl: 2\r\n\r\nhi")
    two = b"OPTIONS sip:a SIP/2.0\r\nl: 1\r\n\r\nxREGISTER sip:a SIP/2.0\r\n\r\n"
    return [
        ("quoted commas and escapes", ch.params.get("realm") == 'a, "b"'
         and ch.params.get("nonce") == "x,y"),
        ("case-insensitive names", ch.scheme == "digest" and ch.algorithm == "SHA-256"
         and ch.stale),
        ("qop choice", choose_qop(ch) == "auth" and choose_qop(ch, none=True) is None),
        ("server order wins", choose_challenge(www, ["MD5", "SHA-256"]) is www[1]),
        ("first supported", choose_challenge(www, ["SHA-512-256"]) is www[0]),
        ("none supported", choose_challenge(www[:2], ["MD5"]) is None),
        ("no algorithm means MD5", choose_challenge([no_alg], ["MD5"]) is no_alg),
        ("compact forms, lists, folding", msg.status == 401 and len(msg.headers["via"]) == 2
         and msg.branch() == "z9hG4bK1" and msg.body == b"hi"
         and msg.headers["www-authenticate"] == ['Digest realm="x, y", nonce="n"']),
        ("tcp framing", split_frame(two) == (two[:32], two[32:])
         and split_frame(two[:20]) is None),
    ]


def cmd_selftest(args):
    failures = 0
    for v in SELFTEST_VECTORS:
        ok, detail = check_vector(v)
        if ok is None:
            emit("selftest", check=v["id"], skipped=detail)
            continue
        failures += not ok
        emit("selftest", check=v["id"], ok=ok, **({"error": detail} if detail else {}))
    for name, ok in parser_checks():
        failures += not ok
        emit("selftest", check=name, ok=ok)
    emit("done", failures=failures)
    return 1 if failures else 0

# ---------------------------------------------------------------- command line


def display_arg(text):
    raw = text.encode("latin-1").decode("unicode_escape").encode("latin-1")
    return raw.decode("utf-8", "surrogateescape")


def server_arg(text):
    m = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:\[\]]+):(\d+)", text)
    if not m:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    host, port = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    return host, int(port)


def algorithms_arg(text):
    algs = [a.strip().upper() for a in text.split(",") if a.strip()]
    for alg in algs:
        if base_algorithm(alg) not in HASHLIB_NAMES:
            raise argparse.ArgumentTypeError(f"unknown algorithm {alg!r}")
        if not algorithm_available(alg):
            raise argparse.ArgumentTypeError(f"{alg} is not available in this Python")
    if not algs:
        raise argparse.ArgumentTypeError("empty algorithm list")
    return algs


def header_arg(text):
    name, colon, value = text.partition(":")
    if not colon or not name.strip():
        raise argparse.ArgumentTypeError(f"expected 'Name: value', got {text!r}")
    return name.strip(), value.strip()


def network_options():
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--server", required=True, type=server_arg, metavar="HOST:PORT")
    p.add_argument("--transport", choices=("udp", "tcp", "tls"), default="udp")
    p.add_argument("--local-ip", default="127.0.0.1", help="bind address")
    p.add_argument("--local-port", type=int, default=0, help="bind port (default: any)")
    p.add_argument("--timeout", type=float, default=2.0, metavar="SECONDS",
                   help="wait this long for each answer (default 2)")
    return p


def ua_options():
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--trace", action="store_true", help="add each message's raw text")
    p.add_argument("--linger", type=float, default=0.0, metavar="SECONDS",
                   help="keep the socket open and answering this long after the exchange")
    p.add_argument("--host", help="Request-URI/To host (default: the --server host)")
    p.add_argument("--uri", help="Request-URI (default sip:HOST, invite: sip:TO@HOST)")
    p.add_argument("--user", default="sipclient", help="user part of From/To/Contact")
    p.add_argument("--auth-user", help="digest username (default: --user)")
    p.add_argument("--password", help="answer challenges with this password")
    p.add_argument("--algorithms", type=algorithms_arg, default=["SHA-256", "MD5"],
                   help="supported digest algorithms (default SHA-256,MD5); the first "
                        "challenge, in the server's order, with one of them is answered")
    p.add_argument("--contact", metavar="URI",
                   help="default sip:USER@LOCALIP:LOCALPORT (;transport=tcp over TCP); "
                        "'*' and '<uri>;params' are sent as given")
    p.add_argument("--header", type=header_arg, action="append", default=[],
                   metavar="'NAME: VALUE'", help="extra header (repeatable)")
    p.add_argument("--max-forwards", type=int, default=70)
    p.add_argument("--display-name", type=display_arg, metavar="TEXT",
                   help="display name in From; \\xNN is that byte (Latin-1 names: not UTF-8)")
    p.add_argument("--no-auth", action="store_true",
                   help="send only the first request (with --raw-auth-header, in it)")
    p.add_argument("--stale-after", type=float, metavar="SECONDS",
                   help="sleep between challenge and answer")
    p.add_argument("--wrong-password", metavar="PASSWORD", help="answer with this instead")
    p.add_argument("--lose-final", action="store_true",
                   help="take a final non-2xx to the answered request as lost: send the request "
                        "again unchanged (a retransmission) and report both answers")
    qop = p.add_mutually_exclusive_group()
    qop.add_argument("--qop", choices=("auth", "auth-int"), help="answer with this qop")
    qop.add_argument("--qop-none", action="store_true",
                     help="answer without qop/nc/cnonce (RFC 2069)")
    p.add_argument("--alg-override", metavar="NAME",
                   help="send algorithm=NAME and hash with NAME (when known) using the "
                        "chosen challenge's nonce")
    p.add_argument("--raw-auth-header", metavar="STRING",
                   help="answer the challenge with this header value verbatim")
    return p


def followup_options():
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--replay", action="store_true",
                   help="after a 2xx, resend the same credentials (same nonce and nc)")
    p.add_argument("--reuse-nonce", action="store_true",
                   help="after a 2xx, answer again with the same nonce and the next nc")
    return p


def build_parser():
    p = argparse.ArgumentParser(prog="sipclient.py", description=__doc__.split("\n")[0],
                                epilog="Exit: 0 done, 1 local error, 2 usage, 3 no answer.")
    sub = p.add_subparsers(dest="command", required=True)
    net, ua, follow = network_options(), ua_options(), followup_options()
    reg = sub.add_parser("register", parents=[net, ua, follow], help="REGISTER")
    reg.add_argument("--expires", type=int, metavar="N")
    reg.set_defaults(func=cmd_register)
    opt = sub.add_parser("options", parents=[net, ua, follow], help="OPTIONS")
    opt.set_defaults(func=cmd_options)
    inv = sub.add_parser("invite", parents=[net, ua], help="INVITE, ACK, BYE")
    inv.add_argument("--to", default="100", help="user part of the Request-URI")
    inv.add_argument("--hold", type=float, default=0.0, metavar="SECONDS",
                     help="keep the call up this long (a BYE from the peer ends it)")
    inv.add_argument("--no-bye", action="store_true", help="do not send BYE")
    inv.set_defaults(func=cmd_invite)
    pbx = sub.add_parser("pbx", parents=[net, ua], help="REGISTER, then take inbound calls")
    pbx.add_argument("--expires", type=int, metavar="N")
    pbx.add_argument("--calls", type=int, default=1, metavar="N", help="inbound calls to take")
    pbx.add_argument("--wait", type=float, default=10.0, metavar="SECONDS",
                     help="how long to wait for each INVITE, and for the caller's BYE")
    pbx.add_argument("--hangup", type=float, metavar="SECONDS",
                     help="send our own BYE this long after the ACK")
    pbx.set_defaults(func=cmd_pbx)
    raw = sub.add_parser("raw", parents=[net], help="send bytes verbatim")
    raw.add_argument("file", nargs="?", default="-", help="file to send (default: stdin)")
    raw.add_argument("--crlf", action="store_true", help="turn bare LF into CRLF first")
    raw.add_argument("--responses", type=int, default=1, metavar="N",
                     help="stop after N final responses (default 1)")
    raw.set_defaults(func=cmd_raw)
    sub.add_parser("selftest", help="check digest vectors").set_defaults(func=cmd_selftest)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if getattr(args, "server", None) and getattr(args, "host", "") is None:
        args.host = args.server[0]
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
