#!/usr/bin/env python3
"""scripts/bench/fleet_inbound.py: the gateway's INVITEs to a trunk whose registrations are all
another node's, through a fleet node; prints that node's CPU per INVITE and the INVITE -> final
answer times.

    fleet_inbound.py PID NODE_ADDR:PORT GW_ADDR:PORT OWNER_ADDR:PORT TRUNK_HOST COUNT

PID is the node's sipauthd. The gateway's socket sends COUNT INVITEs one after the other; the
node relays each to the owner's address (the other node's, registered in the database), where this
script answers 486 Busy Here; the gateway acknowledges the 486 it gets back. The node's CPU is read
from /proc/PID/task/*/schedstat before the first INVITE and after the last ACK (plus a quiet 0.3 s).
Prints one line: "inbound: N INVITEs, X us of the node's CPU each, INVITE->486 p50 Y ms p99 Z ms".
"""
import os
import select
import socket
import sys
import time


def cpu_ns(pid):
    total = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{t}/schedstat") as f:
            total += int(f.read().split()[0])
    return total


def addr(s):
    host, port = s.rsplit(":", 1)
    return host, int(port)


def headers(msg):
    head = msg.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace").split("\r\n")
    return head[0], head[1:]


def main():
    pid, node, gw, owner, host, count = sys.argv[1:7]
    node, gw, owner, count = addr(node), addr(gw), addr(owner), int(count)
    g = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    g.bind(gw)
    o = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    o.bind(owner)
    times, lost = [], 0
    start = cpu_ns(pid)
    for i in range(count):
        branch, callid = f"z9hG4bK-in-{os.getpid()}-{i}", f"inbound-{os.getpid()}-{i}@{gw[0]}"
        common = [f"Via: SIP/2.0/UDP {gw[0]}:{gw[1]};branch={branch}", "Max-Forwards: 70",
                  f"From: <sip:15550002222@{gw[0]}>;tag=gw{i}", f"To: <sip:15550001111@{host}>",
                  f"Call-ID: {callid}"]
        invite = "\r\n".join([f"INVITE sip:15550001111@{host} SIP/2.0", *common, "CSeq: 1 INVITE",
                              f"Contact: <sip:gw@{gw[0]}:{gw[1]}>", "Content-Length: 0"]) + "\r\n\r\n"
        t0 = time.monotonic()
        g.sendto(invite.encode(), node)
        final = None
        deadline = t0 + 2.0
        while final is None and time.monotonic() < deadline:
            ready, _, _ = select.select([g, o], [], [], max(0.0, deadline - time.monotonic()))
            for s in ready:
                data, src = s.recvfrom(65535)
                first, hs = headers(data)
                if s is o and first.startswith("INVITE "):
                    # the owner: 486 along the relayed INVITE's Vias
                    keep = [h for h in hs if h.split(":", 1)[0].strip().lower() in ("via", "from", "call-id", "cseq")]
                    to = next(h for h in hs if h.lower().startswith("to:")) + ";tag=owner"
                    resp = "\r\n".join(["SIP/2.0 486 Busy Here", *keep, to, "Content-Length: 0"]) + "\r\n\r\n"
                    o.sendto(resp.encode(), src)
                elif s is g and first.startswith("SIP/2.0 ") and int(first.split()[1]) >= 200:
                    final = (first, hs)
        if final is None or final[0].split()[1] != "486":
            lost += 1   # no answer, or the node's own (480: it found no live owner)
            continue
        times.append(time.monotonic() - t0)
        to = next(h for h in final[1] if h.lower().startswith("to:"))
        ack = "\r\n".join([f"ACK sip:15550001111@{host} SIP/2.0", *common[:3], to, common[4], "CSeq: 1 ACK",
                           "Content-Length: 0"]) + "\r\n\r\n"
        g.sendto(ack.encode(), node)
    time.sleep(0.3)
    used = cpu_ns(pid) - start
    times.sort()
    pct = lambda p: times[min(len(times) - 1, int(p * len(times)))] * 1000 if times else float("nan")
    print(f"inbound: {count} INVITEs ({lost} without the owner's 486), {used / 1000 / count:.1f} us of the node's CPU each, "
          f"INVITE->486 p50 {pct(0.5):.2f} ms p99 {pct(0.99):.2f} ms")
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
