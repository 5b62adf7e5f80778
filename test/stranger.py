#!/usr/bin/env python3
"""stranger.py: what a hostile peer sends at sipauthd, for test/integration/hardening.sh.

Python 3.11 standard library only; digest and parsing come from sipclient.py.

Subcommands (one JSON object per line on stdout):
  indialog   an in-dialog request with a known call's Call-ID and tags, from any
             address, optionally with a Route past sipauthd; listens on the addresses
             it tries to reach and reports what arrived there.
  forge      a response built from a request as a gateway received it (its Via, branch,
             tags), sent from another address.
  auth       an authenticated request (REGISTER, MESSAGE, INVITE...) answering the
             challenge (or, --made-up-nonce, a nonce of its shape under a key sipauthd
             never uses; --made-up-nonce-live-key, under the key id it challenged with,
             another instance and a made-up MAC), with a digest uri of one's choice; saves the authenticated
             request to --save, or replays a saved one (--replay) from the same socket
             address; --count N sends N authenticated requests (one challenge each);
             --answer-stale: a replay challenged stale=true is answered as a PBX would.
  uas        a gateway stand-in: answers INVITE (180, then 200 after --delay for users
             in --slow), BYE and ACK; never answers --silent methods or users; saves
             each INVITE as received (--save-dir) with its Call-ID and tags. With
             --late S it says nothing for S seconds, then sends --late-status (180,
             then 200 after --delay unless CANCELled; or 200 at once); retransmitted
             INVITEs are not answered again; a CANCEL gets 200 and the INVITE 487.
  spoof      REGISTERs with Authorization from a forged UDP source address (raw socket,
             root only), which can never read the challenge.
"""

import argparse
import json
import secrets
import socket
import struct
import sys
import time

sys.path.insert(0, __import__("os").path.dirname(__file__))
import sipclient  # noqa: E402


def emit(**fields):
    print(json.dumps(fields, separators=(",", ":")), flush=True)


def hostport(s):
    host, _, port = s.rpartition(":")
    return host, int(port)


def new_branch():
    return "z9hG4bK-stranger-" + secrets.token_hex(8)


def udp_socket(local_ip, local_port=0):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((local_ip, local_port))
    return s


def recv_all(sock, seconds):
    """Every datagram within seconds -> list of parsed messages (or raw text)."""
    out, deadline = [], time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return out
        sock.settimeout(left)
        try:
            data, _ = sock.recvfrom(65535)
        except socket.timeout:
            return out
        try:
            out.append(sipclient.parse_message(data))
        except ValueError:
            out.append(None)


def first_status(msgs, skip_provisional=True):
    for m in msgs:
        if m is not None and m.status and (m.status >= 200 or not skip_provisional):
            return m
    return None


def request_text(method, uri, sock, call_id, from_hdr, to_hdr, cseq, extra=(), body=b""):
    ip, port = sock.getsockname()
    lines = [f"{method} {uri} SIP/2.0",
             f"Via: SIP/2.0/UDP {ip}:{port};branch={new_branch()};rport",
             "Max-Forwards: 70", f"From: {from_hdr}", f"To: {to_hdr}", f"Call-ID: {call_id}",
             f"CSeq: {cseq} {method}", f"Contact: <sip:stranger@{ip}:{port}>"]
    lines += list(extra)
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# ---------------------------------------------------------------- indialog

