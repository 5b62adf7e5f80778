#!/usr/bin/env python3
"""proxy_rfc.py: RFC 3261 proxy behaviours a SIP engineer checks first, each as one scenario
through sipauthd with a PBX (127.0.0.1, UDP) and the gateway (--gateway, 127.0.0.2:PORT, UDP)
played by this process:

  timer-g     the gateway answers an authenticated INVITE 486; the PBX (which got our 100
              Trying, so retransmits nothing) does not ACK: the 486 must come again (Timer G,
              §17.2.1), and no more once the PBX ACKs
  provisional our 100 Trying copies the INVITE's Timestamp (§8.2.6.1); the gateway rings
              (180); the PBX retransmits its INVITE: it gets the 180 again,
              not a 100 (§17.2.1); after the 200 a retransmitted INVITE gets nothing (RFC 6026)
  cancel-early the PBX cancels before the gateway said anything: the CANCEL waits for the
              gateway's first provisional (§9.1), then goes; the 487 comes back to the PBX
  cancel-silent the same, and the gateway says nothing until after sipauthd answered the PBX
              487 (failover_timeout_ms): its late 180 still gets the CANCEL
  no-length   the PBX's INVITE and the gateway's 180 carry a body and no Content-Length (allowed
              over UDP): each arrives with a Content-Length (§18.3: the next hop may be a stream)
  preloaded   the PBX preloads a Route past ours (to 10.9.9.9): the gateway gets no Route
  fork        two branches behind the gateway answer 200 (two To tags): both reach the PBX, its
              ACK for each and its BYE for each reach the gateway (§16.7 step 5); the first's 200
              again after its BYE makes no call again
  dead-flow   the PBX registers over TCP and closes the connection; the gateway's INVITE for
              the trunk gets 480 at once (§16.9: a transport error is a 503 received), not 408
              after Timer B
  moved-end   an inbound call over the PBX's TCP connection; the PBX reconnects and registers
              again from a new connection: the gateway's BYE goes down that one
  quiet-call  a call from a PBX over TCP that never registered stays quiet past tcp_idle_timeout
              (5 s in proxy_rfc.sh): the gateway's BYE still comes down the PBX's connection
  inbound-quiet an inbound call over TCP, the PBX unregisters, the call stays quiet past
              tcp_idle_timeout: the gateway's BYE still comes down the PBX's connection
  next-binding two registrations of the trunk over UDP; the newer stays silent, then answers
              503: the gateway's INVITE moves on to the older one (Request-URI its Contact)
  strict      the gateway strict-routes its BYE (our Record-Route as the Request-URI, the PBX's
              Contact as the last Route): the PBX gets it with that Contact as Request-URI (§16.4)

Prints one JSON line per check: {"check": NAME, "ok": true|false, "got": ...}; exit status 0 when
every check held, 1 otherwise, 2 on usage. Standard library and test/sipclient.py only.
"""

import argparse
import json
import os
import re
import secrets
import select
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sipclient as sc  # noqa: E402

SDP = "v=0\r\no=pbx 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
RESULTS = []


def check(name, ok, got=None):
    RESULTS.append(ok)
    print(json.dumps({"check": name, "ok": bool(ok), "got": got}), flush=True)


def udp(ip, port=0):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((ip, port))
    return s


def crlf(text):
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode()


def recv_all(sock, seconds):
    """Every message that arrives within `seconds`, as (time, Message)."""
    out, end = [], time.monotonic() + seconds
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return out
        ready, _, _ = select.select([sock], [], [], left)
        if not ready:
            return out
        data, src = sock.recvfrom(65535)
        m = sc.parse_message(data)
        m.src = src
        out.append((time.monotonic(), m))


def recv_one(sock, pred, seconds=3.0):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for _, m in recv_all(sock, min(0.2, end - time.monotonic())):
            if pred(m):
                return m
    return None


def response_to(req, status, reason, extra=(), body="", to_tag="gw1", length=True):
    hs = [f"Via: {v}" for v in req.headers.get("via", [])]
    to = req.first("to")
    if to_tag and ";tag=" not in to:
        to += f";tag={to_tag}"
    hs += [f"From: {req.first('from')}", f"To: {to}", f"Call-ID: {req.first('call-id')}",
           f"CSeq: {req.first('cseq')}"] + [f"Record-Route: {r}" for r in req.headers.get("record-route", [])]
    hs += list(extra)
    if length:
        hs.append(f"Content-Length: {len(body)}")
    return crlf("\r\n".join([f"SIP/2.0 {status} {reason}"] + hs) + "\r\n\r\n") + body.encode()


class Call:
    """One INVITE from the PBX, authenticated, up to its arrival at the gateway."""

    def __init__(self, a, pbx, gw, proxy):
        self.a, self.pbx, self.gw, self.proxy = a, pbx, gw, proxy
        self.call_id = f"rfc-{secrets.token_hex(6)}@127.0.0.1"
        self.tag = "pbx" + secrets.token_hex(4)
        self.ruri = f"sip:15550001234@{a.host}"
        self.branch = None

    def invite_bytes(self, cseq, branch, extra="", body=SDP, length=True):
        ip, port = self.pbx.getsockname()
        lines = [f"INVITE {self.ruri} SIP/2.0", f"Via: SIP/2.0/UDP {ip}:{port};branch={branch};rport",
                 "Max-Forwards: 70", f"From: <sip:pbx@{self.a.host}>;tag={self.tag}",
                 f"To: <{self.ruri}>", f"Call-ID: {self.call_id}", f"CSeq: {cseq} INVITE",
                 f"Contact: <sip:pbx@{ip}:{port}>", "Content-Type: application/sdp"] + \
                [x for x in extra.split("\n") if x]
        if length:
            lines.append(f"Content-Length: {len(body)}")
        return crlf("\r\n".join(lines) + "\r\n\r\n") + body.encode()

    def cancel_bytes(self):
        """The CANCEL of the INVITE with credentials (its branch, CSeq 2)."""
        ip, port = self.pbx.getsockname()
        return crlf(f"CANCEL {self.ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {ip}:{port};branch={self.branch};rport\r\n"
                    f"Max-Forwards: 70\r\nFrom: <sip:pbx@{self.a.host}>;tag={self.tag}\r\nTo: <{self.ruri}>\r\n"
                    f"Call-ID: {self.call_id}\r\nCSeq: 2 CANCEL\r\nContent-Length: 0\r\n\r\n")

    def ack_bytes(self, resp, branch, cseq):
        ip, port = self.pbx.getsockname()
        return crlf("\r\n".join([f"ACK {self.ruri} SIP/2.0", f"Via: SIP/2.0/UDP {ip}:{port};branch={branch};rport",
                                 "Max-Forwards: 70", f"From: {resp.first('from')}", f"To: {resp.first('to')}",
                                 f"Call-ID: {self.call_id}", f"CSeq: {cseq} ACK", "Content-Length: 0"]) + "\r\n\r\n")

    def start(self, extra="", length=True):
        """INVITE, 407, ACK, INVITE with credentials; the INVITE as the gateway got it (or None)."""
        b1 = "z9hG4bK" + secrets.token_hex(8)
        self.pbx.sendto(self.invite_bytes(1, b1), self.proxy)
        r407 = recv_one(self.pbx, lambda m: m.status == 407)
        if not r407:
            return None
        self.pbx.sendto(self.ack_bytes(r407, b1, 1), self.proxy)
        ch = sc.parse_challenge(r407.first("proxy-authenticate"))
        auth = sc.digest_credentials(ch, "MD5", "MD5", self.a.user, self.a.password, "INVITE", self.ruri,
                                     sc.choose_qop(ch), "00000001", secrets.token_hex(8), b"")
        self.branch = "z9hG4bK" + secrets.token_hex(8)
        self.second = self.invite_bytes(2, self.branch, extra + f"\nProxy-Authorization: {auth}", length=length)
        self.pbx.sendto(self.second, self.proxy)
        inv = recv_one(self.gw, lambda m: m.method == "INVITE")
        self.trying = recv_one(self.pbx, lambda m: m.status == 100, 1.0)
        return inv


