#!/usr/bin/env python3
"""scripts/bench/memflood.py: does a flood of big requests towards a gateway that never answers
hold memory, and is it given back? (issue 10, item 3). Python standard library only.

Starts sipauthd (its own store, a gateway address that never answers), then one source sends
--count authenticated MESSAGEs with --body bytes each; prints sipauthd's RSS before, at the
end of the flood, and --after seconds later (transactions time out at 32 s, linger 32 s, and
the heap is trimmed at the next housekeeping tick), with the answers the flood got.
  scripts/bench/memflood.py [--count 6000] [--body 60000] [--after 75] [--sipauthd PATH]
"""
import argparse
import collections
import hashlib
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import timing  # noqa: E402  (store and daemon set-up)


def rss_mb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


def message(sock, host, n, body, auth=""):
    ip, port = sock.getsockname()
    lines = [f"MESSAGE sip:5550100@{host} SIP/2.0",
             f"Via: SIP/2.0/UDP {ip}:{port};branch=z9hG4bK{secrets.token_hex(8)};rport", "Max-Forwards: 70",
             f"From: <sip:f@{host}>;tag=f{n}", f"To: <sip:5550100@{host}>", f"Call-ID: flood-{n}",
             f"CSeq: {2 if auth else 1} MESSAGE", "Content-Type: text/plain"]
    if auth:
        lines.append(auth)
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def md5(text):
    return hashlib.md5(text.encode()).hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=6000)
    ap.add_argument("--body", type=int, default=60000)
    ap.add_argument("--after", type=float, default=75.0)
    ap.add_argument("--sipauthd", default=os.path.join(timing.TOP, "daemon", "sipauthd"))
    ap.add_argument("--sipauthctl", default=os.path.join(timing.TOP, "daemon", "sipauthctl"))
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="sipauthd-memflood.")
    proc = None
    try:
        store, trunk = timing.setup(tmp, a.sipauthctl)
        port = timing.freeport()
        proc = timing.start(tmp, a.sipauthd, store, port)
        server = ("127.0.0.1", port)
        host = f"trunk-{trunk}.{timing.DOMAIN}"
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        sock.settimeout(2)
        body = b"x" * a.body
        before = rss_mb(proc.pid)
        answers = collections.Counter()
        for n in range(a.count):
            sock.sendto(message(sock, host, n, b""), server)
            try:
                ch = sock.recv(65535).decode(errors="replace")
            except socket.timeout:
                answers["(no challenge)"] += 1
                continue
            if " 407 " not in ch.split("\r\n", 1)[0]:
                answers[ch.split("\r\n", 1)[0]] += 1
                continue
            realm = re.search(r'realm="([^"]*)"', ch).group(1)
            nonce = re.search(r'nonce="([^"]*)"', ch).group(1)
            uri = f"sip:5550100@{host}"
            ha1 = md5(f"pbx-timing:{realm}:timing_password_123")
            resp = md5(f"{ha1}:{nonce}:00000001:c0ffee:auth:{md5('MESSAGE:' + uri)}")
            auth = (f'Proxy-Authorization: Digest username="pbx-timing", realm="{realm}", nonce="{nonce}", '
                    f'uri="{uri}", response="{resp}", algorithm=MD5, qop=auth, nc=00000001, cnonce="c0ffee"')
            sock.sendto(message(sock, host, n, body, auth), server)
            sock.settimeout(0.02)
            try:
                answers[sock.recv(65535).split(b"\r\n", 1)[0].decode()] += 1
            except socket.timeout:
                answers["(forwarded, no answer)"] += 1
            sock.settimeout(2)
        peak = rss_mb(proc.pid)
        time.sleep(a.after)
        after = rss_mb(proc.pid)
        print(f"{a.count} MESSAGEs of {a.body} bytes from one source to a gateway that never answers")
        for k, v in answers.most_common():
            print(f"  {v:6d}  {k}")
        print(f"sipauthd RSS: {before:.1f} MB before, {peak:.1f} MB after the flood, {after:.1f} MB {a.after:.0f} s later")
    finally:
        if proc:
            proc.terminate()   # it may drain transactions in flight for 5 s
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
