#!/usr/bin/env python3
"""early_dialog.py: a PBX and a PSTN gateway for one call through sipauthd in which the early
dialog carries requests of its own, as carrier interconnects use it:

  PBX -> INVITE (Supported: 100rel, SDP), 407, ACK, INVITE with Proxy-Authorization
  gateway -> 183 Session Progress with SDP, Require: 100rel, RSeq: 1 (RFC 3262)
  PBX -> PRACK (RAck: 1 2 INVITE) along the 183's Record-Route, gateway -> 200
  gateway -> UPDATE in the early dialog (RFC 3311) along the INVITE's Record-Route, PBX -> 200
  gateway -> 200 for the INVITE, PBX -> ACK
  gateway -> re-INVITE putting the call on hold (a=sendonly), PBX -> 200, gateway -> ACK
  PBX -> BYE, gateway -> 200

With --inbound the call comes from the gateway instead, to the PBX registered first (REGISTER
with digest): the PBX answers with a reliable 183, the gateway sends the PRACK, then 200, ACK,
and the gateway's BYE.

With --tcp-reconnect the PBX calls over TCP, and after the reliable 183 its connection closes: it
sends the PRACK on a new connection from the same address, where the rest of the call must come
(the INVITE's 200 first).

Around them (outbound), requests sipauthd must refuse: a PRACK from the PBX whose To tag no
provisional carried (no such early dialog), a copy of the PRACK from a third address (--stranger,
127.0.0.3) while the call rings, and the PRACK again once the call has ended.

Both sides are UDP sockets of this process: the PBX on 127.0.0.1 (any port), the gateway on
--gateway (127.0.0.2:PORT, sipauthd's [upstream] gateway). Each message a side receives is
printed as one JSON line: {"side":"pbx"|"gateway","start":...,"headers":{...}}; then
{"event":"done"} when the call completed. Exit status 0 done, 3 a step timed out (a line
{"event":"timeout","waiting_for":...} says which), 2 usage. Standard library and
test/sipclient.py (digest, parsing) only; no retransmissions (loopback).
"""

import argparse
import json
import os
import re
import secrets
import socket
import sys
import time
from types import SimpleNamespace

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sipclient as sc  # noqa: E402