def timer_g(a, pbx, gw, proxy):
    c = Call(a, pbx, gw, proxy)
    inv = c.start()
    if not inv:
        return check("timer-g: the INVITE reached the gateway", False)
    gw.sendto(response_to(inv, 486, "Busy Here"), inv.src)
    got = [(t, m) for t, m in recv_all(pbx, 2.2) if m.status == 486]
    t0 = got[0][0] if got else 0
    times = [round(t - t0, 2) for t, _ in got]
    # sent at 0, then Timer G: T1 (0.5 s) later, then 1 s after that: 0, 0.5, 1.5
    check("timer-g: the 486 reaches the PBX three times in 2.2 s without its ACK (0, 0.5, 1.5 s)",
          len(times) == 3 and abs(times[1] - 0.5) < 0.2 and abs(times[2] - 1.5) < 0.3, times)
    if got:
        pbx.sendto(c.ack_bytes(got[0][1], c.branch, 2), proxy)
    later = [m.status for _, m in recv_all(pbx, 2.5)]
    check("timer-g: after the PBX's ACK the 486 comes no more (2.5 s)", later == [], later)
    acks = [m.method for _, m in recv_all(gw, 0.3)]
    check("timer-g: the gateway got one ACK for its 486 (ours; the PBX's is absorbed)", acks == ["ACK"], acks)


def provisional(a, pbx, gw, proxy):
    c = Call(a, pbx, gw, proxy)
    inv = c.start(extra="Timestamp: 54.2")
    if not inv:
        return check("provisional: the INVITE reached the gateway", False)
    check("provisional: our 100 Trying copies the INVITE's Timestamp (§8.2.6.1)",
          c.trying is not None and c.trying.first("timestamp") == "54.2", c.trying and c.trying.headers.get("timestamp"))
    gw.sendto(response_to(inv, 180, "Ringing", [f"Contact: <sip:gw@{a.gateway}>"]), inv.src)
    recv_one(pbx, lambda m: m.status == 180)
    pbx.sendto(c.second, proxy)   # the INVITE again, as a PBX whose 180 was lost would send it
    again = [m.status for _, m in recv_all(pbx, 0.5)]
    check("provisional: a retransmitted INVITE gets the last provisional again (180, not 100)", again == [180], again)
    gw_got = [m.method or m.status for _, m in recv_all(gw, 0.2)]
    check("provisional: ... and the gateway does not get it twice", gw_got == [], gw_got)
    gw.sendto(response_to(inv, 200, "OK", [f"Contact: <sip:gw@{a.gateway}>", "Content-Type: application/sdp"], SDP),
              inv.src)
    ok = recv_one(pbx, lambda m: m.status == 200)
    pbx.sendto(c.second, proxy)
    after = [m.status for _, m in recv_all(pbx, 0.5)]
    check("provisional: after the 200 a retransmitted INVITE gets nothing (RFC 6026 Accepted)", after == [], after)
    if ok:   # end the call: ACK and BYE along the route set
        routes = "".join(f"Route: {r}\r\n" for r in reversed(ok.headers.get("record-route", [])))
        ip, port = pbx.getsockname()
        target = sc.uri_of(ok.first("contact"))
        for method, cseq in (("ACK", 2), ("BYE", 3)):
            pbx.sendto(crlf(f"{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP {ip}:{port};branch=z9hG4bK"
                            f"{secrets.token_hex(8)};rport\r\nMax-Forwards: 70\r\nFrom: {ok.first('from')}\r\n"
                            f"To: {ok.first('to')}\r\nCall-ID: {c.call_id}\r\nCSeq: {cseq} {method}\r\n{routes}"
                            "Content-Length: 0\r\n\r\n"), proxy)
        bye = recv_one(gw, lambda m: m.method == "BYE")
        if bye:
            gw.sendto(response_to(bye, 200, "OK", to_tag=None), bye.src)
            recv_one(pbx, lambda m: m.status == 200 and m.cseq()[1] == "BYE")


def cancel_early(a, pbx, gw, proxy):
    c = Call(a, pbx, gw, proxy)
    inv = c.start()
    if not inv:
        return check("cancel-early: the INVITE reached the gateway", False)
    pbx.sendto(c.cancel_bytes(), proxy)
    r = recv_one(pbx, lambda m: m.cseq()[1] == "CANCEL")
    check("cancel-early: the PBX's CANCEL is answered 200", r is not None and r.status == 200, r and r.status)
    early = [m.method for _, m in recv_all(gw, 0.6) if m.method != "INVITE"]   # (Timer A may resend it)
    check("cancel-early: no CANCEL reaches the gateway before it answered anything (RFC 3261 §9.1)",
          early == [], early)
    gw.sendto(response_to(inv, 180, "Ringing"), inv.src)
    cancel = recv_one(gw, lambda m: m.method == "CANCEL")
    check("cancel-early: the CANCEL goes once the gateway rang, on the INVITE's branch",
          cancel is not None and cancel.headers["via"][0] == inv.headers["via"][0],
          cancel and cancel.headers["via"][0])
    if cancel:
        gw.sendto(response_to(cancel, 200, "OK"), cancel.src)
        gw.sendto(response_to(inv, 487, "Request Terminated"), inv.src)
    final = recv_one(pbx, lambda m: m.status >= 200 and m.cseq()[1] == "INVITE")
    check("cancel-early: the PBX gets the 487", final is not None and final.status == 487, final and final.status)
    if final:
        pbx.sendto(c.ack_bytes(final, c.branch, 2), proxy)