def cmd_indialog(a):
    sock = udp_socket(a.local_ip)
    traps = []
    for spec in a.trap_udp:
        traps.append(("udp", spec, udp_socket(*hostport(spec))))
    for spec in a.trap_tcp:
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        t.bind(hostport(spec))
        t.listen(8)
        t.setblocking(False)
        traps.append(("tcp", spec, t))
    routes = [f"<{r}>" for r in a.route]
    extra = [f"Route: {', '.join(routes)}"] if routes else []
    body = b""
    if a.method in ("INVITE", "UPDATE"):
        body = b"v=0\r\no=- 1 2 IN IP4 203.0.113.66\r\ns=-\r\nc=IN IP4 203.0.113.66\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
        extra.append("Content-Type: application/sdp")
    req = request_text(a.method, a.uri, sock, a.call_id, f"<sip:x@x>;tag={a.from_tag}",
                       f"<sip:y@y>;tag={a.to_tag}", a.cseq, extra, body)
    sock.sendto(req, hostport(a.server))
    got = recv_all(sock, a.wait)
    final = first_status(got)
    arrived = {}
    for kind, spec, t in traps:
        if kind == "udp":
            arrived[spec] = len(recv_all(t, 0.2))
        else:
            try:
                conn, _ = t.accept()
                arrived[spec] = 1
                conn.close()
            except BlockingIOError:
                arrived[spec] = 0
    emit(event="done", method=a.method, status=final.status if final else None,
         reason=final.reason if final else None, arrived=arrived)


# ---------------------------------------------------------------- forge

def cmd_forge(a):
    text = open(a.request_file, "rb").read()
    req = sipclient.parse_message(text)
    vias = req.headers.get("via", [])
    to = req.first("to")
    if "tag=" not in to:
        to += ";tag=forged" + secrets.token_hex(4)
    lines = [f"SIP/2.0 {a.status} {a.reason}"] + [f"Via: {v}" for v in vias]
    lines += [f"From: {req.first('from')}", f"To: {to}", f"Call-ID: {req.first('call-id')}",
              f"CSeq: {req.first('cseq')}"]
    if 200 <= a.status < 300:
        ip, port = a.local_ip, a.local_port
        lines.append(f"Contact: <sip:forger@{ip}:{port}>")
    lines.append("Content-Length: 0")
    sock = udp_socket(a.local_ip, a.local_port)
    sock.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), hostport(a.server))
    emit(event="sent", status=a.status, branch=req.branch)


# ---------------------------------------------------------------- auth

def made_up_nonce(nonce, live_key=False):
    """The nonce's shape (version, algorithm, time) under key id 0, which sipauthd never uses,
    with a random instance and MAC: what anyone can make without asking for a challenge.
    live_key keeps the challenge's key id (as an earlier start's nonce under the same id)."""
    import base64
    raw = bytearray(base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4)))
    if not live_key:
        raw[1] = 0
    raw[11:] = secrets.token_bytes(len(raw) - 11)
    return base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")


def challenge_answer(resp, method, uri, user, password, digest_uri, made_up=False):
    name = "www-authenticate" if resp.status == 401 else "proxy-authenticate"
    chs = [sipclient.parse_challenge(v) for v in resp.headers.get(name, [])]
    ch = sipclient.choose_challenge(chs, ["MD5"])
    if made_up:
        ch.params["nonce"] = made_up_nonce(ch.params["nonce"], made_up == "live-key")
    cnonce = secrets.token_hex(8)
    value = sipclient.digest_credentials(ch, "MD5", "MD5", user, password, method, digest_uri or uri,
                                         "auth", "00000001", cnonce, b"")
    return ("Authorization" if resp.status == 401 else "Proxy-Authorization") + ": " + value


def challenge_nonce(resp):
    """The nonce of the first challenge of a 401/407 (None otherwise)."""
    if not resp or resp.status not in (401, 407):
        return None
    name = "www-authenticate" if resp.status == 401 else "proxy-authenticate"
    chs = [sipclient.parse_challenge(v) for v in resp.headers.get(name, [])]
    return chs[0].params.get("nonce") if chs else None


def answer_stale(a, sock, req, stale_resp):
    """--replay --answer-stale: what a PBX does with stale=true: the same request again (same
    Call-ID, next CSeq) answering the new nonce with --user and --password."""
    old = sipclient.parse_message(req)
    cseq, method = old.cseq()
    auth = challenge_answer(stale_resp, method, old.uri, a.user, a.password, a.digest_uri)
    again = request_text(method, old.uri, sock, old.first("call-id"), old.first("from"), old.first("to"),
                         cseq + 1, [auth], old.body)
    sock.sendto(again, hostport(a.server))
    final = first_status(recv_all(sock, a.timeout))
    emit(event="done", status=stale_resp.status, stale=True, nonce=challenge_nonce(stale_resp),
         answered_status=final.status if final else None)