SDP = (b"v=0\r\no=%s 1 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\n"
       b"m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


class Timeout(Exception):
    pass


def sdp(who, ip):
    return SDP % (who.encode(), ip.encode(), ip.encode())


def encode(start, headers, body=b""):
    lines = [start] + [f"{n}: {v}" for n, v in headers] + [f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def response_to(req, status, reason, extra, body=b"", to_tag=None, copy_rr=False):
    """A response echoing req's Via, From, To (with to_tag when it has none), Call-ID, CSeq."""
    hs = [("Via", v) for v in req.headers.get("via", [])]
    to = req.first("to")
    if to_tag and ";tag=" not in to:
        to += f";tag={to_tag}"
    hs += [("From", req.first("from")), ("To", to), ("Call-ID", req.first("call-id")),
           ("CSeq", req.first("cseq"))]
    if copy_rr:
        hs += [("Record-Route", rr) for rr in req.headers.get("record-route", [])]
    return encode(f"SIP/2.0 {status} {reason}", hs + extra, body)


def inbound(a, pbx, gw, proxy, recv, is_req, is_resp, gw_contact, pbx_contact):
    """The gateway calls the PBX, which answers with a reliable 183 first."""
    pbx_ip, pbx_port = pbx.getsockname()
    gw_ip, gw_port = gw.getsockname()
    aor = f"<sip:{a.user}@{a.host}>"
    reg_id = f"reg-{secrets.token_hex(6)}@127.0.0.1"
    reg_tag = "reg" + secrets.token_hex(4)

    def register(cseq, extra):
        branch = "z9hG4bK" + secrets.token_hex(8)
        pbx.sendto(encode(f"REGISTER sip:{a.host} SIP/2.0",
                          [("Via", f"SIP/2.0/UDP {pbx_ip}:{pbx_port};branch={branch};rport"),
                           ("From", f"{aor};tag={reg_tag}"), ("To", aor), ("Call-ID", reg_id),
                           ("CSeq", f"{cseq} REGISTER"), ("Max-Forwards", "70"),
                           ("Contact", f"<sip:{a.user}@{pbx_ip}:{pbx_port}>"), ("Expires", "300")] + extra),
                   proxy)

    register(1, [])
    r401 = recv(pbx, "pbx", lambda m: m.status == 401, "401 to the REGISTER")
    ch = sc.parse_challenge(r401.first("www-authenticate"))
    auth = sc.digest_credentials(ch, "MD5", "MD5", a.user, a.password, "REGISTER", f"sip:{a.host}",
                                 sc.choose_qop(ch), "00000001", secrets.token_hex(8), b"")
    register(2, [("Authorization", auth)])
    recv(pbx, "pbx", is_resp(200, "REGISTER"), "200 to the REGISTER")

    call_id = f"in-{secrets.token_hex(6)}@{gw_ip}"
    gw_from = f"<sip:+15550001111@{gw_ip}>;tag=gw{secrets.token_hex(4)}"
    to = f"<sip:15550009999@{a.host}>"

    def gw_req(method, uri, cseq, to_hdr, extra, body=b"", dest=proxy):
        branch = "z9hG4bK" + secrets.token_hex(8)
        gw.sendto(encode(f"{method} {uri} SIP/2.0",
                         [("Via", f"SIP/2.0/UDP {gw_ip}:{gw_port};branch={branch}"), ("From", gw_from),
                          ("To", to_hdr), ("Call-ID", call_id), ("CSeq", f"{cseq} {method}"),
                          ("Max-Forwards", "70")] + extra, body), dest)

    gw_req("INVITE", f"sip:15550009999@{a.host}", 1, to,
           [("Contact", gw_contact), ("Supported", "100rel"), ("Content-Type", "application/sdp")],
           sdp("gw", gw_ip))
    inv = recv(pbx, "pbx", is_req("INVITE"), "the INVITE at the PBX")
    pbx_tag = "pbx" + secrets.token_hex(4)
    pbx.sendto(response_to(inv, 183, "Session Progress",
                           [("Contact", pbx_contact), ("Require", "100rel"), ("RSeq", "1"),
                            ("Content-Type", "application/sdp")],
                           sdp("pbx", pbx_ip), to_tag=pbx_tag, copy_rr=True), inv.src)
    r183 = recv(gw, "gateway", is_resp(183, "INVITE"), "the 183 at the gateway")
    routes = [("Route", rr) for rr in reversed(r183.headers.get("record-route", []))]
    target = sc.uri_of(r183.first("contact"))
    gw_req("PRACK", target, 2, r183.first("to"), routes + [("RAck", "1 1 INVITE")])
    prack = recv(pbx, "pbx", is_req("PRACK"), "the PRACK at the PBX")
    pbx.sendto(response_to(prack, 200, "OK", []), prack.src)
    recv(gw, "gateway", is_resp(200, "PRACK"), "the 200 for the PRACK at the gateway")
    pbx.sendto(response_to(inv, 200, "OK", [("Contact", pbx_contact), ("Content-Type", "application/sdp")],
                           sdp("pbx", pbx_ip), to_tag=pbx_tag, copy_rr=True), inv.src)
    r200 = recv(gw, "gateway", is_resp(200, "INVITE"), "the 200 for the INVITE at the gateway")
    routes = [("Route", rr) for rr in reversed(r200.headers.get("record-route", []))]
    gw_req("ACK", target, 1, r200.first("to"), routes)
    recv(pbx, "pbx", is_req("ACK"), "the ACK at the PBX")
    gw_req("BYE", target, 3, r200.first("to"), routes)
    bye = recv(pbx, "pbx", is_req("BYE"), "the BYE at the PBX")
    pbx.sendto(response_to(bye, 200, "OK", []), bye.src)
    recv(gw, "gateway", is_resp(200, "BYE"), "the 200 for the BYE at the gateway")


def tcp_reconnect(a, gw, proxy, recv, is_req, is_resp, gw_contact):
    """The PBX calls over TCP; after the reliable 183 its connection closes and it sends the PRACK
    on a new one from the same address (RFC 3261 §18: a connection may go between requests). The
    rest of the call comes on the new connection, the INVITE's 200 first."""
    def connect():
        return sc.TcpTransport(SimpleNamespace(local_ip="127.0.0.1", local_port=0, server=proxy,
                                               timeout=a.timeout))
    t = connect()
    call_id = f"tcp-{secrets.token_hex(6)}@127.0.0.1"
    from_ = f"<sip:pbx@{a.host}>;tag=pbx{secrets.token_hex(4)}"
    ruri = f"sip:15550001234@{a.host}"

    def req(method, uri, cseq, to_hdr, extra, body=b"", cseq_method=None):
        ip, port = t.local
        hs = [("Via", f"SIP/2.0/TCP {ip}:{port};branch=z9hG4bK{secrets.token_hex(8)}"),
              ("From", from_), ("To", to_hdr), ("Call-ID", call_id),
              ("CSeq", f"{cseq} {cseq_method or method}"), ("Max-Forwards", "70")] + extra
        t.send(encode(f"{method} {uri} SIP/2.0", hs, body))

    def trecv(want, what):
        deadline = time.monotonic() + a.timeout
        while True:
            got = t.recv(deadline)
            if got is None:
                raise Timeout(what)
            m = sc.parse_message(got[0])
            print(json.dumps({"side": "pbx", "conn": t.local[1], "start": m.start, "headers": m.headers},
                             separators=(",", ":")), flush=True)
            if want(m):
                return m

    invite_hs = [("Contact", f"<sip:pbx@127.0.0.1:{t.local[1]};transport=tcp>"), ("Supported", "100rel"),
                 ("Content-Type", "application/sdp")]
    req("INVITE", ruri, 1, f"<{ruri}>", invite_hs, sdp("pbx", "127.0.0.1"))
    r407 = trecv(lambda m: m.status == 407, "407 to the INVITE")
    req("ACK", ruri, 1, r407.first("to"), [], cseq_method="ACK")
    ch = sc.parse_challenge(r407.first("proxy-authenticate"))
    auth = sc.digest_credentials(ch, "MD5", "MD5", a.user, a.password, "INVITE", ruri,
                                 sc.choose_qop(ch), "00000001", secrets.token_hex(8), b"")
    req("INVITE", ruri, 2, f"<{ruri}>", invite_hs + [("Proxy-Authorization", auth)], sdp("pbx", "127.0.0.1"))
    inv = recv(gw, "gateway", is_req("INVITE"), "the INVITE at the gateway")
    gw_tag = "gw" + secrets.token_hex(4)
    gw.sendto(response_to(inv, 183, "Session Progress",
                          [("Contact", gw_contact), ("Require", "100rel"), ("RSeq", "1"),
                           ("Content-Type", "application/sdp")],
                          sdp("gw", "127.0.0.2"), to_tag=gw_tag, copy_rr=True), inv.src)
    r183 = trecv(lambda m: m.status == 183, "the 183 at the PBX")
    routes = [("Route", rr) for rr in reversed(r183.headers.get("record-route", []))]
    target = sc.uri_of(r183.first("contact"))

    t.close()
    print(json.dumps({"event": "reconnect", "old": t.local[1]}), flush=True)
    time.sleep(0.2)   # sipauthd sees the connection go
    t = connect()
    req("PRACK", target, 3, r183.first("to"), routes + [("RAck", "1 2 INVITE")])
    prack = recv(gw, "gateway", is_req("PRACK"), "the PRACK at the gateway")
    gw.sendto(response_to(prack, 200, "OK", []), prack.src)
    trecv(lambda m: m.status == 200 and m.cseq()[1] == "PRACK", "the 200 for the PRACK on the new connection")
    gw.sendto(response_to(inv, 200, "OK", [("Contact", gw_contact), ("Content-Type", "application/sdp")],
                          sdp("gw", "127.0.0.2"), to_tag=gw_tag, copy_rr=True), inv.src)
    r200 = trecv(lambda m: m.status == 200 and m.cseq()[1] == "INVITE",
                 "the 200 for the INVITE on the new connection")
    routes = [("Route", rr) for rr in reversed(r200.headers.get("record-route", []))]
    target = sc.uri_of(r200.first("contact"))
    req("ACK", target, 2, r200.first("to"), routes, cseq_method="ACK")
    recv(gw, "gateway", is_req("ACK"), "the ACK at the gateway")
    req("BYE", target, 4, r200.first("to"), routes)
    bye = recv(gw, "gateway", is_req("BYE"), "the BYE at the gateway")
    gw.sendto(response_to(bye, 200, "OK", []), bye.src)
    trecv(lambda m: m.status == 200 and m.cseq()[1] == "BYE", "the 200 for the BYE")
    t.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", required=True, help="sipauthd, 127.0.0.1:PORT")
    ap.add_argument("--gateway", required=True, help="the gateway's address, 127.0.0.2:PORT")
    ap.add_argument("--host", required=True, help="the trunk host")
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--stranger", default="127.0.0.3", help="the third address")
    ap.add_argument("--inbound", action="store_true", help="the gateway calls the registered PBX")
    ap.add_argument("--tcp-reconnect", action="store_true",
                    help="the PBX calls over TCP and sends the PRACK on a new connection")
    ap.add_argument("--timeout", type=float, default=5.0)
    a = ap.parse_args()
    sip_ip, sip_port = a.server.rsplit(":", 1)
    proxy = (sip_ip, int(sip_port))
    gw_ip, gw_port = a.gateway.rsplit(":", 1)

    pbx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pbx.bind(("127.0.0.1", 0))
    gw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    gw.bind((gw_ip, int(gw_port)))
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind((a.stranger, 0))
    pbx_port = pbx.getsockname()[1]
    pbx_contact = f"<sip:pbx@127.0.0.1:{pbx_port}>"
    gw_contact = f"<sip:gw@{gw_ip}:{gw_port}>"

    def recv(sock, side, want, what):
        deadline = time.monotonic() + a.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout(what)
            sock.settimeout(left)
            try:
                data, src = sock.recvfrom(65535)
            except socket.timeout:
                raise Timeout(what) from None
            m = sc.parse_message(data)
            m.src = src
            print(json.dumps({"side": side, "start": m.start, "headers": m.headers},
                             separators=(",", ":")), flush=True)
            if want(m):
                return m

    def is_resp(status, method):
        return lambda m: m.status == status and m.cseq()[1] == method

    def is_req(method):
        return lambda m: m.method == method

    call_id = f"early-{secrets.token_hex(6)}@127.0.0.1"
    from_ = f"<sip:pbx@{a.host}>;tag=pbx{secrets.token_hex(4)}"
    to = f"<sip:15550001234@{a.host}>"
    ruri = f"sip:15550001234@{a.host}"

    def pbx_req(method, uri, cseq, to_hdr, extra, body=b"", cseq_method=None, sock=None):
        sock = sock or pbx
        ip, port = sock.getsockname()
        branch = "z9hG4bK" + secrets.token_hex(8)
        hs = [("Via", f"SIP/2.0/UDP {ip}:{port};branch={branch};rport"),
              ("From", from_), ("To", to_hdr), ("Call-ID", call_id),
              ("CSeq", f"{cseq} {cseq_method or method}"), ("Max-Forwards", "70")] + extra
        sock.sendto(encode(f"{method} {uri} SIP/2.0", hs, body), proxy)
        return branch

    if a.inbound or a.tcp_reconnect:
        try:
            if a.inbound:
                inbound(a, pbx, gw, proxy, recv, is_req, is_resp, gw_contact, pbx_contact)
            else:
                tcp_reconnect(a, gw, proxy, recv, is_req, is_resp, gw_contact)
        except Timeout as e:
            print(json.dumps({"event": "timeout", "waiting_for": str(e)}), flush=True)
            return 3
        print(json.dumps({"event": "done"}), flush=True)
        return 0

    invite_hs = [("Contact", pbx_contact), ("Supported", "100rel"), ("Allow", "INVITE, ACK, BYE, CANCEL, PRACK, UPDATE"),
                 ("Content-Type", "application/sdp")]
    try:
        # the INVITE, its challenge, the ACK for the 407, the INVITE with credentials
        pbx_req("INVITE", ruri, 1, to, invite_hs, sdp("pbx", "127.0.0.1"))
        r407 = recv(pbx, "pbx", lambda m: m.status == 407, "407 to the INVITE")
        pbx_req("ACK", ruri, 1, r407.first("to"), [], cseq_method="ACK")
        ch = sc.parse_challenge(r407.first("proxy-authenticate"))
        auth = sc.digest_credentials(ch, "MD5", "MD5", a.user, a.password, "INVITE", ruri,
                                     sc.choose_qop(ch), "00000001", secrets.token_hex(8), b"")
        pbx_req("INVITE", ruri, 2, to, invite_hs + [("Proxy-Authorization", auth)], sdp("pbx", "127.0.0.1"))

        # the gateway: a reliable 183 with the answer
        inv = recv(gw, "gateway", is_req("INVITE"), "the INVITE at the gateway")
        gw_tag = "gw" + secrets.token_hex(4)
        gw.sendto(response_to(inv, 183, "Session Progress",
                              [("Contact", gw_contact), ("Require", "100rel"), ("RSeq", "1"),
                               ("Content-Type", "application/sdp")],
                              sdp("gw", gw_ip), to_tag=gw_tag, copy_rr=True), inv.src)
        r183 = recv(pbx, "pbx", is_resp(183, "INVITE"), "the 183 at the PBX")

        # the PBX's PRACK along the early dialog's route set (RFC 3261 §12.1.2: the
        # Record-Route in reverse order; the remote target the 183's Contact)
        routes = [("Route", rr) for rr in reversed(r183.headers.get("record-route", []))]
        target = sc.uri_of(r183.first("contact"))
        # a PRACK from the PBX for an early dialog no provisional started (a To tag of its own):
        # there is none, so nothing to relay it in
        no_dialog_to = re.sub(r";\s*tag=[^;>]*", ";tag=nodialog1", r183.first("to"))
        pbx_req("PRACK", target, 9, no_dialog_to, routes + [("RAck", "1 2 INVITE")])
        recv(pbx, "pbx", lambda m: m.status >= 200 and m.cseq()[1] == "PRACK", "the answer to the PRACK of no dialog")
        # the same PRACK from a stranger who learnt the dialog's identifiers: refused
        pbx_req("PRACK", target, 3, r183.first("to"), routes + [("RAck", "1 2 INVITE")], sock=stranger)
        recv(stranger, "stranger", lambda m: m.status >= 200, "the answer to the stranger's PRACK")
        pbx_req("PRACK", target, 3, r183.first("to"), routes + [("RAck", "1 2 INVITE")])
        prack = recv(gw, "gateway", is_req("PRACK"), "the PRACK at the gateway")
        gw.sendto(response_to(prack, 200, "OK", []), prack.src)
        recv(pbx, "pbx", is_resp(200, "PRACK"), "the 200 for the PRACK at the PBX")

        # the gateway's UPDATE in the early dialog, along the INVITE's Record-Route
        # (RFC 3261 §12.1.1: the UAS takes the route set in order; the target the INVITE's Contact)
        gw_routes = [("Route", rr) for rr in inv.headers.get("record-route", [])]
        first_hop = sc.uri_of(gw_routes[0][1]) if gw_routes else ""
        hop = first_hop.split("@")[-1].split(";")[0].replace("sip:", "")
        hop_ip, hop_port = hop.rsplit(":", 1)
        upd_branch = "z9hG4bK" + secrets.token_hex(8)
        gw.sendto(encode(f"UPDATE {sc.uri_of(inv.first('contact'))} SIP/2.0",
                         [("Via", f"SIP/2.0/UDP {gw_ip}:{gw_port};branch={upd_branch}"),
                          ("From", inv.first("to") + f";tag={gw_tag}"), ("To", inv.first("from")),
                          ("Call-ID", inv.first("call-id")), ("CSeq", "1 UPDATE"),
                          ("Max-Forwards", "70"), ("Contact", gw_contact)] + gw_routes),
                  (hop_ip, int(hop_port)))
        upd = recv(pbx, "pbx", is_req("UPDATE"), "the UPDATE at the PBX")
        pbx.sendto(response_to(upd, 200, "OK", [("Contact", pbx_contact)]), upd.src)
        recv(gw, "gateway", is_resp(200, "UPDATE"), "the 200 for the UPDATE at the gateway")

        # the answer, the ACK and the PBX's BYE along the dialog's route set
        gw.sendto(response_to(inv, 200, "OK", [("Contact", gw_contact), ("Content-Type", "application/sdp")],
                              sdp("gw", gw_ip), to_tag=gw_tag, copy_rr=True), inv.src)
        r200 = recv(pbx, "pbx", is_resp(200, "INVITE"), "the 200 for the INVITE at the PBX")
        routes = [("Route", rr) for rr in reversed(r200.headers.get("record-route", []))]
        target = sc.uri_of(r200.first("contact"))
        pbx_req("ACK", target, 2, r200.first("to"), routes, cseq_method="ACK")
        recv(gw, "gateway", is_req("ACK"), "the ACK at the gateway")

        # the gateway holds the call: a re-INVITE of its own along the route set, the PBX's
        # 200 back through sipauthd, the gateway's ACK for it (RFC 3261 §14)
        def gw_req(method, cseq, extra, body=b""):
            branch = "z9hG4bK" + secrets.token_hex(8)
            gw.sendto(encode(f"{method} {sc.uri_of(inv.first('contact'))} SIP/2.0",
                             [("Via", f"SIP/2.0/UDP {gw_ip}:{gw_port};branch={branch}"),
                              ("From", inv.first("to") + f";tag={gw_tag}"), ("To", inv.first("from")),
                              ("Call-ID", inv.first("call-id")), ("CSeq", f"{cseq} {method}"),
                              ("Max-Forwards", "70"), ("Contact", gw_contact)] + gw_routes + extra, body),
                      (hop_ip, int(hop_port)))
        hold = sdp("gw", gw_ip) + b"a=sendonly\r\n"
        gw_req("INVITE", 2, [("Content-Type", "application/sdp")], hold)
        reinv = recv(pbx, "pbx", is_req("INVITE"), "the re-INVITE at the PBX")
        pbx.sendto(response_to(reinv, 200, "OK", [("Contact", pbx_contact), ("Content-Type", "application/sdp")],
                               sdp("pbx", "127.0.0.1") + b"a=recvonly\r\n"), reinv.src)
        recv(gw, "gateway", is_resp(200, "INVITE"), "the 200 for the re-INVITE at the gateway")
        gw_req("ACK", 2, [])
        recv(pbx, "pbx", is_req("ACK"), "the ACK for the re-INVITE at the PBX")
        pbx_req("BYE", target, 4, r200.first("to"), routes)
        bye = recv(gw, "gateway", is_req("BYE"), "the BYE at the gateway")
        gw.sendto(response_to(bye, 200, "OK", []), bye.src)
        recv(pbx, "pbx", is_resp(200, "BYE"), "the 200 for the BYE at the PBX")
        # the dialog is gone: a PRACK now finds nothing
        pbx_req("PRACK", target, 5, r200.first("to"), routes + [("RAck", "1 2 INVITE")])
        recv(pbx, "pbx", lambda m: m.status >= 200 and m.cseq()[1] == "PRACK", "the answer to the late PRACK")
    except Timeout as e:
        print(json.dumps({"event": "timeout", "waiting_for": str(e)}), flush=True)
        return 3
    print(json.dumps({"event": "done"}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