def cancel_silent(a, pbx, gw, proxy):
    c = Call(a, pbx, gw, proxy)
    inv = c.start()
    if not inv:
        return check("cancel-silent: the INVITE reached the gateway", False)
    pbx.sendto(c.cancel_bytes(), proxy)
    # the gateway stays silent past failover_timeout_ms (2 s): the PBX gets 487 from sipauthd
    final = recv_one(pbx, lambda m: m.status >= 200 and m.cseq()[1] == "INVITE", 4.0)
    check("cancel-silent: the PBX gets 487 when the gateway stays silent", final is not None and final.status == 487,
          final and final.status)
    if final:
        pbx.sendto(c.ack_bytes(final, c.branch, 2), proxy)
    recv_all(gw, 0.1)   # (Timer A's copies of the INVITE)
    gw.sendto(response_to(inv, 180, "Ringing"), inv.src)   # it wakes up and rings
    cancel = recv_one(gw, lambda m: m.method == "CANCEL")
    check("cancel-silent: the gateway's late 180 still gets the CANCEL, on the INVITE's branch",
          cancel is not None and cancel.headers["via"][0] == inv.headers["via"][0], cancel and cancel.headers["via"][0])
    if cancel:
        gw.sendto(response_to(cancel, 200, "OK"), cancel.src)
        gw.sendto(response_to(inv, 487, "Request Terminated"), inv.src)
        ack = recv_one(gw, lambda m: m.method == "ACK")
        check("cancel-silent: ... and its 487 our ACK", ack is not None, ack and ack.start)


def no_length(a, pbx, gw, proxy):
    c = Call(a, pbx, gw, proxy)
    inv = c.start(length=False)
    if not inv:
        return check("no-length: the INVITE reached the gateway", False)
    check("no-length: the INVITE without Content-Length reaches the gateway with one, its body's",
          inv.headers.get("content-length") == [str(len(SDP))] and inv.body == SDP.encode(),
          inv.headers.get("content-length"))
    gw.sendto(response_to(inv, 180, "Ringing", ["Content-Type: application/sdp"], SDP, length=False), inv.src)
    r = recv_one(pbx, lambda m: m.status == 180)
    check("no-length: the gateway's 180 without Content-Length reaches the PBX with one",
          r is not None and r.headers.get("content-length") == [str(len(SDP))], r and r.headers.get("content-length"))
    gw.sendto(response_to(inv, 486, "Busy Here"), inv.src)
    final = recv_one(pbx, lambda m: m.status == 486)
    if final:
        pbx.sendto(c.ack_bytes(final, c.branch, 2), proxy)


def identity(a, pbx, gw, proxy):
    """The gateway learns from sipauthd which trunk and credential authenticated the INVITE; the
    PBX's own X-Sipauthd-* lines (another customer's, say) never reach it."""
    c = Call(a, pbx, gw, proxy)
    inv = c.start(extra="X-Sipauthd-Trunk: trunk_someoneelse\nX-Sipauthd-Credential: cred_someoneelse")
    if not inv:
        return check("identity: the INVITE reached the gateway", False)
    trunk = a.host.split(".")[0][len("trunk-"):]
    trunk = "trunk_" + trunk[len("trunk-"):] if trunk.startswith("trunk-") else trunk
    got = [inv.headers.get("x-sipauthd-trunk"), inv.headers.get("x-sipauthd-credential")]
    check("identity: the INVITE names its trunk and credential, once each, not what the PBX wrote",
          got[0] == [trunk] and got[1] is not None and len(got[1]) == 1 and got[1][0].startswith("cred_")
          and "someoneelse" not in inv.raw.decode(errors="replace"), got)
    gw.sendto(response_to(inv, 486, "Busy Here"), inv.src)
    final = recv_one(pbx, lambda m: m.status == 486)
    if final:
        pbx.sendto(c.ack_bytes(final, c.branch, 2), proxy)


def preloaded(a, pbx, gw, proxy):
    c = Call(a, pbx, gw, proxy)
    ours = f"<sip:{proxy[0]}:{proxy[1]};lr>"
    inv = c.start(extra=f"Route: {ours}, <sip:10.9.9.9;lr>")
    if not inv:
        return check("preloaded: the INVITE reached the gateway", False)
    check("preloaded: the gateway gets the INVITE without the Route the PBX preloaded past ours",
          "route" not in inv.headers, inv.headers.get("route"))
    gw.sendto(response_to(inv, 486, "Busy Here"), inv.src)
    final = recv_one(pbx, lambda m: m.status == 486)
    if final:
        pbx.sendto(c.ack_bytes(final, c.branch, 2), proxy)


def in_dialog(pbx, proxy, c, ok, method, cseq, extra=""):
    """method in the dialog of 2xx `ok`, along its route set, from the PBX."""
    ip, port = pbx.getsockname()
    routes = "".join(f"Route: {r}\r\n" for r in reversed(ok.headers.get("record-route", [])))
    pbx.sendto(crlf(f"{method} {sc.uri_of(ok.first('contact'))} SIP/2.0\r\nVia: SIP/2.0/UDP {ip}:{port};branch="
                    f"z9hG4bK{secrets.token_hex(8)};rport\r\nMax-Forwards: 70\r\nFrom: {ok.first('from')}\r\n"
                    f"To: {ok.first('to')}\r\nCall-ID: {c.call_id}\r\nCSeq: {cseq} {method}\r\n{routes}{extra}"
                    "Content-Length: 0\r\n\r\n"), proxy)