def one_auth(a, sock, n):
    uri = a.uri or f"sip:{a.host}"
    call_id = f"stranger-{secrets.token_hex(6)}-{n}"
    fr, to = f"<sip:{a.user}@{a.host}>;tag=s{secrets.token_hex(4)}", f"<sip:{a.user}@{a.host}>"
    body = b"hello" if a.method == "MESSAGE" else b""
    extra = ["Content-Type: text/plain"] if body else []
    sock.sendto(request_text(a.method, uri, sock, call_id, fr, to, 1, extra, body), hostport(a.server))
    ch = first_status(recv_all(sock, a.timeout))
    if not ch or ch.status not in (401, 407):
        return None, ch
    made_up = "live-key" if a.made_up_nonce_live_key else a.made_up_nonce
    auth = challenge_answer(ch, a.method, uri, a.user, a.password, a.digest_uri, made_up)
    req = request_text(a.method, uri, sock, call_id, fr, to, 2, extra + [auth], body)
    if not a.dont_send:
        sock.sendto(req, hostport(a.server))
    return req, None


def cmd_auth(a):
    sock = udp_socket(a.local_ip, a.local_port)
    if a.replay:
        req = open(a.replay, "rb").read()
        if not a.exact:
            # a new branch only: the same credentials, nonce and nc as before
            head, sep, rest = req.partition(b";branch=")
            req = head + sep + new_branch().encode() + rest[rest.index(b";"):]
        sock.sendto(req, hostport(a.server))
        final = first_status(recv_all(sock, a.timeout))
        stale = final and any("stale=true" in v for v in final.headers.get("www-authenticate", []) +
                              final.headers.get("proxy-authenticate", []))
        if stale and a.answer_stale:
            answer_stale(a, sock, req, final)
            return
        emit(event="done", status=final.status if final else None, stale=bool(stale),
             nonce=challenge_nonce(final))
        return
    if not (a.host and a.user and a.password):
        sys.exit("stranger.py auth: --host, --user and --password are needed unless --replay")
    statuses = []
    for n in range(a.count):
        req, early = one_auth(a, sock, n)
        if req is None:
            statuses.append(early.status if early else None)
            continue
        if a.save:
            open(a.save, "wb").write(req)
        if a.no_wait or a.dont_send:
            statuses.append("sent")
            continue
        got = recv_all(sock, a.timeout)
        final = first_status(got)
        statuses.append(final.status if final else None)
        if final:
            stale = any("stale=true" in v for v in final.headers.get("www-authenticate", []) +
                        final.headers.get("proxy-authenticate", []))
            emit(event="response", status=final.status, reason=final.reason, stale=stale,
                 to=final.first("to"), headers={k: v for k, v in final.headers.items() if k in ("retry-after",)})
    if a.listen:
        late = [{"status": m.status, "to": m.first("to")} for m in recv_all(sock, a.listen)
                if m is not None and m.status]
        emit(event="late", statuses=late)
    emit(event="done", statuses=statuses)


# ---------------------------------------------------------------- spoof