def bye_refused(a, pbx, gw, proxy):
    """The PBX sends a BYE the gateway refuses (420 for a Require it made up): the call is up at the
    gateway, so it stays up here; the PBX's next BYE still reaches the gateway, and only its 200
    ends the call."""
    c = Call(a, pbx, gw, proxy)
    inv = c.start()
    if not inv:
        return check("bye-refused: the INVITE reached the gateway", False)
    gw.sendto(response_to(inv, 200, "OK", [f"Contact: <sip:gw@{a.gateway}>", "Content-Type: application/sdp"],
                          SDP, to_tag="byer"), inv.src)
    ok = recv_one(pbx, lambda m: m.status == 200)
    if not ok:
        return check("bye-refused: the 200 reached the PBX", False)
    in_dialog(pbx, proxy, c, ok, "ACK", 2)
    recv_one(gw, lambda m: m.method == "ACK", 1.0)
    in_dialog(pbx, proxy, c, ok, "BYE", 3, "Require: x-made-up\r\n")
    got = recv_one(gw, lambda m: m.method == "BYE")
    if got:
        gw.sendto(response_to(got, 420, "Bad Extension", ["Unsupported: x-made-up"], to_tag=None), got.src)
    r = recv_one(pbx, lambda m: m.cseq()[1] == "BYE")
    check("bye-refused: the gateway's 420 to the BYE reaches the PBX", r is not None and r.status == 420,
          r and r.status)
    in_dialog(pbx, proxy, c, ok, "BYE", 4)
    got = recv_one(gw, lambda m: m.method == "BYE")
    check("bye-refused: the call is still up, and the PBX's next BYE reaches the gateway (not 481 here)",
          got is not None and got.first("cseq") == "4 BYE", got and got.first("cseq"))
    if got:
        gw.sendto(response_to(got, 200, "OK", to_tag=None), got.src)
    r = recv_one(pbx, lambda m: m.cseq()[1] == "BYE")
    in_dialog(pbx, proxy, c, ok, "BYE", 5)
    gone = recv_one(pbx, lambda m: m.cseq()[1] == "BYE")
    check("bye-refused: its 200 ends the call (a BYE after it: 481)",
          r is not None and r.status == 200 and gone is not None and gone.status == 481,
          [r and r.status, gone and gone.status])


def fork(a, pbx, gw, proxy):
    c = Call(a, pbx, gw, proxy)
    inv = c.start()
    if not inv:
        return check("fork: the INVITE reached the gateway", False)
    for tag in ("forkA", "forkB"):   # two branches behind the gateway answer
        gw.sendto(response_to(inv, 200, "OK", [f"Contact: <sip:{tag}@{a.gateway}>", "Content-Type: application/sdp"],
                              SDP, to_tag=tag), inv.src)
    oks = [m for _, m in recv_all(pbx, 0.6) if m.status == 200]
    tags = [re.search(r"tag=(\w+)", m.first("to")).group(1) for m in oks]
    check("fork: both 2xx reach the PBX (§16.7 step 5)", tags == ["forkA", "forkB"], tags)
    for ok in oks:
        in_dialog(pbx, proxy, c, ok, "ACK", 2)
    acks = sorted(re.search(r"tag=(\w+)", m.first("to")).group(1) for _, m in recv_all(gw, 0.5) if m.method == "ACK")
    check("fork: the PBX's ACK for each reaches the gateway", acks == ["forkA", "forkB"], acks)
    def bye(ok, cseq, which):
        in_dialog(pbx, proxy, c, ok, "BYE", cseq)
        got = recv_one(gw, lambda m: m.method == "BYE")
        tag = got and re.search(r"tag=(\w+)", got.first("to")).group(1)
        if got:
            gw.sendto(response_to(got, 200, "OK", to_tag=None), got.src)
        r = recv_one(pbx, lambda m: m.cseq()[1] == "BYE")
        check(f"fork: the BYE of the {which} dialog reaches the gateway and its 200 the PBX",
              got is not None and tag == ok.first("to").split("tag=")[1] and r is not None and r.status == 200,
              [tag, r and r.status])

    if len(oks) < 2:
        return
    bye(oks[0], 3, "first")
    # the first branch's 200 once more (its ACK lost, say) while the second dialog is up:
    # relayed, and the ended dialog stays ended
    gw.sendto(response_to(inv, 200, "OK", [f"Contact: <sip:forkA@{a.gateway}>", "Content-Type: application/sdp"],
                          SDP, to_tag="forkA"), inv.src)
    again = recv_one(pbx, lambda m: m.status == 200 and m.cseq()[1] == "INVITE")
    in_dialog(pbx, proxy, c, oks[0], "BYE", 4)
    r = recv_one(pbx, lambda m: m.cseq()[1] == "BYE")
    gw_got = [m.method for _, m in recv_all(gw, 0.3) if m.method == "BYE"]
    check("fork: a 2xx retransmitted after its dialog ended makes no call again (a new BYE gets 481)",
          again is not None and r is not None and r.status == 481 and gw_got == [], [r and r.status, gw_got])
    bye(oks[1], 3, "second")


def strict(a, pbx, gw, proxy):
    c = Call(a, pbx, gw, proxy)
    inv = c.start()
    if not inv:
        return check("strict: the INVITE reached the gateway", False)
    gw.sendto(response_to(inv, 200, "OK", [f"Contact: <sip:gw@{a.gateway}>", "Content-Type: application/sdp"], SDP,
                          to_tag="strict1"), inv.src)
    ok = recv_one(pbx, lambda m: m.status == 200)
    if not ok:
        return check("strict: the 200 reached the PBX", False)
    in_dialog(pbx, proxy, c, ok, "ACK", 2)
    recv_one(gw, lambda m: m.method == "ACK")
    # the gateway as an RFC 2543 strict router: the first route (our Record-Route) as the
    # Request-URI, the PBX's Contact as the last Route value
    ours = sc.uri_of(inv.headers["record-route"][0])
    pbx_target = sc.uri_of(inv.first("contact"))

    def strict_bye(sock):
        ip, port = sock.getsockname()
        sock.sendto(crlf(f"BYE {ours} SIP/2.0\r\nVia: SIP/2.0/UDP {ip}:{port};branch=z9hG4bK{secrets.token_hex(8)}\r\n"
                         f"Max-Forwards: 70\r\nFrom: {ok.first('to')}\r\nTo: {ok.first('from')}\r\n"
                         f"Call-ID: {c.call_id}\r\nCSeq: 1 BYE\r\nRoute: <{pbx_target}>\r\n"
                         "Content-Length: 0\r\n\r\n"), proxy)

    # the same from a stranger who learnt the dialog: refused, as a loose-routed one is
    stranger = udp(a.stranger)
    strict_bye(stranger)
    r = recv_one(stranger, lambda m: m.status >= 200)
    at_pbx = [m.method for _, m in recv_all(pbx, 0.3)]
    check("strict: a stranger's strict-routed BYE gets 403 and never reaches the PBX",
          r is not None and r.status == 403 and at_pbx == [], [r and r.status, at_pbx])
    stranger.close()
    strict_bye(gw)
    bye = recv_one(pbx, lambda m: m.method == "BYE")
    check("strict: a strict-routed BYE reaches the PBX with the last Route as its Request-URI, no Route left "
          "(§16.4)", bye is not None and bye.uri == pbx_target and "route" not in bye.headers,
          bye and [bye.uri, bye.headers.get("route")])
    if bye:
        pbx.sendto(response_to(bye, 200, "OK", to_tag=None), bye.src)
    r = recv_one(gw, lambda m: m.cseq()[1] == "BYE")
    check("strict: its 200 reaches the gateway", r is not None and r.status == 200, r and r.status)


def tcp_exchange(sock, data, pred, seconds=3.0):
    """Send data on a TCP socket; the first message read that pred accepts (or None)."""
    sock.sendall(data)
    buf, end = b"", time.monotonic() + seconds
    while time.monotonic() < end:
        ready, _, _ = select.select([sock], [], [], end - time.monotonic())
        if not ready:
            break
        chunk = sock.recv(65535)
        if not chunk:
            break
        buf += chunk
        while (fr := sc.split_frame(buf)) is not None:
            data_, buf = fr
            m = sc.parse_message(data_)
            if pred(m):
                return m
    return None


class TcpPbx:
    """The PBX over TCP: registers with digest on its connection, reads what comes down it."""

    def __init__(self, a, proxy):
        self.a, self.proxy = a, proxy
        self.cid, self.tag, self.cseq = f"tp-{secrets.token_hex(6)}@127.0.0.1", "tp" + secrets.token_hex(4), 0
        self.connect()

    def connect(self):
        self.s = socket.create_connection(self.proxy)
        self.ip, self.port = self.s.getsockname()
        self.buf = b""

    def read(self, pred, seconds=3.0):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            while (fr := sc.split_frame(self.buf)) is not None:
                data, self.buf = fr
                m = sc.parse_message(data)
                if pred(m):
                    return m
            ready, _, _ = select.select([self.s], [], [], max(0, end - time.monotonic()))
            if not ready:
                break
            chunk = self.s.recv(65535)
            if not chunk:
                break
            self.buf += chunk
        return None

    def register(self, expires=300):
        uri = f"sip:{self.a.host}"

        def once(auth=""):
            self.cseq += 1
            lines = [f"REGISTER {uri} SIP/2.0",
                     f"Via: SIP/2.0/TCP {self.ip}:{self.port};branch=z9hG4bK{secrets.token_hex(8)}",
                     "Max-Forwards: 70", f"From: <sip:{self.a.user}@{self.a.host}>;tag={self.tag}",
                     f"To: <sip:{self.a.user}@{self.a.host}>", f"Call-ID: {self.cid}", f"CSeq: {self.cseq} REGISTER",
                     f"Contact: <sip:pbx@{self.ip}:{self.port};transport=tcp>", f"Expires: {expires}"] + \
                ([f"Authorization: {auth}"] if auth else []) + ["Content-Length: 0"]
            self.s.sendall(crlf("\r\n".join(lines) + "\r\n\r\n"))
            return self.read(lambda m: m.status is not None and m.status >= 200)

        r = once()
        if not r or r.status != 401:
            return r
        ch = sc.parse_challenge(r.first("www-authenticate"))
        return once(sc.digest_credentials(ch, "MD5", "MD5", self.a.user, self.a.password, "REGISTER", uri,
                                          sc.choose_qop(ch), "00000001", secrets.token_hex(8), b""))


def gw_invite(gw, a):
    gip, gport = gw.getsockname()
    cid, branch = f"gw-{secrets.token_hex(6)}@{gip}", "z9hG4bK" + secrets.token_hex(8)
    ruri = f"sip:+15550001234@{a.host}"
    head = [f"INVITE {ruri} SIP/2.0", f"Via: SIP/2.0/UDP {gip}:{gport};branch={branch}", "Max-Forwards: 70",
            f"From: <sip:+15550009999@{gip}>;tag=gwt", f"To: <{ruri}>", f"Call-ID: {cid}", "CSeq: 1 INVITE",
            f"Contact: <sip:gw@{gip}:{gport}>", "Content-Type: application/sdp", f"Content-Length: {len(SDP)}"]
    return crlf("\r\n".join(head) + "\r\n\r\n") + SDP.encode(), cid, branch, ruri


def gw_request(gw, method, ruri, cid, to, cseq, branch, routes=()):
    gip, gport = gw.getsockname()
    return crlf("\r\n".join([f"{method} {ruri} SIP/2.0", f"Via: SIP/2.0/UDP {gip}:{gport};branch={branch}",
                              "Max-Forwards: 70", f"From: <sip:+15550009999@{gip}>;tag=gwt", f"To: {to}",
                              f"Call-ID: {cid}", f"CSeq: {cseq} {method}"] + [f"Route: {r}" for r in routes] +
                             ["Content-Length: 0"]) + "\r\n\r\n")


def dead_flow(a, pbx, gw, proxy):
    """The PBX registers over TCP and its connection goes; the gateway calls it."""
    p = TcpPbx(a, proxy)
    ok = p.register()
    check("the PBX registers over TCP", ok is not None and ok.status == 200, ok and ok.status)
    p.s.close()
    time.sleep(0.3)
    invite, gcid, branch, ruri = gw_invite(gw, a)
    t0 = time.monotonic()
    gw.sendto(invite, proxy)
    final = recv_one(gw, lambda m: m.status is not None and m.status >= 200 and m.first("call-id") == gcid, 5.0)
    took = round(time.monotonic() - t0, 2)
    check("the gateway's INVITE to the PBX whose connection is gone is answered 480 at once (§16.9), "
          "not 408 at Timer B", final is not None and final.status == 480 and took < 3.0,
          [final and final.status, took])
    if final:
        gw.sendto(gw_request(gw, "ACK", ruri, gcid, final.first("to"), 1, branch), proxy)
    again = recv_all(gw, 1.5)
    check("... once: the ACK stops it", not [m for _, m in again if m.status == 480], [m.status for _, m in again])