def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def cmd_spoof(a):
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    dst, dport = hostport(a.server)
    for n in range(a.count):
        sport = 5060
        call_id = f"spoof-{secrets.token_hex(6)}"
        nonce = secrets.token_urlsafe(27)[:36]
        auth = (f'Authorization: Digest username="{a.user}", realm="{a.host}", nonce="{nonce}", '
                f'uri="sip:{a.host}", response="{secrets.token_hex(16)}", algorithm=MD5, '
                f'qop=auth, nc=00000001, cnonce="abc"')
        lines = [f"REGISTER sip:{a.host} SIP/2.0",
                 f"Via: SIP/2.0/UDP {a.src}:{sport};branch={new_branch()};rport",
                 "Max-Forwards: 70", f"From: <sip:{a.user}@{a.host}>;tag=sp{n}",
                 f"To: <sip:{a.user}@{a.host}>", f"Call-ID: {call_id}", "CSeq: 2 REGISTER",
                 f"Contact: <sip:{a.user}@{a.src}:{sport}>", auth, "Content-Length: 0"]
        payload = ("\r\n".join(lines) + "\r\n\r\n").encode()
        src_b, dst_b = socket.inet_aton(a.src), socket.inet_aton(dst)
        ulen = 8 + len(payload)
        pseudo = src_b + dst_b + struct.pack("!BBH", 0, socket.IPPROTO_UDP, ulen)
        udp = struct.pack("!HHHH", sport, dport, ulen, 0)
        csum = checksum(pseudo + udp + payload) or 0xFFFF
        udp = struct.pack("!HHHH", sport, dport, ulen, csum)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + ulen, n & 0xFFFF, 0, 64, socket.IPPROTO_UDP, 0, src_b, dst_b)
        raw.sendto(ip + udp + payload, (dst, 0))
    emit(event="done", sent=a.count)


# ---------------------------------------------------------------- uas

def response_to(req, status, reason, to_tag=None, contact=None):
    lines = [f"SIP/2.0 {status} {reason}"] + [f"Via: {v}" for v in req.headers.get("via", [])]
    to = req.first("to")
    if to_tag and "tag=" not in to:
        to += f";tag={to_tag}"
    lines += [f"From: {req.first('from')}", f"To: {to}", f"Call-ID: {req.first('call-id')}",
              f"CSeq: {req.first('cseq')}"]
    lines += [f"Record-Route: {r}" for r in req.headers.get("record-route", [])]
    if contact:
        lines.append(f"Contact: <{contact}>")
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def user_of(uri):
    return uri.split(":", 1)[-1].split("@")[0] if "@" in uri else ""