def inbound_call(a, gw, proxy, tag):
    """The PBX registers over TCP and answers the gateway's INVITE 200 on that connection; the
    gateway ACKs. Two checks; (pbx, (Call-ID, the 200, its Contact, the gateway's route set)),
    or (pbx, None) when the call did not come up."""
    p = TcpPbx(a, proxy)
    ok = p.register()
    invite, gcid, _, _ = gw_invite(gw, a)
    gw.sendto(invite, proxy)
    inv = p.read(lambda m: m.method == "INVITE")
    check("the inbound INVITE comes down the PBX's connection", inv is not None and ok and ok.status == 200,
          inv and inv.start)
    if not inv:
        return p, None
    p.s.sendall(response_to(inv, 200, "OK", extra=[f"Contact: <sip:pbx@{p.ip}:{p.port};transport=tcp>"],
                            to_tag=tag))
    ok200 = recv_one(gw, lambda m: m.status == 200 and m.first("call-id") == gcid)
    check("... answered 200, which reaches the gateway", ok200 is not None, ok200 and ok200.start)
    if not ok200:
        return p, None
    rr = list(reversed(ok200.headers.get("record-route", [])))
    contact = sc.uri_of(ok200.first("contact"))
    gw.sendto(gw_request(gw, "ACK", contact, gcid, ok200.first("to"), 1, "z9hG4bK" + secrets.token_hex(8), rr), proxy)
    p.read(lambda m: m.method == "ACK", 1.0)
    return p, (gcid, ok200, contact, rr)


def moved_end(a, pbx, gw, proxy):
    """An inbound call over the PBX's TCP connection; the PBX reconnects and registers again;
    the gateway's BYE must reach it on the new connection."""
    p, call = inbound_call(a, gw, proxy, "pbxmv")
    if not call:
        return
    gcid, ok200, contact, rr = call
    p.s.close()
    time.sleep(0.3)
    p.connect()
    again = p.register()
    check("the PBX registers again from a new connection", again is not None and again.status == 200,
          again and again.status)
    gw.sendto(gw_request(gw, "BYE", contact, gcid, ok200.first("to"), 2, "z9hG4bK" + secrets.token_hex(8), rr), proxy)
    bye = p.read(lambda m: m.method == "BYE", 3.0)
    check("the gateway's BYE reaches the PBX on its new connection", bye is not None, bye and bye.start)
    if bye:
        p.s.sendall(response_to(bye, 200, "OK", to_tag=None))
    fin = recv_one(gw, lambda m: m.status is not None and m.first("call-id") == gcid and "BYE" in m.first("cseq"))
    check("... and its 200 the gateway", fin is not None and fin.status == 200, fin and fin.status)
    p.s.close()


def quiet_call(a, pbx, gw, proxy):
    """A call from a PBX over TCP that never registered, quiet for longer than tcp_idle_timeout
    (5 s here): the gateway's BYE still comes down the PBX's connection."""
    p = TcpPbx(a, proxy)
    ruri, cid, tag = f"sip:15550001234@{a.host}", f"qc-{secrets.token_hex(6)}@127.0.0.1", "qc" + secrets.token_hex(4)

    def invite(cseq, branch, auth=""):
        lines = [f"INVITE {ruri} SIP/2.0", f"Via: SIP/2.0/TCP {p.ip}:{p.port};branch={branch}", "Max-Forwards: 70",
                 f"From: <sip:pbx@{a.host}>;tag={tag}", f"To: <{ruri}>", f"Call-ID: {cid}", f"CSeq: {cseq} INVITE",
                 f"Contact: <sip:pbx@{p.ip}:{p.port};transport=tcp>", "Content-Type: application/sdp"] + \
            ([f"Proxy-Authorization: {auth}"] if auth else []) + [f"Content-Length: {len(SDP)}"]
        p.s.sendall(crlf("\r\n".join(lines) + "\r\n\r\n") + SDP.encode())

    b1 = "z9hG4bK" + secrets.token_hex(8)
    invite(1, b1)
    r407 = p.read(lambda m: m.status == 407)
    if not r407:
        check("the PBX's INVITE over TCP is challenged", False, None)
        return
    p.s.sendall(crlf("\r\n".join([f"ACK {ruri} SIP/2.0", f"Via: SIP/2.0/TCP {p.ip}:{p.port};branch={b1}",
                                   "Max-Forwards: 70", f"From: {r407.first('from')}", f"To: {r407.first('to')}",
                                   f"Call-ID: {cid}", "CSeq: 1 ACK", "Content-Length: 0"]) + "\r\n\r\n"))
    ch = sc.parse_challenge(r407.first("proxy-authenticate"))
    invite(2, "z9hG4bK" + secrets.token_hex(8),
           sc.digest_credentials(ch, "MD5", "MD5", a.user, a.password, "INVITE", ruri, sc.choose_qop(ch), "00000001",
                                 secrets.token_hex(8), b""))
    inv = recv_one(gw, lambda m: m.method == "INVITE" and m.first("call-id") == cid)
    if not inv:
        check("the PBX's INVITE over TCP reaches the gateway", False, None)
        return
    gip, gport = gw.getsockname()
    gw.sendto(response_to(inv, 200, "OK", extra=[f"Contact: <sip:gw@{gip}:{gport}>", "Content-Type: application/sdp"],
                          body=SDP, to_tag="gwqc"), proxy)
    ok = p.read(lambda m: m.status == 200 and "INVITE" in m.first("cseq"))
    check("the call is answered over the PBX's connection", ok is not None, ok and ok.start)
    if not ok:
        return
    rr = list(reversed(ok.headers.get("record-route", [])))
    p.s.sendall(crlf("\r\n".join([f"ACK sip:gw@{gip}:{gport} SIP/2.0",
                                   f"Via: SIP/2.0/TCP {p.ip}:{p.port};branch=z9hG4bK{secrets.token_hex(8)}",
                                   "Max-Forwards: 70", f"From: {ok.first('from')}", f"To: {ok.first('to')}",
                                   f"Call-ID: {cid}", "CSeq: 2 ACK"] + [f"Route: {r}" for r in rr] +
                                  ["Content-Length: 0"]) + "\r\n\r\n"))
    recv_one(gw, lambda m: m.method == "ACK", 1.0)
    time.sleep(7.0)
    groutes = inv.headers.get("record-route", [])
    bye = crlf("\r\n".join([f"BYE sip:pbx@{p.ip}:{p.port};transport=tcp SIP/2.0",
                             f"Via: SIP/2.0/UDP {gip}:{gport};branch=z9hG4bK{secrets.token_hex(8)}", "Max-Forwards: 70",
                             f"From: {ok.first('to')}", f"To: {ok.first('from')}", f"Call-ID: {cid}", "CSeq: 1 BYE"] +
                            [f"Route: {r}" for r in groutes] + ["Content-Length: 0"]) + "\r\n\r\n")
    gw.sendto(bye, proxy)
    got = p.read(lambda m: m.method == "BYE", 3.0)
    check("after 7 s of quiet (tcp_idle_timeout 5), the gateway's BYE comes down the PBX's connection",
          got is not None, got and got.start)
    if got:
        p.s.sendall(response_to(got, 200, "OK", to_tag=None))
    fin = recv_one(gw, lambda m: m.status is not None and "BYE" in (m.first("cseq") or ""), 3.0)
    check("... and its 200 reaches the gateway", fin is not None and fin.status == 200, fin and fin.status)
    p.s.close()


def inbound_quiet(a, pbx, gw, proxy):
    """An inbound call over the PBX's TCP connection; the PBX unregisters (its connection is no
    longer kept for the registration) and the call stays quiet past tcp_idle_timeout: the call
    keeps the connection, and the gateway's BYE comes down it."""
    p, call = inbound_call(a, gw, proxy, "pbxiq")
    if not call:
        return
    gcid, ok200, contact, rr = call
    gone = p.register(0)
    check("the PBX unregisters during the call", gone is not None and gone.status == 200, gone and gone.status)
    time.sleep(7.0)
    gw.sendto(gw_request(gw, "BYE", contact, gcid, ok200.first("to"), 2, "z9hG4bK" + secrets.token_hex(8), rr), proxy)
    bye = p.read(lambda m: m.method == "BYE", 3.0)
    check("after 7 s of quiet, the gateway's BYE comes down the PBX's connection (the call keeps it)",
          bye is not None, bye and bye.start)
    if bye:
        p.s.sendall(response_to(bye, 200, "OK", to_tag=None))
    p.s.close()


def pbx_503(a, pbx, gw, proxy):
    """The PBX answers the gateway's INVITE 503: the gateway gets 500 (RFC 3261 §16.7 step 6), so
    that it does not take one customer's overload for the edge's and stop sending every trunk's
    calls here; the rest of the answer as the PBX wrote it."""
    p = TcpPbx(a, proxy)
    ok = p.register()
    invite, gcid, branch, ruri = gw_invite(gw, a)
    gw.sendto(invite, proxy)
    inv = p.read(lambda m: m.method == "INVITE")
    check("the inbound INVITE comes down the PBX's connection", inv is not None and ok and ok.status == 200,
          inv and inv.start)
    if not inv:
        return
    p.s.sendall(response_to(inv, 503, "Service Unavailable", extra=["Retry-After: 20"], to_tag="pbx503"))
    final = recv_one(gw, lambda m: m.status is not None and m.status >= 200 and m.first("call-id") == gcid)
    check("the gateway gets 500 for the PBX's 503, its To tag and Retry-After as they were",
          final is not None and final.start == "SIP/2.0 500 Server Internal Error"
          and final.first("retry-after") == "20" and final.first("to").endswith(";tag=pbx503"),
          final and [final.start, final.first("retry-after"), final.first("to")])
    ack = p.read(lambda m: m.method == "ACK", 2.0)
    check("... and the PBX its 503's ACK from sipauthd", ack is not None and ack.first("cseq") == "1 ACK",
          ack and ack.start)
    if final:
        gw.sendto(gw_request(gw, "ACK", ruri, gcid, final.first("to"), 1, branch), proxy)
    p.s.close()


def udp_register(a, pbx, proxy, expires):
    """A digest REGISTER from the UDP PBX socket; the final answer."""
    ip, port = pbx.getsockname()
    uri, cid = f"sip:{a.host}", f"ur-{ip}-{port}"

    def once(cseq, auth=""):
        lines = [f"REGISTER {uri} SIP/2.0", f"Via: SIP/2.0/UDP {ip}:{port};branch=z9hG4bK{secrets.token_hex(8)}",
                 "Max-Forwards: 70", f"From: <sip:{a.user}@{a.host}>;tag=ur", f"To: <sip:{a.user}@{a.host}>",
                 f"Call-ID: {cid}", f"CSeq: {cseq} REGISTER", f"Contact: <sip:pbx@{ip}:{port}>",
                 f"Expires: {expires}"] + ([f"Authorization: {auth}"] if auth else []) + ["Content-Length: 0"]
        pbx.sendto(crlf("\r\n".join(lines) + "\r\n\r\n"), proxy)
        return recv_one(pbx, lambda m: m.status is not None and m.status >= 200 and m.first("call-id") == cid)

    seq = 1 + int(time.monotonic() * 10) % 1000000   # above any earlier REGISTER of this Call-ID
    r = once(seq)
    if not r or r.status != 401:
        return r
    ch = sc.parse_challenge(r.first("www-authenticate"))
    return once(seq + 1, sc.digest_credentials(ch, "MD5", "MD5", a.user, a.password, "REGISTER", uri,
                                               sc.choose_qop(ch), "00000001", secrets.token_hex(8), b""))


def dead_binding(a, pbx, gw, proxy):
    """The PBX registers over UDP, then a second registration of the trunk comes over TCP and
    its connection goes: the gateway's INVITE goes to the registration it can reach, not 480
    for the newer one whose connection is gone."""
    ok = udp_register(a, pbx, proxy, 120)
    check("the PBX registers over UDP", ok is not None and ok.status == 200, ok and ok.status)
    p = TcpPbx(a, proxy)
    ok2 = p.register()
    check("a second registration over TCP, newer", ok2 is not None and ok2.status == 200, ok2 and ok2.status)
    p.s.close()
    time.sleep(0.3)
    invite, gcid, branch, ruri = gw_invite(gw, a)
    gw.sendto(invite, proxy)
    inv = recv_one(pbx, lambda m: m.method == "INVITE" and m.first("call-id") == gcid, 3.0)
    check("the gateway's INVITE reaches the PBX over UDP (the TCP one's connection is gone)", inv is not None,
          inv and inv.start)
    if inv:
        pbx.sendto(response_to(inv, 486, "Busy Here", to_tag="pbxdb"), proxy)
    final = recv_one(gw, lambda m: m.status is not None and m.status >= 200 and m.first("call-id") == gcid, 3.0)
    check("... and its answer the gateway", final is not None and final.status == 486, final and final.status)
    if final:
        gw.sendto(gw_request(gw, "ACK", ruri, gcid, final.first("to"), 1, branch), proxy)
    gone = udp_register(a, pbx, proxy, 0)
    check("the UDP PBX unregisters", gone is not None and gone.status == 200, gone and gone.status)