def cmd_uas(a):
    import os
    sock = udp_socket(*hostport(a.listen))
    ip, port = sock.getsockname()
    pending = []   # (time to send, bytes, addr, call_id)
    deadline = time.monotonic() + a.duration
    n = 0
    seen = {}      # --late: call_id -> (INVITE, to tag)
    while time.monotonic() < deadline:
        now = time.monotonic()
        for item in [p for p in pending if p[0] <= now]:
            sock.sendto(item[1], item[2])
            pending.remove(item)
            if a.late is not None:
                emit(event="sent", status=int(item[1].split(b" ")[1]), call_id=item[3])
        sock.settimeout(0.05)
        try:
            data, src = sock.recvfrom(65535)
        except socket.timeout:
            continue
        try:
            m = sipclient.parse_message(data)
        except ValueError:
            continue
        if not m.method:
            emit(event="response", status=m.status, src=f"{src[0]}:{src[1]}")
            continue
        emit(event="request", method=m.method, uri=m.uri, src=f"{src[0]}:{src[1]}", call_id=m.first("call-id"),
             reason=m.first("reason"))
        if m.method in a.silent or user_of(m.uri) in a.silent:
            continue
        if m.method == "ACK":
            continue
        if m.method == "CANCEL" and m.first("call-id") in seen:
            inv, tag = seen[m.first("call-id")]
            pending[:] = [p for p in pending if p[3] != m.first("call-id")]
            sock.sendto(response_to(m, 200, "OK"), src)
            sock.sendto(response_to(inv, 487, "Request Terminated", tag), src)
            continue
        if m.method != "INVITE":
            sock.sendto(response_to(m, 200, "OK"), src)
            continue
        if a.late is not None and m.first("call-id") in seen:
            continue   # a retransmission: answered when its time comes
        n += 1
        tag = f"uas{n}{secrets.token_hex(3)}"
        from_tag = m.first("from").split("tag=")[-1].split(";")[0]
        if a.save_dir:
            open(os.path.join(a.save_dir, f"invite-{user_of(m.uri)}.msg"), "wb").write(m.raw)
            json.dump({"call_id": m.first("call-id"), "from_tag": from_tag, "to_tag": tag},
                      open(os.path.join(a.save_dir, f"invite-{user_of(m.uri)}.json"), "w"))
        ok = response_to(m, 200, "OK", tag, f"sip:gw@{ip}:{port}")
        cid = m.first("call-id")
        if a.late is not None:
            seen[cid] = (m, tag)
            at = time.monotonic() + a.late
            if a.late_status == 200:
                pending.append((at, ok, src, cid))
            else:
                pending.append((at, response_to(m, 180, "Ringing", tag), src, cid))
                pending.append((at + a.delay, ok, src, cid))
            continue
        sock.sendto(response_to(m, 180, "Ringing", tag), src)
        delay = a.delay if user_of(m.uri) in a.slow else 0.0
        pending.append((time.monotonic() + delay, ok, src, cid))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("indialog")
    i.add_argument("--server", required=True)
    i.add_argument("--local-ip", default="127.0.0.3")
    i.add_argument("--method", default="MESSAGE")
    i.add_argument("--uri", required=True)
    i.add_argument("--call-id", required=True)
    i.add_argument("--from-tag", required=True)
    i.add_argument("--to-tag", required=True)
    i.add_argument("--cseq", type=int, default=900)
    i.add_argument("--route", action="append", default=[])
    i.add_argument("--trap-udp", action="append", default=[])
    i.add_argument("--trap-tcp", action="append", default=[])
    i.add_argument("--wait", type=float, default=1.5)
    i.set_defaults(func=cmd_indialog)
    f = sub.add_parser("forge")
    f.add_argument("--server", required=True)
    f.add_argument("--local-ip", default="127.0.0.3")
    f.add_argument("--local-port", type=int, default=0)
    f.add_argument("--request-file", required=True)
    f.add_argument("--status", type=int, required=True)
    f.add_argument("--reason", default="Forged")
    f.set_defaults(func=cmd_forge)
    u = sub.add_parser("auth")
    u.add_argument("--server", required=True)
    u.add_argument("--local-ip", default="127.0.0.1")
    u.add_argument("--local-port", type=int, default=0)
    u.add_argument("--method", default="REGISTER")
    u.add_argument("--host")
    u.add_argument("--uri")
    u.add_argument("--digest-uri")
    u.add_argument("--user")
    u.add_argument("--password")
    u.add_argument("--count", type=int, default=1)
    u.add_argument("--save")
    u.add_argument("--replay")
    u.add_argument("--exact", action="store_true", help="with --replay: byte for byte (a retransmission)")
    u.add_argument("--answer-stale", action="store_true",
                   help="with --replay: answer a stale=true challenge with --user and --password")
    u.add_argument("--no-wait", action="store_true")
    u.add_argument("--made-up-nonce", action="store_true",
                   help="answer with a nonce of the challenge's shape under a key sipauthd never uses")
    u.add_argument("--made-up-nonce-live-key", action="store_true",
                   help="the same under the challenge's own key id: another instance, a MAC it did not make")
    u.add_argument("--dont-send", action="store_true", help="save the authenticated request, do not send it")
    u.add_argument("--listen", type=float, default=0.0)
    u.add_argument("--timeout", type=float, default=2.0)
    u.set_defaults(func=cmd_auth)
    g = sub.add_parser("uas")
    g.add_argument("--listen", required=True)
    g.add_argument("--duration", type=float, default=60.0)
    g.add_argument("--delay", type=float, default=2.0)
    g.add_argument("--slow", action="append", default=[])
    g.add_argument("--silent", action="append", default=[])
    g.add_argument("--save-dir")
    g.add_argument("--late", type=float)
    g.add_argument("--late-status", type=int, choices=(180, 200), default=200)
    g.set_defaults(func=cmd_uas)
    s = sub.add_parser("spoof")
    s.add_argument("--server", required=True)
    s.add_argument("--src", required=True)
    s.add_argument("--host", required=True)
    s.add_argument("--user", required=True)
    s.add_argument("--count", type=int, default=10)
    s.set_defaults(func=cmd_spoof)
    a = p.parse_args()
    a.func(a)


if __name__ == "__main__":
    main()