def next_binding(a, pbx, gw, proxy):
    """Two registrations of the trunk over UDP; the newer PBX says nothing: after
    [registrar] failover_timeout_ms (1 s in proxy_rfc.sh) the gateway's INVITE goes to the
    older one, its Contact as the Request-URI, and the call is set up and ended through it;
    the silent one's late 180 gets a CANCEL. Then the newer answers 503: the older gets the
    INVITE at once, and its 486 is the gateway's answer."""
    pbx2 = udp("127.0.0.1")
    ok = udp_register(a, pbx, proxy, 120)
    ok2 = udp_register(a, pbx2, proxy, 120)
    check("two registrations of the trunk over UDP", ok is not None and ok.status == 200 and ok2 is not None
          and ok2.status == 200, [ok and ok.status, ok2 and ok2.status])
    invite, gcid, branch, ruri = gw_invite(gw, a)
    gw.sendto(invite, proxy)
    t0 = time.monotonic()
    first = recv_one(pbx2, lambda m: m.method == "INVITE" and m.first("call-id") == gcid, 2.0)
    inv = recv_one(pbx, lambda m: m.method == "INVITE" and m.first("call-id") == gcid, 4.0)
    took = round(time.monotonic() - t0, 2)
    ip, port = pbx.getsockname()
    check("the newer registration gets the INVITE first; silent, the older gets it after about 1 s, its "
          "Contact as the Request-URI", first is not None and inv is not None and 0.8 < took < 2.0
          and inv.start == f"INVITE sip:pbx@{ip}:{port} SIP/2.0",
          [first and first.start, inv and inv.start, took])
    if not (first and inv):
        return
    check("... on a new branch", inv.first("via").split("branch=")[1] != first.first("via").split("branch=")[1],
          [first.first("via"), inv.first("via")])
    pbx2.sendto(response_to(first, 180, "Ringing", to_tag="late"), proxy)
    cancel = recv_one(pbx2, lambda m: m.method == "CANCEL" and m.first("call-id") == gcid, 2.0)
    check("the silent one's late 180 gets a CANCEL", cancel is not None, cancel and cancel.start)
    if cancel:
        pbx2.sendto(response_to(cancel, 200, "OK", to_tag=None), proxy)
        pbx2.sendto(response_to(first, 487, "Request Terminated", to_tag="late"), proxy)
    contact = [f"Contact: <sip:pbx@{ip}:{port}>", "Content-Type: application/sdp"]
    pbx.sendto(response_to(inv, 200, "OK", contact, SDP, to_tag="older"), proxy)
    ok200 = recv_one(gw, lambda m: m.status == 200 and m.first("call-id") == gcid, 3.0)
    check("the older PBX's 200 reaches the gateway", ok200 is not None and ok200.first("to").endswith("tag=older"),
          ok200 and ok200.first("to"))
    if not ok200:
        return
    routes = list(reversed(ok200.headers.get("record-route", [])))
    gw.sendto(gw_request(gw, "ACK", sc.uri_of(ok200.first("contact")), gcid, ok200.first("to"), 1,
                         "z9hG4bK" + secrets.token_hex(8), routes), proxy)
    ack = recv_one(pbx, lambda m: m.method == "ACK" and m.first("call-id") == gcid, 2.0)
    gw.sendto(gw_request(gw, "BYE", sc.uri_of(ok200.first("contact")), gcid, ok200.first("to"), 2,
                         "z9hG4bK" + secrets.token_hex(8), routes), proxy)
    bye = recv_one(pbx, lambda m: m.method == "BYE" and m.first("call-id") == gcid, 2.0)
    check("the gateway's ACK and BYE reach the older PBX", ack is not None and bye is not None,
          [ack and ack.start, bye and bye.start])
    if bye:
        pbx.sendto(response_to(bye, 200, "OK", to_tag=None), proxy)
        recv_one(gw, lambda m: m.status == 200 and m.first("call-id") == gcid, 2.0)
    recv_all(pbx2, 0.2)
    invite, gcid, branch, ruri = gw_invite(gw, a)
    gw.sendto(invite, proxy)
    first = recv_one(pbx2, lambda m: m.method == "INVITE" and m.first("call-id") == gcid, 2.0)
    if first:
        pbx2.sendto(response_to(first, 503, "Service Unavailable", to_tag="busy2"), proxy)
    t0 = time.monotonic()
    inv = recv_one(pbx, lambda m: m.method == "INVITE" and m.first("call-id") == gcid, 2.0)
    took = round(time.monotonic() - t0, 2)
    check("the newer answers 503: the older gets the INVITE at once", first is not None and inv is not None
          and took < 0.5, [first and first.start, inv and inv.start, took])
    ack = recv_one(pbx2, lambda m: m.method == "ACK" and m.first("call-id") == gcid, 1.0)
    check("... and the 503 its ACK", ack is not None, ack and ack.start)
    if inv:
        pbx.sendto(response_to(inv, 486, "Busy Here", to_tag="busy1"), proxy)
    final = recv_one(gw, lambda m: m.status is not None and m.status >= 200 and m.first("call-id") == gcid, 2.0)
    check("the older one's 486 is the gateway's answer", final is not None and final.status == 486,
          final and final.status)
    if final:
        gw.sendto(gw_request(gw, "ACK", ruri, gcid, final.first("to"), 1, branch), proxy)
    gone, gone2 = udp_register(a, pbx, proxy, 0), udp_register(a, pbx2, proxy, 0)
    check("both unregister", gone is not None and gone.status == 200 and gone2 is not None and gone2.status == 200,
          [gone and gone.status, gone2 and gone2.status])
    pbx2.close()


SCENARIOS = {"timer-g": timer_g, "provisional": provisional, "cancel-early": cancel_early,
             "cancel-silent": cancel_silent,
             "no-length": no_length, "preloaded": preloaded, "fork": fork,
             "strict": strict, "dead-flow": dead_flow, "moved-end": moved_end,
             "quiet-call": quiet_call, "inbound-quiet": inbound_quiet, "pbx-503": pbx_503,
             "dead-binding": dead_binding, "bye-refused": bye_refused,
             "identity": identity, "next-binding": next_binding}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("scenario", choices=sorted(SCENARIOS))
    ap.add_argument("--server", required=True, help="sipauthd, 127.0.0.1:PORT")
    ap.add_argument("--gateway", required=True, help="the gateway's address, 127.0.0.2:PORT")
    ap.add_argument("--host", required=True, help="the trunk host")
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--stranger", default="127.0.0.3", help="a third address (strict)")
    a = ap.parse_args()
    ip, port = a.server.rsplit(":", 1)
    gip, gport = a.gateway.rsplit(":", 1)
    pbx, gw = udp("127.0.0.1"), udp(gip, int(gport))
    SCENARIOS[a.scenario](a, pbx, gw, (ip, int(port)))
    return 0 if RESULTS and all(RESULTS) else 1


if __name__ == "__main__":
    sys.exit(main())
